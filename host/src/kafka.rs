//! # Kafka clients
//!
//! What the Kafka source ([`crate::source::KafkaSource`]) and sink
//! ([`crate::sink::KafkaSink`]) share: client configuration, librdkafka's logs and
//! errors routed to `tracing` under the connector's uid, delivery tracking for
//! producers, and the backoff used while a broker is unreachable.
//!
//! weir talks to Kafka through librdkafka (the `rdkafka` crate). Sources assign
//! partitions themselves rather than joining a consumer group's rebalances: a job's
//! checkpoints, not the group, own the offsets (as Flink's `KafkaSource`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext};

/// How long one metadata or offset request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A client configuration for `brokers` with the job file's extra `properties` on top.
pub fn client_config(brokers: &str, properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    // librdkafka logs through the context below; keep its own logging quiet but useful.
    config.set_log_level(RDKafkaLogLevel::Warning);
    for (key, value) in properties {
        config.set(key, value);
    }
    config
}

/// A client context that logs under the connector's uid and remembers a producer's
/// first failed delivery, so that the sink can fail (or decline a checkpoint) with it.
pub struct Context {
    uid: String,
    failure: Mutex<Option<String>>,
    /// A consumer's lag over its partitions, from librdkafka's statistics; -1 before
    /// the first that has one.
    lag: std::sync::atomic::AtomicI64,
}

impl Context {
    pub fn new(uid: &str) -> Self {
        Context { uid: uid.into(), failure: Mutex::new(None), lag: std::sync::atomic::AtomicI64::new(-1) }
    }

    /// A consumer's records not read yet (high watermark minus position, over every
    /// partition it reads), as of its latest statistics (`statistics.interval.ms`).
    pub fn lag(&self) -> Option<u64> {
        u64::try_from(self.lag.load(std::sync::atomic::Ordering::Relaxed)).ok()
    }

    /// The first delivery that failed since the last call.
    pub fn take_failure(&self) -> Option<String> {
        self.failure.lock().expect("not poisoned").take()
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let uid = &self.uid;
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => tracing::warn!(%uid, facility, "kafka: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(%uid, facility, "kafka: {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(%uid, facility, "kafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(uid = %self.uid, %error, "kafka client: {reason}");
    }

    fn stats_raw(&self, statistics: &[u8]) {
        // The lag of each partition from librdkafka's statistics (JSON): its last stable
        // offset (what read_committed may read; the high watermark if unknown) minus the
        // offset after the last record handed to us. librdkafka's own `consumer_lag`
        // counts from committed offsets, which weir commits only at checkpoints.
        // Partition -1 is librdkafka's internal "unassigned" one.
        let Ok(statistics) = serde_json::from_slice::<serde_json::Value>(statistics) else { return };
        let lags: Vec<i64> = statistics["topics"]
            .as_object()
            .into_iter()
            .flat_map(|topics| topics.values())
            .filter_map(|topic| topic["partitions"].as_object())
            .flat_map(|partitions| partitions.values())
            .filter(|p| p["partition"].as_i64().is_some_and(|id| id >= 0) && p["desired"] != false)
            .filter_map(|p| {
                let valid = |field: &str| p[field].as_i64().filter(|offset| *offset >= 0);
                let end = valid("ls_offset").or_else(|| valid("hi_offset"))?;
                let position = valid("app_offset").or_else(|| valid("lo_offset"))?;
                Some((end - position).max(0))
            })
            .collect();
        if !lags.is_empty() {
            self.lag.store(lags.iter().sum(), std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl ConsumerContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, message)) = result {
            let mut failure = self.failure.lock().expect("not poisoned");
            if failure.is_none() {
                *failure = Some(format!(
                    "delivering to {}[{}] failed: {error}",
                    message.topic(),
                    message.partition()
                ));
            }
        }
    }
}

/// The Kafka APIs a transactional producer needs, by API key.
const TRANSACTION_APIS: [(i16, &str); 3] = [(22, "InitProducerId"), (24, "AddPartitionsToTxn"), (26, "EndTxn")];

/// The transaction APIs that the first reachable broker of `brokers` does not offer,
/// asked with an ApiVersions request. librdkafka only finds out at the first commit,
/// long after a job started; this lets an exactly-once sink refuse to start instead.
/// Only for plaintext listeners (the request is sent on a bare TCP connection).
pub fn missing_transaction_apis(brokers: &str) -> Result<Vec<&'static str>, String> {
    let mut last_error = String::from("no broker address");
    for address in brokers.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let address = address.rsplit_once("://").map_or(address, |(_, rest)| rest);
        match api_keys(address) {
            Ok(keys) => {
                return Ok(TRANSACTION_APIS.iter().filter(|(k, _)| !keys.contains(k)).map(|(_, n)| *n).collect());
            }
            Err(e) => last_error = format!("{address}: {e}"),
        }
    }
    Err(last_error)
}

/// The API keys a broker supports (ApiVersions v0).
fn api_keys(address: &str) -> std::io::Result<Vec<i16>> {
    use std::io::{Error, Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    let socket = address.to_socket_addrs()?.next().ok_or_else(|| Error::other("no address"))?;
    let mut stream = TcpStream::connect_timeout(&socket, REQUEST_TIMEOUT)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let client = b"weir";
    let mut request = Vec::with_capacity(16);
    request.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    request.extend_from_slice(&0i16.to_be_bytes()); // version 0
    request.extend_from_slice(&1i32.to_be_bytes()); // correlation id
    request.extend_from_slice(&(client.len() as i16).to_be_bytes());
    request.extend_from_slice(client);
    stream.write_all(&(request.len() as i32).to_be_bytes())?;
    stream.write_all(&request)?;
    let mut size = [0; 4];
    stream.read_exact(&mut size)?;
    let size = i32::from_be_bytes(size);
    if !(10..=1 << 20).contains(&size) {
        return Err(Error::other(format!("unexpected ApiVersions response size {size}")));
    }
    let mut body = vec![0; size as usize];
    stream.read_exact(&mut body)?;
    // correlation id (4), error code (2), entry count (4), entries of three i16.
    let error = i16::from_be_bytes([body[4], body[5]]);
    if error != 0 {
        return Err(Error::other(format!("ApiVersions failed with error code {error}")));
    }
    let count = i32::from_be_bytes([body[6], body[7], body[8], body[9]]).max(0) as usize;
    Ok(body[10..].chunks_exact(6).take(count).map(|entry| i16::from_be_bytes([entry[0], entry[1]])).collect())
}

/// Exponential backoff (0.2 s doubling to 10 s) between attempts to reach a broker.
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    next: Instant,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { attempt: 0, next: Instant::now() }
    }
}

impl Backoff {
    /// Whether the next attempt is due.
    pub fn ready(&self) -> bool {
        Instant::now() >= self.next
    }

    /// Records a failed attempt; returns its number and the wait before the next.
    pub fn failed(&mut self) -> (u32, Duration) {
        self.attempt += 1;
        let wait = Duration::from_millis(200u64 << (self.attempt - 1).min(6)).min(Duration::from_secs(10));
        self.next = Instant::now() + wait;
        (self.attempt, wait)
    }

    /// Records a successful attempt.
    pub fn succeeded(&mut self) {
        self.attempt = 0;
        self.next = Instant::now();
    }

    /// How long until the next attempt is due.
    pub fn remaining(&self) -> Duration {
        self.next.saturating_duration_since(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_seconds_and_resets() {
        let mut backoff = Backoff::default();
        assert!(backoff.ready());
        let waits: Vec<_> = (0..9).map(|_| backoff.failed().1.as_millis()).collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]);
        assert!(!backoff.ready());
        backoff.succeeded();
        assert!(backoff.ready());
        assert_eq!(backoff.failed(), (1, Duration::from_millis(200)));
    }
}
