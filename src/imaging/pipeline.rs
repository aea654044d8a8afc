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
//! * No request can panic a worker: option arguments are bounded when parsed, geometry
//!   refuses a plan over `MAX_OUTPUT_DIMENSION` a side with an error naming the option,
//!   and `transform` validates the plan before touching pixels.
//! * Work stops between steps once the job's deadline has passed
//!   ([`PipelineError::Cancelled`]), so a timed-out request does not keep its worker
//!   busy to the end.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::imaging::config::{ImagesConfig, ImagesConfigError};
use crate::imaging::decode::{self, DecodeError, DecodeOptions, Probe};
use crate::imaging::encode::{self, EncodeError, EncodeOptions};
use crate::imaging::geometry::{self, GeometryError, Limits};
use crate::imaging::options::{ImageFormat, Options};
use crate::imaging::transform::{self, TransformError};
use crate::imaging::watermark::{WatermarkError, WatermarkImage};

/// The largest width or height of any result, whatever the options: beyond what WebP and
/// JPEG can store (16383 and 65535) and what a browser shows. Geometry's own ceiling.
pub const MAX_OUTPUT_DIMENSION: u32 = geometry::MAX_DIMENSION;

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
    #[error("{0}")]
    Watermark(#[from] WatermarkError),
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
    /// The job's deadline passed; the work stopped before `step`. Not internal: the
    /// request asked for more work than the processing timeout allows (the HTTP side
    /// has usually answered the timeout already).
    #[error("processing stopped before {step}: the processing timeout passed")]
    Cancelled { step: &'static str },
}

impl PipelineError {
    /// Whether the failure is ours (500) rather than the source's or the request's (422).
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            PipelineError::Encode(EncodeError::Codec { .. } | EncodeError::InvalidPicture(_))
                | PipelineError::Transform(_)
                | PipelineError::Watermark(_)
                | PipelineError::Geometry(GeometryError::InconsistentPlan(_))
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
    pub strip_metadata: bool,
    pub keep_copyright: bool,
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
            strip_metadata: c.strip_metadata,
            keep_copyright: c.keep_copyright,
        })
    }
}

fn megapixels(mp: f64) -> u64 {
    // Saturating float-to-int conversion; the config keeps it positive and finite.
    (mp * 1_000_000.0) as u64
}

/// imgproxy's `strip_metadata` and `keep_copyright`, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metadata {
    /// The source's EXIF, its orientation reset when the pixels were rotated.
    Keep,
    /// Only the EXIF copyright notice, when the source has one.
    Copyright,
    /// None.
    Strip,
}

/// The EXIF blob the output of `job` carries, from the source `bytes`.
fn exif_for(job: &Job, probe: &Probe, bytes: &[u8]) -> Option<Vec<u8>> {
    let tiff = super::exif::extract(probe.format, bytes)?;
    match job.metadata {
        Metadata::Keep if job.auto_rotate && probe.orientation != 1 => {
            Some(super::exif::reset_orientation(tiff))
        }
        Metadata::Keep => Some(tiff.to_vec()),
        Metadata::Copyright => super::exif::copyright_only(tiff),
        Metadata::Strip => None,
    }
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
    /// Which of the source's EXIF the output carries (JPEG, PNG and WebP outputs).
    pub metadata: Metadata,
    /// When set, the steps stop with [`PipelineError::Cancelled`] once this instant has
    /// passed (checked between steps). `None` (the default): no deadline.
    pub deadline: Option<Instant>,
    /// The configured watermark, for a job whose options enable it (`None`: no watermark
    /// is configured, and the option does nothing, as in imgproxy).
    pub watermark: Option<std::sync::Arc<WatermarkImage>>,
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
            metadata: match (
                opts.strip_metadata.unwrap_or(d.strip_metadata),
                opts.keep_copyright.unwrap_or(d.keep_copyright),
            ) {
                (false, _) => Metadata::Keep,
                (true, true) => Metadata::Copyright,
                (true, false) => Metadata::Strip,
            },
            deadline: None,
            watermark: None,
            format,
            opts,
        }
    }

    /// The cancellation check between steps: an error once the deadline has passed.
    pub fn checkpoint(&self, step: &'static str) -> Result<(), PipelineError> {
        match self.deadline {
            Some(d) if Instant::now() >= d => Err(PipelineError::Cancelled { step }),
            _ => Ok(()),
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

    /// Pixels the decode of `probe` produces (frames counted): what `check_probe` bounds
    /// and what the renderer reserves `DECODE_BYTES_PER_PIXEL` for. A vector source is
    /// drawn at the size its plan needs (within the pixel limit).
    pub fn decoded_pixels(&self, probe: &Probe) -> u64 {
        if probe.format == ImageFormat::Svg {
            let (w, h, base) = self.vector_base(probe);
            let scale = self
                .plan(probe, w, h)
                .map_or(base, |plan| self.vector_scale(&plan, base, probe));
            let side = |v: u32| (f64::from(v) * scale).floor().max(1.0) as u64;
            return (side(probe.width) * side(probe.height)).min(self.max_pixels);
        }
        u64::from(probe.width) * u64::from(probe.height) * u64::from(self.frames_for(probe))
    }

    /// The geometry for a source of `w × h` (upright). A vector source may always be
    /// enlarged, as in imgproxy: drawing it larger loses nothing.
    fn plan(&self, probe: &Probe, w: u32, h: u32) -> Result<geometry::Plan, GeometryError> {
        if probe.format == ImageFormat::Svg && !self.opts.enlarge {
            let opts = Options {
                enlarge: true,
                ..self.opts.clone()
            };
            return geometry::plan(&opts, w, h, &self.limits);
        }
        geometry::plan(&self.opts, w, h, &self.limits)
    }

    /// The size a vector source is planned at, and its scale from the intrinsic size: the
    /// intrinsic size, scaled down to fit the pixel limit when it is larger (imgproxy's
    /// `vectorGuardScale`: a vector source is never refused for its size).
    fn vector_base(&self, probe: &Probe) -> (u32, u32, f64) {
        let pixels = u64::from(probe.width) * u64::from(probe.height);
        if pixels <= self.max_pixels {
            return (probe.width, probe.height, 1.0);
        }
        let (w, h) = (f64::from(probe.width), f64::from(probe.height));
        let scale = geometry::scale_within_pixels(w, h, 1.0, self.max_pixels);
        let side = |v: u32| ((f64::from(v) * scale).floor() as u32).max(1);
        (side(probe.width), side(probe.height), scale)
    }

    /// The scale (from the intrinsic size) to draw a vector source at for `plan`, made on
    /// the [`Job::vector_base`] size: as large as the resize step needs, so nothing is
    /// upscaled from pixels, within the pixel limit and the largest side.
    fn vector_scale(&self, plan: &geometry::Plan, base: f64, probe: &Probe) -> f64 {
        let (have_w, have_h) = plan
            .crop
            .map_or((plan.src_width, plan.src_height), |c| (c.width, c.height));
        let resize = plan.resize.map_or(1.0, |r| {
            (f64::from(r.width) / f64::from(have_w.max(1)))
                .max(f64::from(r.height) / f64::from(have_h.max(1)))
        });
        let (w, h) = (f64::from(probe.width), f64::from(probe.height));
        let mut scale = geometry::scale_within_pixels(w, h, base * resize, self.max_pixels);
        let side = w.max(h) * scale;
        if side > f64::from(MAX_OUTPUT_DIMENSION) {
            scale *= f64::from(MAX_OUTPUT_DIMENSION) / side;
        }
        scale
    }

    /// Step 1: the header against the pixel limit, before any pixel buffer exists. A
    /// vector source passes: it is drawn within the limit ([`Job::vector_base`]).
    pub fn check_probe(&self, probe: &Probe) -> Result<(), PipelineError> {
        if probe.format == ImageFormat::Svg {
            return Ok(());
        }
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

/// Peak bytes a render holds per source pixel, measured on large progressive JPEGs (the
/// worst case: the decoder's coefficient buffers, the decoded RGBA, and the resize's
/// intermediate and result, about 10.3 bytes per pixel at 18 MP): `[images]
/// max_pixel_memory` is reserved at this rate.
pub const DECODE_BYTES_PER_PIXEL: u64 = 12;

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
    matches!(format, ImageFormat::Gif | ImageFormat::Webp)
}

/// Formats whose output keeps transparency.
pub fn has_alpha_support(format: ImageFormat) -> bool {
    matches!(
        format,
        ImageFormat::Png | ImageFormat::Webp | ImageFormat::Gif | ImageFormat::Avif
    )
}

/// Runs every step on `bytes` (already probed) and returns the encoded result. The steps,
/// in order: check the probe, plan, decode, (trim, then plan), check the result size,
/// transform, encode; [`Job::checkpoint`] runs before each one.
pub fn process(bytes: &[u8], probe: &Probe, job: &Job) -> Result<Vec<u8>, PipelineError> {
    job.checkpoint("check_probe")?;
    job.check_probe(probe)?;
    let frames = job.frames_for(probe);
    let vector = probe.format == ImageFormat::Svg;
    let (w, h, vector_base) = if vector {
        job.vector_base(probe)
    } else if job.auto_rotate {
        let (w, h) = probe.oriented_size();
        (w, h, 1.0)
    } else {
        (probe.width, probe.height, 1.0)
    };
    let decode_opts = |shrink: f64| DecodeOptions {
        shrink,
        auto_rotate: job.auto_rotate,
        max_frames: frames,
        max_pixels: job.max_pixels,
    };

    // Trim needs the pixels before the geometry can be planned.
    let (picture, plan) = if job.opts.trim.enabled {
        job.checkpoint("decode")?;
        let decoded = decode::decode(bytes, probe, &decode_opts(vector_base))?;
        job.checkpoint("trim")?;
        let picture = transform::trim(decoded.picture, &job.opts.trim)?;
        job.checkpoint("plan")?;
        let plan = job.plan(probe, picture.width(), picture.height())?;
        (picture, plan)
    } else {
        job.checkpoint("plan")?;
        let plan = job.plan(probe, w, h)?;
        let shrink = if vector {
            job.vector_scale(&plan, vector_base, probe)
        } else if plan.decode_shrink > 1.0 {
            1.0 / plan.decode_shrink
        } else {
            1.0
        };
        job.checkpoint("decode")?;
        let decoded = decode::decode(bytes, probe, &decode_opts(shrink))?;
        let plan = if vector {
            // Drawn larger (or smaller) than planned: the plan follows the drawing.
            plan.for_decoded_size(decoded.picture.width(), decoded.picture.height())
        } else {
            plan
        };
        (decoded.picture, plan)
    };
    check_result(&plan, job.max_pixels)?;
    let icc = picture.icc.clone();
    let exif = exif_for(job, probe, bytes);
    job.checkpoint("transform")?;
    let mut picture = transform::apply(picture, &plan, &job.opts, has_alpha_support(job.format))?;
    if let Some(wm) = &job.watermark {
        job.checkpoint("watermark")?;
        wm.apply(&mut picture, &job.opts.watermark, job.opts.dpr)?;
    }
    job.checkpoint("encode")?;
    let out = encode::encode(
        &picture,
        &EncodeOptions {
            format: job.format,
            quality: job.quality,
            progressive: job.progressive,
            lossless: false,
            icc: if job.keep_icc { icc.as_deref() } else { None },
            exif: exif.as_deref(),
            max_bytes: usize::try_from(job.opts.max_bytes).unwrap_or(usize::MAX),
            avif_speed: job.avif_speed,
        },
    )?;
    Ok(out)
}

/// No step may produce more pixels than the source limit allows: the resized image,
/// the canvases and the result.
fn check_result(plan: &geometry::Plan, limit: u64) -> Result<(), PipelineError> {
    let mut sizes = vec![(plan.width, plan.height)];
    if let Some(r) = plan.resize {
        sizes.push((r.width, r.height));
    }
    for e in [plan.extend, plan.extend_aspect_ratio]
        .into_iter()
        .flatten()
    {
        sizes.push((e.width, e.height));
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::imaging::config::ImagesConfig;
    use crate::imaging::options::{ParseContext, parse};

    /// A `w` × `h` RGBA PNG with a little colour variation, encoded in memory.
    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbaImage::from_fn(w, h, |x, y| {
            image::Rgba([(x * 40) as u8, (y * 60) as u8, 200, 255])
        });
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgba8(img)
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    fn job(path: &str, format: ImageFormat) -> Result<Job, crate::imaging::options::OptionsError> {
        let segments: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let opts = parse(&segments, &ParseContext::default())?;
        let defaults = Defaults::from_config(&ImagesConfig::default()).unwrap();
        Ok(Job::new(opts, format, &defaults))
    }

    fn run(path: &str, w: u32, h: u32) -> Result<Vec<u8>, PipelineError> {
        let bytes = png(w, h);
        let probe = decode::probe(&bytes).unwrap();
        process(&bytes, &probe, &job(path, ImageFormat::Png).unwrap())
    }

    #[test]
    fn vectors_are_drawn_at_the_result_size_and_never_refused_for_theirs() {
        // A 10×5 red/blue SVG; the seam between the halves is at x = 5 of 10.
        let svg = br##"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="5"><rect width="5" height="5" fill="#f00"/><rect x="5" width="5" height="5" fill="#00f"/></svg>"##;
        let probe = decode::probe(svg).unwrap();
        let draw = |path: &str| {
            let j = job(path, ImageFormat::Png).unwrap();
            let out = process(svg, &probe, &j).unwrap();
            image::load_from_memory(&out).unwrap().to_rgba8()
        };
        // Enlarged without `el`, and drawn at 1000 px: the seam is one sharp column, not a
        // 100-pixel ramp as upscaling 10 pixels would make.
        let img = draw("rs:fit:1000:1000");
        assert_eq!(img.dimensions(), (1000, 500));
        assert_eq!(img.get_pixel(498, 250).0, [255, 0, 0, 255]);
        assert_eq!(img.get_pixel(502, 250).0, [0, 0, 255, 255]);
        // A crop of the right half, then 200 wide: all blue.
        let img = draw("c:5:5:ea/w:200");
        assert_eq!(img.dimensions(), (200, 200));
        assert_eq!(img.get_pixel(2, 100).0, [0, 0, 255, 255]);
        // Intrinsically 100 000 × 50 000 (5 gigapixels): drawn within the limit instead.
        let huge = br##"<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="50000" viewBox="0 0 10 5"><rect width="10" height="5" fill="#0f0"/></svg>"##;
        let p = decode::probe(huge).unwrap();
        let j = job("", ImageFormat::Png).unwrap();
        assert!(j.decoded_pixels(&p) <= j.max_pixels);
        let out = image::load_from_memory(&process(huge, &p, &j).unwrap()).unwrap();
        let (w, h) = (out.width(), out.height());
        assert!(
            u64::from(w) * u64::from(h) <= j.max_pixels && w == 2 * h,
            "{w}x{h}"
        );
    }

    #[test]
    fn huge_zoom_with_extend_is_refused_not_a_panic() {
        // Guards: `GET /unsafe/w:1/z:4294967396/ex:1/plain/s3://b/a.png` panicked in
        // transform ("range start index 8589933768 out of range for slice of length
        // 204800"): the zoomed target width 4294967396 wrapped to 100 in `as u32`, the
        // extend canvas was 100 wide but its left offset ~2^31.
        let e = job("w:1/z:4294967396/ex:1", ImageFormat::Png).unwrap_err();
        assert_eq!(e.segment(), "z:4294967396");
        // The same options built without the parser, and a zoom the parser accepts
        // whose canvas is still too large, are geometry errors (422), not panics.
        let bytes = png(8, 8);
        let probe = decode::probe(&bytes).unwrap();
        let mut j = job("w:1/ex:1", ImageFormat::Png).unwrap();
        (j.opts.zoom_width, j.opts.zoom_height) = (4_294_967_396.0, 4_294_967_396.0);
        let err = process(&bytes, &probe, &j).unwrap_err();
        assert!(matches!(err, PipelineError::Geometry(_)), "{err}");
        assert!(!err.is_internal());
        let err = run("w:4294967295/z:16383/ex:1", 8, 8).unwrap_err();
        assert!(
            matches!(
                err,
                PipelineError::Geometry(GeometryError::TooLarge { option: "zoom", .. })
            ),
            "{err}"
        );
        assert!(!err.is_internal());
        // The largest canvas allowed still renders.
        let out = run("w:1/z:16383/ex:1", 8, 8).unwrap();
        let img = image::load_from_memory(&out).unwrap();
        assert_eq!((img.width(), img.height()), (geometry::MAX_DIMENSION, 8));
    }

    #[test]
    fn a_passed_deadline_stops_the_job() {
        let bytes = png(8, 8);
        let probe = decode::probe(&bytes).unwrap();
        let mut j = job("rs:fit:4:4/bl:2", ImageFormat::Png).unwrap();
        assert_eq!(j.deadline, None);
        assert!(process(&bytes, &probe, &j).is_ok());
        let now = Instant::now();
        j.deadline = Some(now.checked_sub(Duration::from_secs(1)).unwrap_or(now));
        let err = process(&bytes, &probe, &j).unwrap_err();
        assert!(
            matches!(
                err,
                PipelineError::Cancelled {
                    step: "check_probe"
                }
            ),
            "{err}"
        );
        assert!(!err.is_internal());
        assert!(err.to_string().contains("processing timeout"), "{err}");
        j.deadline = Some(Instant::now() + Duration::from_secs(3600));
        assert!(process(&bytes, &probe, &j).is_ok());
    }

    #[test]
    fn checkpoint_names_the_next_step() {
        let mut j = job("", ImageFormat::Png).unwrap();
        assert!(j.checkpoint("encode").is_ok());
        j.deadline = Some(Instant::now());
        assert!(matches!(
            j.checkpoint("encode"),
            Err(PipelineError::Cancelled { step: "encode" })
        ));
    }

    #[test]
    fn large_blur_cost_does_not_grow_with_sigma() {
        // Guards: `rs:fit:16383:3000:1/bl:600` held a worker for minutes (a 2000-tap
        // kernel per pixel and pass). Sigmas are capped at 100 by the parser and large
        // ones are three box blurs: a 1000x600 blur at sigma 100 is quick even here.
        assert!(job("bl:600", ImageFormat::Png).is_err());
        let started = Instant::now();
        let out = run("rs:fit:1000:600:1/bl:100", 10, 6).unwrap();
        let img = image::load_from_memory(&out).unwrap();
        assert_eq!((img.width(), img.height()), (1000, 600));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn random_options_on_a_tiny_png_never_panic() {
        // Property: the whole pipeline, on a 3x2 PNG, with any options the parser
        // accepts and any output format we encode, returns an image or a request error;
        // never a panic, never an internal error.
        use crate::imaging::options::fuzz;
        let bytes = png(3, 2);
        let probe = decode::probe(&bytes).unwrap();
        let defaults = Defaults::from_config(&ImagesConfig::default()).unwrap();
        let mut rng = fuzz::Rng::new(0x5eed_0003);
        let (mut ok, mut refused) = (0, 0);
        for _ in 0..2_000 {
            let Some(opts) = fuzz::options(&mut rng, 5, 50) else {
                continue;
            };
            let format = *rng.pick(&[
                ImageFormat::Png,
                ImageFormat::Jpeg,
                ImageFormat::Webp,
                ImageFormat::Gif,
            ]);
            let mut j = Job::new(opts, format, &defaults);
            // Keep each run small: the limit is what the test is about, not the pixels.
            j.max_pixels = j.max_pixels.min(200_000);
            match process(&bytes, &probe, &j) {
                Ok(out) => {
                    ok += 1;
                    assert!(!out.is_empty());
                }
                Err(e) => {
                    refused += 1;
                    assert!(!e.is_internal(), "{e} for {:?}", j.opts);
                }
            }
        }
        assert!(ok > 500, "{ok} rendered, {refused} refused");
    }
}
