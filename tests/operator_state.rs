//! Operator (non-keyed) state, as Flink's `CheckpointedFunction`: the buffering example
//! (`examples/buffering`, Flink's BufferingSink) across SIGKILLs, and its split and union
//! lists redistributed through savepoints at parallelism 2 → 3 → 1 as Flink does.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::crash::*;
use common::*;

/// The buffering example in `dir` at `parallelism`, flushing every `threshold`
/// elements, checkpointing into `dir/checkpoints`.
fn buffering_job(dir: &Path, parallelism: u32, threshold: u32) -> PathBuf {
    buffering_job_of(dir, parallelism, threshold, "buffering.wasm")
}

/// The same with the operator's `component`.
fn buffering_job_of(dir: &Path, parallelism: u32, threshold: u32, component: &str) -> PathBuf {
    let text = std::fs::read_to_string(root().join("examples/buffering/job.toml")).unwrap();
    let text = text.replace("component = \"buffering.wasm\"", &format!("component = {component:?}"));
    let text = text
        .replace("checkpoint = { interval_ms = 200 }", "checkpoint = { dir = \"checkpoints\", interval_ms = 100 }")
        .replace("parallelism = 2", &format!("parallelism = {parallelism}"))
        .replace("threshold = \"10\"", &format!("threshold = \"{threshold}\""));
    assert!(text.contains("dir = \"checkpoints\""));
    let path = dir.join("job.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// What one uninterrupted run writes.
fn uninterrupted() -> Vec<String> {
    uninterrupted_of("buffering.wasm")
}

/// What one uninterrupted run of the job with `component` writes (which also has its
/// compiled code cached for the runs after).
fn uninterrupted_of(component: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let output = weir_run(&buffering_job_of(dir.path(), 2, 10, component)).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines = sorted_lines(&dir.path().join("out/flushed.jsonl"));
    assert_eq!(lines.len(), 10_000);
    lines
}

#[test]
fn buffered_elements_survive_sigkill_exactly_once() {
    survives_sigkill("buffering.wasm");
}

#[test]
fn the_python_port_survives_sigkill_exactly_once() {
    // examples/python-buffering: get_operator_list_state and snapshot_state in Python.
    survives_sigkill(guests::PY_BUFFERING);
}

#[test]
fn the_javascript_port_survives_sigkill_exactly_once() {
    // examples/js-buffering: getOperatorListState and snapshotState in JavaScript.
    survives_sigkill(guests::JS_BUFFERING);
}

#[test]
fn the_c_port_survives_sigkill_exactly_once() {
    // examples/c-buffering: weir_operator_list_* and snapshot_state in C.
    survives_sigkill(guests::C_BUFFERING);
}

fn survives_sigkill(component: &str) {
    let reference = uninterrupted_of(component);
    assert!(reference == uninterrupted(), "the port flushes what the original does");
    let dir = tempfile::tempdir().unwrap();
    let job = buffering_job_of(dir.path(), 2, 10, component);
    let resumed = run_with_kills(&job, &kill_moments(11, 3));
    assert!(resumed >= 3, "every run after a kill resumed from a checkpoint ({resumed})");
    // Elements buffered at a checkpoint are not before the source's saved position:
    // without operator state they would be lost at every restart.
    assert!(sorted_lines(&dir.path().join("out/flushed.jsonl")) == reference, "every event flushed exactly once");
}

fn weir(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir")).args(args).current_dir(dir).output().unwrap()
}

fn start(dir: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "job.toml", "--plugin-dir", guests::GUEST_DIR])
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs the job a little (its control API up, then 300 ms at 5 000 events/s), then
/// stops it with a savepoint at `savepoint`.
fn run_then_savepoint(dir: &Path, extra: &[&str], savepoint: &str) {
    let child = start(dir, extra);
    for _ in 0..2000 {
        if dir.join(".weir/buffering/control.addr").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    let stop = weir(&["stop", "job.toml", "--savepoint", savepoint], dir);
    assert!(stop.status.success(), "{}", String::from_utf8_lossy(&stop.stderr));
    let run = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&run.stderr).contains("job `buffering` stopped"), "{}", String::from_utf8_lossy(&run.stderr));
}

/// The `restored` reports written since line `from`: per subtask, (buffered, union list).
fn reports(dir: &Path, from: usize) -> Vec<(u64, u64, Vec<String>)> {
    let text = std::fs::read_to_string(dir.join("out/restored.jsonl")).unwrap_or_default();
    let mut reports: Vec<(u64, u64, Vec<String>)> = text
        .lines()
        .skip(from)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let mut union: Vec<String> = v["flushed"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().into()).collect();
            union.sort();
            (v["subtask"].as_u64().unwrap(), v["buffered"].as_u64().unwrap(), union)
        })
        .collect();
    reports.sort();
    reports
}

/// Flink's even split of `total` items over `parallelism` subtasks.
fn even_split(total: u64, parallelism: u64) -> Vec<u64> {
    (0..parallelism).map(|i| total / parallelism + u64::from(i < total % parallelism)).collect()
}

#[test]
fn operator_lists_are_redistributed_on_rescale_as_flink_does() {
    // The buffers are never flushed before the input ends (the threshold is above the
    // input), so at each savepoint they hold every element read so far.
    let reference = uninterrupted();
    let dir = tempfile::tempdir().unwrap();
    buffering_job(dir.path(), 2, 100_000);
    run_then_savepoint(dir.path(), &[], "sp1");
    let inspect = weir(&["savepoint", "inspect", "sp1"], dir.path());
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(text.contains("operator list `buffered-elements` (split)") && text.contains("`flushed-per-subtask` (union)"), "{text}");

    // 2 → 3: the buffers of the two old subtasks split evenly over three; the union
    // list (one entry per old subtask) whole on every new one.
    buffering_job(dir.path(), 3, 100_000);
    run_then_savepoint(dir.path(), &["--from-savepoint", "sp1"], "sp2");
    let at3 = reports(dir.path(), 0);
    assert_eq!(at3.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1, 2], "{at3:?}");
    let total: u64 = at3.iter().map(|r| r.1).sum();
    assert!(total > 0, "{at3:?}");
    assert_eq!(at3.iter().map(|r| r.1).collect::<Vec<_>>(), even_split(total, 3), "{at3:?}");
    assert!(at3.iter().all(|r| r.2 == at3[0].2) && at3[0].2.len() == 2, "{at3:?}");
    assert!(at3[0].2[0].starts_with("0:") && at3[0].2[1].starts_with("1:"), "{at3:?}");

    // 3 → 1: everything on the one subtask, and the union list of all three.
    buffering_job(dir.path(), 1, 100_000);
    let output = weir(&["run", "job.toml", "--plugin-dir", guests::GUEST_DIR, "--from-savepoint", "sp2"], dir.path());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let at1 = reports(dir.path(), 3);
    assert_eq!(at1.len(), 1, "{at1:?}");
    assert!(at1[0].1 > total, "everything buffered at 3, and more: {at1:?}");
    assert_eq!(at1[0].2.len(), 3, "{at1:?}");

    // Across both rescales, every event flushed exactly once.
    assert!(sorted_lines(&dir.path().join("out/flushed.jsonl")) == reference, "every event exactly once");
}

#[test]
fn a_live_upgrade_hands_the_buffers_to_the_new_instance() {
    // Nothing is flushed before the input ends, so at the upgrade the buffers hold every
    // element read so far: the new instance must take them back (as from a savepoint).
    let reference = uninterrupted();
    let dir = tempfile::tempdir().unwrap();
    buffering_job(dir.path(), 2, 100_000);
    let child = start(dir.path(), &[]);
    for _ in 0..2000 {
        if dir.path().join(".weir/buffering/control.addr").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    let upgrade = weir(&["upgrade", "job.toml", "--operator", "buffer", "--component", guests::BUFFERING], dir.path());
    assert!(upgrade.status.success(), "{}", String::from_utf8_lossy(&upgrade.stderr));
    let run = child.wait_with_output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let reports = reports(dir.path(), 0);
    assert_eq!(reports.len(), 2, "both new instances took state over: {reports:?}");
    assert!(reports.iter().map(|r| r.1).sum::<u64>() > 0, "{reports:?}");
    assert!(sorted_lines(&dir.path().join("out/flushed.jsonl")) == reference, "every event exactly once");
}
