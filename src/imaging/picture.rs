//! The decoded image handed from step to step of the pipeline (decode → transform →
//! encode). What must stay true:
//!
//! * `frames` is never empty; every frame has the same width and height.
//! * Pixels are 8-bit sRGB: `DynamicImage::ImageRgb8` for opaque sources and
//!   `DynamicImage::ImageRgba8` (straight, not premultiplied, alpha) for sources with alpha.
//!   Decoders convert everything else (gray, 16-bit, CMYK, palette, other ICC profiles) to
//!   one of these two, so later steps handle exactly two pixel layouts.
//! * Orientation has been applied by the decoder when auto-rotate was asked for; the
//!   pixels are upright and `width`/`height` are the upright size.

use image::DynamicImage;

/// One frame of a picture: the pixels and, for animations, how long it shows.
#[derive(Debug, Clone)]
pub struct Frame {
    pub image: DynamicImage,
    /// Display time in milliseconds (0 for still images).
    pub delay_ms: u32,
}

/// A decoded picture: one frame for still images, several for animations.
#[derive(Debug, Clone)]
pub struct Picture {
    pub frames: Vec<Frame>,
    /// Animation loop count as GIF stores it: 0 loops forever.
    pub loops: u16,
    /// The source's ICC profile, kept only so that `strip_color_profile = false` can embed
    /// it again; the pixels are already sRGB.
    pub icc: Option<Vec<u8>>,
}

impl Picture {
    /// A still picture of one frame.
    pub fn still(image: DynamicImage) -> Self {
        Self {
            frames: vec![Frame { image, delay_ms: 0 }],
            loops: 0,
            icc: None,
        }
    }

    pub fn width(&self) -> u32 {
        self.frames.first().map_or(0, |f| f.image.width())
    }

    pub fn height(&self) -> u32 {
        self.frames.first().map_or(0, |f| f.image.height())
    }

    pub fn is_animated(&self) -> bool {
        self.frames.len() > 1
    }

    /// Whether any frame carries an alpha channel.
    pub fn has_alpha(&self) -> bool {
        self.frames.iter().any(|f| f.image.color().has_alpha())
    }
}
