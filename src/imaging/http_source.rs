//! `http://` and `https://` sources, fenced against server-side request forgery. What must
//! stay true:
//!
//! * A URL is fetched only when it matches an `[images] allowed_sources` pattern
//!   (imgproxy's `IMGPROXY_ALLOWED_SOURCES` rules: a URL prefix, `*` matching any run of
//!   characters except `/`), at the start and after every redirect.
//! * Unless `allow_private_sources` is set, no connection is made to a loopback, private,
//!   link-local, unique-local, carrier-grade NAT, multicast or unspecified address. The check
//!   runs on the resolved addresses (our own resolver, so a name that resolves to 127.0.0.1
//!   is refused) and on IP literals in the URL, which bypass resolution; every redirect hop
//!   goes through both. No proxy from the environment is used (it would hide the target).
//! * The download has a deadline and a size cap; a source larger than the cap is refused
//!   without being read to its end.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

use crate::imaging::source::{SourceError, SourceImage};

/// The allow-list, compiled.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    /// Each pattern as literal pieces between `*`s.
    patterns: Vec<Vec<String>>,
}

impl AllowList {
    pub fn new(patterns: &[String]) -> Self {
        Self {
            patterns: patterns
                .iter()
                .map(|p| p.split('*').map(str::to_owned).collect())
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `url` starts with one of the patterns.
    pub fn permits(&self, url: &str) -> bool {
        self.patterns.iter().any(|p| prefix_match(p, url))
    }
}

/// Whether `text` starts with the pattern `pieces` joined by `*` (`*`: any run without `/`).
fn prefix_match(pieces: &[String], text: &str) -> bool {
    let Some((first, rest)) = pieces.split_first() else {
        return true;
    };
    let Some(tail) = text.strip_prefix(first.as_str()) else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    // `*` then the next piece: try every split point within the current `/`-free run.
    let run = tail.find('/').unwrap_or(tail.len());
    (0..=run).any(|i| tail.is_char_boundary(i) && prefix_match(rest, &tail[i..]))
}

/// Why an address is off limits, or `None` when it is a public address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            forbidden_v6(v6)
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        Some("broadcast, multicast or reserved")
    } else if a == 100 && (64..128).contains(&b) {
        Some("carrier-grade NAT (shared)")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if first & 0xfe00 == 0xfc00 {
        Some("unique-local (private)")
    } else {
        None
    }
}

/// Resolves names with the system resolver and drops forbidden addresses.
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut reasons = Vec::new();
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match forbidden_reason(a.ip()) {
                    Some(r) => {
                        reasons.push(format!("{} ({r})", a.ip()));
                        false
                    }
                    None => true,
                })
                .collect();
            if allowed.is_empty() {
                let e: Box<dyn std::error::Error + Send + Sync> = format!(
                    "{host} resolves only to addresses sources may not use: {}",
                    reasons.join(", ")
                )
                .into();
                return Err(e);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Marker in error chains for a refused address, so it maps to "not allowed".
const FORBIDDEN_MARK: &str = "addresses sources may not use";

/// The HTTP source fetcher.
pub struct HttpSource {
    client: reqwest::Client,
    allow: Arc<AllowList>,
    allow_private: bool,
}

impl HttpSource {
    pub fn new(
        allowed_sources: &[String],
        allow_private: bool,
        timeout: Duration,
    ) -> Result<Self, SourceError> {
        let allow = Arc::new(AllowList::new(allowed_sources));
        let redirect_allow = allow.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 10 {
                return attempt.error("too many redirects");
            }
            let url = attempt.url().as_str().to_owned();
            if !redirect_allow.permits(&url) {
                return attempt.error(format!("redirect to {url} is not in allowed_sources"));
            }
            if !allow_private && let Some(reason) = literal_forbidden(attempt.url()) {
                return attempt.error(format!("redirect to {url}: {FORBIDDEN_MARK} ({reason})"));
            }
            attempt.follow()
        });
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(policy)
            .no_proxy()
            .user_agent(concat!("pixelport/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(GuardedResolver));
        }
        let client = builder
            .build()
            .map_err(|e| SourceError::Internal(format!("HTTP client: {e}")))?;
        Ok(Self {
            client,
            allow,
            allow_private,
        })
    }

    /// Downloads `url` (at most `max` bytes).
    pub async fn fetch(&self, url: &str, max: u64) -> Result<SourceImage, SourceError> {
        let not_allowed = |why: String| SourceError::NotAllowed(url.to_owned(), why);
        if self.allow.is_empty() {
            return Err(not_allowed(
                "HTTP sources are disabled ([images] allowed_sources is empty)".into(),
            ));
        }
        if !self.allow.permits(url) {
            return Err(not_allowed(
                "it matches no [images] allowed_sources pattern".into(),
            ));
        }
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| SourceError::Invalid(url.to_owned(), e.to_string()))?;
        if !self.allow_private
            && let Some(reason) = literal_forbidden(&parsed)
        {
            return Err(not_allowed(format!("{FORBIDDEN_MARK} ({reason})")));
        }
        let mut resp = self
            .client
            .get(parsed)
            .send()
            .await
            .map_err(|e| classify(url, &e))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
            return Err(SourceError::NotFound(url.to_owned()));
        }
        if !status.is_success() {
            return Err(SourceError::Upstream(format!("{url} answered {status}")));
        }
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(SourceError::TooLarge { max });
        }
        let last_modified_ms = resp
            .headers()
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date)
            .unwrap_or(0);
        let mut buf = BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| classify(url, &e))? {
            if (buf.len() + chunk.len()) as u64 > max {
                return Err(SourceError::TooLarge { max });
            }
            buf.extend_from_slice(&chunk);
        }
        let bytes: Bytes = buf.freeze();
        // The content decides the version: a changed image always gets a new one.
        let etag = hex::encode(&Sha256::digest(&bytes)[..16]);
        Ok(SourceImage {
            bytes,
            etag,
            last_modified_ms,
        })
    }
}

/// The reason an IP-literal host is forbidden (names are checked by the resolver).
fn literal_forbidden(url: &reqwest::Url) -> Option<&'static str> {
    match url.host()? {
        url::Host::Ipv4(ip) => forbidden_reason(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => forbidden_reason(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

fn classify(url: &str, e: &reqwest::Error) -> SourceError {
    let chain = error_chain(e);
    if chain.contains(FORBIDDEN_MARK) || chain.contains("allowed_sources") {
        return SourceError::NotAllowed(url.to_owned(), chain);
    }
    if e.is_timeout() {
        return SourceError::Timeout;
    }
    SourceError::Upstream(chain)
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn parse_http_date(s: &str) -> Option<i64> {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let t = time::PrimitiveDateTime::parse(s, &fmt).ok()?;
    Some(t.assume_utc().unix_timestamp() * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_patterns() {
        let l = AllowList::new(&[
            "https://images.example.com/".into(),
            "https://*.cdn.example/".into(),
            "http://127.0.0.1:*/".into(),
        ]);
        assert!(l.permits("https://images.example.com/a/b.jpg"));
        assert!(!l.permits("https://images.example.com.evil/a.jpg"));
        assert!(!l.permits("http://images.example.com/a.jpg"));
        assert!(l.permits("https://a.cdn.example/x.png"));
        assert!(l.permits("https://a-b.cdn.example/x.png"));
        // `*` never crosses a `/`
        assert!(!l.permits("https://evil.com/.cdn.example/x.png"));
        assert!(l.permits("http://127.0.0.1:8000/x.png"));
        assert!(!AllowList::new(&[]).permits("https://images.example.com/"));
    }

    #[test]
    fn forbidden_addresses() {
        for (ip, forbidden) in [
            ("127.0.0.1", true),
            ("10.1.2.3", true),
            ("172.16.0.1", true),
            ("192.168.1.1", true),
            ("169.254.169.254", true),
            ("100.64.0.1", true),
            ("0.0.0.0", true),
            ("224.0.0.1", true),
            ("::1", true),
            ("fe80::1", true),
            ("fd00::1", true),
            ("::ffff:127.0.0.1", true),
            ("8.8.8.8", false),
            ("2001:4860:4860::8888", false),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(forbidden_reason(ip).is_some(), forbidden, "{ip}");
        }
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777_000)
        );
    }
}
