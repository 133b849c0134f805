//! The checkpoint coordinator: triggers checkpoints at the sources, collects every
//! task's acknowledgement, writes the metadata, tells sinks to commit, and fails the
//! job after too many declined checkpoints in a row. It also takes savepoints and runs
//! live upgrades on request (see [`Request`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::{BarrierKind, CheckpointBarrier, CheckpointMetadata, CheckpointSettings, CheckpointStorage, CoordinatorMessage, TaskState};
use super::manifest::{OperatorManifest, SavepointManifest};

/// What the coordinator asks of a task.
#[derive(Debug, Clone)]
pub enum Command {
    /// Sources: inject this barrier now.
    Trigger(CheckpointBarrier),
    /// Sinks and sources: checkpoint or savepoint `id` is complete (sinks make its
    /// output visible; Kafka sources commit its offsets).
    Commit(u64),
    /// Sources: the upgrade `id` is over; read on.
    Resume(u64),
    /// Upgraded operator subtasks: whether upgrade `id` succeeded everywhere (keep the
    /// new component) or not (roll back to the old one and its state).
    UpgradeDone { id: u64, ok: bool },
    /// Operator subtasks: the component to swap in at upgrade `id`'s barrier. Sent
    /// before the barrier is triggered.
    Install { id: u64, component: Staged },
    /// Sources whose input has ended: a checkpoint taken since has completed with
    /// nothing in flight, so every task has processed everything; send end of data
    /// (the job finishes).
    Finish,
}

/// A component staged for an upgrade. Checkpointing moves it to the operator tasks
/// without knowing what it is (the operator runtime, a floor above, does), so that
/// this module depends only on what lies below it.
pub type Staged = Arc<dyn std::any::Any + Send + Sync>;

/// The reply to a request: the savepoint's directory and how long it took (an upgrade:
/// how long the sources were paused, from the barrier to every subtask running the new
/// component; a savepoint: from the barrier to completion), or why it failed.
pub type Reply = tokio::sync::oneshot::Sender<Result<(PathBuf, Duration), String>>;

/// What the coordinator needs of the job it serves; the task layer's `JobControl`
/// implements it (so checkpointing depends on nothing above it).
pub trait JobLifecycle: Send + Sync {
    /// Whether the job's tasks are stopping.
    fn is_cancelled(&self) -> bool;
    /// Stops the job for good (after a stop-with-savepoint).
    fn stop(&self);
    /// Fails the job because checkpointing cannot go on.
    fn fail_checkpointing(&self, reason: String);
    /// Ends the job for good: another process took its checkpoints over.
    fn fence(&self, reason: String);
    /// An upgrade of `operator` to `component` completed: its subtasks swapped (the
    /// sources paused for `pause`) and its rollback point is written in `dir`. It is on
    /// probation for `probation` (zero: none); `by` asked for it.
    /// `swapped` says how many of how many subtasks run it (fewer: a canary).
    #[allow(clippy::too_many_arguments)]
    fn upgraded(
        &self,
        operator: &str,
        component: &Staged,
        dir: &std::path::Path,
        pause: Duration,
        probation: Duration,
        swapped: (usize, usize),
        by: Option<String>,
    ) {
        let _ = (operator, component, dir, pause, probation, swapped, by);
    }
    /// A canary's probation passed and the operator's other subtasks swapped too.
    fn canary_passed(&self, operator: &str) {
        let _ = operator;
    }
    /// The newest upgrade's probation passed.
    fn probation_passed(&self) {}
}

/// Requests from the control API.
pub enum Request {
    /// Take a savepoint into `dir`; with `stop`, stop the job right after it (sinks
    /// commit up to the savepoint, nothing after it is emitted).
    Savepoint { dir: PathBuf, stop: bool, reply: Reply },
    /// Replace the component of `operator` with `plugin`, with an in-place savepoint
    /// in `dir`, without restarting the job; then hold commits back for `probation`
    /// (see [`Probation`]).
    /// With `canary` (a share, 0 to 1), only that share of the operator's subtasks (at
    /// least one, never all) swaps first; the others follow once the probation passed.
    Upgrade {
        operator: String,
        component: Staged,
        dir: PathBuf,
        probation: Duration,
        canary: Option<f64>,
        by: Option<String>,
        reply: Reply,
    },
}

/// How long an upgrade stays on probation unless its request says otherwise.
pub const DEFAULT_PROBATION: Duration = Duration::from_secs(60);

/// The probation of a completed upgrade: until it ends, checkpoints complete but their
/// commits (exactly-once sinks' output, source offsets) are held back, so that a
/// rollback to the upgrade's in-place savepoint repeats nothing there. It passes when
/// its time is up, when the input has ended, or when a savepoint completes (which
/// commits what it covers).
struct Probation {
    until: Instant,
    /// The newest checkpoint whose commit is held back.
    held: Option<u64>,
    /// A canary's next step: the operator's other subtasks, upgraded when the canary's
    /// probation passes (one probation covers both steps).
    rest: Option<RestStep>,
}

/// The second step of a canary upgrade.
struct RestStep {
    operator: String,
    component: Staged,
    dir: PathBuf,
    subtasks: Vec<usize>,
    probation: Duration,
    by: Option<String>,
}

/// What an upgrade request brings beside its barrier.
struct UpgradeRequest {
    component: Staged,
    probation: Duration,
    by: Option<String>,
    /// The operator's subtasks that swap in this step.
    subtasks: Vec<usize>,
    /// Of a canary's first step: the subtasks that follow.
    rest: Vec<usize>,
    /// Whether this is a canary's second step.
    proceeding: bool,
}

struct Pending {
    id: u64,
    started: Instant,
    /// From when its barriers overtake in-flight data, if ever.
    unaligned_from: Option<Instant>,
    acks: BTreeMap<String, TaskState>,
    kind: BarrierKind,
    stop: bool,
    reply: Option<Reply>,
    /// An upgrade's subtasks that run the new component.
    swapped: std::collections::BTreeSet<String>,
    /// An upgrade: how long the sources were paused, once they read on (every subtask
    /// swapped; the in-place savepoint is still being written).
    paused: Option<Duration>,
    upgrade: Option<UpgradeRequest>,
}

/// The coordinator's side of the channels; consumed by [`Coordinator::start`].
pub struct Coordinator {
    /// Periodic checkpoints, if the job takes them.
    pub settings: Option<CheckpointSettings>,
    pub storage: Option<CheckpointStorage>,
    pub job: String,
    pub max_parallelism: u32,
    /// Per operator uid: what a savepoint manifest says of it.
    pub operators: BTreeMap<String, OperatorManifest>,
    pub inbox: Receiver<CoordinatorMessage>,
    pub requests: Receiver<Request>,
    pub sources: Vec<Sender<Command>>,
    pub sinks: Vec<Sender<Command>>,
    /// Per operator uid: its subtasks' command channels.
    pub operator_tasks: BTreeMap<String, Vec<Sender<Command>>>,
    /// How many tasks must acknowledge a barrier.
    pub tasks: usize,
    /// The id of the checkpoint the job was restored from (new ids follow it).
    pub last_id: u64,
    pub control: Arc<dyn JobLifecycle>,
    /// Updated as checkpoints complete or fail.
    pub stats: SharedStats,
    /// A cluster task's right to write: a checkpoint completes only while it holds.
    pub lease: Option<Arc<crate::ownership::Lease>>,
    /// The probation of the newest upgrade, while on (`Default::default()` to start).
    pub probation: ProbationSlot,
}

/// Where the coordinator keeps the probation of the newest upgrade.
#[derive(Default)]
pub struct ProbationSlot(std::sync::Mutex<Option<Probation>>);

impl ProbationSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Probation>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Checkpoint statistics of a running job, as Flink's `/jobs/{id}/checkpoints` reports
/// them: counts, and the latest completed and failed checkpoint.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckpointStats {
    pub completed: u64,
    pub failed: u64,
    pub latest_completed: Option<CompletedStats>,
    pub latest_failed: Option<FailedStats>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CompletedStats {
    pub id: u64,
    /// When it completed, in ms since the Unix epoch.
    pub completed_ms: i64,
    /// From the barrier to the metadata written.
    pub duration_ms: u64,
    /// Bytes of the state files it refers to.
    pub state_size: u64,
    /// Of those, the bytes of in-flight data its barriers overtook (Flink's
    /// `persisted_data`).
    pub persisted_data: u64,
    /// Whether its barriers overtook data (it was unaligned, or its alignment timed
    /// out, on some task).
    pub is_unaligned: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedStats {
    pub id: u64,
    pub failed_ms: i64,
    pub cause: String,
}

/// Statistics shared between the coordinator and whoever reports them.
pub type SharedStats = Arc<std::sync::Mutex<CheckpointStats>>;

/// A running coordinator.
pub struct CoordinatorHandle {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl CoordinatorHandle {
    /// Stops the coordinator; returns the id of the last completed checkpoint.
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

impl Coordinator {
    pub fn start(self) -> std::io::Result<CoordinatorHandle> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("checkpoint-coordinator".into())
            .spawn(move || self.run(&flag))?;
        Ok(CoordinatorHandle { stop, thread })
    }

    fn run(self, stop: &AtomicBool) -> u64 {
        let interval = self.settings.as_ref().map(|s| Duration::from_millis(s.interval_ms.max(1)));
        let timeout = Duration::from_millis(self.settings.as_ref().map_or(600_000, |s| s.timeout_ms));
        let min_pause = Duration::from_millis(self.settings.as_ref().map_or(0, |s| s.min_pause_ms));
        let mut next_id = self.last_id + 1;
        let mut completed = self.last_id;
        let mut pending: Option<Pending> = None;
        let mut next_trigger = interval.map(|i| Instant::now() + i);
        let mut failures = 0u32;
        let mut finished = false;
        // Sources that ended, with where they ended.
        let mut finished_sources: BTreeMap<String, TaskState> = BTreeMap::new();
        // Once every source has ended: the first checkpoint id triggered after that.
        // As Flink since FLIP-147, checkpoints go on while the tasks downstream drain
        // what is still in flight; the sources hold back their end of data until one
        // of these completes with nothing in flight (every task has processed
        // everything), then the job finishes.
        let mut draining_from: Option<u64> = None;
        while !stop.load(Ordering::Relaxed) && !self.control.is_cancelled() {
            // Until the next trigger, if one can come; otherwise (a checkpoint pending, the
            // input ended) the trigger time may have passed, and waiting for it would
            // spin: the timeouts and probation are checked every 20 ms.
            let wait = match next_trigger {
                Some(t) if pending.is_none() && !finished => t.saturating_duration_since(Instant::now()),
                _ => Duration::from_millis(20),
            }
            .min(Duration::from_millis(20));
            match self.inbox.recv_timeout(wait) {
                Ok(CoordinatorMessage::Ack { id, task, state }) => {
                    let Some(p) = pending.as_mut().filter(|p| p.id == id) else { continue };
                    p.acks.insert(task, state);
                    let done = self.complete_if_acked(&mut pending, &mut completed, &mut failures);
                    finished |= self.release_if_drained(done, draining_from);
                    if pending.is_none() {
                        next_trigger = next_trigger.map(|t| (Instant::now() + min_pause).max(t));
                    }
                }
                Ok(CoordinatorMessage::Swapped { id, task }) => {
                    let Some(p) = pending.as_mut().filter(|p| p.id == id) else { continue };
                    p.swapped.insert(task);
                    self.resume_if_swapped(p);
                    let done = self.complete_if_acked(&mut pending, &mut completed, &mut failures);
                    finished |= self.release_if_drained(done, draining_from);
                }
                Ok(CoordinatorMessage::Decline { id, task, reason }) => {
                    if let Some(p) = pending.take_if(|p| p.id == id) {
                        let reason = format!("task {task}: {reason}");
                        if p.kind.is_checkpoint() {
                            failures = self.declined(id, &reason, failures + 1);
                        } else {
                            self.abort(p, reason);
                        }
                        next_trigger = next_trigger.map(|t| (Instant::now() + min_pause).max(t));
                    }
                }
                Ok(CoordinatorMessage::Finished { task, state: Some(state) }) => {
                    // A source ended: where it ended is its part of this and every later
                    // checkpoint; checkpoints go on while other sources still run, and
                    // (FLIP-147) after the last one ended, while the job drains.
                    finished_sources.insert(task.clone(), state.clone());
                    if let Some(p) = pending.as_mut() {
                        p.acks.entry(task.clone()).or_insert(state);
                    }
                    let done = self.complete_if_acked(&mut pending, &mut completed, &mut failures);
                    finished |= self.release_if_drained(done, draining_from);
                    if finished_sources.len() >= self.sources.len() && draining_from.is_none() {
                        if interval.is_none() {
                            // No periodic checkpoints to cover the drain: end at once.
                            tracing::debug!(%task, "the last source finished");
                            self.release_sources();
                            finished = true;
                        } else {
                            tracing::info!(%task, from = next_id, "the input has ended; checkpoints go on while the job drains");
                            draining_from = Some(next_id);
                            next_trigger = Some(Instant::now());
                        }
                    }
                }
                Ok(CoordinatorMessage::Finished { task, state: None }) => {
                    // As in Flink before FLIP-147: once a task other than a source has
                    // finished, no further checkpoint can complete, so none is started.
                    tracing::debug!(%task, "a task finished; no further checkpoints");
                    finished = true;
                    if let Some(p) = pending.take().filter(|p| !p.kind.is_checkpoint()) {
                        self.abort(p, "the job's input ended first".into());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let probation_over = self.probation.lock().as_ref().map(|p| Instant::now() >= p.until);
            let next_step = match probation_over {
                Some(true) if pending.is_none() => self.probation.lock().as_mut().and_then(|p| p.rest.take()),
                _ => None,
            };
            if let Some(rest) = next_step {
                let id = next_id;
                next_id += 1;
                if let Some(p) = self.probation.lock().as_mut() {
                    p.until = Instant::now() + Duration::from_secs(u32::MAX as u64); // until the step completes
                }
                let mut step = self.proceed(id, rest);
                step.acks.extend(finished_sources.clone());
                pending = Some(step);
            } else if probation_over == Some(true) && pending.is_none() {
                self.end_probation("its time is up");
            } else if probation_over.is_some() && draining_from.is_some() {
                self.end_probation("the input has ended");
            }
            if pending.as_ref().is_some_and(|p| p.started.elapsed() > timeout) {
                let p = pending.take().expect("present");
                let reason = format!("not complete after {timeout:?}");
                if p.kind.is_checkpoint() {
                    failures = self.declined(p.id, &reason, failures + 1);
                } else {
                    self.abort(p, reason);
                }
            }
            if pending.is_some() {
                continue;
            }
            if let Ok(request) = self.requests.try_recv() {
                let id = next_id;
                next_id += 1;
                pending = self.trigger_request(id, request, finished);
                if let Some(p) = pending.as_mut() {
                    p.acks.extend(finished_sources.clone());
                }
                continue;
            }
            if !finished && next_trigger.is_some_and(|t| Instant::now() >= t) {
                let id = next_id;
                next_id += 1;
                tracing::debug!(checkpoint = id, "triggering");
                let unaligned_from = self.settings.as_ref().and_then(|s| s.unaligned_from(Instant::now()));
                self.trigger(CheckpointBarrier { id, kind: BarrierKind::Checkpoint, unaligned_from });
                pending = Some(Pending {
                    id,
                    started: Instant::now(),
                    unaligned_from,
                    acks: finished_sources.clone(),
                    kind: BarrierKind::Checkpoint,
                    stop: false,
                    reply: None,
                    swapped: Default::default(),
                    paused: None,
                    upgrade: None,
                });
                next_trigger = interval.map(|i| Instant::now() + i);
            }
        }
        // Requests still waiting learn that the job ended.
        while let Ok(request) = self.requests.try_recv() {
            let (Request::Savepoint { reply, .. } | Request::Upgrade { reply, .. }) = request;
            let _ = reply.send(Err("the job has stopped".into()));
        }
        completed
    }

    /// Completes the pending checkpoint or savepoint once every task has acknowledged
    /// it. Returns a periodic checkpoint that completed: its id, and whether its
    /// barriers overtook data (then not everything before them was processed).
    fn complete_if_acked(&self, pending: &mut Option<Pending>, completed: &mut u64, failures: &mut u32) -> Option<(u64, bool)> {
        let upgrading = |p: &Pending| matches!(p.kind, BarrierKind::Upgrade { .. }) && p.paused.is_none();
        if pending.as_ref().is_none_or(|p| p.acks.len() < self.tasks || upgrading(p)) {
            return None;
        }
        let p = pending.take().expect("present");
        let (id, periodic) = (p.id, p.kind.is_checkpoint());
        let overtook = p.acks.values().any(TaskState::has_channel_state);
        match self.complete(p) {
            Ok(()) if periodic => {
                *completed = id;
                *failures = 0;
                return Some((id, overtook));
            }
            Ok(()) => {}
            Err(reason) if periodic => *failures = self.declined(id, &reason, *failures + 1),
            Err(_) => {}
        }
        None
    }

    /// Lets the sources end once a checkpoint triggered after every source ended has
    /// completed without overtaking data: every task has processed everything, and
    /// that checkpoint covers it. Returns whether it did.
    fn release_if_drained(&self, completed: Option<(u64, bool)>, draining_from: Option<u64>) -> bool {
        match (completed, draining_from) {
            (Some((id, false)), Some(from)) if id >= from => {
                tracing::debug!(checkpoint = id, "the job has drained; the sources end");
                self.release_sources();
                true
            }
            _ => false,
        }
    }

    fn release_sources(&self) {
        for source in &self.sources {
            let _ = source.send(Command::Finish);
        }
    }

    fn trigger(&self, barrier: CheckpointBarrier) {
        for source in &self.sources {
            let _ = source.send(Command::Trigger(barrier.clone()));
        }
    }

    /// Starts what a request asks for; `None` when it is refused at once.
    fn trigger_request(&self, id: u64, request: Request, finished: bool) -> Option<Pending> {
        let mut upgrade = None;
        let (kind, stop, reply) = match request {
            Request::Savepoint { dir, stop, reply } => {
                if self.probation.lock().as_ref().is_some_and(|p| p.rest.is_some()) {
                    let _ = reply.send(Err("an upgrade's canary is running (the operator runs two versions); take \
                                            the savepoint once its probation passed"
                        .into()));
                    return None;
                }
                (BarrierKind::Savepoint { dir: Arc::new(dir), stop }, stop, reply)
            }
            Request::Upgrade { operator, component, dir, probation, canary, by, reply } => {
                let Some(tasks) = self.operator_tasks.get(&operator) else {
                    let _ = reply.send(Err(format!("the job has no operator `{operator}`")));
                    return None;
                };
                if let Some(p) = self.probation.lock().as_ref() {
                    let left = p.until.saturating_duration_since(Instant::now()).as_secs() + 1;
                    let _ = reply.send(Err(format!(
                        "the last upgrade is on probation for {left} s more; upgrade again after it passes"
                    )));
                    return None;
                }
                if finished {
                    let _ = reply.send(Err("the job's input has ended; savepoints need a running job".into()));
                    return None;
                }
                let all: Vec<usize> = (0..tasks.len()).collect();
                let (first, rest) = match canary {
                    Some(share) if tasks.len() > 1 => {
                        let count = ((tasks.len() as f64 * share).ceil() as usize).clamp(1, tasks.len() - 1);
                        (all[..count].to_vec(), all[count..].to_vec())
                    }
                    _ => (all, Vec::new()),
                };
                for &subtask in &first {
                    let _ = tasks[subtask].send(Command::Install { id, component: component.clone() });
                }
                upgrade = Some(UpgradeRequest { component, probation, by, subtasks: first, rest, proceeding: false });
                (BarrierKind::Upgrade { dir: Arc::new(dir), operator: operator.as_str().into() }, false, reply)
            }
        };
        if finished {
            let _ = reply.send(Err("the job's input has ended; savepoints need a running job".into()));
            return None;
        }
        tracing::info!(id, dir = ?kind.savepoint_dir(), "triggering a savepoint");
        self.trigger(CheckpointBarrier::aligned(id, kind.clone()));
        let started = Instant::now();
        Some(Pending {
            id,
            started,
            unaligned_from: None,
            acks: BTreeMap::new(),
            kind,
            stop,
            reply: Some(reply),
            swapped: Default::default(),
            paused: None,
            upgrade,
        })
    }

    /// Tells the subtasks that swapped in an upgrade step whether it succeeded.
    fn upgrade_done(&self, operator: &str, pending: &Pending, ok: bool) {
        let tasks = self.operator_tasks.get(operator).map(Vec::as_slice).unwrap_or_default();
        for &subtask in pending.upgrade.as_ref().map(|u| u.subtasks.as_slice()).unwrap_or_default() {
            if let Some(task) = tasks.get(subtask) {
                let _ = task.send(Command::UpgradeDone { id: pending.id, ok });
            }
        }
    }

    /// An upgrade step completed: recorded, and on probation (a canary's first step
    /// keeps its next one for when the probation passes).
    fn on_probation(&self, operator: &str, upgrade: &UpgradeRequest, dir: &std::path::Path, pause: Duration) {
        let total = self.operator_tasks.get(operator).map_or(0, Vec::len);
        if upgrade.proceeding {
            self.control.canary_passed(operator);
        } else {
            let swapped = (upgrade.subtasks.len(), total);
            self.control.upgraded(operator, &upgrade.component, dir, pause, upgrade.probation, swapped, upgrade.by.clone());
        }
        let rest = (!upgrade.rest.is_empty()).then(|| RestStep {
            operator: operator.to_string(),
            component: upgrade.component.clone(),
            dir: dir.with_file_name(format!("{}-rest", dir.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())),
            subtasks: upgrade.rest.clone(),
            probation: upgrade.probation,
            by: upgrade.by.clone(),
        });
        let mut probation = self.probation.lock();
        if upgrade.probation.is_zero() && rest.is_none() {
            drop(probation);
            return self.end_probation("the upgrade has no probation");
        }
        let held = probation.as_ref().and_then(|p| p.held);
        tracing::info!(
            %operator,
            subtasks = upgrade.subtasks.len(),
            of = total,
            probation_s = upgrade.probation.as_secs_f64(),
            "the upgrade is on probation; commits are held until it passes"
        );
        *probation = Some(Probation { until: Instant::now() + upgrade.probation, held, rest });
    }

    /// A canary's probation passed: its next step, the operator's other subtasks, as an
    /// upgrade of their own (on the same probation, whose commits stay held).
    fn proceed(&self, id: u64, rest: RestStep) -> Pending {
        tracing::info!(operator = %rest.operator, subtasks = rest.subtasks.len(), "the canary passed; upgrading the other subtasks");
        let tasks = &self.operator_tasks[&rest.operator];
        for &subtask in &rest.subtasks {
            let _ = tasks[subtask].send(Command::Install { id, component: rest.component.clone() });
        }
        let kind = BarrierKind::Upgrade { dir: Arc::new(rest.dir), operator: rest.operator.as_str().into() };
        self.trigger(CheckpointBarrier::aligned(id, kind.clone()));
        let upgrade = UpgradeRequest {
            component: rest.component,
            probation: rest.probation,
            by: rest.by,
            subtasks: rest.subtasks,
            rest: Vec::new(),
            proceeding: true,
        };
        Pending {
            id,
            started: Instant::now(),
            unaligned_from: None,
            acks: BTreeMap::new(),
            kind,
            stop: false,
            reply: None,
            swapped: Default::default(),
            paused: None,
            upgrade: Some(upgrade),
        }
    }

    /// Ends a probation, if one is on: the commits it held go out, and the upgrade
    /// stays.
    fn end_probation(&self, why: &str) {
        let Some(probation) = self.probation.lock().take() else { return };
        tracing::info!(why, held = ?probation.held, "the probation is over");
        if let Some(id) = probation.held {
            for task in self.sinks.iter().chain(&self.sources) {
                let _ = task.send(Command::Commit(id));
            }
        }
        self.control.probation_passed();
    }

    /// An upgrade whose subtasks all run the new component: the sources read on (the
    /// pause ends here, before the in-place savepoint is written).
    fn resume_if_swapped(&self, pending: &mut Pending) {
        let BarrierKind::Upgrade { operator, .. } = &pending.kind else { return };
        let subtasks = pending.upgrade.as_ref().map_or(0, |u| u.subtasks.len());
        if pending.paused.is_some() || pending.swapped.len() < subtasks {
            return;
        }
        let paused = pending.started.elapsed();
        pending.paused = Some(paused);
        tracing::info!(id = pending.id, %operator, pause_ms = paused.as_millis() as u64, "every subtask swapped; the sources read on");
        for source in &self.sources {
            let _ = source.send(Command::Resume(pending.id));
        }
    }

    /// A savepoint or upgrade that cannot complete: tell whoever asked, resume paused
    /// sources and roll back upgraded subtasks. An upgrade whose subtasks all swapped
    /// (the sources read on) is not rolled back: the new component has processed
    /// elements since, and only its rollback point is missing.
    fn abort(&self, pending: Pending, reason: String) {
        tracing::warn!(id = pending.id, %reason, "savepoint failed");
        let swapped = pending.paused.is_some();
        if let BarrierKind::Upgrade { operator, .. } = &pending.kind {
            self.upgrade_done(operator, &pending, swapped);
            let total = self.operator_tasks.get(&**operator).map_or(0, Vec::len);
            match pending.upgrade.as_ref().filter(|u| swapped && !u.proceeding) {
                // A canary without its rollback point: the operator cannot stay half
                // upgraded, and the job fails back to its last checkpoint, taken before
                // the upgrade (nothing since was committed).
                Some(upgrade) if upgrade.subtasks.len() < total => {
                    self.control.fail_checkpointing(format!("a canary upgrade lost its rollback point: {reason}"));
                }
                // The new component stays, without a rollback point: no probation.
                Some(upgrade) => {
                    let dir = pending.kind.savepoint_dir().cloned().unwrap_or_default();
                    let (pause, swapped) = (pending.paused.unwrap_or_default(), (total, total));
                    self.control.upgraded(operator, &upgrade.component, &dir, pause, Duration::ZERO, swapped, upgrade.by.clone());
                }
                None => {}
            }
            if pending.upgrade.as_ref().is_some_and(|u| u.proceeding) && !swapped {
                // The canary's subtasks run the new version, the others cannot: the job
                // fails on probation, which rolls the whole upgrade back.
                self.control.fail_checkpointing(format!("the upgrade could not proceed past its canary: {reason}"));
            }
        }
        if pending.kind.pauses_sources() && !swapped {
            for source in &self.sources {
                let _ = source.send(Command::Resume(pending.id));
            }
        }
        if let Some(reply) = pending.reply {
            let reason = match swapped {
                true => format!("the new component runs, but its in-place savepoint (the rollback point) is incomplete: {reason}"),
                false => reason,
            };
            let _ = reply.send(Err(reason));
        }
    }

    fn complete(&self, pending: Pending) -> Result<(), String> {
        match &pending.kind {
            BarrierKind::Checkpoint => self.complete_checkpoint(pending),
            BarrierKind::Savepoint { dir, .. } | BarrierKind::Upgrade { dir, .. } => {
                let dir = (**dir).clone();
                let manifest = SavepointManifest::new(
                    &self.job,
                    self.max_parallelism,
                    self.operators.clone(),
                    pending.acks.clone(),
                );
                if let Err(e) = manifest.write(&dir) {
                    let reason = format!("writing the savepoint manifest in {}: {e}", dir.display());
                    self.abort(pending, reason.clone());
                    return Err(reason);
                }
                match self.probation.lock().as_mut() {
                    // A canary's second step: what it covers includes the canary's output.
                    Some(probation) => probation.held = Some(pending.id),
                    None => {
                        for task in self.sinks.iter().chain(&self.sources) {
                            let _ = task.send(Command::Commit(pending.id));
                        }
                    }
                }
                if let BarrierKind::Upgrade { operator, .. } = &pending.kind {
                    self.upgrade_done(operator, &pending, true);
                    if let Some(upgrade) = &pending.upgrade {
                        self.on_probation(operator, upgrade, &dir, pending.paused.unwrap_or_default());
                    }
                } else {
                    // A savepoint commits what it covers: a probation ends with it.
                    self.end_probation("a savepoint completed");
                }
                tracing::info!(id = pending.id, dir = %dir.display(), duration_ms = pending.started.elapsed().as_millis() as u64, "savepoint complete");
                // An upgrade reports its pause; a savepoint, its time from barrier to done.
                let elapsed = pending.paused.unwrap_or_else(|| pending.started.elapsed());
                if let Some(reply) = pending.reply {
                    let _ = reply.send(Ok((dir, elapsed)));
                }
                if pending.stop {
                    self.control.stop();
                }
                Ok(())
            }
        }
    }

    fn complete_checkpoint(&self, pending: Pending) -> Result<(), String> {
        let storage = self.storage.as_ref().ok_or("no checkpoint storage")?;
        if self.lease.as_ref().is_some_and(|lease| !lease.is_valid()) {
            return Err("this member's hold on the task lapsed (it stalled, or left the group); the checkpoint \
                        is not written"
                .into());
        }
        if let Err(reason) = storage.check_owner() {
            self.control.fence(reason.clone());
            return Err(reason);
        }
        let metadata = CheckpointMetadata {
            format: 1,
            job: self.job.clone(),
            id: pending.id,
            created_ms: crate::clock::now_ms(),
            tasks: pending.acks,
        };
        storage.complete(&metadata)?;
        match self.probation.lock().as_mut() {
            Some(probation) => probation.held = Some(pending.id),
            None => {
                for task in self.sinks.iter().chain(&self.sources) {
                    let _ = task.send(Command::Commit(pending.id));
                }
            }
        }
        if let Some(settings) = &self.settings {
            storage.retain(settings.retained);
        }
        let duration_ms = pending.started.elapsed().as_millis() as u64;
        let persisted_data = metadata.in_flight_bytes();
        let is_unaligned = pending.unaligned_from.is_some_and(|from| Instant::now() >= from);
        tracing::info!(checkpoint = pending.id, duration_ms, is_unaligned, persisted_data, "checkpoint complete");
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.completed += 1;
        stats.latest_completed = Some(CompletedStats {
            id: pending.id,
            completed_ms: metadata.created_ms,
            duration_ms,
            state_size: metadata.files().map(|f| f.size).sum(),
            persisted_data,
            is_unaligned,
        });
        Ok(())
    }

    /// Counts a declined checkpoint; fails the job past the tolerable number.
    fn declined(&self, id: u64, reason: &str, failures: u32) -> u32 {
        let tolerable = self.settings.as_ref().map_or(0, |s| s.tolerable_failures);
        tracing::warn!(checkpoint = id, failures, %reason, "checkpoint declined");
        {
            let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            stats.failed += 1;
            stats.latest_failed = Some(FailedStats { id, failed_ms: crate::clock::now_ms(), cause: reason.to_string() });
        }
        if failures > tolerable {
            self.control.fail_checkpointing(format!(
                "{failures} checkpoints in a row failed (tolerable_failures = {tolerable}); last: checkpoint {id}: {reason}"
            ));
        }
        failures
    }
}
