//! TLS on a door from certificate files: `tls_cert` / `tls_key` (PEM), HTTP/2 and HTTP/1.1
//! offered through ALPN, and the pair read again on SIGHUP. A swap takes effect for new
//! handshakes; open connections keep the certificate they were made with.
//!
//! What must stay true: a reload that fails (missing file, bad PEM, a key that does not
//! match) keeps the certificate in use and says why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::tunnel::identity::Identity;

/// Reads a certificate chain and key (PEM) into what rustls serves.
pub fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let id = Identity::load(cert, Some(key)).map_err(|e| e.to_string())?;
    certified(id).map_err(|e| {
        format!(
            "{} and {} do not make a usable pair: {e}",
            cert.display(),
            key.display()
        )
    })
}

/// An identity (chain and key) as rustls serves it; fails when the key does not match.
pub fn certified(id: Identity) -> Result<Arc<CertifiedKey>, rustls::Error> {
    let provider = crate::tunnel::tls::provider();
    let ck = CertifiedKey::from_der(id.certs, id.key, &provider)?;
    ck.keys_match()?;
    Ok(Arc::new(ck))
}

/// A certificate read from files, swapped in place by [`CertFiles::reload`].
#[derive(Debug)]
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertFiles {
    pub fn open(cert: PathBuf, key: PathBuf) -> Result<Arc<CertFiles>, String> {
        let current = load_pair(&cert, &key)?;
        Ok(Arc::new(CertFiles {
            cert,
            key,
            current: RwLock::new(current),
        }))
    }

    /// Reads the files again; on failure the certificate in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = load_pair(&self.cert, &self.key)?;
        if let Ok(mut c) = self.current.write() {
            *c = fresh;
        }
        Ok(())
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

/// A door's TLS acceptor over `certs`: TLS 1.2 and 1.3, `h2` then `http/1.1` by ALPN.
pub fn acceptor(certs: Arc<CertFiles>) -> Result<tokio_rustls::TlsAcceptor, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(crate::tunnel::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let id = Identity::generate(name).unwrap();
        let pem = id.to_pem();
        let cert_end = pem.find("-----END CERTIFICATE-----").unwrap() + 25;
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, &pem[..cert_end]).unwrap();
        std::fs::write(&k, &pem[cert_end..]).unwrap();
        (c, k)
    }

    #[test]
    fn a_failed_reload_keeps_the_certificate_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = write_pair(dir.path(), "one");
        let files = CertFiles::open(c.clone(), k.clone()).unwrap();
        let before = files.current.read().unwrap().cert.clone();
        std::fs::write(&c, "not a certificate").unwrap();
        let e = files.reload().unwrap_err();
        assert!(e.contains("one.crt"), "{e}");
        assert_eq!(files.current.read().unwrap().cert, before);
        // A key from another pair is refused too.
        let (c2, _) = write_pair(dir.path(), "two");
        std::fs::copy(&c2, &c).unwrap();
        assert!(files.reload().is_err());
        assert_eq!(files.current.read().unwrap().cert, before);
        // A good new pair is taken.
        let (c3, k3) = write_pair(dir.path(), "three");
        std::fs::copy(&c3, &c).unwrap();
        std::fs::copy(&k3, &k).unwrap();
        files.reload().unwrap();
        assert_ne!(files.current.read().unwrap().cert, before);
    }
}
