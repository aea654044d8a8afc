//! Eager presets: `[[images.presets]]` entries with `eager = true` are rendered in the
//! background right after an object is written through the S3 API (or the admin API: both
//! call every [`ChangeListener`]), so that the first visitor's request for the preset is a
//! cache hit. What must stay true:
//!
//! * The writer never waits. [`EagerRenderer::object_changed`] only matches the bucket and
//!   prefix filters (no I/O) and `try_send`s onto a bounded queue (`[images] eager_queue`);
//!   when the queue is full the object is dropped, counted
//!   (`pixelport_eager_renders_total{result="dropped"}`) and logged at most once a minute.
//!   An object already waiting is not queued twice: repeated writes coalesce.
//! * The pre-rendered variant is exactly what `/{sig}/pr:NAME/plain/s3://bucket/key` (or
//!   `preset:NAME`, or the preset's options spelled out) answers without an `Accept` header
//!   and without an `@extension`: the render goes through the handler's own
//!   [`Render::cached_or_run`], with the handler's cache key and single flight shared with
//!   visitors.
//! * Visitors come first: each render waits for [`Pool::admit_background`] (a worker idle,
//!   no one queued, one worker always left to visitors when there are two or more), and at
//!   most `Pool::background_limit()` renders run at once.
//! * Objects that are gone (deletes call the listeners too), over the size limit, or not
//!   images (neither an `image/*` content type nor an image file extension) are skipped after
//!   one HEAD, without reading their bytes.
//!
//! [`Pool::admit_background`]: crate::imaging::pool::Pool::admit_background

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{Caller, ImageError, ImagesState, Render};
use crate::imaging::negotiate::Accepted;
use crate::imaging::options::{self, ImageFormat};
use crate::imaging::pool::Ticket;
use crate::imaging::source::SourceError;
use crate::s3::ChangeListener;
use crate::store::{ObjectInfo, StoreError};
use crate::throttle::Throttle;

/// One eager preset's name and filters.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EagerPreset {
    name: String,
    /// Empty: every bucket.
    bucket: String,
    /// Empty: every key.
    prefix: String,
}

impl EagerPreset {
    fn matches(&self, bucket: &str, key: &str) -> bool {
        (self.bucket.is_empty() || self.bucket == bucket) && key.starts_with(&self.prefix)
    }
}

/// An object to render the matching eager presets of.
type Job = (String, String);

/// The [`ChangeListener`] that queues eager renders; the tasks that run them are started
/// beside it by [`EagerRenderer::start`].
pub struct EagerRenderer {
    presets: Arc<[EagerPreset]>,
    tx: mpsc::Sender<Job>,
    /// Objects queued and not yet taken by a worker.
    pending: Arc<Mutex<HashSet<Job>>>,
    state: Arc<ImagesState>,
    drops: Throttle,
}

/// How the eager result of one object and preset is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Skipped,
    Dropped,
    Error,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Skipped => "skipped",
            Outcome::Dropped => "dropped",
            Outcome::Error => "error",
        }
    }
}

fn count(state: &ImagesState, outcome: Outcome, n: usize) {
    state
        .metrics
        .eager_renders
        .with_label_values(&[outcome.label()])
        .inc_by(n as u64);
}

impl EagerRenderer {
    /// Starts the render tasks (they end when `stop` turns true) and returns the listener,
    /// or `None` when no preset is eager or the cache is off (an eager render would be
    /// thrown away).
    pub fn start(
        state: Arc<ImagesState>,
        stop: watch::Receiver<bool>,
    ) -> Option<(Arc<Self>, Vec<JoinHandle<()>>)> {
        let presets: Arc<[EagerPreset]> = state
            .config
            .presets
            .iter()
            .filter(|p| p.eager)
            .map(|p| EagerPreset {
                name: p.name.clone(),
                bucket: p.bucket.clone(),
                prefix: p.prefix.clone(),
            })
            .collect();
        if presets.is_empty() {
            return None;
        }
        if state.cache.is_none() {
            tracing::warn!("eager presets are configured but the cache is off: ignoring them");
            return None;
        }
        let (tx, rx) = mpsc::channel(state.config.eager_queue.max(1));
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let pending = Arc::new(Mutex::new(HashSet::new()));
        let tasks = (0..state.pool.background_limit())
            .map(|_| {
                let worker = Worker {
                    state: state.clone(),
                    presets: presets.clone(),
                    pending: pending.clone(),
                };
                tokio::spawn(worker.run(rx.clone(), stop.clone()))
            })
            .collect();
        tracing::info!(
            presets = presets.len(),
            queue = state.config.eager_queue,
            "eager presets enabled"
        );
        let listener = Self {
            presets,
            tx,
            pending,
            state,
            drops: Throttle::new(Duration::from_secs(60)),
        };
        Some((Arc::new(listener), tasks))
    }
}

impl ChangeListener for EagerRenderer {
    fn object_changed(&self, bucket: &str, key: &str) {
        let n = self
            .presets
            .iter()
            .filter(|p| p.matches(bucket, key))
            .count();
        if n == 0 {
            return;
        }
        let job = (bucket.to_owned(), key.to_owned());
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if !pending.insert(job.clone()) {
                return; // already queued: that render will see this write
            }
        }
        if let Err(e) = self.tx.try_send(job) {
            let job = match e {
                mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
            };
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&job);
            count(&self.state, Outcome::Dropped, n);
            if let Some(suppressed) = self.drops.allow() {
                tracing::warn!(
                    bucket,
                    key,
                    suppressed,
                    "eager render queue full; not pre-rendering this object \
                     (at most one such warning a minute; `suppressed` counts the ones left out)"
                );
            }
        }
    }
}

/// One of the tasks that take objects off the queue and render their presets.
struct Worker {
    state: Arc<ImagesState>,
    presets: Arc<[EagerPreset]>,
    pending: Arc<Mutex<HashSet<Job>>>,
}

impl Worker {
    async fn run(
        self,
        rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let job = tokio::select! {
                job = async { rx.lock().await.recv().await } => job,
                _ = stop.changed() => return,
            };
            let Some(job) = job else { return };
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&job);
            tokio::select! {
                _ = self.object(&job.0, &job.1) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Renders every matching preset of one object, or skips them all after one HEAD.
    async fn object(&self, bucket: &str, key: &str) {
        let state = &*self.state;
        let presets: Vec<&EagerPreset> = self
            .presets
            .iter()
            .filter(|p| p.matches(bucket, key))
            .collect();
        let info = match state.store.head_object(bucket, key).await {
            Ok(info) => info,
            Err(StoreError::NoSuchKey(_) | StoreError::NoSuchBucket(_)) => {
                count(state, Outcome::Skipped, presets.len());
                return;
            }
            Err(e) => {
                tracing::warn!(bucket, key, error = %e, "eager render: cannot read the object");
                count(state, Outcome::Error, presets.len());
                return;
            }
        };
        if !looks_like_image(&info) {
            tracing::debug!(bucket, key, "eager render: not an image; skipped");
            count(state, Outcome::Skipped, presets.len());
            return;
        }
        for preset in presets {
            let started = Instant::now();
            let outcome = match self.preset(bucket, key, &info, preset).await {
                Ok(outcome) => outcome,
                Err(ImageError::Source(SourceError::NotFound(_) | SourceError::Encrypted(_))) => {
                    Outcome::Skipped
                }
                Err(e) => {
                    tracing::warn!(bucket, key, preset = preset.name, error = %e, "eager render failed");
                    Outcome::Error
                }
            };
            tracing::debug!(
                bucket,
                key,
                preset = preset.name,
                result = outcome.label(),
                ms = started.elapsed().as_secs_f64() * 1000.0,
                "eager render"
            );
            count(state, outcome, 1);
        }
    }

    /// Renders one preset of one object through the handler's render path: once per
    /// format negotiation can pick (AVIF, WebP, the source's own), so the first visitor of
    /// each kind of browser is a hit.
    async fn preset(
        &self,
        bucket: &str,
        key: &str,
        info: &ObjectInfo,
        preset: &EagerPreset,
    ) -> Result<Outcome, ImageError> {
        let state = &*self.state;
        let opts = options::parse(&[format!("pr:{}", preset.name)], &state.parse_ctx)?;
        let mut done = std::collections::HashSet::new();
        for accepted in accept_classes(state.negotiation.enabled()) {
            let variant = state.variant(opts.clone(), &format!("s3://{bucket}/{key}"), accepted)?;
            if variant.opts.raw || info.size > variant.max_file {
                return Ok(Outcome::Skipped);
            }
            let cache_key = state.cache_key(&variant, &info.etag);
            if !done.insert(cache_key.hex()) {
                // Another class decided the same format (the URL names one, say).
                continue;
            }
            let ticket = background_ticket(state).await;
            let render = Render {
                state,
                variant: &variant,
                key: &cache_key,
                version: &info.etag,
                ticket: Some(ticket),
                src: None,
                started: Instant::now(),
            };
            render.cached_or_run(Caller::Eager).await?;
        }
        Ok(Outcome::Ok)
    }
}

/// The `Accept` classes an eager render covers: with negotiation on, an AVIF browser, a
/// WebP-only one, and one with neither (the last is also what a request without `Accept`
/// gets); with it off, that one alone.
fn accept_classes(negotiating: bool) -> Vec<Accepted> {
    let none = Accepted::default();
    if !negotiating {
        return vec![none];
    }
    vec![
        Accepted {
            avif: true,
            webp: true,
        },
        Accepted {
            avif: false,
            webp: true,
        },
        none,
    ]
}

/// Waits until the pool admits background work (see [`Pool::admit_background`]).
///
/// [`Pool::admit_background`]: crate::imaging::pool::Pool::admit_background
async fn background_ticket(state: &ImagesState) -> Ticket<'_> {
    let mut wait = Duration::from_millis(10);
    loop {
        if let Some(ticket) = state.pool.admit_background() {
            return ticket;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(250));
    }
}

/// An `image/*` content type or an image file extension (`aws s3 cp` sets the former,
/// SDK uploads without a content type often have only the latter).
fn looks_like_image(info: &ObjectInfo) -> bool {
    let content_type = info.attrs.content_type.as_deref().unwrap_or_default();
    if content_type
        .get(..6)
        .is_some_and(|t| t.eq_ignore_ascii_case("image/"))
    {
        return true;
    }
    let name = info.key.rsplit('/').next().unwrap_or_default();
    name.rsplit_once('.').is_some_and(|(_, ext)| {
        let ext = ext.to_ascii_lowercase();
        ImageFormat::from_name(&ext).is_some() || matches!(ext.as_str(), "jpe" | "tif" | "heif")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(key: &str, content_type: Option<&str>) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size: 1,
            etag: "e".into(),
            last_modified_ms: 0,
            attrs: crate::store::ObjectAttrs {
                content_type: content_type.map(str::to_owned),
                ..Default::default()
            },
            checksums: Default::default(),
            parts: 0,
            version_id: None,
        }
    }

    #[test]
    fn images_are_told_by_content_type_or_extension() {
        assert!(looks_like_image(&info("a/b", Some("image/png"))));
        assert!(looks_like_image(&info("a/b", Some("IMAGE/JPEG"))));
        assert!(looks_like_image(&info(
            "a/b.JPG",
            Some("binary/octet-stream")
        )));
        assert!(looks_like_image(&info("b.webp", None)));
        assert!(!looks_like_image(&info("a/video.mp4", Some("video/mp4"))));
        assert!(!looks_like_image(&info("a.jpg/readme", None)));
        assert!(!looks_like_image(&info("notes.txt", Some("text/plain"))));
    }

    fn png(width: u32, height: u32) -> bytes::Bytes {
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(image::RgbImage::new(width, height))
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        bytes::Bytes::from(out.into_inner())
    }

    /// An embedded store with `bkt/a.png`, `bkt/b.png`, `bkt/c.png`, and the image state over
    /// it: one worker, an eager queue of one object, one eager preset for every object.
    async fn setup(dir: &std::path::Path) -> Arc<ImagesState> {
        use crate::store::{Spool, Store, embedded::EmbeddedStore};
        let op =
            opendal::Operator::new(opendal::services::Fs::default().root(&dir.to_string_lossy()))
                .unwrap();
        let spool = Spool::new(op.clone(), dir.to_owned());
        let store = EmbeddedStore::open(op, dir, true).unwrap();
        store.create_bucket("bkt").await.unwrap();
        for key in ["a.png", "b.png", "c.png"] {
            let body = futures::stream::iter([Ok::<_, std::io::Error>(png(40, 30))]);
            let spooled = spool
                .spool(body, Default::default(), u64::MAX)
                .await
                .unwrap();
            let attrs = crate::store::ObjectAttrs {
                content_type: Some("image/png".into()),
                ..Default::default()
            };
            store.put_object("bkt", key, spooled, attrs).await.unwrap();
        }
        let config = crate::imaging::config::ImagesConfig {
            workers: 1,
            eager_queue: 1,
            presets: vec![crate::imaging::config::Preset {
                name: "t".into(),
                options: "w:10".into(),
                eager: true,
                bucket: String::new(),
                prefix: String::new(),
            }],
            ..Default::default()
        };
        let cache = crate::cache::DerivativeCache::open(
            dir.join("cache.redb"),
            crate::cache::CacheConfig::default(),
        )
        .unwrap();
        let state = ImagesState::new(
            config,
            Arc::new(store),
            Arc::new(crate::metrics::Metrics::new().unwrap()),
            Some(cache),
            Arc::new(crate::imaging::source::SourceVersions::new(Duration::ZERO)),
        )
        .unwrap();
        Arc::new(state)
    }

    fn counted(state: &ImagesState, result: &str) -> u64 {
        state
            .metrics
            .eager_renders
            .with_label_values(&[result])
            .get()
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Guards: a busy pool must never make a writer wait; the queue is bounded, drops are
    /// counted, a repeated write of a queued object coalesces, and eager work waits for an
    /// idle worker instead of queueing ahead of visitors.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_drops_and_visitors_come_first() {
        let dir = tempfile::tempdir().unwrap();
        let state = setup(dir.path()).await;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (eager, tasks) = EagerRenderer::start(state.clone(), stop_rx).unwrap();
        assert_eq!(tasks.len(), 1, "one worker: one background task");
        let visitor = state.pool.admit().unwrap(); // the only worker is a visitor's
        eager.object_changed("bkt", "a.png");
        let pending = || eager.pending.lock().unwrap().len();
        until("a.png taken off the queue", || pending() == 0).await;
        eager.object_changed("bkt", "b.png"); // queued: the task waits for the pool
        eager.object_changed("bkt", "b.png"); // already queued: coalesced, not dropped
        eager.object_changed("bkt", "c.png"); // the queue (1) is full: dropped
        assert_eq!(counted(&state, "dropped"), 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            counted(&state, "ok"),
            0,
            "no render while no worker is idle"
        );
        let stats = state.pool.stats();
        assert_eq!(
            (stats.queued, stats.processing),
            (1, 0),
            "only the visitor holds a place: eager work does not queue"
        );
        drop(visitor);
        until("a.png and b.png rendered", || counted(&state, "ok") == 2).await;
        assert_eq!(counted(&state, "error") + counted(&state, "skipped"), 0);
        // What was rendered is what a request for `pr:t` looks up, for each Accept class
        // (negotiation is on by default): AVIF, WebP and the source's PNG.
        let opts = options::parse(&["pr:t".into()], &state.parse_ctx).unwrap();
        for (key, cached) in [("a.png", true), ("b.png", true), ("c.png", false)] {
            let mut types = Vec::new();
            for accepted in accept_classes(true) {
                let variant = state
                    .variant(opts.clone(), &format!("s3://bkt/{key}"), accepted)
                    .unwrap();
                let version = state.s3_version("bkt", key, &variant).await.unwrap();
                let hit = state
                    .cache
                    .as_ref()
                    .unwrap()
                    .get(&state.cache_key(&variant, &version))
                    .unwrap();
                assert_eq!(hit.is_some(), cached, "{key} {accepted:?}");
                types.extend(hit.map(|h| h.content_type));
            }
            if cached {
                assert_eq!(types, ["image/avif", "image/webp", "image/png"], "{key}");
            }
        }
        stop_tx.send(true).unwrap();
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[test]
    fn filters_match_bucket_and_prefix() {
        let p = |bucket: &str, prefix: &str| EagerPreset {
            name: "t".into(),
            bucket: bucket.into(),
            prefix: prefix.into(),
        };
        assert!(p("", "").matches("any", "key"));
        assert!(p("photos", "").matches("photos", "x.jpg"));
        assert!(!p("photos", "").matches("other", "x.jpg"));
        assert!(p("photos", "2025/").matches("photos", "2025/x.jpg"));
        assert!(!p("photos", "2025/").matches("photos", "2024/x.jpg"));
        assert!(!p("", "2025/").matches("b", "x/2025/y.jpg"));
    }
}
