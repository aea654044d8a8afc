//! Put/Get/DeleteBucketLifecycleConfiguration: S3's rules turned into `lifecycle::Rule`
//! (refused when Pixelport cannot carry them out) and kept in the admin catalog beside the
//! bucket, for both stores; `lifecycle_runner` applies them.

use std::collections::BTreeMap;

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::PixelportS3;
use super::lifecycle::{self, Expire, LifecycleError, Rule};

fn lifecycle_error(e: LifecycleError) -> S3Error {
    match e {
        LifecycleError::Invalid(m) => S3Error::with_message(S3ErrorCode::InvalidArgument, m),
        LifecycleError::Unsupported(m) => S3Error::with_message(S3ErrorCode::NotImplemented, m),
    }
}

fn tag_map(tags: impl IntoIterator<Item = Tag>) -> BTreeMap<String, String> {
    tags.into_iter()
        .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
        .collect()
}

fn size(v: Option<i64>) -> Result<Option<u64>, LifecycleError> {
    v.map(|n| {
        u64::try_from(n)
            .map_err(|_| LifecycleError::Invalid(format!("object sizes are not negative: {n}")))
    })
    .transpose()
}

fn days(v: Option<i32>, what: &str) -> Result<Option<u32>, LifecycleError> {
    v.map(|d| {
        u32::try_from(d)
            .map_err(|_| LifecycleError::Invalid(format!("'{what}' must be a positive integer")))
    })
    .transpose()
}

/// One S3 rule as Pixelport keeps it.
fn rule_from(r: LifecycleRule, index: usize) -> Result<Rule, LifecycleError> {
    let id = r.id.unwrap_or_else(|| format!("rule-{}", index + 1));
    let unsupported = |what: &str| {
        LifecycleError::Unsupported(format!(
            "rule `{id}`: {what} is not supported: Pixelport has one storage class"
        ))
    };
    if r.transitions.as_ref().is_some_and(|t| !t.is_empty())
        || r.noncurrent_version_transitions
            .as_ref()
            .is_some_and(|t| !t.is_empty())
    {
        return Err(unsupported("Transition"));
    }
    let enabled = match r.status.as_str() {
        "Enabled" => true,
        "Disabled" => false,
        other => {
            return Err(LifecycleError::Invalid(format!(
                "rule `{id}`: Status is Enabled or Disabled, not `{other}`"
            )));
        }
    };
    let mut rule = Rule {
        id: id.clone(),
        enabled,
        legacy_prefix: false,
        prefix: String::new(),
        tags: BTreeMap::new(),
        size_greater_than: None,
        size_less_than: None,
        expire: None,
        abort_incomplete_upload_days: None,
        noncurrent_days: None,
        newer_noncurrent: None,
        expired_object_delete_marker: false,
    };
    match (r.prefix, r.filter) {
        (Some(_), Some(_)) => {
            return Err(LifecycleError::Invalid(format!(
                "rule `{id}`: give either Prefix or Filter, not both"
            )));
        }
        (Some(p), None) => {
            rule.prefix = p;
            rule.legacy_prefix = true;
        }
        (None, Some(f)) => {
            rule.prefix = f.prefix.unwrap_or_default();
            rule.tags = tag_map(f.tag);
            rule.size_greater_than = size(f.object_size_greater_than)?;
            rule.size_less_than = size(f.object_size_less_than)?;
            if let Some(and) = f.and {
                if !rule.prefix.is_empty() || !rule.tags.is_empty() {
                    return Err(LifecycleError::Invalid(format!(
                        "rule `{id}`: a Filter holds one of Prefix, Tag, And"
                    )));
                }
                rule.prefix = and.prefix.unwrap_or_default();
                rule.tags = tag_map(and.tags.unwrap_or_default());
                rule.size_greater_than =
                    size(and.object_size_greater_than)?.or(rule.size_greater_than);
                rule.size_less_than = size(and.object_size_less_than)?.or(rule.size_less_than);
            }
        }
        (None, None) => {}
    }
    if let Some(e) = r.expiration {
        rule.expired_object_delete_marker = e.expired_object_delete_marker == Some(true);
        rule.expire = match (e.days, e.date) {
            (Some(d), None) => Some(Expire::Days(days(Some(d), "Days")?.unwrap_or(0))),
            (None, Some(t)) => Some(Expire::Date(time::OffsetDateTime::from(t).unix_timestamp())),
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(LifecycleError::Invalid(format!(
                    "rule `{id}`: Expiration takes Days or Date, not both"
                )));
            }
        };
    }
    rule.abort_incomplete_upload_days = days(
        r.abort_incomplete_multipart_upload
            .and_then(|a| a.days_after_initiation),
        "DaysAfterInitiation",
    )?;
    if let Some(n) = r.noncurrent_version_expiration {
        rule.noncurrent_days = days(n.noncurrent_days, "NoncurrentDays")?;
        rule.newer_noncurrent = days(n.newer_noncurrent_versions, "NewerNoncurrentVersions")?;
    }
    Ok(rule)
}

fn tags_of(map: &BTreeMap<String, String>) -> Vec<Tag> {
    map.iter()
        .map(|(k, v)| Tag {
            key: Some(k.clone()),
            value: Some(v.clone()),
        })
        .collect()
}

/// A kept rule as S3 shows it.
fn rule_to(r: &Rule) -> LifecycleRule {
    let filter = (!r.legacy_prefix).then(|| {
        let sizes = (
            r.size_greater_than.and_then(|n| i64::try_from(n).ok()),
            r.size_less_than.and_then(|n| i64::try_from(n).ok()),
        );
        let parts = usize::from(!r.prefix.is_empty())
            + r.tags.len()
            + usize::from(sizes.0.is_some())
            + usize::from(sizes.1.is_some());
        if parts > 1 {
            LifecycleRuleFilter {
                and: Some(LifecycleRuleAndOperator {
                    object_size_greater_than: sizes.0,
                    object_size_less_than: sizes.1,
                    prefix: (!r.prefix.is_empty()).then(|| r.prefix.clone()),
                    tags: (!r.tags.is_empty()).then(|| tags_of(&r.tags)),
                }),
                ..LifecycleRuleFilter::default()
            }
        } else {
            LifecycleRuleFilter {
                and: None,
                object_size_greater_than: sizes.0,
                object_size_less_than: sizes.1,
                prefix: Some(r.prefix.clone()),
                tag: tags_of(&r.tags).into_iter().next(),
            }
        }
    });
    LifecycleRule {
        abort_incomplete_multipart_upload: r.abort_incomplete_upload_days.map(|d| {
            AbortIncompleteMultipartUpload {
                days_after_initiation: i32::try_from(d).ok(),
            }
        }),
        expiration: match (r.expire, r.expired_object_delete_marker) {
            (Some(Expire::Days(d)), _) => Some(LifecycleExpiration {
                days: i32::try_from(d).ok(),
                ..LifecycleExpiration::default()
            }),
            (Some(Expire::Date(t)), _) => Some(LifecycleExpiration {
                date: time::OffsetDateTime::from_unix_timestamp(t)
                    .ok()
                    .map(Timestamp::from),
                ..LifecycleExpiration::default()
            }),
            (None, true) => Some(LifecycleExpiration {
                expired_object_delete_marker: Some(true),
                ..LifecycleExpiration::default()
            }),
            (None, false) => None,
        },
        filter,
        id: Some(r.id.clone()),
        noncurrent_version_expiration: r.noncurrent_days.map(|d| NoncurrentVersionExpiration {
            noncurrent_days: i32::try_from(d).ok(),
            newer_noncurrent_versions: r.newer_noncurrent.and_then(|n| i32::try_from(n).ok()),
        }),
        noncurrent_version_transitions: None,
        prefix: r.legacy_prefix.then(|| r.prefix.clone()),
        status: ExpirationStatus::from(if r.enabled { "Enabled" } else { "Disabled" }.to_owned()),
        transitions: None,
    }
}

pub async fn put(
    s: &PixelportS3,
    req: S3Request<PutBucketLifecycleConfigurationInput>,
) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
    let i = req.input;
    s.existing_bucket(&i.bucket, &req.extensions).await?;
    let rules = i
        .lifecycle_configuration
        .map(|c| c.rules)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(n, r)| rule_from(r, n))
        .collect::<Result<Vec<_>, _>>()
        .map_err(lifecycle_error)?;
    lifecycle::validate(&rules).map_err(lifecycle_error)?;
    if !s.store.keeps_tags() && rules.iter().any(Rule::needs_tags) {
        // A tag filter would never match on a store without object tags: refused, not kept
        // as a rule that silently does nothing.
        return Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            "Lifecycle rules that filter on tags need object tags, which the remote store does not keep (filter on prefix and size instead)",
        ));
    }
    s.buckets
        .set_lifecycle(&i.bucket, Some(&rules))
        .map_err(|e| super::catalog_error("lifecycle configuration", e))?;
    tracing::info!(bucket = %i.bucket, rules = rules.len(), "lifecycle configuration set");
    Ok(S3Response::new(
        PutBucketLifecycleConfigurationOutput::default(),
    ))
}

pub async fn get(
    s: &PixelportS3,
    req: S3Request<GetBucketLifecycleConfigurationInput>,
) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
    let bucket = req.input.bucket;
    s.existing_bucket(&bucket, &req.extensions).await?;
    let rules = s
        .buckets
        .lifecycle(&bucket)
        .map_err(|e| super::catalog_error("lifecycle configuration", e))?
        .ok_or_else(|| {
            S3Error::with_message(
                S3ErrorCode::NoSuchLifecycleConfiguration,
                "The lifecycle configuration does not exist",
            )
        })?;
    Ok(S3Response::new(GetBucketLifecycleConfigurationOutput {
        rules: Some(rules.iter().map(rule_to).collect()),
        transition_default_minimum_object_size: None,
    }))
}

pub async fn delete(
    s: &PixelportS3,
    req: S3Request<DeleteBucketLifecycleInput>,
) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
    let b = &req.input.bucket;
    super::policy_ops::delete_setting(s, b, &req.extensions, "lifecycle configuration", |x| {
        Ok(x.set_lifecycle(b, None)?)
    })
    .await?;
    Ok(S3Response::with_status(
        DeleteBucketLifecycleOutput {},
        http::StatusCode::NO_CONTENT,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_round_trip_through_s3s_shapes() {
        let s3_rule = LifecycleRule {
            abort_incomplete_multipart_upload: None,
            expiration: Some(LifecycleExpiration {
                days: Some(30),
                ..LifecycleExpiration::default()
            }),
            filter: Some(LifecycleRuleFilter {
                and: Some(LifecycleRuleAndOperator {
                    prefix: Some("logs/".into()),
                    tags: Some(vec![Tag {
                        key: Some("k".into()),
                        value: Some("v".into()),
                    }]),
                    object_size_greater_than: Some(10),
                    object_size_less_than: None,
                }),
                ..LifecycleRuleFilter::default()
            }),
            id: Some("logs".into()),
            noncurrent_version_expiration: None,
            noncurrent_version_transitions: None,
            prefix: None,
            status: ExpirationStatus::from("Enabled".to_owned()),
            transitions: None,
        };
        let kept = rule_from(s3_rule.clone(), 0).unwrap();
        assert_eq!(kept.prefix, "logs/");
        assert_eq!(kept.size_greater_than, Some(10));
        assert_eq!(kept.expire, Some(Expire::Days(30)));
        assert_eq!(rule_to(&kept), s3_rule);
        assert_eq!(rule_from(rule_to(&kept), 0).unwrap(), kept);
    }

    #[test]
    fn what_cannot_be_carried_out_is_refused() {
        let mut r = LifecycleRule {
            abort_incomplete_multipart_upload: None,
            expiration: None,
            filter: None,
            id: None,
            noncurrent_version_expiration: None,
            noncurrent_version_transitions: None,
            prefix: None,
            status: ExpirationStatus::from("Enabled".to_owned()),
            transitions: Some(vec![Transition::default()]),
        };
        assert!(matches!(
            rule_from(r.clone(), 0),
            Err(LifecycleError::Unsupported(_))
        ));
        r.transitions = None;
        r.noncurrent_version_transitions = Some(vec![NoncurrentVersionTransition::default()]);
        assert!(matches!(
            rule_from(r, 0),
            Err(LifecycleError::Unsupported(_))
        ));
    }
}
