//! The edge's registry of appliances (`edge-registry.json`, 0600): the enrolled identities
//! (certificate pin, node name, granted hostnames and doors) and the pending enrollments
//! (hashed one-time secret, expiry, grants). `edge pair` and `edge revoke` edit it while the
//! edge runs; every edit holds `edge-registry.lock`.
//!
//! What must stay true: a secret is stored only as its SHA-256 and works once, before its
//! expiry; an identity serves only the hostnames granted to it; a revoked identity is gone
//! from the file before the command returns.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::tunnel::frame::{Door, Grant};
use crate::tunnel::identity::write_private;

pub const REGISTRY_FILE: &str = "edge-registry.json";
const LOCK_FILE: &str = "edge-registry.lock";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolled {
    pub pin: String,
    pub node: String,
    pub grants: Vec<Grant>,
    /// Unix seconds.
    pub enrolled: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub secret_sha256: String,
    pub expires: i64,
    pub grants: Vec<Grant>,
    /// When it was used (a used secret is kept until it expires, so a replay is named).
    #[serde(default)]
    pub used: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    #[serde(default)]
    pub identities: Vec<Enrolled>,
    #[serde(default)]
    pub enrollments: Vec<Pending>,
}

/// Why an enrollment was refused (said to the appliance and logged on the edge).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown enrollment secret (a wrong or damaged join token?)")]
    UnknownSecret,
    #[error("this join token was already used; run `pixelport edge pair` for a new one")]
    SecretUsed,
    #[error("this join token expired; run `pixelport edge pair` for a new one")]
    SecretExpired,
    #[error("unknown client certificate {0}: not enrolled or revoked; join again")]
    UnknownIdentity(String),
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl Registry {
    /// A new one-time secret for `grants`, valid until `expires`; returns the secret.
    pub fn add_enrollment(&mut self, grants: Vec<Grant>, expires: i64) -> String {
        let secret = crate::credentials::random_hex(32);
        self.enrollments.push(Pending {
            secret_sha256: hash_secret(&secret),
            expires,
            grants,
            used: None,
        });
        secret
    }

    /// Uses `secret` to enrol `pin`: the grants on success.
    pub fn enroll(
        &mut self,
        secret: &str,
        pin: &str,
        node: &str,
        now: i64,
    ) -> Result<Vec<Grant>, Refusal> {
        let hashed = hash_secret(secret);
        let pending = self
            .enrollments
            .iter_mut()
            .find(|p| p.secret_sha256 == hashed)
            .ok_or(Refusal::UnknownSecret)?;
        if pending.used.is_some() {
            return Err(Refusal::SecretUsed);
        }
        if pending.expires <= now {
            return Err(Refusal::SecretExpired);
        }
        pending.used = Some(now);
        let new = pending.grants.clone();
        // Joining again with a known identity adds hostnames (a hostname named again takes
        // its new door); `edge revoke` is how one goes away.
        let mut grants: Vec<Grant> = self
            .identities
            .iter()
            .find(|i| i.pin == pin)
            .map(|i| i.grants.clone())
            .unwrap_or_default();
        grants.retain(|g| !new.iter().any(|n| n.hostname == g.hostname));
        grants.extend(new);
        self.identities.retain(|i| i.pin != pin);
        self.identities.push(Enrolled {
            pin: pin.to_owned(),
            node: node.to_owned(),
            grants: grants.clone(),
            enrolled: now,
        });
        Ok(grants)
    }

    /// Drops expired enrollments (used or not).
    pub fn prune(&mut self, now: i64) {
        self.enrollments.retain(|p| p.expires > now);
    }

    pub fn identity(&self, pin: &str) -> Result<&Enrolled, Refusal> {
        self.identities
            .iter()
            .find(|i| i.pin.eq_ignore_ascii_case(pin))
            .ok_or_else(|| Refusal::UnknownIdentity(short(pin)))
    }

    /// Removes identities whose pin starts with `selector` (8+ hex digits) or whose node
    /// name is `selector`; returns them.
    pub fn revoke(&mut self, selector: &str) -> Vec<Enrolled> {
        let sel = selector.to_ascii_lowercase();
        let by_pin = sel.len() >= 8 && sel.bytes().all(|b| b.is_ascii_hexdigit());
        let (gone, kept): (Vec<_>, Vec<_>) = self
            .identities
            .drain(..)
            .partition(|i| (by_pin && i.pin.starts_with(&sel)) || i.node == selector);
        self.identities = kept;
        gone
    }

    /// Every hostname granted to an enrolled identity.
    pub fn granted_hosts(&self) -> std::collections::BTreeSet<String> {
        self.identities
            .iter()
            .flat_map(|i| i.grants.iter().map(|g| g.hostname.clone()))
            .collect()
    }
}

impl Registry {
    /// Each granted hostname's door (a hostname granted twice keeps its first door).
    pub fn granted_doors(&self) -> std::collections::HashMap<String, Door> {
        let mut out = std::collections::HashMap::new();
        for g in self.identities.iter().flat_map(|i| i.grants.iter()) {
            out.entry(g.hostname.clone()).or_insert(g.door);
        }
        out
    }
}

pub fn short(pin: &str) -> String {
    pin.chars().take(16).collect()
}

/// The registry file in `dir`, read and written under its lock.
pub struct RegistryFile {
    dir: PathBuf,
}

impl RegistryFile {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(REGISTRY_FILE)
    }

    fn err(&self, message: impl ToString) -> RegistryError {
        RegistryError::File {
            path: self.path(),
            message: message.to_string(),
        }
    }

    pub fn read(&self) -> Result<Registry, RegistryError> {
        match std::fs::read(self.path()) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| self.err(e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registry::default()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Reads, changes and writes the registry under the lock (blocking: call from a
    /// blocking thread or a CLI).
    pub fn update<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> Result<T, RegistryError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| self.err(e))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(LOCK_FILE))
            .map_err(|e| self.err(e))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| self.err(e))?;
        let mut reg = self.read()?;
        let out = f(&mut reg);
        let bytes = serde_json::to_vec_pretty(&reg).map_err(|e| self.err(e))?;
        write_private(&self.path(), &bytes).map_err(|e| self.err(e))?;
        drop(lock);
        Ok(out)
    }

    /// The file's modification time, to notice edits by `edge pair` / `edge revoke`.
    pub fn modified(&self) -> Option<std::time::SystemTime> {
        std::fs::metadata(self.path())
            .and_then(|m| m.modified())
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::frame::Door;

    fn grants(h: &str) -> Vec<Grant> {
        vec![Grant {
            hostname: h.into(),
            door: Door::Images,
        }]
    }

    #[test]
    fn a_secret_works_once_and_before_its_expiry() {
        let mut r = Registry::default();
        let s = r.add_enrollment(grants("a.example"), 100);
        assert_eq!(r.enroll("nope", "p1", "n", 10), Err(Refusal::UnknownSecret));
        assert_eq!(r.enroll(&s, "p1", "n", 10).unwrap(), grants("a.example"));
        assert_eq!(r.enroll(&s, "p2", "n", 11), Err(Refusal::SecretUsed));
        let late = r.add_enrollment(grants("b.example"), 50);
        assert_eq!(r.enroll(&late, "p3", "n", 50), Err(Refusal::SecretExpired));
        assert!(r.identity("p1").is_ok());
        assert!(matches!(r.identity("p2"), Err(Refusal::UnknownIdentity(_))));
        assert!(!r.enrollments.iter().any(|p| p.secret_sha256.contains(&s)));
        // The same identity joining again for another hostname keeps the first.
        let more = r.add_enrollment(grants("c.example"), 100);
        let all = r.enroll(&more, "p1", "n", 20).unwrap();
        let hosts: Vec<_> = all.iter().map(|g| g.hostname.as_str()).collect();
        assert_eq!(hosts, ["a.example", "c.example"]);
    }

    #[test]
    fn revoke_by_pin_prefix_or_node() {
        let mut r = Registry::default();
        let a = r.add_enrollment(grants("a.example"), 100);
        let b = r.add_enrollment(grants("b.example"), 100);
        r.enroll(&a, "abcdef0123456789", "desk", 1).unwrap();
        r.enroll(&b, "9999999999999999", "attic", 1).unwrap();
        assert!(
            r.revoke("abc").is_empty(),
            "too short a prefix matches nothing"
        );
        assert_eq!(r.revoke("abcdef01").len(), 1);
        assert_eq!(r.revoke("attic").len(), 1);
        assert!(r.identities.is_empty());
    }

    #[test]
    fn the_file_is_private_and_survives_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let f = RegistryFile::new(dir.path());
        let secret = f
            .update(|r| r.add_enrollment(grants("a.example"), i64::MAX))
            .unwrap();
        let reg = f.read().unwrap();
        assert_eq!(reg.enrollments.len(), 1);
        assert_eq!(reg.enrollments[0].secret_sha256, hash_secret(&secret));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(f.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
