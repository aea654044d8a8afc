//! `Range` on a cached full object (RFC 9110 §14): one byte range is answered with 206, an
//! unsatisfiable one with 416, and anything else (several ranges, another unit, a malformed
//! header, an `If-Range` that does not match) with the whole object.

/// What to send for a request's `Range` against an object of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Whole,
    /// Bytes `start..=end`.
    Part {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

/// Reads `range` (the request's `Range`), honoured only when `if_range` is absent or names
/// the object's strong `etag` or its exact `last_modified` date.
pub fn answer(
    range: Option<&str>,
    if_range: Option<&str>,
    etag: Option<&str>,
    last_modified: Option<&str>,
    len: u64,
) -> Answer {
    let Some(range) = range else {
        return Answer::Whole;
    };
    if let Some(cond) = if_range.map(str::trim) {
        let strong_match = !cond.starts_with("W/") && etag.is_some_and(|e| e == cond);
        let date_match = last_modified.is_some_and(|d| d == cond);
        if !strong_match && !date_match {
            return Answer::Whole;
        }
    }
    let Some(spec) = range
        .trim()
        .strip_prefix("bytes=")
        .filter(|s| !s.contains(','))
    else {
        return Answer::Whole;
    };
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Answer::Whole;
    };
    let num = |s: &str| -> Option<Option<u64>> {
        let s = s.trim();
        if s.is_empty() {
            Some(None)
        } else if s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().ok().map(Some)
        } else {
            None
        }
    };
    let (Some(first), Some(last)) = (num(first), num(last)) else {
        return Answer::Whole;
    };
    match (first, last) {
        (Some(start), last) => {
            if let Some(l) = last
                && l < start
            {
                return Answer::Whole;
            }
            if start >= len {
                return Answer::Unsatisfiable;
            }
            let end = last.map_or(len - 1, |l| l.min(len - 1));
            Answer::Part { start, end }
        }
        (None, Some(suffix)) => {
            if suffix == 0 || len == 0 {
                return Answer::Unsatisfiable;
            }
            Answer::Part {
                start: len.saturating_sub(suffix),
                end: len - 1,
            }
        }
        (None, None) => Answer::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(range: &str, len: u64) -> Answer {
        answer(Some(range), None, None, None, len)
    }

    #[test]
    fn one_range_is_a_part_and_everything_else_is_whole_or_416() {
        assert_eq!(answer(None, None, None, None, 10), Answer::Whole);
        assert_eq!(a("bytes=0-3", 10), Answer::Part { start: 0, end: 3 });
        assert_eq!(a("bytes=5-", 10), Answer::Part { start: 5, end: 9 });
        assert_eq!(a("bytes=-4", 10), Answer::Part { start: 6, end: 9 });
        assert_eq!(a("bytes=-40", 10), Answer::Part { start: 0, end: 9 });
        assert_eq!(a("bytes=8-100", 10), Answer::Part { start: 8, end: 9 });
        assert_eq!(a("bytes=10-", 10), Answer::Unsatisfiable);
        assert_eq!(a("bytes=-0", 10), Answer::Unsatisfiable);
        for whole in [
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=x-1",
            "bytes=4-2",
            "bytes=-",
            "0-1",
        ] {
            assert_eq!(a(whole, 10), Answer::Whole, "{whole}");
        }
    }

    #[test]
    fn if_range_must_match_the_strong_etag_or_the_date() {
        let date = "Mon, 01 Jan 2024 00:00:00 GMT";
        let r = |cond| answer(Some("bytes=0-1"), Some(cond), Some("\"e\""), Some(date), 10);
        assert_eq!(r("\"e\""), Answer::Part { start: 0, end: 1 });
        assert_eq!(r(date), Answer::Part { start: 0, end: 1 });
        assert_eq!(r("\"other\""), Answer::Whole);
        assert_eq!(r("W/\"e\""), Answer::Whole);
    }
}
