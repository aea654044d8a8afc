//! Who may do what: signed requests (SigV4, SigV2, presigned) with the configured keys may do
//! everything; anonymous requests may only read objects (GET/HEAD, and list) in buckets named
//! in `[s3] public_buckets`. Unknown access keys get InvalidAccessKeyId.

use std::collections::{HashMap, HashSet};

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;
use s3s::{S3Result, s3_error};

pub struct KeyAuth {
    keys: HashMap<String, SecretKey>,
}

impl KeyAuth {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            keys: pairs
                .into_iter()
                .map(|(a, s)| (a, SecretKey::from(s)))
                .collect(),
        }
    }
}

#[async_trait::async_trait]
impl S3Auth for KeyAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        self.keys.get(access_key).cloned().ok_or_else(|| {
            s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )
        })
    }
}

pub struct PublicRead {
    buckets: HashSet<String>,
}

impl PublicRead {
    pub fn new(buckets: &[String]) -> Self {
        Self {
            buckets: buckets.iter().cloned().collect(),
        }
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
