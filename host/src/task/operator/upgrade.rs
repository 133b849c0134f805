//! Live upgrades: swapping the component in place at an upgrade barrier, the
//! coordinator's commands, and rolling back to the old component and its state.

use super::snapshot::Capture;
use super::*;

impl OperatorTask {
    /// Swaps this subtask's component for `plugin` in place: a savepoint of the live
    /// state first (the rollback point), then a new instance takes over the state,
    /// timers and watermark, opens, and migrates every key if its state version is
    /// newer. Any failure rolls back at once and declines; success acknowledges and
    /// keeps the old instance until the coordinator says every subtask succeeded.
    pub(super) fn upgrade(&mut self, id: u64, dir: std::path::PathBuf, plugin: &Plugin) {
        let Some(cp) = &self.checkpointing else { return };
        let (task, coordinator) = (cp.task.clone(), cp.coordinator.clone());
        let decline = |reason: String| {
            let _ = coordinator.send(CoordinatorMessage::Decline { id, task: task.clone(), reason });
        };
        let target = SnapshotTarget { root: dir.clone(), task_dir: task.clone(), shared_dir: String::new() };
        // Written before the swap: it is also the rollback point.
        let started = Instant::now();
        let saved = match self.capture(id, target, true).and_then(Capture::write) {
            Ok(saved) => saved,
            Err(reason) => return decline(format!("writing the in-place savepoint: {reason}")),
        };
        let saved_in = started.elapsed();
        let TaskState::Operator { state_version: from, state: files, timers, .. } = &saved else { unreachable!() };
        let (from, files, timers) = (*from, files.clone(), timers.clone());
        let placeholder = self.logic.context().placeholder();
        let mut new: Box<dyn OperatorLogic> = match plugin.instantiate(placeholder, self.limits) {
            Ok(new) => Box::new(new),
            Err(e) => return decline(e.to_string()),
        };
        OperatorContext::hand_over(self.logic.context(), new.context());
        let old = std::mem::replace(&mut self.logic, new);
        let operator_state = self.logic.context().operator_state.clone();
        // The new instance takes over state as from a savepoint: its operator lists
        // (the old instance's, written by its snapshot-state) count as restored.
        self.logic.context().operator_state.mark_restored();
        let mut previous = Previous { id, logic: old, root: dir, state: files, timers, operator_state };
        // The first keys migrate now, within a short budget, so that a component whose
        // migration fails is refused (and rolled back) here; the rest migrate lazily.
        let swapped = self
            .logic
            .open()
            .and_then(|()| Migration::start(self.logic.as_mut(), from))
            .map_err(|failure| failure.to_string())
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
        let left = migration.as_ref().map_or(0, Migration::remaining);
        self.migration = migration;
        tracing::info!(
            operator = %self.uid,
            subtask = self.subtask,
            component = %plugin.path().display(),
            savepoint_ms = saved_in.as_millis() as u64,
            swap_ms = (started.elapsed() - saved_in).as_millis() as u64,
            left,
            "swapped component; keys left migrate on first access"
        );
        self.previous = Some(previous);
        let _ = coordinator.send(CoordinatorMessage::Ack { id, task, state: saved });
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
                    Ok(plugin) => self.staged = Some((id, plugin)),
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

    /// Puts the pre-upgrade state back (from the in-place savepoint) and hands the live
    /// context back to the old instance.
    pub(super) fn roll_back(&mut self, previous: &mut Previous) -> Result<(), TaskError> {
        let fail = |m: String| TaskError::Internal(format!("rolling back an upgrade: {m}"));
        // The old state was written complete (see `capture`): nothing left to migrate.
        self.migration = None;
        let mut entries = Vec::new();
        for file in &previous.state {
            read_entries(&previous.root.join(&file.path), |k, v| entries.push((k, v))).map_err(fail)?;
        }
        let mut timers = Vec::new();
        read_entries(&previous.root.join(&previous.timers.path), |k, _| timers.push(k)).map_err(fail)?;
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
