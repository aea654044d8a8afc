"""The Debian package, installed for real with dpkg on this machine (CI is Debian 12 and
root): its files, the `pixelport` system user, the conffiles, both units (systemd-analyze
verify, and an exposure of at most 2.0 by `systemd-analyze security --offline=true`), the
service started as the package's user with the unit's own ExecStart, an upload and an image,
then upgrade, remove and purge.

Before this there was a unit file and `cargo build`: no package, no user (the unit used
DynamicUser), nothing that said where the first start's secrets went.

The package is built from the dev profile's binary (scripts/build-deb.sh --profile dev), so
the suite needs no release build; the files are the same as a release package's.
"""

from __future__ import annotations

import grp
import hashlib
import hmac
import base64
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import time
import tomllib
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config as BotoConfig

import harness

pytestmark = pytest.mark.pixelport_only

ROOT = harness.REPO_ROOT
PHOTO = ROOT.parent / "shared" / "images" / "rocket-640x427.jpg"
UNITS = ("pixelport.service", "pixelport-edge.service")
UNIT_DIR = Path("/lib/systemd/system")
DATA = Path("/var/lib/pixelport")
ETC = Path("/etc/pixelport")
MAX_EXPOSURE = 2.0


def _run(*cmd, check=True, env=None, timeout=600, **kw) -> subprocess.CompletedProcess:
    cp = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env,
                        timeout=timeout, **kw)
    if check and cp.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {cp.returncode}\n"
                             f"stdout:\n{cp.stdout}\nstderr:\n{cp.stderr}")
    return cp


def _installed() -> bool:
    cp = _run("dpkg-query", "-W", "-f=${Status}", "pixelport", check=False)
    return cp.returncode == 0 and "installed" in cp.stdout and "not-installed" not in cp.stdout


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("installs a Debian package: needs root (CI runs as root)")
    if not shutil.which("dpkg") or not Path("/etc/debian_version").exists():
        pytest.skip("needs dpkg on Debian")
    if _installed() or Path("/usr/bin/pixelport").exists():
        pytest.skip("a pixelport package (or /usr/bin/pixelport) is already installed here; "
                    "not replacing it")
    cp = _run("bash", ROOT / "scripts" / "build-deb.sh", "--profile", "dev", "--no-build",
              timeout=1500, cwd=ROOT)
    path = Path(cp.stdout.strip().splitlines()[-1])
    assert path.suffix == ".deb" and path.exists(), cp.stdout
    yield path
    # Leave the machine as it was (the user stays, as Debian policy has it).
    env = {**os.environ, "PIXELPORT_PURGE_DATA": "yes"}
    _run("dpkg", "--purge", "pixelport", check=False, env=env)


def _unit(name: str) -> dict[str, list[str]]:
    """The [Service] settings of an installed unit, each key's values in order."""
    out: dict[str, list[str]] = {}
    section = None
    for line in (UNIT_DIR / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]" and "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


class Service:
    """The installed service, started as systemd would start it: the unit's User/Group,
    ExecStartPre and ExecStart, STATE_DIRECTORY and UMask; with systemd as PID 1 through
    systemctl instead."""

    def __init__(self, tmp: Path):
        self.unit = _unit("pixelport.service")
        self.s3, self.images, self.admin = (harness.free_port() for _ in range(3))
        self.proc = None
        self.log = tmp / "service.log"

    def env(self) -> dict:
        env = {k: v for k, v in harness.run_env_isolated().items()
               if not k.startswith(("PIXELPORT_", "IMGPROXY_"))}
        env.update({
            "STATE_DIRECTORY": str(DATA),
            "HOME": str(DATA),
            "USER": "pixelport",
            # The one deviation from the unit: free ports, so a busy 9000/8080/9001 on the
            # test machine cannot fail the test.
            "PIXELPORT_S3__LISTEN": f"127.0.0.1:{self.s3}",
            "PIXELPORT_IMAGES__LISTEN": f"127.0.0.1:{self.images}",
            "PIXELPORT_ADMIN__LISTEN": f"127.0.0.1:{self.admin}",
        })
        return env

    def _as_user(self, command: str) -> list[str]:
        user, group = self.unit["User"][0], self.unit["Group"][0]
        umask = self.unit["UMask"][0]
        return ["setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups",
                "sh", "-c", f"umask {umask}; exec {command}"]

    def start(self) -> "Service":
        for pre in self.unit.get("ExecStartPre", []):
            _run(*self._as_user(pre), env=self.env(), cwd="/")
        cmd = self.unit["ExecStart"][0]
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(self._as_user(cmd), env=self.env(), cwd="/",
                                     stdout=out, stderr=out, start_new_session=True)
        out.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"exited {self.proc.returncode}:\n{self.log.read_text()}"
            try:
                if requests.get(f"http://127.0.0.1:{self.admin}/ready", timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"not ready in 30 s:\n{self.log.read_text()}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def client(self):
        creds = tomllib.loads((DATA / "credentials.toml").read_text())
        return boto3.client(
            "s3", endpoint_url=f"http://127.0.0.1:{self.s3}",
            aws_access_key_id=creds["access_key"], aws_secret_access_key=creds["secret_key"],
            region_name="us-east-1", config=BotoConfig(retries={"max_attempts": 1}))

    def image(self, path: str) -> requests.Response:
        k = tomllib.loads((DATA / "image-key.toml").read_text())
        mac = hmac.new(bytes.fromhex(k["key"]), bytes.fromhex(k["salt"]) + path.encode(),
                       hashlib.sha256).digest()
        sig = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
        return requests.get(f"http://127.0.0.1:{self.images}/{sig}{path}", timeout=60)


def test_package_installs_runs_upgrades_removes_and_purges(deb, tmp_path):
    """The whole life of the package on this machine, in order."""
    # -- install ------------------------------------------------------------------------
    cp = _run("dpkg", "-i", deb)
    said = cp.stdout + cp.stderr
    assert "systemctl enable --now pixelport" in said, said
    for secret in ("credentials.toml", "admin-password", "image-key.toml"):
        assert f"/var/lib/pixelport/{secret}" in said, said

    # -- files --------------------------------------------------------------------------
    files = set(_run("dpkg-query", "-L", "pixelport").stdout.split())
    for f in ("/usr/bin/pixelport", "/etc/pixelport/pixelport.toml", "/etc/pixelport/edge.toml",
              "/lib/systemd/system/pixelport.service",
              "/lib/systemd/system/pixelport-edge.service",
              "/usr/lib/sysusers.d/pixelport.conf", "/usr/share/doc/pixelport/README.md",
              "/usr/share/doc/pixelport/pixelport.txt", "/usr/share/doc/pixelport/tunnel.md"):
        assert f in files, f"{f} not in the package"
        assert Path(f).exists(), f
    assert os.access("/usr/bin/pixelport", os.X_OK)
    assert (ETC / "pixelport.toml").read_text() == (ROOT / "config" / "pixelport.toml").read_text()
    conffiles = Path("/var/lib/dpkg/info/pixelport.conffiles").read_text().split()
    assert sorted(conffiles) == ["/etc/pixelport/edge.toml", "/etc/pixelport/pixelport.toml"]
    helptext = Path("/usr/share/doc/pixelport/pixelport.txt").read_text()
    assert "pixelport serve" in helptext and "--config" in helptext
    depends = _run("dpkg-query", "-W", "-f=${Depends}", "pixelport").stdout
    linked = _run("ldd", "/usr/bin/pixelport").stdout
    if "libdav1d.so.6" in linked:
        assert "libdav1d6" in depends, depends
    if "libheif.so.1" in linked:
        assert "libheif1" in depends, depends

    # -- the user -----------------------------------------------------------------------
    user = pwd.getpwnam("pixelport")
    assert user.pw_uid < 1000 and user.pw_dir == str(DATA), user
    assert user.pw_shell in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false"), user
    assert grp.getgrgid(user.pw_gid).gr_name == "pixelport"
    st = DATA.stat()
    assert st.st_uid == user.pw_uid and (st.st_mode & 0o777) == 0o700, oct(st.st_mode)

    # -- config and units ---------------------------------------------------------------
    _run("/usr/bin/pixelport", "check-config", ETC / "pixelport.toml")
    _run("/usr/bin/pixelport", "check-config", ETC / "edge.toml")
    for unit in UNITS:
        v = _run("systemd-analyze", "verify", UNIT_DIR / unit, check=False)
        # verify prints nothing for a clean unit; anything it says about ours is a failure.
        assert v.returncode == 0 and unit not in v.stderr, v.stderr
        sec = _run("systemd-analyze", "security", "--offline=true", UNIT_DIR / unit)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", sec.stdout)
        assert m, sec.stdout[-500:]
        exposure = float(m.group(1))
        print(f"[package] {unit}: exposure {exposure}")
        assert exposure <= MAX_EXPOSURE, f"{unit} exposure {exposure}:\n{sec.stdout}"
        settings = _unit(unit)
        assert settings["Type"] == ["notify"] and settings["User"] == ["pixelport"], settings
        assert settings.get("WatchdogSec") and settings.get("ExecReload"), settings

    # -- run as the package user, with the unit's command line ------------------------------
    svc = Service(tmp_path).start()
    for secret in ("credentials.toml", "admin-password", "admin-token", "image-key.toml"):
        st = (DATA / secret).stat()
        assert st.st_uid == user.pw_uid and (st.st_mode & 0o777) == 0o600, (secret, oct(st.st_mode))
    c = svc.client()
    c.create_bucket(Bucket="photos")
    c.put_object(Bucket="photos", Key="rocket.jpg", Body=PHOTO.read_bytes())
    r = svc.image("/rs:fit:300:200/plain/s3://photos/rocket.jpg@webp")
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp", r.text[:300]
    from io import BytesIO
    from PIL import Image
    with Image.open(BytesIO(r.content)) as im:
        assert im.size[0] == 300 or im.size[1] == 200, im.size
    assert svc.stop() == 0

    # -- upgrade: the edited config and the data stay ------------------------------------
    edited = (ETC / "pixelport.toml").read_text().replace('log_level = "info"',
                                                          'log_level = "warn"', 1)
    (ETC / "pixelport.toml").write_text(edited)
    creds = (DATA / "credentials.toml").read_text()
    cp = _run("dpkg", "-i", deb, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
              stdin=subprocess.DEVNULL)
    assert (ETC / "pixelport.toml").read_text() == edited
    assert (DATA / "credentials.toml").read_text() == creds
    svc = Service(tmp_path).start()
    assert svc.client().get_object(Bucket="photos", Key="rocket.jpg")["Body"].read() == \
        PHOTO.read_bytes()
    assert svc.stop() == 0

    # -- remove: the config and the data stay ---------------------------------------------
    _run("dpkg", "--remove", "pixelport")
    assert not Path("/usr/bin/pixelport").exists()
    assert (ETC / "pixelport.toml").read_text() == edited
    assert (DATA / "credentials.toml").exists()

    # -- purge: the config goes, the data stays unless asked ------------------------------
    cp = _run("dpkg", "--purge", "pixelport")
    assert not ETC.exists()
    assert (DATA / "credentials.toml").exists() and any((DATA / "blobs").iterdir())
    assert "/var/lib/pixelport" in cp.stdout + cp.stderr
    assert pwd.getpwnam("pixelport")

    _run("dpkg", "-i", deb)
    cp = _run("dpkg", "--purge", "pixelport", env={**os.environ, "PIXELPORT_PURGE_DATA": "yes"})
    assert not DATA.exists() and not ETC.exists(), cp.stdout
