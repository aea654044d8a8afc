//! What `pixelport serve` re-reads on SIGHUP (`systemctl reload pixelport`): the TLS
//! certificate files of its listeners, the root S3 key (`[s3] access_key` / `secret_key` or
//! credentials.toml) and the log level. Every other key needs a restart; a reload that
//! finds one changed says which ([`crate::config::restart_needed`]).
//!
//! What must stay true: a reload that fails (a config that does not parse, a bad
//! certificate) changes nothing it could not complete and keeps serving.

use std::sync::Arc;

use crate::admin::AdminState;
use crate::config::Config;
use crate::logs::LogLevel;
use crate::s3::access::KeyRing;
use crate::server::systemd;
use crate::server::tls::CertFiles;

/// How to read the configuration again (the same file and environment as at start), and
/// the log level to change.
pub struct Reloader {
    pub load: Box<dyn Fn() -> Result<Config, String> + Send + Sync>,
    pub log_level: Option<LogLevel>,
}

impl Reloader {
    /// Reloads nothing: for a daemon started without a way to read its config again.
    pub fn none() -> Self {
        Self {
            load: Box::new(|| Err("this process cannot read its configuration again".into())),
            log_level: None,
        }
    }
}

/// What a reload can change in the running daemon.
pub struct Live {
    /// The configuration in force (the reloadable keys updated by each reload).
    pub running: Config,
    /// Each TLS listener's certificate, by config section.
    pub certs: Vec<(&'static str, Arc<CertFiles>)>,
    pub keys: Arc<KeyRing>,
    pub admin: Arc<AdminState>,
}

impl Live {
    /// Applies what can be applied from the configuration as it is now; logs the rest.
    pub fn reload(&mut self, reloader: &Reloader) {
        systemd::reloading();
        let mut failures = 0usize;
        for (section, certs) in &self.certs {
            match certs.reload() {
                Ok(()) => tracing::info!(
                    listener = section,
                    cert = %certs.cert_path().display(),
                    "TLS certificate reloaded"
                ),
                Err(e) => {
                    failures += 1;
                    tracing::error!(listener = section, error = %e, "TLS certificate not reloaded; keeping the one in use");
                }
            }
        }
        match (reloader.load)() {
            Err(e) => {
                failures += 1;
                tracing::error!(error = %e, "configuration not reloaded; keeping the running one");
            }
            Ok(new) => failures += self.apply(new, reloader),
        }
        let status = if failures == 0 {
            "reloaded".to_owned()
        } else {
            format!("reloaded with {failures} error(s); see the log")
        };
        tracing::info!(failures, "reload done");
        systemd::reloaded(&status);
    }

    fn apply(&mut self, new: Config, reloader: &Reloader) -> usize {
        let mut failures = 0;
        if new.server.log_level != self.running.server.log_level {
            match reloader
                .log_level
                .as_ref()
                .map(|l| l.set(&new.server.log_level))
            {
                Some(Ok(())) => {
                    tracing::info!(level = %new.server.log_level, "log level changed");
                    self.running.server.log_level = new.server.log_level.clone();
                }
                Some(Err(e)) => {
                    failures += 1;
                    tracing::error!(error = %e, "log level not changed");
                }
                None => {}
            }
        }
        match crate::credentials::resolve(&new.s3, &new.server.data_dir) {
            Ok((pair, _)) => {
                let old = self.admin.root_key();
                if old != pair.access_key {
                    self.keys.remove(&old);
                    tracing::info!(access_key = %pair.access_key, "root S3 key replaced");
                } else if self.keys.secret(&old).as_deref() != Some(pair.secret_key.as_str()) {
                    tracing::info!(access_key = %pair.access_key, "root S3 secret replaced");
                }
                self.keys.insert(&pair.access_key, &pair.secret_key);
                if let Ok(mut root) = self.admin.root_access_key.write() {
                    *root = pair.access_key;
                }
                self.running.s3.access_key = new.s3.access_key.clone();
                self.running.s3.secret_key = new.s3.secret_key.clone();
            }
            Err(e) => {
                failures += 1;
                tracing::error!(error = %e, "root S3 key not reloaded; keeping the one in use");
            }
        }
        let pending = crate::config::restart_needed(&self.running, &new);
        if !pending.is_empty() {
            tracing::warn!(
                keys = %pending.join(", "),
                "these changed keys take effect at the next restart"
            );
        }
        failures
    }
}
