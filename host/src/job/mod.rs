//! # Jobs
//!
//! A [`Job`] is a validated [`JobSpec`] with its components compiled. Running it wires
//! one task per source, operator subtask and sink with bounded channels, runs them on
//! their own threads, and returns a [`JobSummary`] when the inputs end (or the job is
//! cancelled), or the first task failure.
//!
//! ```no_run
//! use weir::job::{Job, JobOptions};
//! let job = Job::load("examples/word-count/job.toml".as_ref(), &JobOptions::default())?;
//! let summary = job.run()?;
//! println!("{summary}");
//! # Ok::<(), weir::job::JobError>(())
//! ```

mod connectors;
pub mod lock;
pub mod metrics;
pub mod spec;
mod suggest;
pub mod upgrades;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, unbounded};

pub use metrics::{JobSummary, LatencySummary, NodeSummary};
pub use spec::{JobSpec, SpecError};

use crate::api::ControlServer;
use crate::checkpoint::{
    CheckpointStorage, CompletedCheckpoint, Coordinator, CoordinatorMessage, Request, TaskState, task_id,
};
use crate::keygroup::KeyGroupRange;
use crate::savepoint::{OperatorManifest, Savepoint, SavepointError};
use crate::operator::{OperatorContext, OperatorInfo, OperatorLogic, native};
use crate::window::WindowOperator;
use crate::plugin::{Plugin, PluginError, Runtime};
use crate::sink::SinkError;
use crate::source::SourceError;
use crate::sink::Delivery;
use crate::state::{KeyedState, MemoryBackend, RocksBackend, StateBackend};
use crate::timers::TimerService;
use crate::checkpoint::channels::ChannelState;
use crate::task::inputs::Inputs;
use crate::task::migration::Migration;
use crate::task::operator::{OperatorTask, OperatorTaskSetup};
use crate::task::channel::{ChannelReceiver, channel};
use crate::task::output::{Batching, EdgeOutput, Router};
use crate::task::sink::SinkTask;
use crate::task::source::SourceTask;
use crate::task::{Checkpointing, JobControl, TaskError};
use metrics::TaskMetrics;
use crate::error::Retry;
use spec::{BackendKind, LateHandling, TimerStoreKind, NodeKind, Partitioning, RestartStrategy};

/// Why a job could not start or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(
        "operator `{uid}`: component `{name}` not found (looked at {searched}); build it \
         or pass its directory with --plugin-dir"
    )]
    ComponentNotFound { uid: String, name: String, searched: String },
    #[error(
        "operator `{uid}`: component {path} is a directory, not a component; name the .wasm \
         file, or build one from the sources with `weir build {path}`"
    )]
    ComponentIsDirectory { uid: String, path: String },
    #[error("operator `{uid}`: {error}")]
    Plugin { uid: String, error: PluginError },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The job cannot resume from its checkpoints or savepoint.
    #[error("cannot restore job `{job}`: {message}")]
    Restore { job: String, message: String },
    #[error(transparent)]
    Savepoint(#[from] SavepointError),
    /// A task failed; the job was stopped and what it had accepted was flushed.
    #[error("{error}")]
    Failed { error: TaskError, summary: Box<JobSummary> },
    /// The job needs a part this weir was built without (RocksDB).
    #[error("job `{job}`: {what}")]
    NotBuilt { job: String, what: &'static str },
    /// Another process (or this one) runs the job: nothing was touched.
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

/// How a host runs jobs.
#[derive(Debug, Clone, Default)]
pub struct JobOptions {
    /// Directories searched for components named by a bare file name.
    pub plugin_dirs: Vec<PathBuf>,
    /// Ignore existing checkpoints and start from the beginning.
    pub fresh: bool,
    /// Start from this savepoint (then restarts use newer checkpoints).
    pub from_savepoint: Option<PathBuf>,
    /// Start even if the savepoint holds state of operators the job no longer has.
    pub allow_non_restored_state: bool,
    /// Serve the control API on this address (port 0: any free port).
    pub control: Option<SocketAddr>,
    /// A cluster task's right to write ([`crate::ownership::Lease`]): output and
    /// checkpoints wait for it. None: always.
    pub lease: Option<Arc<crate::ownership::Lease>>,
}

/// Checks that `savepoint` can start `spec`: the same max parallelism, and no state
/// of uids the job lacks unless `allow_non_restored_state` (then it is dropped, with a
/// warning). Also what a cluster checks once for all its tasks.
pub(crate) fn check_savepoint(spec: &JobSpec, savepoint: &Savepoint, allow_non_restored_state: bool) -> Result<(), String> {
    let saved = savepoint.manifest.max_parallelism;
    if saved != spec.max_parallelism {
        return Err(format!(
            "the savepoint was taken at max_parallelism {saved}, the job has {}; key groups \
             cannot be remapped, so set max_parallelism = {saved}",
            spec.max_parallelism
        ));
    }
    let mut unmatched: Vec<String> = savepoint
        .operators_with_state()
        .into_iter()
        .filter(|uid| !spec.operators.iter().any(|o| &o.uid == uid))
        .collect();
    unmatched.extend(savepoint.manifest.tasks.iter().filter_map(|(task, state)| {
        let uid = task.rsplit_once('#').map_or(task.as_str(), |(u, _)| u);
        let matched = match state {
            TaskState::Source { .. } => spec.sources.iter().any(|s| s.uid() == uid),
            TaskState::Sink { .. } => spec.sinks.iter().any(|s| s.uid() == uid),
            TaskState::Operator { .. } => true,
        };
        (!matched).then(|| uid.to_string())
    }));
    if !unmatched.is_empty() && !allow_non_restored_state {
        return Err(format!(
            "the savepoint has state for uids the job does not have: {}; keep their uids, or \
             pass --allow-non-restored-state to drop that state",
            unmatched.join(", ")
        ));
    }
    if !unmatched.is_empty() {
        tracing::warn!(uids = %unmatched.join(", "), "dropping savepoint state of operators the job no longer has");
    }
    Ok(())
}

/// Where an attempt starts from.
#[derive(Clone, Copy)]
enum Restore<'a> {
    Checkpoint(&'a CompletedCheckpoint),
    Savepoint(&'a Savepoint),
}

impl<'a> Restore<'a> {
    fn tasks(self) -> &'a BTreeMap<String, TaskState> {
        match self {
            Restore::Checkpoint(c) => &c.metadata.tasks,
            Restore::Savepoint(s) => &s.manifest.tasks,
        }
    }

    fn checkpoint_id(self) -> u64 {
        match self {
            Restore::Checkpoint(c) => c.metadata.id,
            Restore::Savepoint(_) => 0,
        }
    }
}

/// A job ready to run.
pub struct Job {
    spec: JobSpec,
    /// The Wasm engine; its epoch ticker enforces call deadlines, and upgrades compile
    /// new components with it.
    runtime: Arc<Runtime>,
    plugins: HashMap<String, Arc<Plugin>>,
    /// Live upgrades: the components they installed, the probation, the history.
    upgrades: Arc<upgrades::Upgrades>,
    /// The window function components of each window operator, in the order of
    /// [`crate::window::WindowSpec::components`].
    functions: HashMap<String, Vec<crate::plugin::window::FunctionPlugin>>,
    control: Arc<JobControl>,
    options: JobOptions,
    /// Savepoint, stop and upgrade requests, from the control API or a server.
    requests: (crossbeam_channel::Sender<Request>, crossbeam_channel::Receiver<Request>),
    /// The counters of the attempt running now, for live metrics.
    live: LiveMetrics,
    checkpoint_stats: crate::checkpoint::coordinator::SharedStats,
}

/// A running job's counters, readable while it runs (the deployment server's metrics).
#[derive(Clone, Default)]
pub struct LiveMetrics {
    nodes: Arc<std::sync::Mutex<(Vec<(String, NodeKind, Vec<Arc<TaskMetrics>>)>, Option<std::time::Instant>)>>,
    /// Failures over every attempt, by node (empty: none named) and cause.
    failures: Arc<std::sync::Mutex<BTreeMap<(String, &'static str), u64>>>,
}

impl LiveMetrics {
    /// Counts a task failure (each one ends an attempt).
    fn record_failure(&self, error: &TaskError) {
        let key = (error.node().unwrap_or_default().to_string(), error.cause());
        *self.failures.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default() += 1;
    }

    /// Failures so far, by node and cause (`trap`, `deadline`, `error`, `source`, ...).
    pub fn failures(&self) -> BTreeMap<(String, &'static str), u64> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records in and out per node of the current attempt, so far.
    pub fn snapshot(&self) -> JobSummary {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = nodes.1.map(|t| t.elapsed()).unwrap_or_default();
        JobSummary::collect("", elapsed, &nodes.0, false)
    }
}

impl Job {
    /// Loads a job file and compiles its components.
    pub fn load(path: &Path, options: &JobOptions) -> Result<Job, JobError> {
        Job::new(JobSpec::load(path)?, options)
    }

    /// Compiles the components of `spec` and checks them against the operator world.
    pub fn new(spec: JobSpec, options: &JobOptions) -> Result<Job, JobError> {
        #[cfg(not(feature = "rocksdb"))]
        if spec.state.backend == BackendKind::Rocksdb {
            return Err(JobError::NotBuilt { job: spec.name.clone(), what: crate::state::ROCKSDB_ABSENT });
        }
        let mut plugins = HashMap::new();
        let runtime = Arc::new(Runtime::new()?);
        for op in &spec.operators {
            let Some(name) = &op.component else { continue };
            let path = resolve_component(&spec, &op.uid, name, &options.plugin_dirs)?;
            let plugin = runtime.load(&path).map_err(|error| JobError::Plugin { uid: op.uid.clone(), error })?;
            tracing::info!(operator = %op.uid, component = %path.display(), digest = plugin.digest(), "loaded component");
            plugins.insert(op.uid.clone(), Arc::new(plugin));
        }
        let mut functions = HashMap::new();
        for op in &spec.operators {
            let Some(window) = &op.window else { continue };
            let mut loaded = Vec::new();
            for (name, kind) in window.components() {
                let path = resolve_component(&spec, &op.uid, name, &options.plugin_dirs)?;
                let plugin = runtime
                    .load_function(&path, kind)
                    .map_err(|error| JobError::Plugin { uid: op.uid.clone(), error })?;
                tracing::info!(operator = %op.uid, component = %path.display(), ?kind, "loaded window function");
                loaded.push(plugin);
            }
            functions.insert(op.uid.clone(), loaded);
        }
        let upgrades = upgrades::Upgrades::open(&spec.work_dir())
            .map_err(|message| JobError::Restore { job: spec.name.clone(), message: format!("reading the upgrade history: {message}") })?;
        Ok(Job {
            spec,
            runtime,
            plugins,
            upgrades: Arc::new(upgrades),
            functions,
            control: Arc::default(),
            options: options.clone(),
            requests: crossbeam_channel::unbounded(),
            live: LiveMetrics::default(),
            checkpoint_stats: Default::default(),
        })
    }

    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }

    /// A handle to cancel the job from another thread (Ctrl-C).
    pub fn control(&self) -> Arc<JobControl> {
        self.control.clone()
    }

    /// Where to send savepoint, stop and upgrade requests while the job runs (what the
    /// control API and the deployment server do).
    pub fn requests(&self) -> crossbeam_channel::Sender<Request> {
        self.requests.0.clone()
    }

    /// Checkpoint counts and the latest completed and failed checkpoint, over all of the
    /// job's attempts.
    pub fn checkpoint_stats(&self) -> crate::checkpoint::coordinator::SharedStats {
        self.checkpoint_stats.clone()
    }

    /// The job's counters while it runs.
    pub fn live_metrics(&self) -> LiveMetrics {
        self.live.clone()
    }

    /// Every live upgrade of the job, oldest first, with its outcome.
    pub fn upgrade_history(&self) -> Vec<upgrades::UpgradeRecord> {
        self.upgrades.history()
    }

    /// The job's live upgrades (shared with whoever reports them).
    pub fn upgrades(&self) -> Arc<upgrades::Upgrades> {
        self.upgrades.clone()
    }

    /// The Wasm runtime the job's components run on (an upgrade compiles with it).
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.clone()
    }

    /// Runs the job to completion, or until stopped. With checkpoints, it resumes from
    /// the latest completed checkpoint (unless `fresh`), and restarts from the latest
    /// checkpoint after a task failure as the restart strategy allows.
    pub fn run(self) -> Result<JobSummary, JobError> {
        // First of all: a second start of a running job is refused before it reads or
        // clears anything (checkpoints, state, the control API's files). A job that
        // keeps none of these (memory state, no checkpoints, no control API: what
        // tests and embedders run) may run beside itself.
        let keeps_files = self.spec.checkpoint.is_some()
            || self.spec.state.backend == BackendKind::Rocksdb
            || self.options.control.is_some();
        let _lock = if keeps_files { Some(lock::JobLock::acquire(&self.spec.work_dir(), &self.spec.name)?) } else { None };
        let restore_error = |message: String| JobError::Restore { job: self.spec.name.clone(), message };
        let storage = match (self.spec.checkpoint_dir(), &self.spec.checkpoint) {
            (Some(dir), Some(settings)) => Some(
                CheckpointStorage::open(dir, self.spec.checkpoint_store(), &settings.store_options)
                    .map_err(|e| restore_error(e.to_string()))?,
            ),
            _ => None,
        };
        let mut savepoint = match &self.options.from_savepoint {
            Some(dir) => Some(self.check_savepoint(self.load_savepoint(dir)?)?),
            None => None,
        };
        if let Some(storage) = &storage {
            storage.claim().map_err(restore_error)?;
        }
        if self.spec.state.backend == BackendKind::Rocksdb {
            RocksBackend::OWNED.claim(&self.spec.state_dir()).map_err(|e| restore_error(e.to_string()))?;
        }
        // A savepoint or a finished job starts a new line of checkpoints.
        let fresh = self.options.fresh || savepoint.is_some() || storage.as_ref().is_some_and(|s| s.is_finished());
        if let Some(storage) = &storage {
            if fresh {
                storage.clear().map_err(restore_error)?;
            }
            // Before reading the newest checkpoint: a process that wrote them before
            // cannot complete another one once this one has taken them over.
            storage.take_ownership().map_err(restore_error)?;
        }
        let mut restore = match &storage {
            Some(storage) if !fresh => storage.latest().map_err(restore_error)?,
            _ => None,
        };
        if restore.is_some() {
            // Going on from a checkpoint: with the components live upgrades installed,
            // or back to the rollback point of one this process left on probation.
            let job_file = self.plugins.iter().map(|(uid, p)| (uid.clone(), upgrades::ComponentRef::of(p))).collect();
            let rollback = self
                .upgrades
                .resume(&job_file, |path| self.runtime.load(path).map_err(|e| e.to_string()))
                .map_err(restore_error)?;
            if let Some(rollback) = rollback {
                savepoint = Some(self.roll_back(&rollback, storage.as_ref())?);
                restore = None;
            }
        } else {
            self.upgrades.started_afresh();
        }
        let (requests, requests_rx) = self.requests.clone();
        let _server = match self.options.control {
            Some(bind) => Some(
                ControlServer::start(
                    bind,
                    &self.spec.name,
                    &self.spec.work_dir(),
                    &self.spec.base_dir,
                    requests,
                    self.runtime.clone(),
                    self.control.clone(),
                    self.upgrades.clone(),
                )
                .map_err(|e| JobError::Internal(anyhow::anyhow!("cannot start the control API on {bind}: {e}")))?,
            ),
            None => None,
        };
        let mut restarts = 0;
        loop {
            let from = match (&restore, &savepoint) {
                (Some(checkpoint), _) => Some(Restore::Checkpoint(checkpoint)),
                (None, Some(savepoint)) => Some(Restore::Savepoint(savepoint)),
                (None, None) => None,
            };
            match from {
                Some(Restore::Checkpoint(c)) => {
                    tracing::info!(job = %self.spec.name, checkpoint = c.metadata.id, "restoring from checkpoint")
                }
                Some(Restore::Savepoint(s)) => {
                    tracing::info!(job = %self.spec.name, savepoint = %s.dir.display(), "restoring from savepoint")
                }
                None => {}
            }
            match self.run_attempt(storage.as_ref(), from, requests_rx.clone()) {
                Ok(mut summary) => {
                    summary.restarts = restarts;
                    if let Some(storage) = storage.as_ref().filter(|_| !summary.cancelled) {
                        if let Err(e) = storage.mark_finished() {
                            tracing::warn!(error = %e, "could not mark the job finished");
                        }
                    }
                    // A finished job's working databases are of no further use (a
                    // restart starts fresh, a restore rebuilds them from a checkpoint):
                    // weir's own entries of the state directory go, nothing else.
                    if !summary.cancelled && self.spec.state.backend == BackendKind::Rocksdb {
                        if let Err(e) = RocksBackend::OWNED.clear(&self.spec.state_dir()) {
                            tracing::warn!(error = %e, "could not remove the finished job's working databases");
                        }
                    }
                    return Ok(summary);
                }
                Err(JobError::Failed { error, mut summary }) => {
                    self.live.record_failure(&error);
                    summary.restarts = restarts;
                    if let Some(rollback) = self.upgrades.failed(&error.to_string()).filter(|_| !self.control.is_stopped()) {
                        savepoint = Some(self.roll_back(&rollback, storage.as_ref())?);
                        restore = None;
                        self.control.reset();
                        continue;
                    }
                    if error.retry() == Retry::Never && self.spec.restart != RestartStrategy::None {
                        tracing::warn!(
                            job = %self.spec.name,
                            domain = %error.domain(),
                            cause = %error,
                            "not restarting: a restart from the last checkpoint would meet this failure again"
                        );
                        return Err(JobError::Failed { error, summary });
                    }
                    let delay = self.spec.restart.delay(restarts + 1).filter(|_| !self.control.is_stopped());
                    let Some(delay) = delay else {
                        return Err(JobError::Failed { error, summary });
                    };
                    restarts += 1;
                    tracing::warn!(
                        job = %self.spec.name,
                        restart = restarts,
                        delay_ms = delay.as_millis() as u64,
                        cause = %error,
                        "task failed; restarting from the latest checkpoint"
                    );
                    std::thread::sleep(delay);
                    self.control.reset();
                    if let Some(storage) = &storage {
                        restore = storage.latest().map_err(restore_error)?;
                    }
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// The component operator `uid` runs: the one a live upgrade installed, or the job
    /// file's.
    fn component(&self, uid: &str) -> Option<Arc<Plugin>> {
        self.upgrades.live(uid).or_else(|| self.plugins.get(uid).cloned())
    }

    /// Goes back to an upgrade's rollback point: its in-place savepoint becomes where
    /// the job restores from, and the checkpoints taken since (with the new component's
    /// state) go.
    fn roll_back(
        &self,
        rollback: &upgrades::Rollback,
        storage: Option<&CheckpointStorage>,
    ) -> Result<Savepoint, JobError> {
        tracing::warn!(
            job = %self.spec.name,
            operator = %rollback.operator,
            savepoint = %rollback.savepoint.display(),
            reason = %rollback.reason,
            "rolling the upgrade back: the old component restarts from the state it had at the upgrade"
        );
        let savepoint = self.check_savepoint(Savepoint::load(&rollback.savepoint)?)?;
        if let Some(storage) = storage {
            storage
                .clear()
                .map_err(|message| JobError::Restore { job: self.spec.name.clone(), message })?;
        }
        Ok(savepoint)
    }

    /// The savepoint at `dir`: a directory, or an object store URL (a cluster's), which
    /// is downloaded into `<work dir>/downloaded-savepoints/` first.
    fn load_savepoint(&self, dir: &Path) -> Result<Savepoint, JobError> {
        Ok(Savepoint::open_for(&self.spec, dir)?)
    }

    /// Checks that a savepoint can start this job: the same max parallelism, and no
    /// saved state left behind unless allowed.
    fn check_savepoint(&self, savepoint: Savepoint) -> Result<Savepoint, JobError> {
        check_savepoint(&self.spec, &savepoint, self.options.allow_non_restored_state)
            .map_err(|message| JobError::Restore { job: self.spec.name.clone(), message })?;
        Ok(savepoint)
    }

    /// Runs the job once, from `restore` if given.
    fn run_attempt(
        &self,
        storage: Option<&CheckpointStorage>,
        restore: Option<Restore<'_>>,
        requests: crossbeam_channel::Receiver<Request>,
    ) -> Result<JobSummary, JobError> {
        let started = Instant::now();
        let spec = &self.spec;
        tracing::info!(job = %spec.name, "starting");
        if let Some(Restore::Checkpoint(checkpoint)) = restore {
            self.check_restorable(checkpoint)?;
        }
        let (to_coordinator, inbox) = unbounded::<CoordinatorMessage>();
        let mut source_commands = Vec::new();
        let mut sink_commands = Vec::new();
        let root = storage.map_or_else(|| spec.work_dir(), |s| s.root().to_path_buf());
        let checkpointing = |task: String, commands: Option<Receiver<_>>| {
            Some(Checkpointing { task, coordinator: to_coordinator.clone(), commands, root: root.clone() })
        };
        let task_state = |task: &str| restore.and_then(|r| r.tasks().get(task));
        let mut operator_commands: BTreeMap<String, Vec<crossbeam_channel::Sender<_>>> = BTreeMap::new();
        let mut manifests = BTreeMap::new();
        let mut wiring = Wiring::new(spec);
        let mut threads = Vec::new();
        let mut node_metrics = Vec::new();

        // Operators first: instantiation can fail, and nothing has started yet then.
        let mut operator_tasks = Vec::new();
        for op in &spec.operators {
            let keyed = spec.is_keyed(&op.uid);
            let side_outputs = Arc::new(wiring.side_output_ports(&op.uid));
            let late_port = side_outputs.get("late").copied();
            let mut metrics = Vec::new();
            for subtask in 0..op.parallelism {
                let info = OperatorInfo {
                    uid: op.uid.as_str().into(),
                    subtask,
                    parallelism: op.parallelism,
                    max_parallelism: spec.max_parallelism,
                    config: op.config_strings(),
                };
                let task = task_id(&op.uid, subtask);
                let (mut ctx, migrate_from, migration) = self.restore_operator(op, subtask, info, side_outputs.clone(), restore)?;
                ctx.interrupt = self.control.interrupt();
                ctx.timer_budget = op.limits.timer_budget();
                ctx.state.backend_mut().set_budget(op.limits.state_budget());
                ctx.operator_state.set_limit(op.limits.state_budget().entry_bytes);
                let logic: Box<dyn OperatorLogic> = match (&op.component, &op.native) {
                    _ if op.window.is_some() => {
                        let window = op.window.as_ref().expect("checked");
                        let guests = crate::window::Guests::instantiate(window, &self.functions[&op.uid], &ctx, op.limits)
                            .map_err(|error| JobError::Plugin { uid: op.uid.clone(), error })?;
                        Box::new(WindowOperator::new(ctx, window, guests).map_err(|message| {
                            JobError::Spec(SpecError { path: spec.name.clone().into(), message })
                        })?)
                    }
                    (Some(_), _) => Box::new(
                        self.component(&op.uid)
                            .expect("loaded with the job")
                            .instantiate(ctx, op.limits)
                            .map_err(|error| JobError::Plugin { uid: op.uid.clone(), error })?,
                    ),
                    (None, Some(name)) => native::create(name, ctx).expect("validated name"),
                    (None, None) => unreachable!("validated: component or native"),
                };
                let task_metrics = Arc::new(TaskMetrics::default());
                metrics.push(task_metrics.clone());
                let second_inputs = wiring.second_inputs(&op.uid, subtask);
                let (inputs, mut router) = wiring.take(&op.uid, subtask);
                router.measure(task_metrics.clone());
                let (commands_tx, commands) = unbounded();
                operator_commands.entry(op.uid.clone()).or_default().push(commands_tx);
                let mut inputs = Inputs::new(inputs);
                self.restore_channels(&task, &mut inputs, restore)?;
                let setup = OperatorTaskSetup {
                    metrics: task_metrics,
                    control: self.control.clone(),
                    checkpointing: checkpointing(task, Some(commands)),
                    limits: op.limits,
                    drop_late: op.late == LateHandling::Drop,
                    migrate_from,
                    migration,
                    second_inputs,
                    second_input: spec.second_input(&op.uid),
                    skip_failed: (op.on_error == Some(spec::ErrorPolicy::Skip))
                        .then(|| side_outputs.get(crate::stream::DEAD_LETTER_OUTPUT).copied()),
                    ..OperatorTaskSetup::new(op.uid.as_str().into(), subtask, keyed, late_port, spec.on_error)
                };
                let task_runner = OperatorTask::new(setup, logic, inputs, router);
                operator_tasks.push((format!("{}#{subtask}", op.uid), task_runner));
            }
            node_metrics.push((op.uid.clone(), NodeKind::Operator, metrics));
            let component = match (&op.native, self.component(&op.uid)) {
                _ if op.window.is_some() => "window".to_string(),
                (Some(name), _) => format!("native:{name}"),
                (None, Some(plugin)) => plugin.digest().to_string(),
                (None, None) => String::new(),
            };
            manifests.insert(
                op.uid.clone(),
                OperatorManifest { parallelism: op.parallelism, component, state_version: 0, states: Vec::new() },
            );
        }
        let mut sink_tasks = Vec::new();
        for sink_spec in &spec.sinks {
            let uid = sink_spec.uid();
            let task = task_id(uid, 0);
            let delivery = match (storage, task_state(&task)) {
                (None, _) => Delivery::Direct { append: restore.is_some() },
                (Some(_), Some(TaskState::Sink { state, .. })) if state.is_null() => Delivery::Continue,
                (Some(_), Some(TaskState::Sink { state, .. })) => Delivery::Restore(state),
                (Some(_), _) => Delivery::Fresh,
            };
            let mut sink = connectors::open_sink(sink_spec, &spec.name, &spec.base_dir, delivery)?;
            let (commands_tx, commands) = unbounded();
            sink_commands.push(commands_tx);
            let metrics = Arc::new(TaskMetrics::default());
            node_metrics.push((uid.to_string(), NodeKind::Sink, vec![metrics.clone()]));
            let dead_letter_port = wiring.side_output_ports(uid).get(crate::stream::DEAD_LETTER_OUTPUT).copied();
            let (inputs, router) = wiring.take(uid, 0);
            let dead_letters = match dead_letter_port {
                Some(_) if !sink.reject_to_dead_letters() => {
                    return Err(JobError::Sink(SinkError {
                        uid: uid.into(),
                        message: "the job routes its `dlq` output, but it has no records to refuse: only a \
                                  postgres sink's target refuses rows"
                            .into(),
                    }));
                }
                Some(port) => Some((router, port)),
                None => None,
            };
            let mut inputs = Inputs::new(inputs);
            self.restore_channels(&task, &mut inputs, restore)?;
            sink_tasks.push(SinkTask {
                uid: uid.into(),
                sink,
                inputs,
                metrics,
                checkpointing: checkpointing(task, Some(commands)),
                records_commits: false,
                uncommitted: None,
                awaiting_channels: None,
                lease: self.options.lease.clone(),
                dead_letters,
            });
        }
        let mut source_tasks = Vec::new();
        for source_spec in &spec.sources {
            let uid = source_spec.uid();
            let task = task_id(uid, 0);
            let mut source = connectors::open_source(source_spec, &spec.name, &spec.base_dir)?;
            let mut restored_max_timestamps = BTreeMap::new();
            if let Some(TaskState::Source { position, max_timestamps }) = task_state(&task) {
                source.restore(position)?;
                restored_max_timestamps = max_timestamps.clone();
            }
            let (commands_tx, commands) = unbounded();
            source_commands.push(commands_tx);
            let metrics = Arc::new(TaskMetrics::default());
            node_metrics.insert(0, (uid.to_string(), NodeKind::Source, vec![metrics.clone()]));
            let (_, mut router) = wiring.take(uid, 0);
            router.measure(metrics.clone());
            source_tasks.push(SourceTask {
                uid: uid.into(),
                source,
                strategy: source_spec.watermark().clone(),
                router,
                metrics,
                control: self.control.clone(),
                on_error: spec.on_error,
                dead_letters: wiring.side_output_ports(uid).get(crate::stream::DEAD_LETTER_OUTPUT).copied(),
                checkpointing: checkpointing(task, Some(commands)),
                restored_max_timestamps,
                counted: (0, 0),
            });
        }
        drop(wiring);
        *self.live.nodes.lock().unwrap_or_else(|e| e.into_inner()) = (node_metrics.clone(), Some(started));
        let coordinator = Some(
            Coordinator {
                settings: spec.checkpoint.clone(),
                storage: storage.cloned(),
                job: spec.name.clone(),
                max_parallelism: spec.max_parallelism,
                operators: manifests,
                inbox,
                requests,
                sources: source_commands,
                sinks: sink_commands,
                operator_tasks: operator_commands,
                tasks: node_metrics.iter().map(|(_, _, tasks)| tasks.len()).sum(),
                last_id: restore.map_or(0, |r| r.checkpoint_id()),
                control: Arc::new(upgrades::UpgradeLifecycle {
                    control: self.control.clone(),
                    upgrades: self.upgrades.clone(),
                    running: self.plugins.keys().filter_map(|uid| Some((uid.clone(), self.component(uid)?))).collect(),
                }),
                stats: self.checkpoint_stats.clone(),
                lease: self.options.lease.clone(),
                probation: Default::default(),
            }
            .start()
            .map_err(|e| JobError::Internal(anyhow::anyhow!("cannot start the checkpoint coordinator: {e}")))?,
        );

        for task in sink_tasks {
            threads.push(self.spawn(format!("sink {}", task.uid), move || task.run())?);
        }
        for (name, task) in operator_tasks {
            threads.push(self.spawn(name, move || task.run())?);
        }
        for task in source_tasks {
            threads.push(self.spawn(format!("source {}", task.uid), move || task.run())?);
        }
        for thread in threads {
            if thread.join().is_err() {
                self.control.fail_internal("a task thread panicked");
            }
        }
        if let Some(coordinator) = coordinator {
            coordinator.stop();
        }
        let cancelled = self.control.is_cancelled();
        let summary = JobSummary::collect(&spec.name, started.elapsed(), &node_metrics, cancelled);
        match self.control.take_failure() {
            Some(error) => Err(JobError::Failed { error, summary: Box::new(summary) }),
            None => {
                tracing::info!(job = %spec.name, elapsed_ms = summary.duration.as_millis() as u64, cancelled, "job ended");
                Ok(summary)
            }
        }
    }

    /// The context of one operator subtask: its keyed state backend, timers and
    /// watermark, restored from a checkpoint or a savepoint (taking the key groups of
    /// its range), and the state version to migrate from when a savepoint is older.
    fn restore_operator(
        &self,
        op: &spec::OperatorSpec,
        subtask: u32,
        info: OperatorInfo,
        side_outputs: Arc<HashMap<String, usize>>,
        restore: Option<Restore<'_>>,
    ) -> Result<(OperatorContext, Option<u32>, Option<Migration>), JobError> {
        let task = task_id(&op.uid, subtask);
        let error = |message: String| JobError::Restore { job: self.spec.name.clone(), message: format!("{task}: {message}") };
        let Some(Restore::Savepoint(savepoint)) = restore else {
            let checkpoint = match restore {
                Some(Restore::Checkpoint(c)) => Some(c),
                _ => None,
            };
            let saved = checkpoint.and_then(|c| c.metadata.tasks.get(&task));
            let backend = self.open_backend(&task, checkpoint, saved)?;
            let mut ctx = OperatorContext::new(info, KeyedState::new(&op.uid, backend), side_outputs);
            ctx.clock = crate::clock::Clock::new(self.spec.processing_clock);
            ctx.timers = self.timer_service(&task, ctx.info.max_parallelism).map_err(error)?;
            if let Some(checkpoint) = checkpoint {
                let old = crate::checkpoint::read_operator_lists(&checkpoint.metadata.tasks, &op.uid, |f| checkpoint.path(f))
                    .map_err(error)?;
                ctx.operator_state = restore_operator_state(&old, subtask, op.parallelism).map_err(error)?;
            }
            let mut migration = None;
            if let (Some(checkpoint), Some(TaskState::Operator { migration: Some(pending), .. })) = (checkpoint, saved) {
                migration = Migration::from_checkpoint(&ctx, &checkpoint.path(&pending.keys), pending).map_err(error)?;
                tracing::info!(task, from = pending.from, "resuming a state migration");
            }
            if let (Some(checkpoint), Some(TaskState::Operator { watermark, timers, .. })) = (checkpoint, saved) {
                ctx.watermark = *watermark;
                let mut malformed = false;
                let mut failed = None;
                crate::state::snapshot::read_entries(&checkpoint.path(timers), |key, _| {
                    match ctx.timers.insert_encoded(&key) {
                        Ok(fine) => malformed |= !fine,
                        Err(e) => failed = Some(e),
                    }
                })
                .map_err(error)?;
                if let Some(e) = failed {
                    return Err(error(format!("restoring timers: {e}")));
                }
                if malformed {
                    return Err(error("malformed timers".into()));
                }
            }
            return Ok((ctx, None, migration));
        };
        let (share, of) = op.key_groups.unwrap_or((subtask, op.parallelism));
        let range = KeyGroupRange::for_subtask(share, self.spec.max_parallelism, of);
        let restored = savepoint.read_operator(&op.uid, range)?;
        let backend: Box<dyn StateBackend> = match self.spec.state.backend {
            BackendKind::Memory => Box::new(MemoryBackend::from_entries(restored.entries)),
            BackendKind::Rocksdb => Box::new(
                RocksBackend::from_entries(&self.spec.state_dir().join(&task), restored.entries)
                    .map_err(|e| error(e.to_string()))?,
            ),
        };
        let mut ctx = OperatorContext::new(info, KeyedState::new(&op.uid, backend), side_outputs);
        ctx.clock = crate::clock::Clock::new(self.spec.processing_clock);
        let old = savepoint.read_operator_lists(&op.uid)?;
        ctx.operator_state = restore_operator_state(&old, subtask, op.parallelism).map_err(error)?;
        if let Some(watermark) = restored.watermark {
            ctx.watermark = watermark;
        }
        ctx.timers = self.timer_service(&task, ctx.info.max_parallelism).map_err(error)?;
        for timer in &restored.timers {
            if !ctx.timers.insert_encoded(timer).map_err(|e| error(format!("restoring timers: {e}")))? {
                return Err(error("malformed timers in the savepoint".into()));
            }
        }
        let migrate_from = savepoint.manifest.operators.get(&op.uid).map(|m| m.state_version);
        Ok((ctx, migrate_from, None))
    }

    /// Queues the data an unaligned checkpoint's barriers overtook on `task`'s input
    /// channels, to be processed before anything new arrives.
    fn restore_channels(&self, task: &str, inputs: &mut Inputs, restore: Option<Restore<'_>>) -> Result<(), JobError> {
        let Some(Restore::Checkpoint(checkpoint)) = restore else { return Ok(()) };
        let file = match checkpoint.metadata.tasks.get(task) {
            Some(TaskState::Operator { channel_state: Some(file), .. } | TaskState::Sink { channel_state: Some(file), .. }) => file,
            _ => return Ok(()),
        };
        let error = |message: String| JobError::Restore { job: self.spec.name.clone(), message: format!("{task}: {message}") };
        let channels = ChannelState::read(&checkpoint.path(file)).map_err(error)?;
        let mut records = 0;
        for channel in channels {
            let Some(index) = inputs.index_of(&channel.name) else {
                return Err(error(format!(
                    "checkpoint {} holds in-flight data of the channel from {}, which the job no longer \
                     has; restore it with the job it was taken of",
                    checkpoint.metadata.id, channel.name
                )));
            };
            for batch in channel.batches {
                records += batch.records;
                inputs.replay(index, batch);
            }
        }
        tracing::info!(task, records, "replaying in-flight data of an unaligned checkpoint");
        Ok(())
    }

    /// Empty timers for `task` where the job's state lives (`state.timers`): on the
    /// heap, or in a fresh RocksDB database beside the state's (`<state dir>/<task>-timers`; not
    /// `.timers`, since a database's staging directories take its path's extension).
    fn timer_service(&self, task: &str, max_parallelism: u32) -> Result<TimerService, String> {
        if self.spec.state.backend == BackendKind::Memory || self.spec.state.timers == TimerStoreKind::Heap {
            return Ok(TimerService::in_memory(max_parallelism));
        }
        let path = self.spec.state_dir().join(format!("{task}-timers"));
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let store = RocksBackend::open(&path).map_err(|e| e.to_string())?;
        TimerService::new(max_parallelism, Box::new(store)).map_err(|e| e.to_string())
    }

    /// The keyed state backend of one operator subtask, restored if `saved` says so.
    fn open_backend(
        &self,
        task: &str,
        restore: Option<&CompletedCheckpoint>,
        saved: Option<&TaskState>,
    ) -> Result<Box<dyn StateBackend>, JobError> {
        let error = |message: String| JobError::Restore { job: self.spec.name.clone(), message: format!("{task}: {message}") };
        let db_path = || self.spec.state_dir().join(task);
        Ok(match (self.spec.state.backend, restore, saved) {
            (BackendKind::Memory, Some(checkpoint), Some(TaskState::Operator { backend, state, .. })) => {
                if backend != "memory" {
                    return Err(error(format!("the checkpoint holds {backend} state; the job uses memory")));
                }
                Box::new(MemoryBackend::restore(&checkpoint.root, state).map_err(error)?)
            }
            (BackendKind::Rocksdb, Some(checkpoint), Some(TaskState::Operator { backend, state, .. })) => {
                if backend != "rocksdb" {
                    return Err(error(format!("the checkpoint holds {backend} state; the job uses rocksdb")));
                }
                Box::new(RocksBackend::restore(&db_path(), &checkpoint.root, state).map_err(error)?)
            }
            (BackendKind::Memory, _, _) => Box::new(MemoryBackend::new()),
            (BackendKind::Rocksdb, _, _) => {
                let path = db_path();
                if path.exists() {
                    std::fs::remove_dir_all(&path).map_err(|e| error(format!("{}: {e}", path.display())))?;
                }
                Box::new(RocksBackend::open(&path).map_err(|e| error(e.to_string()))?)
            }
        })
    }

    /// A checkpoint restores only into the job it was taken of: the same tasks.
    fn check_restorable(&self, checkpoint: &CompletedCheckpoint) -> Result<(), JobError> {
        let mut expected: Vec<String> = Vec::new();
        for source in &self.spec.sources {
            expected.push(task_id(source.uid(), 0));
        }
        for op in &self.spec.operators {
            expected.extend((0..op.parallelism).map(|i| task_id(&op.uid, i)));
        }
        for sink in &self.spec.sinks {
            expected.push(task_id(sink.uid(), 0));
        }
        expected.sort();
        let saved: Vec<String> = checkpoint.metadata.tasks.keys().cloned().collect();
        if saved != expected {
            return Err(JobError::Restore {
                job: self.spec.name.clone(),
                message: format!(
                    "checkpoint {} was taken of tasks [{}] but the job now has [{}]; a changed job \
                     (uids or parallelism) needs a savepoint, or run with --fresh",
                    checkpoint.metadata.id,
                    saved.join(", "),
                    expected.join(", ")
                ),
            });
        }
        Ok(())
    }

    fn spawn(
        &self,
        name: String,
        task: impl FnOnce() -> Result<(), TaskError> + Send + 'static,
    ) -> Result<std::thread::JoinHandle<()>, JobError> {
        let control = self.control.clone();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                if let Err(error) = task() {
                    control.fail(error);
                }
            })
            .map_err(|e| JobError::Internal(anyhow::anyhow!("cannot start a task thread: {e}")))
    }
}

/// Finds a component: a path with a directory part is relative to the job file; a
/// bare file name is looked up in the job file's directory, then in `plugin_dirs`.
fn resolve_component(
    spec: &JobSpec,
    uid: &str,
    name: &str,
    plugin_dirs: &[PathBuf],
) -> Result<PathBuf, JobError> {
    let as_path = Path::new(name);
    let candidates: Vec<PathBuf> = if as_path.components().count() > 1 || as_path.is_absolute() {
        vec![spec.resolve(as_path)]
    } else {
        std::iter::once(spec.base_dir.join(name))
            .chain(plugin_dirs.iter().map(|dir| dir.join(name)))
            .collect()
    };
    if let Some(dir) = candidates.iter().find(|p| p.is_dir()) {
        return Err(JobError::ComponentIsDirectory { uid: uid.into(), path: dir.display().to_string() });
    }
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| JobError::ComponentNotFound {
        uid: uid.into(),
        name: name.into(),
        searched: candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
    })
}

/// The channels of a job, built from its edges, handed out task by task.
struct Wiring {
    /// Per node: per subtask, its input receivers.
    inputs: HashMap<String, Vec<Vec<ChannelReceiver>>>,
    /// Per node: per subtask, per input receiver, whether it feeds input 2.
    second: HashMap<String, Vec<Vec<bool>>>,
    /// Per node: per subtask, per port, its outgoing edges.
    outputs: HashMap<String, Vec<Vec<Vec<EdgeOutput>>>>,
    /// Per node: its side output names, in port order (port = index + 1).
    side_outputs: HashMap<String, Vec<String>>,
    batching: Batching,
}

impl Wiring {
    fn new(spec: &JobSpec) -> Self {
        let mut side_outputs: HashMap<String, BTreeSet<String>> = HashMap::new();
        for edge in &spec.edges {
            if let Some(name) = &edge.output {
                side_outputs.entry(edge.from.clone()).or_default().insert(name.clone());
            }
        }
        let side_outputs: HashMap<String, Vec<String>> =
            side_outputs.into_iter().map(|(k, v)| (k, v.into_iter().collect())).collect();
        let mut inputs: HashMap<String, Vec<Vec<ChannelReceiver>>> = HashMap::new();
        let mut second: HashMap<String, Vec<Vec<bool>>> = HashMap::new();
        let mut outputs: HashMap<String, Vec<Vec<Vec<EdgeOutput>>>> = HashMap::new();
        for edge in &spec.edges {
            let (_, up) = spec.node(&edge.from).expect("validated");
            let (_, down) = spec.node(&edge.to).expect("validated");
            let partitioning = spec.partitioning(edge);
            let sides = side_outputs.get(&edge.from).map_or(0, Vec::len);
            let port = edge.output.as_ref().map_or(0, |name| {
                1 + side_outputs[&edge.from].iter().position(|n| n == name).expect("collected")
            });
            let to: Arc<str> = edge.to.as_str().into();
            for u in 0..up as usize {
                let targets: Vec<usize> = match partitioning {
                    Partitioning::Forward => vec![u],
                    Partitioning::Keyed | Partitioning::Rebalance | Partitioning::Broadcast => (0..down as usize).collect(),
                };
                let mut senders = Vec::with_capacity(targets.len());
                for d in targets {
                    let (tx, rx) = channel(spec.channel_capacity, spec.channel_bytes());
                    let rx = rx.named(channel_name(edge, u));
                    senders.push(tx);
                    inputs
                        .entry(edge.to.clone())
                        .or_insert_with(|| (0..down).map(|_| Vec::new()).collect())[d]
                        .push(rx);
                    second
                        .entry(edge.to.clone())
                        .or_insert_with(|| (0..down).map(|_| Vec::new()).collect())[d]
                        .push(edge.input == Some(2));
                }
                let node_outputs = outputs
                    .entry(edge.from.clone())
                    .or_insert_with(|| (0..up).map(|_| (0..=sides).map(|_| Vec::new()).collect()).collect());
                node_outputs[u][port].push(EdgeOutput::new(
                    to.clone(),
                    partitioning,
                    senders,
                    spec.max_parallelism,
                    u,
                ));
            }
        }
        Wiring { inputs, second, outputs, side_outputs, batching: spec.batching() }
    }

    /// Side output name → router port, for the operator `uid`.
    fn side_output_ports(&self, uid: &str) -> HashMap<String, usize> {
        self.side_outputs
            .get(uid)
            .map(|names| names.iter().enumerate().map(|(i, n)| (n.clone(), i + 1)).collect())
            .unwrap_or_default()
    }

    /// Per input receiver of one subtask (in [`Wiring::take`]'s order): whether it feeds
    /// input 2.
    fn second_inputs(&self, uid: &str, subtask: u32) -> Vec<bool> {
        self.second.get(uid).map(|per_subtask| per_subtask[subtask as usize].clone()).unwrap_or_default()
    }

    /// The input receivers and output router of one subtask.
    fn take(&mut self, uid: &str, subtask: u32) -> (Vec<ChannelReceiver>, Router) {
        let inputs = self
            .inputs
            .get_mut(uid)
            .map(|per_subtask| std::mem::take(&mut per_subtask[subtask as usize]))
            .unwrap_or_default();
        let ports = self
            .outputs
            .get_mut(uid)
            .map(|per_subtask| std::mem::take(&mut per_subtask[subtask as usize]))
            .unwrap_or_default();
        (inputs, Router::new(ports, self.batching))
    }
}

/// Names the channel from subtask `upstream` over `edge` in checkpoints (channel state):
/// `from#0`, with `:output` for a side output and ` input 2` for a second input.
fn channel_name(edge: &spec::EdgeSpec, upstream: usize) -> String {
    let mut name = format!("{}#{upstream}", edge.from);
    if let Some(output) = &edge.output {
        name.push(':');
        name.push_str(output);
    }
    if edge.input == Some(2) {
        name.push_str(" input 2");
    }
    name
}

/// The operator lists of new subtask `subtask` of `parallelism` from those of every
/// saved subtask (none saved: empty, and not restored).
fn restore_operator_state(
    old: &[crate::state::operator::Saved],
    subtask: u32,
    parallelism: u32,
) -> Result<crate::state::operator::OperatorState, String> {
    if old.is_empty() {
        return Ok(Default::default());
    }
    crate::state::operator::OperatorState::restore(old, subtask, parallelism).map_err(|e| e.to_string())
}
