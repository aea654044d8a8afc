"""S3 API behaviour through boto3, on both storage backends.

Every test runs once against the embedded store and once against the remote
store (an s3s-fs "cluster").  Assertions follow what real AWS S3 answers, so
that tools written against S3 keep working.
"""

from __future__ import annotations

import datetime as dt
import gzip
import urllib.parse

import pytest
from botocore.exceptions import ClientError

import harness
from harness import MiB, expect_error, md5_hex, multipart_etag, pattern_bytes


@pytest.fixture(scope="module")
def server(backend_daemon):
    """This module talks to one daemon per backend."""
    return backend_daemon


def _now():
    return dt.datetime.now(dt.timezone.utc)


def _put(s3, bucket, key, body=b"x", **kw):
    return s3.put_object(Bucket=bucket, Key=key, Body=body, **kw)


def _body(s3, bucket, key, **kw) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key, **kw)["Body"].read()


def _status(resp) -> int:
    return resp["ResponseMetadata"]["HTTPStatusCode"]


# ---------------------------------------------------------------- buckets ----

def test_list_buckets_shows_new_buckets_sorted_with_creation_date(s3):
    """ListBuckets shows every created bucket, sorted by name, with a sane CreationDate."""
    stem = harness.unique_name("lb")
    names = [f"{stem}-c", f"{stem}-a", f"{stem}-b"]
    try:
        for n in names:
            s3.create_bucket(Bucket=n)
        listed = s3.list_buckets()["Buckets"]
        all_names = [b["Name"] for b in listed]
        assert all_names == sorted(all_names)
        mine = [b for b in listed if b["Name"].startswith(stem)]
        assert [b["Name"] for b in mine] == sorted(names)
        for b in mine:
            assert abs((b["CreationDate"] - _now()).total_seconds()) < 300
    finally:
        for n in names:
            harness.empty_bucket(s3, n)


@pytest.mark.parametrize("name", [
    "ab",                       # too short
    "a" * 64,                   # too long
    "UpperCase-bucket",         # upper case
    "under_score-bucket",       # underscore
    "-leading-dash",
    "trailing-dash-",
    "double..dots",
    "192.168.10.20",            # formatted like an IP address
])
def test_create_bucket_rejects_invalid_names(s3, name):
    """CreateBucket with a name breaking S3's naming rules fails with InvalidBucketName and creates nothing."""
    expect_error("InvalidBucketName", 400, s3.create_bucket, Bucket=name)
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_create_existing_bucket_is_already_owned(s3, bucket):
    """Creating a bucket you already own fails with BucketAlreadyOwnedByYou (409) and keeps its objects."""
    _put(s3, bucket, "keep", b"still here")
    expect_error("BucketAlreadyOwnedByYou", 409, s3.create_bucket, Bucket=bucket)
    assert _body(s3, bucket, "keep") == b"still here"


def test_head_bucket_existing_and_missing(s3, bucket):
    """HeadBucket answers 200 for an existing bucket and 404 for a missing one."""
    assert _status(s3.head_bucket(Bucket=bucket)) == 200
    expect_error("404", 404, s3.head_bucket, Bucket=harness.unique_name("missing"))


def test_delete_bucket_rules(s3):
    """DeleteBucket refuses a non-empty bucket (BucketNotEmpty 409), fails on a missing one (NoSuchBucket), and removes an empty one."""
    name = harness.unique_name("del")
    s3.create_bucket(Bucket=name)
    try:
        _put(s3, name, "obj", b"data")
        expect_error("BucketNotEmpty", 409, s3.delete_bucket, Bucket=name)
        assert _body(s3, name, "obj") == b"data"
        s3.delete_object(Bucket=name, Key="obj")
        assert _status(s3.delete_bucket(Bucket=name)) == 204
        expect_error("404", 404, s3.head_bucket, Bucket=name)
        assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        expect_error("NoSuchBucket", 404, s3.delete_bucket, Bucket=name)
    finally:
        harness.empty_bucket(s3, name)


def test_get_bucket_location_is_us_east_1(s3, bucket):
    """GetBucketLocation answers an empty LocationConstraint (meaning us-east-1), as S3 does for that region."""
    resp = s3.get_bucket_location(Bucket=bucket)
    assert resp.get("LocationConstraint") in (None, "")
    expect_error("NoSuchBucket", 404, s3.get_bucket_location, Bucket=harness.unique_name("nb"))


def test_object_calls_on_missing_bucket(s3):
    """Object calls against a missing bucket fail with NoSuchBucket (404)."""
    missing = harness.unique_name("nb")
    expect_error("NoSuchBucket", 404, s3.put_object, Bucket=missing, Key="k", Body=b"x")
    expect_error("NoSuchBucket", 404, s3.get_object, Bucket=missing, Key="k")
    expect_error("NoSuchBucket", 404, s3.list_objects_v2, Bucket=missing)


# ------------------------------------------------------------ put / get -----

def test_put_get_roundtrip_and_etag_is_md5(s3, bucket):
    """A single-part object reads back byte for byte, and its ETag is the quoted hex MD5 of its bytes."""
    data = pattern_bytes(300 * 1024, seed=1)
    put = _put(s3, bucket, "obj.bin", data)
    assert put["ETag"] == f'"{md5_hex(data)}"'
    got = s3.get_object(Bucket=bucket, Key="obj.bin")
    assert got["Body"].read() == data
    assert got["ContentLength"] == len(data)
    assert got["ETag"] == put["ETag"]
    head = s3.head_object(Bucket=bucket, Key="obj.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == put["ETag"]
    assert abs((head["LastModified"] - _now()).total_seconds()) < 300


def test_empty_object(s3, bucket):
    """A zero-byte object can be stored and read, with the MD5 of nothing as ETag."""
    put = _put(s3, bucket, "empty", b"")
    assert put["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    got = s3.get_object(Bucket=bucket, Key="empty")
    assert got["ContentLength"] == 0
    assert got["Body"].read() == b""


def test_overwrite_replaces_content_and_metadata(s3, bucket):
    """A second PUT on the same key fully replaces the bytes and the metadata."""
    _put(s3, bucket, "k", b"first version, longer", Metadata={"v": "1"}, ContentType="text/plain")
    _put(s3, bucket, "k", b"second", Metadata={"w": "2"})
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["Body"].read() == b"second"
    assert got["Metadata"] == {"w": "2"}
    assert got.get("ContentType") != "text/plain"


def test_get_missing_key(s3, bucket):
    """GetObject of a missing key fails with NoSuchKey (404); HeadObject answers 404."""
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=bucket, Key="nope")
    expect_error("404", 404, s3.head_object, Bucket=bucket, Key="nope")


RANGE_CASES = [
    ("bytes=0-0", 0, 0),
    ("bytes=0-99", 0, 99),
    ("bytes=100-", 100, 999),
    ("bytes=-10", 990, 999),
    ("bytes=990-5000", 990, 999),   # end past the size is clamped
    ("bytes=999-999", 999, 999),
]


@pytest.mark.parametrize("rng,start,end", RANGE_CASES, ids=[c[0] for c in RANGE_CASES])
def test_get_range(s3, bucket, rng, start, end):
    """A Range GET answers 206 with the right bytes, Content-Range and Content-Length."""
    data = pattern_bytes(1000, seed=2)
    _put(s3, bucket, "r", data)
    got = s3.get_object(Bucket=bucket, Key="r", Range=rng)
    assert _status(got) == 206
    assert got["ContentRange"] == f"bytes {start}-{end}/1000"
    assert got["ContentLength"] == end - start + 1
    assert got["Body"].read() == data[start:end + 1]


@pytest.mark.parametrize("rng", ["bytes=1000-1001", "bytes=5000-"])
def test_get_unsatisfiable_range(s3, bucket, rng):
    """A Range starting at or past the object's end fails with InvalidRange (416)."""
    _put(s3, bucket, "r", b"z" * 1000)
    expect_error("InvalidRange", 416, s3.get_object, Bucket=bucket, Key="r", Range=rng)


def test_conditional_get_etag(s3, bucket):
    """If-Match / If-None-Match: matching If-Match serves, a mismatch is 412; a matching If-None-Match is 304."""
    etag = _put(s3, bucket, "c", b"conditional")["ETag"]
    assert _body(s3, bucket, "c", IfMatch=etag) == b"conditional"
    expect_error("PreconditionFailed", 412, s3.get_object, Bucket=bucket, Key="c",
                 IfMatch='"00000000000000000000000000000000"')
    expect_error("304", 304, s3.get_object, Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert _body(s3, bucket, "c", IfNoneMatch='"00000000000000000000000000000000"') == b"conditional"
    # HEAD follows the same rules.
    expect_error("412", 412, s3.head_object, Bucket=bucket, Key="c", IfMatch='"nope"')
    expect_error("304", 304, s3.head_object, Bucket=bucket, Key="c", IfNoneMatch=etag)


def test_conditional_get_dates(s3, bucket):
    """If-Modified-Since / If-Unmodified-Since compare against Last-Modified at one-second precision."""
    _put(s3, bucket, "d", b"dated")
    lm = s3.head_object(Bucket=bucket, Key="d")["LastModified"]
    day = dt.timedelta(days=1)
    # Not modified since its own Last-Modified (what a browser sends back): 304.
    expect_error("304", 304, s3.get_object, Bucket=bucket, Key="d", IfModifiedSince=lm)
    assert _body(s3, bucket, "d", IfModifiedSince=lm - day) == b"dated"
    expect_error("PreconditionFailed", 412, s3.get_object, Bucket=bucket, Key="d",
                 IfUnmodifiedSince=lm - day)
    assert _body(s3, bucket, "d", IfUnmodifiedSince=lm) == b"dated"
    expect_error("412", 412, s3.head_object, Bucket=bucket, Key="d", IfUnmodifiedSince=lm - day)


def test_conditional_precedence(s3, bucket):
    """S3's documented precedence: a true If-Match wins over a false If-Unmodified-Since; a false If-None-Match with a true If-Modified-Since is 304."""
    etag = _put(s3, bucket, "p", b"precedence")["ETag"]
    lm = s3.head_object(Bucket=bucket, Key="p")["LastModified"]
    day = dt.timedelta(days=1)
    assert _body(s3, bucket, "p", IfMatch=etag, IfUnmodifiedSince=lm - day) == b"precedence"
    expect_error("304", 304, s3.get_object, Bucket=bucket, Key="p", IfNoneMatch=etag,
                 IfModifiedSince=lm - day)


def test_response_header_overrides(s3, bucket):
    """response-content-type/-disposition/-cache-control/-language/-expires/-encoding query parameters set the GET response headers."""
    _put(s3, bucket, "o", b"override me", ContentType="text/plain")
    got = s3.get_object(
        Bucket=bucket, Key="o",
        ResponseContentType="application/x-custom",
        ResponseContentDisposition='attachment; filename="custom.bin"',
        ResponseCacheControl="no-store",
        ResponseContentLanguage="de-DE",
        ResponseContentEncoding="identity",
        ResponseExpires=dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
    )
    headers = got["ResponseMetadata"]["HTTPHeaders"]
    assert got["Body"].read() == b"override me"
    assert headers["content-type"] == "application/x-custom"
    assert headers["content-disposition"] == 'attachment; filename="custom.bin"'
    assert headers["cache-control"] == "no-store"
    assert headers["content-language"] == "de-DE"
    assert headers["content-encoding"] == "identity"
    assert "2031" in headers["expires"] and "03:04:05" in headers["expires"]
    # The override is per request only.
    assert s3.head_object(Bucket=bucket, Key="o")["ContentType"] == "text/plain"


def test_metadata_round_trip(s3, bucket):
    """User metadata and the standard content headers set on PUT come back on GET and HEAD."""
    data = gzip.compress(b"compressed payload " * 100)
    _put(s3, bucket, "m.png.gz", data,
         Metadata={"color": "blue", "multi-word": "Hello World"},
         ContentType="image/png", CacheControl="public, max-age=3600",
         ContentDisposition='inline; filename="m.png"', ContentEncoding="gzip",
         ContentLanguage="en-US")
    for resp in (s3.get_object(Bucket=bucket, Key="m.png.gz"),
                 s3.head_object(Bucket=bucket, Key="m.png.gz")):
        assert resp["Metadata"] == {"color": "blue", "multi-word": "Hello World"}
        assert resp["ContentType"] == "image/png"
        assert resp["CacheControl"] == "public, max-age=3600"
        assert resp["ContentDisposition"] == 'inline; filename="m.png"'
        assert resp["ContentEncoding"] == "gzip"
        assert resp["ContentLanguage"] == "en-US"
    assert _body(s3, bucket, "m.png.gz") == data


def test_default_content_type(s3, bucket):
    """An object stored without Content-Type is served as binary/octet-stream, like S3."""
    _put(s3, bucket, "noct", b"\x00\x01")
    assert s3.head_object(Bucket=bucket, Key="noct")["ContentType"] == "binary/octet-stream"


# ---------------------------------------------------------------- delete ----

def test_delete_object_existing_and_missing(s3, bucket):
    """DeleteObject answers 204 and the object is gone; deleting a missing key also answers 204."""
    _put(s3, bucket, "gone", b"bye")
    assert _status(s3.delete_object(Bucket=bucket, Key="gone")) == 204
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=bucket, Key="gone")
    assert _status(s3.delete_object(Bucket=bucket, Key="never-existed")) == 204


def test_delete_objects_verbose_and_quiet(s3, bucket):
    """DeleteObjects lists every requested key as Deleted (even missing ones); Quiet mode lists none; all are gone."""
    for k in ("k1", "k2", "k3", "k4", "keep"):
        _put(s3, bucket, k, k.encode())
    resp = s3.delete_objects(Bucket=bucket, Delete={
        "Objects": [{"Key": "k1"}, {"Key": "k2"}, {"Key": "missing"}]})
    assert sorted(d["Key"] for d in resp.get("Deleted", [])) == ["k1", "k2", "missing"]
    assert not resp.get("Errors")
    resp = s3.delete_objects(Bucket=bucket, Delete={
        "Objects": [{"Key": "k3"}, {"Key": "k4"}], "Quiet": True})
    assert not resp.get("Deleted")
    assert not resp.get("Errors")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["keep"]


# ------------------------------------------------------------------ copy ----

def test_copy_object_copy_directive(s3, bucket):
    """CopyObject (default COPY directive) copies bytes, Content-Type and user metadata, within and across buckets."""
    data = pattern_bytes(70 * 1024, seed=3)
    src_etag = _put(s3, bucket, "src", data, ContentType="image/jpeg",
                    Metadata={"origin": "camera"})["ETag"]
    other = harness.unique_name("cp")
    s3.create_bucket(Bucket=other)
    try:
        for dst_bucket, dst_key in ((bucket, "dst"), (other, "copied/dst")):
            resp = s3.copy_object(Bucket=dst_bucket, Key=dst_key,
                                  CopySource={"Bucket": bucket, "Key": "src"})
            assert resp["CopyObjectResult"]["ETag"] == src_etag
            got = s3.get_object(Bucket=dst_bucket, Key=dst_key)
            assert got["Body"].read() == data
            assert got["ContentType"] == "image/jpeg"
            assert got["Metadata"] == {"origin": "camera"}
            assert got["ETag"] == src_etag
        # The source is untouched.
        assert _body(s3, bucket, "src") == data
    finally:
        harness.empty_bucket(s3, other)


def test_copy_object_replace_directive(s3, bucket):
    """CopyObject with MetadataDirective=REPLACE keeps the bytes but takes only the new metadata."""
    _put(s3, bucket, "src", b"payload", ContentType="text/plain", Metadata={"old": "1"})
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"},
                   MetadataDirective="REPLACE", ContentType="application/json",
                   Metadata={"new": "2"})
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["Body"].read() == b"payload"
    assert got["Metadata"] == {"new": "2"}
    assert got["ContentType"] == "application/json"


def test_copy_onto_itself_with_replace_updates_metadata(s3, bucket):
    """Copying an object onto itself with REPLACE changes its metadata in place and keeps its bytes."""
    data = b"self copy"
    _put(s3, bucket, "self", data, ContentType="text/plain", Metadata={"state": "old"})
    s3.copy_object(Bucket=bucket, Key="self", CopySource={"Bucket": bucket, "Key": "self"},
                   MetadataDirective="REPLACE", ContentType="text/markdown",
                   CacheControl="max-age=60", Metadata={"state": "new"})
    got = s3.get_object(Bucket=bucket, Key="self")
    assert got["Body"].read() == data
    assert got["Metadata"] == {"state": "new"}
    assert got["ContentType"] == "text/markdown"
    assert got["CacheControl"] == "max-age=60"


def test_copy_onto_itself_without_replace_is_invalid(s3, bucket):
    """Copying an object onto itself without changing anything fails with InvalidRequest (400)."""
    _put(s3, bucket, "self", b"same", Metadata={"a": "b"})
    expect_error("InvalidRequest", 400, s3.copy_object, Bucket=bucket, Key="self",
                 CopySource={"Bucket": bucket, "Key": "self"})
    got = s3.get_object(Bucket=bucket, Key="self")
    assert got["Body"].read() == b"same"
    assert got["Metadata"] == {"a": "b"}


def test_copy_missing_source(s3, bucket):
    """CopyObject from a missing key fails with NoSuchKey (404) and creates nothing."""
    expect_error("NoSuchKey", 404, s3.copy_object, Bucket=bucket, Key="dst",
                 CopySource={"Bucket": bucket, "Key": "absent"})
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=bucket, Key="dst")


# --------------------------------------------------------------- listing ----

TREE = ["a.txt", "b/1.txt", "b/2.txt", "b/c/3.txt", "b/c/4.txt", "d/5.txt", "e", "f/g", "zz"]


@pytest.fixture
def tree_bucket(s3, bucket):
    for k in TREE:
        _put(s3, bucket, k, k.encode())
    return bucket


def test_list_v2_prefix_and_delimiter(s3, tree_bucket):
    """ListObjectsV2 with Delimiter folds keys into CommonPrefixes; Prefix narrows to a "directory"."""
    r = s3.list_objects_v2(Bucket=tree_bucket, Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["a.txt", "e", "zz"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["b/", "d/", "f/"]
    assert r["KeyCount"] == 6
    assert r["IsTruncated"] is False
    r = s3.list_objects_v2(Bucket=tree_bucket, Prefix="b/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["b/1.txt", "b/2.txt"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["b/c/"]
    assert r["Prefix"] == "b/"
    r = s3.list_objects_v2(Bucket=tree_bucket, Prefix="b/c")
    assert [o["Key"] for o in r["Contents"]] == ["b/c/3.txt", "b/c/4.txt"]
    assert "CommonPrefixes" not in r
    r = s3.list_objects_v2(Bucket=tree_bucket, Prefix="nothing-here")
    assert r["KeyCount"] == 0 and "Contents" not in r


def test_list_v2_contents_fields(s3, tree_bucket):
    """Each listed object carries its Size, ETag (MD5) and LastModified."""
    r = s3.list_objects_v2(Bucket=tree_bucket, Prefix="b/1")
    (obj,) = r["Contents"]
    assert obj["Key"] == "b/1.txt"
    assert obj["Size"] == len(b"b/1.txt")
    assert obj["ETag"] == f'"{md5_hex(b"b/1.txt")}"'
    assert abs((obj["LastModified"] - _now()).total_seconds()) < 300


def test_list_v1_prefix_and_delimiter(s3, tree_bucket):
    """ListObjects (V1) groups CommonPrefixes and filters by Prefix like V2."""
    r = s3.list_objects(Bucket=tree_bucket, Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["a.txt", "e", "zz"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["b/", "d/", "f/"]
    r = s3.list_objects(Bucket=tree_bucket, Prefix="b/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["b/1.txt", "b/2.txt"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["b/c/"]


@pytest.mark.parametrize("max_keys", [1, 2, 4])
def test_list_v2_pagination_walks_everything(s3, tree_bucket, max_keys):
    """Walking ListObjectsV2 pages with MaxKeys and ContinuationToken returns every key once, in order."""
    seen, token, pages = [], None, 0
    while True:
        kw = {"Bucket": tree_bucket, "MaxKeys": max_keys}
        if token:
            kw["ContinuationToken"] = token
        r = s3.list_objects_v2(**kw)
        keys = [o["Key"] for o in r.get("Contents", [])]
        assert len(keys) <= max_keys
        assert r["KeyCount"] == len(keys)
        seen += keys
        pages += 1
        assert pages <= len(TREE) + 1
        if not r["IsTruncated"]:
            break
        assert keys, "a truncated page must not be empty"
        token = r["NextContinuationToken"]
    assert seen == sorted(TREE)


def test_list_v2_pagination_with_delimiter(s3, tree_bucket):
    """With a Delimiter, CommonPrefixes count toward MaxKeys and pagination neither repeats nor drops any."""
    entries, token = [], None
    while True:
        kw = {"Bucket": tree_bucket, "MaxKeys": 1, "Delimiter": "/"}
        if token:
            kw["ContinuationToken"] = token
        r = s3.list_objects_v2(**kw)
        page = [o["Key"] for o in r.get("Contents", [])] + \
               [p["Prefix"] for p in r.get("CommonPrefixes", [])]
        assert len(page) <= 1
        entries += page
        if not r["IsTruncated"]:
            break
        token = r["NextContinuationToken"]
    assert entries == ["a.txt", "b/", "d/", "e", "f/", "zz"]


def test_list_key_and_prefix_with_same_name(server, s3, bucket):
    """A key "e" and keys under "e/" coexist: with Delimiter "/" the listing shows both the object "e" and the prefix "e/"."""
    if server.backend == "remote":
        pytest.skip("the s3s-fs test cluster stores keys as files and cannot hold both B/e and B/e/f")
    for k in ("e", "e/f", "e/g/h"):
        _put(s3, bucket, k, k.encode())
    r = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["e"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["e/"]
    r = s3.list_objects_v2(Bucket=bucket, Prefix="e/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["e/f"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["e/g/"]
    for k in ("e", "e/f", "e/g/h"):
        assert _body(s3, bucket, k) == k.encode()


def test_list_v2_start_after(s3, tree_bucket):
    """StartAfter lists only keys sorting after the given key."""
    r = s3.list_objects_v2(Bucket=tree_bucket, StartAfter="b/2.txt")
    assert [o["Key"] for o in r["Contents"]] == [k for k in sorted(TREE) if k > "b/2.txt"]
    r = s3.list_objects_v2(Bucket=tree_bucket, StartAfter="zz")
    assert "Contents" not in r


def test_list_v1_marker_pagination(s3, tree_bucket):
    """ListObjects (V1) pages with Marker cover every key once; with a Delimiter a truncated page carries NextMarker."""
    seen, marker = [], ""
    while True:
        r = s3.list_objects(Bucket=tree_bucket, MaxKeys=2, Marker=marker)
        keys = [o["Key"] for o in r.get("Contents", [])]
        assert len(keys) <= 2
        seen += keys
        if not r["IsTruncated"]:
            break
        marker = r.get("NextMarker") or keys[-1]
    assert seen == sorted(TREE)

    entries, marker = [], ""
    while True:
        r = s3.list_objects(Bucket=tree_bucket, MaxKeys=2, Marker=marker, Delimiter="/")
        entries += [o["Key"] for o in r.get("Contents", [])]
        entries += [p["Prefix"] for p in r.get("CommonPrefixes", [])]
        if not r["IsTruncated"]:
            break
        assert r.get("NextMarker"), "V1 with a delimiter must return NextMarker when truncated"
        marker = r["NextMarker"]
    assert sorted(entries) == ["a.txt", "b/", "d/", "e", "f/", "zz"]
    assert len(entries) == len(set(entries))

    r = s3.list_objects(Bucket=tree_bucket, Marker="b/")
    assert [o["Key"] for o in r["Contents"]] == [k for k in sorted(TREE) if k > "b/"]


def test_list_sorted_by_utf8_bytes(s3, bucket):
    """Listing order is by UTF-8 bytes (upper case before lower case, ASCII before accents)."""
    keys = ["b", "B", "_", "a", "Z9", "é", "ä", "~", "a0", "A", "😀", "日本"]
    for k in keys:
        _put(s3, bucket, k, b"1")
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(keys, key=lambda k: k.encode())
    listed_v1 = [o["Key"] for o in s3.list_objects(Bucket=bucket)["Contents"]]
    assert listed_v1 == listed


ENC_KEYS = ["sp ace/x", "plus+sign", "pct%41", "uni-ü", "amp&lt<", "tab\tkey"]


def test_list_encoding_type_url(s3, server, bucket):
    """EncodingType=url percent-encodes keys in the XML so '+', spaces and controls survive; boto3 decodes them back exactly."""
    for k in ENC_KEYS:
        _put(s3, bucket, k, b"e")
    # boto3 asks for EncodingType=url itself and decodes the answer.
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == sorted(ENC_KEYS)
    assert [o["Key"] for o in s3.list_objects(Bucket=bucket)["Contents"]] == sorted(ENC_KEYS)
    for params in ({"list-type": "2", "encoding-type": "url"}, {"encoding-type": "url"}):
        resp = harness.signed_request(server.endpoint, "GET", f"/{bucket}", params=params)
        assert resp.status_code == 200, resp.text
        root = harness.parse_xml(resp.content)
        assert root.findtext("EncodingType") == "url"
        raw_keys = [c.findtext("Key") for c in root.findall("Contents")]
        assert [urllib.parse.unquote_plus(k) for k in raw_keys] == sorted(ENC_KEYS)
        assert all(" " not in k and "\t" not in k for k in raw_keys), raw_keys
    # Delimiter / CommonPrefixes are encoded too.
    resp = harness.signed_request(server.endpoint, "GET", f"/{bucket}",
                                  params={"list-type": "2", "encoding-type": "url",
                                          "delimiter": "/"})
    root = harness.parse_xml(resp.content)
    prefixes = [p.findtext("Prefix") for p in root.findall("CommonPrefixes")]
    assert [urllib.parse.unquote_plus(p) for p in prefixes] == ["sp ace/"]


def test_list_without_encoding_escapes_xml(s3, server, bucket):
    """Without EncodingType, keys with XML special characters are XML-escaped and parse back exactly."""
    keys = ["amp&lt<", "quote\"'", "gt>"]
    for k in keys:
        _put(s3, bucket, k, b"x")
    resp = harness.signed_request(server.endpoint, "GET", f"/{bucket}", params={"list-type": "2"})
    assert resp.status_code == 200
    root = harness.parse_xml(resp.content)
    assert [c.findtext("Key") for c in root.findall("Contents")] == sorted(keys)


def test_list_object_versions_shows_null_versions(s3, bucket):
    """ListObjectVersions on an unversioned bucket lists current objects with VersionId "null" and IsLatest."""
    _put(s3, bucket, "v/one", b"1")
    _put(s3, bucket, "v/two", b"22")
    _put(s3, bucket, "other", b"333")
    r = s3.list_object_versions(Bucket=bucket, Prefix="v/")
    versions = r["Versions"]
    assert [v["Key"] for v in versions] == ["v/one", "v/two"]
    for v, size in zip(versions, (1, 2)):
        assert v["VersionId"] == "null"
        assert v["IsLatest"] is True
        assert v["Size"] == size
    assert not r.get("DeleteMarkers")


# ------------------------------------------------------------- multipart ----

def _upload(s3, bucket, key, upload_id, n, data):
    resp = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=data)
    assert resp["ETag"] == f'"{md5_hex(data)}"'
    return {"PartNumber": n, "ETag": resp["ETag"]}


def test_multipart_complete_with_gaps(s3, bucket):
    """A multipart upload with part numbers 1, 3, 7 completes into the concatenation, with ETag md5-of-md5s-3 and the metadata given at creation."""
    key = "mp/gaps.bin"
    parts_data = {1: pattern_bytes(5 * MiB, seed=11), 3: pattern_bytes(5 * MiB, seed=13),
                  7: pattern_bytes(1234, seed=17)}
    up = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="video/mp4",
                                    Metadata={"kind": "multipart"})
    uid = up["UploadId"]
    parts = [_upload(s3, bucket, key, uid, n, d) for n, d in parts_data.items()]

    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in listed] == \
        [(n, len(d), f'"{md5_hex(d)}"') for n, d in parts_data.items()]
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [(key, uid)]

    done = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid,
                                        MultipartUpload={"Parts": parts})
    expected = multipart_etag(parts_data.values())
    assert done["ETag"] == expected
    whole = b"".join(parts_data.values())
    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["ETag"] == expected
    assert got["ContentLength"] == len(whole)
    assert got["ContentType"] == "video/mp4"
    assert got["Metadata"] == {"kind": "multipart"}
    assert got["Body"].read() == whole
    # Ranges across a part boundary work on the assembled object.
    edge = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={5 * MiB - 10}-{5 * MiB + 9}")
    assert edge["Body"].read() == whole[5 * MiB - 10:5 * MiB + 10]
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    expect_error("NoSuchUpload", 404, s3.list_parts, Bucket=bucket, Key=key, UploadId=uid)


def test_upload_part_copy(s3, bucket):
    """UploadPartCopy takes a byte range (or all) of an existing object as a part."""
    src = pattern_bytes(6 * MiB, seed=21)
    small = pattern_bytes(3000, seed=22)
    _put(s3, bucket, "src/big", src)
    _put(s3, bucket, "src/small", small)
    key = "mp/copied"
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    r1 = s3.upload_part_copy(Bucket=bucket, Key=key, UploadId=uid, PartNumber=1,
                             CopySource={"Bucket": bucket, "Key": "src/big"},
                             CopySourceRange=f"bytes=0-{5 * MiB - 1}")
    assert r1["CopyPartResult"]["ETag"] == f'"{md5_hex(src[:5 * MiB])}"'
    fresh = pattern_bytes(5 * MiB, seed=23)
    p2 = _upload(s3, bucket, key, uid, 2, fresh)
    r3 = s3.upload_part_copy(Bucket=bucket, Key=key, UploadId=uid, PartNumber=3,
                             CopySource={"Bucket": bucket, "Key": "src/small"})
    assert r3["CopyPartResult"]["ETag"] == f'"{md5_hex(small)}"'
    parts = [{"PartNumber": 1, "ETag": r1["CopyPartResult"]["ETag"]}, p2,
             {"PartNumber": 3, "ETag": r3["CopyPartResult"]["ETag"]}]
    done = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid,
                                        MultipartUpload={"Parts": parts})
    assert done["ETag"] == multipart_etag([src[:5 * MiB], fresh, small])
    assert _body(s3, bucket, key) == src[:5 * MiB] + fresh + small


def test_complete_with_wrong_part_etag(s3, bucket):
    """CompleteMultipartUpload naming a part with a wrong ETag fails with InvalidPart (400); no object appears."""
    key = "mp/bad-etag"
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    _upload(s3, bucket, key, uid, 1, b"only part")
    expect_error("InvalidPart", 400, s3.complete_multipart_upload, Bucket=bucket, Key=key,
                 UploadId=uid, MultipartUpload={"Parts": [
                     {"PartNumber": 1, "ETag": '"0123456789abcdef0123456789abcdef"'}]})
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=bucket, Key=key)
    # A part number never uploaded is also InvalidPart.
    expect_error("InvalidPart", 400, s3.complete_multipart_upload, Bucket=bucket, Key=key,
                 UploadId=uid, MultipartUpload={"Parts": [
                     {"PartNumber": 2, "ETag": f'"{md5_hex(b"only part")}"'}]})


def test_complete_with_small_non_last_part(s3, bucket):
    """A part smaller than 5 MiB that is not the last one makes Complete fail with EntityTooSmall (400)."""
    key = "mp/small"
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    p1 = _upload(s3, bucket, key, uid, 1, pattern_bytes(1 * MiB, seed=31))
    p2 = _upload(s3, bucket, key, uid, 2, b"tail")
    expect_error("EntityTooSmall", 400, s3.complete_multipart_upload, Bucket=bucket, Key=key,
                 UploadId=uid, MultipartUpload={"Parts": [p1, p2]})
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=bucket, Key=key)


def test_complete_with_parts_out_of_order(s3, bucket):
    """Parts listed in descending order make Complete fail with InvalidPartOrder (400); the upload can still be completed properly."""
    key = "mp/order"
    d1, d2 = pattern_bytes(5 * MiB, seed=41), pattern_bytes(100, seed=42)
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    p1 = _upload(s3, bucket, key, uid, 1, d1)
    p2 = _upload(s3, bucket, key, uid, 2, d2)
    expect_error("InvalidPartOrder", 400, s3.complete_multipart_upload, Bucket=bucket, Key=key,
                 UploadId=uid, MultipartUpload={"Parts": [p2, p1]})
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid,
                                 MultipartUpload={"Parts": [p1, p2]})
    assert _body(s3, bucket, key) == d1 + d2


def test_abort_multipart_upload(s3, bucket):
    """After AbortMultipartUpload the upload is gone: its calls fail with NoSuchUpload (404) and no object exists."""
    key = "mp/aborted"
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    p1 = _upload(s3, bucket, key, uid, 1, b"part data")
    assert _status(s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=uid)) == 204
    expect_error("NoSuchUpload", 404, s3.list_parts, Bucket=bucket, Key=key, UploadId=uid)
    expect_error("NoSuchUpload", 404, s3.upload_part, Bucket=bucket, Key=key, UploadId=uid,
                 PartNumber=2, Body=b"more")
    expect_error("NoSuchUpload", 404, s3.complete_multipart_upload, Bucket=bucket, Key=key,
                 UploadId=uid, MultipartUpload={"Parts": [p1]})
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=bucket, Key=key)
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    expect_error("NoSuchUpload", 404, s3.abort_multipart_upload, Bucket=bucket, Key=key,
                 UploadId="not-an-upload-id")


def test_list_multipart_uploads_and_prefix(s3, bucket):
    """ListMultipartUploads shows in-progress uploads (sorted by key) and honours Prefix."""
    u1 = s3.create_multipart_upload(Bucket=bucket, Key="pics/a.jpg")["UploadId"]
    u2 = s3.create_multipart_upload(Bucket=bucket, Key="docs/b.pdf")["UploadId"]
    r = s3.list_multipart_uploads(Bucket=bucket)
    assert [(u["Key"], u["UploadId"]) for u in r["Uploads"]] == \
        [("docs/b.pdf", u2), ("pics/a.jpg", u1)]
    for u in r["Uploads"]:
        assert abs((u["Initiated"] - _now()).total_seconds()) < 300
    r = s3.list_multipart_uploads(Bucket=bucket, Prefix="pics/")
    assert [u["UploadId"] for u in r["Uploads"]] == [u1]
    # Uploads are not objects.
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_multipart_with_trailer_checksums(server, bucket):
    """Parts sent as aws-chunked with CRC32 trailers (boto3's https default) assemble into the exact bytes."""
    s3t = server.client()
    harness.force_trailer_checksums(s3t)
    key = "mp/trailers"
    d1, d2 = pattern_bytes(5 * MiB, seed=51), pattern_bytes(777 * 1024, seed=52)
    uid = s3t.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32")["UploadId"]
    parts = []
    for n, d in ((1, d1), (2, d2)):
        r = s3t.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=n, Body=d,
                            ChecksumAlgorithm="CRC32")
        assert r["ETag"] == f'"{md5_hex(d)}"'
        assert r["ChecksumCRC32"] == harness.checksum_b64("CRC32", d)
        parts.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumCRC32": r["ChecksumCRC32"]})
    s3t.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid,
                                  MultipartUpload={"Parts": parts})
    assert _body(s3t, bucket, key) == d1 + d2


# ------------------------------------------------------------- integrity ----

def test_wrong_content_md5_is_bad_digest(s3, bucket):
    """A PUT whose Content-MD5 does not match the body fails with BadDigest (400) and stores nothing."""
    expect_error("BadDigest", 400, s3.put_object, Bucket=bucket, Key="md5", Body=b"actual body",
                 ContentMD5=harness.md5_b64(b"another body"))
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=bucket, Key="md5")
    assert s3.put_object(Bucket=bucket, Key="md5", Body=b"actual body",
                         ContentMD5=harness.md5_b64(b"actual body"))["ETag"] == \
        f'"{md5_hex(b"actual body")}"'


ALGOS = ["CRC32", "CRC32C", "SHA1", "SHA256"]


@pytest.fixture
def crc32c_boto(monkeypatch):
    harness.register_py_crc32c(monkeypatch)


@pytest.mark.parametrize("algo", ALGOS)
def test_checksum_stored_and_returned(s3, bucket, algo, crc32c_boto):
    """A PUT with ChecksumAlgorithm stores the checksum; GET/HEAD with ChecksumMode=ENABLED return it."""
    data = pattern_bytes(200 * 1024, seed=61)
    expected = harness.checksum_b64(algo, data)
    put = s3.put_object(Bucket=bucket, Key=f"ck-{algo}", Body=data, ChecksumAlgorithm=algo)
    assert put.get(f"Checksum{algo}") == expected
    head = s3.head_object(Bucket=bucket, Key=f"ck-{algo}", ChecksumMode="ENABLED")
    assert head.get(f"Checksum{algo}") == expected
    got = s3.get_object(Bucket=bucket, Key=f"ck-{algo}", ChecksumMode="ENABLED")
    assert got.get(f"Checksum{algo}") == expected
    assert got["Body"].read() == data


@pytest.mark.parametrize("algo", ALGOS)
def test_checksum_trailer_upload(server, bucket, algo, crc32c_boto):
    """boto3's aws-chunked upload with a checksum trailer stores the decoded bytes (not the framing) and the checksum."""
    s3t = server.client()
    harness.force_trailer_checksums(s3t)
    data = pattern_bytes(MiB + 12345, seed=62)  # two 1 MiB aws-chunks
    key = f"trailer-{algo}"
    put = s3t.put_object(Bucket=bucket, Key=key, Body=data, ChecksumAlgorithm=algo)
    assert put["ETag"] == f'"{md5_hex(data)}"'
    head = s3t.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ContentLength"] == len(data)
    assert head.get(f"Checksum{algo}") == harness.checksum_b64(algo, data)
    assert _body(s3t, bucket, key) == data


def test_wrong_checksum_header_is_bad_digest(s3, bucket):
    """A PUT whose x-amz-checksum-sha256 does not match the body fails with BadDigest (400) and stores nothing."""
    wrong = harness.checksum_b64("SHA256", b"something else")
    expect_error("BadDigest", 400, s3.put_object, Bucket=bucket, Key="sha", Body=b"the body",
                 ChecksumSHA256=wrong)
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=bucket, Key="sha")


def test_wrong_trailer_checksum_is_bad_digest(server, s3, bucket):
    """An aws-chunked upload whose trailing checksum does not match fails with BadDigest (400) and stores nothing."""
    data = pattern_bytes(150 * 1024, seed=63)
    ok = harness.unsigned_trailer_put(server.endpoint, f"/{bucket}/good", data, "CRC32")
    assert ok.status_code == 200, ok.text
    assert _body(s3, bucket, "good") == data
    bad = harness.unsigned_trailer_put(server.endpoint, f"/{bucket}/bad", data, "CRC32",
                                       trailer_value=harness.checksum_b64("CRC32", b"nope"))
    assert bad.status_code == 400, bad.text
    assert harness.error_code(bad) == "BadDigest"
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=bucket, Key="bad")


def test_signed_streaming_upload(server, s3, bucket):
    """A STREAMING-AWS4-HMAC-SHA256-PAYLOAD upload (signed aws-chunked, as older SDKs send) stores the decoded bytes; a forged chunk signature is refused."""
    data = pattern_bytes(300 * 1024 + 7, seed=64)
    ok = harness.streaming_signed_put(server.endpoint, f"/{bucket}/streamed", data)
    assert ok.status_code == 200, ok.text
    assert ok.headers["ETag"] == f'"{md5_hex(data)}"'
    assert _body(s3, bucket, "streamed") == data
    bad = harness.streaming_signed_put(server.endpoint, f"/{bucket}/forged", data, tamper_chunk=2)
    assert bad.status_code == 403, bad.text
    assert harness.error_code(bad) == "SignatureDoesNotMatch"
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=bucket, Key="forged")


# ------------------------------------------------------------- malformed ----

def test_delete_objects_malformed_xml(server, s3, bucket):
    """A DeleteObjects body that is not well-formed XML fails with MalformedXML (400) and deletes nothing."""
    _put(s3, bucket, "k", b"v")
    for body in (b"<Delete><Object><Key>k</Key></Object>", b"this is not xml at all"):
        resp = harness.signed_request(server.endpoint, "POST", f"/{bucket}",
                                      params={"delete": ""}, body=body,
                                      headers={"Content-MD5": harness.md5_b64(body)})
        assert resp.status_code == 400, resp.text
        assert harness.error_code(resp) == "MalformedXML"
    assert _body(s3, bucket, "k") == b"v"


def test_complete_multipart_malformed_xml(server, s3, bucket):
    """A CompleteMultipartUpload body that is not well-formed XML fails with MalformedXML (400); the upload survives."""
    key = "mp/malformed"
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    p1 = _upload(s3, bucket, key, uid, 1, b"part")
    body = b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>"
    resp = harness.signed_request(server.endpoint, "POST", f"/{bucket}/{key}",
                                  params={"uploadId": uid}, body=body)
    assert resp.status_code == 400, resp.text
    assert harness.error_code(resp) == "MalformedXML"
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid,
                                 MultipartUpload={"Parts": [p1]})
    assert _body(s3, bucket, key) == b"part"


# ------------------------------------------------------------ size limit ----

@pytest.mark.pixelport_only
def test_object_over_max_size_is_entity_too_large(backend_daemon, make_daemon):
    """With max_object_size = 1MiB: objects up to 1 MiB are stored, a larger PUT or multipart upload fails with EntityTooLarge and stores nothing."""
    d = make_daemon(backend=backend_daemon.backend, max_object_size="1MiB")
    s3 = d.client()
    b = harness.unique_name("max")
    s3.create_bucket(Bucket=b)
    _put(s3, b, "half", pattern_bytes(MiB // 2, seed=71))
    exact = pattern_bytes(MiB, seed=72)
    _put(s3, b, "exact", exact)
    assert _body(s3, b, "exact") == exact
    expect_error("EntityTooLarge", 400, s3.put_object, Bucket=b, Key="big",
                 Body=pattern_bytes(MiB + 1, seed=73))
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=b, Key="big")

    # Multipart: the oversize must be refused at UploadPart or at Complete.
    uid = s3.create_multipart_upload(Bucket=b, Key="big-mp")["UploadId"]
    data = pattern_bytes(MiB + MiB // 2, seed=74)
    with pytest.raises(ClientError) as ei:
        r = s3.upload_part(Bucket=b, Key="big-mp", UploadId=uid, PartNumber=1, Body=data)
        s3.complete_multipart_upload(Bucket=b, Key="big-mp", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": r["ETag"]}]})
    assert ei.value.response["Error"]["Code"] == "EntityTooLarge"
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=b, Key="big-mp")


def test_multipart_whose_parts_fit_but_whole_does_not_is_entity_too_large(backend_daemon, make_daemon):
    """With max_object_size = 6MiB, two parts of 5 MiB and 2 MiB are each accepted, but Complete refuses the 7 MiB object with EntityTooLarge and the upload stays completable with fewer parts."""
    d = make_daemon(backend=backend_daemon.backend, max_object_size="6MiB")
    s3 = d.client()
    b = harness.unique_name("maxmp")
    s3.create_bucket(Bucket=b)
    uid = s3.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]
    p1 = pattern_bytes(5 * MiB, seed=81)
    r1 = s3.upload_part(Bucket=b, Key="mp", UploadId=uid, PartNumber=1, Body=p1)
    r2 = s3.upload_part(Bucket=b, Key="mp", UploadId=uid, PartNumber=2, Body=pattern_bytes(2 * MiB, seed=82))
    expect_error("EntityTooLarge", 400, s3.complete_multipart_upload, Bucket=b, Key="mp", UploadId=uid,
                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": r1["ETag"]},
                                            {"PartNumber": 2, "ETag": r2["ETag"]}]})
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=b, Key="mp")
    s3.complete_multipart_upload(Bucket=b, Key="mp", UploadId=uid,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": r1["ETag"]}]})
    assert s3.get_object(Bucket=b, Key="mp")["Body"].read() == p1


# ---------------------------------------------------------- remote layout ----

@pytest.mark.pixelport_only
def test_remote_backend_layout(backend_daemon, s3, bucket):
    """On the remote backend, bucket B key K is the cluster object pixelport/B/K, and deleting it removes that object."""
    if backend_daemon.backend != "remote":
        pytest.skip("cluster layout applies to the remote backend only")
    cluster = backend_daemon.cluster_client()
    data = b"stored in the cluster"
    _put(s3, bucket, "dir/sub/k.txt", data)
    got = cluster.get_object(Bucket=harness.CLUSTER_BUCKET, Key=f"{bucket}/dir/sub/k.txt")
    assert got["Body"].read() == data
    assert (backend_daemon.cluster_root / harness.CLUSTER_BUCKET / bucket / "dir/sub/k.txt"
            ).read_bytes() == data
    assert (backend_daemon.cluster_root / harness.CLUSTER_BUCKET / bucket).is_dir()
    s3.delete_object(Bucket=bucket, Key="dir/sub/k.txt")
    expect_error("NoSuchKey", 404, cluster.get_object, Bucket=harness.CLUSTER_BUCKET,
                 Key=f"{bucket}/dir/sub/k.txt")


# ------------------------------------------------------------------ fsck ----

@pytest.mark.pixelport_only
def test_fsck_clean_after_mixed_workload(backend_daemon, make_daemon):
    """After puts, overwrites, deletes, copies and multipart uploads (completed, aborted, pending), a graceful stop leaves a store that fsck finds consistent."""
    if backend_daemon.backend == "remote":
        pytest.skip("fsck checks the embedded store's catalog and blobs; the remote backend keeps neither locally")
    d = make_daemon(backend="embedded")
    s3 = d.client()
    b = harness.unique_name("fsck")
    s3.create_bucket(Bucket=b)
    for i in range(5):
        _put(s3, b, f"obj{i}", pattern_bytes(10_000 + i, seed=80 + i))
    _put(s3, b, "obj0", b"overwritten")
    s3.delete_object(Bucket=b, Key="obj1")
    s3.copy_object(Bucket=b, Key="copy", CopySource={"Bucket": b, "Key": "obj2"})
    s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "obj3"}]})
    uid = s3.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]
    p1 = _upload(s3, b, "mp", uid, 1, pattern_bytes(5 * MiB, seed=90))
    p2 = _upload(s3, b, "mp", uid, 2, b"end")
    s3.complete_multipart_upload(Bucket=b, Key="mp", UploadId=uid,
                                 MultipartUpload={"Parts": [p1, p2]})
    uid2 = s3.create_multipart_upload(Bucket=b, Key="aborted")["UploadId"]
    _upload(s3, b, "aborted", uid2, 1, b"gone")
    s3.abort_multipart_upload(Bucket=b, Key="aborted", UploadId=uid2)
    uid3 = s3.create_multipart_upload(Bucket=b, Key="pending")["UploadId"]
    _upload(s3, b, "pending", uid3, 1, b"waiting")
    live = {o["Key"] for o in s3.list_objects_v2(Bucket=b)["Contents"]}
    assert live == {"obj0", "obj2", "obj4", "copy", "mp"}
    assert d.stop() == 0
    rc, report, out, err = d.fsck()
    assert rc == 0, f"fsck exit {rc}\nstdout:\n{out}\nstderr:\n{err}"
    assert report is not None, out
    assert report["objects"] == len(live)
    assert report["orphan_blobs"] == 0
    assert report["missing_blobs"] == 0
    assert report["blobs"] >= 1


@pytest.mark.pixelport_only
def test_expect_continue_error_closes_the_connection(server):
    """Regression: botocore sends `Expect: 100-continue`, and when the answer is an error
    (here NoSuchBucket) it skips the body and reuses the connection. The server used to
    read the next request's first byte as that body (`ET /...`, a 403). An error answer to
    such a request must close the connection instead."""
    import socket

    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    missing = harness.unique_name("nb")
    url = f"{server.endpoint}/{missing}/k"
    req = AWSRequest(method="PUT", url=url, data=b"x",
                     headers={"Expect": "100-continue", "Content-Length": "1"})
    harness._FixedPayloadAuth(Credentials(harness.ACCESS_KEY, harness.SECRET_KEY), "s3",
                              harness.REGION, "UNSIGNED-PAYLOAD").add_auth(req)
    head = f"PUT /{missing}/k HTTP/1.1\r\nHost: 127.0.0.1:{server.s3_port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in req.prepare().headers.items() if k.lower() != "host")
    with socket.create_connection(("127.0.0.1", server.s3_port), timeout=10) as sock:
        sock.sendall((head + "\r\n").encode())  # headers only, as botocore does
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before a response: {data!r}"
            data += chunk
        status_line, _, rest = data.partition(b"\r\n")
        assert b" 404 " in status_line, data
        assert b"connection: close" in rest.lower(), data
