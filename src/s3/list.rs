//! Listings: ListObjects (V1) and ListObjectsV2 from `Store::list_objects` pages, and
//! ListObjectVersions (versions and delete markers) from `Store::list_versions` pages.

use base64::Engine;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::acl_ops::object_owner;
use super::bucket_access::BucketAccess;
use super::{PixelportS3, acl, invalid_argument, strong_etag, timestamp};
use crate::store::{ListPage, ListQuery, VersionQuery};

const MAX_KEYS: i32 = 1000;

fn max_keys(v: Option<i32>) -> S3Result<usize> {
    match v {
        None => Ok(MAX_KEYS as usize),
        Some(n) if n < 0 => Err(invalid_argument(format!(
            "max-keys must be between 0 and 2147483647, not {n}"
        ))),
        Some(n) => Ok(n.min(MAX_KEYS) as usize),
    }
}

/// Percent-encodes like S3's `encoding-type=url`: all but unreserved characters and `/`.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct Enc(bool);

impl Enc {
    fn new(t: &Option<EncodingType>) -> Enc {
        Enc(t.as_ref().is_some_and(|t| t.as_str() == EncodingType::URL))
    }
    fn s(&self, v: String) -> String {
        if self.0 { url_encode(&v) } else { v }
    }
    fn o(&self, v: Option<String>) -> Option<String> {
        v.map(|v| self.s(v))
    }
}

/// The page's objects, each with its Owner when `owners` gives the bucket's access settings
/// (ListObjects V1 always; V2 with `fetch-owner`).
fn objects(page: &ListPage, enc: &Enc, owners: Option<&BucketAccess>) -> Vec<Object> {
    page.objects
        .iter()
        .map(|o| Object {
            key: Some(enc.s(o.key.clone())),
            size: Some(o.size as i64),
            e_tag: Some(strong_etag(&o.etag)),
            last_modified: Some(timestamp(o.last_modified_ms)),
            storage_class: Some(ObjectStorageClass::from_static(
                ObjectStorageClass::STANDARD,
            )),
            owner: owners.map(|a| acl::owner(&object_owner(a, o))),
            ..Default::default()
        })
        .collect()
}

fn prefixes(page: &ListPage, enc: &Enc) -> Vec<CommonPrefix> {
    page.common_prefixes
        .iter()
        .map(|p| CommonPrefix {
            prefix: Some(enc.s(p.clone())),
        })
        .collect()
}

pub async fn list_objects(
    s: &PixelportS3,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let input = req.input;
    let q = ListQuery {
        prefix: input.prefix.clone().unwrap_or_default(),
        delimiter: input.delimiter.clone(),
        after: input.marker.clone().filter(|m| !m.is_empty()),
        max_keys: max_keys(input.max_keys)?,
    };
    let page = s
        .store
        .list_objects(&input.bucket, &q)
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    let enc = Enc::new(&input.encoding_type);
    let contents = objects(&page, &enc, Some(&s.buckets.access(&input.bucket)));
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(input.bucket),
        prefix: Some(enc.s(q.prefix.clone())),
        marker: Some(enc.s(input.marker.unwrap_or_default())),
        max_keys: Some(input.max_keys.unwrap_or(MAX_KEYS)),
        is_truncated: Some(page.is_truncated),
        contents: Some(contents),
        common_prefixes: Some(prefixes(&page, &enc)),
        delimiter: enc.o(input.delimiter),
        next_marker: if page.is_truncated {
            enc.o(page.last.clone())
        } else {
            None
        },
        encoding_type: input.encoding_type,
        request_charged: None,
    }))
}

fn encode_token(last: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last.as_bytes())
}

fn decode_token(token: &str) -> S3Result<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|v| String::from_utf8(v).ok())
        .ok_or_else(|| invalid_argument("The continuation token provided is incorrect"))
}

pub async fn list_objects_v2(
    s: &PixelportS3,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let input = req.input;
    let token_key = input
        .continuation_token
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(decode_token)
        .transpose()?;
    let after = match (
        token_key,
        input.start_after.clone().filter(|s| !s.is_empty()),
    ) {
        (Some(t), Some(sa)) => Some(t.max(sa)),
        (t, sa) => t.or(sa),
    };
    let q = ListQuery {
        prefix: input.prefix.clone().unwrap_or_default(),
        delimiter: input.delimiter.clone(),
        after,
        max_keys: max_keys(input.max_keys)?,
    };
    let page = s
        .store
        .list_objects(&input.bucket, &q)
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    let enc = Enc::new(&input.encoding_type);
    let access = (input.fetch_owner == Some(true)).then(|| s.buckets.access(&input.bucket));
    let contents = objects(&page, &enc, access.as_deref());
    let common = prefixes(&page, &enc);
    Ok(S3Response::new(ListObjectsV2Output {
        name: Some(input.bucket),
        prefix: Some(enc.s(q.prefix.clone())),
        max_keys: Some(input.max_keys.unwrap_or(MAX_KEYS)),
        key_count: Some((contents.len() + common.len()) as i32),
        continuation_token: input.continuation_token,
        is_truncated: Some(page.is_truncated),
        next_continuation_token: if page.is_truncated {
            page.last.as_deref().map(encode_token)
        } else {
            None
        },
        contents: Some(contents),
        common_prefixes: Some(common),
        delimiter: enc.o(input.delimiter),
        encoding_type: input.encoding_type,
        start_after: enc.o(input.start_after),
        request_charged: None,
    }))
}

pub async fn list_object_versions(
    s: &PixelportS3,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    let input = req.input;
    let version_marker = input.version_id_marker.clone().filter(|m| !m.is_empty());
    let key_marker = input.key_marker.clone().filter(|m| !m.is_empty());
    if version_marker.is_some() && key_marker.is_none() {
        return Err(invalid_argument(
            "A version-id marker cannot be specified without a key marker.",
        ));
    }
    if let Some(v) = &version_marker {
        super::version_arg(Some(v))?;
    }
    let q = VersionQuery {
        prefix: input.prefix.clone().unwrap_or_default(),
        delimiter: input.delimiter.clone(),
        key_marker,
        version_marker,
        max_keys: max_keys(input.max_keys)?,
    };
    let page = s
        .store
        .list_versions(&input.bucket, &q)
        .await
        .map_err(|e| s.err(e, &req.extensions))?;
    let enc = Enc::new(&input.encoding_type);
    let access = s.buckets.access(&input.bucket);
    let mut versions = Vec::new();
    let mut markers = Vec::new();
    for e in page.entries {
        let o = e.info;
        if e.delete_marker {
            markers.push(DeleteMarkerEntry {
                key: Some(enc.s(o.key.clone())),
                version_id: Some(o.version_name().to_owned()),
                is_latest: Some(e.is_latest),
                last_modified: Some(timestamp(o.last_modified_ms)),
                owner: Some(acl::owner(&object_owner(&access, &o))),
            });
            continue;
        }
        versions.push(ObjectVersion {
            key: Some(enc.s(o.key.clone())),
            size: Some(o.size as i64),
            e_tag: Some(strong_etag(&o.etag)),
            last_modified: Some(timestamp(o.last_modified_ms)),
            is_latest: Some(e.is_latest),
            version_id: Some(o.version_name().to_owned()),
            storage_class: Some(ObjectVersionStorageClass::from_static(
                ObjectVersionStorageClass::STANDARD,
            )),
            owner: Some(acl::owner(&object_owner(&access, &o))),
            ..Default::default()
        });
    }
    let common_prefixes = page
        .common_prefixes
        .into_iter()
        .map(|p| CommonPrefix {
            prefix: Some(enc.s(p)),
        })
        .collect();
    Ok(S3Response::new(ListObjectVersionsOutput {
        name: Some(input.bucket),
        prefix: Some(enc.s(q.prefix.clone())),
        key_marker: Some(enc.s(input.key_marker.unwrap_or_default())),
        version_id_marker: Some(input.version_id_marker.unwrap_or_default()),
        max_keys: Some(input.max_keys.unwrap_or(MAX_KEYS)),
        is_truncated: Some(page.is_truncated),
        next_key_marker: enc.o(page.next_key_marker),
        next_version_id_marker: page.next_version_marker,
        versions: Some(versions),
        delete_markers: Some(markers),
        common_prefixes: Some(common_prefixes),
        delimiter: enc.o(input.delimiter),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding_keeps_slashes_and_escapes_the_rest() {
        assert_eq!(url_encode("a b/c+d%é"), "a%20b/c%2Bd%25%C3%A9");
        assert_eq!(decode_token(&encode_token("日本/x")).unwrap(), "日本/x");
        assert!(decode_token("***").is_err());
    }
}
