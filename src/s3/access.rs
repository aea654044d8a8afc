//! Who may do what: signed requests (SigV4, SigV2, presigned) with the configured keys may do
//! everything; anonymous requests may only read objects (GET/HEAD, and list) in buckets named
//! in `[s3] public_buckets` or made public in the admin UI. Unknown access keys get
//! InvalidAccessKeyId. Both sets are shared with the admin API, which changes them while the
//! daemon runs: a created key works, and a revoked key stops working, with the next request.
//!
//! Two rules ride along, as AWS applies them: a header-signed request (SigV2 or SigV4) must
//! be dated within 15 minutes of our clock (`sigv2::check_request_time`), and anonymous
//! requests may not use the `response-*` overrides of GetObject/HeadObject.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::{GetObjectInput, HeadObjectInput};
use s3s::path::S3Path;
use s3s::{S3Request, S3Result, s3_error};

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

/// A set of bucket names that a setting opens, changed at run time by the admin API: the
/// buckets anonymous S3 clients may read (`[s3] public_buckets`), and the buckets unsigned
/// image URLs may read (`[images] unsigned_buckets`).
#[derive(Default)]
pub struct BucketSet {
    buckets: RwLock<HashSet<String>>,
}

impl BucketSet {
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
    buckets: Arc<BucketSet>,
    /// Where an object's own public-read ACL is looked up (anonymous GET/HEAD on a private
    /// bucket).
    store: Option<crate::store::DynStore>,
}

impl PublicRead {
    pub fn new(buckets: Arc<BucketSet>) -> Self {
        Self {
            buckets,
            store: None,
        }
    }

    /// Also lets anonymous GET and HEAD read objects whose own ACL is public-read.
    pub fn with_object_acls(mut self, store: crate::store::DynStore) -> Self {
        self.store = Some(store);
        self
    }
}

const PUBLIC_OPS: [&str; 5] = [
    "GetObject",
    "HeadObject",
    "HeadBucket",
    "ListObjects",
    "ListObjectsV2",
];

/// Which `response-*` overrides a GetObject or HeadObject input carries (the two inputs are
/// different types with the same six fields).
macro_rules! overrides_given {
    ($i:expr) => {
        [
            $i.response_content_type.is_some(),
            $i.response_content_disposition.is_some(),
            $i.response_cache_control.is_some(),
            $i.response_content_encoding.is_some(),
            $i.response_content_language.is_some(),
            $i.response_expires.is_some(),
        ]
    };
}

#[async_trait::async_trait]
impl S3Access for PublicRead {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        if cx.credentials().is_some() {
            // s3s checks SigV4's x-amz-date itself but gives SigV2 header auth no window at
            // all; this holds both to AWS's 15 minutes (presigned URLs keep their expiry).
            return super::sigv2::check_request_time(cx.headers(), time::OffsetDateTime::now_utc());
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
        if let (Some(store), S3Path::Object { bucket, key }) = (&self.store, cx.s3_path())
            && matches!(cx.s3_op().name(), "GetObject" | "HeadObject")
            && store
                .head_object(bucket, key)
                .await
                .is_ok_and(|info| info.attrs.public_read)
        {
            return Ok(());
        }
        Err(s3_error!(
            AccessDenied,
            "Access Denied: sign the request with an access key (anonymous access is allowed only for reads from public buckets)"
        ))
    }

    async fn get_object(&self, req: &mut S3Request<GetObjectInput>) -> S3Result<()> {
        let i = &req.input;
        anonymous_overrides(req.credentials.is_some(), overrides_given!(i))
    }

    async fn head_object(&self, req: &mut S3Request<HeadObjectInput>) -> S3Result<()> {
        let i = &req.input;
        anonymous_overrides(req.credentials.is_some(), overrides_given!(i))
    }
}

/// The `response-content-type`, `-content-disposition`, `-cache-control`,
/// `-content-encoding`, `-content-language` and `-expires` overrides are for signed requests
/// only. Served anonymously from a public bucket they would let anyone make any object
/// render as `text/html` on our origin (stored XSS through a link). AWS answers such
/// requests 400 InvalidRequest, and so do we (`get.rs` also ignores overrides on anonymous
/// requests, should another access policy let one through).
fn anonymous_overrides(signed: bool, overrides: [bool; 6]) -> S3Result<()> {
    if signed || !overrides.contains(&true) {
        return Ok(());
    }
    Err(s3_error!(
        InvalidRequest,
        "Request specific response headers cannot be used for anonymous GET requests."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_overrides_need_a_signature() {
        assert!(anonymous_overrides(false, [false; 6]).is_ok());
        assert!(anonymous_overrides(true, [true; 6]).is_ok());
        for i in 0..6 {
            let mut o = [false; 6];
            o[i] = true;
            let e = anonymous_overrides(false, o).unwrap_err();
            assert_eq!(e.code(), &s3s::S3ErrorCode::InvalidRequest);
            assert_eq!(e.status_code(), Some(http::StatusCode::BAD_REQUEST));
        }
    }
}
