//! Routing a task's output to the subtasks downstream, in batches.
//!
//! Every (edge, downstream subtask) pair has a batch being filled. A batch is sent when
//! it holds [`Batching::max_records`] records or [`Batching::max_bytes`] bytes, when its
//! task has nothing more queued to process ([`Router::flush`]), when its oldest record
//! has waited [`Batching::timeout`] ([`Router::flush_if_due`]), and before any barrier or
//! end-of-data marker, so a batch never waits to fill up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::channel::ChannelSender;
use crate::metrics::TaskMetrics;
use crate::stream::Partitioning;
use crate::keygroup::{assign_key_group, subtask_for_key_group};
use crate::stream::{Batch, CheckpointBarrier, Message, Record, Spares};
use crate::watermark::Watermark;

/// When output batches are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Send a batch once it holds this many records.
    pub max_records: usize,
    /// Send a batch once its records hold this many bytes.
    pub max_bytes: usize,
    /// Longest a record waits in a partly filled batch while its task stays busy.
    pub timeout: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        Batching { max_records: 512, max_bytes: 64 << 10, timeout: Duration::from_millis(1) }
    }
}

/// Why a record could not be routed.
#[derive(Debug)]
pub enum RouteError {
    /// A downstream task is gone: the job is stopping.
    Disconnected,
    /// A keyed edge received an event without a key.
    MissingKey { to: Arc<str> },
}

/// One edge leaving one upstream subtask.
pub struct EdgeOutput {
    pub to: Arc<str>,
    pub partitioning: Partitioning,
    /// One sender per downstream subtask (just the one for a forward edge).
    pub senders: Vec<ChannelSender>,
    /// The batch being filled for each downstream subtask.
    pending: Vec<Batch>,
    pub max_parallelism: u32,
    next: usize,
}

impl EdgeOutput {
    pub fn new(
        to: Arc<str>,
        partitioning: Partitioning,
        senders: Vec<ChannelSender>,
        max_parallelism: u32,
        first: usize,
    ) -> Self {
        let pending = senders.iter().map(|_| Batch::default()).collect();
        EdgeOutput { to, partitioning, senders, pending, max_parallelism, next: first }
    }

    /// The downstream subtask for `record`, and its key group on a keyed edge.
    fn target(&mut self, record: &Record) -> Result<(usize, u16), RouteError> {
        Ok(match self.partitioning {
            Partitioning::Forward => (0, record.key_group),
            Partitioning::Keyed => {
                let key = record
                    .event
                    .key
                    .as_deref()
                    .ok_or_else(|| RouteError::MissingKey { to: self.to.clone() })?;
                let kg = assign_key_group(key, self.max_parallelism);
                let target = subtask_for_key_group(kg, self.max_parallelism, self.senders.len() as u32);
                (target as usize, kg)
            }
            Partitioning::Rebalance => {
                self.next = (self.next + 1) % self.senders.len();
                (self.next, record.key_group)
            }
            Partitioning::Broadcast => unreachable!("broadcast edges are routed to every subtask in Router::send"),
        })
    }

    fn flush_one(&mut self, target: usize, capacity: usize, metrics: &TaskMetrics) -> Result<(), RouteError> {
        let batch = std::mem::replace(&mut self.pending[target], Batch::with_capacity(capacity));
        let waited = self.senders[target].send_timed(Message::Batch(batch)).map_err(|_| RouteError::Disconnected)?;
        if !waited.is_zero() {
            metrics.add_backpressured(waited);
        }
        Ok(())
    }

    fn flush(&mut self, capacity: usize, metrics: &TaskMetrics) -> Result<(), RouteError> {
        for target in 0..self.pending.len() {
            if !self.pending[target].is_empty() {
                self.flush_one(target, capacity, metrics)?;
            }
        }
        Ok(())
    }
}

/// The outputs of a task: port 0 is the main output, ports 1.. the side outputs.
pub struct Router {
    ports: Vec<Vec<EdgeOutput>>,
    batching: Batching,
    /// When the oldest record still waiting in a batch was added.
    oldest: Option<Instant>,
    /// The task's counters: time waiting for room downstream counts as back-pressure.
    metrics: Arc<TaskMetrics>,
}

impl Router {
    pub fn new(ports: Vec<Vec<EdgeOutput>>, batching: Batching) -> Self {
        Router { ports, batching, oldest: None, metrics: Arc::default() }
    }

    /// Counts the time this router waits for room downstream in `metrics`.
    pub fn measure(&mut self, metrics: Arc<TaskMetrics>) {
        self.metrics = metrics;
    }

    /// Tops `spares` up to about `want` events with what the consumers downstream
    /// handed back ([`super::channel::ChannelReceiver::recycle`]).
    pub fn collect_spares(&mut self, spares: &mut Spares, want: usize) {
        for edge in self.ports.iter().flatten() {
            for sender in &edge.senders {
                if spares.len() >= want {
                    return;
                }
                if let Some(chunk) = sender.take_recycled() {
                    spares.keep(chunk);
                }
            }
        }
    }

    /// Whether anything consumes `port`.
    pub fn is_routed(&self, port: usize) -> bool {
        self.ports.get(port).is_some_and(|edges| !edges.is_empty())
    }

    /// Adds `record` to the batches of every edge of `port`, sending the ones that
    /// filled up. Returns `false` when nothing consumes the port (the record is dropped).
    pub fn send(&mut self, port: usize, record: Record) -> Result<bool, RouteError> {
        let Some(edges) = self.ports.get_mut(port).filter(|e| !e.is_empty()) else {
            return Ok(false);
        };
        let last = edges.len() - 1;
        let mut record = Some(record);
        let (max_records, max_bytes) = (self.batching.max_records, self.batching.max_bytes);
        for (i, edge) in edges.iter_mut().enumerate() {
            if edge.partitioning == Partitioning::Broadcast {
                // A copy to every subtask; the last one of the last edge takes the record.
                let targets = edge.pending.len();
                for target in 0..targets {
                    let copy = if i == last && target + 1 == targets {
                        record.take().expect("present")
                    } else {
                        record.clone().expect("present")
                    };
                    edge.pending[target].push_record(copy);
                    let batch = &edge.pending[target];
                    if batch.records >= max_records || batch.bytes >= max_bytes {
                        edge.flush_one(target, max_records, &self.metrics)?;
                    }
                }
                continue;
            }
            let (target, key_group) = edge.target(record.as_ref().expect("present"))?;
            let mut copy = if i == last { record.take().expect("present") } else { record.clone().expect("present") };
            copy.key_group = key_group;
            let batch = &mut edge.pending[target];
            batch.push_record(copy);
            if batch.records >= max_records || batch.bytes >= max_bytes {
                edge.flush_one(target, max_records, &self.metrics)?;
            }
        }
        if self.oldest.is_none() {
            self.oldest = Some(Instant::now());
        }
        Ok(true)
    }

    /// Adds a watermark to every downstream batch, after the records before it.
    pub fn watermark(&mut self, watermark: Watermark) {
        for edge in self.ports.iter_mut().flatten() {
            for batch in &mut edge.pending {
                batch.push_watermark(watermark);
            }
        }
    }

    /// Sends every partly filled batch (the task has nothing more queued).
    pub fn flush(&mut self) -> Result<(), RouteError> {
        self.oldest = None;
        // A partly filled batch means a lull: the next one starts small.
        let capacity = (self.batching.max_records / 8).max(1);
        for edge in self.ports.iter_mut().flatten() {
            edge.flush(capacity, &self.metrics)?;
        }
        Ok(())
    }

    /// Sends the partly filled batches when the oldest record in them has waited the
    /// batch timeout (a task that stays busy for long still lets its output go).
    pub fn flush_if_due(&mut self) -> Result<(), RouteError> {
        match self.oldest {
            Some(oldest) if oldest.elapsed() >= self.batching.timeout => self.flush(),
            _ => Ok(()),
        }
    }

    /// Sends a checkpoint barrier to every downstream subtask. An aligned one goes
    /// after everything routed before it. An unaligned one overtakes: it goes on each
    /// channel's priority lane, saying how many messages it follows (those sent, plus
    /// the partly filled batch sent right after it), so the receiver can store them as
    /// channel state. An aligned barrier with an alignment timeout goes both ways: on
    /// the data lane, and announced on the priority lane with its place there, so that
    /// a receiver whose alignment times out knows what to record. Neither waits for
    /// back-pressure.
    pub fn barrier(&mut self, barrier: &CheckpointBarrier) -> Result<(), RouteError> {
        if barrier.unaligned_from.is_none() {
            return self.broadcast(&Message::Barrier(barrier.clone()));
        }
        let unaligned = barrier.is_unaligned_at(Instant::now());
        for edge in self.ports.iter_mut().flatten() {
            for target in 0..edge.senders.len() {
                let partial = !edge.pending[target].is_empty();
                let sender = &edge.senders[target];
                sender.overtake(barrier.clone(), sender.sent() + u64::from(partial)).map_err(|()| RouteError::Disconnected)?;
                // The partly filled batch goes at once, beyond the channel's budget if
                // need be, so the receiver need not wait for back-pressure to complete
                // its in-flight data; an aligned barrier follows it on the data lane (a
                // barrier takes no room).
                if partial {
                    let batch = std::mem::take(&mut edge.pending[target]);
                    sender.send_overdraft(Message::Batch(batch)).map_err(|_| RouteError::Disconnected)?;
                }
                if !unaligned {
                    sender.send(Message::Barrier(barrier.clone())).map_err(|_| RouteError::Disconnected)?;
                }
            }
        }
        self.oldest = None;
        Ok(())
    }

    /// Whether some downstream channel is full: sending a full batch to it now would
    /// wait.
    pub fn is_backpressured(&self) -> bool {
        let bytes = self.batching.max_bytes;
        self.ports.iter().flatten().flat_map(|e| e.senders.iter()).any(|s| s.is_full(bytes))
    }

    /// Waits up to `timeout` for room in the full downstream channels (the time counts
    /// as back-pressure); whether one is still full.
    pub fn wait_for_room(&self, timeout: Duration) -> bool {
        let started = Instant::now();
        let bytes = self.batching.max_bytes;
        let full = self
            .ports
            .iter()
            .flatten()
            .flat_map(|e| e.senders.iter())
            .find(|s| s.is_full(bytes))
            .is_some_and(|s| s.wait_for_room(bytes, timeout) || self.is_backpressured());
        self.metrics.add_backpressured(started.elapsed());
        full
    }

    /// Sends a barrier or end-of-data marker to every downstream subtask, after
    /// everything routed before it.
    pub fn broadcast(&mut self, message: &Message) -> Result<(), RouteError> {
        self.flush()?;
        for sender in self.ports.iter().flatten().flat_map(|e| e.senders.iter()) {
            let waited = sender.send_timed(message.clone()).map_err(|_| RouteError::Disconnected)?;
            self.metrics.add_backpressured(waited);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{BarrierKind, Element, Event, Label, Position};
    use crate::task::channel::{ChannelReceiver, channel};

    const MAX_PARALLELISM: u32 = 128;

    fn record(key: Option<&str>, offset: i64) -> Record {
        Record {
            event: Event { key: key.map(|k| k.as_bytes().to_vec()), value: offset.to_string().into_bytes(), timestamp: None, headers: vec![] },
            position: Position { source: Label::intern("router-test"), unit: Label::intern("seq"), offset },
            key_group: 0,
            ingested: None,
        }
    }

    /// An edge to `n` subtasks and the receivers at its other end.
    fn edge(partitioning: Partitioning, n: usize) -> (EdgeOutput, Vec<ChannelReceiver>) {
        let (senders, receivers) = (0..n).map(|_| channel(1000, 64 << 20)).unzip();
        (EdgeOutput::new("down".into(), partitioning, senders, MAX_PARALLELISM, 0), receivers)
    }

    /// Everything a receiver holds now: records as (value, key group), watermarks as
    /// `wm:<t>`, barriers as `barrier:<id>`, and how many batches carried them.
    fn drain(receiver: &mut ChannelReceiver) -> (Vec<String>, usize) {
        let (mut seen, mut batches) = (Vec::new(), 0);
        while let Ok(message) = receiver.try_recv() {
            match message {
                Message::Batch(batch) => {
                    batches += 1;
                    for element in batch.elements {
                        seen.push(match element {
                            Element::Record(r) => format!("{}@{}", String::from_utf8_lossy(&r.event.value), r.key_group),
                            Element::Watermark(Watermark::EventTime(t)) => format!("wm:{t}"),
                            Element::Watermark(other) => format!("{other:?}"),
                        });
                    }
                }
                Message::Barrier(b) => seen.push(format!("barrier:{}", b.id)),
                Message::EndOfData => seen.push("end".into()),
            }
        }
        (seen, batches)
    }

    #[test]
    fn a_keyed_edge_sends_each_key_to_the_subtask_of_its_key_group_in_order() {
        let (edge, mut receivers) = edge(Partitioning::Keyed, 3);
        let mut router = Router::new(vec![vec![edge]], Batching::default());
        let keys = ["a", "b", "c", "d", "e", "f", "a", "b"];
        for (offset, key) in keys.iter().enumerate() {
            assert!(router.send(0, record(Some(key), offset as i64)).unwrap());
        }
        router.watermark(Watermark::EventTime(5));
        router.flush().unwrap();
        let mut expected = vec![Vec::new(); 3];
        for (offset, key) in keys.iter().enumerate() {
            let kg = assign_key_group(key.as_bytes(), MAX_PARALLELISM);
            expected[subtask_for_key_group(kg, MAX_PARALLELISM, 3) as usize].push(format!("{offset}@{kg}"));
        }
        for (subtask, receiver) in receivers.iter_mut().enumerate() {
            let mut want = expected[subtask].clone();
            // Every subtask gets the watermark, after the records before it.
            want.push("wm:5".into());
            assert_eq!(drain(receiver), (want, 1), "subtask {subtask}");
        }
    }

    #[test]
    fn a_batch_goes_when_full_and_the_rest_when_flushed() {
        let (edge, mut receivers) = edge(Partitioning::Forward, 1);
        let batching = Batching { max_records: 3, ..Batching::default() };
        let mut router = Router::new(vec![vec![edge]], batching);
        for offset in 0..7 {
            router.send(0, record(None, offset)).unwrap();
        }
        // Two full batches went without a flush; the seventh record waits for one.
        let (seen, batches) = drain(&mut receivers[0]);
        assert_eq!((seen.len(), batches), (6, 2));
        router.flush().unwrap();
        assert_eq!(drain(&mut receivers[0]), (vec!["6@0".to_string()], 1));
        // A barrier goes after everything routed before it.
        router.send(0, record(None, 7)).unwrap();
        router.barrier(&CheckpointBarrier::aligned(9, BarrierKind::Checkpoint)).unwrap();
        assert_eq!(drain(&mut receivers[0]).0, ["7@0", "barrier:9"]);
    }

    #[test]
    fn rebalance_deals_round_robin_and_broadcast_copies_to_every_subtask() {
        let (rebalance, mut dealt) = edge(Partitioning::Rebalance, 2);
        let (broadcast, mut copied) = edge(Partitioning::Broadcast, 3);
        let mut router = Router::new(vec![vec![rebalance, broadcast]], Batching::default());
        for offset in 0..4 {
            router.send(0, record(None, offset)).unwrap();
        }
        router.flush().unwrap();
        assert_eq!(drain(&mut dealt[0]).0, ["1@0", "3@0"]);
        assert_eq!(drain(&mut dealt[1]).0, ["0@0", "2@0"]);
        for receiver in &mut copied {
            assert_eq!(drain(receiver).0, ["0@0", "1@0", "2@0", "3@0"]);
        }
    }

    #[test]
    fn a_keyless_record_on_a_keyed_edge_and_an_unrouted_port_are_reported() {
        let (edge, _receivers) = edge(Partitioning::Keyed, 2);
        let mut router = Router::new(vec![vec![edge], vec![]], Batching::default());
        assert!(matches!(router.send(0, record(None, 0)), Err(RouteError::MissingKey { to }) if &*to == "down"));
        assert!(!router.is_routed(1));
        assert!(!router.send(1, record(Some("a"), 1)).unwrap(), "a side output nobody consumes drops the record");
        assert!(!router.send(5, record(Some("a"), 2)).unwrap());
    }
}
