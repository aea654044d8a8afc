//! Conditional requests: whether a client's `If-None-Match` already names a variant's
//! ETag (then the answer is a 304 without a body).

/// `if_none_match` (the header's value) names `etag` (quoted), weakly or strongly, or is `*`.
pub fn names_etag(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag))
}

#[cfg(test)]
mod tests {
    use super::names_etag;

    #[test]
    fn strong_weak_star_and_lists_match_others_do_not() {
        let etag = "\"abc\"";
        assert!(names_etag("\"abc\"", etag));
        assert!(names_etag("W/\"abc\"", etag));
        assert!(names_etag("*", etag));
        assert!(names_etag("\"x\", \"abc\"", etag));
        assert!(!names_etag("\"abcd\"", etag));
        assert!(!names_etag("abc", etag));
        assert!(!names_etag("", etag));
    }
}
