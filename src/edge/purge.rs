//! Purges from the appliances: each connection's purges are applied in order (the edge's
//! cache entries for the sending appliance's hostnames), relayed to the other appliance
//! nodes serving those hostnames (their derivative caches), then confirmed.
//!
//! What must stay true: a purge is confirmed only once the edge's entries are gone; the
//! other nodes' confirmations are awaited for at most [`RELAY_WAIT`], so one slow node
//! cannot hold every writer; one appliance's purges never touch another appliance's
//! hostnames.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::EdgeState;
use super::cache::index::Selector;
use super::router::Link;
use crate::tunnel::frame::Control;
use crate::tunnel::purge::PurgeItem;

/// How long a purge waits for the other nodes to confirm its relay.
pub const RELAY_WAIT: Duration = Duration::from_secs(1);

/// Relays sent and not yet confirmed.
#[derive(Debug, Default)]
pub struct Relays {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<()>>>,
}

impl Relays {
    fn start(&self) -> (u64, oneshot::Receiver<()>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(id, tx);
        }
        (id, rx)
    }

    /// The appliance confirmed relay `id`.
    pub fn acked(&self, id: u64) {
        if let Some(tx) = self.waiting.lock().ok().and_then(|mut w| w.remove(&id)) {
            let _ = tx.send(());
        }
    }

    fn forget(&self, id: u64) {
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(&id);
        }
    }
}

/// What `items` select among `hosts`' entries.
pub fn selectors(items: &[PurgeItem], hosts: &[String]) -> Vec<Selector> {
    let mut out = Vec::new();
    for item in items {
        match item {
            PurgeItem::Tag(tag) => out.push(Selector::Tag { tag: tag.clone() }),
            PurgeItem::TagPrefix(prefix) => out.push(Selector::TagPrefix {
                prefix: prefix.clone(),
            }),
            PurgeItem::All => out.extend(hosts.iter().map(|h| Selector::Host { host: h.clone() })),
        }
    }
    out
}

/// The worker for one appliance connection: its purges, in order.
pub async fn worker(
    state: Arc<EdgeState>,
    link: Arc<Link>,
    mut purges: mpsc::UnboundedReceiver<(u64, Vec<PurgeItem>)>,
) {
    while let Some((seq, items)) = purges.recv().await {
        apply(&state, &link, &items).await;
        link.mark_synced();
        let _ = link.control.send(Control::PurgeAck { seq });
    }
}

async fn apply(state: &Arc<EdgeState>, link: &Arc<Link>, items: &[PurgeItem]) {
    let hosts = link.hostnames();
    if let Some(cache) = &state.cache {
        let sels = selectors(items, &hosts);
        let (c, h) = (cache.clone(), hosts.clone());
        let removed = tokio::task::spawn_blocking(move || {
            sels.iter().map(|s| c.purge(s, Some(&h))).sum::<usize>()
        })
        .await
        .unwrap_or(0);
        tracing::debug!(
            node = link.node,
            items = items.len(),
            removed,
            "purge applied"
        );
    }
    // The other nodes' derivative caches: sources only (a flush is one node's own affair).
    let relayed: Vec<PurgeItem> = items
        .iter()
        .filter(|i| !matches!(i, PurgeItem::All))
        .cloned()
        .collect();
    if relayed.is_empty() {
        return;
    }
    let mut seen = HashSet::new();
    let mut waits = Vec::new();
    for other in state.router.links() {
        let same_node = other.pin == link.pin && other.node == link.node;
        let shares = other.hostnames().iter().any(|h| hosts.contains(h));
        if same_node || !shares || !seen.insert((other.pin.clone(), other.node.clone())) {
            continue;
        }
        let (id, rx) = state.relays.start();
        if other
            .control
            .send(Control::Relay {
                id,
                items: relayed.clone(),
            })
            .is_err()
        {
            state.relays.forget(id);
            continue;
        }
        waits.push((id, rx));
    }
    let ids: Vec<u64> = waits.iter().map(|(id, _)| *id).collect();
    let all = futures::future::join_all(waits.into_iter().map(|(_, rx)| rx));
    if tokio::time::timeout(RELAY_WAIT, all).await.is_err() {
        tracing::warn!(
            node = link.node,
            "another appliance node did not confirm a relayed purge in time"
        );
    }
    for id in ids {
        state.relays.forget(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_names_the_senders_hostnames_only() {
        let hosts = vec!["a.example".to_owned(), "b.example".to_owned()];
        let sels = selectors(&[PurgeItem::Tag("s3://b/k".into()), PurgeItem::All], &hosts);
        assert_eq!(
            sels,
            vec![
                Selector::Tag {
                    tag: "s3://b/k".into()
                },
                Selector::Host {
                    host: "a.example".into()
                },
                Selector::Host {
                    host: "b.example".into()
                },
            ]
        );
    }
}
