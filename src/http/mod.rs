//! The HTTP side that is not S3: the image listener (`images`: imgproxy-style URLs, plus
//! `/health`) and the admin listener (health and readiness; the admin API grows here).

pub mod images;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::store::DynStore;

async fn health() -> impl IntoResponse {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({ "status": "ok" })),
    )
}

async fn ready(State(store): State<Arc<DynStore>>) -> impl IntoResponse {
    match store.list_buckets().await {
        Ok(_) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "status": "ready", "store": store.kind() })),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(
                    serde_json::json!({ "status": "unavailable", "store": store.kind(), "error": e.to_string() }),
                ),
            )
        }
    }
}

pub fn images_router(state: Arc<images::ImagesState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .fallback(images::handle)
        .with_state(state)
}

pub fn admin_router(store: DynStore) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(Arc::new(store))
}
