//! `pixelport edge pair` and `pixelport edge revoke`: the edge's side of pairing, run next
//! to a running edge (or before its first start). Pair adds a one-time enrollment to the
//! registry and returns the join token; revoke removes identities (the running edge closes
//! their connections when it sees the file change).
//!
//! What must stay true: the token printed is the only copy of the secret; the registry
//! keeps its hash.

use std::path::Path;

use super::config::EdgeConfig;
use super::registry::{Enrolled, RegistryFile};
use super::{EdgeError, identity};
use crate::tunnel::frame::{Door, Grant};
use crate::tunnel::token::JoinToken;

/// Makes a join token for `hostnames`, each reaching `door`.
pub fn pair(
    config: &EdgeConfig,
    hostnames: &[String],
    door: Door,
    address: Option<&str>,
) -> Result<String, EdgeError> {
    let setup = |message: String| EdgeError::Setup {
        key: "hostname",
        message,
    };
    if hostnames.is_empty() {
        return Err(setup("give at least one --hostname".into()));
    }
    let mut grants = Vec::new();
    for h in hostnames {
        let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
        if h.is_empty()
            || h.len() > 253
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(setup(format!("`{h}` is not a hostname")));
        }
        grants.push(Grant { hostname: h, door });
    }
    let (id, _) = identity(&config.data_dir)?;
    let port = config
        .tunnel_listen
        .parse::<std::net::SocketAddr>()
        .map(|a| a.port())
        .unwrap_or(7844);
    let edge_address = match address.filter(|a| !a.is_empty()) {
        Some(a) => a.to_owned(),
        None if !config.public_address.is_empty() => config.public_address.clone(),
        None => format!("{}:{port}", grants[0].hostname),
    };
    let expires = time::OffsetDateTime::now_utc().unix_timestamp()
        + i64::try_from(config.pair_ttl.0.as_secs()).unwrap_or(3600);
    let file = RegistryFile::new(&config.data_dir);
    let g = grants.clone();
    let secret = file.update(move |r| r.add_enrollment(g, expires))?;
    Ok(JoinToken {
        edges: vec![edge_address],
        pin: id.pin(),
        secret,
        expires,
        grants,
    }
    .encode())
}

pub fn revoke(data_dir: &Path, selector: &str) -> Result<Vec<Enrolled>, EdgeError> {
    Ok(RegistryFile::new(data_dir).update(|r| r.revoke(selector))?)
}

pub fn list(data_dir: &Path) -> Result<Vec<Enrolled>, EdgeError> {
    Ok(RegistryFile::new(data_dir).read()?.identities)
}
