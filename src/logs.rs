//! Where the logs go (`[server] log_format`): text or JSON on stderr, or the systemd journal
//! with the event's fields as journal fields; and the level (`[server] log_level`, or
//! `RUST_LOG`), which SIGHUP may change while the daemon runs.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{Config, LogFormat};

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("server.log_level: `{directive}`: {message}")]
    Level { directive: String, message: String },
    #[error("cannot change the log level: {0}")]
    Reload(String),
}

/// Changes the level of the logs [`init`] set up.
#[derive(Clone)]
pub struct LogLevel(reload::Handle<EnvFilter, Registry>);

/// The filter for a configured level. `RUST_LOG`, when set, wins over the configuration.
/// s3s logs every client error (a 404, a bad signature) at ERROR; our own request log
/// reports those with the request id at the right level instead, so s3s is off unless named.
fn filter(level: &str) -> Result<EnvFilter, LogsError> {
    let mut directives = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| level.to_owned());
    if !directives.contains("s3s") {
        directives.push_str(",s3s=off");
    }
    EnvFilter::try_new(&directives).map_err(|e| LogsError::Level {
        directive: directives.clone(),
        message: e.to_string(),
    })
}

/// Sets up the process's logs. With `log_format = "journal"` and no journal to write to
/// (not under systemd), the logs stay text on stderr and say so.
pub fn init(config: &Config) -> LogLevel {
    use std::io::IsTerminal;
    let initial = filter(&config.server.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(initial);
    let registry = tracing_subscriber::registry().with(filter);
    let text = || {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
    };
    match config.server.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Text => registry.with(text()).init(),
        LogFormat::Journal => match tracing_journald::layer() {
            Ok(journal) => registry
                .with(
                    journal
                        .with_syslog_identifier("pixelport".into())
                        .with_field_prefix(None),
                )
                .init(),
            Err(e) => {
                registry.with(text()).init();
                tracing::warn!(error = %e, "log_format = \"journal\" but the journal cannot be reached; logging text to stderr");
            }
        },
    }
    LogLevel(handle)
}

impl LogLevel {
    /// Applies a new `log_level` (unless `RUST_LOG` is set, which keeps winning).
    pub fn set(&self, level: &str) -> Result<(), LogsError> {
        let f = filter(level)?;
        self.0
            .reload(f)
            .map_err(|e| LogsError::Reload(e.to_string()))
    }
}
