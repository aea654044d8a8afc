//! Pure size arithmetic of the image pipeline: from a request's [`Options`] and the
//! upright source size to a [`Plan`] that says, step by step, which pixels to cut, what
//! size to resample to, how to rotate, and onto which canvas to place the result.
//!
//! What must stay true:
//! - This module never looks at pixels: the only pixel-dependent decision (`g:sm`,
//!   smart gravity) is left open as [`Position::Smart`] for `transform` to resolve.
//! - Numbers follow open-source imgproxy v3 (`processing/prepare.go` `calcScale`,
//!   `calcSizes`, `limitScale`; `calc_position.go`; `crop.go`; `extend.go`;
//!   `padding.go`; `scale_on_load.go`; `options` `GravityOptions.RotateAndFlip`),
//!   including its rounding: Go's `math.Round` (half away from zero) where imgproxy
//!   uses `imath.Scale`/`Round`, banker's rounding where it uses `*ToEven`. The test
//!   tables below are imgproxy's own (`processing_test.go`, `crop_test.go`).
//! - Every rectangle in a [`Plan`] lies inside the image it applies to, every size is
//!   at least 1×1, and [`Plan::width`]/[`Plan::height`] is exactly what applying the
//!   steps in order produces ([`Plan::validate`] checks this, and [`plan`] runs it on
//!   every plan it returns).
//! - No image a plan describes (the resized image, every canvas, the result) is wider
//!   or taller than [`MAX_DIMENSION`], whatever the options and limits; the result is
//!   also within `max_result_dimension` when one is set. Sizes are computed on `i64`
//!   with saturating float conversions and only narrowed to `u32` after that check, so
//!   an absurd option is a [`GeometryError`] naming it, never a wrapped size.
//!
//! Departures from imgproxy, on purpose: the source is already upright (the decoder
//! applied EXIF orientation), so only the `rotate` and `flip` options rotate; vector
//! sources and format size fixes (`fix_size.go`) are not handled here; besides imgproxy's
//! `max_result_dimension` (which shrinks the result), the caller may set a hard
//! [`Limits::max_output_dimension`] that refuses the request instead.

use crate::imaging::options::{Gravity, GravityType, Options, ResizingType};

/// The largest width or height of any image a plan describes (the resized image, every
/// canvas, the result), whatever the options and [`Limits`] say: WebP's limit, which
/// imgproxy and libvips share. `transform` never allocates a buffer wider or taller than
/// this or than the source.
pub const MAX_DIMENSION: u32 = 16383;

/// The largest `zoom` and `dpr` factor geometry accepts: a larger factor on a side of at
/// least one pixel is over [`MAX_DIMENSION`] anyway. With it, a `u32` width times zoom
/// times dpr stays below 2^60, far from `i64` overflow.
pub const MAX_SCALE_FACTOR: f64 = MAX_DIMENSION as f64;

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeometryError {
    #[error("the source image has no pixels ({width}x{height})")]
    EmptySource { width: u32, height: u32 },
    #[error("invalid geometry option: {0}")]
    InvalidOption(&'static str),
    /// `option` names what made the image too large (`zoom`, `extend`, `padding`, …).
    #[error(
        "invalid option `{option}`: the image would be {width}x{height}, over the limit of {max} pixels per side"
    )]
    TooLarge {
        option: &'static str,
        width: u64,
        height: u64,
        max: u32,
    },
    /// A plan that breaks this module's invariants: a bug of ours, not the request's.
    #[error("inconsistent image plan: {0}")]
    InconsistentPlan(String),
}

/// Server-side limits that bound a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// imgproxy's `IMGPROXY_MAX_RESULT_DIMENSION`: a result larger than this on either
    /// side is scaled down to fit (0: no limit). The URL's `max_result_dimension`
    /// security option overrides it.
    pub max_result_dimension: u32,
    /// A hard ceiling on either side of the result and of the resized image: a plan
    /// over it is refused with [`GeometryError::TooLarge`]. 0, or anything above
    /// [`MAX_DIMENSION`], means [`MAX_DIMENSION`].
    pub max_output_dimension: u32,
}

impl Limits {
    /// The per-side ceiling in force: [`Limits::max_output_dimension`] within
    /// [`MAX_DIMENSION`].
    pub fn ceiling(&self) -> u32 {
        match self.max_output_dimension {
            0 => MAX_DIMENSION,
            m => m.min(MAX_DIMENSION),
        }
    }
}

/// A width and a height in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

/// Where a crop window sits inside its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Top-left corner of the window.
    At { left: u32, top: u32 },
    /// `g:sm`: the window with the most detail, found from pixels by `transform`.
    Smart,
}

/// A crop window of `width` × `height` inside an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub width: u32,
    pub height: u32,
    pub position: Position,
}

/// Place the image on a new canvas of `width` × `height` with its top-left corner at
/// (`left`, `top`). Parts of the image outside the canvas are cut off (imgproxy's
/// `vips_embed` does the same when one side of the canvas is smaller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Embed {
    pub width: u32,
    pub height: u32,
    pub left: u32,
    pub top: u32,
}

/// Padding in output pixels (already scaled by the DPR), CSS order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Insets {
    pub top: u32,
    pub right: u32,
    pub bottom: u32,
    pub left: u32,
}

/// Everything `transform` needs to know about sizes, in the order the steps run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The upright source size this plan applies to (the decoded size after
    /// [`Plan::for_decoded_size`]).
    pub src_width: u32,
    pub src_height: u32,
    /// Step 1, `crop` option: the area of the source to keep, in source pixels.
    /// `None`: the whole source.
    pub crop: Option<Region>,
    /// Step 2: resample the (cropped) source to this size, still in source orientation.
    /// `None`: no resampling (imgproxy's scale of exactly 1).
    pub resize: Option<Size>,
    /// Step 3: clockwise rotation in degrees (0, 90, 180, 270), then the flips.
    pub rotate: u16,
    pub flip_horizontal: bool,
    pub flip_vertical: bool,
    /// Step 4: the result crop of `fill` / `fill-down` (and of any type whose resized
    /// image overflows the target), in the rotated image's pixels.
    pub result_crop: Option<Region>,
    /// Step 5 (filters: blur, sharpen, pixelate) has no geometry.
    /// Step 6, `extend`: the canvas of the requested size.
    pub extend: Option<Embed>,
    /// Step 7, `extend_aspect_ratio`: the canvas of the requested aspect ratio.
    pub extend_aspect_ratio: Option<Embed>,
    /// Step 8, `padding`, in output pixels.
    pub padding: Option<Insets>,
    /// The DPR scale imgproxy settles on (the requested DPR, lowered when the image
    /// cannot be enlarged). Offsets, padding and watermarks are multiplied by it.
    pub dpr_scale: f64,
    /// How much smaller than the source the resampled image is (≥ 1): a decoder may
    /// decode at 1/2, 1/4 or 1/8 of the size when this is at least 2, 4 or 8 (see
    /// [`Plan::jpeg_shrink`]), then call [`Plan::for_decoded_size`].
    pub decode_shrink: f64,
    /// The size of the result after all steps.
    pub width: u32,
    pub height: u32,
}

impl Plan {
    /// The JPEG DCT scaling denominator (1, 2, 4 or 8) that keeps the decoded image at
    /// or above the size the resize step needs (imgproxy's `calcJpegShink`).
    pub fn jpeg_shrink(&self) -> u32 {
        match self.decode_shrink {
            s if s >= 8.0 => 8,
            s if s >= 4.0 => 4,
            s if s >= 2.0 => 2,
            _ => 1,
        }
    }

    /// The plan for a source the decoder returned smaller than the size the plan was
    /// made for (shrink-on-load): the source-space crop is scaled by
    /// `decoded / src` and the resize step targets the same size as before, so the
    /// result size does not change. Crop sizes are rounded as imgproxy's
    /// `scaleOnLoad` does (`max(1, round(size / preshrink))`).
    pub fn for_decoded_size(&self, decoded_width: u32, decoded_height: u32) -> Plan {
        let mut plan = self.clone();
        if decoded_width == 0
            || decoded_height == 0
            || (decoded_width == self.src_width && decoded_height == self.src_height)
        {
            return plan;
        }
        let wpre = f64::from(self.src_width) / f64::from(decoded_width);
        let hpre = f64::from(self.src_height) / f64::from(decoded_height);
        // The size the resize step must reach, in source orientation.
        let target = match (self.resize, self.crop) {
            (Some(size), _) => size,
            (None, Some(c)) => Size {
                width: c.width,
                height: c.height,
            },
            (None, None) => Size {
                width: self.src_width,
                height: self.src_height,
            },
        };
        plan.crop = self.crop.map(|c| {
            let width = shrink(i64::from(c.width), wpre).clamp(1, i64::from(decoded_width));
            let height = shrink(i64::from(c.height), hpre).clamp(1, i64::from(decoded_height));
            let position = match c.position {
                Position::Smart => Position::Smart,
                Position::At { left, top } => Position::At {
                    left: shrink(i64::from(left), wpre).clamp(0, i64::from(decoded_width) - width)
                        as u32,
                    top: shrink(i64::from(top), hpre).clamp(0, i64::from(decoded_height) - height)
                        as u32,
                },
            };
            Region {
                width: width as u32,
                height: height as u32,
                position,
            }
        });
        let have = plan.crop.map_or(
            Size {
                width: decoded_width,
                height: decoded_height,
            },
            |c| Size {
                width: c.width,
                height: c.height,
            },
        );
        plan.resize = (have != target).then_some(target);
        plan.src_width = decoded_width;
        plan.src_height = decoded_height;
        plan.decode_shrink = (self.decode_shrink / wpre.min(hpre)).max(1.0);
        plan
    }

    /// Checks the module's invariants by walking the steps: every size at least 1×1,
    /// every crop window inside the image it cuts, every resized image and canvas at
    /// most [`MAX_DIMENSION`] a side, and [`Plan::width`]/[`Plan::height`] equal to
    /// what the steps produce. `transform` runs it before touching pixels, so a plan
    /// that would index outside a buffer is an error, not a panic.
    pub fn validate(&self) -> Result<(), GeometryError> {
        let bad = |what: String| Err(GeometryError::InconsistentPlan(what));
        let max = u64::from(MAX_DIMENSION);
        let within = |w: u32, h: u32| w >= 1 && h >= 1 && u64::from(w.max(h)) <= max;
        let (mut w, mut h) = (self.src_width, self.src_height);
        if w == 0 || h == 0 {
            return bad(format!("empty source {w}x{h}"));
        }
        let inside = |r: &Region, w: u32, h: u32| {
            r.width >= 1
                && r.height >= 1
                && r.width <= w
                && r.height <= h
                && match r.position {
                    Position::Smart => true,
                    Position::At { left, top } => {
                        u64::from(left) + u64::from(r.width) <= u64::from(w)
                            && u64::from(top) + u64::from(r.height) <= u64::from(h)
                    }
                }
        };
        if let Some(c) = &self.crop {
            if !inside(c, w, h) {
                return bad(format!("crop {c:?} outside the {w}x{h} source"));
            }
            (w, h) = (c.width, c.height);
        }
        if let Some(r) = self.resize {
            if !within(r.width, r.height) {
                return bad(format!("resize to {}x{}", r.width, r.height));
            }
            (w, h) = (r.width, r.height);
        }
        match self.rotate {
            0 | 180 => {}
            90 | 270 => (w, h) = (h, w),
            other => return bad(format!("rotation by {other}")),
        }
        if let Some(c) = &self.result_crop {
            if !inside(c, w, h) {
                return bad(format!("result crop {c:?} outside the {w}x{h} image"));
            }
            (w, h) = (c.width, c.height);
        }
        for e in [self.extend, self.extend_aspect_ratio]
            .into_iter()
            .flatten()
        {
            if !within(e.width, e.height) || e.left > e.width || e.top > e.height {
                return bad(format!("canvas {e:?}"));
            }
            (w, h) = (e.width, e.height);
        }
        if let Some(p) = self.padding {
            let pw = u64::from(w) + u64::from(p.left) + u64::from(p.right);
            let ph = u64::from(h) + u64::from(p.top) + u64::from(p.bottom);
            if pw.max(ph) > max {
                return bad(format!("padding {p:?} makes {pw}x{ph}"));
            }
            // Both fit in u32: they are at most MAX_DIMENSION.
            (w, h) = (pw as u32, ph as u32);
        }
        if (w, h) != (self.width, self.height) || !within(w, h) {
            return bad(format!(
                "the steps make {w}x{h}, the plan says {}x{}",
                self.width, self.height
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// imgproxy's integer helpers (`imath`), on i64 like Go's int.
// ---------------------------------------------------------------------------------

/// Go's `math.Round`: half away from zero.
fn round(a: f64) -> i64 {
    a.round() as i64
}

fn round_to_even(a: f64) -> i64 {
    a.round_ties_even() as i64
}

fn scale(a: i64, s: f64) -> i64 {
    if a == 0 { 0 } else { round(a as f64 * s) }
}

fn scale_to_even(a: i64, s: f64) -> i64 {
    if a == 0 {
        0
    } else {
        round_to_even(a as f64 * s)
    }
}

fn shrink(a: i64, s: f64) -> i64 {
    if a == 0 { 0 } else { round(a as f64 / s) }
}

fn shrink_to_even(a: i64, s: f64) -> i64 {
    if a == 0 {
        0
    } else {
        round_to_even(a as f64 / s)
    }
}

fn min_non_zero(a: i64, b: i64) -> i64 {
    match (a, b) {
        (0, b) => b,
        (a, 0) => a,
        (a, b) => a.min(b),
    }
}

/// imgproxy's `calcCropSize`: 0 keeps the side, ≥ 1 is pixels, below 1 a share.
fn crop_size(orig: i64, crop: f64) -> i64 {
    if crop == 0.0 {
        0
    } else if crop >= 1.0 {
        crop as i64
    } else {
        scale(orig, crop).max(1)
    }
}

// ---------------------------------------------------------------------------------
// Gravity
// ---------------------------------------------------------------------------------

/// imgproxy's `calcPosition` without overflow: the top-left corner of an
/// `inner_w` × `inner_h` window inside `width` × `height`, clamped to stay inside
/// (on a side where the window is larger than the image, the result is 0). Saturating
/// arithmetic: absurd offsets push the window to an edge, they never overflow.
pub fn calc_position(
    width: i64,
    height: i64,
    inner_w: i64,
    inner_h: i64,
    gravity: &Gravity,
    offset_scale: f64,
) -> (i64, i64) {
    let (mut left, mut top);
    if gravity.kind == GravityType::FocusPoint {
        let px = scale_to_even(width, gravity.x);
        let py = scale_to_even(height, gravity.y);
        left = px.saturating_sub(inner_w / 2);
        top = py.saturating_sub(inner_h / 2);
    } else {
        let off_x = if gravity.x.abs() >= 1.0 {
            round_to_even(gravity.x * offset_scale)
        } else {
            scale_to_even(width, gravity.x)
        };
        let off_y = if gravity.y.abs() >= 1.0 {
            round_to_even(gravity.y * offset_scale)
        } else {
            scale_to_even(height, gravity.y)
        };
        let free_w = width.saturating_sub(inner_w);
        let free_h = height.saturating_sub(inner_h);
        left = shrink_to_even(free_w.saturating_add(1), 2.0).saturating_add(off_x);
        top = shrink_to_even(free_h.saturating_add(1), 2.0).saturating_add(off_y);
        use GravityType as G;
        if matches!(gravity.kind, G::North | G::NorthEast | G::NorthWest) {
            top = off_y;
        }
        if matches!(gravity.kind, G::East | G::NorthEast | G::SouthEast) {
            left = free_w.saturating_sub(off_x);
        }
        if matches!(gravity.kind, G::South | G::SouthEast | G::SouthWest) {
            top = free_h.saturating_sub(off_y);
        }
        if matches!(gravity.kind, G::West | G::NorthWest | G::SouthWest) {
            left = off_x;
        }
    }
    // Go's max(minX, min(left, maxX)): not `clamp`, which panics when max < min.
    let left = left.min(width.saturating_sub(inner_w)).max(0);
    let top = top.min(height.saturating_sub(inner_h)).max(0);
    (left, top)
}

/// imgproxy's `GravityOptions.RotateAndFlip`: the gravity that, applied before the
/// image is rotated by `angle` and flipped, selects the same pixels as `g` applied
/// after.
fn rotate_and_flip_gravity(g: Gravity, angle: u16, flip_x: bool, flip_y: bool) -> Gravity {
    use GravityType as G;
    let mut g = g;
    if flip_x {
        g.kind = match g.kind {
            G::East => G::West,
            G::West => G::East,
            G::NorthWest => G::NorthEast,
            G::NorthEast => G::NorthWest,
            G::SouthWest => G::SouthEast,
            G::SouthEast => G::SouthWest,
            k => k,
        };
        match g.kind {
            G::Center | G::North | G::South => g.x = -g.x,
            G::FocusPoint => g.x = 1.0 - g.x,
            _ => {}
        }
    }
    if flip_y {
        g.kind = match g.kind {
            G::North => G::South,
            G::South => G::North,
            G::NorthWest => G::SouthWest,
            G::NorthEast => G::SouthEast,
            G::SouthWest => G::NorthWest,
            G::SouthEast => G::NorthEast,
            k => k,
        };
        match g.kind {
            G::Center | G::East | G::West => g.y = -g.y,
            G::FocusPoint => g.y = 1.0 - g.y,
            _ => {}
        }
    }
    let angle = angle % 360;
    let rotated = |k: GravityType, map: [GravityType; 8]| match k {
        G::North => map[0],
        G::East => map[1],
        G::South => map[2],
        G::West => map[3],
        G::NorthWest => map[4],
        G::NorthEast => map[5],
        G::SouthWest => map[6],
        G::SouthEast => map[7],
        k => k,
    };
    // Each table lists the new type for N, E, S, W, NW, NE, SW, SE.
    match angle {
        90 => {
            g.kind = rotated(
                g.kind,
                [
                    G::West,
                    G::North,
                    G::East,
                    G::South,
                    G::SouthWest,
                    G::NorthWest,
                    G::SouthEast,
                    G::NorthEast,
                ],
            );
            (g.x, g.y) = match g.kind {
                G::Center | G::East | G::West => (g.y, -g.x),
                G::FocusPoint => (g.y, 1.0 - g.x),
                _ => (g.y, g.x),
            };
        }
        180 => {
            g.kind = rotated(
                g.kind,
                [
                    G::South,
                    G::West,
                    G::North,
                    G::East,
                    G::SouthEast,
                    G::SouthWest,
                    G::NorthEast,
                    G::NorthWest,
                ],
            );
            match g.kind {
                G::Center => (g.x, g.y) = (-g.x, -g.y),
                G::North | G::South => g.x = -g.x,
                G::East | G::West => g.y = -g.y,
                G::FocusPoint => (g.x, g.y) = (1.0 - g.x, 1.0 - g.y),
                _ => {}
            }
        }
        270 => {
            g.kind = rotated(
                g.kind,
                [
                    G::East,
                    G::South,
                    G::West,
                    G::North,
                    G::NorthEast,
                    G::SouthEast,
                    G::NorthWest,
                    G::SouthWest,
                ],
            );
            (g.x, g.y) = match g.kind {
                G::Center | G::North | G::South => (-g.y, g.x),
                G::FocusPoint => (1.0 - g.y, g.x),
                _ => (g.y, g.x),
            };
        }
        _ => {}
    }
    g
}

/// `v` as `u32`, saturating at both ends. For values already known to be in range;
/// [`Plan::validate`] catches any that were not.
fn narrow(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// imgproxy's `cropImage` decision: `None` when the window covers the image. `img_w`
/// and `img_h` are at least 1.
fn crop_region(
    img_w: i64,
    img_h: i64,
    crop_w: i64,
    crop_h: i64,
    gravity: &Gravity,
    offset_scale: f64,
) -> Option<Region> {
    if crop_w == 0 && crop_h == 0 {
        return None;
    }
    let cw = min_non_zero(crop_w, img_w);
    let ch = min_non_zero(crop_h, img_h);
    if cw >= img_w && ch >= img_h {
        return None;
    }
    let (cw, ch) = (cw.clamp(1, img_w), ch.clamp(1, img_h));
    let position = if gravity.kind == GravityType::Smart {
        Position::Smart
    } else {
        let (left, top) = calc_position(img_w, img_h, cw, ch, gravity, offset_scale);
        Position::At {
            left: narrow(left),
            top: narrow(top),
        }
    };
    Some(Region {
        width: narrow(cw),
        height: narrow(ch),
        position,
    })
}

/// imgproxy's `extendImage` decision: `None` when the canvas is not larger. A canvas
/// over `ceiling` on a side is refused in the name of `option`.
#[allow(clippy::too_many_arguments)]
fn embed(
    img_w: i64,
    img_h: i64,
    width: i64,
    height: i64,
    gravity: &Gravity,
    offset_scale: f64,
    ceiling: u32,
    option: &'static str,
) -> Result<Option<Embed>, GeometryError> {
    if width <= img_w && height <= img_h {
        return Ok(None);
    }
    let width = if width <= 0 { img_w } else { width };
    let height = if height <= 0 { img_h } else { height };
    let (cw, ch) = to_size(width, height, ceiling, option)?;
    let (left, top) = calc_position(width, height, img_w, img_h, gravity, offset_scale);
    // calc_position keeps both in 0..=canvas side, which fits in u32.
    let (left, top) = to_offsets(left, top, cw, ch)?;
    Ok(Some(Embed {
        width: cw,
        height: ch,
        left,
        top,
    }))
}

/// Narrows a size to `u32` after checking it is within 1..=`ceiling` on both sides.
fn to_size(
    width: i64,
    height: i64,
    ceiling: u32,
    option: &'static str,
) -> Result<(u32, u32), GeometryError> {
    let too_large = || GeometryError::TooLarge {
        option,
        width: width.max(0) as u64,
        height: height.max(0) as u64,
        max: ceiling,
    };
    let side = |v: i64| u32::try_from(v).ok().filter(|v| (1..=ceiling).contains(v));
    match (side(width), side(height)) {
        (Some(w), Some(h)) => Ok((w, h)),
        // Sizes are at least 1 by construction: a 0 here is a bug of ours.
        _ if width < 1 || height < 1 => Err(GeometryError::InconsistentPlan(format!(
            "`{option}` makes an empty {width}x{height} image"
        ))),
        _ => Err(too_large()),
    }
}

/// Narrows an offset inside a `width` × `height` canvas to `u32`.
fn to_offsets(left: i64, top: i64, width: u32, height: u32) -> Result<(u32, u32), GeometryError> {
    match (u32::try_from(left), u32::try_from(top)) {
        (Ok(l), Ok(t)) if l <= width && t <= height => Ok((l, t)),
        _ => Err(GeometryError::InconsistentPlan(format!(
            "offset ({left}, {top}) outside a {width}x{height} canvas"
        ))),
    }
}

// ---------------------------------------------------------------------------------
// Scales and sizes
// ---------------------------------------------------------------------------------

/// What imgproxy keeps in its pipeline context between `calcScale`, `calcSizes` and
/// `limitScale`. All sizes are in the rotated (output) orientation.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    wscale: f64,
    hscale: f64,
    dpr_scale: f64,
    target_w: i64,
    target_h: i64,
    scaled_w: i64,
    scaled_h: i64,
    result_crop_w: i64,
    result_crop_h: i64,
    ear_w: i64,
    ear_h: i64,
}

/// imgproxy's `calcScale`: the scales from the area to scale to the resized image.
fn calc_scale(width: i64, height: i64, o: &Options) -> (f64, f64, f64) {
    let (src_w, src_h) = (width as f64, height as f64);
    let dst_w = if o.width == 0 {
        src_w
    } else {
        f64::from(o.width)
    };
    let dst_h = if o.height == 0 {
        src_h
    } else {
        f64::from(o.height)
    };
    let mut wshrink = if dst_w == src_w { 1.0 } else { src_w / dst_w };
    let mut hshrink = if dst_h == src_h { 1.0 } else { src_h / dst_h };

    if wshrink != 1.0 || hshrink != 1.0 {
        let mut rt = o.resizing_type;
        if rt == ResizingType::Auto {
            let src_d = src_w - src_h;
            let dst_d = dst_w - dst_h;
            rt = if (src_d >= 0.0 && dst_d >= 0.0) || (src_d < 0.0 && dst_d < 0.0) {
                ResizingType::Fill
            } else {
                ResizingType::Fit
            };
        }
        if o.width == 0 && rt != ResizingType::Force {
            wshrink = hshrink;
        } else if o.height == 0 && rt != ResizingType::Force {
            hshrink = wshrink;
        } else if rt == ResizingType::Fit {
            wshrink = wshrink.max(hshrink);
            hshrink = wshrink;
        } else if rt == ResizingType::Fill || rt == ResizingType::FillDown {
            wshrink = wshrink.min(hshrink);
            hshrink = wshrink;
        }
    }

    wshrink /= o.zoom_width;
    hshrink /= o.zoom_height;

    let mut dpr_scale = o.dpr;
    if !o.enlarge {
        let min_shrink = wshrink.min(hshrink);
        if min_shrink < 1.0 {
            wshrink /= min_shrink;
            hshrink /= min_shrink;
            if !o.extend.enabled {
                dpr_scale /= min_shrink;
            }
        }
        // The smaller shrink is the largest DPR that does not enlarge the image.
        dpr_scale = dpr_scale.min(wshrink.min(hshrink));
    }

    if o.min_width > 0 {
        let min_shrink = src_w / f64::from(o.min_width);
        if min_shrink < wshrink {
            hshrink /= wshrink / min_shrink;
            wshrink = min_shrink;
        }
    }
    if o.min_height > 0 {
        let min_shrink = src_h / f64::from(o.min_height);
        if min_shrink < hshrink {
            wshrink /= hshrink / min_shrink;
            hshrink = min_shrink;
        }
    }

    wshrink /= dpr_scale;
    hshrink /= dpr_scale;
    wshrink = wshrink.min(src_w);
    hshrink = hshrink.min(src_h);
    (1.0 / wshrink, 1.0 / hshrink, dpr_scale)
}

/// imgproxy's `calcSizes`.
fn calc_sizes(s: &mut Sizes, width_to_scale: i64, height_to_scale: i64, o: &Options) {
    s.target_w = scale(i64::from(o.width), s.dpr_scale * o.zoom_width);
    s.target_h = scale(i64::from(o.height), s.dpr_scale * o.zoom_height);
    s.scaled_w = scale(width_to_scale, s.wscale);
    s.scaled_h = scale(height_to_scale, s.hscale);

    (s.result_crop_w, s.result_crop_h) = (s.target_w, s.target_h);
    if o.resizing_type == ResizingType::FillDown && !o.enlarge {
        let diff_w = s.target_w as f64 / s.scaled_w as f64;
        let diff_h = s.target_h as f64 / s.scaled_h as f64;
        if diff_w > diff_h && diff_w > 1.0 {
            s.result_crop_h = scale(s.scaled_w, s.target_h as f64 / s.target_w as f64);
            s.result_crop_w = s.scaled_w;
        } else if diff_h > diff_w && diff_h > 1.0 {
            s.result_crop_w = scale(s.scaled_h, s.target_w as f64 / s.target_h as f64);
            s.result_crop_h = s.scaled_h;
        }
    }

    (s.ear_w, s.ear_h) = (0, 0);
    if o.extend_aspect_ratio.enabled && s.target_w > 0 && s.target_h > 0 {
        let out_w = min_non_zero(s.scaled_w, s.result_crop_w);
        let out_h = min_non_zero(s.scaled_h, s.result_crop_h);
        let diff_w = s.target_w as f64 / out_w as f64;
        let diff_h = s.target_h as f64 / out_h as f64;
        if diff_h > diff_w {
            s.ear_h = scale(out_w, s.target_h as f64 / s.target_w as f64);
            s.ear_w = out_w;
        } else if diff_w > diff_h {
            s.ear_w = scale(out_h, s.target_w as f64 / s.target_h as f64);
            s.ear_h = out_h;
        }
    }
}

/// The padding in output pixels, CSS order (top, right, bottom, left), unchecked.
fn padding_px(o: &Options, dpr_scale: f64) -> [i64; 4] {
    let p = |v: u32| scale_to_even(i64::from(v), dpr_scale).max(0);
    [
        p(o.padding.top),
        p(o.padding.right),
        p(o.padding.bottom),
        p(o.padding.left),
    ]
}

/// imgproxy's `limitScale`: shrink everything when the result would exceed
/// `max_dim` on a side.
fn limit_scale(
    s: &mut Sizes,
    width_to_scale: i64,
    height_to_scale: i64,
    o: &Options,
    max_dim: i64,
) {
    if max_dim <= 0 {
        return;
    }
    let mut out_w = min_non_zero(s.scaled_w, s.result_crop_w);
    let mut out_h = min_non_zero(s.scaled_h, s.result_crop_h);
    if o.extend.enabled {
        out_w = out_w.max(s.target_w);
        out_h = out_h.max(s.target_h);
    } else if o.extend_aspect_ratio.enabled {
        out_w = out_w.max(s.ear_w);
        out_h = out_h.max(s.ear_h);
    }
    if o.padding.is_enabled() {
        let [top, right, bottom, left] = padding_px(o, s.dpr_scale);
        out_w = out_w.saturating_add(left).saturating_add(right);
        out_h = out_h.saturating_add(top).saturating_add(bottom);
    }
    if out_w > max_dim || out_h > max_dim {
        let down = max_dim as f64 / out_w.max(out_h) as f64;
        s.wscale *= down;
        s.hscale *= down;
        s.wscale = s.wscale.max(1.0 / width_to_scale as f64);
        s.hscale = s.hscale.max(1.0 / height_to_scale as f64);
        s.dpr_scale *= down;
        calc_sizes(s, width_to_scale, height_to_scale, o);
    }
}

fn check_options(o: &Options) -> Result<(), GeometryError> {
    let factor = |v: f64| v.is_finite() && v > 0.0 && v <= MAX_SCALE_FACTOR;
    if !factor(o.dpr) {
        return Err(GeometryError::InvalidOption(
            "dpr must be a positive number of at most 16383",
        ));
    }
    if !factor(o.zoom_width) || !factor(o.zoom_height) {
        return Err(GeometryError::InvalidOption(
            "zoom must be a positive number of at most 16383",
        ));
    }
    let finite = |g: &Gravity| g.x.is_finite() && g.y.is_finite();
    if !o.crop.width.is_finite()
        || !o.crop.height.is_finite()
        || o.crop.width < 0.0
        || o.crop.height < 0.0
    {
        return Err(GeometryError::InvalidOption(
            "crop size must not be negative",
        ));
    }
    let crop_gravity = o.crop.effective_gravity(o.gravity);
    if !finite(&o.gravity)
        || !finite(&crop_gravity)
        || !finite(&o.extend.gravity)
        || !finite(&o.extend_aspect_ratio.gravity)
    {
        return Err(GeometryError::InvalidOption(
            "gravity offsets must be numbers",
        ));
    }
    if !o.rotate.is_multiple_of(90) {
        return Err(GeometryError::InvalidOption(
            "rotate must be a multiple of 90",
        ));
    }
    Ok(())
}

/// Which option to blame for a resized image that is too large.
fn resize_option(o: &Options) -> &'static str {
    if o.zoom_width > 1.0 || o.zoom_height > 1.0 {
        "zoom"
    } else if o.dpr > 1.0 {
        "dpr"
    } else if o.min_width > 0 {
        "min-width"
    } else if o.min_height > 0 {
        "min-height"
    } else {
        "resize"
    }
}

/// `scale`, lowered so that a `width × height` source drawn at it holds at most
/// `max_pixels` pixels (imgproxy's `vectorGuardScale`); `scale` itself when it already does.
pub fn scale_within_pixels(width: f64, height: f64, scale: f64, max_pixels: u64) -> f64 {
    let pixels = width * height * scale * scale;
    let limit = max_pixels as f64;
    if pixels > limit {
        scale * (limit / pixels).sqrt()
    } else {
        scale
    }
}

/// Computes the plan for one request: `src_width` × `src_height` is the upright source
/// size (after EXIF orientation). The result follows imgproxy's pipeline: crop,
/// scale, rotate and flip, crop to result, (filters), extend, extend aspect ratio,
/// padding.
///
/// Every plan returned has passed [`Plan::validate`], is within [`Limits::ceiling`]
/// on every side (resized image, canvases, result) and, when a `max_result_dimension`
/// is in force, has a result within it.
pub fn plan(
    opts: &Options,
    src_width: u32,
    src_height: u32,
    limits: &Limits,
) -> Result<Plan, GeometryError> {
    if src_width == 0 || src_height == 0 {
        return Err(GeometryError::EmptySource {
            width: src_width,
            height: src_height,
        });
    }
    check_options(opts)?;
    let max_dim = match opts.security.max_result_dimension {
        Some(v) => v,
        None => i64::from(limits.max_result_dimension),
    };
    // imgproxy's `limitScale` shrinks every part by one ratio but rounds (and keeps at
    // least a pixel of) each separately, so the result can overshoot `max_dim` by a
    // pixel or two; a pass with the target lowered by the overshoot fixes that.
    let mut target = max_dim;
    let mut last = (0, 0);
    for _ in 0..4 {
        let p = plan_once(opts, src_width, src_height, limits, target)?;
        // No limit when max_dim ≤ 0 (which may be i64::MIN: subtract only after).
        let over = if max_dim <= 0 {
            0
        } else {
            i64::from(p.width.max(p.height)) - max_dim
        };
        if over <= 0 {
            p.validate()?;
            return Ok(p);
        }
        last = (p.width, p.height);
        target -= over;
        if target < 1 {
            break;
        }
    }
    // Only reachable with a tiny limit that padding or the 1-pixel minimum exceeds.
    Err(GeometryError::TooLarge {
        option: "max_result_dimension",
        width: u64::from(last.0),
        height: u64::from(last.1),
        max: u32::try_from(max_dim).unwrap_or(u32::MAX),
    })
}

/// One pass of [`plan`], with `max_dim` as imgproxy's `max_result_dimension`.
fn plan_once(
    o: &Options,
    src_width: u32,
    src_height: u32,
    limits: &Limits,
    max_dim: i64,
) -> Result<Plan, GeometryError> {
    let ceiling = limits.ceiling();
    let rotate = o.rotate % 360;
    let swapped = rotate % 180 == 90;
    let (src_w, src_h) = (i64::from(src_width), i64::from(src_height));
    // imgproxy computes in the output orientation (`extractMeta` swaps the sides).
    let (rot_w, rot_h) = if swapped {
        (src_h, src_w)
    } else {
        (src_w, src_h)
    };

    let crop_w = crop_size(rot_w, o.crop.width);
    let crop_h = crop_size(rot_h, o.crop.height);
    let width_to_scale = min_non_zero(crop_w, rot_w);
    let height_to_scale = min_non_zero(crop_h, rot_h);

    let (wscale, hscale, dpr_scale) = calc_scale(width_to_scale, height_to_scale, o);
    let mut s = Sizes {
        wscale,
        hscale,
        dpr_scale,
        target_w: 0,
        target_h: 0,
        scaled_w: 0,
        scaled_h: 0,
        result_crop_w: 0,
        result_crop_h: 0,
        ear_w: 0,
        ear_h: 0,
    };
    calc_sizes(&mut s, width_to_scale, height_to_scale, o);
    limit_scale(&mut s, width_to_scale, height_to_scale, o, max_dim);

    // Step 1: crop, in source orientation, with the gravity turned back.
    let crop = {
        let g = rotate_and_flip_gravity(
            o.crop.effective_gravity(o.gravity),
            rotate,
            o.flip.horizontal,
            o.flip.vertical,
        );
        let (cw, ch) = if swapped {
            (crop_h, crop_w)
        } else {
            (crop_w, crop_h)
        };
        crop_region(src_w, src_h, cw, ch, &g, 1.0)
    };

    // Step 2: resize, in source orientation.
    let (scaled_w, scaled_h) = (s.scaled_w.max(1), s.scaled_h.max(1));
    let scaled = (s.wscale != 1.0 || s.hscale != 1.0).then_some((scaled_w, scaled_h));
    // The resized image exists in memory even when the result crop cuts it down, so
    // the hard ceiling applies to it too (`fill` with `enlarge` on a very thin source
    // would otherwise allocate an enormous intermediate image).
    let resize = match scaled {
        Some((w, h)) => {
            let (w, h) = to_size(w, h, ceiling, resize_option(o))?;
            Some(if swapped {
                Size {
                    width: h,
                    height: w,
                }
            } else {
                Size {
                    width: w,
                    height: h,
                }
            })
        }
        None => None,
    };
    // Without resampling the image keeps the cropped size (which is what the scaled
    // size is when both scales are 1).
    let (mut cur_w, mut cur_h) = scaled.unwrap_or((width_to_scale, height_to_scale));

    // Step 4: crop to the result.
    let result_crop = crop_region(
        cur_w,
        cur_h,
        s.result_crop_w,
        s.result_crop_h,
        &o.gravity,
        s.dpr_scale,
    );
    if let Some(r) = result_crop {
        (cur_w, cur_h) = (i64::from(r.width), i64::from(r.height));
    }

    // Steps 6 and 7: extend, extend aspect ratio.
    let extend = if o.extend.enabled {
        embed(
            cur_w,
            cur_h,
            s.target_w,
            s.target_h,
            &o.extend.gravity,
            s.dpr_scale,
            ceiling,
            if o.zoom_width > 1.0 || o.zoom_height > 1.0 {
                "zoom"
            } else {
                "extend"
            },
        )?
    } else {
        None
    };
    if let Some(e) = extend {
        (cur_w, cur_h) = (i64::from(e.width), i64::from(e.height));
    }
    let extend_aspect_ratio = if o.extend_aspect_ratio.enabled && s.ear_w != 0 && s.ear_h != 0 {
        embed(
            cur_w,
            cur_h,
            s.ear_w,
            s.ear_h,
            &o.extend_aspect_ratio.gravity,
            s.dpr_scale,
            ceiling,
            "extend_aspect_ratio",
        )?
    } else {
        None
    };
    if let Some(e) = extend_aspect_ratio {
        (cur_w, cur_h) = (i64::from(e.width), i64::from(e.height));
    }

    // Step 8: padding.
    let padding = if o.padding.is_enabled() {
        let [top, right, bottom, left] = padding_px(o, s.dpr_scale);
        cur_w = cur_w.saturating_add(left).saturating_add(right);
        cur_h = cur_h.saturating_add(top).saturating_add(bottom);
        // Each side is at most the padded size, checked just below.
        to_size(cur_w, cur_h, ceiling, "padding")?;
        Some(Insets {
            top: narrow(top),
            right: narrow(right),
            bottom: narrow(bottom),
            left: narrow(left),
        })
    } else {
        None
    };

    let last_step = if padding.is_some() {
        "padding"
    } else if extend_aspect_ratio.is_some() {
        "extend_aspect_ratio"
    } else if extend.is_some() {
        "extend"
    } else if o.crop.width != 0.0 || o.crop.height != 0.0 {
        "crop"
    } else {
        resize_option(o)
    };
    let (width, height) = to_size(cur_w, cur_h, ceiling, last_step)?;

    // imgproxy's `scaleOnLoad`: how much smaller the resized image is than the source.
    let decode_shrink = {
        let w = rot_w as f64 / scale(rot_w, s.wscale).max(1) as f64;
        let h = rot_h as f64 / scale(rot_h, s.hscale).max(1) as f64;
        w.min(h).max(1.0)
    };

    Ok(Plan {
        src_width,
        src_height,
        crop,
        resize,
        rotate,
        flip_horizontal: o.flip.horizontal,
        flip_vertical: o.flip.vertical,
        result_crop,
        extend,
        extend_aspect_ratio,
        padding,
        dpr_scale: s.dpr_scale,
        decode_shrink,
        width,
        height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::options::{ParseContext, parse};

    /// Parses `path` (imgproxy option segments joined by `/`) like the URL parser does.
    fn opts(path: &str) -> Options {
        let segments: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let ctx = ParseContext {
            allow_security_options: true,
            ..ParseContext::default()
        };
        parse(&segments, &ctx).unwrap()
    }

    fn plan_for(path: &str, w: u32, h: u32) -> Plan {
        plan(&opts(path), w, h, &Limits::default()).unwrap()
    }

    /// Checks result sizes for a 200×100 source (imgproxy's `test2.jpg` and
    /// `geometry.png` are 200×100).
    fn check_sizes(table: &[(&str, (u32, u32))]) {
        for &(path, want) in table {
            let p = plan_for(path, 200, 100);
            assert_eq!((p.width, p.height), want, "{path}: {p:?}");
        }
    }

    fn at(left: u32, top: u32) -> Position {
        Position::At { left, top }
    }

    // imgproxy `processing_test.go` TestResizeToFit / TestResizeToFitEnlarge /
    // TestResizeToFitExtend / TestResizeToFitExtendAR: what imgproxy returns for a
    // 200×100 source.
    #[test]
    fn imgproxy_resize_to_fit() {
        check_sizes(&[
            ("rs:fit:50:50", (50, 25)),
            ("rs:fit:50:20", (40, 20)),
            ("rs:fit:20:50", (20, 10)),
            ("rs:fit:300:300", (200, 100)),
            ("rs:fit:300:50", (100, 50)),
            ("rs:fit:100:300", (100, 50)),
            ("rs:fit:0:50", (100, 50)),
            ("rs:fit:50:0", (50, 25)),
            ("rs:fit:0:200", (200, 100)),
            ("rs:fit:300:0", (200, 100)),
            // enlarge
            ("rs:fit:50:50/el:1", (50, 25)),
            ("rs:fit:50:20/el:1", (40, 20)),
            ("rs:fit:20:50/el:1", (20, 10)),
            ("rs:fit:300:300/el:1", (300, 150)),
            ("rs:fit:300:125/el:1", (250, 125)),
            ("rs:fit:250:300/el:1", (250, 125)),
            ("rs:fit:0:50/el:1", (100, 50)),
            ("rs:fit:50:0/el:1", (50, 25)),
            ("rs:fit:0:200/el:1", (400, 200)),
            ("rs:fit:300:0/el:1", (300, 150)),
            // extend
            ("rs:fit:50:50/ex:1", (50, 50)),
            ("rs:fit:50:20/ex:1", (50, 20)),
            ("rs:fit:20:50/ex:1", (20, 50)),
            ("rs:fit:300:300/ex:1", (300, 300)),
            ("rs:fit:300:125/ex:1", (300, 125)),
            ("rs:fit:250:300/ex:1", (250, 300)),
            ("rs:fit:0:50/ex:1", (100, 50)),
            ("rs:fit:50:0/ex:1", (50, 25)),
            ("rs:fit:0:200/ex:1", (200, 200)),
            ("rs:fit:300:0/ex:1", (300, 100)),
            // extend_aspect_ratio
            ("rs:fit:50:50/exar:1", (50, 50)),
            ("rs:fit:50:20/exar:1", (50, 20)),
            ("rs:fit:20:50/exar:1", (20, 50)),
            ("rs:fit:300:300/exar:1", (200, 200)),
            ("rs:fit:300:125/exar:1", (240, 100)),
            ("rs:fit:250:500/exar:1", (200, 400)),
            ("rs:fit:0:50/exar:1", (100, 50)),
            ("rs:fit:50:0/exar:1", (50, 25)),
            ("rs:fit:0:200/exar:1", (200, 100)),
            ("rs:fit:300:0/exar:1", (200, 100)),
        ]);
    }

    // imgproxy TestResizeToFill / …Enlarge / …Extend / …ExtendAR.
    #[test]
    fn imgproxy_resize_to_fill() {
        check_sizes(&[
            ("rs:fill:50:50", (50, 50)),
            ("rs:fill:50:20", (50, 20)),
            ("rs:fill:20:50", (20, 50)),
            ("rs:fill:300:300", (200, 100)),
            ("rs:fill:300:50", (200, 50)),
            ("rs:fill:100:300", (100, 100)),
            ("rs:fill:0:50", (100, 50)),
            ("rs:fill:50:0", (50, 25)),
            ("rs:fill:0:200", (200, 100)),
            ("rs:fill:300:0", (200, 100)),
            // enlarge
            ("rs:fill:50:50/el:1", (50, 50)),
            ("rs:fill:50:20/el:1", (50, 20)),
            ("rs:fill:20:50/el:1", (20, 50)),
            ("rs:fill:300:300/el:1", (300, 300)),
            ("rs:fill:300:125/el:1", (300, 125)),
            ("rs:fill:250:300/el:1", (250, 300)),
            ("rs:fill:0:50/el:1", (100, 50)),
            ("rs:fill:50:0/el:1", (50, 25)),
            ("rs:fill:0:200/el:1", (400, 200)),
            ("rs:fill:300:0/el:1", (300, 150)),
            // extend
            ("rs:fill:50:50/ex:1", (50, 50)),
            ("rs:fill:50:20/ex:1", (50, 20)),
            ("rs:fill:20:50/ex:1", (20, 50)),
            ("rs:fill:300:300/ex:1", (300, 300)),
            ("rs:fill:300:125/ex:1", (300, 125)),
            ("rs:fill:250:300/ex:1", (250, 300)),
            ("rs:fill:300:50/ex:1", (300, 50)),
            ("rs:fill:100:300/ex:1", (100, 300)),
            ("rs:fill:0:50/ex:1", (100, 50)),
            ("rs:fill:50:0/ex:1", (50, 25)),
            ("rs:fill:0:200/ex:1", (200, 200)),
            ("rs:fill:300:0/ex:1", (300, 100)),
            // extend_aspect_ratio
            ("rs:fill:50:50/exar:1", (50, 50)),
            ("rs:fill:50:20/exar:1", (50, 20)),
            ("rs:fill:20:50/exar:1", (20, 50)),
            ("rs:fill:300:300/exar:1", (200, 200)),
            ("rs:fill:300:125/exar:1", (240, 100)),
            ("rs:fill:250:500/exar:1", (200, 400)),
            ("rs:fill:300:50/exar:1", (300, 50)),
            ("rs:fill:100:300/exar:1", (100, 300)),
            ("rs:fill:0:50/exar:1", (100, 50)),
            ("rs:fill:50:0/exar:1", (50, 25)),
            ("rs:fill:0:200/exar:1", (200, 100)),
            ("rs:fill:300:0/exar:1", (200, 100)),
        ]);
    }

    // imgproxy TestResizeToFillDown / …Enlarge / …Extend / …ExtendAR.
    #[test]
    fn imgproxy_resize_to_fill_down() {
        check_sizes(&[
            ("rs:fill-down:50:50", (50, 50)),
            ("rs:fill-down:50:20", (50, 20)),
            ("rs:fill-down:20:50", (20, 50)),
            ("rs:fill-down:300:300", (100, 100)),
            ("rs:fill-down:300:125", (200, 83)),
            ("rs:fill-down:250:300", (83, 100)),
            ("rs:fill-down:0:50", (100, 50)),
            ("rs:fill-down:50:0", (50, 25)),
            ("rs:fill-down:0:200", (200, 100)),
            ("rs:fill-down:300:0", (200, 100)),
            // enlarge
            ("rs:fill-down:50:50/el:1", (50, 50)),
            ("rs:fill-down:50:20/el:1", (50, 20)),
            ("rs:fill-down:20:50/el:1", (20, 50)),
            ("rs:fill-down:300:300/el:1", (300, 300)),
            ("rs:fill-down:300:125/el:1", (300, 125)),
            ("rs:fill-down:250:300/el:1", (250, 300)),
            ("rs:fill-down:0:50/el:1", (100, 50)),
            ("rs:fill-down:50:0/el:1", (50, 25)),
            ("rs:fill-down:0:200/el:1", (400, 200)),
            ("rs:fill-down:300:0/el:1", (300, 150)),
            // extend
            ("rs:fill-down:50:50/ex:1", (50, 50)),
            ("rs:fill-down:50:20/ex:1", (50, 20)),
            ("rs:fill-down:20:50/ex:1", (20, 50)),
            ("rs:fill-down:300:300/ex:1", (300, 300)),
            ("rs:fill-down:300:125/ex:1", (300, 125)),
            ("rs:fill-down:250:300/ex:1", (250, 300)),
            ("rs:fill-down:300:50/ex:1", (300, 50)),
            ("rs:fill-down:100:300/ex:1", (100, 300)),
            ("rs:fill-down:0:50/ex:1", (100, 50)),
            ("rs:fill-down:50:0/ex:1", (50, 25)),
            ("rs:fill-down:0:200/ex:1", (200, 200)),
            ("rs:fill-down:300:0/ex:1", (300, 100)),
            // extend_aspect_ratio
            ("rs:fill-down:50:50/exar:1", (50, 50)),
            ("rs:fill-down:50:20/exar:1", (50, 20)),
            ("rs:fill-down:20:50/exar:1", (20, 50)),
            ("rs:fill-down:300:300/exar:1", (100, 100)),
            ("rs:fill-down:300:125/exar:1", (200, 83)),
            ("rs:fill-down:250:300/exar:1", (83, 100)),
            ("rs:fill-down:0:50/exar:1", (100, 50)),
            ("rs:fill-down:50:0/exar:1", (50, 25)),
            ("rs:fill-down:0:200/exar:1", (200, 100)),
            ("rs:fill-down:300:0/exar:1", (200, 100)),
        ]);
    }

    // imgproxy TestResultSizeLimit (`max_result_dimension` shrinks the result).
    #[test]
    fn imgproxy_result_size_limit() {
        check_sizes(&[
            ("mrd:1000/rs:fit:100:100", (100, 50)),
            ("mrd:50/rs:fit:100:100", (50, 25)),
            ("mrd:50/rs:fit:0:0", (50, 25)),
            ("mrd:100/rs:fit:0:100", (100, 50)),
            ("mrd:50/rs:fit:150:0", (50, 25)),
            ("mrd:100/rs:fit:1000:1000", (100, 50)),
            ("mrd:100/rs:fit:1000:1000/el:1", (100, 50)),
            ("mrd:100/rs:fit:1000:2000/ex:1", (50, 100)),
            ("mrd:100/rs:fit:1000:2000/exar:1", (50, 100)),
            ("mrd:100/rs:fit:100:150/rot:90", (50, 100)),
            ("mrd:100/rs:fit:0:0/rot:90", (50, 100)),
            ("mrd:200/rs:fit:100:100/pd:100:200:300:400", (200, 129)),
            ("mrd:1000/rs:fill:100:100", (100, 100)),
            ("mrd:50/rs:fill:100:100", (50, 50)),
            ("mrd:50/rs:fill:1000:50", (50, 13)),
            ("mrd:50/rs:fill:100:1000", (50, 50)),
            ("mrd:50/rs:fill:0:0", (50, 25)),
            ("mrd:100/rs:fill:0:100", (100, 50)),
            ("mrd:50/rs:fill:150:0", (50, 25)),
            ("mrd:100/rs:fill:1000:1000", (100, 50)),
            ("mrd:100/rs:fill:1000:1000/el:1", (100, 100)),
            ("mrd:100/rs:fill:1000:2000/ex:1", (50, 100)),
            ("mrd:100/rs:fill:1000:2000/exar:1", (50, 100)),
            ("mrd:100/rs:fill:100:150/rot:90", (67, 100)),
            ("mrd:100/rs:fill:0:0/rot:90", (50, 100)),
            ("mrd:200/rs:fill:100:100/pd:100:200:300:400", (200, 144)),
            ("mrd:1000/rs:fill-down:100:100", (100, 100)),
            ("mrd:50/rs:fill-down:100:100", (50, 50)),
            ("mrd:50/rs:fill-down:1000:50", (50, 3)),
            ("mrd:50/rs:fill-down:100:1000", (5, 50)),
            ("mrd:50/rs:fill-down:0:0", (50, 25)),
            ("mrd:100/rs:fill-down:0:100", (100, 50)),
            ("mrd:50/rs:fill-down:150:0", (50, 25)),
            ("mrd:100/rs:fill-down:1000:1000", (100, 100)),
            ("mrd:100/rs:fill-down:1000:1000/el:1", (100, 100)),
            ("mrd:100/rs:fill-down:1000:2000/ex:1", (50, 100)),
            ("mrd:100/rs:fill-down:1000:2000/exar:1", (50, 100)),
            ("mrd:100/rs:fill-down:1000:1500/rot:90", (67, 100)),
            ("mrd:100/rs:fill-down:0:0/rot:90", (50, 100)),
            (
                "mrd:200/rs:fill-down:100:100/pd:100:200:300:400",
                (200, 144),
            ),
            (
                "mrd:200/rs:fill-down:1000:1000/pd:100:200:300:400",
                (200, 144),
            ),
        ]);
    }

    // imgproxy `crop_test.go` TestResizeFill and TestCrop (sizes), on the 200×100
    // `geometry.png`.
    #[test]
    fn imgproxy_crop_and_fill_gravity_sizes() {
        check_sizes(&[
            ("rs:fill:100:26/g:ce", (100, 26)),
            ("rs:fill:100:26/g:no", (100, 26)),
            ("rs:fill:100:26/g:soea", (100, 26)),
            ("rs:fill:26:100/g:we", (26, 100)),
            ("rs:fill:100:26/g:ce/dpr:2", (200, 52)),
            ("rs:fill:100:26/g:no:0:5", (100, 26)),
            ("rs:fill:100:26/g:no:0:5/dpr:0.5", (50, 13)),
            ("rs:fill:100:26/g:no:0:5/dpr:2", (200, 52)),
            ("rs:fill:26:100/g:no:5:0", (26, 100)),
            ("rs:fill:26:100/g:no:5:0/dpr:0.5", (13, 50)),
            // dpr does not affect the size since it is higher than the input
            ("rs:fill:26:100/g:no:5:0/dpr:2", (26, 100)),
            ("rs:fill:100:26/g:no:0:0.1", (100, 26)),
            ("rs:fill:100:26/g:no:0:0.1/dpr:0.5", (50, 13)),
            ("rs:fill:100:26/g:no:0:0.1/dpr:2", (200, 52)),
            ("c:50:50:ce", (50, 50)),
            ("c:50:50:no", (50, 50)),
            ("c:50:50:soea", (50, 50)),
            ("c:50:50:ce:10:10", (50, 50)),
            ("c:50:50:ce:0.1:0.1", (50, 50)),
            ("c:50:50:ce:10:10/dpr:0.5", (25, 25)),
        ]);
    }

    // Positions: imgproxy's `calcPosition` centres with `(outer - inner + 1) / 2`
    // rounded half to even, so a 50×50 window in 200×100 starts at (76, 26).
    #[test]
    fn crop_positions_follow_calc_position() {
        let table: &[(&str, Position, (u32, u32))] = &[
            ("c:50:50", at(76, 26), (50, 50)),
            ("c:50:50:nowe", at(0, 0), (50, 50)),
            ("c:50:50:soea", at(150, 50), (50, 50)),
            ("c:50:50:ea", at(150, 26), (50, 50)),
            ("c:50:50:so", at(76, 50), (50, 50)),
            ("c:50:50:ce:10:10", at(86, 36), (50, 50)),
            ("c:50:50:ce:0.1:0", at(96, 26), (50, 50)),
            ("c:50:50:nowe:10:5", at(10, 5), (50, 50)),
            // offsets on east/south gravities count from the right/bottom edge
            ("c:50:50:soea:10:5", at(140, 45), (50, 50)),
            // the window never leaves the image
            ("c:50:50:nowe:-30:500", at(0, 50), (50, 50)),
            ("c:50:50:fp:0.25:0.75", at(25, 50), (50, 50)),
            ("c:50:50:fp:1:1", at(150, 50), (50, 50)),
            ("c:50:50:fp:0:0", at(0, 0), (50, 50)),
            // below 1: a share of the source
            ("c:0.5:0.5", at(50, 26), (100, 50)),
            // `c:` uses the main gravity when it has none of its own
            ("g:soea/c:50:50", at(150, 50), (50, 50)),
            ("g:soea/c:50:50:nowe", at(0, 0), (50, 50)),
            // 0 keeps the side
            ("c:50:0:ea", at(150, 0), (50, 100)),
        ];
        for (path, pos, size) in table {
            let p = plan_for(path, 200, 100);
            let c = p.crop.unwrap();
            assert_eq!(c.position, *pos, "{path}");
            assert_eq!((c.width, c.height), *size, "{path}");
        }
        // A crop at least as large as the source is no crop.
        assert_eq!(plan_for("c:300:300", 200, 100).crop, None);
        assert_eq!(
            plan_for("c:50:50:sm", 200, 100).crop.unwrap().position,
            Position::Smart
        );
    }

    #[test]
    fn result_crop_positions() {
        let table: &[(&str, Position, (u32, u32))] = &[
            // 100×50 after resizing, cut to 100×26
            ("rs:fill:100:26/g:no", at(0, 0), (100, 26)),
            ("rs:fill:100:26", at(0, 12), (100, 26)),
            ("rs:fill:100:26/g:so", at(0, 24), (100, 26)),
            ("rs:fill:100:26/g:no:0:5", at(0, 5), (100, 26)),
            // absolute offsets are multiplied by the DPR scale…
            ("rs:fill:100:26/g:no:0:5/dpr:2", at(0, 10), (200, 52)),
            ("rs:fill:100:26/g:no:0:5/dpr:0.5", at(0, 2), (50, 13)),
            // …relative ones by the image size
            ("rs:fill:100:26/g:no:0:0.1", at(0, 5), (100, 26)),
            // no resizing (200×100), cut to 26×100
            ("rs:fill:26:100/g:no:5:0", at(93, 0), (26, 100)),
            ("rs:fill:100:100/g:fp:0.9:0.5", at(100, 0), (100, 100)),
            ("rs:fill:100:100/g:fp:0.3:0.5", at(10, 0), (100, 100)),
            ("rs:fill:100:100/g:sm", Position::Smart, (100, 100)),
        ];
        for (path, pos, size) in table {
            let p = plan_for(path, 200, 100);
            let c = p.result_crop.unwrap();
            assert_eq!(c.position, *pos, "{path}");
            assert_eq!((c.width, c.height), *size, "{path}");
        }
        assert_eq!(plan_for("rs:fit:100:100", 200, 100).result_crop, None);
    }

    #[test]
    fn other_sizes_from_imgproxy_arithmetic() {
        check_sizes(&[
            // auto: same orientation → fill, different → fit
            ("rs:auto:100:50", (100, 50)),
            ("rs:auto:100:100", (100, 100)),
            ("rs:auto:50:100", (50, 25)),
            // force ignores the aspect ratio, but does not enlarge without `el`
            ("rs:force:50:50", (50, 50)),
            ("rs:force:50:0", (50, 100)),
            ("rs:force:0:50", (200, 50)),
            ("rs:force:300:300", (100, 100)),
            ("rs:force:300:300/el:1", (300, 300)),
            // dpr
            ("rs:fit:50:50/dpr:2", (100, 50)),
            ("rs:fill:50:50/dpr:2", (100, 100)),
            ("rs:fit:300:300/dpr:2", (200, 100)),
            ("rs:fit:300:300/dpr:2/el:1", (600, 300)),
            ("rs:fit:300:300/ex:1/dpr:2", (300, 300)),
            // zoom
            ("z:0.5", (100, 50)),
            ("z:2", (200, 100)),
            ("z:2/el:1", (400, 200)),
            ("z:0.5:0.25", (100, 25)),
            ("rs:fit:100:100/z:2", (200, 100)),
            // min-width / min-height: the result is still cut to width/height
            ("rs:fit:50:50/mw:100", (50, 50)),
            ("rs:fit:0:25/mw:100", (100, 25)),
            ("rs:fit:100:0/mh:75", (100, 75)),
            ("rs:fit:50:0/mw:100", (50, 50)),
            // crop then resize
            ("c:100:100/rs:fit:50:50", (50, 50)),
            ("c:0.5:0/rs:fit:50:0", (50, 50)),
            // a crop side of exactly 1 is one pixel, not the whole side
            ("c:0.5:1/rs:fit:50:0", (50, 1)),
            // padding (scaled by the DPR scale, rounded half to even)
            ("pd:10", (220, 120)),
            ("pd:10:20:30:40", (260, 140)),
            ("rs:fit:50:50/pd:10/dpr:2", (140, 90)),
            ("rs:fit:100:100/pd:5/dpr:1.5", (166, 91)),
            // rotation swaps the sides
            ("rot:90", (100, 200)),
            ("rot:180/rs:fit:50:50", (50, 25)),
            ("rot:90/rs:fit:50:50", (25, 50)),
            ("rot:270/rs:fill:40:40", (40, 40)),
        ]);
    }

    #[test]
    fn resize_is_in_source_orientation() {
        let p = plan_for("rot:90/rs:fit:50:50", 200, 100);
        assert_eq!(
            p.resize,
            Some(Size {
                width: 50,
                height: 25
            })
        );
        assert_eq!((p.rotate, p.width, p.height), (90, 25, 50));
        assert_eq!(plan_for("rs:fit:300:300", 200, 100).resize, None);
    }

    #[test]
    fn crop_gravity_is_turned_back_for_rotate_and_flip() {
        // After rotating 90° clockwise the source's bottom-left corner is the top-left.
        let p = plan_for("c:50:30:nowe/rot:90", 200, 100);
        let c = p.crop.unwrap();
        assert_eq!((c.width, c.height, c.position), (30, 50, at(0, 50)));
        assert_eq!((p.width, p.height), (50, 30));
        // 180°: top-left becomes bottom-right.
        let c = plan_for("c:50:30:nowe/rot:180", 200, 100).crop.unwrap();
        assert_eq!(c.position, at(150, 70));
        // 270°: top-left comes from the top-right.
        let c = plan_for("c:50:30:nowe/rot:270", 200, 100).crop.unwrap();
        assert_eq!((c.width, c.height, c.position), (30, 50, at(170, 0)));
        // A horizontal flip mirrors west and east.
        let c = plan_for("c:50:30:nowe/fl:1:0", 200, 100).crop.unwrap();
        assert_eq!(c.position, at(150, 0));
        let c = plan_for("c:50:30:fp:0.25:0.5/fl:1:0", 200, 100)
            .crop
            .unwrap();
        assert_eq!(c.position, at(125, 35));
        // Offsets turn with the gravity: 10 px from the left after rotating 90° is 10 px
        // from the bottom before.
        let c = plan_for("c:50:30:nowe:10:0/rot:90", 200, 100).crop.unwrap();
        assert_eq!(c.position, at(0, 40));
    }

    #[test]
    fn extend_positions() {
        let e = plan_for("rs:fit:300:300/ex:1", 200, 100).extend.unwrap();
        assert_eq!(
            e,
            Embed {
                width: 300,
                height: 300,
                left: 50,
                top: 100
            }
        );
        let e = plan_for("rs:fit:300:300/ex:1:soea", 200, 100)
            .extend
            .unwrap();
        assert_eq!((e.left, e.top), (100, 200));
        let e = plan_for("rs:fit:300:300/ex:1:nowe:10:20", 200, 100)
            .extend
            .unwrap();
        assert_eq!((e.left, e.top), (10, 20));
        let e = plan_for("rs:fit:300:300/ex:1:fp:0.5:0", 200, 100)
            .extend
            .unwrap();
        assert_eq!((e.left, e.top), (50, 0));
        let e = plan_for("rs:fit:300:300/exar:1:so", 200, 100)
            .extend_aspect_ratio
            .unwrap();
        assert_eq!(
            e,
            Embed {
                width: 200,
                height: 200,
                left: 0,
                top: 100
            }
        );
        // Nothing to extend when the image already fills the target.
        assert_eq!(plan_for("rs:fill:50:50/ex:1", 200, 100).extend, None);
        let p = plan_for("rs:fit:50:50/pd:10/dpr:2", 200, 100);
        assert_eq!(
            p.padding,
            Some(Insets {
                top: 20,
                right: 20,
                bottom: 20,
                left: 20
            })
        );
    }

    #[test]
    fn decode_shrink_and_jpeg_scale() {
        let p = plan_for("rs:fit:50:50", 400, 200);
        assert_eq!((p.decode_shrink, p.jpeg_shrink()), (8.0, 8));
        // 200×100 → 25×13 (12.5 rounds up): 100/13 < 8, so only 1/4 is safe.
        let p = plan_for("rs:fit:25:25", 200, 100);
        assert_eq!(p.jpeg_shrink(), 4);
        let p = plan_for("rs:fit:720:0", 2560, 1600);
        assert_eq!(p.jpeg_shrink(), 2);
        let p = plan_for("rs:fit:300:300/el:1", 200, 100);
        assert_eq!((p.decode_shrink, p.jpeg_shrink()), (1.0, 1));
        // dpr needs more source pixels
        let p = plan_for("rs:fit:25:25/dpr:2", 200, 100);
        assert_eq!(p.jpeg_shrink(), 4);
    }

    #[test]
    fn scale_within_pixels_keeps_the_drawing_under_the_limit() {
        assert_eq!(scale_within_pixels(100.0, 50.0, 2.0, 20_000), 2.0);
        let s = scale_within_pixels(100.0, 50.0, 2.0, 5_000);
        assert!((s - 1.0).abs() < 1e-12, "{s}");
        let s = scale_within_pixels(40_000.0, 40_000.0, 1.0, 16_000_000);
        assert!((40_000.0 * s * 40_000.0 * s - 16e6).abs() < 1.0, "{s}");
    }

    #[test]
    fn plan_for_decoded_size_scales_source_coordinates() {
        let p = plan_for("c:100:50:nowe:20:10/rs:fit:25:0", 200, 100);
        assert_eq!(
            p.crop.unwrap(),
            Region {
                width: 100,
                height: 50,
                position: at(20, 10)
            }
        );
        assert_eq!(
            p.resize,
            Some(Size {
                width: 25,
                height: 13
            })
        );
        assert_eq!(p.jpeg_shrink(), 4);
        let d = p.for_decoded_size(50, 25);
        assert_eq!((d.src_width, d.src_height), (50, 25));
        assert_eq!(
            d.crop.unwrap(),
            Region {
                width: 25,
                height: 13,
                position: at(5, 3)
            }
        );
        // 25×13 is already the target: no more resampling, same result size.
        assert_eq!(d.resize, None);
        assert_eq!((d.width, d.height), (p.width, p.height));

        let p = plan_for("rs:fit:20:0", 200, 100);
        let d = p.for_decoded_size(100, 50);
        assert_eq!(d.crop, None);
        assert_eq!(
            d.resize,
            Some(Size {
                width: 20,
                height: 10
            })
        );
        assert_eq!(d.decode_shrink, 5.0);
        assert_eq!(p.for_decoded_size(200, 100), p);
    }

    #[test]
    fn limits_and_bad_input() {
        let strict = Limits {
            max_output_dimension: 250,
            ..Limits::default()
        };
        let err = plan(&opts("rs:fit:300:300/el:1"), 200, 100, &strict).unwrap_err();
        assert_eq!(
            err,
            GeometryError::TooLarge {
                option: "resize",
                width: 300,
                height: 150,
                max: 250
            }
        );
        assert!(plan(&opts("rs:fit:250:250/el:1"), 200, 100, &strict).is_ok());
        // The intermediate resized image counts too.
        let err = plan(&opts("rs:fill:200:200/el:1"), 1, 100, &strict).unwrap_err();
        assert!(matches!(err, GeometryError::TooLarge { .. }), "{err}");
        // The server's max_result_dimension shrinks instead; the URL overrides it.
        let shrink = Limits {
            max_result_dimension: 50,
            ..Limits::default()
        };
        let p = plan(&opts("rs:fit:100:100"), 200, 100, &shrink).unwrap();
        assert_eq!((p.width, p.height), (50, 25));
        let p = plan(&opts("mrd:0/rs:fit:100:100"), 200, 100, &shrink).unwrap();
        assert_eq!((p.width, p.height), (100, 50));

        assert!(matches!(
            plan(&Options::default(), 0, 10, &Limits::default()),
            Err(GeometryError::EmptySource { .. })
        ));
        let o = Options {
            dpr: f64::NAN,
            ..Options::default()
        };
        assert!(plan(&o, 10, 10, &Limits::default()).is_err());
    }

    #[test]
    fn tiny_results_stay_at_least_one_pixel() {
        check_sizes(&[("rs:fit:1:1", (1, 1)), ("rs:force:1:1", (1, 1))]);
        let p = plan_for("rs:fit:10:0", 10000, 1);
        assert_eq!((p.width, p.height), (10, 1));
    }

    #[test]
    fn zoomed_extend_canvas_is_checked_not_wrapped() {
        // Guards: `w:1/z:4294967396/ex:1` made a 4294967396-pixel-wide extend canvas
        // that `as u32` wrapped to 100, with its left offset (~2^31) left as it was;
        // transform then indexed past the canvas and panicked. Sizes are now checked
        // before they are narrowed, and the error names the option.
        let o = Options {
            zoom_width: 4_294_967_396.0,
            zoom_height: 4_294_967_396.0,
            ..opts("w:1/ex:1")
        };
        assert!(matches!(
            plan(&o, 512, 512, &Limits::default()),
            Err(GeometryError::InvalidOption(_))
        ));
        // Within the parser's bounds the canvas can still be too large: refused too.
        let err = plan_err("w:2/z:16383/ex:1", 8, 8);
        assert_eq!(
            err,
            GeometryError::TooLarge {
                option: "zoom",
                width: 32766,
                height: 8,
                max: MAX_DIMENSION
            }
        );
        assert!(
            err.to_string().starts_with("invalid option `zoom`"),
            "{err}"
        );
        let err = plan_err("w:4294967295/z:16383/dpr:16383/ex:1", 8, 8);
        assert!(
            matches!(err, GeometryError::TooLarge { option: "zoom", .. }),
            "{err}"
        );
        // The largest canvas allowed is exactly the ceiling.
        let p = plan_for("w:1/z:16383/ex:1", 8, 8);
        assert_eq!((p.width, p.height), (MAX_DIMENSION, 8));
    }

    fn plan_err(path: &str, w: u32, h: u32) -> GeometryError {
        plan(&opts(path), w, h, &Limits::default()).unwrap_err()
    }

    #[test]
    fn every_step_is_held_to_the_ceiling() {
        // Guards: results over 16383 a side were only refused when the caller set
        // `max_output_dimension`; with `Limits::default()` any size went through.
        let err = plan_err("rs:fit:20000:0/el:1", 100, 100);
        assert!(
            matches!(
                err,
                GeometryError::TooLarge {
                    option: "resize",
                    ..
                }
            ),
            "{err}"
        );
        let err = plan_err("rs:fit:100:100/dpr:200/el:1", 100, 100);
        assert!(
            matches!(err, GeometryError::TooLarge { option: "dpr", .. }),
            "{err}"
        );
        let err = plan_err("w:16000/h:100/ex:1/pd:400", 100, 100);
        assert!(
            matches!(
                err,
                GeometryError::TooLarge {
                    option: "padding",
                    ..
                }
            ),
            "{err}"
        );
        let err = plan_err("rs:fit:100:100/mh:16383", 100, 1);
        assert!(
            matches!(
                err,
                GeometryError::TooLarge {
                    option: "min-height",
                    ..
                }
            ),
            "{err}"
        );
        // The source itself, served at its size, is held to it too.
        let err = plan_err("", 20000, 10);
        assert!(matches!(err, GeometryError::TooLarge { .. }), "{err}");
        // Padding of 2^32 pixels a side (options built without the parser).
        let o = Options {
            padding: crate::imaging::options::Padding {
                top: u32::MAX,
                right: u32::MAX,
                bottom: u32::MAX,
                left: u32::MAX,
            },
            ..Options::default()
        };
        let err = plan(&o, 10, 10, &Limits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                GeometryError::TooLarge {
                    option: "padding",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn absurd_offsets_saturate() {
        // Guards: `calc_position` added offsets on i64 without a check; an offset of
        // 1e300 pixels (saturated to i64::MAX) overflowed, a debug-build panic.
        for kind in GravityType::ALL {
            for v in [1e300, -1e300, f64::from(u32::MAX)] {
                let g = Gravity { kind, x: v, y: v };
                let o = Options {
                    gravity: g,
                    crop: crate::imaging::options::Crop {
                        width: 5.0,
                        height: 5.0,
                        gravity: Some(g),
                    },
                    extend: crate::imaging::options::Extend {
                        enabled: true,
                        gravity: g,
                    },
                    width: 40,
                    height: 40,
                    ..Options::default()
                };
                if let Ok(p) = plan(&o, 20, 10, &Limits::default()) {
                    p.validate().unwrap();
                }
            }
        }
    }

    #[test]
    fn max_result_dimension_is_never_exceeded() {
        // Guards: imgproxy's `limitScale` rounds each part separately and can
        // overshoot the limit by a pixel; a second pass keeps the result within it.
        for (path, w, h) in [
            ("mrd:7/pd:1:2:3:4/rs:fit:100:100", 333, 97),
            ("mrd:3/pd:5/rs:fill:10:9/ex:1", 100, 100),
            ("mrd:1/rs:fit:0:0", 5, 3),
            ("mrd:13/exar:1/rs:fit:7:100/pd:0:3", 101, 3),
        ] {
            let mrd: u32 = path[4..path.find('/').unwrap()].parse().unwrap();
            match plan(&opts(path), w, h, &Limits::default()) {
                Ok(p) => assert!(p.width.max(p.height) <= mrd, "{path}: {p:?}"),
                Err(e) => assert!(
                    matches!(
                        e,
                        GeometryError::TooLarge {
                            option: "max_result_dimension",
                            ..
                        }
                    ),
                    "{path}: {e}"
                ),
            }
        }
    }

    #[test]
    fn validate_catches_inconsistent_plans() {
        let good = plan_for("c:50:50/rs:fit:20:20/pd:3", 200, 100);
        good.validate().unwrap();
        let mut p = good.clone();
        p.width += 1;
        assert!(p.validate().is_err());
        let mut p = good.clone();
        p.crop = Some(Region {
            width: 50,
            height: 50,
            position: at(151, 0),
        });
        assert!(p.validate().is_err());
        let mut p = good.clone();
        p.extend = Some(Embed {
            width: 100_000,
            height: 10,
            left: 0,
            top: 0,
        });
        assert!(p.validate().is_err());
        let mut p = good;
        p.resize = Some(Size {
            width: 0,
            height: 5,
        });
        assert!(p.validate().is_err());
    }

    #[test]
    fn plan_never_panics_and_stays_within_bounds() {
        // Property: for any options the parser accepts, any source of 1..=20000 pixels
        // a side and any limits, `plan` either fails with a request error (never an
        // inconsistent plan) or returns a plan that validates, whose every image is
        // within 1..=ceiling a side and whose result is within max_result_dimension;
        // the plan for a shrunk-on-load source validates too.
        use crate::imaging::options::fuzz;
        let mut rng = fuzz::Rng::new(0x5eed_0002);
        let (mut planned, mut refused) = (0, 0);
        for i in 0..20_000 {
            let Some(o) = fuzz::options(&mut rng, 5, 50) else {
                continue;
            };
            let side = |rng: &mut fuzz::Rng| match rng.below(3) {
                0 => rng.range(1, 8),
                1 => rng.range(1, 600),
                _ => rng.range(1, 20_000),
            };
            let (w, h) = (side(&mut rng), side(&mut rng));
            let limits = Limits {
                max_result_dimension: if i % 3 == 0 { rng.range(1, 20_000) } else { 0 },
                max_output_dimension: if i % 5 == 0 { rng.range(1, 20_000) } else { 0 },
            };
            let p = match plan(&o, w, h, &limits) {
                Ok(p) => p,
                Err(GeometryError::InconsistentPlan(e)) => {
                    panic!("inconsistent plan for {o:?} on {w}x{h}: {e}")
                }
                Err(_) => {
                    refused += 1;
                    continue;
                }
            };
            planned += 1;
            p.validate().unwrap();
            let ceiling = limits.ceiling();
            let mut sizes = vec![(p.width, p.height)];
            sizes.extend(p.resize.map(|r| (r.width, r.height)));
            sizes.extend(p.result_crop.map(|r| (r.width, r.height)));
            for e in [p.extend, p.extend_aspect_ratio].into_iter().flatten() {
                sizes.push((e.width, e.height));
            }
            for (sw, sh) in sizes {
                assert!(
                    (1..=ceiling).contains(&sw) && (1..=ceiling).contains(&sh),
                    "{sw}x{sh} for {o:?} on {w}x{h}: {p:?}"
                );
            }
            let max_dim = o
                .security
                .max_result_dimension
                .unwrap_or(i64::from(limits.max_result_dimension));
            if max_dim > 0 {
                assert!(
                    i64::from(p.width.max(p.height)) <= max_dim,
                    "{}x{} over {max_dim} for {o:?} on {w}x{h}",
                    p.width,
                    p.height
                );
            }
            // What a JPEG decoder scaling by 1/k hands to `transform`.
            let k = p.jpeg_shrink();
            if k > 1 {
                let d = p.for_decoded_size(w.div_ceil(k), h.div_ceil(k));
                d.validate()
                    .unwrap_or_else(|e| panic!("{e} for {o:?} on {w}x{h} decoded at 1/{k}"));
                assert_eq!((d.width, d.height), (p.width, p.height));
            }
        }
        assert!(
            planned > 5_000 && refused > 200,
            "{planned} planned, {refused} refused"
        );
    }
}
