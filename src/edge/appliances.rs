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

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::EdgeState;
use super::registry::Refusal;
use super::router::Carrier;
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

/// What the edge decided about a connection's first control frame.
enum Decision {
    /// `enroll` with a good secret: the grants; the connection then ends.
    Enrolled(Vec<crate::tunnel::frame::Grant>),
    /// `hello` from an enrolled identity: it may serve.
    Serve(super::registry::Enrolled),
    Refused(String),
}

async fn decide(state: &Arc<EdgeState>, pin: &str, remote: SocketAddr, first: Control) -> Decision {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match first {
        Control::Enroll { secret, node } => {
            let file = state.registry_file();
            let (p, n) = (pin.to_owned(), node.clone());
            let outcome = tokio::task::spawn_blocking(move || {
                file.update(|r| {
                    r.prune(now - 86400);
                    r.enroll(&secret, &p, &n, now)
                })
            })
            .await;
            match outcome {
                Ok(Ok(Ok(grants))) => {
                    state.reload_registry();
                    tracing::info!(%remote, node, pin = %super::registry::short(pin), grants = ?grants, "appliance enrolled");
                    Decision::Enrolled(grants)
                }
                Ok(Ok(Err(refusal))) => Decision::Refused(refusal.to_string()),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot update the edge registry");
                    Decision::Refused("the edge cannot store the enrollment".into())
                }
                Err(e) => Decision::Refused(e.to_string()),
            }
        }
        Control::Hello { .. } => match state.identity(pin) {
            Ok(e) => Decision::Serve(e),
            Err(refusal) => Decision::Refused(refusal.to_string()),
        },
        other => Decision::Refused(format!("expected hello or enroll, got {other:?}")),
    }
}

/// Reads a control stream's head and first frame.
async fn first_frame<R: tokio::io::AsyncRead + Unpin>(recv: &mut R) -> Result<Control, String> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; StreamHead::LEN];
    tokio::time::timeout(Duration::from_secs(10), recv.read_exact(&mut head))
        .await
        .map_err(|_| "no stream head".to_string())?
        .map_err(|e| e.to_string())?;
    match StreamHead::decode(head) {
        Ok(StreamHead::Control) => {}
        Ok(other) => return Err(format!("expected the control stream first, got {other:?}")),
        Err(e) => return Err(e.to_string()),
    }
    tokio::time::timeout(Duration::from_secs(10), read_control(recv))
        .await
        .map_err(|_| "no hello".to_string())?
        .map_err(|e| e.to_string())
}

async fn write_frame<W: tokio::io::AsyncWrite + Unpin>(
    send: &mut W,
    msg: &Control,
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let frame = msg.encode().map_err(|e| e.to_string())?;
    send.write_all(&frame).await.map_err(|e| e.to_string())?;
    send.flush().await.map_err(|e| e.to_string())
}

/// Reads the first control frame, decides, and answers it: `Some` identity to serve,
/// `None` after an enrollment (the connection then ends), or the refusal's reason (sent to
/// the appliance and logged).
async fn answer<R, W>(
    state: &Arc<EdgeState>,
    pin: &str,
    remote: SocketAddr,
    recv: &mut R,
    send: &mut W,
) -> Result<Option<super::registry::Enrolled>, String>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let decision = match first_frame(recv).await {
        Ok(first) => decide(state, pin, remote, first).await,
        Err(e) => Decision::Refused(e),
    };
    match decision {
        Decision::Refused(reason) => {
            tracing::warn!(%remote, reason, "appliance refused");
            let refused = Control::Refused {
                reason: reason.clone(),
            };
            let _ = write_frame(send, &refused).await;
            Err(reason)
        }
        Decision::Enrolled(grants) => {
            write_frame(send, &welcome(state, grants)).await?;
            Ok(None)
        }
        Decision::Serve(e) => {
            write_frame(send, &welcome(state, e.grants.clone())).await?;
            Ok(Some(e))
        }
    }
}

fn welcome(state: &EdgeState, grants: Vec<crate::tunnel::frame::Grant>) -> Control {
    Control::Welcome {
        edge: state.name.clone(),
        grants,
    }
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
    let enrolled = match answer(&state, &pin, remote, &mut recv, &mut send).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
            return Ok(());
        }
        Err(reason) => {
            let _ = send.finish();
            // Give the frame a moment to leave before the close overtakes it.
            tokio::time::sleep(Duration::from_millis(50)).await;
            conn.close(quinn::VarInt::from_u32(close::REFUSED), reason.as_bytes());
            return Err(reason);
        }
    };
    let (control_tx, mut control_rx) = mpsc::unbounded_channel();
    let link = state.router.add(
        pin.clone(),
        enrolled.node.clone(),
        enrolled.grants.clone(),
        Carrier::Quic(conn.clone()),
        control_tx,
    );
    let node = enrolled.node;
    tracing::info!(%remote, node, link = link.id, transport = "quic", "appliance connected");
    let (purge_tx, purge_rx) = mpsc::unbounded_channel();
    let worker = Aborting(tokio::spawn(super::purge::worker(
        state.clone(),
        link.clone(),
        purge_rx,
    )));
    // The control stream is read by a task of its own (a frame read is not cancel-safe);
    // this loop takes its frames and writes the edge's.
    let (in_tx, mut in_rx) = mpsc::channel(64);
    let reader = Aborting(tokio::spawn(async move {
        while let Ok(msg) = read_control(&mut recv).await {
            if in_tx.send(msg).await.is_err() {
                break;
            }
        }
    }));
    let why = loop {
        tokio::select! {
            msg = in_rx.recv() => match msg {
                Some(Control::Heartbeat) => link.touch(),
                Some(Control::Drain) => {
                    link.touch();
                    tracing::info!(%remote, node, link = link.id, "appliance draining; no new requests on this connection");
                    link.drain();
                    if link.inflight() == 0 {
                        conn.close(quinn::VarInt::from_u32(close::DONE), b"drained");
                    }
                }
                Some(Control::Purge { seq, items }) => {
                    link.touch();
                    let _ = purge_tx.send((seq, items));
                }
                Some(Control::RelayAck { id }) => state.relays.acked(id),
                Some(other) => tracing::debug!(?other, "unexpected control frame; ignored"),
                None => break conn.closed().await.to_string(),
            },
            Some(out) = control_rx.recv() => {
                let Ok(frame) = out.encode() else { continue };
                if let Err(e) = send.write_all(&frame).await {
                    break format!("control stream: {e}");
                }
            }
            reason = conn.closed() => break reason.to_string(),
        }
    };
    drop((reader, worker));
    state.router.remove(link.id);
    tracing::info!(%remote, node, link = link.id, reason = why, "appliance disconnected");
    Ok(())
}

/// The TCP fallback: TLS on the tunnel port's TCP side, then HTTP/2 with the edge as client.
pub async fn accept_tcp_forever(
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    state: Arc<EdgeState>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, remote)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let (state, tls) = (state.clone(), tls.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve_tcp(stream, remote, tls, state).await {
                        tracing::debug!(%remote, error = %e, "appliance connection (TCP) ended");
                    }
                });
            }
            _ = stop.changed() => break,
        }
    }
}

async fn serve_tcp(
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    tls: tokio_rustls::TlsAcceptor,
    state: Arc<EdgeState>,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let mut tls = match tokio::time::timeout(Duration::from_secs(10), tls.accept(stream)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::warn!(%remote, error = %e, "tunnel handshake (TCP) failed");
            return Err(e.to_string());
        }
        Err(_) => return Err("handshake timed out".into()),
    };
    let pin = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(crate::tunnel::identity::pin_of)
        .ok_or("no client certificate")?;
    let (mut r, mut w) = tokio::io::split(&mut tls);
    let enrolled = match answer(&state, &pin, remote, &mut r, &mut w).await? {
        Some(e) => e,
        None => return Ok(()),
    };
    let mut builder =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(crate::tunnel::frame::HEARTBEAT)
        .keep_alive_timeout(crate::tunnel::frame::STALE_AFTER)
        .keep_alive_while_idle(true)
        .max_frame_size(crate::tunnel::frame::H2_MAX_FRAME);
    let (sender, conn) = builder
        .handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    let (closer, mut closed) = watch::channel(false);
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let link = state.router.add(
        pin,
        enrolled.node.clone(),
        enrolled.grants.clone(),
        Carrier::H2 {
            sender: sender.clone(),
            closer,
        },
        control_tx,
    );
    let node = enrolled.node;
    tracing::info!(%remote, node, link = link.id, transport = "tcp", "appliance connected");
    let (purge_tx, purge_rx) = mpsc::unbounded_channel();
    let tasks = (
        Aborting(tokio::spawn(super::purge::worker(
            state.clone(),
            link.clone(),
            purge_rx,
        ))),
        Aborting(tokio::spawn(tcp_feed(sender.clone(), purge_tx))),
        Aborting(tokio::spawn(tcp_outgoing(
            sender,
            state.clone(),
            control_rx,
        ))),
    );
    let why = tokio::select! {
        r = conn => match r {
            Ok(()) => "closed".to_string(),
            Err(e) => e.to_string(),
        },
        _ = closed.changed() => "closed by the edge".to_string(),
    };
    drop(tasks);
    state.router.remove(link.id);
    tracing::info!(%remote, node, link = link.id, reason = why, "appliance disconnected");
    Ok(())
}

/// A task aborted when its handle drops (with the connection it serves).
struct Aborting(tokio::task::JoinHandle<()>);

impl Drop for Aborting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type H2Sender = hyper::client::conn::http2::SendRequest<super::router::UpstreamBody>;

/// A control request on the TCP fallback's HTTP/2 connection.
fn control_request(kind: &'static str, body: Bytes) -> http::Request<super::router::UpstreamBody> {
    use http_body_util::BodyExt;
    let mut req = http::Request::new(
        http_body_util::Full::new(body)
            .map_err(|never| match never {})
            .boxed(),
    );
    *req.method_mut() = if kind == "feed" {
        http::Method::GET
    } else {
        http::Method::POST
    };
    *req.uri_mut() = http::Uri::from_static("https://pixelport.control/");
    *req.version_mut() = http::Version::HTTP_2;
    req.headers_mut().insert(
        crate::tunnel::frame::CONTROL_HEADER,
        http::HeaderValue::from_static(kind),
    );
    req
}

/// The TCP fallback's way for the appliance's purges to reach the edge: one long request
/// whose response streams control frames.
async fn tcp_feed(
    mut sender: H2Sender,
    purges: mpsc::UnboundedSender<(u64, Vec<crate::tunnel::purge::PurgeItem>)>,
) {
    use http_body_util::BodyExt;
    if sender.ready().await.is_err() {
        return;
    }
    let resp = match sender
        .send_request(control_request("feed", Bytes::new()))
        .await
    {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            tracing::warn!(status = %r.status(), "the appliance refused the purge feed (an older version?)");
            return;
        }
        Err(_) => return,
    };
    let mut body = resp.into_body();
    let mut buf = bytes::BytesMut::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while buf.len() >= 4 {
            let Ok(len) = Control::frame_len([buf[0], buf[1], buf[2], buf[3]]) else {
                return;
            };
            if buf.len() < 4 + len {
                break;
            }
            let msg = Control::decode(&buf[4..4 + len]);
            let _ = buf.split_to(4 + len);
            if let Ok(Control::Purge { seq, items }) = msg {
                let _ = purges.send((seq, items));
            }
        }
    }
}

/// The edge's control frames on the TCP fallback: one request each; a relay is confirmed
/// by its response.
async fn tcp_outgoing(
    sender: H2Sender,
    state: Arc<EdgeState>,
    mut out: mpsc::UnboundedReceiver<Control>,
) {
    while let Some(msg) = out.recv().await {
        let Ok(frame) = msg.encode() else {
            continue;
        };
        let relay = match &msg {
            Control::Relay { id, .. } => Some(*id),
            _ => None,
        };
        let mut s = sender.clone();
        if s.ready().await.is_err() {
            break;
        }
        let sent = s.send_request(control_request("message", Bytes::from(frame)));
        let state = state.clone();
        tokio::spawn(async move {
            if let Ok(resp) = sent.await
                && resp.status().is_success()
                && let Some(id) = relay
            {
                state.relays.acked(id);
            }
        });
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
