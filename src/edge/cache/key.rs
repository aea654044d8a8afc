//! Cache keys. A response is filed under its host, path and query. A response that varies
//! only on `Accept` is filed once per Accept class, the one the image endpoint itself
//! negotiates with (whether the request admits AVIF, WebP, both or neither), so two browsers
//! whose `Accept` strings differ but admit the same formats share one entry. A response that
//! varies on anything else is not cached.
//!
//! What must stay true: two requests get the same key only if the appliance would answer
//! them with the same variant. The class is computed as the image endpoint computes it
//! (`imaging::negotiate::Accepted::read`), assuming every encoder exists: where the
//! appliance lacks one, the edge splits entries the appliance would share, never the
//! reverse.

use sha2::{Digest, Sha256};

use crate::imaging::negotiate::Accepted;

/// What a response's `Vary` header means for caching it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Vary {
    /// No `Vary`: one entry for every request.
    Nothing,
    /// `Vary: Accept` (alone): one entry per Accept class.
    AcceptClass,
    /// `Vary: *`, or a header other than `Accept`: not cached.
    Uncacheable,
}

impl Vary {
    /// Reads every `Vary` header value of a response (field names are case-insensitive;
    /// values may repeat and be comma-separated).
    pub fn read<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut out = Vary::Nothing;
        for name in values
            .into_iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            if name.eq_ignore_ascii_case("accept") {
                out = Vary::AcceptClass;
            } else {
                return Vary::Uncacheable;
            }
        }
        out
    }
}

/// The Accept class of a request: bit 1 AVIF, bit 0 WebP (as the image endpoint's).
pub fn accept_class(accept: Option<&str>) -> u8 {
    let a = Accepted::read(accept, |_| true);
    u8::from(a.avif) << 1 | u8::from(a.webp)
}

/// A cache entry's name: a hash of the host, the path and query, and the Accept class when
/// the response varies on it. Hex, so it also names the entry's file on disk.
pub fn entry_key(host: &str, path_and_query: &str, class: Option<u8>) -> String {
    let mut h = Sha256::new();
    // Lengths first, so no two (host, path) pairs hash the same bytes.
    let host = host.to_ascii_lowercase();
    h.update((host.len() as u64).to_be_bytes());
    h.update(host.as_bytes());
    h.update((path_and_query.len() as u64).to_be_bytes());
    h.update(path_and_query.as_bytes());
    match class {
        None => h.update([0xff]),
        Some(c) => h.update([c]),
    }
    hex::encode(h.finalize())
}

/// The key the variants of one URL share before the Accept class is known (the lookup
/// starts here, finds whether the URL's responses vary, then reads the class's entry).
pub fn url_key(host: &str, path_and_query: &str) -> String {
    entry_key(host, path_and_query, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vary_accept_alone_is_cached_per_class_anything_else_is_not() {
        assert_eq!(Vary::read([]), Vary::Nothing);
        assert_eq!(Vary::read(["Accept"]), Vary::AcceptClass);
        assert_eq!(Vary::read(["accept", " ACCEPT "]), Vary::AcceptClass);
        assert_eq!(Vary::read(["Accept, Cookie"]), Vary::Uncacheable);
        assert_eq!(Vary::read(["*"]), Vary::Uncacheable);
        assert_eq!(Vary::read(["Accept", "User-Agent"]), Vary::Uncacheable);
        assert_eq!(Vary::read([" , "]), Vary::Nothing);
    }

    #[test]
    fn browsers_that_admit_the_same_formats_share_a_class() {
        let chrome = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
        let firefox = "image/avif,image/webp,*/*";
        assert_eq!(accept_class(Some(chrome)), accept_class(Some(firefox)));
        assert_eq!(accept_class(Some(chrome)), 0b11);
        assert_eq!(accept_class(Some("image/webp,*/*")), 0b01);
        assert_eq!(accept_class(Some("image/avif;q=0, image/webp")), 0b01);
        // A wildcard admits nothing in particular, as at the image endpoint.
        assert_eq!(accept_class(Some("*/*")), 0);
        assert_eq!(accept_class(None), 0);
    }

    #[test]
    fn keys_separate_hosts_paths_and_classes_and_ignore_host_case() {
        let k = |h, p, c| entry_key(h, p, c);
        assert_eq!(k("A.example", "/x", None), k("a.example", "/x", None));
        assert_ne!(k("a.example", "/x", None), k("b.example", "/x", None));
        assert_ne!(k("a.example", "/x", None), k("a.example", "/x?y", None));
        assert_ne!(k("a.example", "/x", Some(0)), k("a.example", "/x", Some(1)));
        assert_ne!(k("a.example", "/x", None), k("a.example", "/x", Some(0)));
        // The boundary between host and path is part of the key.
        assert_ne!(k("a.exam", "ple/x", None), k("a.example", "/x", None));
        assert_eq!(k("a", "/", None).len(), 64);
    }
}
