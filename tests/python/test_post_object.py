"""Browser uploads: POST Object with an HTML form and a signed POST policy (#14 part 6).

The policy's conditions (eq, starts-with, content-length-range), its expiration, the SigV4
POST signature, success_action_status and success_action_redirect are checked by s3s; the
upload then runs as a PutObject (tags, ACL, size limit, cache invalidation). Pixelport adds
the bucket-policy and scoped-key check on the form's key, and refuses the ${filename} key
variable it cannot fill in rather than storing an object literally named `${filename}`.
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

import harness

pytestmark = pytest.mark.pixelport_only

BROWSER_DIR = Path(__file__).resolve().parents[1] / "browser"
CHROMIUM = "/usr/bin/chromium"


def error_code(r: requests.Response) -> str | None:
    return harness.error_code(r)


def test_boto3_presigned_post_and_its_conditions(backend_daemon):
    d = backend_daemon
    c = d.client()
    b = harness.unique_name("form")
    c.create_bucket(Bucket=b)
    post = c.generate_presigned_post(
        b, "uploads/photo.png",
        Fields={"success_action_status": "201", "Content-Type": "image/png"},
        Conditions=[["starts-with", "$key", "uploads/"], {"success_action_status": "201"},
                    ["content-length-range", 1, 1000], {"Content-Type": "image/png"}],
        ExpiresIn=300)
    r = requests.post(post["url"], data=post["fields"],
                      files={"file": ("photo.png", b"\x89PNG data", "image/png")}, timeout=30)
    assert r.status_code == 201, r.text
    root = harness.parse_xml(r.content)
    assert {harness.strip_ns(e.tag): e.text for e in root}["Key"] == "uploads/photo.png"
    got = c.get_object(Bucket=b, Key="uploads/photo.png")
    assert got["Body"].read() == b"\x89PNG data" and got["ContentType"] == "image/png"

    # Each condition holds: too large, a key outside the prefix, another content type.
    r = requests.post(post["url"], data=post["fields"],
                      files={"file": ("big.png", b"x" * 2000, "image/png")}, timeout=30)
    assert r.status_code == 400 and error_code(r) == "EntityTooLarge", r.text
    # (s3s answers a failed condition 400 InvalidPolicyDocument naming the field; AWS
    # answers 403 AccessDenied "Invalid according to Policy".)
    for field, value in (("key", "elsewhere/x.png"), ("Content-Type", "text/html")):
        fields = {**post["fields"], field: value}
        r = requests.post(post["url"], data=fields,
                          files={"file": ("x.png", b"x", "image/png")}, timeout=30)
        assert r.status_code == 400 and error_code(r) == "InvalidPolicyDocument", (field, r.text)
        assert field.lower() in r.text.lower() and value in r.text
    # A policy signed with another secret fails the signature; an unreadable one is refused.
    forged = harness.make_client(d.endpoint, secret_key="not-the-secret").generate_presigned_post(
        b, "uploads/forged.png", ExpiresIn=300)
    r = requests.post(forged["url"], data=forged["fields"],
                      files={"file": ("x.png", b"x", "image/png")}, timeout=30)
    assert r.status_code == 403 and error_code(r) == "SignatureDoesNotMatch", r.text
    fields = {**post["fields"], "policy": post["fields"]["policy"][:-4] + "AAAA"}
    r = requests.post(post["url"], data=fields,
                      files={"file": ("x.png", b"x", "image/png")}, timeout=30)
    assert r.status_code == 400 and error_code(r) == "InvalidPolicyDocument", r.text
    assert [o["Key"] for o in c.list_objects_v2(Bucket=b)["Contents"]] == ["uploads/photo.png"]

    # Without success_action_status: 204, as on AWS.
    plain = c.generate_presigned_post(b, "plain.txt", ExpiresIn=300)
    r = requests.post(plain["url"], data=plain["fields"], files={"file": ("p", b"p")}, timeout=30)
    assert r.status_code == 204, r.text

    # ${filename} cannot be filled in: refused, never stored under the literal name.
    var = c.generate_presigned_post(b, "uploads/${filename}", ExpiresIn=300)
    r = requests.post(var["url"], data=var["fields"],
                      files={"file": ("a.png", b"a", "image/png")}, timeout=30)
    assert r.status_code == 501 and "${filename}" in r.text, r.text


def test_a_scoped_key_signs_only_inside_its_scope(tmp_path):
    token = "post-admin-token-0123456789abcdef"
    d = harness.Daemon(tmp_path / "d", admin_config=f'token = "{token}"\n').start()
    try:
        c = d.client()
        c.create_bucket(Bucket="site")
        r = requests.post(f"{d.admin_url}/api/keys", timeout=30,
                          headers={"Authorization": f"Bearer {token}"},
                          json={"name": "form", "policy": {"shape": "write-only",
                                                           "bucket": "site",
                                                           "prefix": "user-uploads/"}})
        k = r.json()
        signer = harness.make_client(d.endpoint, k["access_key"], k["secret_key"])
        for key, want in (("user-uploads/ok.txt", 204), ("private/no.txt", 403)):
            post = signer.generate_presigned_post("site", key, ExpiresIn=300)
            r = requests.post(post["url"], data=post["fields"], files={"file": ("f", b"f")},
                              timeout=30)
            assert r.status_code == want, (key, r.text)
        assert [o["Key"] for o in c.list_objects_v2(Bucket="site")["Contents"]] == [
            "user-uploads/ok.txt"]
    finally:
        d.stop_all()


class Site(harness.StaticSite):
    """The site's own origin: the upload form, and the page the upload redirects to."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.done = self.page("done.html", "<!doctype html><title>uploaded</title><p>thanks")

    def form(self, url: str, fields: dict) -> str:
        inputs = "\n".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in fields.items())
        return self.page("form.html", (
            f'<!doctype html><title>upload</title>'
            f'<form action="{html.escape(url)}" method="post" enctype="multipart/form-data">'
            f'{inputs}<input type="file" name="file" id="file">'
            f'<button type="submit" id="submit">Upload</button></form>'))


def test_a_real_form_in_chromium(tmp_path):
    node = shutil.which("node")
    if not node or not Path(CHROMIUM).exists() or not (
            BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.fail("the browser test needs node, Chromium and tests/browser/node_modules: "
                    "run scripts/setup-test-deps.sh", pytrace=False)
    d = harness.Daemon(tmp_path / "d").start()
    site = Site(tmp_path / "site")
    try:
        c = d.client()
        c.create_bucket(Bucket="avatars")
        done = site.done
        post = c.generate_presigned_post(
            "avatars", "users/42.jpg",
            Fields={"success_action_redirect": done, "Content-Type": "image/jpeg",
                    "x-amz-meta-user": "42"},
            Conditions=[{"success_action_redirect": done}, ["starts-with", "$key", "users/"],
                        ["content-length-range", 1, 10 * 1024 * 1024],
                        {"Content-Type": "image/jpeg"}, {"x-amz-meta-user": "42"}],
            ExpiresIn=300)
        page = site.form(post["url"], post["fields"])
        photo = harness.REPO_ROOT.parent / "shared" / "images" / "rocket-640x427.jpg"
        env = {**harness.run_env_isolated(), "PAGE_URL": page, "FILE": str(photo),
               "CHROMIUM": CHROMIUM}
        cp = subprocess.run([node, str(BROWSER_DIR / "post_form.mjs")], cwd=BROWSER_DIR,
                            env=env, capture_output=True, text=True, timeout=300)
        assert cp.returncode == 0, cp.stderr
        landed = json.loads(cp.stdout.strip().splitlines()[-1])
        url = urlsplit(landed["url"])
        assert f"{url.scheme}://{url.netloc}{url.path}" == done, landed
        q = parse_qs(url.query)
        assert q["bucket"] == ["avatars"] and q["key"] == ["users/42.jpg"], landed
        got = c.get_object(Bucket="avatars", Key="users/42.jpg")
        assert got["Body"].read() == photo.read_bytes()
        assert got["ContentType"] == "image/jpeg" and got["Metadata"] == {"user": "42"}
        assert q["etag"][0].strip('"') == got["ETag"].strip('"')
    finally:
        site.close()
        d.stop_all()
