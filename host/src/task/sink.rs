//! The sink task: writes every record it receives, flushes at the end or on stop.

use std::sync::Arc;

use hdrhistogram::Histogram;

use super::inputs::{Inputs, Next};
use super::{Checkpointing, POLL_INTERVAL, TaskError};
use crate::checkpoint::channels::ChannelState;
use crate::checkpoint::coordinator::Command;
use crate::checkpoint::storage::{CheckpointStorage, requires_commit_record};
use crate::checkpoint::{CheckpointBarrier, CoordinatorMessage, TaskState};
use crate::metrics::TaskMetrics;
use crate::sink::Sink;
use crate::stream::{Element, Message, Record};
use crate::task::output::Router;

/// How long a sink whose input ended waits for the commit of the checkpoint it
/// acknowledged last: the coordinator sends it at once if the checkpoint completed, and
/// never if the end of the input dropped it.
const LAST_COMMIT_WAIT: std::time::Duration = std::time::Duration::from_millis(50);
/// How often a sink flushes buffered output while records keep coming.
const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

pub struct SinkTask {
    pub uid: Arc<str>,
    pub sink: Box<dyn Sink>,
    pub inputs: Inputs,
    pub metrics: Arc<TaskMetrics>,
    pub checkpointing: Option<Checkpointing>,
    /// The sink's last checkpoint state asked for its commits to be recorded.
    pub records_commits: bool,
    /// The last checkpoint this sink acknowledged, until it is committed.
    pub uncommitted: Option<u64>,
    /// The unaligned checkpoint whose acknowledgement waits for the data its barriers
    /// overtook, with the sink's state for it.
    pub awaiting_channels: Option<(u64, TaskState)>,
    /// A cluster task's right to write: output waits while it is not confirmed, and is
    /// dropped once it is revoked (another member runs the task).
    pub lease: Option<Arc<crate::ownership::Lease>>,
    /// The `dlq` output and its port, if the job routes one: records the sink's
    /// target refused go there, ahead of the barrier of the checkpoint they fall in.
    pub dead_letters: Option<(Router, usize)>,
}

impl SinkTask {
    pub fn run(mut self) -> Result<(), TaskError> {
        // End-to-end latency (source read to sink write), in microseconds.
        let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
        let result = self.run_loop(&mut latency);
        self.metrics.set_latency(latency);
        match result {
            // The input ended: everything received becomes visible, after the commit of
            // a checkpoint acknowledged just before the end, if it comes soon (so that
            // its commit is recorded beside it).
            Ok(true) => {
                self.await_last_commit(LAST_COMMIT_WAIT)?;
                self.sink.finish()?;
                self.forward_rejected()?;
                if let Some((router, _)) = &mut self.dead_letters {
                    let _ = router.broadcast(&Message::EndOfData);
                }
            }
            // The job is stopping: commits already decided are made (a stop with
            // savepoint commits up to the savepoint), what was received is flushed, and
            // a transactional sink keeps the rest pending until a restore decides.
            Ok(false) => {
                self.serve_commits()?;
                self.sink.flush()?;
                self.forward_rejected()?;
                if let Some((router, _)) = &mut self.dead_letters {
                    let _ = router.flush();
                }
            }
            Err(e) => {
                self.sink.abort();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Serves commits until the last checkpoint this sink acknowledged is committed, for
    /// at most `wait` (the coordinator may instead have dropped it).
    fn await_last_commit(&mut self, wait: std::time::Duration) -> Result<(), TaskError> {
        let deadline = std::time::Instant::now() + wait;
        self.serve_commits()?;
        while self.uncommitted.is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
            self.serve_commits()?;
        }
        Ok(())
    }

    /// Commits the checkpoints the coordinator reports complete.
    fn serve_commits(&mut self) -> Result<(), TaskError> {
        let Some(commands) = self.checkpointing.as_ref().and_then(|c| c.commands.as_ref()) else {
            return Ok(());
        };
        while let Ok(command) = commands.try_recv() {
            if let Command::Commit(id) = command {
                self.uncommitted = self.uncommitted.filter(|acked| *acked > id);
                self.sink.commit(id)?;
                if self.records_commits {
                    let cp = self.checkpointing.as_ref().expect("commands come with checkpointing");
                    if let Err(e) = CheckpointStorage::new(cp.root.clone()).record_commit(id, &cp.task) {
                        // Recovery then restores an earlier checkpoint: duplicates, no loss.
                        tracing::warn!(uid = %self.uid, checkpoint = id, error = %e, "cannot record the commit");
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends what the sink refused to the `dlq` output, as dead letters.
    fn forward_rejected(&mut self) -> Result<(), TaskError> {
        let Some((router, port)) = &mut self.dead_letters else { return Ok(()) };
        let rejected = self.sink.take_rejected();
        if rejected.is_empty() {
            return Ok(());
        }
        self.metrics.add_dead_lettered(rejected.len() as u64);
        // Where a dead letter came from, for errors downstream: the sink, not the input.
        let at = format!("sink `{}`", self.uid);
        let position = crate::stream::Position {
            source: crate::stream::Label::intern(&at),
            unit: crate::stream::Label::at(),
            offset: 0,
        };
        for (event, reason) in rejected {
            let letter = event.into_dead_letter(&self.uid, &at, &reason);
            if router.send(*port, Record { event: letter, position, key_group: 0, ingested: None }).is_err() {
                // Downstream is gone: the job is stopping.
                return Ok(());
            }
        }
        let _ = router.flush();
        Ok(())
    }

    /// Phase one of the sink's commit, once the barrier arrived on every open input
    /// (or on the first, unaligned: then the acknowledgement waits for the data the
    /// barriers overtook, [`SinkTask::channel_state`]).
    fn pre_commit(&mut self, barrier: CheckpointBarrier, unaligned: bool) -> Result<(), TaskError> {
        let id = barrier.id;
        if self.checkpointing.is_none() {
            return Ok(());
        }
        let pre_committed = self.sink.pre_commit(id);
        // What the sink refused up to the barrier belongs to this checkpoint: it goes
        // ahead of the barrier, which the `dlq` output passes on.
        self.forward_rejected()?;
        if let Some((router, _)) = &mut self.dead_letters {
            let _ = router.broadcast(&Message::Barrier(barrier.clone()));
        }
        let Some(cp) = &self.checkpointing else { return Ok(()) };
        let message = match pre_committed {
            Ok(state) => {
                self.records_commits = requires_commit_record(&state);
                let state = TaskState::Sink { state, channel_state: None };
                if unaligned {
                    self.awaiting_channels = Some((id, state));
                    return Ok(());
                }
                self.uncommitted = Some(id);
                CoordinatorMessage::Ack { id, task: cp.task.clone(), state }
            }
            Err(e) => CoordinatorMessage::Decline { id, task: cp.task.clone(), reason: e.to_string() },
        };
        let _ = cp.coordinator.send(message);
        Ok(())
    }

    /// The data unaligned checkpoint `id`'s barriers overtook: written beside the
    /// sink's state, which is then acknowledged.
    fn channel_state(&mut self, id: u64, in_flight: ChannelState) {
        let Some(cp) = &self.checkpointing else { return };
        let Some((_, mut state)) = self.awaiting_channels.take_if(|(awaited, _)| *awaited == id) else { return };
        let relative = format!("{}/{}/channels.ent", CheckpointStorage::checkpoint_dir(id), cp.task);
        let message = match in_flight.write(&cp.root, &relative) {
            Ok(file) => {
                let TaskState::Sink { channel_state, .. } = &mut state else { unreachable!("a sink's state") };
                *channel_state = file;
                self.uncommitted = Some(id);
                CoordinatorMessage::Ack { id, task: cp.task.clone(), state }
            }
            Err(reason) => CoordinatorMessage::Decline { id, task: cp.task.clone(), reason },
        };
        let _ = cp.coordinator.send(message);
    }

    /// Returns whether the input ended (rather than the job stopping).
    fn run_loop(&mut self, latency: &mut Histogram<u64>) -> Result<bool, TaskError> {
        // No cancel check here: when the job stops, upstream tasks end and drop their
        // channels, and the sink first writes everything they had already sent.
        let mut last_flush = std::time::Instant::now();
        loop {
            self.serve_commits()?;
            match self.inputs.next(POLL_INTERVAL) {
                Next::Message(input, Message::Batch(batch)) => {
                    if self.lease.as_ref().is_some_and(|lease| !lease.wait_valid()) {
                        tracing::info!(uid = %self.uid, "fenced: the task moved to another member; dropping its output");
                        return Ok(false);
                    }
                    for element in &batch.elements {
                        let Element::Record(record) = element else { continue };
                        self.sink.write(&record.event)?;
                        if let Some(ingested) = record.ingested {
                            latency.saturating_record(ingested.elapsed().as_micros() as u64);
                        }
                    }
                    self.metrics.add_in(batch.records as u64);
                    self.forward_rejected()?;
                    // Written: the events go back to their producer to be filled again.
                    self.inputs.recycle_batch(input, batch);
                    // One clock read per batch paces the flushes: buffered output
                    // reaches the file at least every FLUSH_INTERVAL.
                    let now = std::time::Instant::now();
                    if now.duration_since(last_flush) >= FLUSH_INTERVAL {
                        self.sink.flush_periodically()?;
                        last_flush = now;
                    }
                }
                Next::Timeout => {
                    self.sink.flush_periodically()?;
                    self.forward_rejected()?;
                    last_flush = std::time::Instant::now();
                }
                Next::Barrier { barrier, unaligned } => self.pre_commit(barrier, unaligned)?,
                Next::ChannelState(id, in_flight) => self.channel_state(id, in_flight),
                Next::Message(_, Message::EndOfData | Message::Barrier(_)) => {}
                Next::Ended => {
                    if let Some(cp) = &self.checkpointing {
                        let _ = cp.coordinator.send(CoordinatorMessage::Finished { task: cp.task.clone(), state: None });
                    }
                    return Ok(true);
                }
                Next::Disconnected => return Ok(false),
            }
        }
    }
}
