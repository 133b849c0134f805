//! Hot-swap pause and savepoint throughput. A keyed counter (`counter_v1.wasm`) builds
//! state for N keys from a generator; then a live upgrade to `counter_v2.wasm` (which
//! migrates every key) runs through the control API. Reported: the pause the upgraded
//! operator sees (from its last element into the old component to its first into the
//! new one: capture, instantiation, the first 5 ms of migration, the sources reading
//! on and the first records reaching it), when the rollback point (the in-place savepoint, written in the
//! background) was complete, and when the lazy migration finished. Then a stop with
//! savepoint, and a restore from it, give savepoint write and restore rates.
//!
//! `cargo bench -p weir-host --bench upgrade`; `WEIR_BENCH_KEYS` (comma-separated)
//! overrides the key counts (10k, 100k, 1M).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing_subscriber::layer::SubscriberExt;

use weir::api::{self, StopBody, UpgradeBody};
use weir::{Job, JobOptions, JobSpec};

fn spec(dir: &Path, keys: u64, count: Option<u64>, backend: &str, component: &str) -> JobSpec {
    let count = count.map_or(String::new(), |c| format!("count = {c}"));
    let text = format!(
        r#"
        name = "bench-upgrade"
        state = {{ backend = "{backend}" }}
        [[source]]
        type = "generator"
        uid = "events"
        keys = {keys}
        seed = 3
        {count}
        [[operator]]
        uid = "count"
        component = "{component}"
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
    JobSpec::parse(&text, dir).expect("valid job")
}

fn options(savepoint: Option<&Path>) -> JobOptions {
    JobOptions {
        plugin_dirs: vec![weir_test_guests::GUEST_DIR.into()],
        control: Some("127.0.0.1:0".parse().unwrap()),
        from_savepoint: savepoint.map(Path::to_path_buf),
        ..Default::default()
    }
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| if e.path().is_dir() { dir_size(&e.path()) } else { e.metadata().map_or(0, |m| m.len()) })
        .sum()
}

/// What the host logged: when a state migration last completed, and the pause the
/// upgraded operator last saw (from its last element into the old component to its
/// first into the new one).
#[derive(Clone, Default)]
struct Observed(Arc<Mutex<(Option<Instant>, Option<f64>)>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Observed {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        #[derive(Default)]
        struct Fields {
            migrated: bool,
            pause_ms: Option<f64>,
        }
        impl tracing::field::Visit for Fields {
            fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
                if field.name() == "pause_ms" {
                    self.pause_ms = Some(value);
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.migrated |= format!("{value:?}").contains("state migration complete");
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut observed = self.0.lock().unwrap();
        if fields.migrated {
            observed.0 = Some(Instant::now());
        }
        if fields.pause_ms.is_some() {
            observed.1 = fields.pause_ms;
        }
    }
}

fn main() {
    // `WEIR_BENCH_LOG=weir=info` shows where each swap's time went.
    let filter = std::env::var("WEIR_BENCH_LOG").unwrap_or_else(|_| "weir=info".into());
    let log = std::env::var("WEIR_BENCH_LOG").is_ok().then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let observed = Observed::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(tracing_subscriber::EnvFilter::new(filter)).with(observed.clone()).with(log),
    )
    .expect("one subscriber");
    let sizes: Vec<u64> = std::env::var("WEIR_BENCH_KEYS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000, 1_000_000]);
    println!("live upgrade counter v1 → v2 (which migrates every key: 5 ms at the swap, the rest lazily), then stop with savepoint and restore");
    println!(
        "{:<8} {:>9} {:>14} {:>16} {:>14} {:>12} {:>12} {:>14}",
        "backend", "keys", "swap pause ms", "rollback pt ms", "migrated s", "savepoint MB", "write MB/s", "restore MB/s"
    );
    for &keys in &sizes {
        for backend in ["memory", "rocksdb"] {
            let dir = tempfile::tempdir().unwrap();
            let job = Job::new(spec(dir.path(), keys, None, backend, "counter_v1.wasm"), &options(None)).unwrap();
            let work = job.spec().work_dir();
            let control = job.control();
            let running = std::thread::spawn(move || job.run());
            // Let every key get state: a few events per key on average.
            std::thread::sleep(Duration::from_millis(200));
            while !work.join(api::ADDRESS_FILE).exists() {
                std::thread::sleep(Duration::from_millis(10));
            }
            let warmup = Duration::from_secs_f64((keys as f64 * 4.0 / 250_000.0).max(1.0));
            std::thread::sleep(warmup);
            let upgrade = UpgradeBody {
                operator: "count".into(),
                component: Path::new(weir_test_guests::COUNTER_V2).into(),
                to_previous: false,
                probation_ms: Some(0),
                canary: None,
            };
            *observed.0.lock().unwrap() = (None, None);
            let upgrading = Instant::now();
            api::call(&work, "/upgrade", &upgrade).expect("upgrade");
            let rollback_point = upgrading.elapsed();
            // The migration walks 32 000 keys a second at most: wait for it to end.
            let migrated = loop {
                if let Some(at) = observed.0.lock().unwrap().0 {
                    break at.duration_since(upgrading);
                }
                if upgrading.elapsed() > Duration::from_secs(600) {
                    panic!("the migration did not complete in 600 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let savepoint = dir.path().join("sp");
            let started = Instant::now();
            let stopped = api::call(&work, "/stop", &StopBody { savepoint: Some(savepoint.clone()) }).expect("stop");
            let written = started.elapsed();
            running.join().unwrap().unwrap();
            let _ = control;
            let bytes = dir_size(&savepoint);
            let write_s = stopped.duration_ms.map_or(written.as_secs_f64(), |ms| ms / 1e3);

            // Restore: the job starts from the savepoint and ends at once (count = 0).
            let restore = Job::new(spec(dir.path(), keys, Some(0), backend, "counter_v2.wasm"), &options(Some(&savepoint))).unwrap();
            let started = Instant::now();
            restore.run().unwrap();
            let restored = started.elapsed();
            println!(
                "{backend:<8} {keys:>9} {:>14.1} {:>16.1} {:>14.1} {:>12.2} {:>12.1} {:>14.1}",
                observed.0.lock().unwrap().1.expect("the upgraded operator logs its pause"),
                rollback_point.as_secs_f64() * 1e3,
                migrated.as_secs_f64(),
                bytes as f64 / 1e6,
                bytes as f64 / 1e6 / write_s,
                bytes as f64 / 1e6 / restored.as_secs_f64(),
            );
        }
    }
}
