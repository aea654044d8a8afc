//! The S3 door's request layer, in front of s3s: the request id the server admitted the
//! request with, answered as `x-amz-request-id`, the SigV2 check, per-operation metrics, the traffic
//! record and one log line per request; and the `Expect: 100-continue` rule. CORS is
//! answered here too, since s3s does not route OPTIONS: preflights from the bucket's rules,
//! and `Access-Control-*` headers on real responses whose origin and method a rule allows.
//!
//! What must stay true: every response carries the request id its log line names, and a
//! refused `100-continue` request closes its connection.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use s3s::service::S3Service;

use super::errors::RequestId;
use crate::metrics::Metrics;
use crate::s3::access::KeyRing;
use crate::s3::bucket_settings::BucketSettings;
use crate::s3::cors;
use crate::server::RequestBody;

/// The S3 listener's service (also the tunnel's S3 door).
pub fn service(
    s3: S3Service,
    keys: Arc<KeyRing>,
    metrics: Arc<Metrics>,
    buckets: Arc<BucketSettings>,
) -> impl crate::server::DoorService<s3s::Body> + Sync {
    hyper::service::service_fn(move |mut req: hyper::Request<RequestBody>| {
        let svc = s3.clone();
        let v2_keys = keys.clone();
        let metrics = metrics.clone();
        let buckets = buckets.clone();
        async move {
            let id = RequestId::of(&req);
            let rid = id.0.clone();
            req.extensions_mut().insert(id);
            let (method, path) = (req.method().clone(), req.uri().path().to_owned());
            let op = crate::metrics::s3_operation(
                method.as_str(),
                &path,
                req.uri().query().unwrap_or_default(),
                req.headers().contains_key("x-amz-copy-source"),
            );
            let expects_continue = req
                .headers()
                .get(hyper::header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            let t0 = Instant::now();
            let origin = header(&req, hyper::header::ORIGIN);
            let rules = bucket_of(&path).and_then(|b| buckets.cors(b));
            // SigV2 (header and presigned) is checked here first: its date window and a
            // constant-time signature compare, which s3s 0.14 does not give V2.
            let mut resp = if method == hyper::Method::OPTIONS {
                preflight(&req, origin.as_deref(), rules.as_deref())
            } else {
                match crate::s3::sigv2::refusal(&req, &v2_keys) {
                    Some(refused) => refused,
                    None => match svc.call(req.map(s3s::Body::http_body)).await {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!(request_id = %rid, error = ?e, "S3 request failed");
                            let mut r =
                                hyper::Response::new(s3s::Body::from("internal error".to_owned()));
                            *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                            r
                        }
                    },
                }
            };
            if method != hyper::Method::OPTIONS
                && let (Some(origin), Some(rules)) = (origin.as_deref(), rules.as_deref())
            {
                let added = cors::actual(rules, origin, method.as_str());
                add_cors(resp.headers_mut(), added.unwrap_or_default());
            }
            if let Ok(v) = hyper::header::HeaderValue::from_str(&rid) {
                resp.headers_mut().insert("x-amz-request-id", v);
            }
            // A client that asked `Expect: 100-continue` and gets a final error answer
            // instead does not send its body (botocore then reuses the connection), while
            // hyper would read the next request's first bytes as that body. Closing the
            // connection keeps the two in step, as nginx does.
            if expects_continue && resp.status().as_u16() >= 400 {
                resp.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
            let status = resp.status().as_u16();
            let elapsed = t0.elapsed().as_secs_f64();
            metrics.traffic.record(&crate::metrics::traffic::Sample {
                listener: "s3",
                status,
                method: method.as_str(),
                path: &path,
                elapsed_ms: elapsed * 1000.0,
                message: op,
            });
            metrics
                .s3_requests_total
                .with_label_values(&[op, resp.status().as_str()])
                .inc();
            metrics
                .s3_request_duration
                .with_label_values(&[op])
                .observe(elapsed);
            let ms = elapsed * 1000.0;
            if status >= 500 {
                tracing::error!(request_id = %rid, %method, path, status, ms, "s3");
            } else if status >= 400 {
                tracing::info!(request_id = %rid, %method, path, status, ms, "s3");
            } else {
                tracing::debug!(request_id = %rid, %method, path, status, ms, "s3");
            }
            Ok::<_, Infallible>(resp)
        }
    })
}

fn header<B>(req: &hyper::Request<B>, name: hyper::header::HeaderName) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The bucket a path-style request names (`/bucket/key...`), if any.
fn bucket_of(path: &str) -> Option<&str> {
    let b = path.trim_start_matches('/').split('/').next()?;
    (!b.is_empty()).then_some(b)
}

/// Adds the CORS headers a rule gave, and `Vary` whenever the bucket has rules (the answer
/// depends on the request's origin even when none matched, so a cache must not share it).
fn add_cors(headers: &mut hyper::HeaderMap, added: Vec<(&'static str, String)>) {
    for (name, value) in added {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    headers.append(
        hyper::header::VARY,
        hyper::header::HeaderValue::from_static(cors::VARY),
    );
}

/// An `OPTIONS` request: the preflight answer from the bucket's rules, or S3's refusal.
fn preflight<B>(
    req: &hyper::Request<B>,
    origin: Option<&str>,
    rules: Option<&[cors::Rule]>,
) -> hyper::Response<s3s::Body> {
    let refuse = |status: hyper::StatusCode, code: &str, message: &str| {
        let mut e = s3s::S3Error::with_message(
            s3s::S3ErrorCode::Custom(code.to_owned().into()),
            message.to_owned(),
        );
        e.set_status_code(status);
        e.to_http_response().unwrap_or_else(|_| {
            let mut r = hyper::Response::new(s3s::Body::empty());
            *r.status_mut() = status;
            r
        })
    };
    let Some(origin) = origin else {
        return refuse(
            hyper::StatusCode::BAD_REQUEST,
            "BadRequest",
            "Insufficient information. Origin request header needed.",
        );
    };
    let Some(method) = header(req, hyper::header::ACCESS_CONTROL_REQUEST_METHOD) else {
        return refuse(
            hyper::StatusCode::BAD_REQUEST,
            "BadRequest",
            "Invalid Access-Control-Request-Method: none given.",
        );
    };
    let asked = header(req, hyper::header::ACCESS_CONTROL_REQUEST_HEADERS).unwrap_or_default();
    match rules.and_then(|r| cors::preflight(r, origin, &method, &asked)) {
        Some(added) => {
            let mut resp = hyper::Response::new(s3s::Body::empty());
            add_cors(resp.headers_mut(), added);
            resp
        }
        None => {
            let mut resp = refuse(
                hyper::StatusCode::FORBIDDEN,
                "AccessForbidden",
                "CORSResponse: This CORS request is not allowed. The bucket has no CORS rule \
                 that allows this origin, method (Access-Control-Request-Method) and these \
                 headers (Access-Control-Request-Headers).",
            );
            add_cors(resp.headers_mut(), Vec::new());
            resp
        }
    }
}
