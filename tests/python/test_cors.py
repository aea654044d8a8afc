"""CORS: PutBucketCors, GetBucketCors and DeleteBucketCors, the S3 listener's preflights and
response headers from a bucket's rules, and the image listener's `[images] allow_origin`.

Before this, every one of these calls answered NotImplemented, OPTIONS got s3s's error,
and no response carried an `Access-Control-*` header. A page on another origin could not
upload with a presigned URL, read an object, or read the pixels of a resized image. The
seed's own instructions need it: "Configure CORS on MinIO for cross-domain image serving".
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError
from PIL import Image

import harness

pytestmark = pytest.mark.pixelport_only

BROWSER_DIR = harness.REPO_ROOT / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
TOKEN = "cors-admin-token-0123456789abcdef"

SITE = "https://app.example.com"
RULES = {"CORSRules": [
    {"AllowedOrigins": ["https://*.example.com"], "AllowedMethods": ["PUT", "POST", "DELETE"],
     "AllowedHeaders": ["content-type", "x-amz-*"], "ExposeHeaders": ["ETag"],
     "MaxAgeSeconds": 600, "ID": "uploads"},
    {"AllowedOrigins": ["*"], "AllowedMethods": ["GET", "HEAD"]},
]}


code = harness.client_error


def test_bucket_cors_round_trip_and_errors(backend_daemon):
    """Both stores: the rules come back as stored; every documented error case answers
    AWS's code and status."""
    c = backend_daemon.client()
    bucket = harness.unique_name("cors")
    c.create_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        c.get_bucket_cors(Bucket=bucket)
    assert code(e.value) == ("NoSuchCORSConfiguration", 404)
    c.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    got = c.get_bucket_cors(Bucket=bucket)["CORSRules"]
    assert got == RULES["CORSRules"], got

    bad_method = {"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}]}
    bad_wildcard = {"CORSRules": [{"AllowedOrigins": ["https://*.*.example"],
                                   "AllowedMethods": ["GET"]}]}
    for config in (bad_method, bad_wildcard):
        with pytest.raises(ClientError) as e:
            c.put_bucket_cors(Bucket=bucket, CORSConfiguration=config)
        assert code(e.value) == ("InvalidRequest", 400), config
    too_many = {"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}] * 101}
    with pytest.raises(ClientError) as e:
        c.put_bucket_cors(Bucket=bucket, CORSConfiguration=too_many)
    assert code(e.value) == ("InvalidRequest", 400)
    # A refused configuration leaves the stored one as it was.
    assert c.get_bucket_cors(Bucket=bucket)["CORSRules"] == RULES["CORSRules"]

    for call in (lambda: c.get_bucket_cors(Bucket="no-such-bucket-cors"),
                 lambda: c.put_bucket_cors(Bucket="no-such-bucket-cors", CORSConfiguration=RULES),
                 lambda: c.delete_bucket_cors(Bucket="no-such-bucket-cors")):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e.value) == ("NoSuchBucket", 404)

    c.delete_bucket_cors(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        c.get_bucket_cors(Bucket=bucket)
    assert code(e.value) == ("NoSuchCORSConfiguration", 404)
    c.delete_bucket_cors(Bucket=bucket)  # deleting none is not an error, as in S3

    # Only the owner may read or change the rules.
    xml = ("<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin>"
           "<AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>")
    r = requests.put(f"{backend_daemon.endpoint}/{bucket}?cors", data=xml, timeout=30)
    assert r.status_code == 403, r.text
    r = requests.get(f"{backend_daemon.endpoint}/{bucket}?cors", timeout=30)
    assert r.status_code == 403, r.text


def preflight(d, path: str, origin: str | None, method: str | None, headers: str | None = None):
    h = {}
    if origin:
        h["Origin"] = origin
    if method:
        h["Access-Control-Request-Method"] = method
    if headers:
        h["Access-Control-Request-Headers"] = headers
    return requests.options(d.endpoint + path, headers=h, timeout=30)


def test_preflights_and_response_headers_follow_the_rules(daemon):
    c = daemon.client()
    bucket = harness.unique_name("corsh")
    c.create_bucket(Bucket=bucket)
    c.put_object(Bucket=bucket, Key="a.txt", Body=b"hello")
    path = f"/{bucket}/a.txt"

    # No rules yet: refused, and a real request gets no CORS header.
    r = preflight(daemon, path, SITE, "GET")
    assert r.status_code == 403 and "AccessForbidden" in r.text, r.text
    url = c.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "a.txt"})
    r = requests.get(url, headers={"Origin": SITE}, timeout=30)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers

    c.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    r = preflight(daemon, path, SITE, "PUT", "Content-Type, X-Amz-Meta-Note")
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == SITE
    assert r.headers["access-control-allow-methods"] == "PUT, POST, DELETE"
    assert r.headers["access-control-allow-headers"] == "content-type, x-amz-meta-note"
    assert r.headers["access-control-expose-headers"] == "ETag"
    assert r.headers["access-control-max-age"] == "600"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert "Origin" in r.headers["vary"]

    # A header outside the rule, an origin outside it, a method outside it: refused.
    assert preflight(daemon, path, SITE, "PUT", "authorization").status_code == 403
    assert preflight(daemon, path, "https://evil.test", "PUT").status_code == 403
    assert preflight(daemon, path, SITE, "PATCH").status_code == 403
    # The second rule lets any origin GET, answered with `*` and no credentials.
    r = preflight(daemon, path, "https://evil.test", "GET")
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in r.headers
    # Malformed preflights.
    r = preflight(daemon, path, None, "GET")
    assert r.status_code == 400 and "Origin" in r.text
    r = preflight(daemon, path, SITE, None)
    assert r.status_code == 400 and "Access-Control-Request-Method" in r.text

    # Real requests: headers when a rule allows the origin and method, none otherwise.
    r = requests.get(url, headers={"Origin": "https://anywhere.test"}, timeout=30)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    put = c.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "b.txt"})
    r = requests.put(put, data=b"x", headers={"Origin": SITE}, timeout=30)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == SITE
    assert r.headers["access-control-expose-headers"] == "ETag"
    r = requests.put(put, data=b"x", headers={"Origin": "https://evil.test"}, timeout=30)
    assert "access-control-allow-origin" not in r.headers
    # An error answer is readable by an allowed page too.
    missing = c.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "nope"})
    r = requests.get(missing, headers={"Origin": SITE}, timeout=30)
    assert r.status_code == 404 and r.headers["access-control-allow-origin"] == "*"


def test_aws_cli_rules_survive_a_restart_and_die_with_the_bucket(tmp_path):
    """`aws s3api put-bucket-cors` as the guides write it; the rules survive a restart; a
    bucket deleted and created again (through S3) starts without rules, and private,
    even when the admin had made the old one public. Before this, a bucket deleted through
    S3 kept its admin choices for the next bucket of that name."""
    d = harness.Daemon(tmp_path / "d", admin_config=f'token = "{TOKEN}"\n').start()
    try:
        aws = harness.AwsCli(d.endpoint)
        aws("s3", "mb", "s3://site-assets")
        rules = tmp_path / "cors.json"
        rules.write_text(json.dumps(RULES))
        aws("s3api", "put-bucket-cors", "--bucket", "site-assets",
            "--cors-configuration", f"file://{rules}")
        d.stop()
        d.restart()
        got = json.loads(aws("s3api", "get-bucket-cors", "--bucket", "site-assets").stdout)
        assert got["CORSRules"] == RULES["CORSRules"], got

        admin = requests.Session()
        admin.headers["Authorization"] = f"Bearer {TOKEN}"
        r = admin.put(f"{d.admin_url}/api/buckets/site-assets/public", json={"public": True},
                      timeout=30)
        assert r.status_code == 200, r.text
        d.client().put_object(Bucket="site-assets", Key="k", Body=b"v")
        assert requests.get(f"{d.endpoint}/site-assets/k", timeout=30).status_code == 200

        aws("s3", "rb", "--force", "s3://site-assets")
        aws("s3", "mb", "s3://site-assets")
        cp = aws("s3api", "get-bucket-cors", "--bucket", "site-assets", check=False)
        assert cp.returncode != 0 and "NoSuchCORSConfiguration" in cp.stderr, cp.stderr
        d.client().put_object(Bucket="site-assets", Key="k", Body=b"v2")
        assert requests.get(f"{d.endpoint}/site-assets/k", timeout=30).status_code == 403
    finally:
        d.stop_all()


def png(color: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def test_image_listener_allow_origin(tmp_path):
    """`[images] allow_origin` (IMGPROXY_ALLOW_ORIGIN): on every response, preflights
    answered; unset, no CORS header."""
    d = harness.Daemon(tmp_path / "d", images_config='allow_origin = "*"\n').start()
    try:
        c = d.client()
        c.create_bucket(Bucket="pics")
        c.put_object(Bucket="pics", Key="red.png", Body=png((200, 30, 40), (64, 64)))
        url = f"{d.images_url}/unsafe/rs:fit:32:32/plain/s3://pics/red.png"
        r = requests.options(url, headers={"Origin": SITE, "Access-Control-Request-Method": "GET"},
                             timeout=30)
        assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "*"
        assert "GET" in r.headers["access-control-allow-methods"]
        for _ in range(2):  # a miss, then a cache hit
            r = requests.get(url, headers={"Origin": SITE}, timeout=30)
            assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
        r = requests.get(f"{d.images_url}/unsafe/rs:fit:32:32/plain/s3://pics/none.png",
                         timeout=30)
        assert r.status_code == 404 and r.headers["access-control-allow-origin"] == "*"

        d.images_config = "allow_unsafe = true\n"
        d.stop()
        d.restart()
        r = requests.get(url, headers={"Origin": SITE}, timeout=30)
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        r = requests.options(url, timeout=30)
        assert r.status_code == 405 and "access-control-allow-origin" not in r.headers
    finally:
        d.stop_all()


class Page(harness.StaticSite):
    """A page on another origin (its own port)."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.url = self.page("index.html", "<!doctype html><title>other origin</title><p>site")


def run_page(page: Page, put_url: str, get_url: str, image_url: str) -> dict:
    node = shutil.which("node")
    if not node or not Path(CHROMIUM).exists() or not (
            BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.fail("the browser test needs node, Chromium and tests/browser/node_modules: "
                    "run scripts/setup-test-deps.sh", pytrace=False)
    env = {**harness.run_env_isolated(), "PAGE_URL": page.url, "PUT_URL": put_url,
           "GET_URL": get_url, "IMAGE_URL": image_url, "CHROMIUM": CHROMIUM}
    cp = subprocess.run([node, str(BROWSER_DIR / "cors.mjs")], cwd=BROWSER_DIR, env=env,
                        capture_output=True, text=True, timeout=300)
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout.strip().splitlines()[-1])


def test_a_page_on_another_origin_uploads_reads_and_draws(tmp_path):
    """Headless Chromium on a page served from another origin: a presigned PUT with
    fetch, a fetch of an object, and a resized image read back from a canvas. With the
    rules each works; without them the browser refuses each."""
    d = harness.Daemon(tmp_path / "d", images_config='allow_origin = "*"\n').start()
    page = Page(tmp_path / "site")
    try:
        c = d.client()
        c.create_bucket(Bucket="uploads")
        c.put_object(Bucket="uploads", Key="blue.png", Body=png((20, 120, 220), (80, 60)))
        c.put_object(Bucket="uploads", Key="hello.txt", Body=b"hello from pixelport")
        page_origin = page.url.rsplit("/", 1)[0]
        c.put_bucket_cors(Bucket="uploads", CORSConfiguration={"CORSRules": [
            {"AllowedOrigins": [page_origin], "AllowedMethods": ["GET", "PUT"],
             "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"]}]})

        def urls(key: str):
            put = c.generate_presigned_url("put_object", Params={"Bucket": "uploads", "Key": key})
            get = c.generate_presigned_url("get_object",
                                           Params={"Bucket": "uploads", "Key": "hello.txt"})
            image = f"{d.images_url}/unsafe/rs:fit:40:40/plain/s3://uploads/blue.png@png"
            return put, get, image

        ok = run_page(page, *urls("from-browser.txt"))
        assert ok["put"]["ok"] and ok["put"]["value"]["status"] == 200, ok
        assert ok["put"]["value"]["etag"], ok  # exposed by the rule
        body = c.get_object(Bucket="uploads", Key="from-browser.txt")["Body"].read()
        assert body == f"uploaded from {page_origin}".encode()
        assert ok["get"] == {"ok": True, "value": {"status": 200, "text": "hello from pixelport"}}
        assert ok["canvas"]["ok"], ok
        canvas = ok["canvas"]["value"]
        assert (canvas["width"], canvas["height"]) == (40, 30), canvas
        r, g, b, a = canvas["pixel"]
        assert abs(r - 20) <= 3 and abs(g - 120) <= 3 and abs(b - 220) <= 3 and a == 255, canvas

        # Without the rules (and without allow_origin), the browser refuses all three.
        c.delete_bucket_cors(Bucket="uploads")
        d.images_config = "allow_unsafe = true\n"
        d.stop()
        d.restart()
        refused = run_page(page, *urls("refused.txt"))
        for what in ("put", "get", "canvas"):
            assert not refused[what]["ok"], (what, refused)
        with pytest.raises(ClientError):
            c.head_object(Bucket="uploads", Key="refused.txt")
    finally:
        page.close()
        d.stop_all()
