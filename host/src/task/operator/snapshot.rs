//! Barriers and snapshots: what an operator subtask writes for a checkpoint or
//! savepoint (captured at the barrier, written on a thread of its own), and the
//! in-flight data of unaligned checkpoints.

use super::*;

/// An operator snapshot captured at a barrier, waiting to be written.
pub(super) struct Capture {
    writer: Box<dyn crate::state::SnapshotWriter>,
    timers: Box<dyn crate::state::SnapshotWriter>,
    watermark: i64,
    state_version: u32,
    states: Vec<crate::state::DeclaredState>,
    backend: String,
    /// The operator lists' entries.
    operator_state: Vec<(Vec<u8>, Vec<u8>)>,
    /// Where a migration in progress stands.
    migration: Option<MigrationProgress>,
    target: SnapshotTarget,
}

impl Capture {
    /// The state version of what was captured.
    pub(super) fn state_version(&self) -> u32 {
        self.state_version
    }

    /// Writes the state and timer files and describes them.
    pub(super) fn write(self) -> Result<TaskState, String> {
        let state = self.writer.write()?;
        let timers = self.timers.write()?.pop().ok_or("the timers' snapshot wrote no file")?;
        let operator_state = match self.operator_state.is_empty() {
            true => None,
            false => {
                let relative = format!("{}/operator.ent", self.target.task_dir);
                let entries = self.operator_state.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
                Some(write_file(&self.target.root, &relative, entries)?)
            }
        };
        let migration = match self.migration {
            None => None,
            Some(MigrationProgress { from, cursor, seen }) => {
                let relative = format!("{}/migration.ent", self.target.task_dir);
                let entries = seen.iter().map(|k| (k.as_slice(), &[][..]));
                let keys = write_file(&self.target.root, &relative, entries)?;
                Some(PendingMigration { from, keys, cursor: Some(cursor) })
            }
        };
        Ok(TaskState::Operator {
            watermark: self.watermark,
            state_version: self.state_version,
            states: self.states,
            backend: self.backend,
            state,
            timers,
            operator_state,
            channel_state: None,
            migration,
        })
    }
}

impl OperatorTask {
    /// The barrier has arrived on every open input (or the first one, unaligned):
    /// snapshot (or upgrade), then forward the barrier.
    pub(super) fn on_barrier(&mut self, barrier: CheckpointBarrier, unaligned: bool) -> Result<(), TaskError> {
        tracing::debug!(operator = %self.uid, subtask = self.subtask, checkpoint = barrier.id, unaligned, "barrier");
        match &barrier.kind {
            BarrierKind::Upgrade { dir, operator } if **operator == *self.uid => {
                let dir = (**dir).clone();
                self.serve_commands();
                match self.staged.take_if(|(id, _)| *id == barrier.id) {
                    Some((_, plugin)) => self.upgrade(barrier.id, dir, &plugin),
                    // Not one of the subtasks upgraded (a canary's other subtasks): its
                    // part of the in-place savepoint, as any other task's.
                    None => self.snapshot(&barrier, unaligned),
                }
            }
            _ => self.snapshot(&barrier, unaligned),
        }
        if self.router.barrier(&barrier).is_err() {
            self.control.cancel();
        }
        Ok(())
    }

    /// The data unaligned checkpoint `id`'s barriers overtook: to the thread writing
    /// the snapshot.
    pub(super) fn channel_state_ready(&mut self, id: u64, state: ChannelState) {
        tracing::debug!(operator = %self.uid, subtask = self.subtask, checkpoint = id, records = state.records(), "in-flight data recorded");
        if let Some((_, channels)) = self.awaiting_channels.take_if(|(awaited, _)| *awaited == id) {
            let _ = channels.send(state);
        }
    }

    /// Where this subtask's part of a checkpoint or savepoint goes.
    pub(super) fn target(&self, barrier: &CheckpointBarrier) -> Option<(String, SnapshotTarget)> {
        let cp = self.checkpointing.as_ref()?;
        let task = cp.task.clone();
        let target = match barrier.kind.savepoint_dir() {
            None => SnapshotTarget {
                root: cp.root.clone(),
                task_dir: format!("{}/{task}", CheckpointStorage::checkpoint_dir(barrier.id)),
                shared_dir: format!("shared/{task}"),
            },
            Some(dir) => SnapshotTarget { root: dir.clone(), task_dir: task.clone(), shared_dir: String::new() },
        };
        Some((task, target))
    }

    /// Captures what an operator snapshot holds (keyed state, timers, watermark, state
    /// version and declared states) as it is now; the slow part, writing the files, is
    /// left to [`Capture::write`]. Savepoints use the portable format. First the logic
    /// writes what it keeps in memory (`snapshot-state` for checkpoint, savepoint or
    /// upgrade `id`).
    pub(super) fn capture(&mut self, id: u64, target: SnapshotTarget, portable: bool) -> Result<Capture, String> {
        if let Err(failure) = self.logic.snapshot_state(id) {
            let reason = format!("snapshot-state of operator `{}` failed: {failure}", self.uid);
            // A guest that trapped, ran past its deadline or out of memory cannot be
            // called again: the task fails now, naming the cause, instead of at its next
            // element with wasmtime's "cannot enter component instance". One that
            // returned an error only declines this checkpoint.
            if matches!(failure, OperatorFailure::Trapped(_) | OperatorFailure::Deadline { .. } | OperatorFailure::OutOfMemory { .. }) {
                self.control.fail(self.failure(Doing::SnapshotState(id), failure));
            }
            return Err(reason);
        }
        // A savepoint restores into any component: its state is all at one version.
        if let Some(migration) = self.migration.as_mut().filter(|_| portable) {
            tracing::info!(operator = %self.uid, subtask = self.subtask, "completing the state migration for a savepoint");
            let done = migration.all(self.logic.as_mut());
            let from = migration.from;
            self.migration = None;
            if let Err(e) = done {
                let error = self.failure(Doing::MigratingKey(from, &e.key), e.failure);
                let reason = error.to_string();
                self.control.fail(error);
                return Err(reason);
            }
        }
        let migration = self.migration.as_ref().map(Migration::progress);
        let state_version = self.logic.state_version().map_err(|e| e.to_string())?;
        let ctx = self.logic.context();
        let backend = if portable { "portable".to_string() } else { ctx.state.backend().name().to_string() };
        let writer = if portable {
            ctx.state.backend_mut().export(&target, "state.ent")
        } else {
            ctx.state.backend_mut().snapshot(&target)
        }
        .map_err(|e| e.to_string())?;
        Ok(Capture {
            writer,
            timers: ctx.timers.snapshot(&target).map_err(|e| e.to_string())?,
            watermark: ctx.watermark,
            state_version,
            states: ctx.state.declared(),
            backend,
            operator_state: ctx.operator_state.entries(),
            migration,
            target,
        })
    }

    /// Snapshots for a checkpoint or savepoint: captured now, written on another
    /// thread, which then acknowledges (or declines) it. An unaligned checkpoint's
    /// thread also waits for the data its barriers overtook (`awaiting_channels`) and
    /// writes it beside the state.
    pub(super) fn snapshot(&mut self, barrier: &CheckpointBarrier, unaligned: bool) {
        let Some((task, target)) = self.target(barrier) else { return };
        let Some(coordinator) = self.checkpointing.as_ref().map(|cp| cp.coordinator.clone()) else { return };
        let id = barrier.id;
        let channels = unaligned.then(|| {
            let (tx, rx) = crossbeam_channel::bounded::<ChannelState>(1);
            self.awaiting_channels = Some((id, tx));
            rx
        });
        let channels_file = format!("{}/channels.ent", target.task_dir);
        let root = target.root.clone();
        let capture = self.capture(id, target, barrier.kind.savepoint_dir().is_some());
        let reply = coordinator.clone();
        let decline_task = task.clone();
        let spawned = std::thread::Builder::new().name(format!("snapshot {task}")).spawn(move || {
            let written = capture.and_then(Capture::write).and_then(|mut state| {
                let Some(channels) = channels else { return Ok(state) };
                let in_flight = channels
                    .recv()
                    .map_err(|_| "the subtask stopped before the barrier arrived on all its inputs".to_string())?;
                let TaskState::Operator { channel_state, .. } = &mut state else { unreachable!("an operator's state") };
                *channel_state = in_flight.write(&root, &channels_file)?;
                Ok(state)
            });
            let message = match written {
                Ok(state) => CoordinatorMessage::Ack { id, task, state },
                Err(reason) => CoordinatorMessage::Decline { id, task, reason },
            };
            let _ = reply.send(message);
        });
        if let Err(e) = spawned {
            let reason = format!("cannot start the snapshot thread: {e}");
            let _ = coordinator.send(CoordinatorMessage::Decline { id, task: decline_task, reason });
        }
    }
}
