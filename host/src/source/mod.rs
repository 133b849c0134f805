//! # Sources
//!
//! A source produces events and says where each came from (its offset), so that errors
//! can name the input and, with checkpoints, the position can be saved and restored.
//! The source task around it assigns watermarks and forwards records downstream.

pub mod avro;
mod file;
mod files;
mod generator;
pub mod kafka;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use file::{DEFAULT_MAX_RECORD_BYTES, FileSource};
pub use files::FilesSource;
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
    /// Input at `offset` that is not a valid event: the job's `on_error` decides, or
    /// the source's `dlq` output takes `record` (what was read, as an event).
    Malformed { offset: i64, split: u32, reason: String, record: Event },
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
        // One pass over the object without building it: only the two fields' values are
        // kept, every other value is checked and skipped (a `serde_json::Value` of the
        // whole record was most of a file source's time).
        let mut reader = serde_json::Deserializer::from_slice(value);
        let found = serde::de::DeserializeSeed::deserialize(TopLevel(self), &mut reader)
            .and_then(|found| reader.end().map(|()| found))
            .map_err(|e| if e.is_data() { "expected a JSON object".to_string() } else { format!("invalid JSON: {e}") })?;
        let key = match (&self.key_field, found.key) {
            (None, _) => None,
            (Some(_), Some(serde_json::Value::String(s))) => Some(s.into_bytes()),
            (Some(_), Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)))) => {
                Some(v.to_string().into_bytes())
            }
            (Some(field), Some(_)) => return Err(format!("key field `{field}` must be a string, number or bool")),
            (Some(field), None) => return Err(format!("missing key field `{field}`")),
        };
        let timestamp = match (&self.timestamp_field, found.timestamp) {
            (None, _) => None,
            (Some(field), Some(v)) => Some(v.as_i64().ok_or_else(|| {
                format!("timestamp field `{field}` must be an integer (epoch milliseconds)")
            })?),
            (Some(field), None) => return Err(format!("missing timestamp field `{field}`")),
        };
        Ok((key, timestamp))
    }
}

/// The values of the key and timestamp fields of one record (the last of each, as a
/// JSON object with a repeated name keeps the last).
#[derive(Default)]
struct FoundFields {
    key: Option<serde_json::Value>,
    timestamp: Option<serde_json::Value>,
}

/// Reads a record's top level, which must be an object, for [`JsonFields::extract`].
struct TopLevel<'f>(&'f JsonFields);

/// Which of the wanted fields a name is: (the key field, the timestamp field).
struct FieldName<'f>(&'f JsonFields);

impl<'de> serde::de::DeserializeSeed<'de> for TopLevel<'_> {
    type Value = FoundFields;

    fn deserialize<D: serde::Deserializer<'de>>(self, reader: D) -> Result<FoundFields, D::Error> {
        reader.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TopLevel<'_> {
    type Value = FoundFields;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<FoundFields, A::Error> {
        let mut found = FoundFields::default();
        while let Some((is_key, is_timestamp)) = map.next_key_seed(FieldName(self.0))? {
            if !(is_key || is_timestamp) {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            let value: serde_json::Value = map.next_value()?;
            if is_key && is_timestamp {
                found.key = Some(value.clone());
            } else if is_key {
                found.key = Some(value);
                continue;
            }
            found.timestamp = Some(value);
        }
        Ok(found)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for FieldName<'_> {
    type Value = (bool, bool);

    fn deserialize<D: serde::Deserializer<'de>>(self, reader: D) -> Result<(bool, bool), D::Error> {
        reader.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FieldName<'_> {
    type Value = (bool, bool);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<(bool, bool), E> {
        Ok((self.0.key_field.as_deref() == Some(name), self.0.timestamp_field.as_deref() == Some(name)))
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


#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    /// What `extract` did before it stopped building a `serde_json::Value` of the record.
    fn by_value(fields: &JsonFields, value: &[u8]) -> Result<(Option<Vec<u8>>, Option<i64>), ()> {
        let json: serde_json::Value = serde_json::from_slice(value).map_err(|_| ())?;
        let object = json.as_object().ok_or(())?;
        let key = match &fields.key_field {
            None => None,
            Some(field) => Some(match object.get(field) {
                Some(serde_json::Value::String(s)) => s.as_bytes().to_vec(),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => v.to_string().into_bytes(),
                _ => return Err(()),
            }),
        };
        let timestamp = match &fields.timestamp_field {
            None => None,
            Some(field) => Some(object.get(field).and_then(|v| v.as_i64()).ok_or(())?),
        };
        Ok((key, timestamp))
    }

    /// A JSON-ish record: objects with the wanted fields or not, of every type, escaped
    /// names, repeated names, nesting, and broken or non-object text.
    fn record(rng: &mut Rng) -> String {
        let values = [
            "\"u1\"", "\"caf\\u00e9\"", "17", "-3", "1.5", "1e3", "18446744073709551615", "true", "null",
            "[1,{\"k\":2}]", "{\"k\":\"x\"}", "\"\"",
        ];
        let names = ["\"k\"", "\"ts\"", "\"\\u006b\"", "\"other\"", "\"t\\\"s\""];
        match rng.below(8) {
            0 => ["5", "\"k\"", "[]", "{", "{\"k\":}", "{\"k\":1} x", "", "nul"][rng.below(8) as usize].to_string(),
            _ => {
                let fields: Vec<String> = (0..rng.below(5))
                    .map(|_| format!("{}:{}", names[rng.below(5) as usize], values[rng.below(12) as usize]))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }
        }
    }

    #[test]
    fn extracting_fields_agrees_with_parsing_the_whole_value() {
        let mut rng = Rng::new(7);
        let configs = [
            JsonFields { key_field: Some("k".into()), timestamp_field: Some("ts".into()) },
            JsonFields { key_field: Some("k".into()), timestamp_field: Some("k".into()) },
            JsonFields { key_field: None, timestamp_field: Some("t\"s".into()) },
            JsonFields::default(),
        ];
        for _ in 0..20_000 {
            let text = record(&mut rng);
            for fields in &configs {
                let expected = by_value(fields, text.as_bytes());
                let got = fields.extract(text.as_bytes());
                assert_eq!(got.as_ref().ok(), expected.as_ref().ok(), "{text} with {fields:?}: {got:?}");
            }
        }
    }

    #[test]
    fn extraction_errors_say_what_is_wrong() {
        let fields = JsonFields { key_field: Some("k".into()), timestamp_field: Some("ts".into()) };
        let error = |text: &str| fields.extract(text.as_bytes()).unwrap_err();
        assert!(error("{\"k\":").starts_with("invalid JSON"), "{}", error("{\"k\":"));
        assert_eq!(error("[1]"), "expected a JSON object");
        assert_eq!(error("{\"ts\":1}"), "missing key field `k`");
        assert_eq!(error("{\"k\":[1],\"ts\":1}"), "key field `k` must be a string, number or bool");
        assert_eq!(error("{\"k\":\"a\",\"ts\":1.5}"), "timestamp field `ts` must be an integer (epoch milliseconds)");
        assert_eq!(fields.extract(br#"{"k":"a","k":"b","ts":-1}"#).unwrap(), (Some(b"b".to_vec()), Some(-1)));
        // Deep nesting never recurses: skipped values are walked without recursion (and
        // accepted, being valid JSON), a wanted field's value stops at serde_json's limit.
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let skipped = format!("{{\"x\":{},\"k\":\"a\",\"ts\":1}}", nested(100_000));
        assert_eq!(fields.extract(skipped.as_bytes()).unwrap(), (Some(b"a".to_vec()), Some(1)));
        let refused = error(&format!("{{\"k\":{},\"ts\":1}}", nested(100_000)));
        assert!(refused.starts_with("invalid JSON: recursion limit exceeded"), "{refused}");
    }
}
