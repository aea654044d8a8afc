"""Server-side encryption is not implemented yet (#14 part 5), and says so.

Before this, `aws s3 cp --sse AES256` and `--sse-c` succeeded: the header was ignored and
the object was stored unencrypted while the client believed otherwise. Now such requests
are refused with NotImplemented and nothing is stored, as MinIO without a KMS refuses them.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from botocore.exceptions import ClientError

import harness

pytestmark = pytest.mark.pixelport_only


def test_sse_requests_are_refused_not_ignored(backend_daemon, tmp_path):
    c = backend_daemon.client()
    b = harness.unique_name("sse")
    c.create_bucket(Bucket=b)
    f = tmp_path / "secret.txt"
    f.write_text("plaintext")
    aws = harness.AwsCli(backend_daemon.endpoint)
    for extra in (["--sse", "AES256"],
                  ["--sse-c", "AES256", "--sse-c-key", "k" * 32]):
        cp = aws("s3", "cp", str(f), f"s3://{b}/secret.txt", *extra, check=False)
        assert cp.returncode != 0 and "NotImplemented" in cp.stderr, cp.stderr
        assert "unencrypted" in cp.stderr
    assert c.list_objects_v2(Bucket=b).get("KeyCount", 0) == 0

    key = b"0" * 32
    sse_c = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key.decode(),
             "SSECustomerKeyMD5": base64.b64encode(hashlib.md5(key).digest()).decode()}
    c.put_object(Bucket=b, Key="plain", Body=b"p")
    for call in (lambda: c.put_object(Bucket=b, Key="k", Body=b"x", ServerSideEncryption="AES256"),
                 lambda: c.create_multipart_upload(Bucket=b, Key="k", ServerSideEncryption="AES256"),
                 lambda: c.copy_object(Bucket=b, Key="k", CopySource={"Bucket": b, "Key": "plain"},
                                       ServerSideEncryption="AES256"),
                 lambda: c.put_object(Bucket=b, Key="k", Body=b"x", **sse_c)):
        with pytest.raises(ClientError) as e:
            call()
        assert harness.client_error(e.value) == ("NotImplemented", 501)
    assert [o["Key"] for o in c.list_objects_v2(Bucket=b)["Contents"]] == ["plain"]
