//! GetObject and HeadObject: ranges, conditional requests (304/412), response-* overrides,
//! and checksums in checksum mode.

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::{PixelportS3, parse_http_date, strong_etag, timestamp};
use crate::store::{ObjectInfo, ReadRange, StoreError};

pub(crate) fn to_read_range(r: &Range) -> ReadRange {
    match *r {
        Range::Int { first, last } => ReadRange::FromTo { first, last },
        Range::Suffix { length } => ReadRange::Suffix { len: length },
    }
}

fn etag_matches(cond: &ETagCondition, etag: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == etag,
    }
}

fn seconds(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

fn unix(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

/// The precondition rules of RFC 9110 §13.2.2 as S3 applies them.
pub(crate) fn check_conditions(
    info: &ObjectInfo,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let modified = seconds(info.last_modified_ms);
    if let Some(c) = if_match {
        if !etag_matches(c, &info.etag) {
            return Err(s3_error!(
                PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold (If-Match)"
            ));
        }
    } else if let Some(t) = if_unmodified_since
        && modified > unix(t)
    {
        return Err(s3_error!(
            PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold (If-Unmodified-Since)"
        ));
    }
    if let Some(c) = if_none_match {
        if etag_matches(c, &info.etag) {
            return Err(not_modified(info));
        }
    } else if let Some(t) = if_modified_since
        && modified <= unix(t)
    {
        return Err(not_modified(info));
    }
    Ok(())
}

fn not_modified(info: &ObjectInfo) -> S3Error {
    let mut e = S3Error::new(S3ErrorCode::NotModified);
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(&format!("\"{}\"", info.etag)) {
        headers.insert(http::header::ETAG, v);
    }
    e.set_headers(headers);
    e
}

/// Anonymous requests never get the `response-*` overrides: `access.rs` refuses them with
/// 400 InvalidRequest as AWS does, and this keeps any other access policy from serving a
/// public object as, say, `text/html` on an anonymous link (stored XSS on the S3 origin).
macro_rules! signed_overrides_only {
    ($signed:expr, $input:expr) => {
        if !$signed {
            $input.response_content_type = None;
            $input.response_content_disposition = None;
            $input.response_cache_control = None;
            $input.response_content_encoding = None;
            $input.response_content_language = None;
            $input.response_expires = None;
        }
    };
}

/// The error for a failed read. A key whose current version is a delete marker answers 404
/// NoSuchKey with `x-amz-delete-marker: true` and the marker's `x-amz-version-id`, as S3
/// does (looked up only for such a 404 in a versioned bucket).
async fn missing(
    s: &PixelportS3,
    bucket: &str,
    key: &str,
    e: StoreError,
    ext: &http::Extensions,
) -> S3Error {
    if !matches!(e, StoreError::NoSuchKey(_))
        || !matches!(s.store.versioning(bucket).await, Ok(Some(_)))
    {
        return s.err(e, ext);
    }
    let newest = s
        .store
        .list_versions(
            bucket,
            &crate::store::VersionQuery {
                prefix: key.to_owned(),
                max_keys: 1,
                ..Default::default()
            },
        )
        .await;
    let mut err = s.err(e, ext);
    if let Ok(page) = newest
        && let Some(m) = page.entries.first()
        && m.delete_marker
        && m.info.key == key
    {
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-amz-delete-marker",
            http::HeaderValue::from_static("true"),
        );
        if let Ok(v) = http::HeaderValue::from_str(m.info.version_name()) {
            h.insert("x-amz-version-id", v);
        }
        err.set_headers(h);
    }
    err
}

pub async fn get_object(
    s: &PixelportS3,
    req: S3Request<GetObjectInput>,
) -> S3Result<S3Response<GetObjectOutput>> {
    let mut input = req.input;
    signed_overrides_only!(req.credentials.is_some(), input);
    let ext = &req.extensions;
    let range = input.range.as_ref().map(to_read_range);
    // One read gives the object's info and its bytes from the same version; preconditions
    // are checked on that info before any byte is sent (the stream is dropped if they fail).
    let version = super::version_arg(input.version_id.as_deref())?;
    let customer = super::sse::customer_key!(input, &req.headers, ext)?;
    let read = super::read_object(
        &s.store,
        &input.bucket,
        &input.key,
        version,
        range,
        customer.as_ref(),
    )
    .await;
    let (info, stream, span) = match read {
        Ok(x) => x,
        Err(StoreError::InvalidRange { size }) => {
            // As S3: a failed precondition wins over an unsatisfiable range.
            let info = super::head_version(&s.store, &input.bucket, &input.key, version)
                .await
                .map_err(|e| s.err(e, ext))?;
            check_conditions(
                &info,
                input.if_match.as_ref(),
                input.if_none_match.as_ref(),
                input.if_modified_since.as_ref(),
                input.if_unmodified_since.as_ref(),
            )?;
            return Err(s.err(StoreError::InvalidRange { size }, ext));
        }
        Err(e) => return Err(missing(s, &input.bucket, &input.key, e, ext).await),
    };
    check_conditions(
        &info,
        input.if_match.as_ref(),
        input.if_none_match.as_ref(),
        input.if_modified_since.as_ref(),
        input.if_unmodified_since.as_ref(),
    )?;
    let len = span.end - span.start;
    let content_range = range.map(|_| {
        format!(
            "bytes {}-{}/{}",
            span.start,
            span.end.saturating_sub(1),
            info.size
        )
    });
    let whole = range.is_none();
    let checksums = if whole
        && input
            .checksum_mode
            .as_ref()
            .is_some_and(|m| m.as_str() == ChecksumMode::ENABLED)
    {
        info.checksums.clone()
    } else {
        Default::default()
    };
    let kind = super::checksum_type(&checksums, info.parts);
    let a = &info.attrs;
    let sse = super::sse::answer(a.encryption.as_ref(), customer.as_ref());
    let output = GetObjectOutput {
        server_side_encryption: sse.server_side_encryption,
        sse_customer_algorithm: sse.sse_customer_algorithm,
        sse_customer_key_md5: sse.sse_customer_key_md5,
        tag_count: super::tagging_ops::tag_count(&info.attrs.tags),
        body: Some(StreamingBlob::wrap(stream)),
        content_length: Some(len as i64),
        content_range,
        accept_ranges: Some("bytes".into()),
        e_tag: Some(strong_etag(&info.etag)),
        last_modified: Some(timestamp(info.last_modified_ms)),
        content_type: input
            .response_content_type
            .or_else(|| a.content_type.clone())
            .or_else(|| Some("binary/octet-stream".into())),
        cache_control: input
            .response_cache_control
            .or_else(|| a.cache_control.clone()),
        content_disposition: input
            .response_content_disposition
            .or_else(|| a.content_disposition.clone()),
        content_encoding: input
            .response_content_encoding
            .or_else(|| a.content_encoding.clone()),
        content_language: input
            .response_content_language
            .or_else(|| a.content_language.clone()),
        expires: input
            .response_expires
            .or_else(|| a.expires.as_deref().and_then(parse_http_date)),
        metadata: (!a.user_metadata.is_empty())
            .then(|| a.user_metadata.clone().into_iter().collect()),
        checksum_crc32: checksums.crc32,
        checksum_crc32c: checksums.crc32c,
        checksum_sha1: checksums.sha1,
        checksum_sha256: checksums.sha256,
        checksum_type: kind,
        checksum_crc64nvme: checksums.crc64nvme,
        parts_count: (info.parts > 0).then_some(info.parts as i32),
        version_id: info.version_id.clone(),
        ..Default::default()
    };
    let mut resp = S3Response::new(output);
    if range.is_some() {
        resp.status = Some(http::StatusCode::PARTIAL_CONTENT);
    }
    Ok(resp)
}

pub async fn head_object(
    s: &PixelportS3,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let mut input = req.input;
    signed_overrides_only!(req.credentials.is_some(), input);
    let version = super::version_arg(input.version_id.as_deref())?;
    let info = match super::head_version(&s.store, &input.bucket, &input.key, version).await {
        Ok(info) => info,
        Err(e) => return Err(missing(s, &input.bucket, &input.key, e, &req.extensions).await),
    };
    let customer = super::sse::customer_key!(input, &req.headers, &req.extensions)?;
    super::sse::may_read(
        s,
        info.attrs.encryption.as_ref(),
        customer.as_ref(),
        &req.extensions,
    )?;
    check_conditions(
        &info,
        input.if_match.as_ref(),
        input.if_none_match.as_ref(),
        input.if_modified_since.as_ref(),
        input.if_unmodified_since.as_ref(),
    )?;
    let mut len = info.size;
    let mut content_range = None;
    if let Some(r) = input.range.as_ref() {
        let span = to_read_range(r).resolve(info.size).ok_or_else(|| {
            s.err(
                StoreError::InvalidRange { size: info.size },
                &req.extensions,
            )
        })?;
        len = span.end - span.start;
        content_range = Some(format!(
            "bytes {}-{}/{}",
            span.start,
            span.end - 1,
            info.size
        ));
    }
    let checksums = if input
        .checksum_mode
        .as_ref()
        .is_some_and(|m| m.as_str() == ChecksumMode::ENABLED)
    {
        info.checksums.clone()
    } else {
        Default::default()
    };
    let kind = super::checksum_type(&checksums, info.parts);
    let a = &info.attrs;
    let sse = super::sse::answer(a.encryption.as_ref(), customer.as_ref());
    let output = HeadObjectOutput {
        server_side_encryption: sse.server_side_encryption,
        sse_customer_algorithm: sse.sse_customer_algorithm,
        sse_customer_key_md5: sse.sse_customer_key_md5,
        content_length: Some(len as i64),
        content_range,
        accept_ranges: Some("bytes".into()),
        e_tag: Some(strong_etag(&info.etag)),
        last_modified: Some(timestamp(info.last_modified_ms)),
        content_type: input
            .response_content_type
            .or_else(|| a.content_type.clone())
            .or_else(|| Some("binary/octet-stream".into())),
        cache_control: input
            .response_cache_control
            .or_else(|| a.cache_control.clone()),
        content_disposition: input
            .response_content_disposition
            .or_else(|| a.content_disposition.clone()),
        content_encoding: input
            .response_content_encoding
            .or_else(|| a.content_encoding.clone()),
        content_language: input
            .response_content_language
            .or_else(|| a.content_language.clone()),
        expires: input
            .response_expires
            .or_else(|| a.expires.as_deref().and_then(parse_http_date)),
        metadata: (!a.user_metadata.is_empty())
            .then(|| a.user_metadata.clone().into_iter().collect()),
        checksum_crc32: checksums.crc32,
        checksum_crc32c: checksums.crc32c,
        checksum_sha1: checksums.sha1,
        checksum_sha256: checksums.sha256,
        checksum_type: kind,
        checksum_crc64nvme: checksums.crc64nvme,
        parts_count: (info.parts > 0).then_some(info.parts as i32),
        version_id: info.version_id.clone(),
        ..Default::default()
    };
    Ok(S3Response::new(output))
}
