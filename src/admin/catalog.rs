//! The admin catalog: a small redb file (`data_dir/admin.redb`, mode 0600) holding what the
//! admin UI changes at run time: S3 access keys, per-bucket S3 public-read settings,
//! per-bucket unsigned-image settings, and each bucket's CORS rules, tags, policy, public
//! access block and ownership controls. The daemon loads it at start into the S3 listener's
//! key ring and public set and the image endpoint's unsigned set, and every change goes to
//! both, so it takes effect with the next request and survives a restart.
//!
//! Secrets are stored as they are: SigV4 needs the secret itself to check a signature.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// access key → JSON [`StoredKey`].
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("access_keys");
/// bucket → an explicit public choice that overrides `[s3] public_buckets`: `true` when a
/// bucket policy was written, `false` when it was removed. (Before bucket policies, `true`
/// meant the public toggle was on; `BucketSettings::load` turns such a bucket's choice into
/// the public-read policy.)
const PUBLIC: TableDefinition<&str, bool> = TableDefinition::new("bucket_public");
/// bucket → unsigned image URLs may read it (overrides `[images] unsigned_buckets`).
const UNSIGNED: TableDefinition<&str, bool> = TableDefinition::new("bucket_unsigned_images");

/// bucket → JSON `[s3::cors::Rule]` (PutBucketCors).
const CORS: TableDefinition<&str, &[u8]> = TableDefinition::new("bucket_cors");

/// bucket → JSON map of the bucket's tags (PutBucketTagging).
const BUCKET_TAGS: TableDefinition<&str, &[u8]> = TableDefinition::new("bucket_tags");

/// bucket → its bucket policy as the client wrote it (PutBucketPolicy; the public toggle).
const BUCKET_POLICY: TableDefinition<&str, &[u8]> = TableDefinition::new("bucket_policy");
/// bucket → JSON `s3::bucket_access::Block` (PutPublicAccessBlock).
const BUCKET_BLOCK: TableDefinition<&str, &[u8]> =
    TableDefinition::new("bucket_public_access_block");
/// bucket → its object ownership setting (PutBucketOwnershipControls).
const BUCKET_OWNERSHIP: TableDefinition<&str, &[u8]> = TableDefinition::new("bucket_ownership");
/// bucket → JSON `[s3::lifecycle::Rule]` (PutBucketLifecycleConfiguration).
const BUCKET_LIFECYCLE: TableDefinition<&str, &[u8]> = TableDefinition::new("bucket_lifecycle");
/// Bucket → the owner id of the key that created it (`s3::owner`).
const BUCKET_OWNER: TableDefinition<&str, &[u8]> = TableDefinition::new("bucket_owner");
/// Default encryption (PutBucketEncryption), as JSON.
const BUCKET_ENCRYPTION: TableDefinition<&str, &[u8]> = TableDefinition::new("bucket_encryption");

/// The per-bucket settings kept as one value per bucket (access settings and lifecycle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessTable {
    Policy,
    PublicAccessBlock,
    Ownership,
    Lifecycle,
    Owner,
    Encryption,
}

impl AccessTable {
    fn def(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Self::Policy => BUCKET_POLICY,
            Self::PublicAccessBlock => BUCKET_BLOCK,
            Self::Ownership => BUCKET_OWNERSHIP,
            Self::Lifecycle => BUCKET_LIFECYCLE,
            Self::Owner => BUCKET_OWNER,
            Self::Encryption => BUCKET_ENCRYPTION,
        }
    }

    const ALL: [AccessTable; 6] = [
        Self::Policy,
        Self::PublicAccessBlock,
        Self::Ownership,
        Self::Lifecycle,
        Self::Owner,
        Self::Encryption,
    ];
}

pub const FILE_NAME: &str = "admin.redb";

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("admin catalog {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("admin catalog: {0}")]
    Db(String),
}

macro_rules! db_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for CatalogError {
            fn from(e: $t) -> Self { CatalogError::Db(e.to_string()) }
        }
    )*};
}
db_errors!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    serde_json::Error
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    pub access_key: String,
    pub secret_key: String,
    pub name: String,
    pub created_ms: i64,
    /// The key's own policy (JSON text, `s3::policy::parse_key_policy`); none: the key may
    /// do everything bucket policies do not deny. Absent in catalogs written before scoped
    /// keys, which read as none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

pub struct AdminCatalog {
    db: Database,
}

impl AdminCatalog {
    pub fn open(data_dir: &Path) -> Result<Self, CatalogError> {
        let path = data_dir.join(FILE_NAME);
        let fail = |message: String| CatalogError::Open {
            path: path.clone(),
            message,
        };
        // A few small tables: redb's default 1 GiB page cache would be all waste.
        let db = Database::builder()
            .set_cache_size(4 << 20)
            .create(&path)
            .map_err(|e| fail(e.to_string()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| fail(e.to_string()))?;
        }
        let tx = db.begin_write().map_err(|e| fail(e.to_string()))?;
        tx.open_table(KEYS).map_err(|e| fail(e.to_string()))?;
        tx.open_table(PUBLIC).map_err(|e| fail(e.to_string()))?;
        tx.open_table(UNSIGNED).map_err(|e| fail(e.to_string()))?;
        tx.open_table(CORS).map_err(|e| fail(e.to_string()))?;
        tx.open_table(BUCKET_TAGS)
            .map_err(|e| fail(e.to_string()))?;
        for t in AccessTable::ALL {
            tx.open_table(t.def()).map_err(|e| fail(e.to_string()))?;
        }
        tx.commit().map_err(|e| fail(e.to_string()))?;
        Ok(Self { db })
    }

    pub fn keys(&self) -> Result<Vec<StoredKey>, CatalogError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(KEYS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            out.push(serde_json::from_slice(v.value())?);
        }
        out.sort_by_key(|k: &StoredKey| k.created_ms);
        Ok(out)
    }

    pub fn add_key(&self, key: &StoredKey) -> Result<(), CatalogError> {
        let json = serde_json::to_vec(key)?;
        let tx = self.db.begin_write()?;
        tx.open_table(KEYS)?
            .insert(key.access_key.as_str(), json.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// Replaces a key's policy; false when there is no such key.
    pub fn set_key_policy(
        &self,
        access_key: &str,
        policy: Option<&str>,
    ) -> Result<bool, CatalogError> {
        let tx = self.db.begin_write()?;
        let found = {
            let mut table = tx.open_table(KEYS)?;
            let current: Option<StoredKey> = match table.get(access_key)? {
                Some(v) => Some(serde_json::from_slice(v.value())?),
                None => None,
            };
            match current {
                Some(mut k) => {
                    k.policy = policy.map(str::to_owned);
                    let json = serde_json::to_vec(&k)?;
                    table.insert(access_key, json.as_slice())?;
                    true
                }
                None => false,
            }
        };
        tx.commit()?;
        Ok(found)
    }

    /// Whether the key existed.
    pub fn remove_key(&self, access_key: &str) -> Result<bool, CatalogError> {
        let tx = self.db.begin_write()?;
        let existed = tx.open_table(KEYS)?.remove(access_key)?.is_some();
        tx.commit()?;
        Ok(existed)
    }

    /// Buckets with an explicit public-read choice.
    pub fn public_overrides(&self) -> Result<Vec<(String, bool)>, CatalogError> {
        self.overrides(PUBLIC)
    }

    pub fn set_public(&self, bucket: &str, public: bool) -> Result<(), CatalogError> {
        self.set_choice(PUBLIC, bucket, public)
    }

    /// Buckets with an explicit unsigned-image choice.
    pub fn unsigned_overrides(&self) -> Result<Vec<(String, bool)>, CatalogError> {
        self.overrides(UNSIGNED)
    }

    pub fn set_unsigned(&self, bucket: &str, open: bool) -> Result<(), CatalogError> {
        self.set_choice(UNSIGNED, bucket, open)
    }

    fn overrides(
        &self,
        table: TableDefinition<&str, bool>,
    ) -> Result<Vec<(String, bool)>, CatalogError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(table)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_owned(), v.value()));
        }
        Ok(out)
    }

    fn set_choice(
        &self,
        table: TableDefinition<&str, bool>,
        bucket: &str,
        value: bool,
    ) -> Result<(), CatalogError> {
        let tx = self.db.begin_write()?;
        tx.open_table(table)?.insert(bucket, value)?;
        tx.commit()?;
        Ok(())
    }

    /// Every bucket's CORS rules.
    pub fn cors_rules(&self) -> Result<Vec<(String, Vec<crate::s3::cors::Rule>)>, CatalogError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(CORS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_owned(), serde_json::from_slice(v.value())?));
        }
        Ok(out)
    }

    /// Stores (`Some`) or deletes (`None`) a bucket's CORS rules.
    pub fn set_cors_rules(
        &self,
        bucket: &str,
        rules: Option<&[crate::s3::cors::Rule]>,
    ) -> Result<(), CatalogError> {
        let json = rules.map(serde_json::to_vec).transpose()?;
        self.set_json(CORS, bucket, json.as_deref())
    }

    /// Stores (`Some`) or deletes (`None`) a bucket's JSON value in `table`.
    fn set_json(
        &self,
        table: TableDefinition<&str, &[u8]>,
        bucket: &str,
        json: Option<&[u8]>,
    ) -> Result<(), CatalogError> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(table)?;
            match json {
                Some(v) => {
                    table.insert(bucket, v)?;
                }
                None => {
                    table.remove(bucket)?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The bucket's tags, if it has any.
    pub fn bucket_tags(
        &self,
        bucket: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, CatalogError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(BUCKET_TAGS)?;
        let found = table.get(bucket)?;
        Ok(match found {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        })
    }

    /// Stores (`Some`) or deletes (`None`) the bucket's tags.
    pub fn set_bucket_tags(
        &self,
        bucket: &str,
        tags: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<(), CatalogError> {
        let json = tags.map(serde_json::to_vec).transpose()?;
        self.set_json(BUCKET_TAGS, bucket, json.as_deref())
    }

    /// Every bucket's value in one of the access tables.
    pub fn access_rows(&self, table: AccessTable) -> Result<Vec<(String, Vec<u8>)>, CatalogError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(table.def())?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// One bucket's value in one of the access tables.
    pub fn access_row(
        &self,
        table: AccessTable,
        bucket: &str,
    ) -> Result<Option<Vec<u8>>, CatalogError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(table.def())?;
        Ok(t.get(bucket)?.map(|v| v.value().to_vec()))
    }

    /// Stores (`Some`) or deletes (`None`) a bucket's value in one of the access tables.
    /// Writing the policy also records an explicit public choice (whether a policy is left),
    /// so `[s3] public_buckets` no longer applies to the bucket.
    pub fn set_access_row(
        &self,
        table: AccessTable,
        bucket: &str,
        value: Option<&[u8]>,
    ) -> Result<(), CatalogError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(table.def())?;
            match value {
                Some(v) => {
                    t.insert(bucket, v)?;
                }
                None => {
                    t.remove(bucket)?;
                }
            }
        }
        if table == AccessTable::Policy {
            tx.open_table(PUBLIC)?.insert(bucket, value.is_some())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets a deleted bucket's choices and rules, so a new bucket of that name starts
    /// private and without CORS.
    pub fn forget_bucket(&self, bucket: &str) -> Result<(), CatalogError> {
        let tx = self.db.begin_write()?;
        for t in AccessTable::ALL {
            tx.open_table(t.def())?.remove(bucket)?;
        }
        tx.open_table(PUBLIC)?.remove(bucket)?;
        tx.open_table(UNSIGNED)?.remove(bucket)?;
        tx.open_table(CORS)?.remove(bucket)?;
        tx.open_table(BUCKET_TAGS)?.remove(bucket)?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_public_choices_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = AdminCatalog::open(dir.path()).unwrap();
            for (i, ak) in ["AK2", "AK1"].iter().enumerate() {
                c.add_key(&StoredKey {
                    access_key: (*ak).into(),
                    secret_key: format!("secret-{ak}"),
                    name: format!("n{i}"),
                    created_ms: i as i64,
                    policy: None,
                })
                .unwrap();
            }
            c.set_public("pics", true).unwrap();
            c.set_public("priv", false).unwrap();
            c.set_unsigned("pics", true).unwrap();
            assert!(c.remove_key("AK1").unwrap());
            assert!(!c.remove_key("AK1").unwrap());
        }
        let c = AdminCatalog::open(dir.path()).unwrap();
        let keys = c.keys().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(
            (keys[0].access_key.as_str(), keys[0].secret_key.as_str()),
            ("AK2", "secret-AK2")
        );
        let mut p = c.public_overrides().unwrap();
        p.sort();
        assert_eq!(
            p,
            vec![("pics".to_owned(), true), ("priv".to_owned(), false)]
        );
        assert_eq!(
            c.unsigned_overrides().unwrap(),
            vec![("pics".to_owned(), true)]
        );
        c.forget_bucket("pics").unwrap();
        assert_eq!(c.public_overrides().unwrap().len(), 1);
        assert!(c.unsigned_overrides().unwrap().is_empty());
        crate::credentials::assert_private(&dir.path().join(FILE_NAME));
    }
}
