//! What `/info/...` says about a source (a step past imgproxy OSS, whose info endpoint is in
//! the paid edition): its size, format, frame count and orientation, its dominant colour,
//! and a ThumbHash placeholder, both as the hash and as a tiny PNG data URL a page can show
//! while the image loads.
//!
//! What must stay true:
//! - the source passes the same pixel limit as a render before anything is decoded, and it
//!   is decoded small (JPEG at 1/8 when that still leaves 100 px) then fitted into 100×100,
//!   ThumbHash's own bound, so an info request costs a fraction of a render;
//! - width and height are as the image shows, after EXIF orientation;
//! - the dominant colour is the mean of the most common colour cell (4 bits a channel) of
//!   the opaque pixels, not the average, which a two-colour image would turn into neither.
//!
//! Pure: bytes in, [`Info`] out.

use base64::Engine;
use serde::Serialize;

use super::decode::{self, DecodeError, DecodeOptions, Probe};
use super::negotiate::mime_type;

/// ThumbHash's bound on its input, a side.
const THUMB: u32 = 100;

/// Why no info could be made.
#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("cannot make the placeholder: {0}")]
    Placeholder(String),
}

/// The JSON body of an info answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Info {
    pub width: u32,
    pub height: u32,
    pub format: &'static str,
    pub mime: &'static str,
    pub bytes: u64,
    pub frames: u32,
    /// The EXIF orientation (1 when there is none); `width` and `height` already apply it.
    pub orientation: u8,
    pub has_alpha: bool,
    /// `#rrggbb`.
    pub dominant_color: String,
    /// The ThumbHash, base64 (standard alphabet, padded).
    pub thumbhash: String,
    /// The ThumbHash rendered: `data:image/png;base64,...`, ready for a CSS background.
    pub placeholder: String,
}

/// Describes the source `bytes` (already probed as `probe`, and within the caller's limit).
pub fn describe(bytes: &[u8], probe: &Probe, max_pixels: u64) -> Result<Info, InfoError> {
    let (w, h) = probe.oriented_size();
    let longest = f64::from(w.max(h).max(1));
    let opts = DecodeOptions {
        shrink: (f64::from(THUMB) / longest).min(1.0),
        auto_rotate: true,
        max_frames: 1,
        max_pixels,
    };
    let decoded = decode::decode(bytes, probe, &opts)?;
    let frame = decoded
        .picture
        .frames
        .into_iter()
        .next()
        .ok_or_else(|| InfoError::Placeholder("no frames".into()))?;
    let rgba = frame.image.to_rgba8();
    let (tw, th) = fit(rgba.width(), rgba.height());
    let small = if (tw, th) == rgba.dimensions() {
        rgba.into_raw()
    } else {
        super::transform::resize_rgba(&rgba, tw, th)
            .map_err(|e| InfoError::Placeholder(e.to_string()))?
            .into_raw()
    };
    let hash = thumbhash::rgba_to_thumb_hash(tw as usize, th as usize, &small);
    let placeholder = placeholder_png(&hash)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(Info {
        width: w,
        height: h,
        format: probe.format.as_str(),
        mime: mime_type(probe.format),
        bytes: bytes.len() as u64,
        frames: probe.frames.max(1),
        orientation: probe.orientation,
        has_alpha: probe.has_alpha.unwrap_or(false),
        dominant_color: dominant(&small),
        thumbhash: b64.encode(&hash),
        placeholder: format!("data:image/png;base64,{}", b64.encode(placeholder)),
    })
}

/// `w × h` fitted into 100×100 (never enlarged), at least 1×1.
fn fit(w: u32, h: u32) -> (u32, u32) {
    let f = (f64::from(THUMB) / f64::from(w.max(h).max(1))).min(1.0);
    let side = |v: u32| ((f64::from(v) * f).round() as u32).clamp(1, THUMB);
    (side(w), side(h))
}

/// The mean colour of the most common 4-bit-a-channel cell among pixels at least half
/// opaque (all pixels when none is), as `#rrggbb`.
pub fn dominant(rgba: &[u8]) -> String {
    let opaque = rgba.chunks_exact(4).any(|p| p[3] >= 128);
    let mut cells = vec![(0u32, [0u64; 3]); 4096];
    for p in rgba.chunks_exact(4).filter(|p| !opaque || p[3] >= 128) {
        let i =
            (usize::from(p[0] >> 4) << 8) | (usize::from(p[1] >> 4) << 4) | usize::from(p[2] >> 4);
        if let Some(c) = cells.get_mut(i) {
            c.0 += 1;
            for (sum, v) in c.1.iter_mut().zip(&p[..3]) {
                *sum += u64::from(*v);
            }
        }
    }
    let (n, sums) = cells
        .iter()
        .max_by_key(|(n, _)| *n)
        .copied()
        .unwrap_or_default();
    let mean = |s: u64| u8::try_from(s / u64::from(n.max(1))).unwrap_or(u8::MAX);
    format!(
        "#{:02x}{:02x}{:02x}",
        mean(sums[0]),
        mean(sums[1]),
        mean(sums[2])
    )
}

/// The ThumbHash decoded into a small PNG (as ThumbHash's `thumbHashToDataURL` does).
fn placeholder_png(hash: &[u8]) -> Result<Vec<u8>, InfoError> {
    let (w, h, rgba) = thumbhash::thumb_hash_to_rgba(hash)
        .map_err(|()| InfoError::Placeholder("the hash does not decode".into()))?;
    let img = image::RgbaImage::from_raw(w as u32, h as u32, rgba)
        .ok_or_else(|| InfoError::Placeholder("buffer size".into()))?;
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgba8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| InfoError::Placeholder(e.to_string()))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::decode::tests::read;

    #[test]
    fn a_photo_gets_its_size_a_colour_and_a_placeholder_that_decodes() {
        let bytes = read("rocket-640x427.jpg");
        let probe = decode::probe(&bytes).unwrap();
        let info = describe(&bytes, &probe, 50_000_000).unwrap();
        assert_eq!(
            (info.width, info.height, info.format, info.frames),
            (640, 427, "jpeg", 1)
        );
        assert_eq!(info.bytes, bytes.len() as u64);
        assert!(info.dominant_color.starts_with('#') && info.dominant_color.len() == 7);
        let hash = base64::engine::general_purpose::STANDARD
            .decode(&info.thumbhash)
            .unwrap();
        let ratio = thumbhash::thumb_hash_to_approximate_aspect_ratio(&hash).unwrap();
        assert!((ratio - 640.0 / 427.0).abs() < 0.2, "{ratio}");
        let png = info
            .placeholder
            .strip_prefix("data:image/png;base64,")
            .unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(png)
            .unwrap();
        let img = image::load_from_memory(&png).unwrap();
        assert!(
            img.width() > img.height(),
            "{}x{}",
            img.width(),
            img.height()
        );
    }

    #[test]
    fn the_dominant_colour_is_the_commonest_not_the_average() {
        // 70% red, 30% blue: red, where the average would be a purple no pixel has.
        let mut px = Vec::new();
        for i in 0..100 {
            px.extend_from_slice(if i < 70 {
                &[250, 10, 10, 255]
            } else {
                &[10, 10, 250, 255]
            });
        }
        assert_eq!(dominant(&px), "#fa0a0a");
        // Transparent pixels do not count while opaque ones exist.
        px.extend_from_slice(&[0, 255, 0, 0].repeat(500));
        assert_eq!(dominant(&px), "#fa0a0a");
        assert_eq!(dominant(&[]), "#000000");
    }

    #[test]
    fn orientation_and_tiny_images() {
        let bytes = read("edge-orientation6-shows-1920x1280.jpg");
        let probe = decode::probe(&bytes).unwrap();
        let info = describe(&bytes, &probe, 50_000_000).unwrap();
        assert_eq!(info.orientation, 6);
        assert_eq!((info.width, info.height), (1920, 1280), "as it shows");
        assert_eq!(fit(1, 1), (1, 1));
        assert_eq!(fit(10_000, 1), (100, 1));
    }
}
