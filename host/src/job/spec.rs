//! The job file: a TOML description of sources, operators, sinks and the edges
//! between them. See `docs/jobs.md` for every key.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointSettings;
use crate::keygroup::{DEFAULT_MAX_PARALLELISM, MAX_MAX_PARALLELISM};
use crate::plugin::Limits;
use crate::watermark::WatermarkStrategy;
pub use crate::error::ErrorPolicy;
pub use crate::sink::SinkFormat;
pub use crate::sink::kafka::{KafkaDelivery, KafkaSinkSpec};
pub use crate::sink::parts::{FilesSinkSpec, PartFormat};
pub use crate::sink::postgres::{PostgresDelivery, PostgresSinkSpec};
pub use crate::source::kafka::{KafkaSourceSpec, StartPosition};
pub use crate::stream::Partitioning;

/// A job file that cannot be run as written.
#[derive(Debug, thiserror::Error)]
#[error("job file {path}: {message}")]
pub struct SpecError {
    pub path: PathBuf,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    #[serde(default = "default_max_parallelism")]
    pub max_parallelism: u32,
    #[serde(default)]
    pub on_error: ErrorPolicy,
    /// Capacity of each channel between two subtasks, in batches of records (a batch
    /// counts until the receiving task processes it; barriers and end-of-data markers
    /// do not count).
    #[serde(default = "default_channel_capacity")]
    pub channel_capacity: usize,
    /// Capacity of each channel in bytes of records (MiB); a sender waits while more
    /// is in flight. Bounds the host's memory whatever the size of the records.
    #[serde(default = "default_channel_mib")]
    pub channel_mib: u64,
    /// A batch of records is sent once it holds this many records, ...
    #[serde(default = "default_batch_records")]
    pub batch_records: usize,
    /// ... or once its oldest record waited this long while its task stayed busy (a
    /// task with nothing more queued sends at once, as Flink's buffer timeout).
    #[serde(default = "default_buffer_timeout_ms")]
    pub buffer_timeout_ms: u64,
    /// Which clock processing time reads: `"wall"` (the default) or, for tests,
    /// `"records"` (each subtask's processing time follows the timestamps of the records
    /// it receives; see [`crate::clock::ClockKind`]).
    #[serde(default, skip_serializing_if = "is_wall_clock")]
    pub processing_clock: crate::clock::ClockKind,
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceSpec>,
    #[serde(default, rename = "operator")]
    pub operators: Vec<OperatorSpec>,
    #[serde(default, rename = "sink")]
    pub sinks: Vec<SinkSpec>,
    #[serde(default, rename = "edge")]
    pub edges: Vec<EdgeSpec>,
    /// Where keyed state lives.
    #[serde(default)]
    pub state: StateSettings,
    /// Periodic checkpoints; none when absent.
    pub checkpoint: Option<CheckpointSettings>,
    /// What to do when a task fails.
    #[serde(default)]
    pub restart: RestartStrategy,
    /// Run by several weir processes together (`docs/cluster.md`); `weir run --cluster`
    /// adds the table with its defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterSettings>,
    /// The directory relative paths are resolved against (the job file's).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Which store keeps keyed state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// In memory: fastest; snapshots are copy-on-write copies, written in full.
    #[default]
    Memory,
    /// RocksDB on local disk: state larger than memory; incremental checkpoints.
    Rocksdb,
}

/// The job file's `[state]` table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateSettings {
    #[serde(default)]
    pub backend: BackendKind,
    /// Working directory of the RocksDB backend (relative to the job file).
    /// Default: `.weir/<job name>/state`.
    pub dir: Option<PathBuf>,
    /// Where timers live (Flink's `state.backend.rocksdb.timer-service.factory`).
    #[serde(default)]
    pub timers: TimerStoreKind,
}

/// Where an operator's timers live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TimerStoreKind {
    /// Where the keyed state lives: on the heap with the memory backend, in RocksDB
    /// with the RocksDB backend (millions of timers without heap).
    #[default]
    Backend,
    /// On the heap whatever the backend: faster timer access, but every pending timer
    /// takes heap (Flink's `HEAP` timer service).
    Heap,
}

/// The job file's `[restart]` table: how the job restarts from its latest checkpoint
/// after a task fails (Flink's restart strategies).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(tag = "strategy", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RestartStrategy {
    /// Fail the job on the first task failure.
    #[default]
    None,
    /// Restart after a fixed delay, at most `max_attempts` times.
    FixedDelay { max_attempts: u32, #[serde(default = "default_delay")] delay_ms: u64 },
    /// Restart after a delay that doubles each time, up to `max_delay_ms`.
    ExponentialBackoff {
        max_attempts: u32,
        #[serde(default = "default_delay")]
        initial_delay_ms: u64,
        #[serde(default = "default_max_delay")]
        max_delay_ms: u64,
    },
}

fn default_delay() -> u64 {
    1000
}

fn default_max_delay() -> u64 {
    60_000
}

impl RestartStrategy {
    /// The delay before restart number `attempt` (1-based), or `None` when the
    /// strategy allows no more restarts.
    pub fn delay(&self, attempt: u32) -> Option<std::time::Duration> {
        let ms = match self {
            RestartStrategy::None => return None,
            RestartStrategy::FixedDelay { max_attempts, delay_ms } => {
                (attempt <= *max_attempts).then_some(*delay_ms)?
            }
            RestartStrategy::ExponentialBackoff { max_attempts, initial_delay_ms, max_delay_ms } => {
                (attempt <= *max_attempts).then_some(())?;
                initial_delay_ms.saturating_mul(1 << (attempt - 1).min(30)).min(*max_delay_ms)
            }
        };
        Some(std::time::Duration::from_millis(ms))
    }
}

fn is_wall_clock(kind: &crate::clock::ClockKind) -> bool {
    *kind == crate::clock::ClockKind::Wall
}

fn default_max_parallelism() -> u32 {
    DEFAULT_MAX_PARALLELISM
}

fn default_channel_capacity() -> usize {
    1024
}

fn default_channel_mib() -> u64 {
    4
}

fn default_batch_records() -> usize {
    512
}

fn default_buffer_timeout_ms() -> u64 {
    1
}

fn default_parallelism() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceSpec {
    /// JSON lines from a file, one event per line.
    File {
        uid: String,
        path: PathBuf,
        /// Top-level field whose value is the event key.
        key_field: Option<String>,
        /// Top-level field holding the event time in epoch milliseconds; without it,
        /// events get the time they were read (ingestion time).
        timestamp_field: Option<String>,
        /// Read at most this many lines per second (demos and tests); unthrottled when
        /// absent.
        rate: Option<f64>,
        /// The longest line accepted (default 16 MiB); a longer one is a malformed
        /// record (subject to `on_error`), skipped without being held in memory.
        max_record_bytes: Option<usize>,
        #[serde(default)]
        watermark: WatermarkStrategy,
    },
    /// JSON lines from every file under a directory or an object store prefix, new
    /// files picked up as they appear with `monitor_ms` (see `docs/files.md`).
    Files {
        uid: String,
        /// A local directory, or an object store URL (`s3://bucket/prefix`, ...).
        dir: String,
        key_field: Option<String>,
        timestamp_field: Option<String>,
        rate: Option<f64>,
        max_record_bytes: Option<usize>,
        /// Look for new files this often (ms); without it the source reads the files
        /// there at start and ends.
        monitor_ms: Option<u64>,
        /// Options of the object store; secrets come from the environment.
        #[serde(default)]
        store_options: BTreeMap<String, String>,
        #[serde(default)]
        watermark: WatermarkStrategy,
    },
    /// A deterministic generator of keyed JSON events.
    Generator {
        uid: String,
        /// How many events; unbounded when absent.
        count: Option<u64>,
        /// Events per second; as fast as possible when absent.
        rate: Option<f64>,
        /// Number of distinct keys (`key-0` .. `key-{keys-1}`).
        #[serde(default = "default_keys")]
        keys: u64,
        #[serde(default)]
        seed: u64,
        /// Event time of the first event, ms.
        #[serde(default)]
        start_ms: i64,
        /// Event time between consecutive events, ms.
        #[serde(default = "default_step")]
        step_ms: i64,
        /// Pads each event's value with a `"pad"` string to about this many bytes
        /// (large-record tests and benchmarks); no padding when absent.
        #[serde(default)]
        payload_bytes: Option<usize>,
        #[serde(default)]
        watermark: WatermarkStrategy,
    },
    /// Records from Kafka topics (see `docs/kafka.md`).
    Kafka(KafkaSourceSpec),
}

fn default_keys() -> u64 {
    1000
}

fn default_step() -> i64 {
    1
}

impl SourceSpec {
    pub fn uid(&self) -> &str {
        match self {
            SourceSpec::File { uid, .. } | SourceSpec::Files { uid, .. } | SourceSpec::Generator { uid, .. } => uid,
            SourceSpec::Kafka(kafka) => &kafka.uid,
        }
    }

    pub fn watermark(&self) -> &WatermarkStrategy {
        match self {
            SourceSpec::File { watermark, .. } | SourceSpec::Files { watermark, .. } | SourceSpec::Generator { watermark, .. } => {
                watermark
            }
            SourceSpec::Kafka(kafka) => &kafka.watermark,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSpec {
    pub uid: String,
    /// Path to the component, or a bare file name looked up in the job's directory and
    /// then in the plugin directories.
    pub component: Option<String>,
    /// A native operator built into the host (benchmark baselines).
    pub native: Option<String>,
    /// A window operator run by the host (see `docs/windows.md`).
    pub window: Option<crate::window::WindowSpec>,
    /// What happens to elements at or behind the watermark: `process` (the default,
    /// as Flink's process functions) hands them to the operator, `drop` takes them out
    /// first (to the `late` side output when the job routes one). Window operators
    /// apply Flink's window lateness rule instead.
    #[serde(default)]
    pub late: LateHandling,
    /// An error the operator returns for one element: `fail` (the default) stops the
    /// job; `skip` goes on with the next element, and the failed one goes to the
    /// operator's `dlq` output when the job routes one. Traps always stop the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<ErrorPolicy>,
    #[serde(default = "default_parallelism")]
    pub parallelism: u32,
    /// Passed to the operator's `open` as strings.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub limits: Limits,
    /// A cluster task's share of the operator's key groups, (`n`, of `parallelism`),
    /// when it runs one subtask holding key-group range `n` (never in a job file): a
    /// restore from a savepoint takes only those key groups.
    #[serde(skip)]
    pub key_groups: Option<(u32, u32)>,
}

/// An operator's `late` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LateHandling {
    #[default]
    Process,
    Drop,
}

impl OperatorSpec {
    /// The config table as the key/value strings the guest receives.
    pub fn config_strings(&self) -> Vec<(String, String)> {
        self.config
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), text)
            })
            .collect()
    }
}

/// How a sink writes events.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkSpec {
    /// JSON lines written to a file (replaced at start).
    File {
        uid: String,
        path: PathBuf,
        #[serde(default)]
        format: SinkFormat,
    },
    /// JSON lines on standard output.
    Stdout {
        uid: String,
        #[serde(default)]
        format: SinkFormat,
    },
    /// Counts and drops events (benchmarks).
    Discard { uid: String },
    /// Records to Kafka (see `docs/kafka.md`).
    Kafka(KafkaSinkSpec),
    /// Rows into a PostgreSQL table (see `docs/postgres.md`).
    Postgres(PostgresSinkSpec),
    /// Part files in a directory or an object store (see `docs/files.md`).
    Files(FilesSinkSpec),
}

impl SinkSpec {
    pub fn uid(&self) -> &str {
        match self {
            SinkSpec::File { uid, .. } | SinkSpec::Stdout { uid, .. } | SinkSpec::Discard { uid } => {
                uid
            }
            SinkSpec::Kafka(kafka) => &kafka.uid,
            SinkSpec::Postgres(postgres) => &postgres.uid,
            SinkSpec::Files(files) => &files.uid,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSpec {
    pub from: String,
    pub to: String,
    /// The side output of `from` this edge carries (`late`, or one the guest names);
    /// the main output when absent.
    pub output: Option<String>,
    /// Defaults to `forward` between equal parallelism and `rebalance` otherwise.
    pub partition: Option<Partitioning>,
    /// Which input of a two-input operator the edge feeds: 1 (the default) or 2
    /// (Flink's `connect`; with `partition = "broadcast"`, the broadcast side).
    pub input: Option<u8>,
}

/// What a uid names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Source,
    Operator,
    Sink,
}

impl JobSpec {
    /// The byte budget of each channel.
    pub fn channel_bytes(&self) -> usize {
        (self.channel_mib as usize).saturating_mul(1 << 20)
    }

    /// When output batches are sent.
    pub fn batching(&self) -> crate::task::output::Batching {
        crate::task::output::Batching {
            max_records: self.batch_records,
            // A batch holds at most a quarter of a channel's bytes, so several fit.
            max_bytes: (self.channel_bytes() / 4).clamp(4 << 10, 256 << 10),
            timeout: std::time::Duration::from_millis(self.buffer_timeout_ms),
        }
    }

    /// Reads and validates a job file.
    pub fn load(path: &Path) -> Result<JobSpec, SpecError> {
        let error = |message: String| SpecError { path: path.into(), message };
        let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read it: {e}")))?;
        let mut spec: JobSpec = toml::from_str(&text).map_err(|e| error(super::suggest::with_suggestion(e.to_string())))?;
        spec.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        spec.validate().map_err(error)?;
        Ok(spec)
    }

    /// Parses a job from TOML text, resolving relative paths against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<JobSpec, SpecError> {
        let error = |message: String| SpecError { path: base_dir.join("<inline>"), message };
        let mut spec: JobSpec = toml::from_str(text).map_err(|e| error(super::suggest::with_suggestion(e.to_string())))?;
        spec.base_dir = base_dir.to_path_buf();
        spec.validate().map_err(error)?;
        Ok(spec)
    }

    /// Resolves a path from the job file against its directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) }
    }

    /// The directory for the job's own files (`.weir/<name>` beside the job file):
    /// default checkpoints, state, savepoints and the control API's address.
    pub fn work_dir(&self) -> PathBuf {
        self.base_dir.join(".weir").join(&self.name)
    }

    /// Where checkpoints go on this machine, when the job takes them (with an object
    /// store as `dir`, the local copy's default directory).
    pub fn checkpoint_dir(&self) -> Option<PathBuf> {
        let settings = self.checkpoint.as_ref()?;
        Some(match &settings.dir {
            Some(dir) if self.checkpoint_store().is_none() => self.resolve(dir),
            _ => self.work_dir().join("checkpoints"),
        })
    }

    /// The object store URL checkpoints are kept in, if `dir` names one.
    pub fn checkpoint_store(&self) -> Option<&str> {
        let dir = self.checkpoint.as_ref()?.dir.as_ref()?.to_str()?;
        crate::checkpoint::remote::is_url(dir).then_some(dir)
    }

    /// The RocksDB backend's working directory.
    pub fn state_dir(&self) -> PathBuf {
        match &self.state.dir {
            Some(dir) => self.resolve(dir),
            None => self.work_dir().join("state"),
        }
    }

    /// The kind and parallelism of the node called `uid`.
    pub fn node(&self, uid: &str) -> Option<(NodeKind, u32)> {
        if self.sources.iter().any(|s| s.uid() == uid) {
            return Some((NodeKind::Source, 1));
        }
        if let Some(op) = self.operators.iter().find(|o| o.uid == uid) {
            return Some((NodeKind::Operator, op.parallelism));
        }
        self.sinks.iter().any(|s| s.uid() == uid).then_some((NodeKind::Sink, 1))
    }

    /// The partitioning of an edge, with the default applied.
    pub fn partitioning(&self, edge: &EdgeSpec) -> Partitioning {
        edge.partition.unwrap_or_else(|| {
            let from = self.node(&edge.from).map_or(1, |n| n.1);
            let to = self.node(&edge.to).map_or(1, |n| n.1);
            if from == to { Partitioning::Forward } else { Partitioning::Rebalance }
        })
    }

    /// Whether the operator `uid` is keyed: its (first) input arrives on keyed edges.
    pub fn is_keyed(&self, uid: &str) -> bool {
        self.edges
            .iter()
            .filter(|e| e.to == uid && e.input.unwrap_or(1) == 1)
            .any(|e| self.partitioning(e) == Partitioning::Keyed)
    }

    /// How the second input of operator `uid` arrives, if it has one: keyed (state and
    /// timers scoped to each element's key), broadcast (every subtask sees every
    /// element, and may write broadcast state) or otherwise.
    pub fn second_input(&self, uid: &str) -> Option<Partitioning> {
        self.edges.iter().find(|e| e.to == uid && e.input == Some(2)).map(|e| self.partitioning(e))
    }

    fn validate(&self) -> Result<(), String> {
        if self.max_parallelism == 0 || self.max_parallelism > MAX_MAX_PARALLELISM {
            return Err(format!("max_parallelism must be 1 to {MAX_MAX_PARALLELISM}"));
        }
        if self.channel_capacity == 0 {
            return Err("channel_capacity must be at least 1".into());
        }
        if self.channel_mib == 0 || self.batch_records == 0 {
            return Err("channel_mib and batch_records must be at least 1".into());
        }
        if let Some(c) = &self.checkpoint {
            if c.interval_ms == 0 || c.timeout_ms == 0 || c.retained == 0 {
                return Err("[checkpoint] interval_ms, timeout_ms and retained must be positive".into());
            }
            if c.mode == crate::checkpoint::CheckpointMode::Unaligned && c.alignment_timeout_ms.is_some() {
                return Err("[checkpoint] alignment_timeout_ms turns aligned checkpoints unaligned when they \
                            take longer; with mode = \"unaligned\" they are unaligned from the start, so \
                            remove one of the two"
                    .into());
            }
        }
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.starts_with('.') {
            return Err("name must be non-empty, without path separators or a leading dot".into());
        }
        if self.sources.is_empty() {
            return Err("the job has no [[source]]".into());
        }
        if self.sinks.is_empty() {
            return Err("the job has no [[sink]]".into());
        }
        let mut seen = HashSet::new();
        let uids = self
            .sources
            .iter()
            .map(SourceSpec::uid)
            .chain(self.operators.iter().map(|o| o.uid.as_str()))
            .chain(self.sinks.iter().map(SinkSpec::uid));
        for uid in uids {
            if uid.is_empty() {
                return Err("a uid is empty".into());
            }
            if !seen.insert(uid) {
                return Err(format!("uid `{uid}` is used twice; uids must be unique"));
            }
        }
        for op in &self.operators {
            if op.parallelism == 0 || op.parallelism > self.max_parallelism {
                return Err(format!(
                    "operator `{}`: parallelism must be 1 to max_parallelism ({})",
                    op.uid, self.max_parallelism
                ));
            }
            if let Some(window) = &op.window {
                window.compile().map_err(|e| format!("operator `{}`: window: {e}", op.uid))?;
                if op.component.is_some() || op.native.is_some() {
                    return Err(format!(
                        "operator `{}`: a window operator is run by the host; remove `component`/`native`",
                        op.uid
                    ));
                }
                if op.late != LateHandling::Process {
                    return Err(format!(
                        "operator `{}`: window operators decide lateness by Flink's window rule; remove `late`",
                        op.uid
                    ));
                }
                if !self.is_keyed(&op.uid) {
                    return Err(format!(
                        "operator `{}`: a window operator needs a keyed edge into it (partition = \"keyed\")",
                        op.uid
                    ));
                }
            }
            match (&op.component, &op.native) {
                _ if op.window.is_some() => {}
                (Some(_), None) => {}
                (None, Some(name)) if crate::operator::native::NAMES.contains(&name.as_str()) => {}
                (None, Some(name)) => {
                    return Err(format!(
                        "operator `{}`: unknown native operator `{name}` (known: {})",
                        op.uid,
                        crate::operator::native::NAMES.join(", ")
                    ));
                }
                _ => {
                    return Err(format!(
                        "operator `{}`: set exactly one of `component`, `native` or `window`",
                        op.uid
                    ));
                }
            }
            let l = op.limits;
            if [l.memory_mib, l.call_timeout_ms, l.state_mib, l.key_state_mib, l.timers, l.timers_per_key].contains(&0) {
                return Err(format!("operator `{}`: limits must be positive", op.uid));
            }
        }
        for edge in &self.edges {
            let what = format!("edge {} -> {}", edge.from, edge.to);
            let (from_kind, from_par) = self
                .node(&edge.from)
                .ok_or_else(|| format!("{what}: no source or operator has uid `{}`", edge.from))?;
            let (to_kind, to_par) = self
                .node(&edge.to)
                .ok_or_else(|| format!("{what}: no operator or sink has uid `{}`", edge.to))?;
            let dead_letters = edge.output.as_deref() == Some(crate::stream::DEAD_LETTER_OUTPUT);
            if from_kind == NodeKind::Sink && !dead_letters {
                return Err(format!(
                    "{what}: a sink's only output is `dlq` (the rows its target refused): set output = \"dlq\""
                ));
            }
            if to_kind == NodeKind::Source {
                return Err(format!("{what}: a source has no inputs"));
            }
            if edge.output.is_some() && from_kind == NodeKind::Source && !dead_letters {
                return Err(format!("{what}: a source's only side output is `dlq` (its malformed records)"));
            }
            if self.partitioning(edge) == Partitioning::Forward && from_par != to_par {
                return Err(format!(
                    "{what}: a forward edge needs equal parallelism ({from_par} vs {to_par}); \
                     use partition = \"keyed\" or \"rebalance\""
                ));
            }
            if self.partitioning(edge) == Partitioning::Keyed && to_kind == NodeKind::Sink {
                return Err(format!("{what}: sinks take forward or rebalance edges"));
            }
        }
        for edge in &self.edges {
            let what = format!("edge `{}` -> `{}`", edge.from, edge.to);
            match edge.input {
                None | Some(1) => {}
                Some(2) if self.operators.iter().any(|op| op.uid == edge.to) => {}
                Some(2) => return Err(format!("{what}: only operators have a second input")),
                Some(other) => return Err(format!("{what}: input must be 1 or 2, not {other}")),
            }
        }
        for op in &self.operators {
            let inputs: Vec<_> = self.edges.iter().filter(|e| e.to == op.uid).collect();
            if inputs.is_empty() {
                return Err(format!("operator `{}` has no input edge", op.uid));
            }
            for side in [1, 2] {
                let edges: Vec<_> = inputs.iter().filter(|e| e.input.unwrap_or(1) == side).collect();
                if side == 1 && edges.is_empty() {
                    return Err(format!("operator `{}` has edges into input 2 but none into input 1", op.uid));
                }
                let count = |p: Partitioning| edges.iter().filter(|e| self.partitioning(e) == p).count();
                let keyed = count(Partitioning::Keyed);
                if keyed != 0 && keyed != edges.len() {
                    return Err(format!(
                        "operator `{}` mixes keyed and unkeyed edges into input {side}; make every edge of an input keyed",
                        op.uid
                    ));
                }
                let broadcast = count(Partitioning::Broadcast);
                if side == 2 && broadcast != 0 && broadcast != edges.len() {
                    return Err(format!("operator `{}`: every edge into a broadcast input must be broadcast", op.uid));
                }
            }
            if self.second_input(&op.uid).is_some() && op.component.is_none() {
                return Err(format!("operator `{}`: only component operators take a second input", op.uid));
            }
        }
        for sink in &self.sinks {
            if !self.edges.iter().any(|e| e.to == sink.uid()) {
                return Err(format!("sink `{}` has no input edge", sink.uid()));
            }
            if let SinkSpec::Postgres(postgres) = sink {
                postgres.validate()?;
            }
            if let SinkSpec::Files(files) = sink {
                files.validate()?;
            }
            if let SinkSpec::Kafka(kafka) = sink {
                if kafka.topic.is_none() && kafka.topic_field.is_none() {
                    return Err(format!("sink `{}`: set `topic`, `topic_field` or both", kafka.uid));
                }
                if kafka.delivery == KafkaDelivery::ExactlyOnce && kafka.sequence {
                    return Err(format!(
                        "sink `{}`: sequence = true numbers records for readers that drop repeats; with \
                         delivery = \"exactly-once\" there are none to drop: remove one of the two",
                        kafka.uid
                    ));
                }
                if kafka.delivery == KafkaDelivery::ExactlyOnce && self.checkpoint.is_none() {
                    return Err(format!(
                        "sink `{}`: delivery = \"exactly-once\" commits a transaction per checkpoint; \
                         add a [checkpoint] table or use delivery = \"at-least-once\"",
                        kafka.uid
                    ));
                }
            }
        }
        for source in &self.sources {
            if let SourceSpec::Kafka(kafka) = source {
                if kafka.topics.is_empty() {
                    return Err(format!("source `{}`: `topics` is empty", kafka.uid));
                }
            }
        }
        self.check_acyclic()
    }

    fn check_acyclic(&self) -> Result<(), String> {
        let mut indegree: HashMap<&str, usize> = HashMap::new();
        for e in &self.edges {
            *indegree.entry(e.to.as_str()).or_default() += 1;
            indegree.entry(e.from.as_str()).or_default();
        }
        let mut ready: Vec<&str> = indegree.iter().filter(|(_, d)| **d == 0).map(|(u, _)| *u).collect();
        let mut visited = 0;
        while let Some(uid) = ready.pop() {
            visited += 1;
            for e in self.edges.iter().filter(|e| e.from == uid) {
                let d = indegree.get_mut(e.to.as_str()).expect("counted");
                *d -= 1;
                if *d == 0 {
                    ready.push(&e.to);
                }
            }
        }
        if visited != indegree.len() {
            return Err("the edges form a cycle; a job must be a DAG".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<JobSpec, String> {
        JobSpec::parse(text, Path::new("/jobs")).map_err(|e| e.message)
    }

    #[test]
    fn a_misspelt_key_or_value_names_the_line_and_the_nearest_valid_one() {
        let error = parse(&BASE.replace("component = \"op.wasm\"", "component = \"op.wasm\"\nparalelism = 2")).unwrap_err();
        assert!(error.contains("line ") && error.contains("column "), "{error}");
        assert!(error.contains("unknown field `paralelism`"), "{error}");
        assert!(error.ends_with("did you mean `parallelism`?"), "{error}");
        let error = parse(&format!("state = {{ backend = \"rocksbd\" }}\n{BASE}")).unwrap_err();
        assert!(error.ends_with("did you mean `rocksdb`?"), "{error}");
        // Nothing close: no suggestion.
        let error = parse(&BASE.replace("component = \"op.wasm\"", "component = \"op.wasm\"\nzzzzzz = 2")).unwrap_err();
        assert!(error.contains("unknown field `zzzzzz`") && !error.contains("did you mean"), "{error}");
    }

    const BASE: &str = r#"
        name = "t"
        [[source]]
        type = "file"
        uid = "in"
        path = "in.jsonl"
        [[operator]]
        uid = "op"
        component = "op.wasm"
        parallelism = 2
        [[sink]]
        type = "stdout"
        uid = "out"
    "#;

    #[test]
    fn a_valid_job_parses_with_defaults() {
        let spec = parse(&format!(
            "{BASE}
            [[edge]]
            from = \"in\"
            to = \"op\"
            partition = \"keyed\"
            [[edge]]
            from = \"op\"
            to = \"out\""
        ))
        .unwrap();
        assert_eq!(spec.max_parallelism, 128);
        assert_eq!(spec.on_error, ErrorPolicy::Fail);
        assert!(spec.is_keyed("op"));
        assert_eq!(spec.partitioning(&spec.edges[1]), Partitioning::Rebalance);
        assert_eq!(spec.resolve(Path::new("in.jsonl")), Path::new("/jobs/in.jsonl"));
    }

    #[test]
    fn mistakes_are_named() {
        let forward = parse(&format!("{BASE}\n[[edge]]\nfrom=\"in\"\nto=\"op\"\npartition=\"forward\"\n[[edge]]\nfrom=\"op\"\nto=\"out\""));
        assert!(forward.unwrap_err().contains("forward edge needs equal parallelism"));
        let unknown = parse(&format!("{BASE}\n[[edge]]\nfrom=\"in\"\nto=\"nope\""));
        assert!(unknown.unwrap_err().contains("no operator or sink has uid `nope`"));
        let no_input = parse(BASE);
        assert!(no_input.unwrap_err().contains("operator `op` has no input edge"));
        let typo = parse("name = \"t\"\nmax_paralelism = 3");
        assert!(typo.unwrap_err().contains("unknown field `max_paralelism`"));
    }

    #[test]
    fn restart_delays_follow_the_strategy() {
        let fixed = RestartStrategy::FixedDelay { max_attempts: 2, delay_ms: 50 };
        assert_eq!(fixed.delay(1), Some(std::time::Duration::from_millis(50)));
        assert_eq!(fixed.delay(3), None);
        let backoff = RestartStrategy::ExponentialBackoff {
            max_attempts: 5,
            initial_delay_ms: 100,
            max_delay_ms: 300,
        };
        let delays: Vec<_> = (1..=6).map(|a| backoff.delay(a).map(|d| d.as_millis())).collect();
        assert_eq!(delays, [Some(100), Some(200), Some(300), Some(300), Some(300), None]);
        assert_eq!(RestartStrategy::None.delay(1), None);
    }

    #[test]
    fn mangled_job_files_are_errors_and_never_panics() {
        // Property: byte flips, truncations, insertions, huge numbers and deeply nested
        // values give a job or an error with a message, never a panic or a stack overflow.
        let valid = format!("{BASE}\n[[edge]]\nfrom = \"in\"\nto = \"op\"\n[[edge]]\nfrom = \"op\"\nto = \"out\"\n");
        let mut state = 7u64;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        let inserts = ["[", "]", "\"", "=", "{", "\n", "parallelism = 99999999999999999999\n", "\u{0}", "\u{feff}", "[[", "#"];
        for _ in 0..3000 {
            let mut text: Vec<u8> = valid.clone().into_bytes();
            for _ in 0..1 + next() % 4 {
                let at = next() % (text.len() + 1);
                match next() % 4 {
                    0 if at < text.len() => text[at] = (next() % 256) as u8,
                    1 => text.truncate(at),
                    _ => {
                        let insert = inserts[next() % inserts.len()].as_bytes();
                        text.splice(at..at, insert.iter().copied());
                    }
                }
            }
            if let Ok(text) = String::from_utf8(text) {
                if let Err(message) = parse(&text) {
                    assert!(!message.is_empty());
                }
            }
        }
        for depth in [10, 1000, 100_000] {
            let deep = format!("{BASE}\nx = {}{}\n", "[".repeat(depth), "]".repeat(depth));
            assert!(parse(&deep).is_err(), "depth {depth}");
            let tables = format!("{BASE}\nx = {}1{}\n", "{ a = ".repeat(depth), " }".repeat(depth));
            assert!(parse(&tables).is_err(), "depth {depth}");
        }
    }

    #[test]
    fn cycles_are_rejected() {
        let text = format!(
            "{BASE}
            [[operator]]
            uid = \"op2\"
            component = \"x.wasm\"
            parallelism = 2
            [[edge]]
            from = \"in\"
            to = \"op\"
            partition = \"rebalance\"
            [[edge]]
            from = \"op\"
            to = \"op2\"
            [[edge]]
            from = \"op2\"
            to = \"op\"
            partition = \"rebalance\"
            [[edge]]
            from = \"op2\"
            to = \"out\""
        );
        assert!(parse(&text).unwrap_err().contains("cycle"));
    }
}
