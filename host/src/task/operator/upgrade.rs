//! Live upgrades: swapping the component in place at an upgrade barrier, the
//! coordinator's commands, and rolling back to the old component and its state.

use super::snapshot::Capture;
use super::*;
use crate::savepoint::compat::{StateLayout, compare};

impl OperatorTask {
    /// Swaps this subtask's component for `plugin` in place. The live state is captured
    /// first (copy-on-write tables, or a RocksDB checkpoint of hard links: no pause
    /// proportional to the state) and written on a thread of its own as the in-place
    /// savepoint, the rollback point, while a new instance takes over the state, timers
    /// and watermark, opens, and starts migrating if its state version is newer. Once
    /// swapped, the coordinator hears so and lets the sources read on; the written
    /// savepoint is acknowledged when it is on disk. Any failure of the swap rolls back
    /// at once and declines. The old instance is kept until the coordinator says every
    /// subtask succeeded.
    pub(super) fn upgrade(&mut self, id: u64, dir: std::path::PathBuf, plugin: &Plugin) {
        let Some(cp) = &self.checkpointing else { return };
        let (task, coordinator) = (cp.task.clone(), cp.coordinator.clone());
        let decline = |reason: String| {
            let _ = coordinator.send(CoordinatorMessage::Decline { id, task: task.clone(), reason });
        };
        let target = SnapshotTarget { root: dir.clone(), task_dir: task.clone(), shared_dir: String::new() };
        let started = Instant::now();
        let capture = match self.capture(id, target, true) {
            Ok(capture) => capture,
            Err(reason) => return decline(format!("capturing the in-place savepoint: {reason}")),
        };
        let from = capture.state_version();
        let saved_layout = StateLayout::new(from, &self.logic.context().state.declared());
        let rollback_point = RollbackPoint::write(capture, id, task.clone(), coordinator.clone());
        let captured_in = started.elapsed();
        let placeholder = self.logic.context().placeholder();
        let mut new: Box<dyn OperatorLogic> = match plugin.instantiate(placeholder, self.limits) {
            Ok(new) => Box::new(new),
            Err(e) => {
                // Nothing was swapped: the live state is the old instance's still. The
                // write goes on and is acknowledged to a coordinator that moved on.
                drop(rollback_point);
                return decline(e.to_string());
            }
        };
        OperatorContext::hand_over(self.logic.context(), new.context());
        let old = std::mem::replace(&mut self.logic, new);
        let operator_state = self.logic.context().operator_state.clone();
        // The new instance takes over state as from a savepoint: its operator lists
        // (the old instance's, written by its snapshot-state) count as restored.
        self.logic.context().operator_state.mark_restored();
        let mut previous = Previous { id, logic: old, root: dir, rollback_point, operator_state };
        // The first keys migrate now, within a short budget, so that a component whose
        // migration fails is refused (and rolled back) here; the rest migrate lazily.
        let swapped = self
            .logic
            .open()
            .map_err(|failure| failure.to_string())
            .and_then(|()| self.check_layout(&saved_layout))
            .and_then(|()| Migration::start(self.logic.as_mut(), from).map_err(|failure| failure.to_string()))
            .and_then(|mut migration| {
                if let Some(m) = migration.as_mut() {
                    m.for_at_most(self.logic.as_mut(), UPGRADE_MIGRATION_BUDGET).map_err(|e| {
                        format!("migrating the state of key {:?}: {}", String::from_utf8_lossy(&e.key), e.failure)
                    })?;
                }
                Ok(migration)
            });
        let migration = match swapped {
            Ok(migration) => migration,
            Err(failure) => {
                let reason = format!("the new component failed: {failure}");
                if let Err(e) = self.roll_back(&mut previous) {
                    self.control.fail(e);
                }
                self.logic = previous.logic;
                return decline(reason);
            }
        };
        let migrated = migration.as_ref().map_or(0, Migration::migrated);
        let migrating = migration.is_some();
        self.migration = migration;
        tracing::info!(
            operator = %self.uid,
            subtask = self.subtask,
            component = %plugin.path().display(),
            captured_ms = captured_in.as_millis() as u64,
            swap_ms = (started.elapsed() - captured_in).as_millis() as u64,
            migrated,
            migrating,
            "swapped component; the rollback point is written in the background, keys left migrate as they are met"
        );
        self.previous = Some(previous);
        self.paused_since = Some(started);
        let _ = coordinator.send(CoordinatorMessage::Swapped { id, task });
    }

    /// Refuses a new instance (opened, over the live state) whose state layout cannot
    /// take over `saved`, the old instance's (see [`crate::savepoint::compat`]). The
    /// live registry of declared states holds the old instance's states too, so a state
    /// that changed kind shows as a name declared with two kinds.
    fn check_layout(&mut self, saved: &StateLayout) -> Result<(), String> {
        let version = self.logic.state_version().map_err(|e| e.to_string())?;
        let now = StateLayout::new(version, &self.logic.context().state.declared());
        let new = StateLayout {
            version,
            states: now
                .states
                .iter()
                .filter(|(kind, name)| {
                    // Declared by the new instance: not in the old layout, or the old
                    // layout's state under a name the new one declares otherwise too.
                    !saved.states.contains(&(kind.clone(), name.clone()))
                        || !now.states.iter().any(|(k, n)| n == name && k != kind)
                })
                .cloned()
                .collect(),
        };
        let refused: Vec<String> = compare(saved, &new).iter().filter(|f| f.refuses()).map(ToString::to_string).collect();
        match refused.is_empty() {
            true => Ok(()),
            false => Err(refused.join("; ")),
        }
    }

    /// Serves the coordinator's commands: components installed for an upgrade, and the
    /// verdict on an upgrade this subtask took part in.
    pub(super) fn serve_commands(&mut self) {
        let Some(commands) = self.checkpointing.as_ref().and_then(|c| c.commands.as_ref()) else { return };
        if commands.is_empty() {
            return;
        }
        let commands = commands.clone();
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Install { id, component } => match component.downcast::<Plugin>() {
                    Ok(plugin) => {
                        // The barrier follows: what the in-place savepoint's capture
                        // would do at it, the state starts now.
                        self.logic.context().state.backend_mut().prepare_snapshot();
                        self.staged = Some((id, plugin));
                    }
                    Err(_) => self.control.fail_internal("an upgrade installed something that is not a component"),
                },
                Command::UpgradeDone { id, ok } => {
                    let Some(mut previous) = self.previous.take_if(|p| p.id == id) else { continue };
                    if ok {
                        continue; // the old instance is dropped
                    }
                    tracing::warn!(operator = %self.uid, subtask = self.subtask, "upgrade failed elsewhere; rolling back");
                    if let Err(e) = self.roll_back(&mut previous) {
                        self.control.fail(e);
                    }
                    self.logic = previous.logic;
                }
                Command::Trigger(_) | Command::Commit(_) | Command::Resume(_) | Command::Finish => {}
            }
        }
    }

    /// Puts the pre-upgrade state back (from the in-place savepoint, once written) and
    /// hands the live context back to the old instance.
    pub(super) fn roll_back(&mut self, previous: &mut Previous) -> Result<(), TaskError> {
        let fail = |m: String| TaskError::Internal(format!("rolling back an upgrade: {m}"));
        // The old state was written complete (see `capture`): nothing left to migrate.
        self.migration = None;
        let TaskState::Operator { state: files, timers: timer_file, .. } = previous.rollback_point.wait().map_err(fail)? else {
            unreachable!("an operator's state")
        };
        let mut entries = Vec::new();
        for file in files {
            read_entries(&previous.root.join(&file.path), |k, v| entries.push((k, v))).map_err(fail)?;
        }
        let mut timers = Vec::new();
        read_entries(&previous.root.join(&timer_file.path), |k, _| timers.push(k)).map_err(fail)?;
        let ctx = self.logic.context();
        ctx.state.backend_mut().replace_all(entries).map_err(|e| fail(e.to_string()))?;
        ctx.timers.clear().map_err(|e| fail(e.to_string()))?;
        for timer in timers {
            ctx.timers.insert_encoded(&timer).map_err(|e| fail(e.to_string()))?;
        }
        ctx.operator_state = previous.operator_state.clone();
        let mut discarded = Vec::new();
        ctx.swap_emitted(&mut discarded);
        OperatorContext::hand_over(self.logic.context(), previous.logic.context());
        Ok(())
    }
}

/// The in-place savepoint of an upgraded subtask, being written on a thread of its own:
/// acknowledged to the coordinator when written, and kept for a rollback.
pub(crate) struct RollbackPoint {
    written: crossbeam_channel::Receiver<Result<TaskState, String>>,
    /// What the writer reported, once received.
    result: Option<Result<TaskState, String>>,
}

impl RollbackPoint {
    /// Starts writing `capture`; the coordinator gets the acknowledgement (or the
    /// decline) of upgrade `id` for `task` when it is done.
    fn write(capture: Capture, id: u64, task: String, coordinator: crossbeam_channel::Sender<CoordinatorMessage>) -> RollbackPoint {
        let (tx, written) = crossbeam_channel::bounded(1);
        let reply = coordinator.clone();
        let decline_task = task.clone();
        let spawned = std::thread::Builder::new().name(format!("rollback point {task}")).spawn(move || {
            let result = capture.write();
            let message = match &result {
                Ok(state) => CoordinatorMessage::Ack { id, task, state: state.clone() },
                Err(reason) => CoordinatorMessage::Decline { id, task, reason: format!("writing the in-place savepoint: {reason}") },
            };
            let _ = tx.send(result);
            let _ = reply.send(message);
        });
        let result = spawned.err().map(|e| {
            let reason = format!("cannot start the thread writing the in-place savepoint: {e}");
            let _ = coordinator.send(CoordinatorMessage::Decline { id, task: decline_task, reason: reason.clone() });
            Err(reason)
        });
        RollbackPoint { written, result }
    }

    /// The written savepoint's description, waiting for the writer if it is not done.
    fn wait(&mut self) -> Result<&TaskState, String> {
        if self.result.is_none() {
            let received = self.written.recv().unwrap_or_else(|_| Err("the writer stopped without a word".into()));
            self.result = Some(received);
        }
        self.result.as_ref().expect("set above").as_ref().map_err(Clone::clone)
    }
}
