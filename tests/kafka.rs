//! Kafka sources and sinks against a real broker (tansu, started per test), and the
//! transactional sink's protocol against librdkafka's mock cluster (tansu 0.6 has no
//! EndTxn): crash tests for at-least-once and exactly-once delivery, per-partition
//! watermarks with an idle partition, start positions, the record mapping,
//! dead letters, and broker faults.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::crash::*;
use common::kafka::*;
use common::*;
use weir::job::spec::{KafkaDelivery, KafkaSinkSpec};
use weir::sink::{Delivery, KafkaSink, Sink};
use weir::task::JobControl;
use weir::{Event, Job, JobError, JobSpec, JobSummary};

const TUMBLING_BASE: i64 = 1_767_225_600_000;

fn checkpoint_table(interval_ms: u64) -> String {
    format!(
        "[checkpoint]\ndir = \"checkpoints\"\ninterval_ms = {interval_ms}\ntimeout_ms = 10000\nretained = 2\ntolerable_failures = 3\n"
    )
}

/// A job that copies a Kafka topic into `out.jsonl`, with extra source keys.
fn copy_job(broker: &Broker, topic: &str, source_extra: &str, sink_format: &str, tail: &str) -> String {
    format!(
        r#"
        name = "copy"
        {tail}
        [[source]]
        type = "kafka"
        uid = "in"
        brokers = "{addr}"
        topics = ["{topic}"]
        {source_extra}

        [[sink]]
        type = "file"
        uid = "out"
        path = "out.jsonl"
        format = "{sink_format}"

        [[edge]]
        from = "in"
        to = "out"
        "#,
        addr = broker.addr()
    )
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

/// Runs a job on a thread; the test stops it through the returned control.
fn spawn(spec: JobSpec) -> (Arc<JobControl>, std::thread::JoinHandle<Result<JobSummary, JobError>>) {
    let job = Job::new(spec, &options()).unwrap();
    let control = job.control();
    (control, std::thread::spawn(move || job.run()))
}

/// Waits until `path` has at least `count` lines.
fn wait_for_lines(path: &Path, count: usize, what: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = lines(path);
        if found.len() >= count {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: {} of {count} lines after 60 s: {found:?}", found.len());
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- exactly-once and at-least-once across crashes ----

/// The tumbling-count example reading its input from a one-partition topic, paced to
/// `rate` records per second, checkpointing every 50 ms into files in `dir`.
fn kafka_tumbling_job(broker: &Broker, dir: &Path, rate: f64) -> PathBuf {
    let text = format!(
        r#"
        name = "kafka-tumbling"
        [[source]]
        type = "kafka"
        uid = "events"
        brokers = "{addr}"
        topics = ["events"]
        bounded = true
        key_field = "sensor"
        timestamp_field = "ts"
        rate = {rate}
        watermark = {{ max_out_of_orderness_ms = 10000 }}

        [[operator]]
        uid = "count"
        window = {{ type = "tumbling", size_ms = 60000, aggregate = {{ builtin = "count" }} }}

        [[sink]]
        type = "file"
        uid = "windows"
        path = "windows.jsonl"

        [[sink]]
        type = "file"
        uid = "late"
        path = "late.jsonl"

        [[edge]]
        from = "events"
        to = "count"
        partition = "keyed"

        [[edge]]
        from = "count"
        to = "windows"

        [[edge]]
        from = "count"
        output = "late"
        to = "late"

        {checkpoint}
        "#,
        addr = broker.addr(),
        checkpoint = checkpoint_table(50),
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn kafka_to_file_is_exactly_once_across_crashes() {
    let broker = Broker::start();
    broker.create_topic("events", 1);
    let input = std::fs::read_to_string(root().join("examples/tumbling-count/input.jsonl")).unwrap();
    broker.produce("events", input.lines().map(|line| (0, None, line.to_string(), None)));

    let straight = tempfile::tempdir().unwrap();
    run_with_kills(&kafka_tumbling_job(&broker, straight.path(), 2000.0), &[]);
    let crashed = tempfile::tempdir().unwrap();
    let kills = kill_moments(17, 3);
    let resumes = run_with_kills(&kafka_tumbling_job(&broker, crashed.path(), 100.0), &kills);
    assert!(resumes > 0, "no run resumed from a checkpoint; the kills came too early");

    for file in ["windows.jsonl", "late.jsonl"] {
        let expected = std::fs::read(straight.path().join(file)).unwrap();
        assert_eq!(
            std::fs::read(crashed.path().join(file)).unwrap(),
            expected,
            "{file} after kills at {kills:?} ms"
        );
    }
    // And both equal the example's own expected output from its file input.
    assert_eq!(sorted_lines(&straight.path().join("windows.jsonl")), expected("tumbling-count", "expected.jsonl"));
}

#[test]
fn kafka_to_kafka_at_least_once_loses_nothing_across_crashes() {
    let broker = Broker::start();
    broker.create_topic("in", 2);
    broker.create_topic("counts", 2);
    const KEYS: usize = 20;
    const PER_KEY: usize = 100;
    let keys: Vec<String> = (0..KEYS).map(|k| format!("k{k}")).collect();
    broker.produce(
        "in",
        (0..KEYS * PER_KEY).map(|i| ((i % 2) as i32, Some(keys[i % KEYS].as_str()), format!("{{\"i\":{i}}}"), None)),
    );
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
        name = "kafka-count"
        [[source]]
        type = "kafka"
        uid = "in"
        brokers = "{addr}"
        topics = ["in"]
        bounded = true
        rate = 1500

        [[operator]]
        uid = "count"
        component = "keyed_count.wasm"
        parallelism = 2

        [[sink]]
        type = "kafka"
        uid = "out"
        brokers = "{addr}"
        topic = "counts"
        delivery = "at-least-once"

        [[edge]]
        from = "in"
        to = "count"
        partition = "keyed"

        [[edge]]
        from = "count"
        to = "out"

        {checkpoint}
        "#,
        addr = broker.addr(),
        checkpoint = checkpoint_table(50),
    );
    let job = dir.path().join("job.toml");
    std::fs::write(&job, text).unwrap();
    let kills = kill_moments(23, 3);
    assert!(run_with_kills(&job, &kills) > 0, "no run resumed from a checkpoint");

    // Every input is reflected: each key's counts 1..=PER_KEY all reached the topic
    // (a restore may repeat some, never skip one).
    let mut seen: std::collections::BTreeMap<String, std::collections::BTreeSet<u64>> = Default::default();
    for read in broker.read_all("counts") {
        let value: serde_json::Value = serde_json::from_str(&read.value).unwrap();
        let key = value["key"].as_str().unwrap().to_string();
        assert_eq!(read.key.as_deref(), Some(key.as_str()), "the record key is the event key");
        seen.entry(key).or_default().insert(value["count"].as_u64().unwrap());
    }
    assert_eq!(seen.len(), KEYS);
    for (key, counts) in seen {
        assert_eq!(counts, (1..=PER_KEY as u64).collect(), "counts of {key} after kills at {kills:?} ms");
    }
}

// ---- the transactional sink on librdkafka's mock cluster ----

fn exactly_once_spec(brokers: &str) -> KafkaSinkSpec {
    KafkaSinkSpec {
        uid: "out".into(),
        brokers: brokers.into(),
        topic: Some("out".into()),
        topic_field: None,
        delivery: KafkaDelivery::ExactlyOnce,
        transaction_timeout_ms: 60_000,
        properties: Default::default(),
        sequence: false,
        repartition: None,
    }
}

fn event(i: u32) -> Event {
    Event { key: Some(format!("k{i}").into_bytes()), value: format!("v{i}").into_bytes(), timestamp: Some(i as i64), headers: vec![] }
}

/// The records that reached the mock cluster's topic. The mock implements the
/// transactional protocol (producer ids, epochs, fencing, EndTxn) but not read
/// isolation, so this shows what was written, committed or not; what commits is
/// shown by where EndTxn is sent and by fencing.
fn written(brokers: &str) -> Vec<String> {
    read_topic(brokers, "out").into_iter().map(|r| r.value).collect()
}

fn mock_cluster() -> (rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>, String) {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("out", 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    (mock, brokers)
}

#[test]
fn the_transactional_sink_flushes_at_the_barrier_and_holds_later_records_until_the_commit() {
    let (_mock, brokers) = mock_cluster();
    let mut sink = KafkaSink::open(&exactly_once_spec(&brokers), "job", Delivery::Fresh).unwrap();
    for i in 0..3 {
        sink.write(&event(i)).unwrap();
    }
    let state = sink.pre_commit(1).unwrap();
    assert_eq!(state["transactional_id"], "weir-job-out-0", "derived from job, uid and subtask");
    assert_eq!(state["pending"], 1);
    assert_eq!(written(&brokers), ["v0", "v1", "v2"], "acknowledged before the checkpoint is acknowledged");
    // Records after the barrier belong to the next transaction: they wait.
    sink.write(&event(3)).unwrap();
    assert_eq!(written(&brokers).len(), 3);
    sink.commit(1).unwrap();
    sink.write(&event(4)).unwrap();
    // A checkpoint that never completes: its transaction carries over into the next.
    sink.pre_commit(2).unwrap();
    sink.write(&event(5)).unwrap();
    sink.pre_commit(3).unwrap();
    sink.commit(3).unwrap();
    sink.finish().unwrap();
    assert_eq!(written(&brokers), ["v0", "v1", "v2", "v3", "v4", "v5"], "each record once");
}

#[test]
fn the_transaction_ends_when_the_checkpoint_completes_not_at_the_barrier() {
    let (mock, brokers) = mock_cluster();
    let mut sink = KafkaSink::open(&exactly_once_spec(&brokers), "job", Delivery::Fresh).unwrap();
    sink.write(&event(0)).unwrap();
    // Any EndTxn from here on is refused: the barrier must not send one, the commit must.
    let refused = [rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_TXN_STATE; 8];
    mock.request_errors(rdkafka::types::RDKafkaApiKey::EndTxn, &refused);
    sink.pre_commit(1).expect("the barrier flushes without ending the transaction");
    let error = sink.commit(1).unwrap_err().to_string();
    assert!(error.contains("committing the transaction of checkpoint 1"), "{error}");
}

#[test]
fn a_failing_job_aborts_its_transaction_and_a_restart_takes_over() {
    let (_mock, brokers) = mock_cluster();
    let spec = exactly_once_spec(&brokers);
    let mut sink = KafkaSink::open(&spec, "job", Delivery::Fresh).unwrap();
    sink.write(&event(0)).unwrap();
    let state = sink.pre_commit(1).unwrap();
    sink.abort();
    drop(sink);
    let mut restarted = KafkaSink::open(&spec, "job", Delivery::Restore(&state)).unwrap();
    restarted.write(&event(0)).unwrap();
    restarted.pre_commit(1).unwrap();
    restarted.commit(1).unwrap();
}

/// A restarted sink takes over the transactional id of the one before it, which on a
/// Kafka broker fences the old producer (a bumped epoch) and aborts its transaction.
/// librdkafka's mock cluster gives a new producer a new producer id instead of bumping
/// the epoch, so the fencing itself is Kafka's and not observable here; what is
/// checked is that the id is the same and the new producer commits.
#[test]
fn a_restarted_sink_takes_over_the_transactional_id() {
    let (_mock, brokers) = mock_cluster();
    let spec = exactly_once_spec(&brokers);
    let mut old = KafkaSink::open(&spec, "job", Delivery::Fresh).unwrap();
    old.write(&event(0)).unwrap();
    old.pre_commit(1).unwrap();
    old.commit(1).unwrap();
    old.write(&event(1)).unwrap();
    let state = old.pre_commit(2).unwrap();
    // The job restarts from checkpoint 1 with a new sink of the same job, uid, subtask.
    let mut new = KafkaSink::open(&spec, "job", Delivery::Restore(&state)).unwrap();
    new.write(&event(1)).unwrap();
    let new_state = new.pre_commit(2).unwrap();
    assert_eq!(new_state["transactional_id"], state["transactional_id"]);
    new.commit(2).expect("the new producer owns the transactional id");
}

#[test]
fn an_exactly_once_sink_on_a_broker_without_transactions_fails_at_start() {
    let broker = Broker::start();
    broker.create_topic("out", 1);
    let spec = exactly_once_spec(&broker.addr());
    let error = KafkaSink::open(&spec, "job", Delivery::Fresh).err().expect("tansu 0.6 has no transactions").to_string();
    assert!(error.contains("sink `out`"), "{error}");
    assert!(error.contains("delivery = \"at-least-once\""), "{error}");
}

// ---- watermarks, start positions, mapping ----

#[test]
fn an_idle_partition_does_not_hold_back_event_time() {
    let broker = Broker::start();
    broker.create_topic("events", 2);
    // Two minutes of events, all in partition 0; partition 1 stays silent.
    broker.produce(
        "events",
        (0..120).map(|i| (0, None, format!("{{\"sensor\":\"s1\",\"ts\":{}}}", TUMBLING_BASE + i * 1000), None)),
    );
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
        name = "idle"
        [[source]]
        type = "kafka"
        uid = "events"
        brokers = "{addr}"
        topics = ["events"]
        key_field = "sensor"
        timestamp_field = "ts"
        watermark = {{ idle_timeout_ms = 300 }}

        [[operator]]
        uid = "count"
        window = {{ type = "tumbling", size_ms = 60000, aggregate = {{ builtin = "count" }} }}

        [[sink]]
        type = "file"
        uid = "windows"
        path = "windows.jsonl"

        [[edge]]
        from = "events"
        to = "count"
        partition = "keyed"

        [[edge]]
        from = "count"
        to = "windows"
        "#,
        addr = broker.addr()
    );
    let (control, handle) = spawn(job(&text, dir.path()));
    // The unbounded job only closes the first window if partition 1's idleness lets
    // the watermark follow partition 0.
    let windows = wait_for_lines(&dir.path().join("windows.jsonl"), 1, "windows");
    control.cancel();
    handle.join().unwrap().unwrap();
    let window: serde_json::Value = serde_json::from_str(&windows[0]).unwrap();
    assert_eq!(window["window_start"], TUMBLING_BASE);
    assert_eq!(window["count"], 60);
    assert_eq!(windows.len(), 1, "the second window is still open (watermark at the last event - 1)");
}

#[test]
fn start_positions_earliest_latest_timestamp_and_committed() {
    let broker = Broker::start();
    broker.create_topic("t", 1);
    broker.produce("t", (1..=5).map(|i| (0, Some("k"), format!("{{\"i\":{i}}}"), Some(i * 1000))));
    let read = |start: &str, group: &str| {
        let dir = tempfile::tempdir().unwrap();
        let extra = format!("bounded = true\nstart = {start}\ngroup_id = \"{group}\"");
        run(job(&copy_job(&broker, "t", &extra, "value", ""), dir.path())).unwrap();
        lines(&dir.path().join("out.jsonl")).iter().map(|l| l[5..l.len() - 1].parse().unwrap()).collect::<Vec<i64>>()
    };
    assert_eq!(read("\"earliest\"", "a"), [1, 2, 3, 4, 5]);
    assert_eq!(read("\"latest\"", "b"), Vec::<i64>::new());
    assert_eq!(read("{ timestamp = 3000 }", "c"), [3, 4, 5]);
    assert_eq!(read("\"committed\"", "d"), [1, 2, 3, 4, 5], "no committed offset: from the earliest");
    broker.commit("e", "t", 0, 2);
    assert_eq!(read("\"committed\"", "e"), [3, 4, 5]);
}

#[test]
fn kafka_key_value_headers_and_timestamp_become_the_event() {
    let broker = Broker::start();
    broker.create_topic("t", 1);
    let producer: rdkafka::producer::BaseProducer = broker.config().create().unwrap();
    use rdkafka::producer::Producer;
    producer
        .send(
            rdkafka::producer::BaseRecord::to("t")
                .key("user-1")
                .payload("{\"n\":1}")
                .timestamp(1234)
                .headers(headers(&[("trace", "abc")])),
        )
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    run(job(&copy_job(&broker, "t", "bounded = true", "envelope", ""), dir.path())).unwrap();
    assert_eq!(
        lines(&dir.path().join("out.jsonl")),
        [r#"{"headers":{"trace":"abc"},"key":"user-1","timestamp":1234,"value":{"n":1}}"#]
    );
}

#[test]
fn completed_checkpoints_commit_offsets_to_the_consumer_group() {
    let broker = Broker::start();
    broker.create_topic("t", 2);
    broker.produce("t", (0..10).map(|i| (i % 2, None, format!("{{\"i\":{i}}}"), None)));
    let dir = tempfile::tempdir().unwrap();
    let text = copy_job(&broker, "t", "group_id = \"monitor\"", "value", &checkpoint_table(50));
    let (control, handle) = spawn(job(&text, dir.path()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while broker.committed("monitor", "t", 2) != [Some(5), Some(5)] {
        assert!(Instant::now() < deadline, "offsets never committed: {:?}", broker.committed("monitor", "t", 2));
        std::thread::sleep(Duration::from_millis(100));
    }
    control.cancel();
    handle.join().unwrap().unwrap();
}

// ---- bad input ----

fn produce_with_a_bad_record(broker: &Broker) {
    broker.create_topic("raw", 1);
    broker.produce(
        "raw",
        ["{\"user\":\"ann\"}", "not json", "{\"user\":\"bob\"}"].map(|v| (0, None, v.to_string(), None)),
    );
}

#[test]
fn undecodable_records_go_to_the_dead_letter_topic_with_their_origin() {
    let broker = Broker::start();
    produce_with_a_bad_record(&broker);
    broker.create_topic("dlq", 1);
    let dir = tempfile::tempdir().unwrap();
    let extra = "bounded = true\nkey_field = \"user\"\ndead_letter_topic = \"dlq\"";
    let summary = run(job(&copy_job(&broker, "raw", extra, "value", ""), dir.path())).unwrap();
    assert_eq!(lines(&dir.path().join("out.jsonl")), ["{\"user\":\"ann\"}", "{\"user\":\"bob\"}"]);
    assert_eq!(summary.node("in").unwrap().skipped, 1);
    let dead = broker.read_all("dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].value, "not json");
    let header = |name: &str| dead[0].headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap();
    assert!(header("weir.error").contains("invalid JSON"), "{:?}", dead[0].headers);
    assert_eq!(
        (header("weir.source.topic"), header("weir.source.partition"), header("weir.source.offset")),
        ("raw".into(), "0".into(), "1".into())
    );
}

#[test]
fn without_a_dead_letter_topic_the_job_policy_fails_or_skips_with_the_position() {
    let broker = Broker::start();
    produce_with_a_bad_record(&broker);
    let dir = tempfile::tempdir().unwrap();
    let extra = "bounded = true\nkey_field = \"user\"";
    let error = run(job(&copy_job(&broker, "raw", extra, "value", ""), dir.path())).unwrap_err().to_string();
    assert!(error.contains("kafka raw[0] offset 1") && error.contains("invalid JSON"), "{error}");
    let skip = run(job(&copy_job(&broker, "raw", extra, "value", "on_error = \"skip\""), dir.path())).unwrap();
    assert_eq!(skip.node("in").unwrap().skipped, 1);
    assert_eq!(lines(&dir.path().join("out.jsonl")).len(), 2);
}

// ---- broker faults ----

#[test]
fn a_broker_down_at_start_and_mid_run_loses_nothing() {
    let mut broker = Broker::start();
    broker.create_topic("t", 1);
    broker.produce("t", (0..10).map(|i| (0, None, format!("{{\"i\":{i}}}"), None)));
    broker.kill();
    let dir = tempfile::tempdir().unwrap();
    let (control, handle) = spawn(job(&copy_job(&broker, "t", "", "value", ""), dir.path()));
    std::thread::sleep(Duration::from_millis(1500));
    broker.restart();
    wait_for_lines(&dir.path().join("out.jsonl"), 10, "after the broker came up");
    broker.kill();
    std::thread::sleep(Duration::from_millis(1000));
    broker.restart();
    broker.produce("t", (10..20).map(|i| (0, None, format!("{{\"i\":{i}}}"), None)));
    let out = wait_for_lines(&dir.path().join("out.jsonl"), 20, "after the broker came back");
    control.cancel();
    handle.join().unwrap().unwrap();
    let expected: Vec<String> = (0..20).map(|i| format!("{{\"i\":{i}}}")).collect();
    assert_eq!(out, expected);
}

#[test]
fn a_missing_topic_is_a_clear_error() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let error = run(job(&copy_job(&broker, "nope", "", "value", ""), dir.path())).unwrap_err().to_string();
    assert!(error.contains("topic `nope` does not exist"), "{error}");
}

/// On librdkafka's mock cluster, whose metadata can report a topic as unknown: tansu
/// 0.6 answers metadata for a deleted topic in a way that crashes librdkafka 2.12
/// (a null topic name in its metadata cache), so the deletion is simulated there.
#[test]
fn a_topic_deleted_mid_run_is_a_clear_error() {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("t", 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    produce_to(&brokers, "t", (0..3).map(|i| (0, None, format!("{{\"i\":{i}}}"), None)));
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
        name = "deleted"
        [[source]]
        type = "kafka"
        uid = "in"
        brokers = "{brokers}"
        topics = ["t"]
        partition_discovery_ms = 100
        [[sink]]
        type = "file"
        uid = "out"
        path = "out.jsonl"
        [[edge]]
        from = "in"
        to = "out"
        "#
    );
    let (_control, handle) = spawn(job(&text, dir.path()));
    wait_for_lines(&dir.path().join("out.jsonl"), 3, "before the deletion");
    mock.topic_error("t", rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART).unwrap();
    let error = handle.join().unwrap().unwrap_err().to_string();
    assert!(error.contains("source `in`: topic `t` was deleted while the job read it"), "{error}");
}

// ---- savepoints: the Kafka position survives a stop and an upgrade ----

fn weir_cli(args: &[&str], dir: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_weir")).args(args).current_dir(dir).output().unwrap()
}

#[test]
fn a_stop_with_savepoint_and_an_upgraded_restore_continue_at_the_saved_offsets() {
    let broker = Broker::start();
    broker.create_topic("in", 2);
    let keys: Vec<String> = (0..10).map(|k| format!("k{k}")).collect();
    let produce = |range: std::ops::Range<usize>| {
        broker.produce("in", range.map(|i| ((i % 2) as i32, Some(keys[i % 10].as_str()), format!("{{\"value\":{i}}}"), None)));
    };
    produce(0..400);
    let dir = tempfile::tempdir().unwrap();
    let job = |component: &str, extra: &str| {
        let text = format!(
            r#"
            name = "kafka-upgrade"
            [[source]]
            type = "kafka"
            uid = "in"
            brokers = "{addr}"
            topics = ["in"]
            {extra}
            [[operator]]
            uid = "count"
            component = "{component}"
            parallelism = 2
            [[sink]]
            type = "file"
            uid = "out"
            path = "out.jsonl"
            [[edge]]
            from = "in"
            to = "count"
            partition = "keyed"
            [[edge]]
            from = "count"
            to = "out"
            "#,
            addr = broker.addr()
        );
        std::fs::write(dir.path().join("job.toml"), text).unwrap();
    };
    job("counter_v1.wasm", "rate = 400");
    let child = weir_run(&dir.path().join("job.toml")).spawn().unwrap();
    let control = dir.path().join(".weir/kafka-upgrade/control.addr");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(control.exists() && lines(&dir.path().join("out.jsonl")).len() >= 50) {
        assert!(Instant::now() < deadline, "the job did not get going");
        std::thread::sleep(Duration::from_millis(10));
    }
    let stop = weir_cli(&["stop", "job.toml", "--savepoint", "sp"], dir.path());
    assert!(stop.status.success(), "{}", String::from_utf8_lossy(&stop.stderr));
    child.wait_with_output().unwrap();
    let before = lines(&dir.path().join("out.jsonl")).len();
    assert!(before < 400, "stopped mid-stream ({before} of 400)");

    // More input arrives while the job is down; v2 of the counter takes over from the
    // savepoint (migrating v1's state) and reads on from the saved offsets.
    produce(400..600);
    job("counter_v2.wasm", "bounded = true");
    let output = weir_cli(&["run", "job.toml", "--plugin-dir", guests::GUEST_DIR, "--from-savepoint", "sp"], dir.path());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut counts: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for line in lines(&dir.path().join("out.jsonl")) {
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        counts.entry(value["key"].as_str().unwrap().into()).or_default().push(value["count"].as_u64().unwrap());
    }
    assert_eq!(counts.len(), 10);
    for (key, seen) in counts {
        assert_eq!(seen, (1..=60).collect::<Vec<u64>>(), "{key}: every record counted once, in order, across the upgrade");
    }
}

/// A whole job with an exactly-once Kafka sink (on the mock cluster, which implements
/// transactions): every checkpoint's transaction is committed and recorded beside the
/// checkpoint, which is what recovery requires before restoring it.
#[test]
fn an_exactly_once_job_records_each_committed_transaction_beside_its_checkpoint() {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("in", 1, 1).unwrap();
    mock.create_topic("out", 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    produce_to(&brokers, "in", (0..300).map(|i| (0, None, format!("{{\"i\":{i}}}"), None)));
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
        name = "eos"
        [[source]]
        type = "kafka"
        uid = "in"
        brokers = "{brokers}"
        topics = ["in"]
        bounded = true
        rate = 1000
        [[sink]]
        type = "kafka"
        uid = "out"
        brokers = "{brokers}"
        topic = "out"
        delivery = "exactly-once"
        [[edge]]
        from = "in"
        to = "out"
        {checkpoint}
        "#,
        checkpoint = checkpoint_table(50)
    );
    run(job(&text, dir.path())).unwrap();
    let written: Vec<String> = read_topic(&brokers, "out").into_iter().map(|r| r.value).collect();
    assert_eq!(written, (0..300).map(|i| format!("{{\"i\":{i}}}")).collect::<Vec<_>>());
    let checkpoints: Vec<PathBuf> = std::fs::read_dir(dir.path().join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("_metadata").exists())
        .collect();
    assert!(!checkpoints.is_empty(), "the job took checkpoints");
    for checkpoint in &checkpoints {
        assert!(checkpoint.join("committed-out_0").exists(), "{} has no commit record", checkpoint.display());
        let metadata = std::fs::read_to_string(checkpoint.join("_metadata")).unwrap();
        assert!(metadata.contains("requires_commit_record"), "{metadata}");
    }
}

#[test]
fn orders_from_kafka_match_flink() {
    // The orders example's Kafka variant (examples/orders/job-kafka.toml): five-minute
    // revenue with allowed lateness and a late output, fed from a topic. Its output is
    // Flink's for the same input (examples/orders/expected-*.jsonl).
    let broker = Broker::start();
    broker.create_topic("orders", 1);
    let input = std::fs::read_to_string(root().join("examples/orders/input.jsonl")).unwrap();
    broker.produce("orders", input.lines().map(|line| (0, None, line.to_string(), None)));
    let out = tempfile::tempdir().unwrap();
    let mut spec = JobSpec::load(&root().join("examples/orders/job-kafka.toml")).unwrap();
    redirect_sinks(&mut spec, out.path());
    for source in &mut spec.sources {
        if let weir::job::spec::SourceSpec::Kafka(kafka) = source {
            kafka.brokers = broker.addr().to_string();
        }
    }
    let summary = run(spec).unwrap();
    assert_eq!(summary.node("revenue").unwrap().records_in, 240);
    assert_eq!(sorted_lines(&out.path().join("revenue.jsonl")), expected("orders", "expected-revenue.jsonl"));
    assert_eq!(sorted_lines(&out.path().join("late.jsonl")), expected("orders", "expected-late.jsonl"));
}

#[test]
fn a_kafka_source_reports_its_consumer_lag_as_pending_records() {
    // 2 000 records behind an operator that takes 20 ms an element, with small channels:
    // the source reads until they are full, then waits (back-pressure) and lags; the
    // job's live metrics say by how much.
    let broker = Broker::start();
    broker.create_topic("t", 2);
    let total = 2_000;
    broker.produce("t", (0..total).map(|i| ((i % 2) as i32, Some("k"), format!("{{\"i\":{i}}}"), None)));
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
        name = "lagging"
        channel_capacity = 2
        batch_records = 10
        [[source]]
        type = "kafka"
        uid = "in"
        brokers = "{addr}"
        topics = ["t"]
        [[operator]]
        uid = "slow"
        component = "{faulty}"
        config = {{ mode = "slow" }}
        [[sink]]
        type = "file"
        uid = "out"
        path = "out.jsonl"
        [[edge]]
        from = "in"
        to = "slow"
        [[edge]]
        from = "slow"
        to = "out"
        "#,
        addr = broker.addr(),
        faulty = guests::FAULTY,
    );
    let job = Job::new(job(&text, dir.path()), &options()).unwrap();
    let (control, live) = (job.control(), job.live_metrics());
    let running = std::thread::spawn(move || job.run());
    let deadline = Instant::now() + Duration::from_secs(60);
    let (pending, read) = loop {
        let summary = live.snapshot();
        let source = summary.node("in").cloned();
        if let Some(source) = source.filter(|s| s.pending.is_some_and(|p| p > 0) && s.backpressure_ratio > 0.5) {
            break (source.pending.unwrap(), source.records_in);
        }
        assert!(Instant::now() < deadline, "no lag reported: {summary:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // The lag is what is left of the topic (as of the last statistics, a second old).
    assert!(pending <= total && pending + read >= total - 1000, "pending {pending}, read {read} of {total}");
    control.stop();
    running.join().unwrap().unwrap();
}

// ---- numbered records: exactly once for weir readers without transactions ----

/// A sink with `sequence = true` that writes records after its checkpoint, dies, and
/// writes them again after the restore (what an at-least-once sink does) leaves
/// duplicates in the topic, with the numbers they had; a source with `deduplicate =
/// true` reads each record once.
#[test]
fn numbered_records_written_again_after_a_restore_are_read_once() {
    let broker = Broker::start();
    broker.create_topic("numbered", 1);
    let spec = KafkaSinkSpec {
        delivery: KafkaDelivery::AtLeastOnce,
        topic: Some("numbered".into()),
        sequence: true,
        ..exactly_once_spec(&broker.addr())
    };
    let mut first = KafkaSink::open(&spec, "writer", Delivery::Fresh).unwrap();
    for i in 1..=3 {
        first.write(&event(i)).unwrap();
    }
    let state = first.pre_commit(1).unwrap();
    first.commit(1).unwrap();
    for i in 4..=5 {
        first.write(&event(i)).unwrap();
    }
    first.flush().unwrap();
    drop(first); // dies before the next checkpoint
    let mut restored = KafkaSink::open(&spec, "writer", Delivery::Restore(&state)).unwrap();
    for i in 4..=6 {
        restored.write(&event(i)).unwrap();
    }
    restored.finish().unwrap();

    let records = broker.read_all("numbered");
    let header = |r: &Read, name: &str| r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap();
    let numbers: Vec<String> = records.iter().map(|r| header(r, "weir-seq")).collect();
    assert_eq!(numbers, ["1", "2", "3", "4", "5", "4", "5", "6"], "the restored sink numbers its records as before");
    assert!(records.iter().all(|r| header(r, "weir-producer") == header(&records[0], "weir-producer")));

    let dir = tempfile::tempdir().unwrap();
    run(job(&copy_job(&broker, "numbered", "bounded = true\ndeduplicate = true", "envelope", ""), dir.path())).unwrap();
    let values: Vec<String> = lines(&dir.path().join("out.jsonl"))
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["value"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(values, ["v1", "v2", "v3", "v4", "v5", "v6"]);
    // The numbering headers stay out of the events.
    assert!(!std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap().contains("weir-seq"));
    // Without deduplicate, a reader sees every record.
    let plain = tempfile::tempdir().unwrap();
    run(job(&copy_job(&broker, "numbered", "bounded = true", "value", ""), plain.path())).unwrap();
    assert_eq!(lines(&plain.path().join("out.jsonl")).len(), 8);
}

#[test]
fn avro_records_in_confluents_wire_format_reach_the_job_as_json() {
    use apache_avro::Schema;
    use apache_avro::types::{Record, Value};
    const SCHEMA: &str = r#"{"type":"record","name":"Order","fields":[
        {"name":"order_id","type":"string"},{"name":"amount","type":"double"},{"name":"ts","type":"long"}]}"#;
    let schema = Schema::parse_str(SCHEMA).unwrap();
    let framed = |id: &str, amount: f64, ts: i64| {
        let mut record = Record::new(&schema).unwrap();
        record.put("order_id", id);
        record.put("amount", amount);
        record.put("ts", Value::Long(ts));
        let mut bytes = vec![0, 0, 0, 0, 42]; // magic byte, schema id 42
        bytes.extend(apache_avro::to_avro_datum(&schema, record).unwrap());
        bytes
    };
    let broker = Broker::start();
    broker.create_topic("orders", 1);
    let producer: rdkafka::producer::BaseProducer = broker.config().create().unwrap();
    use rdkafka::producer::Producer;
    let payloads = [framed("o-1", 12.5, 1000), b"{\"order_id\":\"not avro\"}".to_vec(), framed("o-2", 3.0, 2000)];
    for payload in &payloads {
        producer.send(rdkafka::producer::BaseRecord::<(), _>::to("orders").payload(&payload[..])).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("order.avsc"), SCHEMA).unwrap();
    let text = format!(
        r#"
        name = "avro"
        [[source]]
        type = "kafka"
        uid = "in"
        brokers = "{addr}"
        topics = ["orders"]
        bounded = true
        format = "avro-confluent"
        schema = "order.avsc"
        key_field = "order_id"
        timestamp_field = "ts"
        [[sink]]
        type = "file"
        uid = "out"
        path = "out.jsonl"
        format = "envelope"
        [[sink]]
        type = "file"
        uid = "dead"
        path = "dead.jsonl"
        format = "envelope"
        [[edge]]
        from = "in"
        to = "out"
        [[edge]]
        from = "in"
        output = "dlq"
        to = "dead"
        "#,
        addr = broker.addr()
    );
    run(job(&text, dir.path())).unwrap();
    assert_eq!(
        lines(&dir.path().join("out.jsonl")),
        [
            r#"{"key":"o-1","timestamp":1000,"value":{"amount":12.5,"order_id":"o-1","ts":1000}}"#,
            r#"{"key":"o-2","timestamp":2000,"value":{"amount":3.0,"order_id":"o-2","ts":2000}}"#,
        ]
    );
    // The record that is not Avro: a dead letter, as it came, with why.
    let dead = lines(&dir.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    let letter: serde_json::Value = serde_json::from_str(&dead[0]).unwrap();
    assert_eq!(letter["value"]["order_id"], "not avro");
    assert!(letter["headers"]["weir.error"].as_str().unwrap().contains("wire format"), "{letter}");
}
