//! The edge's tunnel listener: authenticates each appliance connection by its certificate
//! pin (or enrols it with a one-time secret), registers it with the router under the
//! hostnames its identity was granted, and forgets it when it closes or drains.
//!
//! What must stay true: no request stream is opened on a connection before its identity is
//! known; every refusal is logged here with the peer's address and sent to the appliance
//! with the reason before the connection closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::EdgeState;
use super::registry::Refusal;
use crate::tunnel::connector::read_control;
use crate::tunnel::frame::{Control, StreamHead, close};
use crate::tunnel::tls;

pub async fn accept_forever(
    endpoint: quinn::Endpoint,
    state: Arc<EdgeState>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let state = state.clone();
                tokio::spawn(async move {
                    let remote = incoming.remote_address();
                    if let Err(e) = serve(incoming, state).await {
                        tracing::debug!(%remote, error = %e, "appliance connection ended");
                    }
                });
            }
            _ = stop.changed() => break,
        }
    }
}

async fn refuse(
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    remote: SocketAddr,
    reason: &str,
) {
    tracing::warn!(%remote, reason, "appliance refused");
    if let Ok(frame) = (Control::Refused {
        reason: reason.to_owned(),
    })
    .encode()
    {
        let _ = send.write_all(&frame).await;
        let _ = send.finish();
    }
    // Give the frame a moment to leave before the close overtakes it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    conn.close(quinn::VarInt::from_u32(close::REFUSED), reason.as_bytes());
}

async fn serve(incoming: quinn::Incoming, state: Arc<EdgeState>) -> Result<(), String> {
    let remote = incoming.remote_address();
    let conn = match tokio::time::timeout(Duration::from_secs(10), incoming).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::warn!(%remote, error = %e, "tunnel handshake failed");
            return Err(e.to_string());
        }
        Err(_) => return Err("handshake timed out".into()),
    };
    let pin = tls::peer_pin(&conn).ok_or("no client certificate")?;
    let (mut send, mut recv) = tokio::time::timeout(Duration::from_secs(10), conn.accept_bi())
        .await
        .map_err(|_| "no control stream".to_string())?
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; StreamHead::LEN];
    let head_read = tokio::time::timeout(Duration::from_secs(10), recv.read_exact(&mut head)).await;
    if !matches!(head_read, Ok(Ok(()))) {
        return Err("no stream head".into());
    }
    match StreamHead::decode(head) {
        Ok(StreamHead::Control) => {}
        Ok(other) => {
            let reason = format!("expected the control stream first, got {other:?}");
            refuse(&conn, &mut send, remote, &reason).await;
            return Err(reason);
        }
        Err(e) => {
            refuse(&conn, &mut send, remote, &e.to_string()).await;
            return Err(e.to_string());
        }
    }
    let first = tokio::time::timeout(Duration::from_secs(10), read_control(&mut recv))
        .await
        .map_err(|_| "no hello".to_string())?
        .map_err(|e| e.to_string())?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match first {
        Control::Enroll { secret, node } => {
            let file = state.registry_file();
            let p = pin.clone();
            let n = node.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                file.update(|r| {
                    r.prune(now - 86400);
                    r.enroll(&secret, &p, &n, now)
                })
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            match outcome {
                Ok(grants) => {
                    state.reload_registry();
                    tracing::info!(%remote, node, pin = %super::registry::short(&pin), grants = ?grants, "appliance enrolled");
                    let frame = Control::Welcome {
                        edge: state.name.clone(),
                        grants,
                    }
                    .encode()
                    .map_err(|e| e.to_string())?;
                    send.write_all(&frame).await.map_err(|e| e.to_string())?;
                    let _ = send.finish();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
                    Ok(())
                }
                Err(refusal) => {
                    refuse(&conn, &mut send, remote, &refusal.to_string()).await;
                    Err(refusal.to_string())
                }
            }
        }
        Control::Hello { node, software } => {
            let enrolled = match state.identity(&pin) {
                Ok(e) => e,
                Err(refusal) => {
                    refuse(&conn, &mut send, remote, &refusal.to_string()).await;
                    return Err(refusal.to_string());
                }
            };
            let frame = Control::Welcome {
                edge: state.name.clone(),
                grants: enrolled.grants.clone(),
            }
            .encode()
            .map_err(|e| e.to_string())?;
            send.write_all(&frame).await.map_err(|e| e.to_string())?;
            let link = state.router.add(
                pin.clone(),
                enrolled.node.clone(),
                enrolled.grants.clone(),
                conn.clone(),
            );
            tracing::info!(%remote, node, software, link = link.id, "appliance connected");
            // The control stream: drain notices until the connection ends.
            let why = loop {
                tokio::select! {
                    msg = read_control(&mut recv) => match msg {
                        Ok(Control::Heartbeat) => link.touch(),
                        Ok(Control::Drain) => {
                            link.touch();
                            tracing::info!(%remote, node, link = link.id, "appliance draining; no new requests on this connection");
                            link.drain();
                            if link.inflight() == 0 {
                                conn.close(quinn::VarInt::from_u32(close::DONE), b"drained");
                            }
                        }
                        Ok(other) => tracing::debug!(?other, "unexpected control frame; ignored"),
                        Err(_) => break conn.closed().await.to_string(),
                    },
                    reason = conn.closed() => break reason.to_string(),
                }
            };
            state.router.remove(link.id);
            tracing::info!(%remote, node, link = link.id, reason = why, "appliance disconnected");
            Ok(())
        }
        other => {
            let reason = format!("expected hello or enroll, got {other:?}");
            refuse(&conn, &mut send, remote, &reason).await;
            Err(reason)
        }
    }
}

impl EdgeState {
    pub fn identity(&self, pin: &str) -> Result<super::registry::Enrolled, Refusal> {
        if let Ok(r) = self.registry.read()
            && let Ok(e) = r.identity(pin)
        {
            return Ok(e.clone());
        }
        // Not in the copy: the file may have changed since it was read.
        self.reload_registry();
        self.registry
            .read()
            .map_err(|_| Refusal::UnknownIdentity(super::registry::short(pin)))?
            .identity(pin)
            .cloned()
    }
}
