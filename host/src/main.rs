//! The `weir` command line.

/// mimalloc instead of the system allocator: events are allocated by one task and freed
/// by another, which glibc's allocator serves slowly (a fifth of the operator thread's
/// time in the keyed-count benchmark went to `malloc`/`free`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use weir::api::{self, StopBody, UpgradeBody};
use weir::savepoint::Savepoint;
use weir::{Job, JobError, JobOptions, JobSpec};

/// weir: a stream processor whose operators are WebAssembly components.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log filter (tracing's env-filter syntax); RUST_LOG also works.
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job until its inputs end (or Ctrl-C, or `weir stop`), then print a summary
    /// of records in and out, late records and duration per source, operator and sink.
    /// A job with checkpoints resumes from its latest completed checkpoint. While it
    /// runs, `weir savepoint`, `weir stop` and `weir upgrade` reach it through a control
    /// API on loopback.
    Run {
        /// The job file (TOML).
        job: PathBuf,
        /// Directories searched for components named by a bare file name
        /// (after the job file's own directory). Also WEIR_PLUGIN_PATH, `:`-separated.
        #[arg(long = "plugin-dir", env = "WEIR_PLUGIN_PATH", value_delimiter = ':')]
        plugin_dirs: Vec<PathBuf>,
        /// Ignore the job's checkpoints and start from the beginning of its inputs.
        #[arg(long)]
        fresh: bool,
        /// Start from a savepoint (state, timers, source positions), at any parallelism:
        /// a directory, or an object store URL (a cluster's savepoint). A cluster member
        /// starts the tasks that have no checkpoints yet from it.
        #[arg(long, value_name = "DIR|URL")]
        from_savepoint: Option<PathBuf>,
        /// With --from-savepoint: drop saved state of operators the job no longer has.
        #[arg(long, requires = "from_savepoint")]
        allow_non_restored_state: bool,
        /// Address of the control API.
        #[arg(long, default_value = "127.0.0.1:0")]
        control: SocketAddr,
        /// Run as one member of the job's cluster: the members share the work by the
        /// Kafka input's partitions (docs/cluster.md). Implied by a [cluster] table.
        #[arg(long, conflicts_with_all = ["fresh", "from_savepoint"])]
        cluster: bool,
    },
    /// Check a job file and its components without running anything: the job's wiring,
    /// and that every component implements the weir:operator world.
    Check {
        /// The job file (TOML).
        job: PathBuf,
        /// As for `run`.
        #[arg(long = "plugin-dir", env = "WEIR_PLUGIN_PATH", value_delimiter = ':')]
        plugin_dirs: Vec<PathBuf>,
        /// Also check that the job file's components can take over the state in this
        /// savepoint (a running job's: `weir savepoint job.toml` first): states added,
        /// removed or changed in kind, the state version, and `migrate` on a sample.
        #[arg(long, value_name = "SAVEPOINT")]
        upgrade_from: Option<PathBuf>,
    },
    /// Build a component from a Python (.py), JavaScript (.js) or C (.c) operator or
    /// window function, or a Rust guest crate (a directory), with that language's SDK.
    Build {
        /// The source: a .py, .js or .c file, a Rust crate's directory or a directory of .c files.
        source: PathBuf,
        /// Where to write the component (default: the source with .wasm; for Rust, the
        /// crate's target directory).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Run the deployment server: many jobs in one host, deployed as bundles over a REST
    /// API (docs/server.md). Requests need the token it writes to DATA_DIR/token.
    Serve {
        /// The server's own directory: bundles, jobs, checkpoints, savepoints, the token
        /// (default: ~/.local/share/weir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: std::net::SocketAddr,
        /// Serve a non-loopback address without TLS.
        #[arg(long)]
        insecure: bool,
        /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key (PEM) of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Connections served at once; more wait to be accepted.
        #[arg(long, default_value_t = 256)]
        max_connections: usize,
        /// Longest wait for a request's headers, or for the next request on an idle
        /// connection, in ms.
        #[arg(long, default_value_t = 10_000)]
        header_timeout_ms: u64,
    },
    /// Upload a bundle to a running `weir serve` (and with --run, run its job).
    Deploy {
        bundle: PathBuf,
        /// Run the bundle's job once uploaded; prints its job id.
        #[arg(long)]
        run: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List the jobs of a running `weir serve`, or act on one: `weir jobs savepoint JID`,
    /// `weir jobs stop JID [--savepoint]`, `weir jobs upgrade JID --operator UID --bundle ID`.
    Jobs {
        #[command(subcommand)]
        action: Option<JobsAction>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Pack a job and its components into one bundle file, check one, or show one.
    #[command(subcommand)]
    Bundle(BundleAction),
    /// The job's live upgrades, oldest first: operator, components, when, who, pause,
    /// and outcome (on probation, done, or rolled back and why).
    History {
        /// The job's file.
        job: PathBuf,
    },
    /// Take a savepoint of a running job (`weir savepoint job.toml`), or look into one
    /// (`weir savepoint inspect DIR`, `weir savepoint export DIR --operator UID`).
    Savepoint(SavepointArgs),
    /// Stop a running job; with --savepoint, after a savepoint: sinks commit up to it and
    /// nothing after it is emitted, so a restore neither loses nor duplicates output.
    Stop {
        /// The running job's file.
        job: PathBuf,
        /// Where to write the savepoint.
        #[arg(long, value_name = "DIR")]
        savepoint: Option<PathBuf>,
    },
    /// Replace an operator's component in a running job, keeping its state: an in-place
    /// savepoint, a pause of the sources, the swap, the state migration, and on again.
    /// A component that fails to load, validate or migrate is refused and the old one
    /// keeps running.
    Upgrade {
        /// The running job's file.
        job: PathBuf,
        /// The uid of the operator to upgrade.
        #[arg(long)]
        operator: String,
        /// The new component.
        #[arg(long, required_unless_present = "to_previous")]
        component: Option<PathBuf>,
        /// Go back to the component the operator ran before its last upgrade (a live
        /// upgrade to it: state written since must be readable by it, or it needs its
        /// own migrate).
        #[arg(long, conflicts_with = "component")]
        to_previous: bool,
        /// How long the new component stays on probation (`90s`, `2m`, `0` for none):
        /// a failure meanwhile rolls the job back to the old component and its state,
        /// and exactly-once sinks publish the probation's output only once it passes.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
        probation: std::time::Duration,
        /// Upgrade this share of the operator's subtasks first (`10%`); the others follow
        /// once the probation passed, and a failure meanwhile rolls every one back.
        #[arg(long, value_name = "PERCENT", value_parser = parse_share)]
        canary: Option<f64>,
    },
}

/// `10%` (or `0.1`) as a share between 0 and 1.
fn parse_share(text: &str) -> Result<f64, String> {
    let share = match text.trim().strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => text.trim().parse::<f64>(),
    }
    .map_err(|_| format!("`{text}` is not a share (like 10% or 0.1)"))?;
    if share > 0.0 && share < 1.0 {
        Ok(share)
    } else {
        Err(format!("a canary is more than 0% and less than 100% of the subtasks, not `{text}`"))
    }
}

/// `250ms`, `90s`, `2m`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len()));
    let n: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration (like 250ms, 90s or 2m)"))?;
    let seconds = match unit {
        "ms" => n / 1e3,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown unit `{other}` in `{text}` (ms, s, m or h)")),
    };
    Ok(std::time::Duration::from_secs_f64(seconds))
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct SavepointArgs {
    #[command(subcommand)]
    action: Option<SavepointAction>,
    /// The running job's file.
    job: Option<PathBuf>,
    /// Where to write the savepoint (default: `.weir/<job>/savepoints/savepoint-<ms>`).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum JobsAction {
    /// Take a savepoint of a job; prints its location once complete.
    Savepoint { jid: String },
    /// Stop a job; with --savepoint, after a savepoint (prints its location).
    Stop {
        jid: String,
        #[arg(long)]
        savepoint: bool,
    },
    /// A job's live upgrades and their outcomes.
    History { jid: String },
    /// Swap an operator live for its component in another uploaded bundle.
    Upgrade {
        jid: String,
        #[arg(long)]
        operator: String,
        /// The uploaded bundle's id (from `weir deploy`).
        #[arg(long)]
        bundle: String,
        /// How long the new component stays on probation (`90s`, `2m`, `0` for none).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
        probation: std::time::Duration,
        /// Upgrade this share of the operator's subtasks first (`10%`).
        #[arg(long, value_name = "PERCENT", value_parser = parse_share)]
        canary: Option<f64>,
    },
}

/// Where the deployment server is and how to prove who we are.
#[derive(Args)]
struct ServerArgs {
    /// The server's address.
    #[arg(long, default_value = "http://127.0.0.1:8081", global = true)]
    server: String,
    /// The server's data directory, whose `token` file authenticates us (default:
    /// ~/.local/share/weir); `WEIR_TOKEN` overrides it.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// For an https:// server: the certificate (PEM) to trust, such as its self-signed one.
    #[arg(long, env = "WEIR_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
}

impl ServerArgs {
    fn token(&self) -> Result<String, String> {
        if let Ok(token) = std::env::var("WEIR_TOKEN") {
            return Ok(token);
        }
        let dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
        let path = dir.join(weir::server::TOKEN_FILE);
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_string())
            .map_err(|e| format!("cannot read the server's token ({}): {e}; set WEIR_TOKEN or --data-dir", path.display()))
    }

    /// An HTTP client that trusts `--ca-cert` when given (else Mozilla's roots).
    fn agent(&self) -> Result<ureq::Agent, String> {
        use ureq::tls::{PemItem, RootCerts, TlsConfig};
        let mut config = ureq::Agent::config_builder().http_status_as_error(false);
        if let Some(path) = &self.ca_cert {
            let error = |e: &dyn std::fmt::Display| format!("cannot read the certificate to trust ({}): {e}", path.display());
            let pem = std::fs::read(path).map_err(|e| error(&e))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(cert)) => Some(Ok(cert)),
                    Ok(_) => None,
                    Err(e) => Some(Err(error(&e))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if certs.is_empty() {
                return Err(error(&"it holds no certificate"));
            }
            config = config.tls_config(TlsConfig::builder().root_certs(RootCerts::new_with_certs(&certs)).build());
        }
        Ok(config.build().into())
    }

    /// Sends a request; the answer's JSON, or its error.
    fn call(&self, route: &str, body: Option<Vec<u8>>) -> Result<serde_json::Value, String> {
        let url = format!("{}{route}", self.server.trim_end_matches('/'));
        let auth = format!("Bearer {}", self.token()?);
        let agent = self.agent()?;
        let response = match body {
            Some(body) => {
                let kind = if body.first() == Some(&b'{') { "application/json" } else { "application/octet-stream" };
                agent.post(&url).header("Authorization", &auth).header("Content-Type", kind).send(&body[..])
            }
            None => agent.get(&url).header("Authorization", &auth).call(),
        };
        let mut response = response.map_err(|e| format!("cannot reach the server at {url}: {e}"))?;
        let status = response.status();
        let answer: serde_json::Value = response
            .body_mut()
            .read_json()
            .map_err(|e| format!("bad answer from {url} ({status}): {e}"))?;
        if !status.is_success() {
            return Err(answer["errors"][0].as_str().map_or_else(|| answer.to_string(), str::to_string));
        }
        Ok(answer)
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/share/weir")
}

#[derive(Subcommand)]
enum BundleAction {
    /// Pack a job file (or a directory's job.toml) and the components it names, which
    /// must be in its directory, into a bundle.
    Pack {
        /// The job file, or a directory holding job.toml.
        job: PathBuf,
        /// The bundle's version.
        #[arg(long, default_value = "0.1.0")]
        version: String,
        /// Where to write it (default: `<name>-<version>.weir` in the current directory).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Check a bundle: safe paths and sizes, digests, every component implementing its
    /// world, the job naming exactly the bundled components, limits within this host's.
    Verify { bundle: PathBuf },
    /// Show a bundle's manifest (after the same checks as verify).
    Inspect { bundle: PathBuf },
}

#[derive(Subcommand)]
enum SavepointAction {
    /// Operators, states, entry counts, sizes and state versions of a savepoint.
    Inspect { dir: PathBuf },
    /// An operator's state as JSON lines on stdout, for offline checks.
    Export {
        dir: PathBuf,
        #[arg(long)]
        operator: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or(cli.log);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Run { job, plugin_dirs, fresh, from_savepoint, allow_non_restored_state, control, cluster } => {
            let options = JobOptions {
                plugin_dirs,
                fresh,
                from_savepoint,
                allow_non_restored_state,
                control: Some(control),
                lease: None,
            };
            run(job, options, cluster)
        }
        Command::Check { job, plugin_dirs, upgrade_from } => {
            match Job::load(&job, &JobOptions { plugin_dirs, ..Default::default() }) {
                Ok(job) => {
                    println!("job `{}` is valid", job.spec().name);
                    match upgrade_from {
                        Some(dir) => report(check_upgrade_from(&job, &dir)),
                        None => ExitCode::SUCCESS,
                    }
                }
                Err(error) => fail(&error),
            }
        }
        Command::Build { source, output } => match weir::toolchain::build(&source, output.as_deref()) {
            Ok(path) => {
                println!("{}", path.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { data_dir, listen, insecure, tls_cert, tls_key, max_connections, header_timeout_ms } => {
            let data_dir = data_dir.unwrap_or_else(default_data_dir);
            let tls = tls_cert.zip(tls_key).map(|(cert, key)| weir::api::tls::TlsFiles { cert, key });
            let connections = weir::api::served::ConnectionLimits {
                max_connections,
                header_timeout: std::time::Duration::from_millis(header_timeout_ms),
            };
            match serve(weir::server::ServerConfig { data_dir, listen, insecure, tls, connections }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Deploy { bundle, run, server } => report(deploy(&bundle, run, &server)),
        Command::Jobs { action: None, server } => report(server.call("/jobs", None).map(|answer| {
            for job in answer["jobs"].as_array().into_iter().flatten() {
                println!("{}  {}  {}", job["id"].as_str().unwrap_or("?"), job["status"].as_str().unwrap_or("?"), job["name"].as_str().unwrap_or("?"));
            }
        })),
        Command::Jobs { action: Some(JobsAction::History { jid }), server } => {
            report(server.call(&format!("/jobs/{jid}/history"), None).and_then(|answer| {
                let records: Vec<weir::job::upgrades::UpgradeRecord> =
                    serde_json::from_value(answer["upgrades"].clone()).map_err(|e| e.to_string())?;
                print_history(&records);
                Ok(())
            }))
        }
        Command::Jobs { action: Some(action), server } => report(job_action(action, &server)),
        Command::History { job } => report(JobSpec::load(&job).map_err(|e| e.to_string()).and_then(|spec| {
            let upgrades = weir::job::upgrades::Upgrades::open(&spec.work_dir())?;
            print_history(&upgrades.history());
            Ok(())
        })),
        Command::Bundle(action) => match bundle(action) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Savepoint(args) => savepoint(args),
        Command::Stop { job, savepoint } => {
            if let Some(spec) = cluster_job(&job) {
                let Some(url) = savepoint else {
                    eprintln!("error: stop each member of a cluster with Ctrl-C, or all of them with --savepoint URL");
                    return ExitCode::FAILURE;
                };
                return cluster_savepoint(&spec, Some(url), true);
            }
            let body = StopBody { savepoint: savepoint.map(|d| absolute(&d)) };
            client(&job, "/stop", &body)
        }
        Command::Upgrade { job, operator, component, to_previous, probation, canary } => {
            let probation_ms = Some(probation.as_millis() as u64);
            let component = component.map(|c| absolute(&c)).unwrap_or_default();
            let body = UpgradeBody { operator, component, to_previous, probation_ms, canary };
            client(&job, "/upgrade", &body)
        }
    }
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A savepoint, stop or upgrade of a server's job; long ones show their progress.
fn job_action(action: JobsAction, server: &ServerArgs) -> Result<(), String> {
    let (jid, route, body, what) = match action {
        JobsAction::Savepoint { jid } => (jid.clone(), format!("/jobs/{jid}/savepoints"), "{}".to_string(), "savepoint"),
        JobsAction::Stop { jid, savepoint } => {
            (jid.clone(), format!("/jobs/{jid}/stop"), format!(r#"{{"savepoint": {savepoint}}}"#), "stop with savepoint")
        }
        JobsAction::History { .. } => unreachable!("answered without a request to poll"),
        JobsAction::Upgrade { jid, operator, bundle, probation, canary } => (
            jid.clone(),
            format!("/jobs/{jid}/upgrade"),
            serde_json::json!({
                "operator": operator, "bundle": bundle, "probation_ms": probation.as_millis() as u64, "canary": canary
            })
            .to_string(),
            "upgrade",
        ),
    };
    let answer = server.call(&route, Some(body.into_bytes()))?;
    let Some(request) = answer["request-id"].as_str() else {
        eprintln!("job {jid}: stopping");
        return Ok(());
    };
    let progress = if what == "upgrade" { "upgrades" } else { "savepoints" };
    let started = std::time::Instant::now();
    loop {
        let status = server.call(&format!("/jobs/{jid}/{progress}/{request}"), None)?;
        if status["status"]["id"] == "COMPLETED" {
            return match status["operation"]["location"].as_str() {
                Some(location) => {
                    eprintln!("{what} complete in {:.1} s", started.elapsed().as_secs_f64());
                    println!("{location}");
                    Ok(())
                }
                None => Err(format!("{what} failed: {}", status["operation"]["failure-cause"].as_str().unwrap_or("?"))),
            };
        }
        eprintln!("{what} in progress ({:.1} s)", started.elapsed().as_secs_f64());
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// Uploads `bundle` (the server verifies it) and, with `run`, runs its job.
fn deploy(bundle: &Path, run: bool, server: &ServerArgs) -> Result<(), String> {
    let bytes = std::fs::read(bundle).map_err(|e| format!("{}: {e}", bundle.display()))?;
    let uploaded = server.call("/bundles", Some(bytes))?;
    let id = uploaded["id"].as_str().ok_or("the server answered no bundle id")?;
    eprintln!("uploaded `{}` {} as bundle {id}", uploaded["name"].as_str().unwrap_or("?"), uploaded["version"].as_str().unwrap_or("?"));
    if !run {
        println!("{id}");
        return Ok(());
    }
    let started = server.call(&format!("/bundles/{id}/run"), Some(b"{}".to_vec()))?;
    println!("{}", started["jobid"].as_str().ok_or("the server answered no job id")?);
    Ok(())
}

fn serve(config: weir::server::ServerConfig) -> anyhow::Result<()> {
    let server = weir::server::RunningServer::start(&config)?;
    eprintln!(
        "weir serve: listening on {}; requests need the token in {}",
        server.url(),
        server.token_file.display()
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(tokio::signal::ctrl_c())?;
    eprintln!("weir serve: stopping (Ctrl-C)");
    server.stop();
    Ok(())
}

fn bundle(action: BundleAction) -> Result<(), String> {
    use weir::bundle::{self, HostMaximums};
    let runtime = weir::plugin::Runtime::new().map_err(|e| format!("{e:#}"))?;
    let verified = |file: &Path| {
        let dir = tempfile_dir().map_err(|e| e.to_string())?;
        let result = bundle::verify(file, &dir, &runtime, &HostMaximums::default()).map_err(|e| e.to_string());
        let _ = std::fs::remove_dir_all(&dir);
        result
    };
    match action {
        BundleAction::Pack { job, version, output } => {
            let job = if job.is_dir() { job.join("job.toml") } else { job };
            let name = weir::job::spec::JobSpec::load(&job).map_err(|e| e.to_string())?.name;
            let output = output.unwrap_or_else(|| PathBuf::from(format!("{name}-{version}.weir")));
            let manifest = bundle::pack(&job, &version, &output, &runtime).map_err(|e| e.to_string())?;
            verified(&output)?;
            eprintln!("packed `{}` {} with {} component(s)", manifest.name, manifest.version, manifest.components.len());
            println!("{}", output.display());
        }
        BundleAction::Verify { bundle } => {
            let (manifest, _) = verified(&bundle)?;
            println!("{}: `{}` {} is valid", bundle.display(), manifest.name, manifest.version);
        }
        BundleAction::Inspect { bundle } => {
            let (manifest, spec) = verified(&bundle)?;
            println!("bundle `{}` version {}", manifest.name, manifest.version);
            println!("job {} ({} operator(s))", manifest.job, spec.operators.len());
            for c in &manifest.components {
                println!("component {}: {}, {} bytes, sha256 {}", c.path, c.world, c.bytes, c.sha256);
            }
            let l = manifest.limits;
            println!(
                "limits: memory_mib {}, call_timeout_ms {}, state_mib {}, key_state_mib {}, timers {}, timers_per_key {}",
                l.memory_mib, l.call_timeout_ms, l.state_mib, l.key_state_mib, l.timers, l.timers_per_key
            );
        }
    }
    Ok(())
}

/// A new empty directory under the system's temporary directory.
fn tempfile_dir() -> std::io::Result<PathBuf> {
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let dir = base.join(format!("weir-bundle-{}-{}-{attempt}", std::process::id(), weir::clock::now_ms()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("cannot create a temporary directory"))
}

fn savepoint(args: SavepointArgs) -> ExitCode {
    // A savepoint in an object store (a cluster's) is read from a download of it.
    let download = std::env::temp_dir().join(format!("weir-savepoint-{}", std::process::id()));
    let load = |dir: &Path| {
        let text = dir.to_string_lossy();
        match weir::store::is_url(&text) {
            true => Savepoint::fetch(&text, &Default::default(), &download),
            false => Savepoint::load(dir),
        }
        .map_err(|e| e.to_string())
    };
    let result = match (args.action, args.job) {
        (Some(SavepointAction::Inspect { dir }), _) => {
            load(&dir).and_then(|s| s.inspect(&mut std::io::stdout().lock()).map_err(|e| e.to_string()))
        }
        (Some(SavepointAction::Export { dir, operator }), _) => load(&dir)
            .and_then(|s| s.export(&operator, &mut std::io::stdout().lock()).map(|_| ()).map_err(|e| e.to_string())),
        (None, Some(job)) => {
            if let Some(spec) = cluster_job(&job) {
                return cluster_savepoint(&spec, args.dir, false);
            }
            let body = api::SavepointBody { dir: args.dir.map(|d| absolute(&d)) };
            return client(&job, "/savepoint", &body);
        }
        (None, None) => Err("name the running job's file, or use `inspect` or `export`".into()),
    };
    let _ = std::fs::remove_dir_all(&download);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The job of file `job` when it runs as a cluster (it has a `[cluster]` table).
fn cluster_job(job: &Path) -> Option<JobSpec> {
    JobSpec::load(job).ok().filter(|spec| spec.cluster.is_some())
}

/// Asks the members of a cluster job for a savepoint (docs/cluster.md) and prints its
/// URL once complete.
fn cluster_savepoint(spec: &JobSpec, url: Option<PathBuf>, stop: bool) -> ExitCode {
    let url = url.map(|u| u.to_string_lossy().into_owned());
    match weir::cluster::savepoint::take(spec, url, stop, std::time::Duration::from_secs(300)) {
        Ok(url) => {
            println!("{url}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Sends a control request to the running job of `job` and prints the answer.
fn client(job: &Path, route: &str, body: &impl serde::Serialize) -> ExitCode {
    let spec = match JobSpec::load(job) {
        Ok(spec) => spec,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    match api::call(&spec.work_dir(), route, body) {
        Ok(answer) => {
            if let Some(path) = answer.path {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: job `{}`: {error}", spec.name);
            ExitCode::FAILURE
        }
    }
}

/// Prints whether each operator's component can take over its state in the savepoint
/// at `dir`; an error when one cannot.
fn check_upgrade_from(job: &Job, dir: &Path) -> Result<(), String> {
    let savepoint = weir::savepoint::Savepoint::load(dir).map_err(|e| e.to_string())?;
    let verdicts = weir::job::upgrades::check_upgrade_from(job, &savepoint)?;
    let mut refused = Vec::new();
    for (operator, findings) in &verdicts {
        let verdict = if findings.iter().any(|f| f.refuses()) { "INCOMPATIBLE" } else { "compatible" };
        println!("operator `{operator}`: {verdict}");
        for finding in findings {
            println!("  {finding}");
        }
        if findings.iter().any(|f| f.refuses()) {
            refused.push(format!("`{operator}`"));
        }
    }
    if verdicts.is_empty() {
        println!("no operator of the job has state in {}", dir.display());
    }
    match refused.is_empty() {
        true => Ok(()),
        false => Err(format!("{} cannot take over the saved state (see above)", refused.join(", "))),
    }
}

/// One line per upgrade.
fn print_history(records: &[weir::job::upgrades::UpgradeRecord]) {
    use weir::job::upgrades::Outcome;
    if records.is_empty() {
        println!("no live upgrades");
    }
    for r in records {
        let when = weir::clock::format_utc(r.at_ms);
        let outcome = match &r.outcome {
            Outcome::Probation { until_ms } => format!("on probation until {}", weir::clock::format_utc(*until_ms)),
            Outcome::Done => "done".to_string(),
            Outcome::RolledBack { reason } => format!("rolled back: {reason}"),
        };
        let name = |p: &Path| p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned());
        let canary = r.canary.as_ref().map_or(String::new(), |c| {
            format!(", canary {} of {} subtasks{}", c.subtasks, c.of, if c.proceeded { " then all" } else { "" })
        });
        println!(
            "#{} {when} `{}` {} ({}) -> {} ({}) by {}, pause {:.0} ms{canary}: {outcome}",
            r.number,
            r.operator,
            name(&r.from.path),
            &r.from.digest[..r.from.digest.len().min(12)],
            name(&r.to.path),
            &r.to.digest[..r.to.digest.len().min(12)],
            r.by.as_deref().unwrap_or("?"),
            r.pause_ms,
        );
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn run(path: PathBuf, options: JobOptions, cluster: bool) -> ExitCode {
    let mut spec = match weir::JobSpec::load(&path) {
        Ok(spec) => spec,
        Err(error) => return fail(&error.into()),
    };
    if cluster || spec.cluster.is_some() {
        spec.cluster.get_or_insert_with(Default::default);
        return run_member(spec, options);
    }
    let job = match Job::new(spec, &options) {
        Ok(job) => job,
        Err(error) => return fail(&error),
    };
    let control = job.control();
    // Ctrl-C stops the sources; every task flushes what it has and the summary prints.
    on_ctrl_c(move || {
        eprintln!("weir: stopping (Ctrl-C)");
        control.stop();
    });
    let peak = || {
        if let Some(mib) = weir::metrics::peak_resident_mib(None) {
            eprintln!("  peak resident memory: {mib} MiB");
        }
    };
    match job.run() {
        Ok(summary) => {
            eprint!("{summary}");
            peak();
            if summary.cancelled { ExitCode::from(130) } else { ExitCode::SUCCESS }
        }
        Err(error) => {
            if let JobError::Failed { summary, .. } = &error {
                eprint!("{summary}");
                peak();
            }
            fail(&error)
        }
    }
}

/// Runs this process as a member of the job's cluster until Ctrl-C or a task failure.
fn run_member(spec: weir::JobSpec, options: JobOptions) -> ExitCode {
    if options.fresh {
        eprintln!(
            "error: a cluster member starts its tasks from their checkpoints in the store; --fresh does not apply \
             (give [checkpoint] dir a new prefix to start afresh)"
        );
        return ExitCode::FAILURE;
    }
    // Tasks have no control API of their own yet (several per process).
    let options = JobOptions { control: None, ..options };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    on_ctrl_c(move || {
        eprintln!("weir: leaving the cluster (Ctrl-C)");
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    match weir::cluster::run_member(spec, options, stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `then` on a thread of its own when the process gets Ctrl-C (SIGINT).
fn on_ctrl_c(then: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        if runtime.block_on(tokio::signal::ctrl_c()).is_ok() {
            then();
        }
    });
}

fn fail(error: &JobError) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::FAILURE
}
