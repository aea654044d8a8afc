//! `pixelport edge`: the public side. Its doors are public HTTPS (requests routed by `Host`
//! through the tunnel), plain HTTP (redirects to HTTPS), the tunnel listener appliances dial
//! into, and the edge admin door (`/metrics`, `/health`, `/ready`). `edge pair` and
//! `edge revoke` edit its registry ([`registry`]).
//!
//! What must stay true: nothing reaches an appliance except through an authenticated link
//! ([`appliances`]); a hostname with no appliance answers 503 at once; a revoked identity's
//! connections close within a second of `edge revoke`.

pub mod acme;
pub mod admin_api;
pub mod appliances;
pub mod cache;
pub mod certs;
pub mod compress;
pub mod config;
pub mod metrics;
pub mod pair;
pub mod proxy;
pub mod purge;
pub mod registry;
pub mod router;
pub mod shield;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::server::{Acceptor, DoorLimits, PeerAddr, RequestBody, accept_loop};
use crate::tunnel::identity::Identity;
use registry::{Registry, RegistryFile};

pub const IDENTITY_FILE: &str = "edge-identity.pem";

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("{key}: {message}")]
    Setup { key: &'static str, message: String },
    #[error(transparent)]
    Identity(#[from] crate::tunnel::identity::IdentityError),
    #[error(transparent)]
    Tls(#[from] crate::tunnel::tls::TlsError),
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        key: &'static str,
        addr: String,
        source: std::io::Error,
    },
}

pub struct EdgeState {
    pub router: router::Router,
    pub name: String,
    data_dir: std::path::PathBuf,
    registry: RwLock<Registry>,
    granted: RwLock<BTreeSet<String>>,
    /// Each granted hostname's door (the cache never applies to the admin door).
    doors: RwLock<std::collections::HashMap<String, crate::tunnel::frame::Door>>,
    pub metrics: metrics::EdgeMetrics,
    pub upstream_timeout: Duration,
    /// The HTTP cache, unless `[edge.cache] enabled = false`.
    pub cache: Option<Arc<cache::layer::EdgeCache>>,
    /// Purges relayed to other appliance nodes, awaiting their confirmation.
    pub relays: purge::Relays,
    /// The bearer token of the edge admin API.
    pub admin_token: String,
    /// Rules and rate limits (`[edge.protection]`).
    pub shield: shield::Shield,
}

impl EdgeState {
    pub fn registry_file(&self) -> RegistryFile {
        RegistryFile::new(&self.data_dir)
    }

    /// Reads the registry file again; closes the links of identities no longer in it.
    pub fn reload_registry(&self) {
        let fresh = match self.registry_file().read() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the edge registry; keeping the old copy");
                return;
            }
        };
        for link in self.router.links() {
            if fresh.identity(&link.pin).is_err() {
                tracing::warn!(node = link.node, pin = %registry::short(&link.pin), "identity revoked; closing its connection");
                self.router.close_identity(
                    &link.pin,
                    crate::tunnel::frame::close::REVOKED,
                    b"identity revoked",
                );
            }
        }
        if let Ok(mut g) = self.granted.write() {
            *g = fresh.granted_hosts();
        }
        if let Ok(mut d) = self.doors.write() {
            *d = fresh.granted_doors();
        }
        if let Ok(mut r) = self.registry.write() {
            *r = fresh;
        }
    }

    pub fn is_granted(&self, host: &str) -> bool {
        self.granted.read().is_ok_and(|g| g.contains(host))
    }

    pub fn door_of(&self, host: &str) -> Option<crate::tunnel::frame::Door> {
        self.doors.read().ok()?.get(host).copied()
    }

    pub fn granted_hosts(&self) -> BTreeSet<String> {
        self.granted.read().map(|g| g.clone()).unwrap_or_default()
    }
}

fn bind_tcp(key: &'static str, addr: &str) -> Result<tokio::net::TcpListener, EdgeError> {
    let err = |source| EdgeError::Bind {
        key,
        addr: addr.to_owned(),
        source,
    };
    let parsed: SocketAddr = addr.parse().map_err(|_| EdgeError::Setup {
        key,
        message: format!("`{addr}` is not an address"),
    })?;
    crate::server::runtimes::listen_on(parsed, false).map_err(err)
}

/// The edge's own identity (made on first start, 0600).
pub fn identity(data_dir: &Path) -> Result<(Identity, bool), EdgeError> {
    crate::app::prepare_data_dir(data_dir).map_err(|e| EdgeError::Setup {
        key: "edge.data_dir",
        message: e.to_string(),
    })?;
    Ok(Identity::load_or_create(
        &data_dir.join(IDENTITY_FILE),
        "pixelport-edge",
    )?)
}

pub async fn run(config: Config) -> Result<(), EdgeError> {
    let mut signals = crate::app::catch_signals_with_reload();
    crate::app::restrict_new_files();
    let ec = config.edge.clone();
    let (identity, made) = identity(&ec.data_dir)?;
    if made {
        tracing::info!(pin = %identity.pin(), "made the edge identity");
    }
    let certs = match (&ec.acme, ec.tls_cert.is_empty()) {
        (Some(_), _) => {
            let store = certs::CertStore::for_acme();
            acme::load_stored(&ec.data_dir, &store);
            store
        }
        (None, false) => {
            certs::CertStore::from_files(ec.tls_cert.clone().into(), ec.tls_key.clone().into())
                .map_err(|message| EdgeError::Setup {
                    key: "edge.tls_cert",
                    message,
                })?
        }
        (None, true) => {
            return Err(EdgeError::Setup {
                key: "edge.tls_cert",
                message: "the public HTTPS listener needs a certificate: set [edge] tls_cert and tls_key (PEM files), or an [edge.acme] table".into(),
            });
        }
    };
    let http01: acme::Http01 = Arc::default();
    let public_tls = certs::public_config(certs.clone()).map_err(|e| EdgeError::Setup {
        key: "edge.tls_cert",
        message: e.to_string(),
    })?;

    let tunnel_tls = crate::tunnel::tls::edge_config(&identity)?;
    let tunnel_tcp = tokio_rustls::TlsAcceptor::from(Arc::new(tunnel_tls.clone()));
    let mut server = crate::tunnel::tls::quic_server(tunnel_tls)?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(ec.keepalive.0))
        .max_idle_timeout(quinn::IdleTimeout::try_from(ec.idle_timeout.0).ok())
        // Appliances open only their control stream.
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(2))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .enable_segmentation_offload(ec.gso);
    server.transport_config(Arc::new(transport));
    let tunnel_addr: SocketAddr = ec.tunnel_listen.parse().map_err(|_| EdgeError::Setup {
        key: "edge.tunnel_listen",
        message: format!("`{}` is not an address", ec.tunnel_listen),
    })?;
    let buffer = usize::try_from(ec.udp_buffer.0).unwrap_or(usize::MAX);
    let endpoint =
        crate::tunnel::udp::endpoint(tunnel_addr, buffer, Some(server)).map_err(|source| {
            EdgeError::Bind {
                key: "edge.tunnel_listen",
                addr: ec.tunnel_listen.clone(),
                source,
            }
        })?;
    // The same port on TCP: the fallback for appliances whose UDP is blocked.
    let tunnel_tcp_listener = bind_tcp("edge.tunnel_listen", &ec.tunnel_listen)?;
    let https = bind_tcp("edge.https_listen", &ec.https_listen)?;
    let http = if ec.http_listen.is_empty() {
        None
    } else {
        Some(bind_tcp("edge.http_listen", &ec.http_listen)?)
    };
    let admin = bind_tcp("edge.admin_listen", &ec.admin_listen)?;
    let https_port = https.local_addr().map(|a| a.port()).unwrap_or(443);

    let (admin_token, made_token) = admin_api::token(&ec.admin_token, &ec.data_dir)?;
    if made_token {
        tracing::info!(
            file = %ec.data_dir.join(admin_api::TOKEN_FILE).display(),
            "made the edge admin API token"
        );
    }
    let cache = if ec.cache.enabled {
        let (cfg, dir) = (ec.cache.clone(), ec.data_dir.clone());
        let opened = tokio::task::spawn_blocking(move || cache::layer::EdgeCache::open(&cfg, &dir))
            .await
            .map_err(|e| EdgeError::Setup {
                key: "edge.cache",
                message: e.to_string(),
            })?
            .map_err(|e| EdgeError::Setup {
                key: "edge.cache.path",
                message: e.to_string(),
            })?;
        Some(Arc::new(opened))
    } else {
        None
    };
    let state = Arc::new(EdgeState {
        router: router::Router::default(),
        name: format!("edge-{}", registry::short(&identity.pin())),
        data_dir: ec.data_dir.clone(),
        registry: RwLock::new(Registry::default()),
        granted: RwLock::new(BTreeSet::new()),
        doors: RwLock::default(),
        metrics: metrics::EdgeMetrics::new().map_err(|e| EdgeError::Setup {
            key: "metrics",
            message: e.to_string(),
        })?,
        upstream_timeout: ec.upstream_timeout.0,
        cache,
        relays: purge::Relays::default(),
        admin_token,
        shield: shield::Shield::new(&ec.protection)
            .map_err(|(key, message)| EdgeError::Setup { key, message })?,
    });
    state.reload_registry();

    // Shutdown order: the public doors first, then the tunnel's (appliances keep their
    // connections until the requests in flight are done), the admin door last so /health
    // answers to the end.
    let mut shutdown = crate::server::Shutdown::new();
    let http_stop = shutdown.door("http");
    let https_stop = shutdown.door("https");
    let tunnel_stop = shutdown.door("tunnel");
    let admin_stop = shutdown.door("edge-admin");
    let nofile = crate::server::conn::raise_nofile();
    let caps = config.limits.caps(nofile.unwrap_or(1024));
    let public_svc = {
        let state = state.clone();
        hyper::service::service_fn(move |req: hyper::Request<RequestBody>| {
            let state = state.clone();
            async move {
                let client = req
                    .extensions()
                    .get::<PeerAddr>()
                    .map(|p| p.0)
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                Ok::<_, Infallible>(proxy::handle(state, req, client).await)
            }
        })
    };
    let redirect_svc = {
        let http01 = http01.clone();
        hyper::service::service_fn(move |req: hyper::Request<RequestBody>| {
            let resp = proxy::redirect(&req, https_port, &http01);
            async move { Ok::<_, Infallible>(resp) }
        })
    };
    let admin_svc = {
        let state = state.clone();
        hyper::service::service_fn(move |req: hyper::Request<RequestBody>| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(admin_api::handle(state, req).await) }
        })
    };

    tracing::info!(
        https = %ec.https_listen, http = %ec.http_listen, tunnel = %ec.tunnel_listen,
        admin = %ec.admin_listen, pin = %identity.pin(),
        "pixelport edge {} listening", env!("CARGO_PKG_VERSION")
    );
    let joined = crate::server::shutdown::joined;
    shutdown.closed_when(
        "https",
        joined(tokio::spawn(accept_loop(
            https,
            Acceptor::Tls(tokio_rustls::TlsAcceptor::from(Arc::new(public_tls))),
            public_svc,
            DoorLimits::new("https", &config.limits, caps.images, None),
            true,
            https_stop,
            shutdown.drain(),
        ))),
    );
    shutdown.closed_when(
        "edge-admin",
        joined(tokio::spawn(accept_loop(
            admin,
            Acceptor::Tcp,
            admin_svc,
            DoorLimits::new("edge-admin", &config.limits, caps.admin, None),
            false,
            admin_stop,
            shutdown.drain(),
        ))),
    );
    for task in [
        tokio::spawn(appliances::accept_forever(
            endpoint.clone(),
            state.clone(),
            tunnel_stop.clone(),
        )),
        tokio::spawn(appliances::accept_tcp_forever(
            tunnel_tcp_listener,
            tunnel_tcp,
            state.clone(),
            tunnel_stop.clone(),
        )),
        tokio::spawn(watch_registry(state.clone(), tunnel_stop.clone())),
        tokio::spawn(report_cache(state.clone(), tunnel_stop.clone())),
        tokio::spawn(forget_idle_clients(state.clone(), tunnel_stop.clone())),
    ] {
        shutdown.closed_when("tunnel", joined(task));
    }
    if let Some(acme_config) = ec.acme.clone() {
        shutdown.closed_when(
            "tunnel",
            joined(tokio::spawn(acme::run(
                acme_config,
                state.clone(),
                certs.clone(),
                http01.clone(),
                tunnel_stop.clone(),
            ))),
        );
    }
    if let Some(http) = http {
        shutdown.closed_when(
            "http",
            joined(tokio::spawn(accept_loop(
                http,
                Acceptor::Tcp,
                redirect_svc,
                DoorLimits::new("http", &config.limits, caps.s3, None),
                true,
                http_stop,
                shutdown.drain(),
            ))),
        );
    }

    crate::server::systemd::ready("edge serving");
    let watchdog = tokio::spawn(crate::server::systemd::watchdog());
    while let crate::app::Signal::Reload = crate::app::next_signal(&mut signals).await {
        crate::server::systemd::reloading();
        match certs.reload() {
            Ok(true) => tracing::info!("SIGHUP: certificate reloaded"),
            Ok(false) => tracing::info!("SIGHUP: certificates come from ACME; nothing to reload"),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: certificate not reloaded; keeping the old one")
            }
        }
        crate::server::systemd::reloaded("edge serving");
    }
    crate::server::systemd::stopping();
    watchdog.abort();
    tracing::info!(grace = ?config.server.shutdown_grace.0, "edge shutting down");
    if !shutdown.run(config.server.shutdown_grace.0).await {
        tracing::warn!("shutdown grace period over; dropping the remaining connections");
    }
    if let Some(cache) = state.cache.clone() {
        let _ = tokio::task::spawn_blocking(move || cache.flush(Duration::from_secs(5))).await;
    }
    endpoint.close(
        quinn::VarInt::from_u32(crate::tunnel::frame::close::DONE),
        b"edge shut down",
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    Ok(())
}

/// Notices `edge pair` / `edge revoke` editing the registry (twice a second).
async fn watch_registry(state: Arc<EdgeState>, mut stop: watch::Receiver<bool>) {
    let file = state.registry_file();
    let mut seen = file.modified();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => break,
        }
        let now = file.modified();
        if now != seen {
            seen = now;
            let s = state.clone();
            let _ = tokio::task::spawn_blocking(move || s.reload_registry()).await;
        }
    }
}

/// Tells each connected appliance how the cache does, every few seconds (its admin UI's
/// cache page shows it).
async fn report_cache(state: Arc<EdgeState>, mut stop: watch::Receiver<bool>) {
    let Some(cache) = state.cache.clone() else {
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => break,
        }
        let s = cache.stats();
        let report = crate::tunnel::frame::EdgeCacheReport {
            edge: state.name.clone(),
            entries: s.entries as u64,
            memory_bytes: s.memory_bytes,
            disk_bytes: s.disk_bytes,
            hits: s.hits,
            misses: s.misses,
        };
        for link in state.router.links() {
            let _ = link
                .control
                .send(crate::tunnel::frame::Control::EdgeStats(report.clone()));
        }
    }
}

/// Drops idle clients' rate-limit buckets every 10 s (memory stays bounded).
async fn forget_idle_clients(state: Arc<EdgeState>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = stop.changed() => break,
        }
        state.shield.forget_idle();
    }
}
