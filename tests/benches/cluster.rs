//! Clusters on one machine: throughput of a keyed count with 1, 2 and 3 members beside
//! the same job in one process (and with a repartition hop), the time the group takes
//! to a stable assignment with many members, and failover time: from
//! SIGKILL of a member to its tasks' output appearing again on the other member, with
//! a large keyed state.
//!
//! `cargo bench -p weir-host --bench cluster`. Settings: `WEIR_BENCH_PART`
//! (`throughput`, `rebalance`, `failover` or `all`, the default), `WEIR_BENCH_MEMBERS`
//! and `WEIR_BENCH_REBALANCE_PARTITIONS` (light members joining one group, default 50
//! and 500), `WEIR_BENCH_EVENTS` (throughput
//! runs, default 200 000 records of 10 000 keys), `WEIR_BENCH_KEYS` (failover: keys of
//! state, default 1 000 000), `WEIR_BENCH_SESSION_MS` (the members' session timeout,
//! default 3000). Needs tansu (`bash scripts/install-tansu`). The machine has two
//! cores, shared by the broker and every member: the throughput figures show the cost
//! of coordination and of the repartition hop, not scaling.

#[allow(dead_code)]
#[path = "../common/kafka.rs"]
mod broker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Produces `count` records of `keys` keys to `topic`, key `k` into partition
/// `k % PARTITIONS`, with the key as the Kafka key and in the value's `user` field.
fn prefill(broker: &broker::Broker, topic: &str, count: u64, keys: u64) -> Duration {
    let producer: BaseProducer = broker
        .config()
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let started = Instant::now();
    for i in 0..count {
        let k = i % keys;
        let key = format!("key-{k}");
        let value = format!("{{\"user\":\"{key}\",\"i\":{i}}}");
        let mut record = BaseRecord::to(topic).partition((k % PARTITIONS as u64) as i32).key(&key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(600)).unwrap();
    started.elapsed()
}

/// The number of records in partition 0 of `topic` (the output topics have one).
fn written(broker: &broker::Broker, topic: &str) -> i64 {
    let consumer: BaseConsumer = broker.config().create().unwrap();
    consumer.fetch_watermarks(topic, 0, Duration::from_secs(10)).map_or(0, |w| w.1)
}

/// A keyed count job reading `input` and writing `output`; `keyed_by_field` takes the
/// key from the value (a repartition hop in a cluster).
fn job(home: &Path, broker: &broker::Broker, name: &str, input: &str, output: &str, cluster: Option<(u64, u32)>, keyed_by_field: bool) -> PathBuf {
    std::fs::create_dir_all(home).unwrap();
    let store = home.parent().unwrap().join(format!("store-{name}"));
    let key_field = if keyed_by_field { "key_field = \"user\"" } else { "" };
    let parallelism = if keyed_by_field { PARTITIONS } else { 1 };
    let cluster = cluster.map_or(String::new(), |(ms, standbys)| {
        format!("[cluster]\nsession_timeout_ms = {ms}\nstandbys = {standbys}\n")
    });
    let text = format!(
        r#"
name = "{name}"
[[source]]
type = "kafka"
uid = "in"
brokers = "{addr}"
topics = ["{input}"]
{key_field}

[[operator]]
uid = "count"
component = "{component}"
parallelism = {parallelism}

[[sink]]
type = "kafka"
uid = "out"
brokers = "{addr}"
topic = "{output}"
delivery = "at-least-once"

[[edge]]
from = "in"
to = "count"
partition = "keyed"

[[edge]]
from = "count"
to = "out"
partition = "rebalance"

[checkpoint]
interval_ms = 2000
dir = "file://{store}"

{cluster}
"#,
        addr = broker.addr(),
        component = weir_test_guests::KEYED_COUNT,
        store = store.display(),
    );
    let path = home.join("job.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn start(job: &Path) -> Child {
    let log = std::fs::File::create(job.with_file_name("log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("run")
        .arg(job)
        .arg("--log=weir=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn stop(mut child: Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    for _ in 0..300 {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs the job in `processes` processes (0: one process, no cluster) until the output
/// holds `events` records; returns (steady events/s between 20% and 80% of the output,
/// seconds from the start to the last output).
fn throughput(broker: &broker::Broker, dir: &Path, label: &str, processes: usize, events: u64, keyed_by_field: bool, session_ms: u64) -> (f64, f64) {
    let name = format!("bench-{label}");
    let output = format!("out-{label}");
    broker.create_topic(&output, 1);
    let cluster = (processes > 0).then_some((session_ms, 0));
    let started = Instant::now();
    let members: Vec<Child> = (0..processes.max(1))
        .map(|m| start(&job(&dir.join(format!("{label}-{m}")), broker, &name, "tp-in", &output, cluster, keyed_by_field)))
        .collect();
    let (mut t20, mut t80) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let n = written(broker, &output) as u64;
        if t20.is_none() && n >= events / 5 {
            t20 = Some((Instant::now(), n));
        }
        if t80.is_none() && n >= events * 4 / 5 {
            t80 = Some((Instant::now(), n));
        }
        if n >= events || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let total = started.elapsed().as_secs_f64();
    for member in members {
        stop(member);
    }
    let rate = match (t20, t80) {
        (Some((a, na)), Some((b, nb))) if b > a => (nb - na) as f64 / (b - a).as_secs_f64(),
        _ => 0.0,
    };
    (rate, total)
}

/// Seconds of the day of a log line's UTC timestamp (`2026-12-07T15:39:57.798169Z`).
fn log_seconds(line: &str) -> Option<f64> {
    let time = line.split_whitespace().next()?.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = time.split(':');
    let (h, m, s): (f64, f64, f64) = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    Some(h * 3600.0 + m * 60.0 + s)
}

fn day_seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64() % 86_400.0
}

fn failover(broker: &broker::Broker, dir: &Path, keys: u64, session_ms: u64, standbys: u32) {
    let (input, output) = (format!("fo{standbys}-in"), format!("fo{standbys}-out"));
    let (input, output) = (input.as_str(), output.as_str());
    broker.create_topic(input, PARTITIONS);
    broker.create_topic(output, 1);
    let took = prefill(broker, input, keys, keys);
    println!("failover, standbys = {standbys}: {keys} keys written to the input in {:.1} s", took.as_secs_f64());
    let name = format!("bench-fo{standbys}");
    let (home_a, home_b) = (dir.join(format!("fo{standbys}-a")), dir.join(format!("fo{standbys}-b")));
    let a = start(&job(&home_a, broker, &name, input, output, Some((session_ms, standbys)), false));
    let b = start(&job(&home_b, broker, &name, input, output, Some((session_ms, standbys)), false));
    let started = Instant::now();
    while (written(broker, output) as u64) < keys {
        assert!(started.elapsed() < Duration::from_secs(1200), "the members did not count the input");
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("failover: the two members counted {keys} keys in {:.1} s", started.elapsed().as_secs_f64());
    let store = dir.join(format!("store-{name}"));
    let size: u64 = walk(&store).iter().filter_map(|p| p.metadata().ok()).map(|m| m.len()).sum();
    // Probes: a record per partition every 10 ms, keyed `probe-<partition>-<n>`.
    let running = Arc::new(AtomicBool::new(true));
    let probes = {
        let running = running.clone();
        let (config, input) = (broker.config(), input.to_string());
        std::thread::spawn(move || {
            let producer: BaseProducer = config.clone().set("linger.ms", "0").create().unwrap();
            let mut n = 0u64;
            while running.load(Ordering::Relaxed) {
                for p in 0..PARTITIONS {
                    let key = format!("probe-{p}-{n}");
                    let _ = producer.send(BaseRecord::to(&input).partition(p).key(&key).payload("{}"));
                }
                producer.poll(Duration::ZERO);
                n += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = producer.flush(Duration::from_secs(10));
        })
    };
    // Two checkpoints after the last count, so the state is in the store.
    std::thread::sleep(Duration::from_secs(5));
    let consumer: BaseConsumer = broker.config().set("group.id", format!("{name}-probe")).create().unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(output, 0, Offset::End).unwrap();
    consumer.assign(&list).unwrap();
    let _ = consumer.poll(Duration::from_millis(500));
    let killed_at = SystemTime::now();
    let kill = Instant::now();
    let mut a = a;
    a.kill().unwrap(); // SIGKILL
    a.wait().unwrap();
    // The last output time of each partition's probes since the kill, and the longest
    // silence of each partition.
    let mut last: BTreeMap<i32, Instant> = (0..PARTITIONS).map(|p| (p, kill)).collect();
    let mut gap: BTreeMap<i32, Duration> = BTreeMap::new();
    let until = Instant::now() + Duration::from_secs(120);
    while Instant::now() < until {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else { continue };
        let Some(value) = message.payload().and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok()) else {
            continue;
        };
        let Some(p) = value["key"].as_str().and_then(|k| k.strip_prefix("probe-")?.split('-').next()?.parse().ok()) else {
            continue;
        };
        let now = Instant::now();
        let silence = now - last[&p];
        gap.entry(p).and_modify(|g| *g = (*g).max(silence)).or_insert(silence);
        last.insert(p, now);
        // Done once every partition's output resumed after its longest silence.
        if gap.len() == PARTITIONS as usize && now - kill > Duration::from_secs(session_ms / 1000 * 3 + 10) {
            break;
        }
    }
    running.store(false, Ordering::Relaxed);
    probes.join().unwrap();
    let longest = gap.values().max().copied().unwrap_or_default();
    println!(
        "failover: state in the store {:.1} MB; output silence per partition after SIGKILL: {}",
        size as f64 / 1e6,
        gap.iter().map(|(p, g)| format!("p{p} {:.2} s", g.as_secs_f64())).collect::<Vec<_>>().join(", ")
    );
    println!(
        "failover time, standbys = {standbys} (longest silence, session timeout {session_ms} ms): {:.2} s",
        longest.as_secs_f64()
    );
    // Where the time went, from the surviving member's log.
    let log = std::fs::read_to_string(home_b.join("log")).unwrap_or_default();
    let at = day_seconds(killed_at);
    for line in log.lines() {
        let Some(t) = log_seconds(line) else { continue };
        let interesting =
            ["task assigned: starting", "checkpoint downloaded", "restoring from checkpoint", "task revoked", "WARN", "ERROR"];
        if t >= at && interesting.iter().any(|i| line.contains(i)) {
            let what = interesting.iter().find(|i| line.contains(**i)).unwrap();
            let detail: Vec<&str> = line.split_whitespace().filter(|w| w.starts_with("task=") || w.starts_with("duration_ms=") || w.starts_with("bytes=")).collect();
            if what.starts_with("WARN") || what.starts_with("ERROR") {
                println!("  +{:>6.2} s  {}", t - at, line.split_once(' ').map_or(line, |l| l.1));
            } else {
                println!("  +{:>6.2} s  {what} {}", t - at, detail.join(" "));
            }
        }
    }
    stop(b);
}

/// Polls every consumer until their assignments cover `partitions` and have not
/// changed for three seconds; returns when they first covered them in that state.
fn until_stable(consumers: &[BaseConsumer], partitions: usize, started: Instant) -> Option<Duration> {
    let mut last: Vec<usize> = vec![usize::MAX; consumers.len()];
    let mut stable_since: Option<Instant> = None;
    while started.elapsed() < Duration::from_secs(300) {
        for consumer in consumers {
            let _ = consumer.poll(Duration::ZERO);
        }
        let now: Vec<usize> = consumers.iter().map(|c| c.assignment().map_or(0, |a| a.count())).collect();
        let covered = now.iter().sum::<usize>() == partitions;
        if now != last || !covered {
            stable_since = covered.then(Instant::now);
            last = now;
        }
        if let Some(since) = stable_since {
            if since.elapsed() >= Duration::from_secs(3) {
                return Some(since - started);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Light members in one process (a consumer each, no tasks) really joining one group
/// with the cooperative-sticky assignor: time to a stable assignment, and after one
/// member leaves.
fn rebalance(broker: &broker::Broker, members: usize, partitions: i32) {
    broker.create_topic("rb", partitions);
    let mut consumers: Vec<BaseConsumer> = (0..members)
        .map(|_| {
            broker
                .config()
                .set("group.id", "bench-rb")
                .set("partition.assignment.strategy", "cooperative-sticky")
                .set("session.timeout.ms", "10000")
                .set("heartbeat.interval.ms", "1000")
                .create()
                .unwrap()
        })
        .collect();
    let started = Instant::now();
    for consumer in &consumers {
        consumer.subscribe(&["rb"]).unwrap();
    }
    let show = |d: Option<Duration>| d.map_or("not within 300 s".to_string(), |d| format!("{:.2} s", d.as_secs_f64()));
    let joined = until_stable(&consumers, partitions as usize, started);
    println!("rebalance: {members} members, {partitions} partitions: stable assignment {} after they subscribed", show(joined));
    let left = Instant::now();
    drop(consumers.remove(0)); // leaves the group
    let after = until_stable(&consumers, partitions as usize, left);
    println!("rebalance: one member left: stable assignment {} after it left", show(after));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn main() {
    let part = std::env::var("WEIR_BENCH_PART").unwrap_or_else(|_| "all".into());
    let session_ms = env_u64("WEIR_BENCH_SESSION_MS", 3000);
    let broker = broker::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    if part == "all" || part == "throughput" {
        let events = env_u64("WEIR_BENCH_EVENTS", 200_000);
        broker.create_topic("tp-in", PARTITIONS);
        let took = prefill(&broker, "tp-in", events, 10_000);
        println!("throughput: {events} records of 10 000 keys in {PARTITIONS} partitions (written in {:.1} s)", took.as_secs_f64());
        println!("{:<44} {:>12} {:>10}", "run", "events/s", "total s");
        let runs: [(&str, usize, bool); 5] = [
            ("one process", 0, false),
            ("cluster, 1 member", 1, false),
            ("cluster, 2 members", 2, false),
            ("cluster, 3 members", 3, false),
            ("cluster, 2 members, repartition hop", 2, true),
        ];
        let mut single = 0.0;
        for (i, (label, processes, repartition)) in runs.into_iter().enumerate() {
            let (rate, total) = throughput(&broker, dir.path(), &format!("tp{i}"), processes, events, repartition, session_ms);
            if processes == 0 {
                single = rate;
            }
            let ratio = if single > 0.0 { format!("  ({:.2}x one process)", rate / single) } else { String::new() };
            println!("{label:<44} {rate:>12.0} {total:>10.1}{ratio}");
        }
    }
    if part == "all" || part == "rebalance" {
        rebalance(&broker, env_u64("WEIR_BENCH_MEMBERS", 50) as usize, env_u64("WEIR_BENCH_REBALANCE_PARTITIONS", 500) as i32);
    }
    if part == "all" || part == "failover" {
        for standbys in [0, 1] {
            failover(&broker, dir.path(), env_u64("WEIR_BENCH_KEYS", 1_000_000), session_ms, standbys);
        }
    }
}
