//! HEIC/HEIF sources through the system's libheif (Debian 12: 1.15.1) and libheif-rs.
//!
//! What must stay true:
//! - [`probe`] reads the container only (libheif parses boxes, no image data is decoded)
//!   and reports the primary image's size as shown (libheif applies `irot`/`imir` itself,
//!   so the orientation is 1); the caller checks it against the pixel limit before
//!   [`decode`], which checks it again;
//! - one decoding thread per image: the worker pool bounds concurrency, not libheif;
//! - the primary image only (no sequence, depth map or thumbnail), as 8-bit RGB or RGBA
//!   with its ICC profile when it has one, which the caller converts to sRGB like any
//!   other source's;
//! - libheif reports errors as values; a panic anywhere is caught by the caller.
//!
//! Built only with the `heif` feature (on by default); without it HEIC stays a clear 422.

use super::decode::DecodeError;
use super::options::ImageFormat;

#[cfg_attr(not(feature = "heif"), allow(dead_code))]
fn corrupt(reason: impl ToString) -> DecodeError {
    DecodeError::Corrupt {
        format: ImageFormat::Heic,
        reason: reason.to_string(),
    }
}

#[cfg(feature = "heif")]
mod imp {
    use std::sync::LazyLock;

    use image::{DynamicImage, RgbImage, RgbaImage};
    use libheif_rs::{ColorSpace, HeifContext, ImageHandle, LibHeif, RgbChroma};

    use super::{DecodeError, corrupt};

    static LIBHEIF: LazyLock<LibHeif> = LazyLock::new(LibHeif::new);

    fn primary(ctx: &HeifContext<'_>) -> Result<ImageHandle, DecodeError> {
        ctx.primary_image_handle().map_err(corrupt)
    }

    pub fn probe(bytes: &[u8]) -> Result<(u32, u32, bool), DecodeError> {
        LazyLock::force(&LIBHEIF);
        let ctx = HeifContext::read_from_bytes(bytes).map_err(corrupt)?;
        let handle = primary(&ctx)?;
        Ok((handle.width(), handle.height(), handle.has_alpha_channel()))
    }

    pub fn decode(
        bytes: &[u8],
        max_pixels: u64,
    ) -> Result<(DynamicImage, Option<Vec<u8>>), DecodeError> {
        let lib = &*LIBHEIF;
        let mut ctx = HeifContext::read_from_bytes(bytes).map_err(corrupt)?;
        ctx.set_max_decoding_threads(1);
        let handle = primary(&ctx)?;
        let (w, h) = (handle.width(), handle.height());
        let pixels = u64::from(w) * u64::from(h);
        if pixels > max_pixels {
            return Err(DecodeError::OverLimit {
                pixels,
                limit: max_pixels,
            });
        }
        let alpha = handle.has_alpha_channel();
        let chroma = if alpha {
            RgbChroma::Rgba
        } else {
            RgbChroma::Rgb
        };
        let image = lib
            .decode(&handle, ColorSpace::Rgb(chroma), None)
            .map_err(corrupt)?;
        // libheif sizes the picture from the coded stream, which a damaged or hostile
        // file may make disagree with the header checked above.
        let (dw, dh) = (image.width(), image.height());
        if (dw, dh) != (w, h) {
            return Err(corrupt(format!(
                "the image data is {dw}x{dh}, its header says {w}x{h}"
            )));
        }
        let planes = image.planes();
        let plane = planes
            .interleaved
            .ok_or_else(|| corrupt("libheif returned no interleaved plane"))?;
        let channels: usize = if alpha { 4 } else { 3 };
        let row = plane.width as usize * channels;
        // 8 bits per channel, `channels` channels per stored pixel.
        if plane.bits_per_pixel != 8
            || usize::from(plane.storage_bits_per_pixel) != channels * 8
            || plane.stride < row
        {
            return Err(corrupt(format!(
                "unexpected pixel layout ({} of {} bits per pixel)",
                plane.bits_per_pixel, plane.storage_bits_per_pixel
            )));
        }
        let mut px = Vec::with_capacity(row * plane.height as usize);
        for y in 0..plane.height as usize {
            let start = y * plane.stride;
            let line = plane
                .data
                .get(start..start + row)
                .ok_or_else(|| corrupt("short pixel plane"))?;
            px.extend_from_slice(line);
        }
        let picture = if alpha {
            RgbaImage::from_raw(plane.width, plane.height, px).map(DynamicImage::ImageRgba8)
        } else {
            RgbImage::from_raw(plane.width, plane.height, px).map(DynamicImage::ImageRgb8)
        }
        .ok_or_else(|| corrupt("pixel buffer size"))?;
        let icc = handle.color_profile_raw().and_then(|p| {
            // `prof`/`rICC` carry an ICC profile; an `nclx` box is not one.
            (p.data.len() > 128 && p.data.get(36..40) == Some(b"acsp")).then_some(p.data)
        });
        Ok((picture, icc))
    }
}

#[cfg(not(feature = "heif"))]
mod imp {
    use image::DynamicImage;

    use super::{DecodeError, ImageFormat};

    pub fn probe(_: &[u8]) -> Result<(u32, u32, bool), DecodeError> {
        Err(DecodeError::NotSupportedYet(ImageFormat::Heic))
    }

    pub fn decode(_: &[u8], _: u64) -> Result<(DynamicImage, Option<Vec<u8>>), DecodeError> {
        Err(DecodeError::NotSupportedYet(ImageFormat::Heic))
    }
}

/// Width, height (as shown) and whether there is alpha, from the container alone.
pub fn probe(bytes: &[u8]) -> Result<(u32, u32, bool), DecodeError> {
    imp::probe(bytes)
}

/// The primary image as 8-bit RGB or RGBA, and the ICC profile its pixels are in.
pub fn decode(
    bytes: &[u8],
    max_pixels: u64,
) -> Result<(image::DynamicImage, Option<Vec<u8>>), DecodeError> {
    imp::decode(bytes, max_pixels)
}
