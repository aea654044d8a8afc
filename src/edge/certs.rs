//! The public certificate: from `[edge] tls_cert` / `tls_key` (swapped in place on SIGHUP,
//! so open connections keep theirs and new handshakes get the new one), or issued by ACME
//! ([`super::acme`]). Also answers TLS-ALPN-01 validations with their challenge
//! certificates.
//!
//! What must stay true: a reload that fails (missing file, bad PEM, key not matching)
//! keeps the certificate in use and says why; a challenge certificate is only ever given to
//! a handshake that asked for `acme-tls/1`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// TLS-ALPN-01's protocol name (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

#[derive(Debug, Default)]
pub struct CertStore {
    /// The certificate files, when they are the source (SIGHUP reads them again).
    files: Option<(PathBuf, PathBuf)>,
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// TLS-ALPN-01 challenge certificates by hostname, while an order is pending.
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

pub use crate::server::tls::{certified, load_pair};

impl CertStore {
    /// A store serving the certificate files.
    pub fn from_files(cert: PathBuf, key: PathBuf) -> Result<Arc<CertStore>, String> {
        let current = load_pair(&cert, &key)?;
        Ok(Arc::new(CertStore {
            files: Some((cert, key)),
            current: RwLock::new(Some(current)),
            challenges: RwLock::default(),
        }))
    }

    /// An empty store ACME fills.
    pub fn for_acme() -> Arc<CertStore> {
        Arc::new(CertStore::default())
    }

    /// Reads the files again; on failure the old certificate stays. Without files (ACME),
    /// nothing to do.
    pub fn reload(&self) -> Result<bool, String> {
        let Some((cert, key)) = &self.files else {
            return Ok(false);
        };
        self.set(load_pair(cert, key)?);
        Ok(true)
    }

    pub fn set(&self, ck: Arc<CertifiedKey>) {
        if let Ok(mut c) = self.current.write() {
            *c = Some(ck);
        }
    }

    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    pub fn set_challenge(&self, host: &str, ck: Option<Arc<CertifiedKey>>) {
        if let Ok(mut m) = self.challenges.write() {
            match ck {
                Some(ck) => m.insert(host.to_owned(), ck),
                None => m.remove(host),
            };
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.challenges.read().ok()?.get(&name).cloned();
        }
        self.current()
    }
}

/// The public TLS configuration: HTTP/2 and HTTP/1.1 by ALPN (and `acme-tls/1` for
/// validations), TLS 1.2 and 1.3.
pub fn public_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(crate::tunnel::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    Ok(config)
}
