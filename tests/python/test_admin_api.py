"""The admin API (docs/admin-api.md) against the real daemon: authentication (sessions,
CSRF, bearer token, login rate limit), every endpoint's answers and their effect as S3
clients and image visitors see it, and `pixelport cache stats|purge` online and offline.

The browser side is test_admin_ui.py.
"""

from __future__ import annotations

import io
import json
import subprocess

import pytest
import requests
from PIL import Image

import harness

PHOTO = harness.REPO_ROOT.parent / "shared" / "images" / "rocket-640x427.jpg"
OTHER = harness.REPO_ROOT.parent / "shared" / "images" / "path-2560x1600.jpg"
TOKEN = "test-admin-token-0123456789abcdef"
PASSWORD = "correct horse battery staple"


def hash_password(password: str) -> str:
    cp = subprocess.run([str(harness.pixelport_bin()), "hash-password"], input=password + "\n",
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout.strip()


@pytest.fixture(scope="module")
def password_hash():
    h = hash_password(PASSWORD)
    assert h.startswith("$argon2id$"), h
    return h


def admin_config(password_hash: str) -> str:
    return f'user = "root"\npassword_hash = "{password_hash}"\ntoken = "{TOKEN}"\n'


@pytest.fixture(scope="module")
def d(tmp_path_factory, password_hash):
    d = harness.Daemon(tmp_path_factory.mktemp("admin-api"), admin_config=admin_config(password_hash))
    try:
        d.start()
    except Exception:
        d.stop_all()
        raise
    yield d
    d.stop_all()


class Api:
    """requests against the admin listener, with the bearer token unless told otherwise."""

    def __init__(self, d: harness.Daemon, token: str | None = TOKEN):
        self.base = d.admin_url
        self.s = requests.Session()
        if token:
            self.s.headers["Authorization"] = f"Bearer {token}"

    def __call__(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 60)
        return self.s.request(method, self.base + path, **kw)


@pytest.fixture(scope="module")
def api(d):
    return Api(d)


def login(d: harness.Daemon, password: str = PASSWORD, user: str = "root", **kw):
    return requests.post(d.admin_url + "/api/login", json={"user": user, "password": password},
                         timeout=60, **kw)


def assert_error(r: requests.Response, status: int, code: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert body["error"] == code and body["message"], body
    return body


PROTECTED = [
    ("POST", "/api/logout"), ("GET", "/api/session"), ("GET", "/api/overview"),
    ("GET", "/api/buckets"), ("POST", "/api/buckets"), ("DELETE", "/api/buckets/abc"),
    ("PUT", "/api/buckets/abc/public"), ("GET", "/api/buckets/abc/objects"),
    ("GET", "/api/buckets/abc/object?key=k"), ("PUT", "/api/buckets/abc/object?key=k"),
    ("DELETE", "/api/buckets/abc/object?key=k"), ("POST", "/api/buckets/abc/uploads?key=k"),
    ("PUT", "/api/buckets/abc/uploads/u1?key=k&part=1"), ("DELETE", "/api/buckets/abc/uploads/u1?key=k"),
    ("POST", "/api/buckets/abc/uploads/u1/complete?key=k"), ("POST", "/api/sign"),
    ("GET", "/api/cache"), ("POST", "/api/cache/purge"), ("GET", "/api/keys"),
    ("POST", "/api/keys"), ("DELETE", "/api/keys/AK"), ("GET", "/api/settings"),
    ("GET", "/img/unsafe/rs:fit:10:10/plain/s3://abc/k"),
]


@pytest.mark.parametrize("method,path", PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
def test_every_endpoint_refuses_anonymous_and_wrong_token(d, method, path):
    anon = Api(d, token=None)
    assert_error(anon(method, path, data=b"{}"), 401, "unauthenticated")
    assert_error(Api(d, token="wrong-token-wrong-token")(method, path, data=b"{}"), 401,
                 "unauthenticated")
    # A stale or forged session cookie is no better.
    assert_error(anon(method, path, data=b"{}", cookies={"pixelport_session": "0" * 64}), 401,
                 "unauthenticated")


def test_login_session_cookie_csrf_and_logout(d):
    assert_error(login(d, "wrong"), 401, "invalid_credentials")
    assert_error(login(d, PASSWORD, user="admin"), 401, "invalid_credentials")
    r = login(d)
    assert r.status_code == 200, r.text
    csrf = r.json()["csrf"]
    assert r.json()["user"] == "root" and len(csrf) >= 32
    cookie = r.headers["set-cookie"]
    for flag in ("HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag in cookie, cookie
    assert "Secure" not in cookie, "plain HTTP login must not set a Secure cookie"
    sid = r.cookies["pixelport_session"]
    jar = {"pixelport_session": sid}
    s = requests.get(d.admin_url + "/api/session", cookies=jar, timeout=30)
    assert s.status_code == 200 and s.json()["csrf"] == csrf
    # Changes with the cookie need the CSRF token: missing or wrong is 403, right works.
    name = harness.unique_name("csrf")
    url = d.admin_url + "/api/buckets"
    assert_error(requests.post(url, json={"name": name}, cookies=jar, timeout=30), 403, "csrf")
    assert_error(requests.post(url, json={"name": name}, cookies=jar, timeout=30,
                               headers={"X-CSRF-Token": "0" * len(csrf)}), 403, "csrf")
    assert name not in [b["name"] for b in Api(d)("GET", "/api/buckets").json()["buckets"]]
    ok = requests.post(url, json={"name": name}, cookies=jar, headers={"X-CSRF-Token": csrf},
                       timeout=30)
    assert ok.status_code == 201, ok.text
    # Behind a TLS proxy the cookie is Secure.
    tls = login(d, headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in tls.headers["set-cookie"]
    # Logout (a change: needs the token too) ends the session.
    assert_error(requests.post(d.admin_url + "/api/logout", cookies=jar, timeout=30), 403, "csrf")
    out = requests.post(d.admin_url + "/api/logout", cookies=jar, headers={"X-CSRF-Token": csrf},
                        timeout=30)
    assert out.status_code == 204 and "Max-Age=0" in out.headers["set-cookie"]
    assert_error(requests.get(d.admin_url + "/api/session", cookies=jar, timeout=30), 401,
                 "unauthenticated")


def test_login_rate_limit_per_address(make_daemon, password_hash):
    d = make_daemon(admin_config=admin_config(password_hash))
    for _ in range(5):
        assert_error(login(d, "nope"), 401, "invalid_credentials")
    r = login(d, "nope")
    assert_error(r, 429, "rate_limited")
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # Even the right password waits out the window; the bearer token is unaffected.
    assert_error(login(d), 429, "rate_limited")
    assert Api(d)("GET", "/api/session").status_code == 200


def test_generated_password_and_token_work_and_are_private(make_daemon):
    d = make_daemon()
    pw_file, token_file = d.data_dir / "admin-password", d.data_dir / "admin-token"
    for f in (pw_file, token_file):
        assert f.stat().st_mode & 0o777 == 0o600, f
    out = d.stdout_path.read_text()
    assert str(pw_file) in out, out
    assert login(d, pw_file.read_text().strip(), user="admin").status_code == 200
    assert Api(d, token=token_file.read_text().strip())("GET", "/api/cache").status_code == 200
    # A restart keeps them.
    d.stop()
    d.restart()
    assert login(d, pw_file.read_text().strip(), user="admin").status_code == 200


def test_buckets_create_delete_and_public_toggle(d, api):
    name = harness.unique_name("bk")
    r = api("POST", "/api/buckets", json={"name": name})
    assert r.status_code == 201 and r.json()["name"] == name and r.json()["public"] is False
    assert_error(api("POST", "/api/buckets", json={"name": name}), 409, "conflict")
    assert_error(api("POST", "/api/buckets", json={"name": "Bad_Name!"}), 400, "bad_request")
    assert_error(api("POST", "/api/buckets", data=b"not json"), 400, "bad_request")
    listed = {b["name"]: b for b in api("GET", "/api/buckets").json()["buckets"]}
    assert name in listed and listed[name]["created"].endswith("Z")
    s3 = d.client()
    s3.put_object(Bucket=name, Key="pub.txt", Body=b"hello")
    anon = f"{d.endpoint}/{name}/pub.txt"
    assert requests.get(anon, timeout=30).status_code == 403
    r = api("PUT", f"/api/buckets/{name}/public", json={"public": True})
    assert r.json() == {"name": name, "public": True, "policy": True}
    got = requests.get(anon, timeout=30)
    assert got.status_code == 200 and got.content == b"hello"
    # The choice survives a restart.
    d.stop()
    d.restart()
    assert requests.get(anon, timeout=30).status_code == 200
    assert api("PUT", f"/api/buckets/{name}/public", json={"public": False}).status_code == 200
    assert requests.get(anon, timeout=30).status_code == 403
    assert_error(api("PUT", "/api/buckets/no-such-bucket-x/public", json={"public": True}), 404,
                 "not_found")
    assert_error(api("DELETE", f"/api/buckets/{name}"), 409, "conflict")
    s3.delete_object(Bucket=name, Key="pub.txt")
    assert api("DELETE", f"/api/buckets/{name}").status_code == 204
    assert_error(api("DELETE", f"/api/buckets/{name}"), 404, "not_found")
    assert name not in [b["name"] for b in api("GET", "/api/buckets").json()["buckets"]]


def test_objects_put_get_list_pages_and_delete(d, api):
    s3 = d.client()
    b = harness.unique_name("ob")
    s3.create_bucket(Bucket=b)
    data = PHOTO.read_bytes()
    r = api("PUT", f"/api/buckets/{b}/object", params={"key": "dir/a b.jpg"}, data=data,
            headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    o = r.json()
    assert (o["key"], o["size"], o["content_type"], o["image"]) == ("dir/a b.jpg", len(data), "image/jpeg", True)
    got = s3.get_object(Bucket=b, Key="dir/a b.jpg")
    assert got["Body"].read() == data and got["ContentType"] == "image/jpeg"
    assert o["etag"] == got["ETag"]
    # The thumbnail is a real 160 px image.
    t = api("GET", o["thumbnail"])
    assert t.status_code == 200 and t.headers["content-type"] == "image/webp"
    assert max(Image.open(io.BytesIO(t.content)).size) == 160
    s3.put_object(Bucket=b, Key="meta.txt", Body=b"x", Metadata={"owner": "ana"})
    m = api("GET", f"/api/buckets/{b}/object", params={"key": "meta.txt"}).json()
    assert m["metadata"] == {"owner": "ana"} and m["image"] is False and m["thumbnail"] is None
    assert m["s3_url"] == f"s3://{b}/meta.txt" and m["http_url"] == f"{d.endpoint}/{b}/meta.txt"
    assert_error(api("GET", f"/api/buckets/{b}/object", params={"key": "nope"}), 404, "not_found")
    assert_error(api("GET", f"/api/buckets/{b}/object"), 400, "bad_request")
    # 25 keys and 3 folders, pages of 10: every entry once, folders first-level only.
    for i in range(25):
        s3.put_object(Bucket=b, Key=f"many/{i:02d}", Body=b"")
    for f in ("f1", "f2", "f3"):
        s3.put_object(Bucket=b, Key=f"many/{f}/deep", Body=b"")
    keys, folders, after, pages = [], [], None, 0
    while True:
        params = {"prefix": "many/", "limit": 10}
        if after:
            params["after"] = after
        page = api("GET", f"/api/buckets/{b}/objects", params=params).json()
        pages += 1
        keys += [x["key"] for x in page["objects"]]
        folders += page["folders"]
        assert len(page["objects"]) + len(page["folders"]) <= 10
        after = page["next"]
        if after is None:
            break
    assert keys == [f"many/{i:02d}" for i in range(25)]
    assert folders == ["many/f1/", "many/f2/", "many/f3/"]
    assert pages == 3
    top = api("GET", f"/api/buckets/{b}/objects").json()
    assert top["folders"] == ["dir/", "many/"] and [x["key"] for x in top["objects"]] == ["meta.txt"]
    assert_error(api("GET", f"/api/buckets/{b}/objects", params={"limit": 0}), 400, "bad_request")
    assert_error(api("GET", "/api/buckets/no-such-bucket-x/objects"), 404, "not_found")
    assert api("DELETE", f"/api/buckets/{b}/object", params={"key": "dir/a b.jpg"}).status_code == 204
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_object(Bucket=b, Key="dir/a b.jpg")
    assert_error(api("PUT", "/api/buckets/no-such-bucket-x/object", params={"key": "k"}, data=b"x"),
                 404, "not_found")


def test_multipart_upload_through_the_api(d, api):
    s3 = d.client()
    b = harness.unique_name("mp")
    s3.create_bucket(Bucket=b)
    p1, p2 = harness.pattern_bytes(5 * harness.MiB, 1), harness.pattern_bytes(1234, 2)
    up = api("POST", f"/api/buckets/{b}/uploads", params={"key": "big.bin"},
             headers={"Content-Type": "application/x-test"})
    uid = up.json()["upload_id"]
    parts = []
    for n, body in ((1, p1), (2, p2)):
        r = api("PUT", f"/api/buckets/{b}/uploads/{uid}", params={"key": "big.bin", "part": n}, data=body)
        assert r.status_code == 200, r.text
        parts.append({"part": n, "etag": r.json()["etag"]})
    assert_error(api("PUT", f"/api/buckets/{b}/uploads/{uid}", params={"key": "big.bin", "part": 0},
                     data=b"x"), 400, "bad_request")
    done = api("POST", f"/api/buckets/{b}/uploads/{uid}/complete", params={"key": "big.bin"},
               json={"parts": parts})
    assert done.status_code == 200, done.text
    assert done.json()["etag"] == harness.multipart_etag([p1, p2])
    got = s3.get_object(Bucket=b, Key="big.bin")
    assert got["Body"].read() == p1 + p2 and got["ContentType"] == "application/x-test"
    # Abort drops an upload.
    uid2 = api("POST", f"/api/buckets/{b}/uploads", params={"key": "gone.bin"}).json()["upload_id"]
    assert api("DELETE", f"/api/buckets/{b}/uploads/{uid2}", params={"key": "gone.bin"}).status_code == 204
    assert s3.list_multipart_uploads(Bucket=b).get("Uploads", []) == []
    assert_error(api("POST", f"/api/buckets/{b}/uploads/{uid2}/complete", params={"key": "gone.bin"},
                     json={"parts": parts}), 404, "not_found")


def image_size(content: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(content)).size


def test_sign_builds_urls_that_serve_and_uploads_invalidate(d, api):
    s3 = d.client()
    b = harness.unique_name("sg")
    s3.create_bucket(Bucket=b)
    s3.put_object(Bucket=b, Key="p@1.jpg", Body=PHOTO.read_bytes(), ContentType="image/jpeg")
    r = api("POST", "/api/sign", json={"bucket": b, "key": "p@1.jpg", "width": 300,
                                        "format": "webp", "quality": 70, "gravity": "ce"})
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["options"] == "rs:fit:300:0/g:ce/q:70"
    assert s["url"].startswith(d.images_url + "/") and s["url"].endswith("@webp")
    assert s["srcset"]["1x"] == s["url"] and "/dpr:2/" in s["srcset"]["2x"]
    assert f'src="{s["url"]}"' in s["img"] and " 2x\"" in s["img"]
    one = requests.get(s["url"], timeout=60)
    assert one.status_code == 200 and one.headers["content-type"] == "image/webp"
    assert image_size(one.content)[0] == 300 and one.headers["x-cache"] == "MISS"
    two = requests.get(s["srcset"]["2x"], timeout=60)
    assert image_size(two.content)[0] == 600
    prev = api("GET", s["preview"])
    assert prev.status_code == 200 and prev.content == requests.get(s["url"], timeout=60).content
    # An upload through the admin API drops the cached variants at once.
    assert requests.get(s["url"], timeout=60).headers["x-cache"] == "HIT"
    api("PUT", f"/api/buckets/{b}/object", params={"key": "p@1.jpg"}, data=OTHER.read_bytes(),
        headers={"Content-Type": "image/jpeg"})
    after = requests.get(s["url"], timeout=60)
    assert after.headers["x-cache"] == "MISS"
    assert image_size(after.content) == (300, 188), image_size(after.content)
    for bad in ({"bucket": b, "key": "x", "width": 99999}, {"bucket": b, "key": "x", "quality": 101},
                {"bucket": b, "key": "x", "resizing_type": "zoom"}, {"bucket": b, "key": "x", "format": "bmp"},
                {"bucket": b}, {"bucket": b, "key": "x", "colour": 1}):
        assert_error(api("POST", "/api/sign", json=bad), 400, "bad_request")


def test_cache_stats_purge_api_and_cli(d, api):
    s3 = d.client()
    b = harness.unique_name("ca")
    s3.create_bucket(Bucket=b)
    for k in ("a/1.jpg", "a/2.jpg", "b/3.jpg"):
        s3.put_object(Bucket=b, Key=k, Body=PHOTO.read_bytes(), ContentType="image/jpeg")
        for w in (100, 120):
            u = api("POST", "/api/sign", json={"bucket": b, "key": k, "width": w}).json()["url"]
            assert requests.get(u, timeout=60).status_code == 200
    st = api("GET", "/api/cache").json()
    # Per source: two variants, and the /info answer the builder's placeholder came from.
    assert st["enabled"] is True and st["entries"] >= 9 and st["bytes"] > 0
    assert st["max_bytes"] > 0 and 0 <= st["hit_ratio"] <= 1
    removed = lambda body: api("POST", "/api/cache/purge", json=body).json()["removed"]  # noqa: E731
    assert removed({"bucket": b, "key": "a/1.jpg"}) == 3
    assert removed({"bucket": b, "key": "a/1.jpg"}) == 0
    assert removed({"bucket": b, "prefix": "a/"}) == 3
    for bad in ({}, {"prefix": "a/"}, {"all": True, "bucket": b}, {"bucket": b, "prefix": "a", "key": "k"}):
        assert_error(api("POST", "/api/cache/purge", json=bad), 400, "bad_request")
    # The command line goes through the admin API while the daemon runs...
    cli = lambda *a: subprocess.run([str(harness.pixelport_bin()), "cache", *a, "-c", str(d.config_path)],  # noqa: E731
                                    capture_output=True, text=True, timeout=60)
    cp = cli("stats")
    assert cp.returncode == 0, cp.stderr
    out = json.loads(cp.stdout)
    assert out["via"] == "admin API" and out["entries"] == st["entries"] - 6
    cp = cli("purge", "--bucket", b)
    assert cp.returncode == 0 and json.loads(cp.stdout) == {"removed": 3, "via": "admin API"}, cp
    assert cli("purge").returncode != 0
    assert cli("purge", "--all", "--bucket", b).returncode != 0
    # ...and on the file when it does not.
    u = api("POST", "/api/sign", json={"bucket": b, "key": "b/3.jpg", "width": 90}).json()["url"]
    assert requests.get(u, timeout=60).status_code == 200
    d.stop()
    try:
        cp = cli("stats")
        assert cp.returncode == 0, cp.stderr
        offline = json.loads(cp.stdout)
        assert offline["via"] == "file" and offline["entries"] >= 1
        cp = cli("purge", "--all")
        assert cp.returncode == 0, cp.stderr
        assert json.loads(cp.stdout)["removed"] == offline["entries"]
        assert json.loads(cli("stats").stdout)["entries"] == 0
    finally:
        d.restart()
    assert requests.get(u, timeout=60).headers["x-cache"] == "MISS"
    assert api("GET", "/api/cache").json()["entries"] == 1
    assert api("POST", "/api/cache/purge", json={"all": True}).json()["removed"] == 1


def test_access_keys_work_at_once_and_revoke_at_once(d, api):
    b = harness.unique_name("ak")
    d.client().create_bucket(Bucket=b)
    r = api("POST", "/api/keys", json={"name": "deploy <script>"})
    assert r.status_code == 201, r.text
    k = r.json()
    assert len(k["access_key"]) == 20 and len(k["secret_key"]) == 40 and k["name"] == "deploy <script>"
    listed = api("GET", "/api/keys").json()["keys"]
    assert listed[0]["root"] is True and listed[0]["access_key"] == harness.ACCESS_KEY
    mine = [x for x in listed if x["access_key"] == k["access_key"]]
    assert mine and "secret_key" not in mine[0] and k["secret_key"] not in json.dumps(listed)
    aws = harness.AwsCli(d.endpoint, k["access_key"], k["secret_key"])
    aws("s3", "cp", str(PHOTO), f"s3://{b}/via-key.jpg")
    assert "via-key.jpg" in aws("s3", "ls", f"s3://{b}/").stdout
    # Keys survive a restart.
    d.stop()
    d.restart()
    assert "via-key.jpg" in aws("s3", "ls", f"s3://{b}/").stdout
    assert_error(api("DELETE", f"/api/keys/{harness.ACCESS_KEY}"), 400, "bad_request")
    assert api("DELETE", f"/api/keys/{k['access_key']}").status_code == 204
    cp = aws("s3", "ls", f"s3://{b}/", check=False)
    assert cp.returncode != 0 and "InvalidAccessKeyId" in cp.stderr, cp.stderr
    assert_error(api("DELETE", f"/api/keys/{k['access_key']}"), 404, "not_found")
    assert_error(api("POST", "/api/keys", json={"name": "x" * 65}), 400, "bad_request")


def test_overview_counts_traffic_errors_and_storage(d, api):
    s3 = d.client()
    b = harness.unique_name("ov")
    s3.create_bucket(Bucket=b)
    s3.put_object(Bucket=b, Key="p.jpg", Body=PHOTO.read_bytes())
    before = api("GET", "/api/overview").json()
    u = api("POST", "/api/sign", json={"bucket": b, "key": "p.jpg", "width": 50}).json()["url"]
    for _ in range(5):
        assert requests.get(u, timeout=60).status_code == 200
    bad = requests.get(f"{d.images_url}/unsafe/rs:fit:50:50/plain/s3://{b}/missing.jpg", timeout=30)
    assert bad.status_code == 404
    s3.put_object(Bucket=b, Key="t.txt", Body=b"not an image")
    broken = requests.get(f"{d.images_url}/unsafe/rs:fit:50:50/plain/s3://{b}/t.txt", timeout=30)
    assert broken.status_code == 422
    o = api("GET", "/api/overview").json()
    assert o["version"] and o["uptime_seconds"] >= 0 and o["started"].endswith("Z")
    assert o["store"]["kind"] == "embedded" and o["store"]["objects"] >= 1
    assert o["store"]["bytes"] >= PHOTO.stat().st_size and o["store"]["buckets"] >= 1
    assert len(o["traffic"]) == 60
    total = lambda ov: sum(m["requests"] for m in ov["traffic"])  # noqa: E731
    assert total(o) >= total(before) + 7
    assert any(m["p95_ms"] is not None for m in o["traffic"][-2:])
    assert o["cache"]["hits"] >= 4 and o["cache"]["entries"] >= 1
    paths = [(e["listener"], e["status"], e["path"]) for e in o["errors"]]
    assert ("images", broken.status_code, f"/unsafe/rs:fit:50:50/plain/s3://{b}/t.txt") in paths, paths
    assert not any(p.endswith("missing.jpg") for _, _, p in paths), "404s are not listed as errors"


def test_settings_mask_secrets(d, api, password_hash):
    c = api("GET", "/api/settings").json()["config"]
    assert c["admin"]["user"] == "root" and c["admin"]["listen"].endswith(str(d.admin_port))
    text = json.dumps(c)
    for secret in (harness.SECRET_KEY, TOKEN, password_hash, harness.ACCESS_KEY):
        assert secret not in text, secret
    assert c["s3"]["secret_key"] == "****" and c["admin"]["token"] == "****"


def test_ui_assets_are_served_with_a_strict_csp(d):
    r = requests.get(d.admin_url + "/", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert '<script type="module" src="/ui/' in r.text and "<script>" not in r.text
    js = requests.get(d.admin_url + "/ui/app.js", timeout=30)
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    for bad in ("/ui/../Cargo.toml", "/ui/%2e%2e/Cargo.toml", "/ui/nope.js", "/api/nope"):
        assert_error(requests.get(d.admin_url + bad, timeout=30), 404, "not_found")
    # Health, readiness and metrics stay open for probes and scrapers.
    for path in ("/health", "/ready", "/metrics"):
        assert requests.get(d.admin_url + path, timeout=30).status_code == 200
