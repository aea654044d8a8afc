"""The ``pixelport`` command line and the daemon's behaviour as an operator sees it.

Covers ``--version``/``--help``, ``check-config`` (effective config, masked
secrets, env overrides), configuration and start-up errors (which must name
the key at fault and start nothing), first-start credential generation, the
default data dir (``./pixelport-data`` and ``$STATE_DIRECTORY``), ``keygen``,
graceful shutdown on SIGTERM/SIGINT, JSON logs with request ids, and how the
remote backend behaves while its cluster is down.

Every process runs on 127.0.0.1 with free ports and every wait has a timeout.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
import tomllib
import urllib.parse
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError

import harness
from harness import MiB

pytestmark = pytest.mark.pixelport_only

CMD_TIMEOUT = 20.0
# A start that must fail has to fail quickly: well under the harness's READY_TIMEOUT.
FAIL_FAST = 10.0

# Marks a key to remove from the harness-generated config.
DROP = object()


# -- helpers ------------------------------------------------------------------------

def clean_env(**extra: str) -> dict:
    """os.environ without AWS_*, PIXELPORT_*, STATE_DIRECTORY or RUST_LOG, plus ``extra``."""
    env = {k: v for k, v in harness.run_env_isolated().items()
           if not k.startswith("PIXELPORT_") and k not in ("STATE_DIRECTORY", "RUST_LOG")}
    env.update(extra)
    return env


def run_pixelport(*args, env: dict | None = None, cwd=None,
                  timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess:
    """Run the pixelport binary to completion (killed and failed after ``timeout``)."""
    cmd = [str(harness.pixelport_bin()), *map(str, args)]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=clean_env() if env is None else env, cwd=cwd,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"`{' '.join(cmd)}` still running after {timeout}s (killed); "
                    f"stdout:\n{e.stdout}\nstderr:\n{e.stderr}", pytrace=False)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def dump_toml(cfg: dict) -> str:
    """A config of one level of tables with scalar/list values, as TOML."""
    out = []
    for section, table in cfg.items():
        out.append(f"[{section}]")
        out += [f"{k} = {toml_value(v)}" for k, v in table.items()]
        out.append("")
    return "\n".join(out)


def is_listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def record_fields(rec: dict) -> dict:
    """A JSON log record's fields, whether flattened to the top level or under "fields"."""
    fields = dict(rec)
    if isinstance(rec.get("fields"), dict):
        fields.update(rec["fields"])
    return fields


class CliDaemon(harness.Daemon):
    """A harness daemon whose config, environment, cwd and config file can be changed.

    ``overrides`` maps section -> {key: value or DROP} and is applied to the
    harness-generated config.  ``env`` is added to a clean environment (no
    AWS_*/PIXELPORT_* of the caller).  With ``use_config=False`` the daemon
    is started without ``--config`` and with ``env`` as its whole environment
    (plus PATH), the listen addresses passed as PIXELPORT_* overrides.
    stdout/stderr go to the harness's log files; ``out()``/``err()`` return
    what the latest start wrote.
    """

    def __init__(self, base: Path, overrides: dict | None = None, env: dict | None = None,
                 cwd: Path | None = None, use_config: bool = True, **kw):
        super().__init__(base, **kw)
        self.overrides = overrides or {}
        self.env = dict(env or {})
        self.cwd = cwd
        self.use_config = use_config
        self._out_at = 0
        self._err_at = 0

    def write_config(self) -> None:
        super().write_config()
        cfg = tomllib.loads(self.config_path.read_text())
        for section, table in self.overrides.items():
            for key, value in table.items():
                if value is DROP:
                    cfg.get(section, {}).pop(key, None)
                else:
                    cfg.setdefault(section, {})[key] = value
        self.config_path.write_text(dump_toml(cfg))

    def listen_env(self) -> dict:
        return {
            "PIXELPORT_S3__LISTEN": f"127.0.0.1:{self.s3_port}",
            "PIXELPORT_IMAGES__LISTEN": f"127.0.0.1:{self.images_port}",
            "PIXELPORT_ADMIN__LISTEN": f"127.0.0.1:{self.admin_port}",
        }

    def command(self) -> tuple[list[str], dict]:
        binary = str(harness.pixelport_bin())
        if self.use_config:
            self.write_config()
            return [binary, "serve", "--config", str(self.config_path)], clean_env(**self.env)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.listen_env(), **self.env}
        return [binary, "serve"], env

    def start(self) -> "CliDaemon":
        if self.backend == "remote" and self.cluster is None:
            (self.cluster_root / harness.CLUSTER_BUCKET).mkdir(parents=True, exist_ok=True)
            self.cluster = harness.S3sFs(self.cluster_root, self.base, harness.CLUSTER_ACCESS_KEY,
                                         harness.CLUSTER_SECRET_KEY,
                                         name="cluster-s3s-fs").start()
        cmd, env = self.command()
        self.starts += 1
        self._out_at = self.stdout_path.stat().st_size if self.stdout_path.exists() else 0
        self._err_at = self.stderr_path.stat().st_size if self.stderr_path.exists() else 0
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         env=env, cwd=self.cwd, start_new_session=True)
        if self not in harness.LIVE:
            harness.LIVE.append(self)
        try:
            self._wait_ready()
        except Exception:
            self.kill9()
            raise
        return self

    def out(self) -> str:
        with open(self.stdout_path, "rb") as f:
            f.seek(self._out_at)
            return f.read().decode(errors="replace")

    def err(self) -> str:
        with open(self.stderr_path, "rb") as f:
            f.seek(self._err_at)
            return f.read().decode(errors="replace")

    def signal_and_wait(self, sig: int, timeout: float) -> tuple[int, float]:
        """Send ``sig``; return (exit code, seconds until exit).  Fails after ``timeout``."""
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            pytest.fail(f"pixelport still running {timeout}s after signal {sig}:\n{self.logs()}",
                        pytrace=False)
        if self in harness.LIVE:
            harness.LIVE.remove(self)
        return rc, time.monotonic() - t0


@pytest.fixture
def cli_daemon(request, tmp_path):
    """Factory for CliDaemon objects (not started); stopped with SIGTERM afterwards."""
    made: list[CliDaemon] = []
    request.node._pp_daemons = made

    def factory(name: str = "d", **kw) -> CliDaemon:
        d = CliDaemon(tmp_path / f"{name}{len(made)}", **kw)
        made.append(d)
        return d

    yield factory
    errors = []
    for d in made:
        was_alive = d.alive()
        try:
            rc = d.stop_all()
        except RuntimeError as e:
            errors.append(str(e))
            continue
        if was_alive and rc != 0:
            errors.append(f"daemon {d.base} exited {rc} after SIGTERM, expected 0:\n{d.logs()}")
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


def base_config(tmp_path: Path) -> dict:
    """A valid config on free ports with its data_dir under ``tmp_path``."""
    return {
        "server": {"data_dir": str(tmp_path / "data"), "log_format": "text"},
        "s3": {"listen": f"127.0.0.1:{harness.free_port()}",
               "access_key": harness.ACCESS_KEY, "secret_key": harness.SECRET_KEY},
        "images": {"listen": f"127.0.0.1:{harness.free_port()}"},
        "admin": {"listen": f"127.0.0.1:{harness.free_port()}"},
        "store": {"kind": "embedded"},
    }


def config_ports(cfg: dict) -> list[int]:
    ports = []
    for section in ("s3", "images", "admin"):
        addr = cfg.get(section, {}).get("listen", "")
        if re.fullmatch(r"127\.0\.0\.1:\d+", str(addr)):
            ports.append(int(str(addr).rsplit(":", 1)[1]))
    return ports


# -- 1. version and help ------------------------------------------------------------

def test_version_prints_the_crate_version():
    """`pixelport --version` prints the version from Cargo.toml and exits 0."""
    version = tomllib.loads((harness.REPO_ROOT / "Cargo.toml").read_text())["package"]["version"]
    cp = run_pixelport("--version")
    assert cp.returncode == 0, cp
    assert cp.stdout.strip() == f"pixelport {version}", cp.stdout


@pytest.mark.parametrize("args", [[], ["serve"], ["check-config"], ["keygen"], ["fsck"]],
                         ids=["top", "serve", "check-config", "keygen", "fsck"])
def test_help_works_on_every_subcommand(args):
    """`--help` prints usage and exits 0 on the top level and on every subcommand."""
    cp = run_pixelport(*args, "--help")
    assert cp.returncode == 0, cp
    assert "Usage:" in cp.stdout, cp.stdout
    if args:
        assert f"pixelport {args[0]}" in cp.stdout, cp.stdout
    else:
        for sub in ("serve", "check-config", "keygen", "fsck"):
            assert sub in cp.stdout, cp.stdout


# -- 2. check-config ------------------------------------------------------------------

FILE_SECRET = "file-secret-value-0123456789"
ENV_SECRET = "env-secret-value-9876543210"
STORE_SECRET = "store-secret-value-abcdefgh"


@pytest.mark.parametrize("secret_from", ["file", "env"])
def test_check_config_prints_effective_config_with_secrets_masked(tmp_path, secret_from):
    """check-config prints defaults + file + env as TOML; env beats the file; secrets show as ****."""
    cfg = {
        "s3": {"listen": "127.0.0.1:9200", "access_key": "AKIAFILEACCESSKEY",
               "secret_key": FILE_SECRET, "region": "eu-west-3"},
        "store": {"secret_key": STORE_SECRET, "access_key": "cluster-ak"},
    }
    path = tmp_path / "pixelport.toml"
    path.write_text(dump_toml(cfg))
    env = clean_env(PIXELPORT_S3__LISTEN="127.0.0.1:9100")
    secrets = [FILE_SECRET, STORE_SECRET]
    if secret_from == "env":
        env["PIXELPORT_S3__SECRET_KEY"] = ENV_SECRET
        env["PIXELPORT_STORE__SECRET_KEY"] = ENV_SECRET + "-store"
        secrets += [ENV_SECRET, ENV_SECRET + "-store"]
    cp = run_pixelport("check-config", path, env=env)
    assert cp.returncode == 0, cp
    for s in secrets:
        assert s not in cp.stdout, f"secret {s!r} printed:\n{cp.stdout}"
        assert s not in cp.stderr, f"secret {s!r} printed on stderr:\n{cp.stderr}"
    assert "****" in cp.stdout, cp.stdout
    printed = tomllib.loads(cp.stdout)
    for section in ("server", "s3", "images", "admin", "store"):
        assert isinstance(printed.get(section), dict), f"no [{section}] in:\n{cp.stdout}"
    assert printed["s3"]["listen"] == "127.0.0.1:9100", cp.stdout   # env beats the file
    assert printed["s3"]["region"] == "eu-west-3", cp.stdout        # file beats the defaults
    assert printed["images"]["listen"] == "127.0.0.1:8080", cp.stdout  # defaults fill the rest
    assert printed["s3"]["secret_key"] == "****", cp.stdout
    assert printed["store"]["secret_key"] == "****", cp.stdout


def test_check_config_without_file_shows_env_and_defaults(tmp_path):
    """check-config with no file: defaults overlaid by PIXELPORT_* variables, secrets masked."""
    env = clean_env(PIXELPORT_S3__LISTEN="127.0.0.1:9100",
                    PIXELPORT_S3__ACCESS_KEY="AKIAENVACCESS",
                    PIXELPORT_S3__SECRET_KEY=ENV_SECRET)
    cp = run_pixelport("check-config", env=env, cwd=tmp_path)
    assert cp.returncode == 0, cp
    assert ENV_SECRET not in cp.stdout, cp.stdout
    printed = tomllib.loads(cp.stdout)
    assert set(printed) >= {"server", "s3", "images", "admin", "store"}, cp.stdout
    assert printed["s3"]["listen"] == "127.0.0.1:9100"
    assert printed["s3"]["secret_key"] == "****"
    assert printed["admin"]["listen"] == "127.0.0.1:9001"


# -- 3. configuration errors ------------------------------------------------------------

def _bad_unknown_key(cfg, env):
    cfg["s3"]["bogus"] = 1
    return ["bogus"]


def _bad_unknown_section(cfg, env):
    cfg["nosuch"] = {"x": 1}
    return ["nosuch"]


def _bad_duration(cfg, env):
    cfg["server"]["shutdown_grace"] = "forever"
    return ["shutdown_grace"]


def _bad_size(cfg, env):
    cfg["s3"]["max_object_size"] = "big"
    return ["max_object_size"]


def _bad_address(cfg, env):
    cfg["s3"]["listen"] = "nowhere"
    return ["s3.listen"]


def _bad_env_key(cfg, env):
    env["PIXELPORT_S3__LISTNE"] = "127.0.0.1:9100"
    return ["PIXELPORT_S3__LISTNE"]


def _remote_without_endpoint(cfg, env):
    cfg["store"]["kind"] = "remote"
    return ["store.endpoint"]


CONFIG_ERRORS = {
    "unknown-key": _bad_unknown_key,
    "unknown-section": _bad_unknown_section,
    "bad-duration": _bad_duration,
    "bad-size": _bad_size,
    "bad-address": _bad_address,
    "unknown-env-key": _bad_env_key,
    "remote-without-endpoint": _remote_without_endpoint,
}


@pytest.mark.parametrize("command", ["check-config", "serve"])
@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_config_errors_name_the_key_and_start_nothing(tmp_path, case, command):
    """A bad key, section, value or variable: non-zero exit naming it, nothing listens, no data dir."""
    cfg = base_config(tmp_path)
    env = clean_env()
    expected = CONFIG_ERRORS[case](cfg, env)
    path = tmp_path / "pixelport.toml"
    path.write_text(dump_toml(cfg))
    args = ["check-config", path] if command == "check-config" else ["serve", "--config", path]
    t0 = time.monotonic()
    cp = run_pixelport(*args, env=env, timeout=FAIL_FAST)
    elapsed = time.monotonic() - t0
    output = cp.stdout + cp.stderr
    assert cp.returncode != 0, f"exit 0 for a bad config ({case}):\n{output}"
    for word in expected:
        assert word in output, f"error does not name {word!r}:\n{output}"
    if command == "serve":
        assert elapsed < FAIL_FAST
        for port in config_ports(cfg):
            assert not is_listening(port), f"port {port} is listening after a failed start"
        assert not (tmp_path / "data").exists(), "data_dir created by a start that failed on config"
    else:
        assert "[s3]" not in cp.stdout, f"config printed despite the error:\n{cp.stdout}"


# -- 4./5. start-up errors ---------------------------------------------------------------

def _serve_must_fail(d: CliDaemon) -> tuple[subprocess.CompletedProcess, float]:
    cmd, env = d.command()
    t0 = time.monotonic()
    cp = run_pixelport(*cmd[1:], env=env, cwd=d.cwd, timeout=FAIL_FAST)
    return cp, time.monotonic() - t0


@pytest.mark.parametrize("busy", ["s3", "admin"])
def test_port_in_use_fails_fast_and_creates_no_credentials(cli_daemon, busy):
    """A listen address in use: quick non-zero exit naming the key and address; no credentials written."""
    d = cli_daemon(f"busy-{busy}", overrides={"s3": {"access_key": DROP, "secret_key": DROP}})
    port = d.s3_port if busy == "s3" else d.admin_port
    addr = f"127.0.0.1:{port}"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen(1)
        cp, elapsed = _serve_must_fail(d)
        assert cp.returncode != 0, f"serve exited 0 with {addr} in use:\n{cp.stderr}"
        assert elapsed < FAIL_FAST
        assert f"{busy}.listen" in cp.stderr, cp.stderr
        assert addr in cp.stderr, cp.stderr
        others = {"s3": d.s3_port, "images": d.images_port, "admin": d.admin_port}
        others.pop(busy)
        for name, p in others.items():
            assert not is_listening(p), f"{name} port {p} still listening after the failed start"
    assert not (d.data_dir / "credentials.toml").exists(), (
        "credentials generated by a start that could not listen")
    assert "Generated" not in cp.stdout, cp.stdout


def test_unusable_data_dir_fails_naming_it(cli_daemon):
    """data_dir below a regular file: non-zero exit; stderr names server.data_dir and the path."""
    d = cli_daemon("baddir")
    afile = d.base / "afile"
    afile.write_text("not a directory\n")
    bad = afile / "sub"
    d.data_dir = bad
    cp, elapsed = _serve_must_fail(d)
    assert cp.returncode != 0, cp.stderr
    assert elapsed < FAIL_FAST
    assert "server.data_dir" in cp.stderr, cp.stderr
    assert str(bad) in cp.stderr, cp.stderr
    for p in (d.s3_port, d.images_port, d.admin_port):
        assert not is_listening(p)


# -- 6. generated credentials -------------------------------------------------------------

_TRY = re.compile(r"^\s*(AWS_ACCESS_KEY_ID=.*\baws --endpoint-url .*)$", re.M)


def _printed_example(stdout: str) -> tuple[dict, list[str]]:
    """The printed `VAR=... aws --endpoint-url ...` line, as (env vars, argv)."""
    m = _TRY.search(stdout)
    assert m, f"no ready-to-paste `aws --endpoint-url` example in stdout:\n{stdout}"
    words = shlex.split(m.group(1))
    env = {}
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        k, v = words.pop(0).split("=", 1)
        env[k] = v
    assert words[0] == "aws", words
    return env, words[1:]


def test_first_start_generates_credentials_and_reuses_them(cli_daemon, tmp_path):
    """No keys configured: first start saves keys (0600) and prints a working aws example;
    the second start reuses them; keys from the environment win over the file."""
    d = cli_daemon("creds", overrides={"s3": {"access_key": DROP, "secret_key": DROP}})
    cred_file = d.data_dir / "credentials.toml"
    d.start()
    out = d.out()
    assert str(cred_file) in out, f"stdout does not say where the credentials are:\n{out}"
    env, argv = _printed_example(out)
    assert argv[:2] == ["--endpoint-url", d.endpoint], argv
    ak, sk = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    assert ak and sk, env
    assert cred_file.is_file()
    mode = stat.S_IMODE(cred_file.stat().st_mode)
    assert mode == 0o600, f"credentials.toml has mode {oct(mode)}"
    saved = tomllib.loads(cred_file.read_text())
    assert (saved.get("access_key"), saved.get("secret_key")) == (ak, sk), saved

    client = harness.make_client(d.endpoint, ak, sk)
    bucket = harness.unique_name("cred")
    client.create_bucket(Bucket=bucket)
    assert bucket in [b["Name"] for b in client.list_buckets()["Buckets"]]

    # The printed command works as pasted (aws cli v1 as `python -m awscli`).
    run_env = harness.run_env_isolated()
    run_env.update(env)
    run_env.update({k: os.environ[k] for k in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")})
    cp = subprocess.run([sys.executable, "-m", "awscli", *argv], capture_output=True, text=True,
                        env=run_env, timeout=60)
    assert cp.returncode == 0, f"printed aws example failed:\n{cp.stdout}\n{cp.stderr}"
    assert bucket in cp.stdout, cp.stdout

    before = (cred_file.read_bytes(), cred_file.stat().st_mtime_ns)
    assert d.stop() == 0
    d.start()
    assert "Generated" not in d.out(), d.out()
    assert (cred_file.read_bytes(), cred_file.stat().st_mtime_ns) == before, "credentials.toml changed"
    assert bucket in [b["Name"] for b in client.list_buckets()["Buckets"]]
    assert d.stop() == 0

    d.env = {"PIXELPORT_S3__ACCESS_KEY": "ENVACCESSKEY0000", "PIXELPORT_S3__SECRET_KEY": ENV_SECRET}
    d.start()
    env_client = harness.make_client(d.endpoint, "ENVACCESSKEY0000", ENV_SECRET)
    assert bucket in [b["Name"] for b in env_client.list_buckets()["Buckets"]]
    harness.expect_error("InvalidAccessKeyId", 403, client.list_buckets)
    assert cred_file.read_bytes() == before[0]


# -- 7. default data dir --------------------------------------------------------------------

def test_default_data_dir_is_pixelport_data_in_cwd(cli_daemon, tmp_path):
    """No config file, only listen overrides: data goes to ./pixelport-data."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    d = cli_daemon("nocfg", use_config=False, cwd=cwd)
    d.start()
    data = cwd / "pixelport-data"
    assert data.is_dir(), sorted(os.listdir(cwd))
    assert (data / "catalog.redb").is_file(), sorted(os.listdir(data))
    assert (data / "credentials.toml").is_file(), sorted(os.listdir(data))
    assert "pixelport-data" in d.out(), d.out()
    assert sorted(os.listdir(cwd)) == ["pixelport-data"], "files written to cwd outside pixelport-data"
    assert d.stop() == 0


def test_state_directory_is_the_default_data_dir(cli_daemon, tmp_path):
    """STATE_DIRECTORY (systemd) becomes data_dir when data_dir is not set."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    state = tmp_path / "state"
    cp = run_pixelport("check-config", env={"PATH": os.environ.get("PATH", ""),
                                            "STATE_DIRECTORY": str(state)}, cwd=cwd)
    assert cp.returncode == 0, cp
    assert tomllib.loads(cp.stdout)["server"]["data_dir"] == str(state), cp.stdout
    d = cli_daemon("state", use_config=False, cwd=cwd, env={"STATE_DIRECTORY": str(state)})
    d.start()
    assert (state / "catalog.redb").is_file(), sorted(os.listdir(state)) if state.exists() else None
    assert (state / "credentials.toml").is_file()
    assert not (cwd / "pixelport-data").exists(), "./pixelport-data used despite STATE_DIRECTORY"
    assert d.stop() == 0


# -- 8. keygen ---------------------------------------------------------------------------------

def _keygen() -> dict:
    cp = run_pixelport("keygen")
    assert cp.returncode == 0, cp
    out = tomllib.loads(cp.stdout)
    assert set(out) >= {"access_key", "secret_key", "key", "salt"}, cp.stdout
    return out


def test_keygen_prints_fresh_keys():
    """keygen: a 20-char access key, a 40-char secret, hex key and salt; each run differs."""
    a, b = _keygen(), _keygen()
    for out in (a, b):
        assert len(out["access_key"]) == 20 and out["access_key"].isalnum(), out
        assert len(out["secret_key"]) == 40, out
        for k in ("key", "salt"):
            v = out[k]
            assert v and len(v) % 2 == 0, out
            assert len(bytes.fromhex(v)) == len(v) // 2
        assert out["key"] != out["salt"]
    for k in ("access_key", "secret_key", "key", "salt"):
        assert a[k] != b[k], f"two keygen runs printed the same {k}"


# -- 9. graceful shutdown -------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_idle_daemon_exits_0_on_signal(cli_daemon, sig):
    """An idle daemon (one idle keep-alive client) exits 0 within the grace period."""
    grace = 5.0
    d = cli_daemon("idle", shutdown_grace="5s").start()
    session = requests.Session()
    try:
        assert session.get(f"{d.admin_url}/health", timeout=5).status_code == 200
        rc, elapsed = d.signal_and_wait(sig, timeout=grace + 10)
    finally:
        session.close()
    assert rc == 0, d.logs()
    assert elapsed < grace, f"idle daemon took {elapsed:.1f}s to exit (grace {grace}s)"


def test_slow_download_does_not_hold_up_shutdown(cli_daemon):
    """With shutdown_grace=2s and a stalled 200 MiB download, SIGTERM still ends the process
    (exit 0) after about the grace period, and new connections are refused meanwhile."""
    grace = 2.0
    d = cli_daemon("slow", shutdown_grace="2s").start()
    client = d.client()
    bucket = harness.unique_name("slow")
    client.create_bucket(Bucket=bucket)
    size = 200 * MiB
    client.put_object(Bucket=bucket, Key="big.bin", Body=b"\xa5" * size)
    url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "big.bin"},
                                        ExpiresIn=600)
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", f"{parts.path}?{parts.query}")
        resp = conn.getresponse()
        assert resp.status == 200, resp.read(2000)
        assert int(resp.getheader("Content-Length")) == size
        assert len(resp.read(MiB)) == MiB  # then stall: read nothing more

        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        refused_after = None
        while time.monotonic() - t0 < grace:
            if not is_listening(d.s3_port):
                refused_after = time.monotonic() - t0
                break
            time.sleep(0.05)
        assert refused_after is not None, "S3 listener still accepting connections after SIGTERM"
        assert not is_listening(d.admin_port), "admin listener still accepting after SIGTERM"
        assert not is_listening(d.images_port), "images listener still accepting after SIGTERM"
        try:
            rc = d.proc.wait(timeout=grace + 8 - (time.monotonic() - t0))
        except subprocess.TimeoutExpired:
            d.kill9()
            pytest.fail(f"daemon hung: still running {grace + 8}s after SIGTERM with a stalled "
                        f"download (shutdown_grace={grace}s)\n{d.logs()}", pytrace=False)
        elapsed = time.monotonic() - t0
    finally:
        conn.close()
    if d in harness.LIVE:
        harness.LIVE.remove(d)
    assert rc == 0, f"exit code {rc} after the grace period:\n{d.logs()}"
    assert elapsed < grace + 8


# -- 10. logs ------------------------------------------------------------------------------------

def test_json_logs_and_request_ids(cli_daemon):
    """log_format=json: every stderr line is a JSON object; a failed request's log line
    carries the request id the client got in x-amz-request-id."""
    d = cli_daemon("json", overrides={"server": {"log_format": "json"}}).start()
    client = d.client()
    bucket = harness.unique_name("logs")
    client.create_bucket(Bucket=bucket)
    r = harness.signed_request(d.endpoint, "GET", f"/{bucket}/no-such-key", timeout=10)
    assert r.status_code == 404, r.text
    assert harness.error_code(r) == "NoSuchKey", r.text
    rid = r.headers.get("x-amz-request-id")
    assert rid, dict(r.headers)

    deadline = time.monotonic() + 5
    while rid not in d.err() and time.monotonic() < deadline:
        time.sleep(0.1)
    rc, _ = d.signal_and_wait(signal.SIGTERM, timeout=15)
    assert rc == 0, d.logs()

    lines = [ln for ln in d.err().splitlines() if ln.strip()]
    assert lines, "no log output"
    records = []
    for ln in lines:
        try:
            rec = json.loads(ln)
        except ValueError:
            pytest.fail(f"stderr line is not JSON: {ln!r}", pytrace=False)
        assert isinstance(rec, dict), ln
        records.append(record_fields(rec))
    listening = [r for r in records if "listening" in str(r.get("message", ""))]
    assert listening, f"no 'listening' record in:\n{lines}"
    rec = listening[0]
    assert rec.get("s3") == f"127.0.0.1:{d.s3_port}", rec
    assert rec.get("admin") == f"127.0.0.1:{d.admin_port}", rec
    assert rec.get("level"), rec
    with_rid = [r for r in records if rid in json.dumps(r)]
    assert with_rid, f"request id {rid} of the 404 is in no log line:\n" + "\n".join(lines)


def test_text_log_line_carries_request_id(cli_daemon):
    """Text logs too: a failed request is logged with the x-amz-request-id the client got."""
    d = cli_daemon("text").start()
    r = harness.signed_request(d.endpoint, "GET", f"/{harness.unique_name('nb')}/k", timeout=10)
    assert r.status_code == 404, r.text
    rid = r.headers.get("x-amz-request-id")
    assert rid
    deadline = time.monotonic() + 5
    while rid not in d.err() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rid in d.err(), f"request id {rid} not logged:\n{d.err()}"


# -- 11. remote backend outage --------------------------------------------------------------------

OUTAGE_LIMIT = 15.0


def _timed_failure(fn, **kw) -> tuple[str | None, int | None, float]:
    t0 = time.monotonic()
    try:
        fn(**kw)
    except ClientError as e:
        return (e.response.get("Error", {}).get("Code"),
                e.response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
                time.monotonic() - t0)
    pytest.fail(f"{fn.__name__} succeeded while the cluster is down", pytrace=False)


def _single_attempt_client(d: CliDaemon):
    # make_client(retries=1) means one attempt in all (botocore's total_max_attempts), so
    # each request is sent exactly once and the timing is the daemon's own.
    client = harness.make_client(d.endpoint, retries=1, read_timeout=OUTAGE_LIMIT + 15)
    assert client.meta.config.retries.get("total_max_attempts") == 1, client.meta.config.retries
    return client


def test_remote_outage_answers_503_and_recovers(cli_daemon):
    """Cluster down: GET/PUT answer 503 SlowDown (or 500 InternalError) within 15s and
    /ready says 503; with the cluster back on the same port and root, requests succeed."""
    d = cli_daemon("outage", backend="remote",
                   overrides={"store": {"timeout": "2s", "retries": 1}}).start()
    client = _single_attempt_client(d)
    bucket = harness.unique_name("out")
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="k.txt", Body=b"before the outage")
    assert requests.get(f"{d.admin_url}/ready", timeout=10).status_code == 200

    old = d.cluster
    old.kill9()
    old.stop()  # reaped already; only drops it from the harness's live list
    acceptable = {("SlowDown", 503), ("InternalError", 500)}
    for name, fn, kw in [
        ("GET", client.get_object, {"Bucket": bucket, "Key": "k.txt"}),
        ("PUT", client.put_object, {"Bucket": bucket, "Key": "new.txt", "Body": b"during"}),
    ]:
        code, status, elapsed = _timed_failure(fn, **kw)
        assert (code, status) in acceptable, f"{name} during the outage: {code} {status}"
        assert elapsed < OUTAGE_LIMIT, f"{name} took {elapsed:.1f}s to fail"
    t0 = time.monotonic()
    r = requests.get(f"{d.admin_url}/ready", timeout=OUTAGE_LIMIT + 5)
    assert r.status_code == 503, (r.status_code, r.text)
    assert time.monotonic() - t0 < OUTAGE_LIMIT

    d.cluster = harness.S3sFs(old.root, d.base, harness.CLUSTER_ACCESS_KEY,
                              harness.CLUSTER_SECRET_KEY, port=old.port,
                              name="cluster-s3s-fs").start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if requests.get(f"{d.admin_url}/ready", timeout=10).status_code == 200:
            break
        time.sleep(0.2)
    else:
        pytest.fail("/ready not 200 within 10s of the cluster coming back", pytrace=False)
    assert client.get_object(Bucket=bucket, Key="k.txt")["Body"].read() == b"before the outage"
    client.put_object(Bucket=bucket, Key="after.txt", Body=b"after")
    assert client.get_object(Bucket=bucket, Key="after.txt")["Body"].read() == b"after"


def _wait_stopped(pid: int, timeout: float = 5.0) -> None:
    """Wait until every thread of ``pid`` is in the stopped state (SIGSTOP delivered)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                stat_line = (task / "stat").read_text()
            except OSError:
                continue
            states.append(stat_line.rsplit(")", 1)[1].split()[0])
        if states and all(s in ("T", "t") for s in states):
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} did not stop within {timeout}s")


def test_remote_hung_cluster_times_out(cli_daemon):
    """Cluster hung (SIGSTOP, connections accepted but never answered): with timeout=2s and
    retries=1 a GET and /ready still answer, with 503/500, within 15s; then it recovers."""
    d = cli_daemon("hung", backend="remote",
                   overrides={"store": {"timeout": "2s", "retries": 1}}).start()
    client = _single_attempt_client(d)
    bucket = harness.unique_name("hung")
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="k.txt", Body=b"before the hang")
    cluster = d.cluster.proc
    cluster.send_signal(signal.SIGSTOP)
    try:
        _wait_stopped(cluster.pid)
        code, status, elapsed = _timed_failure(client.get_object, Bucket=bucket, Key="k.txt")
        assert (code, status) in {("SlowDown", 503), ("InternalError", 500)}, (code, status)
        assert elapsed < OUTAGE_LIMIT, f"GET took {elapsed:.1f}s to fail"
        t0 = time.monotonic()
        try:
            r = requests.get(f"{d.admin_url}/ready", timeout=OUTAGE_LIMIT)
        except requests.Timeout:
            pytest.fail(f"/ready did not answer within {OUTAGE_LIMIT}s while the cluster hangs",
                        pytrace=False)
        assert r.status_code == 503, (r.status_code, r.text)
        assert time.monotonic() - t0 < OUTAGE_LIMIT
    finally:
        cluster.send_signal(signal.SIGCONT)
    assert client.get_object(Bucket=bucket, Key="k.txt")["Body"].read() == b"before the hang"
