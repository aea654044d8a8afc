//! The web UI's files, embedded at build time from `web/` (see `build.rs`). With the
//! environment variable `PIXELPORT_WEB_DIR` set, files are read from that directory instead
//! (for working on the UI without rebuilding; not for production).

use std::borrow::Cow;

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("webmanifest") => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

/// The bytes of `path` (relative to `web/`), or `None`.
pub fn get(path: &str) -> Option<Cow<'static, [u8]>> {
    if path.is_empty()
        || path
            .split('/')
            .any(|seg| seg.is_empty() || seg == ".." || seg == ".")
    {
        return None;
    }
    if let Some(dir) = std::env::var_os("PIXELPORT_WEB_DIR") {
        return std::fs::read(std::path::Path::new(&dir).join(path))
            .ok()
            .map(Cow::Owned);
    }
    ASSETS
        .iter()
        .find(|(name, _)| *name == path)
        .map(|(_, bytes)| Cow::Borrowed(*bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_escape_and_types_follow_extensions() {
        for bad in [
            "",
            "../Cargo.toml",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "./x",
        ] {
            assert!(get(bad).is_none(), "{bad}");
        }
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("x/style.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("noext"), "application/octet-stream");
        if let Some((name, bytes)) = ASSETS.first() {
            assert_eq!(get(name).as_deref(), Some(*bytes));
        }
    }
}
