//! # Savepoints
//!
//! A savepoint is a portable, self-describing snapshot of a job: per operator uid, every
//! keyed state entry and timer in the backend-independent entry-file format (keys carry
//! their key group), the positions of the sources, the sinks' transaction state, and a
//! manifest: job name, component digests, WIT version, each operator's state layout
//! version and declared states, max parallelism and creation time. It restores into
//! either backend and at any parallelism up to the max parallelism: each new subtask
//! takes the key groups of its range from every file of its operator.
//!
//! ```text
//! <dir>/_savepoint            header line with crc32, then the JSON manifest
//! <dir>/count#0/state.ent     keyed state of subtask 0 when the savepoint was taken
//! <dir>/count#0/timers.ent
//! ```

pub mod compat;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::state::snapshot::{EMPTY_SIZE, read_entries};
use crate::checkpoint::storage::{read_manifest, verify_file};
use crate::checkpoint::{FileEntry, TaskState, operator_state_files, read_operator_lists};
use crate::keygroup::KeyGroupRange;
use crate::state::key;

// The manifest is written by the checkpoint coordinator (a floor below), so it lives
// there; its names stay available here.
pub use crate::checkpoint::manifest::{MANIFEST, OperatorManifest, SavepointManifest, WIT_VERSION};

/// A savepoint that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("savepoint {dir}: {message}")]
pub struct SavepointError {
    pub dir: PathBuf,
    pub message: String,
}

/// A savepoint read from disk and checked.
#[derive(Debug, Clone)]
pub struct Savepoint {
    pub dir: PathBuf,
    pub manifest: SavepointManifest,
}

impl Savepoint {
    /// Reads a savepoint and checks the manifest's checksum and every file's size and
    /// checksum, so a damaged savepoint is refused before anything is restored.
    pub fn load(dir: &Path) -> Result<Savepoint, SavepointError> {
        let error = |message: String| SavepointError { dir: dir.into(), message };
        if !dir.join(MANIFEST).is_file() {
            return Err(error(format!("no {MANIFEST} file: not a savepoint, or one that never completed")));
        }
        let manifest: SavepointManifest = read_manifest(&dir.join(MANIFEST)).map_err(error)?;
        if manifest.format != 1 {
            return Err(error(format!("unknown savepoint format {}", manifest.format)));
        }
        let savepoint = Savepoint { dir: dir.into(), manifest };
        for file in savepoint.files() {
            verify_file(&dir.join(&file.path), file).map_err(error)?;
        }
        Ok(savepoint)
    }

    /// Loads a savepoint in an object store (`s3://bucket/prefix`, ...: where a cluster
    /// writes them), downloading it into `into` first.
    pub fn fetch(url: &str, options: &BTreeMap<String, String>, into: &Path) -> Result<Savepoint, SavepointError> {
        let error = |message: String| SavepointError { dir: url.into(), message };
        let store = crate::checkpoint::remote::RemoteStore::open(url, options).map_err(|e| error(e.to_string()))?;
        if !store.exists(MANIFEST).map_err(|e| error(e.to_string()))? {
            return Err(error(format!("no {MANIFEST} object: not a savepoint, or one that never completed")));
        }
        let bytes = store.download_tree(into).map_err(|e| error(e.to_string()))?;
        tracing::info!(%url, into = %into.display(), bytes, "savepoint downloaded");
        Savepoint::load(into)
    }

    /// The savepoint at `at` for job `spec`: a directory (relative to the job file), or
    /// an object store URL (with the options of the job's checkpoint store), downloaded
    /// into `<work dir>/downloaded-savepoints/` first.
    pub fn open_for(spec: &crate::job::JobSpec, at: &Path) -> Result<Savepoint, SavepointError> {
        let text = at.to_string_lossy();
        if !crate::store::is_url(&text) {
            return Savepoint::load(&spec.resolve(at));
        }
        let options = spec.checkpoint.as_ref().map(|c| c.store_options.clone()).unwrap_or_default();
        let name = text.trim_end_matches('/').rsplit('/').next().unwrap_or("savepoint").to_string();
        Savepoint::fetch(&text, &options, &spec.work_dir().join("downloaded-savepoints").join(name))
    }

    fn files(&self) -> impl Iterator<Item = &FileEntry> {
        self.manifest.tasks.values().flat_map(|t| match t {
            TaskState::Operator { state, timers, operator_state, .. } => {
                state.iter().chain(std::iter::once(timers)).chain(operator_state.iter()).collect()
            }
            _ => Vec::new(),
        })
    }

    /// The saved subtasks of operator `uid`: (state files, timers file, watermark).
    fn subtasks(&self, uid: &str) -> Vec<(&[FileEntry], &FileEntry, i64)> {
        self.manifest
            .tasks
            .iter()
            .filter(|(task, _)| task.rsplit_once('#').is_some_and(|(u, _)| u == uid))
            .filter_map(|(_, state)| match state {
                TaskState::Operator { state, timers, watermark, .. } => Some((state.as_slice(), timers, *watermark)),
                _ => None,
            })
            .collect()
    }

    /// The state entries and encoded timers of operator `uid` in key groups `range`,
    /// and the watermark to resume at (the least over the saved subtasks).
    pub fn read_operator(&self, uid: &str, range: KeyGroupRange) -> Result<RestoredOperator, SavepointError> {
        let error = |message: String| SavepointError { dir: self.dir.clone(), message };
        let mut restored = RestoredOperator { entries: Vec::new(), timers: Vec::new(), watermark: None, keys: BTreeSet::new() };
        for (state, timers, watermark) in self.subtasks(uid) {
            restored.watermark = Some(restored.watermark.map_or(watermark, |w: i64| w.min(watermark)));
            for file in state {
                read_entries(&self.dir.join(&file.path), |k, v| {
                    if let Some(d) = key::decode(&k).filter(|d| range.contains(d.key_group)) {
                        restored.keys.insert(d.key.to_vec());
                        restored.entries.push((k, v));
                    }
                })
                .map_err(error)?;
            }
            read_entries(&self.dir.join(&timers.path), |k, _| {
                let kg = k.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                if kg.is_some_and(|kg| range.contains(kg)) {
                    restored.timers.push(k);
                }
            })
            .map_err(error)?;
        }
        Ok(restored)
    }

    /// The operator lists of every saved subtask of operator `uid`, in subtask order.
    pub fn read_operator_lists(&self, uid: &str) -> Result<Vec<crate::state::operator::Saved>, SavepointError> {
        let error = |message: String| SavepointError { dir: self.dir.clone(), message };
        read_operator_lists(&self.manifest.tasks, uid, |file| self.dir.join(&file.path)).map_err(error)
    }

    /// Operators with saved state (entries or timers), told from file sizes without
    /// reading the files: an entry file without entries is [`EMPTY_SIZE`] bytes.
    pub fn operators_with_state(&self) -> Vec<String> {
        self.manifest
            .operators
            .keys()
            .filter(|uid| {
                self.subtasks(uid).iter().any(|(state, timers, _)| {
                    timers.size > EMPTY_SIZE || state.iter().any(|f| f.size > EMPTY_SIZE)
                }) || !operator_state_files(&self.manifest.tasks, uid).iter().all(Option::is_none)
            })
            .cloned()
            .collect()
    }

    /// A human-readable summary: operators, states, entry counts, sizes, versions.
    pub fn inspect(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let m = &self.manifest;
        writeln!(out, "savepoint of job `{}` at {} (created {} ms since the epoch)", m.job, self.dir.display(), m.created_ms)?;
        writeln!(out, "  contract {}, max parallelism {}", m.wit, m.max_parallelism)?;
        for (uid, op) in &m.operators {
            writeln!(
                out,
                "  operator `{uid}`: parallelism {}, component {}, state version {}",
                op.parallelism, op.component, op.state_version
            )?;
            let all = KeyGroupRange { start: 0, end: u16::MAX };
            let restored = self.read_operator(uid, all).map_err(std::io::Error::other)?;
            let mut per_state: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
            for (k, v) in &restored.entries {
                if let Some(d) = key::decode(k) {
                    let e = per_state.entry((d.kind.to_string(), d.name.to_string())).or_default();
                    e.0 += 1;
                    e.1 += (k.len() + v.len()) as u64;
                }
            }
            for state in &op.states {
                per_state.entry((state.kind.clone(), state.name.clone())).or_default();
            }
            for ((kind, name), (entries, bytes)) in per_state {
                writeln!(out, "    {kind} state `{name}`: {entries} entries, {bytes} bytes")?;
            }
            writeln!(out, "    timers: {}, keys: {}", restored.timers.len(), restored.keys.len())?;
            let saved = self.read_operator_lists(uid).map_err(std::io::Error::other)?;
            // Broadcast state is the same on every subtask: the first copy stands for all.
            let mut maps: Vec<&crate::state::operator::BroadcastMap> = Vec::new();
            for map in saved.iter().flat_map(|s| &s.maps) {
                if !maps.iter().any(|m| m.name == map.name) {
                    maps.push(map);
                }
            }
            for map in maps {
                let bytes: usize = map.entries.iter().map(|(k, v)| k.len() + v.len()).sum();
                writeln!(out, "    broadcast state `{}`: {} entries, {bytes} bytes (on every subtask)", map.name, map.entries.len())?;
            }
            let mut lists: Vec<(String, &'static str, u64, u64)> = Vec::new();
            for list in saved.into_iter().flat_map(|s| s.lists) {
                let mode = match list.redistribution {
                    crate::state::operator::Redistribution::Split => "split",
                    crate::state::operator::Redistribution::Union => "union",
                };
                let bytes: u64 = list.items.iter().map(|i| i.len() as u64).sum();
                match lists.iter_mut().find(|l| l.0 == list.name) {
                    Some(l) => (l.2, l.3) = (l.2 + list.items.len() as u64, l.3 + bytes),
                    None => lists.push((list.name, mode, list.items.len() as u64, bytes)),
                }
            }
            for (name, mode, items, bytes) in lists {
                writeln!(out, "    operator list `{name}` ({mode}): {items} items, {bytes} bytes")?;
            }
        }
        for (task, state) in &m.tasks {
            match state {
                TaskState::Source { position, .. } => writeln!(out, "  source {task}: position {position}")?,
                TaskState::Sink { state, .. } => writeln!(out, "  sink {task}: {state}")?,
                TaskState::Operator { .. } => {}
            }
        }
        Ok(())
    }

    /// Writes operator `uid`'s state as JSON lines: key group, state kind and name, key,
    /// user key (maps), and value. Values that are JSON (as the Rust SDK writes them)
    /// are embedded; others are strings. TTL expiry stamps are split off.
    pub fn export(&self, uid: &str, out: &mut dyn Write) -> Result<u64, SavepointError> {
        let error = |message: String| SavepointError { dir: self.dir.clone(), message };
        let op = self.manifest.operators.get(uid).ok_or_else(|| {
            let known: Vec<&str> = self.manifest.operators.keys().map(String::as_str).collect();
            error(format!("no operator `{uid}` (the savepoint has: {})", known.join(", ")))
        })?;
        let ttl_states: BTreeSet<(&str, &str)> = op
            .states
            .iter()
            .filter(|s| s.ttl_ms.is_some())
            .map(|s| (s.kind.as_str(), s.name.as_str()))
            .collect();
        let restored = self.read_operator(uid, KeyGroupRange { start: 0, end: u16::MAX })?;
        let text = |bytes: &[u8]| -> serde_json::Value {
            serde_json::from_slice(bytes)
                .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()))
        };
        let mut lines = 0;
        for (k, v) in &restored.entries {
            let Some(d) = key::decode(k) else { continue };
            let kind = d.kind.to_string();
            let ttl = ttl_states.contains(&(kind.as_str(), d.name));
            let unstamp = |b: &[u8]| -> (Option<i64>, serde_json::Value) {
                if ttl && b.len() >= 8 {
                    (Some(u64::from_be_bytes(b[..8].try_into().expect("8")) as i64), text(&b[8..]))
                } else {
                    (None, text(b))
                }
            };
            let mut line = serde_json::json!({
                "key_group": d.key_group,
                "kind": kind,
                "state": d.name,
                "key": String::from_utf8_lossy(d.key),
            });
            if d.kind == key::StateKind::Map {
                line["user_key"] = text(d.user_key);
            }
            if d.kind == key::StateKind::List {
                let items = key::list_items(v).unwrap_or_default();
                line["value"] = items.iter().map(|i| unstamp(i).1).collect();
            } else {
                let (expires, value) = unstamp(v);
                line["value"] = value;
                if let Some(expires) = expires {
                    line["expires_ms"] = expires.into();
                }
            }
            serde_json::to_writer(&mut *out, &line).map_err(|e| error(e.to_string()))?;
            out.write_all(b"\n").map_err(|e| error(e.to_string()))?;
            lines += 1;
        }
        Ok(lines)
    }
}

/// One new subtask's share of an operator's savepoint.
pub struct RestoredOperator {
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    pub timers: Vec<Vec<u8>>,
    /// The least watermark of the saved subtasks (`None` without saved subtasks).
    pub watermark: Option<i64>,
    /// Every key with state, for a migration pass.
    pub keys: BTreeSet<Vec<u8>>,
}

