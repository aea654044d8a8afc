//! Identities: a self-signed certificate and its key, kept as one PEM file (0600) named for
//! what it is (`edge-identity.pem` on the edge, `tunnel-client.pem` on the appliance), and
//! the SHA-256 pin the other side trusts it by.
//!
//! What must stay true: a key is only ever written through [`write_private`] (0600, written
//! to a temporary name and renamed, so a crash leaves the old file or the new one); a
//! damaged identity file is an error naming the file, never silently replaced.

use std::io::Write;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a certificate and key in PEM: {message}")]
    Damaged { path: PathBuf, message: String },
    #[error("cannot make a certificate: {0}")]
    Generate(String),
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// Hex SHA-256 of the end-entity certificate's DER.
    pub fn pin(&self) -> String {
        self.certs.first().map(|c| pin_of(c)).unwrap_or_default()
    }

    /// A fresh self-signed identity (ECDSA P-256) for `name`.
    pub fn generate(name: &str) -> Result<Identity, IdentityError> {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_owned()])
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        Ok(Identity {
            certs: vec![ck.cert.der().clone()],
            key,
        })
    }

    pub fn to_pem(&self) -> String {
        let mut out = String::new();
        for c in &self.certs {
            out.push_str(&pem("CERTIFICATE", c.as_ref()));
        }
        let (label, der) = match &self.key {
            PrivateKeyDer::Pkcs8(k) => ("PRIVATE KEY", k.secret_pkcs8_der()),
            PrivateKeyDer::Sec1(k) => ("EC PRIVATE KEY", k.secret_sec1_der()),
            PrivateKeyDer::Pkcs1(k) => ("RSA PRIVATE KEY", k.secret_pkcs1_der()),
            _ => ("PRIVATE KEY", &[][..]),
        };
        out.push_str(&pem(label, der));
        out
    }

    /// Reads certificates and a key from one PEM file, or from two (`key` given).
    pub fn load(cert: &Path, key: Option<&Path>) -> Result<Identity, IdentityError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| IdentityError::Read {
                path: p.to_owned(),
                source,
            })
        };
        let cert_pem = read(cert)?;
        let key_path = key.unwrap_or(cert);
        let key_pem = if key.is_some() {
            read(key_path)?
        } else {
            cert_pem.clone()
        };
        let damaged = |path: &Path, message: String| IdentityError::Damaged {
            path: path.to_owned(),
            message,
        };
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| damaged(cert, e.to_string()))?;
        if certs.is_empty() {
            return Err(damaged(cert, "no CERTIFICATE block".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| damaged(key_path, format!("no usable private key ({e})")))?;
        Ok(Identity { certs, key })
    }

    /// Loads `path`, or makes a new identity for `name` and writes it there (0600).
    /// Returns whether it was made now.
    pub fn load_or_create(path: &Path, name: &str) -> Result<(Identity, bool), IdentityError> {
        if path.exists() {
            return Ok((Identity::load(path, None)?, false));
        }
        let id = Identity::generate(name)?;
        write_private(path, id.to_pem().as_bytes())?;
        Ok((id, true))
    }
}

/// Hex SHA-256 of a certificate's DER: the pin.
pub fn pin_of(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes a secret file: mode 0600, through a temporary name, fsynced, then renamed.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let err = |source| IdentityError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_loaded_with_the_same_pin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge-identity.pem");
        let (a, made) = Identity::load_or_create(&path, "pixelport-edge").unwrap();
        assert!(made);
        let (b, made) = Identity::load_or_create(&path, "pixelport-edge").unwrap();
        assert!(!made);
        assert_eq!(a.pin(), b.pin());
        assert_eq!(a.pin().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tunnel-client.pem");
        std::fs::write(&path, "not pem").unwrap();
        let err = Identity::load_or_create(&path, "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tunnel-client.pem"), "{err}");
    }
}
