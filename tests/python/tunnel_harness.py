"""The edge side of the tunnel tests: a real `pixelport edge` process on loopback ports,
with a self-signed certificate (openssl) for `localhost` and `127.0.0.1`, and the pairing
commands as a user types them.

Hostnames: the image door is paired as `localhost` and the S3 door as `127.0.0.1`, so
real clients (requests, curl, the aws cli) reach each by name without touching DNS.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import requests

import harness

IMAGES_HOST = "localhost"
S3_HOST = "127.0.0.1"

# Appliance settings that make reconnects quick enough to test.
FAST_TUNNEL = """
[tunnel]
keepalive = "1s"
idle_timeout = "3s"
backoff_max = "2s"
"""


def make_cert(base: Path) -> tuple[Path, Path]:
    base.mkdir(parents=True, exist_ok=True)
    cert, key = base / "edge-cert.pem", base / "edge-key.pem"
    if not cert.exists():
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "2", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True)
    return cert, key


class Edge:
    """One `pixelport edge` with its own config, data dir and log."""

    def __init__(self, base: Path, extra: str = "", acme: str | None = None):
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.base / "edge-data"
        self.config_path = self.base / "edge.toml"
        self.log_path = self.base / "edge.stderr.log"
        self.cert, self.key = make_cert(self.base)
        self.https_port = harness.free_port()
        self.http_port = harness.free_port()
        self.tunnel_port = harness.free_port()
        self.admin_port = harness.free_port()
        self.extra = extra
        # An [edge.acme] table instead of the certificate files.
        self.acme = acme
        self.proc: subprocess.Popen | None = None

    @property
    def tunnel_address(self) -> str:
        return f"127.0.0.1:{self.tunnel_port}"

    def url(self, host: str, path: str) -> str:
        return f"https://{host}:{self.https_port}{path}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def write_config(self) -> None:
        self.config_path.write_text(f"""
[server]
log_format = "text"
log_level = "info,pixelport=debug"
shutdown_grace = "5s"
[edge]
data_dir = {json.dumps(str(self.data_dir))}
https_listen = "127.0.0.1:{self.https_port}"
http_listen = "127.0.0.1:{self.http_port}"
tunnel_listen = "127.0.0.1:{self.tunnel_port}"
admin_listen = "127.0.0.1:{self.admin_port}"
{self.tls_lines()}
public_address = "{self.tunnel_address}"
keepalive = "1s"
idle_timeout = "3s"
{self.extra}
{self.protection()}
{self.acme or ""}
""")

    def protection(self) -> str:
        """Tests drive the edge from one loopback address far faster than a browser: no
        per-client limit unless a test sets its own [edge.protection]."""
        if "[edge.protection]" in self.extra:
            return ""
        return "[edge.protection]\nper_client_rate = 0\n"

    def tls_lines(self) -> str:
        if self.acme is not None:
            return ""
        return f"tls_cert = {json.dumps(str(self.cert))}\ntls_key = {json.dumps(str(self.key))}"

    def start(self) -> "Edge":
        self.write_config()
        err = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(harness.pixelport_bin()), "edge", "--config", str(self.config_path)],
            stdout=err, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        err.close()
        harness.LIVE.append(self)
        deadline = time.monotonic() + harness.READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"edge exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if requests.get(f"{self.admin_url}/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"edge not healthy:\n{self.logs()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self in harness.LIVE:
            harness.LIVE.remove(self)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"edge ignored SIGTERM:\n{self.logs()}")
        if self in harness.LIVE:
            harness.LIVE.remove(self)
        return self.proc.returncode

    def stop_all(self) -> int | None:
        return self.stop()

    def logs(self) -> str:
        try:
            return f"--- {self.log_path} ---\n" + "\n".join(
                self.log_path.read_text(errors="replace").splitlines()[-150:])
        except OSError:
            return ""

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        self.write_config()
        return subprocess.run(
            [str(harness.pixelport_bin()), "edge", *args, "--config", str(self.config_path)],
            capture_output=True, text=True, timeout=60)

    def pair(self, *hostnames: str, door: str = "images") -> str:
        args = ["pair"]
        for h in hostnames:
            args += ["--hostname", h]
        cp = self.cli(*args, "--door", door)
        assert cp.returncode == 0, cp.stderr
        token = cp.stdout.strip()
        assert "\n" not in token and token.startswith("pxt1_"), cp.stdout
        return token

    def ready(self) -> tuple[int, dict]:
        r = requests.get(f"{self.admin_url}/ready", timeout=5)
        return r.status_code, r.json()

    def get(self, host: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 10)
        return requests.get(self.url(host, path), verify=str(self.cert), **kw)


def served_cert(edge, host: str = IMAGES_HOST) -> dict:
    """The certificate the edge serves for `host`, as Python's ssl sees it."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", edge.https_port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname=host) as t:
            der = t.getpeercert(binary_form=True)
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial", "-enddate",
                          "-issuer"], input=der, capture_output=True, check=True).stdout.decode()
    return dict(line.split("=", 1) for line in out.strip().splitlines())


def join(daemon: harness.Daemon, token: str) -> subprocess.CompletedProcess:
    """`pixelport tunnel join TOKEN` on the appliance (its config written first)."""
    daemon.write_config()
    daemon.data_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [str(harness.pixelport_bin()), "tunnel", "join", token, "--config",
         str(daemon.config_path)],
        capture_output=True, text=True, timeout=60)


def wait_until(fn, timeout: float = 15.0, every: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - keep polling through connection errors
            last = e
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def wait_connected(edge: Edge, timeout: float = 15.0) -> None:
    wait_until(lambda: edge.ready()[0] == 200, timeout, what="an appliance connected to the edge")


os.environ.setdefault("NO_PROXY", "*")


class TcpOnlyProxy:
    """Forwards TCP from a fresh loopback port to `target` and nothing else: to an
    appliance dialling that port, UDP (QUIC) is blocked while TLS over TCP gets through."""

    def __init__(self, target: int):
        import socket
        import threading
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        import socket
        import threading
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        import socket
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.sock.close()
