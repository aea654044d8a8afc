//! imgproxy's processing options, parsed into a typed [`Options`] value.
//!
//! Input: the option segments of an image URL (`rs:fill:300:400:0`, `g:sm`, `q:80`, …),
//! already split on `/` and with `%3A` already turned into `:`. Output: an [`Options`]
//! struct, never a string map. Each option below is one [`OptionDef`] (its full name
//! first, then its aliases), followed by the function that applies its arguments and
//! the test of that option, in the order of imgproxy's own `applyURLOption` switch.
//!
//! What must stay true:
//! - Behaviour follows open-source imgproxy v3 (`options/processing_options.go`, and
//!   `options/parser/*.go` on master): same names and aliases, same defaults, same
//!   argument rules, same "an empty argument leaves the current value" places (and only
//!   those: `w:` is an error in imgproxy and here). Booleans are Go's `strconv.ParseBool`
//!   forms; like imgproxy, any other word reads as `false` rather than failing.
//! - Options apply left to right onto one value; later options override earlier ones;
//!   presets apply in place, the `default` preset first, recursion is skipped.
//! - Every error is an [`OptionsError`] that names the offending segment.
//! - [`Options::canonical`] depends only on the resulting value: equivalent URLs give
//!   the same string, different results give different strings. It feeds cache keys,
//!   so its format may only change together with a cache-key version bump.
//!
//! Known, deliberate departures from imgproxy: non-finite numbers (`inf`, `NaN`) are
//! rejected; `rotate` is normalised to 0/90/180/270 (imgproxy fails at processing time
//! on negative angles); numbers too large for the field's type are rejected; a
//! base64 file name that is not UTF-8 is decoded lossily; arguments that scale the
//! work of a request have upper bounds (the Limits section below), so that no URL can
//! hold a worker for minutes or ask for an absurd canvas.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::imaging::geometry::{MAX_DIMENSION, MAX_SCALE_FACTOR};

// ---------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------
//
// Upper bounds on the arguments that scale a request's work, checked while parsing so
// that an absurd value is an `OptionsError` naming its segment, before any I/O. Sizes
// share the pipeline's per-side ceiling, `geometry::MAX_DIMENSION` (16383); `zoom` and
// `dpr` are bounded by the same number as a factor (`geometry::MAX_SCALE_FACTOR`).
// imgproxy has none of these bounds; every value they refuse would have failed later
// (over the result ceiling) or is far outside any practical use. `docs/images.md`
// lists them.

/// Largest `blur` sigma. libvips' practical range is well below it (a sigma of 100
/// already averages a window of about 360 pixels).
pub const MAX_BLUR_SIGMA: f64 = 100.0;
/// Largest `sharpen` sigma (imgproxy's useful range is 0.5 to 2).
pub const MAX_SHARPEN_SIGMA: f64 = 100.0;
/// Largest `pixelate` block size, `padding` side, `min-width`/`min-height`, and
/// absolute gravity or watermark offset: the result-side ceiling.
pub const MAX_SIZE_ARGUMENT: u32 = MAX_DIMENSION;
/// Largest `zoom` (either factor) and `dpr`.
pub const MAX_FACTOR: f64 = MAX_SCALE_FACTOR;

// ---------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------

/// Why a list of option segments was refused. Every variant names the segment at fault
/// (for an option inside a preset, the preset's own segment). The HTTP layer answers
/// these with 404 "Invalid URL", as imgproxy does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("invalid option `{segment}`: unknown option `{name}`")]
    UnknownOption { segment: String, name: String },
    #[error("invalid option `{segment}`: {reason}")]
    InvalidArgument { segment: String, reason: String },
    #[error("invalid option `{segment}`: security options are not allowed")]
    SecurityOptionsNotAllowed { segment: String },
    #[error("invalid option `{segment}`: the URL expired at {expires}")]
    Expired { segment: String, expires: i64 },
}

impl OptionsError {
    /// The segment the error is about.
    pub fn segment(&self) -> &str {
        match self {
            Self::UnknownOption { segment, .. }
            | Self::InvalidArgument { segment, .. }
            | Self::SecurityOptionsNotAllowed { segment }
            | Self::Expired { segment, .. } => segment,
        }
    }
}

/// What went wrong inside one option, before the segment is attached.
enum Failure {
    Arg(String),
    Security,
    Expired(i64),
    Nested(OptionsError),
}

type Res = Result<(), Failure>;

fn bad(reason: impl Into<String>) -> Failure {
    Failure::Arg(reason.into())
}

impl Failure {
    fn at(self, segment: &str) -> OptionsError {
        let segment = segment.to_string();
        match self {
            Self::Arg(reason) => OptionsError::InvalidArgument { segment, reason },
            Self::Security => OptionsError::SecurityOptionsNotAllowed { segment },
            Self::Expired(expires) => OptionsError::Expired { segment, expires },
            Self::Nested(e) => e,
        }
    }
}

// ---------------------------------------------------------------------------------
// Value types
// ---------------------------------------------------------------------------------

/// `resizing_type`: how the source is fitted to `width` × `height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ResizingType {
    #[default]
    Fit,
    Fill,
    FillDown,
    Force,
    Auto,
}

impl ResizingType {
    pub const ALL: [Self; 5] = [
        Self::Fit,
        Self::Fill,
        Self::FillDown,
        Self::Force,
        Self::Auto,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fit => "fit",
            Self::Fill => "fill",
            Self::FillDown => "fill-down",
            Self::Force => "force",
            Self::Auto => "auto",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// A gravity type: compass points, centre, smart, focus point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GravityType {
    #[default]
    Center,
    North,
    East,
    South,
    West,
    NorthWest,
    NorthEast,
    SouthWest,
    SouthEast,
    Smart,
    FocusPoint,
}

impl GravityType {
    pub const ALL: [Self; 11] = [
        Self::Center,
        Self::North,
        Self::East,
        Self::South,
        Self::West,
        Self::NorthWest,
        Self::NorthEast,
        Self::SouthWest,
        Self::SouthEast,
        Self::Smart,
        Self::FocusPoint,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Center => "ce",
            Self::North => "no",
            Self::East => "ea",
            Self::South => "so",
            Self::West => "we",
            Self::NorthWest => "nowe",
            Self::NorthEast => "noea",
            Self::SouthWest => "sowe",
            Self::SouthEast => "soea",
            Self::Smart => "sm",
            Self::FocusPoint => "fp",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// A gravity with its offsets. For compass types `x`/`y` are offsets (absolute pixels
/// when |v| ≥ 1, else relative to the canvas); for `fp` they are the focus point in
/// 0..=1; for `sm` they are 0.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Gravity {
    pub kind: GravityType,
    pub x: f64,
    pub y: f64,
}

/// Which gravity types an option accepts (imgproxy's `cropGravityTypes` and
/// `extendGravityTypes`).
#[derive(Clone, Copy)]
enum GravitySet {
    /// Everything: compass, `sm`, `fp` (gravity, crop).
    Crop,
    /// Compass and `fp`, no `sm` (extend, extend_aspect_ratio).
    Extend,
}

impl GravitySet {
    fn permits(self, kind: GravityType) -> bool {
        match self {
            Self::Crop => true,
            Self::Extend => kind != GravityType::Smart,
        }
    }

    fn names(self) -> String {
        GravityType::ALL
            .into_iter()
            .filter(|k| self.permits(*k))
            .map(GravityType::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Output (and skip-processing) image formats, as imgproxy names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageFormat {
    Jpeg,
    Jxl,
    Png,
    Webp,
    Gif,
    Ico,
    Svg,
    Heic,
    Avif,
    Bmp,
    Tiff,
}

impl ImageFormat {
    pub const ALL: [Self; 11] = [
        Self::Jpeg,
        Self::Jxl,
        Self::Png,
        Self::Webp,
        Self::Gif,
        Self::Ico,
        Self::Svg,
        Self::Heic,
        Self::Avif,
        Self::Bmp,
        Self::Tiff,
    ];

    /// The canonical name (`jpeg`, not `jpg`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jpeg => "jpeg",
            Self::Jxl => "jxl",
            Self::Png => "png",
            Self::Webp => "webp",
            Self::Gif => "gif",
            Self::Ico => "ico",
            Self::Svg => "svg",
            Self::Heic => "heic",
            Self::Avif => "avif",
            Self::Bmp => "bmp",
            Self::Tiff => "tiff",
        }
    }

    /// Looks a format up by name; `jpg` is an alias of `jpeg`. Case-sensitive, as in
    /// imgproxy.
    pub fn from_name(name: &str) -> Option<Self> {
        if name == "jpg" {
            return Some(Self::Jpeg);
        }
        Self::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

/// An sRGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rgb {
    pub r: u8,
    pub g: u8,
    pub b: u8,
}

impl Rgb {
    pub const WHITE: Self = Self {
        r: 255,
        g: 255,
        b: 255,
    };

    /// `rrggbb`, lower case.
    pub fn hex(self) -> String {
        format!("{:02x}{:02x}{:02x}", self.r, self.g, self.b)
    }

    /// imgproxy's `ColorFromHex`: exactly 3 or 6 hex digits, no `#`.
    pub fn from_hex(s: &str) -> Option<Self> {
        if !(s.len() == 3 || s.len() == 6) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let digit = |i: usize| u8::from_str_radix(&s[i..=i], 16).ok();
        if s.len() == 3 {
            Some(Self {
                r: digit(0)? * 17,
                g: digit(1)? * 17,
                b: digit(2)? * 17,
            })
        } else {
            let byte = |i: usize| u8::from_str_radix(&s[i..i + 2], 16).ok();
            Some(Self {
                r: byte(0)?,
                g: byte(2)?,
                b: byte(4)?,
            })
        }
    }
}

/// `extend` / `extend_aspect_ratio`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Extend {
    pub enabled: bool,
    pub gravity: Gravity,
}

/// `crop`: the area processed, before resizing. A size ≥ 1 is pixels, below 1 a share
/// of the source, 0 the whole side. `gravity: None` means "use the `gravity` option".
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Crop {
    pub width: f64,
    pub height: f64,
    pub gravity: Option<Gravity>,
}

impl Crop {
    /// The gravity the crop uses: its own, else the main one.
    pub fn effective_gravity(&self, main: Gravity) -> Gravity {
        self.gravity.unwrap_or(main)
    }
}

/// `trim`. `color: None` means "detect the background colour" (imgproxy's smart trim).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trim {
    pub enabled: bool,
    pub threshold: f64,
    pub color: Option<Rgb>,
    pub equal_hor: bool,
    pub equal_ver: bool,
}

impl Default for Trim {
    fn default() -> Self {
        Self {
            enabled: false,
            threshold: 10.0,
            color: None,
            equal_hor: false,
            equal_ver: false,
        }
    }
}

/// `padding`, CSS order, in CSS pixels (scaled by the DPR when applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Padding {
    pub top: u32,
    pub right: u32,
    pub bottom: u32,
    pub left: u32,
}

impl Padding {
    /// Padding is on when any side is non-zero (imgproxy's `Padding.Enabled`).
    pub fn is_enabled(&self) -> bool {
        self.top != 0 || self.right != 0 || self.bottom != 0 || self.left != 0
    }
}

/// `flip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flip {
    pub horizontal: bool,
    pub vertical: bool,
}

/// `watermark`. `replicate` is imgproxy's `re` position (tile over the image).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Watermark {
    pub enabled: bool,
    pub opacity: f64,
    pub position: GravityType,
    pub replicate: bool,
    pub x_offset: f64,
    pub y_offset: f64,
    pub scale: f64,
}

impl Default for Watermark {
    fn default() -> Self {
        Self {
            enabled: false,
            opacity: 1.0,
            position: GravityType::Center,
            replicate: false,
            x_offset: 0.0,
            y_offset: 0.0,
            scale: 0.0,
        }
    }
}

/// Per-request overrides of the server's security limits (only parsed when
/// [`ParseContext::allow_security_options`] is set). `None` keeps the server's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecurityOverrides {
    /// Pixels (the URL gives megapixels).
    pub max_src_resolution: Option<u64>,
    pub max_src_file_size: Option<i64>,
    pub max_animation_frames: Option<u32>,
    /// Pixels (the URL gives megapixels).
    pub max_animation_frame_resolution: Option<u64>,
    /// 0 or less: no limit.
    pub max_result_dimension: Option<i64>,
}

/// All processing options of one request. `Default` is imgproxy's
/// `NewProcessingOptions()`; fields imgproxy takes from server configuration
/// (`strip_metadata`, `keep_copyright`, `strip_color_profile`, `auto_rotate`,
/// `enforce_thumbnail`, `return_attachment`) are `None` until the URL sets them.
/// imgproxy's configuration defaults for those are true, true, true, true, false, false.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub resizing_type: ResizingType,
    pub width: u32,
    pub height: u32,
    pub min_width: u32,
    pub min_height: u32,
    pub zoom_width: f64,
    pub zoom_height: f64,
    pub dpr: f64,
    pub enlarge: bool,
    pub extend: Extend,
    pub extend_aspect_ratio: Extend,
    pub gravity: Gravity,
    pub crop: Crop,
    pub trim: Trim,
    pub padding: Padding,
    pub auto_rotate: Option<bool>,
    /// Degrees, one of 0, 90, 180, 270.
    pub rotate: u16,
    pub flip: Flip,
    /// `Some`: flatten onto this colour. `None`: keep transparency (white if the
    /// output format has no alpha).
    pub background: Option<Rgb>,
    pub blur: f32,
    pub sharpen: f32,
    pub pixelate: u32,
    pub watermark: Watermark,
    pub strip_metadata: Option<bool>,
    pub keep_copyright: Option<bool>,
    pub strip_color_profile: Option<bool>,
    pub enforce_thumbnail: Option<bool>,
    /// 0: use `format_quality`, then the server default.
    pub quality: u8,
    /// Per-format quality overrides from the URL (on top of the server's table).
    pub format_quality: BTreeMap<ImageFormat, u8>,
    pub max_bytes: u64,
    /// `None`: choose from the source and the `Accept` header.
    pub format: Option<ImageFormat>,
    /// Source formats served unprocessed (added to the server's list).
    pub skip_processing: BTreeSet<ImageFormat>,
    pub raw: bool,
    pub cachebuster: String,
    /// Unix seconds; the URL is refused after it (checked at parse time).
    pub expires: Option<i64>,
    pub filename: Option<String>,
    pub return_attachment: Option<bool>,
    pub security: SecurityOverrides,
    /// Presets applied, in order (informational; not part of [`Options::canonical`]).
    pub used_presets: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            resizing_type: ResizingType::Fit,
            width: 0,
            height: 0,
            min_width: 0,
            min_height: 0,
            zoom_width: 1.0,
            zoom_height: 1.0,
            dpr: 1.0,
            enlarge: false,
            extend: Extend::default(),
            extend_aspect_ratio: Extend::default(),
            gravity: Gravity::default(),
            crop: Crop::default(),
            trim: Trim::default(),
            padding: Padding::default(),
            auto_rotate: None,
            rotate: 0,
            flip: Flip::default(),
            background: None,
            blur: 0.0,
            sharpen: 0.0,
            pixelate: 0,
            watermark: Watermark::default(),
            strip_metadata: None,
            keep_copyright: None,
            strip_color_profile: None,
            enforce_thumbnail: None,
            quality: 0,
            format_quality: BTreeMap::new(),
            max_bytes: 0,
            format: None,
            skip_processing: BTreeSet::new(),
            raw: false,
            cachebuster: String::new(),
            expires: None,
            filename: None,
            return_attachment: None,
            security: SecurityOverrides::default(),
            used_presets: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------

/// What the parser needs from the server: presets, whether security options are
/// allowed, and the clock for `expires`.
#[derive(Debug, Clone, Default)]
pub struct ParseContext {
    /// Preset name → its option segments (`["rs:fill:300:300", "q:80"]`). A preset
    /// named `default` is applied before the URL's own options.
    pub presets: HashMap<String, Vec<String>>,
    /// imgproxy's `IMGPROXY_ALLOW_SECURITY_OPTIONS`.
    pub allow_security_options: bool,
    /// Unix seconds used to check `expires`; `None` reads the system clock.
    pub now_unix: Option<i64>,
}

impl ParseContext {
    fn now(&self) -> i64 {
        self.now_unix.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        })
    }
}

/// Parses option segments (in URL order) onto imgproxy's defaults, after the `default`
/// preset if there is one.
pub fn parse(segments: &[String], ctx: &ParseContext) -> Result<Options, OptionsError> {
    let mut a = Applier::new(ctx);
    a.apply_default_preset()?;
    for segment in segments {
        a.apply_segment(segment)?;
    }
    Ok(a.opts)
}

/// imgproxy's "only presets" URL form (`IMGPROXY_ONLY_PRESETS`): the first path part is
/// a list of preset names, applied after the `default` preset.
pub fn parse_presets_only(names: &[String], ctx: &ParseContext) -> Result<Options, OptionsError> {
    let mut a = Applier::new(ctx);
    a.apply_default_preset()?;
    let args: Vec<&str> = names.iter().map(String::as_str).collect();
    let segment = format!("preset:{}", names.join(":"));
    a.apply_presets(&args).map_err(|f| f.at(&segment))?;
    Ok(a.opts)
}

impl Options {
    /// Applies the source URL's extension (`…@png`, `….png`) as imgproxy does after the
    /// options: as a `format` option, unless `raw` is set.
    pub fn apply_extension(&mut self, extension: &str) -> Result<(), OptionsError> {
        if self.raw || extension.is_empty() {
            return Ok(());
        }
        match ImageFormat::from_name(extension) {
            Some(f) => {
                self.format = Some(f);
                Ok(())
            }
            None => Err(OptionsError::InvalidArgument {
                segment: format!("@{extension}"),
                reason: format!("`{extension}` is not a supported image format"),
            }),
        }
    }
}

// ---------------------------------------------------------------------------------
// The applier
// ---------------------------------------------------------------------------------

struct Applier<'c> {
    ctx: &'c ParseContext,
    opts: Options,
    /// Presets being applied, outermost first (imgproxy's `usedPresets` argument).
    chain: Vec<String>,
}

impl<'c> Applier<'c> {
    fn new(ctx: &'c ParseContext) -> Self {
        Self {
            ctx,
            opts: Options::default(),
            chain: Vec::new(),
        }
    }

    fn apply_default_preset(&mut self) -> Result<(), OptionsError> {
        if self.ctx.presets.contains_key("default") {
            self.apply_presets(&["default"])
                .map_err(|f| f.at("preset:default"))?;
        }
        Ok(())
    }

    fn apply_segment(&mut self, segment: &str) -> Result<(), OptionsError> {
        let mut parts = segment.split(':');
        let name = parts.next().unwrap_or_default();
        let args: Vec<&str> = parts.collect();
        let Some(def) = OPTIONS.iter().find(|d| d.names.contains(&name)) else {
            return Err(OptionsError::UnknownOption {
                segment: segment.to_string(),
                name: name.to_string(),
            });
        };
        if args.is_empty() {
            return Err(bad("missing arguments").at(segment));
        }
        (def.apply)(self, &args).map_err(|f| f.at(segment))
    }

    /// imgproxy's `applyPresetOption`: unknown names fail, a preset already being
    /// applied further out is skipped (recursion guard).
    fn apply_presets(&mut self, names: &[&str]) -> Res {
        let ctx = self.ctx;
        for name in names {
            let Some(segments) = ctx.presets.get(*name) else {
                return Err(bad(format!("unknown preset `{name}`")));
            };
            if self.chain.iter().any(|c| c == name) {
                continue;
            }
            self.opts.used_presets.push((*name).to_string());
            self.chain.push((*name).to_string());
            for segment in segments {
                if let Err(e) = self.apply_segment(segment) {
                    return Err(Failure::Nested(e));
                }
            }
            self.chain.pop();
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Argument helpers (Go's strconv semantics)
// ---------------------------------------------------------------------------------

fn max_args(args: &[&str], max: usize) -> Res {
    if args.len() > max {
        let s = if max == 1 { "" } else { "s" };
        return Err(bad(format!(
            "takes at most {max} argument{s}, got {}",
            args.len()
        )));
    }
    Ok(())
}

/// Go's `strconv.ParseBool`; anything else is `false`, as imgproxy's `parseBoolOption`
/// (which only logs a warning).
fn parse_bool(s: &str) -> bool {
    matches!(s, "1" | "t" | "T" | "TRUE" | "true" | "True")
}

/// Go's `strconv.Atoi` (optional sign, decimal digits).
fn parse_int(s: &str, what: &str) -> Result<i64, Failure> {
    s.parse::<i64>()
        .map_err(|_| bad(format!("{what} must be an integer")))
}

/// Go's `strconv.ParseFloat`, finite values only.
fn parse_float(s: &str, what: &str) -> Result<f64, Failure> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(bad(format!("{what} must be a number"))),
    }
}

/// imgproxy's `parseDimension`: an integer ≥ 0.
fn parse_dimension(s: &str, what: &str) -> Result<u32, Failure> {
    let v = parse_int(s, what)?;
    if v < 0 {
        return Err(bad(format!("{what} must not be negative")));
    }
    u32::try_from(v).map_err(|_| bad(format!("{what} is too large")))
}

/// [`parse_dimension`] with an upper bound.
fn parse_bounded_dimension(s: &str, what: &str, max: u32) -> Result<u32, Failure> {
    let v = parse_dimension(s, what)?;
    if v > max {
        return Err(bad(format!("{what} must be at most {max}")));
    }
    Ok(v)
}

/// Refuses a parsed number above `max`.
fn at_most(v: f64, max: f64, what: &str) -> Result<f64, Failure> {
    if v > max {
        return Err(bad(format!("{what} must be at most {max}")));
    }
    Ok(v)
}

fn parse_non_negative_float(s: &str, what: &str) -> Result<f64, Failure> {
    let v = parse_float(s, what)?;
    if v < 0.0 {
        return Err(bad(format!("{what} must not be negative")));
    }
    Ok(v)
}

fn parse_positive_float(s: &str, what: &str) -> Result<f64, Failure> {
    let v = parse_float(s, what)?;
    if v <= 0.0 {
        return Err(bad(format!("{what} must be greater than 0")));
    }
    Ok(v)
}

fn parse_quality(s: &str, what: &str) -> Result<u8, Failure> {
    match parse_int(s, what)? {
        q @ 0..=100 => Ok(q as u8),
        _ => Err(bad(format!("{what} must be between 0 and 100"))),
    }
}

fn parse_format(s: &str) -> Result<ImageFormat, Failure> {
    ImageFormat::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = ImageFormat::ALL.iter().map(|f| f.as_str()).collect();
        bad(format!(
            "`{s}` is not a supported image format ({}, jpg)",
            names.join(", ")
        ))
    })
}

fn parse_color(s: &str, what: &str) -> Result<Rgb, Failure> {
    Rgb::from_hex(s).ok_or_else(|| bad(format!("{what} must be a 3- or 6-digit hex colour")))
}

/// Go's `strconv.ParseUint(s, 10, 8)`: digits only, at most 255.
fn parse_channel(s: &str, what: &str) -> Result<u8, Failure> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("{what} must be an integer from 0 to 255")));
    }
    s.parse::<u8>()
        .map_err(|_| bad(format!("{what} must be an integer from 0 to 255")))
}

/// imgproxy's `parseGravity`. Offsets not given keep their previous values, as in
/// imgproxy (`g:no:10:20/g:so` keeps the offsets 10 and 20).
fn parse_gravity(g: &mut Gravity, args: &[&str], set: GravitySet, what: &str) -> Res {
    let Some(first) = args.first() else {
        return Err(bad(format!("{what} needs a type")));
    };
    let kind = GravityType::from_name(first)
        .filter(|k| set.permits(*k))
        .ok_or_else(|| bad(format!("{what} must be one of {}", set.names())))?;
    g.kind = kind;
    let n = args.len();
    match kind {
        GravityType::Smart => {
            if n > 1 {
                return Err(bad(format!("{what} `sm` takes no offsets")));
            }
            g.x = 0.0;
            g.y = 0.0;
            return Ok(());
        }
        GravityType::FocusPoint if n != 3 => {
            return Err(bad(format!("{what} `fp` needs exactly x and y")));
        }
        _ if n > 3 => {
            return Err(bad(format!("{what} takes a type and at most 2 offsets")));
        }
        _ => {}
    }
    let offset = |s: &str, axis: &str| -> Result<f64, Failure> {
        let v = parse_float(s, &format!("{what} {axis} offset"))?;
        if kind == GravityType::FocusPoint {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad(format!(
                    "{what} focus point {axis} must be between 0 and 1"
                )));
            }
        } else {
            check_offset(v, &format!("{what} {axis} offset"))?;
        }
        Ok(v)
    };
    if n > 1 {
        g.x = offset(args[1], "x")?;
    }
    if n > 2 {
        g.y = offset(args[2], "y")?;
    }
    Ok(())
}

/// An absolute offset (gravity, watermark) is at most [`MAX_SIZE_ARGUMENT`] pixels either
/// way: further than any side of any result.
fn check_offset(v: f64, what: &str) -> Res {
    let max = f64::from(MAX_SIZE_ARGUMENT);
    if !(-max..=max).contains(&v) {
        return Err(bad(format!("{what} must be between -{max} and {max}")));
    }
    Ok(())
}

/// imgproxy's `parseExtend`: `enabled[:gravity[:x[:y]]]`.
fn parse_extend(e: &mut Extend, args: &[&str], what: &str) -> Res {
    max_args(args, 4)?;
    e.enabled = parse_bool(args[0]);
    if args.len() > 1 {
        parse_gravity(&mut e.gravity, &args[1..], GravitySet::Extend, what)?;
    }
    Ok(())
}

fn security_allowed(a: &Applier<'_>) -> Res {
    if a.ctx.allow_security_options {
        Ok(())
    } else {
        Err(Failure::Security)
    }
}

// ---------------------------------------------------------------------------------
// The option table
// ---------------------------------------------------------------------------------

/// One processing option: its names (full name first, then aliases) and the function
/// that applies its arguments (never empty: a segment has at least one, maybe empty).
/// Public only for the fuzz targets (`tests/fuzz_targets.rs`), which draw names from it.
#[doc(hidden)]
pub struct OptionDef {
    pub names: &'static [&'static str],
    apply: fn(&mut Applier<'_>, &[&str]) -> Res,
}

/// Every option, in imgproxy's switch order. Lookup is by exact name.
#[doc(hidden)]
pub static OPTIONS: &[OptionDef] = &[
    RESIZE,
    SIZE,
    RESIZING_TYPE,
    WIDTH,
    HEIGHT,
    MIN_WIDTH,
    MIN_HEIGHT,
    ZOOM,
    DPR,
    ENLARGE,
    EXTEND,
    EXTEND_ASPECT_RATIO,
    GRAVITY,
    CROP,
    TRIM,
    PADDING,
    AUTO_ROTATE,
    ROTATE,
    FLIP,
    BACKGROUND,
    BLUR,
    SHARPEN,
    PIXELATE,
    WATERMARK,
    STRIP_METADATA,
    KEEP_COPYRIGHT,
    STRIP_COLOR_PROFILE,
    ENFORCE_THUMBNAIL,
    QUALITY,
    FORMAT_QUALITY,
    MAX_BYTES,
    FORMAT,
    SKIP_PROCESSING,
    RAW,
    CACHEBUSTER,
    EXPIRES,
    FILENAME,
    RETURN_ATTACHMENT,
    PRESET,
    MAX_SRC_RESOLUTION,
    MAX_SRC_FILE_SIZE,
    MAX_ANIMATION_FRAMES,
    MAX_ANIMATION_FRAME_RESOLUTION,
    MAX_RESULT_DIMENSION,
];

#[cfg(test)]
mod t {
    //! Helpers for the per-option tests below.
    use super::*;

    pub fn segs(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| (*x).to_string()).collect()
    }

    pub fn ok(s: &[&str]) -> Options {
        parse(&segs(s), &ParseContext::default()).unwrap()
    }

    pub fn err(s: &[&str]) -> String {
        parse(&segs(s), &ParseContext::default())
            .unwrap_err()
            .to_string()
    }

    pub fn secure(s: &[&str]) -> Result<Options, OptionsError> {
        let ctx = ParseContext {
            allow_security_options: true,
            ..ParseContext::default()
        };
        parse(&segs(s), &ctx)
    }
}

// resize:%resizing_type:%width:%height:%enlarge:%extend (extend may carry its gravity)
const RESIZE: OptionDef = OptionDef {
    names: &["resize", "rs"],
    apply: apply_resize,
};

fn apply_resize(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 8)?;
    // `resize:300:200`, a width where the type belongs, as migration guides and the seed's
    // samples write it. imgproxy refuses it ("invalid resizing type"); a number cannot be a
    // type, so Pixelport reads it unambiguously as `resize::300:200` (type unchanged).
    if !args[0].is_empty() && args[0].bytes().all(|b| b.is_ascii_digit()) {
        return apply_size(a, args);
    }
    if !args[0].is_empty() {
        apply_resizing_type(a, &args[..1])?;
    }
    if args.len() > 1 {
        apply_size(a, &args[1..])?;
    }
    Ok(())
}

#[test]
fn resize_with_a_width_in_place_of_the_type_reads_as_a_size() {
    let o = t::ok(&["resize:300:200"]);
    assert_eq!(o.resizing_type, ResizingType::Fit);
    assert_eq!((o.width, o.height), (300, 200));
    assert_eq!(o, t::ok(&["rs:fit:300:200"]));
    let o = t::ok(&["rt:fill", "rs:300:200:1"]);
    assert_eq!(o.resizing_type, ResizingType::Fill);
    assert!(o.enlarge);
    assert!(t::err(&["rs:fit2:300:200"]).contains("fit2"));
}

#[test]
fn resize_option() {
    let o = t::ok(&["rs:fill:300:400:1"]);
    assert_eq!(o.resizing_type, ResizingType::Fill);
    assert_eq!((o.width, o.height, o.enlarge), (300, 400, true));
    let o = t::ok(&["resize:fill-down:10:20:0:1:so:5:6"]);
    assert_eq!(o.resizing_type, ResizingType::FillDown);
    assert!(o.extend.enabled);
    assert_eq!(
        o.extend.gravity,
        Gravity {
            kind: GravityType::South,
            x: 5.0,
            y: 6.0
        }
    );
    // Empty arguments keep what was there.
    let o = t::ok(&["rs:fill:300:400", "rs::500"]);
    assert_eq!(
        (o.resizing_type, o.width, o.height),
        (ResizingType::Fill, 500, 400)
    );
    assert_eq!(
        t::err(&["rs:fill:abc"]),
        "invalid option `rs:fill:abc`: width must be an integer"
    );
    assert!(t::err(&["rs:fit:1:2:0:1:ce:0:0:9"]).contains("at most 8"));
    assert!(t::err(&["rs:wrong"]).contains("resizing type must be one of"));
}

// size:%width:%height:%enlarge:%extend
const SIZE: OptionDef = OptionDef {
    names: &["size", "s"],
    apply: apply_size,
};

fn apply_size(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 7)?;
    if let Some(w) = args.first().filter(|s| !s.is_empty()) {
        apply_width(a, &[w])?;
    }
    if let Some(h) = args.get(1).filter(|s| !s.is_empty()) {
        apply_height(a, &[h])?;
    }
    if let Some(e) = args.get(2).filter(|s| !s.is_empty()) {
        apply_enlarge(a, &[e])?;
    }
    if args.get(3).is_some_and(|s| !s.is_empty()) {
        apply_extend(a, &args[3..])?;
    }
    Ok(())
}

#[test]
fn size_option() {
    let o = t::ok(&["s:100:200:t:1"]);
    assert_eq!(
        (o.width, o.height, o.enlarge, o.extend.enabled),
        (100, 200, true, true)
    );
    let o = t::ok(&["size:100:200", "s::300"]);
    assert_eq!((o.width, o.height), (100, 300));
    assert_eq!(t::ok(&["s:::::"]), Options::default());
    assert!(t::err(&["s:1:2:3:4:5:6:7:8"]).contains("at most 7"));
    assert!(t::err(&["s:-1"]).contains("width must not be negative"));
}

// resizing_type:%resizing_type
const RESIZING_TYPE: OptionDef = OptionDef {
    names: &["resizing_type", "rt"],
    apply: apply_resizing_type,
};

fn apply_resizing_type(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    a.opts.resizing_type = ResizingType::from_name(args[0]).ok_or_else(|| {
        let names: Vec<&str> = ResizingType::ALL.iter().map(|t| t.as_str()).collect();
        bad(format!("resizing type must be one of {}", names.join(", ")))
    })?;
    Ok(())
}

#[test]
fn resizing_type_option() {
    for (name, rt) in [
        ("fit", ResizingType::Fit),
        ("fill", ResizingType::Fill),
        ("fill-down", ResizingType::FillDown),
        ("force", ResizingType::Force),
        ("auto", ResizingType::Auto),
    ] {
        assert_eq!(t::ok(&[&format!("rt:{name}")]).resizing_type, rt);
        assert_eq!(t::ok(&[&format!("resizing_type:{name}")]).resizing_type, rt);
    }
    assert!(t::err(&["rt:"]).contains("resizing type"));
    assert!(t::err(&["rt:Fill"]).contains("resizing type"));
}

// width:%width
const WIDTH: OptionDef = OptionDef {
    names: &["width", "w"],
    apply: apply_width,
};

fn apply_width(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    a.opts.width = parse_dimension(args[0], "width")?;
    Ok(())
}

#[test]
fn width_option() {
    assert_eq!(t::ok(&["w:300"]).width, 300);
    assert_eq!(t::ok(&["width:+7"]).width, 7);
    assert_eq!(t::ok(&["w:300", "w:0"]).width, 0);
    assert_eq!(
        t::err(&["w:"]),
        "invalid option `w:`: width must be an integer"
    );
    assert!(t::err(&["w:1.5"]).contains("integer"));
    assert!(t::err(&["w:1:2"]).contains("at most 1 argument,"));
    assert!(t::err(&["w:99999999999"]).contains("too large"));
}

// height:%height
const HEIGHT: OptionDef = OptionDef {
    names: &["height", "h"],
    apply: apply_height,
};

fn apply_height(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    a.opts.height = parse_dimension(args[0], "height")?;
    Ok(())
}

#[test]
fn height_option() {
    assert_eq!(t::ok(&["h:200"]).height, 200);
    assert_eq!(t::ok(&["height:0"]).height, 0);
    assert!(t::err(&["h:-3"]).contains("height must not be negative"));
}

// min-width:%width
const MIN_WIDTH: OptionDef = OptionDef {
    names: &["min-width", "mw"],
    apply: apply_min_width,
};

fn apply_min_width(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    a.opts.min_width = parse_bounded_dimension(args[0], "min width", MAX_SIZE_ARGUMENT)?;
    Ok(())
}

#[test]
fn min_width_option() {
    assert_eq!(t::ok(&["mw:50"]).min_width, 50);
    assert_eq!(t::ok(&["min-width:60"]).min_width, 60);
    assert!(t::err(&["min_width:60"]).contains("unknown option `min_width`"));
    assert_eq!(t::ok(&["mw:16383"]).min_width, 16383);
    assert_eq!(
        t::err(&["mw:16384"]),
        "invalid option `mw:16384`: min width must be at most 16383"
    );
}

// min-height:%height
const MIN_HEIGHT: OptionDef = OptionDef {
    names: &["min-height", "mh"],
    apply: apply_min_height,
};

fn apply_min_height(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    a.opts.min_height = parse_bounded_dimension(args[0], "min height", MAX_SIZE_ARGUMENT)?;
    Ok(())
}

#[test]
fn min_height_option() {
    assert_eq!(t::ok(&["mh:50"]).min_height, 50);
    assert_eq!(t::ok(&["min-height:70"]).min_height, 70);
    assert!(t::err(&["mh:x"]).contains("min height must be an integer"));
    assert_eq!(t::ok(&["mh:16383"]).min_height, 16383);
    assert!(t::err(&["mh:16384"]).contains("min height must be at most 16383"));
}

// zoom:%zoom_x_y  or  zoom:%zoom_x:%zoom_y
const ZOOM: OptionDef = OptionDef {
    names: &["zoom", "z"],
    apply: apply_zoom,
};

fn apply_zoom(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 2)?;
    let z = at_most(parse_positive_float(args[0], "zoom")?, MAX_FACTOR, "zoom")?;
    a.opts.zoom_width = z;
    a.opts.zoom_height = z;
    if let Some(h) = args.get(1) {
        a.opts.zoom_height = at_most(parse_positive_float(h, "zoom")?, MAX_FACTOR, "zoom")?;
    }
    Ok(())
}

#[test]
fn zoom_option() {
    let o = t::ok(&["z:1.5"]);
    assert_eq!((o.zoom_width, o.zoom_height), (1.5, 1.5));
    let o = t::ok(&["zoom:2:0.5"]);
    assert_eq!((o.zoom_width, o.zoom_height), (2.0, 0.5));
    assert!(t::err(&["z:0"]).contains("zoom must be greater than 0"));
    assert!(t::err(&["z:1:"]).contains("zoom must be a number"));
    assert!(t::err(&["z:inf"]).contains("zoom must be a number"));
    assert_eq!(t::ok(&["z:16383"]).zoom_width, 16383.0);
    assert!(t::err(&["z:16383.5"]).contains("zoom must be at most 16383"));
    assert!(t::err(&["z:1:1e300"]).contains("zoom must be at most 16383"));
}

#[test]
fn zoom_of_4294967396_is_refused() {
    // Guards: `w:1/z:4294967396/ex:1` parsed, then panicked in transform (the zoomed
    // extend canvas, 4294967396 wide, wrapped to 100 in geometry; its left offset did
    // not). It is now refused here, naming the option.
    let e = parse(
        &t::segs(&["w:1", "z:4294967396", "ex:1"]),
        &ParseContext::default(),
    )
    .unwrap_err();
    assert_eq!(e.segment(), "z:4294967396");
    assert!(e.to_string().contains("zoom must be at most 16383"), "{e}");
}

// dpr:%dpr
const DPR: OptionDef = OptionDef {
    names: &["dpr"],
    apply: apply_dpr,
};

fn apply_dpr(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    a.opts.dpr = at_most(parse_positive_float(args[0], "dpr")?, MAX_FACTOR, "dpr")?;
    Ok(())
}

#[test]
fn dpr_option() {
    assert_eq!(t::ok(&["dpr:2"]).dpr, 2.0);
    assert_eq!(t::ok(&["dpr:0.5"]).dpr, 0.5);
    assert!(t::err(&["dpr:0"]).contains("greater than 0"));
    assert!(t::err(&["dpr:-1"]).contains("greater than 0"));
    assert!(t::err(&["dpr:20000"]).contains("dpr must be at most 16383"));
}

// enlarge:%enlarge
const ENLARGE: OptionDef = OptionDef {
    names: &["enlarge", "el"],
    apply: apply_enlarge,
};

fn apply_enlarge(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    a.opts.enlarge = parse_bool(args[0]);
    Ok(())
}

#[test]
fn enlarge_option() {
    for yes in ["1", "t", "T", "true", "TRUE", "True"] {
        assert!(t::ok(&[&format!("el:{yes}")]).enlarge, "{yes}");
    }
    for no in ["0", "f", "F", "false", "FALSE", "False", "", "yes", "tRuE"] {
        assert!(!t::ok(&["el:1", &format!("enlarge:{no}")]).enlarge, "{no}");
    }
}

// extend:%extend:%gravity:%x:%y
const EXTEND: OptionDef = OptionDef {
    names: &["extend", "ex"],
    apply: apply_extend,
};

fn apply_extend(a: &mut Applier<'_>, args: &[&str]) -> Res {
    parse_extend(&mut a.opts.extend, args, "extend gravity")
}

#[test]
fn extend_option() {
    let o = t::ok(&["ex:1"]);
    assert_eq!(
        o.extend,
        Extend {
            enabled: true,
            gravity: Gravity::default()
        }
    );
    let o = t::ok(&["extend:t:noea:3:4"]);
    assert_eq!(o.extend.gravity.kind, GravityType::NorthEast);
    assert_eq!((o.extend.gravity.x, o.extend.gravity.y), (3.0, 4.0));
    let o = t::ok(&["ex:1:fp:0.25:0.75"]);
    assert_eq!(o.extend.gravity.kind, GravityType::FocusPoint);
    assert!(t::err(&["ex:1:sm"]).contains("extend gravity must be one of"));
    assert!(t::err(&["ex:1:ce:1:2:3"]).contains("at most 4"));
}

// extend_aspect_ratio:%extend:%gravity:%x:%y
const EXTEND_ASPECT_RATIO: OptionDef = OptionDef {
    names: &["extend_aspect_ratio", "extend_ar", "exar"],
    apply: apply_extend_aspect_ratio,
};

fn apply_extend_aspect_ratio(a: &mut Applier<'_>, args: &[&str]) -> Res {
    parse_extend(
        &mut a.opts.extend_aspect_ratio,
        args,
        "extend aspect ratio gravity",
    )
}

#[test]
fn extend_aspect_ratio_option() {
    for name in ["extend_aspect_ratio", "extend_ar", "exar"] {
        let o = t::ok(&[&format!("{name}:1:so")]);
        assert!(o.extend_aspect_ratio.enabled);
        assert_eq!(o.extend_aspect_ratio.gravity.kind, GravityType::South);
        assert!(!o.extend.enabled);
    }
}

// gravity:%type:%x_offset:%y_offset
const GRAVITY: OptionDef = OptionDef {
    names: &["gravity", "g"],
    apply: apply_gravity,
};

fn apply_gravity(a: &mut Applier<'_>, args: &[&str]) -> Res {
    parse_gravity(&mut a.opts.gravity, args, GravitySet::Crop, "gravity")
}

#[test]
fn gravity_option() {
    for kind in GravityType::ALL {
        if kind == GravityType::FocusPoint {
            continue;
        }
        assert_eq!(t::ok(&[&format!("g:{}", kind.as_str())]).gravity.kind, kind);
    }
    let g = t::ok(&["g:nowe:10:-20"]).gravity;
    assert_eq!((g.kind, g.x, g.y), (GravityType::NorthWest, 10.0, -20.0));
    let g = t::ok(&["gravity:fp:0.3:0.6"]).gravity;
    assert_eq!((g.kind, g.x, g.y), (GravityType::FocusPoint, 0.3, 0.6));
    // Offsets not given are kept; smart resets them.
    let g = t::ok(&["g:no:10:20", "g:so"]).gravity;
    assert_eq!((g.kind, g.x, g.y), (GravityType::South, 10.0, 20.0));
    let g = t::ok(&["g:no:10:20", "g:sm"]).gravity;
    assert_eq!((g.kind, g.x, g.y), (GravityType::Smart, 0.0, 0.0));
    assert!(t::err(&["g:fp:0.5"]).contains("needs exactly x and y"));
    assert!(t::err(&["g:fp:1.5:0"]).contains("between 0 and 1"));
    assert!(t::err(&["g:sm:1"]).contains("takes no offsets"));
    assert!(t::err(&["g:ce:1:2:3"]).contains("at most 2 offsets"));
    assert!(t::err(&["g:up"]).contains("gravity must be one of ce, no"));
    assert!(t::err(&["g:no:x"]).contains("gravity x offset must be a number"));
    // Absolute offsets stay within the result ceiling, either way.
    assert_eq!(t::ok(&["g:so:-16383:16383"]).gravity.x, -16383.0);
    assert!(
        t::err(&["g:so:0:16384"]).contains("gravity y offset must be between -16383 and 16383")
    );
    assert!(t::err(&["c:1:1:no:-1e300"]).contains("crop gravity x offset must be between"));
    assert!(t::err(&["ex:1:ea:99999"]).contains("extend gravity x offset must be between"));
    assert!(t::err(&["exar:1:ea:0:-99999"]).contains("extend aspect ratio gravity y offset"));
}

// crop:%width:%height:%gravity
const CROP: OptionDef = OptionDef {
    names: &["crop", "c"],
    apply: apply_crop,
};

fn apply_crop(a: &mut Applier<'_>, args: &[&str]) -> Res {
    a.opts.crop.width = parse_non_negative_float(args[0], "crop width")?;
    if let Some(h) = args.get(1) {
        a.opts.crop.height = parse_non_negative_float(h, "crop height")?;
    }
    if args.len() > 2 {
        let mut g = a.opts.crop.gravity.unwrap_or_default();
        parse_gravity(&mut g, &args[2..], GravitySet::Crop, "crop gravity")?;
        a.opts.crop.gravity = Some(g);
    }
    Ok(())
}

#[test]
fn crop_option() {
    let c = t::ok(&["c:100:0.5"]).crop;
    assert_eq!((c.width, c.height, c.gravity), (100.0, 0.5, None));
    let c = t::ok(&["crop:10:20:sm"]).crop;
    assert_eq!(c.gravity.map(|g| g.kind), Some(GravityType::Smart));
    let c = t::ok(&["c:10:20:fp:0.1:0.9"]).crop;
    assert_eq!(
        c.gravity,
        Some(Gravity {
            kind: GravityType::FocusPoint,
            x: 0.1,
            y: 0.9
        })
    );
    assert!(t::err(&["c:-1"]).contains("crop width must not be negative"));
    assert!(t::err(&["c:"]).contains("crop width must be a number"));
    assert!(t::err(&["c:1:2:no:1:2:3"]).contains("at most 2 offsets"));
}

// trim:%threshold:%color:%equal_hor:%equal_ver
const TRIM: OptionDef = OptionDef {
    names: &["trim", "t"],
    apply: apply_trim,
};

fn apply_trim(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 4)?;
    let threshold = parse_non_negative_float(args[0], "trim threshold")?;
    let trim = &mut a.opts.trim;
    trim.enabled = true;
    trim.threshold = threshold;
    if let Some(c) = args.get(1).filter(|s| !s.is_empty()) {
        trim.color = Some(parse_color(c, "trim colour")?);
    }
    if let Some(h) = args.get(2).filter(|s| !s.is_empty()) {
        trim.equal_hor = parse_bool(h);
    }
    if let Some(v) = args.get(3).filter(|s| !s.is_empty()) {
        trim.equal_ver = parse_bool(v);
    }
    Ok(())
}

#[test]
fn trim_option() {
    let tr = t::ok(&["t:5"]).trim;
    assert!(tr.enabled);
    assert_eq!((tr.threshold, tr.color), (5.0, None));
    let tr = t::ok(&["trim:0:fff:1:t"]).trim;
    assert_eq!(tr.color, Some(Rgb::WHITE));
    assert!(tr.equal_hor && tr.equal_ver);
    assert!(t::err(&["t:"]).contains("trim threshold must be a number"));
    assert!(t::err(&["t:1:ffff"]).contains("hex colour"));
}

// padding:%top:%right:%bottom:%left
const PADDING: OptionDef = OptionDef {
    names: &["padding", "pd"],
    apply: apply_padding,
};

fn apply_padding(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 4)?;
    let p = &mut a.opts.padding;
    if let Some(v) = args.first().filter(|s| !s.is_empty()) {
        let v = parse_bounded_dimension(v, "padding top (and all sides)", MAX_SIZE_ARGUMENT)?;
        *p = Padding {
            top: v,
            right: v,
            bottom: v,
            left: v,
        };
    }
    if let Some(v) = args.get(1).filter(|s| !s.is_empty()) {
        p.right = parse_bounded_dimension(v, "padding right (and left)", MAX_SIZE_ARGUMENT)?;
        p.left = p.right;
    }
    if let Some(v) = args.get(2).filter(|s| !s.is_empty()) {
        p.bottom = parse_bounded_dimension(v, "padding bottom", MAX_SIZE_ARGUMENT)?;
    }
    if let Some(v) = args.get(3).filter(|s| !s.is_empty()) {
        p.left = parse_bounded_dimension(v, "padding left", MAX_SIZE_ARGUMENT)?;
    }
    Ok(())
}

#[test]
fn padding_option() {
    let pad = |s| t::ok(&[s]).padding;
    let p = |top, right, bottom, left| Padding {
        top,
        right,
        bottom,
        left,
    };
    assert_eq!(pad("pd:10"), p(10, 10, 10, 10));
    assert_eq!(pad("pd:10:20"), p(10, 20, 10, 20));
    assert_eq!(pad("pd:10:20:30"), p(10, 20, 30, 20));
    assert_eq!(pad("padding:10:20:30:40"), p(10, 20, 30, 40));
    assert_eq!(pad("pd::5"), p(0, 5, 0, 5));
    assert!(!pad("pd:0").is_enabled());
    assert!(pad("pd:0:0:1").is_enabled());
    assert!(t::err(&["pd:1:2:3:4:5"]).contains("at most 4"));
    assert!(t::err(&["pd:a"]).contains("padding top"));
    assert_eq!(pad("pd:16383:0"), p(16383, 0, 16383, 0));
    assert!(t::err(&["pd:16384"]).contains("padding top (and all sides) must be at most 16383"));
    assert!(t::err(&["pd:0:0:0:4294967295"]).contains("padding left must be at most"));
}

// auto_rotate:%auto_rotate
const AUTO_ROTATE: OptionDef = OptionDef {
    names: &["auto_rotate", "ar"],
    apply: apply_auto_rotate,
};

fn apply_auto_rotate(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    a.opts.auto_rotate = Some(parse_bool(args[0]));
    Ok(())
}

#[test]
fn auto_rotate_option() {
    assert_eq!(t::ok(&[]).auto_rotate, None);
    assert_eq!(t::ok(&["ar:0"]).auto_rotate, Some(false));
    assert_eq!(t::ok(&["auto_rotate:1"]).auto_rotate, Some(true));
}

// rotate:%angle
const ROTATE: OptionDef = OptionDef {
    names: &["rotate", "rot"],
    apply: apply_rotate,
};

fn apply_rotate(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    let angle = parse_int(args[0], "rotation angle")?;
    if angle % 90 != 0 {
        return Err(bad("rotation angle must be a multiple of 90"));
    }
    // 0, 90, 180 or 270: fits.
    a.opts.rotate = angle.rem_euclid(360) as u16;
    Ok(())
}

#[test]
fn rotate_option() {
    assert_eq!(t::ok(&["rot:90"]).rotate, 90);
    assert_eq!(t::ok(&["rotate:450"]).rotate, 90);
    assert_eq!(t::ok(&["rot:-90"]).rotate, 270);
    assert_eq!(t::ok(&["rot:360"]).rotate, 0);
    assert!(t::err(&["rot:45"]).contains("multiple of 90"));
}

// flip:%horizontal:%vertical
const FLIP: OptionDef = OptionDef {
    names: &["flip", "fl"],
    apply: apply_flip,
};

fn apply_flip(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 2)?;
    if !args[0].is_empty() {
        a.opts.flip.horizontal = parse_bool(args[0]);
    }
    if let Some(v) = args.get(1).filter(|s| !s.is_empty()) {
        a.opts.flip.vertical = parse_bool(v);
    }
    Ok(())
}

#[test]
fn flip_option() {
    let f = t::ok(&["fl:1"]).flip;
    assert!(f.horizontal && !f.vertical);
    let f = t::ok(&["fl:1:1", "flip::0"]).flip;
    assert!(f.horizontal && !f.vertical);
    assert!(t::err(&["fl:1:1:1"]).contains("at most 2"));
}

// background:%r:%g:%b  or  background:%hex  or  background: (off)
const BACKGROUND: OptionDef = OptionDef {
    names: &["background", "bg"],
    apply: apply_background,
};

fn apply_background(a: &mut Applier<'_>, args: &[&str]) -> Res {
    a.opts.background = match args {
        [""] => None,
        [hex] => Some(parse_color(hex, "background")?),
        [r, g, b] => Some(Rgb {
            r: parse_channel(r, "background red")?,
            g: parse_channel(g, "background green")?,
            b: parse_channel(b, "background blue")?,
        }),
        _ => return Err(bad("background takes r:g:b, a hex colour, or nothing")),
    };
    Ok(())
}

#[test]
fn background_option() {
    let red = Some(Rgb { r: 255, g: 0, b: 0 });
    assert_eq!(t::ok(&["bg:255:0:0"]).background, red);
    assert_eq!(t::ok(&["bg:ff0000"]).background, red);
    assert_eq!(t::ok(&["background:F00"]).background, red);
    assert_eq!(t::ok(&["bg:f00", "bg:"]).background, None);
    assert!(t::err(&["bg:256:0:0"]).contains("background red"));
    assert!(t::err(&["bg:+1:0:0"]).contains("background red"));
    assert!(t::err(&["bg:1:2"]).contains("background takes"));
    assert!(t::err(&["bg:#fff"]).contains("hex colour"));
}

// blur:%sigma
const BLUR: OptionDef = OptionDef {
    names: &["blur", "bl"],
    apply: apply_blur,
};

fn apply_blur(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    // At most MAX_BLUR_SIGMA: exact in f32.
    a.opts.blur = at_most(
        parse_non_negative_float(args[0], "blur")?,
        MAX_BLUR_SIGMA,
        "blur",
    )? as f32;
    Ok(())
}

#[test]
fn blur_option() {
    assert_eq!(t::ok(&["bl:2.5"]).blur, 2.5);
    assert_eq!(t::ok(&["blur:0"]).blur, 0.0);
    assert!(t::err(&["bl:-1"]).contains("blur must not be negative"));
    assert_eq!(t::ok(&["bl:100"]).blur, 100.0);
    assert_eq!(
        t::err(&["bl:600"]),
        "invalid option `bl:600`: blur must be at most 100"
    );
    // Once read as f32 infinity.
    assert!(t::err(&["bl:1e300"]).contains("at most 100"));
}

// sharpen:%sigma
const SHARPEN: OptionDef = OptionDef {
    names: &["sharpen", "sh"],
    apply: apply_sharpen,
};

fn apply_sharpen(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    a.opts.sharpen = at_most(
        parse_non_negative_float(args[0], "sharpen")?,
        MAX_SHARPEN_SIGMA,
        "sharpen",
    )? as f32;
    Ok(())
}

#[test]
fn sharpen_option() {
    assert_eq!(t::ok(&["sh:0.5"]).sharpen, 0.5);
    assert!(t::err(&["sharpen:x"]).contains("sharpen must be a number"));
    assert_eq!(t::ok(&["sh:100"]).sharpen, 100.0);
    assert!(t::err(&["sh:100.5"]).contains("sharpen must be at most 100"));
}

// pixelate:%size
const PIXELATE: OptionDef = OptionDef {
    names: &["pixelate", "pix"],
    apply: apply_pixelate,
};

fn apply_pixelate(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    a.opts.pixelate = parse_bounded_dimension(args[0], "pixelate size", MAX_SIZE_ARGUMENT)?;
    Ok(())
}

#[test]
fn pixelate_option() {
    assert_eq!(t::ok(&["pix:8"]).pixelate, 8);
    assert_eq!(t::ok(&["pixelate:0"]).pixelate, 0);
    assert!(t::err(&["pix:1.5"]).contains("pixelate size must be an integer"));
    assert_eq!(t::ok(&["pix:16383"]).pixelate, 16383);
    assert!(t::err(&["pix:16384"]).contains("pixelate size must be at most 16383"));
}

// watermark:%opacity:%position:%x_offset:%y_offset:%scale
const WATERMARK: OptionDef = OptionDef {
    names: &["watermark", "wm"],
    apply: apply_watermark,
};

fn apply_watermark(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 7)?;
    let opacity = parse_float(args[0], "watermark opacity")?;
    if !(0.0..=1.0).contains(&opacity) {
        return Err(bad("watermark opacity must be between 0 and 1"));
    }
    let wm = &mut a.opts.watermark;
    wm.enabled = opacity > 0.0;
    wm.opacity = opacity;
    if let Some(p) = args.get(1).filter(|s| !s.is_empty()) {
        if *p == "re" {
            wm.replicate = true;
        } else {
            wm.position = GravityType::from_name(p)
                .filter(|k| !matches!(k, GravityType::Smart | GravityType::FocusPoint))
                .ok_or_else(|| {
                    bad("watermark position must be one of ce, no, ea, so, we, nowe, noea, sowe, soea, re")
                })?;
            wm.replicate = false;
        }
    }
    if let Some(x) = args.get(2).filter(|s| !s.is_empty()) {
        wm.x_offset = parse_float(x, "watermark x offset")?;
        check_offset(wm.x_offset, "watermark x offset")?;
    }
    if let Some(y) = args.get(3).filter(|s| !s.is_empty()) {
        wm.y_offset = parse_float(y, "watermark y offset")?;
        check_offset(wm.y_offset, "watermark y offset")?;
    }
    if let Some(s) = args.get(4).filter(|s| !s.is_empty()) {
        wm.scale = parse_non_negative_float(s, "watermark scale")?;
    }
    Ok(())
}

#[test]
fn watermark_option() {
    let w = t::ok(&["wm:0.5:soea:10:20:0.3"]).watermark;
    assert!(w.enabled && !w.replicate);
    assert_eq!(
        (w.opacity, w.position, w.x_offset, w.y_offset, w.scale),
        (0.5, GravityType::SouthEast, 10.0, 20.0, 0.3)
    );
    assert!(t::ok(&["watermark:1:re"]).watermark.replicate);
    assert!(!t::ok(&["wm:0"]).watermark.enabled);
    assert!(t::err(&["wm:2"]).contains("between 0 and 1"));
    assert!(t::err(&["wm:1:sm"]).contains("watermark position"));
    assert!(t::err(&["wm:1:ce:1e10"]).contains("watermark x offset must be between"));
    assert!(t::err(&["wm:1:ce:0:-16384"]).contains("watermark y offset must be between"));
}

// strip_metadata:%strip_metadata
const STRIP_METADATA: OptionDef = OptionDef {
    names: &["strip_metadata", "sm"],
    apply: apply_strip_metadata,
};

fn apply_strip_metadata(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    a.opts.strip_metadata = Some(parse_bool(args[0]));
    Ok(())
}

#[test]
fn strip_metadata_option() {
    assert_eq!(t::ok(&["sm:0"]).strip_metadata, Some(false));
    assert_eq!(t::ok(&["strip_metadata:t"]).strip_metadata, Some(true));
}

// keep_copyright:%keep_copyright
const KEEP_COPYRIGHT: OptionDef = OptionDef {
    names: &["keep_copyright", "kcr"],
    apply: apply_keep_copyright,
};

fn apply_keep_copyright(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    a.opts.keep_copyright = Some(parse_bool(args[0]));
    Ok(())
}

#[test]
fn keep_copyright_option() {
    assert_eq!(t::ok(&["kcr:false"]).keep_copyright, Some(false));
    assert_eq!(t::ok(&["keep_copyright:1"]).keep_copyright, Some(true));
}

// strip_color_profile:%strip_color_profile
const STRIP_COLOR_PROFILE: OptionDef = OptionDef {
    names: &["strip_color_profile", "scp"],
    apply: apply_strip_color_profile,
};

fn apply_strip_color_profile(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    a.opts.strip_color_profile = Some(parse_bool(args[0]));
    Ok(())
}

#[test]
fn strip_color_profile_option() {
    assert_eq!(t::ok(&["scp:0"]).strip_color_profile, Some(false));
    assert_eq!(
        t::ok(&["strip_color_profile:1"]).strip_color_profile,
        Some(true)
    );
}

// enforce_thumbnail:%enforce_thumbnail
const ENFORCE_THUMBNAIL: OptionDef = OptionDef {
    names: &["enforce_thumbnail", "eth"],
    apply: apply_enforce_thumbnail,
};

fn apply_enforce_thumbnail(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    a.opts.enforce_thumbnail = Some(parse_bool(args[0]));
    Ok(())
}

#[test]
fn enforce_thumbnail_option() {
    assert_eq!(t::ok(&["eth:1"]).enforce_thumbnail, Some(true));
    assert_eq!(
        t::ok(&["enforce_thumbnail:0"]).enforce_thumbnail,
        Some(false)
    );
}

// quality:%quality
const QUALITY: OptionDef = OptionDef {
    names: &["quality", "q"],
    apply: apply_quality,
};

fn apply_quality(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    a.opts.quality = parse_quality(args[0], "quality")?;
    Ok(())
}

#[test]
fn quality_option() {
    assert_eq!(t::ok(&["q:80"]).quality, 80);
    assert_eq!(t::ok(&["quality:0"]).quality, 0);
    assert!(t::err(&["q:101"]).contains("between 0 and 100"));
    assert!(t::err(&["q:"]).contains("quality must be an integer"));
}

// format_quality:%format1:%quality1:%format2:%quality2:...
const FORMAT_QUALITY: OptionDef = OptionDef {
    names: &["format_quality", "fq"],
    apply: apply_format_quality,
};

fn apply_format_quality(a: &mut Applier<'_>, args: &[&str]) -> Res {
    if !args.len().is_multiple_of(2) {
        let last = args.last().copied().unwrap_or_default();
        return Err(bad(format!("missing quality for `{last}`")));
    }
    for pair in args.chunks(2) {
        let format = parse_format(pair[0])?;
        let q = parse_quality(pair[1], &format!("quality for {}", pair[0]))?;
        a.opts.format_quality.insert(format, q);
    }
    Ok(())
}

#[test]
fn format_quality_option() {
    let fq = t::ok(&["fq:jpg:70:webp:60", "format_quality:jpeg:75"]).format_quality;
    assert_eq!(fq.get(&ImageFormat::Jpeg), Some(&75));
    assert_eq!(fq.get(&ImageFormat::Webp), Some(&60));
    assert!(t::err(&["fq:jpeg"]).contains("missing quality for `jpeg`"));
    assert!(t::err(&["fq:"]).contains("missing quality"));
    assert!(t::err(&["fq:xyz:1"]).contains("not a supported image format"));
    assert!(t::err(&["fq:png:200"]).contains("quality for png must be between"));
}

// max_bytes:%bytes
const MAX_BYTES: OptionDef = OptionDef {
    names: &["max_bytes", "mb"],
    apply: apply_max_bytes,
};

fn apply_max_bytes(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    let v = parse_int(args[0], "max bytes")?;
    a.opts.max_bytes = u64::try_from(v).map_err(|_| bad("max bytes must not be negative"))?;
    Ok(())
}

#[test]
fn max_bytes_option() {
    assert_eq!(t::ok(&["mb:10240"]).max_bytes, 10240);
    assert_eq!(t::ok(&["max_bytes:0"]).max_bytes, 0);
    assert!(t::err(&["mb:-1"]).contains("must not be negative"));
}

// format:%extension
const FORMAT: OptionDef = OptionDef {
    names: &["format", "f", "ext"],
    apply: apply_format,
};

fn apply_format(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    a.opts.format = Some(parse_format(args[0])?);
    Ok(())
}

#[test]
fn format_option() {
    assert_eq!(t::ok(&["f:png"]).format, Some(ImageFormat::Png));
    assert_eq!(t::ok(&["format:jpg"]).format, Some(ImageFormat::Jpeg));
    assert_eq!(t::ok(&["ext:avif"]).format, Some(ImageFormat::Avif));
    for f in ImageFormat::ALL {
        assert_eq!(t::ok(&[&format!("f:{}", f.as_str())]).format, Some(f));
    }
    assert!(t::err(&["f:PNG"]).contains("not a supported image format"));
    assert!(t::err(&["f:"]).contains("not a supported image format"));
}

// skip_processing:%extension1:%extension2:...
const SKIP_PROCESSING: OptionDef = OptionDef {
    names: &["skip_processing", "skp"],
    apply: apply_skip_processing,
};

fn apply_skip_processing(a: &mut Applier<'_>, args: &[&str]) -> Res {
    for f in args {
        let f = parse_format(f)?;
        a.opts.skip_processing.insert(f);
    }
    Ok(())
}

#[test]
fn skip_processing_option() {
    let s = t::ok(&["skp:svg:gif", "skip_processing:jpg"]).skip_processing;
    assert_eq!(
        s.into_iter().collect::<Vec<_>>(),
        [ImageFormat::Jpeg, ImageFormat::Gif, ImageFormat::Svg]
    );
    assert!(t::err(&["skp:svg:nope"]).contains("`nope` is not a supported"));
}

// raw:%raw
const RAW: OptionDef = OptionDef {
    names: &["raw"],
    apply: apply_raw,
};

fn apply_raw(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    a.opts.raw = parse_bool(args[0]);
    Ok(())
}

#[test]
fn raw_option() {
    let mut o = t::ok(&["raw:1"]);
    assert!(o.raw);
    // With raw, the source URL's extension is not applied as the format.
    o.apply_extension("png").unwrap();
    assert_eq!(o.format, None);
    let mut o = t::ok(&[]);
    o.apply_extension("png").unwrap();
    assert_eq!(o.format, Some(ImageFormat::Png));
    assert!(
        o.apply_extension("exe")
            .unwrap_err()
            .to_string()
            .contains("`@exe`")
    );
}

// cachebuster:%string
const CACHEBUSTER: OptionDef = OptionDef {
    names: &["cachebuster", "cb"],
    apply: apply_cachebuster,
};

fn apply_cachebuster(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    a.opts.cachebuster = args[0].to_string();
    Ok(())
}

#[test]
fn cachebuster_option() {
    assert_eq!(t::ok(&["cb:v2"]).cachebuster, "v2");
    assert_eq!(t::ok(&["cb:v2", "cachebuster:"]).cachebuster, "");
}

// expires:%timestamp
const EXPIRES: OptionDef = OptionDef {
    names: &["expires", "exp"],
    apply: apply_expires,
};

fn apply_expires(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    let ts = parse_int(args[0], "expires (a unix timestamp)")?;
    if ts > 0 && ts < a.ctx.now() {
        return Err(Failure::Expired(ts));
    }
    a.opts.expires = Some(ts);
    Ok(())
}

#[test]
fn expires_option() {
    let ctx = ParseContext {
        now_unix: Some(1_000),
        ..ParseContext::default()
    };
    let o = parse(&t::segs(&["exp:2000"]), &ctx).unwrap();
    assert_eq!(o.expires, Some(2000));
    assert_eq!(
        parse(&t::segs(&["expires:0"]), &ctx).unwrap().expires,
        Some(0)
    );
    let e = parse(&t::segs(&["exp:999"]), &ctx).unwrap_err();
    assert_eq!(
        e,
        OptionsError::Expired {
            segment: "exp:999".into(),
            expires: 999
        }
    );
    assert!(t::err(&["exp:soon"]).contains("unix timestamp"));
}

// filename:%filename:%encoded
const FILENAME: OptionDef = OptionDef {
    names: &["filename", "fn"],
    apply: apply_filename,
};

/// URL-safe base64, padding optional, lenient about trailing bits (Go's
/// `RawURLEncoding`, non-strict).
const FILENAME_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

fn apply_filename(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 2)?;
    let encoded = args.get(1).is_some_and(|s| parse_bool(s));
    a.opts.filename = Some(if encoded {
        let bytes = FILENAME_BASE64
            .decode(args[0].trim_end_matches('='))
            .map_err(|_| bad("file name must be URL-safe base64"))?;
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        args[0].to_string()
    });
    Ok(())
}

#[test]
fn filename_option() {
    assert_eq!(t::ok(&["fn:cat"]).filename.as_deref(), Some("cat"));
    // "my cat.png" in URL-safe base64, without and with padding.
    assert_eq!(
        t::ok(&["fn:bXkgY2F0LnBuZw:1"]).filename.as_deref(),
        Some("my cat.png")
    );
    assert_eq!(
        t::ok(&["filename:bXkgY2F0LnBuZw==:t"]).filename.as_deref(),
        Some("my cat.png")
    );
    assert_eq!(
        t::ok(&["fn:bXkgY2F0LnBuZw:0"]).filename.as_deref(),
        Some("bXkgY2F0LnBuZw")
    );
    assert!(t::err(&["fn:***:1"]).contains("base64"));
}

// return_attachment:%return_attachment
const RETURN_ATTACHMENT: OptionDef = OptionDef {
    names: &["return_attachment", "att"],
    apply: apply_return_attachment,
};

fn apply_return_attachment(a: &mut Applier<'_>, args: &[&str]) -> Res {
    max_args(args, 1)?;
    a.opts.return_attachment = Some(parse_bool(args[0]));
    Ok(())
}

#[test]
fn return_attachment_option() {
    assert_eq!(t::ok(&["att:1"]).return_attachment, Some(true));
    assert_eq!(
        t::ok(&["return_attachment:0"]).return_attachment,
        Some(false)
    );
}

// preset:%preset_name1:%preset_name2:...
const PRESET: OptionDef = OptionDef {
    names: &["preset", "pr"],
    apply: apply_preset,
};

fn apply_preset(a: &mut Applier<'_>, args: &[&str]) -> Res {
    a.apply_presets(args)
}

#[test]
fn preset_option() {
    let mut presets = HashMap::new();
    presets.insert("thumb".to_string(), t::segs(&["rs:fill:100:100", "q:70"]));
    presets.insert("sharp".to_string(), t::segs(&["sh:1", "pr:loop"]));
    presets.insert("loop".to_string(), t::segs(&["pr:sharp", "bl:2"]));
    presets.insert("broken".to_string(), t::segs(&["w:x"]));
    let ctx = ParseContext {
        presets,
        ..ParseContext::default()
    };
    // Applied in place: later options win, earlier ones are overridden.
    let o = parse(&t::segs(&["w:50", "pr:thumb", "q:90"]), &ctx).unwrap();
    assert_eq!((o.width, o.height, o.quality), (100, 100, 90));
    assert_eq!(o.used_presets, ["thumb"]);
    // Recursion is skipped, not an error.
    let o = parse(&t::segs(&["preset:sharp"]), &ctx).unwrap();
    assert_eq!((o.sharpen, o.blur), (1.0, 2.0));
    assert_eq!(o.used_presets, ["sharp", "loop"]);
    let e = parse(&t::segs(&["pr:nope"]), &ctx).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid option `pr:nope`: unknown preset `nope`"
    );
    // An error inside a preset names the preset's segment.
    let e = parse(&t::segs(&["pr:broken"]), &ctx).unwrap_err();
    assert_eq!(e.segment(), "w:x");
}

#[test]
fn default_preset_applies_first() {
    let mut presets = HashMap::new();
    presets.insert("default".to_string(), t::segs(&["q:50", "rt:fill"]));
    let ctx = ParseContext {
        presets,
        ..ParseContext::default()
    };
    let o = parse(&t::segs(&["q:80"]), &ctx).unwrap();
    assert_eq!((o.quality, o.resizing_type), (80, ResizingType::Fill));
    assert_eq!(o.used_presets, ["default"]);
    let o = parse_presets_only(&t::segs(&["default"]), &ctx).unwrap();
    assert_eq!(o.quality, 50);
    assert!(parse_presets_only(&t::segs(&["zzz"]), &ctx).is_err());
}

// max_src_resolution:%megapixels
const MAX_SRC_RESOLUTION: OptionDef = OptionDef {
    names: &["max_src_resolution", "msr"],
    apply: apply_max_src_resolution,
};

fn apply_max_src_resolution(a: &mut Applier<'_>, args: &[&str]) -> Res {
    security_allowed(a)?;
    max_args(args, 1)?;
    let mp = parse_positive_float(args[0], "max source resolution")?;
    a.opts.security.max_src_resolution = Some((mp * 1_000_000.0) as u64);
    Ok(())
}

#[test]
fn max_src_resolution_option() {
    assert_eq!(
        t::err(&["msr:1"]),
        "invalid option `msr:1`: security options are not allowed"
    );
    let o = t::secure(&["max_src_resolution:2.5"]).unwrap();
    assert_eq!(o.security.max_src_resolution, Some(2_500_000));
    assert!(t::secure(&["msr:0"]).is_err());
}

// max_src_file_size:%bytes
const MAX_SRC_FILE_SIZE: OptionDef = OptionDef {
    names: &["max_src_file_size", "msfs"],
    apply: apply_max_src_file_size,
};

fn apply_max_src_file_size(a: &mut Applier<'_>, args: &[&str]) -> Res {
    security_allowed(a)?;
    max_args(args, 1)?;
    a.opts.security.max_src_file_size = Some(parse_int(args[0], "max source file size")?);
    Ok(())
}

#[test]
fn max_src_file_size_option() {
    assert!(t::err(&["msfs:10"]).contains("security options are not allowed"));
    let o = t::secure(&["msfs:1048576"]).unwrap();
    assert_eq!(o.security.max_src_file_size, Some(1_048_576));
}

// max_animation_frames:%frames
const MAX_ANIMATION_FRAMES: OptionDef = OptionDef {
    names: &["max_animation_frames", "maf"],
    apply: apply_max_animation_frames,
};

fn apply_max_animation_frames(a: &mut Applier<'_>, args: &[&str]) -> Res {
    security_allowed(a)?;
    max_args(args, 1)?;
    let v = parse_int(args[0], "max animation frames")?;
    if v <= 0 {
        return Err(bad("max animation frames must be greater than 0"));
    }
    a.opts.security.max_animation_frames =
        Some(u32::try_from(v).map_err(|_| bad("max animation frames is too large"))?);
    Ok(())
}

#[test]
fn max_animation_frames_option() {
    assert!(t::err(&["maf:10"]).contains("security options are not allowed"));
    let o = t::secure(&["max_animation_frames:10"]).unwrap();
    assert_eq!(o.security.max_animation_frames, Some(10));
    assert!(t::secure(&["maf:0"]).is_err());
}

// max_animation_frame_resolution:%megapixels
const MAX_ANIMATION_FRAME_RESOLUTION: OptionDef = OptionDef {
    names: &["max_animation_frame_resolution", "mafr"],
    apply: apply_max_animation_frame_resolution,
};

fn apply_max_animation_frame_resolution(a: &mut Applier<'_>, args: &[&str]) -> Res {
    security_allowed(a)?;
    max_args(args, 1)?;
    let mp = parse_non_negative_float(args[0], "max animation frame resolution")?;
    a.opts.security.max_animation_frame_resolution = Some((mp * 1_000_000.0) as u64);
    Ok(())
}

#[test]
fn max_animation_frame_resolution_option() {
    assert!(t::err(&["mafr:1"]).contains("security options are not allowed"));
    let o = t::secure(&["mafr:0.5"]).unwrap();
    assert_eq!(o.security.max_animation_frame_resolution, Some(500_000));
}

// max_result_dimension:%size
const MAX_RESULT_DIMENSION: OptionDef = OptionDef {
    names: &["max_result_dimension", "mrd"],
    apply: apply_max_result_dimension,
};

fn apply_max_result_dimension(a: &mut Applier<'_>, args: &[&str]) -> Res {
    security_allowed(a)?;
    max_args(args, 1)?;
    a.opts.security.max_result_dimension = Some(parse_int(args[0], "max result dimension")?);
    Ok(())
}

#[test]
fn max_result_dimension_option() {
    assert!(t::err(&["mrd:100"]).contains("security options are not allowed"));
    let o = t::secure(&["max_result_dimension:100"]).unwrap();
    assert_eq!(o.security.max_result_dimension, Some(100));
}

#[test]
fn every_option_name_is_unique_and_listed() {
    let mut seen = std::collections::HashSet::new();
    for def in OPTIONS {
        for name in def.names {
            assert!(seen.insert(*name), "duplicate option name {name}");
        }
    }
    assert_eq!(OPTIONS.len(), 44);
}

#[test]
fn unknown_and_malformed_segments() {
    assert_eq!(
        t::err(&["foo:1"]),
        "invalid option `foo:1`: unknown option `foo`"
    );
    assert!(t::err(&["w"]).contains("missing arguments"));
    assert!(t::err(&[""]).contains("unknown option ``"));
    // The first bad segment is reported.
    assert!(t::err(&["w:1", "h:x", "q:1000"]).contains("`h:x`"));
}

// ---------------------------------------------------------------------------------
// Canonical form
// ---------------------------------------------------------------------------------

/// A float in its shortest round-tripping form, with -0 written as 0.
fn num(v: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else {
        format!("{v}")
    }
}

fn flag(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

fn gravity_args(g: &Gravity) -> String {
    match g.kind {
        GravityType::Smart => "sm".to_string(),
        k => format!("{}:{}:{}", k.as_str(), num(g.x), num(g.y)),
    }
}

/// Percent-encodes everything but unreserved characters, so free text cannot forge
/// separators.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

impl Options {
    /// A stable, normalised text form of these options: full option names, a fixed
    /// order, defaults omitted, aliases and equivalent spellings folded (`jpg` →
    /// `jpeg`, `bg:255:0:0` → `background:ff0000`, a crop without its own gravity
    /// shows the gravity it will use, a disabled extend drops its gravity). Two option
    /// lists that produce the same [`Options`] (presets aside) give the same string.
    /// Meant for derivative cache keys: do not change the format casually.
    pub fn canonical(&self) -> String {
        let d = Options::default();
        let mut parts: Vec<String> = Vec::new();
        let mut push = |s: String| parts.push(s);

        if self.resizing_type != d.resizing_type {
            push(format!("resizing_type:{}", self.resizing_type.as_str()));
        }
        if self.width != 0 {
            push(format!("width:{}", self.width));
        }
        if self.height != 0 {
            push(format!("height:{}", self.height));
        }
        if self.min_width != 0 {
            push(format!("min-width:{}", self.min_width));
        }
        if self.min_height != 0 {
            push(format!("min-height:{}", self.min_height));
        }
        if self.zoom_width != 1.0 || self.zoom_height != 1.0 {
            push(format!(
                "zoom:{}:{}",
                num(self.zoom_width),
                num(self.zoom_height)
            ));
        }
        if self.dpr != 1.0 {
            push(format!("dpr:{}", num(self.dpr)));
        }
        if self.enlarge {
            push("enlarge:1".to_string());
        }
        for (name, e) in [
            ("extend", &self.extend),
            ("extend_aspect_ratio", &self.extend_aspect_ratio),
        ] {
            if e.enabled {
                push(format!("{name}:1:{}", gravity_args(&e.gravity)));
            }
        }
        if self.gravity != d.gravity {
            push(format!("gravity:{}", gravity_args(&self.gravity)));
        }
        if self.crop.width != 0.0 || self.crop.height != 0.0 {
            push(format!(
                "crop:{}:{}:{}",
                num(self.crop.width),
                num(self.crop.height),
                gravity_args(&self.crop.effective_gravity(self.gravity))
            ));
        }
        if self.trim.enabled {
            let tr = &self.trim;
            push(format!(
                "trim:{}:{}:{}:{}",
                num(tr.threshold),
                tr.color.map(Rgb::hex).unwrap_or_default(),
                flag(tr.equal_hor),
                flag(tr.equal_ver)
            ));
        }
        if self.padding.is_enabled() {
            let p = &self.padding;
            push(format!(
                "padding:{}:{}:{}:{}",
                p.top, p.right, p.bottom, p.left
            ));
        }
        if let Some(v) = self.auto_rotate {
            push(format!("auto_rotate:{}", flag(v)));
        }
        if self.rotate != 0 {
            push(format!("rotate:{}", self.rotate));
        }
        if self.flip != d.flip {
            push(format!(
                "flip:{}:{}",
                flag(self.flip.horizontal),
                flag(self.flip.vertical)
            ));
        }
        if let Some(c) = self.background {
            push(format!("background:{}", c.hex()));
        }
        if self.blur != 0.0 {
            push(format!("blur:{}", num(f64::from(self.blur))));
        }
        if self.sharpen != 0.0 {
            push(format!("sharpen:{}", num(f64::from(self.sharpen))));
        }
        if self.pixelate != 0 {
            push(format!("pixelate:{}", self.pixelate));
        }
        if self.watermark.enabled {
            let w = &self.watermark;
            let position = if w.replicate {
                "re"
            } else {
                w.position.as_str()
            };
            push(format!(
                "watermark:{}:{}:{}:{}:{}",
                num(w.opacity),
                position,
                num(w.x_offset),
                num(w.y_offset),
                num(w.scale)
            ));
        }
        for (name, v) in [
            ("strip_metadata", self.strip_metadata),
            ("keep_copyright", self.keep_copyright),
            ("strip_color_profile", self.strip_color_profile),
            ("enforce_thumbnail", self.enforce_thumbnail),
        ] {
            if let Some(v) = v {
                push(format!("{name}:{}", flag(v)));
            }
        }
        if self.quality != 0 {
            push(format!("quality:{}", self.quality));
        }
        if !self.format_quality.is_empty() {
            let pairs: Vec<String> = self
                .format_quality
                .iter()
                .map(|(f, q)| format!("{}:{q}", f.as_str()))
                .collect();
            push(format!("format_quality:{}", pairs.join(":")));
        }
        if self.max_bytes != 0 {
            push(format!("max_bytes:{}", self.max_bytes));
        }
        if let Some(f) = self.format {
            push(format!("format:{}", f.as_str()));
        }
        if !self.skip_processing.is_empty() {
            let names: Vec<&str> = self.skip_processing.iter().map(|f| f.as_str()).collect();
            push(format!("skip_processing:{}", names.join(":")));
        }
        if self.raw {
            push("raw:1".to_string());
        }
        if !self.cachebuster.is_empty() {
            push(format!("cachebuster:{}", escape(&self.cachebuster)));
        }
        if let Some(ts) = self.expires {
            push(format!("expires:{ts}"));
        }
        if let Some(name) = &self.filename {
            push(format!("filename:{}", escape(name)));
        }
        if let Some(v) = self.return_attachment {
            push(format!("return_attachment:{}", flag(v)));
        }
        let s = &self.security;
        if let Some(v) = s.max_src_resolution {
            push(format!("max_src_resolution:{v}"));
        }
        if let Some(v) = s.max_src_file_size {
            push(format!("max_src_file_size:{v}"));
        }
        if let Some(v) = s.max_animation_frames {
            push(format!("max_animation_frames:{v}"));
        }
        if let Some(v) = s.max_animation_frame_resolution {
            push(format!("max_animation_frame_resolution:{v}"));
        }
        if let Some(v) = s.max_result_dimension {
            push(format!("max_result_dimension:{v}"));
        }
        parts.join("/")
    }
}

#[test]
fn canonical_of_defaults_is_empty() {
    assert_eq!(t::ok(&[]).canonical(), "");
    assert_eq!(
        t::ok(&["rs:fit:0:0:0:0", "g:ce:0:0", "q:0", "dpr:1"]).canonical(),
        ""
    );
}

#[test]
fn canonical_equivalences() {
    let c = |s: &[&str]| t::ok(s).canonical();
    let base = c(&["rs:fit:300:200"]);
    assert_eq!(base, "width:300/height:200");
    for same in [
        &["resize:fit:300:200"][..],
        &["s:300:200"],
        &["h:200", "w:300"],
        &["rt:fit", "size:300:200:0"],
        &["w:10", "rs::300:200"],
    ] {
        assert_eq!(c(same), base, "{same:?}");
    }
    // Order of independent options does not matter.
    assert_eq!(
        c(&["q:80", "rs:fill:100:100", "g:sm", "f:jpg"]),
        c(&[
            "format:jpeg",
            "gravity:sm",
            "resize:fill:100:100",
            "quality:80"
        ])
    );
    assert_eq!(c(&["bg:255:0:0"]), c(&["bg:ff0000"]));
    assert_eq!(c(&["bg:f00"]), "background:ff0000");
    assert_eq!(c(&["rot:-90"]), c(&["rot:270"]));
    assert_eq!(c(&["ex:0:no:5:5"]), "");
    assert_eq!(c(&["g:no", "c:50:50"]), c(&["g:no", "c:50:50:no"]));
    assert_eq!(c(&["pd:10"]), c(&["pd:10:10:10:10"]));
    assert_eq!(c(&["skp:gif:svg"]), c(&["skp:svg", "skp:gif", "skp:svg"]));
    assert_eq!(c(&["z:2"]), c(&["zoom:2:2"]));
    assert_eq!(c(&["g:no:-0"]), c(&["g:no:0"]));
    assert_eq!(
        c(&["rs:fill:300:400:1:1:so:5"]),
        "resizing_type:fill/width:300/height:400/enlarge:1/extend:1:so:5:0"
    );
}

#[test]
fn canonical_differences() {
    let c = |s: &[&str]| t::ok(s).canonical();
    let variants: Vec<String> = [
        &["rs:fit:300:200"][..],
        &["rs:fill:300:200"],
        &["rs:fit:300:201"],
        &["rs:fit:300:200", "dpr:2"],
        &["rs:fit:300:200", "el:1"],
        &["rs:fit:300:200", "ex:1"],
        &["rs:fit:300:200", "ex:1:no"],
        &["rs:fit:300:200", "exar:1"],
        &["rs:fit:300:200", "g:no"],
        &["rs:fit:300:200", "g:no:1"],
        &["rs:fit:300:200", "g:fp:0.5:0.5"],
        &["rs:fit:300:200", "c:10"],
        &["rs:fit:300:200", "c:10:0:sm"],
        &["rs:fit:300:200", "t:10"],
        &["rs:fit:300:200", "pd:1"],
        &["rs:fit:300:200", "rot:90"],
        &["rs:fit:300:200", "fl:1"],
        &["rs:fit:300:200", "bg:fff"],
        &["rs:fit:300:200", "bl:1"],
        &["rs:fit:300:200", "sh:1"],
        &["rs:fit:300:200", "pix:2"],
        &["rs:fit:300:200", "wm:1"],
        &["rs:fit:300:200", "sm:1"],
        &["rs:fit:300:200", "sm:0"],
        &["rs:fit:300:200", "kcr:0"],
        &["rs:fit:300:200", "scp:0"],
        &["rs:fit:300:200", "ar:0"],
        &["rs:fit:300:200", "eth:1"],
        &["rs:fit:300:200", "q:80"],
        &["rs:fit:300:200", "fq:webp:80"],
        &["rs:fit:300:200", "mb:1000"],
        &["rs:fit:300:200", "f:webp"],
        &["rs:fit:300:200", "skp:gif"],
        &["rs:fit:300:200", "raw:1"],
        &["rs:fit:300:200", "cb:1"],
        &["rs:fit:300:200", "fn:a"],
        &["rs:fit:300:200", "att:1"],
        &["rs:fit:300:200", "mw:10"],
        &["rs:fit:300:200", "mh:10"],
        &["rs:fit:300:200", "z:1.5"],
    ]
    .iter()
    .map(|s| c(s))
    .collect();
    let unique: std::collections::HashSet<&String> = variants.iter().collect();
    assert_eq!(unique.len(), variants.len(), "{variants:#?}");
    // Free text is escaped, so it cannot imitate another option.
    assert_eq!(c(&["cb:x/quality"]), "cachebuster:x%2Fquality");
    assert_ne!(c(&["fn:a/raw"]), c(&["fn:a", "raw:1"]));
}

// ---------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------

/// A small deterministic generator of option segments for the property tests here and
/// in `geometry` and `pipeline` (the crate has no proptest): real option names and
/// words, random numbers including zero, negative, huge, overflowing and non-finite.
#[cfg(test)]
pub(crate) mod fuzz {
    use super::*;

    /// xorshift64*: fast, deterministic, good enough to spread test inputs.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Rng(seed | 1)
        }

        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        /// Uniform enough in `0..n` (`n` ≥ 1).
        pub fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }

        /// Uniform in `lo..=hi`.
        pub fn range(&mut self, lo: u32, hi: u32) -> u32 {
            lo + self.below(u64::from(hi - lo) + 1) as u32
        }

        pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len() as u64) as usize]
        }
    }

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
        "png",
        "webp",
        "avif",
        "gif",
        "fff",
        "ff0000",
        "t",
        "true",
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
        "99999999999999999999",
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
        "default",
    ];

    /// The options that change geometry, drawn more often than the others.
    const GEOMETRY: &[&str] = &[
        "rs", "s", "w", "h", "mw", "mh", "z", "dpr", "el", "ex", "exar", "g", "c", "pd", "rot",
        "fl", "mrd", "bl", "sh", "pix", "t", "bg",
    ];

    /// A number at the edge of some parser: zero, negative, huge, overflowing,
    /// fractional, non-finite, or a word.
    pub fn edge_number(rng: &mut Rng) -> String {
        match rng.below(7) {
            0 => rng.below(40_000).to_string(),
            1 => format!("-{}", rng.below(20_000)),
            2 => format!("{}.{}", rng.below(4), rng.below(1000)),
            3 => (rng.next() >> rng.below(64)).to_string(),
            4 => (rng.next() as i64).to_string(),
            5 => format!("{:e}", f64::from_bits(rng.next())),
            _ => (*rng.pick(WORDS)).to_string(),
        }
    }

    /// Mostly plausible arguments (so that many lists parse and reach the geometry),
    /// often an edge case.
    pub fn argument(rng: &mut Rng) -> String {
        match rng.below(20) {
            0..=5 => rng.below(20).to_string(),
            6..=9 => rng.below(2000).to_string(),
            10..=13 => (*rng.pick(WORDS)).to_string(),
            14..=18 => edge_number(rng),
            _ => String::new(),
        }
    }

    pub fn segment(rng: &mut Rng) -> String {
        let name = if rng.below(3) > 0 {
            *rng.pick(GEOMETRY)
        } else {
            let def = rng.pick(OPTIONS);
            *rng.pick(def.names)
        };
        let args = match rng.below(20) {
            0..=9 => 1,
            10..=13 => 2,
            14..=16 => 3 + rng.below(2),
            _ => rng.below(9),
        };
        let mut s = name.to_string();
        for i in 0..args {
            s.push(':');
            // Half the time, a word of the kind the option wants there.
            let fitting = if rng.below(2) == 0 {
                words_for(name, i)
            } else {
                &[]
            };
            if fitting.is_empty() {
                s.push_str(&argument(rng));
            } else {
                s.push_str(rng.pick::<&str>(fitting));
            }
        }
        s
    }

    /// Words an option's argument number `i` must be one of, when it is a word.
    fn words_for(name: &str, i: u64) -> &'static [&'static str] {
        const GRAVITY: &[&str] = &["ce", "no", "so", "ea", "we", "nowe", "soea", "fp"];
        match (name, i) {
            ("rs" | "resize" | "rt" | "resizing_type", 0) => {
                &["fit", "fill", "fill-down", "force", "auto"]
            }
            ("g" | "gravity", 0) => &["ce", "no", "so", "ea", "we", "nowe", "soea", "sm", "fp"],
            ("ex" | "extend" | "exar" | "extend_aspect_ratio" | "extend_ar", 1) => GRAVITY,
            ("c" | "crop", 2) => GRAVITY,
            ("t" | "trim", 1) => &["fff", "000", ""],
            ("f" | "format" | "ext" | "fq" | "format_quality" | "skp" | "skip_processing", 0) => {
                &["jpg", "png", "webp", "avif", "gif"]
            }
            ("rot" | "rotate", 0) => &["90", "180", "270", "-90", "360"],
            ("bg" | "background", 0) => &["fff", "ff0000", ""],
            ("wm" | "watermark", 0) => &["0.5", "1", "0"],
            _ => &[],
        }
    }

    /// One to `max` segments.
    pub fn segments(rng: &mut Rng, max: u64) -> Vec<String> {
        (0..1 + rng.below(max)).map(|_| segment(rng)).collect()
    }

    /// A context with presets (one recursive) and, at random, security options.
    pub fn context(rng: &mut Rng) -> ParseContext {
        let mut presets = HashMap::new();
        presets.insert(
            "a".to_string(),
            vec!["rs:fill:30:20".to_string(), "pr:a".to_string()],
        );
        presets.insert("default".to_string(), vec!["q:80".to_string()]);
        ParseContext {
            presets,
            allow_security_options: rng.below(2) == 0,
            now_unix: Some(1_000_000),
        }
    }

    /// Options that parse: up to `tries` random lists are drawn.
    pub fn options(rng: &mut Rng, max_segments: u64, tries: usize) -> Option<Options> {
        (0..tries).find_map(|_| {
            let ctx = context(rng);
            parse(&segments(rng, max_segments), &ctx).ok()
        })
    }
}

#[test]
fn parse_never_panics_on_random_segments() {
    // Property: any list of segments built from the real option names and edge-case
    // arguments either parses or is an `OptionsError` naming one of its segments (or of
    // a preset it applies); the canonical form of what parses can be computed. Each
    // segment is also parsed alone, so that every applier is reached often.
    let mut rng = fuzz::Rng::new(0x5eed_0001);
    let (mut lists, mut alone) = (0, 0);
    let is_about = |e: &OptionsError, segs: &[String], ctx: &ParseContext| {
        segs.iter().any(|s| s == e.segment())
            || ctx.presets.values().flatten().any(|s| s == e.segment())
            || e.segment().starts_with("preset:")
    };
    for _ in 0..10_000 {
        let ctx = fuzz::context(&mut rng);
        let segs = fuzz::segments(&mut rng, 4);
        match parse(&segs, &ctx) {
            Ok(o) => {
                lists += 1;
                let _ = o.canonical();
            }
            Err(e) => assert!(is_about(&e, &segs, &ctx), "{e} is not about {segs:?}"),
        }
        for seg in &segs {
            let one = std::slice::from_ref(seg);
            match parse(one, &ctx) {
                Ok(o) => {
                    alone += 1;
                    let _ = o.canonical();
                }
                Err(e) => assert!(is_about(&e, one, &ctx), "{e} is not about {seg}"),
            }
        }
        let _ = parse_presets_only(&segs, &ctx);
    }
    eprintln!("{lists} lists of 10000 parsed, {alone} single segments");
    // The generator reaches the appliers, not only the error paths.
    assert!(
        lists > 1_000 && alone > 5_000,
        "{lists} lists, {alone} segments parsed"
    );
}
