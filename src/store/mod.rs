//! The `Store` trait: buckets, objects with metadata, ranged streaming reads and multipart
//! uploads, with two implementations: `embedded` (OpenDAL fs + redb catalog, the default) and
//! `remote` (OpenDAL s3 against an existing cluster). Handlers only ever talk to this trait.
//!
//! Bodies reach a store already spooled and verified (`spool`): a store never makes an
//! object visible before its bytes are complete and durable.

pub mod cluster;
pub mod crc_combine;
pub mod embedded;
pub mod listing;
pub mod remote;
pub mod sealing;
pub mod spool;
pub mod types;
pub mod version_id;

use std::collections::BTreeMap;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

pub use spool::{Spool, Spooled};
pub use types::*;

pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync>>;

/// What went wrong, in the terms the S3 layer needs to pick an error code.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the bucket `{0}` does not exist")]
    NoSuchBucket(String),
    #[error("the key `{0}` does not exist")]
    NoSuchKey(String),
    #[error("the bucket `{0}` already exists")]
    BucketExists(String),
    #[error("the bucket `{0}` is not empty")]
    BucketNotEmpty(String),
    #[error("the version `{version}` of `{key}` does not exist")]
    NoSuchVersion { key: String, version: String },
    /// A GET or HEAD named a version that is a delete marker (S3's 405).
    #[error("the version `{0}` is a delete marker")]
    DeleteMarker(String),
    #[error("the upload `{0}` does not exist (it was completed, aborted or never started)")]
    NoSuchUpload(String),
    #[error("{0}")]
    InvalidPart(String),
    #[error("the list of parts was not in ascending order")]
    InvalidPartOrder,
    #[error("part {part} is {size} bytes: every part but the last must be at least 5 MiB")]
    EntityTooSmall { part: i32, size: u64 },
    #[error("the object is larger than the configured maximum of {max} bytes")]
    EntityTooLarge { max: u64 },
    #[error("the requested range is not satisfiable for an object of {size} bytes")]
    InvalidRange { size: u64 },
    #[error("{0}")]
    BadDigest(String),
    #[error("the request body ended early: {0}")]
    IncompleteBody(String),
    #[error("the storage backend is unavailable: {0}")]
    Unavailable(String),
    /// The data disk is full, or a write would take it below `[server] min_free_space`.
    #[error("not enough free space: {0}")]
    InsufficientStorage(String),
    #[error("storage error: {0}")]
    Internal(String),
    /// What this store cannot do, and why (S3's `NotImplemented`).
    #[error("{0}")]
    NotImplemented(String),
    /// Encryption at rest: a missing or wrong SSE-C key, or a key or blob that does not open.
    #[error(transparent)]
    Sealing(#[from] sealing::SealError),
}

impl StoreError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        StoreError::Internal(e.to_string())
    }
}

impl From<redb::Error> for StoreError {
    /// An I/O error leaves redb refusing every later call until it is reopened: that is a
    /// fault for `crate::fatal`, which restarts the daemon. A full disk is also the client's
    /// 507 (the reserve should have refused the write before redb saw it).
    fn from(e: redb::Error) -> Self {
        let message = format!("catalog: {e}");
        match &e {
            redb::Error::Io(io) if crate::disk::is_out_of_space(io) => {
                crate::fatal::raise(message.clone());
                StoreError::InsufficientStorage(message)
            }
            redb::Error::Io(_) | redb::Error::PreviousIo => {
                crate::fatal::raise(message.clone());
                StoreError::Internal(message)
            }
            _ => StoreError::Internal(message),
        }
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::from(redb::Error::from(e)) }
        }
    )*};
}
redb_errors!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::DatabaseError
);

impl From<crate::disk::LowSpace> for StoreError {
    fn from(e: crate::disk::LowSpace) -> Self {
        StoreError::InsufficientStorage(e.to_string())
    }
}

impl From<opendal::Error> for StoreError {
    fn from(e: opendal::Error) -> Self {
        use opendal::ErrorKind as K;
        if crate::disk::chain_is_out_of_space(&e) {
            return StoreError::InsufficientStorage(e.to_string());
        }
        match e.kind() {
            K::RateLimited | K::Unexpected if e.is_temporary() => {
                StoreError::Unavailable(e.to_string())
            }
            K::RateLimited => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and `/ready`: `embedded` or `remote`.
    fn kind(&self) -> &'static str;

    /// (bytes, objects) stored, for metrics, when the store can tell cheaply enough; the
    /// remote store cannot (it would list the whole cluster) and says `None`.
    async fn usage(&self) -> StoreResult<Option<(u64, u64)>> {
        Ok(None)
    }

    async fn list_buckets(&self) -> StoreResult<Vec<BucketInfo>>;
    async fn create_bucket(&self, name: &str) -> StoreResult<()>;
    async fn head_bucket(&self, name: &str) -> StoreResult<BucketInfo>;
    async fn delete_bucket(&self, name: &str) -> StoreResult<()>;

    /// The bucket's versioning state; `None` until it is first set. A store that cannot
    /// version (the remote one) always answers `None`.
    async fn versioning(&self, bucket: &str) -> StoreResult<Option<Versioning>> {
        self.head_bucket(bucket).await.map(|b| b.versioning)
    }
    /// PutBucketVersioning.
    async fn set_versioning(&self, _bucket: &str, _state: Versioning) -> StoreResult<()> {
        Err(StoreError::NotImplemented(
            VERSIONING_NOT_ON_THIS_STORE.into(),
        ))
    }
    /// Version `version_id` of the object (`null` names the unversioned object).
    async fn head_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> StoreResult<ObjectInfo> {
        if version_id != version_id::NULL {
            return Err(no_version(key, version_id));
        }
        self.head_object(bucket, key).await
    }
    /// Reads version `version_id` as `read_object` reads the current one.
    async fn read_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        range: Option<ReadRange>,
    ) -> StoreResult<(ObjectInfo, ByteStream, Range<u64>)> {
        if version_id != version_id::NULL {
            return Err(no_version(key, version_id));
        }
        self.read_object(bucket, key, range).await
    }
    /// Reads an object (its current version, or `version`) with the request's SSE-C key.
    /// A store that keeps no SSE-C objects (the remote one) finds the object and then
    /// answers, as S3 does for an object not written with a customer key, that the key does
    /// not apply.
    async fn read_with_key(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        _range: Option<ReadRange>,
        _customer_key: &sealing::CustomerKey,
    ) -> StoreResult<(ObjectInfo, ByteStream, Range<u64>)> {
        match version {
            Some(v) => self.head_version(bucket, key, v).await?,
            None => self.head_object(bucket, key).await?,
        };
        Err(sealing::SealError::NotApplicable.into())
    }
    /// Removes version `version_id` for good.
    async fn delete_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> StoreResult<Deleted> {
        if version_id == version_id::NULL {
            self.delete_object(bucket, key).await?;
        }
        Ok(Deleted {
            version_id: Some(version_id.to_owned()),
            delete_marker: false,
        })
    }
    /// ListObjectVersions. A store without versions lists each object as its `null` version.
    async fn list_versions(&self, bucket: &str, q: &VersionQuery) -> StoreResult<VersionPage> {
        let page = self
            .list_objects(
                bucket,
                &ListQuery {
                    prefix: q.prefix.clone(),
                    delimiter: q.delimiter.clone(),
                    after: q.key_marker.clone(),
                    max_keys: q.max_keys,
                },
            )
            .await?;
        let next = page.is_truncated.then(|| page.last.clone()).flatten();
        Ok(VersionPage {
            entries: page
                .objects
                .into_iter()
                .map(|info| VersionEntry {
                    info,
                    is_latest: true,
                    delete_marker: false,
                })
                .collect(),
            common_prefixes: page.common_prefixes,
            is_truncated: page.is_truncated,
            next_version_marker: next.as_ref().map(|_| version_id::NULL.to_owned()),
            next_key_marker: next,
        })
    }

    async fn head_object(&self, bucket: &str, key: &str) -> StoreResult<ObjectInfo>;
    /// Reads `range` (already checked against the object's size by the caller) or the whole object.
    async fn read_object(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ReadRange>,
    ) -> StoreResult<(ObjectInfo, ByteStream, Range<u64>)>;
    /// Makes `body` visible at `key`, replacing whatever was there.
    async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: Spooled,
        attrs: ObjectAttrs,
    ) -> StoreResult<ObjectInfo> {
        self.put_object_if(bucket, key, body, attrs, &WriteCondition::default())
            .await?
            .map_err(unconditional)
    }
    /// Makes `body` visible at `key` if `cond` holds for the object there at the moment the
    /// write takes effect (decided atomically with it, never from an earlier read); otherwise
    /// changes nothing and answers `Ok(Err(..))`.
    async fn put_object_if(
        &self,
        bucket: &str,
        key: &str,
        body: Spooled,
        attrs: ObjectAttrs,
        cond: &WriteCondition,
    ) -> StoreResult<Conditional<ObjectInfo>>;
    /// Replaces the metadata of an existing object without touching its bytes.
    async fn replace_attrs(
        &self,
        bucket: &str,
        key: &str,
        attrs: ObjectAttrs,
    ) -> StoreResult<ObjectInfo>;
    /// Replaces the tags (`ObjectAttrs::tags`) of the current version or of `version`
    /// without touching its bytes, its other metadata, its ETag or its Last-Modified, as
    /// PutObjectTagging does.
    async fn set_tags(
        &self,
        _bucket: &str,
        _key: &str,
        _version: Option<&str>,
        _tags: BTreeMap<String, String>,
    ) -> StoreResult<ObjectInfo> {
        Err(StoreError::NotImplemented(TAGS_NOT_ON_THIS_STORE.into()))
    }
    /// Sets anonymous read (`ObjectAttrs::public_read`) of the current version or of
    /// `version`, nothing else changing.
    async fn set_public_read(
        &self,
        _bucket: &str,
        _key: &str,
        _version: Option<&str>,
        _public: bool,
    ) -> StoreResult<ObjectInfo> {
        Err(StoreError::NotImplemented(
            OBJECT_ACL_NOT_ON_THIS_STORE.into(),
        ))
    }
    /// A fresh data key for a body that is to be stored encrypted as `encryption` (with the
    /// request's SSE-C key `customer`), so the spool can seal it as it arrives
    /// (`Spool::spool_sealed`); `None` when the store does not encrypt it.
    fn data_key(
        &self,
        _encryption: Option<&sealing::Encryption>,
        _customer: Option<&sealing::CustomerKey>,
    ) -> StoreResult<Option<(sealing::DataKey, sealing::SealedKey)>> {
        Ok(None)
    }
    /// Whether this store encrypts objects at rest (SSE-S3, SSE-C); the remote store refuses
    /// writes that ask for it (`SSE_NOT_ON_THIS_STORE`).
    fn encrypts_at_rest(&self) -> bool {
        false
    }
    /// Whether objects written to this store keep `ObjectAttrs::tags` and `public_read`.
    fn keeps_tags(&self) -> bool {
        false
    }
    /// Deletes the object's current version; a missing key is not an error (as in S3). In a
    /// versioned bucket this makes a delete marker.
    async fn delete_object(&self, bucket: &str, key: &str) -> StoreResult<Deleted>;
    /// Deletes the object if `cond` holds for it. This default decides from a HEAD just
    /// before the delete (the remote store: S3 clusters take no conditional delete through
    /// OpenDAL), so a write landing between the two is not seen; the embedded store decides
    /// inside the delete's own transaction.
    async fn delete_object_if(
        &self,
        bucket: &str,
        key: &str,
        cond: &DeleteCondition,
    ) -> StoreResult<Conditional<Deleted>> {
        if cond.is_unconditional() {
            return self.delete_object(bucket, key).await.map(Ok);
        }
        let existing = match self.head_object(bucket, key).await {
            Ok(info) => Some(info),
            Err(StoreError::NoSuchKey(_)) => None,
            Err(e) => return Err(e),
        };
        if let Err(failed) = cond.check(key, existing.as_ref())? {
            return Ok(Err(failed));
        }
        self.delete_object(bucket, key).await.map(Ok)
    }
    async fn list_objects(&self, bucket: &str, query: &ListQuery) -> StoreResult<ListPage>;

    async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        attrs: ObjectAttrs,
        checksum: Option<UploadChecksum>,
    ) -> StoreResult<String>;
    async fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Spooled,
        customer_key: Option<&sealing::CustomerKey>,
    ) -> StoreResult<PartInfo>;
    async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> StoreResult<ObjectInfo> {
        self.complete_upload_if(bucket, key, upload_id, parts, &WriteCondition::default())
            .await?
            .map_err(unconditional)
    }
    /// Completes the upload if `cond` holds for the object at `key` when the completed object
    /// would become visible (as `put_object_if`); otherwise the upload stays as it was.
    async fn complete_upload_if(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        cond: &WriteCondition,
    ) -> StoreResult<Conditional<ObjectInfo>>;
    async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> StoreResult<()>;
    async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> StoreResult<(UploadInfo, Vec<PartInfo>)>;
    async fn list_uploads(&self, bucket: &str, prefix: &str) -> StoreResult<Vec<UploadInfo>>;
    /// Aborts uploads started before `cutoff_unix` seconds; returns how many.
    async fn expire_uploads(&self, cutoff_unix: i64) -> StoreResult<usize>;
}

pub type DynStore = Arc<dyn Store>;

fn no_version(key: &str, version: &str) -> StoreError {
    StoreError::NoSuchVersion {
        key: key.to_owned(),
        version: version.to_owned(),
    }
}

/// Why the remote store refuses versioning.
pub const VERSIONING_NOT_ON_THIS_STORE: &str = "Versioning is not implemented on the remote \
    store: Pixelport does not read or write the cluster's object versions yet. Enable \
    versioning on the cluster itself; Pixelport then reads and writes its current versions.";

/// Why the remote store refuses per-object ACLs.
pub const OBJECT_ACL_NOT_ON_THIS_STORE: &str = "Object ACLs are not implemented on the \
    remote store: Pixelport keeps per-object settings only in the embedded store's catalog. \
    Make the bucket public-read instead (PutBucketAcl, or the admin UI).";

/// Why the remote store refuses object tags.
pub const TAGS_NOT_ON_THIS_STORE: &str = "Object tagging is not implemented on the remote \
    store: the cluster keeps tags through its own tagging API, which Pixelport does not call \
    yet, and keeping them beside the object would rewrite it on every change. Bucket tagging \
    works on both stores.";

/// Why the remote store refuses encryption at rest.
pub const SSE_NOT_ON_THIS_STORE: &str = "Server-side encryption is not implemented on the \
    remote store: Pixelport would have to hand the key to the cluster or encrypt what it \
    sends, and does neither yet. Enable encryption at rest on the cluster itself (MinIO's KMS, \
    a bucket default on AWS), or use the embedded store.";

/// An unconditional write cannot fail a condition; if a store says it did, that is our bug.
fn unconditional(c: ConditionFailed) -> StoreError {
    StoreError::Internal(format!(
        "a write without preconditions was refused by its {c} precondition"
    ))
}
