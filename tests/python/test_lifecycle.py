"""Bucket lifecycle rules (#14 part 3): expiration by days or date, filtered by prefix, tags
and size, and AbortIncompleteMultipartUpload, applied by a background task.

Before this, PutBucketLifecycleConfiguration answered NotImplemented, so nothing could clean
up temporary uploads or abandoned multipart uploads per bucket. The daemon runs with a
lifecycle "day" of one second (`[s3] lifecycle_day`), never by waiting real days.
"""

from __future__ import annotations

import json
import time

import pytest
from botocore.exceptions import ClientError

import harness

pytestmark = pytest.mark.pixelport_only

code = harness.client_error
FAST = 'lifecycle_interval = "1s"\nlifecycle_day = "1s"\nlifecycle_max_objects = 3\n'


def keys(c, bucket: str) -> set[str]:
    return {o["Key"] for o in c.list_objects_v2(Bucket=bucket).get("Contents", [])}


def wait_for(pred, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.25)
    return pred()


@pytest.fixture(scope="module", params=["embedded", "remote"])
def d(request, tmp_path_factory):
    d = harness.Daemon(tmp_path_factory.mktemp(f"lc-{request.param}"), backend=request.param,
                       s3_config=FAST).start()
    yield d
    d.stop_all()


def test_expiration_by_prefix_size_and_tags(d, tmp_path):
    c = d.client()
    b = harness.unique_name("lc")
    c.create_bucket(Bucket=b)
    # Put through the aws cli's own command, in its documented JSON shape.
    rules = {"Rules": [
        {"ID": "tmp", "Status": "Enabled", "Filter": {"Prefix": "tmp/"},
         "Expiration": {"Days": 3}},
        {"ID": "big-logs", "Status": "Enabled",
         "Filter": {"And": {"Prefix": "logs/", "ObjectSizeGreaterThan": 100}},
         "Expiration": {"Days": 3}},
        {"ID": "off", "Status": "Disabled", "Filter": {"Prefix": "keep/"},
         "Expiration": {"Days": 1}},
    ]}
    scratch = {"ID": "scratch", "Status": "Enabled",
               "Filter": {"Tag": {"Key": "class", "Value": "scratch"}}, "Expiration": {"Days": 3}}
    if d.backend == "embedded":
        rules["Rules"].append(scratch)
    else:
        # The remote store keeps no object tags: a tag filter would never match, so it is
        # refused rather than kept as a rule that does nothing.
        with pytest.raises(ClientError) as e:
            c.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={
                "Rules": [scratch]})
        assert code(e.value) == ("NotImplemented", 501)
        assert "tags" in e.value.response["Error"]["Message"]
    f = tmp_path / "lc.json"
    f.write_text(json.dumps(rules))
    harness.AwsCli(d.endpoint)("s3api", "put-bucket-lifecycle-configuration", "--bucket", b,
                               "--lifecycle-configuration", f"file://{f}")
    got = c.get_bucket_lifecycle_configuration(Bucket=b)["Rules"]
    assert [r["ID"] for r in got] == [r["ID"] for r in rules["Rules"]]
    assert got[1]["Filter"]["And"] == {"Prefix": "logs/", "ObjectSizeGreaterThan": 100}

    for k, body in (("tmp/a", b"a"), ("tmp/b", b"b"), ("tmp/c", b"c"), ("tmp/d", b"d"),
                    ("logs/small", b"s"), ("logs/big", b"x" * 200), ("keep/x", b"k"),
                    ("other", b"o")):
        c.put_object(Bucket=b, Key=k, Body=body)
    if d.backend == "embedded":
        c.put_object(Bucket=b, Key="scratch-1", Body=b"s", Tagging="class=scratch")
        c.put_object(Bucket=b, Key="tagged-keep", Body=b"s", Tagging="class=keep")
    # Nothing is due before its three "days".
    time.sleep(1.2)
    assert {"tmp/a", "logs/big"} <= keys(c, b)
    gone = {"tmp/a", "tmp/b", "tmp/c", "tmp/d", "logs/big"}
    if d.backend == "embedded":
        gone.add("scratch-1")
    # Three objects per pass: the passes go on where the last one stopped.
    assert wait_for(lambda: not (keys(c, b) & gone)), keys(c, b)
    left = keys(c, b)
    assert {"logs/small", "keep/x", "other"} <= left
    if d.backend == "embedded":
        assert "tagged-keep" in left

    c.delete_bucket_lifecycle(Bucket=b)
    with pytest.raises(ClientError) as e:
        c.get_bucket_lifecycle_configuration(Bucket=b)
    assert code(e.value) == ("NoSuchLifecycleConfiguration", 404)


def test_a_past_date_expires_at_once_and_uploads_are_aborted(d):
    c = d.client()
    b = harness.unique_name("lcd")
    c.create_bucket(Bucket=b)
    up = c.create_multipart_upload(Bucket=b, Key="parts/big.bin")["UploadId"]
    c.upload_part(Bucket=b, Key="parts/big.bin", UploadId=up, PartNumber=1, Body=b"p")
    c.put_object(Bucket=b, Key="old/x", Body=b"x")
    c.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": [
        {"ID": "old", "Status": "Enabled", "Prefix": "old/",
         "Expiration": {"Date": "2020-01-01T00:00:00Z"}},
        {"ID": "mpu", "Status": "Enabled", "Filter": {"Prefix": "parts/"},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2}},
    ]})
    assert c.get_bucket_lifecycle_configuration(Bucket=b)["Rules"][0]["Prefix"] == "old/"
    assert wait_for(lambda: "old/x" not in keys(c, b))
    assert wait_for(lambda: not c.list_multipart_uploads(Bucket=b).get("Uploads"))
    with pytest.raises(ClientError) as e:
        c.list_parts(Bucket=b, Key="parts/big.bin", UploadId=up)
    assert code(e.value) == ("NoSuchUpload", 404)


@pytest.mark.parametrize("rule,want", [
    ({"ID": "z", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 0}},
     ("InvalidArgument", 400)),
    ({"ID": "t", "Status": "Enabled", "Filter": {"Prefix": ""},
      "Transitions": [{"Days": 30, "StorageClass": "GLACIER"}]}, ("NotImplemented", 501)),
    ({"ID": "n", "Status": "Enabled", "Filter": {"Prefix": ""}}, ("InvalidArgument", 400)),
    ({"ID": "m", "Status": "Enabled", "Filter": {"Tag": {"Key": "a", "Value": "b"}},
      "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}, ("InvalidArgument", 400)),
    ({"ID": "e", "Status": "Enabled", "Filter": {"Prefix": ""},
      "Expiration": {"Days": 1, "ExpiredObjectDeleteMarker": True}}, ("InvalidArgument", 400)),
    ({"ID": "k", "Status": "Enabled", "Filter": {"Prefix": ""},
      "NoncurrentVersionExpiration": {"NoncurrentDays": 1, "NewerNoncurrentVersions": 101}},
     ("InvalidArgument", 400)),
])
def test_bad_rules_are_refused(d, rule, want):
    c = d.client()
    b = harness.unique_name("lcb")
    c.create_bucket(Bucket=b)
    with pytest.raises(ClientError) as e:
        c.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": [rule]})
    assert code(e.value) == want, e.value.response["Error"]
    with pytest.raises(ClientError) as e:
        c.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": [
            {"ID": "a", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}},
            {"ID": "a", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 2}},
        ]})
    assert code(e.value) == ("InvalidArgument", 400)
    with pytest.raises(ClientError) as e:
        c.get_bucket_lifecycle_configuration(Bucket="no-such-lc-bucket")
    assert code(e.value) == ("NoSuchBucket", 404)


def test_noncurrent_versions_and_lone_delete_markers_expire(d):
    """Before versioning, NoncurrentVersionExpiration was accepted and did nothing, and
    ExpiredObjectDeleteMarker and NewerNoncurrentVersions were refused."""
    if d.backend == "remote":
        pytest.skip("the remote store does not keep versions (test_versioning.py)")
    c = d.client()
    b = harness.unique_name("lcv")
    c.create_bucket(Bucket=b)
    c.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    n = [c.put_object(Bucket=b, Key="n/k", Body=f"n{i}".encode())["VersionId"] for i in range(4)]
    c.put_object(Bucket=b, Key="m/k", Body=b"m")
    c.delete_object(Bucket=b, Key="m/k")
    other = [c.put_object(Bucket=b, Key="other/k", Body=b"o")["VersionId"] for _ in range(2)]
    c.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": [
        {"ID": "nc", "Status": "Enabled", "Filter": {"Prefix": "n/"},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 2, "NewerNoncurrentVersions": 1}},
        {"ID": "markers", "Status": "Enabled", "Filter": {"Prefix": "m/"},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 2},
         "Expiration": {"ExpiredObjectDeleteMarker": True}},
    ]})
    got = {r["ID"]: r for r in c.get_bucket_lifecycle_configuration(Bucket=b)["Rules"]}
    assert got["nc"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 2,
                                                        "NewerNoncurrentVersions": 1}
    assert got["markers"]["Expiration"] == {"ExpiredObjectDeleteMarker": True}

    def ids(prefix):
        r = c.list_object_versions(Bucket=b, Prefix=prefix)
        return sorted(v["VersionId"] for v in r.get("Versions", []) + r.get("DeleteMarkers", []))

    # n/k keeps its current version and one noncurrent one; m/k's old version expires, then
    # its delete marker is all that is left and goes too. other/k has no rule.
    assert wait_for(lambda: ids("n/") == sorted(n[2:]) and ids("m/") == [], timeout=30), (
        ids("n/"), ids("m/"))
    assert ids("other/") == sorted(other)
    assert c.get_object(Bucket=b, Key="n/k")["Body"].read() == b"n3"
