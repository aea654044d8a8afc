//! The public certificate: read from `[edge] tls_cert` / `tls_key`, swapped in place on
//! SIGHUP so open connections keep theirs and new handshakes get the new one.
//!
//! What must stay true: a reload that fails (missing file, bad PEM, key not matching)
//! keeps the certificate in use and says why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::tunnel::identity::Identity;

#[derive(Debug)]
pub struct FileCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let id = Identity::load(cert, Some(key)).map_err(|e| e.to_string())?;
    let provider = crate::tunnel::tls::provider();
    let ck = CertifiedKey::from_der(id.certs, id.key, &provider).map_err(|e| {
        format!(
            "{} and {} do not make a usable pair: {e}",
            cert.display(),
            key.display()
        )
    })?;
    Ok(Arc::new(ck))
}

impl FileCert {
    pub fn open(cert: PathBuf, key: PathBuf) -> Result<Arc<FileCert>, String> {
        let current = load(&cert, &key)?;
        Ok(Arc::new(FileCert {
            cert,
            key,
            current: RwLock::new(current),
        }))
    }

    /// Reads the files again; on failure the old certificate stays.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = load(&self.cert, &self.key)?;
        if let Ok(mut c) = self.current.write() {
            *c = fresh;
        }
        Ok(())
    }
}

impl ResolvesServerCert for FileCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

/// The public TLS configuration: HTTP/2 and HTTP/1.1 by ALPN, TLS 1.2 and 1.3.
pub fn public_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(crate::tunnel::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
