"""docs/migrate.md, run as a user moving from MinIO + imgproxy would run it.

The user's MinIO is a real second S3 server process (s3s-fs) holding a MinIO-style bucket,
`images`, synced in with `aws s3 sync`. Then both of the guide's routes:

- the drop-in: Pixelport started with imgproxy's environment block (`IMGPROXY_USE_S3`,
  `IMGPROXY_S3_ENDPOINT`, `AWS_ACCESS_KEY_ID`, `IMGPROXY_QUALITY`, ...) and no config file
  of its own configures itself from it: a remote store in direct mapping over that MinIO,
  imgproxy's signing key and salt, quality, resolution limit and profile stripping.
  Before this, Pixelport read only IMGPROXY_KEY/SALT/SIGNATURE_SIZE/SECRET from that block,
  so it served its own empty embedded store and every sample URL answered 404;
- copying the data into the embedded store with the guide's `aws s3 sync` commands.

Each route serves the guide's four sample URLs with the right sizes and formats.
`check-config` names where each value came from.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import os
import subprocess
import time
import tomllib

import pytest
import requests
from PIL import Image, ImageCms

import harness

pytestmark = pytest.mark.pixelport_only

SHARED = harness.REPO_ROOT.parent / "shared" / "images"
MINIO_KEY = "minio-dropin-ak"
MINIO_SECRET = "minio-dropin-secret-0123456789"
IMGPROXY_KEY = "943b421c9eb07c830af81030552c86009268de4e532ba2ee2eab8247c6da0881"
IMGPROXY_SALT = "520f986b998545b4785e0defbc4f3c1203f22de2374a3d53cb7a7fe9fea309c5"

# The MinIO-style layout: nested prefixes, as a site's uploads look.
LAYOUT = {
    "product.jpg": "rocket-640x427.jpg",
    "products/2024/coffee.png": "coffee-600x400.png",
    "banners/storm.jpg": "storm-1920x1280.jpg",
    "large/wood.jpg": "wood-2560x1920.jpg",
}

# The guide's four sample URLs (docs/migrate.md): path → (format, size).
SAMPLES = {
    "/unsafe/resize:300:200/plain/s3://images/product.jpg": ("JPEG", (300, 200)),
    "/unsafe/resize:fill:150:150/gravity:sm/plain/s3://images/product.jpg": ("JPEG", (150, 150)),
    "/unsafe/resize:fit:400:0/plain/s3://images/products/2024/coffee.png@webp": ("WEBP", (400, 267)),
    "/unsafe/resize:fit:800:800/format:avif/plain/s3://images/banners/storm.jpg": ("AVIF", (800, 533)),
}


def seed_env(minio_endpoint: str, images_port: int) -> dict[str, str]:
    """imgproxy's environment block as the seed's Deployment sets it. `IMGPROXY_BIND` is the
    container's port; the resolution limit is lowered from the seed's 50 to 4 megapixels so
    that the test can see it apply (wood.jpg is 4.9)."""
    return {
        "IMGPROXY_BIND": f"127.0.0.1:{images_port}",
        "IMGPROXY_USE_S3": "true",
        "IMGPROXY_S3_ENDPOINT": minio_endpoint,
        "IMGPROXY_S3_REGION": harness.REGION,
        "AWS_ACCESS_KEY_ID": MINIO_KEY,
        "AWS_SECRET_ACCESS_KEY": MINIO_SECRET,
        "IMGPROXY_USE_S3_FORCE_PATH_STYLE": "true",
        "IMGPROXY_ALLOW_UNSAFE_URLS": "true",
        "IMGPROXY_QUALITY": "70",
        "IMGPROXY_MAX_SRC_RESOLUTION": "4",
        "IMGPROXY_STRIP_METADATA": "true",
        "IMGPROXY_STRIP_COLOR_PROFILE": "false",
        "IMGPROXY_KEY": IMGPROXY_KEY,
        "IMGPROXY_SALT": IMGPROXY_SALT,
        "IMGPROXY_PROMETHEUS_BIND": ":8081",
    }


def sign(path: str) -> str:
    mac = hmac.new(bytes.fromhex(IMGPROXY_KEY), bytes.fromhex(IMGPROXY_SALT) + path.encode(),
                   hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def check_samples(images_url: str) -> dict[str, bytes]:
    out = {}
    for path, (fmt, size) in SAMPLES.items():
        r = requests.get(images_url + path, timeout=120)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        with Image.open(io.BytesIO(r.content)) as im:
            assert (im.format, im.size) == (fmt, size), (path, im.format, im.size)
        assert r.headers["content-type"] == f"image/{fmt.lower()}", (path, r.headers)
        out[path] = r.content
    return out


@pytest.fixture
def minio(tmp_path):
    """The user's MinIO, with the bucket `images` synced in by `aws s3 sync`."""
    layout = tmp_path / "layout"
    for key, name in LAYOUT.items():
        (layout / key).parent.mkdir(parents=True, exist_ok=True)
        if key == "product.jpg":
            # The product photo carries an sRGB profile, so strip_color_profile shows.
            with Image.open(SHARED / name) as im:
                icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
                im.save(layout / key, "JPEG", quality=92, icc_profile=icc)
        else:
            (layout / key).write_bytes((SHARED / name).read_bytes())
    root = tmp_path / "minio"
    root.mkdir()
    server = harness.S3sFs(root, tmp_path, MINIO_KEY, MINIO_SECRET, name="minio").start()
    aws = harness.AwsCli(server.endpoint, MINIO_KEY, MINIO_SECRET)
    aws("s3", "mb", "s3://images")
    aws("s3", "sync", str(layout), "s3://images")
    yield server, aws, layout
    server.stop()


class DropIn:
    """`pixelport serve` with no config file: the seed's env block, plus the ports and data
    directory a container would give it."""

    def __init__(self, base, env: dict[str, str]):
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.s3_port, self.admin_port = harness.free_port(), harness.free_port()
        self.env = harness.run_env_isolated()
        self.env.update(env)
        self.env.update({
            "PIXELPORT_SERVER__DATA_DIR": str(base / "data"),
            "PIXELPORT_S3__LISTEN": f"127.0.0.1:{self.s3_port}",
            "PIXELPORT_ADMIN__LISTEN": f"127.0.0.1:{self.admin_port}",
        })
        self.env.pop("PIXELPORT_CONFIG", None)
        self.proc = None

    def check_config(self) -> subprocess.CompletedProcess:
        return subprocess.run([str(harness.pixelport_bin()), "check-config"], env=self.env,
                              capture_output=True, text=True, timeout=60)

    def start(self) -> "DropIn":
        self.log = open(self.base / "stderr.log", "wb")
        self.proc = subprocess.Popen([str(harness.pixelport_bin()), "serve"], env=self.env,
                                     stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        url = f"http://127.0.0.1:{self.admin_port}/ready"
        for _ in range(600):
            assert self.proc.poll() is None, (self.base / "stderr.log").read_text()
            try:
                if requests.get(url, timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError("not ready: " + (self.base / "stderr.log").read_text())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.log.close()


def test_the_imgproxy_env_block_serves_the_sample_urls_from_the_users_minio(minio, tmp_path):
    server, _, _ = minio
    images_port = harness.free_port()
    env = seed_env(server.endpoint, images_port)
    d = DropIn(tmp_path / "pixelport", env)

    # check-config shows each value and where it came from.
    cc = d.check_config()
    assert cc.returncode == 0, cc.stderr
    text = cc.stdout
    for line in ['kind = "remote"  # env IMGPROXY_USE_S3',
                 'bucket_mapping = "direct"  # env IMGPROXY_USE_S3',
                 f'endpoint = "{server.endpoint}"  # env IMGPROXY_S3_ENDPOINT',
                 "quality = 70  # env IMGPROXY_QUALITY",
                 "max_src_resolution = 4.0  # env IMGPROXY_MAX_SRC_RESOLUTION",
                 "strip_color_profile = false  # env IMGPROXY_STRIP_COLOR_PROFILE",
                 f'listen = "127.0.0.1:{images_port}"  # env IMGPROXY_BIND',
                 f'listen = "127.0.0.1:{d.s3_port}"  # env PIXELPORT_S3__LISTEN']:
        assert line in text.splitlines(), (line, text)
    assert "# env AWS_SECRET_ACCESS_KEY" in text and MINIO_SECRET not in text, text
    assert "IMGPROXY_PROMETHEUS_BIND" in text and IMGPROXY_SALT not in text, text

    d.start()
    try:
        images = f"http://127.0.0.1:{images_port}"
        got = check_samples(images)

        # IMGPROXY_QUALITY is the default quality: the same bytes as quality:70 spelled out.
        first = next(iter(SAMPLES))
        spelled = first.replace("/resize:300:200/", "/resize:300:200/quality:70/")
        assert requests.get(images + spelled, timeout=60).content == got[first]
        q80 = first.replace("/resize:300:200/", "/resize:300:200/quality:80/")
        assert requests.get(images + q80, timeout=60).content != got[first]

        # IMGPROXY_STRIP_COLOR_PROFILE=false keeps the source's profile.
        with Image.open(io.BytesIO(got[first])) as im:
            assert im.info.get("icc_profile"), "the source's ICC profile was stripped"

        # IMGPROXY_MAX_SRC_RESOLUTION: wood.jpg is 4.9 megapixels, over the 4 configured.
        r = requests.get(f"{images}/unsafe/rs:fit:100:100/plain/s3://images/large/wood.jpg",
                         timeout=60)
        assert r.status_code == 422 and "max_src_resolution" in r.text, (r.status_code, r.text)

        # IMGPROXY_KEY / IMGPROXY_SALT: imgproxy's signed URLs verify unchanged.
        path = "/rs:fit:120:120/plain/s3://images/product.jpg@png"
        r = requests.get(f"{images}/{sign(path)}{path}", timeout=60)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        r = requests.get(f"{images}/{sign(path + 'x')}{path}", timeout=60)
        assert r.status_code == 403, r.status_code

        # Through Pixelport's S3 API, the user's bucket as it is (direct mapping). The
        # credentials are the ones the first start generated into the data directory.
        creds = tomllib.loads((tmp_path / "pixelport" / "data" / "credentials.toml").read_text())
        listing = harness.AwsCli(f"http://127.0.0.1:{d.s3_port}", creds["access_key"],
                                 creds["secret_key"])(
            "s3", "ls", "--recursive", "s3://images/").stdout
        for key in LAYOUT:
            assert key in listing, (key, listing)
    finally:
        d.stop()

    # PIXELPORT_* wins over IMGPROXY_*.
    d2 = DropIn(tmp_path / "pixelport2", {**env, "PIXELPORT_IMAGES__QUALITY": "40"})
    cc = d2.check_config()
    assert "quality = 40  # env PIXELPORT_IMAGES__QUALITY" in cc.stdout.splitlines(), cc.stdout


def test_the_guides_sync_copies_the_bucket_into_the_embedded_store(minio, tmp_path):
    """The other route: `aws s3 sync` from MinIO to a local copy, then into Pixelport's
    embedded store; the same sample URLs answer from it."""
    _, minio_aws, layout = minio
    copy = tmp_path / "images-copy"
    minio_aws("s3", "sync", "s3://images", str(copy))
    d = harness.Daemon(tmp_path / "d").start()
    try:
        aws = harness.AwsCli(d.endpoint)
        aws("s3", "mb", "s3://images")
        aws("s3", "sync", str(copy), "s3://images")
        listing = aws("s3", "ls", "--recursive", "s3://images/").stdout
        for key in LAYOUT:
            assert key in listing, (key, listing)
            size = (layout / key).stat().st_size
            assert str(size) in listing, (key, size, listing)
        check_samples(d.images_url)
    finally:
        d.stop_all()


def test_aws_variables_alone_do_not_move_the_store(tmp_path):
    """`AWS_ACCESS_KEY_ID` is in many shells for the aws cli. Without `IMGPROXY_USE_S3` it
    must not turn the store remote."""
    env = harness.run_env_isolated()
    env.update({"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x" * 40,
                "IMGPROXY_S3_ENDPOINT": "http://127.0.0.1:1"})
    env.pop("PIXELPORT_CONFIG", None)
    cc = subprocess.run([str(harness.pixelport_bin()), "check-config"], env=env,
                        capture_output=True, text=True, timeout=60)
    assert cc.returncode == 0, cc.stderr
    assert 'kind = "embedded"' in cc.stdout.splitlines(), cc.stdout
    env["IMGPROXY_USE_S3"] = "perhaps"
    cc = subprocess.run([str(harness.pixelport_bin()), "check-config"], env=env,
                        capture_output=True, text=True, timeout=60)
    assert cc.returncode == 2 and "IMGPROXY_USE_S3" in cc.stderr, (cc.returncode, cc.stderr)
