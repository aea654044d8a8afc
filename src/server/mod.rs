//! The mechanics every listener ("door") shares: its limits ([`limits`]), the connection
//! clocks and caps ([`conn`]), and the accept loop that applies them. The services behind a
//! door (S3, images, admin) know nothing of how their requests arrived. Imports nothing from
//! `app`.

pub mod conn;
pub mod limits;
pub mod runtimes;
pub mod shutdown;
pub mod systemd;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use conn::{Busy, IdleIo, TimeoutBody};
pub use shutdown::{Drain, Shutdown};

/// The request's id, put into every request's extensions as it is admitted (listener or
/// tunnel): the services answer it (`x-amz-request-id`, `x-request-id`) and log under it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    /// 16 uppercase hex digits, as S3 request ids look.
    pub fn new() -> Self {
        Self(format!("{:016X}", rand::random::<u64>()))
    }

    /// The id the request was admitted with, or a new one (a service called directly).
    pub fn of<B>(req: &hyper::Request<B>) -> Self {
        req.extensions()
            .get::<Self>()
            .cloned()
            .unwrap_or_else(Self::new)
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

/// The client's address, put into every request's extensions by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// Marks a request that arrived over a TLS connection this process terminated (the
/// admin session cookie is `Secure` then).
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// The request body every door's service receives: hyper's, with the body clock.
pub type RequestBody = TimeoutBody<Incoming>;

/// One door's limits, resolved from `[limits]` and the descriptor limit.
#[derive(Clone)]
pub struct DoorLimits {
    /// `s3`, `images`, `admin`: the label in logs and metrics.
    pub name: &'static str,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
    pub max_header_size: usize,
    /// Free connection places: one permit per open connection.
    pub connections: Arc<Semaphore>,
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl DoorLimits {
    pub fn new(
        name: &'static str,
        config: &limits::LimitsConfig,
        max_connections: usize,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Self {
        Self {
            name,
            header_read_timeout: config.header_read_timeout.0,
            idle_timeout: config.idle_timeout.0,
            body_timeout: config.body_timeout.0,
            max_header_size: usize::try_from(config.max_header_size.0)
                .unwrap_or(usize::MAX)
                .max(limits::MIN_HEADER_SIZE as usize),
            connections: Arc::new(Semaphore::new(max_connections.max(1))),
            metrics,
        }
    }

    fn builder(&self) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(self.max_header_size)
            .max_headers(128);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.max_header_size).unwrap_or(u32::MAX))
            .max_concurrent_streams(128);
        builder
    }
}

/// Decrements the listener's open-connection gauge when the connection ends.
struct Open(Option<prometheus::IntGauge>);

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(g) = &self.0 {
            g.dec();
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a door's service is: hyper's service over [`RequestBody`], cheap to clone per
/// connection, its futures sendable to any worker.
pub trait DoorService<B>:
    hyper::service::Service<
        hyper::Request<RequestBody>,
        Response = hyper::Response<B>,
        Future: Send + 'static,
        Error: Into<BoxError>,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> DoorService<B> for S where
    S: hyper::service::Service<
            hyper::Request<RequestBody>,
            Response = hyper::Response<B>,
            Future: Send + 'static,
            Error: Into<BoxError>,
        > + Clone
        + Send
        + 'static
{
}

/// What a door's response body is.
pub trait DoorBody: hyper::body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static {}

impl<B> DoorBody for B where B: hyper::body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static
{}

/// How a door's connections arrive: plain TCP, or TLS over TCP (rustls).
#[derive(Clone)]
pub enum Acceptor {
    Tcp,
    Tls(tokio_rustls::TlsAcceptor),
}

/// Accepts connections until `stop` and serves each with `svc`, within `limits`: past the
/// connection cap a connection is answered 503 (closed, over TLS) at once, so one listener's
/// crowd never takes the descriptors the others need. `tag_peer`: put the client's address
/// into every request's extensions ([`PeerAddr`]; the admin listener's login limit needs
/// it, and it costs an allocation per request).
#[allow(clippy::too_many_arguments)]
pub async fn accept_loop<S, B>(
    listener: TcpListener,
    acceptor: Acceptor,
    svc: S,
    limits: DoorLimits,
    tag_peer: bool,
    mut stop: watch::Receiver<bool>,
    drain: Drain,
) where
    S: DoorService<B>,
    B: DoorBody,
{
    let name = limits.name;
    let builder = Arc::new(limits.builder());
    let gauge = limits
        .metrics
        .as_ref()
        .map(|m| m.connections.with_label_values(&[name]));
    let refused = limits
        .metrics
        .as_ref()
        .map(|m| m.connections_refused.with_label_values(&[name]));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(listener = name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = limits.connections.clone().try_acquire_owned() else {
                    if let Some(c) = &refused {
                        c.inc();
                    }
                    tracing::debug!(listener = name, %peer, "connection cap reached; answered 503");
                    if matches!(acceptor, Acceptor::Tcp) {
                        conn::refuse(stream);
                    }
                    continue;
                };
                let _ = stream.set_nodelay(true);
                if let Some(g) = &gauge {
                    g.inc();
                }
                let open = Open(gauge.clone());
                let busy = Busy::default();
                let io = IdleIo::new(stream, limits.idle_timeout, busy.clone());
                let inner = svc.clone();
                let body_timeout = limits.body_timeout;
                let over_tls = matches!(acceptor, Acceptor::Tls(_));
                let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let (mut req, guard) = admit(req, &busy, body_timeout);
                    if tag_peer {
                        req.extensions_mut().insert(PeerAddr(peer));
                    }
                    if over_tls {
                        req.extensions_mut().insert(OverTls);
                    }
                    let call = inner.call(req);
                    async move {
                        let resp = call.await;
                        drop(guard);
                        resp
                    }
                });
                let builder = builder.clone();
                let watcher = drain.clone();
                let acceptor = acceptor.clone();
                let handshake_timeout = limits.header_read_timeout;
                tokio::spawn(async move {
                    let served = match acceptor {
                        Acceptor::Tcp => {
                            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
                            watcher.watch(conn.into_owned()).await
                        }
                        Acceptor::Tls(tls) => {
                            match tokio::time::timeout(handshake_timeout, tls.accept(io)).await {
                                Ok(Ok(stream)) => {
                                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                                    watcher.watch(conn.into_owned()).await
                                }
                                Ok(Err(e)) => {
                                    tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed");
                                    Ok(())
                                }
                                Err(_) => {
                                    tracing::debug!(listener = name, %peer, "TLS handshake timed out");
                                    Ok(())
                                }
                            }
                        }
                    };
                    if let Err(e) = served {
                        tracing::debug!(listener = name, error = %e, "connection ended with an error");
                    }
                    drop((permit, open));
                });
            }
            _ = stop.changed() => break,
        }
    }
}

/// A request as a door's service gets it: counted busy (the connection's idle clock
/// waits while it is handled) until the guard drops, its body on the body clock.
fn admit(
    req: hyper::Request<Incoming>,
    busy: &Busy,
    body_timeout: Duration,
) -> (hyper::Request<RequestBody>, conn::BusyGuard) {
    let mut req = req.map(|b| TimeoutBody::new(b, body_timeout));
    req.extensions_mut().insert(RequestId::new());
    (req, busy.enter())
}

/// Marks a request that came through the tunnel: its forwarded headers were set by the
/// edge, and its [`PeerAddr`] is the public client the edge saw.
#[derive(Debug, Clone, Copy)]
pub struct Tunneled;

/// The client the edge reported: the last `X-Forwarded-For` entry (the edge appends its
/// peer; anything before it is what the client claimed).
pub fn forwarded_client(headers: &http::HeaderMap) -> Option<std::net::IpAddr> {
    let last = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|s| !s.is_empty())?;
    last.parse().ok()
}

/// Puts the edge's view of the client on a tunnelled request: the last `X-Forwarded-For`
/// entry becomes its [`PeerAddr`], and it is marked [`Tunneled`].
fn trust_forwarded<B>(req: &mut hyper::Request<B>) {
    let client = forwarded_client(req.headers()).unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    req.extensions_mut()
        .insert(PeerAddr(std::net::SocketAddr::new(client, 0)));
    req.extensions_mut().insert(Tunneled);
}

/// A door as the tunnel reaches it, under the door's header, idle and body clocks. The
/// edge's forwarded headers are trusted here, and only here: the request's [`PeerAddr`] is
/// the client the edge saw. Over QUIC each stream is one HTTP/1.1 connection (`stream`);
/// over the TCP fallback each request arrives on the HTTP/2 connection (`request`).
pub fn tunnel_door<S, B>(
    svc: S,
    limits: DoorLimits,
    drain: Drain,
) -> crate::tunnel::connector::DoorHandler
where
    S: DoorService<B> + Sync,
    B: DoorBody + hyper::body::Body<Data = bytes::Bytes>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_size)
        .max_headers(128);
    let builder = Arc::new(builder);
    let body_timeout = limits.body_timeout;
    let for_requests = svc.clone();
    let request: crate::tunnel::connector::RequestHandler =
        Arc::new(move |req: hyper::Request<Incoming>| {
            let mut req = req.map(|b| TimeoutBody::new(b, body_timeout));
            req.extensions_mut().insert(RequestId::new());
            trust_forwarded(&mut req);
            let call = for_requests.clone().call(req);
            Box::pin(async move {
                use http_body_util::BodyExt;
                call.await
                    .map(|r| r.map(|b| b.map_err(Into::into).boxed_unsync()))
                    .map_err(Into::into)
            })
        });
    let stream: crate::tunnel::connector::StreamHandler = Arc::new(
        move |io: crate::tunnel::stream::TunnelIo| {
            let busy = Busy::default();
            let io = IdleIo::new(io, limits.idle_timeout, busy.clone());
            let inner = svc.clone();
            let trusted = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let (mut req, guard) = admit(req, &busy, body_timeout);
                trust_forwarded(&mut req);
                let call = inner.call(req);
                async move {
                    let resp = call.await;
                    drop(guard);
                    resp
                }
            });
            let conn = builder.serve_connection(TokioIo::new(io), trusted);
            let conn = drain.clone().watch(conn);
            let name = limits.name;
            Box::pin(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(listener = name, error = %e, "tunnel stream ended with an error");
                }
            })
        },
    );
    crate::tunnel::connector::DoorHandler { stream, request }
}
