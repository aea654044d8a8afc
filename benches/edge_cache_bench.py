"""Edge cache benchmark (issue "The edge as a CDN", Benchmark), in one run on loopback:

  edge hit      HTTPS to `pixelport edge`, answered from its cache
  nginx hit     HTTPS to nginx with proxy_cache in front of the same appliance listener
  edge miss     HTTPS to the edge, a new URL each request (the edge stores each answer;
                the appliance serves them from its derivative cache)
  tunnel path   the same requests (a new URL each) with the cache bypassed (Authorization):
                the same hop, load generator and appliance work, without the cache

The image is about 30 KB. Hits run at 64 connections (req/s, p50, p99). The miss and tunnel
paths run three ways: 1 connection; 64 connections each waiting BENCH_PACE_MS (20) between
its requests, a load both paths carry, so p50 is a request's own latency under concurrency;
and 64 connections flat out, where the machine is saturated and p50 is the queue (about 64 ÷
throughput), a throughput comparison. For the flat-out runs it also prints CPU per request
(the edge's threads, its disk writer, the appliance) from /proc. Run through
scripts/bench-edge-cache.sh.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(ROOT / "benches"))

import harness  # noqa: E402
import requests  # noqa: E402
from tunnel_harness import IMAGES_HOST, Edge, join, wait_until  # noqa: E402
from tunnel_bench import CONNECTIONS, DURATION, NGINX, ROUNDS, THREADS, WRK  # noqa: E402

PHOTO = ROOT.parent / "shared" / "images" / "bythewater-2560x1600.jpg"
IMAGE_PATH = f"/unsafe/rs:fit:640:0/q:75/plain/s3://{harness.PUBLIC_BUCKET}/photo.jpg@webp"
MISS_LUA = """
local counter = 0
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  run = args[1]
  pace = tonumber(args[2] or "0")
end
function request()
  counter = counter + 1
  return wrk.format("GET", wrk.path .. "?m=" .. run .. "-" .. tid .. "-" .. counter)
end
function delay()
  return pace
end
"""
PACE_MS = int(os.environ.get("BENCH_PACE_MS", "20"))


def log(msg: str) -> None:
    print(f"bench-edge-cache: {msg}", file=sys.stderr, flush=True)


def wrk(url: str, connections: int = CONNECTIONS, extra: list[str] | None = None,
        duration: str = DURATION) -> dict:
    threads = THREADS if connections > 1 else "1"
    # wrk takes a script's own arguments after the URL, behind `--`.
    extra = list(extra or [])
    script_args = extra[extra.index("--"):] if "--" in extra else []
    extra = extra[:len(extra) - len(script_args)]
    out = subprocess.run([WRK, f"-t{threads}", f"-c{connections}", f"-d{duration}",
                          "--latency", "-H", f"Host: {IMAGES_HOST}", *extra, url, *script_args],
                         capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors against {url}:\n{out}")

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.M)
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "p50_ms": pct("50"), "p99_ms": pct("99")}


def cpu_ticks(pid: int) -> dict[str, int]:
    """CPU time (user + system, clock ticks) of a process so far, by thread name."""
    out: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            name = (task / "comm").read_text().strip()
        except OSError:  # the thread ended
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[name] = out.get(name, 0) + int(fields[11]) + int(fields[12])
    return out


def cpu_per_request(before: dict[str, int], after: dict[str, int], requests: int,
                    names: list[str]) -> dict[str, float]:
    """µs of CPU per request, for each thread name in `names` ("*": all threads)."""
    hz = os.sysconf("SC_CLK_TCK")
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    pick = lambda n: sum(delta.values()) if n == "*" else delta.get(n, 0)  # noqa: E731
    return {n: pick(n) / hz / max(requests, 1) * 1e6 for n in names}


def nginx_conf(base: Path, port: int, upstream: int, cert, key) -> Path:
    conf = base / "nginx.conf"
    # Run as root (CI), the workers would drop to nobody and could not use the cache dir.
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(f"""
{user}
worker_processes auto;
pid {base}/nginx.pid;
error_log {base}/nginx-error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    proxy_cache_path {base}/nginx-cache levels=1:2 keys_zone=img:10m max_size=1g;
    upstream images {{ server 127.0.0.1:{upstream}; keepalive 128; }}
    client_body_temp_path {base}/nginx-body;
    proxy_temp_path {base}/nginx-proxy;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    server {{
        listen 127.0.0.1:{port} ssl;
        location / {{
            proxy_pass http://images;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_cache img;
            proxy_cache_lock on;
            add_header X-Cache-Status $upstream_cache_status;
        }}
    }}
}}
""")
    return conf


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-edge-cache-"))
    procs: list[subprocess.Popen] = []
    started: list = []
    try:
        edge = Edge(base / "edge", extra=os.environ.get("BENCH_EDGE_CACHE") or (
            "[edge.cache]\nmemory_size = \"256MiB\"\ndisk_size = \"1GiB\"\n")).start()
        started.append(edge)
        d = harness.Daemon(base / "appliance", legacy_unsigned=True,
                           extra_config="[tunnel]\nconnections = 4\n")
        cp = join(d, edge.pair(IMAGES_HOST))
        assert cp.returncode == 0, cp.stderr
        d.start()
        started.append(d)
        s3 = d.client()
        s3.create_bucket(Bucket=harness.PUBLIC_BUCKET)
        s3.put_object(Bucket=harness.PUBLIC_BUCKET, Key="photo.jpg",
                      Body=PHOTO.read_bytes(), ContentType="image/jpeg")
        wait_until(lambda: edge.ready()[0] == 200, 20, what="the appliance connected")
        nginx_port = harness.free_port()
        conf = nginx_conf(base, nginx_port, d.images_port, edge.cert, edge.key)
        procs.append(subprocess.Popen([NGINX, "-c", str(conf), "-p", str(base)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        urls = {
            "edge hit": f"https://127.0.0.1:{edge.https_port}{IMAGE_PATH}",
            "nginx hit": f"https://127.0.0.1:{nginx_port}{IMAGE_PATH}",
        }
        host = {"Host": IMAGES_HOST}
        size = 0
        for name, url in urls.items():
            for _ in range(3):
                r = wait_until(lambda: requests.get(url, verify=str(edge.cert), headers=host,
                                                    timeout=30), 20, what=f"{name} up")
                assert r.status_code == 200, (name, r.text)
            status = r.headers.get("Cache-Status", "") + r.headers.get("X-Cache-Status", "")
            assert "hit" in status.lower(), (name, r.headers)
            size = len(r.content)
            wrk(url, duration="2s")  # warm-up
        log(f"image: {size} bytes")
        results: dict[str, list[dict]] = {k: [] for k in urls}
        for rnd in range(ROUNDS):
            for name in (list(urls) if rnd % 2 == 0 else list(reversed(urls))):
                res = wrk(urls[name])
                results[name].append(res)
                log(f"round {rnd + 1} {name}: {res['rps']:.0f} req/s, p50 "
                    f"{res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms")
        lua = base / "miss.lua"
        lua.write_text(MISS_LUA)
        paths = {
            "edge miss": ["-s", str(lua)],
            "tunnel path": ["-s", str(lua), "-H", "Authorization: Bearer bypass-the-cache"],
        }
        # (connections, pause between a connection's requests in ms)
        modes = {"64": (CONNECTIONS, 0), "paced": (CONNECTIONS, PACE_MS), "1": (1, 0)}
        latency: dict[str, dict[str, list[dict]]] = {k: {m: [] for m in modes} for k in paths}
        cpu: dict[str, list[dict]] = {k: [] for k in paths}
        for rnd in range(ROUNDS):
            for name, extra in (paths.items() if rnd % 2 == 0 else reversed(paths.items())):
                for mode, (conns, pace) in modes.items():
                    args = list(extra) + ["--", f"{name[0]}{rnd}{mode}", str(pace)]
                    before = (cpu_ticks(edge.proc.pid), cpu_ticks(d.proc.pid))
                    res = wrk(urls["edge hit"], conns, args)
                    after = (cpu_ticks(edge.proc.pid), cpu_ticks(d.proc.pid))
                    if mode == "64":
                        cpu[name].append({
                            **cpu_per_request(before[0], after[0], res["requests"],
                                              ["*", "edge-cache-disk"]),
                            "appliance": cpu_per_request(before[1], after[1], res["requests"],
                                                         ["*"])["*"]})
                    latency[name][mode].append(res)
                    log(f"round {rnd + 1} {name} ({mode}): {res['rps']:.0f} req/s, "
                        f"p50 {res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms")
        med = {k: {m: statistics.median(r[m] for r in v) for m in ("rps", "p50_ms", "p99_ms")}
               for k, v in results.items()}
        lat = {k: {c: {m: statistics.median(r[m] for r in v[c])
                       for m in ("rps", "p50_ms", "p99_ms")}
                   for c in v} for k, v in latency.items()}
        ratio = lambda a, b: a / b if b else float("nan")  # noqa: E731
        lines = [f"Image: {size} bytes; {CONNECTIONS} connections; median of {ROUNDS} rounds "
                 f"of {DURATION}.", "",
                 "| path | req/s | p50 (ms) | p99 (ms) |", "|---|---|---|---|"]
        for k, v in med.items():
            lines.append(f"| {k} (HTTPS, {CONNECTIONS} conns) | {v['rps']:.0f} | "
                         f"{v['p50_ms']:.2f} | {v['p99_ms']:.2f} |")
        labels = {"1": "1 conn", "paced": f"{CONNECTIONS} conns, {PACE_MS} ms apart",
                  "64": f"{CONNECTIONS} conns, flat out"}
        for mode in ("1", "paced", "64"):
            for k, v in lat.items():
                lines.append(f"| {k} ({labels[mode]}) | {v[mode]['rps']:.0f} | "
                             f"{v[mode]['p50_ms']:.2f} | {v[mode]['p99_ms']:.2f} |")
        targets = [
            ("edge hit req/s ÷ nginx proxy_cache hit req/s",
             ratio(med["edge hit"]["rps"], med["nginx hit"]["rps"]), "≥ 1.0"),
            ("edge hit p99 ÷ nginx hit p99",
             ratio(med["edge hit"]["p99_ms"], med["nginx hit"]["p99_ms"]), "≤ 1.5"),
            ("edge miss p50 − tunnel path p50, 1 connection (ms)",
             lat["edge miss"]["1"]["p50_ms"] - lat["tunnel path"]["1"]["p50_ms"], "≤ 1.0"),
            (f"edge miss p50 − tunnel path p50, {CONNECTIONS} connections {PACE_MS} ms apart "
             "(ms)",
             lat["edge miss"]["paced"]["p50_ms"] - lat["tunnel path"]["paced"]["p50_ms"],
             "≤ 1.0"),
            (f"edge miss req/s ÷ tunnel path req/s, {CONNECTIONS} connections flat out",
             ratio(lat["edge miss"]["64"]["rps"], lat["tunnel path"]["64"]["rps"]),
             "(reported)"),
            (f"edge miss p50 − tunnel path p50, {CONNECTIONS} connections flat out (ms)",
             lat["edge miss"]["64"]["p50_ms"] - lat["tunnel path"]["64"]["p50_ms"],
             "(reported: the queue at saturation)"),
        ]
        lines += ["", f"CPU per request, µs ({CONNECTIONS} connections flat out; "
                  "/proc/<pid>/task/*/stat over the run):", "",
                  "| path | edge (all threads) | of which the disk writer | appliance |",
                  "|---|---|---|---|"]
        for k, runs in cpu.items():
            m = {c: statistics.median(r[c] for r in runs)
                 for c in ("*", "edge-cache-disk", "appliance")}
            lines.append(f"| {k} | {m['*']:.0f} | {m['edge-cache-disk']:.0f} | "
                         f"{m['appliance']:.0f} |")
        lines += ["", "| target | measured | goal |", "|---|---|---|"]
        lines += [f"| {t} | {v:.2f} | {g} |" for t, v, g in targets]
        report = "\n".join(lines)
        print(report)
        out = Path(os.environ.get("BENCH_OUT", ROOT / "target" / "bench-edge-cache"))
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(report + "\n")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for s in reversed(started):
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001 - report, keep cleaning up
                log(f"stop: {e}")


if __name__ == "__main__":
    main()
