//! # Sources
//!
//! A source produces events and says where each came from (its offset), so that errors
//! can name the input and, with checkpoints, the position can be saved and restored.
//! The source task around it assigns watermarks and forwards records downstream.

mod file;
mod generator;
pub mod kafka;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use file::{DEFAULT_MAX_RECORD_BYTES, FileSource};
pub use generator::GeneratorSource;
pub use kafka::KafkaSource;

use crate::stream::{Event, Spares};

/// A source that failed (and cannot go on).
#[derive(Debug, thiserror::Error)]
#[error("source `{uid}`: {message}")]
pub struct SourceError {
    pub uid: String,
    pub message: String,
}

/// What a source has next.
#[derive(Debug)]
pub enum SourcePoll {
    /// An event, at `offset` in `split` of the source (line number, sequence number,
    /// Kafka offset in a partition).
    Record { event: Event, offset: i64, split: u32 },
    /// A malformed record the source already sent to its dead-letter destination.
    DeadLettered { offset: i64, split: u32 },
    /// Input at `offset` that is not a valid event; the job's `on_error` decides.
    Malformed { offset: i64, split: u32, reason: String },
    /// Nothing yet; ask again after this long.
    Pending(Duration),
    /// The input has ended.
    End,
}

/// A producer of events.
pub trait Source: Send {
    /// A label for positions and errors, such as the file path.
    fn label(&self) -> Arc<str>;
    /// The label of one split (a Kafka partition), for positions and errors.
    fn split_label(&self, split: u32) -> Arc<str> {
        let _ = split;
        self.label()
    }
    /// What offsets count (`line`, `seq`, `offset`).
    fn unit(&self) -> &'static str;
    fn poll(&mut self) -> Result<SourcePoll, SourceError>;
    /// As [`Source::poll`], filling an event of `spares` (buffers the consumers handed
    /// back) instead of allocating one, where the source can.
    fn poll_reusing(&mut self, spares: &mut Spares) -> Result<SourcePoll, SourceError> {
        let _ = spares;
        self.poll()
    }
    /// Makes everything the source did so far durable (dead letters) before a
    /// checkpoint saves its position.
    fn prepare_checkpoint(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
    /// Where the next poll would read from, for checkpoints.
    fn position(&self) -> serde_json::Value;
    /// Continues from a position taken by [`Source::position`].
    fn restore(&mut self, position: &serde_json::Value) -> Result<(), SourceError>;
    /// The splits (partitions) the source reads, each with its own watermark.
    fn splits(&self) -> Vec<u32> {
        vec![0]
    }
    /// How many records are there to read that the source has not read yet, if it knows
    /// (Kafka: the consumer lag, summed over its partitions). Cheap: it is asked often.
    fn pending(&self) -> Option<u64> {
        None
    }
    /// A checkpoint whose position was `position` completed (Kafka commits offsets).
    fn checkpoint_complete(&mut self, position: &serde_json::Value) {
        let _ = position;
    }
}

/// The top-level fields of a JSON object value that hold an event's key and its
/// event time (epoch milliseconds).
#[derive(Debug, Clone, Default)]
pub struct JsonFields {
    pub key_field: Option<String>,
    pub timestamp_field: Option<String>,
}

impl JsonFields {
    /// Whether no field is read (the value need not be JSON then).
    pub fn is_empty(&self) -> bool {
        self.key_field.is_none() && self.timestamp_field.is_none()
    }

    /// Parses `value` as a JSON object and reads the key and timestamp fields (each
    /// `None` when not configured). The error says what is wrong with the value.
    pub fn extract(&self, value: &[u8]) -> Result<(Option<Vec<u8>>, Option<i64>), String> {
        let json: serde_json::Value =
            serde_json::from_slice(value).map_err(|e| format!("invalid JSON: {e}"))?;
        let object = json.as_object().ok_or("expected a JSON object")?;
        let key = match &self.key_field {
            None => None,
            Some(field) => Some(match object.get(field) {
                Some(serde_json::Value::String(s)) => s.as_bytes().to_vec(),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    v.to_string().into_bytes()
                }
                Some(_) => return Err(format!("key field `{field}` must be a string, number or bool")),
                None => return Err(format!("missing key field `{field}`")),
            }),
        };
        let timestamp = match &self.timestamp_field {
            None => None,
            Some(field) => Some(match object.get(field) {
                Some(v) => v.as_i64().ok_or_else(|| {
                    format!("timestamp field `{field}` must be an integer (epoch milliseconds)")
                })?,
                None => return Err(format!("missing timestamp field `{field}`")),
            }),
        };
        Ok((key, timestamp))
    }
}

/// Paces a source to a number of records per second.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate: Option<f64>,
    started: Option<Instant>,
}

impl Pacer {
    pub fn new(rate: Option<f64>) -> Self {
        Pacer { rate, started: None }
    }

    /// How long to wait before record number `n` (from 0) is due, if at all.
    pub fn wait(&mut self, n: u64) -> Option<Duration> {
        let rate = self.rate?;
        let started = *self.started.get_or_insert_with(Instant::now);
        let due = started + Duration::from_secs_f64(n as f64 / rate);
        due.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    /// Continues at record number `n` without a burst to catch up (after a restore).
    pub fn resume_at(&mut self, n: u64) {
        self.started = self.rate.map(|rate| {
            let elapsed = Duration::from_secs_f64(n as f64 / rate);
            Instant::now().checked_sub(elapsed).unwrap_or_else(Instant::now)
        });
    }
}

