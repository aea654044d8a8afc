//! imgproxy's environment, read as Pixelport configuration: a container started with the
//! environment block that configured imgproxy (`IMGPROXY_*`, plus `AWS_*` when
//! `IMGPROXY_USE_S3` is on) configures Pixelport the same way. Pure: a map of variables in,
//! `(SECTION__KEY, value, variable)` settings out, which `config::apply_env` types and
//! applies below any `PIXELPORT_*` variable naming the same key.

use std::collections::BTreeMap;

/// One setting taken from the environment: the key as `SECTION__KEY` (the form
/// `PIXELPORT_SECTION__KEY` uses), its raw value, and the variable it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: String,
    pub var: String,
}

/// A variable whose value cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}: {message}")]
pub struct ImgproxyEnvError {
    pub var: String,
    pub message: String,
}

/// What imgproxy's environment gave: the settings, and the `IMGPROXY_*` variables with no
/// Pixelport equivalent (each with the reason), which are ignored.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Translation {
    pub settings: Vec<Setting>,
    pub ignored: Vec<(String, &'static str)>,
}

/// The `var` of a setting that is imgproxy's default, applied because the configuration
/// comes from imgproxy's environment (`IMAGES__AUTO_WEBP` and `IMAGES__AUTO_AVIF` off).
pub const IMGPROXY_DEFAULT: &str = "imgproxy's default";

/// imgproxy variables taken as they are: variable, Pixelport key (`SECTION__KEY`).
const DIRECT: [(&str, &str); 41] = [
    (
        "IMGPROXY_CACHE_CONTROL_PASSTHROUGH",
        "IMAGES__CACHE_CONTROL_PASSTHROUGH",
    ),
    ("IMGPROXY_WATERMARK_DATA", "IMAGES__WATERMARK__DATA"),
    ("IMGPROXY_WATERMARK_PATH", "IMAGES__WATERMARK__PATH"),
    ("IMGPROXY_WATERMARK_URL", "IMAGES__WATERMARK__URL"),
    ("IMGPROXY_WATERMARK_OPACITY", "IMAGES__WATERMARK__OPACITY"),
    (
        "IMGPROXY_ENABLE_CLIENT_HINTS",
        "IMAGES__ENABLE_CLIENT_HINTS",
    ),
    ("IMGPROXY_USE_ETAG", "IMAGES__USE_ETAG"),
    ("IMGPROXY_USE_LAST_MODIFIED", "IMAGES__USE_LAST_MODIFIED"),
    ("IMGPROXY_KEY", "IMAGES__KEY"),
    ("IMGPROXY_SALT", "IMAGES__SALT"),
    ("IMGPROXY_SIGNATURE_SIZE", "IMAGES__SIGNATURE_SIZE"),
    ("IMGPROXY_SECRET", "IMAGES__SECRET"),
    ("IMGPROXY_ALLOW_ORIGIN", "IMAGES__ALLOW_ORIGIN"),
    ("IMGPROXY_ALLOW_UNSAFE_URLS", "IMAGES__ALLOW_UNSAFE"),
    ("IMGPROXY_WORKERS", "IMAGES__WORKERS"),
    ("IMGPROXY_CONCURRENCY", "IMAGES__WORKERS"),
    ("IMGPROXY_TIMEOUT", "IMAGES__TIMEOUT"),
    ("IMGPROXY_DOWNLOAD_TIMEOUT", "IMAGES__DOWNLOAD_TIMEOUT"),
    ("IMGPROXY_MAX_SRC_RESOLUTION", "IMAGES__MAX_SRC_RESOLUTION"),
    (
        "IMGPROXY_MAX_ANIMATION_FRAMES",
        "IMAGES__MAX_ANIMATION_FRAMES",
    ),
    (
        "IMGPROXY_MAX_RESULT_DIMENSION",
        "IMAGES__MAX_RESULT_DIMENSION",
    ),
    (
        "IMGPROXY_ALLOW_SECURITY_OPTIONS",
        "IMAGES__ALLOW_SECURITY_OPTIONS",
    ),
    ("IMGPROXY_QUALITY", "IMAGES__QUALITY"),
    ("IMGPROXY_FORMAT_QUALITY", "IMAGES__FORMAT_QUALITY"),
    ("IMGPROXY_JPEG_PROGRESSIVE", "IMAGES__JPEG_PROGRESSIVE"),
    ("IMGPROXY_AVIF_SPEED", "IMAGES__AVIF_SPEED"),
    ("IMGPROXY_AUTO_WEBP", "IMAGES__AUTO_WEBP"),
    ("IMGPROXY_ENABLE_WEBP_DETECTION", "IMAGES__AUTO_WEBP"),
    ("IMGPROXY_ENFORCE_WEBP", "IMAGES__ENFORCE_WEBP"),
    ("IMGPROXY_AUTO_AVIF", "IMAGES__AUTO_AVIF"),
    ("IMGPROXY_ENABLE_AVIF_DETECTION", "IMAGES__AUTO_AVIF"),
    ("IMGPROXY_ENFORCE_AVIF", "IMAGES__ENFORCE_AVIF"),
    ("IMGPROXY_TTL", "IMAGES__TTL"),
    ("IMGPROXY_STRIP_METADATA", "IMAGES__STRIP_METADATA"),
    ("IMGPROXY_KEEP_COPYRIGHT", "IMAGES__KEEP_COPYRIGHT"),
    (
        "IMGPROXY_STRIP_COLOR_PROFILE",
        "IMAGES__STRIP_COLOR_PROFILE",
    ),
    ("IMGPROXY_AUTO_ROTATE", "IMAGES__AUTO_ROTATE"),
    ("IMGPROXY_RETURN_ATTACHMENT", "IMAGES__RETURN_ATTACHMENT"),
    (
        "IMGPROXY_SKIP_PROCESSING_FORMATS",
        "IMAGES__SKIP_PROCESSING_FORMATS",
    ),
    ("IMGPROXY_LOCAL_FILESYSTEM_ROOT", "IMAGES__LOCAL_ROOT"),
    ("IMGPROXY_ALLOWED_SOURCES", "IMAGES__ALLOWED_SOURCES"),
];

/// Variables whose value 0 means "no limit" in imgproxy, where Pixelport keeps a limit (the
/// value is then ignored, and Pixelport's default stays).
const ZERO_IS_UNLIMITED: [(&str, &str); 2] = [
    ("IMGPROXY_MAX_SRC_FILE_SIZE", "IMAGES__MAX_SRC_FILE_SIZE"),
    ("IMGPROXY_REQUESTS_QUEUE_SIZE", "IMAGES__MAX_QUEUE"),
];

/// The S3 variables, applied only when `IMGPROXY_USE_S3` is on (`AWS_*` names are
/// everybody's, so they never change the store on their own).
const S3: [(&str, &str); 7] = [
    ("IMGPROXY_S3_ENDPOINT", "STORE__ENDPOINT"),
    ("IMGPROXY_S3_REGION", "STORE__REGION"),
    ("AWS_REGION", "STORE__REGION"),
    ("AWS_ACCESS_KEY_ID", "STORE__ACCESS_KEY"),
    ("AWS_SECRET_ACCESS_KEY", "STORE__SECRET_KEY"),
    ("IMGPROXY_USE_S3_FORCE_PATH_STYLE", "STORE__PATH_STYLE"),
    ("IMGPROXY_S3_ENDPOINT_USE_PATH_STYLE", "STORE__PATH_STYLE"),
];

/// Variables known to have no equivalent, with what to do instead.
const NO_EQUIVALENT: [(&str, &str); 5] = [
    (
        "IMGPROXY_PROMETHEUS_BIND",
        "metrics are on the admin listener's /metrics",
    ),
    (
        "IMGPROXY_ALLOW_LOOPBACK_SOURCE_ADDRESSES",
        "use [images] allow_private_sources",
    ),
    (
        "IMGPROXY_ALLOW_PRIVATE_SOURCE_ADDRESSES",
        "use [images] allow_private_sources",
    ),
    ("IMGPROXY_PRESETS", "use [[images.presets]] in the file"),
    (
        "IMGPROXY_LOG_FORMAT",
        "use [server] log_format (text, json or journal)",
    ),
];

fn truthy(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// imgproxy's `IMGPROXY_BIND` is Go's form: `:8080` means every interface.
fn bind_address(v: &str) -> String {
    let v = v.trim();
    match v.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => v.to_owned(),
    }
}

/// Reads imgproxy's variables out of `env` (other variables are not looked at). A variable
/// listed twice under different imgproxy names (`IMGPROXY_WORKERS` and
/// `IMGPROXY_CONCURRENCY`) gives the first in the tables above.
pub fn translate(env: &BTreeMap<String, String>) -> Result<Translation, ImgproxyEnvError> {
    let mut out = Translation::default();
    let set = |out: &mut Translation, key: &str, value: String, var: &str| {
        if !out.settings.iter().any(|s| s.key == key) {
            out.settings.push(Setting {
                key: key.to_owned(),
                value,
                var: var.to_owned(),
            });
        }
    };
    for (var, key) in DIRECT {
        if let Some(v) = env.get(var) {
            set(&mut out, key, v.clone(), var);
        }
    }
    for (var, key) in ZERO_IS_UNLIMITED {
        if let Some(v) = env.get(var) {
            if v.trim() == "0" {
                out.ignored
                    .push((var.to_owned(), "0 (no limit) keeps Pixelport's limit"));
            } else {
                set(&mut out, key, v.clone(), var);
            }
        }
    }
    if let Some(v) = env.get("IMGPROXY_BIND") {
        set(&mut out, "IMAGES__LISTEN", bind_address(v), "IMGPROXY_BIND");
    }
    if let Some(v) = env.get("IMGPROXY_LOG_LEVEL") {
        set(
            &mut out,
            "SERVER__LOG_LEVEL",
            v.trim().to_ascii_lowercase(),
            "IMGPROXY_LOG_LEVEL",
        );
    }
    match env.get("IMGPROXY_USE_S3").map(|v| (v, truthy(v))) {
        Some((_, Some(true))) => {
            let var = "IMGPROXY_USE_S3";
            set(&mut out, "STORE__KIND", "remote".into(), var);
            // imgproxy reads `s3://bucket/key` as the cluster's own bucket.
            set(&mut out, "STORE__BUCKET_MAPPING", "direct".into(), var);
            for (var, key) in S3 {
                if let Some(v) = env.get(var) {
                    set(&mut out, key, v.clone(), var);
                }
            }
        }
        Some((raw, None)) => {
            return Err(ImgproxyEnvError {
                var: "IMGPROXY_USE_S3".into(),
                message: format!("`{raw}` is not a boolean (true/false)"),
            });
        }
        _ => {}
    }
    // Pixelport negotiates WebP and AVIF by default (docs/images.md); imgproxy does not.
    // A configuration that comes from imgproxy's environment keeps imgproxy's defaults, so
    // a migration changes no response by surprise.
    if out.settings.iter().any(|s| s.var.starts_with("IMGPROXY_")) {
        for key in ["IMAGES__AUTO_WEBP", "IMAGES__AUTO_AVIF"] {
            set(&mut out, key, "false".into(), IMGPROXY_DEFAULT);
        }
    }
    for (var, why) in NO_EQUIVALENT {
        if env.contains_key(var) {
            out.ignored.push((var.to_owned(), why));
        }
    }
    let known = |name: &str| {
        name == "IMGPROXY_BIND"
            || name == "IMGPROXY_LOG_LEVEL"
            || name == "IMGPROXY_USE_S3"
            || DIRECT.iter().any(|(v, _)| *v == name)
            || ZERO_IS_UNLIMITED.iter().any(|(v, _)| *v == name)
            || S3.iter().any(|(v, _)| *v == name)
            || NO_EQUIVALENT.iter().any(|(v, _)| *v == name)
    };
    for var in env.keys() {
        if var.starts_with("IMGPROXY_") && !known(var) {
            out.ignored
                .push((var.clone(), "not supported by Pixelport"));
        }
    }
    out.ignored.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn get<'a>(t: &'a Translation, key: &str) -> Option<(&'a str, &'a str)> {
        t.settings
            .iter()
            .find(|s| s.key == key)
            .map(|s| (s.value.as_str(), s.var.as_str()))
    }

    #[test]
    fn use_s3_gives_a_remote_store_in_direct_mapping_with_the_aws_keys() {
        let t = translate(&env(&[
            ("IMGPROXY_USE_S3", "true"),
            ("IMGPROXY_S3_ENDPOINT", "http://minio:9000"),
            ("IMGPROXY_S3_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "minioadmin"),
            ("AWS_SECRET_ACCESS_KEY", "minio-secret"),
            ("IMGPROXY_USE_S3_FORCE_PATH_STYLE", "true"),
        ]))
        .unwrap();
        assert_eq!(get(&t, "STORE__KIND"), Some(("remote", "IMGPROXY_USE_S3")));
        assert_eq!(
            get(&t, "STORE__BUCKET_MAPPING"),
            Some(("direct", "IMGPROXY_USE_S3"))
        );
        assert_eq!(
            get(&t, "STORE__ENDPOINT"),
            Some(("http://minio:9000", "IMGPROXY_S3_ENDPOINT"))
        );
        assert_eq!(
            get(&t, "STORE__REGION"),
            Some(("eu-west-1", "IMGPROXY_S3_REGION"))
        );
        assert_eq!(
            get(&t, "STORE__ACCESS_KEY"),
            Some(("minioadmin", "AWS_ACCESS_KEY_ID"))
        );
        assert_eq!(
            get(&t, "STORE__PATH_STYLE"),
            Some(("true", "IMGPROXY_USE_S3_FORCE_PATH_STYLE"))
        );
        assert!(t.ignored.is_empty());
    }

    #[test]
    fn aws_variables_alone_never_touch_the_store() {
        for use_s3 in [None, Some("false")] {
            let mut e = env(&[
                ("AWS_ACCESS_KEY_ID", "x"),
                ("IMGPROXY_S3_ENDPOINT", "http://m"),
            ]);
            if let Some(v) = use_s3 {
                e.insert("IMGPROXY_USE_S3".into(), v.into());
            }
            let t = translate(&e).unwrap();
            assert!(t.settings.is_empty(), "{use_s3:?}: {:?}", t.settings);
        }
    }

    #[test]
    fn imgproxy_names_map_onto_images_keys() {
        let t = translate(&env(&[
            ("IMGPROXY_QUALITY", "75"),
            ("IMGPROXY_MAX_SRC_RESOLUTION", "16.8"),
            ("IMGPROXY_STRIP_METADATA", "false"),
            ("IMGPROXY_ALLOW_UNSAFE_URLS", "true"),
            ("IMGPROXY_BIND", ":8080"),
            ("IMGPROXY_LOG_LEVEL", "WARN"),
            ("PATH", "/usr/bin"),
        ]))
        .unwrap();
        assert_eq!(get(&t, "IMAGES__QUALITY"), Some(("75", "IMGPROXY_QUALITY")));
        assert_eq!(
            get(&t, "IMAGES__MAX_SRC_RESOLUTION").map(|v| v.0),
            Some("16.8")
        );
        assert_eq!(
            get(&t, "IMAGES__STRIP_METADATA").map(|v| v.0),
            Some("false")
        );
        assert_eq!(get(&t, "IMAGES__ALLOW_UNSAFE").map(|v| v.0), Some("true"));
        assert_eq!(get(&t, "IMAGES__LISTEN").map(|v| v.0), Some("0.0.0.0:8080"));
        assert_eq!(get(&t, "SERVER__LOG_LEVEL").map(|v| v.0), Some("warn"));
        // imgproxy's environment keeps imgproxy's format defaults (Pixelport's own are on).
        assert_eq!(
            get(&t, "IMAGES__AUTO_WEBP"),
            Some(("false", IMGPROXY_DEFAULT))
        );
        assert_eq!(
            get(&t, "IMAGES__AUTO_AVIF"),
            Some(("false", IMGPROXY_DEFAULT))
        );
        assert_eq!(t.settings.len(), 8);
        let asked = translate(&env(&[("IMGPROXY_AUTO_AVIF", "true")])).unwrap();
        assert_eq!(
            get(&asked, "IMAGES__AUTO_AVIF"),
            Some(("true", "IMGPROXY_AUTO_AVIF"))
        );
        assert_eq!(
            get(&asked, "IMAGES__AUTO_WEBP"),
            Some(("false", IMGPROXY_DEFAULT))
        );
    }

    #[test]
    fn unknown_and_unlimited_variables_are_reported_not_applied() {
        let t = translate(&env(&[
            ("IMGPROXY_PROMETHEUS_BIND", ":8081"),
            ("IMGPROXY_MAX_SRC_FILE_SIZE", "0"),
            ("IMGPROXY_SOMETHING_NEW", "1"),
        ]))
        .unwrap();
        assert!(t.settings.is_empty());
        let names: Vec<&str> = t.ignored.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(
            names,
            [
                "IMGPROXY_MAX_SRC_FILE_SIZE",
                "IMGPROXY_PROMETHEUS_BIND",
                "IMGPROXY_SOMETHING_NEW"
            ]
        );
    }

    #[test]
    fn a_bad_use_s3_names_the_variable() {
        let e = translate(&env(&[("IMGPROXY_USE_S3", "maybe")])).unwrap_err();
        assert_eq!(e.var, "IMGPROXY_USE_S3");
    }

    #[test]
    fn the_first_of_two_names_for_one_key_wins() {
        let t = translate(&env(&[
            ("IMGPROXY_WORKERS", "2"),
            ("IMGPROXY_CONCURRENCY", "8"),
        ]))
        .unwrap();
        assert_eq!(get(&t, "IMAGES__WORKERS"), Some(("2", "IMGPROXY_WORKERS")));
    }
}
