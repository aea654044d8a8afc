//! A drawing optimisation on a sanitised SVG tree, exact in meaning: a shape with
//! `opacity` that paints only its fill, or only its stroke, looks the same with that
//! opacity folded into `fill-opacity` (or `stroke-opacity`). Renderers draw an element
//! with `opacity` into a layer of its own and blend it back; for a long curve across the
//! picture that layer is the whole canvas, so a drawing of many translucent strokes costs
//! several times its plain one. Pure: it only decides.
//!
//! It declines (the element keeps its layer) whenever the answer could depend on
//! anything it does not read: a `<style>` sheet anywhere in the document, markers, a
//! filter, mask or clip path, a blend mode, a value it cannot parse, or a shape that
//! paints both fill and stroke (where the two overlap, folding would differ).

/// The shapes whose single paint can take the group opacity.
const SHAPES: &[&str] = &[
    "path", "rect", "circle", "ellipse", "line", "polyline", "polygon",
];

/// The new paint opacities of a folded shape: write them as attributes, and drop
/// `opacity`, `fill-opacity` and `stroke-opacity` from the element's own attributes and
/// `style`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Folded {
    pub fill_opacity: f64,
    pub stroke_opacity: f64,
}

/// Whether the document has a style sheet, which can set anything this module reads.
pub fn has_style_sheet(root: roxmltree::Node<'_, '_>) -> bool {
    root.descendants()
        .any(|n| n.is_element() && n.tag_name().name() == "style")
}

/// A property of `node` itself: its `style` declaration, else its presentation attribute.
fn own<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> Option<&'a str> {
    if let Some(style) = node.attribute("style") {
        let declared = style
            .split(';')
            .filter_map(|d| d.split_once(':'))
            .find_map(|(k, v)| k.trim().eq_ignore_ascii_case(name).then_some(v.trim()));
        if declared.is_some() {
            return declared;
        }
    }
    node.attribute(name).map(str::trim)
}

/// An inherited property: from `node` or its nearest ancestor that sets it (`inherit`
/// passes to the parent).
fn inherited<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> Option<&'a str> {
    node.ancestors()
        .filter(|n| n.is_element())
        .find_map(|n| own(n, name).filter(|v| !v.eq_ignore_ascii_case("inherit")))
}

/// An opacity value: a number or a percentage, clamped to 0..=1.
fn opacity(value: &str) -> Option<f64> {
    let v = value.trim();
    let n = match v.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().ok()? / 100.0,
        None => v.parse::<f64>().ok()?,
    };
    n.is_finite().then(|| n.clamp(0.0, 1.0))
}

fn paints(value: Option<&str>, default: bool) -> bool {
    value.map_or(default, |v| !v.eq_ignore_ascii_case("none"))
}

/// The folded opacities of `node`, or `None` when it keeps its layer (see the module
/// documentation). `sheet` is [`has_style_sheet`] of its document.
pub fn fold(node: roxmltree::Node<'_, '_>, sheet: bool) -> Option<Folded> {
    if sheet || !node.is_element() || !SHAPES.contains(&node.tag_name().name()) {
        return None;
    }
    let group = opacity(own(node, "opacity")?)?;
    if group >= 1.0 {
        return None;
    }
    for name in ["filter", "mask", "clip-path", "mix-blend-mode"] {
        if own(node, name).is_some_and(|v| !v.eq_ignore_ascii_case("none") && v != "normal") {
            return None;
        }
    }
    for name in ["marker", "marker-start", "marker-mid", "marker-end"] {
        if paints(inherited(node, name), false) {
            return None;
        }
    }
    let fill = paints(inherited(node, "fill"), true);
    let stroke = paints(inherited(node, "stroke"), false);
    if fill == stroke {
        return None;
    }
    let level = |name: &str| inherited(node, name).map_or(Some(1.0), opacity);
    Some(Folded {
        fill_opacity: level("fill-opacity")? * if fill { group } else { 1.0 },
        stroke_opacity: level("stroke-opacity")? * if stroke { group } else { 1.0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_shape(svg: &str) -> Option<Folded> {
        let doc = roxmltree::Document::parse(svg).unwrap();
        let sheet = has_style_sheet(doc.root_element());
        let shape = doc
            .descendants()
            .find(|n| n.is_element() && SHAPES.contains(&n.tag_name().name()))
            .unwrap();
        fold(shape, sheet)
    }

    const NS: &str = r#"xmlns="http://www.w3.org/2000/svg""#;

    #[test]
    fn single_paint_shapes_fold() {
        let f = |inner: &str| first_shape(&format!("<svg {NS}>{inner}</svg>"));
        // Fill only (the default black fill, no stroke).
        assert_eq!(
            f(r#"<circle r="5" opacity="0.5"/>"#),
            Some(Folded {
                fill_opacity: 0.5,
                stroke_opacity: 1.0
            })
        );
        // Stroke only, an inherited stroke-opacity multiplied in, a percentage.
        assert_eq!(
            f(
                r#"<g stroke-opacity="0.5"><path d="M0 0L9 9" fill="none" stroke="red" opacity="50%"/></g>"#
            ),
            Some(Folded {
                fill_opacity: 1.0,
                stroke_opacity: 0.25
            })
        );
        // Inkscape's style attribute, which wins over attributes.
        assert_eq!(
            f(
                r#"<rect width="1" height="1" fill="none" style="opacity:0.4;fill:#f00;fill-opacity:0.5"/>"#
            ),
            Some(Folded {
                fill_opacity: 0.2,
                stroke_opacity: 1.0
            })
        );
    }

    #[test]
    fn anything_uncertain_keeps_the_layer() {
        let f = |inner: &str| first_shape(&format!("<svg {NS}>{inner}</svg>"));
        // Both paints: where they overlap, folding would differ.
        assert_eq!(f(r#"<circle r="5" stroke="red" opacity="0.5"/>"#), None);
        // An inherited stroke makes two paints.
        assert_eq!(
            f(r#"<g stroke="red"><circle r="5" opacity="0.5"/></g>"#),
            None
        );
        // `inherit` reaches the parent's stroke.
        assert_eq!(
            f(r#"<g stroke="red"><circle r="5" stroke="inherit" opacity="0.5"/></g>"#),
            None
        );
        assert_eq!(f(r#"<circle r="5" opacity="0.5" filter="url(#f)"/>"#), None);
        assert_eq!(
            f(r#"<circle r="5" opacity="0.5" style="mix-blend-mode:multiply"/>"#),
            None
        );
        assert_eq!(
            f(r#"<g marker-end="url(#m)"><path d="M0 0L1 1" opacity="0.5"/></g>"#),
            None
        );
        assert_eq!(f(r#"<circle r="5" opacity="oops"/>"#), None);
        assert_eq!(f(r#"<circle r="5" opacity="1"/>"#), None);
        assert_eq!(f(r#"<circle r="5"/>"#), None);
        // A style sheet could set any of it.
        assert_eq!(
            f(r#"<style>circle { stroke: red }</style><circle r="5" opacity="0.5"/>"#),
            None
        );
        // Not a shape.
        let text = format!(r#"<svg {NS}><g opacity="0.5"/></svg>"#);
        let doc = roxmltree::Document::parse(&text).unwrap();
        let g = doc
            .descendants()
            .find(|n| n.tag_name().name() == "g")
            .unwrap();
        assert_eq!(fold(g, false), None);
    }
}
