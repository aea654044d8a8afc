"""Process harness for the Pixelport integration tests.

Starts the real ``pixelport`` daemon (or an ``s3s-fs`` stand-in, see below)
on free loopback ports with a generated TOML config, waits for readiness,
and stops it with SIGTERM.  Also holds the client helpers shared by the test
modules: boto3 clients, the aws cli runner, raw SigV4-signed HTTP requests,
and checksum/ETag calculators.

Environment knobs
-----------------
PIXELPORT_BIN        path of the daemon binary
                     (default: <repo>/target/debug/pixelport)
S3S_FS_BIN           path of s3s-fs, used as the remote backend's cluster
                     (default: ``s3s-fs`` on PATH, then ~/.cargo/bin/s3s-fs)
PIXELPORT_TEST_IMPL  ``pixelport`` (default) or ``s3s-fs``.  With ``s3s-fs``
                     the S3 listener is served by s3s-fs instead of the
                     daemon; this exists only to check that the tests
                     themselves are right while the daemon is being written.
                     Tests of Pixelport-only features (fsck, public buckets,
                     max_object_size, cluster layout) skip in that mode.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
import zlib
from pathlib import Path
from typing import Iterable

import boto3
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

REPO_ROOT = Path(__file__).resolve().parents[2]

ACCESS_KEY = "pixelport-test-ak"
SECRET_KEY = "pixelport-test-secret-key-0123456789"
REGION = "us-east-1"
PUBLIC_BUCKET = "public-bucket"

CLUSTER_ACCESS_KEY = "cluster-test-ak"
CLUSTER_SECRET_KEY = "cluster-test-secret-key-9876543210"
CLUSTER_BUCKET = "pixelport"

MiB = 1024 * 1024

READY_TIMEOUT = 30.0


def impl() -> str:
    """Which S3 server the tests talk to: "pixelport" or "s3s-fs"."""
    value = os.environ.get("PIXELPORT_TEST_IMPL", "pixelport").strip().lower()
    if value not in ("pixelport", "s3s-fs"):
        raise RuntimeError(f"PIXELPORT_TEST_IMPL must be pixelport or s3s-fs, not {value!r}")
    return value


def is_stand_in() -> bool:
    return impl() == "s3s-fs"


def pixelport_bin() -> Path:
    env = os.environ.get("PIXELPORT_BIN")
    if env:
        p = Path(env)
        return p if p.is_absolute() else (REPO_ROOT / p)
    return REPO_ROOT / "target" / "debug" / "pixelport"


def s3s_fs_bin() -> str:
    env = os.environ.get("S3S_FS_BIN")
    if env:
        return env
    found = shutil.which("s3s-fs")
    if found:
        return found
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    return str(cargo_home / "bin" / "s3s-fs")


_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port that is free now, below the kernel's ephemeral range.

    bind(port 0) and every outgoing connection take their ports from the ephemeral range, so
    a port found there could be taken by a client socket before the daemon binds it: a CI
    run failed once with "Address already in use" on an edge listener this way. Ports below
    the range are only ever taken by an explicit bind, and each is handed out once per run.
    """
    import random
    low = _ephemeral_low()
    if low > 12000:
        for _ in range(2000):
            port = random.randint(10000, low - 1)
            if port in _HANDED_OUT:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _HANDED_OUT.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StaticSite:
    """Another origin for browser tests: `root` served on its own loopback port by Python's
    http.server (pages the tests write there)."""

    def __init__(self, root: Path):
        import http.server
        import threading
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(  # noqa: E731
            *a, directory=str(root), **kw)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def page(self, name: str, text: str) -> str:
        """Writes a page and returns its URL."""
        (self.root / name).write_text(text)
        return f"{self.origin}/{name}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def unique_name(prefix: str = "b") -> str:
    """A fresh, valid S3 bucket name."""
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


def _tail(path: Path, lines: int = 80) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(text.splitlines()[-lines:])


def _wait_tcp(host: str, port: int, proc: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited early with code {proc.returncode}; stderr:\n{_tail(log)}"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {host}:{port} within {READY_TIMEOUT}s:\n{_tail(log)}")


# Every process started here, so a failing test can show their logs.
LIVE: list = []


class S3sFs:
    """An s3s-fs server: the remote backend's cluster, or the stand-in daemon."""

    def __init__(self, root: Path, log_dir: Path, access_key: str, secret_key: str,
                 port: int | None = None, name: str = "s3s-fs"):
        self.root = Path(root)
        self.log_dir = Path(log_dir)
        self.access_key = access_key
        self.secret_key = secret_key
        self.port = port or free_port()
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.stderr_path = self.log_dir / f"{name}.stderr.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "S3sFs":
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        binary = s3s_fs_bin()
        if not Path(binary).exists():
            raise RuntimeError(f"s3s-fs not found at {binary}; set S3S_FS_BIN")
        err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [binary, "--host", "127.0.0.1", "--port", str(self.port),
             "--access-key", self.access_key, "--secret-key", self.secret_key, str(self.root)],
            stdout=err, stderr=err, stdin=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")},
        )
        err.close()
        _wait_tcp("127.0.0.1", self.port, self.proc, self.stderr_path, self.name)
        LIVE.append(self)
        return self

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self in LIVE:
            LIVE.remove(self)
        return self.proc.returncode

    def logs(self) -> str:
        return _tail(self.stderr_path, 150)

    def client(self, **kw):
        return make_client(self.endpoint, self.access_key, self.secret_key, **kw)


class Daemon:
    """One Pixelport daemon with its own config, data_dir and log files.

    ``backend`` is "embedded" or "remote"; the remote backend gets its own
    s3s-fs cluster (``self.cluster``) with the bucket ``pixelport``.
    """

    def __init__(self, base: Path, backend: str = "embedded",
                 max_object_size: str = "300MiB",
                 public_buckets: Iterable[str] = (PUBLIC_BUCKET,),
                 shutdown_grace: str = "5s",
                 images_config: str = "",
                 extra_config: str = "",
                 admin_config: str = "",
                 server_config: str = "",
                 s3_config: str = "",
                 tls_ca: Path | None = None,
                 s3_host: str = "127.0.0.1",
                 preexec_fn=None,
                 legacy_unsigned: bool = True):
        assert backend in ("embedded", "remote"), backend
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.backend = backend
        self.max_object_size = max_object_size
        self.public_buckets = list(public_buckets)
        self.shutdown_grace = shutdown_grace
        # Extra TOML lines for the [images] section (signing keys, limits, presets...).
        self.images_config = images_config
        # The first wave's tests use `/unsafe/` URLs against a daemon without a key, which
        # then accepted any URL. Since a key is generated on first start, they get
        # `allow_unsafe = true` unless they configure a key or allow_unsafe themselves;
        # `legacy_unsigned=False` runs the real defaults (tests of the unsigned-URL rules).
        if legacy_unsigned and not re.search(r"^\s*(key|allow_unsafe)\s*=", images_config, re.M):
            self.images_config = "allow_unsafe = true\n" + images_config
        # Extra TOML appended after every other section (e.g. a [cache] section).
        self.extra_config = extra_config
        # Extra TOML lines for the [admin] section (user, password_hash, token...).
        self.admin_config = admin_config
        # Extra TOML lines for the [server] section (min_free_space...).
        self.server_config = server_config
        # Extra TOML lines for the [s3] section (tls_cert...).
        self.s3_config = s3_config
        # The CA that signed the listeners' certificates, when they serve HTTPS (every
        # listener then does): the URLs below are https://, and readiness verifies with it.
        self.tls_ca = tls_ca
        self.scheme = "https" if tls_ca else "http"
        # The S3 listener's bind address ("0.0.0.0" to reach it from another address of
        # this host); clients still use 127.0.0.1.
        self.s3_host = s3_host
        # Runs in the child before exec (e.g. resource limits); None: nothing.
        self.preexec_fn = preexec_fn
        self.data_dir = self.base / "data"
        self.config_path = self.base / "pixelport.toml"
        self.stderr_path = self.base / "pixelport.stderr.log"
        self.stdout_path = self.base / "pixelport.stdout.log"
        self.s3_port = free_port()
        self.images_port = free_port()
        self.admin_port = free_port()
        self.cluster: S3sFs | None = None
        self.cluster_root = self.base / "cluster"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    # -- addresses ---------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.s3_port}"

    @property
    def admin_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.admin_port}"

    @property
    def images_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.images_port}"

    # -- config ------------------------------------------------------------
    def write_config(self) -> None:
        pub = ", ".join(json.dumps(b) for b in self.public_buckets)
        lines = [
            "[server]",
            f"data_dir = {json.dumps(str(self.data_dir))}",
            'log_format = "text"',
            f"shutdown_grace = {json.dumps(self.shutdown_grace)}",
            self.server_config,
            "[s3]",
            f'listen = "{self.s3_host}:{self.s3_port}"',
            f"access_key = {json.dumps(ACCESS_KEY)}",
            f"secret_key = {json.dumps(SECRET_KEY)}",
            f"region = {json.dumps(REGION)}",
            f"max_object_size = {json.dumps(self.max_object_size)}",
            f"public_buckets = [{pub}]",
            'multipart_expiry = "24h"',
            self.s3_config,
            "[images]",
            f'listen = "127.0.0.1:{self.images_port}"',
            self.images_config,
            "[admin]",
            f'listen = "127.0.0.1:{self.admin_port}"',
            self.admin_config,
            "[store]",
        ]
        if self.backend == "embedded":
            lines.append('kind = "embedded"')
        else:
            assert self.cluster is not None
            lines += [
                'kind = "remote"',
                f'endpoint = "{self.cluster.endpoint}"',
                f"region = {json.dumps(REGION)}",
                f"access_key = {json.dumps(CLUSTER_ACCESS_KEY)}",
                f"secret_key = {json.dumps(CLUSTER_SECRET_KEY)}",
                f'bucket = "{CLUSTER_BUCKET}"',
                'bucket_prefix = ""',
                "path_style = true",
            ]
        lines.append(self.extra_config)
        self.config_path.write_text("\n".join(lines) + "\n")

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> "Daemon":
        if self.backend == "remote" and self.cluster is None:
            (self.cluster_root / CLUSTER_BUCKET).mkdir(parents=True, exist_ok=True)
            self.cluster = S3sFs(self.cluster_root, self.base, CLUSTER_ACCESS_KEY,
                                 CLUSTER_SECRET_KEY, name="cluster-s3s-fs").start()
        self.write_config()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        err = open(self.stderr_path, "ab")
        out = open(self.stdout_path, "ab")
        self.starts += 1
        banner = f"\n===== start #{self.starts} ({impl()}, {self.backend}) =====\n".encode()
        err.write(banner)
        err.flush()
        env = {**os.environ}
        env.setdefault("RUST_BACKTRACE", "1")
        if is_stand_in():
            cmd = [s3s_fs_bin(), "--host", "127.0.0.1", "--port", str(self.s3_port),
                   "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY, str(self.data_dir)]
            env.setdefault("RUST_LOG", "info")
        else:
            binary = pixelport_bin()
            if not binary.exists():
                err.close()
                out.close()
                raise RuntimeError(
                    f"pixelport binary not found at {binary}; run `cargo build` or set PIXELPORT_BIN")
            cmd = [str(binary), "serve", "--config", str(self.config_path)]
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True,
                                     preexec_fn=self.preexec_fn)
        err.close()
        out.close()
        if self not in LIVE:
            LIVE.append(self)
        try:
            self._wait_ready()
        except Exception:
            self.kill9()
            raise
        return self

    def _wait_ready(self) -> None:
        if is_stand_in():
            _wait_tcp("127.0.0.1", self.s3_port, self.proc, self.stderr_path, "s3s-fs stand-in")
            return
        deadline = time.monotonic() + READY_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"pixelport exited early with code {self.proc.returncode}; stderr:\n"
                    f"{_tail(self.stderr_path)}")
            try:
                r = requests.get(f"{self.admin_url}/health", timeout=1,
                                 verify=str(self.tls_ca) if self.tls_ca else True)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}"
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.05)
        raise RuntimeError(
            f"pixelport not healthy within {READY_TIMEOUT}s (last: {last}); stderr:\n"
            f"{_tail(self.stderr_path)}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL the daemon (not its cluster) and reap it."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self in LIVE:
            LIVE.remove(self)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait; returns the exit code (None if never started).

        A daemon that does not exit within ``timeout`` is killed and a
        RuntimeError is raised, because a user's ``systemctl stop`` would hang.
        """
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                if self in LIVE:
                    LIVE.remove(self)
                raise RuntimeError(f"daemon ignored SIGTERM for {timeout}s:\n{self.logs()}")
        if self in LIVE:
            LIVE.remove(self)
        return self.proc.returncode

    def stop_all(self) -> int | None:
        """Stop the daemon, then its cluster; returns the daemon's exit code."""
        try:
            return self.stop()
        finally:
            if self.cluster is not None:
                self.cluster.stop()

    def restart(self) -> "Daemon":
        """Start again on the same data_dir and ports (after stop or kill9)."""
        assert not self.alive()
        return self.start()

    def fsck(self) -> tuple[int, dict | None, str, str]:
        """Run ``pixelport fsck --config`` (daemon must be stopped).

        Returns (exit code, parsed JSON report or None, stdout, stderr).
        """
        assert not self.alive(), "fsck needs the daemon stopped"
        cp = subprocess.run([str(pixelport_bin()), "fsck", "--config", str(self.config_path)],
                            capture_output=True, text=True, timeout=120)
        report = None
        for candidate in (cp.stdout.strip(), *reversed(cp.stdout.strip().splitlines())):
            try:
                parsed = json.loads(candidate)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                report = parsed
                break
        return cp.returncode, report, cp.stdout, cp.stderr

    def logs(self) -> str:
        text = f"--- {self.stderr_path} ---\n{_tail(self.stderr_path, 150)}"
        if self.cluster is not None:
            text += f"\n--- cluster {self.cluster.stderr_path} ---\n{self.cluster.logs()}"
        return text

    # -- clients -----------------------------------------------------------
    def client(self, **kw):
        return make_client(self.endpoint, ACCESS_KEY, SECRET_KEY, **kw)

    def cluster_client(self):
        assert self.cluster is not None
        return self.cluster.client()


def make_client(endpoint: str, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY,
                signature_version: str | None = "s3v4", retries: int = 1,
                read_timeout: float = 60, **config_kw):
    """A boto3 S3 client with path-style addressing against ``endpoint``.

    ``retries`` is the total number of attempts: 1 means no retries, so the
    tests see the daemon's first answer.
    """
    cfg = dict(
        s3={"addressing_style": "path"},
        retries={"total_max_attempts": retries, "mode": "standard"},
        connect_timeout=5,
        read_timeout=read_timeout,
        region_name=REGION,
    )
    if signature_version:
        cfg["signature_version"] = signature_version
    cfg.update(config_kw)
    session = boto3.session.Session(
        aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=REGION)
    return session.client("s3", endpoint_url=endpoint, config=Config(**cfg))


# -- aws-chunked trailers -----------------------------------------------------

def force_trailer_checksums(client) -> None:
    """Make ``client`` send flexible checksums as aws-chunked trailers.

    botocore does that only over https (where it is the default integrity
    protection of PutObject/UploadPart); over plain http it puts the checksum
    in a header instead.  Flipping the resolved location before the request
    is built makes it send exactly what it sends over TLS:
    ``Content-Encoding: aws-chunked``, ``x-amz-trailer``,
    ``x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER``.
    """

    def to_trailer(params, **_kw):
        algo = params.get("context", {}).get("checksum", {}).get("request_algorithm")
        if isinstance(algo, dict) and algo.get("in") == "header":
            algo["in"] = "trailer"

    client.meta.events.register("before-call.s3.PutObject", to_trailer)
    client.meta.events.register("before-call.s3.UploadPart", to_trailer)


# -- raw signed HTTP ----------------------------------------------------------

class _FixedPayloadAuth(S3SigV4Auth):
    """SigV4 header signing with a caller-chosen x-amz-content-sha256."""

    def __init__(self, credentials, service, region, payload_value=None):
        super().__init__(credentials, service, region)
        self._payload_value = payload_value

    def payload(self, request):
        if self._payload_value is not None:
            return self._payload_value
        return super().payload(request)


def signed_request(endpoint: str, method: str, path: str, params: dict | None = None,
                   headers: dict | None = None, body: bytes = b"",
                   access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY,
                   payload_hash: str | None = None, timeout: float = 30) -> requests.Response:
    """Send one SigV4-signed request with ``requests``.

    ``path`` is the already percent-encoded path (e.g. ``/bucket/key``).
    """
    query = urllib.parse.urlencode(sorted((params or {}).items()), quote_via=urllib.parse.quote)
    url = f"{endpoint}{path}" + (f"?{query}" if query else "")
    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    creds = Credentials(access_key, secret_key)
    _FixedPayloadAuth(creds, "s3", REGION, payload_hash).add_auth(req)
    prepared = req.prepare()
    return requests.request(method, prepared.url, headers=dict(prepared.headers),
                            data=body, timeout=timeout)


# -- checksums ----------------------------------------------------------------

def _crc32c_table():
    poly = 0x82F63B78
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    t = _CRC32C_TABLE
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def checksum_b64(algorithm: str, data: bytes) -> str:
    """The base64 value S3 reports for ``x-amz-checksum-<algorithm>``."""
    algorithm = algorithm.upper()
    if algorithm == "CRC32":
        raw = (zlib.crc32(data) & 0xFFFFFFFF).to_bytes(4, "big")
    elif algorithm == "CRC32C":
        raw = crc32c(data).to_bytes(4, "big")
    elif algorithm == "SHA1":
        raw = hashlib.sha1(data).digest()
    elif algorithm == "SHA256":
        raw = hashlib.sha256(data).digest()
    else:
        raise ValueError(algorithm)
    return base64.b64encode(raw).decode()


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def multipart_etag(parts: Iterable[bytes]) -> str:
    """S3's multipart ETag: hex MD5 of the concatenated binary part MD5s, '-N'."""
    parts = list(parts)
    digests = b"".join(hashlib.md5(p).digest() for p in parts)
    return f'"{hashlib.md5(digests).hexdigest()}-{len(parts)}"'


def pattern_bytes(n: int, seed: int = 0) -> bytes:
    """``n`` pseudo-random but reproducible bytes (fast for tens of MiB)."""
    block = hashlib.sha256(f"pixelport-{seed}".encode()).digest()
    out = bytearray()
    counter = 0
    # 1 MiB unit made of hashed blocks, then varied per MiB by a counter byte.
    unit = bytearray()
    while len(unit) < MiB:
        block = hashlib.sha256(block).digest()
        unit += block
    unit = bytes(unit[:MiB])
    while len(out) < n:
        counter += 1
        prefix = hashlib.md5(f"{seed}-{counter}".encode()).digest()
        out += prefix + unit[len(prefix):]
    return bytes(out[:n])


# -- cleanup ------------------------------------------------------------------

def empty_bucket(client, bucket: str) -> None:
    """Best effort: abort uploads, delete all objects, delete the bucket."""
    try:
        for up in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
    except Exception:
        pass
    try:
        token = None
        while True:
            kw = {"Bucket": bucket}
            if token:
                kw["ContinuationToken"] = token
            page = client.list_objects_v2(**kw)
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            if not page.get("IsTruncated"):
                break
            token = page["NextContinuationToken"]
        client.delete_bucket(Bucket=bucket)
    except Exception:
        pass


def snapshot_tree(root: Path, exclude: Iterable[Path] = ()) -> set[str]:
    """All paths under ``root`` (relative), skipping the ``exclude`` subtrees."""
    root = Path(root)
    exclude = [Path(e).resolve() for e in exclude]
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath).resolve()
        dirnames[:] = [n for n in dirnames if (d / n).resolve() not in exclude]
        for n in dirnames + filenames:
            found.add(str((d / n).relative_to(root.resolve())))
    return found


def run_env_isolated() -> dict:
    """A copy of os.environ without any AWS_* variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}



# -- assertions -----------------------------------------------------------------

def expect_error(code: str, status: int, fn, *args, **kwargs):
    """Call ``fn`` and assert it fails with S3 error ``code`` and HTTP ``status``.

    For HEAD requests S3 sends no body, so botocore reports the status as the
    code (e.g. "404"); pass that as ``code``.
    """
    from botocore.exceptions import ClientError

    try:
        result = fn(*args, **kwargs)
    except ClientError as e:
        got_code = e.response.get("Error", {}).get("Code")
        got_status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        assert (got_code, got_status) == (code, status), (
            f"expected {code} {status}, got {got_code} {got_status}: {e.response.get('Error')}")
        return e.response
    raise AssertionError(f"expected {code} {status}, but the call succeeded: "
                         f"{_short(result)}")


def _short(result) -> str:
    text = repr(result)
    return text if len(text) < 600 else text[:600] + "..."


def strip_ns(tag: str) -> str:
    return tag.split("}", 1)[1] if "}" in tag else tag


def parse_xml(text: str | bytes):
    import xml.etree.ElementTree as ET

    root = ET.fromstring(text)
    for el in root.iter():
        el.tag = strip_ns(el.tag)
    return root


def client_error(e) -> tuple[str, int]:
    """A botocore ClientError's S3 error code and HTTP status."""
    return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]


def error_code(resp: requests.Response) -> str | None:
    """The <Code> of an S3 XML error body, or None."""
    if not resp.content:
        return None
    try:
        root = parse_xml(resp.content)
    except Exception:
        return None
    code = root.find("Code") if root.tag == "Error" else root.find(".//Code")
    return code.text if code is not None else None


# -- hand-built aws-chunked uploads -------------------------------------------

def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _signing_key(secret: str, date: str) -> bytes:
    k = _hmac(("AWS4" + secret).encode(), date)
    k = _hmac(k, REGION)
    k = _hmac(k, "s3")
    return _hmac(k, "aws4_request")


def streaming_signed_put(endpoint: str, path: str, data: bytes, chunk_size: int = 64 * 1024,
                         tamper_chunk: int | None = None, headers: dict | None = None,
                         secret_key: str = SECRET_KEY) -> requests.Response:
    """PUT with ``x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD``.

    This is the signed aws-chunked encoding used by e.g. the Java SDK v1 and
    minio clients: every chunk carries a signature chained from the seed
    signature of the request.  ``tamper_chunk`` corrupts that chunk's
    signature.
    """
    chunks = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)] + [b""]
    enc_len = sum(len(f"{len(c):x};chunk-signature=") + 64 + 2 + len(c) + 2 for c in chunks)
    hdrs = {
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(data)),
        "Content-Length": str(enc_len),
        **(headers or {}),
    }
    url = f"{endpoint}{path}"
    req = AWSRequest(method="PUT", url=url, data=b"", headers=hdrs)
    creds = Credentials(ACCESS_KEY, secret_key)
    _FixedPayloadAuth(creds, "s3", REGION, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD").add_auth(req)
    auth_header = req.headers["Authorization"]
    prev = auth_header.rsplit("Signature=", 1)[1].strip()
    amz_date = req.headers["X-Amz-Date"]
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    key = _signing_key(secret_key, amz_date[:8])
    empty = hashlib.sha256(b"").hexdigest()
    body = bytearray()
    for i, c in enumerate(chunks):
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev, empty,
                         hashlib.sha256(c).hexdigest()])
        sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        prev = sig
        if tamper_chunk is not None and i == tamper_chunk:
            sig = ("0" if sig[0] != "0" else "1") + sig[1:]
        body += f"{len(c):x};chunk-signature={sig}\r\n".encode() + c + b"\r\n"
    assert len(body) == enc_len
    send_headers = {k: v for k, v in req.headers.items()}
    return requests.put(url, headers=send_headers, data=bytes(body), timeout=60)


def unsigned_trailer_put(endpoint: str, path: str, data: bytes, algorithm: str,
                         trailer_value: str | None = None, chunk_size: int = 64 * 1024,
                         headers: dict | None = None) -> requests.Response:
    """PUT with ``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` framing, built by hand.

    The checksum trailer is ``trailer_value`` if given (to send a wrong one),
    else the correct value for ``algorithm``.
    """
    name = f"x-amz-checksum-{algorithm.lower()}"
    value = trailer_value if trailer_value is not None else checksum_b64(algorithm, data)
    body = bytearray()
    for i in range(0, len(data), chunk_size):
        c = data[i:i + chunk_size]
        body += f"{len(c):x}\r\n".encode() + c + b"\r\n"
    body += f"0\r\n{name}:{value}\r\n\r\n".encode()
    hdrs = {
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(data)),
        "x-amz-trailer": name,
        "x-amz-sdk-checksum-algorithm": algorithm.upper(),
        "Content-Length": str(len(body)),
        **(headers or {}),
    }
    url = f"{endpoint}{path}"
    req = AWSRequest(method="PUT", url=url, data=b"", headers=hdrs)
    _FixedPayloadAuth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", REGION,
                      "STREAMING-UNSIGNED-PAYLOAD-TRAILER").add_auth(req)
    return requests.put(url, headers=dict(req.headers.items()), data=bytes(body), timeout=60)


def quote_key(key: str) -> str:
    """Percent-encode an object key for a path (keeps '/')."""
    return urllib.parse.quote(key, safe="/~")


# -- CRC32C for botocore without awscrt -----------------------------------------

class PyCrc32cChecksum:
    """botocore checksum class for CRC32C in pure Python.

    botocore computes CRC32C only with awscrt installed, and installing
    awscrt also swaps botocore's SigV4 signer for the CRT one.  Registering
    this class lets stock boto3 send and verify CRC32C itself.
    """

    _CHUNK_SIZE = 1024 * 1024

    def __init__(self):
        self._crc = 0xFFFFFFFF

    def update(self, chunk):
        crc = self._crc
        t = _CRC32C_TABLE
        for b in chunk:
            crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
        self._crc = crc

    def digest(self):
        return (self._crc ^ 0xFFFFFFFF).to_bytes(4, "big")

    def b64digest(self):
        return base64.b64encode(self.digest()).decode("ascii")

    def handle(self, body):
        if isinstance(body, (bytes, bytearray)):
            self.update(body)
        else:
            start = body.tell()
            for chunk in iter(lambda: body.read(self._CHUNK_SIZE), b""):
                self.update(chunk)
            body.seek(start)
        return self.b64digest()


def register_py_crc32c(monkeypatch) -> None:
    """Teach this process's botocore CRC32C (undone by ``monkeypatch``)."""
    from botocore import httpchecksum

    if "crc32c" in httpchecksum._CHECKSUM_CLS:
        return
    monkeypatch.setitem(httpchecksum._CHECKSUM_CLS, "crc32c", PyCrc32cChecksum)
    monkeypatch.setattr(httpchecksum, "_SUPPORTED_CHECKSUM_ALGORITHMS",
                        list(httpchecksum._SUPPORTED_CHECKSUM_ALGORITHMS) + ["crc32c"])


# -- aws cli ----------------------------------------------------------------------

class AwsCli:
    """Runs ``python -m awscli`` (the pinned aws cli v1) against a daemon."""

    def __init__(self, endpoint: str, access_key: str = ACCESS_KEY,
                 secret_key: str = SECRET_KEY):
        self.endpoint = endpoint
        self.env = run_env_isolated()
        self.env.update({
            "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": os.environ["AWS_CONFIG_FILE"],
            "AWS_SHARED_CREDENTIALS_FILE": os.environ["AWS_SHARED_CREDENTIALS_FILE"],
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_PAGER": "",
            "PYTHONIOENCODING": "utf-8",
        })

    def __call__(self, *args: str, check: bool = True, cwd=None, timeout: float = 300,
                 ) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "awscli", "--endpoint-url", self.endpoint, *map(str, args)]
        if len(args) >= 2 and args[0] == "s3" and args[1] in ("cp", "mv", "sync"):
            cmd.append("--no-progress")
        cp = subprocess.run(cmd, capture_output=True, text=True, env=self.env, cwd=cwd,
                            timeout=timeout)
        if check and cp.returncode != 0:
            raise AssertionError(
                f"aws {' '.join(map(str, args))} exited {cp.returncode}\n"
                f"stdout:\n{cp.stdout}\nstderr:\n{cp.stderr}")
        return cp
