//! Which appliance connection a public request goes to: the links serving its `Host`,
//! least requests in flight first, skipping links that are draining.
//!
//! What must stay true: a link is only ever chosen for a hostname granted to its identity;
//! a draining link gets no new request; a link is forgotten as soon as its connection ends.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::tunnel::frame::{Door, Grant};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A request body on its way to an appliance.
pub type UpstreamBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// What carries a link's requests.
#[derive(Debug)]
pub enum Carrier {
    /// QUIC: a stream per request.
    Quic(quinn::Connection),
    /// The TCP fallback: HTTP/2 with the edge as client; `closer` ends the connection.
    H2 {
        sender: hyper::client::conn::http2::SendRequest<UpstreamBody>,
        closer: tokio::sync::watch::Sender<bool>,
    },
}

/// One appliance connection.
#[derive(Debug)]
pub struct Link {
    pub id: u64,
    pub pin: String,
    pub node: String,
    pub grants: Vec<Grant>,
    pub carrier: Carrier,
    /// Control frames for the appliance (purge confirmations, relays), written by the
    /// connection's own task.
    pub control: tokio::sync::mpsc::UnboundedSender<crate::tunnel::frame::Control>,
    /// The appliance's backlog of purges has been applied (its first purge frame).
    synced: AtomicBool,
    inflight: AtomicUsize,
    draining: AtomicBool,
    /// When the appliance was last heard on the control stream, in ms since `born`.
    seen_ms: AtomicU64,
    born: Instant,
}

impl Link {
    /// The appliance spoke (a heartbeat, any control frame, or a response head).
    pub fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.seen_ms.store(ms, Ordering::Relaxed);
    }

    /// Nothing heard for [`STALE_AFTER`](crate::tunnel::frame::STALE_AFTER) (QUIC
    /// heartbeats), or the HTTP/2 connection failed its pings: presumed dead.
    pub fn is_stale(&self) -> bool {
        match &self.carrier {
            Carrier::Quic(_) => {
                let seen = Duration::from_millis(self.seen_ms.load(Ordering::Relaxed));
                self.born.elapsed().saturating_sub(seen) > crate::tunnel::frame::STALE_AFTER
            }
            Carrier::H2 { sender, .. } => sender.is_closed(),
        }
    }

    pub fn is_closed(&self) -> bool {
        match &self.carrier {
            Carrier::Quic(c) => c.close_reason().is_some(),
            Carrier::H2 { sender, .. } => sender.is_closed(),
        }
    }

    pub fn close(&self, code: u32, reason: &[u8]) {
        match &self.carrier {
            Carrier::Quic(c) => c.close(quinn::VarInt::from_u32(code), reason),
            Carrier::H2 { closer, .. } => {
                let _ = closer.send(true);
            }
        }
    }

    pub fn transport(&self) -> &'static str {
        match &self.carrier {
            Carrier::Quic(_) => "quic",
            Carrier::H2 { .. } => "tcp",
        }
    }

    /// Resolves once the link is stale or its connection closed.
    pub async fn lost(&self) {
        loop {
            if self.is_stale() || self.is_closed() {
                return;
            }
            tokio::time::sleep(crate::tunnel::frame::HEARTBEAT).await;
        }
    }

    /// The hostnames this link serves, lowercase.
    pub fn hostnames(&self) -> Vec<String> {
        self.grants
            .iter()
            .map(|g| g.hostname.to_ascii_lowercase())
            .collect()
    }

    pub fn door_for(&self, host: &str) -> Option<Door> {
        self.grants
            .iter()
            .find(|g| g.hostname.eq_ignore_ascii_case(host))
            .map(|g| g.door)
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    /// The appliance's purges up to now are applied.
    pub fn mark_synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Counts a request on this link until the guard drops (with its response body).
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

#[derive(Debug)]
pub struct InFlight(Arc<Link>);

impl InFlight {
    pub fn link(&self) -> &Arc<Link> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let left = self.0.inflight.fetch_sub(1, Ordering::Relaxed) - 1;
        // A draining link is closed by us once its last request is done.
        if left == 0 && self.0.is_draining() {
            self.0.close(crate::tunnel::frame::close::DONE, b"drained");
        }
    }
}

#[derive(Debug, Default)]
pub struct Router {
    links: RwLock<Vec<Arc<Link>>>,
    next_id: AtomicU64,
}

impl Router {
    pub fn add(
        &self,
        pin: String,
        node: String,
        grants: Vec<Grant>,
        carrier: Carrier,
        control: tokio::sync::mpsc::UnboundedSender<crate::tunnel::frame::Control>,
    ) -> Arc<Link> {
        let link = Arc::new(Link {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            pin,
            node,
            grants,
            carrier,
            control,
            synced: AtomicBool::new(false),
            inflight: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            seen_ms: AtomicU64::new(0),
            born: Instant::now(),
        });
        if let Ok(mut l) = self.links.write() {
            l.push(link.clone());
        }
        link
    }

    pub fn remove(&self, id: u64) {
        if let Ok(mut l) = self.links.write() {
            l.retain(|x| x.id != id);
        }
    }

    /// The live link for `host` with the fewest requests in flight, skipping `avoid`.
    pub fn pick(&self, host: &str, avoid: &[u64]) -> Option<(Arc<Link>, Door)> {
        let links = self.links.read().ok()?;
        links
            .iter()
            .filter(|l| !l.is_draining() && !l.is_stale() && !avoid.contains(&l.id))
            .filter_map(|l| l.door_for(host).map(|d| (l, d)))
            .min_by_key(|(l, _)| l.inflight())
            .map(|(l, d)| (l.clone(), d))
    }

    /// Whether the cache may trust its entries for `host`: `None` when no appliance serving
    /// it is connected, `Some(true)` when one of them has delivered its backlog of purges,
    /// `Some(false)` while none has yet (just connected: entries are revalidated).
    pub fn sync_state(&self, host: &str) -> Option<bool> {
        let links = self.links.read().ok()?;
        let mut any = false;
        for l in links.iter().filter(|l| l.door_for(host).is_some()) {
            if l.is_synced() {
                return Some(true);
            }
            any = true;
        }
        any.then_some(false)
    }

    pub fn links(&self) -> Vec<Arc<Link>> {
        self.links.read().map(|l| l.clone()).unwrap_or_default()
    }

    /// Closes every link of an identity (revoked); returns how many.
    pub fn close_identity(&self, pin: &str, code: u32, reason: &[u8]) -> usize {
        let gone: Vec<Arc<Link>> = self.links().into_iter().filter(|l| l.pin == pin).collect();
        for l in &gone {
            l.close(code, reason);
            self.remove(l.id);
        }
        gone.len()
    }
}

/// The hostname of a request: the `Host` header or the URI's authority, without port,
/// lowercased.
pub fn request_host(req: &http::Request<impl Sized>) -> Option<String> {
    let raw = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))?;
    Some(strip_port(&raw).to_ascii_lowercase())
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split(']')
            .next()
            .map_or(host, |h| &host[..h.len() + 1]);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_port_and_case() {
        let req = http::Request::builder()
            .header("host", "Images.Example.com:8443")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req).as_deref(), Some("images.example.com"));
        let req = http::Request::builder()
            .uri("https://s3.example.com/b/k")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req).as_deref(), Some("s3.example.com"));
        assert_eq!(strip_port("[::1]:443"), "[::1]");
        assert_eq!(strip_port("localhost"), "localhost");
    }
}
