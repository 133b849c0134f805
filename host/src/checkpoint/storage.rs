//! The checkpoint directory: one `chk-<id>` directory per checkpoint, a `shared`
//! directory for files reused between checkpoints (RocksDB SST files), and a
//! `_metadata` file per checkpoint, written last, atomically and with a checksum.
//!
//! ```text
//! <dir>/chk-00000007/_metadata          header line with crc32, then JSON
//! <dir>/chk-00000007/count#0/state.ent  memory backend: keyed state entries
//! <dir>/chk-00000007/count#0/timers.ent
//! <dir>/chk-00000007/count#1/rocks/MANIFEST-000005 ...
//! <dir>/shared/count#1/000012.sst       RocksDB files, shared by checkpoints
//! <dir>/FINISHED                        the job ran to completion
//! ```

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use super::remote::{RemoteError, RemoteStore};
use super::{CheckpointMetadata, FileEntry, TaskState};
use crate::state::snapshot::file_crc;

pub(super) const METADATA: &str = "_metadata";
const HEADER: &str = "weir-checkpoint-v1 crc32=";
pub(super) const FINISHED: &str = "FINISHED";
/// In an object store: which process writes the checkpoints now (see
/// [`CheckpointStorage::take_ownership`]).
pub(super) const OWNER: &str = "_owner";

/// The checkpoint directory of a job, and its copy in an object store if the job has
/// one ([`super::remote`]).
#[derive(Debug, Clone)]
pub struct CheckpointStorage {
    root: PathBuf,
    remote: Option<Arc<RemoteStore>>,
}

/// A checkpoint whose metadata and files checked out.
#[derive(Debug, Clone)]
pub struct CompletedCheckpoint {
    pub root: PathBuf,
    pub metadata: CheckpointMetadata,
}

impl CompletedCheckpoint {
    /// The absolute path of a file of the checkpoint.
    pub fn path(&self, file: &FileEntry) -> PathBuf {
        self.root.join(&file.path)
    }
}

impl CheckpointStorage {
    /// The checkpoint directory as weir owns it: `chk-*`, `shared` and `FINISHED` are
    /// weir's; nothing else there is ever deleted.
    pub const OWNED: crate::ownership::Owned = crate::ownership::Owned {
        what: "checkpoint directory",
        is_ours: |name| name.starts_with("chk-") || name == "shared" || name == FINISHED || name == OWNER,
    };

    pub fn new(root: PathBuf) -> Self {
        CheckpointStorage { root, remote: None }
    }

    /// The local directory `root`, copied to `remote`: checkpoints complete once they
    /// are in the store, and a start downloads the newest one the directory lacks.
    pub fn with_remote(root: PathBuf, remote: Arc<RemoteStore>) -> Self {
        CheckpointStorage { root, remote: Some(remote) }
    }

    /// The checkpoint directory `root`, copied to the object store at `store` (a URL,
    /// with the job file's `options`) when there is one.
    pub fn open(
        root: PathBuf,
        store: Option<&str>,
        options: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self, RemoteError> {
        Ok(match store {
            None => CheckpointStorage::new(root),
            Some(url) => CheckpointStorage::with_remote(root, Arc::new(RemoteStore::open(url, options)?)),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of checkpoint `id`, relative to the root.
    pub fn checkpoint_dir(id: u64) -> String {
        format!("chk-{id:08}")
    }

    /// Completes a checkpoint: writes `metadata` into its checkpoint directory,
    /// atomically, then uploads the checkpoint to the object store, if any.
    pub fn complete(&self, metadata: &CheckpointMetadata) -> Result<(), String> {
        write_manifest(&self.root.join(Self::checkpoint_dir(metadata.id)), METADATA, metadata)
            .map_err(|e| format!("writing metadata under {}: {e}", self.root.display()))?;
        if let Some(remote) = &self.remote {
            remote.upload(&self.root, metadata).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The newest checkpoint of the local directory with its `_metadata` (not checked).
    pub(super) fn newest_complete_id(&self) -> Option<u64> {
        self.checkpoint_dirs().into_iter().find(|(_, dir)| dir.join(METADATA).exists()).map(|(id, _)| id)
    }

    /// The complete checkpoints of the local directory, with their metadata.
    pub(super) fn kept(&self) -> Vec<(u64, CheckpointMetadata)> {
        self.checkpoint_dirs()
            .into_iter()
            .filter_map(|(id, dir)| Some((id, self.load_metadata_only(&dir).ok()?)))
            .collect()
    }

    /// Brings the checkpoints of the object store newer than the local directory's
    /// into it. When the store cannot be read, a local checkpoint is used with a
    /// warning; with none, the start fails rather than start afresh.
    fn download_newer(&self) -> Result<(), String> {
        let Some(remote) = &self.remote else { return Ok(()) };
        match remote.download_newer(&self.root) {
            Ok(_) => Ok(()),
            Err(e) if self.newest_complete_id().is_some() => {
                tracing::warn!(error = %e, "cannot read the checkpoint store; restoring from the local directory");
                Ok(())
            }
            Err(e) => Err(format!("{e} (no local checkpoint to fall back on)")),
        }
    }

    /// Records that sink task `task` committed the transaction of checkpoint `id`
    /// (for sinks whose transactions cannot be committed after a restart, see
    /// [`CheckpointStorage::latest`]). Nothing happens for a savepoint's id.
    pub fn record_commit(&self, id: u64, task: &str) -> std::io::Result<()> {
        let dir = self.root.join(Self::checkpoint_dir(id));
        if !dir.join(METADATA).exists() {
            return Ok(());
        }
        let file = fs::File::create(dir.join(commit_record(task)))?;
        file.sync_all()?;
        fs::File::open(&dir)?.sync_all()
    }

    /// The sink tasks of a checkpoint whose transaction must have been committed for
    /// the checkpoint to be restored, and was not recorded as committed.
    fn unconfirmed_commits(&self, dir: &Path, metadata: &CheckpointMetadata) -> Vec<String> {
        metadata
            .tasks
            .iter()
            .filter(|(_, state)| {
                matches!(state, TaskState::Sink { state, .. } if requires_commit_record(state))
            })
            .filter(|(task, _)| !dir.join(commit_record(task)).exists())
            .map(|(task, _)| task.clone())
            .collect()
    }

    /// Reads and checks one checkpoint: the metadata's checksum, then every file's size
    /// and checksum.
    pub fn load(&self, id_dir: &Path) -> Result<CompletedCheckpoint, String> {
        let metadata: CheckpointMetadata = read_manifest(&id_dir.join(METADATA))?;
        let checkpoint = CompletedCheckpoint { root: self.root.clone(), metadata };
        for file in checkpoint.metadata.files() {
            verify_file(&checkpoint.path(file), file)?;
        }
        Ok(checkpoint)
    }

    /// Checkpoint directories, newest first.
    fn checkpoint_dirs(&self) -> Vec<(u64, PathBuf)> {
        let mut dirs: Vec<(u64, PathBuf)> = fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let id = name.strip_prefix("chk-")?.parse().ok()?;
                Some((id, entry.path()))
            })
            .collect();
        dirs.sort_by(|a, b| b.0.cmp(&a.0));
        dirs
    }

    /// The newest checkpoint that checks out. Unusable ones are reported and skipped;
    /// an error when there are checkpoints but none is usable. Directories without
    /// metadata are checkpoints that never completed and are ignored.
    ///
    /// A checkpoint with a sink whose transaction cannot be committed after a restart
    /// (a Kafka transaction: librdkafka cannot resume another producer's transaction)
    /// is restored only once that sink recorded the commit; otherwise the restart
    /// fences and aborts the transaction, so the previous checkpoint is restored and
    /// its records are written again.
    pub fn latest(&self) -> Result<Option<CompletedCheckpoint>, String> {
        self.download_newer()?;
        let mut problems = Vec::new();
        for (id, dir) in self.checkpoint_dirs() {
            if !dir.join(METADATA).exists() {
                continue;
            }
            match self.load(&dir) {
                Ok(checkpoint) => {
                    let unconfirmed = self.unconfirmed_commits(&dir, &checkpoint.metadata);
                    if !unconfirmed.is_empty() {
                        tracing::warn!(
                            checkpoint = id, sinks = %unconfirmed.join(", "),
                            "the sinks' transactions of this checkpoint were not recorded as committed; \
                             restoring an earlier checkpoint so that their records are written again"
                        );
                        continue;
                    }
                    if !problems.is_empty() {
                        tracing::warn!(checkpoint = id, skipped = %problems.join("; "), "using an older checkpoint");
                    }
                    return Ok(Some(checkpoint));
                }
                Err(problem) => {
                    tracing::warn!(checkpoint = id, %problem, "checkpoint is unusable");
                    problems.push(format!("checkpoint {id}: {problem}"));
                }
            }
        }
        if problems.is_empty() {
            Ok(None)
        } else {
            Err(format!(
                "no usable checkpoint in {}: {}; move the directory away or run with --fresh",
                self.root.display(),
                problems.join("; ")
            ))
        }
    }

    /// Keeps the newest `retained` completed checkpoints, deletes the rest and every
    /// shared file none of the kept ones refers to.
    /// The newest checkpoint whose sink commits are all recorded is kept as well, so
    /// that [`CheckpointStorage::latest`] has one to fall back to.
    pub fn retain(&self, retained: usize) {
        self.retain_local(retained);
        if let Some(remote) = &self.remote {
            if let Err(e) = remote.retain(self) {
                tracing::warn!(error = %e, "could not delete old checkpoints from the store");
            }
        }
    }

    /// Brings the store's checkpoints newer than the local directory's into it and
    /// keeps the newest `retained` locally, touching nothing in the store: a standby's
    /// warm copy of a task another process runs ([`crate::cluster`]). Returns the ids
    /// downloaded.
    pub fn refresh_copy(&self, retained: usize) -> Result<Vec<u64>, String> {
        let Some(remote) = &self.remote else { return Ok(Vec::new()) };
        let downloaded = remote.download_newer_logged(&self.root, false).map_err(|e| e.to_string())?;
        if !downloaded.is_empty() {
            self.retain_local(retained);
        }
        Ok(downloaded)
    }

    /// [`CheckpointStorage::retain`] in the local directory only.
    fn retain_local(&self, retained: usize) {
        let mut kept = 0;
        let mut confirmed_kept = false;
        let mut referenced = HashSet::new();
        for (id, dir) in self.checkpoint_dirs() {
            let complete = dir.join(METADATA).exists();
            let metadata = if complete { self.load_metadata_only(&dir).ok() } else { None };
            let confirmed = metadata.as_ref().is_some_and(|m| self.unconfirmed_commits(&dir, m).is_empty());
            if complete && (kept < retained || (confirmed && !confirmed_kept)) {
                kept += 1;
                confirmed_kept |= confirmed;
                if let Some(checkpoint) = metadata {
                    referenced.extend(checkpoint.files().map(|f| self.root.join(&f.path)));
                }
                continue;
            }
            // An unfinished directory newer than every kept checkpoint may be in progress.
            if complete || kept > 0 {
                let removed = if dir.is_dir() { fs::remove_dir_all(&dir) } else { fs::remove_file(&dir) };
                if let Err(e) = removed {
                    tracing::warn!(checkpoint = id, error = %e, "could not delete an old checkpoint");
                }
            }
        }
        let shared = self.root.join("shared");
        for task_dir in fs::read_dir(&shared).into_iter().flatten().flatten() {
            for file in fs::read_dir(task_dir.path()).into_iter().flatten().flatten() {
                if !referenced.contains(&file.path()) {
                    let _ = fs::remove_file(file.path());
                }
            }
        }
    }

    fn load_metadata_only(&self, dir: &Path) -> Result<CheckpointMetadata, String> {
        let text = fs::read(dir.join(METADATA)).map_err(|e| e.to_string())?;
        let newline = text.iter().position(|b| *b == b'\n').ok_or("no header")?;
        serde_json::from_slice(&text[newline + 1..]).map_err(|e| e.to_string())
    }

    /// Records that the job ran to completion: the next run starts fresh. Checkpoints
    /// that never completed (no `_metadata`: none is in progress once the job has
    /// finished) are removed; the completed ones stay for inspection.
    pub fn mark_finished(&self) -> std::io::Result<()> {
        fs::create_dir_all(&self.root)?;
        for (_, dir) in self.checkpoint_dirs() {
            if !dir.join(METADATA).exists() {
                if dir.is_dir() { fs::remove_dir_all(&dir)? } else { fs::remove_file(&dir)? }
            }
        }
        fs::write(self.root.join(FINISHED), b"")?;
        if let Some(remote) = &self.remote {
            remote.mark_finished(&self.root).map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    /// Whether the job ran to completion (here, or on another machine that shares the
    /// object store).
    pub fn is_finished(&self) -> bool {
        self.root.join(FINISHED).exists() || self.remote.as_ref().is_some_and(|r| r.is_finished())
    }

    /// Claims the directory for weir (see [`crate::ownership`]): refused when it holds
    /// files weir did not write.
    pub fn claim(&self) -> Result<(), String> {
        Self::OWNED.claim(&self.root).map_err(|e| e.to_string())?;
        self.remote.as_ref().map_or(Ok(()), |r| r.claim()).map_err(|e| e.to_string())
    }

    /// Makes this process the one writer of the object store's checkpoints (nothing to
    /// do for a local directory, which the job's lock guards): a process that ran the
    /// job before (a member that stalled while its task moved, a second `weir run`
    /// elsewhere) is fenced at its next checkpoint ([`CheckpointStorage::check_owner`]).
    pub fn take_ownership(&self) -> Result<(), String> {
        self.remote.as_ref().map_or(Ok(()), |r| r.take_ownership()).map_err(|e| e.to_string())
    }

    /// Whether this process still owns the checkpoints; `Err` says who took them over.
    pub fn check_owner(&self) -> Result<(), String> {
        self.remote.as_ref().map_or(Ok(()), |r| r.check_owner())
    }

    /// Deletes every checkpoint (a fresh start), and nothing else.
    pub fn clear(&self) -> Result<(), String> {
        Self::OWNED.clear(&self.root).map_err(|e| e.to_string())?;
        self.remote.as_ref().map_or(Ok(()), |r| r.clear()).map_err(|e: RemoteError| e.to_string())
    }
}

/// Writes `value` as JSON to `dir/name` behind a header line with its CRC-32: to a
/// temporary file, synced, renamed, and the directory synced, so a crash leaves either
/// no file or a complete one. Returns the size of the JSON.
/// The key in a sink's checkpoint state that asks for its commits to be recorded.
pub const REQUIRES_COMMIT_RECORD: &str = "requires_commit_record";

/// Whether a sink's checkpoint state asks for its commits to be recorded.
pub fn requires_commit_record(state: &serde_json::Value) -> bool {
    state.get(REQUIRES_COMMIT_RECORD) == Some(&serde_json::Value::Bool(true))
}

/// The file that records a sink task's commit inside a checkpoint directory.
fn commit_record(task: &str) -> String {
    let name: String = task.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("{}{name}", commit_record_prefix())
}

/// How the names of [`commit_record`] files begin.
pub(super) fn commit_record_prefix() -> &'static str {
    "committed-"
}

/// A manifest as [`write_manifest`] writes it: a header line with the CRC-32 of the
/// JSON body, then the body.
pub fn encode_manifest<T: serde::Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    let body = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let crc = crc32fast::hash(&body);
    let mut text = format!("{HEADER}{crc:08x}\n").into_bytes();
    text.extend_from_slice(&body);
    Ok(text)
}

pub fn write_manifest<T: serde::Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<u64> {
    fs::create_dir_all(dir)?;
    let text = encode_manifest(value)?;
    let body_len = text.len() - text.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(&text)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()?;
    Ok(body_len as u64)
}

/// Reads a file written by [`write_manifest`], checking its header and checksum.
pub fn read_manifest<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let mut text = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut text))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    parse_manifest(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses the contents of a file written by [`write_manifest`], checking its header and
/// checksum.
pub fn parse_manifest<T: serde::de::DeserializeOwned>(text: &[u8]) -> Result<T, String> {
    let newline = text.iter().position(|b| *b == b'\n').ok_or("no header line (truncated?)")?;
    let header = String::from_utf8_lossy(&text[..newline]);
    let stored = header
        .strip_prefix(HEADER)
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| format!("unknown header {header:?}"))?;
    let body = &text[newline + 1..];
    if crc32fast::hash(body) != stored {
        return Err("checksum mismatch (damaged or truncated)".into());
    }
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

/// Checks a file's size and checksum against its entry.
pub fn verify_file(path: &Path, entry: &FileEntry) -> Result<(), String> {
    let size = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.len();
    if size != entry.size {
        return Err(format!("{}: {size} bytes, expected {}", path.display(), entry.size));
    }
    if file_crc(path).map_err(|e| format!("{}: {e}", path.display()))? != entry.crc32 {
        return Err(format!("{}: checksum mismatch", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn metadata(id: u64, sink_state: serde_json::Value) -> CheckpointMetadata {
        let tasks = BTreeMap::from([("out#0".to_string(), TaskState::Sink { state: sink_state, channel_state: None })]);
        CheckpointMetadata { format: 1, job: "j".into(), id, created_ms: 0, tasks }
    }

    #[test]
    fn checkpoints_whose_sink_commit_was_not_recorded_are_not_restored_nor_their_fallback_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::new(dir.path().to_path_buf());
        let transactional = |id| metadata(id, serde_json::json!({ "pending": id, REQUIRES_COMMIT_RECORD: true }));
        storage.complete(&transactional(1)).unwrap();
        storage.record_commit(1, "out#0").unwrap();
        storage.complete(&transactional(2)).unwrap();
        // Checkpoint 2 completed but its transaction was not recorded as committed.
        storage.retain(1);
        assert_eq!(storage.latest().unwrap().unwrap().metadata.id, 1);
        assert!(dir.path().join("chk-00000001").exists(), "the fallback is kept beyond `retained`");
        storage.record_commit(2, "out#0").unwrap();
        storage.complete(&transactional(3)).unwrap();
        storage.retain(1);
        assert_eq!(storage.latest().unwrap().unwrap().metadata.id, 2);
        assert!(!dir.path().join("chk-00000001").exists());
        // Sinks that do not ask for records restore as before, and savepoint ids are
        // not checkpoints.
        storage.complete(&metadata(4, serde_json::Value::Null)).unwrap();
        assert_eq!(storage.latest().unwrap().unwrap().metadata.id, 4);
        storage.record_commit(99, "out#0").unwrap();
        assert!(!dir.path().join("chk-00000099").exists());
    }

    #[test]
    fn a_finished_job_leaves_no_incomplete_checkpoint_and_nothing_of_anyone_else_goes() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::new(dir.path().to_path_buf());
        storage.complete(&metadata(3, serde_json::Value::Null)).unwrap();
        fs::create_dir_all(dir.path().join("chk-00000004/op#0")).unwrap();
        fs::write(dir.path().join("chk-00000004/op#0/state.ent"), b"partial").unwrap();
        fs::write(dir.path().join("notes.txt"), b"the user's").unwrap();
        storage.mark_finished().unwrap();
        assert!(storage.is_finished());
        assert!(dir.path().join("chk-00000003/_metadata").is_file(), "completed checkpoints stay");
        assert!(!dir.path().join("chk-00000004").exists(), "the incomplete one is gone");
        assert_eq!(fs::read(dir.path().join("notes.txt")).unwrap(), b"the user's");
    }

    #[test]
    fn a_standby_copy_follows_the_store_without_touching_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("store").display());
        let machine = |name: &str| {
            CheckpointStorage::with_remote(dir.path().join(name), Arc::new(RemoteStore::open(&url, &BTreeMap::new()).unwrap()))
        };
        let (owner, standby) = (machine("owner"), machine("standby"));
        for id in 1..=3 {
            owner.complete(&metadata(id, serde_json::Value::Null)).unwrap();
        }
        owner.retain(2);
        assert_eq!(standby.refresh_copy(2).unwrap(), vec![3, 2]);
        assert_eq!(standby.refresh_copy(2).unwrap(), Vec::<u64>::new(), "nothing new");
        owner.complete(&metadata(4, serde_json::Value::Null)).unwrap();
        assert_eq!(standby.refresh_copy(2).unwrap(), vec![4]);
        // The copy keeps the newest two locally; the store keeps what its owner keeps.
        let local: Vec<u64> = standby.kept().into_iter().map(|(id, _)| id).collect();
        assert_eq!(local, vec![4, 3]);
        let in_store = |id: u64| dir.path().join("store").join(CheckpointStorage::checkpoint_dir(id)).join(METADATA).is_file();
        assert!(in_store(2) && in_store(3) && in_store(4), "a standby deletes nothing from the store");
        // A task that moves here restores the newest checkpoint without downloading it.
        assert_eq!(standby.remote.as_ref().unwrap().download_newer(standby.root()).unwrap(), Vec::<u64>::new());
        assert_eq!(standby.latest().unwrap().unwrap().metadata.id, 4);
    }

    #[test]
    fn the_newest_process_to_take_the_store_over_fences_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("store").display());
        let machine = |name: &str| {
            CheckpointStorage::with_remote(dir.path().join(name), Arc::new(RemoteStore::open(&url, &BTreeMap::new()).unwrap()))
        };
        let (zombie, owner) = (machine("a"), machine("b"));
        zombie.take_ownership().unwrap();
        zombie.check_owner().unwrap();
        zombie.complete(&metadata(1, serde_json::Value::Null)).unwrap();
        owner.take_ownership().unwrap();
        owner.check_owner().unwrap();
        let fenced = zombie.check_owner().unwrap_err();
        assert!(fenced.starts_with("fenced: the checkpoints in file://"), "{fenced}");
        // `_owner` is weir's: the prefix stays claimable, and a fresh start clears it.
        owner.claim().unwrap();
        owner.clear().unwrap();
        assert!(owner.check_owner().unwrap_err().contains("owner record"), "cleared with the rest");
        // A local directory has no owner record (the job lock guards it).
        CheckpointStorage::new(dir.path().join("local")).check_owner().unwrap();
    }

    #[test]
    fn another_machine_restores_from_the_store_and_falls_back_as_a_local_restore_does() {
        let dir = tempfile::tempdir().unwrap();
        let store_root = dir.path().join("store");
        let remote = || {
            let url = format!("file://{}", store_root.display());
            Arc::new(RemoteStore::open(&url, &BTreeMap::new()).unwrap())
        };
        let machine = |name: &str| CheckpointStorage::with_remote(dir.path().join(name), remote());
        let transactional = |id| metadata(id, serde_json::json!({ "pending": id, REQUIRES_COMMIT_RECORD: true }));
        let first = machine("a");
        first.complete(&transactional(1)).unwrap();
        first.record_commit(1, "out#0").unwrap();
        // Checkpoint 2 is in the store, its commit not recorded (the sink had not
        // committed when the machine went away): another machine restores 1.
        first.complete(&transactional(2)).unwrap();
        assert_eq!(machine("b").latest().unwrap().unwrap().metadata.id, 1);
        // The commit recorded on the first machine reaches the store with checkpoint 3;
        // with 3's metadata damaged in the store, a third machine restores 2.
        first.record_commit(2, "out#0").unwrap();
        first.complete(&transactional(3)).unwrap();
        first.retain(2);
        let damaged = store_root.join("chk-00000003").join(METADATA);
        let mut bytes = fs::read(&damaged).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        fs::write(&damaged, bytes).unwrap();
        let third = machine("c");
        assert_eq!(third.latest().unwrap().unwrap().metadata.id, 2);
        assert!(!dir.path().join("c/chk-00000001").exists(), "retention removed 1 from the store");
        // A finished job is finished for every machine.
        first.mark_finished().unwrap();
        assert!(machine("d").is_finished());
    }
}
