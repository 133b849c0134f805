//! The source task: polls a source, stamps positions, generates watermarks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::output::{RouteError, Router};
use super::{Checkpointing, JobControl, POLL_INTERVAL, TaskError};
use crate::checkpoint::coordinator::Command;
use crate::checkpoint::{CoordinatorMessage, TaskState};
use crate::job::metrics::TaskMetrics;
use crate::job::spec::ErrorPolicy;
use crate::source::{Source, SourcePoll};
use crate::stream::{Message, Position, Record};
use crate::watermark::{BoundedOutOfOrderness, Watermark, WatermarkStrategy};

pub struct SourceTask {
    pub uid: Arc<str>,
    pub source: Box<dyn Source>,
    pub strategy: WatermarkStrategy,
    pub router: Router,
    pub metrics: Arc<TaskMetrics>,
    pub control: Arc<JobControl>,
    pub on_error: ErrorPolicy,
    pub checkpointing: Option<Checkpointing>,
    /// The watermark generator's largest timestamp at the restored checkpoint.
    pub restored_max_timestamp: Option<i64>,
}

impl SourceTask {
    pub fn run(mut self) -> Result<(), TaskError> {
        let label = self.source.label();
        let unit = self.source.unit();
        let mut watermarks = BoundedOutOfOrderness::new(self.strategy.max_out_of_orderness_ms);
        watermarks.restore(self.restored_max_timestamp);
        let idle_timeout = Duration::from_millis(self.strategy.idle_timeout_ms);
        let mut last_record = Instant::now();
        let mut idle = false;
        loop {
            if self.control.is_cancelled() {
                return Ok(());
            }
            // A barrier that pauses the sources ends with the job stopping: then nothing
            // more may be read (stop with savepoint emits nothing after the barrier).
            if self.checkpoint(&watermarks).is_err() || self.control.is_cancelled() {
                return Ok(());
            }
            match self.source.poll()? {
                SourcePoll::Record { event, offset } => {
                    if idle {
                        idle = false;
                        let current = Watermark::EventTime(watermarks.current());
                        if self.broadcast(Message::Watermark(current)).is_err() {
                            return Ok(());
                        }
                    }
                    self.metrics.add_in(1);
                    let timestamp = event.timestamp;
                    let position = Position { source: label.clone(), unit, offset };
                    let record = Record { event, position, ingested: Instant::now() };
                    match self.router.send(0, record) {
                        Ok(_) => self.metrics.add_out(1),
                        Err(RouteError::Disconnected) => return Ok(()),
                        Err(RouteError::MissingKey { to }) => {
                            let position = Position { source: label.clone(), unit, offset };
                            self.skip_or_fail(TaskError::MissingKey {
                                from: self.uid.to_string(),
                                to: to.to_string(),
                                position: position.to_string(),
                            })?;
                        }
                    }
                    if let Some(wm) = timestamp.and_then(|ts| watermarks.on_event(ts)) {
                        if self.broadcast(Message::Watermark(Watermark::EventTime(wm))).is_err() {
                            return Ok(());
                        }
                    }
                    if !idle_timeout.is_zero() {
                        last_record = Instant::now();
                    }
                }
                SourcePoll::Malformed { offset, reason } => {
                    self.metrics.add_in(1);
                    let position = Position { source: label.clone(), unit, offset }.to_string();
                    self.skip_or_fail(TaskError::MalformedInput {
                        uid: self.uid.to_string(),
                        position,
                        reason,
                    })?;
                }
                SourcePoll::Pending(wait) => {
                    if !idle_timeout.is_zero() && !idle && last_record.elapsed() >= idle_timeout {
                        idle = true;
                        if self.broadcast(Message::Watermark(Watermark::Idle)).is_err() {
                            return Ok(());
                        }
                    }
                    std::thread::sleep(wait.min(POLL_INTERVAL));
                }
                SourcePoll::End => {
                    if let Some(cp) = &self.checkpointing {
                        let _ = cp.coordinator.send(CoordinatorMessage::Finished { task: cp.task.clone() });
                    }
                    let _ = self.broadcast(Message::EndOfData);
                    return Ok(());
                }
            }
        }
    }

    /// Serves checkpoint triggers: saves the position, then sends the barrier, so that
    /// every record before the barrier is covered by the saved position.
    fn checkpoint(&self, watermarks: &BoundedOutOfOrderness) -> Result<(), RouteError> {
        let Some(cp) = &self.checkpointing else { return Ok(()) };
        let Some(commands) = &cp.commands else { return Ok(()) };
        while let Ok(command) = commands.try_recv() {
            let Command::Trigger(barrier) = command else { continue };
            let id = barrier.id;
            let state = TaskState::Source {
                position: self.source.position(),
                max_timestamp: watermarks.max_timestamp(),
            };
            let _ = cp.coordinator.send(CoordinatorMessage::Ack { id, task: cp.task.clone(), state });
            let pause = barrier.kind.pauses_sources();
            self.broadcast(Message::Barrier(barrier))?;
            if pause {
                // Emit nothing after a stop-with-savepoint barrier, and hold still while
                // an upgraded operator swaps its component.
                while !self.control.is_cancelled() {
                    match commands.recv_timeout(POLL_INTERVAL) {
                        Ok(Command::Resume(resumed)) if resumed == id => break,
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    fn broadcast(&self, message: Message) -> Result<(), RouteError> {
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
