//! The edge cache's disk tier: a log of records in segment files, bounded in bytes.
//!
//! A record (an entry, or a tombstone saying an entry was removed) is appended to the
//! newest segment; when the tier is full, the oldest segment is deleted whole (first in,
//! first out, as log-structured caches do: CacheLib's block cache, Squid's rock store). An
//! entry read from the oldest quarter of a tier at least half full is appended again, so
//! what is still asked for does not fall off the end. Storing an entry is one `write` to a file already
//! open: no file created, renamed or unlinked per entry (one file per entry cost a miss
//! flood about 70 µs of CPU per entry in ext4's directory code).
//!
//! What must stay true:
//! - the segment files never add up to more than the bound (a record larger than the
//!   whole bound is not kept);
//! - a record is checked (magic, lengths, key, CRC-32) when read: a bad one is a miss,
//!   never served and never fatal; a segment whose first record does not parse is not
//!   ours or is corrupt, and is renamed to `<file>.corrupt-<unix time>`; a torn tail (a
//!   crash during a write) is cut off at start;
//! - a removal survives a restart (the tombstone is read back in order);
//! - keys are lowercase hex (as `key::entry_key` makes them).
//!
//! Blocking file I/O: call from `spawn_blocking` or a thread of its own.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

const MAGIC: &[u8; 4] = b"PXR1";
/// Magic, kind, key length (u16), head length (u32), body length (u64), all big-endian.
const HEADER: usize = 4 + 1 + 2 + 4 + 8;
const KIND_ENTRY: u8 = 1;
const KIND_TOMBSTONE: u8 = 2;
/// A head longer than this is not one we wrote.
const MAX_HEAD: u32 = 1 << 20;

/// A record's fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub key_len: u16,
    pub head_len: u32,
    pub body_len: u64,
}

impl Header {
    pub fn parse(b: &[u8]) -> Option<Self> {
        let b = b.get(..HEADER)?;
        if &b[..4] != MAGIC.as_slice() {
            return None;
        }
        let h = Self {
            kind: b[4],
            key_len: u16::from_be_bytes([b[5], b[6]]),
            head_len: u32::from_be_bytes(b[7..11].try_into().ok()?),
            body_len: u64::from_be_bytes(b[11..19].try_into().ok()?),
        };
        let sane = matches!(h.kind, KIND_ENTRY | KIND_TOMBSTONE)
            && h.key_len > 0
            && h.head_len <= MAX_HEAD
            && (h.kind == KIND_ENTRY || (h.head_len == 0 && h.body_len == 0));
        sane.then_some(h)
    }

    /// The whole record's length: header, key, head, body and CRC.
    pub fn record_len(&self) -> u64 {
        (HEADER as u64 + u64::from(self.key_len) + u64::from(self.head_len))
            .saturating_add(self.body_len)
            .saturating_add(4)
    }
}

/// An entry record: header, key, head, body, CRC-32 of all before.
pub fn encode_entry(key: &str, head: &[u8], body: &[u8]) -> Vec<u8> {
    encode(KIND_ENTRY, key, head, body)
}

fn encode(kind: u8, key: &str, head: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + key.len() + head.len() + body.len() + 4);
    out.extend_from_slice(MAGIC);
    out.push(kind);
    out.extend_from_slice(&u16::try_from(key.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(&u32::try_from(head.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(head);
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// The head and body of the entry record `bytes` for `key`; `None` when it is anything
/// else (another key, a tombstone, cut short, a failed checksum).
pub fn decode_entry(bytes: &Bytes, key: &str) -> Option<(Bytes, Bytes)> {
    let h = Header::parse(bytes)?;
    if h.kind != KIND_ENTRY || u64::try_from(bytes.len()).ok()? != h.record_len() {
        return None;
    }
    let (content, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32fast::hash(content).to_be_bytes() != crc {
        return None;
    }
    let k_end = HEADER + usize::from(h.key_len);
    let h_end = k_end + usize::try_from(h.head_len).ok()?;
    if content.get(HEADER..k_end)? != key.as_bytes() {
        return None;
    }
    Some((bytes.slice(k_end..h_end), bytes.slice(h_end..content.len())))
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 256
        && key
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Where an entry's record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    segment: u64,
    offset: u64,
    len: u64,
}

struct Segment {
    file: Arc<File>,
    len: u64,
    /// The keys whose records were appended here (some since moved on or removed).
    keys: Vec<String>,
}

struct State {
    index: HashMap<String, Loc>,
    segments: BTreeMap<u64, Segment>,
    /// The segment taking appends.
    active: Option<u64>,
    /// The next segment's number (numbers only grow, so a new segment never takes the name
    /// of one whose file is still being removed).
    next_id: u64,
    used: u64,
    /// Keys that left the tier on a re-append or a tombstone, for the next `append` to
    /// report (so the caller's index and memory tier hear of them).
    orphans: Vec<String>,
}

/// The disk tier.
pub struct Segments {
    dir: PathBuf,
    max: u64,
    segment_size: u64,
    state: Mutex<State>,
}

/// What opening found: the entries' heads, to rebuild the caller's index.
pub type Heads = Vec<(String, Bytes)>;

impl Segments {
    /// The tier in `dir` (created), bounded at `max` bytes: its segments read back in
    /// order (oldest dropped while over the bound, a torn tail cut, a foreign or corrupt
    /// segment moved aside). Entry files of the one-file-per-entry layout (`*.entry`) are
    /// taken in and removed.
    pub fn open(dir: &Path, max: u64) -> std::io::Result<(Self, Heads)> {
        std::fs::create_dir_all(dir)?;
        let me = Self {
            dir: dir.to_owned(),
            max,
            segment_size: (max / 16).clamp(1, 64 << 20),
            state: Mutex::new(State {
                index: HashMap::new(),
                segments: BTreeMap::new(),
                active: None,
                next_id: 1,
                used: 0,
                orphans: Vec::new(),
            }),
        };
        let mut ids = Vec::new();
        let mut legacy = Vec::new();
        for item in std::fs::read_dir(dir)? {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            if let Some(id) = name
                .strip_suffix(".seg")
                .and_then(|s| u64::from_str_radix(s, 16).ok())
            {
                ids.push(id);
            } else if let Some(key) = name.strip_suffix(".entry").filter(|k| valid_key(k)) {
                let modified = item.metadata().and_then(|m| m.modified()).ok();
                legacy.push((modified, key.to_owned()));
            } else if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(item.path());
            }
        }
        ids.sort_unstable();
        let next_id = ids.last().map_or(1, |l| l.saturating_add(1));
        let mut heads: HashMap<String, Bytes> = HashMap::new();
        {
            let mut st = me.lock()?;
            for id in ids {
                me.read_segment(&mut st, id, &mut heads)?;
            }
            st.active = st.segments.keys().next_back().copied();
            st.next_id = next_id;
            // A smaller bound than last time: the oldest go.
            while st.used > max {
                let Some(oldest) = st.segments.keys().next().copied() else {
                    break;
                };
                let mut unlink = Vec::new();
                for k in me.drop_segment(&mut st, oldest, &mut unlink) {
                    heads.remove(&k);
                }
                for path in unlink {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        legacy.sort();
        for (_, key) in legacy {
            let path = dir.join(format!("{key}.entry"));
            if let Some((head, body)) = std::fs::read(&path).ok().and_then(|b| decode_v1(&b)) {
                for k in me.append(&key, &head, &body)? {
                    heads.remove(&k);
                }
                if me.contains(&key) {
                    heads.insert(key, Bytes::from(head));
                }
            }
            let _ = std::fs::remove_file(&path);
        }
        let heads = heads.into_iter().collect();
        Ok((me, heads))
    }

    fn lock(&self) -> std::io::Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| std::io::Error::other("the edge cache's disk index is poisoned"))
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:016x}.seg"))
    }

    /// Reads segment `id` into the index, in record order.
    fn read_segment(
        &self,
        st: &mut State,
        id: u64,
        heads: &mut HashMap<String, Bytes>,
    ) -> std::io::Result<()> {
        let path = self.path(id);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)?;
        let file_len = file.metadata()?.len();
        let mut r = BufReader::with_capacity(64 << 10, &file);
        let mut offset = 0u64;
        let mut keys = Vec::new();
        let mut good = true;
        while offset < file_len {
            let mut hb = [0u8; HEADER];
            let parsed = r.read_exact(&mut hb).ok().and_then(|()| Header::parse(&hb));
            let Some(h) = parsed.filter(|h| offset.saturating_add(h.record_len()) <= file_len)
            else {
                good = false;
                break;
            };
            let mut key = vec![0u8; usize::from(h.key_len)];
            let mut head = vec![0u8; h.head_len as usize];
            if r.read_exact(&mut key).is_err() || r.read_exact(&mut head).is_err() {
                good = false;
                break;
            }
            let Some(key) = String::from_utf8(key).ok().filter(|k| valid_key(k)) else {
                good = false;
                break;
            };
            let skip = i64::try_from(h.body_len.saturating_add(4)).unwrap_or(i64::MAX);
            r.seek_relative(skip)?;
            let loc = Loc {
                segment: id,
                offset,
                len: h.record_len(),
            };
            if h.kind == KIND_ENTRY {
                st.index.insert(key.clone(), loc);
                heads.insert(key.clone(), Bytes::from(head));
                keys.push(key);
            } else {
                st.index.remove(&key);
                heads.remove(&key);
            }
            offset += loc.len;
        }
        drop(r);
        if !good && offset == 0 {
            match crate::cache::move_aside(&path) {
                Ok(aside) => tracing::warn!(
                    path = %path.display(),
                    aside = %aside.display(),
                    "corrupt edge cache segment; moved aside"
                ),
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "corrupt edge cache segment; cannot move it aside"
                ),
            }
            return Ok(());
        }
        if !good {
            tracing::warn!(
                path = %path.display(),
                kept = offset,
                "edge cache segment cut short (a crash during a write?); its tail dropped"
            );
            file.set_len(offset)?;
        }
        st.used += offset;
        st.segments.insert(
            id,
            Segment {
                file: Arc::new(file),
                len: offset,
                keys,
            },
        );
        Ok(())
    }

    /// Forgets segment `id` (its file goes on `unlink`, to be removed outside the lock);
    /// returns the keys whose entries were in it.
    fn drop_segment(&self, st: &mut State, id: u64, unlink: &mut Vec<PathBuf>) -> Vec<String> {
        let Some(seg) = st.segments.remove(&id) else {
            return Vec::new();
        };
        st.used = st.used.saturating_sub(seg.len);
        if st.active == Some(id) {
            st.active = None;
        }
        unlink.push(self.path(id));
        let mut gone = Vec::new();
        for k in seg.keys {
            if st.index.get(&k).is_some_and(|l| l.segment == id) {
                st.index.remove(&k);
                gone.push(k);
            }
        }
        gone
    }

    /// Makes room for `len` bytes and reserves them at the end of the active segment (a new
    /// one when it is full). `None`: larger than the whole tier.
    fn reserve(
        &self,
        st: &mut State,
        key: &str,
        len: u64,
        gone: &mut Vec<String>,
        unlink: &mut Vec<PathBuf>,
    ) -> std::io::Result<Option<(Loc, Arc<File>)>> {
        if len > self.max {
            return Ok(None);
        }
        while st.used + len > self.max {
            let Some(oldest) = st.segments.keys().next().copied() else {
                break;
            };
            gone.extend(self.drop_segment(st, oldest, unlink));
        }
        let full = st
            .active
            .and_then(|a| st.segments.get(&a))
            .is_none_or(|s| s.len > 0 && s.len + len > self.segment_size);
        if full {
            let id = st.next_id;
            st.next_id += 1;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(self.path(id))?;
            st.segments.insert(
                id,
                Segment {
                    file: Arc::new(file),
                    len: 0,
                    keys: Vec::new(),
                },
            );
            st.active = Some(id);
        }
        let id = st.active.unwrap_or_default();
        let Some(seg) = st.segments.get_mut(&id) else {
            return Ok(None);
        };
        let loc = Loc {
            segment: id,
            offset: seg.len,
            len,
        };
        seg.len += len;
        seg.keys.push(key.to_owned());
        st.used += len;
        Ok(Some((loc, seg.file.clone())))
    }

    /// Appends `record` (for `key`): room is made and the space reserved under the lock,
    /// the bytes written outside it, so lookups and reads go on meanwhile. Returns where it
    /// went (`None`: larger than the whole tier) and the keys that left the tier for it.
    fn put_record(&self, key: &str, record: &[u8]) -> std::io::Result<(Option<Loc>, Vec<String>)> {
        let (mut gone, mut unlink) = (Vec::new(), Vec::new());
        let reserved = {
            let mut st = self.lock()?;
            self.reserve(&mut st, key, record.len() as u64, &mut gone, &mut unlink)
        };
        for path in unlink {
            let _ = std::fs::remove_file(path);
        }
        let Some((loc, file)) = reserved? else {
            return Ok((None, gone));
        };
        if let Err(e) = file.write_all_at(record, loc.offset) {
            // Whatever part landed is cut at the next start; this segment takes no more.
            if let Ok(mut st) = self.lock()
                && st.active == Some(loc.segment)
            {
                st.active = None;
            }
            return Err(e);
        }
        Ok((Some(loc), gone))
    }

    /// Stores an entry; returns the keys whose entries left the tier for it (`key` itself
    /// when it is larger than the whole tier).
    pub fn append(&self, key: &str, head: &[u8], body: &[u8]) -> std::io::Result<Vec<String>> {
        if !valid_key(key) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "an edge cache key is lowercase hex",
            ));
        }
        let record = encode_entry(key, head, body);
        let (loc, mut gone) = self.put_record(key, &record)?;
        let mut st = self.lock()?;
        gone.append(&mut st.orphans);
        // The segment may have been dropped while the bytes were written.
        match loc.filter(|l| st.segments.contains_key(&l.segment)) {
            Some(loc) => {
                st.index.insert(key.to_owned(), loc);
                gone.retain(|k| k != key);
            }
            None => {
                st.index.remove(key);
                gone.push(key.to_owned());
            }
        }
        Ok(gone)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.state.lock().is_ok_and(|s| s.index.contains_key(key))
    }

    /// The head and body under `key`. A record that fails its checks is forgotten (a miss).
    /// An entry in the oldest quarter of a tier at least half full is appended again (it is
    /// still wanted).
    pub fn get(&self, key: &str) -> Option<(Bytes, Bytes)> {
        let (loc, file, old) = {
            let st = self.state.lock().ok()?;
            let loc = *st.index.get(key)?;
            let file = st.segments.get(&loc.segment)?.file.clone();
            let before: u64 = st.segments.range(..loc.segment).map(|(_, s)| s.len).sum();
            // Near the front of a tier at least half full: at risk of leaving soon.
            let old = before < st.used / 4 && st.used >= self.max / 2;
            (loc, file, old && st.active != Some(loc.segment))
        };
        let mut buf = vec![0u8; usize::try_from(loc.len).ok()?];
        let read = file.read_exact_at(&mut buf, loc.offset);
        let got = read
            .ok()
            .and_then(|()| decode_entry(&Bytes::from(buf), key));
        let Some((head, body)) = got else {
            tracing::warn!(
                segment = %self.path(loc.segment).display(),
                offset = loc.offset,
                "corrupt edge cache record; dropped"
            );
            if let Ok(mut st) = self.state.lock()
                && st.index.get(key) == Some(&loc)
            {
                st.index.remove(key);
            }
            return None;
        };
        if old {
            let record = encode_entry(key, &head, &body);
            if let Ok((Some(new), gone)) = self.put_record(key, &record)
                && let Ok(mut st) = self.state.lock()
            {
                // Unless it was removed or stored anew meanwhile.
                let current = st.index.get(key);
                let ours =
                    current == Some(&loc) || (current.is_none() && gone.iter().any(|k| k == key));
                if ours && st.segments.contains_key(&new.segment) {
                    st.index.insert(key.to_owned(), new);
                }
                st.orphans.extend(gone.into_iter().filter(|k| k != key));
            }
        }
        Some((head, body))
    }

    /// Removes `key`'s entry, for good (a tombstone is appended, so it stays removed after
    /// a restart).
    pub fn remove(&self, key: &str) {
        let removed = self
            .state
            .lock()
            .is_ok_and(|mut st| st.index.remove(key).is_some());
        if !removed || !valid_key(key) {
            return;
        }
        let record = encode(KIND_TOMBSTONE, key, &[], &[]);
        match self.put_record(key, &record) {
            Ok((_, gone)) => {
                if let Ok(mut st) = self.state.lock() {
                    st.orphans.extend(gone);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot record an edge cache removal on disk"),
        }
    }

    /// Entries, and bytes the segment files take.
    pub fn stats(&self) -> (usize, u64) {
        self.state
            .lock()
            .map(|s| (s.index.len(), s.used))
            .unwrap_or_default()
    }
}

/// An entry file of the one-file-per-entry layout: `PXEC1\n`, head length (u32 BE), head,
/// body length (u64 BE), body, CRC-32 of all before.
fn decode_v1(bytes: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (content, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32fast::hash(content).to_be_bytes() != crc {
        return None;
    }
    let rest = content.strip_prefix(b"PXEC1\n".as_slice())?;
    let (len, rest) = rest.split_at_checked(4)?;
    let head_len = usize::try_from(u32::from_be_bytes(len.try_into().ok()?)).ok()?;
    let (head, rest) = rest.split_at_checked(head_len)?;
    let (len, body) = rest.split_at_checked(8)?;
    let body_len = usize::try_from(u64::from_be_bytes(len.try_into().ok()?)).ok()?;
    (body.len() == body_len).then(|| (head.to_vec(), body.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, max: u64) -> (Segments, Heads) {
        Segments::open(dir, max).expect("open")
    }

    fn on_disk(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .expect("list")
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum()
    }

    #[test]
    fn a_record_round_trips_and_any_damage_is_refused() {
        let rec = Bytes::from(encode_entry("ab12", b"head", b"body bytes"));
        let (h, b) = decode_entry(&rec, "ab12").expect("decodes");
        assert_eq!((&h[..], &b[..]), (&b"head"[..], &b"body bytes"[..]));
        assert!(decode_entry(&rec, "ab13").is_none(), "another key");
        for i in 0..rec.len() {
            let mut bad = rec.to_vec();
            bad[i] ^= 0x40;
            assert!(
                decode_entry(&Bytes::from(bad), "ab12").is_none(),
                "byte {i}"
            );
        }
        for cut in 0..rec.len() {
            assert!(
                decode_entry(&rec.slice(..cut), "ab12").is_none(),
                "cut {cut}"
            );
        }
        let tomb = Bytes::from(encode(KIND_TOMBSTONE, "ab12", &[], &[]));
        assert!(decode_entry(&tomb, "ab12").is_none());
        assert!(
            Header::parse(b"PXR1\x09\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
                .is_none()
        );
    }

    #[test]
    fn entries_and_removals_survive_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let (s, heads) = open(dir.path(), 1 << 20);
            assert!(heads.is_empty());
            s.append("c1", b"head-1", &[1u8; 5000]).expect("append");
            s.append("c2", b"head-2", &[2u8; 10]).expect("append");
            s.append("c3", b"head-3", &[3u8; 10]).expect("append");
            s.append("c2", b"head-2b", &[4u8; 20]).expect("overwrite");
            s.remove("c3");
        }
        let (s, mut heads) = open(dir.path(), 1 << 20);
        heads.sort();
        assert_eq!(
            heads,
            vec![
                ("c1".to_owned(), Bytes::from_static(b"head-1")),
                ("c2".to_owned(), Bytes::from_static(b"head-2b"))
            ]
        );
        assert_eq!(s.get("c2").map(|(_, b)| b.len()), Some(20));
        assert!(s.get("c3").is_none() && !s.contains("c3"));
        assert_eq!(s.stats().0, 2);
    }

    #[test]
    fn the_files_stay_within_the_bound_oldest_first() {
        let dir = tempfile::tempdir().expect("dir");
        let (s, _) = open(dir.path(), 3000);
        let mut gone = Vec::new();
        for i in 0..10 {
            gone.extend(
                s.append(&format!("c{i}"), b"h", &[7u8; 1000])
                    .expect("append"),
            );
            assert!(on_disk(dir.path()) <= 3000, "{}", on_disk(dir.path()));
        }
        assert!(gone.contains(&"c0".to_owned()));
        assert!(s.get("c9").is_some() && s.get("c0").is_none());
        // Larger than the whole tier: not kept.
        assert_eq!(
            s.append("ee", b"h", &[0u8; 4000]).expect("append"),
            vec!["ee"]
        );
        assert!(!s.contains("ee"));
        // A smaller bound at the next start drops the oldest.
        drop(s);
        let (s, heads) = open(dir.path(), 1100);
        assert_eq!(s.stats().0, 1);
        assert_eq!(heads.len(), 1);
        assert!(s.get("c9").is_some());
        assert!(on_disk(dir.path()) <= 1100);
    }

    #[test]
    fn what_is_read_near_the_end_is_kept() {
        let dir = tempfile::tempdir().expect("dir");
        // Segments of 64 KiB (the smallest), ten records each.
        let (s, _) = open(dir.path(), 1 << 20);
        s.append("aa", b"h", &[1u8; 6000]).expect("append");
        for i in 0..11 {
            s.append(&format!("c{i:x}"), b"h", &[1u8; 6000])
                .expect("append");
        }
        // In an older segment, but the tier is far from full: what is read stays put.
        let used = s.stats().1;
        assert!(s.get("aa").is_some());
        assert_eq!(s.stats().1, used);
        for i in 0..200 {
            s.append(&format!("b{i:x}"), b"h", &[2u8; 6000])
                .expect("append");
            if i % 20 == 0 {
                assert!(s.get("aa").is_some(), "after {i}");
            }
        }
        assert!(s.get("aa").is_some());
        assert!(s.get("b0").is_none(), "the unread oldest went");
    }

    #[test]
    fn a_torn_tail_is_cut_and_a_foreign_segment_moved_aside() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let (s, _) = open(dir.path(), 1 << 20);
            s.append("c1", b"h", &[1u8; 100]).expect("append");
            s.append("c2", b"h", &[2u8; 100]).expect("append");
        }
        let seg = dir.path().join(format!("{:016x}.seg", 1));
        let len = std::fs::metadata(&seg).expect("meta").len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .expect("open");
        f.set_len(len - 10).expect("cut");
        drop(f);
        std::fs::write(dir.path().join(format!("{:016x}.seg", 7)), b"not ours").expect("write");
        let (s, heads) = open(dir.path(), 1 << 20);
        assert_eq!(heads.len(), 1);
        assert!(s.get("c1").is_some() && s.get("c2").is_none());
        assert!(std::fs::metadata(&seg).expect("meta").len() < len - 10);
        let aside = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().contains(".seg.corrupt-"));
        assert!(aside);
        // Appends go on after the cut, and read back.
        s.append("c3", b"h", &[3u8; 100]).expect("append");
        drop(s);
        let (s, _) = open(dir.path(), 1 << 20);
        assert!(s.get("c1").is_some() && s.get("c3").is_some());
    }

    #[test]
    fn a_damaged_record_is_a_miss() {
        let dir = tempfile::tempdir().expect("dir");
        let (s, _) = open(dir.path(), 1 << 20);
        s.append("c1", b"h", &[1u8; 100]).expect("append");
        let seg = dir.path().join(format!("{:016x}.seg", 1));
        let mut bytes = std::fs::read(&seg).expect("read");
        bytes[60] ^= 0xff;
        std::fs::write(&seg, &bytes).expect("write");
        assert!(s.get("c1").is_none());
        assert!(!s.contains("c1"));
    }

    #[test]
    fn entry_files_of_the_old_layout_are_taken_in() {
        let dir = tempfile::tempdir().expect("dir");
        let mut v1 = b"PXEC1\n".to_vec();
        v1.extend_from_slice(&4u32.to_be_bytes());
        v1.extend_from_slice(b"head");
        v1.extend_from_slice(&3u64.to_be_bytes());
        v1.extend_from_slice(b"abc");
        let crc = crc32fast::hash(&v1);
        v1.extend_from_slice(&crc.to_be_bytes());
        std::fs::write(dir.path().join("c1.entry"), &v1).expect("write");
        std::fs::write(dir.path().join("c2.entry"), b"garbage").expect("write");
        let (s, heads) = open(dir.path(), 1 << 20);
        assert_eq!(heads, vec![("c1".to_owned(), Bytes::from_static(b"head"))]);
        assert_eq!(
            s.get("c1").map(|(_, b)| b),
            Some(Bytes::from_static(b"abc"))
        );
        assert!(!dir.path().join("c1.entry").exists());
        assert!(!dir.path().join("c2.entry").exists());
    }
}
