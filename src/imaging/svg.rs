//! SVG sources: sized and served from the sanitised document ([`super::svg_sanitize`]),
//! rasterised by resvg at the size the result needs, so a small icon asked for at 1000
//! pixels is drawn at 1000 pixels, never upscaled from its intrinsic size.
//!
//! What must stay true:
//! - resvg only ever sees the sanitised document;
//! - nothing outside the document is read: the image resolver answers no path or URL, and
//!   takes an embedded `data:` raster image only after [`super::decode::probe`] has
//!   checked its size against [`EMBEDDED_MAX_PIXELS`] (resvg decodes it without limits);
//! - the caller chooses the raster size and bounds it ([`super::pipeline`] keeps it within
//!   the pixel limit), and a failure is a `Corrupt` error, never a panic.
//!
//! Text is drawn with the host's fonts (loaded once, on the first SVG with text support);
//! a host without fonts draws no text.

use std::sync::{Arc, LazyLock};

use image::{DynamicImage, RgbaImage};
use resvg::tiny_skia;
use resvg::usvg;

use super::decode::DecodeError;
use super::options::ImageFormat;
use super::svg_sanitize::{self, Sanitized};

/// The largest raster image an SVG may embed, in pixels.
pub const EMBEDDED_MAX_PIXELS: u64 = 16_000_000;

fn corrupt(reason: impl ToString) -> DecodeError {
    DecodeError::Corrupt {
        format: ImageFormat::Svg,
        reason: reason.to_string(),
    }
}

/// The sanitised document, or why it was refused.
pub fn sanitized(bytes: &[u8]) -> Result<Sanitized, DecodeError> {
    svg_sanitize::sanitize(bytes).map_err(corrupt)
}

/// The intrinsic size in whole pixels (at least 1×1), from the root's start tag alone:
/// a probe runs before a worker is taken, so it never parses the whole document (that
/// happens on a worker, where a malformed document is refused).
pub fn probe(bytes: &[u8]) -> Result<(u32, u32), DecodeError> {
    let (w, h) = svg_sanitize::root_size(bytes, super::decode::SVG_SNIFF_BYTES)
        .ok_or_else(|| corrupt("no readable <svg> start tag"))?;
    Ok((whole(w), whole(h)))
}

fn whole(v: f64) -> u32 {
    // `as` saturates; the sanitiser keeps the value finite and ≥ 1.
    (v.round() as u32).max(1)
}

static FONTS: LazyLock<Arc<usvg::fontdb::Database>> = LazyLock::new(|| {
    let mut db = usvg::fontdb::Database::new();
    db.load_system_fonts();
    tracing::debug!(faces = db.len(), "fonts loaded for SVG text");
    Arc::new(db)
});

fn options() -> usvg::Options<'static> {
    let resolve_data: usvg::ImageHrefDataResolverFn<'static> =
        Box::new(|_mime, data: Arc<Vec<u8>>, _opts: &usvg::Options| {
            let probe = super::decode::probe(&data).ok()?;
            if probe.pixels() > EMBEDDED_MAX_PIXELS {
                return None;
            }
            match probe.format {
                ImageFormat::Png => Some(usvg::ImageKind::PNG(data)),
                ImageFormat::Jpeg => Some(usvg::ImageKind::JPEG(data)),
                ImageFormat::Gif => Some(usvg::ImageKind::GIF(data)),
                ImageFormat::Webp => Some(usvg::ImageKind::WEBP(data)),
                _ => None,
            }
        });
    usvg::Options {
        resources_dir: None,
        image_href_resolver: usvg::ImageHrefResolver {
            resolve_data,
            resolve_string: Box::new(|_, _| None),
        },
        fontdb: FONTS.clone(),
        ..Default::default()
    }
}

/// Draws the document (sanitised here) onto a transparent `width × height` canvas, its
/// intrinsic viewport stretched to fill it: straight (not premultiplied) RGBA.
pub fn rasterize(bytes: &[u8], width: u32, height: u32) -> Result<DynamicImage, DecodeError> {
    let doc = svg_sanitize::sanitize_for_drawing(bytes).map_err(corrupt)?;
    draw(&doc.text, width, height)
}

/// Draws a sanitised document (see [`rasterize`]).
fn draw(text: &str, width: u32, height: u32) -> Result<DynamicImage, DecodeError> {
    let tree = usvg::Tree::from_str(text, &options()).map_err(corrupt)?;
    let mut pixmap = tiny_skia::Pixmap::new(width, height)
        .ok_or_else(|| corrupt(format!("cannot draw at {width}x{height}")))?;
    let size = tree.size();
    let transform = tiny_skia::Transform::from_scale(
        width as f32 / size.width(),
        height as f32 / size.height(),
    );
    resvg::render(&tree, transform, &mut pixmap.as_mut());
    let mut rgba = pixmap.take();
    for px in rgba.chunks_exact_mut(4) {
        let a = u32::from(px[3]);
        if a != 0 && a != 255 {
            for c in &mut px[..3] {
                *c = ((u32::from(*c) * 255 + a / 2) / a).min(255) as u8;
            }
        }
    }
    let image = RgbaImage::from_raw(width, height, rgba)
        .ok_or_else(|| corrupt("the canvas has the wrong size"))?;
    Ok(DynamicImage::ImageRgba8(image))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQUARES: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10" width="20" height="20">
  <rect width="5" height="10" fill="#ff0000"/>
  <rect x="5" width="5" height="10" fill="#0000ff" fill-opacity="0.5"/>
</svg>"##;

    #[test]
    fn draws_at_any_size_from_the_viewport() {
        assert_eq!(probe(SQUARES.as_bytes()), Ok((20, 20)));
        for (w, h) in [(20, 20), (400, 400), (7, 3)] {
            let img = rasterize(SQUARES.as_bytes(), w, h).unwrap().to_rgba8();
            assert_eq!(img.dimensions(), (w, h));
            assert_eq!(img.get_pixel(0, 0).0, [255, 0, 0, 255]);
            let right = img.get_pixel(w - 1, h - 1).0;
            // Half-transparent blue, un-premultiplied.
            assert_eq!(right[2], 255);
            assert!(right[3].abs_diff(128) <= 1, "{right:?}");
        }
        // A sharp edge at 400 px: the column just left of the middle is pure red.
        let img = rasterize(SQUARES.as_bytes(), 400, 400).unwrap().to_rgba8();
        assert_eq!(img.get_pixel(199, 200).0, [255, 0, 0, 255]);
    }

    #[test]
    fn external_and_oversized_embedded_images_are_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("red.png");
        image::RgbImage::from_pixel(4, 4, image::Rgb([255, 0, 0]))
            .save(&png)
            .unwrap();
        let svg = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><image href="{}" width="4" height="4"/></svg>"#,
            png.display()
        );
        let img = rasterize(svg.as_bytes(), 4, 4).unwrap().to_rgba8();
        assert_eq!(img.get_pixel(1, 1).0[3], 0, "a file path was read");
        // A data: URL PNG is drawn when small, skipped when its header is over the limit.
        let mut bytes = Vec::new();
        image::RgbImage::from_pixel(4, 4, image::Rgb([0, 255, 0]))
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        let data = |b: &[u8]| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(b)
        };
        let embed = |b: &[u8]| {
            format!(
                r#"<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><image href="data:image/png;base64,{}" width="4" height="4"/></svg>"#,
                data(b)
            )
        };
        let img = rasterize(embed(&bytes).as_bytes(), 4, 4)
            .unwrap()
            .to_rgba8();
        assert_eq!(img.get_pixel(1, 1).0, [0, 255, 0, 255]);
        // The same PNG with a header claiming 20000×20000 (IHDR width/height).
        let mut bomb = bytes.clone();
        bomb[16..20].copy_from_slice(&20_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&20_000u32.to_be_bytes());
        let img = rasterize(embed(&bomb).as_bytes(), 4, 4).unwrap().to_rgba8();
        assert_eq!(img.get_pixel(1, 1).0[3], 0);
    }

    #[test]
    fn folding_opacity_draws_the_same() {
        // Translucent strokes and fills across each other, one shape with both paints (not
        // folded), a group opacity (not folded), Inkscape-style declarations.
        let svg = br##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 60" width="100" height="60">
  <rect width="100" height="60" fill="#fff"/>
  <path d="M0 10 C 30 80 70 -20 100 50" fill="none" stroke="#c00" stroke-width="6" opacity="0.5"/>
  <path d="M0 50 C 30 -20 70 80 100 10" style="fill:none;stroke:#00c;stroke-width:4;opacity:0.6;stroke-opacity:0.5"/>
  <circle cx="50" cy="30" r="20" fill="#0a0" opacity="0.4"/>
  <circle cx="30" cy="30" r="12" fill="#0a0" stroke="#000" stroke-width="5" opacity="0.5"/>
  <g opacity="0.5"><rect x="60" y="5" width="30" height="30" fill="#f0f"/></g>
</svg>"##;
        let folded = svg_sanitize::sanitize_for_drawing(svg).unwrap().text;
        assert_eq!(folded.matches("fill-opacity=").count(), 3, "{folded}");
        let plain = sanitized(svg).unwrap().text;
        let a = draw(&folded, 300, 180).unwrap().to_rgba8();
        let b = draw(&plain, 300, 180).unwrap().to_rgba8();
        // Equal but along some anti-aliased stroke edges, where coverage is quantised
        // before the paint's alpha in one case and before the layer's in the other:
        // measured 316 of 54 000 pixels off by more than 2 (none by more than 32).
        let diffs: Vec<u8> = a
            .pixels()
            .zip(b.pixels())
            .map(|(p, q)| {
                p.0.into_iter()
                    .zip(q.0)
                    .map(|(x, y)| x.abs_diff(y))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let off = diffs.iter().filter(|d| **d > 2).count();
        assert!(
            off * 100 <= diffs.len(),
            "{off} of {} pixels differ",
            diffs.len()
        );
        assert!(
            diffs.iter().all(|d| *d <= 40),
            "a pixel differs by more than 40"
        );
    }

    #[test]
    fn broken_documents_are_errors() {
        assert!(matches!(
            rasterize(b"<svg xmlns=\"http://www.w3.org/2000/svg\"", 4, 4),
            Err(DecodeError::Corrupt { .. })
        ));
        assert!(matches!(
            rasterize(SQUARES.as_bytes(), 0, 4),
            Err(DecodeError::Corrupt { .. })
        ));
    }
}
