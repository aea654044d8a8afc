"""ACLs, the standard way tutorials make things public: canned ACLs on CreateBucket,
PutObject (`aws s3 cp --acl public-read`), CopyObject and multipart; Get/PutBucketAcl and
Get/PutObjectAcl. A bucket's ACL and the admin UI's public toggle are one choice.

Before this, `aws s3 cp --acl public-read` stored a private object (the header was
ignored), and every ACL call answered NotImplemented.
"""

from __future__ import annotations

import pytest
import requests
from botocore.exceptions import ClientError

import harness

pytestmark = pytest.mark.pixelport_only

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
TOKEN = "acl-admin-token-0123456789abcdef"


code = harness.client_error


def public_in(acl: dict) -> bool:
    return any(g["Grantee"].get("URI") == ALL_USERS and g["Permission"] == "READ"
               for g in acl["Grants"])


def anon(d, path: str) -> int:
    return requests.get(f"{d.endpoint}{path}", timeout=30).status_code


@pytest.fixture
def d(tmp_path):
    d = harness.Daemon(tmp_path / "d", admin_config=f'token = "{TOKEN}"\n').start()
    yield d
    d.stop_all()


def test_object_acls_and_aws_cli_acl_public_read(d, tmp_path):
    c = d.client()
    aws = harness.AwsCli(d.endpoint)
    aws("s3", "mb", "s3://site")
    f = tmp_path / "logo.png"
    f.write_bytes(b"\x89PNG fake")
    aws("s3", "cp", str(f), "s3://site/logo.png", "--acl", "public-read")
    aws("s3", "cp", str(f), "s3://site/private.png")
    assert anon(d, "/site/logo.png") == 200
    assert anon(d, "/site/private.png") == 403
    assert anon(d, "/site/none.png") == 403
    assert public_in(c.get_object_acl(Bucket="site", Key="logo.png"))
    acl = c.get_object_acl(Bucket="site", Key="private.png")
    assert not public_in(acl)
    assert acl["Owner"]["ID"] == "pixelport"
    assert acl["Grants"][0]["Permission"] == "FULL_CONTROL"

    # PutObjectAcl both ways; the bucket stays private, listing stays signed-only.
    c.put_object_acl(Bucket="site", Key="private.png", ACL="public-read")
    assert anon(d, "/site/private.png") == 200
    c.put_object_acl(Bucket="site", Key="logo.png", ACL="private")
    assert anon(d, "/site/logo.png") == 403
    assert anon(d, "/site") == 403
    # An ACL body with the owner and AllUsers READ, as `put-object-acl --access-control-policy`.
    acl = c.get_object_acl(Bucket="site", Key="logo.png")
    acl["Grants"].append({"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"})
    c.put_object_acl(Bucket="site", Key="logo.png",
                     AccessControlPolicy={"Grants": acl["Grants"], "Owner": acl["Owner"]})
    assert anon(d, "/site/logo.png") == 200
    # Grant headers: READ to AllUsers.
    c.put_object_acl(Bucket="site", Key="private.png", ACL="private")
    c.put_object_acl(Bucket="site", Key="private.png", GrantRead=f'uri="{ALL_USERS}"')
    assert anon(d, "/site/private.png") == 200

    # A copy and a multipart upload take the request's ACL, never the source's.
    c.copy_object(Bucket="site", Key="copy.png", CopySource={"Bucket": "site", "Key": "logo.png"})
    assert anon(d, "/site/copy.png") == 403
    c.copy_object(Bucket="site", Key="copy2.png", ACL="public-read",
                  CopySource={"Bucket": "site", "Key": "copy.png"})
    assert anon(d, "/site/copy2.png") == 200
    up = c.create_multipart_upload(Bucket="site", Key="mp.bin", ACL="public-read")
    p = c.upload_part(Bucket="site", Key="mp.bin", UploadId=up["UploadId"], PartNumber=1, Body=b"m")
    c.complete_multipart_upload(Bucket="site", Key="mp.bin", UploadId=up["UploadId"],
                                MultipartUpload={"Parts": [{"ETag": p["ETag"], "PartNumber": 1}]})
    assert anon(d, "/site/mp.bin") == 200
    # Overwriting an object resets its ACL to the new request's.
    c.put_object(Bucket="site", Key="mp.bin", Body=b"again")
    assert anon(d, "/site/mp.bin") == 403

    # What Pixelport cannot grant is refused, never ignored.
    for call in (lambda: c.put_object(Bucket="site", Key="x", Body=b"x", ACL="public-read-write"),
                 lambda: c.put_object_acl(Bucket="site", Key="logo.png", ACL="authenticated-read"),
                 lambda: c.put_object_acl(Bucket="site", Key="logo.png",
                                          GrantRead='id="someone-else"')):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e.value) == ("NotImplemented", 501), e.value.response["Error"]
    with pytest.raises(ClientError):
        c.head_object(Bucket="site", Key="x")
    with pytest.raises(ClientError) as e:
        c.put_object_acl(Bucket="site", Key="missing", ACL="public-read")
    assert code(e.value) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as e:
        c.put_object_acl(Bucket="site", Key="logo.png", ACL="public-read",
                         GrantRead=f'uri="{ALL_USERS}"')
    assert code(e.value) == ("InvalidRequest", 400)


def test_bucket_acl_is_the_admin_toggle(d):
    c = d.client()
    c.create_bucket(Bucket="open", ACL="public-read")
    c.put_object(Bucket="open", Key="a.txt", Body=b"a")
    assert anon(d, "/open/a.txt") == 200
    assert anon(d, "/open") == 200  # ListObjects, as a public-read bucket allows
    assert public_in(c.get_bucket_acl(Bucket="open"))

    admin = requests.Session()
    admin.headers["Authorization"] = f"Bearer {TOKEN}"
    buckets = {b["name"]: b for b in admin.get(f"{d.admin_url}/api/buckets", timeout=30)
               .json()["buckets"]}
    assert buckets["open"]["public"] is True

    c.put_bucket_acl(Bucket="open", ACL="private")
    assert anon(d, "/open/a.txt") == 403
    buckets = {b["name"]: b for b in admin.get(f"{d.admin_url}/api/buckets", timeout=30)
               .json()["buckets"]}
    assert buckets["open"]["public"] is False
    # The toggle's choice is what GetBucketAcl reads.
    assert admin.put(f"{d.admin_url}/api/buckets/open/public", json={"public": True},
                     timeout=30).status_code == 200
    assert public_in(c.get_bucket_acl(Bucket="open"))

    # Survives a restart.
    d.stop()
    d.restart()
    assert anon(d, "/open/a.txt") == 200

    for call, want in (
            (lambda: c.put_bucket_acl(Bucket="open", ACL="public-read-write"),
             ("NotImplemented", 501)),
            (lambda: c.create_bucket(Bucket="rw-bucket", ACL="authenticated-read"),
             ("NotImplemented", 501)),
            (lambda: c.get_bucket_acl(Bucket="no-such-bucket-acl"), ("NoSuchBucket", 404))):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e.value) == want, e.value.response["Error"]
    with pytest.raises(ClientError):
        c.head_bucket(Bucket="rw-bucket")  # refused before anything was created


def test_both_stores(backend_daemon):
    """Bucket ACLs live in Pixelport's catalog, so both stores have them; object ACLs need
    the embedded catalog, and the remote store refuses them with the reason."""
    c = backend_daemon.client()
    bucket = harness.unique_name("acl")
    c.create_bucket(Bucket=bucket)
    c.put_object(Bucket=bucket, Key="k", Body=b"v")
    assert not public_in(c.get_bucket_acl(Bucket=bucket))
    c.put_bucket_acl(Bucket=bucket, ACL="public-read")
    assert anon(backend_daemon, f"/{bucket}/k") == 200
    c.put_bucket_acl(Bucket=bucket, ACL="private")
    assert anon(backend_daemon, f"/{bucket}/k") == 403
    if backend_daemon.backend == "remote":
        with pytest.raises(ClientError) as e:
            c.put_object(Bucket=bucket, Key="p", Body=b"v", ACL="public-read")
        assert code(e.value) == ("NotImplemented", 501)
        assert "remote store" in e.value.response["Error"]["Message"]
        # A private object ACL is what the remote store has: accepted.
        c.put_object(Bucket=bucket, Key="q", Body=b"v", ACL="private")
    else:
        c.put_object(Bucket=bucket, Key="p", Body=b"v", ACL="public-read")
        assert anon(backend_daemon, f"/{bucket}/p") == 200
