//! # Deployment server
//!
//! `weir serve` runs many jobs in one host process, deployed as bundles over a REST API
//! shaped after Flink's (`docs/server.md`). The server owns a data directory: uploaded
//! bundles (`bundles/<id>/`, unpacked and verified), one directory per job run
//! (`jobs/<id>/`: its record, checkpoints, RocksDB state and savepoints), and the API
//! token (`token`, mode 0600). Jobs read and write nowhere else that the caller chooses:
//! savepoints go under the job's directory, components come only from verified bundles.
//!
//! | route | does |
//! | --- | --- |
//! | `POST /bundles` | uploads a bundle (the body), verifies it, answers its id |
//! | `GET /bundles` | the uploaded bundles |
//! | `POST /bundles/{id}/run` | runs its job: `{"savepointPath", "allowNonRestoredState", "parallelism"}` |
//! | `GET /jobs`, `GET /jobs/{id}` | jobs and their status |
//! | `POST /jobs/{id}/savepoints` | triggers a savepoint: `202` with a `request-id` |
//! | `GET /jobs/{id}/savepoints/{request}` | `IN_PROGRESS`, or `COMPLETED` with its location or failure cause |
//! | `POST /jobs/{id}/stop` | stops the job; `{"savepoint": true}` takes a savepoint first (`202`, as above) |
//! | `GET /jobs/{id}/checkpoints` | checkpoint counts, the latest completed (duration, size) and failed (cause) |
//! | `GET /` | the dashboard (a page; it needs the token to show anything) |
//! | `GET /openapi.json` | this API's OpenAPI description (`server/openapi.json`) |
//! | `GET /metrics` | per job and node, in Prometheus' text format |
//! | `POST /jobs/{id}/upgrade` | swaps an operator live for its component in another bundle: `{"operator", "bundle"}` (`202`; poll `/jobs/{id}/upgrades/{request}`) |
//!
//! Every request needs `Authorization: Bearer <token>`, a `Host` naming the server's
//! address, and no `Origin` but the server's own (its dashboard); bodies are size-capped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::access::{self, Access};
use crate::bundle::{self, HostMaximums};
use crate::checkpoint::Request;
use crate::job::{Job, JobOptions, JobSpec};
use crate::plugin::Runtime;
use crate::task::JobControl;

/// The dashboard, served at `/` (`docs/server.md#dashboard`).
const DASHBOARD: &str = include_str!("dashboard.html");

/// The API's OpenAPI 3 description (checked in; the tests call every operation in it).
pub const OPENAPI: &str = include_str!("openapi.json");

/// The largest bundle upload.
const MAX_UPLOAD_BYTES: usize = 512 << 20;
/// The token file in the data directory.
pub const TOKEN_FILE: &str = "token";

/// Where and how `weir serve` runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Serve a non-loopback address without TLS.
    pub insecure: bool,
    /// Serve HTTPS with this certificate and key.
    pub tls: Option<crate::api::tls::TlsFiles>,
    /// How many connections it holds at once and how long it waits for a request.
    pub connections: crate::api::served::ConnectionLimits,
}

/// The data directory as the server owns it.
const OWNED: crate::ownership::Owned = crate::ownership::Owned {
    what: "server data directory",
    is_ours: |name| matches!(name, "bundles" | "jobs" | TOKEN_FILE),
};

/// A job's state, as Flink names them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    Running,
    Finished,
    Canceled,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BundleRecord {
    id: String,
    name: String,
    version: String,
}

/// What the server keeps of a job run (also `jobs/<id>/job.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobRecord {
    jid: String,
    name: String,
    bundle: String,
    state: JobStatus,
    #[serde(rename = "start-time")]
    start_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "failure-cause")]
    failure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    records: Option<serde_json::Value>,
    /// How it was started, to start it again after the server restarts.
    #[serde(default)]
    run: RunBody,
}

struct LiveJob {
    record: Arc<Mutex<JobRecord>>,
    control: Arc<JobControl>,
    requests: crossbeam_channel::Sender<Request>,
    /// The job's own Wasm runtime: an upgrade's component must be compiled by it.
    runtime: Arc<Runtime>,
    metrics: crate::job::LiveMetrics,
    checkpoints: crate::checkpoint::coordinator::SharedStats,
    upgrades: Arc<crate::job::upgrades::Upgrades>,
}

/// Per node of a job: its counts and gauges so far.
fn vertices(metrics: &crate::job::LiveMetrics) -> Vec<crate::job::NodeSummary> {
    metrics.snapshot().nodes
}

/// Flink's back-pressure level for a ratio: `ok` up to 10%, `low` up to 50%, `high` above.
fn backpressure_level(ratio: f64) -> &'static str {
    if ratio <= 0.10 {
        "ok"
    } else if ratio <= 0.5 {
        "low"
    } else {
        "high"
    }
}

/// The label value of a node's kind.
fn kind(node: &crate::job::NodeSummary) -> String {
    format!("{:?}", node.kind).to_lowercase()
}

/// A savepoint's or an upgrade's progress.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "id", rename_all = "SCREAMING_SNAKE_CASE")]
enum Operation {
    InProgress,
    Completed { location: Option<String>, #[serde(rename = "failure-cause")] failure: Option<String> },
}

#[derive(Clone)]
struct Server {
    dir: PathBuf,
    access: Access,
    runtime: Arc<Runtime>,
    maximums: HostMaximums,
    bundles: Arc<Mutex<BTreeMap<String, BundleRecord>>>,
    jobs: Arc<Mutex<BTreeMap<String, LiveJob>>>,
    operations: Arc<Mutex<BTreeMap<String, Operation>>>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "errors": [message.into()] }))).into_response()
}

impl Server {
    fn bundle_dir(&self, id: &str) -> PathBuf {
        self.dir.join("bundles").join(id)
    }

    fn job_dir(&self, jid: &str) -> PathBuf {
        self.dir.join("jobs").join(jid)
    }

    /// Whether `path` lies under the data directory (savepoints are read from there only).
    fn inside(&self, path: &Path) -> bool {
        let Ok(path) = std::fs::canonicalize(path) else { return false };
        std::fs::canonicalize(&self.dir).is_ok_and(|dir| path.starts_with(dir))
    }

    /// Starts the job of bundle `id` as job `jid` and keeps it in the table.
    fn start_job(&self, id: &str, jid: &str, run: &RunBody) -> Result<JobRecord, String> {
        let bundles = self.bundles.lock().unwrap_or_else(|e| e.into_inner());
        let Some(bundle) = bundles.get(id).cloned() else { return Err(format!("no bundle `{id}`")) };
        drop(bundles);
        let dir = self.bundle_dir(id);
        let text = std::fs::read_to_string(dir.join(bundle::MANIFEST)).map_err(|e| e.to_string())?;
        let manifest: bundle::Manifest = toml::from_str(&text).map_err(|e| e.to_string())?;
        let mut spec = JobSpec::load(&dir.join(&manifest.job)).map_err(|e| e.to_string())?;
        let job_dir = self.job_dir(jid);
        if let Some(checkpoint) = spec.checkpoint.as_mut() {
            checkpoint.dir = Some(job_dir.join("checkpoints"));
        }
        spec.state.dir = Some(job_dir.join("state"));
        if let Some(parallelism) = run.parallelism {
            if parallelism == 0 || parallelism > spec.max_parallelism {
                return Err(format!("parallelism must be 1 to {} (the job's max_parallelism)", spec.max_parallelism));
            }
            for op in &mut spec.operators {
                op.parallelism = parallelism;
            }
        }
        let from_savepoint = match &run.savepoint_path {
            Some(path) => {
                let path = if Path::new(path).is_absolute() { PathBuf::from(path) } else { self.dir.join(path) };
                if !self.inside(&path) {
                    return Err("savepointPath must be a savepoint under the server's data directory".into());
                }
                Some(path)
            }
            None => None,
        };
        let options = JobOptions {
            from_savepoint,
            allow_non_restored_state: run.allow_non_restored_state,
            ..Default::default()
        };
        std::fs::create_dir_all(&job_dir).map_err(|e| e.to_string())?;
        let job = Job::new(spec, &options).map_err(|e| e.to_string())?;
        let record = JobRecord {
            jid: jid.to_string(),
            name: bundle.name.clone(),
            bundle: id.to_string(),
            state: JobStatus::Running,
            start_time: crate::clock::now_ms(),
            failure: None,
            records: None,
            run: run.clone(),
        };
        let shared = Arc::new(Mutex::new(record.clone()));
        let live = LiveJob { record: shared.clone(), control: job.control(), requests: job.requests(), runtime: job.runtime(),
            metrics: job.live_metrics(),
            checkpoints: job.checkpoint_stats(),
            upgrades: job.upgrades(),
        };
        self.save(&record);
        let server = self.clone();
        std::thread::Builder::new()
            .name(format!("weir-job-{jid}"))
            .spawn(move || {
                let result = job.run();
                let mut record = shared.lock().unwrap_or_else(|e| e.into_inner());
                match result {
                    Ok(summary) => {
                        record.state = if summary.cancelled { JobStatus::Canceled } else { JobStatus::Finished };
                        record.records = Some(json!(summary
                            .nodes
                            .iter()
                            .map(|n| json!({ "uid": n.uid, "read-records": n.records_in, "write-records": n.records_out }))
                            .collect::<Vec<_>>()));
                    }
                    Err(e) => {
                        record.state = JobStatus::Failed;
                        record.failure = Some(e.to_string());
                    }
                }
                server.save(&record);
            })
            .map_err(|e| e.to_string())?;
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).insert(jid.to_string(), live);
        Ok(record)
    }

    /// Starts again every job that was running when the server last stopped (or was
    /// killed): from its latest checkpoint when it has one, as Flink's HA recovery does.
    fn resume(&self) {
        let Ok(entries) = std::fs::read_dir(self.dir.join("jobs")) else { return };
        for entry in entries.flatten() {
            let Ok(text) = std::fs::read(entry.path().join("job.json")) else { continue };
            let Ok(record) = serde_json::from_slice::<JobRecord>(&text) else { continue };
            if record.state != JobStatus::Running {
                continue;
            }
            let mut run = record.run.clone();
            let checkpoints = crate::checkpoint::CheckpointStorage::new(entry.path().join("checkpoints"));
            if checkpoints.latest().ok().flatten().is_some() {
                run.savepoint_path = None;
            }
            tracing::info!(job = %record.jid, "resuming a job that was running");
            if let Err(e) = self.start_job(&record.bundle, &record.jid, &run) {
                tracing::error!(job = %record.jid, error = %e, "cannot resume the job");
                let mut failed = record.clone();
                failed.state = JobStatus::Failed;
                failed.failure = Some(format!("cannot resume after a server restart: {e}"));
                self.save(&failed);
            }
        }
    }

    /// Writes a job's record, so that a restarted server finds it.
    fn save(&self, record: &JobRecord) {
        let path = self.job_dir(&record.jid).join("job.json");
        if let Err(e) = std::fs::write(&path, serde_json::to_vec_pretty(record).unwrap_or_default()) {
            tracing::warn!(job = %record.jid, error = %e, "cannot write the job record");
        }
    }

    /// Sends a savepoint request to job `jid`; the operation id to poll.
    fn savepoint(&self, jid: &str, stop: bool) -> Result<String, Response> {
        self.operation(jid, |id, dir, reply| {
            Request::Savepoint { dir: dir.join("savepoints").join(format!("savepoint-{id}")), stop, reply }
        })
    }

    /// Sends the request `make` builds (from the operation id, the job's directory and
    /// the reply channel) to job `jid`, and tracks its answer as an operation to poll.
    fn operation(
        &self,
        jid: &str,
        make: impl FnOnce(&str, &Path, crate::checkpoint::coordinator::Reply) -> Request,
    ) -> Result<String, Response> {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let Some(job) = jobs.get(jid) else { return Err(error(StatusCode::NOT_FOUND, format!("no job `{jid}`"))) };
        let request_id = access::random_hex(8).map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        if job.requests.send(make(&request_id, &self.job_dir(jid), reply)).is_err() {
            return Err(error(StatusCode::CONFLICT, "the job is not running"));
        }
        drop(jobs);
        self.operations.lock().unwrap_or_else(|e| e.into_inner()).insert(request_id.clone(), Operation::InProgress);
        let operations = self.operations.clone();
        let id = request_id.clone();
        tokio::spawn(async move {
            let done = match answer.await {
                Ok(Ok((path, _))) => Operation::Completed { location: Some(path.display().to_string()), failure: None },
                Ok(Err(e)) => Operation::Completed { location: None, failure: Some(e) },
                Err(_) => Operation::Completed { location: None, failure: Some("the job stopped before the operation completed".into()) },
            };
            operations.lock().unwrap_or_else(|e| e.into_inner()).insert(id, done);
        });
        Ok(request_id)
    }

    /// The component operator `uid` has in the job of bundle `bundle`.
    fn bundled_component(&self, bundle: &str, uid: &str) -> Result<PathBuf, String> {
        if !self.bundles.lock().unwrap_or_else(|e| e.into_inner()).contains_key(bundle) {
            return Err(format!("no bundle `{bundle}`"));
        }
        let dir = self.bundle_dir(bundle);
        let text = std::fs::read_to_string(dir.join(bundle::MANIFEST)).map_err(|e| e.to_string())?;
        let manifest: bundle::Manifest = toml::from_str(&text).map_err(|e| e.to_string())?;
        let spec = JobSpec::load(&dir.join(&manifest.job)).map_err(|e| e.to_string())?;
        let op = spec.operators.iter().find(|op| op.uid == uid).ok_or_else(|| format!("bundle `{bundle}` has no operator `{uid}`"))?;
        let component = op.component.as_ref().ok_or_else(|| format!("operator `{uid}` of bundle `{bundle}` is not a component"))?;
        Ok(dir.join(component))
    }
}

/// Refuses requests without the token, for another host name, or from a web page.
async fn guard(State(server): State<Server>, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    // The dashboard page itself holds no data: it asks for the token and calls the API.
    let checked = if request.uri().path() == "/" {
        server.access.check_page(request.headers())
    } else {
        server.access.check(request.headers(), &format!("{TOKEN_FILE} in the server's data directory"))
    };
    match checked {
        Ok(()) => next.run(request).await,
        Err((status, message)) => error(status, message),
    }
}

async fn upload(State(server): State<Server>, body: Bytes) -> Response {
    use sha2::Digest as _;
    let id: String = sha2::Sha256::digest(&body).iter().take(8).map(|b| format!("{b:02x}")).collect();
    if let Some(existing) = server.bundles.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return (StatusCode::OK, Json(json!(existing))).into_response();
    }
    let verified = tokio::task::spawn_blocking({
        let server = server.clone();
        let id = id.clone();
        move || -> Result<BundleRecord, String> {
            let staging = server.dir.join("bundles").join(format!(".upload-{id}"));
            let _ = std::fs::remove_dir_all(&staging);
            std::fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
            let file = staging.with_extension("weir");
            std::fs::write(&file, &body).map_err(|e| e.to_string())?;
            let result = bundle::verify(&file, &staging, &server.runtime, &server.maximums);
            let _ = std::fs::remove_file(&file);
            match result {
                Ok((manifest, _)) => {
                    std::fs::rename(&staging, server.bundle_dir(&id)).map_err(|e| e.to_string())?;
                    Ok(BundleRecord { id: id.clone(), name: manifest.name, version: manifest.version })
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&staging);
                    Err(e.to_string().replace(&file.display().to_string(), "upload"))
                }
            }
        }
    })
    .await;
    match verified {
        Ok(Ok(record)) => {
            server.bundles.lock().unwrap_or_else(|e| e.into_inner()).insert(id, record.clone());
            (StatusCode::OK, Json(json!(record))).into_response()
        }
        Ok(Err(reason)) => error(StatusCode::BAD_REQUEST, reason),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn list_bundles(State(server): State<Server>) -> Response {
    let bundles: Vec<BundleRecord> = server.bundles.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
    Json(json!({ "bundles": bundles })).into_response()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RunBody {
    savepoint_path: Option<String>,
    #[serde(default)]
    allow_non_restored_state: bool,
    parallelism: Option<u32>,
}

async fn run_bundle(State(server): State<Server>, UrlPath(id): UrlPath<String>, body: Option<Json<RunBody>>) -> Response {
    let run = body.map(|b| b.0).unwrap_or_default();
    let jid = match access::random_hex(16) {
        Ok(jid) => jid,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let started = tokio::task::spawn_blocking(move || server.start_job(&id, &jid, &run)).await;
    match started {
        Ok(Ok(record)) => Json(json!({ "jobid": record.jid })).into_response(),
        Ok(Err(reason)) => error(StatusCode::BAD_REQUEST, reason),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn list_jobs(State(server): State<Server>) -> Response {
    let jobs = server.jobs.lock().unwrap_or_else(|e| e.into_inner());
    let jobs: Vec<serde_json::Value> = jobs
        .values()
        .map(|j| {
            let r = j.record.lock().unwrap_or_else(|e| e.into_inner());
            json!({ "id": r.jid, "name": r.name, "status": r.state })
        })
        .collect();
    Json(json!({ "jobs": jobs })).into_response()
}

async fn job_details(State(server): State<Server>, UrlPath(jid): UrlPath<String>) -> Response {
    let jobs = server.jobs.lock().unwrap_or_else(|e| e.into_inner());
    match jobs.get(&jid) {
        Some(job) => {
            let mut answer = json!(*job.record.lock().unwrap_or_else(|e| e.into_inner()));
            let failures = job.metrics.failures();
            answer["failures"] = json!(failures.values().sum::<u64>());
            // Flink's shape: the job graph's vertices with their record counts.
            answer["vertices"] = vertices(&job.metrics)
                .iter()
                .map(|n| {
                    let mut vertex = json!({ "id": n.uid, "kind": kind(n), "parallelism": n.parallelism,
                            "metrics": { "read-records": n.records_in, "write-records": n.records_out,
                                "dead-letters": n.dead_lettered },
                            "backpressure": { "ratio": n.backpressure_ratio, "level": backpressure_level(n.backpressure_ratio) },
                            "failures": failures.iter().filter(|((node, _), _)| *node == n.uid)
                                .map(|((_, cause), count)| (cause.to_string(), json!(count)))
                                .collect::<serde_json::Map<_, _>>() });
                    if let Some(pending) = n.pending {
                        vertex["pending-records"] = json!(pending);
                    }
                    if let Some(watermark) = n.watermark {
                        vertex["watermark"] = json!(watermark);
                        vertex["state-size"] = json!(n.state_bytes);
                        vertex["timers"] = json!(n.timers);
                        vertex["calls"] = json!(n.calls);
                        vertex["call-time-ms"] = json!(n.call_time.as_secs_f64() * 1e3);
                    }
                    vertex
                })
                .collect();
            Json(answer).into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("no job `{jid}`")),
    }
}

/// Checkpoint statistics in Flink's shape: counts, and the latest completed and failed.
/// The job's live upgrades, oldest first, with their outcomes.
async fn history(State(server): State<Server>, UrlPath(jid): UrlPath<String>) -> Response {
    let jobs = server.jobs.lock().unwrap_or_else(|e| e.into_inner());
    let Some(job) = jobs.get(&jid) else { return error(StatusCode::NOT_FOUND, format!("no job `{jid}`")) };
    Json(json!({ "upgrades": job.upgrades.history() })).into_response()
}

async fn checkpoints(State(server): State<Server>, UrlPath(jid): UrlPath<String>) -> Response {
    let jobs = server.jobs.lock().unwrap_or_else(|e| e.into_inner());
    let Some(job) = jobs.get(&jid) else { return error(StatusCode::NOT_FOUND, format!("no job `{jid}`")) };
    let stats = job.checkpoints.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let completed = stats.latest_completed.map(|c| {
        json!({ "id": c.id, "latest_ack_timestamp": c.completed_ms, "end_to_end_duration": c.duration_ms,
                "state_size": c.state_size, "persisted_data": c.persisted_data, "is_unaligned": c.is_unaligned,
                "status": "COMPLETED" })
    });
    let failed = stats.latest_failed.map(|f| {
        json!({ "id": f.id, "failure_timestamp": f.failed_ms, "failure_message": f.cause, "status": "FAILED" })
    });
    Json(json!({
        "counts": { "completed": stats.completed, "failed": stats.failed, "total": stats.completed + stats.failed },
        "latest": { "completed": completed, "failed": failed },
    }))
    .into_response()
}

/// Prometheus' text format: per job, its state and checkpoints, and per node, records
/// in and out.
async fn prometheus(State(server): State<Server>) -> Response {
    use std::fmt::Write as _;
    let quote = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let mut up = String::from("# HELP weir_job_running Whether the job is running (1) or ended (0).\n# TYPE weir_job_running gauge\n");
    let mut records_in = String::from("# HELP weir_records_in_total Records a node received (a source: read).\n# TYPE weir_records_in_total counter\n");
    let mut records_out = String::from("# HELP weir_records_out_total Records a node emitted.\n# TYPE weir_records_out_total counter\n");
    let mut dead_letters = String::from("# HELP weir_dead_letters_total Records a node rejected to its `dlq` output (malformed input, rows a sink's target refused).\n# TYPE weir_dead_letters_total counter\n");
    let mut checkpoints = String::from(
        "# HELP weir_checkpoints_total Checkpoints by outcome.\n# TYPE weir_checkpoints_total counter\n",
    );
    let mut last = String::from(
        "# HELP weir_checkpoint_last_duration_ms The latest completed checkpoint's duration.\n# TYPE weir_checkpoint_last_duration_ms gauge\n",
    );
    let mut watermarks = String::from(
        "# HELP weir_watermark_ms An operator's event-time watermark (the lowest of its subtasks).\n# TYPE weir_watermark_ms gauge\n",
    );
    let mut state = String::from("# HELP weir_state_bytes An operator's keyed state size.\n# TYPE weir_state_bytes gauge\n");
    let mut timers = String::from("# HELP weir_timers_pending An operator's pending timers.\n# TYPE weir_timers_pending gauge\n");
    let mut calls = String::from("# HELP weir_operator_calls_total Calls into an operator's logic (runs of elements, timers).\n# TYPE weir_operator_calls_total counter\n");
    let mut call_time = String::from("# HELP weir_operator_call_seconds_total Time in calls into an operator's logic (its guest, for components).\n# TYPE weir_operator_call_seconds_total counter\n");
    let mut backpressured = String::from("# HELP weir_backpressured_seconds_total Time a node's subtasks waited for room downstream.\n# TYPE weir_backpressured_seconds_total counter\n");
    let mut ratio = String::from("# HELP weir_backpressure_ratio The highest share of the last second a node's subtask waited for room downstream (Flink's back-pressure ratio).\n# TYPE weir_backpressure_ratio gauge\n");
    let mut pending = String::from("# HELP weir_source_pending_records Records a source has yet to read (Kafka: the consumer lag; Flink's pendingRecords).\n# TYPE weir_source_pending_records gauge\n");
    let mut failures = String::from("# HELP weir_failures_total Task failures (each restarts or ends the job), by node and cause: trap, deadline, out-of-memory, error, contract, state, source, sink, ...\n# TYPE weir_failures_total counter\n");
    let mut size = String::from(
        "# HELP weir_checkpoint_last_size_bytes The latest completed checkpoint's state size.\n# TYPE weir_checkpoint_last_size_bytes gauge\n",
    );
    for job in server.jobs.lock().unwrap_or_else(|e| e.into_inner()).values() {
        let record = job.record.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let labels = format!("job=\"{}\",jid=\"{}\"", quote(&record.name), record.jid);
        let _ = writeln!(up, "weir_job_running{{{labels}}} {}", u8::from(record.state == JobStatus::Running));
        let stats = job.checkpoints.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let _ = writeln!(checkpoints, "weir_checkpoints_total{{{labels},outcome=\"completed\"}} {}", stats.completed);
        let _ = writeln!(checkpoints, "weir_checkpoints_total{{{labels},outcome=\"failed\"}} {}", stats.failed);
        if let Some(c) = stats.latest_completed {
            let _ = writeln!(last, "weir_checkpoint_last_duration_ms{{{labels}}} {}", c.duration_ms);
            let _ = writeln!(size, "weir_checkpoint_last_size_bytes{{{labels}}} {}", c.state_size);
        }
        for ((node, cause), count) in job.metrics.failures() {
            let _ = writeln!(failures, "weir_failures_total{{{labels},node=\"{}\",cause=\"{cause}\"}} {count}", quote(&node));
        }
        for n in vertices(&job.metrics) {
            let node = format!("{labels},node=\"{}\",kind=\"{}\"", quote(&n.uid), kind(&n));
            let _ = writeln!(records_in, "weir_records_in_total{{{node}}} {}", n.records_in);
            let _ = writeln!(records_out, "weir_records_out_total{{{node}}} {}", n.records_out);
            let _ = writeln!(dead_letters, "weir_dead_letters_total{{{node}}} {}", n.dead_lettered);
            if n.kind != crate::job::spec::NodeKind::Sink {
                let _ = writeln!(backpressured, "weir_backpressured_seconds_total{{{node}}} {}", n.backpressured.as_secs_f64());
                let _ = writeln!(ratio, "weir_backpressure_ratio{{{node}}} {}", n.backpressure_ratio);
            }
            if let Some(p) = n.pending {
                let _ = writeln!(pending, "weir_source_pending_records{{{node}}} {p}");
            }
            if let Some(watermark) = n.watermark {
                if watermark > crate::watermark::MIN_WATERMARK {
                    let _ = writeln!(watermarks, "weir_watermark_ms{{{node}}} {watermark}");
                }
                let _ = writeln!(state, "weir_state_bytes{{{node}}} {}", n.state_bytes);
                let _ = writeln!(timers, "weir_timers_pending{{{node}}} {}", n.timers);
                let _ = writeln!(calls, "weir_operator_calls_total{{{node}}} {}", n.calls);
                let _ = writeln!(call_time, "weir_operator_call_seconds_total{{{node}}} {}", n.call_time.as_secs_f64());
            }
        }
    }
    let body = up + &checkpoints + &last + &size + &records_in + &records_out + &dead_letters + &watermarks + &state + &timers + &calls + &call_time
        + &backpressured + &ratio + &pending + &failures;
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn trigger_savepoint(State(server): State<Server>, UrlPath(jid): UrlPath<String>) -> Response {
    match server.savepoint(&jid, false) {
        Ok(request) => (StatusCode::ACCEPTED, Json(json!({ "request-id": request }))).into_response(),
        Err(response) => response,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpgradeBody {
    /// The operator to upgrade.
    operator: String,
    /// The uploaded bundle whose job holds the new component for that operator.
    bundle: String,
    /// How long the upgrade stays on probation, in ms; 60 000 when absent, 0 for none.
    #[serde(default)]
    probation_ms: Option<u64>,
    /// A canary upgrade: the share of the operator's subtasks (0 to 1) that go first.
    #[serde(default)]
    canary: Option<f64>,
}

/// Swaps an operator's component live, for the one an uploaded (so verified) bundle has
/// for it: compiled and checked first, then installed at an in-place savepoint. `202`
/// with a `request-id` to poll, as for savepoints.
async fn upgrade(State(server): State<Server>, UrlPath(jid): UrlPath<String>, Json(body): Json<UpgradeBody>) -> Response {
    let runtime = match server.jobs.lock().unwrap_or_else(|e| e.into_inner()).get(&jid) {
        Some(job) => job.runtime.clone(),
        None => return error(StatusCode::NOT_FOUND, format!("no job `{jid}`")),
    };
    let path = match server.bundled_component(&body.bundle, &body.operator) {
        Ok(path) => path,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let plugin = match tokio::task::spawn_blocking(move || runtime.load(&path)).await {
        Ok(Ok(plugin)) => Arc::new(plugin),
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let operator = body.operator;
    let probation = body.probation_ms.map_or(crate::checkpoint::coordinator::DEFAULT_PROBATION, std::time::Duration::from_millis);
    match server.operation(&jid, |id, dir, reply| Request::Upgrade {
        operator: operator.clone(),
        component: plugin,
        dir: dir.join("savepoints").join(format!("upgrade-{operator}-{id}")),
        probation,
        canary: body.canary,
        by: Some("weir serve".to_string()),
        reply,
    }) {
        Ok(request) => (StatusCode::ACCEPTED, Json(json!({ "request-id": request }))).into_response(),
        Err(response) => response,
    }
}

async fn savepoint_status(State(server): State<Server>, UrlPath((_, request)): UrlPath<(String, String)>) -> Response {
    let operations = server.operations.lock().unwrap_or_else(|e| e.into_inner());
    match operations.get(&request) {
        Some(Operation::InProgress) => Json(json!({ "status": { "id": "IN_PROGRESS" } })).into_response(),
        Some(Operation::Completed { location, failure }) => {
            let operation = match (location, failure) {
                (Some(location), _) => json!({ "location": location }),
                (None, failure) => json!({ "failure-cause": failure }),
            };
            Json(json!({ "status": { "id": "COMPLETED" }, "operation": operation })).into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("no savepoint request `{request}`")),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StopBody {
    #[serde(default)]
    savepoint: bool,
}

async fn stop_job(State(server): State<Server>, UrlPath(jid): UrlPath<String>, body: Option<Json<StopBody>>) -> Response {
    if body.is_some_and(|b| b.savepoint) {
        return match server.savepoint(&jid, true) {
            Ok(request) => (StatusCode::ACCEPTED, Json(json!({ "request-id": request }))).into_response(),
            Err(response) => response,
        };
    }
    let jobs = server.jobs.lock().unwrap_or_else(|e| e.into_inner());
    match jobs.get(&jid) {
        Some(job) => {
            job.control.stop();
            (StatusCode::ACCEPTED, Json(json!({}))).into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("no job `{jid}`")),
    }
}

/// A running server.
pub struct RunningServer {
    served: crate::api::served::Served,
    state: Server,
    pub address: SocketAddr,
    /// Where the token is.
    pub token_file: PathBuf,
    tls: bool,
}

impl RunningServer {
    /// Claims the data directory, creates the token on first start, loads the bundles
    /// uploaded before, and serves.
    pub fn start(config: &ServerConfig) -> anyhow::Result<RunningServer> {
        if !config.listen.ip().is_loopback() && config.tls.is_none() {
            if !config.insecure {
                anyhow::bail!(
                    "{} is not a loopback address: serve it with TLS (--tls-cert and --tls-key), or without with --insecure \
                     (then anyone on the network can read the token)",
                    config.listen
                );
            }
            tracing::warn!(listen = %config.listen, "serving without TLS on a non-loopback address (--insecure)");
        }
        let acceptor = config.tls.as_ref().map(|files| files.acceptor()).transpose()?;
        OWNED.claim(&config.data_dir)?;
        for sub in ["bundles", "jobs"] {
            std::fs::create_dir_all(config.data_dir.join(sub))?;
        }
        let token_file = config.data_dir.join(TOKEN_FILE);
        let token = match std::fs::read_to_string(&token_file) {
            Ok(token) => token.trim().to_string(),
            Err(_) => {
                let token = access::random_hex(32)?;
                access::write_token(&token_file, &token)?;
                token
            }
        };
        let mut bundles = BTreeMap::new();
        for entry in std::fs::read_dir(config.data_dir.join("bundles"))?.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if id.starts_with('.') {
                let _ = std::fs::remove_dir_all(entry.path());
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(entry.path().join(bundle::MANIFEST)) {
                if let Ok(manifest) = toml::from_str::<bundle::Manifest>(&text) {
                    bundles.insert(id.clone(), BundleRecord { id, name: manifest.name, version: manifest.version });
                }
            }
        }
        let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let listener = tokio.block_on(tokio::net::TcpListener::bind(config.listen))?;
        let address = listener.local_addr()?;
        let state = Server {
            dir: config.data_dir.clone(),
            access: Access::new(&token, address),
            runtime: Arc::new(Runtime::new()?),
            maximums: HostMaximums::default(),
            bundles: Arc::new(Mutex::new(bundles)),
            jobs: Arc::default(),
            operations: Arc::default(),
        };
        state.resume();
        let app = axum::Router::new()
            .route("/bundles", post(upload).get(list_bundles))
            .route("/bundles/{id}/run", post(run_bundle))
            .route("/jobs", get(list_jobs))
            .route("/jobs/{id}", get(job_details))
            .route("/jobs/{id}/savepoints", post(trigger_savepoint))
            .route("/jobs/{id}/savepoints/{request}", get(savepoint_status))
            .route("/jobs/{id}/upgrade", post(upgrade))
            .route("/metrics", get(prometheus))
            .route("/", get(|| async { axum::response::Html(DASHBOARD) }))
            .route("/openapi.json", get(|| async { ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI) }))
            .route("/jobs/{id}/checkpoints", get(checkpoints))
            .route("/jobs/{id}/history", get(history))
            .route("/jobs/{id}/upgrades/{request}", get(savepoint_status))
            .route("/jobs/{id}/stop", post(stop_job))
            .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
            .layer(axum::extract::DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
            .with_state(state.clone());
        let served = match acceptor {
            Some(acceptor) => {
                let listener = {
                    let _entered = tokio.enter();
                    crate::api::tls::TlsListener::new(listener, acceptor)?
                };
                crate::api::served::Served::spawn(tokio, listener, app, "the server", config.connections)
            }
            None => crate::api::served::Served::spawn(tokio, listener, app, "the server", config.connections),
        };
        let server = RunningServer { served, state, address, token_file, tls: config.tls.is_some() };
        tracing::info!(url = %server.url(), token = %server.token_file.display(), "weir serve listening");
        Ok(server)
    }

    /// The server's base address: `https://…` with TLS, else `http://…`.
    pub fn url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.address)
    }

    /// Stops every job (each takes no savepoint) and the server.
    pub fn stop(mut self) {
        for job in self.state.jobs.lock().unwrap_or_else(|e| e.into_inner()).values() {
            job.control.stop();
        }
        self.served.shut_down();
    }
}

