//! The S3 authentication edges s3s 0.14 leaves open: the clock-skew window of header-signed
//! requests and a constant-time SigV2 signature check.
//!
//! What s3s 0.14 already does (read in its `ops/signature.rs`): SigV4 header auth refuses an
//! `x-amz-date` more than `presigned_url_max_skew_time_secs` (900 s by default, the value we
//! run with) from its clock with 403 RequestTimeTooSkewed, before looking up the key, and
//! compares V4 signatures with `subtle`; presigned URLs keep their own expiry (V2 `Expires`,
//! V4 `X-Amz-Expires`). What it does not: SigV2 header auth (`Authorization: AWS AK:sig`)
//! has no Date window, so a captured request replays forever, and V2 signatures (header and
//! presigned) are compared with `!=`, whose time depends on the length of the matching prefix.
//!
//! Two checks close that:
//! - [`check_request_time`] puts every header-signed request, V2 or V4, in AWS's 15-minute
//!   window. `access::PublicRead` runs it on every signed request, after s3s has verified the
//!   signature (the only hook s3s offers to a service built with `set_auth`/`set_access`).
//! - [`precheck`] verifies SigV2 signatures in constant time (HMAC's `verify_slice`) and
//!   applies the window *before* the request reaches s3s, so s3s only ever compares equal
//!   strings. s3s has no hook ahead of its own compare, so the listener must call it in front
//!   of the s3s service (see [`refusal`]).
//!
//! What must stay true: [`string_to_sign`] is s3s's `sig_v2::create_string_to_sign` for
//! path-style requests (the service is built without an `S3Host`), so a request s3s would
//! accept is never refused here; the tests run both on the same requests. Whenever this
//! module cannot decide (unknown key, no date, unparsable fields, an expired presigned URL)
//! it lets the request through for s3s to refuse, which s3s does before comparing anything.

use base64::Engine;
use hmac::{Hmac, Mac};
use http::{HeaderMap, Method, Uri};
use s3s::{S3Error, S3ErrorCode, S3Result};
use sha1::Sha1;
use time::OffsetDateTime;

use super::access::KeyRing;

/// AWS's allowed difference between a request's time and ours, either way.
pub const MAX_SKEW: time::Duration = time::Duration::minutes(15);

/// The sub-resources SigV2 signs (s3s's list, sorted as it is).
const SIGNED_SUBRESOURCES: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "cors",
    "defaultObjectAcl",
    "delete",
    "inventory",
    "lifecycle",
    "location",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "partNumber",
    "policy",
    "replication",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "select",
    "select-type",
    "storageClass",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
];

/// How a request says who signed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderAuth {
    V2,
    V4,
}

fn header_auth(headers: &HeaderMap) -> Option<HeaderAuth> {
    let auth = unique_header(headers, "authorization")?;
    if auth.starts_with("AWS4-HMAC-SHA256 ") {
        Some(HeaderAuth::V4)
    } else if auth.starts_with("AWS ") {
        Some(HeaderAuth::V2)
    } else {
        None
    }
}

/// A header's value when it is present once and is UTF-8 (as s3s's `get_unique` reads it).
fn unique_header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    if all.next().is_some() {
        return None;
    }
    std::str::from_utf8(first.as_bytes()).ok()
}

/// Parses a request time: an HTTP date as SigV2 clients send in `Date`/`x-amz-date`
/// (RFC 1123/2822, with `GMT` or a numeric zone) or SigV4's `20130524T000000Z`.
pub fn parse_request_time(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc2822) {
        return Some(t);
    }
    let basic = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(s, basic)
        .ok()
        .map(time::PrimitiveDateTime::assume_utc)
}

/// AWS's RequestTimeTooSkewed (403) when `request` is more than [`MAX_SKEW`] from `now`.
pub fn check_skew(request: OffsetDateTime, now: OffsetDateTime) -> S3Result<()> {
    if (now - request).abs() > MAX_SKEW {
        return Err(S3Error::with_message(
            S3ErrorCode::RequestTimeTooSkewed,
            format!(
                "The difference between the request time and the current time is too large \
                 (request time {request}, server time {now}, at most {} minutes allowed).",
                MAX_SKEW.whole_minutes()
            ),
        ));
    }
    Ok(())
}

fn invalid_date() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::AccessDenied,
        "AWS authentication requires a valid Date or x-amz-date header",
    )
}

/// The replay window of header-signed requests (SigV2 and SigV4 alike): the request's
/// `x-amz-date`, else its `Date`, must be within [`MAX_SKEW`] of `now`. Requests signed in
/// the query (presigned URLs) and anonymous ones are not concerned: presigned URLs carry
/// their own expiry, which s3s checks.
pub fn check_request_time(headers: &HeaderMap, now: OffsetDateTime) -> S3Result<()> {
    if header_auth(headers).is_none() {
        return Ok(());
    }
    let date = unique_header(headers, "x-amz-date")
        .or_else(|| unique_header(headers, "date"))
        .ok_or_else(invalid_date)?;
    check_skew(parse_request_time(date).ok_or_else(invalid_date)?, now)
}

/// Whether the string to sign is for `Authorization` header auth or a presigned URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    HeaderAuth,
    PresignedUrl,
}

/// A request's parts as SigV2 reads them: lowercase header names and decoded query pairs,
/// each sorted by name, stably (as s3s's `OrderedHeaders` and `OrderedQs`).
pub struct Signed<'a> {
    method: &'a Method,
    path: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    query: Vec<(String, String)>,
}

impl<'a> Signed<'a> {
    pub fn new(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        let mut hs: Vec<(&str, &str)> = headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str(), std::str::from_utf8(v.as_bytes()).ok()?)))
            .collect();
        hs.sort_by(|a, b| a.0.cmp(b.0));
        let mut query: Vec<(String, String)> = uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        query.sort_by(|a, b| a.0.cmp(&b.0));
        Signed {
            method,
            path: uri.path(),
            headers: hs,
            query,
        }
    }

    fn header(&self, name: &str) -> Option<&'a str> {
        unique(&self.headers, name).copied()
    }

    fn param(&self, name: &str) -> Option<&str> {
        unique(&self.query, name).map(String::as_str)
    }
}

/// The value of `name` when it occurs exactly once in `sorted`.
fn unique<'s, K: AsRef<str>, V>(sorted: &'s [(K, V)], name: &str) -> Option<&'s V> {
    let start = sorted.partition_point(|(k, _)| k.as_ref() < name);
    match &sorted[start..] {
        [(k, v), rest @ ..] if k.as_ref() == name => match rest.first() {
            Some((next, _)) if next.as_ref() == name => None,
            _ => Some(v),
        },
        _ => None,
    }
}

/// SigV2's StringToSign, exactly as s3s builds it for a path-style request.
pub fn string_to_sign(mode: Mode, r: &Signed<'_>) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(r.method.as_str());
    out.push('\n');
    out.push_str(r.header("content-md5").unwrap_or_default());
    out.push('\n');
    out.push_str(r.header("content-type").unwrap_or_default());
    out.push('\n');
    match mode {
        // "If you include the x-amz-date header, use the empty string for the Date."
        Mode::HeaderAuth if r.header("x-amz-date").is_some() => {}
        Mode::HeaderAuth => out.push_str(r.header("date").unwrap_or_default()),
        Mode::PresignedUrl => out.push_str(r.param("Expires").unwrap_or_default()),
    }
    out.push('\n');
    let mut last = "";
    for &(name, _) in &r.headers {
        if !name.starts_with("x-amz-") || name == last {
            continue;
        }
        last = name;
        out.push_str(name);
        out.push(':');
        let values: Vec<&str> = r
            .headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.trim())
            .collect();
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push_str(r.path);
    let mut first = true;
    for name in SIGNED_SUBRESOURCES {
        if let Some(v) = r.param(name) {
            out.push(if first { '?' } else { '&' });
            first = false;
            out.push_str(name);
            if !v.is_empty() {
                out.push('=');
                out.push_str(v);
            }
        }
    }
    out
}

/// Whether `provided` (base64, as the client sent it) is the HMAC-SHA1 of `string_to_sign`
/// under `secret`. The comparison takes the same time wherever the first differing byte is
/// (`Mac::verify_slice` compares with `subtle`); only the provided value's length, which is
/// public, can end it early.
pub fn signature_matches(secret: &str, string_to_sign: &str, provided: &str) -> bool {
    let Ok(provided) = base64::engine::general_purpose::STANDARD.decode(provided.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(&provided).is_ok()
}

fn mismatch() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::SignatureDoesNotMatch,
        "The request signature we calculated does not match the signature you provided. \
         Check your key and signing method.",
    )
}

/// `%XX` decoding as s3s applies it to a presigned V2 `Signature` (after query decoding):
/// malformed escapes stay as they are, `+` is not a space, and the result must be UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Checks a SigV2-signed request (header or presigned) before s3s does: the skew window for
/// header auth and the signature, in constant time. `Ok` for anything that is not SigV2 or
/// that this check leaves to s3s (see the module notes).
pub fn precheck(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    keys: &KeyRing,
    now: OffsetDateTime,
) -> S3Result<()> {
    let r = Signed::new(method, uri, headers);
    // s3s's order: a `Signature` parameter makes it a presigned V2 request.
    if r.query.iter().any(|(k, _)| k == "Signature") {
        let (Some(access_key), Some(expires), Some(signature)) = (
            r.param("AWSAccessKeyId"),
            r.param("Expires"),
            r.param("Signature"),
        ) else {
            return Ok(());
        };
        let Some(expires) = expires
            .parse::<i64>()
            .ok()
            .filter(|&t| t >= 0)
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        else {
            return Ok(());
        };
        // Expired: s3s refuses it before comparing signatures.
        if now > expires {
            return Ok(());
        }
        let (Some(signature), Some(secret)) = (percent_decode(signature), keys.secret(access_key))
        else {
            return Ok(());
        };
        return if signature_matches(&secret, &string_to_sign(Mode::PresignedUrl, &r), &signature) {
            Ok(())
        } else {
            Err(mismatch())
        };
    }
    let Some((access_key, signature)) = r
        .header("authorization")
        .and_then(|a| a.strip_prefix("AWS "))
        .and_then(|a| a.split_once(':'))
    else {
        return Ok(());
    };
    if r.header("date").is_none() && r.header("x-amz-date").is_none() {
        return Ok(());
    }
    check_request_time(headers, now)?;
    let Some(secret) = keys.secret(access_key) else {
        return Ok(());
    };
    if signature_matches(&secret, &string_to_sign(Mode::HeaderAuth, &r), signature) {
        Ok(())
    } else {
        Err(mismatch())
    }
}

/// For the S3 listener, in front of the s3s service: the error response to send instead of
/// passing the request on, when [`precheck`] refuses it.
pub fn refusal<B>(req: &http::Request<B>, keys: &KeyRing) -> Option<http::Response<s3s::Body>> {
    let err = precheck(
        req.method(),
        req.uri(),
        req.headers(),
        keys,
        OffsetDateTime::now_utc(),
    )
    .err()?;
    match err.to_http_response() {
        Ok(resp) => Some(resp),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize an authentication error");
            let mut resp = http::Response::new(s3s::Body::empty());
            *resp.status_mut() = http::StatusCode::FORBIDDEN;
            Some(resp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AK: &str = "AKIAIOSFODNN7EXAMPLE";
    const SK: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn sign(sts: &str) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(SK.as_bytes()).unwrap();
        mac.update(sts.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    fn sts(mode: Mode, method: &str, uri: &str, headers: &[(&str, &str)]) -> String {
        let (m, u, h) = parts(method, uri, headers);
        string_to_sign(mode, &Signed::new(&m, &u, &h))
    }

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> (Method, Uri, HeaderMap) {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        (method.parse().unwrap(), uri.parse().unwrap(), h)
    }

    /// AWS's documented SigV2 examples (RESTAuthentication), in path style.
    #[test]
    fn string_to_sign_matches_the_aws_examples() {
        let get = sts(
            Mode::HeaderAuth,
            "GET",
            "/awsexamplebucket1/photos/puppy.jpg",
            &[("Date", "Tue, 27 Mar 2007 19:36:42 +0000")],
        );
        assert_eq!(
            get,
            "GET\n\n\nTue, 27 Mar 2007 19:36:42 +0000\n/awsexamplebucket1/photos/puppy.jpg"
        );
        assert_eq!(sign(&get), "qgk2+6Sv9/oM7G3qLEjTH1a1l1g=");
        let put = sts(
            Mode::HeaderAuth,
            "PUT",
            "/awsexamplebucket1/photos/puppy.jpg",
            &[
                ("Content-Type", "image/jpeg"),
                ("Date", "Tue, 27 Mar 2007 21:15:45 +0000"),
            ],
        );
        assert_eq!(sign(&put), "iqRzw+ileNPu1fhspnRs8nOjjIA=");
        let acl = sts(
            Mode::HeaderAuth,
            "GET",
            "/awsexamplebucket1/?acl&prefix=x",
            &[("Date", "Tue, 27 Mar 2007 19:44:46 +0000")],
        );
        assert_eq!(
            acl,
            "GET\n\n\nTue, 27 Mar 2007 19:44:46 +0000\n/awsexamplebucket1/?acl"
        );
        assert_eq!(sign(&acl), "82ZHiFIjc+WbcwFKGUVEQspPn+0=");
        let delete = sts(
            Mode::HeaderAuth,
            "DELETE",
            "/awsexamplebucket1/photos/puppy.jpg",
            &[
                ("Date", "Tue, 27 Mar 2007 21:20:27 +0000"),
                ("x-amz-date", "Tue, 27 Mar 2007 21:20:26 +0000"),
            ],
        );
        assert_eq!(
            delete,
            "DELETE\n\n\n\nx-amz-date:Tue, 27 Mar 2007 21:20:26 +0000\n/awsexamplebucket1/photos/puppy.jpg"
        );
        let multi = sts(
            Mode::HeaderAuth,
            "PUT",
            "/b/k?uploadId=u1&partNumber=2",
            &[
                ("Date", "d"),
                ("X-Amz-Meta-A", " one "),
                ("x-amz-meta-a", "two"),
            ],
        );
        assert_eq!(
            multi,
            "PUT\n\n\nd\nx-amz-meta-a:one,two\n/b/k?partNumber=2&uploadId=u1"
        );
        let presigned = sts(
            Mode::PresignedUrl,
            "GET",
            "/b/k?AWSAccessKeyId=a&Expires=1175139620&Signature=s",
            &[],
        );
        assert_eq!(presigned, "GET\n\n\n1175139620\n/b/k");
    }

    #[test]
    fn signatures_compare_by_value_only() {
        let s = "GET\n\n\nTue, 27 Mar 2007 19:36:42 +0000\n/awsexamplebucket1/photos/puppy.jpg";
        let good = "qgk2+6Sv9/oM7G3qLEjTH1a1l1g=";
        assert!(signature_matches(SK, s, good));
        // A difference anywhere (first byte, middle, last significant character) fails.
        for i in 0..good.len() - 1 {
            let mut bad: Vec<char> = good.chars().collect();
            bad[i] = if bad[i] == 'A' { 'B' } else { 'A' };
            let bad: String = bad.into_iter().collect();
            assert!(!signature_matches(SK, s, &bad), "{bad}");
        }
        assert!(!signature_matches(SK, s, &good[..20]));
        assert!(!signature_matches(SK, s, ""));
        assert!(!signature_matches(SK, s, "not base64 at all!"));
        assert!(!signature_matches("other secret", s, good));
    }

    #[test]
    fn request_times_parse_in_the_forms_clients_send() {
        let t = OffsetDateTime::from_unix_timestamp(1_175_024_202).unwrap();
        assert_eq!(
            parse_request_time("Tue, 27 Mar 2007 19:36:42 +0000"),
            Some(t)
        );
        assert_eq!(parse_request_time("Tue, 27 Mar 2007 19:36:42 GMT"), Some(t));
        assert_eq!(parse_request_time("20070327T193642Z"), Some(t));
        assert_eq!(parse_request_time("yesterday"), None);
    }

    #[test]
    fn the_skew_window_is_fifteen_minutes_either_way() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let min = time::Duration::minutes;
        for ok in [min(0), min(14), min(15), -min(14), -min(15)] {
            assert!(check_skew(now + ok, now).is_ok(), "{ok}");
        }
        for bad in [
            min(16),
            min(20),
            -min(16),
            -min(20),
            -time::Duration::days(365),
        ] {
            let e = check_skew(now + bad, now).unwrap_err();
            assert_eq!(e.code(), &S3ErrorCode::RequestTimeTooSkewed, "{bad}");
            assert_eq!(e.status_code(), Some(http::StatusCode::FORBIDDEN));
        }
    }

    fn http_date(t: OffsetDateTime) -> String {
        t.format(&time::format_description::well_known::Rfc2822)
            .unwrap()
    }

    fn amz_date(t: OffsetDateTime) -> String {
        t.format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap()
    }

    #[test]
    fn header_signed_requests_outside_the_window_are_refused() {
        let now = OffsetDateTime::now_utc();
        let stale = now - time::Duration::minutes(20);
        let v2 = |date: &str| {
            parts(
                "GET",
                "/b/k",
                &[("authorization", "AWS a:b"), ("date", date)],
            )
        };
        assert!(check_request_time(&v2(&http_date(now)).2, now).is_ok());
        let e = check_request_time(&v2(&http_date(stale)).2, now).unwrap_err();
        assert_eq!(e.code(), &S3ErrorCode::RequestTimeTooSkewed);
        // x-amz-date wins over Date.
        let (_, _, h) = parts(
            "GET",
            "/b/k",
            &[
                ("authorization", "AWS a:b"),
                ("date", &http_date(now)),
                ("x-amz-date", &http_date(stale)),
            ],
        );
        assert!(check_request_time(&h, now).is_err());
        let e = check_request_time(&v2("not a date").2, now).unwrap_err();
        assert_eq!(e.code(), &S3ErrorCode::AccessDenied);
        let v4 = |date: &str| {
            parts(
                "GET",
                "/b/k",
                &[
                    ("authorization", "AWS4-HMAC-SHA256 Credential=a/..."),
                    ("x-amz-date", date),
                ],
            )
            .2
        };
        assert!(check_request_time(&v4(&amz_date(now)), now).is_ok());
        assert!(check_request_time(&v4(&amz_date(stale)), now).is_err());
        // Presigned and anonymous requests have no window here.
        assert!(check_request_time(&HeaderMap::new(), now).is_ok());
    }

    fn ring() -> KeyRing {
        KeyRing::new([(AK.to_owned(), SK.to_owned())])
    }

    /// A SigV2 header-signed request as a client would send it.
    fn v2_request(
        method: &str,
        uri: &str,
        date: &str,
        extra: &[(&str, &str)],
    ) -> (Method, Uri, HeaderMap) {
        let mut headers: Vec<(&str, &str)> = vec![("date", date)];
        headers.extend_from_slice(extra);
        let s = sts(Mode::HeaderAuth, method, uri, &headers);
        let auth = format!("AWS {AK}:{}", sign(&s));
        let mut all = headers.clone();
        all.push(("authorization", &auth));
        parts(method, uri, &all)
    }

    /// Regression guard: SigV2 header auth had no Date window (a captured request replayed
    /// forever) and compared signatures in variable time inside s3s.
    #[test]
    fn precheck_applies_the_window_and_checks_v2_signatures() {
        let now = OffsetDateTime::now_utc();
        let ring = ring();
        let check = |(m, u, h): (Method, Uri, HeaderMap)| precheck(&m, &u, &h, &ring, now);
        let fresh = http_date(now);
        let stale = http_date(now - time::Duration::minutes(20));
        assert!(
            check(v2_request(
                "GET",
                "/b/k?acl",
                &fresh,
                &[("x-amz-meta-x", "1")]
            ))
            .is_ok()
        );
        let e = check(v2_request("GET", "/b/k", &stale, &[])).unwrap_err();
        assert_eq!(e.code(), &S3ErrorCode::RequestTimeTooSkewed);
        // Any change the signature covers is a mismatch.
        let (m, _, h) = v2_request("GET", "/b/k", &fresh, &[]);
        let e = check((m, "/b/other".parse().unwrap(), h)).unwrap_err();
        assert_eq!(e.code(), &S3ErrorCode::SignatureDoesNotMatch);
        // Left to s3s: not SigV2, unknown keys, no date.
        assert!(check(parts("GET", "/b/k", &[])).is_ok());
        assert!(
            check(parts(
                "GET",
                "/b/k",
                &[("authorization", "AWS nobody:x"), ("date", &fresh)]
            ))
            .is_ok()
        );
        assert!(
            check(parts(
                "GET",
                "/b/k",
                &[("authorization", &format!("AWS {AK}:x"))]
            ))
            .is_ok()
        );
    }

    #[test]
    fn precheck_checks_presigned_v2_signatures_but_not_their_age() {
        let now = OffsetDateTime::now_utc();
        let ring = ring();
        let url = |expires: i64, sig: Option<&str>| {
            let path = "/b/k";
            let s = sts(
                Mode::PresignedUrl,
                "GET",
                &format!("{path}?Expires={expires}"),
                &[],
            );
            let sig = sig.map_or_else(|| sign(&s), str::to_owned);
            let q: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("AWSAccessKeyId", AK)
                .append_pair("Expires", &expires.to_string())
                .append_pair("Signature", &sig)
                .finish();
            format!("{path}?{q}")
        };
        let check = |uri: &str| {
            precheck(
                &Method::GET,
                &uri.parse().unwrap(),
                &HeaderMap::new(),
                &ring,
                now,
            )
        };
        // A presigned URL lives until its own expiry, however far in the future.
        let later = now.unix_timestamp() + 7 * 24 * 3600;
        assert!(check(&url(later, None)).is_ok());
        let e = check(&url(later, Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA="))).unwrap_err();
        assert_eq!(e.code(), &S3ErrorCode::SignatureDoesNotMatch);
        // Expired: s3s answers AccessDenied before it compares anything.
        assert!(check(&url(now.unix_timestamp() - 10, Some("x"))).is_ok());
    }

    /// The service under s3s, with nothing behind it: a request s3s authenticates reaches
    /// the (absent) operation and gets NotImplemented or NoSuchKey, never a 403.
    struct Nothing;

    #[async_trait::async_trait]
    impl s3s::S3 for Nothing {
        async fn get_object(
            &self,
            _req: s3s::S3Request<s3s::dto::GetObjectInput>,
        ) -> S3Result<s3s::S3Response<s3s::dto::GetObjectOutput>> {
            Err(s3s::s3_error!(NoSuchKey))
        }
    }

    /// The invariant of this module: on the same SigV2 requests, `precheck` accepts exactly
    /// what s3s's own check accepts (so wiring it in front of s3s refuses no valid request).
    #[tokio::test]
    async fn precheck_agrees_with_s3s() {
        let mut b = s3s::service::S3ServiceBuilder::new(Nothing);
        b.set_auth(super::super::access::KeyAuth::new(std::sync::Arc::new(
            ring(),
        )));
        let service = b.build();
        let now = OffsetDateTime::now_utc();
        let ring = ring();
        let date = http_date(now);
        let mut cases: Vec<(Method, Uri, HeaderMap)> = Vec::new();
        for (method, uri, extra) in [
            ("GET", "/bkt/k", vec![]),
            (
                "GET",
                "/bkt/a%20b/c%2Bd?response-content-type=text%2Fplain&x=1",
                vec![],
            ),
            ("GET", "/bkt/k?versionId=v+1&partNumber=1", vec![]),
            (
                "GET",
                "/bkt?acl",
                vec![("x-amz-meta-z", " 1 "), ("x-amz-meta-a", "2")],
            ),
            (
                "PUT",
                "/bkt/k",
                vec![
                    ("content-type", "image/png"),
                    ("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg=="),
                ],
            ),
            ("DELETE", "/bkt/k", vec![("x-amz-date", date.as_str())]),
        ] {
            let (m, u, h) = v2_request(method, uri, &date, &extra);
            cases.push((m.clone(), u.clone(), h.clone()));
            // The same request, tampered: another path and another signature.
            let other: Uri = format!("{}x", u.path()).parse().unwrap();
            cases.push((m.clone(), other, h.clone()));
            let mut bad = h.clone();
            bad.insert(
                "authorization",
                format!("AWS {AK}:AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
                    .parse()
                    .unwrap(),
            );
            cases.push((m, u, bad));
        }
        for expires in [
            now.unix_timestamp() + 600,
            now.unix_timestamp() + 86_400 * 30,
        ] {
            let s = sts(
                Mode::PresignedUrl,
                "GET",
                &format!("/bkt/k?Expires={expires}"),
                &[],
            );
            for sig in [sign(&s), "AAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned()] {
                let q: String = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("AWSAccessKeyId", AK)
                    .append_pair("Expires", &expires.to_string())
                    .append_pair("Signature", &sig)
                    .finish();
                cases.push((
                    Method::GET,
                    format!("/bkt/k?{q}").parse().unwrap(),
                    HeaderMap::new(),
                ));
            }
        }
        let mut accepted = 0;
        for (m, u, h) in cases {
            let ours = precheck(&m, &u, &h, &ring, now).is_ok();
            let mut req = http::Request::new(s3s::Body::empty());
            *req.method_mut() = m.clone();
            *req.uri_mut() = u.clone();
            *req.headers_mut() = h;
            let resp = service.call(req).await.unwrap();
            // A request s3s authenticates reaches the operation (404 or 501 here).
            let theirs = resp.status() != http::StatusCode::FORBIDDEN;
            assert_ne!(resp.status(), http::StatusCode::BAD_REQUEST, "{m} {u}");
            assert_eq!(ours, theirs, "{m} {u}: s3s answered {}", resp.status());
            accepted += usize::from(ours);
        }
        assert_eq!(accepted, 8);
    }

    #[test]
    fn percent_decoding_follows_s3s() {
        assert_eq!(percent_decode("a%2Bb%3D").as_deref(), Some("a+b="));
        assert_eq!(percent_decode("a+b%").as_deref(), Some("a+b%"));
        assert_eq!(percent_decode("%zz%4").as_deref(), Some("%zz%4"));
        assert_eq!(percent_decode("%ff"), None);
    }
}
