//! The stored form of a cache entry's header (everything but the bytes).
//!
//! What must stay true: every header starts with a format version byte; a header of a version
//! this build does not know, or one that does not parse, decodes to `None` (a miss), never to
//! an error or a panic. New fields are added with serde defaults; an incompatible change bumps
//! `ENTRY_V1` to a new version and keeps reading the old one.

use serde::{Deserialize, Serialize};

/// Version byte in front of every header.
pub const ENTRY_V1: u8 = 1;

/// A header as stored in the `entries` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredHeader {
    pub source_id: String,
    pub content_type: String,
    pub etag: String,
    pub last_modified_ms: i64,
    /// The source's Cache-Control (`[images] cache_control_passthrough`); absent in entries
    /// written before it existed, which read as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// Length of the body in the `bodies` table.
    pub size: u64,
    /// CRC-32C of the body, checked on every read.
    pub crc32c: u32,
    pub created_ms: i64,
    pub last_access_ms: i64,
    /// Recency counter of the last access (orders the LRU across restarts).
    pub access_seq: u64,
}

pub fn encode(h: &StoredHeader) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = vec![ENTRY_V1];
    serde_json::to_writer(&mut out, h)?;
    Ok(out)
}

/// `None` for an empty, unknown-version or unparsable header.
pub fn decode(raw: &[u8]) -> Option<StoredHeader> {
    match raw.split_first() {
        Some((&ENTRY_V1, rest)) => serde_json::from_slice(rest).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> StoredHeader {
        StoredHeader {
            source_id: "s3://b/k".into(),
            content_type: "image/webp".into(),
            etag: "\"abc\"".into(),
            last_modified_ms: 1_700_000_000_000,
            cache_control: None,
            size: 42,
            crc32c: 7,
            created_ms: 1,
            last_access_ms: 2,
            access_seq: 3,
        }
    }

    #[test]
    fn round_trips() {
        let h = header();
        let raw = encode(&h).unwrap();
        assert_eq!(raw[0], ENTRY_V1);
        assert_eq!(decode(&raw), Some(h));
    }

    #[test]
    fn the_source_cache_control_is_kept_and_older_headers_still_read() {
        let h = StoredHeader {
            cache_control: Some("max-age=60, public".into()),
            ..header()
        };
        assert_eq!(decode(&encode(&h).unwrap()), Some(h));
        // A header written before the field existed.
        let old = br#"{"source_id":"s3://b/k","content_type":"image/webp","etag":"e","last_modified_ms":1,"size":42,"crc32c":7,"created_ms":1,"last_access_ms":2,"access_seq":3}"#;
        let mut raw = vec![ENTRY_V1];
        raw.extend_from_slice(old);
        assert_eq!(decode(&raw).map(|h| h.cache_control), Some(None));
    }

    #[test]
    fn unknown_versions_and_garbage_read_as_none() {
        let mut raw = encode(&header()).unwrap();
        raw[0] = 2;
        assert_eq!(decode(&raw), None);
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[ENTRY_V1]), None);
        assert_eq!(decode(&[ENTRY_V1, b'{', 0xff]), None);
    }
}
