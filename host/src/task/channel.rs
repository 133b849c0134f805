//! # Channels between tasks
//!
//! A channel is bounded twice: in messages (batches, barriers, end-of-data markers), as
//! crossbeam's bounded channel, and in the bytes of the records it holds. A sender
//! waits while the bytes in flight exceed the budget, so a stream of 20 MB events holds
//! at most about one budget plus one batch in the channel, whatever the message count.
//!
//! A batch larger than the whole budget is still let through when the channel is
//! empty, so an oversized record slows the job down rather than blocking it forever.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendError, Sender, TryRecvError, TrySendError};

use crate::stream::Message;

/// The bytes a channel holds, shared by its two ends.
#[derive(Debug)]
struct Budget {
    limit: usize,
    used: Mutex<usize>,
    drained: Condvar,
    /// The receiver is gone: senders must not wait for it.
    closed: AtomicBool,
}

impl Budget {
    /// Waits until `bytes` more fit (or the channel is empty), then takes them. How long
    /// it waited (zero without a clock read when they fit at once).
    fn acquire(&self, bytes: usize) -> Result<Duration, ()> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let mut waiting: Option<Instant> = None;
        while *used > 0 && *used + bytes > self.limit {
            if self.closed.load(Ordering::Relaxed) {
                return Err(());
            }
            waiting.get_or_insert_with(Instant::now);
            used = self.drained.wait_timeout(used, Duration::from_millis(50)).unwrap_or_else(|e| e.into_inner()).0;
        }
        *used += bytes;
        Ok(waiting.map(|w| w.elapsed()).unwrap_or_default())
    }

    fn release(&self, bytes: usize) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(bytes);
        self.drained.notify_all();
    }
}

/// The sending end of a channel.
#[derive(Debug, Clone)]
pub struct ChannelSender {
    tx: Sender<Message>,
    budget: Arc<Budget>,
}

/// The receiving end of a channel.
#[derive(Debug)]
pub struct ChannelReceiver {
    rx: Receiver<Message>,
    budget: Arc<Budget>,
}

/// A channel holding at most `capacity` messages and about `max_bytes` bytes of records.
pub fn channel(capacity: usize, max_bytes: usize) -> (ChannelSender, ChannelReceiver) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let budget = Arc::new(Budget {
        limit: max_bytes,
        used: Mutex::new(0),
        drained: Condvar::new(),
        closed: AtomicBool::new(false),
    });
    (ChannelSender { tx, budget: budget.clone() }, ChannelReceiver { rx, budget })
}

impl ChannelSender {
    /// Sends `message`, waiting while the channel is full in messages or in bytes.
    pub fn send(&self, message: Message) -> Result<(), SendError<Message>> {
        self.send_timed(message).map(|_| ())
    }

    /// Sends `message` as [`ChannelSender::send`] does, and answers how long it waited
    /// for room: the time the sender was back-pressured (zero, without reading the
    /// clock, when there was room at once).
    pub fn send_timed(&self, message: Message) -> Result<Duration, SendError<Message>> {
        let bytes = message.bytes();
        let mut waited = Duration::ZERO;
        if bytes > 0 {
            match self.budget.acquire(bytes) {
                Ok(w) => waited = w,
                Err(()) => return Err(SendError(message)),
            }
        }
        match self.tx.try_send(message) {
            Ok(()) => Ok(waited),
            Err(TrySendError::Disconnected(message)) => {
                self.budget.release(bytes);
                Err(SendError(message))
            }
            Err(TrySendError::Full(message)) => {
                let start = Instant::now();
                self.tx.send(message).inspect_err(|_| self.budget.release(bytes))?;
                Ok(waited + start.elapsed())
            }
        }
    }
}

impl ChannelReceiver {
    fn received(&self, message: Message) -> Message {
        let bytes = message.bytes();
        if bytes > 0 {
            self.budget.release(bytes);
        }
        message
    }

    pub fn try_recv(&self) -> Result<Message, TryRecvError> {
        self.rx.try_recv().map(|m| self.received(m))
    }

    pub fn recv_timeout(&self, timeout: Duration) -> Result<Message, RecvTimeoutError> {
        self.rx.recv_timeout(timeout).map(|m| self.received(m))
    }

    /// The underlying receiver, for waiting on several channels at once; a message
    /// taken from it must be passed through [`ChannelReceiver::accept`].
    pub fn inner(&self) -> &Receiver<Message> {
        &self.rx
    }

    /// Accounts for a message received through [`ChannelReceiver::inner`].
    pub fn accept(&self, message: Message) -> Message {
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
            position: Position { source: Label::intern("channel-test"), unit: "seq", offset: 0 },
            key_group: 0,
            ingested: None,
        });
        Message::Batch(batch)
    }

    #[test]
    fn a_sender_waits_while_the_bytes_in_flight_exceed_the_budget() {
        let (tx, rx) = channel(1000, 1 << 20);
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
        rx.recv_timeout(Duration::from_secs(1)).unwrap();
        sender.join().unwrap();
        assert!(sent.load(Ordering::SeqCst));
        // An oversized batch still passes through an empty channel.
        rx.recv_timeout(Duration::from_secs(1)).unwrap();
        tx.send(batch(3 << 20)).unwrap();
        assert!(rx.try_recv().is_ok());
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
