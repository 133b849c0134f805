//! # Control API
//!
//! A small HTTP API on loopback through which a second process controls a running job:
//! take a savepoint, stop with a savepoint, upgrade an operator's component. The
//! `weir savepoint`, `weir stop` and `weir upgrade` verbs are its clients; the REST
//! deployment API will grow from the same routes.
//!
//! | route | body | does |
//! | --- | --- | --- |
//! | `GET /job` | | the job's name |
//! | `POST /savepoint` | `{"dir": "..."}` (optional) | takes a savepoint, answers its directory |
//! | `POST /stop` | `{"savepoint": "..."}` (optional) | stops the job, after a savepoint if given |
//! | `POST /upgrade` | `{"operator": "uid", "component": "path", "probation_ms": 60000, "canary": 0.1}` | swaps the operator's component live |
//! | `GET /history` | | the job's live upgrades and their outcomes |
//!
//! Every request must carry the job's token (`Authorization: Bearer <token>`), which
//! the job writes at start to `<work dir>/control.token`, readable by its owner only; the
//! `Host` header must name the loopback address the API listens on, and requests from
//! web pages (with an `Origin` header) are refused. So another local user, or a page in
//! a browser (DNS rebinding, a cross-site form), cannot stop, savepoint or upgrade the job.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};

pub mod access;
pub mod served;
pub mod tls;

use access::Access;

use crate::checkpoint::Request;
use crate::plugin::Runtime;
use crate::task::JobControl;

/// The name of the file, in the job's work directory, that holds the API's address.
pub const ADDRESS_FILE: &str = "control.addr";
/// The name of the file, in the job's work directory, that holds the API's token.
pub const TOKEN_FILE: &str = "control.token";
/// The largest request body the API reads.
const MAX_BODY_BYTES: usize = 64 << 10;

#[derive(Clone)]
struct Api {
    job: String,
    access: Access,
    requests: Sender<Request>,
    runtime: Arc<Runtime>,
    control: Arc<JobControl>,
    upgrades: Arc<crate::job::upgrades::Upgrades>,
    /// Default place for savepoints: `<work dir>/savepoints`.
    savepoints: PathBuf,
    /// Where relative paths in requests resolve (the job file's directory).
    base: PathBuf,
}

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct SavepointBody {
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct StopBody {
    pub savepoint: Option<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UpgradeBody {
    pub operator: String,
    /// The new component (empty with `to_previous`).
    #[serde(default)]
    pub component: PathBuf,
    /// Go back to the component the operator ran before its last upgrade that stayed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub to_previous: bool,
    /// How long the upgrade stays on probation, in ms (see `docs/upgrades.md`); 60 000
    /// when absent, 0 for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probation_ms: Option<u64>,
    /// A canary upgrade: the share of the operator's subtasks (0 to 1) that run the new
    /// component through the probation before the others follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<f64>,
}

/// An answer of the API: `{"path": ...}` or `{"error": ...}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// How long the savepoint (or upgrade) took from barrier to completion, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

type Reply = (StatusCode, Json<Answer>);

fn ok(path: Option<PathBuf>, duration: Option<std::time::Duration>) -> Reply {
    let duration_ms = duration.map(|d| d.as_secs_f64() * 1e3);
    (StatusCode::OK, Json(Answer { path, duration_ms, error: None }))
}

fn failed(status: StatusCode, error: String) -> Reply {
    (status, Json(Answer { path: None, duration_ms: None, error: Some(error) }))
}

impl Api {
    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { self.base.join(path) }
    }

    fn default_savepoint(&self) -> PathBuf {
        self.savepoints.join(format!("savepoint-{}", crate::clock::now_ms()))
    }

    async fn ask(&self, make: impl FnOnce(crate::checkpoint::coordinator::Reply) -> Request) -> Reply {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.requests.send(make(tx)).is_err() {
            return failed(StatusCode::CONFLICT, "the job is not running".into());
        }
        match rx.await {
            Ok(Ok((path, duration))) => ok(Some(path), Some(duration)),
            Ok(Err(e)) => failed(StatusCode::CONFLICT, e),
            Err(_) => failed(StatusCode::CONFLICT, "the job stopped before answering".into()),
        }
    }
}

/// Refuses requests without the token, for another host name, or from a web page.
async fn guard(
    State(api): State<Api>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match api.access.check(request.headers(), &format!("{TOKEN_FILE} in the job's work directory")) {
        Ok(()) => next.run(request).await,
        Err((status, message)) => failed(status, message).into_response(),
    }
}

async fn job(State(api): State<Api>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "job": api.job }))
}

async fn savepoint(State(api): State<Api>, body: Option<Json<SavepointBody>>) -> Reply {
    let dir = body.and_then(|b| b.0.dir).map_or_else(|| api.default_savepoint(), |d| api.resolve(&d));
    api.ask(|reply| Request::Savepoint { dir, stop: false, reply }).await
}

async fn stop(State(api): State<Api>, body: Option<Json<StopBody>>) -> Reply {
    match body.and_then(|b| b.0.savepoint) {
        Some(dir) => {
            let dir = api.resolve(&dir);
            api.ask(|reply| Request::Savepoint { dir, stop: true, reply }).await
        }
        None => {
            api.control.stop();
            ok(None, None)
        }
    }
}

async fn history(State(api): State<Api>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "upgrades": api.upgrades.history() }))
}

async fn upgrade(State(api): State<Api>, Json(body): Json<UpgradeBody>) -> Reply {
    let previous = body.to_previous.then(|| api.upgrades.previous(&body.operator));
    let digest = previous.as_ref().and_then(|p| p.as_ref().map(|c| c.digest.clone()));
    let path = match previous {
        None => api.resolve(&body.component),
        Some(Some(previous)) => previous.path,
        Some(None) => {
            let message = format!("the history has no upgrade of `{}` to go back from", body.operator);
            return failed(StatusCode::BAD_REQUEST, message);
        }
    };
    // Compile and check the new component before touching the job: a component that
    // does not load or validate is refused and the old one keeps running.
    let runtime = api.runtime.clone();
    let loaded = tokio::task::spawn_blocking(move || runtime.load(&path)).await;
    let plugin = match loaded {
        Ok(Ok(plugin)) => Arc::new(plugin),
        Ok(Err(e)) => return failed(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => return failed(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if let Some(digest) = digest.filter(|d| d != plugin.digest()) {
        let message = format!("the previous component {} has changed since it ran (its digest was {digest})", plugin.path().display());
        return failed(StatusCode::BAD_REQUEST, message);
    }
    let dir = api.savepoints.join(format!("upgrade-{}-{}", body.operator, crate::clock::now_ms()));
    let operator = body.operator;
    let probation = body.probation_ms.map_or(crate::checkpoint::coordinator::DEFAULT_PROBATION, std::time::Duration::from_millis);
    let by = Some("control API".to_string());
    let canary = body.canary;
    api.ask(|reply| Request::Upgrade { operator, component: plugin, dir, probation, canary, by, reply }).await
}

/// A running control API.
pub struct ControlServer {
    served: served::Served,
    address_file: PathBuf,
    token_file: PathBuf,
    pub address: SocketAddr,
}

impl ControlServer {
    /// Serves the API on `bind` (port 0 picks a free port) and writes the address to
    /// `<work_dir>/control.addr` for the CLI to find. The caller holds the job's lock.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        bind: SocketAddr,
        job_name: &str,
        work_dir: &Path,
        base: &Path,
        requests: Sender<Request>,
        runtime: Arc<Runtime>,
        control: Arc<JobControl>,
        upgrades: Arc<crate::job::upgrades::Upgrades>,
    ) -> std::io::Result<Self> {
        let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let listener = tokio.block_on(tokio::net::TcpListener::bind(bind))?;
        let address = listener.local_addr()?;
        if !address.ip().is_loopback() {
            return Err(std::io::Error::other(format!(
                "the control API listens on loopback only ({address} is not); the deployment server will serve other addresses with TLS"
            )));
        }
        let token = access::random_hex(32)?;
        let api = Api {
            job: job_name.into(),
            access: Access::new(&token, address),
            requests,
            runtime,
            control,
            upgrades,
            savepoints: work_dir.join("savepoints"),
            base: base.into(),
        };
        let app = axum::Router::new()
            .route("/job", get(job))
            .route("/savepoint", post(savepoint))
            .route("/stop", post(stop))
            .route("/upgrade", post(upgrade))
            .route("/history", get(history))
            .layer(axum::middleware::from_fn_with_state(api.clone(), guard))
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(api);
        let served = served::Served::spawn(tokio, listener, app, "control API", served::ConnectionLimits::default());
        std::fs::create_dir_all(work_dir)?;
        let address_file = work_dir.join(ADDRESS_FILE);
        // The caller holds the job's lock (`job::lock`): a file left here belongs to a
        // run that has ended, and is replaced.
        let token_file = work_dir.join(TOKEN_FILE);
        access::write_token(&token_file, &token)?;
        std::fs::write(&address_file, format!("{address}\n{}\n", std::process::id()))?;
        tracing::info!(%address, "control API listening");
        Ok(ControlServer { served, address_file, token_file, address })
    }
}

impl Drop for ControlServer {
    /// Stops taking requests, lets answers in flight (the reply to `weir stop`) go out,
    /// then shuts down.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.address_file);
        let _ = std::fs::remove_file(&self.token_file);
        self.served.shut_down();
    }
}

/// What `control.addr` holds: the control API's address and the job's process id.
struct ControlAddress {
    address: String,
    /// Absent in files written before weir recorded it.
    pid: Option<u32>,
}

impl ControlAddress {
    fn read(path: &Path) -> Option<ControlAddress> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut lines = text.lines();
        let address = lines.next()?.trim().to_string();
        let pid = lines.next().and_then(|p| p.trim().parse().ok());
        Some(ControlAddress { address, pid })
    }
}

/// The client side, for the CLI: sends a request to the job whose work directory is
/// `work_dir` and returns its answer (an error answer becomes `Err`).
pub fn call(work_dir: &Path, route: &str, body: &impl Serialize) -> Result<Answer, String> {
    let address_file = work_dir.join(ADDRESS_FILE);
    let address = ControlAddress::read(&address_file).ok_or_else(|| {
        format!("no running job found ({} is missing; is the job running on this machine?)", address_file.display())
    })?;
    if !crate::job::lock::JobLock::is_held(work_dir) {
        // Left by a job that was killed (SIGKILL skips the clean-up): not a job.
        let _ = std::fs::remove_file(&address_file);
        return Err(format!(
            "no running job found: {} was left by process {}, which has exited (removed it)",
            address_file.display(),
            address.pid.unwrap_or_default()
        ));
    }
    let token = std::fs::read_to_string(work_dir.join(TOKEN_FILE)).map_err(|e| {
        format!("cannot read the job's token ({}): {e}; run this as the user who runs the job", work_dir.join(TOKEN_FILE).display())
    })?;
    let url = format!("http://{}{route}", address.address);
    let response = ureq::post(&url)
        .header("Authorization", &format!("Bearer {}", token.trim()))
        .config()
        .http_status_as_error(false)
        .build()
        .send_json(body)
        .map_err(|e| format!("cannot reach the job at {url}: {e}"))?;
    let status = response.status();
    let answer: Answer = response
        .into_body()
        .read_json()
        .map_err(|e| format!("bad answer from {url} ({status}): {e}"))?;
    match answer.error {
        Some(error) => Err(error),
        None => Ok(answer),
    }
}
