//! Records to Kafka, at least once or exactly once.
//!
//! Each event becomes a record with the event's key, value, headers and timestamp, on
//! the sink's topic or the topic named by a field of the value.
//!
//! - `at-least-once`: an idempotent producer (no duplicates from retries within a
//!   run); before a checkpoint completes every record written so far is flushed and
//!   acknowledged by the brokers, so nothing before the checkpoint can be lost. After
//!   a restore, records since the checkpoint are written again.
//! - `exactly-once`: one Kafka transaction per checkpoint (Flink's two-phase commit
//!   with `TransactionalIdPrefix`). Records go into the open transaction; at the
//!   barrier the transaction is flushed and its checkpoint id noted; when the
//!   checkpoint completes it is committed and the next one begins. Records that arrive
//!   between the barrier and the commit wait in memory, so that one producer with one
//!   transactional id (`weir-<job>-<uid>-<subtask>`) serves the sink. After a failure,
//!   initialising the same transactional id fences the old producer and aborts what it
//!   left open; readers with `isolation.level=read_committed` never see aborted records.
//!
//! A cluster's repartition sink ([`crate::cluster::topology`]) is an at-least-once sink
//! that picks each record's partition by its key group and numbers its records in
//! headers, with the number in its checkpoint.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Delivery, Sink, SinkError};
use crate::checkpoint::storage::REQUIRES_COMMIT_RECORD;
use crate::cluster::topology::{PRODUCER_HEADER, RepartitionWrite, SEQUENCE_HEADER};
use crate::kafka::{Context, client_config};
use crate::stream::Event;

/// How long flushing, or a transaction call, may take before the sink gives up.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

pub struct KafkaSink {
    uid: String,
    spec: KafkaSinkSpec,
    producer: ThreadedProducer<Context>,
    transactions: Option<Transactions>,
    /// A repartition topic's sink, or one with `sequence`: the sequence number of the
    /// last record written (restored with the checkpoint, so that records written again
    /// after a restore carry the numbers they had, and the reader recognises them).
    sequence: u64,
    /// The producer number in the headers, as text: the repartition writer's, or one
    /// derived from the job and the sink's uid (the same wherever the job or task runs).
    numbered_as: Option<String>,
    /// The sequence number's text, reused from record to record.
    sequence_text: String,
    /// A repartition topic's sink: the sequence number of the last record written to
    /// each partition (the reader of partition `n` has read all of this writer's records
    /// once it has passed that number on: what a cluster's savepoint waits for).
    last_per_partition: Vec<u64>,
}

/// The exactly-once sink's transaction.
struct Transactions {
    id: String,
    /// The checkpoint the open transaction was pre-committed for, if any.
    pending: Option<u64>,
    /// Events that arrived after the pending barrier, for the next transaction.
    waiting: VecDeque<Event>,
}

impl KafkaSink {
    /// Creates the producer for job `job`. An exactly-once sink initialises its
    /// transactional id, which fences any earlier producer of the same sink subtask and
    /// aborts its open transaction.
    pub fn open(spec: &KafkaSinkSpec, job: &str, delivery: Delivery<'_>) -> Result<Self, SinkError> {
        let error = |message: String| SinkError { uid: spec.uid.clone(), message };
        let mut config = client_config(&spec.brokers, &spec.properties);
        config.set("enable.idempotence", "true").set("acks", "all");
        let transactional_id = format!("weir-{job}-{}-0", spec.uid);
        if spec.delivery == KafkaDelivery::ExactlyOnce {
            config
                .set("transactional.id", &transactional_id)
                .set("transaction.timeout.ms", spec.transaction_timeout_ms.to_string());
        }
        let producer: ThreadedProducer<Context> = config
            .create_with_context(Context::new(&spec.uid))
            .map_err(|e| error(format!("cannot configure the Kafka producer: {e}")))?;
        let transactions = match spec.delivery {
            KafkaDelivery::AtLeastOnce => None,
            KafkaDelivery::ExactlyOnce => {
                let plaintext = spec.properties.get("security.protocol").is_none_or(|p| p.eq_ignore_ascii_case("plaintext"));
                if plaintext {
                    if let Ok(missing) = crate::kafka::missing_transaction_apis(&spec.brokers) {
                        if !missing.is_empty() {
                            return Err(error(format!(
                                "the broker at {} does not support Kafka transactions (no {}), which \
                                 delivery = \"exactly-once\" needs; use delivery = \"at-least-once\" there",
                                spec.brokers,
                                missing.join(", ")
                            )));
                        }
                    }
                }
                producer.init_transactions(FLUSH_TIMEOUT).map_err(|e| {
                    error(format!(
                        "cannot start Kafka transactions on {} ({e}); the broker may not support \
                         transactions: use delivery = \"at-least-once\" there",
                        spec.brokers
                    ))
                })?;
                if let Delivery::Restore(state) = delivery {
                    tracing::info!(
                        uid = %spec.uid, transactional_id, checkpoint = %state["pending"],
                        "fenced the previous producer; its open transaction is aborted"
                    );
                }
                producer
                    .begin_transaction()
                    .map_err(|e| error(format!("cannot begin a Kafka transaction: {e}")))?;
                Some(Transactions { id: transactional_id, pending: None, waiting: VecDeque::new() })
            }
        };
        let sequence = match delivery {
            Delivery::Restore(state) => state.get("sequence").and_then(|s| s.as_u64()).unwrap_or(0),
            _ => 0,
        };
        let partitions = spec.repartition.as_ref().map_or(0, |r| r.partitions as usize);
        let last_per_partition = (0..partitions)
            .map(|p| match delivery {
                Delivery::Restore(state) => state["partitions"][p.to_string()].as_u64().unwrap_or(0),
                _ => 0,
            })
            .collect();
        let numbered_as = match &spec.repartition {
            Some(repartition) => Some(repartition.producer),
            None => spec.sequence.then(|| crate::keygroup::murmur3_32(format!("{job}/{}", spec.uid).as_bytes(), 0x5e9)),
        }
        .map(|producer| producer.to_string());
        Ok(KafkaSink {
            uid: spec.uid.clone(),
            spec: spec.clone(),
            producer,
            transactions,
            sequence,
            numbered_as,
            sequence_text: String::new(),
            last_per_partition,
        })
    }

    fn error(&self, message: String) -> SinkError {
        SinkError { uid: self.uid.clone(), message }
    }

    /// The first failed delivery, as an error.
    fn check_deliveries(&self) -> Result<(), SinkError> {
        match self.producer.context().take_failure() {
            Some(failure) => Err(self.error(failure)),
            None => Ok(()),
        }
    }

    fn topic<'a>(&'a self, event: &Event) -> Result<std::borrow::Cow<'a, str>, SinkError> {
        if let Some(field) = &self.spec.topic_field {
            let named = serde_json::from_slice::<serde_json::Value>(&event.value)
                .ok()
                .and_then(|v| v.get(field).and_then(|t| t.as_str()).map(str::to_string));
            if let Some(topic) = named {
                return Ok(topic.into());
            }
        }
        match &self.spec.topic {
            Some(topic) => Ok(topic.as_str().into()),
            None => Err(self.error(format!(
                "the event has no string field `{}` naming its topic, and no default `topic` is set",
                self.spec.topic_field.as_deref().unwrap_or_default()
            ))),
        }
    }

    /// Hands one event to the producer, waiting while its queue is full.
    fn send(&mut self, event: &Event) -> Result<(), SinkError> {
        // A repartition record goes to its key group's partition; numbered records
        // carry their producer and sequence number.
        let mut partition = None;
        if let Some(repartition) = &self.spec.repartition {
            let key = event.key.as_deref().ok_or_else(|| {
                self.error("a record without a key cannot go through a repartition topic".into())
            })?;
            partition = Some(repartition.partition(key));
        }
        if self.numbered_as.is_some() {
            use std::fmt::Write;
            self.sequence += 1;
            self.sequence_text.clear();
            let _ = write!(self.sequence_text, "{}", self.sequence);
        }
        if let Some(last) = partition.and_then(|p| self.last_per_partition.get_mut(p as usize)) {
            *last = self.sequence;
        }
        let topic = self.topic(event)?;
        let mut record = BaseRecord::to(&topic).payload(&event.value);
        if let Some(key) = &event.key {
            record = record.key(key);
        }
        if let Some(timestamp) = event.timestamp {
            record = record.timestamp(timestamp);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        let mut headers = None;
        if let Some(producer) = &self.numbered_as {
            let sequence = &self.sequence_text;
            headers = Some(
                OwnedHeaders::new_with_capacity(event.headers.len() + 2)
                    .insert(KafkaHeader { key: PRODUCER_HEADER, value: Some(producer.as_bytes()) })
                    .insert(KafkaHeader { key: SEQUENCE_HEADER, value: Some(sequence.as_bytes()) }),
            );
        }
        if !event.headers.is_empty() || headers.is_some() {
            let mut all = headers.unwrap_or_else(|| OwnedHeaders::new_with_capacity(event.headers.len()));
            for h in &event.headers {
                all = all.insert(KafkaHeader { key: &h.name, value: Some(&h.value) });
            }
            record = record.headers(all);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.check_deliveries()?;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(self.error(format!("producing to `{topic}`: {e}"))),
            }
        }
    }

    /// Waits until the brokers acknowledged everything sent.
    fn flush_all(&self) -> Result<(), SinkError> {
        self.producer
            .flush(FLUSH_TIMEOUT)
            .map_err(|e| self.error(format!("flushing to {}: {e}", self.spec.brokers)))?;
        self.check_deliveries()
    }
}

impl Sink for KafkaSink {
    fn write(&mut self, event: &Event) -> Result<(), SinkError> {
        if let Some(tx) = &mut self.transactions {
            if tx.pending.is_some() {
                tx.waiting.push_back(event.clone());
                return Ok(());
            }
        }
        self.send(event)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.flush_all()
    }

    fn flush_periodically(&mut self) -> Result<(), SinkError> {
        // The producer sends on its own (`linger.ms`); only report failures.
        self.check_deliveries()
    }

    fn pre_commit(&mut self, id: u64) -> Result<serde_json::Value, SinkError> {
        let waiting = match &mut self.transactions {
            None if self.spec.repartition.is_some() => {
                self.flush_all()?;
                let partitions: serde_json::Map<String, serde_json::Value> =
                    self.last_per_partition.iter().enumerate().map(|(p, s)| (p.to_string(), json!(s))).collect();
                return Ok(json!({ "sequence": self.sequence, "partitions": partitions }));
            }
            None if self.numbered_as.is_some() => {
                self.flush_all()?;
                return Ok(json!({ "sequence": self.sequence }));
            }
            None => {
                self.flush_all()?;
                return Ok(serde_json::Value::Null);
            }
            // A transaction pre-committed for a checkpoint that never completed carries
            // over into this one, with the events that waited for it.
            Some(tx) => std::mem::take(&mut tx.waiting),
        };
        for event in &waiting {
            self.send(event)?;
        }
        self.flush_all()?;
        let tx = self.transactions.as_mut().expect("exactly-once");
        tx.pending = Some(id);
        Ok(json!({ "transactional_id": tx.id, "pending": id, REQUIRES_COMMIT_RECORD: true }))
    }

    fn commit(&mut self, id: u64) -> Result<(), SinkError> {
        let Some(tx) = &mut self.transactions else { return Ok(()) };
        if tx.pending.is_none_or(|pending| pending > id) {
            return Ok(());
        }
        tracing::debug!(uid = %self.uid, checkpoint = id, "committing the Kafka transaction");
        let waiting = std::mem::take(&mut tx.waiting);
        tx.pending = None;
        self.producer
            .commit_transaction(FLUSH_TIMEOUT)
            .map_err(|e| self.error(format!("committing the transaction of checkpoint {id}: {e}")))?;
        self.producer
            .begin_transaction()
            .map_err(|e| self.error(format!("beginning a Kafka transaction: {e}")))?;
        for event in &waiting {
            self.send(event)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        // The input ended: everything received becomes visible.
        if self.transactions.is_some() {
            let waiting = std::mem::take(&mut self.transactions.as_mut().expect("checked").waiting);
            for event in &waiting {
                self.send(event)?;
            }
            self.flush_all()?;
            self.producer
                .commit_transaction(FLUSH_TIMEOUT)
                .map_err(|e| self.error(format!("committing the final transaction: {e}")))?;
            self.transactions = None;
            return Ok(());
        }
        self.flush_all()
    }

    fn abort(&mut self) {
        if self.transactions.take().is_some() {
            if let Err(e) = self.producer.abort_transaction(FLUSH_TIMEOUT) {
                tracing::warn!(uid = %self.uid, error = %e, "aborting the Kafka transaction failed; the next start fences it");
            }
        }
    }
}

/// A `[[sink]]` of `type = "kafka"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkSpec {
    pub uid: String,
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic records go to (the default when `topic_field` is set).
    pub topic: Option<String>,
    /// Top-level JSON field of the value naming each record's topic.
    pub topic_field: Option<String>,
    #[serde(default)]
    pub delivery: KafkaDelivery,
    /// The broker aborts a transaction left open longer than this (exactly-once).
    #[serde(default = "default_transaction_timeout_ms")]
    pub transaction_timeout_ms: u64,
    /// Extra librdkafka producer properties.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Number the records (headers `weir-producer` and `weir-seq`, the number kept in
    /// the checkpoint), so that a Kafka source with `deduplicate = true` drops the
    /// records a restored job writes again: exactly once for weir readers on brokers
    /// without transactions (`docs/kafka.md`). At-least-once delivery only.
    #[serde(default)]
    pub sequence: bool,
    /// Set by a cluster for the sink of a repartition topic (never in a job file).
    #[serde(skip)]
    pub repartition: Option<RepartitionWrite>,
}

/// A Kafka sink's guarantee (Flink's `DeliveryGuarantee`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KafkaDelivery {
    /// Idempotent producer, flushed before each checkpoint completes: no loss,
    /// duplicates after a restore.
    #[default]
    AtLeastOnce,
    /// A Kafka transaction per checkpoint, committed when the checkpoint completes.
    ExactlyOnce,
}

fn default_transaction_timeout_ms() -> u64 {
    60_000
}

