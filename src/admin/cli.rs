//! `pixelport cache stats|purge`: through the running daemon's admin API (with the bearer
//! token) when it answers, else directly on the cache file (the daemon holds the file's lock
//! while it runs, so the two never write at once).

use serde_json::{Value, json};

use super::purge::Purge;
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("admin API at {url}: {message}")]
    Api { url: String, message: String },
    #[error("cache file {path}: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Usage(String),
}

/// What to do to the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheAction {
    Stats,
    Purge {
        all: bool,
        bucket: Option<String>,
        prefix: Option<String>,
        key: Option<String>,
    },
}

impl CacheAction {
    /// The purge this action names, checked (`None` for stats).
    fn purge(&self) -> Result<Option<Purge>, CliError> {
        match self {
            CacheAction::Stats => Ok(None),
            CacheAction::Purge {
                all,
                bucket,
                prefix,
                key,
            } => Purge::from_parts(*all, bucket.as_deref(), prefix.as_deref(), key.as_deref())
                .map(Some)
                .map_err(|m| CliError::Usage(m.into())),
        }
    }

    /// The admin API's body for this purge.
    fn purge_body(&self) -> Value {
        match self {
            CacheAction::Stats => Value::Null,
            CacheAction::Purge {
                all,
                bucket,
                prefix,
                key,
            } => json!({ "all": all, "bucket": bucket, "prefix": prefix, "key": key }),
        }
    }
}

/// The admin listener's address as a client reaches it (a wildcard listen becomes loopback).
fn admin_base(config: &Config) -> String {
    let listen = &config.admin.listen;
    let addr = listen
        .strip_prefix("0.0.0.0:")
        .map(|port| format!("127.0.0.1:{port}"))
        .or_else(|| {
            listen
                .strip_prefix("[::]:")
                .map(|port| format!("[::1]:{port}"))
        })
        .unwrap_or_else(|| listen.clone());
    format!("http://{addr}")
}

fn token(config: &Config) -> Option<String> {
    if !config.admin.token.is_empty() {
        return Some(config.admin.token.clone());
    }
    std::fs::read_to_string(config.server.data_dir.join(super::auth::TOKEN_FILE))
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

enum Api {
    Answered(Value),
    /// Nothing listens there: the daemon is not running.
    NotRunning,
}

async fn via_api(config: &Config, action: &CacheAction) -> Result<Api, CliError> {
    match action {
        CacheAction::Stats => call(config, "/api/cache", None).await,
        CacheAction::Purge { .. } => {
            call(config, "/api/cache/purge", Some(action.purge_body())).await
        }
    }
}

/// The tunnel links of the running daemon (`GET /api/tunnel`); `None` when it is not running.
pub async fn tunnel_links(config: &Config) -> Result<Option<Value>, CliError> {
    Ok(match call(config, "/api/tunnel", None).await? {
        Api::Answered(v) => Some(v),
        Api::NotRunning => None,
    })
}

/// GET `path` (or POST `body` as JSON) on the running daemon's admin API, with its token.
async fn call(config: &Config, path: &str, body: Option<Value>) -> Result<Api, CliError> {
    let base = admin_base(config);
    let err = |message: String| CliError::Api {
        url: base.clone(),
        message,
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| err(e.to_string()))?;
    let req = match body {
        None => client.get(format!("{base}{path}")),
        Some(body) => client
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body.to_string()),
    };
    let req = match token(config) {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() => return Ok(Api::NotRunning),
        Err(e) => return Err(err(e.to_string())),
    };
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| err(format!("{status}: {e}")))?;
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|e| err(format!("{status}: unreadable answer: {e}")))?;
    if !status.is_success() {
        let message = body["message"].as_str().unwrap_or("").to_owned();
        return Err(err(format!("{status}: {message}")));
    }
    Ok(Api::Answered(body))
}

fn on_file(config: &Config, action: &CacheAction) -> Result<Value, CliError> {
    let path = config.cache.file(&config.server.data_dir);
    let err = |message: String| CliError::File {
        path: path.display().to_string(),
        message,
    };
    if !path.exists() {
        return Err(err(
            "does not exist (the daemon creates it on its first start)".into(),
        ));
    }
    let cache = crate::cache::DerivativeCache::open(&path, config.cache.cache_config())
        .map_err(|e| err(e.to_string()))?;
    let out = match action {
        CacheAction::Stats => {
            let s = cache.stats();
            json!({
                "enabled": config.cache.enabled, "path": path.display().to_string(),
                "entries": s.entries, "bytes": s.bytes, "max_bytes": config.cache.max_size.0,
                "evictions": s.evictions,
            })
        }
        CacheAction::Purge { .. } => {
            let removed = match action.purge()? {
                Some(purge) => purge.run(&cache).map_err(|e| err(e.to_string()))?,
                None => 0,
            };
            json!({ "removed": removed })
        }
    };
    Ok(out)
}

/// Runs `action`; the answer, with `"via": "admin API"` or `"via": "file"`.
pub async fn cache(config: &Config, action: &CacheAction) -> Result<Value, CliError> {
    action.purge()?;
    let (mut out, via) = match via_api(config, action).await? {
        Api::Answered(v) => (v, "admin API"),
        Api::NotRunning => {
            let (c, a) = (config.clone(), action.clone());
            let v = tokio::task::spawn_blocking(move || on_file(&c, &a))
                .await
                .map_err(|e| CliError::Usage(e.to_string()))??;
            (v, "file")
        }
    };
    if let Value::Object(m) = &mut out {
        m.insert("via".into(), json!(via));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_actions_are_checked_and_sent_as_the_api_body() {
        let action = |all, bucket: Option<&str>, prefix: Option<&str>, key: Option<&str>| {
            CacheAction::Purge {
                all,
                bucket: bucket.map(str::to_owned),
                prefix: prefix.map(str::to_owned),
                key: key.map(str::to_owned),
            }
        };
        let a = action(false, Some("b"), Some("x/"), None);
        assert_eq!(a.purge().unwrap(), Some(Purge::Prefix("s3://b/x/".into())));
        assert_eq!(
            a.purge_body(),
            json!({"all": false, "bucket": "b", "prefix": "x/", "key": null})
        );
        assert!(action(true, Some("b"), None, None).purge().is_err());
        assert!(action(false, None, None, None).purge().is_err());
        assert_eq!(CacheAction::Stats.purge().unwrap(), None);
    }

    #[test]
    fn wildcard_listen_addresses_become_loopback() {
        let mut c = Config::default();
        c.admin.listen = "0.0.0.0:9001".into();
        assert_eq!(admin_base(&c), "http://127.0.0.1:9001");
        c.admin.listen = "[::]:9001".into();
        assert_eq!(admin_base(&c), "http://[::1]:9001");
        c.admin.listen = "10.1.2.3:80".into();
        assert_eq!(admin_base(&c), "http://10.1.2.3:80");
    }
}
