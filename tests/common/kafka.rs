//! A real Kafka-compatible broker for tests: tansu, started on a free loopback port
//! with its own data directory and stopped when dropped; plus small producer, reader
//! and admin helpers built on rdkafka.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// The tansu binary: `$WEIR_TANSU`, the one `scripts/setup` installs, or `tansu` on the
/// `PATH`.
pub fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("WEIR_TANSU") {
        return path.into();
    }
    let cached = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/weir-tools/bin/tansu"))
        .filter(|p| p.exists());
    cached.unwrap_or_else(|| "tansu".into())
}

/// Starts tansu on `port` with its data in `dir`.
fn spawn_tansu(port: u16, dir: &Path) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    Command::new(tansu_binary())
        .arg("broker")
        .args(["--listener-url", &url, "--advertised-listener-url", &url])
        // tansu reads `sqlite://<path>` relative to its working directory.
        .args(["--storage-engine", "sqlite://tansu.db"])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start tansu ({}): {e}; `bash scripts/setup` installs it", tansu_binary().display())
        })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running tansu broker.
pub struct Broker {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// A record read back from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: String,
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, String)>,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_on(free_port())
    }

    /// Starts tansu on `port` and waits until it answers metadata requests.
    pub fn start_on(port: u16) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let child = spawn_tansu(port, dir.path());
        let broker = Broker { child, port, _dir: dir };
        broker.wait_ready();
        broker
    }

    /// Starts the broker again on the same port and data after [`Broker::kill`].
    pub fn restart(&mut self) {
        self.child = spawn_tansu(self.port, self._dir.path());
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let consumer: BaseConsumer = self.config().create().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while consumer.fetch_metadata(None, Duration::from_secs(1)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.addr());
        config
    }

    /// Stops the broker (as if it crashed).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.config().create().unwrap();
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let results = block_on(admin.create_topics([&topic], &AdminOptions::new())).unwrap();
        for result in results {
            result.unwrap_or_else(|(topic, e)| panic!("creating topic {topic}: {e}"));
        }
    }

    pub fn delete_topic(&self, name: &str) {
        let admin: AdminClient<DefaultClientContext> = self.config().create().unwrap();
        let results = block_on(admin.delete_topics(&[name], &AdminOptions::new())).unwrap();
        for result in results {
            result.unwrap_or_else(|(topic, e)| panic!("deleting topic {topic}: {e}"));
        }
    }

    /// Produces `(partition, key, value, timestamp)` records and waits for them.
    pub fn produce<'a>(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = (i32, Option<&'a str>, String, Option<i64>)>,
    ) {
        produce_to(&self.addr(), topic, records)
    }

    /// Every committed record of `topic`, by partition and offset.
    pub fn read_all(&self, topic: &str) -> Vec<Read> {
        read_topic(&self.addr(), topic)
    }

    /// The offsets committed for `group` on `topic`'s partitions.
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
        let consumer: BaseConsumer = self.config().set("group.id", group).create().unwrap();
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition(topic, p);
        }
        let committed = consumer.committed_offsets(list, Duration::from_secs(5)).unwrap();
        (0..partitions)
            .map(|p| committed.find_partition(topic, p).and_then(|e| e.offset().to_raw()).filter(|o| *o >= 0))
            .collect()
    }

    /// Commits `offset` for `group` on one partition.
    pub fn commit(&self, group: &str, topic: &str, partition: i32, offset: i64) {
        let consumer: BaseConsumer = self.config().set("group.id", group).create().unwrap();
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, partition, Offset::Offset(offset)).unwrap();
        consumer.commit(&list, rdkafka::consumer::CommitMode::Sync).unwrap();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Produces `(partition, key, value, timestamp)` records on `brokers` and waits for them.
pub fn produce_to<'a>(
    brokers: &str,
    topic: &str,
    records: impl IntoIterator<Item = (i32, Option<&'a str>, String, Option<i64>)>,
) {
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    for (partition, key, value, timestamp) in records {
        let mut record = BaseRecord::to(topic).partition(partition).payload(&value);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(ts) = timestamp {
            record = record.timestamp(ts);
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Every committed record of `topic` on `brokers`, by partition and offset.
pub fn read_topic(brokers: &str, topic: &str) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "weir-tests-reader")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).unwrap();
    let partitions: Vec<i32> = metadata.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut list = TopicPartitionList::new();
    let mut open = std::collections::BTreeSet::new();
    for p in &partitions {
        let (_, high) = consumer.fetch_watermarks(topic, *p, Duration::from_secs(5)).unwrap();
        if high > 0 {
            list.add_partition_offset(topic, *p, Offset::Beginning).unwrap();
            open.insert(*p);
        }
    }
    if open.is_empty() {
        return Vec::new();
    }
    consumer.assign(&list).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !open.is_empty() {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(Read {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                timestamp: m.timestamp().to_millis(),
                headers: m.headers().map_or_else(Vec::new, |h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                }),
            }),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}

/// Headers for a produced record.
pub fn headers(pairs: &[(&str, &str)]) -> OwnedHeaders {
    pairs.iter().fold(OwnedHeaders::new(), |h, (key, value)| h.insert(Header { key, value: Some(*value) }))
}

pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}
