//! `[edge]`: the public side's addresses, its certificate files, and its tunnel settings.
//!
//! What must stay true: every address is checked when the config loads, and a certificate
//! is given as a pair (both files or neither), so the edge never starts half-configured.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Seconds;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// The edge's identity, its registry of appliances, and (later) its certificates.
    pub data_dir: PathBuf,
    /// Public HTTPS (HTTP/1.1 and HTTP/2).
    pub https_listen: String,
    /// Public plain HTTP: redirects to HTTPS.
    pub http_listen: String,
    /// Where appliances dial in (UDP, QUIC).
    pub tunnel_listen: String,
    /// `/metrics`, `/health`, `/ready` and the admin API: keep it private.
    pub admin_listen: String,
    /// The admin API's bearer token (empty: generated into `data_dir/edge-admin-token`).
    pub admin_token: String,
    /// PEM certificate chain for the public hostnames (reloaded on SIGHUP).
    pub tls_cert: String,
    /// PEM private key for `tls_cert`.
    pub tls_key: String,
    /// The `host:port` appliances dial, written into join tokens (empty: the first
    /// `--hostname` with `tunnel_listen`'s port).
    pub public_address: String,
    /// How long a join token from `pixelport edge pair` stays valid.
    pub pair_ttl: Seconds,
    /// QUIC keep-alive towards appliances.
    pub keepalive: Seconds,
    /// A tunnel connection silent for this long is dead.
    pub idle_timeout: Seconds,
    /// How long a public request waits for its appliance's response headers.
    pub upstream_timeout: Seconds,
    /// Kernel buffer asked for the tunnel's UDP socket, each way.
    pub udp_buffer: crate::config::ByteSize,
    /// UDP generic segmentation offload on the tunnel socket.
    pub gso: bool,
    /// The HTTP cache in front of the appliances.
    pub cache: CacheConfig,
    /// Rules and rate limits applied before a request reaches an appliance.
    pub protection: super::shield::ProtectionConfig,
    /// Certificates from ACME instead of `tls_cert` / `tls_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme: Option<super::acme::AcmeConfig>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            data_dir: crate::config::state_directory("./pixelport-edge"),
            https_listen: "0.0.0.0:443".into(),
            http_listen: "0.0.0.0:80".into(),
            tunnel_listen: "0.0.0.0:7844".into(),
            admin_listen: "127.0.0.1:9002".into(),
            admin_token: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            public_address: String::new(),
            pair_ttl: Seconds(Duration::from_secs(3600)),
            keepalive: Seconds(Duration::from_secs(5)),
            idle_timeout: Seconds(Duration::from_secs(20)),
            upstream_timeout: Seconds(Duration::from_secs(60)),
            udp_buffer: crate::config::ByteSize(4 << 20),
            gso: true,
            cache: CacheConfig::default(),
            protection: Default::default(),
            acme: None,
        }
    }
}

/// `[edge.cache]`: the HTTP cache (memory in front of disk).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Cache what the appliances mark cacheable.
    pub enabled: bool,
    /// The disk tier's directory (empty: `data_dir/cache`).
    pub path: String,
    /// The memory tier's bound.
    pub memory_size: crate::config::ByteSize,
    /// The disk tier's bound (0: memory only, nothing survives a restart).
    pub disk_size: crate::config::ByteSize,
    /// Larger responses are passed through, never stored.
    pub max_object_size: crate::config::ByteSize,
    /// How long concurrent misses for one URL wait for the first one's response headers
    /// before going to the appliance themselves.
    pub lock_timeout: Seconds,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: String::new(),
            memory_size: crate::config::ByteSize(256 << 20),
            disk_size: crate::config::ByteSize(10 << 30),
            max_object_size: crate::config::ByteSize(64 << 20),
            lock_timeout: Seconds(Duration::from_secs(5)),
        }
    }
}

impl EdgeConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (key, addr) in [
            ("https_listen", &self.https_listen),
            ("http_listen", &self.http_listen),
            ("tunnel_listen", &self.tunnel_listen),
            ("admin_listen", &self.admin_listen),
        ] {
            if key == "http_listen" && addr.is_empty() {
                continue;
            }
            addr.parse::<SocketAddr>()
                .map_err(|_| (key, format!("`{addr}` is not an address like 0.0.0.0:443")))?;
        }
        if self.tls_cert.is_empty() != self.tls_key.is_empty() {
            return Err((
                "tls_key",
                "tls_cert and tls_key must be set together".into(),
            ));
        }
        if let Some(acme) = &self.acme {
            if !self.tls_cert.is_empty() {
                return Err((
                    "acme",
                    "set either tls_cert/tls_key or [edge.acme], not both".into(),
                ));
            }
            acme.validate()?;
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(("data_dir", "must not be empty".into()));
        }
        self.protection.validate()?;
        if self.cache.lock_timeout.0.is_zero() {
            return Err(("cache.lock_timeout", "must be above 0".into()));
        }
        if self.pair_ttl.0 < Duration::from_secs(60) {
            return Err(("pair_ttl", "must be at least 60s".into()));
        }
        if self.keepalive.0.is_zero() || self.keepalive.0 * 2 > self.idle_timeout.0 {
            return Err((
                "keepalive",
                "must be above 0 and at most half of idle_timeout".into(),
            ));
        }
        Ok(())
    }
}
