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
//!   steps in order produces.
//!
//! Departures from imgproxy, on purpose: the source is already upright (the decoder
//! applied EXIF orientation), so only the `rotate` and `flip` options rotate; vector
//! sources and format size fixes (`fix_size.go`) are not handled here; besides imgproxy's
//! `max_result_dimension` (which shrinks the result), the caller may set a hard
//! [`Limits::max_output_dimension`] that refuses the request instead.

use crate::imaging::options::{Gravity, GravityType, Options, ResizingType};

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeometryError {
    #[error("the source image has no pixels ({width}x{height})")]
    EmptySource { width: u32, height: u32 },
    #[error("invalid geometry option: {0}")]
    InvalidOption(&'static str),
    #[error("the result would be {width}x{height}, larger than the allowed {max} pixels per side")]
    TooLarge { width: u64, height: u64, max: u32 },
}

/// Server-side limits that bound a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// imgproxy's `IMGPROXY_MAX_RESULT_DIMENSION`: a result larger than this on either
    /// side is scaled down to fit (0: no limit). The URL's `max_result_dimension`
    /// security option overrides it.
    pub max_result_dimension: u32,
    /// A hard ceiling on either side of the result: a plan over it is refused with
    /// [`GeometryError::TooLarge`] (0: no ceiling).
    pub max_output_dimension: u32,
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
/// (on a side where the window is larger than the image, the result is 0).
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
        left = px - inner_w / 2;
        top = py - inner_h / 2;
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
        left = shrink_to_even(width - inner_w + 1, 2.0) + off_x;
        top = shrink_to_even(height - inner_h + 1, 2.0) + off_y;
        use GravityType as G;
        if matches!(gravity.kind, G::North | G::NorthEast | G::NorthWest) {
            top = off_y;
        }
        if matches!(gravity.kind, G::East | G::NorthEast | G::SouthEast) {
            left = width - inner_w - off_x;
        }
        if matches!(gravity.kind, G::South | G::SouthEast | G::SouthWest) {
            top = height - inner_h - off_y;
        }
        if matches!(gravity.kind, G::West | G::NorthWest | G::SouthWest) {
            left = off_x;
        }
    }
    // Go's max(minX, min(left, maxX)): not `clamp`, which panics when max < min.
    let left = left.min(width - inner_w).max(0);
    let top = top.min(height - inner_h).max(0);
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

/// imgproxy's `cropImage` decision: `None` when the window covers the image.
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
            left: left as u32,
            top: top as u32,
        }
    };
    Some(Region {
        width: cw as u32,
        height: ch as u32,
        position,
    })
}

/// imgproxy's `extendImage` decision: `None` when the canvas is not larger.
fn embed(
    img_w: i64,
    img_h: i64,
    width: i64,
    height: i64,
    gravity: &Gravity,
    offset_scale: f64,
) -> Option<Embed> {
    if width <= img_w && height <= img_h {
        return None;
    }
    let width = if width <= 0 { img_w } else { width };
    let height = if height <= 0 { img_h } else { height };
    let (left, top) = calc_position(width, height, img_w, img_h, gravity, offset_scale);
    Some(Embed {
        width: width as u32,
        height: height as u32,
        left: left as u32,
        top: top as u32,
    })
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

fn padding_insets(o: &Options, dpr_scale: f64) -> Insets {
    let p = |v: u32| scale_to_even(i64::from(v), dpr_scale).max(0) as u32;
    Insets {
        top: p(o.padding.top),
        right: p(o.padding.right),
        bottom: p(o.padding.bottom),
        left: p(o.padding.left),
    }
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
        let p = padding_insets(o, s.dpr_scale);
        out_w += i64::from(p.left) + i64::from(p.right);
        out_h += i64::from(p.top) + i64::from(p.bottom);
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
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !positive(o.dpr) {
        return Err(GeometryError::InvalidOption(
            "dpr must be a positive number",
        ));
    }
    if !positive(o.zoom_width) || !positive(o.zoom_height) {
        return Err(GeometryError::InvalidOption(
            "zoom must be a positive number",
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

/// Refuses sizes over [`Limits::max_output_dimension`] (and over `u32`).
fn check_max(width: i64, height: i64, limits: &Limits) -> Result<(), GeometryError> {
    let max = i64::from(limits.max_output_dimension);
    let over_u32 = width > i64::from(u32::MAX) || height > i64::from(u32::MAX);
    if over_u32 || (max > 0 && width.max(height) > max) {
        return Err(GeometryError::TooLarge {
            width: width.max(0) as u64,
            height: height.max(0) as u64,
            max: limits.max_output_dimension,
        });
    }
    Ok(())
}

/// Computes the plan for one request: `src_width` × `src_height` is the upright source
/// size (after EXIF orientation). The result follows imgproxy's pipeline: crop,
/// scale, rotate and flip, crop to result, (filters), extend, extend aspect ratio,
/// padding.
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
    let o = opts;
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
    let max_dim = match o.security.max_result_dimension {
        Some(v) => v,
        None => i64::from(limits.max_result_dimension),
    };
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
    // The resized image exists in memory even when the result crop cuts it down, so
    // the hard ceiling applies to it too (`fill` with `enlarge` on a very thin source
    // would otherwise allocate an enormous intermediate image).
    check_max(scaled_w, scaled_h, limits)?;
    let resize = (s.wscale != 1.0 || s.hscale != 1.0).then(|| {
        let (w, h) = if swapped {
            (scaled_h, scaled_w)
        } else {
            (scaled_w, scaled_h)
        };
        Size {
            width: w as u32,
            height: h as u32,
        }
    });
    // Without resampling the image keeps the cropped size (which is what the scaled
    // size is when both scales are 1).
    let (mut cur_w, mut cur_h) = if resize.is_some() {
        (scaled_w, scaled_h)
    } else {
        (width_to_scale, height_to_scale)
    };

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
        )
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
        )
    } else {
        None
    };
    if let Some(e) = extend_aspect_ratio {
        (cur_w, cur_h) = (i64::from(e.width), i64::from(e.height));
    }

    // Step 8: padding.
    let padding = o
        .padding
        .is_enabled()
        .then(|| padding_insets(o, s.dpr_scale));
    if let Some(p) = padding {
        cur_w += i64::from(p.left) + i64::from(p.right);
        cur_h += i64::from(p.top) + i64::from(p.bottom);
    }

    check_max(cur_w, cur_h, limits)?;

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
        width: cur_w as u32,
        height: cur_h as u32,
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
}
