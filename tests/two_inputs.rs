//! Two-input operators with broadcast state (Flink's broadcast state pattern), through
//! `examples/enrichment`: orders keyed by customer on input 1, customer tiers broadcast
//! on input 2.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn read_json(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The example job with its outputs and checkpoints in `out`.
fn enrichment(out: &Path) -> weir::JobSpec {
    let mut spec = example("enrichment", out);
    spec.checkpoint.as_mut().unwrap().dir = Some(out.join("checkpoints"));
    spec
}

/// Per customer, its tiers in the order the broadcast stream sends them.
fn tier_updates() -> BTreeMap<String, Vec<String>> {
    let mut updates: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in read_json(&root().join("examples/enrichment/tiers.jsonl")) {
        updates.entry(t["customer"].as_str().unwrap().into()).or_default().push(t["tier"].as_str().unwrap().into());
    }
    updates
}

#[test]
fn orders_carry_the_tier_broadcast_so_far_and_tier_changes_apply_mid_run() {
    let out = tempfile::tempdir().unwrap();
    let summary = run(enrichment(out.path())).unwrap();
    // Each subtask of `enrich` (3) got every tier; the orders were split among them.
    assert_eq!(summary.node("enrich").unwrap().records_in, 3000 + 3 * 44);
    check_enriched(&out.path().join("enriched.jsonl"));
}

#[test]
fn the_python_port_enriches_the_same_way() {
    // examples/python-enrichment: a PyFlink KeyedBroadcastProcessFunction.
    port_enriches_the_same_way("python-enrichment", guests::PY_ENRICHMENT);
}

#[test]
fn the_javascript_port_enriches_the_same_way() {
    // examples/js-enrichment: a KeyedBroadcastProcessFunction in JavaScript.
    port_enriches_the_same_way("js-enrichment", guests::JS_ENRICHMENT);
}

#[test]
fn the_c_port_enriches_the_same_way() {
    // examples/c-enrichment: process_element_2 and weir_broadcast_* in C.
    port_enriches_the_same_way("c-enrichment", guests::C_ENRICHMENT);
}

fn port_enriches_the_same_way(example_name: &str, component: &str) {
    let port = |out: &Path| {
        let mut spec = example(example_name, out);
        spec.checkpoint.as_mut().unwrap().dir = Some(out.join("checkpoints"));
        spec.operators[0].component = Some(component.into());
        spec
    };
    let out = tempfile::tempdir().unwrap();
    run(port(out.path())).unwrap();
    check_enriched(&out.path().join("enriched.jsonl"));
    let out = tempfile::tempdir().unwrap();
    let mut spec = port(out.path());
    spec.operators[0].config.insert("misbehave".into(), toml::Value::String("true".into()));
    let error = run(spec).unwrap_err().to_string();
    assert!(error.contains("broadcast state `tiers` is read-only here"), "{error}");
}

/// Every order once, each with a tier its customer had when it was processed: per
/// customer, in order, never one it never had and never back to an older one; and some
/// customer's tier changed mid-run.
fn check_enriched(path: &Path) {
    let enriched = read_json(path);
    let mut orders: Vec<u64> = enriched.iter().map(|e| e["order"].as_u64().unwrap()).collect();
    orders.sort();
    assert_eq!(orders, (1..=3000).collect::<Vec<_>>(), "every order once");
    // Per customer, in order, the tiers seen follow the customer's updates: never one it
    // never had, never back to an older one.
    let updates = tier_updates();
    let mut seen: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for e in &enriched {
        seen.entry(e["customer"].as_str().unwrap().into()).or_default().push((e["order"].as_u64().unwrap(), e["tier"].as_str().unwrap().into()));
    }
    let mut changed = 0;
    for (customer, mut orders) in seen {
        orders.sort();
        let sent = &updates[&customer];
        let mut at: Option<usize> = None;
        for (order, tier) in &orders {
            if tier == "unknown" {
                assert!(at.is_none(), "{customer}: order {order} lost its tier");
                continue;
            }
            if at.is_some_and(|i| sent[i] == *tier) {
                continue;
            }
            let from = at.map_or(0, |i| i + 1);
            let next = sent[from..].iter().position(|t| t == tier).unwrap_or_else(|| {
                panic!("{customer}: order {order} has tier {tier}, not one of {:?} after {at:?}", sent)
            });
            at = Some(from + next);
        }
        let known: std::collections::BTreeSet<_> = orders.iter().filter(|(_, t)| t != "unknown").map(|(_, t)| t).collect();
        changed += usize::from(known.len() > 1);
    }
    assert!(changed > 0, "some customer's tier changed mid-run and its later orders show it");
}

#[test]
fn a_write_to_broadcast_state_from_the_keyed_side_is_refused() {
    let out = tempfile::tempdir().unwrap();
    let mut spec = enrichment(out.path());
    spec.operators[0].config.insert("misbehave".into(), toml::Value::String("true".into()));
    let error = run(spec).unwrap_err().to_string();
    assert!(error.contains("operator `enrich`"), "{error}");
    assert!(error.contains("broadcast state `tiers` is read-only here"), "{error}");
    assert!(error.contains("orders.jsonl line"), "the order that tried it: {error}");
}

#[test]
fn broadcast_state_is_whole_on_every_subtask_after_restore_at_a_new_parallelism() {
    // Tiers all read at once; orders slow. A savepoint at parallelism 2, restored at 4:
    // every new subtask reports the same tiers, the last of each customer's, and every
    // order after the restore carries that tier.
    let dir = tempfile::tempdir().unwrap();
    for file in ["orders.jsonl", "tiers.jsonl"] {
        std::fs::copy(root().join("examples/enrichment").join(file), dir.path().join(file)).unwrap();
    }
    let job = std::fs::read_to_string(root().join("examples/enrichment/job.toml")).unwrap();
    let job = job.replace("rate = 1500", "rate = 600").replace("rate = 25\n", "");
    let write = |parallelism: u32| {
        std::fs::write(dir.path().join("job.toml"), job.replace("parallelism = 3", &format!("parallelism = {parallelism}"))).unwrap();
    };
    let weir = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_weir")).args(args).current_dir(dir.path()).output().unwrap();
    write(2);
    let child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "job.toml", "--plugin-dir", guests::GUEST_DIR])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let enriched = dir.path().join("out/enriched.jsonl");
    for _ in 0..2000 {
        if dir.path().join(".weir/enrichment/control.addr").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // The tiers are read at once; a second of orders at 600/s.
    std::thread::sleep(Duration::from_millis(1000));
    let stop = weir(&["stop", "job.toml", "--savepoint", "sp"]);
    let first = child.wait_with_output().unwrap();
    assert!(stop.status.success(), "{}\n{}", String::from_utf8_lossy(&stop.stderr), String::from_utf8_lossy(&first.stderr));
    let before = read_json(&enriched).len();
    assert!(before < 3000, "stopped mid-stream");
    let inspect = weir(&["savepoint", "inspect", "sp"]);
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(text.contains("broadcast state `tiers`: 20 entries"), "{text}");

    write(4);
    let run = weir(&["run", "job.toml", "--plugin-dir", guests::GUEST_DIR, "--from-savepoint", "sp"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let last: BTreeMap<String, String> =
        tier_updates().into_iter().map(|(customer, tiers)| (customer, tiers.last().unwrap().clone())).collect();
    let reports = read_json(&dir.path().join("out/restored.jsonl"));
    let mut subtasks: Vec<u64> = reports.iter().map(|r| r["subtask"].as_u64().unwrap()).collect();
    subtasks.sort();
    assert_eq!(subtasks, [0, 1, 2, 3], "{reports:?}");
    for report in &reports {
        let tiers: BTreeMap<String, String> = serde_json::from_value(report["tiers"].clone()).unwrap();
        assert_eq!(tiers, last, "subtask {} holds every customer's last tier", report["subtask"]);
    }
    let all = read_json(&enriched);
    assert_eq!(all.len(), 3000, "every order once across the restore");
    for e in &all[before..] {
        assert_eq!(e["tier"].as_str().unwrap(), last[e["customer"].as_str().unwrap()], "{e}");
    }
}

/// A two-input job: generated events (event time 0, 10, 20, ... ms) into input 1 of a
/// pass-through operator, and an empty Kafka topic, broadcast, into input 2.
fn idle_second_input(broker: &common::kafka::Broker, idle_timeout: &str, dir: &Path) -> weir::JobSpec {
    let text = format!(
        r#"
        name = "two-watermarks"
        [[source]]
        type = "generator"
        uid = "events"
        count = 1000000
        keys = 10
        step_ms = 10
        rate = 2000

        [[source]]
        type = "kafka"
        uid = "rules"
        brokers = "{addr}"
        topics = ["rules"]
        {idle_timeout}

        [[operator]]
        uid = "pass"
        component = "{pass}"

        [[sink]]
        type = "discard"
        uid = "out"

        [[edge]]
        from = "events"
        to = "pass"

        [[edge]]
        from = "rules"
        to = "pass"
        input = 2
        partition = "broadcast"

        [[edge]]
        from = "pass"
        to = "out"
        "#,
        addr = broker.addr(),
        pass = guests::PASSTHROUGH,
    );
    job(&text, dir)
}

/// The operator's watermark after the job ran `for_ms`.
fn watermark_after(spec: weir::JobSpec, for_ms: u64) -> i64 {
    let job = weir::Job::new(spec, &options()).unwrap();
    let (control, live) = (job.control(), job.live_metrics());
    let running = std::thread::spawn(move || job.run());
    std::thread::sleep(Duration::from_millis(for_ms));
    let watermark = live.snapshot().node("pass").unwrap().watermark.unwrap();
    control.stop();
    running.join().unwrap().unwrap();
    watermark
}

#[test]
fn an_idle_second_input_does_not_hold_back_the_watermark() {
    let broker = common::kafka::Broker::start();
    broker.create_topic("rules", 1);
    // The second input idle after 300 ms: the watermark follows the first input.
    let dir = tempfile::tempdir().unwrap();
    let idle = watermark_after(idle_second_input(&broker, "watermark = { idle_timeout_ms = 300 }", dir.path()), 2500);
    assert!(idle > 1000, "the watermark follows input 1 (10 ms per event at 2000/s): {idle}");
    // Without idleness, the silent second input holds it at its start, as in Flink.
    let held = watermark_after(idle_second_input(&broker, "", dir.path()), 1500);
    assert_eq!(held, i64::MIN, "the least over both inputs");
}

#[test]
fn dynamic_rules_alert_on_the_rule_in_force_when_each_reading_came() {
    let out = tempfile::tempdir().unwrap();
    let mut spec = example("dynamic-rules", out.path());
    spec.checkpoint.as_mut().unwrap().dir = Some(out.path().join("checkpoints"));
    run(spec).unwrap();
    let rules: Vec<(String, f64)> = read_json(&root().join("examples/dynamic-rules/rules.jsonl"))
        .iter()
        .map(|r| (r["sensor"].as_str().unwrap().to_string(), r["threshold"].as_f64().unwrap()))
        .collect();
    let readings: BTreeMap<u64, f64> = read_json(&root().join("examples/dynamic-rules/readings.jsonl"))
        .iter()
        .map(|r| (r["seq"].as_u64().unwrap(), r["value"].as_f64().unwrap()))
        .collect();
    let mut alerts = read_json(&out.path().join("alerts.jsonl"));
    alerts.sort_by_key(|a| a["seq"].as_u64().unwrap());
    assert!(!alerts.is_empty());
    // Each alert: a reading above a threshold some rule for its sensor (or `*`) set;
    // per sensor, in reading order, the rules applied never go back to an older one.
    let mut applied: BTreeMap<String, usize> = BTreeMap::new();
    let mut thresholds = std::collections::BTreeSet::new();
    for alert in &alerts {
        let (sensor, rule) = (alert["sensor"].as_str().unwrap(), alert["rule"].as_str().unwrap());
        let threshold = alert["threshold"].as_f64().unwrap();
        let value = readings[&alert["seq"].as_u64().unwrap()];
        assert_eq!(alert["value"].as_f64().unwrap(), value);
        assert!(value > threshold, "{alert}");
        assert!(rule == sensor || rule == "*", "{alert}");
        let index = rules
            .iter()
            .enumerate()
            .skip(applied.get(&format!("{sensor}/{rule}")).copied().unwrap_or(0))
            .find(|(_, (s, t))| s == rule && *t == threshold)
            .unwrap_or_else(|| panic!("{alert}: no rule {rule} = {threshold} at or after the last one applied"))
            .0;
        applied.insert(format!("{sensor}/{rule}"), index);
        thresholds.insert(format!("{rule}={threshold}"));
    }
    assert!(thresholds.len() > 1, "rules changed mid-run and later alerts used them: {thresholds:?}");
}
