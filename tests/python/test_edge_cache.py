"""The edge as a CDN (issue "The edge as a CDN"): the edge's HTTP cache, with a real
`pixelport edge` and a real appliance on loopback, and real clients on the edge's HTTPS side.
What a user notices: the second request does not reach the appliance, each Accept class gets
its own format, 100 simultaneous first visitors cost one render, and the cache outlives an
edge restart.
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import threading
import time

from concurrent.futures import ThreadPoolExecutor

from botocore.config import Config

import boto3
import pytest
import requests
import urllib3

import harness
from tunnel_harness import IMAGES_HOST, S3_HOST, Edge, join, wait_connected, wait_until
from test_tunnel import PHOTO, appliance, paired, upload_photo

pytestmark = pytest.mark.pixelport_only

NEGOTIATE = "auto_webp = true\nauto_avif = true\n"
PATH = f"/unsafe/rs:fit:300:200/plain/s3://{harness.PUBLIC_BUCKET}/rocket.jpg"
AVIF = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"
BIG_PHOTO = harness.REPO_ROOT.parent / "shared" / "images" / "bythewater-2560x1600.jpg"


@pytest.fixture
def edge(tmp_path):
    e = Edge(tmp_path / "edge").start()
    yield e
    e.stop()


def status_of(r: requests.Response) -> str:
    return r.headers.get("Cache-Status", "")


def tunnel_requests(d, door: str = "images") -> float:
    text = requests.get(d.admin_url + "/metrics", timeout=10).text
    m = re.search(rf'^pixelport_tunnel_requests_total{{door="{door}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def image_setup(edge, make_daemon, **kw):
    d = appliance(make_daemon, images_config=NEGOTIATE, **kw)
    paired(edge, d, IMAGES_HOST)
    d.start()
    upload_photo(d)
    wait_connected(edge)
    return d


def test_miss_then_hit_per_accept_class_with_age_ranges_head_and_conditionals(
        edge, make_daemon):
    d = image_setup(edge, make_daemon)
    classes = {"avif": AVIF, "webp": "image/webp,*/*", "plain": "*/*"}
    firsts = {}
    for name, accept in classes.items():
        before = tunnel_requests(d)
        miss = edge.get(IMAGES_HOST, PATH, headers={"Accept": accept})
        assert miss.status_code == 200, miss.text
        assert status_of(miss) == "pixelport-edge; fwd=miss; stored", (name, miss.headers)
        hit = edge.get(IMAGES_HOST, PATH, headers={"Accept": accept})
        assert hit.status_code == 200
        assert re.fullmatch(r"pixelport-edge; hit; ttl=\d+", status_of(hit)), hit.headers
        assert hit.content == miss.content
        assert "Age" in hit.headers and int(hit.headers["Age"]) >= 0
        # The second request never reached the appliance.
        assert tunnel_requests(d) == before + 1, name
        # The source's surrogate tag stays between the appliance and the edge.
        assert "pixelport-cache-tag" not in {k.lower() for k in hit.headers}
        firsts[name] = miss
    types = {n: r.headers["Content-Type"] for n, r in firsts.items()}
    assert types == {"avif": "image/avif", "webp": "image/webp", "plain": "image/jpeg"}, types
    # Another browser's Accept string in the same class shares the entry.
    firefox = edge.get(IMAGES_HOST, PATH, headers={"Accept": "image/avif,image/webp,*/*"})
    assert status_of(firefox).startswith("pixelport-edge; hit")
    assert firefox.content == firsts["avif"].content
    body = firsts["webp"].content
    # A range is answered from the cached full object.
    part = edge.get(IMAGES_HOST, PATH, headers={"Accept": "image/webp", "Range": "bytes=10-29"})
    assert part.status_code == 206, part.headers
    assert part.content == body[10:30]
    assert part.headers["Content-Range"] == f"bytes 10-29/{len(body)}"
    bad = edge.get(IMAGES_HOST, PATH, headers={"Accept": "image/webp",
                                               "Range": f"bytes={len(body)}-"})
    assert bad.status_code == 416 and bad.headers["Content-Range"] == f"bytes */{len(body)}"
    # HEAD from the cache: the headers, no body.
    head = requests.head(edge.url(IMAGES_HOST, PATH), headers={"Accept": "image/webp"},
                         verify=str(edge.cert), timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["Content-Length"]) == len(body)
    assert status_of(head).startswith("pixelport-edge; hit")
    # A conditional request is answered by the edge.
    etag = firsts["webp"].headers["ETag"]
    before = tunnel_requests(d)
    nm = edge.get(IMAGES_HOST, PATH, headers={"Accept": "image/webp", "If-None-Match": etag})
    assert nm.status_code == 304 and nm.content == b""
    assert tunnel_requests(d) == before
    # A request with Authorization never uses the cache (the appliance may guard images
    # with a bearer secret, and a cached copy must not skip it).
    authed = edge.get(IMAGES_HOST, PATH, headers={"Accept": "image/webp",
                                                  "Authorization": "Bearer x"})
    assert status_of(authed) == "pixelport-edge; fwd=bypass"
    assert tunnel_requests(d) == before + 1
    # The edge's metrics count hits and misses.
    em = requests.get(edge.admin_url + "/metrics", timeout=10).text
    assert re.search(r'^pixelport_edge_cache_requests_total\{result="hit"\} [1-9]', em, re.M), em


def test_an_error_from_a_missing_source_is_not_cached(edge, make_daemon):
    d = image_setup(edge, make_daemon)
    path = f"/unsafe/rs:fit:50:50/plain/s3://{harness.PUBLIC_BUCKET}/missing.jpg"
    for _ in range(2):
        r = edge.get(IMAGES_HOST, path)
        assert r.status_code == 404
        assert status_of(r) == "pixelport-edge; fwd=miss"
    # Uploaded now: the very next request sees it (nothing stale was kept).
    d.client().put_object(Bucket=harness.PUBLIC_BUCKET, Key="missing.jpg",
                          Body=PHOTO.read_bytes(), ContentType="image/jpeg")
    assert edge.get(IMAGES_HOST, path).status_code == 200


def test_100_concurrent_misses_make_one_request_to_the_appliance(edge, make_daemon):
    d = image_setup(edge, make_daemon)
    # A render slow enough (AVIF, larger) that the clients arrive while it runs.
    path = f"/unsafe/rs:fit:600:400/q:70/plain/s3://{harness.PUBLIC_BUCKET}/rocket.jpg"
    n = 100
    sessions = [requests.Session() for _ in range(n)]
    cert = str(edge.cert)

    def warm(s):
        return s.get(edge.url(IMAGES_HOST, "/health"), verify=cert, timeout=30).status_code

    with ThreadPoolExecutor(n) as pool:
        list(pool.map(warm, sessions))
        before = tunnel_requests(d)
        gate = threading.Barrier(n)

        def fetch(s):
            gate.wait(timeout=30)
            r = s.get(edge.url(IMAGES_HOST, path), headers={"Accept": AVIF}, verify=cert,
                      timeout=60)
            return r.status_code, r.content, status_of(r)

        results = list(pool.map(fetch, sessions))
    assert {r[0] for r in results} == {200}
    assert len({r[1] for r in results}) == 1, "every client got the same bytes"
    statuses = [r[2] for r in results]
    # One request reached the appliance for the 100 clients.
    assert tunnel_requests(d) == before + 1, statuses
    assert statuses.count("pixelport-edge; fwd=miss; stored") == 1, statuses
    collapsed = [s for s in statuses if s.endswith("collapsed")]
    assert collapsed, statuses
    assert all(s == "pixelport-edge; fwd=miss; stored; collapsed" or "hit" in s
               for s in statuses if s != "pixelport-edge; fwd=miss; stored"), statuses


def s3_setup(edge, make_daemon):
    d = appliance(make_daemon)
    paired(edge, d, S3_HOST, door="s3")
    d.start()
    wait_connected(edge)
    s3 = d.client()
    bucket = harness.unique_name("edge")
    s3.create_bucket(Bucket=bucket)
    through = boto3.session.Session(
        aws_access_key_id=harness.ACCESS_KEY, aws_secret_access_key=harness.SECRET_KEY,
        region_name=harness.REGION,
    ).client("s3", endpoint_url=edge.url(S3_HOST, ""), verify=str(edge.cert),
             config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"))
    return d, s3, bucket, through


def test_a_leader_that_stops_reading_does_not_stall_the_requests_collapsed_on_it(
        edge, make_daemon):
    """The first request for a key (the leader) streams the appliance's body to its own
    client. A client that stops reading must not set the pace for the others: the requests
    that collapse on its fetch get the whole body at once, not when the leader's connection
    times out (the edge's idle_timeout, 20 s)."""
    d = image_setup(edge, make_daemon)
    d.client().put_object(Bucket=harness.PUBLIC_BUCKET, Key="big.jpg",
                          Body=BIG_PHOTO.read_bytes(), ContentType="image/jpeg")
    big = f"/unsafe/plain/s3://{harness.PUBLIC_BUCKET}/big.jpg@png"  # several MB
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", edge.https_port))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    leader = ctx.wrap_socket(raw, server_hostname=IMAGES_HOST)
    try:
        leader.sendall(f"GET {big} HTTP/1.1\r\nHost: {IMAGES_HOST}:{edge.https_port}\r\n"
                       "Accept: */*\r\n\r\n".encode())
        time.sleep(1)  # the leader's fetch is under way; it never reads its answer
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda _: edge.get(IMAGES_HOST, big, timeout=12), range(4)))
        for r in got:
            assert r.status_code == 200, r.text
            assert r.content[:8] == b"\x89PNG\r\n\x1a\n" and len(r.content) > 1_000_000
            assert r.content == got[0].content
        assert any("collapsed" in status_of(r) for r in got), [status_of(r) for r in got]
        # Stored whole, though the leader has still not read it.
        again = edge.get(IMAGES_HOST, big)
        assert status_of(again).startswith("pixelport-edge; hit"), again.headers
        assert again.content == got[0].content
    finally:
        leader.close()


def test_stale_entries_are_revalidated_and_a_304_refreshes_them(edge, make_daemon):
    d, s3, bucket, through = s3_setup(edge, make_daemon)
    body = b"x" * 5000
    s3.put_object(Bucket=bucket, Key="short.bin", Body=body, CacheControl="max-age=2")
    url = through.generate_presigned_url("get_object", Params={"Bucket": bucket,
                                                               "Key": "short.bin"})
    get = lambda: requests.get(url, verify=str(edge.cert), timeout=10)  # noqa: E731
    first = get()
    assert first.status_code == 200 and first.content == body
    assert status_of(first) == "pixelport-edge; fwd=miss; stored", first.headers
    assert status_of(get()).startswith("pixelport-edge; hit")
    time.sleep(2.5)
    # Stale: the edge asks the appliance with the entry's validators; the 304 refreshes it.
    before = tunnel_requests(d, "s3")
    refreshed = get()
    assert refreshed.status_code == 200 and refreshed.content == body
    assert status_of(refreshed) == "pixelport-edge; fwd=stale; fwd-status=304; stored", \
        refreshed.headers
    assert tunnel_requests(d, "s3") == before + 1
    assert status_of(get()).startswith("pixelport-edge; hit")

    # stale-while-revalidate: the stale copy is served at once, refreshed behind it.
    s3.put_object(Bucket=bucket, Key="swr.bin", Body=body,
                  CacheControl="max-age=1, stale-while-revalidate=60")
    url = through.generate_presigned_url("get_object", Params={"Bucket": bucket,
                                                               "Key": "swr.bin"})
    assert status_of(get()) == "pixelport-edge; fwd=miss; stored"
    time.sleep(2.2)
    stale = get()
    assert stale.content == body
    assert re.fullmatch(r"pixelport-edge; hit; ttl=-\d+", status_of(stale)), stale.headers
    wait_until(lambda: re.fullmatch(r"pixelport-edge; hit; ttl=\d+", status_of(get())),
               timeout=10, what="the background revalidation to refresh the entry")
    # Without Cache-Control from the origin, nothing is stored.
    s3.put_object(Bucket=bucket, Key="plain.bin", Body=body)
    url = through.generate_presigned_url("get_object", Params={"Bucket": bucket,
                                                               "Key": "plain.bin"})
    assert [status_of(get()) for _ in range(2)] == ["pixelport-edge; fwd=miss"] * 2
    # Writes and signed requests pass through.
    through.put_object(Bucket=bucket, Key="w.bin", Body=b"w")
    assert s3.get_object(Bucket=bucket, Key="w.bin")["Body"].read() == b"w"


def test_cached_entries_survive_an_edge_restart(edge, make_daemon):
    d = image_setup(edge, make_daemon)
    first = edge.get(IMAGES_HOST, PATH, headers={"Accept": "image/webp"})
    assert status_of(first) == "pixelport-edge; fwd=miss; stored"
    edge.stop()
    d.stop()
    edge.start()
    # The appliance is down: only the cache can answer.
    again = edge.get(IMAGES_HOST, PATH, headers={"Accept": "image/webp"})
    assert again.status_code == 200, again.text
    assert again.content == first.content
    assert status_of(again).startswith("pixelport-edge; hit"), again.headers
    other = edge.get(IMAGES_HOST, PATH.replace("300:200", "301:200"),
                     headers={"Accept": "image/webp"})
    assert other.status_code == 503
    assert status_of(other) == "pixelport-edge; fwd=miss"


def test_a_purge_holds_across_an_edge_restart_and_a_head_miss_stores_the_entry(
        edge, make_daemon):
    """The disk tier is a log: a purge must survive a restart (its tombstone is read back),
    or an edge restarted while its appliance is down would serve a purged variant. And a
    miss whose client asked HEAD (so never read the body) still stores the whole entry."""
    d = image_setup(edge, make_daemon)
    token = (edge.data_dir / "edge-admin-token").read_text().strip()
    kept, purged, headed = PATH, PATH.replace("300:200", "302:200"), \
        PATH.replace("300:200", "303:200")
    webp = {"Accept": "image/webp"}
    for p in (kept, purged):
        assert status_of(edge.get(IMAGES_HOST, p, headers=webp)) \
            == "pixelport-edge; fwd=miss; stored"
    head = requests.head(edge.url(IMAGES_HOST, headed), headers=webp, verify=str(edge.cert),
                         timeout=30)
    assert head.status_code == 200 and head.content == b""
    assert status_of(head) == "pixelport-edge; fwd=miss; stored"
    full = wait_until(lambda: (lambda r: r if status_of(r).startswith("pixelport-edge; hit")
                               else None)(edge.get(IMAGES_HOST, headed, headers=webp)),
                      10, what="the HEAD miss's entry")
    assert full.content[:4] == b"RIFF"
    assert len(full.content) == int(head.headers["Content-Length"])
    r = requests.post(edge.admin_url + "/api/purge", timeout=10,
                      headers={"Authorization": f"Bearer {token}"},
                      json={"by": "url", "host": IMAGES_HOST, "path": purged})
    assert r.json() == {"removed": 1}, r.text
    edge.stop()
    d.stop()
    edge.start()
    # The appliance is down: what the cache holds is all there is.
    assert status_of(edge.get(IMAGES_HOST, kept, headers=webp)).startswith("pixelport-edge; hit")
    assert status_of(edge.get(IMAGES_HOST, headed, headers=webp)).startswith(
        "pixelport-edge; hit")
    gone = edge.get(IMAGES_HOST, purged, headers=webp)
    assert gone.status_code == 503, (gone.status_code, gone.headers)
    assert status_of(gone) == "pixelport-edge; fwd=miss"


def test_the_admin_door_is_never_cached(edge, make_daemon):
    urllib3.disable_warnings()
    d = appliance(make_daemon)
    paired(edge, d, "admin.example", door="admin")
    d.start()
    wait_connected(edge)
    for _ in range(2):
        r = requests.get(f"https://127.0.0.1:{edge.https_port}/health",
                         headers={"Host": "admin.example"}, verify=False, timeout=10)
        assert r.status_code == 200, r.text
        assert status_of(r) == "pixelport-edge; fwd=bypass"
    assert tunnel_requests(d, "admin") == 2


OTHER = harness.REPO_ROOT.parent / "shared" / "images" / "coffee-600x400.png"


def overwrite_with_aws_cli(d, tmp_path):
    src = tmp_path / "rocket.jpg"
    src.write_bytes(OTHER.read_bytes())
    harness.AwsCli(d.endpoint)("s3", "cp", str(src), f"s3://{harness.PUBLIC_BUCKET}/rocket.jpg")


@pytest.mark.parametrize("transport", ["quic", "tcp"])
def test_an_overwrite_is_purged_at_the_edge_before_the_write_returns(
        edge, make_daemon, tmp_path, transport):
    # Before purges followed the data, the edge kept serving the old variant for the
    # image's max-age (a year by default) after `aws s3 cp` replaced the original.
    d = image_setup(edge, make_daemon, extra=f'transport = "{transport}"\n')
    old = edge.get(IMAGES_HOST, PATH, headers={"Accept": "image/webp"})
    assert status_of(old) == "pixelport-edge; fwd=miss; stored"
    assert status_of(edge.get(IMAGES_HOST, PATH, headers={"Accept": "image/webp"})) \
        .startswith("pixelport-edge; hit")
    overwrite_with_aws_cli(d, tmp_path)
    # The very next request through the edge gets the new variant.
    new = edge.get(IMAGES_HOST, PATH, headers={"Accept": "image/webp"})
    assert new.status_code == 200
    assert new.content != old.content
    assert status_of(new) == "pixelport-edge; fwd=miss; stored", new.headers
    # A delete purges too: the edge does not answer for an object that is gone.
    d.client().delete_object(Bucket=harness.PUBLIC_BUCKET, Key="rocket.jpg")
    gone = edge.get(IMAGES_HOST, PATH, headers={"Accept": "image/webp"})
    assert gone.status_code == 404, gone.headers
    em = requests.get(edge.admin_url + "/metrics", timeout=10).text
    assert re.search(r"^pixelport_edge_cache_purged_total [1-9]", em, re.M), em


def test_a_write_while_the_edge_is_down_is_purged_when_it_reconnects(
        edge, make_daemon, tmp_path):
    d = image_setup(edge, make_daemon)
    old = edge.get(IMAGES_HOST, PATH, headers={"Accept": "image/webp"})
    assert status_of(old) == "pixelport-edge; fwd=miss; stored"
    edge.stop()
    overwrite_with_aws_cli(d, tmp_path)  # no edge to tell: queued
    edge.start()
    wait_connected(edge)
    new = edge.get(IMAGES_HOST, PATH, headers={"Accept": "image/webp"})
    assert new.status_code == 200
    assert new.content != old.content, new.headers
    assert "hit" not in status_of(new)
    assert status_of(edge.get(IMAGES_HOST, PATH, headers={"Accept": "image/webp"})) \
        .startswith("pixelport-edge; hit")


def test_an_appliance_restarted_after_a_crash_makes_the_edge_flush_its_hostnames(
        edge, make_daemon, tmp_path):
    d = image_setup(edge, make_daemon)
    first = edge.get(IMAGES_HOST, PATH, headers={"Accept": "image/webp"})
    assert status_of(first) == "pixelport-edge; fwd=miss; stored"
    # A clean restart keeps the edge's entries: every purge was delivered.
    d.stop()
    d.start()
    wait_connected(edge)
    wait_until(lambda: status_of(edge.get(IMAGES_HOST, PATH, headers={"Accept": "image/webp"}))
               .startswith("pixelport-edge; hit"), what="a hit after a clean restart")
    # A crash may have lost purges it had not delivered: the edge drops what it holds.
    d.kill9()
    d.start()
    wait_connected(edge)
    em = lambda: requests.get(edge.admin_url + "/metrics", timeout=10).text  # noqa: E731
    wait_until(lambda: re.search(r"^pixelport_edge_cache_entries 0$", em(), re.M),
               what="the edge to flush the crashed appliance's entries")


def test_two_appliance_nodes_on_one_s3_server_see_each_others_writes(
        edge, make_daemon, tmp_path):
    # Each node remembers a source's version for source_revalidate (an hour here): without
    # the edge relaying node A's purge, node B would serve the old variant that long.
    cache = '[cache]\nsource_revalidate = "1h"\n'
    a = appliance(make_daemon, backend="remote", images_config=NEGOTIATE,
                  extra='node = "node-a"\n' + cache)
    b = appliance(make_daemon, backend="remote", images_config=NEGOTIATE,
                  extra='node = "node-b"\n' + cache)
    # One S3 server process behind both nodes.
    a.cluster = harness.S3sFs(a.cluster_root, a.base, harness.CLUSTER_ACCESS_KEY,
                              harness.CLUSTER_SECRET_KEY, name="cluster-s3s-fs").start()
    b.cluster = a.cluster
    paired(edge, a, IMAGES_HOST)
    paired(edge, b, IMAGES_HOST)
    a.start()
    b.start()
    upload_photo(a)
    wait_until(lambda: edge.ready()[1]["appliance_connections"] == 4,
               what="both nodes connected")
    direct_b = lambda: requests.get(b.images_url + PATH,  # noqa: E731
                                    headers={"Accept": "image/webp"}, timeout=30)
    old = direct_b()
    assert old.status_code == 200
    assert direct_b().headers.get("X-Cache") == "HIT"
    through = edge.get(IMAGES_HOST, PATH, headers={"Accept": "image/webp"})
    assert through.content == old.content
    overwrite_with_aws_cli(a, tmp_path)
    # Node B's own listener, at once: the edge relayed node A's purge to it.
    new_b = direct_b()
    assert new_b.content != old.content, new_b.headers
    new_edge = edge.get(IMAGES_HOST, PATH, headers={"Accept": "image/webp"})
    assert new_edge.content == new_b.content


def test_the_edge_purge_api_and_the_appliances_view_of_the_edge(edge, make_daemon):
    d = image_setup(edge, make_daemon)
    token = (edge.data_dir / "edge-admin-token").read_text().strip()
    assert oct((edge.data_dir / "edge-admin-token").stat().st_mode & 0o777) == "0o600"
    api = lambda method, path, **kw: requests.request(  # noqa: E731
        method, edge.admin_url + path, headers={"Authorization": f"Bearer {token}"},
        timeout=10, **kw)
    paths = [PATH, PATH.replace("300:200", "310:200"), PATH.replace("300:200", "320:200")]
    for p in paths:
        for accept in ("image/webp", "*/*"):
            edge.get(IMAGES_HOST, p, headers={"Accept": accept})
    assert api("GET", "/api/cache").json()["entries"] == 6
    # No token, a wrong one, a bad body: refused, saying why.
    assert requests.get(edge.admin_url + "/api/cache", timeout=10).status_code == 401
    assert requests.post(edge.admin_url + "/api/purge", json={"by": "all"}, timeout=10,
                         headers={"Authorization": "Bearer nope"}).status_code == 401
    bad = api("POST", "/api/purge", json={"by": "everything"})
    assert bad.status_code == 400 and "selector" in bad.json()["error"], bad.text
    # By URL: every Accept class of that URL.
    r = api("POST", "/api/purge", json={"by": "url", "host": IMAGES_HOST, "path": paths[0]})
    assert r.json() == {"removed": 2}
    assert status_of(edge.get(IMAGES_HOST, paths[0], headers={"Accept": "image/webp"})) \
        == "pixelport-edge; fwd=miss; stored"
    # By prefix, by tag, by hostname, everything.
    r = api("POST", "/api/purge", json={"by": "prefix", "prefix": "/unsafe/rs:fit:310"})
    assert r.json() == {"removed": 2}
    r = api("POST", "/api/purge", json={"by": "tag",
                                        "tag": f"s3://{harness.PUBLIC_BUCKET}/rocket.jpg"})
    assert r.json() == {"removed": 3}
    edge.get(IMAGES_HOST, paths[0])
    assert api("POST", "/api/purge", json={"by": "host", "host": "other.example"}).json() \
        == {"removed": 0}
    assert api("POST", "/api/purge", json={"by": "host", "host": IMAGES_HOST}).json() \
        == {"removed": 1}
    edge.get(IMAGES_HOST, paths[0])
    assert api("POST", "/api/purge", json={"by": "all"}).json() == {"removed": 1}
    # The appliance's admin API (and its UI's cache page) shows the edge's cache.
    edge.get(IMAGES_HOST, paths[0])
    edge.get(IMAGES_HOST, paths[0])
    admin = {"Authorization": "Bearer " + (d.data_dir / "admin-token").read_text().strip()}

    def edge_view():
        edges = requests.get(d.admin_url + "/api/cache", headers=admin, timeout=10).json()["edges"]
        return edges and edges[0]["entries"] == 1 and edges[0]["hits"] >= 1 and edges

    edges = wait_until(edge_view, timeout=10, what="the edge's cache report")
    assert edges[0]["edge"].startswith("edge-") and 0 < edges[0]["hit_ratio"] <= 1
    # The admin's purge reaches the edge before it returns.
    r = requests.post(d.admin_url + "/api/cache/purge", headers=admin, json={"all": True},
                      timeout=10)
    assert r.status_code == 200, r.text
    assert api("GET", "/api/cache").json()["entries"] == 0


PROTECTION = """
[edge.protection]
per_client_rate = 1
per_client_burst = 40
max_clients = 1000
deny_cidrs = ["203.0.113.0/24"]
deny_paths = ["/wp-admin*", "*.php"]
max_url_length = 600
allowed_methods = { "localhost" = ["GET", "HEAD"] }
signed_only = true
trusted_proxies = ["127.0.0.1/32"]
"""


def refused_count(edge, rule: str) -> float:
    em = requests.get(edge.admin_url + "/metrics", timeout=10).text
    m = re.search(rf'^pixelport_edge_refused_total{{rule="{rule}"}} (\S+)$', em, re.M)
    return float(m.group(1)) if m else 0.0


def test_protection_rules_and_per_client_limits(tmp_path, make_daemon):
    e = Edge(tmp_path / "edge", extra=PROTECTION).start()
    try:
        d = appliance(make_daemon, legacy_unsigned=True)
        paired(e, d, IMAGES_HOST)
        d.start()
        upload_photo(d)
        wait_connected(e)
        s = requests.Session()
        get = lambda path, ip, **kw: s.get(  # noqa: E731
            e.url(IMAGES_HOST, path), verify=str(e.cert), timeout=10,
            headers={"X-Forwarded-For": ip, **kw.pop("headers", {})}, **kw)
        # Rules: each refused with its status and a JSON body naming the problem.
        r = get("/x/y", "203.0.113.5")
        assert r.status_code == 403 and "network" in r.json()["error"], r.text
        assert get("/wp-admin/setup", "198.51.100.1").status_code == 403
        assert get("/a/b/index.php", "198.51.100.1").status_code == 403
        assert get("/" + "a" * 700, "198.51.100.1").status_code == 414
        r = s.post(e.url(IMAGES_HOST, "/x"), verify=str(e.cert), timeout=10,
                   headers={"X-Forwarded-For": "198.51.100.1"})
        assert r.status_code == 405
        unsigned = get(PATH, "198.51.100.1")
        assert unsigned.status_code == 403 and "signed" in unsigned.json()["error"]
        for rule in ("cidr", "path", "url_length", "method", "unsigned"):
            assert refused_count(e, rule) >= 1, rule
        # A burst from one client gets 429s with Retry-After; another client is unaffected.
        signed = "/sig-" + PATH.removeprefix("/unsafe")  # refused by the appliance, not here
        codes = [get(signed, "198.51.100.7").status_code for _ in range(1000)]
        limited = codes.count(429)
        assert limited >= 900, codes[:60]
        assert 429 not in codes[:40]
        r = get(signed, "198.51.100.7")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        other = get(signed, "198.51.100.8")
        assert other.status_code != 429, other.text
        # An IPv6 client's /64 is one client.
        v6 = [get(signed, f"2001:db8:1:2::{i:x}").status_code for i in range(1, 200)]
        assert v6.count(429) >= 100
        assert refused_count(e, "client_rate") >= limited
    finally:
        e.stop()


def test_the_client_key_cap_holds_under_100000_addresses(tmp_path, make_daemon):
    e = Edge(tmp_path / "edge", extra=PROTECTION).start()
    try:
        d = appliance(make_daemon)
        paired(e, d, IMAGES_HOST)
        d.start()
        wait_connected(e)
        # wrk sends 100,000 requests, each claiming another source address through the
        # trusted forwarding header.
        script = tmp_path / "addresses.lua"
        script.write_text("""
counter = 0
init = function(args)
  counter = tonumber(args[1])
end
request = function()
  counter = counter + 1
  local ip = string.format("10.%d.%d.%d", math.floor(counter / 65536) % 256,
                           math.floor(counter / 256) % 256, counter % 256)
  return wrk.format("GET", "/health", {["X-Forwarded-For"] = ip})
end
""")
        done = 0
        deadline = time.monotonic() + 120
        while done < 100_000 and time.monotonic() < deadline:
            out = subprocess.run(
                ["wrk", "-t1", "-c32", "-d3s", "-s", str(script), e.url(IMAGES_HOST, "/"),
                 "--", str(done)],
                capture_output=True, text=True, timeout=60)
            m = re.search(r"(\d+) requests in", out.stdout)
            assert m, out.stdout + out.stderr
            done += int(m.group(1))
        assert done >= 100_000, done
        em = requests.get(e.admin_url + "/metrics", timeout=10).text
        keys = float(re.search(r"^pixelport_edge_rate_limit_clients (\S+)$", em, re.M).group(1))
        assert 0 < keys <= 1000, keys
        assert e.alive()
    finally:
        e.stop()


def test_text_is_compressed_at_the_edge_and_images_never_are(edge, make_daemon):
    import brotli
    import gzip
    urllib3.disable_warnings()
    d = appliance(make_daemon, images_config=NEGOTIATE)
    paired(edge, d, IMAGES_HOST)
    paired(edge, d, "admin.example", door="admin")
    paired(edge, d, S3_HOST, door="s3")
    d.start()
    upload_photo(d)
    wait_connected(edge)
    # The admin UI's JavaScript through the edge (admin door: never cached): Brotli.
    direct = requests.get(d.admin_url + "/ui/app.js", timeout=10)
    assert direct.status_code == 200 and len(direct.content) > 1000
    r = requests.get(f"https://127.0.0.1:{edge.https_port}/ui/app.js", verify=False, timeout=10,
                     headers={"Host": "admin.example", "Accept-Encoding": "gzip, br"},
                     stream=True)
    raw = r.raw.read(decode_content=False)
    assert r.headers["Content-Encoding"] == "br", r.headers
    assert "Accept-Encoding" in r.headers["Vary"]
    assert brotli.decompress(raw) == direct.content
    assert len(raw) < len(direct.content) / 2
    r = requests.get(f"https://127.0.0.1:{edge.https_port}/ui/app.js", verify=False, timeout=10,
                     headers={"Host": "admin.example", "Accept-Encoding": "gzip"}, stream=True)
    assert r.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(r.raw.read(decode_content=False)) == direct.content
    # Images are never recompressed.
    img = edge.get(IMAGES_HOST, PATH, headers={"Accept": "image/webp",
                                               "Accept-Encoding": "br, gzip"}, stream=True)
    assert "Content-Encoding" not in img.headers
    # A cached text object: each encoding becomes its own stored variant.
    s3 = d.client()
    bucket = harness.unique_name("css")
    s3.create_bucket(Bucket=bucket)
    css = b".pixelport { color: #333; margin: 0 auto; }\n" * 300
    s3.put_object(Bucket=bucket, Key="site.css", Body=css, ContentType="text/css",
                  CacheControl="public, max-age=600")
    through = boto3.session.Session(
        aws_access_key_id=harness.ACCESS_KEY, aws_secret_access_key=harness.SECRET_KEY,
        region_name=harness.REGION,
    ).client("s3", endpoint_url=edge.url(S3_HOST, ""), verify=str(edge.cert),
             config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"))
    url = through.generate_presigned_url("get_object", Params={"Bucket": bucket,
                                                               "Key": "site.css"})
    entries = lambda: float(re.search(  # noqa: E731
        r"^pixelport_edge_cache_entries (\S+)$",
        requests.get(edge.admin_url + "/metrics", timeout=10).text, re.M).group(1))
    before = entries()
    first = requests.get(url, verify=str(edge.cert), timeout=10,
                         headers={"Accept-Encoding": "identity"})
    assert first.content == css and status_of(first) == "pixelport-edge; fwd=miss; stored"
    for _ in range(2):
        hit = requests.get(url, verify=str(edge.cert), timeout=10,
                           headers={"Accept-Encoding": "br"}, stream=True)
        assert status_of(hit).startswith("pixelport-edge; hit")
        assert hit.headers["Content-Encoding"] == "br"
        assert brotli.decompress(hit.raw.read(decode_content=False)) == css
    assert entries() == before + 2, "the identity entry and its Brotli variant"


def test_the_admin_ui_cache_page_shows_and_purges_the_edge(edge, make_daemon, tmp_path):
    # In headless Chromium (tests/browser/ui.mjs, phase "edges").
    from test_admin_ui import _read_secret, run_node
    d = image_setup(edge, make_daemon)
    token = (edge.data_dir / "edge-admin-token").read_text().strip()
    edge_entries = lambda: requests.get(  # noqa: E731
        edge.admin_url + "/api/cache", headers={"Authorization": f"Bearer {token}"},
        timeout=10).json()["entries"]
    # The appliance sends each purge on each of its two links; the upload's purge can land
    # on the second link after the first GET stored the variant (one extra miss, never a
    # stale answer), so fill until the entry stays.
    wait_until(lambda: edge.get(IMAGES_HOST, PATH, headers={"Accept": "image/webp"})
               .status_code == 200 and edge_entries() == 1,
               timeout=10, what="the edge holding the variant")
    admin = {"Authorization": "Bearer " + (d.data_dir / "admin-token").read_text().strip()}
    wait_until(lambda: [e["entries"] for e in requests.get(
        d.admin_url + "/api/cache", headers=admin, timeout=10).json()["edges"]] == [1],
        timeout=10, what="the edge's first report (every 2 s)")
    password = _read_secret(d.data_dir / "admin-password")
    cp, data = run_node("edges", d, password, tmp_path / "edges.json",
                        PIXELPORT_BUCKET="unused", PIXELPORT_PREP_BUCKET="unused")
    assert cp.returncode == 0, f"{cp.stdout}\n{cp.stderr}"
    assert data["steps"]["the cache page shows the edge"]["ok"]
    assert data["edge_row"]["entries"] == "1", data["edge_row"]
    assert data["steps"]["purge everything empties the edge too"]["ok"]
    assert edge_entries() == 0
