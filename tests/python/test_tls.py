"""TLS on the appliance's own listeners: `tls_cert` / `tls_key` on [s3], [images] and
[admin], HTTP/2 by ALPN, the session cookie's Secure flag, and a certificate swap on SIGHUP
that keeps a download in flight and gives new connections the new certificate.

Before this, the three listeners spoke plain HTTP only: a user had to put a TLS proxy in
front of each, and the admin cookie was Secure only when a proxy said X-Forwarded-Proto.

Certificates are made per run with Debian's openssl (a CA and a leaf for 127.0.0.1).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config as BotoConfig

import harness

pytestmark = pytest.mark.pixelport_only

KEY_HEX = "746c732d6b6579"
SALT_HEX = "746c732d73616c74"
PHOTO = harness.REPO_ROOT.parent / "shared" / "images" / "rocket-640x427.jpg"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    return d / f"{name}.crt", d / f"{name}.key"


def make_leaf(d: Path, ca: tuple[Path, Path], name: str) -> tuple[Path, Path]:
    ext = d / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                   "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", str(ext), cwd=d)
    return d / f"{name}.crt", d / f"{name}.key"


def spki_pin(cert: Path) -> str:
    """base64(sha256(SubjectPublicKeyInfo)): what Chromium's SPKI allow-list takes."""
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", str(cert)],
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         check=True, capture_output=True).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def peer_cert(port: int, cafile: Path, alpn: list[str] | None = None) -> tuple[bytes, str | None]:
    """A fresh TLS handshake verified against `cafile`: the server's certificate (DER) and
    the ALPN protocol chosen."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            return s.getpeercert(binary_form=True), s.selected_alpn_protocol()


def sign(path: str) -> str:
    mac = hmac.new(bytes.fromhex(KEY_HEX), bytes.fromhex(SALT_HEX) + path.encode(), hashlib.sha256)
    return "/" + base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode() + path


class Tls:
    """One daemon serving HTTPS on all three listeners from one certificate pair in `live/`."""

    def __init__(self, base: Path):
        self.dir = base / "pki"
        self.dir.mkdir(parents=True)
        self.ca = make_ca(self.dir, "ca-one")
        self.leaf = make_leaf(self.dir, self.ca, "leaf-one")
        self.live = self.dir / "live"
        self.live.mkdir()
        self.cert, self.key = self.live / "cert.pem", self.live / "key.pem"
        shutil.copy(self.leaf[0], self.cert)
        shutil.copy(self.leaf[1], self.key)
        tls = f"tls_cert = {json.dumps(str(self.cert))}\ntls_key = {json.dumps(str(self.key))}\n"
        self.d = harness.Daemon(
            base / "daemon", s3_config=tls, admin_config=tls,
            images_config=f"key = {json.dumps(KEY_HEX)}\nsalt = {json.dumps(SALT_HEX)}\n" + tls,
            tls_ca=self.ca[0])

    def client(self, cafile: Path | None = None):
        return boto3.client(
            "s3", endpoint_url=self.d.endpoint, aws_access_key_id=harness.ACCESS_KEY,
            aws_secret_access_key=harness.SECRET_KEY, region_name=harness.REGION,
            verify=str(cafile or self.ca[0]),
            config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    t = Tls(tmp_path_factory.mktemp("tls"))
    t.d.start()
    yield t
    t.d.stop()


def test_aws_cli_with_ca_bundle_copies_and_presigns(tls, tmp_path):
    """`aws --ca-bundle` against the HTTPS S3 listener: mb, cp up, cp down (same bytes),
    presign; curl fetches the presigned URL over HTTPS. Without the CA bundle the cli refuses
    the certificate (it is really verified)."""
    aws = harness.AwsCli(tls.d.endpoint)
    ca = str(tls.ca[0])
    bucket = harness.unique_name("tls")
    aws("s3", "mb", f"s3://{bucket}", "--ca-bundle", ca)
    src = tmp_path / "photo.jpg"
    shutil.copy(PHOTO, src)
    aws("s3", "cp", str(src), f"s3://{bucket}/a/photo.jpg", "--ca-bundle", ca)
    back = tmp_path / "back.jpg"
    aws("s3", "cp", f"s3://{bucket}/a/photo.jpg", str(back), "--ca-bundle", ca)
    assert back.read_bytes() == PHOTO.read_bytes()
    url = aws("s3", "presign", f"s3://{bucket}/a/photo.jpg", "--ca-bundle", ca).stdout.strip()
    assert url.startswith(f"https://127.0.0.1:{tls.d.s3_port}/"), url
    got = subprocess.run(["curl", "-sS", "--fail", "--cacert", ca, "-o", "-", url],
                         capture_output=True, check=True, timeout=30).stdout
    assert got == PHOTO.read_bytes()
    refused = aws("s3", "ls", check=False)
    assert refused.returncode != 0
    assert "certificate verify failed" in (refused.stderr + refused.stdout).lower()


def test_image_over_https_with_http2(tls, tmp_path):
    """An image URL over HTTPS is answered over HTTP/2 (ALPN h2) with the right size; a
    client that offers only HTTP/1.1 still gets it."""
    c = tls.client()
    bucket = harness.unique_name("tlsimg")
    c.create_bucket(Bucket=bucket)
    c.put_object(Bucket=bucket, Key="rocket.jpg", Body=PHOTO.read_bytes())
    path = sign(f"/rs:fit:200:200/plain/s3://{bucket}/rocket.jpg@webp")
    out = tmp_path / "out.webp"
    for flag, version in (("--http2", "2"), ("--http1.1", "1.1")):
        cp = subprocess.run(
            ["curl", "-sS", "--fail", flag, "--cacert", str(tls.ca[0]), "-o", str(out),
             "-w", "%{http_version} %{content_type}", f"{tls.d.images_url}{path}"],
            capture_output=True, text=True, check=True, timeout=60)
        assert cp.stdout.split() == [version, "image/webp"], cp.stdout
        from PIL import Image
        with Image.open(out) as im:
            assert im.format == "WEBP" and max(im.size) == 200, (im.format, im.size)
    _, proto = peer_cert(tls.d.images_port, tls.ca[0], ["h2", "http/1.1"])
    assert proto == "h2"


def test_admin_session_cookie_is_secure_over_tls(tls, tmp_path):
    """Logging in over the admin listener's own HTTPS sets a Secure session cookie, with no
    X-Forwarded-Proto from a proxy. The same login over plain HTTP sets none (a browser
    would drop a Secure cookie there)."""
    password = (tls.d.data_dir / "admin-password").read_text().strip()
    r = requests.post(f"{tls.d.admin_url}/api/login", json={"user": "admin", "password": password},
                      verify=str(tls.ca[0]), timeout=30)
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"]
    assert "; Secure" in cookie and "HttpOnly" in cookie, cookie
    plain = harness.Daemon(tmp_path / "plain").start()
    try:
        pw = (plain.data_dir / "admin-password").read_text().strip()
        r = requests.post(f"{plain.admin_url}/api/login", json={"user": "admin", "password": pw},
                          timeout=30)
        assert r.status_code == 200, r.text
        assert "Secure" not in r.headers["set-cookie"], r.headers["set-cookie"]
    finally:
        plain.stop()


def test_sighup_swaps_the_certificate_without_dropping_a_download(tls):
    """A 48 MiB download is in flight on the old certificate when the files are replaced by a
    pair from another CA and SIGHUP arrives: the download completes with every byte, and new
    connections on all three listeners get the new certificate. A bad file on the next
    SIGHUP keeps the new certificate in use (and the daemon up)."""
    c = tls.client()
    bucket = harness.unique_name("tlsswap")
    c.create_bucket(Bucket=bucket)
    body = os.urandom(48 << 20)
    c.put_object(Bucket=bucket, Key="big.bin", Body=body)
    old_der, _ = peer_cert(tls.d.s3_port, tls.ca[0])

    stream = c.get_object(Bucket=bucket, Key="big.bin")["Body"]
    first = stream.read(1 << 20)
    assert len(first) == 1 << 20

    ca2 = make_ca(tls.dir, "ca-two")
    leaf2 = make_leaf(tls.dir, ca2, "leaf-two")
    shutil.copy(leaf2[0], tls.cert)
    shutil.copy(leaf2[1], tls.key)
    tls.d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    new_der = None
    while time.monotonic() < deadline:
        try:
            new_der, _ = peer_cert(tls.d.s3_port, ca2[0])
            break
        except ssl.SSLError:
            time.sleep(0.1)
    assert new_der is not None and new_der != old_der, "new connections still get the old certificate"
    for port in (tls.d.images_port, tls.d.admin_port):
        assert peer_cert(port, ca2[0])[0] != old_der
    with pytest.raises(ssl.SSLCertVerificationError):
        peer_cert(tls.d.s3_port, tls.ca[0])

    rest = b"".join(iter(lambda: stream.read(4 << 20), b""))
    got = first + rest
    assert len(got) == len(body) and hashlib.md5(got).digest() == hashlib.md5(body).digest()

    # A broken file: the reload fails, says why, and the certificate in use stays.
    tls.cert.write_text("not a certificate\n")
    tls.d.proc.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert tls.d.alive()
    assert peer_cert(tls.d.s3_port, ca2[0])[0] == new_der
    assert "TLS certificate not reloaded" in tls.d.logs()
    # The new CA is now the one to trust; the objects are all still there.
    assert tls.client(ca2[0]).head_object(Bucket=bucket, Key="big.bin")["ContentLength"] == len(body)
    shutil.copy(leaf2[0], tls.cert)
    tls.ca = ca2
    tls.d.tls_ca = ca2[0]


def test_admin_ui_over_https_in_chromium(tls, tmp_path):
    """The admin UI in headless Chromium over the admin listener's HTTPS, trusting exactly
    the daemon's certificate (its SPKI pin): log in, a Secure session cookie, pages over h2."""
    import test_admin_ui as ui
    password = (tls.d.data_dir / "admin-password").read_text().strip()
    results = tmp_path / "results.json"
    cp, data = ui.run_node("tls", tls.d, password, results, PIXELPORT_SPKI=spki_pin(tls.cert))
    steps = data.get("steps", {})
    failed = {k: v.get("error") for k, v in steps.items() if not v.get("ok")}
    assert cp.returncode == 0 and not failed, f"{cp.stdout}\n{cp.stderr}\n{failed}"
    for name in ("log in over HTTPS", "the session cookie is Secure",
                 "the dashboard loads over HTTP/2"):
        assert steps.get(name, {}).get("ok"), f"step {name!r} missing: {cp.stdout}"
