"""Bucket sub-resources Pixelport keeps no settings for answer as AWS answers a bucket that
has none (#14 part 8: "each 501 on an error path replaced by AWS's documented status").

Before this, GetBucketEncryption (now a real setting: test_sse.py), GetBucketWebsite, GetBucketReplication,
GetObjectLockConfiguration, GetBucketNotificationConfiguration, GetBucketLogging,
GetBucketRequestPayment and GetBucketAccelerateConfiguration all answered 501
NotImplemented, which fails a tool's whole read of a bucket (Terraform's aws_s3_bucket
reads every one of them).
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

import harness

pytestmark = pytest.mark.pixelport_only


def test_unset_configurations_read_as_absent(backend_daemon):
    c = backend_daemon.client()
    b = harness.unique_name("unset")
    c.create_bucket(Bucket=b)
    for call, want in (
            (c.get_bucket_encryption, ("ServerSideEncryptionConfigurationNotFoundError", 404)),
            (c.get_bucket_website, ("NoSuchWebsiteConfiguration", 404)),
            (c.get_bucket_replication, ("ReplicationConfigurationNotFoundError", 404)),
            (c.get_object_lock_configuration, ("ObjectLockConfigurationNotFoundError", 404))):
        with pytest.raises(ClientError) as e:
            call(Bucket=b)
        assert harness.client_error(e.value) == want, call
    n = c.get_bucket_notification_configuration(Bucket=b)
    assert not any(k in n for k in ("TopicConfigurations", "QueueConfigurations",
                                    "LambdaFunctionConfigurations"))
    assert "LoggingEnabled" not in c.get_bucket_logging(Bucket=b)
    assert c.get_bucket_request_payment(Bucket=b)["Payer"] == "BucketOwner"
    assert "Status" not in c.get_bucket_accelerate_configuration(Bucket=b)
    # A missing bucket is NoSuchBucket, as everywhere.
    for call in (c.get_bucket_encryption, c.get_bucket_logging, c.get_bucket_request_payment):
        with pytest.raises(ClientError) as e:
            call(Bucket="no-such-unset-bucket")
        assert harness.client_error(e.value) == ("NoSuchBucket", 404)
    # Writing them stays NotImplemented: Pixelport has none of these features.
    with pytest.raises(ClientError) as e:
        c.put_bucket_website(Bucket=b, WebsiteConfiguration={"IndexDocument": {"Suffix": "i"}})
    assert harness.client_error(e.value)[1] == 501


def test_analytics_metrics_inventory_tiering_and_object_lock_calls(backend_daemon):
    """Before this, the List and Get calls of analytics, metrics, inventory and
    intelligent-tiering configurations and the object retention / legal hold calls answered
    s3s's bare 501, and every Put answered 501 without saying what was missing."""
    c = backend_daemon.client()
    b = harness.unique_name("unset2")
    c.create_bucket(Bucket=b)
    c.put_object(Bucket=b, Key="k", Body=b"x")
    assert not c.list_bucket_analytics_configurations(Bucket=b).get("AnalyticsConfigurationList")
    assert not c.list_bucket_metrics_configurations(Bucket=b).get("MetricsConfigurationList")
    assert not c.list_bucket_inventory_configurations(Bucket=b).get("InventoryConfigurationList")
    assert not c.list_bucket_intelligent_tiering_configurations(Bucket=b).get(
        "IntelligentTieringConfigurationList")
    for call in (c.get_bucket_analytics_configuration, c.get_bucket_metrics_configuration,
                 c.get_bucket_inventory_configuration,
                 c.get_bucket_intelligent_tiering_configuration):
        with pytest.raises(ClientError) as e:
            call(Bucket=b, Id="nightly")
        assert harness.client_error(e.value) == ("NoSuchConfiguration", 404), call
    for call in (lambda: c.get_object_retention(Bucket=b, Key="k"),
                 lambda: c.get_object_legal_hold(Bucket=b, Key="k"),
                 lambda: c.put_object_legal_hold(Bucket=b, Key="k",
                                                 LegalHold={"Status": "ON"})):
        with pytest.raises(ClientError) as e:
            call()
        assert harness.client_error(e.value) == ("InvalidRequest", 400)
        assert "Object Lock" in e.value.response["Error"]["Message"]
    # The Puts say what is missing.
    for call, word in (
            (lambda: c.put_bucket_logging(Bucket=b, BucketLoggingStatus={}), "log"),
            (lambda: c.put_bucket_accelerate_configuration(
                Bucket=b, AccelerateConfiguration={"Status": "Enabled"}), "edge")):
        with pytest.raises(ClientError) as e:
            call()
        assert harness.client_error(e.value) == ("NotImplemented", 501)
        assert word in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        c.list_bucket_metrics_configurations(Bucket="no-such-unset-bucket")
    assert harness.client_error(e.value) == ("NoSuchBucket", 404)
