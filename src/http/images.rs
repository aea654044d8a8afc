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

use crate::image_service::render::fetch;
use crate::image_service::resolved::{self, Resolved};
use crate::image_service::{Caller, ImageError, ImagesState, Render, Rendered};
use crate::imaging::client_hints::{self, Hints};
use crate::imaging::decode;
use crate::imaging::negotiate::{self, Accepted};
use crate::imaging::options::{self, ImageFormat, Options};
use crate::imaging::pipeline::{self, PipelineError};
use crate::imaging::pool::PoolError;
use crate::imaging::signature::constant_time_eq;
use crate::imaging::source::{self, SourceError, SourceUrl};
use crate::imaging::svg;
use crate::imaging::url;

/// The HTTP status of each error.
fn status(e: &ImageError) -> StatusCode {
    match e {
        ImageError::Secret | ImageError::Signature | ImageError::Unsigned(_) => {
            StatusCode::FORBIDDEN
        }
        ImageError::NotAnImage => StatusCode::UNPROCESSABLE_ENTITY,
        ImageError::Url(_) | ImageError::Options(_) => StatusCode::NOT_FOUND,
        ImageError::Source(e) => match e {
            SourceError::NotFound(_) | SourceError::Invalid(..) | SourceError::NotAllowed(..) => {
                StatusCode::NOT_FOUND
            }
            SourceError::TooLarge { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            SourceError::Upstream(_) => StatusCode::BAD_GATEWAY,
            SourceError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            SourceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            SourceError::Encrypted(_) => StatusCode::FORBIDDEN,
        },
        ImageError::Pipeline(PipelineError::Cancelled { .. }) => StatusCode::SERVICE_UNAVAILABLE,
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
        ImageError::Watermark(_) => StatusCode::BAD_GATEWAY,
        ImageError::Shared(e) => status(e),
    }
}

/// The JSON error answer, under `request_id`.
fn error_response(e: &ImageError, request_id: &str) -> Response {
    let status = status(e);
    // A 500's detail (a panic message, a path, an I/O error) stays in the log, found by
    // the request id; the client learns only that it was not its fault.
    let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
        format!("internal error; the server log has the detail under request id {request_id}")
    } else {
        e.to_string()
    };
    let body = serde_json::json!({
        "error": status.canonical_reason().unwrap_or("Error"),
        "kind": e.kind(),
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

/// The handler for every image request (every path but `/health`). The body is not read.
pub async fn handle<B>(State(state): State<Arc<ImagesState>>, req: Request<B>) -> Response {
    let started = Instant::now();
    let request_id = crate::server::RequestId::of(&req).0;
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let tunneled = req.extensions().get::<crate::server::Tunneled>().is_some();
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
            let status = status(&e);
            if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
                tracing::error!(request_id, %method, path, status = status.as_u16(), ms, error = %e, "image");
            } else {
                tracing::info!(request_id, %method, path, status = status.as_u16(), ms, error = %e, "image");
            }
            message = e.to_string();
            error_response(&e, &request_id)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    // Through the tunnel, the edge files the response under its source, so a write to the
    // source purges it there too; the edge strips the header.
    if tunneled && let Some(tag) = source_tag(&path) {
        resp.headers_mut()
            .insert(crate::edge::cache::layer::TAG_HEADER, tag);
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

/// The surrogate tag of an image URL whose source is an S3 object.
fn source_tag(path: &str) -> Option<HeaderValue> {
    let parsed = url::parse_path(info_path(path).unwrap_or(path)).ok()?;
    let SourceUrl::S3 { bucket, key } = SourceUrl::parse(parsed.source.url()).ok()? else {
        return None;
    };
    HeaderValue::from_str(&crate::tunnel::purge::source_tag(&bucket, &key)).ok()
}

/// Decrements the in-progress gauge however the request ends (dropped connections too).
struct InProgress<'a>(&'a prometheus::IntGauge);

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

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
    if let Some(rest) = info_path(path) {
        return serve_info(state, rest, headers, started).await;
    }
    let accepted = if state.negotiation.enabled() {
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
        Accepted::read(accept, pipeline::can_encode)
    } else {
        // With every switch off, `Accept` changes nothing: one class for all requests.
        Accepted::default()
    };
    let class = resolved::accept_class(accepted);
    let hints = if state.config.enable_client_hints {
        Hints::read(|name| headers.get(name).and_then(|v| v.to_str().ok()))
    } else {
        Hints::default()
    };
    // The fast path keys on the path and Accept class only: a request with hints takes
    // the full path, where they become options (and so part of the cache key).
    if hints.is_empty()
        && let Some(resp) = state.serve_resolved(path, class, headers).await
    {
        return Ok(resp);
    }
    let parsed = url::parse_path(path)?;
    let signed = check_signature(state, &parsed)?;
    let mut opts = options::parse(&parsed.options, &state.parse_ctx)?;
    if let Some(ext) = &parsed.extension {
        opts.apply_extension(ext)?;
    }
    hints.apply(&mut opts);
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
    if state.config.use_etag
        && let Some(resp) = not_modified(headers, &etag)
    {
        return Ok(resp);
    }
    if variant.opts.raw {
        let src = match prefetched {
            Some((_, src)) => src,
            None => {
                if let SourceUrl::S3 { bucket, key } = &variant.source
                    && let Some(resp) = state.stream_raw(bucket, key, &reply).await?
                {
                    return Ok(resp);
                }
                fetch(state, &variant.source, variant.max_file, started).await?
            }
        };
        // Only bytes that are an image in a supported format are sent, labelled with the
        // format they are: never a text file (or HTML) under an image type, and an SVG
        // only sanitised.
        let format = decode::sniff(&src.bytes).ok_or(ImageError::NotAnImage)?;
        let bytes = if format == ImageFormat::Svg {
            let doc = svg::sanitized(&src.bytes).map_err(PipelineError::from)?;
            bytes::Bytes::from(doc.text)
        } else {
            src.bytes
        };
        let rendered = Rendered {
            content_type: negotiate::mime_type(format).to_owned(),
            format,
            last_modified_ms: src.last_modified_ms,
            cache_control: src.cache_control,
            bytes,
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
    if let Some(resp) = reply.not_modified_since(headers, rendered.last_modified_ms) {
        return Ok(resp);
    }
    if cache_hit.is_some()
        && hints.is_empty()
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

/// Whether `parsed` is signed (`false`: unsigned, `unsafe` or `_`); an error when it carries
/// a signature that does not verify. Without a key (only when a caller builds the state
/// without one) every URL is unsigned.
fn check_signature(state: &ImagesState, parsed: &url::ParsedPath<'_>) -> Result<bool, ImageError> {
    match &state.signer {
        Some(signer) if !matches!(parsed.signature, "unsafe" | "_") => {
            signer
                .verify(parsed.signature, &parsed.signed_part)
                .map_err(|_| ImageError::Signature)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// The image path inside an info URL (`/info/SIG/OPTIONS/plain/SOURCE`), signed as it is.
fn info_path(path: &str) -> Option<&str> {
    path.strip_prefix("/info")
        .filter(|rest| rest.starts_with('/'))
}

/// `/info/...`: the source's description as JSON (`image_service::info`).
async fn serve_info(
    state: &ImagesState,
    path: &str,
    headers: &HeaderMap,
    started: Instant,
) -> Result<Response, ImageError> {
    let parsed = url::parse_path(path)?;
    let signed = check_signature(state, &parsed)?;
    let mut opts = options::parse(&parsed.options, &state.parse_ctx)?;
    if let Some(ext) = &parsed.extension {
        opts.apply_extension(ext)?;
    }
    let variant = state.variant(opts, parsed.source.url(), Accepted::default())?;
    if !signed {
        state.check_unsigned(&variant)?;
    }
    let (version, prefetched) = state.info_version(&variant, started).await?;
    let etag = format!("\"{}\"", &state.info_key(&variant, &version).hex()[..32]);
    if state.config.use_etag
        && let Some(resp) = not_modified(headers, &etag)
    {
        return Ok(resp);
    }
    let answer = state.info(&variant, &version, prefetched, started).await?;
    let mut resp = Response::new(Body::from(answer.body.clone()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(answer.body.len()));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "max-age={}, public",
        ttl(state, &variant.opts).as_secs()
    )) {
        h.insert(header::CACHE_CONTROL, v);
    }
    if state.config.use_etag
        && let Ok(v) = HeaderValue::from_str(&etag)
    {
        h.insert(header::ETAG, v);
    }
    if state.config.use_last_modified
        && let Some(v) = http_date(answer.last_modified_ms)
    {
        h.insert(header::LAST_MODIFIED, v);
    }
    match answer.cache_hit {
        Some(true) => {
            h.insert("x-cache", HeaderValue::from_static("HIT"));
        }
        Some(false) => {
            h.insert("x-cache", HeaderValue::from_static("MISS"));
        }
        None => {}
    }
    Ok(resp)
}

impl ImagesState {
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
        if self.config.use_etag
            && let Some(resp) = not_modified(headers, &r.etag)
        {
            return Some(resp);
        }
        let hit = self.cached_entry(&r.cache_key, false)?;
        if self.config.use_last_modified
            && let Some(resp) = modified_since(headers, hit.last_modified_ms)
        {
            return Some(resp);
        }
        self.metrics.cache_hits.inc();
        let length = hit.body.len();
        let mut resp = Response::new(Body::from(hit.body));
        *resp.headers_mut() = r.headers.clone();
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        Some(resp)
    }

    /// `raw` on an `s3://` source: the stored bytes streamed as they are read, never held
    /// whole, once their first bytes sniff as a supported image format (422 otherwise).
    async fn stream_raw(
        &self,
        bucket: &str,
        key: &str,
        reply: &Reply<'_>,
    ) -> Result<Option<Response>, ImageError> {
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
        if format == ImageFormat::Svg {
            // Sanitised whole, not streamed.
            return Ok(None);
        }
        let first = head.freeze();
        let body =
            futures::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(stream);
        let mut resp = Response::new(Body::from_stream(body));
        *resp.headers_mut() = reply.head(
            negotiate::mime_type(format),
            usize::try_from(info.size).unwrap_or(usize::MAX),
            format,
            info.last_modified_ms,
            info.attrs.cache_control.as_deref(),
            None,
        );
        Ok(Some(resp))
    }
}

/// The `Content-Security-Policy` of an SVG answer: no script, no outside resource.
const SVG_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

/// Bytes sniffed to tell a `raw` source's format: as far as SVG's `<svg` is looked for
/// (the longest binary signature checked is 26 bytes).
const SNIFF_BYTES: usize = decode::SVG_SNIFF_BYTES;

fn not_modified(headers: &HeaderMap, etag: &str) -> Option<Response> {
    let inm = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?;
    if !crate::image_service::conditional::names_etag(inm, etag) {
        return None;
    }
    let mut resp = StatusCode::NOT_MODIFIED.into_response();
    if let Ok(v) = HeaderValue::from_str(etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Some(resp)
}

/// 304 when `If-Modified-Since` is at or after `last_modified_ms` (whole seconds, as HTTP
/// dates carry), for a request without `If-None-Match` (which takes precedence, RFC 9110
/// 13.2.2).
fn modified_since(headers: &HeaderMap, last_modified_ms: i64) -> Option<Response> {
    if headers.contains_key(header::IF_NONE_MATCH) {
        return None;
    }
    let ims = headers.get(header::IF_MODIFIED_SINCE)?.to_str().ok()?;
    let since = crate::imaging::http_source::parse_http_date(ims.trim())?;
    if last_modified_ms.div_euclid(1000) > since.div_euclid(1000) {
        return None;
    }
    let mut resp = StatusCode::NOT_MODIFIED.into_response();
    if let Some(v) = http_date(last_modified_ms) {
        resp.headers_mut().insert(header::LAST_MODIFIED, v);
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
    /// 304 for `If-Modified-Since` when `[images] use_last_modified` is on.
    fn not_modified_since(&self, headers: &HeaderMap, last_modified_ms: i64) -> Option<Response> {
        if !self.state.config.use_last_modified {
            return None;
        }
        let mut resp = modified_since(headers, last_modified_ms)?;
        if self.state.config.use_etag
            && let Ok(v) = HeaderValue::from_str(self.etag)
        {
            resp.headers_mut().insert(header::ETAG, v);
        }
        Some(resp)
    }

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
            r.cache_control.as_deref(),
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
        source_cache_control: Option<&str>,
        cache_hit: Option<bool>,
    ) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let h = &mut headers;
        if let Ok(v) = HeaderValue::from_str(content_type) {
            h.insert(header::CONTENT_TYPE, v);
        }
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        if format == ImageFormat::Svg {
            // Sanitised already; opened on its own, it still may run nothing and load
            // nothing but itself.
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(SVG_CSP),
            );
        }
        let config = &self.state.config;
        // A URL with a cachebuster names one version of its source for good (a new version
        // gets a new URL), so browsers need never revalidate it.
        let immutable = config.immutable || !self.opts.cachebuster.is_empty();
        let cache_control = format!(
            "max-age={}, public{}",
            self.ttl.as_secs(),
            if immutable { ", immutable" } else { "" }
        );
        // The source's own, when asked and it has one (imgproxy's
        // IMGPROXY_CACHE_CONTROL_PASSTHROUGH); else Pixelport's.
        let passed = source_cache_control
            .filter(|_| config.cache_control_passthrough)
            .and_then(|v| HeaderValue::from_str(v).ok());
        if let Some(v) = passed.or_else(|| HeaderValue::from_str(&cache_control).ok()) {
            h.insert(header::CACHE_CONTROL, v);
        }
        if config.use_etag
            && let Ok(v) = HeaderValue::from_str(self.etag)
        {
            h.insert(header::ETAG, v);
        }
        if config.use_last_modified
            && let Some(v) = http_date(last_modified_ms)
        {
            h.insert(header::LAST_MODIFIED, v);
        }
        let vary = match (self.vary, config.enable_client_hints) {
            (true, true) => Some(VARY_ACCEPT_AND_HINTS),
            (true, false) => Some("Accept"),
            (false, true) => Some(client_hints::VARY),
            (false, false) => None,
        };
        if let Some(vary) = vary {
            h.insert(header::VARY, HeaderValue::from_static(vary));
        }
        if config.enable_client_hints {
            h.insert(
                "accept-ch",
                HeaderValue::from_static(client_hints::ACCEPT_CH),
            );
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

/// `Vary` of an endpoint that negotiates formats and reads client hints.
const VARY_ACCEPT_AND_HINTS: &str = "Accept, Sec-CH-DPR, DPR, Sec-CH-Width, Width";

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
        let resp = error_response(&e, "REQ123");
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
        let body = http_body_util::BodyExt::collect(error_response(&e, "R").into_body())
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
