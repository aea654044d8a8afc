//! A public request through the tunnel, as pingora's phases: find the hostname's door
//! (request filter), choose the appliance link (upstream peer), open a stream and speak
//! HTTP/1.1 over it (the proxy), clean the response (response filter).
//!
//! What must stay true: a request never waits on a hostname with no appliance (503 at once,
//! with a small clear body); a link that fails to open a stream is skipped for the next one;
//! bodies stream both ways and are never held whole; the forwarded headers name the client
//! the edge saw, appended after anything the client sent.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::TokioIo;

use super::EdgeState;
use super::router::{Carrier, InFlight, UpstreamBody, request_host};
use crate::server::RequestBody;
use crate::tunnel::frame::{Door, StreamHead};
use crate::tunnel::stream::TunnelIo;

pub use super::router::BoxError;
pub type EdgeBody = BoxBody<Bytes, BoxError>;

/// Hop-by-hop headers (RFC 9110 §7.6.1), never passed on.
const HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// A whole response the edge answers itself.
pub fn full(status: StatusCode, body: impl Into<Bytes>, kind: &'static str) -> Response<EdgeBody> {
    let mut resp = Response::new(
        http_body_util::Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    resp
}

/// Marks a response the edge made itself (not the appliance's).
#[derive(Debug, Clone, Copy)]
pub struct EdgeAnswer;

/// The edge's own error answer: a small JSON body naming the problem, never cached.
pub fn plain(status: StatusCode, message: &str) -> Response<EdgeBody> {
    let body = serde_json::json!({ "error": message, "status": status.as_u16() }).to_string();
    let mut resp = full(status, body, "application/json");
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.extensions_mut().insert(EdgeAnswer);
    resp
}

/// The HTTP/1.1 connection over a QUIC stream, driven by the request's own task (first
/// while the response head is awaited, then by the body) rather than a task of its own:
/// a task per request and the wake-ups between it and the request were a visible part of
/// the edge's cost per request. In a mutex only because a response body must be `Sync`;
/// it is never contended.
type Driver = std::sync::Mutex<Pin<Box<dyn Future<Output = ()> + Send>>>;

/// The response body from the appliance, holding the link's in-flight count until done
/// and counting its bytes for the hostname. Over QUIC it also drives the stream's HTTP/1.1
/// connection; dropping the body (the client hung up) drops the connection, which resets
/// the stream, so the appliance stops too.
struct Counted {
    inner: Incoming,
    _inflight: InFlight,
    bytes: prometheus::IntCounter,
    driver: Option<Driver>,
}

impl Counted {
    /// Polls the connection; forgets it once it has ended (it must not be polled again).
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(d) = &self.driver {
            let done = d
                .lock()
                .map(|mut f| f.as_mut().poll(cx).is_ready())
                .unwrap_or(true);
            if done {
                self.driver = None;
            }
        }
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.drive(cx);
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes.inc_by(data.len() as u64);
                }
            }
            Poll::Ready(None) => {
                // The body is complete: the connection closes its stream cleanly, usually
                // within this poll; if not, it finishes on its own.
                self.drive(cx);
                if let Some(d) = self.driver.take()
                    && let Ok(rest) = d.into_inner()
                {
                    tokio::spawn(rest);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Rewrites the request for the appliance: origin-form URI, a Host header, no hop-by-hop
/// headers, the forwarded headers appended.
fn to_upstream<B>(mut req: Request<B>, host: &str, client: SocketAddr) -> Request<B> {
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    if let Ok(uri) = pq.parse() {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = http::Version::HTTP_11;
    let headers = req.headers_mut();
    for h in HOP {
        headers.remove(h);
    }
    if !headers.contains_key(header::HOST)
        && let Ok(v) = HeaderValue::from_str(host)
    {
        headers.insert(header::HOST, v);
    }
    let ip = client.ip();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {ip}"),
        _ => ip.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert("x-forwarded-host", v);
    }
    let node = match ip {
        std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
        std::net::IpAddr::V4(v4) => v4.to_string(),
    };
    let fwd = format!("for={node};proto=https;host=\"{host}\"");
    let fwd = match headers.get("forwarded").and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {fwd}"),
        None => fwd,
    };
    if let Ok(v) = HeaderValue::from_str(&fwd) {
        headers.insert("forwarded", v);
    }
    req
}

pub async fn handle(
    state: Arc<EdgeState>,
    req: Request<RequestBody>,
    client: SocketAddr,
) -> Response<EdgeBody> {
    let t0 = Instant::now();
    let host = request_host(&req).unwrap_or_default();
    // The registry is consulted once; past here `host` is a granted hostname, and it is
    // the metrics label.
    if !state.is_granted(&host) {
        let resp = super::cache::layer::bypass(plain(
            StatusCode::MISDIRECTED_REQUEST,
            "this edge serves no such hostname",
        ));
        state.metrics.observe("other", resp.status(), t0.elapsed());
        return resp;
    }
    let door = state.door_of(&host);
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let ip = state.shield.client(client.ip(), req.headers());
    let slot = match state.shield.check(ip, &host, req.method(), &target, door) {
        Ok(slot) => slot,
        Err(refusal) => {
            state.metrics.refused(refusal.rule());
            let mut resp = plain(refusal.status(), refusal.message());
            if let Some(secs) = refusal.retry_after() {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            let resp = super::cache::layer::bypass(resp);
            state.metrics.observe(&host, resp.status(), t0.elapsed());
            return resp;
        }
    };
    let encoding = (req.method() != http::Method::HEAD)
        .then(|| {
            super::compress::negotiate(
                req.headers()
                    .get(header::ACCEPT_ENCODING)
                    .and_then(|v| v.to_str().ok()),
            )
        })
        .flatten();
    let req = req.map(|b| b.map_err(BoxError::from).boxed());
    let resp = match (&state.cache, door) {
        (Some(cache), Some(door)) if door != Door::Admin => {
            super::cache::layer::serve(&state, cache, req, &host, client).await
        }
        _ => {
            let resp = route(&state, req, &host, client).await;
            super::cache::layer::bypass(compressed(resp, encoding).await)
        }
    };
    state.metrics.observe(&host, resp.status(), t0.elapsed());
    match slot {
        // The hostname's slot is held until the response body is done.
        Some(slot) => resp.map(|body| Holding { body, _slot: slot }.boxed()),
        None => resp,
    }
}

/// A response that does not come from the cache, in the client's encoding when it is text
/// (the body, at most [`super::compress::MAX_BODY`], is read whole to be encoded).
async fn compressed(
    resp: Response<EdgeBody>,
    encoding: Option<super::compress::Encoding>,
) -> Response<EdgeBody> {
    use super::compress;
    if !compress::compressible(resp.status(), resp.headers()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    compress::add_vary(&mut parts.headers);
    let Some(enc) = encoding else {
        return Response::from_parts(parts, body);
    };
    let Ok(collected) = body.collect().await else {
        return plain(StatusCode::BAD_GATEWAY, "the appliance's response failed");
    };
    let identity = collected.to_bytes();
    let encoded =
        tokio::task::spawn_blocking(move || compress::encode(enc, &identity).map_err(|_| identity))
            .await;
    match encoded {
        Ok(Ok(bytes)) => {
            compress::encoded_headers(&mut parts.headers, enc, bytes.len());
            Response::from_parts(parts, full_body(Bytes::from(bytes)))
        }
        Ok(Err(identity)) => Response::from_parts(parts, full_body(identity)),
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "compression failed"),
    }
}

fn full_body(b: Bytes) -> EdgeBody {
    http_body_util::Full::new(b)
        .map_err(|never| match never {})
        .boxed()
}

/// A response body that holds a hostname's concurrency slot until it ends or is dropped.
struct Holding {
    body: EdgeBody,
    _slot: super::shield::HostSlot,
}

impl Body for Holding {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Why a forward failed before the response head arrived.
enum Failed {
    /// The link failed (closed, reset, stale): another link may take a request that can be
    /// sent again.
    Link(String),
    /// An answer for the client as it is (the appliance was too slow).
    Answer(Response<EdgeBody>),
}

fn empty() -> UpstreamBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// Sends a request for a granted `host` to one of its appliances.
pub(crate) async fn route(
    state: &Arc<EdgeState>,
    req: Request<UpstreamBody>,
    host: &str,
    client: SocketAddr,
) -> Response<EdgeBody> {
    // A request without a body and with a safe method can be sent again on another link
    // when the first fails before its response head: a killed appliance costs its clients
    // a delay, not an error.
    let again = matches!(
        *req.method(),
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    ) && req.body().is_end_stream();
    let (mut parts, body) = req.into_parts();
    let mut body = Some(body);
    let mut avoid = Vec::new();
    let mut failure = None;
    for _ in 0..4 {
        let Some((link, door)) = state.router.pick(host, &avoid) else {
            break;
        };
        avoid.push(link.id);
        let inflight = link.enter();
        let carrier = match &link.carrier {
            Carrier::Quic(conn) => {
                let opened = tokio::time::timeout(Duration::from_secs(2), conn.open_bi()).await;
                let (mut send, recv) = match opened {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::warn!(host, node = link.node, error = %e, "appliance link failed; trying another");
                        state.router.remove(link.id);
                        continue;
                    }
                    Err(_) => continue,
                };
                if send
                    .write_all(&StreamHead::Request(door).encode())
                    .await
                    .is_err()
                {
                    continue;
                }
                Hop::Stream(TunnelIo::new(send, recv))
            }
            Carrier::H2 { sender, .. } => {
                let mut sender = sender.clone();
                if tokio::time::timeout(Duration::from_secs(2), sender.ready())
                    .await
                    .map_or(true, |r| r.is_err())
                {
                    state.router.remove(link.id);
                    continue;
                }
                Hop::H2(sender, door)
            }
        };
        let upstream_body = if again {
            empty()
        } else {
            match body.take() {
                Some(b) => b,
                None => break,
            }
        };
        let mut upstream = Request::new(upstream_body);
        if again {
            // Kept for a retry on another link.
            *upstream.method_mut() = parts.method.clone();
            *upstream.uri_mut() = parts.uri.clone();
            *upstream.headers_mut() = parts.headers.clone();
        } else {
            // The body goes with this attempt: there is no other, so no copy.
            *upstream.method_mut() = std::mem::take(&mut parts.method);
            *upstream.uri_mut() = std::mem::take(&mut parts.uri);
            *upstream.headers_mut() = std::mem::take(&mut parts.headers);
        }
        let upstream = to_upstream(upstream, host, client);
        match forward(state, carrier, upstream, inflight, host).await {
            Ok(resp) => return resp,
            Err(Failed::Answer(resp)) => return resp,
            Err(Failed::Link(why)) => {
                tracing::warn!(
                    host,
                    node = link.node,
                    why,
                    retry = again,
                    "request failed on its appliance link"
                );
                failure = Some(why);
                if !again {
                    break;
                }
            }
        }
    }
    match failure {
        Some(_) => plain(StatusCode::BAD_GATEWAY, "the appliance did not answer"),
        None => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "no appliance is connected for this hostname",
        ),
    }
}

/// How a request reaches its appliance.
enum Hop {
    /// A QUIC stream: HTTP/1.1 over it.
    Stream(TunnelIo),
    /// The TCP fallback's HTTP/2 connection, and the door to name.
    H2(
        hyper::client::conn::http2::SendRequest<UpstreamBody>,
        crate::tunnel::frame::Door,
    ),
}

async fn forward(
    state: &Arc<EdgeState>,
    hop: Hop,
    req: Request<UpstreamBody>,
    inflight: InFlight,
    host: &str,
) -> Result<Response<EdgeBody>, Failed> {
    let mut driver: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = None;
    let node = inflight.link().node.clone();
    let exchange = async {
        match hop {
            Hop::Stream(io) => {
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
                let conn = driver.insert(Box::pin(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(node, error = %e, "tunnel stream ended with an error");
                    }
                }));
                let send = sender.send_request(req);
                tokio::pin!(send);
                tokio::select! {
                    biased;
                    r = &mut send => return r,
                    () = conn.as_mut() => {}
                }
                // The connection ended before the response head: the request says why.
                driver = None;
                send.await
            }
            Hop::H2(mut sender, door) => {
                let mut req = req;
                // HTTP/2 carries the authority in the URI.
                let pq = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_else(|| "/".into());
                if let Ok(uri) = format!("https://{host}{pq}").parse() {
                    *req.uri_mut() = uri;
                }
                *req.version_mut() = http::Version::HTTP_2;
                req.headers_mut().insert(
                    crate::tunnel::frame::DOOR_HEADER,
                    HeaderValue::from_static(door.as_str()),
                );
                sender.send_request(req).await
            }
        }
    };
    let link = inflight.link().clone();
    let sent = tokio::select! {
        r = tokio::time::timeout(state.upstream_timeout, exchange) => r,
        _ = link.lost() => return Err(Failed::Link("the appliance link went silent".into())),
    };
    match sent {
        Ok(Ok(resp)) => {
            // A response is as good a sign of life as a heartbeat (which a busy appliance
            // may send late).
            link.touch();
            let (mut parts, body) = resp.into_parts();
            for h in HOP {
                parts.headers.remove(h);
            }
            parts.headers.remove(header::TRANSFER_ENCODING);
            let body = Counted {
                inner: body,
                _inflight: inflight,
                bytes: state.metrics.response_bytes(host),
                driver: driver.map(std::sync::Mutex::new),
            }
            .map_err(BoxError::from)
            .boxed();
            Ok(Response::from_parts(parts, body))
        }
        Ok(Err(e)) => Err(Failed::Link(e.to_string())),
        Err(_) => {
            tracing::warn!(
                host,
                node = link.node,
                "the appliance did not answer in time"
            );
            Err(Failed::Answer(plain(
                StatusCode::GATEWAY_TIMEOUT,
                "the appliance did not answer in time",
            )))
        }
    }
}

/// Plain HTTP: everything moves to HTTPS (308 keeps the method), except ACME's HTTP-01 path.
pub fn redirect<B>(
    req: &Request<B>,
    https_port: u16,
    http01: &super::acme::Http01,
) -> Response<EdgeBody> {
    if let Some(token) = req
        .uri()
        .path()
        .strip_prefix("/.well-known/acme-challenge/")
    {
        let answer = http01.read().ok().and_then(|m| m.get(token).cloned());
        return match answer {
            Some(key_auth) => full(StatusCode::OK, key_auth, "application/octet-stream"),
            None => plain(StatusCode::NOT_FOUND, "no such ACME challenge"),
        };
    }
    let Some(host) = request_host(req) else {
        return plain(StatusCode::BAD_REQUEST, "a Host header is required");
    };
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut resp = plain(StatusCode::PERMANENT_REDIRECT, "use HTTPS");
    if let Ok(v) = HeaderValue::from_str(&format!("https://{host}{port}{pq}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_headers_append_the_real_client() {
        let req = Request::builder()
            .uri("https://images.example.com/a?b=1")
            .header("x-forwarded-for", "6.6.6.6")
            .header("connection", "keep-alive")
            .body(())
            .unwrap();
        let out = to_upstream(req, "images.example.com", "192.0.2.7:5000".parse().unwrap());
        assert_eq!(out.uri(), "/a?b=1");
        let h = out.headers();
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["host"], "images.example.com");
        assert_eq!(
            h["forwarded"],
            "for=192.0.2.7;proto=https;host=\"images.example.com\""
        );
        assert!(!h.contains_key("connection"));
        assert_eq!(
            crate::server::forwarded_client(h),
            Some("192.0.2.7".parse().unwrap())
        );
    }
}
