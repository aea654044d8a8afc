//! `[limits]`: what bounds every listener (the S3, image and admin doors, and later the
//! edge's): header, idle and body timeouts, the largest request head, and how many
//! connections each listener may hold at once. Pure: the caps are computed here from the
//! process's descriptor limit, so that no one listener can use up the descriptors the
//! others, the store and the cache need.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ByteSize, Seconds};

/// A bad `[limits]` setting: the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("limits.{key}: {message}")]
pub struct LimitsError {
    pub key: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// How long a client may take to send a request's line and headers. hyper starts the
    /// clock when the connection is ready for a request, so a keep-alive connection that
    /// sends nothing is closed after this long too.
    pub header_read_timeout: Seconds,
    /// A connection on which no byte moves either way, while no request is being handled
    /// (a client that stopped reading a response, an idle HTTP/2 connection), is closed.
    pub idle_timeout: Seconds,
    /// The longest wait for the next bytes of a request body (an upload that stalls).
    pub body_timeout: Seconds,
    /// Largest request head (request line and headers); past it the connection is closed
    /// with 431. hyper's floor is 8 KiB.
    pub max_header_size: ByteSize,
    /// Most concurrent connections per listener; 0: derived from the descriptor limit
    /// (`RLIMIT_NOFILE`). Past it, new connections get `503` with `Retry-After` and are closed.
    pub s3_max_connections: usize,
    pub images_max_connections: usize,
    pub admin_max_connections: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Seconds(Duration::from_secs(30)),
            idle_timeout: Seconds(Duration::from_secs(60)),
            body_timeout: Seconds(Duration::from_secs(60)),
            max_header_size: ByteSize(64 << 10),
            s3_max_connections: 0,
            images_max_connections: 0,
            admin_max_connections: 0,
        }
    }
}

/// hyper refuses a read buffer below this.
pub const MIN_HEADER_SIZE: u64 = 8192;

/// Descriptors kept back from the listeners' caps for the store, the caches, the spool,
/// log files and the runtime itself.
pub const RESERVED_DESCRIPTORS: u64 = 256;

impl LimitsConfig {
    pub fn validate(&self) -> Result<(), LimitsError> {
        let bad = |key, message: &str| {
            Err(LimitsError {
                key,
                message: message.to_owned(),
            })
        };
        for (key, d) in [
            ("header_read_timeout", self.header_read_timeout.0),
            ("idle_timeout", self.idle_timeout.0),
            ("body_timeout", self.body_timeout.0),
        ] {
            if d.is_zero() {
                return bad(key, "must be greater than 0");
            }
        }
        if self.max_header_size.0 < MIN_HEADER_SIZE {
            return bad("max_header_size", "must be at least 8KiB");
        }
        if self.max_header_size.0 > 16 << 20 {
            return bad("max_header_size", "must be at most 16MiB");
        }
        Ok(())
    }

    /// Each listener's connection cap for a process allowed `nofile` descriptors: the
    /// configured value, or a share of what is left after [`RESERVED_DESCRIPTORS`]: half for
    /// the image listener (the public one), 30% for S3, 5% for admin (at least 16 each).
    pub fn caps(&self, nofile: u64) -> Caps {
        let budget = nofile.saturating_sub(RESERVED_DESCRIPTORS);
        let share = |configured: usize, percent: u64| {
            if configured > 0 {
                configured
            } else {
                usize::try_from((budget * percent / 100).max(16)).unwrap_or(usize::MAX)
            }
        };
        Caps {
            images: share(self.images_max_connections, 50),
            s3: share(self.s3_max_connections, 30),
            admin: share(self.admin_max_connections, 5),
        }
    }
}

/// The connection cap of each listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub images: usize,
    pub s3: usize,
    pub admin: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_share_the_descriptor_limit() {
        let l = LimitsConfig::default();
        let c = l.caps(4096);
        assert_eq!(
            c,
            Caps {
                images: 1920,
                s3: 1152,
                admin: 192
            }
        );
        // Together they leave the reserve free.
        assert!((c.images + c.s3 + c.admin) as u64 + RESERVED_DESCRIPTORS <= 4096);
        // A tiny limit still lets every listener take a few connections.
        assert_eq!(
            l.caps(100),
            Caps {
                images: 16,
                s3: 16,
                admin: 16
            }
        );
        let set = LimitsConfig {
            images_max_connections: 10,
            ..LimitsConfig::default()
        };
        assert_eq!(set.caps(4096).images, 10);
    }

    #[test]
    fn validation_names_the_key() {
        let l = LimitsConfig {
            max_header_size: ByteSize(100),
            ..LimitsConfig::default()
        };
        assert_eq!(l.validate().unwrap_err().key, "max_header_size");
        let l = LimitsConfig {
            body_timeout: Seconds(Duration::ZERO),
            ..LimitsConfig::default()
        };
        assert_eq!(l.validate().unwrap_err().key, "body_timeout");
        assert!(LimitsConfig::default().validate().is_ok());
    }
}
