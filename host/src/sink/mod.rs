//! # Sinks
//!
//! Where results leave the job: a file or standard output as JSON lines, part files
//! in a directory or an object store (JSON lines or Parquet), Kafka, a PostgreSQL
//! table, or nowhere (benchmarks). Each sink runs in its own task and receives every upstream
//! subtask.

mod file;
pub mod parts;
pub mod kafka;
pub mod postgres;

pub use file::TransactionalFileSink;
pub use kafka::KafkaSink;
pub use parts::PartFileSink;
#[cfg(feature = "postgres")]
pub use postgres::PostgresSink;

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use serde_json::{Map, Value};

use serde::{Deserialize, Serialize};
use crate::stream::Event;

/// A sink that cannot write.
#[derive(Debug, thiserror::Error)]
#[error("sink `{uid}`: {message}")]
pub struct SinkError {
    pub uid: String,
    pub message: String,
}

/// A consumer of events.
pub trait Sink: Send {
    fn write(&mut self, event: &Event) -> Result<(), SinkError>;
    /// Flushes everything written; called when the job stops.
    fn flush(&mut self) -> Result<(), SinkError>;
    /// Called every few hundred milliseconds while records flow, and when they pause,
    /// so that buffered output does not wait long.
    fn flush_periodically(&mut self) -> Result<(), SinkError> {
        self.flush()
    }
    /// Phase one of a checkpoint: everything written so far belongs to checkpoint
    /// `id`. Returns the state the checkpoint keeps for [`open`] to restore. A sink
    /// whose pre-committed transaction is lost unless this run commits it (Kafka: a
    /// restart cannot resume it) sets
    /// [`crate::checkpoint::storage::REQUIRES_COMMIT_RECORD`] to `true` in it: its task
    /// then records each commit beside the checkpoint, and recovery only restores
    /// checkpoints whose commits were recorded.
    fn pre_commit(&mut self, id: u64) -> Result<serde_json::Value, SinkError> {
        let _ = id;
        self.flush()?;
        Ok(serde_json::Value::Null)
    }
    /// Phase two: checkpoint `id` is complete.
    fn commit(&mut self, id: u64) -> Result<(), SinkError> {
        let _ = id;
        Ok(())
    }
    /// The input ended: make everything written visible.
    fn finish(&mut self) -> Result<(), SinkError> {
        self.flush()
    }
    /// The job failed: give up what no checkpoint covers (abort a transaction).
    fn abort(&mut self) {
        let _ = self.flush();
    }
    /// The job routes this sink's `dlq` output: from now on, records its target
    /// refuses are kept for [`Sink::take_rejected`] instead of failing the job.
    /// Returns whether the sink can do that.
    fn reject_to_dead_letters(&mut self) -> bool {
        false
    }
    /// The records refused since the last call, each with why.
    fn take_rejected(&mut self) -> Vec<(Event, String)> {
        Vec::new()
    }
}

/// How a sink takes part in checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery<'a> {
    /// No checkpoints: write straight through; `append` to the existing output when the
    /// job resumes from a savepoint (replaced otherwise).
    Direct { append: bool },
    /// Checkpoints without a restore: a fresh, transactional output.
    Fresh,
    /// Restoring from a checkpoint's sink state.
    Restore(&'a serde_json::Value),
    /// Checkpoints, resuming from a savepoint taken without them (the sink wrote
    /// straight through): transactional, after the output already there.
    Continue,
}

/// Writes one line per event to a file or stdout.
pub struct LineSink {
    uid: String,
    target: String,
    out: Box<dyn Write + Send>,
    format: SinkFormat,
    line: Vec<u8>,
}

impl LineSink {
    pub fn file(uid: &str, path: PathBuf, format: SinkFormat, append: bool) -> Result<Self, SinkError> {
        let error = |message: String| SinkError { uid: uid.into(), message };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| error(format!("cannot create {}: {e}", dir.display())))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&path)
            .map_err(|e| error(format!("cannot create {}: {e}", path.display())))?;
        Ok(LineSink {
            uid: uid.into(),
            target: path.display().to_string(),
            out: Box::new(BufWriter::with_capacity(1 << 16, file)),
            format,
            line: Vec::new(),
        })
    }

    pub fn stdout(uid: &str, format: SinkFormat) -> Self {
        LineSink {
            uid: uid.into(),
            target: "stdout".into(),
            out: Box::new(std::io::stdout()),
            format,
            line: Vec::new(),
        }
    }

    fn error(&self, message: String) -> SinkError {
        SinkError { uid: self.uid.clone(), message }
    }
}

impl Sink for LineSink {
    fn write(&mut self, event: &Event) -> Result<(), SinkError> {
        self.line.clear();
        encode_line(self.format, event, &mut self.line).map_err(|m| self.error(m))?;
        self.out
            .write_all(&self.line)
            .map_err(|e| SinkError { uid: self.uid.clone(), message: format!("writing {}: {e}", self.target) })
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out
            .flush()
            .map_err(|e| SinkError { uid: self.uid.clone(), message: format!("flushing {}: {e}", self.target) })
    }
}

/// Drops every event.
pub struct Discard;

impl Sink for Discard {
    fn write(&mut self, _: &Event) -> Result<(), SinkError> {
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Encodes `event` as one line (with its newline) in `format`.
pub fn encode_line(format: SinkFormat, event: &Event, out: &mut Vec<u8>) -> Result<(), String> {
    match format {
        SinkFormat::Value => {
            if event.value.contains(&b'\n') {
                return Err("an event value spans several lines; use format = \"envelope\"".into());
            }
            out.extend_from_slice(&event.value);
        }
        SinkFormat::Envelope => {
            let text = |bytes: &[u8]| Value::String(String::from_utf8_lossy(bytes).into_owned());
            let mut object = Map::new();
            object.insert("key".into(), event.key.as_deref().map_or(Value::Null, text));
            object.insert("timestamp".into(), event.timestamp.map_or(Value::Null, Value::from));
            let value = serde_json::from_slice(&event.value).unwrap_or_else(|_| text(&event.value));
            object.insert("value".into(), value);
            if !event.headers.is_empty() {
                let headers = event.headers.iter().map(|h| (h.name.clone(), text(&h.value))).collect();
                object.insert("headers".into(), Value::Object(headers));
            }
            serde_json::to_writer(&mut *out, &object).map_err(|e| e.to_string())?;
        }
    }
    out.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(value: &str) -> Event {
        Event { key: Some(b"k".to_vec()), value: value.into(), timestamp: Some(5), headers: vec![] }
    }

    #[test]
    fn value_and_envelope_lines() {
        let mut out = Vec::new();
        encode_line(SinkFormat::Value, &event(r#"{"a":1}"#), &mut out).unwrap();
        encode_line(SinkFormat::Envelope, &event(r#"{"a":1}"#), &mut out).unwrap();
        encode_line(SinkFormat::Envelope, &event("plain"), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"a\":1}\n{\"key\":\"k\",\"timestamp\":5,\"value\":{\"a\":1}}\n\
             {\"key\":\"k\",\"timestamp\":5,\"value\":\"plain\"}\n"
        );
        assert!(encode_line(SinkFormat::Value, &event("two\nlines"), &mut Vec::new()).is_err());
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkFormat {
    /// The event value, one per line (it must be one line of UTF-8).
    #[default]
    Value,
    /// A JSON object per line with `key`, `timestamp`, `value` and `headers`.
    Envelope,
}

