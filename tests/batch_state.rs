//! State that travels with the batch (contract 0.3's `batch.load`) behaves exactly as
//! per-call state: the model operator (`tests/guests/model`) run with its value states
//! loaded and with every access a host call writes the same output, on random inputs
//! with many elements per key in a batch, clears, time to live, timers that fall due
//! inside a batch, list state beside loaded state, crashes and restores, and budgets.
//! A live upgrade from a contract 0.2 component to a 0.3 one loses and repeats nothing.

mod common;

use std::path::{Path, PathBuf};

use common::crash::{kill_moments, run_with_kills};
use common::*;

/// A random input for the model: `records` elements over `keys` keys, event times
/// rising by 0–2 ms, ops drawn with a bias towards `add`.
fn model_input(dir: &Path, seed: u64, records: usize, keys: u64) -> PathBuf {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move |bound: u64| {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 33) % bound
    };
    let mut ts = 1_000i64;
    let mut lines = String::new();
    for _ in 0..records {
        ts += next(3) as i64;
        let key = next(keys);
        let op = match next(20) {
            0..=8 => "add",
            9 => "clear",
            10..=11 => "read",
            12..=13 => "put",
            14..=16 => "timer",
            _ => "list",
        };
        let n = next(12);
        lines.push_str(&format!("{{\"k\":\"k{key}\",\"ts\":{ts},\"op\":\"{op}\",\"n\":{n}}}\n"));
    }
    let path = dir.join("input.jsonl");
    std::fs::write(&path, lines).unwrap();
    path
}

/// The model job's text: `input` into the model (`config`) into `out.jsonl`.
fn model_job_text(input: &Path, parallelism: u32, config: &str, settings: &str, rate: &str) -> String {
    format!(
        r#"
        name = "model"
        {settings}
        [[source]]
        type = "file"
        uid = "input"
        path = {input:?}
        key_field = "k"
        timestamp_field = "ts"
        watermark = {{ max_out_of_orderness_ms = 0 }}
        {rate}
        [[operator]]
        uid = "model"
        component = {component:?}
        parallelism = {parallelism}
        config = {{ {config} }}
        [[sink]]
        type = "file"
        uid = "out"
        path = "out.jsonl"
        [[edge]]
        from = "input"
        to = "model"
        partition = "keyed"
        [[edge]]
        from = "model"
        to = "out"
        "#,
        component = guests::MODEL,
    )
}

/// Runs the model in-process and returns its output lines in order.
fn run_model(input: &Path, parallelism: u32, config: &str, settings: &str, batch_records: Option<usize>) -> Vec<String> {
    let out = tempfile::tempdir().unwrap();
    let mut spec = job(&model_job_text(input, parallelism, config, settings, ""), out.path());
    if let Some(records) = batch_records {
        spec.batch_records = records;
    }
    run(spec).unwrap();
    std::fs::read_to_string(out.path().join("out.jsonl")).unwrap().lines().map(String::from).collect()
}

#[test]
fn batch_loaded_state_equals_per_call_state_on_a_random_model() {
    let dir = tempfile::tempdir().unwrap();
    // Six keys over 4000 elements: a batch holds many elements of each key.
    let input = model_input(dir.path(), 17, 4000, 6);
    for parallelism in [1, 3] {
        let per_call = run_model(&input, parallelism, "loaded = false", "", None);
        assert!(per_call.len() > 4000, "the timers fired too: {}", per_call.len());
        for batch_records in [None, Some(1), Some(97)] {
            let loaded = run_model(&input, parallelism, "loaded = true", "", batch_records);
            if parallelism == 1 {
                assert_eq!(loaded, per_call, "p=1, batches of {batch_records:?}: the same output in the same order");
            } else {
                let (loaded, per_call) = (sequences(&loaded), sequences(&per_call));
                assert_eq!(loaded, per_call, "p={parallelism}, batches of {batch_records:?}");
            }
        }
    }
}

#[test]
fn batch_loaded_state_expires_as_per_call_state_does() {
    // The test clock follows the records, so expiry is exact: 5 ms time to live over
    // event times 0–2 ms apart, with reads refreshing `fresh` and not `stale`.
    let dir = tempfile::tempdir().unwrap();
    let input = model_input(dir.path(), 23, 3000, 4);
    let settings = "processing_clock = \"records\"";
    let per_call = run_model(&input, 1, "loaded = false, ttl_ms = 5", settings, None);
    let loaded = run_model(&input, 1, "loaded = true, ttl_ms = 5", settings, None);
    assert_eq!(loaded, per_call);
    // Expiry happened, and reads kept some `fresh` values alive past 5 ms.
    assert!(per_call.iter().any(|l| l.contains("\"at\":\"read\"") && l.contains("\"fresh\":null")));
    assert!(per_call.iter().any(|l| l.contains("\"at\":\"read\"") && !l.contains("\"fresh\":null")));
}

/// Each key's output lines in order (the model's lines carry their key).
fn sequences(lines: &[String]) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut keys: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        keys.entry(v["key"].as_str().unwrap().to_string()).or_default().push(line.clone());
    }
    keys
}

#[test]
fn batch_loaded_state_survives_crashes_and_restores_as_per_call_state() {
    // Killed at random moments and restored from checkpoints, the loaded model's
    // committed output equals an uninterrupted per-call run's, in both backends.
    let dir = tempfile::tempdir().unwrap();
    let input = model_input(dir.path(), 29, 3000, 5);
    let per_call = run_model(&input, 1, "loaded = false", "", None);
    for backend in ["memory", "rocksdb"] {
        let crashed = tempfile::tempdir().unwrap();
        let settings = format!(
            "checkpoint = {{ interval_ms = 40, dir = {:?} }}\nstate = {{ backend = \"{backend}\" }}",
            crashed.path().join("checkpoints")
        );
        let job_file = crashed.path().join("job.toml");
        std::fs::write(&job_file, model_job_text(&input, 1, "loaded = true", &settings, "rate = 2000.0")).unwrap();
        let resumes = run_with_kills(&job_file, &kill_moments(31, 3));
        assert!(resumes > 0, "{backend}: no run resumed from a checkpoint");
        let crashed_lines: Vec<String> =
            std::fs::read_to_string(crashed.path().join("out.jsonl")).unwrap().lines().map(String::from).collect();
        assert_eq!(crashed_lines, per_call, "{backend}");
    }
}

#[test]
fn a_loaded_value_past_the_state_budget_fails_naming_the_key_as_per_call_state_does() {
    // `pad` writes a 2 MB note at line 3, past a 1 MiB entry limit: the per-call model
    // fails at that element, the loaded one when its batch writes back; both name the key.
    let dir = tempfile::tempdir().unwrap();
    let lines: String = ["add", "add", "pad", "add"]
        .iter()
        .enumerate()
        .map(|(i, op)| format!("{{\"k\":\"big\",\"ts\":{i},\"op\":\"{op}\",\"n\":2000000}}\n"))
        .collect();
    let input = dir.path().join("input.jsonl");
    std::fs::write(&input, lines).unwrap();
    for config in ["loaded = false", "loaded = true"] {
        let out = tempfile::tempdir().unwrap();
        let text = model_job_text(&input, 1, config, "", "")
            .replace("parallelism = 1", "parallelism = 1\n        limits = { key_state_mib = 1 }");
        let error = run(job(&text, out.path())).expect_err("the budget must stop the job").to_string();
        assert!(error.contains("key \"big\""), "{config}: {error}");
        assert!(error.contains("limits.key_state_mib"), "{config}: {error}");
        // Per call, the write fails at its element; loaded, the batch's write-back
        // fails, naming the elements of the batch (line 3 among them).
        assert_names_line(&error, 3);
    }
}
