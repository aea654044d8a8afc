//! JPEG XL sources through jxl-oxide, a pure-Rust decoder.
//!
//! What must stay true:
//! - the header is read before any pixel: [`probe`] gives the size as the image shows
//!   (jxl-oxide applies the orientation itself, so the probe says orientation 1), and the
//!   caller checks it against the pixel limit before [`decode`];
//! - the decoder's own allocations are capped ([`AllocTracker`]) at what the pixel limit
//!   allows, so a header that lies about its size cannot take more memory than an honest
//!   image of the limit would;
//! - the first keyframe only (an animation is not kept: JPEG XL output does not exist);
//! - pixels come out as 8-bit RGB or RGBA with the profile they are in, which the caller
//!   converts to sRGB like any other source's.

use std::io::Cursor;

use image::{DynamicImage, RgbImage, RgbaImage};
use jxl_oxide::{AllocTracker, InitializeResult, JxlImage, PixelFormat};

use super::decode::DecodeError;
use super::options::ImageFormat;

fn corrupt(reason: impl ToString) -> DecodeError {
    DecodeError::Corrupt {
        format: ImageFormat::Jxl,
        reason: reason.to_string(),
    }
}

/// Bytes the decoder may allocate per pixel of the limit (its float planes and groups).
const BYTES_PER_PIXEL: u64 = 32;

fn open(bytes: &[u8], max_pixels: u64) -> Result<JxlImage, DecodeError> {
    let limit = usize::try_from(max_pixels.saturating_mul(BYTES_PER_PIXEL)).unwrap_or(usize::MAX);
    JxlImage::builder()
        .alloc_tracker(AllocTracker::with_limit(limit))
        .read(Cursor::new(bytes))
        .map_err(corrupt)
}

/// Width, height (as shown) and whether there is alpha, from the header alone (no frame
/// is parsed, so nothing sized by the image is allocated).
pub fn probe(bytes: &[u8]) -> Result<(u32, u32, bool), DecodeError> {
    let mut uninit = JxlImage::builder()
        .alloc_tracker(AllocTracker::with_limit(PROBE_BYTES))
        .build_uninit();
    uninit.feed_bytes(bytes).map_err(corrupt)?;
    match uninit.try_init().map_err(corrupt)? {
        InitializeResult::Initialized(image) => Ok((
            image.width(),
            image.height(),
            image.pixel_format().has_alpha(),
        )),
        InitializeResult::NeedMoreData(_) => Err(corrupt("truncated header")),
    }
}

/// What the header (and a preview frame's table of contents) may allocate.
const PROBE_BYTES: usize = 16 << 20;

/// The first keyframe as 8-bit RGB or RGBA, and the ICC profile its pixels are in.
pub fn decode(
    bytes: &[u8],
    max_pixels: u64,
) -> Result<(DynamicImage, Option<Vec<u8>>), DecodeError> {
    let image = open(bytes, max_pixels)?;
    let (w, h) = (image.width(), image.height());
    let pixels = u64::from(w) * u64::from(h);
    if pixels > max_pixels {
        return Err(DecodeError::OverLimit {
            pixels,
            limit: max_pixels,
        });
    }
    let format = image.pixel_format();
    if format.has_black() {
        return Err(corrupt("CMYK JPEG XL images are not supported"));
    }
    let render = image.render_frame(0).map_err(corrupt)?;
    let mut stream = render.stream();
    let channels = stream.channels() as usize;
    let (sw, sh) = (stream.width(), stream.height());
    if (sw, sh) != (w, h) {
        return Err(corrupt(format!("frame is {sw}x{sh}, header says {w}x{h}")));
    }
    let len = (w as usize)
        .checked_mul(h as usize)
        .and_then(|n| n.checked_mul(channels))
        .ok_or_else(|| corrupt("image too large"))?;
    let mut samples = vec![0u8; len];
    let written = stream.write_to_buffer(&mut samples);
    if written != len {
        return Err(corrupt(format!("{written} of {len} samples decoded")));
    }
    let image_out = match (format, channels) {
        (PixelFormat::Rgb, 3) => RgbImage::from_raw(w, h, samples).map(DynamicImage::ImageRgb8),
        (PixelFormat::Rgba, 4) => RgbaImage::from_raw(w, h, samples).map(DynamicImage::ImageRgba8),
        (PixelFormat::Gray, 1) => {
            let rgb = samples.iter().flat_map(|&v| [v, v, v]).collect();
            RgbImage::from_raw(w, h, rgb).map(DynamicImage::ImageRgb8)
        }
        (PixelFormat::Graya, 2) => {
            let rgba = samples
                .chunks_exact(2)
                .flat_map(|p| [p[0], p[0], p[0], p[1]])
                .collect();
            RgbaImage::from_raw(w, h, rgba).map(DynamicImage::ImageRgba8)
        }
        (other, n) => return Err(corrupt(format!("{other:?} with {n} channels"))),
    }
    .ok_or_else(|| corrupt("buffer size"))?;
    // XYB images (lossy) render as sRGB; others in their own profile, given here.
    let icc = Some(image.rendered_icc()).filter(|icc| !icc.is_empty());
    Ok((image_out, icc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_after_the_signature_is_an_error_not_a_panic() {
        for junk in [
            &[0xFF, 0x0A][..],
            &[0xFF, 0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
            b"\0\0\0\x0CJXL \r\n\x87\n\0\0\0\x14ftypjxl \0\0\0\0jxl ",
        ] {
            assert!(probe(junk).is_err(), "{junk:?}");
            assert!(decode(junk, 1_000_000).is_err(), "{junk:?}");
        }
    }
}
