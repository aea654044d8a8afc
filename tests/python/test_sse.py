"""Encryption at rest (#14 part 5): SSE-S3, SSE-C and bucket default encryption.

Before this, `aws s3 cp --sse AES256` and `--sse-c` were refused with NotImplemented (and
before that, silently stored in the clear), PutBucketEncryption answered NotImplemented,
and every object's bytes lay readable in the blob files. Now the embedded store encrypts
what a request or the bucket's default asks it to (AES-256-GCM in 64 KiB chunks, a data key
per blob sealed under the store's key or the customer's), and these tests scan the data dir
for the plaintext they uploaded.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import stat
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError

import harness

pytestmark = pytest.mark.pixelport_only

PHOTO = harness.REPO_ROOT.parent / "shared" / "images" / "rocket-640x427.jpg"
MARKER = b"PIXELPORT-SSE-PLAINTEXT-MARKER/"


def marked(size: int) -> bytes:
    return (MARKER * (size // len(MARKER) + 1))[:size]


def rkey(n: int = 32) -> str:
    """A random SSE-C key as boto3 takes it: `n` bytes, as a str (boto3 base64s it)."""
    return os.urandom(n // 2).hex()


def sse_c(key: str, prefix: str = "SSECustomer") -> dict:
    """SSE-C parameters for boto3. With the MD5 given, boto3 sends the key as given, so it
    goes base64'd here (as boto3 would do itself without the MD5)."""
    raw = key.encode()
    return {f"{prefix}Algorithm": "AES256", f"{prefix}Key": base64.b64encode(raw).decode(),
            f"{prefix}KeyMD5": base64.b64encode(hashlib.md5(raw).digest()).decode()}


def files_holding(root: Path, needle: bytes, skip: tuple[str, ...] = ()) -> list[Path]:
    """Every file under `root` whose bytes contain `needle` (names in `skip` left out)."""
    found = []
    for p in root.rglob("*"):
        if p.is_file() and p.name not in skip and needle in p.read_bytes():
            found.append(p)
    return found


def raises(code: str, status: int, call):
    with pytest.raises(ClientError) as e:
        call()
    assert harness.client_error(e.value) == (code, status), e.value.response["Error"]
    return e.value.response["Error"].get("Message", "")


@pytest.fixture(scope="module")
def d(daemon):
    return daemon


def test_aws_cli_sse_s3_leaves_no_plaintext_in_the_data_dir(d, tmp_path):
    c = d.client()
    b = harness.unique_name("sse")
    c.create_bucket(Bucket=b)
    aws = harness.AwsCli(d.endpoint)
    big, small = tmp_path / "big.bin", tmp_path / "small.txt"
    # 10 MiB: the aws cli sends it as a multipart upload (8 MiB parts).
    big.write_bytes(marked(10 << 20))
    small.write_bytes(marked(100))
    for f in (big, small):
        aws("s3", "cp", str(f), f"s3://{b}/{f.name}", "--sse", "AES256")
        head = c.head_object(Bucket=b, Key=f.name)
        assert head["ServerSideEncryption"] == "AES256"
        out = tmp_path / f"{f.name}.back"
        aws("s3", "cp", f"s3://{b}/{f.name}", str(out))
        assert out.read_bytes() == f.read_bytes()
    # A ranged GET across a chunk boundary (64 KiB) and into the second part.
    r = c.get_object(Bucket=b, Key="big.bin", Range=f"bytes={65530}-{65545}")
    assert r["Body"].read() == big.read_bytes()[65530:65546]
    assert r["ServerSideEncryption"] == "AES256"
    r = c.get_object(Bucket=b, Key="big.bin", Range=f"bytes={(8 << 20) - 5}-{(8 << 20) + 4}")
    assert r["Body"].read() == big.read_bytes()[(8 << 20) - 5:(8 << 20) + 5]
    assert files_holding(d.data_dir, MARKER, skip=("cache.redb",)) == []
    key = d.data_dir / "sse.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # The scan can fail: the same bytes stored without encryption are found.
    c.put_object(Bucket=b, Key="plain.txt", Body=marked(100))
    assert files_holding(d.data_dir, MARKER, skip=("cache.redb",)) != []
    c.delete_object(Bucket=b, Key="plain.txt")
    # Copying an object onto itself with --sse encrypts it in place (as on S3).
    c.put_object(Bucket=b, Key="later.txt", Body=b"encrypt me later " * 10)
    assert "ServerSideEncryption" not in c.head_object(Bucket=b, Key="later.txt")
    aws("s3", "cp", f"s3://{b}/later.txt", f"s3://{b}/later.txt", "--sse", "AES256")
    assert c.head_object(Bucket=b, Key="later.txt")["ServerSideEncryption"] == "AES256"
    assert c.get_object(Bucket=b, Key="later.txt")["Body"].read() == b"encrypt me later " * 10


def test_aws_cli_sse_c_needs_the_key_for_every_read(d, tmp_path):
    c = d.client()
    b = harness.unique_name("ssec")
    c.create_bucket(Bucket=b)
    aws = harness.AwsCli(d.endpoint)
    keyfile, other = tmp_path / "key", tmp_path / "other"
    keyfile.write_bytes(os.urandom(32))
    other.write_bytes(os.urandom(32))
    src = tmp_path / "secret.bin"
    src.write_bytes(marked(9 << 20))
    ssec = ["--sse-c", "AES256", "--sse-c-key", f"fileb://{keyfile}"]
    aws("s3", "cp", str(src), f"s3://{b}/secret.bin", *ssec)
    out = tmp_path / "back.bin"
    aws("s3", "cp", f"s3://{b}/secret.bin", str(out), *ssec)
    assert out.read_bytes() == src.read_bytes()
    # Without the key, or with another one, nothing is read.
    cp = aws("s3", "cp", f"s3://{b}/secret.bin", str(tmp_path / "x"), check=False)
    assert cp.returncode != 0 and "400" in cp.stderr, cp.stderr
    cp = aws("s3", "cp", f"s3://{b}/secret.bin", str(tmp_path / "x"), "--sse-c", "AES256",
             "--sse-c-key", f"fileb://{other}", check=False)
    assert cp.returncode != 0 and "403" in cp.stderr, cp.stderr
    # s3 -> s3 with the source's key, re-encrypted under SSE-S3.
    aws("s3", "cp", f"s3://{b}/secret.bin", f"s3://{b}/copy.bin", "--sse-c-copy-source",
        "AES256", "--sse-c-copy-source-key", f"fileb://{keyfile}", "--sse", "AES256")
    assert c.head_object(Bucket=b, Key="copy.bin")["ServerSideEncryption"] == "AES256"
    assert c.get_object(Bucket=b, Key="copy.bin")["Body"].read() == src.read_bytes()
    assert files_holding(d.data_dir, MARKER, skip=("cache.redb",)) == []
    # The key itself is nowhere on disk, nor its plain MD5.
    raw = keyfile.read_bytes()
    assert files_holding(d.data_dir, raw) == []
    assert files_holding(d.data_dir, base64.b64encode(hashlib.md5(raw).digest())) == []


def test_sse_c_errors_are_s3s(d):
    c = d.client()
    b = harness.unique_name("ssec-err")
    c.create_bucket(Bucket=b)
    key, wrong = rkey(), rkey()
    put = c.put_object(Bucket=b, Key="k", Body=b"customer data", **sse_c(key))
    assert put["SSECustomerAlgorithm"] == "AES256"
    assert put["SSECustomerKeyMD5"] == sse_c(key)["SSECustomerKeyMD5"]
    got = c.get_object(Bucket=b, Key="k", Range="bytes=0-7", **sse_c(key))
    assert got["Body"].read() == b"customer"
    assert got["SSECustomerKeyMD5"] == sse_c(key)["SSECustomerKeyMD5"]
    head = c.head_object(Bucket=b, Key="k", **sse_c(key))
    assert head["ContentLength"] == 13 and head["SSECustomerAlgorithm"] == "AES256"
    msg = raises("InvalidRequest", 400, lambda: c.get_object(Bucket=b, Key="k"))
    assert "Server Side Encryption" in msg
    raises("AccessDenied", 403, lambda: c.get_object(Bucket=b, Key="k", **sse_c(wrong)))
    raises("400", 400, lambda: c.head_object(Bucket=b, Key="k"))
    raises("InvalidRequest", 400, lambda: c.get_object_attributes(
        Bucket=b, Key="k", ObjectAttributes=["ObjectSize"]))
    assert c.get_object_attributes(Bucket=b, Key="k", ObjectAttributes=["ObjectSize"],
                                   **sse_c(key))["ObjectSize"] == 13
    raises("403", 403, lambda: c.head_object(Bucket=b, Key="k", **sse_c(wrong)))
    # SSE-C headers on an object that has no customer key.
    c.put_object(Bucket=b, Key="plain", Body=b"p")
    raises("InvalidRequest", 400, lambda: c.get_object(Bucket=b, Key="plain", **sse_c(key)))
    # Malformed SSE-C headers, refused before anything is stored.
    bad_md5 = dict(sse_c(key), SSECustomerKeyMD5=sse_c(wrong)["SSECustomerKeyMD5"])
    raises("InvalidArgument", 400, lambda: c.put_object(Bucket=b, Key="n", Body=b"x", **bad_md5))
    bad_alg = dict(sse_c(key), SSECustomerAlgorithm="AES128")
    raises("InvalidEncryptionAlgorithmError", 400,
           lambda: c.put_object(Bucket=b, Key="n", Body=b"x", **bad_alg))
    short = sse_c(rkey(16))
    raises("InvalidArgument", 400, lambda: c.put_object(Bucket=b, Key="n", Body=b"x", **short))
    raises("InvalidArgument", 400, lambda: c.put_object(
        Bucket=b, Key="n", Body=b"x", ServerSideEncryption="AES256", **sse_c(key)))
    raises("NotImplemented", 501, lambda: c.put_object(
        Bucket=b, Key="n", Body=b"x", ServerSideEncryption="aws:kms"))
    assert [o["Key"] for o in c.list_objects_v2(Bucket=b)["Contents"]] == ["k", "plain"]
    # A copy of an SSE-C source needs the source's key.
    raises("InvalidRequest", 400, lambda: c.copy_object(
        Bucket=b, Key="c", CopySource={"Bucket": b, "Key": "k"}))
    c.copy_object(Bucket=b, Key="c", CopySource={"Bucket": b, "Key": "k"},
                  **sse_c(key, "CopySourceSSECustomer"))
    assert "ServerSideEncryption" not in c.head_object(Bucket=b, Key="c")
    assert c.get_object(Bucket=b, Key="c")["Body"].read() == b"customer data"


def test_sse_c_multipart_needs_the_key_on_every_part(d):
    c = d.client()
    b = harness.unique_name("ssec-mp")
    c.create_bucket(Bucket=b)
    key = rkey()
    up = c.create_multipart_upload(Bucket=b, Key="mp", **sse_c(key))
    assert up["SSECustomerAlgorithm"] == "AES256"
    raises("InvalidRequest", 400, lambda: c.upload_part(
        Bucket=b, Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=b"x"))
    raises("AccessDenied", 403, lambda: c.upload_part(
        Bucket=b, Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=b"x",
        **sse_c(rkey())))
    data = [marked(5 << 20), b"tail"]
    parts = []
    for n, body in enumerate(data, 1):
        p = c.upload_part(Bucket=b, Key="mp", UploadId=up["UploadId"], PartNumber=n,
                          Body=body, **sse_c(key))
        parts.append({"PartNumber": n, "ETag": p["ETag"]})
    c.complete_multipart_upload(Bucket=b, Key="mp", UploadId=up["UploadId"],
                                MultipartUpload={"Parts": parts})
    whole = b"".join(data)
    assert c.get_object(Bucket=b, Key="mp", **sse_c(key))["Body"].read() == whole
    r = c.get_object(Bucket=b, Key="mp", Range=f"bytes={(5 << 20) - 2}-{(5 << 20) + 1}",
                     **sse_c(key))
    assert r["Body"].read() == whole[(5 << 20) - 2:(5 << 20) + 2]


def test_bucket_default_encryption(d):
    c = d.client()
    b = harness.unique_name("ssedef")
    c.create_bucket(Bucket=b)
    raises("ServerSideEncryptionConfigurationNotFoundError", 404,
           lambda: c.get_bucket_encryption(Bucket=b))
    c.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    rule = c.get_bucket_encryption(Bucket=b)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    put = c.put_object(Bucket=b, Key="k", Body=marked(1000))
    assert put["ServerSideEncryption"] == "AES256"
    assert c.head_object(Bucket=b, Key="k")["ServerSideEncryption"] == "AES256"
    up = c.create_multipart_upload(Bucket=b, Key="mp")
    assert up["ServerSideEncryption"] == "AES256"
    c.abort_multipart_upload(Bucket=b, Key="mp", UploadId=up["UploadId"])
    # An SSE-C request still uses its own key.
    key = rkey()
    c.put_object(Bucket=b, Key="c", Body=b"x", **sse_c(key))
    assert "ServerSideEncryption" not in c.head_object(Bucket=b, Key="c", **sse_c(key))
    raises("NotImplemented", 501, lambda: c.put_bucket_encryption(
        Bucket=b, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]}))
    raises("NoSuchBucket", 404, lambda: c.put_bucket_encryption(
        Bucket="no-such-sse-bucket", ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}))
    c.delete_bucket_encryption(Bucket=b)
    raises("ServerSideEncryptionConfigurationNotFoundError", 404,
           lambda: c.get_bucket_encryption(Bucket=b))
    assert "ServerSideEncryption" not in c.put_object(Bucket=b, Key="k2", Body=b"x")
    # The setting survives a restart, and so do the objects and their key.
    c.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    assert d.stop() == 0
    d.restart()
    c = d.client()
    assert c.get_bucket_encryption(Bucket=b)["ServerSideEncryptionConfiguration"]["Rules"]
    assert c.get_object(Bucket=b, Key="k")["Body"].read() == marked(1000)
    assert c.get_object(Bucket=b, Key="c", **sse_c(key))["Body"].read() == b"x"


def test_admin_uploads_follow_the_bucket_default(d):
    """The admin UI's uploads (single and multipart) into a bucket with default encryption
    are encrypted too, and leave no plaintext in the data dir."""
    c = d.client()
    b = harness.unique_name("sseadm")
    c.create_bucket(Bucket=b)
    c.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    token = (d.data_dir / "admin-token").read_text().strip()
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {token}"
    base = f"{d.admin_url}/api/buckets/{b}"
    small = marked(3000)
    r = api.put(f"{base}/object", params={"key": "one.bin"}, data=small, timeout=60)
    assert r.status_code == 200, r.text
    up = api.post(f"{base}/uploads", params={"key": "two.bin"}, timeout=60).json()
    parts = [marked(5 << 20), marked(1000)]
    done = []
    for n, body in enumerate(parts, 1):
        r = api.put(f"{base}/uploads/{up['upload_id']}", params={"key": "two.bin", "part": n},
                    data=body, timeout=60)
        assert r.status_code == 200, r.text
        done.append({"part": n, "etag": r.json()["etag"]})
    r = api.post(f"{base}/uploads/{up['upload_id']}/complete", params={"key": "two.bin"},
                 json={"parts": done}, timeout=60)
    assert r.status_code == 200, r.text
    for key, want in (("one.bin", small), ("two.bin", b"".join(parts))):
        assert c.head_object(Bucket=b, Key=key)["ServerSideEncryption"] == "AES256"
        assert c.get_object(Bucket=b, Key=key)["Body"].read() == want
    assert files_holding(d.data_dir, MARKER, skip=("cache.redb",)) == []


def test_image_endpoint_reads_sse_s3_and_refuses_sse_c_with_a_reason(d):
    c = d.client()
    b = harness.unique_name("sseimg")
    c.create_bucket(Bucket=b)
    photo = PHOTO.read_bytes()
    c.put_object(Bucket=b, Key="s3.jpg", Body=photo, ServerSideEncryption="AES256")
    key = rkey()
    c.put_object(Bucket=b, Key="c.jpg", Body=photo, **sse_c(key))
    r = requests.get(f"{d.images_url}/unsafe/rs:fit:100:100/plain/s3://{b}/s3.jpg@png",
                     timeout=30)
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG"), r.text[:300]
    r = requests.get(f"{d.images_url}/unsafe/rs:fit:100:100/plain/s3://{b}/c.jpg@png",
                     timeout=30)
    assert r.status_code == 403, r.text[:300]
    assert "SSE-C" in r.json()["message"]


def test_sse_c_keys_are_refused_over_plain_http_from_another_host(tmp_path_factory):
    # The daemon listens on every address; a client reaching it through this host's
    # non-loopback address is, to the daemon, another host on plain HTTP.
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            ip = s.getsockname()[0]
    except OSError:
        pytest.skip("this host has no non-loopback IPv4 address")
    if ip.startswith("127."):
        pytest.skip("this host has no non-loopback IPv4 address")
    d = harness.Daemon(tmp_path_factory.mktemp("ssec-remote"), s3_host="0.0.0.0")
    try:
        d.start()
        b = harness.unique_name("ssec-http")
        local = d.client()
        local.create_bucket(Bucket=b)
        far = harness.make_client(f"http://{ip}:{d.s3_port}")
        key = rkey()
        msg = raises("InvalidRequest", 400,
                     lambda: far.put_object(Bucket=b, Key="k", Body=b"x", **sse_c(key)))
        assert "secure connection" in msg
        # SSE-S3 needs no key on the wire, and loopback is trusted (a local TLS proxy).
        far.put_object(Bucket=b, Key="s", Body=b"x", ServerSideEncryption="AES256")
        local.put_object(Bucket=b, Key="k", Body=b"x", **sse_c(key))
    finally:
        d.stop_all()


def test_remote_store_refuses_encryption_and_says_why(tmp_path_factory):
    d = harness.Daemon(tmp_path_factory.mktemp("sse-remote"), backend="remote")
    try:
        d.start()
        c = d.client()
        b = harness.unique_name("sse-remote")
        c.create_bucket(Bucket=b)
        for call in (
                lambda: c.put_object(Bucket=b, Key="k", Body=b"x", ServerSideEncryption="AES256"),
                lambda: c.put_object(Bucket=b, Key="k", Body=b"x", **sse_c(rkey())),
                lambda: c.create_multipart_upload(Bucket=b, Key="k",
                                                  ServerSideEncryption="AES256"),
                lambda: c.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration={
                    "Rules": [{"ApplyServerSideEncryptionByDefault":
                               {"SSEAlgorithm": "AES256"}}]})):
            msg = raises("NotImplemented", 501, call)
            assert "remote store" in msg and "encrypt" in msg
        assert c.list_objects_v2(Bucket=b).get("KeyCount", 0) == 0
        c.put_object(Bucket=b, Key="plain", Body=b"p")
        raises("InvalidRequest", 400,
               lambda: c.get_object(Bucket=b, Key="plain", **sse_c(rkey())))
    finally:
        d.stop_all()
