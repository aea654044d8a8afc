//! The image endpoint's HTTP side: one handler for every `GET`/`HEAD` path on the images
//! listener. It checks the bearer secret and the signature, parses the options, fetches the
//! source, picks the output format, and runs the pipeline on the bounded pool; then it
//! answers with imgproxy's headers and status codes. Every error is chosen here, at the
//! edge, from the module errors below it (403 signature or secret, 404 invalid URL or
//! missing source, 422 unprocessable or over a limit, 429 queue full, 503 timeout, 502/504
//! upstream), with a JSON body naming the problem and no `Cache-Control: public`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::resolved::{self, Resolved, ResolvedUrls};
use super::throttle::Throttle;
use crate::cache::flight::SingleFlight;
use crate::cache::{CacheKey, CachedEntry, DerivativeCache, EntryMeta};
use crate::imaging::config::ImagesConfig;
use crate::imaging::decode;
use crate::imaging::http_source::HttpSource;
use crate::imaging::negotiate::{self, Accepted, Negotiation};
use crate::imaging::options::{self, ImageFormat, Options, ParseContext};
use crate::imaging::pipeline::{self, Job, PipelineError};
use crate::imaging::pool::{Pool, PoolError, Ticket};
use crate::imaging::signature::{Signer, constant_time_eq};
use crate::imaging::source::{self, SourceError, SourceImage, SourceUrl, SourceVersions};
use crate::imaging::url;
use crate::metrics::Metrics;
use crate::s3::access::BucketSet;
use crate::store::DynStore;

/// Everything the handler needs, built once from the configuration.
pub struct ImagesState {
    pub config: ImagesConfig,
    pub signer: Option<Signer>,
    pub parse_ctx: ParseContext,
    pub store: DynStore,
    pub pool: Pool,
    pub defaults: pipeline::Defaults,
    pub negotiation: Negotiation,
    pub skip_processing: Vec<ImageFormat>,
    pub http: HttpSource,
    pub metrics: Arc<Metrics>,
    /// The derivative cache (`None` when `[cache] enabled = false`).
    pub cache: Option<DerivativeCache>,
    pub versions: Arc<SourceVersions>,
    /// The buckets unsigned URLs may read (`[images] unsigned_buckets`, overlaid by the
    /// admin catalog's choices); shared with the admin API, which changes it.
    pub unsigned_buckets: Arc<BucketSet>,
    /// `[images] max_source_memory` in KiB permits: fetched source bytes held at once.
    source_budget: Arc<tokio::sync::Semaphore>,
    /// `[images] max_pixel_memory` in KiB permits: decoding memory held at once.
    pixel_budget: Arc<tokio::sync::Semaphore>,
    /// Paths recently served through the cache, resolved (the fast path of a hit).
    resolved: ResolvedUrls,
    flight: SingleFlight<CacheKey, Outcome>,
    /// Failed cache writes and reads are logged at most once a minute each.
    cache_warnings: Throttle,
    cache_read_warnings: Throttle,
}

impl ImagesState {
    pub fn new(
        config: ImagesConfig,
        store: DynStore,
        metrics: Arc<Metrics>,
        cache: Option<DerivativeCache>,
        versions: Arc<SourceVersions>,
    ) -> Result<Self, String> {
        let signer = config.signer().map_err(|e| e.to_string())?;
        let parse_ctx = config.parse_context();
        let defaults = pipeline::Defaults::from_config(&config).map_err(|e| e.to_string())?;
        let skip_processing = config.skip_processing().map_err(|e| e.to_string())?;
        let pool = Pool::new(config.worker_count(), config.max_queue, config.timeout.0);
        let http = HttpSource::new(
            &config.allowed_sources,
            config.allow_private_sources,
            config.download_timeout.0,
        )
        .map_err(|e| e.to_string())?;
        let negotiation = Negotiation {
            auto_webp: config.auto_webp,
            enforce_webp: config.enforce_webp,
            auto_avif: config.auto_avif,
            enforce_avif: config.enforce_avif,
        };
        let unsigned_buckets = Arc::new(BucketSet::new(config.unsigned_buckets.iter().cloned()));
        let source_budget = Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(config.max_source_memory.0 >> 10).unwrap_or(usize::MAX),
        ));
        let pixel_budget = Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(config.max_pixel_memory.0 >> 10).unwrap_or(usize::MAX),
        ));
        Ok(Self {
            signer,
            config,
            parse_ctx,
            store,
            pool,
            defaults,
            negotiation,
            skip_processing,
            http,
            metrics,
            cache,
            versions,
            unsigned_buckets,
            source_budget,
            pixel_budget,
            resolved: ResolvedUrls::new(),
            flight: SingleFlight::new(),
            cache_warnings: Throttle::new(Duration::from_secs(60)),
            cache_read_warnings: Throttle::new(Duration::from_secs(60)),
        })
    }
}

/// Drops the cached variants (and the remembered version) of every object the S3 API
/// changes, before the S3 response is sent.
pub struct Invalidator {
    cache: Option<DerivativeCache>,
    versions: Arc<SourceVersions>,
}

impl Invalidator {
    pub fn new(cache: Option<DerivativeCache>, versions: Arc<SourceVersions>) -> Self {
        Self { cache, versions }
    }
}

impl crate::s3::ChangeListener for Invalidator {
    fn object_changed(&self, bucket: &str, key: &str) {
        let source = format!("s3://{bucket}/{key}");
        self.versions.forget(&source);
        let Some(cache) = &self.cache else {
            return;
        };
        let drop_variants = || match cache.invalidate_source(&source) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(source, variants = n, "cache invalidated"),
            Err(e) => tracing::warn!(source, error = %e, "cannot invalidate cached variants"),
        };
        // A redb write: keep it off the async worker threads' hot path where the runtime
        // allows (the daemon's runtime is multi-threaded).
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(drop_variants)
            }
            _ => drop_variants(),
        }
    }
}

/// Why a request failed; [`ImageError::status`] picks the HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid secret: this endpoint needs `Authorization: Bearer <secret>`")]
    Secret,
    #[error("invalid signature")]
    Signature,
    /// An unsigned URL (`unsafe`, `_`) asked for what only a signed one may.
    #[error("{0}")]
    Unsigned(String),
    /// `raw` or `skip_processing` on bytes that are not an image in a supported format.
    #[error(
        "the source is not an image in a supported format (JPEG, PNG, GIF, WebP, AVIF, BMP, TIFF)"
    )]
    NotAnImage,
    #[error("invalid URL: {0}")]
    Url(#[from] url::UrlError),
    #[error("invalid URL: {0}")]
    Options(#[from] options::OptionsError),
    #[error("{0}")]
    Source(#[from] SourceError),
    #[error("{0}")]
    Pipeline(#[from] PipelineError),
    #[error("{0}")]
    Pool(#[from] PoolError),
    #[error("method not allowed: use GET or HEAD")]
    Method,
    /// The error of a render shared by several requests (single flight).
    #[error("{0}")]
    Shared(Arc<ImageError>),
}

impl ImageError {
    fn status(&self) -> StatusCode {
        match self {
            ImageError::Secret | ImageError::Signature | ImageError::Unsigned(_) => {
                StatusCode::FORBIDDEN
            }
            ImageError::NotAnImage => StatusCode::UNPROCESSABLE_ENTITY,
            ImageError::Url(_) | ImageError::Options(_) => StatusCode::NOT_FOUND,
            ImageError::Source(e) => match e {
                SourceError::NotFound(_)
                | SourceError::Invalid(..)
                | SourceError::NotAllowed(..) => StatusCode::NOT_FOUND,
                SourceError::TooLarge { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                SourceError::Upstream(_) => StatusCode::BAD_GATEWAY,
                SourceError::Timeout => StatusCode::GATEWAY_TIMEOUT,
                SourceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ImageError::Pipeline(PipelineError::Cancelled { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ImageError::Pipeline(e) => {
                if e.is_internal() {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
            }
            ImageError::Pool(PoolError::QueueFull(_)) => StatusCode::TOO_MANY_REQUESTS,
            ImageError::Pool(PoolError::Timeout(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ImageError::Pool(PoolError::Crashed(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            ImageError::Method => StatusCode::METHOD_NOT_ALLOWED,
            ImageError::Shared(e) => e.status(),
        }
    }

    /// The short, stable name of the error kind (imgproxy's `imgproxy_errors_total{type}`).
    pub fn kind(&self) -> &'static str {
        match self {
            ImageError::Secret => "secret",
            ImageError::Signature => "signature",
            ImageError::Unsigned(_) => "unsigned",
            ImageError::NotAnImage => "processing",
            ImageError::Url(_) | ImageError::Options(_) => "invalid_url",
            ImageError::Source(SourceError::NotFound(_)) => "source_not_found",
            ImageError::Source(_) => "source",
            ImageError::Pipeline(PipelineError::Cancelled { .. }) => "timeout",
            ImageError::Pipeline(_) => "processing",
            ImageError::Pool(PoolError::QueueFull(_)) => "queue",
            ImageError::Pool(PoolError::Timeout(_)) => "timeout",
            ImageError::Pool(_) => "processing",
            ImageError::Method => "method",
            ImageError::Shared(e) => e.kind(),
        }
    }

    fn to_response(&self, request_id: &str) -> Response {
        let status = self.status();
        // A 500's detail (a panic message, a path, an I/O error) stays in the log, found by
        // the request id; the client learns only that it was not its fault.
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            format!("internal error; the server log has the detail under request id {request_id}")
        } else {
            self.to_string()
        };
        let body = serde_json::json!({
            "error": status.canonical_reason().unwrap_or("Error"),
            "kind": self.kind(),
            "message": message,
            "request_id": request_id,
        });
        let mut resp = (status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// The handler for every image request (every path but `/health`). The body is not read.
pub async fn handle<B>(State(state): State<Arc<ImagesState>>, req: Request<B>) -> Response {
    let started = Instant::now();
    let request_id = format!("{:016X}", rand::random::<u64>());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let m = &state.metrics;
    m.requests_total.inc();
    m.requests_in_progress.inc();
    let _in_progress = InProgress(&m.requests_in_progress);
    let result = if method == Method::GET || method == Method::HEAD {
        serve(&state, &path, req.headers(), started).await
    } else {
        Err(ImageError::Method)
    };
    let elapsed = started.elapsed().as_secs_f64();
    m.request_duration.observe(elapsed);
    if let Err(e) = &result {
        m.errors_total.with_label_values(&[e.kind()]).inc();
    }
    let ms = elapsed * 1000.0;
    let mut message = String::new();
    let mut resp = match result {
        Ok(mut resp) => {
            tracing::debug!(request_id, %method, path, status = resp.status().as_u16(), ms, "image");
            if method == Method::HEAD {
                *resp.body_mut() = Body::empty();
            }
            resp
        }
        Err(e) => {
            let status = e.status();
            if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
                tracing::error!(request_id, %method, path, status = status.as_u16(), ms, error = %e, "image");
            } else {
                tracing::info!(request_id, %method, path, status = status.as_u16(), ms, error = %e, "image");
            }
            message = e.to_string();
            e.to_response(&request_id)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    m.count_status(resp.status());
    m.traffic.record(&crate::metrics::traffic::Sample {
        listener: "images",
        status: resp.status().as_u16(),
        method: method.as_str(),
        path: &path,
        elapsed_ms: ms,
        message: &message,
    });
    resp
}

/// Decrements the in-progress gauge however the request ends (dropped connections too).
struct InProgress<'a>(&'a prometheus::IntGauge);

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What a render produced: the bytes and what the response needs. Shared between the
/// requests of one single flight.
#[derive(Debug)]
pub struct Rendered {
    bytes: bytes::Bytes,
    content_type: String,
    format: ImageFormat,
    last_modified_ms: i64,
}

/// A render's outcome, as every waiter of a single flight receives it.
type Outcome = Result<Arc<Rendered>, Arc<ImageError>>;

async fn serve(
    state: &ImagesState,
    path: &str,
    headers: &HeaderMap,
    started: Instant,
) -> Result<Response, ImageError> {
    if !state.config.secret.is_empty() {
        let expected = format!("Bearer {}", state.config.secret);
        let given = headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if !constant_time_eq(given, expected.as_bytes()) {
            return Err(ImageError::Secret);
        }
    }
    let accepted = if state.negotiation.enabled() {
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
        Accepted::read(accept, pipeline::can_encode)
    } else {
        // With every switch off, `Accept` changes nothing: one class for all requests.
        Accepted::default()
    };
    let class = resolved::accept_class(accepted);
    if let Some(resp) = state.serve_resolved(path, class, headers).await {
        return Ok(resp);
    }
    let parsed = url::parse_path(path)?;
    // `unsafe` and `_` mark an unsigned URL; any other segment must be a valid signature.
    // Without a key (only when a caller builds the state without one) every URL is unsigned.
    let signed = match &state.signer {
        Some(signer) if !matches!(parsed.signature, "unsafe" | "_") => {
            signer
                .verify(parsed.signature, &parsed.signed_part)
                .map_err(|_| ImageError::Signature)?;
            true
        }
        _ => false,
    };
    let mut opts = options::parse(&parsed.options, &state.parse_ctx)?;
    if let Some(ext) = &parsed.extension {
        opts.apply_extension(ext)?;
    }
    let variant = state.variant(opts, parsed.source.url(), accepted)?;
    if !signed {
        state.check_unsigned(&variant)?;
    }
    let vary = state.negotiation.enabled();
    let ttl = ttl(state, &variant.opts);

    // The source's identity and version: a HEAD for s3:// (no bytes read yet), the bytes
    // themselves for the others (admitted first: held bytes count against the queue).
    let (version, prefetched) = match &variant.source {
        SourceUrl::S3 { bucket, key } => (state.s3_version(bucket, key, &variant).await?, None),
        _ => {
            let ticket = state.pool.admit()?;
            let src = fetch(state, &variant.source, variant.max_file, started).await?;
            (src.etag.clone(), Some((ticket, src)))
        }
    };
    let key = state.cache_key(&variant, &version);
    let etag = format!("\"{}\"", &key.hex()[..32]);
    let reply = Reply {
        etag: &etag,
        opts: &variant.opts,
        state,
        vary,
        ttl,
        source_url: &variant.source_url,
    };
    if let Some(resp) = not_modified(headers, &etag) {
        return Ok(resp);
    }
    if variant.opts.raw {
        let src = match prefetched {
            Some((_, src)) => src,
            None => {
                if let SourceUrl::S3 { bucket, key } = &variant.source {
                    return state.stream_raw(bucket, key, &reply).await;
                }
                fetch(state, &variant.source, variant.max_file, started).await?
            }
        };
        // Only bytes that are an image in a supported format are sent, labelled with the
        // format they are: never a text file (or HTML) under an image type.
        let format = decode::sniff(&src.bytes).ok_or(ImageError::NotAnImage)?;
        let rendered = Rendered {
            content_type: negotiate::mime_type(format).to_owned(),
            format,
            last_modified_ms: src.last_modified_ms,
            bytes: src.bytes,
        };
        return Ok(reply.send(&rendered, None));
    }
    let (ticket, src) = prefetched.unzip();
    let render = Render {
        state,
        variant: &variant,
        key: &key,
        version: &version,
        ticket,
        src,
        started,
    };
    let (rendered, hit) = render.cached_or_run(Caller::Visitor).await?;
    let cache_hit = state.cache.as_ref().map(|_| hit);
    if cache_hit.is_some()
        && variant.opts.expires.is_none()
        && let SourceUrl::S3 {
            bucket,
            key: object,
        } = &variant.source
    {
        let resolved = Resolved {
            unsigned: !signed,
            bucket: bucket.clone(),
            key: object.clone(),
            source_id: format!("s3://{bucket}/{object}"),
            version: version.clone(),
            cache_key: key.clone(),
            etag: etag.clone(),
            headers: reply.headers(&rendered, Some(true)),
        };
        state.resolved.insert(path, class, resolved);
    }
    Ok(reply.send(&rendered, cache_hit))
}

/// One variant of one source, as a URL asks for it, before any I/O on the source: what a
/// visitor's request and an eager preset both become.
pub struct Variant {
    pub opts: Options,
    pub source_url: String,
    pub source: SourceUrl,
    /// The output format chosen before the source is seen (`None`: decided by the source).
    pub decided: Option<ImageFormat>,
    /// The largest source file this variant may read.
    pub max_file: u64,
}

impl ImagesState {
    /// The variant that `opts` on `source_url` asks for, with `accepted` read from the
    /// request's `Accept` header (the default for eager renders: what a request without one
    /// gets).
    pub fn variant(
        &self,
        opts: Options,
        source_url: &str,
        accepted: Accepted,
    ) -> Result<Variant, ImageError> {
        let source = SourceUrl::parse(source_url)?;
        let max_file = opts
            .security
            .max_src_file_size
            .and_then(|v| u64::try_from(v).ok())
            .filter(|v| *v > 0)
            .unwrap_or(self.config.max_src_file_size.0);
        let decided = negotiate::decide_without_source(opts.format, accepted, self.negotiation);
        Ok(Variant {
            opts,
            source_url: source_url.to_owned(),
            source,
            decided,
            max_file,
        })
    }

    /// What an unsigned URL may do (docs/security.md). With `allow_unsafe` everything, as
    /// imgproxy without a key. Otherwise it may read only `s3://` sources in a bucket opened
    /// to unsigned URLs, and only processed: not `raw`, not `skip_processing`, and without
    /// security overrides, so the original bytes stay private to signed URLs and S3.
    pub fn check_unsigned(&self, variant: &Variant) -> Result<(), ImageError> {
        if self.config.allow_unsafe {
            return Ok(());
        }
        let refuse = |why: String| Err(ImageError::Unsigned(why));
        let SourceUrl::S3 { bucket, .. } = &variant.source else {
            return refuse(format!(
                "unsigned image URLs may not read `{}`: sign the URL (`pixelport sign`); \
                 only s3:// sources in buckets opened to unsigned URLs may be read unsigned",
                variant.source_url
            ));
        };
        if !self.unsigned_buckets.contains(bucket) {
            return refuse(format!(
                "unsigned image URLs may not read bucket `{bucket}`: sign the URL \
                 (`pixelport sign`), or open the bucket to unsigned image URLs \
                 ([images] unsigned_buckets, or the admin UI's bucket page)"
            ));
        }
        let opts = &variant.opts;
        if opts.raw || !opts.skip_processing.is_empty() {
            return refuse(
                "`raw` and `skip_processing` serve the original bytes: they need a signed URL"
                    .into(),
            );
        }
        if opts.security != options::SecurityOverrides::default() {
            return refuse("security options need a signed URL".into());
        }
        Ok(())
    }

    /// The current version (ETag) of an `s3://` source, refusing one over the size limit.
    pub async fn s3_version(
        &self,
        bucket: &str,
        key: &str,
        variant: &Variant,
    ) -> Result<String, ImageError> {
        let v = self.versions.get(&self.store, bucket, key).await?;
        if v.size > variant.max_file {
            return Err(SourceError::TooLarge {
                max: variant.max_file,
            }
            .into());
        }
        Ok(v.etag)
    }

    /// The derivative cache key of `variant` at source version `version`.
    pub fn cache_key(&self, variant: &Variant, version: &str) -> CacheKey {
        let format_key = variant.decided.map_or("auto", ImageFormat::as_str);
        CacheKey::new(
            &variant.source_url,
            version,
            &variant.opts.canonical(),
            format_key,
        )
    }

    /// The answer to a path kept in [`ResolvedUrls`], when the source is still at the
    /// version it was resolved at and the cache still holds the variant; `None` sends the
    /// request down the full path (which decides every error and every miss).
    async fn serve_resolved(&self, path: &str, class: u8, headers: &HeaderMap) -> Option<Response> {
        self.cache.as_ref()?;
        let r = self.resolved.get(path, class)?;
        // An unsigned path stays servable only while its bucket stays open to unsigned URLs.
        if r.unsigned && !self.config.allow_unsafe && !self.unsigned_buckets.contains(&r.bucket) {
            return None;
        }
        let current = self
            .versions
            .current(&self.store, &r.source_id, &r.bucket, &r.key)
            .await
            .ok()?;
        if current.etag != r.version {
            return None;
        }
        if let Some(resp) = not_modified(headers, &r.etag) {
            return Some(resp);
        }
        let hit = self.cached_entry(&r.cache_key, false)?;
        self.metrics.cache_hits.inc();
        let length = hit.body.len();
        let mut resp = Response::new(Body::from(hit.body));
        *resp.headers_mut() = r.headers.clone();
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        Some(resp)
    }

    /// Looks `key` up in the cache; a failed read is logged and reads as a miss.
    async fn cached(&self, key: &CacheKey) -> Option<Rendered> {
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
        })
    }

    /// The cache's entry for `key`; a failed read is logged and reads as a miss.
    /// `count_miss`: whether the cache's own statistics count a miss (not for the fast
    /// path's lookups, whose misses go on to the full path and are counted there).
    fn cached_entry(&self, key: &CacheKey, count_miss: bool) -> Option<CachedEntry> {
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
    async fn put_cached(&self, key: &CacheKey, rendered: &Rendered) {
        let Some(cache) = &self.cache else {
            return;
        };
        let meta = EntryMeta {
            content_type: rendered.content_type.clone(),
            etag: key.hex(),
            last_modified_ms: rendered.last_modified_ms,
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
        let (bytes, format) = if skip {
            (src.bytes.clone(), probe.format)
        } else {
            let format = negotiate::for_source(
                self.variant.decided,
                probe.format,
                probe.has_alpha.unwrap_or(false),
                pipeline::can_encode,
            );
            let mut job = Job::new(opts.clone(), format, &state.defaults);
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
async fn fetch(
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
async fn reserve(
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

/// Bytes sniffed to tell a `raw` source's format (the longest signature checked is 26).
const SNIFF_BYTES: usize = 64;

impl ImagesState {
    /// Room for `bytes` of source in `[images] max_source_memory`, waiting at most until
    /// the request's deadline (503 past it). A source larger than the whole budget cannot
    /// happen: `validate` keeps the budget at least `max_src_file_size`.
    async fn reserve_source(
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

    /// `raw` on an `s3://` source: the stored bytes streamed as they are read, never held
    /// whole, once their first bytes sniff as a supported image format (422 otherwise).
    async fn stream_raw(
        &self,
        bucket: &str,
        key: &str,
        reply: &Reply<'_>,
    ) -> Result<Response, ImageError> {
        use futures::StreamExt;
        let shown = format!("s3://{bucket}/{key}");
        let (info, mut stream, _) = self
            .store
            .read_object(bucket, key, None)
            .await
            .map_err(|e| source::store_error(&shown, e))?;
        let mut head = bytes::BytesMut::new();
        while head.len() < SNIFF_BYTES {
            match stream.next().await {
                Some(Ok(chunk)) => head.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(SourceError::Internal(e.to_string()).into()),
                None => break,
            }
        }
        let format = decode::sniff(&head).ok_or(ImageError::NotAnImage)?;
        let first = head.freeze();
        let body =
            futures::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(stream);
        let mut resp = Response::new(Body::from_stream(body));
        *resp.headers_mut() = reply.head(
            negotiate::mime_type(format),
            usize::try_from(info.size).unwrap_or(usize::MAX),
            format,
            info.last_modified_ms,
            None,
        );
        Ok(resp)
    }
}

fn not_modified(headers: &HeaderMap, etag: &str) -> Option<Response> {
    let inm = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?;
    let hit = inm
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag));
    if !hit {
        return None;
    }
    let mut resp = StatusCode::NOT_MODIFIED.into_response();
    if let Ok(v) = HeaderValue::from_str(etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Some(resp)
}

fn ttl(state: &ImagesState, opts: &Options) -> Duration {
    let ttl = state.config.ttl.0;
    match opts.expires {
        Some(exp) => {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let left = u64::try_from(exp.saturating_sub(now)).unwrap_or(0);
            ttl.min(Duration::from_secs(left))
        }
        None => ttl,
    }
}

/// What every 200 response of one request shares.
struct Reply<'a> {
    etag: &'a str,
    opts: &'a Options,
    state: &'a ImagesState,
    vary: bool,
    ttl: Duration,
    source_url: &'a str,
}

impl Reply<'_> {
    /// The 200 response for `r`. `cache_hit`: `Some(true)` for a hit, `Some(false)` for a
    /// miss, `None` when no cache took part (cache off, `raw`).
    fn send(&self, r: &Rendered, cache_hit: Option<bool>) -> Response {
        let mut resp = Response::new(Body::from(r.bytes.clone()));
        *resp.headers_mut() = self.headers(r, cache_hit);
        resp
    }

    /// The headers of [`Reply::send`]'s response.
    fn headers(&self, r: &Rendered, cache_hit: Option<bool>) -> HeaderMap {
        self.head(
            &r.content_type,
            r.bytes.len(),
            r.format,
            r.last_modified_ms,
            cache_hit,
        )
    }

    /// The headers of a 200 carrying `length` bytes of `content_type` in `format`.
    fn head(
        &self,
        content_type: &str,
        length: usize,
        format: ImageFormat,
        last_modified_ms: i64,
        cache_hit: Option<bool>,
    ) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let h = &mut headers;
        if let Ok(v) = HeaderValue::from_str(content_type) {
            h.insert(header::CONTENT_TYPE, v);
        }
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        if let Ok(v) = HeaderValue::from_str(&format!("max-age={}, public", self.ttl.as_secs())) {
            h.insert(header::CACHE_CONTROL, v);
        }
        if let Ok(v) = HeaderValue::from_str(self.etag) {
            h.insert(header::ETAG, v);
        }
        if let Some(v) = http_date(last_modified_ms) {
            h.insert(header::LAST_MODIFIED, v);
        }
        if self.vary {
            h.insert(header::VARY, HeaderValue::from_static("Accept"));
        }
        match cache_hit {
            Some(true) => {
                h.insert("x-cache", HeaderValue::from_static("HIT"));
                h.insert("cache-status", HeaderValue::from_static("pixelport; hit"));
            }
            Some(false) => {
                h.insert("x-cache", HeaderValue::from_static("MISS"));
                h.insert(
                    "cache-status",
                    HeaderValue::from_static("pixelport; fwd=miss; stored"),
                );
            }
            None => {}
        }
        let attachment = self
            .opts
            .return_attachment
            .unwrap_or(self.state.config.return_attachment);
        let disposition = content_disposition(
            self.opts.filename.as_deref(),
            self.source_url,
            format,
            attachment,
        );
        if let Ok(v) = HeaderValue::from_str(&disposition) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        headers
    }
}

/// `inline; filename="cat.webp"` (or `attachment; ...`): the `filename` option, else the
/// source's last path segment, with the output format's extension, as imgproxy does.
pub fn content_disposition(
    filename: Option<&str>,
    source_url: &str,
    format: ImageFormat,
    attachment: bool,
) -> String {
    let stem = match filename {
        Some(f) if !f.is_empty() => f.to_owned(),
        _ => {
            let last = source_url
                .split(['?', '#'])
                .next()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap_or_default();
            let stem = last.rsplit_once('.').map_or(last, |(s, _)| s);
            if stem.is_empty() {
                "image".to_owned()
            } else {
                stem.to_owned()
            }
        }
    };
    let name = format!("{stem}.{}", negotiate::extension(format));
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let kind = if attachment { "attachment" } else { "inline" };
    if ascii == name {
        format!("{kind}; filename=\"{name}\"")
    } else {
        let encoded: String = name
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
    }
}

fn http_date(ms: i64) -> Option<HeaderValue> {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).ok()?;
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    HeaderValue::from_str(&t.format(&fmt).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition_names() {
        assert_eq!(
            content_disposition(None, "s3://b/2025/cat.jpg", ImageFormat::Webp, false),
            "inline; filename=\"cat.webp\""
        );
        assert_eq!(
            content_disposition(Some("hello"), "s3://b/x.png", ImageFormat::Jpeg, true),
            "attachment; filename=\"hello.jpg\""
        );
        assert_eq!(
            content_disposition(None, "s3://b/", ImageFormat::Png, false),
            "inline; filename=\"image.png\""
        );
        let d = content_disposition(None, "s3://b/kötü.jpg", ImageFormat::Png, false);
        assert!(d.contains("filename*=UTF-8''k%C3%B6t%C3%BC.png"), "{d}");
    }

    #[tokio::test]
    async fn a_500_body_carries_no_internal_detail() {
        // Bug guarded: a 500 body quoted the panic message (or an I/O error with paths) to
        // the client; the detail belongs in the log, under the request id.
        let e = ImageError::Pool(PoolError::Crashed(
            "range start index 8589933768 out of range at /src/transform.rs".into(),
        ));
        let resp = e.to_response("REQ123");
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains("8589933768") && !text.contains("transform.rs"),
            "{text}"
        );
        assert!(text.contains("REQ123"), "{text}");
        // Client errors still name the problem.
        let e = ImageError::Unsigned("unsigned image URLs may not read bucket `x`".into());
        let body = http_body_util::BodyExt::collect(e.to_response("R").into_body())
            .await
            .unwrap()
            .to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("bucket `x`"));
    }

    #[test]
    fn dates_are_http_dates() {
        assert_eq!(
            http_date(784_111_777_000).unwrap(),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }
}
