//! Why a variant could not be served. The HTTP status of each is the image handler's
//! choice (`crate::http::images`); [`ImageError::kind`] is the metrics label.

use std::sync::Arc;

use crate::imaging::options;
use crate::imaging::pipeline::PipelineError;
use crate::imaging::pool::PoolError;
use crate::imaging::source::SourceError;
use crate::imaging::url;

/// Why a request failed; the image handler picks the HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid secret: this endpoint needs `Authorization: Bearer <secret>`")]
    Secret,
    #[error("invalid signature")]
    Signature,
    /// An unsigned URL (`unsafe`, `_`) asked for what only a signed one may.
    #[error("{0}")]
    Unsigned(String),
    /// `raw` or `skip_processing` on bytes that are not an image in a supported format.
    #[error(
        "the source is not an image in a supported format (JPEG, PNG, GIF, WebP, AVIF, JPEG XL, BMP, TIFF)"
    )]
    NotAnImage,
    #[error("invalid URL: {0}")]
    Url(#[from] url::UrlError),
    #[error("invalid URL: {0}")]
    Options(#[from] options::OptionsError),
    #[error("{0}")]
    Source(#[from] SourceError),
    #[error("{0}")]
    Pipeline(#[from] PipelineError),
    #[error("{0}")]
    Pool(#[from] PoolError),
    #[error("method not allowed: use GET or HEAD")]
    Method,
    /// The configured watermark could not be downloaded (`[images.watermark] url`).
    #[error("{0}")]
    Watermark(#[from] super::watermark_slot::WatermarkSlotError),
    /// The error of a render shared by several requests (single flight).
    #[error("{0}")]
    Shared(Arc<ImageError>),
}

impl ImageError {
    /// The short, stable name of the error kind (imgproxy's `imgproxy_errors_total{type}`).
    pub fn kind(&self) -> &'static str {
        match self {
            ImageError::Secret => "secret",
            ImageError::Signature => "signature",
            ImageError::Unsigned(_) => "unsigned",
            ImageError::NotAnImage => "processing",
            ImageError::Url(_) | ImageError::Options(_) => "invalid_url",
            ImageError::Source(SourceError::NotFound(_)) => "source_not_found",
            ImageError::Source(_) => "source",
            ImageError::Pipeline(PipelineError::Cancelled { .. }) => "timeout",
            ImageError::Pipeline(_) => "processing",
            ImageError::Pool(PoolError::QueueFull(_)) => "queue",
            ImageError::Pool(PoolError::Timeout(_)) => "timeout",
            ImageError::Pool(_) => "processing",
            ImageError::Method => "method",
            ImageError::Watermark(_) => "watermark",
            ImageError::Shared(e) => e.kind(),
        }
    }
}
