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

use super::{CheckpointMetadata, FileEntry};

const METADATA: &str = "_metadata";
const HEADER: &str = "weir-checkpoint-v1 crc32=";
const FINISHED: &str = "FINISHED";

/// The checkpoint directory of a job.
#[derive(Debug, Clone)]
pub struct CheckpointStorage {
    root: PathBuf,
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
    pub fn new(root: PathBuf) -> Self {
        CheckpointStorage { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of checkpoint `id`, relative to the root.
    pub fn checkpoint_dir(id: u64) -> String {
        format!("chk-{id:08}")
    }

    /// Writes `metadata` into its checkpoint directory, atomically.
    pub fn write_metadata(&self, metadata: &CheckpointMetadata) -> std::io::Result<u64> {
        write_manifest(&self.root.join(Self::checkpoint_dir(metadata.id)), METADATA, metadata)
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
    pub fn latest(&self) -> Result<Option<CompletedCheckpoint>, String> {
        let mut problems = Vec::new();
        for (id, dir) in self.checkpoint_dirs() {
            if !dir.join(METADATA).exists() {
                continue;
            }
            match self.load(&dir) {
                Ok(checkpoint) => {
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
    pub fn retain(&self, retained: usize) {
        let mut kept = 0;
        let mut referenced = HashSet::new();
        for (id, dir) in self.checkpoint_dirs() {
            let complete = dir.join(METADATA).exists();
            if complete && kept < retained {
                kept += 1;
                if let Ok(checkpoint) = self.load_metadata_only(&dir) {
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

    /// Records that the job ran to completion: the next run starts fresh.
    pub fn mark_finished(&self) -> std::io::Result<()> {
        fs::create_dir_all(&self.root)?;
        fs::write(self.root.join(FINISHED), b"")
    }

    pub fn is_finished(&self) -> bool {
        self.root.join(FINISHED).exists()
    }

    /// Deletes every checkpoint (a fresh start).
    pub fn clear(&self) -> std::io::Result<()> {
        match fs::remove_dir_all(&self.root) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => fs::create_dir_all(&self.root),
        }
    }
}

/// Writes `value` as JSON to `dir/name` behind a header line with its CRC-32: to a
/// temporary file, synced, renamed, and the directory synced, so a crash leaves either
/// no file or a complete one. Returns the size of the JSON.
pub fn write_manifest<T: serde::Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<u64> {
    fs::create_dir_all(dir)?;
    let body = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let crc = crc32fast::hash(&body);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(format!("{HEADER}{crc:08x}\n").as_bytes())?;
    file.write_all(&body)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()?;
    Ok(body.len() as u64)
}

/// Reads a file written by [`write_manifest`], checking its header and checksum.
pub fn read_manifest<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let mut text = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut text))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let newline = text
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| format!("{}: no header line (truncated?)", path.display()))?;
    let header = String::from_utf8_lossy(&text[..newline]);
    let stored = header
        .strip_prefix(HEADER)
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| format!("{}: unknown header {header:?}", path.display()))?;
    let body = &text[newline + 1..];
    if crc32fast::hash(body) != stored {
        return Err(format!("{}: checksum mismatch (damaged or truncated)", path.display()));
    }
    serde_json::from_slice(body).map_err(|e| format!("{}: {e}", path.display()))
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

/// The CRC-32 of a whole file.
pub fn file_crc(path: &Path) -> std::io::Result<u32> {
    let mut file = File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}
