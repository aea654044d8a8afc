//! The `Cache-Control` extensions of RFC 5861, which the RFC 9111 crate does not read:
//! `stale-while-revalidate=N` (serve a stale entry for up to N seconds while it is
//! refreshed in the background) and `stale-if-error=N` (serve it for up to N seconds when
//! the appliance fails or cannot be reached).
//!
//! What must stay true: a malformed or negative value reads as absent (no staleness
//! allowed), and `no-store`, `no-cache` and `must-revalidate` forbid both, as RFC 5861
//! §3-4 and RFC 9111 §5.2.2 require.

use std::time::Duration;

/// The staleness a response allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stale {
    pub while_revalidate: Option<Duration>,
    pub if_error: Option<Duration>,
}

/// Reads every `Cache-Control` value of a response.
pub fn stale<'a>(values: impl IntoIterator<Item = &'a str>) -> Stale {
    let mut out = Stale::default();
    let mut forbidden = false;
    for directive in values.into_iter().flat_map(|v| v.split(',')) {
        let (name, value) = match directive.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (directive.trim(), None),
        };
        let seconds = || {
            value
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs)
        };
        if name.eq_ignore_ascii_case("stale-while-revalidate") {
            out.while_revalidate = seconds();
        } else if name.eq_ignore_ascii_case("stale-if-error") {
            out.if_error = seconds();
        } else if [
            "no-store",
            "no-cache",
            "must-revalidate",
            "proxy-revalidate",
        ]
        .iter()
        .any(|f| name.eq_ignore_ascii_case(f))
        {
            forbidden = true;
        }
    }
    if forbidden { Stale::default() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Option<Duration> = |s| Some(Duration::from_secs(s));

    #[test]
    fn both_extensions_are_read_in_any_case_and_order() {
        let s = stale([
            "public, max-age=60, stale-while-revalidate=30",
            "Stale-If-Error=86400",
        ]);
        assert_eq!(s.while_revalidate, S(30));
        assert_eq!(s.if_error, S(86400));
        assert_eq!(stale(["stale-if-error=\"5\""]).if_error, S(5));
    }

    #[test]
    fn malformed_values_allow_nothing() {
        for bad in [
            "stale-while-revalidate",
            "stale-while-revalidate=-1",
            "stale-while-revalidate=abc",
            "stale-while-revalidate=1.5",
        ] {
            assert_eq!(stale([bad]), Stale::default(), "{bad}");
        }
        assert_eq!(stale([]), Stale::default());
    }

    #[test]
    fn revalidation_requirements_forbid_serving_stale() {
        for strict in [
            "no-cache",
            "must-revalidate",
            "no-store",
            "proxy-revalidate",
        ] {
            let v = format!("max-age=60, stale-while-revalidate=30, stale-if-error=60, {strict}");
            assert_eq!(stale([v.as_str()]), Stale::default(), "{strict}");
        }
    }
}
