//! The transform builder's pure half: the form's fields (width, height, resizing type,
//! gravity, format, quality, DPR) become imgproxy options and an image path for an `s3://`
//! source. Signing and the base URL are the caller's.

use serde::Deserialize;

/// Largest width or height the builder accepts.
pub const MAX_DIMENSION: u32 = 16384;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuildRequest {
    pub bucket: String,
    pub key: String,
    pub width: u32,
    pub height: u32,
    pub resizing_type: String,
    pub gravity: String,
    /// Empty: the source's own format.
    pub format: String,
    /// 0: the configured default.
    pub quality: u32,
    /// 0 or 1: no DPR option.
    pub dpr: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BuildError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{field} must be at most {MAX_DIMENSION} (got {value})")]
    TooLarge { field: &'static str, value: u32 },
    #[error("quality must be 1-100 (got {0})")]
    Quality(u32),
    #[error("dpr must be between 1 and 5 (got {0})")]
    Dpr(f64),
    #[error("unknown {field} `{value}` (one of: {allowed})")]
    Unknown {
        field: &'static str,
        value: String,
        allowed: &'static str,
    },
}

const RESIZING_TYPES: &[&str] = &["fit", "fill", "fill-down", "force", "auto"];
const GRAVITIES: &[&str] = &[
    "ce", "no", "so", "ea", "we", "nowe", "noea", "sowe", "soea", "sm",
];
const FORMATS: &[&str] = &["jpeg", "jpg", "png", "webp", "avif", "gif"];

fn one_of(
    field: &'static str,
    value: &str,
    allowed: &[&str],
    names: &'static str,
) -> Result<(), BuildError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(BuildError::Unknown {
            field,
            value: value.to_owned(),
            allowed: names,
        })
    }
}

/// Percent-encodes a key for a `plain/` source: everything but unreserved characters and `/`
/// (so `@`, `%`, `?`, `#` and spaces cannot be read as anything but the key).
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What the builder makes: the options (`rs:fit:300:0/q:80`) and the part of the path that
/// gets signed (`/rs:fit:300:0/q:80/plain/s3://b/k@webp`), for DPR 1 and, when it differs,
/// for twice the DPR (the `2x` of a srcset).
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    pub options: String,
    /// The `/info` path's signed part: the plain source, without options or format.
    pub info_part: String,
    pub signed_part: String,
    pub signed_part_2x: String,
}

impl BuildRequest {
    fn options(&self, dpr: f64) -> String {
        let mut parts = Vec::new();
        let rt = if self.resizing_type.is_empty() {
            "fit"
        } else {
            &self.resizing_type
        };
        if self.width > 0 || self.height > 0 || !self.resizing_type.is_empty() {
            parts.push(format!("rs:{rt}:{}:{}", self.width, self.height));
        }
        if !self.gravity.is_empty() {
            parts.push(format!("g:{}", self.gravity));
        }
        if self.quality > 0 {
            parts.push(format!("q:{}", self.quality));
        }
        if dpr > 1.0 {
            // Trim trailing zeros: 2 rather than 2.0, 1.5 stays.
            let text = format!("{dpr:.2}");
            let text = text.trim_end_matches('0').trim_end_matches('.');
            parts.push(format!("dpr:{text}"));
        }
        parts.join("/")
    }

    pub fn build(&self) -> Result<Built, BuildError> {
        if self.bucket.is_empty() {
            return Err(BuildError::Missing("bucket"));
        }
        if self.key.is_empty() {
            return Err(BuildError::Missing("key"));
        }
        for (field, value) in [("width", self.width), ("height", self.height)] {
            if value > MAX_DIMENSION {
                return Err(BuildError::TooLarge { field, value });
            }
        }
        if self.quality > 100 {
            return Err(BuildError::Quality(self.quality));
        }
        if !(self.dpr == 0.0 || (1.0..=5.0).contains(&self.dpr)) {
            return Err(BuildError::Dpr(self.dpr));
        }
        if !self.resizing_type.is_empty() {
            one_of(
                "resizing_type",
                &self.resizing_type,
                RESIZING_TYPES,
                "fit, fill, fill-down, force, auto",
            )?;
        }
        if !self.gravity.is_empty() {
            one_of(
                "gravity",
                &self.gravity,
                GRAVITIES,
                "ce, no, so, ea, we, nowe, noea, sowe, soea, sm",
            )?;
        }
        if !self.format.is_empty() {
            one_of(
                "format",
                &self.format,
                FORMATS,
                "jpeg, png, webp, avif, gif",
            )?;
        }
        let source = format!(
            "plain/s3://{}/{}{}",
            self.bucket,
            encode_key(&self.key),
            if self.format.is_empty() {
                String::new()
            } else {
                format!("@{}", self.format)
            }
        );
        let part = |options: &str| {
            if options.is_empty() {
                format!("/{source}")
            } else {
                format!("/{options}/{source}")
            }
        };
        let dpr = self.dpr.max(1.0);
        let options = self.options(dpr);
        let options_2x = self.options(dpr * 2.0);
        Ok(Built {
            info_part: format!("/plain/s3://{}/{}", self.bucket, encode_key(&self.key)),
            signed_part: part(&options),
            signed_part_2x: part(&options_2x),
            options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> BuildRequest {
        BuildRequest {
            bucket: "photos".into(),
            key: "2024/a b@x.jpg".into(),
            ..BuildRequest::default()
        }
    }

    #[test]
    fn fields_become_options_and_a_plain_source() {
        let mut r = req();
        r.width = 300;
        r.format = "webp".into();
        r.quality = 80;
        r.gravity = "sm".into();
        let b = r.build().unwrap();
        assert_eq!(b.options, "rs:fit:300:0/g:sm/q:80");
        assert_eq!(
            b.signed_part,
            "/rs:fit:300:0/g:sm/q:80/plain/s3://photos/2024/a%20b%40x.jpg@webp"
        );
        assert_eq!(
            b.signed_part_2x,
            "/rs:fit:300:0/g:sm/q:80/dpr:2/plain/s3://photos/2024/a%20b%40x.jpg@webp"
        );
        r.dpr = 1.5;
        let b = r.build().unwrap();
        assert!(b.options.ends_with("/dpr:1.5"), "{}", b.options);
        assert!(b.signed_part_2x.contains("/dpr:3/"), "{}", b.signed_part_2x);
        // Nothing set: just the source.
        let b = req().build().unwrap();
        assert_eq!(b.signed_part, "/plain/s3://photos/2024/a%20b%40x.jpg");
    }

    #[test]
    fn bad_fields_are_named() {
        let mut r = req();
        r.width = 20000;
        assert_eq!(
            r.build(),
            Err(BuildError::TooLarge {
                field: "width",
                value: 20000
            })
        );
        let mut r = req();
        r.quality = 101;
        assert_eq!(r.build(), Err(BuildError::Quality(101)));
        let mut r = req();
        r.resizing_type = "zoom".into();
        assert!(
            r.build()
                .unwrap_err()
                .to_string()
                .contains("resizing_type `zoom`")
        );
        let mut r = req();
        r.format = "bmp".into();
        assert!(r.build().is_err());
        let mut r = req();
        r.dpr = 9.0;
        assert_eq!(r.build(), Err(BuildError::Dpr(9.0)));
        let mut r = req();
        r.key.clear();
        assert_eq!(r.build(), Err(BuildError::Missing("key")));
    }

    #[test]
    fn keys_are_percent_encoded_so_the_parser_reads_them_back() {
        let key = "dir/<img src=x onerror=alert(1)>?#%@.png";
        let enc = encode_key(key);
        assert!(!enc.contains(['@', '?', '#', '<', ' ']), "{enc}");
        let path = format!("/unsafe/plain/s3://b/{enc}@webp");
        let parsed = crate::imaging::url::parse_path(&path).unwrap();
        let src = format!("{parsed:?}");
        assert!(
            src.contains("dir/<img src=x onerror=alert(1)>?#%@.png"),
            "{src}"
        );
    }
}
