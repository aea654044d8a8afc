"""Fault tests against the real daemon (issue #10, section 8): SIGKILL in the middle of a
server-side copy, and an image burst larger than the processing pool takes.

Covered elsewhere: SIGKILL during CompleteMultipartUpload (test_crash.py), the remote store
going down and coming back (test_cli.py), the catalog-missing start (test_disk_faults.py).

The copy tests freeze the daemon (SIGSTOP) once the copy's spool file under
`<data_dir>/tmp/` holds part of the source, check that the copy really is unfinished (spool
shorter than the source, request not answered), then SIGKILL it: so the kill is known to
land mid-copy rather than assumed from a sleep.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import hmac
import io
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError
from PIL import Image

import harness
from harness import MiB, expect_error, md5_hex, multipart_etag, pattern_bytes

pytestmark = pytest.mark.pixelport_only

# Source sizes tried in turn: when a copy finishes before the kill can land, the next,
# larger one is tried (max_object_size is 300 MiB in the harness).
COPY_SIZES = (100 * MiB, 250 * MiB)
# The kill lands once the spool holds at least this much of the source.
KILL_AFTER = 4 * MiB


def _spool_sizes(tmp: Path) -> dict[str, int]:
    """Name -> size of every file in the spool directory (missing directory: none)."""
    out = {}
    try:
        with os.scandir(tmp) as it:
            for entry in it:
                try:
                    out[entry.name] = entry.stat().st_size
                except FileNotFoundError:
                    pass
    except FileNotFoundError:
        pass
    return out


def _kill_mid_copy(d: harness.Daemon, call, total: int) -> tuple[int | None, dict]:
    """Run ``call`` (a copy of a ``total``-byte source) in a thread and SIGKILL the daemon
    while the copy is being spooled.

    Returns (bytes spooled when the daemon died, or None if the kill did not land mid-copy;
    the call's outcome: {"resp": ...} or {"error": ...}). The daemon is dead on return.
    """
    tmp = d.data_dir / "tmp"
    old = set(_spool_sizes(tmp))
    result: dict = {}
    done = threading.Event()

    def run():
        try:
            result["resp"] = call()
        except Exception as e:  # the daemon dies under it
            result["error"] = e
        finally:
            done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    spooled = None
    deadline = time.monotonic() + 120
    while not done.is_set() and time.monotonic() < deadline:
        new = [size for name, size in _spool_sizes(tmp).items() if name not in old]
        if new and max(new) >= KILL_AFTER:
            # Freeze it: what the spool holds now is where the daemon dies.
            os.kill(d.proc.pid, signal.SIGSTOP)
            frozen = [size for name, size in _spool_sizes(tmp).items() if name not in old]
            if frozen and max(frozen) < total and not done.is_set():
                spooled = max(frozen)
            break
        time.sleep(0.002)
    d.kill9()
    t.join(60)
    assert not t.is_alive(), "the copy request hung after the daemon was killed"
    if "resp" in result:
        spooled = None  # answered: the kill did not land mid-copy
    return spooled, result


def _restart_clean(d: harness.Daemon) -> None:
    d.restart()
    leftover = _spool_sizes(d.data_dir / "tmp")
    assert not leftover, f"spool files left after restart: {leftover}"


def _fsck_clean(d: harness.Daemon, objects: int) -> None:
    """Stop gracefully, then fsck must report catalog and blobs in agreement."""
    rc = d.stop()
    assert rc == 0, f"exit code {rc} after SIGTERM\n{d.logs()}"
    rc, report, out, err = d.fsck()
    assert rc == 0, f"fsck exit {rc}\nstdout:\n{out}\nstderr:\n{err}"
    assert report is not None, f"fsck printed no JSON report:\n{out}"
    assert report["orphan_blobs"] == 0, report
    assert report["missing_blobs"] == 0, report
    assert report["objects"] == objects, report


def _md5_of(s3, bucket: str, key: str) -> tuple[int, str]:
    got = s3.get_object(Bucket=bucket, Key=key)
    body = got["Body"].read()
    return len(body), hashlib.md5(body).hexdigest()


def _keys(s3, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def _assert_killed_mid_copy(spooled, result, total, what):
    assert spooled is not None, (
        f"every {what} finished before the kill could land (sizes tried: "
        f"{[s // MiB for s in COPY_SIZES]} MiB): the test did not exercise a mid-copy crash; "
        f"outcome of the last try: {result}")
    assert "resp" not in result, f"{what} was answered although the daemon was killed mid-copy"
    assert 0 < spooled < total


def test_kill_during_copy_object(make_daemon):
    """SIGKILL while CopyObject spools a 100 MiB source: after restart the destination must
    be absent (never partial, never a torn copy), the source and an earlier object intact,
    no spool file left, the key writable again by the same copy, and fsck clean. Guards
    against a copy that publishes the destination before its bytes are whole, or that
    damages the source it reads."""
    d = make_daemon()
    spooled, result, total = None, {}, 0
    for attempt, total in enumerate(COPY_SIZES):
        s3 = d.client()
        b = harness.unique_name("copykill")
        s3.create_bucket(Bucket=b)
        s3.put_object(Bucket=b, Key="before", Body=b"acknowledged earlier")
        data = pattern_bytes(total, seed=800 + attempt)
        src_md5 = md5_hex(data)
        assert s3.put_object(Bucket=b, Key="src", Body=data)["ETag"] == f'"{src_md5}"'
        del data
        spooled, result = _kill_mid_copy(
            d, lambda: s3.copy_object(Bucket=b, Key="dst", CopySource={"Bucket": b, "Key": "src"}),
            total)
        _restart_clean(d)
        if spooled is not None:
            print(f"CopyObject killed with {spooled // MiB} of {total // MiB} MiB spooled")
            break
        harness.empty_bucket(d.client(), b)  # this try did not count: start over, larger
    _assert_killed_mid_copy(spooled, result, total, "CopyObject")

    s3 = d.client()
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=b, Key="dst")
    expect_error("404", 404, s3.head_object, Bucket=b, Key="dst")
    assert _keys(s3, b) == ["before", "src"]
    assert _md5_of(s3, b, "src") == (total, src_md5), "the copy source was damaged"
    assert s3.head_object(Bucket=b, Key="src")["ETag"] == f'"{src_md5}"'
    assert s3.get_object(Bucket=b, Key="before")["Body"].read() == b"acknowledged earlier"

    # The same copy, not interrupted this time, writes the key byte for byte.
    r = s3.copy_object(Bucket=b, Key="dst", CopySource={"Bucket": b, "Key": "src"})
    assert r["CopyObjectResult"]["ETag"] == f'"{src_md5}"'
    assert _md5_of(s3, b, "dst") == (total, src_md5)
    _fsck_clean(d, objects=3)


def test_kill_during_upload_part_copy(make_daemon):
    """SIGKILL while UploadPartCopy spools a 100 MiB source into part 3 of a multipart
    upload: after restart no object exists under the upload's key, the source is intact,
    no spool file is left, and the upload is either gone or lists exactly the two parts
    acknowledged before (then it resumes and completes byte for byte); fsck is clean.
    Guards against a half-copied part being listed or completed, and against the crash
    losing acknowledged parts."""
    d = make_daemon()
    psize = 5 * MiB
    spooled, result, total = None, {}, 0
    for attempt, total in enumerate(COPY_SIZES):
        s3 = d.client()
        b = harness.unique_name("partkill")
        s3.create_bucket(Bucket=b)
        data = pattern_bytes(total, seed=810 + attempt)
        src_md5 = md5_hex(data)
        s3.put_object(Bucket=b, Key="src", Body=data)
        uid = s3.create_multipart_upload(Bucket=b, Key="dst")["UploadId"]
        p1 = pattern_bytes(psize, seed=820 + attempt)
        p2 = pattern_bytes(psize, seed=830 + attempt)
        acked = []
        for n, body in ((1, p1), (2, p2)):
            r = s3.upload_part(Bucket=b, Key="dst", UploadId=uid, PartNumber=n, Body=body)
            assert r["ETag"] == f'"{md5_hex(body)}"'
            acked.append({"PartNumber": n, "ETag": r["ETag"]})
        spooled, result = _kill_mid_copy(
            d, lambda: s3.upload_part_copy(Bucket=b, Key="dst", UploadId=uid, PartNumber=3,
                                           CopySource={"Bucket": b, "Key": "src"}),
            total)
        _restart_clean(d)
        if spooled is not None:
            print(f"UploadPartCopy killed with {spooled // MiB} of {total // MiB} MiB spooled")
            break
        harness.empty_bucket(d.client(), b)
    _assert_killed_mid_copy(spooled, result, total, "UploadPartCopy")

    s3 = d.client()
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=b, Key="dst")
    assert _keys(s3, b) == ["src"]
    assert _md5_of(s3, b, "src") == (total, src_md5), "the copy source was damaged"
    try:
        listed = s3.list_parts(Bucket=b, Key="dst", UploadId=uid).get("Parts", [])
    except ClientError as e:
        assert e.response["Error"]["Code"] == "NoSuchUpload", e.response
        uploads = s3.list_multipart_uploads(Bucket=b).get("Uploads", [])
        assert [u["UploadId"] for u in uploads] == [], uploads
        print("the interrupted upload was dropped at restart")
        expected_objects = 1
    else:
        print(f"the interrupted upload survived with parts {[p['PartNumber'] for p in listed]}")
        # The upload survived: exactly the acknowledged parts, whole.
        assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in listed] == \
            [(a["PartNumber"], psize, a["ETag"]) for a in acked], listed
        r = s3.upload_part_copy(Bucket=b, Key="dst", UploadId=uid, PartNumber=3,
                                CopySource={"Bucket": b, "Key": "src"})
        assert r["CopyPartResult"]["ETag"] == f'"{src_md5}"'
        parts = acked + [{"PartNumber": 3, "ETag": r["CopyPartResult"]["ETag"]}]
        done = s3.complete_multipart_upload(Bucket=b, Key="dst", UploadId=uid,
                                            MultipartUpload={"Parts": parts})
        assert done["ETag"] == multipart_etag([p1, p2, data])
        whole = hashlib.md5(p1 + p2 + data).hexdigest()
        assert _md5_of(s3, b, "dst") == (2 * psize + total, whole)
        expected_objects = 2
    _fsck_clean(d, objects=expected_objects)


# -- overload of the image pool ---------------------------------------------------------

IMAGES = harness.REPO_ROOT.parent / "shared" / "images"
PHOTO = IMAGES / "elephants-5640x3172-progressive.jpg"  # 17.9 MP, 16 MiB
PHOTO_SIZE = (5640, 3172)

KEY_HEX = "6f7665726c6f61642d6b6579"  # "overload-key"
SALT_HEX = "6f7665726c6f61642d73616c74"  # "overload-salt"

WORKERS = 2
MAX_QUEUE = 4
BURST = 20  # concurrent distinct misses, well past WORKERS + MAX_QUEUE
MAX_SRC_MP = 18.0  # the photo fits (17.9 MP), nothing bigger would
MAX_SRC_FILE = 20 * MiB
MAX_SOURCE_MEMORY = 40 * MiB
MAX_PIXEL_MEMORY = 256 * MiB  # at least MAX_SRC_MP x 12 bytes, as docs/security.md asks
CACHE_MEMORY = 16 * MiB


def sign(path: str) -> str:
    """imgproxy's signature of ``path`` (as test_images.py computes it), prefixed."""
    mac = hmac.new(bytes.fromhex(KEY_HEX), bytes.fromhex(SALT_HEX) + path.encode(), hashlib.sha256)
    return "/" + base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=") + path


def documented_bound(max_source_memory: int, max_pixel_memory: int, cache_memory: int) -> int:
    """The daemon's memory bound of docs/security.md, in bytes: source bytes
    (`max_source_memory`) + decoding (`max_pixel_memory`) + the cache's hot tier
    (`[cache] memory_size`) + 160 MiB (redb page caches, runtime)."""
    return max_source_memory + max_pixel_memory + cache_memory + 160 * MiB


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _expected_size(width: int) -> tuple[int, int]:
    return width, round(PHOTO_SIZE[1] * width / PHOTO_SIZE[0])


def _check_image(resp: requests.Response, width: int, where: str) -> None:
    assert resp.headers.get("content-type") == "image/jpeg", (where, resp.headers)
    img = Image.open(io.BytesIO(resp.content))
    img.load()
    assert img.format == "JPEG", (where, img.format)
    w, h = img.size
    ew, eh = _expected_size(width)
    assert w == ew and abs(h - eh) <= 1, f"{where}: w={width} gave {img.size}, expected {(ew, eh)}"


def test_image_burst_past_the_pool_is_refused_with_retry_after_within_the_memory_bound(make_daemon):
    """More concurrent image misses than `workers + max_queue`: the surplus must be refused
    at once with 429 (or 503 past the deadline), each with Retry-After, never another 5xx;
    every 200 must be a real image; the daemon's RSS must stay under the memory bound that
    docs/security.md documents for the configured limits; and the same URLs must all succeed
    right after, without a restart, with RSS still under the bound. Guards against an
    unbounded queue (memory growing with the crowd), refusals without Retry-After, a pool
    that stays wedged after overload, and C codec buffers kept in each worker's glibc arena
    (peaks of 590-707 MiB over the 472 MiB bound before src/os_memory.rs fixed the mmap
    threshold)."""
    images_config = (
        f'key = "{KEY_HEX}"\nsalt = "{SALT_HEX}"\n'
        f"workers = {WORKERS}\nmax_queue = {MAX_QUEUE}\ntimeout = \"30s\"\n"
        f"max_src_resolution = {MAX_SRC_MP}\n"
        f'max_src_file_size = "{MAX_SRC_FILE // MiB}MiB"\n'
        f'max_source_memory = "{MAX_SOURCE_MEMORY // MiB}MiB"\n'
        f'max_pixel_memory = "{MAX_PIXEL_MEMORY // MiB}MiB"\n')
    d = make_daemon(images_config=images_config,
                    extra_config=f'[cache]\nmemory_size = "{CACHE_MEMORY // MiB}MiB"\n')
    s3 = d.client()
    s3.create_bucket(Bucket="burst")
    s3.put_object(Bucket="burst", Key="elephants.jpg", Body=PHOTO.read_bytes())

    # Widths past 5640/2 so no JPEG shrink-on-load helps: every render decodes all 17.9 MP.
    widths = [2900 + 7 * i for i in range(BURST)]
    urls = {w: d.images_url + sign(f"/rs:fit:{w}:0/plain/s3://burst/elephants.jpg") for w in widths}

    pid = d.proc.pid
    base_kib = _status_kib(pid, "VmRSS")
    try:  # reset the peak (VmHWM) so it covers the burst alone
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        hwm_reset = True
    except OSError:
        hwm_reset = False
    bound = documented_bound(MAX_SOURCE_MEMORY, MAX_PIXEL_MEMORY, CACHE_MEMORY)

    samples: list[int] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                samples.append(_status_kib(pid, "VmRSS"))
            except (OSError, AssertionError):
                return
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    gate = threading.Barrier(BURST)

    def fetch(w):
        gate.wait(timeout=30)
        start = time.monotonic()
        r = requests.get(urls[w], timeout=90)
        return w, r, time.monotonic() - start

    try:
        with concurrent.futures.ThreadPoolExecutor(BURST) as ex:
            answers = list(ex.map(fetch, widths))
    except BaseException:
        stop.set()
        raise
    assert d.alive(), f"the daemon died under the burst:\n{d.logs()}"

    statuses = {w: r.status_code for w, r, _ in answers}
    unexpected = {w: (r.status_code, r.text[:200]) for w, r, _ in answers
                  if r.status_code not in (200, 429, 503)}
    assert not unexpected, f"answers other than 200/429/503: {unexpected}"
    refused = [(w, r, secs) for w, r, secs in answers if r.status_code in (429, 503)]
    assert refused, f"{BURST} concurrent misses, none refused (pool {WORKERS}+{MAX_QUEUE}): {statuses}"
    for w, r, secs in refused:
        assert r.headers.get("retry-after", "").strip().isdigit(), (w, r.status_code, r.headers)
        assert int(r.headers["retry-after"]) >= 1, (w, r.headers)
        body = r.json()
        assert body["kind"] == ("queue" if r.status_code == 429 else "timeout"), (w, body)
        if r.status_code == 429:
            # Refused at admission, not after waiting in a queue it never entered.
            assert secs < 5, f"w={w}: 429 took {secs:.1f}s"
    ok = [(w, r) for w, r, _ in answers if r.status_code == 200]
    assert ok, f"nothing was rendered during the burst: {statuses}"
    for w, r in ok:
        _check_image(r, w, f"burst w={w}")

    # Recovered without a restart: every URL of the burst now succeeds, at a pace the pool
    # takes (one request per worker at a time).
    def again(w):
        return w, requests.get(urls[w], timeout=90)

    # The sampler runs on: these 20 renders after the burst, one per worker at a time, are
    # where C codec buffers left in two workers' heaps would add up.
    try:
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as ex:
            for w, r in ex.map(again, widths):
                assert r.status_code == 200, (w, r.status_code, r.text[:300])
                _check_image(r, w, f"after the burst w={w}")
    finally:
        stop.set()
        sampler.join(5)
    peak_hwm_kib = _status_kib(pid, "VmHWM") if hwm_reset else None

    # Memory last, so that a breach is reported after every other check has run.
    assert len(samples) >= 3, f"too few RSS samples during the burst: {len(samples)}"
    peak_kib = max(samples)
    detail = (f"base {base_kib // 1024} MiB, sampled peak {peak_kib // 1024} MiB, "
              f"VmHWM {None if peak_hwm_kib is None else peak_hwm_kib // 1024} MiB, "
              f"documented bound {bound // MiB} MiB, "
              f"{len(samples)} samples, statuses "
              f"{ {s: list(statuses.values()).count(s) for s in set(statuses.values())} }")
    print("burst:", detail)
    assert peak_kib * 1024 <= bound, f"RSS over the documented bound: {detail}"
    if peak_hwm_kib is not None:
        assert peak_hwm_kib * 1024 <= bound, f"peak RSS (VmHWM) over the documented bound: {detail}"

