//! Chooses the output format of one request, as imgproxy does: the URL's format (`f:`,
//! `@ext`, `.ext`) when there is one, else AVIF or WebP when the client's `Accept` allows
//! and `auto_*` is on, else the source's own format (or JPEG/PNG when that cannot be
//! written). `enforce_*` overrides even a format named in the URL. Pure: no I/O.
//!
//! What must stay true: whenever negotiation is switched on at all, the answer depends on
//! `Accept`, so the response must carry `Vary: Accept` ([`Choice::vary_accept`]), whether or
//! not this request's format came from it.

use crate::imaging::options::ImageFormat;

/// The negotiation switches from `[images]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Negotiation {
    pub auto_webp: bool,
    pub enforce_webp: bool,
    pub auto_avif: bool,
    pub enforce_avif: bool,
}

impl Negotiation {
    /// Whether any switch is on: then every response varies by `Accept`.
    pub fn enabled(self) -> bool {
        self.auto_webp || self.enforce_webp || self.auto_avif || self.enforce_avif
    }
}

/// The negotiated format and whether the response varies by `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub format: ImageFormat,
    pub vary_accept: bool,
}

/// Which of the negotiable formats a request's `Accept` admits and Pixelport can write:
/// everything of `Accept` that negotiation reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accepted {
    pub avif: bool,
    pub webp: bool,
}

impl Accepted {
    /// Reads `accept` (`None`: no header, which admits neither). `writable` says which
    /// encoders exist.
    pub fn read(accept: Option<&str>, writable: impl Fn(ImageFormat) -> bool) -> Self {
        let accepts = |mime: &str| accept.is_some_and(|a| accepts_type(a, mime));
        Self {
            avif: writable(ImageFormat::Avif) && accepts("image/avif"),
            webp: writable(ImageFormat::Webp) && accepts("image/webp"),
        }
    }
}

/// The output format when it does not depend on the source: the URL's, or one picked from
/// what `Accept` admits by the switches. `None`: the source's own format decides, once it is
/// probed.
pub fn decide_without_source(
    requested: Option<ImageFormat>,
    accepted: Accepted,
    switches: Negotiation,
) -> Option<ImageFormat> {
    let Accepted { avif, webp } = accepted;
    if switches.enforce_avif && avif {
        Some(ImageFormat::Avif)
    } else if switches.enforce_webp && webp {
        Some(ImageFormat::Webp)
    } else if requested.is_some() {
        requested
    } else if switches.auto_avif && avif {
        Some(ImageFormat::Avif)
    } else if switches.auto_webp && webp {
        Some(ImageFormat::Webp)
    } else {
        None
    }
}

/// The format for a source: the decision above, else the source's own format when it can be
/// written, else PNG for sources with alpha and JPEG for the rest.
pub fn for_source(
    decided: Option<ImageFormat>,
    source: ImageFormat,
    source_has_alpha: bool,
    writable: impl Fn(ImageFormat) -> bool,
) -> ImageFormat {
    match decided {
        Some(f) => f,
        None if writable(source) => source,
        None if source_has_alpha => ImageFormat::Png,
        None => ImageFormat::Jpeg,
    }
}

/// Both steps at once, with whether the response varies by `Accept`.
pub fn choose(
    requested: Option<ImageFormat>,
    source: ImageFormat,
    source_has_alpha: bool,
    accept: Option<&str>,
    switches: Negotiation,
    writable: impl Fn(ImageFormat) -> bool,
) -> Choice {
    let decided = decide_without_source(requested, Accepted::read(accept, &writable), switches);
    Choice {
        format: for_source(decided, source, source_has_alpha, &writable),
        vary_accept: switches.enabled(),
    }
}

/// Whether an `Accept` header admits `mime` (`image/webp`) with a non-zero quality. Only an
/// explicit entry counts: `*/*` and `image/*` do not mean the client decodes WebP (browsers
/// that do, say so), which is also imgproxy's reading.
pub fn accepts_type(accept: &str, mime: &str) -> bool {
    accept.split(',').any(|entry| {
        let mut parts = entry.split(';');
        let media = parts.next().unwrap_or_default().trim();
        if !media.eq_ignore_ascii_case(mime) {
            return false;
        }
        // `q=0` explicitly refuses the type.
        !parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .or_else(|| p.strip_prefix("Q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        })
    })
}

/// The MIME type of a format, for `Content-Type`.
pub fn mime_type(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "image/jpeg",
        ImageFormat::Jxl => "image/jxl",
        ImageFormat::Png => "image/png",
        ImageFormat::Webp => "image/webp",
        ImageFormat::Gif => "image/gif",
        ImageFormat::Ico => "image/x-icon",
        ImageFormat::Svg => "image/svg+xml",
        ImageFormat::Heic => "image/heif",
        ImageFormat::Avif => "image/avif",
        ImageFormat::Bmp => "image/bmp",
        ImageFormat::Tiff => "image/tiff",
    }
}

/// The usual file extension of a format, for `Content-Disposition` file names.
pub fn extension(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "jpg",
        other => other.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ImageFormat::*;

    const CHROME: &str = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
    const OLD: &str = "image/png,image/*;q=0.8,*/*;q=0.5";

    fn all(_: ImageFormat) -> bool {
        true
    }
    fn no_avif(f: ImageFormat) -> bool {
        f != Avif
    }

    #[test]
    fn accept_parsing() {
        assert!(accepts_type(CHROME, "image/webp"));
        assert!(accepts_type(CHROME, "image/avif"));
        assert!(!accepts_type(OLD, "image/webp"));
        assert!(!accepts_type("image/webp;q=0", "image/webp"));
        assert!(accepts_type("image/webp; q=0.5", "image/webp"));
        assert!(accepts_type("IMAGE/WEBP", "image/webp"));
        assert!(!accepts_type("*/*", "image/webp"));
    }

    #[test]
    fn table() {
        let off = Negotiation::default();
        let auto = Negotiation {
            auto_webp: true,
            auto_avif: true,
            ..off
        };
        let auto_webp = Negotiation {
            auto_webp: true,
            ..off
        };
        let enforce = Negotiation {
            enforce_webp: true,
            ..off
        };
        // (requested, source, alpha, accept, switches, writable) → (format, vary)
        type W = fn(ImageFormat) -> bool;
        type Row<'a> = (
            Option<ImageFormat>,
            ImageFormat,
            bool,
            Option<&'a str>,
            Negotiation,
            W,
            ImageFormat,
            bool,
        );
        let rows: &[Row] = &[
            (None, Jpeg, false, Some(CHROME), off, all, Jpeg, false),
            (Some(Png), Jpeg, false, Some(CHROME), off, all, Png, false),
            (None, Jpeg, false, Some(CHROME), auto, all, Avif, true),
            (None, Jpeg, false, Some(CHROME), auto, no_avif, Webp, true),
            (None, Jpeg, false, Some(OLD), auto, all, Jpeg, true),
            (None, Jpeg, false, None, auto_webp, all, Jpeg, true),
            // auto never overrides a format the URL asked for; enforce does
            (Some(Png), Jpeg, false, Some(CHROME), auto, all, Png, true),
            (
                Some(Png),
                Jpeg,
                false,
                Some(CHROME),
                enforce,
                all,
                Webp,
                true,
            ),
            (Some(Png), Jpeg, false, Some(OLD), enforce, all, Png, true),
            // sources that cannot be written fall back by alpha
            (None, Heic, false, None, off, no_avif_heic, Jpeg, false),
            (None, Heic, true, None, off, no_avif_heic, Png, false),
        ];
        fn no_avif_heic(f: ImageFormat) -> bool {
            !matches!(f, Avif | Heic)
        }
        for (i, (req, src, alpha, accept, sw, w, want, vary)) in rows.iter().enumerate() {
            let c = choose(*req, *src, *alpha, *accept, *sw, w);
            assert_eq!((c.format, c.vary_accept), (*want, *vary), "row {i}");
        }
    }
}
