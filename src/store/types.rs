//! Plain values that cross the `Store` boundary. Serialized forms here are part of the
//! catalog's on-disk format (see docs/storage.md): add fields with `#[serde(default)]` only.

use std::collections::BTreeMap;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

/// Smallest size of every multipart part but the last, as S3.
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// S3's highest part number.
pub const MAX_PART_NUMBER: i32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketInfo {
    pub name: String,
    pub created_ms: i64,
    /// S3 versioning: `None` until PutBucketVersioning first sets it (it never returns to
    /// `None`, as in S3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versioning: Option<Versioning>,
}

impl BucketInfo {
    pub fn new(name: &str, created_ms: i64) -> BucketInfo {
        BucketInfo {
            name: name.to_owned(),
            created_ms,
            versioning: None,
        }
    }
}

/// A bucket's versioning state once it has been set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Versioning {
    /// Every write makes a new version; a delete makes a delete marker.
    Enabled,
    /// Writes replace the `null` version; versions made while enabled are kept.
    Suspended,
}

/// What a delete did: the delete marker it made (versioned buckets), or the version it
/// removed (a delete by version id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    /// The marker's or the removed version's id; `None` when the bucket is not versioned.
    pub version_id: Option<String>,
    /// A delete marker was made, or the version removed was one.
    pub delete_marker: bool,
}

/// ListObjectVersions' query: as [`ListQuery`], with the version marker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionQuery {
    pub prefix: String,
    pub delimiter: Option<String>,
    /// Start after this key (after its `version_marker` version when that is given).
    pub key_marker: Option<String>,
    pub version_marker: Option<String>,
    pub max_keys: usize,
}

/// One entry of ListObjectVersions: a version or a delete marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionEntry {
    pub info: ObjectInfo,
    pub is_latest: bool,
    pub delete_marker: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionPage {
    pub entries: Vec<VersionEntry>,
    pub common_prefixes: Vec<String>,
    pub is_truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_version_marker: Option<String>,
}

/// Checksums as S3 carries them: base64 of the big-endian digest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Checksums {
    pub crc32: Option<String>,
    pub crc32c: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
    pub crc64nvme: Option<String>,
}

impl Checksums {
    pub fn is_empty(&self) -> bool {
        self.crc32.is_none()
            && self.crc32c.is_none()
            && self.sha1.is_none()
            && self.sha256.is_none()
            && self.crc64nvme.is_none()
    }
}

/// The metadata a client sets on an object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ObjectAttrs {
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub expires: Option<String>,
    pub user_metadata: BTreeMap<String, String>,
    /// Object tags (`x-amz-tagging`, PutObjectTagging); kept by the embedded store only.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Anonymous read of this object (`x-amz-acl: public-read`, PutObjectAcl); kept by the
    /// embedded store only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub public_read: bool,
    /// The owner id of the key that wrote it (`s3::owner`); kept by the embedded store only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Encryption at rest (SSE-S3, SSE-C), as the object was written; the embedded store
    /// only. The store encrypts a write whose attributes ask for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption: Option<super::sealing::Encryption>,
    /// A write's SSE-C key, from the request only: never stored (the store keeps only the
    /// salted hash in `encryption`) and taken out before the attributes are kept.
    #[serde(skip)]
    pub customer_key: Option<super::sealing::CustomerKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Without quotes: hex MD5, or `hex(md5(part md5s))-N` for multipart objects.
    pub etag: String,
    pub last_modified_ms: i64,
    #[serde(default)]
    pub attrs: ObjectAttrs,
    #[serde(default)]
    pub checksums: Checksums,
    /// Number of parts for multipart objects, 0 otherwise.
    #[serde(default)]
    pub parts: u32,
    /// The version's id in a versioned bucket; `None` is the `null` version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

impl ObjectInfo {
    /// An entry that has only its key (listings' placeholders, tests).
    pub fn key_only(key: &str) -> ObjectInfo {
        ObjectInfo {
            key: key.to_owned(),
            size: 0,
            etag: String::new(),
            last_modified_ms: 0,
            attrs: Default::default(),
            checksums: Default::default(),
            parts: 0,
            version_id: None,
        }
    }

    /// The id S3 names this version by: its own, or `null`.
    pub fn version_name(&self) -> &str {
        self.version_id
            .as_deref()
            .unwrap_or(super::version_id::NULL)
    }
}

/// A byte range request, resolved against the object's size with [`ReadRange::resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadRange {
    /// `bytes=first-` or `bytes=first-last` (inclusive).
    FromTo { first: u64, last: Option<u64> },
    /// `bytes=-len`: the last `len` bytes.
    Suffix { len: u64 },
}

impl ReadRange {
    /// The half-open range to send, or `None` when it cannot be satisfied (416).
    pub fn resolve(self, size: u64) -> Option<std::ops::Range<u64>> {
        match self {
            ReadRange::FromTo { first, last } => {
                if first >= size {
                    return None;
                }
                let end = last.map_or(size, |l| l.saturating_add(1).min(size));
                (end > first).then_some(first..end)
            }
            ReadRange::Suffix { len } => {
                if len == 0 {
                    return None;
                }
                Some(size.saturating_sub(len)..size)
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub prefix: String,
    pub delimiter: Option<String>,
    /// Only keys (and common prefixes) strictly after this one.
    pub after: Option<String>,
    pub max_keys: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<ObjectInfo>,
    pub common_prefixes: Vec<String>,
    pub is_truncated: bool,
    /// The last key or common prefix returned, for the next page's marker.
    pub last: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    pub part_number: i32,
    pub size: u64,
    /// Hex MD5 of the part, without quotes.
    pub etag: String,
    pub last_modified_ms: i64,
    #[serde(default)]
    pub checksums: Checksums,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadInfo {
    pub upload_id: String,
    pub bucket: String,
    pub key: String,
    pub initiated_ms: i64,
    #[serde(default)]
    pub attrs: ObjectAttrs,
    /// The checksum algorithm named at CreateMultipartUpload, if any.
    #[serde(default)]
    pub checksum_algorithm: Option<String>,
    /// `x-amz-checksum-type: FULL_OBJECT` at CreateMultipartUpload: the object gets the CRC
    /// of its whole body, not the COMPOSITE checksum of its parts' checksums.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full_object: bool,
}

/// The checksum CreateMultipartUpload asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadChecksum {
    pub algorithm: String,
    pub full_object: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    pub part_number: i32,
    /// As the client sent it, quotes removed.
    pub etag: String,
}

/// One side of a conditional write: `*` (any object) or one ETag, without quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ETagMatch {
    Any,
    ETag(String),
}

impl ETagMatch {
    fn matches(&self, etag: &str) -> bool {
        match self {
            ETagMatch::Any => true,
            ETagMatch::ETag(e) => e.trim_matches('"') == etag,
        }
    }
}

/// The preconditions of a conditional write (`If-Match`, `If-None-Match` on PutObject and
/// CompleteMultipartUpload). A store decides them atomically with the write: the embedded
/// store inside the catalog transaction that makes the object visible, the remote store by
/// handing them to the cluster. Deciding them from an earlier HEAD would let two racing
/// `If-None-Match: *` writers both succeed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteCondition {
    pub if_match: Option<ETagMatch>,
    pub if_none_match: Option<ETagMatch>,
}

/// Which precondition of a conditional write did not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConditionFailed {
    #[error("If-Match")]
    IfMatch,
    #[error("If-None-Match")]
    IfNoneMatch,
}

/// The outcome of a conditional write whose store did its work: done, or refused because a
/// precondition did not hold (then nothing changed).
pub type Conditional<T> = Result<T, ConditionFailed>;

impl WriteCondition {
    pub fn is_unconditional(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none()
    }

    /// Whether a write may replace `existing`, the ETag of the object there now (`None` when
    /// there is none). `If-None-Match` is checked first, as S3 does.
    pub fn check(&self, existing: Option<&str>) -> Conditional<()> {
        if let (Some(c), Some(e)) = (&self.if_none_match, existing)
            && c.matches(e)
        {
            return Err(ConditionFailed::IfNoneMatch);
        }
        if let Some(c) = &self.if_match
            && !existing.is_some_and(|e| c.matches(e))
        {
            return Err(ConditionFailed::IfMatch);
        }
        Ok(())
    }
}

/// The preconditions of a conditional delete (`If-Match`, `x-amz-if-match-last-modified-time`
/// and `x-amz-if-match-size` on DeleteObject; `ETag`, `LastModifiedTime` and `Size` per key
/// in DeleteObjects). The embedded store decides them inside the delete's transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteCondition {
    pub if_match: Option<ETagMatch>,
    /// Unix seconds: Last-Modified is compared at HTTP-date precision.
    pub last_modified_secs: Option<i64>,
    pub size: Option<u64>,
}

impl DeleteCondition {
    pub fn is_unconditional(&self) -> bool {
        self.if_match.is_none() && self.last_modified_secs.is_none() && self.size.is_none()
    }

    /// Whether the object there now (`None`: none) may be deleted. A condition on a missing
    /// object is `NoSuchKey`, as S3 answers it; one that does not hold is `Ok(Err(..))`.
    pub fn check(
        &self,
        key: &str,
        existing: Option<&ObjectInfo>,
    ) -> Result<Conditional<()>, super::StoreError> {
        if self.is_unconditional() {
            return Ok(Ok(()));
        }
        let Some(info) = existing else {
            return Err(super::StoreError::NoSuchKey(key.to_owned()));
        };
        let etag_ok = self.if_match.as_ref().is_none_or(|c| c.matches(&info.etag));
        let time_ok = self
            .last_modified_secs
            .is_none_or(|t| info.last_modified_ms.div_euclid(1000) == t);
        let size_ok = self.size.is_none_or(|n| info.size == n);
        Ok(if etag_ok && time_ok && size_ok {
            Ok(())
        } else {
            Err(ConditionFailed::IfMatch)
        })
    }
}

/// Checks the client's part list against the stored parts and returns the chosen parts in
/// order with the multipart ETag `hex(md5(concat(part md5s)))-N`.
pub fn select_parts<'a>(
    requested: &[CompletedPart],
    stored: &'a BTreeMap<i32, PartInfo>,
) -> Result<(Vec<&'a PartInfo>, String), super::StoreError> {
    use super::StoreError;
    if requested.is_empty() {
        return Err(StoreError::InvalidPart(
            "the part list is empty: name at least one uploaded part".into(),
        ));
    }
    let mut chosen = Vec::with_capacity(requested.len());
    let mut prev = 0;
    for p in requested {
        if p.part_number <= prev {
            return Err(StoreError::InvalidPartOrder);
        }
        prev = p.part_number;
        let Some(stored) = stored.get(&p.part_number) else {
            return Err(StoreError::InvalidPart(format!(
                "part {} was not uploaded",
                p.part_number
            )));
        };
        if stored.etag != p.etag.trim_matches('"') {
            return Err(StoreError::InvalidPart(format!(
                "part {}: the ETag {} does not match the uploaded part's {}",
                p.part_number, p.etag, stored.etag
            )));
        }
        chosen.push(stored);
    }
    let last = chosen.len() - 1;
    for (i, part) in chosen.iter().enumerate() {
        if i != last && part.size < MIN_PART_SIZE {
            return Err(StoreError::EntityTooSmall {
                part: part.part_number,
                size: part.size,
            });
        }
    }
    let mut md5 = Md5::new();
    for part in &chosen {
        let raw = hex::decode(&part.etag).map_err(|_| {
            StoreError::Internal(format!("stored part ETag `{}` is not hex", part.etag))
        })?;
        md5.update(raw);
    }
    let etag = format!("{}-{}", hex::encode(md5.finalize()), chosen.len());
    Ok((chosen, etag))
}

pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_conditions_hold_or_fail_like_s3() {
        let info = ObjectInfo {
            key: "k".into(),
            size: 5,
            etag: "abc".into(),
            last_modified_ms: 1_700_000_000_999,
            attrs: ObjectAttrs::default(),
            checksums: Checksums::default(),
            parts: 0,
            version_id: None,
        };
        let none = DeleteCondition::default();
        assert_eq!(none.check("k", None).ok(), Some(Ok(())));
        let c = DeleteCondition {
            if_match: Some(ETagMatch::ETag("abc".into())),
            last_modified_secs: Some(1_700_000_000),
            size: Some(5),
        };
        assert_eq!(c.check("k", Some(&info)).ok(), Some(Ok(())));
        assert!(matches!(
            c.check("k", None),
            Err(crate::store::StoreError::NoSuchKey(_))
        ));
        for wrong in [
            DeleteCondition {
                size: Some(6),
                ..c.clone()
            },
            DeleteCondition {
                last_modified_secs: Some(1_700_000_001),
                ..c.clone()
            },
            DeleteCondition {
                if_match: Some(ETagMatch::ETag("x".into())),
                ..c.clone()
            },
        ] {
            assert_eq!(
                wrong.check("k", Some(&info)).ok(),
                Some(Err(ConditionFailed::IfMatch))
            );
        }
    }

    #[test]
    fn ranges_resolve_like_s3() {
        let r = |first, last| ReadRange::FromTo { first, last };
        assert_eq!(r(0, Some(9)).resolve(100), Some(0..10));
        assert_eq!(r(90, Some(200)).resolve(100), Some(90..100));
        assert_eq!(r(50, None).resolve(100), Some(50..100));
        assert_eq!(r(100, None).resolve(100), None);
        assert_eq!(r(0, Some(0)).resolve(0), None);
        assert_eq!(ReadRange::Suffix { len: 10 }.resolve(100), Some(90..100));
        assert_eq!(ReadRange::Suffix { len: 1000 }.resolve(100), Some(0..100));
        assert_eq!(ReadRange::Suffix { len: 0 }.resolve(100), None);
    }

    #[test]
    fn write_conditions_decide_on_the_current_etag() {
        let none_match_any = WriteCondition {
            if_none_match: Some(ETagMatch::Any),
            ..Default::default()
        };
        assert_eq!(none_match_any.check(None), Ok(()));
        assert_eq!(
            none_match_any.check(Some("abc")),
            Err(ConditionFailed::IfNoneMatch)
        );
        let if_match = WriteCondition {
            if_match: Some(ETagMatch::ETag("\"abc\"".into())),
            ..Default::default()
        };
        assert_eq!(if_match.check(Some("abc")), Ok(()));
        assert_eq!(if_match.check(Some("abd")), Err(ConditionFailed::IfMatch));
        assert_eq!(if_match.check(None), Err(ConditionFailed::IfMatch));
        let if_match_any = WriteCondition {
            if_match: Some(ETagMatch::Any),
            ..Default::default()
        };
        assert_eq!(if_match_any.check(Some("x")), Ok(()));
        assert_eq!(if_match_any.check(None), Err(ConditionFailed::IfMatch));
        assert!(WriteCondition::default().is_unconditional());
        assert_eq!(WriteCondition::default().check(Some("x")), Ok(()));
    }

    fn part(n: i32, size: u64, body: &[u8]) -> PartInfo {
        PartInfo {
            part_number: n,
            size,
            etag: hex::encode(Md5::digest(body)),
            last_modified_ms: 0,
            checksums: Checksums::default(),
        }
    }

    #[test]
    fn multipart_etag_and_rules() {
        let mut stored = BTreeMap::new();
        stored.insert(1, part(1, MIN_PART_SIZE, b"one"));
        stored.insert(3, part(3, 10, b"three"));
        stored.insert(4, part(4, 10, b"four"));
        let req = |n: i32| CompletedPart {
            part_number: n,
            etag: format!("\"{}\"", stored[&n].etag),
        };
        // gaps in part numbers are allowed; the last part may be small
        let (chosen, etag) = select_parts(&[req(1), req(3)], &stored).unwrap();
        assert_eq!(chosen.len(), 2);
        let mut m = Md5::new();
        m.update(Md5::digest(b"one"));
        m.update(Md5::digest(b"three"));
        assert_eq!(etag, format!("{}-2", hex::encode(m.finalize())));
        // a small part that is not last
        assert!(matches!(
            select_parts(&[req(1), req(3), req(4)], &stored),
            Err(crate::store::StoreError::EntityTooSmall { part: 3, .. })
        ));
        assert!(matches!(
            select_parts(&[req(3), req(1)], &stored),
            Err(crate::store::StoreError::InvalidPartOrder)
        ));
        let wrong = CompletedPart {
            part_number: 1,
            etag: "\"00\"".into(),
        };
        assert!(matches!(
            select_parts(&[wrong], &stored),
            Err(crate::store::StoreError::InvalidPart(_))
        ));
        let missing = CompletedPart {
            part_number: 2,
            etag: "\"00\"".into(),
        };
        assert!(matches!(
            select_parts(&[missing], &stored),
            Err(crate::store::StoreError::InvalidPart(_))
        ));
        assert!(select_parts(&[], &stored).is_err());
    }
}
