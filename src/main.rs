//! The `pixelport` command line: serve, check-config, keygen, sign, fsck, hash-password, cache.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pixelport::config::{Config, LogFormat};

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

fn load(file: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    Config::load(file, std::env::vars()).map_err(|e| {
        eprintln!("pixelport: configuration error: {e}");
        ExitCode::from(2)
    })
}

fn init_logs(config: &Config) {
    use std::io::IsTerminal;
    let mut directives = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| config.server.log_level.clone());
    // s3s logs every client error (a 404, a bad signature) at ERROR; our own request log
    // reports those with the request id at the right level instead.
    if !directives.contains("s3s") {
        directives.push_str(",s3s=off");
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.server.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let config = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logs(&config);
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
            match runtime.block_on(pixelport::app::serve(config)) {
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
        Command::CheckConfig { file } => match load(file.as_deref()) {
            Ok(c) => {
                print!("{}", c.to_masked_toml());
                ExitCode::SUCCESS
            }
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
