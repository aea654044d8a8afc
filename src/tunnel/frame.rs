//! The tunnel's wire format, apart from all I/O so it can be tested and fuzzed alone
//! (docs/tunnel.md, "Protocol"). Imports nothing but std, serde and serde_json.
//!
//! What must stay true: every stream starts with the magic and a version, and an unknown
//! version is refused with an error naming both versions; a frame never claims more than
//! [`MAX_CONTROL_FRAME`] bytes, so a peer cannot make the other side allocate at will.

use serde::{Deserialize, Serialize};

/// ALPN of the tunnel, over QUIC and over the TLS-on-TCP fallback alike.
pub const ALPN: &[u8] = b"pixelport-tunnel/1";
/// The protocol version this build speaks (the byte after the magic on every stream).
pub const VERSION: u8 = 1;
/// The first two bytes of every stream: "PX".
pub const MAGIC: [u8; 2] = *b"PX";
/// A control frame's largest body (its JSON).
pub const MAX_CONTROL_FRAME: usize = 64 * 1024;

/// On the TCP fallback (HTTP/2, edge as client), the request header naming the door.
pub const DOOR_HEADER: &str = "pixelport-door";

/// On the TCP fallback, a request from the edge that carries control frames instead of a
/// public request: `feed` (the response streams the appliance's frames, purges) or
/// `message` (the body is one frame for the appliance).
pub const CONTROL_HEADER: &str = "pixelport-control";

/// How often the appliance sends a heartbeat on each connection's control stream.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_millis(250);
/// A connection the edge has heard nothing from for this long is stale: it gets no new
/// request, and requests waiting on it fail over. Four heartbeats, well under QUIC's idle
/// timeout, so a killed appliance is noticed within about a second rather than 20.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The largest HTTP/2 DATA frame each side of the TCP fallback accepts: a cached image
/// crosses in one or two frames instead of a frame per 16 KiB (the protocol's default).
pub const H2_MAX_FRAME: u32 = 256 * 1024;

/// QUIC application close codes, so each side can log why the other hung up.
pub mod close {
    /// Normal close (shutdown).
    pub const DONE: u32 = 0;
    /// The edge refused the identity or the enrollment (the reason is in the last frame).
    pub const REFUSED: u32 = 1;
    /// `pixelport edge revoke` removed the identity.
    pub const REVOKED: u32 = 2;
    /// The peer broke the protocol (bad magic, version, frame).
    pub const PROTOCOL: u32 = 3;
    /// A request stream the edge gave up on (client gone): the appliance drops the request.
    pub const CANCELLED: u32 = 4;
}

/// Which of the appliance's listeners a request stream goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Door {
    Images,
    S3,
    Admin,
}

impl Door {
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Images => "images",
            Door::S3 => "s3",
            Door::Admin => "admin",
        }
    }

    fn code(self) -> u8 {
        match self {
            Door::Images => 1,
            Door::S3 => 2,
            Door::Admin => 3,
        }
    }

    fn from_code(code: u8) -> Option<Door> {
        match code {
            1 => Some(Door::Images),
            2 => Some(Door::S3),
            3 => Some(Door::Admin),
            _ => None,
        }
    }
}

impl std::str::FromStr for Door {
    type Err = FrameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "images" => Ok(Door::Images),
            "s3" => Ok(Door::S3),
            "admin" => Ok(Door::Admin),
            _ => Err(FrameError::UnknownDoor(s.to_owned())),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("not a Pixelport tunnel stream (bad magic {0:02x?})")]
    BadMagic([u8; 2]),
    #[error("tunnel protocol version {theirs} is not supported (this build speaks {VERSION})")]
    Version { theirs: u8 },
    #[error("unknown stream kind {0}")]
    Kind(u8),
    #[error("unknown door code {0}")]
    DoorCode(u8),
    #[error("unknown door `{0}` (images, s3 or admin)")]
    UnknownDoor(String),
    #[error("control frame of {0} bytes is over the {MAX_CONTROL_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("control frame is not valid: {0}")]
    Json(String),
}

/// What a stream carries, from its 4-byte head: magic, version, kind, and for a request
/// stream the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamHead {
    /// The appliance's first stream on a connection: control frames both ways.
    Control,
    /// A stream the edge opened for one public request: HTTP/1.1 follows.
    Request(Door),
}

impl StreamHead {
    pub const LEN: usize = 4;

    /// Byte 3 packs the kind (high nibble: 1 control, 2 request) and the door (low nibble).
    pub fn encode(self) -> [u8; 4] {
        let last = match self {
            StreamHead::Control => 0x10,
            StreamHead::Request(d) => 0x20 | d.code(),
        };
        [MAGIC[0], MAGIC[1], VERSION, last]
    }

    pub fn decode(head: [u8; 4]) -> Result<StreamHead, FrameError> {
        if head[..2] != MAGIC {
            return Err(FrameError::BadMagic([head[0], head[1]]));
        }
        if head[2] != VERSION {
            return Err(FrameError::Version { theirs: head[2] });
        }
        match (head[3] >> 4, head[3] & 0x0f) {
            (1, 0) => Ok(StreamHead::Control),
            (2, d) => Door::from_code(d)
                .map(StreamHead::Request)
                .ok_or(FrameError::DoorCode(d)),
            _ => Err(FrameError::Kind(head[3])),
        }
    }
}

/// One hostname an identity may serve, and the door it reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub hostname: String,
    pub door: Door,
}

/// Messages on the control stream, as length-prefixed JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// Appliance → edge, first frame of an enrolled identity's connection.
    Hello {
        /// The appliance's name for itself (logs and metrics on the edge).
        node: String,
        /// The appliance's build version.
        software: String,
    },
    /// Appliance → edge, first frame of `pixelport tunnel join`: the one-time secret.
    Enroll { secret: String, node: String },
    /// Edge → appliance: the connection is accepted, with the hostnames it serves.
    Welcome { edge: String, grants: Vec<Grant> },
    /// Edge → appliance: refused; the connection closes with [`close::REFUSED`].
    Refused { reason: String },
    /// Appliance → edge: shutting down; send no new requests on this connection.
    Drain,
    /// Appliance → edge, every [`HEARTBEAT`]: still here.
    Heartbeat,
    /// Appliance → edge: drop what `items` name among this appliance's hostnames' entries,
    /// then confirm with `PurgeAck` (`seq` is the last purge the batch completes).
    Purge {
        seq: u64,
        items: Vec<crate::tunnel::purge::PurgeItem>,
    },
    /// Edge → appliance: every purge up to `seq` is applied.
    PurgeAck { seq: u64 },
    /// Edge → appliance: another appliance node serving the same hostnames purged these
    /// sources; drop their derivative variants, then confirm with `RelayAck`.
    Relay {
        id: u64,
        items: Vec<crate::tunnel::purge::PurgeItem>,
    },
    /// Appliance → edge: the relay `id` is applied.
    RelayAck { id: u64 },
    /// Edge → appliance, every few seconds: the edge's cache, for the admin UI.
    EdgeStats(EdgeCacheReport),
}

/// What an edge's cache holds and how it does, as the appliance's admin UI shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeCacheReport {
    pub edge: String,
    pub entries: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub hits: u64,
    pub misses: u64,
}

impl Eq for EdgeCacheReport {}

impl Control {
    /// The frame: a 4-byte big-endian length, then the JSON.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let json = serde_json::to_vec(self).map_err(|e| FrameError::Json(e.to_string()))?;
        if json.len() > MAX_CONTROL_FRAME {
            return Err(FrameError::TooLarge(json.len()));
        }
        let mut out = Vec::with_capacity(4 + json.len());
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(&json);
        Ok(out)
    }

    /// The body length a frame's 4-byte prefix announces, refused past the limit.
    pub fn frame_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
        let len = u32::from_be_bytes(prefix) as usize;
        if len > MAX_CONTROL_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        Ok(len)
    }

    pub fn decode(body: &[u8]) -> Result<Control, FrameError> {
        if body.len() > MAX_CONTROL_FRAME {
            return Err(FrameError::TooLarge(body.len()));
        }
        serde_json::from_slice(body).map_err(|e| FrameError::Json(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_round_trip() {
        for head in [
            StreamHead::Control,
            StreamHead::Request(Door::Images),
            StreamHead::Request(Door::S3),
            StreamHead::Request(Door::Admin),
        ] {
            assert_eq!(StreamHead::decode(head.encode()), Ok(head));
        }
    }

    #[test]
    fn unknown_version_is_named() {
        let mut head = StreamHead::Control.encode();
        head[2] = 9;
        let err = StreamHead::decode(head).unwrap_err();
        assert_eq!(err, FrameError::Version { theirs: 9 });
        assert!(err.to_string().contains("version 9"), "{err}");
        assert!(err.to_string().contains("speaks 1"), "{err}");
    }

    #[test]
    fn bad_heads_are_refused() {
        assert!(matches!(
            StreamHead::decode(*b"GET "),
            Err(FrameError::BadMagic(_))
        ));
        let mut head = StreamHead::Request(Door::S3).encode();
        head[3] = (head[3] & 0xf0) | 0x0f;
        assert_eq!(StreamHead::decode(head), Err(FrameError::DoorCode(15)));
        let mut head = StreamHead::Control.encode();
        head[3] = 0x30;
        assert!(matches!(StreamHead::decode(head), Err(FrameError::Kind(_))));
    }

    #[test]
    fn control_frames_round_trip() {
        let msgs = [
            Control::Hello {
                node: "desk".into(),
                software: "0.1.0".into(),
            },
            Control::Enroll {
                secret: "s".into(),
                node: "n".into(),
            },
            Control::Welcome {
                edge: "e".into(),
                grants: vec![Grant {
                    hostname: "images.example.com".into(),
                    door: Door::Images,
                }],
            },
            Control::Refused {
                reason: "no".into(),
            },
            Control::Drain,
            Control::Heartbeat,
            Control::Purge {
                seq: 7,
                items: vec![
                    crate::tunnel::purge::PurgeItem::Tag("s3://b/k".into()),
                    crate::tunnel::purge::PurgeItem::All,
                ],
            },
            Control::PurgeAck { seq: 7 },
            Control::Relay {
                id: 3,
                items: vec![crate::tunnel::purge::PurgeItem::TagPrefix("s3://b/".into())],
            },
            Control::RelayAck { id: 3 },
            Control::EdgeStats(EdgeCacheReport {
                edge: "edge-1".into(),
                entries: 2,
                ..Default::default()
            }),
        ];
        for m in msgs {
            let frame = m.encode().unwrap();
            let len = Control::frame_len(frame[..4].try_into().unwrap()).unwrap();
            assert_eq!(len, frame.len() - 4);
            assert_eq!(Control::decode(&frame[4..]).unwrap(), m);
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_reading() {
        assert_eq!(
            Control::frame_len(u32::MAX.to_be_bytes()),
            Err(FrameError::TooLarge(u32::MAX as usize))
        );
        assert!(Control::decode(b"{\"type\":\"nope\"}").is_err());
    }
}
