//! Fetches a source image's bytes: `s3://bucket/key` from Pixelport's own store and
//! `local:///path` from under `[images] local_root`. What must stay true:
//!
//! * No read goes past `max_src_file_size`: the size is checked before reading when it is
//!   known, and again while reading, so memory per request is bounded.
//! * A `local://` path never escapes the root: `..` components are refused, and the
//!   canonical path (symbolic links resolved) must still lie under the canonical root.
//! * Every source has an identity and a version (`etag`), so results can be cached and
//!   invalidated: the store's ETag for `s3://`, size and modification time for `local://`.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::store::{DynStore, StoreError};

/// Why a source could not be fetched, with whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source not found: {0}")]
    NotFound(String),
    #[error("source is larger than the {max}-byte limit (max_src_file_size)")]
    TooLarge { max: u64 },
    #[error("invalid source URL `{0}`: {1}")]
    Invalid(String, String),
    #[error("source scheme of `{0}` is not allowed: {1}")]
    NotAllowed(String, String),
    #[error("fetching the source failed: {0}")]
    Upstream(String),
    #[error("fetching the source timed out")]
    Timeout,
    #[error("reading the source failed: {0}")]
    Internal(String),
    /// An SSE-C object: only a request carrying its key may read it (403).
    #[error(
        "the source {0} is encrypted with a customer-provided key (SSE-C): the image endpoint never receives that key, so it cannot read the object. Store it unencrypted or with SSE-S3 (`--sse AES256`, read transparently) to serve it as images"
    )]
    Encrypted(String),
}

/// A fetched source: its bytes, its version, and when it last changed.
#[derive(Debug, Clone)]
pub struct SourceImage {
    pub bytes: Bytes,
    /// The share of `[images] max_source_memory` these bytes hold, given back when the last
    /// copy of the source is dropped.
    pub budget: Option<Arc<tokio::sync::OwnedSemaphorePermit>>,
    /// The source's version (without quotes); changes whenever its bytes do.
    pub etag: String,
    /// Milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
    /// The source's own Cache-Control (the object's metadata, the origin's header), for
    /// `[images] cache_control_passthrough`.
    pub cache_control: Option<String>,
}

/// A source URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceUrl {
    S3 { bucket: String, key: String },
    Local { path: String },
    Http { url: String },
}

impl SourceUrl {
    pub fn parse(url: &str) -> Result<SourceUrl, SourceError> {
        let invalid = |why: &str| SourceError::Invalid(url.to_owned(), why.to_owned());
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, key) = rest
                .split_once('/')
                .ok_or_else(|| invalid("expected s3://bucket/key"))?;
            if bucket.is_empty() || key.is_empty() {
                return Err(invalid("expected s3://bucket/key"));
            }
            // A query or fragment would be a version or anchor; Pixelport has neither.
            return Ok(SourceUrl::S3 {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            });
        }
        if let Some(rest) = url.strip_prefix("local://") {
            if !rest.starts_with('/') {
                return Err(invalid("expected local:///path"));
            }
            return Ok(SourceUrl::Local {
                path: rest.to_owned(),
            });
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            return Ok(SourceUrl::Http {
                url: url.to_owned(),
            });
        }
        Err(SourceError::NotAllowed(
            url.to_owned(),
            "use s3://bucket/key, local:///path or an allowed http(s):// URL".into(),
        ))
    }
}

/// Reads `s3://bucket/key` from the store, at most `max` bytes.
pub async fn fetch_s3(
    store: &DynStore,
    bucket: &str,
    key: &str,
    max: u64,
) -> Result<SourceImage, SourceError> {
    let shown = format!("s3://{bucket}/{key}");
    let (info, mut stream, _) = store
        .read_object(bucket, key, None)
        .await
        .map_err(|e| store_error(&shown, e))?;
    if info.size > max {
        return Err(SourceError::TooLarge { max });
    }
    let mut buf = BytesMut::with_capacity(usize::try_from(info.size).unwrap_or(0));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| SourceError::Internal(e.to_string()))?;
        if (buf.len() + chunk.len()) as u64 > max {
            return Err(SourceError::TooLarge { max });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(SourceImage {
        bytes: buf.freeze(),
        budget: None,
        etag: info.etag,
        last_modified_ms: info.last_modified_ms,
        cache_control: info.attrs.cache_control,
    })
}

/// A store error reading the source `shown` (`s3://bucket/key`), as a source error: a
/// missing object is the client's 404, an unreachable backend the upstream's 502.
pub fn store_error(shown: &str, e: StoreError) -> SourceError {
    match e {
        StoreError::NoSuchBucket(_) | StoreError::NoSuchKey(_) => {
            SourceError::NotFound(shown.to_owned())
        }
        StoreError::Unavailable(m) => SourceError::Upstream(m),
        StoreError::Sealing(crate::store::sealing::SealError::KeyRequired) => {
            SourceError::Encrypted(shown.to_owned())
        }
        other => SourceError::Internal(other.to_string()),
    }
}

/// The file a `local:///path` names under `root`, refusing any path that leaves it.
pub fn local_path(root: &Path, path: &str) -> Result<PathBuf, SourceError> {
    let rel = Path::new(path.trim_start_matches('/'));
    let mut out = root.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => {
                return Err(SourceError::Invalid(
                    format!("local://{path}"),
                    "`..` and absolute components are not allowed".into(),
                ));
            }
        }
    }
    Ok(out)
}

/// What identifies one version of an `s3://` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceVersion {
    pub etag: String,
    pub last_modified_ms: i64,
    pub size: u64,
}

/// Most versions remembered; past it the memory is cleared (a HEAD each re-fills it).
const MAX_REMEMBERED: usize = 100_000;

/// The current version of `s3://` sources, from a HEAD on the store. A version is trusted for
/// `trust` after it was read (0: never, every lookup is a HEAD, which is what the embedded
/// store wants: its HEAD is a catalog read). Changes made through Pixelport's own S3 API
/// call [`SourceVersions::forget`], so they are seen at once either way.
#[derive(Debug)]
pub struct SourceVersions {
    trust: Duration,
    /// Read on every request, written on a miss or a change: a read lock for lookups.
    seen: std::sync::RwLock<Seen>,
}

/// Remembered versions, and a count of `forget` calls: a HEAD answered before a change
/// finished must not be remembered after it (it may be the version just replaced).
#[derive(Debug, Default)]
struct Seen {
    versions: HashMap<String, (SourceVersion, Instant)>,
    forgets: u64,
}

impl SourceVersions {
    /// `trust`: how long an answer is remembered (zero: never; `Duration::MAX`: until the
    /// object changes through Pixelport, right for the embedded store, which nobody else
    /// writes).
    pub fn new(trust: Duration) -> Self {
        Self {
            trust,
            seen: std::sync::RwLock::new(Seen::default()),
        }
    }

    fn seen(&self) -> std::sync::RwLockWriteGuard<'_, Seen> {
        self.seen.write().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn get(
        &self,
        store: &DynStore,
        bucket: &str,
        key: &str,
    ) -> Result<SourceVersion, SourceError> {
        self.current(store, &format!("s3://{bucket}/{key}"), bucket, key)
            .await
    }

    /// [`SourceVersions::get`] with the source's id (`s3://bucket/key`) already made.
    pub async fn current(
        &self,
        store: &DynStore,
        id: &str,
        bucket: &str,
        key: &str,
    ) -> Result<SourceVersion, SourceError> {
        let mut forgets = 0;
        if !self.trust.is_zero() {
            let seen = self.seen.read().unwrap_or_else(|e| e.into_inner());
            if let Some((v, at)) = seen.versions.get(id)
                && at.elapsed() < self.trust
            {
                return Ok(v.clone());
            }
            forgets = seen.forgets;
        }
        let info = store.head_object(bucket, key).await.map_err(|e| match e {
            StoreError::NoSuchBucket(_) | StoreError::NoSuchKey(_) => {
                SourceError::NotFound(id.to_owned())
            }
            StoreError::Unavailable(m) => SourceError::Upstream(m),
            other => SourceError::Internal(other.to_string()),
        })?;
        let v = SourceVersion {
            etag: info.etag,
            last_modified_ms: info.last_modified_ms,
            size: info.size,
        };
        if !self.trust.is_zero() {
            let mut seen = self.seen();
            if seen.forgets == forgets {
                if seen.versions.len() >= MAX_REMEMBERED {
                    seen.versions.clear();
                }
                seen.versions
                    .insert(id.to_owned(), (v.clone(), Instant::now()));
            }
        }
        Ok(v)
    }

    /// Drops what is remembered of `source_id` (`s3://bucket/key`).
    pub fn forget(&self, source_id: &str) {
        let mut seen = self.seen();
        seen.forgets += 1;
        seen.versions.remove(source_id);
    }
}

/// Reads `local:///path` under `root` (which must be set), at most `max` bytes.
pub async fn fetch_local(root: &Path, path: &str, max: u64) -> Result<SourceImage, SourceError> {
    let shown = format!("local://{path}");
    if root.as_os_str().is_empty() {
        return Err(SourceError::NotAllowed(
            shown,
            "local sources are disabled ([images] local_root is empty)".into(),
        ));
    }
    let candidate = local_path(root, path)?;
    let not_found = |_| SourceError::NotFound(shown.clone());
    let real = tokio::fs::canonicalize(&candidate)
        .await
        .map_err(not_found)?;
    let real_root = tokio::fs::canonicalize(root)
        .await
        .map_err(|e| SourceError::Internal(format!("local_root: {e}")))?;
    if !real.starts_with(&real_root) {
        // A symbolic link pointing outside: behave as if it were not there.
        return Err(SourceError::NotFound(shown));
    }
    let meta = tokio::fs::metadata(&real).await.map_err(not_found)?;
    if !meta.is_file() {
        return Err(SourceError::NotFound(shown));
    }
    if meta.len() > max {
        return Err(SourceError::TooLarge { max });
    }
    let bytes = tokio::fs::read(&real)
        .await
        .map_err(|e| SourceError::Internal(e.to_string()))?;
    if bytes.len() as u64 > max {
        return Err(SourceError::TooLarge { max });
    }
    let modified_ms = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Ok(SourceImage {
        bytes: Bytes::from(bytes),
        budget: None,
        etag: format!("{:x}-{:x}", meta.len(), modified_ms),
        last_modified_ms: modified_ms,
        cache_control: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        assert_eq!(
            SourceUrl::parse("s3://photos/2025/cat.jpg").unwrap(),
            SourceUrl::S3 {
                bucket: "photos".into(),
                key: "2025/cat.jpg".into()
            }
        );
        assert!(SourceUrl::parse("s3://photos").is_err());
        assert!(SourceUrl::parse("s3:///key").is_err());
        assert_eq!(
            SourceUrl::parse("local:///a/b.png").unwrap(),
            SourceUrl::Local {
                path: "/a/b.png".into()
            }
        );
        assert!(matches!(
            SourceUrl::parse("ftp://x/y"),
            Err(SourceError::NotAllowed(..))
        ));
    }

    #[test]
    fn local_paths_stay_under_the_root() {
        let root = Path::new("/srv/img");
        assert_eq!(
            local_path(root, "/a/./b.png").unwrap(),
            PathBuf::from("/srv/img/a/b.png")
        );
        assert!(local_path(root, "/../etc/passwd").is_err());
        assert!(local_path(root, "/a/../../etc/passwd").is_err());
    }

    #[tokio::test]
    async fn local_reads_respect_root_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a.bin"), b"hello").unwrap();
        std::fs::write(dir.path().join("secret"), b"outside").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();

        let got = fetch_local(&root, "/a.bin", 100).await.unwrap();
        assert_eq!(&got.bytes[..], b"hello");
        assert!(matches!(
            fetch_local(&root, "/a.bin", 3).await,
            Err(SourceError::TooLarge { max: 3 })
        ));
        assert!(matches!(
            fetch_local(&root, "/missing", 100).await,
            Err(SourceError::NotFound(_))
        ));
        #[cfg(unix)]
        assert!(matches!(
            fetch_local(&root, "/link", 100).await,
            Err(SourceError::NotFound(_))
        ));
        assert!(matches!(
            fetch_local(Path::new(""), "/a.bin", 100).await,
            Err(SourceError::NotAllowed(..))
        ));
    }
}
