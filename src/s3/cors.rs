//! CORS on the S3 listener, the pure part: a bucket's rules as PutBucketCors stores them,
//! their validation as AWS does it, and the `Access-Control-*` headers that a preflight
//! (`OPTIONS`) or a real request gets from them. `bucket_cors` keeps the rules; `door`
//! applies these answers.
//!
//! What must stay true: a request whose origin and method match no rule gets no
//! `Access-Control-*` header at all, and a preflight asking for a header that no part of the
//! matching rule allows is refused.

use serde::{Deserialize, Serialize};

/// AWS's limit on rules in one configuration.
pub const MAX_RULES: usize = 100;
/// The methods a rule may allow (AWS's list).
pub const METHODS: [&str; 5] = ["GET", "PUT", "HEAD", "POST", "DELETE"];

/// One CORS rule, as S3's `CORSRule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<i32>,
}

/// Why a configuration is refused (S3 answers `InvalidRequest` or `MalformedXML`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CorsError {
    #[error("the CORS configuration must have at least one CORSRule")]
    NoRules,
    #[error("the CORS configuration has {0} rules; at most {MAX_RULES} are allowed")]
    TooManyRules(usize),
    #[error("a CORSRule must have at least one AllowedOrigin and one AllowedMethod")]
    Incomplete,
    #[error("Found unsupported HTTP method in CORS config. Unsupported method is {0}")]
    Method(String),
    #[error("{field} \"{value}\" can not have more than one wildcard.")]
    Wildcards { field: &'static str, value: String },
    #[error("a CORSRule ID is at most 255 characters")]
    LongId,
}

/// Checks `rules` as PutBucketCors does.
pub fn validate(rules: &[Rule]) -> Result<(), CorsError> {
    if rules.is_empty() {
        return Err(CorsError::NoRules);
    }
    if rules.len() > MAX_RULES {
        return Err(CorsError::TooManyRules(rules.len()));
    }
    for r in rules {
        if r.allowed_origins.is_empty() || r.allowed_methods.is_empty() {
            return Err(CorsError::Incomplete);
        }
        if r.id.as_ref().is_some_and(|id| id.chars().count() > 255) {
            return Err(CorsError::LongId);
        }
        if let Some(m) = r
            .allowed_methods
            .iter()
            .find(|m| !METHODS.contains(&m.as_str()))
        {
            return Err(CorsError::Method(m.clone()));
        }
        for (field, values) in [
            ("AllowedOrigin", &r.allowed_origins),
            ("AllowedHeader", &r.allowed_headers),
        ] {
            if let Some(v) = values.iter().find(|v| v.matches('*').count() > 1) {
                return Err(CorsError::Wildcards {
                    field,
                    value: v.clone(),
                });
            }
        }
    }
    Ok(())
}

/// `value` against `pattern` with at most one `*`, which matches any run of characters.
fn wildcard(pattern: &str, value: &str, ignore_case: bool) -> bool {
    let eq = |a: &str, b: &str| {
        if ignore_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    match pattern.split_once('*') {
        None => eq(pattern, value),
        Some((head, tail)) => {
            value.len() >= head.len() + tail.len()
                && value.is_char_boundary(head.len())
                && value.is_char_boundary(value.len() - tail.len())
                && eq(&value[..head.len()], head)
                && eq(&value[value.len() - tail.len()..], tail)
        }
    }
}

impl Rule {
    fn origin_matches(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|p| wildcard(p, origin, false))
    }

    fn method_matches(&self, method: &str) -> bool {
        self.allowed_methods.iter().any(|m| m == method)
    }

    fn header_allowed(&self, header: &str) -> bool {
        self.allowed_headers
            .iter()
            .any(|p| wildcard(p, header, true))
    }

    /// `Access-Control-Allow-Origin`: `*` for a rule that allows every origin (and then no
    /// credentials), else the request's own origin.
    fn common(&self, origin: &str) -> Vec<(&'static str, String)> {
        let any = self.allowed_origins.iter().any(|o| o == "*");
        let mut h = vec![(
            "access-control-allow-origin",
            if any {
                "*".to_owned()
            } else {
                origin.to_owned()
            },
        )];
        h.push((
            "access-control-allow-methods",
            self.allowed_methods.join(", "),
        ));
        if !any {
            h.push(("access-control-allow-credentials", "true".to_owned()));
        }
        if !self.expose_headers.is_empty() {
            h.push((
                "access-control-expose-headers",
                self.expose_headers.join(", "),
            ));
        }
        if let Some(age) = self.max_age_seconds {
            h.push(("access-control-max-age", age.to_string()));
        }
        h
    }
}

/// The `Vary` a response whose CORS headers depend on the request carries.
pub const VARY: &str = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method";

/// A preflight's answer headers: the first rule that allows `origin`, `method` (the
/// `Access-Control-Request-Method`) and every header named in `request_headers` (the
/// comma-separated `Access-Control-Request-Headers`). `None`: refused.
pub fn preflight(
    rules: &[Rule],
    origin: &str,
    method: &str,
    request_headers: &str,
) -> Option<Vec<(&'static str, String)>> {
    let asked: Vec<String> = request_headers
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    let rule = rules.iter().find(|r| {
        r.origin_matches(origin)
            && r.method_matches(method)
            && asked.iter().all(|h| r.header_allowed(h))
    })?;
    let mut h = rule.common(origin);
    if !asked.is_empty() {
        h.push(("access-control-allow-headers", asked.join(", ")));
    }
    Some(h)
}

/// A real request's added headers: the first rule that allows `origin` and `method` (a
/// HEAD request is matched as HEAD). `None`: no CORS headers.
pub fn actual(rules: &[Rule], origin: &str, method: &str) -> Option<Vec<(&'static str, String)>> {
    let rule = rules
        .iter()
        .find(|r| r.origin_matches(origin) && r.method_matches(method))?;
    Some(rule.common(origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> Rule {
        Rule {
            allowed_origins: origins.iter().map(|s| (*s).to_owned()).collect(),
            allowed_methods: methods.iter().map(|s| (*s).to_owned()).collect(),
            allowed_headers: headers.iter().map(|s| (*s).to_owned()).collect(),
            ..Rule::default()
        }
    }

    fn get<'a>(h: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn validation_follows_aws() {
        assert_eq!(validate(&[]), Err(CorsError::NoRules));
        assert_eq!(
            validate(&[rule(&["*"], &["PATCH"], &[])]),
            Err(CorsError::Method("PATCH".into()))
        );
        assert!(matches!(
            validate(&[rule(&["https://*.*.example"], &["GET"], &[])]),
            Err(CorsError::Wildcards {
                field: "AllowedOrigin",
                ..
            })
        ));
        assert_eq!(
            validate(&[rule(&[], &["GET"], &[])]),
            Err(CorsError::Incomplete)
        );
        let many = vec![rule(&["*"], &["GET"], &[]); MAX_RULES + 1];
        assert_eq!(validate(&many), Err(CorsError::TooManyRules(MAX_RULES + 1)));
        assert_eq!(
            validate(&[rule(&["https://*.example.com"], &["GET", "PUT"], &["*"])]),
            Ok(())
        );
    }

    #[test]
    fn preflight_matches_origin_method_and_every_header() {
        let rules = [
            rule(&["https://app.example.com"], &["GET"], &[]),
            rule(
                &["https://*.example.com"],
                &["PUT", "POST"],
                &["content-type", "x-amz-*"],
            ),
        ];
        let h = preflight(
            &rules,
            "https://up.example.com",
            "PUT",
            "Content-Type, X-Amz-Meta-A",
        )
        .unwrap();
        assert_eq!(
            get(&h, "access-control-allow-origin"),
            Some("https://up.example.com")
        );
        assert_eq!(get(&h, "access-control-allow-methods"), Some("PUT, POST"));
        assert_eq!(
            get(&h, "access-control-allow-headers"),
            Some("content-type, x-amz-meta-a")
        );
        assert_eq!(get(&h, "access-control-allow-credentials"), Some("true"));
        assert_eq!(
            preflight(&rules, "https://up.example.com", "PUT", "authorization"),
            None
        );
        assert_eq!(preflight(&rules, "https://evil.test", "PUT", ""), None);
        assert_eq!(
            preflight(&rules, "https://app.example.com", "DELETE", ""),
            None
        );
        // Origins are matched as written (case-sensitive), headers case-insensitively.
        assert_eq!(
            preflight(&rules, "https://APP.example.com", "GET", ""),
            None
        );
        let h = preflight(&rules, "https://app.example.com", "GET", "").unwrap();
        assert_eq!(get(&h, "access-control-allow-headers"), None);
    }

    #[test]
    fn a_star_origin_answers_star_without_credentials() {
        let mut r = rule(&["*"], &["GET", "HEAD"], &["*"]);
        r.expose_headers = vec!["ETag".into(), "x-amz-request-id".into()];
        r.max_age_seconds = Some(3000);
        let h = actual(&[r], "http://localhost:5173", "GET").unwrap();
        assert_eq!(get(&h, "access-control-allow-origin"), Some("*"));
        assert_eq!(get(&h, "access-control-allow-credentials"), None);
        assert_eq!(
            get(&h, "access-control-expose-headers"),
            Some("ETag, x-amz-request-id")
        );
        assert_eq!(get(&h, "access-control-max-age"), Some("3000"));
    }

    #[test]
    fn wildcards_match_one_run_and_never_overlap() {
        assert!(wildcard(
            "https://*.example.com",
            "https://a.b.example.com",
            false
        ));
        assert!(!wildcard(
            "https://*.example.com",
            "https://example.com",
            false
        ));
        assert!(wildcard("*", "", false));
        assert!(!wildcard("ab*ba", "aba", false));
        assert!(wildcard("x-amz-*", "X-AMZ-DATE", true));
        assert!(!wildcard("é*", "e", false));
    }
}
