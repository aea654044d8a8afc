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
