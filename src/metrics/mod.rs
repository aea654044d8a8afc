//! Prometheus metrics: one registry for the process, rendered as text on the admin
//! listener's `GET /metrics`. The image endpoint's metrics keep imgproxy's names
//! (`imgproxy_requests_total`, `imgproxy_request_duration_seconds`, ...) so dashboards built
//! for imgproxy keep working; Pixelport's own start with `pixelport_`.
//!
//! What must stay true: label values come from small closed sets (status codes, error kinds,
//! S3 operation names), never from request paths or keys, so the number of series is bounded.

pub mod traffic;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics registry: {0}")]
    Registry(#[from] prometheus::Error),
}

/// Latency buckets in seconds, from a cache hit (sub-millisecond) to a slow large image.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    // The image endpoint, under imgproxy's names.
    pub requests_total: IntCounter,
    pub request_duration: Histogram,
    pub errors_total: IntCounterVec,
    pub status_codes_total: IntCounterVec,
    pub requests_in_progress: IntGauge,
    pub images_in_progress: IntGauge,
    pub workers: IntGauge,
    // The S3 API and the store.
    pub s3_requests_total: IntCounterVec,
    pub s3_request_duration: HistogramVec,
    pub store_bytes: IntGauge,
    pub store_objects: IntGauge,
    // The derivative cache and the pipeline.
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub cache_evictions: IntCounter,
    pub cache_bytes: IntGauge,
    pub cache_entries: IntGauge,
    pub images_processed: IntCounter,
    /// The dashboard's last hour and recent errors (not exported to Prometheus).
    pub traffic: crate::metrics::traffic::Traffic,
    pub cache_write_failures: IntCounter,
    /// Eager preset renders by result: `ok`, `skipped`, `dropped`, `error`.
    pub eager_renders: IntCounterVec,
    /// Open connections per listener (`s3`, `images`, `admin`).
    pub connections: prometheus::IntGaugeVec,
    /// Connections turned away at a listener's cap, per listener.
    pub connections_refused: IntCounterVec,
    /// Open tunnel connections to edges (`pixelport_tunnel_connections`).
    pub tunnel_connections: IntGauge,
    /// Requests that arrived through the tunnel, per door.
    pub tunnel_requests: IntCounterVec,
    /// Tunnel connections lost or refused and dialled again.
    pub tunnel_reconnects: IntCounter,
    /// Tunnel requests being served (`pixelport_tunnel_requests_in_flight`): a stream the
    /// edge reset (its client hung up) leaves it at once.
    pub tunnel_in_flight: IntGauge,
    /// `imgproxy_status_codes_total{status="200"}`, made on first use.
    status_ok: std::sync::OnceLock<IntCounter>,
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let requests_total = IntCounter::new(
            "imgproxy_requests_total",
            "Image requests received (imgproxy's name).",
        )?;
        let request_duration = Histogram::with_opts(
            HistogramOpts::new(
                "imgproxy_request_duration_seconds",
                "Image request duration in seconds (imgproxy's name).",
            )
            .buckets(BUCKETS.to_vec()),
        )?;
        let errors_total = IntCounterVec::new(
            Opts::new(
                "imgproxy_errors_total",
                "Image request errors by kind (imgproxy's name).",
            ),
            &["type"],
        )?;
        let status_codes_total = IntCounterVec::new(
            Opts::new(
                "imgproxy_status_codes_total",
                "Image responses by HTTP status (imgproxy's name).",
            ),
            &["status"],
        )?;
        let requests_in_progress = IntGauge::new(
            "imgproxy_requests_in_progress",
            "Image requests being served now (imgproxy's name).",
        )?;
        let images_in_progress = IntGauge::new(
            "imgproxy_images_in_progress",
            "Images being processed by a worker now (imgproxy's name).",
        )?;
        let workers = IntGauge::new(
            "imgproxy_workers",
            "Image processing workers (imgproxy's name).",
        )?;
        let s3_requests_total = IntCounterVec::new(
            Opts::new(
                "pixelport_s3_requests_total",
                "S3 API requests by operation and HTTP status.",
            ),
            &["op", "status"],
        )?;
        let s3_request_duration = HistogramVec::new(
            HistogramOpts::new(
                "pixelport_s3_request_duration_seconds",
                "S3 API request duration in seconds, by operation.",
            )
            .buckets(BUCKETS.to_vec()),
            &["op"],
        )?;
        let store_bytes = IntGauge::new(
            "pixelport_store_bytes",
            "Bytes of object data in the store (embedded store only).",
        )?;
        let store_objects = IntGauge::new(
            "pixelport_store_objects",
            "Objects in the store (embedded store only).",
        )?;
        let cache_hits = IntCounter::new(
            "pixelport_cache_hits_total",
            "Image requests answered from the derivative cache.",
        )?;
        let cache_misses = IntCounter::new(
            "pixelport_cache_misses_total",
            "Image requests the derivative cache could not answer.",
        )?;
        let cache_evictions = IntCounter::new(
            "pixelport_cache_evictions_total",
            "Variants evicted from the derivative cache to stay under max_size.",
        )?;
        let cache_bytes = IntGauge::new(
            "pixelport_cache_bytes",
            "Bytes charged to the derivative cache (bodies plus per-entry overhead).",
        )?;
        let cache_entries = IntGauge::new(
            "pixelport_cache_entries",
            "Variants in the derivative cache.",
        )?;
        let images_processed = IntCounter::new(
            "pixelport_images_processed_total",
            "Pipeline runs (decode, transform, encode) completed.",
        )?;
        let cache_write_failures = IntCounter::new(
            "pixelport_cache_write_failures_total",
            "Variants served uncached because the cache write failed (disk full, I/O error).",
        )?;
        let eager_renders = IntCounterVec::new(
            Opts::new(
                "pixelport_eager_renders_total",
                "Eager preset renders after uploads, per object and preset, by result \
                 (ok, skipped, dropped, error).",
            ),
            &["result"],
        )?;
        for result in ["ok", "skipped", "dropped", "error"] {
            eager_renders.with_label_values(&[result]);
        }
        registry.register(Box::new(eager_renders.clone()))?;
        for c in [
            &cache_hits,
            &cache_misses,
            &cache_evictions,
            &images_processed,
            &cache_write_failures,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(cache_bytes.clone()))?;
        registry.register(Box::new(cache_entries.clone()))?;
        registry.register(Box::new(requests_total.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(errors_total.clone()))?;
        registry.register(Box::new(status_codes_total.clone()))?;
        registry.register(Box::new(requests_in_progress.clone()))?;
        registry.register(Box::new(images_in_progress.clone()))?;
        registry.register(Box::new(workers.clone()))?;
        registry.register(Box::new(s3_requests_total.clone()))?;
        registry.register(Box::new(s3_request_duration.clone()))?;
        registry.register(Box::new(store_bytes.clone()))?;
        registry.register(Box::new(store_objects.clone()))?;
        let connections = prometheus::IntGaugeVec::new(
            Opts::new(
                "pixelport_connections",
                "Open client connections per listener.",
            ),
            &["listener"],
        )?;
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "pixelport_connections_refused_total",
                "Connections answered 503 and closed because the listener was at its \
                 connection cap ([limits] *_max_connections).",
            ),
            &["listener"],
        )?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(connections_refused.clone()))?;
        let tunnel_connections = IntGauge::new(
            "pixelport_tunnel_connections",
            "Open tunnel connections from this appliance to its edges.",
        )?;
        let tunnel_requests = IntCounterVec::new(
            Opts::new(
                "pixelport_tunnel_requests_total",
                "Requests that arrived through the tunnel, per door.",
            ),
            &["door"],
        )?;
        let tunnel_reconnects = IntCounter::new(
            "pixelport_tunnel_reconnects_total",
            "Tunnel connections lost (or refused) and dialled again.",
        )?;
        let tunnel_in_flight = IntGauge::new(
            "pixelport_tunnel_requests_in_flight",
            "Requests through the tunnel being served now.",
        )?;
        registry.register(Box::new(tunnel_in_flight.clone()))?;
        registry.register(Box::new(tunnel_connections.clone()))?;
        registry.register(Box::new(tunnel_requests.clone()))?;
        registry.register(Box::new(tunnel_reconnects.clone()))?;
        Ok(Self {
            tunnel_connections,
            tunnel_requests,
            tunnel_reconnects,
            tunnel_in_flight,
            connections,
            connections_refused,
            registry,
            requests_total,
            request_duration,
            errors_total,
            status_codes_total,
            requests_in_progress,
            images_in_progress,
            workers,
            s3_requests_total,
            s3_request_duration,
            store_bytes,
            store_objects,
            cache_hits,
            cache_misses,
            cache_evictions,
            cache_bytes,
            cache_entries,
            images_processed,
            traffic: crate::metrics::traffic::Traffic::new(),
            cache_write_failures,
            eager_renders,
            status_ok: std::sync::OnceLock::new(),
        })
    }

    /// Counts an image response in `imgproxy_status_codes_total{status}`. The `200` series,
    /// nearly every response's, is looked up once (a labelled lookup hashes and locks).
    pub fn count_status(&self, status: axum::http::StatusCode) {
        if status == axum::http::StatusCode::OK {
            self.status_ok
                .get_or_init(|| self.status_codes_total.with_label_values(&["200"]))
                .inc();
        } else {
            self.status_codes_total
                .with_label_values(&[status.as_str()])
                .inc();
        }
    }

    /// Registers another collector (the cache's, for instance) in the same registry.
    pub fn register(&self, c: Box<dyn prometheus::core::Collector>) -> Result<(), MetricsError> {
        Ok(self.registry.register(c)?)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The S3 operation a request names, from its method, path, query and headers, as a fixed
/// string (the `op` label). Path-style addressing: `/`, `/bucket`, `/bucket/key...`.
pub fn s3_operation(method: &str, path: &str, query: &str, copy_source: bool) -> &'static str {
    let has = |name: &str| {
        query
            .split('&')
            .any(|p| p == name || p.starts_with(&format!("{name}=")))
    };
    let rest = path.trim_start_matches('/');
    let (bucket, key) = match rest.split_once('/') {
        Some((b, k)) => (b, k),
        None => (rest, ""),
    };
    if bucket.is_empty() {
        return if method == "GET" {
            "ListBuckets"
        } else {
            "Unknown"
        };
    }
    if key.is_empty() {
        return match method {
            "GET" if has("location") => "GetBucketLocation",
            "GET" if has("uploads") => "ListMultipartUploads",
            "GET" if has("versions") => "ListObjectVersions",
            "GET" if query.contains("list-type=2") => "ListObjectsV2",
            "GET" => "ListObjects",
            "HEAD" => "HeadBucket",
            "PUT" => "CreateBucket",
            "DELETE" => "DeleteBucket",
            "POST" if has("delete") => "DeleteObjects",
            _ => "Unknown",
        };
    }
    match method {
        "GET" if has("uploadId") => "ListParts",
        "GET" => "GetObject",
        "HEAD" => "HeadObject",
        "PUT" if has("partNumber") && copy_source => "UploadPartCopy",
        "PUT" if has("partNumber") => "UploadPart",
        "PUT" if copy_source => "CopyObject",
        "PUT" => "PutObject",
        "POST" if has("uploads") => "CreateMultipartUpload",
        "POST" if has("uploadId") => "CompleteMultipartUpload",
        "DELETE" if has("uploadId") => "AbortMultipartUpload",
        "DELETE" => "DeleteObject",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_named() {
        let rows = [
            ("GET", "/", "", false, "ListBuckets"),
            ("PUT", "/b", "", false, "CreateBucket"),
            ("GET", "/b", "list-type=2&prefix=a", false, "ListObjectsV2"),
            ("GET", "/b", "prefix=a", false, "ListObjects"),
            ("GET", "/b", "location", false, "GetBucketLocation"),
            ("GET", "/b", "versions", false, "ListObjectVersions"),
            ("POST", "/b", "delete", false, "DeleteObjects"),
            ("PUT", "/b/k/x", "", false, "PutObject"),
            ("PUT", "/b/k", "", true, "CopyObject"),
            (
                "PUT",
                "/b/k",
                "partNumber=1&uploadId=u",
                false,
                "UploadPart",
            ),
            (
                "PUT",
                "/b/k",
                "partNumber=1&uploadId=u",
                true,
                "UploadPartCopy",
            ),
            ("POST", "/b/k", "uploads", false, "CreateMultipartUpload"),
            (
                "POST",
                "/b/k",
                "uploadId=u",
                false,
                "CompleteMultipartUpload",
            ),
            (
                "DELETE",
                "/b/k",
                "uploadId=u",
                false,
                "AbortMultipartUpload",
            ),
            ("GET", "/b/k", "uploadId=u", false, "ListParts"),
            ("GET", "/b/k", "", false, "GetObject"),
            ("HEAD", "/b/k", "", false, "HeadObject"),
            ("DELETE", "/b/k", "", false, "DeleteObject"),
        ];
        for (m, p, q, c, want) in rows {
            assert_eq!(s3_operation(m, p, q, c), want, "{m} {p}?{q}");
        }
    }

    #[test]
    fn renders_text_format() {
        let m = Metrics::new().unwrap();
        m.requests_total.inc();
        m.status_codes_total.with_label_values(&["200"]).inc();
        m.s3_requests_total
            .with_label_values(&["GetObject", "200"])
            .inc_by(3);
        let text = m.render();
        assert!(text.contains("imgproxy_requests_total 1"), "{text}");
        assert!(
            text.contains("imgproxy_status_codes_total{status=\"200\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pixelport_s3_requests_total{op=\"GetObject\",status=\"200\"} 3"),
            "{text}"
        );
    }
}
