"""Conditional deletes: DeleteObject with If-Match (and x-amz-if-match-size /
-last-modified-time), and DeleteObjects with a per-key ETag.

The bug: the conditions were ignored, so a client guarding a delete with the ETag it last
read deleted a newer object another client had written meanwhile.
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

import harness

pytestmark = pytest.mark.pixelport_only


code = harness.client_error


def exists(c, bucket: str, key: str) -> bool:
    try:
        c.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError:
        return False


def test_delete_object_if_match(backend_daemon):
    c = backend_daemon.client()
    bucket = harness.unique_name("cdel")
    c.create_bucket(Bucket=bucket)
    old = c.put_object(Bucket=bucket, Key="doc", Body=b"v1")["ETag"]
    new = c.put_object(Bucket=bucket, Key="doc", Body=b"v2-newer")["ETag"]
    with pytest.raises(ClientError) as e:
        c.delete_object(Bucket=bucket, Key="doc", IfMatch=old)
    assert code(e.value) == ("PreconditionFailed", 412)
    assert exists(c, bucket, "doc")
    with pytest.raises(ClientError) as e:
        c.delete_object(Bucket=bucket, Key="doc", IfMatchSize=2)
    assert code(e.value) == ("PreconditionFailed", 412)
    head = c.head_object(Bucket=bucket, Key="doc")
    c.delete_object(Bucket=bucket, Key="doc", IfMatch=new, IfMatchSize=8,
                    IfMatchLastModifiedTime=head["LastModified"])
    assert not exists(c, bucket, "doc")
    # A condition on a missing key is NoSuchKey; an unconditional delete of one is not.
    with pytest.raises(ClientError) as e:
        c.delete_object(Bucket=bucket, Key="doc", IfMatch=new)
    assert code(e.value) == ("NoSuchKey", 404)
    c.delete_object(Bucket=bucket, Key="doc")


def test_delete_objects_per_key_etag(backend_daemon):
    c = backend_daemon.client()
    bucket = harness.unique_name("cdels")
    c.create_bucket(Bucket=bucket)
    etags = {k: c.put_object(Bucket=bucket, Key=k, Body=k.encode())["ETag"] for k in "abc"}
    r = c.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "a", "ETag": etags["a"]},
        {"Key": "b", "ETag": etags["a"]},
        {"Key": "c"},
    ]})
    assert sorted(d["Key"] for d in r.get("Deleted", [])) == ["a", "c"]
    errors = {e["Key"]: e["Code"] for e in r.get("Errors", [])}
    assert errors == {"b": "PreconditionFailed"}, r
    assert exists(c, bucket, "b") and not exists(c, bucket, "a")
