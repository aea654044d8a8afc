"""Every listener bounded (issue "Safe to put on the internet", section 2): header, idle and
body clocks, the largest request head, and per-listener connection caps derived from the
descriptor limit, against the real daemon.

Bug guarded throughout: there was no header-read timeout (hyper's is off without a timer),
no idle timeout, no body timeout and no connection limit on any listener, so a few thousand
slow-loris connections used up LimitNOFILE and stopped S3, images and admin together.
"""

from __future__ import annotations

import resource
import socket
import time

import pytest
import requests

import harness

SLOW_CLIENTS = 5000
FD_LIMIT = 4096


def raw_connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.settimeout(5)
    return s


def closed_within(s: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed `s` (EOF or reset), or None if it stayed open."""
    start = time.monotonic()
    s.settimeout(0.2)
    while time.monotonic() - start < seconds:
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start
        if data == b"":
            return time.monotonic() - start
    return None


def read_to_end(s: socket.socket) -> bytes:
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    s.close()
    return data


def limit_fds():
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def test_slow_loris_on_images_leaves_s3_and_admin_answering(make_daemon):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = SLOW_CLIENTS + 1000
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"this test process may open only {hard} descriptors; it needs {want}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    d = make_daemon(preexec_fn=limit_fds)
    s3 = d.client()
    s3.create_bucket(Bucket="loris")
    slow: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        for i in range(SLOW_CLIENTS):
            if time.monotonic() > deadline:
                break
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", d.images_port))
                slow.append(s)
            except OSError:
                break
        assert len(slow) == SLOW_CLIENTS, len(slow)
        # Each dribbles the start of a request head and then waits.
        time.sleep(1)
        for s in slow:
            try:
                s.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            except OSError:
                pass
        # Meanwhile the other listeners answer normally.
        t0 = time.monotonic()
        assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["loris"]
        s3.put_object(Bucket="loris", Key="k", Body=b"still here")
        assert s3.get_object(Bucket="loris", Key="k")["Body"].read() == b"still here"
        r = requests.get(d.admin_url + "/health", timeout=5)
        assert r.status_code == 200
        assert time.monotonic() - t0 < 10
        # The image listener itself answers past its cap with a quick 503, not a hang.
        try:
            r = requests.get(d.images_url + "/health", timeout=5)
            assert r.status_code in (200, 503), r.status_code
            if r.status_code == 503:
                assert r.headers.get("retry-after") == "1"
        except requests.ConnectionError:
            pass  # refused while the backlog is full is also an answer
        metrics = requests.get(d.admin_url + "/metrics", timeout=5).text
        refused = [line for line in metrics.splitlines()
                   if line.startswith('pixelport_connections_refused_total{listener="images"}')]
        assert refused and float(refused[0].split()[-1]) > 0, refused
    finally:
        for s in slow:
            s.close()
    # Once the slow clients are gone, the image listener serves again within seconds.
    deadline = time.monotonic() + 15
    while True:
        try:
            if requests.get(d.images_url + "/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "the image listener did not recover"
        time.sleep(0.2)


def test_header_idle_and_size_limits(make_daemon):
    d = make_daemon(extra_config='[limits]\nheader_read_timeout = "2s"\nidle_timeout = "3s"\n'
                                 'max_header_size = "16KiB"\n')
    # A head that never finishes is cut after header_read_timeout.
    s = raw_connect(d.images_port)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    took = closed_within(s, 8)
    assert took is not None and took < 5, took
    s.close()
    # A keep-alive connection that sends nothing more is closed too.
    s = raw_connect(d.s3_port)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    took = closed_within(s, 10)
    assert took is not None and took < 6, took
    s.close()
    # A head over max_header_size is refused (431) without being buffered whole.
    s = raw_connect(d.admin_port)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n")
    data = read_to_end(s)
    assert data.startswith(b"HTTP/1.1 431"), data[:100]
    # Ordinary requests still work on every listener.
    assert requests.get(d.images_url + "/health", timeout=5).status_code == 200
    assert requests.get(d.admin_url + "/health", timeout=5).status_code == 200


def test_connection_cap_answers_503_and_frees_on_close(make_daemon):
    d = make_daemon(extra_config="[limits]\nadmin_max_connections = 3\n")
    held = [raw_connect(d.admin_port) for _ in range(3)]
    time.sleep(0.3)
    data = read_to_end(raw_connect(d.admin_port))
    assert data.startswith(b"HTTP/1.1 503"), data[:80]
    assert b"Retry-After: 1" in data and b'"kind":"connections"' in data
    # The other listeners are not affected.
    assert requests.get(d.images_url + "/health", timeout=5).status_code == 200
    for h in held:
        h.close()
    deadline = time.monotonic() + 5
    while requests.get(d.admin_url + "/health", timeout=5).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
