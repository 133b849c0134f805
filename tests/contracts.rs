//! Contract versions and the batched data path, through whole jobs: components built
//! for contracts 0.1 and 0.2 run unchanged beside 0.3 ones, the batch size never changes what a
//! job outputs (event time, timers and late data behave as if every element travelled
//! alone), channels bound the host's memory in bytes, and compiled components are
//! cached between starts.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use weir::plugin::{CompileCache, Compiled, Runtime};

/// A component built by the weir SDK of contract 0.1, committed as it was built.
fn contract_0_1(name: &str) -> PathBuf {
    root().join("tests/fixtures/contract-0.1").join(name)
}

/// A component built by the Rust SDK of contract 0.2, committed as it was built.
fn contract_0_2(name: &str) -> PathBuf {
    root().join("tests/fixtures/contract-0.2").join(name)
}

fn login_job(component: &Path, parallelism: u32, dir: &Path) -> weir::JobSpec {
    let input = root().join("examples/login-anomaly/input.jsonl");
    job(
        &format!(
            r#"
            name = "login-anomaly"
            [[source]]
            type = "file"
            uid = "logins"
            path = {input:?}
            key_field = "user"
            timestamp_field = "ts"
            watermark = {{ max_out_of_orderness_ms = 30000 }}
            [[operator]]
            uid = "detect"
            component = {component:?}
            parallelism = {parallelism}
            config = {{ threshold = 5, window_ms = 300000 }}
            [[sink]]
            type = "file"
            uid = "alerts"
            path = "alerts.jsonl"
            [[edge]]
            from = "logins"
            to = "detect"
            partition = "keyed"
            [[edge]]
            from = "detect"
            to = "alerts"
            "#
        ),
        dir,
    )
}

#[test]
fn components_built_for_contracts_0_1_and_0_2_run_unchanged_beside_0_3_ones() {
    let runtime = Runtime::with_cache(None).unwrap();
    let versions = [
        (contract_0_1("login_anomaly.wasm"), "0.1.0"),
        (contract_0_2("login_anomaly.wasm"), "0.2.0"),
        (PathBuf::from(guests::LOGIN_ANOMALY), "0.3.0"),
    ];
    for (component, version) in &versions {
        assert_eq!(runtime.load(component).unwrap().contract(), *version);
        for parallelism in [1, 4] {
            let out = tempfile::tempdir().unwrap();
            run(login_job(component, parallelism, out.path())).unwrap();
            assert_eq!(
                per_key_sequences(&out.path().join("alerts.jsonl")),
                per_key_sequences(&root().join("examples/login-anomaly/expected.jsonl")),
                "{} at parallelism {parallelism}",
                component.display()
            );
        }
    }
    // One job, three versions of the keyed count side by side on the same stream:
    // each writes the same counts, in the same order per key.
    let out = tempfile::tempdir().unwrap();
    let components = [contract_0_1("keyed_count.wasm"), contract_0_2("keyed_count.wasm"), PathBuf::from(guests::KEYED_COUNT)];
    let mut text = String::from(
        r#"
        name = "three-contracts"
        [[source]]
        type = "generator"
        uid = "events"
        count = 10000
        keys = 100
        seed = 7
        "#,
    );
    for (version, component) in components.iter().enumerate() {
        text.push_str(&format!(
            r#"
            [[operator]]
            uid = "count-{version}"
            component = {component:?}
            parallelism = 2
            [[sink]]
            type = "file"
            uid = "counts-{version}"
            path = "counts-{version}.jsonl"
            [[edge]]
            from = "events"
            to = "count-{version}"
            partition = "keyed"
            [[edge]]
            from = "count-{version}"
            to = "counts-{version}"
            "#
        ));
    }
    run(job(&text, out.path())).unwrap();
    let outputs: Vec<_> = (0..3).map(|v| per_key_sequences(&out.path().join(format!("counts-{v}.jsonl")))).collect();
    assert_eq!(outputs[0].len(), 100, "every key counted");
    assert_eq!(outputs[0].values().map(Vec::len).sum::<usize>(), 10_000);
    assert_eq!(outputs[0], outputs[1], "0.1 and 0.2 agree");
    assert_eq!(outputs[1], outputs[2], "0.2 and 0.3 agree");
}

/// Every key's output records, in order.
type PerKey = std::collections::BTreeMap<String, Vec<String>>;

/// Runs `example` with batches of at most `batch_records` records and returns its
/// outputs (each key's records in order) and the late counts of `count`.
fn run_batched(example_name: &str, files: &[&str], batch_records: usize, parallelism: u32) -> (Vec<PerKey>, (u64, u64)) {
    let out = tempfile::tempdir().unwrap();
    let spec = match example_name {
        "tumbling-count-guest" => hand_built_tumbling(out.path()),
        name => example(name, out.path()),
    };
    let mut spec = with_parallelism(spec, parallelism);
    spec.batch_records = batch_records;
    let summary = run(spec).unwrap();
    let late = summary.node("count").map_or((0, 0), |n| (n.late_routed, n.late_dropped));
    (files.iter().map(|f| per_key_sequences(&out.path().join(f))).collect(), late)
}

#[test]
fn the_batch_size_never_changes_what_a_job_outputs() {
    // Batches of one element are the per-element semantics of weir before batching;
    // windows fire on watermarks inside batches, late events stay late, and timers
    // registered early in a batch fire before later elements of the same batch.
    for (name, files) in [
        ("tumbling-count", &["windows.jsonl", "late.jsonl"][..]),
        ("tumbling-count-guest", &["windows.jsonl", "late.jsonl"][..]),
        ("sessions", &["sessions.jsonl"][..]),
        ("keyed-count", &["counts.jsonl"][..]),
    ] {
        for parallelism in [1, 3] {
            let one = run_batched(name, files, 1, parallelism);
            for batch_records in [7, 512] {
                assert_eq!(run_batched(name, files, batch_records, parallelism), one, "{name}, batches of {batch_records}, p={parallelism}");
            }
        }
    }
    for name in ["tumbling-count", "tumbling-count-guest"] {
        let (outputs, late) = run_batched(name, &["windows.jsonl"], 512, 1);
        assert_eq!(late, (3, 0), "{name}");
        assert_eq!(outputs[0], per_key_sequences(&root().join("examples/tumbling-count/expected.jsonl")), "{name}");
    }
}

#[test]
fn twenty_megabyte_events_into_a_slow_operator_keep_host_memory_bounded() {
    // 40 events of 20 MB (800 MB in all) from a fast source into an operator that
    // takes 50 ms per event. Channels hold 4 MiB of records each, and an oversized
    // record passes only through an empty channel, so the source waits instead of
    // queueing the stream: the host holds a handful of events at a time.
    let dir = tempfile::tempdir().unwrap();
    let job_file = dir.path().join("big.toml");
    std::fs::write(
        &job_file,
        format!(
            r#"
            name = "big-events"
            channel_mib = 4
            [[source]]
            type = "generator"
            uid = "events"
            count = 40
            keys = 4
            payload_bytes = {}
            [[operator]]
            uid = "slow"
            component = {:?}
            config = {{ sleep_ms = 50 }}
            limits = {{ memory_mib = 512 }}
            [[sink]]
            type = "discard"
            uid = "sink"
            [[edge]]
            from = "events"
            to = "slow"
            partition = "keyed"
            [[edge]]
            from = "slow"
            to = "sink"
            "#,
            20 << 20,
            guests::PASSTHROUGH
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run"])
        .arg(&job_file)
        .env("WEIR_COMPILE_CACHE", dir.path().join("cache"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let status = memory::wait_for(&mut child, Duration::from_secs(120));
    assert!(status.success(), "{stderr}");
    let peak = memory::reported_peak_mib(&stderr);
    assert!(stderr.contains("job `big-events` finished"), "{stderr}");
    // Unbounded queueing would hold all 800 MB. Bounded: the events in flight (one per
    // channel, one in each task, copies into and out of the guest) and the guest's
    // memory, each at most a few times 20 MB.
    assert!(peak < 420, "peak resident memory {peak} MiB");
}

#[test]
fn a_second_start_of_a_component_skips_compilation() {
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = CompileCache::new(cache_dir.path());
    let first = Runtime::with_cache(Some(cache.clone())).unwrap().load(Path::new(guests::KEYED_COUNT)).unwrap();
    assert_eq!(first.compiled(), Compiled::Fresh);
    let entries: Vec<_> = std::fs::read_dir(cache_dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "one compiled component is stored");
    // A new runtime (a new process would do the same) finds it.
    let second = Runtime::with_cache(Some(cache.clone())).unwrap().load(Path::new(guests::KEYED_COUNT)).unwrap();
    assert_eq!(second.compiled(), Compiled::Cached);
    // Another component is compiled on its own.
    let other = Runtime::with_cache(Some(cache)).unwrap().load(Path::new(guests::PASSTHROUGH)).unwrap();
    assert_eq!(other.compiled(), Compiled::Fresh);
    // A damaged entry is recompiled, not trusted. (Loaded components map their entry:
    // drop them first, and replace the file rather than write into it.)
    drop((first, second, other));
    for entry in std::fs::read_dir(cache_dir.path()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"not compiled code").unwrap();
    }
    let cache = CompileCache::new(cache_dir.path());
    let again = Runtime::with_cache(Some(cache)).unwrap().load(Path::new(guests::KEYED_COUNT)).unwrap();
    assert_eq!(again.compiled(), Compiled::Fresh);

    // Through the CLI, a cached component runs the example to the same output.
    for _ in 0..2 {
        let output = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["run", "examples/login-anomaly/job.toml", "--plugin-dir", guests::GUEST_DIR])
            .current_dir(root())
            .env("WEIR_COMPILE_CACHE", cache_dir.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let mut alerts: Vec<String> = String::from_utf8(output.stdout).unwrap().lines().map(str::to_string).collect();
        alerts.sort();
        assert_eq!(alerts, expected("login-anomaly", "expected.jsonl"));
    }
}

fn event(key: &str, ts: i64) -> weir::Event {
    weir::Event { key: Some(key.into()), value: b"{}".to_vec(), timestamp: Some(ts), headers: vec![] }
}

fn json(output: &weir::task::harness::Output) -> serde_json::Value {
    match output {
        weir::task::harness::Output::Record(e) => serde_json::from_slice(&e.value).unwrap(),
        weir::task::harness::Output::Watermark(t) => serde_json::json!({ "watermark": t }),
    }
}

#[test]
fn the_operator_harness_drives_one_operator_without_a_job() {
    use weir::task::harness::OperatorHarness;
    // A tumbling window of one minute (the example guest): windows fire when the
    // watermark passes their end, before the watermark goes downstream; an element at
    // or behind the watermark is late; the end of input fires what is left.
    for split_batches in [false, true] {
        let mut harness =
            OperatorHarness::wasm(Path::new(guests::TUMBLING_COUNT), &[("size_ms", "60000")]).unwrap().drop_late();
        harness.element(event("a", 1_000)).element(event("a", 2_000)).element(event("b", 30_000));
        if split_batches {
            harness.end_batch();
        }
        harness.watermark(59_999).element(event("a", 500)).element(event("a", 61_000));
        let output = harness.finish().unwrap();
        let main: Vec<serde_json::Value> = output.main.iter().map(json).collect();
        assert_eq!(
            main,
            vec![
                serde_json::json!({"key": "a", "window_start": 0, "window_end": 60000, "count": 2}),
                serde_json::json!({"key": "b", "window_start": 0, "window_end": 60000, "count": 1}),
                serde_json::json!({"watermark": 59999}),
                serde_json::json!({"key": "a", "window_start": 60000, "window_end": 120000, "count": 1}),
                serde_json::json!({"watermark": i64::MAX}),
            ],
            "split batches: {split_batches}"
        );
        assert_eq!(output.late.len(), 1);
        assert_eq!(output.late[0].timestamp, Some(500));
        assert_eq!((output.metrics.records_in(), output.metrics.late_routed()), (5, 1));
    }
    // A native operator runs on the same harness.
    let mut harness = OperatorHarness::native("keyed-count").unwrap();
    harness.element(event("a", 1)).element(event("b", 2)).element(event("a", 3));
    let counts: Vec<u64> = harness.finish().unwrap().records().iter().map(|e| {
        serde_json::from_slice::<serde_json::Value>(&e.value).unwrap()["count"].as_u64().unwrap()
    }).collect();
    assert_eq!(counts, [1, 1, 2]);
}

#[test]
fn the_call_deadline_holds_per_element_of_a_batch() {
    // Eight elements of 100 ms each arrive as one batch: 800 ms in one call, but no
    // element comes near the 300 ms deadline, so nothing fails. (An element that runs
    // past it is still stopped: see bad_input's endless loop.)
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..8).map(|i| format!(r#"{{"n":{i}}}"#)).collect();
    write_input(dir.path(), "input.jsonl", &lines.iter().map(String::as_str).collect::<Vec<_>>());
    let spec = file_pipeline(
        dir.path(),
        "slow-batch",
        "",
        &format!(
            r#"uid = "slow"
               component = {:?}
               config = {{ sleep_ms = 100 }}
               limits = {{ call_timeout_ms = 300 }}"#,
            guests::PASSTHROUGH
        ),
    );
    run(spec).unwrap();
    let out = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    assert_eq!(out.lines().collect::<Vec<_>>(), lines, "the passthrough's output, in input order");
}

#[test]
fn a_batch_that_emits_240_000_events_loses_none_and_keeps_their_order() {
    // Eight lines of 30 000 words in one batch: the tokenizer emits 30 000 events per
    // element, more than one call may hold in all (100 000; runs stop before an element
    // that would begin past it, see operator::tests). Every word comes out, in order.
    let words = |line: usize| (0..30_000).map(move |i| format!("l{line}w{i}"));
    let mut harness = weir::task::harness::OperatorHarness::wasm(Path::new(guests::WORD_COUNT), &[]).unwrap();
    for line in 0..8 {
        let text = words(line).collect::<Vec<_>>().join(" ");
        let value = serde_json::to_vec(&serde_json::json!({ "text": text })).unwrap();
        harness.element(weir::Event { key: None, value, timestamp: Some(line as i64), headers: vec![] });
    }
    let output = harness.finish().unwrap();
    let got: Vec<String> = output
        .records()
        .iter()
        .map(|e| serde_json::from_slice::<serde_json::Value>(&e.value).unwrap()["word"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..8).flat_map(words).collect();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "the words came out of order or changed");
}

#[test]
fn a_slow_operator_takes_even_its_first_batch_in_short_calls() {
    // A barrier is noticed between two calls into an operator. The first call used to
    // take a whole batch (here 20 elements of 20 ms: 400 ms), holding an unaligned
    // barrier behind it; now a first call of one element measures the cost, and calls
    // of ~10 ms follow (one element each at 20 ms).
    let mut harness = weir::task::harness::OperatorHarness::wasm(Path::new(guests::PASSTHROUGH), &[("sleep_ms", "20")]).unwrap();
    for i in 0..20 {
        harness.element(weir::Event { key: None, value: format!("{i}").into_bytes(), timestamp: Some(i), headers: vec![] });
    }
    let output = harness.finish().unwrap();
    assert_eq!(output.records().len(), 20);
    assert_eq!(output.metrics.calls(), 20, "one element per call for an operator that takes 20 ms per element");
}
