//! The operator task: feeds elements, watermarks and timers to one operator subtask,
//! one at a time, and routes what it emits.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::inputs::{Inputs, Next};
use super::migration::Migration;
use super::output::{RouteError, Router};
use super::{Checkpointing, JobControl, POLL_INTERVAL, TaskError};
use crate::checkpoint::channels::ChannelState;
use crate::checkpoint::coordinator::Command;
use crate::state::snapshot::{read_entries, write_file};
use crate::checkpoint::{BarrierKind, CheckpointBarrier, CheckpointStorage, CoordinatorMessage, FileEntry, PendingMigration, TaskState};
use crate::plugin::{Limits, Plugin};
use crate::state::SnapshotTarget;
use crate::metrics::TaskMetrics;
use crate::error::ErrorPolicy;
use crate::operator::{OperatorFailure, OperatorLogic, Port};
use crate::stream::{Batch, Element, Event, Label, Message, Position, Record};
use crate::timers::{TimeDomain, Timer};
use crate::watermark::{InputWatermarks, Watermark};

pub struct OperatorTask {
    pub uid: Arc<str>,
    pub subtask: u32,
    pub logic: Box<dyn OperatorLogic>,
    pub inputs: Inputs,
    pub router: Router,
    pub metrics: Arc<TaskMetrics>,
    pub control: Arc<JobControl>,
    /// Whether the inputs are keyed: elements get a current key.
    pub keyed: bool,
    /// Whether elements at or behind the watermark are taken out before the operator
    /// sees them (job file `late = "drop"`); by default operators receive them, as
    /// Flink's process functions do, and decide themselves.
    pub drop_late: bool,
    /// The router port of the `late` side output, when the job routes one.
    pub late_port: Option<usize>,
    pub on_error: ErrorPolicy,
    /// Reused buffer for what one call emitted.
    pub emitted: Vec<(Port, Event)>,
    pub checkpointing: Option<Checkpointing>,
    /// Elements and timers handed to the operator so far, for pacing the TTL sweep.
    pub calls: u64,
    /// Reused buffer for the elements of a run.
    pub run_items: VecDeque<RunItem>,
    /// Reused buffer for the run element each emitted event came from.
    pub emitted_at: Vec<u32>,
    /// Records sent since the last batch ended, not yet added to `metrics`.
    pub sent: u64,
    /// The operator's sandbox limits, for a component swapped in by an upgrade.
    pub limits: Limits,
    /// A state layout to migrate from, key by key (after a restore from a savepoint).
    pub migrate_from: Option<u32>,
    /// The migration in progress, if any (see [`super::migration`]).
    pub migration: Option<Migration>,
    /// The logic an upgrade replaced, kept until the upgrade is known to have
    /// succeeded everywhere.
    pub previous: Option<Previous>,
    /// The component installed for an upgrade, by upgrade id, until its barrier comes.
    pub staged: Option<(u64, Arc<Plugin>)>,
    /// When the watermark, state size and timer gauges were last published.
    pub gauges_published: std::time::Instant,
    /// Per input channel: whether it feeds the operator's second input.
    pub second_inputs: Vec<bool>,
    /// How the second input arrives (keyed, broadcast, ...), if there is one.
    pub second_input: Option<crate::stream::Partitioning>,
    /// The unaligned checkpoint whose snapshot thread waits for the data its barriers
    /// overtook, and where to send it.
    awaiting_channels: Option<(u64, crossbeam_channel::Sender<ChannelState>)>,
    /// The most records handed to the operator in one call ([`OperatorTask::tune_runs`]).
    run_limit: usize,
    /// A running average of a call's cost per element, in ns (0 before the first call).
    element_ns: u64,
}

/// An element of a run, in input order.
pub enum RunItem {
    /// A record handed to the operator (its event moved into the run).
    Record { position: Position, ingested: Option<Instant> },
    /// A record at or behind the watermark in effect: late.
    Late(Record),
    /// A watermark to apply after the records before it.
    Watermark(Watermark),
}

/// An operator snapshot captured at a barrier, waiting to be written.
struct Capture {
    writer: Box<dyn crate::state::SnapshotWriter>,
    timers: Box<dyn crate::state::SnapshotWriter>,
    watermark: i64,
    state_version: u32,
    states: Vec<crate::state::DeclaredState>,
    backend: String,
    /// The operator lists' entries.
    operator_state: Vec<(Vec<u8>, Vec<u8>)>,
    /// The state version and keys of a migration in progress.
    migration: Option<(u32, Vec<Vec<u8>>)>,
    target: SnapshotTarget,
}

impl Capture {
    /// Writes the state and timer files and describes them.
    fn write(self) -> Result<TaskState, String> {
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
            Some((from, mut keys)) => {
                keys.sort();
                let relative = format!("{}/migration.ent", self.target.task_dir);
                let entries = keys.iter().map(|k| (k.as_slice(), &[][..]));
                Some(PendingMigration { from, keys: write_file(&self.target.root, &relative, entries)? })
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

/// What rolling back an upgrade needs.
pub struct Previous {
    id: u64,
    logic: Box<dyn OperatorLogic>,
    /// The in-place savepoint of this subtask, taken before the swap.
    root: std::path::PathBuf,
    state: Vec<FileEntry>,
    timers: FileEntry,
    /// The operator lists before the swap.
    operator_state: crate::state::operator::OperatorState,
}

/// About how long one call into an operator may take before a batch is split: a slow
/// operator still serves barriers (and its timers and commands) every so often.
const RUN_TARGET: Duration = Duration::from_millis(10);
/// How long a back-pressured task waits for room before looking at barriers again.
const BACKPRESSURE_WAIT: Duration = Duration::from_millis(5);
/// How long an upgrade (or a restore from a savepoint) migrates keys before going on;
/// the rest migrate lazily.
const UPGRADE_MIGRATION_BUDGET: Duration = Duration::from_millis(50);
/// Every this many elements, the TTL sweep looks at [`SWEEP_BUDGET`] more state entries.
const SWEEP_EVERY: u64 = 256;
/// How often an operator task publishes its watermark, state size and timer count.
const GAUGE_INTERVAL: Duration = Duration::from_millis(500);
const SWEEP_BUDGET: usize = 64;

/// What the task was doing, for error messages.
enum Doing<'a> {
    Opening,
    Element(&'a Position),
    Timer(TimeDomain, &'a Timer),
    /// Taking the next due timer from the timer store.
    DueTimers(TimeDomain),
    Closing,
    Sweeping,
    Migrating(u32),
    MigratingKey(u32, &'a [u8]),
    /// The logic's `snapshot-state` for a checkpoint, savepoint or upgrade.
    SnapshotState(u64),
}

impl std::fmt::Display for Doing<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Doing::Opening => f.write_str("opening"),
            Doing::Element(position) => write!(f, "processing the element from {position}"),
            Doing::Timer(domain, timer) => write!(
                f,
                "firing the {domain} timer at {} for key {:?}",
                timer.timestamp,
                String::from_utf8_lossy(&timer.key)
            ),
            Doing::DueTimers(domain) => write!(f, "reading its due {domain} timers"),
            Doing::Closing => f.write_str("closing"),
            Doing::Sweeping => f.write_str("sweeping expired state"),
            Doing::Migrating(from) => write!(f, "migrating restored state from version {from}"),
            Doing::MigratingKey(from, key) => {
                write!(f, "migrating the state of key {:?} from version {from}", String::from_utf8_lossy(key))
            }
            Doing::SnapshotState(id) => write!(f, "writing its state for checkpoint {id} (snapshot-state)"),
        }
    }
}

impl OperatorTask {
    /// An operator task reading `inputs` and writing through `router`, with its own
    /// metrics and control, no checkpointing, and default sandbox limits; a job sets
    /// the rest (see [`crate::task::harness`] for a task without a job).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        uid: Arc<str>,
        subtask: u32,
        logic: Box<dyn OperatorLogic>,
        inputs: Inputs,
        router: Router,
        keyed: bool,
        late_port: Option<usize>,
        on_error: ErrorPolicy,
    ) -> Self {
        OperatorTask {
            uid,
            subtask,
            logic,
            inputs,
            router,
            metrics: Arc::new(TaskMetrics::default()),
            control: Arc::new(JobControl::default()),
            keyed,
            drop_late: false,
            late_port,
            on_error,
            emitted: Vec::new(),
            checkpointing: None,
            calls: 0,
            run_items: VecDeque::new(),
            emitted_at: Vec::new(),
            sent: 0,
            limits: Limits::default(),
            migrate_from: None,
            migration: None,
            previous: None,
            staged: None,
            gauges_published: std::time::Instant::now() - GAUGE_INTERVAL,
            second_inputs: Vec::new(),
            second_input: None,
            awaiting_channels: None,
            // One element first: its cost sizes the runs after it, so that a slow
            // operator's first call does not hold a barrier up for a whole batch.
            run_limit: 1,
            element_ns: 0,
        }
    }

    pub fn run(mut self) -> Result<(), TaskError> {
        let restored = self.logic.context().watermark;
        let mut watermarks = InputWatermarks::starting_at(self.inputs.len(), restored);
        let result = match self.run_loop(&mut watermarks) {
            // The job is stopping and interrupted a guest call: not a failure.
            Err(TaskError::Operator { failure: OperatorFailure::Interrupted, .. }) if self.control.is_cancelled() => Ok(()),
            result => result,
        };
        // What was routed before an error or a stop still goes downstream: the sinks
        // write what the job accepted before it failed.
        let _ = self.router.flush();
        self.publish_counts();
        result
    }

    fn run_loop(&mut self, watermarks: &mut InputWatermarks) -> Result<(), TaskError> {
        let timer_source = Label::intern(&format!("timer of `{}`", self.uid));
        let opening = Position { source: Label::intern(&format!("open of `{}`", self.uid)), unit: "at", offset: 0 };
        self.logic.open().map_err(|f| self.failure(Doing::Opening, f))?;
        self.route_emitted(&opening, None)?;
        if let Some(from) = self.migrate_from {
            // As for an upgrade: the first keys now, so a failing migration fails the
            // restore before anything is processed; the rest lazily.
            let mut migration =
                Migration::start(self.logic.as_mut(), from).map_err(|f| self.failure(Doing::Migrating(from), f))?;
            if let Some(m) = migration.as_mut() {
                m.for_at_most(self.logic.as_mut(), UPGRADE_MIGRATION_BUDGET)
                    .map_err(|e| self.failure(Doing::MigratingKey(from, &e.key), e.failure))?;
            }
            self.migration = migration;
        }
        loop {
            if self.control.is_cancelled() {
                return Ok(());
            }
            // Back-pressure: the next batch is processed only when the output has room
            // (as Flink's mailbox does), so that the task waits here, between batches and
            // serving barriers, rather than inside a call; unaligned barriers then
            // overtake back-pressure too.
            if self.router.is_backpressured() {
                match self.inputs.barriers() {
                    Some(Next::Barrier { barrier, unaligned }) => self.on_barrier(barrier, unaligned)?,
                    Some(Next::ChannelState(id, state)) => self.channel_state_ready(id, state),
                    Some(_) => unreachable!("barriers() hands over barriers and channel state only"),
                    None => {
                        self.router.wait_for_room(BACKPRESSURE_WAIT);
                    }
                }
                self.serve_commands();
                continue;
            }
            // Batch what is queued: partly filled output batches go as soon as there is
            // nothing more to read.
            let next = match self.inputs.try_next() {
                Some(next) => next,
                None => {
                    if self.router.flush().is_err() {
                        self.control.cancel();
                    }
                    let timeout = self.timeout();
                    self.inputs.next(timeout)
                }
            };
            match next {
                Next::Message(input, Message::Batch(batch)) if self.second_inputs.get(input) == Some(&true) => {
                    self.on_second_input(input, batch, watermarks, &timer_source)?;
                    self.publish_counts();
                    if self.router.flush_if_due().is_err() {
                        self.control.cancel();
                    }
                }
                Next::Message(input, Message::Batch(batch)) => {
                    self.on_batch(input, batch, watermarks, &timer_source)?;
                    self.publish_counts();
                    if self.router.flush_if_due().is_err() {
                        self.control.cancel();
                    }
                }
                Next::Barrier { barrier, unaligned } => self.on_barrier(barrier, unaligned)?,
                Next::ChannelState(id, state) => self.channel_state_ready(id, state),
                Next::Message(input, Message::EndOfData) => {
                    if let Some(advanced) = watermarks.finish(input) {
                        self.advance(advanced, &timer_source)?;
                    }
                }
                Next::Message(_, Message::Barrier(_)) => unreachable!("the inputs handle barriers"),
                Next::Timeout => {}
                Next::Ended => return self.finish(),
                Next::Disconnected => return Ok(()),
            }
            self.fire_processing_timers(&timer_source)?;
            self.serve_commands();
        }
    }

    /// The barrier has arrived on every open input (or the first one, unaligned):
    /// snapshot (or upgrade), then forward the barrier.
    fn on_barrier(&mut self, barrier: CheckpointBarrier, unaligned: bool) -> Result<(), TaskError> {
        tracing::debug!(operator = %self.uid, subtask = self.subtask, checkpoint = barrier.id, unaligned, "barrier");
        match &barrier.kind {
            BarrierKind::Upgrade { dir, operator } if **operator == *self.uid => {
                let dir = (**dir).clone();
                self.serve_commands();
                match self.staged.take_if(|(id, _)| *id == barrier.id) {
                    Some((_, plugin)) => self.upgrade(barrier.id, dir, &plugin),
                    None => self.decline(barrier.id, "no component was installed for this upgrade".into()),
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
    fn channel_state_ready(&mut self, id: u64, state: ChannelState) {
        tracing::debug!(operator = %self.uid, subtask = self.subtask, checkpoint = id, records = state.records(), "in-flight data recorded");
        if let Some((_, channels)) = self.awaiting_channels.take_if(|(awaited, _)| *awaited == id) {
            let _ = channels.send(state);
        }
    }

    /// Where this subtask's part of a checkpoint or savepoint goes.
    fn target(&self, barrier: &CheckpointBarrier) -> Option<(String, SnapshotTarget)> {
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
    fn capture(&mut self, id: u64, target: SnapshotTarget, portable: bool) -> Result<Capture, String> {
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
            tracing::info!(operator = %self.uid, subtask = self.subtask, keys = migration.remaining(), "completing the state migration for a savepoint");
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
        let migration = self.migration.as_ref().map(|m| (m.from, m.keys().cloned().collect::<Vec<_>>()));
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
    fn snapshot(&mut self, barrier: &CheckpointBarrier, unaligned: bool) {
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

    /// Swaps this subtask's component for `plugin` in place: a savepoint of the live
    /// state first (the rollback point), then a new instance takes over the state,
    /// timers and watermark, opens, and migrates every key if its state version is
    /// newer. Any failure rolls back at once and declines; success acknowledges and
    /// keeps the old instance until the coordinator says every subtask succeeded.
    fn upgrade(&mut self, id: u64, dir: std::path::PathBuf, plugin: &Plugin) {
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
        std::mem::swap(self.logic.context(), new.context());
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
    fn serve_commands(&mut self) {
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

    /// Declines upgrade or checkpoint `id` with `reason`.
    fn decline(&self, id: u64, reason: String) {
        if let Some(cp) = &self.checkpointing {
            let _ = cp.coordinator.send(CoordinatorMessage::Decline { id, task: cp.task.clone(), reason });
        }
    }

    /// Puts the pre-upgrade state back (from the in-place savepoint) and hands the live
    /// context back to the old instance.
    fn roll_back(&mut self, previous: &mut Previous) -> Result<(), TaskError> {
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
        std::mem::swap(self.logic.context(), previous.logic.context());
        Ok(())
    }

    /// Migrates `key`'s state before the operator sees it, if a migration is in
    /// progress and the key has not been migrated yet.
    fn migrate_key(&mut self, key: &[u8]) -> Result<(), TaskError> {
        let Some(mut migration) = self.migration.take() else { return Ok(()) };
        let migrated = migration.key(self.logic.as_mut(), key);
        let from = migration.from;
        self.migration = Some(migration);
        migrated.map_err(|e| self.failure(Doing::MigratingKey(from, &e.key), e.failure))
    }

    /// Adds what was counted since the last time to the task's metrics.
    fn publish_counts(&mut self) {
        self.metrics.add_out(std::mem::take(&mut self.sent));
        if self.gauges_published.elapsed() >= GAUGE_INTERVAL {
            self.gauges_published = std::time::Instant::now();
            let ctx = self.logic.context();
            self.metrics.set_operator_gauges(ctx.watermark, ctx.state.backend().size_bytes(), ctx.timers.total() as u64);
        }
        let ctx = self.logic.context();
        let (unrouted, routed, dropped) =
            (std::mem::take(&mut ctx.unrouted), std::mem::take(&mut ctx.late_routed), std::mem::take(&mut ctx.late_dropped));
        if unrouted + routed + dropped > 0 {
            self.metrics.add_unrouted(unrouted);
            self.metrics.add_late_routed(routed);
            self.metrics.add_late_dropped(dropped);
        }
    }

    /// Waits no longer than the next processing-time timer, nor than the poll interval.
    fn timeout(&mut self) -> Duration {
        let ctx = self.logic.context();
        if ctx.clock.follows_records() {
            // Processing time moves only as records arrive: nothing falls due by waiting.
            return POLL_INTERVAL;
        }
        match ctx.timers.next_timestamp(TimeDomain::ProcessingTime) {
            None => POLL_INTERVAL,
            Some(due) => {
                // A timer at T fires once the clock has passed T (see below).
                let wait = due.saturating_add(1).saturating_sub(ctx.clock.now()).max(0) as u64;
                Duration::from_millis(wait).min(POLL_INTERVAL)
            }
        }
    }

    /// Gives state its clock for TTL decisions, and now and then sweeps a slice of it
    /// for expired entries.
    fn before_call(&mut self, elements: u64) -> Result<(), TaskError> {
        if let Some(mut migration) = self.migration.take() {
            match migration.background(self.logic.as_mut()) {
                Ok(true) => self.migration = Some(migration),
                Ok(false) => tracing::info!(operator = %self.uid, subtask = self.subtask, "state migration complete"),
                Err(e) => return Err(self.failure(Doing::MigratingKey(migration.from, &e.key), e.failure)),
            }
        }
        // Always: a state with a time to live may be declared during this very call
        // (guests declare on first use), and its first write is stamped with `now`.
        let ctx = self.logic.context();
        let now = ctx.clock.now();
        let state = &mut ctx.state;
        state.set_now(now);
        if !state.has_ttl() {
            return Ok(());
        }
        let before = self.calls;
        self.calls += elements;
        if self.calls / SWEEP_EVERY != before / SWEEP_EVERY {
            if let Err(e) = state.sweep(SWEEP_BUDGET) {
                return Err(self.failure(Doing::Sweeping, OperatorFailure::State(e)));
            }
        }
        Ok(())
    }

    /// Processes a batch from input `input`: its records in runs, each handed to the
    /// operator in one call, and its watermarks in order between them. A run ends
    /// before a watermark that fires a pending timer, so timers fire exactly where they
    /// would if every element came alone; a timer registered during a run that falls
    /// due within it stops the run there ([`OperatorContext::begin_element`]).
    fn on_batch(
        &mut self,
        input: usize,
        batch: Batch,
        watermarks: &mut InputWatermarks,
        timer_source: &Label,
    ) -> Result<(), TaskError> {
        // A slow operator takes a long batch in parts, so that a call takes about
        // RUN_TARGET and barriers are served in between (the rest is handed back).
        let mut batch = batch;
        if batch.records > self.run_limit {
            if let Some(rest) = batch.split_after_records(self.run_limit) {
                self.inputs.unread(input, rest);
            }
        }
        self.metrics.add_in(batch.records as u64);
        let (keyed, drop_late) = (self.keyed, self.drop_late);
        // A clock that follows the records moves before each record: every record is a
        // run of its own, after the processing-time timers its timestamp passes.
        let records_clock = self.logic.context().clock.follows_records();
        let mut elements = batch.elements.into_iter().peekable();
        while elements.peek().is_some() {
            let mut items = std::mem::take(&mut self.run_items);
            let mut events = Vec::with_capacity(batch.records);
            let ctx = self.logic.context();
            ctx.run.clear();
            let mut watermark = ctx.watermark;
            let mut firing = None;
            for element in elements.by_ref() {
                match element {
                    Element::Record(mut record) => {
                        if drop_late && record.event.timestamp.is_some_and(|ts| ts <= watermark) {
                            items.push_back(RunItem::Late(record));
                            continue;
                        }
                        // Routers refuse keyless events on keyed edges, so the key is present.
                        let key = keyed.then(|| (record.event.key.as_deref().unwrap_or_default(), record.key_group));
                        ctx.run.push(key, watermark);
                        items.push_back(RunItem::Record { position: record.position, ingested: record.ingested });
                        events.push(std::mem::take(&mut record.event));
                        if records_clock {
                            break;
                        }
                    }
                    Element::Watermark(incoming) => {
                        let Some(advanced) = watermarks.update(input, incoming) else { continue };
                        if let Watermark::EventTime(time) = advanced {
                            if ctx.timers.next_timestamp(TimeDomain::EventTime).is_some_and(|due| due <= time) {
                                firing = Some(advanced);
                                break;
                            }
                            watermark = time;
                        }
                        items.push_back(RunItem::Watermark(advanced));
                    }
                }
            }
            if let Some(timestamp) = events.first().and_then(|e| e.timestamp).filter(|_| records_clock) {
                self.advance_clock(timestamp, timer_source)?;
            }
            self.process_run(&mut items, events, timer_source)?;
            self.run_items = items;
            if let Some(advanced) = firing {
                self.advance(advanced, timer_source)?;
            }
        }
        Ok(())
    }

    /// Sizes the runs of later batches so that one call takes about [`RUN_TARGET`],
    /// from a running average of the cost per element.
    fn tune_runs(&mut self, took: Duration, elements: usize) {
        if elements == 0 {
            return;
        }
        let cost = (took.as_nanos() as u64 / elements as u64).max(1);
        // The first measurement stands alone (an average with the initial 0 would take
        // eight calls to stop underestimating the cost, and so to make calls too long).
        self.element_ns = match self.element_ns {
            0 => cost,
            average => (average * 7 + cost) / 8,
        };
        self.run_limit = match RUN_TARGET.as_nanos() as u64 / self.element_ns.max(1) {
            0 => 1,
            limit => usize::try_from(limit).unwrap_or(usize::MAX),
        };
    }

    /// Processes a batch from a channel of the second input: each record in its own
    /// call (`process-element-2`), with its key current on a keyed input and broadcast
    /// state writable on a broadcast one; watermarks count towards the operator's as
    /// any input's do (the least over both inputs, idle ones aside).
    fn on_second_input(
        &mut self,
        input: usize,
        batch: Batch,
        watermarks: &mut InputWatermarks,
        timer_source: &Label,
    ) -> Result<(), TaskError> {
        self.metrics.add_in(batch.records as u64);
        let keyed = self.second_input == Some(crate::stream::Partitioning::Keyed);
        let broadcast = self.second_input == Some(crate::stream::Partitioning::Broadcast);
        for element in batch.elements {
            match element {
                Element::Record(record) => {
                    if let Some(timestamp) = record.event.timestamp {
                        self.advance_clock(timestamp, timer_source)?;
                    }
                    self.before_call(1)?;
                    if keyed && self.migration.is_some() {
                        self.migrate_key(record.event.key.as_deref().unwrap_or_default())?;
                    }
                    let Record { event, position, ingested, .. } = record;
                    let ctx = self.logic.context();
                    ctx.set_current_key(if keyed { event.key.as_deref() } else { None });
                    ctx.operator_state.broadcast_writable = broadcast;
                    let call = std::time::Instant::now();
                    let result = self.logic.process_element_2(event);
                    self.metrics.add_call(call.elapsed());
                    let ctx = self.logic.context();
                    ctx.operator_state.broadcast_writable = false;
                    ctx.set_current_key(None);
                    self.route_emitted(&position, ingested)?;
                    result.map_err(|failure| self.failure(Doing::Element(&position), failure))?;
                }
                Element::Watermark(incoming) => {
                    if let Some(advanced) = watermarks.update(input, incoming) {
                        self.advance(advanced, timer_source)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Hands `events` (the records among `items`) to the operator, as many calls as
    /// timers falling due require, and routes what they emitted interleaved with the
    /// late records and watermarks of `items`, in input order.
    fn process_run(
        &mut self,
        items: &mut VecDeque<RunItem>,
        mut events: Vec<Event>,
        timer_source: &Label,
    ) -> Result<(), TaskError> {
        while !events.is_empty() {
            self.before_call(events.len() as u64)?;
            if self.keyed && self.migration.is_some() {
                for event in &events {
                    self.migrate_key(event.key.as_deref().unwrap_or_default())?;
                }
            }
            let ctx = self.logic.context();
            let watermark = ctx.watermark;
            ctx.start_run();
            let call = std::time::Instant::now();
            let elements = events.len();
            let result = self.logic.process_run(events);
            let took = call.elapsed();
            self.metrics.add_call(took);
            self.tune_runs(took, elements);
            let ctx = self.logic.context();
            ctx.end_run();
            // The watermark moves on as the run's watermarks are routed.
            ctx.watermark = watermark;
            let mut emitted = std::mem::take(&mut self.emitted);
            let mut at = std::mem::take(&mut self.emitted_at);
            ctx.swap_emitted_with_elements(&mut emitted, &mut at);
            let (processed, rest, failure) = match result {
                Ok(outcome) => (outcome.processed, outcome.rest, None),
                Err((index, failure)) => (index, Vec::new(), Some(failure)),
            };
            self.route_items(items, processed, emitted.drain(..).zip(at.drain(..)), timer_source)?;
            self.emitted = emitted;
            self.emitted_at = at;
            if let Some(failure) = failure {
                let position = match items.front() {
                    Some(RunItem::Record { position, .. }) => *position,
                    _ => Position { source: *timer_source, unit: "at", offset: 0 },
                };
                items.clear();
                return Err(self.failure(Doing::Element(&position), failure));
            }
            self.logic.context().run.consume(processed);
            events = rest;
        }
        self.route_items(items, u32::MAX, std::iter::empty(), timer_source)
    }

    /// Routes `items` in order up to the run record `processed` (exclusive), each
    /// record followed by what it emitted; watermarks advance (firing timers that fell
    /// due) and late records go to the `late` output on the way.
    fn route_items(
        &mut self,
        items: &mut VecDeque<RunItem>,
        processed: u32,
        emitted: impl Iterator<Item = ((Port, Event), u32)>,
        timer_source: &Label,
    ) -> Result<(), TaskError> {
        let mut emitted = emitted.peekable();
        let mut index = 0u32;
        while let Some(item) = items.front() {
            if matches!(item, RunItem::Record { .. }) && index >= processed {
                break;
            }
            match items.pop_front().expect("peeked") {
                RunItem::Record { position, ingested } => {
                    while let Some(((port, event), _)) = emitted.next_if(|(_, at)| *at == index) {
                        let port = match port {
                            Port::Main => 0,
                            Port::Side(index) => index,
                        };
                        self.send(port, Record { event, position, key_group: 0, ingested }, &position)?;
                    }
                    index += 1;
                }
                RunItem::Late(record) => self.on_late(record)?,
                RunItem::Watermark(watermark) => self.advance(watermark, timer_source)?,
            }
        }
        Ok(())
    }

    /// An element at or behind the watermark: Flink's definition of late. It goes to
    /// the `late` side output when the job routes one, and is counted either way.
    fn on_late(&mut self, record: Record) -> Result<(), TaskError> {
        match self.late_port {
            Some(port) => {
                self.metrics.add_late_routed(1);
                let position = record.position;
                self.send(port, record, &position)
            }
            None => {
                self.metrics.add_late_dropped(1);
                Ok(())
            }
        }
    }

    fn advance(&mut self, watermark: Watermark, timer_source: &Label) -> Result<(), TaskError> {
        if let Watermark::EventTime(time) = watermark {
            // As in Flink: the operator sees the new watermark while its timers fire,
            // and downstream sees the watermark only after the timers' output.
            self.logic.context().watermark = time;
            while let Some(timer) = self.due_timer(TimeDomain::EventTime, time)? {
                self.fire(TimeDomain::EventTime, timer, timer_source)?;
            }
        }
        self.router.watermark(watermark);
        Ok(())
    }

    /// Moves a records clock on to `timestamp`, firing the processing-time timers it
    /// passes (a wall clock ignores it).
    fn advance_clock(&mut self, timestamp: i64, timer_source: &Label) -> Result<(), TaskError> {
        let clock = &mut self.logic.context().clock;
        if !clock.follows_records() || timestamp <= clock.now() {
            return Ok(());
        }
        clock.advance_to(timestamp);
        self.fire_processing_timers(timer_source)
    }

    fn fire_processing_timers(&mut self, timer_source: &Label) -> Result<(), TaskError> {
        let ctx = self.logic.context();
        if ctx.timers.len(TimeDomain::ProcessingTime) == 0 {
            return Ok(());
        }
        // As Flink's processing-time service: a timer at T fires once the clock has
        // passed T (at T + 1), so an element processed at T still belongs to a window
        // whose last moment is T.
        let due = ctx.clock.now().saturating_sub(1);
        while let Some(timer) = self.due_timer(TimeDomain::ProcessingTime, due)? {
            self.fire(TimeDomain::ProcessingTime, timer, timer_source)?;
        }
        Ok(())
    }

    /// Takes the earliest timer of `domain` due at `time` out of the timer store.
    fn due_timer(&mut self, domain: TimeDomain, time: i64) -> Result<Option<Timer>, TaskError> {
        self.logic
            .context()
            .timers
            .pop_due(domain, time)
            .map_err(|e| self.failure(Doing::DueTimers(domain), OperatorFailure::State(e)))
    }

    fn fire(&mut self, domain: TimeDomain, timer: Timer, source: &Label) -> Result<(), TaskError> {
        self.before_call(1)?;
        self.migrate_key(&timer.key)?;
        self.logic.context().set_current_key(Some(&timer.key));
        let call = std::time::Instant::now();
        let fired = self.logic.on_timer(timer.timestamp, domain, &timer.namespace);
        self.metrics.add_call(call.elapsed());
        if let Err(failure) = fired {
            return Err(self.failure(Doing::Timer(domain, &timer), failure));
        }
        let position = Position { source: *source, unit: "at", offset: timer.timestamp };
        self.route_emitted(&position, None)
    }

    fn finish(&mut self) -> Result<(), TaskError> {
        if let Some(cp) = &self.checkpointing {
            let _ = cp.coordinator.send(CoordinatorMessage::Finished { task: cp.task.clone(), state: None });
        }
        self.logic.context().set_current_key(None);
        self.logic.close().map_err(|f| self.failure(Doing::Closing, f))?;
        let closing = Position { source: Label::intern(&format!("close of `{}`", self.uid)), unit: "at", offset: 0 };
        self.route_emitted(&closing, None)?;
        self.broadcast(Message::EndOfData)
    }

    /// Routes what the last call emitted; the events inherit `position`.
    fn route_emitted(&mut self, position: &Position, ingested: Option<Instant>) -> Result<(), TaskError> {
        let mut emitted = std::mem::take(&mut self.emitted);
        self.logic.context().swap_emitted(&mut emitted);
        for (port, event) in emitted.drain(..) {
            let port = match port {
                Port::Main => 0,
                Port::Side(index) => index,
            };
            let record = Record { event, position: *position, key_group: 0, ingested };
            self.send(port, record, position)?;
        }
        self.emitted = emitted;
        Ok(())
    }

    fn send(&mut self, port: usize, record: Record, position: &Position) -> Result<(), TaskError> {
        match self.router.send(port, record) {
            Ok(true) => self.sent += 1,
            Ok(false) => self.metrics.add_unrouted(1),
            // Downstream is gone because the job is stopping; the cancel flag ends us.
            Err(RouteError::Disconnected) => self.control.cancel(),
            Err(RouteError::MissingKey { to }) => {
                let error = TaskError::MissingKey {
                    from: self.uid.to_string(),
                    to: to.to_string(),
                    position: position.to_string(),
                };
                match self.on_error {
                    ErrorPolicy::Fail => return Err(error),
                    ErrorPolicy::Skip => {
                        tracing::warn!(operator = %self.uid, error = %error, "skipping event");
                        self.metrics.add_skipped(1);
                    }
                }
            }
        }
        Ok(())
    }

    fn broadcast(&mut self, message: Message) -> Result<(), TaskError> {
        if self.router.broadcast(&message).is_err() {
            self.control.cancel();
        }
        Ok(())
    }

    fn failure(&self, doing: Doing<'_>, failure: OperatorFailure) -> TaskError {
        TaskError::Operator {
            uid: self.uid.to_string(),
            subtask: self.subtask,
            during: doing.to_string(),
            failure,
        }
    }
}
