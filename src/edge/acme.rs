//! ACME for the edge's public certificate (instant-acme): an account made once and kept
//! (`acme/account.json`, 0600), a certificate for the configured (or granted) hostnames
//! issued at first start and renewed `renew_before` its expiry, validated by HTTP-01 on the
//! plain HTTP listener or TLS-ALPN-01 on the HTTPS one.
//!
//! What must stay true: the key and certificate are written 0600 before they are served; a
//! failed order keeps the certificate in use and is tried again after `check_interval`;
//! challenge answers exist only while their order is pending.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::EdgeState;
use super::certs::CertStore;
use crate::config::Seconds;
use crate::tunnel::identity::write_private;

/// `[edge.acme]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AcmeConfig {
    /// The ACME directory URL.
    pub directory: String,
    /// A PEM file of extra roots to trust for the directory (a private CA, pebble).
    pub directory_ca: String,
    /// Contact for the account (`mailto:` is added); empty: none.
    pub email: String,
    /// Names on the certificate; empty: every hostname granted to an appliance.
    pub hostnames: Vec<String>,
    /// `http-01` (needs `http_listen` reachable on port 80) or `tls-alpn-01` (port 443).
    pub challenge: String,
    /// Renew when the certificate expires within this.
    pub renew_before: Seconds,
    /// How often the certificate's expiry (and names) are checked.
    pub check_interval: Seconds,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        Self {
            directory: "https://acme-v02.api.letsencrypt.org/directory".into(),
            directory_ca: String::new(),
            email: String::new(),
            hostnames: Vec::new(),
            challenge: "http-01".into(),
            renew_before: Seconds(Duration::from_secs(30 * 86400)),
            check_interval: Seconds(Duration::from_secs(3600)),
        }
    }
}

impl AcmeConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.directory.starts_with("https://") {
            return Err(("acme.directory", "must be an https:// URL".into()));
        }
        if !matches!(self.challenge.as_str(), "http-01" | "tls-alpn-01") {
            return Err((
                "acme.challenge",
                format!("`{}`: use http-01 or tls-alpn-01", self.challenge),
            ));
        }
        if self.check_interval.0 < Duration::from_secs(1) {
            return Err(("acme.check_interval", "must be at least 1s".into()));
        }
        Ok(())
    }
}

/// HTTP-01 answers: token → key authorization, read by the plain HTTP listener.
pub type Http01 = Arc<RwLock<HashMap<String, String>>>;

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME: {0}")]
    Acme(#[from] instant_acme::Error),
    #[error("ACME order for {names:?} ended {status}")]
    Order { names: Vec<String>, status: String },
    #[error("ACME: {0}")]
    Store(String),
    #[error("ACME: no hostname to certify (set [edge.acme] hostnames or pair an appliance)")]
    NoNames,
}

fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("acme")
}

/// What the current certificate covers and until when.
fn describe(cert_der: &[u8]) -> Option<(i64, BTreeSet<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let not_after = cert.validity().not_after.timestamp();
    let mut names = BTreeSet::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.insert(d.to_ascii_lowercase());
            }
        }
    }
    Some((not_after, names))
}

/// Loads a certificate issued before (restart), if any.
pub fn load_stored(data_dir: &Path, store: &CertStore) {
    let d = dir(data_dir);
    if let Ok(ck) = super::certs::load_pair(&d.join("cert.pem"), &d.join("key.pem")) {
        store.set(ck);
    }
}

async fn account(config: &AcmeConfig, data_dir: &Path) -> Result<Account, AcmeError> {
    let path = dir(data_dir).join("account.json");
    let builder = || {
        if config.directory_ca.is_empty() {
            Account::builder()
        } else {
            Account::builder_with_root(&config.directory_ca)
        }
    };
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(creds) = serde_json::from_slice::<AccountCredentials>(&bytes)
    {
        return Ok(builder()?.from_credentials(creds).await?);
    }
    let contact = format!("mailto:{}", config.email);
    let contacts: Vec<&str> = if config.email.is_empty() {
        vec![]
    } else {
        vec![contact.as_str()]
    };
    let (account, creds) = builder()?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            config.directory.clone(),
            None,
        )
        .await?;
    let json = serde_json::to_vec_pretty(&creds).map_err(|e| AcmeError::Store(e.to_string()))?;
    write_private(&path, &json).map_err(|e| AcmeError::Store(e.to_string()))?;
    tracing::info!(directory = config.directory, "ACME account created");
    Ok(account)
}

/// A TLS-ALPN-01 challenge certificate (RFC 8737): self-signed for `host`, with the
/// acmeIdentifier extension holding the SHA-256 of the key authorization.
fn alpn_certificate(
    host: &str,
    digest: &[u8],
) -> Result<Arc<rustls::sign::CertifiedKey>, AcmeError> {
    let err = |e: String| AcmeError::Store(format!("TLS-ALPN-01 certificate: {e}"));
    let mut params =
        rcgen::CertificateParams::new(vec![host.to_owned()]).map_err(|e| err(e.to_string()))?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let key = rcgen::KeyPair::generate().map_err(|e| err(e.to_string()))?;
    let cert = params.self_signed(&key).map_err(|e| err(e.to_string()))?;
    let der = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| err(e.to_string()))?;
    // Not `CertifiedKey::from_der`: its key check parses the certificate with webpki, which
    // refuses the critical acmeIdentifier extension this certificate must carry.
    let signing = crate::tunnel::tls::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| err(e.to_string()))?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

/// One order from start to certificate; returns the expiry.
async fn issue(
    config: &AcmeConfig,
    data_dir: &Path,
    names: &[String],
    store: &CertStore,
    http01: &Http01,
) -> Result<i64, AcmeError> {
    let account = account(config, data_dir).await?;
    let identifiers: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let kind = if config.challenge == "tls-alpn-01" {
        ChallengeType::TlsAlpn01
    } else {
        ChallengeType::Http01
    };
    let mut tokens = Vec::new();
    let mut alpn_hosts = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(result) = authorizations.next().await {
        let mut authz = result?;
        if authz.status == AuthorizationStatus::Valid {
            continue;
        }
        let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| {
            AcmeError::Store(format!(
                "the ACME server offers no {} challenge",
                config.challenge
            ))
        })?;
        let host = challenge.identifier().to_string();
        let key_auth = challenge.key_authorization();
        match kind {
            ChallengeType::TlsAlpn01 => {
                store.set_challenge(
                    &host,
                    Some(alpn_certificate(&host, key_auth.digest().as_ref())?),
                );
                alpn_hosts.push(host);
            }
            _ => {
                if let Ok(mut m) = http01.write() {
                    m.insert(challenge.token.clone(), key_auth.as_str().to_owned());
                }
                tokens.push(challenge.token.clone());
            }
        }
        challenge.set_ready().await?;
    }
    let status = order.poll_ready(&RetryPolicy::default()).await;
    let cleanup = || {
        if let Ok(mut m) = http01.write() {
            for t in &tokens {
                m.remove(t);
            }
        }
        for h in &alpn_hosts {
            store.set_challenge(h, None);
        }
    };
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            cleanup();
            return Err(e.into());
        }
    };
    cleanup();
    if status != OrderStatus::Ready {
        return Err(AcmeError::Order {
            names: names.to_vec(),
            status: format!("{status:?}"),
        });
    }
    let key_pem = order.finalize().await?;
    let chain_pem = order.poll_certificate(&RetryPolicy::default()).await?;
    let d = dir(data_dir);
    write_private(&d.join("key.pem"), key_pem.as_bytes())
        .map_err(|e| AcmeError::Store(e.to_string()))?;
    write_private(&d.join("cert.pem"), chain_pem.as_bytes())
        .map_err(|e| AcmeError::Store(e.to_string()))?;
    let ck = super::certs::load_pair(&d.join("cert.pem"), &d.join("key.pem"))
        .map_err(AcmeError::Store)?;
    let expiry = ck
        .cert
        .first()
        .and_then(|c| describe(c.as_ref()))
        .map_or(0, |(t, _)| t);
    store.set(ck);
    Ok(expiry)
}

/// Keeps the certificate issued and fresh until `stop`.
pub async fn run(
    config: AcmeConfig,
    state: Arc<EdgeState>,
    store: Arc<CertStore>,
    http01: Http01,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let wanted: BTreeSet<String> = if config.hostnames.is_empty() {
            state.granted_hosts()
        } else {
            config
                .hostnames
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect()
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let current = store
            .current()
            .and_then(|ck| ck.cert.first().and_then(|c| describe(c.as_ref())));
        let due = match &current {
            None => Some("no certificate yet"),
            Some((not_after, names)) => {
                let renew = i64::try_from(config.renew_before.0.as_secs()).unwrap_or(i64::MAX);
                if !wanted.is_subset(names) {
                    Some("a hostname is not on the certificate")
                } else if now.saturating_add(renew) >= *not_after {
                    Some("the certificate expires within renew_before")
                } else {
                    None
                }
            }
        };
        if let Some(why) = due {
            if wanted.is_empty() {
                tracing::info!("ACME: no hostname to certify yet (pair an appliance)");
            } else {
                let names: Vec<String> = wanted.into_iter().collect();
                tracing::info!(?names, why, "ACME: ordering a certificate");
                match issue(&config, &state.data_dir, &names, &store, &http01).await {
                    Ok(not_after) => tracing::info!(?names, not_after, "ACME: certificate issued"),
                    Err(e) => {
                        tracing::error!(error = %e, "ACME: order failed; the certificate in use stays")
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.check_interval.0) => {}
            _ = stop.changed() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_key() {
        assert!(AcmeConfig::default().validate().is_ok());
        let c = AcmeConfig {
            challenge: "dns-01".into(),
            ..AcmeConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "acme.challenge");
        let c = AcmeConfig {
            directory: "http://ca.example/dir".into(),
            ..AcmeConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "acme.directory");
    }

    #[test]
    fn a_certificate_is_described_by_its_expiry_and_names() {
        let ck = rcgen::generate_simple_self_signed(vec!["a.example".into(), "B.example".into()])
            .unwrap();
        let (not_after, names) = describe(ck.cert.der()).unwrap();
        assert!(
            not_after > 4_000_000_000,
            "rcgen's default validity runs to 4096"
        );
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["a.example", "b.example"]
        );
        assert!(describe(b"junk").is_none());
    }
}
