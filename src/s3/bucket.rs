//! Bucket operations: list, create, head, delete, location, versioning status.

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::{PixelportS3, names, timestamp};

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
    let public = super::acl_ops::create_bucket_public(&req.input)?;
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
    s.store
        .create_bucket(bucket)
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    let stored = if public {
        s.buckets.set_public(bucket, true)
    } else {
        Ok(())
    }
    .and_then(|()| match ownership {
        Some(o) => s.buckets.set_ownership(bucket, Some(o)),
        None => Ok(()),
    });
    if let Err(e) = stored {
        tracing::error!(bucket, error = %e, "cannot store the new bucket's ACL or ownership");
        return Err(S3Error::with_message(
            S3ErrorCode::InternalError,
            "the bucket was created, but its ACL or ownership controls could not be stored",
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
    s.store
        .head_bucket(&req.input.bucket)
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    Ok(S3Response::new(GetBucketVersioningOutput::default()))
}
