//! Savepoints and live upgrades: a counting job upgraded live and through a savepoint
//! keeps every key's state and loses or repeats no output; savepoints rescale; failing
//! upgrades roll back; damaged savepoints are refused with clear errors.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::*;

fn weir(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir")).args(args).current_dir(dir).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A counting job: generated values, keyed by `key-N`, counted by `component`.
fn counting_job(dir: &Path, component: &str, parallelism: u32, rate: Option<u32>) -> PathBuf {
    counting_job_with(dir, component, parallelism, rate, 20, 6000, "")
}

/// [`counting_job`] with `keys` keys, `count` events and `settings` at the top.
fn counting_job_with(dir: &Path, component: &str, parallelism: u32, rate: Option<u32>, keys: u64, count: u64, settings: &str) -> PathBuf {
    let rate = rate.map_or(String::new(), |r| format!("rate = {r}"));
    let path = dir.join("job.toml");
    std::fs::write(
        &path,
        format!(
            r#"
            name = "counting"
            {settings}
            [[source]]
            type = "generator"
            uid = "events"
            count = {count}
            keys = {keys}
            seed = 5
            {rate}
            [[operator]]
            uid = "count"
            component = "{component}"
            parallelism = {parallelism}
            [[sink]]
            type = "file"
            uid = "out"
            path = "out.jsonl"
            [[edge]]
            from = "events"
            to = "count"
            partition = "keyed"
            [[edge]]
            from = "count"
            to = "out"
            "#
        ),
    )
    .unwrap();
    path
}

fn start(job: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("run")
        .arg(job)
        .args(["--plugin-dir", guests::GUEST_DIR])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until the job's control API is up and its output has some lines (a minute at
/// most: the tests of this file run side by side on two cores).
fn wait_running(dir: &Path, output: &str, lines: usize) {
    for _ in 0..12_000 {
        let ready = dir.join(".weir/counting/control.addr").exists()
            || dir.join(format!(".weir/{}/control.addr", "tumbling-count")).exists();
        let written = std::fs::read_to_string(dir.join(output)).map_or(0, |t| t.lines().count());
        if ready && written >= lines {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("the job did not get going");
}

/// Per key, the (version, count, sum) of every output line in order.
fn per_key(path: &Path) -> BTreeMap<String, Vec<(u64, u64, Option<u64>)>> {
    let mut keys: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        keys.entry(v["key"].as_str().unwrap().into()).or_default().push((
            v["v"].as_u64().unwrap(),
            v["count"].as_u64().unwrap(),
            v["sum"].as_u64(),
        ));
    }
    keys
}

/// Checks an upgraded run against a v2-only run of the same input: per key, counts go
/// 1, 2, 3, ... with nothing lost or repeated, v1 lines come before v2 lines, and every
/// v2 line equals what the v2-only run produced for that count.
fn assert_upgraded(upgraded: &Path, reference: &Path) -> usize {
    let (upgraded, reference) = (per_key(upgraded), per_key(reference));
    assert_eq!(upgraded.keys().collect::<Vec<_>>(), reference.keys().collect::<Vec<_>>());
    let mut v2_lines = 0;
    for (key, lines) in &upgraded {
        let counts: Vec<u64> = lines.iter().map(|l| l.1).collect();
        assert_eq!(counts, (1..=lines.len() as u64).collect::<Vec<_>>(), "key {key}: counts");
        assert_eq!(lines.len(), reference[key].len(), "key {key}: line count");
        let switch = lines.iter().position(|l| l.0 == 2).unwrap_or(lines.len());
        assert!(lines[switch..].iter().all(|l| l.0 == 2), "key {key}: v1 after v2");
        assert_eq!(&lines[switch..], &reference[key][switch..], "key {key}: v2 output");
        v2_lines += lines.len() - switch;
    }
    v2_lines
}

fn v2_only(dir: &Path) -> PathBuf {
    let job = counting_job(dir, "counter_v2.wasm", 1, None);
    let output = weir(&["run", job.to_str().unwrap(), "--plugin-dir", guests::GUEST_DIR], dir);
    assert!(output.status.success(), "{}", stderr(&output));
    dir.join("out.jsonl")
}

#[test]
fn a_live_upgrade_keeps_state_and_loses_or_repeats_nothing() {
    let reference = tempfile::tempdir().unwrap();
    let reference = v2_only(reference.path());
    let dir = tempfile::tempdir().unwrap();
    let job = counting_job(dir.path(), "counter_v1.wasm", 2, Some(2000));
    let child = start(&job, &[]);
    wait_running(dir.path(), "out.jsonl", 300);
    let upgrade = weir(
        &["upgrade", "job.toml", "--operator", "count", "--component", guests::COUNTER_V2],
        dir.path(),
    );
    assert!(upgrade.status.success(), "{}", stderr(&upgrade));
    let savepoint = PathBuf::from(String::from_utf8(upgrade.stdout).unwrap().trim());
    assert!(savepoint.join("_savepoint").is_file(), "the upgrade took an in-place savepoint");
    let run = child.wait_with_output().unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    let v2_lines = assert_upgraded(&dir.path().join("out.jsonl"), &reference);
    assert!(v2_lines > 0 && v2_lines < 6000, "the switch happened mid-stream: {v2_lines} v2 lines");
}

#[test]
fn a_live_upgrade_from_a_contract_0_2_component_to_a_0_3_one_loses_or_repeats_nothing() {
    // The keyed count as the Rust SDK of contract 0.2 built it (value state through a
    // host call per access), swapped live for today's (contract 0.3, its value state
    // loaded with each batch): every key counts 1, 2, 3, ... across the switch.
    let dir = tempfile::tempdir().unwrap();
    let old = root().join("tests/fixtures/contract-0.2/keyed_count.wasm");
    let job = counting_job(dir.path(), old.to_str().unwrap(), 2, Some(2000));
    let child = start(&job, &["--log=weir=info"]);
    wait_running(dir.path(), "out.jsonl", 300);
    let upgrade = weir(&["upgrade", "job.toml", "--operator", "count", "--component", guests::KEYED_COUNT], dir.path());
    assert!(upgrade.status.success(), "{}", stderr(&upgrade));
    let at_upgrade = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap().lines().count();
    let run = child.wait_with_output().unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("swapped component"), "{}", stderr(&run));
    assert!(at_upgrade < 6000, "the switch happened mid-stream: {at_upgrade} lines before it");
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        counts.entry(v["key"].as_str().unwrap().into()).or_default().push(v["count"].as_u64().unwrap());
    }
    assert_eq!(counts.len(), 20);
    assert_eq!(counts.values().map(Vec::len).sum::<usize>(), 6000);
    for (key, seen) in &counts {
        assert_eq!(seen, &(1..=seen.len() as u64).collect::<Vec<_>>(), "key {key}");
    }
}

#[test]
fn stop_with_savepoint_then_upgrade_on_restart() {
    let reference = tempfile::tempdir().unwrap();
    let reference = v2_only(reference.path());
    let dir = tempfile::tempdir().unwrap();
    let job = counting_job(dir.path(), "counter_v1.wasm", 2, Some(2000));
    let child = start(&job, &[]);
    wait_running(dir.path(), "out.jsonl", 300);
    let stop = weir(&["stop", "job.toml", "--savepoint", "sp"], dir.path());
    assert!(stop.status.success(), "{}", stderr(&stop));
    child.wait_with_output().unwrap();
    let before = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap().lines().count();
    assert!(before < 6000, "stopped mid-stream");

    let inspect = weir(&["savepoint", "inspect", "sp"], dir.path());
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    assert!(text.contains("operator `count`: parallelism 2") && text.contains("value state `count`"), "{text}");
    let export = weir(&["savepoint", "export", "sp", "--operator", "count"], dir.path());
    let exported = String::from_utf8_lossy(&export.stdout);
    assert_eq!(exported.lines().count(), 40, "20 keys × (count, sum): {exported}");

    // Restart with v2 at a different parallelism and on RocksDB: v2 migrates v1's layout.
    let job = counting_job(dir.path(), "counter_v2.wasm", 3, None);
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(&job, text.replace("name = \"counting\"", "name = \"counting\"\nstate = { backend = \"rocksdb\" }")).unwrap();
    let output = weir(
        &["run", "job.toml", "--plugin-dir", guests::GUEST_DIR, "--from-savepoint", "sp"],
        dir.path(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(assert_upgraded(&dir.path().join("out.jsonl"), &reference), 6000 - before);
}

#[test]
fn a_failing_upgrade_is_refused_and_the_old_component_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let job = counting_job(dir.path(), "counter_v1.wasm", 2, Some(2000));
    let child = start(&job, &[]);
    wait_running(dir.path(), "out.jsonl", 300);
    let wrong = weir(
        &["upgrade", "job.toml", "--operator", "count", "--component", guests::NOT_AN_OPERATOR],
        dir.path(),
    );
    assert!(!wrong.status.success());
    assert!(stderr(&wrong).contains("does not implement the weir:operator/operator world of any contract version"), "{}", stderr(&wrong));
    let bad = weir(
        &["upgrade", "job.toml", "--operator", "count", "--component", guests::COUNTER_BAD_MIGRATION],
        dir.path(),
    );
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("cannot read state version 0"), "{}", stderr(&bad));
    let run = child.wait_with_output().unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    // Version 1 ran throughout, with its state intact: counts 1..n per key.
    let lines = per_key(&dir.path().join("out.jsonl"));
    assert_eq!(lines.values().map(Vec::len).sum::<usize>(), 6000);
    for (key, lines) in lines {
        assert!(lines.iter().all(|l| l.0 == 1), "key {key}: only v1 output");
        let counts: Vec<u64> = lines.iter().map(|l| l.1).collect();
        assert_eq!(counts, (1..=counts.len() as u64).collect::<Vec<_>>(), "key {key}");
    }
}

#[test]
fn savepoints_rescale_two_to_four_to_one_with_state_and_timers() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = example("tumbling-count", dir.path());
    let input = root().join("examples/tumbling-count/input.jsonl");
    for source in &mut spec.sources {
        if let weir::job::spec::SourceSpec::File { path, rate, .. } = source {
            *path = input.clone();
            *rate = Some(40.0);
        }
    }
    let write = |parallelism: u32| {
        let mut spec = with_parallelism(spec.clone(), parallelism);
        spec.name = "tumbling-count".into();
        std::fs::write(dir.path().join("job.toml"), toml::to_string(&spec).unwrap()).unwrap();
    };
    write(2);
    let child = start(&dir.path().join("job.toml"), &[]);
    wait_running(dir.path(), "windows.jsonl", 2);
    let stop = weir(&["stop", "job.toml", "--savepoint", "sp1"], dir.path());
    assert!(stop.status.success(), "{}", stderr(&stop));
    child.wait_with_output().unwrap();

    write(4);
    let child = start(&dir.path().join("job.toml"), &["--from-savepoint", "sp1"]);
    wait_running(dir.path(), "windows.jsonl", 6);
    let stop = weir(&["stop", "job.toml", "--savepoint", "sp2"], dir.path());
    assert!(stop.status.success(), "{}", stderr(&stop));
    child.wait_with_output().unwrap();
    let inspect = String::from_utf8(weir(&["savepoint", "inspect", "sp2"], dir.path()).stdout).unwrap();
    assert!(inspect.contains("parallelism 4"), "{inspect}");

    write(1);
    let output = weir(
        &["run", "job.toml", "--plugin-dir", guests::GUEST_DIR, "--from-savepoint", "sp2"],
        dir.path(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(sorted_lines(&dir.path().join("windows.jsonl")), expected("tumbling-count", "expected.jsonl"));
    assert_eq!(sorted_lines(&dir.path().join("late.jsonl")), expected("tumbling-count", "expected-late.jsonl"));
}

/// Takes a savepoint of the counting job stopped early.
fn stopped_savepoint(dir: &Path) -> PathBuf {
    let job = counting_job(dir, "counter_v1.wasm", 1, Some(2000));
    let child = start(&job, &[]);
    wait_running(dir, "out.jsonl", 100);
    let stop = weir(&["stop", "job.toml", "--savepoint", "sp"], dir);
    assert!(stop.status.success(), "{}", stderr(&stop));
    child.wait_with_output().unwrap();
    dir.join("sp")
}

#[test]
fn damaged_savepoints_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let sp = stopped_savepoint(dir.path());
    let run = |dir: &Path| weir(&["run", "job.toml", "--plugin-dir", guests::GUEST_DIR, "--from-savepoint", "sp"], dir);

    let state = sp.join("count#0/state.ent");
    let good = std::fs::read(&state).unwrap();
    let mut bad = good.clone();
    bad[20] ^= 0x55;
    std::fs::write(&state, &bad).unwrap();
    let output = run(dir.path());
    assert!(!output.status.success());
    assert!(stderr(&output).contains("state.ent: checksum mismatch"), "{}", stderr(&output));
    std::fs::write(&state, &good).unwrap();

    let manifest = sp.join("_savepoint");
    let text = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, &text[..text.len() / 2]).unwrap();
    let output = weir(&["savepoint", "inspect", "sp"], dir.path());
    assert!(!output.status.success());
    assert!(stderr(&output).contains("_savepoint: checksum mismatch (damaged or truncated)"), "{}", stderr(&output));
    std::fs::remove_file(&manifest).unwrap();
    let output = run(dir.path());
    assert!(stderr(&output).contains("no _savepoint file: not a savepoint"), "{}", stderr(&output));
}

#[test]
fn a_migration_that_fails_on_restore_aborts_it_and_leaves_the_savepoint_alone() {
    let dir = tempfile::tempdir().unwrap();
    let sp = stopped_savepoint(dir.path());
    let before = std::fs::read(sp.join("_savepoint")).unwrap();
    counting_job(dir.path(), "counter_bad_migration.wasm", 1, None);
    let output = weir(&["run", "job.toml", "--plugin-dir", guests::GUEST_DIR, "--from-savepoint", "sp"], dir.path());
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("failed while migrating the state of key")
            && stderr(&output).contains("from version 0")
            && stderr(&output).contains("cannot read state version 0"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read(sp.join("_savepoint")).unwrap(), before);
    let inspect = weir(&["savepoint", "inspect", "sp"], dir.path());
    assert!(inspect.status.success(), "the savepoint is still good: {}", stderr(&inspect));
}

#[test]
fn unmatched_state_and_changed_max_parallelism_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    stopped_savepoint(dir.path());
    let job = dir.path().join("job.toml");
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(&job, text.replace("uid = \"count\"", "uid = \"counter\"").replace("to = \"count\"", "to = \"counter\"").replace("from = \"count\"", "from = \"counter\"")).unwrap();
    let args = ["run", "job.toml", "--plugin-dir", guests::GUEST_DIR, "--from-savepoint", "sp"];
    let output = weir(&args, dir.path());
    assert!(!output.status.success());
    assert!(stderr(&output).contains("state for uids the job does not have: count"), "{}", stderr(&output));
    let mut allowed = args.to_vec();
    allowed.push("--allow-non-restored-state");
    let output = weir(&allowed, dir.path());
    assert!(output.status.success(), "{}", stderr(&output));

    std::fs::write(&job, text.replace("name = \"counting\"", "name = \"counting\"\nmax_parallelism = 64")).unwrap();
    let output = weir(&args, dir.path());
    assert!(!output.status.success());
    assert!(stderr(&output).contains("max_parallelism 128, the job has 64"), "{}", stderr(&output));
}

/// A tumbling one-second average per key (the window-average guest), with `process`
/// added when `summarise` (the window-summary guest wraps each result).
fn window_job(dir: &Path, summarise: bool, parallelism: u32) -> PathBuf {
    let process = if summarise { format!(", process = {{ component = {:?} }}", guests::WINDOW_SUMMARY) } else { String::new() };
    let path = dir.join("job.toml");
    std::fs::write(
        &path,
        format!(
            r#"
            name = "counting"
            [[source]]
            type = "file"
            uid = "events"
            path = "input.jsonl"
            key_field = "k"
            timestamp_field = "ts"
            rate = 400
            [[operator]]
            uid = "avg"
            parallelism = {parallelism}
            window = {{ type = "tumbling", size_ms = 1000, aggregate = {{ component = {:?} }}{process} }}
            [[sink]]
            type = "file"
            uid = "out"
            path = "out.jsonl"
            [[edge]]
            from = "events"
            to = "avg"
            partition = "keyed"
            [[edge]]
            from = "avg"
            to = "out"
            "#,
            guests::WINDOW_AVERAGE
        ),
    )
    .unwrap();
    path
}

#[test]
fn window_functions_change_through_a_savepoint_with_open_windows() {
    // Flink's way to change a window's functions: stop with a savepoint, restart the
    // changed job from it. Open windows keep their accumulators (in the savepoint),
    // here also across a rescale from 2 to 3 subtasks.
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    let mut expected: BTreeMap<(String, i64), (f64, u64)> = BTreeMap::new();
    for i in 0..1200i64 {
        // Each window's average tells its window and key: v = window * 1000 + key * 100 + 0..50.
        let (key, ts) = (format!("k{}", i % 3), i * 10);
        let v = (ts / 1000) * 1000 + (i % 3) * 100 + (i * 37) % 50;
        lines.push(format!(r#"{{"k":"{key}","ts":{ts},"v":{v}}}"#));
        let e = expected.entry((key, ts - ts % 1000)).or_default();
        e.0 += v as f64;
        e.1 += 1;
    }
    write_input(dir.path(), "input.jsonl", &lines.iter().map(String::as_str).collect::<Vec<_>>());
    let job = window_job(dir.path(), false, 2);
    let child = start(&job, &[]);
    wait_running(dir.path(), "out.jsonl", 6);
    let stop = weir(&["stop", "job.toml", "--savepoint", "sp"], dir.path());
    assert!(stop.status.success(), "{}", stderr(&stop));
    child.wait_with_output().unwrap();
    let before = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();

    window_job(dir.path(), true, 3);
    let output = weir(&["run", "job.toml", "--plugin-dir", guests::GUEST_DIR, "--from-savepoint", "sp"], dir.path());
    assert!(output.status.success(), "{}", stderr(&output));
    let after = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    assert!(after.starts_with(&before), "the restored job keeps the committed output");

    // Every window exactly once, with the average of all its elements: windows open at
    // the savepoint finished after it with the elements from before.
    let mut got: BTreeMap<(String, i64), (f64, u64)> = BTreeMap::new();
    let mut summarised = 0;
    for line in after.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let (key, start, result) = match v.get("values") {
            Some(values) => {
                summarised += 1;
                (v["key"].as_str().unwrap().to_string(), v["start"].as_i64().unwrap(), values[0].clone())
            }
            None => {
                // Without a process function the output is the aggregate's result alone;
                // its average says which window and key it is.
                let avg = v["avg"].as_f64().unwrap();
                let (window, key) = ((avg / 1000.0).floor() as i64, ((avg % 1000.0) / 100.0).floor() as i64);
                (format!("k{key}"), window * 1000, v)
            }
        };
        let previous = got.insert((key, start), (result["avg"].as_f64().unwrap(), result["count"].as_u64().unwrap()));
        assert!(previous.is_none(), "a window fired twice: {line}");
    }
    assert!(summarised > 0 && summarised < expected.len(), "the savepoint landed mid-stream");
    let expected: BTreeMap<_, _> = expected.into_iter().map(|(k, (sum, n))| (k, (sum / n as f64, n))).collect();
    assert_eq!(got.len(), expected.len());
    for (window, (avg, n)) in &expected {
        let (got_avg, got_n) = got[window];
        assert!((got_avg - avg).abs() < 1e-9 && got_n == *n, "{window:?}: {got_avg}/{got_n} vs {avg}/{n}");
    }
}

#[test]
fn the_control_api_answers_only_its_owner() {
    // Another local user, or a web page, once could stop, savepoint or upgrade any job:
    // now a request needs the token only the job's owner can read, the loopback Host,
    // and no Origin; an upgrade cannot read devices or echo a file's bytes.
    let dir = tempfile::tempdir().unwrap();
    let job = counting_job(dir.path(), "counter_v1.wasm", 1, Some(2000));
    let mut child = start(&job, &[]);
    wait_running(dir.path(), "out.jsonl", 100);
    let work = dir.path().join(".weir/counting");
    let address = std::fs::read_to_string(work.join("control.addr")).unwrap();
    let address = address.lines().next().unwrap().to_string();
    let token = std::fs::read_to_string(work.join("control.token")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(work.join("control.token")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the token is the owner's only");
    }
    let post = |route: &str, headers: &[(&str, &str)], body: &str| {
        let mut request = ureq::post(&format!("http://{address}{route}")).config().http_status_as_error(false).build();
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request.content_type("application/json").send(body).unwrap();
        (response.status().as_u16(), response.body_mut().read_to_string().unwrap())
    };
    let bearer = format!("Bearer {}", token.trim());
    let (status, text) = post("/stop", &[], "{}");
    assert_eq!(status, 401, "{text}");
    let (status, _) = post("/stop", &[("Authorization", "Bearer 0000")], "{}");
    assert_eq!(status, 401);
    let (status, _) = post("/stop", &[("Authorization", &bearer), ("Host", "evil.example")], "{}");
    assert_eq!(status, 403, "a rebound DNS name is not this job");
    let (status, _) = post("/stop", &[("Authorization", &bearer), ("Origin", "http://evil.example")], "{}");
    assert_eq!(status, 403, "pages cannot drive the API");
    // Components: a device is refused before it is read; a file's bytes are not quoted.
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "root:s3cr3t-hash:19000:0:99999:7:::\n").unwrap();
    for (component, reason) in [("/dev/zero", "not a regular file"), (secret.to_str().unwrap(), "not a WebAssembly component")] {
        let body = format!(r#"{{"operator":"count","component":{component:?}}}"#);
        let (status, text) = post("/upgrade", &[("Authorization", &bearer)], &body);
        assert_eq!(status, 400, "{text}");
        assert!(text.contains(reason), "{text}");
        assert!(!text.contains("root") && !text.contains("0x72"), "the error quotes the file: {text}");
    }
    assert!(child.try_wait().unwrap().is_none(), "the job is still running after every refused request");
    // The owner's CLI still works, and the token goes with the job.
    let stop = weir(&["stop", "job.toml"], dir.path());
    assert!(stop.status.success(), "{}", stderr(&stop));
    assert_eq!(child.wait().unwrap().code(), Some(130), "stopped, as by Ctrl-C");
    assert!(!work.join("control.token").exists());
}

/// A v2-only run of the counting job with `keys` and `count`, into `dir`.
fn v2_reference(dir: &Path, keys: u64, count: u64) {
    let job = counting_job_with(dir, "counter_v2.wasm", 1, None, keys, count, "");
    let output = weir(&["run", job.to_str().unwrap(), "--plugin-dir", guests::GUEST_DIR], dir);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn a_live_upgrade_migrates_keys_lazily_on_first_access() {
    // 30 000 keys: the upgrade migrates what it can in 50 ms and acknowledges; every
    // other key migrates before its next element reaches v2, or in the background.
    // Nothing is lost, repeated or migrated twice (a second migration would reset the
    // key's count).
    let (keys, count) = (30_000, 60_000);
    let reference = tempfile::tempdir().unwrap();
    v2_reference(reference.path(), keys, count);
    let dir = tempfile::tempdir().unwrap();
    // Slow enough that, on a loaded machine, the background migration ends before the
    // input does (at 15 000 events/s it did not always).
    let job = counting_job_with(dir.path(), "counter_v1.wasm", 1, Some(8_000), keys, count, "");
    let child = start(&job, &["--log=weir=info"]);
    wait_running(dir.path(), "out.jsonl", 35_000);
    let upgrade = weir(
        &["upgrade", "job.toml", "--operator", "count", "--component", guests::COUNTER_V2],
        dir.path(),
    );
    assert!(upgrade.status.success(), "{}", stderr(&upgrade));
    let run = child.wait_with_output().unwrap();
    let log = stderr(&run);
    assert!(run.status.success(), "{log}");
    let swap = log.lines().find(|l| l.contains("swapped component")).unwrap_or_else(|| panic!("no swap logged: {log}"));
    assert!(swap.contains("migrating=true"), "every key migrated within the upgrade: make the state larger: {swap}");
    assert!(log.contains("state migration complete"), "{log}");
    let v2_lines = assert_upgraded(&dir.path().join("out.jsonl"), &reference.path().join("out.jsonl"));
    assert!(v2_lines > 0, "v2 took over");
}

/// SIGKILLs `job` once a completed checkpoint in `dir` holds a migration of `count#0` in
/// progress; fails if none did before the job ended.
fn kill_mid_migration(mut job: Child, dir: &Path) {
    let in_progress = || {
        std::fs::read_dir(dir.join("checkpoints")).into_iter().flatten().flatten().any(|e| {
            e.path().join("_metadata").exists() && e.path().join("count#0/migration.ent").exists()
        })
    };
    for _ in 0..2000 {
        if in_progress() || job.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = job.kill();
    let job = job.wait_with_output().unwrap();
    assert!(in_progress(), "no checkpoint during the migration: {}", stderr(&job));
}

#[test]
fn a_lazy_migration_in_progress_survives_a_crash() {
    // v1 stops with a savepoint of 30 000 keys; v2 restores it and migrates lazily,
    // slowly (300 events/s), with checkpoints every 50 ms: killed mid-migration, the
    // restart resumes the migration where the checkpoint's cursor and keys say.
    let (keys, count) = (30_000, 45_000);
    let reference = tempfile::tempdir().unwrap();
    v2_reference(reference.path(), keys, count);
    let dir = tempfile::tempdir().unwrap();
    let job = counting_job_with(dir.path(), "counter_v1.wasm", 1, Some(10_000), keys, count, "");
    let child = start(&job, &[]);
    wait_running(dir.path(), "out.jsonl", 30_000);
    let stop = weir(&["stop", "job.toml", "--savepoint", "sp"], dir.path());
    assert!(stop.status.success(), "{}", stderr(&stop));
    child.wait_with_output().unwrap();
    let settings = r#"checkpoint = { interval_ms = 50, dir = "checkpoints" }"#;
    let job = counting_job_with(dir.path(), "counter_v2.wasm", 1, Some(300), keys, count, settings);
    let first = start(&job, &["--from-savepoint", "sp", "--log=weir=info"]);
    kill_mid_migration(first, dir.path()); // SIGKILL, with keys still to migrate
    // The rest at full speed.
    let job = counting_job_with(dir.path(), "counter_v2.wasm", 1, None, keys, count, settings);
    let resumed = weir(&["run", job.to_str().unwrap(), "--plugin-dir", guests::GUEST_DIR, "--log=weir=info"], dir.path());
    let log = stderr(&resumed);
    assert!(resumed.status.success(), "{log}");
    assert!(log.contains("restoring from checkpoint") && log.contains("resuming a state migration"), "{log}");
    assert_upgraded(&dir.path().join("out.jsonl"), &reference.path().join("out.jsonl"));
}

/// Starts `job` with its log at info, and a thread that passes the log's lines on.
fn start_watched(job: &Path, extra: &[&str]) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = start(job, &[extra, &["--log=weir=info"]].concat());
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Reads `log` until a line contains `what`; all lines read so far.
fn wait_for_line(log: &std::sync::mpsc::Receiver<String>, what: &str, seen: &mut Vec<String>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if let Ok(line) = log.recv_timeout(Duration::from_millis(100)) {
            let found = line.contains(what);
            seen.push(line);
            if found {
                return;
            }
        }
    }
    panic!("no `{what}` in the log: {}", seen.join("\n"));
}

#[test]
fn a_crash_while_the_rollback_point_is_written_restores_exactly() {
    // The upgrade swaps at once and writes its rollback point (the in-place savepoint of
    // 150 000 keys) in the background while v2 already runs. Killed then, the job
    // restarts from its last checkpoint with the component its job file names (v1):
    // what v2 wrote was never committed, and the output equals a run that never
    // upgraded, with nothing lost or repeated.
    let (keys, count) = (150_000, 400_000);
    let settings = r#"checkpoint = { interval_ms = 200, dir = "checkpoints" }"#;
    let reference = tempfile::tempdir().unwrap();
    let job = counting_job_with(reference.path(), "counter_v1.wasm", 1, None, keys, count, settings);
    let output = weir(&["run", job.to_str().unwrap(), "--plugin-dir", guests::GUEST_DIR], reference.path());
    assert!(output.status.success(), "{}", stderr(&output));

    let dir = tempfile::tempdir().unwrap();
    let job = counting_job_with(dir.path(), "counter_v1.wasm", 1, Some(40_000), keys, count, settings);
    let (mut child, log) = start_watched(&job, &[]);
    wait_running(dir.path(), "out.jsonl", 150_000);
    let mut upgrade = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["upgrade", "job.toml", "--operator", "count", "--component", guests::COUNTER_V2])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    wait_for_line(&log, "swapped component", &mut seen);
    child.kill().unwrap(); // SIGKILL, the rollback point half written
    child.wait().unwrap();
    let _ = upgrade.wait();
    let savepoints = dir.path().join(".weir/counting/savepoints");
    let upgrade_dir = std::fs::read_dir(&savepoints).unwrap().flatten().next().expect("an in-place savepoint begun").path();
    assert!(
        !upgrade_dir.join("_savepoint").exists(),
        "the rollback point was complete before the kill: make the state larger"
    );

    let resumed = weir(&["run", job.to_str().unwrap(), "--plugin-dir", guests::GUEST_DIR, "--log=weir=info"], dir.path());
    let log = stderr(&resumed);
    assert!(resumed.status.success(), "{log}");
    assert!(log.contains("restoring from checkpoint"), "{log}");
    let (got, want) = (per_key(&dir.path().join("out.jsonl")), per_key(&reference.path().join("out.jsonl")));
    assert_eq!(got.len(), want.len(), "keys");
    for (key, lines) in &want {
        assert_eq!(got.get(key), Some(lines), "key {key}: lost, repeated or v2 output committed");
    }
}

/// A v1 counting job with checkpoints whose operator config sets v2's `trap_at`.
/// At 500 events a second (25 per key) its 6 000 events last 12 s: long enough for a
/// test to upgrade it after its first 1 000 lines, even on a loaded machine.
fn probation_job(dir: &Path, trap_at: u64, parallelism: u32) -> PathBuf {
    probation_job_at(dir, trap_at, parallelism, Some(500))
}

fn probation_job_at(dir: &Path, trap_at: u64, parallelism: u32, rate: Option<u32>) -> PathBuf {
    let settings = r#"checkpoint = { interval_ms = 100, dir = "checkpoints" }"#;
    let job = counting_job_with(dir, "counter_v1.wasm", parallelism, rate, 20, 6000, settings);
    let text = std::fs::read_to_string(&job).unwrap().replace(
        r#"component = "counter_v1.wasm""#,
        &format!("component = \"counter_v1.wasm\"\nconfig = {{ trap_at = \"{trap_at}\" }}"),
    );
    std::fs::write(&job, text).unwrap();
    job
}

/// Runs [`probation_job`] with v1 only: what a job that never upgraded writes.
fn v1_reference(dir: &Path) -> PathBuf {
    let job = probation_job_at(dir, 0, 2, None);
    let output = weir(&["run", job.to_str().unwrap(), "--plugin-dir", guests::GUEST_DIR], dir);
    assert!(output.status.success(), "{}", stderr(&output));
    dir.join("out.jsonl")
}

/// The upgrade history the job keeps.
fn history(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(".weir/counting/upgrades.json")).unwrap()).unwrap()
}

/// Runs [`probation_job`] at `parallelism`, upgrades it live to v2 trapping at count 150
/// (about 4 s later: each key gets 25 events a second) with `flags`, and waits for the
/// end: the job rolled back, and its output equals a run that never upgraded. Returns
/// the job's directory and log.
fn trapping_upgrade_rolls_back(parallelism: u32, flags: &[&str]) -> (tempfile::TempDir, String) {
    let reference = tempfile::tempdir().unwrap();
    let reference = v1_reference(reference.path());
    let dir = tempfile::tempdir().unwrap();
    let job = probation_job(dir.path(), 150, parallelism);
    let child = start(&job, &["--log=weir=info"]);
    wait_running(dir.path(), "out.jsonl", 1000);
    let upgrade = ["upgrade", "job.toml", "--operator", "count", "--component", guests::COUNTER_V2, "--probation", "30s"];
    let upgrade = weir(&[&upgrade[..], flags].concat(), dir.path());
    assert!(upgrade.status.success(), "{}", stderr(&upgrade));
    let run = child.wait_with_output().unwrap();
    let log = stderr(&run);
    assert!(run.status.success(), "{log}");
    assert!(log.contains("rolling the upgrade back"), "{log}");
    assert_eq!(per_key(&dir.path().join("out.jsonl")), per_key(&reference), "the output of a job that never upgraded");
    (dir, log)
}

#[test]
fn an_upgrade_that_fails_on_probation_rolls_back_and_repeats_nothing() {
    // On probation, the trap rolls the job back to the upgrade's in-place savepoint with
    // v1: nothing v2 wrote was committed, and the history says why.
    let (dir, _) = trapping_upgrade_rolls_back(2, &[]);
    let history = history(dir.path());
    let outcome = &history["upgrades"][0]["outcome"];
    assert_eq!(outcome["state"], "rolled_back", "{history}");
    assert!(outcome["reason"].as_str().unwrap().contains("has a bug that shows at count 150"), "{history}");
    let shown = weir(&["history", "job.toml"], dir.path());
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.starts_with("#1 ") && shown.contains("counter_v1.wasm") && shown.contains("-> counter_v2.wasm"), "{shown}");
    assert!(shown.contains("by control API") && shown.contains("rolled back: failed on probation"), "{shown}");
}

#[test]
fn a_crash_on_probation_rolls_back_at_restart() {
    // The process dies (SIGKILL) while the upgrade is on probation: the restart goes
    // back to the rollback point with v1 rather than trusting v2's checkpoints, and the
    // output equals a run that never upgraded.
    let reference = tempfile::tempdir().unwrap();
    let reference = v1_reference(reference.path());
    let dir = tempfile::tempdir().unwrap();
    let job = probation_job(dir.path(), 0, 2);
    let mut child = start(&job, &[]);
    wait_running(dir.path(), "out.jsonl", 1000);
    let upgrade = weir(
        &["upgrade", "job.toml", "--operator", "count", "--component", guests::COUNTER_V2, "--probation", "60s"],
        dir.path(),
    );
    assert!(upgrade.status.success(), "{}", stderr(&upgrade));
    std::thread::sleep(Duration::from_millis(700)); // v2 runs, checkpoints complete, commits are held
    let visible = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    assert!(!visible.contains(r#""v":2"#), "v2's output was published on probation");
    assert!(child.try_wait().unwrap().is_none(), "the input ended before the kill: slow the job down");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(history(dir.path())["upgrades"][0]["outcome"]["state"], "probation");
    let job = probation_job_at(dir.path(), 0, 2, None);
    let resumed = weir(&["run", job.to_str().unwrap(), "--plugin-dir", guests::GUEST_DIR, "--log=weir=info"], dir.path());
    let log = stderr(&resumed);
    assert!(resumed.status.success(), "{log}");
    assert!(log.contains("rolling the upgrade back"), "{log}");
    assert_eq!(per_key(&dir.path().join("out.jsonl")), per_key(&reference), "the output of a job that never upgraded");
    assert_eq!(history(dir.path())["upgrades"][0]["outcome"]["state"], "rolled_back");
}

#[test]
fn an_upgrade_that_passes_probation_stays_across_restarts() {
    // A short probation passes; then the process dies and restarts from a checkpoint:
    // it runs v2 (the history says so), not the job file's v1, and the output is exact.
    let reference = tempfile::tempdir().unwrap();
    let reference = v2_only(reference.path());
    let dir = tempfile::tempdir().unwrap();
    let settings = r#"checkpoint = { interval_ms = 100, dir = "checkpoints" }"#;
    let job = counting_job_with(dir.path(), "counter_v1.wasm", 2, Some(500), 20, 6000, settings);
    let mut child = start(&job, &["--log=weir=info"]);
    wait_running(dir.path(), "out.jsonl", 1000);
    let upgrade = weir(
        &["upgrade", "job.toml", "--operator", "count", "--component", guests::COUNTER_V2, "--probation", "300ms"],
        dir.path(),
    );
    assert!(upgrade.status.success(), "{}", stderr(&upgrade));
    for _ in 0..1000 {
        if history(dir.path())["upgrades"][0]["outcome"]["state"] == "done" {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(history(dir.path())["upgrades"][0]["outcome"]["state"], "done");
    // v2's output is published once the probation passed (at the next commit).
    let published = || std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap().contains(r#""v":2"#);
    for _ in 0..1000 {
        if published() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(published(), "v2's output is published once the probation passed");
    assert!(child.try_wait().unwrap().is_none(), "the input ended before the kill: slow the job down");
    child.kill().unwrap();
    child.wait().unwrap();
    let job = counting_job_with(dir.path(), "counter_v1.wasm", 2, None, 20, 6000, settings);
    let resumed = weir(&["run", job.to_str().unwrap(), "--plugin-dir", guests::GUEST_DIR, "--log=weir=info"], dir.path());
    let log = stderr(&resumed);
    assert!(resumed.status.success(), "{log}");
    assert!(log.contains("running the component a live upgrade installed"), "{log}");
    assert_upgraded(&dir.path().join("out.jsonl"), &reference);
}

#[test]
fn a_canary_that_traps_is_rolled_back_and_repeats_nothing() {
    // Parallelism 4, a 25% canary: one subtask runs v2 (which traps at count 150) while
    // three run v1. The trap rolls every subtask back to the upgrade's rollback point
    // with v1; the output equals a run that never upgraded.
    let (dir, log) = trapping_upgrade_rolls_back(4, &["--canary", "25%"]);
    let swaps = log.lines().filter(|l| l.contains("swapped component")).count();
    assert_eq!(swaps, 1, "only the canary's subtask runs v2: {log}");
    let history = history(dir.path());
    let record = &history["upgrades"][0];
    assert_eq!(record["canary"], serde_json::json!({ "subtasks": 1, "of": 4, "proceeded": false }), "{history}");
    assert_eq!(record["outcome"]["state"], "rolled_back", "{history}");
}

#[test]
fn a_canary_that_passes_proceeds_to_every_subtask() {
    // A 25% canary on probation for 500 ms passes; the three other subtasks follow, and
    // once the second probation passed every key's output goes on in v2, exactly once.
    let reference = tempfile::tempdir().unwrap();
    let settings = r#"checkpoint = { interval_ms = 100, dir = "checkpoints" }"#;
    let job = counting_job_with(reference.path(), "counter_v2.wasm", 4, None, 20, 6000, settings);
    let output = weir(&["run", job.to_str().unwrap(), "--plugin-dir", guests::GUEST_DIR], reference.path());
    assert!(output.status.success(), "{}", stderr(&output));
    let dir = tempfile::tempdir().unwrap();
    let job = probation_job(dir.path(), 0, 4);
    let child = start(&job, &["--log=weir=info"]);
    wait_running(dir.path(), "out.jsonl", 1000);
    let upgrade = weir(
        &["upgrade", "job.toml", "--operator", "count", "--component", guests::COUNTER_V2, "--canary", "25%", "--probation", "500ms"],
        dir.path(),
    );
    assert!(upgrade.status.success(), "{}", stderr(&upgrade));
    let run = child.wait_with_output().unwrap();
    let log = stderr(&run);
    assert!(run.status.success(), "{log}");
    assert!(log.contains("the canary passed; upgrading the other subtasks"), "{log}");
    let swaps: Vec<&str> = log.lines().filter(|l| l.contains("swapped component")).collect();
    assert_eq!(swaps.len(), 4, "one subtask, then the three others: {log}");
    assert!(swaps[0].contains("subtask=0"), "{}", swaps[0]);
    let v2_lines = assert_upgraded(&dir.path().join("out.jsonl"), &reference.path().join("out.jsonl"));
    assert!(v2_lines > 0);
    let history = history(dir.path());
    let record = &history["upgrades"][0];
    assert_eq!(record["canary"], serde_json::json!({ "subtasks": 1, "of": 4, "proceeded": true }), "{history}");
    assert_eq!(record["outcome"]["state"], "done", "{history}");
    // Every key ends on v2: the other subtasks followed.
    for (key, lines) in per_key(&dir.path().join("out.jsonl")) {
        assert_eq!(lines.last().unwrap().0, 2, "key {key} ended on v1");
    }
}

/// `weir check` of a counting job running `component` (with operator `config`) against
/// the savepoint in `savepoint`: whether it passed, and what it printed.
fn check_upgrade(savepoint: &Path, component: &str, config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let job = counting_job(dir.path(), component, 1, None);
    let text = std::fs::read_to_string(&job)
        .unwrap()
        .replace(&format!("component = \"{component}\""), &format!("component = \"{component}\"\n{config}"));
    std::fs::write(&job, text).unwrap();
    let sp = savepoint.to_str().unwrap();
    let check = weir(&["check", job.to_str().unwrap(), "--plugin-dir", guests::GUEST_DIR, "--upgrade-from", sp], dir.path());
    (check.status.success(), format!("{}{}", String::from_utf8_lossy(&check.stdout), stderr(&check)))
}

#[test]
fn the_compatibility_check_accepts_a_migrating_version_and_added_or_removed_states() {
    let dir = tempfile::tempdir().unwrap();
    let savepoint = stopped_savepoint(dir.path()); // counter v1: value states count and sum, version 0
    let (ok, out) = check_upgrade(&savepoint, "counter_v2.wasm", "");
    assert!(ok, "{out}");
    assert!(out.contains("operator `count`: compatible") && out.contains("state version 0 -> 1"), "{out}");
    assert!(out.contains("migrate from version 0 went through on"), "{out}");
    let (ok, out) = check_upgrade(&savepoint, "counter_layouts.wasm", r#"config = { layout = "added" }"#);
    assert!(ok, "{out}");
    assert!(out.contains("added: map state `seen` (starts empty)"), "{out}");
    let (ok, out) = check_upgrade(&savepoint, "counter_layouts.wasm", r#"config = { layout = "removed" }"#);
    assert!(ok, "{out}");
    assert!(out.contains("removed: value state `sum` is saved but no longer declared"), "{out}");
}

#[test]
fn the_compatibility_check_refuses_a_changed_kind() {
    let dir = tempfile::tempdir().unwrap();
    let savepoint = stopped_savepoint(dir.path());
    let (ok, out) = check_upgrade(&savepoint, "counter_layouts.wasm", r#"config = { layout = "kind-changed" }"#);
    assert!(!ok, "{out}");
    assert!(out.contains("operator `count`: INCOMPATIBLE"), "{out}");
    assert!(out.contains("state `count` was a value state and is now a list state at the same state version"), "{out}");
}

#[test]
fn the_compatibility_check_refuses_a_lower_state_version() {
    let dir = tempfile::tempdir().unwrap();
    let job = counting_job(dir.path(), "counter_v2.wasm", 1, Some(2000));
    let child = start(&job, &[]);
    wait_running(dir.path(), "out.jsonl", 100);
    let stop = weir(&["stop", "job.toml", "--savepoint", "sp"], dir.path());
    assert!(stop.status.success(), "{}", stderr(&stop));
    child.wait_with_output().unwrap();
    let (ok, out) = check_upgrade(&dir.path().join("sp"), "counter_v1.wasm", "");
    assert!(!ok, "{out}");
    assert!(out.contains("the saved state is at version 1 but the component declares version 0"), "{out}");
}

#[test]
fn the_compatibility_check_refuses_a_raised_version_without_a_working_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let savepoint = stopped_savepoint(dir.path());
    let (ok, out) = check_upgrade(&savepoint, "counter_unmigrated.wasm", "");
    assert!(!ok, "{out}");
    assert!(out.contains("migrate from version 0 failed on saved key"), "{out}");
    assert!(out.contains("STATE_VERSION is 2 but it does not implement migrate"), "{out}");
    let (ok, out) = check_upgrade(&savepoint, "counter_bad_migration.wasm", "");
    assert!(!ok, "{out}");
    assert!(out.contains("this version cannot read state version 0"), "{out}");
}

#[test]
fn a_live_upgrade_that_changes_a_state_kind_is_refused() {
    // The running v1 keeps `count` as a value; the new component declares it a list at
    // the same version: the swap is refused before any element reaches it.
    let dir = tempfile::tempdir().unwrap();
    let job = counting_job(dir.path(), "counter_v1.wasm", 2, Some(2000));
    let text = std::fs::read_to_string(&job)
        .unwrap()
        .replace(r#"component = "counter_v1.wasm""#, "component = \"counter_v1.wasm\"\nconfig = { layout = \"kind-changed\" }");
    std::fs::write(&job, text).unwrap();
    let child = start(&job, &[]);
    wait_running(dir.path(), "out.jsonl", 300);
    let upgrade = weir(
        &["upgrade", "job.toml", "--operator", "count", "--component", guests::COUNTER_LAYOUTS],
        dir.path(),
    );
    assert!(!upgrade.status.success());
    assert!(stderr(&upgrade).contains("state `count` was a value state and is now a list state"), "{}", stderr(&upgrade));
    let run = child.wait_with_output().unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    let lines = per_key(&dir.path().join("out.jsonl"));
    assert!(lines.values().flatten().all(|l| l.0 == 1), "only v1 output");
}

#[test]
fn to_previous_goes_back_one_version_when_the_state_allows() {
    // v1 -> counter_layouts (same state version, one state added) -> back with
    // --to-previous: v1 runs again. Then v1 -> v2 (state version 1): going back is
    // refused, since v1 cannot read version 1 and no migrate in reverse exists.
    let dir = tempfile::tempdir().unwrap();
    let job = counting_job(dir.path(), "counter_v1.wasm", 2, Some(1000));
    let text = std::fs::read_to_string(&job)
        .unwrap()
        .replace(r#"component = "counter_v1.wasm""#, "component = \"counter_v1.wasm\"\nconfig = { layout = \"added\" }");
    std::fs::write(&job, text).unwrap();
    let child = start(&job, &[]);
    wait_running(dir.path(), "out.jsonl", 300);
    let upgrade = |args: &[&str]| {
        let output = weir(&[&["upgrade", "job.toml", "--operator", "count", "--probation", "0"], args].concat(), dir.path());
        (output.status.success(), stderr(&output))
    };
    let (ok, err) = upgrade(&["--component", guests::COUNTER_LAYOUTS]);
    assert!(ok, "{err}");
    let (ok, err) = upgrade(&["--to-previous"]);
    assert!(ok, "{err}");
    let (ok, err) = upgrade(&["--component", guests::COUNTER_V2]);
    assert!(ok, "{err}");
    let (ok, err) = upgrade(&["--to-previous"]);
    assert!(!ok);
    assert!(err.contains("the saved state is at version 1 but the component declares version 0"), "{err}");
    let run = child.wait_with_output().unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    let history = history(dir.path());
    let steps: Vec<(String, String)> = history["upgrades"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            let name = |c: &serde_json::Value| c["path"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
            (name(&u["from"]), name(&u["to"]))
        })
        .collect();
    let expected = [("counter_v1.wasm", "counter_layouts.wasm"), ("counter_layouts.wasm", "counter_v1.wasm"), ("counter_v1.wasm", "counter_v2.wasm")];
    assert_eq!(steps, expected.map(|(a, b)| (a.to_string(), b.to_string())), "{history}");
}

#[test]
fn a_crash_during_a_live_upgrades_background_migration_restores_exactly() {
    // v1 builds state for about 19 000 of 30 000 keys; a live upgrade to v2 (no
    // probation) migrates a few keys at the swap and the rest in the background (about
    // 600 ms), with checkpoints every 50 ms. Killed once a checkpoint holds the migration
    // in progress,
    // the restart runs v2 (the history says it stayed) and goes on with the migration
    // where the checkpoint's cursor says: every key's counts go on exactly.
    let (keys, count) = (30_000, 45_000);
    let reference = tempfile::tempdir().unwrap();
    v2_reference(reference.path(), keys, count);
    let dir = tempfile::tempdir().unwrap();
    let settings = r#"checkpoint = { interval_ms = 50, dir = "checkpoints" }"#;
    // Slow enough that the upgrade request arrives before the input ends on a loaded
    // machine (at 10 000 events/s it did not always).
    let job = counting_job_with(dir.path(), "counter_v1.wasm", 1, Some(6_000), keys, count, settings);
    let first = start(&job, &[]);
    wait_running(dir.path(), "out.jsonl", 30_000);
    let upgrade = weir(
        &["upgrade", "job.toml", "--operator", "count", "--component", guests::COUNTER_V2, "--probation", "0"],
        dir.path(),
    );
    assert!(upgrade.status.success(), "{}", stderr(&upgrade));
    kill_mid_migration(first, dir.path());
    let job = counting_job_with(dir.path(), "counter_v1.wasm", 1, None, keys, count, settings);
    let resumed = weir(&["run", job.to_str().unwrap(), "--plugin-dir", guests::GUEST_DIR, "--log=weir=info"], dir.path());
    let log = stderr(&resumed);
    assert!(resumed.status.success(), "{log}");
    assert!(log.contains("running the component a live upgrade installed") && log.contains("resuming a state migration"), "{log}");
    assert_upgraded(&dir.path().join("out.jsonl"), &reference.path().join("out.jsonl"));
}
