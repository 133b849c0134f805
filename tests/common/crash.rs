//! Crash tests: run a job as a `weir run` process, kill it with SIGKILL at chosen
//! moments, and restart it until it finishes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use weir::checkpoint::CheckpointSettings;
use weir::job::spec::{BackendKind, SinkSpec, SourceSpec};

use super::{example, guests, root, with_parallelism};

pub fn weir_run(job: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command
        .args(["run"])
        .arg(job)
        .args(["--plugin-dir", guests::GUEST_DIR])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// The id of the newest completed checkpoint under the job's directory.
pub fn newest_checkpoint(job: &Path) -> u64 {
    newest_checkpoint_in(&job.parent().unwrap().join("checkpoints"))
}

/// The id of the newest completed checkpoint in the checkpoint directory `dir`.
pub fn newest_checkpoint_in(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("_metadata").exists())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// Runs the job to completion, killing it with SIGKILL in each run of `kills`: once
/// the run has completed a checkpoint of its own (so every run makes progress,
/// however slow the machine), plus the given number of ms. Returns how many runs
/// resumed from a checkpoint.
pub fn run_with_kills(job: &Path, kills: &[u64]) -> usize {
    run_with_kills_logged(job, kills).0
}

/// As [`run_with_kills`], also returning what every run logged.
pub fn run_with_kills_logged(job: &Path, kills: &[u64]) -> (usize, String) {
    let resumed = |stderr: &[u8]| String::from_utf8_lossy(stderr).contains("restoring from checkpoint");
    let mut resumes = 0;
    let mut logs = String::new();
    for &after in kills {
        let before = newest_checkpoint(job);
        let mut child = weir_run(job).arg("--log=weir=info").spawn().unwrap();
        for _ in 0..1000 {
            if newest_checkpoint(job) > before || child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(after));
        let _ = child.kill(); // SIGKILL
        let output = child.wait_with_output().unwrap();
        resumes += resumed(&output.stderr) as usize;
        logs.push_str(&String::from_utf8_lossy(&output.stderr));
    }
    // The restart after the last crash must succeed at once: a restore that fails once
    // and works the next time is a failure of recovery.
    let output = weir_run(job).arg("--log=weir=info").output().unwrap();
    resumes += resumed(&output.stderr) as usize;
    logs.push_str(&String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the restart after the last crash failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    (resumes, logs)
}

/// Runs `job` with `env` once per entry of `kills`, killing it with SIGKILL once the
/// run has completed a checkpoint of its own plus that many ms; `after_kill(run)` then
/// looks at what the kill left. The caller runs the last, uninterrupted run.
pub fn kill_with_env(job: &Path, kills: &[u64], env: &[(&str, &str)], mut after_kill: impl FnMut(usize)) {
    for (run, &after) in kills.iter().enumerate() {
        let before = newest_checkpoint(job);
        let mut child = weir_run(job).envs(env.iter().copied()).spawn().unwrap();
        while newest_checkpoint(job) == before && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(after));
        let _ = child.kill();
        child.wait().unwrap();
        after_kill(run);
    }
}

/// Deterministic pseudo-random kill delays in ms (after a run's first checkpoint),
/// from a fixed seed.
pub fn kill_moments(seed: u64, count: usize) -> Vec<u64> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..count)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) % 300
        })
        .collect()
}


/// A copy of an example job set up for crash tests: inputs read at `rate` lines per
/// second, a checkpoint every 50 ms, state in `backend`, every sink a file in `dir`.
pub fn crash_job(name: &str, dir: &Path, backend: BackendKind, parallelism: u32, rate: f64) -> PathBuf {
    let mut spec = with_parallelism(example(name, dir), parallelism);
    let example_dir = root().join("examples").join(name);
    for source in &mut spec.sources {
        if let SourceSpec::File { path, rate: r, .. } = source {
            *path = example_dir.join(&*path).canonicalize().unwrap();
            *r = Some(rate);
        }
    }
    for sink in &mut spec.sinks {
        if let SinkSpec::Stdout { uid, format } = sink {
            *sink = SinkSpec::File { uid: uid.clone(), path: dir.join(format!("{uid}.jsonl")), format: *format };
        }
    }
    spec.state.backend = backend;
    spec.state.dir = Some(dir.join("state"));
    spec.checkpoint = Some(CheckpointSettings {
        dir: Some(dir.join("checkpoints")),
        interval_ms: 50,
        timeout_ms: 10_000,
        min_pause_ms: 0,
        retained: 2,
        tolerable_failures: 3,
        ..Default::default()
    });
    let path = dir.join("job.toml");
    std::fs::write(&path, toml::to_string(&spec).unwrap()).unwrap();
    path
}

