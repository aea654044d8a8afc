//! Splits an image request path, in imgproxy's URL language, into its signature, its option
//! segments and its source, and decodes the source. Pure: no I/O, no allocation beyond the
//! result.
//!
//! ```text
//! /%signature/%option/%option/.../plain/%percent_encoded_url@%extension
//! /%signature/%option/%option/.../%base64url/%split/%anywhere.%extension
//! ```
//!
//! What must stay true (each point is imgproxy's behaviour, read in its source:
//! `handlers/processing/path.go`, `options/parser/url_options.go`, `options/parser/url.go`,
//! `options/parser/processing_options.go`):
//!
//! * The path is taken as received, still percent-encoded; anything from a `?` on is dropped.
//! * The first segment is the signature, kept verbatim (`unsafe`, `_` or a real signature:
//!   checking it is `signature`'s job). [`ParsedPath::signed_part`] is exactly the text that
//!   imgproxy signs: everything after the signature, starting with `/`, after the slash
//!   repair below.
//! * Slash repair ("re-denormalization"): proxies that merge `//` turn
//!   `/plain/https://host` into `/plain/https:/host`; imgproxy puts the slash back (three
//!   for `local:`) before verifying the signature and parsing, with a greedy regular
//!   expression `/plain/(\S+):/([^/])` whose quirks are reproduced here exactly.
//! * Option segments are the segments up to the first one that holds no argument separator
//!   (`:` by default). Every option segment contains the separator; none contains `/`.
//! * A source is either `plain/` and the percent-encoded URL, with an optional `@ext`, or a
//!   URL-safe base64 text that may be split by `/` anywhere, with an optional `.ext`.
//!   Base64 padding (`=`) is tolerated, and so are non-zero trailing bits, as Go's decoder
//!   does. Base64 text is never percent-decoded (`%` is not in its alphabet).
//! * The extension is returned raw (never percent-decoded); an empty one is `None`.
//!
//! Deliberate differences from imgproxy, each a superset of what imgproxy accepts (URLs that
//! work with imgproxy parse to the same thing here, except the first point's corner):
//!
//! * A percent-encoded separator (`%3A` for `:`) in an option segment is read as the
//!   separator, so `w%3A300` is the option `w:300` (imgproxy answers 404 there; its issue
//!   #1581). The corner: an argument holding a literal `%3A`, such as `cb:a%3Ab`, now has two
//!   arguments where imgproxy saw one.
//! * A plain source is split at its LAST `@`; imgproxy refuses a plain source with two raw
//!   `@` ("Multiple formats are specified"). A raw `@` inside a URL without an extension
//!   still reads as the extension separator, as in imgproxy: URLs must escape it as `%40`.
//! * `enc/...` (imgproxy Pro's encrypted sources) is refused by name rather than decoded as
//!   base64 garbage. Decoded sources must be UTF-8 (Go keeps any bytes).

use std::borrow::Cow;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// imgproxy's default argument separator (`IMGPROXY_ARGUMENTS_SEPARATOR`).
pub const ARGUMENT_SEPARATOR: &str = ":";

/// The segment that introduces a plain (percent-encoded) source URL.
const PLAIN_TOKEN: &str = "plain";

/// The segment that introduces an imgproxy Pro encrypted source URL.
const ENCRYPTED_TOKEN: &str = "enc";

/// imgproxy's resizing types. A path whose first segment after the signature is one of
/// these is imgproxy 1.x's "basic" URL format, which imgproxy 3 refuses by name.
const BASIC_FORMAT_RESIZE_TYPES: [&str; 5] = ["fit", "fill", "fill-down", "force", "auto"];

/// Longest piece of a request quoted in an error message, in bytes.
const MAX_QUOTED: usize = 256;

/// Go's `base64.RawURLEncoding` as a decoder: URL-safe alphabet, no padding (trailing `=`
/// are trimmed before decoding, as imgproxy does), trailing bits not checked.
#[doc(hidden)]
pub const BASE64_URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// Why a path could not be split. Messages name the problem and quote the bad part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("invalid URL: path must start with /")]
    NotAbsolute,
    #[error("invalid URL: missing signature segment in `{0}`")]
    MissingSignature(String),
    #[error("invalid URL: nothing after the signature in `{0}`")]
    MissingPath(String),
    #[error(
        "invalid URL: `{0}` starts imgproxy's deprecated basic URL format, which is not \
         supported; use the `rs:{0}:%width:%height` option instead"
    )]
    BasicFormat(String),
    #[error("missing source: no source URL after the options in `{0}`")]
    MissingSource(String),
    #[error("missing source: the image URL is empty in `{0}`")]
    EmptySource(String),
    #[error("invalid source: multiple formats are specified in `{0}`")]
    MultipleFormats(String),
    #[error("invalid source: base64 decoding failed in `{0}`")]
    Base64(String),
    #[error("invalid source: bad percent-encoding in `{0}`")]
    PercentEncoding(String),
    #[error("invalid source: the decoded URL is not valid UTF-8 in `{0}`")]
    NotUtf8(String),
    #[error(
        "invalid source: encrypted source URLs (`enc/...`) are an imgproxy Pro feature and \
         are not supported"
    )]
    Encrypted,
    #[error("invalid configuration: the arguments separator must not be empty")]
    EmptySeparator,
}

/// The image source named by a path, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// From `plain/...`: the percent-decoded URL, e.g. `s3://bucket/key` or `local:///x`.
    Plain(String),
    /// From base64url segments: the decoded URL.
    Base64(String),
}

impl Source {
    /// The decoded source URL, whichever way it was encoded.
    pub fn url(&self) -> &str {
        match self {
            Source::Plain(url) | Source::Base64(url) => url,
        }
    }

    /// The decoded source URL, owned.
    pub fn into_url(self) -> String {
        match self {
            Source::Plain(url) | Source::Base64(url) => url,
        }
    }
}

/// A request path split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedPath<'a> {
    /// The first segment, verbatim (`unsafe`, `_` or a base64url signature).
    pub signature: &'a str,
    /// Exactly what the signature signs: the path after the signature, starting with `/`,
    /// after slash repair. Borrowed from the request unless the repair changed it.
    pub signed_part: Cow<'a, str>,
    /// Option segments in order, percent-encoded separators read as the separator
    /// (`w%3A300` is `w:300`); nothing else is decoded. Split each with [`split_option`].
    pub options: Vec<String>,
    /// The decoded source URL.
    pub source: Source,
    /// The requested output format (`@png` or `.png`), raw; `None` when absent or empty.
    pub extension: Option<String>,
}

/// imgproxy settings that change how paths split. The default is imgproxy's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathConfig {
    arguments_separator: String,
    base64_url_includes_filename: bool,
}

impl Default for PathConfig {
    fn default() -> Self {
        PathConfig {
            arguments_separator: ARGUMENT_SEPARATOR.to_owned(),
            base64_url_includes_filename: false,
        }
    }
}

impl PathConfig {
    /// `IMGPROXY_ARGUMENTS_SEPARATOR`: the text between an option's name and arguments.
    pub fn with_arguments_separator(mut self, separator: &str) -> Result<Self, UrlError> {
        if separator.is_empty() {
            return Err(UrlError::EmptySeparator);
        }
        separator.clone_into(&mut self.arguments_separator);
        Ok(self)
    }

    /// `IMGPROXY_BASE64_URL_INCLUDES_FILENAME`: when set, the last segment of a base64
    /// source split into several segments is a cosmetic file name and is ignored.
    pub fn with_base64_url_includes_filename(mut self, includes: bool) -> Self {
        self.base64_url_includes_filename = includes;
        self
    }

    /// The argument separator in use.
    pub fn arguments_separator(&self) -> &str {
        &self.arguments_separator
    }
}

/// Splits a request path (percent-encoded, starting with `/`) with imgproxy's defaults.
pub fn parse_path(path: &str) -> Result<ParsedPath<'_>, UrlError> {
    parse_path_with(path, &PathConfig::default())
}

/// Splits a request path (percent-encoded, starting with `/`) under `config`.
pub fn parse_path_with<'a>(path: &'a str, config: &PathConfig) -> Result<ParsedPath<'a>, UrlError> {
    let path = path.split_once('?').map_or(path, |(before, _)| before);
    let Some(rest) = path.strip_prefix('/') else {
        return Err(UrlError::NotAbsolute);
    };
    let (signature, after) = rest.split_once('/').unwrap_or((rest, ""));
    if signature.is_empty() {
        return Err(UrlError::MissingSignature(quote(path)));
    }
    if after.is_empty() {
        return Err(UrlError::MissingPath(quote(path)));
    }
    // `after` with the slash that ends the signature.
    let slash_after = &rest[signature.len()..];

    let repaired = redenormalize(after);
    // imgproxy signs `/` + the path after the signature, unless that path already starts
    // with `/` (a request like `/sig//rs:fit/...`), which it signs as it is.
    let signed_part = match &repaired {
        Cow::Borrowed(text) if text.starts_with('/') => Cow::Borrowed(*text),
        Cow::Borrowed(_) => Cow::Borrowed(slash_after),
        Cow::Owned(text) if text.starts_with('/') => Cow::Owned(text.clone()),
        Cow::Owned(text) => Cow::Owned(format!("/{text}")),
    };

    let body: &str = &repaired;
    if body == "/" {
        return Err(UrlError::MissingPath(quote(path)));
    }
    let parts: Vec<&str> = body.strip_prefix('/').unwrap_or(body).split('/').collect();

    if let Some(first) = parts.first()
        && BASIC_FORMAT_RESIZE_TYPES.contains(first)
    {
        return Err(UrlError::BasicFormat(quote(first)));
    }

    let separator = config.arguments_separator.as_str();
    let mut options = Vec::new();
    for part in &parts {
        let option = decode_separator(part, separator);
        if !option.contains(separator) {
            break;
        }
        options.push(option);
    }
    let source_parts = &parts[options.len()..];
    let (source, extension) = decode_source(source_parts, config, body)?;

    Ok(ParsedPath {
        signature,
        signed_part,
        options,
        source,
        extension,
    })
}

/// Splits an option segment into its name and arguments at imgproxy's separator `:`.
/// `rs:fill:300::0` is `("rs", ["fill", "300", "", "0"])`; a segment without `:` is its own
/// name with no arguments.
pub fn split_option(segment: &str) -> (&str, Vec<&str>) {
    split_option_with(segment, ARGUMENT_SEPARATOR)
}

/// [`split_option`] with another separator (`IMGPROXY_ARGUMENTS_SEPARATOR`). An empty
/// separator leaves the segment whole.
pub fn split_option_with<'s>(segment: &'s str, separator: &str) -> (&'s str, Vec<&'s str>) {
    if separator.is_empty() {
        return (segment, Vec::new());
    }
    let mut pieces = segment.split(separator);
    let name = pieces.next().unwrap_or(segment);
    (name, pieces.collect())
}

/// Reads each `%XX` that encodes a one-byte ASCII separator as the separator itself.
fn decode_separator(segment: &str, separator: &str) -> String {
    let &[sep] = separator.as_bytes() else {
        return segment.to_owned();
    };
    if !sep.is_ascii() || !segment.contains('%') {
        return segment.to_owned();
    }
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(segment.len());
    let mut copied = 0;
    let mut i = 0;
    while i + 2 < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (hex_value(bytes[i + 1]), hex_value(bytes[i + 2]))
            && (hi << 4 | lo) == sep
        {
            out.push_str(&segment[copied..i]);
            out.push(char::from(sep));
            i += 3;
            copied = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&segment[copied..]);
    out
}

/// Decodes the segments after the options: imgproxy's `DecodeURL`.
fn decode_source(
    parts: &[&str],
    config: &PathConfig,
    body: &str,
) -> Result<(Source, Option<String>), UrlError> {
    match parts {
        [] => Err(UrlError::MissingSource(quote(body))),
        [first, rest @ ..] if *first == PLAIN_TOKEN && !rest.is_empty() => decode_plain(rest),
        [first, rest @ ..] if *first == ENCRYPTED_TOKEN && !rest.is_empty() => {
            Err(UrlError::Encrypted)
        }
        _ => decode_base64(parts, config),
    }
}

/// `plain/` sources: the segments rejoined with `/`, split at the last `@`, the URL part
/// percent-decoded.
fn decode_plain(parts: &[&str]) -> Result<(Source, Option<String>), UrlError> {
    let encoded = parts.join("/");
    let (url_part, extension) = match encoded.rsplit_once('@') {
        Some((url_part, extension)) => (url_part, Some(extension)),
        None => (encoded.as_str(), None),
    };
    if url_part.is_empty() {
        return Err(UrlError::EmptySource(quote(&encoded)));
    }
    let bytes =
        percent_decode(url_part).ok_or_else(|| UrlError::PercentEncoding(quote(&encoded)))?;
    let url = String::from_utf8(bytes).map_err(|_| UrlError::NotUtf8(quote(&encoded)))?;
    Ok((Source::Plain(url), non_empty(extension)))
}

/// Base64url sources: the segments concatenated, split at `.`, the first piece decoded.
fn decode_base64(
    parts: &[&str],
    config: &PathConfig,
) -> Result<(Source, Option<String>), UrlError> {
    let parts = match parts {
        [kept @ .., _filename] if config.base64_url_includes_filename && !kept.is_empty() => kept,
        _ => parts,
    };
    let encoded = parts.concat();
    let mut pieces = encoded.split('.');
    let url_part = pieces.next().unwrap_or_default();
    let extension = pieces.next();
    if url_part.is_empty() {
        return Err(UrlError::EmptySource(quote(&encoded)));
    }
    if pieces.next().is_some() {
        return Err(UrlError::MultipleFormats(quote(&encoded)));
    }
    let bytes = BASE64_URL_LENIENT
        .decode(url_part.trim_end_matches('='))
        .map_err(|_| UrlError::Base64(quote(&encoded)))?;
    let url = String::from_utf8(bytes).map_err(|_| UrlError::NotUtf8(quote(&encoded)))?;
    Ok((Source::Base64(url), non_empty(extension)))
}

fn non_empty(extension: Option<&str>) -> Option<String> {
    extension.filter(|e| !e.is_empty()).map(str::to_owned)
}

/// Go's `url.PathUnescape`: every `%` must start a two-digit hex escape; `+` stays `+`.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Go regexp's `\s`: `[\t\n\f\r ]`.
fn is_go_space(byte: u8) -> bool {
    matches!(byte, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')
}

/// imgproxy's `redenormalizePath`: every match of `/plain/(\S+):/([^/])`, found left to
/// right without overlap in the original text, is replaced (at its first occurrence in the
/// text as replaced so far) by `/plain/$1://$2`, or `/plain/$1:///$2` when `$1` is `local`.
/// `\S+` is greedy, so `$1` runs to the LAST `:/` + non-slash before the next whitespace.
fn redenormalize(path: &str) -> Cow<'_, str> {
    const MARKER: &str = "/plain/";
    if !path.contains(MARKER) {
        return Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    // Where `$1` may end: a `:` followed by `/` and then by something other than `/`.
    let scheme_ends: Vec<usize> = (0..bytes.len().saturating_sub(2))
        .filter(|&e| bytes[e] == b':' && bytes[e + 1] == b'/' && bytes[e + 2] != b'/')
        .collect();
    let spaces: Vec<usize> = (0..bytes.len())
        .filter(|&i| is_go_space(bytes[i]))
        .collect();

    struct Found<'t> {
        whole: &'t str,
        scheme: &'t str,
        next: char,
    }
    let mut found = Vec::new();
    let mut from = 0;
    'search: while let Some(offset) = path[from..].find(MARKER) {
        let mut start = from + offset;
        loop {
            let group_start = start + MARKER.len();
            let run_end = spaces[spaces.partition_point(|&s| s < group_start)..]
                .first()
                .copied()
                .unwrap_or(bytes.len());
            // The greatest scheme end inside the whitespace-free run, leaving `$1` non-empty.
            let below = scheme_ends.partition_point(|&e| e < run_end);
            if let Some(&end) = scheme_ends[..below].last()
                && end > group_start
                && let Some(next) = path[end + 2..].chars().next()
            {
                let match_end = end + 2 + next.len_utf8();
                found.push(Found {
                    whole: &path[start..match_end],
                    scheme: &path[group_start..end],
                    next,
                });
                from = match_end;
                continue 'search;
            }
            // No match from here: try the next occurrence, overlapping ones included.
            match path[start + 1..].find(MARKER) {
                Some(offset) => start = start + 1 + offset,
                None => break 'search,
            }
        }
    }
    if found.is_empty() {
        return Cow::Borrowed(path);
    }
    let mut repaired = path.to_owned();
    for Found {
        whole,
        scheme,
        next,
    } in found
    {
        let mut replacement = String::with_capacity(whole.len() + 3);
        replacement.push_str(MARKER);
        replacement.push_str(scheme);
        replacement.push_str("://");
        if scheme == "local" {
            replacement.push('/');
        }
        replacement.push(next);
        repaired = repaired.replacen(whole, &replacement, 1);
    }
    Cow::Owned(repaired)
}

/// A piece of the request for an error message, cut to [`MAX_QUOTED`] bytes.
fn quote(text: &str) -> String {
    if text.len() <= MAX_QUOTED {
        return text.to_owned();
    }
    let mut end = MAX_QUOTED;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const CURIOSITY: &str = "http://example.com/images/curiosity.jpg";
    const CURIOSITY_B64: &str = "aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn";

    /// imgproxy's signing example path splits into its options and the curiosity URL.
    #[test]
    fn imgproxy_doc_example_path() {
        let path = format!("/sig/rs:fill:300:400:0/g:sm/{CURIOSITY_B64}.png");
        let parsed = parse_path(&path).unwrap();
        assert_eq!(parsed.options, vec!["rs:fill:300:400:0", "g:sm"]);
        assert_eq!(parsed.source, b64(CURIOSITY));
        assert_eq!(parsed.extension.as_deref(), Some("png"));
    }

    fn plain(url: &str) -> Source {
        Source::Plain(url.to_owned())
    }

    fn b64(url: &str) -> Source {
        Source::Base64(url.to_owned())
    }

    struct Case {
        path: &'static str,
        signature: &'static str,
        signed_part: &'static str,
        options: &'static [&'static str],
        source: Source,
        extension: Option<&'static str>,
    }

    #[test]
    fn documented_and_edge_paths() {
        let cases = [
            // docs/signing_the_url.md and docs/generating_the_url.md.
            Case {
                path: "/insecure/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png",
                signature: "insecure",
                signed_part: "/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png",
                options: &["rs:fill:300:400:0", "g:sm"],
                source: b64(CURIOSITY),
                extension: Some("png"),
            },
            Case {
                path: "/AfrOrF3gWeDA6VOlDG4TzxMv39O7MXnF4CXpKUwGqRM/pr:sharp/rs:fill:300:400:0/g:sm/plain/http://example.com/images/curiosity.jpg@png",
                signature: "AfrOrF3gWeDA6VOlDG4TzxMv39O7MXnF4CXpKUwGqRM",
                signed_part: "/pr:sharp/rs:fill:300:400:0/g:sm/plain/http://example.com/images/curiosity.jpg@png",
                options: &["pr:sharp", "rs:fill:300:400:0", "g:sm"],
                source: plain(CURIOSITY),
                extension: Some("png"),
            },
            Case {
                path: "/_/rs:fit:300:200/plain/http://example.com/images/curiosity.jpg@png",
                signature: "_",
                signed_part: "/rs:fit:300:200/plain/http://example.com/images/curiosity.jpg@png",
                options: &["rs:fit:300:200"],
                source: plain(CURIOSITY),
                extension: Some("png"),
            },
            // No options, no extension.
            Case {
                path: "/unsafe/plain/http://example.com/images/curiosity.jpg",
                signature: "unsafe",
                signed_part: "/plain/http://example.com/images/curiosity.jpg",
                options: &[],
                source: plain(CURIOSITY),
                extension: None,
            },
            Case {
                path: "/unsafe/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn",
                signature: "unsafe",
                signed_part: "/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn",
                options: &[],
                source: b64(CURIOSITY),
                extension: None,
            },
            // Padding tolerated; an empty extension is no extension.
            Case {
                path: "/_/w:10/aHR0cDovL2EvYi5qcGc=.",
                signature: "_",
                signed_part: "/w:10/aHR0cDovL2EvYi5qcGc=.",
                options: &["w:10"],
                source: b64("http://a/b.jpg"),
                extension: None,
            },
            // Percent-encoded characters, `%40` inside the URL and `@` before the extension.
            Case {
                path: "/_/plain/https://cdn.example.com/a%20b/c%2Bd%40e+f.jpg%3Fv%3D2@webp",
                signature: "_",
                signed_part: "/plain/https://cdn.example.com/a%20b/c%2Bd%40e+f.jpg%3Fv%3D2@webp",
                options: &[],
                source: plain("https://cdn.example.com/a b/c+d@e+f.jpg?v=2"),
                extension: Some("webp"),
            },
            // A raw `@` in the URL: the last one starts the extension.
            Case {
                path: "/_/plain/http://user@example.com/x.jpg@avif",
                signature: "_",
                signed_part: "/plain/http://user@example.com/x.jpg@avif",
                options: &[],
                source: plain("http://user@example.com/x.jpg"),
                extension: Some("avif"),
            },
            // The whole URL escaped (imgproxy's TestParsePlainURLEscaped).
            Case {
                path: "/_/size:100:100/plain/http:%2F%2Fimages.dev%2Florem%2Fipsum.jpg%3Fparam=value@png",
                signature: "_",
                signed_part: "/size:100:100/plain/http:%2F%2Fimages.dev%2Florem%2Fipsum.jpg%3Fparam=value@png",
                options: &["size:100:100"],
                source: plain("http://images.dev/lorem/ipsum.jpg?param=value"),
                extension: Some("png"),
            },
            Case {
                path: "/_/rs:fit:64:64/plain/s3://bucket/key%20with%20space.jpg",
                signature: "_",
                signed_part: "/rs:fit:64:64/plain/s3://bucket/key%20with%20space.jpg",
                options: &["rs:fit:64:64"],
                source: plain("s3://bucket/key with space.jpg"),
                extension: None,
            },
            Case {
                path: "/_/plain/local:///images/a.png@jpg",
                signature: "_",
                signed_part: "/plain/local:///images/a.png@jpg",
                options: &[],
                source: plain("local:///images/a.png"),
                extension: Some("jpg"),
            },
            // `%3A` (either case) inside options is the separator.
            Case {
                path: "/_/resize%3Afit%3A280%3A280/q%3a80/plain/local:///a.jpg",
                signature: "_",
                signed_part: "/resize%3Afit%3A280%3A280/q%3a80/plain/local:///a.jpg",
                options: &["resize:fit:280:280", "q:80"],
                source: plain("local:///a.jpg"),
                extension: None,
            },
            // Empty arguments survive; options end at the first segment without `:`.
            Case {
                path: "/sig/bg:/pd:10::5/plain/http://x/y.png",
                signature: "sig",
                signed_part: "/bg:/pd:10::5/plain/http://x/y.png",
                options: &["bg:", "pd:10::5"],
                source: plain("http://x/y.png"),
                extension: None,
            },
            // The query string is not part of the path.
            Case {
                path: "/_/w:5/plain/http://x/y.png?a=b@c",
                signature: "_",
                signed_part: "/w:5/plain/http://x/y.png",
                options: &["w:5"],
                source: plain("http://x/y.png"),
                extension: None,
            },
            // `plain` alone is a base64 source (imgproxy's DecodeURL), so `plain` followed
            // by one segment is plain, and the format may sit in a middle segment.
            Case {
                path: "/_/aHR0cDovL2V4YW1w.png/bGU",
                signature: "_",
                signed_part: "/aHR0cDovL2V4YW1w.png/bGU",
                options: &[],
                source: b64("http://examp"),
                extension: Some("pngbGU"),
            },
            // Slash repair: a proxy merged `//` (imgproxy's path_test.go cases).
            Case {
                path: "/sig/rs:fill:300:200/plain/https:/example.com/path/to/image.jpg",
                signature: "sig",
                signed_part: "/rs:fill:300:200/plain/https://example.com/path/to/image.jpg",
                options: &["rs:fill:300:200"],
                source: plain("https://example.com/path/to/image.jpg"),
                extension: None,
            },
            Case {
                path: "/sig/w:1/plain/local:/image.jpg@png",
                signature: "sig",
                signed_part: "/w:1/plain/local:///image.jpg@png",
                options: &["w:1"],
                source: plain("local:///image.jpg"),
                extension: Some("png"),
            },
            // imgproxy only repairs after `/plain/`, so with no option before `plain` the
            // path has no leading slash there and stays as it is.
            Case {
                path: "/sig/plain/http:/example.com/a.jpg",
                signature: "sig",
                signed_part: "/plain/http:/example.com/a.jpg",
                options: &[],
                source: plain("http:/example.com/a.jpg"),
                extension: None,
            },
            // `/sig//...`: imgproxy signs the path as it is (one leading slash).
            Case {
                path: "/sig//w:1/plain/http://x/y",
                signature: "sig",
                signed_part: "/w:1/plain/http://x/y",
                options: &["w:1"],
                source: plain("http://x/y"),
                extension: None,
            },
        ];
        for case in cases {
            let parsed = parse_path(case.path).unwrap_or_else(|e| panic!("{}: {e}", case.path));
            assert_eq!(parsed.signature, case.signature, "{}", case.path);
            assert_eq!(parsed.signed_part, case.signed_part, "{}", case.path);
            assert_eq!(parsed.options, case.options, "{}", case.path);
            assert_eq!(parsed.source, case.source, "{}", case.path);
            assert_eq!(parsed.extension.as_deref(), case.extension, "{}", case.path);
        }
    }

    #[test]
    fn signed_part_is_borrowed_unless_repaired() {
        let parsed = parse_path("/s/w:1/plain/http://x/y").unwrap();
        assert!(matches!(parsed.signed_part, Cow::Borrowed(_)));
        let parsed = parse_path("/s/w:1/plain/http:/x/y").unwrap();
        assert!(matches!(parsed.signed_part, Cow::Owned(_)));
    }

    #[test]
    fn errors_name_the_problem() {
        let cases: [(&str, UrlError, &str); 17] = [
            (
                "",
                UrlError::NotAbsolute,
                "invalid URL: path must start with /",
            ),
            (
                "unsafe/w:1/plain/x",
                UrlError::NotAbsolute,
                "path must start with /",
            ),
            (
                "/",
                UrlError::MissingSignature("/".into()),
                "missing signature",
            ),
            (
                "//w:1/plain/x",
                UrlError::MissingSignature("//w:1/plain/x".into()),
                "missing signature",
            ),
            (
                "/signature_only",
                UrlError::MissingPath("/signature_only".into()),
                "nothing after the signature",
            ),
            (
                "/sig/",
                UrlError::MissingPath("/sig/".into()),
                "nothing after the signature",
            ),
            (
                "/sig//",
                UrlError::MissingPath("/sig//".into()),
                "nothing after the signature",
            ),
            (
                "/sig/w:1/h:2",
                UrlError::MissingSource("w:1/h:2".into()),
                "missing source",
            ),
            (
                "/sig/w:1/plain/@png",
                UrlError::EmptySource("@png".into()),
                "image URL is empty",
            ),
            (
                "/sig/w:1/.png",
                UrlError::EmptySource(".png".into()),
                "image URL is empty",
            ),
            (
                "/sig/aHR0cDovL2E.png.jpg",
                UrlError::MultipleFormats("aHR0cDovL2E.png.jpg".into()),
                "multiple formats",
            ),
            (
                "/sig/w:1/aHR0c%41",
                UrlError::Base64("aHR0c%41".into()),
                "invalid source: base64 decoding failed in `aHR0c%41`",
            ),
            (
                "/sig/w:1/plain",
                UrlError::Base64("plain".into()),
                "base64 decoding failed in `plain`",
            ),
            (
                "/sig/plain/http://x/%zz.jpg",
                UrlError::PercentEncoding("http://x/%zz.jpg".into()),
                "bad percent-encoding",
            ),
            (
                "/sig/plain/http://x/%ff.jpg",
                UrlError::NotUtf8("http://x/%ff.jpg".into()),
                "not valid UTF-8",
            ),
            (
                "/sig/fill/300/400/sm/0/plain/http://x/y",
                UrlError::BasicFormat("fill".into()),
                "deprecated basic URL format",
            ),
            (
                "/sig/enc/jwV3wUD9r4VBIzgv/ang3Hbh0vPpcm5cc.png",
                UrlError::Encrypted,
                "imgproxy Pro",
            ),
        ];
        for (path, expected, message) in cases {
            let err = parse_path(path).expect_err(path);
            assert_eq!(err, expected, "{path}");
            assert!(err.to_string().contains(message), "{path}: {err}");
        }
    }

    #[test]
    fn long_input_is_quoted_short() {
        let path = format!("/sig/{}!", "A".repeat(5000));
        let err = parse_path(&path).unwrap_err().to_string();
        assert!(err.len() < MAX_QUOTED + 100, "{err}");
        assert!(err.ends_with("…`"), "{err}");
    }

    #[test]
    fn split_option_splits_on_the_separator() {
        assert_eq!(
            split_option("rs:fill:300:400:0"),
            ("rs", vec!["fill", "300", "400", "0"])
        );
        assert_eq!(split_option("bg:"), ("bg", vec![""]));
        assert_eq!(split_option("pd:10::5"), ("pd", vec!["10", "", "5"]));
        assert_eq!(split_option("plain"), ("plain", vec![]));
        assert_eq!(split_option(""), ("", vec![]));
        assert_eq!(
            split_option_with("size,100,100,1", ","),
            ("size", vec!["100", "100", "1"])
        );
        assert_eq!(split_option_with("a:b", ""), ("a:b", vec![]));
    }

    #[test]
    fn custom_arguments_separator() {
        // imgproxy's TestParseWithArgumentsSeparator.
        let config = PathConfig::default().with_arguments_separator(",").unwrap();
        let parsed = parse_path_with(
            "/_/size,100,100,1/q%2C80/plain/http://images.dev/lorem/ipsum.jpg",
            &config,
        )
        .unwrap();
        assert_eq!(parsed.options, ["size,100,100,1", "q,80"]);
        assert_eq!(parsed.source, plain("http://images.dev/lorem/ipsum.jpg"));
        // With `,` as separator, `:` is just a character of a (source) segment.
        assert!(parse_path_with("/_/size:100/plain/http://x/y", &config).is_err());
        assert_eq!(
            PathConfig::default().with_arguments_separator(""),
            Err(UrlError::EmptySeparator)
        );
    }

    #[test]
    fn base64_url_includes_filename() {
        // imgproxy's TestParseBase64URLWithFilename.
        let url = "http://images.dev/lorem/ipsum.jpg?param=value";
        let encoded = URL_SAFE_NO_PAD.encode(url);
        let path = format!("/_/size:100:100/{encoded}.png/puppy.jpg");
        let config = PathConfig::default().with_base64_url_includes_filename(true);
        let parsed = parse_path_with(&path, &config).unwrap();
        assert_eq!(parsed.source, b64(url));
        assert_eq!(parsed.extension.as_deref(), Some("png"));
        // A single segment is never a file name.
        let single = format!("/_/{encoded}.png");
        let parsed = parse_path_with(&single, &config).unwrap();
        assert_eq!(parsed.source, b64(url));
        // Without the setting the file name is part of the base64 text.
        assert!(parse_path(&path).is_err());
    }

    #[test]
    fn base64_decoding_is_as_lenient_as_go() {
        // Non-zero trailing bits: `aGk` and `aGl` both decode to "hi" in Go.
        assert_eq!(parse_path("/_/aGl").unwrap().source, b64("hi"));
        assert_eq!(parse_path("/_/aGk==").unwrap().source, b64("hi"));
        // `=` only at the end, and `/` `+` are not in the URL-safe alphabet.
        assert!(parse_path("/_/aG=k").is_err());
        assert!(parse_path("/_/a+Gk").is_err());
        // Any split works.
        assert_eq!(parse_path("/_/a/G/k").unwrap().source, b64("hi"));
    }

    #[test]
    fn redenormalize_matches_imgproxy() {
        // imgproxy's TestRedenormalizePathHTTPProtocol, plus its greedy-match quirks.
        let cases = [
            (
                "/plain/http:/example.com/image.jpg",
                "/plain/http://example.com/image.jpg",
            ),
            (
                "/plain/https:/example.com/image.jpg",
                "/plain/https://example.com/image.jpg",
            ),
            ("/plain/local:/image.jpg", "/plain/local:///image.jpg"),
            (
                "/plain/http://example.com/image.jpg",
                "/plain/http://example.com/image.jpg",
            ),
            (
                "/rs:fill:300:200/plain/example.com/image.jpg",
                "/rs:fill:300:200/plain/example.com/image.jpg",
            ),
            ("", ""),
            ("/", "/"),
            (
                "/http:/example.com/image.jpg",
                "/http:/example.com/image.jpg",
            ),
            (
                "/plain/example.com/image.jpg",
                "/plain/example.com/image.jpg",
            ),
            ("/plain/http:", "/plain/http:"),
            ("/plain/http:/test", "/plain/http://test"),
            // Greedy: the last `:/x` of the run wins, even in an already fine URL.
            (
                "/plain/http://example.com/a:/b.jpg",
                "/plain/http://example.com/a://b.jpg",
            ),
            // Whitespace ends the run.
            ("/plain/http:/a b:/c", "/plain/http://a b:/c"),
            // `$1` must not be empty.
            ("/plain/:/x", "/plain/:/x"),
            // The leftmost marker wins, so `$1` is `plain/s3`.
            ("/plain/plain/s3:/b/k", "/plain/plain/s3://b/k"),
            // Two matches, repaired in order.
            ("/plain/a:/b /plain/c:/d", "/plain/a://b /plain/c://d"),
            ("/plain/http:/é", "/plain/http://é"),
        ];
        for (input, expected) in cases {
            assert_eq!(redenormalize(input), expected, "{input:?}");
        }
    }

    #[test]
    fn plain_round_trip() {
        let urls = [
            "http://example.com/a b/ü?x=1&y=@2#f",
            "s3://bucket/dir/key with space.jpg",
            "local:///100%/x.png",
        ];
        for url in urls {
            let encoded: String = url
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"/:.-_~".contains(&b) {
                        char::from(b).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            let path = format!("/_/q:90/plain/{encoded}@png");
            let parsed = parse_path(&path).unwrap();
            assert_eq!(parsed.source, plain(url), "{path}");
            assert_eq!(parsed.extension.as_deref(), Some("png"));
        }
    }

    /// xorshift64*: a small deterministic generator for the property tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn never_panics_on_random_input() {
        const PIECES: [&str; 24] = [
            "/", "/", "/", ":", ":", "@", ".", "%", "%3A", "%3", "%4", "=", "?", " ", "plain",
            "/plain/", "local", "enc", "fill", "aGk", "é", "\u{0}", "http:/", ":/",
        ];
        let configs = [
            PathConfig::default(),
            PathConfig::default().with_base64_url_includes_filename(true),
            PathConfig::default().with_arguments_separator(",").unwrap(),
            PathConfig::default()
                .with_arguments_separator("::")
                .unwrap(),
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..20_000 {
            let len = rng.below(48);
            let input = if round % 2 == 0 {
                let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                let text = String::from_utf8_lossy(&bytes).into_owned();
                if round % 4 == 0 {
                    format!("/{text}")
                } else {
                    text
                }
            } else {
                let mut text = String::from("/");
                for _ in 0..len {
                    if rng.below(3) == 0 {
                        text.push(char::from(b'a' + rng.below(26) as u8));
                    } else {
                        text.push_str(PIECES[rng.below(PIECES.len())]);
                    }
                }
                text
            };
            let config = &configs[round % configs.len()];
            if let Ok(parsed) = parse_path_with(&input, config) {
                assert!(parsed.signed_part.starts_with('/'), "{input:?}");
                assert!(!parsed.signature.is_empty() && !parsed.signature.contains('/'));
                for option in &parsed.options {
                    assert!(option.contains(config.arguments_separator()), "{input:?}");
                    assert!(!option.contains('/'), "{input:?}");
                }
                assert!(parsed.extension.as_ref().is_none_or(|e| !e.is_empty()));
            }
            let _ = redenormalize(&input);
        }
    }

    #[test]
    fn base64_round_trip_with_random_splits() {
        let mut rng = Rng(42);
        for _ in 0..2_000 {
            let len = 1 + rng.below(80);
            let url: String = (0..len)
                .map(|_| char::from(b' ' + rng.below(95) as u8))
                .collect();
            let encoded = URL_SAFE_NO_PAD.encode(&url);
            let mut path = String::from("/sig/w:1");
            for (i, c) in encoded.chars().enumerate() {
                if i == 0 || rng.below(10) == 0 {
                    path.push('/');
                }
                path.push(c);
            }
            path.push_str(".webp");
            let parsed = parse_path(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(parsed.source, b64(&url), "{path}");
            assert_eq!(parsed.extension.as_deref(), Some("webp"));
            assert_eq!(parsed.signed_part, &path["/sig".len()..]);
        }
    }
}
