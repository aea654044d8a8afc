//! `pixelport tunnel join TOKEN`: makes the appliance's identity, enrols it with the edge
//! over a connection pinned to the edge's certificate, and stores what the edge granted in
//! `data_dir/tunnel.toml`, so `pixelport serve` connects with no further config.
//!
//! What must stay true: nothing is written unless the edge accepted the enrollment, and an
//! expired token is refused before anything is sent.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::config::{CLIENT_IDENTITY, Joined, JoinedEdge, Transport, TunnelConfig};
use super::connector::handshake;
use super::frame::{Control, Grant, close};
use super::identity::Identity;
use super::token::JoinToken;
use super::{TunnelError, tls};

/// What a join did, for the user.
#[derive(Debug)]
pub struct JoinOutcome {
    pub edge: String,
    pub grants: Vec<Grant>,
    pub identity_made: bool,
    pub pin: String,
}

pub async fn join(
    token: &str,
    config: &TunnelConfig,
    data_dir: &Path,
) -> Result<JoinOutcome, TunnelError> {
    let token = JoinToken::decode(token)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if token.expires <= now {
        return Err(TunnelError::Refused(format!(
            "the join token expired {} s ago; run `pixelport edge pair` again",
            now - token.expires
        )));
    }
    crate::app::prepare_data_dir(data_dir).map_err(|e| TunnelError::Config(e.to_string()))?;
    let (identity, made) =
        Identity::load_or_create(&data_dir.join(CLIENT_IDENTITY), "pixelport-appliance")?;
    let rustls_config = tls::appliance_config(&identity, &token.pin)?;
    let enroll = Control::Enroll {
        secret: token.secret.clone(),
        node: config.node_name(),
    };
    let reply = match config.transport {
        Transport::Tcp => {
            super::connector::tcp_handshake(Arc::new(rustls_config), &token.edges, &enroll)
                .await?
                .1
        }
        transport => {
            let client = tls::quic_client(rustls_config.clone())?;
            let endpoint = super::connector::client_endpoint(0)?;
            let timeout = if transport == Transport::Auto {
                Duration::from_secs(3)
            } else {
                Duration::from_secs(10)
            };
            match handshake(&endpoint, client, &token.edges, &enroll, timeout).await {
                Ok((conn, _send, _recv, reply)) => {
                    conn.close(quinn::VarInt::from_u32(close::DONE), b"enrolled");
                    endpoint.wait_idle().await;
                    reply
                }
                Err(TunnelError::Timeout(_)) if transport == Transport::Auto => {
                    super::connector::tcp_handshake(Arc::new(rustls_config), &token.edges, &enroll)
                        .await?
                        .1
                }
                Err(e) => return Err(e),
            }
        }
    };
    let Control::Welcome { edge, grants } = reply else {
        return Err(TunnelError::Protocol(format!(
            "expected a welcome, got {reply:?}"
        )));
    };
    let mut joined = Joined::load(data_dir).map_err(TunnelError::Joined)?;
    joined.add(JoinedEdge {
        addresses: token.edges.clone(),
        pin: token.pin.clone(),
        grants: grants.clone(),
    });
    joined.save(data_dir).map_err(TunnelError::Joined)?;
    Ok(JoinOutcome {
        edge,
        grants,
        identity_made: made,
        pin: identity.pin(),
    })
}
