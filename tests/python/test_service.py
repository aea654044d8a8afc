"""`pixelport serve` as a systemd service sees it, without a systemd: the sd_notify protocol
on a socket of our own ($NOTIFY_SOCKET, as systemd sets it for Type=notify), the watchdog,
SIGHUP reloads (log level, root S3 key; the rest named as needing a restart), the journal's
native protocol (log_format = "journal") on a socket at the journal's own path, and
check-config's reload notes.

Before this the unit was Type=simple: systemd called the service started before its
listeners were bound, SIGHUP killed the daemon, and nothing said which keys a reload applies.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

import harness

pytestmark = pytest.mark.pixelport_only

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")


class Datagrams:
    """A unix datagram socket collecting what is sent to it, with arrival times."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.got: list[tuple[float, bytes]] = []
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped:
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError:
                return
            self.got.append((time.monotonic(), data))

    def messages(self) -> list[str]:
        return [d.decode(errors="replace") for _, d in self.got]

    def wait_for(self, pred, timeout: float = 20.0, what: str = "a message"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, d in list(self.got):
                if pred(d.decode(errors="replace")):
                    return t, d.decode(errors="replace")
            time.sleep(0.02)
        raise AssertionError(f"no {what} within {timeout}s; got {self.messages()}")

    def close(self):
        self.stopped = True
        self.thread.join(timeout=2)
        self.sock.close()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_ready_watchdog_reload_and_stopping_over_sd_notify(tmp_path):
    """READY=1 comes only once all three listeners accept; WATCHDOG=1 arrives every half
    WatchdogSec; SIGHUP is RELOADING=1 then READY=1 (and the daemon stays up); SIGTERM
    sends STOPPING=1 and the daemon exits 0."""
    d = harness.Daemon(tmp_path / "d")
    d.write_config()
    d.data_dir.mkdir(parents=True, exist_ok=True)
    notify = Datagrams(tmp_path / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    # WATCHDOG_PID must be the daemon's own pid, as systemd sets it: exec keeps the shell's.
    proc = subprocess.Popen(
        ["sh", "-c", 'WATCHDOG_PID=$$ exec "$0" serve --config "$1"', str(harness.pixelport_bin()),
         str(d.config_path)],
        env=env, stdout=subprocess.DEVNULL, stderr=open(d.stderr_path, "ab"),
        start_new_session=True)
    try:
        _, ready = notify.wait_for(lambda m: "READY=1" in m, what="READY=1")
        # At READY every listener accepts already.
        assert all(_accepts(p) for p in (d.s3_port, d.images_port, d.admin_port)), ready
        assert "STATUS=serving" in ready, ready
        assert requests.get(f"{d.admin_url}/ready", timeout=5).status_code == 200
        t0 = time.monotonic()
        time.sleep(1.5)
        beats = [t for t, m in notify.got if m.strip() == b"WATCHDOG=1" and t >= t0]
        assert len(beats) >= 4, f"{len(beats)} watchdog pings in 1.5 s with WatchdogSec=0.4s"

        proc.send_signal(signal.SIGHUP)
        t_reload, _ = notify.wait_for(lambda m: "RELOADING=1" in m, what="RELOADING=1")
        notify.wait_for(lambda m: "READY=1" in m and "STATUS=reloaded" in m,
                        what="READY=1 after the reload")
        assert "MONOTONIC_USEC=" in [m for m in notify.messages() if "RELOADING=1" in m][0]
        assert proc.poll() is None, "SIGHUP stopped the daemon"
        assert _accepts(d.s3_port)

        proc.send_signal(signal.SIGTERM)
        notify.wait_for(lambda m: "STOPPING=1" in m, what="STOPPING=1")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()


def test_sighup_reloads_log_level_and_root_key_and_names_what_needs_a_restart(tmp_path):
    """The config file is edited while the daemon runs: after SIGHUP the new log level is in
    force, the new root S3 key signs requests and the old one is refused, and a changed
    key that needs a restart (s3.max_object_size) is named in the log."""
    d = harness.Daemon(tmp_path / "d", server_config='log_level = "info"').start()
    try:
        before = d.logs()
        assert " DEBUG " not in before
        text = d.config_path.read_text()
        new_ak, new_sk = "pixelport-reloaded", "reloaded-secret-0123456789"
        text = (text.replace(f'access_key = "{harness.ACCESS_KEY}"', f'access_key = "{new_ak}"', 1)
                    .replace(f'secret_key = "{harness.SECRET_KEY}"', f'secret_key = "{new_sk}"', 1)
                    .replace('log_level = "info"', 'log_level = "debug"')
                    .replace(f'max_object_size = "{d.max_object_size}"', 'max_object_size = "1MiB"'))
        d.config_path.write_text(text)
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reload done" not in d.logs() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert d.alive()
        logs = d.logs()
        assert "log level changed" in logs and "root S3 key replaced" in logs, logs[-3000:]
        restart = [line for line in logs.splitlines() if "next restart" in line]
        assert restart and "s3.max_object_size" in restart[-1], logs[-3000:]
        assert "s3.access_key" not in restart[-1] and "server.log_level" not in restart[-1]

        def client(ak, sk):
            return boto3.client("s3", endpoint_url=d.endpoint, aws_access_key_id=ak,
                                aws_secret_access_key=sk, region_name=harness.REGION,
                                config=BotoConfig(retries={"max_attempts": 1}))
        client(new_ak, new_sk).list_buckets()
        with pytest.raises(ClientError) as e:
            client(harness.ACCESS_KEY, harness.SECRET_KEY).list_buckets()
        assert e.value.response["Error"]["Code"] == "InvalidAccessKeyId"
        # The level is debug now: a request logs at DEBUG.
        requests.get(f"{d.admin_url}/ready", timeout=5)
        time.sleep(0.3)
        assert " DEBUG " in d.logs()[len(logs):] or " DEBUG " in d.logs()[len(before):]
        # The admin UI shows the new root key as the root.
        token = (d.data_dir / "admin-token").read_text().strip()
        keys = requests.get(f"{d.admin_url}/api/keys", timeout=5,
                            headers={"Authorization": f"Bearer {token}"}).json()
        roots = [k["access_key"] for k in keys["keys"] if k.get("root")]
        assert roots == [new_ak], keys
    finally:
        d.stop()


def test_check_config_says_what_a_reload_applies(tmp_path):
    """check-config names the keys SIGHUP applies; --quiet prints nothing for a good file;
    a TLS pair that cannot be used is named by its key, before anything starts."""
    binary = str(harness.pixelport_bin())
    env = harness.run_env_isolated()
    out = subprocess.run([binary, "check-config"], capture_output=True, text=True, env=env,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    note = out.stdout[out.stdout.index("# Reloaded on SIGHUP"):]
    for key in ("server.log_level", "s3.access_key", "s3.secret_key", "tls_cert"):
        assert key in note, note
    assert "Every other key needs a restart" in note
    q = subprocess.run([binary, "check-config", "--quiet"], capture_output=True, text=True,
                       env=env, timeout=30)
    assert q.returncode == 0 and q.stdout == "" and q.stderr == "", q
    bad = tmp_path / "bad.pem"
    bad.write_text("nothing here\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[admin]\ntls_cert = "{bad}"\ntls_key = "{bad}"\n')
    r = subprocess.run([binary, "check-config", "--quiet", str(cfg)], capture_output=True,
                       text=True, env=env, timeout=30)
    assert r.returncode == 2 and "admin.tls_cert" in r.stderr, r
    half = tmp_path / "half.toml"
    half.write_text(f'[s3]\ntls_cert = "{bad}"\n')
    r = subprocess.run([binary, "check-config", str(half)], capture_output=True, text=True,
                       env=env, timeout=30)
    assert r.returncode == 2 and "s3.tls_key" in r.stderr, r


def _journal_fields(datagram: bytes) -> dict[str, str]:
    """Parses one native-protocol datagram: KEY=value lines, or KEY\\n<le64 size><bytes>\\n."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            fields[k.decode()] = v.decode(errors="replace")
            i = nl + 1
        else:
            size = int.from_bytes(datagram[nl + 1:nl + 9], "little")
            fields[line.decode()] = datagram[nl + 9:nl + 9 + size].decode(errors="replace")
            i = nl + 9 + size + 1
    return fields


def test_journal_log_format_sends_structured_fields(tmp_path):
    """log_format = "journal" writes the journal's native protocol to its socket: the
    message, its priority, SYSLOG_IDENTIFIER=pixelport, and the event's fields as fields of
    their own (the listening line's S3 address)."""
    if JOURNAL_SOCKET.exists():
        pytest.skip(f"a journal already listens on {JOURNAL_SOCKET}; not taking its socket")
    if os.geteuid() != 0:
        pytest.skip(f"needs root to listen on {JOURNAL_SOCKET}")
    made_dir = not JOURNAL_SOCKET.parent.exists()
    JOURNAL_SOCKET.parent.mkdir(parents=True, exist_ok=True)
    journal = Datagrams(JOURNAL_SOCKET)
    d = harness.Daemon(tmp_path / "d", server_config='log_format = "journal"')
    try:
        d.write_config()
        text = d.config_path.read_text().replace('log_format = "text"\n', "", 1)
        d.write_config = lambda: d.config_path.write_text(text)  # keep the journal format
        d.start()
        _, _ = journal.wait_for(lambda m: "listening" in m, what="the listening line")
        events = [_journal_fields(data) for _, data in journal.got]
        listening = [e for e in events if "listening" in e.get("MESSAGE", "")]
        assert listening, events[:5]
        e = listening[0]
        assert e.get("SYSLOG_IDENTIFIER") == "pixelport", e
        assert e.get("PRIORITY") == "5", e  # tracing-journald: INFO is notice (5), DEBUG info (6)
        assert e.get("S3") == f"127.0.0.1:{d.s3_port}", e
        assert e.get("TARGET") == "pixelport::app", e
        assert "pixelport listening" not in d.logs().split("=====")[-1], "also logged to stderr"
    finally:
        d.stop()
        journal.close()
        JOURNAL_SOCKET.unlink(missing_ok=True)
        if made_dir:
            for p in (JOURNAL_SOCKET.parent, JOURNAL_SOCKET.parent.parent):
                try:
                    p.rmdir()
                except OSError:
                    break
