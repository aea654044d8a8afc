"""Nothing lost when the disk misbehaves (issue "Safe to put on the internet", section 7),
against the real daemon.
"""

from __future__ import annotations

import hashlib
import subprocess

import harness


def test_a_missing_catalog_stops_the_start_instead_of_deleting_every_blob(make_daemon):
    # Bug guarded: a missing `catalog.redb` made the start-up sweep delete every blob,
    # logged only as a warning.
    d = make_daemon()
    s3 = d.client()
    s3.create_bucket(Bucket="keep")
    data = harness.pattern_bytes(3 << 20, seed=7)
    s3.put_object(Bucket="keep", Key="big.bin", Body=data)
    assert d.stop() == 0
    catalog = d.data_dir / "catalog.redb"
    moved = d.data_dir / "catalog.redb.away"
    catalog.rename(moved)
    blobs = sorted(p for p in (d.data_dir / "blobs").rglob("*") if p.is_file())
    assert blobs, "the object should live in a blob"
    digest = {p: hashlib.md5(p.read_bytes()).hexdigest() for p in blobs}

    cp = subprocess.run([str(harness.pixelport_bin()), "serve", "--config", str(d.config_path)],
                        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert cp.returncode != 0, cp.stderr[-2000:]
    assert "refusing to start" in cp.stderr and "Restore catalog.redb" in cp.stderr, cp.stderr[-2000:]
    # Every blob is still there, unchanged, and nothing else was decided for the user.
    assert {p: hashlib.md5(p.read_bytes()).hexdigest() for p in blobs} == digest
    assert not catalog.exists()

    moved.rename(catalog)
    d.start()
    assert d.client().get_object(Bucket="keep", Key="big.bin")["Body"].read() == data
