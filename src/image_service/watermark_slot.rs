//! The configured watermark (`[images.watermark]`), as requests reach it: decoded at start
//! from `data` or `path` (a bad image stops the daemon, naming the key), or downloaded
//! once from `url` on its first use (a failed download fails that request and is tried
//! again by the next).
//!
//! What must stay true: [`WatermarkSlot::id`] is known before any request and changes
//! whenever the configured image or opacity does, so it can key the derivative cache.

use std::sync::Arc;

use crate::imaging::config::WatermarkConfig;
use crate::imaging::http_source::HttpSource;
use crate::imaging::watermark::WatermarkImage;

/// The largest watermark file read or downloaded.
const MAX_BYTES: u64 = 16 << 20;

/// The watermark of `[images.watermark]`, loaded or to be downloaded.
pub struct WatermarkSlot {
    id: Option<String>,
    image: tokio::sync::OnceCell<Arc<WatermarkImage>>,
    download: Option<(HttpSource, String, f64)>,
}

/// Why the watermark is unavailable.
#[derive(Debug, thiserror::Error)]
pub enum WatermarkSlotError {
    #[error("images.watermark.{key}: {message}")]
    Config { key: &'static str, message: String },
    #[error("the watermark could not be downloaded from {url}: {message}")]
    Download { url: String, message: String },
}

impl WatermarkSlot {
    pub fn new(
        c: &WatermarkConfig,
        timeout: std::time::Duration,
    ) -> Result<Self, WatermarkSlotError> {
        let config = |key, message: String| WatermarkSlotError::Config { key, message };
        let image = tokio::sync::OnceCell::new();
        let bytes = if !c.data.is_empty() {
            use base64::Engine;
            let b = base64::engine::general_purpose::STANDARD
                .decode(c.data.trim())
                .map_err(|e| config("data", e.to_string()))?;
            Some(("data", b))
        } else if !c.path.as_os_str().is_empty() {
            let b = std::fs::read(&c.path)
                .map_err(|e| config("path", format!("{}: {e}", c.path.display())))?;
            Some(("path", b))
        } else {
            None
        };
        if let Some((key, bytes)) = bytes {
            let wm =
                WatermarkImage::load(&bytes, c.opacity).map_err(|e| config(key, e.to_string()))?;
            let id = wm.id().to_owned();
            let _ = image.set(Arc::new(wm));
            return Ok(Self {
                id: Some(id),
                image,
                download: None,
            });
        }
        if c.url.is_empty() {
            return Ok(Self {
                id: None,
                image,
                download: None,
            });
        }
        // Only the configured URL, wherever it points (the operator chose it).
        let http = HttpSource::new(std::slice::from_ref(&c.url), true, timeout)
            .map_err(|e| config("url", e.to_string()))?;
        let id = {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(c.url.as_bytes());
            h.update(c.opacity.to_le_bytes());
            format!(
                "url-{}",
                hex::encode(h.finalize().get(..8).unwrap_or_default())
            )
        };
        Ok(Self {
            id: Some(id),
            image,
            download: Some((http, c.url.clone(), c.opacity)),
        })
    }

    /// The watermark's identity for cache keys; `None` when none is configured.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The watermark, downloading it first if it comes from a URL; `None` when none is
    /// configured.
    pub async fn get(&self) -> Result<Option<Arc<WatermarkImage>>, WatermarkSlotError> {
        if let Some(wm) = self.image.get() {
            return Ok(Some(wm.clone()));
        }
        let Some((http, url, opacity)) = &self.download else {
            return Ok(None);
        };
        let failed = |message: String| WatermarkSlotError::Download {
            url: url.clone(),
            message,
        };
        let wm = self
            .image
            .get_or_try_init(|| async {
                let src = http
                    .fetch(url, MAX_BYTES)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                let bytes = src.bytes.clone();
                let opacity = *opacity;
                let wm = tokio::task::spawn_blocking(move || WatermarkImage::load(&bytes, opacity))
                    .await
                    .map_err(|e| failed(e.to_string()))?
                    .map_err(|e| failed(e.to_string()))?;
                tracing::info!(url, "watermark downloaded");
                Ok::<_, WatermarkSlotError>(Arc::new(wm))
            })
            .await?;
        Ok(Some(wm.clone()))
    }
}
