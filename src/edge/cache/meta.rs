//! What an entry's head holds: its policy ([`Stored`]), the URL it answers (for purges by
//! URL, prefix or hostname) and its surrogate tags (for purges by source). Serialised as
//! JSON into the store's opaque head.
//!
//! What must stay true: a head that does not decode is a miss, never an error a client sees.

use serde::{Deserialize, Serialize};

use super::policy::Stored;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub stored: Stored,
    /// The hostname, lowercase.
    pub host: String,
    /// The path and query, as requested.
    pub path: String,
    /// The surrogate tags the appliance named (`s3://bucket/key`).
    pub tags: Vec<String>,
}

impl Meta {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn a_head_round_trips_and_garbage_is_none() {
        let req = http::Request::builder()
            .uri("/x")
            .body(())
            .map(|r| r.into_parts().0)
            .expect("request");
        let res = http::Response::builder()
            .header("cache-control", "max-age=60, stale-if-error=30")
            .header("etag", "\"e\"")
            .body(())
            .map(|r| r.into_parts().0)
            .expect("response");
        let stored = Stored::new(&req, &res, SystemTime::now()).expect("storable");
        let meta = Meta {
            stored,
            host: "a.example".into(),
            path: "/x?y".into(),
            tags: vec!["s3://b/k".into()],
        };
        let back = Meta::decode(&meta.encode()).expect("decodes");
        assert_eq!(back.host, "a.example");
        assert_eq!(back.tags, meta.tags);
        assert_eq!(back.stored.headers["etag"], "\"e\"");
        assert_eq!(back.stored.stale, meta.stored.stale);
        assert!(Meta::decode(b"{").is_none());
        assert!(Meta::decode(b"").is_none());
    }
}
