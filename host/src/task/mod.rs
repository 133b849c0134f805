//! # Tasks
//!
//! Every source, every operator subtask and every sink runs as a task on its own
//! thread, connected by channels bounded in messages and in bytes ([`channel`]): a slow
//! consumer blocks its producers, so back-pressure reaches the sources and memory stays
//! bounded. Records travel in batches ([`output`]).

pub mod channel;
pub mod harness;
pub mod inputs;
pub mod migration;
pub mod operator;
pub mod output;
pub mod sink;
pub mod source;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::checkpoint::CoordinatorMessage;
use crate::checkpoint::coordinator::Command;
use crate::error::{Domain, Retry};
use crate::operator::OperatorFailure;
use crate::sink::SinkError;
use crate::source::SourceError;

/// How long a blocked task waits before looking at the cancel flag again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A task's link to the checkpoint coordinator.
pub struct Checkpointing {
    /// The task's id in checkpoints (`uid#subtask`).
    pub task: String,
    /// Where acknowledgements go.
    pub coordinator: Sender<CoordinatorMessage>,
    /// Triggers (sources) or commits (sinks) from the coordinator.
    pub commands: Option<Receiver<Command>>,
    /// The checkpoint root directory.
    pub root: PathBuf,
}

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
    #[error("checkpointing failed: {0}")]
    Checkpoint(String),
    /// Another process took the job's checkpoints over: this one must stop writing.
    #[error("{0}")]
    Fenced(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl TaskError {
    /// Whose failure this is (see [`crate::error`]).
    pub fn domain(&self) -> Domain {
        match self {
            TaskError::Operator { failure: OperatorFailure::State(_), .. } => Domain::External,
            TaskError::Operator { .. } | TaskError::MalformedInput { .. } | TaskError::MissingKey { .. } => Domain::User,
            TaskError::Source(_) | TaskError::Sink(_) | TaskError::Checkpoint(_) | TaskError::Fenced(_) => {
                Domain::External
            }
            TaskError::Internal(_) => Domain::Internal,
        }
    }

    /// The node that failed, when one did.
    pub fn node(&self) -> Option<&str> {
        match self {
            TaskError::Operator { uid, .. } | TaskError::MalformedInput { uid, .. } => Some(uid),
            TaskError::MissingKey { from, .. } => Some(from),
            TaskError::Source(e) => Some(&e.uid),
            TaskError::Sink(e) => Some(&e.uid),
            TaskError::Checkpoint(_) | TaskError::Fenced(_) | TaskError::Internal(_) => None,
        }
    }

    /// A short name of what went wrong, for metrics labels (`trap`, `deadline`, ...).
    pub fn cause(&self) -> &'static str {
        match self {
            TaskError::Operator { failure, .. } => match failure {
                OperatorFailure::Returned(_) => "error",
                OperatorFailure::Trapped(_) => "trap",
                OperatorFailure::Contract(_) => "contract",
                OperatorFailure::Deadline { .. } => "deadline",
                OperatorFailure::Interrupted => "interrupted",
                OperatorFailure::OutOfMemory { .. } => "out-of-memory",
                OperatorFailure::State(_) => "state",
            },
            TaskError::MalformedInput { .. } => "malformed-input",
            TaskError::MissingKey { .. } => "missing-key",
            TaskError::Source(_) => "source",
            TaskError::Sink(_) => "sink",
            TaskError::Checkpoint(_) => "checkpoint",
            TaskError::Fenced(_) => "fenced",
            TaskError::Internal(_) => "internal",
        }
    }

    /// Whether restarting from the last checkpoint could get past this failure.
    pub fn retry(&self) -> Retry {
        match self {
            // The operator decided, or broke the contract: the same element does it again.
            TaskError::Operator { failure: OperatorFailure::Returned(_) | OperatorFailure::Contract(_), .. }
            | TaskError::MalformedInput { .. }
            | TaskError::MissingKey { .. }
            // A restart would write the checkpoints the new owner writes.
            | TaskError::Fenced(_) => Retry::Never,
            _ => Retry::Restart,
        }
    }
}

/// Shared by every task of a job: the stop flags and the first failure.
#[derive(Default)]
pub struct JobControl {
    /// The user asked the job to stop (Ctrl-C): no restart.
    stopped: AtomicBool,
    /// The current attempt is being torn down (a failure elsewhere).
    cancelled: AtomicBool,
    failure: Mutex<Option<TaskError>>,
    /// Set with `stopped` or `cancelled`: shared with every operator context, so that
    /// guest calls in progress are interrupted instead of waited for.
    interrupt: Arc<AtomicBool>,
}

impl JobControl {
    /// Stops the job for good (Ctrl-C): tasks stop and the job does not restart.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.interrupt.store(true, Ordering::Relaxed);
    }

    /// The flag that interrupts guest calls when the job stops or the attempt is torn
    /// down ([`crate::operator::OperatorContext::interrupt`]).
    pub fn interrupt(&self) -> Arc<AtomicBool> {
        self.interrupt.clone()
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Tears down the current attempt (a failure, or a task that lost its peers).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
        self.interrupt.store(true, Ordering::Relaxed);
    }

    /// Whether tasks should stop now.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed) || self.is_stopped()
    }

    /// Clears the failure and cancellation of a finished attempt, before a restart.
    pub fn reset(&self) {
        self.cancelled.store(false, Ordering::Relaxed);
        self.interrupt.store(self.is_stopped(), Ordering::Relaxed);
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).take();
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

impl crate::checkpoint::coordinator::JobLifecycle for JobControl {
    fn is_cancelled(&self) -> bool {
        JobControl::is_cancelled(self)
    }

    fn stop(&self) {
        JobControl::stop(self)
    }

    fn fail_checkpointing(&self, reason: String) {
        self.fail(TaskError::Checkpoint(reason))
    }

    fn fence(&self, reason: String) {
        self.fail(TaskError::Fenced(reason))
    }
}
