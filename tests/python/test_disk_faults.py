"""Nothing lost when the disk misbehaves (issue "Safe to put on the internet", section 7),
against the real daemon.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import botocore.exceptions
import pytest
import requests

import harness


def test_a_missing_catalog_stops_the_start_instead_of_deleting_every_blob(make_daemon):
    # Bug guarded: a missing `catalog.redb` made the start-up sweep delete every blob,
    # logged only as a warning.
    d = make_daemon()
    s3 = d.client()
    s3.create_bucket(Bucket="keep")
    data = harness.pattern_bytes(3 << 20, seed=7)
    s3.put_object(Bucket="keep", Key="big.bin", Body=data)
    assert d.stop() == 0
    catalog = d.data_dir / "catalog.redb"
    moved = d.data_dir / "catalog.redb.away"
    catalog.rename(moved)
    blobs = sorted(p for p in (d.data_dir / "blobs").rglob("*") if p.is_file())
    assert blobs, "the object should live in a blob"
    digest = {p: hashlib.md5(p.read_bytes()).hexdigest() for p in blobs}

    cp = subprocess.run([str(harness.pixelport_bin()), "serve", "--config", str(d.config_path)],
                        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert cp.returncode != 0, cp.stderr[-2000:]
    assert "refusing to start" in cp.stderr and "Restore catalog.redb" in cp.stderr, cp.stderr[-2000:]
    # Every blob is still there, unchanged, and nothing else was decided for the user.
    assert {p: hashlib.md5(p.read_bytes()).hexdigest() for p in blobs} == digest
    assert not catalog.exists()

    moved.rename(catalog)
    d.start()
    assert d.client().get_object(Bucket="keep", Key="big.bin")["Body"].read() == data


SHARED_IMAGES = harness.REPO_ROOT.parent / "shared" / "images"


def fsck(d, *extra: str) -> tuple[int, dict, str]:
    cp = subprocess.run([str(harness.pixelport_bin()), "fsck", "--config", str(d.config_path), *extra],
                        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    report = json.loads(cp.stdout) if cp.stdout.strip() else {}
    return cp.returncode, report, cp.stderr


def test_fsck_explains_a_lost_catalog_and_gives_its_blobs_back(make_daemon):
    # Bug guarded: with catalog.redb lost, `pixelport fsck` (the tool the refusal message
    # named) created a fresh empty catalog, so the next start quarantined every blob, and
    # nothing could give the bytes back.
    d = make_daemon()
    s3 = d.client()
    s3.create_bucket(Bucket="keep")
    photo = (SHARED_IMAGES / "rocket-640x427.jpg").read_bytes()
    data = harness.pattern_bytes(3 << 20, seed=11)
    s3.put_object(Bucket="keep", Key="photos/rocket.jpg", Body=photo)
    s3.put_object(Bucket="keep", Key="big.bin", Body=data)
    assert d.stop() == 0
    catalog = d.data_dir / "catalog.redb"
    catalog.rename(d.data_dir / "catalog.redb.lost")

    rc, report, err = fsck(d)
    assert rc == 1, err
    assert report["catalog_missing"] is True and report["blobs"] == 2, report
    assert "fsck --recover" in err and "pixelport-recovered" in err, err
    assert not catalog.exists(), "a read-only fsck must not create a catalog"

    rc, report, err = fsck(d, "--recover")
    assert rc == 0, (report, err)
    assert len(report["recovery"]["recovered"]) == 2, report
    assert report["catalog_missing"] is False and report["orphan_blobs"] == 0, report

    d.start()
    s3 = d.client()
    listed = s3.list_objects_v2(Bucket="pixelport-recovered")["Contents"]
    assert len(listed) == 2
    got = {}
    for o in listed:
        obj = s3.get_object(Bucket="pixelport-recovered", Key=o["Key"])
        body = obj["Body"].read()
        got[hashlib.md5(body).hexdigest()] = obj["ContentType"]
        assert o["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    assert got == {hashlib.md5(photo).hexdigest(): "image/jpeg",
                   hashlib.md5(data).hexdigest(): "application/octet-stream"}
    # /metrics counts what the recovered catalog holds.
    metrics = requests.get(d.admin_url + "/metrics", timeout=10).text
    assert re.search(r"^pixelport_store_objects(\{[^}]*\})? 2(\.0)?$", metrics, re.M), metrics


@contextlib.contextmanager
def small_disk(path: Path, size_mib: int):
    """A tmpfs of `size_mib` at `path` (the daemon's data dir): a real filesystem that fills."""
    path.mkdir(parents=True, exist_ok=True)
    cp = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(path)],
                        capture_output=True, text=True)
    if cp.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {cp.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def put_status(s3, bucket: str, key: str, body: bytes) -> tuple[int, str, str]:
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        return 200, "", ""
    except botocore.exceptions.ClientError as e:
        r = e.response
        return (r["ResponseMetadata"]["HTTPStatusCode"], r["Error"].get("Code", ""),
                r["Error"].get("Message", ""))


def test_a_full_disk_refuses_writes_with_507_and_keeps_serving(make_daemon, tmp_path):
    # Bug guarded: a full data disk answered 500 InternalError (or broke the catalog) to
    # writes; S3 clients could not tell "disk full" from a crash.
    base = tmp_path / "full"
    with small_disk(base / "data", 64):
        d = make_daemon(name="full", start=False, server_config='min_free_space = "16MiB"',
                        max_object_size="64MiB")
        d.start()
        try:
            s3 = d.client()
            s3.create_bucket(Bucket="fill")
            photo = (SHARED_IMAGES / "rocket-640x427.jpg").read_bytes()
            s3.put_object(Bucket="fill", Key="photo.jpg", Body=photo)
            stored = {}
            refused = None
            for i in range(20):
                body = harness.pattern_bytes(4 << 20, seed=i)
                status, code, message = put_status(s3, "fill", f"obj{i}", body)
                if status == 200:
                    stored[f"obj{i}"] = hashlib.md5(body).hexdigest()
                    continue
                refused = (status, code, message)
                break
            assert refused is not None, "the disk never filled"
            assert refused[:2] == (507, "XPixelportStorageFull"), refused
            assert "min_free_space" in refused[2], refused
            assert 8 <= len(stored) <= 12, stored  # (64 - 16) MiB / 4 MiB at most
            # A multipart part is refused the same way, before it is stored.
            up = s3.create_multipart_upload(Bucket="fill", Key="mp")
            with pytest.raises(botocore.exceptions.ClientError) as e:
                s3.upload_part(Bucket="fill", Key="mp", UploadId=up["UploadId"], PartNumber=1,
                               Body=harness.pattern_bytes(5 << 20, seed=99))
            assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 507
            s3.abort_multipart_upload(Bucket="fill", Key="mp", UploadId=up["UploadId"])
            # Reads keep working, byte for byte, and images are still made (uncached: the
            # cache keeps twice the reserve free).
            for key, md5 in stored.items():
                assert hashlib.md5(s3.get_object(Bucket="fill", Key=key)["Body"].read()).hexdigest() == md5
            r = requests.get(d.images_url + "/unsafe/rs:fit:100:100/plain/s3://fill/photo.jpg@png", timeout=60)
            assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n", r.text[:300]
            metrics = requests.get(d.admin_url + "/metrics", timeout=10).text
            m = re.search(r"^pixelport_cache_write_failures_total (\d+)", metrics, re.M)
            assert m and int(m.group(1)) >= 1, "the cache must not have stored the variant"
            # Deleting makes room again; the daemon never went down.
            for key in list(stored)[:3]:
                s3.delete_object(Bucket="fill", Key=key)
            status, code, message = put_status(s3, "fill", "again", harness.pattern_bytes(4 << 20, seed=42))
            assert status == 200, (status, code, message)
            assert d.alive()
        finally:
            d.stop()


def test_a_catalog_write_error_restarts_the_daemon_instead_of_answering_500_forever(make_daemon, tmp_path):
    # Bug guarded: one I/O error made redb refuse every later call (PreviousIo), and the
    # daemon stayed up answering 500 to every request until someone restarted it.
    base = tmp_path / "eio"
    with small_disk(base / "data", 24):
        d = make_daemon(name="eio", start=False, server_config="min_free_space = 0",
                        shutdown_grace="2s")
        d.start()
        filler = d.data_dir / "filler"
        try:
            s3 = d.client()
            s3.create_bucket(Bucket="fill")
            acknowledged = {}
            for i in range(5):
                body = harness.pattern_bytes(60 << 10, seed=i)
                s3.put_object(Bucket="fill", Key=f"k{i}", Body=body)
                acknowledged[f"k{i}"] = hashlib.md5(body).hexdigest()
            # Leave the catalog almost no room to grow.
            free = os.statvfs(d.data_dir).f_bavail * os.statvfs(d.data_dir).f_frsize
            with open(filler, "wb") as f:
                try:
                    f.write(b"\0" * max(0, free - (128 << 10)))
                except OSError:
                    pass
            failed = None
            for i in range(5, 400):
                body = harness.pattern_bytes(60 << 10, seed=i)
                status, code, _ = put_status(s3, "fill", f"k{i}", body)
                if status == 200:
                    acknowledged[f"k{i}"] = hashlib.md5(body).hexdigest()
                    continue
                failed = (status, code)
                break
            assert failed is not None, "the catalog never ran out of room"
            assert failed[0] in (500, 507), failed
            # The daemon notices that the catalog is unusable and exits for systemd to restart it.
            rc = d.proc.wait(timeout=30)
            assert rc == 75, (rc, d.logs()[-3000:])
            assert "unrecoverable storage fault" in d.logs()
        finally:
            if d.alive():
                d.stop()
        filler.unlink()
        d.start()
        s3 = d.client()
        for key, md5 in acknowledged.items():
            assert hashlib.md5(s3.get_object(Bucket="fill", Key=key)["Body"].read()).hexdigest() == md5, key
        s3.put_object(Bucket="fill", Key="after", Body=b"works")
        d.stop()
