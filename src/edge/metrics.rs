//! The edge admin door: `/metrics` (requests, latency and errors by hostname; connections
//! per appliance), `/health` (the process answers) and `/ready` (every granted hostname has
//! at least one appliance connected).
//!
//! What must stay true: the `host` label only takes granted hostnames (or `other`, decided
//! once per request in `proxy::handle`), so a client cannot grow the number of series by
//! sending made-up `Host` headers.

use std::time::Duration;

use http::{Response, StatusCode};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use super::EdgeState;
use super::proxy::{EdgeBody, full};

pub struct EdgeMetrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    connections: IntGaugeVec,
    in_flight: IntGaugeVec,
    bytes: IntCounterVec,
    refused: IntCounterVec,
    client_keys: prometheus::IntGauge,
}

impl EdgeMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "pixelport_edge_requests_total",
                "Public requests by granted hostname and status.",
            ),
            &["host", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "pixelport_edge_request_duration_seconds",
                "Time to the response headers, by hostname.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["host"],
        )?;
        let connections = IntGaugeVec::new(
            Opts::new(
                "pixelport_edge_tunnel_connections",
                "Open tunnel connections per appliance node.",
            ),
            &["node"],
        )?;
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "pixelport_edge_upstream_in_flight",
                "Requests sent to each appliance node and not yet finished (their response \
                 body still streaming); back to 0 once clients finish or hang up.",
            ),
            &["node"],
        )?;
        let bytes = IntCounterVec::new(
            Opts::new(
                "pixelport_edge_response_bytes_total",
                "Response body bytes sent from appliances to clients, by hostname.",
            ),
            &["host"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "pixelport_edge_refused_total",
                "Requests refused by [edge.protection], by rule (cidr, url_length, method, \
                 path, unsigned, global_rate, client_rate, host_concurrency).",
            ),
            &["rule"],
        )?;
        let client_keys = prometheus::IntGauge::new(
            "pixelport_edge_rate_limit_clients",
            "Per-client rate-limit buckets held (at most [edge.protection] max_clients).",
        )?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(client_keys.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(Self {
            registry,
            requests,
            duration,
            connections,
            in_flight,
            bytes,
            refused,
            client_keys,
        })
    }

    /// Counts a refusal by its rule.
    pub fn refused(&self, rule: &str) {
        self.refused.with_label_values(&[rule]).inc();
    }

    /// The byte counter a response body adds to; `label` is a granted hostname or `other`.
    pub fn response_bytes(&self, label: &str) -> prometheus::IntCounter {
        self.bytes.with_label_values(&[label])
    }

    /// Counts a request; `label` is a granted hostname or `other`.
    pub fn observe(&self, label: &str, status: StatusCode, took: Duration) {
        self.requests
            .with_label_values(&[label, status.as_str()])
            .inc();
        self.duration
            .with_label_values(&[label])
            .observe(took.as_secs_f64());
    }

    fn render(&self, state: &EdgeState) -> String {
        self.client_keys
            .set(i64::try_from(state.shield.client_keys()).unwrap_or(i64::MAX));
        self.connections.reset();
        self.in_flight.reset();
        for link in state.router.links() {
            self.connections.with_label_values(&[&link.node]).inc();
            self.in_flight
                .with_label_values(&[&link.node])
                .add(i64::try_from(link.inflight()).unwrap_or(i64::MAX));
        }
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        let mut text = String::from_utf8(out).unwrap_or_default();
        if let Some(cache) = &state.cache {
            cache_metrics(cache, &mut text);
        }
        text
    }
}

/// The cache's counters and sizes, read from the cache itself at each scrape.
fn cache_metrics(cache: &super::cache::layer::EdgeCache, out: &mut String) {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let c = &cache.counters;
    let s = cache.stats();
    let _ = writeln!(
        out,
        "# HELP pixelport_edge_cache_requests_total Requests by what the cache did: hit \
         (served from the cache, stale ones included), miss, stale (revalidated with the \
         appliance), bypass (not cacheable: method, Authorization, admin door), collapsed \
         (shared another request's answer).\n\
         # TYPE pixelport_edge_cache_requests_total counter"
    );
    for (result, n) in [
        ("hit", &c.hits),
        ("miss", &c.misses),
        ("stale", &c.stale),
        ("bypass", &c.bypass),
        ("collapsed", &c.collapsed),
    ] {
        let _ = writeln!(
            out,
            "pixelport_edge_cache_requests_total{{result=\"{result}\"}} {}",
            n.load(Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP pixelport_edge_cache_stored_total Responses stored.\n\
         # TYPE pixelport_edge_cache_stored_total counter\n\
         pixelport_edge_cache_stored_total {}\n\
         # HELP pixelport_edge_cache_disk_skipped_total Entries kept in memory only \
         because the disk writer was behind a burst of misses.\n\
         # TYPE pixelport_edge_cache_disk_skipped_total counter\n\
         pixelport_edge_cache_disk_skipped_total {}\n\
         # HELP pixelport_edge_cache_purged_total Entries removed by purges.\n\
         # TYPE pixelport_edge_cache_purged_total counter\n\
         pixelport_edge_cache_purged_total {}\n\
         # HELP pixelport_edge_cache_entries Entries stored.\n\
         # TYPE pixelport_edge_cache_entries gauge\n\
         pixelport_edge_cache_entries {}\n\
         # HELP pixelport_edge_cache_bytes Bytes held, by tier.\n\
         # TYPE pixelport_edge_cache_bytes gauge\n\
         pixelport_edge_cache_bytes{{tier=\"memory\"}} {}\n\
         pixelport_edge_cache_bytes{{tier=\"disk\"}} {}",
        c.stored.load(Relaxed),
        c.disk_skipped.load(Relaxed),
        c.purged.load(Relaxed),
        s.entries,
        s.memory_bytes,
        s.disk_bytes
    );
}

pub fn admin(state: &EdgeState, path: &str) -> Response<EdgeBody> {
    match path {
        "/health" => full(StatusCode::OK, "ok\n", "text/plain"),
        "/ready" => {
            let links = state.router.links();
            let missing: Vec<String> = state
                .granted_hosts()
                .into_iter()
                .filter(|h| {
                    !links
                        .iter()
                        .any(|l| !l.is_draining() && l.door_for(h).is_some())
                })
                .collect();
            let body = serde_json::json!({
                "ready": missing.is_empty(),
                "appliance_connections": links.len(),
                "hostnames_without_appliance": missing,
            })
            .to_string();
            let status = if missing.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            full(status, body, "application/json")
        }
        "/metrics" => full(
            StatusCode::OK,
            state.metrics.render(state),
            "text/plain; version=0.0.4",
        ),
        _ => super::proxy::plain(StatusCode::NOT_FOUND, "no such edge admin path"),
    }
}
