//! # Sources
//!
//! A source produces events and says where each came from (its offset), so that errors
//! can name the input and, with checkpoints, the position can be saved and restored.
//! The source task around it assigns watermarks and forwards records downstream.

mod file;
mod generator;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use file::FileSource;
pub use generator::GeneratorSource;

use crate::job::spec::SourceSpec;
use crate::stream::Event;

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
    DeadLettered { offset: i64 },
    /// Input at `offset` that is not a valid event; the job's `on_error` decides.
    Malformed { offset: i64, reason: String },
    /// Nothing yet; ask again after this long.
    Pending(Duration),
    /// The input has ended.
    End,
}

/// A producer of events.
pub trait Source: Send {
    /// A label for positions and errors, such as the file path.
    fn label(&self) -> Arc<str>;
    /// What offsets count (`line`, `seq`).
    fn unit(&self) -> &'static str;
    fn poll(&mut self) -> Result<SourcePoll, SourceError>;
    /// Where the next poll would read from, for checkpoints.
    fn position(&self) -> serde_json::Value;
    /// Continues from a position taken by [`Source::position`].
    fn restore(&mut self, position: &serde_json::Value) -> Result<(), SourceError>;
    /// The splits (partitions) the source reads, each with its own watermark.
    fn splits(&self) -> Vec<u32> {
        vec![0]
    }
    /// A checkpoint whose position was `position` completed (Kafka commits offsets).
    fn checkpoint_complete(&mut self, position: &serde_json::Value) {
        let _ = position;
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

/// Checks a configured rate.
fn check_rate(uid: &str, rate: Option<f64>) -> Result<(), SourceError> {
    if rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(SourceError { uid: uid.into(), message: "`rate` must be a positive number of events per second".into() });
    }
    Ok(())
}

/// Opens the source a job file describes; relative paths resolve against `base`.
pub fn open(spec: &SourceSpec, base: &std::path::Path) -> Result<Box<dyn Source>, SourceError> {
    match spec {
        SourceSpec::File { uid, path, key_field, timestamp_field, rate, .. } => {
            check_rate(uid, *rate)?;
            let path = if path.is_absolute() { path.clone() } else { base.join(path) };
            let source = FileSource::open(uid, &path, key_field.clone(), timestamp_field.clone())?;
            Ok(Box::new(source.with_rate(*rate)))
        }
        SourceSpec::Generator { uid, count, rate, keys, seed, start_ms, step_ms, .. } => {
            check_rate(uid, *rate)?;
            Ok(Box::new(GeneratorSource::new(uid, *count, *rate, *keys, *seed, *start_ms, *step_ms)?))
        }
    }
}
