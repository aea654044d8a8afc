//! `/info/{signature}/{options}/plain/{source}`: a source's description as JSON
//! (`imaging::info`), signed and checked like an image URL and kept in the derivative cache
//! like a variant, under the source's version, so a new version is described afresh.
//!
//! What must stay true: the work goes through the same gates as a render: the pool (429 when
//! full, 503 past the deadline), the source-memory budget when fetching, the pixel limit
//! before any decode, and the pixel-memory budget while decoding.

use std::time::Instant;

use crate::cache::CacheKey;
use crate::imaging::info;
use crate::imaging::options::ImageFormat;
use crate::imaging::pipeline::{self, Job, PipelineError};
use crate::imaging::source::SourceUrl;

use super::render::fetch;
use super::{ImageError, ImagesState, Variant};

/// The format of info answers: bumped when [`info::Info`] changes, so old answers are not
/// served from the cache.
const INFO_VERSION: &str = "info-v1";

/// One info answer: the JSON body and its validators.
pub struct InfoAnswer {
    pub body: bytes::Bytes,
    /// The cache key's hex: the strong ETag.
    pub etag: String,
    pub last_modified_ms: i64,
    pub cache_hit: Option<bool>,
}

impl ImagesState {
    /// The cache key of the info answer for `variant`'s source at `version`.
    pub fn info_key(&self, variant: &Variant, version: &str) -> CacheKey {
        CacheKey::new(&variant.source_url, version, INFO_VERSION, "info")
    }

    /// The current version of `variant`'s source (a HEAD for `s3://`, the bytes for the
    /// others), and the fetched source when that took the bytes.
    pub async fn info_version(
        &self,
        variant: &Variant,
        started: Instant,
    ) -> Result<(String, Option<crate::imaging::source::SourceImage>), ImageError> {
        match &variant.source {
            SourceUrl::S3 { bucket, key } => {
                Ok((self.s3_version(bucket, key, variant).await?, None))
            }
            _ => {
                let src = fetch(self, &variant.source, variant.max_file, started).await?;
                Ok((src.etag.clone(), Some(src)))
            }
        }
    }

    /// The info answer for `variant` at `version`: from the cache, or described and stored.
    pub async fn info(
        &self,
        variant: &Variant,
        version: &str,
        prefetched: Option<crate::imaging::source::SourceImage>,
        started: Instant,
    ) -> Result<InfoAnswer, ImageError> {
        let key = self.info_key(variant, version);
        if let Some(hit) = self.cached_entry(&key, true) {
            return Ok(InfoAnswer {
                body: hit.body,
                etag: key.hex(),
                last_modified_ms: hit.last_modified_ms,
                cache_hit: Some(true),
            });
        }
        let ticket = self.pool.admit()?;
        let src = match prefetched {
            Some(src) => src,
            None => fetch(self, &variant.source, variant.max_file, started).await?,
        };
        let probe = crate::imaging::decode::probe(&src.bytes).map_err(PipelineError::from)?;
        // The same limits as a one-frame render of this source.
        let job = Job::new(variant.opts.clone(), ImageFormat::Png, &self.defaults);
        job.check_probe(&probe)?;
        // One frame is decoded, whatever the source holds.
        let room = (u64::from(probe.width) * u64::from(probe.height))
            .saturating_mul(pipeline::DECODE_BYTES_PER_PIXEL);
        let pixels = super::render::reserve(
            &self.pixel_budget,
            self.config.max_pixel_memory.0,
            room,
            started,
            self.pool.timeout(),
        )
        .await?;
        let bytes = src.bytes.clone();
        let max_pixels = job.max_pixels;
        let described = ticket
            .run(started, move || {
                let _pixels = pixels;
                info::describe(&bytes, &probe, max_pixels)
            })
            .await?;
        let described = described.map_err(|e| match e {
            info::InfoError::Decode(d) => ImageError::Pipeline(PipelineError::Decode(d)),
            other => ImageError::Source(crate::imaging::source::SourceError::Internal(
                other.to_string(),
            )),
        })?;
        let body = serde_json::to_vec(&described)
            .map_err(|e| crate::imaging::source::SourceError::Internal(e.to_string()))?;
        let body = bytes::Bytes::from(body);
        if src.etag == version {
            // Stored like a variant (its format field is not read back for JSON).
            let stored = super::Rendered {
                bytes: body.clone(),
                content_type: "application/json".into(),
                format: ImageFormat::Png,
                last_modified_ms: src.last_modified_ms,
                cache_control: None,
            };
            self.put_cached(&key, &stored).await;
        }
        Ok(InfoAnswer {
            body,
            etag: key.hex(),
            last_modified_ms: src.last_modified_ms,
            cache_hit: self.cache.as_ref().map(|_| false),
        })
    }
}
