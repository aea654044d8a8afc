//! SVG sanitising: the first thing done to an SVG source, before it is sized, rendered or
//! served. Pure: bytes in, a clean document out.
//!
//! The output is a new document written from the parsed tree, never an edit of the
//! input, so nothing the parser understood differently from a browser survives:
//! - no DOCTYPE, entity, comment, processing instruction (`<?xml-stylesheet?>`) or CDATA
//!   section; entities are expanded once, here, within [`MAX_ENTITY_BYTES`];
//! - only SVG elements (and XLink's `href`, `xml:space`, `xml:lang`): other namespaces
//!   (XHTML inside `foreignObject`, editors' metadata) are dropped with their content;
//! - no `script`, `foreignObject`, `iframe`, `embed`, `object`, `audio`, `video`,
//!   `canvas`, `handler` or `listener`; no animation that targets `href` or an event
//!   handler;
//! - no event handler attribute (`on*`), and no reference that leaves the document: an
//!   `href` is kept only when it points inside it (`#id`) or holds a raster image as a
//!   `data:` URL, and CSS `url(…)` (in `style` attributes, `<style>` and presentation
//!   attributes) only when it points inside it; `@import` is removed;
//! - bounded: [`MAX_NODES`] parsed nodes, [`MAX_DEPTH`] levels, and [`MAX_RENDERED`]
//!   elements once every `<use>` is expanded (the SVG form of the billion laughs), each
//!   an error rather than a truncated picture.
//!
//! The intrinsic size ([`Sanitized::width`], [`Sanitized::height`]) is read from the root's
//! `width`, `height` and `viewBox` the way usvg (and browsers) read it, 100×100 when none
//! says.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::svg_opacity;

/// Parsed nodes allowed (elements, attributes' text and text nodes).
pub const MAX_NODES: u32 = 200_000;
/// Nesting levels allowed.
pub const MAX_DEPTH: usize = 256;
/// Elements allowed once each `<use>` is replaced by what it references.
pub const MAX_RENDERED: u64 = 250_000;
/// Bytes the document's own entities may add when expanded.
pub const MAX_ENTITY_BYTES: usize = 1 << 20;

const SVG_NS: &str = "http://www.w3.org/2000/svg";
const XLINK_NS: &str = "http://www.w3.org/1999/xlink";
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// Why an SVG was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SanitizeError {
    #[error("SVG must be UTF-8 text")]
    NotUtf8,
    #[error("invalid XML: {0}")]
    Xml(String),
    #[error("the root element is <{0}>, not <svg>")]
    NotSvg(String),
    #[error(
        "entity declarations may hold only plain text (no references, markup or external entities)"
    )]
    UnsafeEntity,
    #[error("entities would expand to more than {MAX_ENTITY_BYTES} bytes")]
    EntityExpansion,
    #[error("more than {MAX_DEPTH} levels of nesting")]
    TooDeep,
    #[error("more than {MAX_RENDERED} elements once <use> references are expanded")]
    TooManyElements,
    #[error("a <use> reference loop")]
    UseLoop,
}

/// A sanitised SVG document and its intrinsic size in CSS pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Sanitized {
    pub text: String,
    /// Whether anything was removed.
    pub changed: bool,
}

/// Sanitises `bytes` (an SVG document) as the module documentation says.
pub fn sanitize(bytes: &[u8]) -> Result<Sanitized, SanitizeError> {
    sanitize_with(bytes, false)
}

/// [`sanitize`] for a renderer: also folds single-paint shapes' `opacity` into their
/// paint opacity ([`super::svg_opacity`]), which draws the same without a layer each.
pub fn sanitize_for_drawing(bytes: &[u8]) -> Result<Sanitized, SanitizeError> {
    sanitize_with(bytes, true)
}

fn sanitize_with(bytes: &[u8], fold: bool) -> Result<Sanitized, SanitizeError> {
    let text = std::str::from_utf8(bytes).map_err(|_| SanitizeError::NotUtf8)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    check_entities(text)?;
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        nodes_limit: MAX_NODES,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, opts).map_err(|e| match e {
        roxmltree::Error::EntityReferenceLoop(_) => SanitizeError::EntityExpansion,
        other => SanitizeError::Xml(other.to_string()),
    })?;
    let root = doc.root_element();
    let name = root.tag_name();
    if name.name() != "svg" || !matches!(name.namespace(), None | Some(SVG_NS)) {
        return Err(SanitizeError::NotSvg(
            name.name().chars().take(64).collect(),
        ));
    }
    let mut out = Writer {
        fold: fold.then(|| svg_opacity::has_style_sheet(root)),
        ..Writer::default()
    };
    out.document(root)?;
    check_use_expansion(root)?;
    Ok(Sanitized {
        text: out.text,
        changed: out.changed,
    })
}

// ---------------------------------------------------------------------------------
// Entities
// ---------------------------------------------------------------------------------

/// Refuses entity declarations that are not plain text, and a document whose references
/// would expand to more than [`MAX_ENTITY_BYTES`] (a quadratic blow-up stays under the
/// parser's own depth and fan-out limits).
fn check_entities(text: &str) -> Result<(), SanitizeError> {
    let mut entities: Vec<(&str, usize)> = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("<!ENTITY") {
        rest = &rest[at + "<!ENTITY".len()..];
        let decl = rest.trim_start();
        if decl.starts_with('%') {
            return Err(SanitizeError::UnsafeEntity);
        }
        let name_end = decl
            .find(|c: char| c.is_whitespace())
            .ok_or(SanitizeError::UnsafeEntity)?;
        let name = &decl[..name_end];
        let after = decl[name_end..].trim_start();
        let quote = after.chars().next().ok_or(SanitizeError::UnsafeEntity)?;
        if quote != '"' && quote != '\'' {
            // SYSTEM or PUBLIC: an external entity.
            return Err(SanitizeError::UnsafeEntity);
        }
        let value_end = after[1..].find(quote).ok_or(SanitizeError::UnsafeEntity)?;
        let value = &after[1..1 + value_end];
        if value.contains(['&', '%', '<']) {
            return Err(SanitizeError::UnsafeEntity);
        }
        entities.push((name, value.len()));
    }
    let mut total = 0usize;
    for (name, len) in entities {
        let reference = format!("&{name};");
        let uses = text.matches(reference.as_str()).count();
        total = total.saturating_add(uses.saturating_mul(len));
        if total > MAX_ENTITY_BYTES {
            return Err(SanitizeError::EntityExpansion);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// What is kept
// ---------------------------------------------------------------------------------

/// Elements dropped with everything inside them.
const DROPPED: &[&str] = &[
    "script",
    "foreignObject",
    "iframe",
    "embed",
    "object",
    "audio",
    "video",
    "canvas",
    "handler",
    "listener",
];

const ANIMATIONS: &[&str] = &["set", "animate", "animateTransform", "animateMotion"];

fn is_svg_element(node: roxmltree::Node<'_, '_>, root_ns: Option<&str>) -> bool {
    node.tag_name().namespace() == Some(SVG_NS)
        || (root_ns.is_none() && node.tag_name().namespace().is_none())
}

/// Whether `node` (an SVG element) is kept.
fn keep_element(node: roxmltree::Node<'_, '_>) -> bool {
    let name = node.tag_name().name();
    if DROPPED.iter().any(|d| d.eq_ignore_ascii_case(name)) {
        return false;
    }
    if ANIMATIONS.contains(&name) {
        // An animation may set `href` to `javascript:` or add a handler.
        let target = node
            .attribute("attributeName")
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let target = target.strip_prefix("xlink:").unwrap_or(&target);
        if target == "href" || target.starts_with("on") {
            return false;
        }
    }
    true
}

/// A value with ASCII whitespace and control characters removed and lowercased: what a
/// browser's URL parser effectively compares (`java\tscript:` is `javascript:`).
fn squeezed(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && !c.is_control())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether an `href` value stays inside the document or is an embedded raster image.
fn safe_href(value: &str) -> bool {
    let v = squeezed(value);
    v.is_empty()
        || v.starts_with('#')
        || ["png", "jpeg", "jpg", "gif", "webp"].iter().any(|t| {
            v.starts_with(&format!("data:image/{t};")) || v.starts_with(&format!("data:image/{t},"))
        })
}

/// CSS text with `@import` rules removed and every `url(…)` that leaves the document
/// replaced by `none`; `None` when nothing changed.
fn clean_css(css: &str) -> Option<String> {
    // ASCII lowercasing keeps byte offsets, so `lower` indexes `css`.
    let lower = css.to_ascii_lowercase();
    if !lower.contains("url(") && !lower.contains("@import") && !lower.contains("expression(") {
        return None;
    }
    let mut out = String::with_capacity(css.len());
    let mut i = 0;
    while i < css.len() {
        let rest = &lower[i..];
        if rest.starts_with("@import") {
            // To the end of the rule.
            i = rest.find(';').map_or(css.len(), |e| i + e + 1);
            continue;
        }
        if rest.starts_with("url(") {
            let (inner_end, close) = match rest.find(')') {
                Some(e) => (i + e, i + e + 1),
                None => (css.len(), css.len()),
            };
            let target = css[i + 4..inner_end].trim().trim_matches(['"', '\'']);
            if squeezed(target).starts_with('#') {
                out.push_str(&css[i..close]);
            } else {
                out.push_str("none");
            }
            i = close;
            continue;
        }
        if rest.starts_with("expression(") {
            out.push_str("none");
            i += "expression(".len();
            continue;
        }
        let ch_len = css[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&css[i..i + ch_len]);
        i += ch_len;
    }
    (out != css).then_some(out)
}

// ---------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------

#[derive(Default)]
struct Writer {
    text: String,
    changed: bool,
    /// Fold opacity into paint opacity (`Some`: whether the document has a style sheet).
    fold: Option<bool>,
}

impl Writer {
    /// Writes `root` and what is kept below it, without recursion (depth is bounded
    /// separately, so a deep document is an error, not a stack overflow).
    fn document(&mut self, root: roxmltree::Node<'_, '_>) -> Result<(), SanitizeError> {
        let root_ns = root.tag_name().namespace();
        self.text
            .push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        self.open(root, true);
        // The open elements, innermost last.
        let mut stack = vec![root];
        let mut next = root.first_child();
        loop {
            let Some(node) = next else {
                // The innermost open element has no more children.
                let Some(done) = stack.pop() else {
                    return Ok(());
                };
                self.close(done);
                if stack.is_empty() {
                    return Ok(());
                }
                next = done.next_sibling();
                continue;
            };
            next = node.next_sibling();
            if node.is_element() {
                if !(is_svg_element(node, root_ns) && keep_element(node)) {
                    self.changed = true;
                    continue;
                }
                self.open(node, false);
                if node.has_children() {
                    if stack.len() >= MAX_DEPTH {
                        return Err(SanitizeError::TooDeep);
                    }
                    stack.push(node);
                    next = node.first_child();
                }
            } else if node.is_text() {
                let t = node.text().unwrap_or_default();
                let in_style = stack.last().is_some_and(|p| p.tag_name().name() == "style");
                match in_style.then(|| clean_css(t)).flatten() {
                    Some(clean) => {
                        self.changed = true;
                        escape_text(&mut self.text, &clean);
                    }
                    None => escape_text(&mut self.text, t),
                }
            } else {
                // Comments and processing instructions.
                self.changed = true;
            }
        }
    }

    fn open(&mut self, node: roxmltree::Node<'_, '_>, is_root: bool) {
        let name = node.tag_name().name();
        self.text.push('<');
        self.text.push_str(name);
        if is_root {
            self.text.push_str(" xmlns=\"");
            self.text.push_str(SVG_NS);
            self.text.push_str("\" xmlns:xlink=\"");
            self.text.push_str(XLINK_NS);
            self.text.push('"');
        }
        let folded = self.fold.and_then(|sheet| svg_opacity::fold(node, sheet));
        for attr in node.attributes() {
            if folded.is_some()
                && attr.namespace().is_none()
                && matches!(attr.name(), "opacity" | "fill-opacity" | "stroke-opacity")
            {
                continue;
            }
            let prefix = match attr.namespace() {
                None => "",
                Some(XLINK_NS) => "xlink:",
                Some(XML_NS) if matches!(attr.name(), "space" | "lang") => "xml:",
                Some(_) => {
                    self.changed = true;
                    continue;
                }
            };
            let local = attr.name();
            let value = attr.value();
            if !keep_attribute(local, value) {
                self.changed = true;
                continue;
            }
            let unfolded;
            let value = match folded {
                Some(_) if local == "style" && prefix.is_empty() => {
                    unfolded = without_opacities(value);
                    unfolded.as_str()
                }
                _ => value,
            };
            let cleaned = if local == "style" || value.to_ascii_lowercase().contains("url(") {
                clean_css(value)
            } else {
                None
            };
            if cleaned.is_some() {
                self.changed = true;
            }
            let _ = write!(self.text, " {prefix}{local}=\"");
            escape_attr(&mut self.text, cleaned.as_deref().unwrap_or(value));
            self.text.push('"');
        }
        if let Some(f) = folded {
            let _ = write!(
                self.text,
                " fill-opacity=\"{}\" stroke-opacity=\"{}\"",
                f.fill_opacity, f.stroke_opacity
            );
        }
        if node.has_children() {
            self.text.push('>');
        } else {
            self.text.push_str("/>");
        }
    }

    fn close(&mut self, node: roxmltree::Node<'_, '_>) {
        if node.has_children() {
            self.text.push_str("</");
            self.text.push_str(node.tag_name().name());
            self.text.push('>');
        }
    }
}

/// A `style` value without its `opacity`, `fill-opacity` and `stroke-opacity`
/// declarations (a folded shape carries them as attributes instead).
fn without_opacities(style: &str) -> String {
    style
        .split(';')
        .filter(|d| {
            let name = d.split(':').next().unwrap_or_default().trim();
            !["opacity", "fill-opacity", "stroke-opacity"]
                .iter()
                .any(|o| name.eq_ignore_ascii_case(o))
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Whether an attribute (`local` name, without its prefix) is kept.
fn keep_attribute(local: &str, value: &str) -> bool {
    let lower = local.to_ascii_lowercase();
    if lower.starts_with("on") {
        return false;
    }
    if lower == "href" || lower == "src" || lower == "action" || lower == "formaction" {
        return safe_href(value);
    }
    !squeezed(value).contains("javascript:")
}

fn escape_text(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
}

fn escape_attr(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#9;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

// ---------------------------------------------------------------------------------
// <use> expansion
// ---------------------------------------------------------------------------------

/// The `#id` a `<use>` references.
fn use_target<'a>(node: roxmltree::Node<'a, '_>) -> Option<&'a str> {
    node.attributes()
        .find(|a| a.name() == "href" && matches!(a.namespace(), None | Some(XLINK_NS)))
        .and_then(|a| a.value().trim().strip_prefix('#'))
}

/// Counts the elements a renderer would create, each `<use>` standing for a copy of
/// what it references, and refuses more than [`MAX_RENDERED`] (or a reference loop).
fn check_use_expansion(root: roxmltree::Node<'_, '_>) -> Result<(), SanitizeError> {
    let uses: Vec<_> = root
        .descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == "use")
        .collect();
    if uses.is_empty() {
        return Ok(());
    }
    let ids: HashMap<&str, roxmltree::Node<'_, '_>> = root
        .descendants()
        .filter(|n| n.is_element())
        .filter_map(|n| n.attribute("id").map(|id| (id, n)))
        .collect();
    // The expanded size of each element, computed after its children and its `<use>`
    // target (an explicit stack instead of recursion).
    let mut size: HashMap<roxmltree::NodeId, u64> = HashMap::new();
    let mut visiting: std::collections::HashSet<roxmltree::NodeId> = Default::default();
    let mut stack: Vec<(roxmltree::Node<'_, '_>, bool)> = vec![(root, false)];
    while let Some((node, expanded)) = stack.pop() {
        if size.contains_key(&node.id()) {
            continue;
        }
        let target = if node.tag_name().name() == "use" {
            use_target(node).and_then(|id| ids.get(id).copied())
        } else {
            None
        };
        if !expanded {
            if !visiting.insert(node.id()) {
                return Err(SanitizeError::UseLoop);
            }
            stack.push((node, true));
            for child in node.children().filter(|c| c.is_element()) {
                if !size.contains_key(&child.id()) {
                    stack.push((child, false));
                }
            }
            if let Some(t) = target
                && !size.contains_key(&t.id())
            {
                if visiting.contains(&t.id()) {
                    return Err(SanitizeError::UseLoop);
                }
                stack.push((t, false));
            }
            continue;
        }
        visiting.remove(&node.id());
        let mut total: u64 = 1;
        for child in node.children().filter(|c| c.is_element()) {
            total = total.saturating_add(size.get(&child.id()).copied().unwrap_or(0));
        }
        if let Some(t) = target {
            total = total.saturating_add(size.get(&t.id()).copied().unwrap_or(0));
        }
        if total > MAX_RENDERED {
            return Err(SanitizeError::TooManyElements);
        }
        size.insert(node.id(), total);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Size
// ---------------------------------------------------------------------------------

/// A length attribute in CSS pixels: `Some(Ok(px))`, `Some(Err(percent))`, or `None`
/// when absent or unreadable.
fn length(value: Option<&str>) -> Option<Result<f64, f64>> {
    let v = value?.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(v.len());
    // `1em`: the `e` belongs to the unit.
    let (num, unit) = match v[..split].strip_suffix(['e', 'E']) {
        Some(n) if v[split..].starts_with(['m', 'x']) => (n, &v[n.len()..]),
        _ => (&v[..split], &v[split..]),
    };
    let n: f64 = num.parse().ok().filter(|n: &f64| n.is_finite())?;
    let px = match unit.trim() {
        "" | "px" => n,
        "%" => return Some(Err(n)),
        "pt" => n * 4.0 / 3.0,
        "pc" => n * 16.0,
        "mm" => n * 96.0 / 25.4,
        "cm" => n * 96.0 / 2.54,
        "in" => n * 96.0,
        "em" => n * 12.0,
        "ex" => n * 6.0,
        _ => return None,
    };
    Some(Ok(px))
}

fn view_box(value: Option<&str>) -> Option<(f64, f64)> {
    let nums: Vec<f64> = value?
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    match nums[..] {
        [_, _, w, h] if w > 0.0 && h > 0.0 && w.is_finite() && h.is_finite() => Some((w, h)),
        _ => None,
    }
}

/// The intrinsic size from the root's start tag alone, without parsing the document: the
/// cheap probe, which runs before any worker is taken (the document is sanitised and
/// parsed on a worker later, and refused there if it is not well-formed). `None` when no
/// `<svg` start tag is found in the first `limit` bytes. Attribute values are taken
/// literally (an entity in `width` counts as unreadable, as a browser would not see it
/// either before parsing).
pub fn root_size(bytes: &[u8], limit: usize) -> Option<(f64, f64)> {
    let head = &bytes[..bytes.len().min(limit)];
    let at = head.windows(4).position(|w| w == b"<svg")?;
    // The start tag: up to the first `>` outside quotes, within 64 KiB.
    let rest = &bytes[at + 4..bytes.len().min(at + 4 + 65_536)];
    let mut attrs: Vec<(&[u8], &[u8])> = Vec::new();
    // The rest of a prefixed name (`<svg:svg`).
    let mut i = rest
        .iter()
        .position(|c| c.is_ascii_whitespace() || matches!(c, b'>' | b'/'))?;
    loop {
        while rest.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        match rest.get(i)? {
            b'>' | b'/' => break,
            _ => {}
        }
        let name_start = i;
        while rest
            .get(i)
            .is_some_and(|c| !c.is_ascii_whitespace() && *c != b'=' && *c != b'>')
        {
            i += 1;
        }
        let name = &rest[name_start..i];
        while rest.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if rest.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        while rest.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        let quote = *rest.get(i).filter(|q| matches!(q, b'"' | b'\''))?;
        let end = i + 1 + rest.get(i + 1..)?.iter().position(|c| *c == quote)?;
        attrs.push((name, &rest[i + 1..end]));
        i = end + 1;
    }
    let attr = |name: &str| {
        attrs
            .iter()
            .find(|(n, _)| *n == name.as_bytes())
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    };
    Some(size_from(attr))
}

/// The root's size as usvg computes it (`resolve_svg_size`), from its attributes:
/// absolute `width`/`height`, percentages of the `viewBox`, one side from the other through
/// the `viewBox`'s aspect ratio, and 100×100 without either. Never below 1×1.
fn size_from<'a>(attribute: impl Fn(&str) -> Option<&'a str>) -> (f64, f64) {
    const DEFAULT: f64 = 100.0;
    let w = length(attribute("width"));
    let h = length(attribute("height"));
    let (width, height) = match view_box(attribute("viewBox")) {
        Some((vw, vh)) => {
            let side = |l: Option<Result<f64, f64>>, v: f64| match l {
                Some(Ok(px)) => Some(px),
                Some(Err(pct)) => Some(v * pct / 100.0),
                None => None,
            };
            match (side(w, vw), side(h, vh)) {
                (Some(w), Some(h)) => (w, h),
                (Some(w), None) => (w, vh * w / vw),
                (None, Some(h)) => (vw * h / vh, h),
                (None, None) => (vw, vh),
            }
        }
        None => {
            let side = |l: Option<Result<f64, f64>>| match l {
                Some(Ok(px)) => px,
                Some(Err(pct)) => DEFAULT * pct / 100.0,
                None => DEFAULT,
            };
            (side(w), side(h))
        }
    };
    let sane = |v: f64| if v.is_finite() && v >= 1.0 { v } else { 1.0 };
    (sane(width), sane(height))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(s: &str) -> String {
        sanitize(s.as_bytes()).unwrap().text
    }

    #[test]
    fn scripts_handlers_and_external_references_are_removed() {
        let hostile = r#"<?xml version="1.0"?>
<?xml-stylesheet href="http://evil.test/x.css"?>
<!-- a comment -->
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10" height="10" onload="alert(1)">
  <script>alert(2)</script>
  <SCRIPT>alert(3)</SCRIPT>
  <foreignObject><div xmlns="http://www.w3.org/1999/xhtml"><script>alert(4)</script></div></foreignObject>
  <a href="javascript:alert(5)"><rect width="5" height="5" onclick="alert(6)"/></a>
  <a xlink:href="java&#9;script:alert(7)"><circle r="1"/></a>
  <image href="http://evil.test/track.png" width="1" height="1"/>
  <image xlink:href="file:///etc/passwd" width="1" height="1"/>
  <use href="http://evil.test/sprite.svg#x"/>
  <set attributeName="href" to="javascript:alert(8)"/>
  <animate attributeName="onclick" values="alert(9)"/>
  <style>@import url(http://evil.test/a.css); rect { fill: url(http://evil.test/p.svg#g) } circle > x { fill: url(#ok) }</style>
  <rect style="fill: url('https://evil.test/p.svg#g'); stroke: red" width="1" height="1"/>
  <rect fill="url(http://evil.test/p#g)" width="1" height="1"/>
</svg>"#;
        let s = sanitize(hostile.as_bytes()).unwrap();
        assert!(s.changed);
        let out = s.text.to_ascii_lowercase();
        for bad in [
            "script",
            "alert",
            "onload",
            "onclick",
            "evil.test",
            "file:",
            "foreignobject",
            "@import",
            "stylesheet",
            "<!--",
        ] {
            assert!(!out.contains(bad), "{bad} survived in:\n{}", s.text);
        }
        // What is harmless stays: shapes, the link element, the local url, the stroke.
        assert!(out.contains("<rect"), "{}", s.text);
        assert!(out.contains("url(#ok)"), "{}", s.text);
        assert!(out.contains("stroke: red"), "{}", s.text);
        assert!(out.contains("circle &gt; x"), "{}", s.text);
        // And the result is a well-formed SVG document.
        let again = sanitize(s.text.as_bytes()).unwrap();
        assert_eq!(again.text, s.text);
        assert!(!again.changed);
    }

    #[test]
    fn harmless_documents_round_trip_unchanged_in_meaning() {
        let svg = r##"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="0 0 20 10">
  <defs><linearGradient id="g"><stop offset="0" stop-color="#f00"/></linearGradient></defs>
  <rect width="20" height="10" fill="url(#g)"/>
  <use xlink:href="#g"/>
  <image href="data:image/png;base64,iVBORw0KGgo=" width="1" height="1"/>
  <text x="1" y="5" xml:space="preserve">a &lt; b &amp; "c"</text>
</svg>"##;
        let s = sanitize(svg.as_bytes()).unwrap();
        assert!(!s.changed, "{}", s.text);
        assert!(s.text.contains(r#"fill="url(#g)""#));
        assert!(s.text.contains(r##"xlink:href="#g""##));
        assert!(s.text.contains("data:image/png;base64"));
        assert!(
            s.text
                .contains(r#"xml:space="preserve">a &lt; b &amp; "c"</text>"#)
        );
        assert_eq!(parsed_size(svg), (20.0, 10.0));
    }

    #[test]
    fn other_namespaces_and_prefixed_svg_are_handled() {
        // Inkscape's metadata goes; a prefixed SVG root is written with the default
        // namespace; a root without a namespace gets one.
        let svg = r#"<s:svg xmlns:s="http://www.w3.org/2000/svg" xmlns:inkscape="http://www.inkscape.org/namespaces/inkscape" inkscape:version="1" width="4" height="2"><inkscape:x/><s:rect width="1" height="1"/></s:svg>"#;
        let s = sanitize(svg.as_bytes()).unwrap();
        assert!(s.changed);
        assert!(!s.text.contains("inkscape"), "{}", s.text);
        assert!(s.text.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(
            s.text.contains("<rect width=\"1\" height=\"1\"/>"),
            "{}",
            s.text
        );
        let bare = clean(r#"<svg width="3" height="3"><circle r="1"/></svg>"#);
        assert!(bare.contains("xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(bare.contains("<circle r=\"1\"/>"));
    }

    #[test]
    fn entity_bombs_are_refused_and_plain_entities_expand() {
        let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE svg [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
]>
<svg xmlns="http://www.w3.org/2000/svg"><text>&lol2;</text></svg>"#;
        assert_eq!(
            sanitize(laughs.as_bytes()),
            Err(SanitizeError::UnsafeEntity)
        );
        // Quadratic blow-up: one large entity referenced many times.
        let big = "x".repeat(50_000);
        let refs = "&big;".repeat(100);
        let quad = format!(
            r#"<!DOCTYPE svg [<!ENTITY big "{big}">]><svg xmlns="http://www.w3.org/2000/svg"><text>{refs}</text></svg>"#
        );
        assert_eq!(
            sanitize(quad.as_bytes()),
            Err(SanitizeError::EntityExpansion)
        );
        let external = r#"<!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]><svg xmlns="http://www.w3.org/2000/svg"><text>&x;</text></svg>"#;
        assert_eq!(
            sanitize(external.as_bytes()),
            Err(SanitizeError::UnsafeEntity)
        );
        let param =
            r#"<!DOCTYPE svg [<!ENTITY % p "x">]><svg xmlns="http://www.w3.org/2000/svg"/>"#;
        assert_eq!(sanitize(param.as_bytes()), Err(SanitizeError::UnsafeEntity));
        // Illustrator's namespace entities are plain text: expanded, the DOCTYPE gone.
        let ai = r##"<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd" [
 <!ENTITY ns_svg "http://www.w3.org/2000/svg">
 <!ENTITY fill "#336699">
]><svg xmlns="&ns_svg;" width="2" height="2"><rect fill="&fill;" width="2" height="2"/></svg>"##;
        let out = clean(ai);
        assert!(!out.contains("DOCTYPE") && !out.contains("ENTITY"), "{out}");
        assert!(out.contains(r##"fill="#336699""##), "{out}");
    }

    #[test]
    fn use_bombs_and_loops_are_refused() {
        // Each level references the previous one ten times: 10^6 elements.
        let mut svg = String::from(
            r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"><defs><rect id="l0" width="1" height="1"/>"#,
        );
        for level in 1..=6 {
            svg.push_str(&format!("<g id=\"l{level}\">"));
            for _ in 0..10 {
                svg.push_str(&format!("<use xlink:href=\"#l{}\"/>", level - 1));
            }
            svg.push_str("</g>");
        }
        svg.push_str("</defs><use xlink:href=\"#l6\"/></svg>");
        assert_eq!(
            sanitize(svg.as_bytes()),
            Err(SanitizeError::TooManyElements)
        );
        let looped = r##"<svg xmlns="http://www.w3.org/2000/svg"><g id="a"><use href="#b"/></g><g id="b"><use href="#a"/></g></svg>"##;
        assert_eq!(sanitize(looped.as_bytes()), Err(SanitizeError::UseLoop));
        // Four levels (10^4 elements) are fine; a level defined but never used still
        // counts, since renderers expand every <use> they parse.
        let cut = svg.find("<g id=\"l5\">").unwrap();
        let small = format!("{}</defs><use xlink:href=\"#l4\"/></svg>", &svg[..cut]);
        assert!(sanitize(small.as_bytes()).is_ok());
    }

    #[test]
    fn depth_nodes_and_non_svg_are_refused() {
        let deep = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg">{}{}</svg>"#,
            "<g>".repeat(MAX_DEPTH + 5),
            "</g>".repeat(MAX_DEPTH + 5)
        );
        assert_eq!(sanitize(deep.as_bytes()), Err(SanitizeError::TooDeep));
        let many = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg">{}</svg>"#,
            "<g/>".repeat(MAX_NODES as usize)
        );
        assert!(matches!(
            sanitize(many.as_bytes()),
            Err(SanitizeError::Xml(_))
        ));
        assert!(matches!(
            sanitize(b"<html><body><svg/></body></html>"),
            Err(SanitizeError::NotSvg(n)) if n == "html"
        ));
        assert_eq!(sanitize(&[0xff, 0xfe, b'<']), Err(SanitizeError::NotUtf8));
        assert!(matches!(sanitize(b"<svg"), Err(SanitizeError::Xml(_))));
    }

    /// The intrinsic size read from the parsed document, as the sanitiser's parser sees it.
    fn parsed_size(doc: &str) -> (f64, f64) {
        let opts = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        };
        let doc = roxmltree::Document::parse_with_options(doc, opts).unwrap();
        let root = doc.root_element();
        size_from(|name| root.attribute(name))
    }

    #[test]
    fn intrinsic_sizes_follow_usvg() {
        let size = |attrs: &str| {
            parsed_size(&format!(
                r#"<svg xmlns="http://www.w3.org/2000/svg" {attrs}/>"#
            ))
        };
        assert_eq!(size(r#"width="200" height="100""#), (200.0, 100.0));
        assert_eq!(size(r#"width="200px" height="1in""#), (200.0, 96.0));
        assert_eq!(size(r#"width="30pt" height="1pc""#), (40.0, 16.0));
        assert_eq!(size(r#"viewBox="0 0 640 480""#), (640.0, 480.0));
        assert_eq!(size(r#"viewBox="0,0,640,480" width="320""#), (320.0, 240.0));
        assert_eq!(size(r#"viewBox="0 0 640 480" height="48""#), (64.0, 48.0));
        assert_eq!(
            size(r#"viewBox="0 0 640 480" width="50%" height="50%""#),
            (320.0, 240.0)
        );
        assert_eq!(size(""), (100.0, 100.0));
        assert_eq!(size(r#"width="50%""#), (50.0, 100.0));
        assert_eq!(size(r#"width="0" height="-5""#), (1.0, 1.0));
        assert_eq!(size(r#"width="2em" height="nonsense""#), (24.0, 100.0));
    }

    #[test]
    fn the_cheap_probe_reads_the_start_tag_as_the_parser_does() {
        let docs = [
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100"/>"#,
            r#"<?xml version="1.0"?><!-- x --><svg viewBox='0 0 640 480' width="320" xmlns="http://www.w3.org/2000/svg"><g/></svg>"#,
            "<svg\n  xmlns=\"http://www.w3.org/2000/svg\"\n  width = \"3in\" height=\"50%\"\n>\n</svg>",
            r#"<svg xmlns="http://www.w3.org/2000/svg"></svg>"#,
            r#"<svg:svg xmlns:svg="http://www.w3.org/2000/svg" width="7" height="9"/>"#,
        ];
        for doc in docs {
            assert_eq!(
                root_size(doc.as_bytes(), 4096),
                Some(parsed_size(doc)),
                "{doc}"
            );
        }
        assert_eq!(root_size(b"<html/>", 4096), None);
        assert_eq!(root_size(b"<svg width=\"3", 4096), None);
        assert_eq!(root_size(b"<svg width=3>", 4096), None);
    }

    #[test]
    fn mutated_documents_never_panic() {
        let base = br##"<!DOCTYPE svg [<!ENTITY a "b">]><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 9 9"><g id="x"><rect style="fill:url(#x)" width="1"/></g><use href="#x"/><style>a{fill:url(</style></svg>"##;
        let mut seed = 0x9e37_79b9_u32;
        for _ in 0..3000 {
            let mut b = base.to_vec();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let i = seed as usize % b.len();
                b[i] = (seed >> 8) as u8;
            }
            let _ = root_size(&b, 4096);
            if let Ok(s) = sanitize(&b) {
                // Whatever comes out parses again.
                assert!(sanitize(s.text.as_bytes()).is_ok(), "{}", s.text);
            }
            let cut = seed as usize % b.len();
            let _ = sanitize(&b[..cut]);
        }
    }
}
