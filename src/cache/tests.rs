//! Tests of the redb cache as a file format (STYLE.md habit 12): a random-operations test
//! against a plain model, reopen, corrupted and foreign files, eviction order.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn meta(etag: &str) -> EntryMeta {
    EntryMeta {
        content_type: "image/webp".into(),
        etag: etag.into(),
        last_modified_ms: 1_700_000_000_000,
        cache_control: None,
    }
}

fn key(source: &str, opts: &str) -> CacheKey {
    CacheKey::new(source, "\"v1\"", opts, "webp")
}

/// No hot tier: for tests that change the file under the cache's feet.
fn file_only() -> CacheConfig {
    CacheConfig {
        memory_size: 0,
        ..CacheConfig::default()
    }
}

fn small(max_size: u64) -> CacheConfig {
    CacheConfig {
        max_size,
        max_entry_size: Some(max_size / 2),
        ..CacheConfig::default()
    }
}

/// Every digest with a stored header.
fn stored(cache: &DerivativeCache) -> HashSet<Digest> {
    let tx = cache.inner.db.begin_read().unwrap();
    let entries = tx.open_table(ENTRIES).unwrap();
    entries
        .iter()
        .unwrap()
        .map(|e| *e.unwrap().0.value())
        .collect()
}

/// Headers, bodies, source index and policy describe the same set of entries.
fn check_consistency(cache: &DerivativeCache) {
    let tx = cache.inner.db.begin_read().unwrap();
    let entries = tx.open_table(ENTRIES).unwrap();
    let bodies = tx.open_table(BODIES).unwrap();
    let sources = tx.open_table(SOURCES).unwrap();
    let mut want_index = HashSet::new();
    let mut total = 0;
    for e in entries.iter().unwrap() {
        let (k, v) = e.unwrap();
        let h = entry::decode(v.value()).unwrap();
        let body = bodies.get(k.value()).unwrap().unwrap();
        assert_eq!(body.value().len() as u64, h.size);
        want_index.insert(index_key(&h.source_id, k.value()));
        total += charge_of(h.size, &h.source_id);
    }
    assert_eq!(bodies.len().unwrap(), entries.len().unwrap());
    let index: HashSet<Vec<u8>> = sources
        .iter()
        .unwrap()
        .map(|e| e.unwrap().0.value().to_vec())
        .collect();
    assert_eq!(index, want_index);
    let policy = lock(&cache.inner.policy);
    assert_eq!(policy.len() as u64, entries.len().unwrap());
    assert_eq!(policy.total(), total);
    assert_eq!(cache.stats().bytes, total);
    assert_eq!(cache.stats().entries, entries.len().unwrap());
}

fn corrupt_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".corrupt-"))
        .collect()
}

#[test]
fn the_cache_is_send_sync_and_clone() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<DerivativeCache>();
}

#[test]
fn put_then_get_returns_bytes_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let cache = DerivativeCache::open(dir.path().join("c.redb"), CacheConfig::default()).unwrap();
    let k = key("s3://b/a.jpg", "rs:fit:300:200");
    assert_eq!(cache.get(&k).unwrap(), None);
    cache.put(&k, &meta("\"x\""), b"webp bytes").unwrap();
    let hit = cache.get(&k).unwrap().unwrap();
    assert_eq!(&hit.body[..], b"webp bytes");
    assert_eq!(hit.content_type, "image/webp");
    assert_eq!(hit.etag, "\"x\"");
    assert_eq!(hit.last_modified_ms, 1_700_000_000_000);
    assert_eq!(hit.size, 10);
    assert!(hit.created_ms > 0 && hit.last_access_ms >= hit.created_ms);
    // Replacing keeps one entry.
    cache.put(&k, &meta("\"y\""), b"other").unwrap();
    assert_eq!(cache.get(&k).unwrap().unwrap().etag, "\"y\"");
    let s = cache.stats();
    assert_eq!((s.entries, s.hits, s.misses, s.inserts), (1, 2, 1, 2));
    assert_eq!(s.bytes, charge_of(5, k.source_id()));
    check_consistency(&cache);
}

#[test]
fn an_oversized_entry_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = DerivativeCache::open(dir.path().join("c.redb"), small(8192)).unwrap();
    cache.put(&key("s", "a"), &meta("e"), &[1; 100]).unwrap();
    let err = cache
        .put(&key("s", "b"), &meta("e"), &[1; 5000])
        .unwrap_err();
    assert!(matches!(err, CacheError::TooLarge { .. }), "{err}");
    assert_eq!(cache.stats().entries, 1);
    assert!(cache.get(&key("s", "a")).unwrap().is_some());
}

#[test]
fn config_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        CacheConfig {
            max_size: 10,
            ..CacheConfig::default()
        },
        CacheConfig {
            ttl: Some(Duration::ZERO),
            ..CacheConfig::default()
        },
        CacheConfig {
            max_size: 1 << 20,
            max_entry_size: Some(2 << 20),
            ..CacheConfig::default()
        },
    ] {
        assert!(matches!(
            DerivativeCache::open(dir.path().join("c.redb"), bad),
            Err(CacheError::Config(_))
        ));
    }
}

#[test]
fn expired_entries_are_misses_and_are_dropped_by_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let config = CacheConfig {
        ttl: Some(Duration::from_millis(30)),
        ..CacheConfig::default()
    };
    let cache = DerivativeCache::open(dir.path().join("c.redb"), config).unwrap();
    let k = key("s3://b/a", "o");
    cache.put(&k, &meta("e"), b"abc").unwrap();
    assert!(cache.get(&k).unwrap().is_some());
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(cache.get(&k).unwrap(), None);
    cache.flush_access().unwrap();
    assert_eq!(cache.stats().entries, 0);
    check_consistency(&cache);
}

#[test]
fn invalidation_and_purges_remove_exactly_their_variants() {
    let dir = tempfile::tempdir().unwrap();
    let cache = DerivativeCache::open(dir.path().join("c.redb"), CacheConfig::default()).unwrap();
    let sources = [
        "s3://photos/a.jpg",
        "s3://photos/a.jpg2",
        "s3://photos/b.jpg",
        "s3://other/a.jpg",
        // A NUL inside a source id must not confuse the index.
        "s3://photos/a.jpg\0x",
    ];
    for s in sources {
        for o in ["w:100", "w:200", "w:300"] {
            cache.put(&key(s, o), &meta("e"), s.as_bytes()).unwrap();
        }
    }
    assert_eq!(cache.invalidate_source("s3://photos/a.jpg").unwrap(), 3);
    assert_eq!(cache.get(&key("s3://photos/a.jpg", "w:100")).unwrap(), None);
    assert!(
        cache
            .get(&key("s3://photos/a.jpg2", "w:100"))
            .unwrap()
            .is_some()
    );
    assert!(
        cache
            .get(&key("s3://photos/a.jpg\0x", "w:100"))
            .unwrap()
            .is_some()
    );
    assert_eq!(cache.invalidate_source("s3://photos/a.jpg").unwrap(), 0);
    assert_eq!(cache.invalidate_source("nothing").unwrap(), 0);
    check_consistency(&cache);
    assert_eq!(cache.purge_prefix("s3://photos/").unwrap(), 9);
    assert_eq!(cache.stats().entries, 3);
    assert!(
        cache
            .get(&key("s3://other/a.jpg", "w:300"))
            .unwrap()
            .is_some()
    );
    check_consistency(&cache);
    assert_eq!(cache.purge_all().unwrap(), 3);
    assert_eq!(cache.stats().entries, 0);
    assert_eq!(cache.stats().invalidations, 15);
    check_consistency(&cache);
    // Still usable after a purge.
    cache.put(&key("s", "o"), &meta("e"), b"1").unwrap();
    assert!(cache.get(&key("s", "o")).unwrap().is_some());
    check_consistency(&cache);
}

/// Eviction must drop the least recently *read* entries, not the oldest written ones.
#[test]
fn eviction_keeps_the_most_recently_read_entries() {
    let dir = tempfile::tempdir().unwrap();
    // Each entry charges 1000 + 256 + 1 bytes: ten fit in 12_800.
    let cache = DerivativeCache::open(dir.path().join("c.redb"), small(12_800)).unwrap();
    let keys: Vec<CacheKey> = (0..10).map(|i| key("s", &format!("o{i}"))).collect();
    for k in &keys {
        cache.put(k, &meta("e"), &[7; 1000]).unwrap();
    }
    assert_eq!(cache.stats().evictions, 0);
    for k in &keys[..3] {
        assert!(cache.get(k).unwrap().is_some());
    }
    cache.put(&key("s", "new"), &meta("e"), &[7; 1000]).unwrap();
    let s = cache.stats();
    assert!(s.bytes <= 12_800 / 100 * 90, "{s:?}");
    assert!(s.evictions >= 2, "{s:?}");
    for k in &keys[..3] {
        assert!(
            cache.get(k).unwrap().is_some(),
            "recently read entry evicted"
        );
    }
    assert!(cache.get(&key("s", "new")).unwrap().is_some());
    assert_eq!(
        cache.get(&keys[3]).unwrap(),
        None,
        "the least recent one stays"
    );
    check_consistency(&cache);
}

/// Least recently used first, as the policy sees it.
fn lru_order(cache: &DerivativeCache) -> Vec<Digest> {
    lock(&cache.inner.policy).victims(u64::MAX, &|_| false)
}

fn digests<'a>(keys: impl IntoIterator<Item = &'a CacheKey>) -> Vec<Digest> {
    keys.into_iter().map(|k| *k.digest()).collect()
}

#[test]
fn entries_and_lru_order_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let keys: Vec<CacheKey> = (0..10).map(|i| key("s", &format!("o{i}"))).collect();
    let new = key("s", "new");
    {
        let cache = DerivativeCache::open(&path, small(12_800)).unwrap();
        for k in &keys {
            cache.put(k, &meta("e"), &[7; 1000]).unwrap();
        }
        for k in &keys[..3] {
            assert!(cache.get(k).unwrap().is_some());
        }
        assert_eq!(cache.flush_access().unwrap(), 3);
        assert_eq!(cache.flush_access().unwrap(), 0);
    }
    let cache = DerivativeCache::open(&path, small(12_800)).unwrap();
    assert_eq!(cache.stats().entries, 10);
    check_consistency(&cache);
    assert_eq!(
        lru_order(&cache),
        digests(keys[3..].iter().chain(&keys[..3])),
        "explicitly flushed reads keep their order"
    );
    // Reads persisted by the next write, without a flush; that put evicts the two least
    // recently used entries (5 and 6).
    for k in &keys[3..5] {
        assert!(cache.get(k).unwrap().is_some());
    }
    cache.put(&new, &meta("e"), &[7; 1000]).unwrap();
    drop(cache);
    let cache = DerivativeCache::open(&path, small(12_800)).unwrap();
    let want = digests(
        keys[7..]
            .iter()
            .chain(&keys[..3])
            .chain(&keys[3..5])
            .chain([&new]),
    );
    assert_eq!(lru_order(&cache), want);
    for k in &keys[..5] {
        assert_eq!(&cache.get(k).unwrap().unwrap().body[..], &[7; 1000][..]);
    }
    // Reads neither flushed nor followed by a write are lost at close: order is approximate.
    drop(cache);
    let cache = DerivativeCache::open(&path, small(12_800)).unwrap();
    assert_eq!(lru_order(&cache), want);
    check_consistency(&cache);
}

#[test]
fn a_garbage_file_is_moved_aside_and_the_cache_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    std::fs::write(&path, vec![0xAB; 100_000]).unwrap();
    let cache = DerivativeCache::open(&path, CacheConfig::default()).unwrap();
    assert_eq!(cache.stats().entries, 0);
    cache.put(&key("s", "o"), &meta("e"), b"x").unwrap();
    assert_eq!(corrupt_files(dir.path()).len(), 1);
}

fn filled(path: &Path) -> Vec<CacheKey> {
    let cache = DerivativeCache::open(path, CacheConfig::default()).unwrap();
    let keys: Vec<CacheKey> = (0..200).map(|i| key("s", &format!("o{i}"))).collect();
    for (i, k) in keys.iter().enumerate() {
        cache.put(k, &meta("e"), &vec![i as u8; 2000]).unwrap();
    }
    keys
}

#[test]
fn a_truncated_file_is_moved_aside_and_the_cache_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    filled(&path);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    let cache = DerivativeCache::open(&path, CacheConfig::default()).unwrap();
    assert_eq!(cache.stats().entries, 0);
    check_consistency(&cache);
    let aside = corrupt_files(dir.path());
    assert_eq!(aside.len(), 1);
    assert_eq!(std::fs::metadata(&aside[0]).unwrap().len(), len / 3);
}

/// Bytes overwritten in the middle of the file: with `verify_on_open` the file is moved
/// aside; without it, whatever is still readable is served correctly and damaged entries
/// read as misses, never as wrong bytes.
#[test]
fn bytes_overwritten_in_the_middle_never_serve_wrong_bytes() {
    for verify in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let keys = filled(&path);
        let mut raw = std::fs::read(&path).unwrap();
        let mid = raw.len() / 2;
        for b in &mut raw[mid..mid + 4096] {
            *b ^= 0x5A;
        }
        std::fs::write(&path, &raw).unwrap();
        let config = CacheConfig {
            verify_on_open: verify,
            ..CacheConfig::default()
        };
        let cache = DerivativeCache::open(&path, config).unwrap();
        if verify {
            assert_eq!(cache.stats().entries, 0);
            assert_eq!(corrupt_files(dir.path()).len(), 1);
            continue;
        }
        let mut served = 0;
        for (i, k) in keys.iter().enumerate() {
            if let Ok(Some(hit)) = cache.get(k) {
                assert_eq!(&hit.body[..], &vec![i as u8; 2000][..]);
                served += 1;
            }
        }
        assert!(served > 0 || !corrupt_files(dir.path()).is_empty());
    }
}

#[test]
fn an_incompatible_format_version_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    filled(&path);
    {
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert(FORMAT_KEY, [FORMAT_VERSION + 1].as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    let cache = DerivativeCache::open(&path, CacheConfig::default()).unwrap();
    assert_eq!(cache.stats().entries, 0);
    assert_eq!(corrupt_files(dir.path()).len(), 1);
    drop(cache);
    // And the fresh file reopens as itself, not moved aside again.
    let cache = DerivativeCache::open(&path, CacheConfig::default()).unwrap();
    assert_eq!(corrupt_files(dir.path()).len(), 1);
    drop(cache);
}

#[test]
fn another_redb_file_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    {
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        let objects: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
        tx.open_table(objects)
            .unwrap()
            .insert("k", b"v".as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    let cache = DerivativeCache::open(&path, CacheConfig::default()).unwrap();
    assert_eq!(cache.stats().entries, 0);
    assert_eq!(corrupt_files(dir.path()).len(), 1);
}

#[test]
fn a_file_locked_by_another_handle_is_an_error_not_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let _first = DerivativeCache::open(&path, CacheConfig::default()).unwrap();
    assert!(DerivativeCache::open(&path, CacheConfig::default()).is_err());
    assert!(corrupt_files(dir.path()).is_empty());
}

#[test]
fn an_unknown_header_version_reads_as_a_miss_and_is_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let cache = DerivativeCache::open(&path, file_only()).unwrap();
    let (a, b) = (key("s", "a"), key("s", "b"));
    cache.put(&a, &meta("e"), b"1").unwrap();
    cache.put(&b, &meta("e"), b"2").unwrap();
    {
        let tx = cache.inner.db.begin_write().unwrap();
        tx.open_table(ENTRIES)
            .unwrap()
            .insert(a.digest(), [9u8, b'{', b'}'].as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    assert_eq!(cache.get(&a).unwrap(), None);
    assert!(cache.get(&b).unwrap().is_some());
    drop(cache);
    let cache = DerivativeCache::open(&path, file_only()).unwrap();
    assert_eq!(cache.stats().entries, 1);
    assert!(corrupt_files(dir.path()).is_empty());
    check_consistency(&cache);
}

#[test]
fn a_body_failing_its_checksum_is_a_miss_and_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let cache = DerivativeCache::open(dir.path().join("c.redb"), file_only()).unwrap();
    let k = key("s", "a");
    cache.put(&k, &meta("e"), b"good bytes").unwrap();
    {
        let tx = cache.inner.db.begin_write().unwrap();
        tx.open_table(BODIES)
            .unwrap()
            .insert(k.digest(), b"evil bytes".as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    assert_eq!(cache.get(&k).unwrap(), None);
    cache.flush_access().unwrap();
    assert_eq!(cache.stats().entries, 0);
    check_consistency(&cache);
}

/// redb is MVCC: a reader must not wait for a writer.
#[test]
fn reads_are_not_blocked_by_an_open_write_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let cache = DerivativeCache::open(dir.path().join("c.redb"), CacheConfig::default()).unwrap();
    let k = key("s", "a");
    cache.put(&k, &meta("e"), b"bytes").unwrap();
    let tx = cache.inner.db.begin_write().unwrap();
    let reader = {
        let cache = cache.clone();
        let k = k.clone();
        std::thread::spawn(move || cache.get(&k).unwrap().is_some())
    };
    assert!(reader.join().unwrap());
    drop(tx);
}

/// Random operations against a plain model (redb's fuzz_redb.rs habit): the cache may forget
/// (evict) entries, but it must never exceed its bound after a write, never return bytes the
/// model does not hold for that key (stale or invalidated), and its tables must agree.
#[test]
fn random_operations_match_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let max = 16_384;
    let config = small(max);
    let mut cache = DerivativeCache::open(&path, config.clone()).unwrap();
    let mut rng = StdRng::seed_from_u64(0x5EED);
    let sources = [
        "s3://a/1.jpg",
        "s3://a/2.jpg",
        "s3://a/10.jpg",
        "s3://b/1.jpg",
        "local://x",
    ];
    let options = ["w:100", "w:200", "h:50/q:80", "bl:2"];
    // key → (source, etag, body)
    let mut model: BTreeMap<Digest, (usize, String, Vec<u8>)> = BTreeMap::new();
    let (mut hits, mut forgotten) = (0, 0);
    for step in 0..3000 {
        let s = rng.random_range(0..sources.len());
        let k = key(sources[s], options[rng.random_range(0..options.len())]);
        match rng.random_range(0..100) {
            0..40 => {
                let len = rng.random_range(0..3000);
                let body: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                let etag = format!("\"{step}\"");
                cache.put(&k, &meta(&etag), &body).unwrap();
                model.insert(*k.digest(), (s, etag, body));
                assert!(cache.stats().bytes <= max, "over the bound after a put");
            }
            40..78 => match cache.get(&k).unwrap() {
                Some(hit) => {
                    let (_, etag, body) = model
                        .get(k.digest())
                        .expect("served a variant the model says was removed");
                    assert_eq!(&hit.etag, etag);
                    assert_eq!(&hit.body[..], &body[..]);
                    hits += 1;
                }
                None => {
                    // Evicted: it can only come back through a put.
                    forgotten += model.remove(k.digest()).is_some() as u32;
                }
            },
            78..86 => {
                let present = stored(&cache);
                let want = model
                    .iter()
                    .filter(|(d, (src, _, _))| *src == s && present.contains(*d))
                    .count() as u64;
                assert_eq!(cache.invalidate_source(sources[s]).unwrap(), want);
                model.retain(|_, (src, _, _)| *src != s);
            }
            86..89 => {
                let prefix = ["s3://a/", "s3://a/1", "s3://", "local://"][rng.random_range(0..4)];
                let present = stored(&cache);
                let want = model
                    .iter()
                    .filter(|(d, (src, _, _))| {
                        sources[*src].starts_with(prefix) && present.contains(*d)
                    })
                    .count() as u64;
                assert_eq!(cache.purge_prefix(prefix).unwrap(), want);
                model.retain(|_, (src, _, _)| !sources[*src].starts_with(prefix));
            }
            89..95 => {
                cache.flush_access().unwrap();
            }
            95 => {
                cache.purge_all().unwrap();
                model.clear();
            }
            _ => {
                drop(cache);
                cache = DerivativeCache::open(&path, config.clone()).unwrap();
            }
        }
        assert!(cache.stats().bytes <= max);
        // Everything stored is something the model holds.
        if step % 100 == 0 {
            check_consistency(&cache);
            for d in stored(&cache) {
                assert!(model.contains_key(&d), "stored entry the model removed");
            }
        }
    }
    check_consistency(&cache);
    assert!(
        forgotten > 20,
        "the test should exercise eviction ({forgotten})"
    );
    assert!(hits > 50, "the test should exercise hits ({hits})");
    assert!(corrupt_files(dir.path()).is_empty());
}
