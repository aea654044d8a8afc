//! The embedded store's catalog: a redb file holding buckets, objects, inline bodies, uploads
//! and parts. Synchronous; the async store calls it from `spawn_blocking`.
//!
//! Layout (described in docs/storage.md; every value starts with a format version byte):
//! - `buckets`: name → record
//! - `objects`: bucket NUL key → record (info + where the bytes are)
//! - `inline`: bucket NUL key → raw bytes of small objects
//! - `uploads`: upload id → upload record
//! - `parts`: upload id NUL part number (u32 BE) → part record
//! - `versions`: bucket NUL key NUL sort suffix → record of a noncurrent version or a delete
//!   marker (versioned buckets; `versions.rs`)
//! - `version_inline`: the same key → raw bytes of a small noncurrent version
//!
//! `objects` holds each key's current version; a key whose current version is a delete
//! marker has no entry there, and its marker is the newest entry for it in `versions`.
//!
//! Invariant: every blob a record names exists on disk before the record is committed; a blob
//! no record names is garbage (swept at start).

use std::collections::{BTreeMap, HashSet};

use crate::store::sealing::SealedKey;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

mod versions;

use crate::store::{
    BucketInfo, CompletedPart, Conditional, Deleted, ListPage, ListQuery, ObjectInfo, PartInfo,
    StoreError, StoreResult, UploadInfo, Versioning, WriteCondition, listing, select_parts,
};

const BUCKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("buckets");
const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
const INLINE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("inline");
const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
const PARTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("parts");
const VERSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("versions");
const VERSION_INLINE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("version_inline");
/// Running totals, `"all"` → (bytes, objects), kept by every write that adds or removes an
/// object, so `/metrics` and the admin UI read them without scanning `objects`.
const TOTALS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("totals");
const ALL: &str = "all";

/// redb's page cache for the catalog (its default is 1 GiB).
pub const CACHE_SIZE: usize = 64 << 20;

/// Version byte in front of every JSON value.
const FORMAT_V1: u8 = 1;

/// One stretch of an object's bytes, stored as one file under `blobs/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub blob: String,
    /// Plaintext bytes (the blob file is larger when sealed).
    pub size: u64,
    /// The blob's data key, sealed, when it is encrypted at rest (`store::sealing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<SealedKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Location {
    /// Bytes in the `inline` table under the same key.
    Inline,
    /// Bytes in these blobs, in order.
    Blobs { segments: Vec<Segment> },
}

impl Location {
    pub fn blobs(&self) -> Vec<String> {
        match self {
            Location::Inline => Vec::new(),
            Location::Blobs { segments } => segments.iter().map(|s| s.blob.clone()).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub info: ObjectInfo,
    pub location: Location,
    /// When this version was written (`version_id::next_stamp`); 0 in records from before
    /// versioning, which order by their Last-Modified instead.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stamp: u64,
    /// A delete marker (only ever in `versions`): no bytes, GET answers as for no object.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_marker: bool,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl ObjectRecord {
    pub fn new(info: ObjectInfo, location: Location) -> ObjectRecord {
        ObjectRecord {
            info,
            location,
            stamp: 0,
            delete_marker: false,
        }
    }

    /// The stamp that orders this version among its key's versions.
    fn order_stamp(&self) -> u64 {
        if self.stamp != 0 {
            return self.stamp;
        }
        self.info
            .version_id
            .as_deref()
            .and_then(crate::store::version_id::stamp_of)
            .unwrap_or_else(|| {
                crate::store::version_id::stamp_from_millis(self.info.last_modified_ms)
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    pub info: PartInfo,
    pub blob: String,
    /// The part blob's data key, sealed, when the upload is encrypted at rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<SealedKey>,
}

fn encode<T: Serialize>(v: &T) -> StoreResult<Vec<u8>> {
    let mut out = vec![FORMAT_V1];
    serde_json::to_writer(&mut out, v).map_err(StoreError::internal)?;
    Ok(out)
}

fn decode<T: DeserializeOwned>(raw: &[u8]) -> StoreResult<T> {
    match raw.split_first() {
        Some((&FORMAT_V1, rest)) => serde_json::from_slice(rest)
            .map_err(|e| StoreError::Internal(format!("catalog record: {e}"))),
        Some((v, _)) => Err(StoreError::Internal(format!(
            "catalog record has unknown format version {v}"
        ))),
        None => Err(StoreError::Internal("empty catalog record".into())),
    }
}

pub fn object_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + 1 + key.len());
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn part_key(upload_id: &str, part: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(upload_id.len() + 5);
    k.extend_from_slice(upload_id.as_bytes());
    k.push(0);
    k.extend_from_slice(&(part as u32).to_be_bytes());
    k
}

/// The smallest byte string greater than every string that starts with `prefix`, if any.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

pub struct Catalog {
    db: std::sync::Arc<Database>,
}

/// What a write released: blobs to delete once the commit is durable.
pub type Released = Vec<String>;

impl Catalog {
    pub fn open(path: &std::path::Path) -> StoreResult<Catalog> {
        // redb's default page cache is 1 GiB; the catalog's hot pages (bucket and key
        // records, inline bodies) fit in far less, and the memory bound counts this figure.
        let db = Database::builder()
            .set_cache_size(CACHE_SIZE)
            .create(path)?;
        let tx = db.begin_write()?;
        {
            tx.open_table(BUCKETS)?;
            tx.open_table(OBJECTS)?;
            tx.open_table(INLINE)?;
            tx.open_table(UPLOADS)?;
            tx.open_table(PARTS)?;
            tx.open_table(VERSIONS)?;
            tx.open_table(VERSION_INLINE)?;
            // A catalog from before the running totals: count once, keep counting after.
            let counted = tx.open_table(TOTALS)?.get(ALL)?.is_some();
            if !counted {
                Catalog::recount_totals(&tx)?;
            }
        }
        tx.commit()?;
        Ok(Catalog {
            db: std::sync::Arc::new(db),
        })
    }

    pub fn database(&self) -> std::sync::Arc<Database> {
        self.db.clone()
    }

    /// Runs `f` in a write transaction of its own and commits it (tests and offline tools;
    /// the daemon batches writes through `Committer`).
    pub fn write<T>(&self, f: impl FnOnce(&WriteTransaction) -> StoreResult<T>) -> StoreResult<T> {
        let tx = self.db.begin_write()?;
        let v = f(&tx)?;
        tx.commit()?;
        Ok(v)
    }

    pub fn list_buckets(&self) -> StoreResult<Vec<BucketInfo>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(BUCKETS)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            let (_, v) = e?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    pub fn head_bucket(&self, name: &str) -> StoreResult<BucketInfo> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(BUCKETS)?;
        match t.get(name)? {
            Some(v) => decode(v.value()),
            None => Err(StoreError::NoSuchBucket(name.into())),
        }
    }

    pub fn create_bucket(tx: &WriteTransaction, info: &BucketInfo) -> StoreResult<()> {
        {
            let mut t = tx.open_table(BUCKETS)?;
            if t.get(info.name.as_str())?.is_some() {
                return Err(StoreError::BucketExists(info.name.clone()));
            }
            t.insert(info.name.as_str(), encode(info)?.as_slice())?;
        }
        Ok(())
    }

    /// Deletes an empty bucket, aborting its unfinished uploads.
    pub fn delete_bucket(tx: &WriteTransaction, name: &str) -> StoreResult<Released> {
        let mut released = Vec::new();
        {
            let mut buckets = tx.open_table(BUCKETS)?;
            if buckets.get(name)?.is_none() {
                return Err(StoreError::NoSuchBucket(name.into()));
            }
            let start = object_key(name, "");
            // Noncurrent versions and delete markers keep a bucket from being deleted too.
            for table in [OBJECTS, VERSIONS] {
                let t = tx.open_table(table)?;
                if let Some(first) = t.range(start.as_slice()..)?.next() {
                    let (k, _) = first?;
                    if k.value().starts_with(&start) {
                        return Err(StoreError::BucketNotEmpty(name.into()));
                    }
                }
            }
            buckets.remove(name)?;
            let mut uploads = tx.open_table(UPLOADS)?;
            let mut parts = tx.open_table(PARTS)?;
            let mut doomed = Vec::new();
            for e in uploads.iter()? {
                let (id, v) = e?;
                let u: UploadInfo = decode(v.value())?;
                if u.bucket == name {
                    doomed.push(id.value().to_owned());
                }
            }
            for id in doomed {
                uploads.remove(id.as_str())?;
                released.extend(remove_parts(&mut parts, &id)?.into_values().map(|p| p.blob));
            }
        }
        Ok(released)
    }

    pub fn get_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> StoreResult<(ObjectRecord, Option<Vec<u8>>)> {
        let tx = self.db.begin_read()?;
        let k = object_key(bucket, key);
        let objects = tx.open_table(OBJECTS)?;
        let Some(v) = objects.get(k.as_slice())? else {
            let buckets = tx.open_table(BUCKETS)?;
            if buckets.get(bucket)?.is_none() {
                return Err(StoreError::NoSuchBucket(bucket.into()));
            }
            return Err(StoreError::NoSuchKey(key.into()));
        };
        let record: ObjectRecord = decode(v.value())?;
        let inline = inline_bytes(&tx, INLINE, &k, &record)?;
        Ok((record, inline))
    }

    /// Makes `record` the key's current version; returns it as stored (with its version id,
    /// in a versioned bucket) and the blobs a replaced version used.
    pub fn put_object(
        tx: &WriteTransaction,
        bucket: &str,
        record: &ObjectRecord,
        inline: Option<&[u8]>,
    ) -> StoreResult<(ObjectInfo, Released)> {
        Self::put_object_if(tx, bucket, record, inline, &WriteCondition::default())?
            .map_err(|c| StoreError::Internal(format!("unconditional put refused by {c}")))
    }

    /// `put_object` if `cond` holds for the object stored under its key in this transaction
    /// (so of two racing create-only writers, whichever the committer applies second sees the
    /// first one's object). A condition that does not hold changes nothing.
    pub fn put_object_if(
        tx: &WriteTransaction,
        bucket: &str,
        record: &ObjectRecord,
        inline: Option<&[u8]>,
        cond: &WriteCondition,
    ) -> StoreResult<Conditional<(ObjectInfo, Released)>> {
        let state = Self::bucket_versioning(tx, bucket)?;
        if let Err(c) = Self::check_condition(tx, bucket, &record.info.key, cond)? {
            return Ok(Err(c));
        }
        Ok(Ok(Self::put_in(tx, bucket, state, record, inline)?))
    }

    /// Decides `cond` against the object under `key` as this transaction sees it.
    fn check_condition(
        tx: &WriteTransaction,
        bucket: &str,
        key: &str,
        cond: &WriteCondition,
    ) -> StoreResult<Conditional<()>> {
        if cond.is_unconditional() {
            return Ok(Ok(()));
        }
        let objects = tx.open_table(OBJECTS)?;
        let current = match objects.get(object_key(bucket, key).as_slice())? {
            Some(v) => Some(decode::<ObjectRecord>(v.value())?.info.etag),
            None => None,
        };
        Ok(cond.check(current.as_deref()))
    }

    /// Makes `record` current under its key, in a bucket in versioning `state` (read once by
    /// the caller, in this transaction). In a bucket that has never been versioned the
    /// old version goes (its blobs are returned); with versioning enabled it becomes
    /// noncurrent and the new one gets an id; suspended, the new one is the `null` version,
    /// replacing any other `null` version of the key.
    fn put_in(
        tx: &WriteTransaction,
        bucket: &str,
        state: Option<Versioning>,
        record: &ObjectRecord,
        inline: Option<&[u8]>,
    ) -> StoreResult<(ObjectInfo, Released)> {
        use crate::store::version_id;
        let mut record = record.clone();
        record.stamp = version_id::next_stamp();
        record.delete_marker = false;
        record.info.version_id = (state == Some(Versioning::Enabled))
            .then(|| version_id::new_id(record.stamp, rand::random()));
        let k = object_key(bucket, &record.info.key);
        let old: Option<ObjectRecord> = match tx.open_table(OBJECTS)?.remove(k.as_slice())? {
            Some(v) => Some(decode(v.value())?),
            None => None,
        };
        let mut released = Vec::new();
        let mut replaced = None;
        if let Some(old) = old {
            if state.is_none()
                || (state == Some(Versioning::Suspended) && old.info.version_id.is_none())
            {
                tx.open_table(INLINE)?.remove(k.as_slice())?;
                replaced = Some(old.info.size);
                released = old.location.blobs();
            } else {
                Self::demote(tx, bucket, old)?;
            }
        }
        if state == Some(Versioning::Suspended) {
            released.extend(Self::remove_null_version(tx, bucket, &record.info.key)?);
        }
        adjust_totals(tx, Some(record.info.size), replaced)?;
        tx.open_table(OBJECTS)?
            .insert(k.as_slice(), encode(&record)?.as_slice())?;
        if let Some(data) = inline {
            tx.open_table(INLINE)?.insert(k.as_slice(), data)?;
        }
        Ok((record.info, released))
    }

    /// Replaces an object's client metadata, keeping its bytes; returns the new info.
    pub fn update_attrs(
        tx: &WriteTransaction,
        bucket: &str,
        key: &str,
        attrs: crate::store::ObjectAttrs,
        last_modified_ms: i64,
    ) -> StoreResult<ObjectInfo> {
        Self::update_info(tx, bucket, key, None, |info| {
            // The bytes stay, and so does how they are encrypted.
            let encryption = info.attrs.encryption.take();
            info.attrs = attrs;
            info.attrs.encryption = encryption;
            info.attrs.customer_key = None;
            info.last_modified_ms = last_modified_ms;
        })
    }

    /// Changes the entry of the current version, or of `version`, in place.
    fn update_info(
        tx: &WriteTransaction,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        change: impl FnOnce(&mut ObjectInfo),
    ) -> StoreResult<ObjectInfo> {
        let k = object_key(bucket, key);
        let current: Option<ObjectRecord> = match tx.open_table(OBJECTS)?.get(k.as_slice())? {
            Some(v) => Some(decode(v.value())?),
            None => None,
        };
        let (table_key, table, mut record) = match (current, version) {
            (Some(r), None) => (k, OBJECTS, r),
            (Some(r), Some(v)) if r.info.version_name() == v => (k, OBJECTS, r),
            (_, Some(v)) => {
                let (vk, r) = Self::find_version(tx, bucket, key, v)?;
                if r.delete_marker {
                    return Err(StoreError::DeleteMarker(v.to_owned()));
                }
                (vk, VERSIONS, r)
            }
            (None, None) => {
                Self::bucket_versioning(tx, bucket)?;
                return Err(StoreError::NoSuchKey(key.to_owned()));
            }
        };
        change(&mut record.info);
        tx.open_table(table)?
            .insert(table_key.as_slice(), encode(&record)?.as_slice())?;
        Ok(record.info)
    }

    /// Replaces the tags of the current version or of `version`; nothing else changes,
    /// Last-Modified included.
    pub fn set_tags(
        tx: &WriteTransaction,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        tags: std::collections::BTreeMap<String, String>,
    ) -> StoreResult<ObjectInfo> {
        Self::update_info(tx, bucket, key, version, |info| info.attrs.tags = tags)
    }

    /// Sets anonymous read of the current version or of `version`; nothing else changes.
    pub fn set_public_read(
        tx: &WriteTransaction,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        public: bool,
    ) -> StoreResult<ObjectInfo> {
        Self::update_info(tx, bucket, key, version, |info| {
            info.attrs.public_read = public
        })
    }

    /// `delete_object` if `cond` holds for the object there, decided in the same transaction.
    pub fn delete_object_if(
        tx: &WriteTransaction,
        bucket: &str,
        key: &str,
        cond: &crate::store::DeleteCondition,
    ) -> StoreResult<crate::store::Conditional<(Released, Deleted)>> {
        if !cond.is_unconditional() {
            let k = object_key(bucket, key);
            let existing = match tx.open_table(OBJECTS)?.get(k.as_slice())? {
                Some(v) => Some(decode::<ObjectRecord>(v.value())?.info),
                None => None,
            };
            if let Err(failed) = cond.check(key, existing.as_ref())? {
                return Ok(Err(failed));
            }
        }
        Self::delete_object(tx, bucket, key).map(Ok)
    }

    /// Deletes the key's current version. In a versioned bucket nothing is removed but a
    /// delete marker becomes current (the `null` one when suspended, replacing the `null`
    /// version), as in S3, even for a key that has no object.
    pub fn delete_object(
        tx: &WriteTransaction,
        bucket: &str,
        key: &str,
    ) -> StoreResult<(Released, Deleted)> {
        use crate::store::version_id;
        let state = Self::bucket_versioning(tx, bucket)?;
        let k = object_key(bucket, key);
        let old = tx
            .open_table(OBJECTS)?
            .remove(k.as_slice())?
            .map(|v| decode::<ObjectRecord>(v.value()))
            .transpose()?;
        let mut released = Vec::new();
        if let Some(old) = old {
            if state.is_none()
                || (state == Some(Versioning::Suspended) && old.info.version_id.is_none())
            {
                released = old.location.blobs();
                tx.open_table(INLINE)?.remove(k.as_slice())?;
                adjust_totals(tx, None, Some(old.info.size))?;
            } else {
                Self::demote(tx, bucket, old)?;
            }
        }
        let Some(state) = state else {
            return Ok((released, Deleted::default()));
        };
        if state == Versioning::Suspended {
            released.extend(Self::remove_null_version(tx, bucket, key)?);
        }
        let stamp = version_id::next_stamp();
        let id = (state == Versioning::Enabled).then(|| version_id::new_id(stamp, rand::random()));
        let mut info = ObjectInfo::key_only(key);
        info.last_modified_ms = crate::store::now_ms();
        info.version_id = id;
        let marker = ObjectRecord {
            info,
            location: Location::Blobs {
                segments: Vec::new(),
            },
            stamp,
            delete_marker: true,
        };
        let name = marker.info.version_name().to_owned();
        Self::demote(tx, bucket, marker)?;
        Ok((
            released,
            Deleted {
                version_id: Some(name),
                delete_marker: true,
            },
        ))
    }

    pub fn list_objects(&self, bucket: &str, q: &ListQuery) -> StoreResult<ListPage> {
        let tx = self.db.begin_read()?;
        if tx.open_table(BUCKETS)?.get(bucket)?.is_none() {
            return Err(StoreError::NoSuchBucket(bucket.into()));
        }
        let objects = tx.open_table(OBJECTS)?;
        let base = object_key(bucket, "");
        let mut start = object_key(bucket, &q.prefix);
        if let Some(after) = &q.after {
            let a = object_key(bucket, after);
            if a > start {
                start = a;
            }
        }
        let mut scoped = base.clone();
        scoped.extend_from_slice(q.prefix.as_bytes());
        let end = prefix_end(&scoped);
        let delimiter = q.delimiter.as_deref().filter(|d| !d.is_empty());
        // `paginate` decides the page; this feeds it at most one key per common prefix (a
        // placeholder; only its key is read), seeking past the rest of the prefix instead of
        // reading and decoding every key under it.
        // One more than a page, plus the common prefix equal to `after` that `paginate` drops.
        let wanted = q.max_keys.saturating_add(2);
        let mut items: Vec<ObjectInfo> = Vec::new();
        let mut cursor = start;
        'seek: loop {
            let iter = match &end {
                Some(end) if cursor.as_slice() >= end.as_slice() => break,
                Some(end) => objects.range(cursor.as_slice()..end.as_slice())?,
                None => objects.range(cursor.as_slice()..)?,
            };
            for e in iter {
                if items.len() >= wanted {
                    break 'seek;
                }
                let (k, v) = e?;
                let raw_key = k.value().get(base.len()..).unwrap_or_default();
                let key = String::from_utf8_lossy(raw_key);
                if q.after.as_deref().is_some_and(|a| key.as_ref() <= a) {
                    continue; // the range starts at `after` itself
                }
                let folded = delimiter.and_then(|d| {
                    let rest = key.get(q.prefix.len()..)?;
                    rest.find(d).map(|i| q.prefix.len() + i + d.len())
                });
                if let Some(cut) = folded {
                    let common = &key[..cut];
                    // A stand-in for the first key under the prefix (not decoded): `paginate`
                    // reads only its key, which it folds into the prefix.
                    items.push(ObjectInfo::key_only(&key));
                    match prefix_end(&object_key(bucket, common)) {
                        Some(next) => {
                            cursor = next;
                            continue 'seek;
                        }
                        None => break 'seek,
                    }
                }
                items.push(decode::<ObjectRecord>(v.value())?.info);
            }
            break;
        }
        Ok(listing::paginate(items, q))
    }

    pub fn create_upload(tx: &WriteTransaction, info: &UploadInfo) -> StoreResult<()> {
        {
            if tx.open_table(BUCKETS)?.get(info.bucket.as_str())?.is_none() {
                return Err(StoreError::NoSuchBucket(info.bucket.clone()));
            }
            tx.open_table(UPLOADS)?
                .insert(info.upload_id.as_str(), encode(info)?.as_slice())?;
        }
        Ok(())
    }

    pub fn get_upload(&self, bucket: &str, key: &str, upload_id: &str) -> StoreResult<UploadInfo> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(UPLOADS)?;
        upload_in(
            t.get(upload_id)?.map(|v| v.value().to_vec()),
            bucket,
            key,
            upload_id,
        )
    }

    /// Records a part; returns the blob of a part it replaced.
    pub fn put_part(
        tx: &WriteTransaction,
        bucket: &str,
        key: &str,
        upload_id: &str,
        record: &PartRecord,
    ) -> StoreResult<Released> {
        let released;
        {
            let uploads = tx.open_table(UPLOADS)?;
            upload_in(
                uploads.get(upload_id)?.map(|v| v.value().to_vec()),
                bucket,
                key,
                upload_id,
            )?;
            let mut parts = tx.open_table(PARTS)?;
            let pk = part_key(upload_id, record.info.part_number);
            released = match parts.insert(pk.as_slice(), encode(record)?.as_slice())? {
                Some(old) => vec![decode::<PartRecord>(old.value())?.blob],
                None => Vec::new(),
            };
        }
        Ok(released)
    }

    pub fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> StoreResult<(UploadInfo, Vec<PartInfo>)> {
        let tx = self.db.begin_read()?;
        let upload = upload_in(
            tx.open_table(UPLOADS)?
                .get(upload_id)?
                .map(|v| v.value().to_vec()),
            bucket,
            key,
            upload_id,
        )?;
        let parts = tx.open_table(PARTS)?;
        let mut out = Vec::new();
        let start = part_key(upload_id, 0);
        for e in parts.range(start.as_slice()..)? {
            let (k, v) = e?;
            if !k.value().starts_with(&start[..upload_id.len() + 1]) {
                break;
            }
            out.push(decode::<PartRecord>(v.value())?.info);
        }
        Ok((upload, out))
    }

    pub fn list_uploads(&self, bucket: Option<&str>) -> StoreResult<Vec<UploadInfo>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(UPLOADS)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            let (_, v) = e?;
            let u: UploadInfo = decode(v.value())?;
            if bucket.is_none_or(|b| b == u.bucket) {
                out.push(u);
            }
        }
        out.sort_by(|a, b| (&a.key, a.initiated_ms).cmp(&(&b.key, b.initiated_ms)));
        Ok(out)
    }

    /// Turns the upload into an object in one transaction, if `cond` holds for the object
    /// under `key` there; returns blobs no longer needed. When `cond` does not hold, the
    /// upload and its parts stay as they were.
    pub fn complete_upload_if(
        tx: &WriteTransaction,
        bucket: &str,
        key: &str,
        upload_id: &str,
        requested: &[CompletedPart],
        last_modified_ms: i64,
        cond: &WriteCondition,
    ) -> StoreResult<Conditional<(ObjectInfo, Released)>> {
        let info;
        let mut released;
        {
            let state = Self::bucket_versioning(tx, bucket)?;
            let mut uploads = tx.open_table(UPLOADS)?;
            let upload = upload_in(
                uploads.get(upload_id)?.map(|v| v.value().to_vec()),
                bucket,
                key,
                upload_id,
            )?;
            let mut parts_t = tx.open_table(PARTS)?;
            let stored_records = read_parts(&parts_t, upload_id)?;
            let stored: BTreeMap<i32, PartInfo> = stored_records
                .iter()
                .map(|(n, r)| (*n, r.info.clone()))
                .collect();
            let (chosen, etag) = select_parts(requested, &stored)?;
            // Decided last among the checks and before any change, so a refused completion
            // leaves the transaction (and the upload) as it found them.
            if let Err(c) = Self::check_condition(tx, bucket, key, cond)? {
                return Ok(Err(c));
            }
            let chosen_numbers: HashSet<i32> = chosen.iter().map(|p| p.part_number).collect();
            let segments: Vec<Segment> = chosen
                .iter()
                .filter_map(|p| {
                    stored_records.get(&p.part_number).map(|r| Segment {
                        blob: r.blob.clone(),
                        size: r.info.size,
                        sealed: r.sealed.clone(),
                    })
                })
                .collect();
            // With an algorithm named at CreateMultipartUpload, the object carries S3's
            // COMPOSITE checksum of its parts, or with FULL_OBJECT the CRC of its whole body
            // combined from theirs (none when a part was sent without one).
            let checksums = upload
                .checksum_algorithm
                .as_deref()
                .and_then(|alg| {
                    let sums: Vec<(&crate::store::Checksums, u64)> = chosen
                        .iter()
                        .filter_map(|p| stored_records.get(&p.part_number))
                        .map(|r| (&r.info.checksums, r.info.size))
                        .collect();
                    if upload.full_object {
                        crate::store::spool::full_object_checksum(alg, &sums)
                    } else {
                        let sums: Vec<_> = sums.into_iter().map(|(c, _)| c).collect();
                        crate::store::spool::composite_checksum(alg, &sums)
                    }
                })
                .unwrap_or_default();
            let made = ObjectInfo {
                key: key.to_owned(),
                size: segments.iter().map(|s| s.size).sum(),
                etag,
                last_modified_ms,
                attrs: upload.attrs.clone(),
                checksums,
                parts: segments.len() as u32,
                version_id: None,
            };
            let record = ObjectRecord::new(made, Location::Blobs { segments });
            uploads.remove(upload_id)?;
            let removed = remove_parts(&mut parts_t, upload_id)?;
            released = removed
                .into_iter()
                .filter(|(n, _)| !chosen_numbers.contains(n))
                .map(|(_, r)| r.blob)
                .collect::<Vec<_>>();
            drop(uploads);
            drop(parts_t);
            let (stored, replaced) = Self::put_in(tx, bucket, state, &record, None)?;
            info = stored;
            released.extend(replaced);
        }
        Ok(Ok((info, released)))
    }

    pub fn abort_upload(
        tx: &WriteTransaction,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> StoreResult<Released> {
        let released;
        {
            let mut uploads = tx.open_table(UPLOADS)?;
            upload_in(
                uploads.get(upload_id)?.map(|v| v.value().to_vec()),
                bucket,
                key,
                upload_id,
            )?;
            uploads.remove(upload_id)?;
            let mut parts = tx.open_table(PARTS)?;
            released = remove_parts(&mut parts, upload_id)?
                .into_values()
                .map(|r| r.blob)
                .collect();
        }
        Ok(released)
    }

    /// Every blob some record names: object segments and uploaded parts.
    /// Every blob a record names, with (bytes, objects) counted from the records (what the
    /// running totals must agree with), in one pass.
    pub fn referenced_blobs(&self) -> StoreResult<((u64, u64), HashSet<String>)> {
        let tx = self.db.begin_read()?;
        let mut set = HashSet::new();
        let (mut bytes, mut objects) = (0u64, 0u64);
        for table in [OBJECTS, VERSIONS] {
            let (b, n) = tally(&tx.open_table(table)?, |blobs| set.extend(blobs))?;
            bytes += b;
            objects += n;
        }
        for e in tx.open_table(PARTS)?.iter()? {
            let (_, v) = e?;
            set.insert(decode::<PartRecord>(v.value())?.blob);
        }
        Ok(((bytes, objects), set))
    }

    /// (bytes, objects) stored, from the running totals.
    pub fn totals(&self) -> StoreResult<(u64, u64)> {
        let tx = self.db.begin_read()?;
        Ok(tx
            .open_table(TOTALS)?
            .get(ALL)?
            .map_or((0, 0), |v| v.value()))
    }
}

impl Catalog {
    /// Sets the running totals to a count of the records (`fsck --recover`).
    pub fn recount_totals(tx: &WriteTransaction) -> StoreResult<()> {
        let (mut bytes, mut count) = (0u64, 0u64);
        for table in [OBJECTS, VERSIONS] {
            let (b, n) = tally(&tx.open_table(table)?, |_| {})?;
            bytes += b;
            count += n;
        }
        tx.open_table(TOTALS)?.insert(ALL, (bytes, count))?;
        Ok(())
    }
}

/// The bytes of an inline record, kept in `table` under `k` (none for a record in blobs).
fn inline_bytes(
    tx: &redb::ReadTransaction,
    table: TableDefinition<&[u8], &[u8]>,
    k: &[u8],
    record: &ObjectRecord,
) -> StoreResult<Option<Vec<u8>>> {
    if record.location != Location::Inline {
        return Ok(None);
    }
    let data = tx.open_table(table)?.get(k)?.map(|v| v.value().to_vec());
    data.map(Some).ok_or_else(|| {
        StoreError::Internal(format!("inline bytes of `{}` are missing", record.info.key))
    })
}

/// (bytes, objects) of the versions in `table` (delete markers hold none), handing each
/// record's blobs to `blobs`.
fn tally<T>(table: &T, mut blobs: impl FnMut(Vec<String>)) -> StoreResult<(u64, u64)>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    let (mut bytes, mut count) = (0u64, 0u64);
    for e in table.iter()? {
        let (_, v) = e?;
        let record = decode::<ObjectRecord>(v.value())?;
        if !record.delete_marker {
            bytes += record.info.size;
            count += 1;
        }
        blobs(record.location.blobs());
    }
    Ok((bytes, count))
}

/// Counts an object of `added` bytes in and one of `removed` bytes out of the totals.
fn adjust_totals(
    tx: &WriteTransaction,
    added: Option<u64>,
    removed: Option<u64>,
) -> StoreResult<()> {
    let mut t = tx.open_table(TOTALS)?;
    let (mut bytes, mut count) = t.get(ALL)?.map_or((0, 0), |v| v.value());
    if let Some(size) = added {
        bytes = bytes.saturating_add(size);
        count = count.saturating_add(1);
    }
    if let Some(size) = removed {
        bytes = bytes.saturating_sub(size);
        count = count.saturating_sub(1);
    }
    t.insert(ALL, (bytes, count))?;
    Ok(())
}

fn upload_in(
    raw: Option<Vec<u8>>,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> StoreResult<UploadInfo> {
    let Some(raw) = raw else {
        return Err(StoreError::NoSuchUpload(upload_id.into()));
    };
    let u: UploadInfo = decode(&raw)?;
    if u.bucket != bucket || u.key != key {
        return Err(StoreError::NoSuchUpload(upload_id.into()));
    }
    Ok(u)
}

fn read_parts(
    parts: &impl ReadableTable<&'static [u8], &'static [u8]>,
    upload_id: &str,
) -> StoreResult<BTreeMap<i32, PartRecord>> {
    let start = part_key(upload_id, 0);
    let scope = &start[..upload_id.len() + 1];
    let mut out = BTreeMap::new();
    for e in parts.range(start.as_slice()..)? {
        let (k, v) = e?;
        if !k.value().starts_with(scope) {
            break;
        }
        let r: PartRecord = decode(v.value())?;
        out.insert(r.info.part_number, r);
    }
    Ok(out)
}

fn remove_parts(
    parts: &mut redb::Table<&'static [u8], &'static [u8]>,
    upload_id: &str,
) -> StoreResult<BTreeMap<i32, PartRecord>> {
    let found = read_parts(parts, upload_id)?;
    for n in found.keys() {
        parts.remove(part_key(upload_id, *n).as_slice())?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ObjectAttrs;

    fn info(key: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size,
            etag: "e".into(),
            last_modified_ms: 1,
            attrs: ObjectAttrs::default(),
            checksums: Default::default(),
            parts: 0,
            version_id: None,
        }
    }

    #[test]
    fn prefix_end_is_the_next_string() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }

    /// The catalog's listing seeks past a common prefix once it has been folded, instead of
    /// reading every key under it; every page must still be what the plain `paginate` over
    /// all keys gives, for every prefix, delimiter, marker and page size.
    #[test]
    fn seeking_listings_match_the_plain_pagination() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(&dir.path().join("catalog.redb")).unwrap();
        let bucket = BucketInfo::new("b", 0);
        cat.write(|tx| Catalog::create_bucket(tx, &bucket)).unwrap();
        let other = BucketInfo::new("c", 0);
        cat.write(|tx| Catalog::create_bucket(tx, &other)).unwrap();
        let keys = [
            "a", "a/", "a/b", "a/b/c", "a/c", "a/c/d", "a//x", "ab", "b/1", "b/2", "b/3/x", "c",
            "d/e/f", "d/e/g", "ä/x", "z/", "z/z",
        ];
        for k in keys {
            let rec = ObjectRecord::new(info(k, k.len() as u64), Location::Inline);
            cat.write(|tx| Catalog::put_object(tx, "b", &rec, Some(b"x")))
                .unwrap();
        }
        // A neighbouring bucket must never leak into b's listings.
        let rec = ObjectRecord::new(info("a/zzz", 1), Location::Inline);
        cat.write(|tx| Catalog::put_object(tx, "c", &rec, Some(b"x")))
            .unwrap();
        let all: Vec<ObjectInfo> = keys.iter().map(|k| info(k, k.len() as u64)).collect();
        let mut sorted = all.clone();
        sorted.sort_by(|a, b| a.key.cmp(&b.key));
        let markers = [
            None,
            Some("a"),
            Some("a/"),
            Some("a/b"),
            Some("b/"),
            Some("b/2"),
            Some("zz"),
        ];
        for prefix in ["", "a", "a/", "b/", "d/", "q"] {
            for delimiter in [None, Some("/"), Some("b"), Some("//")] {
                for after in markers {
                    for max_keys in [1usize, 2, 3, 1000] {
                        let q = ListQuery {
                            prefix: prefix.into(),
                            delimiter: delimiter.map(Into::into),
                            after: after.map(Into::into),
                            max_keys,
                        };
                        let want = listing::paginate(sorted.clone(), &q);
                        let got = cat.list_objects("b", &q).unwrap();
                        let keys_of = |p: &ListPage| {
                            (
                                p.objects.iter().map(|o| o.key.clone()).collect::<Vec<_>>(),
                                p.common_prefixes.clone(),
                                p.is_truncated,
                                p.last.clone(),
                            )
                        };
                        assert_eq!(keys_of(&got), keys_of(&want), "{q:?}");
                    }
                }
            }
        }
    }

    /// Random operations against a BTreeMap model, then a reopen: the catalog must agree.
    #[test]
    fn random_operations_match_a_model_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.redb");
        let cat = Catalog::open(&path).unwrap();
        let bucket = BucketInfo::new("b", 0);
        cat.write(|tx| Catalog::create_bucket(tx, &bucket)).unwrap();
        let mut model: BTreeMap<String, u64> = BTreeMap::new();
        let mut seed = 0x9E3779B97F4A7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let keys = ["a", "a/b", "a/b/c", "b", "ä", "a b", "z/"];
        for _ in 0..500 {
            let key = keys[(next() % keys.len() as u64) as usize];
            match next() % 3 {
                0 | 1 => {
                    let size = next() % 100;
                    let rec = ObjectRecord::new(info(key, size), Location::Inline);
                    let data = vec![1u8; size as usize];
                    cat.write(|tx| Catalog::put_object(tx, "b", &rec, Some(&data)))
                        .unwrap();
                    model.insert(key.into(), size);
                }
                _ => {
                    cat.write(|tx| Catalog::delete_object(tx, "b", key))
                        .unwrap();
                    model.remove(key);
                }
            }
        }
        let check = |cat: &Catalog| {
            let page = cat
                .list_objects(
                    "b",
                    &ListQuery {
                        max_keys: 1000,
                        ..Default::default()
                    },
                )
                .unwrap();
            let got: Vec<(String, u64)> = page
                .objects
                .iter()
                .map(|o| (o.key.clone(), o.size))
                .collect();
            let want: Vec<(String, u64)> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
            assert_eq!(got, want);
            // The running totals (what /metrics reads) agree with a full count.
            let want_totals = (model.values().sum::<u64>(), model.len() as u64);
            assert_eq!(cat.totals().unwrap(), want_totals);
            assert_eq!(cat.referenced_blobs().unwrap().0, want_totals);
            for (k, size) in &model {
                let (_, data) = cat.get_object("b", k).unwrap();
                assert_eq!(data.unwrap().len() as u64, *size);
            }
        };
        check(&cat);
        drop(cat);
        let cat = Catalog::open(&path).unwrap();
        check(&cat);
        assert!(matches!(
            cat.write(|tx| Catalog::delete_bucket(tx, "b")),
            Err(StoreError::BucketNotEmpty(_)) | Ok(_)
        ));
    }

    #[test]
    fn missing_things_have_distinct_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(&dir.path().join("c.redb")).unwrap();
        assert!(matches!(
            cat.get_object("nob", "k"),
            Err(StoreError::NoSuchBucket(_))
        ));
        let bucket = BucketInfo::new("b", 0);
        cat.write(|tx| Catalog::create_bucket(tx, &bucket)).unwrap();
        assert!(matches!(
            cat.write(|tx| Catalog::create_bucket(tx, &bucket)),
            Err(StoreError::BucketExists(_))
        ));
        assert!(matches!(
            cat.get_object("b", "k"),
            Err(StoreError::NoSuchKey(_))
        ));
        assert!(matches!(
            cat.write(|tx| Catalog::abort_upload(tx, "b", "k", "nope")),
            Err(StoreError::NoSuchUpload(_))
        ));
        let rec = ObjectRecord::new(info("k", 1), Location::Inline);
        cat.write(|tx| Catalog::put_object(tx, "b", &rec, Some(b"x")))
            .unwrap();
        assert!(matches!(
            cat.write(|tx| Catalog::delete_bucket(tx, "b")),
            Err(StoreError::BucketNotEmpty(_))
        ));
        cat.write(|tx| Catalog::delete_object(tx, "b", "k"))
            .unwrap();
        cat.write(|tx| Catalog::delete_bucket(tx, "b")).unwrap();
    }

    #[test]
    fn a_corrupted_record_is_an_error_not_a_panic() {
        assert!(decode::<ObjectRecord>(&[9, b'{']).is_err());
        assert!(decode::<ObjectRecord>(&[FORMAT_V1, b'{']).is_err());
        assert!(decode::<ObjectRecord>(&[]).is_err());
    }
}
