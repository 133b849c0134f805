//! Whole jobs of real Wasm components, checked against the examples' expected output.

mod common;

use std::process::Command;

use common::*;

/// Every example at parallelism 1 and 4 produces exactly its expected output: event
/// time, out-of-order input, timers and key groups do not depend on how the keys are
/// spread over subtasks.
fn check_example(name: &str, outputs: &[(&str, &str)]) {
    check_example_with(name, outputs, false);
}

/// As [`check_example`]; with `in_order`, the expected files hold Flink's records in
/// the order Flink emitted them, and each key's records must come in that order.
fn check_example_with(name: &str, outputs: &[(&str, &str)], in_order: bool) {
    for parallelism in [1, 4] {
        let out = tempfile::tempdir().unwrap();
        let spec = with_parallelism(example(name, out.path()), parallelism);
        let summary = run(spec).unwrap_or_else(|e| panic!("{name} at p={parallelism}: {e}"));
        assert!(!summary.cancelled);
        for (file, expected_file) in outputs {
            assert_eq!(
                sorted_lines(&out.path().join(file)),
                expected(name, expected_file),
                "{name} at parallelism {parallelism}: {file}"
            );
            if in_order {
                assert_same_per_key(
                    &per_key_sequences(&out.path().join(file)),
                    &per_key_sequences(&root().join("examples").join(name).join(expected_file)),
                    &format!("{name} at parallelism {parallelism}: {file}, each key's records in Flink's order"),
                );
            }
        }
    }
}

// The expected files of word-count, sessions and login-anomaly are Apache Flink 2.3's
// output for the same logic with Flink's keyed state, timers and watermarks
// (bench/flink/KeyedReference.java, `scripts/flink-reference`).

#[test]
fn word_count_counts_every_word() {
    check_example_with("word-count", &[("counts.jsonl", "expected.jsonl")], true);
}


#[test]
fn sessions_close_after_inactivity_and_at_end_of_input() {
    // Each click deletes the session's closing timer and registers a later one; the
    // last sessions close only because the end of input sends the final watermark.
    check_example_with("sessions", &[("sessions.jsonl", "expected.jsonl")], true);
}

#[test]
fn tumbling_windows_fire_on_watermarks_and_late_events_are_routed() {
    check_example(
        "tumbling-count",
        &[("windows.jsonl", "expected.jsonl"), ("late.jsonl", "expected-late.jsonl")],
    );
    let out = tempfile::tempdir().unwrap();
    let summary = run(example("tumbling-count", out.path())).unwrap();
    let count = summary.node("count").unwrap();
    assert_eq!((count.late_routed, count.late_dropped), (3, 0));
    assert_eq!(summary.node("late").unwrap().records_in, 3);
}

#[test]
fn window_examples_match_flink() {
    // The expected files are Apache Flink 2.3's output for the same windows on the
    // same input (scripts/flink-reference): tumbling, sliding and session windows,
    // allowed lateness with late firings, and the late side output.
    check_example(
        "log-metrics",
        &[
            ("actions.jsonl", "expected-actions.jsonl"),
            ("latency.jsonl", "expected-latency.jsonl"),
            ("sessions.jsonl", "expected-sessions.jsonl"),
            ("summaries.jsonl", "expected-summaries.jsonl"),
            // Count windows: no Flink reference here; the expected file is the average
            // of each user's consecutive 10 actions, computed from the input directly.
            ("per10.jsonl", "expected-per10.jsonl"),
        ],
    );
    // The Rust process window function sees exactly the sessions Flink counts.
    let summaries: std::collections::BTreeSet<_> = expected("log-metrics", "expected-summaries.jsonl")
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["user_id"].to_string(), v["session_start"].as_i64(), v["session_end"].as_i64(), v["actions"].as_u64())
        })
        .collect();
    let flink: std::collections::BTreeSet<_> = expected("log-metrics", "expected-sessions.jsonl")
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["key"].to_string(), v["window_start"].as_i64(), v["window_end"].as_i64(), v["count"].as_u64())
        })
        .collect();
    assert_eq!(summaries, flink);
    check_example("orders", &[("revenue.jsonl", "expected-revenue.jsonl"), ("late.jsonl", "expected-late.jsonl")]);
    let out = tempfile::tempdir().unwrap();
    let summary = run(example("orders", out.path())).unwrap();
    assert_eq!(summary.node("revenue").unwrap().late_routed, 6);
    // Late firings: some windows were emitted more than once, each time with a larger total.
    let revenue = sorted_lines(&out.path().join("revenue.jsonl"));
    let windows: std::collections::BTreeSet<_> = revenue
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["key"].to_string(), v["window_start"].as_i64().unwrap())
        })
        .collect();
    assert!(windows.len() < revenue.len(), "no late firing in the orders example");
}

#[test]
fn late_events_without_a_late_route_are_dropped_and_counted() {
    let out = tempfile::tempdir().unwrap();
    let mut spec = example("tumbling-count", out.path());
    spec.edges.retain(|e| e.output.is_none());
    spec.sinks.retain(|s| s.uid() != "late");
    let summary = run(spec).unwrap();
    let count = summary.node("count").unwrap();
    assert_eq!((count.late_routed, count.late_dropped), (0, 3));
    assert_eq!(sorted_lines(&out.path().join("windows.jsonl")), expected("tumbling-count", "expected.jsonl"));
}

#[test]
fn the_tutorials_python_functions_run_unchanged() {
    // PyFlink's AnomalyDetector and UserMetricsCalculator from the tutorials, built with
    // the Python SDK; their output equals the same classes run by plain CPython over the
    // input with per-key dictionaries for state.
    for parallelism in [1, 4] {
        let out = tempfile::tempdir().unwrap();
        let mut spec = with_parallelism(example("python-log-analyzer", out.path()), parallelism);
        spec.operators[0].component = Some(guests::PY_ANOMALY.into());
        spec.operators[1].component = Some(guests::PY_METRICS.into());
        run(spec).unwrap();
        assert_eq!(
            sorted_lines(&out.path().join("alerts.jsonl")),
            expected("python-log-analyzer", "expected-alerts.jsonl"),
            "p={parallelism}"
        );
        assert_eq!(
            sorted_lines(&out.path().join("metrics.jsonl")),
            expected("python-log-analyzer", "expected-metrics.jsonl"),
            "p={parallelism}"
        );
    }
}

#[test]
fn the_tutorials_user_profiler_runs_with_its_dataclasses() {
    // RealTimeUserProfiler with UserEvent and UserProfile dataclasses (collected as
    // JSON objects); the expected profiles are the same code's under plain CPython.
    for parallelism in [1, 3] {
        let out = tempfile::tempdir().unwrap();
        let mut spec = with_parallelism(example("python-recommendations", out.path()), parallelism);
        spec.operators[0].component = Some(guests::PY_PROFILER.into());
        run(spec).unwrap();
        assert_eq!(
            sorted_lines(&out.path().join("profiles.jsonl")),
            expected("python-recommendations", "expected-profiles.jsonl"),
            "p={parallelism}"
        );
    }
}

#[test]
fn the_anomaly_detector_in_javascript_alerts_as_in_python() {
    for parallelism in [1, 3] {
        let out = tempfile::tempdir().unwrap();
        let mut spec = with_parallelism(example("js-log-analyzer", out.path()), parallelism);
        spec.operators[0].component = Some(guests::JS_ANOMALY.into());
        run(spec).unwrap();
        assert_eq!(
            sorted_lines(&out.path().join("alerts.jsonl")),
            expected("python-log-analyzer", "expected-alerts.jsonl"),
            "p={parallelism}"
        );
    }
}

#[test]
fn the_anomaly_detector_in_c_alerts_as_in_python() {
    for parallelism in [1, 3] {
        let out = tempfile::tempdir().unwrap();
        let mut spec = with_parallelism(example("c-log-analyzer", out.path()), parallelism);
        spec.operators[0].component = Some(guests::C_ANOMALY.into());
        run(spec).unwrap();
        assert_eq!(
            sorted_lines(&out.path().join("alerts.jsonl")),
            expected("python-log-analyzer", "expected-alerts.jsonl"),
            "p={parallelism}"
        );
    }
}

#[test]
fn login_anomaly_alerts_once_per_burst() {
    // The example prints to stdout; here its alerts go to a file.
    for parallelism in [1, 4] {
        let out = tempfile::tempdir().unwrap();
        let mut spec = with_parallelism(example("login-anomaly", out.path()), parallelism);
        spec.sinks = vec![weir::job::spec::SinkSpec::File {
            uid: "alerts".into(),
            path: out.path().join("alerts.jsonl"),
            format: Default::default(),
        }];
        run(spec).unwrap();
        // Flink's alerts (the expected file), each user's in Flink's order.
        assert_same_per_key(
            &per_key_sequences(&out.path().join("alerts.jsonl")),
            &per_key_sequences(&root().join("examples/login-anomaly/expected.jsonl")),
            &format!("parallelism {parallelism}"),
        );
    }
}

#[test]
fn the_login_anomaly_example_runs_from_the_command_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "examples/login-anomaly/job.toml", "--plugin-dir", guests::GUEST_DIR])
        .current_dir(root())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let mut alerts: Vec<String> =
        String::from_utf8(output.stdout).unwrap().lines().map(str::to_string).collect();
    alerts.sort();
    assert_eq!(alerts, expected("login-anomaly", "expected.jsonl"));
    // The summary: records in and out per node.
    assert!(stderr.contains("job `login-anomaly` finished"), "{stderr}");
    let detect = stderr.lines().find(|l| l.trim_start().starts_with("detect")).unwrap();
    let numbers: Vec<&str> = detect.split_whitespace().collect();
    assert_eq!(&numbers[1..5], ["operator", "2", "29", "3"], "{detect}");
}

#[test]
fn wasm_and_native_keyed_count_agree() {
    let mut outputs = Vec::new();
    for native in [false, true] {
        let out = tempfile::tempdir().unwrap();
        let mut spec = example("keyed-count", out.path());
        if native {
            spec.operators[0].component = None;
            spec.operators[0].native = Some("keyed-count".into());
        }
        let summary = run(spec).unwrap();
        assert_eq!(summary.node("counts").unwrap().records_in, 10_000);
        outputs.push(sorted_lines(&out.path().join("counts.jsonl")));
    }
    assert_eq!(outputs[0], outputs[1]);
    // The final count of every key adds up to the number of events.
    let mut last = std::collections::HashMap::new();
    for line in &outputs[0] {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let (key, count) = (v["key"].as_str().unwrap().to_string(), v["count"].as_u64().unwrap());
        let entry = last.entry(key).or_insert(0);
        *entry = (*entry).max(count);
    }
    assert_eq!(last.len(), 100);
    assert_eq!(last.values().sum::<u64>(), 10_000);
}

/// Sinks and operators hand the events they are done with back to their producer,
/// which fills them again (`stream::Spares`): 60 000 events through a Wasm keyed count,
/// many times the buffers in circulation, with keys and counts of changing lengths,
/// must come out exactly as computed here from the generator, line for line and in
/// order; and the generator's own events, through a file sink, byte for byte.
#[test]
fn recycled_buffers_carry_exactly_what_was_sent() {
    const COUNT: u64 = 60_000;
    let dir = tempfile::tempdir().unwrap();
    let spec = job(
        &format!(
            r#"
            name = "recycling"
            [[source]]
            type = "generator"
            uid = "events"
            count = {COUNT}
            keys = 1000
            seed = 9
            [[operator]]
            uid = "count"
            component = "keyed_count.wasm"
            [[sink]]
            type = "file"
            uid = "counts"
            path = "counts.jsonl"
            [[sink]]
            type = "file"
            uid = "raw"
            path = "raw.jsonl"
            [[edge]]
            from = "events"
            to = "count"
            partition = "keyed"
            [[edge]]
            from = "count"
            to = "counts"
            [[edge]]
            from = "events"
            to = "raw"
            "#
        ),
        dir.path(),
    );
    run(spec).unwrap();
    let generator = weir::source::GeneratorSource::new("g", Some(COUNT), None, 1000, 9, 0, 1).unwrap();
    let mut counts = std::collections::HashMap::<String, u64>::new();
    let (mut expected_counts, mut expected_raw) = (String::new(), String::new());
    for seq in 0..COUNT {
        let event = generator.event(seq);
        let key = String::from_utf8(event.key.unwrap()).unwrap();
        let count = counts.entry(key.clone()).or_default();
        *count += 1;
        expected_counts.push_str(&format!("{{\"key\":\"{key}\",\"count\":{count}}}\n"));
        expected_raw.push_str(std::str::from_utf8(&event.value).unwrap());
        expected_raw.push('\n');
    }
    let raw = std::fs::read_to_string(dir.path().join("raw.jsonl")).unwrap();
    assert!(raw == expected_raw, "the generator's events differ from what it made (first line: {:?})", raw.lines().next());
    let got = std::fs::read_to_string(dir.path().join("counts.jsonl")).unwrap();
    for (line, (got, expected)) in got.lines().zip(expected_counts.lines()).enumerate() {
        assert_eq!(got, expected, "line {}", line + 1);
    }
    assert_eq!(got.lines().count(), COUNT as usize);
}

#[test]
fn events_are_partitioned_by_key_group_across_subtasks() {
    // At parallelism 4 each key is counted by exactly one subtask: running counts per
    // key are 1, 2, 3, ... with no gaps or repeats.
    let out = tempfile::tempdir().unwrap();
    let spec = with_parallelism(example("keyed-count", out.path()), 4);
    run(spec).unwrap();
    let mut per_key: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for line in sorted_lines(&out.path().join("counts.jsonl")) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        per_key.entry(v["key"].as_str().unwrap().into()).or_default().push(v["count"].as_u64().unwrap());
    }
    for (key, mut counts) in per_key {
        counts.sort();
        assert_eq!(counts, (1..=counts.len() as u64).collect::<Vec<_>>(), "key {key}");
    }
}

#[test]
fn state_with_a_time_to_live_expires_while_the_job_runs() {
    // Two lines a second; counts live one second. `b` comes back within a second and
    // keeps counting; `a` comes back after 2.5 s and starts over.
    let dir = tempfile::tempdir().unwrap();
    write_input(
        dir.path(),
        "input.jsonl",
        &[
            r#"{"k":"a"}"#, r#"{"k":"b"}"#, r#"{"k":"b"}"#, r#"{"k":"c"}"#, r#"{"k":"c"}"#, r#"{"k":"a"}"#,
        ],
    );
    for backend in ["memory", "rocksdb"] {
        let spec = job(
            &format!(
                r#"
                name = "ttl"
                state = {{ backend = "{backend}" }}
                [[source]]
                type = "file"
                uid = "in"
                path = "input.jsonl"
                key_field = "k"
                rate = 2
                [[operator]]
                uid = "count"
                component = "keyed_count.wasm"
                config = {{ ttl_ms = 1000 }}
                [[sink]]
                type = "file"
                uid = "out"
                path = "out-{backend}.jsonl"
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
        );
        run(spec).unwrap();
        let text = std::fs::read_to_string(dir.path().join(format!("out-{backend}.jsonl"))).unwrap();
        let counts: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!("{}{}", v["key"].as_str().unwrap(), v["count"])
            })
            .collect();
        assert_eq!(counts, ["a1", "b1", "b2", "c1", "c2", "a1"], "{backend}");
    }
}

#[test]
fn processing_time_windows_fire_exactly_on_a_clock_that_follows_the_records() {
    // TumblingProcessingTimeWindows.of(100 ms) on the test clock
    // (`processing_clock = "records"`): each subtask's processing time is the timestamp
    // of the record it is about to process, so the output is exact. An element goes to
    // the window of the moment it is processed; the window fires once the clock has
    // passed its last millisecond (Flink fires a processing-time timer at T once the
    // clock reaches T + 1), before the record that moved the clock; windows still open
    // when the input ends do not fire (as in Flink).
    for parallelism in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let input = [("a", 0), ("b", 10), ("a", 50), ("a", 99), ("b", 100), ("c", 150), ("a", 250), ("b", 260), ("c", 420), ("a", 1000), ("b", 1000), ("c", 1000)];
        let lines: Vec<String> = input.iter().map(|(k, ts)| format!(r#"{{"k":"{k}","ts":{ts}}}"#)).collect();
        write_input(dir.path(), "input.jsonl", &lines.iter().map(String::as_str).collect::<Vec<_>>());
        let spec = job(
            &format!(
                r#"
                name = "processing-time"
                processing_clock = "records"
                [[source]]
                type = "file"
                uid = "events"
                path = "input.jsonl"
                key_field = "k"
                timestamp_field = "ts"
                [[operator]]
                uid = "count"
                parallelism = {parallelism}
                window = {{ type = "tumbling", time = "processing", size_ms = 100, aggregate = {{ builtin = "count" }} }}
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
            dir.path(),
        );
        run(spec).unwrap();
        let window = |key: &str, start: i64, count: u64| {
            format!(r#"{{"key":"{key}","window_start":{start},"window_end":{},"count":{count}}}"#, start + 100)
        };
        // In the order one subtask fires them. Every key's last record (at 1000) moves
        // its subtask's clock past every window opened before, so every subtask fires
        // the same windows whatever keys it has.
        let mut expected = vec![
            window("a", 0, 3),
            window("b", 0, 1),
            window("b", 100, 1),
            window("c", 100, 1),
            window("a", 200, 1),
            window("b", 200, 1),
            window("c", 400, 1),
        ];
        let text = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
        let mut got: Vec<String> = text.lines().map(str::to_string).collect();
        if parallelism == 1 {
            // One subtask: this exact order, timers due at one time in key order.
            assert_eq!(got, expected);
        }
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "parallelism {parallelism}");
    }
}
