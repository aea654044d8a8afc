//! Source images: [`probe`] reads a header, [`decode`] turns bytes into a [`Picture`].
//!
//! What must stay true:
//! - The format is sniffed from magic bytes, never from a file name.
//! - [`probe`] parses headers only (its own small parsers for JPEG, PNG, GIF, WebP, BMP,
//!   AVIF/HEIF; the image crate's header reader for TIFF) and never allocates a pixel
//!   buffer: it is the hostile-input gate, so the caller refuses
//!   `width × height × frames` over its limit before anything is decoded.
//! - [`decode`] checks the pixel limit again against the decoder's own header (the second
//!   line of defence) and returns pixels as [`Picture`] requires: 8-bit sRGB, `Rgb8` for
//!   opaque sources and `Rgba8` for sources with alpha, upright when auto-rotate is asked.
//! - No input makes this module panic or hang: mozjpeg reports errors by unwinding, so
//!   every call into it runs inside `catch_unwind`; so do all other decoders and the
//!   header parsers, so that a codec bug is a `Corrupt` error, never a crashed worker.
//!
//! GIF frames are counted by walking the block structure (sub-block lengths only, no LZW
//! decoding); WebP frames by counting `ANMF` chunks. A truncated GIF counts the frame it
//! stops in, so the count is an upper bound of what decoding can produce. APNG is decoded
//! as its default image (one frame). AVIF and HEIF sizes come from their `ispe` boxes
//! (the largest one, an upper bound for grids; width and height swapped when AVIF's `irot`
//! turns the image by a quarter). AVIF is decoded by `avif` (dav1d); HEIC/HEIF is probed
//! and decoded by `heif` (libheif, which reads its own container).
//! SVG is sized and drawn by `svg`: its probe reads the root's start tag only (no parse,
//! so no cost before a worker is taken); decoding sanitises and parses the document.

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use image::codecs::bmp::BmpDecoder;
use image::codecs::gif::GifDecoder;
use image::codecs::png::PngDecoder;
use image::codecs::tiff::TiffDecoder;
use image::codecs::webp::WebPDecoder;
use image::metadata::{LoopCount, Orientation};
use image::{AnimationDecoder, DynamicImage, ImageDecoder, Limits, RgbImage, RgbaImage};

use super::options::ImageFormat;
use super::picture::{Frame, Picture};

/// Why a source could not be probed or decoded. The HTTP layer maps `UnsupportedFormat`
/// and `NotSupportedYet` to 415/422, `Corrupt` to 422 and `OverLimit` to 422 (all the
/// client's or origin's fault, never ours).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are no image format we know.
    #[error("unsupported source format")]
    UnsupportedFormat,
    /// A format we recognise but cannot decode (ICO; HEIC in a build without `heif`).
    #[error("{} is not supported yet", name(*.0))]
    NotSupportedYet(ImageFormat),
    /// The data is damaged, truncated or inconsistent.
    #[error("corrupt {} data: {reason}", name(*format))]
    Corrupt { format: ImageFormat, reason: String },
    /// The image has more pixels (width × height × frames) than allowed.
    #[error("source has {pixels} pixels, over the limit of {limit}")]
    OverLimit { pixels: u64, limit: u64 },
}

fn name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Jxl => "JPEG XL",
        ImageFormat::Png => "PNG",
        ImageFormat::Webp => "WebP",
        ImageFormat::Gif => "GIF",
        ImageFormat::Ico => "ICO",
        ImageFormat::Svg => "SVG",
        ImageFormat::Heic => "HEIC",
        ImageFormat::Avif => "AVIF",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Tiff => "TIFF",
    }
}

fn corrupt(format: ImageFormat, reason: impl Into<String>) -> DecodeError {
    DecodeError::Corrupt {
        format,
        reason: reason.into(),
    }
}

/// What a header says, before any pixel is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub format: ImageFormat,
    /// Stored width (before EXIF orientation).
    pub width: u32,
    /// Stored height (before EXIF orientation).
    pub height: u32,
    /// Frames [`decode`] can produce (1 for still images; an upper bound for GIF).
    pub frames: u32,
    /// EXIF orientation 1..=8 (1 when absent or invalid).
    pub orientation: u8,
    /// Whether the source has an alpha channel, when the header tells.
    pub has_alpha: Option<bool>,
}

impl Probe {
    /// `width × height × frames`: what the caller compares with its limit (saturating: a
    /// header may claim more than a `u64` holds).
    pub fn pixels(&self) -> u64 {
        (u64::from(self.width) * u64::from(self.height))
            .saturating_mul(u64::from(self.frames.max(1)))
    }

    /// Size after auto-rotation (width and height swap for orientations 5..=8).
    pub fn oriented_size(&self) -> (u32, u32) {
        if self.orientation >= 5 {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

/// How to decode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeOptions {
    /// The factor the image will be shrunk by afterwards (0 < shrink ≤ 1; 1 = full size).
    /// JPEG uses the largest DCT scale 1/d (d in 2, 4, 8) with 1/d ≥ shrink. SVG is drawn
    /// at `shrink` times its intrinsic size, whatever the factor (above 1 too), within
    /// `max_pixels`.
    pub shrink: f64,
    /// Apply the EXIF orientation.
    pub auto_rotate: bool,
    /// Frames to decode at most (1 = the first frame only).
    pub max_frames: u32,
    /// Largest `width × height × decoded frames` accepted (source pixels).
    pub max_pixels: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            shrink: 1.0,
            auto_rotate: true,
            max_frames: 1,
            max_pixels: 50_000_000,
        }
    }
}

/// A decoded source and what was done on the way.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub picture: Picture,
    /// The EXIF orientation applied to the pixels (1 = none was applied).
    pub orientation: u8,
    /// The JPEG shrink-on-load denominator used: 1, 2, 4 or 8 (1 for other formats).
    pub scale_denom: u8,
}

// ---------------------------------------------------------------------------------
// Sniffing and probing
// ---------------------------------------------------------------------------------

/// How far into a file `<svg` is looked for: past an XML declaration, a generator's
/// comment and a DOCTYPE with entity declarations (Illustrator writes a dozen).
pub const SVG_SNIFF_BYTES: usize = 4096;

/// The format from magic bytes, or `None`.
pub fn sniff(b: &[u8]) -> Option<ImageFormat> {
    if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Some(ImageFormat::Jpeg);
    }
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some(ImageFormat::Png);
    }
    if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        return Some(ImageFormat::Gif);
    }
    if b.len() >= 12 && &b[0..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        return Some(ImageFormat::Webp);
    }
    if b.starts_with(b"BM") && b.len() >= 26 {
        return Some(ImageFormat::Bmp);
    }
    if b.starts_with(b"II*\0") || b.starts_with(b"MM\0*") {
        return Some(ImageFormat::Tiff);
    }
    if b.len() >= 12 && &b[4..8] == b"ftyp" {
        return iso_brand(b);
    }
    if b.starts_with(&[0xFF, 0x0A]) || b.starts_with(b"\0\0\0\x0CJXL \r\n\x87\n") {
        return Some(ImageFormat::Jxl);
    }
    if b.starts_with(&[0, 0, 1, 0]) && b.len() >= 22 {
        return Some(ImageFormat::Ico);
    }
    let head = &b[..b.len().min(SVG_SNIFF_BYTES)];
    if head.windows(4).any(|w| w == b"<svg") {
        return Some(ImageFormat::Svg);
    }
    None
}

/// AVIF or HEIC from an ISO-BMFF `ftyp` box (major brand, then compatible brands).
fn iso_brand(b: &[u8]) -> Option<ImageFormat> {
    // The compatible brands: from offset 16 to the end of the box, within the first 4 KiB.
    let end = usize::try_from(be32(b, 0)?).ok()?.min(b.len()).min(4096);
    let compatible = b.get(16..end).unwrap_or_default();
    let mut brands = std::iter::once(b.get(8..12)?).chain(compatible.chunks_exact(4));
    let mut heic = false;
    for brand in &mut brands {
        match brand {
            b"avif" | b"avis" => return Some(ImageFormat::Avif),
            b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" | b"mif1" | b"msf1" => {
                heic = true;
            }
            _ => {}
        }
    }
    heic.then_some(ImageFormat::Heic)
}

fn be16(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

fn le16(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

fn le24(b: &[u8], i: usize) -> Option<u32> {
    let s = b.get(i..i + 3)?;
    Some(u32::from(s[0]) | u32::from(s[1]) << 8 | u32::from(s[2]) << 16)
}

fn le32(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

/// EXIF orientation from a TIFF-structured EXIF blob (with or without `Exif\0\0`).
fn exif_orientation(exif: &[u8]) -> u8 {
    let tiff = exif.strip_prefix(b"Exif\0\0").unwrap_or(exif);
    Orientation::from_exif_chunk(tiff).map_or(1, Orientation::to_exif)
}

/// Reads the header and says what the image is, without decoding pixels.
pub fn probe(bytes: &[u8]) -> Result<Probe, DecodeError> {
    let format = sniff(bytes).ok_or(DecodeError::UnsupportedFormat)?;
    guarded(format, || probe_format(bytes, format))
}

/// Runs `f`, turning a panic (a codec's unwinding error report, or a bug) into `Corrupt`.
fn guarded<T>(
    format: ImageFormat,
    f: impl FnOnce() -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "decoder failure".to_string());
        Err(corrupt(format, msg))
    })
}

fn probe_format(bytes: &[u8], format: ImageFormat) -> Result<Probe, DecodeError> {
    let p = match format {
        ImageFormat::Jpeg => probe_jpeg(bytes),
        ImageFormat::Png => probe_png(bytes),
        ImageFormat::Gif => walk_gif(bytes).map(|g| g.probe),
        ImageFormat::Webp => walk_webp(bytes).map(|w| w.probe),
        ImageFormat::Bmp => probe_bmp(bytes),
        ImageFormat::Tiff => probe_tiff(bytes),
        ImageFormat::Avif => probe_isobmff(bytes, format),
        ImageFormat::Heic => super::heif::probe(bytes)
            .map(|(w, h, alpha)| still(ImageFormat::Heic, w, h, Some(alpha))),
        ImageFormat::Jxl => {
            super::jxl::probe(bytes).map(|(w, h, alpha)| still(ImageFormat::Jxl, w, h, Some(alpha)))
        }
        ImageFormat::Svg => {
            super::svg::probe(bytes).map(|(w, h)| still(ImageFormat::Svg, w, h, Some(true)))
        }
        other => Err(DecodeError::NotSupportedYet(other)),
    }?;
    if p.width == 0 || p.height == 0 {
        return Err(corrupt(format, "zero width or height"));
    }
    Ok(p)
}

fn still(format: ImageFormat, width: u32, height: u32, has_alpha: Option<bool>) -> Probe {
    Probe {
        format,
        width,
        height,
        frames: 1,
        orientation: 1,
        has_alpha,
    }
}

fn probe_jpeg(b: &[u8]) -> Result<Probe, DecodeError> {
    let f = ImageFormat::Jpeg;
    let mut i = 2;
    let mut orientation = None;
    let mut size = None;
    loop {
        // Skip to the next marker (tolerating fill bytes and stray data, as libjpeg does).
        while i < b.len() && b[i] != 0xFF {
            i += 1;
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        let Some(&m) = b.get(i) else { break };
        i += 1;
        match m {
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            0xD9 | 0xDA => break,
            _ => {}
        }
        let len = usize::from(be16(b, i).ok_or_else(|| corrupt(f, "truncated header"))?);
        if len < 2 {
            return Err(corrupt(f, "bad segment length"));
        }
        let seg = &b[(i + 2).min(b.len())..(i + len).min(b.len())];
        match m {
            0xE1 if orientation.is_none() && seg.starts_with(b"Exif\0\0") => {
                orientation = Some(exif_orientation(seg));
            }
            0xC0..=0xCF if !matches!(m, 0xC4 | 0xC8 | 0xCC) && size.is_none() => {
                let (Some(h), Some(w)) = (be16(seg, 1), be16(seg, 3)) else {
                    return Err(corrupt(f, "truncated frame header"));
                };
                size = Some((u32::from(w), u32::from(h)));
            }
            _ => {}
        }
        i += len;
    }
    let (width, height) = size.ok_or_else(|| corrupt(f, "no frame header"))?;
    Ok(Probe {
        orientation: orientation.unwrap_or(1),
        ..still(f, width, height, Some(false))
    })
}

fn probe_png(b: &[u8]) -> Result<Probe, DecodeError> {
    let f = ImageFormat::Png;
    if b.get(12..16) != Some(b"IHDR") {
        return Err(corrupt(f, "missing IHDR"));
    }
    let (Some(width), Some(height), Some(&color)) = (be32(b, 16), be32(b, 20), b.get(25)) else {
        return Err(corrupt(f, "truncated IHDR"));
    };
    if width > i32::MAX as u32 || height > i32::MAX as u32 {
        return Err(corrupt(f, "dimensions out of range"));
    }
    let mut alpha = matches!(color, 4 | 6);
    let mut orientation = 1;
    // Chunks before the image data: tRNS (alpha) and eXIf (orientation).
    let mut i = 8;
    while let (Some(len), Some(kind)) = (be32(b, i), b.get(i + 4..i + 8)) {
        let data = b.get(i + 8..(i + 8).saturating_add(len as usize));
        match kind {
            b"IDAT" | b"IEND" => break,
            b"tRNS" => alpha = true,
            b"eXIf" => orientation = data.map_or(1, exif_orientation),
            _ => {}
        }
        i = i.saturating_add(12).saturating_add(len as usize);
    }
    Ok(Probe {
        orientation,
        ..still(f, width, height, Some(alpha))
    })
}

/// What walking a GIF's blocks finds.
struct GifWalk {
    probe: Probe,
}

fn walk_gif(b: &[u8]) -> Result<GifWalk, DecodeError> {
    let f = ImageFormat::Gif;
    let (Some(width), Some(height), Some(&flags)) = (le16(b, 6), le16(b, 8), b.get(10)) else {
        return Err(corrupt(f, "truncated header"));
    };
    let mut i = 13;
    if flags & 0x80 != 0 {
        i += 3 << ((flags & 7) + 1);
    }
    // Skips a chain of data sub-blocks starting at `i`; `None` when truncated.
    let skip_sub_blocks = |mut i: usize| -> Option<usize> {
        loop {
            let n = usize::from(*b.get(i)?);
            i += 1 + n;
            if n == 0 {
                return Some(i);
            }
        }
    };
    let mut frames = 0u32;
    let mut alpha = false;
    loop {
        match b.get(i) {
            Some(0x21) => {
                let label = b.get(i + 1).copied();
                if label == Some(0xF9) && b.get(i + 3).is_some_and(|p| p & 1 != 0) {
                    alpha = true;
                }
                match skip_sub_blocks(i + 2) {
                    Some(next) => i = next,
                    None => break,
                }
            }
            Some(0x2C) => {
                frames += 1;
                let Some(&lflags) = b.get(i + 9) else { break };
                i += 10;
                if lflags & 0x80 != 0 {
                    i += 3 << ((lflags & 7) + 1);
                }
                // LZW minimum code size, then the data sub-blocks.
                match skip_sub_blocks(i + 1) {
                    Some(next) => i = next,
                    None => break,
                }
            }
            // Trailer, end of data, or garbage: stop counting.
            _ => break,
        }
    }
    if frames == 0 {
        return Err(corrupt(f, "no image in the file"));
    }
    Ok(GifWalk {
        probe: Probe {
            frames,
            ..still(f, u32::from(width), u32::from(height), Some(alpha))
        },
    })
}

struct WebpWalk {
    probe: Probe,
}

fn walk_webp(b: &[u8]) -> Result<WebpWalk, DecodeError> {
    let f = ImageFormat::Webp;
    let truncated = || corrupt(f, "truncated header");
    let kind = b.get(12..16).ok_or_else(truncated)?;
    let data = b.get(20..).ok_or_else(truncated)?;
    match kind {
        b"VP8 " => {
            if data.get(3..6) != Some(&[0x9d, 0x01, 0x2a]) {
                return Err(corrupt(f, "bad VP8 start code"));
            }
            let (w, h) = (
                le16(data, 6).ok_or_else(truncated)?,
                le16(data, 8).ok_or_else(truncated)?,
            );
            Ok(WebpWalk {
                probe: still(f, u32::from(w & 0x3fff), u32::from(h & 0x3fff), Some(false)),
            })
        }
        b"VP8L" => {
            if data.first() != Some(&0x2f) {
                return Err(corrupt(f, "bad VP8L signature"));
            }
            let bits = le32(data, 1).ok_or_else(truncated)?;
            let w = (bits & 0x3fff) + 1;
            let h = ((bits >> 14) & 0x3fff) + 1;
            let alpha = (bits >> 28) & 1 == 1;
            Ok(WebpWalk {
                probe: still(f, w, h, Some(alpha)),
            })
        }
        b"VP8X" => {
            let flags = *data.first().ok_or_else(truncated)?;
            let w = le24(data, 4).ok_or_else(truncated)? + 1;
            let h = le24(data, 7).ok_or_else(truncated)? + 1;
            let animated = flags & 0x02 != 0;
            let mut frames = 0u32;
            let mut orientation = 1;
            let mut i = 12usize;
            while let (Some(kind), Some(len)) = (b.get(i..i + 4), le32(b, i + 4)) {
                let len = len as usize;
                match kind {
                    b"ANMF" => frames += 1,
                    b"EXIF" => {
                        if let Some(exif) = b.get(i + 8..(i + 8).saturating_add(len)) {
                            orientation = exif_orientation(exif);
                        }
                    }
                    _ => {}
                }
                i = i.saturating_add(8).saturating_add(len + (len & 1));
            }
            if !animated || frames == 0 {
                frames = 1;
            }
            Ok(WebpWalk {
                probe: Probe {
                    frames,
                    orientation,
                    ..still(f, w, h, Some(flags & 0x10 != 0))
                },
            })
        }
        _ => Err(corrupt(f, "unknown WebP chunk")),
    }
}

fn probe_bmp(b: &[u8]) -> Result<Probe, DecodeError> {
    let f = ImageFormat::Bmp;
    let truncated = || corrupt(f, "truncated header");
    let header = le32(b, 14).ok_or_else(truncated)?;
    let (w, h, bpp) = if header == 12 {
        let w = i64::from(le16(b, 18).ok_or_else(truncated)?);
        let h = i64::from(le16(b, 20).ok_or_else(truncated)?);
        (w, h, le16(b, 24).ok_or_else(truncated)?)
    } else {
        let w = i64::from(le32(b, 18).ok_or_else(truncated)? as i32);
        let h = i64::from(le32(b, 22).ok_or_else(truncated)? as i32);
        (w, h, le16(b, 28).ok_or_else(truncated)?)
    };
    let (Ok(w), Ok(h)) = (u32::try_from(w.abs()), u32::try_from(h.abs())) else {
        return Err(corrupt(f, "dimensions out of range"));
    };
    Ok(still(f, w, h, (bpp != 32).then_some(false)))
}

fn probe_tiff(b: &[u8]) -> Result<Probe, DecodeError> {
    let f = ImageFormat::Tiff;
    let mut d = TiffDecoder::new(Cursor::new(b)).map_err(|e| image_error(f, e))?;
    let (w, h) = d.dimensions();
    let alpha = d.color_type().has_alpha();
    let orientation = d.orientation().map_or(1, Orientation::to_exif);
    Ok(Probe {
        orientation,
        ..still(f, w, h, Some(alpha))
    })
}

/// AVIF/HEIF: the largest `ispe` (image spatial extents) in `meta/iprp/ipco`.
fn probe_isobmff(b: &[u8], f: ImageFormat) -> Result<Probe, DecodeError> {
    use super::avif::boxes;
    let end = b.len();
    let mut best: Option<(u32, u32)> = None;
    for (kind, s, e) in boxes(b, 0, end) {
        if &kind != b"meta" {
            continue;
        }
        // `meta` is a full box: 4 bytes of version and flags first.
        for (kind, s, e) in boxes(b, s + 4, e) {
            if &kind != b"iprp" {
                continue;
            }
            for (kind, s, e) in boxes(b, s, e) {
                if &kind != b"ipco" {
                    continue;
                }
                for (kind, s, _) in boxes(b, s, e) {
                    if &kind == b"ispe"
                        && let (Some(w), Some(h)) = (be32(b, s + 4), be32(b, s + 8))
                    {
                        let (bw, bh) = best.unwrap_or((0, 0));
                        best = Some((bw.max(w), bh.max(h)));
                    }
                }
            }
        }
    }
    let (w, h) = best.ok_or_else(|| corrupt(f, "no image size (ispe) found"))?;
    if f == ImageFormat::Avif && super::avif::turns_quarter(b) {
        return Ok(still(f, h, w, None));
    }
    Ok(still(f, w, h, None))
}

// ---------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------

/// Decodes `bytes` (already probed) into an sRGB [`Picture`].
pub fn decode(bytes: &[u8], probe: &Probe, opts: &DecodeOptions) -> Result<Decoded, DecodeError> {
    guarded(probe.format, || decode_format(bytes, probe, opts))
}

fn decode_format(
    bytes: &[u8],
    probe: &Probe,
    opts: &DecodeOptions,
) -> Result<Decoded, DecodeError> {
    if probe.format == ImageFormat::Svg {
        return decode_svg(bytes, probe, opts);
    }
    let max_frames = opts.max_frames.max(1);
    check_limit(
        probe.width,
        probe.height,
        probe.frames.min(max_frames),
        opts,
    )?;
    let (mut picture, scale_denom) = match probe.format {
        ImageFormat::Jpeg => {
            let (image, icc, denom) = decode_jpeg(bytes, opts)?;
            let mut p = Picture::still(image);
            p.icc = icc;
            (p, denom)
        }
        ImageFormat::Png | ImageFormat::Bmp | ImageFormat::Tiff => {
            (decode_still(bytes, probe.format, opts)?, 1)
        }
        ImageFormat::Gif => (decode_gif(bytes, opts)?, 1),
        ImageFormat::Webp => (decode_webp(bytes, opts)?, 1),
        ImageFormat::Avif => (decode_avif(bytes, opts)?, 1),
        // Both hand back one 8-bit picture and the profile its pixels are in.
        ImageFormat::Heic | ImageFormat::Jxl => {
            let decode = if probe.format == ImageFormat::Heic {
                super::heif::decode
            } else {
                super::jxl::decode
            };
            let (image, icc) = decode(bytes, opts.max_pixels)?;
            let mut p = Picture::still(normalise(image, icc.as_deref()));
            p.icc = icc;
            (p, 1)
        }
        other => return Err(DecodeError::NotSupportedYet(other)),
    };
    let mut orientation = 1;
    if opts.auto_rotate
        && probe.orientation != 1
        && let Some(o) = Orientation::from_exif(probe.orientation)
    {
        for frame in &mut picture.frames {
            frame.image.apply_orientation(o);
        }
        orientation = probe.orientation;
    }
    Ok(Decoded {
        picture,
        orientation,
        scale_denom,
    })
}

/// An SVG drawn at `shrink` times its intrinsic size (any factor: a vector source is
/// drawn at the size the result needs), scaled down when that would pass the pixel limit.
fn decode_svg(bytes: &[u8], probe: &Probe, opts: &DecodeOptions) -> Result<Decoded, DecodeError> {
    let shrink = if opts.shrink.is_finite() && opts.shrink > 0.0 {
        opts.shrink
    } else {
        1.0
    };
    let (w, h) = (f64::from(probe.width), f64::from(probe.height));
    let scale = super::geometry::scale_within_pixels(w, h, shrink, opts.max_pixels.max(1));
    let side = |v: f64| ((v * scale).floor() as u32).clamp(1, super::geometry::MAX_DIMENSION);
    let image = super::svg::rasterize(bytes, side(w), side(h))?;
    Ok(Decoded {
        picture: Picture::still(image),
        orientation: 1,
        scale_denom: 1,
    })
}

fn check_limit(
    width: u32,
    height: u32,
    frames: u32,
    opts: &DecodeOptions,
) -> Result<(), DecodeError> {
    let pixels = u64::from(width) * u64::from(height) * u64::from(frames.max(1));
    if pixels > opts.max_pixels {
        return Err(DecodeError::OverLimit {
            pixels,
            limit: opts.max_pixels,
        });
    }
    Ok(())
}

/// The libjpeg scale denominator for a shrink factor: the largest d in 1, 2, 4, 8 with
/// 1/d ≥ shrink, so the decoded image is never smaller than what is needed.
pub fn jpeg_scale_denom(shrink: f64) -> u8 {
    if !shrink.is_finite() || shrink <= 0.0 {
        return 1;
    }
    // A hair of tolerance so that 0.25 computed as 640/2560 still picks 4.
    let s = shrink - 1e-9;
    [8u8, 4, 2]
        .into_iter()
        .find(|&d| 1.0 / f64::from(d) >= s)
        .unwrap_or(1)
}

/// What the mozjpeg closure hands back.
type JpegOut = (DynamicImage, Option<Vec<u8>>, u8);

fn decode_jpeg(bytes: &[u8], opts: &DecodeOptions) -> Result<JpegOut, DecodeError> {
    let f = ImageFormat::Jpeg;
    let run = || -> Result<JpegOut, DecodeError> {
        use mozjpeg::{ColorSpace, Decompress, Marker};
        let io = |e: std::io::Error| corrupt(f, e.to_string());
        let mut d = Decompress::builder()
            .with_markers(&[Marker::APP(2), Marker::APP(14)])
            .from_mem(bytes)
            .map_err(io)?;
        let (w, h) = d.size();
        check_limit(
            u32::try_from(w).unwrap_or(u32::MAX),
            u32::try_from(h).unwrap_or(u32::MAX),
            1,
            opts,
        )?;
        let denom = jpeg_scale_denom(opts.shrink);
        d.scale(8 / denom);
        let icc = jpeg_icc(&d);
        let adobe = d
            .markers()
            .any(|m| m.marker == Marker::APP(14) && m.data.starts_with(b"Adobe"));
        let cmyk = matches!(d.color_space(), ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK);
        let image = if cmyk {
            let mut s = d.to_colorspace(ColorSpace::JCS_CMYK).map_err(io)?;
            let (w, h) = (s.width(), s.height());
            let samples: Vec<u8> = s.read_scanlines().map_err(io)?;
            s.finish().map_err(io)?;
            rgb_image(w, h, cmyk_to_rgb(samples, adobe, icc.as_deref()))?
        } else {
            // libjpeg converts YCbCr and grayscale to RGB itself.
            let mut s = d.rgb().map_err(io)?;
            let (w, h) = (s.width(), s.height());
            let mut rgb: Vec<u8> = s.read_scanlines().map_err(io)?;
            s.finish().map_err(io)?;
            if let Some(icc) = &icc {
                icc_to_srgb(&mut rgb, false, icc);
            }
            rgb_image(w, h, rgb)?
        };
        // A CMYK profile cannot describe the RGB pixels we return: do not keep it.
        Ok((image, if cmyk { None } else { icc }, denom))
    };
    // mozjpeg reports errors by unwinding: this catch is the one that matters.
    guarded(f, run)
}

fn rgb_image(w: usize, h: usize, rgb: Vec<u8>) -> Result<DynamicImage, DecodeError> {
    let (Ok(w), Ok(h)) = (u32::try_from(w), u32::try_from(h)) else {
        return Err(corrupt(ImageFormat::Jpeg, "dimensions out of range"));
    };
    RgbImage::from_raw(w, h, rgb)
        .map(DynamicImage::ImageRgb8)
        .ok_or_else(|| corrupt(ImageFormat::Jpeg, "short pixel buffer"))
}

/// The ICC profile from APP2 `ICC_PROFILE` markers, reassembled in sequence order.
fn jpeg_icc<R>(d: &mozjpeg::Decompress<R>) -> Option<Vec<u8>> {
    let mut parts: Vec<(u8, &[u8])> = d
        .markers()
        .filter(|m| m.marker == mozjpeg::Marker::APP(2))
        .filter_map(|m| {
            let rest = m.data.strip_prefix(b"ICC_PROFILE\0")?;
            Some((*rest.first()?, rest.get(2..)?))
        })
        .collect();
    if parts.is_empty() {
        return None;
    }
    parts.sort_by_key(|p| p.0);
    Some(
        parts
            .into_iter()
            .flat_map(|p| p.1.iter().copied())
            .collect(),
    )
}

/// CMYK (as libjpeg returns it) to RGB: through the embedded CMYK ICC profile when there
/// is one, else the naive formula. Adobe (Photoshop) writes inverted CMYK, so an APP14
/// `Adobe` marker means the samples are `255 - ink`.
fn cmyk_to_rgb(mut cmyk: Vec<u8>, adobe: bool, icc: Option<&[u8]>) -> Vec<u8> {
    let pixels = cmyk.len() / 4;
    if let Some(profile) = icc.and_then(|icc| moxcms::ColorProfile::new_from_slice(icc).ok())
        && profile.color_space == moxcms::DataColorSpace::Cmyk
    {
        let srgb = moxcms::ColorProfile::new_srgb();
        if let Ok(t) = profile.create_transform_8bit(
            moxcms::Layout::Rgba,
            &srgb,
            moxcms::Layout::Rgb,
            moxcms::TransformOptions::default(),
        ) {
            if adobe {
                cmyk.iter_mut().for_each(|v| *v = 255 - *v);
            }
            let mut rgb = vec![0u8; pixels * 3];
            if t.transform(&cmyk, &mut rgb).is_ok() {
                return rgb;
            }
            if adobe {
                cmyk.iter_mut().for_each(|v| *v = 255 - *v);
            }
        }
    }
    let mut rgb = Vec::with_capacity(pixels * 3);
    for p in cmyk.chunks_exact(4) {
        let [c, m, y, k] = if adobe {
            [p[0], p[1], p[2], p[3]]
        } else {
            [255 - p[0], 255 - p[1], 255 - p[2], 255 - p[3]]
        };
        // Now each value is "255 - ink": channel = (1 - ink) × (1 - black).
        let k = u32::from(k);
        for v in [c, m, y] {
            rgb.push(((u32::from(v) * k + 127) / 255) as u8);
        }
    }
    rgb
}

/// sRGB's colorants (D50-adapted), to recognise sRGB profiles and skip the transform.
pub(crate) fn is_srgb_like(p: &moxcms::ColorProfile) -> bool {
    let s = moxcms::ColorProfile::new_srgb();
    let near = |a: moxcms::Xyzd, b: moxcms::Xyzd| {
        (a.x - b.x).abs() < 0.003 && (a.y - b.y).abs() < 0.003 && (a.z - b.z).abs() < 0.003
    };
    near(p.red_colorant, s.red_colorant)
        && near(p.green_colorant, s.green_colorant)
        && near(p.blue_colorant, s.blue_colorant)
}

/// Converts RGB(A) pixels in place from an RGB ICC profile to sRGB. Profiles that are
/// not RGB, are sRGB already (by colorants), or cannot be parsed leave pixels as they are
/// (as browsers do).
fn icc_to_srgb(pixels: &mut [u8], alpha: bool, icc: &[u8]) {
    let Ok(profile) = moxcms::ColorProfile::new_from_slice(icc) else {
        return;
    };
    if profile.color_space != moxcms::DataColorSpace::Rgb || is_srgb_like(&profile) {
        return;
    }
    let layout = if alpha {
        moxcms::Layout::Rgba
    } else {
        moxcms::Layout::Rgb
    };
    let srgb = moxcms::ColorProfile::new_srgb();
    let Ok(t) = profile.create_transform_8bit(layout, &srgb, layout, Default::default()) else {
        return;
    };
    // Chunked through a small scratch buffer rather than a second full-size image.
    let px = if alpha { 4 } else { 3 };
    let mut scratch = vec![0u8; 16384 * px];
    for chunk in pixels.chunks_mut(16384 * px) {
        let out = &mut scratch[..chunk.len()];
        if t.transform(chunk, out).is_ok() {
            chunk.copy_from_slice(out);
        }
    }
}

fn image_error(f: ImageFormat, e: image::ImageError) -> DecodeError {
    match e {
        image::ImageError::Limits(l) => corrupt(f, format!("over the decoder's limits: {l}")),
        image::ImageError::Unsupported(u) => corrupt(f, format!("unsupported variant: {u}")),
        other => corrupt(f, other.to_string()),
    }
}

fn limits(opts: &DecodeOptions) -> Limits {
    let mut l = Limits::default();
    // 16-bit RGBA is the widest layout the decoders produce: 8 bytes a pixel.
    l.max_alloc = Some(opts.max_pixels.saturating_mul(8).max(64 << 20));
    l
}

/// Converts any layout the image crate produces to `Rgb8`/`Rgba8`, then to sRGB.
fn normalise(image: DynamicImage, icc: Option<&[u8]>) -> DynamicImage {
    let mut image = match image {
        DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_) => image,
        other if other.color().has_alpha() => DynamicImage::ImageRgba8(other.into_rgba8()),
        other => DynamicImage::ImageRgb8(other.into_rgb8()),
    };
    if let Some(icc) = icc {
        match &mut image {
            DynamicImage::ImageRgb8(b) => icc_to_srgb(b, false, icc),
            DynamicImage::ImageRgba8(b) => icc_to_srgb(b, true, icc),
            _ => {}
        }
    }
    image
}

fn decode_still(
    bytes: &[u8],
    f: ImageFormat,
    opts: &DecodeOptions,
) -> Result<Picture, DecodeError> {
    let err = |e| image_error(f, e);
    let cursor = Cursor::new(bytes);
    let (image, icc) = match f {
        ImageFormat::Png => {
            let mut d = PngDecoder::with_limits(cursor, limits(opts)).map_err(err)?;
            let (w, h) = d.dimensions();
            check_limit(w, h, 1, opts)?;
            let icc = d.icc_profile().ok().flatten();
            (DynamicImage::from_decoder(d).map_err(err)?, icc)
        }
        ImageFormat::Bmp => {
            let mut d = BmpDecoder::new(cursor).map_err(err)?;
            d.set_limits(limits(opts)).map_err(err)?;
            let (w, h) = d.dimensions();
            check_limit(w, h, 1, opts)?;
            (DynamicImage::from_decoder(d).map_err(err)?, None)
        }
        _ => {
            let mut d = TiffDecoder::new(cursor).map_err(err)?;
            d.set_limits(limits(opts)).map_err(err)?;
            let (w, h) = d.dimensions();
            check_limit(w, h, 1, opts)?;
            let icc = d.icc_profile().ok().flatten();
            (DynamicImage::from_decoder(d).map_err(err)?, icc)
        }
    };
    let mut p = Picture::still(normalise(image, icc.as_deref()));
    p.icc = icc;
    Ok(p)
}

fn loops(count: LoopCount) -> u16 {
    match count {
        LoopCount::Infinite => 0,
        LoopCount::Finite(n) => u16::try_from(n.get()).unwrap_or(u16::MAX),
    }
}

/// Collects up to `max` composited animation frames; frames that are all opaque become
/// `Rgb8` (GIF and WebP animations always decode to RGBA).
fn collect_frames(
    frames: image::Frames<'_>,
    max: u32,
    f: ImageFormat,
) -> Result<Vec<Frame>, DecodeError> {
    let mut out: Vec<(RgbaImage, u32)> = Vec::new();
    for frame in frames.take(max as usize) {
        let frame = frame.map_err(|e| image_error(f, e))?;
        let (n, d) = frame.delay().numer_denom_ms();
        let delay_ms = n.checked_div(d).unwrap_or(0);
        out.push((frame.into_buffer(), delay_ms));
    }
    if out.is_empty() {
        return Err(corrupt(f, "no frames"));
    }
    let opaque = out
        .iter()
        .all(|(img, _)| img.as_raw().chunks_exact(4).all(|p| p[3] == 255));
    Ok(out
        .into_iter()
        .map(|(img, delay_ms)| Frame {
            image: if opaque {
                DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(img).into_rgb8())
            } else {
                DynamicImage::ImageRgba8(img)
            },
            delay_ms,
        })
        .collect())
}

fn decode_gif(bytes: &[u8], opts: &DecodeOptions) -> Result<Picture, DecodeError> {
    let f = ImageFormat::Gif;
    let mut d = GifDecoder::new(Cursor::new(bytes)).map_err(|e| image_error(f, e))?;
    d.set_limits(limits(opts)).map_err(|e| image_error(f, e))?;
    let (w, h) = d.dimensions();
    check_limit(w, h, 1, opts)?;
    let loop_count = loops(d.loop_count());
    let frames = collect_frames(d.into_frames(), opts.max_frames.max(1), f)?;
    Ok(Picture {
        frames,
        loops: loop_count,
        icc: None,
    })
}

fn decode_webp(bytes: &[u8], opts: &DecodeOptions) -> Result<Picture, DecodeError> {
    let f = ImageFormat::Webp;
    let err = |e| image_error(f, e);
    let mut d = WebPDecoder::new(Cursor::new(bytes)).map_err(err)?;
    d.set_limits(limits(opts)).map_err(err)?;
    let (w, h) = d.dimensions();
    check_limit(w, h, 1, opts)?;
    let icc = d.icc_profile().ok().flatten();
    if d.has_animation() && opts.max_frames > 1 {
        let loop_count = loops(d.loop_count());
        let mut frames = collect_frames(d.into_frames(), opts.max_frames, f)?;
        if let Some(icc) = &icc {
            for frame in &mut frames {
                let image = std::mem::replace(&mut frame.image, DynamicImage::new_rgb8(0, 0));
                frame.image = normalise(image, Some(icc));
            }
        }
        return Ok(Picture {
            frames,
            loops: loop_count,
            icc,
        });
    }
    let image = DynamicImage::from_decoder(d).map_err(err)?;
    let mut p = Picture::still(normalise(image, icc.as_deref()));
    p.icc = icc;
    Ok(p)
}

/// AVIF through `avif`: its frames are checked against the limit by dav1d itself, and
/// the pixels come out upright (`irot`/`imir` applied), then to sRGB like the others.
fn decode_avif(bytes: &[u8], opts: &DecodeOptions) -> Result<Picture, DecodeError> {
    let d = super::avif::decode(bytes, opts.max_pixels)?;
    check_limit(d.image.width(), d.image.height(), 1, opts)?;
    let mut p = Picture::still(normalise(d.image, d.icc.as_deref()));
    p.icc = d.icc;
    Ok(p)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Instant;

    pub(crate) fn read(name: &str) -> Vec<u8> {
        let path = format!("{}/../shared/images/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// `image` as a JPEG from our own encoder, with an EXIF block if given.
    fn test_jpeg(image: RgbImage, quality: u8, exif: Option<&[u8]>) -> Vec<u8> {
        let picture = super::super::picture::Picture::still(DynamicImage::ImageRgb8(image));
        let opts = super::super::encode::EncodeOptions {
            quality,
            exif,
            ..Default::default()
        };
        super::super::encode::encode(&picture, &opts).unwrap()
    }

    pub(crate) fn decode_file(name: &str, opts: &DecodeOptions) -> Result<Decoded, DecodeError> {
        let bytes = read(name);
        let p = probe(&bytes)?;
        decode(&bytes, &p, opts)
    }

    fn opts() -> DecodeOptions {
        DecodeOptions::default()
    }

    /// Box-averages an RGB image down to `w × h` (exact multiples not required).
    pub(crate) fn box_down(img: &RgbImage, w: u32, h: u32) -> Vec<[f64; 3]> {
        let mut sums = vec![([0f64; 3], 0u32); (w * h) as usize];
        for (x, y, p) in img.enumerate_pixels() {
            let i = ((y * h / img.height()) * w + x * w / img.width()) as usize;
            for c in 0..3 {
                sums[i].0[c] += f64::from(p.0[c]);
            }
            sums[i].1 += 1;
        }
        sums.into_iter()
            .map(|(s, n)| s.map(|v| v / f64::from(n.max(1))))
            .collect()
    }

    pub(crate) fn mean_abs_diff(a: &[[f64; 3]], b: &[[f64; 3]]) -> f64 {
        let total: f64 = a
            .iter()
            .zip(b)
            .map(|(p, q)| (0..3).map(|c| (p[c] - q[c]).abs()).sum::<f64>())
            .sum();
        total / (a.len() * 3) as f64
    }

    fn rgb(d: &Decoded) -> &RgbImage {
        match &d.picture.frames[0].image {
            DynamicImage::ImageRgb8(b) => b,
            other => panic!("expected Rgb8, got {:?}", other.color()),
        }
    }

    #[test]
    fn photos_probe_and_decode_to_their_size() {
        for (name, w, h, format) in [
            ("wood-2560x1920.jpg", 2560, 1920, ImageFormat::Jpeg),
            ("storm-1920x1280.jpg", 1920, 1280, ImageFormat::Jpeg),
            (
                "freshflower-1600x1203-progressive.jpg",
                1600,
                1203,
                ImageFormat::Jpeg,
            ),
            (
                "elephants-5640x3172-progressive.jpg",
                5640,
                3172,
                ImageFormat::Jpeg,
            ),
            ("path-2560x1600.jpg", 2560, 1600, ImageFormat::Jpeg),
            ("bythewater-2560x1600.jpg", 2560, 1600, ImageFormat::Jpeg),
            ("astronaut-512.png", 512, 512, ImageFormat::Png),
            ("coffee-600x400.png", 600, 400, ImageFormat::Png),
            ("chelsea-451x300.png", 451, 300, ImageFormat::Png),
            ("rocket-640x427.jpg", 640, 427, ImageFormat::Jpeg),
            ("retina-1411.jpg", 1411, 1411, ImageFormat::Jpeg),
            ("path-1280x800.webp", 1280, 800, ImageFormat::Webp),
        ] {
            let bytes = read(name);
            let p = probe(&bytes).unwrap();
            assert_eq!(
                (p.format, p.oriented_size(), p.frames),
                (format, (w, h), 1),
                "{name}"
            );
            let d = decode(&bytes, &p, &opts()).unwrap();
            assert_eq!((d.picture.width(), d.picture.height()), (w, h), "{name}");
            assert_eq!(d.picture.frames.len(), 1, "{name}");
            assert!(
                matches!(d.picture.frames[0].image, DynamicImage::ImageRgb8(_)),
                "{name}"
            );
        }
    }

    #[test]
    fn orientation_6_is_applied_and_reported() {
        let name = "edge-orientation6-shows-1920x1280.jpg";
        let bytes = read(name);
        let p = probe(&bytes).unwrap();
        assert_eq!((p.width, p.height, p.orientation), (1280, 1920, 6));
        assert_eq!(p.oriented_size(), (1920, 1280));

        let full = decode(&bytes, &p, &opts()).unwrap();
        assert_eq!(
            (
                full.picture.width(),
                full.picture.height(),
                full.orientation
            ),
            (1920, 1280, 6)
        );
        let raw = decode(
            &bytes,
            &p,
            &DecodeOptions {
                auto_rotate: false,
                ..opts()
            },
        )
        .unwrap();
        assert_eq!(
            (raw.picture.width(), raw.picture.height(), raw.orientation),
            (1280, 1920, 1)
        );

        // Content: rotate the stored (1/8 scale) pixels 90° clockwise by hand and compare.
        let small = |auto_rotate| {
            decode(
                &bytes,
                &p,
                &DecodeOptions {
                    shrink: 0.125,
                    auto_rotate,
                    ..opts()
                },
            )
            .unwrap()
        };
        let upright = small(true);
        let stored = small(false);
        let (u, s) = (rgb(&upright), rgb(&stored));
        assert_eq!((u.width(), u.height()), (s.height(), s.width()));
        let by_hand = RgbImage::from_fn(s.height(), s.width(), |x, y| {
            *s.get_pixel(y, s.height() - 1 - x)
        });
        assert_eq!(
            u, &by_hand,
            "auto-rotated pixels are the stored ones turned 90° clockwise"
        );
        // And the rotation matters: the unrotated content differs a lot.
        let flipped = RgbImage::from_fn(s.height(), s.width(), |x, y| {
            *s.get_pixel(s.width() - 1 - y, x)
        });
        let d = mean_abs_diff(&box_down(u, 24, 16), &box_down(&flipped, 24, 16));
        assert!(
            d > 10.0,
            "counter-clockwise rotation should look different ({d})"
        );
    }

    #[test]
    fn all_eight_orientations_turn_pixels_upright() {
        // An upright 48×32 picture of six flat 16×16 blocks (flat, so JPEG keeps them).
        let colours = [
            [255, 0, 0],
            [0, 255, 0],
            [0, 0, 255],
            [255, 255, 0],
            [0, 255, 255],
            [255, 255, 255],
        ];
        let upright = RgbImage::from_fn(48, 32, |x, y| {
            image::Rgb(colours[(y / 16 * 3 + x / 16) as usize])
        });
        for o in 1..=8u8 {
            // Stored as a camera would store it: the inverse of what orientation `o` shows.
            let inverse = match o {
                6 => 8,
                8 => 6,
                x => x,
            };
            let mut stored = DynamicImage::ImageRgb8(upright.clone());
            stored.apply_orientation(Orientation::from_exif(inverse).unwrap());
            let stored = stored.into_rgb8();
            let exif = [
                b"MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0".as_slice(),
                &[o],
                b"\0\0\0\0\0\0",
            ]
            .concat();
            let jpeg = test_jpeg(stored, 95, Some(&exif));
            let p = probe(&jpeg).unwrap();
            assert_eq!(p.orientation, o);
            let d = decode(&jpeg, &p, &opts()).unwrap();
            assert_eq!(d.orientation, o);
            let shown = rgb(&d);
            assert_eq!((shown.width(), shown.height()), (48, 32), "orientation {o}");
            let diff = mean_abs_diff(&box_down(shown, 3, 2), &box_down(&upright, 3, 2));
            assert!(diff < 8.0, "orientation {o}: {diff}");
        }
    }

    #[test]
    fn cmyk_jpeg_colours_match_the_rgb_original() {
        let cmyk = decode_file("edge-cmyk-800.jpg", &opts()).unwrap();
        let storm = decode_file("storm-1920x1280.jpg", &opts()).unwrap();
        let (c, s) = (rgb(&cmyk), rgb(&storm));
        assert_eq!(c.width(), 800);
        let a = box_down(c, 40, 26);
        let b = box_down(s, 40, 26);
        let d = mean_abs_diff(&a, &b);
        // Measured 20.0 (of 255). The file was separated with a press profile (heavy
        // black generation: mean K ink about 54 %) and carries no profile, so the generic
        // (browser-equivalent) formula lands darker than the original, not on it. Every
        // wrong reading is far off: not undoing Adobe's inversion 78.6, ignoring K 82.9.
        assert!(d < 25.0, "mean absolute difference {d}");
    }

    #[test]
    fn icc_profiles_convert_to_srgb() {
        // A Display P3 tagged PNG: (200, 100, 100) in P3 is a more saturated red in sRGB;
        // grays stay gray. An sRGB tagged PNG is left alone.
        let img = RgbImage::from_fn(8, 2, |_, y| {
            image::Rgb(if y == 0 {
                [200, 100, 100]
            } else {
                [128, 128, 128]
            })
        });
        let png = |icc: Vec<u8>| {
            let mut out = Vec::new();
            let mut enc = image::codecs::png::PngEncoder::new(&mut out);
            image::ImageEncoder::set_icc_profile(&mut enc, icc).unwrap();
            image::ImageEncoder::write_image(
                enc,
                img.as_raw(),
                8,
                2,
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
            out
        };
        let p3 = png(moxcms::ColorProfile::new_display_p3().encode().unwrap());
        let d = decode(&p3, &probe(&p3).unwrap(), &opts()).unwrap();
        let out = rgb(&d);
        let [r, g, b] = out.get_pixel(0, 0).0;
        assert!(
            r > 205 && g < 97 && b < 99,
            "P3 red converted: {:?}",
            [r, g, b]
        );
        let [r, g, b] = out.get_pixel(0, 1).0;
        assert!(
            r.abs_diff(128) <= 1 && g.abs_diff(128) <= 1 && b.abs_diff(128) <= 1,
            "{:?}",
            [r, g, b]
        );
        assert!(
            d.picture.icc.is_some(),
            "the source profile is kept for re-embedding"
        );

        let srgb = png(moxcms::ColorProfile::new_srgb().encode().unwrap());
        let d = decode(&srgb, &probe(&srgb).unwrap(), &opts()).unwrap();
        assert_eq!(rgb(&d), &img);
    }

    #[test]
    fn gray_16bit_and_alpha_sources() {
        let gray = decode_file("edge-gray-800.jpg", &opts()).unwrap();
        let g = rgb(&gray);
        assert_eq!(g.width(), 800);
        assert!(
            g.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]),
            "gray stays gray in RGB"
        );

        let rgb16 = decode_file("edge-rgb16-600x400.png", &opts()).unwrap();
        assert_eq!((rgb16.picture.width(), rgb16.picture.height()), (600, 400));
        assert!(matches!(
            rgb16.picture.frames[0].image,
            DynamicImage::ImageRgb8(_)
        ));

        let bytes = read("edge-alpha-400.png");
        let p = probe(&bytes).unwrap();
        assert_eq!(p.has_alpha, Some(true));
        let alpha = decode(&bytes, &p, &opts()).unwrap();
        let DynamicImage::ImageRgba8(a) = &alpha.picture.frames[0].image else {
            panic!("alpha must stay Rgba8");
        };
        assert!(a.pixels().any(|p| p.0[3] == 0), "fully transparent pixels");
        assert!(
            a.pixels().any(|p| (64..192).contains(&p.0[3])),
            "half transparent pixels"
        );
        assert!(a.pixels().any(|p| p.0[3] == 255), "opaque pixels");
    }

    #[test]
    fn animated_gif_frames_and_delays() {
        let bytes = read("edge-animated-8frames-160x120.gif");
        let p = probe(&bytes).unwrap();
        assert_eq!(
            (p.format, p.width, p.height, p.frames),
            (ImageFormat::Gif, 160, 120, 8)
        );
        let all = decode(
            &bytes,
            &p,
            &DecodeOptions {
                max_frames: 100,
                ..opts()
            },
        )
        .unwrap();
        assert_eq!(all.picture.frames.len(), 8);
        // Delays as stored: 10 cs on the first frame, 0 on the others (browsers show 0 as
        // 100 ms; we keep 0 so that re-encoding keeps the browsers' behaviour).
        let delays: Vec<u32> = all.picture.frames.iter().map(|f| f.delay_ms).collect();
        assert_eq!(delays, [100, 0, 0, 0, 0, 0, 0, 0]);
        let f = &all.picture.frames;
        assert!(
            f.iter()
                .all(|f| (f.image.width(), f.image.height()) == (160, 120))
        );
        // Consecutive frames differ (composited full frames, not the same one eight times).
        assert!(f.windows(2).all(|w| w[0].image != w[1].image));
        assert_eq!(all.picture.loops, 0);
        let first = decode(&bytes, &p, &opts()).unwrap();
        assert_eq!(first.picture.frames.len(), 1);
        let three = decode(
            &bytes,
            &p,
            &DecodeOptions {
                max_frames: 3,
                ..opts()
            },
        )
        .unwrap();
        assert_eq!(three.picture.frames.len(), 3);
    }

    #[test]
    fn webp_and_avif_sources() {
        let bytes = read("path-1280x800.webp");
        let p = probe(&bytes).unwrap();
        assert_eq!(
            (p.format, p.width, p.height, p.frames),
            (ImageFormat::Webp, 1280, 800, 1)
        );
        let d = decode(&bytes, &p, &opts()).unwrap();
        assert_eq!((d.picture.width(), d.picture.height()), (1280, 800));
        // Same photo as the JPEG: colours agree.
        let jpeg = decode_file(
            "path-2560x1600.jpg",
            &DecodeOptions {
                shrink: 0.5,
                ..opts()
            },
        )
        .unwrap();
        let diff = mean_abs_diff(&box_down(rgb(&d), 32, 20), &box_down(rgb(&jpeg), 32, 20));
        assert!(diff < 4.0, "{diff}");

        let avif = read("path-1280x800.avif");
        let p = probe(&avif).unwrap();
        assert_eq!(
            (p.format, p.width, p.height),
            (ImageFormat::Avif, 1280, 800)
        );
        let d = decode(&avif, &p, &opts()).unwrap();
        assert_eq!((d.picture.width(), d.picture.height()), (1280, 800));
        assert!(matches!(
            d.picture.frames[0].image,
            DynamicImage::ImageRgb8(_)
        ));
        // Over the pixel limit: refused, whether by our check or by dav1d's frame limit.
        let small = DecodeOptions {
            max_pixels: 1280 * 800 - 1,
            ..opts()
        };
        assert!(matches!(
            decode(&avif, &p, &small).unwrap_err(),
            DecodeError::OverLimit { .. } | DecodeError::Corrupt { .. }
        ));
    }

    #[test]
    fn broken_sources_are_errors_not_panics() {
        let e = probe(&read("edge-not-an-image.jpg")).unwrap_err();
        assert_eq!(e, DecodeError::UnsupportedFormat);
        assert_eq!(e.to_string(), "unsupported source format");
        assert_eq!(probe(b""), Err(DecodeError::UnsupportedFormat));

        // Truncated JPEG: libjpeg fills the missing rows (a partial decode), or an error.
        let bytes = read("edge-truncated.jpg");
        match probe(&bytes).and_then(|p| decode(&bytes, &p, &opts())) {
            Ok(d) => assert!(d.picture.width() > 0),
            Err(e) => assert!(matches!(e, DecodeError::Corrupt { .. }), "{e}"),
        }
        // Every prefix of a JPEG header, and some damaged bodies: never a panic.
        let good = read("rocket-640x427.jpg");
        for cut in (0..2000).step_by(7).chain([good.len() / 2, good.len() - 1]) {
            let part = &good[..cut];
            if let Ok(p) = probe(part) {
                let _ = decode(part, &p, &opts());
            }
        }
        let mut damaged = good.clone();
        for i in (600..damaged.len()).step_by(97) {
            damaged[i] ^= 0x5a;
        }
        if let Ok(p) = probe(&damaged) {
            let _ = decode(&damaged, &p, &opts());
        }
        // Damaged entropy-coded data only (after the start of scan): decodes or errs.
        let sos = good.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        let mut damaged = good.clone();
        for i in (sos + 20..damaged.len()).step_by(53) {
            damaged[i] = 0xFF;
        }
        let p = probe(&damaged).unwrap();
        let _ = decode(&damaged, &p, &opts());
        // A JPEG header with an absurd frame header.
        let mut bad_sof = good[..good.len() / 3].to_vec();
        if let Some(i) = bad_sof.windows(2).position(|w| w == [0xFF, 0xC0]) {
            bad_sof[i + 5..i + 9].copy_from_slice(&[0, 0, 0, 0]);
            assert!(probe(&bad_sof).is_err());
        }
        // Other formats, truncated.
        for name in [
            "coffee-600x400.png",
            "edge-animated-8frames-160x120.gif",
            "path-1280x800.webp",
        ] {
            let b = read(name);
            for cut in [20, 100, b.len() / 2] {
                if let Ok(p) = probe(&b[..cut]) {
                    let _ = decode(
                        &b[..cut],
                        &p,
                        &DecodeOptions {
                            max_frames: 10,
                            ..opts()
                        },
                    );
                }
            }
        }
    }

    #[test]
    fn mutated_sources_never_panic() {
        // Smoke fuzzing: small real files of every decoded format, with random bytes
        // overwritten and random tails cut, through probe and decode.
        let small = RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 8) as u8, 90])
        });
        let mut seeds = vec![read("edge-animated-8frames-160x120.gif")];
        seeds.push(test_jpeg(small.clone(), 80, None));
        for format in [
            image::ImageFormat::Png,
            image::ImageFormat::Bmp,
            image::ImageFormat::Tiff,
            image::ImageFormat::WebP,
        ] {
            let mut out = Cursor::new(Vec::new());
            small.write_to(&mut out, format).unwrap();
            seeds.push(out.into_inner());
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let o = DecodeOptions {
            max_frames: 8,
            ..opts()
        };
        for seed in &seeds {
            for _ in 0..150 {
                let mut b = seed.clone();
                for _ in 0..1 + next() % 4 {
                    let i = (next() % b.len() as u64) as usize;
                    b[i] = next() as u8;
                }
                if next() % 3 == 0 {
                    b.truncate((next() % b.len() as u64) as usize);
                }
                if let Ok(p) = probe(&b) {
                    let _ = decode(&b, &p, &o);
                }
            }
        }
    }

    #[test]
    fn a_short_ftyp_header_is_sniffed_without_a_panic() {
        // Regression: a file of 12 to 15 bytes with `ftyp` at offset 4 (an AVIF cut short,
        // found by the fuzz target `decoders_survive_mutated_files`) made `sniff` panic:
        // `clamp(16, len)` with a maximum below its minimum. `probe` calls `sniff` outside
        // its panic guard, so the image endpoint's task panicked.
        let header = b"\0\0\0\x1cftypavif\0\0\0\0";
        for len in 12..=16 {
            let b = &header[..len];
            assert_eq!(sniff(b), Some(ImageFormat::Avif), "{len} bytes");
            assert!(
                matches!(probe(b), Err(DecodeError::Corrupt { .. })),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn pixels_of_a_huge_animated_webp_saturate() {
        // Regression: a WebP canvas may claim 2^24 × 2^24 pixels and the probe counts one
        // frame per `ANMF` chunk, so 65536 empty chunks (512 KiB) made `Probe::pixels`
        // overflow: a panic in debug builds, a wrapped count (0 here) below any limit in
        // release builds.
        let mut b = b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\x02\0\0\0\xff\xff\xff\xff\xff\xff".to_vec();
        for _ in 0..65_536 {
            b.extend_from_slice(b"ANMF\0\0\0\0");
        }
        let p = probe(&b).unwrap();
        assert_eq!((p.width, p.height, p.frames), (1 << 24, 1 << 24, 65_536));
        assert_eq!(p.pixels(), u64::MAX);
    }

    #[test]
    fn decompression_bomb_is_refused_from_its_header() {
        let bytes = read("edge-bomb-40000x40000.png");
        let start = Instant::now();
        let p = probe(&bytes).unwrap();
        let took = start.elapsed();
        assert_eq!(
            p,
            Probe {
                format: ImageFormat::Png,
                width: 40000,
                height: 40000,
                frames: 1,
                orientation: 1,
                has_alpha: Some(false),
            }
        );
        assert_eq!(p.pixels(), 1_600_000_000);
        assert!(took.as_millis() < 50, "probe took {took:?}");
        let start = Instant::now();
        let e = decode(&bytes, &p, &opts()).unwrap_err();
        assert_eq!(
            e,
            DecodeError::OverLimit {
                pixels: 1_600_000_000,
                limit: 50_000_000
            }
        );
        assert!(start.elapsed().as_millis() < 50);
        // A lying probe does not get past the decoder's own header check.
        let lie = Probe {
            width: 10,
            height: 10,
            ..p
        };
        assert!(matches!(
            decode(&bytes, &lie, &opts()),
            Err(DecodeError::OverLimit { .. })
        ));
    }

    #[test]
    fn shrink_on_load_picks_the_largest_libjpeg_scale() {
        assert_eq!(jpeg_scale_denom(1.0), 1);
        assert_eq!(jpeg_scale_denom(0.6), 1);
        assert_eq!(jpeg_scale_denom(0.5), 2);
        assert_eq!(jpeg_scale_denom(0.3), 2);
        assert_eq!(jpeg_scale_denom(0.25), 4);
        assert_eq!(jpeg_scale_denom(640.0 / 2560.0), 4);
        assert_eq!(jpeg_scale_denom(0.2), 4);
        assert_eq!(jpeg_scale_denom(0.125), 8);
        assert_eq!(jpeg_scale_denom(0.01), 8);
        assert_eq!(jpeg_scale_denom(0.0), 1);
        assert_eq!(jpeg_scale_denom(f64::NAN), 1);

        let d = decode_file(
            "path-2560x1600.jpg",
            &DecodeOptions {
                shrink: 0.25,
                ..opts()
            },
        )
        .unwrap();
        assert_eq!(
            (d.picture.width(), d.picture.height(), d.scale_denom),
            (640, 400, 4)
        );
        // Needed size 721 × 451: 1/2 scale, never smaller than needed.
        let d = decode_file(
            "path-2560x1600.jpg",
            &DecodeOptions {
                shrink: 721.0 / 2560.0,
                ..opts()
            },
        )
        .unwrap();
        assert_eq!((d.picture.width(), d.picture.height()), (1280, 800));
    }

    #[test]
    fn sniffing_ignores_names_and_knows_the_unsupported() {
        assert_eq!(sniff(b"\xff\xd8\xff\xe0"), Some(ImageFormat::Jpeg));
        assert_eq!(
            sniff(b"\0\0\0\x1cftypheic\0\0\0\0mif1heic"),
            Some(ImageFormat::Heic)
        );
        assert_eq!(
            sniff(b"\0\0\0\x1cftypmif1\0\0\0\0mif1avif"),
            Some(ImageFormat::Avif)
        );
        assert_eq!(
            sniff(b"<?xml version=\"1.0\"?><svg xmlns="),
            Some(ImageFormat::Svg)
        );
        assert_eq!(sniff(b"hello, I am not an image"), None);
        // An editor's long preamble (Illustrator's comment and entity declarations).
        let preamble = format!("<?xml version=\"1.0\"?><!-- {} --><svg/>", "x".repeat(2500));
        assert_eq!(sniff(preamble.as_bytes()), Some(ImageFormat::Svg));
        assert_eq!(
            probe(b"<svg></svg>").map(|p| (p.format, p.width, p.height)),
            Ok((ImageFormat::Svg, 100, 100))
        );
        // A HEIC header alone is recognised, and refused as damaged.
        assert!(matches!(
            probe(b"\0\0\0\x1cftypheic\0\0\0\0mif1heic"),
            Err(DecodeError::Corrupt { .. } | DecodeError::NotSupportedYet(_))
        ));
    }

    #[test]
    fn svg_is_drawn_at_the_asked_scale_within_the_limit() {
        let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="5"><rect width="10" height="5" fill="red"/></svg>"#;
        let p = probe(svg).unwrap();
        assert_eq!((p.width, p.height, p.has_alpha), (10, 5, Some(true)));
        let at = |shrink: f64, max_pixels: u64| {
            let d = decode(
                svg,
                &p,
                &DecodeOptions {
                    shrink,
                    max_pixels,
                    ..opts()
                },
            )
            .unwrap();
            (d.picture.width(), d.picture.height())
        };
        assert_eq!(at(1.0, 1000), (10, 5));
        assert_eq!(at(30.0, 1_000_000), (300, 150));
        assert_eq!(at(0.5, 1000), (5, 2));
        // 300×150 is over 20 000 pixels: drawn at the largest size within it.
        let (w, h) = at(30.0, 20_000);
        assert!(w * h <= 20_000 && w >= 195, "{w}x{h}");
    }

    #[test]
    #[ignore = "timing report: cargo test --lib imaging::decode::tests::timing -- --ignored --nocapture"]
    fn timing() {
        let bytes = read("path-2560x1600.jpg");
        let p = probe(&bytes).unwrap();
        for shrink in [1.0, 0.25] {
            let start = Instant::now();
            for _ in 0..10 {
                decode(&bytes, &p, &DecodeOptions { shrink, ..opts() }).unwrap();
            }
            println!(
                "decode path-2560x1600.jpg shrink {shrink}: {:?}",
                start.elapsed() / 10
            );
        }
    }
}
