//! The input channels of a task, read fairly, one message (a batch, a barrier or an
//! end-of-data marker) at a time.

use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Select, TryRecvError};

use super::channel::ChannelReceiver;
use crate::stream::Message;

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
}

impl Inputs {
    pub fn new(receivers: Vec<ChannelReceiver>) -> Self {
        let n = receivers.len();
        Inputs { receivers, open: vec![true; n], blocked: vec![false; n], open_count: n, cursor: 0 }
    }

    pub fn len(&self) -> usize {
        self.receivers.len()
    }

    /// Marks input `index` as ended (after its end-of-data marker).
    pub fn close(&mut self, index: usize) {
        if std::mem::replace(&mut self.open[index], false) {
            self.open_count -= 1;
        }
    }

    /// Holds input `index` back until [`Inputs::unblock_all`] (barrier alignment).
    pub fn block(&mut self, index: usize) {
        self.blocked[index] = true;
    }

    pub fn unblock_all(&mut self) {
        self.blocked.fill(false);
    }

    /// Whether every open input is blocked: a barrier has arrived on each of them.
    pub fn all_blocked(&self) -> bool {
        self.open.iter().zip(&self.blocked).all(|(open, blocked)| !open || *blocked)
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
