"""Object keys that trip up path-based stores, on the embedded backend.

Each key must round-trip exactly through put, list, get, copy and delete,
and nothing may ever be written outside the daemon's data_dir (a key like
"../x" must not become a path).
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest

import harness
from harness import expect_error

ESCAPE_NAME = f"pixelport-escape-{uuid.uuid4().hex[:12]}"

ODD_KEYS = {
    "japanese": "日本語/ファイル.txt",
    "emoji": "emoji-😀",
    "spaces": "a b c",
    "file-a": "a",
    "file-a-slash-b": "a/b",
    "dotdot": "../x",
    "dot": "./y",
    "double-slash": "a//b",
    "trailing-slash": "trailing/",
    "percent-2F": "%2F-percent",
    "query-fragment": "x?y=z#frag",
    "plus": "+plus",
    "len-1024": "k" * 1000 + "-1024-bytes-long-key-end",
    "len-1024-multibyte": "é" * 512,
    "nfc": "caf\u00e9",
    "nfd": "cafe\u0301",
    "leading-slash": "/leading-slash",
    "only-dots": "..",
    "deep-escape": "../" * 12 + "tmp/" + ESCAPE_NAME,
    "backslash-escape": "..\\..\\..\\" + ESCAPE_NAME,
    "punctuation": "semi;colon,comma=eq&amp'quote\"star*[br]{ce}~tilde!bang$@",
}

assert len(ODD_KEYS["len-1024"].encode()) == 1024
assert len(ODD_KEYS["len-1024-multibyte"].encode()) == 1024


def utf8_sorted(keys):
    return sorted(keys, key=lambda k: k.encode())


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """This module's own embedded daemon, so its directory can be watched."""
    d = harness.Daemon(tmp_path_factory.mktemp("oddkeys"), backend="embedded")
    d.start()
    yield d
    was_alive = d.alive()
    rc = d.stop_all()
    if was_alive and rc != 0 and not harness.is_stand_in():
        pytest.fail(f"daemon exited {rc} after SIGTERM:\n{d.logs()}", pytrace=False)


def _outside_data_dir(d: harness.Daemon) -> set[str]:
    """Everything under the daemon's tmp dir and its parent, minus data_dir."""
    base = d.base
    found = {f"base/{p}" for p in harness.snapshot_tree(base, exclude=[d.data_dir])}
    found |= {f"parent/{p}" for p in os.listdir(base.parent)}
    # Other pytest sessions may add their own pytest-N directories up there.
    found |= {f"grandparent/{p}" for p in os.listdir(base.parent.parent)
              if not re.fullmatch(r"pytest-(\d+|current)", p)}
    return found


def _escape_targets() -> list[Path]:
    return [Path("/tmp") / ESCAPE_NAME, Path("/") / ESCAPE_NAME, Path.cwd() / ESCAPE_NAME]


@pytest.fixture(autouse=True)
def nothing_written_outside_data_dir(daemon):
    """After each test, no new file exists outside data_dir."""
    before = _outside_data_dir(daemon)
    yield
    after = _outside_data_dir(daemon)
    assert after - before == set(), f"new paths outside data_dir: {sorted(after - before)}"
    for target in _escape_targets():
        assert not target.exists(), f"a key escaped data_dir: {target}"


def _body_for(key: str) -> bytes:
    return b"content of " + key.encode() + b"\n"


@pytest.mark.parametrize("key", list(ODD_KEYS.values()), ids=list(ODD_KEYS))
def test_odd_key_round_trip(s3, key):
    """The key round-trips exactly: put, listed once in sorted order, get, copy to another bucket, delete."""
    src = harness.unique_name("odd")
    dst = harness.unique_name("odd")
    s3.create_bucket(Bucket=src)
    s3.create_bucket(Bucket=dst)
    try:
        neighbours = ["0-first", "zzz-last"]
        for n in neighbours:
            s3.put_object(Bucket=src, Key=n, Body=b"n")
        body = _body_for(key)
        put = s3.put_object(Bucket=src, Key=key, Body=body)
        assert put["ETag"] == f'"{harness.md5_hex(body)}"'

        listed = [o["Key"] for o in s3.list_objects_v2(Bucket=src).get("Contents", [])]
        assert listed == utf8_sorted(neighbours + [key])
        by_prefix = s3.list_objects_v2(Bucket=src, Prefix=key)["Contents"]
        assert by_prefix[0]["Key"] == key
        assert by_prefix[0]["Size"] == len(body)

        got = s3.get_object(Bucket=src, Key=key)
        assert got["Body"].read() == body
        assert s3.head_object(Bucket=src, Key=key)["ContentLength"] == len(body)

        s3.copy_object(Bucket=dst, Key=key, CopySource={"Bucket": src, "Key": key})
        assert s3.get_object(Bucket=dst, Key=key)["Body"].read() == body
        assert [o["Key"] for o in s3.list_objects_v2(Bucket=dst)["Contents"]] == [key]

        assert s3.delete_object(Bucket=src, Key=key)["ResponseMetadata"]["HTTPStatusCode"] == 204
        expect_error("NoSuchKey", 404, s3.get_object, Bucket=src, Key=key)
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket=src).get("Contents", [])]
        assert listed == neighbours
        # Deleting the source did not touch the copy.
        assert s3.get_object(Bucket=dst, Key=key)["Body"].read() == body
    finally:
        harness.empty_bucket(s3, src)
        harness.empty_bucket(s3, dst)


def test_all_odd_keys_coexist(s3, daemon):
    """All odd keys live side by side in one bucket ("a" next to "a/b", "café" NFC next to NFD): each lists once and reads its own bytes."""
    b = harness.unique_name("odd")
    s3.create_bucket(Bucket=b)
    try:
        keys = list(ODD_KEYS.values())
        for k in keys:
            s3.put_object(Bucket=b, Key=k, Body=_body_for(k))
        listed, token = [], None
        while True:
            kw = {"Bucket": b, "MaxKeys": 5}
            if token:
                kw["ContinuationToken"] = token
            page = s3.list_objects_v2(**kw)
            listed += [o["Key"] for o in page.get("Contents", [])]
            if not page["IsTruncated"]:
                break
            token = page["NextContinuationToken"]
        assert listed == utf8_sorted(keys)
        for k in keys:
            assert s3.get_object(Bucket=b, Key=k)["Body"].read() == _body_for(k), k
        # The daemon really keeps its data inside data_dir.
        assert any(daemon.data_dir.rglob("*")), "data_dir is empty although objects exist"
        s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": k} for k in keys]})
        assert "Contents" not in s3.list_objects_v2(Bucket=b)
    finally:
        harness.empty_bucket(s3, b)


@pytest.mark.parametrize("key", ["k" * 1025, "é" * 513], ids=["ascii-1025", "multibyte-1026"])
def test_key_longer_than_1024_bytes_is_refused(s3, bucket, key):
    """A key longer than 1024 UTF-8 bytes is refused with KeyTooLongError (400)."""
    expect_error("KeyTooLongError", 400, s3.put_object, Bucket=bucket, Key=key, Body=b"x")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
