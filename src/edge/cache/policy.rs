//! Whether and for how long the edge may keep and reuse a response: RFC 9111 for a shared
//! cache through `http-cache-semantics` (max-age, s-maxage, private, no-store, no-cache,
//! Expires, Set-Cookie, immutable, Authorization), with RFC 5861's staleness extensions
//! ([`super::directives`]) on top.
//!
//! What must stay true:
//! - only what the origin marks cacheable is kept: no heuristic freshness, so a response
//!   without `max-age`, `s-maxage` or `Expires` is never stored, and neither is one that
//!   sets a cookie unless it is `public`;
//! - a response that varies on anything but `Accept` is never stored ([`super::key::Vary`]);
//! - requests are compared by Accept class, not by their raw `Accept` string: the request is
//!   normalised ([`normalize`]) before the policy sees it, so the crate's own `Vary` check
//!   agrees with the cache key.

use std::time::{Duration, SystemTime};

use http::{HeaderValue, header, request, response};
use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy};

use super::directives::{self, Stale};
use super::key::{self, Vary};

/// A shared cache that trusts only explicit freshness.
fn options() -> CacheOptions {
    CacheOptions {
        shared: true,
        cache_heuristic: 0.0,
        immutable_min_time_to_live: Duration::ZERO,
        ignore_cargo_cult: false,
    }
}

/// Replaces the request's `Accept` with its class's canonical form (or removes it for the
/// class that admits neither format), so requests of one class look alike to the policy.
pub fn normalize(req: &mut request::Parts) {
    let class = key::accept_class(
        req.headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    let canonical = match class {
        0b11 => Some("image/avif,image/webp"),
        0b10 => Some("image/avif"),
        0b01 => Some("image/webp"),
        _ => None,
    };
    match canonical {
        Some(v) => {
            req.headers
                .insert(header::ACCEPT, HeaderValue::from_static(v));
        }
        None => {
            req.headers.remove(header::ACCEPT);
        }
    }
}

/// A stored response's policy.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Stored {
    pub policy: CachePolicy,
    pub vary: Vary,
    pub stale: Stale,
    /// How long the response was fresh for when it was stored (its age then plus the
    /// freshness it had left).
    pub lifetime: Duration,
    /// The stored status and headers, served with a current `Age` when stale.
    #[serde(with = "http_serde::status_code")]
    pub status: http::StatusCode,
    #[serde(with = "http_serde::header_map")]
    pub headers: http::HeaderMap,
}

/// What to do with a request that found a stored entry.
#[derive(Debug)]
pub enum Decision {
    /// Serve the entry with these headers (`Age` set); `ttl` is the freshness left.
    Fresh {
        head: response::Parts,
        ttl: Duration,
    },
    /// The entry is stale but within `stale-while-revalidate`: serve it now, and refresh it
    /// in the background with `request` (conditional where the entry has validators).
    ServeAndRevalidate {
        head: response::Parts,
        request: request::Parts,
    },
    /// Ask the appliance first, with `request` (conditional where the entry has
    /// validators, so a 304 refreshes the entry without a body).
    Revalidate { request: request::Parts },
}

impl Stored {
    /// The policy for `res` answering `req` (normalised), when the edge may store it.
    pub fn new(req: &request::Parts, res: &response::Parts, now: SystemTime) -> Option<Self> {
        let vary = Vary::read(
            res.headers
                .get_all(header::VARY)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        if vary == Vary::Uncacheable {
            return None;
        }
        let policy = CachePolicy::new_options(req, res, now, options());
        let ttl = policy.time_to_live(now);
        if !policy.is_storable() || ttl.is_zero() {
            return None;
        }
        let lifetime = ttl + policy.age(now);
        let stale = directives::stale(
            res.headers
                .get_all(header::CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        Some(Self {
            policy,
            vary,
            stale,
            lifetime,
            status: res.status,
            headers: res.headers.clone(),
        })
    }

    /// How `req` (normalised) may use the entry at `now`.
    pub fn decide(&self, req: &request::Parts, now: SystemTime) -> Decision {
        match self.policy.before_request(req, now) {
            BeforeRequest::Fresh(head) => Decision::Fresh {
                head,
                ttl: self.policy.time_to_live(now),
            },
            BeforeRequest::Stale { request, matches } => {
                // `matches`: the request is for the stored resource (it is not when the
                // client itself asked for a fresh answer differently, or varies).
                let within = self
                    .stale
                    .while_revalidate
                    .is_some_and(|allowed| self.stale_by(now) <= allowed);
                if matches && within && !asks_for_fresh(&req.headers) {
                    Decision::ServeAndRevalidate {
                        head: self.head(now),
                        request,
                    }
                } else {
                    Decision::Revalidate { request }
                }
            }
        }
    }

    /// Whether the entry may stand in for a failed appliance (`stale-if-error`), and with
    /// which headers.
    pub fn on_error(&self, now: SystemTime) -> Option<response::Parts> {
        let allowed = self.stale.if_error?;
        (self.stale_by(now) <= allowed).then(|| self.head(now))
    }

    /// The appliance's answer to a revalidation: a 304 refreshes the policy (and the stored
    /// headers) and keeps the body; anything else replaces the entry.
    pub fn refresh(
        &self,
        req: &request::Parts,
        res: &response::Parts,
        now: SystemTime,
    ) -> Refreshed {
        match self.policy.after_response(req, res, now) {
            AfterResponse::NotModified(policy, head) => {
                let ttl = policy.time_to_live(now);
                let lifetime = ttl + policy.age(now);
                Refreshed::NotModified(
                    Box::new(Self {
                        policy,
                        vary: self.vary,
                        stale: self.stale,
                        lifetime,
                        status: self.status,
                        headers: head.headers.clone(),
                    }),
                    head,
                )
            }
            AfterResponse::Modified(..) => Refreshed::Modified,
        }
    }

    /// How long past its freshness the entry is (zero while fresh).
    pub fn stale_by(&self, now: SystemTime) -> Duration {
        self.policy.age(now).saturating_sub(self.lifetime)
    }

    /// The stored status and headers as they are served now, with `Age`.
    fn head(&self, now: SystemTime) -> response::Parts {
        let mut head = http::Response::new(()).into_parts().0;
        head.status = self.status;
        head.headers = self.headers.clone();
        head.headers.insert(
            header::AGE,
            HeaderValue::from(self.policy.age(now).as_secs()),
        );
        head
    }
}

/// The appliance's answer to a revalidation.
#[derive(Debug)]
pub enum Refreshed {
    /// 304: keep the body, with this policy and these headers.
    NotModified(Box<Stored>, response::Parts),
    /// A new response: store it (or drop the entry) as a miss would.
    Modified,
}

/// The client sent `Cache-Control: no-cache` (or `max-age=0`): it wants the appliance's
/// word, not a stale copy.
pub fn asks_for_fresh(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|d| d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("max-age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + secs)
    }

    fn req(accept: Option<&str>, extra: &[(&str, &str)]) -> request::Parts {
        let mut b = http::Request::builder().uri("/img/a.jpg");
        if let Some(a) = accept {
            b = b.header("accept", a);
        }
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        let mut parts = b
            .body(())
            .map(|r| r.into_parts().0)
            .unwrap_or_else(|_| http::Request::new(()).into_parts().0);
        normalize(&mut parts);
        parts
    }

    fn res(status: u16, headers: &[(&str, &str)]) -> response::Parts {
        let mut b = http::Response::builder()
            .status(status)
            .header("date", httpdate(at(0)));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(())
            .map(|r| r.into_parts().0)
            .unwrap_or_else(|_| http::Response::new(()).into_parts().0)
    }

    fn httpdate(t: SystemTime) -> String {
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        time::OffsetDateTime::from_unix_timestamp(secs as i64)
            .ok()
            .and_then(|d| {
                d.format(&time::format_description::well_known::Rfc2822)
                    .ok()
            })
            .unwrap_or_default()
            .replace("+0000", "GMT")
    }

    fn stored(headers: &[(&str, &str)]) -> Option<Stored> {
        Stored::new(&req(None, &[]), &res(200, headers), at(0))
    }

    #[test]
    fn only_what_the_origin_marks_cacheable_is_stored() {
        assert!(stored(&[("cache-control", "public, max-age=60")]).is_some());
        assert!(stored(&[("cache-control", "max-age=0, s-maxage=60")]).is_some());
        assert!(stored(&[("cache-control", "max-age=31536000, immutable")]).is_some());
        let expires = httpdate(at(3600));
        assert!(stored(&[("expires", expires.as_str())]).is_some());
        // No explicit freshness: not stored (no heuristic), even for a 200 with a validator.
        assert!(
            stored(&[
                ("etag", "\"x\""),
                ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")
            ])
            .is_none()
        );
        for refused in [
            "no-store",
            "private, max-age=60",
            "no-cache, max-age=0",
            "max-age=60, s-maxage=0",
        ] {
            assert!(stored(&[("cache-control", refused)]).is_none(), "{refused}");
        }
        // A cookie is kept only when the origin says the response is public.
        assert!(stored(&[("cache-control", "max-age=60"), ("set-cookie", "a=b")]).is_none());
        assert!(
            stored(&[
                ("cache-control", "public, max-age=60"),
                ("set-cookie", "a=b")
            ])
            .is_some()
        );
        // Anything but Vary: Accept bypasses the cache.
        assert!(stored(&[("cache-control", "max-age=60"), ("vary", "Accept")]).is_some());
        assert!(stored(&[("cache-control", "max-age=60"), ("vary", "Accept, Cookie")]).is_none());
        assert!(stored(&[("cache-control", "max-age=60"), ("vary", "*")]).is_none());
        // Errors only as their headers allow.
        let r = req(None, &[]);
        assert!(Stored::new(&r, &res(404, &[("cache-control", "no-cache")]), at(0)).is_none());
        assert!(Stored::new(&r, &res(404, &[("cache-control", "max-age=30")]), at(0)).is_some());
        // A request with Authorization is not stored by a shared cache without `public`.
        let authed = req(None, &[("authorization", "Bearer x")]);
        assert!(
            Stored::new(
                &authed,
                &res(200, &[("cache-control", "max-age=60")]),
                at(0)
            )
            .is_none()
        );
    }

    #[test]
    fn fresh_then_revalidated_with_validators() {
        let s = stored(&[("cache-control", "max-age=60"), ("etag", "\"v1\"")]).expect("stored");
        match s.decide(&req(None, &[]), at(10)) {
            Decision::Fresh { head, ttl } => {
                assert_eq!(ttl, Duration::from_secs(50));
                assert_eq!(head.headers["age"], "10");
            }
            other => panic!("expected fresh, got {other:?}"),
        }
        match s.decide(&req(None, &[]), at(61)) {
            Decision::Revalidate { request } => {
                assert_eq!(request.headers["if-none-match"], "\"v1\"");
            }
            other => panic!("expected revalidation, got {other:?}"),
        }
        // A client asking for a fresh answer goes to the appliance even while fresh.
        assert!(matches!(
            s.decide(&req(None, &[("cache-control", "no-cache")]), at(10)),
            Decision::Revalidate { .. }
        ));
    }

    #[test]
    fn a_304_refreshes_the_entry_without_a_body() {
        let s = stored(&[("cache-control", "max-age=60"), ("etag", "\"v1\"")]).expect("stored");
        let Decision::Revalidate { request } = s.decide(&req(None, &[]), at(100)) else {
            panic!("expected revalidation");
        };
        let not_modified = {
            let mut r = res(304, &[("cache-control", "max-age=60"), ("etag", "\"v1\"")]);
            r.headers.insert(
                header::DATE,
                HeaderValue::from_str(&httpdate(at(100))).unwrap_or(HeaderValue::from_static("")),
            );
            r
        };
        match s.refresh(&request, &not_modified, at(100)) {
            Refreshed::NotModified(fresh, _) => {
                assert!(matches!(
                    fresh.decide(&req(None, &[]), at(110)),
                    Decision::Fresh { .. }
                ));
            }
            Refreshed::Modified => panic!("a 304 must keep the body"),
        }
        let changed = res(200, &[("cache-control", "max-age=60"), ("etag", "\"v2\"")]);
        assert!(matches!(
            s.refresh(&request, &changed, at(100)),
            Refreshed::Modified
        ));
    }

    #[test]
    fn browsers_in_one_accept_class_share_the_entry_others_do_not() {
        let chrome = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
        let firefox = "image/avif,image/webp,*/*";
        let s = Stored::new(
            &req(Some(chrome), &[]),
            &res(200, &[("cache-control", "max-age=60"), ("vary", "Accept")]),
            at(0),
        )
        .expect("stored");
        assert!(matches!(
            s.decide(&req(Some(firefox), &[]), at(1)),
            Decision::Fresh { .. }
        ));
        assert!(!matches!(
            s.decide(&req(Some("image/webp,*/*"), &[]), at(1)),
            Decision::Fresh { .. }
        ));
    }

    #[test]
    fn staleness_extensions_bound_what_is_served_stale() {
        let s = stored(&[(
            "cache-control",
            "max-age=10, stale-while-revalidate=30, stale-if-error=60",
        )])
        .expect("stored");
        match s.decide(&req(None, &[]), at(25)) {
            Decision::ServeAndRevalidate { head, .. } => assert_eq!(head.headers["age"], "25"),
            other => panic!("expected stale-while-revalidate, got {other:?}"),
        }
        assert!(matches!(
            s.decide(&req(None, &[]), at(41)),
            Decision::Revalidate { .. }
        ));
        assert!(s.on_error(at(60)).is_some());
        assert!(s.on_error(at(71)).is_none());
        // Without the extensions, nothing is served stale.
        let strict = stored(&[("cache-control", "max-age=10")]).expect("stored");
        assert!(matches!(
            strict.decide(&req(None, &[]), at(11)),
            Decision::Revalidate { .. }
        ));
        assert!(strict.on_error(at(11)).is_none());
    }
}
