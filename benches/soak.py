#!/usr/bin/env python3
"""The mixed soak benchmark (issue #10): documented, not a timed test.

Starts one Pixelport daemon (the release build by default) on free loopback ports with a
generated config, uploads the shared photographs as image sources, then runs these
populations at once for ``--duration`` seconds (600 by default):

  s3 small    PUT / GET / DELETE of 4-64 KiB random objects (each GET checks the MD5)
  s3 large    PUT (single or multipart) / GET of 16-64 MiB objects (each GET checks the MD5)
  image miss  signed imgproxy URLs, every one a variant never asked for before
  image hit   a fixed handful of variants, warmed before the run, asked for again and again
  slow-loris  raw sockets on all three listeners that dribble a request head one byte at a
              time and open again when the server cuts them

and samples the daemon's VmRSS from /proc every second. At the end every object that was
stored (and not deleted since) is read back and its MD5 compared with the one sent; the
listing is compared with what should be there. It prints a Markdown table and a verdict.

PASS means all of:
  * no 5xx other than the documented overload answers: 503 with ``Retry-After`` (a
    listener's connection cap, ``src/server/conn.rs``; the image deadline) and, from the
    image listener, 429 with ``Retry-After`` (queue full). See docs/security.md, Limits.
  * no lost or corrupt object: every MD5 matches at the end and on every GET during the
    run, every ETag is the one S3 defines, no deleted key is listed again;
  * peak RSS under ``--rss-bound-mib`` (default: the worst case docs/security.md gives for
    the defaults on 2 cores);
  * every request got an HTTP answer (no reset or timeout on a well-behaved client), and the
    daemon stayed up without a panic.
The exit code is 0 on PASS, 1 on FAIL, 2 when the soak could not run at all.

What must stay true of this driver: a key whose PUT or DELETE got no clear answer is set
aside as uncertain and never judged; every other outcome is counted, none is dropped.

Usage (normally through scripts/soak.sh, which builds the release binary first):

  python benches/soak.py [--bin target/release/pixelport] [--duration 600] [--json PATH]
                         [--small-workers 4] [--large-workers 1] [--miss-workers 2]
                         [--hit-workers 2] [--loris 60] [--set SECTION.KEY=VALUE]...
                         (see --help)

Needs Python 3.11 with boto3, requests and pillow (tests/python/requirements.txt).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import io
import itertools
import json
import os
import platform
import random
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

REPO_ROOT = Path(__file__).resolve().parents[1]

KiB = 1024
MiB = 1024 * 1024

ACCESS_KEY = "soak-access-key"
SECRET_KEY = "soak-secret-key-0123456789abcdef"
REGION = "us-east-1"
IMAGE_KEY_HEX = b"pixelport-soak-image-key".hex()
IMAGE_SALT_HEX = b"pixelport-soak-salt".hex()

SMALL_BUCKET = "soak-small"
LARGE_BUCKET = "soak-large"
IMAGE_BUCKET = "soak-images"

# The daemon's memory bound on the defaults, as docs/security.md states it ("about 990 MiB on
# the defaults"); read from there when the file is present.
FALLBACK_RSS_BOUND_MIB = 990

READY_TIMEOUT = 60.0


# ----------------------------------------------------------------------------- settings


def documented_rss_bound() -> tuple[int, str]:
    doc = REPO_ROOT / "docs" / "security.md"
    try:
        m = re.search(r"about (\d+) MiB on the\s+defaults", doc.read_text())
    except OSError:
        m = None
    if m:
        return int(m.group(1)), "docs/security.md, the daemon's memory bound"
    return FALLBACK_RSS_BOUND_MIB, "built-in copy of docs/security.md's figure"


@dataclass(frozen=True)
class Settings:
    """Every knob of one soak, checked before anything starts."""

    bin: Path
    data_dir: Path | None
    keep: bool
    duration: float
    small_workers: int
    large_workers: int
    miss_workers: int
    hit_workers: int
    loris: int
    loris_interval: float
    small_min: int
    small_max: int
    small_keep: int
    large_min: int
    large_max: int
    large_keep: int
    multipart_fraction: float
    part_size: int
    images_dir: Path
    sources: tuple[str, ...]
    miss_formats: tuple[str, ...]
    check_every: int
    hit_variants: int
    rss_bound_mib: int
    rss_bound_source: str
    verify_workers: int
    log_level: str
    overrides: tuple[tuple[str, str, str], ...]  # (section, key, TOML value) from --set
    json_path: Path | None
    seed: int


def parse_args(argv: list[str] | None = None) -> Settings:
    bound, bound_source = documented_rss_bound()
    p = argparse.ArgumentParser(
        description="Pixelport's mixed soak benchmark (issue #10).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--bin", default=str(REPO_ROOT / "target" / "release" / "pixelport"),
                   help="the pixelport binary to start")
    p.add_argument("--data-dir", default=None,
                   help="work directory (config, log, the daemon's data_dir under data/); "
                        "default: a fresh temporary directory")
    p.add_argument("--keep", action="store_true",
                   help="keep the daemon's data directory after a passing run "
                        "(a failing run always keeps it)")
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    p.add_argument("--small-workers", type=int, default=4, help="S3 small-object threads")
    p.add_argument("--large-workers", type=int, default=1, help="S3 large-object threads")
    p.add_argument("--miss-workers", type=int, default=2, help="image-miss threads")
    p.add_argument("--hit-workers", type=int, default=2, help="image-hit threads")
    p.add_argument("--loris", type=int, default=60,
                   help="slow-loris connections held open, spread over the 3 listeners")
    p.add_argument("--loris-interval", type=float, default=1.0,
                   help="seconds between two header bytes of a slow-loris connection")
    p.add_argument("--small-kib", default="4-64", help="small object size range, KiB")
    p.add_argument("--small-keep", type=int, default=2000,
                   help="live small objects per thread; the oldest is deleted past it")
    p.add_argument("--large-mib", default="16-64", help="large object size range, MiB")
    p.add_argument("--large-keep", type=int, default=3,
                   help="live large objects per thread; the oldest is deleted past it")
    p.add_argument("--multipart-fraction", type=float, default=0.5,
                   help="share of large PUTs sent as multipart uploads")
    p.add_argument("--part-mib", type=int, default=8, help="multipart part size, MiB (>= 5)")
    p.add_argument("--images-dir", default=str(REPO_ROOT.parent / "shared" / "images"),
                   help="where the source photographs are")
    p.add_argument("--sources", default="",
                   help="comma-separated file names in --images-dir; default: every "
                        "photograph there (not the edge-* files)")
    p.add_argument("--miss-formats", default="jpg,webp",
                   help="output formats the miss variants cycle through")
    p.add_argument("--check-every", type=int, default=10,
                   help="decode every Nth image answer and check its width (0: never)")
    p.add_argument("--hit-variants", type=int, default=8, help="variants in the hit set")
    p.add_argument("--rss-bound-mib", type=int, default=bound,
                   help=f"peak RSS allowed (default from {bound_source})")
    p.add_argument("--verify-workers", type=int, default=4, help="threads of the final check")
    p.add_argument("--log-level", default="warn", help="the daemon's RUST_LOG")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="a config key for the daemon (repeatable), e.g. images.max_queue=4, "
                        "limits.header_read_timeout=10s, cache.enabled=false; numbers, "
                        "booleans, arrays and quoted strings go in as written, anything else "
                        "as a string")
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    a = p.parse_args(argv)

    def size_range(text: str, unit: int, name: str) -> tuple[int, int]:
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
        if not m:
            p.error(f"{name} must be N or MIN-MAX, not {text!r}")
        lo = int(m.group(1))
        hi = int(m.group(2) or lo)
        if not 0 < lo <= hi:
            p.error(f"{name}: need 0 < MIN <= MAX, got {text!r}")
        return lo * unit, hi * unit

    small_min, small_max = size_range(a.small_kib, KiB, "--small-kib")
    large_min, large_max = size_range(a.large_mib, MiB, "--large-mib")
    for name in ("small_workers", "large_workers", "miss_workers", "hit_workers", "loris"):
        if getattr(a, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    if a.duration <= 0:
        p.error("--duration must be > 0")
    if a.part_mib < 5:
        p.error("--part-mib must be at least 5 (S3's smallest part)")
    if not 0.0 <= a.multipart_fraction <= 1.0:
        p.error("--multipart-fraction must be within 0..1")
    if a.loris_interval <= 0:
        p.error("--loris-interval must be > 0")
    if a.small_keep < 1 or a.large_keep < 1:
        p.error("--small-keep and --large-keep must be >= 1")
    formats = tuple(f.strip().lower() for f in a.miss_formats.split(",") if f.strip())
    if not formats:
        p.error("--miss-formats names no format")
    images_dir = Path(a.images_dir)
    if a.sources:
        sources = tuple(s.strip() for s in a.sources.split(",") if s.strip())
    else:
        sources = tuple(sorted(
            f.name for f in images_dir.glob("*")
            if f.is_file() and not f.name.startswith("edge-")
            and f.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp", ".avif", ".gif")))
    if (a.miss_workers or a.hit_workers) and not sources:
        p.error(f"no source photographs found in {images_dir}")
    for s in sources:
        if not (images_dir / s).is_file():
            p.error(f"source {s} not found in {images_dir}")
    overrides = []
    for item in a.set:
        m = re.fullmatch(r"([a-z_0-9]+)\.([a-z_0-9]+)=(.*)", item, re.S)
        if not m:
            p.error(f"--set wants SECTION.KEY=VALUE, not {item!r}")
        section, key, value = m.groups()
        if not re.fullmatch(r'-?\d+(\.\d+)?|true|false|\[.*\]|".*"', value, re.S):
            value = json.dumps(value)
        overrides.append((section, key, value))
    return Settings(
        bin=Path(a.bin).resolve(),
        data_dir=Path(a.data_dir).resolve() if a.data_dir else None,
        keep=a.keep,
        duration=a.duration,
        small_workers=a.small_workers,
        large_workers=a.large_workers,
        miss_workers=a.miss_workers,
        hit_workers=a.hit_workers,
        loris=a.loris,
        loris_interval=a.loris_interval,
        small_min=small_min,
        small_max=small_max,
        small_keep=a.small_keep,
        large_min=large_min,
        large_max=large_max,
        large_keep=a.large_keep,
        multipart_fraction=a.multipart_fraction,
        part_size=a.part_mib * MiB,
        images_dir=images_dir,
        sources=sources,
        miss_formats=formats,
        check_every=max(0, a.check_every),
        hit_variants=max(1, a.hit_variants),
        rss_bound_mib=a.rss_bound_mib,
        rss_bound_source=(bound_source if a.rss_bound_mib == bound else "--rss-bound-mib"),
        verify_workers=max(1, a.verify_workers),
        log_level=a.log_level,
        overrides=tuple(overrides),
        json_path=Path(a.json) if a.json else None,
        seed=a.seed if a.seed is not None else int(time.time()),
    )


# ----------------------------------------------------------------------------- outcomes


def classify(listener: str, status: int, headers) -> str:
    """The kind of one HTTP answer: ok, overload (documented), client (4xx) or server (5xx).

    Documented overload answers (docs/security.md, Limits): 503 with Retry-After on any
    listener (the connection cap, src/server/conn.rs OVER_CAPACITY; the image deadline) and
    429 with Retry-After from the image listener (its queue is full).
    """
    retry_after = headers is not None and any(k.lower() == "retry-after" for k in headers)
    if status < 400:
        return "ok"
    if status == 503 and retry_after:
        return "overload"
    if status == 429 and retry_after and listener == "images":
        return "overload"
    if status >= 500:
        return "server"
    return "client"


def status_label(status: int, kind: str) -> str:
    return f"{status}*" if kind == "overload" else str(status)


class Stats:
    """What one row of the table counts; shared by the threads of its class."""

    def __init__(self, name: str, listener: str):
        self.name = name
        self.listener = listener
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.bytes = 0
        self.requests = 0
        self.statuses: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()  # ok / overload / client / server / exception
        self.notes: Counter[str] = Counter()
        self.examples: list[str] = []  # the first few unexpected answers, for the report
        self.started = time.monotonic()
        self.ended = self.started

    def answer(self, status: int, headers, latency: float, nbytes: int = 0,
               detail: str = "") -> str:
        kind = classify(self.listener, status, headers)
        with self.lock:
            self.requests += 1
            self.latencies.append(latency)
            self.bytes += nbytes
            self.statuses[status_label(status, kind)] += 1
            self.kinds[kind] += 1
            self.ended = time.monotonic()
            if kind in ("server", "client") and len(self.examples) < 8:
                self.examples.append(f"{status} {detail}".strip()[:300])
        return kind

    def exception(self, exc: BaseException, latency: float, detail: str = "") -> None:
        name = type(exc).__name__
        with self.lock:
            self.requests += 1
            self.latencies.append(latency)
            self.statuses[f"exc:{name}"] += 1
            self.kinds["exception"] += 1
            self.ended = time.monotonic()
            if len(self.examples) < 8:
                self.examples.append(f"{name}: {exc} {detail}".strip()[:300])

    def note(self, what: str, n: int = 1) -> None:
        with self.lock:
            self.notes[what] += n

    def row(self, elapsed: float) -> dict:
        lat = sorted(self.latencies)
        return {
            "class": self.name,
            "listener": self.listener,
            "requests": self.requests,
            "req_per_s": self.requests / elapsed if elapsed > 0 else 0.0,
            "mib_per_s": self.bytes / MiB / elapsed if elapsed > 0 else 0.0,
            "bytes": self.bytes,
            "p50_ms": percentile(lat, 50) * 1000 if lat else None,
            "p99_ms": percentile(lat, 99) * 1000 if lat else None,
            "max_ms": lat[-1] * 1000 if lat else None,
            "statuses": dict(self.statuses.most_common()),
            "kinds": dict(self.kinds),
            "notes": dict(self.notes),
            "examples": list(self.examples),
        }


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return sorted_values[int(min(rank, len(sorted_values))) - 1]


def client_error_answer(e: ClientError) -> tuple[int | None, dict, str]:
    meta = e.response.get("ResponseMetadata", {}) if e.response else {}
    err = e.response.get("Error", {}) if e.response else {}
    return (meta.get("HTTPStatusCode"), meta.get("HTTPHeaders", {}) or {},
            f"{err.get('Code', '')} {err.get('Message', '')}".strip())


# ----------------------------------------------------------------------------- daemon


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """The daemon under test: its config, its process, its log."""

    def __init__(self, s: Settings, work: Path):
        self.s = s
        self.work = work
        self.data = work / "data"
        self.config_path = work / "pixelport.toml"
        self.log_path = work / "pixelport.log"
        self.ports = {"s3": free_port(), "images": free_port(), "admin": free_port()}
        self.proc: subprocess.Popen | None = None

    def url(self, listener: str) -> str:
        return f"http://127.0.0.1:{self.ports[listener]}"

    def write_config(self) -> None:
        sections: dict[str, dict[str, str]] = {
            "server": {
                "data_dir": json.dumps(str(self.data)),
                "log_format": '"text"',
                "log_level": json.dumps(self.s.log_level),
                "shutdown_grace": '"10s"',
            },
            "s3": {
                "listen": f'"127.0.0.1:{self.ports["s3"]}"',
                "access_key": json.dumps(ACCESS_KEY),
                "secret_key": json.dumps(SECRET_KEY),
                "region": json.dumps(REGION),
            },
            "images": {
                "listen": f'"127.0.0.1:{self.ports["images"]}"',
                "key": f'"{IMAGE_KEY_HEX}"',
                "salt": f'"{IMAGE_SALT_HEX}"',
            },
            "admin": {"listen": f'"127.0.0.1:{self.ports["admin"]}"'},
            "store": {"kind": '"embedded"'},
        }
        for section, key, value in self.s.overrides:  # --set, the last one for a key wins
            sections.setdefault(section, {})[key] = value
        lines = ["# Written by benches/soak.py; every key is documented in config/pixelport.toml."]
        for section, keys in sections.items():
            lines.append(f"[{section}]")
            lines += [f"{k} = {v}" for k, v in keys.items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self.data.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.write_config()
        # Nothing from the caller's environment may change the configuration under test.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PIXELPORT_", "IMGPROXY_", "AWS_"))}
        env["RUST_LOG"] = self.s.log_level
        env.setdefault("RUST_BACKTRACE", "1")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.s.bin), "serve", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pixelport exited at start with code {self.proc.returncode}:\n"
                                   f"{tail(self.log_path)}")
            try:
                r = requests.get(self.url("admin") + "/ready", timeout=2)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code} {r.text[:200]}"
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.1)
        raise RuntimeError(f"pixelport not ready within {READY_TIMEOUT:.0f}s ({last}):\n"
                           f"{tail(self.log_path)}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return -9
        return self.proc.returncode


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"<cannot read {path}: {e}>"


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile (KiB) and the open descriptor count of ``pid``;
    {} once it is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:", "RssFile:")):
                    out[line.split(":")[0]] = int(line.split()[1])
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError, IndexError):
        pass
    return out


class RssSampler(threading.Thread):
    """Reads the daemon's VmRSS (and open descriptors) every second."""

    def __init__(self, pid: int, t0: float):
        super().__init__(name="rss", daemon=True)
        self.pid = pid
        self.t0 = t0
        self.samples: list[tuple[float, int, int]] = []  # (t s, VmRSS KiB, fds)
        self.anon: list[int] = []  # RssAnon KiB, one per sample
        self.file: list[int] = []  # RssFile KiB, one per sample
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            st = proc_status(self.pid)
            if "VmRSS" in st:
                self.samples.append((round(time.monotonic() - self.t0, 1), st["VmRSS"],
                                     st.get("fds", 0)))
                self.anon.append(st.get("RssAnon", 0))
                self.file.append(st.get("RssFile", 0))
            self.stop_event.wait(1.0)

    def peak(self) -> tuple[int, float]:
        if not self.samples:
            return 0, 0.0
        t, kib, _ = max(self.samples, key=lambda x: x[1])
        return kib, t

    def at_peak(self) -> tuple[int, int]:
        """RssAnon and RssFile (KiB) of the sample with the highest VmRSS."""
        if not self.samples:
            return 0, 0
        i = max(range(len(self.samples)), key=lambda j: self.samples[j][1])
        return self.anon[i], self.file[i]


# ----------------------------------------------------------------------------- clients


def s3_client(endpoint: str):
    cfg = Config(
        s3={"addressing_style": "path"},
        # One attempt: the soak wants the daemon's first answer, not the SDK's retry.
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=10,
        read_timeout=120,
        region_name=REGION,
        signature_version="s3v4",
        max_pool_connections=4,
    )
    session = boto3.session.Session(aws_access_key_id=ACCESS_KEY,
                                    aws_secret_access_key=SECRET_KEY, region_name=REGION)
    return session.client("s3", endpoint_url=endpoint, config=cfg)


def sign(path: str) -> str:
    """imgproxy's signature: HMAC-SHA256(key, salt + path), URL-safe base64 without padding."""
    mac = hmac.new(bytes.fromhex(IMAGE_KEY_HEX), bytes.fromhex(IMAGE_SALT_HEX) + path.encode(),
                   hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def multipart_etag(part_md5s: list[bytes]) -> str:
    return f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"


@dataclass
class Ledger:
    """What one S3 thread stored: key -> (md5 hex, size), in PUT order; keys in doubt."""

    bucket: str
    live: dict[str, tuple[str, int]] = field(default_factory=dict)
    uncertain: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)


# ----------------------------------------------------------------------------- the soak


class Soak:
    """The populations, what they counted, and the final check; one per run."""

    def __init__(self, s: Settings, daemon: Daemon):
        self.s = s
        self.d = daemon
        self.stop = threading.Event()
        self.stats = {
            "s3 small PUT": Stats("s3 small PUT", "s3"),
            "s3 small GET": Stats("s3 small GET", "s3"),
            "s3 large PUT": Stats("s3 large PUT", "s3"),
            "s3 large GET": Stats("s3 large GET", "s3"),
            "s3 DELETE": Stats("s3 DELETE", "s3"),
            "image miss": Stats("image miss", "images"),
            "image hit": Stats("image hit", "images"),
            "slow-loris": Stats("slow-loris", "all"),
            "verify GET": Stats("verify GET", "s3"),
        }
        self.ledgers: list[Ledger] = []
        self.ledger_lock = threading.Lock()
        self.read_mismatch: list[str] = []  # wrong bytes or a 404 for a live key, during the run
        self.etag_mismatch: list[str] = []
        self.bad_variants: list[str] = []
        self.sources: list[tuple[str, tuple[int, int] | None]] = []  # (key, (w, h))
        self.variant_counter = itertools.count()
        self.large_base = b""
        self.loris_cut: list[dict] = []
        self.loris_open_at_end: list[float] = []
        self.loris_peak_open = 0

    # -- setup -----------------------------------------------------------------
    def setup(self) -> None:
        c = s3_client(self.d.url("s3"))
        for b in (SMALL_BUCKET, LARGE_BUCKET, IMAGE_BUCKET):
            c.create_bucket(Bucket=b)
        from PIL import Image  # only here and in the width check

        for name in self.s.sources:
            data = (self.s.images_dir / name).read_bytes()
            key = f"src/{name}"
            c.put_object(Bucket=IMAGE_BUCKET, Key=key, Body=data)
            dims = None
            try:
                with Image.open(io.BytesIO(data)) as im:
                    w, h = im.size
                    orientation = im.getexif().get(0x0112, 1)
                dims = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
            except Exception:
                pass  # a format this Pillow cannot read: its widths are not checked
            self.sources.append((key, dims))
        if self.s.large_workers:
            # One random buffer; each large object is a slice of it stamped with its own
            # per-MiB tags, so generating 64 MiB costs a copy rather than 64 MiB of entropy.
            self.large_base = random.Random(self.s.seed).randbytes(self.s.large_max + MiB)

    def hit_set(self) -> list[str]:
        paths = []
        fmts = ("jpg", "webp")
        for i in range(self.s.hit_variants):
            key, _ = self.sources[i % len(self.sources)]
            fmt = fmts[(i // len(self.sources)) % len(fmts)]
            size = 96 + 32 * (i // (2 * len(self.sources)))
            path = f"/rs:fill:{size}:{size}/q:70/plain/s3://{IMAGE_BUCKET}/{key}@{fmt}"
            paths.append(f"/{sign(path)}{path}")
        return paths

    def warm(self, paths: list[str]) -> int:
        """Asks for each hit variant until it is cached; returns how many are."""
        warmed = 0
        with requests.Session() as http:
            for p in paths:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        r = http.get(self.d.url("images") + p, timeout=(5, 60))
                    except requests.RequestException:
                        time.sleep(0.5)
                        continue
                    if r.status_code == 200 and r.headers.get("X-Cache") == "HIT":
                        warmed += 1
                        break
                    if r.status_code not in (200, 429, 503):
                        print(f"[soak] warming {p}: HTTP {r.status_code} {r.text[:200]}",
                              file=sys.stderr)
                        break
                    time.sleep(0.2)
        return warmed

    # -- S3 small --------------------------------------------------------------
    def small_worker(self, idx: int) -> None:
        rnd = random.Random(self.s.seed * 1000 + idx)
        c = s3_client(self.d.url("s3"))
        ledger = Ledger(SMALL_BUCKET)
        with self.ledger_lock:
            self.ledgers.append(ledger)
        n = 0
        while not self.stop.is_set():
            r = rnd.random()
            if not ledger.live or r < 0.5:
                n += 1
                key = f"t{idx}/{n:08d}-{rnd.getrandbits(32):08x}"
                body = os.urandom(rnd.randint(self.s.small_min, self.s.small_max))
                self.put(c, self.stats["s3 small PUT"], ledger, key, body)
            elif r < 0.95:
                self.get(c, self.stats["s3 small GET"], ledger, self.pick(rnd, ledger))
            else:
                self.delete(c, ledger, self.pick(rnd, ledger))
            while len(ledger.live) > self.s.small_keep and not self.stop.is_set():
                self.delete(c, ledger, next(iter(ledger.live)))

    @staticmethod
    def pick(rnd: random.Random, ledger: Ledger) -> str:
        # dicts keep insertion order; a random index walk is O(n) but n is small (keep cap).
        i = rnd.randrange(len(ledger.live))
        return next(itertools.islice(iter(ledger.live), i, None))

    def put(self, c, st: Stats, ledger: Ledger, key: str, body: bytes) -> None:
        md5 = hashlib.md5(body).hexdigest()
        t0 = time.perf_counter()
        try:
            resp = c.put_object(Bucket=ledger.bucket, Key=key, Body=body)
        except ClientError as e:
            status, headers, detail = client_error_answer(e)
            if status is None:
                st.exception(e, time.perf_counter() - t0, key)
                ledger.uncertain.add(key)
            else:
                kind = st.answer(status, headers, time.perf_counter() - t0, 0,
                                 f"PUT {key}: {detail}")
                if kind == "server":  # the server's own failure: stored or not, nobody knows
                    ledger.uncertain.add(key)
                self.backoff(kind, headers)
            return
        except Exception as e:  # no answer: the object may or may not exist now
            st.exception(e, time.perf_counter() - t0, f"PUT {key}")
            ledger.uncertain.add(key)
            return
        meta = resp["ResponseMetadata"]
        st.answer(meta["HTTPStatusCode"], meta.get("HTTPHeaders"), time.perf_counter() - t0,
                  len(body))
        etag = resp.get("ETag", "").strip('"')
        if etag != md5:
            self.etag_mismatch.append(f"PUT {ledger.bucket}/{key}: ETag {etag}, MD5 {md5}")
        ledger.live[key] = (md5, len(body))

    def get(self, c, st: Stats, ledger: Ledger, key: str) -> None:
        want_md5, want_size = ledger.live[key]
        t0 = time.perf_counter()
        try:
            resp = c.get_object(Bucket=ledger.bucket, Key=key)
            h = hashlib.md5()
            size = 0
            for chunk in resp["Body"].iter_chunks(MiB):
                h.update(chunk)
                size += len(chunk)
        except ClientError as e:
            status, headers, detail = client_error_answer(e)
            if status is None:
                st.exception(e, time.perf_counter() - t0, f"GET {key}")
                return
            kind = st.answer(status, headers, time.perf_counter() - t0, 0, f"GET {key}: {detail}")
            if status == 404:
                self.read_mismatch.append(f"GET {ledger.bucket}/{key}: 404 {detail}")
            self.backoff(kind, headers)
            return
        except Exception as e:
            st.exception(e, time.perf_counter() - t0, f"GET {key}")
            return
        meta = resp["ResponseMetadata"]
        st.answer(meta["HTTPStatusCode"], meta.get("HTTPHeaders"), time.perf_counter() - t0, size)
        if h.hexdigest() != want_md5 or size != want_size:
            self.read_mismatch.append(f"GET {ledger.bucket}/{key}: {size} bytes MD5 "
                                      f"{h.hexdigest()}, stored {want_size} bytes MD5 {want_md5}")

    def delete(self, c, ledger: Ledger, key: str) -> None:
        st = self.stats["s3 DELETE"]
        t0 = time.perf_counter()
        try:
            resp = c.delete_object(Bucket=ledger.bucket, Key=key)
        except ClientError as e:
            status, headers, detail = client_error_answer(e)
            if status is None:
                st.exception(e, time.perf_counter() - t0, f"DELETE {key}")
            else:
                kind = st.answer(status, headers, time.perf_counter() - t0, 0,
                                 f"DELETE {key}: {detail}")
                if kind == "overload":  # refused before anything happened: still there
                    self.backoff(kind, headers)
                    return
            # Otherwise the key's state is no longer known for sure.
            ledger.live.pop(key, None)
            ledger.uncertain.add(key)
            return
        except Exception as e:
            st.exception(e, time.perf_counter() - t0, f"DELETE {key}")
            ledger.live.pop(key, None)
            ledger.uncertain.add(key)
            return
        meta = resp["ResponseMetadata"]
        st.answer(meta["HTTPStatusCode"], meta.get("HTTPHeaders"), time.perf_counter() - t0)
        ledger.live.pop(key, None)
        ledger.deleted.add(key)

    def backoff(self, kind: str, headers) -> None:
        """A well-behaved client waits as long as an overload answer's Retry-After says."""
        if kind != "overload":
            return
        wait = 1.0
        for k, v in (headers or {}).items():
            if k.lower() == "retry-after":
                try:
                    wait = min(5.0, max(0.0, float(v)))
                except ValueError:
                    pass
        self.stop.wait(wait)

    # -- S3 large --------------------------------------------------------------
    def large_body(self, key: str, size: int, rnd: random.Random) -> bytes:
        off = rnd.randrange(MiB)
        buf = bytearray(self.large_base[off:off + size])
        for i, pos in enumerate(range(0, size, MiB)):
            tag = hashlib.sha256(f"{key}/{i}".encode()).digest()
            buf[pos:pos + len(tag)] = tag[:max(0, min(len(tag), size - pos))]
        return bytes(buf)

    def large_worker(self, idx: int) -> None:
        rnd = random.Random(self.s.seed * 1000 + 500 + idx)
        c = s3_client(self.d.url("s3"))
        ledger = Ledger(LARGE_BUCKET)
        with self.ledger_lock:
            self.ledgers.append(ledger)
        n = 0
        while not self.stop.is_set():
            if len(ledger.live) < 1 or rnd.random() < 0.5:
                n += 1
                key = f"t{idx}/{n:06d}-{rnd.getrandbits(32):08x}"
                body = self.large_body(key, rnd.randint(self.s.large_min, self.s.large_max), rnd)
                if rnd.random() < self.s.multipart_fraction:
                    self.put_multipart(c, ledger, key, body)
                else:
                    self.put(c, self.stats["s3 large PUT"], ledger, key, body)
                del body
            else:
                self.get(c, self.stats["s3 large GET"], ledger, self.pick(rnd, ledger))
            while len(ledger.live) > self.s.large_keep and not self.stop.is_set():
                self.delete(c, ledger, next(iter(ledger.live)))

    def put_multipart(self, c, ledger: Ledger, key: str, body: bytes) -> None:
        """One multipart upload, counted as one request of "s3 large PUT" (all its calls)."""
        st = self.stats["s3 large PUT"]
        st.note("multipart")
        md5 = hashlib.md5(body).hexdigest()
        t0 = time.perf_counter()
        upload_id = None
        step = "CreateMultipartUpload"
        try:
            upload_id = c.create_multipart_upload(Bucket=ledger.bucket, Key=key)["UploadId"]
            parts, digests = [], []
            for i, off in enumerate(range(0, len(body), self.s.part_size), start=1):
                step = f"UploadPart {i}"
                chunk = body[off:off + self.s.part_size]
                r = c.upload_part(Bucket=ledger.bucket, Key=key, UploadId=upload_id,
                                  PartNumber=i, Body=chunk)
                parts.append({"ETag": r["ETag"], "PartNumber": i})
                digests.append(hashlib.md5(chunk).digest())
            step = "CompleteMultipartUpload"
            resp = c.complete_multipart_upload(Bucket=ledger.bucket, Key=key, UploadId=upload_id,
                                               MultipartUpload={"Parts": parts})
        except ClientError as e:
            status, headers, detail = client_error_answer(e)
            if status is None:
                st.exception(e, time.perf_counter() - t0, f"{step} {key}")
                ledger.uncertain.add(key)
            else:
                kind = st.answer(status, headers, time.perf_counter() - t0, 0,
                                 f"{step} {key}: {detail}")
                if step == "CompleteMultipartUpload" and kind == "server":
                    ledger.uncertain.add(key)
                self.abort(c, ledger.bucket, key, upload_id)
                self.backoff(kind, headers)
                return
            self.abort(c, ledger.bucket, key, upload_id)
            return
        except Exception as e:
            st.exception(e, time.perf_counter() - t0, f"{step} {key}")
            ledger.uncertain.add(key)
            self.abort(c, ledger.bucket, key, upload_id)
            return
        meta = resp["ResponseMetadata"]
        st.answer(meta["HTTPStatusCode"], meta.get("HTTPHeaders"), time.perf_counter() - t0,
                  len(body))
        etag = resp.get("ETag", "").strip('"')
        want = multipart_etag(digests)
        if etag != want:
            self.etag_mismatch.append(f"multipart {ledger.bucket}/{key}: ETag {etag}, "
                                      f"expected {want}")
        ledger.live[key] = (md5, len(body))

    @staticmethod
    def abort(c, bucket: str, key: str, upload_id: str | None) -> None:
        if upload_id:
            try:
                c.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except Exception:
                pass

    # -- images ----------------------------------------------------------------
    def miss_path(self, n: int) -> tuple[str, str, int]:
        """The n-th distinct variant: (signed path, source key, requested width)."""
        src_i = n % len(self.sources)
        i = n // len(self.sources)
        # 7919 is prime to 1200: the widths 40..1239 in a scattered order, each once per round.
        width = 40 + (i * 7919) % 1200
        i //= 1200
        quality = 40 + i % 55
        i //= 55
        fmt = self.s.miss_formats[i % len(self.s.miss_formats)]
        key, _ = self.sources[src_i]
        path = f"/rs:fit:{width}:0/q:{quality}/plain/s3://{IMAGE_BUCKET}/{key}@{fmt}"
        return f"/{sign(path)}{path}", key, width

    def image_get(self, http: requests.Session, st: Stats, path: str) -> requests.Response | None:
        t0 = time.perf_counter()
        try:
            r = http.get(self.d.url("images") + path, timeout=(10, 120))
        except requests.RequestException as e:
            st.exception(e, time.perf_counter() - t0, path)
            return None
        kind = st.answer(r.status_code, r.headers, time.perf_counter() - t0, len(r.content),
                         f"GET {path}: {r.text[:200] if r.status_code >= 400 else ''}")
        self.backoff(kind, r.headers)
        return r

    def check_width(self, r: requests.Response, key: str, dims: tuple[int, int] | None,
                    width: int | None, what: str) -> None:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(r.content)) as im:
                im.load()
                got = im.size
        except Exception as e:
            self.bad_variants.append(f"{what}: does not decode ({e})")
            return
        if dims and width:
            want = min(width, dims[0])  # rs:fit:W:0 never enlarges
            if abs(got[0] - want) > 1:
                self.bad_variants.append(f"{what}: {got[0]}x{got[1]}, expected width {want}")

    def miss_worker(self, idx: int) -> None:
        st = self.stats["image miss"]
        dims = dict(self.sources)
        with requests.Session() as http:
            while not self.stop.is_set():
                n = next(self.variant_counter)
                path, key, width = self.miss_path(n)
                r = self.image_get(http, st, path)
                if r is None or r.status_code != 200:
                    continue
                st.note(f"X-Cache {r.headers.get('X-Cache', '-')}")
                if self.s.check_every and n % self.s.check_every == 0:
                    self.check_width(r, key, dims.get(key), width, f"miss {path}")

    def hit_worker(self, idx: int, paths: list[str]) -> None:
        st = self.stats["image hit"]
        rnd = random.Random(self.s.seed * 1000 + 900 + idx)
        bodies: dict[str, str] = {}
        with requests.Session() as http:
            while not self.stop.is_set():
                path = rnd.choice(paths)
                r = self.image_get(http, st, path)
                if r is None or r.status_code != 200:
                    continue
                st.note(f"X-Cache {r.headers.get('X-Cache', '-')}")
                digest = hashlib.md5(r.content).hexdigest()
                # A hit is the same bytes every time.
                if bodies.setdefault(path, digest) != digest:
                    self.bad_variants.append(f"hit {path}: bytes changed between answers")
                    bodies[path] = digest

    # -- slow-loris ------------------------------------------------------------
    def loris(self) -> None:
        """Holds ``--loris`` connections, each sending its head one byte per interval."""
        st = self.stats["slow-loris"]
        targets = [("images", "/health"), ("s3", "/"), ("admin", "/health")]
        want = [self.s.loris // 3 + (1 if i < self.s.loris % 3 else 0) for i in range(3)]
        sel = selectors.DefaultSelector()
        conns: dict[socket.socket, dict] = {}
        # Each connection walks this line on its own, so its head never gets an empty line.
        header = b"X-Slow-Loris-Padding: abcdefghijklmnopqrstuvwxyz\r\n"
        reopen_at = {listener: 0.0 for listener, _ in targets}

        def cut(sock: socket.socket, how: str, response: bytes = b"") -> None:
            c = conns.pop(sock)
            try:
                sel.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
            lifetime = time.monotonic() - c["opened"]
            status, headers = parse_head(response)
            if status is not None:
                kind = st.answer(status, headers, lifetime, 0, f"{c['listener']} slow-loris")
                how = f"answered {status}"
                if kind == "overload":  # the listener is full: wait as told before reopening
                    reopen_at[c["listener"]] = time.monotonic() + 1.0
            else:
                # No HTTP answer, just the close: what a header_read_timeout does.
                with st.lock:
                    st.requests += 1
                    st.latencies.append(lifetime)
                    st.statuses[how] += 1
                    st.kinds["cut"] += 1
            self.loris_cut.append({"listener": c["listener"], "lifetime_s": round(lifetime, 2),
                                   "how": how, "bytes_sent": c["sent"]})

        while not self.stop.is_set():
            now = time.monotonic()
            for i, (listener, path) in enumerate(targets):
                if now < reopen_at[listener]:
                    continue
                have = sum(1 for c in conns.values() if c["listener"] == listener)
                for _ in range(want[i] - have):
                    sock = None
                    try:
                        sock = socket.create_connection(("127.0.0.1", self.d.ports[listener]),
                                                        timeout=5)
                        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
                        sock.setblocking(False)
                    except OSError:
                        if sock is not None:
                            sock.close()
                        st.note("connect failures")
                        reopen_at[listener] = time.monotonic() + 1.0
                        break
                    conns[sock] = {"listener": listener, "opened": now, "next": now +
                                   self.s.loris_interval, "sent": 0, "rx": b""}
                    sel.register(sock, selectors.EVENT_READ)
            self.loris_peak_open = max(self.loris_peak_open, len(conns))
            for key, _ in sel.select(timeout=0.1):
                sock = key.fileobj
                c = conns.get(sock)
                if c is None:
                    continue
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    cut(sock, "reset", c["rx"])
                    continue
                if data:
                    c["rx"] += data
                    if b"\r\n\r\n" in c["rx"] or len(c["rx"]) > 16384:
                        cut(sock, "answered", c["rx"])
                else:
                    cut(sock, "closed", c["rx"])
            now = time.monotonic()
            for sock, c in list(conns.items()):
                if c["next"] <= now:
                    try:
                        sock.send(header[c["sent"] % len(header):][:1])
                        c["sent"] += 1
                        c["next"] = now + self.s.loris_interval
                    except BlockingIOError:
                        pass
                    except OSError:
                        cut(sock, "reset", c["rx"])
        end = time.monotonic()
        for sock, c in list(conns.items()):
            self.loris_open_at_end.append(round(end - c["opened"], 2))
            sel.unregister(sock)
            sock.close()
        sel.close()

    # -- the final check -------------------------------------------------------
    def verify(self) -> dict:
        """GETs every live object and compares MD5 and size; compares the listings."""
        st = self.stats["verify GET"]
        st.started = time.monotonic()
        c_local = threading.local()
        todo = [(l.bucket, k, v) for l in self.ledgers for k, v in l.live.items()]
        lost: list[str] = []
        corrupt: list[str] = []
        unverified: list[str] = []

        def one(item) -> None:
            bucket, key, (want_md5, want_size) = item
            if not hasattr(c_local, "c"):
                c_local.c = s3_client(self.d.url("s3"))
            for attempt in range(5):
                t0 = time.perf_counter()
                try:
                    resp = c_local.c.get_object(Bucket=bucket, Key=key)
                    data = resp["Body"].read()
                except ClientError as e:
                    status, headers, detail = client_error_answer(e)
                    if status is None:
                        st.exception(e, time.perf_counter() - t0, key)
                    else:
                        kind = st.answer(status, headers, time.perf_counter() - t0, 0,
                                         f"GET {bucket}/{key}: {detail}")
                        if status == 404:
                            lost.append(f"{bucket}/{key}: {detail}")
                            return
                        if kind != "overload":
                            unverified.append(f"{bucket}/{key}: HTTP {status} {detail}")
                            return
                    time.sleep(1 + attempt)
                    continue
                except Exception as e:
                    st.exception(e, time.perf_counter() - t0, key)
                    time.sleep(1 + attempt)
                    continue
                meta = resp["ResponseMetadata"]
                st.answer(meta["HTTPStatusCode"], meta.get("HTTPHeaders"),
                          time.perf_counter() - t0, len(data))
                got = hashlib.md5(data).hexdigest()
                if got != want_md5 or len(data) != want_size:
                    corrupt.append(f"{bucket}/{key}: {len(data)} bytes MD5 {got}, "
                                   f"stored {want_size} bytes MD5 {want_md5}")
                return
            unverified.append(f"{bucket}/{key}: no answer after 5 attempts")

        with ThreadPoolExecutor(self.s.verify_workers) as pool:
            list(pool.map(one, todo))

        # The listings: every live key is there, no successfully deleted key came back.
        c = s3_client(self.d.url("s3"))
        resurrected: list[str] = []
        missing_from_listing: list[str] = []
        listing_errors: list[str] = []
        for bucket in (SMALL_BUCKET, LARGE_BUCKET):
            ledgers = [l for l in self.ledgers if l.bucket == bucket]
            if not ledgers:
                continue
            live = {k for l in ledgers for k in l.live}
            deleted = {k for l in ledgers for k in l.deleted}
            uncertain = {k for l in ledgers for k in l.uncertain}
            listed: set[str] = set()
            try:
                for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                    listed.update(o["Key"] for o in page.get("Contents", []))
            except Exception as e:
                listing_errors.append(f"{bucket}: {e}")
                continue
            resurrected += [f"{bucket}/{k}" for k in sorted((listed & deleted) - uncertain)]
            missing_from_listing += [f"{bucket}/{k}" for k in sorted(live - listed)]
        st.ended = time.monotonic()
        return {
            "objects": len(todo),
            "small": sum(len(l.live) for l in self.ledgers if l.bucket == SMALL_BUCKET),
            "large": sum(len(l.live) for l in self.ledgers if l.bucket == LARGE_BUCKET),
            "uncertain": sum(len(l.uncertain) for l in self.ledgers),
            "lost": lost,
            "corrupt": corrupt,
            "unverified": unverified,
            "resurrected": resurrected,
            "missing_from_listing": missing_from_listing,
            "listing_errors": listing_errors,
        }


def parse_head(raw: bytes) -> tuple[int | None, dict]:
    """The status and headers of a raw HTTP/1.x answer (None when there is none)."""
    m = re.match(rb"HTTP/\d(?:\.\d)? (\d{3})", raw)
    if not m:
        return None, {}
    headers = {}
    for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        if b":" in line:
            k, v = line.split(b":", 1)
            headers[k.decode("latin-1").strip()] = v.decode("latin-1").strip()
    return int(m.group(1)), headers


# ----------------------------------------------------------------------------- report


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def fmt_rate(v: float) -> str:
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 0.1 else f"{v:.3f}"


def fmt_statuses(statuses: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in statuses.items()) or "-"


def log_findings(path: Path) -> dict:
    """Counts of the daemon log's ERROR and WARN lines, panics, and the first few."""
    errors = warns = panics = 0
    first: list[str] = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                is_panic = "panicked" in line
                is_error = " ERROR " in line or is_panic
                panics += is_panic
                errors += is_error and not is_panic
                warns += " WARN " in line
                if (is_error or is_panic) and len(first) < 10:
                    first.append(line.rstrip()[:400])
    except OSError:
        pass
    return {"error_lines": errors, "warn_lines": warns, "panics": panics, "first": first}


def build_report(s: Settings, soak: Soak, run_s: float, rss: RssSampler, hwm_kib: int | None,
                 verify: dict, daemon_exit: int | None, died_during_run: bool, log: dict,
                 warmed: int, daemon: Daemon) -> tuple[str, dict, bool]:
    rows = []
    for name, st in soak.stats.items():
        if st.requests == 0 and name not in ("verify GET",):
            continue
        elapsed = run_s if name != "verify GET" else max(1e-6, st.ended - st.started)
        rows.append(st.row(elapsed))
    peak_kib, peak_t = rss.peak()
    peak_fds = max((f for _, _, f in rss.samples), default=0)

    server_5xx = {r["class"]: {k: v for k, v in r["statuses"].items()
                               if k[:1] == "5" and not k.endswith("*")}
                  for r in rows}
    server_5xx = {k: v for k, v in server_5xx.items() if v}
    overload = {r["class"]: {k: v for k, v in r["statuses"].items() if k.endswith("*")}
                for r in rows}
    overload = {k: v for k, v in overload.items() if v}
    # A well-behaved client always gets an answer; the slow-loris population is not one.
    no_answer = {r["class"]: {k: v for k, v in r["statuses"].items() if k.startswith("exc:")}
                 for r in rows if r["class"] != "slow-loris"}
    no_answer = {k: v for k, v in no_answer.items() if v}
    unexpected_4xx = {r["class"]: {k: v for k, v in r["statuses"].items()
                                   if k[:1] == "4" and not k.endswith("*")}
                      for r in rows if r["class"] != "slow-loris"}
    unexpected_4xx = {k: v for k, v in unexpected_4xx.items() if v}

    damage = (len(verify["lost"]) + len(verify["corrupt"]) + len(verify["unverified"])
              + len(verify["resurrected"]) + len(verify["missing_from_listing"])
              + len(verify["listing_errors"]) + len(soak.read_mismatch)
              + len(soak.etag_mismatch) + len(soak.bad_variants))
    peak_mib = peak_kib / 1024
    hwm_mib = (hwm_kib or 0) / 1024
    rss_ok = bool(rss.samples) and max(peak_mib, hwm_mib) < s.rss_bound_mib

    criteria = [
        ("no 5xx except the documented overload answers", not server_5xx,
         "none" if not server_5xx else json.dumps(server_5xx)),
        ("no lost or corrupt object", damage == 0,
         f"{verify['objects']} verified: {len(verify['lost'])} lost, "
         f"{len(verify['corrupt'])} corrupt, {len(verify['unverified'])} unverified; "
         f"{len(soak.read_mismatch)} bad reads during the run, "
         f"{len(soak.etag_mismatch)} wrong ETags, {len(verify['resurrected'])} deleted keys "
         f"listed, {len(verify['missing_from_listing'])} live keys not listed, "
         f"{len(soak.bad_variants)} wrong image variants"),
        (f"peak RSS under {s.rss_bound_mib} MiB", rss_ok,
         f"peak VmRSS {peak_mib:.0f} MiB, VmHWM {hwm_mib:.0f} MiB" if rss.samples
         else "no RSS sample"),
        ("every request answered (no reset or timeout)", not no_answer,
         "none" if not no_answer else json.dumps(no_answer)),
        ("daemon up the whole run, no panic", not died_during_run and log["panics"] == 0,
         f"exit code {daemon_exit} after SIGTERM, {log['panics']} panics, "
         f"{log['error_lines']} ERROR lines" + (", died during the run" if died_during_run
                                                else "")),
    ]
    passed = all(ok for _, ok, _ in criteria)

    out = io.StringIO()
    w = out.write
    w(f"## Pixelport soak: {run_s:.0f} s, `{s.bin}`\n\n")
    w(f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, "
      f"Python {platform.python_version()}; seed {s.seed}; populations: "
      f"{s.small_workers} small S3, {s.large_workers} large S3, {s.miss_workers} image miss, "
      f"{s.hit_workers} image hit, {s.loris} slow-loris (one byte / {s.loris_interval:g} s); "
      f"small {s.small_min // KiB}-{s.small_max // KiB} KiB, large {s.large_min // MiB}-"
      f"{s.large_max // MiB} MiB ({s.multipart_fraction:.0%} multipart, "
      f"{s.part_size // MiB} MiB parts); {len(soak.sources)} source photographs, "
      f"{warmed} hit variants warmed.\n\n")
    w("| class | requests | req/s | MiB/s | p50 ms | p99 ms | statuses |\n")
    w("| --- | ---: | ---: | ---: | ---: | ---: | --- |\n")
    for r in rows:
        w(f"| {r['class']} | {r['requests']} | {fmt_rate(r['req_per_s'])} | "
          f"{fmt_rate(r['mib_per_s'])} | "
          f"{fmt_ms(r['p50_ms'])} | {fmt_ms(r['p99_ms'])} | {fmt_statuses(r['statuses'])} |\n")
    w("\n`503*`/`429*`: answered with `Retry-After`, the documented overload answers. "
      "`exc:NAME`: no HTTP answer (the client's exception). For slow-loris, requests are "
      "connections cut by the server (`closed`, `reset`, or the status it answered) and "
      "p50/p99 are how long they had lasted.\n\n")
    cuts = soak.loris_cut
    if s.loris:
        by_listener = Counter(c["listener"] for c in cuts)
        lifetimes = sorted(c["lifetime_s"] for c in cuts)
        w(f"- slow-loris: {len(cuts)} connections cut by the server "
          f"({', '.join(f'{k}: {v}' for k, v in sorted(by_listener.items())) or 'none'}), "
          f"lifetime min/median/max "
          + (f"{lifetimes[0]:.1f}/{percentile(lifetimes, 50):.1f}/{lifetimes[-1]:.1f} s"
             if lifetimes else "-")
          + f"; {len(soak.loris_open_at_end)} still open at the end (oldest "
          f"{max(soak.loris_open_at_end, default=0):.1f} s); peak {soak.loris_peak_open} open; "
          f"{soak.stats['slow-loris'].notes.get('connect failures', 0)} connects failed\n")
    for r in rows:
        if r["notes"]:
            w(f"- {r['class']}: " + ", ".join(f"{k}: {v}" for k, v in sorted(r["notes"].items()))
              + "\n")
    anon_kib, file_kib = rss.at_peak()
    w(f"- peak RSS: {peak_mib:.0f} MiB (VmRSS every 1 s, at t={peak_t:.0f} s: "
      f"{anon_kib / 1024:.0f} MiB anonymous, {file_kib / 1024:.0f} MiB file-backed; "
      f"{len(rss.samples)} samples); VmHWM at the end: {hwm_mib:.0f} MiB; bound "
      f"{s.rss_bound_mib} MiB ({s.rss_bound_source}); peak open descriptors {peak_fds}\n")
    w(f"- objects verified at the end: {verify['objects']} ({verify['small']} small, "
      f"{verify['large']} large); lost {len(verify['lost'])}, corrupt {len(verify['corrupt'])}, "
      f"unverified {len(verify['unverified'])}; set aside as uncertain (PUT or DELETE "
      f"without a clear answer): {verify['uncertain']}\n")
    w(f"- daemon: exit code {daemon_exit} after SIGTERM; log {daemon.log_path}: "
      f"{log['error_lines']} ERROR, {log['warn_lines']} WARN lines, {log['panics']} panics\n")
    if overload:
        w(f"- documented overload answers: {json.dumps(overload)}\n")
    if unexpected_4xx:
        w(f"- other 4xx (not a failure by the criteria, worth a look): "
          f"{json.dumps(unexpected_4xx)}\n")
    w("\n| criterion | result | detail |\n| --- | --- | --- |\n")
    for name, ok, detail in criteria:
        w(f"| {name} | {'PASS' if ok else 'FAIL'} | {detail} |\n")
    w(f"\n**Verdict: {'PASS' if passed else 'FAIL'}**\n")

    problems = (verify["lost"] + verify["corrupt"] + verify["unverified"]
                + verify["resurrected"] + verify["missing_from_listing"]
                + verify["listing_errors"] + soak.read_mismatch + soak.etag_mismatch
                + soak.bad_variants)
    examples = [(r["class"], e) for r in rows for e in r["examples"]]
    if problems or examples or log["first"]:
        w("\n<details><summary>details</summary>\n\n```text\n")
        for p in problems[:30]:
            w(f"{p}\n")
        for cls, e in examples[:40]:
            w(f"[{cls}] {e}\n")
        for line in log["first"]:
            w(f"[log] {line}\n")
        w("```\n\n</details>\n")

    result = {
        "verdict": "PASS" if passed else "FAIL",
        "criteria": [{"name": n, "pass": ok, "detail": d} for n, ok, d in criteria],
        "duration_s": run_s,
        "binary": str(s.bin),
        "seed": s.seed,
        "settings": {k: (str(v) if isinstance(v, Path) else v)
                     for k, v in s.__dict__.items()},
        "classes": rows,
        "rss": {"peak_mib": round(peak_mib, 1), "peak_at_s": peak_t, "hwm_mib": round(hwm_mib, 1),
                "bound_mib": s.rss_bound_mib, "bound_source": s.rss_bound_source,
                "peak_fds": peak_fds,
                "samples": [{"t": t, "rss_mib": round(k / 1024, 1),
                             "anon_mib": round(a / 1024, 1), "file_mib": round(fb / 1024, 1),
                             "fds": f}
                            for (t, k, f), a, fb in zip(rss.samples, rss.anon, rss.file)]},
        "objects": {k: (v if isinstance(v, int) else len(v)) for k, v in verify.items()},
        "problems": problems,
        "read_mismatch": soak.read_mismatch,
        "etag_mismatch": soak.etag_mismatch,
        "bad_variants": soak.bad_variants,
        "slow_loris": {"cut": cuts, "open_at_end_s": soak.loris_open_at_end,
                       "peak_open": soak.loris_peak_open},
        "daemon": {"exit_code": daemon_exit, "died_during_run": died_during_run, "log": log,
                   "log_path": str(daemon.log_path)},
    }
    return out.getvalue(), result, passed


# ----------------------------------------------------------------------------- main


def run(s: Settings) -> int:
    if not s.bin.is_file() or not os.access(s.bin, os.X_OK):
        print(f"[soak] no executable pixelport at {s.bin}", file=sys.stderr)
        return 2
    for k in [k for k in os.environ if k.startswith("AWS_")]:
        del os.environ[k]
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull

    temp = s.data_dir is None
    work = Path(tempfile.mkdtemp(prefix="pixelport-soak-")) if temp else s.data_dir
    work.mkdir(parents=True, exist_ok=True)
    if (work / "data").exists():
        shutil.rmtree(work / "data")
    daemon = Daemon(s, work)
    print(f"[soak] work dir {work}; starting {s.bin}", file=sys.stderr)
    try:
        daemon.start()
    except Exception as e:
        print(f"[soak] {e}", file=sys.stderr)
        daemon.stop()
        return 2
    passed = False
    try:
        soak = Soak(s, daemon)
        soak.setup()
        hit_paths = soak.hit_set() if s.hit_workers else []
        warmed = soak.warm(hit_paths) if hit_paths else 0
        print(f"[soak] {len(soak.sources)} sources uploaded, {warmed}/{len(hit_paths)} hit "
              f"variants warmed; running {s.duration:.0f} s", file=sys.stderr)

        t0 = time.monotonic()
        rss = RssSampler(daemon.proc.pid, t0)
        rss.start()
        threads = []
        for i in range(s.small_workers):
            threads.append(threading.Thread(target=soak.small_worker, args=(i,), name=f"small{i}"))
        for i in range(s.large_workers):
            threads.append(threading.Thread(target=soak.large_worker, args=(i,), name=f"large{i}"))
        for i in range(s.miss_workers):
            threads.append(threading.Thread(target=soak.miss_worker, args=(i,), name=f"miss{i}"))
        for i in range(s.hit_workers):
            threads.append(threading.Thread(target=soak.hit_worker, args=(i, hit_paths),
                                            name=f"hit{i}"))
        if s.loris:
            threads.append(threading.Thread(target=soak.loris, name="loris"))
        for st in soak.stats.values():
            st.started = t0
        for t in threads:
            t.daemon = True
            t.start()

        died = False
        next_progress = t0 + 60
        while time.monotonic() - t0 < s.duration:
            time.sleep(0.5)
            if not daemon.alive():
                died = True
                print(f"[soak] the daemon exited during the run (code "
                      f"{daemon.proc.returncode})", file=sys.stderr)
                break
            if time.monotonic() >= next_progress:
                next_progress += 60
                peak, _ = rss.peak()
                done = sum(st.requests for st in soak.stats.values())
                print(f"[soak] t={time.monotonic() - t0:.0f}s: {done} requests, "
                      f"peak RSS {peak / 1024:.0f} MiB", file=sys.stderr)
        soak.stop.set()
        for t in threads:
            t.join(timeout=300)
            if t.is_alive():
                print(f"[soak] thread {t.name} still busy after 300 s", file=sys.stderr)
        run_s = time.monotonic() - t0

        print("[soak] verifying every stored object", file=sys.stderr)
        if daemon.alive():
            verify = soak.verify()
        else:
            verify = {"objects": 0, "small": 0, "large": 0,
                      "uncertain": sum(len(l.uncertain) for l in soak.ledgers),
                      "lost": [], "corrupt": [], "resurrected": [], "missing_from_listing": [],
                      "listing_errors": [],
                      "unverified": [f"{l.bucket}/{k}" for l in soak.ledgers for k in l.live]}
        hwm = proc_status(daemon.proc.pid).get("VmHWM") if daemon.alive() else None
        rss.stop_event.set()
        rss.join(timeout=5)
        code = daemon.stop()
        log = log_findings(daemon.log_path)
        report, result, passed = build_report(s, soak, run_s, rss, hwm, verify, code, died, log,
                                              warmed, daemon)
        print(report)
        if s.json_path:
            s.json_path.parent.mkdir(parents=True, exist_ok=True)
            s.json_path.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if daemon.alive():
            daemon.stop()
        if passed and not s.keep:
            shutil.rmtree(work / "data", ignore_errors=True)
            if temp:
                shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"[soak] kept {work} (config, log pixelport.log, data/)", file=sys.stderr)
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    s = parse_args(argv)
    try:
        return run(s)
    except KeyboardInterrupt:
        print("[soak] interrupted", file=sys.stderr)
        return 130
    except Exception:  # the soak itself broke (setup, a bug here): not a verdict
        import traceback

        traceback.print_exc()
        return 2


if __name__ == "__main__":
    sys.exit(main())
