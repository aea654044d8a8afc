"""Crash safety of the embedded store.

The daemon is killed with SIGKILL in the middle of uploads and restarted on
the same data_dir: an object is then either absent or complete, never
partial; acknowledged writes survive; and once the daemon is stopped
``pixelport fsck`` finds catalog and blobs in agreement.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest
from botocore.exceptions import ClientError

import harness
from harness import MiB, expect_error, pattern_bytes

TOTAL = 100 * MiB


def _dir_bytes(path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def _stream_presigned(url: str, data: bytes, stop_after: int | None = None,
                      on_stop=None, pace: float = 0.0, extra_headers=None):
    """Upload ``data`` to a presigned PUT URL with http.client, 1 MiB at a time.

    After ``stop_after`` bytes, ``on_stop()`` is called (e.g. to kill the
    daemon) and sending goes on until the connection breaks.  Returns
    (status or None, body or exception).
    """
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    target = parts.path + ("?" + parts.query if parts.query else "")
    try:
        conn.putrequest("PUT", target, skip_accept_encoding=True)
        conn.putheader("Content-Length", str(len(data)))
        for k, v in (extra_headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        sent, stopped = 0, False
        while sent < len(data):
            chunk = data[sent:sent + MiB]
            conn.send(chunk)
            sent += len(chunk)
            if pace:
                time.sleep(pace)
            if stop_after is not None and not stopped and sent >= stop_after:
                stopped = True
                on_stop()
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException) as e:
        return None, e
    finally:
        conn.close()


def _fsck_clean(d: harness.Daemon, objects: int | None = None) -> None:
    """Stop gracefully, then fsck must report a consistent store."""
    rc = d.stop()
    if harness.is_stand_in():
        return
    assert rc == 0, f"exit code {rc} after SIGTERM\n{d.logs()}"
    rc, report, out, err = d.fsck()
    assert rc == 0, f"fsck exit {rc}\nstdout:\n{out}\nstderr:\n{err}"
    assert report is not None, f"fsck printed no JSON report:\n{out}"
    assert report["orphan_blobs"] == 0, report
    assert report["missing_blobs"] == 0, report
    if objects is not None:
        assert report["objects"] == objects, report


def _absent_or_complete(s3, bucket, key, data) -> bool:
    """True if complete, False if absent; fails on anything else."""
    try:
        got = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as e:
        assert e.response["Error"]["Code"] == "NoSuchKey", e.response
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert key not in listed, "listed but not readable"
        return False
    assert got["ContentLength"] == len(data), "partial object after crash"
    assert got["Body"].read() == data, "corrupt object after crash"
    return True


def test_kill_during_single_put(make_daemon):
    """SIGKILL after ~30 MiB of a 100 MiB PUT: after restart the object is absent (never partial), the key can be written again, and fsck is clean."""
    d = make_daemon()
    s3 = d.client()
    b = harness.unique_name("crash")
    s3.create_bucket(Bucket=b)
    s3.put_object(Bucket=b, Key="before", Body=b"acknowledged earlier")
    data = pattern_bytes(TOTAL, seed=300)
    url = s3.generate_presigned_url("put_object", Params={"Bucket": b, "Key": "big"}, ExpiresIn=600)
    status, _ = _stream_presigned(url, data, stop_after=30 * MiB, on_stop=d.kill9)
    assert status is None, "the upload cannot have succeeded: the daemon was killed"
    assert not d.alive()

    d.restart()
    s3 = d.client()
    assert _absent_or_complete(s3, b, "big", data) is False
    assert s3.get_object(Bucket=b, Key="before")["Body"].read() == b"acknowledged earlier"
    small = pattern_bytes(3 * MiB, seed=301)
    s3.put_object(Bucket=b, Key="big", Body=small)
    assert s3.get_object(Bucket=b, Key="big")["Body"].read() == small
    _fsck_clean(d, objects=2)


def test_kill_during_multipart_part(make_daemon):
    """SIGKILL while a part of a 100 MiB multipart upload is streaming: after restart there is no object; the upload is either gone or resumable with its acknowledged parts intact; fsck is clean."""
    d = make_daemon()
    s3 = d.client()
    b = harness.unique_name("crash")
    s3.create_bucket(Bucket=b)
    data = pattern_bytes(TOTAL, seed=310)
    psize = 8 * MiB
    chunks = [data[i:i + psize] for i in range(0, len(data), psize)]
    uid = s3.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]
    acked = []
    for n in (1, 2, 3):
        r = s3.upload_part(Bucket=b, Key="mp", UploadId=uid, PartNumber=n, Body=chunks[n - 1])
        acked.append({"PartNumber": n, "ETag": r["ETag"]})
    url = s3.generate_presigned_url("upload_part", Params={
        "Bucket": b, "Key": "mp", "UploadId": uid, "PartNumber": 4}, ExpiresIn=600)
    status, _ = _stream_presigned(url, chunks[3], stop_after=4 * MiB, on_stop=d.kill9)
    assert status is None

    d.restart()
    s3 = d.client()
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=b, Key="mp")
    try:
        listed = s3.list_parts(Bucket=b, Key="mp", UploadId=uid).get("Parts", [])
    except ClientError as e:
        assert e.response["Error"]["Code"] == "NoSuchUpload", e.response
        expected_objects = 0
    else:
        # The upload survived: only whole, acknowledged parts may be listed.
        assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in listed] == \
            [(a["PartNumber"], psize, a["ETag"]) for a in acked]
        parts = list(acked)
        for n in range(4, len(chunks) + 1):
            r = s3.upload_part(Bucket=b, Key="mp", UploadId=uid, PartNumber=n, Body=chunks[n - 1])
            parts.append({"PartNumber": n, "ETag": r["ETag"]})
        s3.complete_multipart_upload(Bucket=b, Key="mp", UploadId=uid,
                                     MultipartUpload={"Parts": parts})
        assert s3.get_object(Bucket=b, Key="mp")["Body"].read() == data
        expected_objects = 1
    _fsck_clean(d, objects=expected_objects)


def test_kill_during_complete_multipart(make_daemon):
    """SIGKILL right after CompleteMultipartUpload of a 100 MiB upload was sent: after restart the object is absent or complete (complete if Complete was acknowledged); fsck is clean."""
    d = make_daemon()
    s3 = d.client()
    b = harness.unique_name("crash")
    s3.create_bucket(Bucket=b)
    data = pattern_bytes(TOTAL, seed=320)
    psize = 5 * MiB
    uid = s3.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]
    parts = []
    for i, off in enumerate(range(0, len(data), psize), start=1):
        r = s3.upload_part(Bucket=b, Key="mp", UploadId=uid, PartNumber=i, Body=data[off:off + psize])
        parts.append({"PartNumber": i, "ETag": r["ETag"]})
    result = {}

    def complete():
        try:
            result["resp"] = s3.complete_multipart_upload(
                Bucket=b, Key="mp", UploadId=uid, MultipartUpload={"Parts": parts})
        except Exception as e:  # the daemon dies under it
            result["error"] = e

    t = threading.Thread(target=complete)
    t.start()
    time.sleep(0.05)
    d.kill9()
    t.join(60)
    d.restart()
    s3 = d.client()
    present = _absent_or_complete(s3, b, "mp", data)
    if "resp" in result:
        assert present, "CompleteMultipartUpload was acknowledged but the object is gone"
    _fsck_clean(d, objects=1 if present else 0)


def test_kill_during_aws_cli_multipart_cp(make_daemon, tmp_path):
    """SIGKILL while `aws s3 cp` uploads 100 MiB with concurrent multipart parts: after restart the object is absent or complete; fsck is clean."""
    d = make_daemon()
    s3 = d.client()
    b = harness.unique_name("crash")
    s3.create_bucket(Bucket=b)
    data = pattern_bytes(TOTAL, seed=330)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    aws = harness.AwsCli(d.endpoint)
    base = _dir_bytes(d.data_dir)
    cmd = [sys.executable, "-m", "awscli", "--endpoint-url", d.endpoint, "s3", "cp", str(src),
           f"s3://{b}/big.bin", "--no-progress"]
    proc = subprocess.Popen(cmd, env=aws.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    finished_before_kill = False
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            finished_before_kill = proc.returncode == 0
            break
        if _dir_bytes(d.data_dir) - base >= 30 * MiB:
            break
        time.sleep(0.02)
    if proc.poll() not in (None, 0):
        out, err = proc.communicate()
        pytest.fail(f"aws s3 cp failed before the daemon was killed:\n{out.decode()}\n{err.decode()}")
    d.kill9()
    try:
        proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
    d.restart()
    s3 = d.client()
    present = _absent_or_complete(s3, b, "big.bin", data)
    if finished_before_kill:
        assert present, "aws s3 cp succeeded but the object is gone after the crash"
    _fsck_clean(d, objects=1 if present else 0)


def test_acknowledged_writes_survive_kill(make_daemon):
    """Writes and deletes that were acknowledged before a SIGKILL are all there after restart, byte for byte."""
    d = make_daemon()
    s3 = d.client()
    b = harness.unique_name("durable")
    s3.create_bucket(Bucket=b)
    objects = {f"obj-{i}": pattern_bytes(1000 * (i + 1), seed=340 + i) for i in range(5)}
    objects["large"] = pattern_bytes(20 * MiB, seed=349)
    for k, v in objects.items():
        s3.put_object(Bucket=b, Key=k, Body=v, Metadata={"k": k})
    s3.put_object(Bucket=b, Key="obj-0", Body=b"overwritten")
    objects["obj-0"] = b"overwritten"
    s3.delete_object(Bucket=b, Key="obj-1")
    del objects["obj-1"]
    s3.copy_object(Bucket=b, Key="copy", CopySource={"Bucket": b, "Key": "obj-2"})
    objects["copy"] = objects["obj-2"]
    d.kill9()

    d.restart()
    s3 = d.client()
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=b)["Contents"]]
    assert listed == sorted(objects)
    for k, v in objects.items():
        got = s3.get_object(Bucket=b, Key=k)
        assert got["Body"].read() == v, k
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=b, Key="obj-1")
    assert b in [x["Name"] for x in s3.list_buckets()["Buckets"]]
    _fsck_clean(d, objects=len(objects))


def test_sigterm_lets_inflight_upload_finish(make_daemon):
    """SIGTERM during an upload: the upload still completes (within shutdown_grace), the daemon exits 0, and the object is there after restart."""
    d = make_daemon(shutdown_grace="10s")
    s3 = d.client()
    b = harness.unique_name("grace")
    s3.create_bucket(Bucket=b)
    data = pattern_bytes(8 * MiB, seed=350)
    url = s3.generate_presigned_url("put_object", Params={"Bucket": b, "Key": "k"}, ExpiresIn=600)
    import signal as _signal

    status, body = _stream_presigned(url, data, stop_after=2 * MiB, pace=0.1,
                                     on_stop=lambda: d.proc.send_signal(_signal.SIGTERM))
    assert status == 200, f"in-flight upload was cut by SIGTERM: {body!r}\n{d.logs()}"
    d.proc.wait(timeout=20)
    assert d.proc.returncode == 0 or harness.is_stand_in(), d.logs()
    d.restart()
    assert d.client().get_object(Bucket=b, Key="k")["Body"].read() == data
    _fsck_clean(d, objects=1)


@pytest.mark.pixelport_only
def test_fsck_reports_missing_blob(make_daemon):
    """fsck notices when a blob file was lost: it exits 1 and counts it in missing_blobs."""
    d = make_daemon()
    s3 = d.client()
    b = harness.unique_name("fsck")
    s3.create_bucket(Bucket=b)
    data = pattern_bytes(3 * MiB, seed=360)  # big enough not to be stored inline
    s3.put_object(Bucket=b, Key="victim", Body=data)
    s3.put_object(Bucket=b, Key="other", Body=b"unrelated")
    assert d.stop() == 0
    rc, report, out, err = d.fsck()
    assert rc == 0 and report and report["objects"] == 2, (rc, out, err)
    blob = None
    for root, _dirs, files in os.walk(d.data_dir):
        for f in files:
            p = os.path.join(root, f)
            if os.path.getsize(p) == len(data):
                with open(p, "rb") as fh:
                    if fh.read() == data:
                        blob = p
    if blob is None:
        pytest.skip("blobs are not stored as plain files; cannot remove one by hand")
    os.remove(blob)
    rc, report, out, err = d.fsck()
    assert rc == 1, f"fsck exit {rc} with a blob missing\n{out}\n{err}"
    assert report is not None and report["missing_blobs"] == 1, out
