"""Tunnel benchmark (issue "The tunnel", Benchmark): cache-hit image requests at 64
connections, and a 256 MiB download, through four paths in one run on loopback:

  direct      plain HTTP to the appliance's image (or S3) listener
  edge        HTTPS to `pixelport edge`, through the QUIC tunnel to the appliance
  nginx       nginx as a TLS reverse proxy to the same listeners (no tunnel hop)
  rathole     rathole 0.5 with its noise transport, plain HTTP through it

The comparison runs with one appliance (4 connections), as nginx and rathole proxy to one;
then a second appliance joins (2 appliances x 4 connections, both serving the hostname),
the edge path is measured again, and the edge's peak RSS over the whole run is reported. Run through scripts/bench-tunnel.sh.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))

import harness  # noqa: E402
import requests  # noqa: E402
from tunnel_harness import IMAGES_HOST, S3_HOST, Edge, join, wait_until  # noqa: E402

PHOTO = Path(os.environ.get("BENCH_PHOTO", ROOT.parent / "shared" / "images"
                            / "bythewater-2560x1600.jpg"))
IMAGE_PATH = (f"/unsafe/rs:fit:560:0/q:80/plain/s3://{harness.PUBLIC_BUCKET}/photo.jpg@webp")
BIG_KEY = "big.bin"
BIG_MIB = int(os.environ.get("BENCH_BIG_MIB", "256"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "64"))
DURATION = os.environ.get("BENCH_DURATION", "10s")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
THREADS = str(os.cpu_count() or 2)
RATHOLE = os.environ.get("RATHOLE", "rathole")
WRK = os.environ.get("WRK", "wrk")
NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")


def log(msg: str) -> None:
    print(f"bench-tunnel: {msg}", file=sys.stderr, flush=True)


def wrk(url: str, duration: str = DURATION) -> dict:
    # Addressed by IP (wrk would try ::1 for localhost first), named by the Host header.
    out = subprocess.run([WRK, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration}", "--latency",
                          "-H", f"Host: {IMAGES_HOST}", url],
                         capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors against {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)", out, re.M)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p50.group(2)]
    return {"rps": rps, "p50_ms": float(p50.group(1)) * scale}


def download_mib_s(url: str, verify: str | None = None) -> float:
    cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}", url]
    if verify:
        cmd[1:1] = ["--cacert", verify]
    speed, size = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    if int(float(size)) != BIG_MIB << 20:
        raise SystemExit(f"download of {url} got {size} bytes, expected {BIG_MIB << 20}")
    return float(speed) / (1 << 20)


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                out.append(int(entry))
    return out


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass
    return total


def vm_hwm_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def nginx_conf(base: Path, port: int, s3_port: int, images: int, s3: int, cert, key) -> Path:
    conf = base / "nginx.conf"
    conf.write_text(f"""
worker_processes auto;
pid {base}/nginx.pid;
error_log {base}/nginx-error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    upstream images {{ server 127.0.0.1:{images}; keepalive 128; }}
    upstream s3 {{ server 127.0.0.1:{s3}; keepalive 32; }}
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
        }}
    }}
    server {{
        listen 127.0.0.1:{s3_port} ssl;
        location / {{
            proxy_pass http://s3;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering off;
        }}
    }}
}}
""")
    return conf


def edge_links(edge) -> int:
    return sum(int(float(line.split()[-1])) for line in requests.get(
        edge.admin_url + "/metrics", timeout=5).text.splitlines()
        if line.startswith("pixelport_edge_tunnel_connections{"))


def rathole_keys() -> tuple[str, str]:
    out = subprocess.run([RATHOLE, "--genkey"], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[out.index("Private") + 2], out[out.index("Public") + 2]


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-tunnel-"))
    procs: list[subprocess.Popen] = []
    started: list = []
    try:
        # The tunnel is what is measured here: the edge's cache would answer every request
        # itself (benches/edge_cache_bench.py measures the cache).
        edge = Edge(base / "edge", extra="[edge.cache]\nenabled = false\n").start()
        started.append(edge)
        appliances = []
        for i in range(2):
            d = harness.Daemon(base / f"appliance{i}", legacy_unsigned=True,
                               extra_config="[tunnel]\nconnections = 4\ntransport = "
                               f"\"{os.environ.get('BENCH_TRANSPORT', 'quic')}\"\n")
            for host, door in ((IMAGES_HOST, "images"), (S3_HOST, "s3")):
                cp = join(d, edge.pair(host, door=door))
                assert cp.returncode == 0, cp.stderr
            d.start()
            started.append(d)
            s3 = d.client()
            s3.create_bucket(Bucket=harness.PUBLIC_BUCKET)
            s3.put_object(Bucket=harness.PUBLIC_BUCKET, Key="photo.jpg",
                          Body=PHOTO.read_bytes(), ContentType="image/jpeg")
            appliances.append(d)
        first = appliances[0]
        big = base / BIG_KEY
        with open(big, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(BIG_MIB):
                f.write(chunk)
        for d in appliances:
            d.client().upload_file(str(big), harness.PUBLIC_BUCKET, BIG_KEY)
        big.unlink()
        wait_until(lambda: edge.ready()[0] == 200, 20, what="the appliances connected")
        log(f"edge has {edge_links(edge)} appliance connections")
        for d in appliances:
            for _ in range(2):
                r = requests.get(d.images_url + IMAGE_PATH, timeout=60)
                assert r.status_code == 200, r.text
            assert r.headers.get("X-Cache") == "HIT", r.headers

        nginx_port, nginx_s3 = harness.free_port(), harness.free_port()
        conf = nginx_conf(base, nginx_port, nginx_s3, first.images_port, first.s3_port,
                          edge.cert, edge.key)
        procs.append(subprocess.Popen([NGINX, "-c", str(conf), "-p", str(base)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        rh_port, rh_img, rh_s3 = (harness.free_port() for _ in range(3))
        private, public = rathole_keys()
        (base / "rathole-server.toml").write_text(f"""
[server]
bind_addr = "127.0.0.1:{rh_port}"
[server.transport]
type = "noise"
[server.transport.noise]
local_private_key = "{private}"
[server.services.img]
token = "bench"
bind_addr = "127.0.0.1:{rh_img}"
[server.services.s3]
token = "bench"
bind_addr = "127.0.0.1:{rh_s3}"
""")
        (base / "rathole-client.toml").write_text(f"""
[client]
remote_addr = "127.0.0.1:{rh_port}"
[client.transport]
type = "noise"
[client.transport.noise]
remote_public_key = "{public}"
[client.services.img]
token = "bench"
local_addr = "127.0.0.1:{first.images_port}"
[client.services.s3]
token = "bench"
local_addr = "127.0.0.1:{first.s3_port}"
""")
        for side in ("server", "client"):
            procs.append(subprocess.Popen([RATHOLE, str(base / f"rathole-{side}.toml")],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          env={**os.environ, "RUST_LOG": "error"}))
        urls = {
            "direct": f"http://127.0.0.1:{first.images_port}{IMAGE_PATH}",
            "edge": f"https://127.0.0.1:{edge.https_port}{IMAGE_PATH}",
            "nginx": f"https://127.0.0.1:{nginx_port}{IMAGE_PATH}",
            "rathole": f"http://127.0.0.1:{rh_img}{IMAGE_PATH}",
        }
        wait_until(lambda: requests.get(urls["rathole"], timeout=5).status_code == 200, 20,
                   what="rathole up")
        host = {"Host": IMAGES_HOST}
        wait_until(lambda: requests.get(urls["nginx"], verify=str(edge.cert), headers=host,
                                        timeout=5).status_code == 200, 20, what="nginx up")
        # The comparison runs with one appliance, as nginx and rathole proxy to one; the
        # second joins afterwards for the RSS figure (2 appliances x 4 connections).
        second = appliances[1]
        assert second.stop() == 0
        wait_until(lambda: edge_links(edge) == 4, 20, what="only the first appliance left")
        for name, url in urls.items():
            r = requests.get(url, verify=str(edge.cert), headers=host, timeout=30)
            assert r.status_code == 200 and r.headers.get("X-Cache") == "HIT", (name, r.headers)
            wrk(url, "2s")  # warm-up
        # The processes between wrk and the appliance on each path (nginx: master and
        # workers; rathole: server and client), for CPU per request.
        nginx_pids = [procs[0].pid] + children(procs[0].pid)
        proxies = {"direct": [], "edge": [edge.proc.pid], "nginx": nginx_pids,
                   "rathole": [p.pid for p in procs[1:]]}
        results: dict[str, list[dict]] = {k: [] for k in urls}
        for rnd in range(ROUNDS):
            order = list(urls) if rnd % 2 == 0 else list(reversed(urls))
            for name in order:
                before = (cpu_of(proxies[name]), cpu_seconds(first.proc.pid))
                res = wrk(urls[name])
                n = res["rps"] * float(DURATION.rstrip("s"))
                after = (cpu_of(proxies[name]), cpu_seconds(first.proc.pid))
                res["proxy_us"] = 1e6 * (after[0] - before[0]) / n
                res["appliance_us"] = 1e6 * (after[1] - before[1]) / n
                log(f"  CPU per request on {name}: proxy {res['proxy_us']:.0f} µs, "
                    f"appliance {res['appliance_us']:.0f} µs")
                results[name].append(res)
                log(f"round {rnd + 1} {name}: {res['rps']:.0f} req/s, p50 {res['p50_ms']:.2f} ms")
        med = {k: {m: statistics.median(r[m] for r in v)
                   for m in ("rps", "p50_ms", "proxy_us", "appliance_us")}
               for k, v in results.items()}
        big_path = f"/{harness.PUBLIC_BUCKET}/{BIG_KEY}"
        downloads = {
            "direct": download_mib_s(f"http://127.0.0.1:{first.s3_port}{big_path}"),
            "edge": download_mib_s(edge.url(S3_HOST, big_path), str(edge.cert)),
            "nginx": download_mib_s(f"https://{S3_HOST}:{nginx_s3}{big_path}", str(edge.cert)),
            "rathole": download_mib_s(f"http://127.0.0.1:{rh_s3}{big_path}"),
        }
        second.start()
        wait_until(lambda: edge_links(edge) == 8, 20, what="both appliances connected")
        both = wrk(urls["edge"])
        log(f"edge with 2 appliances x 4 connections: {both['rps']:.0f} req/s, "
            f"p50 {both['p50_ms']:.2f} ms")
        edge_rss = vm_hwm_mib(edge.proc.pid)
        ratio = lambda a, b: a / b if b else float("nan")  # noqa: E731
        rows = [
            ("cache-hit req/s (64 conns)", "rps", "{:.0f}"),
            ("cache-hit p50 (ms)", "p50_ms", "{:.2f}"),
            ("CPU per request: edge / nginx / rathole (µs)", "proxy_us", "{:.0f}"),
            ("CPU per request: the appliance (µs)", "appliance_us", "{:.0f}"),
        ]
        lines = ["| metric | direct | edge + tunnel | nginx TLS proxy | rathole (noise) |",
                 "|---|---|---|---|---|"]
        for label, key, fmt in rows:
            lines.append(f"| {label} | " + " | ".join(fmt.format(med[k][key]) for k in urls)
                         + " |")
        lines.append(f"| edge with 2 appliances × 4 connections: req/s, p50 (ms) | | "
                     f"{both['rps']:.0f}, {both['p50_ms']:.2f} | | |")
        lines.append(f"| {BIG_MIB} MiB download (MiB/s) | "
                     + " | ".join(f"{downloads[k]:.0f}" for k in urls) + " |")
        targets = [
            ("edge req/s ÷ nginx TLS req/s", ratio(med["edge"]["rps"], med["nginx"]["rps"]),
             "≥ 1.0"),
            ("edge p50 − nginx p50 (ms)", med["edge"]["p50_ms"] - med["nginx"]["p50_ms"],
             "≤ 1.0"),
            ("edge req/s ÷ rathole req/s", ratio(med["edge"]["rps"], med["rathole"]["rps"]),
             "≥ 10"),
            ("edge MiB/s ÷ nginx MiB/s", ratio(downloads["edge"], downloads["nginx"]), "≥ 0.8"),
            ("edge peak RSS (MiB), 2 appliances × 4 connections", edge_rss, "< 64"),
        ]
        lines += ["", "| target | measured | goal |", "|---|---|---|"]
        lines += [f"| {t} | {v:.2f} | {g} |" for t, v, g in targets]
        report = "\n".join(lines)
        print(report)
        out = Path(os.environ.get("BENCH_OUT", ROOT / "target" / "bench-tunnel"))
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(report + "\n")
        (out / "raw.json").write_text(json.dumps({"rounds": results, "downloads": downloads,
                                                  "edge_rss_mib": edge_rss}, indent=1))
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
            except Exception as e:  # noqa: BLE001
                log(f"stopping {s}: {e}")


if __name__ == "__main__":
    main()
