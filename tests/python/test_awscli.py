"""The aws cli v1 (as installed from pip) against an embedded-backend daemon.

Each test uses its own bucket; every downloaded file is compared byte for
byte with what was uploaded.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import requests

import harness
from harness import MiB, pattern_bytes


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


@pytest.fixture
def cli_bucket(aws, s3):
    name = harness.unique_name("cli")
    out = aws("s3", "mb", f"s3://{name}").stdout
    assert out.strip() == f"make_bucket: {name}"
    yield name
    harness.empty_bucket(s3, name)


def test_mb_ls_rb(aws):
    """`aws s3 mb` creates a bucket that `aws s3 ls` lists; `aws s3 rb` removes it again."""
    name = harness.unique_name("cli")
    assert aws("s3", "mb", f"s3://{name}").stdout.strip() == f"make_bucket: {name}"
    listing = aws("s3", "ls").stdout
    assert re.search(rf"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d {re.escape(name)}$", listing, re.M), listing
    assert aws("s3", "rb", f"s3://{name}").stdout.strip() == f"remove_bucket: {name}"
    assert name not in aws("s3", "ls").stdout
    again = aws("s3", "rb", f"s3://{name}", check=False)
    assert again.returncode != 0
    assert "NoSuchBucket" in again.stderr


def test_cp_small_file_round_trip(aws, cli_bucket, tmp_path):
    """`aws s3 cp` uploads a small file and downloads identical bytes; `ls` shows its size."""
    data = b"hello pixelport\n" + bytes(range(256))
    _write(tmp_path / "small.txt", data)
    out = aws("s3", "cp", "small.txt", f"s3://{cli_bucket}/docs/small.txt", cwd=tmp_path).stdout
    assert _lines(out, "upload:") == [f"upload: ./small.txt to s3://{cli_bucket}/docs/small.txt"]
    listing = aws("s3", "ls", f"s3://{cli_bucket}/docs/").stdout
    assert re.search(rf"\s{len(data)} small\.txt$", listing, re.M), listing
    out = aws("s3", "cp", f"s3://{cli_bucket}/docs/small.txt", "back.txt", cwd=tmp_path).stdout
    assert _lines(out, "download:") == [f"download: s3://{cli_bucket}/docs/small.txt to ./back.txt"]
    assert (tmp_path / "back.txt").read_bytes() == data


def test_cp_with_content_type_and_metadata(aws, s3, cli_bucket, tmp_path):
    """`aws s3 cp --content-type --metadata --cache-control` stores those headers on the object."""
    src = _write(tmp_path / "pic.bin", b"\x89PNG fake")
    aws("s3", "cp", src, f"s3://{cli_bucket}/pic.png", "--content-type", "image/png",
        "--metadata", "owner=alice,purpose=test", "--cache-control", "max-age=600")
    head = json.loads(aws("s3api", "head-object", "--bucket", cli_bucket, "--key", "pic.png").stdout)
    assert head["ContentType"] == "image/png"
    assert head["Metadata"] == {"owner": "alice", "purpose": "test"}
    assert head["CacheControl"] == "max-age=600"


def test_cp_40mib_multipart_and_copy(aws, cli_bucket, tmp_path):
    """A 40 MiB `aws s3 cp` goes multipart (8 MiB parts, ETag "-5"), downloads identical, and an S3-to-S3 cp of it is identical too."""
    data = pattern_bytes(40 * MiB, seed=100)
    src = _write(tmp_path / "big.bin", data)
    aws("s3", "cp", src, f"s3://{cli_bucket}/big.bin")
    head = json.loads(aws("s3api", "head-object", "--bucket", cli_bucket, "--key", "big.bin").stdout)
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == harness.multipart_etag(
        [data[i:i + 8 * MiB] for i in range(0, len(data), 8 * MiB)])
    dst = tmp_path / "big.back"
    aws("s3", "cp", f"s3://{cli_bucket}/big.bin", dst)
    assert dst.read_bytes() == data
    # Server-side copy of a >8 MiB object uses UploadPartCopy in the cli.
    aws("s3", "cp", f"s3://{cli_bucket}/big.bin", f"s3://{cli_bucket}/copy/big.bin")
    dst2 = tmp_path / "big.copy"
    aws("s3", "cp", f"s3://{cli_bucket}/copy/big.bin", dst2)
    assert dst2.read_bytes() == data


def test_sync_twice_copies_nothing_the_second_time(aws, cli_bucket, tmp_path):
    """`aws s3 sync` uploads a tree; repeated, it copies nothing; after a change it uploads just that file; syncing down mirrors the tree."""
    tree = {
        "a.txt": b"alpha",
        "with space.txt": b"spaced out",
        "sub/b.bin": pattern_bytes(100_000, seed=101),
        "sub/deeper/c.json": b'{"c": 3}',
        "unicodé/ü.txt": "ü".encode(),
    }
    local = tmp_path / "local"
    for rel, data in tree.items():
        _write(local / rel, data)
    old = time.time() - 3600   # files older than the objects: sync must not re-upload
    for rel in tree:
        os.utime(local / rel, (old, old))
    dest = f"s3://{cli_bucket}/site"
    first = aws("s3", "sync", "local", dest, cwd=tmp_path).stdout
    uploaded = sorted(_lines(first, "upload:"))
    assert len(uploaded) == len(tree), first
    for rel in tree:
        assert any(line.endswith(f"to {dest}/{rel}") for line in uploaded), (rel, first)

    second = aws("s3", "sync", "local", dest, cwd=tmp_path).stdout
    assert second.strip() == "", f"second sync should copy nothing, printed:\n{second}"

    (local / "sub/b.bin").write_bytes(b"changed and shorter")
    third = aws("s3", "sync", "local", dest, cwd=tmp_path).stdout
    assert _lines(third, "upload:") == [f"upload: local/sub/b.bin to {dest}/sub/b.bin"], third

    down = tmp_path / "down"
    out = aws("s3", "sync", dest, down).stdout
    assert len(_lines(out, "download:")) == len(tree), out
    expected = dict(tree, **{"sub/b.bin": b"changed and shorter"})
    for rel, data in expected.items():
        assert (down / rel).read_bytes() == data, rel
    again = aws("s3", "sync", dest, down).stdout
    assert again.strip() == "", f"second download sync should copy nothing, printed:\n{again}"

    (local / "a.txt").unlink()
    deleted = aws("s3", "sync", "local", dest, "--delete", cwd=tmp_path).stdout
    assert _lines(deleted, "delete:") == [f"delete: {dest}/a.txt"], deleted
    listing = aws("s3", "ls", f"{dest}/", "--recursive").stdout
    assert "site/a.txt" not in listing and "site/sub/b.bin" in listing


def test_s3api_get_object_range(aws, cli_bucket, tmp_path):
    """`aws s3api get-object --range` writes exactly the requested bytes and reports the Content-Range."""
    data = pattern_bytes(5000, seed=102)
    aws("s3", "cp", _write(tmp_path / "r.bin", data), f"s3://{cli_bucket}/r.bin")
    out_file = tmp_path / "range.out"
    meta = json.loads(aws("s3api", "get-object", "--bucket", cli_bucket, "--key", "r.bin",
                          "--range", "bytes=100-1099", out_file).stdout)
    assert meta["ContentRange"] == "bytes 100-1099/5000"
    assert meta["ContentLength"] == 1000
    assert out_file.read_bytes() == data[100:1100]
    meta = json.loads(aws("s3api", "get-object", "--bucket", cli_bucket, "--key", "r.bin",
                          "--range", "bytes=-7", out_file).stdout)
    assert out_file.read_bytes() == data[-7:]
    assert meta["ContentRange"] == "bytes 4993-4999/5000"


def test_presign_url_works_with_plain_http(aws, server, cli_bucket, tmp_path):
    """`aws s3 presign` prints a URL on the daemon that a plain HTTP client can download; a tampered one is refused."""
    data = pattern_bytes(12_345, seed=103)
    aws("s3", "cp", _write(tmp_path / "p.bin", data), f"s3://{cli_bucket}/shared/p.bin")
    url = aws("s3", "presign", f"s3://{cli_bucket}/shared/p.bin", "--expires-in", "300").stdout.strip()
    assert url.startswith(f"{server.endpoint}/{cli_bucket}/shared/p.bin?"), url
    r = requests.get(url, timeout=30)
    assert r.status_code == 200, r.text
    assert r.content == data
    tampered = url.replace("/shared/p.bin?", "/shared/other.bin?")
    r = requests.get(tampered, timeout=30)
    assert r.status_code == 403


def test_rm_recursive_and_rb(aws, s3, tmp_path):
    """`aws s3 rm --recursive` deletes every object under a prefix and nothing else; `rb` refuses a non-empty bucket and removes an emptied one."""
    name = harness.unique_name("cli")
    aws("s3", "mb", f"s3://{name}")
    try:
        for rel in ("dir/1.txt", "dir/2.txt", "dir/sub/3.txt", "keep.txt"):
            aws("s3", "cp", _write(tmp_path / rel, rel.encode()), f"s3://{name}/{rel}")
        top = aws("s3", "ls", f"s3://{name}/").stdout
        assert re.search(r"^\s+PRE dir/$", top, re.M), top
        assert re.search(r"\skeep\.txt$", top, re.M), top

        out = aws("s3", "rm", f"s3://{name}/dir/", "--recursive").stdout
        assert sorted(_lines(out, "delete:")) == sorted(
            f"delete: s3://{name}/{rel}" for rel in ("dir/1.txt", "dir/2.txt", "dir/sub/3.txt"))
        remaining = aws("s3", "ls", f"s3://{name}", "--recursive").stdout
        assert [line.split()[-1] for line in remaining.splitlines()] == ["keep.txt"]

        refused = aws("s3", "rb", f"s3://{name}", check=False)
        assert refused.returncode != 0
        assert "BucketNotEmpty" in refused.stderr
        dst = tmp_path / "keep.back"
        aws("s3", "cp", f"s3://{name}/keep.txt", dst)
        assert dst.read_bytes() == b"keep.txt"

        aws("s3", "rm", f"s3://{name}", "--recursive")
        assert aws("s3", "rb", f"s3://{name}").stdout.strip() == f"remove_bucket: {name}"
        assert name not in aws("s3", "ls").stdout
    finally:
        harness.empty_bucket(s3, name)
