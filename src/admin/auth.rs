//! Who may use the admin API: the admin user (argon2id password → a session cookie with a
//! CSRF token), or a script with the bearer token. Also the per-address login rate limit and
//! the first-start generation of the password and the token (files of mode 0600 in the data
//! dir).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::config::AdminConfig;
use crate::credentials::{CredentialsError, random_hex, read_or_create};

pub const PASSWORD_FILE: &str = "admin-password";
pub const TOKEN_FILE: &str = "admin-token";
/// Failed logins allowed per client address within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Live sessions kept at most; past it the oldest is dropped.
const MAX_SESSIONS: usize = 1000;
/// Client addresses tracked at most by the rate limiter.
const MAX_TRACKED: usize = 10_000;
/// Login attempts allowed from all addresses together within [`FAILURE_WINDOW`] (a
/// distributed guess spreads over addresses; the bearer token keeps working past it).
pub const MAX_GLOBAL_ATTEMPTS: u32 = 100;
/// argon2 verifications at once (19 MiB and a core each); more logins wait their turn.
pub const MAX_VERIFYING: usize = 2;
/// The longest a login waits for a verification slot before it is told to retry (429).
pub const VERIFY_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The password or token file cannot be read, written, or is empty (the same errors as
    /// the S3 credentials file's).
    #[error(transparent)]
    File(#[from] CredentialsError),
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// Where a secret came from, for the start-up message (as for the root S3 credentials).
pub use crate::credentials::Origin;

/// An argon2id PHC string for `password` (argon2's default parameters: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut salt[..]);
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Reads `data_dir/name`, or writes `make()` there (0600) when it does not exist.
fn read_or_generate(
    data_dir: &Path,
    name: &str,
    make: impl FnOnce() -> String,
) -> Result<(String, Origin), AuthError> {
    let path = data_dir.join(name);
    let (text, created) = read_or_create(&path, || format!("{}\n", make())).map_err(|source| {
        CredentialsError::Io {
            path: path.clone(),
            source,
        }
    })?;
    let value = text.trim().to_owned();
    if value.is_empty() {
        return Err(CredentialsError::Invalid {
            path,
            message: "is empty (delete it to generate a new one)".into(),
        }
        .into());
    }
    Ok((
        value,
        if created {
            Origin::Generated(path)
        } else {
            Origin::File(path)
        },
    ))
}

/// The password hash: `[admin] password_hash`, else the hash of the password in
/// `data_dir/admin-password` (generated on first start).
pub fn resolve_password(cfg: &AdminConfig, data_dir: &Path) -> Result<(String, Origin), AuthError> {
    if !cfg.password_hash.is_empty() {
        return Ok((cfg.password_hash.clone(), Origin::Config));
    }
    let (password, origin) = read_or_generate(data_dir, PASSWORD_FILE, || random_hex(12))?;
    Ok((hash_password(&password)?, origin))
}

/// The bearer token: `[admin] token`, else `data_dir/admin-token` (generated on first start).
pub fn resolve_token(cfg: &AdminConfig, data_dir: &Path) -> Result<(String, Origin), AuthError> {
    if !cfg.token.is_empty() {
        return Ok((cfg.token.clone(), Origin::Config));
    }
    read_or_generate(data_dir, TOKEN_FILE, || random_hex(32))
}

#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub csrf: String,
    expires: Instant,
    created: Instant,
}

/// What authenticated a request.
#[derive(Debug, Clone)]
pub enum Principal {
    Session { user: String, csrf: String },
    Token,
}

struct Failures {
    since: Instant,
    count: u32,
}

pub struct Auth {
    user: String,
    password_hash: String,
    token: String,
    ttl: Duration,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    /// Attempts from every address in the current window.
    global: Mutex<Failures>,
    /// Places for argon2 verifications ([`MAX_VERIFYING`]).
    verifying: tokio::sync::Semaphore,
}

/// The outcome of a login attempt.
#[derive(Debug)]
pub enum Login {
    /// The new session's id (the cookie value) and the session.
    Ok(String, Session),
    Refused,
    /// Too many failures from this address; retry after this long.
    Limited(Duration),
}

impl Auth {
    pub fn new(user: String, password_hash: String, token: String, ttl: Duration) -> Self {
        Self {
            user,
            password_hash,
            token,
            ttl,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            global: Mutex::new(Failures {
                since: Instant::now(),
                count: 0,
            }),
            verifying: tokio::sync::Semaphore::new(MAX_VERIFYING),
        }
    }

    /// A place to run one argon2 verification, waiting at most [`VERIFY_WAIT`]; `None`: the
    /// verifiers are busy (answer 429).
    pub async fn verify_slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        tokio::time::timeout(VERIFY_WAIT, self.verifying.acquire())
            .await
            .ok()?
            .ok()
    }

    /// Whether `client` is refused for now (checked before waiting for a verifier, so a
    /// limited client takes no place in the queue).
    pub fn limited_now(&self, client: IpAddr) -> Option<Duration> {
        self.limited(client, Instant::now())
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How long `client` must wait before trying again, if it is limited.
    fn limited(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let map = self.failures.lock().ok()?;
        let f = map.get(&client)?;
        let age = now.saturating_duration_since(f.since);
        (f.count >= MAX_FAILURES && age < FAILURE_WINDOW).then(|| FAILURE_WINDOW - age)
    }

    /// Counts an attempt before it is verified, atomically with the limit checks, so that
    /// concurrent attempts cannot all slip under the limit: `Err(wait)` when this address
    /// or all addresses together are over their limit.
    fn begin_attempt(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        {
            let Ok(mut global) = self.global.lock() else {
                return Err(FAILURE_WINDOW);
            };
            let age = now.saturating_duration_since(global.since);
            if age >= FAILURE_WINDOW {
                *global = Failures {
                    since: now,
                    count: 0,
                };
            } else if global.count >= MAX_GLOBAL_ATTEMPTS {
                return Err(FAILURE_WINDOW - age);
            }
            global.count += 1;
        }
        if let Some(wait) = self.limited(client, now) {
            return Err(wait);
        }
        self.note_failure(client, now);
        Ok(())
    }

    fn note_failure(&self, client: IpAddr, now: Instant) {
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        if map.len() >= MAX_TRACKED {
            map.retain(|_, f| now.saturating_duration_since(f.since) < FAILURE_WINDOW);
        }
        let f = map.entry(client).or_insert(Failures {
            since: now,
            count: 0,
        });
        if now.saturating_duration_since(f.since) >= FAILURE_WINDOW {
            *f = Failures {
                since: now,
                count: 0,
            };
        }
        f.count += 1;
    }

    /// Checks a login (argon2: call from a blocking thread).
    pub fn login(&self, client: IpAddr, user: &str, password: &str) -> Login {
        let now = Instant::now();
        // The attempt counts as a failure until it is verified good.
        if let Err(wait) = self.begin_attempt(client, now) {
            return Login::Limited(wait);
        }
        let user_ok =
            crate::imaging::signature::constant_time_eq(user.as_bytes(), self.user.as_bytes());
        // Verify even for a wrong user name, so timing does not tell which part was wrong.
        let password_ok = verify_password(&self.password_hash, password);
        if !(user_ok && password_ok) {
            return Login::Refused;
        }
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&client);
        }
        let id = random_hex(32);
        let session = Session {
            user: self.user.clone(),
            csrf: random_hex(32),
            expires: now + self.ttl,
            created: now,
        };
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.retain(|_, s| s.expires > now);
            if sessions.len() >= MAX_SESSIONS
                && let Some(oldest) = sessions
                    .iter()
                    .min_by_key(|(_, s)| s.created)
                    .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
            sessions.insert(id.clone(), session.clone());
        }
        Login::Ok(id, session)
    }

    pub fn session(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut sessions = self.sessions.lock().ok()?;
        match sessions.get(id) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                sessions.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn logout(&self, id: &str) {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.remove(id);
        }
    }

    pub fn token_ok(&self, presented: &str) -> bool {
        crate::imaging::signature::constant_time_eq(presented.as_bytes(), self.token.as_bytes())
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        let hash = hash_password("correct horse").unwrap();
        Auth::new(
            "admin".into(),
            hash,
            "t".repeat(32),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn argon2id_hashes_verify_and_differ_by_salt() {
        let a = hash_password("pw").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert!(verify_password(&a, "pw"));
        assert!(!verify_password(&a, "pW"));
        assert!(!verify_password("not a hash", "pw"));
        assert_ne!(a, hash_password("pw").unwrap());
    }

    #[test]
    fn login_sessions_logout_and_rate_limit() {
        let a = auth();
        let me: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let Login::Ok(id, s) = a.login(me, "admin", "correct horse") else {
            panic!("login refused")
        };
        assert_eq!(s.csrf.len(), 64);
        assert!(a.session(&id).is_some());
        a.logout(&id);
        assert!(a.session(&id).is_none());
        assert!(matches!(
            a.login(me, "root", "correct horse"),
            Login::Refused
        ));
        for _ in 1..MAX_FAILURES {
            assert!(matches!(a.login(me, "admin", "wrong"), Login::Refused));
        }
        // Limited now, even with the right password; another address is not.
        match a.login(me, "admin", "correct horse") {
            Login::Limited(wait) => assert!(wait <= FAILURE_WINDOW && wait > Duration::ZERO),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            a.login(other, "admin", "correct horse"),
            Login::Ok(..)
        ));
        assert!(a.token_ok(&"t".repeat(32)));
        assert!(!a.token_ok(&"t".repeat(31)));
    }

    #[test]
    fn concurrent_attempts_count_before_verification_and_globally() {
        // Bug guarded: an attempt counted only after its argon2 verification, so a burst of
        // concurrent logins from one address all passed the limit check, and nothing bounded
        // attempts from many addresses.
        let a = auth();
        let me: IpAddr = "10.0.0.9".parse().unwrap();
        let now = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(a.begin_attempt(me, now).is_ok());
        }
        assert!(
            a.begin_attempt(me, now).is_err(),
            "the sixth concurrent attempt"
        );
        let a = auth();
        let mut admitted = 0;
        for i in 0..(MAX_GLOBAL_ATTEMPTS + 50) {
            let addr = IpAddr::from([10, 1, (i / 256) as u8, (i % 256) as u8]);
            if a.begin_attempt(addr, now).is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, MAX_GLOBAL_ATTEMPTS);
    }

    #[test]
    fn generated_password_and_token_persist_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = AdminConfig::default();
        let (hash, origin) = resolve_password(&cfg, dir.path()).unwrap();
        assert!(matches!(origin, Origin::Generated(_)));
        let pw = std::fs::read_to_string(dir.path().join(PASSWORD_FILE)).unwrap();
        assert!(verify_password(&hash, pw.trim()));
        let (_, origin) = resolve_password(&cfg, dir.path()).unwrap();
        assert!(matches!(origin, Origin::File(_)));
        let (token, _) = resolve_token(&cfg, dir.path()).unwrap();
        let (again, origin) = resolve_token(&cfg, dir.path()).unwrap();
        assert_eq!(
            (token.len(), &again, origin),
            (64, &token, Origin::File(dir.path().join(TOKEN_FILE)))
        );
        for f in [PASSWORD_FILE, TOKEN_FILE] {
            crate::credentials::assert_private(&dir.path().join(f));
        }
    }

    #[test]
    fn cookies_are_found_by_name() {
        assert_eq!(
            cookie("a=1; pixelport_session=abc; b=2", "pixelport_session"),
            Some("abc")
        );
        assert_eq!(cookie("xpixelport_session=abc", "pixelport_session"), None);
    }
}
