//! Animated WebP output through libwebp's `WebPAnimEncoder` (the `webp` crate's
//! `AnimEncoder`), for animated GIF and WebP sources whose output is WebP.
//!
//! What must stay true:
//! - every frame keeps its display time, the last one included, and the loop count is the
//!   source's (0: forever);
//! - frames arrive composited to the full canvas (the decoder applied each source frame's
//!   offset and disposal), so what a viewer shows frame by frame is the source's; libwebp
//!   finds the changed rectangles and picks blending and disposal on its own;
//! - every frame has the picture's size: a frame of another size is an error, never a
//!   read past a buffer.
//!
//! The `webp` crate ends the animation with a timestamp of 0, which libwebp refuses (it
//! must not go backwards), and then gives the last frame the average of the others' times.
//! [`set_last_duration`] writes the right time into the last `ANMF` chunk afterwards.

use super::picture::Picture;

/// Why an animation could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum AnimationError {
    #[error("WebP is limited to 16383 pixels a side")]
    TooLarge,
    #[error("animation frame {index} is {width}x{height}, not the canvas's {canvas_w}x{canvas_h}")]
    FrameSize {
        index: usize,
        width: u32,
        height: u32,
        canvas_w: u32,
        canvas_h: u32,
    },
    #[error("libwebp could not encode the animation: {0}")]
    Codec(String),
    #[error("libwebp's animation output has no last frame chunk")]
    Output,
}

/// Animated WebP of every frame of `picture` at `quality` (lossy, or lossless).
pub fn encode(picture: &Picture, quality: u8, lossless: bool) -> Result<Vec<u8>, AnimationError> {
    let (w, h) = (picture.width(), picture.height());
    if w == 0 || h == 0 || w > 16383 || h > 16383 {
        return Err(AnimationError::TooLarge);
    }
    let mut config = webp::WebPConfig::new()
        .map_err(|()| AnimationError::Codec("cannot initialise the configuration".into()))?;
    config.quality = f32::from(quality.clamp(1, 100));
    config.lossless = i32::from(lossless);
    // Method 4 is cwebp's default: method 6 costs about twice the time for ~2% fewer bytes.
    config.method = 4;
    // RGBA copies of every frame, borrowed by the encoder until it is done.
    let rgba: Vec<(Vec<u8>, u32)> = picture
        .frames
        .iter()
        .map(|f| (f.image.to_rgba8().into_raw(), f.delay_ms))
        .collect();
    for (index, f) in picture.frames.iter().enumerate() {
        if (f.image.width(), f.image.height()) != (w, h) {
            return Err(AnimationError::FrameSize {
                index,
                width: f.image.width(),
                height: f.image.height(),
                canvas_w: w,
                canvas_h: h,
            });
        }
    }
    let mut enc = webp::AnimEncoder::new(w, h, &config);
    enc.set_loop_count(i32::from(picture.loops));
    enc.set_bgcolor([0, 0, 0, 0]);
    let mut at: i64 = 0;
    for (data, delay) in &rgba {
        let ts = i32::try_from(at).map_err(|_| AnimationError::Codec("too long".into()))?;
        enc.add_frame(webp::AnimFrame::from_rgba(data, w, h, ts));
        at += i64::from(*delay);
    }
    let out = enc
        .try_encode()
        .map_err(|e| AnimationError::Codec(format!("{e:?}")))?;
    let mut out = out.to_vec();
    let last = rgba.last().map_or(0, |(_, d)| *d);
    set_last_duration(&mut out, last).ok_or(AnimationError::Output)?;
    Ok(out)
}

/// Writes `ms` as the display time of the last `ANMF` chunk of an animated WebP
/// (clamped to the 24 bits the field holds). `None` when there is no such chunk.
pub fn set_last_duration(webp: &mut [u8], ms: u32) -> Option<()> {
    let mut at = 12usize;
    let mut last = None;
    while at + 8 <= webp.len() {
        let kind = webp.get(at..at + 4)?;
        let len = usize::try_from(u32::from_le_bytes(
            webp.get(at + 4..at + 8)?.try_into().ok()?,
        ))
        .ok()?;
        if kind == b"ANMF" {
            last = Some(at + 8);
        }
        at = at.checked_add(8 + len + (len & 1))?;
    }
    // ANMF payload: x (3), y (3), width-1 (3), height-1 (3), duration (3), flags (1).
    let field = last? + 12;
    let ms = ms.min(0x00FF_FFFF).to_le_bytes();
    webp.get_mut(field..field + 3)?.copy_from_slice(&ms[..3]);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::decode::tests::read;
    use crate::imaging::decode::{DecodeOptions, decode, probe};
    use crate::imaging::picture::Frame;
    use image::{DynamicImage, RgbaImage};

    fn decoded(bytes: &[u8]) -> Picture {
        let p = probe(bytes).unwrap();
        let opts = DecodeOptions {
            max_frames: 1000,
            ..DecodeOptions::default()
        };
        decode(bytes, &p, &opts).unwrap().picture
    }

    #[test]
    fn gif_frames_delays_and_loops_survive_as_webp() {
        let gif = read("edge-animated-8frames-160x120.gif");
        let src = decoded(&gif);
        assert_eq!(src.frames.len(), 8);
        let out = encode(&src, 80, false).unwrap();
        let back = decoded(&out);
        assert_eq!(back.frames.len(), 8);
        assert_eq!(back.loops, src.loops);
        let delays = |p: &Picture| p.frames.iter().map(|f| f.delay_ms).collect::<Vec<_>>();
        assert_eq!(delays(&back), delays(&src));
        assert!(
            out.len() * 2 < gif.len(),
            "{} bytes of WebP for {} of GIF",
            out.len(),
            gif.len()
        );
    }

    #[test]
    fn the_last_frame_keeps_its_own_time_and_a_finite_loop_count() {
        // Before: libwebp gave the last frame the others' average (here 100 ms, not 900).
        let frame = |v: u8, delay_ms| Frame {
            image: DynamicImage::ImageRgba8(RgbaImage::from_pixel(
                16,
                8,
                image::Rgba([v, 0, 0, 255]),
            )),
            delay_ms,
        };
        let picture = Picture {
            frames: vec![frame(0, 100), frame(120, 100), frame(250, 900)],
            loops: 3,
            icc: None,
        };
        let back = decoded(&encode(&picture, 90, false).unwrap());
        let delays: Vec<u32> = back.frames.iter().map(|f| f.delay_ms).collect();
        assert_eq!(delays, vec![100, 100, 900]);
        assert_eq!(back.loops, 3);
        // The crate hands libwebp YUV pictures, so "lossless" is within a step or two.
        let lossless = decoded(&encode(&picture, 90, true).unwrap());
        let px = lossless.frames[2].image.to_rgba8().get_pixel(3, 3).0;
        assert!(
            px[0].abs_diff(250) <= 2 && px[1] <= 2 && px[3] == 255,
            "{px:?}"
        );
    }

    #[test]
    fn mismatched_frames_and_junk_are_errors() {
        let a = DynamicImage::ImageRgba8(RgbaImage::new(8, 8));
        let b = DynamicImage::ImageRgba8(RgbaImage::new(4, 8));
        let picture = Picture {
            frames: vec![
                Frame {
                    image: a,
                    delay_ms: 10,
                },
                Frame {
                    image: b,
                    delay_ms: 10,
                },
            ],
            loops: 0,
            icc: None,
        };
        assert!(matches!(
            encode(&picture, 80, false),
            Err(AnimationError::FrameSize { index: 1, .. })
        ));
        assert_eq!(set_last_duration(&mut [0u8; 30], 5), None);
        let mut huge_len = b"RIFF\0\0\0\0WEBPANMF\xff\xff\xff\xff".to_vec();
        assert_eq!(set_last_duration(&mut huge_len, 5), None);
    }
}
