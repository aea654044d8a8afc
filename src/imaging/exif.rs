//! EXIF kept through processing, as imgproxy keeps it: all of it when `strip_metadata` is
//! off (with the orientation reset once the pixels are rotated), or only the copyright
//! notice when stripping with `keep_copyright`. Pure: container bytes in, a TIFF-structured
//! EXIF blob (without the `Exif\0\0` prefix) out; nothing here decodes pixels.

use crate::imaging::options::ImageFormat;

/// The largest EXIF blob carried over: what fits one JPEG APP1 segment after `Exif\0\0`.
/// PNG and WebP have no such cap, so a hostile source cannot make every variant carry
/// megabytes.
pub const MAX_EXIF: usize = 65_533 - 6;

const TAG_ORIENTATION: u16 = 0x0112;
const TAG_COPYRIGHT: u16 = 0x8298;
const TYPE_ASCII: u16 = 2;
const TYPE_SHORT: u16 = 3;

/// The EXIF blob of a JPEG, PNG or WebP source, if it has one of at most [`MAX_EXIF`]
/// bytes that starts like TIFF.
pub fn extract(format: ImageFormat, bytes: &[u8]) -> Option<&[u8]> {
    let blob = match format {
        ImageFormat::Jpeg => from_jpeg(bytes),
        ImageFormat::Png => from_png(bytes),
        ImageFormat::Webp => from_webp(bytes),
        _ => None,
    }?;
    let tiff = blob.strip_prefix(b"Exif\0\0").unwrap_or(blob);
    (tiff.len() <= MAX_EXIF && Tiff::new(tiff).is_some()).then_some(tiff)
}

fn from_jpeg(b: &[u8]) -> Option<&[u8]> {
    let mut i = 2;
    while i + 4 <= b.len() {
        if b[i] != 0xFF {
            return None;
        }
        let marker = b[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        if matches!(marker, 0xD9 | 0xDA) {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
        let seg = b.get(i + 4..(i + 2).checked_add(len)?)?;
        if marker == 0xE1 && seg.starts_with(b"Exif\0\0") {
            return Some(seg);
        }
        i += 2 + len;
    }
    None
}

fn from_png(b: &[u8]) -> Option<&[u8]> {
    let mut i = 8;
    while let Some(head) = b.get(i..i + 8) {
        let len = usize::try_from(u32::from_be_bytes(head[..4].try_into().ok()?)).ok()?;
        let data = b.get(i + 8..(i + 8).checked_add(len)?)?;
        match &head[4..8] {
            b"eXIf" => return Some(data),
            b"IEND" => return None,
            _ => {}
        }
        i = i.checked_add(12)?.checked_add(len)?;
    }
    None
}

fn from_webp(b: &[u8]) -> Option<&[u8]> {
    if b.get(0..4) != Some(b"RIFF") || b.get(8..12) != Some(b"WEBP") {
        return None;
    }
    let mut i = 12;
    while let Some(head) = b.get(i..i + 8) {
        let len = usize::try_from(u32::from_le_bytes(head[4..8].try_into().ok()?)).ok()?;
        let data = b.get(i + 8..(i + 8).checked_add(len)?)?;
        if &head[..4] == b"EXIF" {
            return Some(data);
        }
        i = i.checked_add(8)?.checked_add(len)?.checked_add(len & 1)?;
    }
    None
}

/// A TIFF header and its first IFD, read with bounds checks.
struct Tiff<'a> {
    b: &'a [u8],
    little: bool,
    ifd0: usize,
}

impl<'a> Tiff<'a> {
    fn new(b: &'a [u8]) -> Option<Self> {
        let little = match b.get(0..4)? {
            b"II*\0" => true,
            b"MM\0*" => false,
            _ => return None,
        };
        let mut t = Tiff { b, little, ifd0: 0 };
        t.ifd0 = usize::try_from(t.u32(4)?).ok()?;
        t.u16(t.ifd0)?;
        Some(t)
    }

    fn u16(&self, at: usize) -> Option<u16> {
        let v: [u8; 2] = self.b.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if self.little {
            u16::from_le_bytes(v)
        } else {
            u16::from_be_bytes(v)
        })
    }

    fn u32(&self, at: usize) -> Option<u32> {
        let v: [u8; 4] = self.b.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.little {
            u32::from_le_bytes(v)
        } else {
            u32::from_be_bytes(v)
        })
    }

    /// The offset of IFD0's entry for `tag`.
    fn entry(&self, tag: u16) -> Option<usize> {
        let count = usize::from(self.u16(self.ifd0)?);
        (0..count)
            .map(|n| self.ifd0 + 2 + n * 12)
            .find(|&e| self.u16(e) == Some(tag))
    }

    /// An ASCII value of IFD0 (its bytes, terminating NULs included).
    fn ascii(&self, tag: u16) -> Option<&'a [u8]> {
        let e = self.entry(tag)?;
        if self.u16(e + 2)? != TYPE_ASCII {
            return None;
        }
        let n = usize::try_from(self.u32(e + 4)?).ok()?;
        let at = if n <= 4 {
            e + 8
        } else {
            usize::try_from(self.u32(e + 8)?).ok()?
        };
        self.b.get(at..at.checked_add(n)?)
    }
}

/// `tiff` with its IFD0 orientation set to 1 (upright), for pixels already rotated.
/// Unchanged when it has none.
pub fn reset_orientation(tiff: &[u8]) -> Vec<u8> {
    let mut out = tiff.to_vec();
    if let Some(t) = Tiff::new(tiff)
        && let Some(e) = t.entry(TAG_ORIENTATION)
        && t.u16(e + 2) == Some(TYPE_SHORT)
        && let Some(slot) = out.get_mut(e + 8..e + 10)
    {
        slot.copy_from_slice(&if t.little { [1, 0] } else { [0, 1] });
    }
    out
}

/// A new EXIF blob holding only `tiff`'s copyright notice, or `None` when it has none.
pub fn copyright_only(tiff: &[u8]) -> Option<Vec<u8>> {
    let text = Tiff::new(tiff)?.ascii(TAG_COPYRIGHT)?;
    if text.iter().all(|&c| c == 0) {
        return None;
    }
    let n = u32::try_from(text.len()).ok()?;
    // Little-endian header, IFD0 at 8 with one entry, no next IFD, then the value.
    let mut out = Vec::with_capacity(26 + text.len());
    out.extend_from_slice(b"II*\0");
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&TAG_COPYRIGHT.to_le_bytes());
    out.extend_from_slice(&TYPE_ASCII.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    if text.len() <= 4 {
        let mut inline = [0u8; 4];
        inline[..text.len()].copy_from_slice(text);
        out.extend_from_slice(&inline);
        out.extend_from_slice(&0u32.to_le_bytes());
    } else {
        out.extend_from_slice(&26u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(text);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A big-endian TIFF with orientation 6, a copyright and an artist.
    fn sample(copyright: &[u8]) -> Vec<u8> {
        let mut b = b"MM\0*".to_vec();
        b.extend_from_slice(&8u32.to_be_bytes());
        b.extend_from_slice(&3u16.to_be_bytes());
        let data_at = 8 + 2 + 3 * 12 + 4;
        // orientation = 6
        b.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0]);
        // artist "Ann" (inline)
        b.extend_from_slice(&[0x01, 0x3B, 0, 2, 0, 0, 0, 4, b'A', b'n', b'n', 0]);
        // copyright at data_at
        b.extend_from_slice(&[0x82, 0x98, 0, 2]);
        b.extend_from_slice(&u32::try_from(copyright.len()).unwrap().to_be_bytes());
        if copyright.len() <= 4 {
            let mut inline = [0u8; 4];
            inline[..copyright.len()].copy_from_slice(copyright);
            b.extend_from_slice(&inline);
            b.extend_from_slice(&0u32.to_be_bytes());
        } else {
            b.extend_from_slice(&u32::try_from(data_at).unwrap().to_be_bytes());
            b.extend_from_slice(&0u32.to_be_bytes());
            b.extend_from_slice(copyright);
        }
        b
    }

    #[test]
    fn orientation_is_reset_in_place() {
        let t = sample(b"(c) Someone\0");
        let out = reset_orientation(&t);
        assert_eq!(out.len(), t.len());
        let parsed = Tiff::new(&out).unwrap();
        let e = parsed.entry(TAG_ORIENTATION).unwrap();
        assert_eq!(parsed.u16(e + 8), Some(1));
        assert_eq!(parsed.ascii(0x013B), Some(&b"Ann\0"[..]));
    }

    #[test]
    fn copyright_only_keeps_the_notice_and_nothing_else() {
        let t = sample(b"(c) Someone\0");
        let out = copyright_only(&t).unwrap();
        let parsed = Tiff::new(&out).unwrap();
        assert_eq!(parsed.ascii(TAG_COPYRIGHT), Some(&b"(c) Someone\0"[..]));
        assert_eq!(parsed.entry(0x013B), None);
        assert_eq!(parsed.entry(TAG_ORIENTATION), None);
        let short = copyright_only(&sample(b"C\0")).unwrap();
        assert_eq!(
            Tiff::new(&short).unwrap().ascii(TAG_COPYRIGHT),
            Some(&b"C\0"[..])
        );
        assert_eq!(copyright_only(&sample(b"\0\0")), None);
    }

    #[test]
    fn extracted_from_each_container() {
        let t = sample(b"(c) X\0");
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0, 0xFF, 0xE1];
        jpeg.extend_from_slice(&u16::try_from(t.len() + 8).unwrap().to_be_bytes());
        jpeg.extend_from_slice(b"Exif\0\0");
        jpeg.extend_from_slice(&t);
        jpeg.extend_from_slice(&[0xFF, 0xDA, 0, 2]);
        assert_eq!(extract(ImageFormat::Jpeg, &jpeg), Some(&t[..]));

        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend_from_slice(&u32::try_from(t.len()).unwrap().to_be_bytes());
        png.extend_from_slice(b"eXIf");
        png.extend_from_slice(&t);
        png.extend_from_slice(&[0; 4]);
        assert_eq!(extract(ImageFormat::Png, &png), Some(&t[..]));

        let mut webp = b"RIFF\0\0\0\0WEBPVP8X".to_vec();
        webp.extend_from_slice(&10u32.to_le_bytes());
        webp.extend_from_slice(&[0; 10]);
        webp.extend_from_slice(b"EXIF");
        webp.extend_from_slice(&u32::try_from(t.len()).unwrap().to_le_bytes());
        webp.extend_from_slice(&t);
        assert_eq!(extract(ImageFormat::Webp, &webp), Some(&t[..]));
    }

    #[test]
    fn truncated_or_hostile_input_gives_none() {
        let t = sample(b"(c) X\0");
        for cut in 0..t.len() {
            let _ = copyright_only(&t[..cut]);
            let _ = reset_orientation(&t[..cut]);
        }
        let mut bad = t.clone();
        bad[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Tiff::new(&bad).is_none());
        assert_eq!(
            extract(ImageFormat::Jpeg, &[0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF]),
            None
        );
        assert_eq!(
            extract(ImageFormat::Png, b"\x89PNG\r\n\x1a\n\xff\xff\xff\xffeXIf"),
            None
        );
        assert_eq!(extract(ImageFormat::Gif, &t), None);
    }
}
