//! Store errors become S3 errors here, one by one, so each gets its own code and status.
//! Our own faults are logged with the request id; client faults are not errors in the log.

use s3s::{S3Error, S3ErrorCode, s3_error};

use crate::store::StoreError;

pub use crate::server::RequestId;

pub fn request_id(ext: &http::Extensions) -> &str {
    ext.get::<RequestId>().map_or("-", |r| r.0.as_str())
}

pub fn store_error(e: StoreError, rid: &str) -> S3Error {
    match e {
        StoreError::NoSuchBucket(b) => {
            s3_error!(NoSuchBucket, "The specified bucket does not exist: {b}")
        }
        StoreError::NoSuchKey(k) => s3_error!(NoSuchKey, "The specified key does not exist: {k}"),
        StoreError::BucketExists(b) => {
            s3_error!(BucketAlreadyOwnedByYou, "You already own the bucket {b}")
        }
        StoreError::BucketNotEmpty(b) => s3_error!(BucketNotEmpty, "The bucket {b} is not empty"),
        StoreError::NoSuchVersion { key, version } => s3_error!(
            NoSuchVersion,
            "The specified version `{version}` of `{key}` does not exist"
        ),
        StoreError::DeleteMarker(v) => {
            let mut e = s3_error!(
                MethodNotAllowed,
                "The specified method is not allowed against this resource: version `{v}` is a delete marker"
            );
            let mut h = http::HeaderMap::new();
            h.insert(
                "x-amz-delete-marker",
                http::HeaderValue::from_static("true"),
            );
            if let Ok(v) = http::HeaderValue::from_str(&v) {
                h.insert("x-amz-version-id", v);
            }
            e.set_headers(h);
            e
        }
        StoreError::NoSuchUpload(u) => {
            s3_error!(NoSuchUpload, "The specified upload does not exist: {u}")
        }
        StoreError::InvalidPart(m) => S3Error::with_message(S3ErrorCode::InvalidPart, m),
        e @ StoreError::InvalidPartOrder => {
            S3Error::with_message(S3ErrorCode::InvalidPartOrder, e.to_string())
        }
        e @ StoreError::EntityTooSmall { .. } => {
            S3Error::with_message(S3ErrorCode::EntityTooSmall, e.to_string())
        }
        e @ StoreError::EntityTooLarge { .. } => {
            S3Error::with_message(S3ErrorCode::EntityTooLarge, e.to_string())
        }
        e @ StoreError::InvalidRange { .. } => {
            S3Error::with_message(S3ErrorCode::InvalidRange, e.to_string())
        }
        StoreError::BadDigest(m) => S3Error::with_message(S3ErrorCode::BadDigest, m),
        // s3s reports a bad aws-chunked chunk signature as a body stream error.
        StoreError::IncompleteBody(m) if m.contains("SignatureMismatch") => s3_error!(
            SignatureDoesNotMatch,
            "The request signature we calculated does not match the signature you provided (chunk signature)"
        ),
        StoreError::IncompleteBody(m) => {
            tracing::info!(request_id = rid, cause = %m, "request body ended early");
            S3Error::with_message(
                S3ErrorCode::IncompleteBody,
                format!("The request body ended early: {m}"),
            )
        }
        StoreError::Unavailable(m) => {
            tracing::warn!(request_id = rid, cause = %m, "storage backend unavailable");
            s3_error!(SlowDown, "The storage backend is unavailable; retry later")
        }
        StoreError::InsufficientStorage(m) => {
            tracing::warn!(request_id = rid, cause = %m, "write refused: the disk is full");
            // MinIO's answer to the same condition: 507 with its own code.
            let mut e = S3Error::with_message(
                S3ErrorCode::Custom("XPixelportStorageFull".into()),
                format!(
                    "The server's disk is too full to store this object ({m}). Delete objects \
                     or free space on the data disk, then retry."
                ),
            );
            e.set_status_code(http::StatusCode::INSUFFICIENT_STORAGE);
            e
        }
        StoreError::NotImplemented(m) => S3Error::with_message(S3ErrorCode::NotImplemented, m),
        StoreError::Sealing(e) => sealing_error(e, rid),
        StoreError::Internal(m) => {
            tracing::error!(request_id = rid, cause = %m, "internal storage error");
            s3_error!(
                InternalError,
                "We encountered an internal error. Please try again. (request id {rid})"
            )
        }
    }
}

/// Encryption at rest's errors, as S3 answers them: a missing SSE-C key or one that does not
/// apply is 400 InvalidRequest, a wrong one 403 AccessDenied; a key or blob that does not
/// open is our fault.
fn sealing_error(e: crate::store::sealing::SealError, rid: &str) -> S3Error {
    use crate::store::sealing::SealError;
    match e {
        e @ (SealError::KeyRequired | SealError::NotApplicable) => {
            S3Error::with_message(S3ErrorCode::InvalidRequest, e.to_string())
        }
        e @ SealError::WrongKey => S3Error::with_message(S3ErrorCode::AccessDenied, e.to_string()),
        e @ (SealError::MasterKey(_) | SealError::Corrupt(_)) => {
            tracing::error!(request_id = rid, cause = %e, "encrypted object cannot be opened");
            s3_error!(
                InternalError,
                "We encountered an internal error. Please try again. (request id {rid})"
            )
        }
    }
}
