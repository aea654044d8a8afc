//! The `pixelport` command line: serve, check-config, keygen, sign, fsck, hash-password, cache.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pixelport::config::Config;

/// mimalloc instead of glibc's malloc: a cache hit makes a few dozen small allocations,
/// and glibc's free and consolidation took ~8% of its CPU (docs/cache.md, Benchmark). Its
/// v2 (see Cargo.toml) gives freed image buffers back to the OS within 10 ms.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "pixelport",
    version,
    about = "Self-hosted image CDN: S3-compatible store, imgproxy-compatible image endpoint, derivative cache"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (S3, image and admin listeners).
    Serve {
        /// Config file (TOML); PIXELPORT_<SECTION>__<KEY> variables override it.
        #[arg(long, short, env = "PIXELPORT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the effective configuration (defaults + file + environment), secrets masked.
    CheckConfig {
        /// Config file (TOML); without it, defaults and environment only.
        #[arg(env = "PIXELPORT_CONFIG")]
        file: Option<PathBuf>,
        /// Check only: print nothing unless something is wrong (the unit's ExecStartPre).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Print a fresh S3 access key pair and a fresh imgproxy-style hex key and salt.
    Keygen,
    /// Print the signed image URL path for PATH (options and source, e.g.
    /// `/rs:fit:300:200/plain/s3://photos/cat.jpg@webp`) with the configured [images] key.
    Sign {
        /// The path after the signature, starting with `/`.
        path: String,
        #[arg(long, short, env = "PIXELPORT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check the embedded store offline (stop the daemon first): every cataloged blob exists,
    /// no blob is orphaned, the catalog is there. Prints a JSON report, and on stderr what
    /// each finding means; exits 1 when something needs attention.
    Fsck {
        #[arg(long, short, env = "PIXELPORT_CONFIG")]
        config: Option<PathBuf>,
        /// Repair what can be: blobs no catalog entry names (in blobs/ or quarantine/), or
        /// every blob when catalog.redb is lost, come back as objects of the bucket
        /// `pixelport-recovered`; the running totals are recounted.
        #[arg(long)]
        recover: bool,
    },
    /// Run the public edge: HTTPS for the world, the tunnel listener appliances dial into.
    /// Subcommands pair and revoke appliances.
    Edge {
        #[command(subcommand)]
        action: Option<EdgeCommand>,
        #[arg(long, short, env = "PIXELPORT_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// The appliance's side of the tunnel: join an edge, show what was joined.
    Tunnel {
        #[command(subcommand)]
        action: TunnelCommand,
        #[arg(long, short, env = "PIXELPORT_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// Read a password from standard input (its first line) and print its argon2id hash for
    /// [admin] password_hash.
    HashPassword,
    /// The derivative cache: through the running daemon's admin API (bearer token), or on
    /// the cache file when the daemon is not running. Prints JSON.
    Cache {
        #[command(subcommand)]
        action: CacheCommand,
        #[arg(long, short, env = "PIXELPORT_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Entries, bytes, evictions (and hits and misses from a running daemon).
    Stats,
    /// Drop cached variants: --all, or those of a bucket, a key prefix, or one object.
    Purge {
        #[arg(long, conflicts_with_all = ["bucket", "prefix", "key"])]
        all: bool,
        #[arg(long)]
        bucket: Option<String>,
        #[arg(long, requires = "bucket", conflicts_with = "key")]
        prefix: Option<String>,
        #[arg(long, requires = "bucket")]
        key: Option<String>,
    },
}

#[derive(Subcommand)]
enum EdgeCommand {
    /// Print a one-line join token for an appliance (stdout carries the token only).
    Pair {
        /// A public hostname the appliance will serve (repeatable).
        #[arg(long = "hostname", required = true)]
        hostnames: Vec<String>,
        /// The appliance listener these hostnames reach.
        #[arg(long, default_value = "images", value_parser = ["images", "s3", "admin"])]
        door: String,
        /// The address appliances dial (host:port); default [edge] public_address, else the
        /// first hostname with tunnel_listen's port.
        #[arg(long)]
        address: Option<String>,
    },
    /// Remove an appliance identity (pin prefix of 8+ hex digits, or its node name); its
    /// live connections close.
    Revoke { selector: String },
    /// List the enrolled appliance identities (JSON).
    List,
}

#[derive(Subcommand)]
enum TunnelCommand {
    /// Enrol this appliance with an edge, using the token from `pixelport edge pair`.
    Join { token: String },
    /// Print the joined edges and this appliance's identity (JSON).
    Status,
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("pixelport: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

fn edge_command(config: Config, action: Option<EdgeCommand>) -> ExitCode {
    match action {
        None => {
            let _level = init_logs(&config);
            // Before the runtime's first allocations (src/os_memory.rs says why).
            let thp_off = pixelport::os_memory::no_huge_pages();
            tracing::debug!(thp_off, "transparent huge pages off for the edge");
            let rt = match runtime() {
                Ok(r) => r,
                Err(code) => return code,
            };
            match rt.block_on(pixelport::edge::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("edge cannot start: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(EdgeCommand::Pair {
            hostnames,
            door,
            address,
        }) => {
            let door = door
                .parse()
                .unwrap_or(pixelport::tunnel::frame::Door::Images);
            match pixelport::edge::pair::pair(&config.edge, &hostnames, door, address.as_deref()) {
                Ok(token) => {
                    println!("{token}");
                    eprintln!(
                        "pixelport: edge pair: on the appliance, run `pixelport tunnel join <token>` within {} (the token works once)",
                        config.edge.pair_ttl
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pixelport: edge pair: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Some(EdgeCommand::Revoke { selector }) => {
            match pixelport::edge::pair::revoke(&config.edge.data_dir, &selector) {
                Ok(gone) if gone.is_empty() => {
                    eprintln!("pixelport: edge revoke: no identity matches `{selector}`");
                    ExitCode::from(1)
                }
                Ok(gone) => {
                    for g in gone {
                        println!("revoked {} ({})", g.node, g.pin);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pixelport: edge revoke: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Some(EdgeCommand::List) => match pixelport::edge::pair::list(&config.edge.data_dir) {
            Ok(list) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("pixelport: edge list: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn tunnel_command(config: Config, action: TunnelCommand) -> ExitCode {
    let data_dir = config.server.data_dir.clone();
    match action {
        TunnelCommand::Join { token } => {
            let rt = match runtime() {
                Ok(r) => r,
                Err(code) => return code,
            };
            match rt.block_on(pixelport::tunnel::join::join(
                &token,
                &config.tunnel,
                &data_dir,
            )) {
                Ok(out) => {
                    println!(
                        "Joined {} (identity {}).",
                        out.edge,
                        &out.pin[..16.min(out.pin.len())]
                    );
                    for g in &out.grants {
                        println!("  https://{}/ -> {} listener", g.hostname, g.door.as_str());
                    }
                    println!(
                        "Saved to {}; `pixelport serve` now connects by itself.",
                        pixelport::tunnel::config::Joined::path(&data_dir).display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pixelport: tunnel join: {e}");
                    ExitCode::from(1)
                }
            }
        }
        TunnelCommand::Status => {
            let joined = match pixelport::tunnel::config::Joined::load(&data_dir) {
                Ok(j) => j,
                Err(e) => {
                    eprintln!("pixelport: tunnel status: {e}");
                    return ExitCode::from(2);
                }
            };
            let pin = pixelport::tunnel::identity::Identity::load(
                &data_dir.join(pixelport::tunnel::config::CLIENT_IDENTITY),
                None,
            )
            .map(|i| i.pin())
            .ok();
            let live = match runtime() {
                Ok(rt) => match rt.block_on(pixelport::admin::cli::tunnel_links(&config)) {
                    Ok(Some(v)) => v,
                    Ok(None) => serde_json::json!("the daemon is not running"),
                    Err(e) => serde_json::json!(e.to_string()),
                },
                Err(code) => return code,
            };
            let out = serde_json::json!({
                "live": live,
                "enabled": config.tunnel.enabled,
                "connections_per_edge": config.tunnel.connections,
                "identity_pin": pin,
                "edges": joined.edges,
            });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            ExitCode::SUCCESS
        }
    }
}

fn load(file: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    load_traced(file).map(|l| l.config)
}

fn load_traced(file: Option<&std::path::Path>) -> Result<pixelport::config::Loaded, ExitCode> {
    Config::load_traced(file, std::env::vars()).map_err(|e| {
        eprintln!("pixelport: configuration error: {e}");
        ExitCode::from(2)
    })
}

fn init_logs(config: &Config) -> pixelport::logs::LogLevel {
    pixelport::logs::init(config)
}

/// `check-config`: the effective configuration with where each value came from, the
/// certificate files checked, and what a reload (SIGHUP) applies.
fn check_config(loaded: &pixelport::config::Loaded, quiet: bool) -> ExitCode {
    let config = &loaded.config;
    if !quiet {
        println!(
            "# Effective configuration. Precedence: PIXELPORT_* variables, then IMGPROXY_*\n\
             # (and AWS_* with IMGPROXY_USE_S3), then the file, then the defaults. A value set\n\
             # by a file or a variable names it; the others are defaults.\n"
        );
        print!("{}", loaded.to_annotated_toml());
        if !loaded.ignored.is_empty() {
            println!("\n# Ignored environment variables:");
            for (var, why) in &loaded.ignored {
                println!("#   {var}: {why}");
            }
        }
    }
    for (section, cert, key) in config.tls_listeners() {
        if cert.as_os_str().is_empty() {
            continue;
        }
        if let Err(e) = pixelport::server::tls::load_pair(cert, key) {
            eprintln!("pixelport: configuration error: {section}.tls_cert: {e}");
            return ExitCode::from(2);
        }
    }
    if quiet {
        return ExitCode::SUCCESS;
    }
    println!(
        "\n# Reloaded on SIGHUP (systemctl reload pixelport): {}, and the certificate files\n\
         # named by s3/images/admin tls_cert and tls_key. Every other key needs a restart.",
        pixelport::config::RELOADABLE.join(", ")
    );
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config: file } => {
            let glibc_threshold_fixed = pixelport::os_memory::return_large_blocks();
            let loaded = match load_traced(file.as_deref()) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let config = loaded.config;
            let log_level = init_logs(&config);
            tracing::debug!(
                glibc_threshold_fixed,
                "glibc mmap threshold fixed for the C codecs (src/os_memory.rs)"
            );
            for (var, why) in &loaded.ignored {
                tracing::warn!(%var, "environment variable ignored: {why}");
            }
            // SIGHUP reads the same file and environment again.
            let reloader = pixelport::reload::Reloader {
                load: Box::new(move || {
                    Config::load(file.as_deref(), std::env::vars()).map_err(|e| e.to_string())
                }),
                log_level: Some(log_level),
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("pixelport: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(pixelport::app::serve(config, reloader)) {
                Ok(()) => match pixelport::fatal::raised() {
                    None => ExitCode::SUCCESS,
                    Some(reason) => {
                        tracing::error!(%reason, "stopped after an unrecoverable storage fault");
                        ExitCode::from(pixelport::fatal::EXIT_CODE)
                    }
                },
                Err(e) => {
                    tracing::error!("cannot start: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { file, quiet } => match load_traced(file.as_deref()) {
            Ok(c) => check_config(&c, quiet),
            Err(code) => code,
        },
        Command::Keygen => {
            let pair = pixelport::credentials::generate_pair();
            println!("# S3 root credentials ([s3] in pixelport.toml)");
            println!("access_key = \"{}\"", pair.access_key);
            println!("secret_key = \"{}\"", pair.secret_key);
            println!();
            println!(
                "# imgproxy-style URL signing ([images] in pixelport.toml, or IMGPROXY_KEY / IMGPROXY_SALT)"
            );
            println!("key = \"{}\"", pixelport::credentials::random_hex(64));
            println!("salt = \"{}\"", pixelport::credentials::random_hex(64));
            ExitCode::SUCCESS
        }
        Command::Sign { path, config } => {
            let mut config = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            // The key `pixelport serve` generated on first start, unless one is configured.
            if let Err(e) = pixelport::credentials::resolve_image_key(
                &mut config.images,
                &config.server.data_dir,
                false,
            ) {
                eprintln!("pixelport: sign: {e}");
                return ExitCode::from(2);
            }
            match config.images.signer() {
                Ok(Some(signer)) => {
                    println!("{}", signer.signed_path(&path));
                    ExitCode::SUCCESS
                }
                Ok(None) => {
                    eprintln!(
                        "pixelport: sign: no [images] key and salt configured, and no generated key in the data dir (start `pixelport serve` once, set them, or IMGPROXY_KEY and IMGPROXY_SALT; `pixelport keygen` makes a pair)"
                    );
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("pixelport: sign: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Edge { action, config } => match load(config.as_deref()) {
            Ok(c) => edge_command(c, action),
            Err(code) => code,
        },
        Command::Tunnel { action, config } => match load(config.as_deref()) {
            Ok(c) => tunnel_command(c, action),
            Err(code) => code,
        },
        Command::HashPassword => {
            let mut line = String::new();
            if let Err(e) = std::io::stdin().read_line(&mut line) {
                eprintln!("pixelport: hash-password: cannot read standard input: {e}");
                return ExitCode::from(2);
            }
            let password = line.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                eprintln!(
                    "pixelport: hash-password: the password is empty (write it on standard input)"
                );
                return ExitCode::from(2);
            }
            match pixelport::admin::auth::hash_password(password) {
                Ok(hash) => {
                    println!("{hash}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pixelport: hash-password: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Cache { action, config } => {
            let config = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let action = match action {
                CacheCommand::Stats => pixelport::admin::cli::CacheAction::Stats,
                CacheCommand::Purge {
                    all,
                    bucket,
                    prefix,
                    key,
                } => pixelport::admin::cli::CacheAction::Purge {
                    all,
                    bucket,
                    prefix,
                    key,
                },
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("pixelport: cache: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(pixelport::admin::cli::cache(&config, &action)) {
                Ok(v) => {
                    println!("{v}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pixelport: cache: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Fsck { config, recover } => {
            let config = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match pixelport::app::fsck(&config, recover) {
                Ok((report, recovery)) => {
                    let mut out = serde_json::to_value(&report).unwrap_or_default();
                    if let (Some(r), Some(map)) = (recovery, out.as_object_mut()) {
                        map.insert(
                            "recovery".into(),
                            serde_json::to_value(r).unwrap_or_default(),
                        );
                    }
                    println!("{out}");
                    for line in report.explain() {
                        eprintln!("pixelport: fsck: {line}");
                    }
                    if report.is_clean() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("pixelport: fsck: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
