//! The manifest of a savepoint (`_savepoint`): what the checkpoint coordinator writes
//! when a savepoint completes, and what [`crate::savepoint`] reads back to restore it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::TaskState;
use super::storage::write_manifest;
use crate::state::DeclaredState;

/// The manifest's file name.
pub const MANIFEST: &str = "_savepoint";
/// The newest contract version of the host that wrote the savepoint. State is laid out
/// the same way for every contract version, so any version's components restore it.
pub const WIT_VERSION: &str = "weir:operator@0.3.0";

/// What a savepoint says of one operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorManifest {
    pub parallelism: u32,
    /// Digest of the component, or `native:<name>`.
    pub component: String,
    /// The state layout version the operator reported.
    #[serde(default)]
    pub state_version: u32,
    #[serde(default)]
    pub states: Vec<DeclaredState>,
}

/// The manifest of a savepoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavepointManifest {
    pub format: u32,
    pub job: String,
    pub created_ms: i64,
    pub wit: String,
    pub max_parallelism: u32,
    pub operators: BTreeMap<String, OperatorManifest>,
    /// Every task's saved state, by task id (`uid#subtask`).
    pub tasks: BTreeMap<String, TaskState>,
}

impl SavepointManifest {
    /// Builds a manifest from the tasks' acknowledgements; state versions and
    /// declared states come from the operator subtasks.
    pub fn new(
        job: &str,
        max_parallelism: u32,
        mut operators: BTreeMap<String, OperatorManifest>,
        tasks: BTreeMap<String, TaskState>,
    ) -> Self {
        for (task, state) in &tasks {
            if let TaskState::Operator { state_version, states, .. } = state {
                let uid = task.rsplit_once('#').map_or(task.as_str(), |(uid, _)| uid);
                if let Some(op) = operators.get_mut(uid) {
                    op.state_version = *state_version;
                    let mut all: BTreeSet<DeclaredState> = op.states.drain(..).collect();
                    all.extend(states.iter().cloned());
                    op.states = all.into_iter().collect();
                }
            }
        }
        SavepointManifest {
            format: 1,
            job: job.into(),
            created_ms: crate::clock::now_ms(),
            wit: WIT_VERSION.into(),
            max_parallelism,
            operators,
            tasks,
        }
    }

    /// Writes the manifest into `dir`, atomically, last.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        write_manifest(dir, MANIFEST, self).map(|_| ())
    }
}
