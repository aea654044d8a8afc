//! Which entries to drop when the cache is over its bound: a small trait (as pingora-cache's
//! `eviction/` keeps it) and its least-recently-used implementation.
//!
//! What must stay true: `total()` is the sum of the charges of the tracked keys, each key is
//! tracked once, and `victims` never names a key its `skip` excludes. The policy only chooses; the
//! cache removes the victims from redb and calls `remove` once that commit succeeded.
//! Recency is a sequence number the cache hands in (a counter, persisted with each entry), so
//! the order survives a restart and does not depend on clock resolution.

use std::collections::{BTreeSet, HashMap};

use super::key::Digest;

/// An eviction policy over fixed-size keys with a byte charge each. Not thread-safe by itself:
/// the cache calls it under its writer lock.
pub trait EvictionPolicy: Send {
    /// Tracks `key` (or replaces its charge) with recency `seq` (larger is more recent).
    fn insert(&mut self, key: Digest, charge: u64, seq: u64);
    /// Raises `key`'s recency to `seq` if that is newer; unknown keys are ignored.
    fn touch(&mut self, key: &Digest, seq: u64);
    /// Stops tracking `key`; returns its charge.
    fn remove(&mut self, key: &Digest) -> Option<u64>;
    /// The charge of a tracked key.
    fn charge(&self, key: &Digest) -> Option<u64>;
    /// The keys to drop, least valuable first, so that at least `bytes` are freed (or every
    /// key that `skip` does not exclude, if that is not enough). Does not change the policy.
    fn victims(&self, bytes: u64, skip: &dyn Fn(&Digest) -> bool) -> Vec<Digest>;
    fn total(&self) -> u64;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn clear(&mut self);
}

/// Least recently used: key → (recency, charge), and the set of (recency, key) in order.
#[derive(Debug, Default)]
pub struct Lru {
    by_key: HashMap<Digest, (u64, u64)>,
    by_seq: BTreeSet<(u64, Digest)>,
    total: u64,
}

impl Lru {
    pub fn new() -> Lru {
        Lru::default()
    }

    /// Keys from least to most recently used (tests and diagnostics).
    pub fn order(&self) -> Vec<Digest> {
        self.by_seq.iter().map(|(_, k)| *k).collect()
    }
}

impl EvictionPolicy for Lru {
    fn insert(&mut self, key: Digest, charge: u64, seq: u64) {
        self.remove(&key);
        self.by_key.insert(key, (seq, charge));
        self.by_seq.insert((seq, key));
        self.total += charge;
    }

    fn touch(&mut self, key: &Digest, seq: u64) {
        if let Some(&(old, charge)) = self.by_key.get(key)
            && seq > old
        {
            self.insert(*key, charge, seq);
        }
    }

    fn remove(&mut self, key: &Digest) -> Option<u64> {
        let (seq, charge) = self.by_key.remove(key)?;
        self.by_seq.remove(&(seq, *key));
        self.total -= charge;
        Some(charge)
    }

    fn charge(&self, key: &Digest) -> Option<u64> {
        self.by_key.get(key).map(|&(_, charge)| charge)
    }

    fn victims(&self, bytes: u64, skip: &dyn Fn(&Digest) -> bool) -> Vec<Digest> {
        let mut freed = 0u64;
        let mut out = Vec::new();
        for (_, key) in &self.by_seq {
            if freed >= bytes {
                break;
            }
            if skip(key) {
                continue;
            }
            if let Some(&(_, charge)) = self.by_key.get(key) {
                freed += charge;
                out.push(*key);
            }
        }
        out
    }

    fn total(&self) -> u64 {
        self.total
    }

    fn len(&self) -> usize {
        self.by_key.len()
    }

    fn clear(&mut self) {
        self.by_key.clear();
        self.by_seq.clear();
        self.total = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: u8) -> Digest {
        [n; 32]
    }

    #[test]
    fn victims_are_the_least_recently_used() {
        let mut lru = Lru::new();
        for n in 1..=4 {
            lru.insert(k(n), 10, n as u64);
        }
        lru.touch(&k(1), 5);
        assert_eq!(lru.order(), vec![k(2), k(3), k(4), k(1)]);
        assert_eq!(lru.victims(15, &|_| false), vec![k(2), k(3)]);
        assert_eq!(lru.victims(15, &|d| *d == k(2)), vec![k(3), k(4)]);
        assert_eq!(lru.victims(0, &|_| false), Vec::<Digest>::new());
        assert_eq!(lru.victims(1000, &|d| *d == k(1)), vec![k(2), k(3), k(4)]);
        assert_eq!(lru.total(), 40);
        assert_eq!(lru.charge(&k(3)), Some(10));
        assert_eq!(lru.charge(&k(9)), None);
    }

    #[test]
    fn an_older_touch_does_not_lower_recency() {
        let mut lru = Lru::new();
        lru.insert(k(1), 1, 10);
        lru.insert(k(2), 1, 11);
        lru.touch(&k(2), 3);
        assert_eq!(lru.order(), vec![k(1), k(2)]);
        lru.touch(&k(1), 12);
        assert_eq!(lru.order(), vec![k(2), k(1)]);
    }

    #[test]
    fn reinsert_and_remove_keep_the_total() {
        let mut lru = Lru::new();
        lru.insert(k(1), 10, 1);
        lru.insert(k(2), 5, 2);
        lru.insert(k(1), 7, 3);
        assert_eq!(lru.total(), 12);
        assert_eq!(lru.len(), 2);
        assert_eq!(lru.order(), vec![k(2), k(1)]);
        assert_eq!(lru.remove(&k(2)), Some(5));
        assert_eq!(lru.remove(&k(2)), None);
        lru.touch(&k(9), 100);
        assert_eq!(lru.total(), 7);
        assert_eq!(lru.len(), 1);
        lru.clear();
        assert!(lru.is_empty());
        assert_eq!(lru.total(), 0);
    }

    #[test]
    fn equal_recencies_are_both_kept() {
        let mut lru = Lru::new();
        lru.insert(k(1), 1, 7);
        lru.insert(k(2), 1, 7);
        assert_eq!(lru.len(), 2);
        assert_eq!(lru.order().len(), 2);
    }
}
