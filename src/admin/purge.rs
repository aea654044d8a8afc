//! What a cache purge may name (everything, a bucket or a prefix in it, or one object), read
//! the same way from the admin API's JSON and from `pixelport cache purge`'s flags.

use crate::cache::{CacheError, DerivativeCache};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    All,
    /// Every variant of one source (`s3://bucket/key`).
    Source(String),
    /// Every variant of sources under `s3://bucket/prefix`.
    Prefix(String),
}

pub const USAGE: &str =
    "say what to purge: all, a bucket, a bucket and a prefix, or a bucket and a key";

impl Purge {
    pub fn from_parts(
        all: bool,
        bucket: Option<&str>,
        prefix: Option<&str>,
        key: Option<&str>,
    ) -> Result<Self, &'static str> {
        let bucket = bucket.filter(|b| !b.is_empty());
        match (all, bucket, prefix, key) {
            (true, None, None, None) => Ok(Purge::All),
            (false, Some(b), None, Some(k)) if !k.is_empty() => {
                Ok(Purge::Source(format!("s3://{b}/{k}")))
            }
            (false, Some(b), p, None) => Ok(Purge::Prefix(format!("s3://{b}/{}", p.unwrap_or("")))),
            _ => Err(USAGE),
        }
    }

    /// The scope, as change listeners are told it.
    pub fn scope(&self) -> crate::s3::PurgeScope<'_> {
        match self {
            Purge::All => crate::s3::PurgeScope::All,
            Purge::Source(s) => crate::s3::PurgeScope::Source(s),
            Purge::Prefix(p) => crate::s3::PurgeScope::Prefix(p),
        }
    }

    /// Drops the variants; returns how many.
    pub fn run(&self, cache: &DerivativeCache) -> Result<u64, CacheError> {
        match self {
            Purge::All => cache.purge_all(),
            Purge::Source(s) => cache.invalidate_source(s),
            Purge::Prefix(p) => cache.purge_prefix(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_name_one_scope() {
        let p = Purge::from_parts;
        assert_eq!(p(true, None, None, None), Ok(Purge::All));
        assert_eq!(
            p(false, Some("b"), None, Some("k")),
            Ok(Purge::Source("s3://b/k".into()))
        );
        assert_eq!(
            p(false, Some("b"), Some("x/"), None),
            Ok(Purge::Prefix("s3://b/x/".into()))
        );
        assert_eq!(
            p(false, Some("b"), None, None),
            Ok(Purge::Prefix("s3://b/".into()))
        );
        for bad in [
            p(false, None, None, None),
            p(true, Some("b"), None, None),
            p(false, Some("b"), Some("p"), Some("k")),
            p(false, None, Some("p"), None),
            p(false, Some(""), None, None),
            p(false, Some("b"), None, Some("")),
        ] {
            assert_eq!(bad, Err(USAGE));
        }
    }
}
