//! Ordered shutdown over a role's doors: each door stops accepting in the order the role
//! listed them, then the work that outlives its door (tunnel links, eager renders) ends,
//! then every open connection gets `shutdown_grace` to finish its requests.
//!
//! Connections are watched through [`Drain`] handles, which the accept loops and the tunnel
//! doors clone freely; the drain waits until every handle is gone. A handle kept past its
//! door (a bug) makes shutdown wait for the grace period, never hang or skip the wait.
//!
//! What must stay true: a door stops accepting only after every door before it has
//! stopped, so once the last door refuses connections no other door takes one either.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::watch;

type Waiting = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What the accept loops hold to put their connections under the drain.
#[derive(Clone, Debug)]
pub struct Drain {
    rx: watch::Receiver<()>,
}

impl Drain {
    /// Serves `conn` to its end; once shutdown starts it is asked to finish gracefully
    /// (HTTP/1.1: after the request in flight; HTTP/2: GOAWAY).
    pub async fn watch<C: GracefulConnection>(self, conn: C) -> C::Output {
        let mut rx = self.rx;
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            out = conn.as_mut() => return out,
            // A send or a dropped sender: shutdown either way.
            _ = rx.changed() => {}
        }
        conn.as_mut().graceful_shutdown();
        let out = conn.await;
        // Held until here: the drain waits for this connection.
        drop(rx);
        out
    }
}

struct Door {
    name: &'static str,
    stop: watch::Sender<bool>,
    closed: Vec<Waiting>,
}

/// A role's doors in shutdown order, and the drain over their connections.
pub struct Shutdown {
    drain: watch::Sender<()>,
    doors: Vec<Door>,
    finishing: Vec<Waiting>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self {
            drain: watch::channel(()).0,
            doors: Vec::new(),
            finishing: Vec::new(),
        }
    }

    /// A handle for a door's accept loop (or tunnel handler).
    pub fn drain(&self) -> Drain {
        Drain {
            rx: self.drain.subscribe(),
        }
    }

    /// Adds a door after the ones already listed; its loops stop when the receiver turns
    /// true. Naming a door twice gives the same door.
    pub fn door(&mut self, name: &'static str) -> watch::Receiver<bool> {
        if let Some(d) = self.doors.iter().find(|d| d.name == name) {
            return d.stop.subscribe();
        }
        let (stop, rx) = watch::channel(false);
        self.doors.push(Door {
            name,
            stop,
            closed: Vec::new(),
        });
        rx
    }

    /// `door` counts as closed once `done` ends (its accept loops have returned); the next
    /// door stops only then. Several waits on one door run in the order given.
    pub fn closed_when(
        &mut self,
        door: &'static str,
        done: impl Future<Output = ()> + Send + 'static,
    ) {
        let _ = self.door(door);
        if let Some(d) = self.doors.iter_mut().find(|d| d.name == door) {
            d.closed.push(Box::pin(done));
        }
    }

    /// Work that ends after every door has closed and before the connections drain.
    pub fn finished_when(&mut self, done: impl Future<Output = ()> + Send + 'static) {
        self.finishing.push(Box::pin(done));
    }

    /// Stops the doors in order, waits for the finishing work, then gives the open
    /// connections `grace`. Says whether they all closed in time.
    pub async fn run(self, grace: Duration) -> bool {
        let Self {
            drain,
            doors,
            finishing,
        } = self;
        for door in doors {
            let _ = door.stop.send(true);
            for wait in door.closed {
                wait.await;
            }
            tracing::debug!(door = door.name, "door closed");
        }
        for wait in finishing {
            wait.await;
        }
        let _ = drain.send(());
        tokio::time::timeout(grace, drain.closed()).await.is_ok()
    }
}

/// Waits on a task, whatever it returned: for [`Shutdown::closed_when`].
pub async fn joined<T>(task: tokio::task::JoinHandle<T>) {
    let _ = task.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn doors_stop_in_the_order_listed() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut shutdown = Shutdown::new();
        for name in ["tunnel", "images", "admin", "s3"] {
            let mut stop = shutdown.door(name);
            let order = order.clone();
            let task = tokio::spawn(async move {
                let _ = stop.changed().await;
                // A slow loop: the next door must still wait for it.
                tokio::time::sleep(Duration::from_millis(10)).await;
                order.lock().map(|mut o| o.push(name)).ok();
            });
            shutdown.closed_when(name, joined(task));
        }
        assert!(shutdown.run(Duration::from_secs(1)).await);
        let seen = order.lock().map(|o| o.clone()).unwrap_or_default();
        assert_eq!(seen, ["tunnel", "images", "admin", "s3"]);
    }

    #[tokio::test]
    async fn a_handle_kept_past_its_door_costs_the_grace_not_a_hang() {
        let shutdown = Shutdown::new();
        let leaked = shutdown.drain();
        let t0 = std::time::Instant::now();
        assert!(!shutdown.run(Duration::from_millis(100)).await);
        assert!(t0.elapsed() < Duration::from_secs(2));
        drop(leaked);
    }

    #[tokio::test]
    async fn handles_dropped_means_drained_at_once() {
        let shutdown = Shutdown::new();
        let handles: Vec<Drain> = (0..3).map(|_| shutdown.drain()).collect();
        drop(handles);
        assert!(shutdown.run(Duration::from_secs(5)).await);
    }
}
