//! Per-bucket settings kept beside the store, in the admin catalog: CORS rules and tags
//! (the S3 API's PutBucketCors and PutBucketTagging), and the public-read and unsigned-image choices the admin UI makes.
//! The rules are held in memory for the request path and written through to the catalog,
//! so a change takes effect with the next request and survives a restart. Deleting a bucket,
//! through the S3 API or the admin API, forgets all of them, so a new bucket of that name
//! starts private and without CORS.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use crate::admin::AdminCatalog;
use crate::admin::catalog::CatalogError;
use crate::s3::access::BucketSet;
use crate::s3::cors::Rule;

pub struct BucketSettings {
    catalog: Arc<AdminCatalog>,
    cors: RwLock<HashMap<String, Arc<[Rule]>>>,
    /// The S3 listener's public buckets, and the configured ones a forgotten bucket falls
    /// back to.
    public: Arc<BucketSet>,
    config_public: HashSet<String>,
    /// The image endpoint's unsigned buckets, and the configured ones.
    unsigned: Arc<BucketSet>,
    config_unsigned: HashSet<String>,
}

impl BucketSettings {
    /// Loads every bucket's CORS rules from `catalog`.
    pub fn load(
        catalog: Arc<AdminCatalog>,
        public: (Arc<BucketSet>, HashSet<String>),
        unsigned: (Arc<BucketSet>, HashSet<String>),
    ) -> Result<Self, CatalogError> {
        let cors = catalog
            .cors_rules()?
            .into_iter()
            .map(|(bucket, rules)| (bucket, Arc::from(rules)))
            .collect();
        Ok(Self {
            catalog,
            cors: RwLock::new(cors),
            public: public.0,
            config_public: public.1,
            unsigned: unsigned.0,
            config_unsigned: unsigned.1,
        })
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

    /// Whether anonymous requests may read the bucket (`[s3] public_buckets`, overlaid by
    /// the admin UI's toggle and PutBucketAcl, which are one choice).
    pub fn is_public(&self, bucket: &str) -> bool {
        self.public.contains(bucket)
    }

    /// Makes the bucket public-read or private, as the admin UI's toggle does.
    pub fn set_public(&self, bucket: &str, public: bool) -> Result<(), CatalogError> {
        self.catalog.set_public(bucket, public)?;
        self.public.set(bucket, public);
        Ok(())
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

    /// Forgets everything about a deleted bucket.
    pub fn forget(&self, bucket: &str) -> Result<(), CatalogError> {
        self.catalog.forget_bucket(bucket)?;
        if let Ok(mut map) = self.cors.write() {
            map.remove(bucket);
        }
        self.public.set(bucket, self.config_public.contains(bucket));
        self.unsigned
            .set(bucket, self.config_unsigned.contains(bucket));
        Ok(())
    }
}
