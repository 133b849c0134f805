//! The input channels of a task, read fairly, one message (a batch, a barrier or an
//! end-of-data marker) at a time.

use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Select, TryRecvError};

use super::channel::ChannelReceiver;
use crate::stream::{CheckpointBarrier, Message};

/// What [`Inputs::next`] found.
#[derive(Debug)]
pub enum Next {
    /// A message from input `index`.
    Message(usize, Message),
    /// Nothing arrived within the timeout.
    Timeout,
    /// Every input delivered its end-of-data marker.
    Ended,
    /// An upstream task went away without ending its stream: the job is stopping.
    Disconnected,
}

/// A task's input channels, one per upstream subtask and edge.
pub struct Inputs {
    receivers: Vec<ChannelReceiver>,
    open: Vec<bool>,
    /// Inputs held back while a checkpoint barrier is being aligned.
    blocked: Vec<bool>,
    open_count: usize,
    cursor: usize,
    /// The barrier being aligned: it arrived on some inputs, not yet on all.
    aligning: Option<CheckpointBarrier>,
}

impl Inputs {
    pub fn new(receivers: Vec<ChannelReceiver>) -> Self {
        let n = receivers.len();
        Inputs { receivers, open: vec![true; n], blocked: vec![false; n], open_count: n, cursor: 0, aligning: None }
    }

    pub fn len(&self) -> usize {
        self.receivers.len()
    }

    /// Marks input `index` as ended (after its end-of-data marker).
    fn close(&mut self, index: usize) {
        if std::mem::replace(&mut self.open[index], false) {
            self.open_count -= 1;
        }
    }

    /// Aligned checkpoint barriers, the one place tasks align them: a barrier that
    /// arrived on input `index` holds that input back until it has arrived on every open
    /// input. Returns the barrier once it has (the task then snapshots and forwards it,
    /// and every input is read again), `None` while others still owe it.
    pub fn on_barrier(&mut self, index: usize, barrier: CheckpointBarrier) -> Option<CheckpointBarrier> {
        if self.receivers.len() > 1 {
            self.blocked[index] = true;
            self.aligning = Some(barrier);
            return self.take_aligned();
        }
        Some(barrier)
    }

    /// Input `index` delivered its end-of-data marker: it is closed, and no longer owes
    /// the barrier being aligned, which that may complete (returned as by
    /// [`Inputs::on_barrier`]).
    pub fn on_end(&mut self, index: usize) -> Option<CheckpointBarrier> {
        self.close(index);
        self.take_aligned()
    }

    fn take_aligned(&mut self) -> Option<CheckpointBarrier> {
        let all = self.open.iter().zip(&self.blocked).all(|(open, blocked)| !open || *blocked);
        if !all {
            return None;
        }
        self.blocked.fill(false);
        self.aligning.take()
    }

    fn readable(&self, index: usize) -> bool {
        self.open[index] && !self.blocked[index]
    }

    /// The next message from any open, unblocked input, waiting at most `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Next {
        if self.open_count == 0 {
            return Next::Ended;
        }
        let readable = (0..self.receivers.len()).filter(|i| self.readable(*i)).count();
        if readable == 0 {
            std::thread::sleep(timeout);
            return Next::Timeout;
        }
        if readable == 1 {
            let index = (0..self.receivers.len()).find(|i| self.readable(*i)).expect("one is readable");
            return match self.receivers[index].recv_timeout(timeout) {
                Ok(message) => Next::Message(index, message),
                Err(RecvTimeoutError::Timeout) => Next::Timeout,
                Err(RecvTimeoutError::Disconnected) => Next::Disconnected,
            };
        }
        if let Some(next) = self.try_next() {
            return next;
        }
        let mut select = Select::new();
        let mut indices = Vec::with_capacity(readable);
        for (index, receiver) in self.receivers.iter().enumerate() {
            if self.readable(index) {
                select.recv(receiver.inner());
                indices.push(index);
            }
        }
        match select.select_timeout(timeout) {
            Err(_) => Next::Timeout,
            Ok(operation) => {
                let index = indices[operation.index()];
                match operation.recv(self.receivers[index].inner()) {
                    Ok(message) => Next::Message(index, self.receivers[index].accept(message)),
                    Err(_) => Next::Disconnected,
                }
            }
        }
    }

    /// The next message if one is already queued on an open, unblocked input, without
    /// waiting. Tasks flush their partly filled output batches when this finds nothing:
    /// they batch what is queued, never wait to fill a batch.
    pub fn try_next(&mut self) -> Option<Next> {
        if self.open_count == 0 {
            return Some(Next::Ended);
        }
        // Poll every open input once, starting after the last one served, so that a
        // busy input cannot starve the others.
        let n = self.receivers.len();
        for step in 0..n {
            let index = (self.cursor + step) % n;
            if !self.readable(index) {
                continue;
            }
            match self.receivers[index].try_recv() {
                Ok(message) => {
                    self.cursor = index + 1;
                    return Some(Next::Message(index, message));
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => return Some(Next::Disconnected),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{BarrierKind, Batch};
    use crate::task::channel::channel;

    fn barrier() -> CheckpointBarrier {
        CheckpointBarrier { id: 7, kind: BarrierKind::Checkpoint }
    }

    #[test]
    fn a_barrier_holds_its_input_back_until_every_open_input_delivered_it() {
        let (tx0, rx0) = channel(16, 1 << 20);
        let (tx1, rx1) = channel(16, 1 << 20);
        let (tx2, rx2) = channel(16, 1 << 20);
        let mut inputs = Inputs::new(vec![rx0, rx1, rx2]);
        assert!(inputs.on_barrier(0, barrier()).is_none());
        // Input 0 is held back: what follows its barrier waits; input 1 is read.
        tx0.send(Message::Batch(Batch::default())).unwrap();
        tx1.send(Message::EndOfData).unwrap();
        assert!(matches!(inputs.try_next(), Some(Next::Message(1, Message::EndOfData))));
        assert!(inputs.try_next().is_none());
        // Input 1 ended: it no longer owes the barrier, but input 2 still does.
        assert!(inputs.on_end(1).is_none());
        let aligned = inputs.on_barrier(2, barrier()).expect("aligned on every open input");
        assert_eq!(aligned.id, 7);
        // Everything is read again.
        assert!(matches!(inputs.try_next(), Some(Next::Message(0, Message::Batch(_)))));
        drop((tx1, tx2));
    }
}
