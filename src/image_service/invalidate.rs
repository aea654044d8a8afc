//! Dropping cached variants when their source changes.

use std::sync::Arc;

use crate::cache::DerivativeCache;
use crate::imaging::source::SourceVersions;

/// Drops the cached variants (and the remembered version) of every object the S3 API
/// changes, before the S3 response is sent.
pub struct Invalidator {
    cache: Option<DerivativeCache>,
    versions: Arc<SourceVersions>,
}

impl Invalidator {
    pub fn new(cache: Option<DerivativeCache>, versions: Arc<SourceVersions>) -> Self {
        Self { cache, versions }
    }
}

impl crate::s3::ChangeListener for Invalidator {
    fn object_changed(&self, bucket: &str, key: &str) {
        let source = format!("s3://{bucket}/{key}");
        self.versions.forget(&source);
        let Some(cache) = &self.cache else {
            return;
        };
        let drop_variants = || match cache.invalidate_source(&source) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(source, variants = n, "cache invalidated"),
            Err(e) => tracing::warn!(source, error = %e, "cannot invalidate cached variants"),
        };
        // A redb write: keep it off the async worker threads' hot path where the runtime
        // allows (the daemon's runtime is multi-threaded).
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(drop_variants)
            }
            _ => drop_variants(),
        }
    }
}

/// Tells the edges (through the tunnel's purge log) that a source changed, so their cached
/// responses for it go too, and waits up to `wait` for every connected edge to confirm,
/// before the S3 response is sent. Runs after [`Invalidator`], so an edge that refetches
/// at once gets the new variant.
pub struct EdgeInvalidator {
    purges: Arc<crate::tunnel::purge::Purges>,
    wait: std::time::Duration,
}

impl EdgeInvalidator {
    pub fn new(purges: Arc<crate::tunnel::purge::Purges>, wait: std::time::Duration) -> Self {
        Self { purges, wait }
    }

    fn publish(&self, item: crate::tunnel::purge::PurgeItem) {
        let seq = self.purges.publish(item);
        let wait = || {
            if !self.purges.wait_delivered(seq, self.wait) {
                tracing::warn!(
                    seq,
                    wait = ?self.wait,
                    "an edge did not confirm a purge in time; it gets it when it reconnects"
                );
            }
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            _ => wait(),
        }
    }
}

impl crate::s3::ChangeListener for EdgeInvalidator {
    fn object_changed(&self, bucket: &str, key: &str) {
        use crate::tunnel::purge::{PurgeItem, source_tag};
        self.publish(PurgeItem::Tag(source_tag(bucket, key)));
    }

    fn purged(&self, scope: crate::s3::PurgeScope<'_>) {
        use crate::tunnel::purge::{PurgeItem, tag_of_source};
        let item = match scope {
            crate::s3::PurgeScope::All => Some(PurgeItem::All),
            crate::s3::PurgeScope::Source(s) => tag_of_source(s).map(PurgeItem::Tag),
            crate::s3::PurgeScope::Prefix(p) => tag_of_source(p).map(PurgeItem::TagPrefix),
        };
        if let Some(item) = item {
            self.publish(item);
        }
    }
}

/// Applies purges another appliance node caused, relayed by an edge: this node's variants
/// of those sources go, and their remembered versions, so the next request reads the
/// source again.
pub fn relay_handler(
    cache: Option<DerivativeCache>,
    versions: Arc<SourceVersions>,
) -> crate::tunnel::connector::RelayHandler {
    Arc::new(move |items| {
        let (cache, versions) = (cache.clone(), versions.clone());
        Box::pin(async move {
            let _ = tokio::task::spawn_blocking(move || {
                use crate::tunnel::purge::{PurgeItem, source_of_tag};
                for item in items {
                    match item {
                        PurgeItem::Tag(t) => {
                            let Some(source) = source_of_tag(&t) else {
                                continue;
                            };
                            versions.forget(&source);
                            if let Some(c) = &cache
                                && let Err(e) = c.invalidate_source(&source)
                            {
                                tracing::warn!(source, error = %e, "cannot drop relayed variants");
                            }
                            tracing::debug!(source, "relayed purge applied");
                        }
                        PurgeItem::TagPrefix(p) => {
                            if let (Some(prefix), Some(c)) = (source_of_tag(&p), &cache)
                                && let Err(e) = c.purge_prefix(&prefix)
                            {
                                tracing::warn!(prefix, error = %e, "cannot drop relayed variants");
                            }
                        }
                        PurgeItem::All => {}
                    }
                }
            })
            .await;
        })
    })
}
