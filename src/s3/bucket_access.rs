//! One bucket's access settings as the request path reads them: its policy, its public
//! access block and its ownership controls, and the decisions they make together. Pure:
//! `BucketSettings` loads and stores them, `access` asks them.
//!
//! What stays true: an explicit Deny in the policy refuses anyone, signed or not;
//! RestrictPublicBuckets takes a public policy's grants away from anonymous requests;
//! IgnorePublicAcls and BucketOwnerEnforced take object ACLs' anonymous read away.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::policy::{Decision, Policy, Request};

/// A bucket's PublicAccessBlock configuration (PutPublicAccessBlock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// PutBucketAcl, PutObjectAcl and uploads with a public ACL are refused.
    pub block_public_acls: bool,
    /// Public ACLs (an object's public-read) grant nothing.
    pub ignore_public_acls: bool,
    /// PutBucketPolicy with a public policy (and the public toggle) is refused.
    pub block_public_policy: bool,
    /// A public policy grants nothing to anonymous requests.
    pub restrict_public_buckets: bool,
}

/// A bucket's object ownership (PutBucketOwnershipControls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ownership {
    /// ACLs are disabled: only `private` / `bucket-owner-full-control` are accepted, and
    /// object ACLs grant nothing.
    BucketOwnerEnforced,
    BucketOwnerPreferred,
    ObjectWriter,
}

impl Ownership {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "BucketOwnerEnforced" => Self::BucketOwnerEnforced,
            "BucketOwnerPreferred" => Self::BucketOwnerPreferred,
            "ObjectWriter" => Self::ObjectWriter,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BucketOwnerEnforced => "BucketOwnerEnforced",
            Self::BucketOwnerPreferred => "BucketOwnerPreferred",
            Self::ObjectWriter => "ObjectWriter",
        }
    }
}

/// A bucket policy as stored: the client's text, and what it means.
#[derive(Debug)]
pub struct StoredPolicy {
    pub text: String,
    pub policy: Policy,
    /// From `[s3] public_buckets`, not written by anyone (kept in memory only).
    pub from_config: bool,
}

#[derive(Debug, Clone, Default)]
pub struct BucketAccess {
    pub policy: Option<Arc<StoredPolicy>>,
    pub block: Option<Block>,
    pub ownership: Option<Ownership>,
    /// The owner id of the key that created the bucket; `None` for buckets made before
    /// owners were recorded, which belong to the account (`acl::OWNER_ID`).
    pub owner: Option<String>,
    /// Default encryption of new objects (PutBucketEncryption).
    pub encryption: Option<super::sse::DefaultEncryption>,
}

impl BucketAccess {
    fn block(&self) -> Block {
        self.block.unwrap_or_default()
    }

    /// What the policy says about `r`, after RestrictPublicBuckets.
    pub fn decide(&self, r: &Request<'_>) -> Decision {
        let Some(p) = &self.policy else {
            return Decision::Neither;
        };
        match p.policy.evaluate(r) {
            Decision::Allow
                if r.principal.is_none()
                    && self.block().restrict_public_buckets
                    && p.policy.is_public() =>
            {
                Decision::Neither
            }
            d => d,
        }
    }

    /// Whether an object's public-read ACL lets anonymous requests read it.
    pub fn object_acls_count(&self) -> bool {
        !self.block().ignore_public_acls && self.ownership != Some(Ownership::BucketOwnerEnforced)
    }

    /// Whether anyone may read every object, as the admin UI and GetBucketAcl show it.
    pub fn anyone_reads(&self, bucket: &str) -> bool {
        self.policy.as_ref().is_some_and(|p| {
            p.policy.anyone_reads(bucket)
                && !(self.block().restrict_public_buckets && p.policy.is_public())
        })
    }

    /// Refuses a public ACL where BlockPublicAcls is set, and any ACL but the owner's where
    /// BucketOwnerEnforced disables ACLs.
    pub fn check_acl(&self, public: bool) -> Result<(), AclRefusal> {
        if self.ownership == Some(Ownership::BucketOwnerEnforced) && public {
            return Err(AclRefusal::AclsDisabled);
        }
        if self.block().block_public_acls && public {
            return Err(AclRefusal::Blocked);
        }
        Ok(())
    }

    /// Refuses a public policy where BlockPublicPolicy is set.
    pub fn check_policy(&self, policy: &Policy) -> Result<(), AclRefusal> {
        if self.block().block_public_policy && policy.is_public() {
            return Err(AclRefusal::PolicyBlocked);
        }
        Ok(())
    }
}

/// Why an ACL or a policy was refused by the bucket's own settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AclRefusal {
    #[error("The bucket does not allow ACLs (its object ownership is BucketOwnerEnforced)")]
    AclsDisabled,
    #[error(
        "Access Denied: the bucket's public access block (BlockPublicAcls) refuses public ACLs"
    )]
    Blocked,
    #[error(
        "Access Denied: the bucket's public access block (BlockPublicPolicy) refuses a public policy"
    )]
    PolicyBlocked,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::policy::{parse, public_read_statements};

    fn public(bucket: &str) -> Arc<StoredPolicy> {
        let text = serde_json::json!({"Statement": public_read_statements(bucket)}).to_string();
        Arc::new(StoredPolicy {
            policy: parse(bucket, &text).unwrap(),
            text,
            from_config: false,
        })
    }

    fn read(key: &str) -> Request<'_> {
        Request {
            action: "GetObject",
            resource: key,
            ..Request::default()
        }
    }

    #[test]
    fn restrict_public_buckets_takes_a_public_policy_from_anonymous_requests() {
        let mut a = BucketAccess {
            policy: Some(public("b")),
            ..BucketAccess::default()
        };
        assert_eq!(a.decide(&read("b/x")), Decision::Allow);
        assert!(a.anyone_reads("b"));
        a.block = Some(Block {
            restrict_public_buckets: true,
            ..Block::default()
        });
        assert_eq!(a.decide(&read("b/x")), Decision::Neither);
        assert!(!a.anyone_reads("b"));
        let signed = Request {
            principal: Some("key"),
            ..read("b/x")
        };
        assert_eq!(a.decide(&signed), Decision::Allow);
    }

    #[test]
    fn blocks_and_enforced_ownership_refuse_public_acls() {
        let mut a = BucketAccess::default();
        assert!(a.check_acl(true).is_ok());
        assert!(a.object_acls_count());
        a.block = Some(Block {
            block_public_acls: true,
            ..Block::default()
        });
        assert_eq!(a.check_acl(true), Err(AclRefusal::Blocked));
        assert!(a.check_acl(false).is_ok());
        a.block = Some(Block {
            ignore_public_acls: true,
            ..Block::default()
        });
        assert!(!a.object_acls_count());
        a.block = None;
        a.ownership = Some(Ownership::BucketOwnerEnforced);
        assert_eq!(a.check_acl(true), Err(AclRefusal::AclsDisabled));
        assert!(!a.object_acls_count());
    }

    #[test]
    fn block_public_policy_refuses_only_public_policies() {
        let a = BucketAccess {
            block: Some(Block {
                block_public_policy: true,
                ..Block::default()
            }),
            ..BucketAccess::default()
        };
        assert_eq!(
            a.check_policy(&public("b").policy),
            Err(AclRefusal::PolicyBlocked)
        );
        let pinned = parse(
            "b",
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"IpAddress":{"aws:SourceIp":"192.0.2.0/24"}}}}"#,
        )
        .unwrap();
        assert!(a.check_policy(&pinned).is_ok());
    }
}
