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
}

impl Context {
    pub fn new(uid: &str) -> Self {
        Context { uid: uid.into(), failure: Mutex::new(None) }
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
