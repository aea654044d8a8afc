//! imgproxy's URL signatures: HMAC-SHA256 keyed by a (hex-decoded) key over the (hex-decoded)
//! salt followed by the signed part of the path, cut to the signature size and written as
//! URL-safe base64 without padding. Read in imgproxy's `security/signature.go`,
//! `security/config.go` and `config/configurators/configurators.go`.
//!
//! What must stay true:
//!
//! * The signed part is everything after the signature segment, starting with `/`
//!   ([`crate::imaging::url::ParsedPath::signed_part`]); like imgproxy, a signed part given
//!   without its leading `/` is signed as if it had one.
//! * Several key/salt pairs may be configured, as many salts as keys; a signature made with
//!   any pair is accepted, [`Signer::sign`] uses the first.
//! * The signature size is 1..=32 bytes (default 32); a signature of another length is
//!   simply invalid. Decoding is as lenient as Go's (`=` refused, trailing bits ignored).
//! * Comparisons are constant-time; no error message ever contains a key or a salt.
//! * Trusted signatures (`IMGPROXY_TRUSTED_SIGNATURES`) are accepted verbatim for any path.
//!
//! One deliberate difference: an empty key (`IMGPROXY_KEY=abcd,` has two keys, the second
//! empty) is refused, since anyone can compute an HMAC with an empty key; imgproxy takes it.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::imaging::url::BASE64_URL_LENIENT;

type HmacSha256 = Hmac<Sha256>;

/// The largest (and default) signature size: the whole SHA-256 HMAC.
pub const MAX_SIGNATURE_SIZE: usize = 32;

/// imgproxy's default `IMGPROXY_SIGNATURE_SIZE`.
pub const DEFAULT_SIGNATURE_SIZE: usize = MAX_SIGNATURE_SIZE;

/// A bad signing configuration, or a signature that does not verify. Positions are
/// 1-based, as a person counts the entries of `IMGPROXY_KEY=k1,k2`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature key #{position} is not valid hex")]
    KeyNotHex { position: usize },
    #[error("signature key #{position} is empty")]
    EmptyKey { position: usize },
    #[error("signature salt #{position} is not valid hex")]
    SaltNotHex { position: usize },
    #[error("{keys} signature key(s) but {salts} salt(s): there must be as many salts as keys")]
    CountMismatch { keys: usize, salts: usize },
    #[error("no signature key/salt pairs configured")]
    NoPairs,
    #[error("signature size must be within 1..=32 bytes, got {0}")]
    BadSize(usize),
    #[error("invalid signature")]
    Invalid,
}

/// Signs and verifies paths with one or more key/salt pairs.
#[derive(Clone)]
pub struct Signer {
    /// HMAC states keyed and already fed their salt: the first pair, then the others.
    primary: HmacSha256,
    others: Vec<HmacSha256>,
    size: usize,
    trusted: Vec<String>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("pairs", &(1 + self.others.len()))
            .field("signature_size", &self.size)
            .field("trusted_signatures", &self.trusted.len())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Builds a signer from hex-encoded keys and salts (as many salts as keys, at least one
    /// pair) and a signature size in bytes (1..=32).
    pub fn new<K: AsRef<str>, S: AsRef<str>>(
        keys: &[K],
        salts: &[S],
        signature_size: usize,
    ) -> Result<Signer, SignatureError> {
        if !(1..=MAX_SIGNATURE_SIZE).contains(&signature_size) {
            return Err(SignatureError::BadSize(signature_size));
        }
        if keys.len() != salts.len() {
            return Err(SignatureError::CountMismatch {
                keys: keys.len(),
                salts: salts.len(),
            });
        }
        let mut states = Vec::with_capacity(keys.len());
        for (index, (key, salt)) in keys.iter().zip(salts).enumerate() {
            let position = index + 1;
            let key = hex::decode(key.as_ref().trim())
                .map_err(|_| SignatureError::KeyNotHex { position })?;
            if key.is_empty() {
                return Err(SignatureError::EmptyKey { position });
            }
            let salt = hex::decode(salt.as_ref().trim())
                .map_err(|_| SignatureError::SaltNotHex { position })?;
            // HMAC takes a key of any length, so this never fails.
            let mut state = HmacSha256::new_from_slice(&key)
                .map_err(|_| SignatureError::EmptyKey { position })?;
            state.update(&salt);
            states.push(state);
        }
        let mut states = states.into_iter();
        let primary = states.next().ok_or(SignatureError::NoPairs)?;
        Ok(Signer {
            primary,
            others: states.collect(),
            size: signature_size,
            trusted: Vec::new(),
        })
    }

    /// Builds a signer from configuration as imgproxy takes it: comma-separated hex lists
    /// (`IMGPROXY_KEY`, `IMGPROXY_SALT`; blanks around entries are ignored) and a size
    /// (`IMGPROXY_SIGNATURE_SIZE`). Both lists empty means signing is off: `Ok(None)`.
    pub fn from_config(
        keys: &str,
        salts: &str,
        signature_size: usize,
    ) -> Result<Option<Signer>, SignatureError> {
        let keys = split_list(keys);
        let salts = split_list(salts);
        if keys.is_empty() && salts.is_empty() {
            return Ok(None);
        }
        Signer::new(&keys, &salts, signature_size).map(Some)
    }

    /// Adds signatures accepted verbatim for any path (`IMGPROXY_TRUSTED_SIGNATURES`; split
    /// a comma-separated value with [`split_list`]).
    pub fn with_trusted_signatures<I, T>(mut self, signatures: I) -> Signer
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.trusted.extend(
            signatures
                .into_iter()
                .map(Into::into)
                .filter(|s: &String| !s.is_empty()),
        );
        self
    }

    /// The signature size in bytes.
    pub fn signature_size(&self) -> usize {
        self.size
    }

    /// How many key/salt pairs are configured.
    pub fn pair_count(&self) -> usize {
        1 + self.others.len()
    }

    /// The signature of `signed_part` (the path after the signature, starting with `/`)
    /// with the first key/salt pair.
    pub fn sign(&self, signed_part: &str) -> String {
        let digest = digest(&self.primary, signed_part);
        URL_SAFE_NO_PAD.encode(&digest[..self.size])
    }

    /// `signed_part` with its signature in front: the whole request path.
    pub fn signed_path(&self, signed_part: &str) -> String {
        let slash = if signed_part.starts_with('/') {
            ""
        } else {
            "/"
        };
        format!("/{}{slash}{signed_part}", self.sign(signed_part))
    }

    /// Accepts `signature` for `signed_part` if it is trusted or if any key/salt pair made
    /// it; anything else (undecodable, wrong length, mismatch) is [`SignatureError::Invalid`].
    pub fn verify(&self, signature: &str, signed_part: &str) -> Result<(), SignatureError> {
        let mut trusted = false;
        for candidate in &self.trusted {
            trusted |= constant_time_eq(candidate.as_bytes(), signature.as_bytes());
        }
        if trusted {
            return Ok(());
        }
        let tag = BASE64_URL_LENIENT
            .decode(signature)
            .map_err(|_| SignatureError::Invalid)?;
        if tag.len() != self.size {
            return Err(SignatureError::Invalid);
        }
        let mut valid = false;
        for state in std::iter::once(&self.primary).chain(&self.others) {
            valid |= feed(state, signed_part).verify_truncated_left(&tag).is_ok();
        }
        if valid {
            Ok(())
        } else {
            Err(SignatureError::Invalid)
        }
    }
}

/// Splits a comma-separated configuration list, trimming blanks around entries; an empty or
/// blank list has no entries.
pub fn split_list(list: &str) -> Vec<&str> {
    if list.trim().is_empty() {
        return Vec::new();
    }
    list.split(',').map(str::trim).collect()
}

/// A keyed, salted state fed the signed part (with `/` in front when it lacks one).
fn feed(state: &HmacSha256, signed_part: &str) -> HmacSha256 {
    let mut mac = state.clone();
    if !signed_part.starts_with('/') {
        mac.update(b"/");
    }
    mac.update(signed_part.as_bytes());
    mac
}

fn digest(state: &HmacSha256, signed_part: &str) -> [u8; MAX_SIGNATURE_SIZE] {
    feed(state, signed_part).finalize().into_bytes().into()
}

/// Equality whose time depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::url::parse_path;

    /// docs/signing_the_url.md: key `secret`, salt `hello`.
    const DOC_KEY: &str = "736563726574";
    const DOC_SALT: &str = "68656C6C6F";
    const DOC_PATH: &str =
        "/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png";
    const DOC_SIGNATURE: &str = "oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8";

    /// security/signature_test.go: keys `test-key`, `test-key2`, salts `test-salt`,
    /// `test-salt2`, path `asd` (signed as `/asd`).
    const TEST_KEY: &str = "746573742d6b6579";
    const TEST_SALT: &str = "746573742d73616c74";
    const TEST_KEY2: &str = "746573742d6b657932";
    const TEST_SALT2: &str = "746573742d73616c7432";

    fn doc_signer(size: usize) -> Signer {
        Signer::new(&[DOC_KEY], &[DOC_SALT], size).unwrap()
    }

    #[test]
    fn published_vector() {
        let signer = doc_signer(32);
        assert_eq!(signer.sign(DOC_PATH), DOC_SIGNATURE);
        assert_eq!(signer.verify(DOC_SIGNATURE, DOC_PATH), Ok(()));
        assert_eq!(
            signer.signed_path(DOC_PATH),
            format!("/{DOC_SIGNATURE}{DOC_PATH}")
        );
    }

    #[test]
    fn published_vector_through_the_url_parser() {
        let path = format!("/{DOC_SIGNATURE}{DOC_PATH}");
        let parsed = parse_path(&path).unwrap();
        assert_eq!(parsed.signed_part, DOC_PATH);
        assert_eq!(
            doc_signer(32).verify(parsed.signature, &parsed.signed_part),
            Ok(())
        );
    }

    #[test]
    fn older_documented_vector() {
        // The imgproxy 2 docs signed the basic format path with the same key and salt.
        let path = "/fill/300/400/sm/0/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png";
        assert_eq!(
            doc_signer(32).sign(path),
            "AfrOrF3gWeDA6VOlDG4TzxMv39O7MXnF4CXpKUwGqRM"
        );
    }

    #[test]
    fn imgproxy_test_suite_vectors() {
        let one = Signer::new(&[TEST_KEY], &[TEST_SALT], 32).unwrap();
        assert_eq!(
            one.verify("oWaL7QoW5TsgbuiS9-5-DI8S3Ibbo1gdB2SteJh3a20", "asd"),
            Ok(())
        );
        assert_eq!(one.sign("asd"), one.sign("/asd"));
        assert_eq!(
            one.verify("oWaL7QoW5Ts", "asd"),
            Err(SignatureError::Invalid)
        );

        let truncated = Signer::new(&[TEST_KEY], &[TEST_SALT], 8).unwrap();
        assert_eq!(truncated.sign("/asd"), "oWaL7QoW5Ts");
        assert_eq!(truncated.verify("oWaL7QoW5Ts", "asd"), Ok(()));

        let two = Signer::new(&[TEST_KEY, TEST_KEY2], &[TEST_SALT, TEST_SALT2], 32).unwrap();
        assert_eq!(two.pair_count(), 2);
        assert_eq!(
            two.verify("jYz1UZ7j1BCdSzH3pZhaYf0iuz0vusoOTdqJsUT6WXI", "asd"),
            Ok(())
        );
        assert_eq!(
            two.verify("oWaL7QoW5TsgbuiS9-5-DI8S3Ibbo1gdB2SteJh3a20", "asd"),
            Ok(())
        );
        assert_eq!(
            two.verify("dtLwhdnPPis", "asd"),
            Err(SignatureError::Invalid)
        );
        // Signing uses the first pair.
        assert_eq!(
            two.sign("asd"),
            "oWaL7QoW5TsgbuiS9-5-DI8S3Ibbo1gdB2SteJh3a20"
        );
    }

    #[test]
    fn truncation_keeps_the_first_bytes() {
        let full = BASE64_URL_LENIENT.decode(DOC_SIGNATURE).unwrap();
        for size in 1..=32 {
            let signer = doc_signer(size);
            let signature = signer.sign(DOC_PATH);
            assert_eq!(
                signature,
                URL_SAFE_NO_PAD.encode(&full[..size]),
                "size {size}"
            );
            assert_eq!(signer.verify(&signature, DOC_PATH), Ok(()), "size {size}");
        }
        assert_eq!(
            doc_signer(8).sign(DOC_PATH),
            URL_SAFE_NO_PAD.encode(&full[..8])
        );
        // A signature of another size is invalid, even a longer correct one.
        assert_eq!(
            doc_signer(8).verify(DOC_SIGNATURE, DOC_PATH),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            doc_signer(32).verify(&doc_signer(8).sign(DOC_PATH), DOC_PATH),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn tampering_is_refused() {
        let signer = doc_signer(32);
        let tampered_path = DOC_PATH.replace("300", "301");
        assert_eq!(
            signer.verify(DOC_SIGNATURE, &tampered_path),
            Err(SignatureError::Invalid)
        );
        let mut tampered = DOC_SIGNATURE.to_owned();
        tampered.replace_range(0..1, "p");
        assert_eq!(
            signer.verify(&tampered, DOC_PATH),
            Err(SignatureError::Invalid)
        );
        for bad in [
            "",
            "unsafe",
            "_",
            "insecure",
            "!!!!",
            "oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8=",
        ] {
            assert_eq!(
                signer.verify(bad, DOC_PATH),
                Err(SignatureError::Invalid),
                "{bad:?}"
            );
        }
        // A different salt or key gives a different signature.
        let other_salt = Signer::new(&[DOC_KEY], &["68656C6C6F21"], 32).unwrap();
        assert_eq!(
            other_salt.verify(DOC_SIGNATURE, DOC_PATH),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn trailing_bits_are_ignored_like_go() {
        // 32 bytes take 43 characters; the last one (`8`, 0b111100) carries 4 bits of the
        // MAC and 2 unused bits, which Go's decoder does not check.
        let signer = doc_signer(32);
        let with_last = |last: &str| {
            let mut variant = DOC_SIGNATURE.to_owned();
            variant.replace_range(42..43, last);
            variant
        };
        assert_eq!(signer.verify(&with_last("9"), DOC_PATH), Ok(()));
        assert_eq!(signer.verify(&with_last("_"), DOC_PATH), Ok(()));
        assert_eq!(
            signer.verify(&with_last("4"), DOC_PATH),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn trusted_signatures() {
        let signer = doc_signer(32).with_trusted_signatures(split_list("truested, other,"));
        assert_eq!(signer.verify("truested", "/anything"), Ok(()));
        assert_eq!(signer.verify("other", "/anything"), Ok(()));
        assert_eq!(
            signer.verify("untrusted", "/anything"),
            Err(SignatureError::Invalid)
        );
        assert_eq!(signer.verify("", "/anything"), Err(SignatureError::Invalid));
    }

    #[test]
    fn configuration_errors_name_the_entry() {
        assert_eq!(
            Signer::new(&[DOC_KEY, "zz"], &[DOC_SALT, DOC_SALT], 32).unwrap_err(),
            SignatureError::KeyNotHex { position: 2 }
        );
        assert_eq!(
            Signer::new(&["abc"], &[DOC_SALT], 32).unwrap_err(),
            SignatureError::KeyNotHex { position: 1 }
        );
        assert_eq!(
            Signer::new(&[DOC_KEY], &["hello"], 32).unwrap_err(),
            SignatureError::SaltNotHex { position: 1 }
        );
        assert_eq!(
            Signer::new(&[DOC_KEY, ""], &[DOC_SALT, DOC_SALT], 32).unwrap_err(),
            SignatureError::EmptyKey { position: 2 }
        );
        assert_eq!(
            Signer::new(&[DOC_KEY, DOC_KEY], &[DOC_SALT], 32).unwrap_err(),
            SignatureError::CountMismatch { keys: 2, salts: 1 }
        );
        let none: [&str; 0] = [];
        assert_eq!(
            Signer::new(&none, &none, 32).unwrap_err(),
            SignatureError::NoPairs
        );
        assert_eq!(
            Signer::new(&[DOC_KEY], &[DOC_SALT], 0).unwrap_err(),
            SignatureError::BadSize(0)
        );
        assert_eq!(
            Signer::new(&[DOC_KEY], &[DOC_SALT], 33).unwrap_err(),
            SignatureError::BadSize(33)
        );

        let message = Signer::new(&["736563726574", "7365637265zz"], &[DOC_SALT, DOC_SALT], 32)
            .unwrap_err()
            .to_string();
        assert_eq!(message, "signature key #2 is not valid hex");
        assert!(!message.contains("736563"));
        // An empty salt is allowed: the key is the secret.
        assert!(Signer::new(&[DOC_KEY], &[""], 32).is_ok());
    }

    #[test]
    fn from_config_lists() {
        assert!(Signer::from_config("", "", 32).unwrap().is_none());
        assert!(Signer::from_config("  ", "", 32).unwrap().is_none());
        assert_eq!(
            Signer::from_config(DOC_KEY, "", 32).unwrap_err(),
            SignatureError::CountMismatch { keys: 1, salts: 0 }
        );
        let signer = Signer::from_config(
            &format!("{TEST_KEY}, {DOC_KEY}"),
            &format!("{TEST_SALT} ,{DOC_SALT}"),
            32,
        )
        .unwrap()
        .unwrap();
        assert_eq!(signer.pair_count(), 2);
        assert_eq!(signer.verify(DOC_SIGNATURE, DOC_PATH), Ok(()));
        assert_eq!(
            signer.sign("asd"),
            "oWaL7QoW5TsgbuiS9-5-DI8S3Ibbo1gdB2SteJh3a20"
        );
        assert_eq!(
            Signer::from_config(
                &format!("{DOC_KEY},"),
                &format!("{DOC_SALT},{DOC_SALT}"),
                32
            )
            .unwrap_err(),
            SignatureError::EmptyKey { position: 2 }
        );
        assert_eq!(split_list("a,b"), ["a", "b"]);
        assert_eq!(split_list(""), Vec::<&str>::new());
    }

    #[test]
    fn debug_hides_secrets() {
        let text = format!("{:?}", doc_signer(8));
        assert!(text.contains("signature_size: 8"), "{text}");
        assert!(
            !text.contains("736563") && !text.contains("secret"),
            "{text}"
        );
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
