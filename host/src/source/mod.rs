//! # Sources
//!
//! A source produces events and says where each came from (its offset), so that errors
//! can name the input and, with checkpoints, the position can be saved and restored.
//! The source task around it assigns watermarks and forwards records downstream.

mod file;
mod generator;

use std::sync::Arc;
use std::time::Duration;

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
    /// An event, at `offset` in the source (line number, sequence number, ...).
    Record { event: Event, offset: i64 },
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
}

/// Opens the source a job file describes; relative paths resolve against `base`.
pub fn open(spec: &SourceSpec, base: &std::path::Path) -> Result<Box<dyn Source>, SourceError> {
    match spec {
        SourceSpec::File { uid, path, key_field, timestamp_field, .. } => {
            let path = if path.is_absolute() { path.clone() } else { base.join(path) };
            Ok(Box::new(FileSource::open(uid, &path, key_field.clone(), timestamp_field.clone())?))
        }
        SourceSpec::Generator { uid, count, rate, keys, seed, start_ms, step_ms, .. } => {
            Ok(Box::new(GeneratorSource::new(uid, *count, *rate, *keys, *seed, *start_ms, *step_ms)?))
        }
    }
}
