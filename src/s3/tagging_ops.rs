//! Put/Get/DeleteObjectTagging and Put/Get/DeleteBucketTagging, and the `x-amz-tagging`
//! header on PUT, copy and multipart. Object tags live with the object in the embedded
//! store's catalog (the remote store answers `NotImplemented` and says why); bucket tags
//! live in the admin catalog, for both stores.

use std::collections::BTreeMap;

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::PixelportS3;
use super::tagging::{self, On, TagError};
use crate::store::{StoreError, TAGS_NOT_ON_THIS_STORE};

fn refused(e: TagError) -> S3Error {
    let code = if e.is_count() {
        S3ErrorCode::Custom("BadRequest".into())
    } else {
        S3ErrorCode::InvalidTag
    };
    let mut err = S3Error::with_message(code, e.to_string());
    err.set_status_code(http::StatusCode::BAD_REQUEST);
    err
}

fn from_tag_set(set: TagSet, on: On) -> S3Result<BTreeMap<String, String>> {
    let pairs = set
        .into_iter()
        .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
        .collect();
    tagging::check(pairs, on).map_err(refused)
}

fn to_tag_set(tags: &BTreeMap<String, String>) -> TagSet {
    tags.iter()
        .map(|(k, v)| Tag {
            key: Some(k.clone()),
            value: Some(v.clone()),
        })
        .collect()
}

/// The tags an `x-amz-tagging` header asks for, refused up front where the store cannot
/// keep them.
pub(crate) fn header_tags(
    s: &PixelportS3,
    header: Option<&str>,
) -> S3Result<BTreeMap<String, String>> {
    let Some(h) = header.filter(|h| !h.is_empty()) else {
        return Ok(BTreeMap::new());
    };
    let tags = tagging::parse_header(h).map_err(refused)?;
    if !tags.is_empty() && !s.store.keeps_tags() {
        return Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            TAGS_NOT_ON_THIS_STORE,
        ));
    }
    Ok(tags)
}

/// The number answered as `x-amz-tagging-count` on GET (none when untagged, as S3).
pub(crate) fn tag_count(tags: &BTreeMap<String, String>) -> Option<i32> {
    (!tags.is_empty()).then(|| i32::try_from(tags.len()).unwrap_or(i32::MAX))
}

fn no_tag_set() -> S3Error {
    S3Error::with_message(S3ErrorCode::NoSuchTagSet, "The TagSet does not exist")
}

pub async fn put_object(
    s: &PixelportS3,
    req: S3Request<PutObjectTaggingInput>,
) -> S3Result<S3Response<PutObjectTaggingOutput>> {
    let i = req.input;
    let version = super::version_arg(i.version_id.as_deref())?;
    let tags = from_tag_set(i.tagging.tag_set, On::Object)?;
    let info = s
        .store
        .set_tags(&i.bucket, &i.key, version, tags)
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    Ok(S3Response::new(PutObjectTaggingOutput {
        version_id: info.version_id,
    }))
}

pub async fn get_object(
    s: &PixelportS3,
    req: S3Request<GetObjectTaggingInput>,
) -> S3Result<S3Response<GetObjectTaggingOutput>> {
    let i = req.input;
    let version = super::version_arg(i.version_id.as_deref())?;
    if !s.store.keeps_tags() {
        // The object's existence is still answered first, as S3 would.
        super::head_version(&s.store, &i.bucket, &i.key, version)
            .await
            .map_err(|e| s.err(e, &req.extensions))?;
        return Err(s.err(
            StoreError::NotImplemented(TAGS_NOT_ON_THIS_STORE.into()),
            &req.extensions,
        ));
    }
    let info = super::head_version(&s.store, &i.bucket, &i.key, version)
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    Ok(S3Response::new(GetObjectTaggingOutput {
        tag_set: to_tag_set(&info.attrs.tags),
        version_id: info.version_id,
    }))
}

pub async fn delete_object(
    s: &PixelportS3,
    req: S3Request<DeleteObjectTaggingInput>,
) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
    let i = req.input;
    let version = super::version_arg(i.version_id.as_deref())?;
    let info = s
        .store
        .set_tags(&i.bucket, &i.key, version, BTreeMap::new())
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    Ok(S3Response::new(DeleteObjectTaggingOutput {
        version_id: info.version_id,
    }))
}

pub async fn put_bucket(
    s: &PixelportS3,
    req: S3Request<PutBucketTaggingInput>,
) -> S3Result<S3Response<PutBucketTaggingOutput>> {
    let i = req.input;
    s.existing_bucket(&i.bucket, &req.extensions).await?;
    let tags = from_tag_set(i.tagging.tag_set, On::Bucket)?;
    s.buckets
        .set_tags(&i.bucket, Some(&tags))
        .map_err(|e| super::catalog_error("tags", e))?;
    Ok(S3Response::new(PutBucketTaggingOutput {}))
}

pub async fn get_bucket(
    s: &PixelportS3,
    req: S3Request<GetBucketTaggingInput>,
) -> S3Result<S3Response<GetBucketTaggingOutput>> {
    let bucket = req.input.bucket;
    s.existing_bucket(&bucket, &req.extensions).await?;
    let tags = s
        .buckets
        .tags(&bucket)
        .map_err(|e| super::catalog_error("tags", e))?
        .ok_or_else(no_tag_set)?;
    Ok(S3Response::new(GetBucketTaggingOutput {
        tag_set: to_tag_set(&tags),
    }))
}

pub async fn delete_bucket(
    s: &PixelportS3,
    req: S3Request<DeleteBucketTaggingInput>,
) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
    let bucket = req.input.bucket;
    s.existing_bucket(&bucket, &req.extensions).await?;
    s.buckets
        .set_tags(&bucket, None)
        .map_err(|e| super::catalog_error("tags", e))?;
    Ok(S3Response::new(DeleteBucketTaggingOutput {}))
}
