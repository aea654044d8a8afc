//! Get/Put/DeleteBucketPolicy, GetBucketPolicyStatus, Get/Put/DeletePublicAccessBlock and
//! Get/Put/DeleteBucketOwnershipControls: the bucket's access settings, kept in the admin
//! catalog for both stores (`bucket_settings`), decided by `bucket_access` and `policy`.

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::PixelportS3;
use super::bucket_access::{AclRefusal, Block, Ownership};
use super::bucket_settings::SettingsError;
use super::policy;

/// A settings change refused or failed, as S3 answers it.
pub(crate) fn settings_error(what: &str, e: SettingsError) -> S3Error {
    match e {
        SettingsError::Catalog(e) => super::catalog_error(what, e),
        SettingsError::Policy(e) => S3Error::with_message(S3ErrorCode::MalformedPolicy, e.0),
        SettingsError::Refused(r) => refusal(r),
    }
}

pub(crate) fn refusal(r: AclRefusal) -> S3Error {
    let code = match r {
        AclRefusal::AclsDisabled => S3ErrorCode::AccessControlListNotSupported,
        AclRefusal::Blocked | AclRefusal::PolicyBlocked => S3ErrorCode::AccessDenied,
    };
    S3Error::with_message(code, r.to_string())
}

fn not_found(code: &'static str, msg: &'static str) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::Custom(code.into()), msg);
    e.set_status_code(http::StatusCode::NOT_FOUND);
    e
}

/// DeleteBucketPolicy, DeletePublicAccessBlock and DeleteBucketOwnershipControls: NoSuchBucket
/// unless the bucket exists, then `clear` forgets the setting (none is not an error).
pub(crate) async fn delete_setting(
    s: &PixelportS3,
    bucket: &str,
    ext: &http::Extensions,
    what: &str,
    clear: impl FnOnce(&super::bucket_settings::BucketSettings) -> Result<(), SettingsError>,
) -> S3Result<()> {
    s.existing_bucket(bucket, ext).await?;
    clear(&s.buckets).map_err(|e| settings_error(what, e))?;
    tracing::info!(bucket, "bucket {what} deleted");
    Ok(())
}

fn no_policy() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::NoSuchBucketPolicy,
        "The bucket policy does not exist",
    )
}

pub async fn get_policy(
    s: &PixelportS3,
    req: S3Request<GetBucketPolicyInput>,
) -> S3Result<S3Response<GetBucketPolicyOutput>> {
    let bucket = req.input.bucket;
    s.existing_bucket(&bucket, &req.extensions).await?;
    let p = s
        .buckets
        .access(&bucket)
        .policy
        .clone()
        .ok_or_else(no_policy)?;
    Ok(S3Response::new(GetBucketPolicyOutput {
        policy: Some(p.text.clone()),
    }))
}

pub async fn put_policy(
    s: &PixelportS3,
    req: S3Request<PutBucketPolicyInput>,
) -> S3Result<S3Response<PutBucketPolicyOutput>> {
    let i = req.input;
    s.existing_bucket(&i.bucket, &req.extensions).await?;
    let parsed = policy::parse(&i.bucket, &i.policy)
        .map_err(|e| S3Error::with_message(S3ErrorCode::MalformedPolicy, e.0))?;
    let public = parsed.is_public();
    s.buckets
        .set_policy(&i.bucket, Some((i.policy, parsed)))
        .map_err(|e| settings_error("policy", e))?;
    tracing::info!(bucket = %i.bucket, public, "bucket policy set");
    Ok(S3Response::with_status(
        PutBucketPolicyOutput {},
        http::StatusCode::NO_CONTENT,
    ))
}

pub async fn delete_policy(
    s: &PixelportS3,
    req: S3Request<DeleteBucketPolicyInput>,
) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
    let b = &req.input.bucket;
    delete_setting(s, b, &req.extensions, "policy", |x| x.set_policy(b, None)).await?;
    Ok(S3Response::with_status(
        DeleteBucketPolicyOutput {},
        http::StatusCode::NO_CONTENT,
    ))
}

pub async fn get_policy_status(
    s: &PixelportS3,
    req: S3Request<GetBucketPolicyStatusInput>,
) -> S3Result<S3Response<GetBucketPolicyStatusOutput>> {
    let bucket = req.input.bucket;
    s.existing_bucket(&bucket, &req.extensions).await?;
    let p = s
        .buckets
        .access(&bucket)
        .policy
        .clone()
        .ok_or_else(no_policy)?;
    Ok(S3Response::new(GetBucketPolicyStatusOutput {
        policy_status: Some(PolicyStatus {
            is_public: Some(p.policy.is_public()),
        }),
    }))
}

pub async fn get_block(
    s: &PixelportS3,
    req: S3Request<GetPublicAccessBlockInput>,
) -> S3Result<S3Response<GetPublicAccessBlockOutput>> {
    let bucket = req.input.bucket;
    s.existing_bucket(&bucket, &req.extensions).await?;
    let b = s.buckets.access(&bucket).block.ok_or_else(|| {
        not_found(
            "NoSuchPublicAccessBlockConfiguration",
            "The public access block configuration was not found",
        )
    })?;
    Ok(S3Response::new(GetPublicAccessBlockOutput {
        public_access_block_configuration: Some(PublicAccessBlockConfiguration {
            block_public_acls: Some(b.block_public_acls),
            block_public_policy: Some(b.block_public_policy),
            ignore_public_acls: Some(b.ignore_public_acls),
            restrict_public_buckets: Some(b.restrict_public_buckets),
        }),
    }))
}

pub async fn put_block(
    s: &PixelportS3,
    req: S3Request<PutPublicAccessBlockInput>,
) -> S3Result<S3Response<PutPublicAccessBlockOutput>> {
    let i = req.input;
    s.existing_bucket(&i.bucket, &req.extensions).await?;
    let c = i.public_access_block_configuration;
    let block = Block {
        block_public_acls: c.block_public_acls.unwrap_or(false),
        ignore_public_acls: c.ignore_public_acls.unwrap_or(false),
        block_public_policy: c.block_public_policy.unwrap_or(false),
        restrict_public_buckets: c.restrict_public_buckets.unwrap_or(false),
    };
    s.buckets
        .set_block(&i.bucket, Some(block))
        .map_err(|e| settings_error("public access block", e))?;
    tracing::info!(bucket = %i.bucket, ?block, "public access block set");
    Ok(S3Response::new(PutPublicAccessBlockOutput {}))
}

pub async fn delete_block(
    s: &PixelportS3,
    req: S3Request<DeletePublicAccessBlockInput>,
) -> S3Result<S3Response<DeletePublicAccessBlockOutput>> {
    let b = &req.input.bucket;
    delete_setting(s, b, &req.extensions, "public access block", |x| {
        x.set_block(b, None)
    })
    .await?;
    Ok(S3Response::with_status(
        DeletePublicAccessBlockOutput {},
        http::StatusCode::NO_CONTENT,
    ))
}

pub async fn get_ownership(
    s: &PixelportS3,
    req: S3Request<GetBucketOwnershipControlsInput>,
) -> S3Result<S3Response<GetBucketOwnershipControlsOutput>> {
    let bucket = req.input.bucket;
    s.existing_bucket(&bucket, &req.extensions).await?;
    let o = s.buckets.access(&bucket).ownership.ok_or_else(|| {
        S3Error::with_message(
            S3ErrorCode::OwnershipControlsNotFoundError,
            "The bucket ownership controls were not found",
        )
    })?;
    Ok(S3Response::new(GetBucketOwnershipControlsOutput {
        ownership_controls: Some(OwnershipControls {
            rules: vec![OwnershipControlsRule {
                object_ownership: ObjectOwnership::from(o.as_str().to_owned()),
            }],
        }),
    }))
}

/// The one ownership rule a PutBucketOwnershipControls body (or CreateBucket's
/// `x-amz-object-ownership`) names.
pub(crate) fn ownership_of(value: &str) -> S3Result<Ownership> {
    Ownership::parse(value).ok_or_else(|| {
        S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!(
                "Invalid x-amz-object-ownership / ObjectOwnership `{value}`: use BucketOwnerEnforced, BucketOwnerPreferred or ObjectWriter"
            ),
        )
    })
}

pub async fn put_ownership(
    s: &PixelportS3,
    req: S3Request<PutBucketOwnershipControlsInput>,
) -> S3Result<S3Response<PutBucketOwnershipControlsOutput>> {
    let i = req.input;
    s.existing_bucket(&i.bucket, &req.extensions).await?;
    let [rule] = i.ownership_controls.rules.as_slice() else {
        return Err(S3Error::with_message(
            S3ErrorCode::MalformedXML,
            "OwnershipControls must hold exactly one Rule",
        ));
    };
    let o = ownership_of(rule.object_ownership.as_str())?;
    s.buckets
        .set_ownership(&i.bucket, Some(o))
        .map_err(|e| settings_error("ownership controls", e))?;
    tracing::info!(bucket = %i.bucket, ownership = o.as_str(), "ownership controls set");
    Ok(S3Response::new(PutBucketOwnershipControlsOutput {}))
}

pub async fn delete_ownership(
    s: &PixelportS3,
    req: S3Request<DeleteBucketOwnershipControlsInput>,
) -> S3Result<S3Response<DeleteBucketOwnershipControlsOutput>> {
    let b = &req.input.bucket;
    delete_setting(s, b, &req.extensions, "ownership controls", |x| {
        x.set_ownership(b, None)
    })
    .await?;
    Ok(S3Response::with_status(
        DeleteBucketOwnershipControlsOutput {},
        http::StatusCode::NO_CONTENT,
    ))
}
