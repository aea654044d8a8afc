//! Who may do what: signed requests (SigV4, SigV2, presigned) with the configured keys may do
//! everything; anonymous requests may only read objects (GET/HEAD, and list) in buckets named
//! in `[s3] public_buckets` or made public in the admin UI. Unknown access keys get
//! InvalidAccessKeyId. Both sets are shared with the admin API, which changes them while the
//! daemon runs: a created key works, and a revoked key stops working, with the next request.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;
use s3s::{S3Result, s3_error};

/// The access keys the S3 listener accepts: access key → secret.
#[derive(Default)]
pub struct KeyRing {
    keys: RwLock<HashMap<String, String>>,
}

impl KeyRing {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            keys: RwLock::new(pairs.into_iter().collect()),
        }
    }

    pub fn insert(&self, access_key: &str, secret_key: &str) {
        if let Ok(mut keys) = self.keys.write() {
            keys.insert(access_key.to_owned(), secret_key.to_owned());
        }
    }

    pub fn remove(&self, access_key: &str) {
        if let Ok(mut keys) = self.keys.write() {
            keys.remove(access_key);
        }
    }

    pub fn secret(&self, access_key: &str) -> Option<String> {
        self.keys.read().ok()?.get(access_key).cloned()
    }
}

pub struct KeyAuth {
    ring: Arc<KeyRing>,
}

impl KeyAuth {
    pub fn new(ring: Arc<KeyRing>) -> Self {
        Self { ring }
    }
}

#[async_trait::async_trait]
impl S3Auth for KeyAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        self.ring
            .secret(access_key)
            .map(SecretKey::from)
            .ok_or_else(|| {
                s3_error!(
                    InvalidAccessKeyId,
                    "The AWS Access Key Id you provided does not exist in our records."
                )
            })
    }
}

/// The buckets anonymous clients may read.
#[derive(Default)]
pub struct PublicBuckets {
    buckets: RwLock<HashSet<String>>,
}

impl PublicBuckets {
    pub fn new(buckets: impl IntoIterator<Item = String>) -> Self {
        Self {
            buckets: RwLock::new(buckets.into_iter().collect()),
        }
    }

    pub fn set(&self, bucket: &str, public: bool) {
        if let Ok(mut set) = self.buckets.write() {
            if public {
                set.insert(bucket.to_owned());
            } else {
                set.remove(bucket);
            }
        }
    }

    pub fn contains(&self, bucket: &str) -> bool {
        self.buckets.read().is_ok_and(|set| set.contains(bucket))
    }
}

pub struct PublicRead {
    buckets: Arc<PublicBuckets>,
}

impl PublicRead {
    pub fn new(buckets: Arc<PublicBuckets>) -> Self {
        Self { buckets }
    }
}

const PUBLIC_OPS: [&str; 5] = [
    "GetObject",
    "HeadObject",
    "HeadBucket",
    "ListObjects",
    "ListObjectsV2",
];

#[async_trait::async_trait]
impl S3Access for PublicRead {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        if cx.credentials().is_some() {
            return Ok(());
        }
        let bucket = match cx.s3_path() {
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => Some(&**bucket),
            S3Path::Root => None,
        };
        if let Some(b) = bucket
            && self.buckets.contains(b)
            && PUBLIC_OPS.contains(&cx.s3_op().name())
        {
            return Ok(());
        }
        Err(s3_error!(
            AccessDenied,
            "Access Denied: sign the request with an access key (anonymous access is allowed only for reads from public buckets)"
        ))
    }
}
