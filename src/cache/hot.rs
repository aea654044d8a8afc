//! The hot tier: a byte-bounded in-memory map of recently served variants in front of redb,
//! so a hit on a popular variant costs a hash lookup and a reference count instead of a read
//! transaction, a copy of the body and its CRC. Entries leave in insertion order (FIFO) when
//! the budget is exceeded; the redb file stays the source of truth for eviction, persistence
//! and statistics.
//!
//! Invalidation bumps a generation number: a reader that looked in redb before an
//! invalidation finished may not put what it read into the hot tier afterwards (it could be
//! the entry just dropped).

use std::collections::{HashMap, VecDeque};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::CachedEntry;
use super::key::Digest;

struct Slot {
    entry: CachedEntry,
    source_id: String,
}

#[derive(Default)]
struct Map {
    slots: HashMap<Digest, Slot>,
    order: VecDeque<Digest>,
    bytes: u64,
    generation: u64,
}

pub struct HotTier {
    budget: u64,
    /// Hits only read: a read lock lets both workers look up at once.
    map: RwLock<Map>,
}

/// What a slot is charged: the body plus a rough allowance for the strings and the map.
fn charge(entry: &CachedEntry, source_id: &str) -> u64 {
    entry.body.len() as u64
        + (entry.content_type.len() + entry.etag.len() + source_id.len()) as u64
        + 128
}

impl HotTier {
    /// `budget` bytes; 0 turns the tier off.
    pub fn new(budget: u64) -> Self {
        Self {
            budget,
            map: RwLock::new(Map::default()),
        }
    }

    fn lock(&self) -> RwLockWriteGuard<'_, Map> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, Map> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, d: &Digest) -> Option<CachedEntry> {
        if self.budget == 0 {
            return None;
        }
        self.read().slots.get(d).map(|s| s.entry.clone())
    }

    /// The generation to pass to [`HotTier::insert`] for something read from redb now.
    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    /// Keeps `entry`, read from redb, unless an invalidation or a replacement ran since
    /// `generation` was read or it alone would take more than an eighth of the budget.
    pub fn insert(&self, d: Digest, source_id: &str, entry: CachedEntry, generation: u64) {
        self.store(d, source_id, entry, generation, false);
    }

    /// Puts a freshly written `entry` in place of whatever was kept for `d`. When an
    /// invalidation ran since `generation` was read, only the old one is dropped. Either way
    /// readers that looked in redb before cannot put an older entry back.
    pub fn replace(&self, d: Digest, source_id: &str, entry: CachedEntry, generation: u64) {
        self.store(d, source_id, entry, generation, true);
    }

    fn store(
        &self,
        d: Digest,
        source_id: &str,
        entry: CachedEntry,
        generation: u64,
        replace: bool,
    ) {
        if self.budget == 0 {
            return;
        }
        let cost = charge(&entry, source_id);
        let mut m = self.lock();
        let current = m.generation == generation;
        if replace {
            m.generation += 1;
        } else if !current {
            return;
        }
        if let Some(old) = m.slots.remove(&d) {
            m.bytes -= charge(&old.entry, &old.source_id);
            m.order.retain(|x| x != &d);
        }
        if !current || cost > self.budget / 8 {
            return;
        }
        m.bytes += cost;
        m.order.push_back(d);
        m.slots.insert(
            d,
            Slot {
                entry,
                source_id: source_id.to_owned(),
            },
        );
        while m.bytes > self.budget {
            let Some(old) = m.order.pop_front() else {
                break;
            };
            if let Some(s) = m.slots.remove(&old) {
                m.bytes -= charge(&s.entry, &s.source_id);
            }
        }
    }

    /// Drops one entry (expired or damaged in redb).
    pub fn remove(&self, d: &Digest) {
        let mut m = self.lock();
        m.generation += 1;
        if let Some(s) = m.slots.remove(d) {
            m.bytes -= charge(&s.entry, &s.source_id);
            m.order.retain(|x| x != d);
        }
    }

    /// Drops these entries (evicted, expired or damaged in redb).
    pub fn remove_many<'a>(&self, digests: impl IntoIterator<Item = &'a Digest>) {
        let mut m = self.lock();
        m.generation += 1;
        let mut any = false;
        for d in digests {
            if let Some(s) = m.slots.remove(d) {
                m.bytes -= charge(&s.entry, &s.source_id);
                any = true;
            }
        }
        if any {
            let Map { slots, order, .. } = &mut *m;
            order.retain(|d| slots.contains_key(d));
        }
    }

    /// Drops every entry whose source id `matches`.
    pub fn remove_sources(&self, matches: impl Fn(&str) -> bool) {
        let mut m = self.lock();
        m.generation += 1;
        let doomed: Vec<Digest> = m
            .slots
            .iter()
            .filter(|(_, s)| matches(&s.source_id))
            .map(|(d, _)| *d)
            .collect();
        if doomed.is_empty() {
            return;
        }
        for d in &doomed {
            if let Some(s) = m.slots.remove(d) {
                m.bytes -= charge(&s.entry, &s.source_id);
            }
        }
        let Map { slots, order, .. } = &mut *m;
        order.retain(|d| slots.contains_key(d));
    }

    pub fn clear(&self) {
        let mut m = self.lock();
        let generation = m.generation + 1;
        *m = Map {
            generation,
            ..Map::default()
        };
    }

    /// (entries, bytes) held.
    pub fn usage(&self) -> (usize, u64) {
        let m = self.read();
        (m.slots.len(), m.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry(n: usize) -> CachedEntry {
        CachedEntry {
            body: Bytes::from(vec![7u8; n]),
            content_type: "image/webp".into(),
            etag: "\"e\"".into(),
            last_modified_ms: 1,
            cache_control: None,
            size: n as u64,
            created_ms: 1,
            last_access_ms: 1,
        }
    }

    fn d(i: u8) -> Digest {
        [i; 32]
    }

    fn hot_get(hot: &HotTier, d: &Digest) -> Option<CachedEntry> {
        hot.get(d)
    }

    #[test]
    fn bounded_fifo_and_invalidation_fence() {
        let hot = HotTier::new(10_000);
        for i in 0..20u8 {
            let g = hot.generation();
            hot.insert(d(i), &format!("s3://b/{}", i % 3), entry(1000), g);
        }
        let (n, bytes) = hot.usage();
        assert!(bytes <= 10_000 && n >= 5, "{n} entries, {bytes} bytes");
        assert!(hot_get(&hot, &d(19)).is_some(), "newest kept");
        assert!(hot_get(&hot, &d(0)).is_none(), "oldest gone");
        // Too large for the tier: not kept.
        let g = hot.generation();
        hot.insert(d(100), "s3://b/big", entry(5000), g);
        assert!(hot_get(&hot, &d(100)).is_none());
        // An invalidation between reading the generation and inserting wins.
        let g = hot.generation();
        hot.remove_sources(|s| s == "s3://b/1");
        hot.insert(d(50), "s3://b/1", entry(10), g);
        assert!(hot_get(&hot, &d(50)).is_none());
        assert!(
            (10..20u8)
                .filter(|i| i % 3 == 1)
                .all(|i| hot_get(&hot, &d(i)).is_none()),
            "every variant of the source is gone"
        );
        // A replacement wins over a reader that looked before it, even a stale one.
        let g = hot.generation();
        hot.replace(d(18), "s3://b/0", entry(20), hot.generation());
        hot.insert(d(18), "s3://b/0", entry(30), g);
        assert_eq!(hot_get(&hot, &d(18)).map(|e| e.body.len()), Some(20));
        // A replacement after an invalidation only drops the old entry.
        let g = hot.generation();
        hot.remove_sources(|_| false);
        hot.replace(d(18), "s3://b/0", entry(40), g);
        assert!(hot_get(&hot, &d(18)).is_none());
        hot.replace(d(18), "s3://b/0", entry(40), hot.generation());
        let before = hot.usage().0;
        hot.remove(&d(18));
        assert_eq!(hot.usage().0, before - 1);
        hot.clear();
        assert_eq!(hot.usage(), (0, 0));
        let off = HotTier::new(0);
        off.insert(d(1), "s", entry(1), off.generation());
        assert!(off.get(&d(1)).is_none());
    }
}
