//! Bucket sub-resources Pixelport keeps no settings for (encryption, website, replication,
//! object lock, notifications, logging, request payment, transfer acceleration): the Get
//! calls answer as AWS answers a bucket that has none, instead of 501 NotImplemented.
//! Tools read them all when they inspect a bucket (Terraform's aws_s3_bucket, for one),
//! and a 501 there fails the whole read. The Put calls stay NotImplemented.

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
    encryption,
    GetBucketEncryptionInput,
    GetBucketEncryptionOutput,
    Err(not_found(
        S3ErrorCode::ServerSideEncryptionConfigurationNotFoundError,
        "The server side encryption configuration was not found (Pixelport does not encrypt at rest yet)",
    ))
);
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
