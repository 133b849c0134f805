//! # Clusters
//!
//! One job run by several weir processes together, on one machine or many, with no
//! cluster manager of weir's own: Kafka's group coordinator decides who runs what, and
//! an object store holds the state, as in Kafka Streams.
//!
//! Every member runs the same job file (`weir run job.toml --cluster`, or a `[cluster]`
//! table). Members join one consumer group (`weir-cluster-<job>` by default) on the
//! job's Kafka input topics with the cooperative-sticky assignor, so a member that
//! joins or leaves moves only the partitions that must move. The group's members never
//! read records through it (it pauses what it is given); each assigned partition
//! number is a **task**: the whole job, reading only that partition of its topics, with
//! its own checkpoints under `<checkpoint dir>/p<n>` in the object store, its own local
//! directory, and its own Kafka transactional ids. A task starts when its partition is
//! assigned: it restores from the task's newest checkpoint in the store (wherever it ran
//! before) and continues from the offsets it holds. When a partition is revoked, its task
//! is stopped before the member gives the partition up, so two live members never run
//! the same task. A member that dies (SIGKILL, a lost machine) is noticed by the broker
//! after `session_timeout_ms`, and its partitions move to the others.
//!
//! A keyed edge whose input is not partitioned by its key goes through a repartition
//! topic that the member creates ([`topology`]): the job is cut into stages, and the
//! tasks of the later stages follow the partitions of those topics, each holding one
//! key-group range. A member that was stopped past its session timeout writes nothing
//! when it wakes ([`Hold`]), and a task's checkpoints have one writer (the store's
//! `_owner`). With `standbys = 1`, members keep warm copies of the checkpoints of the
//! tasks they do not run. A savepoint of the whole cluster is asked for through the
//! store ([`savepoint`]).

pub mod savepoint;
pub mod topology;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::job::spec::SourceSpec;
use crate::job::{Job, JobError, JobOptions, JobSpec, JobSummary};
use crate::ownership::Lease;
use crate::task::JobControl;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use topology::Topology;

/// The job file's `[cluster]` table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// The Kafka brokers whose group coordinator runs the cluster (default: the Kafka
    /// source's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    /// The consumer group of the members (default: `weir-cluster-<job name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// How long the broker waits for a silent member before moving its tasks.
    #[serde(default = "ClusterSettings::default_session_timeout")]
    pub session_timeout_ms: u64,
    /// 1: keep warm copies of the checkpoints of the tasks this member does not run,
    /// refreshed every checkpoint interval, so that a task moving here restores
    /// without downloading its state (every member is a standby of every task it
    /// does not run; weir has no assignor of its own to pick one). 0: none.
    #[serde(default)]
    pub standbys: u32,
}

impl ClusterSettings {
    fn default_session_timeout() -> u64 {
        10_000
    }
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings { brokers: None, group: None, session_timeout_ms: Self::default_session_timeout(), standbys: 0 }
    }
}

/// Why a member cannot run, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("job `{job}` cannot run as a cluster: {reason}")]
    Unsupported { job: String, reason: String },
    #[error("cluster of job `{job}`: Kafka: {message}")]
    Kafka { job: String, message: String },
    #[error("cluster of job `{job}`: task {task} failed: {error}")]
    Task { job: String, task: String, error: Box<JobError> },
    #[error("savepoint of cluster job `{job}`: {message}")]
    Savepoint { job: String, message: String },
}

/// A task: a stage of the job ([`topology::Stage`]) on one partition of its lead
/// topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct TaskId {
    stage: usize,
    partition: i32,
}

/// A task this member runs.
struct RunningTask {
    control: Arc<JobControl>,
    lease: Arc<Lease>,
    thread: JoinHandle<Result<JobSummary, JobError>>,
    /// Where savepoint requests reach the task.
    requests: crossbeam_channel::Sender<crate::checkpoint::Request>,
    /// The task's local directory.
    work_dir: std::path::PathBuf,
    /// What each repartition topic it reads has passed on so far, by the topic's
    /// source uid.
    seen: BTreeMap<String, topology::SeenSequences>,
}

/// What the member's tasks share with the group's rebalance callbacks.
struct Tasks {
    topology: Topology,
    brokers: String,
    options: JobOptions,
    /// Until when (on [`Lease::clock`]) this member's tasks may write; renewed by the
    /// member's ticker ([`Hold`]).
    valid_until: Arc<AtomicU64>,
    running: Mutex<BTreeMap<TaskId, RunningTask>>,
    /// Held while a standby copy is refreshed, and while a task starts: a task never
    /// starts on a half-refreshed directory, nor is its directory refreshed once it runs.
    standby: Mutex<()>,
    /// The first task failure; the member stops on it.
    failed: Mutex<Option<ClusterError>>,
    /// Set while the cluster stops with a savepoint: no task starts.
    stopping: AtomicBool,
    /// Set when a stop with a savepoint failed: the member starts its assigned tasks
    /// again.
    resume: AtomicBool,
    /// The savepoint (downloaded) that tasks without checkpoints of their own start
    /// from (`--from-savepoint`).
    savepoint: Option<std::path::PathBuf>,
}

impl Tasks {
    fn job(&self) -> &str {
        self.topology.job_name()
    }

    fn start(&self, id: TaskId) {
        let _standby = self.standby.lock().unwrap_or_else(|e| e.into_inner());
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.contains_key(&id) {
            return;
        }
        let spec = self.topology.task_spec(id.stage, id.partition, &self.brokers);
        let name = spec.name.clone();
        if self.stopping.load(Ordering::Acquire) {
            tracing::info!(job = %self.job(), task = %name, "not starting the task: the cluster is stopping with a savepoint");
            return;
        }
        let work_dir = spec.work_dir();
        let seen = spec
            .sources
            .iter()
            .filter_map(|s| match s {
                SourceSpec::Kafka(k) => Some((k.uid.clone(), k.repartition.as_ref()?.seen.clone())),
                _ => None,
            })
            .collect();
        let lease = Arc::new(Lease::new(self.valid_until.clone()));
        let mut options = JobOptions { lease: Some(lease.clone()), from_savepoint: None, ..self.options.clone() };
        if let Some(savepoint) = &self.savepoint {
            match savepoint::has_checkpoints(&spec) {
                // Its first start: from the savepoint, which also holds the other
                // stages' state (the member checked the whole job against it).
                Ok(false) => {
                    options.from_savepoint = Some(savepoint.clone());
                    options.allow_non_restored_state = true;
                }
                Ok(true) => {}
                Err(message) => {
                    self.fail(name, JobError::Restore { job: self.job().to_string(), message });
                    return;
                }
            }
        }
        let job = match Job::new(spec, &options) {
            Ok(job) => job,
            Err(error) => {
                self.fail(name, error);
                return;
            }
        };
        tracing::info!(job = %self.job(), task = %name, stage = id.stage, partition = id.partition, "task assigned: starting");
        let control = job.control();
        let requests = job.requests();
        let thread = std::thread::Builder::new()
            .name(format!("task {name}"))
            .spawn(move || job.run())
            .expect("spawning a task thread");
        running.insert(id, RunningTask { control, lease, thread, requests, work_dir, seen });
    }

    /// Stops task `id` and waits until it has (so its partition can go).
    fn stop(&self, id: TaskId) {
        let task = self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        if let Some(task) = task {
            let name = self.topology.task_name(id.stage, id.partition);
            tracing::info!(job = %self.job(), task = %name, stage = id.stage, partition = id.partition, "task revoked: stopping");
            // Output not written yet is dropped: the task's next owner restores its
            // last checkpoint and writes it again.
            task.lease.revoke();
            task.control.stop();
            if let Ok(Err(error)) = task.thread.join() {
                tracing::warn!(job = %self.job(), task = %name, error = %error, "the revoked task ended with an error");
            }
        }
    }

    fn fail(&self, task: String, error: JobError) {
        tracing::error!(job = %self.job(), %task, error = %error, "task failed");
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.get_or_insert(ClusterError::Task { job: self.job().to_string(), task, error: Box::new(error) });
    }

    /// Collects tasks that ended on their own (a failure that exhausted the restart
    /// strategy, or a bounded input that ended).
    fn reap(&self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let ended: Vec<TaskId> = running.iter().filter(|(_, t)| t.thread.is_finished()).map(|(id, _)| *id).collect();
        for id in ended {
            let task = running.remove(&id).expect("listed");
            let name = self.topology.task_name(id.stage, id.partition);
            match task.thread.join() {
                Ok(Ok(summary)) if !summary.cancelled => {
                    tracing::info!(job = %self.job(), task = %name, "task finished its input")
                }
                Ok(Ok(_)) => {}
                // A member that stalled while its task moved: the task is another
                // member's now, and this one stops writing it.
                Ok(Err(JobError::Failed { error: crate::task::TaskError::Fenced(reason), .. })) => {
                    tracing::warn!(job = %self.job(), task = %name, %reason, "task fenced: another member runs it now")
                }
                Ok(Err(error)) => self.fail(name, error),
                Err(_) => {
                    let error = JobError::Internal(anyhow::anyhow!("task {name} panicked"));
                    self.fail(name, error)
                }
            }
        }
    }

    fn stop_all(&self) {
        let ids: Vec<TaskId> = self.running.lock().unwrap_or_else(|e| e.into_inner()).keys().copied().collect();
        for id in ids {
            self.stop(id);
        }
    }

    /// Refreshes the warm copy of every task this member does not run: the store's
    /// newer checkpoints, downloaded into the local directory the task would use.
    fn refresh_standbys(&self) {
        for (stage, tasks) in self.topology.stages.iter().enumerate() {
            for partition in 0..tasks.tasks as i32 {
                let id = TaskId { stage, partition };
                let _standby = self.standby.lock().unwrap_or_else(|e| e.into_inner());
                if self.running.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&id) {
                    continue;
                }
                let spec = self.topology.task_spec(stage, partition, &self.brokers);
                let (Some(dir), Some(settings)) = (spec.checkpoint_dir(), &spec.checkpoint) else { continue };
                let refreshed = crate::checkpoint::storage::CheckpointStorage::open(dir, spec.checkpoint_store(), &settings.store_options)
                    .map_err(|e| e.to_string())
                    .and_then(|storage| storage.refresh_copy(settings.retained));
                match refreshed {
                    Ok(ids) if !ids.is_empty() => {
                        tracing::debug!(job = %self.job(), task = %spec.name, checkpoints = ?ids, "standby copy refreshed")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(job = %self.job(), task = %spec.name, error = %e, "standby copy not refreshed"),
                }
            }
        }
    }

    /// The tasks of a list of partitions (of the stages' lead topics).
    fn ids(&self, list: &TopicPartitionList) -> std::collections::BTreeSet<TaskId> {
        list.elements()
            .iter()
            .filter_map(|e| Some(TaskId { stage: self.topology.stage_of_topic(e.topic())?, partition: e.partition() }))
            .collect()
    }
}

/// The group membership's callbacks: a revoked partition's task stops before the
/// partition is given up; an assigned one's starts after it is taken.
struct Membership {
    tasks: Arc<Tasks>,
}

impl ClientContext for Membership {}

impl ConsumerContext for Membership {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            for id in self.tasks.ids(partitions) {
                self.tasks.stop(id);
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                for id in self.tasks.ids(partitions) {
                    self.tasks.start(id);
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(job = %self.tasks.job(), error = %e, "rebalance failed"),
        }
    }
}

/// A member's hold on its tasks, against its own stalls.
///
/// The group coordinator gives a member's partitions to the others once the member has
/// been silent for the session timeout. A member that is *stopped* that long (SIGSTOP,
/// a frozen VM, swapping) does not know it when it wakes up: every thread resumes at
/// once, and its tasks would write output and checkpoints of partitions another member
/// now runs before librdkafka notices it was dropped. So a ticker thread renews the
/// tasks' leases ([`Lease`]) every few milliseconds for half the session timeout, on
/// the monotonic clock, which keeps running while the process is stopped; after a stop
/// longer than that, the leases have expired before any task thread runs again: sinks
/// hold their output and checkpoints are not written. The ticker notices the gap and
/// flags a stall; the member then revokes every task (their held output is dropped)
/// and joins the group again as a new member, which gives it tasks afresh, restored
/// from the store.
struct Hold {
    stalled: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl Hold {
    const TICK: Duration = Duration::from_millis(20);

    fn start(valid_until: Arc<AtomicU64>, session_ms: u64) -> Hold {
        let (stalled, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let span = session_ms / 2;
        let ticker = {
            let (stalled, done) = (stalled.clone(), done.clone());
            std::thread::Builder::new()
                .name("member hold".into())
                .spawn(move || {
                    let mut last = Lease::clock();
                    while !done.load(Ordering::Relaxed) {
                        let now = Lease::clock();
                        if now - last >= span {
                            tracing::warn!(stopped_ms = now - last, "this member did not run for half its session timeout");
                            stalled.store(true, Ordering::Release);
                        } else if !stalled.load(Ordering::Acquire) {
                            valid_until.store(now + span, Ordering::Release);
                        }
                        last = now;
                        std::thread::sleep(Self::TICK);
                    }
                })
                .expect("spawning the member's ticker")
        };
        Hold { stalled, done, ticker: Some(ticker) }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

/// Checks that `spec` can run as a cluster: one Kafka source, and checkpoints in an
/// object store (the only state every member can reach).
fn check(spec: &JobSpec) -> Result<(&crate::source::kafka::KafkaSourceSpec, &ClusterSettings), ClusterError> {
    let unsupported = |reason: &str| ClusterError::Unsupported { job: spec.name.clone(), reason: reason.into() };
    let settings = spec.cluster.as_ref().ok_or_else(|| unsupported("it has no [cluster] table"))?;
    let kafka: Vec<_> = spec
        .sources
        .iter()
        .filter_map(|s| match s {
            SourceSpec::Kafka(k) => Some(k),
            _ => None,
        })
        .collect();
    if kafka.len() != 1 || spec.sources.len() != 1 {
        return Err(unsupported(
            "a cluster's tasks follow the partitions of its input, so it needs exactly one source, of type \"kafka\"",
        ));
    }
    if let Some(sink) = spec.sinks.iter().find(|s| matches!(s, crate::job::spec::SinkSpec::File { .. })) {
        return Err(unsupported(&format!(
            "sink `{}` writes a file, which every task of every member would write; use a Kafka sink",
            sink.uid()
        )));
    }
    if settings.standbys > 1 {
        return Err(unsupported(
            "standbys = 1 makes every member keep warm copies of the tasks it does not run; a number of copies \
             per task needs an assignor of weir's own, which it does not have",
        ));
    }
    if spec.checkpoint_store().is_none() {
        return Err(unsupported(
            "its tasks move between members, so their checkpoints must be in an object store every member \
             reaches: set [checkpoint] dir = \"s3://bucket/prefix\" (or gs://, az://, file:// on a shared disk)",
        ));
    }
    Ok((kafka[0], settings))
}

/// Runs this process as a member of `spec`'s cluster until `stop` is set or a task
/// fails: joins the group and runs the tasks it is given.
pub fn run_member(spec: JobSpec, options: JobOptions, stop: Arc<std::sync::atomic::AtomicBool>) -> Result<(), ClusterError> {
    let (source, settings) = check(&spec)?;
    let kafka_error = |message: String| ClusterError::Kafka { job: spec.name.clone(), message };
    let group = settings.group.clone().unwrap_or_else(|| format!("weir-cluster-{}", spec.name));
    let brokers = settings.brokers.clone().unwrap_or_else(|| source.brokers.clone());
    let config = || {
        let mut config = crate::kafka::client_config(&brokers, &source.properties);
        config.set("group.id", &group);
        config
    };
    let metadata: BaseConsumer = config().create().map_err(|e| kafka_error(format!("cannot configure a Kafka client: {e}")))?;
    let Some(input_partitions) = partitions_of(&metadata, &source.topics[0], &stop, None).map_err(kafka_error)? else {
        return Ok(());
    };
    let topology = Topology::new(&spec, source, input_partitions)
        .map_err(|e| ClusterError::Unsupported { job: spec.name.clone(), reason: e.to_string() })?;
    let Some(()) = create_repartition_topics(&config(), &metadata, &topology, &stop).map_err(kafka_error)? else {
        return Ok(());
    };
    // Savepoint requests come through the store (opened before joining, so that a
    // store out of reach stops the member before it takes tasks).
    let mut driver =
        savepoint::Driver::open(&spec).map_err(|message| ClusterError::Savepoint { job: spec.name.clone(), message })?;
    let savepoint = match &options.from_savepoint {
        Some(from) => Some(
            savepoint::prepare_restore(&spec, &topology, from, &metadata, options.allow_non_restored_state)
                .map_err(|message| ClusterError::Savepoint { job: spec.name.clone(), message })?,
        ),
        None => None,
    };
    // The group assigns each stage's lead topic; a task reads the same partition of
    // the stage's other topics (which must be partitioned alike).
    let leads: Vec<String> = topology.stages.iter().map(|s| s.lead_topic.clone()).collect();
    let valid_until = Arc::new(AtomicU64::new(0));
    let hold = Hold::start(valid_until.clone(), settings.session_timeout_ms);
    let tasks = Arc::new(Tasks {
        topology,
        brokers: brokers.clone(),
        options,
        valid_until,
        running: Mutex::new(BTreeMap::new()),
        standby: Mutex::new(()),
        failed: Mutex::new(None),
        stopping: AtomicBool::new(false),
        resume: AtomicBool::new(false),
        savepoint,
    });
    let join = || -> Result<BaseConsumer<Membership>, ClusterError> {
        let consumer: BaseConsumer<Membership> = config()
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", settings.session_timeout_ms.to_string())
            .set("heartbeat.interval.ms", (settings.session_timeout_ms / 5).max(100).to_string())
            .set("enable.auto.commit", "false")
            .create_with_context(Membership { tasks: tasks.clone() })
            .map_err(|e| kafka_error(format!("cannot configure the group member: {e}")))?;
        let names: Vec<&str> = leads.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(|e| kafka_error(format!("cannot join group `{group}`: {e}")))?;
        Ok(consumer)
    };
    let mut consumer = join()?;
    let standbys = (settings.standbys > 0).then(|| {
        let (tasks, done) = (tasks.clone(), hold.done.clone());
        let every = Duration::from_millis(spec.checkpoint.as_ref().map_or(1000, |c| c.interval_ms).max(500));
        std::thread::Builder::new()
            .name("standbys".into())
            .spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    tasks.refresh_standbys();
                    let until = std::time::Instant::now() + every;
                    while std::time::Instant::now() < until && !done.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })
            .expect("spawning the standby thread")
    });
    let savepoints = {
        let (tasks, done, stop) = (tasks.clone(), hold.done.clone(), stop.clone());
        std::thread::Builder::new()
            .name("savepoints".into())
            .spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if driver.step(&tasks) == savepoint::Step::Stopped {
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                    std::thread::sleep(savepoint::Driver::EVERY);
                }
            })
            .expect("spawning the savepoint thread")
    };
    tracing::info!(job = %spec.name, %group, %brokers, "joined the cluster");
    let result = loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break Ok(());
        }
        // Polling serves the group (heartbeats, rebalances and their callbacks); the
        // records themselves are read by the tasks.
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
            tracing::debug!(job = %spec.name, error = %e, "group member");
        }
        if let Ok(assigned) = consumer.assignment() {
            if assigned.count() > 0 {
                let _ = consumer.pause(&assigned);
            }
        }
        tasks.reap();
        if tasks.resume.swap(false, Ordering::AcqRel) {
            if let Ok(assigned) = consumer.assignment() {
                for id in tasks.ids(&assigned) {
                    tasks.start(id);
                }
            }
        }
        if let Some(error) = tasks.failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
            break Err(error);
        }
        if hold.stalled.load(Ordering::Acquire) {
            // The group may have given this member's tasks to others: drop them (their
            // output is held since the stall), and join again as a new member.
            tracing::warn!(job = %spec.name, "this member stalled past half its session timeout; its tasks may \
                           run elsewhere now: dropping them and joining the group again");
            tasks.stop_all();
            drop(consumer);
            consumer = join()?;
            hold.stalled.store(false, Ordering::Release);
        }
    };
    // Leaving: the tasks stop first (revoked by the leave's rebalance, or here).
    hold.done.store(true, Ordering::Relaxed);
    if let Some(standbys) = standbys {
        let _ = standbys.join();
    }
    let _ = savepoints.join();
    tasks.stop_all();
    drop(consumer);
    tracing::info!(job = %spec.name, "left the cluster");
    result
}

/// How long a member waits for a repartition topic it created (or found) to show its
/// partitions in the brokers' metadata before it gives up with an error.
const REPARTITION_TOPIC_WAIT: Duration = Duration::from_secs(60);

/// The number of partitions of `topic`, asking until the brokers answer: `None` when
/// the member is stopped first, an error once `deadline` (if any) has passed.
fn partitions_of(
    client: &BaseConsumer,
    topic: &str,
    stop: &std::sync::atomic::AtomicBool,
    deadline: Option<std::time::Instant>,
) -> Result<Option<u32>, String> {
    let mut warned = false;
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(None);
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Err(format!(
                "topic `{topic}` shows no partitions in the brokers' metadata after {} s; is the broker \
                 reachable, and does it allow creating topics?",
                REPARTITION_TOPIC_WAIT.as_secs()
            ));
        }
        match client.fetch_metadata(Some(topic), crate::kafka::REQUEST_TIMEOUT) {
            Ok(metadata) => {
                let found = metadata.topics().iter().find(|t| t.name() == topic);
                match found {
                    Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                        return Ok(Some(t.partitions().len() as u32));
                    }
                    _ if !warned => {
                        tracing::warn!(%topic, "the topic is not there yet; waiting");
                        warned = true;
                    }
                    _ => {}
                }
            }
            Err(e) if !warned => {
                tracing::warn!(%topic, error = %e, "cannot reach the brokers yet; retrying");
                warned = true;
            }
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Creates the repartition topics that are not there yet (with the brokers' default
/// replication), and checks that those that are have the partitions the job needs.
/// `None` when the member is stopped while it waits for them.
fn create_repartition_topics(
    config: &rdkafka::ClientConfig,
    client: &BaseConsumer,
    topology: &Topology,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Option<()>, String> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;
    if topology.topics.is_empty() {
        return Ok(Some(()));
    }
    let admin: AdminClient<DefaultClientContext> =
        config.create().map_err(|e| format!("cannot configure a Kafka admin client: {e}"))?;
    let new: Vec<NewTopic<'_>> = topology
        .topics
        .iter()
        .map(|t| NewTopic::new(&t.name, t.partitions as i32, TopicReplication::Fixed(-1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(crate::kafka::REQUEST_TIMEOUT));
    let results = futures::executor::block_on(admin.create_topics(&new, &options))
        .map_err(|e| format!("cannot create the repartition topics: {e}"))?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "created a repartition topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, e)) => return Err(format!("cannot create repartition topic `{name}`: {e}")),
        }
    }
    let deadline = std::time::Instant::now() + REPARTITION_TOPIC_WAIT;
    for topic in &topology.topics {
        let Some(found) = partitions_of(client, &topic.name, stop, Some(deadline))? else { return Ok(None) };
        if found != topic.partitions {
            return Err(format!(
                "repartition topic `{}` has {found} partitions, but operator `{}` has parallelism {}; \
                 delete the topic (its records are only in flight between tasks) or restore the parallelism",
                topic.name, topic.to, topic.partitions
            ));
        }
    }
    Ok(Some(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_for_a_topic_ends_at_the_deadline_or_the_stop() {
        // No broker on the port: metadata requests fail until the deadline.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client: BaseConsumer =
            crate::kafka::client_config(&format!("127.0.0.1:{port}"), &Default::default()).create().unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let deadline = std::time::Instant::now() + Duration::from_millis(200);
        let error = partitions_of(&client, "t-repartition", &stop, Some(deadline)).unwrap_err();
        assert!(error.contains("`t-repartition` shows no partitions") && error.contains("reachable"), "{error}");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(partitions_of(&client, "t-repartition", &stop, None), Ok(None));
    }
}
