//! The cache in front of the proxy: a request for a cached door (images, S3) is answered
//! from the store when a fresh entry exists, sent to the appliance once for all concurrent
//! misses of its key otherwise, and the answer kept when the appliance marked it cacheable.
//!
//! What must stay true:
//! - only GET and HEAD without `Authorization` use the cache; everything else (and the
//!   admin door, whatever it answers) passes through with `Cache-Status: fwd=bypass`;
//! - every response carries `Cache-Status` and `Age`, and never the surrogate tag header
//!   (the appliance's `Pixelport-Cache-Tag`, read into the entry and stripped);
//! - a purge removes every entry it names before it returns, and an answer fetched while a
//!   purge ran is not stored (the purge may have been for it);
//! - a `Range` request that misses goes to the appliance as it is, never turned into a
//!   whole-object fetch the client did not ask for; a hit answers it from the cached object.

use std::any::Any;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header, request};
use http_body_util::BodyExt;
use hyper::body::Body;

use super::fill::{Fill, Head, Phase};
use super::index::{Index, Selector};
use super::key::{self, Vary};
use super::meta::Meta;
use super::policy::{self, Decision, Refreshed, Stored};
use super::range;
use super::status::{CacheStatus, Forward};
use super::store::{Entry, Store};
use crate::edge::EdgeState;
use crate::edge::config::CacheConfig;
use crate::edge::proxy::{BoxError, EdgeAnswer, EdgeBody, route};
use crate::edge::router::UpstreamBody;

/// The appliance names an image response's source here (`s3://bucket/key`); the edge files
/// the entry under it and strips the header.
pub const TAG_HEADER: &str = "pixelport-cache-tag";

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("cannot open the edge cache at {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the cache did, counted (the edge's `/metrics` and the purge API's stats).
#[derive(Debug, Default)]
pub struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stale: AtomicU64,
    pub bypass: AtomicU64,
    pub collapsed: AtomicU64,
    pub stored: AtomicU64,
    pub purged: AtomicU64,
    /// Entries kept in memory only because the disk writer was behind.
    pub disk_skipped: AtomicU64,
}

/// The cache's state for the stats API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CacheStats {
    pub entries: usize,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub hit_ratio: f64,
    pub purged: u64,
}

pub struct EdgeCache {
    store: Arc<Store>,
    /// The entries' URLs and tags; `epoch` counts purges, so a fill that began before one
    /// is not stored after it.
    index: Arc<Mutex<(Index, u64)>>,
    /// Entries for the disk writer (one thread, a bounded queue: when the disk falls behind
    /// a burst of misses, entries stay in memory only rather than queueing without bound).
    disk_queue: Option<std::sync::mpsc::SyncSender<DiskJob>>,
    flights: Mutex<HashMap<String, Arc<Fill>>>,
    max_object: u64,
    lock_timeout: Duration,
    has_disk: bool,
    pub counters: Counters,
}

impl EdgeCache {
    /// Opens the store and indexes what the disk tier holds (blocking).
    pub fn open(cfg: &CacheConfig, data_dir: &Path) -> Result<Self, LayerError> {
        let dir = if cfg.path.is_empty() {
            data_dir.join("cache")
        } else {
            PathBuf::from(&cfg.path)
        };
        let disk = (cfg.disk_size.0 > 0).then_some((dir.as_path(), cfg.disk_size.0));
        let store = Store::open(cfg.memory_size.0, disk).map_err(|source| LayerError::Open {
            path: dir.clone(),
            source,
        })?;
        let mut index = Index::default();
        for (key, head) in store.heads() {
            if let Some(m) = Meta::decode(&head) {
                index.insert(&key, &m.host, &m.path, &m.tags);
            }
        }
        if !index.is_empty() {
            tracing::info!(entries = index.len(), dir = %dir.display(), "edge cache reopened");
        }
        let store = Arc::new(store);
        let index = Arc::new(Mutex::new((index, 0)));
        let disk_queue = match disk {
            Some(_) => {
                let (tx, rx) = std::sync::mpsc::sync_channel(DISK_QUEUE);
                let (s, i) = (store.clone(), index.clone());
                std::thread::Builder::new()
                    .name("edge-cache-disk".into())
                    .spawn(move || disk_writer(&rx, &s, &i))
                    .map_err(|source| LayerError::Open {
                        path: dir.clone(),
                        source,
                    })?;
                Some(tx)
            }
            None => None,
        };
        Ok(Self {
            store,
            index,
            disk_queue,
            flights: Mutex::new(HashMap::new()),
            max_object: cfg.max_object_size.0,
            lock_timeout: cfg.lock_timeout.0,
            has_disk: disk.is_some(),
            counters: Counters::default(),
        })
    }

    pub fn stats(&self) -> CacheStats {
        let s = self.store.stats();
        let hits = self.counters.hits.load(Ordering::Relaxed);
        let misses = self.counters.misses.load(Ordering::Relaxed)
            + self.counters.stale.load(Ordering::Relaxed);
        CacheStats {
            entries: self.index.lock().map(|i| i.0.len()).unwrap_or(0),
            memory_bytes: s.memory_bytes,
            disk_bytes: s.disk_bytes,
            hits,
            misses,
            hit_ratio: if hits + misses == 0 {
                0.0
            } else {
                hits as f64 / (hits + misses) as f64
            },
            purged: self.counters.purged.load(Ordering::Relaxed),
        }
    }

    /// Waits (blocking, up to `timeout`) until the entries queued for disk are written: at
    /// shutdown, so what was stored survives the restart.
    pub fn flush(&self, timeout: Duration) {
        let Some(queue) = &self.disk_queue else {
            return;
        };
        let (tx, rx) = std::sync::mpsc::channel();
        if queue.send(DiskJob::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(timeout);
        }
    }

    /// Removes every entry `selector` names (only among `hosts` when given); returns how
    /// many (blocking: file removals).
    pub fn purge(&self, selector: &Selector, hosts: Option<&[String]>) -> usize {
        let keys = match self.index.lock() {
            Ok(mut i) => {
                i.1 += 1;
                let mut keys = i.0.select(selector);
                if let Some(hosts) = hosts {
                    keys.retain(|k| i.0.host_of(k).is_some_and(|h| hosts.iter().any(|x| x == h)));
                }
                for k in &keys {
                    i.0.remove(k);
                }
                keys
            }
            Err(_) => return 0,
        };
        // New requests must not join a fill begun before the purge.
        if let Ok(mut f) = self.flights.lock() {
            f.clear();
        }
        for k in &keys {
            self.store.remove(k);
        }
        self.counters
            .purged
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        keys.len()
    }

    fn epoch(&self) -> u64 {
        self.index.lock().map(|i| i.1).unwrap_or(0)
    }

    /// Stores `body` under `key` unless a purge ran since `epoch`: in memory and the index
    /// at once (no I/O, so the next request finds it), then on disk (spawned off the async
    /// threads).
    fn put(self: &Arc<Self>, key: String, meta: Meta, body: Bytes, epoch: u64) {
        // Memory keeps the head decoded (the entry's memo); it is encoded for disk only, by
        // the disk writer, off the request's path.
        let entry = Entry::new(Bytes::new(), body);
        let meta = Arc::new(meta);
        let _ = entry.memo.set(meta.clone() as Arc<dyn Any + Send + Sync>);
        let Ok(mut index) = self.index.lock() else {
            return;
        };
        if index.1 != epoch {
            // A purge ran while this was fetched: it may have been for it.
            return;
        }
        let dropped = match self.store.put_memory(&key, entry.clone()) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot store an edge cache entry");
                return;
            }
        };
        index.0.insert(&key, &meta.host, &meta.path, &meta.tags);
        for d in &dropped {
            // Left memory and not on disk (memory only, or not yet written): gone.
            if !self.store.on_disk(d) {
                index.0.remove(d);
            }
        }
        drop(index);
        self.counters.stored.fetch_add(1, Ordering::Relaxed);
        if let Some(queue) = &self.disk_queue
            && let Err(std::sync::mpsc::TrySendError::Full(_)) =
                queue.try_send(DiskJob::Write(key, entry.body, meta, epoch))
        {
            self.counters.disk_skipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs `f` off the async threads when the store has a disk tier.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&EdgeCache) -> T + Send + 'static,
    ) -> Option<T> {
        if self.has_disk {
            let me = self.clone();
            tokio::task::spawn_blocking(move || f(&me)).await.ok()
        } else {
            Some(f(self))
        }
    }

    /// The entry under `key` whose responses vary as `vary` says.
    async fn lookup(self: &Arc<Self>, key: &str, vary: Vary) -> Option<(Entry, Arc<Meta>)> {
        let entry = match self.store.get_memory(key) {
            Some(e) => e,
            None if self.store.on_disk(key) => {
                let k = key.to_owned();
                self.blocking(move |c| c.store.get(&k)).await??
            }
            None => return None,
        };
        let memo = entry.memo.get_or_init(|| match Meta::decode(&entry.head) {
            Some(m) => Arc::new(m),
            None => Arc::new(()),
        });
        let meta = memo.clone().downcast::<Meta>().ok()?;
        (meta.stored.vary == vary).then_some((entry, meta))
    }

    /// Joins the flight for `key`, or starts it (then the caller leads).
    fn join(self: &Arc<Self>, key: &str) -> (Arc<Fill>, Option<Flight>) {
        let Ok(mut f) = self.flights.lock() else {
            return (Fill::new(), None);
        };
        if let Some(fill) = f.get(key) {
            return (fill.clone(), None);
        }
        let fill = Fill::new();
        f.insert(key.to_owned(), fill.clone());
        let flight = Flight {
            cache: self.clone(),
            key: key.to_owned(),
            fill: fill.clone(),
        };
        (fill, Some(flight))
    }
}

/// Entries waiting for the disk writer at most.
const DISK_QUEUE: usize = 256;

/// Work for the disk writer.
enum DiskJob {
    /// An entry's body and head, and the purge epoch it was fetched in.
    Write(String, Bytes, Arc<Meta>, u64),
    /// Everything queued before this is written: say so.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The disk writer: writes each entry, lets the index forget what disk dropped for it, and
/// removes the file again when a purge ran since the entry was fetched.
fn disk_writer(
    jobs: &std::sync::mpsc::Receiver<DiskJob>,
    store: &Store,
    index: &Mutex<(Index, u64)>,
) {
    while let Ok(job) = jobs.recv() {
        let (key, entry, epoch) = match job {
            DiskJob::Write(k, body, meta, epoch) => {
                (k, Entry::new(meta.encode().into(), body), epoch)
            }
            DiskJob::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        match store.put_disk(&key, &entry) {
            Ok(dropped) => {
                let purged = match index.lock() {
                    Ok(mut i) => {
                        for d in &dropped {
                            i.0.remove(d);
                        }
                        // Purged since it was fetched, or left memory (and so the index)
                        // before it reached disk: a file no purge could find must go.
                        i.1 != epoch || i.0.host_of(&key).is_none()
                    }
                    Err(_) => false,
                };
                if purged {
                    store.remove(&key);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot write an edge cache entry to disk"),
        }
    }
}

/// A leader's hold on its flight: when it ends (the fill is complete, or the leader gave up
/// or went away) later requests no longer join it, and waiters still waiting for the head
/// go to the appliance themselves.
struct Flight {
    cache: Arc<EdgeCache>,
    key: String,
    fill: Arc<Fill>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.fill.publish(Phase::Alone);
        if let Ok(mut f) = self.cache.flights.lock()
            && f.get(&self.key).is_some_and(|x| Arc::ptr_eq(x, &self.fill))
        {
            f.remove(&self.key);
        }
    }
}

/// One cacheable request's context, owned so a background revalidation can take it.
#[derive(Clone)]
struct Ctx {
    state: Arc<EdgeState>,
    cache: Arc<EdgeCache>,
    host: String,
    client: SocketAddr,
    path: String,
    class: u8,
    /// The request as the cache sees it: GET, no conditionals or range, Accept normalised
    /// to its class.
    uri: http::Uri,
    headers: HeaderMap,
}

impl Ctx {
    fn parts(&self) -> request::Parts {
        let mut p = Request::new(()).into_parts().0;
        p.method = Method::GET;
        p.uri = self.uri.clone();
        p.headers = self.headers.clone();
        p
    }

    fn key(&self, vary: Vary) -> String {
        match vary {
            Vary::AcceptClass => key::entry_key(&self.host, &self.path, Some(self.class)),
            _ => key::url_key(&self.host, &self.path),
        }
    }
}

/// What the client asked that the cache answers itself: HEAD, conditionals, a range.
struct ClientView {
    head: bool,
    /// The encoding the client takes for a text response.
    encoding: Option<crate::edge::compress::Encoding>,
    if_none_match: Option<String>,
    range: Option<String>,
    if_range: Option<String>,
}

impl ClientView {
    fn of(parts: &request::Parts) -> Self {
        let get = |h: header::HeaderName| {
            parts
                .headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Self {
            head: parts.method == Method::HEAD,
            encoding: crate::edge::compress::negotiate(
                parts
                    .headers
                    .get(header::ACCEPT_ENCODING)
                    .and_then(|v| v.to_str().ok()),
            ),
            if_none_match: get(header::IF_NONE_MATCH),
            range: get(header::RANGE),
            if_range: get(header::IF_RANGE),
        }
    }
}

enum Source {
    Bytes(Bytes),
    Fill(Arc<Fill>, Option<u64>),
    Stream(EdgeBody),
}

fn boxed_bytes(b: Bytes) -> EdgeBody {
    http_body_util::Full::new(b)
        .map_err(|never| match never {})
        .boxed()
}

fn empty_body() -> EdgeBody {
    boxed_bytes(Bytes::new())
}

fn upstream_empty() -> UpstreamBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// Whether `etag` is in an `If-None-Match` list (weak comparison).
fn etag_matches(list: &str, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let etag = bare(etag);
    list.split(',').any(|t| t.trim() == "*" || bare(t) == etag)
}

/// The answer to the client: its conditional, HEAD and range applied, the cache's headers
/// set, the surrogate tag gone.
fn respond(
    view: &ClientView,
    status: StatusCode,
    mut headers: HeaderMap,
    body: Source,
    cache_status: CacheStatus,
) -> Response<EdgeBody> {
    headers.remove(TAG_HEADER);
    headers.insert("cache-status", cache_status.header());
    if !headers.contains_key(header::AGE) {
        headers.insert(header::AGE, HeaderValue::from_static("0"));
    }
    let mut status = status;
    let etag = headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if status == StatusCode::OK
        && let (Some(list), Some(etag)) = (&view.if_none_match, &etag)
        && etag_matches(list, etag)
    {
        headers.remove(header::CONTENT_LENGTH);
        let mut resp = Response::new(empty_body());
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        *resp.headers_mut() = headers;
        return resp;
    }
    let body = match body {
        Source::Bytes(bytes) if status == StatusCode::OK => {
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            let len = bytes.len() as u64;
            let modified = headers
                .get(header::LAST_MODIFIED)
                .and_then(|v| v.to_str().ok());
            match range::answer(
                view.range.as_deref(),
                view.if_range.as_deref(),
                etag.as_deref(),
                modified,
                len,
            ) {
                range::Answer::Whole => {
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                    boxed_bytes(bytes)
                }
                range::Answer::Part { start, end } => {
                    status = StatusCode::PARTIAL_CONTENT;
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                        headers.insert(header::CONTENT_RANGE, v);
                    }
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
                    let (s, e) = (
                        usize::try_from(start).unwrap_or(0),
                        usize::try_from(end).unwrap_or(0),
                    );
                    boxed_bytes(bytes.slice(s..=e.min(bytes.len().saturating_sub(1))))
                }
                range::Answer::Unsatisfiable => {
                    status = StatusCode::RANGE_NOT_SATISFIABLE;
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                        headers.insert(header::CONTENT_RANGE, v);
                    }
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                    empty_body()
                }
            }
        }
        Source::Bytes(bytes) => boxed_bytes(bytes),
        Source::Fill(fill, length) => fill.reader(length).map_err(BoxError::from).boxed(),
        Source::Stream(b) => b,
    };
    let body = if view.head { empty_body() } else { body };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// The body of a hit in the client's encoding: for a text response and a client taking
/// Brotli or gzip, the encoded variant, kept in the store as an entry of its own (filed
/// under the same URL and tags, so purges take it too); otherwise the entry as it is.
async fn encoded(
    cache: &Arc<EdgeCache>,
    key: &str,
    view: &ClientView,
    meta: &Arc<Meta>,
    status: StatusCode,
    mut headers: HeaderMap,
    body: Bytes,
) -> (HeaderMap, Source) {
    use crate::edge::compress;
    if !compress::compressible(status, &headers) {
        return (headers, Source::Bytes(body));
    }
    compress::add_vary(&mut headers);
    let Some(enc) = view.encoding.filter(|_| !view.head) else {
        return (headers, Source::Bytes(body));
    };
    // Named by the identity body's checksum too: new content, new variant.
    let vkey = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(key.as_bytes());
        h.update(enc.token().as_bytes());
        h.update(crc32fast::hash(&body).to_be_bytes());
        hex::encode(h.finalize())
    };
    let stored = match cache.store.get_memory(&vkey) {
        Some(e) => Some(e.body),
        None if cache.store.on_disk(&vkey) => {
            let k = vkey.clone();
            cache
                .blocking(move |c| c.store.get(&k))
                .await
                .flatten()
                .map(|e| e.body)
        }
        None => None,
    };
    let bytes = match stored {
        Some(b) => b,
        None => {
            let identity = body.clone();
            let made = tokio::task::spawn_blocking(move || compress::encode(enc, &identity))
                .await
                .ok()
                .and_then(Result::ok);
            let Some(made) = made else {
                return (headers, Source::Bytes(body));
            };
            let made = Bytes::from(made);
            let variant = Meta {
                stored: meta.stored.clone(),
                host: meta.host.clone(),
                path: meta.path.clone(),
                tags: meta.tags.clone(),
            };
            cache.put(vkey, variant, made.clone(), cache.epoch());
            made
        }
    };
    compress::encoded_headers(&mut headers, enc, bytes.len());
    (headers, Source::Stream(boxed_bytes(bytes)))
}

/// A response that did not use the cache.
pub fn bypass(mut resp: Response<EdgeBody>) -> Response<EdgeBody> {
    let h = resp.headers_mut();
    h.remove(TAG_HEADER);
    h.insert(
        "cache-status",
        CacheStatus::Forwarded {
            why: Forward::Bypass,
            stored: false,
            collapsed: false,
            status_304: false,
        }
        .header(),
    );
    if !h.contains_key(header::AGE) {
        h.insert(header::AGE, HeaderValue::from_static("0"));
    }
    resp
}

fn forwarded(why: Forward, stored: bool) -> CacheStatus {
    CacheStatus::Forwarded {
        why,
        stored,
        collapsed: false,
        status_304: false,
    }
}

/// Serves a request for a cached door of `host`.
pub async fn serve(
    state: &Arc<EdgeState>,
    cache: &Arc<EdgeCache>,
    req: Request<UpstreamBody>,
    host: &str,
    client: SocketAddr,
) -> Response<EdgeBody> {
    let usable = matches!(*req.method(), Method::GET | Method::HEAD)
        && !req.headers().contains_key(header::AUTHORIZATION)
        && req.body().is_end_stream();
    if !usable {
        cache.counters.bypass.fetch_add(1, Ordering::Relaxed);
        return bypass(route(state, req, host, client).await);
    }
    let (parts, _) = req.into_parts();
    let view = ClientView::of(&parts);
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut norm = Request::new(()).into_parts().0;
    norm.method = Method::GET;
    norm.uri = parts.uri.clone();
    norm.headers = parts.headers.clone();
    for h in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::RANGE,
        header::IF_RANGE,
    ] {
        norm.headers.remove(h);
    }
    policy::normalize(&mut norm);
    let class = key::accept_class(
        parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    let ctx = Ctx {
        state: state.clone(),
        cache: cache.clone(),
        host: host.to_ascii_lowercase(),
        client,
        path,
        class,
        uri: norm.uri.clone(),
        headers: norm.headers.clone(),
    };
    let now = SystemTime::now();
    let mut found = None;
    for vary in [Vary::AcceptClass, Vary::Nothing] {
        let key = ctx.key(vary);
        if let Some((entry, meta)) = cache.lookup(&key, vary).await {
            found = Some((key, entry, meta));
            break;
        }
    }
    if let Some((key, entry, meta)) = found {
        // An appliance that has just connected may yet send purges the edge missed: until
        // it has, its entries are revalidated, not trusted (with no appliance connected at
        // all, they are all there is).
        if state.router.sync_state(&ctx.host) == Some(false) {
            norm.headers
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
        match meta.stored.decide(&norm, now) {
            Decision::Fresh { head, ttl } => {
                cache.counters.hits.fetch_add(1, Ordering::Relaxed);
                let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
                let (headers, body) = encoded(
                    cache,
                    &key,
                    &view,
                    &meta,
                    head.status,
                    head.headers,
                    entry.body,
                )
                .await;
                return respond(&view, head.status, headers, body, CacheStatus::Hit { ttl });
            }
            Decision::ServeAndRevalidate { head, request } => {
                cache.counters.hits.fetch_add(1, Ordering::Relaxed);
                let stale_by = stale_secs(&meta.stored, now);
                let (fill, flight) = cache.join(&key);
                drop(fill);
                if let Some(flight) = flight {
                    let ctx = ctx.clone();
                    let (entry, meta) = (entry.clone(), meta.clone());
                    tokio::spawn(async move {
                        let plan = Plan::Revalidate {
                            request: Box::new(request),
                            entry,
                            meta,
                        };
                        if let Led::Shared(_, Some(tee)) =
                            lead(&ctx, flight, plan, Forward::Stale).await
                        {
                            tee.drain().await;
                        }
                    });
                }
                return respond(
                    &view,
                    head.status,
                    head.headers,
                    Source::Bytes(entry.body),
                    CacheStatus::Hit { ttl: -stale_by },
                );
            }
            Decision::Revalidate { request } => {
                let why = if policy::asks_for_fresh(&parts.headers) {
                    Forward::Request
                } else {
                    Forward::Stale
                };
                cache.counters.stale.fetch_add(1, Ordering::Relaxed);
                let plan = Plan::Revalidate {
                    request: Box::new(request),
                    entry,
                    meta,
                };
                return collapse(&ctx, &view, parts, key, plan, why).await;
            }
        }
    }
    cache.counters.misses.fetch_add(1, Ordering::Relaxed);
    if view.range.is_some() {
        // A range that misses goes as it is: the client asked for part of the object.
        let resp = route(
            state,
            Request::from_parts(parts, upstream_empty()),
            host,
            client,
        )
        .await;
        return pass(&view, resp, Forward::Miss);
    }
    let key = ctx.key(Vary::AcceptClass);
    collapse(&ctx, &view, parts, key, Plan::Fetch, Forward::Miss).await
}

/// How stale an entry is, in whole seconds rounded up (a stale entry never reads `ttl=0`).
fn stale_secs(stored: &Stored, now: SystemTime) -> i64 {
    let s = stored.stale_by(now).as_secs_f64().ceil().max(1.0);
    s.min(i64::MAX as f64) as i64
}

/// What the leader asks the appliance.
enum Plan {
    /// A full fetch.
    Fetch,
    /// A conditional request (`request` carries the entry's validators).
    Revalidate {
        request: Box<request::Parts>,
        entry: Entry,
        meta: Arc<Meta>,
    },
}

/// What the leader got.
enum Led {
    /// Published to the fill: the leader reads the body from the [`Tee`] when there is one
    /// (it streams it to the fill), from the fill otherwise (already complete there).
    Shared(Arc<Head>, Option<Box<Tee>>),
    /// Not shareable: the leader's own answer.
    Alone(Response<EdgeBody>),
}

async fn collapse(
    ctx: &Ctx,
    view: &ClientView,
    parts: request::Parts,
    key: String,
    plan: Plan,
    why: Forward,
) -> Response<EdgeBody> {
    let (fill, flight) = ctx.cache.join(&key);
    let led = match flight {
        Some(flight) => Some(lead(ctx, flight, plan, why).await),
        None => None,
    };
    match led {
        Some(Led::Shared(head, tee)) => respond(
            view,
            head.status,
            head.headers.clone(),
            match tee {
                Some(tee) => Source::Stream((*tee).boxed()),
                None => Source::Fill(fill, head.length),
            },
            head.cache_status,
        ),
        Some(Led::Alone(resp)) => pass(view, resp, why),
        None => {
            if let Some(Phase::Shared(head)) = fill.head(ctx.cache.lock_timeout).await {
                ctx.cache.counters.collapsed.fetch_add(1, Ordering::Relaxed);
                // Not at the leader's client's pace.
                fill.detach();
                let cache_status = match head.cache_status {
                    CacheStatus::Forwarded {
                        why,
                        stored,
                        status_304,
                        ..
                    } => CacheStatus::Forwarded {
                        why,
                        stored,
                        collapsed: true,
                        status_304,
                    },
                    hit => hit,
                };
                return respond(
                    view,
                    head.status,
                    head.headers.clone(),
                    Source::Fill(fill, head.length),
                    cache_status,
                );
            }
            // The leader's answer cannot be shared, or it is late: go alone, uncached.
            let resp = route(
                &ctx.state,
                Request::from_parts(parts, upstream_empty()),
                &ctx.host,
                ctx.client,
            )
            .await;
            pass(view, resp, why)
        }
    }
}

/// The appliance's answer as it is, not stored.
fn pass(view: &ClientView, resp: Response<EdgeBody>, why: Forward) -> Response<EdgeBody> {
    let (p, b) = resp.into_parts();
    respond(
        view,
        p.status,
        p.headers,
        Source::Stream(b),
        forwarded(why, false),
    )
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The surrogate tags of a response, taken out of its headers.
fn take_tags(headers: &mut HeaderMap) -> Vec<String> {
    let tags = headers
        .get_all(TAG_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    headers.remove(TAG_HEADER);
    tags
}

/// Publishes a complete body from the store to the flight's readers.
fn share_bytes(flight: Flight, head: Head, body: Bytes) -> Led {
    let head = Arc::new(head);
    flight.fill.publish(Phase::Shared(head.clone()));
    flight.fill.push(body);
    flight.fill.finish(Ok(()));
    Led::Shared(head, None)
}

/// The leader's request to the appliance, and what becomes of its answer.
async fn lead(ctx: &Ctx, flight: Flight, plan: Plan, why: Forward) -> Led {
    let epoch = ctx.cache.epoch();
    let upstream = match &plan {
        Plan::Fetch => ctx.parts(),
        Plan::Revalidate { request, .. } => {
            let mut p = Request::new(()).into_parts().0;
            p.method = Method::GET;
            p.uri = request.uri.clone();
            p.headers = request.headers.clone();
            p
        }
    };
    let resp = route(
        &ctx.state,
        Request::from_parts(upstream, upstream_empty()),
        &ctx.host,
        ctx.client,
    )
    .await;
    let now = SystemTime::now();
    let (mut parts, body) = resp.into_parts();
    let tags = take_tags(&mut parts.headers);
    let edge_answer = parts.extensions.get::<EdgeAnswer>().is_some();
    if let Plan::Revalidate {
        request,
        entry,
        meta,
    } = &plan
    {
        if parts.status == StatusCode::NOT_MODIFIED {
            if let Refreshed::NotModified(stored, _) = meta.stored.refresh(request, &parts, now) {
                let ttl = stored.policy.time_to_live(now);
                let fresh = Meta {
                    stored: *stored,
                    host: meta.host.clone(),
                    path: meta.path.clone(),
                    tags: meta.tags.clone(),
                };
                let mut headers = fresh.stored.headers.clone();
                headers.insert(
                    header::AGE,
                    HeaderValue::from(fresh.stored.policy.age(now).as_secs()),
                );
                let head = Head {
                    status: fresh.stored.status,
                    headers,
                    cache_status: CacheStatus::Forwarded {
                        why,
                        stored: !ttl.is_zero(),
                        collapsed: false,
                        status_304: true,
                    },
                    length: Some(entry.body.len() as u64),
                };
                let key = ctx.key(fresh.stored.vary);
                let body = entry.body.clone();
                ctx.cache.put(key, fresh, body.clone(), epoch);
                return share_bytes(flight, head, body);
            }
            // A 304 the entry does not match (another validator): refetch in full.
            let cache = ctx.cache.clone();
            let key = ctx.key(meta.stored.vary);
            let _ = cache.blocking(move |c| c.store.remove(&key)).await;
            return Box::pin(lead(ctx, flight, Plan::Fetch, why)).await;
        }
        if (parts.status.is_server_error() || edge_answer)
            && let Some(head) = meta.stored.on_error(now)
        {
            let head = Head {
                status: head.status,
                headers: head.headers,
                cache_status: CacheStatus::Hit {
                    ttl: -stale_secs(&meta.stored, now),
                },
                length: Some(entry.body.len() as u64),
            };
            return share_bytes(flight, head, entry.body.clone());
        }
    }
    let length = content_length(&parts.headers);
    let stored = if edge_answer
        || parts.status == StatusCode::PARTIAL_CONTENT
        || length.is_none_or(|l| l > ctx.cache.max_object)
    {
        None
    } else {
        Stored::new(&ctx.parts(), &parts, now)
    };
    if let Plan::Revalidate { meta, .. } = &plan
        && stored.is_none()
    {
        // The appliance no longer lets this be kept: the old entry goes.
        let key = ctx.key(meta.stored.vary);
        let cache = ctx.cache.clone();
        let _ = cache.blocking(move |c| c.store.remove(&key)).await;
    }
    if stored.is_none() && !edge_answer {
        drop(flight);
        return Led::Alone(Response::from_parts(parts, body));
    }
    // Shared: the edge's own error answers (so N waiters do not each retry a dead
    // appliance) and what is stored.
    let head = Arc::new(Head {
        status: parts.status,
        headers: parts.headers.clone(),
        cache_status: forwarded(why, stored.is_some()),
        length,
    });
    flight.fill.publish(Phase::Shared(head.clone()));
    let key = stored.as_ref().map(|s| ctx.key(s.vary));
    let end = Completion {
        flight,
        stored: stored.map(|s| (s, key.unwrap_or_default())),
        length,
        host: ctx.host.clone(),
        path: ctx.path.clone(),
        tags,
        epoch,
    };
    Led::Shared(head, Some(Box::new(Tee::new(body, end))))
}

/// What becomes of a shared body as it streams and when it ends.
struct Completion {
    flight: Flight,
    /// The policy to store the body under, and its key (`None`: shared, not stored).
    stored: Option<(Stored, String)>,
    length: Option<u64>,
    host: String,
    path: String,
    tags: Vec<String>,
    epoch: u64,
}

impl Completion {
    fn push(&self, data: Bytes) {
        self.flight.fill.push(data);
    }

    fn fail(self, why: String) {
        self.flight.fill.finish(Err(why));
    }

    /// The body is complete: into the store before the readers see the end, so a client's
    /// next request finds the entry rather than this flight.
    fn complete(self) {
        let Self {
            flight,
            stored,
            length,
            host,
            path,
            tags,
            epoch,
        } = self;
        let bytes = flight.fill.bytes();
        if let Some((stored, key)) = stored
            && length.is_none_or(|l| l == bytes.len() as u64)
        {
            let meta = Meta {
                stored,
                host,
                path,
                tags,
            };
            flight.cache.put(key, meta, bytes, epoch);
        }
        let fill = flight.fill.clone();
        drop(flight);
        fill.finish(Ok(()));
    }
}

/// The leader's body: the appliance's body as it arrives, each chunk handed to the fill
/// (for the waiters and the store) on its way to the leader's client, in the leader's own
/// task (no hand-off to another task per chunk).
///
/// The leader's client must not set the pace for anyone else: as soon as another request
/// waits on the fill, it detaches the appliance's body into a task of its own (then the
/// leader, too, reads the rest from the fill). So does the leader's client going away first
/// (or asking HEAD, or getting a 304), so waiters and the store still get the whole body.
struct Tee {
    slot: Slot,
    fill: Arc<Fill>,
    /// Data chunks handed on so far (where to go on reading the fill after a detach).
    sent: usize,
    /// The rest, from the fill, once detached.
    reader: Option<super::fill::Reader>,
    /// The body ended here (complete or failed).
    done: bool,
    length: Option<u64>,
}

/// The appliance's body and what becomes of it, until it ends or is detached.
type Slot = Arc<Mutex<Option<(EdgeBody, Completion)>>>;

impl Tee {
    fn new(body: EdgeBody, end: Completion) -> Self {
        let fill = end.flight.fill.clone();
        let length = end.length;
        let slot: Slot = Arc::new(Mutex::new(Some((body, end))));
        let detach = slot.clone();
        fill.on_detach(Box::new(move || {
            if let Some((body, end)) = detach.lock().ok().and_then(|mut s| s.take()) {
                spawn_pump(body, end);
            }
        }));
        Self {
            slot,
            fill,
            sent: 0,
            reader: None,
            done: false,
            length,
        }
    }

    /// Reads the rest of the body into the fill (no client).
    async fn drain(self) {
        let taken = self.slot.lock().ok().and_then(|mut s| s.take());
        if let Some((body, end)) = taken {
            pump(body, end).await;
        }
    }
}

fn spawn_pump(body: EdgeBody, end: Completion) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(pump(body, end));
        }
        Err(_) => end.fail("the edge is shutting down".into()),
    }
}

async fn pump(mut body: EdgeBody, end: Completion) {
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    end.push(data);
                }
            }
            Some(Err(e)) => return end.fail(e.to_string()),
            None => return end.complete(),
        }
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(reader) = self.reader.as_mut() {
            return std::pin::Pin::new(reader)
                .poll_frame(cx)
                .map_err(BoxError::from);
        }
        let slot = self.slot.clone();
        let Ok(mut guard) = slot.lock() else {
            return Poll::Ready(Some(Err("the shared response failed".into())));
        };
        let Some((body, end)) = guard.as_mut() else {
            // Detached: the rest comes from the fill.
            drop(guard);
            let reader = self.fill.reader_from(self.sent, self.length);
            self.reader = Some(reader);
            return self.poll_frame(cx);
        };
        match std::pin::Pin::new(&mut *body).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref().filter(|d| !d.is_empty()) {
                    end.push(data.clone());
                    self.sent += 1;
                }
                // hyper stops polling a body that says it has ended (its length reached):
                // complete now rather than on drop.
                if body.is_end_stream()
                    && let Some((_, end)) = guard.take()
                {
                    end.complete();
                    self.done = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some((_, end)) = guard.take() {
                    end.fail(e.to_string());
                }
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                if let Some((_, end)) = guard.take() {
                    end.complete();
                }
                self.done = true;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self.length {
            Some(n) => hyper::body::SizeHint::with_exact(n),
            None => hyper::body::SizeHint::default(),
        }
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        if let Some((body, end)) = self.slot.lock().ok().and_then(|mut s| s.take()) {
            spawn_pump(body, end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly_and_knows_the_wildcard() {
        assert!(etag_matches("\"a\"", "\"a\""));
        assert!(etag_matches("W/\"a\"", "\"a\""));
        assert!(etag_matches("\"x\", \"a\"", "W/\"a\""));
        assert!(etag_matches("*", "\"a\""));
        assert!(!etag_matches("\"b\"", "\"a\""));
    }

    #[test]
    fn the_tag_header_is_read_and_removed() {
        let mut h = HeaderMap::new();
        h.append(TAG_HEADER, HeaderValue::from_static("s3://b/a.jpg"));
        h.append(
            TAG_HEADER,
            HeaderValue::from_static("s3://b/c.jpg, s3://b/d"),
        );
        assert_eq!(
            take_tags(&mut h),
            vec!["s3://b/a.jpg", "s3://b/c.jpg", "s3://b/d"]
        );
        assert!(!h.contains_key(TAG_HEADER));
    }
}
