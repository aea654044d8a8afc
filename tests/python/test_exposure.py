"""What the image endpoint exposes on the real defaults (issue "Safe to put on the internet",
section 1): private originals stay private.

These daemons run with `legacy_unsigned=False`: no `allow_unsafe` is injected, so the first
start generates an image key and unsigned URLs read only buckets opened to them.
"""

from __future__ import annotations

import hashlib
import hmac
import base64
import os
import stat
import subprocess
import tomllib

import requests
from PIL import Image
import io

import harness

PHOTO = harness.REPO_ROOT.parent / "shared" / "images" / "rocket-640x427.jpg"
TOKEN = "test-admin-token-exposure-0123456789"
ADMIN = f'token = "{TOKEN}"\n'


def get(d, path: str, **kw) -> requests.Response:
    return requests.get(d.images_url + path, timeout=60, **kw)


def admin(d, method: str, path: str, body=None) -> requests.Response:
    return requests.request(method, d.admin_url + path, json=body, timeout=30,
                            headers={"Authorization": f"Bearer {TOKEN}"})


def generated_key(d) -> tuple[str, str]:
    text = (d.data_dir / "image-key.toml").read_text()
    pair = tomllib.loads(text)
    return pair["key"], pair["salt"]


def sign(d, path: str) -> str:
    key, salt = generated_key(d)
    mac = hmac.new(bytes.fromhex(key), bytes.fromhex(salt) + path.encode(), hashlib.sha256).digest()
    return "/" + base64.urlsafe_b64encode(mac).decode().rstrip("=") + path


def setup_private(d, bucket: str = "private-bucket") -> None:
    s3 = d.client()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="secret.txt", Body=b"the launch codes are 0000\n",
                  ContentType="text/plain")
    s3.put_object(Bucket=bucket, Key="r.jpg", Body=PHOTO.read_bytes())


def test_unsigned_urls_cannot_read_private_originals(make_daemon):
    # Bug guarded: on the default config (no image key), `GET /unsafe/raw:1/plain/s3://
    # private-bucket/secret.txt` answered 200 with the text file labelled image/jpeg, and
    # any private image could be read at any size, while S3 answered 403 for the same object.
    d = make_daemon(legacy_unsigned=False, admin_config=ADMIN)
    setup_private(d)
    raw = get(d, "/unsafe/raw:1/plain/s3://private-bucket/secret.txt")
    assert raw.status_code == 403, (raw.status_code, raw.headers, raw.text[:200])
    assert b"launch codes" not in raw.content
    assert raw.json()["kind"] == "unsigned"
    assert "sign the URL" in raw.json()["message"]
    resized = get(d, "/unsafe/rs:fit:50:50/plain/s3://private-bucket/r.jpg")
    assert resized.status_code == 403, resized.text
    assert get(d, "/_/rs:fit:50:50/plain/s3://private-bucket/r.jpg").status_code == 403
    # S3 agrees: the bucket is not public.
    assert requests.get(f"{d.endpoint}/private-bucket/secret.txt", timeout=10).status_code == 403

    # A signed URL may read any bucket; `raw` still sends only real images, labelled truly.
    ok = get(d, sign(d, "/rs:fit:50:50/plain/s3://private-bucket/r.jpg@png"))
    assert ok.status_code == 200, ok.text
    assert Image.open(io.BytesIO(ok.content)).size == (50, 33)
    text = get(d, sign(d, "/raw:1/plain/s3://private-bucket/secret.txt"))
    assert text.status_code == 422, (text.status_code, text.headers)
    assert not text.headers.get("content-type", "").startswith("image/")
    assert b"launch codes" not in text.content
    skip = get(d, sign(d, "/skp:jpg/plain/s3://private-bucket/secret.txt"))
    assert skip.status_code == 422, skip.status_code
    raw_img = get(d, sign(d, "/raw:1/plain/s3://private-bucket/r.jpg"))
    assert raw_img.status_code == 200 and raw_img.headers["content-type"] == "image/jpeg"
    assert raw_img.content == PHOTO.read_bytes()


def test_buckets_opened_to_unsigned_urls_serve_resized_images_only(make_daemon):
    d = make_daemon(legacy_unsigned=False, admin_config=ADMIN,
                    images_config='unsigned_buckets = ["cfg-open"]\n')
    setup_private(d, "site-images")
    setup_private(d, "cfg-open")
    path = "/unsafe/rs:fit:60:60/plain/s3://site-images/r.jpg@png"
    assert get(d, path).status_code == 403
    # A bucket opened in the configuration.
    assert get(d, "/unsafe/rs:fit:60:60/plain/s3://cfg-open/r.jpg@png").status_code == 200

    listed = {b["name"]: b for b in admin(d, "GET", "/api/buckets").json()["buckets"]}
    assert listed["site-images"]["unsigned_images"] is False
    assert listed["cfg-open"]["unsigned_images"] is True
    r = admin(d, "PUT", "/api/buckets/site-images/unsigned-images", {"unsigned_images": True})
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "site-images", "unsigned_images": True}
    ok = get(d, path)
    assert ok.status_code == 200, ok.text
    assert Image.open(io.BytesIO(ok.content)).size == (60, 40)
    assert get(d, path).headers.get("x-cache") == "HIT"
    # The originals stay private: no raw, no skip_processing, no security overrides, and
    # S3 still refuses anonymous reads.
    for form in ("/unsafe/raw:1/plain/s3://site-images/r.jpg",
                 "/unsafe/skp:jpg/plain/s3://site-images/r.jpg",
                 "/unsafe/raw:1/plain/s3://site-images/secret.txt"):
        r = get(d, form)
        assert r.status_code == 403, (form, r.status_code)
    assert requests.get(f"{d.endpoint}/site-images/r.jpg", timeout=10).status_code == 403
    # Unknown bucket and bad body: clear errors.
    assert admin(d, "PUT", "/api/buckets/nope-bucket/unsigned-images",
                 {"unsigned_images": True}).status_code == 404
    assert admin(d, "PUT", "/api/buckets/site-images/unsigned-images", {"x": 1}).status_code == 400

    # Kept across restarts; closing it again closes the remembered fast path too.
    d.stop()
    d.restart()
    assert get(d, path).status_code == 200
    assert admin(d, "PUT", "/api/buckets/site-images/unsigned-images",
                 {"unsigned_images": False}).status_code == 200
    assert get(d, path).status_code == 403
    d.stop()
    d.restart()
    assert get(d, path).status_code == 403


def test_first_start_generates_an_image_key_and_sign_uses_it(make_daemon):
    d = make_daemon(legacy_unsigned=False, admin_config=ADMIN)
    setup_private(d, "keyed")
    key_file = d.data_dir / "image-key.toml"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    out = d.stdout_path.read_text()
    assert "image URL-signing key" in out and "pixelport sign" in out, out
    path = "/rs:fit:40:40/plain/s3://keyed/r.jpg@png"
    cp = subprocess.run([str(harness.pixelport_bin()), "sign", path, "--config", str(d.config_path)],
                        capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == sign(d, path)
    assert get(d, cp.stdout.strip()).status_code == 200
    # The admin builder signs with it and says so.
    r = admin(d, "POST", "/api/sign", {"bucket": "keyed", "key": "r.jpg", "width": 40})
    assert r.status_code == 200, r.text
    built = r.json()
    assert built["signed"] is True and "/unsafe/" not in built["url"], built
    assert requests.get(built["url"], timeout=30).status_code == 200
    # The same key after a restart (nothing printed again).
    before = key_file.read_text()
    d.stop()
    d.restart()
    assert key_file.read_text() == before
    assert get(d, cp.stdout.strip()).status_code == 200


def test_configured_key_wins_over_the_generated_one(make_daemon):
    key, salt = "ab" * 32, "cd" * 32
    d = make_daemon(legacy_unsigned=False, images_config=f'key = "{key}"\nsalt = "{salt}"\n')
    assert not (d.data_dir / "image-key.toml").exists()
    setup_private(d, "own")
    path = "/w:30/plain/s3://own/r.jpg@png"
    mac = hmac.new(bytes.fromhex(key), bytes.fromhex(salt) + path.encode(), hashlib.sha256).digest()
    sig = base64.urlsafe_b64encode(mac).decode().rstrip("=")
    assert get(d, f"/{sig}{path}").status_code == 200
    assert get(d, f"/unsafe{path}").status_code == 403


def test_allow_unsafe_keeps_imgproxy_behaviour(make_daemon):
    d = make_daemon(legacy_unsigned=False, images_config="allow_unsafe = true\n")
    setup_private(d, "anything")
    assert get(d, "/unsafe/w:30/plain/s3://anything/r.jpg").status_code == 200
    assert get(d, "/unsafe/raw:1/plain/s3://anything/r.jpg").status_code == 200
    # Even so, `raw` never labels a text file as an image.
    assert get(d, "/unsafe/raw:1/plain/s3://anything/secret.txt").status_code == 422


def test_data_dir_is_private_to_the_daemon_user(make_daemon, tmp_path):
    # Bug guarded: a plain `pixelport serve` made `pixelport-data/` 0755, with
    # `catalog.redb`, `cache.redb` and every blob readable by every local user.
    d = harness.Daemon(tmp_path / "fresh", legacy_unsigned=False)
    # The harness makes the data dir under the usual umask (0755); the daemon narrows it,
    # and everything it creates inside is its user's alone.
    old = os.umask(0o022)
    try:
        d.start()
    finally:
        os.umask(old)
    try:
        setup_private(d, "perms")
        get(d, "/unsafe/w:10/plain/s3://perms/r.jpg")
        assert stat.S_IMODE(d.data_dir.stat().st_mode) == 0o700
        loose = []
        for root, dirs, files in os.walk(d.data_dir):
            for name in dirs + files:
                p = os.path.join(root, name)
                if os.stat(p).st_mode & 0o077:
                    loose.append((p, oct(stat.S_IMODE(os.stat(p).st_mode))))
        assert not loose, loose
        names = {f for _, _, files in os.walk(d.data_dir) for f in files}
        assert "catalog.redb" in names and "cache.redb" in names, names
    finally:
        d.stop_all()


def test_an_existing_loose_data_dir_is_narrowed(make_daemon, tmp_path):
    d = harness.Daemon(tmp_path / "loose", legacy_unsigned=False)
    d.data_dir.mkdir(parents=True)
    os.chmod(d.data_dir, 0o755)
    d.start()
    try:
        assert stat.S_IMODE(d.data_dir.stat().st_mode) == 0o700
        assert "made it 0700" in d.logs()
    finally:
        d.stop_all()
