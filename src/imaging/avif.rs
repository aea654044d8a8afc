//! AVIF, both ways: [`decode`] (mp4parse for the HEIF container, Debian's libdav1d through
//! the `dav1d` crate for the AV1 payload, YUV → RGB here) and [`encode`] (rav1e through
//! `ravif`). Called by `decode` and `encode`, whose error types it returns.
//!
//! What must stay true:
//! - Decoding yields 8-bit `Rgb8` (opaque) or `Rgba8` (an alpha item exists), straight
//!   alpha (a premultiplied source is divided out), 10/12-bit samples scaled to 8 bits.
//!   YUV is converted with the matrix and range of the `colr nclx` box, else of the AV1
//!   sequence header (ravif writes no `colr`), else BT.601 limited range; alpha planes
//!   are taken as full range (as libavif and ravif write them). An ICC profile is handed
//!   back for the caller's sRGB conversion; primaries and transfer are otherwise taken as
//!   sRGB (no HDR tone mapping). Chroma is upsampled by nearest neighbour.
//! - The item's `irot` and `imir` are applied (HEIF order: rotation, then mirroring), so
//!   the pixels come out as a viewer shows them; [`turns_quarter`] lets the probe report
//!   the size that decoding returns.
//! - dav1d's frame-size limit is the pixel limit, so a hostile sequence header cannot make
//!   it allocate more than the probe allowed. Grids (tiled AVIFs) fail as corrupt.
//! - mp4parse reserves memory by the sizes and counts a file declares, so it only sees a
//!   file whose `ftyp`, `meta` and `mdat` boxes fit, and no image-sequence brand (it then
//!   skips the `moov` track): what it reserves is in proportion to the file's own size.
//! - Encoding takes `Rgb8`/`Rgba8` as they are (alpha kept) and writes 8-bit AV1 (rav1e's
//!   10-bit path, ravif's default, took twice as long); quality 1..=100 goes to ravif
//!   unchanged (its own mapping to AV1 quantizers), speed 1..=10 to rav1e's presets.

use std::borrow::Cow;

use image::{DynamicImage, RgbImage, RgbaImage};

use super::decode::DecodeError;
use super::encode::EncodeError;
use super::options::ImageFormat;

const F: ImageFormat = ImageFormat::Avif;

fn corrupt(reason: impl Into<String>) -> DecodeError {
    DecodeError::Corrupt {
        format: F,
        reason: reason.into(),
    }
}

/// What came out of an AVIF file: upright pixels and the embedded ICC profile, if any.
pub struct Decoded {
    pub image: DynamicImage,
    pub icc: Option<Vec<u8>>,
}

/// Decodes the primary item (and its alpha item), refusing frames over `max_pixels`.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<Decoded, DecodeError> {
    let container = bounded_container(bytes)?;
    let ctx = mp4parse::read_avif(
        &mut std::io::Cursor::new(container.as_ref()),
        mp4parse::ParseStrictness::Normal,
    )
    .map_err(|e| corrupt(format!("container: {e:?}")))?;
    let color = ctx
        .primary_item_coded_data()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| corrupt("no primary image item"))?;
    let props = item_properties(bytes);
    // The colour box when there is one, else what the AV1 sequence header signals.
    let matrix = props
        .nclx
        .or_else(|| sequence_header_colour(color))
        .unwrap_or(Nclx::DEFAULT);
    let yuv = decode_av1(color, max_pixels)?;
    let (w, h) = (yuv.width(), yuv.height());
    let alpha = match ctx.alpha_item_coded_data().filter(|d| !d.is_empty()) {
        Some(data) => {
            let a = decode_av1(data, max_pixels)?;
            if (a.width(), a.height()) != (w, h) {
                return Err(corrupt("alpha item size differs from the image"));
            }
            Some(a)
        }
        None => None,
    };
    let mut image = to_rgb(&yuv, alpha.as_ref(), matrix, ctx.premultiplied_alpha)?;
    let rotation = ctx
        .image_rotation()
        .map_err(|e| corrupt(format!("irot: {e:?}")))?;
    image = match rotation {
        // irot turns anticlockwise; the image crate's rotations are clockwise.
        mp4parse::ImageRotation::D0 => image,
        mp4parse::ImageRotation::D90 => image.rotate270(),
        mp4parse::ImageRotation::D180 => image.rotate180(),
        mp4parse::ImageRotation::D270 => image.rotate90(),
    };
    // mp4parse tells whether the primary item has an `imir` (the pointer is only compared,
    // never read); the axis comes from our own walk of the property boxes.
    let mirrored = ctx.image_mirror_ptr().is_ok_and(|p| !p.is_null());
    if mirrored {
        image = match props.imir_axis {
            Some(1) => image.flipv(),
            _ => image.fliph(),
        };
    }
    let icc = ctx
        .icc_colour_information()
        .and_then(Result::ok)
        .map(<[u8]>::to_vec);
    Ok(Decoded { image, icc })
}

/// What mp4parse may be given. It reserves memory by what a file declares before reading
/// it: a box's size, a table's entry count (fallibly, but a one-byte change that made an
/// `iloc` box claim 3.9 GiB had that much address space reserved). So the `ftyp`, `meta`
/// (and every box in it that mp4parse reads) and `mdat` boxes must lie inside their
/// containers, and the `iinf`, `iloc` and `ipma` counts must fit in their boxes; else the
/// file is corrupt. Only the primary item is decoded, so the copy mp4parse reads claims no
/// image sequence (`avis`, `msf1` read as `avif`, `mif1`): it then skips the `moov` box,
/// whose sample tables it would reserve by their counts too.
fn bounded_container(b: &[u8]) -> Result<Cow<'_, [u8]>, DecodeError> {
    let mut brands = Vec::new();
    let mut i = 0;
    while let Some(found) = box_at(b, i, b.len()) {
        let (kind, s, e) = match found {
            Ok(found) => found,
            Err(kind) if matches!(&kind, b"ftyp" | b"meta" | b"mdat") => {
                return Err(overrun(kind));
            }
            // mp4parse skips other boxes without reading them, and stops at one cut short.
            Err(_) => break,
        };
        match &kind {
            b"ftyp" if i == 0 => {
                let slots = std::iter::once(s).chain((s + 8..e.saturating_sub(3)).step_by(4));
                brands.extend(
                    slots.filter(|&at| matches!(b.get(at..at + 4), Some(b"avis" | b"msf1"))),
                );
            }
            b"meta" => check_meta_boxes(b, s + 4, e, 0)?,
            _ => {}
        }
        i = e;
    }
    if brands.is_empty() {
        return Ok(Cow::Borrowed(b));
    }
    let mut still = b.to_vec();
    for at in brands {
        let brand: &[u8; 4] = if &still[at..at + 4] == b"avis" {
            b"avif"
        } else {
            b"mif1"
        };
        still[at..at + 4].copy_from_slice(brand);
    }
    Ok(Cow::Owned(still))
}

/// The boxes of a `meta` box (from `start` to `end`) and of its `iinf`, `iref`, `iprp` and
/// `ipco` boxes: each inside its container, each count within its box (see
/// [`bounded_container`]).
fn check_meta_boxes(b: &[u8], start: usize, end: usize, depth: u8) -> Result<(), DecodeError> {
    let mut i = start;
    while let Some(found) = box_at(b, i, end) {
        let (kind, s, e) = found.map_err(overrun)?;
        // A valid file nests three deep (`iprp/ipco/colr`); mp4parse reads no deeper.
        let descend = depth < 3;
        match &kind {
            b"iinf" => {
                let wide = b.get(s).is_some_and(|&v| v != 0);
                let first = s + if wide { 8 } else { 6 };
                // Each entry is an `infe` box: 12 bytes at least.
                entries_fit(kind, b, s + 4, wide, first, e, 12)?;
                if descend {
                    check_meta_boxes(b, first, e, depth + 1)?;
                }
            }
            b"iref" if descend => check_meta_boxes(b, s + 4, e, depth + 1)?,
            b"iprp" | b"ipco" if descend => check_meta_boxes(b, s, e, depth + 1)?,
            // Item ID (2 or 4 bytes) and association count.
            b"ipma" => entries_fit(kind, b, s + 4, true, s + 8, e, 3)?,
            // Version 2: 32-bit item count; item ID, data reference and extent count.
            b"iloc" if b.get(s) == Some(&2) => entries_fit(kind, b, s + 6, true, s + 10, e, 8)?,
            _ => {}
        }
        i = e;
    }
    Ok(())
}

/// A box found in a file: its type, payload start and end.
type Found = ([u8; 4], usize, usize);

/// The box at `b[i..end]`; `Err(type)` when it claims more than `end` leaves it (or less
/// than its own header); `None` with under 8 bytes left.
fn box_at(b: &[u8], i: usize, end: usize) -> Option<Result<Found, [u8; 4]>> {
    if end.saturating_sub(i) < 8 {
        return None;
    }
    let size = be32(b, i)?;
    let kind: [u8; 4] = b.get(i + 4..i + 8)?.try_into().ok()?;
    let (header, size) = match size {
        0 => (8, end - i),
        1 => match (be32(b, i + 8), be32(b, i + 12)) {
            (Some(hi), Some(lo)) => (
                16,
                usize::try_from(u64::from(hi) << 32 | u64::from(lo)).unwrap_or(usize::MAX),
            ),
            _ => return Some(Err(kind)),
        },
        n => (8, n as usize),
    };
    match i.checked_add(size) {
        Some(e) if size >= header && e <= end => Some(Ok((kind, i + header, e))),
        _ => Some(Err(kind)),
    }
}

/// Refuses a table whose entry count (the 32- or 16-bit number at `at`) is more than its
/// entries' bytes (`first..end`, at least `min_entry` each) can hold.
fn entries_fit(
    kind: [u8; 4],
    b: &[u8],
    at: usize,
    wide: bool,
    first: usize,
    end: usize,
    min_entry: usize,
) -> Result<(), DecodeError> {
    let count = if wide {
        be32(b, at).map(|v| v as usize)
    } else {
        be16(b, at).map(usize::from)
    };
    match count {
        Some(n) if n.saturating_mul(min_entry) > end.saturating_sub(first) => {
            Err(corrupt(format!(
                "container: `{}` counts {n} entries in {} bytes",
                String::from_utf8_lossy(&kind),
                end.saturating_sub(first)
            )))
        }
        _ => Ok(()),
    }
}

fn overrun(kind: [u8; 4]) -> DecodeError {
    corrupt(format!(
        "container: the `{}` box is larger than what holds it",
        String::from_utf8_lossy(&kind)
    ))
}

/// Runs dav1d on one item's AV1 payload, single-threaded (the pool supplies parallelism).
fn decode_av1(data: &[u8], max_pixels: u64) -> Result<dav1d::Picture, DecodeError> {
    let av1 = |e: dav1d::Error| corrupt(format!("AV1: {e}"));
    let mut settings = dav1d::Settings::new();
    settings.set_n_threads(1);
    settings.set_max_frame_delay(1);
    settings.set_frame_size_limit(u32::try_from(max_pixels).unwrap_or(u32::MAX).max(1));
    let mut dec = dav1d::Decoder::with_settings(&settings).map_err(av1)?;
    match dec.send_data(data.to_vec(), None, None, None) {
        Ok(()) | Err(dav1d::Error::Again) => {}
        Err(e) => return Err(av1(e)),
    }
    // A still image is one temporal unit: a few rounds of "take a picture, feed the rest"
    // settle it; a stream that does not is corrupt.
    for _ in 0..8 {
        match dec.get_picture() {
            Ok(p) => return Ok(p),
            Err(dav1d::Error::Again) => match dec.send_pending_data() {
                Ok(()) | Err(dav1d::Error::Again) => {}
                Err(e) => return Err(av1(e)),
            },
            Err(e) => return Err(av1(e)),
        }
    }
    Err(corrupt("AV1: no picture in the payload"))
}

/// The `nclx` colour box fields that YUV → RGB needs.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Nclx {
    matrix: u16,
    full_range: bool,
}

impl Nclx {
    /// What libavif assumes without a colour box: BT.601, limited range.
    const DEFAULT: Nclx = Nclx {
        matrix: 6,
        full_range: false,
    };
}

/// Properties read from `meta/iprp/ipco` by our own bounded walk (mp4parse keeps them
/// behind raw pointers). AVIF files hold one `colr nclx` and at most one `imir`.
#[derive(Debug, Default)]
struct Props {
    nclx: Option<Nclx>,
    imir_axis: Option<u8>,
    irot: u8,
}

fn be16(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

/// Iterates the boxes in `b[start..end]` as (type, payload start, end). Shared with
/// `decode`'s header probe.
pub(crate) fn boxes(
    b: &[u8],
    start: usize,
    end: usize,
) -> impl Iterator<Item = ([u8; 4], usize, usize)> + '_ {
    let mut i = start;
    std::iter::from_fn(move || {
        if i >= end {
            return None;
        }
        let size = be32(b, i)? as usize;
        let kind: [u8; 4] = b.get(i + 4..i + 8)?.try_into().ok()?;
        let (header, size) = match size {
            0 => (8, end - i),
            1 => (
                16,
                usize::try_from(u64::from(be32(b, i + 8)?) << 32 | u64::from(be32(b, i + 12)?))
                    .ok()?,
            ),
            n => (8, n),
        };
        if size < header || i.checked_add(size)? > end {
            return None;
        }
        let item = (kind, i + header, i + size);
        i += size;
        Some(item)
    })
}

fn item_properties(b: &[u8]) -> Props {
    let mut props = Props::default();
    let children = |kind: &'static [u8; 4], s: usize, e: usize| {
        boxes(b, s, e).filter(move |(k, _, _)| k == kind)
    };
    for (_, s, e) in children(b"meta", 0, b.len()) {
        // `meta` is a full box: 4 bytes of version and flags first.
        for (_, s, e) in children(b"iprp", s + 4, e) {
            for (_, s, e) in children(b"ipco", s, e) {
                for (kind, s, e) in boxes(b, s, e) {
                    match &kind {
                        b"colr" if b.get(s..s + 4) == Some(b"nclx") && props.nclx.is_none() => {
                            if let (Some(matrix), Some(flags)) = (be16(b, s + 8), b.get(s + 10)) {
                                props.nclx = Some(Nclx {
                                    matrix,
                                    full_range: flags & 0x80 != 0,
                                });
                            }
                        }
                        b"imir" if e > s => props.imir_axis = b.get(s).map(|v| v & 1),
                        b"irot" if e > s => props.irot = b.get(s).map_or(0, |v| v & 3),
                        _ => {}
                    }
                }
            }
        }
    }
    props
}

/// Reads `n` bits (MSB first) from an AV1 bitstream.
struct Bits<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn f(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.b.get(self.pos / 8)?;
            v = (v << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Some(v)
    }

    fn flag(&mut self) -> Option<bool> {
        self.f(1).map(|v| v == 1)
    }

    fn uvlc(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while !self.flag()? {
            zeros += 1;
            if zeros >= 32 {
                return Some(u32::MAX);
            }
        }
        Some(self.f(zeros)? + ((1u32 << zeros) - 1))
    }
}

fn leb128(b: &[u8], pos: &mut usize) -> Option<usize> {
    let mut v = 0usize;
    for i in 0..8 {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Matrix and range from the AV1 sequence header's `color_config` (AV1 spec 5.5), for
/// files without a `colr nclx` box (ravif writes none, for one).
fn sequence_header_colour(av1: &[u8]) -> Option<Nclx> {
    let mut pos = 0;
    while pos < av1.len() {
        let header = *av1.get(pos)?;
        let kind = (header >> 3) & 0xf;
        pos += 1 + usize::from(header & 0x04 != 0);
        let size = if header & 0x02 != 0 {
            leb128(av1, &mut pos)?
        } else {
            av1.len().checked_sub(pos)?
        };
        let body = av1.get(pos..pos.checked_add(size)?)?;
        if kind == 1 {
            return parse_sequence_header(body);
        }
        pos += size;
    }
    None
}

fn parse_sequence_header(body: &[u8]) -> Option<Nclx> {
    let mut b = Bits { b: body, pos: 0 };
    let profile = b.f(3)?;
    let _still = b.f(1)?;
    let reduced = b.flag()?;
    if reduced {
        b.f(5)?;
    } else {
        let mut buffer_delay_bits = 0;
        let mut decoder_model = false;
        if b.flag()? {
            // timing_info
            b.f(32)?;
            b.f(32)?;
            if b.flag()? {
                b.uvlc()?;
            }
            decoder_model = b.flag()?;
            if decoder_model {
                buffer_delay_bits = b.f(5)? + 1;
                b.f(32)?;
                b.f(10)?;
            }
        }
        let initial_display_delay = b.flag()?;
        for _ in 0..=b.f(5)? {
            b.f(12)?;
            if b.f(5)? > 7 {
                b.f(1)?;
            }
            if decoder_model && b.flag()? {
                b.f(buffer_delay_bits)?;
                b.f(buffer_delay_bits)?;
                b.f(1)?;
            }
            if initial_display_delay && b.flag()? {
                b.f(4)?;
            }
        }
    }
    let wbits = b.f(4)? + 1;
    let hbits = b.f(4)? + 1;
    b.f(wbits)?;
    b.f(hbits)?;
    if !reduced && b.flag()? {
        b.f(7)?;
    }
    b.f(3)?; // 128x128 superblocks, filter intra, intra edge filter
    if !reduced {
        b.f(4)?; // interintra, masked compound, warped motion, dual filter
        let order_hint = b.flag()?;
        if order_hint {
            b.f(2)?;
        }
        let force_screen_content = if b.flag()? { 2 } else { b.f(1)? };
        if force_screen_content > 0 && !b.flag()? {
            b.f(1)?;
        }
        if order_hint {
            b.f(3)?;
        }
    }
    b.f(3)?; // superres, cdef, restoration
    // color_config
    let high_bitdepth = b.flag()?;
    if profile == 2 && high_bitdepth {
        b.f(1)?;
    }
    let mono = profile != 1 && b.flag()?;
    let (primaries, transfer, matrix) = if b.flag()? {
        (b.f(8)?, b.f(8)?, b.f(8)?)
    } else {
        (2, 2, 2)
    };
    let full_range = if !mono && primaries == 1 && transfer == 13 && matrix == 0 {
        true
    } else {
        b.flag()?
    };
    Some(Nclx {
        matrix: u16::try_from(matrix).ok()?,
        full_range,
    })
}

/// Whether the image is shown turned by a quarter (its `irot` is 90° or 270°): the probe
/// swaps width and height then, so that it reports what [`decode`] returns.
pub fn turns_quarter(bytes: &[u8]) -> bool {
    item_properties(bytes).irot % 2 == 1
}

/// Luma coefficients (Kr, Kb) of an `nclx` matrix; `None` for identity (GBR).
fn luma_coefficients(matrix: u16) -> Option<(f32, f32)> {
    Some(match matrix {
        0 => return None,
        1 => (0.2126, 0.0722),
        4 => (0.30, 0.11),
        7 => (0.212, 0.087),
        9 | 10 => (0.2627, 0.0593),
        // 5, 6, 2 (unspecified) and everything else: BT.601.
        _ => (0.299, 0.114),
    })
}

/// One plane of a dav1d picture: bytes, stride in bytes, bytes per sample.
struct Plane {
    data: dav1d::Plane,
    stride: usize,
    wide: bool,
}

impl Plane {
    fn of(
        p: &dav1d::Picture,
        c: dav1d::PlanarImageComponent,
        rows: usize,
        cols: usize,
    ) -> Result<Self, DecodeError> {
        let wide = p.bit_depth() > 8;
        let stride = p.stride(c) as usize;
        let data = p.plane(c);
        let need = stride * rows.saturating_sub(1) + cols * if wide { 2 } else { 1 };
        if rows > 0 && (data.len() < need) {
            return Err(corrupt("short plane"));
        }
        Ok(Plane { data, stride, wide })
    }

    #[inline]
    fn at(&self, x: usize, y: usize) -> u32 {
        if self.wide {
            let i = y * self.stride + 2 * x;
            u32::from(u16::from_ne_bytes([self.data[i], self.data[i + 1]]))
        } else {
            u32::from(self.data[y * self.stride + x])
        }
    }
}

/// YUV (and an optional alpha plane) to 8-bit RGB(A).
fn to_rgb(
    yuv: &dav1d::Picture,
    alpha: Option<&dav1d::Picture>,
    nclx: Nclx,
    premultiplied: bool,
) -> Result<DynamicImage, DecodeError> {
    use dav1d::{PixelLayout, PlanarImageComponent as C};
    let (w, h) = (yuv.width() as usize, yuv.height() as usize);
    let (sx, sy) = match yuv.pixel_layout() {
        PixelLayout::I420 => (1, 1),
        PixelLayout::I422 => (1, 0),
        PixelLayout::I444 | PixelLayout::I400 => (0, 0),
    };
    let mono = yuv.pixel_layout() == PixelLayout::I400;
    let depth = yuv.bit_depth() as u32;
    let (cw, ch) = ((w + sx) >> sx, (h + sy) >> sy);
    let y_plane = Plane::of(yuv, C::Y, h, w)?;
    let chroma = if mono {
        None
    } else {
        Some((Plane::of(yuv, C::U, ch, cw)?, Plane::of(yuv, C::V, ch, cw)?))
    };
    let a_plane = match alpha {
        Some(a) => Some((Plane::of(a, C::Y, h, w)?, a.bit_depth() as u32)),
        None => None,
    };

    // Normalised samples: y in 0..=1, u and v in -0.5..=0.5.
    let max = ((1u32 << depth) - 1) as f32;
    let scale = (1u32 << (depth - 8)) as f32;
    let (y_off, y_div, c_div) = if nclx.full_range {
        (0.0, max, max)
    } else {
        (16.0 * scale, 219.0 * scale, 224.0 * scale)
    };
    let c_mid = (1u32 << (depth - 1)) as f32;
    let coeffs = luma_coefficients(nclx.matrix);
    let channels = if a_plane.is_some() { 4 } else { 3 };
    let mut out = vec![0u8; w * h * channels];
    let to8 = |v: f32| (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
    for (row, line) in out.chunks_exact_mut(w * channels).enumerate() {
        for (x, px) in line.chunks_exact_mut(channels).enumerate() {
            let yv = (y_plane.at(x, row) as f32 - y_off) / y_div;
            let (u, v) = match &chroma {
                Some((u, v)) => {
                    let (cx, cy) = (x >> sx, row >> sy);
                    (
                        (u.at(cx, cy) as f32 - c_mid) / c_div,
                        (v.at(cx, cy) as f32 - c_mid) / c_div,
                    )
                }
                None => (0.0, 0.0),
            };
            let (r, g, b) = match coeffs {
                Some((kr, kb)) => {
                    let r = yv + 2.0 * (1.0 - kr) * v;
                    let b = yv + 2.0 * (1.0 - kb) * u;
                    let g = (yv - kr * r - kb * b) / (1.0 - kr - kb);
                    (r, g, b)
                }
                // Identity: Y is G, U is B, V is R (always 4:4:4).
                None => (v + 0.5, yv, u + 0.5),
            };
            px[0] = to8(r);
            px[1] = to8(g);
            px[2] = to8(b);
            if let Some((a, a_depth)) = &a_plane {
                let a_max = ((1u32 << a_depth) - 1) as f32;
                let av = a.at(x, row) as f32 / a_max;
                px[3] = to8(av);
                if premultiplied && av > 0.0 {
                    px[0] = to8(r / av);
                    px[1] = to8(g / av);
                    px[2] = to8(b / av);
                }
            }
        }
    }
    let (w, h) = (
        u32::try_from(w).map_err(|_| corrupt("width out of range"))?,
        u32::try_from(h).map_err(|_| corrupt("height out of range"))?,
    );
    let image = if channels == 4 {
        RgbaImage::from_raw(w, h, out).map(DynamicImage::ImageRgba8)
    } else {
        RgbImage::from_raw(w, h, out).map(DynamicImage::ImageRgb8)
    };
    image.ok_or_else(|| corrupt("short pixel buffer"))
}

/// Encodes 8-bit RGB or RGBA pixels (`width × height`, tightly packed) as AVIF.
pub fn encode(
    data: &[u8],
    width: u32,
    height: u32,
    alpha: bool,
    quality: u8,
    speed: u8,
) -> Result<Vec<u8>, EncodeError> {
    use rgb::FromSlice;
    let codec = |reason: String| EncodeError::Codec { format: F, reason };
    let (w, h) = (width as usize, height as usize);
    let quality = f32::from(quality.clamp(1, 100));
    let encoder = ravif::Encoder::new()
        .with_quality(quality)
        // Edges of transparent areas show less than the picture: as libavif's default.
        .with_alpha_quality(quality)
        .with_speed(speed.min(10))
        .with_alpha_color_mode(ravif::AlphaColorMode::UnassociatedClean)
        // 8-bit in, 8-bit out: rav1e's 10-bit path (ravif's default) is slower.
        .with_bit_depth(ravif::BitDepth::Eight)
        .with_num_threads(Some(1));
    let encoded = if alpha {
        let px = data.as_rgba();
        if px.len() != w * h {
            return Err(EncodeError::InvalidPicture("RGBA buffer size".into()));
        }
        encoder.encode_rgba(ravif::Img::new(px, w, h))
    } else {
        let px = data.as_rgb();
        if px.len() != w * h {
            return Err(EncodeError::InvalidPicture("RGB buffer size".into()));
        }
        encoder.encode_rgb(ravif::Img::new(px, w, h))
    }
    .map_err(|e| codec(e.to_string()))?;
    Ok(encoded.avif_file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::decode::tests::read;
    use std::time::Instant;

    fn psnr(a: &DynamicImage, b: &DynamicImage) -> f64 {
        let (a, b) = (a.to_rgba8(), b.to_rgba8());
        assert_eq!(a.dimensions(), b.dimensions());
        let se: f64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
            .sum();
        let mse = se / a.as_raw().len() as f64;
        10.0 * (255.0f64.powi(2) / mse.max(1e-9)).log10()
    }

    fn webp(name: &str) -> DynamicImage {
        image::load_from_memory_with_format(&read(name), image::ImageFormat::WebP).unwrap()
    }

    #[test]
    fn decodes_the_reference_avif_like_its_webp_twin() {
        let bytes = read("path-1280x800.avif");
        let t = Instant::now();
        let d = decode(&bytes, 50_000_000).unwrap();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!((d.image.width(), d.image.height()), (1280, 800));
        assert!(matches!(d.image, DynamicImage::ImageRgb8(_)));
        // Two lossy encodings of one photo agree to 32.6 dB (measured; a wrong matrix or
        // range drops it to about 26 dB).
        let q = psnr(&d.image, &webp("path-1280x800.webp"));
        eprintln!("path-1280x800.avif: decoded in {ms:.1} ms, PSNR vs WebP {q:.2} dB");
        assert!(q > 31.0, "PSNR {q:.2} dB");
    }

    #[test]
    fn photo_round_trip_at_q63() {
        let src = webp("path-1280x800.webp").resize_exact(
            720,
            450,
            image::imageops::FilterType::Triangle,
        );
        let src = DynamicImage::ImageRgb8(src.to_rgb8());
        let t = Instant::now();
        let bytes = encode(src.as_bytes(), 720, 450, false, 63, 8).unwrap();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!(&bytes[4..12], b"ftypavif");
        let back = decode(&bytes, 50_000_000).unwrap().image;
        assert!(matches!(back, DynamicImage::ImageRgb8(_)));
        let q = psnr(&src, &back);
        eprintln!(
            "720x450 q63 speed 8: {} bytes in {ms:.0} ms, PSNR {q:.2} dB",
            bytes.len()
        );
        // Measured: 27.8 KB (0.69 bit a pixel) and 34.8 dB.
        assert!(bytes.len() < 40_000, "{} bytes", bytes.len());
        assert!(q > 33.0, "PSNR {q:.2} dB");
    }

    #[test]
    fn alpha_survives_a_round_trip() {
        // A gradient with a transparent left half and a half-transparent band.
        let img = RgbaImage::from_fn(64, 48, |x, y| {
            let a = match x {
                0..24 => 0,
                24..40 => 128,
                _ => 255,
            };
            image::Rgba([(x * 4) as u8, (y * 5) as u8, 200, a])
        });
        let bytes = encode(img.as_raw(), 64, 48, true, 80, 8).unwrap();
        let back = decode(&bytes, 50_000_000).unwrap().image;
        let DynamicImage::ImageRgba8(back) = back else {
            panic!("no alpha after the round trip");
        };
        for (x, want) in [(4, 0u8), (30, 128), (60, 255)] {
            let got = back.get_pixel(x, 20).0[3];
            assert!(
                got.abs_diff(want) <= 4,
                "alpha at x={x}: {got}, want {want}"
            );
        }
        let opaque = back.get_pixel(60, 20).0;
        assert!(opaque[2].abs_diff(200) <= 8, "{opaque:?}");
    }

    #[test]
    fn truncated_and_damaged_avif_are_errors_not_panics() {
        let good = read("path-1280x800.avif");
        for cut in [
            0,
            12,
            40,
            200,
            good.len() / 3,
            good.len() / 2,
            good.len() - 1,
        ] {
            assert!(decode(&good[..cut], 50_000_000).is_err(), "cut at {cut}");
        }
        let mut damaged = good.clone();
        for i in (good.len() / 2..good.len()).step_by(31) {
            damaged[i] ^= 0x5a;
        }
        // dav1d may conceal damage in the payload; the point is no panic.
        let _ = decode(&damaged, 50_000_000);
    }

    /// Where the box of type `kind` starts (its size field) in `b`.
    fn box_start(b: &[u8], kind: &[u8; 4]) -> usize {
        b.windows(4).position(|w| w == kind).unwrap() - 4
    }

    #[test]
    fn boxes_claiming_more_than_the_file_are_refused_before_mp4parse() {
        // Regression: one byte changed by the fuzz target `decoders_survive_mutated_files`
        // made the `iloc` box claim 0xF8000022 bytes (3.9 GiB); mp4parse reserved that much
        // address space before reading the 34 bytes that were there. The same held for an
        // `mdat` box's size and an `ipma` box's entry count.
        let good = read("path-1280x800.avif");
        let refused = |b: &[u8], what: &str| match decode(b, 50_000_000) {
            Err(DecodeError::Corrupt { reason, .. }) => {
                assert!(reason.contains(what), "{reason}");
            }
            other => panic!("{what}: {:?}", other.map(|d| d.image.width())),
        };
        let mut b = good.clone();
        b[box_start(&good, b"iloc")] = 0xF8;
        refused(&b, "`iloc` box is larger");
        let mut b = good.clone();
        let mdat = box_start(&good, b"mdat");
        b[mdat..mdat + 4].copy_from_slice(&0xFFFF_FF00u32.to_be_bytes());
        refused(&b, "`mdat` box is larger");
        let mut b = good.clone();
        let ipma = box_start(&good, b"ipma");
        b[ipma + 12..ipma + 16].copy_from_slice(&0x1000_0000u32.to_be_bytes());
        refused(&b, "`ipma` counts 268435456 entries");
        // The file itself still decodes.
        assert_eq!(decode(&good, 50_000_000).unwrap().image.width(), 1280);
    }

    #[test]
    fn an_image_sequence_decodes_as_its_primary_item_without_reading_its_track() {
        // With an `avis` brand mp4parse reads the `moov` box, and reserves its sample
        // tables by their counts; the primary item is all that is decoded, so the track is
        // not read at all (here its `mvhd` has a version mp4parse refuses).
        let mut b = read("path-1280x800.avif");
        let brand = b.windows(4).position(|w| w == b"miaf").unwrap();
        b[brand..brand + 4].copy_from_slice(b"avis");
        b.extend_from_slice(&20u32.to_be_bytes());
        b.extend_from_slice(b"moov");
        b.extend_from_slice(&12u32.to_be_bytes());
        b.extend_from_slice(b"mvhd\x02\0\0\0");
        let d = decode(&b, 50_000_000).unwrap();
        assert_eq!((d.image.width(), d.image.height()), (1280, 800));
    }

    #[test]
    fn irot_and_imir_are_read_from_the_property_boxes() {
        let mut b = Vec::new();
        let boxed = |kind: &[u8], body: &[u8]| {
            let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
            v.extend_from_slice(kind);
            v.extend_from_slice(body);
            v
        };
        let mut ipco = boxed(b"irot", &[1]);
        ipco.extend(boxed(b"imir", &[1]));
        ipco.extend(boxed(b"colr", b"nclx\0\x01\0\x0d\0\x01\x80"));
        let meta = boxed(
            b"meta",
            &[[0u8; 4].as_slice(), &boxed(b"iprp", &boxed(b"ipco", &ipco))].concat(),
        );
        b.extend(meta);
        let p = item_properties(&b);
        assert_eq!((p.irot, p.imir_axis), (1, Some(1)));
        assert_eq!(
            p.nclx,
            Some(Nclx {
                matrix: 1,
                full_range: true
            })
        );
        assert!(turns_quarter(&b));
    }

    #[test]
    fn colour_config_comes_from_the_sequence_header_without_a_colr_box() {
        // The reference file has no `colr` box; its AV1 payload says BT.601, full range
        // (as ravif writes).
        let bytes = read("path-1280x800.avif");
        let ctx = mp4parse::read_avif(
            &mut std::io::Cursor::new(&bytes),
            mp4parse::ParseStrictness::Normal,
        )
        .unwrap();
        assert_eq!(item_properties(&bytes).nclx, None);
        let nclx = sequence_header_colour(ctx.primary_item_coded_data().unwrap()).unwrap();
        assert!(nclx.full_range, "{nclx:?}");
    }
}
