//! The S3 API: `s3s::S3` implemented once over `Store`. Each group of operations lives in its
//! own file (`bucket`, `get`, `put`, `list`, `multipart`); this file holds the shared state,
//! the conversions, and the one `impl S3` that delegates to them.

pub mod access;
pub mod acl;
pub mod acl_ops;
pub mod attributes;
pub mod bucket;
pub mod bucket_access;
pub mod bucket_cors;
pub mod bucket_settings;
pub mod cors;
pub mod door;
pub mod errors;
pub mod get;
pub mod lifecycle;
pub mod lifecycle_ops;
pub mod lifecycle_runner;
pub mod list;
pub mod multipart;
pub mod names;
pub mod owner;
pub mod policy;
pub mod policy_ops;
pub mod put;
pub mod sigv2;
pub mod sse;
pub mod tagging;
pub mod tagging_ops;
pub mod unset_config;

use std::sync::Arc;

use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use crate::store::{DynStore, ObjectAttrs, Spool, StoreError};

/// Called after a write through the S3 API changed an object, before the response is sent
/// (the derivative cache hooks in here).
pub trait ChangeListener: Send + Sync + 'static {
    fn object_changed(&self, bucket: &str, key: &str);

    /// The admin purged derivatives (the derivative cache is already purged); may block.
    fn purged(&self, _scope: PurgeScope<'_>) {}
}

/// What an admin purge named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeScope<'a> {
    All,
    /// One source id (`s3://bucket/key`).
    Source(&'a str),
    /// Source ids starting with this (`s3://bucket/prefix`).
    Prefix(&'a str),
}

pub struct PixelportS3 {
    pub store: DynStore,
    pub spool: Spool,
    pub max_object_size: u64,
    pub region: String,
    pub listeners: Vec<Arc<dyn ChangeListener>>,
    /// CORS rules and the other per-bucket settings kept beside the store.
    pub buckets: Arc<bucket_settings::BucketSettings>,
}

impl PixelportS3 {
    pub(crate) fn err(&self, e: StoreError, ext: &http::Extensions) -> S3Error {
        errors::store_error(e, errors::request_id(ext))
    }

    /// NoSuchBucket unless the bucket exists (for the bucket sub-resources kept beside the
    /// store: CORS, tagging).
    pub(crate) async fn existing_bucket(
        &self,
        bucket: &str,
        ext: &http::Extensions,
    ) -> S3Result<()> {
        self.store
            .head_bucket(bucket)
            .await
            .map(|_| ())
            .map_err(|e| self.err(e, ext))
    }

    pub(crate) fn changed(&self, bucket: &str, key: &str) {
        for l in &self.listeners {
            l.object_changed(bucket, key);
        }
    }
}

pub(crate) fn timestamp(ms: i64) -> Timestamp {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Timestamp::from(t)
}

/// How an object's checksum was made: COMPOSITE (of its parts' checksums, `-N`: base64
/// never holds a `-`) or FULL_OBJECT (of its whole body, single-part or multipart); none
/// without a checksum.
pub(crate) fn checksum_type(c: &crate::store::Checksums, parts: u32) -> Option<ChecksumType> {
    if c.is_empty() {
        return None;
    }
    let composite = parts > 0
        && [&c.crc32, &c.crc32c, &c.sha1, &c.sha256, &c.crc64nvme]
            .into_iter()
            .flatten()
            .any(|v| v.contains('-'));
    Some(ChecksumType::from_static(if composite {
        ChecksumType::COMPOSITE
    } else {
        ChecksumType::FULL_OBJECT
    }))
}

pub(crate) fn strong_etag(s: &str) -> ETag {
    ETag::Strong(s.to_owned())
}

/// A bucket setting kept in the admin catalog (CORS rules, tags, ACL) could not be read or
/// written: logged with the cause, answered as InternalError naming `what`.
pub(crate) fn catalog_error(what: &str, e: impl std::fmt::Display) -> S3Error {
    tracing::error!(error = %e, "cannot read or write the bucket's {what}");
    S3Error::with_message(
        S3ErrorCode::InternalError,
        format!("the bucket's {what} could not be read or stored"),
    )
}

pub(crate) fn invalid_argument(msg: impl Into<String>) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, msg.into())
}

/// A version id from a request, checked: one that could not name a version here is S3's
/// 400 InvalidArgument, not a 404.
pub(crate) fn version_arg(version_id: Option<&str>) -> S3Result<Option<&str>> {
    match version_id {
        None => Ok(None),
        Some(v) if crate::store::version_id::is_valid(v) => Ok(Some(v)),
        Some(v) => Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!("Invalid version id specified: {v}"),
        )),
    }
}

/// The current version's info, or the named version's.
pub(crate) async fn head_version(
    store: &crate::store::DynStore,
    bucket: &str,
    key: &str,
    version: Option<&str>,
) -> Result<crate::store::ObjectInfo, StoreError> {
    match version {
        Some(v) => store.head_version(bucket, key, v).await,
        None => store.head_object(bucket, key).await,
    }
}

/// Reads the current version, or `version`, of an object, with the request's SSE-C key
/// when it brought one (the GET's, or a copy's source's).
pub(crate) async fn read_object(
    store: &crate::store::DynStore,
    bucket: &str,
    key: &str,
    version: Option<&str>,
    range: Option<crate::store::ReadRange>,
    customer: Option<&crate::store::sealing::CustomerKey>,
) -> Result<
    (
        crate::store::ObjectInfo,
        crate::store::ByteStream,
        std::ops::Range<u64>,
    ),
    StoreError,
> {
    match (customer, version) {
        (Some(k), v) => store.read_with_key(bucket, key, v, range, k).await,
        (None, Some(v)) => store.read_version(bucket, key, v, range).await,
        (None, None) => store.read_object(bucket, key, range).await,
    }
}

pub(crate) fn check_key(key: &str) -> S3Result<()> {
    names::validate_key(key).map_err(|m| {
        if key.len() <= names::MAX_KEY_LEN {
            S3Error::with_message(S3ErrorCode::InvalidArgument, m)
        } else {
            S3Error::with_message(S3ErrorCode::KeyTooLongError, m)
        }
    })
}

/// Formats an RFC 7231 date for the `Expires` attribute we keep as a string.
pub(crate) fn http_date(t: &Timestamp) -> Option<String> {
    let mut buf = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut buf).ok()?;
    String::from_utf8(buf).ok()
}

pub(crate) fn parse_http_date(s: &str) -> Option<Timestamp> {
    Timestamp::parse(TimestampFormat::HttpDate, s).ok()
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn attrs_from(
    content_type: Option<String>,
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    expires: Option<Timestamp>,
    metadata: Option<Metadata>,
) -> ObjectAttrs {
    ObjectAttrs {
        content_type,
        cache_control,
        content_disposition,
        // aws-chunked is a transfer detail of the upload, not the object's encoding.
        content_encoding: content_encoding.and_then(|v| {
            let rest: Vec<&str> = v
                .split(',')
                .map(str::trim)
                .filter(|p| !p.eq_ignore_ascii_case("aws-chunked") && !p.is_empty())
                .collect();
            (!rest.is_empty()).then(|| rest.join(","))
        }),
        content_language,
        expires: expires.as_ref().and_then(http_date),
        user_metadata: metadata
            .map(|m| {
                m.into_iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v))
                    .collect()
            })
            .unwrap_or_default(),
        tags: std::collections::BTreeMap::new(),
        public_read: false,
        owner: None,
        encryption: None,
        customer_key: None,
    }
}

#[async_trait::async_trait]
impl S3 for PixelportS3 {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        bucket::list_buckets(self, req).await
    }
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        bucket::create_bucket(self, req).await
    }
    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        bucket::head_bucket(self, req).await
    }
    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        bucket::delete_bucket(self, req).await
    }
    async fn put_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> S3Result<S3Response<PutBucketCorsOutput>> {
        bucket_cors::put(self, req).await
    }
    async fn get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        bucket_cors::get(self, req).await
    }
    async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        bucket_cors::delete(self, req).await
    }
    async fn delete_bucket_encryption(
        &self,
        req: S3Request<DeleteBucketEncryptionInput>,
    ) -> S3Result<S3Response<DeleteBucketEncryptionOutput>> {
        sse::delete_bucket(self, req).await
    }
    async fn get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        acl_ops::get_bucket(self, req).await
    }
    async fn put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        acl_ops::put_bucket(self, req).await
    }
    async fn get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        acl_ops::get_object(self, req).await
    }
    async fn put_object_acl(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        acl_ops::put_object(self, req).await
    }
    async fn get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        policy_ops::get_policy(self, req).await
    }
    async fn put_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> S3Result<S3Response<PutBucketPolicyOutput>> {
        policy_ops::put_policy(self, req).await
    }
    async fn delete_bucket_policy(
        &self,
        req: S3Request<DeleteBucketPolicyInput>,
    ) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
        policy_ops::delete_policy(self, req).await
    }
    async fn get_bucket_policy_status(
        &self,
        req: S3Request<GetBucketPolicyStatusInput>,
    ) -> S3Result<S3Response<GetBucketPolicyStatusOutput>> {
        policy_ops::get_policy_status(self, req).await
    }
    async fn get_public_access_block(
        &self,
        req: S3Request<GetPublicAccessBlockInput>,
    ) -> S3Result<S3Response<GetPublicAccessBlockOutput>> {
        policy_ops::get_block(self, req).await
    }
    async fn put_public_access_block(
        &self,
        req: S3Request<PutPublicAccessBlockInput>,
    ) -> S3Result<S3Response<PutPublicAccessBlockOutput>> {
        policy_ops::put_block(self, req).await
    }
    async fn delete_public_access_block(
        &self,
        req: S3Request<DeletePublicAccessBlockInput>,
    ) -> S3Result<S3Response<DeletePublicAccessBlockOutput>> {
        policy_ops::delete_block(self, req).await
    }
    async fn get_bucket_ownership_controls(
        &self,
        req: S3Request<GetBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<GetBucketOwnershipControlsOutput>> {
        policy_ops::get_ownership(self, req).await
    }
    async fn put_bucket_ownership_controls(
        &self,
        req: S3Request<PutBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<PutBucketOwnershipControlsOutput>> {
        policy_ops::put_ownership(self, req).await
    }
    async fn delete_bucket_ownership_controls(
        &self,
        req: S3Request<DeleteBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<DeleteBucketOwnershipControlsOutput>> {
        policy_ops::delete_ownership(self, req).await
    }
    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        lifecycle_ops::put(self, req).await
    }
    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        lifecycle_ops::get(self, req).await
    }
    async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        lifecycle_ops::delete(self, req).await
    }
    async fn get_bucket_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
        sse::get_bucket(self, req).await
    }
    async fn get_bucket_website(
        &self,
        req: S3Request<GetBucketWebsiteInput>,
    ) -> S3Result<S3Response<GetBucketWebsiteOutput>> {
        unset_config::website(self, req).await
    }
    async fn get_bucket_replication(
        &self,
        req: S3Request<GetBucketReplicationInput>,
    ) -> S3Result<S3Response<GetBucketReplicationOutput>> {
        unset_config::replication(self, req).await
    }
    async fn get_object_lock_configuration(
        &self,
        req: S3Request<GetObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<GetObjectLockConfigurationOutput>> {
        unset_config::object_lock(self, req).await
    }
    async fn get_bucket_notification_configuration(
        &self,
        req: S3Request<GetBucketNotificationConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketNotificationConfigurationOutput>> {
        unset_config::notification(self, req).await
    }
    async fn get_bucket_logging(
        &self,
        req: S3Request<GetBucketLoggingInput>,
    ) -> S3Result<S3Response<GetBucketLoggingOutput>> {
        unset_config::logging(self, req).await
    }
    async fn get_bucket_request_payment(
        &self,
        req: S3Request<GetBucketRequestPaymentInput>,
    ) -> S3Result<S3Response<GetBucketRequestPaymentOutput>> {
        unset_config::request_payment(self, req).await
    }
    async fn get_bucket_accelerate_configuration(
        &self,
        req: S3Request<GetBucketAccelerateConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketAccelerateConfigurationOutput>> {
        unset_config::accelerate(self, req).await
    }
    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        attributes::get_object_attributes(self, req).await
    }
    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        tagging_ops::put_object(self, req).await
    }
    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        tagging_ops::get_object(self, req).await
    }
    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        tagging_ops::delete_object(self, req).await
    }
    async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        tagging_ops::put_bucket(self, req).await
    }
    async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        tagging_ops::get_bucket(self, req).await
    }
    async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        tagging_ops::delete_bucket(self, req).await
    }
    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        bucket::get_bucket_location(self, req).await
    }
    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        bucket::get_bucket_versioning(self, req).await
    }
    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        bucket::put_bucket_versioning(self, req).await
    }
    async fn list_bucket_analytics_configurations(
        &self,
        req: S3Request<ListBucketAnalyticsConfigurationsInput>,
    ) -> S3Result<S3Response<ListBucketAnalyticsConfigurationsOutput>> {
        unset_config::analytics_list(self, req).await
    }
    async fn list_bucket_metrics_configurations(
        &self,
        req: S3Request<ListBucketMetricsConfigurationsInput>,
    ) -> S3Result<S3Response<ListBucketMetricsConfigurationsOutput>> {
        unset_config::metrics_list(self, req).await
    }
    async fn list_bucket_inventory_configurations(
        &self,
        req: S3Request<ListBucketInventoryConfigurationsInput>,
    ) -> S3Result<S3Response<ListBucketInventoryConfigurationsOutput>> {
        unset_config::inventory_list(self, req).await
    }
    async fn list_bucket_intelligent_tiering_configurations(
        &self,
        req: S3Request<ListBucketIntelligentTieringConfigurationsInput>,
    ) -> S3Result<S3Response<ListBucketIntelligentTieringConfigurationsOutput>> {
        unset_config::intelligent_tiering_list(self, req).await
    }
    async fn get_bucket_analytics_configuration(
        &self,
        req: S3Request<GetBucketAnalyticsConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketAnalyticsConfigurationOutput>> {
        unset_config::analytics(self, req).await
    }
    async fn get_bucket_metrics_configuration(
        &self,
        req: S3Request<GetBucketMetricsConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketMetricsConfigurationOutput>> {
        unset_config::metrics(self, req).await
    }
    async fn get_bucket_inventory_configuration(
        &self,
        req: S3Request<GetBucketInventoryConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketInventoryConfigurationOutput>> {
        unset_config::inventory(self, req).await
    }
    async fn get_bucket_intelligent_tiering_configuration(
        &self,
        req: S3Request<GetBucketIntelligentTieringConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketIntelligentTieringConfigurationOutput>> {
        unset_config::intelligent_tiering(self, req).await
    }
    async fn get_object_retention(
        &self,
        req: S3Request<GetObjectRetentionInput>,
    ) -> S3Result<S3Response<GetObjectRetentionOutput>> {
        unset_config::retention(self, req).await
    }
    async fn get_object_legal_hold(
        &self,
        req: S3Request<GetObjectLegalHoldInput>,
    ) -> S3Result<S3Response<GetObjectLegalHoldOutput>> {
        unset_config::legal_hold(self, req).await
    }
    async fn put_object_retention(
        &self,
        req: S3Request<PutObjectRetentionInput>,
    ) -> S3Result<S3Response<PutObjectRetentionOutput>> {
        unset_config::put_retention(self, req).await
    }
    async fn put_object_legal_hold(
        &self,
        req: S3Request<PutObjectLegalHoldInput>,
    ) -> S3Result<S3Response<PutObjectLegalHoldOutput>> {
        unset_config::put_legal_hold(self, req).await
    }
    async fn put_bucket_encryption(
        &self,
        req: S3Request<PutBucketEncryptionInput>,
    ) -> S3Result<S3Response<PutBucketEncryptionOutput>> {
        sse::put_bucket(self, req).await
    }
    async fn put_bucket_website(
        &self,
        req: S3Request<PutBucketWebsiteInput>,
    ) -> S3Result<S3Response<PutBucketWebsiteOutput>> {
        unset_config::put_website(self, req).await
    }
    async fn put_bucket_replication(
        &self,
        req: S3Request<PutBucketReplicationInput>,
    ) -> S3Result<S3Response<PutBucketReplicationOutput>> {
        unset_config::put_replication(self, req).await
    }
    async fn put_object_lock_configuration(
        &self,
        req: S3Request<PutObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<PutObjectLockConfigurationOutput>> {
        unset_config::put_object_lock(self, req).await
    }
    async fn put_bucket_notification_configuration(
        &self,
        req: S3Request<PutBucketNotificationConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketNotificationConfigurationOutput>> {
        unset_config::put_notification(self, req).await
    }
    async fn put_bucket_logging(
        &self,
        req: S3Request<PutBucketLoggingInput>,
    ) -> S3Result<S3Response<PutBucketLoggingOutput>> {
        unset_config::put_logging(self, req).await
    }
    async fn put_bucket_request_payment(
        &self,
        req: S3Request<PutBucketRequestPaymentInput>,
    ) -> S3Result<S3Response<PutBucketRequestPaymentOutput>> {
        unset_config::put_request_payment(self, req).await
    }
    async fn put_bucket_accelerate_configuration(
        &self,
        req: S3Request<PutBucketAccelerateConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketAccelerateConfigurationOutput>> {
        unset_config::put_accelerate(self, req).await
    }
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        get::get_object(self, req).await
    }
    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        get::head_object(self, req).await
    }
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        put::put_object(self, req).await
    }
    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        put::copy_object(self, req).await
    }
    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        put::delete_object(self, req).await
    }
    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        put::delete_objects(self, req).await
    }
    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        list::list_objects(self, req).await
    }
    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        list::list_objects_v2(self, req).await
    }
    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        list::list_object_versions(self, req).await
    }
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        multipart::create(self, req).await
    }
    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        multipart::upload_part(self, req).await
    }
    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        multipart::upload_part_copy(self, req).await
    }
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        multipart::complete(self, req).await
    }
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        multipart::abort(self, req).await
    }
    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        multipart::list_parts(self, req).await
    }
    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        multipart::list_uploads(self, req).await
    }
}
