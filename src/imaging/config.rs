//! `[images]`: the image endpoint's settings, named after imgproxy's environment variables
//! where one exists (`key` is `IMGPROXY_KEY`, `max_src_resolution` is
//! `IMGPROXY_MAX_SRC_RESOLUTION`, ...) with imgproxy's defaults unless a comment says why not.
//! `validate()` runs when the configuration is loaded, so a bad key or salt stops the daemon
//! before it listens, naming the key.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ByteSize, Seconds};
use crate::imaging::options::{ImageFormat, ParseContext};
use crate::imaging::signature::{DEFAULT_SIGNATURE_SIZE, SignatureError, Signer};
use crate::imaging::url::split_option;

/// A bad `[images]` setting: the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("images.{key}: {message}")]
pub struct ImagesConfigError {
    pub key: &'static str,
    pub message: String,
}

fn bad(key: &'static str, message: impl Into<String>) -> ImagesConfigError {
    ImagesConfigError {
        key,
        message: message.into(),
    }
}

/// A named list of options (`[[images.presets]]`), used as `preset:NAME` (`pr:NAME`) in
/// URLs; the preset named `default` applies to every request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub name: String,
    /// Option segments as in a URL, joined by `/`: `"rs:fill:300:300/q:80"`.
    pub options: String,
    /// Generate this variant in the background right after each upload (derivative cache).
    #[serde(default)]
    pub eager: bool,
    /// Eager presets only: limit to this bucket (empty: all).
    #[serde(default)]
    pub bucket: String,
    /// Eager presets only: limit to keys with this prefix (empty: all).
    #[serde(default)]
    pub prefix: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
    pub listen: String,
    /// PEM certificate chain for HTTPS on this listener (with `tls_key`); empty: plain HTTP.
    /// Read again on SIGHUP.
    pub tls_cert: PathBuf,
    /// PEM private key matching `tls_cert`.
    pub tls_key: PathBuf,
    /// Hex-encoded signing keys, comma-separated (`IMGPROXY_KEY`). Empty: URLs are not signed.
    pub key: String,
    /// Hex-encoded salts, comma-separated, one per key (`IMGPROXY_SALT`).
    pub salt: String,
    /// Bytes of the HMAC kept in signatures, 1..=32 (`IMGPROXY_SIGNATURE_SIZE`).
    pub signature_size: usize,
    /// Accept `unsafe` / `_` in place of a signature for every source (imgproxy's behaviour
    /// without a key). Off: unsigned URLs may read only `s3://` sources in
    /// `unsigned_buckets` (or buckets opened in the admin UI), and may not use `raw` or
    /// `skip_processing`.
    pub allow_unsafe: bool,
    /// Buckets whose objects unsigned image URLs may read (resized, never the original
    /// bytes). Separate from `[s3] public_buckets`: originals stay private to S3.
    pub unsigned_buckets: Vec<String>,
    /// When set, every request needs `Authorization: Bearer <secret>` (`IMGPROXY_SECRET`).
    pub secret: String,
    /// `Access-Control-Allow-Origin` on every response, and `OPTIONS` preflights answered
    /// (`IMGPROXY_ALLOW_ORIGIN`): `*` or one origin. Empty: no CORS headers, and a page on
    /// another origin cannot read the pixels (a `crossOrigin` canvas stays tainted).
    pub allow_origin: String,
    /// Processing workers; 0 means one per CPU core (`IMGPROXY_WORKERS`).
    pub workers: usize,
    /// Requests that may wait for a worker; past it the answer is 429 (`IMGPROXY_REQUESTS_QUEUE_SIZE`).
    pub max_queue: usize,
    /// Whole-request deadline for processing; past it the answer is 503 (`IMGPROXY_TIMEOUT`).
    pub timeout: Seconds,
    /// Largest source, in megapixels (frames counted) (`IMGPROXY_MAX_SRC_RESOLUTION`).
    pub max_src_resolution: f64,
    /// Largest source file (`IMGPROXY_MAX_SRC_FILE_SIZE`). imgproxy has no limit by default;
    /// Pixelport keeps one so that one request cannot pull an arbitrary object into memory.
    pub max_src_file_size: ByteSize,
    /// Animations of at most this many frames stay animated; longer ones become their first
    /// frame (`IMGPROXY_MAX_ANIMATION_FRAMES`).
    pub max_animation_frames: u32,
    /// Largest width or height of a result; 0 means no limit (`IMGPROXY_MAX_RESULT_DIMENSION`).
    pub max_result_dimension: u32,
    /// Let URLs override the limits above (`max_src_resolution:` and friends).
    pub allow_security_options: bool,
    /// Default quality, 1..=100 (`IMGPROXY_QUALITY`).
    pub quality: u8,
    /// Per-format default quality, `webp=79,avif=63` (`IMGPROXY_FORMAT_QUALITY`).
    pub format_quality: String,
    /// Progressive JPEG output (`IMGPROXY_JPEG_PROGRESSIVE`).
    pub jpeg_progressive: bool,
    /// rav1e's speed preset for AVIF output, 0..=10: 10 fastest, 0 slowest (taken as 1,
    /// ravif's slowest). imgproxy's `IMGPROXY_AVIF_SPEED` default is 8 too.
    pub avif_speed: u8,
    /// Answer WebP when the client's Accept allows and the URL names no format. On by
    /// default, unlike imgproxy (the derivative cache pays each encode once per variant);
    /// off when the configuration comes from imgproxy's environment.
    pub auto_webp: bool,
    /// Answer WebP when Accept allows, even if the URL names another format.
    pub enforce_webp: bool,
    pub auto_avif: bool,
    pub enforce_avif: bool,
    /// `Cache-Control: max-age` of results (`IMGPROXY_TTL`).
    pub ttl: Seconds,
    /// `Cache-Control: immutable` on every result. Without it, only results whose URL pins
    /// the source's version (the `cachebuster` option) are immutable.
    pub immutable: bool,
    /// Read the client hints `Sec-CH-DPR`/`DPR` and `Sec-CH-Width`/`Width` when the URL sets
    /// no dpr or width (`IMGPROXY_ENABLE_CLIENT_HINTS`).
    pub enable_client_hints: bool,
    /// Answer with the source's own Cache-Control (the S3 object's, the HTTP origin's)
    /// when it has one (`IMGPROXY_CACHE_CONTROL_PASSTHROUGH`).
    pub cache_control_passthrough: bool,
    /// Send an ETag and answer `If-None-Match` (`IMGPROXY_USE_ETAG`).
    pub use_etag: bool,
    /// Send the source's `Last-Modified` and answer `If-Modified-Since`
    /// (`IMGPROXY_USE_LAST_MODIFIED`).
    pub use_last_modified: bool,
    /// Default of the `strip_metadata` option.
    pub strip_metadata: bool,
    /// Default of the `keep_copyright` option.
    pub keep_copyright: bool,
    /// Default of the `strip_color_profile` option.
    pub strip_color_profile: bool,
    /// Default of the `auto_rotate` option (apply EXIF orientation).
    pub auto_rotate: bool,
    /// Default of the `return_attachment` option.
    pub return_attachment: bool,
    /// Source formats passed through unprocessed, e.g. `["gif"]` (`IMGPROXY_SKIP_PROCESSING_FORMATS`).
    pub skip_processing_formats: Vec<String>,
    /// Directory served to `local:///path` sources; empty disables them (`IMGPROXY_LOCAL_FILESYSTEM_ROOT`).
    pub local_root: PathBuf,
    /// `http(s)://` source patterns allowed, imgproxy's `IMGPROXY_ALLOWED_SOURCES` rules
    /// (a URL prefix; `*` matches any run of characters except `/`). Empty: no HTTP sources.
    pub allowed_sources: Vec<String>,
    /// Let HTTP sources resolve to loopback, link-local or private addresses.
    pub allow_private_sources: bool,
    /// Timeout of one HTTP source download (`IMGPROXY_DOWNLOAD_TIMEOUT`).
    pub download_timeout: Seconds,
    /// Source bytes held in memory at once by all requests together (fetched originals
    /// waiting for or in processing); a fetch waits for room within the request's deadline.
    pub max_source_memory: ByteSize,
    /// Decoding memory held at once by all renders together: each reserves
    /// `pixels × DECODE_BYTES_PER_PIXEL` (decoder buffers, decoded pixels, working copies)
    /// before it decodes, and waits for room within the request's deadline. One source
    /// larger than the whole budget runs alone.
    pub max_pixel_memory: ByteSize,
    /// Objects waiting for their eager presets to be rendered; past it further uploads are
    /// not pre-rendered (counted as `dropped`), so the writer never waits.
    pub eager_queue: usize,
    /// Named option lists (`[[images.presets]]`).
    pub presets: Vec<Preset>,
    /// The image the `watermark` option lays over results (`[images.watermark]`).
    pub watermark: WatermarkConfig,
}

/// `[images.watermark]`: one of `data`, `path` or `url`, and an opacity
/// (`IMGPROXY_WATERMARK_DATA`, `_PATH`, `_URL`, `_OPACITY`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WatermarkConfig {
    /// The image itself, base64.
    pub data: String,
    /// A file holding the image.
    pub path: PathBuf,
    /// An http(s) URL the image is downloaded from, once, on its first use.
    pub url: String,
    /// Multiplies the `watermark` option's opacity, 0..=1.
    pub opacity: f64,
}

impl Default for WatermarkConfig {
    fn default() -> Self {
        Self {
            data: String::new(),
            path: PathBuf::new(),
            url: String::new(),
            opacity: 1.0,
        }
    }
}

impl WatermarkConfig {
    fn validate(&self) -> Result<(), ImagesConfigError> {
        let given = [
            !self.data.is_empty(),
            !self.path.as_os_str().is_empty(),
            !self.url.is_empty(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(bad("watermark", "set one of data, path and url"));
        }
        if !(0.0..=1.0).contains(&self.opacity) {
            return Err(bad("watermark.opacity", "must be between 0 and 1"));
        }
        if !self.data.is_empty() {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(self.data.trim())
                .map_err(|e| bad("watermark.data", format!("is not base64: {e}")))?;
        }
        let http = self.url.starts_with("https://") || self.url.starts_with("http://");
        if !self.url.is_empty() && !http {
            return Err(bad("watermark.url", "must be an http:// or https:// URL"));
        }
        Ok(())
    }
}

impl Default for ImagesConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            key: String::new(),
            salt: String::new(),
            signature_size: DEFAULT_SIGNATURE_SIZE,
            allow_unsafe: false,
            unsigned_buckets: Vec::new(),
            secret: String::new(),
            allow_origin: String::new(),
            workers: 0,
            max_queue: 256,
            timeout: Seconds(Duration::from_secs(10)),
            max_src_resolution: 50.0,
            max_src_file_size: ByteSize(64 << 20),
            max_animation_frames: 64,
            max_result_dimension: 0,
            allow_security_options: false,
            quality: 80,
            format_quality: "webp=79,avif=63".into(),
            jpeg_progressive: false,
            avif_speed: 8,
            auto_webp: true,
            enforce_webp: false,
            auto_avif: true,
            enforce_avif: false,
            ttl: Seconds(Duration::from_secs(31_536_000)),
            immutable: false,
            enable_client_hints: false,
            cache_control_passthrough: false,
            use_etag: true,
            use_last_modified: true,
            strip_metadata: true,
            keep_copyright: true,
            strip_color_profile: true,
            auto_rotate: true,
            return_attachment: false,
            skip_processing_formats: Vec::new(),
            local_root: PathBuf::new(),
            allowed_sources: Vec::new(),
            allow_private_sources: false,
            download_timeout: Seconds(Duration::from_secs(5)),
            max_source_memory: ByteSize(128 << 20),
            max_pixel_memory: ByteSize(640 << 20),
            eager_queue: 1000,
            presets: Vec::new(),
            watermark: WatermarkConfig::default(),
        }
    }
}

impl ImagesConfig {
    /// Checks every key; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ImagesConfigError> {
        self.signer()?;
        if self.allow_origin.chars().any(|c| c.is_control())
            || self.allow_origin.trim() != self.allow_origin
        {
            return Err(bad(
                "allow_origin",
                "must be `*` or one origin such as https://example.com",
            ));
        }
        if self.max_queue == 0 {
            return Err(bad("max_queue", "must be at least 1"));
        }
        if self.eager_queue == 0 {
            return Err(bad("eager_queue", "must be at least 1"));
        }
        if self.timeout.0.is_zero() {
            return Err(bad("timeout", "must be greater than 0"));
        }
        if !(self.max_src_resolution > 0.0 && self.max_src_resolution.is_finite()) {
            return Err(bad(
                "max_src_resolution",
                "must be a positive number of megapixels",
            ));
        }
        if self.max_src_file_size.0 == 0 {
            return Err(bad("max_src_file_size", "must be greater than 0"));
        }
        if self.max_source_memory.0 < self.max_src_file_size.0 {
            return Err(bad(
                "max_source_memory",
                "must be at least max_src_file_size (one largest source must fit)",
            ));
        }
        if self.max_pixel_memory.0 < 1 << 20 {
            return Err(bad("max_pixel_memory", "must be at least 1MiB"));
        }
        if self.max_animation_frames == 0 {
            return Err(bad("max_animation_frames", "must be at least 1"));
        }
        if !(1..=100).contains(&self.quality) {
            return Err(bad(
                "quality",
                format!("{} is not within 1..=100", self.quality),
            ));
        }
        if self.avif_speed > 10 {
            return Err(bad(
                "avif_speed",
                format!("{} is not within 0..=10", self.avif_speed),
            ));
        }
        self.format_qualities()?;
        self.skip_processing()?;
        self.watermark.validate()?;
        for b in &self.unsigned_buckets {
            crate::s3::names::validate_bucket_name(b)
                .map_err(|m| bad("unsigned_buckets", format!("`{b}`: {m}")))?;
        }
        if self.local_root.as_os_str().is_empty() {
            // local:// sources disabled
        } else if !self.local_root.is_absolute() {
            return Err(bad("local_root", "must be an absolute path"));
        }
        for p in &self.allowed_sources {
            crate::imaging::allow_list::validate_pattern(p)
                .map_err(|m| bad("allowed_sources", m))?;
        }
        let mut names = std::collections::HashSet::new();
        for p in &self.presets {
            if p.name.is_empty() || p.name.contains([':', '/']) {
                return Err(bad(
                    "presets",
                    format!("`{}` is not a preset name (no `:` or `/`)", p.name),
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err(bad("presets", format!("`{}` is defined twice", p.name)));
            }
        }
        // Every preset must parse on its own (unknown options, bad arguments).
        let ctx = self.parse_context();
        for p in &self.presets {
            crate::imaging::options::parse_presets_only(std::slice::from_ref(&p.name), &ctx)
                .map_err(|e| bad("presets", format!("preset `{}`: {e}", p.name)))?;
        }
        Ok(())
    }

    /// The signer for the configured key/salt pairs; `None` when URLs are not signed.
    pub fn signer(&self) -> Result<Option<Signer>, ImagesConfigError> {
        Signer::from_config(&self.key, &self.salt, self.signature_size).map_err(|e| {
            let key = match e {
                SignatureError::SaltNotHex { .. } => "salt",
                SignatureError::BadSize(_) => "signature_size",
                _ => "key",
            };
            bad(key, e.to_string())
        })
    }

    /// `format_quality` as a table.
    pub fn format_qualities(&self) -> Result<BTreeMap<ImageFormat, u8>, ImagesConfigError> {
        let mut out = BTreeMap::new();
        for item in self.format_quality.split(',').map(str::trim) {
            if item.is_empty() {
                continue;
            }
            let err = || {
                bad(
                    "format_quality",
                    format!("`{item}` is not FORMAT=QUALITY (e.g. webp=79) with quality 1..=100"),
                )
            };
            let (f, q) = item.split_once('=').ok_or_else(err)?;
            let f = ImageFormat::from_name(f.trim()).ok_or_else(err)?;
            let q: u8 = q.trim().parse().map_err(|_| err())?;
            if !(1..=100).contains(&q) {
                return Err(err());
            }
            out.insert(f, q);
        }
        Ok(out)
    }

    /// `skip_processing_formats` as formats.
    pub fn skip_processing(&self) -> Result<Vec<ImageFormat>, ImagesConfigError> {
        self.skip_processing_formats
            .iter()
            .map(|n| {
                ImageFormat::from_name(n).ok_or_else(|| {
                    bad(
                        "skip_processing_formats",
                        format!("`{n}` is not an image format"),
                    )
                })
            })
            .collect()
    }

    /// The option parser's view of the configuration: presets and whether URLs may carry
    /// security options.
    pub fn parse_context(&self) -> ParseContext {
        let presets: HashMap<String, Vec<String>> = self
            .presets
            .iter()
            .map(|p| {
                let segments = p
                    .options
                    .split('/')
                    .map(str::trim)
                    .filter(|s| !s.is_empty() && !split_option(s).1.is_empty())
                    .map(str::to_owned)
                    .collect();
                (p.name.clone(), segments)
            })
            .collect();
        ParseContext {
            presets,
            allow_security_options: self.allow_security_options,
            now_unix: None,
        }
    }

    /// Workers to run: the configured count, or one per core.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ImagesConfig::default().validate().unwrap();
        let q = ImagesConfig::default().format_qualities().unwrap();
        assert_eq!(q.get(&ImageFormat::Webp), Some(&79));
    }

    #[test]
    fn errors_name_the_key() {
        let c = ImagesConfig {
            key: "zz".into(),
            salt: "00".into(),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "key");
        let c = ImagesConfig {
            key: "736563726574".into(),
            salt: "nothex".into(),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "salt");
        let c = ImagesConfig {
            format_quality: "webp=200".into(),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "format_quality");
        let c = ImagesConfig {
            avif_speed: 11,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "avif_speed");
        let c = ImagesConfig {
            avif_speed: 0,
            ..Default::default()
        };
        assert!(c.validate().is_ok());
        let c = ImagesConfig {
            presets: vec![Preset {
                name: "thumb".into(),
                options: "rs:fill:100:100/nonsense:1".into(),
                eager: false,
                bucket: String::new(),
                prefix: String::new(),
            }],
            ..Default::default()
        };
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "presets");
        assert!(e.message.contains("nonsense"), "{}", e.message);
    }

    #[test]
    fn presets_feed_the_parser() {
        let c = ImagesConfig {
            presets: vec![Preset {
                name: "thumb".into(),
                options: "rs:fill:100:80/q:70".into(),
                eager: false,
                bucket: String::new(),
                prefix: String::new(),
            }],
            ..Default::default()
        };
        c.validate().unwrap();
        let o = crate::imaging::options::parse(&["pr:thumb".into()], &c.parse_context()).unwrap();
        assert_eq!((o.width, o.height, o.quality), (100, 80, 70));
    }
}
