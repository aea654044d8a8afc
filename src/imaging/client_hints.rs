//! Client hints (`[images] enable_client_hints`, imgproxy's `IMGPROXY_ENABLE_CLIENT_HINTS`):
//! `Sec-CH-DPR` (or the legacy `DPR`) and `Sec-CH-Width` (or `Width`) set the `dpr` and
//! `width` options of a URL that sets neither. Pure: header values in, options out.
//!
//! What must stay true:
//! - the URL wins: a hint fills only an option the URL left at its default (`dpr` 1,
//!   `width` 0), as imgproxy applies hints before the URL's options;
//! - `Width` is in device pixels, so it is divided by the dpr in force (the `dpr` option
//!   multiplies it back), as imgproxy does;
//! - a value that is not a number, or out of range (dpr in (0, 8], width in 1..=16383), is
//!   ignored rather than refused: a header is the browser's, not the page author's, say;
//! - every response of an endpoint that reads hints varies by them ([`VARY`]), whether or
//!   not this request sent one, so a cache never gives one device's size to another.

use super::options::Options;

/// The hints a response may depend on, for `Vary`.
pub const VARY: &str = "Sec-CH-DPR, DPR, Sec-CH-Width, Width";

/// The hints asked of the browser, for `Accept-CH`. Browsers act on it when the page
/// itself sends it; on an image response it documents what the endpoint reads.
pub const ACCEPT_CH: &str = "Sec-CH-DPR, Sec-CH-Width, DPR, Width";

/// imgproxy's `maxClientHintDPR`.
pub const MAX_DPR: f64 = 8.0;

/// The largest width hint taken (wider is ignored): WebP's and the geometry's side limit.
pub const MAX_WIDTH: u32 = 16383;

/// The hints of one request, already checked.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Hints {
    pub dpr: Option<f64>,
    /// Device pixels.
    pub width: Option<u32>,
}

impl Hints {
    /// Reads the hints through `header` (a case-insensitive lookup by name); the
    /// `Sec-CH-` names before the legacy ones.
    pub fn read<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Hints {
        let first = |names: [&str; 2]| names.into_iter().find_map(&header).map(str::trim);
        let dpr = first(["sec-ch-dpr", "dpr"])
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|d| *d > 0.0 && *d <= MAX_DPR);
        let width = first(["sec-ch-width", "width"])
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|w| (1..=MAX_WIDTH).contains(w));
        Hints { dpr, width }
    }

    pub fn is_empty(&self) -> bool {
        self.dpr.is_none() && self.width.is_none()
    }

    /// Fills `opts.dpr` and `opts.width` from the hints where the URL left them unset.
    pub fn apply(&self, opts: &mut Options) {
        if let Some(dpr) = self.dpr
            && opts.dpr == 1.0
        {
            opts.dpr = dpr;
        }
        if let Some(width) = self.width
            && opts.width == 0
        {
            // imgproxy's `imath.Shrink(width, dpr)`: round(width / dpr), at least 1.
            let css = (f64::from(width) / opts.dpr).round().max(1.0);
            opts.width = css.min(f64::from(MAX_WIDTH)) as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints(pairs: &[(&str, &str)]) -> Hints {
        Hints::read(|name| {
            pairs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        })
    }

    #[test]
    fn sec_ch_names_win_and_bad_values_are_ignored() {
        let h = hints(&[("Sec-CH-DPR", "2"), ("DPR", "3"), ("Width", "640")]);
        assert_eq!(
            h,
            Hints {
                dpr: Some(2.0),
                width: Some(640)
            }
        );
        for bad in ["0", "-1", "8.5", "NaN", "inf", "two", ""] {
            assert_eq!(hints(&[("DPR", bad)]).dpr, None, "{bad}");
        }
        for bad in ["0", "-5", "16384", "1e3", "99999999999"] {
            assert_eq!(hints(&[("Sec-CH-Width", bad)]).width, None, "{bad}");
        }
        assert!(hints(&[]).is_empty());
    }

    #[test]
    fn hints_fill_only_what_the_url_left_unset() {
        // Width is device pixels: 800 at dpr 2 is a 400 px wide layout, times dpr 2.
        let mut o = Options::default();
        hints(&[("Sec-CH-DPR", "2"), ("Sec-CH-Width", "800")]).apply(&mut o);
        assert_eq!((o.dpr, o.width), (2.0, 400));
        let mut o = Options {
            width: 300,
            dpr: 3.0,
            ..Options::default()
        };
        hints(&[("Sec-CH-DPR", "2"), ("Sec-CH-Width", "800")]).apply(&mut o);
        assert_eq!((o.dpr, o.width), (3.0, 300));
        // A URL's dpr divides the width hint.
        let mut o = Options {
            dpr: 4.0,
            ..Options::default()
        };
        hints(&[("Width", "1")]).apply(&mut o);
        assert_eq!(o.width, 1, "never rounds to 0");
    }
}
