//! Bucket lifecycle rules (PutBucketLifecycleConfiguration) as Pixelport keeps them, their
//! checks, and which objects and uploads they make due. Pure: no I/O, no clock (callers
//! pass "now" and the length of a day, so tests run a day in a second).
//!
//! What stays true: a rule Pixelport cannot carry out is refused at Put, never stored and
//! ignored (transitions); an object is due only when every filter of an enabled rule
//! matches it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// AWS's limit on rules per configuration.
pub const MAX_RULES: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    /// Answered InvalidArgument, naming the rule.
    #[error("{0}")]
    Invalid(String),
    /// Answered NotImplemented, with the reason.
    #[error("{0}")]
    Unsupported(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expire {
    /// Days after the object's last modification.
    Days(u32),
    /// From this moment (Unix seconds, a UTC midnight) on.
    Date(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub enabled: bool,
    /// Given as the rule's legacy `<Prefix>` rather than in `<Filter>` (kept for Get).
    #[serde(default)]
    pub legacy_prefix: bool,
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub size_greater_than: Option<u64>,
    #[serde(default)]
    pub size_less_than: Option<u64>,
    #[serde(default)]
    pub expire: Option<Expire>,
    #[serde(default)]
    pub abort_incomplete_upload_days: Option<u32>,
    /// NoncurrentVersionExpiration: days after a version stopped being current.
    #[serde(default)]
    pub noncurrent_days: Option<u32>,
    /// NoncurrentVersionExpiration's NewerNoncurrentVersions: keep this many newer
    /// noncurrent versions whatever their age.
    #[serde(default)]
    pub newer_noncurrent: Option<u32>,
    /// Expiration's ExpiredObjectDeleteMarker: remove a delete marker that is all that is
    /// left of its key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expired_object_delete_marker: bool,
}

/// An object as the rules see it. `tags` is `None` when the caller has not read them
/// (rules with tag filters then do not match; see [`Rule::needs_tags`]).
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub key: &'a str,
    pub size: u64,
    pub modified_ms: i64,
    pub tags: Option<&'a BTreeMap<String, String>>,
}

fn invalid(id: &str, msg: impl std::fmt::Display) -> LifecycleError {
    LifecycleError::Invalid(format!("rule `{id}`: {msg}"))
}

/// Checks a configuration as AWS does.
pub fn validate(rules: &[Rule]) -> Result<(), LifecycleError> {
    if rules.is_empty() {
        return Err(LifecycleError::Invalid(
            "a lifecycle configuration holds at least one Rule".into(),
        ));
    }
    if rules.len() > MAX_RULES {
        return Err(LifecycleError::Invalid(format!(
            "a lifecycle configuration holds at most {MAX_RULES} rules"
        )));
    }
    let mut ids = std::collections::HashSet::new();
    for r in rules {
        if r.id.chars().count() > 255 {
            return Err(invalid(&r.id, "ID is at most 255 characters"));
        }
        if !ids.insert(r.id.as_str()) {
            return Err(LifecycleError::Invalid(format!(
                "Rule ID must be unique. Found same ID for more than one rule: `{}`",
                r.id
            )));
        }
        if r.expire.is_none()
            && r.abort_incomplete_upload_days.is_none()
            && r.noncurrent_days.is_none()
            && !r.expired_object_delete_marker
        {
            return Err(invalid(
                &r.id,
                "At least one action needs to be specified in a rule",
            ));
        }
        match r.expire {
            Some(Expire::Days(0)) => {
                return Err(invalid(
                    &r.id,
                    "'Days' for Expiration action must be a positive integer",
                ));
            }
            Some(Expire::Date(t)) if t.rem_euclid(86_400) != 0 => {
                return Err(invalid(&r.id, "'Date' must be at midnight GMT"));
            }
            _ => {}
        }
        if r.abort_incomplete_upload_days == Some(0) || r.noncurrent_days == Some(0) {
            return Err(invalid(
                &r.id,
                "'DaysAfterInitiation' and 'NoncurrentDays' must be positive integers",
            ));
        }
        if r.expired_object_delete_marker && r.expire.is_some() {
            return Err(invalid(
                &r.id,
                "ExpiredObjectDeleteMarker cannot be specified with Days or Date in a Lifecycle Expiration Policy",
            ));
        }
        if r.expired_object_delete_marker && !r.tags.is_empty() {
            return Err(invalid(
                &r.id,
                "ExpiredObjectDeleteMarker cannot be specified with object tags",
            ));
        }
        if r.newer_noncurrent.is_some_and(|n| n == 0 || n > 100) {
            return Err(invalid(
                &r.id,
                "'NewerNoncurrentVersions' must be between 1 and 100",
            ));
        }
        if r.newer_noncurrent.is_some() && r.noncurrent_days.is_none() {
            return Err(invalid(
                &r.id,
                "'NewerNoncurrentVersions' needs 'NoncurrentDays'",
            ));
        }
        if r.abort_incomplete_upload_days.is_some()
            && (!r.tags.is_empty() || r.size_greater_than.is_some() || r.size_less_than.is_some())
        {
            return Err(invalid(
                &r.id,
                "AbortIncompleteMultipartUpload cannot be specified with Tags or object sizes",
            ));
        }
        if let (Some(gt), Some(lt)) = (r.size_greater_than, r.size_less_than)
            && gt >= lt
        {
            return Err(invalid(
                &r.id,
                "ObjectSizeGreaterThan must be less than ObjectSizeLessThan",
            ));
        }
    }
    Ok(())
}

impl Rule {
    /// Whether the rule filters on tags, so the caller must read an object's tags first.
    pub fn needs_tags(&self) -> bool {
        !self.tags.is_empty()
    }

    /// Whether every filter matches the object.
    pub fn matches(&self, c: &Candidate<'_>) -> bool {
        c.key.starts_with(&self.prefix)
            && self.size_greater_than.is_none_or(|gt| c.size > gt)
            && self.size_less_than.is_none_or(|lt| c.size < lt)
            && (self.tags.is_empty()
                || c.tags.is_some_and(|t| {
                    self.tags
                        .iter()
                        .all(|(k, v)| t.get(k).is_some_and(|x| x == v))
                }))
    }

    /// Whether the rule expires the object at `now_ms` (a day lasting `day_ms`).
    pub fn expires(&self, c: &Candidate<'_>, now_ms: i64, day_ms: i64) -> bool {
        let due = match self.expire {
            Some(Expire::Days(d)) => {
                now_ms.saturating_sub(c.modified_ms) >= i64::from(d).saturating_mul(day_ms)
            }
            Some(Expire::Date(t)) => now_ms >= t.saturating_mul(1000),
            None => false,
        };
        self.enabled && due && self.matches(c)
    }

    /// Whether the rule expires a noncurrent version: one that stopped being current at
    /// `noncurrent_since_ms` and has `newer` noncurrent versions of its key above it.
    pub fn expires_noncurrent(
        &self,
        c: &Candidate<'_>,
        noncurrent_since_ms: i64,
        newer: u32,
        now_ms: i64,
        day_ms: i64,
    ) -> bool {
        let due = self.noncurrent_days.is_some_and(|d| {
            now_ms.saturating_sub(noncurrent_since_ms) >= i64::from(d).saturating_mul(day_ms)
        });
        self.enabled
            && due
            && self.newer_noncurrent.is_none_or(|keep| newer >= keep)
            && self.matches(c)
    }

    /// Whether the rule removes a delete marker of `key` that has no other version left.
    pub fn removes_lone_marker(&self, key: &str) -> bool {
        self.enabled && self.expired_object_delete_marker && key.starts_with(&self.prefix)
    }

    /// Whether the rule aborts a multipart upload of `key` started at `initiated_ms`.
    pub fn aborts(&self, key: &str, initiated_ms: i64, now_ms: i64, day_ms: i64) -> bool {
        self.enabled
            && key.starts_with(&self.prefix)
            && self.abort_incomplete_upload_days.is_some_and(|d| {
                now_ms.saturating_sub(initiated_ms) >= i64::from(d).saturating_mul(day_ms)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn rule(id: &str) -> Rule {
        Rule {
            id: id.into(),
            enabled: true,
            legacy_prefix: false,
            prefix: String::new(),
            tags: BTreeMap::new(),
            size_greater_than: None,
            size_less_than: None,
            expire: Some(Expire::Days(1)),
            abort_incomplete_upload_days: None,
            noncurrent_days: None,
            newer_noncurrent: None,
            expired_object_delete_marker: false,
        }
    }

    fn obj<'a>(
        key: &'a str,
        size: u64,
        tags: Option<&'a BTreeMap<String, String>>,
    ) -> Candidate<'a> {
        Candidate {
            key,
            size,
            modified_ms: 0,
            tags,
        }
    }

    #[test]
    fn days_prefix_size_and_tags_all_have_to_match() {
        let mut r = rule("tmp");
        r.prefix = "tmp/".into();
        r.size_greater_than = Some(10);
        r.size_less_than = Some(100);
        r.tags.insert("class".into(), "scratch".into());
        let scratch: BTreeMap<_, _> = [("class".to_string(), "scratch".to_string())].into();
        let other: BTreeMap<_, _> = [("class".to_string(), "keep".to_string())].into();
        assert!(r.needs_tags());
        assert!(r.expires(&obj("tmp/a", 50, Some(&scratch)), DAY, DAY));
        assert!(!r.expires(&obj("tmp/a", 50, Some(&scratch)), DAY - 1, DAY));
        assert!(!r.expires(&obj("keep/a", 50, Some(&scratch)), DAY, DAY));
        assert!(!r.expires(&obj("tmp/a", 10, Some(&scratch)), DAY, DAY));
        assert!(!r.expires(&obj("tmp/a", 100, Some(&scratch)), DAY, DAY));
        assert!(!r.expires(&obj("tmp/a", 50, Some(&other)), DAY, DAY));
        assert!(!r.expires(&obj("tmp/a", 50, None), DAY, DAY));
        r.enabled = false;
        assert!(!r.expires(&obj("tmp/a", 50, Some(&scratch)), DAY, DAY));
    }

    #[test]
    fn a_date_expires_everything_matching_from_that_midnight() {
        let mut r = rule("d");
        r.expire = Some(Expire::Date(1_767_225_600)); // 2026-01-01T00:00:00Z
        assert!(!r.expires(&obj("a", 1, None), 1_767_225_599_999, DAY));
        assert!(r.expires(&obj("a", 1, None), 1_767_225_600_000, DAY));
    }

    #[test]
    fn uploads_abort_after_their_days() {
        let mut r = rule("mpu");
        r.expire = None;
        r.prefix = "up/".into();
        r.abort_incomplete_upload_days = Some(2);
        assert!(!r.aborts("up/x", 0, 2 * DAY - 1, DAY));
        assert!(r.aborts("up/x", 0, 2 * DAY, DAY));
        assert!(!r.aborts("other/x", 0, 9 * DAY, DAY));
    }

    #[test]
    fn what_aws_refuses_is_refused() {
        let bad = |f: &dyn Fn(&mut Rule)| {
            let mut r = rule("r");
            f(&mut r);
            validate(&[r]).unwrap_err().to_string()
        };
        assert!(bad(&|r| r.expire = Some(Expire::Days(0))).contains("positive"));
        assert!(bad(&|r| r.expire = Some(Expire::Date(1_767_225_601))).contains("midnight"));
        assert!(bad(&|r| r.expire = None).contains("At least one action"));
        assert!(
            bad(&|r| {
                r.abort_incomplete_upload_days = Some(1);
                r.tags.insert("a".into(), "b".into());
            })
            .contains("Tags")
        );
        assert!(
            bad(&|r| {
                r.size_greater_than = Some(5);
                r.size_less_than = Some(5);
            })
            .contains("less than")
        );
        assert!(bad(&|r| r.id = "x".repeat(256)).contains("255"));
        assert!(
            validate(&[rule("a"), rule("a")])
                .unwrap_err()
                .to_string()
                .contains("unique")
        );
        assert!(validate(&[]).is_err());
        assert!(validate(&[rule("a"), rule("b")]).is_ok());
    }
}
