//! # Stream elements
//!
//! What flows between tasks: records (an [`Event`] plus where it entered the job),
//! watermarks and the end-of-data marker. Every channel carries [`Message`]s in order.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

pub use crate::plugin::bindings::weir::operator::types::{Event, Header};
use crate::checkpoint::CheckpointBarrier;
use crate::watermark::Watermark;

/// Where a record entered the job: the source and its offset there (a file's line
/// number, a generator's sequence number). Events emitted while processing a record
/// inherit its position, so an error deep in the job names the input that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// A label for the source, such as `input.jsonl` or `generator `gen``.
    pub source: Arc<str>,
    /// What `offset` counts: `line`, `seq`, ...
    pub unit: &'static str,
    pub offset: i64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.source, self.unit, self.offset)
    }
}

/// An event travelling through the job.
#[derive(Debug, Clone)]
pub struct Record {
    pub event: Event,
    pub position: Position,
    /// When the source read it, for end-to-end latency measurements.
    pub ingested: Instant,
}

/// One message on a channel between two tasks.
#[derive(Debug, Clone)]
pub enum Message {
    Record(Record),
    Watermark(Watermark),
    /// Everything before this belongs to checkpoint `id`; everything after, to later ones.
    Barrier(CheckpointBarrier),
    /// The upstream subtask has ended normally; nothing follows on this channel.
    EndOfData,
}
