//! S3 throughput benchmark: Pixelport against s3s-fs on the same disk.
//!
//! Normally started by `scripts/bench-s3.sh`, which builds both servers, starts
//! them on 127.0.0.1, measures the raw disk read speed with `dd` and passes the
//! endpoints, credentials and dd numbers here:
//!
//! ```text
//! cargo bench --bench s3_bench -- \
//!     --target pixelport http://127.0.0.1:9000 AK SK \
//!     --target s3s-fs    http://127.0.0.1:9001 AK SK \
//!     [--large-mib 64] [--large-count 4] [--small-kib 4] [--concurrency 16] \
//!     [--small-secs 5] [--max-ops 500000] [--bucket NAME] [--region us-east-1] \
//!     [--dd-cold MIBS] [--dd-direct MIBS] [--dd-cached MIBS] [--drop-caches] \
//!     [--json PATH]
//! ```
//!
//! Without any `--target` (that is what `cargo test` does when the bench target
//! has `test = true`) it runs its self-tests instead: the SigV4 signer against
//! AWS's published examples and HMAC-SHA256 against RFC 4231.
//!
//! The load client is hyper-util's legacy `Client` over HTTP/1.1 keep-alive;
//! requests are signed with SigV4 header auth and
//! `x-amz-content-sha256: UNSIGNED-PAYLOAD`, so the client never hashes bodies.
//! Every loop is bounded by a count and a deadline, and every request by a
//! timeout. Only loopback endpoints are accepted.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

const MIB: f64 = 1024.0 * 1024.0;
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

// ---------------------------------------------------------------------------
// SigV4 (header auth), HMAC-SHA256 written out on top of sha2.
// ---------------------------------------------------------------------------
mod sigv4 {
    use sha2::{Digest as _, Sha256};
    use std::sync::Mutex;

    pub fn sha256_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    /// HMAC-SHA256 (RFC 2104) with a 64-byte block.
    pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
        let mut block = [0u8; 64];
        if key.len() > block.len() {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
        let inner = Sha256::new()
            .chain_update(&ipad)
            .chain_update(msg)
            .finalize();
        Sha256::new()
            .chain_update(&opad)
            .chain_update(inner)
            .finalize()
            .into()
    }

    /// S3 flavour of URI encoding: unreserved bytes kept, everything else %XX
    /// (upper case); `/` kept only when `keep_slash` (object key paths).
    pub fn uri_encode(s: &str, keep_slash: bool) -> String {
        let mut out = String::with_capacity(s.len());
        for &b in s.as_bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    out.push(b as char)
                }
                b'/' if keep_slash => out.push('/'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }

    /// `a=1&b=2`, keys and values encoded, sorted by key then value.
    pub fn canonical_query(query: &[(&str, &str)]) -> String {
        let mut pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
            .collect();
        pairs.sort();
        let parts: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.join("&")
    }

    #[derive(Debug)]
    pub struct Signed {
        pub canonical_request: String,
        pub string_to_sign: String,
        pub signed_headers: String,
        pub signature: String,
        pub authorization: String,
    }

    pub struct Signer {
        access_key: String,
        secret_key: String,
        region: String,
        service: String,
        /// (yyyymmdd, signing key): the key only changes once a day.
        key_cache: Mutex<Option<(String, [u8; 32])>>,
    }

    impl Signer {
        pub fn new(access_key: &str, secret_key: &str, region: &str, service: &str) -> Self {
            Self {
                access_key: access_key.to_owned(),
                secret_key: secret_key.to_owned(),
                region: region.to_owned(),
                service: service.to_owned(),
                key_cache: Mutex::new(None),
            }
        }

        pub fn signing_key(&self, date: &str) -> [u8; 32] {
            if let Ok(guard) = self.key_cache.lock()
                && let Some((d, k)) = guard.as_ref()
                && d == date
            {
                return *k;
            }
            let k_date = hmac_sha256(
                format!("AWS4{}", self.secret_key).as_bytes(),
                date.as_bytes(),
            );
            let k_region = hmac_sha256(&k_date, self.region.as_bytes());
            let k_service = hmac_sha256(&k_region, self.service.as_bytes());
            let key = hmac_sha256(&k_service, b"aws4_request");
            if let Ok(mut guard) = self.key_cache.lock() {
                *guard = Some((date.to_owned(), key));
            }
            key
        }

        /// Signs a request. `path` is the raw (unencoded) absolute path; the
        /// caller must send it encoded with `uri_encode(path, true)`.
        /// `headers` must contain `host` and `x-amz-date` (and, for S3,
        /// `x-amz-content-sha256`); all of them are signed.
        pub fn sign(
            &self,
            method: &str,
            path: &str,
            query: &[(&str, &str)],
            headers: &[(&str, &str)],
            payload_hash: &str,
            amz_date: &str,
        ) -> Signed {
            let mut hs: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| {
                    let value = v.split_whitespace().collect::<Vec<_>>().join(" ");
                    (k.to_ascii_lowercase(), value)
                })
                .collect();
            hs.sort();
            // Repeated header names: one line, values joined by commas.
            let mut merged: Vec<(String, String)> = Vec::with_capacity(hs.len());
            for (k, v) in hs {
                match merged.last_mut() {
                    Some((lk, lv)) if *lk == k => {
                        lv.push(',');
                        lv.push_str(&v);
                    }
                    _ => merged.push((k, v)),
                }
            }
            let mut canonical_headers = String::new();
            for (k, v) in &merged {
                canonical_headers.push_str(k);
                canonical_headers.push(':');
                canonical_headers.push_str(v);
                canonical_headers.push('\n');
            }
            let signed_headers = merged
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(";");
            let canonical_request = format!(
                "{method}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{payload_hash}",
                uri_encode(path, true),
                canonical_query(query),
            );
            let date = amz_date.get(..8).unwrap_or(amz_date);
            let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
            let string_to_sign = format!(
                "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
                sha256_hex(canonical_request.as_bytes())
            );
            let signature = hex::encode(hmac_sha256(
                &self.signing_key(date),
                string_to_sign.as_bytes(),
            ));
            let authorization = format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                self.access_key
            );
            Signed {
                canonical_request,
                string_to_sign,
                signed_headers,
                signature,
                authorization,
            }
        }
    }

    /// `yyyymmddThhmmssZ` for now (UTC).
    pub fn amz_date_now() -> String {
        let t = time::OffsetDateTime::now_utc();
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }
}

// ---------------------------------------------------------------------------
// Self-tests (run when no --target is given, e.g. by `cargo test`).
// ---------------------------------------------------------------------------
mod selftest {
    use super::sigv4::{Signer, canonical_query, hmac_sha256, sha256_hex, uri_encode};

    const EMPTY_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    // Credentials of the S3 examples in "Signature Calculations for the
    // Authorization Header" (sig-v4-header-based-auth), AWS S3 API reference.
    const S3_AK: &str = "AKIAIOSFODNN7EXAMPLE";
    const S3_SK: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const S3_HOST: &str = "examplebucket.s3.amazonaws.com";
    const S3_DATE: &str = "20130524T000000Z";

    fn check(name: &str, got: &str, want: &str) -> Result<(), String> {
        if got == want {
            Ok(())
        } else {
            Err(format!("{name}: got {got:?}, want {want:?}"))
        }
    }

    fn s3_signer() -> Signer {
        Signer::new(S3_AK, S3_SK, "us-east-1", "s3")
    }

    fn hmac_rfc4231() -> Result<(), String> {
        check(
            "case 1",
            &hex::encode(hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        )?;
        check(
            "case 2",
            &hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        )?;
        // Case 6: a key longer than the block is hashed first.
        check(
            "case 6",
            &hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        )
    }

    /// S3 example "GET Object": GET /test.txt with Range: bytes=0-9.
    fn s3_get_object() -> Result<(), String> {
        let s = s3_signer().sign(
            "GET",
            "/test.txt",
            &[],
            &[
                ("Host", S3_HOST),
                ("Range", "bytes=0-9"),
                ("x-amz-content-sha256", EMPTY_SHA),
                ("x-amz-date", S3_DATE),
            ],
            EMPTY_SHA,
            S3_DATE,
        );
        check(
            "canonical request",
            &s.canonical_request,
            &[
                "GET",
                "/test.txt",
                "",
                "host:examplebucket.s3.amazonaws.com",
                "range:bytes=0-9",
                "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "x-amz-date:20130524T000000Z",
                "",
                "host;range;x-amz-content-sha256;x-amz-date",
                EMPTY_SHA,
            ]
            .join("\n"),
        )?;
        check(
            "canonical request hash",
            &sha256_hex(s.canonical_request.as_bytes()),
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
        )?;
        check(
            "signed headers",
            &s.signed_headers,
            "host;range;x-amz-content-sha256;x-amz-date",
        )?;
        check(
            "signature",
            &s.signature,
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        )?;
        check(
            "authorization",
            &s.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        )
    }

    /// S3 example "PUT Object": PUT /test$file.text, body "Welcome to Amazon S3."
    fn s3_put_object() -> Result<(), String> {
        let body_sha = sha256_hex(b"Welcome to Amazon S3.");
        check(
            "payload hash",
            &body_sha,
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
        )?;
        let s = s3_signer().sign(
            "PUT",
            "/test$file.text",
            &[],
            &[
                ("Host", S3_HOST),
                ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
                ("x-amz-date", S3_DATE),
                ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
                ("x-amz-content-sha256", &body_sha),
            ],
            &body_sha,
            S3_DATE,
        );
        check(
            "path",
            s.canonical_request.lines().nth(1).unwrap_or_default(),
            "/test%24file.text",
        )?;
        check(
            "signature",
            &s.signature,
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
        )
    }

    /// S3 example "GET Bucket Lifecycle": a query parameter without a value.
    fn s3_get_lifecycle() -> Result<(), String> {
        let s = s3_signer().sign(
            "GET",
            "/",
            &[("lifecycle", "")],
            &[
                ("Host", S3_HOST),
                ("x-amz-content-sha256", EMPTY_SHA),
                ("x-amz-date", S3_DATE),
            ],
            EMPTY_SHA,
            S3_DATE,
        );
        check(
            "signature",
            &s.signature,
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
        )
    }

    /// S3 example "Get Bucket (List Objects)": query sorted before signing.
    fn s3_list_objects() -> Result<(), String> {
        let s = s3_signer().sign(
            "GET",
            "/",
            &[("prefix", "J"), ("max-keys", "2")],
            &[
                ("Host", S3_HOST),
                ("x-amz-content-sha256", EMPTY_SHA),
                ("x-amz-date", S3_DATE),
            ],
            EMPTY_SHA,
            S3_DATE,
        );
        check(
            "query",
            s.canonical_request.lines().nth(2).unwrap_or_default(),
            "max-keys=2&prefix=J",
        )?;
        check(
            "signature",
            &s.signature,
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        )
    }

    /// The IAM ListUsers example of the general SigV4 documentation
    /// ("Create a signed AWS API request"): signing key, string to sign,
    /// signature.
    fn iam_list_users() -> Result<(), String> {
        let signer = Signer::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "us-east-1",
            "iam",
        );
        check(
            "signing key",
            &hex::encode(signer.signing_key("20150830")),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9",
        )?;
        let s = signer.sign(
            "GET",
            "/",
            &[("Action", "ListUsers"), ("Version", "2010-05-08")],
            &[
                (
                    "Content-Type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                ),
                ("Host", "iam.amazonaws.com"),
                ("X-Amz-Date", "20150830T123600Z"),
            ],
            EMPTY_SHA,
            "20150830T123600Z",
        );
        check(
            "string to sign",
            &s.string_to_sign,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/iam/aws4_request\n\
             f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59",
        )?;
        check(
            "authorization",
            &s.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
        )
    }

    fn encoding() -> Result<(), String> {
        check(
            "slash kept",
            &uri_encode("a b/c~d%é", true),
            "a%20b/c~d%25%C3%A9",
        )?;
        check(
            "slash encoded",
            &uri_encode("a/b+c=", false),
            "a%2Fb%2Bc%3D",
        )?;
        check("reserved", &uri_encode("!'()*", false), "%21%27%28%29%2A")?;
        check(
            "query",
            &canonical_query(&[("prefix", "a/b c"), ("list-type", "2"), ("uploads", "")]),
            "list-type=2&prefix=a%2Fb%20c&uploads=",
        )
    }

    fn header_values_trimmed_and_merged() -> Result<(), String> {
        let s = s3_signer().sign(
            "GET",
            "/",
            &[],
            &[
                ("Host", "h"),
                ("X-A", "  a   b  "),
                ("x-a", "c"),
                ("x-amz-date", S3_DATE),
            ],
            EMPTY_SHA,
            S3_DATE,
        );
        check("signed headers", &s.signed_headers, "host;x-a;x-amz-date")?;
        check(
            "merged line",
            s.canonical_request.lines().nth(4).unwrap_or_default(),
            "x-a:a b,c",
        )
    }

    /// Runs every check, prints a libtest-like report; returns failures.
    pub fn run() -> usize {
        type Check = fn() -> Result<(), String>;
        let tests: &[(&str, Check)] = &[
            ("hmac_sha256_rfc4231", hmac_rfc4231),
            ("sigv4_s3_get_object_example", s3_get_object),
            ("sigv4_s3_put_object_example", s3_put_object),
            ("sigv4_s3_get_lifecycle_example", s3_get_lifecycle),
            ("sigv4_s3_list_objects_example", s3_list_objects),
            ("sigv4_iam_list_users_example", iam_list_users),
            ("sigv4_uri_encoding", encoding),
            (
                "sigv4_header_values_trimmed_and_merged",
                header_values_trimmed_and_merged,
            ),
        ];
        println!("\nrunning {} tests", tests.len());
        let mut failed = Vec::new();
        for (name, f) in tests {
            match f() {
                Ok(()) => println!("test {name} ... ok"),
                Err(e) => {
                    println!("test {name} ... FAILED");
                    failed.push(format!("{name}: {e}"));
                }
            }
        }
        for f in &failed {
            println!("---- {f}");
        }
        println!(
            "\ntest result: {}. {} passed; {} failed; 0 ignored; 0 measured; 0 filtered out\n",
            if failed.is_empty() { "ok" } else { "FAILED" },
            tests.len() - failed.len(),
            failed.len()
        );
        failed.len()
    }
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------
struct Target {
    name: String,
    authority: String,
    signer: sigv4::Signer,
    /// The bucket this target's objects go to (`--bucket`, with `-sse` for an SSE target).
    bucket: String,
    /// `--sse-default NAME`: the bucket gets default encryption (PutBucketEncryption,
    /// AES256), so every object of the run is encrypted at rest.
    sse: bool,
}

struct Config {
    targets: Vec<Arc<Target>>,
    bucket: String,
    large_bytes: usize,
    large_count: usize,
    small_bytes: usize,
    concurrency: usize,
    small_secs: f64,
    max_ops: u64,
    dd_cold: Option<f64>,
    dd_direct: Option<f64>,
    dd_cached: Option<f64>,
    drop_caches: bool,
    json: Option<String>,
}

const USAGE: &str =
    "usage: s3_bench --target NAME http://127.0.0.1:PORT ACCESS_KEY SECRET_KEY [--target ...]
       [--large-mib 64] [--large-count 4] [--small-kib 4] [--concurrency 16]
       [--small-secs 5] [--max-ops 500000] [--bucket NAME] [--region us-east-1]
       [--dd-cold MIBS] [--dd-direct MIBS] [--dd-cached MIBS] [--drop-caches] [--json PATH]
       [--sse-default NAME]...
Normally run through scripts/bench-s3.sh. Without --target it runs its self-tests.";

/// Accepts only `http://<loopback>:<port>` (optionally with a trailing `/`).
fn loopback_authority(endpoint: &str) -> Result<String> {
    let rest = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("endpoint {endpoint:?} must start with http://"))?;
    let authority = rest.trim_end_matches('/');
    if authority.contains('/') {
        bail!("endpoint {endpoint:?} must not have a path");
    }
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("endpoint {endpoint:?} needs a port"))?;
    port.parse::<u16>()
        .with_context(|| format!("bad port in {endpoint:?}"))?;
    let ip: std::net::IpAddr = match host {
        "localhost" => std::net::IpAddr::from([127, 0, 0, 1]),
        h => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .with_context(|| {
                format!("endpoint host {h:?} must be a loopback IP literal or localhost")
            })?,
    };
    if !ip.is_loopback() {
        bail!(
            "refusing non-loopback endpoint {endpoint:?}: this benchmark only talks to 127.0.0.1"
        );
    }
    Ok(authority.to_owned())
}

fn parse_args(args: &[String]) -> Result<Option<Config>> {
    let mut cfg = Config {
        targets: Vec::new(),
        bucket: "pixelport-bench".to_owned(),
        large_bytes: 64 << 20,
        large_count: 4,
        small_bytes: 4 << 10,
        concurrency: 16,
        small_secs: 5.0,
        max_ops: 500_000,
        dd_cold: None,
        dd_direct: None,
        dd_cached: None,
        drop_caches: false,
        json: None,
    };
    let mut region = "us-east-1".to_owned();
    let mut raw_targets: Vec<[String; 4]> = Vec::new();
    let mut sse_targets: Vec<String> = Vec::new();
    let mut it = args.iter();
    fn val<'a>(it: &mut std::slice::Iter<'a, String>, flag: &str) -> Result<&'a String> {
        it.next()
            .ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))
    }
    fn num<T: std::str::FromStr>(s: &str, flag: &str) -> Result<T> {
        s.parse().map_err(|_| anyhow!("{flag}: cannot parse {s:?}"))
    }
    while let Some(a) = it.next() {
        match a.as_str() {
            "--target" => {
                let mut t: [String; 4] = Default::default();
                for slot in &mut t {
                    *slot = val(&mut it, "--target")?.clone();
                }
                raw_targets.push(t);
            }
            "--large-mib" => cfg.large_bytes = num::<usize>(val(&mut it, a)?, a)? << 20,
            "--large-count" => cfg.large_count = num(val(&mut it, a)?, a)?,
            "--small-kib" => cfg.small_bytes = num::<usize>(val(&mut it, a)?, a)? << 10,
            "--concurrency" => cfg.concurrency = num(val(&mut it, a)?, a)?,
            "--small-secs" => cfg.small_secs = num(val(&mut it, a)?, a)?,
            "--max-ops" => cfg.max_ops = num(val(&mut it, a)?, a)?,
            "--bucket" => cfg.bucket = val(&mut it, a)?.clone(),
            "--region" => region = val(&mut it, a)?.clone(),
            "--dd-cold" => cfg.dd_cold = Some(num(val(&mut it, a)?, a)?),
            "--dd-direct" => cfg.dd_direct = Some(num(val(&mut it, a)?, a)?),
            "--dd-cached" => cfg.dd_cached = Some(num(val(&mut it, a)?, a)?),
            "--drop-caches" => cfg.drop_caches = true,
            "--json" => cfg.json = Some(val(&mut it, a)?.clone()),
            "--sse-default" => sse_targets.push(val(&mut it, a)?.clone()),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            // Passed by `cargo bench` / `cargo test`; nothing to do.
            "--bench" | "--quiet" | "-q" | "--nocapture" | "--test" => {}
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if raw_targets.is_empty() {
        return Ok(None);
    }
    if cfg.large_count == 0 || cfg.large_count > 64 || cfg.large_bytes == 0 {
        bail!("--large-count must be 1..=64 and --large-mib > 0");
    }
    if cfg.large_bytes > (1 << 30) {
        bail!("--large-mib must be at most 1024");
    }
    if cfg.concurrency == 0 || cfg.concurrency > 1024 || cfg.small_bytes == 0 {
        bail!("--concurrency must be 1..=1024 and --small-kib > 0");
    }
    if !(cfg.small_secs > 0.0 && cfg.small_secs <= 600.0) {
        bail!("--small-secs must be in (0, 600]");
    }
    for [name, endpoint, ak, sk] in raw_targets {
        let sse = sse_targets.contains(&name);
        cfg.targets.push(Arc::new(Target {
            authority: loopback_authority(&endpoint)?,
            signer: sigv4::Signer::new(&ak, &sk, &region, "s3"),
            bucket: if sse {
                format!("{}-sse", cfg.bucket)
            } else {
                cfg.bucket.clone()
            },
            sse,
            name,
        }));
    }
    Ok(Some(cfg))
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------
type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn new_client(concurrency: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.enforce_http(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency.max(1) * 2)
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

fn signed_request(
    t: &Target,
    method: &Method,
    path: &str,
    body: Bytes,
) -> Result<Request<Full<Bytes>>> {
    signed_request_with_query(t, method, path, None, body)
}

/// As `signed_request`, with one valueless query parameter (`?encryption`).
fn signed_request_with_query(
    t: &Target,
    method: &Method,
    path: &str,
    subresource: Option<&str>,
    body: Bytes,
) -> Result<Request<Full<Bytes>>> {
    let amz_date = sigv4::amz_date_now();
    let query: Vec<(&str, &str)> = subresource.map(|q| (q, "")).into_iter().collect();
    let signed = t.signer.sign(
        method.as_str(),
        path,
        &query,
        &[
            ("host", &t.authority),
            ("x-amz-content-sha256", UNSIGNED_PAYLOAD),
            ("x-amz-date", &amz_date),
        ],
        UNSIGNED_PAYLOAD,
        &amz_date,
    );
    let mut uri = format!("http://{}{}", t.authority, sigv4::uri_encode(path, true));
    if let Some(q) = subresource {
        uri = format!("{uri}?{q}=");
    }
    let mut b = Request::builder()
        .method(method.clone())
        .uri(uri)
        .header("host", &t.authority)
        .header("x-amz-content-sha256", UNSIGNED_PAYLOAD)
        .header("x-amz-date", &amz_date)
        .header("authorization", signed.authorization);
    if *method == Method::PUT || *method == Method::POST {
        b = b.header("content-length", body.len());
    }
    Ok(b.body(Full::new(body))?)
}

/// Sends a request and reads the response body. When `expect` is given, the
/// body is compared with it as it streams (and its length checked) instead
/// of being kept. Returns (status, body bytes kept (only on error / when
/// `expect` is None and small), body length).
async fn exchange(
    client: &HttpClient,
    t: &Target,
    method: Method,
    path: &str,
    body: Bytes,
    expect: Option<&[u8]>,
    timeout: Duration,
) -> Result<(StatusCode, Vec<u8>, usize)> {
    let req = signed_request(t, &method, path, body)?;
    let fut = async {
        let resp: http::Response<Incoming> = client.request(req).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        let mut kept = Vec::new();
        let mut len = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            if status.is_success()
                && let Some(exp) = expect
            {
                let end = len + chunk.len();
                if end > exp.len() || exp[len..end] != chunk[..] {
                    bail!("{method} {path}: body differs from what was PUT at offset {len}");
                }
            } else if kept.len() < 4096 {
                kept.extend_from_slice(&chunk[..chunk.len().min(4096 - kept.len())]);
            }
            len += chunk.len();
        }
        if status.is_success()
            && let Some(exp) = expect
            && len != exp.len()
        {
            bail!("{method} {path}: got {len} bytes, want {}", exp.len());
        }
        Ok::<_, anyhow::Error>((status, kept, len))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| anyhow!("{method} {path}: no complete answer within {timeout:?}"))?
}

async fn ensure_ok(
    client: &HttpClient,
    t: &Target,
    method: Method,
    path: &str,
    body: Bytes,
    expect: Option<&[u8]>,
    timeout: Duration,
) -> Result<usize> {
    let (status, kept, len) =
        exchange(client, t, method.clone(), path, body, expect, timeout).await?;
    if !status.is_success() {
        bail!(
            "{} {method} {path}: HTTP {status}: {}",
            t.name,
            String::from_utf8_lossy(&kept)
        );
    }
    Ok(len)
}

/// PutBucketEncryption (AES256) on an `--sse-default` target's bucket.
async fn set_default_encryption(client: &HttpClient, t: &Target, bucket: &str) -> Result<()> {
    const CONFIG: &str = "<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>";
    let req = signed_request_with_query(
        t,
        &Method::PUT,
        &format!("/{bucket}"),
        Some("encryption"),
        Bytes::from_static(CONFIG.as_bytes()),
    )?;
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| anyhow!("PutBucketEncryption timed out"))??;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!(
            "{}: PutBucketEncryption on {bucket}: HTTP {status}: {}",
            t.name,
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

async fn create_bucket(client: &HttpClient, t: &Target, bucket: &str) -> Result<()> {
    create_bucket_only(client, t, bucket).await?;
    if t.sse {
        set_default_encryption(client, t, bucket).await?;
    }
    Ok(())
}

async fn create_bucket_only(client: &HttpClient, t: &Target, bucket: &str) -> Result<()> {
    let path = format!("/{bucket}");
    let mut last = String::new();
    for _ in 0..10 {
        match exchange(
            client,
            t,
            Method::PUT,
            &path,
            Bytes::new(),
            None,
            Duration::from_secs(10),
        )
        .await
        {
            Ok((s, _, _)) if s.is_success() => return Ok(()),
            Ok((s, body, _)) => {
                let text = String::from_utf8_lossy(&body).into_owned();
                // Left over from an earlier run against the same data dir.
                if s == StatusCode::CONFLICT && text.contains("BucketAlreadyOwnedByYou") {
                    return Ok(());
                }
                last = format!("HTTP {s}: {text}");
                if s.is_client_error() {
                    break;
                }
            }
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    bail!("{}: cannot create bucket {bucket}: {last}", t.name)
}

// ---------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------
#[derive(Default, Clone)]
struct Results {
    large_put_mibs: Option<f64>,
    large_get_mibs: Option<f64>,
    small_put: Option<SmallResult>,
    small_get: Option<SmallResult>,
    notes: Vec<String>,
}

#[derive(Default, Clone)]
struct SmallResult {
    ops: u64,
    errors: u64,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl SmallResult {
    fn ops_per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.ops as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// Deterministic, incompressible-looking bytes (xorshift64*).
fn pseudo_random(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

fn try_drop_caches() -> Result<()> {
    let st = std::process::Command::new("sync")
        .status()
        .context("running sync")?;
    if !st.success() {
        bail!("sync failed");
    }
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").context("writing /proc/sys/vm/drop_caches")
}

async fn large_phase(
    client: &HttpClient,
    cfg: &Config,
    t: &Target,
    data: &Bytes,
    r: &mut Results,
) -> Result<()> {
    let timeout = Duration::from_secs(300);
    let mib = data.len() as f64 / MIB;
    // PUT: sequential objects.
    let mut secs = 0.0;
    for i in 0..cfg.large_count {
        let path = format!("/{}/large/obj-{i}", t.bucket);
        let start = Instant::now();
        ensure_ok(client, t, Method::PUT, &path, data.clone(), None, timeout).await?;
        let s = start.elapsed().as_secs_f64();
        eprintln!(
            "  {}: PUT {path} {mib:.0} MiB in {s:.3}s ({:.1} MiB/s)",
            t.name,
            mib / s
        );
        secs += s;
    }
    r.large_put_mibs = Some(mib * cfg.large_count as f64 / secs);

    if cfg.drop_caches {
        match try_drop_caches() {
            Ok(()) => r.notes.push("page cache dropped before large GET".into()),
            Err(e) => r
                .notes
                .push(format!("page cache NOT dropped before large GET ({e:#})")),
        }
    }
    // GET: read every object fully, compare while streaming, keep nothing.
    let mut secs = 0.0;
    for i in 0..cfg.large_count {
        let path = format!("/{}/large/obj-{i}", t.bucket);
        let start = Instant::now();
        let n = ensure_ok(
            client,
            t,
            Method::GET,
            &path,
            Bytes::new(),
            Some(data),
            timeout,
        )
        .await?;
        let s = start.elapsed().as_secs_f64();
        eprintln!(
            "  {}: GET {path} {:.0} MiB in {s:.3}s ({:.1} MiB/s)",
            t.name,
            n as f64 / MIB,
            n as f64 / MIB / s
        );
        secs += s;
    }
    r.large_get_mibs = Some(mib * cfg.large_count as f64 / secs);
    Ok(())
}

/// `concurrency` workers, each doing one request at a time, until the
/// deadline or the shared op budget runs out. PUT writes `s/<worker>/<n>`;
/// GET reads back the keys its worker wrote in the PUT phase.
async fn small_phase(
    client: &HttpClient,
    cfg: &Config,
    t: &Arc<Target>,
    method: Method,
    body: &Bytes,
    written: &[u64],
) -> (SmallResult, Vec<u64>) {
    let deadline = Instant::now() + Duration::from_secs_f64(cfg.small_secs);
    let budget = Arc::new(AtomicU64::new(0));
    let abort = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(cfg.concurrency);
    for w in 0..cfg.concurrency {
        let (client, t, method, body) =
            (client.clone(), Arc::clone(t), method.clone(), body.clone());
        let (budget, abort, errors) =
            (Arc::clone(&budget), Arc::clone(&abort), Arc::clone(&errors));
        let bucket = t.bucket.clone();
        let max_ops = cfg.max_ops;
        let have = written.get(w).copied().unwrap_or(0);
        handles.push(tokio::spawn(async move {
            let mut lat_us: Vec<u32> = Vec::new();
            let mut done = 0u64;
            let mut i = 0u64;
            let is_get = method == Method::GET;
            if is_get && have == 0 {
                return (done, lat_us);
            }
            while Instant::now() < deadline
                && !abort.load(Ordering::Relaxed)
                && budget.fetch_add(1, Ordering::Relaxed) < max_ops
            {
                let n = if is_get { i % have } else { i };
                i += 1;
                let path = format!("/{bucket}/s/{w}/{n}");
                let (send, expect) = if is_get {
                    (Bytes::new(), Some(&body[..]))
                } else {
                    (body.clone(), None)
                };
                let t0 = Instant::now();
                match ensure_ok(
                    &client,
                    &t,
                    method.clone(),
                    &path,
                    send,
                    expect,
                    Duration::from_secs(30),
                )
                .await
                {
                    Ok(_) => {
                        lat_us.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
                        done += 1;
                    }
                    Err(e) => {
                        let n = errors.fetch_add(1, Ordering::Relaxed);
                        if n < 3 {
                            eprintln!("  {}: error: {e:#}", t.name);
                        }
                        if n >= 100 {
                            abort.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
            (done, lat_us)
        }));
    }
    let mut per_worker = Vec::with_capacity(handles.len());
    let mut all_lat: Vec<u32> = Vec::new();
    let mut ops = 0;
    for h in handles {
        match h.await {
            Ok((done, lat)) => {
                ops += done;
                per_worker.push(done);
                all_lat.extend(lat);
            }
            Err(e) => {
                eprintln!("  worker panicked: {e}");
                per_worker.push(0);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    all_lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all_lat.is_empty() {
            return 0.0;
        }
        let idx = ((all_lat.len() as f64 - 1.0) * p).round() as usize;
        f64::from(all_lat[idx.min(all_lat.len() - 1)]) / 1000.0
    };
    let res = SmallResult {
        ops,
        errors: errors.load(Ordering::Relaxed),
        secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    };
    (res, per_worker)
}

async fn bench_target(
    client: &HttpClient,
    cfg: &Config,
    t: &Arc<Target>,
    large: &Bytes,
    small: &Bytes,
) -> Results {
    let mut r = Results::default();
    eprintln!("== {} (http://{})", t.name, t.authority);
    if let Err(e) = create_bucket(client, t, &t.bucket).await {
        r.notes.push(format!("FAILED: {e:#}"));
        return r;
    }
    if let Err(e) = large_phase(client, cfg, t, large, &mut r).await {
        eprintln!("  {}: large objects failed: {e:#}", t.name);
        r.notes.push(format!("large objects FAILED: {e:#}"));
    }
    let (put, written) = small_phase(client, cfg, t, Method::PUT, small, &[]).await;
    eprintln!(
        "  {}: {} KiB PUT x{}: {} ok, {} errors in {:.2}s = {:.0} ops/s (p50 {:.2} ms, p99 {:.2} ms)",
        t.name,
        small.len() >> 10,
        cfg.concurrency,
        put.ops,
        put.errors,
        put.secs,
        put.ops_per_sec(),
        put.p50_ms,
        put.p99_ms
    );
    let (get, _) = small_phase(client, cfg, t, Method::GET, small, &written).await;
    eprintln!(
        "  {}: {} KiB GET x{}: {} ok, {} errors in {:.2}s = {:.0} ops/s (p50 {:.2} ms, p99 {:.2} ms)",
        t.name,
        small.len() >> 10,
        cfg.concurrency,
        get.ops,
        get.errors,
        get.secs,
        get.ops_per_sec(),
        get.p50_ms,
        get.p99_ms
    );
    if put.errors > 0 || get.errors > 0 {
        r.notes.push(format!(
            "small-object errors: PUT {}, GET {}",
            put.errors, get.errors
        ));
    }
    r.small_put = Some(put);
    r.small_get = Some(get);
    r
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------
fn fmt_num(v: Option<f64>) -> String {
    match v {
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.2}"),
        None => "n/a".to_owned(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn report(cfg: &Config, results: &[(String, Results)]) -> String {
    let large_mib = cfg.large_bytes >> 20;
    let small_kib = cfg.small_bytes >> 10;
    let c = cfg.concurrency;
    type Metric = (String, fn(&Results) -> Option<f64>);
    let metrics: Vec<Metric> = vec![
        (format!("{large_mib} MiB PUT (MiB/s)"), |r| r.large_put_mibs),
        (format!("{large_mib} MiB GET (MiB/s)"), |r| r.large_get_mibs),
        (format!("{small_kib} KiB PUT (ops/s, {c} clients)"), |r| {
            r.small_put.as_ref().map(SmallResult::ops_per_sec)
        }),
        (format!("{small_kib} KiB GET (ops/s, {c} clients)"), |r| {
            r.small_get.as_ref().map(SmallResult::ops_per_sec)
        }),
        (format!("{small_kib} KiB PUT p50 latency (ms)"), |r| {
            r.small_put.as_ref().map(|s| s.p50_ms)
        }),
        (format!("{small_kib} KiB PUT p99 latency (ms)"), |r| {
            r.small_put.as_ref().map(|s| s.p99_ms)
        }),
        (format!("{small_kib} KiB GET p50 latency (ms)"), |r| {
            r.small_get.as_ref().map(|s| s.p50_ms)
        }),
        (format!("{small_kib} KiB GET p99 latency (ms)"), |r| {
            r.small_get.as_ref().map(|s| s.p99_ms)
        }),
    ];
    let mut out = String::new();
    let names: Vec<&str> = results.iter().map(|(n, _)| n.as_str()).collect();
    let _ = write!(out, "| metric |");
    for n in &names {
        let _ = write!(out, " {n} |");
    }
    let pair = results.len() == 2;
    if pair {
        let _ = write!(out, " ratio ({}/{}) |", names[0], names[1]);
    }
    out.push_str("\n|---|");
    for _ in &names {
        out.push_str("---:|");
    }
    if pair {
        out.push_str("---:|");
    }
    out.push('\n');
    for (label, get) in &metrics {
        let _ = write!(out, "| {label} |");
        for (_, r) in results {
            let _ = write!(out, " {} |", fmt_num(get(r)));
        }
        if pair {
            let rt = ratio(get(&results[0].1), get(&results[1].1));
            let _ = write!(
                out,
                " {} |",
                rt.map_or("n/a".into(), |x| format!("{x:.2}x"))
            );
        }
        out.push('\n');
    }

    out.push_str("\nRaw disk read of a 1 GiB file with dd (same filesystem as the data):\n\n");
    let _ = writeln!(
        out,
        "- cold (page cache dropped): {} MiB/s",
        fmt_num(cfg.dd_cold)
    );
    let _ = writeln!(
        out,
        "- O_DIRECT (iflag=direct): {} MiB/s",
        fmt_num(cfg.dd_direct)
    );
    let _ = writeln!(out, "- page cache (warm): {} MiB/s", fmt_num(cfg.dd_cached));
    let (ceiling, ceiling_name) = match (cfg.dd_cold, cfg.dd_direct) {
        (Some(c), _) => (Some(c), "cold dd"),
        (None, Some(d)) => (Some(d), "O_DIRECT dd"),
        _ => (None, "dd"),
    };
    out.push('\n');
    for (name, r) in results {
        if let Some(f) = ratio(r.large_get_mibs, ceiling) {
            let _ = writeln!(
                out,
                "- {name}: {large_mib} MiB GET = {f:.2}x the {ceiling_name} read speed"
            );
        }
        if let Some(f) = ratio(r.large_get_mibs, cfg.dd_cached) {
            let _ = writeln!(
                out,
                "- {name}: {large_mib} MiB GET = {f:.2}x the warm page-cache dd read speed"
            );
        }
    }
    // The issue's targets, when both sides are present.
    let find = |n: &str| results.iter().find(|(name, _)| name == n).map(|(_, r)| r);
    if let Some(p) = find("pixelport") {
        out.push_str("\nTargets:\n\n");
        if let Some(s) = find("s3s-fs") {
            let rt = ratio(
                p.small_put.as_ref().map(SmallResult::ops_per_sec),
                s.small_put.as_ref().map(SmallResult::ops_per_sec),
            );
            let verdict = match rt {
                Some(x) if x >= 1.5 => "PASS",
                Some(_) => "FAIL",
                None => "n/a",
            };
            let _ = writeln!(
                out,
                "- {small_kib} KiB PUT ops/s >= 1.5x s3s-fs: {} -> {verdict}",
                rt.map_or("n/a".into(), |x| format!("{x:.2}x"))
            );
        }
        let f = ratio(p.large_get_mibs, ceiling);
        let verdict = match f {
            Some(x) if x >= 0.8 => "PASS",
            Some(_) => "FAIL",
            None => "n/a",
        };
        let _ = writeln!(
            out,
            "- {large_mib} MiB GET >= 0.8x disk read ({ceiling_name}): {} -> {verdict}",
            f.map_or("n/a".into(), |x| format!("{x:.2}x"))
        );
    }
    let notes: Vec<String> = results
        .iter()
        .flat_map(|(n, r)| r.notes.iter().map(move |x| format!("- {n}: {x}")))
        .collect();
    if !notes.is_empty() {
        out.push_str("\nNotes:\n\n");
        for n in notes {
            out.push_str(&n);
            out.push('\n');
        }
    }
    let _ = writeln!(
        out,
        "\n({} x {large_mib} MiB sequential objects; {small_kib} KiB phases {}s or {} ops each; client and servers share this machine's cores)",
        cfg.large_count, cfg.small_secs, cfg.max_ops
    );
    out
}

fn json_num(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map_or("null".into(), |x| format!("{x:.3}"))
}

fn to_json(cfg: &Config, results: &[(String, Results)]) -> String {
    let mut s = String::from("{\n  \"targets\": {");
    for (i, (name, r)) in results.iter().enumerate() {
        let small = |x: &Option<SmallResult>| match x {
            Some(x) => format!(
                "{{\"ops_per_sec\": {}, \"ops\": {}, \"errors\": {}, \"secs\": {}, \"p50_ms\": {}, \"p99_ms\": {}}}",
                json_num(Some(x.ops_per_sec())),
                x.ops,
                x.errors,
                json_num(Some(x.secs)),
                json_num(Some(x.p50_ms)),
                json_num(Some(x.p99_ms))
            ),
            None => "null".into(),
        };
        let _ = write!(
            s,
            "{}\n    \"{}\": {{\"large_put_mib_s\": {}, \"large_get_mib_s\": {}, \"small_put\": {}, \"small_get\": {}}}",
            if i > 0 { "," } else { "" },
            name.replace(['"', '\\'], "_"),
            json_num(r.large_put_mibs),
            json_num(r.large_get_mibs),
            small(&r.small_put),
            small(&r.small_get)
        );
    }
    let _ = write!(
        s,
        "\n  }},\n  \"dd_mib_s\": {{\"cold\": {}, \"direct\": {}, \"cached\": {}}},\n  \"large_object_bytes\": {},\n  \"large_count\": {},\n  \"small_object_bytes\": {},\n  \"concurrency\": {}\n}}\n",
        json_num(cfg.dd_cold),
        json_num(cfg.dd_direct),
        json_num(cfg.dd_cached),
        cfg.large_bytes,
        cfg.large_count,
        cfg.small_bytes,
        cfg.concurrency
    );
    s
}

async fn run(cfg: Config) -> Result<bool> {
    let client = new_client(cfg.concurrency);
    let large = pseudo_random(cfg.large_bytes, 0x9E37_79B9_7F4A_7C15);
    let small = pseudo_random(cfg.small_bytes, 0xD1B5_4A32_D192_ED03);
    let mut results = Vec::new();
    let mut all_ok = true;
    for t in &cfg.targets {
        let r = bench_target(&client, &cfg, t, &large, &small).await;
        if r.notes.iter().any(|n| n.contains("FAILED")) {
            all_ok = false;
        }
        results.push((t.name.clone(), r));
    }
    let table = report(&cfg, &results);
    println!("\n{table}");
    if let Some(path) = &cfg.json {
        std::fs::write(path, to_json(&cfg, &results)).with_context(|| format!("writing {path}"))?;
        eprintln!("results written to {path}");
    }
    Ok(all_ok)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse_args(&args) {
        Ok(Some(cfg)) => cfg,
        Ok(None) => {
            // `cargo test` (or `cargo bench` without targets): self-tests only.
            if args.iter().any(|a| a == "--bench") {
                eprintln!("no --target given: running the self-tests only\n{USAGE}");
            }
            std::process::exit(if selftest::run() == 0 { 0 } else { 101 });
        }
        Err(e) => {
            eprintln!("s3_bench: {e:#}");
            std::process::exit(2);
        }
    };
    if selftest::run() != 0 {
        eprintln!("s3_bench: the SigV4 self-tests failed; not benchmarking");
        std::process::exit(101);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("s3_bench: cannot start tokio: {e}");
            std::process::exit(1);
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("s3_bench: {e:#}");
            std::process::exit(1);
        }
    }
}
