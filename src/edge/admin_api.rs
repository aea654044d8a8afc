//! The edge admin door's API, behind a bearer token (`[edge] admin_token`, or the token
//! generated at first start into `data_dir/edge-admin-token`, 0600):
//! - `GET /api/cache`: entries, bytes by tier, hits, misses, hit ratio, purged;
//! - `POST /api/purge` with a JSON selector: `{"by":"url","host":..,"path":..}`,
//!   `{"by":"prefix","host":..,"prefix":..}` (host may be empty: every hostname),
//!   `{"by":"tag","tag":"s3://bucket/key"}`, `{"by":"tag_prefix","prefix":..}`,
//!   `{"by":"host","host":..}` or `{"by":"all"}`; answers `{"removed": n}`.
//!
//! What must stay true: nothing but `/health`, `/ready` and `/metrics` answers without the
//! token; a bad body gets a 400 naming the problem, never a panic.

use std::path::Path;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;

use super::cache::index::Selector;
use super::proxy::{EdgeBody, full, plain};
use super::{EdgeError, EdgeState};
use crate::server::RequestBody;

pub const TOKEN_FILE: &str = "edge-admin-token";
const MAX_BODY: usize = 64 * 1024;

/// The configured token, else the stored one, else a new one (stored 0600); and whether it
/// was made now.
pub fn token(configured: &str, data_dir: &Path) -> Result<(String, bool), EdgeError> {
    if !configured.is_empty() {
        return Ok((configured.to_owned(), false));
    }
    let path = data_dir.join(TOKEN_FILE);
    if let Ok(t) = std::fs::read_to_string(&path)
        && !t.trim().is_empty()
    {
        return Ok((t.trim().to_owned(), false));
    }
    let t = format!(
        "pxe_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    crate::tunnel::identity::write_private(&path, t.as_bytes()).map_err(|e| EdgeError::Setup {
        key: "edge.admin_token",
        message: e.to_string(),
    })?;
    Ok((t, true))
}

fn authorized(state: &EdgeState, req: &Request<RequestBody>) -> bool {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    crate::imaging::signature::constant_time_eq(given.as_bytes(), state.admin_token.as_bytes())
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<EdgeBody> {
    full(status, body.to_string(), "application/json")
}

pub async fn handle(state: Arc<EdgeState>, req: Request<RequestBody>) -> Response<EdgeBody> {
    let path = req.uri().path().to_owned();
    if matches!(path.as_str(), "/health" | "/ready" | "/metrics") {
        return super::metrics::admin(&state, &path);
    }
    if !path.starts_with("/api/") {
        return plain(StatusCode::NOT_FOUND, "no such edge admin path");
    }
    if !authorized(&state, &req) {
        let mut resp = plain(
            StatusCode::UNAUTHORIZED,
            "the edge admin API needs `Authorization: Bearer <token>` ([edge] admin_token, or \
             the edge-admin-token file in the edge's data_dir)",
        );
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    let Some(cache) = state.cache.clone() else {
        return plain(
            StatusCode::CONFLICT,
            "the edge cache is disabled ([edge.cache] enabled = false)",
        );
    };
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/api/cache") => json(
            StatusCode::OK,
            serde_json::to_value(cache.stats()).unwrap_or_default(),
        ),
        (Method::POST, "/api/purge") => {
            let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return plain(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "a purge body is at most 64 KiB of JSON",
                    );
                }
            };
            let selector: Selector = match serde_json::from_slice(&body) {
                Ok(s) => s,
                Err(e) => {
                    return plain(
                        StatusCode::BAD_REQUEST,
                        &format!(
                            "a purge names one selector, as {{\"by\": \"url\"|\"prefix\"|\"tag\"|\
                             \"tag_prefix\"|\"host\"|\"all\", ...}}: {e}"
                        ),
                    );
                }
            };
            let sel = selector.clone();
            let removed = tokio::task::spawn_blocking(move || cache.purge(&sel, None))
                .await
                .unwrap_or(0);
            tracing::info!(
                ?selector,
                removed,
                "edge cache purged through the admin API"
            );
            json(StatusCode::OK, serde_json::json!({ "removed": removed }))
        }
        (_, "/api/cache" | "/api/purge") => plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET /api/cache, POST /api/purge",
        ),
        _ => plain(StatusCode::NOT_FOUND, "no such edge admin path"),
    }
}
