//! # Channels between tasks
//!
//! A channel is bounded twice: in batches and in the bytes of the records they hold. A
//! sender waits while either is used up, so a stream of 20 MB events holds at most about
//! one budget plus one batch in the channel, whatever the message count. A batch counts
//! until the receiving task takes delivery of it ([`ChannelReceiver::delivered`]), not
//! when it leaves the queue: batches a task has taken out ahead of processing them (see
//! `inputs`) still hold their upstream back.
//!
//! A batch larger than the whole budget is still let through when the channel is
//! empty, so an oversized record slows the job down rather than blocking it forever.
//!
//! Beside the data lane, a channel has a priority lane for barriers of unaligned
//! checkpoints ([`Overtaking`]): such a barrier overtakes the messages queued in the
//! data lane, and says how many messages sent before it it overtook, so that the
//! receiver knows which data belongs before the checkpoint. Each channel has one
//! sender (one upstream subtask), so counting the messages sent orders them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendError, Sender, TryRecvError, TrySendError};

use crate::stream::{CheckpointBarrier, Element, Event, Message, Spares};

/// A barrier sent on the priority lane: it follows the first `after` messages sent on
/// the data lane, which may still be queued.
#[derive(Debug, Clone)]
pub struct Overtaking {
    pub barrier: CheckpointBarrier,
    pub after: u64,
}

/// The batches and bytes a channel holds, shared by its two ends.
#[derive(Debug)]
struct Budget {
    /// Most bytes of records.
    limit: usize,
    /// Most batches.
    capacity: usize,
    used: Mutex<Used>,
    drained: Condvar,
    /// The receiver is gone: senders must not wait for it.
    closed: AtomicBool,
    /// Messages sent on the data lane so far.
    sent: AtomicU64,
}

#[derive(Debug, Default)]
struct Used {
    bytes: usize,
    batches: usize,
}

impl Budget {
    /// Waits until a batch of `bytes` more fits (bytes always fit into an empty channel;
    /// an `overdraft` does not wait), then takes its room. How long it waited (zero
    /// without a clock read when it fit at once).
    fn acquire(&self, bytes: usize, overdraft: bool) -> Result<Duration, ()> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let mut waiting: Option<Instant> = None;
        while !overdraft && self.is_full(&used, bytes) {
            if self.closed.load(Ordering::Relaxed) {
                return Err(());
            }
            waiting.get_or_insert_with(Instant::now);
            used = self.drained.wait_timeout(used, Duration::from_millis(50)).unwrap_or_else(|e| e.into_inner()).0;
        }
        used.bytes += bytes;
        used.batches += 1;
        Ok(waiting.map(|w| w.elapsed()).unwrap_or_default())
    }

    fn is_full(&self, used: &Used, bytes: usize) -> bool {
        used.batches >= self.capacity || (used.bytes > 0 && used.bytes + bytes > self.limit)
    }

    /// Whether a batch of `bytes` would have to wait; with `wait`, waits up to that long
    /// for room first.
    fn full(&self, bytes: usize, wait: Option<Duration>) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(wait) = wait.filter(|_| self.is_full(&used, bytes)) {
            used = self.drained.wait_timeout(used, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
        self.is_full(&used, bytes) && !self.closed.load(Ordering::Relaxed)
    }

    fn release(&self, bytes: usize) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.bytes = used.bytes.saturating_sub(bytes);
        used.batches = used.batches.saturating_sub(1);
        self.drained.notify_all();
    }
}

/// Events the receiver is done with, on their way back to the sender to be filled
/// again (see [`crate::stream::Spares`]): a few batches' worth, in chunks.
#[derive(Debug, Default)]
struct Recycled {
    chunks: Mutex<Vec<Vec<Event>>>,
}

impl Recycled {
    /// The most chunks (about batches) held; beyond that, spent events are freed.
    const MAX_CHUNKS: usize = 4;
}

/// The sending end of a channel.
#[derive(Debug, Clone)]
pub struct ChannelSender {
    tx: Sender<Message>,
    priority: Sender<Overtaking>,
    budget: Arc<Budget>,
    recycled: Arc<Recycled>,
}

/// The receiving end of a channel.
#[derive(Debug)]
pub struct ChannelReceiver {
    rx: Receiver<Message>,
    priority: Receiver<Overtaking>,
    budget: Arc<Budget>,
    recycled: Arc<Recycled>,
    /// Messages taken from the data lane so far.
    taken: u64,
    /// Names the channel in checkpoints (`upstream#subtask`, with the output and input
    /// it connects when not the main ones).
    name: Arc<str>,
}

/// A channel holding at most `capacity` batches and about `max_bytes` bytes of records.
pub fn channel(capacity: usize, max_bytes: usize) -> (ChannelSender, ChannelReceiver) {
    // The queue also has room for the few messages that are not batches (barriers,
    // the end-of-data marker); the budget bounds the batches.
    let (tx, rx) = crossbeam_channel::bounded(capacity + 4);
    let (priority_tx, priority) = crossbeam_channel::unbounded();
    let budget = Arc::new(Budget {
        limit: max_bytes,
        capacity,
        used: Mutex::new(Used::default()),
        drained: Condvar::new(),
        closed: AtomicBool::new(false),
        sent: AtomicU64::new(0),
    });
    let recycled = Arc::new(Recycled::default());
    (
        ChannelSender { tx, priority: priority_tx, budget: budget.clone(), recycled: recycled.clone() },
        ChannelReceiver { rx, priority, budget, recycled, taken: 0, name: "".into() },
    )
}

impl ChannelSender {
    /// Sends `message`, waiting while the channel is full in messages or in bytes.
    /// A chunk of events the receiver is done with, if it handed any back.
    pub fn take_recycled(&self) -> Option<Vec<Event>> {
        self.recycled.chunks.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    pub fn send(&self, message: Message) -> Result<(), SendError<Message>> {
        self.send_timed(message).map(|_| ())
    }

    /// Sends `message` as [`ChannelSender::send`] does, and answers how long it waited
    /// for room: the time the sender was back-pressured (zero, without reading the
    /// clock, when there was room at once).
    pub fn send_timed(&self, message: Message) -> Result<Duration, SendError<Message>> {
        self.enqueue(message, false)
    }

    /// Takes room for `message` if it is a batch (at once with `overdraft`, else once
    /// there is room), queues it and counts it sent; how long it waited.
    fn enqueue(&self, message: Message, overdraft: bool) -> Result<Duration, SendError<Message>> {
        let batch = matches!(message, Message::Batch(_));
        let bytes = message.bytes();
        let mut waited = Duration::ZERO;
        if batch {
            match self.budget.acquire(bytes, overdraft) {
                Ok(w) => waited = w,
                Err(()) => return Err(SendError(message)),
            }
        }
        let give_back = || {
            if batch {
                self.budget.release(bytes);
            }
        };
        let waited = match self.tx.try_send(message) {
            Ok(()) => waited,
            Err(TrySendError::Disconnected(message)) => {
                give_back();
                return Err(SendError(message));
            }
            Err(TrySendError::Full(message)) => {
                let start = Instant::now();
                self.tx.send(message).inspect_err(|_| give_back())?;
                waited + start.elapsed()
            }
        };
        self.budget.sent.fetch_add(1, Ordering::Relaxed);
        Ok(waited)
    }

    /// Whether the channel is full: a batch of `bytes` sent now would wait for room.
    pub fn is_full(&self, bytes: usize) -> bool {
        self.budget.full(bytes, None)
    }

    /// Waits up to `timeout` for room for a batch of `bytes`; whether there is still
    /// none.
    pub fn wait_for_room(&self, bytes: usize, timeout: Duration) -> bool {
        self.budget.full(bytes, Some(timeout))
    }

    /// Sends a batch without waiting for room: the channel may hold one batch more than
    /// its budget (Flink's overdraft buffers). For the partly filled batch an unaligned
    /// barrier overtook, which the receiver must get without waiting for back-pressure.
    pub fn send_overdraft(&self, message: Message) -> Result<(), SendError<Message>> {
        self.enqueue(message, true).map(|_| ())
    }

    /// How many messages were sent on the data lane so far.
    pub fn sent(&self) -> u64 {
        self.budget.sent.load(Ordering::Relaxed)
    }

    /// Sends `barrier` on the priority lane, ahead of what is queued: it belongs after
    /// the first `after` messages of the data lane (those sent so far, plus any the
    /// sender will send before anything else, such as its partly filled batch).
    pub fn overtake(&self, barrier: CheckpointBarrier, after: u64) -> Result<(), ()> {
        if self.budget.closed.load(Ordering::Relaxed) {
            return Err(());
        }
        self.priority.send(Overtaking { barrier, after }).map_err(|_| ())
    }
}

impl ChannelReceiver {
    /// Hands events this end is done with back to the sender, to be filled again
    /// rather than freed here (on another thread than the one that made them). Large
    /// ones are freed after all, and so is everything when the sender has enough
    /// waiting.
    pub fn recycle(&self, mut events: Vec<Event>) {
        events.retain(Spares::worth_keeping);
        self.push_recycled(events);
    }

    /// As [`ChannelReceiver::recycle`], for the records of a batch that was delivered.
    pub fn recycle_batch(&self, elements: Vec<Element>) {
        let events = elements
            .into_iter()
            .filter_map(|element| match element {
                Element::Record(record) if Spares::worth_keeping(&record.event) => Some(record.event),
                _ => None,
            })
            .collect();
        self.push_recycled(events);
    }

    fn push_recycled(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut chunks = self.recycled.chunks.lock().unwrap_or_else(|e| e.into_inner());
        if chunks.len() < Recycled::MAX_CHUNKS {
            chunks.push(events);
        }
    }

    /// Names the channel (see [`ChannelReceiver::name`]).
    pub fn named(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The channel's name in checkpoints.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// How many messages were taken from the data lane so far.
    pub fn taken(&self) -> u64 {
        self.taken
    }

    fn received(&mut self, message: Message) -> Message {
        self.taken += 1;
        message
    }

    /// The task took delivery of `message`, which it received from this channel: a
    /// batch frees its room for the sender.
    pub fn delivered(&self, message: &Message) {
        if let Message::Batch(batch) = message {
            self.budget.release(batch.bytes);
        }
    }

    /// The priority lane, for waiting on several channels at once.
    pub fn priority(&self) -> &Receiver<Overtaking> {
        &self.priority
    }

    pub fn try_recv(&mut self) -> Result<Message, TryRecvError> {
        self.rx.try_recv().map(|m| self.received(m))
    }


    /// The underlying receiver, for waiting on several channels at once; a message
    /// taken from it must be passed through [`ChannelReceiver::accept`].
    pub fn inner(&self) -> &Receiver<Message> {
        &self.rx
    }

    /// Accounts for a message received through [`ChannelReceiver::inner`].
    pub fn accept(&mut self, message: Message) -> Message {
        self.received(message)
    }
}

impl Drop for ChannelReceiver {
    fn drop(&mut self) {
        self.budget.closed.store(true, Ordering::Relaxed);
        self.budget.drained.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Batch, Event, Label, Position, Record};

    fn batch(value_bytes: usize) -> Message {
        let mut batch = Batch::default();
        batch.push_record(Record {
            event: Event { key: None, value: vec![7; value_bytes], timestamp: None, headers: vec![] },
            position: Position { source: Label::intern("channel-test"), unit: Label::intern("seq"), offset: 0 },
            key_group: 0,
            ingested: None,
        });
        Message::Batch(batch)
    }

    /// Delivered batches go back to the sender as spares, a bounded number of them,
    /// and the buffers the producer then fills are the ones it sent (no new allocation).
    #[test]
    fn delivered_events_go_back_to_the_sender_to_be_filled_again() {
        let (tx, mut rx) = channel(16, 1 << 20);
        for _ in 0..6 {
            tx.send(batch(100)).unwrap();
        }
        let mut sent_buffers = Vec::new();
        for _ in 0..6 {
            let Message::Batch(batch) = rx.try_recv().unwrap() else { panic!("a batch") };
            rx.delivered(&Message::Batch(batch.clone()));
            let Element::Record(record) = &batch.elements[0] else { panic!("a record") };
            sent_buffers.push(record.event.value.as_ptr());
            rx.recycle_batch(batch.elements);
        }
        let mut spares = crate::stream::Spares::default();
        while let Some(chunk) = tx.take_recycled() {
            spares.keep(chunk);
        }
        assert_eq!(spares.len(), Recycled::MAX_CHUNKS, "at most {} chunks wait", Recycled::MAX_CHUNKS);
        let mut event = spares.take();
        assert!(sent_buffers.contains(&event.value.as_ptr()));
        event.refill(Some(b"k"), b"fresh", Some(3));
        assert_eq!(event, Event { key: Some(b"k".to_vec()), value: b"fresh".to_vec(), timestamp: Some(3), headers: vec![] });
        assert!(sent_buffers.contains(&event.value.as_ptr()), "filled in place");
        // Large buffers are freed rather than kept.
        spares.keep([Event { value: Vec::with_capacity(crate::stream::Spares::MAX_KEPT_BYTES + 1), ..Event::default() }]);
        assert_eq!(spares.len(), Recycled::MAX_CHUNKS - 1);
    }

    #[test]
    fn a_sender_waits_while_the_bytes_in_flight_exceed_the_budget() {
        let (tx, mut rx) = channel(1000, 1 << 20);
        tx.send(batch(700 << 10)).unwrap();
        let sent = Arc::new(AtomicBool::new(false));
        let sender = {
            let (tx, sent) = (tx.clone(), sent.clone());
            std::thread::spawn(move || {
                tx.send(batch(700 << 10)).unwrap();
                sent.store(true, Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        assert!(!sent.load(Ordering::SeqCst), "the second batch must wait for the first to drain");
        let first = rx.try_recv().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!sent.load(Ordering::SeqCst), "taken out of the queue is not yet delivered");
        rx.delivered(&first);
        sender.join().unwrap();
        assert!(sent.load(Ordering::SeqCst));
        // An oversized batch still passes through an empty channel.
        let second = rx.try_recv().unwrap();
        rx.delivered(&second);
        tx.send(batch(3 << 20)).unwrap();
        assert!(rx.try_recv().is_ok());
    }

    #[test]
    fn a_channel_holds_at_most_its_capacity_in_batches_and_counts_what_was_sent() {
        let (tx, mut rx) = channel(2, 1 << 20);
        tx.send(batch(10)).unwrap();
        tx.send(Message::EndOfData).unwrap(); // not a batch: does not count
        tx.send(batch(10)).unwrap();
        assert_eq!(tx.sent(), 3);
        let blocked = std::thread::spawn({
            let tx = tx.clone();
            move || tx.send(batch(10)).unwrap()
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(!blocked.is_finished());
        let first = rx.try_recv().unwrap();
        rx.delivered(&first);
        blocked.join().unwrap();
        assert_eq!(rx.taken(), 1);
        // A barrier overtakes the queue and says how much it follows.
        let barrier = crate::stream::CheckpointBarrier::aligned(1, crate::stream::BarrierKind::Checkpoint);
        tx.overtake(barrier, tx.sent()).unwrap();
        assert_eq!(rx.priority().try_recv().unwrap().after, 4);
    }

    #[test]
    fn a_waiting_sender_gives_up_when_the_receiver_is_gone() {
        let (tx, rx) = channel(1000, 1024);
        tx.send(batch(2048)).unwrap();
        let waiting = std::thread::spawn(move || tx.send(batch(2048)).is_err());
        std::thread::sleep(Duration::from_millis(100));
        drop(rx);
        assert!(waiting.join().unwrap());
    }
}
