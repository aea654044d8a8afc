//! A variant: options on a source, decided before any I/O on the source; what an unsigned
//! URL may ask for; the source's version and the variant's cache key.

use crate::cache::CacheKey;
use crate::imaging::negotiate::{self, Accepted};
use crate::imaging::options::{self, ImageFormat, Options};
use crate::imaging::source::{SourceError, SourceUrl};

use super::{ImageError, ImagesState};

/// One variant of one source, as a URL asks for it, before any I/O on the source: what a
/// visitor's request and an eager preset both become.
pub struct Variant {
    pub opts: Options,
    pub source_url: String,
    pub source: SourceUrl,
    /// The output format chosen before the source is seen (`None`: decided by the source).
    pub decided: Option<ImageFormat>,
    /// The largest source file this variant may read.
    pub max_file: u64,
    /// What the request's `Accept` admits: an animated source decides again without AVIF.
    pub accepted: Accepted,
}

impl ImagesState {
    /// The variant that `opts` on `source_url` asks for, with `accepted` read from the
    /// request's `Accept` header (the default for eager renders: what a request without one
    /// gets).
    pub fn variant(
        &self,
        opts: Options,
        source_url: &str,
        accepted: Accepted,
    ) -> Result<Variant, ImageError> {
        let source = SourceUrl::parse(source_url)?;
        let max_file = opts
            .security
            .max_src_file_size
            .and_then(|v| u64::try_from(v).ok())
            .filter(|v| *v > 0)
            .unwrap_or(self.config.max_src_file_size.0);
        let decided = negotiate::decide_without_source(opts.format, accepted, self.negotiation);
        Ok(Variant {
            opts,
            source_url: source_url.to_owned(),
            source,
            decided,
            max_file,
            accepted,
        })
    }

    /// What an unsigned URL may do (docs/security.md). With `allow_unsafe` everything, as
    /// imgproxy without a key. Otherwise it may read only `s3://` sources in a bucket opened
    /// to unsigned URLs, and only processed: not `raw`, not `skip_processing`, and without
    /// security overrides, so the original bytes stay private to signed URLs and S3.
    pub fn check_unsigned(&self, variant: &Variant) -> Result<(), ImageError> {
        if self.config.allow_unsafe {
            return Ok(());
        }
        let refuse = |why: String| Err(ImageError::Unsigned(why));
        let SourceUrl::S3 { bucket, .. } = &variant.source else {
            return refuse(format!(
                "unsigned image URLs may not read `{}`: sign the URL (`pixelport sign`); \
                 only s3:// sources in buckets opened to unsigned URLs may be read unsigned",
                variant.source_url
            ));
        };
        if !self.unsigned_buckets.contains(bucket) {
            return refuse(format!(
                "unsigned image URLs may not read bucket `{bucket}`: sign the URL \
                 (`pixelport sign`), or open the bucket to unsigned image URLs \
                 ([images] unsigned_buckets, or the admin UI's bucket page)"
            ));
        }
        let opts = &variant.opts;
        if opts.raw || !opts.skip_processing.is_empty() {
            return refuse(
                "`raw` and `skip_processing` serve the original bytes: they need a signed URL"
                    .into(),
            );
        }
        if opts.security != options::SecurityOverrides::default() {
            return refuse("security options need a signed URL".into());
        }
        Ok(())
    }

    /// The output format for a source of `frames` frames: [`Variant::decided`], except
    /// that an animated source is not turned into AVIF by `Accept` (it would keep one
    /// frame), as imgproxy's `auto_avif`/`enforce_avif` skip animations. A URL that names
    /// AVIF still gets it.
    pub fn decided_for(&self, variant: &Variant, frames: u32) -> Option<ImageFormat> {
        if frames > 1 && variant.decided == Some(ImageFormat::Avif) {
            let accepted = Accepted {
                avif: false,
                ..variant.accepted
            };
            negotiate::decide_without_source(variant.opts.format, accepted, self.negotiation)
        } else {
            variant.decided
        }
    }

    /// Whether an SVG source is answered as SVG (sanitised, not drawn): when the URL
    /// names SVG, or names no format and no `enforce_*` switch applies. `Accept` alone
    /// never turns a vector into pixels.
    pub fn serves_svg(&self, variant: &Variant) -> bool {
        let enforced_only = negotiate::Negotiation {
            auto_webp: false,
            auto_avif: false,
            ..self.negotiation
        };
        matches!(
            negotiate::decide_without_source(variant.opts.format, variant.accepted, enforced_only),
            None | Some(ImageFormat::Svg)
        )
    }

    /// The current version (ETag) of an `s3://` source, refusing one over the size limit.
    pub async fn s3_version(
        &self,
        bucket: &str,
        key: &str,
        variant: &Variant,
    ) -> Result<String, ImageError> {
        let v = self.versions.get(&self.store, bucket, key).await?;
        if v.size > variant.max_file {
            return Err(SourceError::TooLarge {
                max: variant.max_file,
            }
            .into());
        }
        Ok(v.etag)
    }

    /// The derivative cache key of `variant` at source version `version`.
    pub fn cache_key(&self, variant: &Variant, version: &str) -> CacheKey {
        let format_key = variant.decided.map_or("auto", ImageFormat::as_str);
        let mut options = format!(
            "{}|defaults={}",
            variant.opts.canonical(),
            self.defaults_tag
        );
        // Another watermark image (or opacity) is another variant.
        if variant.opts.watermark.enabled
            && let Some(id) = self.watermark.id()
        {
            options.push_str("|wm=");
            options.push_str(id);
        }
        CacheKey::new(&variant.source_url, version, &options, format_key)
    }
}
