//! The operator task: feeds elements, watermarks and timers to one operator subtask,
//! one at a time, and routes what it emits.
//!
//! This file holds the task, its run loop and routing; the rest is one job a file:
//! `runs` (batches into calls of the operator, late records, the second input), `time`
//! (watermarks, event- and processing-time timers, the clocks), `snapshot` (barriers,
//! captured and written snapshots, in-flight data) and `upgrade` (live upgrades and their
//! rollback).

mod runs;
mod snapshot;
mod time;
mod upgrade;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::inputs::{Inputs, Next};
use super::migration::{Migration, MigrationProgress};
use super::output::{RouteError, Router};
use super::{Checkpointing, JobControl, POLL_INTERVAL, TaskError};
use crate::checkpoint::channels::ChannelState;
use crate::checkpoint::coordinator::Command;
use crate::state::snapshot::{read_entries, write_file};
use crate::checkpoint::{BarrierKind, CheckpointBarrier, CheckpointStorage, CoordinatorMessage, PendingMigration, TaskState};
use crate::plugin::{Limits, Plugin};
use crate::state::SnapshotTarget;
use crate::metrics::TaskMetrics;
use crate::error::ErrorPolicy;
use crate::operator::{OperatorContext, OperatorFailure, OperatorLogic, Port};
use crate::stream::{Batch, Element, Event, Label, Message, Position, Record};
use crate::timers::{TimeDomain, Timer};
use crate::watermark::{InputWatermarks, Watermark};

/// How an operator task is set up: who it is, how its input arrives, where it reports,
/// and what it restores. [`OperatorTaskSetup::new`] gives a task without a job (no
/// checkpoints, default limits); a job sets the rest.
pub struct OperatorTaskSetup {
    pub uid: Arc<str>,
    pub subtask: u32,
    /// Whether the inputs are keyed: elements get a current key.
    pub keyed: bool,
    /// The router port of the `late` side output, when the job routes one.
    pub late_port: Option<usize>,
    pub on_error: ErrorPolicy,
    pub metrics: Arc<TaskMetrics>,
    pub control: Arc<JobControl>,
    pub checkpointing: Option<Checkpointing>,
    /// The operator's sandbox limits, for a component swapped in by an upgrade.
    pub limits: Limits,
    /// Whether elements at or behind the watermark are taken out before the operator
    /// sees them (job file `late = "drop"`).
    pub drop_late: bool,
    /// A state layout to migrate from, key by key (after a restore from a savepoint).
    pub migrate_from: Option<u32>,
    /// A migration a checkpoint left in progress.
    pub migration: Option<Migration>,
    /// Per input channel: whether it feeds the operator's second input.
    pub second_inputs: Vec<bool>,
    /// How the second input arrives (keyed, broadcast, ...), if there is one.
    pub second_input: Option<crate::stream::Partitioning>,
    /// The operator's `on_error = "skip"`: an error it returns for one element skips
    /// that element, to the `dlq` output's port when there is one.
    pub skip_failed: Option<Option<usize>>,
}

impl OperatorTaskSetup {
    pub fn new(uid: Arc<str>, subtask: u32, keyed: bool, late_port: Option<usize>, on_error: ErrorPolicy) -> Self {
        OperatorTaskSetup {
            uid,
            subtask,
            keyed,
            late_port,
            on_error,
            metrics: Arc::new(TaskMetrics::default()),
            control: Arc::new(JobControl::default()),
            checkpointing: None,
            limits: Limits::default(),
            drop_late: false,
            migrate_from: None,
            migration: None,
            second_inputs: Vec::new(),
            skip_failed: None,
            second_input: None,
        }
    }
}

pub struct OperatorTask {
    uid: Arc<str>,
    subtask: u32,
    logic: Box<dyn OperatorLogic>,
    inputs: Inputs,
    router: Router,
    pub(in crate::task) metrics: Arc<TaskMetrics>,
    control: Arc<JobControl>,
    /// Whether the inputs are keyed: elements get a current key.
    keyed: bool,
    /// Whether elements at or behind the watermark are taken out before the operator
    /// sees them (job file `late = "drop"`); by default operators receive them, as
    /// Flink's process functions do, and decide themselves.
    pub(in crate::task) drop_late: bool,
    /// The router port of the `late` side output, when the job routes one.
    late_port: Option<usize>,
    on_error: ErrorPolicy,
    /// See [`OperatorTaskSetup::skip_failed`].
    pub(in crate::task) skip_failed: Option<Option<usize>>,
    /// Reused buffer for what one call emitted.
    emitted: Vec<(Port, Event)>,
    checkpointing: Option<Checkpointing>,
    /// Elements and timers handed to the operator so far, for pacing the TTL sweep.
    calls: u64,
    /// Reused buffer for the elements of a run.
    run_items: VecDeque<RunItem>,
    /// Reused buffer for the run element each emitted event came from.
    emitted_at: Vec<u32>,
    /// Records sent since the last batch ended, not yet added to `metrics`.
    sent: u64,
    /// The operator's sandbox limits, for a component swapped in by an upgrade.
    limits: Limits,
    /// A state layout to migrate from, key by key (after a restore from a savepoint).
    migrate_from: Option<u32>,
    /// The migration in progress, if any (see [`super::migration`]).
    migration: Option<Migration>,
    /// The logic an upgrade replaced, kept until the upgrade is known to have
    /// succeeded everywhere.
    previous: Option<Previous>,
    /// When the last upgrade's barrier reached this subtask (the last element before it
    /// went to the old component), until the first element reaches the new one.
    paused_since: Option<Instant>,
    /// The component installed for an upgrade, by upgrade id, until its barrier comes.
    staged: Option<(u64, Arc<Plugin>)>,
    /// When the watermark, state size and timer gauges were last published.
    gauges_published: std::time::Instant,
    /// Per input channel: whether it feeds the operator's second input.
    second_inputs: Vec<bool>,
    /// How the second input arrives (keyed, broadcast, ...), if there is one.
    second_input: Option<crate::stream::Partitioning>,
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

/// What rolling back an upgrade needs.
pub struct Previous {
    id: u64,
    logic: Box<dyn OperatorLogic>,
    /// Where the in-place savepoint of this subtask (captured before the swap) goes.
    root: std::path::PathBuf,
    rollback_point: upgrade::RollbackPoint,
    /// The operator lists before the swap.
    operator_state: crate::state::operator::OperatorState,
}

/// About how long one call into an operator may take before a batch is split: a slow
/// operator still serves barriers (and its timers and commands) every so often.
const RUN_TARGET: Duration = Duration::from_millis(10);
/// How long a back-pressured task waits for room before looking at barriers again.
const BACKPRESSURE_WAIT: Duration = Duration::from_millis(5);
/// How long an upgrade (or a restore from a savepoint) migrates keys before going on;
/// the rest migrate lazily. The first slice (64 keys) always runs, so a `migrate` that
/// fails is caught here whatever the budget; more only lengthens the pause.
const UPGRADE_MIGRATION_BUDGET: Duration = Duration::from_millis(5);
/// Every this many elements, the TTL sweep looks at [`SWEEP_BUDGET`] more state entries.
const SWEEP_EVERY: u64 = 256;
/// How often an operator task publishes its watermark, state size and timer count.
const GAUGE_INTERVAL: Duration = Duration::from_millis(500);
const SWEEP_BUDGET: usize = 64;

/// What the task was doing, for error messages.
enum Doing<'a> {
    Opening,
    Element(&'a Position),
    /// One of `count` elements from `first` to `last`, processed in one call (a trap
    /// in a contract 0.3 batch that does not say where it happened).
    Elements { first: &'a Position, last: &'a Position, count: u32 },
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
            Doing::Elements { first, last, count } => write!(
                f,
                "processing one of the {count} elements from {first} to {last} (a batch of contract 0.3 \
                 runs in one call, and the trap left no trace of which element it was in)"
            ),
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
    /// A task running `logic` on `inputs`, routing through `router`, as `setup` says.
    pub fn new(setup: OperatorTaskSetup, logic: Box<dyn OperatorLogic>, inputs: Inputs, router: Router) -> Self {
        let OperatorTaskSetup {
            uid,
            subtask,
            keyed,
            late_port,
            on_error,
            metrics,
            control,
            checkpointing,
            limits,
            drop_late,
            migrate_from,
            migration,
            second_inputs,
            second_input,
            skip_failed,
        } = setup;
        OperatorTask {
            uid,
            subtask,
            logic,
            inputs,
            router,
            metrics,
            control,
            keyed,
            drop_late,
            late_port,
            on_error,
            skip_failed,
            emitted: Vec::new(),
            checkpointing,
            calls: 0,
            run_items: VecDeque::new(),
            emitted_at: Vec::new(),
            sent: 0,
            limits,
            migrate_from,
            migration,
            previous: None,
            staged: None,
            paused_since: None,
            gauges_published: std::time::Instant::now() - GAUGE_INTERVAL,
            second_inputs,
            second_input,
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
        let opening = Position { source: Label::intern(&format!("open of `{}`", self.uid)), unit: Label::at(), offset: 0 };
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

    /// The first element after an upgrade: logs how long the operator was without
    /// elements, from the last one into the old component to this one.
    fn resumed_after_upgrade(&mut self) {
        if let Some(since) = self.paused_since.take() {
            let pause_ms = since.elapsed().as_secs_f64() * 1e3;
            tracing::info!(operator = %self.uid, subtask = self.subtask, pause_ms, "first element into the new component");
        }
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

    fn finish(&mut self) -> Result<(), TaskError> {
        if let Some(cp) = &self.checkpointing {
            let _ = cp.coordinator.send(CoordinatorMessage::Finished { task: cp.task.clone(), state: None });
        }
        self.logic.context().set_current_key(None);
        self.logic.close().map_err(|f| self.failure(Doing::Closing, f))?;
        let closing = Position { source: Label::intern(&format!("close of `{}`", self.uid)), unit: Label::at(), offset: 0 };
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
