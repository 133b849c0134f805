//! Bad input gets a clear error and loses nothing: malformed records, guests that trap,
//! loop, exhaust memory or break the contract, and components or job files that are
//! wrong. The host survives each one and says what went wrong and where.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use weir::job::spec::BackendKind;
use weir::{Job, JobError, JobOptions};

/// A job reading `input.jsonl` in `dir` into the faulty guest (mode `mode`) and on to
/// `out.jsonl`.
fn faulty_job(dir: &Path, mode: &str, extra_operator: &str, edge: &str) -> weir::JobSpec {
    job(
        &format!(
            r#"
            name = "faulty"
            [[source]]
            type = "file"
            uid = "in"
            path = "input.jsonl"
            key_field = "id"
            timestamp_field = "ts"
            [[operator]]
            uid = "faulty"
            component = "faulty.wasm"
            config = {{ mode = "{mode}" }}
            {extra_operator}
            [[sink]]
            type = "file"
            uid = "out"
            path = "out.jsonl"
            [[edge]]
            from = "in"
            to = "faulty"
            {edge}
            [[edge]]
            from = "faulty"
            to = "out"
            "#
        ),
        dir,
    )
}

const INPUT: &[&str] = &[
    r#"{"id":"a","ts":1,"v":"ok"}"#,
    r#"{"id":"b","ts":2,"v":"ok"}"#,
    r#"{"id":"c","ts":3,"v":"ok"}"#,
    r#"{"id":"d","ts":4,"v":"boom"}"#,
    r#"{"id":"e","ts":5,"v":"ok"}"#,
];

/// Runs the faulty guest in `mode` over [`INPUT`] and returns the error message and
/// the output lines written before the failure.
fn fail_with(mode: &str, extra_operator: &str, edge: &str) -> (String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path(), "input.jsonl", INPUT);
    let error = run(faulty_job(dir.path(), mode, extra_operator, edge)).expect_err("the job must fail");
    assert!(matches!(error, JobError::Failed { .. }), "{error:?}");
    (error.to_string(), sorted_lines(&dir.path().join("out.jsonl")))
}

/// What a failed job wrote: only output of elements before the failing one, in order
/// (a batch of contract 0.3 that trapped without saying where delivers none of its
/// output: it takes effect as a whole).
fn assert_prefix_of(written: &[String], before_failure: &[&str]) {
    assert!(
        written.len() <= before_failure.len() && written.iter().zip(before_failure).all(|(w, b)| w == b),
        "{written:?} is not a prefix of {before_failure:?}"
    );
}

fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "expected {part:?} in: {text}");
    }
}

#[test]
fn a_panicking_guest_is_reported_with_uid_subtask_position_and_message() {
    let (error, written) = fail_with("panic", "", "");
    assert_contains(
        &error,
        &["operator `faulty` subtask 0", "input.jsonl line 4", "boom element reached the faulty operator"],
    );
    // The three elements before the bad one were written out before the job stopped.
    assert_eq!(written, &INPUT[..3]);
}

#[test]
fn an_error_returned_by_the_guest_stops_the_job_with_its_message() {
    let (error, _) = fail_with("error", "", "");
    assert_contains(&error, &["operator `faulty`", "line 4", "cannot handle a boom element"]);
}

#[test]
fn an_endless_loop_hits_the_call_deadline() {
    let (error, written) = fail_with("loop", "limits = { call_timeout_ms = 300 }", "");
    assert_contains(&error, &["operator `faulty`", "deadline of 300 ms"]);
    assert_names_line(&error, 4);
    assert_prefix_of(&written, &INPUT[..3]);
}

#[test]
fn exhausting_memory_hits_the_memory_limit() {
    let (error, _) = fail_with("oom", "limits = { memory_mib = 32 }", "");
    assert_contains(&error, &["operator `faulty`", "memory limit of 32 MiB"]);
    assert_names_line(&error, 4);
}

#[test]
fn keyed_state_without_a_key_traps_with_advice() {
    let (error, _) = fail_with("unkeyed-state", "", "");
    assert_contains(&error, &["line 4", "without a current key", "keyed edge"]);
}

#[test]
fn a_guest_emitting_without_bound_is_stopped() {
    let (error, _) = fail_with("flood", "", "");
    assert_contains(&error, &["line 4", "emitted more than 100000 events"]);
}

#[test]
fn a_guest_sleeping_in_a_wasi_call_is_held_to_its_deadline() {
    // An hour's `thread::sleep` blocks in the host's WASI clock, out of reach of the
    // epoch check: the sleep is cut at the call deadline and the deadline stops it.
    let (error, written) = fail_with("sleep", "limits = { call_timeout_ms = 500 }", "");
    assert_contains(&error, &["operator `faulty`", "deadline of 500 ms"]);
    assert_names_line(&error, 4);
    assert_prefix_of(&written, &INPUT[..3]);
}

#[test]
fn stopping_a_job_does_not_wait_for_a_sleeping_guest() {
    // With an hour-long deadline, the guest's hour-long sleep is cut by the stop.
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path(), "input.jsonl", INPUT);
    let job = Job::new(faulty_job(dir.path(), "sleep", "limits = { call_timeout_ms = 3600000 }", ""), &options()).unwrap();
    let control = job.control();
    let running = std::thread::spawn(move || job.run());
    // The input is five lines: a second in, the guest is asleep in the fourth.
    std::thread::sleep(std::time::Duration::from_secs(1));
    control.stop();
    let summary = running.join().unwrap().expect("a stop is not a failure");
    assert!(summary.cancelled);
    assert_prefix_of(&sorted_lines(&dir.path().join("out.jsonl")), &INPUT[..3]);
}

#[test]
fn endless_recursion_is_reported_as_a_stack_overflow() {
    let (error, _) = fail_with("recurse", "", "");
    assert_contains(&error, &["operator `faulty`", "stack overflow"]);
    assert_names_line(&error, 4);
}

#[test]
fn timers_are_bounded_per_key_and_per_subtask() {
    // A guest registering a million timers for one element is stopped at the budget,
    // naming the setting and the key, before the host grows.
    let keyed = "partition = \"keyed\"";
    let (error, _) = fail_with("timers", "", keyed);
    assert_contains(&error, &["line 4", "limits.timers_per_key (10000 pending timers for one key)", "key \"d\""]);
    let (error, _) = fail_with("timers", "limits = { timers = 500 }", keyed);
    assert_contains(&error, &["line 4", "limits.timers (500 pending timers per subtask)"]);
}

#[test]
fn state_is_bounded_per_entry_and_per_subtask() {
    // 15 MB list items without end: one key's list stops at limits.key_state_mib
    // (64 MiB by default), with the key.
    let keyed = "partition = \"keyed\"";
    let (error, written) = fail_with("state-bomb", "", keyed);
    assert_contains(&error, &["line 4", "state budget exceeded", "limits.key_state_mib", "key \"d\""]);
    assert_prefix_of(&written, &INPUT[..3]);
    // 1 MB map entries without end: the subtask's state stops at limits.state_mib, in
    // memory and in RocksDB (checked in steps there).
    for backend in ["memory", "rocksdb"] {
        let dir = tempfile::tempdir().unwrap();
        write_input(dir.path(), "input.jsonl", INPUT);
        let mut spec = faulty_job(dir.path(), "map-bomb", "limits = { state_mib = 32 }", keyed);
        spec.state.backend = if backend == "memory" { BackendKind::Memory } else { BackendKind::Rocksdb };
        let error = run(spec).expect_err("the job must fail").to_string();
        assert_contains(&error, &["line 4", "state budget exceeded", "limits.state_mib allows (33554432 bytes)"]);
    }
}

#[test]
fn a_guest_that_fails_to_open_fails_the_job_at_start() {
    let (error, written) = fail_with("fail-open", "", "");
    assert_contains(&error, &["operator `faulty` subtask 0 failed while opening", "mode = fail-open"]);
    assert!(written.is_empty());
}

#[test]
fn malformed_lines_fail_the_job_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path(), "input.jsonl", &[INPUT[0], r#"{"id":"x","ts":"#, INPUT[1]]);
    let error = run(faulty_job(dir.path(), "none", "", "")).unwrap_err().to_string();
    assert_contains(&error, &["input.jsonl line 2", "invalid JSON", "on_error = \"skip\""]);
}

#[test]
fn malformed_lines_are_skipped_and_counted_when_the_policy_says_skip() {
    let dir = tempfile::tempdir().unwrap();
    write_input(
        dir.path(),
        "input.jsonl",
        &[INPUT[0], r#"not json"#, r#"{"ts":9}"#, INPUT[1], r#"{"id":"z","ts":"late"}"#],
    );
    let mut spec = faulty_job(dir.path(), "none", "", "");
    spec.on_error = weir::job::spec::ErrorPolicy::Skip;
    let summary = run(spec).unwrap();
    assert_eq!(summary.node("in").unwrap().skipped, 3);
    assert_eq!(sorted_lines(&dir.path().join("out.jsonl")), &INPUT[..2]);
}

#[test]
fn malformed_and_oversized_lines_go_to_the_dead_letter_output_with_where_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!("{{\"id\":\"big\",\"ts\":5,\"pad\":\"{}\"}}", "x".repeat(300));
    write_input(dir.path(), "input.jsonl", &[INPUT[0], "not json", &long, INPUT[1], r#"{"id":"z","ts":"late"}"#]);
    let text = format!(
        r#"
        name = "dead-letters"
        [[source]]
        type = "file"
        uid = "in"
        path = "input.jsonl"
        key_field = "id"
        timestamp_field = "ts"
        max_record_bytes = 200
        [[sink]]
        type = "file"
        uid = "out"
        path = "out.jsonl"
        [[sink]]
        type = "file"
        uid = "dead"
        path = "dead.jsonl"
        format = "envelope"
        [[edge]]
        from = "in"
        to = "out"
        [[edge]]
        from = "in"
        output = "dlq"
        to = "dead"
        "#
    );
    // The job's policy says fail, but the dead-letter output takes what is malformed.
    let summary = run(common::job(&text, dir.path())).unwrap();
    assert_eq!(summary.node("in").unwrap().dead_lettered, 3);
    assert_eq!(summary.node("in").unwrap().skipped, 0);
    assert_eq!(sorted_lines(&dir.path().join("out.jsonl")), &INPUT[..2]);

    let letters: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("dead.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let header = |i: usize, name: &str| letters[i]["headers"][name].as_str().unwrap_or_default().to_string();
    assert_eq!(letters.len(), 3, "{letters:?}");
    // The original bytes, as they were read.
    assert_eq!(letters[0]["value"], "not json");
    assert_eq!(header(0, "weir.error.origin"), "in");
    assert!(header(0, "weir.error.position").ends_with("input.jsonl line 2"), "{}", header(0, "weir.error.position"));
    assert!(header(0, "weir.error").contains("invalid JSON"), "{}", header(0, "weir.error"));
    assert!(header(0, "weir.error.time").parse::<i64>().unwrap() > 1_600_000_000_000);
    // An oversized line: its beginning, and why.
    assert!(header(1, "weir.error.position").ends_with("input.jsonl line 3"), "{}", header(1, "weir.error.position"));
    assert!(header(1, "weir.error").contains("more than 200 bytes"), "{}", header(1, "weir.error"));
    assert!(letters[1]["value"].as_str().unwrap().starts_with("{\"id\":\"big\""));
    assert!(header(2, "weir.error.position").ends_with("input.jsonl line 5"), "{}", header(2, "weir.error.position"));
    assert_eq!(letters[2]["value"]["ts"], "late");
}

#[test]
fn an_operator_that_skips_failed_elements_sends_them_to_its_dead_letter_output() {
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path(), "input.jsonl", INPUT);
    let mut spec = faulty_job(dir.path(), "error", "on_error = \"skip\"", "");
    spec.sinks.push(weir::job::spec::SinkSpec::File {
        uid: "dead".into(),
        path: dir.path().join("dead.jsonl"),
        format: weir::job::spec::SinkFormat::Envelope,
    });
    let mut edge = spec.edges[1].clone();
    edge.to = "dead".into();
    edge.output = Some("dlq".into());
    spec.edges.push(edge);
    let summary = run(spec).unwrap();
    assert_eq!(summary.node("faulty").unwrap().dead_lettered, 1);
    // Every other element went on, the one after the failure included.
    let out = sorted_lines(&dir.path().join("out.jsonl"));
    assert_eq!(out.len(), 4, "{out:?}");
    assert!(out.iter().all(|l| !l.contains("boom")) && out.iter().any(|l| l.contains("\"e\"")), "{out:?}");
    let letters = std::fs::read_to_string(dir.path().join("dead.jsonl")).unwrap();
    let letter: serde_json::Value = serde_json::from_str(letters.trim()).unwrap();
    assert_eq!(letter["value"]["v"], "boom", "the element as it came: {letter}");
    assert_eq!(letter["headers"]["weir.error.origin"], "faulty");
    assert!(letter["headers"]["weir.error"].as_str().unwrap().contains("cannot handle a boom element"), "{letter}");
    assert!(letter["headers"]["weir.error.position"].as_str().unwrap().ends_with("input.jsonl line 4"), "{letter}");

    // Without a dead-letter output the element is counted as skipped.
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path(), "input.jsonl", INPUT);
    let summary = run(faulty_job(dir.path(), "error", "on_error = \"skip\"", "")).unwrap();
    assert_eq!(summary.node("faulty").unwrap().skipped, 1);
    assert_eq!(sorted_lines(&dir.path().join("out.jsonl")).len(), 4);

    // A trap is not an error the operator returned: the job stops.
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path(), "input.jsonl", INPUT);
    let error = run(faulty_job(dir.path(), "panic", "on_error = \"skip\"", "")).unwrap_err().to_string();
    assert!(error.contains("input.jsonl line 4") || error.contains("input.jsonl lines"), "{error}");
}

#[test]
fn a_sinks_only_output_is_dlq_and_only_a_sink_that_refuses_rows_has_one() {
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path(), "input.jsonl", INPUT);
    let text = |output: &str| {
        format!(
            "name = \"j\"\n[[source]]\ntype = \"file\"\nuid = \"in\"\npath = \"input.jsonl\"\n\
             [[sink]]\ntype = \"file\"\nuid = \"out\"\npath = \"out.jsonl\"\n\
             [[sink]]\ntype = \"file\"\nuid = \"dead\"\npath = \"dead.jsonl\"\n\
             [[edge]]\nfrom = \"in\"\nto = \"out\"\n[[edge]]\nfrom = \"out\"\noutput = \"{output}\"\nto = \"dead\"\n"
        )
    };
    let error = weir::JobSpec::parse(&text("late"), dir.path()).unwrap_err().to_string();
    assert!(error.contains("a sink's only output is `dlq`"), "{error}");
    let spec = weir::JobSpec::parse(&text("dlq"), dir.path()).unwrap();
    let error = run(spec).unwrap_err().to_string();
    assert!(error.contains("sink `out`") && error.contains("only a postgres sink"), "{error}");
}

#[test]
fn events_without_a_key_on_a_keyed_edge_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path(), "input.jsonl", INPUT);
    let mut spec = faulty_job(dir.path(), "none", "", r#"partition = "keyed""#);
    if let weir::job::spec::SourceSpec::File { key_field, .. } = &mut spec.sources[0] {
        *key_field = None;
    }
    let error = run(spec).unwrap_err().to_string();
    assert_contains(&error, &["without a key on the keyed edge to `faulty`", "input.jsonl line 1"]);
}

fn weir(args: &[&str], dir: &Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_weir")).args(args).current_dir(dir).output().unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn the_cli_exits_non_zero_with_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_input(d, "input.jsonl", INPUT);
    let job_text = |component: &str| {
        format!(
            "name = \"j\"\n[[source]]\ntype = \"file\"\nuid = \"in\"\npath = \"input.jsonl\"\n\
             [[operator]]\nuid = \"op\"\ncomponent = \"{component}\"\n\
             [[sink]]\ntype = \"stdout\"\nuid = \"out\"\n\
             [[edge]]\nfrom = \"in\"\nto = \"op\"\n[[edge]]\nfrom = \"op\"\nto = \"out\"\n"
        )
    };

    std::fs::write(d.join("missing.toml"), job_text("nowhere.wasm")).unwrap();
    let (ok, stderr) = weir(&["run", "missing.toml"], d);
    assert!(!ok);
    assert_contains(&stderr, &["error: operator `op`: component `nowhere.wasm` not found", "--plugin-dir"]);

    std::fs::create_dir(d.join("crate.wasm")).unwrap();
    std::fs::write(d.join("dir.toml"), job_text("crate.wasm")).unwrap();
    let (ok, stderr) = weir(&["run", "dir.toml"], d);
    assert!(!ok);
    assert_contains(&stderr, &["crate.wasm is a directory, not a component", "weir build"]);

    std::fs::write(d.join("garbage.wasm"), "this is not wasm").unwrap();
    std::fs::write(d.join("garbage.toml"), job_text("garbage.wasm")).unwrap();
    let (ok, stderr) = weir(&["run", "garbage.toml"], d);
    assert!(!ok);
    assert_contains(&stderr, &["error: operator `op`: component", "garbage.wasm: cannot read or compile it"]);

    std::fs::write(d.join("other.toml"), job_text(guests::NOT_AN_OPERATOR)).unwrap();
    let (ok, stderr) = weir(&["check", "other.toml"], d);
    assert!(!ok);
    assert_contains(&stderr, &["does not implement the weir:operator/operator world of any contract version"]);

    // componentize-js's defaults import `wasi:http`: the error names the import, the
    // cause and the fix.
    std::fs::write(d.join("http.toml"), job_text(guests::JS_WITH_WASI_HTTP)).unwrap();
    let (ok, stderr) = weir(&["check", "http.toml"], d);
    assert!(!ok);
    assert_contains(&stderr, &["imports `wasi:http/", "componentize-js adds `wasi:http` by default", "guest-sdk/js/build.mjs"]);

    std::fs::write(d.join("typo.toml"), job_text("x.wasm").replace("uid = \"op\"", "uid = \"op\"\nparalelism = 2")).unwrap();
    let (ok, stderr) = weir(&["run", "typo.toml"], d);
    assert!(!ok);
    assert_contains(&stderr, &["typo.toml", "unknown field `paralelism`"]);

    let (ok, stderr) = weir(&["run", "no-such-job.toml"], d);
    assert!(!ok);
    assert_contains(&stderr, &["no-such-job.toml: cannot read it"]);

    // A trapping guest: non-zero exit after a clean shutdown, with the summary.
    std::fs::write(d.join("trap.toml"), job_text(guests::FAULTY)).unwrap();
    let (ok, stderr) = weir(&["run", "trap.toml"], d);
    assert!(!ok);
    assert_contains(&stderr, &["job `j`", "error: operator `op` subtask 0 failed while processing the element from", "line 4"]);
    assert!(!stderr.contains("panicked at host"), "the host must not panic: {stderr}");
}

#[test]
fn a_line_without_end_is_bounded_by_max_record_bytes() {
    // A file source on a stream with no newline (here /dev/zero) must not buffer it:
    // past `max_record_bytes` the line is a malformed record naming file and line.
    let dir = tempfile::tempdir().unwrap();
    let spec = job(
        r#"
        name = "endless-line"
        [[source]]
        type = "file"
        uid = "in"
        path = "/dev/zero"
        max_record_bytes = 65536
        [[sink]]
        type = "discard"
        uid = "out"
        [[edge]]
        from = "in"
        to = "out"
        "#,
        dir.path(),
    );
    // /dev/zero never ends, so with the default policy the first record fails the job.
    let error = run(spec).unwrap_err().to_string();
    assert_contains(&error, &["/dev/zero line 1", "a line of more than 65536 bytes", "max_record_bytes"]);

    // With `on_error = "skip"`, a long line is skipped and the lines around it kept.
    let long = "x".repeat(200_000);
    write_input(dir.path(), "input.jsonl", &[INPUT[0], &long, INPUT[1]]);
    let mut spec = faulty_job(dir.path(), "none", "", "");
    spec.on_error = weir::job::spec::ErrorPolicy::Skip;
    if let weir::job::spec::SourceSpec::File { max_record_bytes, .. } = &mut spec.sources[0] {
        *max_record_bytes = Some(1024);
    }
    let summary = run(spec).unwrap();
    assert_eq!(summary.node("in").unwrap().skipped, 1);
    assert_eq!(sorted_lines(&dir.path().join("out.jsonl")), &INPUT[..2]);
}

#[test]
fn weir_never_deletes_files_it_did_not_write() {
    // `checkpoint.dir = "."` (the job's own directory) with `--fresh` once deleted the
    // job file and its input; a state dir holding user data was wiped likewise. Now a
    // non-empty directory weir did not create is refused, and nothing in it is touched.
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path(), "input.jsonl", &INPUT[..3]);
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/users.csv"), "alice\n").unwrap();
    let pipeline = |settings: &str| {
        job(
            &format!(
                r#"
                name = "owned"
                {settings}
                [[source]]
                type = "file"
                uid = "in"
                path = "input.jsonl"
                key_field = "id"
                [[operator]]
                uid = "count"
                component = "keyed_count.wasm"
                [[sink]]
                type = "file"
                uid = "out"
                path = "out.jsonl"
                [[edge]]
                from = "in"
                to = "count"
                partition = "keyed"
                [[edge]]
                from = "count"
                to = "out"
                "#
            ),
            dir.path(),
        )
    };
    let fresh = || JobOptions { fresh: true, ..options() };
    for settings in [
        r#"checkpoint = { interval_ms = 50, dir = "." }"#,
        r#"checkpoint = { interval_ms = 50, dir = "data" }"#,
        "state = { backend = \"rocksdb\", dir = \"data\" }",
    ] {
        let error = Job::new(pipeline(settings), &fresh()).unwrap().run().unwrap_err().to_string();
        assert!(error.contains("not empty and weir did not create it"), "{settings}: {error}");
        assert!(error.contains("choose a new or empty directory"), "{settings}: {error}");
        assert_eq!(std::fs::read_to_string(dir.path().join("data/users.csv")).unwrap(), "alice\n");
        assert!(dir.path().join("input.jsonl").is_file());
    }
    // A directory weir creates is weir's: checkpoints and RocksDB state go there, and a
    // fresh start clears only weir's entries, not a file the user added since.
    let settings = "checkpoint = { interval_ms = 50, dir = \"ckpt\" }\nstate = { backend = \"rocksdb\", dir = \"db\" }";
    Job::new(pipeline(settings), &fresh()).unwrap().run().unwrap();
    assert!(dir.path().join("ckpt/.weir-owned").is_file() && dir.path().join("db/.weir-owned").is_file());
    // A finished job leaves no working database (nor RocksDB's LOCK files) behind, and
    // no checkpoint that never completed.
    let names = |d: &str| -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path().join(d)).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    assert_eq!(names("db"), [".weir-owned"]);
    for checkpoint in names("ckpt").iter().filter(|n| n.starts_with("chk-")) {
        assert!(dir.path().join("ckpt").join(checkpoint).join("_metadata").is_file(), "{checkpoint} is incomplete");
    }
    std::fs::write(dir.path().join("ckpt/notes.txt"), "mine").unwrap();
    Job::new(pipeline(settings), &fresh()).unwrap().run().unwrap();
    assert_eq!(std::fs::read_to_string(dir.path().join("ckpt/notes.txt")).unwrap(), "mine");
    assert_eq!(sorted_lines(&dir.path().join("out.jsonl")).len(), 3);
}

#[test]
fn a_control_address_left_by_a_killed_job_is_recognised_and_removed() {
    // SIGKILL leaves `control.addr` behind; `weir stop` must not take it for a job.
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path(), "input.jsonl", INPUT);
    let job = dir.path().join("job.toml");
    std::fs::write(&job, "name = \"stale\"\n[[source]]\ntype = \"file\"\nuid = \"in\"\npath = \"input.jsonl\"\n[[sink]]\ntype = \"discard\"\nuid = \"out\"\n[[edge]]\nfrom = \"in\"\nto = \"out\"\n").unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let address = dir.path().join(".weir/stale/control.addr");
    std::fs::create_dir_all(address.parent().unwrap()).unwrap();
    std::fs::write(&address, format!("127.0.0.1:9\n{}\n", gone.id())).unwrap();
    let (ok, stderr) = weir(&["stop", "job.toml"], dir.path());
    assert!(!ok);
    assert_contains(&stderr, &["no running job found", "has exited (removed it)"]);
    assert!(!address.exists());
    // A job that starts next to a stale file takes it over, and removes it on exit.
    std::fs::write(&address, format!("127.0.0.1:9\n{}\n", gone.id())).unwrap();
    let (ok, stderr) = weir(&["run", "job.toml", "--control", "127.0.0.1:0"], dir.path());
    assert!(ok, "{stderr}");
    assert!(!address.exists());
}

/// Runs `weir run` on `job` to success and returns its peak resident memory in MiB.
fn peak_rss_mib(job: &Path) -> u64 {
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "--fresh", "--plugin-dir", guests::GUEST_DIR])
        .arg(job)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    memory::reported_peak_mib(&stderr)
}

#[test]
fn large_records_into_a_slow_operator_keep_the_host_bounded() {
    // 160 MB of 4 MB records into an operator that takes 20 ms per record: channels
    // bounded in bytes hold the source back, so the host's peak memory grows by a few
    // channels' worth (channel_mib = 4), not by the input (as it once grew to 2.5 GB).
    let dir = tempfile::tempdir().unwrap();
    let job = |name: &str, records: usize| {
        let value = "x".repeat(4 << 20);
        let lines: Vec<String> = (0..records).map(|i| format!(r#"{{"id":"k{i}","v":"{value}"}}"#)).collect();
        std::fs::write(dir.path().join(format!("{name}.jsonl")), lines.join("\n") + "\n").unwrap();
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "name = \"{name}\"\nchannel_mib = 4\n[[source]]\ntype = \"file\"\nuid = \"in\"\npath = \"{name}.jsonl\"\n\
                 [[operator]]\nuid = \"slow\"\ncomponent = \"faulty.wasm\"\nconfig = {{ mode = \"slow\" }}\n\
                 [[sink]]\ntype = \"discard\"\nuid = \"out\"\n\
                 [[edge]]\nfrom = \"in\"\nto = \"slow\"\n[[edge]]\nfrom = \"slow\"\nto = \"out\"\n"
            ),
        )
        .unwrap();
        path
    };
    let one = job("one", 1);
    peak_rss_mib(&one); // compiles the component into the cache
    let baseline = peak_rss_mib(&one);
    let large = peak_rss_mib(&job("many", 40));
    eprintln!("peak RSS: {baseline} MiB with one record, {large} MiB with 40");
    assert!(large < baseline + 80, "{large} MiB peak against {baseline} MiB for one record: the input is buffered");
}

#[test]
fn a_guest_error_cannot_forge_log_lines() {
    // The guest returns "x\nerror: FORGED by the guest": its text is escaped in the
    // error, as its log lines are, so no line of weir's output starts with its forgery.
    let (error, _) = fail_with("forge", "", "");
    assert_contains(&error, &["operator `faulty` subtask 0", "x\\nerror: FORGED by the guest"]);
    assert!(!error.contains('\n'), "{error}");
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path(), "input.jsonl", INPUT);
    let spec = faulty_job(dir.path(), "forge", "", "");
    std::fs::write(dir.path().join("job.toml"), toml::to_string(&spec).unwrap()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "job.toml", "--plugin-dir", guests::GUEST_DIR])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("FORGED"), "{stderr}");
    assert!(!stderr.lines().any(|l| l.contains("FORGED") && !l.contains("x\\nerror: FORGED")), "{stderr}");
}

#[test]
fn a_guest_failing_in_snapshot_state_fails_the_job_naming_the_checkpoint_and_cause() {
    // Once, such a job failed at its next element with wasmtime's "cannot enter
    // component instance", the cause only in a warning.
    for (mode, limits, cause) in [
        ("snapshot-panic", "", "snapshot of checkpoint"),
        ("snapshot-loop", "limits = { call_timeout_ms = 300 }", "ran longer than its deadline of 300 ms"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_input(dir.path(), "input.jsonl", INPUT);
        let mut spec = faulty_job(dir.path(), mode, limits, "");
        if let weir::job::spec::SourceSpec::File { rate, .. } = &mut spec.sources[0] {
            *rate = Some(20.0);
        }
        spec.checkpoint = Some(weir::checkpoint::CheckpointSettings { interval_ms: 20, ..Default::default() });
        let error = run(spec).expect_err("the job must fail").to_string();
        assert_contains(&error, &["operator `faulty` subtask 0", "for checkpoint", "(snapshot-state)", cause]);
        assert!(!error.contains("cannot enter component instance"), "{mode}: {error}");
    }
}

#[test]
fn a_guest_that_misreports_how_many_elements_it_processed_is_stopped() {
    // process-batch returns how many elements it processed; the host checks that
    // against the elements the guest began, or it would resend elements (processing
    // them twice) or skip them.
    for mode in ["more", "fewer", "none"] {
        let dir = tempfile::tempdir().unwrap();
        write_input(dir.path(), "input.jsonl", INPUT);
        let operator = format!("uid = \"liar\"\ncomponent = \"liar.wasm\"\nconfig = {{ mode = \"{mode}\" }}");
        let error = run(file_pipeline(dir.path(), "liar", "", &operator)).expect_err("the job must fail").to_string();
        assert_contains(&error, &["operator `liar` subtask 0", "broke the contract", "process-batch reported", "but began"]);
    }
    // The same component telling the truth runs through.
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path(), "input.jsonl", INPUT);
    run(file_pipeline(dir.path(), "liar", "", "uid = \"liar\"\ncomponent = \"liar.wasm\"")).unwrap();
    assert_eq!(std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap().lines().collect::<Vec<_>>(), INPUT);
}
