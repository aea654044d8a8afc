//! The admin listener's operations handlers: `/metrics` (Prometheus) and `/ready`. (`/health`
//! is the image listener's own, `crate::http::health`.) They read only what they report
//! ([`Ops`]: the store, the image pool and cache, the metrics registry and the tunnel
//! status), not the admin UI's state.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::image_service::ImagesState;
use crate::metrics::Metrics;
use crate::store::DynStore;
use crate::tunnel::connector::Status;

/// What `/metrics` and `/ready` read.
pub struct Ops {
    pub store: DynStore,
    pub images: Arc<ImagesState>,
    pub metrics: Arc<Metrics>,
    /// Set once the tunnel has started (when the appliance has joined an edge).
    pub tunnel: Arc<OnceLock<Arc<Status>>>,
}

/// `/ready` and `/metrics`, as a router to merge into the admin listener's.
pub fn router<S: Clone + Send + Sync + 'static>(ops: Arc<Ops>) -> axum::Router<S> {
    axum::Router::new()
        .route("/ready", axum::routing::get(ready))
        .route("/metrics", axum::routing::get(metrics))
        .with_state(ops)
}

/// `GET /metrics`: Prometheus text format. Gauges that describe the present (workers,
/// images in progress, store usage) are read when scraped.
async fn metrics(State(state): State<Arc<Ops>>) -> impl IntoResponse {
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
async fn ready(State(state): State<Arc<Ops>>) -> impl IntoResponse {
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
