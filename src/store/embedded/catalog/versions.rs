//! The catalog's versioned side: a bucket's versioning state, noncurrent versions and
//! delete markers in the `versions` table, lookups and deletes by version id, and
//! ListObjectVersions.
//!
//! A key's versions sit under `bucket NUL key NUL`, each suffixed with
//! `version_id::sort_suffix`, so one range read gives them newest first. Keys never contain
//! NUL (the S3 layer refuses them), so that prefix holds one key's versions and nothing else.

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::{
    BUCKETS, Catalog, INLINE, Location, OBJECTS, ObjectRecord, Released, VERSION_INLINE, VERSIONS,
    adjust_totals, decode, encode, inline_bytes, object_key, prefix_end,
};
use crate::store::version_id::{self, NULL};
use crate::store::{
    BucketInfo, Deleted, StoreError, StoreResult, VersionEntry, VersionPage, VersionQuery,
    Versioning,
};

/// Where one key's versions start in `versions`.
fn version_prefix(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = object_key(bucket, key);
    k.push(0);
    k
}

fn version_key(bucket: &str, key: &str, record: &ObjectRecord) -> Vec<u8> {
    let mut k = version_prefix(bucket, key);
    k.extend_from_slice(
        version_id::sort_suffix(record.order_stamp(), record.info.version_id.as_deref()).as_bytes(),
    );
    k
}

/// Calls `f` on each of `key`'s entries in `versions`, newest first, until it answers `Some`.
fn scan_key<T, R>(
    versions: &T,
    bucket: &str,
    key: &str,
    mut f: impl FnMut(&[u8], ObjectRecord) -> Option<R>,
) -> StoreResult<Option<R>>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    let start = version_prefix(bucket, key);
    let end = prefix_end(&start);
    let iter = match &end {
        Some(end) => versions.range(start.as_slice()..end.as_slice())?,
        None => versions.range(start.as_slice()..)?,
    };
    for e in iter {
        let (k, v) = e?;
        if let Some(found) = f(k.value(), decode(v.value())?) {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// The entry for version `id` of `key` in `versions`, with its table key.
fn find_in<T>(
    versions: &T,
    bucket: &str,
    key: &str,
    id: &str,
) -> StoreResult<Option<(Vec<u8>, ObjectRecord)>>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    if let Some(stamp) = version_id::stamp_of(id) {
        let mut k = version_prefix(bucket, key);
        k.extend_from_slice(version_id::sort_suffix(stamp, Some(id)).as_bytes());
        return match versions.get(k.as_slice())? {
            Some(v) => Ok(Some((k, decode(v.value())?))),
            None => Ok(None),
        };
    }
    if id != NULL {
        return Ok(None);
    }
    scan_key(versions, bucket, key, |k, r| {
        r.info.version_id.is_none().then(|| (k.to_vec(), r))
    })
}

type InlineTable = redb::TableDefinition<'static, &'static [u8], &'static [u8]>;

/// Moves an inline version's bytes from one table and key to another (demotion, promotion).
fn move_inline(
    tx: &WriteTransaction,
    from: (InlineTable, &[u8]),
    to: (InlineTable, &[u8]),
    key: &str,
) -> StoreResult<()> {
    let data = tx
        .open_table(from.0)?
        .remove(from.1)?
        .map(|v| v.value().to_vec())
        .ok_or_else(|| StoreError::Internal(format!("inline bytes of `{key}` are missing")))?;
    tx.open_table(to.0)?.insert(to.1, data.as_slice())?;
    Ok(())
}

fn no_such_version(key: &str, id: &str) -> StoreError {
    StoreError::NoSuchVersion {
        key: key.to_owned(),
        version: id.to_owned(),
    }
}

impl Catalog {
    /// The bucket's versioning state (`NoSuchBucket` when there is no such bucket).
    pub(super) fn bucket_versioning(
        tx: &WriteTransaction,
        bucket: &str,
    ) -> StoreResult<Option<Versioning>> {
        match tx.open_table(BUCKETS)?.get(bucket)? {
            Some(v) => Ok(decode::<BucketInfo>(v.value())?.versioning),
            None => Err(StoreError::NoSuchBucket(bucket.into())),
        }
    }

    /// PutBucketVersioning: Enabled or Suspended. Versions already made stay either way.
    pub fn set_versioning(
        tx: &WriteTransaction,
        bucket: &str,
        state: Versioning,
    ) -> StoreResult<()> {
        let mut t = tx.open_table(BUCKETS)?;
        let mut info: BucketInfo = match t.get(bucket)? {
            Some(v) => decode(v.value())?,
            None => return Err(StoreError::NoSuchBucket(bucket.into())),
        };
        info.versioning = Some(state);
        t.insert(bucket, encode(&info)?.as_slice())?;
        Ok(())
    }

    /// Moves `record` (just taken out of `objects`, or a new delete marker) into `versions`,
    /// its inline bytes with it.
    pub(super) fn demote(
        tx: &WriteTransaction,
        bucket: &str,
        record: ObjectRecord,
    ) -> StoreResult<()> {
        let key = record.info.key.clone();
        let vk = version_key(bucket, &key, &record);
        if record.location == Location::Inline {
            let k = object_key(bucket, &key);
            move_inline(tx, (INLINE, &k), (VERSION_INLINE, &vk), &key)?;
        }
        tx.open_table(VERSIONS)?
            .insert(vk.as_slice(), encode(&record)?.as_slice())?;
        Ok(())
    }

    /// Removes one entry of `versions`; returns its blobs.
    fn remove_version_entry(
        tx: &WriteTransaction,
        vk: &[u8],
        record: ObjectRecord,
    ) -> StoreResult<Released> {
        tx.open_table(VERSIONS)?.remove(vk)?;
        tx.open_table(VERSION_INLINE)?.remove(vk)?;
        if !record.delete_marker {
            adjust_totals(tx, None, Some(record.info.size))?;
        }
        Ok(record.location.blobs())
    }

    /// Removes the key's noncurrent `null` version or `null` delete marker, if it has one
    /// (a write while versioning is suspended replaces it).
    pub(super) fn remove_null_version(
        tx: &WriteTransaction,
        bucket: &str,
        key: &str,
    ) -> StoreResult<Released> {
        let found = find_in(&tx.open_table(VERSIONS)?, bucket, key, NULL)?;
        match found {
            Some((vk, record)) => Self::remove_version_entry(tx, &vk, record),
            None => Ok(Vec::new()),
        }
    }

    /// When `key` has no current version, makes its newest noncurrent one current, unless
    /// that is a delete marker (which then stays the current version).
    fn promote(tx: &WriteTransaction, bucket: &str, key: &str) -> StoreResult<()> {
        let k = object_key(bucket, key);
        if tx.open_table(OBJECTS)?.get(k.as_slice())?.is_some() {
            return Ok(());
        }
        let newest = scan_key(&tx.open_table(VERSIONS)?, bucket, key, |vk, r| {
            Some((vk.to_vec(), r))
        })?;
        let Some((vk, record)) = newest else {
            return Ok(());
        };
        if record.delete_marker {
            return Ok(());
        }
        tx.open_table(VERSIONS)?.remove(vk.as_slice())?;
        if record.location == Location::Inline {
            move_inline(tx, (VERSION_INLINE, &vk), (INLINE, &k), key)?;
        }
        tx.open_table(OBJECTS)?
            .insert(k.as_slice(), encode(&record)?.as_slice())?;
        Ok(())
    }

    /// The entry for version `id` of `key` as this transaction sees it: the current version or
    /// a noncurrent one (`NoSuchVersion` when neither).
    pub(super) fn find_version(
        tx: &WriteTransaction,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> StoreResult<(Vec<u8>, ObjectRecord)> {
        Self::bucket_versioning(tx, bucket)?;
        find_in(&tx.open_table(VERSIONS)?, bucket, key, id)?.ok_or_else(|| no_such_version(key, id))
    }

    /// Version `id` of `key` with its inline bytes: `NoSuchVersion` when there is none,
    /// `DeleteMarker` when it is a delete marker.
    pub fn get_version(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> StoreResult<(ObjectRecord, Option<Vec<u8>>)> {
        let tx = self.db.begin_read()?;
        if tx.open_table(BUCKETS)?.get(bucket)?.is_none() {
            return Err(StoreError::NoSuchBucket(bucket.into()));
        }
        let k = object_key(bucket, key);
        if let Some(v) = tx.open_table(OBJECTS)?.get(k.as_slice())? {
            let record: ObjectRecord = decode(v.value())?;
            if record.info.version_name() == id {
                let inline = inline_bytes(&tx, INLINE, &k, &record)?;
                return Ok((record, inline));
            }
        }
        let versions = tx.open_table(VERSIONS)?;
        let (vk, record) =
            find_in(&versions, bucket, key, id)?.ok_or_else(|| no_such_version(key, id))?;
        if record.delete_marker {
            return Err(StoreError::DeleteMarker(id.to_owned()));
        }
        let inline = inline_bytes(&tx, VERSION_INLINE, &vk, &record)?;
        Ok((record, inline))
    }

    /// Removes version `id` of `key` for good (a delete by version id). When it was the
    /// current version, the newest remaining one becomes current. A well-formed id that
    /// names nothing removes nothing and succeeds, as in S3.
    pub fn delete_version(
        tx: &WriteTransaction,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> StoreResult<(Released, Deleted)> {
        Self::bucket_versioning(tx, bucket)?;
        let k = object_key(bucket, key);
        let current: Option<ObjectRecord> = match tx.open_table(OBJECTS)?.get(k.as_slice())? {
            Some(v) => Some(decode(v.value())?),
            None => None,
        };
        let mut deleted = Deleted {
            version_id: Some(id.to_owned()),
            delete_marker: false,
        };
        if let Some(current) = current.filter(|c| c.info.version_name() == id) {
            tx.open_table(OBJECTS)?.remove(k.as_slice())?;
            tx.open_table(INLINE)?.remove(k.as_slice())?;
            adjust_totals(tx, None, Some(current.info.size))?;
            Self::promote(tx, bucket, key)?;
            return Ok((current.location.blobs(), deleted));
        }
        let found = find_in(&tx.open_table(VERSIONS)?, bucket, key, id)?;
        let Some((vk, record)) = found else {
            return Ok((Vec::new(), deleted));
        };
        deleted.delete_marker = record.delete_marker;
        let released = Self::remove_version_entry(tx, &vk, record)?;
        Self::promote(tx, bucket, key)?;
        Ok((released, deleted))
    }

    /// ListObjectVersions: each key's current version then its noncurrent versions and
    /// delete markers, newest first, keys in order, with common prefixes folded as in
    /// ListObjects. Reads at most one page's entries.
    pub fn list_versions(&self, bucket: &str, q: &VersionQuery) -> StoreResult<VersionPage> {
        let tx = self.db.begin_read()?;
        if tx.open_table(BUCKETS)?.get(bucket)?.is_none() {
            return Err(StoreError::NoSuchBucket(bucket.into()));
        }
        let objects = tx.open_table(OBJECTS)?;
        let versions = tx.open_table(VERSIONS)?;
        let base = object_key(bucket, "");
        let scoped = object_key(bucket, &q.prefix);
        let end = prefix_end(&scoped);
        let delimiter = q.delimiter.as_deref().filter(|d| !d.is_empty());
        let mut cursor = scoped.clone();
        if let Some(m) = &q.key_marker {
            let mk = object_key(bucket, m);
            if mk > cursor {
                cursor = mk;
            }
        }
        let mut page = VersionPage::default();
        let mut count = 0usize;
        'keys: loop {
            if end.as_ref().is_some_and(|e| cursor >= *e) {
                break;
            }
            // The next key at or after the cursor in either table.
            let first = |table: &redb::ReadOnlyTable<&'static [u8], &'static [u8]>| {
                let mut iter = match &end {
                    Some(e) => table.range(cursor.as_slice()..e.as_slice())?,
                    None => table.range(cursor.as_slice()..)?,
                };
                iter.next()
                    .transpose()
                    .map(|e| e.map(|(k, _)| k.value().to_vec()))
                    .map_err(StoreError::from)
            };
            let from_objects = first(&objects)?;
            let from_versions = first(&versions)?.map(|vk| {
                // bucket NUL key NUL suffix → bucket NUL key
                let cut = vk.iter().rposition(|b| *b == 0).unwrap_or(vk.len());
                vk[..cut].to_vec()
            });
            let next = match (from_objects, from_versions) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => break,
            };
            let key =
                String::from_utf8_lossy(next.get(base.len()..).unwrap_or_default()).into_owned();
            let folded = delimiter.and_then(|d| {
                let rest = key.get(q.prefix.len()..)?;
                rest.find(d).map(|i| q.prefix.len() + i + d.len())
            });
            if let Some(cut) = folded {
                let common = key[..cut].to_owned();
                let seen = q
                    .key_marker
                    .as_deref()
                    .is_some_and(|m| common.as_str() <= m);
                if !seen {
                    if count >= q.max_keys {
                        page.is_truncated = true;
                        break;
                    }
                    count += 1;
                    page.next_key_marker = Some(common.clone());
                    page.next_version_marker = None;
                    page.common_prefixes.push(common.clone());
                }
                match prefix_end(&object_key(bucket, &common)) {
                    Some(n) => {
                        cursor = n;
                        continue;
                    }
                    None => break,
                }
            }
            // At the marker key: skip it whole, or up to and including the marker version.
            let mut skipping = q.key_marker.as_deref() == Some(key.as_str());
            let mut is_latest = true;
            let current = objects
                .get(next.as_slice())?
                .map(|v| decode::<ObjectRecord>(v.value()));
            let vprefix = version_prefix(bucket, &key);
            let vend = prefix_end(&vprefix);
            let older = match &vend {
                Some(e) => versions.range(vprefix.as_slice()..e.as_slice())?,
                None => versions.range(vprefix.as_slice()..)?,
            }
            .map(|e| {
                e.map_err(StoreError::from)
                    .and_then(|(_, v)| decode::<ObjectRecord>(v.value()))
            });
            // Entries sort by their suffix, so a marker version deleted since the last page
            // still says where to go on from (a `null` marker is found by name).
            let marker_suffix = q
                .version_marker
                .as_deref()
                .and_then(version_id::stamp_of)
                .zip(q.version_marker.as_deref())
                .map(|(stamp, id)| version_id::sort_suffix(stamp, Some(id)));
            for record in current.into_iter().chain(older) {
                let record = record?;
                let latest = std::mem::replace(&mut is_latest, false);
                if skipping {
                    let Some(marker) = q.version_marker.as_deref() else {
                        break;
                    };
                    let own = version_id::sort_suffix(
                        record.order_stamp(),
                        record.info.version_id.as_deref(),
                    );
                    match &marker_suffix {
                        // Past the marker (it may have been deleted): list from here.
                        Some(m) if own > *m => skipping = false,
                        Some(m) => {
                            skipping = own != *m;
                            continue;
                        }
                        None => {
                            skipping = marker != record.info.version_name();
                            continue;
                        }
                    }
                }
                if count >= q.max_keys {
                    page.is_truncated = true;
                    break 'keys;
                }
                count += 1;
                page.next_key_marker = Some(key.clone());
                page.next_version_marker = Some(record.info.version_name().to_owned());
                page.entries.push(VersionEntry {
                    info: record.info,
                    is_latest: latest,
                    delete_marker: record.delete_marker,
                });
            }
            match vend {
                Some(n) => cursor = n,
                None => break,
            }
        }
        if !page.is_truncated {
            page.next_key_marker = None;
            page.next_version_marker = None;
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::store::ObjectInfo;

    /// One entry of the model: (version name, delete marker, size).
    type Entry = (String, bool, u64);

    fn record(key: &str, size: u64) -> ObjectRecord {
        let mut info = ObjectInfo::key_only(key);
        info.size = size;
        info.etag = format!("e{size}");
        ObjectRecord::new(info, Location::Inline)
    }

    fn listed(cat: &Catalog, max_keys: usize) -> Vec<(String, Entry, bool)> {
        let mut out = Vec::new();
        let mut q = VersionQuery {
            max_keys,
            ..VersionQuery::default()
        };
        loop {
            let page = cat.list_versions("b", &q).unwrap();
            assert!(page.entries.len() <= max_keys);
            for e in &page.entries {
                let entry = (
                    e.info.version_name().to_owned(),
                    e.delete_marker,
                    e.info.size,
                );
                out.push((e.info.key.clone(), entry, e.is_latest));
            }
            if !page.is_truncated {
                return out;
            }
            q.key_marker = page.next_key_marker;
            q.version_marker = page.next_version_marker;
        }
    }

    /// Random puts, deletes, deletes by version id and state changes against a model of
    /// S3's versioning: after each, the listing (whole and in pages of 2), the current
    /// version of each key and the running totals agree with the model.
    #[test]
    fn versioning_follows_a_model_of_s3() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(&dir.path().join("catalog.redb")).unwrap();
        cat.write(|tx| Catalog::create_bucket(tx, &BucketInfo::new("b", 0)))
            .unwrap();
        let mut model: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        let mut state: Option<Versioning> = None;
        let mut seed = 0x2545F4914F6CDD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let keys = ["a", "a/b", "b", "ä", "z/"];
        for step in 0..600 {
            let key = keys[(next() % keys.len() as u64) as usize];
            match next() % 10 {
                0..=3 => {
                    let size = next() % 50 + 1;
                    let rec = record(key, size);
                    let (info, _) = cat
                        .write(|tx| {
                            Catalog::put_object(tx, "b", &rec, Some(&vec![7u8; size as usize]))
                        })
                        .unwrap();
                    let id = info.version_name().to_owned();
                    let versions = model.entry(key.into()).or_default();
                    match state {
                        None => versions.clear(),
                        Some(Versioning::Suspended) => versions.retain(|e| e.0 != NULL),
                        Some(Versioning::Enabled) => assert_ne!(id, NULL),
                    }
                    versions.insert(0, (id, false, size));
                }
                4 | 5 => {
                    let (_, deleted) = cat
                        .write(|tx| Catalog::delete_object(tx, "b", key))
                        .unwrap();
                    match state {
                        None => {
                            model.remove(key);
                            assert_eq!(deleted, Deleted::default());
                        }
                        Some(s) => {
                            let versions = model.entry(key.into()).or_default();
                            if s == Versioning::Suspended {
                                versions.retain(|e| e.0 != NULL);
                            }
                            assert!(deleted.delete_marker);
                            let id = deleted.version_id.unwrap();
                            versions.insert(0, (id, true, 0));
                        }
                    }
                }
                6 | 7 => {
                    let Some(versions) = model.get_mut(key).filter(|v| !v.is_empty()) else {
                        continue;
                    };
                    let i = (next() % versions.len() as u64) as usize;
                    let (id, marker, _) = versions.remove(i);
                    let (_, deleted) = cat
                        .write(|tx| Catalog::delete_version(tx, "b", key, &id))
                        .unwrap();
                    assert_eq!(deleted.delete_marker, marker);
                    if versions.is_empty() {
                        model.remove(key);
                    }
                }
                8 => {
                    let s = if next() % 2 == 0 {
                        Versioning::Enabled
                    } else {
                        Versioning::Suspended
                    };
                    cat.write(|tx| Catalog::set_versioning(tx, "b", s)).unwrap();
                    state = Some(s);
                }
                _ => {
                    // A version that is not there: found by neither lookup nor delete.
                    let missing = version_id::new_id(1, 1);
                    assert!(matches!(
                        cat.get_version("b", key, &missing),
                        Err(StoreError::NoSuchVersion { .. })
                    ));
                }
            }
            let want: Vec<(String, Entry, bool)> = model
                .iter()
                .flat_map(|(k, v)| {
                    v.iter()
                        .enumerate()
                        .map(move |(i, e)| (k.clone(), e.clone(), i == 0))
                })
                .collect();
            assert_eq!(listed(&cat, 1000), want, "step {step}");
            assert_eq!(listed(&cat, 2), want, "step {step}, pages of 2");
            for k in keys {
                let current = model.get(k).and_then(|v| v.first()).filter(|e| !e.1);
                match (cat.get_object("b", k), current) {
                    (Ok((r, inline)), Some(e)) => {
                        assert_eq!((r.info.version_name(), r.info.size), (e.0.as_str(), e.2));
                        assert_eq!(inline.map(|d| d.len() as u64), Some(e.2));
                    }
                    (Err(StoreError::NoSuchKey(_)), None) => {}
                    (got, want) => panic!("step {step}: {k}: {got:?} vs {want:?}"),
                }
                for e in model.get(k).into_iter().flatten() {
                    match cat.get_version("b", k, &e.0) {
                        Ok((r, inline)) => {
                            assert!(!e.1);
                            assert_eq!(inline.map(|d| d.len() as u64), Some(e.2));
                            assert_eq!(r.info.size, e.2);
                        }
                        Err(StoreError::DeleteMarker(_)) => assert!(e.1),
                        Err(other) => panic!("step {step}: {k} {}: {other}", e.0),
                    }
                }
            }
            let stored: Vec<&Entry> = model.values().flatten().filter(|e| !e.1).collect();
            let bytes = stored.iter().map(|e| e.2).sum::<u64>();
            assert_eq!(
                cat.totals().unwrap(),
                (bytes, stored.len() as u64),
                "step {step}"
            );
        }
        let deleting = cat.write(|tx| Catalog::delete_bucket(tx, "b"));
        assert_eq!(deleting.is_err(), !model.is_empty());
    }
}
