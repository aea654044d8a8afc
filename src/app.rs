//! `pixelport serve`: checks the data dir, binds every listener (so a port in use fails before
//! anything starts), opens the store, then serves S3, images and admin until SIGTERM/SIGINT,
//! when it stops accepting and gives in-flight requests `shutdown_grace` to finish.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opendal::Operator;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, StoreKind};
use crate::credentials::{self, Origin};
use crate::s3::PixelportS3;
use crate::s3::access::{KeyAuth, KeyRing, PolicyAccess};
use crate::server::limits::Caps;
use crate::server::{DoorLimits, accept_loop};
use crate::store::embedded::EmbeddedStore;
use crate::store::embedded::FsckReport;
use crate::store::remote::RemoteStore;
use crate::store::{DynStore, Spool, StoreError};
use crate::throttle::Throttle;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("server.data_dir: {path}: {message}")]
    DataDir { path: PathBuf, message: String },
    #[error("{key}: cannot listen on {addr}: {source}")]
    Listen {
        key: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("s3 credentials: {0}")]
    Credentials(#[from] credentials::CredentialsError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("store: {0}")]
    Backend(#[from] opendal::Error),
    #[error("images: {0}")]
    Images(String),
    #[error("cache: {0}")]
    Cache(String),
    #[error("admin: {0}")]
    Admin(String),
    #[error("tunnel: {0}")]
    Tunnel(String),
    #[error("{key}.tls_cert: {message}")]
    Tls { key: &'static str, message: String },
}

/// Opens the derivative cache, or `None` when `[cache] enabled = false`. A corrupt or
/// incompatible file is moved aside by the cache itself; what is left (a locked file, no
/// permission) stops the start, naming the file.
fn open_cache(config: &Config) -> Result<Option<crate::cache::DerivativeCache>, AppError> {
    if !config.cache.enabled {
        return Ok(None);
    }
    let path = config.cache.file(&config.server.data_dir);
    let cache_config = crate::cache::CacheConfig {
        // Twice the originals' floor: variants give way first.
        min_free_space: config.server.min_free_space.0.saturating_mul(2),
        ..config.cache.cache_config()
    };
    let cache = crate::cache::DerivativeCache::open(&path, cache_config)
        .map_err(|e| AppError::Cache(format!("{}: {e}", path.display())))?;
    let stats = cache.stats();
    tracing::info!(path = %path.display(), entries = stats.entries, bytes = stats.bytes, "derivative cache open");
    Ok(Some(cache))
}

/// Makes every file and directory the daemon creates from now on (blobs, catalog, cache,
/// spool, secrets) readable by its own user alone: umask 077, as the systemd unit's
/// `UMask=0077` does, for the runs without it.
pub fn restrict_new_files() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Creates the data dir if needed (mode 0700) and proves it is writable. An existing data
/// dir that other users can read or enter is narrowed to 0700, with a log line: it holds the
/// originals, the catalog and the secrets.
pub fn prepare_data_dir(dir: &Path) -> Result<(), AppError> {
    let fail = |message: String| AppError::DataDir {
        path: dir.to_owned(),
        message,
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| fail(format!("cannot create: {e}")))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)
            .map_err(|e| fail(format!("cannot read its mode: {e}")))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
                // A volume's root that another user owns, open to its group only (Kubernetes'
                // fsGroup): not ours to narrow, and closed to everyone else.
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && mode & 0o007 == 0 => {
                    tracing::warn!(
                        path = %dir.display(),
                        mode = format!("{:o}", mode & 0o777),
                        "the data dir is open to its group and not ours to narrow; using it as it is"
                    );
                    return probe_writable(dir);
                }
                Err(e) => return Err(fail(format!("cannot make it private (chmod 0700): {e}"))),
                Ok(()) => {}
            }
            tracing::warn!(
                path = %dir.display(),
                was = format!("{:o}", mode & 0o777),
                "the data dir was readable by other users; made it 0700"
            );
        }
    }
    probe_writable(dir)
}

fn probe_writable(dir: &Path) -> Result<(), AppError> {
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok").map_err(|e| AppError::DataDir {
        path: dir.to_owned(),
        message: format!("not writable: {e}"),
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn fs_operator(root: &Path) -> Result<Operator, AppError> {
    Ok(Operator::new(
        opendal::services::Fs::default().root(&root.to_string_lossy()),
    )?)
}

/// Opens the configured store and the spool beside it.
pub async fn open_store(config: &Config) -> Result<(DynStore, Spool), AppError> {
    let dir = std::path::absolute(&config.server.data_dir)
        .unwrap_or_else(|_| config.server.data_dir.clone());
    let op = fs_operator(&dir)?;
    let spool = Spool::new(op.clone(), dir.clone()).with_min_free(config.server.min_free_space.0);
    let swept = spool.sweep().map_err(|e| AppError::DataDir {
        path: dir.join("tmp"),
        message: e.to_string(),
    })?;
    if swept > 0 {
        tracing::info!(
            files = swept,
            "removed temporary files left by an interrupted run"
        );
    }
    let store: DynStore = match config.store.kind {
        StoreKind::Embedded => {
            let d = dir.clone();
            Arc::new(
                tokio::task::spawn_blocking(move || EmbeddedStore::open(op, &d, true))
                    .await
                    .map_err(|e| StoreError::Internal(e.to_string()))??
                    .with_master_key(sse_key(config, &dir)?),
            )
        }
        StoreKind::Remote => Arc::new(RemoteStore::new(&config.store, &dir)?),
    };
    Ok((store, spool))
}

/// SSE-S3's key: `[s3] sse_key_file`, or `<data_dir>/sse.key`, made on first start.
fn sse_key(
    config: &Config,
    data_dir: &std::path::Path,
) -> Result<crate::store::sealing::MasterKey, StoreError> {
    let configured = !config.s3.sse_key_file.as_os_str().is_empty();
    let path = if configured {
        config.s3.sse_key_file.clone()
    } else {
        data_dir.join("sse.key")
    };
    Ok(crate::store::sealing::MasterKey::load_or_create(
        &path,
        !configured,
    )?)
}

/// Binds `addr` for the listener `key`. `shared` sets `SO_REUSEPORT` (unix), so that more
/// sockets of this process can listen on the same address and the kernel spreads new
/// connections over them evenly (the image listener's per-core runtimes).
fn bind(key: &'static str, addr: &str, shared: bool) -> Result<TcpListener, AppError> {
    let fail = |source: std::io::Error| AppError::Listen {
        key,
        addr: addr.to_owned(),
        source,
    };
    let parsed: SocketAddr = addr.parse().map_err(|e| {
        fail(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{e}"),
        ))
    })?;
    crate::server::runtimes::listen_on(parsed, shared).map_err(fail)
}

/// A listener's acceptor: TLS from its certificate files when `tls_cert` is set (the
/// files are kept to be read again on SIGHUP), else plain TCP.
fn door_tls(
    section: &'static str,
    cert: &Path,
    key: &Path,
    certs: &mut Vec<(&'static str, Arc<crate::server::tls::CertFiles>)>,
) -> Result<crate::server::Acceptor, AppError> {
    if cert.as_os_str().is_empty() {
        return Ok(crate::server::Acceptor::Tcp);
    }
    let fail = |message: String| AppError::Tls {
        key: section,
        message,
    };
    let files =
        crate::server::tls::CertFiles::open(cert.to_owned(), key.to_owned()).map_err(fail)?;
    let acceptor = crate::server::tls::acceptor(files.clone()).map_err(fail)?;
    certs.push((section, files));
    Ok(crate::server::Acceptor::Tls(acceptor))
}

/// `scheme://host:port` of a listener: `https` when its acceptor serves TLS, and the
/// address it is bound to (else the configured one).
fn listener_url(
    acceptor: &crate::server::Acceptor,
    listener: &TcpListener,
    configured: &str,
) -> String {
    let scheme = match acceptor {
        crate::server::Acceptor::Tcp => "http",
        crate::server::Acceptor::Tls(_) => "https",
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| configured.to_owned());
    format!("{scheme}://{addr}")
}

pub async fn serve(mut config: Config, reloader: crate::reload::Reloader) -> Result<(), AppError> {
    let signals = catch_signals_with_reload();
    restrict_new_files();
    prepare_data_dir(&config.server.data_dir)?;
    let image_key =
        credentials::resolve_image_key(&mut config.images, &config.server.data_dir, true)?;
    let s3_listener = bind("s3.listen", &config.s3.listen, false)?;
    let images_listener = bind("images.listen", &config.images.listen, true)?;
    let admin_listener = bind("admin.listen", &config.admin.listen, false)?;
    let mut certs = Vec::new();
    let [s3_acceptor, images_acceptor, admin_acceptor] = {
        let [s3, images, admin] = config.tls_listeners();
        [
            door_tls(s3.0, s3.1, s3.2, &mut certs)?,
            door_tls(images.0, images.1, images.2, &mut certs)?,
            door_tls(admin.0, admin.1, admin.2, &mut certs)?,
        ]
    };
    let (keys, origin) = credentials::resolve(&config.s3, &config.server.data_dir)?;
    let (store, spool) = open_store(&config).await?;
    let cache = open_cache(&config)?;
    // Nobody but Pixelport writes the embedded store, and every write through it (S3 API,
    // admin API) tells `versions` to forget the object: remember versions until then, so a
    // cache hit needs no catalog read. The remote store can change behind Pixelport's back:
    // trust an answer for `source_revalidate`.
    let trust = match config.store.kind {
        crate::config::StoreKind::Embedded => std::time::Duration::MAX,
        crate::config::StoreKind::Remote => config.cache.source_revalidate.0,
    };
    let versions = Arc::new(crate::imaging::source::SourceVersions::new(trust));
    let invalidator: Arc<dyn crate::s3::ChangeListener> = Arc::new(
        crate::image_service::Invalidator::new(cache.clone(), versions.clone()),
    );
    // The edges' caches follow the derivative cache: after it, before the S3 answer.
    let purges = Arc::new(crate::tunnel::purge::Purges::open(
        PURGE_LOG,
        &config.server.data_dir,
    ));
    let edge_invalidator: Arc<dyn crate::s3::ChangeListener> = Arc::new(
        crate::image_service::EdgeInvalidator::new(purges.clone(), config.tunnel.purge_wait.0),
    );
    let relay = crate::image_service::invalidate::relay_handler(cache.clone(), versions.clone());
    // Shutdown order: the tunnel drains first (each edge stops sending new requests while
    // the appliance still serves those in flight), then the listeners close one after
    // another, S3 last, so that once the S3 listener refuses connections none of the
    // others accepts any more either.
    let mut shutdown = crate::server::Shutdown::new();
    let tunnel_stop_rx = shutdown.door("tunnel");
    let images_stop_rx = shutdown.door("images");
    let admin_stop_rx = shutdown.door("admin");
    let stop_rx = shutdown.door("s3");
    let metrics =
        Arc::new(crate::metrics::Metrics::new().map_err(|e| AppError::Images(e.to_string()))?);
    let nofile = crate::server::conn::raise_nofile();
    let caps = config.limits.caps(nofile.unwrap_or(1024));
    tracing::info!(
        nofile,
        images = caps.images,
        s3 = caps.s3,
        admin = caps.admin,
        "connection caps per listener ([limits] *_max_connections)"
    );
    let door = |name, cap| DoorLimits::new(name, &config.limits, cap, Some(metrics.clone()));
    let Caps {
        images: images_cap,
        s3: s3_cap,
        admin: admin_cap,
    } = caps;
    let images_state = Arc::new(
        crate::image_service::ImagesState::new(
            config.images.clone(),
            store.clone(),
            metrics.clone(),
            cache.clone(),
            versions,
        )
        .map_err(AppError::Images)?,
    );
    // Listeners run in order: variants are invalidated before eager renders are queued.
    let mut listeners = vec![invalidator, edge_invalidator];
    let mut eager_tasks = Vec::new();
    if let Some((eager, tasks)) =
        crate::image_service::eager::EagerRenderer::start(images_state.clone(), stop_rx.clone())
    {
        listeners.push(eager);
        eager_tasks = tasks;
    }

    let endpoint = listener_url(&s3_acceptor, &s3_listener, &config.s3.listen);
    match &origin {
        Origin::Config => {
            tracing::info!(access_key = %keys.access_key, "S3 credentials from the configuration")
        }
        Origin::File(p) => {
            tracing::info!(path = %p.display(), "S3 credentials from the credentials file")
        }
        Origin::Generated(p) => {
            println!(
                "Generated root S3 credentials and saved them to {path} (mode 0600).\n\
                 Try:\n  AWS_ACCESS_KEY_ID={ak} AWS_SECRET_ACCESS_KEY={sk} AWS_DEFAULT_REGION={region} aws --endpoint-url {endpoint} s3 ls\n\
                 Set [s3] access_key and secret_key in the config (or PIXELPORT_S3__ACCESS_KEY / PIXELPORT_S3__SECRET_KEY) to use your own.",
                path = p.display(),
                ak = keys.access_key,
                sk = keys.secret_key,
                region = config.s3.region,
            );
        }
    }

    report_image_key(
        &config,
        image_key.as_ref(),
        images_listener.local_addr().ok(),
    );

    let catalog = Arc::new(
        crate::admin::AdminCatalog::open(&config.server.data_dir)
            .map_err(|e| AppError::Admin(e.to_string()))?,
    );
    let bucket_settings = Arc::new(
        crate::s3::bucket_settings::BucketSettings::load(
            catalog.clone(),
            config.s3.public_buckets.iter().cloned().collect(),
            (
                images_state.unsigned_buckets.clone(),
                config.images.unsigned_buckets.iter().cloned().collect(),
            ),
        )
        .map_err(|e| AppError::Admin(e.to_string()))?,
    );
    let lifecycle_settings = bucket_settings.clone();
    let lifecycle_listeners = listeners.clone();
    let s3 = PixelportS3 {
        store: store.clone(),
        spool: spool.clone(),
        max_object_size: config.s3.max_object_size.0,
        region: config.s3.region.clone(),
        listeners: listeners.clone(),
        buckets: bucket_settings.clone(),
    };
    let key_ring = Arc::new(KeyRing::new([(
        keys.access_key.clone(),
        keys.secret_key.clone(),
    )]));
    let key_ring_live = key_ring.clone();
    let mut builder = s3s::service::S3ServiceBuilder::new(s3);
    builder.set_auth(KeyAuth::new(key_ring.clone()));
    builder.set_access(
        PolicyAccess::new(bucket_settings.clone(), key_ring.clone())
            .with_object_acls(store.clone()),
    );
    let s3_service = builder.build();

    let s3_svc = crate::s3::door::service(
        s3_service,
        key_ring.clone(),
        metrics.clone(),
        bucket_settings.clone(),
    );

    let images = crate::http::ImagesService(images_state.clone());
    let admin_state = admin_state(
        &config,
        AdminParts {
            store: store.clone(),
            images: images_state.clone(),
            metrics: metrics.clone(),
            keys: key_ring,
            root_access_key: keys.access_key.clone(),
            catalog,
            buckets: bucket_settings,
            spool,
            listeners,
            s3_url: endpoint.clone(),
            images_url: listener_url(&images_acceptor, &images_listener, &config.images.listen),
            admin_url: listener_url(&admin_acceptor, &admin_listener, &config.admin.listen),
        },
    )?;
    let admin =
        hyper_util::service::TowerToHyperService::new(crate::admin::router(admin_state.clone()));

    tracing::info!(
        s3 = %config.s3.listen, images = %config.images.listen, admin = %config.admin.listen,
        store = store.kind(), data_dir = %config.server.data_dir.display(),
        "pixelport {} listening", env!("CARGO_PKG_VERSION")
    );

    // The tunnel reaches the same doors, with the edge's forwarded headers trusted.
    let tunnel = crate::tunnel::connector::start(
        &config.tunnel,
        &config.server.data_dir,
        config.server.shutdown_grace.0,
        crate::tunnel::connector::Doors {
            images: crate::server::tunnel_door(
                images.clone(),
                door("images", images_cap),
                shutdown.drain(),
            ),
            s3: crate::server::tunnel_door(s3_svc.clone(), door("s3", s3_cap), shutdown.drain()),
            admin: crate::server::tunnel_door(
                admin.clone(),
                door("admin", admin_cap),
                shutdown.drain(),
            ),
        },
        metrics.clone(),
        crate::tunnel::connector::PurgeChannel {
            purges: purges.clone(),
            relay,
        },
        tunnel_stop_rx,
    )
    .map_err(|e| AppError::Tunnel(e.to_string()))?;
    if let Some((status, tasks)) = tunnel {
        tracing::info!(links = tasks.len(), "tunnel: dialling the joined edges");
        let _ = admin_state.tunnel.set(status);
        // Each link ends once its edge has closed the drained connection (or the grace ran
        // out); the listeners close meanwhile.
        for t in tasks {
            shutdown.finished_when(crate::server::shutdown::joined(t));
        }
    }

    let admin_task = tokio::spawn(accept_loop(
        admin_listener,
        admin_acceptor,
        admin,
        door("admin", admin_cap),
        true,
        admin_stop_rx,
        shutdown.drain(),
    ));
    shutdown.closed_when("admin", crate::server::shutdown::joined(admin_task));
    let s3_task = tokio::spawn(accept_loop(
        s3_listener,
        s3_acceptor,
        s3_svc,
        door("s3", s3_cap),
        // Bucket policies' aws:SourceIp needs the client's address.
        true,
        stop_rx.clone(),
        shutdown.drain(),
    ));
    shutdown.closed_when("s3", crate::server::shutdown::joined(s3_task));
    let (drained_tx, drained_rx) = watch::channel(false);
    let image_runtimes = crate::server::runtimes::per_core(
        images_listener,
        images_acceptor,
        images,
        door("images", images_cap),
        images_stop_rx,
        shutdown.drain(),
        drained_rx,
    )
    .map_err(|source| AppError::Listen {
        key: "images.listen",
        addr: config.images.listen.clone(),
        source,
    })?;
    let mut image_threads = Vec::new();
    for (thread, accepting) in image_runtimes {
        shutdown.closed_when("images", async move {
            let _ = accepting.await;
        });
        image_threads.push(thread);
    }
    let janitor = tokio::spawn(expire_uploads_forever(
        store.clone(),
        config.s3.multipart_expiry.0,
        stop_rx.clone(),
    ));
    shutdown.closed_when("s3", async move { janitor.abort() });
    let lifecycle = tokio::spawn(
        crate::s3::lifecycle_runner::LifecycleRunner {
            store: store.clone(),
            settings: lifecycle_settings,
            listeners: lifecycle_listeners,
            interval: config.s3.lifecycle_interval.0,
            day: config.s3.lifecycle_day.0,
            max_objects: config.s3.lifecycle_max_objects,
        }
        .run_forever(stop_rx.clone()),
    );
    shutdown.closed_when("s3", async move { lifecycle.abort() });
    for t in eager_tasks {
        shutdown.finished_when(crate::server::shutdown::joined(t));
    }
    let flusher = cache
        .clone()
        .map(|c| tokio::spawn(flush_access_forever(c, stop_rx.clone())));

    // Every listener accepts, the store and the caches are open.
    crate::server::systemd::ready(&format!(
        "serving: s3 {}, images {}, admin {}",
        config.s3.listen, config.images.listen, config.admin.listen
    ));
    let watchdog = tokio::spawn(crate::server::systemd::watchdog());
    let mut live = crate::reload::Live {
        running: config.clone(),
        certs,
        keys: key_ring_live,
        admin: admin_state.clone(),
    };
    let mut signals = signals;
    while let Signal::Reload = next_signal(&mut signals).await {
        live.reload(&reloader);
    }
    crate::server::systemd::stopping();
    watchdog.abort();
    tracing::info!(grace = ?config.server.shutdown_grace.0, "shutting down: no new connections; finishing in-flight requests");
    if shutdown.run(config.server.shutdown_grace.0).await {
        tracing::info!("all connections closed; bye");
    } else {
        tracing::warn!("shutdown grace period over; dropping the remaining connections");
    }
    let _ = drained_tx.send(true);
    let _ = tokio::task::spawn_blocking(move || {
        for t in image_threads {
            let _ = t.join();
        }
    })
    .await;
    if let Some(flusher) = flusher {
        let _ = flusher.await;
    }
    if let Some(cache) = cache {
        flush_access(cache, &Throttle::new(Duration::ZERO)).await;
    }
    // Which edges have every purge: they need not flush at the next start.
    let _ = tokio::task::spawn_blocking(move || purges.save()).await;
    Ok(())
}

/// Purges kept for edges that have not confirmed them; an edge further behind flushes.
const PURGE_LOG: usize = 10_000;

/// Says where the image URL-signing key came from; a key generated now is printed with a
/// ready `pixelport sign` example, as the S3 credentials are.
fn report_image_key(config: &Config, origin: Option<&Origin>, addr: Option<SocketAddr>) {
    let base = addr.map_or_else(|| config.images.listen.clone(), |a| a.to_string());
    match origin {
        Some(Origin::Generated(path)) => {
            let example = "/rs:fit:300:200/plain/s3://photos/cat.jpg@webp";
            let signed = config
                .images
                .signer()
                .ok()
                .flatten()
                .map(|s| s.signed_path(example))
                .unwrap_or_default();
            println!(
                "Generated the image URL-signing key and salt and saved them to {path} (mode 0600).\n\
                 Image URLs must be signed (or read a bucket opened to unsigned URLs). Try:\n  \
                 pixelport sign '{example}'   (with serve's --config, if any)\n  \
                 curl -o cat.webp 'http://{base}{signed}'\n\
                 Set [images] key and salt (or IMGPROXY_KEY / IMGPROXY_SALT) to use your own.",
                path = path.display(),
            );
        }
        Some(Origin::File(path)) => {
            tracing::info!(path = %path.display(), "image URL-signing key from the key file")
        }
        Some(Origin::Config) => tracing::info!("image URL-signing key from the configuration"),
        None => {}
    }
}

/// What the admin listener needs from `serve`.
struct AdminParts {
    store: DynStore,
    images: Arc<crate::image_service::ImagesState>,
    metrics: Arc<crate::metrics::Metrics>,
    keys: Arc<KeyRing>,
    root_access_key: String,
    catalog: Arc<crate::admin::AdminCatalog>,
    buckets: Arc<crate::s3::bucket_settings::BucketSettings>,
    spool: Spool,
    listeners: Vec<Arc<dyn crate::s3::ChangeListener>>,
    s3_url: String,
    /// `scheme://host:port` of the image and admin listeners.
    images_url: String,
    admin_url: String,
}

/// Resolves the admin password and token (generating them on first start), and loads the
/// admin catalog's keys and public buckets into the S3 listener's sets.
fn admin_state(config: &Config, p: AdminParts) -> Result<Arc<crate::admin::AdminState>, AppError> {
    use crate::admin::auth::{self, Origin as AuthOrigin};
    let dir = &config.server.data_dir;
    let admin_err = |e: String| AppError::Admin(e);
    let (hash, password_origin) =
        auth::resolve_password(&config.admin, dir).map_err(|e| admin_err(e.to_string()))?;
    let (token, token_origin) =
        auth::resolve_token(&config.admin, dir).map_err(|e| admin_err(e.to_string()))?;
    let ui = format!("{}/", p.admin_url);
    match &password_origin {
        AuthOrigin::Generated(path) => println!(
            "Generated the admin UI password for user `{}` and saved it to {} (mode 0600).\n\
             Open {ui} and log in; set [admin] password_hash (`pixelport hash-password`) to choose your own.",
            config.admin.user,
            path.display()
        ),
        AuthOrigin::File(path) => {
            tracing::info!(path = %path.display(), ui, "admin UI password from the password file")
        }
        AuthOrigin::Config => tracing::info!(ui, "admin UI password from the configuration"),
    }
    if let AuthOrigin::Generated(path) = &token_origin {
        println!(
            "Generated the admin API token and saved it to {} (mode 0600).",
            path.display()
        );
    }
    let images_url = if config.admin.images_url.is_empty() {
        p.images_url.clone()
    } else {
        config.admin.images_url.trim_end_matches('/').to_owned()
    };
    let settings = serde_json::to_value(config.masked_value()).unwrap_or_default();
    let state = Arc::new(crate::admin::AdminState {
        store: p.store,
        images: p.images,
        metrics: p.metrics,
        auth: crate::admin::Auth::new(
            config.admin.user.clone(),
            hash,
            token,
            config.admin.session_ttl.0,
        ),
        catalog: p.catalog,
        buckets: p.buckets,
        keys: p.keys,
        root_access_key: std::sync::RwLock::new(p.root_access_key),
        config_unsigned: config.images.unsigned_buckets.iter().cloned().collect(),
        spool: p.spool,
        max_object_size: config.s3.max_object_size.0,
        listeners: p.listeners,
        settings,
        images_url,
        s3_url: p.s3_url,
        started: Instant::now(),
        started_at: time::OffsetDateTime::now_utc(),
        tunnel: Arc::default(),
    });
    state.load_public().map_err(|e| admin_err(e.to_string()))?;
    let n = state.load_keys().map_err(|e| admin_err(e.to_string()))?;
    if n > 0 {
        tracing::info!(keys = n, "access keys from the admin catalog");
    }
    Ok(state)
}

async fn expire_uploads_forever(
    store: DynStore,
    max_age: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let period = (max_age / 4).clamp(Duration::from_secs(60), Duration::from_secs(3600));
    loop {
        let cutoff = time::OffsetDateTime::now_utc().unix_timestamp() - max_age.as_secs() as i64;
        match store.expire_uploads(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(uploads = n, "aborted stale multipart uploads"),
            Err(e) => tracing::warn!(error = %e, "could not expire stale multipart uploads"),
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => return,
        }
    }
}

/// How often the cache's recorded hits are written to its file (their LRU order).
const ACCESS_FLUSH_PERIOD: Duration = Duration::from_secs(5);

/// Persists the derivative cache's recorded hits every few seconds, until `stop`.
async fn flush_access_forever(
    cache: crate::cache::DerivativeCache,
    mut stop: watch::Receiver<bool>,
) {
    let warnings = Throttle::new(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ACCESS_FLUSH_PERIOD) => {}
            _ = stop.changed() => return,
        }
        flush_access(cache.clone(), &warnings).await;
    }
}

/// One `flush_access`, off the async threads; a failure is logged, at most once a minute
/// (the cache is disposable: a disk that stays full must not flood the log).
async fn flush_access(cache: crate::cache::DerivativeCache, warnings: &Throttle) {
    let error = match tokio::task::spawn_blocking(move || cache.flush_access()).await {
        Ok(Ok(0)) => return,
        Ok(Ok(n)) => return tracing::debug!(entries = n, "cache access times persisted"),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    if let Some(suppressed) = warnings.allow() {
        tracing::warn!(error, suppressed, "cannot persist cache access times");
    }
}

/// SIGTERM and SIGINT (and SIGHUP for the edge's certificate reload), caught from the
/// start of a role: a signal that arrives while the listeners are still being started must
/// stop the daemon gracefully, not kill it.
#[cfg(unix)]
pub struct Signals {
    term: std::io::Result<tokio::signal::unix::Signal>,
    int: std::io::Result<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}
#[cfg(not(unix))]
pub struct Signals;

/// What a caught signal asks for.
pub enum Signal {
    Stop,
    Reload,
}

pub fn catch_signals() -> Signals {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()),
            int: signal(SignalKind::interrupt()),
            hup: None,
        }
    }
    #[cfg(not(unix))]
    Signals
}

/// As [`catch_signals`], and SIGHUP becomes [`Signal::Reload`] instead of ending the process.
pub fn catch_signals_with_reload() -> Signals {
    #[allow(unused_mut)]
    let mut s = catch_signals();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        s.hup = signal(SignalKind::hangup()).ok();
    }
    s
}

/// The next signal (or an unrecoverable storage fault, as a stop).
pub async fn next_signal(signals: &mut Signals) -> Signal {
    #[cfg(unix)]
    {
        let hup = async {
            match signals.hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        match (&mut signals.term, &mut signals.int) {
            (Ok(term), Ok(int)) => {
                tokio::select! {
                    _ = term.recv() => { tracing::info!("SIGTERM received"); Signal::Stop }
                    _ = int.recv() => { tracing::info!("SIGINT received"); Signal::Stop }
                    _ = hup => { tracing::info!("SIGHUP received"); Signal::Reload }
                    _ = crate::fatal::wait() => Signal::Stop,
                }
            }
            _ => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => Signal::Stop,
                    _ = crate::fatal::wait() => Signal::Stop,
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = signals;
        let _ = tokio::signal::ctrl_c().await;
        Signal::Stop
    }
}

/// Checks the embedded store (the daemon must not be running). Without `recover` nothing is
/// changed, and a missing catalog is reported, not created. With `recover`, orphaned and
/// quarantined blobs are given back as objects (`EmbeddedStore::recover`), then the store is
/// checked again.
pub fn fsck(
    config: &Config,
    recover: bool,
) -> Result<(FsckReport, Option<crate::store::embedded::Recovery>), AppError> {
    if config.store.kind != StoreKind::Embedded {
        return Err(AppError::Store(StoreError::Internal(
            "fsck checks the embedded store only (store.kind = \"remote\")".into(),
        )));
    }
    let dir = std::path::absolute(&config.server.data_dir)
        .unwrap_or_else(|_| config.server.data_dir.clone());
    if !recover && !dir.join("catalog.redb").exists() {
        let report = FsckReport::without_catalog(&dir).map_err(|e| AppError::DataDir {
            path: dir.clone(),
            message: e.to_string(),
        })?;
        return Ok((report, None));
    }
    let store = EmbeddedStore::open(fs_operator(&dir)?, &dir, false)?;
    let recovery = if recover {
        Some(store.recover()?)
    } else {
        None
    };
    Ok((store.check(false)?, recovery))
}
