//! Bucket sub-resources Pixelport keeps no settings for (website, replication,
//! object lock, notifications, logging, request payment, transfer acceleration, analytics,
//! metrics, inventory and intelligent-tiering configurations): the Get and List calls answer
//! as AWS answers a bucket that has none, instead of 501 NotImplemented, and so do the
//! object retention and legal hold calls of a bucket without Object Lock. Tools read them
//! all when they inspect a bucket (Terraform's aws_s3_bucket, for one), and a 501 there
//! fails the whole read. The Put calls answer NotImplemented naming what is missing.

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::PixelportS3;

fn not_found(code: S3ErrorCode, msg: &'static str) -> S3Error {
    let mut e = S3Error::with_message(code, msg);
    e.set_status_code(http::StatusCode::NOT_FOUND);
    e
}

/// NoSuchBucket unless the bucket exists, then `none`'s answer.
async fn unset<T>(
    s: &PixelportS3,
    bucket: &str,
    ext: &http::Extensions,
    none: impl FnOnce() -> S3Result<T>,
) -> S3Result<S3Response<T>> {
    s.existing_bucket(bucket, ext).await?;
    none().map(S3Response::new)
}

/// One Get handler: NoSuchBucket unless the bucket exists, then `$none`.
macro_rules! unset_get {
    ($name:ident, $input:ident, $output:ident, $none:expr) => {
        pub async fn $name(
            s: &PixelportS3,
            req: S3Request<$input>,
        ) -> S3Result<S3Response<$output>> {
            unset(s, &req.input.bucket, &req.extensions, || $none).await
        }
    };
}

unset_get!(
    website,
    GetBucketWebsiteInput,
    GetBucketWebsiteOutput,
    Err(not_found(
        S3ErrorCode::NoSuchWebsiteConfiguration,
        "The specified bucket does not have a website configuration",
    ))
);
unset_get!(
    replication,
    GetBucketReplicationInput,
    GetBucketReplicationOutput,
    Err(not_found(
        S3ErrorCode::ReplicationConfigurationNotFoundError,
        "The replication configuration was not found",
    ))
);
unset_get!(
    object_lock,
    GetObjectLockConfigurationInput,
    GetObjectLockConfigurationOutput,
    Err(not_found(
        S3ErrorCode::ObjectLockConfigurationNotFoundError,
        "Object Lock configuration does not exist for this bucket",
    ))
);
unset_get!(
    notification,
    GetBucketNotificationConfigurationInput,
    GetBucketNotificationConfigurationOutput,
    Ok(GetBucketNotificationConfigurationOutput::default())
);
unset_get!(
    logging,
    GetBucketLoggingInput,
    GetBucketLoggingOutput,
    Ok(GetBucketLoggingOutput::default())
);
unset_get!(
    request_payment,
    GetBucketRequestPaymentInput,
    GetBucketRequestPaymentOutput,
    Ok(GetBucketRequestPaymentOutput {
        payer: Some(Payer::from_static(Payer::BUCKET_OWNER)),
    })
);
unset_get!(
    accelerate,
    GetBucketAccelerateConfigurationInput,
    GetBucketAccelerateConfigurationOutput,
    Ok(GetBucketAccelerateConfigurationOutput::default())
);

unset_get!(
    analytics_list,
    ListBucketAnalyticsConfigurationsInput,
    ListBucketAnalyticsConfigurationsOutput,
    Ok(ListBucketAnalyticsConfigurationsOutput {
        is_truncated: Some(false),
        ..Default::default()
    })
);
unset_get!(
    metrics_list,
    ListBucketMetricsConfigurationsInput,
    ListBucketMetricsConfigurationsOutput,
    Ok(ListBucketMetricsConfigurationsOutput {
        is_truncated: Some(false),
        ..Default::default()
    })
);
unset_get!(
    inventory_list,
    ListBucketInventoryConfigurationsInput,
    ListBucketInventoryConfigurationsOutput,
    Ok(ListBucketInventoryConfigurationsOutput {
        is_truncated: Some(false),
        ..Default::default()
    })
);
unset_get!(
    intelligent_tiering_list,
    ListBucketIntelligentTieringConfigurationsInput,
    ListBucketIntelligentTieringConfigurationsOutput,
    Ok(ListBucketIntelligentTieringConfigurationsOutput {
        is_truncated: Some(false),
        ..Default::default()
    })
);

/// AWS's answer for a configuration id the bucket does not have.
fn no_such_configuration() -> S3Error {
    not_found(
        S3ErrorCode::Custom("NoSuchConfiguration".into()),
        "The specified configuration does not exist.",
    )
}

unset_get!(
    analytics,
    GetBucketAnalyticsConfigurationInput,
    GetBucketAnalyticsConfigurationOutput,
    Err(no_such_configuration())
);
unset_get!(
    metrics,
    GetBucketMetricsConfigurationInput,
    GetBucketMetricsConfigurationOutput,
    Err(no_such_configuration())
);
unset_get!(
    inventory,
    GetBucketInventoryConfigurationInput,
    GetBucketInventoryConfigurationOutput,
    Err(no_such_configuration())
);
unset_get!(
    intelligent_tiering,
    GetBucketIntelligentTieringConfigurationInput,
    GetBucketIntelligentTieringConfigurationOutput,
    Err(no_such_configuration())
);

/// AWS's answer to a retention or legal-hold call in a bucket without Object Lock.
fn no_object_lock() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::InvalidRequest,
        "Bucket is missing Object Lock Configuration",
    )
}

unset_get!(
    retention,
    GetObjectRetentionInput,
    GetObjectRetentionOutput,
    Err(no_object_lock())
);
unset_get!(
    legal_hold,
    GetObjectLegalHoldInput,
    GetObjectLegalHoldOutput,
    Err(no_object_lock())
);
unset_get!(
    put_retention,
    PutObjectRetentionInput,
    PutObjectRetentionOutput,
    Err(no_object_lock())
);
unset_get!(
    put_legal_hold,
    PutObjectLegalHoldInput,
    PutObjectLegalHoldOutput,
    Err(no_object_lock())
);

/// One Put handler for a setting Pixelport does not have: NoSuchBucket unless the bucket
/// exists, then NotImplemented saying what is missing (s3s's own answer names nothing).
macro_rules! unsupported_put {
    ($name:ident, $input:ident, $output:ident, $what:expr) => {
        pub async fn $name(
            s: &PixelportS3,
            req: S3Request<$input>,
        ) -> S3Result<S3Response<$output>> {
            unset(s, &req.input.bucket, &req.extensions, || {
                Err(S3Error::with_message(S3ErrorCode::NotImplemented, $what))
            })
            .await
        }
    };
}

unsupported_put!(
    put_website,
    PutBucketWebsiteInput,
    PutBucketWebsiteOutput,
    "PutBucketWebsite is not implemented: Pixelport has no website endpoint (serve images through the image endpoint, or files through a public bucket)"
);
unsupported_put!(
    put_replication,
    PutBucketReplicationInput,
    PutBucketReplicationOutput,
    "PutBucketReplication is not implemented: Pixelport does not replicate between buckets (use rclone, or the remote store on a replicated cluster)"
);
unsupported_put!(
    put_object_lock,
    PutObjectLockConfigurationInput,
    PutObjectLockConfigurationOutput,
    "Object Lock is not implemented: Pixelport cannot yet refuse deletes of locked versions"
);
unsupported_put!(
    put_notification,
    PutBucketNotificationConfigurationInput,
    PutBucketNotificationConfigurationOutput,
    "Bucket notifications are not implemented: Pixelport has no event targets"
);
unsupported_put!(
    put_logging,
    PutBucketLoggingInput,
    PutBucketLoggingOutput,
    "Server access logging to a bucket is not implemented: Pixelport logs every request to its own log (journald) instead"
);
unsupported_put!(
    put_request_payment,
    PutBucketRequestPaymentInput,
    PutBucketRequestPaymentOutput,
    "Requester Pays is not implemented: Pixelport does not bill requests"
);
unsupported_put!(
    put_accelerate,
    PutBucketAccelerateConfigurationInput,
    PutBucketAccelerateConfigurationOutput,
    "Transfer Acceleration is not implemented: the edge (`pixelport edge`) is Pixelport's way to serve from near the reader"
);
