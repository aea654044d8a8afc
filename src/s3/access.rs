//! Who may do what: signed requests (SigV4, SigV2, presigned) with the configured keys may do
//! everything the bucket's policy does not explicitly deny; anonymous requests may do what
//! the bucket's policy allows (`[s3] public_buckets` and the admin UI's public toggle are
//! the public-read policy), and read objects whose own ACL is public-read. Unknown access keys get
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
use s3s::dto::{
    CopyObjectInput, DeleteObjectsInput, GetObjectInput, HeadObjectInput, PostObjectInput,
    UploadPartCopyInput,
};
use s3s::path::S3Path;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Result, s3_error};

use super::policy::{self, Decision, Request};

/// The access keys the S3 listener accepts: access key → secret, and the key's own policy
/// when it is scoped (none: the key may do everything bucket policies do not deny).
#[derive(Default)]
pub struct KeyRing {
    keys: RwLock<HashMap<String, KeyEntry>>,
}

struct KeyEntry {
    secret: String,
    policy: Option<Arc<policy::Policy>>,
}

impl KeyRing {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            keys: RwLock::new(
                pairs
                    .into_iter()
                    .map(|(k, secret)| {
                        (
                            k,
                            KeyEntry {
                                secret,
                                policy: None,
                            },
                        )
                    })
                    .collect(),
            ),
        }
    }

    /// Adds or replaces a key with full access.
    pub fn insert(&self, access_key: &str, secret_key: &str) {
        self.insert_scoped(access_key, secret_key, None);
    }

    /// Adds or replaces a key, scoped by `policy` when given.
    pub fn insert_scoped(
        &self,
        access_key: &str,
        secret_key: &str,
        policy: Option<Arc<policy::Policy>>,
    ) {
        if let Ok(mut keys) = self.keys.write() {
            keys.insert(
                access_key.to_owned(),
                KeyEntry {
                    secret: secret_key.to_owned(),
                    policy,
                },
            );
        }
    }

    /// Scopes (`Some`) or unscopes (`None`) a key; false when there is no such key.
    pub fn set_policy(&self, access_key: &str, policy: Option<Arc<policy::Policy>>) -> bool {
        self.keys
            .write()
            .ok()
            .and_then(|mut keys| keys.get_mut(access_key).map(|e| e.policy = policy))
            .is_some()
    }

    pub fn remove(&self, access_key: &str) {
        if let Ok(mut keys) = self.keys.write() {
            keys.remove(access_key);
        }
    }

    pub fn secret(&self, access_key: &str) -> Option<String> {
        self.keys
            .read()
            .ok()?
            .get(access_key)
            .map(|e| e.secret.clone())
    }

    /// The key's own policy, when it is scoped.
    pub fn policy(&self, access_key: &str) -> Option<Arc<policy::Policy>> {
        self.keys.read().ok()?.get(access_key)?.policy.clone()
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

/// The S3 listener's access check: the bucket's policy first (an explicit Deny refuses
/// anyone; an Allow lets an anonymous request in), then, for anonymous GET and HEAD, the
/// object's own public-read ACL.
pub struct PolicyAccess {
    settings: Arc<super::bucket_settings::BucketSettings>,
    keys: Arc<KeyRing>,
    /// Where an object's own public-read ACL is looked up (anonymous GET/HEAD that no
    /// policy allowed).
    store: Option<crate::store::DynStore>,
}

impl PolicyAccess {
    pub fn new(settings: Arc<super::bucket_settings::BucketSettings>, keys: Arc<KeyRing>) -> Self {
        Self {
            settings,
            keys,
            store: None,
        }
    }

    /// Also lets anonymous GET and HEAD read objects whose own ACL is public-read.
    pub fn with_object_acls(mut self, store: crate::store::DynStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Asks `bucket`'s policy, and a scoped key's own policy, about `action` on
    /// `resource` (AWS's rule within one account): a Deny in either is AccessDenied; an
    /// Allow in either lets the request through. Without an Allow, a scoped key is refused,
    /// a full key passes, and an anonymous request gets `Ok(false)`: the caller may look
    /// further (an object ACL).
    fn decide(
        &self,
        who: &Requester<'_>,
        bucket: Option<&str>,
        action: &str,
        resource: &str,
        list: ListParams<'_>,
    ) -> S3Result<bool> {
        let r = who.request(action, resource, list);
        let by_bucket = bucket.map_or(Decision::Neither, |b| self.settings.access(b).decide(&r));
        let by_key = who
            .key
            .and_then(|k| self.keys.policy(k))
            .map(|p| p.evaluate(&r));
        if by_bucket == Decision::Deny || by_key == Some(Decision::Deny) {
            return Err(denied_by_policy());
        }
        match by_key {
            Some(d) if d == Decision::Allow || by_bucket == Decision::Allow => Ok(true),
            Some(_) => Err(S3Error::with_message(
                S3ErrorCode::AccessDenied,
                format!(
                    "Access Denied: this access key's policy does not allow s3:{action} on arn:aws:s3:::{resource}"
                ),
            )),
            None => Ok(by_bucket == Decision::Allow || who.key.is_some()),
        }
    }

    fn scoped(&self, key: Option<&str>) -> bool {
        key.is_some_and(|k| self.keys.policy(k).is_some())
    }
}

/// Who sent a request, and from where, as bucket policy conditions see it.
struct Requester<'a> {
    key: Option<&'a str>,
    source_ip: Option<std::net::IpAddr>,
    secure: bool,
    referer: Option<&'a str>,
    user_agent: Option<&'a str>,
}

#[derive(Default, Clone, Copy)]
struct ListParams<'a> {
    prefix: Option<&'a str>,
    delimiter: Option<&'a str>,
    max_keys: Option<&'a str>,
}

impl<'a> Requester<'a> {
    fn new(key: Option<&'a str>, headers: &'a http::HeaderMap, ext: &http::Extensions) -> Self {
        Self::from_parts(key, headers, Connection::of(ext))
    }

    fn from_parts(key: Option<&'a str>, headers: &'a http::HeaderMap, c: Connection) -> Self {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Self {
            key,
            source_ip: c.source_ip,
            secure: c.over_tls || (c.tunneled && header("x-forwarded-proto") == Some("https")),
            referer: header("referer"),
            user_agent: header("user-agent"),
        }
    }
}

/// What the accept loop (or the tunnel) put into a request's extensions about its
/// connection, copied out so the headers can be borrowed without cloning them.
#[derive(Clone, Copy)]
struct Connection {
    source_ip: Option<std::net::IpAddr>,
    over_tls: bool,
    tunneled: bool,
}

impl Connection {
    fn of(ext: &http::Extensions) -> Self {
        Self {
            source_ip: ext.get::<crate::server::PeerAddr>().map(|p| p.0.ip()),
            over_tls: ext.get::<crate::server::OverTls>().is_some(),
            tunneled: ext.get::<crate::server::Tunneled>().is_some(),
        }
    }
}

impl<'a> Requester<'a> {
    fn request<'r>(&'r self, action: &'r str, resource: &'r str, l: ListParams<'r>) -> Request<'r> {
        Request {
            principal: self.key,
            action,
            resource,
            source_ip: self.source_ip,
            secure: self.secure,
            referer: self.referer,
            user_agent: self.user_agent,
            prefix: l.prefix,
            delimiter: l.delimiter,
            max_keys: l.max_keys,
        }
    }
}

fn denied_by_policy() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::AccessDenied,
        "Access Denied: the bucket policy denies this request",
    )
}

fn anonymous_denied() -> S3Error {
    s3_error!(
        AccessDenied,
        "Access Denied: sign the request with an access key (anonymous access is allowed only where the bucket policy or the object's ACL allows it)"
    )
}

/// The `prefix`, `delimiter` and `max-keys` of a ListObjects query and any `versionId`,
/// percent-decoded.
fn list_params(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| matches!(&**k, "prefix" | "delimiter" | "max-keys" | "versionId"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

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

/// Operations whose bucket policy applies to keys named in the request, not in the path:
/// each is checked in its own hook below.
const CHECKED_PER_KEY: [&str; 2] = ["DeleteObjects", "PostObject"];

#[async_trait::async_trait]
impl S3Access for PolicyAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let key = cx.credentials().map(|c| c.access_key.clone());
        if key.is_some() {
            // s3s checks SigV4's x-amz-date itself but gives SigV2 header auth no window at
            // all; this holds both to AWS's 15 minutes (presigned URLs keep their expiry).
            super::sigv2::check_request_time(cx.headers(), time::OffsetDateTime::now_utc())?;
        }
        let op = cx.s3_op().name().to_owned();
        let op = op.as_str();
        let scoped = self.scoped(key.as_deref());
        if let Some(k) = &key {
            cx.extensions_mut()
                .insert(super::owner::OwnerId::of_key(k, scoped));
        }
        let (bucket, object) = match cx.s3_path() {
            S3Path::Root if scoped => (String::new(), None),
            S3Path::Root => {
                return if key.is_some() {
                    Ok(())
                } else {
                    Err(anonymous_denied())
                };
            }
            S3Path::Bucket { bucket } => (bucket.to_string(), None),
            S3Path::Object { bucket, key } => (bucket.to_string(), Some(key.to_string())),
        };
        // Whoever holds a full key may always read and change the policy itself, so that no
        // policy can lock its owner out (AWS's root user may too).
        let manages_policy = matches!(
            op,
            "GetBucketPolicy" | "PutBucketPolicy" | "DeleteBucketPolicy"
        );
        let Some(action) = policy::action_of(op) else {
            return if key.is_some() && !scoped {
                Ok(())
            } else {
                Err(anonymous_denied())
            };
        };
        if (key.is_some() && !scoped && manages_policy) || CHECKED_PER_KEY.contains(&op) {
            return Ok(());
        }
        let query = list_params(cx.uri().query());
        let get = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        // A request naming a version needs the version's own action, as in AWS.
        let version = get("versionId");
        let action = match (action, version) {
            ("GetObject", Some(_)) => "GetObjectVersion",
            ("DeleteObject", Some(_)) if op == "DeleteObject" => "DeleteObjectVersion",
            ("GetObjectTagging", Some(_)) => "GetObjectVersionTagging",
            ("PutObjectTagging", Some(_)) => "PutObjectVersionTagging",
            ("DeleteObjectTagging", Some(_)) => "DeleteObjectVersionTagging",
            ("GetObjectAcl", Some(_)) => "GetObjectVersionAcl",
            ("PutObjectAcl", Some(_)) => "PutObjectVersionAcl",
            ("GetObjectAttributes", Some(_)) => "GetObjectVersionAttributes",
            _ => action,
        };
        let list = if matches!(action, "ListBucket" | "ListBucketVersions") {
            ListParams {
                prefix: get("prefix"),
                delimiter: get("delimiter"),
                max_keys: get("max-keys"),
            }
        } else {
            ListParams::default()
        };
        let resource = match &object {
            Some(k) => format!("{bucket}/{k}"),
            None if bucket.is_empty() => "*".to_owned(),
            None => bucket.clone(),
        };
        let connection = Connection::of(cx.extensions_mut());
        let who = Requester::from_parts(key.as_deref(), cx.headers(), connection);
        let in_bucket = (!bucket.is_empty()).then_some(bucket.as_str());
        if self.decide(&who, in_bucket, action, &resource, list)? {
            return Ok(());
        }
        if let (Some(store), Some(k)) = (&self.store, &object)
            && matches!(op, "GetObject" | "HeadObject")
            && self.settings.access(&bucket).object_acls_count()
            && match version {
                Some(v) => store.head_version(&bucket, k, v).await,
                None => store.head_object(&bucket, k).await,
            }
            .is_ok_and(|info| info.attrs.public_read)
        {
            return Ok(());
        }
        Err(anonymous_denied())
    }

    async fn get_object(&self, req: &mut S3Request<GetObjectInput>) -> S3Result<()> {
        let i = &req.input;
        anonymous_overrides(req.credentials.is_some(), overrides_given!(i))
    }

    async fn head_object(&self, req: &mut S3Request<HeadObjectInput>) -> S3Result<()> {
        let i = &req.input;
        anonymous_overrides(req.credentials.is_some(), overrides_given!(i))
    }

    /// DeleteObjects needs s3:DeleteObject on every key it names (s3:DeleteObjectVersion for
    /// an entry naming a version).
    async fn delete_objects(&self, req: &mut S3Request<DeleteObjectsInput>) -> S3Result<()> {
        let key = req.credentials.as_ref().map(|c| c.access_key.as_str());
        let who = Requester::new(key, &req.headers, &req.extensions);
        let bucket = &req.input.bucket;
        for o in &req.input.delete.objects {
            let resource = format!("{bucket}/{}", o.key);
            let action = match o.version_id {
                Some(_) => "DeleteObjectVersion",
                None => "DeleteObject",
            };
            if !self.decide(&who, Some(bucket), action, &resource, ListParams::default())? {
                return Err(anonymous_denied());
            }
        }
        Ok(())
    }

    /// POST Object (a browser form upload, s3s checks its policy document and signature)
    /// needs s3:PutObject on the form's key, which is in the body, not the path.
    async fn post_object(&self, req: &mut S3Request<PostObjectInput>) -> S3Result<()> {
        if req.input.key.contains("${filename}") {
            return Err(S3Error::with_message(
                S3ErrorCode::NotImplemented,
                "The ${filename} variable in a POST form's key is not supported: name the object's key in the form (the object would otherwise be stored under the literal name)",
            ));
        }
        let key = req.credentials.as_ref().map(|c| c.access_key.as_str());
        let who = Requester::new(key, &req.headers, &req.extensions);
        let resource = format!("{}/{}", req.input.bucket, req.input.key);
        let bucket = Some(req.input.bucket.as_str());
        if self.decide(&who, bucket, "PutObject", &resource, ListParams::default())? {
            Ok(())
        } else {
            Err(anonymous_denied())
        }
    }

    /// CopyObject also needs s3:GetObject on its source (s3:GetObjectVersion on a named
    /// version of it).
    async fn copy_object(&self, req: &mut S3Request<CopyObjectInput>) -> S3Result<()> {
        let source = super::put::copy_source(&req.input.copy_source)?;
        self.check_copy_source(
            req.credentials.as_ref(),
            &req.headers,
            &req.extensions,
            source,
        )
    }

    async fn upload_part_copy(&self, req: &mut S3Request<UploadPartCopyInput>) -> S3Result<()> {
        let source = super::put::copy_source(&req.input.copy_source)?;
        self.check_copy_source(
            req.credentials.as_ref(),
            &req.headers,
            &req.extensions,
            source,
        )
    }
}

impl PolicyAccess {
    fn check_copy_source(
        &self,
        creds: Option<&s3s::auth::Credentials>,
        headers: &http::HeaderMap,
        ext: &http::Extensions,
        (bucket, key, version): (String, String, Option<String>),
    ) -> S3Result<()> {
        let who = Requester::new(creds.map(|c| c.access_key.as_str()), headers, ext);
        let resource = format!("{bucket}/{key}");
        let action = match version {
            Some(_) => "GetObjectVersion",
            None => "GetObject",
        };
        if self.decide(
            &who,
            Some(&bucket),
            action,
            &resource,
            ListParams::default(),
        )? {
            Ok(())
        } else {
            Err(anonymous_denied())
        }
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
