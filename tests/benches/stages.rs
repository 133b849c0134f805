//! Where a keyed count's time goes, stage by stage, in ns per record: the next
//! bottleneck in plain view (issue 24's per-stage breakdown).
//!
//! Two kinds of figures:
//! - stages alone, in a loop on one thread: the generator making an event, the key's hash
//!   to a key group, a value-state read and write (memory backend, 10 000 keys);
//! - whole jobs through `weir run`'s engine (`Job`), each adding one stage to the one
//!   before, so that the difference is that stage's cost on the operator's thread:
//!   generator → discard (source, channel, sink); → a keyed native pass-through ... with
//!   the native keyed count (routing by key, state, one JSON out); the Wasm pass-through
//!   (the boundary and emits, no state); the Wasm keyed count (the boundary, loaded
//!   state, the guest's JSON).
//!
//! `cargo bench -p weir-host --bench stages`; `WEIR_BENCH_EVENTS` sets the events of a
//! job (default 2 000 000). Best of three runs each, after a warm-up.

use std::hint::black_box;
use std::time::{Duration, Instant};

use weir::source::GeneratorSource;
use weir::state::{KeyedState, MemoryBackend, StateKind};
use weir::{Job, JobOptions, JobSpec};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const KEYS: u64 = 10_000;

/// Best of three timings of `f`, in ns per `n` records.
fn per_record(n: u64, mut f: impl FnMut()) -> f64 {
    f();
    (0..3)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .map(|d| d.as_nanos() as f64 / n as f64)
        .unwrap()
}

fn job(edge: &str, operator: Option<&str>, events: u64) -> JobSpec {
    let (operator_table, edges) = match operator {
        Some(operator) => (
            format!("[[operator]]\nuid = \"op\"\n{operator}\nparallelism = 1\n"),
            format!(
                "[[edge]]\nfrom = \"events\"\nto = \"op\"\n{edge}\n[[edge]]\nfrom = \"op\"\nto = \"sink\"\n"
            ),
        ),
        None => (String::new(), "[[edge]]\nfrom = \"events\"\nto = \"sink\"\n".to_string()),
    };
    let text = format!(
        r#"
        name = "bench-stages"
        [[source]]
        type = "generator"
        uid = "events"
        count = {events}
        keys = {KEYS}
        seed = 1
        {operator_table}
        [[sink]]
        type = "discard"
        uid = "sink"
        {edges}
        "#
    );
    JobSpec::parse(&text, std::path::Path::new(".")).expect("valid bench job")
}

fn job_ns(edge: &str, operator: Option<&str>, events: u64) -> f64 {
    let options = JobOptions { plugin_dirs: vec![weir_test_guests::GUEST_DIR.into()], ..Default::default() };
    let run = |n: u64| -> Duration {
        Job::new(job(edge, operator, n), &options).expect("job loads").run().expect("job runs").duration
    };
    run(events / 10);
    let best = (0..3).map(|_| run(events)).min().unwrap();
    best.as_nanos() as f64 / events as f64
}

fn main() {
    let events = env_u64("WEIR_BENCH_EVENTS", 2_000_000);
    println!("stages of a keyed count, {KEYS} keys, ns per record (best of 3)");

    let n = 1_000_000u64;
    let generator = GeneratorSource::new("g", None, None, KEYS, 1, 0, 1).unwrap();
    let make = per_record(n, || {
        for seq in 0..n {
            black_box(generator.event(seq));
        }
    });
    println!("{:<52} {:>8.0}", "generator: make one event (alone)", make);

    let keys: Vec<Vec<u8>> = (0..KEYS).map(|k| format!("key-{k}").into_bytes()).collect();
    let hash = per_record(n, || {
        for i in 0..n {
            black_box(weir::keygroup::assign_key_group(&keys[(i % KEYS) as usize], 128));
        }
    });
    println!("{:<52} {:>8.0}", "key group of a key (alone)", hash);

    let mut state = KeyedState::new("count", Box::new(MemoryBackend::new()));
    let id = state.declare(StateKind::Value, "count", None).unwrap();
    let access = per_record(n, || {
        for i in 0..n {
            let key = &keys[(i.wrapping_mul(7919) % KEYS) as usize];
            let kg = (i % 128) as u16;
            let count: u64 = state.value_get(id, kg, key).unwrap().map_or(0, |v| std::str::from_utf8(&v).unwrap().parse().unwrap());
            state.value_set(id, kg, key, (count + 1).to_string().as_bytes()).unwrap();
        }
    });
    println!("{:<52} {:>8.0}", "value state get + set, memory backend (alone)", access);

    let keyed = "partition = \"keyed\"";
    let base = job_ns("", None, events);
    println!("{:<52} {:>8.0}", "job: generator -> discard (source, channel, sink)", base);
    let native = job_ns(keyed, Some("native = \"keyed-count\""), events);
    println!("{:<52} {:>8.0}  (+{:.0})", "job: + keyed native count (routing, state, emit)", native, native - base);
    let pass = job_ns(keyed, Some("component = \"passthrough.wasm\""), events);
    println!("{:<52} {:>8.0}  (+{:.0})", "job: + keyed Wasm pass-through (boundary, emit)", pass, pass - base);
    let count = job_ns(keyed, Some("component = \"keyed_count.wasm\""), events);
    println!("{:<52} {:>8.0}  (+{:.0})", "job: + keyed Wasm count (boundary, loaded state, JSON)", count, count - base);
    println!(
        "the Wasm count costs {:.0} ns/record more than the native one; the pass-through {:.0} more than discarding",
        count - native,
        pass - base
    );
}
