"""The multipart checksum type (#14 part 8): a multipart upload that names a checksum
algorithm gets S3's COMPOSITE checksum (the algorithm over its parts' checksums, `-N`),
reported by CompleteMultipartUpload, HeadObject and GetObject in checksum mode, and
GetObjectAttributes, each with its ChecksumType; a single PUT's checksum is FULL_OBJECT.

Before this, a multipart object carried no checksum at all and no ChecksumType was
reported, so `aws s3api head-object --checksum-mode ENABLED` showed nothing for it.
FULL_OBJECT (the CRC of the whole body, combined from the parts' CRCs) followed.
"""

from __future__ import annotations

import base64
import zlib

import pytest
from botocore.exceptions import ClientError

import harness

pytestmark = pytest.mark.pixelport_only

PART = 5 * 1024 * 1024


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def test_multipart_objects_carry_a_composite_checksum(daemon):
    c = daemon.client()
    b = harness.unique_name("ck")
    c.create_bucket(Bucket=b)
    parts_data = [harness.pattern_bytes(PART, 1), harness.pattern_bytes(1234, 2)]
    up = c.create_multipart_upload(Bucket=b, Key="big.bin", ChecksumAlgorithm="CRC32")
    assert up["ChecksumType"] == "COMPOSITE"
    parts = []
    for n, data in enumerate(parts_data, 1):
        r = c.upload_part(Bucket=b, Key="big.bin", UploadId=up["UploadId"], PartNumber=n,
                          Body=data, ChecksumAlgorithm="CRC32")
        assert r["ChecksumCRC32"] == crc32_b64(data)
        parts.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumCRC32": r["ChecksumCRC32"]})
    done = c.complete_multipart_upload(Bucket=b, Key="big.bin", UploadId=up["UploadId"],
                                       MultipartUpload={"Parts": parts})
    # S3's definition, computed here independently.
    joined = b"".join(zlib.crc32(d).to_bytes(4, "big") for d in parts_data)
    want = f"{crc32_b64(joined)}-2"
    assert done["ChecksumCRC32"] == want and done["ChecksumType"] == "COMPOSITE", done

    head = c.head_object(Bucket=b, Key="big.bin", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == want and head["ChecksumType"] == "COMPOSITE"
    got = c.get_object(Bucket=b, Key="big.bin", ChecksumMode="ENABLED")
    assert got["ChecksumType"] == "COMPOSITE"
    assert got["Body"].read() == b"".join(parts_data)
    attrs = c.get_object_attributes(Bucket=b, Key="big.bin", ObjectAttributes=["Checksum"])
    assert attrs["Checksum"] == {"ChecksumCRC32": want, "ChecksumType": "COMPOSITE"}

    # A single PUT's checksum is of the whole object.
    c.put_object(Bucket=b, Key="one", Body=b"one", ChecksumAlgorithm="SHA256")
    assert c.head_object(Bucket=b, Key="one", ChecksumMode="ENABLED")["ChecksumType"] == \
        "FULL_OBJECT"
    # Without an algorithm, a multipart object has no checksum to report.
    up = c.create_multipart_upload(Bucket=b, Key="plain.bin")
    assert "ChecksumType" not in up
    r = c.upload_part(Bucket=b, Key="plain.bin", UploadId=up["UploadId"], PartNumber=1, Body=b"x")
    done = c.complete_multipart_upload(Bucket=b, Key="plain.bin", UploadId=up["UploadId"],
                                       MultipartUpload={"Parts": [{"PartNumber": 1,
                                                                   "ETag": r["ETag"]}]})
    assert "ChecksumType" not in done


def test_full_object_multipart_checksums_are_the_crc_of_the_whole_body(daemon):
    """Before this, x-amz-checksum-type FULL_OBJECT was refused with NotImplemented (the
    AWS SDKs' default for CRC64NVME), so such uploads could not be made at all. CRC32C and
    CRC64NVME combine the same way (unit tests in `store::spool` and `store::crc_combine`);
    boto3 needs awscrt to send those, so this test speaks CRC32, checked with zlib."""
    c = daemon.client()
    b = harness.unique_name("ckf")
    c.create_bucket(Bucket=b)
    parts_data = [harness.pattern_bytes(PART, 1), harness.pattern_bytes(PART + 3, 2),
                  harness.pattern_bytes(777, 3)]
    up = c.create_multipart_upload(Bucket=b, Key="k", ChecksumAlgorithm="CRC32",
                                   ChecksumType="FULL_OBJECT")
    assert up["ChecksumType"] == "FULL_OBJECT"
    parts = []
    for n, data in enumerate(parts_data, 1):
        r = c.upload_part(Bucket=b, Key="k", UploadId=up["UploadId"], PartNumber=n, Body=data,
                          ChecksumAlgorithm="CRC32")
        parts.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumCRC32": r["ChecksumCRC32"]})
    done = c.complete_multipart_upload(Bucket=b, Key="k", UploadId=up["UploadId"],
                                       MultipartUpload={"Parts": parts})
    whole = b"".join(parts_data)
    want = crc32_b64(whole)
    assert done["ChecksumCRC32"] == want and done["ChecksumType"] == "FULL_OBJECT", done
    # An upload completed with a wrong whole-object CRC is refused with BadDigest and stays
    # open, then completes with the right one.
    up = c.create_multipart_upload(Bucket=b, Key="k2", ChecksumAlgorithm="CRC32",
                                   ChecksumType="FULL_OBJECT")
    r = c.upload_part(Bucket=b, Key="k2", UploadId=up["UploadId"], PartNumber=1, Body=b"tail",
                      ChecksumAlgorithm="CRC32")
    one = [{"PartNumber": 1, "ETag": r["ETag"], "ChecksumCRC32": r["ChecksumCRC32"]}]
    with pytest.raises(ClientError) as e:
        c.complete_multipart_upload(Bucket=b, Key="k2", UploadId=up["UploadId"],
                                    MultipartUpload={"Parts": one},
                                    ChecksumCRC32=crc32_b64(b"other"))
    assert harness.client_error(e.value) == ("BadDigest", 400)
    assert c.list_parts(Bucket=b, Key="k2", UploadId=up["UploadId"])["Parts"]
    c.complete_multipart_upload(Bucket=b, Key="k2", UploadId=up["UploadId"],
                                MultipartUpload={"Parts": one}, ChecksumCRC32=crc32_b64(b"tail"))
    head = c.head_object(Bucket=b, Key="k", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == want and head["ChecksumType"] == "FULL_OBJECT"
    attrs = c.get_object_attributes(Bucket=b, Key="k", ObjectAttributes=["Checksum"])
    assert attrs["Checksum"] == {"ChecksumCRC32": want, "ChecksumType": "FULL_OBJECT"}
    assert c.get_object(Bucket=b, Key="k")["Body"].read() == whole


def test_checksum_types_s3_refuses(daemon):
    c = daemon.client()
    b = harness.unique_name("ckr")
    c.create_bucket(Bucket=b)
    for kw in ({"ChecksumAlgorithm": "SHA256", "ChecksumType": "FULL_OBJECT"},
               {"ChecksumAlgorithm": "CRC64NVME", "ChecksumType": "COMPOSITE"},
               {"ChecksumType": "FULL_OBJECT"}):
        with pytest.raises(ClientError) as e:
            c.create_multipart_upload(Bucket=b, Key="k", **kw)
        assert harness.client_error(e.value) == ("InvalidRequest", 400), kw
    # CRC64NVME without a type is FULL_OBJECT, as on S3.
    up = c.create_multipart_upload(Bucket=b, Key="k", ChecksumAlgorithm="CRC64NVME")
    assert up["ChecksumType"] == "FULL_OBJECT"


def test_the_remote_store_refuses_full_object_checksums_with_its_reason(make_daemon):
    d = make_daemon(backend="remote")
    c = d.client()
    b = harness.unique_name("ckremote")
    c.create_bucket(Bucket=b)
    with pytest.raises(ClientError) as e:
        c.create_multipart_upload(Bucket=b, Key="k", ChecksumAlgorithm="CRC32",
                                  ChecksumType="FULL_OBJECT")
    assert harness.client_error(e.value) == ("NotImplemented", 501)
    assert "remote store" in e.value.response["Error"]["Message"]


def test_malformed_digests_are_refused_before_the_body(daemon):
    """Before this, a Content-MD5 that was not base64 of 16 bytes answered BadDigest (the
    code for a mismatch) after the whole body had been read, and a checksum header of the
    wrong length answered BadDigest too; S3 answers InvalidDigest and InvalidRequest."""
    c = daemon.client()
    b = harness.unique_name("ckbad")
    c.create_bucket(Bucket=b)
    for kw, want in (({"ContentMD5": "bm90IGFuIG1kNQ=="}, ("InvalidDigest", 400)),
                     ({"ContentMD5": "%%%"}, ("InvalidDigest", 400)),
                     ({"ChecksumCRC32": "AAAA"}, ("InvalidRequest", 400)),
                     ({"ChecksumSHA256": crc32_b64(b"x")}, ("InvalidRequest", 400))):
        with pytest.raises(ClientError) as e:
            c.put_object(Bucket=b, Key="k", Body=b"body", **kw)
        assert harness.client_error(e.value) == want, kw
    with pytest.raises(ClientError):
        c.head_object(Bucket=b, Key="k")
    # A well-formed value that does not match is still BadDigest.
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=b, Key="k", Body=b"body", ChecksumCRC32=crc32_b64(b"other"))
    assert harness.client_error(e.value) == ("BadDigest", 400)
