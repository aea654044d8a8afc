"""Scoped access keys (#14 part 7): a key may carry a policy, and is then refused outside it.

Before this, every access key created in the admin UI was as powerful as the root key: an
upload key handed to a website could read, list and delete every bucket.
"""

from __future__ import annotations

import json

import pytest
import requests

import harness

pytestmark = pytest.mark.pixelport_only

TOKEN = "scoped-admin-token-0123456789abcdef"


@pytest.fixture
def d(tmp_path):
    d = harness.Daemon(tmp_path / "d", admin_config=f'token = "{TOKEN}"\n').start()
    yield d
    d.stop_all()


def api(d, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, f"{d.admin_url}{path}", timeout=30,
                            headers={"Authorization": f"Bearer {TOKEN}"}, **kw)


def new_key(d, policy) -> harness.AwsCli:
    r = api(d, "POST", "/api/keys", json={"name": "scoped", "policy": policy})
    assert r.status_code == 201, r.text
    k = r.json()
    cli = harness.AwsCli(d.endpoint, k["access_key"], k["secret_key"])
    cli.access_key = k["access_key"]
    return cli


def denied(cp) -> bool:
    """The cli failed with AccessDenied (a HEAD answer has no body: just its 403)."""
    return cp.returncode != 0 and ("AccessDenied" in cp.stderr or "(403)" in cp.stderr)


def test_common_shapes_through_the_aws_cli(d, tmp_path):
    root = harness.AwsCli(d.endpoint)
    for b in ("site", "other"):
        root("s3", "mb", f"s3://{b}")
    f = tmp_path / "f.txt"
    f.write_text("hello")
    root("s3", "cp", str(f), "s3://site/a.txt")
    root("s3", "cp", str(f), "s3://other/b.txt")

    ro = new_key(d, {"shape": "read-only", "bucket": "site"})
    assert "a.txt" in ro("s3", "ls", "s3://site/").stdout
    assert ro("s3", "cp", "s3://site/a.txt", "-").stdout == "hello"
    assert denied(ro("s3", "cp", str(f), "s3://site/new.txt", check=False))
    assert denied(ro("s3", "rm", "s3://site/a.txt", check=False))
    assert denied(ro("s3", "ls", "s3://other/", check=False))
    assert denied(ro("s3", "cp", "s3://other/b.txt", "-", check=False))
    assert denied(ro("s3", "ls", check=False))  # ListBuckets needs s3:ListAllMyBuckets
    assert denied(ro("s3", "mb", "s3://mine", check=False))

    up = new_key(d, {"shape": "write-only", "bucket": "site", "prefix": "uploads/"})
    up("s3", "cp", str(f), "s3://site/uploads/u.txt")
    big = tmp_path / "big.bin"
    big.write_bytes(harness.pattern_bytes(9 * 1024 * 1024))
    up("s3", "cp", str(big), "s3://site/uploads/big.bin")  # multipart
    assert root("s3api", "head-object", "--bucket", "site", "--key", "uploads/big.bin").returncode == 0
    assert denied(up("s3", "cp", str(f), "s3://site/elsewhere.txt", check=False))
    assert denied(up("s3", "cp", "s3://site/uploads/u.txt", "-", check=False))
    assert denied(up("s3", "ls", "s3://site/uploads/", check=False))
    assert denied(up("s3", "rm", "s3://site/uploads/u.txt", check=False))

    full = new_key(d, {"shape": "full", "bucket": "site"})
    full("s3", "cp", str(f), "s3://site/full.txt")
    full("s3", "rm", "s3://site/full.txt")
    full("s3api", "put-bucket-tagging", "--bucket", "site",
         "--tagging", "TagSet=[{Key=team,Value=web}]")
    assert denied(full("s3", "ls", "s3://other/", check=False))
    assert denied(full("s3", "rb", "s3://other", check=False))
    assert root("s3", "ls", "s3://other/").stdout.count("b.txt") == 1


def test_policy_changes_apply_to_the_next_request_and_survive_restart(d, tmp_path):
    c = d.client()
    c.create_bucket(Bucket="site")
    c.put_object(Bucket="site", Key="a.txt", Body=b"a")
    k = new_key(d, {"shape": "read-only", "bucket": "site"})
    assert k("s3", "cp", "s3://site/a.txt", "-").stdout == "a"

    # A custom document: reads under pub/ only, and an explicit Deny that wins.
    doc = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
         "Resource": "arn:aws:s3:::site/pub/*"},
        {"Effect": "Deny", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::site/pub/locked/*"}]}
    r = api(d, "PUT", f"/api/keys/{k.access_key}/policy", json={"policy": doc})
    assert r.status_code == 200, r.text
    assert denied(k("s3", "cp", "s3://site/a.txt", "-", check=False))
    f = tmp_path / "f"
    f.write_text("x")
    k("s3", "cp", str(f), "s3://site/pub/x")
    assert denied(k("s3", "cp", str(f), "s3://site/pub/locked/x", check=False))
    listed = {x["access_key"]: x for x in api(d, "GET", "/api/keys").json()["keys"]}
    assert listed[k.access_key]["policy"] == doc

    d.stop()
    d.restart()
    assert denied(k("s3", "cp", "s3://site/a.txt", "-", check=False))
    assert k("s3", "cp", "s3://site/pub/x", "-").stdout == "x"

    # A bucket policy naming the key grants it more (AWS: the union within one account).
    c.put_bucket_policy(Bucket="site", Policy=json.dumps({"Statement": [
        {"Effect": "Allow", "Principal": {"AWS": [k.access_key]}, "Action": "s3:GetObject",
         "Resource": "arn:aws:s3:::site/a.txt"}]}))
    assert k("s3", "cp", "s3://site/a.txt", "-").stdout == "a"
    # A scoped key is not exempt from the policy calls: it may not rewrite the policy.
    assert denied(k("s3api", "delete-bucket-policy", "--bucket", "site", check=False))

    # Back to full access.
    assert api(d, "PUT", f"/api/keys/{k.access_key}/policy", json={"policy": None}).status_code == 200
    k("s3", "cp", str(f), "s3://site/anything")


def test_bad_policies_and_keys_are_refused(d):
    for body, want in (
            ({"shape": "read-only", "bucket": "NO"}, "bucket"),
            ({"shape": "admin", "bucket": "site"}, "unknown key shape"),
            ({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                             "Resource": "*"}]}, "names no Principal"),
            ({"Statement": [{"Effect": "Allow", "NotAction": "s3:GetObject",
                             "Resource": "*"}]}, "NotAction"),
            ("{not json", "not valid JSON")):
        r = api(d, "POST", "/api/keys", json={"name": "bad", "policy": body})
        assert r.status_code == 400 and want in r.json()["message"], (body, r.text)
    r = api(d, "PUT", f"/api/keys/{harness.ACCESS_KEY}/policy",
            json={"policy": {"shape": "full", "bucket": "site"}})
    assert r.status_code == 400
    r = api(d, "PUT", "/api/keys/NOSUCHKEY/policy", json={"policy": None})
    assert r.status_code == 404


def test_objects_and_buckets_record_the_key_that_made_them(d):
    """Before this, every ACL and listing answered the one owner `pixelport`, whichever key
    had written the object, and CreateBucket on another key's bucket said it was yours."""
    root = harness.AwsCli(d.endpoint)
    root("s3", "mb", "s3://shared")
    maker = new_key(d, {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*",
                       "Resource": ["arn:aws:s3:::shared", "arn:aws:s3:::shared/*",
                                    "arn:aws:s3:::made-by-key", "arn:aws:s3:::made-by-key/*"]}]})
    me = maker.access_key
    ok = maker("s3api", "put-object", "--bucket", "shared", "--key", "by-key.txt", check=False)
    assert ok.returncode == 0, ok.stderr
    root("s3api", "put-object", "--bucket", "shared", "--key", "by-root.txt")

    def acl_owner(cli, *args):
        return json.loads(cli("s3api", *args).stdout)["Owner"]["ID"]

    assert acl_owner(root, "get-object-acl", "--bucket", "shared", "--key", "by-key.txt") == me
    assert acl_owner(root, "get-object-acl", "--bucket", "shared",
                     "--key", "by-root.txt") == "pixelport"
    grants = json.loads(root("s3api", "get-object-acl", "--bucket", "shared",
                             "--key", "by-key.txt").stdout)["Grants"]
    assert grants[0]["Grantee"]["ID"] == me and grants[0]["Permission"] == "FULL_CONTROL"
    listed = json.loads(root("s3api", "list-objects-v2", "--bucket", "shared",
                             "--fetch-owner").stdout)["Contents"]
    assert {o["Key"]: o["Owner"]["ID"] for o in listed} == {
        "by-key.txt": me, "by-root.txt": "pixelport"}
    # The owner may hand its own ACL back (FULL_CONTROL to itself), as `aws s3api` users do.
    maker("s3api", "put-object-acl", "--bucket", "shared", "--key", "by-key.txt",
          "--grant-full-control", f"id={me}")

    # A bucket the key made is its own: "already owned by you" to it, "exists" to others.
    maker("s3api", "create-bucket", "--bucket", "made-by-key")
    assert acl_owner(root, "get-bucket-acl", "--bucket", "made-by-key") == me
    again = maker("s3api", "create-bucket", "--bucket", "made-by-key", check=False)
    assert "BucketAlreadyOwnedByYou" in again.stderr, again.stderr
    taken = root("s3api", "create-bucket", "--bucket", "made-by-key", check=False)
    assert "BucketAlreadyExists" in taken.stderr, taken.stderr
    mine = root("s3api", "create-bucket", "--bucket", "shared", check=False)
    assert "BucketAlreadyOwnedByYou" in mine.stderr, mine.stderr
