"""S3 versioning (#14 part 4): PutBucketVersioning / GetBucketVersioning, version ids on PUT,
copy and complete, GET / HEAD / DELETE / copy by versionId, delete markers,
ListObjectVersions, suspended-mode `null` versions, and a catalog written before versioning.

Before this, PutBucketVersioning answered NotImplemented and every object had one version:
`aws s3api put-bucket-versioning` failed, an overwrite destroyed the old bytes, and
ListObjectVersions listed current objects only. The remote store refuses versioning with
NotImplemented and a reason (the cluster's own versions are not read or written yet).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError
from PIL import Image

import harness

pytestmark = pytest.mark.pixelport_only

code = harness.client_error
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
IMAGES = harness.REPO_ROOT.parent / "shared" / "images"
BIG = 300 * 1024  # above the catalog's 64 KiB inline limit: the bytes live in a blob


def body(c, bucket, key, **kw) -> bytes:
    return c.get_object(Bucket=bucket, Key=key, **kw)["Body"].read()


def versions(c, bucket, **kw) -> list[tuple[str, str, bool, bool]]:
    """(key, version id, is latest, is a delete marker), in the order S3 lists them per key."""
    r = c.list_object_versions(Bucket=bucket, **kw)
    out = [(v["Key"], v["VersionId"], v["IsLatest"], False) for v in r.get("Versions", [])]
    out += [(m["Key"], m["VersionId"], m["IsLatest"], True) for m in r.get("DeleteMarkers", [])]
    # boto3 hands versions and markers over as two lists; S3's order is by key, then newest
    # first, and version ids here sort newest first as strings ("null" is placed by time,
    # so tests that mix it in check its position through IsLatest instead).
    return sorted(out, key=lambda t: (t[0], t[1]))


def versioned_bucket(c, prefix="ver") -> str:
    bucket = harness.unique_name(prefix)
    c.create_bucket(Bucket=bucket)
    c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


def test_versioning_state_and_its_errors(backend_daemon):
    c = backend_daemon.client()
    bucket = harness.unique_name("vstate")
    c.create_bucket(Bucket=bucket)
    assert "Status" not in c.get_bucket_versioning(Bucket=bucket)
    if backend_daemon.backend == "remote":
        with pytest.raises(ClientError) as e:
            c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        assert code(e.value) == ("NotImplemented", 501)
        assert "remote store" in e.value.response["Error"]["Message"]
        # Unversioned objects still answer to their `null` version.
        c.put_object(Bucket=bucket, Key="k", Body=b"one")
        assert body(c, bucket, "k", VersionId="null") == b"one"
        return
    for status in ("Enabled", "Suspended", "Enabled"):
        c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": status})
        assert c.get_bucket_versioning(Bucket=bucket)["Status"] == status
    cases = [
        (lambda: c.put_bucket_versioning(Bucket=bucket,
                                         VersioningConfiguration={"Status": "Disabled"}),
         ("MalformedXML", 400)),
        (lambda: c.put_bucket_versioning(Bucket=bucket, MFA="123456 654321",
                                         VersioningConfiguration={"Status": "Enabled",
                                                                  "MFADelete": "Enabled"}),
         ("NotImplemented", 501)),
        (lambda: c.put_bucket_versioning(Bucket="no-such-bucket-here",
                                         VersioningConfiguration={"Status": "Enabled"}),
         ("NoSuchBucket", 404)),
        (lambda: c.get_bucket_versioning(Bucket="no-such-bucket-here"), ("NoSuchBucket", 404)),
    ]
    for call, want in cases:
        with pytest.raises(ClientError) as e:
            call()
        assert code(e.value) == want, (want, e.value.response["Error"])
    assert c.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"


@pytest.mark.parametrize("size", [5, BIG], ids=["inline", "blob"])
def test_overwrites_keep_every_version_and_delete_markers_hide_the_key(daemon, size):
    c = daemon.client()
    bucket = harness.unique_name("vput")
    c.create_bucket(Bucket=bucket)
    payload = [bytes([65 + i]) * size for i in range(3)]
    # Written before versioning: it becomes the `null` version.
    assert "VersionId" not in c.put_object(Bucket=bucket, Key="k", Body=payload[0])
    c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = c.put_object(Bucket=bucket, Key="k", Body=payload[1])["VersionId"]
    v2 = c.put_object(Bucket=bucket, Key="k", Body=payload[2])["VersionId"]
    assert re.fullmatch(r"[0-9a-f]{32}", v1) and v1 != v2
    assert body(c, bucket, "k") == payload[2]
    assert c.get_object(Bucket=bucket, Key="k")["VersionId"] == v2
    for vid, want in ((v1, payload[1]), ("null", payload[0]), (v2, payload[2])):
        assert body(c, bucket, "k", VersionId=vid) == want
        h = c.head_object(Bucket=bucket, Key="k", VersionId=vid)
        assert h["ContentLength"] == size
        assert h["ETag"] == '"%s"' % hashlib.md5(want).hexdigest()
    # A ranged GET of an old version.
    r = c.get_object(Bucket=bucket, Key="k", VersionId=v1, Range="bytes=1-3")
    assert r["Body"].read() == payload[1][1:4]
    listed = c.list_object_versions(Bucket=bucket)
    assert [(v["VersionId"], v["IsLatest"]) for v in listed["Versions"]] == [
        (v2, True), (v1, False), ("null", False)]
    assert [v["Size"] for v in listed["Versions"]] == [size] * 3

    # DELETE without a version id: a delete marker becomes current.
    d = c.delete_object(Bucket=bucket, Key="k")
    assert d["DeleteMarker"] is True
    marker = d["VersionId"]
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=bucket, Key="k")
    assert code(e.value) == ("NoSuchKey", 404)
    # As S3: the 404 says a delete marker is current, and which.
    headers = e.value.response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amz-delete-marker"] == "true" and headers["x-amz-version-id"] == marker
    with pytest.raises(ClientError) as e:
        c.head_object(Bucket=bucket, Key="k")
    assert e.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-version-id"] == marker
    assert c.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert versions(c, bucket) == sorted([
        ("k", marker, True, True), ("k", v2, False, False), ("k", v1, False, False),
        ("k", "null", False, False)], key=lambda t: (t[0], t[1]))
    # A delete marker cannot be read: 405 with x-amz-delete-marker.
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=bucket, Key="k", VersionId=marker)
    assert code(e.value) == ("MethodNotAllowed", 405)
    assert e.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "true"

    # Deleting the marker brings the key back; deleting the current version promotes the
    # one before it.
    d = c.delete_object(Bucket=bucket, Key="k", VersionId=marker)
    assert d["DeleteMarker"] is True and d["VersionId"] == marker
    assert body(c, bucket, "k") == payload[2]
    d = c.delete_object(Bucket=bucket, Key="k", VersionId=v2)
    assert d["VersionId"] == v2 and "DeleteMarker" not in d
    assert body(c, bucket, "k") == payload[1]
    assert c.head_object(Bucket=bucket, Key="k")["VersionId"] == v1
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=bucket, Key="k", VersionId=v2)
    assert code(e.value) == ("NoSuchVersion", 404)
    # Deleting a version that does not exist (well-formed id) succeeds and changes nothing.
    c.delete_object(Bucket=bucket, Key="k", VersionId=v2)
    assert [t[1] for t in versions(c, bucket)] == sorted([v1, "null"])


def test_copy_and_multipart_make_versions_and_copy_restores_an_old_one(daemon):
    c = daemon.client()
    bucket = versioned_bucket(c, "vcopy")
    v1 = c.put_object(Bucket=bucket, Key="doc", Body=b"first draft",
                      Metadata={"rev": "1"})["VersionId"]
    v2 = c.put_object(Bucket=bucket, Key="doc", Body=b"second draft")["VersionId"]
    # Copying a named version back over its own key restores it as a new version.
    r = c.copy_object(Bucket=bucket, Key="doc", CopySource={"Bucket": bucket, "Key": "doc",
                                                            "VersionId": v1})
    v3 = r["VersionId"]
    assert r["CopySourceVersionId"] == v1
    assert v3 not in (v1, v2)
    assert body(c, bucket, "doc") == b"first draft"
    assert c.head_object(Bucket=bucket, Key="doc")["Metadata"] == {"rev": "1"}
    assert body(c, bucket, "doc", VersionId=v2) == b"second draft"
    # A copy onto its own key with new metadata makes a new version, keeping the old one.
    v4 = c.copy_object(Bucket=bucket, Key="doc", CopySource={"Bucket": bucket, "Key": "doc"},
                       MetadataDirective="REPLACE", Metadata={"rev": "4"})["VersionId"]
    assert c.head_object(Bucket=bucket, Key="doc", VersionId=v4)["Metadata"] == {"rev": "4"}
    assert c.head_object(Bucket=bucket, Key="doc", VersionId=v3)["Metadata"] == {"rev": "1"}
    # Without a change it is still refused, as in S3.
    with pytest.raises(ClientError) as e:
        c.copy_object(Bucket=bucket, Key="doc", CopySource={"Bucket": bucket, "Key": "doc"})
    assert code(e.value) == ("InvalidRequest", 400)
    # A copy to another key, from an old version.
    r = c.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "doc",
                                                             "VersionId": v2})
    assert body(c, bucket, "copy") == b"second draft"
    # CompleteMultipartUpload answers the new version's id; UploadPartCopy reads a version.
    up = c.create_multipart_upload(Bucket=bucket, Key="doc")["UploadId"]
    etag = c.upload_part_copy(Bucket=bucket, Key="doc", UploadId=up, PartNumber=1,
                              CopySource={"Bucket": bucket, "Key": "doc",
                                          "VersionId": v2})["CopyPartResult"]["ETag"]
    done = c.complete_multipart_upload(Bucket=bucket, Key="doc", UploadId=up,
                                       MultipartUpload={"Parts": [
                                           {"PartNumber": 1, "ETag": etag}]})
    assert re.fullmatch(r"[0-9a-f]{32}", done["VersionId"])
    assert body(c, bucket, "doc") == b"second draft"
    assert len([t for t in versions(c, bucket) if t[0] == "doc"]) == 5


def test_version_ids_are_checked(daemon):
    c = daemon.client()
    bucket = versioned_bucket(c, "vbad")
    c.put_object(Bucket=bucket, Key="k", Body=b"x")
    missing = "fffe6a3f2b1c0d9e0123456789abcdef"
    cases = [
        (lambda: c.get_object(Bucket=bucket, Key="k", VersionId="not-a-version"),
         ("InvalidArgument", 400)),
        (lambda: c.delete_object(Bucket=bucket, Key="k", VersionId="not-a-version"),
         ("InvalidArgument", 400)),
        (lambda: c.copy_object(Bucket=bucket, Key="c",
                               CopySource={"Bucket": bucket, "Key": "k", "VersionId": "x"}),
         ("InvalidArgument", 400)),
        (lambda: c.get_object(Bucket=bucket, Key="k", VersionId=missing), ("NoSuchVersion", 404)),
        (lambda: c.get_object(Bucket=bucket, Key="k", VersionId="null"), ("NoSuchVersion", 404)),
        (lambda: c.get_object_tagging(Bucket=bucket, Key="k", VersionId=missing),
         ("NoSuchVersion", 404)),
        (lambda: c.list_object_versions(Bucket=bucket, VersionIdMarker=missing),
         ("InvalidArgument", 400)),
    ]
    for call, want in cases:
        with pytest.raises(ClientError) as e:
            call()
        assert code(e.value) == want, (want, e.value.response["Error"])


def test_tags_and_acls_of_one_version(daemon):
    c = daemon.client()
    bucket = versioned_bucket(c, "vtag")
    v1 = c.put_object(Bucket=bucket, Key="k", Body=b"1", Tagging="gen=1")["VersionId"]
    v2 = c.put_object(Bucket=bucket, Key="k", Body=b"2", Tagging="gen=2")["VersionId"]
    r = c.put_object_tagging(Bucket=bucket, Key="k", VersionId=v1,
                             Tagging={"TagSet": [{"Key": "gen", "Value": "old"}]})
    assert r["VersionId"] == v1
    tags = lambda vid=None: {t["Key"]: t["Value"] for t in c.get_object_tagging(  # noqa: E731
        Bucket=bucket, Key="k", **({"VersionId": vid} if vid else {}))["TagSet"]}
    assert tags(v1) == {"gen": "old"}
    assert tags() == tags(v2) == {"gen": "2"}
    c.delete_object_tagging(Bucket=bucket, Key="k", VersionId=v1)
    assert tags(v1) == {} and tags() == {"gen": "2"}
    # An object ACL on one version does not make the others public.
    c.put_object_acl(Bucket=bucket, Key="k", VersionId=v1, ACL="public-read")
    grants = lambda vid: c.get_object_acl(Bucket=bucket, Key="k", VersionId=vid)["Grants"]  # noqa: E731
    assert any(g["Grantee"].get("URI", "").endswith("AllUsers") for g in grants(v1))
    assert not any(g["Grantee"].get("URI", "").endswith("AllUsers") for g in grants(v2))
    attrs = c.get_object_attributes(Bucket=bucket, Key="k", VersionId=v1,
                                    ObjectAttributes=["ObjectSize"])
    assert attrs["ObjectSize"] == 1 and attrs["VersionId"] == v1


def test_anonymous_reads_of_versions_need_get_object_version(daemon):
    """A public-read ACL on the current version must not expose older, private versions
    to anonymous `?versionId=` reads; a bucket policy granting s3:GetObject does not cover
    them either (AWS needs s3:GetObjectVersion)."""
    c = daemon.client()
    bucket = versioned_bucket(c, "vanon")
    old = c.put_object(Bucket=bucket, Key="k", Body=b"private draft")["VersionId"]
    new = c.put_object(Bucket=bucket, Key="k", Body=b"public", ACL="public-read")["VersionId"]
    url = f"{daemon.endpoint}/{bucket}/k"
    assert requests.get(url, timeout=10).content == b"public"
    assert requests.get(url, params={"versionId": new}, timeout=10).content == b"public"
    assert requests.get(url, params={"versionId": old}, timeout=10).status_code == 403
    c.put_object_acl(Bucket=bucket, Key="k", ACL="private")
    c.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                       "Resource": f"arn:aws:s3:::{bucket}/*"}]}))
    assert requests.get(url, timeout=10).content == b"public"
    assert requests.get(url, params={"versionId": old}, timeout=10).status_code == 403
    c.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": "*",
                       "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectTagging"],
                       "Resource": f"arn:aws:s3:::{bucket}/*"}]}))
    assert requests.get(url, params={"versionId": old}, timeout=10).content == b"private draft"
    # A version's tags need s3:GetObjectVersionTagging too, as in AWS.
    assert requests.get(url, params={"tagging": ""}, timeout=10).status_code == 200
    tags_of_old = {"tagging": "", "versionId": old}
    assert requests.get(url, params=tags_of_old, timeout=10).status_code == 403


def test_suspended_writes_replace_only_the_null_version(daemon):
    c = daemon.client()
    bucket = versioned_bucket(c, "vsusp")
    v1 = c.put_object(Bucket=bucket, Key="k", Body=b"enabled-1")["VersionId"]
    c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    c.put_object(Bucket=bucket, Key="k", Body=b"null-1")
    c.put_object(Bucket=bucket, Key="k", Body=b"null-2")
    assert body(c, bucket, "k") == b"null-2"
    assert c.head_object(Bucket=bucket, Key="k").get("VersionId") in (None, "null")
    listed = versions(c, bucket)
    assert [(t[1], t[2]) for t in listed] == sorted([(v1, False), ("null", True)])
    assert body(c, bucket, "k", VersionId=v1) == b"enabled-1"
    # A delete while suspended makes a `null` delete marker, replacing the null version.
    d = c.delete_object(Bucket=bucket, Key="k")
    assert d["DeleteMarker"] is True and d["VersionId"] == "null"
    assert versions(c, bucket) == sorted([("k", v1, False, False), ("k", "null", True, True)])
    # Enabled again: new versions get ids; the null marker stays as history.
    c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v3 = c.put_object(Bucket=bucket, Key="k", Body=b"enabled-2")["VersionId"]
    assert len(versions(c, bucket)) == 3
    assert body(c, bucket, "k", VersionId=v3) == b"enabled-2"


def test_list_object_versions_pages_and_folds(daemon):
    c = daemon.client()
    bucket = versioned_bucket(c, "vlist")
    made = []
    for key in ("a/1", "a/2", "b", "c/x/y", "d"):
        for i in range(3):
            made.append((key, c.put_object(Bucket=bucket, Key=key, Body=f"{key}{i}".encode())
                         ["VersionId"]))
    made.append(("b", c.delete_object(Bucket=bucket, Key="b")["VersionId"]))
    full = c.list_object_versions(Bucket=bucket)
    assert not full["IsTruncated"]
    every = sorted(made)
    assert sorted((v["Key"], v["VersionId"]) for v in
                  full["Versions"] + full["DeleteMarkers"]) == every
    # Two at a time with the markers S3 hands back: the same entries, each once, in order.
    seen, only_versions, kw, pages = [], [], {}, 0
    while True:
        r = c.list_object_versions(Bucket=bucket, MaxKeys=2, **kw)
        entries = r.get("Versions", []) + r.get("DeleteMarkers", [])
        assert len(entries) <= 2
        seen += [(v["Key"], v["VersionId"]) for v in entries]
        only_versions += [(v["Key"], v["VersionId"]) for v in r.get("Versions", [])]
        pages += 1
        if not r["IsTruncated"]:
            break
        kw = {"KeyMarker": r["NextKeyMarker"], "VersionIdMarker": r["NextVersionIdMarker"]}
    assert sorted(seen) == every and len(seen) == len(every) and pages == 8
    # Keys in order, the newest version first within a key (boto3 hands delete markers over
    # in a list of their own, so they are left out of this order check).
    assert [k for k, _ in only_versions] == sorted(k for k, _ in only_versions)
    for key in ("a/1", "b", "d"):
        ids = [v for k, v in only_versions if k == key]
        assert ids == sorted(ids) and len(ids) == 3
    marker = [v for k, v in made if k == "b"][-1]
    assert marker < min(v for k, v in made if k == "b" and v != marker)
    # Delimiter and prefix fold as in ListObjects.
    r = c.list_object_versions(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/", "c/"]
    assert sorted({v["Key"] for v in r["Versions"]}) == ["b", "d"]
    r = c.list_object_versions(Bucket=bucket, Prefix="c/", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["c/x/"]
    r = c.list_object_versions(Bucket=bucket, KeyMarker="b")
    assert sorted({v["Key"] for v in r["Versions"]}) == ["a/1", "a/2", "b", "c/x/y", "d"][3:]


def test_a_bucket_with_versions_left_is_not_empty_and_versions_survive_a_restart(make_daemon):
    d = make_daemon()
    c = d.client()
    bucket = versioned_bucket(c, "vkeep")
    big = hashlib.sha256(b"v").digest() * (BIG // 32)
    v1 = c.put_object(Bucket=bucket, Key="k", Body=big)["VersionId"]
    c.put_object(Bucket=bucket, Key="k", Body=b"small")
    c.delete_object(Bucket=bucket, Key="k")
    # Restart: the noncurrent version's blob is referenced, so the start's sweep keeps it.
    assert d.stop() == 0
    d.start()
    c = d.client()
    assert body(c, bucket, "k", VersionId=v1) == big
    with pytest.raises(ClientError) as e:
        c.delete_bucket(Bucket=bucket)
    assert code(e.value) == ("BucketNotEmpty", 409)
    for t in versions(c, bucket):
        c.delete_object(Bucket=bucket, Key=t[0], VersionId=t[1])
    assert versions(c, bucket) == []
    c.delete_bucket(Bucket=bucket)


def test_the_image_url_follows_the_current_version(make_daemon):
    d = make_daemon()
    c = d.client()
    bucket = harness.PUBLIC_BUCKET
    c.create_bucket(Bucket=bucket)
    c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    def solid(colour) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", (64, 64), colour).save(out, "PNG")
        return out.getvalue()

    def served() -> tuple[int, int, int]:
        r = requests.get(f"{d.images_url}/unsafe/rs:fit:16:16/plain/s3://{bucket}/p.png@png",
                         timeout=30)
        assert r.status_code == 200, r.text
        return Image.open(io.BytesIO(r.content)).convert("RGB").getpixel((8, 8))

    c.put_object(Bucket=bucket, Key="p.png", Body=solid((255, 0, 0)))
    assert served() == (255, 0, 0)
    blue = c.put_object(Bucket=bucket, Key="p.png", Body=solid((0, 0, 255)))["VersionId"]
    assert served() == (0, 0, 255)
    # Removing the current version makes the older one current, and the URL follows it.
    c.delete_object(Bucket=bucket, Key="p.png", VersionId=blue)
    assert served() == (255, 0, 0)
    # A delete marker hides it.
    c.delete_object(Bucket=bucket, Key="p.png")
    r = requests.get(f"{d.images_url}/unsafe/rs:fit:16:16/plain/s3://{bucket}/p.png@png",
                     timeout=30)
    assert r.status_code == 404


def test_a_catalog_written_before_versioning_opens_and_versions(make_daemon):
    """The fixture is the data dir of the release before versioning
    (`tests/fixtures/make_catalog_before_versioning.py` says how it was made)."""
    d = make_daemon(start=False)
    d.data_dir.mkdir(parents=True)
    with tarfile.open(FIXTURES / "catalog-before-versioning.tar.gz") as tar:
        tar.extractall(d.data_dir, filter="data")
    d.start()
    c = d.client()
    assert "Status" not in c.get_bucket_versioning(Bucket="kept")
    small = c.get_object(Bucket="kept", Key="small.txt")
    assert small["Body"].read() == b"small and old"
    assert small["Metadata"] == {"origin": "old-release"} and "VersionId" not in small
    big = hashlib.sha256(b"big").digest() * 6400
    assert body(c, "kept", "big.bin") == big
    assert body(c, "kept", "multi.bin") == b"a" * (5 << 20) + b"b" * 1024
    uploads = c.list_multipart_uploads(Bucket="kept")["Uploads"]
    assert [u["Key"] for u in uploads] == ["pending.bin"]
    assert sorted(t[1] for t in versions(c, "kept")) == ["null"] * 3
    # Versioning on: the old objects become `null` versions, kept beside the new ones.
    c.put_bucket_versioning(Bucket="kept", VersioningConfiguration={"Status": "Enabled"})
    v = c.put_object(Bucket="kept", Key="big.bin", Body=b"new")["VersionId"]
    c.put_object(Bucket="kept", Key="small.txt", Body=b"new small")
    assert body(c, "kept", "big.bin", VersionId="null") == big
    assert body(c, "kept", "small.txt", VersionId="null") == b"small and old"
    tags = c.get_object_tagging(Bucket="kept", Key="small.txt", VersionId="null")["TagSet"]
    assert tags == [{"Key": "era", "Value": "old"}]
    assert body(c, "kept", "big.bin", VersionId=v) == b"new"
    # And after a restart on the migrated catalog.
    assert d.stop() == 0
    d.start()
    c = d.client()
    assert body(c, "kept", "big.bin", VersionId="null") == big
    assert body(c, "kept", "big.bin") == b"new"


def rclone(d, *args: str) -> str:
    """Runs Debian's rclone against the daemon's S3 listener (remote `pp:`)."""
    import os
    import shutil
    import subprocess
    exe = shutil.which("rclone")
    if exe is None:
        pytest.fail("rclone is missing: run scripts/setup-test-deps.sh")
    env = {**os.environ,
           "RCLONE_CONFIG": "/dev/null",
           "RCLONE_CONFIG_PP_TYPE": "s3",
           "RCLONE_CONFIG_PP_PROVIDER": "Other",
           "RCLONE_CONFIG_PP_ENDPOINT": d.endpoint,
           "RCLONE_CONFIG_PP_ACCESS_KEY_ID": harness.ACCESS_KEY,
           "RCLONE_CONFIG_PP_SECRET_ACCESS_KEY": harness.SECRET_KEY,
           "RCLONE_CONFIG_PP_REGION": harness.REGION,
           "RCLONE_CONFIG_PP_FORCE_PATH_STYLE": "true"}
    cp = subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=120)
    assert cp.returncode == 0, f"rclone {' '.join(args)}: {cp.stderr}"
    return cp.stdout


def test_rclone_copies_a_versioned_bucket_and_reads_it_as_it_was(daemon, tmp_path):
    import time
    c = daemon.client()
    src = versioned_bucket(c, "vrsrc")
    c.put_object(Bucket=src, Key="photo.jpg", Body=b"first photo", ContentType="image/jpeg",
                 Metadata={"camera": "x100"}, Tagging="album=summer")
    c.put_object(Bucket=src, Key="gone.txt", Body=b"soon deleted")
    time.sleep(1.2)
    between = time.time()
    time.sleep(1.2)
    c.put_object(Bucket=src, Key="photo.jpg", Body=b"second photo", ContentType="image/jpeg",
                 Metadata={"camera": "x200"}, Tagging="album=autumn")
    c.put_object(Bucket=src, Key="notes/readme.txt", Body=b"notes")
    c.delete_object(Bucket=src, Key="gone.txt")

    # A copy between buckets: current versions, with their metadata and tags (rclone copies
    # server-side within one endpoint, and CopyObject keeps tags, as S3's does).
    dst = harness.unique_name("vrdst")
    c.create_bucket(Bucket=dst)
    rclone(daemon, "copy", "-M", f"pp:{src}", f"pp:{dst}")
    keys = sorted(o["Key"] for o in c.list_objects_v2(Bucket=dst)["Contents"])
    assert keys == ["notes/readme.txt", "photo.jpg"]
    h = c.head_object(Bucket=dst, Key="photo.jpg")
    assert body(c, dst, "photo.jpg") == b"second photo"
    assert h["ContentType"] == "image/jpeg" and h["Metadata"].get("camera") == "x200"
    assert c.get_object_tagging(Bucket=dst, Key="photo.jpg")["TagSet"] == [
        {"Key": "album", "Value": "autumn"}]

    # The old versions, through rclone's own version listing and its point-in-time view
    # (ListObjectVersions, then GET by versionId).
    listed = rclone(daemon, "lsf", "--s3-versions", f"pp:{src}").split()
    assert "photo.jpg" in listed and any(re.fullmatch(r"photo-v\d{4}-.*\.jpg", n) for n in listed)
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(between + 0.5))
    out = tmp_path / "as-it-was"
    rclone(daemon, "copy", "--s3-version-at", at, f"pp:{src}", str(out))
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["gone.txt", "photo.jpg"]
    assert (out / "photo.jpg").read_bytes() == b"first photo"
    assert (out / "gone.txt").read_bytes() == b"soon deleted"


def test_the_aws_cli_versioning_commands(daemon, tmp_path):
    aws = harness.AwsCli(daemon.endpoint)
    bucket = harness.unique_name("vcli")
    aws("s3", "mb", f"s3://{bucket}")
    aws("s3api", "put-bucket-versioning", "--bucket", bucket,
        "--versioning-configuration", "Status=Enabled")
    got = json.loads(aws("s3api", "get-bucket-versioning", "--bucket", bucket).stdout)
    assert got["Status"] == "Enabled"
    f = tmp_path / "note.txt"
    ids = []
    for text in ("one", "two"):
        f.write_text(text)
        out = json.loads(aws("s3api", "put-object", "--bucket", bucket, "--key", "note.txt",
                             "--body", str(f)).stdout)
        ids.append(out["VersionId"])
    aws("s3", "rm", f"s3://{bucket}/note.txt")
    listed = json.loads(aws("s3api", "list-object-versions", "--bucket", bucket).stdout)
    assert sorted(v["VersionId"] for v in listed["Versions"]) == sorted(ids)
    assert [m["IsLatest"] for m in listed["DeleteMarkers"]] == [True]
    back = tmp_path / "back.txt"
    aws("s3api", "get-object", "--bucket", bucket, "--key", "note.txt",
        "--version-id", ids[0], str(back))
    assert back.read_text() == "one"
    assert "note.txt" not in aws("s3", "ls", f"s3://{bucket}/").stdout
