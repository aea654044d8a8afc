//! Watermarks (imgproxy OSS semantics): the image of `[images.watermark]`, laid over the
//! result by the `watermark` (`wm`) option, at a compass position or tiled (`re`).
//!
//! What must stay true:
//! - the watermark is decoded once ([`WatermarkImage::load`]) and resized once per scaled
//!   size ([`WatermarkImage::sized`] keeps a bounded map of them), never per request;
//! - placement follows imgproxy's `calcPosition`: offsets (times the dpr) move a watermark
//!   at an edge inward and one in the centre right/down; a watermark that overflows the
//!   result is clipped, never an out-of-bounds write;
//! - `scale` fits the watermark into that fraction of the result's size (enlarging too);
//!   without it the watermark keeps its own size;
//! - tiled (`re`): offsets are the spacing between tiles (pixels times dpr when ≥ 1, else a
//!   fraction of the result's size), split around each tile as imgproxy's padding does;
//! - opacity is the option's times `[images.watermark] opacity`; straight alpha in, out;
//! - [`WatermarkImage::id`] names the image and its opacity, and is part of the cache key
//!   of every variant that uses it: another watermark is another variant.
//!
//! Pure pixel work: the bytes come from the caller (config, file or URL).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use image::{DynamicImage, RgbaImage};

use super::decode::{self, DecodeOptions};
use super::options::{GravityType, Watermark};
use super::picture::Picture;

/// Why a watermark could not be loaded or drawn.
#[derive(Debug, thiserror::Error)]
pub enum WatermarkError {
    #[error("the watermark image cannot be read: {0}")]
    Decode(String),
    #[error("the watermark image is larger than {MAX_PIXELS} pixels")]
    TooLarge,
    #[error("cannot resize the watermark: {0}")]
    Resize(String),
}

/// The largest watermark accepted, in pixels (16 MP: far beyond any logo).
pub const MAX_PIXELS: u64 = 16_000_000;

/// Sized copies kept; past it the map starts again (results come in few sizes).
const SIZED_CAP: usize = 64;

/// The configured watermark, decoded.
pub struct WatermarkImage {
    rgba: RgbaImage,
    /// `[images.watermark] opacity`.
    opacity: f64,
    id: String,
    sized: Mutex<HashMap<SizeKey, Arc<RgbaImage>>>,
}

impl std::fmt::Debug for WatermarkImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatermarkImage")
            .field("width", &self.rgba.width())
            .field("height", &self.rgba.height())
            .field("id", &self.id)
            .finish()
    }
}

/// What a sized copy depends on: the box it fits (0×0: its own size) and tile padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SizeKey {
    box_w: u32,
    box_h: u32,
    pad: [u32; 4],
}

impl WatermarkImage {
    /// Decodes `bytes` (any source format Pixelport reads) at most [`MAX_PIXELS`].
    pub fn load(bytes: &[u8], opacity: f64) -> Result<WatermarkImage, WatermarkError> {
        let probe = decode::probe(bytes).map_err(|e| WatermarkError::Decode(e.to_string()))?;
        if probe.pixels() > MAX_PIXELS {
            return Err(WatermarkError::TooLarge);
        }
        let opts = DecodeOptions {
            max_pixels: MAX_PIXELS,
            ..DecodeOptions::default()
        };
        let decoded = decode::decode(bytes, &probe, &opts)
            .map_err(|e| WatermarkError::Decode(e.to_string()))?;
        let first = decoded
            .picture
            .frames
            .into_iter()
            .next()
            .ok_or_else(|| WatermarkError::Decode("no frames".into()))?;
        let id = {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(bytes);
            h.update(opacity.to_le_bytes());
            hex::encode(h.finalize().get(..8).unwrap_or_default())
        };
        Ok(WatermarkImage {
            rgba: first.image.to_rgba8(),
            opacity: opacity.clamp(0.0, 1.0),
            id,
            sized: Mutex::new(HashMap::new()),
        })
    }

    /// The watermark's identity for cache keys.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The watermark fitted into `box_w × box_h` (0: its own size) with `pad` (left, top,
    /// right, bottom) of transparency around it: from the map, or made once and kept.
    fn sized(
        &self,
        box_w: u32,
        box_h: u32,
        pad: [u32; 4],
    ) -> Result<Arc<RgbaImage>, WatermarkError> {
        let key = SizeKey { box_w, box_h, pad };
        if let Some(hit) = self.sized.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(hit);
        }
        let (w, h) = self.rgba.dimensions();
        let (fw, fh) = if box_w == 0 || box_h == 0 {
            (w, h)
        } else {
            fit(w, h, box_w, box_h)
        };
        let resized = if (fw, fh) == (w, h) {
            self.rgba.clone()
        } else {
            super::transform::resize_rgba(&self.rgba, fw, fh)
                .map_err(|e| WatermarkError::Resize(e.to_string()))?
        };
        let [l, t, r, b] = pad;
        let out = if pad == [0; 4] {
            resized
        } else {
            let mut canvas = RgbaImage::new(fw + l + r, fh + t + b);
            image::imageops::replace(&mut canvas, &resized, i64::from(l), i64::from(t));
            canvas
        };
        let out = Arc::new(out);
        if let Ok(mut m) = self.sized.lock() {
            if m.len() >= SIZED_CAP {
                m.clear();
            }
            m.insert(key, out.clone());
        }
        Ok(out)
    }

    /// Draws the watermark on every frame of `picture` as `wm` asks; `dpr` scales offsets.
    pub fn apply(
        &self,
        picture: &mut Picture,
        wm: &Watermark,
        dpr: f64,
    ) -> Result<(), WatermarkError> {
        let opacity = (wm.opacity * self.opacity).clamp(0.0, 1.0);
        if !wm.enabled || opacity <= 0.0 {
            return Ok(());
        }
        let (w, h) = (picture.width(), picture.height());
        if w == 0 || h == 0 {
            return Ok(());
        }
        let (box_w, box_h) = if wm.scale > 0.0 {
            (
                scale_to_even(w, wm.scale).max(1),
                scale_to_even(h, wm.scale).max(1),
            )
        } else {
            (0, 0)
        };
        let pad = if wm.replicate {
            let spacing = |offset: f64, side: u32| -> u32 {
                let px = if offset.abs() >= 1.0 {
                    (offset * dpr).round_ties_even()
                } else {
                    f64::from(scale_to_even(side, offset.abs()))
                };
                px.clamp(0.0, f64::from(super::geometry::MAX_DIMENSION)) as u32
            };
            let (x, y) = (spacing(wm.x_offset, w), spacing(wm.y_offset, h));
            [x / 2, y / 2, x - x / 2, y - y / 2]
        } else {
            [0; 4]
        };
        let mark = self.sized(box_w, box_h, pad)?;
        let places = if wm.replicate {
            tiles(w, h, mark.width(), mark.height())
        } else {
            vec![position(
                (w, h),
                (mark.width(), mark.height()),
                wm.position,
                (wm.x_offset, wm.y_offset),
                dpr,
            )]
        };
        for frame in &mut picture.frames {
            for &(left, top) in &places {
                blend(&mut frame.image, &mark, left, top, opacity);
            }
        }
        Ok(())
    }
}

/// imgproxy's `imath.ScaleToEven`: `side × scale` rounded to an even number.
fn scale_to_even(side: u32, scale: f64) -> u32 {
    let v = (f64::from(side) * scale / 2.0).round_ties_even() * 2.0;
    v.clamp(0.0, f64::from(super::geometry::MAX_DIMENSION)) as u32
}

/// `w × h` fitted into `bw × bh` keeping its aspect (up or down), at least 1×1.
fn fit(w: u32, h: u32, bw: u32, bh: u32) -> (u32, u32) {
    let f = (f64::from(bw) / f64::from(w.max(1))).min(f64::from(bh) / f64::from(h.max(1)));
    let side = |v: u32| {
        (f64::from(v) * f)
            .round()
            .clamp(1.0, f64::from(super::geometry::MAX_DIMENSION)) as u32
    };
    (side(w), side(h))
}

/// imgproxy's `calcPosition` with overflow allowed: where the watermark's top-left corner
/// goes on a `canvas`, for a mark of `inner` size at `gravity` with `offset` × `dpr`.
pub fn position(
    canvas: (u32, u32),
    inner: (u32, u32),
    gravity: GravityType,
    offset: (f64, f64),
    dpr: f64,
) -> (i64, i64) {
    use GravityType::*;
    let (w, h) = (i64::from(canvas.0), i64::from(canvas.1));
    let (iw, ih) = (i64::from(inner.0), i64::from(inner.1));
    let off = |v: f64| (v * dpr).round_ties_even().clamp(-1e9, 1e9) as i64;
    let (ox, oy) = (off(offset.0), off(offset.1));
    // imgproxy's `imath.ShrinkToEven(w - iw + 1, 2)`.
    let centre =
        |outer: i64, inner: i64| ((outer - inner + 1) as f64 / 2.0).round_ties_even() as i64;
    let mut left = centre(w, iw) + ox;
    let mut top = centre(h, ih) + oy;
    if matches!(gravity, North | NorthEast | NorthWest) {
        top = oy;
    }
    if matches!(gravity, East | NorthEast | SouthEast) {
        left = w - iw - ox;
    }
    if matches!(gravity, South | SouthEast | SouthWest) {
        top = h - ih - oy;
    }
    if matches!(gravity, West | NorthWest | SouthWest) {
        left = ox;
    }
    (left, top)
}

/// Top-left corners of tiles of `tw × th` covering `w × h` from the top-left corner (as
/// libvips's `replicate` then crop).
fn tiles(w: u32, h: u32, tw: u32, th: u32) -> Vec<(i64, i64)> {
    let (tw, th) = (tw.max(1), th.max(1));
    let mut out = Vec::new();
    let mut y = 0;
    while y < h {
        let mut x = 0;
        while x < w {
            out.push((i64::from(x), i64::from(y)));
            x += tw;
        }
        y += th;
    }
    out
}

/// `mark` over `image` with its top-left corner at (`left`, `top`), clipped to the image,
/// its alpha times `opacity`. RGB frames stay RGB; RGBA frames get "over" alpha.
fn blend(image: &mut DynamicImage, mark: &RgbaImage, left: i64, top: i64, opacity: f64) {
    let (w, h) = (i64::from(image.width()), i64::from(image.height()));
    let (mw, mh) = (i64::from(mark.width()), i64::from(mark.height()));
    let (x0, y0) = (left.max(0), top.max(0));
    let (x1, y1) = ((left + mw).min(w), (top + mh).min(h));
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    let k = (opacity * 256.0).round() as u32;
    let (ch, data) = match image {
        DynamicImage::ImageRgb8(b) => (3usize, &mut **b),
        DynamicImage::ImageRgba8(b) => (4usize, &mut **b),
        _ => return,
    };
    let stride = w as usize * ch;
    let src = mark.as_raw();
    for y in y0..y1 {
        let row = y as usize * stride;
        let mrow = (y - top) as usize * mw as usize * 4;
        for x in x0..x1 {
            let m = mrow + (x - left) as usize * 4;
            let d = row + x as usize * ch;
            let (Some(mp), Some(dp)) = (src.get(m..m + 4), data.get_mut(d..d + ch)) else {
                continue;
            };
            // Source alpha times opacity, 0..=256 × 255.
            let a = u32::from(mp[3]) * k / 256;
            if a == 0 {
                continue;
            }
            if ch == 3 {
                for c in 0..3 {
                    dp[c] =
                        ((u32::from(mp[c]) * a + u32::from(dp[c]) * (255 - a) + 127) / 255) as u8;
                }
            } else {
                let da = u32::from(dp[3]);
                // out_a = a + da (1 - a), in 255ths.
                let out_a = a * 255 + da * (255 - a);
                if out_a == 0 {
                    continue;
                }
                for c in 0..3 {
                    let v = u32::from(mp[c]) * a * 255 + u32::from(dp[c]) * da * (255 - a);
                    dp[c] = ((v + out_a / 2) / out_a) as u8;
                }
                dp[3] = ((out_a + 127) / 255) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage, Rgba};

    /// A 20×10 opaque red watermark, as PNG bytes.
    fn red_png(w: u32, h: u32, alpha: u8) -> Vec<u8> {
        let img = RgbaImage::from_pixel(w, h, Rgba([255, 0, 0, alpha]));
        let mut out = std::io::Cursor::new(Vec::new());
        DynamicImage::ImageRgba8(img)
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    fn white(w: u32, h: u32) -> Picture {
        Picture::still(DynamicImage::ImageRgb8(RgbImage::from_pixel(
            w,
            h,
            Rgb([255, 255, 255]),
        )))
    }

    fn wm(position: GravityType) -> Watermark {
        Watermark {
            enabled: true,
            position,
            ..Watermark::default()
        }
    }

    /// The bounding box of red pixels.
    fn red_box(p: &Picture) -> Option<(u32, u32, u32, u32)> {
        let img = p.frames[0].image.to_rgb8();
        let mut b: Option<(u32, u32, u32, u32)> = None;
        for (x, y, px) in img.enumerate_pixels() {
            if px.0[1] < 128 {
                b = Some(match b {
                    None => (x, y, x, y),
                    Some((l, t, r, bt)) => (l.min(x), t.min(y), r.max(x), bt.max(y)),
                });
            }
        }
        b
    }

    #[test]
    fn every_compass_position_lands_where_imgproxy_puts_it() {
        use GravityType::*;
        let mark = WatermarkImage::load(&red_png(20, 10, 255), 1.0).unwrap();
        // 100×50 canvas, 20×10 mark: (left, top, right, bottom) of the red pixels.
        for (g, expect) in [
            (Center, (40, 20, 59, 29)),
            (North, (40, 0, 59, 9)),
            (South, (40, 40, 59, 49)),
            (East, (80, 20, 99, 29)),
            (West, (0, 20, 19, 29)),
            (NorthWest, (0, 0, 19, 9)),
            (NorthEast, (80, 0, 99, 9)),
            (SouthWest, (0, 40, 19, 49)),
            (SouthEast, (80, 40, 99, 49)),
        ] {
            let mut p = white(100, 50);
            mark.apply(&mut p, &wm(g), 1.0).unwrap();
            assert_eq!(red_box(&p), Some(expect), "{g:?}");
        }
        // Offsets move an edge mark inward, times the dpr.
        let mut p = white(100, 50);
        let w = Watermark {
            x_offset: 5.0,
            y_offset: 3.0,
            ..wm(SouthEast)
        };
        mark.apply(&mut p, &w, 2.0).unwrap();
        assert_eq!(red_box(&p), Some((70, 34, 89, 43)));
    }

    #[test]
    fn tiles_cover_the_image_with_their_spacing() {
        let mark = WatermarkImage::load(&red_png(10, 10, 255), 1.0).unwrap();
        let mut p = white(100, 50);
        let w = Watermark {
            replicate: true,
            x_offset: 10.0,
            y_offset: 10.0,
            ..wm(GravityType::Center)
        };
        mark.apply(&mut p, &w, 1.0).unwrap();
        let img = p.frames[0].image.to_rgb8();
        // Tiles of 20×20 (10 of mark, 5 of spacing either side): red at 5..15, 25..35, ...
        for (x, y, red) in [
            (5, 5, true),
            (14, 14, true),
            (25, 45, true),
            (85, 25, true),
            (2, 2, false),
            (17, 5, false),
            (5, 18, false),
        ] {
            let is_red = img.get_pixel(x, y).0 == [255, 0, 0];
            assert_eq!(is_red, red, "({x}, {y})");
        }
    }

    #[test]
    fn scale_opacity_clipping_and_alpha() {
        let mark = WatermarkImage::load(&red_png(20, 10, 255), 0.5).unwrap();
        // Scale 0.5 of 100×50: fitted into 50×24 → 48×24, centred at 26..74.
        let mut p = white(100, 50);
        let w = Watermark {
            opacity: 1.0,
            scale: 0.5,
            ..wm(GravityType::Center)
        };
        mark.apply(&mut p, &w, 1.0).unwrap();
        let img = p.frames[0].image.to_rgb8();
        // Opacity 1 × config 0.5: half red over white.
        let c = img.get_pixel(50, 25).0;
        assert!(c[0] == 255 && (120..=136).contains(&c[1]), "{c:?}");
        assert_eq!(img.get_pixel(10, 25).0, [255, 255, 255]);
        assert_eq!(img.get_pixel(30, 25).0, c, "50 px wide: 25..75");
        // A mark far off the canvas is clipped, not a panic.
        let mut p = white(10, 10);
        let off = Watermark {
            x_offset: 1e6,
            ..wm(GravityType::West)
        };
        mark.apply(&mut p, &off, 1.0).unwrap();
        // On a transparent RGBA canvas the mark's colour shows with its alpha.
        let mut p = Picture::still(DynamicImage::ImageRgba8(RgbaImage::new(30, 30)));
        mark.apply(&mut p, &wm(GravityType::Center), 1.0).unwrap();
        let px = p.frames[0].image.to_rgba8().get_pixel(15, 15).0;
        assert_eq!((px[0], px[1]), (255, 0));
        assert!((126..=129).contains(&px[3]), "{px:?}");
        // The sized copy is made once per size.
        assert_eq!(mark.sized.lock().unwrap().len(), 2);
    }

    #[test]
    fn junk_and_huge_watermarks_are_errors_and_ids_differ() {
        assert!(matches!(
            WatermarkImage::load(b"not an image", 1.0),
            Err(WatermarkError::Decode(_))
        ));
        let a = WatermarkImage::load(&red_png(4, 4, 255), 1.0).unwrap();
        let b = WatermarkImage::load(&red_png(4, 4, 255), 0.5).unwrap();
        let c = WatermarkImage::load(&red_png(5, 4, 255), 1.0).unwrap();
        assert_ne!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
    }
}
