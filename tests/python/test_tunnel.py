"""The tunnel and the edge (issue "The tunnel: `pixelport edge` on a public host"): real
`pixelport edge` and `pixelport serve` processes on loopback, paired with the commands a
user types, and real clients (requests, the aws cli) on the edge's HTTPS side.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time

from base64 import urlsafe_b64decode, urlsafe_b64encode

import pytest
import requests

import harness
from tunnel_harness import (FAST_TUNNEL, IMAGES_HOST, S3_HOST, Edge, TcpOnlyProxy, join,
                            make_cert, served_cert, wait_connected, wait_until)

PHOTO = harness.REPO_ROOT.parent / "shared" / "images" / "rocket-640x427.jpg"
IMAGE_PATH = f"/unsafe/rs:fit:200:150/plain/s3://{harness.PUBLIC_BUCKET}/rocket.jpg@webp"

pytestmark = pytest.mark.pixelport_only


@pytest.fixture
def edge(tmp_path):
    e = Edge(tmp_path / "edge").start()
    yield e
    e.stop()


def appliance(make_daemon, extra: str = "", **kw):
    """A daemon whose config carries quick tunnel settings, not yet started."""
    return make_daemon(extra_config=FAST_TUNNEL + extra, start=False, **kw)


def paired(edge, d, *hosts, door="images"):
    cp = join(d, edge.pair(*hosts, door=door))
    assert cp.returncode == 0, cp.stderr
    return cp


def upload_photo(d):
    s3 = d.client()
    s3.create_bucket(Bucket=harness.PUBLIC_BUCKET)
    s3.put_object(Bucket=harness.PUBLIC_BUCKET, Key="rocket.jpg", Body=PHOTO.read_bytes(),
                  ContentType="image/jpeg")


def test_pair_join_and_fetch_an_image_over_https(edge, make_daemon):
    d = appliance(make_daemon)
    cp = paired(edge, d, IMAGES_HOST)
    assert "Joined" in cp.stdout and IMAGES_HOST in cp.stdout, cp.stdout
    joined = (d.data_dir / "tunnel.toml").read_text()
    assert f"127.0.0.1:{edge.tunnel_port}" in joined
    assert oct(os.stat(d.data_dir / "tunnel-client.pem").st_mode & 0o777) == "0o600"
    assert oct(os.stat(edge.data_dir / "edge-identity.pem").st_mode & 0o777) == "0o600"
    d.start()
    upload_photo(d)
    wait_connected(edge)
    direct = requests.get(d.images_url + IMAGE_PATH, headers={"Accept": "image/webp"},
                          timeout=30)
    assert direct.status_code == 200, direct.text
    through = edge.get(IMAGES_HOST, IMAGE_PATH, headers={"Accept": "image/webp"})
    assert through.status_code == 200, through.text
    assert through.content == direct.content
    for h in ("ETag", "Cache-Control", "Vary", "Content-Type"):
        assert through.headers.get(h) == direct.headers.get(h), h
    # A conditional request is answered by the appliance through the tunnel.
    again = edge.get(IMAGES_HOST, IMAGE_PATH,
                     headers={"Accept": "image/webp", "If-None-Match": direct.headers["ETag"]})
    assert again.status_code == 304
    # `pixelport tunnel status` shows the joined edge.
    st = subprocess.run([str(harness.pixelport_bin()), "tunnel", "status", "--config",
                         str(d.config_path)], capture_output=True, text=True, timeout=30)
    assert st.returncode == 0 and edge.tunnel_address in st.stdout, st.stdout + st.stderr
    live = json.loads(st.stdout)["live"]
    assert live["ready"] is True and [l["state"] for l in live["links"]] == ["connected"] * 2, live
    # The edge's metrics count the request and the bytes by hostname.
    em = requests.get(edge.admin_url + "/metrics", timeout=10).text
    assert f'pixelport_edge_requests_total{{host="{IMAGES_HOST}",status="200"}}' in em, em
    sent = [l for l in em.splitlines()
            if l.startswith(f'pixelport_edge_response_bytes_total{{host="{IMAGES_HOST}"}}')]
    assert sent and float(sent[0].split()[-1]) >= len(through.content), sent
    # The appliance's metrics count the connection and the requests.
    m = requests.get(d.admin_url + "/metrics", timeout=10).text
    assert "pixelport_tunnel_connections 2" in m, m
    assert 'pixelport_tunnel_requests_total{door="images"}' in m


def test_http_redirects_to_https_and_unknown_hosts_are_misdirected(edge, make_daemon):
    r = requests.get(f"http://{IMAGES_HOST}:{edge.http_port}/x/y?z=1", allow_redirects=False,
                     timeout=10)
    assert r.status_code == 308
    assert r.headers["Location"] == f"https://{IMAGES_HOST}:{edge.https_port}/x/y?z=1"
    acme = requests.get(f"http://{IMAGES_HOST}:{edge.http_port}/.well-known/acme-challenge/t",
                        allow_redirects=False, timeout=10)
    assert acme.status_code == 404
    r = edge.get(IMAGES_HOST, "/health")
    assert r.status_code == 421, r.text
    assert "no such hostname" in r.json()["error"]
    # Every response from the edge says what its cache did, the edge's own too.
    assert r.headers["Cache-Status"] == "pixelport-edge; fwd=bypass"


def test_no_appliance_connected_is_503_at_once_and_recovers(edge, make_daemon):
    d = appliance(make_daemon)
    paired(edge, d, IMAGES_HOST)
    # Paired but never started: the hostname is known, nobody serves it.
    t0 = time.monotonic()
    r = edge.get(IMAGES_HOST, "/health")
    assert r.status_code == 503 and time.monotonic() - t0 < 1.0
    assert "no appliance" in r.json()["error"]
    status, body = edge.ready()
    assert status == 503 and body["hostnames_without_appliance"] == [IMAGES_HOST]
    d.start()
    wait_connected(edge)
    assert edge.get(IMAGES_HOST, "/health").status_code == 200
    # kill -9: the appliance's heartbeats stop; within about a second the edge answers
    # 503 at once instead of sending requests into a dead connection (QUIC alone would
    # notice only at its idle timeout). No request ever hangs.
    d.kill9()
    killed = time.monotonic()
    statuses = []
    while time.monotonic() - killed < 5:
        s = time.monotonic()
        code = edge.get(IMAGES_HOST, "/health", timeout=5).status_code
        assert time.monotonic() - s < 2.5, "a request to a dead appliance hung"
        statuses.append(code)
        if code == 503:
            break
        time.sleep(0.05)
    assert statuses[-1] == 503, statuses
    assert time.monotonic() - killed < 2.5, statuses
    d.start()
    wait_until(lambda: edge.get(IMAGES_HOST, "/health").status_code == 200, 15,
               what="the restarted appliance served through the edge")


def test_edge_restart_the_appliance_reconnects_by_itself(edge, make_daemon):
    d = appliance(make_daemon)
    paired(edge, d, IMAGES_HOST)
    d.start()
    wait_connected(edge)
    assert requests.get(d.admin_url + "/ready", timeout=5).status_code == 200
    edge.kill9()
    # The appliance's /ready includes the tunnel: not ready while its edge is gone.
    wait_until(lambda: requests.get(d.admin_url + "/ready", timeout=5).status_code == 503, 10,
               what="the appliance's /ready reporting the lost tunnel")
    edge.start()
    wait_until(lambda: edge.get(IMAGES_HOST, "/health").status_code == 200, 20,
               what="the appliance reconnected after the edge restarted")
    wait_until(lambda: requests.get(d.admin_url + "/ready", timeout=5).status_code == 200, 10,
               what="the appliance ready again")
    m = requests.get(d.admin_url + "/metrics", timeout=10).text
    reconnects = [l for l in m.splitlines() if l.startswith("pixelport_tunnel_reconnects_total")]
    assert reconnects and float(reconnects[0].split()[-1]) >= 1, reconnects


def rewrite_token(token: str, **changes) -> str:
    body = json.loads(urlsafe_b64decode(token[5:] + "=" * (-len(token[5:]) % 4)))
    body.update(changes)
    return "pxt1_" + urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def test_refusals(edge, make_daemon):
    d = appliance(make_daemon)
    token = edge.pair(IMAGES_HOST)
    # A damaged token is refused before anything is sent.
    cp = join(d, token[:-6])
    assert cp.returncode != 0 and "damaged" in cp.stderr, cp.stderr
    cp = join(d, "hello")
    assert cp.returncode != 0 and "not a Pixelport join token" in cp.stderr
    # A wrong secret (a token edited by hand) is unknown to the edge.
    cp = join(d, rewrite_token(token, secret="00" * 32))
    assert cp.returncode != 0 and "unknown enrollment secret" in cp.stderr, cp.stderr
    # A wrong pin: the appliance will not talk to an edge whose certificate differs.
    cp = join(d, rewrite_token(token, pin="00" * 32))
    assert cp.returncode != 0 and "does not match the pin" in cp.stderr, cp.stderr
    # An expired token is refused on the appliance before dialling.
    cp = join(d, rewrite_token(token, expires=int(time.time()) - 5))
    assert cp.returncode != 0 and "expired" in cp.stderr, cp.stderr
    # The edge checks the expiry too (the appliance's clock may be wrong): the same secret,
    # expired in the edge's registry, is refused there.
    late = edge.pair(IMAGES_HOST)
    reg_path = edge.data_dir / "edge-registry.json"
    reg = json.loads(reg_path.read_text())
    reg["enrollments"][-1]["expires"] = int(time.time()) - 5
    reg_path.write_text(json.dumps(reg))
    cp = join(d, late)
    assert cp.returncode != 0 and "expired" in cp.stderr, cp.stderr
    assert "this join token expired" in edge.logs()
    # The real token works once; a reused secret is refused with a clear reason.
    assert join(d, token).returncode == 0
    other = appliance(make_daemon)
    cp = join(other, token)
    assert cp.returncode != 0 and "already used" in cp.stderr, cp.stderr
    assert "appliance refused" in edge.logs() and "already used" in edge.logs()
    assert not (other.data_dir / "tunnel.toml").exists()
    # An unknown client certificate: the joined edges, with an identity never enrolled.
    (other.data_dir / "tunnel.toml").write_text((d.data_dir / "tunnel.toml").read_text())
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=stranger",
                    "-keyout", str(other.base / "k.pem"), "-out", str(other.base / "c.pem")],
                   check=True, capture_output=True)
    (other.data_dir / "tunnel-client.pem").write_text(
        (other.base / "c.pem").read_text() + (other.base / "k.pem").read_text())
    other.start()
    wait_until(lambda: "unknown client certificate" in edge.logs(), 10,
               what="the edge logging the unknown certificate")
    wait_until(lambda: "unknown client certificate" in other.logs(), 10,
               what="the appliance logging the refusal")
    assert edge.ready()[0] == 503


def test_an_identity_serves_only_its_granted_hostnames(edge, make_daemon):
    a = appliance(make_daemon)
    paired(edge, a, IMAGES_HOST)
    b = appliance(make_daemon)
    paired(edge, b, S3_HOST, door="s3")
    a.start()
    wait_until(lambda: edge.get(IMAGES_HOST, "/health").status_code == 200, 15,
               what="a serving localhost")
    # a is connected, but 127.0.0.1 was granted to b only, which is not running.
    r = edge.get(S3_HOST, "/health")
    assert r.status_code == 503, r.text


def test_revoke_closes_live_connections_at_once(edge, make_daemon):
    d = appliance(make_daemon)
    paired(edge, d, IMAGES_HOST)
    d.start()
    wait_connected(edge)
    cp = edge.cli("list")
    node = __import__("json").loads(cp.stdout)[0]["node"]
    cp = edge.cli("revoke", node)
    assert cp.returncode == 0 and "revoked" in cp.stdout, cp.stderr
    t0 = time.monotonic()
    wait_until(lambda: edge.get(IMAGES_HOST, "/health").status_code in (421, 503), 3,
               what="the revoked appliance no longer served")
    assert time.monotonic() - t0 < 2.5
    assert "identity revoked" in edge.logs()


def test_forwarded_headers_are_trusted_only_from_the_tunnel(edge, make_daemon):
    # What is guarded: the appliance sees the client the edge saw. On tunnel streams the
    # request's client address (the admin login limiter's key, and its log) is the last
    # X-Forwarded-For entry, the one the edge appended; without that trust every tunnelled
    # client would be one anonymous address, and trusting the first entry would let a
    # client pick its own. A direct client's forwarded headers are never read.
    hashed = subprocess.run([str(harness.pixelport_bin()), "hash-password"], input="right\n",
                            capture_output=True, text=True, check=True).stdout.strip()
    d = appliance(make_daemon, admin_config=f'user = "admin"\npassword_hash = "{hashed}"\n')
    paired(edge, d, IMAGES_HOST, door="admin")
    d.start()
    wait_connected(edge)
    r = requests.post(edge.url(IMAGES_HOST, "/api/login"), verify=str(edge.cert), timeout=30,
                      json={"user": "admin", "password": "wrong"},
                      headers={"X-Forwarded-For": "203.0.113.9"})
    assert r.status_code == 401, r.text
    r = requests.post(d.admin_url + "/api/login", timeout=30,
                      json={"user": "admin", "password": "wrong"},
                      headers={"X-Forwarded-For": "198.51.100.7"})
    assert r.status_code == 401, r.text
    refused = [l for l in d.logs().splitlines() if "admin login refused" in l]
    assert len(refused) == 2, refused
    assert all("client=127.0.0.1" in l for l in refused), refused


def test_the_admin_ui_is_not_reachable_through_the_edge_by_default(edge, make_daemon):
    d = appliance(make_daemon)
    paired(edge, d, IMAGES_HOST)  # the default door: images
    d.start()
    wait_connected(edge)
    # The admin API's paths reach the image listener, which knows nothing of them.
    r = edge.get(IMAGES_HOST, "/api/session")
    assert r.status_code == 404, r.text
    r = edge.get(IMAGES_HOST, "/metrics")
    assert "pixelport_tunnel" not in r.text


def aws_round_trip(edge, src, tmp_path, endpoint=None, part_mib=None):
    """`aws s3 cp` up and down through the edge's S3 hostname (or `endpoint`), with
    `part_mib` MiB multipart parts when given; returns the copy."""
    aws = harness.AwsCli(endpoint or edge.url(S3_HOST, ""))
    if part_mib:
        cfg = tmp_path / f"aws-config-{part_mib}"
        cfg.write_text(open(aws.env["AWS_CONFIG_FILE"]).read()
                       + f"    multipart_chunksize = {part_mib}MB\n")
        aws.env["AWS_CONFIG_FILE"] = str(cfg)
    aws.env["AWS_CA_BUNDLE"] = str(edge.cert)
    bucket = harness.unique_name("tun")
    aws("s3", "mb", f"s3://{bucket}")
    aws("s3", "cp", str(src), f"s3://{bucket}/{src.name}")
    back = tmp_path / f"back-{src.name}"
    aws("s3", "cp", f"s3://{bucket}/{src.name}", str(back))
    return back


def rss_mib(d) -> float:
    for line in open(f"/proc/{d.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssPeak:
    """The largest RSS a daemon reaches while the block runs (sampled every 50 ms)."""

    def __init__(self, d):
        import threading
        self.d, self.mib, self.done = d, 0.0, threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self):
        while not self.done.is_set():
            self.mib = max(self.mib, rss_mib(self.d))
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()


def test_s3_on_its_own_hostname_with_the_aws_cli(edge, make_daemon, tmp_path):
    d = appliance(make_daemon)
    paired(edge, d, S3_HOST, door="s3")
    d.start()
    wait_connected(edge)
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for i in range(100):
            f.write(hashlib.sha256(str(i).encode()).digest() * (1 << 15))
    # The same copy straight to the S3 listener first: the aws cli's parallel parts cost
    # the daemon some memory whatever the path. 32 MiB parts (4 of them, all in flight at
    # once) make buffering visible: a tunnel that held each part whole would add about
    # 100 MiB over the direct copy, and so would one that held the download whole.
    base = rss_mib(d)
    with RssPeak(d) as direct:
        aws_round_trip(edge, big, tmp_path, endpoint=d.endpoint, part_mib=32)
    direct_growth = direct.mib - base
    base = rss_mib(d)
    with RssPeak(d) as peak:
        back = aws_round_trip(edge, big, tmp_path, part_mib=32)
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(big.read_bytes()).digest()
    # The body streams through the tunnel. The margin is half of what buffering would add:
    # quinn's stream windows and the allocator's arenas vary from run to run by ~35 MiB.
    tunnel_growth = peak.mib - base
    assert tunnel_growth < direct_growth + 48, (direct_growth, tunnel_growth)


class Load:
    """Threads fetching `path` through the edge until stopped; counts each outcome."""

    def __init__(self, edge, path: str, threads: int = 8):
        import threading
        self.edge, self.path = edge, path
        self.stop_flag = threading.Event()
        self.results: list[int | str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self):
        with requests.Session() as s:
            while not self.stop_flag.is_set():
                try:
                    r = s.get(self.edge.url(IMAGES_HOST, self.path), verify=str(self.edge.cert),
                              timeout=15)
                    out = r.status_code
                except requests.RequestException as e:
                    out = type(e).__name__
                with self.lock:
                    self.results.append(out)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=30)

    def failures(self):
        with self.lock:
            return [r for r in self.results if r != 200]

    def count(self):
        with self.lock:
            return len(self.results)


def links(edge) -> int:
    m = requests.get(edge.admin_url + "/metrics", timeout=5).text
    return sum(int(float(l.split()[-1])) for l in m.splitlines()
               if l.startswith("pixelport_edge_tunnel_connections{"))


def test_a_group_of_two_appliances_survives_sigterm_and_kill(edge, make_daemon):
    a = appliance(make_daemon, name="a")
    b = appliance(make_daemon, name="b")
    paired(edge, a, IMAGES_HOST)
    paired(edge, b, IMAGES_HOST)
    a.start()
    b.start()
    wait_until(lambda: links(edge) == 4, 15, what="2 appliances x 2 connections")
    with Load(edge, "/health") as load:
        wait_until(lambda: load.count() > 200, 20, what="load running")
        # SIGTERM: b drains (the edge sends it nothing new, in-flight requests finish) and
        # exits 0; nothing fails.
        assert b.stop() == 0
        before = load.count()
        wait_until(lambda: load.count() > before + 200, 20, what="load continuing on a")
        assert load.failures() == [], load.failures()[:10]
        assert "appliance draining" in edge.logs()
    b.start()
    wait_until(lambda: links(edge) == 4, 15, what="b back")
    with Load(edge, "/health") as load:
        wait_until(lambda: load.count() > 200, 20, what="load running")
        # kill -9: requests in flight on b are sent again to a (they have no body), and new
        # ones go to a once b is silent; again nothing fails.
        b.kill9()
        before = load.count()
        wait_until(lambda: load.count() > before + 300, 30, what="load continuing after kill")
        assert load.failures() == [], load.failures()[:10]
    assert links(edge) == 2 or "appliance disconnected" in edge.logs()


def test_tcp_fallback_when_udp_is_blocked(edge, make_daemon, tmp_path):
    # The appliance dials a port where only TCP reaches the edge (UDP goes nowhere, as on a
    # network that drops it): `transport = "auto"` gives up on QUIC after 3 s and runs the
    # same tunnel over TLS on TCP, both doors working, bodies both ways.
    proxy = TcpOnlyProxy(edge.tunnel_port)
    try:
        d = appliance(make_daemon)
        paired(edge, d, IMAGES_HOST)
        paired(edge, d, S3_HOST, door="s3")
        joined = d.data_dir / "tunnel.toml"
        joined.write_text(joined.read_text().replace(edge.tunnel_address,
                                                     f"127.0.0.1:{proxy.port}"))
        d.start()
        upload_photo(d)
        wait_until(lambda: edge.ready()[0] == 200, 20, what="the appliance connected over TCP")
        assert 'transport="tcp"' in edge.logs() and 'transport="quic"' not in edge.logs()
        assert "falling back to TLS over TCP" in d.logs()
        direct = requests.get(d.images_url + IMAGE_PATH, headers={"Accept": "image/webp"},
                              timeout=30)
        through = edge.get(IMAGES_HOST, IMAGE_PATH, headers={"Accept": "image/webp"})
        assert through.status_code == 200, through.text
        assert through.content == direct.content
        assert through.headers["ETag"] == direct.headers["ETag"]
        data = tmp_path / "up.bin"
        data.write_bytes(os.urandom(3 << 20))
        assert aws_round_trip(edge, data, tmp_path).read_bytes() == data.read_bytes()
    finally:
        proxy.close()


def test_transport_tcp_is_used_when_asked(edge, make_daemon):
    d = appliance(make_daemon, extra='transport = "tcp"\n')
    paired(edge, d, IMAGES_HOST)
    d.start()
    wait_connected(edge)
    assert edge.get(IMAGES_HOST, "/health").status_code == 200
    assert 'transport="tcp"' in edge.logs() and 'transport="quic"' not in edge.logs()
    # SIGTERM over TCP: the appliance says GOAWAY, exits 0, and the edge answers 503.
    assert d.stop() == 0
    wait_until(lambda: edge.get(IMAGES_HOST, "/health").status_code == 503, 5,
               what="503 once the appliance left")


def test_http2_to_clients_and_certificates_reloaded_on_sighup(edge, make_daemon, tmp_path):
    d = appliance(make_daemon)
    paired(edge, d, IMAGES_HOST)
    d.start()
    wait_connected(edge)
    cp = subprocess.run(["curl", "-sS", "--http2", "--cacert", str(edge.cert), "-o", "/dev/null",
                         "-w", "%{http_version} %{http_code}", edge.url(IMAGES_HOST, "/health")],
                        capture_output=True, text=True, timeout=30)
    assert cp.stdout == "2 200", cp.stdout + cp.stderr
    first = served_cert(edge)
    # A bad certificate file: SIGHUP keeps the old certificate and says why.
    edge.cert.write_text("not a certificate")
    edge.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "certificate not reloaded" in edge.logs(), 5, what="the reload refusal")
    assert served_cert(edge)["serial"] == first["serial"]
    # A new certificate: served to new handshakes without a restart; the process stays.
    newer = make_cert(tmp_path / "newer")
    edge.cert.write_text(newer[0].read_text())
    edge.key.write_text(newer[1].read_text())
    edge.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: served_cert(edge)["serial"] != first["serial"], 5,
               what="the new certificate served")
    assert edge.alive()
    r = requests.get(edge.url(IMAGES_HOST, "/health"), verify=str(edge.cert), timeout=10)
    assert r.status_code == 200


def gauge(url: str, name: str) -> float:
    """The sum of a gauge's series on a /metrics page."""
    text = requests.get(url + "/metrics", timeout=10).text
    return sum(float(l.split()[-1]) for l in text.splitlines()
               if l.startswith(name + "{") or l.startswith(name + " "))


@pytest.mark.parametrize("transport", ["quic", "tcp"])
def test_a_client_hanging_up_mid_download_cancels_the_request_on_the_appliance(
        edge, make_daemon, transport):
    # The bug this guards: a client that hangs up must not leave its request running
    # through the tunnel. Without the reset travelling to the appliance, the response
    # stays open there, blocked on flow control, holding the object open and a stream
    # slot, until the connection itself dies.
    d = appliance(make_daemon, f'transport = "{transport}"\n')
    paired(edge, d, S3_HOST, door="s3")
    d.start()
    wait_connected(edge)
    s3 = d.client()
    s3.create_bucket(Bucket=harness.PUBLIC_BUCKET)
    s3.put_object(Bucket=harness.PUBLIC_BUCKET, Key="big.bin", Body=os.urandom(1 << 20) * 64)
    url = edge.url(S3_HOST, f"/{harness.PUBLIC_BUCKET}/big.bin")
    r = requests.get(url, verify=str(edge.cert), stream=True, timeout=30)
    assert r.status_code == 200, r.text
    assert int(r.headers["Content-Length"]) == 64 << 20
    first = r.raw.read(1 << 20)
    assert len(first) == 1 << 20
    # While the body streams, both sides count the request in flight.
    assert gauge(edge.admin_url, "pixelport_edge_upstream_in_flight") == 1
    assert gauge(d.admin_url, "pixelport_tunnel_requests_in_flight") == 1
    r.close()
    wait_until(lambda: gauge(edge.admin_url, "pixelport_edge_upstream_in_flight") == 0, 5,
               what="the edge forgetting the cancelled request")
    wait_until(lambda: gauge(d.admin_url, "pixelport_tunnel_requests_in_flight") == 0, 5,
               what="the appliance cancelling the request the client hung up on")
    # The connection stays usable: the next request is served in full.
    small = requests.get(edge.url(S3_HOST, "/health"), verify=str(edge.cert), timeout=10)
    assert small.status_code in (200, 403, 404), small.text


def test_an_appliance_joined_to_two_edges_serves_through_both(tmp_path, edge, make_daemon):
    second = Edge(tmp_path / "edge2").start()
    try:
        d = appliance(make_daemon)
        paired(edge, d, IMAGES_HOST)
        paired(second, d, IMAGES_HOST)
        d.start()
        wait_connected(edge)
        wait_connected(second)
        upload_photo(d)
        direct = requests.get(d.images_url + IMAGE_PATH, timeout=30)
        assert direct.status_code == 200, direct.text
        for e in (edge, second):
            r = e.get(IMAGES_HOST, IMAGE_PATH)
            assert r.status_code == 200, r.text
            assert r.content == direct.content
        st = subprocess.run([str(harness.pixelport_bin()), "tunnel", "status", "--config",
                             str(d.config_path)], capture_output=True, text=True, timeout=30)
        assert st.returncode == 0, st.stderr
        live = json.loads(st.stdout)["live"]
        edges = {link["edge"] for link in live["links"] if link["state"] == "connected"}
        assert edges == {edge.tunnel_address, second.tunnel_address}, live
        # One edge gone: the other keeps serving, and the first is dialled again when back.
        edge.kill9()
        r = second.get(IMAGES_HOST, IMAGE_PATH)
        assert r.status_code == 200 and r.content == direct.content
        edge.start()
        wait_until(lambda: edge.get(IMAGES_HOST, IMAGE_PATH).status_code == 200, 20,
                   what="the appliance dialling the restarted edge again")
        assert second.get(IMAGES_HOST, IMAGE_PATH).status_code == 200
    finally:
        second.stop()
