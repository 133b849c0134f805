//! # Checkpoints
//!
//! Asynchronous barrier snapshots, as in Apache Flink. The [`coordinator`] injects a
//! barrier at every source each `interval_ms`; each task aligns the barrier across its
//! inputs, snapshots what it owns (source position, keyed state, timers, watermark,
//! a sink's pending output) and acknowledges; when every task has acknowledged, the
//! checkpoint's metadata is written atomically and sinks commit their output for it.
//! See `docs/checkpoints.md` for the protocol, the on-disk layout and the guarantees.

pub mod channels;
pub mod coordinator;
pub mod manifest;
pub mod remote;
pub mod storage;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use coordinator::{Coordinator, CoordinatorHandle, Request};
pub use storage::{CheckpointStorage, CompletedCheckpoint};

pub use crate::stream::{BarrierKind, CheckpointBarrier};


/// The job file's `[checkpoint]` table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSettings {
    /// Where checkpoints go (relative to the job file). Default: `.weir/<job name>/checkpoints`.
    /// An object store URL (`s3://bucket/prefix`, `gs://`, `az://`, `file://`) keeps a
    /// copy there ([`remote`]), the local copy staying in the default directory.
    pub dir: Option<PathBuf>,
    /// Options of the object store (`endpoint`, `region`, `allow_http`, ...; see the
    /// `object_store` crate's builders). Secrets come from the environment only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub store_options: BTreeMap<String, String>,
    /// Time between checkpoints, in ms.
    pub interval_ms: u64,
    /// A checkpoint not complete after this long is declined.
    #[serde(default = "CheckpointSettings::default_timeout")]
    pub timeout_ms: u64,
    /// Least time between the end of one checkpoint and the start of the next.
    #[serde(default)]
    pub min_pause_ms: u64,
    /// How many completed checkpoints to keep.
    #[serde(default = "CheckpointSettings::default_retained")]
    pub retained: usize,
    /// Declined checkpoints in a row the job tolerates before it fails.
    #[serde(default = "CheckpointSettings::default_tolerable")]
    pub tolerable_failures: u32,
    /// `aligned` (the default) or `unaligned`: whether barriers wait behind the data
    /// queued in the channels or overtake it, storing it in the checkpoint (Flink's
    /// `execution.checkpointing.unaligned`). Savepoints are always aligned.
    #[serde(default)]
    pub mode: CheckpointMode,
    /// In `aligned` mode: a checkpoint still aligning this long after it started turns
    /// unaligned (Flink's `execution.checkpointing.aligned-checkpoint-timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alignment_timeout_ms: Option<u64>,
}

/// How checkpoint barriers travel (see `docs/checkpoints.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointMode {
    /// Barriers travel with the data: a task snapshots once the barrier has arrived on
    /// every input, holding back the inputs it has arrived on.
    #[default]
    Aligned,
    /// Barriers overtake the data queued in channels and output buffers; a task
    /// snapshots when the first barrier arrives, and the data that was ahead of the
    /// barriers is stored with the checkpoint and replayed first on restore.
    Unaligned,
}

impl CheckpointSettings {
    /// When a checkpoint triggered at `now` turns unaligned, if ever.
    pub fn unaligned_from(&self, now: std::time::Instant) -> Option<std::time::Instant> {
        match (self.mode, self.alignment_timeout_ms) {
            (CheckpointMode::Unaligned, _) => Some(now),
            (CheckpointMode::Aligned, Some(ms)) => Some(now + std::time::Duration::from_millis(ms)),
            (CheckpointMode::Aligned, None) => None,
        }
    }
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        CheckpointSettings {
            dir: None,
            store_options: BTreeMap::new(),
            interval_ms: 1000,
            timeout_ms: Self::default_timeout(),
            min_pause_ms: 0,
            retained: Self::default_retained(),
            tolerable_failures: Self::default_tolerable(),
            mode: CheckpointMode::Aligned,
            alignment_timeout_ms: None,
        }
    }
}

impl CheckpointSettings {
    fn default_timeout() -> u64 {
        60_000
    }
    fn default_retained() -> usize {
        2
    }
    fn default_tolerable() -> u32 {
        3
    }
}

/// Names a task in checkpoints: `uid#subtask`.
pub fn task_id(uid: &str, subtask: u32) -> String {
    format!("{uid}#{subtask}")
}

pub use crate::state::snapshot::FileEntry;

/// What one task saved for a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TaskState {
    Source {
        /// Where to resume reading (source-specific).
        position: serde_json::Value,
        /// The largest timestamp seen per split (partition), for the watermarks.
        #[serde(default, alias = "max_timestamp", with = "split_timestamps")]
        max_timestamps: BTreeMap<u32, i64>,
    },
    Operator {
        /// The subtask's watermark at the barrier.
        watermark: i64,
        /// The operator's state layout version (see the WIT `state-version`).
        #[serde(default)]
        state_version: u32,
        /// The states the operator declared.
        #[serde(default)]
        states: Vec<crate::state::DeclaredState>,
        /// `memory` or `rocksdb`: which files hold keyed state.
        backend: String,
        /// Keyed state files (an entry file, or a RocksDB checkpoint's files).
        state: Vec<FileEntry>,
        /// The timers, as an entry file.
        timers: FileEntry,
        /// The operator (non-keyed) lists, as an entry file; none when they hold
        /// nothing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        operator_state: Option<FileEntry>,
        /// The data an unaligned checkpoint's barriers overtook on the subtask's input
        /// channels ([`channels`]); none when aligned or nothing was in flight.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel_state: Option<FileEntry>,
        /// A state migration still in progress: where its walk stands.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        migration: Option<PendingMigration>,
    },
    Sink {
        /// The sink's own transaction state.
        state: serde_json::Value,
        /// As for operators: the data an unaligned checkpoint's barriers overtook.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel_state: Option<FileEntry>,
    },
}

/// A state migration of an operator subtask from version `from`, in progress (see
/// `task::migration`): where its walk through the state stands (`cursor`) and, in
/// `keys`, the keys already migrated ahead of it (key group, big-endian, then the key).
/// Checkpoints written before the walk had a cursor have none, and `keys` lists the
/// keys still to migrate instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingMigration {
    pub from: u32,
    pub keys: FileEntry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Vec<u8>>,
}

/// The metadata of a completed checkpoint, written last and atomically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    pub format: u32,
    pub job: String,
    pub id: u64,
    pub created_ms: i64,
    pub tasks: BTreeMap<String, TaskState>,
}

impl TaskState {
    /// Whether it records in-flight data its barriers overtook (unaligned).
    pub fn has_channel_state(&self) -> bool {
        match self {
            TaskState::Operator { channel_state, .. } | TaskState::Sink { channel_state, .. } => channel_state.is_some(),
            TaskState::Source { .. } => false,
        }
    }
}

impl CheckpointMetadata {
    /// Every file the checkpoint refers to.
    pub fn files(&self) -> impl Iterator<Item = &FileEntry> {
        self.tasks.values().flat_map(|t| match t {
            TaskState::Operator { state, timers, operator_state, channel_state, migration, .. } => state
                .iter()
                .chain(std::iter::once(timers))
                .chain(operator_state)
                .chain(channel_state)
                .chain(migration.as_ref().map(|m| &m.keys))
                .collect::<Vec<_>>(),
            TaskState::Sink { channel_state, .. } => channel_state.iter().collect(),
            TaskState::Source { .. } => Vec::new(),
        })
    }
}

impl CheckpointMetadata {
    /// The bytes of in-flight data (channel state) the checkpoint holds.
    pub fn in_flight_bytes(&self) -> u64 {
        self.tasks
            .values()
            .filter_map(|t| match t {
                TaskState::Operator { channel_state, .. } | TaskState::Sink { channel_state, .. } => channel_state.as_ref(),
                TaskState::Source { .. } => None,
            })
            .map(|f| f.size)
            .sum()
    }
}

/// Per-split timestamps as a list of pairs: `TaskState` is an internally tagged enum,
/// whose buffered content cannot turn JSON's string map keys back into numbers.
/// Checkpoints and savepoints from before per-split watermarks hold one
/// `max_timestamp`, which becomes split 0's.
mod split_timestamps {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(map: &BTreeMap<u32, i64>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Saved {
        Splits(Vec<(u32, i64)>),
        Single(Option<i64>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<u32, i64>, D::Error> {
        Ok(match Saved::deserialize(deserializer)? {
            Saved::Splits(splits) => splits.into_iter().collect(),
            Saved::Single(max) => max.map(|t| (0, t)).into_iter().collect(),
        })
    }
}

/// The operator-state file of every saved subtask of operator `uid`, in subtask order
/// (`None` for a subtask whose lists were empty).
pub fn operator_state_files<'a>(tasks: &'a BTreeMap<String, TaskState>, uid: &str) -> Vec<Option<&'a FileEntry>> {
    let mut saved: Vec<(u32, Option<&FileEntry>)> = tasks
        .iter()
        .filter_map(|(task, state)| {
            let (u, subtask) = task.rsplit_once('#')?;
            let TaskState::Operator { operator_state, .. } = state else { return None };
            (u == uid).then_some((subtask.parse().ok()?, operator_state.as_ref()))
        })
        .collect();
    saved.sort_by_key(|(subtask, _)| *subtask);
    saved.into_iter().map(|(_, file)| file).collect()
}

/// The operator lists of every saved subtask of operator `uid` in `tasks` (a checkpoint's
/// or savepoint's), in subtask order; `path` locates a file.
pub fn read_operator_lists(
    tasks: &BTreeMap<String, TaskState>,
    uid: &str,
    path: impl Fn(&FileEntry) -> PathBuf,
) -> Result<Vec<crate::state::operator::Saved>, String> {
    operator_state_files(tasks, uid)
        .into_iter()
        .map(|file| {
            let Some(file) = file else { return Ok(Default::default()) };
            let mut entries = Vec::new();
            crate::state::snapshot::read_entries(&path(file), |k, v| entries.push((k, v)))?;
            crate::state::operator::OperatorState::decode(entries).map_err(|e| e.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_states_keep_per_split_timestamps_and_read_the_single_one_of_older_versions() {
        let state = TaskState::Source { position: serde_json::json!(1), max_timestamps: BTreeMap::from([(0, 5), (65536, 7)]) };
        let text = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<TaskState>(&text).unwrap(), state);
        let older = r#"{"kind":"source","position":1,"max_timestamp":9}"#;
        let TaskState::Source { max_timestamps, .. } = serde_json::from_str(older).unwrap() else { panic!() };
        assert_eq!(max_timestamps, BTreeMap::from([(0, 9)]));
    }
}

/// What tasks tell the coordinator.
#[derive(Debug)]
pub enum CoordinatorMessage {
    /// `task` has durably written its part of checkpoint `id`.
    Ack { id: u64, task: String, state: TaskState },
    /// `task` could not write its part of checkpoint `id`.
    Decline { id: u64, task: String, reason: String },
    /// An upgraded operator subtask `task` runs the new component of upgrade `id` (its
    /// part of the in-place savepoint is still being written, and acknowledged later).
    Swapped { id: u64, task: String },
    /// `task` reached the end of its input. A source says where it ended (`state`), which
    /// stands for its part of every later checkpoint (Flink's checkpoints after tasks
    /// finished, FLIP-147, for sources); any other task ends checkpointing.
    Finished { task: String, state: Option<TaskState> },
}
