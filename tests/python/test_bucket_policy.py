"""Bucket policies, PublicAccessBlock and ownership controls (#14 part 2).

Before this, PutBucketPolicy and GetBucketPolicyStatus answered NotImplemented, so the
policies MinIO's `mc anonymous set download|upload|public` writes could not be applied, a
PublicAccessBlock could not be set, and nothing could deny a request. The admin UI's public
toggle and the bucket ACL now write and read the same bucket policy.
"""

from __future__ import annotations

import json

import pytest
import requests
from botocore.exceptions import ClientError

import harness

pytestmark = pytest.mark.pixelport_only

TOKEN = "policy-admin-token-0123456789abcdef"
code = harness.client_error


def mc_policy(bucket: str, kind: str, prefix: str = "") -> dict:
    """What `mc anonymous set KIND alias/bucket[/prefix]` writes (minio-go's policy
    package: common, read-only and write-only bucket and object actions)."""
    bucket_actions = {"download": ["s3:GetBucketLocation", "s3:ListBucket"],
                      "upload": ["s3:GetBucketLocation", "s3:ListBucketMultipartUploads"],
                      "public": ["s3:GetBucketLocation", "s3:ListBucket",
                                 "s3:ListBucketMultipartUploads"]}[kind]
    object_actions = {"download": ["s3:GetObject"],
                      "upload": ["s3:AbortMultipartUpload", "s3:DeleteObject",
                                 "s3:ListMultipartUploadParts", "s3:PutObject"],
                      "public": ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject",
                                 "s3:ListMultipartUploadParts", "s3:PutObject"]}[kind]
    bucket_stmt = {"Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": bucket_actions,
                   "Resource": [f"arn:aws:s3:::{bucket}"]}
    if prefix and "s3:ListBucket" in bucket_actions:
        bucket_stmt["Condition"] = {"StringEquals": {"s3:prefix": [prefix]}}
    return {"Version": "2012-10-17", "Statement": [
        bucket_stmt,
        {"Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": object_actions,
         "Resource": [f"arn:aws:s3:::{bucket}/{prefix}*"]}]}


def anon(d, method: str, path: str, **kw) -> int:
    return requests.request(method, f"{d.endpoint}{path}", timeout=30, **kw).status_code


def admin(d) -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {TOKEN}"
    s.base = d.admin_url
    return s


def admin_bucket(d, name: str) -> dict:
    r = admin(d).get(f"{d.admin_url}/api/buckets", timeout=30)
    return {b["name"]: b for b in r.json()["buckets"]}[name]


@pytest.fixture
def d(tmp_path):
    d = harness.Daemon(tmp_path / "d", admin_config=f'token = "{TOKEN}"\n',
                       public_buckets=["configured"]).start()
    yield d
    d.stop_all()


def test_mc_anonymous_download_upload_public(d, tmp_path):
    c = d.client()
    c.create_bucket(Bucket="downloads")
    c.put_object(Bucket="downloads", Key="a.jpg", Body=b"jpeg")
    assert anon(d, "GET", "/downloads/a.jpg") == 403

    # `mc anonymous set download`, through the aws cli's own command.
    f = tmp_path / "download.json"
    f.write_text(json.dumps(mc_policy("downloads", "download")))
    harness.AwsCli(d.endpoint)("s3api", "put-bucket-policy", "--bucket", "downloads",
                               "--policy", f"file://{f}")
    assert anon(d, "GET", "/downloads/a.jpg") == 200
    assert anon(d, "HEAD", "/downloads/a.jpg") == 200
    assert anon(d, "GET", "/downloads?list-type=2") == 200
    assert anon(d, "GET", "/downloads?location") == 200
    assert anon(d, "PUT", "/downloads/new.jpg", data=b"x") == 403
    assert anon(d, "DELETE", "/downloads/a.jpg") == 403
    assert json.loads(c.get_bucket_policy(Bucket="downloads")["Policy"]) == mc_policy("downloads", "download")
    assert c.get_bucket_policy_status(Bucket="downloads")["PolicyStatus"]["IsPublic"] is True
    assert admin_bucket(d, "downloads")["public"] is True

    # `mc anonymous set upload`: anyone may write and delete, nobody may read.
    c.create_bucket(Bucket="uploads")
    c.put_bucket_policy(Bucket="uploads", Policy=json.dumps(mc_policy("uploads", "upload")))
    assert anon(d, "PUT", "/uploads/dropped.txt", data=b"hello") == 200
    assert c.get_object(Bucket="uploads", Key="dropped.txt")["Body"].read() == b"hello"
    assert anon(d, "GET", "/uploads/dropped.txt") == 403
    assert anon(d, "GET", "/uploads?list-type=2") == 403
    assert admin_bucket(d, "uploads")["public"] is False
    assert admin_bucket(d, "uploads")["policy"] is True
    # A copy needs s3:GetObject on its source too: an upload-only bucket cannot be used
    # to copy a private object out.
    c.create_bucket(Bucket="private")
    c.put_object(Bucket="private", Key="secret", Body=b"s")
    assert anon(d, "PUT", "/uploads/stolen", headers={"x-amz-copy-source": "/private/secret"}) == 403
    assert anon(d, "DELETE", "/uploads/dropped.txt") == 204

    # `mc anonymous set public` on a prefix: reads and writes there, listing only it.
    c.create_bucket(Bucket="pub")
    c.put_bucket_policy(Bucket="pub", Policy=json.dumps(mc_policy("pub", "public", "web/")))
    assert anon(d, "PUT", "/pub/web/x.css", data=b"css") == 200
    assert anon(d, "GET", "/pub/web/x.css") == 200
    assert anon(d, "PUT", "/pub/other/x", data=b"x") == 403
    assert anon(d, "GET", "/pub?list-type=2&prefix=web/") == 200
    assert anon(d, "GET", "/pub?list-type=2") == 403

    # `mc anonymous set none`.
    c.delete_bucket_policy(Bucket="downloads")
    assert anon(d, "GET", "/downloads/a.jpg") == 403
    for call in (lambda: c.get_bucket_policy(Bucket="downloads"),
                 lambda: c.get_bucket_policy_status(Bucket="downloads")):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e.value) == ("NoSuchBucketPolicy", 404)

    # Policies survive a restart.
    d.stop()
    d.restart()
    assert anon(d, "PUT", "/uploads/after-restart", data=b"x") == 200
    assert anon(d, "GET", "/downloads/a.jpg") == 403


def test_deny_conditions_and_principals(d):
    c = d.client()
    c.create_bucket(Bucket="site")
    for k in ("pub/a.jpg", "secret/b.jpg"):
        c.put_object(Bucket="site", Key=k, Body=b"x")
    # A second access key, named as a principal.
    r = admin(d).post(f"{d.admin_url}/api/keys", json={"name": "reader"}, timeout=30)
    assert r.status_code == 201, r.text
    key = r.json()
    other = harness.make_client(d.endpoint, key["access_key"], key["secret_key"])
    policy = {"Version": "2012-10-17", "Statement": [
        # From loopback only, and only with our own site as the Referer.
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": "arn:aws:s3:::site/pub/*",
         "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"},
                       "StringLike": {"aws:Referer": "https://example.com/*"}}},
        # Nobody, signed or not, reads secret/ ... except the root key's policy escape.
        {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
         "Resource": "arn:aws:s3:::site/secret/*"},
        # The second key may not delete anything.
        {"Effect": "Deny", "Principal": {"AWS": [f"arn:aws:iam::000000000000:user/{key['access_key']}"]},
         "Action": "s3:DeleteObject", "Resource": "arn:aws:s3:::site/*"},
    ]}
    c.put_bucket_policy(Bucket="site", Policy=json.dumps(policy))
    ref = {"Referer": "https://example.com/page"}
    assert anon(d, "GET", "/site/pub/a.jpg", headers=ref) == 200
    assert anon(d, "GET", "/site/pub/a.jpg") == 403
    assert anon(d, "GET", "/site/pub/a.jpg", headers={"Referer": "https://evil.test/"}) == 403
    # Pinned to a source range, the policy is not public (AWS's definition).
    assert c.get_bucket_policy_status(Bucket="site")["PolicyStatus"]["IsPublic"] is False
    assert admin_bucket(d, "site")["public"] is False

    for client in (c, other):
        with pytest.raises(ClientError) as e:
            client.get_object(Bucket="site", Key="secret/b.jpg")
        assert code(e.value) == ("AccessDenied", 403)
        assert "policy" in e.value.response["Error"]["Message"]
    assert other.get_object(Bucket="site", Key="pub/a.jpg")["Body"].read() == b"x"
    with pytest.raises(ClientError) as e:
        other.delete_object(Bucket="site", Key="pub/a.jpg")
    assert code(e.value) == ("AccessDenied", 403)
    # DeleteObjects is checked key by key.
    with pytest.raises(ClientError) as e:
        other.delete_objects(Bucket="site", Delete={"Objects": [{"Key": "pub/a.jpg"}]})
    assert code(e.value) == ("AccessDenied", 403)
    assert c.head_object(Bucket="site", Key="pub/a.jpg")["ContentLength"] == 1
    c.delete_objects(Bucket="site", Delete={"Objects": [{"Key": "pub/a.jpg"}]})

    # A Deny on everything cannot lock the owner out of the policy itself.
    lockout = {"Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:*",
                              "Resource": ["arn:aws:s3:::site", "arn:aws:s3:::site/*"]}]}
    c.put_bucket_policy(Bucket="site", Policy=json.dumps(lockout))
    with pytest.raises(ClientError) as e:
        c.list_objects_v2(Bucket="site")
    assert code(e.value) == ("AccessDenied", 403)
    assert json.loads(c.get_bucket_policy(Bucket="site")["Policy"]) == lockout
    c.delete_bucket_policy(Bucket="site")
    assert c.list_objects_v2(Bucket="site")["KeyCount"] == 1


@pytest.mark.parametrize("statement,names", [
    ({"Effect": "Allow", "Principal": "*", "NotAction": "s3:GetObject",
      "Resource": "arn:aws:s3:::strict/*"}, "NotAction"),
    ({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObjekt",
      "Resource": "arn:aws:s3:::strict/*"}, "s3:GetObjekt"),
    ({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
      "Resource": "arn:aws:s3:::another-bucket/*"}, "arn:aws:s3:::another-bucket/*"),
    ({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
      "Resource": "arn:aws:s3:::strict/*",
      "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-123"}}}, "aws:PrincipalOrgID"),
    ({"Effect": "Allow", "Principal": {"Service": "logging.s3.amazonaws.com"},
      "Action": "s3:PutObject", "Resource": "arn:aws:s3:::strict/*"}, "Service"),
    ({"Effect": "Allow", "Principal": "*", "Action": "s3:ListBucket",
      "Resource": "arn:aws:s3:::strict/*"}, "does not apply"),
])
def test_unsupported_policies_are_refused_by_name(d, statement, names):
    c = d.client()
    if "strict" not in [b["Name"] for b in c.list_buckets()["Buckets"]]:
        c.create_bucket(Bucket="strict")
    aws = harness.AwsCli(d.endpoint)
    cp = aws("s3api", "put-bucket-policy", "--bucket", "strict", "--policy",
             json.dumps({"Version": "2012-10-17", "Statement": [statement]}), check=False)
    assert cp.returncode != 0
    assert "MalformedPolicy" in cp.stderr and names in cp.stderr, cp.stderr
    with pytest.raises(ClientError) as e:
        c.get_bucket_policy(Bucket="strict")
    assert code(e.value) == ("NoSuchBucketPolicy", 404)


def test_errors_on_missing_buckets_and_bad_json(d):
    c = d.client()
    for call, want in (
            (lambda: c.put_bucket_policy(Bucket="nope", Policy="{}"), ("NoSuchBucket", 404)),
            (lambda: c.get_bucket_policy(Bucket="nope"), ("NoSuchBucket", 404)),
            (lambda: c.get_public_access_block(Bucket="nope"), ("NoSuchBucket", 404))):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e.value) == want
    c.create_bucket(Bucket="json-bucket")
    for text in ("not json", "[1]", json.dumps({"Statement": []})):
        with pytest.raises(ClientError) as e:
            c.put_bucket_policy(Bucket="json-bucket", Policy=text)
        assert code(e.value) == ("MalformedPolicy", 400)


def test_public_access_block_really_blocks(d):
    c = d.client()
    c.create_bucket(Bucket="blk")
    c.put_object(Bucket="blk", Key="a", Body=b"a", ACL="public-read")
    with pytest.raises(ClientError) as e:
        c.get_public_access_block(Bucket="blk")
    assert code(e.value) == ("NoSuchPublicAccessBlockConfiguration", 404)

    # BlockPublicPolicy: a public policy is refused, the admin toggle too; a policy pinned
    # to a source range is not public and is accepted.
    c.put_public_access_block(Bucket="blk", PublicAccessBlockConfiguration={
        "BlockPublicPolicy": True})
    with pytest.raises(ClientError) as e:
        c.put_bucket_policy(Bucket="blk", Policy=json.dumps(mc_policy("blk", "download")))
    assert code(e.value) == ("AccessDenied", 403)
    r = admin(d).put(f"{d.admin_url}/api/buckets/blk/public", json={"public": True}, timeout=30)
    assert r.status_code == 403 and "BlockPublicPolicy" in r.json()["message"], r.text
    pinned = {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                             "Resource": "arn:aws:s3:::blk/*",
                             "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.1/32"}}}]}
    c.put_bucket_policy(Bucket="blk", Policy=json.dumps(pinned))
    assert c.get_public_access_block(Bucket="blk")["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": False, "IgnorePublicAcls": False,
        "BlockPublicPolicy": True, "RestrictPublicBuckets": False}

    # BlockPublicAcls: public ACLs on uploads and on the bucket are refused.
    c.put_public_access_block(Bucket="blk", PublicAccessBlockConfiguration={
        "BlockPublicAcls": True})
    for call in (lambda: c.put_object(Bucket="blk", Key="b", Body=b"b", ACL="public-read"),
                 lambda: c.put_object_acl(Bucket="blk", Key="a", ACL="public-read"),
                 lambda: c.put_bucket_acl(Bucket="blk", ACL="public-read")):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e.value) == ("AccessDenied", 403)
    c.put_object(Bucket="blk", Key="b", Body=b"b", ACL="private")

    # IgnorePublicAcls: the object's public-read ACL no longer lets anyone in.
    c.delete_bucket_policy(Bucket="blk")
    assert anon(d, "GET", "/blk/a") == 200
    c.put_public_access_block(Bucket="blk", PublicAccessBlockConfiguration={
        "IgnorePublicAcls": True})
    assert anon(d, "GET", "/blk/a") == 403

    # RestrictPublicBuckets: a public policy grants anonymous requests nothing.
    c.delete_public_access_block(Bucket="blk")
    c.put_bucket_policy(Bucket="blk", Policy=json.dumps(mc_policy("blk", "download")))
    c.put_object(Bucket="blk", Key="c", Body=b"c")
    assert anon(d, "GET", "/blk/c") == 200
    c.put_public_access_block(Bucket="blk", PublicAccessBlockConfiguration={
        "RestrictPublicBuckets": True})
    assert anon(d, "GET", "/blk/c") == 403
    assert admin_bucket(d, "blk")["public"] is False
    d.stop()
    d.restart()
    assert anon(d, "GET", "/blk/c") == 403
    c.delete_public_access_block(Bucket="blk")
    assert anon(d, "GET", "/blk/c") == 200


def test_ownership_controls(d):
    c = d.client()
    c.create_bucket(Bucket="own")
    with pytest.raises(ClientError) as e:
        c.get_bucket_ownership_controls(Bucket="own")
    assert code(e.value) == ("OwnershipControlsNotFoundError", 404)
    c.put_object(Bucket="own", Key="a", Body=b"a", ACL="public-read")
    assert anon(d, "GET", "/own/a") == 200
    c.put_bucket_ownership_controls(Bucket="own", OwnershipControls={
        "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})
    assert c.get_bucket_ownership_controls(Bucket="own")["OwnershipControls"] == {
        "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    # ACLs are disabled: the old public-read ACL grants nothing, new ones are refused, and
    # bucket-owner-full-control (what many tools send) is accepted.
    assert anon(d, "GET", "/own/a") == 403
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket="own", Key="b", Body=b"b", ACL="public-read")
    assert code(e.value) == ("AccessControlListNotSupported", 400)
    c.put_object(Bucket="own", Key="b", Body=b"b", ACL="bucket-owner-full-control")
    c.put_bucket_ownership_controls(Bucket="own", OwnershipControls={
        "Rules": [{"ObjectOwnership": "ObjectWriter"}]})
    assert anon(d, "GET", "/own/a") == 200
    c.delete_bucket_ownership_controls(Bucket="own")
    with pytest.raises(ClientError) as e:
        c.get_bucket_ownership_controls(Bucket="own")
    assert code(e.value) == ("OwnershipControlsNotFoundError", 404)

    # CreateBucket's x-amz-object-ownership, and the combination AWS refuses.
    c.create_bucket(Bucket="enforced", ObjectOwnership="BucketOwnerEnforced")
    assert c.get_bucket_ownership_controls(Bucket="enforced")["OwnershipControls"]["Rules"][0][
        "ObjectOwnership"] == "BucketOwnerEnforced"
    with pytest.raises(ClientError) as e:
        c.create_bucket(Bucket="both", ObjectOwnership="BucketOwnerEnforced", ACL="public-read")
    assert code(e.value) == ("InvalidBucketAclWithObjectOwnership", 400)


def test_toggle_acl_config_and_policy_are_one_truth(d):
    c = d.client()
    api = admin(d)
    # `[s3] public_buckets` is the public-read policy.
    c.create_bucket(Bucket="configured")
    c.put_object(Bucket="configured", Key="k", Body=b"v")
    assert anon(d, "GET", "/configured/k") == 200
    doc = json.loads(c.get_bucket_policy(Bucket="configured")["Policy"])
    assert {s["Sid"] for s in doc["Statement"]} == {"PixelportPublicList", "PixelportPublicRead"}
    # Deleting that policy makes the bucket private, and the choice outlives a restart
    # (the configuration no longer applies to it).
    c.delete_bucket_policy(Bucket="configured")
    assert anon(d, "GET", "/configured/k") == 403

    # The toggle adds the public-read statements beside a custom policy's own, and
    # removes only the statements that grant anyone anything.
    c.create_bucket(Bucket="mixed")
    c.put_object(Bucket="mixed", Key="k", Body=b"v")
    deny = {"Sid": "NoDeletes", "Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject",
            "Resource": "arn:aws:s3:::mixed/*"}
    c.put_bucket_policy(Bucket="mixed", Policy=json.dumps({"Statement": [deny]}))
    r = api.put(f"{d.admin_url}/api/buckets/mixed/public", json={"public": True}, timeout=30)
    assert r.status_code == 200 and r.json()["public"] is True, r.text
    assert anon(d, "GET", "/mixed/k") == 200
    statements = json.loads(c.get_bucket_policy(Bucket="mixed")["Policy"])["Statement"]
    assert deny in statements and len(statements) == 3
    assert public_acl(c.get_bucket_acl(Bucket="mixed"))
    c.put_bucket_acl(Bucket="mixed", ACL="private")
    assert anon(d, "GET", "/mixed/k") == 403
    assert json.loads(c.get_bucket_policy(Bucket="mixed")["Policy"])["Statement"] == [deny]
    assert admin_bucket(d, "mixed")["public"] is False
    with pytest.raises(ClientError) as e:
        c.delete_object(Bucket="mixed", Key="k")
    assert code(e.value) == ("AccessDenied", 403)

    d.stop()
    d.restart()
    assert anon(d, "GET", "/configured/k") == 403
    assert json.loads(c.get_bucket_policy(Bucket="mixed")["Policy"])["Statement"] == [deny]

    # A deleted bucket forgets its policy; a configured name is public again.
    c.delete_bucket_policy(Bucket="mixed")
    c.delete_object(Bucket="mixed", Key="k")
    c.delete_bucket(Bucket="mixed")
    c.create_bucket(Bucket="mixed")
    with pytest.raises(ClientError) as e:
        c.get_bucket_policy(Bucket="mixed")
    assert code(e.value) == ("NoSuchBucketPolicy", 404)
    c.delete_object(Bucket="configured", Key="k")
    c.delete_bucket(Bucket="configured")
    c.create_bucket(Bucket="configured")
    assert c.get_bucket_policy_status(Bucket="configured")["PolicyStatus"]["IsPublic"] is True


def public_acl(acl: dict) -> bool:
    return any(g["Grantee"].get("URI") == "http://acs.amazonaws.com/groups/global/AllUsers"
               for g in acl["Grants"])


def test_both_stores(backend_daemon):
    """Policies, blocks and ownership live in Pixelport's catalog: both stores have them."""
    c = backend_daemon.client()
    bucket = harness.unique_name("pol")
    c.create_bucket(Bucket=bucket)
    c.put_object(Bucket=bucket, Key="k", Body=b"v")
    assert anon(backend_daemon, "GET", f"/{bucket}/k") == 403
    c.put_bucket_policy(Bucket=bucket, Policy=json.dumps(mc_policy(bucket, "public")))
    assert anon(backend_daemon, "GET", f"/{bucket}/k") == 200
    assert anon(backend_daemon, "PUT", f"/{bucket}/anon", data=b"a") == 200
    c.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "RestrictPublicBuckets": True})
    assert anon(backend_daemon, "GET", f"/{bucket}/k") == 403
    c.delete_public_access_block(Bucket=bucket)
    c.delete_bucket_policy(Bucket=bucket)
    assert anon(backend_daemon, "GET", f"/{bucket}/anon") == 403
