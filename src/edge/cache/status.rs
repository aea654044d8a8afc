//! The RFC 9211 `Cache-Status` header on every response the edge sends, under the cache's
//! name `pixelport-edge`: `hit` with the freshness left (`ttl`), or `fwd=` the reason the
//! request went to the appliance (`miss`, `stale`, `request` or `bypass`), with `stored`
//! when the answer was kept and `collapsed` when it was shared with concurrent requests for
//! the same key.

use http::HeaderValue;

/// The cache's name in `Cache-Status`.
pub const CACHE_NAME: &str = "pixelport-edge";

/// Why a request went to the appliance (RFC 9211 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// Nothing usable was cached.
    Miss,
    /// An entry was cached but stale, and was revalidated or refetched.
    Stale,
    /// The request itself asked for a fresh answer (`Cache-Control: no-cache`).
    Request,
    /// The cache does not apply to this request (method, door or configuration).
    Bypass,
}

impl Forward {
    fn as_str(self) -> &'static str {
        match self {
            Forward::Miss => "miss",
            Forward::Stale => "stale",
            Forward::Request => "request",
            Forward::Bypass => "bypass",
        }
    }
}

/// What the cache did for one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from the cache; `ttl` is the freshness left in seconds (negative: stale,
    /// served under `stale-while-revalidate` or `stale-if-error`).
    Hit { ttl: i64 },
    /// Went to the appliance.
    Forwarded {
        why: Forward,
        /// The response was stored.
        stored: bool,
        /// The response was shared with other requests for the same key.
        collapsed: bool,
        /// The appliance answered 304 and the cached entry was refreshed (and served).
        status_304: bool,
    },
}

impl CacheStatus {
    /// The header value.
    pub fn header(&self) -> HeaderValue {
        let text = match *self {
            CacheStatus::Hit { ttl } => format!("{CACHE_NAME}; hit; ttl={ttl}"),
            CacheStatus::Forwarded {
                why,
                stored,
                collapsed,
                status_304,
            } => {
                let mut s = format!("{CACHE_NAME}; fwd={}", why.as_str());
                if status_304 {
                    s.push_str("; fwd-status=304");
                }
                if stored {
                    s.push_str("; stored");
                }
                if collapsed {
                    s.push_str("; collapsed");
                }
                s
            }
        };
        // Only ASCII letters, digits and `;=- ` are written above.
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(CACHE_NAME))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(why: Forward, stored: bool, collapsed: bool, status_304: bool) -> String {
        CacheStatus::Forwarded {
            why,
            stored,
            collapsed,
            status_304,
        }
        .header()
        .to_str()
        .map(str::to_owned)
        .unwrap_or_default()
    }

    #[test]
    fn values_follow_rfc_9211() {
        assert_eq!(
            CacheStatus::Hit { ttl: 120 }.header(),
            "pixelport-edge; hit; ttl=120"
        );
        assert_eq!(
            CacheStatus::Hit { ttl: -3 }.header(),
            "pixelport-edge; hit; ttl=-3"
        );
        assert_eq!(
            fwd(Forward::Miss, true, false, false),
            "pixelport-edge; fwd=miss; stored"
        );
        assert_eq!(
            fwd(Forward::Miss, true, true, false),
            "pixelport-edge; fwd=miss; stored; collapsed"
        );
        assert_eq!(
            fwd(Forward::Stale, true, false, true),
            "pixelport-edge; fwd=stale; fwd-status=304; stored"
        );
        assert_eq!(
            fwd(Forward::Request, false, false, false),
            "pixelport-edge; fwd=request"
        );
        assert_eq!(
            fwd(Forward::Bypass, false, false, false),
            "pixelport-edge; fwd=bypass"
        );
    }
}
