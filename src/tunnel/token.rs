//! The one-line join token `pixelport edge pair` prints and `pixelport tunnel join` reads:
//! where the edge is, the SHA-256 pin of its certificate, and a one-time enrollment secret
//! with its expiry. Pure: no I/O.
//!
//! What must stay true: a token that is cut short, altered or of another version is refused
//! with a message that says which; the secret is only ever compared on the edge.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::frame::Grant;

/// Every token starts with this, so a pasted token of another kind is named as such.
pub const PREFIX: &str = "pxt1_";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// The edge's tunnel addresses (`host:port`), tried in order.
    pub edges: Vec<String>,
    /// Hex SHA-256 of the edge certificate's DER: the appliance trusts only that certificate.
    pub pin: String,
    /// The one-time enrollment secret (hex).
    pub secret: String,
    /// Unix seconds after which the edge refuses the secret.
    pub expires: i64,
    /// What the identity will serve (informative; the edge decides).
    pub grants: Vec<Grant>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not a Pixelport join token (it should start with `{PREFIX}`)")]
    Prefix,
    #[error("the join token is damaged (cut short or altered): {0}")]
    Damaged(String),
    #[error("the join token names no edge address")]
    NoEdge,
    #[error("the join token's pin is not a SHA-256 in hex")]
    Pin,
}

impl JoinToken {
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    pub fn decode(text: &str) -> Result<JoinToken, TokenError> {
        let body = text.trim().strip_prefix(PREFIX).ok_or(TokenError::Prefix)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| TokenError::Damaged(e.to_string()))?;
        let token: JoinToken =
            serde_json::from_slice(&json).map_err(|e| TokenError::Damaged(e.to_string()))?;
        if token.edges.is_empty() {
            return Err(TokenError::NoEdge);
        }
        if token.pin.len() != 64 || !token.pin.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::Pin);
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::frame::Door;

    fn token() -> JoinToken {
        JoinToken {
            edges: vec!["203.0.113.5:7844".into()],
            pin: "ab".repeat(32),
            secret: "00ff".into(),
            expires: 1_800_000_000,
            grants: vec![Grant {
                hostname: "images.example.com".into(),
                door: Door::Images,
            }],
        }
    }

    #[test]
    fn round_trip_on_one_line() {
        let text = token().encode();
        assert!(text.starts_with(PREFIX));
        assert!(!text.contains(char::is_whitespace));
        assert_eq!(JoinToken::decode(&format!(" {text}\n")).unwrap(), token());
    }

    #[test]
    fn damaged_tokens_say_what_is_wrong() {
        let text = token().encode();
        assert_eq!(JoinToken::decode("hello"), Err(TokenError::Prefix));
        assert!(matches!(
            JoinToken::decode(&text[..text.len() - 7]),
            Err(TokenError::Damaged(_))
        ));
        let mut t = token();
        t.pin = "xyz".into();
        assert_eq!(JoinToken::decode(&t.encode()), Err(TokenError::Pin));
        let mut t = token();
        t.edges.clear();
        assert_eq!(JoinToken::decode(&t.encode()), Err(TokenError::NoEdge));
    }
}
