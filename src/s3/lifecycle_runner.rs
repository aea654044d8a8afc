//! The background task that applies bucket lifecycle rules: every `[s3] lifecycle_interval`
//! it walks each bucket with rules, at most `lifecycle_max_objects` objects (and as many
//! uploads) per bucket per pass, deletes the objects an enabled rule expires and aborts the
//! uploads one aborts. A pass that stops early remembers where, and the next one goes on
//! from there, so a huge bucket is covered over several passes at bounded cost.
//!
//! Deletions go through the store and the change listeners, as an S3 DELETE does: the
//! derivative cache and the edges forget the object's variants.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::ChangeListener;
use super::bucket_settings::BucketSettings;
use super::lifecycle::{Candidate, Rule};
use crate::store::{DynStore, ListQuery, StoreError};

pub struct LifecycleRunner {
    pub store: DynStore,
    pub settings: Arc<BucketSettings>,
    pub listeners: Vec<Arc<dyn ChangeListener>>,
    pub interval: Duration,
    pub day: Duration,
    pub max_objects: usize,
}

/// What one pass did, for the log and the tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    pub examined: usize,
    pub expired: usize,
    pub aborted: usize,
}

impl LifecycleRunner {
    pub async fn run_forever(self, mut stop: watch::Receiver<bool>) {
        // Where each bucket's walk stopped (the last key examined).
        let mut cursors: HashMap<String, String> = HashMap::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = stop.changed() => return,
            }
            let report = self.pass(&mut cursors).await;
            if report.expired + report.aborted > 0 {
                tracing::info!(
                    examined = report.examined,
                    expired = report.expired,
                    aborted = report.aborted,
                    "lifecycle pass"
                );
            }
        }
    }

    async fn pass(&self, cursors: &mut HashMap<String, String>) -> PassReport {
        let mut report = PassReport::default();
        let buckets = match self.settings.lifecycles() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the lifecycle rules");
                return report;
            }
        };
        cursors.retain(|b, _| buckets.iter().any(|(name, _)| name == b));
        let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        let day_ms = i64::try_from(self.day.as_millis()).unwrap_or(i64::MAX);
        for (bucket, rules) in buckets {
            let rules: Vec<Rule> = rules.into_iter().filter(|r| r.enabled).collect();
            if rules.is_empty() {
                continue;
            }
            let result = self
                .bucket_pass(&bucket, &rules, cursors, now_ms, day_ms, &mut report)
                .await;
            if let Err(e) = result {
                match e {
                    StoreError::NoSuchBucket(_) => {}
                    e => tracing::warn!(bucket, error = %e, "lifecycle pass stopped"),
                }
            }
        }
        report
    }

    async fn bucket_pass(
        &self,
        bucket: &str,
        rules: &[Rule],
        cursors: &mut HashMap<String, String>,
        now_ms: i64,
        day_ms: i64,
        report: &mut PassReport,
    ) -> Result<(), StoreError> {
        if rules.iter().any(|r| r.expire.is_some()) {
            let mut budget = self.max_objects;
            let mut after = cursors.remove(bucket);
            while budget > 0 {
                let page = self
                    .store
                    .list_objects(
                        bucket,
                        &ListQuery {
                            prefix: String::new(),
                            delimiter: None,
                            after: after.clone(),
                            max_keys: budget.min(1000),
                        },
                    )
                    .await?;
                for o in &page.objects {
                    budget = budget.saturating_sub(1);
                    report.examined += 1;
                    if self.expire_one(bucket, o, rules, now_ms, day_ms).await? {
                        report.expired += 1;
                    }
                }
                after = page.last.clone();
                if !page.is_truncated || after.is_none() {
                    after = None;
                    break;
                }
            }
            if let Some(a) = after {
                cursors.insert(bucket.to_owned(), a);
            }
        }
        if rules
            .iter()
            .any(|r| r.abort_incomplete_upload_days.is_some())
        {
            let uploads = self.store.list_uploads(bucket, "").await?;
            for u in uploads.iter().take(self.max_objects) {
                if rules
                    .iter()
                    .any(|r| r.aborts(&u.key, u.initiated_ms, now_ms, day_ms))
                {
                    match self.store.abort_upload(bucket, &u.key, &u.upload_id).await {
                        Ok(()) | Err(StoreError::NoSuchUpload(_)) => report.aborted += 1,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    /// Deletes the object if a rule expires it; whether it did.
    async fn expire_one(
        &self,
        bucket: &str,
        o: &crate::store::ObjectInfo,
        rules: &[Rule],
        now_ms: i64,
        day_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut c = Candidate {
            key: &o.key,
            size: o.size,
            modified_ms: o.last_modified_ms,
            tags: None,
        };
        let mut due = rules
            .iter()
            .any(|r| !r.needs_tags() && r.expires(&c, now_ms, day_ms));
        if !due && rules.iter().any(|r| r.needs_tags() && r.expire.is_some()) {
            // Listings carry no tags: read them only for objects a tag rule might expire.
            let head = match self.store.head_object(bucket, &o.key).await {
                Ok(h) => h,
                Err(StoreError::NoSuchKey(_)) => return Ok(false),
                Err(e) => return Err(e),
            };
            c.tags = Some(&head.attrs.tags);
            due = rules.iter().any(|r| r.expires(&c, now_ms, day_ms));
        }
        if !due {
            return Ok(false);
        }
        match self.store.delete_object(bucket, &o.key).await {
            Ok(()) | Err(StoreError::NoSuchKey(_)) => {}
            Err(e) => return Err(e),
        }
        for l in &self.listeners {
            l.object_changed(bucket, &o.key);
        }
        tracing::debug!(bucket, key = o.key, "expired by a lifecycle rule");
        Ok(true)
    }
}
