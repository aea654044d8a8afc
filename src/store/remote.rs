//! The remote store: Pixelport buckets on an existing S3 cluster (MinIO, Garage, Ceph RGW,
//! AWS) through OpenDAL's s3 service, in one of two layouts (`[store] bucket_mapping`):
//! - `prefixed`: every Pixelport bucket is a prefix inside one cluster bucket. Object `K` of
//!   bucket `B` is `{bucket_prefix}B/K` in `[store] bucket`; bucket `B` exists while the
//!   marker object `B/.pixelport-bucket` does.
//! - `direct`: Pixelport bucket `B` is cluster bucket `B`, object `K` is its key `K`, so
//!   buckets other clients wrote are served as they are. Bucket calls go to the cluster
//!   ([`super::cluster`]); one OpenDAL operator per bucket, made on first use.
//!
//! Stateless for objects: metadata, ETags and listings come from the cluster, so several
//! nodes can share it. Two things stay local: bodies are spooled and verified in
//! `data_dir/tmp` before they are sent (so a bad checksum never reaches the cluster), and
//! multipart parts wait in `data_dir/uploads` until Complete (so one upload must go to one
//! node). ETags are the cluster's own: for objects the cluster stored in several parts they
//! are not `md5-of-md5s` of the client's parts.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use opendal::Operator;
use opendal::layers::{RetryLayer, TimeoutLayer};
use tokio::io::AsyncReadExt;

use super::cluster::Answer;
use super::spool::SpoolData;
use super::*;
use crate::config::StoreConfig;

/// The zero-byte object that marks a Pixelport bucket inside the cluster bucket (a plain
/// object rather than a `B/` directory marker, which some S3 servers cannot store).
const BUCKET_MARKER: &str = ".pixelport-bucket";
/// User metadata under this prefix carries what S3 object metadata cannot (checksums,
/// Content-Language, Expires through OpenDAL); it is hidden from clients.
const RESERVED_META: &str = "pixelport-";
/// Objects up to this size are sent as one PutObject (so their ETag is their MD5).
const UPLOAD_CHUNK: usize = 64 << 20;
/// Multipart uploads whose parts are at most this large keep their part boundaries.
const ALIGNED_PART_LIMIT: u64 = 64 << 20;
const READ_PIECE: usize = 4 << 20;
/// Direct mapping: operators kept for at most this many cluster buckets.
const MAX_DIRECT_BUCKETS: usize = 1024;

pub struct RemoteStore {
    layout: Layout,
    uploads_dir: PathBuf,
}

enum Layout {
    /// Every Pixelport bucket is a prefix of one cluster bucket.
    Prefixed(Operator),
    /// Pixelport bucket B is cluster bucket B.
    Direct {
        cfg: Box<StoreConfig>,
        /// One operator per cluster bucket, made on first use.
        ops: std::sync::Mutex<std::collections::HashMap<String, Operator>>,
        api: super::cluster::ClusterApi,
    },
}

/// Where one Pixelport bucket's objects are: an operator, and the path prefix of its keys.
struct At {
    op: Operator,
    dir: String,
}

impl At {
    fn path(&self, key: &str) -> String {
        format!("{}{key}", self.dir)
    }
}

/// An OpenDAL operator on one cluster bucket, under `root`, with the configured timeout
/// and retries.
fn operator(cfg: &StoreConfig, bucket: &str, root: &str) -> StoreResult<Operator> {
    let mut b = opendal::services::S3::default()
        .bucket(bucket)
        .endpoint(&cfg.endpoint)
        .region(&cfg.region)
        .root(&format!("/{root}"))
        .disable_config_load()
        .disable_ec2_metadata();
    if !cfg.access_key.is_empty() {
        b = b
            .access_key_id(&cfg.access_key)
            .secret_access_key(&cfg.secret_key);
    } else {
        b = b.skip_signature();
    }
    if !cfg.path_style {
        b = b.enable_virtual_host_style();
    }
    Ok(Operator::new(b)?
        .layer(
            TimeoutLayer::new()
                .with_timeout(cfg.timeout.0)
                .with_io_timeout(cfg.timeout.0),
        )
        .layer(
            RetryLayer::new()
                .with_max_times(cfg.retries)
                .with_min_delay(Duration::from_millis(100))
                .with_jitter(),
        ))
}

impl RemoteStore {
    pub fn new(cfg: &StoreConfig, data_dir: &std::path::Path) -> StoreResult<RemoteStore> {
        // Registers the reqwest (rustls) HTTP transport; idempotent.
        opendal::install_default();
        let layout = match cfg.bucket_mapping {
            crate::config::BucketMapping::Prefixed => {
                Layout::Prefixed(operator(cfg, &cfg.bucket, &cfg.bucket_prefix)?)
            }
            crate::config::BucketMapping::Direct => Layout::Direct {
                cfg: Box::new(cfg.clone()),
                ops: std::sync::Mutex::default(),
                api: super::cluster::ClusterApi::new(cfg)?,
            },
        };
        let uploads_dir = data_dir.join("uploads");
        std::fs::create_dir_all(&uploads_dir)
            .map_err(|e| StoreError::Internal(format!("{}: {e}", uploads_dir.display())))?;
        Ok(RemoteStore {
            layout,
            uploads_dir,
        })
    }

    /// Where bucket `bucket`'s objects are (no check that it exists).
    fn at(&self, bucket: &str) -> StoreResult<At> {
        match &self.layout {
            Layout::Prefixed(op) => Ok(At {
                op: op.clone(),
                dir: format!("{bucket}/"),
            }),
            Layout::Direct { cfg, ops, .. } => {
                let mut ops = ops
                    .lock()
                    .map_err(|_| StoreError::Internal("operator map poisoned".into()))?;
                let op = match ops.get(bucket) {
                    Some(op) => op.clone(),
                    None => {
                        // Bounded: a name becomes an operator only once the bucket exists or
                        // is created (every object call checks the bucket first).
                        if ops.len() >= MAX_DIRECT_BUCKETS {
                            ops.clear();
                        }
                        let op = operator(cfg, bucket, "")?;
                        ops.insert(bucket.to_owned(), op.clone());
                        op
                    }
                };
                Ok(At {
                    op,
                    dir: String::new(),
                })
            }
        }
    }

    /// A cheap round trip to the cluster, for readiness checks.
    pub async fn ping(&self) -> StoreResult<()> {
        match &self.layout {
            Layout::Prefixed(op) => op.list_with("").limit(1).await.map(|_| ()).map_err(map_err),
            Layout::Direct { api, .. } => api.list_buckets().await.map(|_| ()),
        }
    }

    async fn ensure_bucket(&self, bucket: &str) -> StoreResult<()> {
        self.head_bucket(bucket).await.map(|_| ())
    }

    fn info_from(key: &str, meta: &opendal::Metadata) -> ObjectInfo {
        let mut attrs = ObjectAttrs {
            content_type: meta.content_type().map(str::to_owned),
            cache_control: meta.cache_control().map(str::to_owned),
            content_disposition: meta.content_disposition().map(str::to_owned),
            content_encoding: meta.content_encoding().map(str::to_owned),
            ..Default::default()
        };
        let mut checksums = Checksums::default();
        if let Some(um) = meta.user_metadata() {
            for (k, v) in um {
                match k.strip_prefix(RESERVED_META) {
                    Some("checksum-crc32") => checksums.crc32 = Some(v.to_owned()),
                    Some("checksum-crc32c") => checksums.crc32c = Some(v.to_owned()),
                    Some("checksum-sha1") => checksums.sha1 = Some(v.to_owned()),
                    Some("checksum-sha256") => checksums.sha256 = Some(v.to_owned()),
                    Some("checksum-crc64nvme") => checksums.crc64nvme = Some(v.to_owned()),
                    Some("content-language") => attrs.content_language = Some(v.to_owned()),
                    Some("expires") => attrs.expires = Some(v.to_owned()),
                    Some(_) => {}
                    None => {
                        attrs.user_metadata.insert(k.to_owned(), v.to_owned());
                    }
                }
            }
        }
        let last_modified_ms = meta
            .last_modified()
            .map(|t| {
                let st: std::time::SystemTime = t.into();
                st.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0)
            })
            .unwrap_or_else(now_ms);
        ObjectInfo {
            key: key.to_owned(),
            size: meta.content_length(),
            etag: meta.etag().unwrap_or_default().trim_matches('"').to_owned(),
            last_modified_ms,
            attrs,
            checksums,
            parts: 0,
            version_id: None,
        }
    }

    /// Streams the given local spooled bodies, in order, into one cluster object.
    ///
    /// With `part_size`, every body but the last is exactly that long and is sent as one
    /// cluster part, so the cluster computes the same `md5-of-part-md5s-N` ETag the client
    /// expects; each such part is read into memory, so callers pass it only for parts of at
    /// most `ALIGNED_PART_LIMIT`. Without it, bodies stream in `UPLOAD_CHUNK` pieces (an
    /// object that fits in one chunk is a single PutObject, whose ETag is its MD5).
    ///
    /// `cond` goes to the cluster with the write (`If-None-Match: *` as OpenDAL's
    /// `if_not_exists`, `If-Match` as `if_match`), which S3 applies to the PutObject or the
    /// CompleteMultipartUpload that makes the object visible, so the cluster decides it
    /// atomically. A cluster answering 412 gives `Ok(Err(..))`.
    #[allow(clippy::too_many_arguments)]
    async fn upload(
        &self,
        at: &At,
        key: &str,
        bodies: Vec<SpoolData>,
        attrs: &ObjectAttrs,
        checksums: &Checksums,
        part_size: Option<usize>,
        cond: &WriteCondition,
    ) -> StoreResult<Conditional<()>> {
        let mut meta: Vec<(String, String)> = attrs
            .user_metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, v) in [
            ("checksum-crc32", &checksums.crc32),
            ("checksum-crc32c", &checksums.crc32c),
            ("checksum-sha1", &checksums.sha1),
            ("checksum-sha256", &checksums.sha256),
            ("checksum-crc64nvme", &checksums.crc64nvme),
            ("content-language", &attrs.content_language),
            ("expires", &attrs.expires),
        ] {
            if let Some(v) = v {
                meta.push((format!("{RESERVED_META}{name}"), v.clone()));
            }
        }
        let path = at.path(key);
        let mut w = at
            .op
            .writer_with(&path)
            .chunk(part_size.unwrap_or(UPLOAD_CHUNK))
            .concurrent(if part_size.is_some() { 2 } else { 4 })
            .user_metadata(meta);
        if let Some(v) = &attrs.content_type {
            w = w.content_type(v);
        }
        if let Some(v) = &attrs.cache_control {
            w = w.cache_control(v);
        }
        if let Some(v) = &attrs.content_disposition {
            w = w.content_disposition(v);
        }
        if let Some(v) = &attrs.content_encoding {
            w = w.content_encoding(v);
        }
        if cond.if_none_match == Some(ETagMatch::Any) {
            w = w.if_not_exists(true);
        }
        // `If-Match: *` is not sent: S3 documents If-Match on writes with an ETag only, so
        // `precheck` alone (not atomic) decides that rare form.
        if let Some(ETagMatch::ETag(e)) = &cond.if_match {
            w = w.if_match(&format!("\"{}\"", e.trim_matches('"')));
        }
        let failed = |e: opendal::Error| -> StoreResult<Conditional<()>> {
            if e.kind() == opendal::ErrorKind::ConditionNotMatch {
                Ok(Err(if cond.if_none_match.is_some() {
                    ConditionFailed::IfNoneMatch
                } else {
                    ConditionFailed::IfMatch
                }))
            } else {
                Err(map_err(e))
            }
        };
        let mut writer = match w.await {
            Ok(w) => w,
            Err(e) => return failed(e),
        };
        // Outer error: reading the local body; inner: the cluster's answer.
        let result: StoreResult<Result<(), opendal::Error>> = async {
            for body in bodies {
                match body {
                    SpoolData::Memory(bytes) => {
                        if let Err(e) = writer.write(bytes).await {
                            return Ok(Err(e));
                        }
                    }
                    SpoolData::File { abs, .. } if part_size.is_some() => {
                        let whole = tokio::fs::read(&abs).await.map_err(StoreError::internal)?;
                        if let Err(e) = writer.write(whole).await {
                            return Ok(Err(e));
                        }
                    }
                    SpoolData::File { abs, .. } => {
                        let mut f = tokio::fs::File::open(&abs)
                            .await
                            .map_err(StoreError::internal)?;
                        loop {
                            let mut buf = bytes::BytesMut::with_capacity(READ_PIECE);
                            while buf.len() < READ_PIECE {
                                if f.read_buf(&mut buf).await.map_err(StoreError::internal)? == 0 {
                                    break;
                                }
                            }
                            if buf.is_empty() {
                                break;
                            }
                            if let Err(e) = writer.write(buf.freeze()).await {
                                return Ok(Err(e));
                            }
                        }
                    }
                }
            }
            Ok(writer.close().await.map(|_| ()))
        }
        .await;
        if !matches!(result, Ok(Ok(()))) {
            let _ = writer.abort().await;
        }
        match result? {
            Ok(()) => Ok(Ok(())),
            Err(e) => failed(e),
        }
    }

    /// Decides `cond` from a HEAD, for what the cluster cannot be asked to decide.
    ///
    /// Not atomic, so only a first line: it refuses early (before a large body is sent), it
    /// covers `If-None-Match: <etag>` (S3 accepts only `*` there) and clusters that ignore
    /// conditional writes (S3 before 2024, older MinIO and Garage releases). Where the
    /// cluster honours `If-None-Match: *` / `If-Match` (AWS, current MinIO, s3s), the
    /// conditions sent with the write itself are what make racing writers safe; where it does
    /// not, two racing writers can both pass this check: a known limitation of such clusters.
    async fn precheck(
        &self,
        bucket: &str,
        key: &str,
        cond: &WriteCondition,
    ) -> StoreResult<Conditional<()>> {
        if cond.is_unconditional() {
            return Ok(Ok(()));
        }
        match self.head_object(bucket, key).await {
            Ok(info) => Ok(cond.check(Some(&info.etag))),
            Err(StoreError::NoSuchKey(_)) => Ok(cond.check(None)),
            Err(e) => Err(e),
        }
    }

    fn upload_dir(&self, upload_id: &str) -> StoreResult<PathBuf> {
        if upload_id.is_empty() || !upload_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::NoSuchUpload(upload_id.into()));
        }
        Ok(self.uploads_dir.join(upload_id))
    }

    async fn load_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> StoreResult<(UploadInfo, BTreeMap<i32, PartInfo>)> {
        let dir = self.upload_dir(upload_id)?;
        let raw = tokio::fs::read(dir.join("upload.json"))
            .await
            .map_err(|_| StoreError::NoSuchUpload(upload_id.into()))?;
        let info: UploadInfo = serde_json::from_slice(&raw).map_err(StoreError::internal)?;
        if info.bucket != bucket || info.key != key {
            return Err(StoreError::NoSuchUpload(upload_id.into()));
        }
        let mut parts = BTreeMap::new();
        let mut rd = tokio::fs::read_dir(&dir)
            .await
            .map_err(StoreError::internal)?;
        while let Some(e) = rd.next_entry().await.map_err(StoreError::internal)? {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = name
                .strip_suffix(".json")
                .and_then(|n| n.strip_prefix("part-"))
            {
                let raw = tokio::fs::read(e.path())
                    .await
                    .map_err(StoreError::internal)?;
                let p: PartInfo = serde_json::from_slice(&raw).map_err(StoreError::internal)?;
                if n.parse::<i32>().ok() == Some(p.part_number) {
                    parts.insert(p.part_number, p);
                }
            }
        }
        Ok((info, parts))
    }
}

/// Backend failures: temporary ones (throttling, timeouts, connection errors) are 503s.
fn map_err(e: opendal::Error) -> StoreError {
    use opendal::ErrorKind as K;
    match e.kind() {
        K::NotFound => StoreError::Internal(format!("not found on the cluster: {e}")),
        K::RateLimited => StoreError::Unavailable(e.to_string()),
        // S3's ConditionalRequestConflict: another conditional write to the key is in flight.
        K::Conflict => StoreError::Unavailable(e.to_string()),
        _ if e.is_temporary() => StoreError::Unavailable(e.to_string()),
        K::Unexpected => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Internal(e.to_string()),
    }
}

async fn write_json<T: serde::Serialize>(path: PathBuf, v: &T) -> StoreResult<()> {
    let data = serde_json::to_vec(v).map_err(StoreError::internal)?;
    let tmp = path.with_extension("tmp");
    tokio::fs::write(&tmp, data)
        .await
        .map_err(StoreError::internal)?;
    tokio::fs::rename(&tmp, &path)
        .await
        .map_err(StoreError::internal)
}

#[async_trait]
impl Store for RemoteStore {
    fn kind(&self) -> &'static str {
        "remote"
    }

    async fn list_buckets(&self) -> StoreResult<Vec<BucketInfo>> {
        let op = match &self.layout {
            Layout::Prefixed(op) => op,
            Layout::Direct { api, .. } => return api.list_buckets().await,
        };
        let entries = op.list("").await.map_err(map_err)?;
        let mut out = Vec::new();
        for e in entries {
            let Some(name) = e.path().strip_suffix('/') else {
                continue;
            };
            if name.is_empty() || name.contains('/') {
                continue;
            }
            // Only directories carrying our marker are buckets.
            match op.stat(&format!("{name}/{BUCKET_MARKER}")).await {
                Ok(meta) => out.push(BucketInfo::new(
                    name,
                    Self::info_from(name, &meta).last_modified_ms,
                )),
                Err(err) if err.kind() == opendal::ErrorKind::NotFound => {}
                Err(err) => return Err(map_err(err)),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn create_bucket(&self, name: &str) -> StoreResult<()> {
        let op = match &self.layout {
            Layout::Prefixed(op) => op,
            Layout::Direct { api, .. } => {
                return match api.create_bucket(name).await? {
                    Answer::Exists => Err(StoreError::BucketExists(name.into())),
                    _ => Ok(()),
                };
            }
        };
        if self.head_bucket(name).await.is_ok() {
            return Err(StoreError::BucketExists(name.into()));
        }
        let marker = format!("{name}/{BUCKET_MARKER}");
        op.write(&marker, &b"pixelport bucket marker\n"[..])
            .await
            .map(|_| ())
            .map_err(map_err)
    }

    async fn head_bucket(&self, name: &str) -> StoreResult<BucketInfo> {
        let exists = match &self.layout {
            Layout::Prefixed(op) => op
                .exists(&format!("{name}/{BUCKET_MARKER}"))
                .await
                .map_err(map_err)?,
            Layout::Direct { api, .. } => matches!(api.head_bucket(name).await?, Answer::Done),
        };
        if exists {
            Ok(BucketInfo::new(name, now_ms()))
        } else {
            Err(StoreError::NoSuchBucket(name.into()))
        }
    }

    async fn delete_bucket(&self, name: &str) -> StoreResult<()> {
        let op = match &self.layout {
            Layout::Prefixed(op) => op,
            Layout::Direct { api, ops, .. } => {
                // Some servers (s3s-fs among them) delete a bucket with objects in it; S3
                // refuses. Check first, so no cluster loses objects through Pixelport.
                self.ensure_bucket(name).await?;
                let at = self.at(name)?;
                let any = at
                    .op
                    .list_with("")
                    .recursive(true)
                    .limit(2)
                    .await
                    .map_err(map_err)?;
                if any.iter().any(|e| !e.metadata().is_dir()) {
                    return Err(StoreError::BucketNotEmpty(name.into()));
                }
                return match api.delete_bucket(name).await? {
                    Answer::Missing => Err(StoreError::NoSuchBucket(name.into())),
                    Answer::NotEmpty => Err(StoreError::BucketNotEmpty(name.into())),
                    _ => {
                        if let Ok(mut ops) = ops.lock() {
                            ops.remove(name);
                        }
                        Ok(())
                    }
                };
            }
        };
        self.ensure_bucket(name).await?;
        let dir = format!("{name}/");
        let entries = op
            .list_with(&dir)
            .recursive(true)
            .limit(4)
            .await
            .map_err(map_err)?;
        let marker = format!("{dir}{BUCKET_MARKER}");
        if entries
            .iter()
            .any(|e| e.path() != dir && e.path() != marker && !e.metadata().is_dir())
        {
            return Err(StoreError::BucketNotEmpty(name.into()));
        }
        op.delete(&marker).await.map_err(map_err)
    }

    async fn head_object(&self, bucket: &str, key: &str) -> StoreResult<ObjectInfo> {
        let at = self.at(bucket)?;
        match at.op.stat(&at.path(key)).await {
            Ok(meta) if !meta.is_dir() || key.ends_with('/') => Ok(Self::info_from(key, &meta)),
            Ok(_) => Err(StoreError::NoSuchKey(key.into())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => {
                self.ensure_bucket(bucket).await?;
                Err(StoreError::NoSuchKey(key.into()))
            }
            Err(e) => Err(map_err(e)),
        }
    }

    async fn read_object(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ReadRange>,
    ) -> StoreResult<(ObjectInfo, ByteStream, Range<u64>)> {
        let info = self.head_object(bucket, key).await?;
        let span = match range {
            Some(r) => r
                .resolve(info.size)
                .ok_or(StoreError::InvalidRange { size: info.size })?,
            None => 0..info.size,
        };
        let at = self.at(bucket)?;
        let path = at.path(key);
        let reader = at
            .op
            .reader_with(&path)
            .if_match(&format!("\"{}\"", info.etag))
            .chunk(4 << 20)
            .await
            .map_err(map_err)?;
        let stream = reader
            .into_bytes_stream(span.clone())
            .await
            .map_err(map_err)?;
        // Forward through a channel: the S3 layer needs a Sync stream.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
        tokio::spawn(async move {
            let mut stream = stream;
            while let Some(item) = stream.next().await {
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        });
        Ok((info, Box::pin(tokio_stream_from(rx)), span))
    }

    async fn put_object_if(
        &self,
        bucket: &str,
        key: &str,
        mut body: Spooled,
        attrs: ObjectAttrs,
        cond: &WriteCondition,
    ) -> StoreResult<Conditional<ObjectInfo>> {
        self.ensure_bucket(bucket).await?;
        refuse_encryption(&attrs)?;
        let data = body
            .take_data()
            .ok_or_else(|| StoreError::Internal("spooled body was already consumed".into()))?;
        let file = match &data {
            SpoolData::File { abs, .. } => Some(abs.clone()),
            SpoolData::Memory(_) => None,
        };
        let res = match self.precheck(bucket, key, cond).await {
            Ok(Ok(())) => {
                self.upload(
                    &self.at(bucket)?,
                    key,
                    vec![data],
                    &attrs,
                    &body.checksums,
                    None,
                    cond,
                )
                .await
            }
            refused => refused,
        };
        if let Some(f) = file {
            let _ = tokio::fs::remove_file(f).await;
        }
        if let Err(c) = res? {
            return Ok(Err(c));
        }
        self.head_object(bucket, key).await.map(Ok)
    }

    async fn replace_attrs(
        &self,
        bucket: &str,
        key: &str,
        attrs: ObjectAttrs,
    ) -> StoreResult<ObjectInfo> {
        // S3 has no metadata-only update: rewrite the object with its own bytes.
        let (info, stream, _) = self.read_object(bucket, key, None).await?;
        let spool_dir = self
            .uploads_dir
            .join(format!("rewrite-{}", uuid::Uuid::new_v4().simple()));
        tokio::fs::create_dir_all(&spool_dir)
            .await
            .map_err(StoreError::internal)?;
        let file = spool_dir.join("body");
        let res: StoreResult<()> = async {
            let mut f = tokio::fs::File::create(&file)
                .await
                .map_err(StoreError::internal)?;
            let mut stream = stream;
            while let Some(chunk) = stream.try_next().await.map_err(StoreError::internal)? {
                tokio::io::AsyncWriteExt::write_all(&mut f, &chunk)
                    .await
                    .map_err(StoreError::internal)?;
            }
            tokio::io::AsyncWriteExt::flush(&mut f)
                .await
                .map_err(StoreError::internal)?;
            let data = SpoolData::File {
                rel: String::new(),
                abs: file.clone(),
            };
            self.upload(
                &self.at(bucket)?,
                key,
                vec![data],
                &attrs,
                &info.checksums,
                None,
                &WriteCondition::default(),
            )
            .await?
            .map_err(|c| StoreError::Internal(format!("unconditional rewrite refused by {c}")))
        }
        .await;
        let _ = tokio::fs::remove_dir_all(&spool_dir).await;
        res?;
        self.head_object(bucket, key).await
    }

    async fn delete_object(&self, bucket: &str, key: &str) -> StoreResult<Deleted> {
        self.ensure_bucket(bucket).await?;
        // Deleting the marker would delete the bucket: it is not a key clients can address.
        if key.is_empty() || (key == BUCKET_MARKER && matches!(self.layout, Layout::Prefixed(_))) {
            return Ok(Deleted::default());
        }
        let at = self.at(bucket)?;
        at.op.delete(&at.path(key)).await.map_err(map_err)?;
        Ok(Deleted::default())
    }

    async fn list_objects(&self, bucket: &str, query: &ListQuery) -> StoreResult<ListPage> {
        self.ensure_bucket(bucket).await?;
        let at = self.at(bucket)?;
        let dir = at.dir.clone();
        let path = format!("{dir}{}", query.prefix);
        let mut lister = at.op.lister_with(&path).recursive(true);
        if let Some(after) = &query.after {
            lister = lister.start_after(&format!("{dir}{after}"));
        }
        let mut lister = lister.await.map_err(map_err)?;
        let mut items = Vec::new();
        while let Some(entry) = lister.try_next().await.map_err(map_err)? {
            let Some(key) = entry.path().strip_prefix(&dir) else {
                continue;
            };
            let marker = key == BUCKET_MARKER && matches!(self.layout, Layout::Prefixed(_));
            if key.is_empty() || marker || entry.metadata().is_dir() {
                continue;
            }
            items.push(Self::info_from(key, entry.metadata()));
        }
        items.sort_by(|a, b| a.key.cmp(&b.key));
        let mut page = listing::paginate(items, query);
        // Some servers list without ETags; fill them in for the page only, 16 at a time.
        let missing: Vec<usize> = (0..page.objects.len())
            .filter(|&i| page.objects[i].etag.is_empty())
            .collect();
        let found: Vec<(usize, Option<String>)> = futures::stream::iter(missing)
            .map(|i| {
                let path = at.path(&page.objects[i].key);
                let op = &at.op;
                async move {
                    (
                        i,
                        op.stat(&path)
                            .await
                            .ok()
                            .and_then(|m| m.etag().map(|e| e.trim_matches('"').to_owned())),
                    )
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for (i, etag) in found {
            if let Some(e) = etag {
                page.objects[i].etag = e;
            }
        }
        Ok(page)
    }

    async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        attrs: ObjectAttrs,
        checksum: Option<UploadChecksum>,
    ) -> StoreResult<String> {
        self.ensure_bucket(bucket).await?;
        refuse_encryption(&attrs)?;
        if checksum.as_ref().is_some_and(|c| c.full_object) {
            return Err(StoreError::NotImplemented(
                "FULL_OBJECT multipart checksums are not implemented on the remote store: \
                 the cluster assembles the object, and Pixelport does not read it back to \
                 checksum it. Leave x-amz-checksum-type out."
                    .into(),
            ));
        }
        let info = UploadInfo {
            upload_id: uuid::Uuid::new_v4().simple().to_string(),
            bucket: bucket.into(),
            key: key.into(),
            initiated_ms: now_ms(),
            attrs,
            checksum_algorithm: checksum.map(|c| c.algorithm),
            full_object: false,
        };
        let dir = self.upload_dir(&info.upload_id)?;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(StoreError::internal)?;
        write_json(dir.join("upload.json"), &info).await?;
        Ok(info.upload_id)
    }

    async fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: i32,
        mut body: Spooled,
        customer_key: Option<&crate::store::sealing::CustomerKey>,
    ) -> StoreResult<PartInfo> {
        self.load_upload(bucket, key, upload_id).await?;
        if customer_key.is_some() {
            return Err(crate::store::sealing::SealError::NotApplicable.into());
        }
        let dir = self.upload_dir(upload_id)?;
        let target = dir.join(format!("part-{part_number}"));
        match body.take_data() {
            Some(SpoolData::File { abs, .. }) => tokio::fs::rename(&abs, &target)
                .await
                .map_err(StoreError::internal)?,
            Some(SpoolData::Memory(bytes)) => tokio::fs::write(&target, &bytes)
                .await
                .map_err(StoreError::internal)?,
            None => {
                return Err(StoreError::Internal(
                    "spooled body was already consumed".into(),
                ));
            }
        }
        let info = PartInfo {
            part_number,
            size: body.size,
            etag: body.md5_hex(),
            last_modified_ms: now_ms(),
            checksums: body.checksums.clone(),
        };
        write_json(dir.join(format!("part-{part_number}.json")), &info).await?;
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
        let (upload, stored) = self.load_upload(bucket, key, upload_id).await?;
        let (chosen, _etag) = select_parts(parts, &stored)?;
        if let Err(c) = self.precheck(bucket, key, cond).await? {
            return Ok(Err(c));
        }
        let dir = self.upload_dir(upload_id)?;
        let bodies = chosen
            .iter()
            .map(|p| SpoolData::File {
                rel: String::new(),
                abs: dir.join(format!("part-{}", p.part_number)),
            })
            .collect();
        // Keep the client's part boundaries when they are regular, so the cluster's ETag is
        // the md5-of-part-md5s the client computed.
        let first = chosen[0].size;
        let aligned = chosen.len() > 1
            && first <= ALIGNED_PART_LIMIT
            && chosen[..chosen.len() - 1].iter().all(|p| p.size == first)
            && chosen[chosen.len() - 1].size <= first;
        // A refused completion keeps the upload's parts, as the embedded store does.
        if let Err(c) = self
            .upload(
                &self.at(bucket)?,
                key,
                bodies,
                &upload.attrs,
                &Checksums::default(),
                aligned.then_some(first as usize),
                cond,
            )
            .await?
        {
            return Ok(Err(c));
        }
        let _ = tokio::fs::remove_dir_all(&dir).await;
        let mut info = self.head_object(bucket, key).await?;
        info.parts = chosen.len() as u32;
        Ok(Ok(info))
    }

    async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> StoreResult<()> {
        self.load_upload(bucket, key, upload_id).await?;
        tokio::fs::remove_dir_all(self.upload_dir(upload_id)?)
            .await
            .map_err(StoreError::internal)
    }

    async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> StoreResult<(UploadInfo, Vec<PartInfo>)> {
        let (u, parts) = self.load_upload(bucket, key, upload_id).await?;
        Ok((u, parts.into_values().collect()))
    }

    async fn list_uploads(&self, bucket: &str, prefix: &str) -> StoreResult<Vec<UploadInfo>> {
        self.ensure_bucket(bucket).await?;
        let mut out = Vec::new();
        let mut rd = tokio::fs::read_dir(&self.uploads_dir)
            .await
            .map_err(StoreError::internal)?;
        while let Some(e) = rd.next_entry().await.map_err(StoreError::internal)? {
            if let Ok(raw) = tokio::fs::read(e.path().join("upload.json")).await
                && let Ok(u) = serde_json::from_slice::<UploadInfo>(&raw)
                && u.bucket == bucket
                && u.key.starts_with(prefix)
            {
                out.push(u);
            }
        }
        out.sort_by(|a, b| (&a.key, a.initiated_ms).cmp(&(&b.key, b.initiated_ms)));
        Ok(out)
    }

    async fn expire_uploads(&self, cutoff_unix: i64) -> StoreResult<usize> {
        let mut n = 0;
        let mut rd = tokio::fs::read_dir(&self.uploads_dir)
            .await
            .map_err(StoreError::internal)?;
        while let Some(e) = rd.next_entry().await.map_err(StoreError::internal)? {
            // Upload dirs and metadata rewrites in progress both live here; without a
            // readable upload.json (being created, or a rewrite) the dir's own age decides.
            let dir_is_old = || async {
                let modified = tokio::fs::metadata(e.path())
                    .await
                    .and_then(|m| m.modified())
                    .ok();
                modified
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .is_some_and(|d| (d.as_secs() as i64) < cutoff_unix)
            };
            let stale = match tokio::fs::read(e.path().join("upload.json")).await {
                Ok(raw) => match serde_json::from_slice::<UploadInfo>(&raw) {
                    Ok(u) => u.initiated_ms / 1000 < cutoff_unix,
                    Err(_) => dir_is_old().await,
                },
                Err(_) => dir_is_old().await,
            };
            if stale && tokio::fs::remove_dir_all(e.path()).await.is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + Sync {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Encryption at rest is the embedded store's only (`SSE_NOT_ON_THIS_STORE`).
fn refuse_encryption(attrs: &ObjectAttrs) -> StoreResult<()> {
    if attrs.encryption.is_some() || attrs.customer_key.is_some() {
        return Err(StoreError::NotImplemented(
            crate::store::SSE_NOT_ON_THIS_STORE.into(),
        ));
    }
    Ok(())
}
