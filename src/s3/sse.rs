//! Server-side encryption as the S3 API speaks it (#14 part 5): which encryption a write
//! asks for (`x-amz-server-side-encryption`, SSE-C's three headers, or its bucket's
//! default), the SSE-C key a read carries, the headers answered back, and
//! Put/Get/DeleteBucketEncryption. The store does the encrypting (`store::sealing`).
//!
//! SSE-C keys travel in request headers, so as on AWS and MinIO they are refused over plain
//! HTTP from another host: they are accepted over this listener's TLS, through the tunnel
//! from an HTTPS edge, or from a loopback peer (a TLS-terminating proxy on the same host,
//! or a local client).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use serde::{Deserialize, Serialize};

use super::PixelportS3;
use crate::store::sealing::{CustomerKey, Encryption, KEY_LEN};

/// A bucket's default encryption (PutBucketEncryption): SSE-S3, the only kind kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultEncryption {
    /// Echoed back as set; it changes nothing without a KMS.
    #[serde(default)]
    pub bucket_key_enabled: bool,
}

const AES256: &str = "AES256";

fn invalid_argument(msg: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, msg.to_owned())
}

/// SSE-C's three headers as a request carries them (for a copy's source, the
/// `x-amz-copy-source-server-side-encryption-customer-*` ones).
#[derive(Default, Clone, Copy)]
pub struct CustomerHeaders<'a> {
    pub algorithm: Option<&'a str>,
    pub key: Option<&'a str>,
    pub key_md5: Option<&'a str>,
}

impl CustomerHeaders<'_> {
    fn is_empty(&self) -> bool {
        self.algorithm.is_none() && self.key.is_none() && self.key_md5.is_none()
    }

    /// The key they carry, checked as S3 checks it; `None` without SSE-C headers.
    pub fn key(&self, secure: bool) -> S3Result<Option<CustomerKey>> {
        if self.is_empty() {
            return Ok(None);
        }
        let Some(algorithm) = self.algorithm else {
            return Err(invalid_argument(
                "Requests specifying Server Side Encryption with Customer provided keys must provide a valid encryption algorithm.",
            ));
        };
        if algorithm != AES256 {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidEncryptionAlgorithmError,
                "The encryption request you specified is not valid. The valid value is AES256.",
            ));
        }
        let Some(key) = self.key else {
            return Err(invalid_argument(
                "Requests specifying Server Side Encryption with Customer provided keys must provide an appropriate secret key.",
            ));
        };
        let bytes = B64
            .decode(key.trim())
            .ok()
            .and_then(|b| <[u8; KEY_LEN]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| {
                invalid_argument("The secret key was invalid for the specified algorithm.")
            })?;
        let key = CustomerKey::new(bytes);
        let Some(md5) = self.key_md5 else {
            return Err(invalid_argument(
                "Requests specifying Server Side Encryption with Customer provided keys must provide the client calculated MD5 of the secret key.",
            ));
        };
        if md5.trim() != key.md5_base64() {
            return Err(invalid_argument(
                "The calculated MD5 hash of the key did not match the hash that was provided.",
            ));
        }
        if !secure {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                "Requests specifying Server Side Encryption with Customer provided keys must be made over a secure connection.",
            ));
        }
        Ok(Some(key))
    }
}

/// Whether an SSE-C key may arrive on this request's connection (see the module's text).
pub fn secure_for_keys(headers: &http::HeaderMap, ext: &http::Extensions) -> bool {
    if ext.get::<crate::server::OverTls>().is_some() {
        return true;
    }
    if ext.get::<crate::server::Tunneled>().is_some() {
        return headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes() == b"https");
    }
    ext.get::<crate::server::PeerAddr>()
        .is_some_and(|p| p.0.ip().is_loopback())
}

/// The SSE-C key of an s3s input with the `sse_customer_*` fields (with `copy_source`
/// first, its `copy_source_sse_customer_*` ones), checked: `request_key` on a request.
macro_rules! customer_key {
    ($input:expr, $headers:expr, $ext:expr) => {
        $crate::s3::sse::request_key(
            $crate::s3::sse::CustomerHeaders {
                algorithm: $input.sse_customer_algorithm.as_deref(),
                key: $input.sse_customer_key.as_deref(),
                key_md5: $input.sse_customer_key_md5.as_deref(),
            },
            $headers,
            $ext,
        )
    };
    (copy_source $input:expr, $headers:expr, $ext:expr) => {
        $crate::s3::sse::request_key(
            $crate::s3::sse::CustomerHeaders {
                algorithm: $input.copy_source_sse_customer_algorithm.as_deref(),
                key: $input.copy_source_sse_customer_key.as_deref(),
                key_md5: $input.copy_source_sse_customer_key_md5.as_deref(),
            },
            $headers,
            $ext,
        )
    };
}
pub(crate) use customer_key;

/// Whether a request with the SSE-C key `given` may read an object encrypted as `stored`
/// (`sealing::check_access`), as an S3 error.
pub fn may_read(
    s: &PixelportS3,
    stored: Option<&Encryption>,
    given: Option<&CustomerKey>,
    ext: &http::Extensions,
) -> S3Result<()> {
    crate::store::sealing::check_access(stored, given).map_err(|e| s.err(e.into(), ext))
}

/// The SSE-C key of a request, checked (`None` without SSE-C headers).
pub fn request_key(
    h: CustomerHeaders<'_>,
    req_headers: &http::HeaderMap,
    ext: &http::Extensions,
) -> S3Result<Option<CustomerKey>> {
    h.key(secure_for_keys(req_headers, ext))
}

/// What a write asks the store to do (`ObjectAttrs::encryption` and `customer_key`).
#[derive(Debug, Clone, Default)]
pub struct ForWrite {
    pub encryption: Option<Encryption>,
    pub key: Option<CustomerKey>,
}

impl ForWrite {
    pub fn apply(&self, attrs: &mut crate::store::ObjectAttrs) {
        attrs.encryption = self.encryption.clone();
        attrs.customer_key = self.key.clone();
    }

    /// The response headers for the object this write makes.
    pub fn answer(&self) -> Answer {
        answer(self.encryption.as_ref(), self.key.as_ref())
    }
}

/// The encryption a write asks for: `x-amz-server-side-encryption`, an SSE-C key, or else
/// the bucket's default.
pub fn for_write(
    s: &PixelportS3,
    bucket: &str,
    sse: Option<&ServerSideEncryption>,
    customer: Option<CustomerKey>,
) -> S3Result<ForWrite> {
    let encryption = match (sse.map(|v| v.as_str()), &customer) {
        (Some(_), Some(_)) => {
            return Err(invalid_argument(
                "Server Side Encryption with Customer provided key is incompatible with the encryption method specified",
            ));
        }
        (Some(AES256), None) => Some(Encryption::S3),
        (Some(kms @ ("aws:kms" | "aws:kms:dsse")), None) => {
            return Err(S3Error::with_message(
                S3ErrorCode::NotImplemented,
                format!(
                    "Server-side encryption with `{kms}` is not implemented: Pixelport has no key management service. Use AES256 (SSE-S3, the store's own key) or SSE-C."
                ),
            ));
        }
        (Some(other), None) => {
            return Err(invalid_argument(&format!(
                "The encryption method specified is not supported: `{other}` (use AES256)"
            )));
        }
        (None, Some(k)) => Some(Encryption::customer(k)),
        (None, None) => s.buckets.access(bucket).encryption.map(|_| Encryption::S3),
    };
    Ok(ForWrite {
        encryption,
        key: customer,
    })
}

/// The SSE response headers for an object encrypted as `enc`: SSE-S3's algorithm, or
/// SSE-C's algorithm and the key's MD5 (from the request's key; the store keeps no MD5 of it).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub server_side_encryption: Option<ServerSideEncryption>,
    pub sse_customer_algorithm: Option<String>,
    pub sse_customer_key_md5: Option<String>,
}

pub fn answer(enc: Option<&Encryption>, key: Option<&CustomerKey>) -> Answer {
    match enc {
        Some(Encryption::S3) => Answer {
            server_side_encryption: Some(ServerSideEncryption::from_static(
                ServerSideEncryption::AES256,
            )),
            ..Answer::default()
        },
        Some(Encryption::Customer { .. }) => Answer {
            sse_customer_algorithm: Some(AES256.to_owned()),
            sse_customer_key_md5: key.map(CustomerKey::md5_base64),
            ..Answer::default()
        },
        None => Answer::default(),
    }
}

fn not_found() -> S3Error {
    let mut e = S3Error::with_message(
        S3ErrorCode::ServerSideEncryptionConfigurationNotFoundError,
        "The server side encryption configuration was not found",
    );
    e.set_status_code(http::StatusCode::NOT_FOUND);
    e
}

/// PutBucketEncryption: one rule, AES256 by default; KMS is refused (no KMS).
pub async fn put_bucket(
    s: &PixelportS3,
    req: S3Request<PutBucketEncryptionInput>,
) -> S3Result<S3Response<PutBucketEncryptionOutput>> {
    let input = req.input;
    s.existing_bucket(&input.bucket, &req.extensions).await?;
    if !s.store.encrypts_at_rest() {
        return Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            crate::store::SSE_NOT_ON_THIS_STORE,
        ));
    }
    let rules = input.server_side_encryption_configuration.rules;
    let [rule] = rules.as_slice() else {
        return Err(S3Error::with_message(
            S3ErrorCode::MalformedXML,
            format!(
                "The server side encryption configuration must have exactly one rule (it has {})",
                rules.len()
            ),
        ));
    };
    let Some(by_default) = &rule.apply_server_side_encryption_by_default else {
        return Err(S3Error::with_message(
            S3ErrorCode::MalformedXML,
            "The rule has no ApplyServerSideEncryptionByDefault",
        ));
    };
    match by_default.sse_algorithm.as_str() {
        AES256 => {}
        kms @ ("aws:kms" | "aws:kms:dsse") => {
            return Err(S3Error::with_message(
                S3ErrorCode::NotImplemented,
                format!(
                    "Default encryption with `{kms}` is not implemented: Pixelport has no key management service. Use AES256."
                ),
            ));
        }
        other => {
            return Err(S3Error::with_message(
                S3ErrorCode::MalformedXML,
                format!("`{other}` is not a server side encryption algorithm (use AES256)"),
            ));
        }
    }
    if by_default.kms_master_key_id.is_some() {
        return Err(invalid_argument(
            "a KMSMasterKeyID applies only to aws:kms, which Pixelport does not have",
        ));
    }
    let setting = DefaultEncryption {
        bucket_key_enabled: rule.bucket_key_enabled.unwrap_or(false),
    };
    s.buckets
        .set_encryption(&input.bucket, Some(setting))
        .map_err(|e| super::catalog_error("default encryption", e))?;
    tracing::info!(bucket = %input.bucket, "bucket default encryption set (SSE-S3)");
    Ok(S3Response::new(PutBucketEncryptionOutput {}))
}

pub async fn get_bucket(
    s: &PixelportS3,
    req: S3Request<GetBucketEncryptionInput>,
) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
    let bucket = req.input.bucket;
    s.existing_bucket(&bucket, &req.extensions).await?;
    let Some(setting) = s.buckets.access(&bucket).encryption else {
        return Err(not_found());
    };
    Ok(S3Response::new(GetBucketEncryptionOutput {
        server_side_encryption_configuration: Some(ServerSideEncryptionConfiguration {
            rules: vec![ServerSideEncryptionRule {
                apply_server_side_encryption_by_default: Some(ServerSideEncryptionByDefault {
                    kms_master_key_id: None,
                    sse_algorithm: ServerSideEncryption::from_static(ServerSideEncryption::AES256),
                }),
                bucket_key_enabled: Some(setting.bucket_key_enabled),
            }],
        }),
    }))
}

pub async fn delete_bucket(
    s: &PixelportS3,
    req: S3Request<DeleteBucketEncryptionInput>,
) -> S3Result<S3Response<DeleteBucketEncryptionOutput>> {
    let bucket = req.input.bucket;
    s.existing_bucket(&bucket, &req.extensions).await?;
    s.buckets
        .set_encryption(&bucket, None)
        .map_err(|e| super::catalog_error("default encryption", e))?;
    Ok(S3Response::new(DeleteBucketEncryptionOutput {}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(
        algorithm: Option<&'a str>,
        key: Option<&'a str>,
        key_md5: Option<&'a str>,
    ) -> CustomerHeaders<'a> {
        CustomerHeaders {
            algorithm,
            key,
            key_md5,
        }
    }

    #[test]
    fn sse_c_headers_are_checked_as_s3_checks_them() {
        let raw = [5u8; 32];
        let good = CustomerKey::new(raw);
        let key = B64.encode(raw);
        let md5 = good.md5_base64();
        assert_eq!(
            h(Some("AES256"), Some(&key), Some(&md5)).key(true).unwrap(),
            Some(good)
        );
        assert_eq!(CustomerHeaders::default().key(false).unwrap(), None);
        let code = |r: S3Result<Option<CustomerKey>>| r.unwrap_err().code().as_str().to_owned();
        assert_eq!(
            code(h(Some("AES128"), Some(&key), Some(&md5)).key(true)),
            "InvalidEncryptionAlgorithmError"
        );
        assert_eq!(
            code(h(None, Some(&key), Some(&md5)).key(true)),
            "InvalidArgument"
        );
        assert_eq!(
            code(h(Some("AES256"), None, Some(&md5)).key(true)),
            "InvalidArgument"
        );
        let short = B64.encode([1u8; 16]);
        assert_eq!(
            code(h(Some("AES256"), Some(&short), Some(&md5)).key(true)),
            "InvalidArgument"
        );
        assert_eq!(
            code(h(Some("AES256"), Some(&key), None).key(true)),
            "InvalidArgument"
        );
        let other_md5 = CustomerKey::new([6u8; 32]).md5_base64();
        assert_eq!(
            code(h(Some("AES256"), Some(&key), Some(&other_md5)).key(true)),
            "InvalidArgument"
        );
        assert_eq!(
            code(h(Some("AES256"), Some(&key), Some(&md5)).key(false)),
            "InvalidRequest"
        );
    }

    #[test]
    fn keys_may_arrive_over_tls_an_https_tunnel_or_loopback_only() {
        let peer = |ip: [u8; 4]| crate::server::PeerAddr(std::net::SocketAddr::from((ip, 1)));
        let none = http::HeaderMap::new();
        let mut ext = http::Extensions::new();
        ext.insert(peer([127, 0, 0, 1]));
        assert!(secure_for_keys(&none, &ext));
        let mut ext = http::Extensions::new();
        ext.insert(peer([192, 0, 2, 7]));
        assert!(!secure_for_keys(&none, &ext));
        ext.insert(crate::server::OverTls);
        assert!(secure_for_keys(&none, &ext));
        // Through the tunnel, the peer is the edge's client: only its HTTPS counts.
        let mut ext = http::Extensions::new();
        ext.insert(peer([127, 0, 0, 1]));
        ext.insert(crate::server::Tunneled);
        assert!(!secure_for_keys(&none, &ext));
        let mut https = http::HeaderMap::new();
        https.insert("x-forwarded-proto", http::HeaderValue::from_static("https"));
        assert!(secure_for_keys(&https, &ext));
    }

    #[test]
    fn answers_name_the_algorithm_and_only_the_requests_key_md5() {
        let k = CustomerKey::new([2u8; 32]);
        let a = answer(Some(&Encryption::S3), None);
        assert_eq!(a.server_side_encryption.unwrap().as_str(), "AES256");
        let c = answer(Some(&Encryption::customer(&k)), Some(&k));
        assert_eq!(c.sse_customer_algorithm.as_deref(), Some("AES256"));
        assert_eq!(c.sse_customer_key_md5, Some(k.md5_base64()));
        assert_eq!(answer(None, None), Answer::default());
    }
}
