//! Bucket operations: list, create, head, delete, location, versioning.

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::{PixelportS3, names, timestamp};
use crate::store::{StoreError, Versioning};

pub async fn list_buckets(
    s: &PixelportS3,
    req: S3Request<ListBucketsInput>,
) -> S3Result<S3Response<ListBucketsOutput>> {
    let buckets = s
        .store
        .list_buckets()
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    let buckets = buckets
        .into_iter()
        .map(|b| Bucket {
            name: Some(b.name),
            creation_date: Some(timestamp(b.created_ms)),
            bucket_region: Some(s.region.clone()),
        })
        .collect();
    let owner = Owner {
        display_name: Some("pixelport".into()),
        id: Some("pixelport".into()),
    };
    Ok(S3Response::new(ListBucketsOutput {
        buckets: Some(buckets),
        owner: Some(owner),
        ..Default::default()
    }))
}

pub async fn create_bucket(
    s: &PixelportS3,
    req: S3Request<CreateBucketInput>,
) -> S3Result<S3Response<CreateBucketOutput>> {
    let bucket = &req.input.bucket;
    names::validate_bucket_name(bucket).map_err(|m| {
        S3Error::with_message(S3ErrorCode::InvalidBucketName, format!("`{bucket}`: {m}"))
    })?;
    let requester = super::owner::requester(&req.extensions);
    let creator = super::owner::shown(requester.as_deref()).to_owned();
    let public = super::acl_ops::create_bucket_public(&req.input, &creator)?;
    let ownership = req
        .input
        .object_ownership
        .as_ref()
        .map(|o| super::policy_ops::ownership_of(o.as_str()))
        .transpose()?;
    if public && ownership == Some(super::bucket_access::Ownership::BucketOwnerEnforced) {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidBucketAclWithObjectOwnership,
            "Bucket cannot have ACLs set with ObjectOwnership's BucketOwnerEnforced setting",
        ));
    }
    match s.store.create_bucket(bucket).await {
        Ok(()) => {}
        // Owned by another key: S3's BucketAlreadyExists, not "...OwnedByYou".
        Err(StoreError::BucketExists(_)) if super::acl_ops::bucket_owner(s, bucket) != creator => {
            return Err(S3Error::with_message(
                S3ErrorCode::BucketAlreadyExists,
                format!(
                    "The requested bucket name `{bucket}` is not available: another key owns it"
                ),
            ));
        }
        Err(e) => return Err(s.err(e, &req.extensions)),
    }
    let stored = s.buckets.set_owner(bucket, &creator);
    let stored = stored
        .and_then(|()| {
            if public {
                s.buckets.set_public(bucket, true)
            } else {
                Ok(())
            }
        })
        .and_then(|()| match ownership {
            Some(o) => s.buckets.set_ownership(bucket, Some(o)),
            None => Ok(()),
        });
    if let Err(e) = stored {
        tracing::error!(bucket, error = %e, "cannot store the new bucket's ACL or ownership");
        return Err(S3Error::with_message(
            S3ErrorCode::InternalError,
            "the bucket was created, but its owner, ACL or ownership controls could not be stored",
        ));
    }
    tracing::info!(bucket, public, "bucket created");
    Ok(S3Response::new(CreateBucketOutput {
        location: Some(format!("/{bucket}")),
    }))
}

pub async fn head_bucket(
    s: &PixelportS3,
    req: S3Request<HeadBucketInput>,
) -> S3Result<S3Response<HeadBucketOutput>> {
    s.store
        .head_bucket(&req.input.bucket)
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    Ok(S3Response::new(HeadBucketOutput {
        bucket_region: Some(s.region.clone()),
        ..Default::default()
    }))
}

pub async fn delete_bucket(
    s: &PixelportS3,
    req: S3Request<DeleteBucketInput>,
) -> S3Result<S3Response<DeleteBucketOutput>> {
    s.store
        .delete_bucket(&req.input.bucket)
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    // The bucket is gone: a failure to forget its settings is logged, not answered.
    if let Err(e) = s.buckets.forget(&req.input.bucket) {
        tracing::warn!(bucket = %req.input.bucket, error = %e, "cannot forget the deleted bucket's settings");
    }
    tracing::info!(bucket = %req.input.bucket, "bucket deleted");
    Ok(S3Response::new(DeleteBucketOutput {}))
}

pub async fn get_bucket_location(
    s: &PixelportS3,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    s.store
        .head_bucket(&req.input.bucket)
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    // As S3: us-east-1 is reported as an empty constraint.
    let location =
        (s.region != "us-east-1").then(|| BucketLocationConstraint::from(s.region.clone()));
    Ok(S3Response::new(GetBucketLocationOutput {
        location_constraint: location,
    }))
}

pub async fn get_bucket_versioning(
    s: &PixelportS3,
    req: S3Request<GetBucketVersioningInput>,
) -> S3Result<S3Response<GetBucketVersioningOutput>> {
    let state = s
        .store
        .versioning(&req.input.bucket)
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    let status = state.map(|v| {
        BucketVersioningStatus::from_static(match v {
            Versioning::Enabled => BucketVersioningStatus::ENABLED,
            Versioning::Suspended => BucketVersioningStatus::SUSPENDED,
        })
    });
    Ok(S3Response::new(GetBucketVersioningOutput {
        status,
        mfa_delete: None,
    }))
}

/// PutBucketVersioning: Enabled or Suspended (a bucket never returns to unversioned, as in
/// S3). MFA delete is refused: Pixelport has no MFA devices to check a code against.
pub async fn put_bucket_versioning(
    s: &PixelportS3,
    req: S3Request<PutBucketVersioningInput>,
) -> S3Result<S3Response<PutBucketVersioningOutput>> {
    let i = req.input;
    let config = i.versioning_configuration;
    if config
        .mfa_delete
        .as_ref()
        .is_some_and(|m| m.as_str() == MFADelete::ENABLED)
    {
        return Err(s3_error!(
            NotImplemented,
            "MFA delete is not implemented: Pixelport has no MFA devices to check a code against"
        ));
    }
    let state = match config.status.as_ref().map(|st| st.as_str()) {
        Some(BucketVersioningStatus::ENABLED) => Versioning::Enabled,
        Some(BucketVersioningStatus::SUSPENDED) => Versioning::Suspended,
        Some(other) => {
            return Err(s3_error!(
                MalformedXML,
                "The versioning Status must be Enabled or Suspended, not `{other}`"
            ));
        }
        // No Status: nothing to change, but the bucket must exist.
        None => {
            s.store
                .head_bucket(&i.bucket)
                .await
                .map_err(|e| s.err(e, &req.extensions))?;
            return Ok(S3Response::new(PutBucketVersioningOutput {}));
        }
    };
    s.store
        .set_versioning(&i.bucket, state)
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    tracing::info!(bucket = %i.bucket, ?state, "bucket versioning set");
    Ok(S3Response::new(PutBucketVersioningOutput {}))
}
