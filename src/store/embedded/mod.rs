//! The embedded store (default): object bytes under `data_dir/blobs/` written through OpenDAL's
//! fs service, names chosen here (never the S3 key, so any key is safe), and the catalog in
//! redb (`catalog.rs`). Small objects live inline in the catalog.
//!
//! Write order, so that a crash never exposes a partial object: spool to `tmp/` (fsynced),
//! rename into `blobs/`, fsync the directory, commit the catalog. Blobs a commit released are
//! deleted after it; anything left over by a crash is swept by `open`.
//! Reads open every blob file before answering, so a concurrent overwrite or delete cannot
//! cut a response short (an unlinked file stays readable while open).

pub mod catalog;
pub mod committer;
mod sealed_io;

use std::collections::HashSet;
use std::io::SeekFrom;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use opendal::Operator;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use self::catalog::{Catalog, Location, ObjectRecord, PartRecord, Segment};
use self::committer::Committer;
use super::sealing::{self, CustomerKey, DataKey, Encryption, MasterKey, SealError, Sealer};
use super::spool::SpoolData;
use super::*;

const READ_CHUNK: usize = 1 << 20;

pub struct EmbeddedStore {
    catalog: Arc<Catalog>,
    committer: Committer,
    op: Operator,
    root: PathBuf,
    /// SSE-S3's key (`with_master_key`); without one, SSE-S3 writes and reads fail.
    master: Option<Arc<MasterKey>>,
}

/// What `fsck` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FsckReport {
    pub objects: usize,
    pub blobs: usize,
    /// Blobs in `blobs/` that no catalog entry names.
    pub orphan_blobs: usize,
    /// Blobs the catalog names that are not on disk.
    pub missing_blobs: usize,
    /// `catalog.redb` is missing (then every blob counts as orphaned).
    pub catalog_missing: bool,
    /// Blobs a start moved to `quarantine/` (orphans kept for the operator).
    pub quarantined_blobs: usize,
    /// The running totals (what `/metrics` reports) agree with a count of the records.
    pub totals_ok: bool,
}

impl FsckReport {
    /// A report for a data dir whose catalog is missing, without creating one.
    pub fn without_catalog(root: &Path) -> std::io::Result<FsckReport> {
        let blobs = list_blobs_if_any(&root.join("blobs"))?.len();
        Ok(FsckReport {
            blobs,
            orphan_blobs: blobs,
            catalog_missing: true,
            quarantined_blobs: list_blobs_if_any(&root.join(QUARANTINE).join("blobs"))?.len(),
            totals_ok: true,
            ..FsckReport::default()
        })
    }

    /// Whether the store needs the operator (the exit status of `pixelport fsck`).
    pub fn is_clean(&self) -> bool {
        self.orphan_blobs == 0 && self.missing_blobs == 0 && !self.catalog_missing
    }

    /// What each finding means and what to do about it, for a person.
    pub fn explain(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.catalog_missing {
            out.push(format!(
                "catalog.redb is missing, and blobs/ holds {} blobs. The catalog is where \
                 bucket names, keys and metadata live; blobs hold only bytes. Restore \
                 catalog.redb from a backup if you have one (then run fsck again). If not, \
                 `pixelport fsck --recover` makes a new catalog and gives every blob back as \
                 an object of the bucket `{RECOVERED_BUCKET}` (its key is the blob's name, its \
                 content type sniffed; the original keys cannot be recovered).",
                self.blobs
            ));
        } else if self.orphan_blobs > 0 {
            out.push(format!(
                "{} blobs in blobs/ are named by no catalog entry: left by an interrupted \
                 write, or the catalog lost their records. The next start moves them to \
                 quarantine/; `pixelport fsck --recover` gives them back as objects of the \
                 bucket `{RECOVERED_BUCKET}`.",
                self.orphan_blobs
            ));
        }
        if self.quarantined_blobs > 0 {
            out.push(format!(
                "{} blobs wait in quarantine/ (moved there by a start, never deleted). Check \
                 them with `pixelport fsck --recover` (objects of `{RECOVERED_BUCKET}`), or \
                 delete the folder once you know they are not needed.",
                self.quarantined_blobs
            ));
        }
        if self.missing_blobs > 0 {
            out.push(format!(
                "{} blobs the catalog names are missing on disk: those objects cannot be read \
                 (GET answers an error). Put the files back from a backup of blobs/ if you \
                 have one; otherwise delete the affected objects with any S3 client.",
                self.missing_blobs
            ));
        }
        if !self.totals_ok {
            out.push(
                "the running totals shown by /metrics disagree with the catalog; \
                 `pixelport fsck --recover` recounts them."
                    .into(),
            );
        }
        out
    }
}

/// The bucket `fsck --recover` gives orphaned blobs back in.
pub const RECOVERED_BUCKET: &str = "pixelport-recovered";

/// What `fsck --recover` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Recovery {
    pub bucket: String,
    /// Keys of the objects made from orphaned or quarantined blobs.
    pub recovered: Vec<String>,
    /// The running totals were recounted.
    pub totals_recounted: bool,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store under `root`, which is also the spool's root.
    /// With `sweep` (the daemon's start), blobs no catalog entry names are moved to
    /// `quarantine/`, never deleted; and a missing catalog beside existing blobs stops the
    /// start: every blob would look orphaned, and they are the only copy of the objects.
    pub fn open(op: Operator, root: &Path, sweep: bool) -> StoreResult<EmbeddedStore> {
        let blobs_dir = root.join("blobs");
        prepare_shards(root, &blobs_dir)
            .map_err(|e| StoreError::Internal(format!("{}: {e}", blobs_dir.display())))?;
        let catalog_path = root.join("catalog.redb");
        if sweep && !catalog_path.exists() {
            let blobs = list_blobs(&blobs_dir).map_err(StoreError::internal)?;
            if !blobs.is_empty() {
                return Err(StoreError::Internal(format!(
                    "{} is missing, but {} holds {} blobs: refusing to start, because a new \
                     catalog would treat every one of them as orphaned. Restore catalog.redb \
                     from a backup (or put back the file that was moved), then start again. \
                     Without a backup, `pixelport fsck --recover` makes a new catalog and \
                     gives every blob back as an object of the bucket `{RECOVERED_BUCKET}` \
                     (the original keys are lost with the catalog). To start afresh instead, \
                     move {} away first.",
                    catalog_path.display(),
                    blobs_dir.display(),
                    blobs.len(),
                    blobs_dir.display(),
                )));
            }
        }
        let catalog = Catalog::open(&catalog_path)?;
        let committer = Committer::start(catalog.database()).map_err(StoreError::internal)?;
        let store = EmbeddedStore {
            catalog: Arc::new(catalog),
            committer,
            op,
            root: root.to_owned(),
            master: None,
        };
        let report = store.check(sweep)?;
        if sweep && report.orphan_blobs > 0 {
            tracing::warn!(
                orphans = report.orphan_blobs,
                quarantine = %root.join(QUARANTINE).display(),
                "moved blobs that no catalog entry names to the quarantine folder (left by \
                 an interrupted write, or a damaged catalog): check them, then delete the folder"
            );
        }
        if report.missing_blobs > 0 {
            tracing::error!(
                missing = report.missing_blobs,
                "the catalog names blobs that are missing on disk"
            );
        }
        Ok(store)
    }

    /// Offline repair (the daemon must be stopped; redb's lock refuses a second opener):
    /// every blob no catalog entry names, in `blobs/` or in `quarantine/`, becomes an object
    /// of `RECOVERED_BUCKET` keyed by the blob's name, so its bytes can be read back with any
    /// S3 client. Keys and metadata live only in the catalog and cannot be recovered; a
    /// multipart object's parts come back as separate objects. Recounts the running totals.
    pub fn recover(&self) -> StoreResult<Recovery> {
        let mut out = Recovery {
            bucket: RECOVERED_BUCKET.to_owned(),
            ..Recovery::default()
        };
        // Quarantined blobs go back to their shard first, then count as orphans.
        let quarantine = self.root.join(QUARANTINE);
        for blob in list_blobs_if_any(&quarantine.join("blobs")).map_err(StoreError::internal)? {
            let to = self.root.join(&blob);
            if to.exists() {
                continue;
            }
            std::fs::rename(quarantine.join(&blob), &to).map_err(StoreError::internal)?;
            if let Some(dir) = to.parent() {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(StoreError::internal)?;
            }
        }
        let (counted, referenced) = self.catalog.referenced_blobs()?;
        let on_disk = list_blobs(&self.root.join("blobs")).map_err(StoreError::internal)?;
        let mut orphans: Vec<&String> = on_disk.difference(&referenced).collect();
        orphans.sort();
        if !orphans.is_empty() {
            let info = BucketInfo::new(RECOVERED_BUCKET, now_ms());
            match self.catalog.write(|tx| Catalog::create_bucket(tx, &info)) {
                Ok(()) | Err(StoreError::BucketExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        for blob in orphans {
            let record = self.record_for_orphan(blob)?;
            let key = record.info.key.clone();
            let create_only = WriteCondition {
                if_none_match: Some(ETagMatch::Any),
                ..WriteCondition::default()
            };
            let put = self.catalog.write(|tx| {
                Catalog::put_object_if(tx, RECOVERED_BUCKET, &record, None, &create_only)
            })?;
            match put {
                Ok(_) => out.recovered.push(key),
                Err(_) => tracing::warn!(
                    blob,
                    key,
                    "a recovered object of that key exists; blob left as it is"
                ),
            }
        }
        if self.catalog.totals()? != counted {
            self.catalog.write(Catalog::recount_totals)?;
            out.totals_recounted = true;
        }
        Ok(out)
    }

    /// The object record `recover` makes for the orphaned blob `blob` (a path under the root).
    fn record_for_orphan(&self, blob: &str) -> StoreResult<ObjectRecord> {
        use md5::Digest;
        use std::io::Read;
        let path = self.root.join(blob);
        let mut file = std::fs::File::open(&path).map_err(StoreError::internal)?;
        let meta = file.metadata().map_err(StoreError::internal)?;
        let mut md5 = md5::Md5::new();
        let mut head: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = file.read(&mut buf).map_err(StoreError::internal)?;
            if n == 0 {
                break;
            }
            if head.len() < 64 {
                head.extend_from_slice(&buf[..n.min(64 - head.len())]);
            }
            md5.update(&buf[..n]);
        }
        let content_type = crate::imaging::decode::sniff(&head)
            .map(|f| crate::imaging::negotiate::mime_type(f).to_owned())
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        let modified_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or_else(now_ms, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let name = blob.rsplit('/').next().unwrap_or(blob).to_owned();
        Ok(ObjectRecord::new(
            ObjectInfo {
                key: name,
                size: meta.len(),
                etag: hex::encode(md5.finalize()),
                last_modified_ms: modified_ms,
                attrs: ObjectAttrs {
                    content_type: Some(content_type),
                    ..ObjectAttrs::default()
                },
                checksums: Default::default(),
                parts: 0,
                version_id: None,
            },
            Location::Blobs {
                segments: vec![Segment {
                    blob: blob.to_owned(),
                    size: meta.len(),
                    sealed: None,
                }],
            },
        ))
    }

    /// Compares catalog and blob files; with `sweep`, moves orphaned blobs into
    /// `quarantine/` (same relative path), where nothing reads or deletes them.
    pub fn check(&self, sweep: bool) -> StoreResult<FsckReport> {
        let (counted, referenced) = self.catalog.referenced_blobs()?;
        let on_disk = list_blobs(&self.root.join("blobs")).map_err(StoreError::internal)?;
        let mut orphans = 0;
        for blob in on_disk.difference(&referenced) {
            orphans += 1;
            if sweep {
                let to = self.root.join(QUARANTINE).join(blob);
                let moved = to
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::rename(self.root.join(blob), &to));
                if let Err(e) = moved {
                    tracing::warn!(blob, error = %e, "cannot move an orphaned blob to quarantine; left in place");
                }
            }
        }
        let missing = referenced.difference(&on_disk).count();
        Ok(FsckReport {
            objects: usize::try_from(counted.1).unwrap_or(usize::MAX),
            blobs: on_disk.len(),
            orphan_blobs: orphans,
            missing_blobs: missing,
            catalog_missing: false,
            quarantined_blobs: list_blobs_if_any(&self.root.join(QUARANTINE).join("blobs"))
                .map_err(StoreError::internal)?
                .len(),
            totals_ok: self.catalog.totals()? == counted,
        })
    }

    /// Totals for metrics and the admin UI: (bytes, objects).
    pub async fn totals(&self) -> StoreResult<(u64, u64)> {
        let cat = self.catalog.clone();
        blocking(move || cat.totals()).await
    }

    async fn cat<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Catalog) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let cat = self.catalog.clone();
        blocking(move || f(&cat)).await
    }

    /// The key that encrypts SSE-S3 objects (`sealing::MasterKey::load_or_create`).
    pub fn with_master_key(mut self, key: MasterKey) -> Self {
        self.master = Some(Arc::new(key));
        self
    }

    fn master(&self) -> StoreResult<&MasterKey> {
        self.master.as_deref().ok_or_else(|| {
            SealError::MasterKey(
                "no SSE key is loaded, so encrypted objects cannot be written or read".into(),
            )
            .into()
        })
    }

    /// What seals a new blob of an object encrypted as `enc`, with the request's SSE-C key
    /// `customer` (checked against `enc`'s hash).
    fn sealer<'a>(
        &'a self,
        enc: Option<&Encryption>,
        customer: Option<&'a CustomerKey>,
    ) -> StoreResult<Option<Sealer<'a>>> {
        sealing::check_access(enc, customer)?;
        Ok(match (enc, customer) {
            (None, _) => None,
            (Some(Encryption::S3), _) => Some(Sealer::Master(self.master()?)),
            (Some(Encryption::Customer { .. }), Some(k)) => Some(Sealer::Customer(k)),
            (Some(Encryption::Customer { .. }), None) => return Err(SealError::KeyRequired.into()),
        })
    }

    /// Moves a spooled file into `blobs/` durably; memory bodies are written out first. With
    /// a `sealer` (an encrypted write), the body must have been sealed by it as it was
    /// spooled (`Spool::spool_sealed` with `data_key`), so no plaintext ever reached the disk.
    async fn make_blob(
        &self,
        body: &mut Spooled,
        sealer: Option<Sealer<'_>>,
    ) -> StoreResult<Segment> {
        let name = uuid::Uuid::new_v4().simple().to_string();
        let blob = format!("blobs/{}/{}", &name[..2], name);
        let sealed = match (&body.sealed, sealer) {
            (None, None) => None,
            (Some(key), Some(s)) if key.sealed_by(s) => Some(key.clone()),
            (None, Some(_)) => {
                return Err(StoreError::Internal(
                    "an encrypted write's body was not sealed while it was spooled".into(),
                ));
            }
            (Some(_), _) => {
                return Err(StoreError::Internal(
                    "a body sealed for another key reached the store".into(),
                ));
            }
        };
        match body.take_data() {
            Some(SpoolData::File { rel, abs }) => {
                if let Err(e) = self.op.rename(&rel, &blob).await {
                    let _ = std::fs::remove_file(abs);
                    return Err(e.into());
                }
            }
            Some(SpoolData::Memory(bytes)) => self.op.write(&blob, bytes).await.map(|_| ())?,
            None => {
                return Err(StoreError::Internal(
                    "spooled body was already consumed".into(),
                ));
            }
        }
        let dir = self.root.join(&blob[..8]);
        blocking(move || {
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(StoreError::internal)
        })
        .await?;
        Ok(Segment {
            blob,
            size: body.size,
            sealed,
        })
    }

    /// Streams `range` of a record's bytes (`inline` for an inline record), decrypting
    /// sealed blobs; an SSE-C object needs the request's key `customer`.
    async fn stream_record(
        &self,
        record: ObjectRecord,
        inline: Option<Vec<u8>>,
        range: Option<ReadRange>,
        customer: Option<&CustomerKey>,
    ) -> StoreResult<(ObjectInfo, ByteStream, Range<u64>)> {
        sealing::check_access(record.info.attrs.encryption.as_ref(), customer)?;
        let key = record.info.key.as_str();
        let size = record.info.size;
        let span = match range {
            Some(r) => r.resolve(size).ok_or(StoreError::InvalidRange { size })?,
            None => 0..size,
        };
        let stream: ByteStream = match (record.location.clone(), inline) {
            (Location::Inline, Some(data)) => {
                let bytes = Bytes::from(data).slice(span.start as usize..span.end as usize);
                Box::pin(futures::stream::once(async move { Ok(bytes) }))
            }
            (Location::Blobs { segments }, _) => {
                // Open every overlapping segment now, positioned and limited.
                let mut parts = Vec::new();
                let mut offset = 0u64;
                for seg in segments {
                    let (seg_start, seg_end) = (offset, offset + seg.size);
                    offset = seg_end;
                    let (from, to) = (span.start.max(seg_start), span.end.min(seg_end));
                    if from >= to {
                        continue;
                    }
                    let path = self.root.join(&seg.blob);
                    if let Some(sealed) = &seg.sealed {
                        let sealer = match customer {
                            Some(k) => Sealer::Customer(k),
                            None => Sealer::Master(self.master()?),
                        };
                        let data_key = DataKey::unseal(sealed, sealer)?;
                        let range = from - seg_start..to - seg_start;
                        parts.push(sealed_io::read_sealed(&path, data_key, seg.size, range).await?);
                        continue;
                    }
                    let mut f = tokio::fs::File::open(&path).await.map_err(|e| {
                        if e.kind() == std::io::ErrorKind::NotFound {
                            tracing::error!(blob = %seg.blob, key = %key, "blob missing for a cataloged object");
                        }
                        StoreError::Internal(format!("{}: {e}", seg.blob))
                    })?;
                    if from > seg_start {
                        f.seek(SeekFrom::Start(from - seg_start))
                            .await
                            .map_err(StoreError::internal)?;
                    }
                    parts.push(Box::pin(tokio_util::io::ReaderStream::with_capacity(
                        f.take(to - from),
                        READ_CHUNK,
                    )));
                }
                Box::pin(futures::stream::iter(parts).flatten())
            }
            (Location::Inline, None) => {
                return Err(StoreError::Internal("inline object without bytes".into()));
            }
        };
        Ok((record.info, stream, span))
    }

    fn release(&self, blobs: Vec<String>) {
        for blob in blobs {
            if let Err(e) = std::fs::remove_file(self.root.join(&blob))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(blob, error = %e, "could not delete a released blob; it will be swept at next start");
            }
        }
    }

    async fn discard(&self, seg: Segment) {
        self.release(vec![seg.blob]);
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Internal(format!("catalog task failed: {e}")))?
}

/// Creates `blobs/` and its 256 shard directories (`00`..`ff`, the first two hex digits of a
/// blob's name), each made durable by an fsync of its parent, so that no catalog commit can
/// point into a directory entry a power cut could lose. Later writes only add files to a
/// shard, and `make_blob` fsyncs the shard after each.
fn prepare_shards(root: &Path, blobs_dir: &Path) -> std::io::Result<()> {
    let fsync_dir = |dir: &Path| std::fs::File::open(dir).and_then(|d| d.sync_all());
    if !blobs_dir.is_dir() {
        std::fs::create_dir_all(blobs_dir)?;
        fsync_dir(root)?;
    }
    let mut created = false;
    for shard in 0..=255u8 {
        let dir = blobs_dir.join(format!("{shard:02x}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => created = true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    if created {
        fsync_dir(blobs_dir)?;
    }
    Ok(())
}

/// Where the start-up sweep moves blobs no catalog entry names.
pub const QUARANTINE: &str = "quarantine";

/// `list_blobs`, or nothing when `dir` does not exist.
fn list_blobs_if_any(dir: &Path) -> std::io::Result<HashSet<String>> {
    match list_blobs(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
        other => other,
    }
}

fn list_blobs(dir: &Path) -> std::io::Result<HashSet<String>> {
    let mut out = HashSet::new();
    for shard in std::fs::read_dir(dir)? {
        let shard = shard?;
        if !shard.file_type()?.is_dir() {
            continue;
        }
        let shard_name = shard.file_name().to_string_lossy().into_owned();
        for f in std::fs::read_dir(shard.path())? {
            let f = f?;
            out.insert(format!(
                "blobs/{shard_name}/{}",
                f.file_name().to_string_lossy()
            ));
        }
    }
    Ok(out)
}

#[async_trait]
impl Store for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn usage(&self) -> StoreResult<Option<(u64, u64)>> {
        Ok(Some(self.totals().await?))
    }

    async fn list_buckets(&self) -> StoreResult<Vec<BucketInfo>> {
        self.cat(|c| c.list_buckets()).await
    }

    async fn create_bucket(&self, name: &str) -> StoreResult<()> {
        let info = BucketInfo::new(name, now_ms());
        self.committer
            .write(move |tx| Catalog::create_bucket(tx, &info))
            .await
    }

    // Point reads run inline: a redb read of cached pages takes microseconds, less than a
    // hop to the blocking pool. Scans (listings, totals) still go to the pool.
    async fn head_bucket(&self, name: &str) -> StoreResult<BucketInfo> {
        self.catalog.head_bucket(name)
    }

    async fn delete_bucket(&self, name: &str) -> StoreResult<()> {
        let name = name.to_owned();
        let released = self
            .committer
            .write(move |tx| Catalog::delete_bucket(tx, &name))
            .await?;
        self.release(released);
        Ok(())
    }

    async fn head_object(&self, bucket: &str, key: &str) -> StoreResult<ObjectInfo> {
        Ok(self.catalog.get_object(bucket, key)?.0.info)
    }

    async fn read_object(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ReadRange>,
    ) -> StoreResult<(ObjectInfo, ByteStream, Range<u64>)> {
        let (record, inline) = self.catalog.get_object(bucket, key)?;
        self.stream_record(record, inline, range, None).await
    }

    async fn set_versioning(&self, bucket: &str, state: Versioning) -> StoreResult<()> {
        let b = bucket.to_owned();
        self.committer
            .write(move |tx| Catalog::set_versioning(tx, &b, state))
            .await
    }

    async fn head_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> StoreResult<ObjectInfo> {
        Ok(self.catalog.get_version(bucket, key, version_id)?.0.info)
    }

    async fn read_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        range: Option<ReadRange>,
    ) -> StoreResult<(ObjectInfo, ByteStream, Range<u64>)> {
        let (record, inline) = self.catalog.get_version(bucket, key, version_id)?;
        self.stream_record(record, inline, range, None).await
    }

    async fn read_with_key(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        range: Option<ReadRange>,
        customer_key: &CustomerKey,
    ) -> StoreResult<(ObjectInfo, ByteStream, Range<u64>)> {
        let (record, inline) = match version {
            Some(v) => self.catalog.get_version(bucket, key, v)?,
            None => self.catalog.get_object(bucket, key)?,
        };
        self.stream_record(record, inline, range, Some(customer_key))
            .await
    }

    async fn delete_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> StoreResult<Deleted> {
        let (b, k, v) = (bucket.to_owned(), key.to_owned(), version_id.to_owned());
        let (released, deleted) = self
            .committer
            .write(move |tx| Catalog::delete_version(tx, &b, &k, &v))
            .await?;
        self.release(released);
        Ok(deleted)
    }

    async fn list_versions(&self, bucket: &str, q: &VersionQuery) -> StoreResult<VersionPage> {
        let (b, q) = (bucket.to_owned(), q.clone());
        self.cat(move |c| c.list_versions(&b, &q)).await
    }

    async fn put_object_if(
        &self,
        bucket: &str,
        key: &str,
        mut body: Spooled,
        mut attrs: ObjectAttrs,
        cond: &WriteCondition,
    ) -> StoreResult<Conditional<ObjectInfo>> {
        let customer = attrs.customer_key.take();
        let sealer = self.sealer(attrs.encryption.as_ref(), customer.as_ref())?;
        let info = ObjectInfo {
            key: key.to_owned(),
            size: body.size,
            etag: body.md5_hex(),
            last_modified_ms: now_ms(),
            attrs,
            checksums: body.checksums.clone(),
            parts: 0,
            version_id: None,
        };
        let b = bucket.to_owned();
        let cond = cond.clone();
        // The condition is decided by the catalog write itself, in the committer's transaction.
        // Encrypted objects always get a blob: the catalog holds no object bytes of theirs.
        let outcome = match body.data() {
            Some(SpoolData::Memory(bytes))
                if bytes.len() <= spool::INLINE_LIMIT && sealer.is_none() =>
            {
                let data = bytes.clone();
                let record = ObjectRecord::new(info, Location::Inline);
                self.committer
                    .write(move |tx| Catalog::put_object_if(tx, &b, &record, Some(&data), &cond))
                    .await?
            }
            _ => {
                let seg = self.make_blob(&mut body, sealer).await?;
                let record = ObjectRecord::new(
                    info,
                    Location::Blobs {
                        segments: vec![seg.clone()],
                    },
                );
                let outcome = self
                    .committer
                    .write(move |tx| Catalog::put_object_if(tx, &b, &record, None, &cond))
                    .await;
                if !matches!(outcome, Ok(Ok(_))) {
                    self.discard(seg).await;
                }
                outcome?
            }
        };
        Ok(outcome.map(|(stored, released)| {
            self.release(released);
            stored
        }))
    }

    async fn replace_attrs(
        &self,
        bucket: &str,
        key: &str,
        attrs: ObjectAttrs,
    ) -> StoreResult<ObjectInfo> {
        let (b, k) = (bucket.to_owned(), key.to_owned());
        self.committer
            .write(move |tx| Catalog::update_attrs(tx, &b, &k, attrs.clone(), now_ms()))
            .await
    }

    async fn set_tags(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        tags: std::collections::BTreeMap<String, String>,
    ) -> StoreResult<ObjectInfo> {
        let (b, k, v) = (
            bucket.to_owned(),
            key.to_owned(),
            version.map(str::to_owned),
        );
        self.committer
            .write(move |tx| Catalog::set_tags(tx, &b, &k, v.as_deref(), tags.clone()))
            .await
    }

    async fn set_public_read(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        public: bool,
    ) -> StoreResult<ObjectInfo> {
        let (b, k, v) = (
            bucket.to_owned(),
            key.to_owned(),
            version.map(str::to_owned),
        );
        self.committer
            .write(move |tx| Catalog::set_public_read(tx, &b, &k, v.as_deref(), public))
            .await
    }

    fn keeps_tags(&self) -> bool {
        true
    }

    fn encrypts_at_rest(&self) -> bool {
        true
    }

    fn data_key(
        &self,
        encryption: Option<&Encryption>,
        customer: Option<&CustomerKey>,
    ) -> StoreResult<Option<(DataKey, sealing::SealedKey)>> {
        self.sealer(encryption, customer)?
            .map(|s| DataKey::generate(s).map_err(StoreError::from))
            .transpose()
    }

    async fn delete_object(&self, bucket: &str, key: &str) -> StoreResult<Deleted> {
        let (b, k) = (bucket.to_owned(), key.to_owned());
        let (released, deleted) = self
            .committer
            .write(move |tx| Catalog::delete_object(tx, &b, &k))
            .await?;
        self.release(released);
        Ok(deleted)
    }

    async fn delete_object_if(
        &self,
        bucket: &str,
        key: &str,
        cond: &crate::store::DeleteCondition,
    ) -> StoreResult<crate::store::Conditional<Deleted>> {
        let (b, k, c) = (bucket.to_owned(), key.to_owned(), cond.clone());
        let outcome = self
            .committer
            .write(move |tx| Catalog::delete_object_if(tx, &b, &k, &c))
            .await?;
        Ok(outcome.map(|(released, deleted)| {
            self.release(released);
            deleted
        }))
    }

    async fn list_objects(&self, bucket: &str, query: &ListQuery) -> StoreResult<ListPage> {
        let (b, q) = (bucket.to_owned(), query.clone());
        self.cat(move |c| c.list_objects(&b, &q)).await
    }

    async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        attrs: ObjectAttrs,
        checksum: Option<UploadChecksum>,
    ) -> StoreResult<String> {
        let info = UploadInfo {
            upload_id: uuid::Uuid::new_v4().simple().to_string(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            initiated_ms: now_ms(),
            attrs,
            full_object: checksum.as_ref().is_some_and(|c| c.full_object),
            checksum_algorithm: checksum.map(|c| c.algorithm),
        };
        let id = info.upload_id.clone();
        self.committer
            .write(move |tx| Catalog::create_upload(tx, &info))
            .await?;
        Ok(id)
    }

    async fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: i32,
        mut body: Spooled,
        customer_key: Option<&CustomerKey>,
    ) -> StoreResult<PartInfo> {
        let (b, k, u) = (bucket.to_owned(), key.to_owned(), upload_id.to_owned());
        // Fail fast before moving bytes around.
        let upload = self.cat(move |c| c.get_upload(&b, &k, &u)).await?;
        let sealer = self.sealer(upload.attrs.encryption.as_ref(), customer_key)?;
        let seg = self.make_blob(&mut body, sealer).await?;
        let info = PartInfo {
            part_number,
            size: body.size,
            etag: body.md5_hex(),
            last_modified_ms: now_ms(),
            checksums: body.checksums.clone(),
        };
        let record = PartRecord {
            info: info.clone(),
            blob: seg.blob.clone(),
            sealed: seg.sealed.clone(),
        };
        let (b, k, u) = (bucket.to_owned(), key.to_owned(), upload_id.to_owned());
        match self
            .committer
            .write(move |tx| Catalog::put_part(tx, &b, &k, &u, &record))
            .await
        {
            Ok(released) => self.release(released),
            Err(e) => {
                self.discard(seg).await;
                return Err(e);
            }
        }
        Ok(info)
    }

    async fn complete_upload_if(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        cond: &WriteCondition,
    ) -> StoreResult<Conditional<ObjectInfo>> {
        let (b, k, u, p, c) = (
            bucket.to_owned(),
            key.to_owned(),
            upload_id.to_owned(),
            parts.to_vec(),
            cond.clone(),
        );
        let outcome = self
            .committer
            .write(move |tx| Catalog::complete_upload_if(tx, &b, &k, &u, &p, now_ms(), &c))
            .await?;
        Ok(outcome.map(|(info, released)| {
            self.release(released);
            info
        }))
    }

    async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> StoreResult<()> {
        let (b, k, u) = (bucket.to_owned(), key.to_owned(), upload_id.to_owned());
        let released = self
            .committer
            .write(move |tx| Catalog::abort_upload(tx, &b, &k, &u))
            .await?;
        self.release(released);
        Ok(())
    }

    async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> StoreResult<(UploadInfo, Vec<PartInfo>)> {
        let (b, k, u) = (bucket.to_owned(), key.to_owned(), upload_id.to_owned());
        self.cat(move |c| c.list_parts(&b, &k, &u)).await
    }

    async fn list_uploads(&self, bucket: &str, prefix: &str) -> StoreResult<Vec<UploadInfo>> {
        let (b, p) = (bucket.to_owned(), prefix.to_owned());
        self.cat(move |c| {
            c.head_bucket(&b)?;
            Ok(c.list_uploads(Some(&b))?
                .into_iter()
                .filter(|u| u.key.starts_with(&p))
                .collect())
        })
        .await
    }

    async fn expire_uploads(&self, cutoff_unix: i64) -> StoreResult<usize> {
        let stale: Vec<UploadInfo> = self
            .cat(|c| c.list_uploads(None))
            .await?
            .into_iter()
            .filter(|u| u.initiated_ms / 1000 < cutoff_unix)
            .collect();
        let n = stale.len();
        for u in stale {
            self.abort_upload(&u.bucket, &u.key, &u.upload_id).await?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::spool::ChecksumSet;
    use futures::TryStreamExt;

    async fn open(dir: &Path) -> (EmbeddedStore, Spool) {
        let op =
            Operator::new(opendal::services::Fs::default().root(&dir.to_string_lossy())).unwrap();
        let spool = Spool::new(op.clone(), dir.to_owned());
        spool.sweep().unwrap();
        (EmbeddedStore::open(op, dir, true).unwrap(), spool)
    }

    async fn spooled(spool: &Spool, data: &[u8]) -> Spooled {
        spooled_with(spool, data, None).await
    }

    /// `data` spooled as the S3 handlers spool an encrypted write: sealed as it arrives.
    async fn spooled_sealed(
        store: &EmbeddedStore,
        spool: &Spool,
        data: &[u8],
        encryption: &Encryption,
        customer: Option<&CustomerKey>,
    ) -> Spooled {
        let seal = store.data_key(Some(encryption), customer).unwrap();
        spooled_with(spool, data, seal).await
    }

    async fn spooled_with(
        spool: &Spool,
        data: &[u8],
        seal: Option<(DataKey, sealing::SealedKey)>,
    ) -> Spooled {
        let chunks: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(100_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        spool
            .spool_sealed(
                futures::stream::iter(chunks),
                ChecksumSet::default(),
                u64::MAX,
                seal,
            )
            .await
            .unwrap()
    }

    async fn read_all(
        store: &EmbeddedStore,
        b: &str,
        k: &str,
        range: Option<ReadRange>,
    ) -> Vec<u8> {
        let (_, s, _) = store.read_object(b, k, range).await.unwrap();
        let chunks: Vec<Bytes> = s.try_collect().await.unwrap();
        chunks.concat()
    }

    /// The bug: a blob's shard directory was created by the first write into it, and only
    /// the shard (not its parent) was fsynced, so a power cut could lose the directory
    /// entry of a shard a committed record points into.
    #[tokio::test]
    async fn every_shard_exists_before_any_write() {
        let dir = tempfile::tempdir().unwrap();
        let _ = open(dir.path()).await;
        for shard in 0..=255u8 {
            assert!(
                dir.path().join(format!("blobs/{shard:02x}")).is_dir(),
                "shard {shard:02x}"
            );
        }
    }

    #[tokio::test]
    async fn large_objects_live_in_blobs_and_their_blobs_go_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let (store, spool) = open(dir.path()).await;
        store.create_bucket("bkt").await.unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let body = spooled(&spool, &data).await;
        store
            .put_object("bkt", "k", body, ObjectAttrs::default())
            .await
            .unwrap();
        assert_eq!(read_all(&store, "bkt", "k", None).await, data);
        let r = read_all(
            &store,
            "bkt",
            "k",
            Some(ReadRange::FromTo {
                first: 1000,
                last: Some(1999),
            }),
        )
        .await;
        assert_eq!(r, &data[1000..2000]);
        assert_eq!(store.check(false).unwrap().blobs, 1);
        // overwrite with a small (inline) body releases the blob
        let small = spooled(&spool, b"tiny").await;
        store
            .put_object("bkt", "k", small, ObjectAttrs::default())
            .await
            .unwrap();
        assert_eq!(read_all(&store, "bkt", "k", None).await, b"tiny");
        let report = store.check(false).unwrap();
        assert_eq!(
            (report.blobs, report.orphan_blobs, report.missing_blobs),
            (0, 0, 0)
        );
    }

    /// Regression guard for crash recovery: a blob renamed into place but never committed and
    /// a half-written temporary file are both gone after reopening, and fsck is clean.
    #[tokio::test]
    async fn reopen_sweeps_what_a_crash_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, spool) = open(dir.path()).await;
            store.create_bucket("bkt").await.unwrap();
            let body = spooled(&spool, &vec![9u8; 200_000]).await;
            store
                .put_object("bkt", "kept", body, ObjectAttrs::default())
                .await
                .unwrap();
        }
        std::fs::create_dir_all(dir.path().join("blobs/zz")).unwrap();
        std::fs::write(dir.path().join("blobs/zz/zzorphan"), b"uncommitted").unwrap();
        std::fs::write(dir.path().join("tmp/partial"), b"half a body").unwrap();
        let (store, _) = open(dir.path()).await;
        assert!(!dir.path().join("blobs/zz/zzorphan").exists());
        // Moved aside, not deleted: an orphan may be the only copy of someone's object.
        assert_eq!(
            std::fs::read(dir.path().join("quarantine/blobs/zz/zzorphan")).unwrap(),
            b"uncommitted"
        );
        assert!(!dir.path().join("tmp/partial").exists());
        let report = store.check(false).unwrap();
        assert_eq!(
            (
                report.objects,
                report.blobs,
                report.orphan_blobs,
                report.missing_blobs
            ),
            (1, 1, 0, 0)
        );
        assert_eq!(
            read_all(&store, "bkt", "kept", None).await,
            vec![9u8; 200_000]
        );
    }

    #[tokio::test]
    async fn a_missing_catalog_beside_blobs_stops_the_start_and_deletes_nothing() {
        // Bug guarded: a missing `catalog.redb` made the start-up sweep delete every blob,
        // logged only as a warning.
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, spool) = open(dir.path()).await;
            store.create_bucket("bkt").await.unwrap();
            let body = spooled(&spool, &vec![7u8; 200_000]).await;
            store
                .put_object("bkt", "precious", body, ObjectAttrs::default())
                .await
                .unwrap();
        }
        std::fs::rename(
            dir.path().join("catalog.redb"),
            dir.path().join("catalog.redb.moved"),
        )
        .unwrap();
        let blobs_before = list_blobs(&dir.path().join("blobs")).unwrap();
        assert_eq!(blobs_before.len(), 1);
        let op =
            Operator::new(opendal::services::Fs::default().root(&dir.path().to_string_lossy()))
                .unwrap();
        let err = match EmbeddedStore::open(op.clone(), dir.path(), true) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("started without its catalog"),
        };
        assert!(
            err.contains("refusing to start") && err.contains("1 blobs"),
            "{err}"
        );
        assert_eq!(list_blobs(&dir.path().join("blobs")).unwrap(), blobs_before);
        assert!(!dir.path().join("catalog.redb").exists());
        // With the catalog put back, everything is there.
        std::fs::rename(
            dir.path().join("catalog.redb.moved"),
            dir.path().join("catalog.redb"),
        )
        .unwrap();
        let store = EmbeddedStore::open(op, dir.path(), true).unwrap();
        assert_eq!(
            read_all(&store, "bkt", "precious", None).await,
            vec![7u8; 200_000]
        );
    }

    fn create_only() -> WriteCondition {
        WriteCondition {
            if_none_match: Some(ETagMatch::Any),
            ..Default::default()
        }
    }

    /// Regression guard: `If-None-Match: *` was decided by a HEAD before the write, so two
    /// racing create-only PUTs of one key both succeeded and the second silently replaced the
    /// first. Decided in the catalog transaction, exactly one of them wins, every round, for
    /// inline and blob bodies alike, and the loser's blob does not linger.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_create_only_writes_have_exactly_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let (store, spool) = open(dir.path()).await;
        let store = Arc::new(store);
        store.create_bucket("bkt").await.unwrap();
        for round in 0..200u32 {
            let key = format!("k{round}");
            // Every fourth round uses bodies too large to be inline.
            let size = if round % 4 == 0 { 200_000 } else { 10 };
            let mut tasks = Vec::new();
            for writer in 0..2u8 {
                let body = spooled(&spool, &vec![writer; size]).await;
                let (store, key) = (store.clone(), key.clone());
                tasks.push(tokio::spawn(async move {
                    store
                        .put_object_if("bkt", &key, body, ObjectAttrs::default(), &create_only())
                        .await
                        .unwrap()
                        .map(|info| (writer, info.etag))
                }));
            }
            let mut won = Vec::new();
            for t in tasks {
                match t.await.unwrap() {
                    Ok(w) => won.push(w),
                    Err(c) => assert_eq!(c, ConditionFailed::IfNoneMatch),
                }
            }
            assert_eq!(won.len(), 1, "round {round}: {won:?}");
            let (writer, etag) = &won[0];
            assert_eq!(&store.head_object("bkt", &key).await.unwrap().etag, etag);
            assert_eq!(
                read_all(&store, "bkt", &key, None).await,
                vec![*writer; size]
            );
        }
        let report = store.check(false).unwrap();
        assert_eq!((report.orphan_blobs, report.missing_blobs), (0, 0));
        assert_eq!(report.blobs, 50);
    }

    #[tokio::test]
    async fn if_match_replaces_only_the_named_version() {
        let dir = tempfile::tempdir().unwrap();
        let (store, spool) = open(dir.path()).await;
        store.create_bucket("bkt").await.unwrap();
        let if_match = |etag: &str| WriteCondition {
            if_match: Some(ETagMatch::ETag(etag.to_owned())),
            ..Default::default()
        };
        let body = spooled(&spool, b"v0").await;
        assert_eq!(
            store
                .put_object_if("bkt", "k", body, ObjectAttrs::default(), &if_match("x"))
                .await
                .unwrap(),
            Err(ConditionFailed::IfMatch)
        );
        let body = spooled(&spool, b"v1").await;
        let v1 = store
            .put_object("bkt", "k", body, ObjectAttrs::default())
            .await
            .unwrap();
        let body = spooled(&spool, b"v2").await;
        let v2 = store
            .put_object_if(
                "bkt",
                "k",
                body,
                ObjectAttrs::default(),
                &if_match(&v1.etag),
            )
            .await
            .unwrap()
            .unwrap();
        // v1 is gone: a second writer holding the old ETag is refused and changes nothing.
        let body = spooled(&spool, b"v3").await;
        assert_eq!(
            store
                .put_object_if(
                    "bkt",
                    "k",
                    body,
                    ObjectAttrs::default(),
                    &if_match(&v1.etag)
                )
                .await
                .unwrap(),
            Err(ConditionFailed::IfMatch)
        );
        assert_eq!(store.head_object("bkt", "k").await.unwrap().etag, v2.etag);
        assert_eq!(read_all(&store, "bkt", "k", None).await, b"v2");
    }

    #[tokio::test]
    async fn a_refused_completion_keeps_the_upload() {
        let dir = tempfile::tempdir().unwrap();
        let (store, spool) = open(dir.path()).await;
        store.create_bucket("bkt").await.unwrap();
        let body = spooled(&spool, b"already here").await;
        store
            .put_object("bkt", "k", body, ObjectAttrs::default())
            .await
            .unwrap();
        let id = store
            .create_upload("bkt", "k", ObjectAttrs::default(), None)
            .await
            .unwrap();
        let part = spooled(&spool, &vec![5u8; 100_000]).await;
        let p = store
            .put_part("bkt", "k", &id, 1, part, None)
            .await
            .unwrap();
        let parts = [CompletedPart {
            part_number: 1,
            etag: p.etag.clone(),
        }];
        assert_eq!(
            store
                .complete_upload_if("bkt", "k", &id, &parts, &create_only())
                .await
                .unwrap(),
            Err(ConditionFailed::IfNoneMatch)
        );
        assert_eq!(read_all(&store, "bkt", "k", None).await, b"already here");
        assert_eq!(store.list_parts("bkt", "k", &id).await.unwrap().1.len(), 1);
        store.delete_object("bkt", "k").await.unwrap();
        let info = store
            .complete_upload_if("bkt", "k", &id, &parts, &create_only())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(info.size, 100_000);
        assert_eq!(read_all(&store, "bkt", "k", None).await, vec![5u8; 100_000]);
    }

    #[tokio::test]
    async fn stale_uploads_expire_and_free_their_parts() {
        let dir = tempfile::tempdir().unwrap();
        let (store, spool) = open(dir.path()).await;
        store.create_bucket("bkt").await.unwrap();
        let id = store
            .create_upload("bkt", "big", ObjectAttrs::default(), None)
            .await
            .unwrap();
        let part = spooled(&spool, &vec![1u8; 100_000]).await;
        store
            .put_part("bkt", "big", &id, 1, part, None)
            .await
            .unwrap();
        let fresh = store
            .create_upload("bkt", "other", ObjectAttrs::default(), None)
            .await
            .unwrap();
        assert_eq!(store.check(false).unwrap().blobs, 1);
        // Nothing is older than an hour ago.
        assert_eq!(
            store.expire_uploads(now_ms() / 1000 - 3600).await.unwrap(),
            0
        );
        // Everything started before "in a minute" is stale.
        assert_eq!(store.expire_uploads(now_ms() / 1000 + 60).await.unwrap(), 2);
        assert!(matches!(
            store.list_parts("bkt", "big", &id).await,
            Err(StoreError::NoSuchUpload(_))
        ));
        assert!(matches!(
            store.list_parts("bkt", "other", &fresh).await,
            Err(StoreError::NoSuchUpload(_))
        ));
        assert_eq!(store.check(false).unwrap().blobs, 0);
    }

    /// Every file under `dir` (blobs, spool, catalog) and whether any holds `needle`.
    fn any_file_holds(dir: &Path, needle: &[u8]) -> bool {
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if std::fs::read(&p)
                    .unwrap()
                    .windows(needle.len())
                    .any(|w| w == needle)
                {
                    return true;
                }
            }
        }
        false
    }

    #[tokio::test]
    async fn encrypted_objects_read_back_whole_and_in_ranges_and_leave_no_plaintext_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (store, spool) = open(dir.path()).await;
        let store = store.with_master_key(MasterKey::from_bytes(&[4u8; 32]).unwrap());
        store.create_bucket("bkt").await.unwrap();
        let marker = b"PLAINTEXT-MARKER-0123456789";
        let big: Vec<u8> = marker
            .iter()
            .copied()
            .cycle()
            .take(3 * sealing::CHUNK as usize + 1234)
            .collect();
        let sse_s3 = ObjectAttrs {
            encryption: Some(Encryption::S3),
            ..ObjectAttrs::default()
        };
        for (key, data) in [("big", big.as_slice()), ("small", &marker[..])] {
            let body = spooled_sealed(&store, &spool, data, &Encryption::S3, None).await;
            let info = store
                .put_object("bkt", key, body, sse_s3.clone())
                .await
                .unwrap();
            assert_eq!(info.attrs.encryption, Some(Encryption::S3));
            assert_eq!(read_all(&store, "bkt", key, None).await, data);
        }
        let n = big.len() as u64;
        for (first, last) in [(0, 0), (65_535, 65_537), (n - 5, n - 1), (1000, n - 1)] {
            let range = ReadRange::FromTo {
                first,
                last: Some(last),
            };
            assert_eq!(
                read_all(&store, "bkt", "big", Some(range)).await,
                &big[first as usize..=last as usize]
            );
        }
        // SSE-C, multipart: every part is sealed under the customer's key.
        let key = CustomerKey::new([8u8; 32]);
        let customer = Encryption::customer(&key);
        let attrs = ObjectAttrs {
            encryption: Some(customer.clone()),
            ..ObjectAttrs::default()
        };
        let id = store.create_upload("bkt", "mp", attrs, None).await.unwrap();
        let mut parts = Vec::new();
        let first_part: Vec<u8> = marker
            .iter()
            .copied()
            .cycle()
            .take(MIN_PART_SIZE as usize + 77)
            .collect();
        for (n, fill) in [(1, &first_part[..]), (2, &marker[..])] {
            let body = spooled_sealed(&store, &spool, fill, &customer, Some(&key)).await;
            let p = store
                .put_part("bkt", "mp", &id, n, body, Some(&key))
                .await
                .unwrap();
            parts.push(CompletedPart {
                part_number: n,
                etag: p.etag,
            });
        }
        let body = spooled(&spool, marker).await;
        assert!(matches!(
            store.put_part("bkt", "mp", &id, 3, body, None).await,
            Err(StoreError::Sealing(SealError::KeyRequired))
        ));
        store
            .complete_upload("bkt", "mp", &id, &parts)
            .await
            .unwrap();
        let whole = [first_part.as_slice(), marker].concat();
        let n = first_part.len() as u64;
        let (_, s, _) = store
            .read_with_key("bkt", "mp", None, None, &key)
            .await
            .unwrap();
        assert_eq!(s.try_collect::<Vec<Bytes>>().await.unwrap().concat(), whole);
        // Across the part boundary.
        let range = ReadRange::FromTo {
            first: n - 3,
            last: Some(n + 3),
        };
        let (_, s, _) = store
            .read_with_key("bkt", "mp", None, Some(range), &key)
            .await
            .unwrap();
        let got = s.try_collect::<Vec<Bytes>>().await.unwrap().concat();
        assert_eq!(got, &whole[(n - 3) as usize..=(n + 3) as usize]);
        assert!(matches!(
            store.read_object("bkt", "mp", None).await,
            Err(StoreError::Sealing(SealError::KeyRequired))
        ));
        let wrong = CustomerKey::new([9u8; 32]);
        assert!(matches!(
            store.read_with_key("bkt", "mp", None, None, &wrong).await,
            Err(StoreError::Sealing(SealError::WrongKey))
        ));
        // A body sealed as it is spooled never has its plaintext on disk, not even in tmp/.
        let body = spooled_sealed(&store, &spool, &big, &Encryption::S3, None).await;
        assert!(matches!(body.data(), Some(SpoolData::File { .. })));
        assert!(!any_file_holds(dir.path(), marker));
        drop(body);
        // An encrypted write whose body was not sealed is refused, and so is one sealed for
        // another key: neither is stored unreadable or in the clear.
        let body = spooled(&spool, &big).await;
        assert!(
            store
                .put_object("bkt", "unsealed", body, sse_s3.clone())
                .await
                .is_err()
        );
        let body = spooled_sealed(&store, &spool, b"x", &Encryption::S3, None).await;
        let customer_attrs = ObjectAttrs {
            encryption: Some(Encryption::customer(&key)),
            customer_key: Some(key.clone()),
            ..ObjectAttrs::default()
        };
        assert!(
            store
                .put_object("bkt", "mismatch", body, customer_attrs)
                .await
                .is_err()
        );
        assert!(!any_file_holds(dir.path(), marker));
        // The check can fail: an unencrypted object shows its bytes.
        let body = spooled(&spool, &big).await;
        store
            .put_object("bkt", "plain", body, ObjectAttrs::default())
            .await
            .unwrap();
        assert!(any_file_holds(dir.path(), marker));
    }
}
