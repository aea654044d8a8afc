"""Object and bucket tagging: Put/Get/DeleteObjectTagging, `x-amz-tagging` on PUT, copy
and multipart, Put/Get/DeleteBucketTagging, with AWS's limits and error codes.

Before this, every tagging call answered NotImplemented, and a PUT with `x-amz-tagging`
(boto3's `Tagging=`, `aws s3 cp --tagging` via s3api) was stored with its tags dropped
silently. The remote store cannot keep object tags yet: it refuses them with
NotImplemented and a reason, never drops them.
"""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

import harness

pytestmark = pytest.mark.pixelport_only

MiB = 1024 * 1024


code = harness.client_error


def tagset(d: dict[str, str]) -> list[dict]:
    return [{"Key": k, "Value": v} for k, v in d.items()]


def as_dict(tag_set: list[dict]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tag_set}


def test_object_tags_on_put_copy_multipart_and_tagging_calls(backend_daemon):
    c = backend_daemon.client()
    bucket = harness.unique_name("tags")
    c.create_bucket(Bucket=bucket)
    if backend_daemon.backend == "remote":
        c.put_object(Bucket=bucket, Key="a", Body=b"x")
        for call in (
                lambda: c.put_object(Bucket=bucket, Key="t", Body=b"x", Tagging="a=1"),
                lambda: c.put_object_tagging(Bucket=bucket, Key="a",
                                             Tagging={"TagSet": tagset({"a": "1"})}),
                lambda: c.get_object_tagging(Bucket=bucket, Key="a")):
            with pytest.raises(ClientError) as e:
                call()
            assert code(e.value) == ("NotImplemented", 501)
            assert "remote store" in e.value.response["Error"]["Message"]
        # Refused, not dropped: nothing was stored under "t".
        with pytest.raises(ClientError):
            c.head_object(Bucket=bucket, Key="t")
        return

    # PUT with x-amz-tagging (URL-encoded), then GET's x-amz-tagging-count.
    c.put_object(Bucket=bucket, Key="photo.jpg", Body=b"jpeg", Tagging="project=blue%20sky&team=web")
    got = c.get_object_tagging(Bucket=bucket, Key="photo.jpg")["TagSet"]
    assert as_dict(got) == {"project": "blue sky", "team": "web"}
    obj = c.get_object(Bucket=bucket, Key="photo.jpg")
    assert obj["TagCount"] == 2
    before = c.head_object(Bucket=bucket, Key="photo.jpg")

    # PutObjectTagging replaces the set and changes neither bytes, ETag nor Last-Modified.
    c.put_object_tagging(Bucket=bucket, Key="photo.jpg",
                         Tagging={"TagSet": tagset({"state": "reviewed"})})
    assert as_dict(c.get_object_tagging(Bucket=bucket, Key="photo.jpg")["TagSet"]) == {
        "state": "reviewed"}
    after = c.head_object(Bucket=bucket, Key="photo.jpg")
    assert (after["ETag"], after["LastModified"]) == (before["ETag"], before["LastModified"])

    # Copy: COPY (the default) keeps the source's tags, REPLACE takes the header's.
    c.copy_object(Bucket=bucket, Key="copy1", CopySource={"Bucket": bucket, "Key": "photo.jpg"})
    assert as_dict(c.get_object_tagging(Bucket=bucket, Key="copy1")["TagSet"]) == {
        "state": "reviewed"}
    c.copy_object(Bucket=bucket, Key="copy2", CopySource={"Bucket": bucket, "Key": "photo.jpg"},
                  TaggingDirective="REPLACE", Tagging="fresh=1")
    assert as_dict(c.get_object_tagging(Bucket=bucket, Key="copy2")["TagSet"]) == {"fresh": "1"}

    # Multipart: the tags given at creation are the object's.
    up = c.create_multipart_upload(Bucket=bucket, Key="big", Tagging="kind=video")
    part = c.upload_part(Bucket=bucket, Key="big", UploadId=up["UploadId"], PartNumber=1,
                         Body=b"v" * MiB)
    c.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=up["UploadId"],
                                MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]})
    assert as_dict(c.get_object_tagging(Bucket=bucket, Key="big")["TagSet"]) == {"kind": "video"}

    # Delete, then none; an untagged GET has no count.
    c.delete_object_tagging(Bucket=bucket, Key="photo.jpg")
    assert c.get_object_tagging(Bucket=bucket, Key="photo.jpg")["TagSet"] == []
    assert "TagCount" not in c.get_object(Bucket=bucket, Key="photo.jpg")

    # Overwriting an object replaces its tags with the new PUT's (none).
    c.put_object(Bucket=bucket, Key="copy1", Body=b"new")
    assert c.get_object_tagging(Bucket=bucket, Key="copy1")["TagSet"] == []

    # The limits and errors AWS documents.
    eleven = {f"k{i}": "v" for i in range(11)}
    cases = [
        (lambda: c.put_object_tagging(Bucket=bucket, Key="big",
                                      Tagging={"TagSet": tagset(eleven)}), ("BadRequest", 400)),
        (lambda: c.put_object_tagging(Bucket=bucket, Key="big",
                                      Tagging={"TagSet": tagset({"k" * 129: "v"})}),
         ("InvalidTag", 400)),
        (lambda: c.put_object_tagging(Bucket=bucket, Key="big",
                                      Tagging={"TagSet": tagset({"k": "v" * 257})}),
         ("InvalidTag", 400)),
        (lambda: c.put_object_tagging(Bucket=bucket, Key="big", Tagging={"TagSet": [
            {"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}]}), ("InvalidTag", 400)),
        (lambda: c.put_object_tagging(Bucket=bucket, Key="big",
                                      Tagging={"TagSet": tagset({"aws:owner": "me"})}),
         ("InvalidTag", 400)),
        (lambda: c.put_object(Bucket=bucket, Key="t", Body=b"x", Tagging="a=1&a=2"),
         ("InvalidTag", 400)),
        (lambda: c.put_object_tagging(Bucket=bucket, Key="missing",
                                      Tagging={"TagSet": tagset({"a": "1"})}), ("NoSuchKey", 404)),
        (lambda: c.get_object_tagging(Bucket=bucket, Key="missing"), ("NoSuchKey", 404)),
        # A version id Pixelport could never have made is malformed (AWS: 400); a
        # well-formed one that names nothing is NoSuchVersion.
        (lambda: c.get_object_tagging(Bucket=bucket, Key="big", VersionId="3HL4kqtJlcpXroDTDmJ"),
         ("InvalidArgument", 400)),
        (lambda: c.get_object_tagging(Bucket=bucket, Key="big",
                                      VersionId="fffe6a3f2b1c0d9e0123456789abcdef"),
         ("NoSuchVersion", 404)),
    ]
    for call, want in cases:
        with pytest.raises(ClientError) as e:
            call()
        assert code(e.value) == want, (want, e.value.response["Error"])
    # A refused set left the stored one alone, and a refused PUT stored nothing.
    assert as_dict(c.get_object_tagging(Bucket=bucket, Key="big")["TagSet"]) == {"kind": "video"}
    with pytest.raises(ClientError):
        c.head_object(Bucket=bucket, Key="t")


def test_bucket_tags(backend_daemon):
    """Both stores: bucket tags live in Pixelport's catalog."""
    c = backend_daemon.client()
    bucket = harness.unique_name("btags")
    c.create_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        c.get_bucket_tagging(Bucket=bucket)
    assert code(e.value) == ("NoSuchTagSet", 404)
    tags = {"cost-center": "web", "env": "prod"}
    c.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tagset(tags)})
    assert as_dict(c.get_bucket_tagging(Bucket=bucket)["TagSet"]) == tags
    fifty_one = {f"k{i}": "v" for i in range(51)}
    with pytest.raises(ClientError) as e:
        c.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tagset(fifty_one)})
    assert code(e.value) == ("BadRequest", 400)
    with pytest.raises(ClientError) as e:
        c.put_bucket_tagging(Bucket="no-such-bucket-tags", Tagging={"TagSet": tagset(tags)})
    assert code(e.value) == ("NoSuchBucket", 404)
    c.delete_bucket_tagging(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        c.get_bucket_tagging(Bucket=bucket)
    assert code(e.value) == ("NoSuchTagSet", 404)
    # A deleted bucket's tags do not pass to the next bucket of that name.
    c.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tagset(tags)})
    c.delete_bucket(Bucket=bucket)
    c.create_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        c.get_bucket_tagging(Bucket=bucket)
    assert code(e.value) == ("NoSuchTagSet", 404)


def test_aws_cli_tagging_commands(daemon, tmp_path):
    aws = harness.AwsCli(daemon.endpoint)
    bucket = harness.unique_name("clitags")
    aws("s3", "mb", f"s3://{bucket}")
    f = tmp_path / "f.txt"
    f.write_text("hello")
    aws("s3", "cp", str(f), f"s3://{bucket}/f.txt")
    aws("s3api", "put-object-tagging", "--bucket", bucket, "--key", "f.txt",
        "--tagging", "TagSet=[{Key=owner,Value=ann},{Key=stage,Value=draft}]")
    got = json.loads(aws("s3api", "get-object-tagging", "--bucket", bucket, "--key", "f.txt").stdout)
    assert as_dict(got["TagSet"]) == {"owner": "ann", "stage": "draft"}
    aws("s3api", "put-object", "--bucket", bucket, "--key", "g.txt", "--body", str(f),
        "--tagging", "a=1&b=two")
    got = json.loads(aws("s3api", "get-object-tagging", "--bucket", bucket, "--key", "g.txt").stdout)
    assert as_dict(got["TagSet"]) == {"a": "1", "b": "two"}
    aws("s3api", "put-bucket-tagging", "--bucket", bucket,
        "--tagging", "TagSet=[{Key=team,Value=web}]")
    got = json.loads(aws("s3api", "get-bucket-tagging", "--bucket", bucket).stdout)
    assert as_dict(got["TagSet"]) == {"team": "web"}


def test_get_object_attributes(backend_daemon):
    """GetObjectAttributes (in this module because it reads what tagging writes beside it:
    the object's catalog entry). Before this it answered NotImplemented."""
    c = backend_daemon.client()
    bucket = harness.unique_name("attrs")
    c.create_bucket(Bucket=bucket)
    c.put_object(Bucket=bucket, Key="small", Body=b"hello world", ChecksumAlgorithm="SHA256")
    head = c.head_object(Bucket=bucket, Key="small")
    a = c.get_object_attributes(Bucket=bucket, Key="small",
                                ObjectAttributes=["ETag", "ObjectSize", "StorageClass", "Checksum"])
    assert a["ETag"].strip('"') == head["ETag"].strip('"')
    assert a["ObjectSize"] == 11 and a["StorageClass"] == "STANDARD"
    assert a["Checksum"]["ChecksumSHA256"] == "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek="
    assert a["Checksum"]["ChecksumType"] == "FULL_OBJECT"
    only = c.get_object_attributes(Bucket=bucket, Key="small", ObjectAttributes=["ObjectSize"])
    assert "ETag" not in only and "Checksum" not in only and only["ObjectSize"] == 11

    up = c.create_multipart_upload(Bucket=bucket, Key="big")
    parts = []
    for n in (1, 2):
        p = c.upload_part(Bucket=bucket, Key="big", UploadId=up["UploadId"], PartNumber=n,
                          Body=bytes([n]) * (5 * MiB))
        parts.append({"ETag": p["ETag"], "PartNumber": n})
    c.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=up["UploadId"],
                                MultipartUpload={"Parts": parts})
    a = c.get_object_attributes(Bucket=bucket, Key="big", ObjectAttributes=["ObjectParts", "ETag"])
    assert a["ObjectParts"]["TotalPartsCount"] == 2 and a["ETag"].strip('"').endswith("-2"), a

    for kwargs, want in (({"Key": "missing", "ObjectAttributes": ["ETag"]}, ("NoSuchKey", 404)),
                         ({"Key": "small", "ObjectAttributes": ["Colour"]},
                          ("InvalidArgument", 400))):
        with pytest.raises(ClientError) as e:
            c.get_object_attributes(Bucket=bucket, **kwargs)
        assert code(e.value) == want, e.value.response["Error"]
