//! Keyed-count throughput: generator → keyed count with value state → discarding sink,
//! once with the `keyed-count` Wasm guest and once with the same logic as a native
//! operator inside the host, so the cost of the Wasm boundary shows.
//!
//! Each runs on in-memory state and on RocksDB.
//!
//! `cargo bench -p weir-host --bench keyed_count`; `WEIR_BENCH_EVENTS` sets the number
//! of events (default 1 000 000), `WEIR_BENCH_KEYS` the number of keys (10 000).

use std::time::Duration;

use weir::{Job, JobOptions, JobSpec, JobSummary};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn job(operator: &str, parallelism: u32, events: u64, keys: u64, backend: &str) -> JobSpec {
    let dir = std::env::temp_dir().join("weir-bench-state");
    let dir = dir.display();
    let text = format!(
        r#"
        name = "bench-keyed-count"
        state = {{ backend = "{backend}", dir = "{dir}" }}
        [[source]]
        type = "generator"
        uid = "events"
        count = {events}
        keys = {keys}
        seed = 1
        [[operator]]
        uid = "count"
        {operator}
        parallelism = {parallelism}
        [[sink]]
        type = "discard"
        uid = "sink"
        [[edge]]
        from = "events"
        to = "count"
        partition = "keyed"
        [[edge]]
        from = "count"
        to = "sink"
        "#
    );
    JobSpec::parse(&text, std::path::Path::new(".")).expect("valid bench job")
}

fn run(spec: JobSpec) -> JobSummary {
    let options = JobOptions { plugin_dirs: vec![weir_test_guests::GUEST_DIR.into()], ..Default::default() };
    Job::new(spec, &options).expect("job loads").run().expect("job runs")
}

/// Best of three runs (after one warm-up), to damp noise on a shared machine.
fn measure(operator: &str, parallelism: u32, events: u64, keys: u64, backend: &str) -> (Duration, JobSummary) {
    run(job(operator, parallelism, events / 10, keys, backend));
    (0..3)
        .map(|_| {
            let summary = run(job(operator, parallelism, events, keys, backend));
            (summary.duration, summary)
        })
        .min_by_key(|(d, _)| *d)
        .expect("three runs")
}

fn main() {
    let events = env_u64("WEIR_BENCH_EVENTS", 1_000_000);
    let keys = env_u64("WEIR_BENCH_KEYS", 10_000);
    println!("keyed count: {events} events over {keys} keys, discarding sink");
    println!(
        "{:<22} {:<8} {:>4} {:>14} {:>10} {:>10} {:>10} {:>10}",
        "operator", "state", "par", "events/s", "ns/event", "p50 µs", "p99 µs", "p99.9 µs"
    );
    let mut native_rate = None;
    for (label, operator, parallelism, backend) in [
        ("native keyed-count", r#"native = "keyed-count""#, 1, "memory"),
        ("wasm keyed_count.wasm", r#"component = "keyed_count.wasm""#, 1, "memory"),
        ("native keyed-count", r#"native = "keyed-count""#, 2, "memory"),
        ("wasm keyed_count.wasm", r#"component = "keyed_count.wasm""#, 2, "memory"),
        ("native keyed-count", r#"native = "keyed-count""#, 1, "rocksdb"),
        ("wasm keyed_count.wasm", r#"component = "keyed_count.wasm""#, 1, "rocksdb"),
    ] {
        let (duration, summary) = measure(operator, parallelism, events, keys, backend);
        assert_eq!(summary.node("sink").map(|n| n.records_in), Some(events));
        let rate = events as f64 / duration.as_secs_f64();
        let latency = summary.latency.expect("latency recorded");
        println!(
            "{label:<22} {backend:<8} {parallelism:>4} {rate:>14.0} {:>10.1} {:>10} {:>10} {:>10}",
            duration.as_nanos() as f64 / events as f64,
            latency.p50_us,
            latency.p99_us,
            latency.p999_us
        );
        if label.starts_with("native") {
            native_rate = Some(rate);
        } else if let Some(native) = native_rate.take() {
            println!("  wasm/native throughput ratio ({backend}, parallelism {parallelism}): {:.2}", rate / native);
        }
    }
}
