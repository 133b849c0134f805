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
//! This is the first step of `docs/cluster.md`: it needs the job's input to be
//! partitioned by the key its keyed operators use (co-partitioned, as Kafka Streams
//! requires for joins); repartition topics, standby replicas and fencing of a paused
//! member ("zombie") by the group generation come next.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::job::spec::SourceSpec;
use crate::job::{Job, JobError, JobOptions, JobSpec, JobSummary};
use crate::task::JobControl;

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
}

impl ClusterSettings {
    fn default_session_timeout() -> u64 {
        10_000
    }
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings { brokers: None, group: None, session_timeout_ms: Self::default_session_timeout() }
    }
}

/// Why a member cannot run, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("job `{job}` cannot run as a cluster: {reason}")]
    Unsupported { job: String, reason: String },
    #[error("cluster of job `{job}`: Kafka: {message}")]
    Kafka { job: String, message: String },
    #[error("cluster of job `{job}`: task p{partition} failed: {error}")]
    Task { job: String, partition: i32, error: Box<JobError> },
}

/// A task this member runs: the job on one partition.
struct RunningTask {
    control: Arc<JobControl>,
    thread: JoinHandle<Result<JobSummary, JobError>>,
}

/// What the member's tasks share with the group's rebalance callbacks.
struct Tasks {
    spec: JobSpec,
    options: JobOptions,
    running: Mutex<BTreeMap<i32, RunningTask>>,
    /// The first task failure; the member stops on it.
    failed: Mutex<Option<ClusterError>>,
}

impl Tasks {
    fn start(&self, partition: i32) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.contains_key(&partition) {
            return;
        }
        let spec = task_spec(&self.spec, partition);
        let job = match Job::new(spec, &self.options) {
            Ok(job) => job,
            Err(error) => {
                self.fail(partition, error);
                return;
            }
        };
        tracing::info!(job = %self.spec.name, partition, "task assigned: starting");
        let control = job.control();
        let thread = std::thread::Builder::new()
            .name(format!("task p{partition}"))
            .spawn(move || job.run())
            .expect("spawning a task thread");
        running.insert(partition, RunningTask { control, thread });
    }

    /// Stops the task of `partition` and waits until it has (so the partition can go).
    fn stop(&self, partition: i32) {
        let task = self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&partition);
        if let Some(task) = task {
            tracing::info!(job = %self.spec.name, partition, "task revoked: stopping");
            task.control.stop();
            if let Ok(Err(error)) = task.thread.join() {
                tracing::warn!(job = %self.spec.name, partition, error = %error, "the revoked task ended with an error");
            }
        }
    }

    fn fail(&self, partition: i32, error: JobError) {
        tracing::error!(job = %self.spec.name, partition, error = %error, "task failed");
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.get_or_insert(ClusterError::Task { job: self.spec.name.clone(), partition, error: Box::new(error) });
    }

    /// Collects tasks that ended on their own (a failure that exhausted the restart
    /// strategy, or a bounded input that ended).
    fn reap(&self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let ended: Vec<i32> = running.iter().filter(|(_, t)| t.thread.is_finished()).map(|(p, _)| *p).collect();
        for partition in ended {
            let task = running.remove(&partition).expect("listed");
            match task.thread.join() {
                Ok(Ok(summary)) if !summary.cancelled => {
                    tracing::info!(job = %self.spec.name, partition, "task finished its input")
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => self.fail(partition, error),
                Err(_) => self.fail(partition, JobError::Internal(anyhow::anyhow!("task p{partition} panicked"))),
            }
        }
    }

    fn stop_all(&self) {
        let partitions: Vec<i32> = self.running.lock().unwrap_or_else(|e| e.into_inner()).keys().copied().collect();
        for partition in partitions {
            self.stop(partition);
        }
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
            for partition in task_partitions(partitions) {
                self.tasks.stop(partition);
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                for partition in task_partitions(partitions) {
                    self.tasks.start(partition);
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(job = %self.tasks.spec.name, error = %e, "rebalance failed"),
        }
    }
}

/// The partition numbers of a list (a task covers one number across the topics).
fn task_partitions(list: &TopicPartitionList) -> std::collections::BTreeSet<i32> {
    list.elements().iter().map(|e| e.partition()).collect()
}

/// The job as the task of `partition` runs it: its own name (so its own local
/// directory, lock and Kafka transactional ids), the Kafka source reading only that
/// partition, and its checkpoints under `p<partition>` of the store.
pub fn task_spec(spec: &JobSpec, partition: i32) -> JobSpec {
    let mut task = spec.clone();
    task.name = format!("{}-p{partition}", spec.name);
    for source in &mut task.sources {
        if let SourceSpec::Kafka(kafka) = source {
            kafka.partitions = Some(vec![partition]);
        }
    }
    if let Some(checkpoint) = &mut task.checkpoint {
        let dir = checkpoint.dir.as_ref().and_then(|d| d.to_str()).unwrap_or_default().trim_end_matches('/');
        checkpoint.dir = Some(format!("{dir}/p{partition}").into());
    }
    task
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
    let topics: Vec<String> = source.topics.clone();
    let tasks = Arc::new(Tasks {
        spec: spec.clone(),
        options,
        running: Mutex::new(BTreeMap::new()),
        failed: Mutex::new(None),
    });
    let consumer: BaseConsumer<Membership> = crate::kafka::client_config(&brokers, &source.properties)
        .set("group.id", &group)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", settings.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", (settings.session_timeout_ms / 5).max(100).to_string())
        .set("enable.auto.commit", "false")
        .create_with_context(Membership { tasks: tasks.clone() })
        .map_err(|e| kafka_error(format!("cannot configure the group member: {e}")))?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names).map_err(|e| kafka_error(format!("cannot join group `{group}`: {e}")))?;
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
        if let Some(error) = tasks.failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
            break Err(error);
        }
    };
    // Leaving: the tasks stop first (revoked by the leave's rebalance, or here).
    tasks.stop_all();
    drop(consumer);
    tracing::info!(job = %spec.name, "left the cluster");
    result
}
