//! Fuzz targets on stable Rust (issue #10 §8): proptest properties over the image endpoint's
//! URL splitting, option parser and canonical form, signature check, geometry, header probe
//! and decoders, and the admin API's public JSON bodies. `cargo test --test fuzz_targets`
//! runs each briefly; `scripts/fuzz.sh` runs them longer (docs/fuzzing.md).
//!
//! What must stay true: each target checks what a user would notice (a round trip, a
//! refusal, a size within its limit), not only the absence of a panic. Case counts are the
//! per-target defaults below unless `PROPTEST_CASES` is set; every test prints its seed
//! (shown when it fails) and `PROPTEST_RNG_SEED=<seed>` replays the run. Nothing is written
//! to the source tree: failure persistence is off.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::panic::AssertUnwindSafe;
use std::path::{Component, Path};
use std::sync::{Once, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use image::DynamicImage;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::RngSeed;
use serde_json::Value;

use pixelport::admin::builder::BuildRequest;
use pixelport::admin::purge::Purge;
use pixelport::imaging::avif;
use pixelport::imaging::decode::{self, DecodeError, DecodeOptions, Decoded, Probe};
use pixelport::imaging::geometry::{self, GeometryError, Limits};
use pixelport::imaging::options::{
    self, Crop, Extend, Flip, Gravity, GravityType, ImageFormat, OPTIONS, Options, Padding,
    ParseContext, ResizingType, SecurityOverrides,
};
use pixelport::imaging::signature::{SignatureError, Signer, split_list};
use pixelport::imaging::source::{SourceUrl, local_path};
use pixelport::imaging::url::{self, BASE64_URL_LENIENT, PathConfig, Source};
use pixelport::s3::names::validate_bucket_name;

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// The configuration of one target: `default_cases` unless `PROPTEST_CASES` says otherwise,
/// a seed from `PROPTEST_RNG_SEED` or a fresh one (printed, so a failure can be replayed),
/// and no failure persistence (proptest would otherwise write `*.proptest-regressions`
/// files next to this one).
fn config(default_cases: u32) -> ProptestConfig {
    let from_env = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let cases =
        from_env("PROPTEST_CASES").map_or(default_cases, |n| u32::try_from(n).unwrap_or(u32::MAX));
    let seed = from_env("PROPTEST_RNG_SEED").unwrap_or_else(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    });
    println!("{cases} cases; replay with PROPTEST_RNG_SEED={seed}");
    ProptestConfig {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// URL splitting (src/imaging/url.rs) and source URLs (src/imaging/source.rs)
// ---------------------------------------------------------------------------------------

/// Pieces that reach the splitter's corners: separators, escapes, the `plain` marker, the
/// slash repair's `:/`, basic-format words, whitespace.
const URL_PIECES: &[&str] = &[
    "/",
    "/",
    "/",
    ":",
    "@",
    ".",
    "%",
    "%3A",
    "%3a",
    "%3",
    "%4",
    "=",
    "?",
    " ",
    "\t",
    "plain",
    "/plain/",
    "local",
    "enc",
    "fill",
    "fit",
    "aGk",
    "é",
    "\u{0}",
    "http:/",
    "https://",
    ":/",
    "s3://",
    "unsafe",
    "rs:fill:300:200",
    "w:1",
    "..",
    "//",
];

/// Arbitrary text, and text built from [`URL_PIECES`] (far likelier to get past the first
/// checks).
fn path_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        any::<String>().prop_map(|s| format!("/{s}")),
        prop::collection::vec(
            prop_oneof![
                3 => select(URL_PIECES).prop_map(str::to_owned),
                1 => "[a-zA-Z0-9_-]{1,6}",
            ],
            0..40
        )
        .prop_map(|v| v.concat()),
    ]
}

/// The path configurations a server may run with.
fn path_configs() -> [PathConfig; 4] {
    [
        PathConfig::default(),
        PathConfig::default().with_base64_url_includes_filename(true),
        PathConfig::default()
            .with_arguments_separator(",")
            .unwrap_or_default(),
        PathConfig::default()
            .with_arguments_separator("::")
            .unwrap_or_default(),
    ]
}

/// What every successful split satisfies, whatever the input.
fn check_split(input: &str, config: &PathConfig) -> Result<(), TestCaseError> {
    let Ok(parsed) = url::parse_path_with(input, config) else {
        return Ok(());
    };
    let before_query = input.split_once('?').map_or(input, |(b, _)| b);
    let head = format!("/{}", parsed.signature);
    prop_assert!(!parsed.signature.is_empty() && !parsed.signature.contains('/'));
    let starts = before_query.starts_with(&format!("{head}/"));
    prop_assert!(starts, "{input:?} does not start with its signature");
    prop_assert!(parsed.signed_part.starts_with('/'));
    // Unless the slash repair changed it, the signed part is the request's own text.
    if let Cow::Borrowed(signed) = &parsed.signed_part {
        prop_assert!(
            before_query == format!("{head}{signed}") || before_query == format!("{head}/{signed}"),
            "signed part {signed:?} of {input:?}"
        );
    }
    for option in &parsed.options {
        prop_assert!(option.contains(config.arguments_separator()));
        prop_assert!(!option.contains('/'));
    }
    prop_assert!(parsed.extension.as_ref().is_none_or(|e| !e.is_empty()));
    Ok(())
}

/// A request path built from known parts, and what splitting it must give back.
#[derive(Debug, Clone)]
struct WellFormed {
    path: String,
    signature: String,
    signed_part: String,
    options: Vec<String>,
    source: Source,
    extension: Option<String>,
}

/// Percent-encodes everything but unreserved characters and `/`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An option segment as written (with `:` or a percent-encoded `:` between arguments) and
/// as the splitter must read it.
fn written_option() -> impl Strategy<Value = (String, String)> {
    (
        "[a-z_]{1,10}",
        prop::collection::vec(
            (
                "[A-Za-z0-9._~!$&'()*+,;=@-]{0,8}",
                select(&[":", "%3A", "%3a"][..]),
            ),
            1..5,
        ),
    )
        .prop_map(|(name, args)| {
            let mut written = name.clone();
            let mut read = name;
            for (arg, sep) in args {
                written.push_str(sep);
                written.push_str(&arg);
                read.push(':');
                read.push_str(&arg);
            }
            (written, read)
        })
}

/// A source as written after the options, the decoded source and the extension.
fn written_source() -> impl Strategy<Value = (String, Source, Option<String>)> {
    let extension = prop::option::of("[a-z0-9]{0,5}");
    let plain = (
        select(
            &[
                "s3://bucket/",
                "local:///",
                "https://example.com/",
                "http://h:8080/",
            ][..],
        ),
        any::<String>(),
        extension.clone(),
    )
        .prop_map(|(scheme, rest, ext)| {
            let mut written = format!("plain/{scheme}{}", percent_encode(&rest));
            if let Some(e) = &ext {
                written.push('@');
                written.push_str(e);
            }
            let ext = ext.filter(|e| !e.is_empty());
            (written, Source::Plain(format!("{scheme}{rest}")), ext)
        });
    let base64 = (
        any::<String>().prop_filter("an empty URL is refused", |s| !s.is_empty()),
        prop::collection::vec(any::<Index>(), 0..4),
        0usize..3,
        extension,
    )
        .prop_map(|(text, cuts, padding, ext)| {
            let mut encoded = URL_SAFE_NO_PAD.encode(&text);
            encoded.push_str(&"=".repeat(padding));
            let mut at: Vec<usize> = cuts
                .iter()
                .map(|c| 1 + c.index(encoded.len() - 1).min(encoded.len() - 2))
                .filter(|&i| i < encoded.len())
                .collect();
            at.sort_unstable();
            at.dedup();
            let mut pieces = Vec::new();
            let mut from = 0;
            for i in at {
                pieces.push(&encoded[from..i]);
                from = i;
            }
            pieces.push(&encoded[from..]);
            let mut written = pieces.join("/");
            if let Some(e) = &ext {
                written.push('.');
                written.push_str(e);
            }
            let ext = ext.filter(|e| !e.is_empty());
            (written, Source::Base64(text), ext)
        });
    prop_oneof![plain, base64]
}

fn well_formed() -> impl Strategy<Value = WellFormed> {
    (
        prop_oneof![
            Just("unsafe".to_owned()),
            Just("_".to_owned()),
            "[A-Za-z0-9_-]{1,64}"
        ],
        prop::collection::vec(written_option(), 0..5),
        written_source(),
        prop::option::of("[ -~]{0,20}"),
    )
        .prop_map(
            |(signature, options, (source_text, source, extension), query)| {
                let mut rest: Vec<&str> = options.iter().map(|(w, _)| w.as_str()).collect();
                rest.push(&source_text);
                let signed_part = format!("/{}", rest.join("/"));
                let mut path = format!("/{signature}{signed_part}");
                if let Some(q) = query {
                    path.push('?');
                    path.push_str(&q);
                }
                WellFormed {
                    path,
                    signature,
                    signed_part,
                    options: options.into_iter().map(|(_, r)| r).collect(),
                    source,
                    extension,
                }
            },
        )
}

/// Whether the generated source happens to read as something else: a base64 text whose
/// first piece is `plain` or `enc`, or (without options) one of imgproxy's basic-format
/// resizing types. Such paths are valid but mean something different.
fn ambiguous(w: &WellFormed) -> bool {
    let Source::Base64(_) = w.source else {
        return false;
    };
    let first_source = w.signed_part[1..].split('/').nth(w.options.len());
    let pieces = w.signed_part[1..].split('/').count() - w.options.len();
    match first_source {
        Some("plain" | "enc") => pieces > 1,
        Some("fit" | "fill" | "fill-down" | "force" | "auto") => w.options.is_empty(),
        _ => false,
    }
}

proptest! {
    #![proptest_config(config(2000))]

    /// Any text, under any path configuration: a split or a `UrlError`, never a panic; a
    /// split keeps the signature verbatim, signs the request's own text and returns option
    /// segments that hold the separator and no `/`.
    #[test]
    fn url_split_never_panics(input in path_like(), which in 0usize..4) {
        check_split(&input, &path_configs()[which])?;
    }

    /// A path built from a signature, option segments (some with `%3A` for `:`) and a plain
    /// or split base64 source splits back into exactly those parts; a query is ignored.
    #[test]
    fn url_split_round_trips_well_formed_paths(w in well_formed()) {
        prop_assume!(!ambiguous(&w));
        let parsed = url::parse_path(&w.path)
            .map_err(|e| TestCaseError::fail(format!("{}: {e}", w.path)))?;
        prop_assert_eq!(parsed.signature, w.signature.as_str());
        prop_assert_eq!(parsed.signed_part.as_ref(), w.signed_part.as_str());
        prop_assert_eq!(&parsed.options, &w.options);
        prop_assert_eq!(&parsed.source, &w.source);
        prop_assert_eq!(&parsed.extension, &w.extension);
        check_split(&w.path, &PathConfig::default())?;
    }

    /// Splitting an option segment at any separator loses nothing: name and arguments
    /// joined again give the segment back.
    #[test]
    fn url_split_option_round_trips(
        segment in prop_oneof![any::<String>(), "[a-z:,]{0,20}"],
        separator in prop_oneof![
            select(vec![":", ",", "::"]).prop_map(str::to_owned),
            "\\PC{1,3}",
        ],
    ) {
        let (name, args) = url::split_option_with(&segment, &separator);
        if args.is_empty() {
            prop_assert_eq!(name, segment.as_str());
            prop_assert!(!segment.contains(separator.as_str()));
        } else {
            let mut joined = vec![name];
            joined.extend(args);
            prop_assert_eq!(joined.join(&separator), segment);
        }
    }

    /// A source URL is `s3://bucket/key`, `local:///path`, `http(s)://...` or refused;
    /// `s3://` URLs give their bucket and key back.
    #[test]
    fn url_source_urls_parse_or_are_refused(
        text in path_like(),
        bucket in "[^/]{1,20}",
        key in "\\PC{1,40}",
    ) {
        if let Ok(parsed) = SourceUrl::parse(&text) {
            let ok = match &parsed {
                SourceUrl::S3 { bucket, key } => !bucket.is_empty() && !key.is_empty(),
                SourceUrl::Local { path } => path.starts_with('/'),
                SourceUrl::Http { url } => url.starts_with("http"),
            };
            prop_assert!(ok, "{text:?} parsed as {parsed:?}");
        }
        prop_assert_eq!(
            SourceUrl::parse(&format!("s3://{bucket}/{key}")).ok(),
            Some(SourceUrl::S3 { bucket, key })
        );
    }

    /// A `local:///` path never leaves the root: the file named lies under it and has no
    /// `..` component; a path with a `..` component is refused.
    #[test]
    fn url_local_paths_stay_under_the_root(path in path_like()) {
        let root = Path::new("/srv/images");
        match local_path(root, &path) {
            Ok(file) => {
                prop_assert!(file.starts_with(root), "{path:?} -> {file:?}");
                let plain = file
                    .components()
                    .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
                prop_assert!(plain, "{path:?} -> {file:?}");
                prop_assert!(!path.split('/').any(|c| c == ".."));
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Options parser and canonical form (src/imaging/options.rs)
// ---------------------------------------------------------------------------------------

/// Every option name and alias, from the parser's own table.
fn option_names() -> Vec<&'static str> {
    OPTIONS
        .iter()
        .flat_map(|d| d.names.iter().copied())
        .collect()
}

/// Options that change geometry, drawn more often than the others where that matters.
const GEOMETRY_NAMES: &[&str] = &[
    "rs", "s", "w", "h", "mw", "mh", "z", "dpr", "el", "ex", "exar", "g", "c", "pd", "rot", "fl",
    "mrd", "t",
];

/// Words the options take, and numbers at the edges of every parser.
const WORDS: &[&str] = &[
    "fit",
    "fill",
    "fill-down",
    "force",
    "auto",
    "ce",
    "no",
    "so",
    "ea",
    "we",
    "nowe",
    "noea",
    "sowe",
    "soea",
    "sm",
    "fp",
    "re",
    "jpg",
    "jpeg",
    "png",
    "webp",
    "avif",
    "gif",
    "bmp",
    "tiff",
    "svg",
    "fff",
    "ff0000",
    "000",
    "t",
    "true",
    "True",
    "1",
    "0",
    "false",
    "",
    "x",
    "-",
    "NaN",
    "inf",
    "-inf",
    "1e308",
    "-1e308",
    "1e-320",
    "4294967396",
    "4294967295",
    "4294967296",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775808",
    "0.0000001",
    "-0",
    "+7",
    "0.5",
    "1.5",
    "16383",
    "16384",
    "100",
    "101",
    "1000",
    "a",
    "b",
    "default",
];

/// Mostly plausible arguments (so that many lists parse), often an edge case.
fn argument() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u32..20).prop_map(|n| n.to_string()),
        3 => (0u32..2000).prop_map(|n| n.to_string()),
        5 => select(WORDS).prop_map(str::to_owned),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| f.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:e}")),
        1 => (0u32..4, 0u32..1000).prop_map(|(a, b)| format!("{a}.{b}")),
        1 => "[^:/]{0,10}",
    ]
}

/// An option segment: a real name or alias and zero to five arguments.
fn segment_named(names: Vec<&'static str>) -> impl Strategy<Value = String> {
    (select(names), prop::collection::vec(argument(), 0..6)).prop_map(|(name, args)| {
        let mut s = name.to_owned();
        for a in args {
            s.push(':');
            s.push_str(&a);
        }
        s
    })
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => segment_named(option_names()),
        1 => segment_named(GEOMETRY_NAMES.to_vec()),
    ]
}

/// A segment, or any text at all.
fn any_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => segment(),
        1 => "[^/]{0,20}",
        1 => any::<String>(),
    ]
}

/// A parse context with presets (`a` applies itself: the recursion guard) and, when asked,
/// a `default` preset; security options allowed or not.
fn context(with_default: bool, allow_security: bool) -> ParseContext {
    let mut presets = HashMap::new();
    presets.insert(
        "a".to_owned(),
        vec!["rs:fill:30:20".to_owned(), "pr:a".to_owned()],
    );
    presets.insert("b".to_owned(), vec!["q:70".to_owned(), "bl:1".to_owned()]);
    if with_default {
        presets.insert("default".to_owned(), vec!["q:80".to_owned()]);
    }
    ParseContext {
        presets,
        allow_security_options: allow_security,
        now_unix: Some(1_000_000),
    }
}

/// Parses `segments`, keeping each one only if the list still parses with it: options that
/// parse, built from every kind of segment.
fn parse_what_parses(segments: Vec<String>, ctx: &ParseContext) -> Options {
    let mut kept: Vec<String> = Vec::new();
    for s in segments {
        kept.push(s);
        if options::parse(&kept, ctx).is_err() {
            kept.pop();
        }
    }
    options::parse(&kept, ctx).unwrap_or_default()
}

/// The canonical form, read back as option segments.
fn canonical_segments(o: &Options) -> Vec<String> {
    let c = o.canonical();
    if c.is_empty() {
        Vec::new()
    } else {
        c.split('/').map(str::to_owned).collect()
    }
}

/// Whether a part of the canonical form means what it says when read as a URL option. Two
/// kinds do not, on purpose of the cache-key format: the security resolutions are written
/// in pixels where the URL takes megapixels, and free text (`cachebuster`, `filename`) is
/// percent-encoded where the URL takes it as it is.
fn reads_back(part: &str) -> bool {
    match url::split_option(part).0 {
        "max_src_resolution" | "max_animation_frame_resolution" => false,
        "cachebuster" | "filename" => !part.contains('%'),
        _ => true,
    }
}

proptest! {
    #![proptest_config(config(2000))]

    /// Any list of segments parses or is refused with an `OptionsError` naming one of its
    /// segments (or a preset's); what parses has a canonical form, and so does the result
    /// of an extension.
    #[test]
    fn options_parse_never_panics(
        segments in prop::collection::vec(any_segment(), 0..8),
        with_default in any::<bool>(),
        allow_security in any::<bool>(),
        extension in prop_oneof![select(WORDS).prop_map(str::to_owned), any::<String>()],
    ) {
        let ctx = context(with_default, allow_security);
        match options::parse(&segments, &ctx) {
            Ok(mut o) => {
                let _ = o.canonical();
                if o.apply_extension(&extension).is_ok() {
                    let _ = o.canonical();
                }
            }
            Err(e) => {
                let about = segments.iter().any(|s| s == e.segment())
                    || ctx.presets.values().flatten().any(|s| s == e.segment())
                    || e.segment().starts_with("preset:");
                prop_assert!(about, "{e} is not about {segments:?}");
                prop_assert!(!e.to_string().is_empty());
            }
        }
        let names: Vec<String> = segments.iter().map(|s| s.replace(':', "")).collect();
        let _ = options::parse_presets_only(&names, &ctx);
    }

    /// The canonical form is a fixed point: read back as option segments onto imgproxy's
    /// defaults, it parses, to options whose canonical form is the same text (except the
    /// parts that are not URL text, see [`reads_back`]). Every part of it is an option's
    /// full name and its arguments.
    #[test]
    fn options_canonical_form_is_a_fixed_point(
        segments in prop::collection::vec(segment(), 1..8),
        allow_security in any::<bool>(),
    ) {
        let ctx = context(false, allow_security);
        let o = parse_what_parses(segments, &ctx);
        let canonical = o.canonical();
        let url_text = |o: &Options| -> Vec<String> {
            canonical_segments(o).into_iter().filter(|p| reads_back(p)).collect()
        };
        let parts = url_text(&o);
        let again = options::parse(&parts, &context(false, allow_security)).map_err(|e| {
            TestCaseError::fail(format!("canonical `{canonical}` does not parse: {e}"))
        })?;
        let parts_again = url_text(&again);
        prop_assert_eq!(parts_again, parts, "from `{}`", canonical);
        let full_names: Vec<&str> = OPTIONS.iter().map(|d| d.names[0]).collect();
        for part in canonical_segments(&o) {
            let (name, args) = url::split_option(&part);
            prop_assert!(full_names.contains(&name), "`{name}` in `{canonical}`");
            prop_assert!(!args.is_empty(), "`{part}` in `{canonical}`");
        }
    }

    /// Options apply left to right, later ones overriding earlier ones: a list applied
    /// twice gives what it gives once.
    #[test]
    fn options_repeating_a_list_changes_nothing(
        segments in prop::collection::vec(segment(), 1..8),
        allow_security in any::<bool>(),
    ) {
        let ctx = context(true, allow_security);
        if let Ok(once) = options::parse(&segments, &ctx) {
            let twice: Vec<String> = segments.iter().chain(&segments).cloned().collect();
            let twice = options::parse(&twice, &ctx)
                .map_err(|e| TestCaseError::fail(format!("{segments:?} twice: {e}")))?;
            prop_assert_eq!(twice.canonical(), once.canonical());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Signatures (src/imaging/signature.rs)
// ---------------------------------------------------------------------------------------

fn hex_bytes(len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<u8>(), len).prop_map(hex::encode)
}

/// One to three key/salt pairs (keys never empty).
fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((hex_bytes(1..40), hex_bytes(0..24)), 1..4)
}

fn signer(pairs: &[(String, String)], size: usize) -> Result<Signer, TestCaseError> {
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    let salts: Vec<&str> = pairs.iter().map(|(_, s)| s.as_str()).collect();
    Signer::new(&keys, &salts, size).map_err(|e| TestCaseError::fail(format!("signer: {e}")))
}

/// What the HMAC covers: the signed part with `/` in front when it lacks one.
fn normalised(part: &str) -> Cow<'_, str> {
    if part.starts_with('/') {
        Cow::Borrowed(part)
    } else {
        Cow::Owned(format!("/{part}"))
    }
}

/// `text` with one character changed, inserted or removed at `at`.
fn tamper(text: &str, at: Index, how: u8, with: char) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let i = at.index(chars.len() + 1);
    match how % 3 {
        0 if i < chars.len() => chars[i] = with,
        1 if i < chars.len() => {
            chars.remove(i);
        }
        _ => chars.insert(i, with),
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(config(1000))]

    /// A path signed with any configured pair verifies, directly and as a whole request
    /// path split by the URL parser, whatever the signature size.
    #[test]
    fn signature_signed_paths_verify(
        pairs in pairs(),
        which in any::<Index>(),
        size in 1usize..=32,
        w in well_formed(),
    ) {
        prop_assume!(!ambiguous(&w));
        let all = signer(&pairs, size)?;
        let one = signer(&pairs[which.index(pairs.len())..][..1], size)?;
        let signature = one.sign(&w.signed_part);
        prop_assert_eq!(all.verify(&signature, &w.signed_part), Ok(()));
        // The signer's own request path, split as a request.
        let path = all.signed_path(&w.signed_part);
        let parsed = url::parse_path(&path)
            .map_err(|e| TestCaseError::fail(format!("{path}: {e}")))?;
        prop_assert_eq!(parsed.signed_part.as_ref(), w.signed_part.as_str());
        prop_assert_eq!(all.verify(parsed.signature, &parsed.signed_part), Ok(()));
        // A part given without its leading `/` is signed as if it had one.
        prop_assert_eq!(all.verify(&signature, &w.signed_part[1..]), Ok(()));
    }

    /// With a signature of 8 bytes or more (a random match is out of reach): changing the
    /// path, or any bit of the signature, is refused; changing a character of the signature
    /// text is refused unless it only touched the trailing bits that Go's lenient decoding
    /// ignores.
    #[test]
    fn signature_tampering_is_refused(
        pairs in pairs(),
        size in 8usize..=32,
        part in prop_oneof![any::<String>(), well_formed().prop_map(|w| w.signed_part)],
        at in any::<Index>(),
        how in any::<u8>(),
        with in any::<char>(),
        bit in 0u8..8,
        b64 in select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".to_vec()),
    ) {
        let s = signer(&pairs, size)?;
        let signature = s.sign(&part);
        prop_assert_eq!(s.verify(&signature, &part), Ok(()));

        let other = tamper(&part, at, how, with);
        if normalised(&other) != normalised(&part) {
            prop_assert_eq!(s.verify(&signature, &other), Err(SignatureError::Invalid));
        }

        let mut tag = URL_SAFE_NO_PAD
            .decode(&signature)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let i = at.index(tag.len());
        tag[i] ^= 1 << bit;
        let flipped = URL_SAFE_NO_PAD.encode(&tag);
        prop_assert_eq!(s.verify(&flipped, &part), Err(SignatureError::Invalid));

        let mut text = signature.clone().into_bytes();
        let i = at.index(text.len());
        text[i] = b64;
        let text = String::from_utf8(text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let same_bytes =
            BASE64_URL_LENIENT.decode(&text).ok() == BASE64_URL_LENIENT.decode(&signature).ok();
        prop_assert_eq!(s.verify(&text, &part).is_ok(), same_bytes, "{} for {}", text, signature);
    }

    /// Arbitrary signature texts for arbitrary paths are refused (and never panic); a
    /// trusted signature is accepted for any path; configuration text never panics and a
    /// signer built from it has as many pairs as keys.
    #[test]
    fn signature_arbitrary_input_is_refused(
        pairs in pairs(),
        signature in prop_oneof![path_like(), "[A-Za-z0-9_=-]{0,50}"],
        part in path_like(),
        trusted in "[A-Za-z0-9_-]{1,20}",
        keys in prop_oneof![any::<String>(), "[0-9a-f, ]{0,40}"],
        salts in prop_oneof![any::<String>(), "[0-9a-f, ]{0,40}"],
        size in 0usize..40,
    ) {
        let s = signer(&pairs, 32)?;
        prop_assume!(signature != s.sign(&part));
        prop_assert_eq!(s.verify(&signature, &part), Err(SignatureError::Invalid));
        let s = s.with_trusted_signatures([trusted.clone()]);
        prop_assert_eq!(s.verify(&trusted, &part), Ok(()));

        match Signer::from_config(&keys, &salts, size) {
            Ok(Some(s)) => {
                prop_assert_eq!(s.pair_count(), split_list(&keys).len());
                prop_assert!((1..=32).contains(&s.signature_size()));
            }
            Ok(None) => prop_assert!(keys.trim().is_empty() && salts.trim().is_empty()),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Geometry (src/imaging/geometry.rs)
// ---------------------------------------------------------------------------------------

/// Source sides: tiny, ordinary, larger than any result, and anything at all (0 too).
fn side() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), 1u32..8, 1u32..600, 1u32..20_000, any::<u32>(),]
}

fn limits() -> impl Strategy<Value = Limits> {
    let dim = || prop_oneof![Just(0u32), 1u32..64, 1u32..20_000, any::<u32>()];
    (dim(), dim()).prop_map(|(max_result_dimension, max_output_dimension)| Limits {
        max_result_dimension,
        max_output_dimension,
    })
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        2 => select(
            &[
                0.0,
                -0.0,
                0.5,
                1.0,
                2.0,
                16383.0,
                16384.0,
                1e-300,
                1e300,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::MIN_POSITIVE,
            ][..]
        ),
        2 => -20_000.0..20_000.0f64,
        1 => 0.0..1.0f64,
        1 => any::<f64>(),
    ]
}

fn dimension() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), 0u32..50, 0u32..20_000, any::<u32>()]
}

fn gravity() -> impl Strategy<Value = Gravity> {
    (select(GravityType::ALL.to_vec()), float(), float()).prop_map(|(kind, x, y)| Gravity {
        kind,
        x,
        y,
    })
}

/// Options as any caller could build them, the parser's bounds ignored.
fn raw_options() -> impl Strategy<Value = Options> {
    (
        (
            select(ResizingType::ALL.to_vec()),
            dimension(),
            dimension(),
            dimension(),
            dimension(),
            float(),
            float(),
            float(),
            any::<bool>(),
        ),
        (
            (any::<bool>(), gravity()),
            (any::<bool>(), gravity()),
            gravity(),
            (float(), float(), prop::option::of(gravity())),
            (dimension(), dimension(), dimension(), dimension()),
            prop_oneof![select(vec![0u16, 90, 180, 270]), any::<u16>()],
            (any::<bool>(), any::<bool>()),
            prop::option::of(prop_oneof![any::<i64>(), -5i64..20_000]),
        ),
    )
        .prop_map(
            |(
                (resizing_type, width, height, min_width, min_height, zw, zh, dpr, enlarge),
                (ext, ear, gravity, crop, pad, rotate, flip, mrd),
            )| Options {
                resizing_type,
                width,
                height,
                min_width,
                min_height,
                zoom_width: zw,
                zoom_height: zh,
                dpr,
                enlarge,
                extend: Extend {
                    enabled: ext.0,
                    gravity: ext.1,
                },
                extend_aspect_ratio: Extend {
                    enabled: ear.0,
                    gravity: ear.1,
                },
                gravity,
                crop: Crop {
                    width: crop.0,
                    height: crop.1,
                    gravity: crop.2,
                },
                padding: Padding {
                    top: pad.0,
                    right: pad.1,
                    bottom: pad.2,
                    left: pad.3,
                },
                rotate,
                flip: Flip {
                    horizontal: flip.0,
                    vertical: flip.1,
                },
                security: SecurityOverrides {
                    max_result_dimension: mrd,
                    ..SecurityOverrides::default()
                },
                ..Options::default()
            },
        )
}

/// Options the parser accepts, from every kind of segment.
fn parsed_options() -> impl Strategy<Value = Options> {
    (prop::collection::vec(segment(), 0..8), any::<bool>())
        .prop_map(|(segments, allow)| parse_what_parses(segments, &context(false, allow)))
}

/// A plan for `o` on a `w` × `h` source: a request error, or a plan that validates, whose
/// every image is 1..=ceiling a side, whose result is within `max_result_dimension`, and
/// whose shrink-on-load variants validate with the same result size. Never an inconsistent
/// plan.
fn check_plan(o: &Options, w: u32, h: u32, limits: &Limits) -> Result<(), TestCaseError> {
    let p = match geometry::plan(o, w, h, limits) {
        Ok(p) => p,
        Err(GeometryError::InconsistentPlan(e)) => {
            return Err(TestCaseError::fail(format!(
                "inconsistent plan on {w}x{h}: {e}"
            )));
        }
        Err(e) => {
            let empty = matches!(e, GeometryError::EmptySource { .. });
            prop_assert!(w > 0 && h > 0 || empty, "{w}x{h}: {e}");
            prop_assert!(!e.to_string().is_empty());
            return Ok(());
        }
    };
    prop_assert!(w > 0 && h > 0);
    prop_assert_eq!(p.validate(), Ok(()));
    let ceiling = limits.ceiling();
    prop_assert!(ceiling <= geometry::MAX_DIMENSION);
    let mut sizes = vec![(p.width, p.height)];
    sizes.extend(p.resize.map(|r| (r.width, r.height)));
    sizes.extend(p.result_crop.map(|r| (r.width, r.height)));
    for e in [p.extend, p.extend_aspect_ratio].into_iter().flatten() {
        sizes.push((e.width, e.height));
    }
    for (sw, sh) in sizes {
        prop_assert!(
            (1..=ceiling).contains(&sw) && (1..=ceiling).contains(&sh),
            "{sw}x{sh} over the ceiling {ceiling} on {w}x{h}: {p:?}"
        );
    }
    let max_dim = o
        .security
        .max_result_dimension
        .unwrap_or(i64::from(limits.max_result_dimension));
    if max_dim > 0 {
        prop_assert!(
            i64::from(p.width.max(p.height)) <= max_dim,
            "{}x{} over max_result_dimension {max_dim}",
            p.width,
            p.height
        );
    }
    for k in [2, 4, 8] {
        if p.jpeg_shrink() >= k {
            let d = p.for_decoded_size(w.div_ceil(k), h.div_ceil(k));
            prop_assert_eq!(d.validate(), Ok(()), "decoded at 1/{}", k);
            prop_assert_eq!((d.width, d.height), (p.width, p.height));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(2000))]

    /// Options the parser accepts, on any source size, under any limits.
    #[test]
    fn geometry_plans_what_the_parser_accepts(
        o in parsed_options(),
        w in side(),
        h in side(),
        limits in limits(),
    ) {
        check_plan(&o, w, h, &limits)?;
    }

    /// Options with any values at all (NaN, infinities, huge sizes, any rotation): refused
    /// or planned within bounds, never a panic.
    #[test]
    fn geometry_plans_arbitrary_values(
        o in raw_options(),
        w in side(),
        h in side(),
        limits in limits(),
    ) {
        check_plan(&o, w, h, &limits)?;
    }
}

// ---------------------------------------------------------------------------------------
// Header probe and decoders (src/imaging/decode.rs, avif.rs)
// ---------------------------------------------------------------------------------------

/// The files in `../shared/images`, by name; a missing or empty folder fails the test.
fn seeds() -> &'static [(String, Vec<u8>)] {
    static SEEDS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/images");
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "the decoder fuzz targets need the test images in {}: {e}",
                dir.display()
            )
        });
        let mut seeds: Vec<(String, Vec<u8>)> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_none_or(|x| x != "md"))
            .map(|p| {
                let bytes = std::fs::read(&p)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
                let name = p
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                (name, bytes)
            })
            .collect();
        // Formats the shared photographs do not include: an SVG written here, and a HEIC
        // made from a photograph with Debian's heif-enc when it is installed (the test
        // setup installs it).
        seeds.push(("generated.svg".into(), SVG_SEED.as_bytes().to_vec()));
        if let Some(heic) = heic_seed(&dir.join("rocket-640x427.jpg")) {
            seeds.push(("generated.heic".into(), heic));
        }
        seeds.sort();
        assert!(
            seeds.len() >= 10,
            "expected the test images in {}, found {} files",
            dir.display(),
            seeds.len()
        );
        seeds
    })
}

const SVG_SEED: &str = r##"<?xml version="1.0"?>
<!DOCTYPE svg [<!ENTITY c "#1e3a8a">]>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="64" height="48" viewBox="0 0 64 48">
<defs><linearGradient id="g"><stop offset="0" stop-color="&c;"/><stop offset="1" stop-color="#fff"/></linearGradient>
<filter id="f"><feGaussianBlur stdDeviation="2"/></filter><rect id="r" width="8" height="8"/></defs>
<rect width="64" height="48" fill="url(#g)"/><use xlink:href="#r" x="4" y="4" filter="url(#f)"/>
<circle cx="40" cy="20" r="10" style="fill:red;stroke:url(#g)"/><text x="2" y="40">Hi</text>
<image width="4" height="4" href="data:image/gif;base64,R0lGODlhAQABAAAAACw="/>
</svg>"##;

/// A HEIC made from `jpeg` by heif-enc (`None` when heif-enc is not installed).
fn heic_seed(jpeg: &Path) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().ok()?;
    let out = dir.path().join("seed.heic");
    let status = std::process::Command::new("heif-enc")
        .args(["-q", "40"])
        .arg(jpeg)
        .arg("-o")
        .arg(&out)
        .output()
        .ok()?
        .status;
    status.success().then(|| std::fs::read(&out).ok()).flatten()
}

/// The first bytes, where headers live; most mutations land there.
const HEADER: usize = 1024;

/// A position in the file: in its header, or anywhere.
#[derive(Debug, Clone, Copy)]
struct Spot {
    header: bool,
    index: Index,
}

impl Spot {
    /// A position in `0..len` (0 when empty).
    fn of(self, len: usize) -> usize {
        match len {
            0 => 0,
            _ if self.header => self.index.index(len.min(HEADER)),
            _ => self.index.index(len),
        }
    }
}

fn spot() -> impl Strategy<Value = Spot> {
    (prop::bool::weighted(0.7), any::<Index>()).prop_map(|(header, index)| Spot { header, index })
}

/// One change to a file.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit {
        at: Spot,
        bit: u8,
    },
    SetByte {
        at: Spot,
        byte: u8,
    },
    Truncate {
        at: Spot,
    },
    /// Keeps only the first few bytes: the headers' own length checks.
    KeepHead {
        len: usize,
    },
    Insert {
        at: Spot,
        bytes: Vec<u8>,
    },
    Remove {
        at: Spot,
        len: usize,
    },
    /// Copies a run of the file elsewhere in it (a repeated chunk or marker).
    Repeat {
        from: Spot,
        at: Spot,
        len: usize,
    },
    /// Header bytes of another test file, written over this one's or inserted.
    Splice {
        seed: Index,
        from: usize,
        at: Spot,
        len: usize,
        insert: bool,
    },
    /// A size-like number (60000, 65535, 2^31-1, ...) written at a header position.
    BigNumber {
        at: Spot,
        value: u32,
        width: usize,
        big_endian: bool,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (spot(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        3 => (spot(), any::<u8>()).prop_map(|(at, byte)| Mutation::SetByte { at, byte }),
        1 => spot().prop_map(|at| Mutation::Truncate { at }),
        1 => (0usize..48).prop_map(|len| Mutation::KeepHead { len }),
        1 => (spot(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (spot(), 1usize..64).prop_map(|(at, len)| Mutation::Remove { at, len }),
        1 => (spot(), spot(), 1usize..256)
            .prop_map(|(from, at, len)| Mutation::Repeat { from, at, len }),
        2 => (any::<Index>(), 0usize..HEADER, spot(), 1usize..128, any::<bool>())
            .prop_map(|(seed, from, at, len, insert)| {
                Mutation::Splice { seed, from, at, len, insert }
            }),
        3 => (
            spot(),
            select(vec![60_000u32, 40_000, 65_535, 16_383, 16_384, 0, 1, 0x7fff_ffff, u32::MAX]),
            select(vec![2usize, 3, 4]),
            any::<bool>(),
        )
            .prop_map(|(at, value, width, big_endian)| {
                Mutation::BigNumber { at, value, width, big_endian }
            }),
    ]
}

/// Rewrites the checksum of every complete PNG chunk, so that a mutation reaches the
/// decoder rather than its CRC check.
fn fix_png_crcs(b: &mut [u8]) {
    if !b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return;
    }
    let mut i = 8;
    while i + 12 <= b.len() {
        let len = u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
        let Some(end) = (i + 8).checked_add(len).filter(|e| e + 4 <= b.len()) else {
            break;
        };
        let crc = crc32fast::hash(&b[i + 4..end]);
        b[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        i = end + 4;
    }
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    match m {
        Mutation::FlipBit { at, bit } => {
            if len > 0 {
                bytes[at.of(len)] ^= 1 << bit;
            }
        }
        Mutation::SetByte { at, byte } => {
            if len > 0 {
                bytes[at.of(len)] = *byte;
            }
        }
        Mutation::Truncate { at } => bytes.truncate(at.of(len)),
        Mutation::KeepHead { len: n } => bytes.truncate(*n),
        Mutation::Insert { at, bytes: new } => {
            let i = at.of(len + 1);
            bytes.splice(i..i, new.iter().copied());
        }
        Mutation::Remove { at, len: n } => {
            let i = at.of(len);
            bytes.drain(i..(i + n).min(len));
        }
        Mutation::Repeat { from, at, len: n } => {
            let i = from.of(len);
            let run: Vec<u8> = bytes[i..(i + n).min(len)].to_vec();
            let j = at.of(len + 1);
            bytes.splice(j..j, run);
        }
        Mutation::Splice {
            seed,
            from,
            at,
            len: n,
            insert,
        } => {
            let all = seeds();
            let other = &all[seed.index(all.len())].1;
            let from = (*from).min(other.len());
            let run = &other[from..(from + n).min(other.len())];
            let j = at.of(len + 1);
            if *insert {
                bytes.splice(j..j, run.iter().copied());
            } else {
                let end = (j + run.len()).min(len);
                bytes.splice(j..end, run.iter().copied());
            }
        }
        Mutation::BigNumber {
            at,
            value,
            width,
            big_endian,
        } => {
            let raw = if *big_endian {
                value.to_be_bytes()[4 - width..].to_vec()
            } else {
                value.to_le_bytes()[..*width].to_vec()
            };
            let j = at.of(len);
            let end = (j + raw.len()).min(len);
            bytes.splice(j..end, raw);
        }
    }
}

/// How a decode is asked for: shrink (including nonsense), auto-rotation, frames, a small
/// pixel limit (a header claiming more must be refused), and the orientation a forged
/// probe claims.
fn decode_options() -> impl Strategy<Value = (DecodeOptions, u8)> {
    (
        select(vec![1.0, 0.5, 0.25, 0.125, 0.3, 0.0, -1.0, 2.0, f64::NAN]),
        any::<bool>(),
        0u32..=4,
        prop_oneof![
            1 => Just(4_096u64),
            2 => Just(300_000),
            2 => Just(1_000_000),
            4 => Just(2_100_000),
        ],
        0u8..=9,
    )
        .prop_map(
            |(shrink, auto_rotate, max_frames, max_pixels, orientation)| {
                (
                    DecodeOptions {
                        shrink,
                        auto_rotate,
                        max_frames,
                        max_pixels,
                    },
                    orientation,
                )
            },
        )
}

thread_local! {
    /// Whether panics on this thread are being recorded rather than reported.
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    /// Panics recorded on this thread: message and location.
    static CAUGHT: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
}

/// Installs (once) a panic hook that records the panics of watched calls. mozjpeg reports
/// errors with `resume_unwind`, which skips the hook, so every recorded panic is a real one
/// (an index out of range, an overflow, an `unwrap`), even when `decode`'s `catch_unwind`
/// turns it into a `Corrupt` error.
fn install_panic_recorder() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if WATCHING.with(Cell::get) {
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let location = info
                    .location()
                    .map_or_else(String::new, |l| format!("{}:{}", l.file(), l.line()));
                CAUGHT.with(|c| c.borrow_mut().push((message, location)));
            } else {
                previous(info);
            }
        }));
    });
}

/// Whether a panic location is in a dependency (the registry's sources) rather than ours.
fn in_dependency(location: &str) -> bool {
    location.contains("cargo/registry/")
}

/// Runs `f`, failing the case on any panic in our own code (whether `decode`'s guard
/// caught it or not). A panic inside a dependency is tolerated (the guard is there for it)
/// and reported on the test's output; `None` when it escaped `f`.
fn watched<T>(what: &str, f: impl FnOnce() -> T) -> Result<Option<T>, TestCaseError> {
    install_panic_recorder();
    WATCHING.with(|w| w.set(true));
    let out = std::panic::catch_unwind(AssertUnwindSafe(f));
    WATCHING.with(|w| w.set(false));
    for (message, location) in CAUGHT.with(|c| c.take()) {
        if !in_dependency(&location) {
            return Err(TestCaseError::fail(format!(
                "{what} panicked in our code: {message} at {location}"
            )));
        }
        println!("{what}: a dependency panicked: {message} at {location}");
    }
    Ok(out.ok())
}

/// [`watched`] for the entry points that promise never to panic at all (`sniff`, `probe`,
/// `decode`: the last two guard every codec call).
fn unpanicking<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    watched(what, f)?.ok_or_else(|| TestCaseError::fail(format!("{what} let a panic escape")))
}

/// The peak virtual memory of this process in KiB (Linux), to bound what decoding reserved.
fn vm_peak_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmPeak:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// Most a decode may add to the process's peak address space: a pixel limit of 2.1
/// megapixels needs tens of MiB; a header obeyed at 40000×40000 would need gigabytes.
const MAX_PEAK_GROWTH_KIB: u64 = 1 << 20;

/// What any decode answer satisfies: an error with a message, or a picture as `Picture`
/// promises (frames, equal sizes, `Rgb8`/`Rgba8`) within the limits. With the file's own
/// probe, all frames together are within the pixel limit.
fn check_decoded(
    out: &Result<Decoded, DecodeError>,
    opts: &DecodeOptions,
    whole_limit: bool,
) -> Result<(), TestCaseError> {
    let d = match out {
        Ok(d) => d,
        Err(e) => {
            prop_assert!(!e.to_string().is_empty());
            return Ok(());
        }
    };
    let frames = &d.picture.frames;
    prop_assert!(!frames.is_empty(), "no frames");
    prop_assert!(
        frames.len() <= opts.max_frames.max(1) as usize,
        "{} frames",
        frames.len()
    );
    let (w, h) = (d.picture.width(), d.picture.height());
    prop_assert!(w >= 1 && h >= 1, "{w}x{h} picture");
    prop_assert!(
        u64::from(w) * u64::from(h) <= opts.max_pixels,
        "{w}x{h} over {}",
        opts.max_pixels
    );
    for f in frames {
        prop_assert_eq!((f.image.width(), f.image.height()), (w, h));
        prop_assert!(matches!(
            f.image,
            DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_)
        ));
    }
    if whole_limit {
        let total = u64::from(w) * u64::from(h) * frames.len() as u64;
        prop_assert!(
            total <= opts.max_pixels,
            "{} frames of {w}x{h} over {}",
            frames.len(),
            opts.max_pixels
        );
    }
    prop_assert!([1, 2, 4, 8].contains(&d.scale_denom));
    prop_assert!((1..=8).contains(&d.orientation));
    Ok(())
}

/// Sniffs, probes and decodes `bytes` every way the server can: `decode` with the file's
/// own probe, `decode` behind a probe that claims a 1×1 image (so the decoders' own size
/// checks are what stands between a header and an allocation), and AVIF's decoder
/// directly.
fn check_decoders(
    bytes: &[u8],
    opts: &DecodeOptions,
    orientation: u8,
) -> Result<(), TestCaseError> {
    let sniffed = unpanicking("sniff", || decode::sniff(bytes))?;
    let probed = unpanicking("probe", || decode::probe(bytes))?;
    match &probed {
        Ok(p) => {
            prop_assert_eq!(Some(p.format), sniffed);
            prop_assert!(p.width >= 1 && p.height >= 1 && p.frames >= 1, "{:?}", p);
            prop_assert!((1..=8).contains(&p.orientation), "{:?}", p);
            let (ow, oh) = p.oriented_size();
            prop_assert_eq!(
                u64::from(ow) * u64::from(oh),
                u64::from(p.width) * u64::from(p.height)
            );
            let out = unpanicking("decode", || decode::decode(bytes, p, opts))?;
            check_decoded(&out, opts, true)?;
            let frames = p.frames.min(opts.max_frames.max(1));
            let claimed = u64::from(p.width) * u64::from(p.height) * u64::from(frames);
            // A vector source is drawn smaller instead (`check_decoded` bounds the
            // picture); every raster source over the limit is refused.
            if claimed > opts.max_pixels && p.format != ImageFormat::Svg {
                prop_assert!(
                    matches!(out, Err(DecodeError::OverLimit { .. })),
                    "{:?} over {} decoded: {:?}",
                    p,
                    opts.max_pixels,
                    out.as_ref()
                        .map(|d| (d.picture.width(), d.picture.height()))
                );
            }
        }
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    if let Some(format) = sniffed {
        let forged = Probe {
            format,
            width: 1,
            height: 1,
            frames: 1,
            orientation,
            has_alpha: None,
        };
        let out = unpanicking("decode behind a forged probe", || {
            decode::decode(bytes, &forged, opts)
        })?;
        check_decoded(&out, opts, false)?;
    }
    if matches!(sniffed, Some(ImageFormat::Avif | ImageFormat::Heic)) {
        unpanicking("avif::turns_quarter", || avif::turns_quarter(bytes))?;
        // Called directly, without `decode`'s guard: a dependency's panic may escape.
        if let Some(Ok(d)) = watched("avif::decode", || avif::decode(bytes, opts.max_pixels))? {
            let (w, h) = (d.image.width(), d.image.height());
            prop_assert!(
                u64::from(w) * u64::from(h) <= opts.max_pixels,
                "AVIF {w}x{h}"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    /// Every test file, changed by a few bit flips, byte writes, truncations (to a few
    /// bytes, too), insertions, removals, repeated runs, header bytes of other files and
    /// size-like numbers (PNG checksums then fixed, half the time, so that the change
    /// reaches the decoder), through the sniffer, the probe and every decoder with a small
    /// pixel limit: an answer or an error, never a panic in our code, never a picture over
    /// the limit, and no decode reserves more than a bounded amount of memory.
    #[test]
    fn decoders_survive_mutated_files(
        seed in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 0..6),
        fix_crcs in any::<bool>(),
        (opts, orientation) in decode_options(),
    ) {
        let all = seeds();
        let (name, original) = &all[seed.index(all.len())];
        let mut bytes = original.clone();
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        if fix_crcs {
            fix_png_crcs(&mut bytes);
        }
        let before = vm_peak_kib();
        check_decoders(&bytes, &opts, orientation)
            .map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
        if let (Some(before), Some(after)) = (before, vm_peak_kib()) {
            prop_assert!(
                after.saturating_sub(before) < MAX_PEAK_GROWTH_KIB,
                "{name}: decoding raised the peak address space by {} MiB", (after - before) >> 10
            );
        }
    }
}

/// The offset of a JPEG's first frame header (SOFn), walking the segments.
fn jpeg_sof(b: &[u8]) -> Option<usize> {
    let mut i = 2;
    while i + 4 <= b.len() {
        if b[i] != 0xFF {
            return None;
        }
        let m = b[i + 1];
        if (0xC0..=0xCF).contains(&m) && !matches!(m, 0xC4 | 0xC8 | 0xCC) {
            return Some(i);
        }
        i += 2 + usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
    }
    None
}

/// `bytes` with its header claiming `claim` × `claim` pixels (as close as the format can
/// say it: WebP's simple formats stop at 16383), PNG's checksum fixed so that the decoder
/// reads the claim. `None` for the formats not rewritten.
fn claim_size(bytes: &[u8], claim: u32) -> Option<Vec<u8>> {
    let mut b = bytes.to_vec();
    let short = u16::try_from(claim).unwrap_or(u16::MAX);
    match decode::sniff(bytes)? {
        ImageFormat::Png => {
            b.get_mut(16..24)?
                .copy_from_slice(&[claim.to_be_bytes(), claim.to_be_bytes()].concat());
            let crc = crc32fast::hash(b.get(12..29)?);
            b.get_mut(29..33)?.copy_from_slice(&crc.to_be_bytes());
        }
        ImageFormat::Gif => {
            let side = short.to_le_bytes();
            b.get_mut(6..10)?.copy_from_slice(&[side, side].concat());
        }
        ImageFormat::Jpeg => {
            let sof = jpeg_sof(&b)?;
            let side = short.to_be_bytes();
            b.get_mut(sof + 5..sof + 9)?
                .copy_from_slice(&[side, side].concat());
        }
        ImageFormat::Webp => match b.get(12..16)? {
            b"VP8 " => {
                let side = 0x3fffu16.to_le_bytes();
                b.get_mut(26..30)?.copy_from_slice(&[side, side].concat());
            }
            b"VP8L" => {
                let old = u32::from_le_bytes(b.get(21..25)?.try_into().ok()?);
                let new = (old & 0xF000_0000) | 0x3fff | (0x3fff << 14);
                b.get_mut(21..25)?.copy_from_slice(&new.to_le_bytes());
            }
            b"VP8X" => {
                let side = (claim.min(1 << 24) - 1).to_le_bytes();
                b.get_mut(24..27)?.copy_from_slice(&side[..3]);
                b.get_mut(27..30)?.copy_from_slice(&side[..3]);
            }
            _ => return None,
        },
        ImageFormat::Avif => {
            let spots: Vec<usize> = b
                .windows(4)
                .enumerate()
                .filter(|(_, w)| *w == b"ispe")
                .map(|(i, _)| i)
                .collect();
            for i in spots {
                b.get_mut(i + 8..i + 16)?
                    .copy_from_slice(&[claim.to_be_bytes(), claim.to_be_bytes()].concat());
            }
        }
        _ => return None,
    }
    Some(b)
}

/// Every test file whose header says 60000×60000 (a decompression bomb): the probe reports
/// the claim, `decode` refuses it from the probe, and behind a probe that claims 1×1 each
/// decoder refuses it from its own header; nothing reserves the gigabytes the claim needs.
#[test]
fn decoders_refuse_huge_header_claims() {
    let opts = DecodeOptions {
        max_pixels: 1_000_000,
        max_frames: 4,
        ..DecodeOptions::default()
    };
    let before = vm_peak_kib();
    let mut formats = Vec::new();
    for (name, bytes) in seeds() {
        let Some(claimed) = claim_size(bytes, 60_000) else {
            continue;
        };
        let p = decode::probe(&claimed)
            .unwrap_or_else(|e| panic!("{name}: the rewritten header does not probe: {e}"));
        assert!(
            p.pixels() >= 16_383 * 16_383,
            "{name}: the probe missed the claim: {p:?}"
        );
        let out = decode::decode(&claimed, &p, &opts);
        assert!(
            matches!(out, Err(DecodeError::OverLimit { .. })),
            "{name}: {:?}",
            out.map(|d| (d.picture.width(), d.picture.height()))
        );
        let forged = Probe {
            width: 1,
            height: 1,
            frames: 1,
            ..p
        };
        let out = decode::decode(&claimed, &forged, &opts);
        assert!(
            out.is_err(),
            "{name}: decoded {:?} behind a 1x1 probe",
            out.map(|d| (d.picture.width(), d.picture.height()))
        );
        formats.push(p.format);
    }
    for f in [
        ImageFormat::Jpeg,
        ImageFormat::Png,
        ImageFormat::Gif,
        ImageFormat::Webp,
        ImageFormat::Avif,
    ] {
        assert!(formats.contains(&f), "no {f:?} file was rewritten");
    }
    if let (Some(before), Some(after)) = (before, vm_peak_kib()) {
        assert!(
            after.saturating_sub(before) < MAX_PEAK_GROWTH_KIB,
            "the peak address space grew by {} MiB",
            (after - before) >> 10
        );
    }
}

// ---------------------------------------------------------------------------------------
// Admin JSON bodies (the public ones: the transform builder's, a cache purge's parts and
// bucket names; the private body structs of src/admin/api.rs are fuzzed beside them)
// ---------------------------------------------------------------------------------------

/// Field names of the admin API's bodies, so that objects often hit real fields.
const FIELDS: &[&str] = &[
    "bucket",
    "key",
    "width",
    "height",
    "resizing_type",
    "gravity",
    "format",
    "quality",
    "dpr",
    "all",
    "prefix",
    "user",
    "password",
    "name",
    "public",
    "unsigned_images",
    "parts",
    "part",
    "etag",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u32..20_000).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::String),
        select(WORDS).prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![3 => select(FIELDS).prop_map(str::to_owned), 1 => any::<String>()],
                    inner
                ),
                0..10
            )
            .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// A body: a JSON value's text, that text cut short or with a byte changed, or any bytes.
fn json_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => json_value().prop_map(|v| v.to_string().into_bytes()),
        2 => (json_value(), any::<Index>(), any::<u8>(), any::<bool>()).prop_map(
            |(v, at, byte, cut)| {
                let mut b = v.to_string().into_bytes();
                let i = at.index(b.len());
                if cut {
                    b.truncate(i);
                } else {
                    b[i] = byte;
                }
                b
            }
        ),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// A transform builder request with fields of the right types, mostly plausible.
fn build_request_body() -> impl Strategy<Value = Vec<u8>> {
    let side = || prop_oneof![0u32..2000, 0u32..20_000, any::<u32>()];
    (
        prop_oneof![3 => "[a-z0-9][a-z0-9.-]{1,20}[a-z0-9]", 1 => any::<String>()],
        prop_oneof![3 => "\\PC{1,40}", 1 => any::<String>()],
        side(),
        side(),
        select(vec![
            "",
            "fit",
            "fill",
            "fill-down",
            "force",
            "auto",
            "crop",
        ]),
        select(vec![
            "", "ce", "no", "so", "ea", "we", "nowe", "noea", "sowe", "soea", "sm", "fp",
        ]),
        select(vec![
            "", "jpeg", "jpg", "png", "webp", "avif", "gif", "tiff",
        ]),
        prop_oneof![0u32..=100, any::<u32>()],
        select(vec![0.0, 1.0, 1.5, 2.0, 2.345, 5.0, 5.01, -1.0, 0.5, 1e300]),
    )
        .prop_map(
            |(bucket, key, width, height, resizing_type, gravity, format, quality, dpr)| {
                serde_json::json!({
                    "bucket": bucket, "key": key, "width": width, "height": height,
                    "resizing_type": resizing_type, "gravity": gravity, "format": format,
                    "quality": quality, "dpr": dpr,
                })
                .to_string()
                .into_bytes()
            },
        )
}

/// `POST /api/sign`'s body: parsed or refused, built or refused with a message; what is
/// built for a valid bucket name is an image URL the endpoint accepts, naming that very
/// object, in the requested format and size.
fn check_build_request(body: &[u8]) -> Result<(), TestCaseError> {
    let Ok(req) = serde_json::from_slice::<BuildRequest>(body) else {
        return Ok(());
    };
    let built = match req.build() {
        Ok(b) => b,
        Err(e) => {
            prop_assert!(!e.to_string().is_empty());
            return Ok(());
        }
    };
    if validate_bucket_name(&req.bucket).is_err() {
        return Ok(());
    }
    for part in [&built.signed_part, &built.signed_part_2x] {
        let path = format!("/unsafe{part}");
        let parsed =
            url::parse_path(&path).map_err(|e| TestCaseError::fail(format!("{path}: {e}")))?;
        prop_assert_eq!(parsed.signed_part.as_ref(), part.as_str());
        prop_assert_eq!(
            SourceUrl::parse(parsed.source.url()).ok(),
            Some(SourceUrl::S3 {
                bucket: req.bucket.clone(),
                key: req.key.clone(),
            }),
            "{}",
            path
        );
        let format = (!req.format.is_empty()).then_some(req.format.as_str());
        prop_assert_eq!(parsed.extension.as_deref(), format);
        let mut o = options::parse(&parsed.options, &ParseContext::default())
            .map_err(|e| TestCaseError::fail(format!("{path}: {e}")))?;
        if let Some(ext) = &parsed.extension {
            o.apply_extension(ext)
                .map_err(|e| TestCaseError::fail(format!("{path}: {e}")))?;
        }
        prop_assert_eq!((o.width, o.height), (req.width, req.height));
        prop_assert_eq!(u32::from(o.quality), req.quality);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(1000))]

    /// The transform builder's body (`POST /api/sign`), from any bytes and from plausible
    /// requests.
    #[test]
    fn admin_build_request_bodies(
        body in prop_oneof![json_body(), build_request_body()],
    ) {
        check_build_request(&body)?;
    }

    /// A cache purge's parts (`POST /api/cache/purge`, `pixelport cache purge`): refused with
    /// the usage text, or exactly what was named.
    #[test]
    fn admin_purge_parts(
        all in any::<bool>(),
        bucket in prop::option::of(prop_oneof!["[a-z]{0,4}", any::<String>()]),
        prefix in prop::option::of(prop_oneof!["[a-z/]{0,4}", any::<String>()]),
        key in prop::option::of(prop_oneof!["[a-z/]{0,4}", any::<String>()]),
    ) {
        let b = bucket.as_deref().filter(|b| !b.is_empty());
        match Purge::from_parts(all, bucket.as_deref(), prefix.as_deref(), key.as_deref()) {
            Ok(Purge::All) => prop_assert!(all && b.is_none() && prefix.is_none() && key.is_none()),
            Ok(Purge::Source(s)) => {
                prop_assert!(!all && prefix.is_none());
                let named = format!("s3://{}/{}", b.unwrap_or_default(), key.unwrap_or_default());
                prop_assert_eq!(s, named);
            }
            Ok(Purge::Prefix(s)) => {
                prop_assert!(!all && key.is_none() && b.is_some());
                let named =
                    format!("s3://{}/{}", b.unwrap_or_default(), prefix.unwrap_or_default());
                prop_assert_eq!(s, named);
            }
            Err(m) => prop_assert!(!m.is_empty()),
        }
    }

    /// Bucket names (`POST /api/buckets`): what is accepted follows the S3 rules.
    #[test]
    fn admin_bucket_names(name in prop_oneof![any::<String>(), "[a-z0-9.-]{0,70}"]) {
        if validate_bucket_name(&name).is_ok() {
            prop_assert!((3..=63).contains(&name.len()));
            let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b);
            prop_assert!(name.bytes().all(allowed));
            prop_assert!(name.starts_with(|c: char| c.is_ascii_alphanumeric()));
            prop_assert!(name.ends_with(|c: char| c.is_ascii_alphanumeric()));
            prop_assert!(!name.contains(".."));
        }
    }
}

// ---------------------------------------------------------------------------------------
// The edge cache's header logic (issue "The edge as a CDN")
// ---------------------------------------------------------------------------------------

fn header_token() -> impl Strategy<Value = String> {
    prop_oneof![
        select(
            &[
                "Accept",
                "accept",
                "ACCEPT",
                "Cookie",
                "*",
                "User-Agent",
                "",
                " "
            ][..]
        )
        .prop_map(str::to_owned),
        "[ -~]{0,12}",
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    /// `Vary`: cached per class when every named field is `Accept`, not cached when any
    /// other is named, cached whole when none is.
    #[test]
    fn edge_vary_is_read_by_its_field_names(
        values in prop::collection::vec(
            prop::collection::vec(header_token(), 0..4).prop_map(|t| t.join(",")), 0..3),
    ) {
        use pixelport::edge::cache::key::Vary;
        let names: Vec<String> = values.iter().flat_map(|v| v.split(','))
            .map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect();
        let got = Vary::read(values.iter().map(String::as_str));
        let expected = if names.is_empty() {
            Vary::Nothing
        } else if names.iter().all(|n| n.eq_ignore_ascii_case("accept")) {
            Vary::AcceptClass
        } else {
            Vary::Uncacheable
        };
        prop_assert_eq!(got, expected);
    }

    /// `Cache-Control` staleness: what is allowed is exactly the last well-formed value
    /// given, and nothing at all once a revalidation directive is present.
    #[test]
    fn edge_stale_directives_allow_only_what_is_written(
        // Any printable value but a comma, which would end the directive (found by a CI
        // seed: `stale-while-revalidate=0,` is the value 0, not a malformed one).
        swr in prop::option::of(prop_oneof![(0u64..1_000_000).prop_map(|n| n.to_string()),
                                             "[ -+\\--~]{0,6}"]),
        sie in prop::option::of(0u64..1_000_000),
        strict in prop::option::of(select(&["no-cache", "must-revalidate", "no-store"][..])),
        noise in "[ -~]{0,20}",
    ) {
        use pixelport::edge::cache::directives::stale;
        let mut parts = vec![noise.replace(['=', ','], "")];
        if let Some(v) = &swr { parts.push(format!("stale-while-revalidate={v}")); }
        if let Some(v) = sie { parts.push(format!("stale-if-error={v}")); }
        if let Some(s) = strict { parts.push(s.to_owned()); }
        let got = stale([parts.join(", ").as_str()]);
        let noise_strict = ["no-cache", "must-revalidate", "no-store", "proxy-revalidate"]
            .iter().any(|s| parts[0].trim().eq_ignore_ascii_case(s));
        if strict.is_some() || noise_strict {
            prop_assert_eq!(got, Default::default());
        } else {
            let swr_secs = swr.as_deref().and_then(|v| v.trim().trim_matches('"').parse::<u64>().ok());
            prop_assert_eq!(got.while_revalidate.map(|d| d.as_secs()), swr_secs);
            prop_assert_eq!(got.if_error.map(|d| d.as_secs()), sie);
        }
    }

    /// Accept classes: two bits, unchanged by wildcard entries, and cache keys are 64 hex
    /// digits that ignore the host's case and separate everything else.
    #[test]
    fn edge_keys_and_accept_classes(
        accept in "[ -~]{0,60}",
        host in "[A-Za-z0-9.-]{1,20}",
        path in "/[ -~]{0,30}",
        class in prop::option::of(0u8..4),
    ) {
        use pixelport::edge::cache::key::{accept_class, entry_key};
        let c = accept_class(Some(&accept));
        prop_assert!(c < 4);
        prop_assert_eq!(accept_class(Some(&format!("{accept},*/*,image/*"))), c);
        let k = entry_key(&host, &path, class);
        prop_assert_eq!(k.len(), 64);
        prop_assert!(k.bytes().all(|b| b.is_ascii_hexdigit()));
        prop_assert_eq!(&k, &entry_key(&host.to_ascii_uppercase(), &path, class));
        prop_assert_ne!(&k, &entry_key(&host, &format!("{path}x"), class));
        prop_assert_ne!(&k, &entry_key(&host, &path, Some(class.map_or(0, |c| (c + 1) % 4))));
    }

    /// `Range` on a cached object: a part always lies inside the object, and a single
    /// well-formed range of an object is answered as the arithmetic says.
    #[test]
    fn edge_ranges_stay_inside_the_object(
        header in prop::option::of("[ -~]{0,24}"),
        first in 0u64..5000,
        last in prop::option::of(0u64..5000),
        len in 0u64..4000,
    ) {
        use pixelport::edge::cache::range::{answer, Answer};
        for h in [header.clone(), Some(format!("bytes={first}-{}", last.map(|l| l.to_string()).unwrap_or_default()))] {
            match answer(h.as_deref(), None, None, None, len) {
                Answer::Part { start, end } => prop_assert!(start <= end && end < len),
                Answer::Whole | Answer::Unsatisfiable => {}
            }
        }
        let got = answer(Some(&format!("bytes={first}-")), None, None, None, len);
        if first < len {
            prop_assert_eq!(got, Answer::Part { start: first, end: len - 1 });
        } else {
            prop_assert_eq!(got, Answer::Unsatisfiable);
        }
    }

    /// Surrogate tags: any key makes a tag that fits a header, and decodes back to it.
    #[test]
    fn purge_tags_round_trip(bucket in "[a-z0-9.-]{1,20}", key in any::<String>()) {
        use pixelport::tunnel::purge::{source_of_tag, source_tag};
        let tag = source_tag(&bucket, &key);
        prop_assert!(http::HeaderValue::from_str(&tag).is_ok());
        prop_assert!(!tag[5..].contains(','));
        prop_assert_eq!(source_of_tag(&tag), Some(format!("s3://{bucket}/{key}")));
    }

    /// The purge log: whatever the order of publishes and confirmations, a connection is
    /// never handed a purge it already sent, every batch ends past what it sent, and an
    /// edge that confirmed everything has nothing due.
    #[test]
    fn purge_batches_never_repeat_and_end_in_sync(
        ops in prop::collection::vec((0u8..3, 0u8..4), 1..60),
        cap in 1usize..8,
    ) {
        use pixelport::tunnel::purge::{PurgeItem, Purges};
        let p = Purges::new(cap, std::collections::HashSet::from(["e".to_owned()]));
        let mut sent = None;
        let mut last = 0;
        for (op, n) in ops {
            match op {
                0 => { last = p.publish(PurgeItem::Tag(format!("s3://b/{n}"))); }
                1 => {
                    if let Some((upto, items)) = p.next_batch("e", sent) {
                        prop_assert!(!items.is_empty());
                        prop_assert!(sent.is_none_or(|s| upto > s));
                        prop_assert!(upto <= last);
                        sent = Some(upto);
                    }
                }
                _ => if let Some(s) = sent { p.ack("e", s); },
            }
        }
        while let Some((upto, _)) = p.next_batch("e", sent) {
            sent = Some(upto);
        }
        p.ack("e", last);
        prop_assert_eq!(p.next_batch("e", None), None);
    }

    /// Path patterns: `*` alone matches everything, a pattern without `*` only itself, and
    /// a pattern made from a path's own pieces matches it.
    #[test]
    fn edge_globs(path in "/[ -~]{0,30}", cut in 0usize..31, cut2 in 0usize..31) {
        use pixelport::edge::shield::glob;
        prop_assert!(glob("*", &path));
        prop_assert!(glob(&path, &path));
        let (a, b) = (cut.min(path.len()), cut2.min(path.len()));
        let (a, b) = (a.min(b), a.max(b));
        if path.is_char_boundary(a) && path.is_char_boundary(b) {
            let pattern = format!("{}*{}", &path[..a], &path[b..]);
            prop_assert!(glob(&pattern, &path));
        }
    }

    /// Accept-Encoding: never an encoding the client refused with q=0.
    #[test]
    fn edge_encodings_respect_refusals(header in "[ -~]{0,40}") {
        use pixelport::edge::compress::{negotiate, Encoding};
        let refused = format!("{header}, br;q=0, gzip;q=0, x-gzip;q=0");
        prop_assert_eq!(negotiate(Some(&refused)), None::<Encoding>);
    }

    /// EXIF carried through processing (`imaging::exif`): any container bytes give a blob
    /// of at most MAX_EXIF bytes that starts like TIFF, or none; resetting the orientation
    /// keeps its length; a copyright-only blob is a valid TIFF with one entry.
    #[test]
    fn exif_reader_stays_bounded(
        body in prop::collection::vec(any::<u8>(), 0..300),
        which in 0usize..3,
        big_endian in any::<bool>(),
    ) {
        use pixelport::imaging::exif;
        let tiff_head: &[u8] = if big_endian { b"MM\0*\0\0\0\x08" } else { b"II*\0\x08\0\0\0" };
        let mut tiff = tiff_head.to_vec();
        tiff.extend_from_slice(&body);
        let (format, container) = match which {
            0 => {
                let mut b = vec![0xFF, 0xD8, 0xFF, 0xE1];
                b.extend_from_slice(&u16::try_from(tiff.len() + 8).unwrap_or(u16::MAX).to_be_bytes());
                b.extend_from_slice(b"Exif\0\0");
                b.extend_from_slice(&tiff);
                (ImageFormat::Jpeg, b)
            }
            1 => {
                let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
                b.extend_from_slice(&u32::try_from(tiff.len()).unwrap_or(0).to_be_bytes());
                b.extend_from_slice(b"eXIf");
                b.extend_from_slice(&tiff);
                (ImageFormat::Png, b)
            }
            _ => {
                let mut b = b"RIFF\0\0\0\0WEBPEXIF".to_vec();
                b.extend_from_slice(&u32::try_from(tiff.len()).unwrap_or(0).to_le_bytes());
                b.extend_from_slice(&tiff);
                (ImageFormat::Webp, b)
            }
        };
        for cut in [container.len(), container.len() / 2] {
            if let Some(blob) = exif::extract(format, &container[..cut]) {
                prop_assert!(blob.len() <= exif::MAX_EXIF);
                prop_assert!(blob.starts_with(b"II*\0") || blob.starts_with(b"MM\0*"));
                prop_assert_eq!(exif::reset_orientation(blob).len(), blob.len());
                if let Some(c) = exif::copyright_only(blob) {
                    prop_assert!(c.starts_with(b"II*\0\x08\0\0\0\x01\0\x98\x82"));
                }
            }
        }
    }

    /// Bucket policies (`s3::policy`): any text parses or is refused with a message naming
    /// the problem; and a Deny on everything added to any accepted policy refuses every
    /// request, signed or not, whatever the Allows say.
    #[test]
    fn bucket_policy_deny_always_wins(
        effect in select(vec!["Allow", "Deny"]),
        action in select(vec!["s3:GetObject", "s3:*", "s3:Get*", "s3:ListBucket", "s3:PutObject", "*", "s3:?utObject"]),
        resource in "(/[a-z*?]{0,6}){0,2}",
        junk in "[ -~]{0,80}",
        req_action in select(vec!["GetObject", "PutObject", "ListBucket", "DeleteObject"]),
        key in "[a-z/]{0,10}",
        signed in any::<bool>(),
    ) {
        use pixelport::s3::policy::{parse, Decision, Request};
        if let Err(e) = parse("b", &junk) {
            prop_assert!(!e.0.is_empty());
        }
        let allow = serde_json::json!({"Effect": effect, "Principal": "*", "Action": action,
            "Resource": format!("arn:aws:s3:::b{resource}")});
        let deny_all = serde_json::json!({"Effect": "Deny", "Principal": {"AWS": ["*"]},
            "Action": "s3:*", "Resource": ["arn:aws:s3:::b", "arn:aws:s3:::b/*"]});
        let resource_of = if req_action == "ListBucket" { "b".to_owned() } else { format!("b/{key}") };
        let r = Request {
            principal: signed.then_some("AKIA"),
            action: req_action,
            resource: &resource_of,
            ..Request::default()
        };
        let one = serde_json::json!({"Statement": [allow.clone()]}).to_string();
        if let Ok(p) = parse("b", &one) {
            let d = p.evaluate(&r);
            prop_assert!(effect == "Allow" || d != Decision::Allow);
            let both = serde_json::json!({"Statement": [allow, deny_all]}).to_string();
            let p = parse("b", &both).map_err(|e| TestCaseError::fail(e.0))?;
            prop_assert_eq!(p.evaluate(&r), Decision::Deny);
        }
    }

    /// Version ids (`store::version_id`): any text is valid only as `null` or as an id this
    /// code makes, a made id carries its stamp back, and ids sort newest first as strings.
    #[test]
    fn version_ids_round_trip_and_sort_newest_first(
        text in "[ -~]{0,40}",
        a in 1u64..u64::MAX / 2,
        gap in 1u64..1_000_000,
        ra in any::<u64>(),
        rb in any::<u64>(),
    ) {
        use pixelport::store::version_id::{is_valid, new_id, sort_suffix, stamp_of, NULL};
        let valid = is_valid(&text);
        prop_assert_eq!(valid, text == NULL || stamp_of(&text).is_some());
        if let Some(stamp) = stamp_of(&text) {
            prop_assert_eq!(new_id(stamp, u64::from_str_radix(&text[16..], 16).unwrap_or(0)), text);
        }
        let (older, newer) = (new_id(a, ra), new_id(a + gap, rb));
        prop_assert_eq!(stamp_of(&older), Some(a));
        prop_assert!(newer < older);
        prop_assert!(sort_suffix(a + gap, Some(&newer)) < sort_suffix(a, Some(&older)));
        prop_assert!(sort_suffix(a + gap, None) < sort_suffix(a, None));
    }

    /// CRC combination (`store::crc_combine`), which makes FULL_OBJECT multipart checksums:
    /// for any body and any split into parts, folding the parts' CRCs gives the CRC of the
    /// whole body.
    #[test]
    fn crc_combination_equals_the_whole_body_crc(
        data in proptest::collection::vec(any::<u8>(), 0..4096),
        cuts in proptest::collection::vec(any::<Index>(), 0..5),
    ) {
        use pixelport::store::crc_combine::{CRC32, CRC32C};
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
        at.sort_unstable();
        let mut pieces = Vec::new();
        let mut from = 0;
        for cut in at.into_iter().chain([data.len()]) {
            pieces.push(&data[from..cut]);
            from = cut;
        }
        let fold = |crc: pixelport::store::crc_combine::Crc, hash: &dyn Fn(&[u8]) -> u64| {
            pieces.iter().fold(None, |acc: Option<u64>, p| {
                Some(match acc {
                    None => hash(p),
                    Some(a) => crc.combine(a, hash(p), p.len() as u64),
                })
            })
        };
        let crc32 = |d: &[u8]| u64::from(crc32fast::hash(d));
        let crc32c = |d: &[u8]| u64::from(crc32c::crc32c(d));
        prop_assert_eq!(fold(CRC32, &crc32), Some(crc32(&data)));
        prop_assert_eq!(fold(CRC32C, &crc32c), Some(crc32c(&data)));
    }

    /// Sealed blobs (`store::sealing`, encryption at rest): for any body and any range, the
    /// chunks `chunk_span` names open to exactly that range of the body; any one flipped
    /// byte in them is refused, never decrypted into other bytes (and nothing panics).
    #[test]
    fn sealed_chunks_open_to_any_range_and_refuse_any_change(
        len in 0usize..(3 * 65_536 + 100),
        seed in any::<u8>(),
        a in any::<Index>(),
        b in any::<Index>(),
        flip in any::<Index>(),
    ) {
        use pixelport::store::sealing::{
            chunk_count, chunk_plain_len, chunk_span, DataKey, MasterKey, Sealer, TAG,
        };
        let body: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
        let master = MasterKey::from_bytes(&[seed; 32]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (key, _) = DataKey::generate(Sealer::Master(&master))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let n = chunk_count(len as u64);
        let mut blob = Vec::new();
        let mut from = 0usize;
        for i in 0..n {
            let to = from + chunk_plain_len(len as u64, i) as usize;
            let mut buf = body[from..to].to_vec();
            key.seal_chunk(i, i + 1 == n, &mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
            blob.extend_from_slice(&buf);
            from = to;
        }
        prop_assert_eq!(blob.len(), len + n as usize * TAG as usize);
        if len == 0 {
            return Ok(());
        }
        let (x, y) = (a.index(len), b.index(len));
        let range = x.min(y) as u64..x.max(y) as u64 + 1;
        let span = chunk_span(range.clone());
        let mut at = span.file_offset as usize;
        let mut plain = Vec::new();
        let mut sealed_chunks = Vec::new();
        for i in span.chunks.clone() {
            let sealed = (chunk_plain_len(len as u64, i) + TAG) as usize;
            sealed_chunks.push((i, at, sealed));
            let mut buf = blob[at..at + sealed].to_vec();
            let p = key.open_chunk(i, i + 1 == n, &mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
            plain.extend_from_slice(&buf[..p]);
            at += sealed;
        }
        let got = &plain[span.skip as usize..span.skip as usize + span.len as usize];
        prop_assert_eq!(got, &body[range.start as usize..range.end as usize]);
        let (i, start, sealed) = sealed_chunks[flip.index(sealed_chunks.len())];
        let mut buf = blob[start..start + sealed].to_vec();
        let at = flip.index(sealed);
        buf[at] ^= 1;
        prop_assert!(key.open_chunk(i, i + 1 == n, &mut buf).is_err());
    }
}
