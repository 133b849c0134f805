//! The source task: polls a source, stamps positions, generates watermarks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::output::{RouteError, Router};
use super::{JobControl, POLL_INTERVAL, TaskError};
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
}

impl SourceTask {
    pub fn run(mut self) -> Result<(), TaskError> {
        let label = self.source.label();
        let unit = self.source.unit();
        let mut watermarks = BoundedOutOfOrderness::new(self.strategy.max_out_of_orderness_ms);
        let idle_timeout = Duration::from_millis(self.strategy.idle_timeout_ms);
        let mut last_record = Instant::now();
        let mut idle = false;
        loop {
            if self.control.is_cancelled() {
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
                    let _ = self.broadcast(Message::EndOfData);
                    return Ok(());
                }
            }
        }
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
