//! The derivative cache: processed variants in one redb file, keyed by a hash of everything
//! that decides their bytes (`key`), bounded in size with LRU eviction (`eviction`), indexed by
//! source for invalidation, plus single flight for misses (`flight`). Layout: docs/cache.md.
//!
//! The API is synchronous and `DerivativeCache` is `Send + Sync + Clone` (the `Database` sits
//! in an `Arc`): async callers run it under `tokio::task::spawn_blocking`. Every error is one
//! a caller may log and ignore: a request must never fail because of the cache.
//!
//! What must stay true:
//! - after a write returns, the charged size of all entries is at most `max_size`;
//! - an entry is served only if its header, its body and its source-index row were committed
//!   together, its body matches the stored CRC-32C, and it has not expired;
//! - a file that is corrupt or of another format never makes `open` fail: it is renamed to
//!   `<file>.corrupt-<unix time>` and a fresh cache is created;
//! - `get` runs one read transaction and never writes: hits are recorded in memory and
//!   persisted by the next write (or `flush_access`).

pub mod entry;
pub mod eviction;
pub mod flight;
pub mod hot;
pub mod key;

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
};

pub use entry::StoredHeader;
pub use eviction::{EvictionPolicy, Lru};
pub use flight::SingleFlight;
pub use key::{CacheKey, Digest};

/// `"format"` → the layout version, checked at open.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Digest → versioned header (`entry`).
const ENTRIES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("entries");
/// Digest → the variant's bytes.
const BODIES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("bodies");
/// source id, NUL, digest → nothing: which variants each source has.
const SOURCES: TableDefinition<&[u8], ()> = TableDefinition::new("sources");

/// Version of the file layout (tables, key derivation, header encoding). A file with another
/// version is moved aside at open.
pub const FORMAT_VERSION: u8 = 1;
const FORMAT_KEY: &str = "format";

/// What an entry costs besides its body: header, three keys, redb bookkeeping (an estimate).
pub const ENTRY_OVERHEAD: u64 = 256;

/// Eviction brings the total down to this share of `max_size` (in percent).
const LOW_WATER_PERCENT: u64 = 90;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("derivative cache: {0}")]
    Db(#[from] redb::Error),
    #[error("derivative cache entry of {size} bytes is over the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("derivative cache file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("derivative cache header: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("derivative cache config: {0}")]
    Config(String),
    #[error("derivative cache not storing: {0}")]
    LowSpace(#[from] crate::disk::LowSpace),
    #[error("derivative cache file {} is unusable even after moving it aside: {reason}", path.display())]
    Unusable { path: PathBuf, reason: String },
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for CacheError {
            fn from(e: $t) -> Self { CacheError::Db(e.into()) }
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

/// redb's page cache for the cache file (its default is 1 GiB).
pub const REDB_CACHE_SIZE: usize = 32 << 20;

/// How the cache is bounded. Built by the daemon from its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Bound on the charged size of all entries (body + `ENTRY_OVERHEAD` + source id). The
    /// file itself can be somewhat larger (redb pages, free space kept for reuse).
    pub max_size: u64,
    /// Entries older than this (since they were stored) read as misses.
    pub ttl: Option<Duration>,
    /// Larger entries are refused; default `max_size / 8`.
    pub max_entry_size: Option<u64>,
    /// Verify every page checksum at open (reads the whole file). Without it, a file that
    /// was not closed cleanly is still checked by redb's repair, and bodies are checked
    /// against their CRC on every read.
    pub verify_on_open: bool,
    /// Bytes of recently served variants also kept in memory (the hot tier); 0: none.
    pub memory_size: u64,
    /// New variants are not stored while the cache file's filesystem has less than this
    /// free (they are still served); 0: no check.
    pub min_free_space: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_size: 10 << 30,
            ttl: None,
            max_entry_size: None,
            verify_on_open: false,
            memory_size: 64 << 20,
            min_free_space: 0,
        }
    }
}

impl CacheConfig {
    pub fn validate(&self) -> Result<(), CacheError> {
        if self.max_size < 4 * ENTRY_OVERHEAD {
            return Err(CacheError::Config(format!(
                "max_size must be at least {} bytes",
                4 * ENTRY_OVERHEAD
            )));
        }
        if self.ttl.is_some_and(|t| t.is_zero()) {
            return Err(CacheError::Config("ttl must not be zero".into()));
        }
        if self.max_entry_size.is_some_and(|m| m > self.max_size) {
            return Err(CacheError::Config(
                "max_entry_size must not exceed max_size".into(),
            ));
        }
        Ok(())
    }

    fn entry_limit(&self) -> u64 {
        self.max_entry_size.unwrap_or(self.max_size / 8)
    }

    fn low_water(&self) -> u64 {
        self.max_size / 100 * LOW_WATER_PERCENT
    }
}

/// What the response needs besides the bytes, given to `put`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntryMeta {
    pub content_type: String,
    pub etag: String,
    pub last_modified_ms: i64,
    /// The source's own Cache-Control, for `[images] cache_control_passthrough`.
    pub cache_control: Option<String>,
}

/// A hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedEntry {
    pub body: Bytes,
    pub content_type: String,
    pub etag: String,
    pub last_modified_ms: i64,
    pub cache_control: Option<String>,
    pub size: u64,
    pub created_ms: i64,
    /// The access before this one, as last persisted.
    pub last_access_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct CacheStats {
    pub entries: u64,
    /// Charged bytes (what `max_size` bounds).
    pub bytes: u64,
    pub max_size: u64,
    /// Counters since the cache was opened.
    pub hits: u64,
    pub misses: u64,
    pub inserts: u64,
    pub evictions: u64,
    pub invalidations: u64,
}

#[derive(Default)]
struct Counters {
    entries: AtomicU64,
    bytes: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    evictions: AtomicU64,
    invalidations: AtomicU64,
}

/// What `get` learnt that the next write must persist.
#[derive(Default)]
struct Pending {
    /// Digest → (recency, time) of its latest hit.
    accesses: HashMap<Digest, (u64, i64)>,
    /// Digest → `created_ms` of an entry found expired or damaged (removed only if the stored
    /// entry is still that one).
    doomed: HashMap<Digest, i64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.accesses.is_empty() && self.doomed.is_empty()
    }
}

struct Inner {
    db: Arc<Database>,
    path: PathBuf,
    config: CacheConfig,
    /// The eviction policy; its lock also orders this process's write transactions.
    policy: Mutex<Box<dyn EvictionPolicy>>,
    pending: Mutex<Pending>,
    /// Next recency number (persisted per entry as `access_seq`).
    clock: AtomicU64,
    counters: Counters,
    /// Recently served variants in memory, in front of redb.
    hot: hot::HotTier,
    /// The free-space floor of the cache file's filesystem.
    reserve: crate::disk::Reserve,
}

/// The derivative cache. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct DerivativeCache {
    inner: Arc<Inner>,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the guarded value consistent (redb changes are applied to
    // it only after their commit), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn charge_of(body_len: u64, source_id: &str) -> u64 {
    body_len + ENTRY_OVERHEAD + source_id.len() as u64
}

fn index_key(source_id: &str, digest: &Digest) -> Vec<u8> {
    let mut k = Vec::with_capacity(source_id.len() + 33);
    k.extend_from_slice(source_id.as_bytes());
    k.push(0);
    k.extend_from_slice(digest);
    k
}

/// Splits an index key into (source id bytes, digest).
fn split_index_key(k: &[u8]) -> Option<(&[u8], Digest)> {
    let cut = k.len().checked_sub(33)?;
    if k[cut] != 0 {
        return None;
    }
    let digest: Digest = k[cut + 1..].try_into().ok()?;
    Some((&k[..cut], digest))
}

/// Why opening failed: the file is unusable (move it aside), or something else is wrong
/// (permissions, another process holds the lock, disk full) and the caller must hear it.
enum OpenFailure {
    Unusable(String),
    Fatal(CacheError),
}

impl<E: Into<redb::Error>> From<E> for OpenFailure {
    fn from(e: E) -> Self {
        let e: redb::Error = e.into();
        let unusable = match &e {
            redb::Error::Corrupted(_)
            | redb::Error::UpgradeRequired(_)
            | redb::Error::RepairAborted
            | redb::Error::TableTypeMismatch { .. }
            | redb::Error::TableIsMultimap(_)
            | redb::Error::TableIsNotMultimap(_)
            | redb::Error::TypeDefinitionChanged { .. } => true,
            redb::Error::Io(io) => matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        };
        if unusable {
            OpenFailure::Unusable(e.to_string())
        } else {
            OpenFailure::Fatal(e.into())
        }
    }
}

/// Renames `path` to `<path>.corrupt-<unix time>` (with `-N` if that name is taken). The
/// edge cache moves its corrupt segments aside with this too.
pub(crate) fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = format!("{}.corrupt-{secs}", path.display());
    let mut aside = PathBuf::from(&base);
    let mut n = 1;
    while aside.exists() {
        aside = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

/// Removes entries (header, body, index row); returns the digests that had a header.
fn remove_entries(
    tx: &redb::WriteTransaction,
    digests: impl IntoIterator<Item = Digest>,
) -> Result<Vec<Digest>, CacheError> {
    let mut entries = tx.open_table(ENTRIES)?;
    let mut bodies = tx.open_table(BODIES)?;
    let mut sources = tx.open_table(SOURCES)?;
    let mut removed = Vec::new();
    for d in digests {
        let header = entries
            .remove(&d)?
            .map(|raw| entry::decode(raw.value()).map(|h| h.source_id));
        bodies.remove(&d)?;
        if let Some(source) = header {
            if let Some(source) = source {
                sources.remove(index_key(&source, &d).as_slice())?;
            }
            removed.push(d);
        }
    }
    Ok(removed)
}

/// What was loaded at open.
struct Loaded {
    db: Database,
    clock: u64,
}

fn open_file(
    path: &Path,
    config: &CacheConfig,
    policy: &mut dyn EvictionPolicy,
) -> Result<Loaded, OpenFailure> {
    // redb's default page cache is 1 GiB; popular variants are in the hot tier already, so
    // the file's pages get a small cache (counted in the documented memory bound).
    let mut db = Database::builder()
        .set_cache_size(REDB_CACHE_SIZE)
        .create(path)?;
    if config.verify_on_open && !db.check_integrity()? {
        tracing::warn!(path = %path.display(), "derivative cache was repaired at open");
    }
    let tx = db.begin_write()?;
    let mut max_seq = 0u64;
    {
        let foreign: Vec<String> = tx
            .list_tables()?
            .map(|h| h.name().to_owned())
            .filter(|n| !["meta", "entries", "bodies", "sources"].contains(&n.as_str()))
            .collect();
        if !foreign.is_empty() {
            return Err(OpenFailure::Unusable(format!(
                "not a derivative cache (tables {foreign:?})"
            )));
        }
        let mut meta = tx.open_table(META)?;
        let format = meta.get(FORMAT_KEY)?.map(|v| v.value().to_vec());
        match format.as_deref() {
            Some([FORMAT_VERSION]) => {}
            Some(other) => {
                return Err(OpenFailure::Unusable(format!(
                    "format version {other:?}, this build reads [{FORMAT_VERSION}]"
                )));
            }
            None => {
                if tx.open_table(ENTRIES)?.len()? > 0 {
                    return Err(OpenFailure::Unusable(
                        "entries without a format record".into(),
                    ));
                }
                meta.insert(FORMAT_KEY, [FORMAT_VERSION].as_slice())?;
            }
        }
        tx.open_table(BODIES)?;
        tx.open_table(SOURCES)?;
        let entries = tx.open_table(ENTRIES)?;
        let mut unreadable = Vec::new();
        for e in entries.iter()? {
            let (k, v) = e?;
            let digest = *k.value();
            match entry::decode(v.value()) {
                Some(h) => {
                    max_seq = max_seq.max(h.access_seq);
                    policy.insert(digest, charge_of(h.size, &h.source_id), h.access_seq);
                }
                None => unreadable.push(digest),
            }
        }
        drop(entries);
        if !unreadable.is_empty() {
            tracing::warn!(
                count = unreadable.len(),
                "derivative cache: dropping entries with unreadable headers"
            );
            let unreadable: HashSet<Digest> = unreadable.into_iter().collect();
            remove_entries(&tx, unreadable.iter().copied()).map_err(|e| match e {
                CacheError::Db(e) => OpenFailure::from(e),
                other => OpenFailure::Fatal(other),
            })?;
            // Their index rows name a source we could not read: find them by digest.
            let mut sources = tx.open_table(SOURCES)?;
            let mut orphans = Vec::new();
            for e in sources.iter()? {
                let (k, _) = e?;
                if split_index_key(k.value()).is_some_and(|(_, d)| unreadable.contains(&d)) {
                    orphans.push(k.value().to_vec());
                }
            }
            for k in orphans {
                sources.remove(k.as_slice())?;
            }
        }
    }
    tx.commit()?;
    Ok(Loaded {
        db,
        clock: max_seq + 1,
    })
}

/// Opens the file, turning a panic inside redb (debug builds assert on some corruptions)
/// into an unusable file.
fn open_guarded(
    path: &Path,
    config: &CacheConfig,
    policy: &mut Box<dyn EvictionPolicy>,
) -> Result<Loaded, OpenFailure> {
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        open_file(path, config, policy.as_mut())
    }));
    match result {
        Ok(r) => r,
        Err(_) => Err(OpenFailure::Unusable(
            "the database panicked while reading the file".into(),
        )),
    }
}

impl DerivativeCache {
    /// Opens (or creates) the cache at `path` with an LRU policy. Fails only for reasons a
    /// fresh file would not fix (permissions, the file locked by another process, disk full);
    /// a corrupt or foreign file is moved aside with a warning and replaced by an empty one.
    pub fn open(path: impl AsRef<Path>, config: CacheConfig) -> Result<Self, CacheError> {
        Self::open_with_policy(path, config, Box::new(Lru::new()))
    }

    pub fn open_with_policy(
        path: impl AsRef<Path>,
        config: CacheConfig,
        mut policy: Box<dyn EvictionPolicy>,
    ) -> Result<Self, CacheError> {
        config.validate()?;
        let path = path.as_ref().to_path_buf();
        let loaded = match open_guarded(&path, &config, &mut policy) {
            Ok(loaded) => loaded,
            Err(OpenFailure::Fatal(e)) => return Err(e),
            Err(OpenFailure::Unusable(reason)) => {
                policy.clear();
                let aside = move_aside(&path).map_err(|source| CacheError::Io {
                    path: path.clone(),
                    source,
                })?;
                tracing::warn!(
                    path = %path.display(),
                    moved_to = %aside.display(),
                    %reason,
                    "derivative cache file is unusable; moved it aside and starting empty"
                );
                match open_guarded(&path, &config, &mut policy) {
                    Ok(loaded) => loaded,
                    Err(OpenFailure::Fatal(e)) => return Err(e),
                    Err(OpenFailure::Unusable(reason)) => {
                        return Err(CacheError::Unusable { path, reason });
                    }
                }
            }
        };
        let memory_size = config.memory_size;
        let reserve = crate::disk::Reserve::new(
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
            config.min_free_space,
        );
        let cache = DerivativeCache {
            inner: Arc::new(Inner {
                db: Arc::new(loaded.db),
                path,
                config,
                policy: Mutex::new(policy),
                pending: Mutex::new(Pending::default()),
                clock: AtomicU64::new(loaded.clock),
                counters: Counters::default(),
                hot: hot::HotTier::new(memory_size),
                reserve,
            }),
        };
        // A smaller `max_size` than last time (or a crash mid-eviction) can leave it over.
        let needs_eviction = {
            let policy = lock(&cache.inner.policy);
            cache.publish(policy.as_ref());
            policy.total() > cache.inner.config.max_size
        };
        if needs_eviction {
            cache.write(|_| Ok(((), Vec::new())), None)?;
        }
        Ok(cache)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// Looks a variant up: one read transaction, no write. `Ok(None)` is a miss (absent,
    /// expired, unreadable or damaged).
    pub fn get(&self, key: &CacheKey) -> Result<Option<CachedEntry>, CacheError> {
        self.lookup(key, true)
    }

    /// [`DerivativeCache::get`], counting a miss in the statistics only when `count_miss`
    /// (a caller that goes on to `get` the same key after a miss would count it twice).
    pub fn lookup(
        &self,
        key: &CacheKey,
        count_miss: bool,
    ) -> Result<Option<CachedEntry>, CacheError> {
        let c = &self.inner.counters;
        let d = key.digest();
        let now = now_ms();
        if let Some(hit) = self.inner.hot.get(d) {
            let expired = self
                .inner
                .config
                .ttl
                .is_some_and(|ttl| now.saturating_sub(hit.created_ms) > ttl.as_millis() as i64);
            if !expired {
                // Every hit counts for the LRU order (recording fewer lets a variant read
                // between every insert look cold and be evicted).
                let seq = self.inner.clock.fetch_add(1, Ordering::Relaxed);
                lock(&self.inner.pending).accesses.insert(*d, (seq, now));
                c.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(hit));
            }
            self.inner.hot.remove(d);
        }
        let found = self.read(d);
        match &found {
            Ok(Some(_)) => {
                c.hits.fetch_add(1, Ordering::Relaxed);
            }
            _ if count_miss => {
                c.misses.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        found
    }

    fn read(&self, d: &Digest) -> Result<Option<CachedEntry>, CacheError> {
        let generation = self.inner.hot.generation();
        let tx = self.inner.db.begin_read()?;
        let entries = tx.open_table(ENTRIES)?;
        let Some(raw) = entries.get(d)? else {
            return Ok(None);
        };
        let Some(h) = entry::decode(raw.value()) else {
            return Ok(None);
        };
        drop(raw);
        let now = now_ms();
        if let Some(ttl) = self.inner.config.ttl
            && now.saturating_sub(h.created_ms) > ttl.as_millis() as i64
        {
            lock(&self.inner.pending).doomed.insert(*d, h.created_ms);
            return Ok(None);
        }
        let bodies = tx.open_table(BODIES)?;
        let body = bodies.get(d)?.map(|v| v.value().to_vec());
        let Some(body) = body.filter(|b| b.len() as u64 == h.size && crc32c::crc32c(b) == h.crc32c)
        else {
            tracing::warn!(
                key = %hex::encode(d),
                "derivative cache entry is damaged (body missing or checksum mismatch); dropping it"
            );
            lock(&self.inner.pending).doomed.insert(*d, h.created_ms);
            return Ok(None);
        };
        let seq = self.inner.clock.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.pending).accesses.insert(*d, (seq, now));
        let found = CachedEntry {
            body: Bytes::from(body),
            content_type: h.content_type,
            etag: h.etag,
            last_modified_ms: h.last_modified_ms,
            cache_control: h.cache_control,
            size: h.size,
            created_ms: h.created_ms,
            last_access_ms: h.last_access_ms,
        };
        self.inner
            .hot
            .insert(*d, &h.source_id, found.clone(), generation);
        Ok(Some(found))
    }

    /// Stores a variant (replacing one with the same key), evicting least recently used
    /// entries if the cache would exceed `max_size`. Callers log and ignore an error.
    pub fn put(&self, key: &CacheKey, meta: &EntryMeta, body: &[u8]) -> Result<(), CacheError> {
        let size = body.len() as u64;
        let charge = charge_of(size, key.source_id());
        let limit = self.inner.config.entry_limit();
        if charge > limit {
            return Err(CacheError::TooLarge {
                size: charge,
                limit,
            });
        }
        self.inner.reserve.check(charge.saturating_mul(2))?;
        let now = now_ms();
        let seq = self.inner.clock.fetch_add(1, Ordering::Relaxed);
        let header = StoredHeader {
            source_id: key.source_id().to_owned(),
            content_type: meta.content_type.clone(),
            etag: meta.etag.clone(),
            last_modified_ms: meta.last_modified_ms,
            cache_control: meta.cache_control.clone(),
            size,
            crc32c: crc32c::crc32c(body),
            created_ms: now,
            last_access_ms: now,
            access_seq: seq,
        };
        let raw = entry::encode(&header)?;
        let d = *key.digest();
        let generation = self.inner.hot.generation();
        self.write(
            |tx| {
                tx.open_table(ENTRIES)?.insert(&d, raw.as_slice())?;
                tx.open_table(BODIES)?.insert(&d, body)?;
                tx.open_table(SOURCES)?
                    .insert(index_key(key.source_id(), &d).as_slice(), ())?;
                Ok(((), Vec::new()))
            },
            Some((d, charge, seq)),
        )?;
        self.inner.counters.inserts.fetch_add(1, Ordering::Relaxed);
        self.inner.hot.replace(
            d,
            key.source_id(),
            CachedEntry {
                body: Bytes::copy_from_slice(body),
                content_type: header.content_type,
                etag: header.etag,
                last_modified_ms: header.last_modified_ms,
                cache_control: header.cache_control,
                size,
                created_ms: now,
                last_access_ms: now,
            },
            generation,
        );
        Ok(())
    }

    /// Drops every variant of `source_id` (exact match) in one transaction; returns how many.
    pub fn invalidate_source(&self, source_id: &str) -> Result<u64, CacheError> {
        let mut scope = source_id.as_bytes().to_vec();
        scope.push(0);
        let n = self.remove_indexed(&scope, |src| src == source_id.as_bytes());
        self.inner.hot.remove_sources(|src| src == source_id);
        n
    }

    /// Drops every variant whose source id starts with `prefix` (`s3://bucket/` for a bucket,
    /// `""` for everything); returns how many.
    pub fn purge_prefix(&self, prefix: &str) -> Result<u64, CacheError> {
        let n = self.remove_indexed(prefix.as_bytes(), |src| src.starts_with(prefix.as_bytes()));
        self.inner.hot.remove_sources(|src| src.starts_with(prefix));
        n
    }

    fn remove_indexed(
        &self,
        scope: &[u8],
        matches: impl Fn(&[u8]) -> bool,
    ) -> Result<u64, CacheError> {
        let (count, _) = self.write(
            |tx| {
                let mut rows = Vec::new();
                {
                    let sources = tx.open_table(SOURCES)?;
                    for e in sources.range(scope..)? {
                        let (k, _) = e?;
                        let k = k.value();
                        if !k.starts_with(scope) {
                            break;
                        }
                        if let Some((src, d)) = split_index_key(k)
                            && matches(src)
                        {
                            rows.push((k.to_vec(), d));
                        }
                    }
                }
                {
                    let mut sources = tx.open_table(SOURCES)?;
                    for (k, _) in &rows {
                        sources.remove(k.as_slice())?;
                    }
                }
                let removed = remove_entries(tx, rows.into_iter().map(|(_, d)| d))?;
                Ok((removed.len() as u64, removed))
            },
            None,
        )?;
        self.inner
            .counters
            .invalidations
            .fetch_add(count, Ordering::Relaxed);
        Ok(count)
    }

    /// Empties the cache; returns how many entries it held.
    pub fn purge_all(&self) -> Result<u64, CacheError> {
        let mut policy = lock(&self.inner.policy);
        *lock(&self.inner.pending) = Pending::default();
        let tx = self.inner.db.begin_write()?;
        let count = tx.open_table(ENTRIES)?.len()?;
        for t in [ENTRIES, BODIES] {
            tx.delete_table(t)?;
            tx.open_table(t)?;
        }
        tx.delete_table(SOURCES)?;
        tx.open_table(SOURCES)?;
        tx.commit()?;
        self.inner.hot.clear();
        policy.clear();
        self.publish(policy.as_ref());
        self.inner
            .counters
            .invalidations
            .fetch_add(count, Ordering::Relaxed);
        Ok(count)
    }

    /// Persists the hits recorded since the last write (and drops entries found expired or
    /// damaged); returns how many accesses were written. The daemon calls it now and then
    /// (every few seconds) so that LRU order survives a restart.
    pub fn flush_access(&self) -> Result<usize, CacheError> {
        if lock(&self.inner.pending).is_empty() {
            return Ok(0);
        }
        let ((), flushed) = self.write(|_| Ok(((), Vec::new())), None)?;
        Ok(flushed)
    }

    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        CacheStats {
            entries: c.entries.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            max_size: self.inner.config.max_size,
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            inserts: c.inserts.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
        }
    }

    fn publish(&self, policy: &dyn EvictionPolicy) {
        let c = &self.inner.counters;
        c.entries.store(policy.len() as u64, Ordering::Relaxed);
        c.bytes.store(policy.total(), Ordering::Relaxed);
    }

    /// One write transaction: persists pending accesses and doomed entries, runs `op`
    /// (which returns its result and the digests it removed), inserts `insert` into the
    /// policy, evicts down to the low-water mark if over `max_size`, commits, and only then
    /// updates the policy. Returns `op`'s result and the number of accesses persisted.
    fn write<T>(
        &self,
        op: impl FnOnce(&redb::WriteTransaction) -> Result<(T, Vec<Digest>), CacheError>,
        insert: Option<(Digest, u64, u64)>,
    ) -> Result<(T, usize), CacheError> {
        let mut policy = lock(&self.inner.policy);
        let pending = std::mem::take(&mut *lock(&self.inner.pending));
        // Hits really happened, commit or not: order the policy by them first.
        for (d, (seq, _)) in &pending.accesses {
            policy.touch(d, *seq);
        }
        let tx = self.inner.db.begin_write()?;
        let mut gone: HashSet<Digest> = HashSet::new();
        let flushed;
        {
            let mut entries = tx.open_table(ENTRIES)?;
            let mut doomed = Vec::new();
            for (d, created) in &pending.doomed {
                let current = entries.get(d)?.and_then(|v| entry::decode(v.value()));
                if current.is_some_and(|h| h.created_ms == *created) {
                    doomed.push(*d);
                }
            }
            let mut updates = Vec::new();
            for (d, (seq, ms)) in &pending.accesses {
                if let Some(mut h) = entries.get(d)?.and_then(|v| entry::decode(v.value()))
                    && h.access_seq < *seq
                {
                    h.access_seq = *seq;
                    h.last_access_ms = *ms;
                    updates.push((*d, entry::encode(&h)?));
                }
            }
            flushed = updates.len();
            for (d, raw) in updates {
                entries.insert(&d, raw.as_slice())?;
            }
            drop(entries);
            gone.extend(remove_entries(&tx, doomed)?);
        }
        let (value, removed) = op(&tx)?;
        gone.extend(removed);
        // What the policy's total will be after this commit, before eviction.
        let mut projected = policy.total();
        for d in &gone {
            projected -= policy.charge(d).unwrap_or(0);
        }
        if let Some((d, charge, _)) = &insert {
            if !gone.contains(d) {
                projected -= policy.charge(d).unwrap_or(0);
            }
            projected += charge;
        }
        let mut evicted = Vec::new();
        let max = self.inner.config.max_size;
        if projected > max {
            let need = projected - self.inner.config.low_water();
            let protect = insert.map(|(d, _, _)| d);
            let victims = policy.victims(need, &|d| gone.contains(d) || Some(*d) == protect);
            evicted = remove_entries(&tx, victims.iter().copied())?;
            // A victim without a stored header still leaves the policy.
            gone.extend(victims);
        }
        tx.commit()?;
        if !gone.is_empty() {
            self.inner.hot.remove_many(&gone);
        }
        for d in &gone {
            policy.remove(d);
        }
        if let Some((d, charge, seq)) = insert {
            policy.insert(d, charge, seq);
        }
        self.publish(policy.as_ref());
        self.inner
            .counters
            .evictions
            .fetch_add(evicted.len() as u64, Ordering::Relaxed);
        Ok((value, flushed))
    }
}

#[cfg(test)]
mod tests;
