//! Object version ids (pure): how they are made, checked, and ordered.
//!
//! A version id is 32 lowercase hex digits: 16 for `u64::MAX - stamp`, where `stamp` is a
//! microsecond clock that never repeats or goes back within a process, then 16 random ones.
//! Sorting ids as strings therefore sorts versions newest first, which is the order
//! ListObjectVersions answers in, and the catalog can find a version by its id alone.
//! The version written while versioning is off or suspended has the id `null`, as in S3.

use std::sync::atomic::{AtomicU64, Ordering};

/// The id of the version written while versioning is off or suspended.
pub const NULL: &str = "null";

const ID_LEN: usize = 32;

static LAST_STAMP: AtomicU64 = AtomicU64::new(0);

/// Microseconds since the Unix epoch, strictly greater than the last stamp this process made.
pub fn next_stamp() -> u64 {
    let now =
        u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000).unwrap_or(0);
    let mut last = LAST_STAMP.load(Ordering::Relaxed);
    loop {
        let next = now.max(last.saturating_add(1));
        match LAST_STAMP.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// A new version id for a version stamped `stamp`.
pub fn new_id(stamp: u64, random: u64) -> String {
    format!("{:016x}{random:016x}", u64::MAX - stamp)
}

/// The stamp a generated id carries, or `None` when `id` is not one (`null` included).
pub fn stamp_of(id: &str) -> Option<u64> {
    if id.len() != ID_LEN || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let inverted = u64::from_str_radix(id.get(..16)?, 16).ok()?;
    Some(u64::MAX - inverted)
}

/// Whether `id` could name a version here (`null` or a generated id). Anything else is S3's
/// 400 `InvalidArgument` "Invalid version id specified", not a 404.
pub fn is_valid(id: &str) -> bool {
    id == NULL || stamp_of(id).is_some()
}

/// The part of a catalog key that orders one key's versions newest first: the inverted
/// stamp, then the id (`null` for the null version).
pub fn sort_suffix(stamp: u64, id: Option<&str>) -> String {
    format!("{:016x}{}", u64::MAX - stamp, id.unwrap_or(NULL))
}

/// The stamp to order a version by when it has none of its own: a null version written
/// before versioning existed here, ordered by when it was last written.
pub fn stamp_from_millis(last_modified_ms: i64) -> u64 {
    u64::try_from(last_modified_ms)
        .unwrap_or(0)
        .saturating_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_versions_sort_first_as_strings() {
        let a = next_stamp();
        let b = next_stamp();
        assert!(b > a);
        let (ia, ib) = (new_id(a, u64::MAX), new_id(b, 0));
        assert!(ib < ia, "{ib} should sort before {ia}");
        assert!(sort_suffix(b, Some(&ib)) < sort_suffix(a, Some(&ia)));
        assert!(sort_suffix(b, None) < sort_suffix(a, Some(&ia)));
    }

    #[test]
    fn ids_carry_their_stamp_and_nothing_else_parses() {
        let id = new_id(1_700_000_000_000_000, 0xdead_beef);
        assert_eq!(id.len(), 32);
        assert_eq!(stamp_of(&id), Some(1_700_000_000_000_000));
        assert!(is_valid(&id) && is_valid(NULL));
        for bad in [
            "",
            "Null",
            "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY",
            &id.to_uppercase(),
            &id[..31],
            &format!("{id}0"),
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn stamps_never_repeat_across_threads() {
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..1000).map(|_| next_stamp()).collect::<Vec<_>>()))
            .collect();
        let mut all: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_default())
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
