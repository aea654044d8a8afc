//! Where the edge's cached responses live: memory in front of disk, each bounded in bytes
//! (`[edge.cache] memory_size`, `disk_size`). An entry is an opaque head (the policy and
//! headers, serialised by the caller) and a body. Memory holds the most recently used
//! entries; disk holds everything stored, survives a restart, and refills memory on a
//! memory miss. Which entry leaves the memory tier is the [`Eviction`] policy's choice (LRU
//! here), behind its own small trait so a better admission policy can replace it; the disk
//! tier is a log of segments ([`super::segments`]), the oldest dropped first, with entries
//! still read kept.
//!
//! What must stay true:
//! - neither tier ever holds more than its bound (an entry larger than a tier's bound is
//!   not kept in that tier);
//! - a damaged record reads as a miss, never served and never fatal; a damaged segment is
//!   renamed to `<file>.corrupt-<unix time>`;
//! - keys are lowercase hex (as `key::entry_key` makes), checked before use.
//!
//! Blocking file I/O: call from `spawn_blocking`.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

use super::segments::{Heads, Segments};

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

/// A cached response as stored. Memory counts an entry's `head` and `body`; the caller may
/// keep the head decoded in `memo` instead (then `head` is empty in memory, and written in
/// full to disk).
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

/// Memory in front of disk.
pub struct Store {
    memory: Mutex<(Index<Lru>, HashMap<String, Entry>)>,
    disk: Option<Segments>,
    /// What the disk tier held at start, until [`Store::heads`] takes it.
    found: Mutex<Heads>,
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
    /// directory (created; what it holds is read back).
    pub fn open(memory_size: u64, disk: Option<(&Path, u64)>) -> std::io::Result<Self> {
        let (disk, found) = match disk {
            None => (None, Vec::new()),
            Some((dir, size)) => {
                let (segments, heads) = Segments::open(dir, size)?;
                (Some(segments), heads)
            }
        };
        Ok(Self {
            memory: Mutex::new((Index::new(memory_size, Lru::default()), HashMap::new())),
            disk,
            found: Mutex::new(found),
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
        self.disk.as_ref().is_some_and(|d| d.contains(key))
    }

    /// The entry under `key`: from memory, else from disk (then kept in memory too).
    pub fn get(&self, key: &str) -> Option<Entry> {
        if let Some(e) = self.get_memory(key) {
            return Some(e);
        }
        let (head, body) = self.disk.as_ref()?.get(key)?;
        let entry = Entry::new(head, body);
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
        let Some(disk) = &self.disk else {
            return Ok(Vec::new());
        };
        let dropped = disk.append(key, &entry.head, &entry.body)?;
        // Memory holds a subset of disk: what left disk leaves memory too.
        if let Ok(mut m) = self.memory.lock() {
            for d in &dropped {
                m.0.forget(d);
                m.1.remove(d);
            }
        }
        Ok(dropped.into_iter().filter(|d| d != key).collect())
    }

    /// Every entry's head on disk at start, with its key, to rebuild the caller's index
    /// (once: a second call gets nothing).
    pub fn heads(&self) -> Vec<(String, Bytes)> {
        self.found
            .lock()
            .map(|mut f| std::mem::take(&mut *f))
            .unwrap_or_default()
    }

    /// Drops `key` from both tiers.
    pub fn remove(&self, key: &str) {
        if let Ok(mut m) = self.memory.lock() {
            m.0.forget(key);
            m.1.remove(key);
        }
        if let Some(disk) = &self.disk {
            disk.remove(key);
        }
    }

    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        if let Ok(m) = self.memory.lock() {
            s.memory_entries = m.1.len();
            s.memory_bytes = m.0.used;
        }
        if let Some(disk) = &self.disk {
            (s.disk_entries, s.disk_bytes) = disk.stats();
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
        drop(s);
        let s = Store::open(1 << 20, Some((dir.path(), 1 << 20))).expect("reopen");
        assert!(s.get("c2").is_none(), "a removal survives a restart");
        assert!(s.get("c1").is_some());
    }

    #[test]
    fn what_leaves_disk_leaves_memory_and_a_damaged_record_is_a_miss() {
        let dir = tempfile::tempdir().expect("dir");
        let s = Store::open(1 << 20, Some((dir.path(), 3000))).expect("store");
        for i in 0..10 {
            s.put(&format!("c{i}"), entry("h", 1000)).expect("put");
        }
        // Disk holds about three; memory (larger) a subset of disk.
        assert!(s.stats().disk_bytes <= 3000);
        assert!(s.get_memory("c0").is_none() && s.get("c0").is_none());
        assert!(s.get("c9").is_some());
        drop(s);
        // Damage every segment past its header: each entry is a miss, nothing fatal.
        for e in std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
        {
            let mut bytes = std::fs::read(e.path()).expect("read");
            if bytes.len() > 40 {
                bytes[40] ^= 0xff;
                std::fs::write(e.path(), &bytes).expect("write");
            }
        }
        let s = Store::open(1 << 20, Some((dir.path(), 3000))).expect("reopen");
        assert!(s.get("c9").is_none());
    }
}
