"""The admin web UI in real headless Chromium (tests/browser/ui.mjs, playwright-core driving
Debian's /usr/bin/chromium), checked from outside with requests, Pillow and the aws cli.

The node script runs in phases against one daemon; pytest prepares data between them and
checks what the page did:

  main       log in (after a refused wrong password), 403 without the CSRF token, create a
             bucket, upload through the file input, by drop and multipart, folders and
             pages, the XSS key as text, the builder (width 300, WebP), create an access
             key, settings, the phone layout; a screenshot of every page
  (pytest)   fetch the signed URL (200, image/webp, 300 px wide); list the bucket with the
             aws cli and the key the page created
  after      purge the whole cache, revoke the key, log out
  (pytest)   the cache holds 0 entries; the aws cli is refused with the revoked key
  ratelimit  (own daemon) wrong passwords until the page says "too many attempts"

Screenshots land in ${PIXELPORT_ARTIFACTS:-<repo>/target/artifacts}/ui-screenshots/.
Set PIXELPORT_WEB_DIR=<repo>/web to serve the UI from disk (the daemon reads it; dev only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

import harness

pytestmark = pytest.mark.pixelport_only

BROWSER_DIR = harness.REPO_ROOT / "tests" / "browser"
SCRIPT = BROWSER_DIR / "ui.mjs"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PHOTO = harness.REPO_ROOT.parent / "shared" / "images" / "rocket-640x427.jpg"
XSS_KEY = "<img src=x onerror=alert(1)>"
MANY = 250  # objects under many/ in the prepared bucket: three pages of 100
DIRS = 120  # folders under dirs/ (one object each): a page boundary falls on a folder
NODE_TIMEOUT = 600
KEY_HEX = "706978656c706f72742d7569"  # the image endpoint's signing key and salt
SALT_HEX = "73616c742d7569"

# The steps ui.mjs reports, per phase (a renamed or missing step fails test_*_reported).
MAIN_STEPS = [
    "unauthenticated visit goes to login",
    "wrong password is refused",
    "log in",
    "dashboard",
    "change without CSRF token is refused with 403",
    "create a bucket",
    "public-read toggle",
    "unsigned-image toggle",
    "upload an image through the file input",
    "upload by drag and drop",
    "upload over 16 MiB goes multipart",
    "deleting a non-empty bucket is a clear error",
    "delete an object",
    "copy S3 URL",
    "XSS key renders as text",
    "folders, breadcrumbs and pages",
    "folders that cross a page boundary are listed once",
    "transform builder: width 300, WebP",
    "builder shows a refused value",
    "cache page",
    "create an access key",
    "settings",
    "phone width: no horizontal overflow, collapsible nav",
    "no dialogs, script errors or CSP violations (main)",
]
AFTER_STEPS = [
    "log in again",
    "purge the whole cache",
    "revoke the access key",
    "log out",
    "no dialogs, script errors or CSP violations (after)",
]
SCREENSHOTS = [
    "01-login", "02-dashboard", "03-buckets", "04-objects", "05-object-builder", "06-cache",
    "07-keys", "08-settings", "09-phone-objects", "10-phone-nav", "11-cache-purged",
]  # and 12-login-rate-limited from test_login_rate_limit_says_too_many_attempts


def artifacts_dir() -> Path:
    base = os.environ.get("PIXELPORT_ARTIFACTS") or str(harness.REPO_ROOT / "target" / "artifacts")
    return Path(base) / "ui-screenshots"


def _say(config, text: str) -> None:
    """Print past pytest's capture (the screenshot path must reach the terminal)."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        with capman.global_and_fixture_disabled():
            print(f"\n{text}", flush=True)
    else:
        print(text, flush=True)


def _need_tools() -> str:
    node = shutil.which("node")
    missing = []
    if not node:
        missing.append("node")
    if not Path(CHROMIUM).exists():
        missing.append(CHROMIUM)
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        missing.append(f"{BROWSER_DIR}/node_modules (npm ci)")
    if missing:
        pytest.fail(f"browser tests need {', '.join(missing)}: run scripts/setup-test-deps.sh",
                    pytrace=False)
    return node


def _read_secret(path: Path) -> str:
    assert path.exists(), f"the daemon wrote no {path}"
    assert (path.stat().st_mode & 0o777) == 0o600, f"{path} has mode {oct(path.stat().st_mode & 0o777)}"
    return path.read_text().strip()


def run_node(phase: str, d: harness.Daemon, password: str, results: Path, **extra: str):
    node = _need_tools()
    env = {
        **harness.run_env_isolated(),
        "PIXELPORT_ADMIN_URL": d.admin_url,
        "PIXELPORT_ADMIN_USER": "admin",
        "PIXELPORT_ADMIN_PASSWORD": password,
        "PIXELPORT_PHOTO": str(PHOTO),
        "PIXELPORT_SCREENSHOTS": str(artifacts_dir()),
        "PIXELPORT_RESULTS": str(results),
        "PIXELPORT_MANY": str(MANY),
        "PIXELPORT_DIRS": str(DIRS),
        "CHROMIUM": CHROMIUM,
        **extra,
    }
    cp = subprocess.run([node, str(SCRIPT), phase], cwd=BROWSER_DIR, env=env,
                        capture_output=True, text=True, timeout=NODE_TIMEOUT)
    data = json.loads(results.read_text()) if results.exists() else {}
    return cp, data


class UiRun:
    """One daemon, the node phases run against it, and what they reported."""

    def __init__(self, daemon: harness.Daemon, tmp: Path, config):
        self.d = daemon
        self.config = config
        self.results_path = tmp / "ui-results.json"  # holds the new secret: not an artefact
        self.password = _read_secret(daemon.data_dir / "admin-password")
        self.bucket = harness.unique_name("ui")
        self.prep = harness.unique_name("prep")
        self.runs: dict[str, subprocess.CompletedProcess] = {}
        self.results: dict = {}

    def run(self, phase: str):
        cp, self.results = run_node(phase, self.d, self.password, self.results_path,
                                    PIXELPORT_BUCKET=self.bucket, PIXELPORT_PREP_BUCKET=self.prep)
        self.runs[phase] = cp
        _say(self.config, f"[admin UI] node ui.mjs {phase}:\n{cp.stdout.rstrip()}"
             + (f"\nstderr:\n{cp.stderr.rstrip()}" if cp.returncode not in (0, 1) else ""))
        return cp

    def step(self, name: str) -> None:
        steps = self.results.get("steps", {})
        assert name in steps, f"ui.mjs did not report {name!r}; it reported {list(steps)}"
        s = steps[name]
        assert s["ok"], f"{name}: {s.get('error')}"

    def bearer(self) -> dict:
        return {"Authorization": f"Bearer {_read_secret(self.d.data_dir / 'admin-token')}"}


def prepare(d: harness.Daemon, bucket: str) -> None:
    """A bucket with the XSS key at the top, MANY small objects under many/ and DIRS
    folders under dirs/."""
    s3 = d.client()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=XSS_KEY, Body=b"not an image", ContentType="text/plain")

    def put(i: int) -> None:
        s3.put_object(Bucket=bucket, Key=f"many/{i:04d}.txt", Body=f"{i}\n".encode(),
                      ContentType="text/plain")

    def put_dir(i: int) -> None:
        s3.put_object(Bucket=bucket, Key=f"dirs/d{i:03d}/x.txt", Body=b"x", ContentType="text/plain")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(MANY)))
        list(pool.map(put_dir, range(DIRS)))


@pytest.fixture(scope="module")
def ui(request, tmp_path_factory):
    shots = artifacts_dir()
    if shots.exists():
        for old in shots.glob("*.png"):
            old.unlink()
    shots.mkdir(parents=True, exist_ok=True)
    _say(request.config, f"[admin UI] screenshots: {shots}")
    d = harness.Daemon(tmp_path_factory.mktemp("admin-ui"), backend="embedded",
                       images_config=f'key = "{KEY_HEX}"\nsalt = "{SALT_HEX}"\n')
    try:
        d.start()
    except Exception:
        d.stop_all()
        raise
    try:
        run = UiRun(d, tmp_path_factory.mktemp("admin-ui-results"), request.config)
        prepare(d, run.prep)
        run.run("main")
        yield run
    finally:
        rc = d.stop_all()
        if rc not in (0, None):
            pytest.fail(f"daemon exited {rc} after SIGTERM:\n{d.logs()}", pytrace=False)


@pytest.fixture(scope="module")
def ui_after(ui):
    """The second phase; requested only by the tests that come after the outside checks."""
    ui.run("after")
    return ui


# -- phase main ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", MAIN_STEPS)
def test_main_step(ui, name):
    ui.step(name)


def test_main_reported_every_step(ui):
    assert ui.runs["main"].returncode in (0, 1), ui.runs["main"].stderr
    assert sorted(ui.results["steps"]) == sorted(MAIN_STEPS), (
        f"steps differ: {set(ui.results['steps']) ^ set(MAIN_STEPS)}")


def test_signed_url_from_the_builder_serves_webp_300(ui):
    """The URL copied from the builder works outside the admin UI, on the image listener."""
    from PIL import Image

    url = ui.results.get("signed_url")
    assert url, "the builder gave no signed URL"
    assert url.startswith(ui.d.images_url + "/"), (url, ui.d.images_url)
    r = requests.get(url, timeout=30)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert r.headers["Content-Type"] == "image/webp"
    img = Image.open(io.BytesIO(r.content))
    assert img.format == "WEBP"
    assert img.size[0] == 300, img.size
    # Signed with the configured key (imgproxy's scheme), and a changed signature is refused.
    sig, _, tail = url[len(ui.d.images_url) + 1:].partition("/")
    mac = hmac.new(bytes.fromhex(KEY_HEX), bytes.fromhex(SALT_HEX) + f"/{tail}".encode(),
                   hashlib.sha256).digest()
    assert sig == base64.urlsafe_b64encode(mac).rstrip(b"=").decode(), (sig, tail)
    bad = f"{ui.d.images_url}/{'A' * len(sig)}/{tail}"
    assert requests.get(bad, timeout=30).status_code == 403


def test_key_created_in_the_page_works_with_the_aws_cli(ui):
    ak, sk = ui.results.get("access_key"), ui.results.get("secret_key")
    assert ak and sk, "the page showed no new key"
    cp = harness.AwsCli(ui.d.endpoint, ak, sk)("s3", "ls", f"s3://{ui.bucket}")
    assert PHOTO.name in cp.stdout and "big.bin" in cp.stdout, cp.stdout
    assert "dropped.txt" not in cp.stdout, "the object deleted in the page is still listed"


def test_uploads_from_the_page_are_intact(ui):
    """The photo and the multipart upload read back byte for byte through S3."""
    s3 = ui.d.client()
    photo = s3.get_object(Bucket=ui.bucket, Key=PHOTO.name)
    assert photo["Body"].read() == PHOTO.read_bytes()
    assert photo["ContentType"] == "image/jpeg"
    size = 17 * harness.MiB + 123
    want = bytearray(size)
    for i in range(0, size, 4096):
        want[i:i + 4] = i.to_bytes(4, "little")
    big = s3.get_object(Bucket=ui.bucket, Key="big.bin")["Body"].read()
    assert len(big) == size and big == bytes(want)


def test_settings_page_shows_no_secret(ui):
    text = ui.results.get("settings_text", "")
    assert text, "no settings text"
    for secret in (harness.SECRET_KEY, ui.password):
        assert secret not in text


def test_change_without_csrf_token_from_a_plain_client(ui):
    """With only the session cookie: 403 csrf on a change; 401 with no session at all."""
    base = ui.d.admin_url
    assert requests.get(f"{base}/api/buckets", timeout=10).status_code == 401
    s = requests.Session()
    r = s.post(f"{base}/api/login", json={"user": "admin", "password": ui.password}, timeout=10)
    assert r.status_code == 200, r.text
    csrf = r.json()["csrf"]
    name = harness.unique_name("csrf")
    r = s.post(f"{base}/api/buckets", json={"name": name}, timeout=10)
    assert r.status_code == 403, (r.status_code, r.text)
    assert r.json()["error"] == "csrf"
    r = s.post(f"{base}/api/buckets", json={"name": name}, headers={"X-CSRF-Token": "x" + csrf},
               timeout=10)
    assert r.status_code == 403, (r.status_code, r.text)
    r = s.post(f"{base}/api/buckets", json={"name": name}, headers={"X-CSRF-Token": csrf}, timeout=10)
    assert r.status_code == 201, (r.status_code, r.text)
    r = s.delete(f"{base}/api/buckets/{name}", headers={"X-CSRF-Token": csrf}, timeout=10)
    assert r.status_code == 204, (r.status_code, r.text)


def test_web_files_carry_the_csp(ui):
    r = requests.get(f"{ui.d.admin_url}/", timeout=10)
    assert r.status_code == 200 and "text/html" in r.headers["Content-Type"]
    csp = r.headers.get("Content-Security-Policy", "")
    for part in ("default-src 'none'", "script-src 'self'", "style-src 'self'",
                 "frame-ancestors 'none'"):
        assert part in csp, csp
    for asset in ("/ui/app.js", "/ui/style.css", "/ui/js/api.js"):
        r = requests.get(f"{ui.d.admin_url}{asset}", timeout=10)
        assert r.status_code == 200, asset
    assert "javascript" in requests.get(f"{ui.d.admin_url}/ui/app.js", timeout=10).headers["Content-Type"]


# -- phase after --------------------------------------------------------------------------

@pytest.mark.parametrize("name", AFTER_STEPS)
def test_after_step(ui_after, name):
    ui_after.step(name)


def test_cache_is_empty_after_the_purge(ui_after):
    r = requests.get(f"{ui_after.d.admin_url}/api/cache", headers=ui_after.bearer(), timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["entries"] == 0, r.json()


def test_revoked_key_is_refused_by_the_aws_cli(ui_after):
    ak, sk = ui_after.results["access_key"], ui_after.results["secret_key"]
    cp = harness.AwsCli(ui_after.d.endpoint, ak, sk)("s3", "ls", f"s3://{ui_after.bucket}",
                                                     check=False)
    assert cp.returncode != 0, cp.stdout
    assert "InvalidAccessKeyId" in cp.stderr or "AccessDenied" in cp.stderr, cp.stderr


# -- own daemon -----------------------------------------------------------------------------

def test_login_rate_limit_says_too_many_attempts(make_daemon, tmp_path):
    d = make_daemon()
    password = _read_secret(d.data_dir / "admin-password")
    results = tmp_path / "ratelimit.json"
    cp, data = run_node("ratelimit", d, password, results,
                        PIXELPORT_BUCKET="unused", PIXELPORT_PREP_BUCKET="unused")
    assert cp.returncode == 0, f"{cp.stdout}\n{cp.stderr}"
    assert data["steps"]["too many wrong passwords say so"]["ok"]


def test_screenshots_saved(ui_after):
    from PIL import Image

    shots = artifacts_dir()
    missing = [n for n in SCREENSHOTS if not (shots / f"{n}.png").is_file()]
    assert not missing, f"missing screenshots in {shots}: {missing}"
    for n in SCREENSHOTS:
        with Image.open(shots / f"{n}.png") as img:
            if n.startswith(("09-phone", "10-phone")):
                assert img.size[0] == 390, (n, img.size)
            else:
                assert img.size[0] == 1280, (n, img.size)
