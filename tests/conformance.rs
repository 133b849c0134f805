//! The operator conformance suite (tests/conformance/README.md): one specification,
//! one implementation per SDK language, each run as a real component in a real job;
//! every language must produce exactly the expected output.

mod common;

use std::path::Path;

use common::*;

/// The implementations: (language, component).
fn implementations() -> [(&'static str, &'static str); 4] {
    [
        ("rust", guests::CONFORMANCE),
        ("python", guests::PY_CONFORMANCE),
        ("javascript", guests::JS_CONFORMANCE),
        ("c", guests::C_CONFORMANCE),
    ]
}

fn conformance_job(component: &str, input: &Path, parallelism: u32, dir: &Path) -> weir::JobSpec {
    job(
        &format!(
            r#"
            name = "conformance"
            processing_clock = "records"
            [[source]]
            type = "file"
            uid = "input"
            path = {input:?}
            key_field = "k"
            timestamp_field = "ts"
            [[operator]]
            uid = "op"
            component = {component:?}
            parallelism = {parallelism}
            [[sink]]
            type = "file"
            uid = "main"
            path = "main.jsonl"
            [[sink]]
            type = "file"
            uid = "odd"
            path = "odd.jsonl"
            [[edge]]
            from = "input"
            to = "op"
            partition = "keyed"
            [[edge]]
            from = "op"
            to = "main"
            [[edge]]
            from = "op"
            output = "odd"
            to = "odd"
            "#
        ),
        dir,
    )
}

fn suite(file: &str) -> std::path::PathBuf {
    root().join("tests/conformance").join(file)
}

#[test]
fn every_language_gives_flinks_output() {
    // Value, list and map state; event-time timers, some deleted before they fire;
    // processing-time timers that fire and one deleted before it fires; a value whose
    // time to live runs out (and one refreshed by a write); side outputs; re-keyed
    // output; clearing state. At parallelism 1 and 3, on the test clock that follows
    // the records. The expected files are Apache Flink 2.3's output for the same input
    // (bench/flink/KeyedReference.java, `scripts/flink-reference`), in Flink's order:
    // every key's records must come in that order.
    for (language, component) in implementations() {
        for parallelism in [1, 3] {
            let dir = tempfile::tempdir().unwrap();
            run(conformance_job(component, &suite("input.jsonl"), parallelism, dir.path()))
                .unwrap_or_else(|e| panic!("{language} at p={parallelism}: {e}"));
            for (output, expected) in [("main.jsonl", "expected.jsonl"), ("odd.jsonl", "expected-odd.jsonl")] {
                assert_same_per_key(
                    &per_key_sequences(&dir.path().join(output)),
                    &per_key_sequences(&suite(expected)),
                    &format!("{language} at p={parallelism}: {output}"),
                );
            }
            if parallelism == 1 {
                let text = std::fs::read_to_string(dir.path().join("main.jsonl")).unwrap();
                assert_eq!(text, std::fs::read_to_string(suite("expected.jsonl")).unwrap(), "{language}: Flink's order");
            }
        }
    }
}

#[test]
fn every_language_reports_its_own_errors_cleanly() {
    // An error the operator raises (a Rust `Err`, a Python exception, a thrown JS
    // `Error`, a C `weir_fail`) stops the job as
    // an operator error with its message and the element's position, not as a trap.
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(
        dir.path(),
        "input.jsonl",
        &[r#"{"op":"add","k":"a","v":1,"ts":1}"#, r#"{"op":"fail","k":"a","v":7,"ts":2}"#],
    );
    for (language, component) in implementations() {
        let error = run(conformance_job(component, &input, 1, dir.path())).unwrap_err().to_string();
        assert!(error.contains("operator `op`"), "{language}: {error}");
        assert!(error.contains("the operator returned an error"), "{language}: {error}");
        assert!(error.contains("asked to fail: 7"), "{language}: {error}");
        assert!(error.contains("input.jsonl line 2"), "{language}: {error}");
        if language == "python" {
            assert!(error.contains("ValueError: asked to fail: 7 (at app.py:"), "{error}");
        }
        if language == "javascript" {
            assert!(error.contains("Error: asked to fail: 7"), "{error}");
        }
        // What the element before the failing one emitted still reached the sink.
        assert_eq!(sorted_lines(&dir.path().join("main.jsonl")).len(), 1, "{language}");
    }
}

#[test]
fn window_functions_agree_across_languages() {
    // The same sliding windows (panes merged by the guest's `merge`) and sessions, with
    // the aggregate and the process window function of each language: identical output.
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..300)
        .map(|i| format!(r#"{{"k":"k{}","v":{},"ts":{}}}"#, i % 4, (i * 37) % 101, i * 7 + (i % 5) * 3))
        .collect();
    let input = write_input(dir.path(), "windows.jsonl", &lines.iter().map(String::as_str).collect::<Vec<_>>());
    let run_with = |aggregate: &str, process: &str| {
        let out = tempfile::tempdir().unwrap();
        let spec = job(
            &format!(
                r#"
                name = "window-conformance"
                [[source]]
                type = "file"
                uid = "input"
                path = {input:?}
                key_field = "k"
                timestamp_field = "ts"
                watermark = {{ max_out_of_orderness_ms = 20 }}
                [[operator]]
                uid = "avg"
                parallelism = 2
                window = {{ type = "sliding", size_ms = 200, slide_ms = 50, allowed_lateness_ms = 10, aggregate = {{ component = {aggregate:?} }} }}
                [[operator]]
                uid = "sessions"
                window = {{ type = "session", gap_ms = 30, process = {{ component = {process:?} }} }}
                [[sink]]
                type = "file"
                uid = "averages"
                path = "averages.jsonl"
                [[sink]]
                type = "file"
                uid = "summaries"
                path = "summaries.jsonl"
                [[edge]]
                from = "input"
                to = "avg"
                partition = "keyed"
                [[edge]]
                from = "input"
                to = "sessions"
                partition = "keyed"
                [[edge]]
                from = "avg"
                to = "averages"
                [[edge]]
                from = "sessions"
                to = "summaries"
                "#
            ),
            out.path(),
        );
        run(spec).unwrap();
        // Compared as JSON values: serde_json, Python and JavaScript order object keys
        // differently, and JavaScript writes a float that is whole without `.0`.
        fn numbers_as_floats(v: serde_json::Value) -> serde_json::Value {
            match v {
                serde_json::Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
                serde_json::Value::Array(a) => a.into_iter().map(numbers_as_floats).collect(),
                serde_json::Value::Object(o) => o.into_iter().map(|(k, v)| (k, numbers_as_floats(v))).collect(),
                other => other,
            }
        }
        let canonical = |file: &str| {
            let mut lines: Vec<String> = sorted_lines(&out.path().join(file))
                .iter()
                .map(|l| numbers_as_floats(serde_json::from_str::<serde_json::Value>(l).unwrap()).to_string())
                .collect();
            lines.sort();
            lines
        };
        (canonical("averages.jsonl"), canonical("summaries.jsonl"))
    };
    let rust = run_with(guests::WINDOW_AVERAGE, guests::WINDOW_SUMMARY);
    let python = run_with(guests::PY_AVERAGE, guests::PY_SUMMARY);
    let javascript = run_with(guests::JS_AVERAGE, guests::JS_SUMMARY);
    let c = run_with(guests::C_AVERAGE, guests::C_SUMMARY);
    assert!(rust.0.len() > 20 && rust.1.len() > 4, "{rust:?}");
    assert_eq!(python.0, rust.0, "Python aggregate");
    assert_eq!(python.1, rust.1, "Python process window function");
    assert_eq!(javascript.0, rust.0, "JavaScript aggregate");
    assert_eq!(javascript.1, rust.1, "JavaScript process window function");
    assert_eq!(c.0, rust.0, "C aggregate");
    assert_eq!(c.1, rust.1, "C process window function");
}

#[test]
fn weir_build_makes_a_component_from_any_sdk_language() {
    // One entry for every language: the source's kind picks the SDK's build.
    use weir::plugin::window::FunctionKind;
    let dir = tempfile::tempdir().unwrap();
    let runtime = weir::plugin::Runtime::new().unwrap();
    for source in ["python/summary.py", "js/summary.js", "c/summary.c"] {
        let output = dir.path().join(source.replace('/', "-") + ".wasm");
        let built = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("build")
            .arg(suite(source))
            .arg("-o")
            .arg(&output)
            .output()
            .unwrap();
        assert!(built.status.success(), "{source}: {}", String::from_utf8_lossy(&built.stderr));
        assert_eq!(String::from_utf8_lossy(&built.stdout).trim(), output.display().to_string());
        runtime.load_function(&output, FunctionKind::Process).unwrap_or_else(|e| panic!("{source}: {e}"));
    }
    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_weir")).args(["build", "app.go"]).output().unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("cannot tell the language"));
    // A C source that includes none of the SDK's headers: the error says which to include.
    let plain = dir.path().join("plain.c");
    std::fs::write(&plain, "int f(void) { return 1; }\n").unwrap();
    let built = std::process::Command::new(env!("CARGO_BIN_EXE_weir")).arg("build").arg(&plain).output().unwrap();
    assert!(!built.status.success());
    assert!(String::from_utf8_lossy(&built.stderr).contains("include \"weir.h\" for an operator"));
    // A C compile error is clang's, with the file and line.
    let broken = dir.path().join("broken.c");
    std::fs::write(&broken, "#include \"weir.h\"\nstatic int process(const weir_event *e) { return nope; }\n").unwrap();
    let built = std::process::Command::new(env!("CARGO_BIN_EXE_weir")).arg("build").arg(&broken).output().unwrap();
    let stderr = String::from_utf8_lossy(&built.stderr);
    assert!(!built.status.success());
    assert!(stderr.contains("broken.c:2") && stderr.contains("nope"), "{stderr}");
    assert!(stderr.contains("clang failed"), "{stderr}");
}
