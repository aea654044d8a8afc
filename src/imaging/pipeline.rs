//! The processing pipeline of one request, as an ordered list of named steps: check the
//! probe against the limits, plan the geometry, decode (shrinking on load when the plan
//! allows), trim, transform, encode. Pure CPU work with no I/O: it runs on the bounded pool.
//!
//! What must stay true:
//!
//! * Nothing is decoded before the probe has passed the pixel limit (`max_src_resolution`,
//!   frames counted), and no result or intermediate image has more pixels than that limit
//!   either: with `workers` workers, pixel memory stays within about
//!   `workers × max_src_resolution × 4 bytes × 3` (source, resized copy, encoder buffer).
//! * Which options apply comes from the typed `Options` and the server `Defaults` only.

use std::collections::BTreeMap;

use crate::imaging::config::{ImagesConfig, ImagesConfigError};
use crate::imaging::decode::{self, DecodeError, DecodeOptions, Probe};
use crate::imaging::encode::{self, EncodeError, EncodeOptions};
use crate::imaging::geometry::{self, GeometryError, Limits};
use crate::imaging::options::{ImageFormat, Options};
use crate::imaging::transform::{self, TransformError};

/// The largest width or height of any result, whatever the options: beyond what WebP and
/// JPEG can store (16383 and 65535) and what a browser shows.
pub const MAX_OUTPUT_DIMENSION: u32 = 16383;

/// Why a request could not be processed. All are the source's or the request's fault
/// (422) except an encoder failure or an inconsistency of ours (500).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    Geometry(#[from] GeometryError),
    #[error("{0}")]
    Transform(#[from] TransformError),
    #[error("{0}")]
    Encode(#[from] EncodeError),
    #[error(
        "the source is {width}x{height}{frames}: over max_src_resolution ({limit_mp} megapixels)"
    )]
    SourceTooLarge {
        width: u32,
        height: u32,
        frames: String,
        limit_mp: f64,
    },
    #[error(
        "animation frames are {width}x{height}: over max_animation_frame_resolution ({limit} pixels)"
    )]
    FrameTooLarge { width: u32, height: u32, limit: u64 },
    #[error("the result would be {width}x{height}: over the {limit} pixel limit")]
    ResultTooLarge { width: u32, height: u32, limit: u64 },
}

impl PipelineError {
    /// Whether the failure is ours (500) rather than the source's or the request's (422).
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            PipelineError::Encode(EncodeError::Codec { .. } | EncodeError::InvalidPicture(_))
                | PipelineError::Transform(_)
        )
    }
}

/// Server-wide defaults from `[images]`, resolved once.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub quality: u8,
    pub format_quality: BTreeMap<ImageFormat, u8>,
    pub jpeg_progressive: bool,
    pub avif_speed: u8,
    pub max_src_pixels: u64,
    pub max_animation_frames: u32,
    pub max_result_dimension: u32,
    pub auto_rotate: bool,
    pub strip_color_profile: bool,
}

impl Defaults {
    pub fn from_config(c: &ImagesConfig) -> Result<Self, ImagesConfigError> {
        Ok(Self {
            quality: c.quality,
            format_quality: c.format_qualities()?,
            jpeg_progressive: c.jpeg_progressive,
            avif_speed: c.avif_speed,
            max_src_pixels: megapixels(c.max_src_resolution),
            max_animation_frames: c.max_animation_frames,
            max_result_dimension: c.max_result_dimension,
            auto_rotate: c.auto_rotate,
            strip_color_profile: c.strip_color_profile,
        })
    }
}

fn megapixels(mp: f64) -> u64 {
    // Saturating float-to-int conversion; the config keeps it positive and finite.
    (mp * 1_000_000.0) as u64
}

/// One request's work: its options with the server defaults applied.
#[derive(Debug, Clone)]
pub struct Job {
    pub opts: Options,
    pub format: ImageFormat,
    pub quality: u8,
    pub progressive: bool,
    pub avif_speed: u8,
    pub max_pixels: u64,
    pub max_frames: u32,
    /// Largest frame of an animation kept animated, in pixels (0: no separate limit).
    pub max_frame_pixels: u64,
    pub limits: Limits,
    pub auto_rotate: bool,
    pub keep_icc: bool,
}

impl Job {
    pub fn new(opts: Options, format: ImageFormat, d: &Defaults) -> Job {
        // imgproxy's order: the URL's quality, then its per-format quality, then the
        // server's per-format quality, then the server's quality.
        let quality = [
            Some(opts.quality).filter(|q| *q > 0),
            opts.format_quality.get(&format).copied(),
            d.format_quality.get(&format).copied(),
        ]
        .into_iter()
        .flatten()
        .next()
        .unwrap_or(d.quality);
        let sec = &opts.security;
        let max_pixels = sec.max_src_resolution.unwrap_or(d.max_src_pixels);
        let max_frames = sec.max_animation_frames.unwrap_or(d.max_animation_frames);
        let max_result_dimension = match sec.max_result_dimension {
            Some(v) => u32::try_from(v.max(0)).unwrap_or(u32::MAX),
            None => d.max_result_dimension,
        };
        Job {
            quality,
            progressive: d.jpeg_progressive,
            avif_speed: d.avif_speed,
            max_pixels,
            max_frames: max_frames.max(1),
            max_frame_pixels: sec.max_animation_frame_resolution.unwrap_or(0),
            limits: Limits {
                max_result_dimension,
                max_output_dimension: MAX_OUTPUT_DIMENSION,
            },
            auto_rotate: opts.auto_rotate.unwrap_or(d.auto_rotate),
            keep_icc: !opts.strip_color_profile.unwrap_or(d.strip_color_profile),
            format,
            opts,
        }
    }

    /// Frames to decode: all of an animation the output can carry (within the frame
    /// limit), else the first.
    pub fn frames_for(&self, probe: &Probe) -> u32 {
        if can_animate(self.format) && probe.frames > 1 && probe.frames <= self.max_frames {
            probe.frames
        } else {
            1
        }
    }

    /// Step 1: the header against the pixel limit, before any pixel buffer exists.
    pub fn check_probe(&self, probe: &Probe) -> Result<(), PipelineError> {
        let frames = self.frames_for(probe);
        let frame_pixels = u64::from(probe.width) * u64::from(probe.height);
        let pixels = frame_pixels * u64::from(frames);
        if frames > 1 && self.max_frame_pixels > 0 && frame_pixels > self.max_frame_pixels {
            return Err(PipelineError::FrameTooLarge {
                width: probe.width,
                height: probe.height,
                limit: self.max_frame_pixels,
            });
        }
        if pixels > self.max_pixels {
            return Err(PipelineError::SourceTooLarge {
                width: probe.width,
                height: probe.height,
                frames: if frames > 1 {
                    format!(" × {frames} frames")
                } else {
                    String::new()
                },
                limit_mp: self.max_pixels as f64 / 1e6,
            });
        }
        Ok(())
    }
}

/// Formats the encoder writes.
pub fn can_encode(format: ImageFormat) -> bool {
    matches!(
        format,
        ImageFormat::Jpeg
            | ImageFormat::Png
            | ImageFormat::Webp
            | ImageFormat::Avif
            | ImageFormat::Gif
    )
}

/// Formats whose output keeps animation.
pub fn can_animate(format: ImageFormat) -> bool {
    format == ImageFormat::Gif
}

/// Formats whose output keeps transparency.
pub fn has_alpha_support(format: ImageFormat) -> bool {
    matches!(
        format,
        ImageFormat::Png | ImageFormat::Webp | ImageFormat::Gif | ImageFormat::Avif
    )
}

/// Runs every step on `bytes` (already probed) and returns the encoded result.
pub fn process(bytes: &[u8], probe: &Probe, job: &Job) -> Result<Vec<u8>, PipelineError> {
    job.check_probe(probe)?;
    let frames = job.frames_for(probe);
    let (w, h) = if job.auto_rotate {
        probe.oriented_size()
    } else {
        (probe.width, probe.height)
    };
    let decode_opts = |shrink: f64| DecodeOptions {
        shrink,
        auto_rotate: job.auto_rotate,
        max_frames: frames,
        max_pixels: job.max_pixels,
    };

    // Trim needs the pixels before the geometry can be planned.
    let (picture, plan) = if job.opts.trim.enabled {
        let decoded = decode::decode(bytes, probe, &decode_opts(1.0))?;
        let picture = transform::trim(decoded.picture, &job.opts.trim)?;
        let plan = geometry::plan(&job.opts, picture.width(), picture.height(), &job.limits)?;
        (picture, plan)
    } else {
        let plan = geometry::plan(&job.opts, w, h, &job.limits)?;
        let shrink = if plan.decode_shrink > 1.0 {
            1.0 / plan.decode_shrink
        } else {
            1.0
        };
        let decoded = decode::decode(bytes, probe, &decode_opts(shrink))?;
        (decoded.picture, plan)
    };
    check_result(&plan, job.max_pixels)?;
    let icc = picture.icc.clone();
    let picture = transform::apply(picture, &plan, &job.opts, has_alpha_support(job.format))?;
    let out = encode::encode(
        &picture,
        &EncodeOptions {
            format: job.format,
            quality: job.quality,
            progressive: job.progressive,
            lossless: false,
            icc: if job.keep_icc { icc.as_deref() } else { None },
            max_bytes: usize::try_from(job.opts.max_bytes).unwrap_or(usize::MAX),
            avif_speed: job.avif_speed,
        },
    )?;
    Ok(out)
}

/// No step may produce more pixels than the source limit allows.
fn check_result(plan: &geometry::Plan, limit: u64) -> Result<(), PipelineError> {
    let mut sizes = vec![(plan.width, plan.height)];
    if let Some(r) = plan.resize {
        sizes.push((r.width, r.height));
    }
    for (width, height) in sizes {
        if u64::from(width) * u64::from(height) > limit {
            return Err(PipelineError::ResultTooLarge {
                width,
                height,
                limit,
            });
        }
    }
    Ok(())
}
