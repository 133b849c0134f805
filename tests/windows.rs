//! Window operators, driven one subtask at a time through the operator harness (the
//! same task runner a job uses), and checked against Flink's rules: each test names
//! the rule it holds the operator to.

mod common;

use std::collections::BTreeMap;

use serde_json::{Value, json};
use weir::Event;
use weir::task::harness::{HarnessOutput, OperatorHarness, Output};

fn event(key: &str, ts: i64, value: Value) -> Event {
    Event { key: Some(key.into()), value: value.to_string().into_bytes(), timestamp: Some(ts), headers: vec![] }
}

fn at(key: &str, ts: i64) -> Event {
    event(key, ts, json!({}))
}

/// The main output as JSON, watermarks as `{"watermark": t}`.
fn main(output: &HarnessOutput) -> Vec<Value> {
    output
        .main
        .iter()
        .map(|o| match o {
            Output::Record(e) => serde_json::from_slice(&e.value).unwrap(),
            Output::Watermark(t) => json!({ "watermark": t }),
        })
        .collect()
}

/// The main output's records only.
fn records(output: &HarnessOutput) -> Vec<Value> {
    main(output).into_iter().filter(|v| v.get("watermark").is_none()).collect()
}

fn window(key: &str, start: i64, end: i64, field: &str, value: Value) -> Value {
    let mut out = json!({ "key": key, "window_start": start, "window_end": end });
    out[field] = value;
    out
}

#[test]
fn tumbling_windows_fire_once_the_watermark_passes_their_end() {
    // Flink's EventTimeTrigger: a window fires when the watermark reaches its
    // max timestamp (end - 1), before the watermark itself goes downstream; the
    // result's timestamp is the window's max timestamp.
    let mut h = OperatorHarness::window(r#"type = "tumbling"
size_ms = 10
aggregate = { builtin = "count" }"#)
    .unwrap();
    h.element(at("a", 1)).element(at("b", 3)).element(at("a", 9)).element(at("a", 10));
    h.watermark(8).element(at("b", 4)).watermark(9).element(at("a", 12));
    let output = h.finish().unwrap();
    assert_eq!(
        main(&output),
        [
            json!({"watermark": 8}),
            window("a", 0, 10, "count", json!(2)),
            window("b", 0, 10, "count", json!(2)),
            json!({"watermark": 9}),
            window("a", 10, 20, "count", json!(2)),
            json!({"watermark": i64::MAX}),
        ]
    );
    let stamps: Vec<_> = output.records().iter().map(|e| e.timestamp).collect();
    assert_eq!(stamps, [Some(9), Some(9), Some(19)]);
    assert_eq!(output.records()[0].key.as_deref(), Some(&b"a"[..]));
}

#[test]
fn an_element_is_late_only_once_its_window_is_past_cleanup() {
    // Flink: an element behind the watermark still counts while its window has not
    // fired (max timestamp + allowed lateness > watermark). A process function that
    // dropped everything behind the watermark would lose the element at 7 here.
    let mut h = OperatorHarness::window(r#"type = "tumbling"
size_ms = 10
aggregate = { builtin = "count" }"#)
    .unwrap();
    h.element(at("a", 8)).watermark(7).element(at("a", 7)).element(at("a", 2));
    h.watermark(9).element(at("a", 5));
    let output = h.finish().unwrap();
    assert_eq!(records(&output), [window("a", 0, 10, "count", json!(3))]);
    assert_eq!(output.late.len(), 1, "only the element after the window fired is late");
    assert_eq!(output.late[0].timestamp, Some(5));
    assert_eq!(output.metrics.late_routed(), 1);
}

#[test]
fn allowed_lateness_fires_again_for_each_late_element_until_cleanup() {
    // Flink: with allowed lateness a fired window keeps its state until max timestamp
    // + lateness; each element arriving meanwhile fires it again with the update.
    let mut h = OperatorHarness::window(r#"type = "tumbling"
size_ms = 10
allowed_lateness_ms = 5
aggregate = { builtin = "sum", field = "v" }"#)
    .unwrap();
    h.element(event("a", 1, json!({"v": 1}))).watermark(9);
    h.element(event("a", 2, json!({"v": 10}))).watermark(13).element(event("a", 3, json!({"v": 100})));
    h.watermark(14).element(event("a", 4, json!({"v": 1000})));
    let output = h.finish().unwrap();
    assert_eq!(
        records(&output),
        [
            window("a", 0, 10, "sum", json!(1)),
            window("a", 0, 10, "sum", json!(11)),
            window("a", 0, 10, "sum", json!(111)),
        ]
    );
    assert_eq!(output.late.len(), 1, "cleaned up at 9 + 5 = 14");
    assert_eq!(output.late[0].timestamp, Some(4));
}

#[test]
fn late_elements_without_a_late_route_are_dropped_and_counted() {
    let spec = r#"type = "tumbling"
size_ms = 10
aggregate = { builtin = "count" }"#;
    let mut h = OperatorHarness::window(spec).unwrap();
    h.watermark(100).element(at("a", 5));
    let output = h.finish().unwrap();
    assert!(records(&output).is_empty());
    assert_eq!((output.metrics.late_routed(), output.metrics.late_dropped()), (1, 0));
}

/// Seeded pseudo-random numbers (splitmix64), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> i64 {
        (self.next() % n) as i64
    }
}

#[test]
fn sliding_windows_from_panes_match_counting_every_window() {
    // Sliding windows are assembled from gcd(size, slide) panes, with timers that
    // cascade from window to window. Whatever the disorder and allowed lateness, the
    // firings must be those of a model that adds each element to every window that
    // contains it, as Flink's SlidingEventTimeWindows with its EventTimeTrigger does:
    // a window fires when the watermark reaches its max timestamp, again for each
    // element added before its cleanup, and an element is dropped once every window it
    // falls in is past cleanup.
    for (size, slide, offset, lateness) in [(10, 4, 0, 0), (12, 3, 1, 0), (60, 10, 0, 0), (7, 7, 3, 0), (10, 4, 0, 6), (30, 5, 2, 25)] {
        let mut h = OperatorHarness::window(&format!(
            "type = \"sliding\"\nsize_ms = {size}\nslide_ms = {slide}\noffset_ms = {offset}\nallowed_lateness_ms = {lateness}\naggregate = {{ builtin = \"sum\", field = \"v\" }}"
        ))
        .unwrap();
        let mut rng = Rng(size as u64 * 31 + slide as u64 + lateness as u64);
        // The model: per (key, window start) its sum and whether it fired.
        let mut windows: BTreeMap<(String, i64), (i64, bool)> = BTreeMap::new();
        let mut expected: Vec<(String, i64, i64)> = Vec::new();
        let mut late = 0;
        let mut watermark = i64::MIN;
        let mut max_seen = 0;
        let fire_due = |windows: &mut BTreeMap<(String, i64), (i64, bool)>, expected: &mut Vec<(String, i64, i64)>, watermark: i64| {
            for ((key, start), (sum, fired)) in windows.iter_mut() {
                if !*fired && start + size - 1 <= watermark {
                    *fired = true;
                    expected.push((key.clone(), *start, *sum));
                }
            }
        };
        for i in 0..2_000 {
            let key = ["a", "b", "c"][rng.below(3) as usize];
            let ts = (i / 4 + rng.below(40) - 20).max(0);
            let v = rng.below(100);
            h.element(event(key, ts, json!({ "v": v })));
            let last_start = ts - (ts - offset).rem_euclid(slide);
            if last_start + size - 1 + lateness <= watermark {
                late += 1;
            } else {
                let mut start = last_start - ((size - 1) / slide) * slide;
                while start <= last_start {
                    if start + size > ts && start + size - 1 + lateness > watermark {
                        let entry = windows.entry((key.to_string(), start)).or_default();
                        entry.0 += v;
                        if start + size - 1 <= watermark {
                            entry.1 = true;
                            expected.push((key.to_string(), start, entry.0));
                        }
                    }
                    start += slide;
                }
            }
            max_seen = max_seen.max(ts);
            if rng.below(10) == 0 && max_seen - 15 > watermark {
                watermark = max_seen - 15;
                h.watermark(watermark);
                fire_due(&mut windows, &mut expected, watermark);
            }
        }
        fire_due(&mut windows, &mut expected, i64::MAX);
        let output = h.finish().unwrap();
        let mut got: Vec<(String, i64, i64)> = records(&output)
            .iter()
            .map(|r| {
                assert_eq!(r["window_end"].as_i64().unwrap() - r["window_start"].as_i64().unwrap(), size);
                (r["key"].as_str().unwrap().to_string(), r["window_start"].as_i64().unwrap(), r["sum"].as_i64().unwrap())
            })
            .collect();
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "size {size}, slide {slide}, offset {offset}, lateness {lateness}");
        assert_eq!(output.metrics.late_routed(), late);
        if size < 20 {
            assert!(late > 0, "the input has late elements");
        }
    }
}

#[test]
fn sessions_merge_when_an_element_bridges_them() {
    // Flink's EventTimeSessionWindows: each element opens [ts, ts + gap); windows
    // that overlap merge, with their contents and timers.
    let mut h = OperatorHarness::window(r#"type = "session"
gap_ms = 10
allowed_lateness_ms = 100
aggregate = { builtin = "count" }"#)
    .unwrap();
    h.element(at("a", 0)).element(at("a", 5)).element(at("a", 22)).element(at("b", 1));
    // [0, 15) and [22, 32) are separate; the watermark fires [1, 11) for b and [0, 15) for a.
    h.watermark(20);
    // A late element at 13 ([13, 23)) bridges [0, 15) and [22, 32), whose state allowed
    // lateness kept: the merged session [0, 32) holds all four elements and fires at 31.
    h.element(at("a", 13)).watermark(45);
    let output = h.finish().unwrap();
    assert_eq!(
        records(&output),
        [
            window("b", 1, 11, "count", json!(1)),
            window("a", 0, 15, "count", json!(2)),
            window("a", 0, 32, "count", json!(4)),
        ]
    );
}

#[test]
fn count_windows_fire_every_n_elements_per_key() {
    // Flink's countWindow(3): tumbling, purged after each firing.
    let mut h = OperatorHarness::window(r#"type = "count"
size = 3
aggregate = { builtin = "sum", field = "v" }"#)
    .unwrap();
    for v in 1..=7 {
        h.element(event("a", v, json!({ "v": v })));
    }
    let output = h.finish().unwrap();
    assert_eq!(records(&output), [json!({"key": "a", "sum": 6}), json!({"key": "a", "sum": 15})]);

    // countWindow(3, 1): every element fires the last three (Flink's CountEvictor).
    let mut h = OperatorHarness::window(r#"type = "count"
size = 3
slide = 1
aggregate = { builtin = "sum", field = "v" }"#)
    .unwrap();
    for v in 1..=5 {
        h.element(event("a", v, json!({ "v": v })));
    }
    let sums: Vec<_> = records(&h.finish().unwrap()).iter().map(|r| r["sum"].as_i64().unwrap()).collect();
    assert_eq!(sums, [1, 3, 6, 9, 12]);
}

#[test]
fn triggers_replace_the_default_firing() {
    // CountTrigger.of(2) on tumbling windows: fires every second element, and not at
    // the window's end; the window's state is still removed at its end.
    let mut h = OperatorHarness::window(r#"type = "tumbling"
size_ms = 100
trigger = { type = "count", count = 2 }
aggregate = { builtin = "count" }"#)
    .unwrap();
    h.element(at("a", 1)).element(at("a", 2)).element(at("a", 3)).watermark(150).element(at("a", 160));
    let output = h.finish().unwrap();
    assert_eq!(records(&output), [window("a", 0, 100, "count", json!(2))]);

    // PurgingTrigger.of(CountTrigger.of(2)): each firing starts the window afresh.
    let mut h = OperatorHarness::window(r#"type = "tumbling"
size_ms = 100
trigger = { type = "count", count = 2, purging = true }
aggregate = { builtin = "count" }"#)
    .unwrap();
    for ts in 1..=5 {
        h.element(at("a", ts));
    }
    let counts: Vec<_> = records(&h.finish().unwrap()).iter().map(|r| r["count"].as_i64().unwrap()).collect();
    assert_eq!(counts, [2, 2]);

    // ContinuousEventTimeTrigger.of(10): early firings every 10 ms of event time
    // within the window, then the final firing at its end.
    let mut h = OperatorHarness::window(r#"type = "tumbling"
size_ms = 30
trigger = { type = "continuous-event-time", interval_ms = 10 }
aggregate = { builtin = "count" }"#)
    .unwrap();
    h.element(at("a", 1)).watermark(10).element(at("a", 12)).watermark(20).element(at("a", 25)).watermark(29);
    let counts: Vec<_> = records(&h.finish().unwrap()).iter().map(|r| r["count"].as_i64().unwrap()).collect();
    assert_eq!(counts, [1, 2, 3]);
}

#[test]
fn global_windows_never_fire_without_a_trigger() {
    let mut h = OperatorHarness::window(r#"type = "global"
aggregate = { builtin = "count" }"#)
    .unwrap();
    h.element(at("a", 1)).watermark(1_000);
    assert!(records(&h.finish().unwrap()).is_empty());
    let mut h = OperatorHarness::window(r#"type = "global"
trigger = { type = "count", count = 2 }
aggregate = { builtin = "max", field = "v" }"#)
    .unwrap();
    for v in [3, 9, 4, 1] {
        h.element(event("k", 0, json!({ "v": v })));
    }
    assert_eq!(records(&h.finish().unwrap()), [json!({"key": "k", "max": 9}), json!({"key": "k", "max": 9})]);
}

#[test]
fn a_window_over_bad_elements_names_the_key_and_the_window() {
    let mut h = OperatorHarness::window(r#"type = "tumbling"
size_ms = 60000
aggregate = { builtin = "avg", field = "latency" }"#)
    .unwrap();
    h.element(event("alice", 61_000, json!({"latency": "slow"})));
    let error = h.finish().unwrap_err().to_string();
    assert!(error.contains("key `alice`"), "{error}");
    assert!(error.contains("window [60000, 120000)"), "{error}");
    assert!(error.contains("field `latency` is not a number"), "{error}");
}

#[test]
fn open_windows_are_bounded_by_a_limit_with_a_clear_error() {
    let mut h = OperatorHarness::window(r#"type = "tumbling"
size_ms = 1
max_open_windows = 100
aggregate = { builtin = "count" }"#)
    .unwrap();
    for ts in 0..101 {
        h.element(at("k", ts));
    }
    let error = h.finish().unwrap_err().to_string();
    assert!(error.contains("more than 100 open windows"), "{error}");
    assert!(error.contains("window.max_open_windows"), "{error}");
}

#[test]
fn process_functions_receive_late_elements_unless_the_job_drops_them() {
    // Flink's KeyedProcessFunction sees every element, late or not; `late = "drop"`
    // restores weir's old behaviour. The hand-built tumbling count registers a timer
    // for the late element's window, which fires at the next watermark.
    let run = |drop: bool| {
        let harness = OperatorHarness::wasm(std::path::Path::new(common::guests::TUMBLING_COUNT), &[("size_ms", "10")]).unwrap();
        let mut h = if drop { harness.drop_late() } else { harness };
        h.element(at("a", 1)).watermark(10).element(at("a", 2)).watermark(11);
        h.finish().unwrap()
    };
    let delivered = run(false);
    assert_eq!(records(&delivered), [window("a", 0, 10, "count", json!(1)), window("a", 0, 10, "count", json!(1))]);
    assert_eq!(delivered.late.len(), 0);
    let dropped = run(true);
    assert_eq!(records(&dropped), [window("a", 0, 10, "count", json!(1))]);
    assert_eq!(dropped.late.len(), 1);
}

fn guest(path: &str) -> String {
    format!("{{ component = {path:?} }}")
}

#[test]
fn a_guest_aggregate_computes_what_the_builtin_does() {
    // Flink's aggregate(AggregateFunction) with a component: sliding windows merge the
    // guest's pane accumulators through its `merge`, and agree with the built-in avg.
    let input: Vec<(&str, i64, i64)> = (0..300).map(|i| (["a", "b"][i % 2], (i as i64 * 7) % 97 + i as i64 / 3, (i as i64 * 13) % 50)).collect();
    let run = |aggregate: String| {
        let mut h = OperatorHarness::window(&format!(
            "type = \"sliding\"\nsize_ms = 30\nslide_ms = 10\naggregate = {aggregate}"
        ))
        .unwrap();
        for (key, ts, v) in &input {
            h.element(event(key, *ts, json!({ "v": v })));
            if ts % 5 == 0 {
                h.watermark(ts - 40);
            }
        }
        records(&h.finish().unwrap())
    };
    let builtin = run(r#"{ builtin = "avg", field = "v" }"#.into());
    let wasm = run(format!("{{ component = {:?} }}", common::guests::WINDOW_AVERAGE));
    assert!(!builtin.is_empty());
    assert_eq!(wasm.len(), builtin.len());
    for (w, b) in wasm.iter().zip(&builtin) {
        assert!((w["avg"].as_f64().unwrap() - b["avg"].as_f64().unwrap()).abs() < 1e-9, "{w} vs {b}");
        assert!(w["count"].as_u64().unwrap() > 0);
    }
}

#[test]
fn a_reduce_function_keeps_one_value_per_window() {
    let mut h = OperatorHarness::window(&format!(
        "type = \"tumbling\"\nsize_ms = 10\nreduce = {}",
        guest(common::guests::WINDOW_MAX)
    ))
    .unwrap();
    for (ts, v) in [(1, 3), (2, 9), (3, 4), (11, 1)] {
        h.element(event("k", ts, json!({ "v": v, "ts": ts })));
    }
    let output = h.finish().unwrap();
    assert_eq!(records(&output), [json!({"v": 9, "ts": 2}), json!({"v": 1, "ts": 11})]);
    // The window's key and max timestamp, as Flink stamps window output.
    let first = &output.records()[0];
    assert_eq!((first.key.as_deref(), first.timestamp), (Some(&b"k"[..]), Some(9)));
}

#[test]
fn a_process_window_function_gets_every_element_or_the_aggregate() {
    // Flink's process(ProcessWindowFunction): all elements of a (merged) session.
    let mut h = OperatorHarness::window(&format!(
        "type = \"session\"\ngap_ms = 10\nprocess = {}",
        guest(common::guests::WINDOW_SUMMARY)
    ))
    .unwrap();
    for (ts, v) in [(0, 1), (20, 3), (5, 2), (40, 4)] {
        h.element(event("u", ts, json!({ "v": v })));
    }
    assert_eq!(
        records(&h.finish().unwrap()),
        [
            json!({"key": "u", "start": 0, "end": 15, "count": 2, "values": [{"v": 1}, {"v": 2}]}),
            json!({"key": "u", "start": 20, "end": 30, "count": 1, "values": [{"v": 3}]}),
            json!({"key": "u", "start": 40, "end": 50, "count": 1, "values": [{"v": 4}]}),
        ]
    );
    // aggregate(aggregateFunction, processWindowFunction): the one aggregate result.
    let mut h = OperatorHarness::window(&format!(
        "type = \"tumbling\"\nsize_ms = 10\naggregate = {}\nprocess = {}",
        guest(common::guests::WINDOW_AVERAGE),
        guest(common::guests::WINDOW_SUMMARY)
    ))
    .unwrap();
    for v in [1, 2, 6] {
        h.element(event("u", v, json!({ "v": v })));
    }
    assert_eq!(
        records(&h.finish().unwrap()),
        [json!({"key": "u", "start": 0, "end": 10, "count": 1, "values": [{"avg": 3.0, "count": 3}]})]
    );
}

#[test]
fn a_failing_window_function_names_the_key_and_the_window() {
    let mut h = OperatorHarness::window(&format!(
        "type = \"tumbling\"\nsize_ms = 10\naggregate = {}",
        guest(common::guests::WINDOW_AVERAGE)
    ))
    .unwrap();
    h.element(event("bob", 12, json!({ "fail": true })));
    let error = h.finish().unwrap_err().to_string();
    assert!(error.contains("key `bob`, window [10, 20)"), "{error}");
    assert!(error.contains("asked to fail"), "{error}");
    // An operator component is not an aggregate function: refused at load, saying why.
    let wrong = OperatorHarness::window(&format!(
        "type = \"tumbling\"\nsize_ms = 10\naggregate = {}",
        guest(common::guests::KEYED_COUNT)
    ));
    let error = wrong.err().unwrap().to_string();
    assert!(error.contains("does not implement the weir:operator/aggregate-function world"), "{error}");
}

#[test]
fn rocksdb_jobs_keep_timers_in_rocksdb_or_on_the_heap_as_configured() {
    // The orders example (tumbling windows with allowed lateness and a late output, two
    // subtasks) on RocksDB gives Flink's output with its timers in RocksDB (the
    // default, a database per subtask beside the state's) and on the heap.
    use weir::job::spec::{BackendKind, TimerStoreKind};
    for timers in [TimerStoreKind::Backend, TimerStoreKind::Heap] {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = common::example("orders", dir.path());
        spec.state.backend = BackendKind::Rocksdb;
        spec.state.dir = Some(dir.path().join("state"));
        spec.state.timers = timers;
        // Paced so that the working databases can be seen while the job runs (a finished
        // job removes them).
        for source in &mut spec.sources {
            if let weir::job::spec::SourceSpec::File { rate, path, .. } = source {
                *path = common::root().join("examples/orders").join(&*path);
                *rate = Some(100.0);
            }
        }
        let state = dir.path().join("state");
        let running = std::thread::spawn(move || common::run(spec));
        let mut timer_dbs = std::collections::BTreeSet::new();
        while !running.is_finished() {
            for entry in std::fs::read_dir(&state).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with("-timers") {
                    timer_dbs.insert(name);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        running.join().unwrap().unwrap();
        let out = |file: &str| common::sorted_lines(&dir.path().join(file));
        assert_eq!(out("revenue.jsonl"), common::expected("orders", "expected-revenue.jsonl"), "{timers:?}");
        assert_eq!(out("late.jsonl"), common::expected("orders", "expected-late.jsonl"), "{timers:?}");
        let timer_dbs: Vec<String> = timer_dbs.into_iter().collect();
        let left: Vec<String> =
            std::fs::read_dir(&state).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(left, [".weir-owned"], "the finished job's working databases are gone");
        let expected: &[&str] = match timers {
            TimerStoreKind::Backend => &["revenue#0-timers", "revenue#1-timers"],
            TimerStoreKind::Heap => &[],
        };
        assert_eq!(timer_dbs, expected);
    }
}
