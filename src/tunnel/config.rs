//! `[tunnel]`: how the appliance keeps its tunnel up; and `tunnel.toml` in the data dir, what
//! `pixelport tunnel join` stored (the edges, their pins, the hostnames granted).
//!
//! What must stay true: `pixelport serve` needs no tunnel setting beyond what `join` wrote;
//! the joined file is written 0600 through the identity helper, and joining a second edge
//! adds to it rather than replacing the first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::frame::Grant;
use crate::config::Seconds;

/// How the appliance reaches its edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// QUIC, falling back to TLS over TCP when QUIC cannot connect (UDP blocked).
    #[default]
    Auto,
    Quic,
    Tcp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TunnelConfig {
    /// Connect to the edges `tunnel join` stored (false: stay off the tunnel).
    pub enabled: bool,
    /// `auto` (QUIC, else TLS over TCP), `quic` or `tcp`.
    pub transport: Transport,
    /// Connections kept open to each edge (HA: the edge spreads requests over them).
    pub connections: u32,
    /// QUIC keep-alive; well below `idle_timeout` so NAT bindings stay open.
    pub keepalive: Seconds,
    /// A connection that hears nothing for this long is dead and is dialled again.
    pub idle_timeout: Seconds,
    /// The longest wait between dial attempts (full-jitter exponential backoff).
    pub backoff_max: Seconds,
    /// Requests in flight at once on one connection (QUIC streams).
    pub max_streams: u32,
    /// This appliance's name in the edge's logs and metrics (empty: the host name).
    pub node: String,
    /// Kernel buffer asked for the UDP socket, each way.
    pub udp_buffer: crate::config::ByteSize,
    /// UDP generic segmentation offload (fewer syscalls for large transfers); off for
    /// network paths or drivers that mishandle it.
    pub gso: bool,
    /// How long a write waits for every connected edge to confirm the purge it causes.
    pub purge_wait: Seconds,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            transport: Transport::Auto,
            connections: 2,
            keepalive: Seconds(Duration::from_secs(5)),
            idle_timeout: Seconds(Duration::from_secs(20)),
            backoff_max: Seconds(Duration::from_secs(60)),
            max_streams: 1024,
            node: String::new(),
            udp_buffer: crate::config::ByteSize(4 << 20),
            gso: true,
            purge_wait: Seconds(Duration::from_secs(2)),
        }
    }
}

impl TunnelConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=16).contains(&self.connections) {
            return Err(("connections", "must be 1 to 16".into()));
        }
        if self.keepalive.0.is_zero() || self.keepalive.0 * 2 > self.idle_timeout.0 {
            return Err((
                "keepalive",
                format!(
                    "must be above 0 and at most half of idle_timeout ({})",
                    self.idle_timeout
                ),
            ));
        }
        if self.backoff_max.0 < Duration::from_secs(1) {
            return Err(("backoff_max", "must be at least 1s".into()));
        }
        if self.max_streams == 0 {
            return Err(("max_streams", "must be greater than 0".into()));
        }
        Ok(())
    }

    pub fn node_name(&self) -> String {
        if !self.node.is_empty() {
            return self.node.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "pixelport".into())
    }
}

/// One edge this appliance joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinedEdge {
    pub addresses: Vec<String>,
    pub pin: String,
    #[serde(default)]
    pub grants: Vec<Grant>,
}

/// `data_dir/tunnel.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    #[serde(default)]
    pub edges: Vec<JoinedEdge>,
}

pub const JOINED_FILE: &str = "tunnel.toml";
pub const CLIENT_IDENTITY: &str = "tunnel-client.pem";

impl Joined {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(JOINED_FILE)
    }

    /// The joined edges; none when `tunnel join` never ran.
    pub fn load(data_dir: &Path) -> Result<Joined, String> {
        let path = Self::path(data_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Joined::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Adds `edge`, replacing an entry with the same pin (joining the same edge again).
    pub fn add(&mut self, edge: JoinedEdge) {
        self.edges
            .retain(|e| !e.pin.eq_ignore_ascii_case(&edge.pin));
        self.edges.push(edge);
    }

    pub fn save(&self, data_dir: &Path) -> Result<(), String> {
        let text = toml::to_string(self).map_err(|e| e.to_string())?;
        let text = format!(
            "# Written by `pixelport tunnel join`: the edges this appliance dials, their\n\
             # certificate pins and the hostnames they granted. Join again to change it.\n{text}"
        );
        super::identity::write_private(&Self::path(data_dir), text.as_bytes())
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::frame::Door;

    #[test]
    fn joining_twice_keeps_both_edges_and_replaces_a_rejoin() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Joined::load(dir.path()).unwrap();
        assert!(j.edges.is_empty());
        let e = |pin: &str, host: &str| JoinedEdge {
            addresses: vec!["127.0.0.1:7844".into()],
            pin: pin.into(),
            grants: vec![Grant {
                hostname: host.into(),
                door: Door::Images,
            }],
        };
        j.add(e("aa", "a.example"));
        j.add(e("bb", "b.example"));
        j.add(e("aa", "c.example"));
        j.save(dir.path()).unwrap();
        let back = Joined::load(dir.path()).unwrap();
        assert_eq!(back.edges.len(), 2);
        assert_eq!(back.edges[1].grants[0].hostname, "c.example");
    }

    #[test]
    fn keepalive_must_sit_below_the_idle_timeout() {
        let mut c = TunnelConfig::default();
        assert!(c.validate().is_ok());
        c.keepalive = Seconds(Duration::from_secs(15));
        assert_eq!(c.validate().unwrap_err().0, "keepalive");
    }
}
