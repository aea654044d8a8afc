//! Where the edge's cached responses live: memory in front of disk, each bounded in bytes
//! (`[edge.cache] memory_size`, `disk_size`). An entry is an opaque head (the policy and
//! headers, serialised by the caller) and a body. Memory holds the most recently used
//! entries; disk holds everything stored, survives a restart, and refills memory on a
//! memory miss. Which entry leaves a full tier is the [`Eviction`] policy's choice (LRU
//! here), behind its own small trait so a better admission policy can replace it.
//!
//! What must stay true:
//! - neither tier ever holds more than its bound (an entry larger than a tier's bound is
//!   not kept in that tier);
//! - a file that is corrupt (truncated, wrong magic, failed checksum) reads as a miss and is
//!   renamed to `<file>.corrupt-<unix time>`, never served and never fatal;
//! - a file is written under a temporary name and renamed, so a crash leaves the old entry
//!   or the new one, never half of one.
//!
//! - keys are file names: only lowercase hex keys (as `key::entry_key` makes) are accepted,
//!   so no key can name a path outside the directory.
//!
//! Blocking file I/O: call from `spawn_blocking`.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

/// Chooses which entry leaves a full tier.
pub trait Eviction: Send {
    /// `key` was stored or read.
    fn touch(&mut self, key: &str);
    /// `key` left the tier.
    fn remove(&mut self, key: &str);
    /// The entry to drop next, if any.
    fn victim(&self) -> Option<String>;
}

/// Least recently used first.
#[derive(Debug, Default)]
pub struct Lru {
    next: u64,
    by_tick: BTreeMap<u64, String>,
    ticks: HashMap<String, u64>,
}

impl Eviction for Lru {
    fn touch(&mut self, key: &str) {
        self.remove(key);
        self.next += 1;
        self.by_tick.insert(self.next, key.to_owned());
        self.ticks.insert(key.to_owned(), self.next);
    }

    fn remove(&mut self, key: &str) {
        if let Some(t) = self.ticks.remove(key) {
            self.by_tick.remove(&t);
        }
    }

    fn victim(&self) -> Option<String> {
        self.by_tick.values().next().cloned()
    }
}

/// What the caller made of an entry's head, kept beside it in memory so a memory hit
/// decodes the head once, not once per request.
pub type Memo = Arc<OnceLock<Arc<dyn Any + Send + Sync>>>;

/// A cached response as stored.
#[derive(Clone)]
pub struct Entry {
    pub head: Bytes,
    pub body: Bytes,
    pub memo: Memo,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.head == other.head && self.body == other.body
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("head", &self.head.len())
            .field("body", &self.body.len())
            .finish()
    }
}

impl Entry {
    pub fn new(head: Bytes, body: Bytes) -> Self {
        Self {
            head,
            body,
            memo: Memo::default(),
        }
    }

    fn size(&self) -> u64 {
        (self.head.len() + self.body.len()) as u64
    }
}

/// One tier's index: sizes, the total, and the eviction order.
struct Index<E> {
    max: u64,
    used: u64,
    sizes: HashMap<String, u64>,
    eviction: E,
}

impl<E: Eviction> Index<E> {
    fn new(max: u64, eviction: E) -> Self {
        Self {
            max,
            used: 0,
            sizes: HashMap::new(),
            eviction,
        }
    }

    /// Records `key` at `size`; returns the keys to drop to stay within the bound (never
    /// `key` itself unless it alone is over the bound, in which case it is not recorded).
    fn insert(&mut self, key: &str, size: u64) -> Vec<String> {
        self.forget(key);
        if size > self.max {
            return vec![key.to_owned()];
        }
        let mut dropped = Vec::new();
        while self.used + size > self.max {
            let Some(victim) = self.eviction.victim() else {
                break;
            };
            self.forget(&victim);
            dropped.push(victim);
        }
        self.sizes.insert(key.to_owned(), size);
        self.used += size;
        self.eviction.touch(key);
        dropped
    }

    fn forget(&mut self, key: &str) -> bool {
        self.eviction.remove(key);
        match self.sizes.remove(key) {
            Some(s) => {
                self.used -= s;
                true
            }
            None => false,
        }
    }
}

const MAGIC: &[u8; 6] = b"PXEC1\n";

/// Memory in front of disk.
pub struct Store {
    memory: Mutex<(Index<Lru>, HashMap<String, Entry>)>,
    disk: Option<(PathBuf, Mutex<Index<Lru>>)>,
}

/// What the store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub memory_entries: usize,
    pub memory_bytes: u64,
    pub disk_entries: usize,
    pub disk_bytes: u64,
}

impl Store {
    /// A store of `memory_size` bytes in memory and, with `disk`, `disk_size` bytes in that
    /// directory (created; its entries are indexed, oldest first by modification time).
    pub fn open(memory_size: u64, disk: Option<(&Path, u64)>) -> std::io::Result<Self> {
        let disk = match disk {
            None => None,
            Some((dir, size)) => {
                std::fs::create_dir_all(dir)?;
                let mut found = Vec::new();
                for item in std::fs::read_dir(dir)? {
                    let item = item?;
                    let name = item.file_name().to_string_lossy().into_owned();
                    let Some(key) = name.strip_suffix(".entry").filter(|k| valid_key(k)) else {
                        continue;
                    };
                    let meta = item.metadata()?;
                    found.push((meta.modified().ok(), key.to_owned(), meta.len()));
                }
                found.sort();
                let mut index = Index::new(size, Lru::default());
                for (_, key, len) in found {
                    for dropped in index.insert(&key, len) {
                        let _ = std::fs::remove_file(dir.join(format!("{dropped}.entry")));
                    }
                }
                Some((dir.to_owned(), Mutex::new(index)))
            }
        };
        Ok(Self {
            memory: Mutex::new((Index::new(memory_size, Lru::default()), HashMap::new())),
            disk,
        })
    }

    /// The entry under `key` when memory holds it (no file I/O: safe on an async thread).
    pub fn get_memory(&self, key: &str) -> Option<Entry> {
        let mut m = self.memory.lock().ok()?;
        let e = m.1.get(key).cloned()?;
        m.0.eviction.touch(key);
        Some(e)
    }

    /// Whether the disk tier may hold `key` (a cheap check before a blocking read).
    pub fn on_disk(&self, key: &str) -> bool {
        self.disk
            .as_ref()
            .is_some_and(|(_, i)| i.lock().is_ok_and(|i| i.sizes.contains_key(key)))
    }

    /// The entry under `key`: from memory, else from disk (then kept in memory too).
    pub fn get(&self, key: &str) -> Option<Entry> {
        if let Some(e) = self.get_memory(key) {
            return Some(e);
        }
        let (dir, index) = self.disk.as_ref()?;
        if !valid_key(key) {
            return None;
        }
        let path = dir.join(format!("{key}.entry"));
        let entry = match std::fs::read(&path) {
            Ok(bytes) => match decode(&bytes) {
                Some(e) => e,
                None => {
                    tracing::warn!(path = %path.display(), "corrupt edge cache entry; moved aside");
                    move_aside(&path);
                    if let Ok(mut i) = index.lock() {
                        i.forget(key);
                    }
                    return None;
                }
            },
            Err(_) => {
                if let Ok(mut i) = index.lock() {
                    i.forget(key);
                }
                return None;
            }
        };
        if let Ok(mut i) = index.lock() {
            i.eviction.touch(key);
        }
        self.keep_in_memory(key, entry.clone());
        Some(entry)
    }

    /// Stores `entry` under `key` in both tiers (within their bounds). Returns the keys the
    /// store no longer holds at all because of it (evicted from the outer tier: disk when
    /// there is one, else memory), so the caller's index can forget them.
    pub fn put(&self, key: &str, entry: Entry) -> std::io::Result<Vec<String>> {
        let from_memory = self.put_memory(key, entry.clone())?;
        if self.disk.is_some() {
            self.put_disk(key, &entry)
        } else {
            Ok(from_memory)
        }
    }

    /// Stores `entry` in memory only (no I/O: safe on an async thread), to be followed by
    /// [`Store::put_disk`] when there is a disk tier. Returns the keys memory dropped for it.
    pub fn put_memory(&self, key: &str, entry: Entry) -> std::io::Result<Vec<String>> {
        if !valid_key(key) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "an edge cache key is lowercase hex",
            ));
        }
        Ok(self
            .keep_in_memory(key, entry)
            .into_iter()
            .filter(|d| d != key)
            .collect())
    }

    /// Whether there is a disk tier.
    pub fn has_disk(&self) -> bool {
        self.disk.is_some()
    }

    /// Writes `entry` to the disk tier (blocking); returns the keys disk dropped for it,
    /// which leave memory too.
    pub fn put_disk(&self, key: &str, entry: &Entry) -> std::io::Result<Vec<String>> {
        let Some((dir, index)) = &self.disk else {
            return Ok(Vec::new());
        };
        if !valid_key(key) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "an edge cache key is lowercase hex",
            ));
        }
        let path = dir.join(format!("{key}.entry"));
        let tmp = dir.join(format!(".{key}.tmp"));
        // No fsync: a file a crash cuts short fails its checksum and is moved aside when
        // read (a miss), and an fsync per stored response cost misses a third of their
        // rate in the benchmark.
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&encode(entry))?;
        std::fs::rename(&tmp, &path)?;
        let dropped = match index.lock() {
            Ok(mut i) => i.insert(key, std::fs::metadata(&path)?.len()),
            Err(_) => Vec::new(),
        };
        for d in &dropped {
            let _ = std::fs::remove_file(dir.join(format!("{d}.entry")));
        }
        // Memory holds a subset of disk: what left disk leaves memory too.
        if let Ok(mut m) = self.memory.lock() {
            for d in &dropped {
                m.0.forget(d);
                m.1.remove(d);
            }
        }
        Ok(dropped.into_iter().filter(|d| d != key).collect())
    }

    /// Every entry's head on disk, with its key (read at start to rebuild the caller's
    /// index; a file too short to hold its head is skipped, and found corrupt when read).
    pub fn heads(&self) -> Vec<(String, Bytes)> {
        let Some((dir, index)) = &self.disk else {
            return Vec::new();
        };
        let keys: Vec<String> = index
            .lock()
            .map(|i| i.sizes.keys().cloned().collect())
            .unwrap_or_default();
        keys.into_iter()
            .filter_map(|key| {
                let head = read_head(&dir.join(format!("{key}.entry")))?;
                Some((key, head))
            })
            .collect()
    }

    /// Drops `key` from both tiers.
    pub fn remove(&self, key: &str) {
        if let Ok(mut m) = self.memory.lock() {
            m.0.forget(key);
            m.1.remove(key);
        }
        if let Some((dir, index)) = &self.disk
            && valid_key(key)
        {
            if let Ok(mut i) = index.lock() {
                i.forget(key);
            }
            let _ = std::fs::remove_file(dir.join(format!("{key}.entry")));
        }
    }

    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        if let Ok(m) = self.memory.lock() {
            s.memory_entries = m.1.len();
            s.memory_bytes = m.0.used;
        }
        if let Some((_, index)) = &self.disk
            && let Ok(i) = index.lock()
        {
            s.disk_entries = i.sizes.len();
            s.disk_bytes = i.used;
        }
        s
    }

    fn keep_in_memory(&self, key: &str, entry: Entry) -> Vec<String> {
        let Ok(mut m) = self.memory.lock() else {
            return Vec::new();
        };
        let (index, map) = &mut *m;
        let dropped = index.insert(key, entry.size());
        for d in &dropped {
            map.remove(d);
        }
        if index.sizes.contains_key(key) {
            map.insert(key.to_owned(), entry);
        }
        dropped
    }
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `MAGIC`, head length (u32 BE), head, body length (u64 BE), body, CRC-32 of all before.
fn encode(e: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 16 + e.head.len() + e.body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(
        &u32::try_from(e.head.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&e.head);
    out.extend_from_slice(&(e.body.len() as u64).to_be_bytes());
    out.extend_from_slice(&e.body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<Entry> {
    let (content, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32fast::hash(content).to_be_bytes() != crc {
        return None;
    }
    let rest = content.strip_prefix(MAGIC.as_slice())?;
    let (len, rest) = rest.split_at_checked(4)?;
    let head_len = usize::try_from(u32::from_be_bytes(len.try_into().ok()?)).ok()?;
    let (head, rest) = rest.split_at_checked(head_len)?;
    let (len, body) = rest.split_at_checked(8)?;
    let body_len = usize::try_from(u64::from_be_bytes(len.try_into().ok()?)).ok()?;
    (body.len() == body_len)
        .then(|| Entry::new(Bytes::copy_from_slice(head), Bytes::copy_from_slice(body)))
}

/// The head of the entry file at `path`, read without the body (not checksummed: the whole
/// file is checked when the entry is read).
fn read_head(path: &Path) -> Option<Bytes> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut prefix = [0u8; 10];
    f.read_exact(&mut prefix).ok()?;
    if &prefix[..6] != MAGIC.as_slice() {
        return None;
    }
    let len = u32::from_be_bytes(prefix[6..10].try_into().ok()?) as usize;
    if len > 1 << 20 {
        return None;
    }
    let mut head = vec![0u8; len];
    f.read_exact(&mut head).ok()?;
    Some(Bytes::from(head))
}

/// Renames `path` to `<path>.corrupt-<unix time>`, as the derivative cache does.
fn move_aside(path: &Path) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let _ = std::fs::rename(path, format!("{}.corrupt-{secs}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(head: &str, body_len: usize) -> Entry {
        Entry::new(
            Bytes::copy_from_slice(head.as_bytes()),
            Bytes::from(vec![7u8; body_len]),
        )
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut l = Lru::default();
        for k in ["a", "b", "c"] {
            l.touch(k);
        }
        l.touch("a");
        assert_eq!(l.victim().as_deref(), Some("b"));
        l.remove("b");
        assert_eq!(l.victim().as_deref(), Some("c"));
    }

    #[test]
    fn memory_stays_within_its_bound_and_keeps_the_recent() {
        let s = Store::open(250, None).expect("store");
        for k in ["a", "b", "c"] {
            s.put(k, entry(k, 99)).expect("put");
        }
        // Only hex keys name files.
        assert!(s.put("../x", entry("x", 1)).is_err());
        // 3 x 100 bytes in 250: the oldest left.
        assert!(s.get("a").is_none());
        assert!(s.get("b").is_some() && s.get("c").is_some());
        assert!(s.stats().memory_bytes <= 250);
        // Larger than the whole tier: not kept, and nothing else is dropped for it.
        s.put("ee", entry("h", 1000)).expect("put");
        assert!(s.get("ee").is_none());
        assert!(s.get("b").is_some());
    }

    #[test]
    fn disk_survives_a_restart_and_refills_memory() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let s = Store::open(1 << 20, Some((dir.path(), 1 << 20))).expect("store");
            s.put("c1", entry("head-1", 5000)).expect("put");
            s.put("c2", entry("head-2", 10)).expect("put");
        }
        let s = Store::open(1 << 20, Some((dir.path(), 1 << 20))).expect("reopen");
        assert_eq!(s.stats().disk_entries, 2);
        let mut heads = s.heads();
        heads.sort();
        assert_eq!(
            heads,
            vec![
                ("c1".to_owned(), Bytes::from_static(b"head-1")),
                ("c2".to_owned(), Bytes::from_static(b"head-2"))
            ]
        );
        assert_eq!(s.stats().memory_entries, 0);
        assert_eq!(s.get("c1"), Some(entry("head-1", 5000)));
        assert_eq!(s.stats().memory_entries, 1);
        s.remove("c2");
        assert!(s.get("c2").is_none());
        assert!(!dir.path().join("c2.entry").exists());
    }

    #[test]
    fn disk_stays_within_its_bound() {
        let dir = tempfile::tempdir().expect("dir");
        let s = Store::open(0, Some((dir.path(), 3000))).expect("store");
        for i in 0..10 {
            s.put(&format!("c{i}"), entry("h", 1000)).expect("put");
        }
        let on_disk: u64 = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        assert!(on_disk <= 3000, "{on_disk}");
        assert!(s.get("c9").is_some() && s.get("c0").is_none());
        // A smaller bound at the next start drops the oldest files.
        drop(s);
        let s = Store::open(0, Some((dir.path(), 1100))).expect("reopen");
        assert_eq!(s.stats().disk_entries, 1);
        assert!(s.get("c9").is_some());
    }

    #[test]
    fn a_corrupt_file_is_a_miss_and_is_moved_aside() {
        let dir = tempfile::tempdir().expect("dir");
        let s = Store::open(0, Some((dir.path(), 1 << 20))).expect("store");
        s.put("cc", entry("head", 100)).expect("put");
        let path = dir.path().join("cc.entry");
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[20] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        assert!(s.get("cc").is_none());
        assert!(!path.exists());
        let aside = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("cc.entry.corrupt-")
            });
        assert!(aside);
        // Truncated and foreign files too.
        for bad in [&b""[..], b"PXEC1\n", b"not an entry at all"] {
            assert!(decode(bad).is_none());
        }
        let good = encode(&entry("h", 10));
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_none(), "cut at {cut}");
        }
        assert_eq!(decode(&good), Some(entry("h", 10)));
    }
}
