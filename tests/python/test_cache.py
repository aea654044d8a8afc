"""The derivative cache against the real daemon: variants are processed once and then served
from the cache, equivalent URLs share an entry, writes through the S3 API (boto3 and the aws
cli) invalidate at once, entries survive a restart, a corrupt cache file does not stop the
daemon, the size bound holds, a cache that cannot be written only costs caching, and eager
presets are rendered right after uploads. Processing runs are read from
`pixelport_images_processed_total` on /metrics."""

from __future__ import annotations

import concurrent.futures
import io
import signal
import sys
import time

import pytest
import requests
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

import harness

pytestmark = pytest.mark.pixelport_only

IMAGES = harness.REPO_ROOT.parent / "shared" / "images"


def metric(d, name: str) -> float:
    text = requests.get(f"{d.admin_url}/metrics", timeout=10).text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and not s.labels:
                return s.value
    raise AssertionError(f"{name} not in /metrics")


def labeled(d, name: str, **labels) -> float:
    """The value of one labelled sample (0 when it is absent)."""
    text = requests.get(f"{d.admin_url}/metrics", timeout=10).text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


def get(d, path: str, **kw) -> requests.Response:
    return requests.get(d.images_url + path, timeout=60, **kw)


@pytest.fixture
def cached(make_daemon):
    d = make_daemon()
    s3 = d.client()
    s3.create_bucket(Bucket="cached")
    s3.put_object(Bucket="cached", Key="r.jpg", Body=(IMAGES / "rocket-640x427.jpg").read_bytes())
    return d, s3


def test_miss_then_hit_with_identical_bytes_and_headers(cached):
    d, _ = cached
    path = "/unsafe/rs:fit:200:200/plain/s3://cached/r.jpg@webp"
    first = get(d, path)
    assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
    assert "fwd=miss" in first.headers["cache-status"]
    second = get(d, path)
    assert second.status_code == 200 and second.headers["x-cache"] == "HIT"
    assert second.headers["cache-status"] == "pixelport; hit"
    assert second.content == first.content
    for h in ("content-type", "content-length", "etag", "last-modified", "cache-control",
              "content-disposition"):
        assert second.headers[h] == first.headers[h], h
    assert metric(d, "pixelport_images_processed_total") == 1
    assert metric(d, "pixelport_cache_hits_total") == 1
    assert metric(d, "pixelport_cache_misses_total") == 1
    assert metric(d, "pixelport_cache_entries") == 1
    # HEAD and If-None-Match answer from the validator without a body.
    r = get(d, path, headers={"If-None-Match": first.headers["etag"]})
    assert r.status_code == 304 and r.content == b""


def test_equivalent_urls_share_one_entry(cached):
    d, _ = cached
    a = get(d, "/unsafe/rs:fit:150:150/q:70/plain/s3://cached/r.jpg@jpg")
    b = get(d, "/unsafe/quality:70/resize:fit:150:150:0/plain/s3://cached/r.jpg@jpeg")
    assert (a.headers["x-cache"], b.headers["x-cache"]) == ("MISS", "HIT")
    assert a.content == b.content
    assert metric(d, "pixelport_images_processed_total") == 1


def test_concurrent_identical_misses_process_once(cached):
    d, _ = cached
    path = "/unsafe/rs:fill:321:123/bl:2/plain/s3://cached/r.jpg@png"
    with concurrent.futures.ThreadPoolExecutor(50) as ex:
        answers = list(ex.map(lambda _: get(d, path), range(50)))
    assert all(r.status_code == 200 for r in answers), [r.status_code for r in answers]
    assert len({r.content for r in answers}) == 1
    assert metric(d, "pixelport_images_processed_total") == 1


def test_overwrite_and_delete_invalidate_at_once(cached, tmp_path):
    d, s3 = cached
    path = "/unsafe/rs:fit:100:100/plain/s3://cached/r.jpg@png"
    before = Image.open(io.BytesIO(get(d, path).content))
    assert get(d, path).headers["x-cache"] == "HIT"
    # Overwrite with another photo through the aws cli: the next fetch is the new image.
    new = tmp_path / "new.png"
    new.write_bytes((IMAGES / "chelsea-451x300.png").read_bytes())
    aws = harness.AwsCli(d.endpoint)
    aws("s3", "cp", str(new), "s3://cached/r.jpg")
    after = get(d, path)
    assert after.status_code == 200 and after.headers["x-cache"] == "MISS"
    img = Image.open(io.BytesIO(after.content))
    assert img.size == (100, 67) and before.size == (100, 67)
    assert img.tobytes() != before.tobytes()
    # Copy onto the key, then delete it.
    s3.copy_object(Bucket="cached", Key="r.jpg", CopySource={"Bucket": "cached", "Key": "r.jpg"},
                   MetadataDirective="REPLACE", ContentType="image/png")
    assert get(d, path).headers["x-cache"] == "MISS"
    s3.delete_object(Bucket="cached", Key="r.jpg")
    assert get(d, path).status_code == 404
    assert metric(d, "pixelport_cache_entries") == 0


def test_repeated_hits_follow_accept_purges_and_expiry(make_daemon):
    """Repeated requests for a path are answered from what it resolved to the first time (the
    fast path of a hit). Guards: the `Accept` class still picks the variant, a purge or an
    overwrite is seen at once, and an `expires` URL still expires after it was a hit."""
    token = "cache-test-admin-token-0123456789"
    d = make_daemon(images_config="auto_avif = true\nauto_webp = true\n",
                    admin_config=f'token = "{token}"\n')
    s3 = d.client()
    s3.create_bucket(Bucket="fast")
    s3.put_object(Bucket="fast", Key="r.jpg", Body=(IMAGES / "rocket-640x427.jpg").read_bytes())
    path = "/unsafe/rs:fit:120:120/plain/s3://fast/r.jpg"
    classes = {"image/avif,image/webp,*/*": "image/avif", "image/webp,*/*": "image/webp",
               "image/*": "image/jpeg"}
    first = {}
    for round_ in range(3):
        for accept, ctype in classes.items():
            r = get(d, path, headers={"Accept": accept})
            assert r.status_code == 200 and r.headers["content-type"] == ctype, (accept, r.text)
            assert r.headers["x-cache"] == ("MISS" if round_ == 0 else "HIT"), (round_, accept)
            assert r.headers["vary"] == "Accept"
            if round_ == 0:
                first[accept] = r
            else:
                assert r.content == first[accept].content
                for h in ("etag", "last-modified", "cache-control", "content-disposition",
                          "content-length"):
                    assert r.headers[h] == first[accept].headers[h], h
                assert r.headers["x-request-id"] != first[accept].headers["x-request-id"]
    assert metric(d, "pixelport_images_processed_total") == 3
    assert metric(d, "pixelport_cache_hits_total") == 6
    assert metric(d, "pixelport_cache_misses_total") == 3
    webp = "image/webp,*/*"
    r = get(d, path, headers={"Accept": webp, "If-None-Match": first[webp].headers["etag"]})
    assert r.status_code == 304 and r.content == b""
    head = requests.head(d.images_url + path, headers={"Accept": webp}, timeout=30)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == first[webp].headers["content-length"]

    # A purge through the admin API: the next request renders again.
    purge = requests.post(f"{d.admin_url}/api/cache/purge", json={"bucket": "fast", "key": "r.jpg"},
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert purge.status_code == 200 and purge.json()["removed"] == 3, purge.text
    r = get(d, path, headers={"Accept": webp})
    assert r.headers["x-cache"] == "MISS" and r.content == first[webp].content
    assert get(d, path, headers={"Accept": webp}).headers["x-cache"] == "HIT"
    # An overwrite: the new image at once, then hits of it.
    s3.put_object(Bucket="fast", Key="r.jpg", Body=(IMAGES / "chelsea-451x300.png").read_bytes())
    for expected in ("MISS", "HIT"):
        r = get(d, path, headers={"Accept": webp})
        assert r.headers["x-cache"] == expected
        assert Image.open(io.BytesIO(r.content)).size == (120, 80)
        assert r.content != first[webp].content

    # An `expires` URL that was a hit is refused once its time has passed.
    exp = int(time.time()) + 2
    timed = f"/unsafe/exp:{exp}/rs:fit:60:60/plain/s3://fast/r.jpg@png"
    assert [get(d, timed).headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
    time.sleep(max(0.0, exp - time.time()) + 1.1)
    r = get(d, timed)
    assert r.status_code == 404 and "expired" in r.json()["message"], r.text


def test_remote_changes_behind_pixelports_back_are_seen_after_revalidate(make_daemon):
    """With the remote store, an object changed on the cluster directly (not through
    Pixelport) is seen once `source_revalidate` has passed: the next request is a miss with
    the new image, and the old variant is not served again."""
    d = make_daemon(backend="remote", extra_config='[cache]\nsource_revalidate = "1s"\n')
    s3 = d.client()
    s3.create_bucket(Bucket="behind")
    s3.put_object(Bucket="behind", Key="r.jpg", Body=(IMAGES / "rocket-640x427.jpg").read_bytes())
    path = "/unsafe/rs:fit:100:100/plain/s3://behind/r.jpg@png"
    old = [get(d, path) for _ in range(3)]
    assert [r.headers["x-cache"] for r in old] == ["MISS", "HIT", "HIT"]
    assert Image.open(io.BytesIO(old[0].content)).size == (100, 67)
    # Overwrite the object's bytes on the cluster itself, under the key Pixelport uses there.
    cluster = d.cluster_client()
    stored = [o["Key"] for o in cluster.list_objects_v2(Bucket=harness.CLUSTER_BUCKET)
              .get("Contents", []) if o["Key"].endswith("r.jpg")]
    assert len(stored) == 1, stored
    cluster.put_object(Bucket=harness.CLUSTER_BUCKET, Key=stored[0],
                       Body=(IMAGES / "chelsea-451x300.png").read_bytes())
    time.sleep(1.5)
    new = get(d, path)
    assert new.status_code == 200 and new.headers["x-cache"] == "MISS", new.text
    assert Image.open(io.BytesIO(new.content)).size == (100, 67)
    assert new.content != old[0].content
    assert new.headers["etag"] != old[0].headers["etag"]
    again = get(d, path)
    assert again.headers["x-cache"] == "HIT" and again.content == new.content


def test_entries_survive_a_restart(cached):
    d, _ = cached
    path = "/unsafe/w:90/plain/s3://cached/r.jpg@webp"
    first = get(d, path)
    assert d.stop() == 0
    d.restart()
    again = get(d, path)
    assert again.headers["x-cache"] == "HIT"
    assert again.content == first.content


def test_a_corrupt_cache_file_is_moved_aside(cached):
    d, _ = cached
    get(d, "/unsafe/w:80/plain/s3://cached/r.jpg@webp")
    assert d.stop() == 0
    cache_file = d.data_dir / "cache.redb"
    data = bytearray(cache_file.read_bytes())
    data[: 4096] = b"\xde\xad\xbe\xef" * 1024
    cache_file.write_bytes(bytes(data))
    d.start()
    r = get(d, "/unsafe/w:80/plain/s3://cached/r.jpg@webp")
    assert r.status_code == 200 and r.headers["x-cache"] == "MISS"
    assert any(p.name.startswith("cache.redb.corrupt-") for p in d.data_dir.iterdir())
    assert "corrupt" in d.logs().lower() or "moved aside" in d.logs().lower()


def test_eviction_keeps_the_bound_and_recent_entries(make_daemon):
    d = make_daemon(extra_config='[cache]\nmax_size = "100KiB"\n')
    s3 = d.client()
    s3.create_bucket(Bucket="evict")
    s3.put_object(Bucket="evict", Key="c.png", Body=(IMAGES / "chelsea-451x300.png").read_bytes())
    hot = "/unsafe/w:300/plain/s3://evict/c.png@webp"
    get(d, hot)
    for w in range(200, 240):
        get(d, f"/unsafe/w:{w}/plain/s3://evict/c.png@webp")
        assert get(d, hot).headers["x-cache"] == "HIT"  # kept: read after every insert
    assert metric(d, "pixelport_cache_bytes") <= 100 * 1024
    assert metric(d, "pixelport_cache_evictions_total") > 0


def test_cache_can_be_switched_off(make_daemon):
    d = make_daemon(extra_config="[cache]\nenabled = false\n")
    s3 = d.client()
    s3.create_bucket(Bucket="nocache")
    s3.put_object(Bucket="nocache", Key="r.jpg", Body=(IMAGES / "rocket-640x427.jpg").read_bytes())
    for _ in range(2):
        r = get(d, "/unsafe/w:50/plain/s3://nocache/r.jpg")
        assert r.status_code == 200 and "x-cache" not in r.headers
    assert metric(d, "pixelport_images_processed_total") == 2


def test_ready_reports_the_cache(cached, make_daemon):
    d, _ = cached
    r = requests.get(f"{d.admin_url}/ready", timeout=10)
    assert r.status_code == 200 and r.json()["cache"] == "enabled"
    off = make_daemon(extra_config="[cache]\nenabled = false\n")
    r = requests.get(f"{off.admin_url}/ready", timeout=10)
    assert r.status_code == 200 and r.json()["cache"] == "disabled"


# -- a cache that cannot be written -------------------------------------------------------

FSIZE_LIMIT = 2 * 1024 * 1024


def _small_files_only():
    """In the daemon's child process before exec: no file may grow past FSIZE_LIMIT (writes
    past it fail with EFBIG, as on a full disk), and SIGXFSZ is ignored (kept across exec)."""
    import resource
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs RLIMIT_FSIZE/EFBIG")
def test_failed_cache_writes_serve_uncached_and_warn_once(make_daemon):
    """Guards: a failed cache write must not fail the request, and must not log once per
    request. Every variant here is larger than the file size limit the daemon runs under,
    so every cache write fails with EFBIG (what a full disk looks like to redb)."""
    d = make_daemon(preexec_fn=_small_files_only)
    s3 = d.client()
    s3.create_bucket(Bucket="fullcache")
    s3.put_object(Bucket="fullcache", Key="w.jpg", Body=(IMAGES / "wood-2560x1920.jpg").read_bytes())
    paths = [f"/unsafe/rs:fit:{w}:{w}/q:100/plain/s3://fullcache/w.jpg@png" for w in (2000, 1990, 1980)]
    for p in paths:
        r = get(d, p)
        assert r.status_code == 200, r.text
        assert len(r.content) > FSIZE_LIMIT, "the variant must not fit under the limit"
        assert Image.open(io.BytesIO(r.content)).size[0] in (2000, 1990, 1980)
        assert r.headers["x-cache"] == "MISS"
    # Not stored: asked again, each is processed again.
    again = get(d, paths[0])
    assert again.status_code == 200 and again.headers["x-cache"] == "MISS"
    assert metric(d, "pixelport_images_processed_total") == 4
    assert metric(d, "pixelport_cache_write_failures_total") == 4
    warnings = [l for l in d.logs().splitlines() if "cannot store a variant in the cache" in l]
    assert len(warnings) == 1, warnings
    # Small variants still work (and, as redb may refuse everything after a failed write,
    # are at least served).
    r = get(d, "/unsafe/w:64/plain/s3://fullcache/w.jpg@webp")
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size[0] == 64


# -- eager presets ---------------------------------------------------------------------------

EAGER = """
[[images.presets]]
name = "thumb"
options = "rs:fit:120:120"
eager = true
bucket = "eager-photos"
prefix = "up/"
"""


@pytest.fixture
def eager(make_daemon):
    d = make_daemon(extra_config=EAGER)
    s3 = d.client()
    for b in ("eager-photos", "eager-other"):
        s3.create_bucket(Bucket=b)
    return d, s3


def wait_eager(d, result: str, at_least: float, timeout: float = 10.0) -> float:
    """Polls pixelport_eager_renders_total{result} until it reaches `at_least`."""
    deadline = time.monotonic() + timeout
    while True:
        v = labeled(d, "pixelport_eager_renders_total", result=result)
        if v >= at_least:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(
                f"eager renders {result} = {v}, expected >= {at_least} within {timeout}s\n"
                + d.logs()[-3000:])
        time.sleep(0.1)


def thumb(d, key: str, form: str = "pr:thumb") -> requests.Response:
    return get(d, f"/unsafe/{form}/plain/s3://eager-photos/{key}")


def size_of(r: requests.Response) -> tuple[int, int]:
    return Image.open(io.BytesIO(r.content)).size


def test_eager_preset_is_a_hit_after_an_aws_cli_upload(eager, tmp_path):
    d, _ = eager
    aws = harness.AwsCli(d.endpoint)
    photo = IMAGES / "rocket-640x427.jpg"
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n" * 1000)
    # Outside the filters first (another prefix, another bucket), then a non-image inside
    # them, then the photo: by the time the photo is rendered the others were seen.
    aws("s3", "cp", str(photo), "s3://eager-photos/elsewhere/r.jpg")
    aws("s3", "cp", str(photo), "s3://eager-other/up/r.jpg")
    aws("s3", "cp", str(notes), "s3://eager-photos/up/notes.txt")
    aws("s3", "cp", str(photo), "s3://eager-photos/up/r.jpg")
    wait_eager(d, "ok", 1)
    wait_eager(d, "skipped", 1)
    r = thumb(d, "up/r.jpg")
    assert r.status_code == 200 and r.headers["x-cache"] == "HIT", r.headers
    assert size_of(r) == (120, 80)
    assert thumb(d, "up/r.jpg", "preset:thumb").headers["x-cache"] == "HIT"
    assert thumb(d, "up/r.jpg", "rs:fit:120:120").headers["x-cache"] == "HIT"
    # One render per negotiated format: AVIF, WebP and the source's JPEG.
    assert metric(d, "pixelport_images_processed_total") == 3
    # Nothing else was rendered: the uploads outside the filters are misses.
    assert thumb(d, "elsewhere/r.jpg").headers["x-cache"] == "MISS"
    other = get(d, "/unsafe/pr:thumb/plain/s3://eager-other/up/r.jpg")
    assert other.status_code == 200 and other.headers["x-cache"] == "MISS"
    assert labeled(d, "pixelport_eager_renders_total", result="ok") == 1
    assert labeled(d, "pixelport_eager_renders_total", result="skipped") == 1
    assert labeled(d, "pixelport_eager_renders_total", result="error") == 0


def test_eager_multipart_upload_and_copy(eager):
    d, s3 = eager
    body = (IMAGES / "rocket-640x427.jpg").read_bytes()
    up = s3.create_multipart_upload(Bucket="eager-photos", Key="up/mp.jpg", ContentType="image/jpeg")
    part = s3.upload_part(Bucket="eager-photos", Key="up/mp.jpg", PartNumber=1,
                          UploadId=up["UploadId"], Body=body)
    s3.complete_multipart_upload(
        Bucket="eager-photos", Key="up/mp.jpg", UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    wait_eager(d, "ok", 1)
    r = thumb(d, "up/mp.jpg")
    assert r.headers["x-cache"] == "HIT" and size_of(r) == (120, 80)
    s3.copy_object(Bucket="eager-photos", Key="up/copy.jpg",
                   CopySource={"Bucket": "eager-photos", "Key": "up/mp.jpg"})
    wait_eager(d, "ok", 2)
    r = thumb(d, "up/copy.jpg")
    assert r.headers["x-cache"] == "HIT" and size_of(r) == (120, 80)
    # Two objects, each in the three negotiated formats.
    assert metric(d, "pixelport_images_processed_total") == 6


def test_eager_overwrite_renders_the_new_version(eager):
    d, s3 = eager
    aws = harness.AwsCli(d.endpoint)
    a, b = IMAGES / "rocket-640x427.jpg", IMAGES / "astronaut-512.png"
    aws("s3", "cp", str(a), "s3://eager-photos/up/x.jpg")
    wait_eager(d, "ok", 1)
    assert size_of(thumb(d, "up/x.jpg")) == (120, 80)
    aws("s3", "cp", str(b), "s3://eager-photos/up/x.jpg")
    wait_eager(d, "ok", 2)
    r = thumb(d, "up/x.jpg")
    assert r.headers["x-cache"] == "HIT" and size_of(r) == (120, 120)
    # A delete is seen too: nothing to render, nothing served.
    s3.delete_object(Bucket="eager-photos", Key="up/x.jpg")
    wait_eager(d, "skipped", 1)
    assert thumb(d, "up/x.jpg").status_code == 404
