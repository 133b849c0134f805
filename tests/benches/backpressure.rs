//! Checkpoint duration under back-pressure, aligned vs unaligned. A generator feeds a
//! keyed count, which feeds an operator that sleeps 1 ms per element (the faulty test
//! guest in `slow` mode), so every channel upstream of it is full: an aligned barrier
//! waits behind all of that data, an unaligned one overtakes it and the data is stored
//! with the checkpoint instead. Default batching and channels of 1 MiB.
//!
//! `cargo bench -p weir-host --bench backpressure`; `WEIR_BENCH_SECONDS` sets how long
//! each mode runs (default 30).

use std::path::Path;
use std::time::{Duration, Instant};

use weir::{Job, JobOptions, JobSpec};

fn spec(dir: &Path, checkpoint: &str) -> JobSpec {
    std::fs::copy(weir_test_guests::FAULTY, dir.join("faulty.wasm")).unwrap();
    let text = format!(
        r#"
        name = "bench-backpressure"
        channel_mib = 1
        checkpoint = {{ dir = "checkpoints", interval_ms = 1000, timeout_ms = 120000, {checkpoint} }}
        [[source]]
        type = "generator"
        uid = "events"
        keys = 1000
        seed = 3
        [[operator]]
        uid = "count"
        native = "keyed-count"
        [[operator]]
        uid = "slow"
        component = "faulty.wasm"
        config = {{ mode = "slow", delay_ms = "1" }}
        [[sink]]
        type = "discard"
        uid = "sink"
        [[edge]]
        from = "events"
        to = "count"
        partition = "keyed"
        [[edge]]
        from = "count"
        to = "slow"
        [[edge]]
        from = "slow"
        to = "sink"
        "#
    );
    JobSpec::parse(&text, dir).unwrap()
}

struct Measured {
    durations: Vec<u64>,
    persisted: Vec<u64>,
    failed: u64,
    records: u64,
}

fn measure(checkpoint: &str, seconds: u64) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let options = JobOptions { plugin_dirs: vec![weir_test_guests::GUEST_DIR.into()], ..Default::default() };
    let job = Job::new(spec(dir.path(), checkpoint), &options).unwrap();
    let stats = job.checkpoint_stats();
    let control = job.control();
    let live = job.live_metrics();
    let running = std::thread::spawn(move || job.run());
    let started = Instant::now();
    let mut seen = 0;
    let mut measured = Measured { durations: Vec::new(), persisted: Vec::new(), failed: 0, records: 0 };
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(20));
        let stats = stats.lock().unwrap().clone();
        if let Some(latest) = stats.latest_completed.filter(|c| c.id != seen) {
            seen = latest.id;
            measured.durations.push(latest.duration_ms);
            measured.persisted.push(latest.persisted_data);
        }
        measured.failed = stats.failed;
    }
    measured.records = live.snapshot().nodes.iter().find(|n| n.uid == "sink").map_or(0, |n| n.records_in);
    control.stop();
    let _ = running.join();
    measured
}

fn main() {
    let seconds = std::env::var("WEIR_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    println!("checkpoints under back-pressure: generator → keyed count → 1 ms/element → discard, {seconds} s per mode");
    println!(
        "{:<26} {:>9} {:>7} {:>9} {:>9} {:>9} {:>14} {:>10}",
        "mode", "completed", "failed", "p50 ms", "max ms", "first ms", "in-flight MB", "records/s"
    );
    for (name, checkpoint) in [
        ("aligned", r#"mode = "aligned""#),
        ("aligned, 500 ms timeout", r#"alignment_timeout_ms = 500"#),
        ("unaligned", r#"mode = "unaligned""#),
    ] {
        let m = measure(checkpoint, seconds);
        let mut sorted = m.durations.clone();
        sorted.sort();
        let p50 = sorted.get(sorted.len() / 2).copied();
        let max = sorted.last().copied();
        let mean_mb = match m.persisted.len() {
            0 => 0.0,
            n => m.persisted.iter().sum::<u64>() as f64 / n as f64 / 1e6,
        };
        let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        println!(
            "{:<26} {:>9} {:>7} {:>9} {:>9} {:>9} {:>14.2} {:>10.0}",
            name,
            m.durations.len(),
            m.failed,
            show(p50),
            show(max),
            show(m.durations.first().copied()),
            mean_mb,
            m.records as f64 / seconds as f64
        );
    }
}
