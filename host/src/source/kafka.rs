//! Records from Kafka topics.
//!
//! The source assigns itself every partition of its topics (no group rebalances: the
//! job's checkpoints own the offsets, as in Flink's `KafkaSource`), keeps the next
//! offset of each partition as its position, and commits the offsets of a completed
//! checkpoint to its consumer group for monitoring. Each partition is a split with its
//! own watermark. New partitions are discovered periodically and read from the start.
//! A broker that cannot be reached is retried with backoff; a deleted topic or a
//! partition that disappears is an error.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header as KafkaHeader, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::avro::{AvroDecoder, RecordFormat};
use super::{JsonFields, Pacer, Source, SourceError, SourcePoll};
use crate::cluster::topology::{PRODUCER_HEADER, RepartitionRead, SEQUENCE_HEADER};
use crate::kafka::{Backoff, Context, REQUEST_TIMEOUT, client_config};
use crate::stream::{Event, Header, Spares};

fn is_json(format: &RecordFormat) -> bool {
    *format == RecordFormat::Json
}
use crate::watermark::WatermarkStrategy;

/// A partition of one of the source's topics.
type Partition = (String, i32);

/// An assigned partition, found per record by its split id (no per-record allocation).
struct Assigned {
    topic: String,
    partition: i32,
    /// The next offset to read.
    next: i64,
    /// Bounded mode: the end offset found at the first assignment.
    stop: Option<i64>,
    finished: bool,
    /// `kafka <topic>[<partition>]`, for positions and errors.
    label: Arc<str>,
}

/// How long a poll waits when nothing is buffered.
const IDLE_WAIT: Duration = Duration::from_millis(10);

pub struct KafkaSource {
    uid: String,
    spec: KafkaSourceSpec,
    label: Arc<str>,
    consumer: BaseConsumer<Context>,
    dead_letters: Option<ThreadedProducer<Context>>,
    fields: JsonFields,
    /// Decodes Avro values to JSON (`format = "avro"`, ...).
    avro: Option<AvroDecoder>,
    /// Every assigned partition, by split id.
    partitions: BTreeMap<u32, Assigned>,
    /// Offsets from a checkpoint for partitions not assigned yet.
    restored: BTreeMap<Partition, i64>,
    /// Whether the first assignment happened (later partitions start at the earliest).
    assigned: bool,
    next_discovery: Instant,
    backoff: Backoff,
    /// When the last "broker unreachable" warning was logged while reading.
    last_warning: Option<Instant>,
    pacer: Pacer,
    /// Records returned so far in this run, for pacing.
    returned: u64,
    /// Reading a repartition topic: the last sequence number seen from each producer
    /// (records at or below it are duplicates), and each producer's label.
    sequences: BTreeMap<u32, u64>,
    producer_labels: BTreeMap<u32, Arc<str>>,
}

impl KafkaSource {
    /// Configures the consumer; nothing is contacted before the first poll, so an
    /// unreachable broker delays the source without failing the job.
    pub fn open(spec: &KafkaSourceSpec, job: &str) -> Result<Self, SourceError> {
        let error = |message: String| SourceError { uid: spec.uid.clone(), message };
        let group = spec.group_id.clone().unwrap_or_else(|| format!("weir-{job}-{}", spec.uid));
        let mut config = client_config(&spec.brokers, &spec.properties);
        config
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest");
        if !spec.properties.contains_key("statistics.interval.ms") {
            // Statistics carry the consumer lag the source reports as pending records.
            config.set("statistics.interval.ms", "1000");
        }
        let consumer = config
            .create_with_context(Context::new(&spec.uid))
            .map_err(|e| error(format!("cannot configure the Kafka consumer: {e}")))?;
        let dead_letters = match &spec.dead_letter_topic {
            None => None,
            Some(_) => Some(
                client_config(&spec.brokers, &spec.properties)
                    .set("enable.idempotence", "true")
                    .create_with_context(Context::new(&spec.uid))
                    .map_err(|e| error(format!("cannot configure the dead-letter producer: {e}")))?,
            ),
        };
        let avro = match (spec.format, &spec.schema) {
            (RecordFormat::Json, None) => None,
            (RecordFormat::Json, Some(_)) => {
                return Err(error("`schema` describes Avro records: set format = \"avro\" or \"avro-confluent\"".into()));
            }
            (_, None) => return Err(error(format!("format = {:?} needs `schema`, an .avsc file", spec.format))),
            (format, Some(schema)) => Some(AvroDecoder::load(schema, format).map_err(error)?),
        };
        Ok(KafkaSource {
            uid: spec.uid.clone(),
            label: format!("kafka {}", spec.topics.join(",")).into(),
            avro,
            spec: spec.clone(),
            consumer,
            dead_letters,
            fields: JsonFields {
                key_field: spec.key_field.clone(),
                timestamp_field: spec.timestamp_field.clone(),
            },
            partitions: BTreeMap::new(),
            restored: BTreeMap::new(),
            assigned: false,
            next_discovery: Instant::now(),
            backoff: Backoff::default(),
            last_warning: None,
            pacer: Pacer::new(spec.rate),
            returned: 0,
            sequences: BTreeMap::new(),
            producer_labels: spec
                .repartition
                .iter()
                .flat_map(|r| &r.producers)
                .map(|p| (*p, format!("kafka {} from producer {p}", spec.topics.join(",")).into()))
                .collect(),
        })
    }

    fn error(&self, message: String) -> SourceError {
        SourceError { uid: self.uid.clone(), message }
    }

    /// The split id of a partition: the topic's index in `topics` and the partition.
    fn split(&self, topic: &str, partition: i32) -> u32 {
        let index = self.spec.topics.iter().position(|t| t == topic).unwrap_or(0) as u32;
        (index << 16) | (partition as u32 & 0xffff)
    }

    /// Looks up the partitions of every topic and assigns the new ones. `Ok(false)`
    /// when the brokers cannot be reached (retried with backoff).
    fn discover(&mut self) -> Result<bool, SourceError> {
        let mut found = BTreeSet::new();
        for topic in &self.spec.topics {
            let metadata = match self.consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT) {
                Ok(metadata) => metadata,
                Err(e) => {
                    let (attempt, wait) = self.backoff.failed();
                    tracing::warn!(
                        uid = %self.uid, brokers = %self.spec.brokers, attempt,
                        retry_in_ms = wait.as_millis() as u64,
                        "cannot reach Kafka to look up topic `{topic}`: {e}; retrying"
                    );
                    return Ok(false);
                }
            };
            let Some(entry) = metadata.topics().iter().find(|t| t.name() == topic) else {
                return Err(self.error(format!("topic `{topic}` is missing from the metadata")));
            };
            if let Some(code) = entry.error() {
                let code = RDKafkaErrorCode::from(code);
                let had = self.partitions.values().any(|p| p.topic == *topic);
                return Err(self.error(if code == RDKafkaErrorCode::UnknownTopicOrPartition && had {
                    format!("topic `{topic}` was deleted while the job read it")
                } else if code == RDKafkaErrorCode::UnknownTopicOrPartition {
                    format!("topic `{topic}` does not exist on {}; create it first", self.spec.brokers)
                } else {
                    format!("topic `{topic}`: {code}")
                }));
            }
            if entry.partitions().is_empty() {
                return Err(self.error(format!("topic `{topic}` has no partitions")));
            }
            let wanted = |id: &i32| self.spec.partitions.as_ref().is_none_or(|only| only.contains(id));
            found.extend(entry.partitions().iter().map(|p| p.id()).filter(wanted).map(|id| (topic.clone(), id)));
        }
        self.backoff.succeeded();
        let lost = self.partitions.values().find(|p| !found.contains(&(p.topic.clone(), p.partition)));
        if let Some(Assigned { topic, partition, .. }) = lost {
            return Err(self.error(format!(
                "partition {partition} of topic `{topic}` disappeared (was the topic deleted and \
                 recreated?); restore from a savepoint with `--allow-non-restored-state` to start over"
            )));
        }
        let new: Vec<Partition> =
            found.into_iter().filter(|(t, p)| !self.partitions.contains_key(&self.split(t, *p))).collect();
        if !new.is_empty() {
            return self.assign(new);
        }
        Ok(true)
    }

    /// Resolves where each new partition starts and adds it to the assignment.
    /// `Ok(false)` when the brokers do not answer (retried with backoff, as
    /// [`KafkaSource::discover`]).
    fn assign(&mut self, partitions: Vec<Partition>) -> Result<bool, SourceError> {
        let first = !self.assigned;
        // Every partition's offsets first: a broker that times out changes nothing.
        let mut watermarks = Vec::with_capacity(partitions.len());
        for (topic, partition) in &partitions {
            match self.consumer.fetch_watermarks(topic, *partition, REQUEST_TIMEOUT) {
                Ok(found) => watermarks.push(found),
                Err(e) => {
                    let (attempt, wait) = self.backoff.failed();
                    tracing::warn!(
                        uid = %self.uid, brokers = %self.spec.brokers, attempt,
                        retry_in_ms = wait.as_millis() as u64,
                        "cannot read the offsets of {topic}[{partition}]: {e}; retrying"
                    );
                    return Ok(false);
                }
            }
        }
        let mut starts = BTreeMap::new();
        for ((topic, partition), (low, high)) in partitions.iter().zip(watermarks) {
            let key = (topic.clone(), *partition);
            let start = match self.restored.remove(&key) {
                Some(offset) => offset,
                // Partitions found after the start are new: read them from the beginning.
                None if !first => low,
                None => match self.spec.start {
                    StartPosition::Earliest => low,
                    StartPosition::Latest => high,
                    StartPosition::Committed => self.committed(topic, *partition)?.unwrap_or(low),
                    StartPosition::Timestamp(ms) => self.offset_for_time(topic, *partition, ms)?.unwrap_or(high),
                },
            };
            if start < low {
                // Retention removed records the saved position still pointed at.
                tracing::warn!(
                    uid = %self.uid, topic, partition, saved = start, earliest = low,
                    "the saved offset is no longer retained; reading on from the earliest offset"
                );
            }
            let stop = (self.spec.bounded && first).then_some(high);
            starts.insert(key, (start.clamp(low, high.max(low)), stop));
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), (start, _)) in &starts {
            list.add_partition_offset(topic, *partition, Offset::Offset(*start))
                .map_err(|e| self.error(e.to_string()))?;
            tracing::info!(uid = %self.uid, topic, partition, offset = start, "assigned partition");
        }
        self.consumer
            .incremental_assign(&list)
            .map_err(|e| self.error(format!("assigning partitions: {e}")))?;
        for ((topic, partition), (next, stop)) in starts {
            let split = self.split(&topic, partition);
            let label = format!("kafka {topic}[{partition}]").into();
            let finished = stop.is_some_and(|stop| next >= stop);
            self.partitions.insert(split, Assigned { topic, partition, next, stop, finished, label });
        }
        self.assigned = true;
        Ok(true)
    }

    fn committed(&self, topic: &str, partition: i32) -> Result<Option<i64>, SourceError> {
        let mut list = TopicPartitionList::new();
        list.add_partition(topic, partition);
        let committed = self
            .consumer
            .committed_offsets(list, REQUEST_TIMEOUT)
            .map_err(|e| self.error(format!("reading the committed offset of {topic}[{partition}]: {e}")))?;
        Ok(committed.find_partition(topic, partition).and_then(|p| p.offset().to_raw()).filter(|o| *o >= 0))
    }

    fn offset_for_time(&self, topic: &str, partition: i32, ms: i64) -> Result<Option<i64>, SourceError> {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, partition, Offset::Offset(ms)).map_err(|e| self.error(e.to_string()))?;
        let found = self
            .consumer
            .offsets_for_times(list, REQUEST_TIMEOUT)
            .map_err(|e| self.error(format!("looking up {topic}[{partition}] by timestamp {ms}: {e}")))?;
        Ok(found.find_partition(topic, partition).and_then(|p| p.offset().to_raw()).filter(|o| *o >= 0))
    }

    /// Turns a Kafka record into an event (or the reason it cannot be one), in an
    /// event of `spares` when there are any.
    fn decode(&self, message: &BorrowedMessage<'_>, spares: Option<&mut Spares>) -> Result<Event, String> {
        let decoded;
        let payload = match &self.avro {
            Some(avro) => {
                decoded = avro.to_json(message.payload().unwrap_or_default())?;
                &decoded[..]
            }
            None => message.payload().unwrap_or_default(),
        };
        let (mut field_key, mut timestamp) = (None, message.timestamp().to_millis());
        if !self.fields.is_empty() {
            let (key, time) = self.fields.extract(payload)?;
            field_key = key;
            timestamp = time.or(timestamp);
        }
        let timestamp = timestamp.or_else(|| Some(crate::clock::now_ms()));
        let mut event = spares.map_or_else(Event::default, Spares::take);
        match field_key {
            Some(key) => {
                event.refill(None, payload, timestamp);
                event.key = Some(key);
            }
            None => event.refill(message.key(), payload, timestamp),
        }
        if let Some(headers) = message.headers() {
            event.headers.extend(
                headers.iter().map(|h| Header { name: h.key.to_string(), value: h.value.unwrap_or_default().to_vec() }),
            );
        }
        Ok(event)
    }

    /// Sends a record that cannot be decoded to the dead-letter topic, with headers that
    /// say where it came from and why it was rejected.
    fn dead_letter(&self, message: &BorrowedMessage<'_>, reason: &str) -> Result<(), SourceError> {
        let (Some(producer), Some(topic)) = (&self.dead_letters, &self.spec.dead_letter_topic) else {
            return Ok(());
        };
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for h in original.iter() {
                headers = headers.insert(h);
            }
        }
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        for (key, value) in [
            ("weir.error", reason),
            ("weir.source.topic", message.topic()),
            ("weir.source.partition", partition.as_str()),
            ("weir.source.offset", offset.as_str()),
        ] {
            headers = headers.insert(KafkaHeader { key, value: Some(value) });
        }
        let mut record = BaseRecord::to(topic).payload(message.payload().unwrap_or_default()).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(self.error(format!("sending to dead-letter topic `{topic}`: {e}")));
                }
            }
        }
    }

    fn all_finished(&self) -> bool {
        self.spec.bounded && self.assigned && self.partitions.values().all(|p| p.finished)
    }

    /// Stops reading a partition of a bounded source that reached its end offset.
    fn finish_partition(&mut self, split: u32) {
        let Some(assigned) = self.partitions.get_mut(&split) else { return };
        let mut list = TopicPartitionList::new();
        list.add_partition(&assigned.topic, assigned.partition);
        let _ = self.consumer.pause(&list);
        assigned.finished = true;
    }

    /// Logs a broker problem met while reading, at most every ten seconds.
    fn warn_transient(&mut self, error: &KafkaError) {
        if self.last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
            self.last_warning = Some(Instant::now());
            tracing::warn!(uid = %self.uid, brokers = %self.spec.brokers, %error, "reading from Kafka failed; retrying");
        }
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        // Dead letters handed over before a stop still reach their topic.
        if let Some(producer) = &self.dead_letters {
            if let Err(e) = producer.flush(Duration::from_secs(10)) {
                tracing::warn!(uid = %self.uid, error = %e, "dead letters may be lost: flushing failed");
            }
        }
    }
}

impl KafkaSource {
    /// The next record's event, filled into one of `spares` if given.
    fn read(&mut self, spares: Option<&mut Spares>) -> Result<SourcePoll, SourceError> {
        let discovery_due = !self.assigned
            || (!self.spec.bounded
                && self.spec.partition_discovery_ms > 0
                && Instant::now() >= self.next_discovery);
        if discovery_due {
            if !self.backoff.ready() {
                return Ok(SourcePoll::Pending(self.backoff.remaining().min(Duration::from_millis(100))));
            }
            if !self.discover()? && !self.assigned {
                return Ok(SourcePoll::Pending(Duration::from_millis(100)));
            }
            self.next_discovery = Instant::now() + Duration::from_millis(self.spec.partition_discovery_ms);
        }
        if self.all_finished() {
            self.prepare_checkpoint()?;
            return Ok(SourcePoll::End);
        }
        if let Some(wait) = self.pacer.wait(self.returned) {
            return Ok(SourcePoll::Pending(wait));
        }
        let message = match self.consumer.poll(Duration::ZERO) {
            None => return Ok(SourcePoll::Pending(IDLE_WAIT)),
            Some(Ok(message)) => message,
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                // The end of a partition: in bounded mode, done once at the stop offset
                // (control records of transactions can sit between the last record and
                // the end offset, so the consumer's position decides).
                if self.spec.bounded {
                    let positions = self.consumer.position().map_err(|e| self.error(e.to_string()))?;
                    for element in positions.elements().iter().filter(|e| e.partition() == partition) {
                        let split = self.split(element.topic(), partition);
                        let Some(assigned) = self.partitions.get_mut(&split) else { continue };
                        let at = element.offset().to_raw().unwrap_or(-1).max(assigned.next);
                        if let Some(stop) = assigned.stop.filter(|stop| at >= *stop) {
                            assigned.next = stop;
                            self.finish_partition(split);
                        }
                    }
                }
                return Ok(SourcePoll::Pending(Duration::ZERO));
            }
            Some(Err(e)) => {
                return match e.rdkafka_error_code() {
                    Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
                        Err(self.error(format!("a topic or partition it reads is gone: {e}")))
                    }
                    _ if matches!(e, KafkaError::MessageConsumptionFatal(_)) => {
                        Err(self.error(format!("the consumer failed: {e}")))
                    }
                    _ => {
                        self.warn_transient(&e);
                        Ok(SourcePoll::Pending(Duration::from_millis(100)))
                    }
                };
            }
        };
        let split = self.split(message.topic(), message.partition());
        let offset = message.offset();
        let Some(stop) = self.partitions.get(&split).map(|p| p.stop) else {
            // Not a partition this source assigned (cannot happen with manual assignment).
            return Ok(SourcePoll::Pending(Duration::ZERO));
        };
        if stop.is_some_and(|stop| offset >= stop) {
            drop(message);
            self.finish_partition(split);
            return Ok(SourcePoll::Pending(Duration::ZERO));
        }
        // A numbered record seen before is dropped; a repartition record's split is its
        // producer.
        let mut record_split = split;
        if self.spec.repartition.is_some() || self.spec.deduplicate {
            match stamp(&message) {
                Some((producer, sequence)) => {
                    let last = self.sequences.entry(producer).or_insert(0);
                    if sequence <= *last {
                        drop(message);
                        if let Some(assigned) = self.partitions.get_mut(&split) {
                            assigned.next = offset + 1;
                        }
                        return Ok(SourcePoll::Pending(Duration::ZERO));
                    }
                    *last = sequence;
                    if let Some(repartition) = &self.spec.repartition {
                        repartition.seen.set(producer, sequence);
                        record_split = producer;
                    }
                }
                None if self.spec.repartition.is_none() => {}
                None => {
                    let record = raw_event(&message);
                    drop(message);
                    if let Some(assigned) = self.partitions.get_mut(&split) {
                        assigned.next = offset + 1;
                    }
                    return Ok(SourcePoll::Malformed {
                        offset,
                        split,
                        record,
                        reason: format!("a record of a repartition topic without `{PRODUCER_HEADER}` and `{SEQUENCE_HEADER}` headers"),
                    });
                }
            }
        }
        let polled = match self.decode(&message, spares) {
            Ok(mut event) => {
                if self.spec.repartition.is_some() || self.spec.deduplicate {
                    event.headers.retain(|h| h.name != PRODUCER_HEADER && h.name != SEQUENCE_HEADER);
                }
                SourcePoll::Record { event, offset, split: record_split }
            }
            Err(reason) if self.dead_letters.is_some() => {
                self.dead_letter(&message, &reason)?;
                tracing::debug!(uid = %self.uid, topic = message.topic(), partition = message.partition(), offset, %reason, "dead-lettered");
                SourcePoll::DeadLettered { offset, split }
            }
            Err(reason) => SourcePoll::Malformed { offset, split, reason, record: raw_event(&message) },
        };
        drop(message);
        self.returned += 1;
        if let Some(assigned) = self.partitions.get_mut(&split) {
            assigned.next = offset + 1;
        }
        if stop.is_some_and(|stop| offset + 1 >= stop) {
            self.finish_partition(split);
        }
        Ok(polled)
    }
}

impl Source for KafkaSource {
    fn label(&self) -> Arc<str> {
        self.label.clone()
    }

    fn split_label(&self, split: u32) -> Arc<str> {
        if self.spec.repartition.is_some() {
            return self.producer_labels.get(&split).cloned().unwrap_or_else(|| self.label.clone());
        }
        self.partitions.get(&split).map_or_else(|| self.label.clone(), |p| p.label.clone())
    }

    fn pending(&self) -> Option<u64> {
        self.consumer.context().lag()
    }

    fn unit(&self) -> &'static str {
        "offset"
    }

    fn poll(&mut self) -> Result<SourcePoll, SourceError> {
        self.read(None)
    }

    fn poll_reusing(&mut self, spares: &mut Spares) -> Result<SourcePoll, SourceError> {
        self.read(Some(spares))
    }

    fn splits(&self) -> Vec<u32> {
        match &self.spec.repartition {
            // Every producer holds event time back until it wrote (or is idle).
            Some(repartition) => repartition.producers.clone(),
            None => self.partitions.keys().copied().collect(),
        }
    }

    fn prepare_checkpoint(&mut self) -> Result<(), SourceError> {
        // Dead letters sent before the barrier must be durable before the checkpoint
        // that skips their records completes.
        if let Some(producer) = &self.dead_letters {
            producer
                .flush(Duration::from_secs(30))
                .map_err(|e| self.error(format!("flushing the dead-letter topic: {e}")))?;
            if let Some(failure) = producer.context().take_failure() {
                return Err(self.error(format!("dead-letter topic: {failure}")));
            }
        }
        Ok(())
    }

    fn position(&self) -> serde_json::Value {
        let mut offsets = serde_json::Map::new();
        for ((topic, partition), offset) in &self.restored {
            offsets.insert(format!("{topic}/{partition}"), json!(offset));
        }
        for assigned in self.partitions.values() {
            offsets.insert(format!("{}/{}", assigned.topic, assigned.partition), json!(assigned.next));
        }
        if self.spec.repartition.is_some() || self.spec.deduplicate {
            let sequences: serde_json::Map<String, serde_json::Value> =
                self.sequences.iter().map(|(p, s)| (p.to_string(), json!(s))).collect();
            return json!({ "offsets": offsets, "sequences": sequences });
        }
        json!({ "offsets": offsets })
    }

    fn restore(&mut self, position: &serde_json::Value) -> Result<(), SourceError> {
        let offsets = position
            .get("offsets")
            .and_then(|o| o.as_object())
            .ok_or_else(|| self.error(format!("not a Kafka source position: {position}")))?;
        for (name, offset) in offsets {
            let parsed = name
                .rsplit_once('/')
                .and_then(|(topic, partition)| Some((topic.to_string(), partition.parse::<i32>().ok()?)));
            let (Some(key), Some(offset)) = (parsed, offset.as_i64()) else {
                return Err(self.error(format!("malformed saved offset `{name}`: {offset}")));
            };
            if self.spec.topics.contains(&key.0) {
                self.restored.insert(key, offset);
            } else {
                tracing::warn!(uid = %self.uid, topic = %key.0, "the saved offsets name a topic the source no longer reads; ignored");
            }
        }
        for (producer, sequence) in position.get("sequences").and_then(|s| s.as_object()).into_iter().flatten() {
            let (Ok(producer), Some(sequence)) = (producer.parse::<u32>(), sequence.as_u64()) else {
                return Err(self.error(format!("malformed saved sequence of producer `{producer}`: {sequence}")));
            };
            self.sequences.insert(producer, sequence);
            if let Some(repartition) = &self.spec.repartition {
                repartition.seen.set(producer, sequence);
            }
        }
        Ok(())
    }

    fn checkpoint_complete(&mut self, position: &serde_json::Value) {
        // For monitoring only (lag per group): the checkpoint holds the real offsets.
        let mut list = TopicPartitionList::new();
        for (name, offset) in position.get("offsets").and_then(|o| o.as_object()).into_iter().flatten() {
            if let (Some((topic, partition)), Some(offset)) = (name.rsplit_once('/'), offset.as_i64()) {
                if let Ok(partition) = partition.parse() {
                    let _ = list.add_partition_offset(topic, partition, Offset::Offset(offset));
                }
            }
        }
        if list.count() > 0 {
            if let Err(e) = self.consumer.commit(&list, CommitMode::Async) {
                tracing::debug!(uid = %self.uid, error = %e, "committing offsets for monitoring failed");
            }
        }
    }
}

/// The producer and sequence number of a repartition record, from its headers.
fn stamp(message: &BorrowedMessage<'_>) -> Option<(u32, u64)> {
    let headers = message.headers()?;
    let number = |name: &str| {
        let header = headers.iter().find(|h| h.key == name)?;
        std::str::from_utf8(header.value?).ok()?.parse::<u64>().ok()
    };
    Some((u32::try_from(number(PRODUCER_HEADER)?).ok()?, number(SEQUENCE_HEADER)?))
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceSpec {
    pub uid: String,
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    pub topics: Vec<String>,
    /// How record values are encoded: `json` (the default), or `avro` /
    /// `avro-confluent` with `schema`, decoded to JSON for the job.
    #[serde(default, skip_serializing_if = "is_json")]
    pub format: RecordFormat,
    /// The Avro schema (`.avsc`) of `avro` formats, relative to the job file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<std::path::PathBuf>,
    /// The consumer group offsets are committed under (for monitoring and for
    /// `start = "committed"`). Default: `weir-<job>-<uid>`.
    pub group_id: Option<String>,
    /// Where to begin when no checkpoint or savepoint says otherwise.
    #[serde(default)]
    pub start: StartPosition,
    /// Stop at the end offsets found when the job starts (tests, backfills).
    #[serde(default)]
    pub bounded: bool,
    /// Top-level JSON field of the value to use as the key instead of the Kafka key.
    pub key_field: Option<String>,
    /// Top-level JSON field of the value with the event time (epoch ms) instead of the
    /// Kafka record timestamp.
    pub timestamp_field: Option<String>,
    /// Where records that cannot be decoded go; without it the job's `on_error` decides.
    pub dead_letter_topic: Option<String>,
    /// Read at most this many records per second (demos and tests); unthrottled when
    /// absent.
    pub rate: Option<f64>,
    /// How often to look for new partitions (ms; 0 = never).
    #[serde(default = "default_discovery_ms")]
    pub partition_discovery_ms: u64,
    /// Extra librdkafka consumer properties (`security.protocol`, ...).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub watermark: WatermarkStrategy,
    /// Read only these partition numbers of each topic (default: all). A cluster's
    /// task sets it to its own partition (`docs/cluster.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<i32>>,
    /// Drop records numbered by a Kafka sink with `sequence = true` (or a repartition
    /// writer) at or below the last number seen from their producer, which a restored
    /// writer sends again; the numbers seen are part of the checkpoint. Records
    /// without the headers pass.
    #[serde(default)]
    pub deduplicate: bool,
    /// Set by a cluster for the source of a repartition topic (never in a job file).
    #[serde(skip)]
    pub repartition: Option<RepartitionRead>,
}

/// Where a Kafka source starts reading a partition it has no saved offset for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum StartPosition {
    /// The oldest retained record.
    #[default]
    Earliest,
    /// Only records produced after the job starts.
    Latest,
    /// The consumer group's committed offset (earliest when there is none).
    Committed,
    /// The first record with a timestamp at or after this many ms since the epoch.
    Timestamp(i64),
}

fn default_discovery_ms() -> u64 {
    10_000
}

/// A Kafka record as it came, for a dead letter: key, payload, timestamp and headers.
fn raw_event(message: &BorrowedMessage<'_>) -> Event {
    Event {
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().unwrap_or_default().to_vec(),
        timestamp: message.timestamp().to_millis(),
        headers: message
            .headers()
            .map(|headers| {
                headers.iter().map(|h| Header { name: h.key.to_string(), value: h.value.unwrap_or_default().to_vec() }).collect()
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(topics: &[&str]) -> KafkaSourceSpec {
        let text = format!("uid = \"in\"\nbrokers = \"127.0.0.1:1\"\ntopics = {topics:?}");
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn the_last_numbers_seen_per_producer_are_saved_and_restored() {
        let mut spec = spec(&["a"]);
        spec.deduplicate = true;
        let mut source = KafkaSource::open(&spec, "job").unwrap();
        source.restore(&json!({ "offsets": { "a/0": 5 }, "sequences": { "7": 41, "9": 3 } })).unwrap();
        assert_eq!(source.position(), json!({ "offsets": { "a/0": 5 }, "sequences": { "7": 41, "9": 3 } }));
        let error = source.restore(&json!({ "offsets": {}, "sequences": { "x": 1 } })).unwrap_err();
        assert!(error.message.contains("malformed saved sequence"), "{error}");
    }

    #[test]
    fn saved_offsets_round_trip_and_name_their_partitions() {
        let mut source = KafkaSource::open(&spec(&["a", "b"]), "job").unwrap();
        let position = json!({ "offsets": { "a/0": 5, "b/3": 17, "gone/1": 2 } });
        source.restore(&position).unwrap();
        // Offsets of a topic the source no longer reads are dropped; the rest are kept
        // until their partitions are assigned.
        assert_eq!(source.position(), json!({ "offsets": { "a/0": 5, "b/3": 17 } }));
        assert_eq!((source.split("a", 0), source.split("b", 3)), (0, (1 << 16) | 3));
        let bad = source.restore(&json!({ "offsets": { "a": 1 } })).unwrap_err();
        assert!(bad.to_string().contains("malformed saved offset `a`"), "{bad}");
    }

    #[test]
    fn start_positions_parse_from_the_job_file() {
        let parse = |start: &str| toml::from_str::<KafkaSourceSpec>(&format!(
            "uid = \"in\"\nbrokers = \"b\"\ntopics = [\"t\"]\nstart = {start}"
        ))
        .map(|s| s.start);
        assert_eq!(parse("\"latest\"").unwrap(), StartPosition::Latest);
        assert_eq!(parse("{ timestamp = 1000 }").unwrap(), StartPosition::Timestamp(1000));
        assert!(parse("\"newest\"").is_err());
    }
}
