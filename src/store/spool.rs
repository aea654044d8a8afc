//! Spooling: a request body becomes a `Spooled` value, counted, hashed (MD5 plus any S3
//! checksums asked for) and capped at the size limit, before any store sees it. Small bodies
//! stay in memory; larger ones go to `tmp/` through OpenDAL's fs service, whose writer fsyncs
//! on close. A `Spooled` that no store consumed deletes its temporary file when dropped.
//! A body to be encrypted at rest is sealed as it arrives (`spool_sealed`), so its
//! plaintext never reaches the disk; its size, MD5 and checksums are the plaintext's.

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};
use opendal::Operator;
use s3s::checksum::ChecksumHasher;

use super::sealing::{ChunkSealer, DataKey, SealedKey};
use super::{Checksums, StoreError};

/// Bodies up to this size are kept in memory (and stored inline in the embedded catalog).
pub const INLINE_LIMIT: usize = 64 * 1024;
/// Write to disk in chunks of about this size.
const WRITE_CHUNK: usize = 1 << 20;

/// Which checksums to compute while spooling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChecksumSet {
    pub crc32: bool,
    pub crc32c: bool,
    pub sha1: bool,
    pub sha256: bool,
    pub crc64nvme: bool,
}

impl ChecksumSet {
    pub fn with_algorithm(mut self, name: &str) -> Result<Self, String> {
        match name.to_ascii_uppercase().as_str() {
            "CRC32" => self.crc32 = true,
            "CRC32C" => self.crc32c = true,
            "SHA1" => self.sha1 = true,
            "SHA256" => self.sha256 = true,
            "CRC64NVME" => self.crc64nvme = true,
            other => return Err(format!("unsupported checksum algorithm `{other}`")),
        }
        Ok(self)
    }

    fn hasher(self) -> ChecksumHasher {
        ChecksumHasher {
            crc32: self.crc32.then(Default::default),
            crc32c: self.crc32c.then(Default::default),
            sha1: self.sha1.then(Default::default),
            sha256: self.sha256.then(Default::default),
            crc64nvme: self.crc64nvme.then(Default::default),
        }
    }
}

#[derive(Debug)]
pub enum SpoolData {
    Memory(Bytes),
    /// A path relative to the spool operator's root (the data dir).
    File {
        rel: String,
        abs: PathBuf,
    },
}

#[derive(Debug)]
pub struct Spooled {
    /// Plaintext bytes.
    pub size: u64,
    pub md5: [u8; 16],
    pub checksums: Checksums,
    /// The data key the data is sealed under (`spool_sealed`); the data is then the
    /// sealed chunk format, not the plaintext.
    pub sealed: Option<SealedKey>,
    data: Option<SpoolData>,
}

impl Spooled {
    pub fn md5_hex(&self) -> String {
        hex::encode(self.md5)
    }

    pub fn data(&self) -> Option<&SpoolData> {
        self.data.as_ref()
    }

    /// Takes the data out; the caller now owns any temporary file.
    pub fn take_data(&mut self) -> Option<SpoolData> {
        self.data.take()
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        if let Some(SpoolData::File { abs, .. }) = self.data.take()
            && let Err(e) = std::fs::remove_file(&abs)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %abs.display(), error = %e, "could not remove a temporary upload file");
        }
    }
}

#[derive(Clone)]
pub struct Spool {
    op: Operator,
    root: PathBuf,
    reserve: crate::disk::Reserve,
}

impl Spool {
    /// `op` is an fs operator rooted at `root` (the data dir); temporary files go to `root/tmp/`.
    pub fn new(op: Operator, root: PathBuf) -> Self {
        let reserve = crate::disk::Reserve::new(root.clone(), 0);
        Self { op, root, reserve }
    }

    /// Refuses bodies (`InsufficientStorage`) that would leave less than `min_free` bytes
    /// free on the data disk, checked before the first byte and at every chunk written.
    pub fn with_min_free(mut self, min_free: u64) -> Self {
        self.reserve = crate::disk::Reserve::new(self.root.clone(), min_free);
        self
    }

    pub fn operator(&self) -> &Operator {
        &self.op
    }

    /// Deletes every temporary file: run once at start, before any request.
    pub fn sweep(&self) -> std::io::Result<usize> {
        let dir = self.root.join("tmp");
        let mut n = 0;
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    if std::fs::remove_file(e.path()).is_ok() {
                        n += 1;
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&dir)?;
        Ok(n)
    }

    /// Reads `body` to the end, hashing and counting; fails with `EntityTooLarge` past `max_size`.
    pub async fn spool<S, E>(
        &self,
        body: S,
        want: ChecksumSet,
        max_size: u64,
    ) -> Result<Spooled, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.spool_sealed(body, want, max_size, None).await
    }

    /// As `spool`; with `seal` (a data key and its sealed form, from the store), the bytes
    /// kept are sealed as they arrive.
    pub async fn spool_sealed<S, E>(
        &self,
        body: S,
        want: ChecksumSet,
        max_size: u64,
        seal: Option<(DataKey, SealedKey)>,
    ) -> Result<Spooled, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let (mut sealer, sealed) = match seal {
            Some((key, sealed)) => (Some(ChunkSealer::new(key)), Some(sealed)),
            None => (None, None),
        };
        let mut body = body;
        let mut md5 = Md5::new();
        let mut sums = want.hasher();
        let mut size: u64 = 0;
        let mut buf = BytesMut::new();
        let mut writer: Option<(opendal::Writer, String, PathBuf)> = None;
        let result: Result<(), StoreError> = async {
            self.reserve.check(0)?;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| StoreError::IncompleteBody(e.to_string()))?;
                size += chunk.len() as u64;
                if size > max_size {
                    return Err(StoreError::EntityTooLarge { max: max_size });
                }
                md5.update(&chunk);
                sums.update(&chunk);
                match sealer.as_mut() {
                    Some(z) => z.push(&chunk, &mut buf)?,
                    None => buf.extend_from_slice(&chunk),
                }
                if writer.is_none() && size > INLINE_LIMIT as u64 {
                    let name = uuid::Uuid::new_v4().simple().to_string();
                    let rel = format!("tmp/{name}");
                    let w = self.op.writer(&rel).await?;
                    writer = Some((w, rel.clone(), self.root.join(&rel)));
                }
                if let Some((w, _, _)) = writer.as_mut()
                    && buf.len() >= WRITE_CHUNK
                {
                    self.reserve.check(buf.len() as u64)?;
                    w.write(buf.split().freeze()).await?;
                }
            }
            if let Some(z) = sealer.take() {
                z.finish(&mut buf)?;
            }
            if let Some((w, _, _)) = writer.as_mut() {
                if !buf.is_empty() {
                    w.write(buf.split().freeze()).await?;
                }
                w.close().await?;
            }
            Ok(())
        }
        .await;
        let data = match writer {
            Some((w, rel, abs)) => {
                if let Err(e) = result {
                    drop(w);
                    let _ = std::fs::remove_file(&abs);
                    return Err(e);
                }
                SpoolData::File { rel, abs }
            }
            None => {
                result?;
                SpoolData::Memory(buf.freeze())
            }
        };
        Ok(Spooled {
            size,
            md5: md5.finalize().into(),
            checksums: to_checksums(sums),
            sealed,
            data: Some(data),
        })
    }
}

/// The COMPOSITE checksum of a multipart object, as S3 defines it: `algorithm` over the
/// concatenated binary checksums of its parts, in part order, base64, then `-N` for N
/// parts. `None` when the algorithm is unknown or a part lacks its checksum (a part
/// uploaded without one).
pub fn composite_checksum(algorithm: &str, parts: &[&Checksums]) -> Option<Checksums> {
    use base64::Engine as _;
    let set = ChecksumSet::default().with_algorithm(algorithm).ok()?;
    let pick = |c: &Checksums| -> Option<String> {
        match set {
            ChecksumSet { crc32: true, .. } => c.crc32.clone(),
            ChecksumSet { crc32c: true, .. } => c.crc32c.clone(),
            ChecksumSet { sha1: true, .. } => c.sha1.clone(),
            ChecksumSet { sha256: true, .. } => c.sha256.clone(),
            _ => c.crc64nvme.clone(),
        }
    };
    let mut joined = Vec::new();
    for p in parts {
        let b64 = pick(p)?;
        joined.extend(base64::engine::general_purpose::STANDARD.decode(b64).ok()?);
    }
    let mut h = set.hasher();
    h.update(&joined);
    let whole = to_checksums(h);
    let n = parts.len();
    let tag = |v: Option<String>| v.map(|v| format!("{v}-{n}"));
    Some(Checksums {
        crc32: tag(whole.crc32),
        crc32c: tag(whole.crc32c),
        sha1: tag(whole.sha1),
        sha256: tag(whole.sha256),
        crc64nvme: tag(whole.crc64nvme),
    })
}

/// S3's FULL_OBJECT checksum of a multipart object: the CRC of its whole body, combined from
/// its parts' CRCs and sizes (`crc_combine`), as S3 makes it. CRC32, CRC32C and CRC64NVME
/// only (SHA digests cannot be combined); `None` when a part lacks the checksum.
pub fn full_object_checksum(algorithm: &str, parts: &[(&Checksums, u64)]) -> Option<Checksums> {
    use super::crc_combine::{CRC32, CRC32C, CRC64NVME, Crc};
    use base64::Engine as _;
    type Pick = fn(&Checksums) -> Option<&String>;
    let (crc, pick): (Crc, Pick) = match algorithm.to_ascii_uppercase().as_str() {
        "CRC32" => (CRC32, |c| c.crc32.as_ref()),
        "CRC32C" => (CRC32C, |c| c.crc32c.as_ref()),
        "CRC64NVME" => (CRC64NVME, |c| c.crc64nvme.as_ref()),
        _ => return None,
    };
    let bytes = (crc.width / 8) as usize;
    let mut whole: Option<u64> = None;
    for (c, size) in parts {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(pick(c)?)
            .ok()?;
        if raw.len() != bytes {
            return None;
        }
        let value = raw.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b));
        whole = Some(match whole {
            None => value,
            Some(acc) => crc.combine(acc, value, *size),
        });
    }
    let be = whole?.to_be_bytes();
    let text = base64::engine::general_purpose::STANDARD.encode(&be[8 - bytes..]);
    let mut out = Checksums::default();
    match crc.width {
        64 => out.crc64nvme = Some(text),
        _ if crc == CRC32 => out.crc32 = Some(text),
        _ => out.crc32c = Some(text),
    }
    Some(out)
}

fn to_checksums(h: ChecksumHasher) -> Checksums {
    let c = h.finalize();
    Checksums {
        crc32: c.checksum_crc32,
        crc32c: c.checksum_crc32c,
        sha1: c.checksum_sha1,
        sha256: c.checksum_sha256,
        crc64nvme: c.checksum_crc64nvme,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_checksums_hash_the_parts_checksums() {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let crc = |data: &[u8]| crc32fast::hash(data).to_be_bytes();
        let parts = [b"first part".as_slice(), b"second"];
        let sums: Vec<Checksums> = parts
            .iter()
            .map(|p| Checksums {
                crc32: Some(b64(&crc(p))),
                ..Checksums::default()
            })
            .collect();
        let refs: Vec<&Checksums> = sums.iter().collect();
        let joined = [crc(parts[0]), crc(parts[1])].concat();
        let want = format!("{}-2", b64(&crc(&joined)));
        assert_eq!(
            composite_checksum("CRC32", &refs).unwrap().crc32,
            Some(want)
        );
        // A part without the algorithm's checksum: no composite.
        assert!(composite_checksum("SHA256", &refs).is_none());
        assert!(composite_checksum("MD4", &refs).is_none());
    }

    /// Each part hashed by the same hasher the spool uses; the combined checksum must be the
    /// one that hasher gives the whole body.
    #[test]
    fn full_object_checksums_are_the_whole_bodys() {
        let parts: [&[u8]; 3] = [&[7u8; 3000], b"second part", &[0u8; 1]];
        let whole = parts.concat();
        for alg in ["CRC32", "CRC32C", "CRC64NVME"] {
            let set = ChecksumSet::default().with_algorithm(alg).unwrap();
            let hash = |data: &[u8]| {
                let mut h = set.hasher();
                h.update(data);
                to_checksums(h)
            };
            let sums: Vec<Checksums> = parts.iter().map(|p| hash(p)).collect();
            let refs: Vec<(&Checksums, u64)> = sums
                .iter()
                .zip(parts)
                .map(|(c, p)| (c, p.len() as u64))
                .collect();
            assert_eq!(
                full_object_checksum(alg, &refs),
                Some(hash(&whole)),
                "{alg}"
            );
        }
        let sha = ChecksumSet::default().with_algorithm("SHA256").unwrap();
        let mut h = sha.hasher();
        h.update(b"x");
        let c = to_checksums(h);
        assert_eq!(full_object_checksum("SHA256", &[(&c, 1)]), None);
        assert_eq!(full_object_checksum("CRC32", &[]), None);
    }

    fn spool_in(dir: &std::path::Path) -> Spool {
        let op =
            Operator::new(opendal::services::Fs::default().root(&dir.to_string_lossy())).unwrap();
        let s = Spool::new(op, dir.to_owned());
        s.sweep().unwrap();
        s
    }

    fn chunks(data: &[u8], n: usize) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        let v: Vec<_> = data
            .chunks(n)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::stream::iter(v)
    }

    #[tokio::test]
    async fn small_bodies_stay_in_memory_large_go_to_disk() {
        let dir = tempfile::tempdir().unwrap();
        let s = spool_in(dir.path());
        let small = s
            .spool(
                chunks(b"hello", 2),
                ChecksumSet {
                    crc32: true,
                    ..Default::default()
                },
                100,
            )
            .await
            .unwrap();
        assert_eq!(small.size, 5);
        assert_eq!(small.md5_hex(), "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(small.checksums.crc32.as_deref(), Some("NhCmhg=="));
        assert!(matches!(small.data(), Some(SpoolData::Memory(_))));

        let big = vec![7u8; INLINE_LIMIT * 3 + 5];
        let spooled = s
            .spool(chunks(&big, 10_000), ChecksumSet::default(), u64::MAX)
            .await
            .unwrap();
        let Some(SpoolData::File { abs, .. }) = spooled.data() else {
            panic!("expected a file")
        };
        let abs = abs.clone();
        assert_eq!(std::fs::read(&abs).unwrap(), big);
        drop(spooled);
        assert!(
            !abs.exists(),
            "dropping an unconsumed spool removes its file"
        );
    }

    #[tokio::test]
    async fn oversized_bodies_fail_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = spool_in(dir.path());
        let big = vec![1u8; INLINE_LIMIT * 4];
        let err = s
            .spool(
                chunks(&big, 4096),
                ChecksumSet::default(),
                (INLINE_LIMIT * 2) as u64,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::EntityTooLarge { .. }));
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}
