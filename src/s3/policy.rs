//! Bucket policies: the IAM statement language as S3 bucket policies use it, parsed into a
//! typed [`Policy`] and evaluated against a [`Request`]. Pure: no I/O, no clock.
//!
//! What stays true:
//! - Everything a policy says is understood or the policy is refused ([`PolicyError`],
//!   answered `MalformedPolicy` naming the part): `NotAction`, an unknown condition key, a
//!   principal type other than `AWS` are refused, never ignored.
//! - Evaluation is AWS's: an explicit Deny wins, then an Allow, else neither (the caller's
//!   other grants decide).
//! - A condition on a key the request lacks is false, except for the negated operators
//!   (`StringNotEquals`, `StringNotLike`, `NotIpAddress`) and the `...IfExists` forms, which
//!   are true, as AWS documents.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

/// AWS's size limit for a bucket policy.
pub const MAX_POLICY_BYTES: usize = 20 * 1024;

const ARN_PREFIX: &str = "arn:aws:s3:::";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

fn bad(msg: impl Into<String>) -> PolicyError {
    PolicyError(msg.into())
}

/// What a statement grants or refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// The outcome of evaluating a policy for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// No statement applies: the request's other grants decide.
    Neither,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Principal {
    /// `"*"` or `{"AWS": "*"}`: anyone, signed or not.
    Anyone,
    /// Access keys (`{"AWS": ["KEY", "arn:aws:iam::acct:user/KEY"]}`).
    Keys(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    SourceIp,
    SecureTransport,
    Referer,
    UserAgent,
    Prefix,
    Delimiter,
    MaxKeys,
}

impl Key {
    fn parse(name: &str) -> Result<Self, PolicyError> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "aws:sourceip" => Key::SourceIp,
            "aws:securetransport" => Key::SecureTransport,
            "aws:referer" => Key::Referer,
            "aws:useragent" => Key::UserAgent,
            "s3:prefix" => Key::Prefix,
            "s3:delimiter" => Key::Delimiter,
            "s3:max-keys" => Key::MaxKeys,
            _ => {
                return Err(bad(format!(
                    "Policy has an unsupported condition key: {name} (Pixelport understands aws:SourceIp, aws:SecureTransport, aws:Referer, aws:UserAgent, s3:prefix, s3:delimiter and s3:max-keys)"
                )));
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Test {
    StringEquals(Vec<String>),
    StringEqualsIgnoreCase(Vec<String>),
    StringLike(Vec<String>),
    Ip(Vec<IpNet>),
    Bool(bool),
    /// `Null`: true when the key is absent (`true`) or present (`false`).
    Null(bool),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    key: Key,
    test: Test,
    negated: bool,
    if_exists: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    effect: Effect,
    principal: Principal,
    /// Lower-cased action patterns after `s3:` (`getobject`, `get*`, `*`).
    actions: Vec<String>,
    /// Resource patterns after `arn:aws:s3:::` (`bucket`, `bucket/*`).
    resources: Vec<String>,
    conditions: Vec<Condition>,
}

/// A parsed bucket policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    statements: Vec<Statement>,
}

/// One request as a policy sees it.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    /// The access key that signed it; `None`: anonymous.
    pub principal: Option<&'a str>,
    /// The action's name without `s3:` (`GetObject`).
    pub action: &'a str,
    /// `bucket` or `bucket/key`.
    pub resource: &'a str,
    pub source_ip: Option<IpAddr>,
    pub secure: bool,
    pub referer: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    /// ListObjects' `prefix`, `delimiter` and `max-keys` parameters.
    pub prefix: Option<&'a str>,
    pub delimiter: Option<&'a str>,
    pub max_keys: Option<&'a str>,
}

/// Whether an action applies to the bucket or to its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Bucket,
    Object,
}

/// The S3 actions a bucket policy may name, and what they apply to.
const ACTIONS: &[(&str, Scope)] = &[
    ("AbortMultipartUpload", Scope::Object),
    ("CreateBucket", Scope::Bucket),
    ("DeleteBucket", Scope::Bucket),
    ("DeleteBucketOwnershipControls", Scope::Bucket),
    ("DeleteBucketPolicy", Scope::Bucket),
    ("DeleteBucketPublicAccessBlock", Scope::Bucket),
    ("DeleteObject", Scope::Object),
    ("DeleteObjectTagging", Scope::Object),
    ("DeleteObjectVersion", Scope::Object),
    ("DeleteObjectVersionTagging", Scope::Object),
    ("GetBucketAcl", Scope::Bucket),
    ("GetBucketCORS", Scope::Bucket),
    ("GetAccelerateConfiguration", Scope::Bucket),
    ("GetBucketLocation", Scope::Bucket),
    ("GetBucketLogging", Scope::Bucket),
    ("GetBucketNotification", Scope::Bucket),
    ("GetBucketObjectLockConfiguration", Scope::Bucket),
    ("GetBucketRequestPayment", Scope::Bucket),
    ("GetBucketWebsite", Scope::Bucket),
    ("GetEncryptionConfiguration", Scope::Bucket),
    ("GetReplicationConfiguration", Scope::Bucket),
    ("GetBucketOwnershipControls", Scope::Bucket),
    ("GetBucketPolicy", Scope::Bucket),
    ("GetBucketPolicyStatus", Scope::Bucket),
    ("GetBucketPublicAccessBlock", Scope::Bucket),
    ("GetBucketTagging", Scope::Bucket),
    ("GetBucketVersioning", Scope::Bucket),
    ("GetLifecycleConfiguration", Scope::Bucket),
    ("GetObject", Scope::Object),
    ("GetObjectAcl", Scope::Object),
    ("GetObjectAttributes", Scope::Object),
    ("GetObjectTagging", Scope::Object),
    ("GetObjectVersion", Scope::Object),
    ("GetObjectVersionAcl", Scope::Object),
    ("GetObjectVersionAttributes", Scope::Object),
    ("GetObjectVersionTagging", Scope::Object),
    ("ListAllMyBuckets", Scope::Bucket),
    ("ListBucket", Scope::Bucket),
    ("ListBucketMultipartUploads", Scope::Bucket),
    ("ListBucketVersions", Scope::Bucket),
    ("ListMultipartUploadParts", Scope::Object),
    ("PutBucketAcl", Scope::Bucket),
    ("PutBucketCORS", Scope::Bucket),
    ("PutBucketOwnershipControls", Scope::Bucket),
    ("PutBucketPolicy", Scope::Bucket),
    ("PutBucketPublicAccessBlock", Scope::Bucket),
    ("PutBucketTagging", Scope::Bucket),
    ("PutBucketVersioning", Scope::Bucket),
    ("PutLifecycleConfiguration", Scope::Bucket),
    ("PutObject", Scope::Object),
    ("PutObjectAcl", Scope::Object),
    ("PutObjectTagging", Scope::Object),
    ("PutObjectVersionAcl", Scope::Object),
    ("PutObjectVersionTagging", Scope::Object),
];

/// The action an S3 operation needs, by the operation's name (ListBuckets'
/// `ListAllMyBuckets` is for a key's policy, on the resource `*`); `None`: an operation no
/// policy names.
pub fn action_of(op: &str) -> Option<&'static str> {
    Some(match op {
        "ListBuckets" => "ListAllMyBuckets",
        "CreateBucket" => "CreateBucket",
        "GetObject" | "HeadObject" => "GetObject",
        "GetObjectAttributes" => "GetObjectAttributes",
        "PutObject"
        | "PostObject"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload" => "PutObject",
        "AbortMultipartUpload" => "AbortMultipartUpload",
        "ListParts" => "ListMultipartUploadParts",
        "ListMultipartUploads" => "ListBucketMultipartUploads",
        "DeleteObject" | "DeleteObjects" => "DeleteObject",
        "HeadBucket" | "ListObjects" | "ListObjectsV2" => "ListBucket",
        "ListObjectVersions" => "ListBucketVersions",
        "GetBucketLocation" => "GetBucketLocation",
        "DeleteBucket" => "DeleteBucket",
        "GetBucketCors" => "GetBucketCORS",
        "PutBucketCors" | "DeleteBucketCors" => "PutBucketCORS",
        "GetBucketTagging" => "GetBucketTagging",
        "PutBucketTagging" | "DeleteBucketTagging" => "PutBucketTagging",
        "GetObjectTagging" => "GetObjectTagging",
        "PutObjectTagging" => "PutObjectTagging",
        "DeleteObjectTagging" => "DeleteObjectTagging",
        "GetBucketAcl" => "GetBucketAcl",
        "PutBucketAcl" => "PutBucketAcl",
        "GetObjectAcl" => "GetObjectAcl",
        "PutObjectAcl" => "PutObjectAcl",
        "GetBucketPolicy" => "GetBucketPolicy",
        "PutBucketPolicy" => "PutBucketPolicy",
        "DeleteBucketPolicy" => "DeleteBucketPolicy",
        "GetBucketPolicyStatus" => "GetBucketPolicyStatus",
        "GetPublicAccessBlock" => "GetBucketPublicAccessBlock",
        "PutPublicAccessBlock" | "DeletePublicAccessBlock" => "PutBucketPublicAccessBlock",
        "GetBucketOwnershipControls" => "GetBucketOwnershipControls",
        "PutBucketOwnershipControls" | "DeleteBucketOwnershipControls" => {
            "PutBucketOwnershipControls"
        }
        "GetBucketVersioning" => "GetBucketVersioning",
        "GetBucketLifecycleConfiguration" => "GetLifecycleConfiguration",
        "GetBucketEncryption" => "GetEncryptionConfiguration",
        "GetBucketWebsite" => "GetBucketWebsite",
        "GetBucketReplication" => "GetReplicationConfiguration",
        "GetObjectLockConfiguration" => "GetBucketObjectLockConfiguration",
        "GetBucketNotificationConfiguration" => "GetBucketNotification",
        "GetBucketLogging" => "GetBucketLogging",
        "GetBucketRequestPayment" => "GetBucketRequestPayment",
        "GetBucketAccelerateConfiguration" => "GetAccelerateConfiguration",
        "PutBucketLifecycleConfiguration" | "DeleteBucketLifecycle" => "PutLifecycleConfiguration",
        "PutBucketVersioning" => "PutBucketVersioning",
        _ => return None,
    })
}

/// Whether `value` matches `pattern`, where `*` matches any run of characters and `?` any
/// one character (IAM's wildcards).
pub fn glob(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    let (mut pi, mut vi) = (0, 0);
    let mut back: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            back = Some((pi, vi));
            pi += 1;
        } else if let Some((bp, bv)) = back {
            pi = bp + 1;
            vi = bv + 1;
            back = Some((bp, bv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A field that may be one string or an array of strings.
fn strings(v: &Value, field: &str) -> Result<Vec<String>, PolicyError> {
    let list = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                Value::Bool(b) => Ok(b.to_string()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(bad(format!("{field} must hold strings"))),
            })
            .collect::<Result<_, _>>()?,
        Value::Bool(b) => vec![b.to_string()],
        Value::Number(n) => vec![n.to_string()],
        _ => {
            return Err(bad(format!(
                "{field} must be a string or a list of strings"
            )));
        }
    };
    Ok(list)
}

/// What a policy is attached to.
#[derive(Debug, Clone, Copy)]
enum Attached<'a> {
    /// A bucket policy: every statement names a principal, every resource is in the bucket.
    Bucket(&'a str),
    /// An access key's policy: statements name no principal (they apply to the key) and
    /// may name any bucket's resources.
    Key,
}

/// Parses and checks a bucket policy for `bucket`.
pub fn parse(bucket: &str, text: &str) -> Result<Policy, PolicyError> {
    parse_attached(Attached::Bucket(bucket), text)
}

/// Parses and checks an access key's policy (MinIO's user policies, in the same language).
pub fn parse_key_policy(text: &str) -> Result<Policy, PolicyError> {
    parse_attached(Attached::Key, text)
}

fn parse_attached(to: Attached<'_>, text: &str) -> Result<Policy, PolicyError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(bad(format!(
            "Policy exceeds the maximum allowed document size ({MAX_POLICY_BYTES} bytes)."
        )));
    }
    let doc: Value = serde_json::from_str(text).map_err(|e| {
        bad(format!(
            "Policies must be valid JSON and the first byte must be '{{': {e}"
        ))
    })?;
    let Value::Object(top) = doc else {
        return Err(bad(
            "Policies must be valid JSON and the first byte must be '{'",
        ));
    };
    for k in top.keys() {
        if !matches!(k.as_str(), "Version" | "Id" | "Statement") {
            return Err(bad(format!("Unknown field {k}")));
        }
    }
    if let Some(v) = top.get("Version")
        && !matches!(v.as_str(), Some("2012-10-17" | "2008-10-17"))
    {
        return Err(bad(format!(
            "Policy has an invalid Version: {v} (use \"2012-10-17\")"
        )));
    }
    let statements = match top.get("Statement") {
        Some(Value::Array(list)) if !list.is_empty() => list.iter().collect::<Vec<_>>(),
        Some(s @ Value::Object(_)) => vec![s],
        Some(_) => return Err(bad("Statement must be an object or a non-empty list")),
        None => return Err(bad("Missing required field Statement")),
    };
    let statements = statements
        .into_iter()
        .map(|s| statement(to, s))
        .collect::<Result<_, _>>()?;
    Ok(Policy { statements })
}

fn statement(to: Attached<'_>, v: &Value) -> Result<Statement, PolicyError> {
    let Value::Object(s) = v else {
        return Err(bad("Each Statement must be an object"));
    };
    for k in s.keys() {
        match k.as_str() {
            "Sid" | "Effect" | "Principal" | "Action" | "Resource" | "Condition" => {}
            "NotPrincipal" | "NotAction" | "NotResource" => {
                return Err(bad(format!(
                    "{k} is not supported by Pixelport: name what the statement covers with {} instead",
                    &k[3..]
                )));
            }
            _ => return Err(bad(format!("Unknown field {k}"))),
        }
    }
    let effect = match s.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        Some(e) => return Err(bad(format!("Invalid effect: {e}"))),
        None => return Err(bad("Missing required field Effect")),
    };
    let principal = match (to, s.get("Principal")) {
        (Attached::Bucket(_), Some(p)) => principal(p)?,
        (Attached::Bucket(_), None) => return Err(bad("Missing required field Principal")),
        (Attached::Key, None) => Principal::Anyone,
        (Attached::Key, Some(_)) => {
            return Err(bad(
                "A key's policy names no Principal: its statements apply to the key",
            ));
        }
    };
    let actions = strings(
        s.get("Action")
            .ok_or_else(|| bad("Missing required field Action"))?,
        "Action",
    )?
    .into_iter()
    .map(|a| action_pattern(&a))
    .collect::<Result<Vec<_>, _>>()?;
    let resources = strings(
        s.get("Resource")
            .ok_or_else(|| bad("Missing required field Resource"))?,
        "Resource",
    )?
    .into_iter()
    .map(|r| resource_pattern(to, &r))
    .collect::<Result<Vec<_>, _>>()?;
    for a in &actions {
        let applies = ACTIONS
            .iter()
            .filter(|(name, _)| glob(a, &name.to_ascii_lowercase()))
            .any(|(_, scope)| {
                resources.iter().any(|r| match scope {
                    Scope::Object => r.contains('/') || r.contains('*'),
                    Scope::Bucket => !r.contains('/'),
                })
            });
        if !applies {
            return Err(bad(format!(
                "Action does not apply to any resource(s) in statement: s3:{a}"
            )));
        }
    }
    let conditions = match s.get("Condition") {
        None => Vec::new(),
        Some(c) => conditions(c)?,
    };
    Ok(Statement {
        effect,
        principal,
        actions,
        resources,
        conditions,
    })
}

fn principal(v: &Value) -> Result<Principal, PolicyError> {
    let ids = match v {
        Value::String(s) if s == "*" => return Ok(Principal::Anyone),
        Value::Object(m) => {
            if let Some(k) = m.keys().find(|k| k.as_str() != "AWS") {
                return Err(bad(format!(
                    "Principal type {k} is not supported by Pixelport (use \"*\" or {{\"AWS\": [access keys]}})"
                )));
            }
            strings(
                m.get("AWS")
                    .ok_or_else(|| bad("Invalid principal in policy: empty"))?,
                "Principal",
            )?
        }
        _ => return Err(bad(format!("Invalid principal in policy: {v}"))),
    };
    if ids.iter().any(|i| i == "*") {
        return Ok(Principal::Anyone);
    }
    let keys = ids
        .iter()
        .map(|id| {
            let key = match id.strip_prefix("arn:aws:iam::") {
                Some(rest) => rest
                    .split_once(":user/")
                    .map(|(_, user)| user)
                    .ok_or_else(|| bad(format!("Invalid principal in policy: {id} (name an access key, or arn:aws:iam::ACCOUNT:user/ACCESS_KEY)")))?,
                None => id.as_str(),
            };
            if key.is_empty() || key.contains(['*', '?', ':', '/']) {
                return Err(bad(format!("Invalid principal in policy: {id}")));
            }
            Ok(key.to_owned())
        })
        .collect::<Result<_, _>>()?;
    Ok(Principal::Keys(keys))
}

fn action_pattern(a: &str) -> Result<String, PolicyError> {
    let lower = a.to_ascii_lowercase();
    let rest = if lower == "*" {
        "*"
    } else {
        lower
            .strip_prefix("s3:")
            .ok_or_else(|| bad(format!("Policy has invalid action: {a}")))?
    };
    if !ACTIONS
        .iter()
        .any(|(name, _)| glob(rest, &name.to_ascii_lowercase()))
    {
        return Err(bad(format!("Policy has invalid action: {a}")));
    }
    Ok(rest.to_owned())
}

fn resource_pattern(to: Attached<'_>, r: &str) -> Result<String, PolicyError> {
    let rest = match (to, r) {
        (Attached::Key, "*") => return Ok("*".into()),
        _ => r
            .strip_prefix(ARN_PREFIX)
            .ok_or_else(|| bad(format!("Policy has invalid resource: {r}")))?,
    };
    let Attached::Bucket(bucket) = to else {
        if rest.is_empty() {
            return Err(bad(format!("Policy has invalid resource: {r}")));
        }
        return Ok(rest.to_owned());
    };
    let in_bucket = rest == bucket
        || rest
            .strip_prefix(bucket)
            .is_some_and(|tail| tail.starts_with('/'));
    if !in_bucket {
        return Err(bad(format!(
            "Policy has invalid resource: {r} (a bucket policy names arn:aws:s3:::{bucket} or arn:aws:s3:::{bucket}/...)"
        )));
    }
    Ok(rest.to_owned())
}

fn conditions(v: &Value) -> Result<Vec<Condition>, PolicyError> {
    let Value::Object(ops) = v else {
        return Err(bad("Condition must be an object"));
    };
    let mut out = Vec::new();
    for (op, block) in ops {
        let Value::Object(keys) = block else {
            return Err(bad(format!("Condition {op} must be an object")));
        };
        if op.contains(':') {
            return Err(bad(format!(
                "Condition operator {op} is not supported by Pixelport (no ForAnyValue/ForAllValues: these keys hold one value)"
            )));
        }
        let (base, if_exists) = match op.strip_suffix("IfExists") {
            Some(b) => (b, true),
            None => (op.as_str(), false),
        };
        for (key_name, values) in keys {
            let key = Key::parse(key_name)?;
            let values = strings(values, &format!("Condition {op} {key_name}"))?;
            let (test, negated) = test(base, op, key, key_name, &values)?;
            out.push(Condition {
                key,
                test,
                negated,
                if_exists,
            });
        }
    }
    Ok(out)
}

fn test(
    base: &str,
    op: &str,
    key: Key,
    key_name: &str,
    values: &[String],
) -> Result<(Test, bool), PolicyError> {
    let is_string_key = !matches!(key, Key::SourceIp | Key::SecureTransport);
    let mismatch = || {
        bad(format!(
            "Condition operator {op} does not apply to the key {key_name}"
        ))
    };
    let bool_value = |v: &str| match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(format!(
            "Condition {op} {key_name} takes true or false, not {v}"
        ))),
    };
    Ok(match base {
        "StringEquals" | "StringNotEquals" if is_string_key => (
            Test::StringEquals(values.to_vec()),
            base == "StringNotEquals",
        ),
        "StringEqualsIgnoreCase" | "StringNotEqualsIgnoreCase" if is_string_key => (
            Test::StringEqualsIgnoreCase(values.to_vec()),
            base == "StringNotEqualsIgnoreCase",
        ),
        "StringLike" | "StringNotLike" if is_string_key => {
            (Test::StringLike(values.to_vec()), base == "StringNotLike")
        }
        "IpAddress" | "NotIpAddress" if key == Key::SourceIp => {
            let nets = values
                .iter()
                .map(|v| {
                    v.parse::<IpNet>()
                        .or_else(|_| v.parse::<IpAddr>().map(IpNet::from))
                        .map_err(|_| bad(format!("Invalid IP address in {op}: {v}")))
                })
                .collect::<Result<_, _>>()?;
            (Test::Ip(nets), base == "NotIpAddress")
        }
        "Bool" if key == Key::SecureTransport => match values {
            [v] => (Test::Bool(bool_value(v)?), false),
            _ => return Err(bad(format!("Condition {op} {key_name} takes one value"))),
        },
        "Null" if !op.ends_with("IfExists") => match values {
            [v] => (Test::Null(bool_value(v)?), false),
            _ => return Err(bad(format!("Condition {op} {key_name} takes one value"))),
        },
        "StringEquals"
        | "StringNotEquals"
        | "StringEqualsIgnoreCase"
        | "StringNotEqualsIgnoreCase"
        | "StringLike"
        | "StringNotLike"
        | "IpAddress"
        | "NotIpAddress"
        | "Bool" => return Err(mismatch()),
        _ => {
            return Err(bad(format!(
                "Condition operator {op} is not supported by Pixelport"
            )));
        }
    })
}

impl Condition {
    fn holds(&self, r: &Request<'_>) -> bool {
        let text = match self.key {
            Key::SourceIp => r.source_ip.map(|ip| ip.to_string()),
            Key::SecureTransport => Some(r.secure.to_string()),
            Key::Referer => r.referer.map(str::to_owned),
            Key::UserAgent => r.user_agent.map(str::to_owned),
            Key::Prefix => r.prefix.map(str::to_owned),
            Key::Delimiter => r.delimiter.map(str::to_owned),
            Key::MaxKeys => r.max_keys.map(str::to_owned),
        };
        if let Test::Null(absent) = self.test {
            return text.is_none() == absent;
        }
        let Some(value) = text else {
            return self.negated || self.if_exists;
        };
        let matched = match &self.test {
            Test::StringEquals(vs) => vs.contains(&value),
            Test::StringEqualsIgnoreCase(vs) => vs.iter().any(|v| v.eq_ignore_ascii_case(&value)),
            Test::StringLike(vs) => vs.iter().any(|v| glob(v, &value)),
            Test::Ip(nets) => r
                .source_ip
                .is_some_and(|ip| nets.iter().any(|n| n.contains(&ip))),
            Test::Bool(b) => r.secure == *b,
            Test::Null(_) => false,
        };
        matched != self.negated
    }

    /// Whether the condition pins the request to fixed sources, so that the statement is
    /// not public (AWS: an `aws:SourceIp` range no wider than /8 for IPv4, /32 for IPv6).
    fn restricts_sources(&self) -> bool {
        match (&self.test, self.negated) {
            (Test::Ip(nets), false) => nets.iter().all(|n| match n {
                IpNet::V4(n) => n.prefix_len() >= 8,
                IpNet::V6(n) => n.prefix_len() >= 32,
            }),
            _ => false,
        }
    }
}

impl Statement {
    fn applies(&self, r: &Request<'_>) -> bool {
        let principal = match &self.principal {
            Principal::Anyone => true,
            Principal::Keys(keys) => r.principal.is_some_and(|p| keys.iter().any(|k| k == p)),
        };
        let action = r.action.to_ascii_lowercase();
        principal
            && self.actions.iter().any(|a| glob(a, &action))
            && self.resources.iter().any(|p| glob(p, r.resource))
            && self.conditions.iter().all(|c| c.holds(r))
    }

    fn is_public(&self) -> bool {
        self.effect == Effect::Allow
            && self.principal == Principal::Anyone
            && !self.conditions.iter().any(Condition::restricts_sources)
    }
}

impl Policy {
    pub fn evaluate(&self, r: &Request<'_>) -> Decision {
        let mut allowed = false;
        for s in self.statements.iter().filter(|s| s.applies(r)) {
            match s.effect {
                Effect::Deny => return Decision::Deny,
                Effect::Allow => allowed = true,
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::Neither
        }
    }

    /// AWS's "public" (GetBucketPolicyStatus, BlockPublicPolicy, RestrictPublicBuckets): an
    /// Allow to anyone that no fixed source range pins down.
    pub fn is_public(&self) -> bool {
        self.statements.iter().any(Statement::is_public)
    }

    /// Whether anyone, unsigned and from anywhere, may read every object of `bucket` (what
    /// the admin UI shows as "public").
    pub fn anyone_reads(&self, bucket: &str) -> bool {
        let key = format!("{bucket}/\u{0}any");
        let r = Request {
            action: "GetObject",
            resource: &key,
            ..Request::default()
        };
        self.evaluate(&r) == Decision::Allow
    }

    /// The indices of the statements that allow anyone anything (what "make private"
    /// removes).
    pub fn public_statements(&self) -> Vec<usize> {
        self.statements
            .iter()
            .enumerate()
            .filter(|(_, s)| s.effect == Effect::Allow && s.principal == Principal::Anyone)
            .map(|(i, _)| i)
            .collect()
    }
}

/// The policy MinIO's `mc anonymous set download` writes: anyone may find the bucket, list
/// it, and read every object. The admin UI's public toggle and a public-read bucket ACL
/// write these statements.
pub fn public_read_statements(bucket: &str) -> Vec<Value> {
    vec![
        serde_json::json!({
            "Sid": "PixelportPublicList",
            "Effect": "Allow",
            "Principal": {"AWS": ["*"]},
            "Action": ["s3:GetBucketLocation", "s3:ListBucket"],
            "Resource": [format!("{ARN_PREFIX}{bucket}")],
        }),
        serde_json::json!({
            "Sid": "PixelportPublicRead",
            "Effect": "Allow",
            "Principal": {"AWS": ["*"]},
            "Action": ["s3:GetObject"],
            "Resource": [format!("{ARN_PREFIX}{bucket}/*")],
        }),
    ]
}

/// The common shapes of a key's policy, one click each in the admin UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyShape {
    /// List and read one bucket (under a prefix, if given).
    ReadOnly,
    /// Upload to one bucket under a prefix, nothing else: an upload key for a site.
    WriteOnly,
    /// Everything on one bucket.
    Full,
}

impl KeyShape {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "read-only" => Self::ReadOnly,
            "write-only" => Self::WriteOnly,
            "full" => Self::Full,
            _ => return None,
        })
    }
}

/// The key policy a shape means for `bucket` and `prefix` (empty: the whole bucket).
pub fn key_shape(shape: KeyShape, bucket: &str, prefix: &str) -> Value {
    let bucket_arn = format!("{ARN_PREFIX}{bucket}");
    let objects = format!("{ARN_PREFIX}{bucket}/{prefix}*");
    let statements = match shape {
        KeyShape::ReadOnly => {
            let mut list = serde_json::json!({
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketLocation"],
                "Resource": [bucket_arn],
            });
            if !prefix.is_empty() {
                list["Condition"] =
                    serde_json::json!({"StringLike": {"s3:prefix": [format!("{prefix}*")]}});
            }
            vec![
                list,
                serde_json::json!({
                    "Effect": "Allow",
                    "Action": [
                        "s3:GetObject",
                        "s3:GetObjectVersion",
                        "s3:GetObjectTagging",
                        "s3:GetObjectVersionTagging",
                        "s3:GetObjectAttributes",
                        "s3:GetObjectVersionAttributes"
                    ],
                    "Resource": [objects],
                }),
            ]
        }
        KeyShape::WriteOnly => vec![
            serde_json::json!({
                "Effect": "Allow",
                "Action": ["s3:GetBucketLocation"],
                "Resource": [bucket_arn],
            }),
            serde_json::json!({
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
                "Resource": [objects],
            }),
        ],
        KeyShape::Full => vec![serde_json::json!({
            "Effect": "Allow",
            "Action": ["s3:*"],
            "Resource": [bucket_arn, objects],
        })],
    };
    serde_json::json!({"Version": "2012-10-17", "Statement": statements})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `mc anonymous set download|upload|public` writes (minio-go's policy package).
    fn mc(bucket: &str, kind: &str) -> String {
        let (bucket_actions, object_actions): (&[&str], &[&str]) = match kind {
            "download" => (
                &["s3:GetBucketLocation", "s3:ListBucket"],
                &["s3:GetObject"],
            ),
            "upload" => (
                &["s3:GetBucketLocation", "s3:ListBucketMultipartUploads"],
                &[
                    "s3:AbortMultipartUpload",
                    "s3:DeleteObject",
                    "s3:ListMultipartUploadParts",
                    "s3:PutObject",
                ],
            ),
            _ => (
                &[
                    "s3:GetBucketLocation",
                    "s3:ListBucket",
                    "s3:ListBucketMultipartUploads",
                ],
                &[
                    "s3:AbortMultipartUpload",
                    "s3:DeleteObject",
                    "s3:GetObject",
                    "s3:ListMultipartUploadParts",
                    "s3:PutObject",
                ],
            ),
        };
        serde_json::json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": bucket_actions,
             "Resource": [format!("arn:aws:s3:::{bucket}")]},
            {"Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": object_actions,
             "Resource": [format!("arn:aws:s3:::{bucket}/*")]},
        ]})
        .to_string()
    }

    fn anon<'a>(action: &'a str, resource: &'a str) -> Request<'a> {
        Request {
            action,
            resource,
            ..Request::default()
        }
    }

    #[test]
    fn globs_follow_iam() {
        assert!(glob("pics/*", "pics/a/b.jpg"));
        assert!(glob("pics/*.jpg", "pics/a/b.jpg"));
        assert!(!glob("pics/*.jpg", "pics/a/b.png"));
        assert!(glob("pics/?.jpg", "pics/a.jpg"));
        assert!(!glob("pics/?.jpg", "pics/ab.jpg"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXbYbZc"));
        assert!(!glob("a*b*c", "aXbYbZ"));
        assert!(glob("get*", "getobject"));
    }

    #[test]
    fn mc_download_lets_anyone_read_and_list_but_not_write() {
        let p = parse("pics", &mc("pics", "download")).unwrap();
        assert_eq!(
            p.evaluate(&anon("GetObject", "pics/a.jpg")),
            Decision::Allow
        );
        assert_eq!(p.evaluate(&anon("ListBucket", "pics")), Decision::Allow);
        assert_eq!(
            p.evaluate(&anon("GetBucketLocation", "pics")),
            Decision::Allow
        );
        assert_eq!(
            p.evaluate(&anon("PutObject", "pics/a.jpg")),
            Decision::Neither
        );
        assert_eq!(
            p.evaluate(&anon("DeleteObject", "pics/a.jpg")),
            Decision::Neither
        );
        assert!(p.is_public());
        assert!(p.anyone_reads("pics"));
    }

    #[test]
    fn mc_upload_lets_anyone_write_but_not_read() {
        let p = parse("drop", &mc("drop", "upload")).unwrap();
        assert_eq!(p.evaluate(&anon("PutObject", "drop/x")), Decision::Allow);
        assert_eq!(
            p.evaluate(&anon("AbortMultipartUpload", "drop/x")),
            Decision::Allow
        );
        assert_eq!(p.evaluate(&anon("GetObject", "drop/x")), Decision::Neither);
        assert_eq!(p.evaluate(&anon("ListBucket", "drop")), Decision::Neither);
        assert!(p.is_public());
        assert!(!p.anyone_reads("drop"));
        let p = parse("b", &mc("b", "public")).unwrap();
        assert_eq!(p.evaluate(&anon("GetObject", "b/x")), Decision::Allow);
        assert_eq!(p.evaluate(&anon("PutObject", "b/x")), Decision::Allow);
    }

    #[test]
    fn an_explicit_deny_wins() {
        let text = r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"},
            {"Effect":"Deny","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/secret/*"}]}"#;
        let p = parse("b", text).unwrap();
        assert_eq!(p.evaluate(&anon("GetObject", "b/pub.jpg")), Decision::Allow);
        assert_eq!(p.evaluate(&anon("GetObject", "b/secret/x")), Decision::Deny);
        let signed = Request {
            principal: Some("AKIAROOT"),
            ..anon("GetObject", "b/secret/x")
        };
        assert_eq!(p.evaluate(&signed), Decision::Deny);
    }

    #[test]
    fn principals_name_access_keys() {
        let text = r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":["reader","arn:aws:iam::123456789012:user/other"]},"Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}}"#;
        let p = parse("b", text).unwrap();
        let by = |k: &'static str| Request {
            principal: Some(k),
            ..anon("GetObject", "b/x")
        };
        assert_eq!(p.evaluate(&by("reader")), Decision::Allow);
        assert_eq!(p.evaluate(&by("other")), Decision::Allow);
        assert_eq!(p.evaluate(&by("third")), Decision::Neither);
        assert_eq!(p.evaluate(&anon("GetObject", "b/x")), Decision::Neither);
        assert!(!p.is_public());
    }

    #[test]
    fn source_ip_and_prefix_conditions() {
        let text = r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*",
            "Condition":{"IpAddress":{"aws:SourceIp":["10.0.0.0/8","2001:db8::/32"]}}},
            {"Effect":"Allow","Principal":"*","Action":"s3:ListBucket","Resource":"arn:aws:s3:::b",
            "Condition":{"StringLike":{"s3:prefix":["public/*",""]}}}]}"#;
        let p = parse("b", text).unwrap();
        let from = |ip: &str| Request {
            source_ip: Some(ip.parse().unwrap()),
            ..anon("GetObject", "b/x")
        };
        assert_eq!(p.evaluate(&from("10.1.2.3")), Decision::Allow);
        assert_eq!(p.evaluate(&from("2001:db8::1")), Decision::Allow);
        assert_eq!(p.evaluate(&from("192.0.2.1")), Decision::Neither);
        assert_eq!(p.evaluate(&anon("GetObject", "b/x")), Decision::Neither);
        let list = |prefix: Option<&'static str>| Request {
            prefix,
            ..anon("ListBucket", "b")
        };
        assert_eq!(p.evaluate(&list(Some("public/2024/"))), Decision::Allow);
        assert_eq!(p.evaluate(&list(Some(""))), Decision::Allow);
        assert_eq!(p.evaluate(&list(Some("private/"))), Decision::Neither);
        assert_eq!(p.evaluate(&list(None)), Decision::Neither);
        // Both statements are pinned or partial: only the list one counts as public.
        assert!(p.is_public());
    }

    #[test]
    fn negated_operators_hold_when_the_key_is_missing() {
        let text = r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":["arn:aws:s3:::b","arn:aws:s3:::b/*"],
            "Condition":{"Bool":{"aws:SecureTransport":"false"}}},
            {"Effect":"Deny","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*",
            "Condition":{"StringNotLike":{"aws:Referer":["https://example.com/*"]}}}]}"#;
        let p = parse("b", text).unwrap();
        let r = |secure: bool, referer: Option<&'static str>| Request {
            secure,
            referer,
            ..anon("GetObject", "b/x")
        };
        assert_eq!(
            p.evaluate(&r(false, Some("https://example.com/a"))),
            Decision::Deny
        );
        assert_eq!(
            p.evaluate(&r(true, Some("https://example.com/a"))),
            Decision::Neither
        );
        assert_eq!(
            p.evaluate(&r(true, Some("https://evil.test/"))),
            Decision::Deny
        );
        assert_eq!(p.evaluate(&r(true, None)), Decision::Deny);
    }

    #[test]
    fn source_pinned_allows_are_not_public() {
        let text = r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*",
            "Condition":{"IpAddress":{"aws:SourceIp":"203.0.113.0/24"}}}}"#;
        assert!(!parse("b", text).unwrap().is_public());
        let wide = text.replace("203.0.113.0/24", "0.0.0.0/0");
        assert!(parse("b", &wide).unwrap().is_public());
    }

    #[test]
    fn what_is_not_understood_is_refused_by_name() {
        let cases = [
            ("", "valid JSON"),
            ("[]", "first byte"),
            (r#"{"Statement":[]}"#, "non-empty"),
            (r#"{"Version":"2013-01-01","Statement":{}}"#, "Version"),
            (r#"{"Foo":1,"Statement":{}}"#, "Unknown field Foo"),
            (
                r#"{"Statement":{"Effect":"Allow","Principal":"*","NotAction":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}}"#,
                "NotAction is not supported",
            ),
            (
                r#"{"Statement":{"Effect":"Maybe","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}}"#,
                "Invalid effect: Maybe",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}}"#,
                "Missing required field Principal",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Principal":{"Service":"x"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}}"#,
                "Principal type Service",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObjekt","Resource":"arn:aws:s3:::b/*"}}"#,
                "invalid action: s3:GetObjekt",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"iam:PassRole","Resource":"arn:aws:s3:::b/*"}}"#,
                "invalid action",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::other/*"}}"#,
                "invalid resource: arn:aws:s3:::other/*",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b"}}"#,
                "Action does not apply",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:ListBucket","Resource":"arn:aws:s3:::b/*"}}"#,
                "Action does not apply",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"StringEquals":{"aws:PrincipalOrgID":"o-1"}}}}"#,
                "unsupported condition key: aws:PrincipalOrgID",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"DateGreaterThan":{"aws:Referer":"x"}}}}"#,
                "DateGreaterThan is not supported",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"IpAddress":{"aws:SourceIp":"not-an-ip"}}}}"#,
                "Invalid IP address",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"IpAddress":{"s3:prefix":"x"}}}}"#,
                "does not apply to the key s3:prefix",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"ForAnyValue:StringLike":{"s3:prefix":"x"}}}}"#,
                "ForAnyValue",
            ),
        ];
        for (text, want) in cases {
            let e = parse("b", text).unwrap_err();
            assert!(e.0.contains(want), "{text}: {e} lacks {want}");
        }
        let huge = format!(
            r#"{{"Id":"{}","Statement":{{}}}}"#,
            "x".repeat(MAX_POLICY_BYTES)
        );
        assert!(parse("b", &huge).unwrap_err().0.contains("maximum"));
    }

    #[test]
    fn aws_documented_examples_parse() {
        // "Granting read-only permission to a public anonymous user" and "Restricting
        // access to a specific HTTP referer", from the S3 user guide.
        let ro = r#"{"Version":"2012-10-17","Statement":[{"Sid":"PublicRead","Effect":"Allow","Principal":"*","Action":["s3:GetObject","s3:GetObjectVersion"],"Resource":["arn:aws:s3:::DOC-EXAMPLE-BUCKET/*"]}]}"#;
        let p = parse("DOC-EXAMPLE-BUCKET", ro).unwrap();
        assert!(p.anyone_reads("DOC-EXAMPLE-BUCKET"));
        let referer = r#"{"Version":"2012-10-17","Id":"HTTP referer policy example","Statement":[{"Sid":"Allow only GET requests originating from www.example.com and example.com.","Effect":"Allow","Principal":"*","Action":["s3:GetObject","s3:GetObjectVersion"],"Resource":"arn:aws:s3:::amzn-s3-demo-bucket/*","Condition":{"StringLike":{"aws:Referer":["http://www.example.com/*","http://example.com/*"]}}}]}"#;
        let p = parse("amzn-s3-demo-bucket", referer).unwrap();
        let r = Request {
            referer: Some("http://example.com/page"),
            ..anon("GetObject", "amzn-s3-demo-bucket/a.jpg")
        };
        assert_eq!(p.evaluate(&r), Decision::Allow);
        assert!(!p.anyone_reads("amzn-s3-demo-bucket"));
    }

    #[test]
    fn key_policies_name_no_principal_and_any_bucket() {
        let p = parse_key_policy(
            r#"{"Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::photos*"},
            {"Effect":"Allow","Action":"s3:ListAllMyBuckets","Resource":"*"}]}"#,
        )
        .unwrap();
        let by = |action: &'static str, resource: &'static str| Request {
            principal: Some("k"),
            ..anon(action, resource)
        };
        assert_eq!(p.evaluate(&by("GetObject", "photos/a")), Decision::Allow);
        assert_eq!(p.evaluate(&by("GetObject", "photos-2/a")), Decision::Allow);
        assert_eq!(p.evaluate(&by("GetObject", "docs/a")), Decision::Neither);
        assert_eq!(p.evaluate(&by("ListAllMyBuckets", "*")), Decision::Allow);
        let e = parse_key_policy(
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"*"}}"#,
        )
        .unwrap_err();
        assert!(e.0.contains("names no Principal"));
    }

    #[test]
    fn key_shapes_allow_their_scope_and_nothing_else() {
        let shape =
            |s, prefix| parse_key_policy(&key_shape(s, "site", prefix).to_string()).unwrap();
        let by = |action: &'static str, resource: &'static str| Request {
            principal: Some("k"),
            ..anon(action, resource)
        };
        let ro = shape(KeyShape::ReadOnly, "");
        assert_eq!(ro.evaluate(&by("GetObject", "site/a")), Decision::Allow);
        assert_eq!(ro.evaluate(&by("ListBucket", "site")), Decision::Allow);
        assert_eq!(ro.evaluate(&by("PutObject", "site/a")), Decision::Neither);
        assert_eq!(ro.evaluate(&by("GetObject", "other/a")), Decision::Neither);
        let wo = shape(KeyShape::WriteOnly, "uploads/");
        assert_eq!(
            wo.evaluate(&by("PutObject", "site/uploads/a")),
            Decision::Allow
        );
        assert_eq!(wo.evaluate(&by("PutObject", "site/a")), Decision::Neither);
        assert_eq!(
            wo.evaluate(&by("GetObject", "site/uploads/a")),
            Decision::Neither
        );
        assert_eq!(
            wo.evaluate(&by("DeleteObject", "site/uploads/a")),
            Decision::Neither
        );
        let full = shape(KeyShape::Full, "");
        assert_eq!(
            full.evaluate(&by("DeleteObject", "site/a")),
            Decision::Allow
        );
        assert_eq!(
            full.evaluate(&by("PutBucketPolicy", "site")),
            Decision::Allow
        );
        assert_eq!(
            full.evaluate(&by("GetObject", "site2/a")),
            Decision::Neither
        );
        assert_eq!(
            full.evaluate(&by("ListAllMyBuckets", "*")),
            Decision::Neither
        );
    }

    #[test]
    fn the_public_read_statements_are_mc_download() {
        let doc = serde_json::json!({"Version": "2012-10-17", "Statement": public_read_statements("pics")});
        let p = parse("pics", &doc.to_string()).unwrap();
        assert!(p.anyone_reads("pics"));
        assert_eq!(p.public_statements(), vec![0, 1]);
        assert_eq!(p, parse("pics", &mc("pics", "download")).unwrap());
    }
}
