//! Listener mechanics a role needs before it serves: binding (with `SO_REUSEPORT` for the
//! per-core sockets) and the per-core runtimes a hot door is served from.
//!
//! What must stay true: each per-core thread accepts on its own socket bound to the same
//! address, and after `stop` keeps driving its open connections until `drained`, so
//! shutdown's grace covers them.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{Acceptor, DoorBody, DoorLimits, DoorService, Drain, accept_loop};

/// Binds `addr`; `shared` sets `SO_REUSEPORT` (unix) so that more sockets of this process
/// can listen on the same address and the kernel spreads new connections over them.
pub fn listen_on(addr: SocketAddr, shared: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does on unix: a restart may bind while old connections linger
    // in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    if shared {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

/// A listener thread, and what says its accept loop has ended.
pub type CoreRuntime = (
    std::thread::JoinHandle<()>,
    tokio::sync::oneshot::Receiver<()>,
);

/// Serves a door from one single-threaded runtime per core, each accepting on
/// the same socket (as nginx runs a worker process per core): a cache hit is then served
/// start to end on one thread, without the cross-thread wake-ups of a work-stealing
/// runtime, which were a quarter of a hit's cost under load (docs/cache.md, Benchmark).
/// Renders still go to the shared worker pool. After `stop`, each thread reports that it no
/// longer accepts and keeps driving its open connections until `drained`.
pub fn per_core<S, B>(
    listener: TcpListener,
    acceptor: Acceptor,
    svc: S,
    limits: DoorLimits,
    stop: watch::Receiver<bool>,
    drain: Drain,
    drained: watch::Receiver<bool>,
) -> std::io::Result<Vec<CoreRuntime>>
where
    S: DoorService<B>,
    B: DoorBody,
{
    let local = listener.local_addr()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // One socket per thread (the first is the one bound at start), so the kernel balances
    // connections between the threads; one shared socket let one thread take most of them.
    let mut sockets = vec![listener.into_std()?];
    for _ in 1..threads {
        sockets.push(listen_on(local, true).and_then(|l| l.into_std())?);
    }
    let mut out = Vec::with_capacity(threads);
    for (i, socket) in sockets.into_iter().enumerate() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (svc, stop, drain, mut drained) =
            (svc.clone(), stop.clone(), drain.clone(), drained.clone());
        let limits = limits.clone();
        let acceptor = acceptor.clone();
        let (accepting_tx, accepting_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("{}-{i}", limits.name))
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(socket) {
                        Ok(l) => accept_loop(l, acceptor, svc, limits, false, stop, drain).await,
                        Err(e) => {
                            tracing::error!(error = %e, "listener thread cannot accept")
                        }
                    }
                    let _ = accepting_tx.send(());
                    while !*drained.borrow() {
                        if drained.changed().await.is_err() {
                            break;
                        }
                    }
                });
            })?;
        out.push((thread, accepting_rx));
    }
    Ok(out)
}
