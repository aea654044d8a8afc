//! The background task that applies bucket lifecycle rules: every `[s3] lifecycle_interval`
//! it walks each bucket with rules, at most `lifecycle_max_objects` objects (and as many
//! uploads) per bucket per pass, deletes the objects an enabled rule expires and aborts the
//! uploads one aborts. A pass that stops early remembers where, and the next one goes on
//! from there, so a huge bucket is covered over several passes at bounded cost.
//!
//! In a versioned bucket an expiration makes a delete marker (as an S3 DELETE does), and a
//! second walk over the versions removes noncurrent versions a rule expires
//! (NoncurrentVersionExpiration, NewerNoncurrentVersions) and delete markers left alone
//! (ExpiredObjectDeleteMarker), with the same bound and its own resume point.
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
use crate::store::{DynStore, ListQuery, StoreError, VersionEntry, VersionQuery};

pub struct LifecycleRunner {
    pub store: DynStore,
    pub settings: Arc<BucketSettings>,
    pub listeners: Vec<Arc<dyn ChangeListener>>,
    pub interval: Duration,
    pub day: Duration,
    pub max_objects: usize,
}

/// Where a bucket's walk over its versions stopped: the last entry examined, and what the
/// next entry needs from it to know when it stopped being current.
#[derive(Debug, Clone, Default)]
struct VersionCursor {
    key: String,
    version: String,
    /// The Last-Modified of the last entry examined (its key's next entry stopped being
    /// current then) and how many noncurrent versions of the key came before.
    newer_modified_ms: i64,
    noncurrent_seen: u32,
}

/// Resume points of the two walks, per bucket.
#[derive(Default)]
struct Cursors {
    objects: HashMap<String, String>,
    versions: HashMap<String, VersionCursor>,
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
        // Where each bucket's walks stopped.
        let mut cursors = Cursors::default();
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

    async fn pass(&self, cursors: &mut Cursors) -> PassReport {
        let mut report = PassReport::default();
        let buckets = match self.settings.lifecycles() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the lifecycle rules");
                return report;
            }
        };
        let known = |b: &String| buckets.iter().any(|(name, _)| name == b);
        cursors.objects.retain(|b, _| known(b));
        cursors.versions.retain(|b, _| known(b));
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
        cursors: &mut Cursors,
        now_ms: i64,
        day_ms: i64,
        report: &mut PassReport,
    ) -> Result<(), StoreError> {
        if rules.iter().any(|r| r.expire.is_some()) {
            let mut budget = self.max_objects;
            let mut after = cursors.objects.remove(bucket);
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
                cursors.objects.insert(bucket.to_owned(), a);
            }
        }
        if rules
            .iter()
            .any(|r| r.noncurrent_days.is_some() || r.expired_object_delete_marker)
            && self.store.versioning(bucket).await?.is_some()
        {
            let cursor = cursors.versions.remove(bucket);
            if let Some(c) = self
                .versions_pass(bucket, rules, cursor, now_ms, day_ms, report)
                .await?
            {
                cursors.versions.insert(bucket.to_owned(), c);
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

    /// Walks at most `max_objects` entries of the bucket's versions from `cursor`, removing
    /// the noncurrent versions and lone delete markers a rule makes due; answers where it
    /// stopped, or `None` when it reached the end.
    async fn versions_pass(
        &self,
        bucket: &str,
        rules: &[Rule],
        mut cursor: Option<VersionCursor>,
        now_ms: i64,
        day_ms: i64,
        report: &mut PassReport,
    ) -> Result<Option<VersionCursor>, StoreError> {
        let mut budget = self.max_objects;
        while budget > 0 {
            let page = self
                .store
                .list_versions(
                    bucket,
                    &VersionQuery {
                        prefix: String::new(),
                        delimiter: None,
                        key_marker: cursor.as_ref().map(|c| c.key.clone()),
                        version_marker: cursor.as_ref().map(|c| c.version.clone()),
                        max_keys: budget.min(1000),
                    },
                )
                .await?;
            let mut entries = page.entries.into_iter().peekable();
            while let Some(e) = entries.next() {
                budget = budget.saturating_sub(1);
                report.examined += 1;
                let same_key = cursor.as_ref().is_some_and(|c| c.key == e.info.key);
                let (newer_ms, seen) = match (&cursor, same_key) {
                    (Some(c), true) => (Some(c.newer_modified_ms), c.noncurrent_seen),
                    _ => (None, 0),
                };
                // A lone marker: the latest entry, and the next one (if any) is another key.
                let lone = e.is_latest
                    && e.delete_marker
                    && match entries.peek() {
                        Some(next) => next.info.key != e.info.key,
                        None if page.is_truncated => self.alone(bucket, &e.info.key).await?,
                        None => true,
                    };
                if self
                    .expire_version(bucket, &e, rules, newer_ms, seen, lone, now_ms, day_ms)
                    .await?
                {
                    report.expired += 1;
                }
                cursor = Some(VersionCursor {
                    key: e.info.key.clone(),
                    version: e.info.version_name().to_owned(),
                    newer_modified_ms: e.info.last_modified_ms,
                    noncurrent_seen: if e.is_latest { 0 } else { seen + 1 },
                });
            }
            if !page.is_truncated {
                return Ok(None);
            }
        }
        Ok(cursor)
    }

    /// Whether `key` has one entry (version or marker) in the bucket's versions.
    async fn alone(&self, bucket: &str, key: &str) -> Result<bool, StoreError> {
        let page = self
            .store
            .list_versions(
                bucket,
                &VersionQuery {
                    prefix: key.to_owned(),
                    max_keys: 2,
                    ..VersionQuery::default()
                },
            )
            .await?;
        Ok(page.entries.iter().filter(|e| e.info.key == key).count() == 1)
    }

    /// Removes one version or marker if a rule makes it due; whether it did. `newer_ms` is
    /// when the next newer entry of its key was written (`None` when not known, which keeps
    /// a noncurrent version until a later pass sees its key from the start).
    #[allow(clippy::too_many_arguments)]
    async fn expire_version(
        &self,
        bucket: &str,
        e: &VersionEntry,
        rules: &[Rule],
        newer_ms: Option<i64>,
        newer_noncurrent: u32,
        lone_marker: bool,
        now_ms: i64,
        day_ms: i64,
    ) -> Result<bool, StoreError> {
        let key = e.info.key.as_str();
        let due = if e.is_latest {
            lone_marker && rules.iter().any(|r| r.removes_lone_marker(key))
        } else if let Some(since) = newer_ms {
            let tags = (!e.delete_marker && rules.iter().any(|r| r.needs_tags()))
                .then_some(&e.info.attrs.tags);
            let c = Candidate {
                key,
                size: e.info.size,
                modified_ms: e.info.last_modified_ms,
                tags,
            };
            rules
                .iter()
                .any(|r| r.expires_noncurrent(&c, since, newer_noncurrent, now_ms, day_ms))
        } else {
            false
        };
        if !due {
            return Ok(false);
        }
        self.store
            .delete_version(bucket, key, e.info.version_name())
            .await?;
        for l in &self.listeners {
            l.object_changed(bucket, key);
        }
        tracing::debug!(
            bucket,
            key,
            version = e.info.version_name(),
            "version expired by a lifecycle rule"
        );
        Ok(true)
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
            Ok(_) | Err(StoreError::NoSuchKey(_)) => {}
            Err(e) => return Err(e),
        }
        for l in &self.listeners {
            l.object_changed(bucket, &o.key);
        }
        tracing::debug!(bucket, key = o.key, "expired by a lifecycle rule");
        Ok(true)
    }
}
