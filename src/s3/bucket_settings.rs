//! Per-bucket settings kept beside the store, in the admin catalog: CORS rules and tags
//! (PutBucketCors, PutBucketTagging), the policy, public access block and ownership
//! controls ([`BucketAccess`]), and the unsigned-image choice the admin UI makes.
//! The rules are held in memory for the request path and written through to the catalog,
//! so a change takes effect with the next request and survives a restart. Deleting a bucket,
//! through the S3 API or the admin API, forgets all of them, so a new bucket of that name
//! starts private and without CORS.
//!
//! "Public" has one source of truth, the bucket policy: the admin UI's toggle and a
//! public-read bucket ACL add the public-read statements (MinIO's `mc anonymous set
//! download`), and making the bucket private removes every statement granting anyone
//! anything. `[s3] public_buckets` is that same policy, held in memory until a policy is
//! written for the bucket.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use crate::admin::AdminCatalog;
use crate::admin::catalog::{AccessTable, CatalogError};
use crate::s3::access::BucketSet;
use crate::s3::bucket_access::{AclRefusal, Block, BucketAccess, Ownership, StoredPolicy};
use crate::s3::cors::Rule;
use crate::s3::lifecycle::Rule as LifecycleRule;
use crate::s3::policy::{self, Policy, PolicyError};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Refused(#[from] AclRefusal),
    #[error("{0}")]
    Policy(#[from] PolicyError),
}

pub struct BucketSettings {
    catalog: Arc<AdminCatalog>,
    cors: RwLock<HashMap<String, Arc<[Rule]>>>,
    access: RwLock<HashMap<String, Arc<BucketAccess>>>,
    /// `[s3] public_buckets`: a forgotten bucket falls back to them.
    config_public: HashSet<String>,
    /// The image endpoint's unsigned buckets, and the configured ones.
    unsigned: Arc<BucketSet>,
    config_unsigned: HashSet<String>,
}

impl BucketSettings {
    /// Loads every bucket's CORS rules and access settings from `catalog`. A bucket the
    /// public toggle made public before bucket policies existed gets the public-read policy
    /// (written once, here).
    pub fn load(
        catalog: Arc<AdminCatalog>,
        config_public: HashSet<String>,
        unsigned: (Arc<BucketSet>, HashSet<String>),
    ) -> Result<Self, CatalogError> {
        let cors = catalog
            .cors_rules()?
            .into_iter()
            .map(|(bucket, rules)| (bucket, Arc::from(rules)))
            .collect();
        let mut access: HashMap<String, BucketAccess> = HashMap::new();
        for (bucket, text) in catalog.access_rows(AccessTable::Policy)? {
            let text = String::from_utf8_lossy(&text).into_owned();
            match policy::parse(&bucket, &text) {
                Ok(p) => access.entry(bucket).or_default().policy = Some(stored(text, p, false)),
                Err(e) => {
                    tracing::error!(bucket, error = %e, "stored bucket policy no longer parses; the bucket is private until it is written again")
                }
            }
        }
        for (bucket, json) in catalog.access_rows(AccessTable::PublicAccessBlock)? {
            access.entry(bucket).or_default().block = Some(serde_json::from_slice(&json)?);
        }
        for (bucket, v) in catalog.access_rows(AccessTable::Ownership)? {
            access.entry(bucket).or_default().ownership =
                Ownership::parse(&String::from_utf8_lossy(&v));
        }
        for (bucket, v) in catalog.access_rows(AccessTable::Owner)? {
            access.entry(bucket).or_default().owner =
                Some(String::from_utf8_lossy(&v).into_owned());
        }
        for (bucket, json) in catalog.access_rows(AccessTable::Encryption)? {
            access.entry(bucket).or_default().encryption = Some(serde_json::from_slice(&json)?);
        }
        let choices: HashMap<String, bool> = catalog.public_overrides()?.into_iter().collect();
        for (bucket, public) in &choices {
            let entry = access.entry(bucket.clone()).or_default();
            if *public
                && entry.policy.is_none()
                && let Some((text, p)) = public_read_policy(bucket)
            {
                catalog.set_access_row(AccessTable::Policy, bucket, Some(text.as_bytes()))?;
                tracing::info!(
                    bucket,
                    "public bucket: its public-read choice is now a bucket policy"
                );
                entry.policy = Some(stored(text, p, false));
            }
        }
        for bucket in &config_public {
            if !choices.contains_key(bucket)
                && let Some((text, p)) = public_read_policy(bucket)
            {
                access.entry(bucket.clone()).or_default().policy = Some(stored(text, p, true));
            }
        }
        Ok(Self {
            catalog,
            cors: RwLock::new(cors),
            access: RwLock::new(access.into_iter().map(|(b, a)| (b, Arc::new(a))).collect()),
            config_public,
            unsigned: unsigned.0,
            config_unsigned: unsigned.1,
        })
    }

    /// The bucket's policy, public access block and ownership controls.
    pub fn access(&self, bucket: &str) -> Arc<BucketAccess> {
        self.access
            .read()
            .ok()
            .and_then(|m| m.get(bucket).cloned())
            .unwrap_or_default()
    }

    /// Changes the bucket's access settings in memory (after the catalog took them).
    fn update(&self, bucket: &str, f: impl FnOnce(&mut BucketAccess)) {
        if let Ok(mut map) = self.access.write() {
            let mut a = map.get(bucket).map(|a| (**a).clone()).unwrap_or_default();
            f(&mut a);
            map.insert(bucket.to_owned(), Arc::new(a));
        }
    }

    /// Replaces (`Some`) or deletes (`None`) the bucket's policy. A public policy is
    /// refused where the bucket's BlockPublicPolicy is set.
    pub fn set_policy(
        &self,
        bucket: &str,
        p: Option<(String, Policy)>,
    ) -> Result<(), SettingsError> {
        if let Some((_, policy)) = &p {
            self.access(bucket).check_policy(policy)?;
        }
        self.catalog.set_access_row(
            AccessTable::Policy,
            bucket,
            p.as_ref().map(|(text, _)| text.as_bytes()),
        )?;
        self.update(bucket, |a| {
            a.policy = p.map(|(text, policy)| stored(text, policy, false))
        });
        Ok(())
    }

    pub fn set_block(&self, bucket: &str, block: Option<Block>) -> Result<(), SettingsError> {
        let json = block
            .as_ref()
            .map(serde_json::to_vec)
            .transpose()
            .map_err(CatalogError::from)?;
        self.catalog
            .set_access_row(AccessTable::PublicAccessBlock, bucket, json.as_deref())?;
        self.update(bucket, |a| a.block = block);
        Ok(())
    }

    pub fn set_ownership(&self, bucket: &str, o: Option<Ownership>) -> Result<(), SettingsError> {
        self.catalog.set_access_row(
            AccessTable::Ownership,
            bucket,
            o.map(|o| o.as_str().as_bytes()),
        )?;
        self.update(bucket, |a| a.ownership = o);
        Ok(())
    }

    /// Replaces (`Some`) or deletes (`None`) the bucket's default encryption.
    pub fn set_encryption(
        &self,
        bucket: &str,
        e: Option<super::sse::DefaultEncryption>,
    ) -> Result<(), SettingsError> {
        let json = e
            .as_ref()
            .map(serde_json::to_vec)
            .transpose()
            .map_err(CatalogError::from)?;
        self.catalog
            .set_access_row(AccessTable::Encryption, bucket, json.as_deref())?;
        self.update(bucket, |a| a.encryption = e);
        Ok(())
    }

    /// Records who created the bucket (CreateBucket).
    pub fn set_owner(&self, bucket: &str, owner: &str) -> Result<(), SettingsError> {
        self.catalog
            .set_access_row(AccessTable::Owner, bucket, Some(owner.as_bytes()))?;
        self.update(bucket, |a| a.owner = Some(owner.to_owned()));
        Ok(())
    }

    /// The bucket's CORS rules, if it has any.
    pub fn cors(&self, bucket: &str) -> Option<Arc<[Rule]>> {
        self.cors.read().ok()?.get(bucket).cloned()
    }

    /// Replaces (`Some`) or deletes (`None`) the bucket's CORS rules.
    pub fn set_cors(&self, bucket: &str, rules: Option<Vec<Rule>>) -> Result<(), CatalogError> {
        self.catalog.set_cors_rules(bucket, rules.as_deref())?;
        if let Ok(mut map) = self.cors.write() {
            match rules {
                Some(r) => map.insert(bucket.to_owned(), Arc::from(r)),
                None => map.remove(bucket),
            };
        }
        Ok(())
    }

    /// Whether anyone may read every object of the bucket: what its policy grants (the admin
    /// UI's toggle, PutBucketAcl and `[s3] public_buckets` all write that policy).
    pub fn is_public(&self, bucket: &str) -> bool {
        self.access(bucket).anyone_reads(bucket)
    }

    /// Makes the bucket public-read (adds the public-read statements to its policy) or
    /// private (removes every statement that grants anyone anything), as the admin UI's
    /// toggle does. The bucket's other statements are kept.
    pub fn set_public(&self, bucket: &str, public: bool) -> Result<(), SettingsError> {
        let current = self.access(bucket).policy.clone();
        if public == self.is_public(bucket) && current.as_ref().is_none_or(|p| !p.from_config) {
            return Ok(());
        }
        let mut doc: serde_json::Value = current
            .as_ref()
            .and_then(|p| serde_json::from_str(&p.text).ok())
            .unwrap_or_else(|| serde_json::json!({"Version": "2012-10-17", "Statement": []}));
        let mut statements: Vec<serde_json::Value> = match doc.get("Statement") {
            Some(serde_json::Value::Array(list)) => list.clone(),
            Some(one @ serde_json::Value::Object(_)) => vec![one.clone()],
            _ => Vec::new(),
        };
        // (A bucket public through `[s3] public_buckets` already holds the statements: the
        // switch then only makes that policy explicit.)
        if public && !self.is_public(bucket) {
            statements.extend(policy::public_read_statements(bucket));
        } else if !public && let Some(p) = &current {
            let drop = p.policy.public_statements();
            statements = statements
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !drop.contains(i))
                .map(|(_, s)| s)
                .collect();
        }
        if statements.is_empty() {
            return self.set_policy(bucket, None);
        }
        doc["Statement"] = serde_json::Value::Array(statements);
        let text = doc.to_string();
        let parsed = policy::parse(bucket, &text)?;
        self.set_policy(bucket, Some((text, parsed)))
    }

    /// The bucket's tags, if it has any.
    pub fn tags(
        &self,
        bucket: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, CatalogError> {
        self.catalog.bucket_tags(bucket)
    }

    /// Replaces (`Some`) or deletes (`None`) the bucket's tags.
    pub fn set_tags(
        &self,
        bucket: &str,
        tags: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<(), CatalogError> {
        self.catalog.set_bucket_tags(bucket, tags)
    }

    /// The bucket's lifecycle rules, if it has any (read from the catalog: the request path
    /// never needs them).
    pub fn lifecycle(&self, bucket: &str) -> Result<Option<Vec<LifecycleRule>>, CatalogError> {
        Ok(self
            .catalog
            .access_row(AccessTable::Lifecycle, bucket)?
            .map(|json| serde_json::from_slice(&json))
            .transpose()?)
    }

    /// Every bucket's lifecycle rules.
    pub fn lifecycles(&self) -> Result<Vec<(String, Vec<LifecycleRule>)>, CatalogError> {
        self.catalog
            .access_rows(AccessTable::Lifecycle)?
            .into_iter()
            .map(|(b, json)| Ok((b, serde_json::from_slice(&json)?)))
            .collect()
    }

    /// Replaces (`Some`) or deletes (`None`) the bucket's lifecycle rules.
    pub fn set_lifecycle(
        &self,
        bucket: &str,
        rules: Option<&[LifecycleRule]>,
    ) -> Result<(), CatalogError> {
        let json = rules.map(serde_json::to_vec).transpose()?;
        self.catalog
            .set_access_row(AccessTable::Lifecycle, bucket, json.as_deref())
    }

    /// Forgets everything about a deleted bucket.
    pub fn forget(&self, bucket: &str) -> Result<(), CatalogError> {
        self.catalog.forget_bucket(bucket)?;
        if let Ok(mut map) = self.cors.write() {
            map.remove(bucket);
        }
        if let Ok(mut map) = self.access.write() {
            map.remove(bucket);
            if self.config_public.contains(bucket)
                && let Some((text, p)) = public_read_policy(bucket)
            {
                let policy = Some(stored(text, p, true));
                map.insert(
                    bucket.to_owned(),
                    Arc::new(BucketAccess {
                        policy,
                        ..BucketAccess::default()
                    }),
                );
            }
        }
        self.unsigned
            .set(bucket, self.config_unsigned.contains(bucket));
        Ok(())
    }
}

fn stored(text: String, policy: Policy, from_config: bool) -> Arc<StoredPolicy> {
    Arc::new(StoredPolicy {
        text,
        policy,
        from_config,
    })
}

/// The policy `[s3] public_buckets` and the public toggle mean for a bucket with none.
/// `None` only for a name no bucket can have (the statements are ours).
fn public_read_policy(bucket: &str) -> Option<(String, Policy)> {
    let text = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": policy::public_read_statements(bucket),
    })
    .to_string();
    let parsed = policy::parse(bucket, &text).ok()?;
    Some((text, parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &std::path::Path, config_public: &[&str]) -> BucketSettings {
        let catalog = Arc::new(AdminCatalog::open(dir).unwrap());
        BucketSettings::load(
            catalog,
            config_public.iter().map(|s| s.to_string()).collect(),
            (Arc::new(BucketSet::default()), HashSet::new()),
        )
        .unwrap()
    }

    /// A catalog written before bucket policies held the public toggle as a bare flag:
    /// such a bucket must stay public, now through the public-read policy, and stay so
    /// after the next restart.
    #[test]
    fn the_old_public_flag_becomes_the_public_read_policy() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = AdminCatalog::open(dir.path()).unwrap();
            c.set_public("pics", true).unwrap();
            c.set_public("configured-but-private", false).unwrap();
        }
        for _ in 0..2 {
            let s = settings(dir.path(), &["configured-but-private", "configured"]);
            assert!(s.is_public("pics"));
            assert!(
                s.access("pics")
                    .policy
                    .as_ref()
                    .is_some_and(|p| !p.from_config)
            );
            assert!(!s.is_public("configured-but-private"));
            assert!(s.is_public("configured"));
            assert!(!s.is_public("other"));
        }
    }

    /// Switching a `[s3] public_buckets` bucket public made its policy explicit by adding
    /// the public-read statements a second time.
    #[test]
    fn switching_a_configured_public_bucket_on_keeps_one_copy_of_the_statements() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = settings(dir.path(), &["configured"]);
            s.set_public("configured", true).unwrap();
            let p = s.access("configured").policy.clone().unwrap();
            assert!(!p.from_config);
            assert_eq!(
                p.text.matches("PixelportPublicRead").count(),
                1,
                "{}",
                p.text
            );
        }
        let reopened = settings(dir.path(), &[]);
        assert!(reopened.is_public("configured"));
    }

    #[test]
    fn private_removes_only_what_grants_anyone_anything() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), &[]);
        let text = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"reader"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#;
        s.set_policy("b", Some((text.into(), policy::parse("b", text).unwrap())))
            .unwrap();
        s.set_public("b", true).unwrap();
        assert!(s.is_public("b"));
        s.set_public("b", false).unwrap();
        assert!(!s.is_public("b"));
        let left = s.access("b").policy.clone().unwrap();
        assert!(left.text.contains("reader") && !left.text.contains("PixelportPublic"));
        s.set_policy("b", None).unwrap();
        s.set_public("b", false).unwrap();
        assert!(s.access("b").policy.is_none());
        s.set_block(
            "b",
            Some(Block {
                block_public_policy: true,
                ..Block::default()
            }),
        )
        .unwrap();
        assert!(matches!(
            s.set_public("b", true),
            Err(SettingsError::Refused(AclRefusal::PolicyBlocked))
        ));
    }
}
