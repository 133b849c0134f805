//! Kafka → pass-through Wasm operator → Kafka on a local tansu broker, beside a plain
//! rdkafka consume → produce loop with no weir in between, so that the engine's own
//! cost shows: events per second, MB per second, CPU time per event (this process:
//! the engine and librdkafka, not the broker), end-to-end latency percentiles and the
//! ratio to the plain loop. On one machine the broker competes for the same two cores,
//! so CPU per event shows the engine's cost more directly than throughput.
//!
//! `cargo bench -p weir-host --bench kafka`; `WEIR_BENCH_EVENTS` sets the number of
//! records (default 200 000) and `WEIR_BENCH_PARTITIONS` the partitions (4). Needs
//! tansu (`bash scripts/install-tansu`).

#[allow(dead_code)]
#[path = "../common/kafka.rs"]
mod broker;

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use weir::{Job, JobOptions, JobSpec};

/// CPU time (user + system) this process has used so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the
    // 12th and 13th, in clock ticks of 1/100 s on Linux.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    let ticks = fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Copies `events` records from `from` to `to` with rdkafka alone.
fn plain_loop(broker: &broker::Broker, from: &str, to: &str, partitions: i32, events: u64) -> Duration {
    let consumer: BaseConsumer = broker.config().set("group.id", "bench-plain").create().unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(from, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&list).unwrap();
    let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> = broker
        .config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .unwrap();
    let started = Instant::now();
    let mut copied = 0;
    while copied < events {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
        let message = message.unwrap();
        let mut record = BaseRecord::to(to).payload(message.payload().unwrap_or_default());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        copied += 1;
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    started.elapsed()
}

fn weir_job(broker: &broker::Broker, from: &str, to: &str) -> JobSpec {
    let text = format!(
        r#"
        name = "bench-kafka"
        [[source]]
        type = "kafka"
        uid = "in"
        brokers = "{addr}"
        topics = ["{from}"]
        bounded = true
        [[operator]]
        uid = "pass"
        component = "passthrough.wasm"
        [[sink]]
        type = "kafka"
        uid = "out"
        brokers = "{addr}"
        topic = "{to}"
        [[edge]]
        from = "in"
        to = "pass"
        [[edge]]
        from = "pass"
        to = "out"
        "#,
        addr = broker.addr()
    );
    JobSpec::parse(&text, std::path::Path::new(".")).expect("valid bench job")
}

fn main() {
    let events = env_u64("WEIR_BENCH_EVENTS", 200_000);
    let partitions = env_u64("WEIR_BENCH_PARTITIONS", 4) as i32;
    let broker = broker::Broker::start();
    for topic in ["in", "out-plain", "out-weir"] {
        broker.create_topic(topic, partitions);
    }
    // ~100-byte JSON values with a key, as a click or login event would be.
    let started = Instant::now();
    broker.produce(
        "in",
        (0..events).map(|i| {
            let value = format!("{{\"user\":\"user-{:05}\",\"seq\":{i},\"page\":\"/items/{:06}\",\"ts\":{}}}", i % 10_000, i * 7 % 1_000_000, 1_767_225_600_000 + i as i64);
            ((i % partitions as u64) as i32, None, value, None)
        }),
    );
    let bytes: u64 = broker.read_all("in").iter().map(|r| r.value.len() as u64).sum();
    println!(
        "loaded {events} records ({:.1} MB) over {partitions} partitions into tansu in {:.1} s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    let cpu = cpu_time();
    let plain = plain_loop(&broker, "in", "out-plain", partitions, events);
    let plain_cpu = cpu_time() - cpu;
    let options = JobOptions { plugin_dirs: vec![weir_test_guests::GUEST_DIR.into()], ..Default::default() };
    let started = Instant::now();
    let summary = Job::new(weir_job(&broker, "in", "out-weir"), &options).unwrap().run().unwrap();
    let weir_time = started.elapsed();
    let weir_cpu = cpu_time() - plain_cpu - cpu;
    assert_eq!(broker.read_all("out-weir").len() as u64, events, "weir copied every record");

    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    let mbps = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    let cpu_us = |d: Duration| d.as_secs_f64() * 1e6 / events as f64;
    println!("{:<34} {:>12} {:>10} {:>14}", "kafka -> kafka", "events/s", "MB/s", "CPU us/event");
    println!("{:<34} {:>12.0} {:>10.1} {:>14.1}", "plain rdkafka consume -> produce", rate(plain), mbps(plain), cpu_us(plain_cpu));
    println!("{:<34} {:>12.0} {:>10.1} {:>14.1}", "weir, pass-through Wasm operator", rate(weir_time), mbps(weir_time), cpu_us(weir_cpu));
    println!(
        "ratio weir / plain: throughput {:.2}, CPU per event {:.2}",
        plain.as_secs_f64() / weir_time.as_secs_f64(),
        weir_cpu.as_secs_f64() / plain_cpu.as_secs_f64()
    );
    if let Some(latency) = &summary.latency {
        // From the source's read to the sink's hand-off to the producer.
        println!(
            "weir read-to-produce latency: p50 {} us, p99 {} us, p99.9 {} us, max {} us",
            latency.p50_us, latency.p99_us, latency.p999_us, latency.max_us
        );
    }
}
