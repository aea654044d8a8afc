//! Rendering a variant: from the derivative cache, or fetched, checked against the limits
//! and processed on the pool, then stored; concurrent identical renders share one run.

use std::sync::Arc;
use std::time::Instant;

use crate::cache::{CacheKey, CachedEntry, EntryMeta};
use crate::imaging::decode;
use crate::imaging::negotiate;
use crate::imaging::options::ImageFormat;
use crate::imaging::pipeline::{self, Job, PipelineError};
use crate::imaging::pool::{PoolError, Ticket};
use crate::imaging::source::{self, SourceImage, SourceUrl};
use crate::imaging::svg;

use super::{ImageError, ImagesState, Variant};

/// What a render produced: the bytes and what the response needs. Shared between the
/// requests of one single flight.
#[derive(Debug)]
pub struct Rendered {
    pub bytes: bytes::Bytes,
    pub content_type: String,
    pub format: ImageFormat,
    pub last_modified_ms: i64,
    /// The source's Cache-Control, kept with the variant.
    pub cache_control: Option<String>,
}

/// A render's outcome, as every waiter of a single flight receives it.
pub(crate) type Outcome = Result<Arc<Rendered>, Arc<ImageError>>;

impl ImagesState {
    /// Looks `key` up in the cache; a failed read is logged and reads as a miss.
    pub(crate) async fn cached(&self, key: &CacheKey) -> Option<Rendered> {
        let hit = self.cached_entry(key, true)?;
        let format = ImageFormat::ALL
            .into_iter()
            .find(|f| negotiate::mime_type(*f) == hit.content_type)
            .unwrap_or(ImageFormat::Jpeg);
        Some(Rendered {
            bytes: hit.body,
            content_type: hit.content_type,
            format,
            last_modified_ms: hit.last_modified_ms,
            cache_control: hit.cache_control,
        })
    }

    /// The cache's entry for `key`; a failed read is logged and reads as a miss.
    /// `count_miss`: whether the cache's own statistics count a miss (not for the fast
    /// path's lookups, whose misses go on to the full path and are counted there).
    pub(crate) fn cached_entry(&self, key: &CacheKey, count_miss: bool) -> Option<CachedEntry> {
        let cache = self.cache.as_ref()?;
        // Read inline, like the store HEAD before it: one redb read transaction on a file the
        // page cache holds takes microseconds, far less than a hop to the blocking pool and
        // back (which dominated a cache hit's cost under load; see docs/cache.md's
        // Benchmark). A panic inside redb is still contained and reads as a failed lookup.
        let lookup = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cache.lookup(key, count_miss)
        }));
        match lookup {
            Ok(Ok(Some(hit))) => Some(hit),
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                self.cache_read_failed(&e.to_string());
                None
            }
            Err(_) => {
                self.cache_read_failed("the cache read panicked");
                None
            }
        }
    }

    /// Logs a failed cache read at most once a minute (after a failed write redb may refuse
    /// every operation until a restart: every request would log).
    fn cache_read_failed(&self, error: &str) {
        if let Some(suppressed) = self.cache_read_warnings.allow() {
            tracing::warn!(
                error,
                suppressed,
                "cache read failed; processing instead \
                 (at most one such warning a minute; `suppressed` counts the ones left out)"
            );
        }
    }

    /// Stores a rendered variant. A failed write (disk full, I/O error, entry over the
    /// limit) is logged, rate-limited, and otherwise ignored: the response goes out uncached.
    pub(crate) async fn put_cached(&self, key: &CacheKey, rendered: &Rendered) {
        let Some(cache) = &self.cache else {
            return;
        };
        let meta = EntryMeta {
            content_type: rendered.content_type.clone(),
            etag: key.hex(),
            last_modified_ms: rendered.last_modified_ms,
            cache_control: rendered.cache_control.clone(),
        };
        let (cache, key, body) = (cache.clone(), key.clone(), rendered.bytes.clone());
        let error = match tokio::task::spawn_blocking(move || cache.put(&key, &meta, &body)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        self.metrics.cache_write_failures.inc();
        if let Some(suppressed) = self.cache_warnings.allow() {
            tracing::warn!(
                error,
                suppressed,
                "cannot store a variant in the cache; serving it uncached \
                 (at most one such warning a minute; `suppressed` counts the ones left out)"
            );
        }
    }
}

/// Who asks for a variant: a visitor's request (counted in the cache hit/miss metrics) or a
/// background eager render (not counted: no one requested it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Visitor,
    Eager,
}

/// One variant at one source version: served from the cache, or rendered (fetch unless
/// already fetched, probe, check the limits, process on the pool) and stored. Identical
/// concurrent renders (visitors and eager renders alike) share one run.
pub struct Render<'a> {
    pub state: &'a ImagesState,
    pub variant: &'a Variant,
    pub key: &'a CacheKey,
    /// The source version `key` was computed from. Bytes fetched at another version (the
    /// source changed in between) are served but not stored under `key`.
    pub version: &'a str,
    /// A pool place taken in advance (a fetched source's; an eager render's low-priority
    /// admission). Without one the render is admitted as a visitor.
    pub ticket: Option<Ticket<'a>>,
    /// The source's bytes, when already fetched.
    pub src: Option<SourceImage>,
    /// When the request arrived: the pool deadline runs from here.
    pub started: Instant,
}

impl Render<'_> {
    /// The variant and whether it came from the cache.
    pub async fn cached_or_run(self, caller: Caller) -> Result<(Arc<Rendered>, bool), ImageError> {
        let state = self.state;
        if state.cache.is_some() {
            let hit = state.cached(self.key).await;
            if caller == Caller::Visitor {
                match hit {
                    Some(_) => state.metrics.cache_hits.inc(),
                    None => state.metrics.cache_misses.inc(),
                }
            }
            if let Some(hit) = hit {
                return Ok((Arc::new(hit), true));
            }
        }
        let key = self.key.clone();
        let outcome: Outcome = state.flight.run(key, || self.run()).await;
        match outcome {
            Ok(rendered) => Ok((rendered, false)),
            Err(e) => Err(ImageError::Shared(e)),
        }
    }

    async fn run(self) -> Outcome {
        self.render().await.map(Arc::new).map_err(Arc::new)
    }

    async fn render(self) -> Result<Rendered, ImageError> {
        let state = self.state;
        let (ticket, src) = match (self.ticket, self.src) {
            (Some(t), Some(src)) => (t, src),
            (ticket, _) => {
                let ticket = match ticket {
                    Some(t) => t,
                    None => state.pool.admit()?,
                };
                let variant = self.variant;
                (
                    ticket,
                    fetch(state, &variant.source, variant.max_file, self.started).await?,
                )
            }
        };
        let opts = &self.variant.opts;
        let probe = decode::probe(&src.bytes).map_err(PipelineError::from)?;
        let skip = state.skip_processing.contains(&probe.format)
            || opts.skip_processing.contains(&probe.format);
        let (bytes, format) =
            if probe.format == ImageFormat::Svg && (skip || state.serves_svg(self.variant)) {
                // An SVG leaves as SVG only sanitised, even when processing is skipped.
                let input = src.bytes.clone();
                let text = ticket
                    .run(self.started, move || {
                        svg::sanitized(&input)
                            .map(|doc| doc.text)
                            .map_err(PipelineError::from)
                    })
                    .await??;
                (bytes::Bytes::from(text), ImageFormat::Svg)
            } else if skip {
                (src.bytes.clone(), probe.format)
            } else {
                let format = negotiate::for_source(
                    state.decided_for(self.variant, probe.frames),
                    probe.format,
                    probe.has_alpha.unwrap_or(false),
                    pipeline::can_encode,
                );
                let mut job = Job::new(opts.clone(), format, &state.defaults);
                if opts.watermark.enabled {
                    job.watermark = state.watermark.get().await?;
                }
                // The work itself stops between pipeline steps once the request's deadline
                // has passed, not only the reply.
                job.deadline = Some(self.started + state.pool.timeout());
                job.check_probe(&probe)?;
                let room = job
                    .decoded_pixels(&probe)
                    .saturating_mul(pipeline::DECODE_BYTES_PER_PIXEL);
                let pixels = reserve(
                    &state.pixel_budget,
                    state.config.max_pixel_memory.0,
                    room,
                    self.started,
                    state.pool.timeout(),
                )
                .await
                .inspect_err(|_| {
                    tracing::debug!(
                        room,
                        "no room in [images] max_pixel_memory before the deadline"
                    );
                })?;
                let input = src.bytes.clone();
                let out = ticket
                    .run(self.started, move || {
                        // Held until the work itself ends, even if the request is gone.
                        let _pixels = pixels;
                        pipeline::process(&input, &probe, &job)
                    })
                    .await??;
                state.metrics.images_processed.inc();
                (bytes::Bytes::from(out), format)
            };
        let rendered = Rendered {
            bytes,
            content_type: negotiate::mime_type(format).to_owned(),
            format,
            last_modified_ms: src.last_modified_ms,
            cache_control: src.cache_control.clone(),
        };
        if src.etag == self.version {
            state.put_cached(self.key, &rendered).await;
        } else {
            tracing::debug!(
                source = self.variant.source_url,
                "the source changed while it was rendered; not caching this variant"
            );
        }
        Ok(rendered)
    }
}

/// Fetches a source's bytes (at most `max`) once `[images] max_source_memory` has room for
/// them: the object's size for `s3://` (known from its version), `max` for the others
/// (their size is known only once read). Waiting for room counts against the request's
/// deadline, from `started`.
pub(crate) async fn fetch(
    state: &ImagesState,
    source: &SourceUrl,
    max: u64,
    started: Instant,
) -> Result<SourceImage, ImageError> {
    let expected = match source {
        SourceUrl::S3 { bucket, key } => state.versions.get(&state.store, bucket, key).await?.size,
        _ => max,
    };
    let budget = state.reserve_source(expected, started).await?;
    let mut src = match source {
        SourceUrl::S3 { bucket, key } => source::fetch_s3(&state.store, bucket, key, max).await?,
        SourceUrl::Local { path } => {
            source::fetch_local(&state.config.local_root, path, max).await?
        }
        SourceUrl::Http { url } => state.http.fetch(url, max).await?,
    };
    src.budget = Some(Arc::new(budget));
    Ok(src)
}

/// Room for `bytes` in a memory budget of `total` bytes (`budget` counts KiB), waiting at
/// most until the request's deadline (`started + timeout`; 503 past it). More than the whole
/// budget takes all of it.
pub(crate) async fn reserve(
    budget: &Arc<tokio::sync::Semaphore>,
    total: u64,
    bytes: u64,
    started: Instant,
    timeout: std::time::Duration,
) -> Result<tokio::sync::OwnedSemaphorePermit, ImageError> {
    let total_kib = (total >> 10).max(1);
    let kib = u32::try_from(bytes.div_ceil(1024).clamp(1, total_kib)).unwrap_or(u32::MAX);
    let left = timeout.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, budget.clone().acquire_many_owned(kib)).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_)) => Err(PoolError::Crashed("a memory budget is closed".into()).into()),
        Err(_) => Err(PoolError::Timeout(timeout).into()),
    }
}

impl ImagesState {
    /// Room for `bytes` of source in `[images] max_source_memory`, waiting at most until
    /// the request's deadline (503 past it). A source larger than the whole budget cannot
    /// happen: `validate` keeps the budget at least `max_src_file_size`.
    pub(crate) async fn reserve_source(
        &self,
        bytes: u64,
        started: Instant,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, ImageError> {
        reserve(
            &self.source_budget,
            self.config.max_source_memory.0,
            bytes,
            started,
            self.pool.timeout(),
        )
        .await
        .inspect_err(|_| {
            tracing::debug!(
                bytes,
                "no room in [images] max_source_memory before the deadline"
            );
        })
    }
}
