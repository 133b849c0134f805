//! # Tasks
//!
//! Every source, every operator subtask and every sink runs as a task on its own
//! thread, connected by bounded channels: a slow consumer blocks its producers, so
//! back-pressure reaches the sources and memory stays bounded.

pub mod inputs;
pub mod operator;
pub mod output;
pub mod sink;
pub mod source;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::operator::OperatorFailure;
use crate::sink::SinkError;
use crate::source::SourceError;

/// How long a blocked task waits before looking at the cancel flag again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A task failure, which stops the job.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("operator `{uid}` subtask {subtask} failed while {during}: {failure}")]
    Operator { uid: String, subtask: u32, during: String, failure: OperatorFailure },
    #[error(
        "{position}: {reason} (source `{uid}`; set on_error = \"skip\" in the job file to \
         skip such input)"
    )]
    MalformedInput { uid: String, position: String, reason: String },
    #[error(
        "`{from}` sent an event without a key on the keyed edge to `{to}` ({position}); \
         give the events a key (e.g. the source's key_field) or set on_error = \"skip\""
    )]
    MissingKey { from: String, to: String, position: String },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Shared by every task of a job: the cancel flag and the first failure.
#[derive(Default)]
pub struct JobControl {
    cancelled: AtomicBool,
    failure: Mutex<Option<TaskError>>,
}

impl JobControl {
    /// Asks every task to stop (Ctrl-C, or a failure elsewhere).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Records a failure (the first one wins) and stops the job.
    pub fn fail(&self, error: TaskError) {
        tracing::info!(error = %error, "task failed; stopping the job");
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure.get_or_insert(error);
        self.cancel();
    }

    /// Records a bug in weir itself.
    pub fn fail_internal(&self, message: &str) {
        self.fail(TaskError::Internal(message.into()));
    }

    /// The first failure, if any.
    pub fn take_failure(&self) -> Option<TaskError> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}
