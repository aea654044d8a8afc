//! Resolved image URLs: what a path (and the formats its `Accept` header allows) resolved
//! to the last time it was served through the derivative cache. A repeated request skips
//! the URL grammar, the signature check, the cache-key hash and the header formatting, and
//! goes straight to the source-version check and the cache lookup.
//!
//! Nothing here decides whether a cached variant may be served: the entry records the source
//! version it was resolved at, and a request uses it only while the store still reports that
//! version and the cache still holds the key (both checked on every request, as on the full
//! path). Everything kept is a pure function of the path, the `Accept` class and the
//! configuration, which does not change while the daemon runs; paths whose answer depends on
//! the time (`expires`) are never kept.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::http::{HeaderMap, HeaderValue};

use crate::cache::CacheKey;
use crate::imaging::negotiate::Accepted;

/// At most this many paths are kept; past it the memory is cleared and refills from traffic
/// (each entry is well under a kilobyte).
pub const CAPACITY: usize = 4096;

/// What a path resolved to, for one `Accept` class.
#[derive(Debug)]
pub struct Resolved {
    /// The path was unsigned (`unsafe`, `_`): it may be served only while its bucket is
    /// open to unsigned URLs (checked on every request).
    pub unsigned: bool,
    /// The `s3://` source's bucket and key, and the `s3://bucket/key` id.
    pub bucket: String,
    pub key: String,
    pub source_id: String,
    /// The source version (ETag) the variant was resolved at.
    pub version: String,
    pub cache_key: CacheKey,
    /// The response's quoted ETag (for `If-None-Match`).
    pub etag: String,
    /// The headers of a cache hit's `200`, except `Content-Length` (taken from the body) and
    /// the per-request ones (`X-Request-ID`, `Date`).
    pub headers: HeaderMap<HeaderValue>,
}

/// The kept paths. Each path holds one entry per `Accept` class (see [`accept_class`]).
#[derive(Debug, Default)]
pub struct ResolvedUrls {
    paths: RwLock<HashMap<Box<str>, PerClass>>,
}

const CLASSES: usize = 4;

/// A path's entries, indexed by `Accept` class.
type PerClass = [Option<Arc<Resolved>>; CLASSES];

/// The `Accept` class of a request: which of the negotiable formats it admits, as two bits
/// (AVIF, WebP). Requests in one class get the same variant of a path.
pub fn accept_class(accepted: Accepted) -> u8 {
    u8::from(accepted.avif) << 1 | u8::from(accepted.webp)
}

impl ResolvedUrls {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, path: &str, class: u8) -> Option<Arc<Resolved>> {
        let paths = self.paths.read().unwrap_or_else(|e| e.into_inner());
        paths.get(path)?.get(usize::from(class))?.clone()
    }

    pub fn insert(&self, path: &str, class: u8, resolved: Resolved) {
        let slot = usize::from(class);
        if slot >= CLASSES {
            return;
        }
        let mut paths = self.paths.write().unwrap_or_else(|e| e.into_inner());
        if paths.len() >= CAPACITY && !paths.contains_key(path) {
            paths.clear();
        }
        let entry = paths.entry(path.into()).or_default();
        entry[slot] = Some(Arc::new(resolved));
    }

    /// How many paths are kept.
    pub fn len(&self) -> usize {
        self.paths.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(version: &str) -> Resolved {
        Resolved {
            unsigned: false,
            bucket: "b".into(),
            key: "k.jpg".into(),
            source_id: "s3://b/k.jpg".into(),
            version: version.into(),
            cache_key: CacheKey::new("s3://b/k.jpg", version, "rs:fit:10:10", "webp"),
            etag: "\"e\"".into(),
            headers: HeaderMap::new(),
        }
    }

    #[test]
    fn classes_are_kept_apart_and_replaced() {
        let urls = ResolvedUrls::new();
        urls.insert(
            "/p",
            accept_class(Accepted {
                avif: false,
                webp: true,
            }),
            resolved("v1"),
        );
        assert!(
            urls.get(
                "/p",
                accept_class(Accepted {
                    avif: false,
                    webp: false
                })
            )
            .is_none()
        );
        assert!(
            urls.get(
                "/q",
                accept_class(Accepted {
                    avif: false,
                    webp: true
                })
            )
            .is_none()
        );
        let got = urls.get(
            "/p",
            accept_class(Accepted {
                avif: false,
                webp: true,
            }),
        );
        assert_eq!(got.map(|r| r.version.clone()).as_deref(), Some("v1"));
        urls.insert(
            "/p",
            accept_class(Accepted {
                avif: false,
                webp: true,
            }),
            resolved("v2"),
        );
        let got = urls.get(
            "/p",
            accept_class(Accepted {
                avif: false,
                webp: true,
            }),
        );
        assert_eq!(got.map(|r| r.version.clone()).as_deref(), Some("v2"));
        assert_eq!(urls.len(), 1);
    }

    #[test]
    fn the_memory_is_bounded() {
        let urls = ResolvedUrls::new();
        for i in 0..CAPACITY + 10 {
            urls.insert(&format!("/p{i}"), 0, resolved("v"));
            assert!(urls.len() <= CAPACITY);
        }
        // The newest path survives the clear that made room for it.
        assert!(urls.get(&format!("/p{}", CAPACITY + 9), 0).is_some());
        // An out-of-range class is ignored, not a panic.
        urls.insert("/x", 7, resolved("v"));
        assert!(urls.get("/x", 7).is_none());
    }
}
