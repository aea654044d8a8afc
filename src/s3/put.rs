//! Writes: PutObject, CopyObject, DeleteObject, DeleteObjects, and the body verification they
//! share with UploadPart (Content-MD5 and x-amz-checksum-* from headers or aws-chunked
//! trailers, checked before anything becomes visible).

use base64::Engine;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::get::check_conditions;
use super::sse;
use super::{PixelportS3, attrs_from, check_key, strong_etag, timestamp};
use crate::store::spool::ChecksumSet;
use crate::store::{
    Checksums, ConditionFailed, DeleteCondition, ETagMatch, ObjectAttrs, Spooled, StoreError,
    WriteCondition,
};

/// Checksums the client declared in headers; trailer values are filled in after the body.
#[derive(Default)]
pub(crate) struct Declared {
    pub md5: Option<String>,
    pub sums: Checksums,
    pub want: ChecksumSet,
}

impl Declared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        headers: &http::HeaderMap,
        md5: Option<String>,
        algorithm: Option<&ChecksumAlgorithm>,
        crc32: Option<String>,
        crc32c: Option<String>,
        sha1: Option<String>,
        sha256: Option<String>,
        crc64nvme: Option<String>,
    ) -> S3Result<Declared> {
        let mut want = ChecksumSet {
            crc32: crc32.is_some(),
            crc32c: crc32c.is_some(),
            sha1: sha1.is_some(),
            sha256: sha256.is_some(),
            crc64nvme: crc64nvme.is_some(),
        };
        if let Some(a) = algorithm {
            want = want
                .with_algorithm(a.as_str())
                .map_err(super::invalid_argument)?;
        }
        for t in headers.get_all("x-amz-trailer") {
            for name in t.to_str().unwrap_or_default().split(',') {
                if let Some(alg) = name
                    .trim()
                    .to_ascii_lowercase()
                    .strip_prefix("x-amz-checksum-")
                {
                    want = want.with_algorithm(alg).map_err(super::invalid_argument)?;
                }
            }
        }
        // Malformed values are refused before the body is read, as S3 does: InvalidDigest
        // for Content-MD5, InvalidRequest for a checksum header (BadDigest is a mismatch).
        let decoded_len = |v: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .map(|b| b.len())
                .ok()
        };
        if let Some(m) = &md5
            && decoded_len(m) != Some(16)
        {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidDigest,
                format!("The Content-MD5 you specified was invalid: `{m}`"),
            ));
        }
        for (name, value, len) in [
            ("crc32", &crc32, 4),
            ("crc32c", &crc32c, 4),
            ("sha1", &sha1, 20),
            ("sha256", &sha256, 32),
            ("crc64nvme", &crc64nvme, 8),
        ] {
            if let Some(v) = value
                && decoded_len(v) != Some(len)
            {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidRequest,
                    format!("Value for x-amz-checksum-{name} header is invalid."),
                ));
            }
        }
        Ok(Declared {
            md5,
            sums: Checksums {
                crc32,
                crc32c,
                sha1,
                sha256,
                crc64nvme,
            },
            want,
        })
    }

    /// Compares what was declared (headers, then trailers) with what the body hashed to.
    pub fn verify(
        mut self,
        spooled: &Spooled,
        trailers: Option<s3s::TrailingHeaders>,
    ) -> Result<(), StoreError> {
        if let Some(t) = trailers.and_then(|t| t.take()) {
            let get = |n: &str| t.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
            self.sums.crc32 = self.sums.crc32.or(get("x-amz-checksum-crc32"));
            self.sums.crc32c = self.sums.crc32c.or(get("x-amz-checksum-crc32c"));
            self.sums.sha1 = self.sums.sha1.or(get("x-amz-checksum-sha1"));
            self.sums.sha256 = self.sums.sha256.or(get("x-amz-checksum-sha256"));
            self.sums.crc64nvme = self.sums.crc64nvme.or(get("x-amz-checksum-crc64nvme"));
        }
        if let Some(md5) = &self.md5 {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(md5.trim())
                .map_err(|_| {
                    StoreError::BadDigest(format!("the Content-MD5 `{md5}` is not valid base64"))
                })?;
            if raw.as_slice() != spooled.md5 {
                return Err(StoreError::BadDigest(
                    "The Content-MD5 you specified did not match what we received.".into(),
                ));
            }
        }
        let got = &spooled.checksums;
        for (name, declared, computed) in [
            ("CRC32", &self.sums.crc32, &got.crc32),
            ("CRC32C", &self.sums.crc32c, &got.crc32c),
            ("SHA1", &self.sums.sha1, &got.sha1),
            ("SHA256", &self.sums.sha256, &got.sha256),
            ("CRC64NVME", &self.sums.crc64nvme, &got.crc64nvme),
        ] {
            if let Some(d) = declared
                && Some(d) != computed.as_ref()
            {
                return Err(StoreError::BadDigest(format!(
                    "The {name} you specified did not match the calculated checksum (declared {d}, computed {}).",
                    computed.as_deref().unwrap_or("nothing")
                )));
            }
        }
        Ok(())
    }
}

pub async fn put_object(
    s: &PixelportS3,
    req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let ext = req.extensions;
    let input = req.input;
    check_key(&input.key)?;
    s.store
        .head_bucket(&input.bucket)
        .await
        .map_err(|e| s.err(e, &ext))?;
    let customer = sse::customer_key!(input, &req.headers, &ext)?;
    let encrypt = sse::for_write(
        s,
        &input.bucket,
        input.server_side_encryption.as_ref(),
        customer,
    )?;
    let tags = super::tagging_ops::header_tags(s, input.tagging.as_deref())?;
    let public_read = super::acl_ops::upload_public_read(
        s,
        &input.bucket,
        input.acl.as_ref().map(|a| a.as_str()),
    )?;
    if let Some(len) = input.content_length
        && len as u64 > s.max_object_size
    {
        return Err(s.err(
            StoreError::EntityTooLarge {
                max: s.max_object_size,
            },
            &ext,
        ));
    }
    let declared = Declared::new(
        &req.headers,
        input.content_md5,
        input.checksum_algorithm.as_ref(),
        input.checksum_crc32,
        input.checksum_crc32c,
        input.checksum_sha1,
        input.checksum_sha256,
        input.checksum_crc64nvme,
    )?;
    let Some(body) = input.body else {
        return Err(s3_error!(IncompleteBody, "The request has no body"));
    };
    // Sealed as it arrives when it is to be encrypted: no plaintext reaches the disk.
    let seal = s
        .store
        .data_key(encrypt.encryption.as_ref(), encrypt.key.as_ref())
        .map_err(|e| s.err(e, &ext))?;
    let spooled = s
        .spool
        .spool_sealed(body, declared.want, s.max_object_size, seal)
        .await
        .map_err(|e| s.err(e, &ext))?;
    declared
        .verify(&spooled, req.trailing_headers)
        .map_err(|e| s.err(e, &ext))?;
    let cond = write_condition(input.if_match.as_ref(), input.if_none_match.as_ref());
    let mut attrs = attrs_from(
        input.content_type,
        input.cache_control,
        input.content_disposition,
        input.content_encoding,
        input.content_language,
        input.expires,
        input.metadata,
    );
    attrs.tags = tags;
    attrs.public_read = public_read;
    attrs.owner = super::owner::requester(&ext);
    encrypt.apply(&mut attrs);
    // The store decides the conditions atomically with the write (see `WriteCondition`).
    let info = s
        .store
        .put_object_if(&input.bucket, &input.key, spooled, attrs, &cond)
        .await
        .map_err(|e| s.err(e, &ext))?
        .map_err(precondition_failed)?;
    s.changed(&input.bucket, &input.key);
    let c = info.checksums;
    let sse = encrypt.answer();
    Ok(S3Response::new(PutObjectOutput {
        server_side_encryption: sse.server_side_encryption,
        sse_customer_algorithm: sse.sse_customer_algorithm,
        sse_customer_key_md5: sse.sse_customer_key_md5,
        e_tag: Some(strong_etag(&info.etag)),
        checksum_crc32: c.crc32,
        checksum_crc32c: c.crc32c,
        checksum_sha1: c.sha1,
        checksum_sha256: c.sha256,
        checksum_crc64nvme: c.crc64nvme,
        version_id: info.version_id.clone(),
        ..Default::default()
    }))
}

/// Conditional writes: `If-None-Match: *` (create only) and `If-Match: etag` (replace only
/// that version), as the store's `WriteCondition`, which the store decides atomically with
/// the write.
pub(crate) fn write_condition(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> WriteCondition {
    let side = |c: &ETagCondition| match c {
        ETagCondition::Any => ETagMatch::Any,
        ETagCondition::ETag(e) => ETagMatch::ETag(e.value().to_owned()),
    };
    WriteCondition {
        if_match: if_match.map(side),
        if_none_match: if_none_match.map(side),
    }
}

/// A conditional delete's preconditions (`If-Match`, last-modified time, size).
fn delete_condition(
    if_match: Option<&ETagCondition>,
    last_modified: Option<Timestamp>,
    size: Option<i64>,
) -> S3Result<DeleteCondition> {
    let size = size
        .map(|n| {
            u64::try_from(n).map_err(|_| super::invalid_argument("x-amz-if-match-size is negative"))
        })
        .transpose()?;
    Ok(DeleteCondition {
        if_match: write_condition(if_match, None).if_match,
        last_modified_secs: last_modified.map(|t| time::OffsetDateTime::from(t).unix_timestamp()),
        size,
    })
}

pub(crate) fn precondition_failed(c: ConditionFailed) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::PreconditionFailed,
        format!("At least one of the pre-conditions you specified did not hold ({c})"),
    )
}

/// A copy's source: bucket, key, and the version when one is named (`?versionId=`).
pub(crate) fn copy_source(src: &CopySource) -> S3Result<(String, String, Option<String>)> {
    match src {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => {
            let version = super::version_arg(version_id.as_deref())?.map(str::to_owned);
            Ok((bucket.to_string(), key.to_string(), version))
        }
        _ => Err(s3_error!(
            NotImplemented,
            "Access point copy sources are not supported"
        )),
    }
}

pub async fn copy_object(
    s: &PixelportS3,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let ext = req.extensions;
    let input = req.input;
    check_key(&input.key)?;
    let (src_bucket, src_key, src_version) = copy_source(&input.copy_source)?;
    let customer = sse::customer_key!(input, &req.headers, &ext)?;
    let source_key = sse::customer_key!(copy_source input, &req.headers, &ext)?;
    // Asking for encryption is a change of the object, as S3 counts changes: a copy onto
    // itself with only `--sse AES256` (re)encrypts it.
    let sse_requested = input.server_side_encryption.is_some() || customer.is_some();
    let encrypt = sse::for_write(
        s,
        &input.bucket,
        input.server_side_encryption.as_ref(),
        customer,
    )?;
    let versioned = s
        .store
        .versioning(&input.bucket)
        .await
        .map_err(|e| s.err(e, &ext))?
        .is_some();
    let src = super::head_version(&s.store, &src_bucket, &src_key, src_version.as_deref())
        .await
        .map_err(|e| s.err(e, &ext))?;
    check_conditions(
        &src,
        input.copy_source_if_match.as_ref(),
        input.copy_source_if_none_match.as_ref(),
        input.copy_source_if_modified_since.as_ref(),
        input.copy_source_if_unmodified_since.as_ref(),
    )
    .map_err(|e| {
        if e.code() == &S3ErrorCode::NotModified {
            s3_error!(PreconditionFailed, "The copy source was not modified")
        } else {
            e
        }
    })?;
    sse::may_read(s, src.attrs.encryption.as_ref(), source_key.as_ref(), &ext)?;
    let replace = match input.metadata_directive.as_ref().map(|d| d.as_str()) {
        None | Some(MetadataDirective::COPY) => false,
        Some(MetadataDirective::REPLACE) => true,
        Some(other) => {
            return Err(super::invalid_argument(format!(
                "Unknown metadata directive `{other}`"
            )));
        }
    };
    let replace_tags = match input.tagging_directive.as_ref().map(|d| d.as_str()) {
        None | Some(TaggingDirective::COPY) => false,
        Some(TaggingDirective::REPLACE) => true,
        Some(other) => {
            return Err(super::invalid_argument(format!(
                "Unknown tagging directive `{other}`"
            )));
        }
    };
    let mut attrs: ObjectAttrs = if replace {
        attrs_from(
            input.content_type,
            input.cache_control,
            input.content_disposition,
            input.content_encoding,
            input.content_language,
            input.expires,
            input.metadata,
        )
    } else {
        src.attrs.clone()
    };
    attrs.tags = if replace_tags {
        super::tagging_ops::header_tags(s, input.tagging.as_deref())?
    } else {
        src.attrs.tags.clone()
    };
    // The copy's ACL is the request's (private by default), never the source's, as in S3.
    attrs.public_read = super::acl_ops::upload_public_read(
        s,
        &input.bucket,
        input.acl.as_ref().map(|a| a.as_str()),
    )?;
    // The copy is the requester's, whoever owned the source.
    attrs.owner = super::owner::requester(&ext);
    // The copy's encryption is the request's (or the bucket default), never the source's.
    encrypt.apply(&mut attrs);
    let to_itself = src_bucket == input.bucket && src_key == input.key;
    if to_itself && !replace && src_version.is_none() && !sse_requested {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        ));
    }
    // In a versioned bucket a copy onto its own key makes a new version (and copying a
    // named version back over its key restores it), so it copies the bytes; so does a copy
    // that changes how the object is encrypted.
    let keeps_bytes = to_itself
        && !versioned
        && src_version.is_none()
        && encrypt.key.is_none()
        && encrypt.encryption == src.attrs.encryption;
    let info = if keeps_bytes {
        s.store
            .replace_attrs(&input.bucket, &input.key, attrs)
            .await
            .map_err(|e| s.err(e, &ext))?
    } else {
        let read = super::read_object(
            &s.store,
            &src_bucket,
            &src_key,
            src_version.as_deref(),
            None,
            source_key.as_ref(),
        )
        .await;
        let (_, stream, _) = read.map_err(|e| s.err(e, &ext))?;
        let mut want = ChecksumSet::default();
        for (alg, present) in [
            ("CRC32", src.checksums.crc32.is_some()),
            ("CRC32C", src.checksums.crc32c.is_some()),
            ("SHA1", src.checksums.sha1.is_some()),
            ("SHA256", src.checksums.sha256.is_some()),
            ("CRC64NVME", src.checksums.crc64nvme.is_some()),
        ] {
            if present {
                want = want.with_algorithm(alg).map_err(super::invalid_argument)?;
            }
        }
        if let Some(a) = &input.checksum_algorithm {
            want = want
                .with_algorithm(a.as_str())
                .map_err(super::invalid_argument)?;
        }
        let seal = s
            .store
            .data_key(encrypt.encryption.as_ref(), encrypt.key.as_ref())
            .map_err(|e| s.err(e, &ext))?;
        let spooled = s
            .spool
            .spool_sealed(stream, want, s.max_object_size, seal)
            .await
            .map_err(|e| s.err(e, &ext))?;
        s.store
            .put_object(&input.bucket, &input.key, spooled, attrs)
            .await
            .map_err(|e| s.err(e, &ext))?
    };
    s.changed(&input.bucket, &input.key);
    let c = info.checksums;
    let sse = sse::answer(info.attrs.encryption.as_ref(), encrypt.key.as_ref());
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(strong_etag(&info.etag)),
            last_modified: Some(timestamp(info.last_modified_ms)),
            checksum_crc32: c.crc32,
            checksum_crc32c: c.crc32c,
            checksum_sha1: c.sha1,
            checksum_sha256: c.sha256,
            checksum_crc64nvme: c.crc64nvme,
            ..Default::default()
        }),
        version_id: info.version_id.clone(),
        copy_source_version_id: src_version.or_else(|| src.version_id.clone()),
        server_side_encryption: sse.server_side_encryption,
        sse_customer_algorithm: sse.sse_customer_algorithm,
        sse_customer_key_md5: sse.sse_customer_key_md5,
        ..Default::default()
    }))
}

pub async fn delete_object(
    s: &PixelportS3,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let input = req.input;
    let cond = delete_condition(
        input.if_match.as_ref(),
        input.if_match_last_modified_time.clone(),
        input.if_match_size,
    )?;
    let version = super::version_arg(input.version_id.as_deref())?;
    let deleted = delete_one(s, &input.bucket, &input.key, version, &cond)
        .await
        .map_err(|e| s.err(e, &req.extensions))?
        .map_err(precondition_failed)?;
    s.changed(&input.bucket, &input.key);
    Ok(S3Response::new(DeleteObjectOutput {
        delete_marker: deleted.delete_marker.then_some(true),
        version_id: deleted.version_id,
        ..Default::default()
    }))
}

/// Deletes the current version (`cond` applies to it) or, by id, one version for good.
async fn delete_one(
    s: &PixelportS3,
    bucket: &str,
    key: &str,
    version: Option<&str>,
    cond: &DeleteCondition,
) -> Result<crate::store::Conditional<crate::store::Deleted>, StoreError> {
    let Some(v) = version else {
        return s.store.delete_object_if(bucket, key, cond).await;
    };
    if !cond.is_unconditional() {
        let existing = match s.store.head_version(bucket, key, v).await {
            Ok(info) => Some(info),
            Err(StoreError::NoSuchVersion { .. } | StoreError::DeleteMarker(_)) => None,
            Err(e) => return Err(e),
        };
        if let Err(failed) = cond.check(key, existing.as_ref())? {
            return Ok(Err(failed));
        }
    }
    s.store.delete_version(bucket, key, v).await.map(Ok)
}

pub async fn delete_objects(
    s: &PixelportS3,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    let input = req.input;
    if input.delete.objects.len() > 1000 {
        return Err(s3_error!(
            MalformedXML,
            "A DeleteObjects request names at most 1000 keys"
        ));
    }
    s.store
        .head_bucket(&input.bucket)
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    let quiet = input.delete.quiet.unwrap_or(false);
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for obj in input.delete.objects {
        let etag = obj.e_tag.map(ETagCondition::ETag);
        let asked_version = obj.version_id.clone();
        let done = match (
            delete_condition(etag.as_ref(), obj.last_modified_time, obj.size),
            super::version_arg(obj.version_id.as_deref()),
        ) {
            (Ok(cond), Ok(version)) => {
                match delete_one(s, &input.bucket, &obj.key, version, &cond).await {
                    Ok(Ok(d)) => Ok(d),
                    Ok(Err(failed)) => Err(precondition_failed(failed)),
                    Err(e) => Err(s.err(e, &req.extensions)),
                }
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        match done {
            Ok(d) => {
                s.changed(&input.bucket, &obj.key);
                if !quiet {
                    // By version id, S3 names the version removed; otherwise the marker made.
                    let (version_id, marker_id) = match asked_version {
                        Some(v) => (
                            Some(v),
                            d.delete_marker.then(|| d.version_id.clone()).flatten(),
                        ),
                        None => (None, d.version_id.filter(|_| d.delete_marker)),
                    };
                    deleted.push(DeletedObject {
                        key: Some(obj.key),
                        version_id,
                        delete_marker: d.delete_marker.then_some(true),
                        delete_marker_version_id: marker_id,
                    });
                }
            }
            Err(e) => {
                errors.push(Error {
                    code: Some(e.code().as_str().to_owned()),
                    key: Some(obj.key),
                    message: e.message().map(str::to_owned),
                    version_id: asked_version,
                });
            }
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: Some(errors),
        ..Default::default()
    }))
}
