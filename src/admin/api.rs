//! The admin API's handlers (docs/admin-api.md). Requests reach them authenticated (see
//! `require_auth`), except `login`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::TryStreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Login;
use super::builder::BuildRequest;
use super::catalog::StoredKey;
use super::{AdminError, AdminState, Principal, SESSION_COOKIE};
use crate::server::PeerAddr;
use crate::store::spool::ChecksumSet;
use crate::store::{CompletedPart, ListQuery, ObjectAttrs, ObjectInfo};

type ApiResult<T = Response> = Result<T, AdminError>;

fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| AdminError::BadRequest(format!("invalid JSON body: {e}")))
}

fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

// ---------------------------------------------------------------------------------------
// Session
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct LoginBody {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
}

/// The browser reached us over HTTPS: this process terminated TLS, or a proxy in front of
/// it says it did (`X-Forwarded-Proto: https`).
fn over_tls(extensions: &http::Extensions, headers: &HeaderMap) -> bool {
    extensions.get::<crate::server::OverTls>().is_some()
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn session_cookie(value: &str, max_age: u64, secure: bool) -> ApiResult<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
    ))
    .map_err(|e| AdminError::Internal(e.to_string()))
}

pub async fn login(State(state): State<Arc<AdminState>>, req: Request) -> ApiResult {
    let client = req
        .extensions()
        .get::<PeerAddr>()
        .map(|p| p.0.ip())
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    let secure = over_tls(req.extensions(), req.headers());
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024)
        .await
        .map_err(|e| AdminError::BadRequest(e.to_string()))?;
    let b: LoginBody = parse(&body)?;
    if let Some(wait) = state.auth.limited_now(client) {
        return Err(AdminError::RateLimited(wait.as_secs().max(1)));
    }
    // At most a few argon2 verifications at once (memory and the blocking pool); a burst
    // waits its turn for a while, then is told to retry.
    let Some(slot) = state.auth.verify_slot().await else {
        return Err(AdminError::RateLimited(1));
    };
    let st = state.clone();
    let outcome =
        tokio::task::spawn_blocking(move || st.auth.login(client, &b.user, &b.password)).await?;
    drop(slot);
    match outcome {
        Login::Ok(id, session) => {
            tracing::info!(%client, user = session.user, "admin login");
            let cookie = session_cookie(&id, state.auth.ttl().as_secs(), secure)?;
            let mut resp =
                Json(json!({ "user": session.user, "csrf": session.csrf })).into_response();
            resp.headers_mut().insert(header::SET_COOKIE, cookie);
            Ok(resp)
        }
        Login::Refused => {
            tracing::warn!(%client, "admin login refused");
            Err(AdminError::InvalidCredentials)
        }
        Login::Limited(wait) => Err(AdminError::RateLimited(wait.as_secs().max(1))),
    }
}

pub async fn logout(State(state): State<Arc<AdminState>>, req: Request) -> ApiResult {
    let headers = req.headers();
    if let Some(id) = super::session_id(headers) {
        state.auth.logout(id);
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie("", 0, over_tls(req.extensions(), headers))?,
    );
    Ok(resp)
}

pub async fn session(Extension(p): Extension<Principal>) -> Json<Value> {
    match p {
        Principal::Session { user, csrf } => Json(json!({ "user": user, "csrf": csrf })),
        Principal::Token => Json(json!({ "user": "(token)", "csrf": "" })),
    }
}

// ---------------------------------------------------------------------------------------
// Dashboard, cache, settings
// ---------------------------------------------------------------------------------------

fn cache_json(state: &AdminState) -> Value {
    let hits = state.metrics.cache_hits.get();
    let misses = state.metrics.cache_misses.get();
    let ratio = if hits + misses == 0 {
        Value::Null
    } else {
        json!(hits as f64 / (hits + misses) as f64)
    };
    match &state.images.cache {
        Some(cache) => {
            let s = cache.stats();
            json!({
                "enabled": true, "path": cache.path().display().to_string(),
                "entries": s.entries, "bytes": s.bytes, "max_bytes": cache.config().max_size,
                "hits": hits, "misses": misses, "hit_ratio": ratio, "evictions": s.evictions,
            })
        }
        None => json!({
            "enabled": false, "path": null, "entries": 0, "bytes": 0, "max_bytes": 0,
            "hits": hits, "misses": misses, "hit_ratio": ratio, "evictions": 0,
        }),
    }
}

pub async fn overview(State(state): State<Arc<AdminState>>) -> ApiResult<Json<Value>> {
    let buckets = state.store.list_buckets().await?.len();
    let (bytes, objects) = match state.store.usage().await? {
        Some((b, o)) => (json!(b), json!(o)),
        None => (Value::Null, Value::Null),
    };
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "started": state.started_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        "store": { "kind": state.store.kind(), "bytes": bytes, "objects": objects, "buckets": buckets },
        "cache": cache_json(&state),
        "traffic": state.metrics.traffic.minutes(),
        "errors": state.metrics.traffic.errors(),
        "tunnel": state.tunnel.get().map(|t| t.snapshot()),
    })))
}

/// The tunnel's links: edge, slot, state, reconnects, last error (`[]` when not joined).
pub async fn tunnel(State(state): State<Arc<AdminState>>) -> Json<Value> {
    let links = state.tunnel.get().map(|t| t.snapshot()).unwrap_or_default();
    Json(json!({
        "joined": state.tunnel.get().is_some(),
        "ready": state.tunnel.get().is_none_or(|t| t.ready()),
        "links": links,
    }))
}

pub async fn cache_stats(State(state): State<Arc<AdminState>>) -> Json<Value> {
    let mut out = cache_json(&state);
    // The edges' caches, as each last reported over the tunnel (every 2 s).
    let edges: Vec<Value> = state
        .tunnel
        .get()
        .map(|t| t.edge_caches())
        .unwrap_or_default()
        .into_iter()
        .map(|(r, age)| {
            let looked = r.hits + r.misses;
            json!({
                "edge": r.edge, "entries": r.entries, "memory_bytes": r.memory_bytes,
                "disk_bytes": r.disk_bytes, "hits": r.hits, "misses": r.misses,
                "hit_ratio": if looked == 0 { Value::Null } else { json!(r.hits as f64 / looked as f64) },
                "reported_secs_ago": age,
            })
        })
        .collect();
    out["edges"] = json!(edges);
    Json(out)
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct PurgeBody {
    all: bool,
    bucket: Option<String>,
    prefix: Option<String>,
    key: Option<String>,
}

pub async fn cache_purge(
    State(state): State<Arc<AdminState>>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let b: PurgeBody = parse(&body)?;
    let Some(cache) = state.images.cache.clone() else {
        return Err(AdminError::Conflict(
            "the derivative cache is disabled ([cache] enabled = false)".into(),
        ));
    };
    let what = super::purge::Purge::from_parts(
        b.all,
        b.bucket.as_deref(),
        b.prefix.as_deref(),
        b.key.as_deref(),
    )
    .map_err(|m| AdminError::BadRequest(m.into()))?;
    let listeners = state.listeners.clone();
    let removed = tokio::task::spawn_blocking(move || {
        let removed = what.run(&cache)?;
        // The edges' caches too (the tunnel's purge listener waits for them).
        for l in &listeners {
            l.purged(what.scope());
        }
        Ok::<_, crate::cache::CacheError>(removed)
    })
    .await??;
    tracing::info!(removed, "cache purged through the admin API");
    Ok(Json(json!({ "removed": removed })))
}

pub async fn settings(State(state): State<Arc<AdminState>>) -> Json<Value> {
    Json(json!({ "config": state.settings }))
}

// ---------------------------------------------------------------------------------------
// Buckets
// ---------------------------------------------------------------------------------------

pub async fn list_buckets(State(state): State<Arc<AdminState>>) -> ApiResult<Json<Value>> {
    let buckets: Vec<Value> = state
        .store
        .list_buckets()
        .await?
        .into_iter()
        .map(|b| bucket_json(&state, &b.name, b.created_ms))
        .collect();
    Ok(Json(json!({ "buckets": buckets })))
}

#[derive(Deserialize)]
struct NameBody {
    #[serde(default)]
    name: String,
}

pub async fn create_bucket(State(state): State<Arc<AdminState>>, body: Bytes) -> ApiResult {
    let b: NameBody = parse(&body)?;
    crate::s3::names::validate_bucket_name(&b.name)
        .map_err(|m| AdminError::BadRequest(format!("bucket name `{}`: {m}", b.name)))?;
    state.store.create_bucket(&b.name).await?;
    let info = state.store.head_bucket(&b.name).await?;
    tracing::info!(bucket = b.name, "bucket created through the admin API");
    Ok((
        StatusCode::CREATED,
        Json(bucket_json(&state, &info.name, info.created_ms)),
    )
        .into_response())
}

pub async fn delete_bucket(
    State(state): State<Arc<AdminState>>,
    Path(bucket): Path<String>,
) -> ApiResult<StatusCode> {
    state.store.delete_bucket(&bucket).await?;
    state.buckets.forget(&bucket)?;
    tracing::info!(bucket, "bucket deleted through the admin API");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct PublicBody {
    public: bool,
}

pub async fn set_public(
    State(state): State<Arc<AdminState>>,
    Path(bucket): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let b: PublicBody = parse(&body)?;
    state.store.head_bucket(&bucket).await?;
    state.buckets.set_public(&bucket, b.public)?;
    tracing::info!(bucket, public = b.public, "bucket public-read changed");
    Ok(Json(json!({
        "name": bucket,
        "public": state.buckets.is_public(&bucket),
        "policy": state.buckets.access(&bucket).policy.is_some(),
    })))
}

/// A bucket as the API shows it: its S3 public-read and unsigned-image settings included.
fn bucket_json(state: &AdminState, name: &str, created_ms: i64) -> Value {
    json!({
        "name": name,
        "created": rfc3339_ms(created_ms),
        "public": state.buckets.is_public(name),
        "policy": state.buckets.access(name).policy.is_some(),
        "unsigned_images": state.images.config.allow_unsafe
            || state.images.unsigned_buckets.contains(name),
    })
}

#[derive(Deserialize)]
struct UnsignedBody {
    unsigned_images: bool,
}

/// `PUT /api/buckets/{bucket}/unsigned-images`: whether unsigned image URLs may read the
/// bucket (processed variants only; its originals stay private to S3 and signed URLs).
pub async fn set_unsigned_images(
    State(state): State<Arc<AdminState>>,
    Path(bucket): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let b: UnsignedBody = parse(&body)?;
    state.store.head_bucket(&bucket).await?;
    state.catalog.set_unsigned(&bucket, b.unsigned_images)?;
    state
        .images
        .unsigned_buckets
        .set(&bucket, b.unsigned_images);
    tracing::info!(
        bucket,
        unsigned_images = b.unsigned_images,
        "bucket unsigned-image access changed"
    );
    Ok(Json(json!({
        "name": bucket,
        "unsigned_images": state.images.config.allow_unsafe || b.unsigned_images,
    })))
}

// ---------------------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------------------

const IMAGE_EXTENSIONS: [&str; 9] = [
    "jpg", "jpeg", "png", "webp", "avif", "gif", "bmp", "tif", "tiff",
];

fn is_image(info: &ObjectInfo) -> bool {
    if let Some(ct) = &info.attrs.content_type
        && ct.starts_with("image/")
    {
        return !ct.starts_with("image/svg") && !ct.starts_with("image/heic");
    }
    info.key
        .rsplit_once('.')
        .is_some_and(|(_, ext)| IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

/// The signed image path (`/{sig}/...`) for a builder request.
fn signed(state: &AdminState, part: &str) -> String {
    match &state.images.signer {
        Some(signer) => signer.signed_path(part),
        None => format!("/unsafe{part}"),
    }
}

fn object_json(state: &AdminState, bucket: &str, info: &ObjectInfo) -> Value {
    let image = is_image(info);
    let thumbnail = image.then(|| {
        let part = format!(
            "/rs:fit:160:160/q:70/plain/s3://{bucket}/{}@webp",
            super::builder::encode_key(&info.key)
        );
        format!("/img{}", signed(state, &part))
    });
    json!({
        "key": info.key,
        "size": info.size,
        "etag": format!("\"{}\"", info.etag),
        "last_modified": rfc3339_ms(info.last_modified_ms),
        "content_type": info.attrs.content_type,
        "image": image,
        "thumbnail": thumbnail,
        "s3_url": format!("s3://{bucket}/{}", info.key),
        "http_url": format!("{}/{bucket}/{}", state.s3_url, super::builder::encode_key(&info.key)),
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ListParams {
    prefix: String,
    after: Option<String>,
    limit: Option<usize>,
}

pub async fn list_objects(
    State(state): State<Arc<AdminState>>,
    Path(bucket): Path<String>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let limit = p.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(AdminError::BadRequest(format!(
            "limit must be 1-1000 (got {limit})"
        )));
    }
    let page = state
        .store
        .list_objects(
            &bucket,
            &ListQuery {
                prefix: p.prefix.clone(),
                delimiter: Some("/".into()),
                after: p.after.filter(|a| !a.is_empty()),
                max_keys: limit,
            },
        )
        .await?;
    let objects: Vec<Value> = page
        .objects
        .iter()
        .map(|o| object_json(&state, &bucket, o))
        .collect();
    Ok(Json(json!({
        "bucket": bucket,
        "prefix": p.prefix,
        "folders": page.common_prefixes,
        "objects": objects,
        "next": if page.is_truncated { page.last } else { None },
    })))
}

#[derive(Deserialize)]
pub struct KeyParam {
    #[serde(default)]
    key: String,
}

fn need_key(k: &KeyParam) -> ApiResult<&str> {
    if k.key.is_empty() {
        Err(AdminError::BadRequest(
            "the query parameter `key` is required".into(),
        ))
    } else if k.key.len() > 1024 {
        Err(AdminError::BadRequest("keys are at most 1024 bytes".into()))
    } else {
        Ok(&k.key)
    }
}

pub async fn get_object(
    State(state): State<Arc<AdminState>>,
    Path(bucket): Path<String>,
    Query(k): Query<KeyParam>,
) -> ApiResult<Json<Value>> {
    let key = need_key(&k)?;
    let info = state.store.head_object(&bucket, key).await?;
    let mut v = object_json(&state, &bucket, &info);
    if let Value::Object(m) = &mut v {
        m.insert("metadata".into(), json!(info.attrs.user_metadata));
        m.insert("cache_control".into(), json!(info.attrs.cache_control));
        m.insert("parts".into(), json!(info.parts));
    }
    Ok(Json(v))
}

/// An upload's attributes: its content type, and the bucket's default encryption (as an
/// S3 PUT without SSE headers gets it).
fn attrs_from(state: &AdminState, bucket: &str, headers: &HeaderMap) -> ObjectAttrs {
    ObjectAttrs {
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned),
        encryption: state
            .buckets
            .access(bucket)
            .encryption
            .map(|_| crate::store::sealing::Encryption::S3),
        ..ObjectAttrs::default()
    }
}

/// Spools an upload's body, sealed as it arrives when it is to be stored encrypted as
/// `encryption` (the bucket's default), so its plaintext never reaches the disk.
async fn spool_body(
    state: &AdminState,
    body: Body,
    encryption: Option<&crate::store::sealing::Encryption>,
) -> ApiResult<crate::store::Spooled> {
    let seal = state.store.data_key(encryption, None)?;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    Ok(state
        .spool
        .spool_sealed(
            Box::pin(stream),
            ChecksumSet::default(),
            state.max_object_size,
            seal,
        )
        .await?)
}

pub async fn put_object(
    State(state): State<Arc<AdminState>>,
    Path(bucket): Path<String>,
    Query(k): Query<KeyParam>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let key = need_key(&k)?.to_owned();
    state.store.head_bucket(&bucket).await?;
    let attrs = attrs_from(&state, &bucket, &headers);
    let spooled = spool_body(&state, body, attrs.encryption.as_ref()).await?;
    let info = state
        .store
        .put_object(&bucket, &key, spooled, attrs)
        .await?;
    state.notify(&bucket, &key);
    Ok(Json(object_json(&state, &bucket, &info)))
}

pub async fn delete_object(
    State(state): State<Arc<AdminState>>,
    Path(bucket): Path<String>,
    Query(k): Query<KeyParam>,
) -> ApiResult<StatusCode> {
    let key = need_key(&k)?;
    state.store.head_bucket(&bucket).await?;
    state.store.delete_object(&bucket, key).await?;
    state.notify(&bucket, key);
    Ok(StatusCode::NO_CONTENT)
}

pub async fn create_upload(
    State(state): State<Arc<AdminState>>,
    Path(bucket): Path<String>,
    Query(k): Query<KeyParam>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let key = need_key(&k)?;
    let id = state
        .store
        .create_upload(&bucket, key, attrs_from(&state, &bucket, &headers), None)
        .await?;
    Ok(Json(json!({ "upload_id": id })))
}

#[derive(Deserialize)]
pub struct PartParams {
    #[serde(default)]
    key: String,
    #[serde(default)]
    part: i32,
}

pub async fn upload_part(
    State(state): State<Arc<AdminState>>,
    Path((bucket, id)): Path<(String, String)>,
    Query(p): Query<PartParams>,
    body: Body,
) -> ApiResult<Json<Value>> {
    if p.key.is_empty() {
        return Err(AdminError::BadRequest(
            "the query parameter `key` is required".into(),
        ));
    }
    if !(1..=10000).contains(&p.part) {
        return Err(AdminError::BadRequest(format!(
            "part must be 1-10000 (got {})",
            p.part
        )));
    }
    let (upload, _) = state.store.list_parts(&bucket, &p.key, &id).await?;
    let spooled = spool_body(&state, body, upload.attrs.encryption.as_ref()).await?;
    let info = state
        .store
        .put_part(&bucket, &p.key, &id, p.part, spooled, None)
        .await?;
    Ok(Json(
        json!({ "part": info.part_number, "etag": info.etag, "size": info.size }),
    ))
}

#[derive(Deserialize)]
struct CompleteBody {
    parts: Vec<CompletePart>,
}

#[derive(Deserialize)]
struct CompletePart {
    part: i32,
    etag: String,
}

pub async fn complete_upload(
    State(state): State<Arc<AdminState>>,
    Path((bucket, id)): Path<(String, String)>,
    Query(k): Query<KeyParam>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let key = need_key(&k)?.to_owned();
    let b: CompleteBody = parse(&body)?;
    if b.parts.is_empty() {
        return Err(AdminError::BadRequest("parts must not be empty".into()));
    }
    let parts: Vec<CompletedPart> = b
        .parts
        .into_iter()
        .map(|p| CompletedPart {
            part_number: p.part,
            etag: p.etag.trim_matches('"').to_owned(),
        })
        .collect();
    let info = state
        .store
        .complete_upload(&bucket, &key, &id, &parts)
        .await?;
    state.notify(&bucket, &key);
    Ok(Json(object_json(&state, &bucket, &info)))
}

pub async fn abort_upload(
    State(state): State<Arc<AdminState>>,
    Path((bucket, id)): Path<(String, String)>,
    Query(k): Query<KeyParam>,
) -> ApiResult<StatusCode> {
    let key = need_key(&k)?;
    state.store.abort_upload(&bucket, key, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------
// Transform builder and images through the admin listener
// ---------------------------------------------------------------------------------------

fn html_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub async fn sign(State(state): State<Arc<AdminState>>, body: Bytes) -> ApiResult<Json<Value>> {
    let req: BuildRequest = parse(&body)?;
    let built = req
        .build()
        .map_err(|e| AdminError::BadRequest(e.to_string()))?;
    let path = signed(&state, &built.signed_part);
    let path_2x = signed(&state, &built.signed_part_2x);
    let url = format!("{}{path}", state.images_url);
    let url_2x = format!("{}{path_2x}", state.images_url);
    let width = if req.width > 0 {
        format!(" width=\"{}\"", req.width)
    } else {
        String::new()
    };
    let height = if req.height > 0 {
        format!(" height=\"{}\"", req.height)
    } else {
        String::new()
    };
    // The source's placeholder (`/info`), shown behind the image until it loads. A source
    // that cannot be described (not an image, too large) gets a snippet without one.
    let info_path = format!("/info{}", signed(&state, &built.info_part));
    let placeholder = placeholder(&state, &req).await;
    let style = placeholder
        .as_ref()
        .map(|(colour, data_url)| {
            let css = format!("background:{colour} url({data_url}) center/cover no-repeat");
            format!(" style=\"{}\"", html_attr(&css))
        })
        .unwrap_or_default();
    let img = format!(
        "<img src=\"{u}\" srcset=\"{u} 1x, {u2} 2x\"{width}{height}{style} alt=\"\">",
        u = html_attr(&url),
        u2 = html_attr(&url_2x),
    );
    Ok(Json(json!({
        "options": built.options,
        "signed": state.images.signer.is_some(),
        "path": path,
        "url": url,
        "preview": format!("/img{path}"),
        "srcset": { "1x": url, "2x": url_2x },
        "img": img,
        "info_url": format!("{}{info_path}", state.images_url),
        "placeholder": placeholder.map(|(colour, data_url)| json!({
            "dominant_color": colour,
            "data_url": data_url,
        })),
    })))
}

/// The dominant colour and placeholder data URL of the builder's source, from the image
/// endpoint's `/info` (cached like a variant); `None` when the source cannot be described.
async fn placeholder(state: &AdminState, req: &BuildRequest) -> Option<(String, String)> {
    let images = &state.images;
    // The decoded source, as the image endpoint reads it out of the URL (so both share the
    // cached answer).
    let source = format!("s3://{}/{}", req.bucket, req.key);
    let opts = crate::imaging::options::Options::default();
    let variant = images
        .variant(
            opts,
            &source,
            crate::imaging::negotiate::Accepted::default(),
        )
        .ok()?;
    let started = std::time::Instant::now();
    let (version, prefetched) = images.info_version(&variant, started).await.ok()?;
    let answer = images
        .info(&variant, &version, prefetched, started)
        .await
        .inspect_err(|e| tracing::debug!(error = %e, "builder: no placeholder"))
        .ok()?;
    let info: Value = serde_json::from_slice(&answer.body).ok()?;
    Some((
        info.get("dominant_color")?.as_str()?.to_owned(),
        info.get("placeholder")?.as_str()?.to_owned(),
    ))
}

/// `/img/<path>`: the image endpoint itself, for the UI's thumbnails and previews. The admin
/// credentials are not passed on; the image endpoint's own secret is added when one is set.
pub async fn image(State(state): State<Arc<AdminState>>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let rest = path_and_query
        .strip_prefix("/img")
        .unwrap_or(path_and_query);
    let Ok(uri) = rest.parse::<axum::http::Uri>() else {
        return AdminError::BadRequest("bad image path".into()).into_response();
    };
    parts.uri = uri;
    parts.headers.remove(header::AUTHORIZATION);
    parts.headers.remove(header::COOKIE);
    if !state.images.config.secret.is_empty()
        && let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", state.images.config.secret))
    {
        parts.headers.insert(header::AUTHORIZATION, v);
    }
    let mut resp = crate::http::images::handle(
        State(state.images.clone()),
        Request::from_parts(parts, body),
    )
    .await;
    // Thumbnails may be cached by the browser like any image answer.
    resp.headers_mut().remove(header::SET_COOKIE);
    resp
}

// ---------------------------------------------------------------------------------------
// Access keys
// ---------------------------------------------------------------------------------------

pub async fn list_keys(State(state): State<Arc<AdminState>>) -> ApiResult<Json<Value>> {
    let mut keys = vec![json!({
        "access_key": state.root_key(), "name": "root (configuration)",
        "created": null, "root": true, "policy": null,
    })];
    for k in state.catalog.keys()? {
        let policy = k
            .policy
            .as_deref()
            .and_then(|p| serde_json::from_str::<Value>(p).ok());
        keys.push(json!({
            "access_key": k.access_key, "name": k.name,
            "created": rfc3339_ms(k.created_ms), "root": false, "policy": policy,
        }));
    }
    Ok(Json(json!({ "keys": keys })))
}

#[derive(Deserialize)]
struct KeyBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    policy: Option<KeyPolicyBody>,
}

/// A key's policy as the admin API takes it: one of the common shapes, or a policy
/// document in the bucket policy language without principals.
#[derive(Deserialize)]
#[serde(untagged)]
enum KeyPolicyBody {
    Shape {
        shape: String,
        bucket: String,
        #[serde(default)]
        prefix: String,
    },
    Document(Value),
}

/// The policy text and its meaning for a request body's `policy` (`None`: full access).
fn key_policy(
    body: Option<KeyPolicyBody>,
) -> ApiResult<Option<(String, Arc<crate::s3::policy::Policy>)>> {
    use crate::s3::policy::{KeyShape, key_shape, parse_key_policy};
    let doc = match body {
        None | Some(KeyPolicyBody::Document(Value::Null)) => return Ok(None),
        Some(KeyPolicyBody::Shape {
            shape,
            bucket,
            prefix,
        }) => {
            let s = KeyShape::parse(&shape).ok_or_else(|| {
                AdminError::BadRequest(format!(
                    "unknown key shape `{shape}`: use read-only, write-only or full"
                ))
            })?;
            crate::s3::names::validate_bucket_name(&bucket)
                .map_err(|m| AdminError::BadRequest(format!("bucket `{bucket}`: {m}")))?;
            key_shape(s, &bucket, &prefix)
        }
        Some(KeyPolicyBody::Document(Value::String(text))) => {
            serde_json::from_str(&text).map_err(|e| {
                AdminError::BadRequest(format!("the key's policy is not valid JSON: {e}"))
            })?
        }
        Some(KeyPolicyBody::Document(v)) => v,
    };
    let text = doc.to_string();
    let parsed = parse_key_policy(&text)
        .map_err(|e| AdminError::BadRequest(format!("the key's policy: {e}")))?;
    Ok(Some((text, Arc::new(parsed))))
}

pub async fn create_key(State(state): State<Arc<AdminState>>, body: Bytes) -> ApiResult {
    let b: KeyBody = parse(&body)?;
    let name = b.name.trim().to_owned();
    if name.chars().count() > 64 {
        return Err(AdminError::BadRequest(
            "a key's name is at most 64 characters".into(),
        ));
    }
    let policy = key_policy(b.policy)?;
    let pair = crate::credentials::generate_pair();
    let stored = StoredKey {
        access_key: pair.access_key.clone(),
        secret_key: pair.secret_key.clone(),
        name: if name.is_empty() {
            "unnamed".into()
        } else {
            name
        },
        created_ms: now_ms(),
        policy: policy.as_ref().map(|(text, _)| text.clone()),
    };
    state.catalog.add_key(&stored)?;
    state.keys.insert_scoped(
        &stored.access_key,
        &stored.secret_key,
        policy.map(|(_, p)| p),
    );
    tracing::info!(
        access_key = stored.access_key,
        name = stored.name,
        scoped = stored.policy.is_some(),
        "access key created"
    );
    let shown: Value = stored
        .policy
        .as_deref()
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or(Value::Null);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "access_key": stored.access_key, "secret_key": stored.secret_key,
            "name": stored.name, "created": rfc3339_ms(stored.created_ms),
            "policy": shown,
        })),
    )
        .into_response())
}

/// Scopes a key (`{"policy": {...}}` or a shape) or gives it full access again
/// (`{"policy": null}`); the next request sees the change.
pub async fn set_key_policy(
    State(state): State<Arc<AdminState>>,
    Path(access_key): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    if access_key == state.root_key() {
        return Err(AdminError::BadRequest(
            "the root key always has full access; create a key to scope it".into(),
        ));
    }
    let b: KeyBody = parse(&body)?;
    let policy = key_policy(b.policy)?;
    let text = policy.as_ref().map(|(t, _)| t.clone());
    if !state.catalog.set_key_policy(&access_key, text.as_deref())? {
        return Err(AdminError::NotFound(format!(
            "no access key `{access_key}`"
        )));
    }
    let policy = policy.map(|(_, p)| p);
    if !state.keys.set_policy(&access_key, policy.clone()) {
        // A key disabled because its stored policy no longer parsed comes back scoped.
        if let Some(k) = state
            .catalog
            .keys()?
            .into_iter()
            .find(|k| k.access_key == access_key)
        {
            state
                .keys
                .insert_scoped(&k.access_key, &k.secret_key, policy);
        }
    }
    tracing::info!(
        access_key,
        scoped = text.is_some(),
        "access key policy changed"
    );
    let shown: Value = text
        .as_deref()
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or(Value::Null);
    Ok(Json(json!({ "access_key": access_key, "policy": shown })))
}

pub async fn delete_key(
    State(state): State<Arc<AdminState>>,
    Path(access_key): Path<String>,
) -> ApiResult<StatusCode> {
    if access_key == state.root_key() {
        return Err(AdminError::BadRequest(
            "the root key comes from the configuration ([s3] access_key or credentials.toml) and cannot be revoked here".into(),
        ));
    }
    if !state.catalog.remove_key(&access_key)? {
        return Err(AdminError::NotFound(format!(
            "no access key `{access_key}`"
        )));
    }
    state.keys.remove(&access_key);
    tracing::info!(access_key, "access key revoked");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    //! Fuzzing of the private request bodies and query parameters above (the public bodies,
    //! the transform builder's among them, are in tests/fuzz_targets.rs; docs/fuzzing.md):
    //! any bytes parse or are a 400 naming the JSON, and what parses passes through the
    //! handler's own checks without a panic.
    use std::hash::{BuildHasher, Hasher};

    use axum::http::Uri;
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    use super::*;
    use crate::admin::purge::Purge;

    /// `PROPTEST_CASES` or 256 cases; the seed printed for `PROPTEST_RNG_SEED` to replay;
    /// nothing written to the source tree.
    fn config() -> ProptestConfig {
        let seed = std::env::var("PROPTEST_RNG_SEED")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| {
                std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish()
            });
        println!("replay with PROPTEST_RNG_SEED={seed}");
        ProptestConfig {
            failure_persistence: None,
            rng_seed: RngSeed::Fixed(seed),
            ..ProptestConfig::default()
        }
    }

    const FIELDS: &[&str] = &[
        "user",
        "password",
        "all",
        "bucket",
        "prefix",
        "key",
        "name",
        "public",
        "unsigned_images",
        "parts",
        "part",
        "etag",
        "width",
        "format",
    ];

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-3i64..20_000).prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            any::<String>().prop_map(Value::String),
            "[a-z0-9.-]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 48, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            3 => prop::sample::select(FIELDS).prop_map(str::to_owned),
                            1 => any::<String>(),
                        ],
                        inner
                    ),
                    0..8
                )
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    /// A JSON value's text, that text cut short or with a byte changed, or any bytes.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => json_value().prop_map(|v| v.to_string().into_bytes()),
            2 => (json_value(), any::<prop::sample::Index>(), any::<u8>(), any::<bool>())
                .prop_map(|(v, at, byte, cut)| {
                    let mut b = v.to_string().into_bytes();
                    let i = at.index(b.len());
                    if cut {
                        b.truncate(i);
                    } else {
                        b[i] = byte;
                    }
                    b
                }),
            1 => prop::collection::vec(any::<u8>(), 0..64),
        ]
    }

    /// Parses `body` as a `T`: a body, or a 400 that says the JSON was invalid.
    fn parsed<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<Option<T>, TestCaseError> {
        match parse::<T>(body) {
            Ok(b) => Ok(Some(b)),
            Err(AdminError::BadRequest(m)) if m.starts_with("invalid JSON body") => Ok(None),
            Err(e) => Err(TestCaseError::fail(format!("not a 400: {e}"))),
        }
    }

    proptest! {
        #![proptest_config(config())]

        /// Every JSON body the admin API reads, through `parse` and the checks its handler
        /// makes next.
        #[test]
        fn admin_bodies_parse_or_are_refused(body in body()) {
            let body = Bytes::from(body);
            parsed::<LoginBody>(&body)?;
            if let Some(b) = parsed::<PurgeBody>(&body)? {
                let purge = Purge::from_parts(
                    b.all,
                    b.bucket.as_deref(),
                    b.prefix.as_deref(),
                    b.key.as_deref(),
                );
                if let Ok(Purge::All) = purge {
                    prop_assert!(b.all);
                }
            }
            if let Some(b) = parsed::<NameBody>(&body)? {
                let _ = crate::s3::names::validate_bucket_name(&b.name);
                let _ = b.name.trim().chars().count();
            }
            parsed::<PublicBody>(&body)?;
            parsed::<UnsignedBody>(&body)?;
            if let Some(b) = parsed::<CompleteBody>(&body)? {
                for p in &b.parts {
                    let _ = (p.part, p.etag.trim_matches('"'));
                }
            }
            if let Some(b) = parsed::<BuildRequest>(&body)?
                && let Err(e) = b.build()
            {
                prop_assert!(!e.to_string().is_empty());
            }
        }

        /// The query parameters of the object routes: parsed or refused by axum (a 400),
        /// then checked as their handlers do.
        #[test]
        fn admin_query_parameters_parse_or_are_refused(
            query in prop_oneof![
                "[a-z=&%0-9A-F+-]{0,40}",
                "((prefix|after|limit|key|part)=[^#&]{0,20}&?){1,4}",
            ],
        ) {
            let Ok(uri) = format!("/x?{query}").parse::<Uri>() else {
                return Ok(());
            };
            if let Ok(Query(p)) = Query::<ListParams>::try_from_uri(&uri) {
                let limit = p.limit.unwrap_or(200);
                let _ = ((1..=1000).contains(&limit), p.prefix, p.after);
            }
            if let Ok(Query(k)) = Query::<KeyParam>::try_from_uri(&uri) {
                match need_key(&k) {
                    Ok(key) => prop_assert!(!key.is_empty() && key.len() <= 1024),
                    Err(e) => prop_assert!(matches!(e, AdminError::BadRequest(_))),
                }
            }
            if let Ok(Query(p)) = Query::<PartParams>::try_from_uri(&uri) {
                let _ = (p.key.is_empty(), (1..=10000).contains(&p.part));
            }
        }
    }
}
