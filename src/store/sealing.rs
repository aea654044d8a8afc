//! Encryption at rest (SSE-S3 and SSE-C), the pure part: keys, the chunked blob format, and
//! which key may read which object. The embedded store does the I/O (`embedded/sealed_io.rs`).
//!
//! Envelope encryption, as MinIO and S3 do it: every blob (a whole object, or one part of a
//! multipart object) gets its own random 256-bit data key. The data key is sealed with
//! AES-256-GCM under the store's master key (SSE-S3) or under the request's customer key
//! (SSE-C), and the sealed form is kept in the catalog beside the blob's name. The customer
//! key itself is never kept, only a salted MD5 of it, to tell a wrong key from a damaged blob.
//!
//! A blob is its plaintext cut into 64 KiB chunks, each sealed with the data key as
//! AES-256-GCM with its own 16-byte tag (STREAM, Hoang–Reyhanitabar–Rogaway–Vizár): the nonce is
//! the chunk's index and a last-chunk flag, so chunks cannot be reordered, dropped or
//! truncated unnoticed, and a ranged GET opens only the chunks its range touches. An empty
//! object is one empty chunk, so even its emptiness is authenticated. Overhead: 16 bytes per
//! 64 KiB (0.02%).

use std::ops::Range;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Plaintext bytes per chunk.
pub const CHUNK: u64 = 64 * 1024;
/// AES-GCM's tag, after every chunk.
pub const TAG: u64 = 16;
/// A whole chunk as stored.
pub const SEALED_CHUNK: u64 = CHUNK + TAG;
/// Length of every key here (AES-256).
pub const KEY_LEN: usize = 32;

/// Associated data of a sealed data key: binds it to this use.
const DATA_KEY_AAD: &[u8] = b"pixelport sse data key v1";
/// `SealedKey::by` for a data key sealed under the request's customer key.
const BY_CUSTOMER: &str = "customer";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// An SSE-C object read without its key (S3's 400 InvalidRequest).
    #[error(
        "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object."
    )]
    KeyRequired,
    /// An SSE-C object read with another key (S3's 403 AccessDenied).
    #[error(
        "The SSE-C key provided does not match the key the object was encrypted with (access denied)"
    )]
    WrongKey,
    /// SSE-C headers on an object that was not written with a customer key (S3's 400).
    #[error("The encryption parameters are not applicable to this object.")]
    NotApplicable,
    /// The master key file cannot be read or made, or is not the key a blob was sealed with.
    #[error("{0}")]
    MasterKey(String),
    /// A chunk or a sealed key failed authentication: changed or damaged on disk.
    #[error("encrypted data failed authentication ({0}): it was changed or damaged on disk")]
    Corrupt(String),
}

/// How an object is encrypted at rest, as the catalog keeps it (in `ObjectAttrs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Encryption {
    /// SSE-S3 (`x-amz-server-side-encryption: AES256`): data keys sealed by the master key.
    S3,
    /// SSE-C: data keys sealed by the customer's key, of which only a salted MD5 is kept.
    Customer {
        /// Hex of 16 random bytes.
        salt: String,
        /// Hex MD5 of salt ‖ key.
        key_hash: String,
    },
}

impl Encryption {
    /// SSE-C's record of `key`, with a fresh salt.
    pub fn customer(key: &CustomerKey) -> Encryption {
        let salt = hex::encode(random::<16>());
        let key_hash = key.salted_hash(&salt);
        Encryption::Customer { salt, key_hash }
    }
}

/// An SSE-C key as a request carries it (`x-amz-server-side-encryption-customer-key`). Its
/// `Debug` shows only the key's MD5, so it cannot end up in a log.
#[derive(Clone, PartialEq, Eq)]
pub struct CustomerKey([u8; KEY_LEN]);

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CustomerKey(md5 {})", self.md5_base64())
    }
}

impl CustomerKey {
    pub fn new(bytes: [u8; KEY_LEN]) -> CustomerKey {
        CustomerKey(bytes)
    }

    /// Base64 of the key's MD5, as `x-amz-server-side-encryption-customer-key-MD5` carries it.
    pub fn md5_base64(&self) -> String {
        B64.encode(Md5::digest(self.0))
    }

    fn salted_hash(&self, salt: &str) -> String {
        let mut h = Md5::new();
        h.update(salt.as_bytes());
        h.update(self.0);
        hex::encode(h.finalize())
    }

    /// Whether this is the key `encryption` recorded.
    fn matches(&self, salt: &str, key_hash: &str) -> bool {
        // Constant time: the hash is not a secret, but there is no reason to leak it either.
        crate::imaging::signature::constant_time_eq(
            self.salted_hash(salt).as_bytes(),
            key_hash.as_bytes(),
        )
    }
}

/// Whether a request carrying `given` (its SSE-C key, if any) may read an object encrypted
/// as `stored`, in S3's terms: an SSE-C object needs its own key; SSE-C headers on any other
/// object are refused.
pub fn check_access(
    stored: Option<&Encryption>,
    given: Option<&CustomerKey>,
) -> Result<(), SealError> {
    match (stored, given) {
        (Some(Encryption::Customer { .. }), None) => Err(SealError::KeyRequired),
        (Some(Encryption::Customer { salt, key_hash }), Some(k)) => {
            if k.matches(salt, key_hash) {
                Ok(())
            } else {
                Err(SealError::WrongKey)
            }
        }
        (_, Some(_)) => Err(SealError::NotApplicable),
        (_, None) => Ok(()),
    }
}

/// The store's own key for SSE-S3, from `data_dir/sse.key` or `[s3] sse_key_file`.
pub struct MasterKey {
    key: LessSafeKey,
    /// The first 8 bytes of the key's SHA-256, in hex: names the key in sealed data keys, so
    /// a wrong key file is told apart from a damaged blob.
    id: String,
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Result<MasterKey, SealError> {
        let id = hex::encode(&Sha256::digest(bytes)[..8]);
        Ok(MasterKey {
            key: aead_key(bytes)?,
            id,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Reads the key file, or, when `create` and it does not exist, makes one (32 random
    /// bytes, base64, mode 0600). The file holds the key as base64 or hex text, or as 32
    /// raw bytes.
    pub fn load_or_create(path: &Path, create: bool) -> Result<MasterKey, SealError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            SealError::MasterKey(format!("{}: {what}: {e}", path.display()))
        };
        match std::fs::read(path) {
            Ok(raw) => {
                warn_if_readable_by_others(path);
                let bytes = parse_key_file(&raw).map_err(|e| fail("not an SSE key", &e))?;
                MasterKey::from_bytes(&bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let bytes = random::<KEY_LEN>();
                crate::credentials::write_private(
                    path,
                    format!("{}\n", B64.encode(bytes)).as_bytes(),
                )
                .map_err(|e| fail("cannot create the key file", &e))?;
                tracing::info!(
                    path = %path.display(),
                    "made the key that encrypts SSE-S3 objects at rest: back it up with the \
                     catalog, since without it those objects cannot be read"
                );
                MasterKey::from_bytes(&bytes)
            }
            Err(e) => Err(fail("cannot read the key file", &e)),
        }
    }
}

fn parse_key_file(raw: &[u8]) -> Result<[u8; KEY_LEN], String> {
    if let Ok(bytes) = <[u8; KEY_LEN]>::try_from(raw) {
        return Ok(bytes);
    }
    let text = std::str::from_utf8(raw)
        .map_err(|_| format!("expected {KEY_LEN} raw bytes, or the key as base64 or hex text"))?
        .trim();
    let decoded = if text.len() == 2 * KEY_LEN {
        hex::decode(text).map_err(|e| e.to_string())?
    } else {
        B64.decode(text).map_err(|e| e.to_string())?
    };
    <[u8; KEY_LEN]>::try_from(decoded.as_slice())
        .map_err(|_| format!("the key is {} bytes, not {KEY_LEN}", decoded.len()))
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path)
            && m.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", m.permissions().mode() & 0o777),
                "the SSE key file is readable by other users: chmod 600 it"
            );
        }
    }
}

/// The secret a data key is sealed under.
#[derive(Clone, Copy)]
pub enum Sealer<'a> {
    Master(&'a MasterKey),
    Customer(&'a CustomerKey),
}

/// A blob's data key, sealed, as the catalog keeps it beside the blob's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKey {
    /// What sealed it: a master key's id, or `customer`.
    pub by: String,
    /// Base64 of nonce ‖ encrypted data key ‖ tag.
    pub key: String,
}

impl SealedKey {
    /// Whether `sealer` is what sealed this key.
    pub fn sealed_by(&self, sealer: Sealer<'_>) -> bool {
        match sealer {
            Sealer::Master(m) => self.by == m.id,
            Sealer::Customer(_) => self.by == BY_CUSTOMER,
        }
    }
}

/// One blob's data key.
pub struct DataKey(LessSafeKey);

impl DataKey {
    /// A fresh data key, and its sealed form under `sealer`.
    pub fn generate(sealer: Sealer<'_>) -> Result<(DataKey, SealedKey), SealError> {
        let bytes = random::<KEY_LEN>();
        let nonce = random::<NONCE_LEN>();
        let (wrapping, by) = match sealer {
            Sealer::Master(m) => (m.key_ref(), m.id.clone()),
            Sealer::Customer(c) => (Wrapping::Owned(aead_key(&c.0)?), BY_CUSTOMER.to_owned()),
        };
        let mut sealed = bytes.to_vec();
        wrapping
            .get()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(DATA_KEY_AAD),
                &mut sealed,
            )
            .map_err(|_| SealError::Corrupt("sealing a data key".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok((
            DataKey(aead_key(&bytes)?),
            SealedKey {
                by,
                key: B64.encode(out),
            },
        ))
    }

    /// Opens a sealed data key with `sealer`.
    pub fn unseal(sealed: &SealedKey, sealer: Sealer<'_>) -> Result<DataKey, SealError> {
        let wrapping = match sealer {
            Sealer::Master(m) => {
                if sealed.by != m.id {
                    return Err(SealError::MasterKey(format!(
                        "this object was encrypted under the SSE key with id {}, but the key \
                         loaded has id {}: put back the key file it was written with",
                        sealed.by, m.id
                    )));
                }
                m.key_ref()
            }
            Sealer::Customer(c) => Wrapping::Owned(aead_key(&c.0)?),
        };
        let raw = B64
            .decode(&sealed.key)
            .map_err(|e| SealError::Corrupt(format!("sealed data key: {e}")))?;
        if raw.len() != NONCE_LEN + KEY_LEN + TAG as usize {
            return Err(SealError::Corrupt(
                "sealed data key has the wrong length".into(),
            ));
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| SealError::Corrupt("sealed data key nonce".into()))?;
        let mut rest = rest.to_vec();
        let opened = wrapping
            .get()
            .open_in_place(nonce, Aad::from(DATA_KEY_AAD), &mut rest)
            .map_err(|_| match sealer {
                Sealer::Customer(_) => SealError::WrongKey,
                Sealer::Master(_) => SealError::Corrupt("sealed data key".into()),
            })?;
        let bytes = <[u8; KEY_LEN]>::try_from(&opened[..])
            .map_err(|_| SealError::Corrupt("data key length".into()))?;
        Ok(DataKey(aead_key(&bytes)?))
    }

    /// Seals chunk `index` in place: `buf` holds its plaintext and gets the tag appended.
    pub fn seal_chunk(&self, index: u64, last: bool, buf: &mut Vec<u8>) -> Result<(), SealError> {
        self.0
            .seal_in_place_append_tag(chunk_nonce(index, last), Aad::empty(), buf)
            .map_err(|_| SealError::Corrupt(format!("sealing chunk {index}")))
    }

    /// Opens chunk `index` in place (`buf` holds ciphertext ‖ tag); returns the plaintext's
    /// length (the start of `buf`).
    pub fn open_chunk(&self, index: u64, last: bool, buf: &mut [u8]) -> Result<usize, SealError> {
        self.0
            .open_in_place(chunk_nonce(index, last), Aad::empty(), buf)
            .map(|p| p.len())
            .map_err(|_| SealError::Corrupt(format!("chunk {index}")))
    }
}

impl MasterKey {
    fn key_ref(&self) -> Wrapping<'_> {
        Wrapping::Borrowed(&self.key)
    }
}

enum Wrapping<'a> {
    Borrowed(&'a LessSafeKey),
    Owned(LessSafeKey),
}

impl Wrapping<'_> {
    fn get(&self) -> &LessSafeKey {
        match self {
            Wrapping::Borrowed(k) => k,
            Wrapping::Owned(k) => k,
        }
    }
}

fn aead_key(bytes: &[u8; KEY_LEN]) -> Result<LessSafeKey, SealError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| SealError::MasterKey("AES-256-GCM refused a 32-byte key".into()))
}

fn chunk_nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[..8].copy_from_slice(&index.to_be_bytes());
    n[8] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::fill(&mut b[..]);
    b
}

/// Seals a body into the chunk format as its bytes arrive, when its length is not known
/// until the end: a chunk is sealed once more bytes follow it, and the last by `finish`.
pub struct ChunkSealer {
    key: DataKey,
    pending: Vec<u8>,
    index: u64,
}

impl ChunkSealer {
    pub fn new(key: DataKey) -> ChunkSealer {
        ChunkSealer {
            key,
            pending: Vec::with_capacity(CHUNK as usize),
            index: 0,
        }
    }

    /// Takes `data`, appending every chunk it completes (sealed) to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut bytes::BytesMut) -> Result<(), SealError> {
        while !data.is_empty() {
            // The pending chunk is full and more bytes follow: it is not the last one.
            if self.pending.len() == CHUNK as usize {
                self.seal_pending(false, out)?;
            }
            let take = (CHUNK as usize - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Seals the last chunk (empty for an empty body) into `out`.
    pub fn finish(mut self, out: &mut bytes::BytesMut) -> Result<(), SealError> {
        self.seal_pending(true, out)
    }

    fn seal_pending(&mut self, last: bool, out: &mut bytes::BytesMut) -> Result<(), SealError> {
        let mut chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK as usize));
        self.key.seal_chunk(self.index, last, &mut chunk)?;
        out.extend_from_slice(&chunk);
        self.index += 1;
        Ok(())
    }
}

/// Chunks of a `plain`-byte blob (an empty blob is one empty chunk).
pub fn chunk_count(plain: u64) -> u64 {
    plain.div_ceil(CHUNK).max(1)
}

/// Bytes on disk of a blob holding `plain` bytes.
pub fn sealed_len(plain: u64) -> u64 {
    plain + chunk_count(plain) * TAG
}

/// Plaintext bytes of chunk `index` in a `plain`-byte blob.
pub fn chunk_plain_len(plain: u64, index: u64) -> u64 {
    plain.saturating_sub(index * CHUNK).min(CHUNK)
}

/// What to read from a sealed blob of `plain` bytes to answer the plaintext `range` (which
/// must be non-empty and within the blob).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSpan {
    /// The chunks to open, by index.
    pub chunks: Range<u64>,
    /// Where the first of them starts in the blob file.
    pub file_offset: u64,
    /// Plaintext bytes to drop from the front of the first chunk.
    pub skip: u64,
    /// Plaintext bytes to send in all.
    pub len: u64,
}

pub fn chunk_span(range: Range<u64>) -> ChunkSpan {
    let first = range.start / CHUNK;
    let last = range.end.saturating_sub(1) / CHUNK;
    ChunkSpan {
        chunks: first..last.max(first) + 1,
        file_offset: first * SEALED_CHUNK,
        skip: range.start - first * CHUNK,
        len: range.end.saturating_sub(range.start),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> MasterKey {
        MasterKey::from_bytes(&[7u8; KEY_LEN]).unwrap()
    }

    fn seal_all(dk: &DataKey, plain: &[u8]) -> Vec<u8> {
        let n = chunk_count(plain.len() as u64);
        let mut out = Vec::new();
        for i in 0..n {
            let from = (i * CHUNK) as usize;
            let to = (from + CHUNK as usize).min(plain.len());
            let mut buf = plain[from..to].to_vec();
            dk.seal_chunk(i, i + 1 == n, &mut buf).unwrap();
            out.extend_from_slice(&buf);
        }
        out
    }

    /// Decrypts `range` the way the store does: only the chunks of its span.
    fn open_range(dk: &DataKey, sealed: &[u8], plain_len: u64, range: Range<u64>) -> Vec<u8> {
        let span = chunk_span(range);
        let n = chunk_count(plain_len);
        let mut out = Vec::new();
        let mut at = span.file_offset as usize;
        for i in span.chunks.clone() {
            let len = (chunk_plain_len(plain_len, i) + TAG) as usize;
            let mut buf = sealed[at..at + len].to_vec();
            at += len;
            let p = dk.open_chunk(i, i + 1 == n, &mut buf).unwrap();
            out.extend_from_slice(&buf[..p]);
        }
        let skip = span.skip as usize;
        out[skip..skip + span.len as usize].to_vec()
    }

    #[test]
    fn every_range_of_a_sealed_blob_reads_back_its_plaintext() {
        let m = master();
        let plain: Vec<u8> = (0..(3 * CHUNK + 100))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let (dk, sealed_key) = DataKey::generate(Sealer::Master(&m)).unwrap();
        let sealed = seal_all(&dk, &plain);
        assert_eq!(sealed.len() as u64, sealed_len(plain.len() as u64));
        let dk = DataKey::unseal(&sealed_key, Sealer::Master(&m)).unwrap();
        let n = plain.len() as u64;
        for (a, b) in [
            (0, n),
            (0, 1),
            (n - 1, n),
            (CHUNK - 1, CHUNK + 1),
            (CHUNK, 2 * CHUNK),
            (5, 3 * CHUNK + 7),
            (2 * CHUNK + 3, 2 * CHUNK + 4),
        ] {
            assert_eq!(
                open_range(&dk, &sealed, n, a..b),
                &plain[a as usize..b as usize],
                "{a}..{b}"
            );
        }
        let span = chunk_span(CHUNK + 10..2 * CHUNK + 1);
        assert_eq!(span.chunks, 1..3);
        assert_eq!(span.file_offset, SEALED_CHUNK);
    }

    #[test]
    fn sealing_as_bytes_arrive_matches_sealing_a_known_length() {
        let m = master();
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 9] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let (dk, sealed_key) = DataKey::generate(Sealer::Master(&m)).unwrap();
            let mut streamed = bytes::BytesMut::new();
            let mut sealer = ChunkSealer::new(dk);
            for piece in plain.chunks(7919) {
                sealer.push(piece, &mut streamed).unwrap();
            }
            sealer.finish(&mut streamed).unwrap();
            let dk = DataKey::unseal(&sealed_key, Sealer::Master(&m)).unwrap();
            assert_eq!(streamed.len() as u64, sealed_len(len), "{len}");
            if len > 0 {
                assert_eq!(open_range(&dk, &streamed, len, 0..len), plain, "{len}");
            } else {
                assert_eq!(dk.open_chunk(0, true, &mut streamed).unwrap(), 0);
            }
        }
    }

    #[test]
    fn no_plaintext_survives_sealing_and_no_two_blobs_share_a_data_key() {
        let m = master();
        let plain = b"the quick brown fox jumps over the lazy dog ".repeat(4000);
        let (a, _) = DataKey::generate(Sealer::Master(&m)).unwrap();
        let (b, _) = DataKey::generate(Sealer::Master(&m)).unwrap();
        let (sa, sb) = (seal_all(&a, &plain), seal_all(&b, &plain));
        assert!(!sa.windows(16).any(|w| w == &plain[..16]));
        assert_ne!(sa, sb);
    }

    #[test]
    fn tampering_reordering_and_truncation_are_refused() {
        let m = master();
        let plain = vec![1u8; (2 * CHUNK) as usize + 5];
        let (dk, _) = DataKey::generate(Sealer::Master(&m)).unwrap();
        let sealed = seal_all(&dk, &plain);
        let first = sealed[..SEALED_CHUNK as usize].to_vec();
        // A flipped bit.
        let mut bad = first.clone();
        bad[10] ^= 1;
        assert!(dk.open_chunk(0, false, &mut bad).is_err());
        // Chunk 0 presented as chunk 1, or as the last chunk (a truncated blob).
        assert!(dk.open_chunk(1, false, &mut first.clone()).is_err());
        assert!(dk.open_chunk(0, true, &mut first.clone()).is_err());
        assert_eq!(
            dk.open_chunk(0, false, &mut first.clone()).unwrap(),
            CHUNK as usize
        );
        // An empty blob is one authenticated empty chunk.
        let empty = seal_all(&dk, b"");
        assert_eq!(empty.len() as u64, TAG);
        assert_eq!(dk.open_chunk(0, true, &mut empty.clone()).unwrap(), 0);
    }

    #[test]
    fn customer_keys_are_checked_and_never_kept() {
        let key = CustomerKey::new([9u8; KEY_LEN]);
        let other = CustomerKey::new([8u8; KEY_LEN]);
        let enc = Encryption::customer(&key);
        let json = serde_json::to_string(&enc).unwrap();
        assert!(!json.contains(&hex::encode([9u8; KEY_LEN])));
        assert!(!json.contains(&key.md5_base64()));
        assert!(check_access(Some(&enc), Some(&key)).is_ok());
        assert!(matches!(
            check_access(Some(&enc), Some(&other)),
            Err(SealError::WrongKey)
        ));
        assert!(matches!(
            check_access(Some(&enc), None),
            Err(SealError::KeyRequired)
        ));
        assert!(matches!(
            check_access(Some(&Encryption::S3), Some(&key)),
            Err(SealError::NotApplicable)
        ));
        assert!(matches!(
            check_access(None, Some(&key)),
            Err(SealError::NotApplicable)
        ));
        assert!(check_access(Some(&Encryption::S3), None).is_ok());
        assert!(format!("{key:?}").contains(&key.md5_base64()));
        // The data key opens only with the same customer key.
        let (_, sealed) = DataKey::generate(Sealer::Customer(&key)).unwrap();
        assert!(DataKey::unseal(&sealed, Sealer::Customer(&key)).is_ok());
        assert!(matches!(
            DataKey::unseal(&sealed, Sealer::Customer(&other)),
            Err(SealError::WrongKey)
        ));
    }

    #[test]
    fn a_data_key_names_the_master_key_that_sealed_it() {
        let (m, other) = (master(), MasterKey::from_bytes(&[1u8; KEY_LEN]).unwrap());
        let (_, sealed) = DataKey::generate(Sealer::Master(&m)).unwrap();
        assert_eq!(sealed.by, m.id());
        match DataKey::unseal(&sealed, Sealer::Master(&other)) {
            Err(SealError::MasterKey(msg)) => assert!(msg.contains(m.id()), "{msg}"),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("opened with another master key"),
        }
    }

    #[test]
    fn key_files_are_made_private_and_read_in_every_form() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sse.key");
        assert!(MasterKey::load_or_create(&path, false).is_err());
        let made = MasterKey::load_or_create(&path, true).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            MasterKey::load_or_create(&path, true).unwrap().id(),
            made.id()
        );
        let bytes = [3u8; KEY_LEN];
        let want = MasterKey::from_bytes(&bytes).unwrap();
        for form in [
            bytes.to_vec(),
            format!("{}\n", hex::encode(bytes)).into_bytes(),
            format!("  {}\n", B64.encode(bytes)).into_bytes(),
        ] {
            assert_eq!(parse_key_file(&form).unwrap(), bytes);
        }
        assert_eq!(
            MasterKey::from_bytes(&parse_key_file(&bytes).unwrap())
                .unwrap()
                .id(),
            want.id()
        );
        assert!(parse_key_file(b"too short").is_err());
    }
}
