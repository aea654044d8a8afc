//! The image service: what a request for a variant becomes once its URL is read, apart from
//! HTTP. It holds the state built from `[images]` ([`ImagesState`]), turns options and a
//! source into a [`Variant`], serves it from the derivative cache or renders it on the pool
//! ([`Render`]), drops variants when their source changes ([`Invalidator`]), and renders
//! ahead of requests ([`eager`]). The image listener's handler (`crate::http::images`) is a
//! thin mapping from HTTP to this module and back; the admin preview and the tunnel reach
//! it through that handler, the eager renderer directly. Imports nothing from `http`.

pub mod conditional;
pub mod eager;
mod error;
pub mod info;
pub mod invalidate;
pub(crate) mod render;
pub mod resolved;
mod variant;
pub mod watermark_slot;

use std::sync::Arc;
use std::time::Duration;

use crate::cache::CacheKey;
use crate::cache::DerivativeCache;
use crate::cache::flight::SingleFlight;
use crate::imaging::config::ImagesConfig;
use crate::imaging::http_source::HttpSource;
use crate::imaging::negotiate::Negotiation;
use crate::imaging::options::{ImageFormat, ParseContext};
use crate::imaging::pipeline;
use crate::imaging::pool::Pool;
use crate::imaging::signature::Signer;
use crate::imaging::source::SourceVersions;
use crate::metrics::Metrics;
use crate::s3::access::BucketSet;
use crate::store::DynStore;
use crate::throttle::Throttle;

pub use error::ImageError;
pub use invalidate::{EdgeInvalidator, Invalidator};
use render::Outcome;
pub use render::{Caller, Render, Rendered};
use resolved::ResolvedUrls;
pub use variant::Variant;

/// Everything the handler needs, built once from the configuration.
pub struct ImagesState {
    pub config: ImagesConfig,
    pub signer: Option<Signer>,
    pub parse_ctx: ParseContext,
    pub store: DynStore,
    pub pool: Pool,
    pub defaults: pipeline::Defaults,
    /// A digest of `defaults`, part of every cache key: a variant rendered under another
    /// default quality, metadata or colour-profile setting is a different variant, so a
    /// changed `[images]` default never serves what the old one rendered.
    pub defaults_tag: String,
    pub negotiation: Negotiation,
    /// `[images] allow_origin` as a header value, parsed once (`None`: no CORS headers).
    pub allow_origin: Option<axum::http::HeaderValue>,
    pub skip_processing: Vec<ImageFormat>,
    pub http: HttpSource,
    pub metrics: Arc<Metrics>,
    /// The derivative cache (`None` when `[cache] enabled = false`).
    pub cache: Option<DerivativeCache>,
    pub versions: Arc<SourceVersions>,
    /// The buckets unsigned URLs may read (`[images] unsigned_buckets`, overlaid by the
    /// admin catalog's choices); shared with the admin API, which changes it.
    pub unsigned_buckets: Arc<BucketSet>,
    /// `[images] max_source_memory` in KiB permits: fetched source bytes held at once.
    pub(crate) source_budget: Arc<tokio::sync::Semaphore>,
    /// `[images] max_pixel_memory` in KiB permits: decoding memory held at once.
    pub(crate) pixel_budget: Arc<tokio::sync::Semaphore>,
    /// Paths recently served through the cache, resolved (the fast path of a hit).
    pub(crate) resolved: ResolvedUrls,
    pub(crate) flight: SingleFlight<CacheKey, Outcome>,
    /// Failed cache writes and reads are logged at most once a minute each.
    pub(crate) cache_warnings: Throttle,
    pub(crate) cache_read_warnings: Throttle,
    /// `[images.watermark]`.
    pub watermark: watermark_slot::WatermarkSlot,
}

impl ImagesState {
    pub fn new(
        config: ImagesConfig,
        store: DynStore,
        metrics: Arc<Metrics>,
        cache: Option<DerivativeCache>,
        versions: Arc<SourceVersions>,
    ) -> Result<Self, String> {
        let signer = config.signer().map_err(|e| e.to_string())?;
        let parse_ctx = config.parse_context();
        let defaults = pipeline::Defaults::from_config(&config).map_err(|e| e.to_string())?;
        let skip_processing = config.skip_processing().map_err(|e| e.to_string())?;
        let pool = Pool::new(config.worker_count(), config.max_queue, config.timeout.0);
        let http = HttpSource::new(
            &config.allowed_sources,
            config.allow_private_sources,
            config.download_timeout.0,
        )
        .map_err(|e| e.to_string())?;
        let negotiation = Negotiation {
            auto_webp: config.auto_webp,
            enforce_webp: config.enforce_webp,
            auto_avif: config.auto_avif,
            enforce_avif: config.enforce_avif,
        };
        let unsigned_buckets = Arc::new(BucketSet::new(config.unsigned_buckets.iter().cloned()));
        let source_budget = Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(config.max_source_memory.0 >> 10).unwrap_or(usize::MAX),
        ));
        let pixel_budget = Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(config.max_pixel_memory.0 >> 10).unwrap_or(usize::MAX),
        ));
        let defaults_tag = {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(format!("{defaults:?}").as_bytes());
            hex::encode(digest.get(..8).unwrap_or_default())
        };
        let watermark =
            watermark_slot::WatermarkSlot::new(&config.watermark, config.download_timeout.0)
                .map_err(|e| e.to_string())?;
        let allow_origin = (!config.allow_origin.is_empty())
            .then(|| axum::http::HeaderValue::from_str(&config.allow_origin).ok())
            .flatten();
        Ok(Self {
            allow_origin,
            signer,
            config,
            parse_ctx,
            store,
            pool,
            defaults,
            defaults_tag,
            negotiation,
            skip_processing,
            http,
            metrics,
            cache,
            versions,
            unsigned_buckets,
            source_budget,
            pixel_budget,
            resolved: ResolvedUrls::new(),
            flight: SingleFlight::new(),
            cache_warnings: Throttle::new(Duration::from_secs(60)),
            cache_read_warnings: Throttle::new(Duration::from_secs(60)),
            watermark,
        })
    }
}
