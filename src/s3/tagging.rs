//! Object and bucket tags, the pure part: the `x-amz-tagging` header's form (a URL query,
//! `k1=v1&k2=v2`) and the limits AWS documents, checked the same way for the header, for
//! PutObjectTagging and for PutBucketTagging.

use std::collections::BTreeMap;

/// Tags on one object (AWS's limit).
pub const MAX_OBJECT_TAGS: usize = 10;
/// Tags on one bucket (AWS's limit).
pub const MAX_BUCKET_TAGS: usize = 50;
/// Characters in a key / in a value.
pub const MAX_KEY_CHARS: usize = 128;
pub const MAX_VALUE_CHARS: usize = 256;

/// Why a tag set is refused: S3's `InvalidTag` (400), or `BadRequest` for too many.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TagError {
    #[error("Object tags cannot be greater than {MAX_OBJECT_TAGS}")]
    TooManyObjectTags,
    #[error("Bucket tags cannot be greater than {MAX_BUCKET_TAGS}")]
    TooManyBucketTags,
    #[error("The TagKey you have provided is invalid: it must be 1 to {MAX_KEY_CHARS} characters")]
    KeyLength,
    #[error("The TagValue you have provided is too long, max {MAX_VALUE_CHARS}")]
    ValueLength,
    #[error("Cannot provide multiple Tags with the same key: `{0}`")]
    Duplicate(String),
    #[error("The TagKey `{0}` uses the reserved prefix aws:")]
    Reserved(String),
    #[error(
        "The tag `{0}` has characters S3 does not allow (letters, digits, spaces and + - = . _ : / @)"
    )]
    Characters(String),
}

impl TagError {
    /// Too many tags is `BadRequest` in S3; every other problem is `InvalidTag`.
    pub fn is_count(&self) -> bool {
        matches!(
            self,
            TagError::TooManyObjectTags | TagError::TooManyBucketTags
        )
    }
}

/// What a tag set is on: the limits differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    Object,
    Bucket,
}

fn allowed(c: char) -> bool {
    c.is_alphanumeric() || c.is_whitespace() || "+-=._:/@".contains(c)
}

/// Checks `tags` (in the order given, so a duplicate is found) and returns them as a map.
pub fn check(tags: Vec<(String, String)>, on: On) -> Result<BTreeMap<String, String>, TagError> {
    let max = match on {
        On::Object => MAX_OBJECT_TAGS,
        On::Bucket => MAX_BUCKET_TAGS,
    };
    if tags.len() > max {
        return Err(match on {
            On::Object => TagError::TooManyObjectTags,
            On::Bucket => TagError::TooManyBucketTags,
        });
    }
    let mut out = BTreeMap::new();
    for (k, v) in tags {
        let chars = k.chars().count();
        if chars == 0 || chars > MAX_KEY_CHARS {
            return Err(TagError::KeyLength);
        }
        if v.chars().count() > MAX_VALUE_CHARS {
            return Err(TagError::ValueLength);
        }
        if k.starts_with("aws:") {
            return Err(TagError::Reserved(k));
        }
        if !k.chars().chain(v.chars()).all(allowed) {
            return Err(TagError::Characters(k));
        }
        if out.contains_key(&k) {
            return Err(TagError::Duplicate(k));
        }
        out.insert(k, v);
    }
    Ok(out)
}

/// Parses the `x-amz-tagging` header (`k1=v1&k2=v2`, URL-encoded) into checked object tags.
pub fn parse_header(header: &str) -> Result<BTreeMap<String, String>, TagError> {
    // Invalid UTF-8 decodes to U+FFFD, which `check` refuses as a character S3 does not allow.
    let pairs = url::form_urlencoded::parse(header.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    check(pairs, On::Object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(n: usize) -> Vec<(String, String)> {
        (0..n).map(|i| (format!("k{i}"), format!("v{i}"))).collect()
    }

    #[test]
    fn limits_are_aws_limits() {
        assert_eq!(check(pairs(10), On::Object).map(|m| m.len()), Ok(10));
        assert_eq!(
            check(pairs(11), On::Object),
            Err(TagError::TooManyObjectTags)
        );
        assert_eq!(check(pairs(50), On::Bucket).map(|m| m.len()), Ok(50));
        assert_eq!(
            check(pairs(51), On::Bucket),
            Err(TagError::TooManyBucketTags)
        );
        let long_key = vec![("k".repeat(129), String::new())];
        assert_eq!(check(long_key, On::Object), Err(TagError::KeyLength));
        let ok_key = vec![("é".repeat(128), "v".repeat(256))];
        assert!(check(ok_key, On::Object).is_ok());
        let long_value = vec![("k".into(), "v".repeat(257))];
        assert_eq!(check(long_value, On::Object), Err(TagError::ValueLength));
        let dup = vec![("a".into(), "1".into()), ("a".into(), "2".into())];
        assert_eq!(check(dup, On::Object), Err(TagError::Duplicate("a".into())));
        let reserved = vec![("aws:x".into(), "1".into())];
        assert!(matches!(
            check(reserved, On::Object),
            Err(TagError::Reserved(_))
        ));
        let bad = vec![("a<b".into(), "1".into())];
        assert!(matches!(
            check(bad, On::Object),
            Err(TagError::Characters(_))
        ));
        assert!(check(vec![(String::new(), "v".into())], On::Object).is_err());
    }

    #[test]
    fn the_header_is_a_url_encoded_query() {
        let t = parse_header("project=blue%20sky&team=web+ops&empty=").unwrap();
        assert_eq!(t.get("project").map(String::as_str), Some("blue sky"));
        assert_eq!(t.get("team").map(String::as_str), Some("web ops"));
        assert_eq!(t.get("empty").map(String::as_str), Some(""));
        assert_eq!(parse_header("").map(|t| t.len()), Ok(0));
        assert!(parse_header("a=1&a=2").is_err());
        assert!(parse_header("k=%FF").is_err());
    }
}
