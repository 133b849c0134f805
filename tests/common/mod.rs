//! Helpers shared by the whole-job tests: load an example job with its outputs moved
//! into a temporary directory, run it with the built guests, read its outputs.

#![allow(dead_code)]

pub mod crash;
pub mod kafka;
pub mod memory;
pub mod postgres;

use std::path::{Path, PathBuf};

use weir::job::spec::SinkSpec;
use weir::{Job, JobError, JobOptions, JobSpec, JobSummary};

pub use weir_test_guests as guests;

/// The repository root.
pub fn root() -> PathBuf {
    // At run time: a build cache shared between checkouts may hold a binary compiled
    // in another one, which `env!` would point at.
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo test")).join("..")
}

/// Options that find every built guest.
pub fn options() -> JobOptions {
    JobOptions { plugin_dirs: vec![guests::GUEST_DIR.into()], ..Default::default() }
}

/// Loads `examples/<name>/job.toml` with every file sink writing into `out`.
pub fn example(name: &str, out: &Path) -> JobSpec {
    let mut spec = JobSpec::load(&root().join("examples").join(name).join("job.toml")).unwrap();
    redirect_sinks(&mut spec, out);
    spec
}

/// The `tumbling-count` example with its window operator replaced by the hand-built
/// Wasm guest (map state and event-time timers) that late elements never reach.
pub fn hand_built_tumbling(out: &Path) -> JobSpec {
    let mut spec = example("tumbling-count", out);
    let op = &mut spec.operators[0];
    op.window = None;
    op.component = Some(guests::TUMBLING_COUNT.into());
    op.late = weir::job::spec::LateHandling::Drop;
    op.config.insert("size_ms".into(), toml::Value::Integer(60_000));
    spec
}

/// Points every file sink at `out/<its file name>`.
pub fn redirect_sinks(spec: &mut JobSpec, out: &Path) {
    for sink in &mut spec.sinks {
        if let SinkSpec::File { path, .. } = sink {
            *path = out.join(path.file_name().unwrap());
        }
    }
}

/// Sets the parallelism of every operator.
pub fn with_parallelism(mut spec: JobSpec, parallelism: u32) -> JobSpec {
    for op in &mut spec.operators {
        op.parallelism = parallelism;
    }
    spec
}

/// Parses a job from TOML, with relative paths resolved against `dir`.
pub fn job(text: &str, dir: &Path) -> JobSpec {
    JobSpec::parse(text, dir).unwrap()
}

pub fn run(spec: JobSpec) -> Result<JobSummary, JobError> {
    Job::new(spec, &options())?.run()
}

/// The lines of a file, sorted: jobs at parallelism > 1 interleave their subtasks.
pub fn sorted_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// The lines of a file grouped by their key (the first of `key`, `user`, `sensor`, `k`,
/// `from` that the record has), each key's lines in the order the file has them. Jobs at
/// parallelism > 1 interleave keys, but each key's records keep their order (Flink's
/// per-key ordering), which sorting every line would hide.
pub fn per_key_sequences(path: &Path) -> std::collections::BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut keys = std::collections::BTreeMap::<String, Vec<String>>::new();
    for line in text.lines() {
        let record: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", path.display()));
        let key = ["key", "user", "sensor", "k", "from"]
            .iter()
            .find_map(|field| record.get(field))
            .unwrap_or_else(|| panic!("{}: a record without a key field: {line}", path.display()));
        let key = key.as_str().map_or_else(|| key.to_string(), str::to_string);
        keys.entry(key).or_default().push(line.to_string());
    }
    keys
}

/// Asserts that two outputs grouped by key ([`per_key_sequences`]) are equal, naming
/// the first key and position where they differ rather than printing both.
pub fn assert_same_per_key(
    got: &std::collections::BTreeMap<String, Vec<String>>,
    expected: &std::collections::BTreeMap<String, Vec<String>>,
    what: &str,
) {
    for (key, want) in expected {
        let Some(have) = got.get(key) else { panic!("{what}: no records of key {key:?}") };
        if let Some(i) = (0..want.len().max(have.len())).find(|i| want.get(*i) != have.get(*i)) {
            panic!(
                "{what}: key {key:?}, record {i} of {} (expected {}):\n  got      {:?}\n  expected {:?}",
                have.len(),
                want.len(),
                have.get(i),
                want.get(i)
            );
        }
    }
    if let Some(extra) = got.keys().find(|k| !expected.contains_key(*k)) {
        panic!("{what}: records of unexpected key {extra:?}: {:?}", got[extra]);
    }
}

/// The expected output of an example, as committed (sorted).
pub fn expected(example: &str, file: &str) -> Vec<String> {
    sorted_lines(&root().join("examples").join(example).join(file))
}

/// Writes `lines` to `dir/name`, one per line, and returns the path.
pub fn write_input(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// A job reading `dir/input.jsonl` into the one operator whose `[[operator]]` body is
/// `operator` (with its `uid`) and writing `dir/out.jsonl`; `settings` are top-level
/// lines such as `restart = { .. }`.
pub fn file_pipeline(dir: &Path, name: &str, settings: &str, operator: &str) -> JobSpec {
    let uid = operator
        .lines()
        .find_map(|l| l.trim().strip_prefix("uid = "))
        .map(|v| v.trim().trim_matches('"').to_string())
        .expect("the operator has a uid");
    job(
        &format!(
            r#"
            name = "{name}"
            {settings}
            [[source]]
            type = "file"
            uid = "in"
            path = "input.jsonl"
            [[operator]]
            {operator}
            [[sink]]
            type = "file"
            uid = "out"
            path = "out.jsonl"
            [[edge]]
            from = "in"
            to = "{uid}"
            [[edge]]
            from = "{uid}"
            to = "out"
            "#
        ),
        dir,
    )
}

/// Asserts that `error` names line `line` of the input: exactly, or (a trap in a batch
/// of contract 0.3 that left no trace of its element) as one of a range of lines.
pub fn assert_names_line(error: &str, line: i64) {
    if error.contains(&format!("input.jsonl line {line}:")) {
        return;
    }
    let range = error
        .split("elements from ")
        .nth(1)
        .and_then(|rest| rest.split(" (").next())
        .and_then(|range| {
            let (first, last) = range.split_once(" to ")?;
            let number = |p: &str| p.rsplit(' ').next()?.parse::<i64>().ok();
            Some((number(first)?, number(last)?))
        });
    match range {
        Some((first, last)) => assert!(first <= line && line <= last, "line {line} not in {first}..={last}: {error}"),
        None => panic!("expected line {line} named in: {error}"),
    }
}

