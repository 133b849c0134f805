//! One running instance per job: an exclusive `flock` on `<work dir>/job.lock`, held
//! for as long as the job runs. The kernel releases it when the process exits however
//! it exits (SIGKILL included), so a killed job never blocks its restart, and neither a
//! zombie nor an unrelated process that reused the pid can pass for a running job.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// The lock file's name in the job's work directory.
pub const LOCK_FILE: &str = "job.lock";

/// Why a job could not take its lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("job `{job}` is already running (another process holds {})", path.display())]
    Running { job: String, path: PathBuf },
    #[error("cannot lock {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// The held lock of a running job; dropping it releases the lock (the file stays, so
/// that every instance locks the same inode).
#[derive(Debug)]
pub struct JobLock {
    _file: File,
}

impl JobLock {
    /// Takes the job's lock without waiting, or says which job holds it.
    pub fn acquire(work_dir: &Path, job: &str) -> Result<JobLock, LockError> {
        let path = work_dir.join(LOCK_FILE);
        let io = |source| LockError::Io { path: path.clone(), source };
        std::fs::create_dir_all(work_dir).map_err(io)?;
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(JobLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(LockError::Running { job: job.into(), path }),
            Err(TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// Whether a process (this one included) runs the job whose work directory is
    /// `work_dir` now.
    pub fn is_held(work_dir: &Path) -> bool {
        let Ok(file) = File::open(work_dir.join(LOCK_FILE)) else { return false };
        matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!JobLock::is_held(dir.path()));
        let lock = JobLock::acquire(dir.path(), "j").unwrap();
        assert!(JobLock::is_held(dir.path()));
        let refused = JobLock::acquire(dir.path(), "j").unwrap_err();
        assert!(refused.to_string().contains("job `j` is already running"), "{refused}");
        drop(lock);
        assert!(!JobLock::is_held(dir.path()));
        JobLock::acquire(dir.path(), "j").unwrap();
    }
}
