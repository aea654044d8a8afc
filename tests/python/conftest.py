"""Shared fixtures for the Pixelport integration tests.

Fixtures
--------
daemon          module-scoped embedded-backend daemon
backend_daemon  module-scoped daemon parametrized over ["embedded", "remote"]
                (the remote one starts its own s3s-fs cluster)
server          the daemon a module talks to (``daemon`` unless a module
                overrides ``server``, as test_sdk.py does with backend_daemon)
s3              boto3 client for ``server`` (path-style, SigV4, no retries)
bucket          a fresh, uniquely named bucket on ``server``, emptied after
aws             runs the aws cli v1 against ``server`` (harness.AwsCli)
make_daemon     factory for extra daemons with custom settings (stopped after)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import harness

_AWS_DIR: Path | None = None


def pytest_configure(config):
    """Keep the user's AWS configuration and credentials out of every client."""
    global _AWS_DIR
    import tempfile

    for k in list(os.environ):
        if k.startswith("AWS_"):
            del os.environ[k]
    _AWS_DIR = Path(tempfile.mkdtemp(prefix="pixelport-aws-"))
    cfg = _AWS_DIR / "config"
    cfg.write_text(
        "[default]\n"
        f"region = {harness.REGION}\n"
        "max_attempts = 1\n"
        "retry_mode = standard\n"
        "s3 =\n"
        "    addressing_style = path\n"
    )
    creds = _AWS_DIR / "credentials"
    creds.write_text("")
    os.environ["AWS_CONFIG_FILE"] = str(cfg)
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(creds)
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


def pytest_unconfigure(config):
    import shutil

    if _AWS_DIR is not None:
        shutil.rmtree(_AWS_DIR, ignore_errors=True)


def pytest_report_header(config):
    if harness.is_stand_in():
        return "pixelport tests: S3 server = s3s-fs stand-in (PIXELPORT_TEST_IMPL=s3s-fs)"
    return f"pixelport tests: daemon = {harness.pixelport_bin()}"


def pytest_collection_modifyitems(config, items):
    if not harness.is_stand_in():
        return
    skip = pytest.mark.skip(reason="Pixelport-only feature; S3 server is the s3s-fs stand-in")
    for item in items:
        if item.get_closest_marker("pixelport_only"):
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    seen = []
    for d in list(harness.LIVE) + list(getattr(item, "_pp_daemons", [])):
        if isinstance(d, harness.Daemon) and d not in seen:
            seen.append(d)
    for value in item.funcargs.values() if hasattr(item, "funcargs") else ():
        if isinstance(value, harness.Daemon) and value not in seen:
            seen.append(value)
    for d in seen:
        rep.sections.append((f"daemon log ({d.backend}, {d.base})", d.logs()))


def _stop_checked(d: harness.Daemon) -> None:
    was_alive = d.alive()
    rc = d.stop_all()
    if was_alive and rc != 0 and not harness.is_stand_in():
        pytest.fail(f"daemon exited with {rc} after SIGTERM, expected 0:\n{d.logs()}",
                    pytrace=False)


def _start(tmp_path_factory, name: str, **kw) -> harness.Daemon:
    d = harness.Daemon(tmp_path_factory.mktemp(name), **kw)
    try:
        d.start()
    except Exception:
        d.stop_all()
        raise
    return d


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """An embedded-backend daemon shared by one test module."""
    d = _start(tmp_path_factory, "daemon", backend="embedded")
    yield d
    _stop_checked(d)


@pytest.fixture(scope="module", params=["embedded", "remote"])
def backend_daemon(request, tmp_path_factory):
    """A daemon per storage backend, shared by one test module."""
    d = _start(tmp_path_factory, f"daemon-{request.param}", backend=request.param)
    yield d
    _stop_checked(d)


@pytest.fixture(scope="module")
def server(daemon):
    return daemon


@pytest.fixture(scope="module")
def s3(server):
    return server.client()


@pytest.fixture
def bucket(s3):
    name = harness.unique_name("t")
    s3.create_bucket(Bucket=name)
    yield name
    harness.empty_bucket(s3, name)


@pytest.fixture
def make_daemon(request, tmp_path):
    """Start extra daemons: ``make_daemon(backend="embedded", **Daemon kwargs)``."""
    made: list[harness.Daemon] = []
    request.node._pp_daemons = made

    def factory(backend: str = "embedded", name: str | None = None, start: bool = True, **kw):
        base = tmp_path / (name or f"d{len(made)}-{backend}")
        d = harness.Daemon(base, backend=backend, **kw)
        made.append(d)
        if start:
            d.start()
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
        if was_alive and rc != 0 and not harness.is_stand_in():
            errors.append(f"daemon {d.base} exited {rc} after SIGTERM, expected 0:\n{d.logs()}")
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture(scope="module")
def aws(server):
    return harness.AwsCli(server.endpoint)
