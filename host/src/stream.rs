//! # Stream elements
//!
//! What flows between tasks. Channels carry [`Message`]s in order; records and
//! watermarks travel together in [`Batch`]es (a batch keeps their relative order, so
//! event time behaves exactly as if each element travelled alone), while checkpoint
//! barriers and the end-of-data marker travel on their own.
//!
//! A batch is sent when it is full or when its producer has nothing more queued: weir
//! batches what is already there rather than waiting for a batch to fill, so batching
//! costs no latency at low rates.

use std::fmt;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use crate::watermark::Watermark;

/// One element of a stream, as the WIT `types.event` describes it; `plugin` converts
/// it to and from each contract version's generated type by moving its buffers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// Partitioning key; keyed edges hash it to a key group. `None` for unkeyed streams.
    pub key: Option<Vec<u8>>,
    /// The payload (JSON for weir's file source and sink; opaque to the host).
    pub value: Vec<u8>,
    /// Event time in milliseconds since the Unix epoch, if the element has one.
    pub timestamp: Option<i64>,
    /// Headers, preserved from source to sink.
    pub headers: Vec<Header>,
}

/// The output that rejected records go to: `[[edge]] from = "<uid>", output = "dlq"`
/// from a source, an operator or a sink.
pub const DEAD_LETTER_OUTPUT: &str = "dlq";
/// The most of a rejected record's value a dead letter keeps (the rest is cut, and
/// `weir.error.truncated` gives the original length).
pub const DEAD_LETTER_MAX_BYTES: usize = 1 << 20;

impl Event {
    /// This rejected record as a dead letter: its key, value (cut at
    /// [`DEAD_LETTER_MAX_BYTES`]), timestamp and headers, plus headers that say which
    /// node rejected it (`weir.error.origin`), where it was (`weir.error.position`),
    /// why (`weir.error`) and when (`weir.error.time`, ms since the epoch).
    pub fn into_dead_letter(mut self, origin: &str, position: &str, reason: &str) -> Event {
        if self.value.len() > DEAD_LETTER_MAX_BYTES {
            let length = self.value.len();
            self.value.truncate(DEAD_LETTER_MAX_BYTES);
            self.headers.push(Header { name: "weir.error.truncated".into(), value: length.to_string().into_bytes() });
        }
        for (name, value) in [
            ("weir.error", reason.to_string()),
            ("weir.error.origin", origin.to_string()),
            ("weir.error.position", position.to_string()),
            ("weir.error.time", crate::clock::now_ms().to_string()),
        ] {
            self.headers.push(Header { name: name.into(), value: value.into_bytes() });
        }
        self
    }

    /// Makes this event `key`, `value` and `timestamp`, with no headers, writing into
    /// the buffers it already has (a spare event keeps their capacity).
    pub fn refill(&mut self, key: Option<&[u8]>, value: &[u8], timestamp: Option<i64>) {
        match (key, &mut self.key) {
            (Some(key), Some(buffer)) => {
                buffer.clear();
                buffer.extend_from_slice(key);
            }
            (Some(key), none) => *none = Some(key.to_vec()),
            (None, buffer) => *buffer = None,
        }
        self.value.clear();
        self.value.extend_from_slice(value);
        self.timestamp = timestamp;
        self.headers.clear();
    }
}

/// Events whose buffers are kept for reuse: a consumer hands the events it is done
/// with back to their producer (through the channel they came on,
/// `task::channel::ChannelReceiver::recycle`), and the producer fills them instead of
/// allocating new ones. Records then cost no allocation, and no buffer is freed on
/// another thread than the one that made it.
///
/// Only small buffers are kept ([`Spares::MAX_KEPT_BYTES`] each), and at most
/// [`Spares::MAX_EVENTS`] events, so spares hold a few megabytes at most.
#[derive(Debug, Default)]
pub struct Spares {
    events: Vec<Event>,
}

impl Spares {
    /// Buffers above this capacity are freed rather than kept.
    pub const MAX_KEPT_BYTES: usize = 1024;
    /// The most events kept.
    pub const MAX_EVENTS: usize = 2048;

    /// An event to fill: a spare one (its contents are stale: overwrite every field,
    /// as [`Event::refill`] does), or a new one.
    pub fn take(&mut self) -> Event {
        self.events.pop().unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Gives up the spares beyond the first `keep` (to pass them on upstream).
    pub fn surplus(&mut self, keep: usize) -> Vec<Event> {
        self.events.split_off(keep.min(self.events.len()))
    }

    /// Keeps the events of `spent` whose buffers are worth keeping, up to the limit.
    pub fn keep(&mut self, spent: impl IntoIterator<Item = Event>) {
        for event in spent {
            if self.events.len() >= Self::MAX_EVENTS {
                break;
            }
            if Self::worth_keeping(&event) {
                self.events.push(event);
            }
        }
    }

    /// Whether `event`'s buffers are small enough to keep (large ones are freed where
    /// they are spent).
    pub fn worth_keeping(event: &Event) -> bool {
        event.value.capacity() <= Self::MAX_KEPT_BYTES
            && event.key.as_ref().is_none_or(|k| k.capacity() <= Self::MAX_KEPT_BYTES)
            && event.headers.is_empty()
    }
}

/// One header of an event: a name and opaque bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

/// An interned source label (`input.jsonl`, `kafka logins[3]`): copying a position
/// copies an index instead of touching a shared reference count on every record.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Label(u32);

fn labels() -> &'static RwLock<Vec<Arc<str>>> {
    static LABELS: OnceLock<RwLock<Vec<Arc<str>>>> = OnceLock::new();
    LABELS.get_or_init(Default::default)
}

impl Label {
    /// The label for `text`; the same text always gives the same label, so the set of
    /// labels stays as small as the set of distinct sources and splits.
    pub fn intern(text: &str) -> Label {
        if let Some(index) = labels().read().unwrap_or_else(|e| e.into_inner()).iter().position(|l| &**l == text) {
            return Label(index as u32);
        }
        let mut all = labels().write().unwrap_or_else(|e| e.into_inner());
        if let Some(index) = all.iter().position(|l| &**l == text) {
            return Label(index as u32);
        }
        all.push(text.into());
        Label(all.len() as u32 - 1)
    }

    /// The unit `at` (a point in time: timers, open and close), interned once.
    pub fn at() -> Label {
        static AT: OnceLock<Label> = OnceLock::new();
        *AT.get_or_init(|| Label::intern("at"))
    }

    /// The text of the label.
    pub fn text(self) -> Arc<str> {
        labels().read().unwrap_or_else(|e| e.into_inner())[self.0 as usize].clone()
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.text())
    }
}

/// Where a record entered the job: the source and its offset there (a file's line
/// number, a generator's sequence number). Events emitted while processing a record
/// inherit its position, so an error deep in the job names the input that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The source, such as `input.jsonl` or `generator `gen``.
    pub source: Label,
    /// What `offset` counts: `line`, `seq`, ... (interned as a label: with it, a record
    /// is 128 bytes, which the compiler moves inline rather than with a `memcpy` call).
    pub unit: Label,
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
    /// The key group of the event's key, set by the keyed edge that delivered it (so
    /// the key is hashed once per hop); meaningless after other edges.
    pub key_group: u16,
    /// When the source read it, on a sample of records (see [`LATENCY_SAMPLE`]): the
    /// sinks measure end-to-end latency on these, without a clock read per record.
    pub ingested: Option<Instant>,
}

/// One in this many records carries its ingestion time for latency measurement.
pub const LATENCY_SAMPLE: i64 = 64;

impl Record {
    /// What the record costs in memory, for byte-bounded batches and channels: its
    /// payload plus a fixed overhead for the structures around it.
    pub fn size(&self) -> usize {
        const OVERHEAD: usize = std::mem::size_of::<Record>();
        let event = &self.event;
        OVERHEAD
            + event.value.len()
            + event.key.as_ref().map_or(0, Vec::len)
            + event.headers.iter().map(|h| h.name.len() + h.value.len() + 48).sum::<usize>()
    }
}

/// An element of a batch: a record, or a watermark between records.
#[derive(Debug, Clone)]
pub enum Element {
    Record(Record),
    Watermark(Watermark),
}

/// Records and watermarks in channel order, with their size in bytes.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub elements: Vec<Element>,
    /// The sum of [`Record::size`] over the records.
    pub bytes: usize,
    /// How many of the elements are records.
    pub records: usize,
}

impl Batch {
    pub fn with_capacity(capacity: usize) -> Self {
        Batch { elements: Vec::with_capacity(capacity), bytes: 0, records: 0 }
    }

    pub fn push_record(&mut self, record: Record) {
        self.bytes += record.size();
        self.records += 1;
        self.elements.push(Element::Record(record));
    }

    /// Appends a watermark. An event-time watermark that directly follows another
    /// replaces it (nothing happened in between, so only the later one matters), and so
    /// does an idle marker following an idle marker; a change between the two kinds is
    /// kept, so the receiver still learns the time an input had when it went idle.
    pub fn push_watermark(&mut self, watermark: Watermark) {
        match (self.elements.last_mut(), watermark) {
            (Some(Element::Watermark(last @ Watermark::EventTime(_))), Watermark::EventTime(_))
            | (Some(Element::Watermark(last @ Watermark::Idle)), Watermark::Idle) => *last = watermark,
            _ => self.elements.push(Element::Watermark(watermark)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// Splits off what follows the first `records` records (`None` when there is no
    /// record after them), keeping the order of records and watermarks.
    pub fn split_after_records(&mut self, records: usize) -> Option<Batch> {
        let mut seen = 0;
        let at = self.elements.iter().position(|e| {
            if let Element::Record(_) = e {
                seen += 1;
            }
            seen > records
        })?;
        let rest = self.elements.split_off(at);
        let mut tail = Batch { elements: rest, bytes: 0, records: 0 };
        for element in &tail.elements {
            if let Element::Record(record) = element {
                tail.bytes += record.size();
                tail.records += 1;
            }
        }
        self.bytes = self.bytes.saturating_sub(tail.bytes);
        self.records -= tail.records;
        Some(tail)
    }
}

/// The marker a source injects and every task forwards after snapshotting.
#[derive(Debug, Clone)]
pub struct CheckpointBarrier {
    pub id: u64,
    pub kind: BarrierKind,
    /// From when on the barrier overtakes the data queued ahead of it (an unaligned
    /// checkpoint, which stores that data as channel state): `None` for an aligned
    /// barrier (always so for savepoints), the trigger time in `unaligned` mode, the
    /// trigger time plus `alignment_timeout_ms` for an aligned checkpoint that turns
    /// unaligned when alignment takes longer (Flink's aligned checkpoint timeout).
    pub unaligned_from: Option<Instant>,
}

impl CheckpointBarrier {
    /// An aligned barrier.
    pub fn aligned(id: u64, kind: BarrierKind) -> Self {
        CheckpointBarrier { id, kind, unaligned_from: None }
    }

    /// Whether the barrier overtakes queued data at `now`.
    pub fn is_unaligned_at(&self, now: Instant) -> bool {
        self.unaligned_from.is_some_and(|from| now >= from)
    }
}

/// What a barrier asks of the tasks.
#[derive(Debug, Clone)]
pub enum BarrierKind {
    /// A periodic checkpoint, in the backend's own format, under the checkpoint root.
    Checkpoint,
    /// A savepoint: portable state files under `dir`. With `stop`, the sources emit
    /// nothing after it (stop with savepoint).
    Savepoint { dir: Arc<PathBuf>, stop: bool },
    /// A savepoint under `dir`, after which the subtasks of `operator` swap their
    /// component for the one installed for this upgrade (`checkpoint::coordinator::Command::Install`,
    /// sent ahead of the barrier: a barrier is plain data), and the sources pause until
    /// the coordinator resumes them.
    Upgrade { dir: Arc<PathBuf>, operator: Arc<str> },
}

impl BarrierKind {
    pub fn is_checkpoint(&self) -> bool {
        matches!(self, BarrierKind::Checkpoint)
    }

    /// Where a savepoint's files go; `None` for checkpoints.
    pub fn savepoint_dir(&self) -> Option<&PathBuf> {
        match self {
            BarrierKind::Checkpoint => None,
            BarrierKind::Savepoint { dir, .. } | BarrierKind::Upgrade { dir, .. } => Some(dir),
        }
    }

    /// Whether sources hold still after this barrier until resumed (or stopped).
    pub fn pauses_sources(&self) -> bool {
        matches!(self, BarrierKind::Savepoint { stop: true, .. } | BarrierKind::Upgrade { .. })
    }
}

/// How an edge distributes records over the receiving subtasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Partitioning {
    /// Subtask `i` to subtask `i`; both sides must have the same parallelism.
    Forward,
    /// By key group of the event's key; the receiver gets keyed state and timers.
    Keyed,
    /// Round robin.
    Rebalance,
    /// Every record to every subtask (Flink's `broadcast()`): for low-volume streams
    /// such as rules or reference data, usually into an operator's second input.
    Broadcast,
}

/// One message on a channel between two tasks.
#[derive(Debug, Clone)]
pub enum Message {
    /// Records and watermarks, in order.
    Batch(Batch),
    /// Everything before this belongs to checkpoint `id`; everything after, to later ones.
    Barrier(CheckpointBarrier),
    /// The upstream subtask has ended normally; nothing follows on this channel.
    EndOfData,
}

impl Message {
    /// The bytes of records the message holds (what channels bound).
    pub fn bytes(&self) -> usize {
        match self {
            Message::Batch(batch) => batch.bytes,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records are moved several times on their way through a task (into a run, out
    /// of the logic, into a batch); up to 128 bytes the compiler moves them inline, and
    /// past it with a call to `memcpy`, which measured at a fifth of a Wasm
    /// pass-through's operator thread.
    #[test]
    fn a_record_fits_in_128_bytes() {
        assert!(std::mem::size_of::<Record>() <= 128, "{}", std::mem::size_of::<Record>());
        assert!(std::mem::size_of::<Element>() <= 128, "{}", std::mem::size_of::<Element>());
    }

    #[test]
    fn labels_are_interned_once_per_text() {
        let a = Label::intern("stream-test-a.jsonl");
        let b = Label::intern("stream-test-b.jsonl");
        assert_ne!(a, b);
        assert_eq!(Label::intern("stream-test-a.jsonl"), a);
        assert_eq!(a.to_string(), "stream-test-a.jsonl");
    }

    #[test]
    fn consecutive_watermarks_collapse_and_records_are_sized() {
        let record = Record {
            event: Event { key: Some(b"k".to_vec()), value: vec![0; 100], timestamp: None, headers: vec![] },
            position: Position { source: Label::intern("t"), unit: Label::intern("line"), offset: 1 },
            key_group: 0,
            ingested: None,
        };
        let mut batch = Batch::default();
        batch.push_watermark(Watermark::EventTime(1));
        batch.push_watermark(Watermark::EventTime(2));
        batch.push_record(record.clone());
        batch.push_watermark(Watermark::EventTime(3));
        batch.push_watermark(Watermark::Idle);
        batch.push_watermark(Watermark::Idle);
        assert_eq!(batch.elements.len(), 4);
        assert!(matches!(batch.elements[2], Element::Watermark(Watermark::EventTime(3))));
        assert!(matches!(batch.elements[0], Element::Watermark(Watermark::EventTime(2))));
        assert_eq!(batch.records, 1);
        assert!(batch.bytes >= 101);
        let mut two = batch.clone();
        two.push_record(record.clone());
        two.push_watermark(Watermark::EventTime(4));
        let tail = two.split_after_records(1).expect("a second record");
        assert_eq!((two.records, two.elements.len(), tail.records, tail.elements.len()), (1, 4, 1, 2));
        assert_eq!(two.bytes + tail.bytes, 2 * record.size());
        assert!(two.split_after_records(1).is_none());
    }
}
