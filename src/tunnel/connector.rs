//! The appliance's connector: keeps `[tunnel] connections` QUIC connections open to every
//! joined edge, and hands each request stream the edge opens to the door it names.
//!
//! The supervisor ([`run_link`]) decides when to dial and how long to wait (full-jitter
//! backoff, reset after a stable connection); [`one_connection`] only runs one connection
//! from handshake to close. What must stay true: a lost network is retried forever without
//! a restart; on shutdown each connection tells its edge to send nothing new (`Drain`) and
//! keeps serving the streams already sent until the edge closes it or the grace runs out.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::backoff::Backoff;
use super::config::{JoinedEdge, Transport, TunnelConfig};
use super::frame::{Control, Door, StreamHead, close};
use super::identity::Identity;
use super::stream::TunnelIo;
use super::{TunnelError, tls};

/// Serves one request stream (HTTP/1.1) with a door's service.
pub type StreamHandler = Arc<dyn Fn(TunnelIo) -> BoxFuture<'static, ()> + Send + Sync>;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TunnelBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;

/// Serves one request that arrived on the TCP fallback's HTTP/2 connection.
pub type RequestHandler = Arc<
    dyn Fn(
            http::Request<hyper::body::Incoming>,
        ) -> BoxFuture<'static, Result<http::Response<TunnelBody>, BoxError>>
        + Send
        + Sync,
>;

/// One door as the tunnel reaches it: by stream (QUIC) or by request (TCP fallback).
#[derive(Clone)]
pub struct DoorHandler {
    pub stream: StreamHandler,
    pub request: RequestHandler,
}

/// The appliance's doors, as the tunnel reaches them.
#[derive(Clone)]
pub struct Doors {
    pub images: DoorHandler,
    pub s3: DoorHandler,
    pub admin: DoorHandler,
}

impl Doors {
    fn get(&self, door: Door) -> &DoorHandler {
        match door {
            Door::Images => &self.images,
            Door::S3 => &self.s3,
            Door::Admin => &self.admin,
        }
    }
}

/// What one link (one connection slot to one edge) is doing, for status and `/ready`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LinkStatus {
    pub edge: String,
    pub slot: u32,
    pub state: &'static str,
    pub reconnects: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
pub struct Status {
    links: Mutex<Vec<LinkStatus>>,
    /// Each edge's last cache report, by edge name.
    edge_caches:
        Mutex<std::collections::BTreeMap<String, (super::frame::EdgeCacheReport, Instant)>>,
}

impl Status {
    /// The edges' cache reports, with their age in seconds.
    pub fn edge_caches(&self) -> Vec<(super::frame::EdgeCacheReport, u64)> {
        self.edge_caches
            .lock()
            .map(|m| {
                m.values()
                    .map(|(r, at)| (r.clone(), at.elapsed().as_secs()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn edge_cache(&self, report: super::frame::EdgeCacheReport) {
        if let Ok(mut m) = self.edge_caches.lock() {
            m.insert(report.edge.clone(), (report, Instant::now()));
        }
    }

    pub fn snapshot(&self) -> Vec<LinkStatus> {
        self.links.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// At least one connection is up to every joined edge.
    pub fn ready(&self) -> bool {
        let links = self.snapshot();
        let mut edges: Vec<&str> = links.iter().map(|l| l.edge.as_str()).collect();
        edges.dedup();
        edges
            .iter()
            .all(|e| links.iter().any(|l| l.edge == *e && l.state == "connected"))
    }

    fn update(&self, index: usize, f: impl FnOnce(&mut LinkStatus)) {
        if let Ok(mut l) = self.links.lock()
            && let Some(s) = l.get_mut(index)
        {
            f(s);
        }
    }
}

struct Link {
    index: usize,
    edge: JoinedEdge,
    node: String,
    client: quinn::ClientConfig,
    endpoint: quinn::Endpoint,
    doors: Doors,
    status: Arc<Status>,
    metrics: Arc<crate::metrics::Metrics>,
    backoff_max: Duration,
    grace: Duration,
    transport: Transport,
    tcp: Arc<rustls::ClientConfig>,
    /// When QUIC last failed to connect (auto: TCP until it is worth trying QUIC again).
    quic_failed: Mutex<Option<Instant>>,
    purge: PurgeChannel,
}

/// Applies purges another appliance node caused (relayed by an edge) to this node's
/// derivative cache.
pub type RelayHandler =
    Arc<dyn Fn(Vec<super::purge::PurgeItem>) -> BoxFuture<'static, ()> + Send + Sync>;

/// The purges this appliance sends its edges, and what it does with relayed ones.
#[derive(Clone)]
pub struct PurgeChannel {
    pub purges: Arc<super::purge::Purges>,
    pub relay: RelayHandler,
}

/// How long `auto` stays on TCP after QUIC failed before it tries QUIC again.
const QUIC_RETRY_AFTER: Duration = Duration::from_secs(300);
/// In `auto`, how long a QUIC handshake may take before TCP is tried (UDP dropped).
const AUTO_QUIC_TIMEOUT: Duration = Duration::from_secs(3);

/// The connector's status and its link tasks.
pub type Started = (Arc<Status>, Vec<JoinHandle<()>>);

/// Starts a link per joined edge and connection slot. `None` when nothing was joined.
pub fn start(
    config: &TunnelConfig,
    data_dir: &std::path::Path,
    grace: Duration,
    doors: Doors,
    metrics: Arc<crate::metrics::Metrics>,
    purge: PurgeChannel,
    stop: watch::Receiver<bool>,
) -> Result<Option<Started>, TunnelError> {
    if !config.enabled {
        return Ok(None);
    }
    let joined = super::config::Joined::load(data_dir).map_err(TunnelError::Joined)?;
    if joined.edges.is_empty() {
        return Ok(None);
    }
    let identity = Identity::load(&data_dir.join(super::config::CLIENT_IDENTITY), None)?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(config.keepalive.0))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(config.idle_timeout.0)
                .map_err(|e| TunnelError::Config(e.to_string()))?,
        ))
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(config.max_streams))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .enable_segmentation_offload(config.gso);
    let transport = Arc::new(transport);
    let endpoint = client_endpoint(usize::try_from(config.udp_buffer.0).unwrap_or(usize::MAX))?;
    let status = Arc::new(Status::default());
    let node = config.node_name();
    let mut tasks = Vec::new();
    for edge in joined.edges {
        let rustls_config = tls::appliance_config(&identity, &edge.pin)?;
        let tcp = Arc::new(rustls_config.clone());
        let mut client = tls::quic_client(rustls_config)?;
        client.transport_config(transport.clone());
        for slot in 0..config.connections {
            let index = {
                let mut links = status
                    .links
                    .lock()
                    .map_err(|_| TunnelError::Config("status lock".into()))?;
                links.push(LinkStatus {
                    edge: edge.addresses.join(","),
                    slot,
                    state: "connecting",
                    reconnects: 0,
                    last_error: None,
                });
                links.len() - 1
            };
            let link = Link {
                index,
                edge: edge.clone(),
                node: node.clone(),
                client: client.clone(),
                endpoint: endpoint.clone(),
                doors: doors.clone(),
                status: status.clone(),
                metrics: metrics.clone(),
                backoff_max: config.backoff_max.0,
                grace,
                transport: config.transport,
                tcp: tcp.clone(),
                quic_failed: Mutex::new(None),
                purge: purge.clone(),
            };
            tasks.push(tokio::spawn(run_link(link, stop.clone())));
        }
    }
    Ok(Some((status, tasks)))
}

/// One UDP socket for every outgoing connection, dual-stack where the system allows.
pub fn client_endpoint(buffer: usize) -> Result<quinn::Endpoint, TunnelError> {
    let v6: SocketAddr = (std::net::Ipv6Addr::UNSPECIFIED, 0).into();
    match super::udp::endpoint(v6, buffer, None) {
        Ok(e) => Ok(e),
        Err(_) => Ok(super::udp::endpoint(
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            buffer,
            None,
        )?),
    }
}

/// How a connection ended.
enum Ended {
    /// Shutdown: drained and closed.
    Stopped,
    /// The connection went away (network, edge restart, idle timeout).
    Lost(String),
}

async fn run_link(link: Link, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::new(
        Duration::from_millis(250),
        link.backoff_max,
        Duration::from_secs(30),
    );
    let edge = link.edge.addresses.join(",");
    loop {
        if *stop.borrow() {
            break;
        }
        let started = Instant::now();
        let outcome = one_connection(&link, &mut stop).await;
        let reason = match outcome {
            Ok(Ended::Stopped) => break,
            Ok(Ended::Lost(reason)) => {
                tracing::warn!(%edge, slot = link.index, %reason, "tunnel connection lost; dialling again");
                reason
            }
            Err(TunnelError::Refused(reason)) => {
                tracing::error!(%edge, %reason, "the edge refused this appliance");
                format!("refused by the edge: {reason}")
            }
            Err(e) => {
                tracing::warn!(%edge, slot = link.index, error = %e, "cannot connect to the edge");
                e.to_string()
            }
        };
        link.metrics.tunnel_reconnects.inc();
        link.status.update(link.index, |s| {
            s.state = "waiting";
            s.reconnects += 1;
            s.last_error = Some(reason);
        });
        backoff.ended_after(started.elapsed());
        let wait = backoff.next_delay(rand::random::<f64>());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => break,
        }
    }
    link.status.update(link.index, |s| s.state = "stopped");
}

async fn resolve(addresses: &[String]) -> Result<SocketAddr, TunnelError> {
    let mut last = None;
    for a in addresses {
        match tokio::net::lookup_host(a.as_str()).await {
            Ok(mut it) => {
                if let Some(addr) = it.next() {
                    return Ok(addr);
                }
            }
            Err(e) => last = Some(format!("{a}: {e}")),
        }
    }
    Err(TunnelError::Resolve(
        last.unwrap_or_else(|| addresses.join(",")),
    ))
}

/// Reads one control frame.
pub async fn read_control<R: tokio::io::AsyncRead + Unpin>(
    recv: &mut R,
) -> Result<Control, TunnelError> {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix).await?;
    let len = Control::frame_len(prefix)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await?;
    Ok(Control::decode(&body)?)
}

/// Sends the control head and `hello` (or `enroll`), and reads the edge's answer: a
/// refusal becomes [`TunnelError::Refused`] with the edge's reason.
async fn exchange<W, R>(send: &mut W, recv: &mut R, hello: &Control) -> Result<Control, TunnelError>
where
    W: tokio::io::AsyncWrite + Unpin,
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let mut first = StreamHead::Control.encode().to_vec();
    first.extend(hello.encode()?);
    send.write_all(&first).await?;
    send.flush().await?;
    let reply = tokio::time::timeout(Duration::from_secs(10), read_control(recv))
        .await
        .map_err(|_| TunnelError::Timeout("the edge's welcome"))??;
    match reply {
        Control::Refused { reason } => Err(TunnelError::Refused(reason)),
        other => Ok(other),
    }
}

/// The QUIC connection to an edge, after hello: the connection, its control stream, and
/// the edge's welcome.
pub type QuicJoined = (
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
    Control,
);

/// Dials over QUIC, says hello (or enrols), and returns the connection with its control
/// stream.
pub async fn handshake(
    endpoint: &quinn::Endpoint,
    client: quinn::ClientConfig,
    addresses: &[String],
    hello: &Control,
    timeout: Duration,
) -> Result<QuicJoined, TunnelError> {
    let addr = resolve(addresses).await?;
    let connecting = endpoint.connect_with(client, addr, "pixelport-edge")?;
    let conn = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| TunnelError::Timeout("the QUIC handshake"))??;
    let (mut send, mut recv) = conn.open_bi().await?;
    match exchange(&mut send, &mut recv, hello).await {
        Ok(reply) => Ok((conn, send, recv, reply)),
        // The edge closes at once after refusing; its reason is in the close frame.
        Err(TunnelError::Io(_)) | Err(TunnelError::Timeout(_))
            if matches!(
                conn.close_reason(),
                Some(quinn::ConnectionError::ApplicationClosed(_))
            ) =>
        {
            match conn.close_reason() {
                Some(quinn::ConnectionError::ApplicationClosed(c)) => Err(TunnelError::Refused(
                    String::from_utf8_lossy(&c.reason).into_owned(),
                )),
                _ => Err(TunnelError::Protocol("closed".into())),
            }
        }
        Err(e) => Err(e),
    }
}

pub type TcpTunnel = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Dials over TLS on TCP (the fallback when UDP is blocked) and says hello (or enrols).
pub async fn tcp_handshake(
    config: Arc<rustls::ClientConfig>,
    addresses: &[String],
    hello: &Control,
) -> Result<(TcpTunnel, Control), TunnelError> {
    let addr = resolve(addresses).await?;
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| TunnelError::Timeout("the TCP connection"))??;
    let _ = tcp.set_nodelay(true);
    let name = rustls_pki_types::ServerName::try_from("pixelport-edge")
        .map_err(|e| TunnelError::Config(e.to_string()))?;
    let mut tls = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| TunnelError::Timeout("the TLS handshake"))??;
    let (mut r, mut w) = tokio::io::split(&mut tls);
    let reply = exchange(&mut w, &mut r, hello).await?;
    Ok((tls, reply))
}

/// The TCP fallback's HTTP/2 service: each request to the door its header names.
#[derive(Clone)]
struct Dispatch {
    doors: Doors,
    metrics: Arc<crate::metrics::Metrics>,
    purge: PurgeChannel,
    /// The edge's pin.
    edge: String,
    status: Arc<Status>,
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for Dispatch {
    type Response = http::Response<TunnelBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<http::Response<TunnelBody>, BoxError>>;

    fn call(&self, mut req: http::Request<hyper::body::Incoming>) -> Self::Future {
        if let Some(kind) = req.headers().get(super::frame::CONTROL_HEADER) {
            return match kind.as_bytes() {
                b"feed" => {
                    let feed = purge_feed(self.purge.purges.clone(), self.edge.clone());
                    Box::pin(async move { Ok(http::Response::new(feed)) })
                }
                _ => {
                    let (purge, edge) = (self.purge.clone(), self.edge.clone());
                    Box::pin(control_message(req, purge, edge, self.status.clone()))
                }
            };
        }
        let door = req
            .headers_mut()
            .remove(super::frame::DOOR_HEADER)
            .and_then(|v| v.to_str().ok().and_then(|d| d.parse::<Door>().ok()));
        match door {
            Some(d) => {
                self.metrics
                    .tunnel_requests
                    .with_label_values(&[d.as_str()])
                    .inc();
                // In flight until the response body is done or dropped (the edge reset it).
                let guard = GaugeGuard::enter(&self.metrics.tunnel_in_flight);
                let call = (self.doors.get(d).request)(req);
                Box::pin(async move {
                    use http_body_util::BodyExt;
                    let resp = call.await?;
                    Ok(resp.map(|body| {
                        Guarded {
                            body,
                            _guard: guard,
                        }
                        .boxed_unsync()
                    }))
                })
            }
            None => Box::pin(async {
                use http_body_util::BodyExt;
                let mut resp = http::Response::new(
                    http_body_util::Full::new(bytes::Bytes::from_static(
                        b"a tunnel request must name its door",
                    ))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
                );
                *resp.status_mut() = http::StatusCode::BAD_REQUEST;
                Ok(resp)
            }),
        }
    }
}

/// Whether a failure to connect over QUIC suggests UDP is blocked (then `auto` tries TCP).
fn quic_unreachable(e: &TunnelError) -> bool {
    matches!(
        e,
        TunnelError::Timeout(_) | TunnelError::Connection(_) | TunnelError::Io(_)
    )
}

async fn one_connection(
    link: &Link,
    stop: &mut watch::Receiver<bool>,
) -> Result<Ended, TunnelError> {
    match link.transport {
        Transport::Quic => quic_connection(link, stop, Duration::from_secs(10)).await,
        Transport::Tcp => tcp_connection(link, stop).await,
        Transport::Auto => {
            let recently_failed = link
                .quic_failed
                .lock()
                .ok()
                .and_then(|f| *f)
                .is_some_and(|t| t.elapsed() < QUIC_RETRY_AFTER);
            if !recently_failed {
                match quic_connection(link, stop, AUTO_QUIC_TIMEOUT).await {
                    Err(e) if quic_unreachable(&e) => {
                        tracing::warn!(edge = %link.edge.addresses.join(","), error = %e, "QUIC unreachable (UDP blocked?); falling back to TLS over TCP");
                        if let Ok(mut f) = link.quic_failed.lock() {
                            *f = Some(Instant::now());
                        }
                    }
                    other => return other,
                }
            }
            tcp_connection(link, stop).await
        }
    }
}

/// The TCP fallback: after hello, the appliance serves HTTP/2 on the TLS connection and
/// the edge is its client; each request names its door in `pixelport-door`.
async fn tcp_connection(
    link: &Link,
    stop: &mut watch::Receiver<bool>,
) -> Result<Ended, TunnelError> {
    let hello = Control::Hello {
        node: link.node.clone(),
        software: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let (tls, reply) = tcp_handshake(link.tcp.clone(), &link.edge.addresses, &hello).await?;
    let Control::Welcome { edge, .. } = reply else {
        return Err(TunnelError::Protocol(format!(
            "expected a welcome, got {reply:?}"
        )));
    };
    tracing::info!(%edge, slot = link.index, transport = "tcp", "tunnel connected");
    link.status.update(link.index, |s| {
        s.state = "connected";
        s.last_error = None;
    });
    link.metrics.tunnel_connections.inc();
    let _gauge = GaugeGuard(link.metrics.tunnel_connections.clone());
    let svc = Dispatch {
        doors: link.doors.clone(),
        metrics: link.metrics.clone(),
        purge: link.purge.clone(),
        edge: link.edge.pin.clone(),
        status: link.status.clone(),
    };
    let mut builder =
        hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(super::frame::HEARTBEAT * 4)
        .keep_alive_timeout(super::frame::STALE_AFTER * 4)
        .max_concurrent_streams(1024)
        .max_frame_size(super::frame::H2_MAX_FRAME);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            return Ok(Ended::Lost(match r {
                Ok(()) => "the edge closed the connection".into(),
                Err(e) => e.to_string(),
            }));
        }
        _ = stop.changed() => {}
    }
    // Shutdown: GOAWAY (the edge sends nothing new), then the requests in flight finish.
    link.status.update(link.index, |s| s.state = "draining");
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(link.grace, conn).await;
    Ok(Ended::Stopped)
}

async fn quic_connection(
    link: &Link,
    stop: &mut watch::Receiver<bool>,
    timeout: Duration,
) -> Result<Ended, TunnelError> {
    let hello = Control::Hello {
        node: link.node.clone(),
        software: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let (conn, mut control, mut control_recv, reply) = handshake(
        &link.endpoint,
        link.client.clone(),
        &link.edge.addresses,
        &hello,
        timeout,
    )
    .await?;
    let Control::Welcome { edge, grants } = reply else {
        return Err(TunnelError::Protocol(format!(
            "expected a welcome, got {reply:?}"
        )));
    };
    let hosts: Vec<String> = grants
        .iter()
        .map(|g| format!("{}→{}", g.hostname, g.door.as_str()))
        .collect();
    tracing::info!(%edge, addr = %conn.remote_address(), slot = link.index, hosts = ?hosts, "tunnel connected");
    link.status.update(link.index, |s| {
        s.state = "connected";
        s.last_error = None;
    });
    link.metrics.tunnel_connections.inc();
    let _gauge = GaugeGuard(link.metrics.tunnel_connections.clone());
    let heartbeat = Control::Heartbeat.encode()?;
    let mut beat = tokio::time::interval(super::frame::HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Purges: what this edge has not confirmed goes now, then each new one as it comes.
    let purges = link.purge.purges.clone();
    let pin = link.edge.pin.clone();
    let _connected = purges.connect(&pin);
    let mut published = purges.subscribe();
    // The edge's frames (confirmations, relays) are read by a task of their own (a frame
    // read is not cancel-safe); relays are applied off this loop and confirmed through it.
    let (in_tx, mut in_rx) = tokio::sync::mpsc::channel(64);
    let reader = tokio::spawn(async move {
        while let Ok(msg) = read_control(&mut control_recv).await {
            if in_tx.send(msg).await.is_err() {
                break;
            }
        }
    });
    let _reader = AbortOnDrop(reader);
    let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Control>();
    // The first frame marks the edge in sync, with nothing to purge when nothing is due.
    let (upto, items) = purges.first_batch(&pin);
    let mut sent = Some(upto);
    if let Err(e) = control
        .write_all(&Control::Purge { seq: upto, items }.encode()?)
        .await
    {
        return Ok(Ended::Lost(format!("control stream: {e}")));
    }
    loop {
        while let Some((upto, items)) = purges.next_batch(&pin, sent) {
            sent = Some(upto);
            let frame = Control::Purge { seq: upto, items }.encode()?;
            if let Err(e) = control.write_all(&frame).await {
                return Ok(Ended::Lost(format!("control stream: {e}")));
            }
        }
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => spawn_stream(link, send, recv),
                Err(e) => return Ok(Ended::Lost(e.to_string())),
            },
            _ = beat.tick() => {
                if let Err(e) = control.write_all(&heartbeat).await {
                    return Ok(Ended::Lost(format!("control stream: {e}")));
                }
            }
            _ = published.changed() => {}
            Some(msg) = in_rx.recv() => match msg {
                Control::PurgeAck { seq } => purges.ack(&pin, seq),
                Control::EdgeStats(report) => link.status.edge_cache(report),
                Control::Relay { id, items } => {
                    let (relay, out) = (link.purge.relay.clone(), out_tx.clone());
                    tokio::spawn(async move {
                        relay(items).await;
                        let _ = out.send(Control::RelayAck { id });
                    });
                }
                other => tracing::debug!(?other, "unexpected control frame from the edge; ignored"),
            },
            Some(out) = out_rx.recv() => {
                if let Err(e) = control.write_all(&out.encode()?).await {
                    return Ok(Ended::Lost(format!("control stream: {e}")));
                }
            }
            _ = stop.changed() => break,
        }
    }
    // Shutdown: ask for nothing new, serve what was already sent until the edge closes.
    link.status.update(link.index, |s| s.state = "draining");
    let _ = control.write_all(&Control::Drain.encode()?).await;
    let deadline = tokio::time::sleep(link.grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => spawn_stream(link, send, recv),
                Err(_) => break,
            },
            _ = &mut deadline => break,
        }
    }
    conn.close(quinn::VarInt::from_u32(close::DONE), b"appliance shut down");
    Ok(Ended::Stopped)
}

/// A task aborted when its handle drops (with the connection it serves).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The TCP fallback's purge feed: the response body to the edge's long `feed` request, one
/// control frame per batch, for as long as the connection lasts.
fn purge_feed(purges: Arc<super::purge::Purges>, pin: String) -> TunnelBody {
    use http_body_util::BodyExt;
    struct Feed {
        purges: Arc<super::purge::Purges>,
        pin: String,
        sent: Option<u64>,
        published: watch::Receiver<u64>,
    }
    // Counted as a connection to the edge while the feed lasts.
    let connected = Arc::new(purges.connect(&pin));
    let published = purges.subscribe();
    let feed = Feed {
        purges,
        pin,
        sent: None,
        published,
    };
    let mut first = true;
    let stream = futures::stream::unfold(feed, move |mut f| {
        let _keep = connected.clone();
        let first = std::mem::take(&mut first);
        async move {
            if first {
                // The first frame marks the edge in sync, with nothing to purge when
                // nothing is due.
                let (upto, items) = f.purges.first_batch(&f.pin);
                f.sent = Some(upto);
                let frame = Control::Purge { seq: upto, items }.encode().ok()?;
                let data = hyper::body::Frame::data(bytes::Bytes::from(frame));
                return Some((Ok::<_, BoxError>(data), f));
            }
            loop {
                if let Some((upto, items)) = f.purges.next_batch(&f.pin, f.sent) {
                    f.sent = Some(upto);
                    let frame = Control::Purge { seq: upto, items }.encode().ok()?;
                    let data = hyper::body::Frame::data(bytes::Bytes::from(frame));
                    return Some((Ok::<_, BoxError>(data), f));
                }
                f.published.changed().await.ok()?;
            }
        }
    });
    http_body_util::StreamBody::new(stream).boxed_unsync()
}

/// One control frame from the edge on the TCP fallback: a confirmation, or a relay
/// (confirmed by the response, once applied).
async fn control_message(
    req: http::Request<hyper::body::Incoming>,
    purge: PurgeChannel,
    pin: String,
    status: Arc<Status>,
) -> Result<http::Response<TunnelBody>, BoxError> {
    use http_body_util::BodyExt;
    let limited =
        http_body_util::Limited::new(req.into_body(), super::frame::MAX_CONTROL_FRAME + 4);
    let bytes = limited.collect().await?.to_bytes();
    let msg = match bytes.get(4..) {
        Some(body) => Control::decode(body)?,
        None => return Err("a control message too short".into()),
    };
    match msg {
        Control::PurgeAck { seq } => purge.purges.ack(&pin, seq),
        Control::EdgeStats(report) => status.edge_cache(report),
        Control::Relay { items, .. } => (purge.relay)(items).await,
        other => tracing::debug!(?other, "unexpected control frame from the edge; ignored"),
    }
    let mut resp = http::Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = http::StatusCode::NO_CONTENT;
    Ok(resp)
}

struct GaugeGuard(prometheus::IntGauge);

impl GaugeGuard {
    fn enter(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

/// A response body that holds a guard until it ends or is dropped.
struct Guarded<B> {
    body: B,
    _guard: GaugeGuard,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn spawn_stream(link: &Link, send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let doors = link.doors.clone();
    let metrics = link.metrics.clone();
    tokio::spawn(async move {
        let mut head = [0u8; StreamHead::LEN];
        let read = tokio::time::timeout(Duration::from_secs(10), recv.read_exact(&mut head)).await;
        let io = TunnelIo::new(send, recv);
        if !matches!(read, Ok(Ok(_))) {
            return;
        }
        match StreamHead::decode(head) {
            Ok(StreamHead::Request(door)) => {
                metrics
                    .tunnel_requests
                    .with_label_values(&[door.as_str()])
                    .inc();
                let _in_flight = GaugeGuard::enter(&metrics.tunnel_in_flight);
                // The doors (and the shutdown watcher they hold) are let go before the
                // request runs, so shutdown can take the watcher back.
                let serve = (doors.get(door).stream)(io);
                drop(doors);
                serve.await;
            }
            Ok(StreamHead::Control) => {
                tracing::debug!("the edge opened a second control stream; ignored");
            }
            Err(e) => tracing::warn!(error = %e, "a tunnel stream with a bad head; reset"),
        }
    });
}
