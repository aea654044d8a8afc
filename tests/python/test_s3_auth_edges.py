"""S3 authentication edges ("Safe to put on the internet", section 6).

- header-signed requests, SigV2 and SigV4 alike, must be dated within AWS's 15 minutes;
- anonymous reads of public objects may not use the response-* overrides;
- conditional writes (If-None-Match: *, If-Match) are decided atomically with the write.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import hmac
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import botocore.auth
import pytest
import requests
from botocore.exceptions import ClientError

import harness
from harness import expect_error

PUBLIC = harness.PUBLIC_BUCKET


def _http_date(when: float) -> str:
    return email.utils.formatdate(when, usegmt=True)


def _v2_get(endpoint: str, path: str, headers: dict[str, str],
            access_key: str = harness.ACCESS_KEY,
            secret_key: str = harness.SECRET_KEY) -> requests.Response:
    """A GET signed by hand with SigV2 header auth (`Authorization: AWS AK:sig`).

    ``headers`` holds Date and/or x-amz-* headers; when x-amz-date is present, the Date line
    of the string to sign is empty, as AWS specifies.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    date_line = "" if "x-amz-date" in lower else lower.get("date", "")
    amz = "".join(f"{k}:{v.strip()}\n" for k, v in sorted(lower.items()) if k.startswith("x-amz-"))
    string_to_sign = f"GET\n\n\n{date_line}\n{amz}{path}"
    sig = base64.b64encode(
        hmac.new(secret_key.encode(), string_to_sign.encode(), hashlib.sha1).digest()).decode()
    return requests.get(f"{endpoint}{path}",
                        headers={**headers, "Authorization": f"AWS {access_key}:{sig}"},
                        timeout=10)


@pytest.fixture
def secret_object(s3, bucket):
    s3.put_object(Bucket=bucket, Key="secret.txt", Body=b"top secret", ContentType="text/plain")
    return f"/{bucket}/secret.txt"


@pytest.mark.pixelport_only
def test_sigv2_header_auth_has_a_fifteen_minute_window(server, secret_object):
    """A SigV2 header-signed request dated 20 minutes ago (or ahead) is refused with 403
    RequestTimeTooSkewed; a fresh one is served."""
    # Regression: SigV2 header auth had no Date window, so a captured `Authorization: AWS
    # AK:sig` request could be replayed forever (s3s checks the date of SigV4 only).
    ep = server.endpoint
    now = time.time()
    for skew in (-20 * 60, 20 * 60):
        r = _v2_get(ep, secret_object, {"Date": _http_date(now + skew)})
        assert r.status_code == 403, (skew, r.status_code, r.text)
        assert harness.error_code(r) == "RequestTimeTooSkewed", r.text
        assert b"top secret" not in r.content
    # x-amz-date takes the place of Date, in the signature and in the window.
    r = _v2_get(ep, secret_object, {"Date": _http_date(now),
                                    "x-amz-date": _http_date(now - 20 * 60)})
    assert r.status_code == 403 and harness.error_code(r) == "RequestTimeTooSkewed", r.text

    fresh = _v2_get(ep, secret_object, {"Date": _http_date(now)})
    assert fresh.status_code == 200, fresh.text
    assert fresh.content == b"top secret"
    fresh = _v2_get(ep, secret_object, {"x-amz-date": _http_date(now - 10 * 60)})
    assert fresh.status_code == 200, fresh.text
    # A wrong secret is still a signature mismatch, not a date problem.
    bad = _v2_get(ep, secret_object, {"Date": _http_date(now)}, secret_key="wrong")
    assert bad.status_code == 403 and harness.error_code(bad) == "SignatureDoesNotMatch"


def test_sigv4_header_auth_has_a_fifteen_minute_window(server, secret_object, monkeypatch):
    """A SigV4 header-signed request dated 20 minutes ago is refused with 403
    RequestTimeTooSkewed; a fresh one is served."""
    # Proof, not a regression: s3s 0.14 already holds SigV4's x-amz-date to 900 s
    # (S3Config::presigned_url_max_skew_time_secs), so Pixelport does not re-implement it.
    stale = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(minutes=20)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: stale)
    r = harness.signed_request(server.endpoint, "GET", secret_object)
    assert r.status_code == 403, r.text
    assert harness.error_code(r) == "RequestTimeTooSkewed", r.text
    monkeypatch.undo()
    ok = harness.signed_request(server.endpoint, "GET", secret_object)
    assert ok.status_code == 200 and ok.content == b"top secret"


def test_presigned_urls_keep_their_own_expiry(server, s3, secret_object):
    """Presigned URLs (V2 and V4) are not held to the 15-minute window: a URL valid for an
    hour works, and one that expired is refused."""
    bucket, key = secret_object.split("/")[1:]
    v2 = harness.make_client(server.endpoint, signature_version="s3")
    for client in (s3, v2):
        url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                            ExpiresIn=3600)
        r = requests.get(url, timeout=10)
        assert r.status_code == 200 and r.content == b"top secret", (url, r.text)
    url = v2.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                    ExpiresIn=1)
    time.sleep(2.5)
    r = requests.get(url, timeout=10)
    assert r.status_code == 403 and harness.error_code(r) == "AccessDenied", r.text


@pytest.fixture(scope="module")
def public(s3):
    """The bucket named in public_buckets, holding an HTML-looking object stored as text/plain."""
    s3.create_bucket(Bucket=PUBLIC)
    s3.put_object(Bucket=PUBLIC, Key="note.txt", Body=b"<script>alert(1)</script>",
                  ContentType="text/plain")
    yield PUBLIC
    harness.empty_bucket(s3, PUBLIC)


OVERRIDES = {
    "response-content-type": "text/html",
    "response-content-disposition": "inline",
    "response-cache-control": "public, max-age=31536000",
    "response-content-encoding": "gzip",
    "response-content-language": "fr",
    "response-expires": "Thu, 01 Dec 2094 16:00:00 GMT",
}


@pytest.mark.pixelport_only
def test_anonymous_reads_cannot_override_response_headers(server, s3, public):
    """An anonymous GET or HEAD of a public object with a response-* override is answered
    400 InvalidRequest (as AWS does) and never comes back as text/html; signed requests may
    still use the overrides."""
    # Regression: `GET /public-bucket/note.txt?response-content-type=text/html` without
    # credentials served the object as text/html: stored XSS on the S3 origin.
    url = f"{server.endpoint}/{public}/note.txt"
    for name, value in OVERRIDES.items():
        r = requests.get(url, params={name: value}, timeout=10)
        assert r.status_code == 400, (name, r.status_code, r.headers, r.text)
        assert harness.error_code(r) == "InvalidRequest", r.text
        assert "text/html" not in r.headers.get("Content-Type", ""), r.headers
        assert b"<script>" not in r.content
        h = requests.head(url, params={name: value}, timeout=10)
        assert h.status_code == 400, (name, h.status_code, h.headers)
        assert "text/html" not in h.headers.get("Content-Type", "")

    plain = requests.get(url, timeout=10)
    assert plain.status_code == 200
    assert plain.headers["Content-Type"] == "text/plain"

    got = s3.get_object(Bucket=public, Key="note.txt", ResponseContentType="text/html",
                        ResponseContentDisposition="attachment")
    assert got["ContentType"] == "text/html"
    assert got["ContentDisposition"] == "attachment"


def _race(fns):
    """Run the callables at once (released together by a barrier); return their outcomes:
    the result, or the S3 error code of a ClientError."""
    barrier = threading.Barrier(len(fns))

    def run(fn):
        barrier.wait(timeout=30)
        try:
            return fn()
        except ClientError as e:
            return (e.response["Error"]["Code"],
                    e.response["ResponseMetadata"]["HTTPStatusCode"])

    with ThreadPoolExecutor(len(fns)) as pool:
        return list(pool.map(run, fns))


def test_racing_create_only_puts_have_one_winner(server, bucket):
    """20 rounds of two concurrent PutObject(If-None-Match: *) of one key: exactly one
    succeeds, the other gets 412 PreconditionFailed, and the object is the winner's."""
    # Regression: If-None-Match was decided by a HEAD before the write, so two racing
    # create-only PUTs both saw no object and both succeeded (the second one overwrote).
    clients = [server.client(), server.client()]
    # Bodies above the inline limit, so both writers spend time spooling before the commit.
    bodies = [harness.pattern_bytes(300_000, seed=1), harness.pattern_bytes(300_000, seed=2)]
    for round_ in range(20):
        key = f"race-{round_}"

        def put(i, key=key):
            return clients[i].put_object(Bucket=bucket, Key=key, Body=bodies[i],
                                         IfNoneMatch="*")["ETag"]

        outcomes = _race([lambda: put(0), lambda: put(1)])
        winners = [i for i, o in enumerate(outcomes) if isinstance(o, str)]
        assert len(winners) == 1, (round_, outcomes)
        loser = outcomes[1 - winners[0]]
        assert loser == ("PreconditionFailed", 412), (round_, outcomes)
        got = clients[0].get_object(Bucket=bucket, Key=key)
        assert got["ETag"] == outcomes[winners[0]]
        assert got["Body"].read() == bodies[winners[0]]


def test_racing_create_only_completions_have_one_winner(server, bucket):
    """Two multipart uploads of one key completed at once with If-None-Match: *: exactly one
    completes, the other gets 412 and its upload stays (it can still be aborted)."""
    # Regression: CompleteMultipartUpload ignored If-None-Match altogether.
    clients = [server.client(), server.client()]
    for round_ in range(5):
        key = f"mpu-race-{round_}"
        uploads = []
        for i, c in enumerate(clients):
            up = c.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
            etag = c.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=1,
                                 Body=bytes([i]) * 1000)["ETag"]
            uploads.append((up, etag))

        def complete(i, key=key):
            up, etag = uploads[i]
            return clients[i].complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=up, IfNoneMatch="*",
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})["ETag"]

        outcomes = _race([lambda: complete(0), lambda: complete(1)])
        winners = [i for i, o in enumerate(outcomes) if isinstance(o, str)]
        assert len(winners) == 1, (round_, outcomes)
        loser = 1 - winners[0]
        assert outcomes[loser] == ("PreconditionFailed", 412), (round_, outcomes)
        body = clients[0].get_object(Bucket=bucket, Key=key)["Body"].read()
        assert body == bytes([winners[0]]) * 1000
        up, _ = uploads[loser]
        assert clients[0].list_parts(Bucket=bucket, Key=key, UploadId=up)["Parts"]
        clients[0].abort_multipart_upload(Bucket=bucket, Key=key, UploadId=up)


def test_conditional_writes_on_every_backend(backend_daemon):
    """If-None-Match: * and If-Match on PutObject and CompleteMultipartUpload, one after the
    other, on the embedded and the remote store (which hands them to its cluster)."""
    s3 = backend_daemon.client()
    bucket = harness.unique_name("cond")
    s3.create_bucket(Bucket=bucket)
    try:
        first = s3.put_object(Bucket=bucket, Key="k", Body=b"one", IfNoneMatch="*")["ETag"]
        expect_error("PreconditionFailed", 412, s3.put_object, Bucket=bucket, Key="k",
                     Body=b"two", IfNoneMatch="*")
        expect_error("PreconditionFailed", 412, s3.put_object, Bucket=bucket, Key="k",
                     Body=b"two", IfMatch='"00000000000000000000000000000000"')
        expect_error("PreconditionFailed", 412, s3.put_object, Bucket=bucket, Key="missing",
                     Body=b"two", IfMatch=first)
        second = s3.put_object(Bucket=bucket, Key="k", Body=b"two", IfMatch=first)["ETag"]
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"two"
        expect_error("PreconditionFailed", 412, s3.put_object, Bucket=bucket, Key="k",
                     Body=b"three", IfMatch=first)
        assert s3.head_object(Bucket=bucket, Key="k")["ETag"] == second

        up = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
        etag = s3.upload_part(Bucket=bucket, Key="k", UploadId=up, PartNumber=1,
                              Body=b"multi")["ETag"]
        parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
        expect_error("PreconditionFailed", 412, s3.complete_multipart_upload, Bucket=bucket,
                     Key="k", UploadId=up, MultipartUpload=parts, IfNoneMatch="*")
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"two"
        s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=up,
                                     MultipartUpload=parts, IfMatch=second)
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"multi"
    finally:
        harness.empty_bucket(s3, bucket)
