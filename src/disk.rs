//! Free space on the data disk: the reserve that keeps a full disk from breaking the catalog.
//!
//! Writes that would leave less than `[server] min_free_space` free are refused before they
//! start (S3 answers 507), so redb's own commits always find room: a failed redb write
//! poisons the database until it is reopened. The derivative cache keeps twice the reserve
//! free, so processed variants never take the room the originals need.

use std::path::{Path, PathBuf};

/// Bytes available to an unprivileged writer on the filesystem holding `path`.
pub fn free_space(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Whether an I/O error means the disk (or a size limit) is full.
pub fn is_out_of_space(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::StorageFull | K::QuotaExceeded | K::FileTooLarge
    )
}

/// Whether any error in `e`'s source chain is an out-of-space I/O error; OpenDAL and redb
/// wrap the `io::Error`, and some layers keep only its text.
pub fn chain_is_out_of_space(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if text.contains("No space left on device")
            || text.contains("File too large")
            || text.contains("Disk quota exceeded")
        {
            return true;
        }
        cur = match err.downcast_ref::<std::io::Error>() {
            Some(io) if is_out_of_space(io) => return true,
            // An `io::Error` wrapping another error hides it from `source()`.
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}

/// The free-space floor of one directory's filesystem.
#[derive(Debug, Clone)]
pub struct Reserve {
    dir: PathBuf,
    min_free: u64,
}

/// A write that would go below the reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the data disk has {free} bytes free, and writing {wanted} more would go below the reserve of {min_free} bytes ([server] min_free_space)"
)]
pub struct LowSpace {
    pub free: u64,
    pub wanted: u64,
    pub min_free: u64,
}

impl Reserve {
    /// `min_free` 0 turns the check off.
    pub fn new(dir: impl Into<PathBuf>, min_free: u64) -> Reserve {
        Reserve {
            dir: dir.into(),
            min_free,
        }
    }

    pub fn min_free(&self) -> u64 {
        self.min_free
    }

    /// Ok when `wanted` more bytes leave at least the reserve free. A filesystem that cannot
    /// be asked passes (the write itself will then report what is wrong).
    pub fn check(&self, wanted: u64) -> Result<(), LowSpace> {
        if self.min_free == 0 {
            return Ok(());
        }
        match free_space(&self.dir) {
            Ok(free) if free < self.min_free.saturating_add(wanted) => Err(LowSpace {
                free,
                wanted,
                min_free: self.min_free,
            }),
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::debug!(dir = %self.dir.display(), error = %e, "statvfs failed");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_refuses_what_would_go_below_it() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_space(dir.path()).unwrap();
        assert!(free > 0);
        assert!(Reserve::new(dir.path(), 0).check(u64::MAX).is_ok());
        assert!(Reserve::new(dir.path(), 1).check(0).is_ok());
        let low = Reserve::new(dir.path(), free).check(free).unwrap_err();
        assert_eq!(low.min_free, free);
        assert!(low.to_string().contains("min_free_space"), "{low}");
        assert!(Reserve::new(dir.path(), u64::MAX).check(0).is_err());
    }

    #[test]
    fn out_of_space_is_found_in_a_wrapped_error() {
        let io = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert!(is_out_of_space(&io));
        let wrapped = std::io::Error::other(io);
        assert!(chain_is_out_of_space(&wrapped));
        let text = std::io::Error::other("write: No space left on device (os error 28)");
        assert!(chain_is_out_of_space(&text));
        assert!(!chain_is_out_of_space(&std::io::Error::other(
            "permission denied"
        )));
    }
}
