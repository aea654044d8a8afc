//! The HTTP side that is not S3: the image listener (`images`: imgproxy-style URLs, plus
//! `/health`). The admin listener (`crate::admin`, with its ops handlers in `admin::ops`)
//! calls into this module; nothing here reaches back into `admin`.

pub mod images;

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

pub(crate) async fn health() -> impl IntoResponse {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({ "status": "ok" })),
    )
}

/// The image listener's service: `GET`/`HEAD /health`, else the image handler. Plain hyper
/// rather than a router: a cache hit costs a few microseconds, and routing and boxing were a
/// measurable part of them (docs/cache.md, Benchmark).
#[derive(Clone)]
pub struct ImagesService(pub Arc<crate::image_service::ImagesState>);

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
            let Some(allow_origin) = state.allow_origin.clone() else {
                return Ok(route(state, req).await);
            };
            // `[images] allow_origin`, as imgproxy's IMGPROXY_ALLOW_ORIGIN: on every
            // response, and preflights answered here.
            let mut resp = if req.method() == axum::http::Method::OPTIONS {
                StatusCode::NO_CONTENT.into_response()
            } else {
                route(state, req).await
            };
            let h = resp.headers_mut();
            h.insert(
                axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
                allow_origin,
            );
            h.insert(
                axum::http::header::ACCESS_CONTROL_ALLOW_METHODS,
                axum::http::HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            Ok(resp)
        })
    }
}

/// `/health`, or the image handler.
async fn route<B: Send + 'static>(
    state: Arc<crate::image_service::ImagesState>,
    req: axum::http::Request<B>,
) -> axum::response::Response {
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
        return resp;
    }
    images::handle(State(state), req).await
}
