//! Get/PutBucketAcl, Get/PutObjectAcl, and `x-amz-acl` / `x-amz-grant-*` on CreateBucket,
//! PutObject, CopyObject and CreateMultipartUpload (`acl` holds what they mean). A bucket's
//! ACL is the admin UI's public toggle (the bucket policy's public-read statements); an
//! object's is kept with it in the embedded store. The bucket's public access block and
//! ownership controls may refuse a public ACL (`bucket_access`).

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::PixelportS3;
use super::acl;
use super::bucket_access::{BucketAccess, Ownership};
use super::owner;
use crate::store::{OBJECT_ACL_NOT_ON_THIS_STORE, ObjectInfo};

/// `requested` for an input with S3's ACL fields (CreateBucket, PutBucketAcl and
/// PutObjectAcl are different types with the same fields).
macro_rules! acl_of {
    ($i:expr, $body:expr, $owner:expr) => {
        requested(
            $i.acl.as_ref().map(|a| a.as_str()),
            (
                $i.grant_read.as_deref(),
                $i.grant_full_control.as_deref(),
                $i.grant_write.is_some()
                    || $i.grant_read_acp.is_some()
                    || $i.grant_write_acp.is_some(),
            ),
            $body,
            $owner,
        )
    };
}

/// What a request's ACL says about anonymous read: a canned ACL, grant headers, or a body,
/// for a resource owned by `owner`. Giving more than one of them is refused, as S3 does.
fn requested(
    canned: Option<&str>,
    grants: (Option<&str>, Option<&str>, bool),
    body: Option<&AccessControlPolicy>,
    owner: &str,
) -> S3Result<Option<bool>> {
    let (read, full, others) = grants;
    let any_grant = read.is_some() || full.is_some() || others;
    if [canned.is_some(), any_grant, body.is_some()]
        .iter()
        .filter(|b| **b)
        .count()
        > 1
    {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "Specifying both Canned ACLs and Header Grants (or an AccessControlPolicy) is not allowed",
        ));
    }
    if let Some(p) = body {
        return acl::from_policy(p, owner).map(Some);
    }
    if any_grant {
        return acl::grant_headers(read, full, others, owner);
    }
    acl::canned(canned)
}

fn missing_acl() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::MissingSecurityHeader,
        "Your request was missing a required header: x-amz-acl, x-amz-grant-* or an AccessControlPolicy body",
    )
}

/// The object ACL an upload asks for (`x-amz-acl` on PUT, copy, multipart), refused up front
/// where the store cannot keep it, where the bucket's public access block refuses public
/// ACLs, or where its ownership controls disable ACLs.
pub(crate) fn upload_public_read(
    s: &PixelportS3,
    bucket: &str,
    canned: Option<&str>,
) -> S3Result<bool> {
    let public = acl::canned(canned)?.unwrap_or(false);
    s.buckets
        .access(bucket)
        .check_acl(public)
        .map_err(super::policy_ops::refusal)?;
    if public && !s.store.keeps_tags() {
        return Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            OBJECT_ACL_NOT_ON_THIS_STORE,
        ));
    }
    Ok(public)
}

/// The bucket ACL CreateBucket asks for (`owner`: the creator); `None`: private (the
/// default).
pub(crate) fn create_bucket_public(i: &CreateBucketInput, owner: &str) -> S3Result<bool> {
    Ok(acl_of!(i, None, owner)?.unwrap_or(false))
}

/// Who owns the bucket: the key that created it, or the account.
pub(crate) fn bucket_owner(s: &PixelportS3, bucket: &str) -> String {
    owner::shown(s.buckets.access(bucket).owner.as_deref()).to_owned()
}

/// Who owns an object in a bucket with these access settings: with BucketOwnerEnforced the
/// bucket's owner, as S3; otherwise the key that wrote it, or (written anonymously or before
/// owners were recorded) the bucket's.
pub(crate) fn object_owner(access: &BucketAccess, info: &ObjectInfo) -> String {
    if access.ownership == Some(Ownership::BucketOwnerEnforced) {
        return owner::shown(access.owner.as_deref()).to_owned();
    }
    owner::shown(info.attrs.owner.as_deref().or(access.owner.as_deref())).to_owned()
}

pub async fn get_bucket(
    s: &PixelportS3,
    req: S3Request<GetBucketAclInput>,
) -> S3Result<S3Response<GetBucketAclOutput>> {
    let bucket = req.input.bucket;
    s.existing_bucket(&bucket, &req.extensions).await?;
    let (owner, grants) = acl::policy(&bucket_owner(s, &bucket), s.buckets.is_public(&bucket));
    Ok(S3Response::new(GetBucketAclOutput {
        grants: Some(grants),
        owner: Some(owner),
    }))
}

pub async fn put_bucket(
    s: &PixelportS3,
    req: S3Request<PutBucketAclInput>,
) -> S3Result<S3Response<PutBucketAclOutput>> {
    let i = req.input;
    s.existing_bucket(&i.bucket, &req.extensions).await?;
    let owner = bucket_owner(s, &i.bucket);
    let public = acl_of!(i, i.access_control_policy.as_ref(), &owner)?.ok_or_else(missing_acl)?;
    s.buckets
        .access(&i.bucket)
        .check_acl(public)
        .map_err(super::policy_ops::refusal)?;
    s.buckets
        .set_public(&i.bucket, public)
        .map_err(|e| super::policy_ops::settings_error("ACL", e))?;
    tracing::info!(bucket = %i.bucket, public, "bucket ACL set");
    Ok(S3Response::new(PutBucketAclOutput {}))
}

pub async fn get_object(
    s: &PixelportS3,
    req: S3Request<GetObjectAclInput>,
) -> S3Result<S3Response<GetObjectAclOutput>> {
    let i = req.input;
    let version = super::version_arg(i.version_id.as_deref())?;
    let info = super::head_version(&s.store, &i.bucket, &i.key, version)
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    let access = s.buckets.access(&i.bucket);
    let shown = info.attrs.public_read && access.ownership != Some(Ownership::BucketOwnerEnforced);
    let (owner, grants) = acl::policy(&object_owner(&access, &info), shown);
    Ok(S3Response::new(GetObjectAclOutput {
        grants: Some(grants),
        owner: Some(owner),
        request_charged: None,
    }))
}

pub async fn put_object(
    s: &PixelportS3,
    req: S3Request<PutObjectAclInput>,
) -> S3Result<S3Response<PutObjectAclOutput>> {
    let i = req.input;
    let version = super::version_arg(i.version_id.as_deref())?;
    let info = super::head_version(&s.store, &i.bucket, &i.key, version)
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    let owner = object_owner(&s.buckets.access(&i.bucket), &info);
    let public = acl_of!(i, i.access_control_policy.as_ref(), &owner)?.ok_or_else(missing_acl)?;
    s.buckets
        .access(&i.bucket)
        .check_acl(public)
        .map_err(super::policy_ops::refusal)?;
    s.store
        .set_public_read(&i.bucket, &i.key, version, public)
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    Ok(S3Response::new(PutObjectAclOutput {
        request_charged: None,
    }))
}
