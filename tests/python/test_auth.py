"""Authentication and access control, seen from plain HTTP and SDK clients."""

from __future__ import annotations

import datetime as dt
import time
import urllib.parse

import botocore.auth
import pytest
import requests

import harness
from harness import expect_error, pattern_bytes

PUBLIC = harness.PUBLIC_BUCKET


@pytest.fixture(scope="module")
def private(s3):
    """A private bucket holding the object "secret.txt"."""
    name = harness.unique_name("priv")
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="secret.txt", Body=b"top secret", ContentType="text/plain")
    yield name
    harness.empty_bucket(s3, name)


@pytest.fixture(scope="module")
def public(s3):
    """The bucket named in public_buckets, holding "img/cat.jpg"."""
    s3.create_bucket(Bucket=PUBLIC)
    s3.put_object(Bucket=PUBLIC, Key="img/cat.jpg", Body=pattern_bytes(5000, seed=200),
                  ContentType="image/jpeg")
    yield PUBLIC
    harness.empty_bucket(s3, PUBLIC)


def _access_denied(resp: requests.Response, head: bool = False) -> None:
    assert resp.status_code == 403, (resp.status_code, resp.text)
    if not head:
        assert harness.error_code(resp) == "AccessDenied", resp.text


def test_anonymous_requests_are_denied(server, s3, private):
    """Unsigned requests to the service, a private bucket or its objects get 403 AccessDenied and change nothing."""
    ep = server.endpoint
    _access_denied(requests.get(f"{ep}/", timeout=10))
    _access_denied(requests.get(f"{ep}/{private}", timeout=10))
    _access_denied(requests.get(f"{ep}/{private}?list-type=2", timeout=10))
    _access_denied(requests.get(f"{ep}/{private}/secret.txt", timeout=10))
    _access_denied(requests.head(f"{ep}/{private}/secret.txt", timeout=10), head=True)
    _access_denied(requests.put(f"{ep}/{private}/planted.txt", data=b"evil", timeout=10))
    _access_denied(requests.delete(f"{ep}/{private}/secret.txt", timeout=10))
    _access_denied(requests.put(f"{ep}/{harness.unique_name('anon')}", timeout=10))
    assert s3.get_object(Bucket=private, Key="secret.txt")["Body"].read() == b"top secret"
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=private, Key="planted.txt")


@pytest.mark.pixelport_only
def test_public_bucket_allows_anonymous_reads_only(server, s3, public, private):
    """Objects in a bucket listed in public_buckets can be fetched (GET, HEAD, Range) without credentials; anonymous writes and deletes there are still refused."""
    ep = server.endpoint
    data = pattern_bytes(5000, seed=200)
    r = requests.get(f"{ep}/{public}/img/cat.jpg", timeout=10)
    assert r.status_code == 200, r.text
    assert r.content == data
    assert r.headers["Content-Type"] == "image/jpeg"
    assert r.headers["ETag"] == f'"{harness.md5_hex(data)}"'
    h = requests.head(f"{ep}/{public}/img/cat.jpg", timeout=10)
    assert h.status_code == 200
    assert int(h.headers["Content-Length"]) == len(data)
    rg = requests.get(f"{ep}/{public}/img/cat.jpg", headers={"Range": "bytes=10-19"}, timeout=10)
    assert rg.status_code == 206
    assert rg.content == data[10:20]

    _access_denied(requests.put(f"{ep}/{public}/img/evil.jpg", data=b"evil", timeout=10))
    _access_denied(requests.delete(f"{ep}/{public}/img/cat.jpg", timeout=10))
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=public, Key="img/evil.jpg")
    assert s3.get_object(Bucket=public, Key="img/cat.jpg")["Body"].read() == data
    # Being public is per bucket: the private one stays closed.
    _access_denied(requests.get(f"{ep}/{private}/secret.txt", timeout=10))


def test_wrong_secret_is_signature_mismatch(server, s3, private):
    """A request signed with the wrong secret key gets 403 SignatureDoesNotMatch and writes nothing."""
    bad = harness.make_client(server.endpoint, harness.ACCESS_KEY, "not-the-secret-key")
    expect_error("SignatureDoesNotMatch", 403, bad.list_buckets)
    expect_error("SignatureDoesNotMatch", 403, bad.put_object, Bucket=private, Key="bad-secret",
                 Body=b"x")
    expect_error("SignatureDoesNotMatch", 403, bad.get_object, Bucket=private, Key="secret.txt")
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=private, Key="bad-secret")


def test_unknown_access_key(server, private):
    """A request with an access key the daemon does not know gets 403 InvalidAccessKeyId."""
    bad = harness.make_client(server.endpoint, "AKIAUNKNOWNKEY000000", harness.SECRET_KEY)
    expect_error("InvalidAccessKeyId", 403, bad.list_buckets)
    expect_error("InvalidAccessKeyId", 403, bad.get_object, Bucket=private, Key="secret.txt")


def test_presigned_v4_get_and_put(s3, private):
    """SigV4 presigned GET and PUT URLs from boto3 work with a plain HTTP client."""
    url = s3.generate_presigned_url("get_object", Params={"Bucket": private, "Key": "secret.txt"},
                                    ExpiresIn=300)
    assert "X-Amz-Signature=" in url
    r = requests.get(url, timeout=10)
    assert r.status_code == 200, r.text
    assert r.content == b"top secret"

    data = pattern_bytes(40_000, seed=201)
    put_url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": private, "Key": "uploaded/by-url.png",
                              "ContentType": "image/png"}, ExpiresIn=300)
    r = requests.put(put_url, data=data, headers={"Content-Type": "image/png"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == f'"{harness.md5_hex(data)}"'
    got = s3.get_object(Bucket=private, Key="uploaded/by-url.png")
    assert got["Body"].read() == data
    assert got["ContentType"] == "image/png"


def test_presigned_v2_get(server, private):
    """A SigV2 presigned GET URL (boto3 signature_version='s3') works with a plain HTTP client."""
    v2 = harness.make_client(server.endpoint, signature_version="s3")
    url = v2.generate_presigned_url("get_object", Params={"Bucket": private, "Key": "secret.txt"},
                                    ExpiresIn=300)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert set(query) >= {"AWSAccessKeyId", "Signature", "Expires"}, url
    r = requests.get(url, timeout=10)
    assert r.status_code == 200, r.text
    assert r.content == b"top secret"


def _with_query(url: str, **changes) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query = [(k, changes.get(k, v)) for k, v in query]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _flip(sig: str) -> str:
    return sig[:-1] + ("0" if sig[-1] != "0" else "1")


def test_tampered_presigned_urls_are_refused(server, s3, private):
    """Presigned URLs with an altered signature, key or expiry are refused with 403 and serve no data."""
    v4 = s3.generate_presigned_url("get_object", Params={"Bucket": private, "Key": "secret.txt"},
                                   ExpiresIn=300)
    sig = urllib.parse.parse_qs(urllib.parse.urlsplit(v4).query)["X-Amz-Signature"][0]
    for url in (_with_query(v4, **{"X-Amz-Signature": _flip(sig)}),
                _with_query(v4, **{"X-Amz-Expires": "3000"}),
                v4.replace("/secret.txt?", "/secret.txx?")):
        r = requests.get(url, timeout=10)
        assert r.status_code == 403, (url, r.status_code, r.text)
        assert b"top secret" not in r.content

    v2c = harness.make_client(server.endpoint, signature_version="s3")
    v2 = v2c.generate_presigned_url("get_object", Params={"Bucket": private, "Key": "secret.txt"},
                                    ExpiresIn=300)
    sig2 = urllib.parse.parse_qs(urllib.parse.urlsplit(v2).query)["Signature"][0]
    expires = urllib.parse.parse_qs(urllib.parse.urlsplit(v2).query)["Expires"][0]
    for url in (_with_query(v2, Signature="A" + sig2[1:] if sig2[0] != "A" else "B" + sig2[1:]),
                _with_query(v2, Expires=str(int(expires) + 1000))):
        r = requests.get(url, timeout=10)
        assert r.status_code == 403, (url, r.status_code, r.text)
        assert b"top secret" not in r.content


def test_expired_presigned_url(s3, private):
    """A presigned URL used after its expiry is refused with 403 AccessDenied."""
    url = s3.generate_presigned_url("get_object", Params={"Bucket": private, "Key": "secret.txt"},
                                    ExpiresIn=1)
    time.sleep(2.5)
    r = requests.get(url, timeout=10)
    assert r.status_code == 403, r.text
    assert harness.error_code(r) == "AccessDenied"


def test_stale_request_date_is_refused(server, private, monkeypatch):
    """A header-signed request dated 20 minutes ago is refused with 403 RequestTimeTooSkewed (replay protection)."""
    stale = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(minutes=20)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: stale)
    r = harness.signed_request(server.endpoint, "GET", f"/{private}/secret.txt")
    assert r.status_code == 403, r.text
    assert harness.error_code(r) == "RequestTimeTooSkewed"
    monkeypatch.undo()
    ok = harness.signed_request(server.endpoint, "GET", f"/{private}/secret.txt")
    assert ok.status_code == 200 and ok.content == b"top secret"
