//! The input channels of a task, read fairly, one message (a batch or an end-of-data
//! marker) at a time — and the one place where tasks handle checkpoint barriers.
//!
//! **Aligned** barriers travel with the data: a barrier that arrived on one input holds
//! that input back until it has arrived on every open input; then the task snapshots
//! ([`Next::Barrier`]) and every input is read again.
//!
//! **Unaligned** barriers overtake data: they come on a channel's priority lane
//! ([`super::channel::Overtaking`]), or an aligned barrier turns unaligned when its
//! alignment timeout passes. The task snapshots at once, when the first one arrives,
//! and goes on processing everything; meanwhile the inputs record, per channel, the
//! data that was ahead of the barrier — what was queued in the channel and what the
//! upstream task had not sent yet — and hand it over as [`Next::ChannelState`] once the
//! barrier has arrived on every input. Queued data is taken out of a channel at once
//! (into a stash, delivered in order later), so a checkpoint under back-pressure does
//! not wait for the task to work through its backlog.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Select, TryRecvError};

use super::channel::ChannelReceiver;
use crate::checkpoint::channels::ChannelState;
use crate::stream::{Batch, CheckpointBarrier, Message};

/// What [`Inputs::next`] found.
#[derive(Debug)]
pub enum Next {
    /// A batch or end-of-data marker from input `index`.
    Message(usize, Message),
    /// Snapshot now, then forward the barrier. When `unaligned`, the barrier overtook
    /// data, which the task keeps processing as usual; the data is then handed over as
    /// [`Next::ChannelState`] to complete the snapshot.
    Barrier { barrier: CheckpointBarrier, unaligned: bool },
    /// The data that was ahead of unaligned checkpoint `id`'s barriers, complete.
    ChannelState(u64, ChannelState),
    /// Nothing arrived within the timeout.
    Timeout,
    /// Every input delivered its end-of-data marker.
    Ended,
    /// An upstream task went away without ending its stream: the job is stopping.
    Disconnected,
}

/// One input channel and what the task knows of it.
struct Input {
    receiver: ChannelReceiver,
    /// Not yet ended (its end-of-data marker not delivered).
    open: bool,
    /// The end-of-data marker was taken from the data lane: nothing more comes.
    lane_ended: bool,
    /// The barrier being aligned arrived here: nothing more is read until it arrived
    /// everywhere.
    blocked: bool,
    /// Messages taken from the data lane ahead of their delivery.
    stash: VecDeque<Message>,
    /// What the task handed back undone ([`Inputs::unread`]): delivered first, again.
    returned: VecDeque<Batch>,
    /// The priority lane may still deliver.
    priority_open: bool,
}

impl Input {
    fn readable(&self) -> bool {
        self.open && !self.blocked && (!self.returned.is_empty() || !self.stash.is_empty() || !self.lane_ended)
    }
}

/// Until when an input's data is recorded for an unaligned checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// Nothing (more) of this input is ahead of the barrier.
    Done,
    /// Until the barrier is met on the data lane (or overtakes on the priority lane).
    Barrier,
    /// Until this many messages have been taken from the data lane.
    Taken(u64),
}

/// The checkpoint whose barrier has arrived on some inputs.
struct Pending {
    barrier: CheckpointBarrier,
    /// Per input: the barrier arrived, or the input ended.
    arrived: Vec<bool>,
    /// Per input: where an announced barrier is queued on the data lane (after how
    /// many messages).
    announced: Vec<Option<u64>>,
    /// Once unaligned: the data recorded so far, and per input until when.
    capture: Option<(ChannelState, Vec<Until>)>,
}

/// A task's input channels, one per upstream subtask and edge.
pub struct Inputs {
    inputs: Vec<Input>,
    open_count: usize,
    cursor: usize,
    pending: Option<Pending>,
    /// The highest checkpoint id seen: barriers of older ones are stale.
    latest: u64,
    /// What to hand to the task before reading anything.
    events: VecDeque<Next>,
    /// Restored channel state, delivered before any input is read.
    replay: VecDeque<(usize, Batch)>,
}

/// Which lane of an input a select operation waits on.
#[derive(Clone, Copy)]
enum Lane {
    Data,
    Priority,
}

/// What a select over the lanes found (`None`: the lane's sender is gone).
enum Selected {
    Data(usize, Option<Message>),
    Priority(usize, Option<super::channel::Overtaking>),
    Nothing,
}

impl Inputs {
    pub fn new(receivers: Vec<ChannelReceiver>) -> Self {
        let n = receivers.len();
        let inputs = receivers
            .into_iter()
            .map(|receiver| Input {
                receiver,
                open: true,
                lane_ended: false,
                blocked: false,
                stash: VecDeque::new(),
                returned: VecDeque::new(),
                priority_open: true,
            })
            .collect();
        Inputs {
            inputs,
            open_count: n,
            cursor: 0,
            pending: None,
            latest: 0,
            events: VecDeque::new(),
            replay: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    /// Hands events the task is done with back to the producer of input `index`
    /// (see [`ChannelReceiver::recycle`]).
    pub fn recycle(&self, index: usize, events: Vec<crate::stream::Event>) {
        if let Some(input) = self.inputs.get(index) {
            input.receiver.recycle(events);
        }
    }

    /// As [`Inputs::recycle`], for the records of a delivered batch.
    pub fn recycle_batch(&self, index: usize, batch: Batch) {
        if let Some(input) = self.inputs.get(index) {
            input.receiver.recycle_batch(batch.elements);
        }
    }

    /// The input whose channel is named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.inputs.iter().position(|i| &**i.receiver.name() == name)
    }

    /// Delivers `batch` as if it had arrived on input `index`, before anything the
    /// inputs receive (restored channel state).
    pub fn replay(&mut self, index: usize, batch: Batch) {
        self.replay.push_back((index, batch));
    }

    /// Hands the unprocessed rest of a batch from input `index` back, to be delivered
    /// again before anything else from that input (a task processes a long batch of a
    /// slow operator in parts, and serves barriers in between). Until then it counts as
    /// received and not processed: ahead of any barrier that comes meanwhile.
    pub fn unread(&mut self, index: usize, batch: Batch) {
        match self.replay.is_empty() {
            true => self.inputs[index].returned.push_front(batch),
            // Restored data is delivered before anything else: so is its rest.
            false => self.replay.push_front((index, batch)),
        }
    }

    fn names(&self) -> Vec<Arc<str>> {
        self.inputs.iter().map(|i| i.receiver.name().clone()).collect()
    }

    /// A barrier arrived on input `index`: on the data lane (`after` is `None`) or on
    /// the priority lane, placed after the first `after` messages of the data lane.
    ///
    /// On the priority lane, an aligned barrier that may yet turn unaligned is only
    /// announced (Flink's `EventAnnouncement`): it is also queued on the data lane, and
    /// aligns as usual; but should its alignment time out, the announcement says
    /// which of the data queued ahead of it to record.
    fn on_barrier(&mut self, index: usize, barrier: CheckpointBarrier, after: Option<u64>) {
        let current = self.pending.as_ref().map(|p| p.barrier.id);
        tracing::trace!(input = %self.inputs[index].receiver.name(), checkpoint = barrier.id, ?after, ?current, latest = self.latest, "barrier arrived");
        if barrier.id < self.latest || (barrier.id == self.latest && current != Some(barrier.id)) {
            return; // a stale barrier, of a checkpoint this task is done with
        }
        if current != Some(barrier.id) {
            self.begin(barrier.clone());
        }
        let taken = self.inputs[index].receiver.taken();
        let pending = self.pending.as_mut().expect("begun");
        if pending.arrived[index] {
            return; // an announcement, after the barrier itself
        }
        let unaligned = barrier.is_unaligned_at(Instant::now());
        if let (None, Some(n), false) = (&pending.capture, after, unaligned) {
            pending.announced[index] = Some(n);
            return;
        }
        pending.arrived[index] = true;
        match &mut pending.capture {
            Some((_, until)) => {
                until[index] = match after {
                    Some(n) if taken < n => Until::Taken(n),
                    _ => Until::Done,
                };
                self.drain(index);
            }
            None => match after {
                Some(n) => self.go_unaligned(Some((index, n)), false),
                None if unaligned => self.go_unaligned(None, false),
                None => self.inputs[index].blocked = true,
            },
        }
        self.check_complete();
    }

    /// Starts checkpoint `barrier` (dropping an older one still in progress: the
    /// coordinator gave up on it).
    fn begin(&mut self, barrier: CheckpointBarrier) {
        if self.pending.take().is_some() {
            tracing::debug!(checkpoint = barrier.id, "a newer barrier arrived; abandoning the older checkpoint");
        }
        for input in &mut self.inputs {
            input.blocked = false;
        }
        self.latest = barrier.id;
        let arrived = self.inputs.iter().map(|i| !i.open).collect();
        let announced = vec![None; self.inputs.len()];
        self.pending = Some(Pending { barrier, arrived, announced, capture: None });
    }

    /// The pending checkpoint turns unaligned: the task snapshots now. `overtaken` is
    /// the input whose priority-lane barrier caused it, with the messages it follows;
    /// `timed_out` says the alignment timeout caused it, so the inputs whose barrier is
    /// still queued are searched for it at once.
    fn go_unaligned(&mut self, overtaken: Option<(usize, u64)>, timed_out: bool) {
        let names = self.names();
        let pending = self.pending.as_mut().expect("pending");
        let mut state = ChannelState::new(names);
        let until: Vec<Until> = self
            .inputs
            .iter()
            .enumerate()
            .map(|(index, input)| match overtaken {
                Some((i, n)) if i == index => match input.receiver.taken() < n {
                    true => Until::Taken(n),
                    false => Until::Done,
                },
                _ if !input.open || pending.arrived[index] => Until::Done,
                _ => match pending.announced[index] {
                    Some(n) if input.receiver.taken() < n => Until::Taken(n),
                    Some(_) => Until::Done,
                    None => Until::Barrier,
                },
            })
            .collect();
        // Whatever was received and not yet delivered is ahead of the barrier (the
        // stash holds at most what an earlier barrier was behind): restored data
        // first, then what was taken from the channels.
        for (index, batch) in &self.replay {
            state.record(*index, batch);
        }
        for (index, input) in self.inputs.iter_mut().enumerate() {
            input.blocked = false;
            for batch in &input.returned {
                state.record(index, batch);
            }
            for message in &input.stash {
                if let Message::Batch(batch) = message {
                    state.record(index, batch);
                }
            }
        }
        // Take out what is queued ahead of the barriers whose place is known, and on a
        // timeout, ahead of those still queued on the data lane.
        let to_drain: Vec<usize> = (0..until.len())
            .filter(|i| matches!(until[*i], Until::Taken(_)) || (timed_out && until[*i] == Until::Barrier))
            .collect();
        pending.capture = Some((state, until));
        self.events.push_back(Next::Barrier { barrier: pending.barrier.clone(), unaligned: true });
        for index in to_drain {
            self.drain(index);
        }
    }

    /// Takes the data of input `index` that is queued ahead of the barrier into the
    /// stash, recording it: up to the count an overtaking barrier gave, or up to the
    /// barrier itself on the data lane, as far as it has arrived.
    fn drain(&mut self, index: usize) {
        loop {
            let until = match &self.pending {
                Some(Pending { capture: Some((_, until)), .. }) => until[index],
                _ => return,
            };
            let input = &mut self.inputs[index];
            match until {
                Until::Done => return,
                Until::Taken(n) if input.receiver.taken() >= n => return self.set_until(index, Until::Done),
                _ => {}
            }
            if input.lane_ended {
                return;
            }
            let Ok(message) = input.receiver.try_recv() else { return };
            if let Some(message) = self.on_data_lane(index, message) {
                self.inputs[index].stash.push_back(message);
            }
        }
    }

    fn set_until(&mut self, index: usize, value: Until) {
        if let Some(Pending { capture: Some((_, until)), .. }) = &mut self.pending {
            until[index] = value;
        }
    }

    /// A message taken from input `index`'s data lane: recorded if it is ahead of an
    /// unaligned barrier; barriers are handled here. Returns what is to be delivered.
    fn on_data_lane(&mut self, index: usize, message: Message) -> Option<Message> {
        match &message {
            Message::Barrier(barrier) => {
                let barrier = barrier.clone();
                self.on_barrier(index, barrier, None);
                return None;
            }
            Message::EndOfData => {
                self.inputs[index].lane_ended = true;
                if let Some(pending) = &mut self.pending {
                    pending.arrived[index] = true;
                }
                self.set_until(index, Until::Done);
            }
            Message::Batch(batch) => {
                let taken = self.inputs[index].receiver.taken();
                if let Some(Pending { capture: Some((state, until)), .. }) = &mut self.pending {
                    match until[index] {
                        Until::Done => {}
                        Until::Barrier => state.record(index, batch),
                        Until::Taken(n) => {
                            state.record(index, batch);
                            if taken >= n {
                                until[index] = Until::Done;
                            }
                        }
                    }
                }
            }
        }
        self.check_complete();
        Some(message)
    }

    /// Hands a message to the task: an end-of-data marker closes its input.
    fn deliver(&mut self, index: usize, message: Message) -> Next {
        self.inputs[index].receiver.delivered(&message);
        if let Message::EndOfData = message {
            if std::mem::replace(&mut self.inputs[index].open, false) {
                self.open_count -= 1;
            }
            if let Some(pending) = &mut self.pending {
                pending.arrived[index] = true;
            }
            self.check_complete();
        }
        Next::Message(index, message)
    }

    /// Completes the pending checkpoint once its barrier arrived on every input (and,
    /// when unaligned, the data ahead of it was all recorded; an announced barrier need
    /// not arrive itself then, and is passed over when it does).
    fn check_complete(&mut self) {
        let Some(pending) = &self.pending else { return };
        match &pending.capture {
            Some((_, until)) if until.iter().any(|u| *u != Until::Done) => {}
            None if !pending.arrived.iter().all(|a| *a) => {}
            Some(_) => {
                let pending = self.pending.take().expect("present");
                let (state, _) = pending.capture.expect("present");
                self.events.push_back(Next::ChannelState(pending.barrier.id, state));
            }
            None => {
                let pending = self.pending.take().expect("present");
                for input in &mut self.inputs {
                    input.blocked = false;
                }
                self.events.push_back(Next::Barrier { barrier: pending.barrier, unaligned: false });
            }
        }
    }

    /// When the pending aligned checkpoint turns unaligned, if it may.
    fn alignment_deadline(&self) -> Option<Instant> {
        match &self.pending {
            Some(Pending { capture: None, barrier, .. }) => barrier.unaligned_from,
            _ => None,
        }
    }

    /// Events, restored data, barriers on the priority lanes, and an alignment that
    /// timed out: what comes before reading the data lanes.
    fn ready(&mut self) -> Option<Next> {
        if let Some(event) = self.barriers() {
            return Some(event);
        }
        let (index, batch) = self.replay.pop_front()?;
        Some(Next::Message(index, Message::Batch(batch)))
    }

    /// Barriers, without reading any input: what a task whose output is back-pressured
    /// still serves between two batches, so that unaligned barriers overtake the
    /// back-pressure too ([`Next::Barrier`] and [`Next::ChannelState`] only).
    pub fn barriers(&mut self) -> Option<Next> {
        if let Some(event) = self.events.pop_front() {
            return Some(event);
        }
        for index in 0..self.inputs.len() {
            let input = &mut self.inputs[index];
            if !input.open || !input.priority_open {
                continue;
            }
            match input.receiver.priority().try_recv() {
                Ok(overtaking) => self.on_barrier(index, overtaking.barrier, Some(overtaking.after)),
                Err(TryRecvError::Disconnected) => input.priority_open = false,
                Err(TryRecvError::Empty) => {}
            }
        }
        if self.alignment_deadline().is_some_and(|deadline| Instant::now() >= deadline) {
            tracing::debug!(checkpoint = self.latest, "alignment timed out; the checkpoint turns unaligned");
            self.go_unaligned(None, true);
            self.check_complete();
        }
        // The last of what an overtaking barrier follows (the upstream's partly filled
        // batch) may arrive after the barrier: taken as soon as it does, not after the
        // task has worked through the stash.
        if let Some(Pending { capture: Some((_, until)), .. }) = &self.pending {
            let owed: Vec<usize> = (0..until.len()).filter(|i| matches!(until[*i], Until::Taken(_))).collect();
            for index in owed {
                self.drain(index);
            }
        }
        self.events.pop_front()
    }

    /// The next message if one is already queued on an open, unblocked input, without
    /// waiting. Tasks flush their partly filled output batches when this finds nothing:
    /// they batch what is queued, never wait to fill a batch.
    pub fn try_next(&mut self) -> Option<Next> {
        'poll: loop {
            if let Some(next) = self.ready() {
                return Some(next);
            }
            if self.open_count == 0 {
                return Some(Next::Ended);
            }
            // Poll every open input once, starting after the last one served, so that a
            // busy input cannot starve the others.
            let n = self.inputs.len();
            for step in 0..n {
                let index = (self.cursor + step) % n;
                let input = &mut self.inputs[index];
                if !input.readable() {
                    continue;
                }
                if let Some(batch) = input.returned.pop_front() {
                    self.cursor = index + 1;
                    return Some(Next::Message(index, Message::Batch(batch)));
                }
                if let Some(message) = input.stash.pop_front() {
                    self.cursor = index + 1;
                    return Some(self.deliver(index, message));
                }
                match input.receiver.try_recv() {
                    Ok(message) => {
                        self.cursor = index + 1;
                        match self.on_data_lane(index, message) {
                            Some(message) => return Some(self.deliver(index, message)),
                            None => continue 'poll,
                        }
                    }
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Disconnected) => return Some(Next::Disconnected),
                }
            }
            return None;
        }
    }

    /// The next message from any open, unblocked input, waiting at most `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Next {
        if let Some(next) = self.try_next() {
            return next;
        }
        let timeout = match self.alignment_deadline() {
            Some(deadline) => timeout.min(deadline.saturating_duration_since(Instant::now())),
            None => timeout,
        };
        let mut lanes = Vec::new();
        let selected = {
            let mut select = Select::new();
            for (index, input) in self.inputs.iter().enumerate() {
                if input.readable() && !input.lane_ended {
                    select.recv(input.receiver.inner());
                    lanes.push((index, Lane::Data));
                }
                if input.open && input.priority_open {
                    select.recv(input.receiver.priority());
                    lanes.push((index, Lane::Priority));
                }
            }
            if lanes.is_empty() {
                std::thread::sleep(timeout);
                return Next::Timeout;
            }
            match select.select_timeout(timeout) {
                Err(_) => Selected::Nothing,
                Ok(operation) => {
                    let (index, lane) = lanes[operation.index()];
                    let receiver = &self.inputs[index].receiver;
                    match lane {
                        Lane::Data => Selected::Data(index, operation.recv(receiver.inner()).ok()),
                        Lane::Priority => Selected::Priority(index, operation.recv(receiver.priority()).ok()),
                    }
                }
            }
        };
        match selected {
            Selected::Data(index, Some(message)) => {
                let message = self.inputs[index].receiver.accept(message);
                if let Some(message) = self.on_data_lane(index, message) {
                    return self.deliver(index, message);
                }
            }
            Selected::Data(_, None) => return Next::Disconnected,
            Selected::Priority(index, Some(overtaking)) => {
                self.on_barrier(index, overtaking.barrier, Some(overtaking.after))
            }
            Selected::Priority(index, None) => self.inputs[index].priority_open = false,
            Selected::Nothing => {}
        }
        self.try_next().unwrap_or(Next::Timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{BarrierKind, Element, Event, Label, Position, Record};
    use crate::task::channel::{ChannelSender, channel};

    fn barrier(id: u64) -> CheckpointBarrier {
        CheckpointBarrier::aligned(id, BarrierKind::Checkpoint)
    }

    fn unaligned(id: u64) -> CheckpointBarrier {
        CheckpointBarrier { id, kind: BarrierKind::Checkpoint, unaligned_from: Some(Instant::now()) }
    }

    fn batch(values: &[i64]) -> Message {
        let mut batch = Batch::default();
        for v in values {
            batch.push_record(Record {
                event: Event { key: None, value: v.to_string().into_bytes(), timestamp: None, headers: vec![] },
                position: Position { source: Label::intern("inputs-test"), unit: Label::intern("seq"), offset: *v },
                key_group: 0,
                ingested: None,
            });
        }
        Message::Batch(batch)
    }

    fn values(message: &Message) -> Vec<i64> {
        let Message::Batch(batch) = message else { return vec![] };
        batch
            .elements
            .iter()
            .filter_map(|e| match e {
                Element::Record(r) => Some(String::from_utf8_lossy(&r.event.value).parse().unwrap()),
                _ => None,
            })
            .collect()
    }

    fn named(n: usize) -> (Vec<ChannelSender>, Inputs) {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..n)
            .map(|i| {
                let (tx, rx) = channel(64, 1 << 20);
                (tx, rx.named(format!("up#{i}")))
            })
            .unzip();
        (senders, Inputs::new(receivers))
    }

    /// Every record of the channel state, per channel name.
    fn recorded(state: ChannelState) -> Vec<(String, Vec<i64>)> {
        let dir = tempfile::tempdir().unwrap();
        let Some(file) = state.write(dir.path(), "c.ent").unwrap() else { return vec![] };
        crate::checkpoint::channels::ChannelState::read(&dir.path().join(file.path))
            .unwrap()
            .into_iter()
            .map(|c| (c.name, c.batches.into_iter().flat_map(|b| values(&Message::Batch(b))).collect()))
            .collect()
    }

    #[test]
    fn a_barrier_holds_its_input_back_until_every_open_input_delivered_it() {
        let (tx, mut inputs) = named(3);
        tx[0].send(Message::Barrier(barrier(7))).unwrap();
        tx[0].send(batch(&[1])).unwrap();
        tx[1].send(Message::EndOfData).unwrap();
        // Input 0 is held back: what follows its barrier waits; input 1 is read.
        assert!(matches!(inputs.try_next(), Some(Next::Message(1, Message::EndOfData))));
        assert!(inputs.try_next().is_none());
        // Input 1 ended, so it no longer owes the barrier; input 2 does.
        tx[2].send(Message::Barrier(barrier(7))).unwrap();
        let Some(Next::Barrier { barrier, unaligned: false }) = inputs.try_next() else { panic!("aligned") };
        assert_eq!(barrier.id, 7);
        // Everything is read again.
        assert!(matches!(inputs.try_next(), Some(Next::Message(0, Message::Batch(_)))));
    }

    #[test]
    fn an_overtaking_barrier_snapshots_at_once_and_records_the_data_it_overtook() {
        let (tx, mut inputs) = named(2);
        tx[0].send(batch(&[1, 2])).unwrap();
        assert_eq!(values(&match inputs.try_next() { Some(Next::Message(0, m)) => m, other => panic!("{other:?}") }), [1, 2]);
        tx[0].send(batch(&[3])).unwrap();
        tx[0].send(batch(&[4])).unwrap();
        tx[1].send(batch(&[10])).unwrap();
        // Upstream 0 overtakes its two queued batches and one it has not sent yet.
        tx[0].overtake(unaligned(3), tx[0].sent() + 1).unwrap();
        let Some(Next::Barrier { barrier, unaligned: true }) = inputs.try_next() else { panic!("unaligned") };
        assert_eq!(barrier.id, 3);
        tx[0].send(batch(&[5])).unwrap();
        tx[0].send(batch(&[6])).unwrap(); // after the barrier
        // Input 1 sends its barrier after [11].
        tx[1].send(batch(&[11])).unwrap();
        tx[1].overtake(unaligned(3), tx[1].sent()).unwrap();
        tx[1].send(batch(&[12])).unwrap();
        // Everything is still processed, in order.
        let mut seen = Vec::new();
        let mut state = None;
        while let Some(next) = inputs.try_next() {
            match next {
                Next::Message(i, m) => seen.push((i, values(&m))),
                Next::ChannelState(3, s) if state.is_none() => state = Some(s),
                other => panic!("{other:?}"),
            }
        }
        let per_input = |input: usize| seen.iter().filter(|(i, _)| *i == input).flat_map(|(_, v)| v.clone()).collect::<Vec<_>>();
        assert_eq!(per_input(0), [3, 4, 5, 6]);
        assert_eq!(per_input(1), [10, 11, 12]);
        let state = state.expect("the channel state completes once every barrier arrived");
        assert_eq!(recorded(state), [("up#0".to_string(), vec![3, 4, 5]), ("up#1".to_string(), vec![10, 11])]);
    }

    #[test]
    fn an_aligned_barrier_turns_unaligned_when_alignment_times_out() {
        let (tx, mut inputs) = named(2);
        let mut slow = barrier(9);
        slow.unaligned_from = Some(Instant::now() + Duration::from_millis(100));
        tx[0].send(Message::Barrier(slow.clone())).unwrap();
        tx[0].send(batch(&[100])).unwrap();
        tx[1].send(batch(&[1])).unwrap();
        tx[1].send(batch(&[2])).unwrap();
        tx[1].send(Message::Barrier(slow)).unwrap();
        tx[1].send(batch(&[3])).unwrap();
        // Input 0 is blocked; input 1 is read slowly: one batch before the timeout.
        assert!(matches!(inputs.try_next(), Some(Next::Message(1, _))));
        std::thread::sleep(Duration::from_millis(150));
        let next = inputs.try_next();
        assert!(matches!(next, Some(Next::Barrier { unaligned: true, .. })), "{next:?}");
        // The queued [2] was ahead of input 1's barrier: recorded at once, so the channel
        // state is complete before the task even processed it.
        let Some(Next::ChannelState(9, state)) = inputs.try_next() else { panic!("complete") };
        assert_eq!(recorded(state), [("up#1".to_string(), vec![2])]);
        let mut rest: Vec<_> = std::iter::from_fn(|| inputs.try_next()).map(|n| match n {
            Next::Message(i, m) => (i, values(&m)),
            other => panic!("{other:?}"),
        }).collect();
        rest.sort();
        assert_eq!(rest, [(0, vec![100]), (1, vec![2]), (1, vec![3])]);
    }

    #[test]
    fn a_task_waiting_for_input_notices_the_alignment_timeout() {
        let (tx, mut inputs) = named(2);
        let mut slow = barrier(2);
        slow.unaligned_from = Some(Instant::now() + Duration::from_millis(100));
        tx[0].send(Message::Barrier(slow.clone())).unwrap();
        assert!(inputs.try_next().is_none());
        let started = Instant::now();
        assert!(matches!(inputs.next(Duration::from_secs(5)), Next::Barrier { unaligned: true, .. }));
        assert!(started.elapsed() < Duration::from_secs(4), "woken at the deadline, not the poll timeout");
        // Input 1's barrier comes later on the data lane, after [7]: [7] is recorded.
        tx[1].send(batch(&[7])).unwrap();
        tx[1].send(Message::Barrier(slow)).unwrap();
        assert!(matches!(inputs.next(Duration::from_secs(1)), Next::Message(1, _)));
        let Next::ChannelState(2, state) = inputs.next(Duration::from_secs(1)) else { panic!("complete") };
        assert_eq!(recorded(state), [("up#1".to_string(), vec![7])]);
    }

    #[test]
    fn restored_data_comes_first_and_is_recorded_again_if_a_barrier_overtakes_it() {
        let (tx, mut inputs) = named(1);
        let Message::Batch(old) = batch(&[1, 2]) else { unreachable!() };
        inputs.replay(0, old);
        tx[0].send(batch(&[3])).unwrap();
        tx[0].overtake(unaligned(4), 1).unwrap();
        assert!(matches!(inputs.try_next(), Some(Next::Barrier { unaligned: true, .. })));
        let Some(Next::ChannelState(4, state)) = inputs.try_next() else { panic!("complete") };
        assert_eq!(recorded(state), [("up#0".to_string(), vec![1, 2, 3])]);
        let order: Vec<_> = std::iter::from_fn(|| inputs.try_next()).flat_map(|n| match n {
            Next::Message(_, m) => values(&m),
            other => panic!("{other:?}"),
        }).collect();
        assert_eq!(order, [1, 2, 3]);
    }

    #[test]
    fn the_rest_of_a_batch_handed_back_comes_next_and_counts_as_in_flight() {
        let (tx, mut inputs) = named(1);
        let Message::Batch(old) = batch(&[1, 2, 3]) else { unreachable!() };
        inputs.replay(0, old);
        let Message::Batch(older) = batch(&[4]) else { unreachable!() };
        inputs.replay(0, older);
        tx[0].send(batch(&[5, 6])).unwrap();
        // The task takes [1, 2, 3] but processes only [1] and hands [2, 3] back.
        let Some(Next::Message(0, Message::Batch(mut first))) = inputs.try_next() else { panic!() };
        let rest = first.split_after_records(1).unwrap();
        inputs.unread(0, rest);
        let Some(Next::Message(0, m)) = inputs.try_next() else { panic!() };
        assert_eq!(values(&m), [2, 3], "restored data keeps its order");
        let Some(Next::Message(0, m)) = inputs.try_next() else { panic!() };
        assert_eq!(values(&m), [4]);
        let Some(Next::Message(0, Message::Batch(mut live))) = inputs.try_next() else { panic!() };
        inputs.unread(0, live.split_after_records(1).unwrap());
        // A barrier now finds [6] received and not processed: in flight.
        tx[0].overtake(unaligned(8), tx[0].sent()).unwrap();
        assert!(matches!(inputs.try_next(), Some(Next::Barrier { unaligned: true, .. })));
        let Some(Next::ChannelState(8, state)) = inputs.try_next() else { panic!("complete") };
        assert_eq!(recorded(state), [("up#0".to_string(), vec![6])]);
        let Some(Next::Message(0, m)) = inputs.try_next() else { panic!() };
        assert_eq!(values(&m), [6]);
    }
}
