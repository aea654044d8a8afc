//! The edge's protection (`[edge.protection]`): rules that refuse a request before it costs
//! the appliance anything, and token-bucket rate limits (the `governor` crate, GCRA).
//!
//! In order: CIDR allow/deny, URL length, methods per hostname, denied path patterns,
//! signed image URLs only, the global limit, the per-client limit (by IPv4 address or IPv6
//! /64), the per-hostname concurrency limit. A refusal is 403 (rules), 405 (method), 414
//! (URL length) or 429 with `Retry-After` (limits), with a JSON body naming the rule, and is
//! counted by rule.
//!
//! What must stay true: memory stays bounded whatever the clients: per-client keys are
//! hashed into at most `max_clients` buckets, and idle buckets are dropped every 10 s; the
//! client is the TCP peer unless that peer is a trusted proxy, whose forwarding header is
//! then believed.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use http::{HeaderMap, Method};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::tunnel::frame::Door;

/// `[edge.protection]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProtectionConfig {
    /// Requests per second one client (IPv4 address, IPv6 /64) may make; 0: no limit.
    pub per_client_rate: u32,
    /// How many requests a client may make at once above its rate.
    pub per_client_burst: u32,
    /// Requests per second for the whole edge; 0: no limit.
    pub global_rate: u32,
    pub global_burst: u32,
    /// Per-client buckets kept at most (clients beyond share buckets).
    pub max_clients: u32,
    /// Requests in flight at once per hostname; 0: no limit.
    pub per_host_concurrency: u32,
    /// When not empty, only clients in these networks are served.
    pub allow_cidrs: Vec<String>,
    /// Clients in these networks are refused.
    pub deny_cidrs: Vec<String>,
    /// Longer request targets (path and query) are refused with 414.
    pub max_url_length: u32,
    /// Path patterns refused with 403 (`*` matches any run of characters).
    pub deny_paths: Vec<String>,
    /// Methods allowed per hostname (others get 405); hostnames not named allow all.
    pub allowed_methods: std::collections::BTreeMap<String, Vec<String>>,
    /// On image hostnames, refuse unsigned URLs (`/unsafe/...`, `/_/...`) at the edge.
    pub signed_only: bool,
    /// Peers (CIDRs) whose `X-Forwarded-For` names the real client (a load balancer in
    /// front of the edge).
    pub trusted_proxies: Vec<String>,
}

impl Default for ProtectionConfig {
    fn default() -> Self {
        Self {
            per_client_rate: 500,
            per_client_burst: 1000,
            global_rate: 0,
            global_burst: 0,
            max_clients: 100_000,
            per_host_concurrency: 0,
            allow_cidrs: Vec::new(),
            deny_cidrs: Vec::new(),
            max_url_length: 8192,
            deny_paths: Vec::new(),
            allowed_methods: Default::default(),
            signed_only: false,
            trusted_proxies: Vec::new(),
        }
    }
}

fn cidrs(list: &[String], key: &'static str) -> Result<Vec<IpNet>, (&'static str, String)> {
    list.iter()
        .map(|c| {
            c.parse::<IpNet>()
                .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| (key, format!("`{c}` is not a network like 192.0.2.0/24")))
        })
        .collect()
}

impl ProtectionConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        cidrs(&self.allow_cidrs, "protection.allow_cidrs")?;
        cidrs(&self.deny_cidrs, "protection.deny_cidrs")?;
        cidrs(&self.trusted_proxies, "protection.trusted_proxies")?;
        for (host, methods) in &self.allowed_methods {
            for m in methods {
                Method::from_bytes(m.as_bytes()).map_err(|_| {
                    (
                        "protection.allowed_methods",
                        format!("`{m}` (for {host}) is not a method"),
                    )
                })?;
            }
        }
        if self.per_client_rate > 0 && self.max_clients == 0 {
            return Err(("protection.max_clients", "must be above 0".into()));
        }
        Ok(())
    }
}

/// Why a request was refused; the metrics label is [`Refusal::rule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Cidr,
    UrlLength,
    Method,
    Path,
    Unsigned,
    Global(Duration),
    Client(Duration),
    Concurrency,
}

impl Refusal {
    pub fn rule(self) -> &'static str {
        match self {
            Refusal::Cidr => "cidr",
            Refusal::UrlLength => "url_length",
            Refusal::Method => "method",
            Refusal::Path => "path",
            Refusal::Unsigned => "unsigned",
            Refusal::Global(_) => "global_rate",
            Refusal::Client(_) => "client_rate",
            Refusal::Concurrency => "host_concurrency",
        }
    }

    pub fn status(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Refusal::Cidr | Refusal::Path | Refusal::Unsigned => S::FORBIDDEN,
            Refusal::UrlLength => S::URI_TOO_LONG,
            Refusal::Method => S::METHOD_NOT_ALLOWED,
            Refusal::Global(_) | Refusal::Client(_) | Refusal::Concurrency => S::TOO_MANY_REQUESTS,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::Cidr => "your network is not allowed on this edge",
            Refusal::UrlLength => "the URL is too long",
            Refusal::Method => "this method is not allowed on this hostname",
            Refusal::Path => "this path is not served",
            Refusal::Unsigned => "this edge serves only signed image URLs",
            Refusal::Global(_) => "the edge is at its request rate limit; retry later",
            Refusal::Client(_) => "too many requests from your address; retry later",
            Refusal::Concurrency => "too many requests in flight for this hostname; retry later",
        }
    }

    /// Seconds for `Retry-After` (limits only).
    pub fn retry_after(self) -> Option<u64> {
        match self {
            Refusal::Global(d) | Refusal::Client(d) => {
                Some(d.as_secs() + u64::from(d.subsec_nanos() > 0))
            }
            Refusal::Concurrency => Some(1),
            _ => None,
        }
        .map(|s| s.max(1))
    }
}

/// Whether `path` matches `pattern`, where `*` matches any run of characters.
pub fn glob(pattern: &str, path: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == path;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !path.starts_with(first) || path.len() < first.len() + last.len() || !path.ends_with(last) {
        return false;
    }
    let mut rest = &path[first.len()..path.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The bucket a client falls in: its IPv4 address or IPv6 /64, hashed into `buckets`.
pub fn client_bucket(ip: IpAddr, buckets: u32) -> u64 {
    let prefix: u128 = match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => (u128::from(v6) >> 64) << 64 | 1,
        },
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    prefix.hash(&mut h);
    h.finish() % u64::from(buckets.max(1))
}

/// A request counted against its hostname's concurrency until dropped (with the response).
pub struct HostSlot(Arc<AtomicUsize>);

impl Drop for HostSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Shield {
    cfg: ProtectionConfig,
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    trusted: Vec<IpNet>,
    methods: HashMap<String, Vec<Method>>,
    per_client: Option<DefaultKeyedRateLimiter<u64>>,
    global: Option<DefaultDirectRateLimiter>,
    per_host: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    /// Made once: making a clock reads the CPU's features (CPUID, which a VM traps), and
    /// doing so per request cost a third of the edge's CPU in the cache benchmark.
    clock: DefaultClock,
}

fn quota(rate: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst.max(rate.get())).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

impl Shield {
    /// The shield for a checked config (see [`ProtectionConfig::validate`]).
    pub fn new(cfg: &ProtectionConfig) -> Result<Self, (&'static str, String)> {
        cfg.validate()?;
        let methods = cfg
            .allowed_methods
            .iter()
            .map(|(h, ms)| {
                (
                    h.to_ascii_lowercase(),
                    ms.iter()
                        .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
                        .collect(),
                )
            })
            .collect();
        Ok(Self {
            allow: cidrs(&cfg.allow_cidrs, "protection.allow_cidrs")?,
            deny: cidrs(&cfg.deny_cidrs, "protection.deny_cidrs")?,
            trusted: cidrs(&cfg.trusted_proxies, "protection.trusted_proxies")?,
            methods,
            per_client: quota(cfg.per_client_rate, cfg.per_client_burst)
                .map(DefaultKeyedRateLimiter::keyed),
            global: quota(cfg.global_rate, cfg.global_burst).map(DefaultDirectRateLimiter::direct),
            per_host: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
            cfg: cfg.clone(),
        })
    }

    /// The client: the peer, or for a trusted proxy the last address of its
    /// `X-Forwarded-For`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        if !self.trusted.iter().any(|n| n.contains(&peer)) {
            return peer;
        }
        crate::server::forwarded_client(headers).unwrap_or(peer)
    }

    /// Checks a request; on success, the hostname's concurrency slot to hold until the
    /// response is done.
    pub fn check(
        &self,
        client: IpAddr,
        host: &str,
        method: &Method,
        target: &str,
        door: Option<Door>,
    ) -> Result<Option<HostSlot>, Refusal> {
        if self.deny.iter().any(|n| n.contains(&client))
            || (!self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&client)))
        {
            return Err(Refusal::Cidr);
        }
        if target.len() > self.cfg.max_url_length as usize {
            return Err(Refusal::UrlLength);
        }
        if let Some(allowed) = self.methods.get(host)
            && !allowed.contains(method)
        {
            return Err(Refusal::Method);
        }
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        if self.cfg.deny_paths.iter().any(|p| glob(p, path)) {
            return Err(Refusal::Path);
        }
        if self.cfg.signed_only && door == Some(Door::Images) {
            let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
            if matches!(first, "unsafe" | "_") {
                return Err(Refusal::Unsigned);
            }
        }
        if let Some(g) = &self.global
            && let Err(not_until) = g.check()
        {
            return Err(Refusal::Global(not_until.wait_time_from(self.clock.now())));
        }
        if let Some(c) = &self.per_client
            && let Err(not_until) = c.check_key(&client_bucket(client, self.cfg.max_clients))
        {
            return Err(Refusal::Client(not_until.wait_time_from(self.clock.now())));
        }
        if self.cfg.per_host_concurrency == 0 {
            return Ok(None);
        }
        let counter = {
            let Ok(mut m) = self.per_host.lock() else {
                return Ok(None);
            };
            m.entry(host.to_owned()).or_default().clone()
        };
        let before = counter.fetch_add(1, Ordering::Relaxed);
        let slot = HostSlot(counter);
        if before >= self.cfg.per_host_concurrency as usize {
            return Err(Refusal::Concurrency);
        }
        Ok(Some(slot))
    }

    /// Per-client buckets held now.
    pub fn client_keys(&self) -> usize {
        self.per_client.as_ref().map_or(0, |c| c.len())
    }

    /// Drops the buckets of clients that have been idle long enough to be full again.
    pub fn forget_idle(&self) {
        if let Some(c) = &self.per_client {
            c.retain_recent();
            c.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shield(f: impl FnOnce(&mut ProtectionConfig)) -> Shield {
        let mut c = ProtectionConfig::default();
        f(&mut c);
        Shield::new(&c).expect("valid")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn globs_match_runs_of_characters() {
        assert!(glob("/admin*", "/admin/x"));
        assert!(glob("*.php", "/x/y.php"));
        assert!(glob("/a/*/c", "/a/b/c"));
        assert!(!glob("/a/*/c", "/a/b/d"));
        assert!(glob("/exact", "/exact"));
        assert!(!glob("/exact", "/exact/"));
        assert!(!glob("/ab*ba", "/aba"));
    }

    #[test]
    fn ipv6_clients_share_their_64_and_keys_stay_within_the_cap() {
        let a = client_bucket(ip("2001:db8:1:2::1"), 1 << 30);
        let b = client_bucket(ip("2001:db8:1:2:ffff::9"), 1 << 30);
        let c = client_bucket(ip("2001:db8:1:3::1"), 1 << 30);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            client_bucket(ip("::ffff:192.0.2.1"), 1 << 30),
            client_bucket(ip("192.0.2.1"), 1 << 30)
        );
        for i in 0..1000u32 {
            assert!(client_bucket(IpAddr::from(i.to_be_bytes()), 10) < 10);
        }
    }

    #[test]
    fn rules_refuse_in_order_with_the_right_status() {
        let s = shield(|c| {
            c.deny_cidrs = vec!["203.0.113.0/24".into()];
            c.max_url_length = 20;
            c.deny_paths = vec!["/private/*".into()];
            c.allowed_methods
                .insert("img.example".into(), vec!["GET".into(), "HEAD".into()]);
            c.signed_only = true;
        });
        let ok = ip("192.0.2.1");
        let check = |client, method: &Method, target| {
            s.check(client, "img.example", method, target, Some(Door::Images))
                .map(|_| ())
        };
        assert_eq!(
            check(ip("203.0.113.9"), &Method::GET, "/sig/x"),
            Err(Refusal::Cidr)
        );
        assert_eq!(
            check(ok, &Method::GET, "/sig/xxxxxxxxxxxxxxxxxxxxx"),
            Err(Refusal::UrlLength)
        );
        assert_eq!(check(ok, &Method::POST, "/sig/x"), Err(Refusal::Method));
        assert_eq!(check(ok, &Method::GET, "/private/x"), Err(Refusal::Path));
        assert_eq!(check(ok, &Method::GET, "/unsafe/x"), Err(Refusal::Unsigned));
        assert_eq!(check(ok, &Method::GET, "/sig/x?a=1"), Ok(()));
        assert_eq!(Refusal::UrlLength.status(), http::StatusCode::URI_TOO_LONG);
        let allow = shield(|c| c.allow_cidrs = vec!["10.0.0.0/8".into()]);
        assert!(
            allow
                .check(ip("192.0.2.1"), "h", &Method::GET, "/", None)
                .is_err()
        );
        assert!(
            allow
                .check(ip("10.1.2.3"), "h", &Method::GET, "/", None)
                .is_ok()
        );
    }

    #[test]
    fn one_client_is_limited_and_another_is_not() {
        let s = shield(|c| {
            c.per_client_rate = 5;
            c.per_client_burst = 5;
        });
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let refused = (0..20)
            .filter(|_| s.check(a, "h", &Method::GET, "/", None).is_err())
            .count();
        assert!(refused >= 14, "{refused}");
        let Err(r) = s.check(a, "h", &Method::GET, "/", None) else {
            panic!("still limited");
        };
        assert_eq!(r.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert!(r.retry_after().is_some_and(|s| s >= 1));
        assert!(s.check(b, "h", &Method::GET, "/", None).is_ok());
    }

    #[test]
    fn concurrency_per_hostname_is_released_with_the_response() {
        let s = shield(|c| c.per_host_concurrency = 2);
        let g = |h| s.check(ip("192.0.2.1"), h, &Method::GET, "/", None);
        let (a, b) = (g("h"), g("h"));
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(g("h").map(|_| ()), Err(Refusal::Concurrency));
        assert!(g("other").is_ok());
        drop(a);
        assert!(g("h").is_ok());
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        let s = shield(|c| c.trusted_proxies = vec!["127.0.0.1/32".into()]);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "198.51.100.7".parse().expect("value"));
        assert_eq!(s.client(ip("127.0.0.1"), &h), ip("198.51.100.7"));
        assert_eq!(s.client(ip("192.0.2.1"), &h), ip("192.0.2.1"));
        let bad = ProtectionConfig {
            deny_cidrs: vec!["nonsense".into()],
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
