//! `[images] allowed_sources`: imgproxy's URL-prefix patterns (`IMGPROXY_ALLOWED_SOURCES`),
//! compiled once and matched against a parsed [`Url`]. What must stay true:
//!
//! * A pattern is parsed with the same URL parser that parses the fetched URL, and the two are
//!   compared component by component: scheme exactly, host as a whole, port (explicit or the
//!   scheme's default) exactly, path as a prefix. Never as strings, so `?`, `#`, `\` or
//!   userinfo in a candidate cannot make one host look like another.
//! * `*` matches any run of characters except `/`, and only within its own component: a `*`
//!   in the host matches host characters (labels and dots), a `*` in the path stays within one
//!   path segment, and a port of `*` means any port.
//! * Matching is linear in the candidate's length whatever the number of `*`s (no
//!   backtracking).

use url::Url;

/// A pattern that cannot be used, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{pattern}`: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

/// Checks one `allowed_sources` pattern: it must be an `http://` or `https://` URL prefix
/// without userinfo, query or fragment, whose port is a number or `*`.
pub fn validate_pattern(p: &str) -> Result<(), String> {
    Pattern::parse(p).map(drop).map_err(|reason| {
        PatternError {
            pattern: p.to_owned(),
            reason,
        }
        .to_string()
    })
}

/// The allow-list, compiled.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    patterns: Vec<Pattern>,
}

impl AllowList {
    /// Compiles `patterns`; the first one that does not parse is the error.
    pub fn new(patterns: &[String]) -> Result<Self, PatternError> {
        let patterns = patterns
            .iter()
            .map(|p| {
                Pattern::parse(p).map_err(|reason| PatternError {
                    pattern: p.clone(),
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `url` (exactly the URL that will be fetched) matches one of the patterns.
    pub fn permits(&self, url: &Url) -> bool {
        self.patterns.iter().any(|p| p.matches(url))
    }
}

/// One compiled pattern.
#[derive(Debug, Clone)]
struct Pattern {
    scheme: String,
    /// Matched against the whole host, as the URL parser serialises it.
    host: Glob,
    /// `None`: any port (`:*`).
    port: Option<u16>,
    /// The path split at `/`; the last segment is matched as a prefix.
    path: Vec<Glob>,
}

impl Pattern {
    fn parse(p: &str) -> Result<Self, String> {
        let (text, any_port) = strip_port_star(p);
        let url = Url::parse(&text).map_err(|e| format!("is not a URL ({e})"))?;
        let scheme = url.scheme();
        if scheme != "http" && scheme != "https" {
            return Err(format!("scheme `{scheme}` is not http or https"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain a user name or password".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("must not contain a query (`?`) or fragment (`#`)".into());
        }
        let Some(host) = url.host_str() else {
            return Err("has no host".into());
        };
        // A `*` inside an internationalised label would be matched against its punycode form,
        // which no real host spells the same way.
        if host
            .split('.')
            .any(|label| label.contains('*') && label.starts_with("xn--"))
        {
            return Err("a `*` must not share a label with non-ASCII characters".into());
        }
        let port = if any_port {
            None
        } else {
            // http and https always have a default port
            Some(
                url.port_or_known_default()
                    .ok_or_else(|| "has no port".to_owned())?,
            )
        };
        Ok(Self {
            scheme: scheme.to_owned(),
            host: Glob::new(trim_root_dot(host)),
            port,
            path: url.path().split('/').map(Glob::new).collect(),
        })
    }

    fn matches(&self, url: &Url) -> bool {
        if url.scheme() != self.scheme {
            return false;
        }
        let Some(host) = url.host_str() else {
            return false;
        };
        if !self.host.matches(trim_root_dot(host), false) {
            return false;
        }
        if self
            .port
            .is_some_and(|port| url.port_or_known_default() != Some(port))
        {
            return false;
        }
        let mut segments = url.path().split('/');
        let Some((last, full)) = self.path.split_last() else {
            return true;
        };
        for glob in full {
            match segments.next() {
                Some(s) if glob.matches(s, false) => {}
                _ => return false,
            }
        }
        segments.next().is_some_and(|s| last.matches(s, true))
    }
}

/// Removes a `:*` port from the pattern's authority, saying whether it was there.
fn strip_port_star(p: &str) -> (String, bool) {
    let Some(start) = p.find("://").map(|i| i + 3) else {
        return (p.to_owned(), false);
    };
    let end = p[start..]
        .find(['/', '\\', '?', '#'])
        .map_or(p.len(), |i| start + i);
    match p[start..end].strip_suffix(":*") {
        Some(host) => (format!("{}{host}{}", &p[..start], &p[end..]), true),
        None => (p.to_owned(), false),
    }
}

/// `example.com.` and `example.com` name the same host.
fn trim_root_dot(host: &str) -> &str {
    host.strip_suffix('.').unwrap_or(host)
}

/// A `*`-glob over text that contains no `/` (a host or one path segment).
#[derive(Debug, Clone)]
struct Glob {
    /// The literal pieces between the `*`s (one more than there are `*`s).
    pieces: Vec<String>,
}

impl Glob {
    fn new(pattern: &str) -> Self {
        Self {
            pieces: pattern.split('*').map(str::to_owned).collect(),
        }
    }

    /// Whether the glob matches all of `text` (`prefix`: the start of `text`).
    ///
    /// The first piece is anchored at the start, the last at the end (unless `prefix`), and
    /// each piece in between is taken at its leftmost occurrence after the previous one.
    /// Since `*` matches anything, the leftmost choice never loses a match, so no choice is
    /// ever revisited: each piece is found with one linear substring search.
    fn matches(&self, text: &str, prefix: bool) -> bool {
        let Some((first, rest)) = self.pieces.split_first() else {
            return text.is_empty();
        };
        let Some(mut text) = text.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            // no `*` at all
            return prefix || text.is_empty();
        };
        if !prefix {
            match text.strip_suffix(last.as_str()) {
                Some(t) => text = t,
                None => return false,
            }
        }
        let pieces = if prefix { rest } else { middle };
        for piece in pieces {
            match text.find(piece.as_str()) {
                Some(i) => text = &text[i + piece.len()..],
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(patterns: &[&str]) -> AllowList {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        AllowList::new(&patterns).unwrap()
    }

    /// A URL that does not parse is never fetched, so it counts as refused.
    fn permits(l: &AllowList, url: &str) -> bool {
        Url::parse(url).is_ok_and(|u| l.permits(&u))
    }

    #[test]
    fn legitimate_matches() {
        let l = list(&[
            "https://images.example.com/",
            "https://*.cdn.example/",
            "http://127.0.0.1:*/",
            "https://example.com/images/",
            "https://example.com/u/*/thumbs/",
        ]);
        for (url, ok) in [
            ("https://images.example.com/a/b.jpg", true),
            ("https://IMAGES.Example.COM/a/b.jpg", true),
            ("https://images.example.com:443/a.jpg", true),
            ("https://images.example.com./a.jpg", true),
            ("https://images.example.com.evil/a.jpg", false),
            ("http://images.example.com/a.jpg", false),
            ("https://images.example.com:8443/a.jpg", false),
            ("https://a.cdn.example/x.png", true),
            ("https://a-b.cdn.example/x.png", true),
            ("https://a.b.cdn.example/x.png", true),
            ("https://cdn.example/x.png", false),
            ("https://a.cdn.example:444/x.png", false),
            ("http://127.0.0.1:8000/x.png", true),
            ("http://127.0.0.1/x.png", true),
            ("http://127.0.0.2:8000/x.png", false),
            ("https://127.0.0.1:8000/x.png", false),
            ("https://example.com/images/a.jpg", true),
            ("https://example.com/images/sub/a.jpg", true),
            ("https://example.com/images/", true),
            ("https://example.com/images", false),
            ("https://example.com/imagesx/a.jpg", false),
            ("https://example.com/imagesx/../images/a.jpg", true),
            ("https://example.com/images/../secret/a.jpg", false),
            ("https://example.com:8443/images/a.jpg", false),
            ("http://example.com/images/a.jpg", false),
            ("https://example.com/u/alice/thumbs/a.jpg", true),
            ("https://example.com/u/alice/bob/thumbs/a.jpg", false),
            ("https://example.com/u/alice/thumbsx/a.jpg", false),
        ] {
            assert_eq!(permits(&l, url), ok, "{url}");
        }
        assert!(!permits(
            &AllowList::default(),
            "https://images.example.com/"
        ));
        assert!(list(&[]).is_empty());
    }

    #[test]
    fn the_issue_examples() {
        let l = list(&["https://*.example.com/"]);
        assert!(permits(&l, "https://img.example.com/a.jpg"));
        let l = list(&["https://example.com/images/"]);
        assert!(permits(&l, "https://example.com/images/a.jpg"));
        assert!(!permits(&l, "https://example.com/imagesx/a.jpg"));
        assert!(!permits(&l, "https://example.com:8443/images/a.jpg"));
    }

    #[test]
    fn string_prefix_bypasses_are_refused() {
        // Bug: the allow-list was matched as a string prefix with `*` spanning anything but
        // `/`, so `?`, `#` and `\` (and userinfo) after the attacker's host made
        // `https://*.example.com/` admit a URL that is fetched from evil.com.
        let l = list(&["https://*.example.com/", "https://images.example.com/"]);
        for url in [
            "https://evil.com?.example.com/x",
            "https://evil.com?x=.example.com/x",
            "https://evil.com#.example.com/",
            "https://evil.com#/.example.com/",
            "https://evil.com\\.example.com/",
            "https://evil.com\\@img.example.com/",
            "https://evil.com/.example.com/x.png",
            "https://a.example.com@evil.com/",
            "https://a.example.com:pw@evil.com/",
            "https://images.example.com@evil.com/",
            "https://images.example.com:443@evil.com/",
            "https://evil.com%23.example.com/",
            "https://evil.com%3F.example.com/",
            "https://evil.com%2F.example.com/",
            "https://evil.com%5C.example.com/",
            "https://img.example.com.evil.com/",
            "https://example.com/",
        ] {
            assert!(!permits(&l, url), "{url}");
        }
        // The host that is judged is the one that is fetched.
        for url in [
            "https://evil.com?.example.com/x",
            "https://evil.com#.example.com/",
            "https://evil.com\\.example.com/",
            "https://a.example.com@evil.com/",
        ] {
            assert_eq!(
                Url::parse(url).unwrap().host_str(),
                Some("evil.com"),
                "{url}"
            );
        }
    }

    #[test]
    fn host_wildcard_stays_in_the_host() {
        // Bug: a host `*` could run on into the path or query of a string URL; now it only ever
        // sees the parsed host.
        let l = list(&["https://img*/"]);
        assert!(permits(&l, "https://img.example.com/a.jpg"));
        assert!(permits(&l, "https://imgs.example/a.jpg"));
        assert!(!permits(&l, "https://images.example/a.jpg"));
        assert!(!permits(&l, "https://evil.com/img/a.jpg"));
        assert!(!permits(&l, "https://evil.com?img"));
        let l = list(&["https://*/"]);
        assert!(permits(&l, "https://anything.example/a.jpg"));
        assert!(!permits(&l, "http://anything.example/a.jpg"));
        assert!(!permits(&l, "https://anything.example:8443/a.jpg"));
    }

    #[test]
    fn many_stars_match_in_linear_time() {
        // Bug: `*` was matched by recursive backtracking, exponential in the number of `*`s
        // on a candidate that almost matches (a request-time denial of service).
        let stars = "a*".repeat(30);
        let path = "a".repeat(20_000);
        let l = list(&[&format!("https://example.com/{stars}b/")]);
        assert!(!permits(&l, &format!("https://example.com/{path}/x.jpg")));
        assert!(permits(&l, &format!("https://example.com/{path}b/x.jpg")));
        let host_stars = "*a".repeat(30);
        let l = list(&[&format!("https://{host_stars}.example.com/")]);
        let host = "a.".repeat(2_000);
        assert!(!permits(&l, &format!("https://{host}example.org/")));
        assert!(permits(&l, &format!("https://{host}a.example.com/")));
    }

    #[test]
    fn glob_semantics() {
        for (glob, text, prefix, ok) in [
            ("", "", false, true),
            ("", "abc", false, false),
            ("", "abc", true, true),
            ("abc", "abc", false, true),
            ("abc", "abcd", false, false),
            ("abc", "abcd", true, true),
            ("*", "", false, true),
            ("*", "anything", false, true),
            ("a*", "a", false, true),
            ("*a", "a", false, true),
            ("a*a", "a", false, false),
            ("a*a", "aa", false, true),
            ("a*b*c", "aXbYc", false, true),
            ("a*b*c", "aXbYcZ", false, false),
            ("a*b*c", "aXbYcZ", true, true),
            ("a*b*c", "acb", false, false),
            ("*.example.com", "x.example.com", false, true),
            ("*.example.com", "example.com", false, false),
            ("*ab*ab*", "abab", false, true),
            ("*ab*ab*", "aba", false, false),
        ] {
            assert_eq!(
                Glob::new(glob).matches(text, prefix),
                ok,
                "{glob} {text} {prefix}"
            );
        }
    }

    #[test]
    fn pattern_validation() {
        for p in [
            "https://*.example.com/",
            "http://127.0.0.1:*/",
            "http://localhost:*/",
            "https://example.com",
            "https://example.com:8443/images/",
            "https://[::1]:8080/x/",
            "https://[::1]:*/",
            "https://*.bücher.example/",
            "https://img*/",
            "HTTPS://Example.COM/",
        ] {
            assert_eq!(validate_pattern(p), Ok(()), "{p}");
        }
        for p in [
            "",
            "not a url",
            "ftp://example.com/",
            "s3://bucket/",
            "local:///",
            "https://",
            "*://example.com/",
            "https://user@example.com/",
            "https://user:pw@example.com/",
            "https://example.com/?a=1",
            "https://example.com/#f",
            "https://example.com:8*/",
            "https://example.com:*8/",
            "https://example.com:99999/",
            "https://b*ücher.example/",
            "https://exa mple.com/",
        ] {
            assert!(validate_pattern(p).is_err(), "{p}");
        }
        let e = validate_pattern("ftp://x/").unwrap_err();
        assert!(e.contains("ftp://x/") && e.contains("http"), "{e}");
        let e = AllowList::new(&["https://ok.example/".into(), "s3://b/".into()]).unwrap_err();
        assert_eq!(e.pattern, "s3://b/");
    }
}
