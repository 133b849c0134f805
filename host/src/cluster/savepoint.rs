//! # Savepoints of a cluster job
//!
//! A cluster has no coordinator of its own, so a savepoint is asked for through the
//! object store that holds its checkpoints: `weir stop job.toml --savepoint URL` (or
//! `weir savepoint job.toml`) writes a request under `<checkpoint dir>/_cluster/
//! savepoints/`, every member looks there every second, and each task writes
//! its part, a savepoint of its own, into `<URL>/<task>/`. When every task's part is
//! there, the member that sees it first writes the savepoint's manifest at `<URL>/
//! _savepoint`, which ties the parts into one savepoint of the whole job ([`merge`]): a
//! single `weir run --from-savepoint URL` restores it, at any parallelism.
//!
//! The parts must fit together: what a later stage counted must be exactly what the
//! earlier stages wrote before their parts. So the cluster **stops** with the savepoint,
//! stage by stage, as Flink's stop-with-savepoint drains a job: the first stage's tasks
//! stop with their savepoints (their sources read nothing after the barrier, and their
//! repartition writers flush and record the last sequence number they wrote to each
//! partition), and a later stage's task takes its part once it has passed on the last
//! number every writer wrote to its partition, so nothing is in flight between them. A job
//! with a single stage (no repartition topic) can also take a savepoint and go on.
//! A member leaves once the savepoint is complete; while the cluster stops, no member
//! starts a task. If the savepoint fails (a task's part fails, or the requester gives
//! up), the members start their tasks again from their checkpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::topology::Topology;
use super::{ClusterError, TaskId, Tasks};
use crate::checkpoint::remote::RemoteStore;
use crate::checkpoint::storage::{encode_manifest, parse_manifest};
use crate::checkpoint::{Request as JobRequest, TaskState};
use crate::job::JobSpec;
use crate::savepoint::{MANIFEST, SavepointManifest};

/// Where requests go, under the job's checkpoint URL.
const REQUESTS: &str = "_cluster/savepoints";
/// Written into the savepoint's prefix when it cannot complete, with why.
const FAILED: &str = "_failed";
/// The tasks whose parts the savepoint needs, one per line (so that a requester who
/// gives up can say which are missing).
const TASKS: &str = "_tasks";

/// A savepoint asked of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavepointRequest {
    pub id: String,
    /// Where the savepoint goes (an object store URL).
    pub url: String,
    /// Stop the cluster after it.
    pub stop: bool,
    pub requested_ms: i64,
}

/// The job's checkpoint URL and store options, which every member reaches.
fn checkpoint_root(spec: &JobSpec) -> Result<(String, BTreeMap<String, String>), String> {
    let settings = spec.checkpoint.as_ref().ok_or("the job has no [checkpoint] table")?;
    let dir = settings.dir.as_ref().and_then(|d| d.to_str()).filter(|d| crate::store::is_url(d)).ok_or(
        "a cluster's savepoint is written through the object store of its checkpoints; \
         [checkpoint] dir is not an object store URL",
    )?;
    Ok((dir.trim_end_matches('/').to_string(), settings.store_options.clone()))
}

fn open(url: &str, options: &BTreeMap<String, String>) -> Result<RemoteStore, String> {
    RemoteStore::open(url, options).map_err(|e| e.to_string())
}

/// Asks the members of `spec`'s cluster for a savepoint into `url` (default:
/// `<checkpoint dir>/savepoints/savepoint-<ms>`), and with `stop` to stop after it;
/// waits until it is complete, or fails, or `timeout` has passed. Returns its URL.
pub fn take(spec: &JobSpec, url: Option<String>, stop: bool, timeout: Duration) -> Result<String, ClusterError> {
    let error = |message: String| ClusterError::Savepoint { job: spec.name.clone(), message };
    let (root, options) = checkpoint_root(spec).map_err(error)?;
    let id = format!("savepoint-{}", crate::clock::now_ms());
    let url = match url {
        None => format!("{root}/savepoints/{id}"),
        Some(url) if crate::store::is_url(&url) => url.trim_end_matches('/').to_string(),
        Some(other) => {
            return Err(error(format!(
                "`{other}` is a local path, which the other members cannot reach; give an object store \
                 URL (s3://bucket/prefix, ...) or leave it out for {root}/savepoints/<id>"
            )));
        }
    };
    let target = open(&url, &options).map_err(error)?;
    if target.exists(MANIFEST).map_err(|e| error(e.to_string()))? {
        return Err(error(format!("{url} already holds a savepoint")));
    }
    let control = open(&root, &options).map_err(error)?;
    let request = SavepointRequest { id: id.clone(), url: url.clone(), stop, requested_ms: crate::clock::now_ms() };
    let name = format!("{REQUESTS}/{id}.json");
    control
        .put_bytes(&name, serde_json::to_vec(&request).expect("a request serializes"))
        .map_err(|e| error(e.to_string()))?;
    tracing::info!(job = %spec.name, %url, stop, "asked the cluster for a savepoint");
    let started = Instant::now();
    let outcome = loop {
        if target.exists(MANIFEST).map_err(|e| error(e.to_string()))? {
            break Ok(url.clone());
        }
        if let Some(reason) = target.get_bytes(FAILED).map_err(|e| error(e.to_string()))? {
            break Err(error(String::from_utf8_lossy(&reason).into_owned()));
        }
        if started.elapsed() >= timeout {
            let expected = target.get_bytes(TASKS).ok().flatten().unwrap_or_default();
            let missing: Vec<String> = String::from_utf8_lossy(&expected)
                .lines()
                .filter(|task| !target.exists(&format!("{task}/{MANIFEST}")).unwrap_or(false))
                .map(String::from)
                .collect();
            let reason = match (expected.is_empty(), missing.is_empty()) {
                (true, _) => "no member answered (is the cluster running?)".to_string(),
                (false, true) => "every part is there, but no member wrote the manifest".to_string(),
                (false, false) => format!("the parts of tasks {} are missing", missing.join(", ")),
            };
            let message = format!("gave up after {} s: {reason}", timeout.as_secs());
            // The members go on (and start their tasks again after a stop).
            let _ = target.put_bytes(FAILED, message.clone().into_bytes());
            break Err(error(message));
        }
        std::thread::sleep(Driver::EVERY);
    };
    // A stop request stays: a member that has no task, and so no part, may look only
    // after the others have left, and must then still know not to start their tasks.
    // Members that start later ignore it (it is complete).
    if !stop {
        let _ = control.delete(&name);
    }
    outcome
}

/// Whether the task of `spec` (a task's spec) has a complete checkpoint in the store.
pub(super) fn has_checkpoints(spec: &JobSpec) -> Result<bool, String> {
    let (dir, options) = checkpoint_root(spec)?;
    open(&dir, &options)?.has_complete_checkpoint().map_err(|e| e.to_string())
}

/// The object that records which savepoint the cluster's tasks started from.
const RESTORE: &str = "_cluster/restore.json";

/// Readies a cluster start from the savepoint `from` (a directory or an object store
/// URL, which is downloaded into the member's directory): checks it against the whole
/// job, and that the tasks can take their parts of it. Returns the local directory
/// the tasks restore from.
///
/// A task of a later stage holds one key-group range of its keyed operator and takes
/// those key groups; a first-stage task follows a partition of the Kafka input, which a
/// savepoint's keys say nothing about, so the first stage may hold no state. The
/// repartition topics must be empty when the first member starts (records of an
/// earlier run would be read as new), and the tasks must have no checkpoints of their
/// own yet (they would restore those instead).
pub(super) fn prepare_restore(
    spec: &JobSpec,
    topology: &Topology,
    from: &std::path::Path,
    client: &rdkafka::consumer::BaseConsumer,
    allow_non_restored_state: bool,
) -> Result<std::path::PathBuf, String> {
    use rdkafka::consumer::Consumer;
    let (root, options) = checkpoint_root(spec)?;
    let text = from.to_string_lossy().into_owned();
    let savepoint = crate::savepoint::Savepoint::open_for(spec, from).map_err(|e| e.to_string())?;
    crate::job::check_savepoint(spec, &savepoint, allow_non_restored_state)?;
    let with_state = savepoint.operators_with_state();
    if let Some(uid) = with_state.iter().find(|uid| topology.stage_of_node(uid) == Some(0)) {
        return Err(format!(
            "operator `{uid}` has state in the savepoint and runs in the cluster's first stage, whose tasks \
             follow the partitions of the Kafka input; a savepoint does not say which partition a key came \
             from, so its state cannot be split among them. Key the operator's input by a field \
             (`key_field`), so that it reads a repartition topic, or start the cluster without the savepoint"
        ));
    }
    let control = open(&root, &options)?;
    let started: Option<serde_json::Value> =
        control.get_bytes(RESTORE).map_err(|e| e.to_string())?.and_then(|b| serde_json::from_slice(&b).ok());
    if started.is_some_and(|s| s["savepoint"] == text.as_str()) {
        // Another member (or an earlier start of this one) began the restore.
        return Ok(savepoint.dir);
    }
    for (stage, partition) in topology.all_tasks() {
        if has_checkpoints(&topology.task_spec(stage, partition, ""))? {
            return Err(format!(
                "task {} has checkpoints in {root} already, from an earlier run, which it would restore instead \
                 of the savepoint; give [checkpoint] dir a prefix of its own for the start from the savepoint",
                topology.task_name(stage, partition)
            ));
        }
    }
    for topic in &topology.topics {
        for partition in 0..topic.partitions as i32 {
            let (low, high) = client
                .fetch_watermarks(&topic.name, partition, crate::kafka::REQUEST_TIMEOUT)
                .map_err(|e| format!("cannot read the offsets of `{}`: {e}", topic.name))?;
            if high > low {
                return Err(format!(
                    "repartition topic `{}` holds records of an earlier run (partition {partition}, offsets {low} \
                     to {high}), which tasks starting from the savepoint would read as new; delete the topic \
                     (its records are only in flight between tasks) and start again",
                    topic.name
                ));
            }
        }
    }
    let record = serde_json::json!({ "savepoint": text, "at_ms": crate::clock::now_ms() });
    control.put_bytes(RESTORE, record.to_string().into_bytes()).map_err(|e| e.to_string())?;
    tracing::info!(job = %spec.name, savepoint = %text, "the cluster starts from a savepoint");
    Ok(savepoint.dir)
}

/// What a member's savepoint driver did in a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Running,
    /// A savepoint with `stop` completed: the member leaves.
    Stopped,
}

/// One task's part of a savepoint, as this member sees it.
enum Part {
    /// Not asked yet: a later stage's task waits for the earlier stages' parts.
    Waiting,
    /// Asked; the task's answer comes on the receiver.
    Asked(tokio::sync::oneshot::Receiver<Result<(std::path::PathBuf, Duration), String>>),
    /// In the store.
    Done,
}

/// A savepoint this member takes part in.
struct Active {
    request: SavepointRequest,
    target: RemoteStore,
    parts: BTreeMap<TaskId, Part>,
    /// The last sequence number each writer wrote to each partition of each
    /// repartition topic before its part, from the parts in the store: (topic,
    /// producer, partition) to number.
    written: BTreeMap<(String, u32, i32), u64>,
}

/// A member's side of cluster savepoints: looks for requests in the store and has its
/// tasks write their parts.
pub(super) struct Driver {
    job: String,
    control: RemoteStore,
    options: BTreeMap<String, String>,
    active: BTreeMap<String, Active>,
    /// Requests seen through to the end (their objects stay until the requester
    /// removes them).
    finished: BTreeSet<String>,
    /// When the member last listed the requests.
    looked: Option<Instant>,
}

impl Driver {
    /// How often a member drives the savepoints it takes part in.
    pub(super) const EVERY: Duration = Duration::from_millis(250);
    /// How often it lists the requests (a list request costs more than a read on
    /// cloud stores).
    const LOOK_EVERY: Duration = Duration::from_secs(1);

    pub(super) fn open(spec: &JobSpec) -> Result<Driver, String> {
        let (root, options) = checkpoint_root(spec)?;
        let control = open(&root, &options)?;
        let mut driver = Driver {
            job: spec.name.clone(),
            control,
            options,
            active: BTreeMap::new(),
            finished: BTreeSet::new(),
            looked: None,
        };
        // Savepoints that completed or failed before this member started are not its
        // business (a stop request stays in the store).
        for request in driver.requests()? {
            let target = open(&request.url, &driver.options)?;
            let over = |name: &str| target.exists(name).map_err(|e| e.to_string());
            if over(MANIFEST)? || over(FAILED)? {
                driver.finished.insert(request.id);
            }
        }
        Ok(driver)
    }

    /// The requests in the store.
    fn requests(&self) -> Result<Vec<SavepointRequest>, String> {
        let mut requests = Vec::new();
        for name in self.control.list_relative(REQUESTS).map_err(|e| e.to_string())? {
            if !name.ends_with(".json") {
                continue;
            }
            let Some(bytes) = self.control.get_bytes(&name).map_err(|e| e.to_string())? else { continue };
            requests.push(serde_json::from_slice(&bytes).map_err(|e| format!("malformed request {name}: {e}"))?);
        }
        Ok(requests)
    }

    /// Looks for new requests and moves every savepoint in progress on.
    pub(super) fn step(&mut self, tasks: &Tasks) -> Step {
        if self.looked.is_none_or(|at| at.elapsed() >= Self::LOOK_EVERY) {
            self.looked = Some(Instant::now());
            if let Err(e) = self.look_for_requests(tasks) {
                tracing::debug!(job = %self.job, error = %e, "cannot read savepoint requests");
            }
        }
        let ids: Vec<String> = self.active.keys().cloned().collect();
        for id in ids {
            let mut active = self.active.remove(&id).expect("listed");
            match self.drive(&mut active, tasks) {
                Ok(None) => {
                    self.active.insert(id, active);
                }
                Ok(Some(true)) => {
                    self.finished.insert(id.clone());
                    tracing::info!(job = %self.job, url = %active.request.url, "cluster savepoint complete");
                    if active.request.stop {
                        // Members leave only once every member has seen the request
                        // (those without tasks too), so that none starts the tasks
                        // the others leave behind.
                        std::thread::sleep(2 * Self::LOOK_EVERY);
                        return Step::Stopped;
                    }
                }
                Ok(Some(false)) => {
                    self.finished.insert(id);
                    if active.request.stop {
                        tasks.stopping.store(false, std::sync::atomic::Ordering::Release);
                        tasks.resume.store(true, std::sync::atomic::Ordering::Release);
                    }
                }
                Err(message) => {
                    tracing::warn!(job = %self.job, url = %active.request.url, error = %message, "cluster savepoint failed");
                    let _ = active.target.put_bytes(FAILED, message.into_bytes());
                    // Seen as failed at the next step.
                    self.active.insert(id, active);
                }
            }
        }
        Step::Running
    }

    fn look_for_requests(&mut self, tasks: &Tasks) -> Result<(), String> {
        for request in self.requests()? {
            if self.active.contains_key(&request.id) || self.finished.contains(&request.id) {
                continue;
            }
            let target = open(&request.url, &self.options)?;
            let expected: String =
                tasks.topology.all_tasks().map(|(stage, partition)| tasks.topology.task_name(stage, partition) + "\n").collect();
            target.put_bytes(TASKS, expected.into_bytes()).map_err(|e| e.to_string())?;
            if request.stop {
                tasks.stopping.store(true, std::sync::atomic::Ordering::Release);
            } else if tasks.topology.stages.len() > 1 {
                let reason = "a savepoint of a running cluster job whose stages talk through repartition topics \
                              is taken when it stops (`weir stop job.toml --savepoint URL`): its parts must not \
                              have records in flight between them";
                target.put_bytes(FAILED, reason.into()).map_err(|e| e.to_string())?;
            }
            tracing::info!(job = %self.job, url = %request.url, stop = request.stop, "taking part in a cluster savepoint");
            self.active.insert(
                request.id.clone(),
                Active { request, target, parts: BTreeMap::new(), written: BTreeMap::new() },
            );
        }
        Ok(())
    }

    /// Moves one savepoint on: `Some(true)` once complete, `Some(false)` once failed,
    /// `None` while in progress.
    fn drive(&self, active: &mut Active, tasks: &Tasks) -> Result<Option<bool>, String> {
        let io = |e: crate::checkpoint::remote::RemoteError| e.to_string();
        if active.target.exists(MANIFEST).map_err(io)? {
            return Ok(Some(true));
        }
        if active.target.exists(FAILED).map_err(io)? {
            return Ok(Some(false));
        }
        let topology = &tasks.topology;
        // The tasks running here take part; one that moved away is its new owner's.
        let running: BTreeSet<TaskId> = tasks.running.lock().unwrap_or_else(|e| e.into_inner()).keys().copied().collect();
        for id in &running {
            active.parts.entry(*id).or_insert(Part::Waiting);
        }
        let ids: Vec<TaskId> = active.parts.keys().copied().collect();
        for id in ids {
            let name = topology.task_name(id.stage, id.partition);
            if matches!(active.parts.get(&id), Some(Part::Waiting)) {
                if active.target.exists(&format!("{name}/{MANIFEST}")).map_err(io)? {
                    active.parts.insert(id, Part::Done);
                } else if !running.contains(&id) {
                    active.parts.remove(&id);
                } else if self.upstream_written(active, tasks, id)? {
                    let running = tasks.running.lock().unwrap_or_else(|e| e.into_inner());
                    let Some(task) = running.get(&id) else { continue };
                    let (reply, answer) = tokio::sync::oneshot::channel();
                    let dir = task.work_dir.join("savepoints").join(&active.request.id);
                    let request = JobRequest::Savepoint { dir, stop: active.request.stop, reply };
                    if task.requests.send(request).is_ok() {
                        tracing::info!(job = %self.job, task = %name, "taking the task's part of the cluster savepoint");
                        active.parts.insert(id, Part::Asked(answer));
                    }
                }
                continue;
            }
            let Some(Part::Asked(answer)) = active.parts.get_mut(&id) else { continue };
            match answer.try_recv() {
                Ok(Ok((dir, _))) => {
                    let part = open(&format!("{}/{name}", active.request.url), &self.options)?;
                    part.upload_tree(&dir, MANIFEST).map_err(io)?;
                    // The store holds it now; the local copy was weir's own.
                    let _ = std::fs::remove_dir_all(&dir);
                    tracing::info!(job = %self.job, task = %name, "the task's part of the cluster savepoint is in the store");
                    active.parts.insert(id, Part::Done);
                }
                Ok(Err(reason)) => return Err(format!("task {name}: {reason}")),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
                // The task ended without an answer: it moved, or failed (which the member
                // reports); its next owner takes its part.
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    active.parts.insert(id, Part::Waiting);
                }
            }
        }
        let mut parts = Vec::new();
        for (stage, partition) in topology.all_tasks() {
            let name = topology.task_name(stage, partition);
            let Some(bytes) = active.target.get_bytes(&format!("{name}/{MANIFEST}")).map_err(io)? else { return Ok(None) };
            let manifest: SavepointManifest = parse_manifest(&bytes).map_err(|e| format!("{name}'s part: {e}"))?;
            parts.push(PartManifest { task: name, stage, partition, manifest });
        }
        let merged = merge(topology, &parts);
        active.target.put_bytes(MANIFEST, encode_manifest(&merged).map_err(|e| e.to_string())?).map_err(io)?;
        Ok(Some(true))
    }

    /// Whether task `id` has passed on everything the writers of its repartition topics
    /// wrote before their parts (always, for a task of the first stage).
    fn upstream_written(&self, active: &mut Active, tasks: &Tasks, id: TaskId) -> Result<bool, String> {
        let readers = tasks.topology.writers_read_by(id.stage);
        for (topic, writers) in &readers {
            for (producer, writer) in writers {
                let key = (topic.clone(), *producer, id.partition);
                if active.written.contains_key(&key) {
                    continue;
                }
                let Some(bytes) = active.target.get_bytes(&format!("{writer}/{MANIFEST}")).map_err(|e| e.to_string())? else {
                    return Ok(false);
                };
                let manifest: SavepointManifest = parse_manifest(&bytes).map_err(|e| format!("{writer}'s part: {e}"))?;
                // Task `n` of a later stage reads partition `n` of its topics.
                let sequence = match manifest.tasks.get(&crate::checkpoint::task_id(topic, 0)) {
                    Some(TaskState::Sink { state, .. }) => {
                        state["partitions"][id.partition.to_string()].as_u64().unwrap_or(0)
                    }
                    _ => 0,
                };
                active.written.insert(key, sequence);
            }
        }
        let running = tasks.running.lock().unwrap_or_else(|e| e.into_inner());
        let Some(task) = running.get(&id) else { return Ok(false) };
        Ok(readers.iter().all(|(topic, writers)| {
            let seen = task.seen.get(topic);
            writers.iter().all(|(producer, _)| {
                let written = active.written[&(topic.clone(), *producer, id.partition)];
                written == 0 || seen.is_some_and(|s| s.get(*producer) >= written)
            })
        }))
    }
}

/// One task's part of a cluster savepoint.
pub struct PartManifest {
    pub task: String,
    pub stage: usize,
    pub partition: i32,
    pub manifest: SavepointManifest,
}

/// The manifest of the whole job's savepoint from its tasks' parts: what a single
/// process restores.
///
/// - Operator subtasks keep their files (the paths gain the part's directory) under
///   new subtask numbers, unique across parts: subtask `i` of task `n` of an operator
///   run at parallelism `p` in each task becomes `n * p + i`. For the keyed operator
///   behind a repartition topic (one subtask per task, holding key-group range `n`),
///   that is subtask `n` of the job's. A restore takes each new subtask's key groups
///   from every file, so any parallelism works.
/// - The Kafka source's offset of partition `n` is task `n`'s (the task that read it).
/// - The repartition topics' internal sources and sinks are left out (a single
///   process has none), and so is the sinks' transaction state: the tasks' savepoints
///   committed it, and a restore has other writers.
pub fn merge(topology: &Topology, parts: &[PartManifest]) -> SavepointManifest {
    let spec = topology.spec();
    let mut operators: BTreeMap<String, crate::savepoint::OperatorManifest> = BTreeMap::new();
    let mut tasks: BTreeMap<String, TaskState> = BTreeMap::new();
    let mut offsets: BTreeMap<String, serde_json::Map<String, serde_json::Value>> = BTreeMap::new();
    for part in parts {
        let task_spec = topology.task_spec(part.stage, part.partition, "");
        for (uid, op) in &part.manifest.operators {
            let merged = operators.entry(uid.clone()).or_insert_with(|| crate::savepoint::OperatorManifest {
                parallelism: spec.node(uid).map_or(op.parallelism, |n| n.1),
                states: Vec::new(),
                ..op.clone()
            });
            for state in &op.states {
                if !merged.states.contains(state) {
                    merged.states.push(state.clone());
                }
            }
        }
        for (id, state) in &part.manifest.tasks {
            let (uid, subtask) = id.rsplit_once('#').map_or((id.as_str(), 0), |(u, s)| (u, s.parse().unwrap_or(0)));
            if topology.is_internal(uid) {
                continue;
            }
            match state {
                TaskState::Source { position, .. } => {
                    // Task `n` reads partition `n` of its topics; the offsets it holds
                    // of others are those it was started from, which their own tasks
                    // have moved on from.
                    let merged = offsets.entry(uid.to_string()).or_default();
                    for (name, offset) in position.get("offsets").and_then(|o| o.as_object()).into_iter().flatten() {
                        if name.rsplit_once('/').is_some_and(|(_, p)| p == part.partition.to_string()) {
                            merged.insert(name.clone(), offset.clone());
                        }
                    }
                }
                TaskState::Sink { .. } => {}
                TaskState::Operator { .. } => {
                    let parallelism = task_spec.node(uid).map_or(1, |n| n.1);
                    let renumbered = part.partition as u32 * parallelism + subtask;
                    tasks.insert(crate::checkpoint::task_id(uid, renumbered), in_directory(state, &part.task));
                }
            }
        }
    }
    for (uid, offsets) in offsets {
        let position = serde_json::json!({ "offsets": offsets });
        tasks.insert(crate::checkpoint::task_id(&uid, 0), TaskState::Source { position, max_timestamps: BTreeMap::new() });
    }
    SavepointManifest::new(&spec.name, spec.max_parallelism, operators, tasks)
}

/// `state` with its files' paths under `dir`.
fn in_directory(state: &TaskState, dir: &str) -> TaskState {
    let mut state = state.clone();
    let mut moved = |file: &mut crate::checkpoint::FileEntry| file.path = format!("{dir}/{}", file.path);
    match &mut state {
        TaskState::Operator { state, timers, operator_state, channel_state, migration, .. } => {
            state.iter_mut().for_each(&mut moved);
            moved(timers);
            operator_state.iter_mut().for_each(&mut moved);
            channel_state.iter_mut().for_each(&mut moved);
            if let Some(migration) = migration {
                moved(&mut migration.keys);
            }
        }
        TaskState::Sink { channel_state, .. } => channel_state.iter_mut().for_each(moved),
        TaskState::Source { .. } => {}
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::FileEntry;
    use crate::job::spec::SourceSpec;

    fn topology() -> Topology {
        let text = r#"
            name = "j"
            [[source]]
            type = "kafka"
            uid = "in"
            brokers = "b:9092"
            topics = ["t"]
            key_field = "user"
            [[operator]]
            uid = "parse"
            native = "keyed-count"
            [[operator]]
            uid = "count"
            native = "keyed-count"
            parallelism = 3
            [[sink]]
            type = "kafka"
            uid = "out"
            brokers = "b:9092"
            topic = "o"
            [[edge]]
            from = "in"
            to = "parse"
            [[edge]]
            from = "parse"
            to = "count"
            partition = "keyed"
            [[edge]]
            from = "count"
            to = "out"
            [checkpoint]
            interval_ms = 1000
            dir = "s3://bucket/x"
        "#;
        let spec = JobSpec::parse(text, std::path::Path::new("/tmp")).unwrap();
        let SourceSpec::Kafka(source) = &spec.sources[0] else { unreachable!() };
        Topology::new(&spec, source, 2).unwrap()
    }

    fn file(path: &str) -> FileEntry {
        FileEntry { path: path.into(), size: 1, crc32: 0 }
    }

    fn operator(watermark: i64) -> TaskState {
        TaskState::Operator {
            watermark,
            state_version: 0,
            states: Vec::new(),
            backend: "memory".into(),
            state: vec![file("count#0/state.ent")],
            timers: file("count#0/timers.ent"),
            operator_state: None,
            channel_state: None,
            migration: None,
        }
    }

    fn part(topology: &Topology, stage: usize, partition: i32, tasks: Vec<(&str, TaskState)>) -> PartManifest {
        let operators = tasks
            .iter()
            .filter(|(_, s)| matches!(s, TaskState::Operator { .. }))
            .map(|(id, _)| {
                let uid = id.split('#').next().unwrap().to_string();
                (uid, crate::savepoint::OperatorManifest { parallelism: 1, component: "native:keyed-count".into(), state_version: 0, states: Vec::new() })
            })
            .collect();
        let tasks = tasks.into_iter().map(|(id, s)| (id.to_string(), s)).collect();
        PartManifest {
            task: topology.task_name(stage, partition),
            stage,
            partition,
            manifest: SavepointManifest::new(&format!("t{stage}{partition}"), 128, operators, tasks),
        }
    }

    #[test]
    fn the_parts_of_every_task_make_one_savepoint_of_the_job() {
        let topology = topology();
        // Each task also holds the offsets it started from of the other partitions.
        let source = |offset: i64, partition: i32| TaskState::Source {
            position: serde_json::json!({ "offsets": { "t/0": 1, "t/1": 2, format!("t/{partition}"): offset } }),
            max_timestamps: BTreeMap::from([(0, 5)]),
        };
        let written = |sequence: u64| TaskState::Sink { state: serde_json::json!({ "sequence": sequence }), channel_state: None };
        let read = TaskState::Source {
            position: serde_json::json!({ "offsets": { "j-count-repartition/1": 9 }, "sequences": { "0": 4 } }),
            max_timestamps: BTreeMap::new(),
        };
        let parts = vec![
            part(&topology, 0, 0, vec![("in#0", source(10, 0)), ("parse#0", operator(1)), ("j-count-repartition#0", written(4))]),
            part(&topology, 0, 1, vec![("in#0", source(20, 1)), ("parse#0", operator(2)), ("j-count-repartition#0", written(7))]),
            part(&topology, 1, 0, vec![("j-count-repartition#0", read.clone()), ("count#0", operator(3)), ("out#0", written(0))]),
            part(&topology, 1, 1, vec![("j-count-repartition#0", read.clone()), ("count#0", operator(4))]),
            part(&topology, 1, 2, vec![("j-count-repartition#0", read), ("count#0", operator(5))]),
        ];
        let merged = merge(&topology, &parts);
        assert_eq!(merged.job, "j");
        assert_eq!(
            merged.tasks.keys().map(String::as_str).collect::<Vec<_>>(),
            ["count#0", "count#1", "count#2", "in#0", "parse#0", "parse#1"],
            "no repartition reader or writer, no sink transaction state; subtasks renumbered per task"
        );
        let TaskState::Source { position, max_timestamps } = &merged.tasks["in#0"] else { panic!() };
        assert_eq!(position, &serde_json::json!({ "offsets": { "t/0": 10, "t/1": 20 } }));
        assert!(max_timestamps.is_empty());
        let TaskState::Operator { watermark, state, timers, .. } = &merged.tasks["count#2"] else { panic!() };
        assert_eq!(*watermark, 5);
        assert_eq!(state[0].path, "j-count-r2/count#0/state.ent");
        assert_eq!(timers.path, "j-count-r2/count#0/timers.ent");
        let TaskState::Operator { state, .. } = &merged.tasks["parse#1"] else { panic!() };
        assert_eq!(state[0].path, "j-p1/count#0/state.ent");
        assert_eq!(merged.operators["count"].parallelism, 3, "the job's parallelism, not the task's");
        assert_eq!(merged.operators["parse"].parallelism, 1);
    }
}
