//! Configuration: defaults, then the TOML file, then imgproxy's environment names
//! (`imgproxy_env`), then `PIXELPORT_<SECTION>__<KEY>` environment overrides. Every error
//! names the key (or variable) at fault, and `validate()` runs before anything starts, so
//! nothing runs half-configured. `Config::load_traced` also tells where each value came from.

pub mod imgproxy_env;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// A byte count written as an integer or as `"64MiB"`, `"5GB"`, `"512k"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a size (examples: 1048576, \"64MiB\", \"5GiB\")"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            other => {
                return Err(format!(
                    "unknown size unit `{other}` in `{s}` (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
                ));
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// A duration written as seconds (integer) or as `"30s"`, `"5m"`, `"24h"`, `"7d"`, `"250ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl FromStr for Seconds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!("`{s}` is not a duration (examples: 30, \"30s\", \"5m\", \"24h\")")
        })?;
        let d = match unit.trim() {
            "" | "s" => Duration::from_secs(n),
            "ms" => Duration::from_millis(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86400)),
            other => {
                return Err(format!(
                    "unknown duration unit `{other}` in `{s}` (use ms, s, m, h, d)"
                ));
            }
        };
        Ok(Seconds(d))
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            return write!(f, "{ms}ms");
        }
        let s = self.0.as_secs();
        for (name, size) in [("d", 86400), ("h", 3600), ("m", 60)] {
            if s >= size && s.is_multiple_of(size) {
                return write!(f, "{}{name}", s / size);
            }
        }
        write!(f, "{s}s")
    }
}

macro_rules! string_or_int_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum Raw {
                    Int(u64),
                    Str(String),
                }
                match Raw::deserialize(d)? {
                    Raw::Int(n) => <$t>::from_str(&n.to_string()).map_err(serde::de::Error::custom),
                    Raw::Str(s) => <$t>::from_str(&s).map_err(serde::de::Error::custom),
                }
            }
        }
    };
}
string_or_int_serde!(ByteSize);
string_or_int_serde!(Seconds);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
    /// The systemd journal's native protocol, with the event's fields as journal fields.
    Journal,
}

/// How Pixelport buckets map onto a remote cluster (`[store] bucket_mapping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BucketMapping {
    /// Every Pixelport bucket is a prefix inside `[store] bucket`.
    #[default]
    Prefixed,
    /// Pixelport bucket B is cluster bucket B.
    Direct,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    #[default]
    Embedded,
    Remote,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub s3: S3Config,
    pub images: ImagesConfig,
    pub admin: AdminConfig,
    pub store: StoreConfig,
    pub cache: CacheSection,
    pub limits: crate::server::limits::LimitsConfig,
    pub tunnel: crate::tunnel::config::TunnelConfig,
    pub edge: crate::edge::config::EdgeConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where the catalog, blobs, credentials and caches live.
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// tracing filter directive, e.g. `info` or `pixelport=debug,info`.
    pub log_level: String,
    /// How long in-flight requests may run after SIGTERM/SIGINT.
    pub shutdown_grace: Seconds,
    /// Writes that would leave less than this free on the data disk are refused (S3 507);
    /// the derivative cache stops storing new variants below twice this. 0: no check.
    pub min_free_space: ByteSize,
}

/// systemd's `$STATE_DIRECTORY` (`StateDirectory=`), else `fallback`: a role's default
/// data dir.
pub fn state_directory(fallback: &str) -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .filter(|v| !v.is_empty())
        .map(|v| {
            // systemd may pass several colon-separated directories: the first one is ours.
            let s = v.to_string_lossy().into_owned();
            PathBuf::from(s.split(':').next().unwrap_or_default())
        })
        .unwrap_or_else(|| PathBuf::from(fallback))
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            data_dir: state_directory("./pixelport-data"),
            log_format: LogFormat::Text,
            log_level: "info".into(),
            shutdown_grace: Seconds(Duration::from_secs(30)),
            min_free_space: ByteSize(512 << 20),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    pub listen: String,
    /// PEM certificate chain for HTTPS on this listener (with `tls_key`); empty: plain HTTP.
    /// Read again on SIGHUP.
    pub tls_cert: PathBuf,
    /// PEM private key matching `tls_cert`.
    pub tls_key: PathBuf,
    /// Root access key; empty means "generate on first start and keep in data_dir/credentials.toml".
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    pub max_object_size: ByteSize,
    /// Buckets whose objects anyone may GET/HEAD without signing.
    pub public_buckets: Vec<String>,
    /// Multipart uploads not completed after this long are aborted and their parts deleted.
    pub multipart_expiry: Seconds,
    /// How often the bucket lifecycle rules are applied.
    pub lifecycle_interval: Seconds,
    /// The length of a lifecycle rule's "day" (1d; tests shorten it).
    pub lifecycle_day: Seconds,
    /// At most this many objects (and as many uploads) are examined per bucket per pass; the
    /// next pass goes on where this one stopped.
    pub lifecycle_max_objects: usize,
    /// The key that encrypts SSE-S3 objects at rest; empty: `<data_dir>/sse.key`, made on
    /// first start. A file named here must exist.
    pub sse_key_file: PathBuf,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9000".into(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            access_key: String::new(),
            secret_key: String::new(),
            region: "us-east-1".into(),
            max_object_size: ByteSize(5 << 40),
            public_buckets: Vec::new(),
            multipart_expiry: Seconds(Duration::from_secs(7 * 86400)),
            lifecycle_interval: Seconds(Duration::from_secs(3600)),
            lifecycle_day: Seconds(Duration::from_secs(86400)),
            lifecycle_max_objects: 10_000,
            sse_key_file: PathBuf::new(),
        }
    }
}

pub use crate::imaging::config::ImagesConfig;

/// `[cache]`: the derivative cache of processed images.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSection {
    /// Off: every request is processed (nothing is stored).
    pub enabled: bool,
    /// The redb file; empty means `<data_dir>/cache.redb`.
    pub path: PathBuf,
    /// Bound on the cached bytes; least recently used variants are evicted past it.
    pub max_size: ByteSize,
    /// Variants older than this are processed again; 0 keeps them until evicted or invalidated.
    pub ttl: Seconds,
    /// Remote store only: how long a source's ETag is trusted before it is checked again
    /// with a HEAD (others may change objects behind Pixelport's back).
    pub source_revalidate: Seconds,
    /// Recently served variants also kept in memory, up to this many bytes; 0: none.
    pub memory_size: ByteSize,
}

impl Default for CacheSection {
    fn default() -> Self {
        Self {
            enabled: true,
            path: PathBuf::new(),
            max_size: ByteSize(10 << 30),
            ttl: Seconds(Duration::ZERO),
            source_revalidate: Seconds(Duration::from_secs(60)),
            memory_size: ByteSize(64 << 20),
        }
    }
}

impl CacheSection {
    /// The cache file for a data dir.
    pub fn file(&self, data_dir: &Path) -> PathBuf {
        if self.path.as_os_str().is_empty() {
            data_dir.join("cache.redb")
        } else {
            self.path.clone()
        }
    }

    /// The cache library's settings.
    pub fn cache_config(&self) -> crate::cache::CacheConfig {
        crate::cache::CacheConfig {
            max_size: self.max_size.0,
            ttl: Some(self.ttl.0).filter(|t| !t.is_zero()),
            memory_size: self.memory_size.0,
            ..crate::cache::CacheConfig::default()
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: String,
    /// PEM certificate chain for HTTPS on this listener (with `tls_key`); empty: plain HTTP.
    /// Read again on SIGHUP.
    pub tls_cert: PathBuf,
    /// PEM private key matching `tls_cert`.
    pub tls_key: PathBuf,
    /// The web UI's user name.
    pub user: String,
    /// argon2id PHC string (`pixelport hash-password`). Empty: a password is generated on
    /// first start into `data_dir/admin-password`.
    pub password_hash: String,
    /// Bearer token for scripts and `pixelport cache`. Empty: generated on first start into
    /// `data_dir/admin-token`.
    pub token: String,
    /// Public base URL of the image endpoint, used in the URLs the transform builder hands
    /// out. Empty: `http://` + `images.listen`.
    pub images_url: String,
    /// How long a login lasts.
    pub session_ttl: Seconds,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9001".into(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            user: "admin".into(),
            password_hash: String::new(),
            token: String::new(),
            images_url: String::new(),
            session_ttl: Seconds(Duration::from_secs(12 * 3600)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// Remote only: the cluster's S3 endpoint, e.g. `http://127.0.0.1:9000`.
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// Remote only: `prefixed` (every Pixelport bucket inside `bucket`) or `direct`
    /// (Pixelport bucket B is cluster bucket B).
    pub bucket_mapping: BucketMapping,
    /// Remote, prefixed only: the one cluster bucket that holds every Pixelport bucket.
    pub bucket: String,
    /// Remote only: key prefix inside `bucket`; Pixelport bucket B, key K lives at `{bucket_prefix}B/K`.
    pub bucket_prefix: String,
    /// Remote only: path-style (`endpoint/bucket/key`) rather than virtual-host-style addressing.
    pub path_style: bool,
    /// Remote only: per-operation timeout against the cluster.
    pub timeout: Seconds,
    /// Remote only: retries of a failed idempotent operation (with backoff).
    pub retries: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Embedded,
            endpoint: String::new(),
            region: "us-east-1".into(),
            access_key: String::new(),
            secret_key: String::new(),
            bucket_mapping: BucketMapping::Prefixed,
            bucket: "pixelport".into(),
            bucket_prefix: String::new(),
            path_style: true,
            timeout: Seconds(Duration::from_secs(30)),
            retries: 3,
        }
    }
}

/// Keys whose values `check-config` masks, in whichever section they appear.
const SECRET_KEYS: [&str; 7] = [
    "secret_key",
    "access_key",
    "key",
    "salt",
    "secret",
    "password_hash",
    "token",
];

/// Where a configuration value came from; a key with none is at its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The config file, by path.
    File(String),
    /// An environment variable, by name (`PIXELPORT_*`, `IMGPROXY_*` or `AWS_*`).
    Env(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "file {path}"),
            Source::Env(var) => write!(f, "env {var}"),
        }
    }
}

/// A loaded configuration with the origin of each value.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Dotted key (`images.quality`) → where its value came from; absent keys are defaults.
    pub sources: BTreeMap<String, Source>,
    /// `IMGPROXY_*` variables that were set but have no Pixelport equivalent, with why.
    pub ignored: Vec<(String, &'static str)>,
}

impl Loaded {
    /// The effective configuration as TOML, secrets masked, each value that is not a
    /// default followed by a comment naming where it came from.
    pub fn to_annotated_toml(&self) -> String {
        annotate(&self.config.to_masked_toml(), &self.sources)
    }
}

/// Appends `# <source>` to each `key = value` line whose dotted key is in `sources`.
fn annotate(toml_text: &str, sources: &BTreeMap<String, Source>) -> String {
    let mut section = String::new();
    let mut out = String::with_capacity(toml_text.len() * 2);
    for line in toml_text.lines() {
        let trimmed = line.trim();
        if let Some(header) = trimmed.strip_prefix('[') {
            section = header.trim_matches(|c| c == '[' || c == ']').to_owned();
            out.push_str(line);
        } else if let Some((key, _)) = trimmed.split_once(" = ")
            && !key.is_empty()
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && let Some(source) = sources.get(&format!("{section}.{key}"))
        {
            out.push_str(line);
            out.push_str("  # ");
            out.push_str(&source.to_string());
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Every leaf of `table` as a dotted key (arrays count as one value).
fn leaf_keys(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => leaf_keys(&key, t, out),
            _ => out.push(key),
        }
    }
}

impl Config {
    /// Defaults, overlaid by `file` (when given), by imgproxy's variables, then by
    /// `PIXELPORT_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Ok(Self::load_traced(file, env)?.config)
    }

    /// `load`, also telling where each value came from.
    pub fn load_traced(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Loaded, ConfigError> {
        let mut sources = BTreeMap::new();
        let (mut table, origin) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
                let mut keys = Vec::new();
                leaf_keys("", &table, &mut keys);
                for key in keys {
                    sources.insert(key, Source::File(path.display().to_string()));
                }
                (table, path.display().to_string())
            }
            None => (toml::Table::new(), "(defaults)".to_owned()),
        };
        let ignored = apply_env(&mut table, env, &mut sources)?;
        let config: Config =
            Config::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
                path: origin,
                message: e.to_string().trim().to_owned(),
            })?;
        config.validate()?;
        Ok(Loaded {
            config,
            sources,
            ignored,
        })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, addr) in [
            ("s3.listen", &self.s3.listen),
            ("images.listen", &self.images.listen),
            ("admin.listen", &self.admin.listen),
        ] {
            addr.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    key,
                    format!("`{addr}` is not an address like 127.0.0.1:9000"),
                )
            })?;
        }
        for (section, cert, key) in self.tls_listeners() {
            if cert.as_os_str().is_empty() != key.as_os_str().is_empty() {
                return Err(invalid(
                    &format!("{section}.tls_key"),
                    format!("{section}.tls_cert and {section}.tls_key must be set together"),
                ));
            }
        }
        if self.server.data_dir.as_os_str().is_empty() {
            return Err(invalid("server.data_dir", "must not be empty"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.server.log_level).map_err(|e| {
            invalid(
                "server.log_level",
                format!("`{}`: {e}", self.server.log_level),
            )
        })?;
        if self.s3.access_key.is_empty() != self.s3.secret_key.is_empty() {
            return Err(invalid(
                "s3.secret_key",
                "s3.access_key and s3.secret_key must be set together (or both left empty to generate)",
            ));
        }
        if !self.s3.access_key.is_empty() && self.s3.access_key.len() < 3 {
            return Err(invalid("s3.access_key", "must be at least 3 characters"));
        }
        if !self.s3.secret_key.is_empty() && self.s3.secret_key.len() < 8 {
            return Err(invalid("s3.secret_key", "must be at least 8 characters"));
        }
        if self.s3.region.is_empty() {
            return Err(invalid("s3.region", "must not be empty"));
        }
        if self.s3.lifecycle_interval.0.is_zero() || self.s3.lifecycle_day.0.is_zero() {
            return Err(invalid(
                "s3.lifecycle_interval",
                "s3.lifecycle_interval and s3.lifecycle_day must be at least 1s",
            ));
        }
        if self.s3.lifecycle_max_objects == 0 {
            return Err(invalid(
                "s3.lifecycle_max_objects",
                "must be greater than 0",
            ));
        }
        if self.s3.max_object_size.0 == 0 {
            return Err(invalid("s3.max_object_size", "must be greater than 0"));
        }
        for b in &self.s3.public_buckets {
            crate::s3::names::validate_bucket_name(b)
                .map_err(|m| invalid("s3.public_buckets", format!("`{b}`: {m}")))?;
        }
        self.images
            .validate()
            .map_err(|e| invalid(&format!("images.{}", e.key), e.message))?;
        self.limits
            .validate()
            .map_err(|e| invalid(&format!("limits.{}", e.key), e.message))?;
        self.tunnel
            .validate()
            .map_err(|(key, message)| invalid(&format!("tunnel.{key}"), message))?;
        self.edge
            .validate()
            .map_err(|(key, message)| invalid(&format!("edge.{key}"), message))?;
        if self.admin.user.is_empty() {
            return Err(invalid("admin.user", "must not be empty"));
        }
        if !self.admin.password_hash.is_empty()
            && !self.admin.password_hash.starts_with("$argon2id$")
        {
            return Err(invalid(
                "admin.password_hash",
                "must be an argon2id hash (`$argon2id$...`; make one with `pixelport hash-password`)",
            ));
        }
        if !self.admin.token.is_empty() && self.admin.token.len() < 16 {
            return Err(invalid("admin.token", "must be at least 16 characters"));
        }
        let images_url = &self.admin.images_url;
        if !(images_url.is_empty()
            || images_url.starts_with("http://")
            || images_url.starts_with("https://"))
        {
            return Err(invalid(
                "admin.images_url",
                "must start with http:// or https://",
            ));
        }
        if self.store.kind == StoreKind::Remote {
            if self.store.endpoint.is_empty() {
                return Err(invalid(
                    "store.endpoint",
                    "required when store.kind = \"remote\"",
                ));
            }
            if !(self.store.endpoint.starts_with("http://")
                || self.store.endpoint.starts_with("https://"))
            {
                return Err(invalid(
                    "store.endpoint",
                    format!(
                        "`{}` must start with http:// or https://",
                        self.store.endpoint
                    ),
                ));
            }
            if self.store.bucket_mapping == BucketMapping::Prefixed && self.store.bucket.is_empty()
            {
                return Err(invalid(
                    "store.bucket",
                    "required when store.kind = \"remote\"",
                ));
            }
            if !self.store.bucket_prefix.is_empty() && !self.store.bucket_prefix.ends_with('/') {
                return Err(invalid("store.bucket_prefix", "must end with `/` when set"));
            }
        }
        Ok(())
    }

    /// Each appliance listener's section with its `tls_cert` and `tls_key` (empty: plain).
    pub fn tls_listeners(&self) -> [(&'static str, &Path, &Path); 3] {
        [
            ("s3", &self.s3.tls_cert, &self.s3.tls_key),
            ("images", &self.images.tls_cert, &self.images.tls_key),
            ("admin", &self.admin.tls_cert, &self.admin.tls_key),
        ]
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(&self.masked_value()).unwrap_or_default()
    }

    /// The effective configuration as a TOML value, secrets masked.
    pub fn masked_value(&self) -> toml::Value {
        let mut value =
            toml::Value::try_from(self).unwrap_or(toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(root) = &mut value {
            for (_, section) in root.iter_mut() {
                if let toml::Value::Table(t) = section {
                    for key in SECRET_KEYS {
                        if let Some(toml::Value::String(s)) = t.get_mut(key)
                            && !s.is_empty()
                        {
                            *s = mask(s, key == "access_key");
                        }
                    }
                }
            }
        }
        value
    }
}

/// The keys `pixelport serve` applies on SIGHUP (`systemctl reload`); the certificate files
/// that `tls_cert` / `tls_key` name are read again too. Every other key needs a restart.
pub const RELOADABLE: [&str; 3] = ["server.log_level", "s3.access_key", "s3.secret_key"];

/// The keys whose values differ between `running` and `new` and that a reload does not
/// apply (dotted names, nested sections included), sorted.
pub fn restart_needed(running: &Config, new: &Config) -> Vec<String> {
    fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_owned(), other.clone());
            }
        }
    }
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    for (config, out) in [(running, &mut a), (new, &mut b)] {
        if let Ok(v) = toml::Value::try_from(config) {
            flatten("", &v, out);
        }
    }
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k) && !RELOADABLE.contains(&k.as_str()))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn mask(s: &str, keep_prefix: bool) -> String {
    if keep_prefix && s.len() > 6 {
        format!("{}****", &s[..4])
    } else {
        "****".into()
    }
}

/// Overlay `PIXELPORT_<SECTION>__<KEY>` variables, and below them imgproxy's names
/// (`imgproxy_env`), onto the table, recording each key set in `sources`. A value takes the
/// type the key has in the defaults (integer, bool, list as comma-separated, else string).
/// Returns the imgproxy variables that were ignored.
/// Whether `table` (the config file) sets the key at `path`.
fn set_in(table: &toml::Table, path: &[String]) -> bool {
    let Some((key, tables)) = path.split_last() else {
        return false;
    };
    tables
        .iter()
        .try_fold(table, |t, n| t.get(n).and_then(toml::Value::as_table))
        .is_some_and(|t| t.contains_key(key))
}

fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    sources: &mut BTreeMap<String, Source>,
) -> Result<Vec<(String, &'static str)>, ConfigError> {
    let defaults = toml::Value::try_from(Config::default())
        .map_err(|e| invalid("(defaults)", e.to_string()))?;
    // rest of the name (`S3__LISTEN`) → (the variable's full name, its value)
    let mut vars: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut others: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in env {
        if let Some(rest) = k.strip_prefix("PIXELPORT_") {
            vars.insert(rest.to_owned(), (k.clone(), v));
        } else if k.starts_with("IMGPROXY_") || k.starts_with("AWS_") {
            others.insert(k, v);
        }
    }
    // imgproxy's own names, so a container configured for imgproxy keeps working;
    // PIXELPORT_* wins.
    let imgproxy = imgproxy_env::translate(&others).map_err(|e| ConfigError::Env {
        var: e.var,
        message: e.message,
    })?;
    for setting in imgproxy.settings {
        vars.entry(setting.key)
            .or_insert((setting.var, setting.value));
    }
    for (rest, (var, raw)) in vars {
        let env_err = |message: String| ConfigError::Env {
            var: var.clone(),
            message,
        };
        // `SECTION__KEY`, or `SECTION__TABLE__KEY` for a nested table (`IMAGES__WATERMARK__URL`).
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.len() < 2 {
            // PIXELPORT_CONFIG and similar are not config keys; ignore names without `__`.
            continue;
        }
        let dotted = path.join(".");
        // imgproxy's defaults sit below the config file: a key the file sets stays.
        if var == imgproxy_env::IMGPROXY_DEFAULT && set_in(table, &path) {
            continue;
        }
        let Some(default) = path.iter().try_fold(&defaults, |v, k| v.get(k)) else {
            return Err(env_err(format!("`{dotted}` is not a config key")));
        };
        if default.is_table() {
            return Err(env_err(format!("`{dotted}` is a table, not a config key")));
        }
        let value = match default {
            toml::Value::Integer(_) => toml::Value::Integer(
                raw.trim()
                    .parse()
                    .map_err(|_| env_err(format!("`{raw}` is not an integer")))?,
            ),
            toml::Value::Float(_) => toml::Value::Float(
                raw.trim()
                    .parse()
                    .map_err(|_| env_err(format!("`{raw}` is not a number")))?,
            ),
            toml::Value::Boolean(_) => {
                toml::Value::Boolean(match raw.trim().to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" | "on" => true,
                    "0" | "false" | "no" | "off" => false,
                    _ => return Err(env_err(format!("`{raw}` is not a boolean (true/false)"))),
                })
            }
            toml::Value::Array(_) => toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect(),
            ),
            _ => toml::Value::String(raw),
        };
        let (key, tables) = path
            .split_last()
            .ok_or_else(|| env_err("empty name".into()))?;
        let mut at = &mut *table;
        for (depth, name) in tables.iter().enumerate() {
            let entry = at
                .entry(name.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(t) = entry else {
                let shown = tables.get(..=depth).unwrap_or_default().join(".");
                return Err(env_err(format!(
                    "`{shown}` in the config file is not a table"
                )));
            };
            at = t;
        }
        sources.insert(dotted, Source::Env(var.clone()));
        at.insert(key.clone(), value);
    }
    Ok(imgproxy.ignored)
}

#[cfg(test)]
mod tests {
    #[test]
    fn restart_needed_names_changed_keys_a_reload_cannot_apply() {
        let running = Config::default();
        let mut new = Config::default();
        assert!(restart_needed(&running, &new).is_empty());
        new.server.log_level = "debug".into();
        new.s3.access_key = "AKIAEXAMPLE".into();
        assert!(restart_needed(&running, &new).is_empty());
        new.s3.listen = "0.0.0.0:9000".into();
        new.edge.cache.memory_size = ByteSize(1);
        new.images.tls_cert = "/etc/ssl/x.pem".into();
        assert_eq!(
            restart_needed(&running, &new),
            ["edge.cache.memory_size", "images.tls_cert", "s3.listen"]
        );
    }

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn sizes_and_durations_parse_and_print() {
        assert_eq!("64MiB".parse::<ByteSize>(), Ok(ByteSize(64 << 20)));
        assert_eq!("1048576".parse::<ByteSize>(), Ok(ByteSize(1 << 20)));
        assert_eq!("5 GB".parse::<ByteSize>(), Ok(ByteSize(5_000_000_000)));
        assert!("5XB".parse::<ByteSize>().is_err());
        assert!("".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(5 << 40).to_string(), "5TiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
        assert_eq!(
            "24h".parse::<Seconds>(),
            Ok(Seconds(Duration::from_secs(86400)))
        );
        assert_eq!(
            "250ms".parse::<Seconds>(),
            Ok(Seconds(Duration::from_millis(250)))
        );
        assert_eq!(Seconds(Duration::from_secs(90)).to_string(), "90s");
        assert_eq!(Seconds(Duration::from_secs(7 * 86400)).to_string(), "7d");
        assert!("soon".parse::<Seconds>().is_err());
    }

    #[test]
    fn defaults_validate() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.s3.listen, "127.0.0.1:9000");
        assert_eq!(c.images.listen, "127.0.0.1:8080");
        assert_eq!(c.admin.listen, "127.0.0.1:9001");
        assert_eq!(c.store.kind, StoreKind::Embedded);
    }

    #[test]
    fn env_overrides_take_the_default_type() {
        let c = Config::load(
            None,
            env(&[
                ("PIXELPORT_S3__LISTEN", "127.0.0.1:9100"),
                ("PIXELPORT_SERVER__DATA_DIR", "/tmp/x"),
                ("PIXELPORT_S3__PUBLIC_BUCKETS", "pub-a, pub-b"),
                ("PIXELPORT_STORE__PATH_STYLE", "false"),
                ("PIXELPORT_STORE__RETRIES", "7"),
                ("PIXELPORT_S3__MAX_OBJECT_SIZE", "1MiB"),
                ("PIXELPORT_CONFIG", "ignored"),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.s3.listen, "127.0.0.1:9100");
        assert_eq!(c.server.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.s3.public_buckets, vec!["pub-a", "pub-b"]);
        assert!(!c.store.path_style);
        assert_eq!(c.store.retries, 7);
        assert_eq!(c.s3.max_object_size, ByteSize(1 << 20));
    }

    #[test]
    fn imgproxy_format_defaults_sit_below_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "[images]\nauto_avif = true\n").unwrap();
        let c = Config::load(Some(&file), env(&[("IMGPROXY_QUALITY", "70")])).unwrap();
        assert!(c.images.auto_avif, "the file's choice stays");
        assert!(
            !c.images.auto_webp,
            "imgproxy's default where the file is silent"
        );
        let c = Config::load(Some(&file), env(&[])).unwrap();
        assert!(c.images.auto_webp, "Pixelport's own default");
    }

    #[test]
    fn nested_tables_take_env_names_too() {
        // Before: only SECTION__KEY was read, so IMGPROXY_WATERMARK_* had nowhere to go.
        let c = Config::load(
            None,
            env(&[
                ("IMGPROXY_WATERMARK_URL", "https://example.com/logo.png"),
                ("PIXELPORT_IMAGES__WATERMARK__OPACITY", "0.25"),
            ]),
        )
        .unwrap();
        assert_eq!(c.images.watermark.url, "https://example.com/logo.png");
        assert_eq!(c.images.watermark.opacity, 0.25);
        let e = Config::load(None, env(&[("PIXELPORT_IMAGES__WATERMARK", "x")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a table"), "{e}");
        let e = Config::load(None, env(&[("PIXELPORT_IMAGES__WATERMARK__SIZE", "x")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("images.watermark.size"), "{e}");
        let e = Config::load(None, env(&[("IMGPROXY_WATERMARK_OPACITY", "2")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("watermark.opacity"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::load(None, env(&[("PIXELPORT_S3__LISTNE", "x")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("PIXELPORT_S3__LISTNE") && e.contains("s3.listne"),
            "{e}"
        );
        let e = Config::load(None, env(&[("PIXELPORT_STORE__RETRIES", "many")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("PIXELPORT_STORE__RETRIES"), "{e}");
        let e = Config::load(None, env(&[("PIXELPORT_S3__LISTEN", "nowhere")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("s3.listen"), "{e}");
        let e = Config::load(None, env(&[("PIXELPORT_S3__MAX_OBJECT_SIZE", "big")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_object_size"), "{e}");
        let e = Config::load(None, env(&[("PIXELPORT_STORE__KIND", "remote")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.endpoint"), "{e}");
        let e = Config::load(None, env(&[("PIXELPORT_S3__ACCESS_KEY", "abc")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("s3.secret_key"), "{e}");
    }

    #[test]
    fn pixelport_variables_win_over_imgproxy_ones_which_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[images]\nquality = 90\nttl = 60\n").unwrap();
        let block = [
            ("IMGPROXY_USE_S3", "true"),
            ("IMGPROXY_S3_ENDPOINT", "http://127.0.0.1:9100"),
            ("IMGPROXY_S3_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "minioadmin"),
            ("AWS_SECRET_ACCESS_KEY", "minioadmin-secret"),
            ("IMGPROXY_QUALITY", "70"),
            ("IMGPROXY_MAX_SRC_RESOLUTION", "16.8"),
            ("IMGPROXY_STRIP_METADATA", "false"),
            ("IMGPROXY_ALLOW_UNSAFE_URLS", "true"),
            ("IMGPROXY_PROMETHEUS_BIND", ":8081"),
        ];
        let loaded = Config::load_traced(Some(&p), env(&block)).unwrap();
        let c = &loaded.config;
        assert_eq!(c.store.kind, StoreKind::Remote);
        assert_eq!(c.store.bucket_mapping, BucketMapping::Direct);
        assert_eq!(c.store.endpoint, "http://127.0.0.1:9100");
        assert_eq!(c.store.region, "eu-west-1");
        assert_eq!(c.store.access_key, "minioadmin");
        assert_eq!(c.images.quality, 70);
        assert_eq!(c.images.max_src_resolution, 16.8);
        assert!(!c.images.strip_metadata);
        assert!(c.images.allow_unsafe);
        assert_eq!(c.images.ttl.0, Duration::from_secs(60));
        let src = |k: &str| loaded.sources.get(k).map(|s| s.to_string());
        assert_eq!(
            src("images.quality").as_deref(),
            Some("env IMGPROXY_QUALITY")
        );
        assert_eq!(
            src("store.access_key").as_deref(),
            Some("env AWS_ACCESS_KEY_ID")
        );
        assert_eq!(src("images.ttl"), Some(format!("file {}", p.display())));
        assert_eq!(src("images.workers"), None);
        assert_eq!(loaded.ignored.len(), 1);
        let text = loaded.to_annotated_toml();
        assert!(
            text.contains("quality = 70  # env IMGPROXY_QUALITY\n"),
            "{text}"
        );
        assert!(
            text.contains("kind = \"remote\"  # env IMGPROXY_USE_S3\n"),
            "{text}"
        );
        assert!(!text.contains("minioadmin-secret"), "{text}");

        let mut with_ours = env(&block);
        with_ours.extend(env(&[("PIXELPORT_IMAGES__QUALITY", "60")]));
        let loaded = Config::load_traced(Some(&p), with_ours).unwrap();
        assert_eq!(loaded.config.images.quality, 60);
        assert_eq!(
            loaded.sources.get("images.quality"),
            Some(&Source::Env("PIXELPORT_IMAGES__QUALITY".into()))
        );
    }

    #[test]
    fn a_bad_imgproxy_value_names_its_variable() {
        let e = Config::load(None, env(&[("IMGPROXY_QUALITY", "high")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("IMGPROXY_QUALITY"), "{e}");
        let e = Config::load(None, env(&[("IMGPROXY_USE_S3", "sure")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("IMGPROXY_USE_S3"), "{e}");
    }

    #[test]
    fn unknown_file_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[s3]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n").unwrap();
        let e = Config::load(Some(&p), env(&[])).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        std::fs::write(&p, "[nosuch]\nx = 1\n").unwrap();
        let e = Config::load(Some(&p), env(&[])).unwrap_err().to_string();
        assert!(e.contains("nosuch"), "{e}");
        std::fs::write(&p, "[server]\nshutdown_grace = \"forever\"\n").unwrap();
        let e = Config::load(Some(&p), env(&[])).unwrap_err().to_string();
        assert!(e.contains("shutdown_grace") || e.contains("forever"), "{e}");
    }

    #[test]
    fn masked_output_hides_secrets() {
        let c = Config::load(
            None,
            env(&[
                ("PIXELPORT_S3__ACCESS_KEY", "AKIAEXAMPLE123"),
                ("PIXELPORT_S3__SECRET_KEY", "supersecretvalue"),
            ]),
        )
        .unwrap();
        let out = c.to_masked_toml();
        assert!(!out.contains("supersecretvalue"), "{out}");
        assert!(!out.contains("AKIAEXAMPLE123"), "{out}");
        assert!(out.contains("AKIA****"), "{out}");
    }
}

#[cfg(test)]
mod documented {
    use super::*;

    /// Every key of every section appears in config/pixelport.toml, and the file parses to the defaults.
    #[test]
    fn the_example_file_documents_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pixelport.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        let mut section = String::new();
        let mut seen = std::collections::BTreeSet::new();
        for line in text.lines() {
            let l = line.trim_start_matches('#').trim();
            if l.starts_with('[') && l.ends_with(']') && !l.contains(' ') {
                section = l.trim_matches(|c| c == '[' || c == ']').to_owned();
            } else if let Some((k, _)) = l.split_once(" = ") {
                seen.insert(format!("{section}.{}", k.trim()));
            }
        }
        for (s, table) in defaults.as_table().unwrap() {
            for (k, v) in table.as_table().unwrap() {
                // A sub-table ([edge.cache]) is documented key by key under its own header.
                let keys: Vec<String> = match v.as_table() {
                    Some(sub) => sub.keys().map(|sk| format!("{s}.{k}.{sk}")).collect(),
                    None => vec![format!("{s}.{k}")],
                };
                for key in keys {
                    assert!(
                        seen.contains(&key),
                        "config/pixelport.toml does not document {key}"
                    );
                }
            }
        }
        let parsed = Config::load(Some(&path), Vec::new()).unwrap();
        assert_eq!(toml::Value::try_from(&parsed).unwrap(), defaults);
    }
}
