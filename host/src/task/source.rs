//! The source task: polls a source, stamps positions, generates per-split watermarks,
//! and injects checkpoint barriers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::output::{RouteError, Router};
use super::{Checkpointing, JobControl, POLL_INTERVAL, TaskError};
use crate::checkpoint::coordinator::Command;
use crate::checkpoint::{CoordinatorMessage, TaskState};
use crate::metrics::TaskMetrics;
use crate::error::ErrorPolicy;
use crate::source::{Source, SourcePoll};
use crate::stream::{LATENCY_SAMPLE, Label, Message, Position, Record, Spares};
use crate::watermark::{MAX_WATERMARK, SplitWatermarks, Watermark, WatermarkStrategy};

/// How many records the source reads between looks at the batch timeout.
const FLUSH_CHECK_EVERY: i64 = 64;

/// The interned label of each split the source has read from.
#[derive(Default)]
struct SplitLabels {
    labels: Vec<(u32, Label)>,
}

impl SplitLabels {
    fn get(&mut self, source: &dyn Source, split: u32) -> Label {
        if let Some((_, label)) = self.labels.iter().find(|(s, _)| *s == split) {
            return *label;
        }
        let label = Label::intern(&source.split_label(split));
        self.labels.push((split, label));
        label
    }
}

pub struct SourceTask {
    pub uid: Arc<str>,
    pub source: Box<dyn Source>,
    pub strategy: WatermarkStrategy,
    pub router: Router,
    pub metrics: Arc<TaskMetrics>,
    pub control: Arc<JobControl>,
    pub on_error: ErrorPolicy,
    /// The router port of the `dlq` output, if the job routes one: malformed records
    /// go there as dead letters instead of to `on_error`.
    pub dead_letters: Option<usize>,
    pub checkpointing: Option<Checkpointing>,
    /// The largest timestamps per split at the restored checkpoint.
    pub restored_max_timestamps: BTreeMap<u32, i64>,
    /// Records read and sent, not yet added to `metrics`.
    pub counted: (u64, u64),
}

impl SourceTask {
    pub fn run(mut self) -> Result<(), TaskError> {
        let result = self.run_loop();
        // Records already read still go downstream when the source stops or fails.
        let _ = self.router.flush();
        self.publish_counts();
        result
    }

    /// Adds the records counted since the last call to the shared metrics (an atomic
    /// add per record would cost more than the rest of reading a generated record).
    fn publish_counts(&mut self) {
        let (read, sent) = std::mem::take(&mut self.counted);
        self.metrics.add_in(read);
        self.metrics.add_out(sent);
        self.metrics.set_pending(self.source.pending());
    }

    fn run_loop(&mut self) -> Result<(), TaskError> {
        let unit = Label::intern(self.source.unit());
        let mut watermarks = SplitWatermarks::new(&self.strategy);
        watermarks.restore(&self.restored_max_timestamps);
        // Positions of checkpoints in flight, for `checkpoint_complete`.
        let mut in_flight: BTreeMap<u64, serde_json::Value> = BTreeMap::new();
        let mut labels = SplitLabels::default();
        let mut polled_records: i64 = 0;
        // Events the consumers handed back, for the source to fill (see `Spares`).
        let mut spares = Spares::default();
        loop {
            if self.control.is_cancelled() {
                return Ok(());
            }
            // A barrier that pauses the sources ends with the job stopping: then nothing
            // more may be read (stop with savepoint emits nothing after the barrier).
            if self.serve_commands(&watermarks, &mut in_flight).is_err() || self.control.is_cancelled() {
                return Ok(());
            }
            // Not on every poll while nothing comes back (downstream logic that keeps
            // or drops its input): a look takes a lock per output channel.
            if spares.is_empty() && polled_records % FLUSH_CHECK_EVERY == 0 {
                self.router.collect_spares(&mut spares, Spares::MAX_EVENTS / 2);
            }
            let polled = self.source.poll_reusing(&mut spares)?;
            if let SourcePoll::Record { .. } | SourcePoll::Malformed { .. } | SourcePoll::DeadLettered { .. } = &polled {
                self.counted.0 += 1;
            }
            match polled {
                SourcePoll::Record { event, offset, split } => {
                    let timestamp = event.timestamp;
                    let position = Position { source: labels.get(self.source.as_ref(), split), unit, offset };
                    // Latency is measured on a sample of records (no clock read per record).
                    let ingested = (polled_records % LATENCY_SAMPLE == 0).then(Instant::now);
                    polled_records += 1;
                    let record = Record { event, position, key_group: 0, ingested };
                    match self.router.send(0, record) {
                        Ok(_) => self.counted.1 += 1,
                        Err(RouteError::Disconnected) => return Ok(()),
                        Err(RouteError::MissingKey { to }) => {
                            self.skip_or_fail(TaskError::MissingKey {
                                from: self.uid.to_string(),
                                to: to.to_string(),
                                position: position.to_string(),
                            })?;
                        }
                    }
                    if let Some(watermark) = watermarks.on_record(split, timestamp) {
                        self.router.watermark(watermark);
                    }
                    if polled_records % FLUSH_CHECK_EVERY == 0 {
                        self.publish_counts();
                        if self.router.flush_if_due().is_err() {
                            return Ok(());
                        }
                        // Back-pressure: wait for room here, serving the coordinator,
                        // rather than inside a send, so that barriers are not held up.
                        while self.router.is_backpressured() && !self.control.is_cancelled() {
                            if self.serve_commands(&watermarks, &mut in_flight).is_err() {
                                return Ok(());
                            }
                            self.router.wait_for_room(POLL_INTERVAL / 10);
                        }
                    }
                }
                SourcePoll::Malformed { offset, split, reason, record } => {
                    let position = Position { source: labels.get(self.source.as_ref(), split), unit, offset };
                    if let Some(port) = self.dead_letters {
                        let letter = record.into_dead_letter(&self.uid, &position.to_string(), &reason);
                        match self.router.send(port, Record { event: letter, position, key_group: 0, ingested: None }) {
                            Ok(_) => self.metrics.add_dead_lettered(1),
                            Err(RouteError::Disconnected) => return Ok(()),
                            Err(RouteError::MissingKey { to }) => {
                                return Err(TaskError::MissingKey {
                                    from: self.uid.to_string(),
                                    to: to.to_string(),
                                    position: position.to_string(),
                                });
                            }
                        }
                        continue;
                    }
                    let position = position.to_string();
                    self.skip_or_fail(TaskError::MalformedInput {
                        uid: self.uid.to_string(),
                        position,
                        reason,
                    })?;
                }
                SourcePoll::DeadLettered { .. } => self.metrics.add_skipped(1),
                SourcePoll::Pending(wait) => {
                    for split in self.source.splits() {
                        watermarks.add_split(split);
                    }
                    if let Some(watermark) = watermarks.on_tick() {
                        self.router.watermark(watermark);
                    }
                    // Nothing more is ready: what was read so far goes now.
                    self.publish_counts();
                    if self.router.flush().is_err() {
                        return Ok(());
                    }
                    std::thread::sleep(wait.min(POLL_INTERVAL));
                }
                SourcePoll::End => {
                    if let Some(cp) = &self.checkpointing {
                        let state = TaskState::Source {
                            position: self.source.position(),
                            max_timestamps: watermarks.max_timestamps(),
                        };
                        let _ = cp.coordinator.send(CoordinatorMessage::Finished { task: cp.task.clone(), state: Some(state) });
                    }
                    if self.checkpointing.as_ref().is_some_and(|cp| cp.commands.is_some()) {
                        // As Flink since FLIP-147: checkpoints go on until every task has
                        // processed everything. Event time ends now (timers fire
                        // downstream); end of data waits for the coordinator, while this
                        // task goes on injecting barriers at its end position.
                        self.router.watermark(Watermark::EventTime(MAX_WATERMARK));
                        if self.router.flush().is_err() {
                            return Ok(());
                        }
                        loop {
                            if self.control.is_cancelled() {
                                return Ok(());
                            }
                            match self.serve_commands(&watermarks, &mut in_flight) {
                                Err(_) => return Ok(()),
                                Ok(true) => break,
                                Ok(false) => self.wait_for_command(POLL_INTERVAL),
                            }
                        }
                    }
                    let _ = self.broadcast(Message::EndOfData);
                    return Ok(());
                }
            }
        }
    }

    /// Serves the coordinator: a trigger saves the position and then sends the barrier,
    /// so that every record before the barrier is covered by the saved position; a
    /// completed checkpoint is reported to the source (Kafka commits its offsets).
    /// Returns whether the coordinator let the ended source finish.
    fn serve_commands(
        &mut self,
        watermarks: &SplitWatermarks,
        in_flight: &mut BTreeMap<u64, serde_json::Value>,
    ) -> Result<bool, RouteError> {
        let Some(commands) = self.checkpointing.as_ref().and_then(|c| c.commands.as_ref()) else {
            return Ok(false);
        };
        if commands.is_empty() {
            return Ok(false);
        }
        let mut finish = false;
        // A handle of our own, as serving a command needs `self` mutably.
        let commands = commands.clone();
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Trigger(barrier) => {
                    let id = barrier.id;
                    if let Err(e) = self.source.prepare_checkpoint() {
                        // Without its barrier the checkpoint cannot complete; declining
                        // says why at once.
                        tracing::warn!(uid = %self.uid, checkpoint = id, error = %e, "declining checkpoint");
                        if let Some(cp) = &self.checkpointing {
                            let reason = e.to_string();
                            let _ = cp.coordinator.send(CoordinatorMessage::Decline { id, task: cp.task.clone(), reason });
                        }
                        continue;
                    }
                    let position = self.source.position();
                    in_flight.insert(id, position.clone());
                    let state = TaskState::Source { position, max_timestamps: watermarks.max_timestamps() };
                    if let Some(cp) = &self.checkpointing {
                        let _ = cp.coordinator.send(CoordinatorMessage::Ack { id, task: cp.task.clone(), state });
                    }
                    let pause = barrier.kind.pauses_sources();
                    self.router.barrier(&barrier)?;
                    if pause {
                        // Emit nothing after a stop-with-savepoint barrier, and hold
                        // still while an upgraded operator swaps its component.
                        while !self.control.is_cancelled() {
                            match commands.recv_timeout(POLL_INTERVAL) {
                                Ok(Command::Resume(resumed)) if resumed == id => break,
                                Ok(Command::Commit(done)) => self.complete(done, in_flight),
                                _ => {}
                            }
                        }
                    }
                }
                Command::Commit(id) => self.complete(id, in_flight),
                Command::Finish => finish = true,
                Command::Resume(_) | Command::UpgradeDone { .. } | Command::Install { .. } => {}
            }
        }
        Ok(finish)
    }

    /// Waits, at most `timeout`, until the coordinator has sent a command.
    fn wait_for_command(&self, timeout: std::time::Duration) {
        if let Some(commands) = self.checkpointing.as_ref().and_then(|c| c.commands.as_ref()) {
            let mut select = crossbeam_channel::Select::new();
            select.recv(commands);
            let _ = select.ready_timeout(timeout);
        }
    }

    fn complete(&mut self, id: u64, in_flight: &mut BTreeMap<u64, serde_json::Value>) {
        if let Some(position) = in_flight.remove(&id) {
            self.source.checkpoint_complete(&position);
        }
        in_flight.retain(|older, _| *older > id);
    }

    fn broadcast(&mut self, message: Message) -> Result<(), RouteError> {
        self.router.broadcast(&message)
    }

    fn skip_or_fail(&self, error: TaskError) -> Result<(), TaskError> {
        match self.on_error {
            ErrorPolicy::Fail => Err(error),
            ErrorPolicy::Skip => {
                tracing::warn!(source = %self.uid, error = %error, "skipping input");
                self.metrics.add_skipped(1);
                Ok(())
            }
        }
    }
}
