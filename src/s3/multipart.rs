//! Multipart uploads: create, upload part (and part copy), complete, abort, and the two listings.

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::get::to_read_range;
use super::put::{Declared, copy_source};
use super::sse;
use super::{PixelportS3, attrs_from, check_key, invalid_argument, strong_etag, timestamp};
use crate::store::spool::ChecksumSet;
use crate::store::{CompletedPart as StoreCompleted, MAX_PART_NUMBER, StoreError, UploadChecksum};

fn check_part_number(n: i32) -> S3Result<()> {
    if !(1..=MAX_PART_NUMBER).contains(&n) {
        return Err(invalid_argument(format!(
            "Part number must be an integer between 1 and {MAX_PART_NUMBER}, not {n}"
        )));
    }
    Ok(())
}

/// The checksum CreateMultipartUpload asks for, checked as S3 checks it: a type needs an
/// algorithm, and FULL_OBJECT works with the CRCs only.
fn upload_checksum(
    algorithm: Option<&str>,
    kind: Option<&str>,
) -> S3Result<Option<UploadChecksum>> {
    let full_object = match kind {
        None | Some(ChecksumType::COMPOSITE) => false,
        Some(ChecksumType::FULL_OBJECT) => true,
        Some(other) => {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                format!("Value for x-amz-checksum-type header is invalid: `{other}`"),
            ));
        }
    };
    let Some(algorithm) = algorithm else {
        if kind.is_some() {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                "The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm header.",
            ));
        }
        return Ok(None);
    };
    let upper = algorithm.to_ascii_uppercase();
    // CRC64NVME has no COMPOSITE form: S3 makes it FULL_OBJECT when no type is given.
    let full_object = full_object || (upper == "CRC64NVME" && kind.is_none());
    if full_object && !matches!(upper.as_str(), "CRC32" | "CRC32C" | "CRC64NVME") {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            format!(
                "The FULL_OBJECT checksum type cannot be used with the {algorithm} checksum algorithm."
            ),
        ));
    }
    if !full_object && upper == "CRC64NVME" && kind.is_some() {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "The COMPOSITE checksum type cannot be used with the crc64nvme checksum algorithm.",
        ));
    }
    Ok(Some(UploadChecksum {
        algorithm: algorithm.to_owned(),
        full_object,
    }))
}

/// A whole-object checksum sent with CompleteMultipartUpload must be the one the object
/// will carry (FULL_OBJECT: the CRC of the body; COMPOSITE: `…-N`), else 400 BadDigest and
/// nothing is completed. Only the upload's own algorithm is compared; S3 ignores others.
fn check_whole_checksum(
    upload: &crate::store::UploadInfo,
    parts: &[&crate::store::PartInfo],
    declared: &crate::store::Checksums,
) -> S3Result<()> {
    use crate::store::spool::{composite_checksum, full_object_checksum};
    let Some(alg) = upload.checksum_algorithm.as_deref() else {
        return Ok(());
    };
    let pick = |c: &crate::store::Checksums| -> Option<String> {
        match alg.to_ascii_uppercase().as_str() {
            "CRC32" => c.crc32.clone(),
            "CRC32C" => c.crc32c.clone(),
            "SHA1" => c.sha1.clone(),
            "SHA256" => c.sha256.clone(),
            "CRC64NVME" => c.crc64nvme.clone(),
            _ => None,
        }
    };
    let Some(sent) = pick(declared) else {
        return Ok(());
    };
    let made = if upload.full_object {
        let sums: Vec<_> = parts.iter().map(|p| (&p.checksums, p.size)).collect();
        full_object_checksum(alg, &sums)
    } else {
        let sums: Vec<_> = parts.iter().map(|p| &p.checksums).collect();
        composite_checksum(alg, &sums)
    };
    // Clients write a COMPOSITE value with or without its `-N`.
    let bare = |v: &str| v.split('-').next().unwrap_or_default().to_owned();
    match made.as_ref().and_then(pick) {
        Some(m) if bare(&m) == bare(&sent) => Ok(()),
        made => Err(S3Error::with_message(
            S3ErrorCode::BadDigest,
            format!(
                "The {} you specified did not match the calculated checksum (declared {sent}, computed {}).",
                alg.to_ascii_uppercase(),
                made.as_deref()
                    .unwrap_or("nothing: a part was uploaded without one")
            ),
        )),
    }
}

pub async fn create(
    s: &PixelportS3,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let input = req.input;
    check_key(&input.key)?;
    let customer = sse::customer_key!(input, &req.headers, &req.extensions)?;
    let encrypt = sse::for_write(
        s,
        &input.bucket,
        input.server_side_encryption.as_ref(),
        customer,
    )?;
    let mut attrs = attrs_from(
        input.content_type,
        input.cache_control,
        input.content_disposition,
        input.content_encoding,
        input.content_language,
        input.expires,
        input.metadata,
    );
    attrs.tags = super::tagging_ops::header_tags(s, input.tagging.as_deref())?;
    attrs.public_read = super::acl_ops::upload_public_read(
        s,
        &input.bucket,
        input.acl.as_ref().map(|a| a.as_str()),
    )?;
    attrs.owner = super::owner::requester(&req.extensions);
    encrypt.apply(&mut attrs);
    // The upload keeps only the key's salted hash; each UploadPart brings the key again.
    attrs.customer_key = None;
    let checksum = upload_checksum(
        input.checksum_algorithm.as_ref().map(|a| a.as_str()),
        input.checksum_type.as_ref().map(|t| t.as_str()),
    )?;
    let kind = checksum.as_ref().map(|c| {
        ChecksumType::from_static(if c.full_object {
            ChecksumType::FULL_OBJECT
        } else {
            ChecksumType::COMPOSITE
        })
    });
    let id = s
        .store
        .create_upload(&input.bucket, &input.key, attrs, checksum)
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    let sse = encrypt.answer();
    Ok(S3Response::new(CreateMultipartUploadOutput {
        server_side_encryption: sse.server_side_encryption,
        sse_customer_algorithm: sse.sse_customer_algorithm,
        sse_customer_key_md5: sse.sse_customer_key_md5,
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(id),
        checksum_type: kind,
        checksum_algorithm: input.checksum_algorithm,
        ..Default::default()
    }))
}

pub async fn upload_part(
    s: &PixelportS3,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let ext = req.extensions;
    let input = req.input;
    check_part_number(input.part_number)?;
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
    // Fail fast on an unknown upload, or a missing or wrong SSE-C key, before reading the body.
    let (upload, _) = s
        .store
        .list_parts(&input.bucket, &input.key, &input.upload_id)
        .await
        .map_err(|e| s.err(e, &ext))?;
    let customer = sse::customer_key!(input, &req.headers, &ext)?;
    sse::may_read(s, upload.attrs.encryption.as_ref(), customer.as_ref(), &ext)?;
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
    let seal = s
        .store
        .data_key(upload.attrs.encryption.as_ref(), customer.as_ref())
        .map_err(|e| s.err(e, &ext))?;
    let spooled = s
        .spool
        .spool_sealed(body, declared.want, s.max_object_size, seal)
        .await
        .map_err(|e| s.err(e, &ext))?;
    declared
        .verify(&spooled, req.trailing_headers)
        .map_err(|e| s.err(e, &ext))?;
    let part = s
        .store
        .put_part(
            &input.bucket,
            &input.key,
            &input.upload_id,
            input.part_number,
            spooled,
            customer.as_ref(),
        )
        .await
        .map_err(|e| s.err(e, &ext))?;
    let c = part.checksums;
    let sse = sse::answer(upload.attrs.encryption.as_ref(), customer.as_ref());
    Ok(S3Response::new(UploadPartOutput {
        server_side_encryption: sse.server_side_encryption,
        sse_customer_algorithm: sse.sse_customer_algorithm,
        sse_customer_key_md5: sse.sse_customer_key_md5,
        e_tag: Some(strong_etag(&part.etag)),
        checksum_crc32: c.crc32,
        checksum_crc32c: c.crc32c,
        checksum_sha1: c.sha1,
        checksum_sha256: c.sha256,
        checksum_crc64nvme: c.crc64nvme,
        ..Default::default()
    }))
}

/// Parses `bytes=first-last` as S3 accepts it for x-amz-copy-source-range.
fn parse_copy_range(v: &str) -> S3Result<Range> {
    let bad = || {
        invalid_argument(format!(
            "The x-amz-copy-source-range `{v}` must look like bytes=first-last"
        ))
    };
    let rest = v.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = rest.split_once('-').ok_or_else(bad)?;
    let first: u64 = a.parse().map_err(|_| bad())?;
    let last: u64 = b.parse().map_err(|_| bad())?;
    if last < first {
        return Err(bad());
    }
    Ok(Range::Int {
        first,
        last: Some(last),
    })
}

pub async fn upload_part_copy(
    s: &PixelportS3,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let ext = req.extensions;
    let input = req.input;
    check_part_number(input.part_number)?;
    let (src_bucket, src_key, src_version) = copy_source(&input.copy_source)?;
    let (upload, _) = s
        .store
        .list_parts(&input.bucket, &input.key, &input.upload_id)
        .await
        .map_err(|e| s.err(e, &ext))?;
    let customer = sse::customer_key!(input, &req.headers, &ext)?;
    sse::may_read(s, upload.attrs.encryption.as_ref(), customer.as_ref(), &ext)?;
    let source_key = sse::customer_key!(copy_source input, &req.headers, &ext)?;
    let src = super::head_version(&s.store, &src_bucket, &src_key, src_version.as_deref())
        .await
        .map_err(|e| s.err(e, &ext))?;
    sse::may_read(s, src.attrs.encryption.as_ref(), source_key.as_ref(), &ext)?;
    super::get::check_conditions(
        &src,
        input.copy_source_if_match.as_ref(),
        input.copy_source_if_none_match.as_ref(),
        input.copy_source_if_modified_since.as_ref(),
        input.copy_source_if_unmodified_since.as_ref(),
    )
    .map_err(|e| {
        if e.code() == &s3s::S3ErrorCode::NotModified {
            s3_error!(PreconditionFailed, "The copy source was not modified")
        } else {
            e
        }
    })?;
    let range = input
        .copy_source_range
        .as_deref()
        .map(parse_copy_range)
        .transpose()?;
    let range = range.as_ref().map(to_read_range);
    if let Some(r) = range
        && r.resolve(src.size)
            .is_none_or(|span| span.end - span.start != r_len(r))
    {
        return Err(s.err(StoreError::InvalidRange { size: src.size }, &ext));
    }
    let read = super::read_object(
        &s.store,
        &src_bucket,
        &src_key,
        src_version.as_deref(),
        range,
        source_key.as_ref(),
    )
    .await;
    let (_, stream, _) = read.map_err(|e| s.err(e, &ext))?;
    let seal = s
        .store
        .data_key(upload.attrs.encryption.as_ref(), customer.as_ref())
        .map_err(|e| s.err(e, &ext))?;
    let spooled = s
        .spool
        .spool_sealed(stream, ChecksumSet::default(), s.max_object_size, seal)
        .await
        .map_err(|e| s.err(e, &ext))?;
    let part = s
        .store
        .put_part(
            &input.bucket,
            &input.key,
            &input.upload_id,
            input.part_number,
            spooled,
            customer.as_ref(),
        )
        .await
        .map_err(|e| s.err(e, &ext))?;
    let sse = sse::answer(upload.attrs.encryption.as_ref(), customer.as_ref());
    Ok(S3Response::new(UploadPartCopyOutput {
        server_side_encryption: sse.server_side_encryption,
        sse_customer_algorithm: sse.sse_customer_algorithm,
        sse_customer_key_md5: sse.sse_customer_key_md5,
        copy_part_result: Some(CopyPartResult {
            e_tag: Some(strong_etag(&part.etag)),
            last_modified: Some(timestamp(part.last_modified_ms)),
            ..Default::default()
        }),
        copy_source_version_id: src_version,
        ..Default::default()
    }))
}

fn r_len(r: crate::store::ReadRange) -> u64 {
    match r {
        crate::store::ReadRange::FromTo {
            first,
            last: Some(last),
        } => last - first + 1,
        _ => 0,
    }
}

pub async fn complete(
    s: &PixelportS3,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let input = req.input;
    let Some(parts) = input.multipart_upload.and_then(|m| m.parts) else {
        return Err(s3_error!(
            MalformedXML,
            "The XML you provided did not list any parts"
        ));
    };
    let mut list = Vec::with_capacity(parts.len());
    for p in parts {
        let (Some(n), Some(etag)) = (p.part_number, p.e_tag) else {
            return Err(s3_error!(
                MalformedXML,
                "Every part needs a PartNumber and an ETag"
            ));
        };
        list.push(StoreCompleted {
            part_number: n,
            etag: etag.value().to_owned(),
        });
    }
    // The assembled object obeys the same size limit as a single PUT.
    let (upload, stored) = s
        .store
        .list_parts(&input.bucket, &input.key, &input.upload_id)
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    let chosen: Vec<&crate::store::PartInfo> = list
        .iter()
        .filter_map(|c| stored.iter().find(|p| p.part_number == c.part_number))
        .collect();
    let total: u64 = chosen.iter().map(|p| p.size).sum();
    let declared = crate::store::Checksums {
        crc32: input.checksum_crc32.clone(),
        crc32c: input.checksum_crc32c.clone(),
        sha1: input.checksum_sha1.clone(),
        sha256: input.checksum_sha256.clone(),
        crc64nvme: input.checksum_crc64nvme.clone(),
    };
    check_whole_checksum(&upload, &chosen, &declared)?;
    if total > s.max_object_size {
        return Err(s.err(
            StoreError::EntityTooLarge {
                max: s.max_object_size,
            },
            &req.extensions,
        ));
    }
    let cond = super::put::write_condition(input.if_match.as_ref(), input.if_none_match.as_ref());
    let info = s
        .store
        .complete_upload_if(&input.bucket, &input.key, &input.upload_id, &list, &cond)
        .await
        .map_err(|e| s.err(e, &req.extensions))?
        .map_err(super::put::precondition_failed)?;
    s.changed(&input.bucket, &input.key);
    let c = &info.checksums;
    let sse = sse::answer(info.attrs.encryption.as_ref(), None);
    Ok(S3Response::new(CompleteMultipartUploadOutput {
        server_side_encryption: sse.server_side_encryption,
        bucket: Some(input.bucket.clone()),
        key: Some(input.key.clone()),
        e_tag: Some(strong_etag(&info.etag)),
        location: Some(format!("/{}/{}", input.bucket, input.key)),
        checksum_type: super::checksum_type(c, info.parts),
        checksum_crc32: c.crc32.clone(),
        checksum_crc32c: c.crc32c.clone(),
        checksum_sha1: c.sha1.clone(),
        checksum_sha256: c.sha256.clone(),
        checksum_crc64nvme: c.crc64nvme.clone(),
        version_id: info.version_id.clone(),
        ..Default::default()
    }))
}

pub async fn abort(
    s: &PixelportS3,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let input = req.input;
    s.store
        .abort_upload(&input.bucket, &input.key, &input.upload_id)
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

pub async fn list_parts(
    s: &PixelportS3,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let input = req.input;
    let (upload, parts) = s
        .store
        .list_parts(&input.bucket, &input.key, &input.upload_id)
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    let max = input.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
    let marker = input.part_number_marker.unwrap_or(0);
    let rest: Vec<_> = parts
        .into_iter()
        .filter(|p| p.part_number > marker)
        .collect();
    let truncated = rest.len() > max;
    let page: Vec<_> = rest.into_iter().take(max).collect();
    let next = page.last().map(|p| p.part_number);
    let out = page
        .into_iter()
        .map(|p| Part {
            part_number: Some(p.part_number),
            size: Some(p.size as i64),
            e_tag: Some(strong_etag(&p.etag)),
            last_modified: Some(timestamp(p.last_modified_ms)),
            checksum_crc32: p.checksums.crc32,
            checksum_crc32c: p.checksums.crc32c,
            checksum_sha1: p.checksums.sha1,
            checksum_sha256: p.checksums.sha256,
            checksum_crc64nvme: p.checksums.crc64nvme,
        })
        .collect();
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(input.upload_id),
        max_parts: Some(max as i32),
        part_number_marker: Some(marker),
        next_part_number_marker: next,
        is_truncated: Some(truncated),
        parts: Some(out),
        checksum_algorithm: upload.checksum_algorithm.map(ChecksumAlgorithm::from),
        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
        ..Default::default()
    }))
}

pub async fn list_uploads(
    s: &PixelportS3,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let input = req.input;
    let prefix = input.prefix.clone().unwrap_or_default();
    let uploads = s
        .store
        .list_uploads(&input.bucket, &prefix)
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    let max = input.max_uploads.unwrap_or(1000).clamp(0, 1000) as usize;
    let key_marker = input.key_marker.clone().unwrap_or_default();
    let rest: Vec<_> = uploads
        .into_iter()
        .filter(|u| key_marker.is_empty() || u.key > key_marker)
        .collect();
    let truncated = rest.len() > max;
    let page: Vec<_> = rest.into_iter().take(max).collect();
    let next_key = page.last().map(|u| u.key.clone());
    let next_id = page.last().map(|u| u.upload_id.clone());
    let list = page
        .into_iter()
        .map(|u| MultipartUpload {
            key: Some(u.key),
            upload_id: Some(u.upload_id),
            initiated: Some(timestamp(u.initiated_ms)),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            checksum_algorithm: u.checksum_algorithm.map(ChecksumAlgorithm::from),
            ..Default::default()
        })
        .collect();
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        prefix: input.prefix,
        key_marker: input.key_marker,
        upload_id_marker: input.upload_id_marker,
        max_uploads: Some(max as i32),
        is_truncated: Some(truncated),
        next_key_marker: if truncated { next_key } else { None },
        next_upload_id_marker: if truncated { next_id } else { None },
        uploads: Some(list),
        ..Default::default()
    }))
}
