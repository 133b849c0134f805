//! Checkpoints in object storage: `[checkpoint] dir = "s3://bucket/prefix"` (or `gs://`,
//! `az://`, `file://`), through the `object_store` crate.
//!
//! Tasks write their snapshots into the local checkpoint directory as always (RocksDB
//! needs a local directory to hard-link into, and a restart on the same machine reads
//! it without a download). The object store holds the copy that counts when the machine
//! is gone: a checkpoint completes only once every file of it is uploaded, its
//! `_metadata` last, so a checkpoint in the store is whole when its `_metadata` is
//! there. Files under `shared/` (RocksDB's SST files, reused by later checkpoints) are
//! uploaded once per process (the first checkpoint after a start uploads the ones it
//! refers to again: a file of the same name in the store may be an earlier owner's). A start on a machine whose local directory lacks the newest
//! checkpoints downloads them first, then restores as from a local one (the same
//! checks: every file's size and CRC-32). Files stream through in parts, so a large
//! state file never sits in memory whole.
//!
//! The layout under the prefix is the local one ([`super::storage`]); weir deletes
//! only what it wrote there (`chk-*` and `shared/`), and refuses a prefix holding
//! anything else.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::storage::{FINISHED, METADATA, OWNER, commit_record_prefix};
use super::{CheckpointMetadata, CheckpointStorage};


/// A failure of the object store.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint store {url}: {message}")]
pub struct RemoteError {
    pub url: String,
    pub message: String,
}

/// The object store copy of a job's checkpoints.
pub struct RemoteStore {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: Key,
    runtime: tokio::runtime::Runtime,
    /// The shared files this process uploaded, with their CRC-32. Only these are
    /// skipped by later uploads: a file of the same name found in the store may be
    /// another process's (a task's earlier owner wrote SST files after the checkpoint
    /// this one restored, with the numbers this one's RocksDB uses next).
    shared: Mutex<HashMap<String, u32>>,
    /// The sink commit records this process uploaded (each goes up once).
    commit_records: Mutex<HashSet<String>>,
    /// What this process wrote into `_owner` when it took the checkpoints over.
    owner: Mutex<Option<Owner>>,
}

/// The `_owner` object: the process that writes the checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Owner {
    /// Unique per start: host, process id and the time.
    token: String,
    host: String,
    pid: u32,
    since_ms: i64,
}

impl std::fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStore").field("url", &self.url).finish_non_exhaustive()
    }
}

/// Whether a checkpoint `dir` setting names an object store rather than a directory.
pub fn is_url(dir: &str) -> bool {
    crate::store::is_url(dir)
}

impl RemoteStore {
    /// Opens the store at `url`. Its options come from the environment (`AWS_*`,
    /// `GOOGLE_*`, `AZURE_*`, as the cloud tools read them) and from the job file's
    /// `store_options`, which may not hold secrets.
    pub fn open(url: &str, options: &BTreeMap<String, String>) -> Result<Self, RemoteError> {
        let error = |message: String| RemoteError { url: url.to_string(), message };
        let (store, prefix) = crate::store::open(url, options).map_err(error)?;
        let runtime = crate::store::runtime().map_err(error)?;
        Ok(RemoteStore { url: url.to_string(), store, prefix, runtime, shared: Mutex::new(HashMap::new()), commit_records: Mutex::new(HashSet::new()), owner: Mutex::new(None) })
    }

    fn error(&self, message: impl std::fmt::Display) -> RemoteError {
        RemoteError { url: self.url.clone(), message: message.to_string() }
    }

    /// The key of a path relative to the checkpoint root.
    fn key(&self, relative: &str) -> Key {
        relative.split('/').fold(self.prefix.clone(), |key, part| key.join(part))
    }

    /// The path relative to the checkpoint root of a key under the prefix.
    fn relative(&self, key: &Key) -> Option<String> {
        let parts: Vec<String> = key.prefix_match(&self.prefix)?.map(|p| percent_decode(p.as_ref())).collect();
        Some(parts.join("/"))
    }

    /// Every key under `under` (relative; empty: the whole prefix).
    fn list(&self, under: &str) -> Result<Vec<Key>, RemoteError> {
        let prefix = if under.is_empty() { self.prefix.clone() } else { self.key(under) };
        self.runtime
            .block_on(self.store.list(Some(&prefix)).map_ok(|meta| meta.location).try_collect::<Vec<_>>())
            .map_err(|e| self.error(format!("listing {prefix}: {e}")))
    }

    /// Refuses a prefix holding objects weir did not write (as the local directory's
    /// [`CheckpointStorage::OWNED`] check does).
    pub fn claim(&self) -> Result<(), RemoteError> {
        for key in self.list("")? {
            let Some(relative) = self.relative(&key) else { continue };
            let top = relative.split('/').next().unwrap_or_default();
            if !(CheckpointStorage::OWNED.is_ours)(top) {
                return Err(self.error(format!(
                    "holds `{relative}`, which weir did not write; give the checkpoints a prefix of their own"
                )));
            }
        }
        Ok(())
    }

    /// Writes `_owner` naming this process: from now on, another process that wrote
    /// checkpoints here before is fenced at its next one. The newest start wins (as a
    /// Kafka transactional id's newest producer does); the cluster's group coordinator
    /// makes sure that is the task's current owner.
    pub fn take_ownership(&self) -> Result<(), RemoteError> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let since_ms = crate::clock::now_ms();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let pid = std::process::id();
        let owner = Owner { token: format!("{host}-{pid}-{since_ms}-{nanos}"), host, pid, since_ms };
        let bytes = serde_json::to_vec(&owner).map_err(|e| self.error(e))?;
        self.runtime
            .block_on(self.store.put(&self.key(OWNER), PutPayload::from(bytes)))
            .map_err(|e| self.error(format!("writing {OWNER}: {e}")))?;
        tracing::debug!(url = %self.url, token = %owner.token, "took the checkpoints over");
        *self.owner.lock().unwrap_or_else(|e| e.into_inner()) = Some(owner);
        Ok(())
    }

    /// `Err` when another process took the checkpoints over since this one did: this
    /// one must not write another checkpoint (it is a zombie). A store that cannot be
    /// read says nothing (the upload that follows fails on its own).
    pub fn check_owner(&self) -> Result<(), String> {
        let Some(mine) = self.owner.lock().unwrap_or_else(|e| e.into_inner()).clone() else { return Ok(()) };
        let read = self.runtime.block_on(async { self.store.get(&self.key(OWNER)).await?.bytes().await });
        let current: Option<Owner> = match read {
            Ok(bytes) => serde_json::from_slice(&bytes).ok(),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "cannot read the checkpoints' owner");
                return Ok(());
            }
        };
        match current {
            Some(owner) if owner == mine => Ok(()),
            Some(owner) => Err(format!(
                "fenced: the checkpoints in {} were taken over by process {} on {} at {} ms; this process \
                 (pid {}) no longer runs the job",
                self.url, owner.pid, owner.host, owner.since_ms, mine.pid
            )),
            None => Err(format!("fenced: the checkpoints' owner record in {} is gone", self.url)),
        }
    }

    /// Writes `bytes` as the object `relative`, whole.
    pub(crate) fn put_bytes(&self, relative: &str, bytes: Vec<u8>) -> Result<(), RemoteError> {
        self.runtime
            .block_on(self.store.put(&self.key(relative), PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|e| self.error(format!("writing {relative}: {e}")))
    }

    /// The object `relative`, or `None` when there is none.
    pub(crate) fn get_bytes(&self, relative: &str) -> Result<Option<Vec<u8>>, RemoteError> {
        match self.runtime.block_on(async { self.store.get(&self.key(relative)).await?.bytes().await }) {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(format!("reading {relative}: {e}"))),
        }
    }

    /// Whether the object `relative` exists.
    pub(crate) fn exists(&self, relative: &str) -> Result<bool, RemoteError> {
        match self.runtime.block_on(self.store.head(&self.key(relative))) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error(format!("looking for {relative}: {e}"))),
        }
    }

    /// Deletes the object `relative` (one weir wrote).
    pub(crate) fn delete(&self, relative: &str) -> Result<(), RemoteError> {
        match self.runtime.block_on(self.store.delete(&self.key(relative))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(format!("deleting {relative}: {e}"))),
        }
    }

    /// The paths (relative to the prefix) of every object under `under`.
    pub(crate) fn list_relative(&self, under: &str) -> Result<Vec<String>, RemoteError> {
        Ok(self.list(under)?.iter().filter_map(|key| self.relative(key)).collect())
    }

    /// Uploads every file under the local directory `root`, each to its path relative
    /// to `root`, the ones named `last` after all others.
    pub(crate) fn upload_tree(&self, root: &Path, last: &str) -> Result<(), RemoteError> {
        let mut files = Vec::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| self.error(format!("reading {}: {e}", dir.display())))?;
            for entry in entries {
                let path = entry.map_err(|e| self.error(format!("reading {}: {e}", dir.display())))?.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if let Ok(relative) = path.strip_prefix(root) {
                    files.push(relative.to_string_lossy().into_owned());
                }
            }
        }
        files.sort_by_key(|f| (f.rsplit('/').next() == Some(last), f.clone()));
        for relative in &files {
            self.put(root, relative)?;
        }
        Ok(())
    }

    /// Downloads every object under the prefix into the local directory `root`, each
    /// to its relative path; returns the bytes written.
    pub(crate) fn download_tree(&self, root: &Path) -> Result<u64, RemoteError> {
        let mut written = 0;
        for key in self.list("")? {
            let Some(relative) = self.relative(&key) else { continue };
            written += self.get_to_file(&key, &root.join(&relative))?;
        }
        Ok(written)
    }

    /// Uploads the local file `root/relative` ([`crate::store::upload`]).
    fn put(&self, root: &Path, relative: &str) -> Result<(), RemoteError> {
        let path = root.join(relative);
        let reading = |e: std::io::Error| self.error(format!("reading {}: {e}", path.display()));
        let mut file = std::fs::File::open(&path).map_err(reading)?;
        let size = file.metadata().map_err(reading)?.len();
        let uploaded = self.runtime.block_on(crate::store::upload(&*self.store, &self.key(relative), &mut file, size));
        uploaded.map_err(|e| self.error(format!("uploading {relative}: {e}")))
    }

    /// Downloads `key` into the file `path`, part by part: to a temporary file, synced,
    /// then renamed, so a crash leaves no half file under the final name.
    fn get_to_file(&self, key: &Key, path: &Path) -> Result<u64, RemoteError> {
        let tmp = PathBuf::from(format!("{}.part", path.display()));
        let written: Result<u64, String> = self.runtime.block_on(async {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            }
            let mut file = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
            let written = crate::store::download(&*self.store, key, &mut file).await?;
            file.sync_all().map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, path).map_err(|e| e.to_string())?;
            Ok(written)
        });
        written.map_err(|e| self.error(format!("downloading {key} to {}: {e}", path.display())))
    }

    /// Uploads checkpoint `metadata` from the local directory `root`: its files (shared
    /// ones only if not already there), the commit records of earlier checkpoints that
    /// sinks wrote since, and its `_metadata` last.
    pub fn upload(&self, root: &Path, metadata: &CheckpointMetadata) -> Result<(), RemoteError> {
        let started = std::time::Instant::now();
        let mut uploaded = 0u64;
        for file in metadata.files() {
            let shared = file.path.starts_with("shared/");
            let uploaded_before = |known: &HashMap<String, u32>| known.get(&file.path) == Some(&file.crc32);
            if shared && uploaded_before(&self.shared.lock().unwrap_or_else(|e| e.into_inner())) {
                continue;
            }
            self.put(root, &file.path)?;
            uploaded += file.size;
            if shared {
                self.shared.lock().unwrap_or_else(|e| e.into_inner()).insert(file.path.clone(), file.crc32);
            }
        }
        self.upload_commit_records(root)?;
        self.put(root, &format!("{}/{METADATA}", CheckpointStorage::checkpoint_dir(metadata.id)))?;
        tracing::debug!(checkpoint = metadata.id, url = %self.url, bytes = uploaded,
            duration_ms = started.elapsed().as_millis() as u64, "checkpoint uploaded");
        Ok(())
    }

    /// Sinks record their commits locally after a checkpoint completed; they reach the
    /// store with the next checkpoint. Until then a restore elsewhere treats that
    /// checkpoint's commits as unconfirmed and restores the one before (duplicates in a
    /// transactional Kafka sink's output, never loss).
    fn upload_commit_records(&self, root: &Path) -> Result<(), RemoteError> {
        for dir in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let name = dir.file_name().to_string_lossy().into_owned();
            if !name.starts_with("chk-") {
                continue;
            }
            for file in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
                let file_name = file.file_name().to_string_lossy().into_owned();
                if file_name.starts_with(commit_record_prefix()) {
                    let relative = format!("{name}/{file_name}");
                    if self.commit_records.lock().unwrap_or_else(|e| e.into_inner()).contains(&relative) {
                        continue;
                    }
                    self.put(root, &relative)?;
                    self.commit_records.lock().unwrap_or_else(|e| e.into_inner()).insert(relative);
                }
            }
        }
        Ok(())
    }

    /// Whether the store holds a complete checkpoint.
    pub fn has_complete_checkpoint(&self) -> Result<bool, RemoteError> {
        Ok(!self.complete_ids()?.is_empty())
    }

    /// The ids of the checkpoints complete in the store, newest first.
    fn complete_ids(&self) -> Result<Vec<u64>, RemoteError> {
        let mut ids: Vec<u64> = self
            .list("")?
            .iter()
            .filter_map(|key| self.relative(key))
            .filter_map(|relative| {
                let (dir, file) = relative.split_once('/')?;
                (file == METADATA).then_some(())?;
                dir.strip_prefix("chk-")?.parse().ok()
            })
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        Ok(ids)
    }

    /// Makes the checkpoints of the store that are newer than every complete one of the
    /// local directory `root` available there (all of them, not only the newest: a
    /// restore falls back to an earlier one when the newest turns out unusable or its
    /// sink commits unconfirmed, as it does locally). Returns the ids brought in.
    pub fn download_newer(&self, root: &Path) -> Result<Vec<u64>, RemoteError> {
        self.download_newer_logged(root, true)
    }

    /// As [`RemoteStore::download_newer`], logging each download at `info` only when
    /// `log` (a standby refreshing its copy every checkpoint logs at `debug`).
    pub fn download_newer_logged(&self, root: &Path, log: bool) -> Result<Vec<u64>, RemoteError> {
        let local = CheckpointStorage::new(root.to_path_buf()).newest_complete_id();
        let mut downloaded = Vec::new();
        for id in self.complete_ids()?.into_iter().take_while(|id| local.is_none_or(|local| *id > local)) {
            match self.download(root, id, log) {
                Ok(()) => downloaded.push(id),
                // Left incomplete (no `_metadata`): the restore skips it, and retention
                // removes it.
                Err(e) => tracing::warn!(checkpoint = id, error = %e, "cannot download the checkpoint; trying an older one"),
            }
        }
        Ok(downloaded)
    }

    /// Downloads checkpoint `id` into `root`: its files that are missing or differ, each
    /// checked against its size and CRC-32, its commit records, and its `_metadata` last.
    fn download(&self, root: &Path, id: u64, log: bool) -> Result<(), RemoteError> {
        let dir = CheckpointStorage::checkpoint_dir(id);
        // Fetched beside its final name, and renamed last: a local checkpoint is whole
        // when its `_metadata` is there, as in the store.
        let metadata_path = root.join(&dir).join(METADATA);
        let fetched = root.join(&dir).join(format!("{METADATA}.download"));
        self.get_to_file(&self.key(&format!("{dir}/{METADATA}")), &fetched)?;
        let metadata: CheckpointMetadata = super::storage::read_manifest(&fetched).map_err(|e| self.error(e))?;
        let started = std::time::Instant::now();
        let mut downloaded = 0u64;
        for file in metadata.files() {
            let path = root.join(&file.path);
            if super::storage::verify_file(&path, file).is_ok() {
                continue;
            }
            downloaded += self.get_to_file(&self.key(&file.path), &path)?;
            super::storage::verify_file(&path, file).map_err(|e| self.error(format!("downloaded {e}")))?;
        }
        for key in self.list(&dir)? {
            let Some(relative) = self.relative(&key) else { continue };
            if relative.rsplit('/').next().is_some_and(|name| name.starts_with(commit_record_prefix())) {
                self.get_to_file(&key, &root.join(&relative))?;
            }
        }
        std::fs::rename(&fetched, &metadata_path).map_err(|e| self.error(format!("{}: {e}", metadata_path.display())))?;
        let duration_ms = started.elapsed().as_millis() as u64;
        if log {
            tracing::info!(checkpoint = id, url = %self.url, bytes = downloaded, duration_ms, "checkpoint downloaded from the store");
        } else {
            tracing::debug!(checkpoint = id, url = %self.url, bytes = downloaded, duration_ms, "standby copy refreshed");
        }
        Ok(())
    }

    /// Records in the store that the job ran to completion (the next start, wherever
    /// it runs, begins a new line of checkpoints).
    pub fn mark_finished(&self, root: &Path) -> Result<(), RemoteError> {
        self.put(root, FINISHED)
    }

    pub fn is_finished(&self) -> bool {
        self.runtime.block_on(self.store.head(&self.key(FINISHED))).is_ok()
    }

    /// Deletes every checkpoint in the store (a fresh start): what weir wrote there,
    /// and nothing else.
    pub fn clear(&self) -> Result<(), RemoteError> {
        self.claim()?;
        for key in self.list("")? {
            self.runtime.block_on(self.store.delete(&key)).map_err(|e| self.error(format!("deleting {key}: {e}")))?;
        }
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).clear();
        Ok(())
    }

    #[cfg(test)]
    fn get(&self, key: &Key) -> Result<Vec<u8>, RemoteError> {
        self.runtime
            .block_on(async { self.store.get(key).await?.bytes().await })
            .map(|b| b.to_vec())
            .map_err(|e| self.error(format!("downloading {key}: {e}")))
    }

    /// Deletes from the store the checkpoints the local directory no longer keeps
    /// (older than its oldest kept one) and the shared files this process uploaded that
    /// none of the kept ones uses (shared files of earlier owners of the checkpoints
    /// stay: their checkpoints may still be the newest another member restores).
    pub fn retain(&self, local: &CheckpointStorage) -> Result<(), RemoteError> {
        let kept = local.kept();
        let Some(oldest) = kept.iter().map(|(id, _)| *id).min() else { return Ok(()) };
        let referenced: HashSet<&str> =
            kept.iter().flat_map(|(_, m)| m.files().map(|f| f.path.as_str())).collect();
        let mut doomed = Vec::new();
        for key in self.list("")? {
            let Some(relative) = self.relative(&key) else { continue };
            let top = relative.split('/').next().unwrap_or_default();
            let old_checkpoint = top.strip_prefix("chk-").and_then(|id| id.parse::<u64>().ok()).is_some_and(|id| id < oldest);
            let unused_shared = top == "shared"
                && !referenced.contains(relative.as_str())
                && self.shared.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&relative);
            if old_checkpoint || unused_shared {
                doomed.push(key);
            }
        }
        for key in doomed {
            self.runtime.block_on(self.store.delete(&key)).map_err(|e| self.error(format!("deleting {key}: {e}")))?;
            if let Some(relative) = self.relative(&key) {
                self.shared.lock().unwrap_or_else(|e| e.into_inner()).remove(&relative);
            }
        }
        Ok(())
    }
}

/// Undoes `object_store`'s percent-encoding of a path part (`#` in `count#0` is `%23`).
fn percent_decode(part: &str) -> String {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&part[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PART_BYTES;

    fn store(dir: &Path) -> RemoteStore {
        RemoteStore::open(&format!("file://{}", dir.display()), &BTreeMap::new()).unwrap()
    }

    #[test]
    fn keys_and_relative_paths_round_trip_through_the_stores_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let remote = store(&dir.path().join("p"));
        for relative in ["chk-00000001/count#0/state.ent", "shared/count#1/000012.sst", "chk-00000002/_metadata", "a%b/c d"] {
            assert_eq!(remote.relative(&remote.key(relative)).as_deref(), Some(relative));
        }
        assert_eq!(percent_decode("count%230%"), "count#0%");
    }

    #[test]
    fn what_is_put_comes_back_and_clear_removes_only_weirs_files() {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("local");
        std::fs::create_dir_all(local.join("chk-00000001/op#0")).unwrap();
        std::fs::write(local.join("chk-00000001/op#0/state.ent"), b"state").unwrap();
        let remote = store(&dir.path().join("remote"));
        remote.put(&local, "chk-00000001/op#0/state.ent").unwrap();
        assert_eq!(remote.get(&remote.key("chk-00000001/op#0/state.ent")).unwrap(), b"state");
        assert!(remote.complete_ids().unwrap().is_empty(), "no _metadata: not complete");
        remote.mark_finished(&{
            std::fs::write(local.join(FINISHED), b"").unwrap();
            local.clone()
        })
        .unwrap();
        assert!(remote.is_finished());
        remote.clear().unwrap();
        assert!(remote.list("").unwrap().is_empty());
        // A foreign object makes the store refuse to be claimed or cleared.
        std::fs::write(dir.path().join("remote/notes.txt"), b"mine").unwrap();
        assert!(remote.claim().unwrap_err().to_string().contains("`notes.txt`, which weir did not write"));
        assert!(remote.clear().is_err());
        assert!(dir.path().join("remote/notes.txt").exists());
    }

    #[test]
    fn a_file_larger_than_a_part_goes_up_and_comes_back_in_parts() {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("local");
        std::fs::create_dir_all(local.join("shared/op#0")).unwrap();
        let bytes: Vec<u8> = (0..PART_BYTES * 2 + 12_345).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(local.join("shared/op#0/000007.sst"), &bytes).unwrap();
        let remote = store(&dir.path().join("remote"));
        remote.put(&local, "shared/op#0/000007.sst").unwrap();
        let back = dir.path().join("other/000007.sst");
        let written = remote.get_to_file(&remote.key("shared/op#0/000007.sst"), &back).unwrap();
        assert_eq!(written, bytes.len() as u64);
        assert!(std::fs::read(&back).unwrap() == bytes, "the bytes differ");
        assert!(!dir.path().join("other/000007.sst.part").exists());
    }

    #[test]
    fn a_shared_file_of_the_same_name_from_an_earlier_owner_is_uploaded_again() {
        use crate::checkpoint::TaskState;
        use crate::state::snapshot::{FileEntry, file_crc};
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = |owner: &str, id: u64, content: &[u8]| {
            let root = dir.path().join(owner);
            std::fs::create_dir_all(root.join("shared/op#0")).unwrap();
            std::fs::write(root.join("shared/op#0/000016.sst"), content).unwrap();
            let entry = FileEntry {
                path: "shared/op#0/000016.sst".into(),
                size: content.len() as u64,
                crc32: file_crc(&root.join("shared/op#0/000016.sst")).unwrap(),
            };
            let tasks = [("op#0".to_string(), TaskState::Sink { state: serde_json::Value::Null, channel_state: Some(entry) })];
            let metadata = CheckpointMetadata { format: 1, job: "j".into(), id, created_ms: 0, tasks: tasks.into() };
            (root, metadata)
        };
        let complete = |remote: &Arc<RemoteStore>, (root, metadata): (PathBuf, CheckpointMetadata)| {
            CheckpointStorage::with_remote(root, remote.clone()).complete(&metadata).unwrap()
        };
        let first = Arc::new(store(&dir.path().join("remote")));
        complete(&first, checkpoint("first", 1, b"the first owner's SST"));
        // A later owner (another process) made a different file of the same number.
        let second = Arc::new(store(&dir.path().join("remote")));
        complete(&second, checkpoint("second", 2, b"the second owner's own SST"));
        assert_eq!(second.get(&second.key("shared/op#0/000016.sst")).unwrap(), b"the second owner's own SST");
        // Within one process, an unchanged file is not uploaded twice: a later checkpoint
        // of the second owner finds it by name and checksum.
        let key = second.key("shared/op#0/000016.sst");
        second.runtime.block_on(second.store.put(&key, PutPayload::from(b"moved aside".to_vec()))).unwrap();
        complete(&second, checkpoint("second", 3, b"the second owner's own SST"));
        assert_eq!(second.get(&second.key("shared/op#0/000016.sst")).unwrap(), b"moved aside");
    }
}
