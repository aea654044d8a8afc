//! The mechanics every listener ("door") shares: its limits ([`limits`]), the connection
//! clocks and caps ([`conn`]), and the accept loop that applies them. The services behind a
//! door (S3, images, admin) know nothing of how their requests arrived. Imports nothing from
//! `app`.

pub mod conn;
pub mod limits;

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use conn::{Busy, IdleIo, TimeoutBody};

/// The client's address, put into every request's extensions by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

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

/// Accepts connections until `stop` and serves each with `svc`, within `limits`: past the
/// connection cap a connection is answered 503 and closed at once, so one listener's crowd
/// never takes the descriptors the others need. `tag_peer`: put the client's address into
/// every request's extensions ([`PeerAddr`]; the admin listener's login limit
/// needs it, and it costs an allocation per request).
pub async fn accept_loop<S, B>(
    listener: TcpListener,
    svc: S,
    limits: DoorLimits,
    tag_peer: bool,
    mut stop: watch::Receiver<bool>,
    graceful: Arc<GracefulShutdown>,
) where
    S: hyper::service::Service<hyper::Request<RequestBody>, Response = hyper::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let name = limits.name;
    let builder = limits.builder();
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
                    conn::refuse(stream);
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
                let with_limits = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let guard = busy.enter();
                    let mut req = req.map(|b| TimeoutBody::new(b, body_timeout));
                    if tag_peer {
                        req.extensions_mut().insert(PeerAddr(peer));
                    }
                    let call = inner.call(req);
                    async move {
                        let resp = call.await;
                        drop(guard);
                        resp
                    }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), with_limits).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(listener = name, error = %e, "connection ended with an error");
                    }
                    drop((permit, open));
                });
            }
            _ = stop.changed() => break,
        }
    }
}
