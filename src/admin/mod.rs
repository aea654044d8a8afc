//! The admin listener: the embedded web UI, its JSON API (docs/admin-api.md), the image
//! endpoint reached through it (`/img/...`, for thumbnails and previews from the UI's own
//! origin), and the unauthenticated `/health`, `/ready` and `/metrics`.
//!
//! Every `/api/` route but `/api/login` needs the session cookie or the bearer token; a
//! change (POST, PUT, DELETE) made with the cookie also needs the session's CSRF token in
//! `X-CSRF-Token`.

mod api;
pub mod assets;
pub mod auth;
pub mod builder;
pub mod catalog;
pub mod cli;
pub mod ops;
pub mod purge;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};

use crate::image_service::ImagesState;
use crate::metrics::Metrics;
use crate::s3::ChangeListener;
use crate::s3::access::KeyRing;
use crate::store::{DynStore, Spool, StoreError};

pub use auth::{Auth, Principal};
pub use catalog::AdminCatalog;

pub const SESSION_COOKIE: &str = "pixelport_session";

/// The UI's Content-Security-Policy: scripts, styles and fetches from this origin only; no
/// inline code; images also from blob: (upload previews) and data:.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' blob: data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; \
form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    BadRequest(String),
    #[error("not logged in: log in, or send Authorization: Bearer <admin token>")]
    Unauthenticated,
    #[error("wrong user name or password")]
    InvalidCredentials,
    #[error("missing or wrong CSRF token: send the session's token in X-CSRF-Token")]
    Csrf,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("too many failed logins from this address; try again in {0} s")]
    RateLimited(u64),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("{0}")]
    Internal(String),
}

impl AdminError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AdminError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            AdminError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            AdminError::InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            AdminError::Csrf => (StatusCode::FORBIDDEN, "csrf"),
            AdminError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            AdminError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AdminError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            AdminError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            AdminError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            AdminError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            AdminError::InsufficientStorage(_) => {
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
            }
            AdminError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "admin API");
        }
        let mut resp = (
            status,
            axum::Json(serde_json::json!({ "error": code, "message": self.to_string() })),
        )
            .into_response();
        if let AdminError::RateLimited(secs) = self
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        use crate::store::sealing::SealError;
        let text = e.to_string();
        match e {
            StoreError::NoSuchBucket(_)
            | StoreError::NoSuchKey(_)
            | StoreError::NoSuchUpload(_)
            | StoreError::NoSuchVersion { .. }
            | StoreError::DeleteMarker(_) => AdminError::NotFound(text),
            StoreError::BucketExists(_) | StoreError::BucketNotEmpty(_) => {
                AdminError::Conflict(text)
            }
            StoreError::EntityTooLarge { .. } => AdminError::TooLarge(text),
            StoreError::InvalidPart(_)
            | StoreError::InvalidPartOrder
            | StoreError::EntityTooSmall { .. }
            | StoreError::InvalidRange { .. }
            | StoreError::BadDigest(_)
            | StoreError::IncompleteBody(_) => AdminError::BadRequest(text),
            StoreError::Unavailable(_) => AdminError::Unavailable(text),
            StoreError::InsufficientStorage(_) => AdminError::InsufficientStorage(text),
            StoreError::Sealing(e) => match e {
                SealError::KeyRequired | SealError::WrongKey => AdminError::Forbidden(format!(
                    "{text} The admin UI cannot read objects encrypted with a customer key \
                     (SSE-C): only a request carrying that key can."
                )),
                SealError::NotApplicable => AdminError::BadRequest(text),
                SealError::MasterKey(_) | SealError::Corrupt(_) => AdminError::Internal(text),
            },
            StoreError::Internal(_) | StoreError::NotImplemented(_) => AdminError::Internal(text),
        }
    }
}

impl From<crate::s3::bucket_settings::SettingsError> for AdminError {
    fn from(e: crate::s3::bucket_settings::SettingsError) -> Self {
        use crate::s3::bucket_settings::SettingsError;
        match e {
            SettingsError::Catalog(e) => e.into(),
            SettingsError::Refused(r) => AdminError::Forbidden(r.to_string()),
            SettingsError::Policy(p) => AdminError::BadRequest(p.to_string()),
        }
    }
}

impl From<catalog::CatalogError> for AdminError {
    fn from(e: catalog::CatalogError) -> Self {
        AdminError::Internal(e.to_string())
    }
}

impl From<crate::cache::CacheError> for AdminError {
    fn from(e: crate::cache::CacheError) -> Self {
        AdminError::Internal(format!("cache: {e}"))
    }
}

impl From<tokio::task::JoinError> for AdminError {
    fn from(e: tokio::task::JoinError) -> Self {
        AdminError::Internal(e.to_string())
    }
}

/// What the admin listener's handlers share.
pub struct AdminState {
    pub store: DynStore,
    pub images: Arc<ImagesState>,
    pub metrics: Arc<Metrics>,
    pub auth: Auth,
    pub catalog: Arc<AdminCatalog>,
    /// Per-bucket settings shared with the S3 listener (CORS rules; forgets a deleted
    /// bucket's choices).
    pub buckets: Arc<crate::s3::bucket_settings::BucketSettings>,
    /// The S3 listener's keys: the root key plus the catalog's.
    pub keys: Arc<KeyRing>,
    /// The root S3 key (configuration or credentials.toml); SIGHUP may replace it.
    pub root_access_key: std::sync::RwLock<String>,
    /// `[images] unsigned_buckets`, what a deleted bucket's choice falls back to (the live
    /// set is `images.unsigned_buckets`).
    pub config_unsigned: HashSet<String>,
    pub spool: Spool,
    pub max_object_size: u64,
    /// Told of every object the admin API writes or deletes (cache invalidation, eager
    /// presets), as the S3 API does.
    pub listeners: Vec<Arc<dyn ChangeListener>>,
    /// The effective configuration, secrets masked.
    pub settings: serde_json::Value,
    /// Base URL of the image endpoint in the URLs handed out (no trailing slash).
    pub images_url: String,
    /// Base URL of the S3 listener (no trailing slash).
    pub s3_url: String,
    pub started: Instant,
    pub started_at: time::OffsetDateTime,
    /// The tunnel connector's links, once it started (none when nothing was joined).
    pub tunnel: Arc<std::sync::OnceLock<Arc<crate::tunnel::connector::Status>>>,
}

impl AdminState {
    /// The root S3 access key in force.
    pub fn root_key(&self) -> String {
        self.root_access_key
            .read()
            .map(|k| k.clone())
            .unwrap_or_default()
    }

    /// Applies the catalog's unsigned-image choices on top of the configured ones (the
    /// public-read choices are bucket policies, loaded by `BucketSettings`).
    pub fn load_public(&self) -> Result<(), AdminError> {
        for (bucket, open) in self.catalog.unsigned_overrides()? {
            self.images.unsigned_buckets.set(&bucket, open);
        }
        Ok(())
    }

    /// Adds the catalog's access keys to the S3 key ring.
    pub fn load_keys(&self) -> Result<usize, AdminError> {
        let keys = self.catalog.keys()?;
        for k in &keys {
            let policy = match k.policy.as_deref().map(crate::s3::policy::parse_key_policy) {
                None => None,
                Some(Ok(p)) => Some(Arc::new(p)),
                Some(Err(e)) => {
                    // Never let a key whose scope cannot be read act unscoped.
                    tracing::error!(access_key = k.access_key, error = %e, "the key's policy no longer parses; the key is disabled until its policy is set again");
                    continue;
                }
            };
            self.keys
                .insert_scoped(&k.access_key, &k.secret_key, policy);
        }
        Ok(keys.len())
    }

    fn notify(&self, bucket: &str, key: &str) {
        for l in &self.listeners {
            l.object_changed(bucket, key);
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| auth::cookie(v, SESSION_COOKIE))
}

/// Finds who is asking; refuses anonymous requests (401) and cookie-authenticated changes
/// without the right CSRF token (403).
async fn require_auth(
    State(state): State<Arc<AdminState>>,
    mut req: Request,
    next: Next,
) -> Result<Response, AdminError> {
    let headers = req.headers();
    let principal = if let Some(token) = bearer(headers) {
        if !state.auth.token_ok(token) {
            return Err(AdminError::Unauthenticated);
        }
        Principal::Token
    } else {
        let session = session_id(headers)
            .and_then(|id| state.auth.session(id))
            .ok_or(AdminError::Unauthenticated)?;
        let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let sent = headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !crate::imaging::signature::constant_time_eq(
                sent.as_bytes(),
                session.csrf.as_bytes(),
            ) {
                return Err(AdminError::Csrf);
            }
        }
        Principal::Session {
            user: session.user,
            csrf: session.csrf,
        }
    };
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}

/// Headers every admin answer carries.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// `/` and `/ui/<file>`: the embedded web UI.
async fn asset(path: &str) -> Response {
    match assets::get(path) {
        Some(bytes) => (
            [
                (header::CONTENT_TYPE, assets::content_type(path)),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes.into_owned(),
        )
            .into_response(),
        None => AdminError::NotFound(format!("no such file: {path}")).into_response(),
    }
}

async fn index() -> Response {
    asset("index.html").await
}

async fn ui_file(axum::extract::Path(path): axum::extract::Path<String>) -> Response {
    asset(&path).await
}

async fn not_found() -> AdminError {
    AdminError::NotFound("no such page or admin API endpoint (see docs/admin-api.md)".into())
}

pub fn router(state: Arc<AdminState>) -> Router {
    let protected = Router::new()
        .route("/api/logout", post(api::logout))
        .route("/api/session", get(api::session))
        .route("/api/overview", get(api::overview))
        .route(
            "/api/buckets",
            get(api::list_buckets).post(api::create_bucket),
        )
        .route("/api/buckets/{bucket}", delete(api::delete_bucket))
        .route("/api/buckets/{bucket}/public", put(api::set_public))
        .route(
            "/api/buckets/{bucket}/unsigned-images",
            put(api::set_unsigned_images),
        )
        .route("/api/buckets/{bucket}/objects", get(api::list_objects))
        .route(
            "/api/buckets/{bucket}/object",
            get(api::get_object)
                .put(api::put_object)
                .delete(api::delete_object),
        )
        .route("/api/buckets/{bucket}/uploads", post(api::create_upload))
        .route(
            "/api/buckets/{bucket}/uploads/{id}",
            put(api::upload_part).delete(api::abort_upload),
        )
        .route(
            "/api/buckets/{bucket}/uploads/{id}/complete",
            post(api::complete_upload),
        )
        .route("/api/sign", post(api::sign))
        .route("/api/cache", get(api::cache_stats))
        .route("/api/cache/purge", post(api::cache_purge))
        .route("/api/keys", get(api::list_keys).post(api::create_key))
        .route("/api/keys/{access_key}", delete(api::delete_key))
        .route("/api/keys/{access_key}/policy", put(api::set_key_policy))
        .route("/api/settings", get(api::settings))
        .route("/api/tunnel", get(api::tunnel))
        .route("/img/{*path}", get(api::image).head(api::image))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_auth,
        ));
    Router::new()
        .route("/", get(index))
        .route("/ui/{*path}", get(ui_file))
        .route("/api/login", post(api::login))
        .route("/health", get(crate::http::health))
        .merge(ops::router(Arc::new(ops::Ops {
            store: state.store.clone(),
            images: state.images.clone(),
            metrics: state.metrics.clone(),
            tunnel: state.tunnel.clone(),
        })))
        .merge(protected)
        .fallback(not_found)
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}
