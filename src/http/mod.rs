//! The HTTP side that is not S3: the image listener (`images`: imgproxy-style URLs, plus
//! `/health`) and the admin listener's health, readiness and metrics handlers (the rest of
//! the admin listener is `crate::admin`).

pub mod eager;
pub mod images;
pub mod resolved;
pub mod throttle;

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::admin::AdminState;

pub(crate) async fn health() -> impl IntoResponse {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({ "status": "ok" })),
    )
}

/// `GET /metrics`: Prometheus text format. Gauges that describe the present (workers,
/// images in progress, store usage) are read when scraped.
pub(crate) async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let pool = state.images.pool.stats();
    let m = &state.metrics;
    m.workers
        .set(i64::try_from(pool.workers).unwrap_or(i64::MAX));
    m.images_in_progress
        .set(i64::try_from(pool.processing).unwrap_or(i64::MAX));
    if let Some(cache) = &state.images.cache {
        let stats = cache.stats();
        m.cache_entries
            .set(i64::try_from(stats.entries).unwrap_or(i64::MAX));
        m.cache_bytes
            .set(i64::try_from(stats.bytes).unwrap_or(i64::MAX));
        let seen = m.cache_evictions.get();
        if stats.evictions > seen {
            m.cache_evictions.inc_by(stats.evictions - seen);
        }
    }
    match state.store.usage().await {
        Ok(Some((bytes, objects))) => {
            m.store_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
            m.store_objects
                .set(i64::try_from(objects).unwrap_or(i64::MAX));
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read store usage for metrics"),
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
}

/// `GET /ready`: 200 when the store answers a listing and the derivative cache a read.
pub(crate) async fn ready(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let store = &state.store;
    let mut problems = Vec::new();
    if let Err(e) = store.list_buckets().await {
        problems.push(format!("store: {e}"));
    }
    if let Some(cache) = state.images.cache.clone() {
        let probe = crate::cache::CacheKey::new("pixelport:ready", "", "", "");
        match tokio::task::spawn_blocking(move || cache.get(&probe)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => problems.push(format!("cache: {e}")),
            Err(e) => problems.push(format!("cache: {e}")),
        }
    }
    if let Some(t) = state.tunnel.get()
        && !t.ready()
    {
        problems.push("tunnel: not connected to every joined edge (see /api/tunnel)".into());
    }
    let cache = if state.images.cache.is_some() {
        "enabled"
    } else {
        "disabled"
    };
    if problems.is_empty() {
        (
            StatusCode::OK,
            axum::Json(
                serde_json::json!({ "status": "ready", "store": store.kind(), "cache": cache }),
            ),
        )
    } else {
        tracing::warn!(?problems, "readiness check failed");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({
                "status": "unavailable", "store": store.kind(), "cache": cache, "errors": problems,
            })),
        )
    }
}

/// The image listener's service: `GET`/`HEAD /health`, else the image handler. Plain hyper
/// rather than a router: a cache hit costs a few microseconds, and routing and boxing were a
/// measurable part of them (docs/cache.md, Benchmark).
#[derive(Clone)]
pub struct ImagesService(pub Arc<images::ImagesState>);

type ImagesFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<axum::response::Response, Infallible>> + Send>,
>;

impl<B: Send + 'static> hyper::service::Service<axum::http::Request<B>> for ImagesService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = ImagesFuture;

    fn call(&self, req: axum::http::Request<B>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            let method = req.method();
            if req.uri().path() == "/health"
                && (method == axum::http::Method::GET || method == axum::http::Method::HEAD)
            {
                let mut resp = health().await.into_response();
                if method == axum::http::Method::HEAD {
                    use axum::body::HttpBody;
                    if let Some(n) = resp.body().size_hint().exact() {
                        resp.headers_mut()
                            .insert(axum::http::header::CONTENT_LENGTH, n.into());
                    }
                    *resp.body_mut() = axum::body::Body::empty();
                }
                return Ok(resp);
            }
            Ok(images::handle(State(state), req).await)
        })
    }
}
