//! The bucket-level calls of an S3 cluster (ListBuckets, CreateBucket, HeadBucket,
//! DeleteBucket), which OpenDAL's s3 service, bound to one bucket, does not make. The
//! remote store's direct mapping (`[store] bucket_mapping = "direct"`) needs them: there a
//! Pixelport bucket is a cluster bucket. Requests are signed with reqsign (SigV4, already in
//! the tree through OpenDAL) and sent with reqwest.
//!
//! [`parse_list_buckets`] is pure: the XML answer to a list, tested alone.

use std::time::Duration;

use http::{Method, StatusCode};

use super::{BucketInfo, StoreError, StoreResult};
use crate::config::StoreConfig;

/// SHA-256 of an empty payload: every call here sends no body.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub struct ClusterApi {
    http: reqwest::Client,
    /// `scheme://host[:port]` with no trailing slash.
    endpoint: url::Url,
    path_style: bool,
    signer: Option<reqsign_core::Signer<reqsign_aws_v4::Credential>>,
}

/// What a bucket-level call answered.
pub enum Answer {
    Done,
    Missing,
    Exists,
    NotEmpty,
}

impl ClusterApi {
    pub fn new(cfg: &StoreConfig) -> StoreResult<ClusterApi> {
        let endpoint = url::Url::parse(&cfg.endpoint)
            .map_err(|e| StoreError::Internal(format!("store.endpoint: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout.0.max(Duration::from_secs(1)))
            .build()
            .map_err(|e| StoreError::Internal(format!("HTTP client: {e}")))?;
        let signer = (!cfg.access_key.is_empty()).then(|| {
            reqsign_core::Signer::new(
                reqsign_core::Context::new(),
                reqsign_aws_v4::StaticCredentialProvider::new(&cfg.access_key, &cfg.secret_key),
                reqsign_aws_v4::RequestSigner::new("s3", &cfg.region),
            )
        });
        Ok(ClusterApi {
            http,
            endpoint,
            path_style: cfg.path_style,
            signer,
        })
    }

    /// The URL of a bucket (path- or virtual-host-style), or of the service for `None`.
    fn url(&self, bucket: Option<&str>) -> StoreResult<url::Url> {
        let mut u = self.endpoint.clone();
        match bucket {
            None => u.set_path("/"),
            Some(b) if self.path_style => {
                let base = u.path().trim_end_matches('/').to_owned();
                u.set_path(&format!("{base}/{b}"));
            }
            Some(b) => {
                let host = u.host_str().unwrap_or_default().to_owned();
                u.set_host(Some(&format!("{b}.{host}")))
                    .map_err(|e| StoreError::Internal(format!("store.endpoint: {e}")))?;
                u.set_path("/");
            }
        }
        Ok(u)
    }

    async fn call(
        &self,
        method: Method,
        bucket: Option<&str>,
    ) -> StoreResult<(StatusCode, bytes::Bytes)> {
        let url = self.url(bucket)?;
        let mut req = http::Request::builder()
            .method(method)
            .uri(url.as_str())
            .header("x-amz-content-sha256", EMPTY_SHA256)
            .body(())
            .map_err(StoreError::internal)?;
        let (mut parts, ()) = req.into_parts();
        if let Some(signer) = &self.signer {
            signer
                .sign(&mut parts, None)
                .await
                .map_err(|e| StoreError::Internal(format!("signing a cluster request: {e}")))?;
        }
        req = http::Request::from_parts(parts, ());
        let mut builder = self.http.request(req.method().clone(), url);
        for (name, value) in req.headers() {
            builder = builder.header(name, value);
        }
        let resp = builder
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(format!("the cluster: {e}")))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| StoreError::Unavailable(format!("the cluster: {e}")))?;
        Ok((status, body))
    }

    pub async fn list_buckets(&self) -> StoreResult<Vec<BucketInfo>> {
        let (status, body) = self.call(Method::GET, None).await?;
        if !status.is_success() {
            return Err(refused("ListBuckets", status, &body));
        }
        Ok(parse_list_buckets(&String::from_utf8_lossy(&body)))
    }

    pub async fn create_bucket(&self, name: &str) -> StoreResult<Answer> {
        let (status, body) = self.call(Method::PUT, Some(name)).await?;
        match status {
            s if s.is_success() => Ok(Answer::Done),
            StatusCode::CONFLICT => Ok(Answer::Exists),
            s => Err(refused("CreateBucket", s, &body)),
        }
    }

    pub async fn head_bucket(&self, name: &str) -> StoreResult<Answer> {
        let (status, body) = self.call(Method::HEAD, Some(name)).await?;
        match status {
            s if s.is_success() => Ok(Answer::Done),
            StatusCode::NOT_FOUND => Ok(Answer::Missing),
            s => Err(refused("HeadBucket", s, &body)),
        }
    }

    pub async fn delete_bucket(&self, name: &str) -> StoreResult<Answer> {
        let (status, body) = self.call(Method::DELETE, Some(name)).await?;
        match status {
            s if s.is_success() => Ok(Answer::Done),
            StatusCode::NOT_FOUND => Ok(Answer::Missing),
            StatusCode::CONFLICT => Ok(Answer::NotEmpty),
            s => Err(refused("DeleteBucket", s, &body)),
        }
    }
}

/// The cluster said no: its status and S3 error code, as our error.
fn refused(call: &str, status: StatusCode, body: &[u8]) -> StoreError {
    let text = String::from_utf8_lossy(body);
    let code = between(&text, "<Code>", "</Code>").unwrap_or_default();
    let message = format!("the cluster refused {call}: {status} {code}");
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        StoreError::Unavailable(message)
    } else {
        StoreError::Internal(message)
    }
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let end = s[start..].find(close)? + start;
    Some(&s[start..end])
}

/// The buckets of a ListAllMyBucketsResult, sorted by name. Bucket names are letters,
/// digits, `.` and `-` only, so no entity decoding is needed; a name that is not one is
/// skipped.
pub fn parse_list_buckets(xml: &str) -> Vec<BucketInfo> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<Bucket>") {
        let after = &rest[start + "<Bucket>".len()..];
        let Some(end) = after.find("</Bucket>") else {
            break;
        };
        let entry = &after[..end];
        rest = &after[end..];
        let Some(name) = between(entry, "<Name>", "</Name>") else {
            continue;
        };
        if crate::s3::names::validate_bucket_name(name).is_err() {
            continue;
        }
        let created_ms = between(entry, "<CreationDate>", "</CreationDate>")
            .and_then(|d| {
                time::OffsetDateTime::parse(
                    d.trim(),
                    &time::format_description::well_known::Rfc3339,
                )
                .ok()
            })
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
            .unwrap_or(0);
        out.push(BucketInfo::new(name, created_ms));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_buckets_answer_is_read_with_dates_and_bad_names_skipped() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListAllMyBucketsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Owner><ID>x</ID></Owner>
<Buckets><Bucket><Name>zeta</Name><CreationDate>2024-05-01T10:00:00.000Z</CreationDate></Bucket>
<Bucket><Name>images</Name><CreationDate>2023-01-02T03:04:05Z</CreationDate></Bucket>
<Bucket><Name>Bad_Name</Name></Bucket><Bucket><Name>no-date</Name></Bucket></Buckets>
</ListAllMyBucketsResult>"#;
        let got = parse_list_buckets(xml);
        let names: Vec<_> = got.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["images", "no-date", "zeta"]);
        assert_eq!(got[0].created_ms, 1_672_628_645_000);
        assert_eq!(got[1].created_ms, 0);
        assert!(parse_list_buckets("<Buckets></Buckets>").is_empty());
        assert!(parse_list_buckets("<Bucket><Name>open").is_empty());
    }

    #[test]
    fn bucket_urls_follow_the_addressing_style() {
        let mut cfg = StoreConfig {
            endpoint: "http://127.0.0.1:9000".into(),
            ..StoreConfig::default()
        };
        let api = ClusterApi::new(&cfg).unwrap();
        assert_eq!(api.url(None).unwrap().as_str(), "http://127.0.0.1:9000/");
        assert_eq!(
            api.url(Some("images")).unwrap().as_str(),
            "http://127.0.0.1:9000/images"
        );
        cfg.endpoint = "https://s3.example.com".into();
        cfg.path_style = false;
        let api = ClusterApi::new(&cfg).unwrap();
        assert_eq!(
            api.url(Some("images")).unwrap().as_str(),
            "https://images.s3.example.com/"
        );
    }
}
