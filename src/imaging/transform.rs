//! Pixel work of the image pipeline: applies a [`Plan`] from `geometry` to every frame
//! of a [`Picture`] (crop, resize, rotate/flip, result crop, filters, extend, padding,
//! flatten), plus [`trim`], which runs before planning because it changes the source
//! size.
//!
//! What must stay true:
//! - Sizes and positions come from the plan only; this module decides nothing about
//!   geometry except where `g:sm` (smart gravity) puts a crop window.
//! - Frames stay `ImageRgb8` or `ImageRgba8` with straight alpha (see `picture`); an
//!   RGB frame becomes RGBA only when a transparent canvas is needed.
//! - No panics on any plan: [`apply`] runs [`Plan::validate`] and checks every frame's
//!   size first, and the buffer helpers check their windows, so an inconsistent plan
//!   is a [`TransformError`], never an out-of-bounds index. Buffers are never larger
//!   than the source or `geometry::MAX_DIMENSION` a side.
//! - Filter cost is bounded whatever the sigma: kernels are no wider than the image,
//!   and a large blur is three box blurs whose cost does not depend on the sigma.
//! - Work happens on raw interleaved buffers: no per-pixel allocation, no image-crate
//!   resizing. Resampling is fast_image_resize's Lanczos3 with alpha premultiplied
//!   before and divided out after (its `MulDiv`), so transparent pixels never bleed
//!   their colour into visible ones.

use fast_image_resize as fr;
use image::{DynamicImage, RgbImage, RgbaImage};

use crate::imaging::geometry::{Embed, Insets, Plan, Position, Region};
use crate::imaging::options::{Options, Rgb, Trim};
use crate::imaging::picture::{Frame, Picture};

/// Why a plan could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    #[error("the plan is for a {plan_w}x{plan_h} source but the picture is {pic_w}x{pic_h}")]
    SizeMismatch {
        plan_w: u32,
        plan_h: u32,
        pic_w: u32,
        pic_h: u32,
    },
    #[error("resizing failed: {0}")]
    Resize(String),
    #[error("a pixel buffer does not match its size")]
    Buffer,
    #[error("{0}")]
    InvalidPlan(String),
}

// ---------------------------------------------------------------------------------
// Raw buffers
// ---------------------------------------------------------------------------------

/// One frame as an interleaved 8-bit buffer of 3 (RGB) or 4 (RGBA) channels.
struct Buf {
    w: u32,
    h: u32,
    ch: usize,
    data: Vec<u8>,
}

impl Buf {
    fn from_image(img: DynamicImage) -> Buf {
        let (w, h) = (img.width(), img.height());
        match img {
            DynamicImage::ImageRgb8(i) => Buf {
                w,
                h,
                ch: 3,
                data: i.into_raw(),
            },
            DynamicImage::ImageRgba8(i) => Buf {
                w,
                h,
                ch: 4,
                data: i.into_raw(),
            },
            other if other.color().has_alpha() => Buf {
                w,
                h,
                ch: 4,
                data: other.into_rgba8().into_raw(),
            },
            other => Buf {
                w,
                h,
                ch: 3,
                data: other.into_rgb8().into_raw(),
            },
        }
    }

    fn into_image(self) -> Result<DynamicImage, TransformError> {
        if self.ch == 4 {
            RgbaImage::from_raw(self.w, self.h, self.data)
                .map(DynamicImage::ImageRgba8)
                .ok_or(TransformError::Buffer)
        } else {
            RgbImage::from_raw(self.w, self.h, self.data)
                .map(DynamicImage::ImageRgb8)
                .ok_or(TransformError::Buffer)
        }
    }

    fn stride(&self) -> usize {
        self.w as usize * self.ch
    }

    /// Copies out the `w` × `h` window at (`left`, `top`), which must lie inside.
    fn crop(&self, left: u32, top: u32, w: u32, h: u32) -> Result<Buf, TransformError> {
        let inside =
            |start: u32, len: u32, side: u32| start.checked_add(len).is_some_and(|end| end <= side);
        if !inside(left, w, self.w)
            || !inside(top, h, self.h)
            || self.data.len() != self.stride() * self.h as usize
        {
            return Err(TransformError::Buffer);
        }
        let stride = self.stride();
        let row = w as usize * self.ch;
        let mut data = Vec::with_capacity(row * h as usize);
        for y in top as usize..(top + h) as usize {
            let start = y * stride + left as usize * self.ch;
            data.extend_from_slice(&self.data[start..start + row]);
        }
        Ok(Buf {
            w,
            h,
            ch: self.ch,
            data,
        })
    }

    /// Adds an opaque alpha channel to an RGB buffer.
    fn to_rgba(&self) -> Buf {
        if self.ch == 4 {
            return Buf {
                w: self.w,
                h: self.h,
                ch: 4,
                data: self.data.clone(),
            };
        }
        let mut data = Vec::with_capacity(self.w as usize * self.h as usize * 4);
        for px in self.data.chunks_exact(3) {
            data.extend_from_slice(&[px[0], px[1], px[2], 255]);
        }
        Buf {
            w: self.w,
            h: self.h,
            ch: 4,
            data,
        }
    }
}

// ---------------------------------------------------------------------------------
// The whole plan
// ---------------------------------------------------------------------------------

/// What fills the canvas of `extend` and `padding`, and what alpha is flattened onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    Transparent,
    Colour(Rgb),
}

/// Applies `plan` to every frame of `picture`. `opts` supplies the filters (`blur`,
/// `sharpen`, `pixelate`) and `background`; `output_has_alpha` says whether the output
/// format can store transparency. New canvas areas are transparent when it can and no
/// background was asked for, else the background colour (white by default), and the
/// result is then flattened onto that colour as imgproxy's `flatten` step does.
pub fn apply(
    picture: Picture,
    plan: &Plan,
    opts: &Options,
    output_has_alpha: bool,
) -> Result<Picture, TransformError> {
    let (pic_w, pic_h) = (picture.width(), picture.height());
    let plan = if (pic_w, pic_h) != (plan.src_width, plan.src_height) {
        // A decoder that shrank on load returns a smaller, same-shaped picture.
        if pic_w > plan.src_width || pic_h > plan.src_height || pic_w == 0 || pic_h == 0 {
            return Err(TransformError::SizeMismatch {
                plan_w: plan.src_width,
                plan_h: plan.src_height,
                pic_w,
                pic_h,
            });
        }
        plan.for_decoded_size(pic_w, pic_h)
    } else {
        plan.clone()
    };
    plan.validate()
        .map_err(|e| TransformError::InvalidPlan(e.to_string()))?;
    let fill = match opts.background {
        None if output_has_alpha => Fill::Transparent,
        Some(c) => Fill::Colour(c),
        None => Fill::Colour(Rgb::WHITE),
    };
    let mut resizer = fr::Resizer::new();
    let Picture { frames, loops, icc } = picture;
    let mut out = Vec::with_capacity(frames.len());
    for frame in frames {
        let buf = Buf::from_image(frame.image);
        if (buf.w, buf.h) != (plan.src_width, plan.src_height) {
            return Err(TransformError::SizeMismatch {
                plan_w: plan.src_width,
                plan_h: plan.src_height,
                pic_w: buf.w,
                pic_h: buf.h,
            });
        }
        let buf = apply_frame(buf, &plan, opts, fill, &mut resizer)?;
        out.push(Frame {
            image: buf.into_image()?,
            delay_ms: frame.delay_ms,
        });
    }
    Ok(Picture {
        frames: out,
        loops,
        icc,
    })
}

fn apply_frame(
    buf: Buf,
    plan: &Plan,
    opts: &Options,
    fill: Fill,
    resizer: &mut fr::Resizer,
) -> Result<Buf, TransformError> {
    // Steps 1 and 2: crop and resize, in one resampling pass when both are asked.
    let window = plan.crop.map(|c| resolve(&buf, &c));
    let mut buf = match (plan.resize, window) {
        (Some(size), w) => resize(&buf, w, size.width, size.height, resizer)?,
        (None, Some((l, t, w, h))) => buf.crop(l, t, w, h)?,
        (None, None) => buf,
    };
    // Step 3: rotate, then flip.
    buf = rotate(buf, plan.rotate);
    if plan.flip_horizontal {
        flip_horizontal(&mut buf);
    }
    if plan.flip_vertical {
        flip_vertical(&mut buf);
    }
    // Step 4: crop to the result.
    if let Some(r) = plan.result_crop {
        let (l, t, w, h) = resolve(&buf, &r);
        buf = buf.crop(l, t, w, h)?;
    }
    // Step 5: filters.
    if opts.blur > 0.0 {
        blur(&mut buf, opts.blur);
    }
    if opts.sharpen > 0.0 {
        sharpen(&mut buf, opts.sharpen);
    }
    if opts.pixelate > 1 {
        pixelate(&mut buf, opts.pixelate);
    }
    // Steps 6 to 8: extend, extend aspect ratio, padding.
    for e in [plan.extend, plan.extend_aspect_ratio]
        .into_iter()
        .flatten()
    {
        buf = embed(&buf, &e, fill);
    }
    if let Some(p) = plan.padding {
        buf = pad(&buf, &p, fill)?;
    }
    // Flatten when the output cannot keep alpha or a background was asked for.
    if let Fill::Colour(c) = fill {
        buf = flatten_buf(buf, c);
    }
    Ok(buf)
}

/// The window of a region inside `buf`, with `g:sm` resolved from pixels and the
/// window clamped inside the image (`buf` is at least 1×1: [`apply`] checked the plan).
fn resolve(buf: &Buf, r: &Region) -> (u32, u32, u32, u32) {
    let w = r.width.min(buf.w).max(1);
    let h = r.height.min(buf.h).max(1);
    let (l, t) = match r.position {
        Position::At { left, top } => (
            left.min(buf.w.saturating_sub(w)),
            top.min(buf.h.saturating_sub(h)),
        ),
        Position::Smart => smart_position(buf, w, h),
    };
    (l, t, w, h)
}

// ---------------------------------------------------------------------------------
// Resize
// ---------------------------------------------------------------------------------

/// Lanczos3 resampling of `window` (or the whole buffer) to `w` × `h` with
/// fast_image_resize. RGB stays RGB (3 channels are cheaper than 4); RGBA is
/// premultiplied before and un-premultiplied after by fast_image_resize's `MulDiv`.
fn resize(
    src: &Buf,
    window: Option<(u32, u32, u32, u32)>,
    w: u32,
    h: u32,
    resizer: &mut fr::Resizer,
) -> Result<Buf, TransformError> {
    let pixel_type = if src.ch == 4 {
        fr::PixelType::U8x4
    } else {
        fr::PixelType::U8x3
    };
    let w = w.max(1);
    let h = h.max(1);
    let src_view = fr::images::ImageRef::new(src.w, src.h, &src.data, pixel_type)
        .map_err(|e| TransformError::Resize(e.to_string()))?;
    let mut dst = fr::images::Image::new(w, h, pixel_type);
    let mut options = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3))
        .use_alpha(src.ch == 4);
    if let Some((l, t, cw, ch)) = window {
        options = options.crop(f64::from(l), f64::from(t), f64::from(cw), f64::from(ch));
    }
    resizer
        .resize(&src_view, &mut dst, &options)
        .map_err(|e| TransformError::Resize(e.to_string()))?;
    Ok(Buf {
        w,
        h,
        ch: src.ch,
        data: dst.into_vec(),
    })
}

/// Lanczos3 of a straight-alpha RGBA image to `tw × th` (alpha premultiplied while
/// resampling), for the small images beside the pipeline (watermarks, info thumbnails).
pub fn resize_rgba(
    src: &image::RgbaImage,
    tw: u32,
    th: u32,
) -> Result<image::RgbaImage, TransformError> {
    let err = |e: &dyn std::fmt::Display| TransformError::Resize(e.to_string());
    let view =
        fr::images::ImageRef::new(src.width(), src.height(), src.as_raw(), fr::PixelType::U8x4)
            .map_err(|e| err(&e))?;
    let mut dst = fr::images::Image::new(tw.max(1), th.max(1), fr::PixelType::U8x4);
    let options = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3))
        .use_alpha(true);
    fr::Resizer::new()
        .resize(&view, &mut dst, &options)
        .map_err(|e| err(&e))?;
    image::RgbaImage::from_raw(tw.max(1), th.max(1), dst.into_vec()).ok_or(TransformError::Buffer)
}

// ---------------------------------------------------------------------------------
// Rotate and flip
// ---------------------------------------------------------------------------------

/// Rotates clockwise by 0, 90, 180 or 270 degrees.
fn rotate(buf: Buf, angle: u16) -> Buf {
    match (angle % 360, buf.ch) {
        (90, 3) => rotate_quarter::<3>(&buf, true),
        (90, _) => rotate_quarter::<4>(&buf, true),
        (270, 3) => rotate_quarter::<3>(&buf, false),
        (270, _) => rotate_quarter::<4>(&buf, false),
        (180, _) => {
            let mut buf = buf;
            flip_horizontal(&mut buf);
            flip_vertical(&mut buf);
            buf
        }
        _ => buf,
    }
}

/// A quarter turn, clockwise or counter-clockwise. Writes the destination in order
/// and reads the source in columns, in tiles of 32 rows to stay in cache.
fn rotate_quarter<const N: usize>(src: &Buf, clockwise: bool) -> Buf {
    let (w, h) = (src.w as usize, src.h as usize);
    // The destination is h wide and w tall.
    let mut data = vec![0u8; w * h * N];
    const TILE: usize = 32;
    for ty in (0..w).step_by(TILE) {
        for tx in (0..h).step_by(TILE) {
            for dy in ty..(ty + TILE).min(w) {
                for dx in tx..(tx + TILE).min(h) {
                    // Clockwise: dst(dx, dy) = src(x = dy, y = h-1-dx).
                    // Counter-clockwise: dst(dx, dy) = src(x = w-1-dy, y = dx).
                    let (sx, sy) = if clockwise {
                        (dy, h - 1 - dx)
                    } else {
                        (w - 1 - dy, dx)
                    };
                    let s = (sy * w + sx) * N;
                    let d = (dy * h + dx) * N;
                    data[d..d + N].copy_from_slice(&src.data[s..s + N]);
                }
            }
        }
    }
    Buf {
        w: src.h,
        h: src.w,
        ch: N,
        data,
    }
}

fn flip_horizontal(buf: &mut Buf) {
    let ch = buf.ch;
    let stride = buf.stride();
    for row in buf.data.chunks_exact_mut(stride) {
        let n = row.len() / ch;
        for i in 0..n / 2 {
            let (a, b) = (i * ch, (n - 1 - i) * ch);
            for c in 0..ch {
                row.swap(a + c, b + c);
            }
        }
    }
}

fn flip_vertical(buf: &mut Buf) {
    let stride = buf.stride();
    let h = buf.h as usize;
    for y in 0..h / 2 {
        let (top, bottom) = buf.data.split_at_mut((h - 1 - y) * stride);
        top[y * stride..(y + 1) * stride].swap_with_slice(&mut bottom[..stride]);
    }
}

// ---------------------------------------------------------------------------------
// Smart crop
// ---------------------------------------------------------------------------------

/// `g:sm`: where a `w` × `h` window shows the most detail. A simple stand-in for
/// libvips' `smartcrop` (which imgproxy uses): the image is point-sampled to a luma
/// grid of at most about 128 cells a side, up to 17 evenly spaced candidate positions
/// are tried along each free axis, and the window whose luma histogram (32 bins) has
/// the highest Shannon entropy wins; ties go to the candidate nearest the centre.
fn smart_position(buf: &Buf, w: u32, h: u32) -> (u32, u32) {
    let (free_x, free_y) = (buf.w.saturating_sub(w), buf.h.saturating_sub(h));
    if free_x == 0 && free_y == 0 {
        return (0, 0);
    }
    let step = (buf.w.max(buf.h) as usize).div_ceil(128).max(1);
    let gw = (buf.w as usize).div_ceil(step);
    let gh = (buf.h as usize).div_ceil(step);
    let mut grid = Vec::with_capacity(gw * gh);
    for gy in 0..gh {
        let row = gy * step * buf.stride();
        for gx in 0..gw {
            let p = row + gx * step * buf.ch;
            let px = &buf.data[p..p + 3];
            let luma =
                (u32::from(px[0]) * 54 + u32::from(px[1]) * 183 + u32::from(px[2]) * 19) >> 8;
            grid.push((luma >> 3) as u8);
        }
    }
    let candidates = |free: u32| -> Vec<u32> {
        let n = free.min(16) + 1;
        (0..n)
            .map(|i| {
                if n == 1 {
                    0
                } else {
                    ((u64::from(i) * u64::from(free) + u64::from(n - 1) / 2) / u64::from(n - 1))
                        as u32
                }
            })
            .collect()
    };
    let (xs, ys) = (candidates(free_x), candidates(free_y));
    let mut best = (f64::MIN, u64::MAX, 0u32, 0u32);
    let mut hist = [0u32; 32];
    for &y in &ys {
        for &x in &xs {
            hist.fill(0);
            let gx0 = (x as usize).div_ceil(step);
            let gx1 = ((x + w) as usize).div_ceil(step).min(gw);
            let gy0 = (y as usize).div_ceil(step);
            let gy1 = ((y + h) as usize).div_ceil(step).min(gh);
            let mut total = 0u32;
            for gy in gy0..gy1 {
                for &v in &grid[gy * gw + gx0..gy * gw + gx1.max(gx0)] {
                    hist[v as usize] += 1;
                    total += 1;
                }
            }
            let entropy = if total == 0 {
                0.0
            } else {
                let t = f64::from(total);
                hist.iter()
                    .filter(|&&c| c > 0)
                    .map(|&c| {
                        let p = f64::from(c) / t;
                        -p * p.log2()
                    })
                    .sum()
            };
            let dist = u64::from(x.abs_diff(free_x / 2)) + u64::from(y.abs_diff(free_y / 2));
            if entropy > best.0 + 1e-9 || ((entropy - best.0).abs() <= 1e-9 && dist < best.1) {
                best = (entropy, dist, x, y);
            }
        }
    }
    (best.2, best.3)
}

// ---------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------

/// Above this sigma a blur is three box blurs ([`box_blur`]) instead of the exact
/// kernel: 31 taps at most per pixel and pass, and a cost that does not grow with the
/// sigma beyond it (the parser caps sigmas at 100, a 361-tap kernel otherwise).
const BOX_BLUR_SIGMA: f32 = 8.0;

/// The weights of libvips' `gaussblur` kernel (default `min_ampl` 0.2: cut where the
/// gaussian falls below 0.2 of its peak), unnormalised, at most `2 × max_radius + 1`
/// wide (taps further out than the image only re-read its edge pixels).
fn gaussian_weights(sigma: f32, max_radius: usize) -> Vec<f64> {
    let sigma = if sigma.is_finite() {
        f64::from(sigma.max(0.01))
    } else {
        0.01
    };
    let radius = ((sigma * (2.0 * 5f64.ln()).sqrt()).ceil() as usize).clamp(1, max_radius.max(1));
    (0..=2 * radius)
        .map(|i| {
            let x = i as f64 - radius as f64;
            (-(x * x) / (2.0 * sigma * sigma)).exp()
        })
        .collect()
}

/// A normalised [`gaussian_weights`] kernel in 1/65536ths.
fn gaussian_kernel(sigma: f32, max_radius: usize) -> Vec<i32> {
    let weights = gaussian_weights(sigma, max_radius);
    let radius = weights.len() / 2;
    let sum: f64 = weights.iter().sum();
    let mut k: Vec<i32> = weights
        .iter()
        .map(|w| (w / sum * 65536.0).round() as i32)
        .collect();
    // Make the weights sum to exactly 1.0 so flat areas stay flat.
    let err = 65536 - k.iter().sum::<i32>();
    k[radius] += err;
    k
}

/// Separable convolution of `ch` interleaved channels with edge pixels repeated. The
/// kernel's weights are positive and sum to 65536, so an `i32` accumulator suffices.
fn convolve(data: &mut [u8], w: usize, h: usize, ch: usize, kernel: &[i32]) {
    if w == 0 || h == 0 {
        return;
    }
    let r = kernel.len() / 2;
    let stride = w * ch;
    let mut acc = vec![0i32; stride];
    let mut line = vec![0u8; stride];
    // Horizontal pass, row by row.
    for y in 0..h {
        let row = &mut data[y * stride..(y + 1) * stride];
        line.copy_from_slice(row);
        acc.fill(0);
        for (k, &wgt) in kernel.iter().enumerate() {
            for x in 0..w {
                let j = (x + k).saturating_sub(r).min(w - 1);
                let a = &mut acc[x * ch..x * ch + ch];
                for (a, &s) in a.iter_mut().zip(&line[j * ch..j * ch + ch]) {
                    *a += wgt * i32::from(s);
                }
            }
        }
        for (d, &a) in row.iter_mut().zip(&acc) {
            *d = ((a + 32768) >> 16).clamp(0, 255) as u8;
        }
    }
    // Vertical pass, also row by row (whole source rows are summed: cache-friendly).
    let src = data.to_vec();
    for y in 0..h {
        acc.fill(0);
        for (k, &wgt) in kernel.iter().enumerate() {
            let j = (y + k).saturating_sub(r).min(h - 1);
            for (a, &s) in acc.iter_mut().zip(&src[j * stride..(j + 1) * stride]) {
                *a += wgt * i32::from(s);
            }
        }
        for (d, &a) in data[y * stride..(y + 1) * stride].iter_mut().zip(&acc) {
            *d = ((a + 32768) >> 16).clamp(0, 255) as u8;
        }
    }
}

/// Multiplies colour by alpha (for filters that mix neighbouring pixels).
fn premultiply(data: &mut [u8]) {
    for px in data.chunks_exact_mut(4) {
        let a = u32::from(px[3]);
        for c in &mut px[..3] {
            *c = ((u32::from(*c) * a + 127) / 255) as u8;
        }
    }
}

fn unpremultiply(data: &mut [u8]) {
    for px in data.chunks_exact_mut(4) {
        let a = u32::from(px[3]);
        for c in &mut px[..3] {
            // Fully transparent pixels get black (0) colour.
            *c = (u32::from(*c) * 255 + a / 2)
                .checked_div(a)
                .map_or(0, |v| v.min(255)) as u8;
        }
    }
}

/// Gaussian blur of `ch` interleaved channels: libvips' kernel up to
/// [`BOX_BLUR_SIGMA`], above it three box blurs of the same variance (the
/// approximation the W3C filter effects spec gives for `feGaussianBlur`), whose cost
/// is a few additions per pixel and pass whatever the sigma.
fn gaussian_blur(data: &mut [u8], w: usize, h: usize, ch: usize, sigma: f32) {
    if w == 0 || h == 0 || data.len() != w * h * ch {
        return;
    }
    let max_radius = w.max(h);
    if sigma <= BOX_BLUR_SIGMA {
        convolve(data, w, h, ch, &gaussian_kernel(sigma, max_radius));
        return;
    }
    // The variance of the (cut) kernel the exact path would use.
    let weights = gaussian_weights(sigma, max_radius);
    let r = (weights.len() / 2) as f64;
    let sum: f64 = weights.iter().sum();
    let variance = weights
        .iter()
        .enumerate()
        .map(|(i, w)| w * (i as f64 - r).powi(2))
        .sum::<f64>()
        / sum;
    for radius in box_radii(variance.sqrt()) {
        box_blur(data, w, h, ch, radius);
    }
}

/// The radii of three box blurs whose combined variance is about `sigma²` (Kutskir's
/// `boxesForGauss`: widths `wl` and `wl + 2`, odd, as many of each as fits best).
fn box_radii(sigma: f64) -> [usize; 3] {
    let n = 3.0;
    let ideal = (12.0 * sigma * sigma / n + 1.0).sqrt();
    let mut wl = ideal.floor().max(1.0);
    if wl % 2.0 == 0.0 {
        wl -= 1.0;
    }
    let m =
        ((12.0 * sigma * sigma - n * wl * wl - 4.0 * n * wl - 3.0 * n) / (-4.0 * wl - 4.0)).round();
    let mut out = [0; 3];
    for (i, r) in out.iter_mut().enumerate() {
        let width = if (i as f64) < m { wl } else { wl + 2.0 };
        // A finite width of at most a few thousand: the sigma is capped.
        *r = ((width - 1.0) / 2.0).max(0.0) as usize;
    }
    out
}

/// One box blur of `radius` along rows, then along columns, with edge pixels repeated:
/// a running sum, so a few additions per pixel whatever the radius (which is cut to
/// the image's side: wider windows only re-read the edge).
fn box_blur(data: &mut [u8], w: usize, h: usize, ch: usize, radius: usize) {
    if radius == 0 || w == 0 || h == 0 {
        return;
    }
    let stride = w * ch;
    // Rows.
    let r = radius.min(w);
    let div = (2 * r + 1) as u32;
    let mut line = vec![0u8; stride];
    for y in 0..h {
        let row = &mut data[y * stride..(y + 1) * stride];
        line.copy_from_slice(row);
        for c in 0..ch {
            let at = |x: usize| u32::from(line[x.min(w - 1) * ch + c]);
            let mut sum = (r as u32 + 1) * at(0) + (1..=r).map(at).sum::<u32>();
            for x in 0..w {
                row[x * ch + c] = ((sum + div / 2) / div) as u8;
                sum += at(x + r + 1);
                sum -= at(x.saturating_sub(r));
            }
        }
    }
    // Columns, a whole row at a time (cache-friendly).
    let r = radius.min(h);
    let div = (2 * r + 1) as u32;
    let src = data.to_vec();
    let row = |y: usize| &src[y.min(h - 1) * stride..][..stride];
    let mut sums: Vec<u32> = row(0)
        .iter()
        .map(|&v| (r as u32 + 1) * u32::from(v))
        .collect();
    for k in 1..=r {
        for (s, &v) in sums.iter_mut().zip(row(k)) {
            *s += u32::from(v);
        }
    }
    for y in 0..h {
        for (d, &s) in data[y * stride..(y + 1) * stride].iter_mut().zip(&sums) {
            *d = ((s + div / 2) / div) as u8;
        }
        let (add, sub) = (row(y + r + 1), row(y.saturating_sub(r)));
        for ((s, &a), &b) in sums.iter_mut().zip(add).zip(sub) {
            *s = *s + u32::from(a) - u32::from(b);
        }
    }
}

/// `blur:sigma`: gaussian blur as libvips' `gaussblur` (premultiplied when there is
/// alpha, as imgproxy does).
fn blur(buf: &mut Buf, sigma: f32) {
    if buf.ch == 4 {
        premultiply(&mut buf.data);
    }
    gaussian_blur(&mut buf.data, buf.w as usize, buf.h as usize, buf.ch, sigma);
    if buf.ch == 4 {
        unpremultiply(&mut buf.data);
    }
}

/// `sharpen:sigma`: an unsharp mask on luminance with libvips `sharpen`'s defaults
/// (x1 = 2, m1 = 0, m2 = 3, y2 = 10, y3 = 20 on L* 0..100, here scaled to 0..255):
/// differences from the gaussian-blurred luminance below x1 are left alone, larger ones
/// are amplified 3× and capped at +y2 / −y3, and the result is added to every channel.
fn sharpen(buf: &mut Buf, sigma: f32) {
    const SCALE: f32 = 2.55;
    let (x1, m2, y2, y3) = (2.0 * SCALE, 3.0f32, 10.0 * SCALE, 20.0 * SCALE);
    let (w, h, ch) = (buf.w as usize, buf.h as usize, buf.ch);
    let mut luma: Vec<u8> = buf
        .data
        .chunks_exact(ch)
        .map(|p| ((u32::from(p[0]) * 54 + u32::from(p[1]) * 183 + u32::from(p[2]) * 19) >> 8) as u8)
        .collect();
    let original = luma.clone();
    gaussian_blur(&mut luma, w, h, 1, sigma);
    for ((px, &l), &b) in buf.data.chunks_exact_mut(ch).zip(&original).zip(&luma) {
        let d = f32::from(l) - f32::from(b);
        let mag = d.abs();
        if mag <= x1 {
            continue;
        }
        let boost = if d > 0.0 {
            ((mag - x1) * m2).min(y2)
        } else {
            -((mag - x1) * m2).min(y3)
        };
        for c in &mut px[..3] {
            *c = (f32::from(*c) + boost).round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// `pixelate:size`: every `size` × `size` block becomes its average colour (colour
/// weighted by alpha). The size is capped at the image's larger side, as imgproxy does.
fn pixelate(buf: &mut Buf, size: u32) {
    let size = size.min(buf.w.max(buf.h)) as usize;
    if size <= 1 {
        return;
    }
    let (w, h, ch) = (buf.w as usize, buf.h as usize, buf.ch);
    for by in (0..h).step_by(size) {
        for bx in (0..w).step_by(size) {
            let (ey, ex) = ((by + size).min(h), (bx + size).min(w));
            let mut sum = [0u64; 4];
            let mut weight = 0u64;
            let mut count = 0u64;
            for y in by..ey {
                for x in bx..ex {
                    let p = &buf.data[(y * w + x) * ch..(y * w + x) * ch + ch];
                    let a = if ch == 4 { u64::from(p[3]) } else { 255 };
                    for c in 0..3 {
                        sum[c] += u64::from(p[c]) * a;
                    }
                    if ch == 4 {
                        sum[3] += a;
                    }
                    weight += a;
                    count += 1;
                }
            }
            let mut avg = [0u8; 4];
            for c in 0..3 {
                avg[c] = (sum[c] + weight / 2).checked_div(weight).unwrap_or(0) as u8;
            }
            if ch == 4 {
                avg[3] = ((sum[3] + count / 2) / count) as u8;
            }
            for y in by..ey {
                for x in bx..ex {
                    let p = (y * w + x) * ch;
                    buf.data[p..p + ch].copy_from_slice(&avg[..ch]);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Canvas: extend, padding, flatten
// ---------------------------------------------------------------------------------

/// Places `buf` on a `e.width` × `e.height` canvas at (`e.left`, `e.top`), cutting off
/// what falls outside.
fn embed(buf: &Buf, e: &Embed, fill: Fill) -> Buf {
    let converted;
    let src = if fill == Fill::Transparent && buf.ch == 3 {
        converted = buf.to_rgba();
        &converted
    } else {
        buf
    };
    let ch = src.ch;
    let px: [u8; 4] = match fill {
        Fill::Transparent => [0, 0, 0, 0],
        Fill::Colour(c) => [c.r, c.g, c.b, 255],
    };
    let (cw, chh) = (e.width as usize, e.height as usize);
    let mut data = Vec::with_capacity(cw * chh * ch);
    for _ in 0..cw * chh {
        data.extend_from_slice(&px[..ch]);
    }
    let left = e.left as usize;
    let top = e.top as usize;
    // Whatever the offsets, only the part of the image that lands on the canvas is
    // copied: with copy_w > 0, left < cw, and top + y < chh below.
    let copy_w = (src.w as usize).min(cw.saturating_sub(left));
    let copy_h = (src.h as usize).min(chh.saturating_sub(top));
    if copy_w > 0 {
        for y in 0..copy_h {
            let s = y * src.stride();
            let d = ((top + y) * cw + left) * ch;
            data[d..d + copy_w * ch].copy_from_slice(&src.data[s..s + copy_w * ch]);
        }
    }
    Buf {
        w: e.width,
        h: e.height,
        ch,
        data,
    }
}

fn pad(buf: &Buf, p: &Insets, fill: Fill) -> Result<Buf, TransformError> {
    let sum = |a: u32, b: u32, c: u32| a.checked_add(b).and_then(|v| v.checked_add(c));
    let (Some(width), Some(height)) = (sum(buf.w, p.left, p.right), sum(buf.h, p.top, p.bottom))
    else {
        return Err(TransformError::Buffer);
    };
    Ok(embed(
        buf,
        &Embed {
            width,
            height,
            left: p.left,
            top: p.top,
        },
        fill,
    ))
}

fn flatten_buf(buf: Buf, bg: Rgb) -> Buf {
    if buf.ch != 4 {
        return buf;
    }
    let bgc = [u32::from(bg.r), u32::from(bg.g), u32::from(bg.b)];
    let mut data = Vec::with_capacity(buf.w as usize * buf.h as usize * 3);
    for px in buf.data.chunks_exact(4) {
        let a = u32::from(px[3]);
        for c in 0..3 {
            data.push(((u32::from(px[c]) * a + bgc[c] * (255 - a) + 127) / 255) as u8);
        }
    }
    Buf {
        w: buf.w,
        h: buf.h,
        ch: 3,
        data,
    }
}

/// Blends every frame onto `background` and drops alpha, for outputs without alpha
/// (JPEG) or when a background colour was asked for. RGB frames pass unchanged.
pub fn flatten(picture: Picture, background: Rgb) -> Result<Picture, TransformError> {
    let Picture { frames, loops, icc } = picture;
    let frames = frames
        .into_iter()
        .map(|f| {
            let buf = flatten_buf(Buf::from_image(f.image), background);
            Ok(Frame {
                image: buf.into_image()?,
                delay_ms: f.delay_ms,
            })
        })
        .collect::<Result<Vec<_>, TransformError>>()?;
    Ok(Picture { frames, loops, icc })
}

// ---------------------------------------------------------------------------------
// Trim
// ---------------------------------------------------------------------------------

/// The `left, top, width, height` that imgproxy's trim keeps, or `None` to keep all.
fn trim_box(buf: &Buf, t: &Trim) -> Option<(u32, u32, u32, u32)> {
    let (w, h, ch) = (buf.w as usize, buf.h as usize, buf.ch);
    if w == 0 || h == 0 {
        return None;
    }
    // As imgproxy: alpha is flattened onto magenta before looking at colours.
    let rgb_at = |i: usize| -> [i32; 3] {
        let p = &buf.data[i * ch..i * ch + ch];
        if ch == 4 {
            let a = i32::from(p[3]);
            let bg = [255, 0, 255];
            let mut out = [0; 3];
            for c in 0..3 {
                out[c] = (i32::from(p[c]) * a + bg[c] * (255 - a) + 127) / 255;
            }
            out
        } else {
            [i32::from(p[0]), i32::from(p[1]), i32::from(p[2])]
        }
    };
    let bg = match t.color {
        Some(c) => [i32::from(c.r), i32::from(c.g), i32::from(c.b)],
        None => rgb_at(0),
    };
    let threshold = t.threshold;
    let is_content = |i: usize| {
        let p = rgb_at(i);
        (0..3).any(|c| f64::from((p[c] - bg[c]).abs()) > threshold)
    };
    let row_has = |y: usize| (0..w).any(|x| is_content(y * w + x));
    let top = (0..h).find(|&y| row_has(y))?;
    let bottom = (top..h).rev().find(|&y| row_has(y))?;
    let col_has = |x: usize| (top..=bottom).any(|y| is_content(y * w + x));
    let left = (0..w).find(|&x| col_has(x))?;
    let right = (left..w).rev().find(|&x| col_has(x))?;
    let (mut left, mut top) = (left as i64, top as i64);
    let mut width = right as i64 - left + 1;
    let mut height = bottom as i64 - top + 1;
    if t.equal_hor {
        let right_margin = w as i64 - left - width;
        let diff = right_margin - left;
        if diff > 0 {
            width += diff;
        } else if diff < 0 {
            left = right_margin;
            width -= diff;
        }
    }
    if t.equal_ver {
        let bottom_margin = h as i64 - top - height;
        let diff = bottom_margin - top;
        if diff > 0 {
            height += diff;
        } else if diff < 0 {
            top = bottom_margin;
            height -= diff;
        }
    }
    Some((left as u32, top as u32, width as u32, height as u32))
}

/// imgproxy's `trim`: cuts off borders of the top-left pixel's colour (or `t.color`)
/// where no channel differs from it by more than `t.threshold`; `equal_hor` /
/// `equal_ver` make opposite borders equal (the smaller one wins). Pixels with alpha
/// are judged flattened onto magenta, as imgproxy does. Unlike libvips' `find_trim`
/// there is no 3×3 median filter first. Does nothing when trim is off, when the whole
/// image is background, and (as imgproxy) for animations. Runs before
/// `geometry::plan`, on the full-size decoded picture.
pub fn trim(picture: Picture, t: &Trim) -> Result<Picture, TransformError> {
    if !t.enabled || picture.is_animated() || picture.frames.is_empty() {
        return Ok(picture);
    }
    let Picture { frames, loops, icc } = picture;
    let mut out = Vec::with_capacity(frames.len());
    for f in frames {
        let buf = Buf::from_image(f.image);
        let buf = match trim_box(&buf, t) {
            Some((l, tp, w, h)) if (w, h) != (buf.w, buf.h) => buf.crop(l, tp, w, h)?,
            _ => buf,
        };
        out.push(Frame {
            image: buf.into_image()?,
            delay_ms: f.delay_ms,
        });
    }
    Ok(Picture {
        frames: out,
        loops,
        icc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::geometry::{self, Limits, Size};
    use crate::imaging::options::{ParseContext, parse};

    const RED: [u8; 3] = [255, 0, 0];
    const BLUE: [u8; 3] = [0, 0, 255];

    fn opts(path: &str) -> Options {
        let segs: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        parse(&segs, &ParseContext::default()).unwrap()
    }

    fn rgb(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Picture {
        Picture::still(DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
            image::Rgb(f(x, y))
        })))
    }

    fn rgba(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 4]) -> Picture {
        Picture::still(DynamicImage::ImageRgba8(RgbaImage::from_fn(
            w,
            h,
            |x, y| image::Rgba(f(x, y)),
        )))
    }

    /// Plans and applies `path` (imgproxy options) to `pic`.
    fn run(pic: Picture, path: &str, output_has_alpha: bool) -> Picture {
        let o = opts(path);
        let plan = geometry::plan(&o, pic.width(), pic.height(), &Limits::default()).unwrap();
        let out = apply(pic, &plan, &o, output_has_alpha).unwrap();
        assert_eq!(
            (out.width(), out.height()),
            (plan.width, plan.height),
            "{path}"
        );
        out
    }

    fn px3(p: &Picture, x: u32, y: u32) -> [u8; 3] {
        p.frames[0].image.as_rgb8().unwrap().get_pixel(x, y).0
    }

    fn px4(p: &Picture, x: u32, y: u32) -> [u8; 4] {
        p.frames[0].image.as_rgba8().unwrap().get_pixel(x, y).0
    }

    /// Red left half, blue right half.
    fn halves(w: u32, h: u32) -> Picture {
        rgb(w, h, |x, _| if x < w / 2 { RED } else { BLUE })
    }

    #[test]
    fn crop_keeps_the_right_pixels() {
        // 40×20, red left half: a 20×10 crop at the west edge is all red…
        let out = run(halves(40, 20), "c:20:10:we", false);
        assert_eq!((out.width(), out.height()), (20, 10));
        for (x, y) in [(0, 0), (19, 9), (10, 5)] {
            assert_eq!(px3(&out, x, y), RED);
        }
        // …at the east edge all blue, and centred it straddles the border at x = 10.
        let out = run(halves(40, 20), "c:20:10:ea", false);
        assert_eq!(px3(&out, 0, 0), BLUE);
        let out = run(halves(40, 20), "c:20:10", false);
        // centre crop starts at x = round_even((40-20+1)/2) = 10
        assert_eq!(px3(&out, 9, 5), RED);
        assert_eq!(px3(&out, 10, 5), BLUE);
    }

    #[test]
    fn rotate_moves_a_marked_corner() {
        // 4×2 black image with a white top-left pixel.
        let mark = |x, y| {
            if (x, y) == (0, 0) {
                [255, 255, 255]
            } else {
                [0, 0, 0]
            }
        };
        let out = run(rgb(4, 2, mark), "rot:90", false);
        assert_eq!((out.width(), out.height()), (2, 4));
        // clockwise: top-left goes to top-right
        assert_eq!(px3(&out, 1, 0), [255, 255, 255]);
        assert_eq!(px3(&out, 0, 0), [0, 0, 0]);
        let out = run(rgb(4, 2, mark), "rot:180", false);
        assert_eq!(px3(&out, 3, 1), [255, 255, 255]);
        let out = run(rgb(4, 2, mark), "rot:270", false);
        assert_eq!((out.width(), out.height()), (2, 4));
        assert_eq!(px3(&out, 0, 3), [255, 255, 255]);
        let out = run(rgb(4, 2, mark), "fl:1:0", false);
        assert_eq!(px3(&out, 3, 0), [255, 255, 255]);
        let out = run(rgb(4, 2, mark), "fl:0:1", false);
        assert_eq!(px3(&out, 0, 1), [255, 255, 255]);
        // RGBA takes the same path with 4 channels.
        let out = run(
            rgba(3, 5, |x, y| {
                if (x, y) == (0, 0) {
                    [9, 9, 9, 9]
                } else {
                    [0; 4]
                }
            }),
            "rot:90",
            true,
        );
        assert_eq!(px4(&out, 4, 0), [9, 9, 9, 9]);
    }

    #[test]
    fn crop_before_rotation_selects_what_the_user_sees() {
        // Red left half. After rot:90 the red half is on top; `c:…:no` must keep red.
        let out = run(halves(40, 20), "rot:90/c:20:20:no", false);
        assert_eq!((out.width(), out.height()), (20, 20));
        assert_eq!(px3(&out, 10, 10), RED);
        let out = run(halves(40, 20), "rot:90/c:20:20:so", false);
        assert_eq!(px3(&out, 10, 10), BLUE);
    }

    #[test]
    fn resize_and_fill_result_crop() {
        let out = run(halves(200, 100), "rs:fill:50:50/g:we", false);
        assert_eq!((out.width(), out.height()), (50, 50));
        assert_eq!(px3(&out, 25, 25), RED);
        let out = run(halves(200, 100), "rs:fill:50:50/g:ea", false);
        assert_eq!(px3(&out, 25, 25), BLUE);
        // fit keeps both halves, away from the border the colours are exact
        let out = run(halves(200, 100), "rs:fit:50:50", false);
        assert_eq!((out.width(), out.height()), (50, 25));
        assert_eq!(px3(&out, 5, 12), RED);
        assert_eq!(px3(&out, 45, 12), BLUE);
        assert!(matches!(out.frames[0].image, DynamicImage::ImageRgb8(_)));
    }

    #[test]
    fn premultiplied_resize_has_no_dark_fringe() {
        // Left half fully transparent *black*, right half opaque white.
        let pic = rgba(64, 32, |x, _| {
            if x < 32 {
                [0, 0, 0, 0]
            } else {
                [255, 255, 255, 255]
            }
        });
        let out = run(pic, "rs:fit:13:0/el:0", true);
        let img = out.frames[0].image.as_rgba8().unwrap();
        let mut seen_partial = false;
        for p in img.pixels() {
            let [r, g, b, a] = p.0;
            if a > 0 {
                assert!(r >= 250 && g >= 250 && b >= 250, "grey fringe {:?}", p.0);
            }
            seen_partial |= a > 0 && a < 255;
        }
        assert!(seen_partial, "the edge should be partly transparent");
    }

    #[test]
    fn smart_crop_finds_the_detail() {
        // Flat grey with a noisy block near the right edge.
        let pic = rgb(300, 100, |x, y| {
            if (230..290).contains(&x) {
                let v = ((x * 7919 + y * 104729) % 251) as u8;
                [v, v.wrapping_mul(3), v.wrapping_mul(7)]
            } else {
                [128, 128, 128]
            }
        });
        let out = run(pic, "rs:fill:100:100/g:sm", false);
        // The chosen window holds (nearly) all 60 noisy columns, not the flat middle
        // that centre gravity would pick.
        let img = out.frames[0].image.as_rgb8().unwrap();
        let noisy = img.pixels().filter(|p| p.0 != [128, 128, 128]).count();
        assert!(noisy > 5000, "only {noisy} detailed pixels in the window");
        let out = run(halves(300, 100), "c:100:100:sm", false);
        assert_eq!((out.width(), out.height()), (100, 100));
    }

    #[test]
    fn extend_and_padding_backgrounds() {
        let red = rgb(10, 10, |_, _| RED);
        // Output with alpha, no background: transparent canvas, image centred.
        let out = run(red.clone(), "rs:fit:20:20/ex:1", true);
        assert_eq!((out.width(), out.height()), (20, 20));
        assert_eq!(px4(&out, 0, 0), [0, 0, 0, 0]);
        assert_eq!(px4(&out, 10, 10), [255, 0, 0, 255]);
        // calc_position: left = round_even((20-10+1)/2) = 6 (5.5 → 6)
        assert_eq!(px4(&out, 5, 10)[3], 0);
        assert_eq!(px4(&out, 6, 10), [255, 0, 0, 255]);
        // JPEG-like output: white.
        let out = run(red.clone(), "rs:fit:20:20/ex:1", false);
        assert_eq!(px3(&out, 0, 0), [255, 255, 255]);
        // Asked-for background.
        let out = run(red.clone(), "pd:2:0:0:3/bg:00ff00", true);
        assert_eq!((out.width(), out.height()), (13, 12));
        assert_eq!(px3(&out, 0, 0), [0, 255, 0]);
        assert_eq!(px3(&out, 3, 2), RED);
        assert_eq!(px3(&out, 2, 2), [0, 255, 0]);
        // extend_aspect_ratio to 1:2 with north gravity.
        let out = run(red, "rs:fit:10:20/exar:1:no", false);
        assert_eq!((out.width(), out.height()), (10, 20));
        assert_eq!(px3(&out, 5, 5), RED);
        assert_eq!(px3(&out, 5, 15), [255, 255, 255]);
    }

    #[test]
    fn flatten_blends_onto_background() {
        let pic = rgba(2, 1, |x, _| {
            if x == 0 {
                [255, 0, 0, 255]
            } else {
                [255, 0, 0, 0]
            }
        });
        let out = flatten(pic.clone(), Rgb { r: 0, g: 0, b: 255 }).unwrap();
        assert_eq!(px3(&out, 0, 0), [255, 0, 0]);
        assert_eq!(px3(&out, 1, 0), [0, 0, 255]);
        let half = rgba(1, 1, |_, _| [255, 255, 255, 128]);
        let out = flatten(half, Rgb { r: 0, g: 0, b: 0 }).unwrap();
        assert_eq!(px3(&out, 0, 0), [128, 128, 128]);
        // apply() flattens for outputs without alpha
        let out = run(pic, "", false);
        assert_eq!(px3(&out, 1, 0), [255, 255, 255]);
    }

    #[test]
    fn blur_sharpen_pixelate() {
        // A hard vertical edge.
        let edge = || {
            rgb(
                20,
                4,
                |x, _| if x < 10 { [0, 0, 0] } else { [200, 200, 200] },
            )
        };
        let out = run(edge(), "bl:2", false);
        let (a, b) = (px3(&out, 9, 2)[0], px3(&out, 10, 2)[0]);
        assert!(
            a > 20 && a < 100 && b > 100 && b < 180,
            "blurred edge {a} {b}"
        );
        // Far from the edge nothing changes; flat stays flat.
        assert_eq!(px3(&out, 0, 0), [0, 0, 0]);
        assert_eq!(px3(&out, 19, 3), [200, 200, 200]);

        let soft = || rgb(20, 4, |x, _| [(x * 10) as u8 + 50; 3]);
        let out = run(soft(), "sh:1", false);
        // a linear ramp has no second derivative: unchanged inside
        assert_eq!(px3(&out, 10, 2), [150, 150, 150]);
        let out = run(edge(), "sh:1", false);
        // overshoot on both sides of the edge
        assert!(px3(&out, 10, 2)[0] > 200);
        assert!(px3(&out, 9, 2)[0] == 0);
        let out = run(
            rgb(20, 4, |x, _| if x < 10 { [60; 3] } else { [200; 3] }),
            "sh:1",
            false,
        );
        assert!(px3(&out, 9, 2)[0] < 60 && px3(&out, 10, 2)[0] > 200);

        let out = run(rgb(4, 2, |x, _| [(x * 40) as u8; 3]), "pix:2", false);
        assert_eq!(px3(&out, 0, 0), [20, 20, 20]);
        assert_eq!(px3(&out, 1, 1), [20, 20, 20]);
        assert_eq!(px3(&out, 2, 0), [100, 100, 100]);
    }

    #[test]
    fn large_blurs_are_box_blurs_close_to_the_kernel() {
        // Guards: a blur's cost grew with its sigma (at sigma 600 a 2001-tap kernel per
        // pixel and pass, minutes on a large result). Kernels are now cut to the image
        // and sigmas above BOX_BLUR_SIGMA are three box blurs of the kernel's variance.
        let (w, h) = (160, 40);
        let img: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                let v: u8 = if i % w < 80 { 20 } else { 220 };
                [v, v / 2, 255 - v]
            })
            .collect();
        for sigma in [8.5f32, 12.0, 30.0] {
            let mut exact = img.clone();
            convolve(&mut exact, w, h, 3, &gaussian_kernel(sigma, w.max(h)));
            let mut approx = img.clone();
            gaussian_blur(&mut approx, w, h, 3, sigma);
            let max = exact
                .iter()
                .zip(&approx)
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap_or(0);
            eprintln!("sigma {sigma}: box blurs within {max} of the kernel");
            assert!(max <= 4, "sigma {sigma}: {max}");
        }
        // Flat stays flat, however wide the blur and however small the image.
        let mut flat = vec![77u8; 3 * 2 * 4];
        gaussian_blur(&mut flat, 3, 2, 4, 100.0);
        assert!(flat.iter().all(|&v| v == 77));
        gaussian_blur(&mut flat, 3, 2, 4, 2.0);
        assert!(flat.iter().all(|&v| v == 77));
        // A kernel is never wider than the image (here 3 pixels: 7 taps).
        assert_eq!(gaussian_kernel(100.0, 3).len(), 7);
        assert_eq!(gaussian_kernel(2.0, 1000).len(), 2 * 4 + 1);
        // Through `apply`, on a 3x2 image: the largest sigmas the parser allows.
        let out = run(
            rgb(3, 2, |x, _| [(x * 100) as u8; 3]),
            "bl:100/sh:100",
            false,
        );
        assert_eq!((out.width(), out.height()), (3, 2));
    }

    #[test]
    fn an_inconsistent_plan_is_an_error_not_a_panic() {
        // Guards: the plan of `w:1/z:4294967396/ex:1` (a 100-pixel-wide extend canvas
        // with the image at x = 2147483442) made `embed` index past the canvas and
        // panic. `apply` now validates the plan, and the helpers check their windows.
        let o = opts("");
        let mut plan = geometry::plan(&o, 8, 8, &Limits::default()).unwrap();
        let off_canvas = Embed {
            width: 100,
            height: 8,
            left: 2_147_483_442,
            top: 0,
        };
        plan.extend = Some(off_canvas);
        plan.width = 100;
        let err = apply(halves(8, 8), &plan, &o, true).unwrap_err();
        assert!(matches!(err, TransformError::InvalidPlan(_)), "{err}");
        // A frame of another size than the plan's source is refused too.
        let plan = geometry::plan(&o, 8, 8, &Limits::default()).unwrap();
        let mut pic = halves(8, 8);
        pic.frames.push(halves(4, 4).frames[0].clone());
        let err = apply(pic, &plan, &o, true).unwrap_err();
        assert!(matches!(err, TransformError::SizeMismatch { .. }), "{err}");
        // The helpers alone: nothing of an image off the canvas is copied, windows
        // outside the buffer and overflowing padding are errors.
        let buf = Buf::from_image(halves(8, 8).frames[0].image.clone());
        let e = embed(&buf, &off_canvas, Fill::Transparent);
        assert_eq!((e.w, e.h, e.data.len()), (100, 8, 100 * 8 * 4));
        assert!(e.data.iter().all(|&v| v == 0));
        assert!(buf.crop(5, 0, 4, 1).is_err());
        assert!(buf.crop(u32::MAX, 0, 2, 1).is_err());
        assert!(buf.crop(0, 0, 8, 8).is_ok());
        let huge = Insets {
            top: 0,
            right: u32::MAX,
            bottom: 0,
            left: 1,
        };
        assert!(pad(&buf, &huge, Fill::Transparent).is_err());
    }

    #[test]
    fn every_frame_is_transformed() {
        let mut pic = halves(40, 20);
        let mut second = pic.frames[0].clone();
        second.delay_ms = 70;
        pic.frames.push(second);
        pic.loops = 3;
        // rotate first: the 20×40 rotated frame is fitted to width 10
        let out = run(pic, "rs:fit:10:0/rot:90", false);
        assert_eq!(out.frames.len(), 2);
        assert_eq!(out.frames[1].delay_ms, 70);
        assert_eq!(out.loops, 3);
        for f in &out.frames {
            assert_eq!((f.image.width(), f.image.height()), (10, 20));
        }
    }

    #[test]
    fn decoder_shrunk_picture_is_accepted() {
        let o = opts("c:100:50:nowe/rs:fit:25:0");
        let plan = geometry::plan(&o, 200, 100, &Limits::default()).unwrap();
        // The decoder returned 1/4 of the size.
        let small = halves(50, 25);
        let out = apply(small, &plan, &o, false).unwrap();
        assert_eq!((out.width(), out.height()), (plan.width, plan.height));
        // A larger picture than planned is an error.
        let err = apply(halves(400, 200), &plan, &o, false).unwrap_err();
        assert!(matches!(err, TransformError::SizeMismatch { .. }));
        assert_eq!(
            plan.resize,
            Some(Size {
                width: 25,
                height: 13
            })
        );
    }

    #[test]
    fn trim_cuts_uniform_borders() {
        // White 20×10 with a black 4×2 block at (3, 5).
        let pic = || {
            rgb(20, 10, |x, y| {
                if (3..7).contains(&x) && (5..7).contains(&y) {
                    [0, 0, 0]
                } else {
                    [255, 255, 255]
                }
            })
        };
        let t = Trim {
            enabled: true,
            ..Trim::default()
        };
        let out = trim(pic(), &t).unwrap();
        assert_eq!((out.width(), out.height()), (4, 2));
        assert_eq!(px3(&out, 0, 0), [0, 0, 0]);
        // equal_hor: margins 3 (left) and 13 (right) become 3 and 3
        let out = trim(
            pic(),
            &Trim {
                equal_hor: true,
                ..t
            },
        )
        .unwrap();
        assert_eq!((out.width(), out.height()), (14, 2));
        assert_eq!(px3(&out, 0, 0), [0, 0, 0]);
        // equal_ver: top 5, bottom 3 → both 3
        let out = trim(
            pic(),
            &Trim {
                equal_ver: true,
                ..t
            },
        )
        .unwrap();
        assert_eq!((out.width(), out.height()), (4, 4));
        // an explicit colour that is not the border: nothing to trim
        let out = trim(
            pic(),
            &Trim {
                color: Some(Rgb { r: 0, g: 0, b: 0 }),
                ..t
            },
        )
        .unwrap();
        assert_eq!((out.width(), out.height()), (20, 10));
        // within the threshold counts as background
        let faint = rgb(
            10,
            10,
            |x, _| if x == 5 { [250, 250, 250] } else { [255; 3] },
        );
        assert_eq!(trim(faint, &t).unwrap().width(), 10);
        // all background: unchanged
        assert_eq!(trim(rgb(5, 5, |_, _| [1, 2, 3]), &t).unwrap().width(), 5);
        // disabled: unchanged
        assert_eq!(trim(pic(), &Trim::default()).unwrap().width(), 20);
    }

    /// The reference: a direct f64 Lanczos3 resampler (separable, window clipped to
    /// the image and renormalised, support widened by the scale when shrinking).
    fn reference_lanczos3(src: &[u8], w: usize, h: usize, dw: usize, dh: usize) -> Vec<f64> {
        fn lanczos3(x: f64) -> f64 {
            if x == 0.0 {
                return 1.0;
            }
            if x.abs() >= 3.0 {
                return 0.0;
            }
            let px = std::f64::consts::PI * x;
            3.0 * px.sin() * (px / 3.0).sin() / (px * px)
        }
        fn weights(n_src: usize, n_dst: usize) -> Vec<(usize, Vec<f64>)> {
            let scale = n_src as f64 / n_dst as f64;
            let fscale = scale.max(1.0);
            let support = 3.0 * fscale;
            (0..n_dst)
                .map(|i| {
                    let center = (i as f64 + 0.5) * scale;
                    let lo = ((center - support).floor().max(0.0)) as usize;
                    let hi = ((center + support).ceil() as usize).min(n_src);
                    let mut ws: Vec<f64> = (lo..hi)
                        .map(|j| lanczos3((j as f64 + 0.5 - center) / fscale))
                        .collect();
                    let sum: f64 = ws.iter().sum();
                    ws.iter_mut().for_each(|v| *v /= sum);
                    (lo, ws)
                })
                .collect()
        }
        let (wx, wy) = (weights(w, dw), weights(h, dh));
        let mut tmp = vec![0f64; dw * h * 3];
        for y in 0..h {
            for (x, (lo, ws)) in wx.iter().enumerate() {
                for c in 0..3 {
                    tmp[(y * dw + x) * 3 + c] = ws
                        .iter()
                        .enumerate()
                        .map(|(k, wt)| wt * f64::from(src[(y * w + lo + k) * 3 + c]))
                        .sum();
                }
            }
        }
        let mut out = vec![0f64; dw * dh * 3];
        for (y, (lo, ws)) in wy.iter().enumerate() {
            for x in 0..dw {
                for c in 0..3 {
                    out[(y * dw + x) * 3 + c] = ws
                        .iter()
                        .enumerate()
                        .map(|(k, wt)| wt * tmp[((lo + k) * dw + x) * 3 + c])
                        .sum::<f64>()
                        .round()
                        .clamp(0.0, 255.0);
                }
            }
        }
        out
    }

    #[test]
    fn lanczos3_quality_against_a_float_reference() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/images");
        let path = [
            "chelsea-451x300.png",
            "coffee-600x400.png",
            "astronaut-512.png",
        ]
        .iter()
        .map(|n| dir.join(n))
        .chain(std::iter::once(std::path::PathBuf::from(
            "/work/shared/images/chelsea-451x300.png",
        )))
        .find(|p| p.exists())
        .expect("a test photo under /work/shared/images");
        let img = image::open(&path).unwrap().into_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let (dw, dh) = (w * 10 / 31, h * 10 / 31); // an awkward ratio, about 1/3.1
        let reference = reference_lanczos3(img.as_raw(), w, h, dw, dh);

        let pic = Picture::still(DynamicImage::ImageRgb8(img));
        let plan = geometry::plan(
            &opts(&format!("rs:force:{dw}:{dh}")),
            w as u32,
            h as u32,
            &Limits::default(),
        )
        .unwrap();
        let out = apply(pic, &plan, &Options::default(), false).unwrap();
        let got = out.frames[0].image.as_rgb8().unwrap().as_raw().clone();
        assert_eq!(got.len(), reference.len());
        let mse = got
            .iter()
            .zip(&reference)
            .map(|(&a, &b)| (f64::from(a) - b).powi(2))
            .sum::<f64>()
            / got.len() as f64;
        let psnr = 10.0 * (255.0f64 * 255.0 / mse.max(1e-12)).log10();
        eprintln!("fast_image_resize vs f64 Lanczos3: PSNR {psnr:.2} dB");
        assert!(psnr >= 38.0, "PSNR {psnr:.2} dB against the f64 reference");
    }
}
