//! Directories weir owns. weir deletes only what it wrote: a checkpoint or state
//! directory is claimed through a marker file, a non-empty directory without the marker
//! is refused (it may be the user's data: `checkpoint.dir = "."` once meant deleting the
//! job file and its input), and clearing one removes only weir's own entries, never the
//! directory itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::path::{Path, PathBuf};

/// The marker file of a directory weir owns.
pub const MARKER: &str = ".weir-owned";

#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error(
        "{what} {dir} is not empty and weir did not create it (it has no {MARKER} file, and holds {entry}); \
         weir only writes into, and deletes from, directories it owns: choose a new or empty directory"
    )]
    NotOwned { what: &'static str, dir: PathBuf, entry: String },
    #[error("{what} {dir}: {source}")]
    Io { what: &'static str, dir: PathBuf, source: std::io::Error },
}

/// A directory weir writes into and clears, told apart from the user's files.
#[derive(Debug, Clone, Copy)]
pub struct Owned {
    /// What the directory is, for messages ("checkpoint directory").
    pub what: &'static str,
    /// Whether an entry name is one weir writes there. Directories weir filled before
    /// it wrote markers are recognised by holding nothing else.
    pub is_ours: fn(&str) -> bool,
}

impl Owned {
    /// Claims `dir`: creates it with the marker when it is missing or empty, accepts it
    /// when it has the marker (or holds only weir's entries, then marks it), and refuses
    /// it otherwise, naming an entry that is not weir's.
    pub fn claim(&self, dir: &Path) -> Result<(), OwnershipError> {
        let io = |source| OwnershipError::Io { what: self.what, dir: dir.to_path_buf(), source };
        if dir.join(MARKER).is_file() {
            return Ok(());
        }
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                for entry in entries {
                    let name = entry.map_err(io)?.file_name().to_string_lossy().into_owned();
                    if !(self.is_ours)(&name) {
                        return Err(OwnershipError::NotOwned { what: self.what, dir: dir.to_path_buf(), entry: name });
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(dir).map_err(io)?,
            Err(e) => return Err(io(e)),
        }
        std::fs::write(dir.join(MARKER), format!("This {} belongs to weir, which may delete what it wrote here.\n", self.what))
            .map_err(io)
    }

    /// Removes weir's entries of a claimed `dir` (keeping the marker and anything else).
    pub fn clear(&self, dir: &Path) -> Result<(), OwnershipError> {
        let io = |source| OwnershipError::Io { what: self.what, dir: dir.to_path_buf(), source };
        self.claim(dir)?;
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == MARKER || !(self.is_ours)(&name) {
                continue;
            }
            let path = entry.path();
            let removed = if entry.file_type().map_err(io)?.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGS: Owned = Owned { what: "log directory", is_ours: |name| name.starts_with("log-") };

    #[test]
    fn a_new_or_empty_directory_is_claimed_and_marked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("new");
        LOGS.claim(&dir).unwrap();
        assert!(dir.join(MARKER).is_file());
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        LOGS.claim(&empty).unwrap();
        assert!(empty.join(MARKER).is_file());
    }

    #[test]
    fn a_directory_with_other_files_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("users.csv"), "alice").unwrap();
        let error = LOGS.claim(tmp.path()).unwrap_err().to_string();
        assert!(error.contains("users.csv") && error.contains("not empty"), "{error}");
        assert!(LOGS.clear(tmp.path()).is_err());
        assert_eq!(std::fs::read_to_string(tmp.path().join("users.csv")).unwrap(), "alice");
        assert!(!tmp.path().join(MARKER).exists());
    }

    #[test]
    fn clearing_removes_only_weirs_entries() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("log-1")).unwrap();
        std::fs::write(tmp.path().join("log-1/a"), "x").unwrap();
        // Written by weir before markers existed: claimed and marked.
        LOGS.claim(tmp.path()).unwrap();
        // A file the user put there later survives a clear.
        std::fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
        LOGS.clear(tmp.path()).unwrap();
        assert!(!tmp.path().join("log-1").exists());
        assert!(tmp.path().join("notes.txt").is_file());
        assert!(tmp.path().join(MARKER).is_file());
    }
}

/// A task's right to write (output, checkpoints) while another process may have been
/// given the task: valid until a deadline its member renews while it keeps running
/// (a member stopped longer than that may have been dropped by the group, see
/// [`crate::cluster`]), and gone for good once revoked. A task without a lease (any
/// job that is not a cluster's task) always may write.
#[derive(Debug)]
pub struct Lease {
    /// Milliseconds since [`Lease::clock`]'s origin until which writing is allowed,
    /// shared by the tasks of one member.
    valid_until: Arc<AtomicU64>,
    revoked: AtomicBool,
}

impl Lease {
    /// A lease of one task, valid while `valid_until` (renewed by its member) is ahead.
    pub fn new(valid_until: Arc<AtomicU64>) -> Self {
        Lease { valid_until, revoked: AtomicBool::new(false) }
    }

    /// Milliseconds on the monotonic clock leases use (which keeps running while the
    /// process is stopped: a process resumed after SIGSTOP finds its lease expired).
    pub fn clock() -> u64 {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        ORIGIN.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
    }

    pub fn is_valid(&self) -> bool {
        !self.is_revoked() && Lease::clock() < self.valid_until.load(Ordering::Acquire)
    }

    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    /// Waits until the lease is valid: `true`, or `false` once it is revoked.
    pub fn wait_valid(&self) -> bool {
        let mut logged = false;
        loop {
            if self.is_valid() {
                return true;
            }
            if self.is_revoked() {
                return false;
            }
            if !logged {
                tracing::warn!("the member's group membership is not confirmed: holding output until it is");
                logged = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
