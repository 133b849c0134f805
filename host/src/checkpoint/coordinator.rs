//! The checkpoint coordinator: triggers checkpoints at the sources, collects every
//! task's acknowledgement, writes the metadata, tells sinks to commit, and fails the
//! job after too many declined checkpoints in a row.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::{CheckpointMetadata, CheckpointSettings, CheckpointStorage, CoordinatorMessage, TaskState};
use crate::task::{JobControl, TaskError};

/// What the coordinator asks of a source or a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Sources: inject barrier `id` now.
    Trigger(u64),
    /// Sinks: checkpoint `id` is complete; make its output visible.
    Commit(u64),
}

struct Pending {
    id: u64,
    started: Instant,
    acks: BTreeMap<String, TaskState>,
}

/// The coordinator's side of the channels; consumed by [`Coordinator::start`].
pub struct Coordinator {
    pub settings: CheckpointSettings,
    pub storage: CheckpointStorage,
    pub job: String,
    pub inbox: Receiver<CoordinatorMessage>,
    pub sources: Vec<Sender<Command>>,
    pub sinks: Vec<Sender<Command>>,
    /// How many tasks must acknowledge a checkpoint.
    pub tasks: usize,
    /// The id of the checkpoint the job was restored from (new ids follow it).
    pub last_id: u64,
    pub control: Arc<JobControl>,
}

/// A running coordinator.
pub struct CoordinatorHandle {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl CoordinatorHandle {
    /// Stops the coordinator; returns the id of the last completed checkpoint.
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

impl Coordinator {
    pub fn start(self) -> std::io::Result<CoordinatorHandle> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("checkpoint-coordinator".into())
            .spawn(move || self.run(&flag))?;
        Ok(CoordinatorHandle { stop, thread })
    }

    fn run(self, stop: &AtomicBool) -> u64 {
        let interval = Duration::from_millis(self.settings.interval_ms.max(1));
        let timeout = Duration::from_millis(self.settings.timeout_ms);
        let min_pause = Duration::from_millis(self.settings.min_pause_ms);
        let mut next_id = self.last_id + 1;
        let mut completed = self.last_id;
        let mut pending: Option<Pending> = None;
        let mut next_trigger = Instant::now() + interval;
        let mut failures = 0u32;
        let mut finished = false;
        while !stop.load(Ordering::Relaxed) && !self.control.is_cancelled() {
            let wait = next_trigger.saturating_duration_since(Instant::now()).min(Duration::from_millis(20));
            match self.inbox.recv_timeout(wait) {
                Ok(CoordinatorMessage::Ack { id, task, state }) => {
                    let Some(p) = pending.as_mut().filter(|p| p.id == id) else { continue };
                    p.acks.insert(task, state);
                    if p.acks.len() == self.tasks {
                        let p = pending.take().expect("present");
                        match self.complete(p) {
                            Ok(id) => {
                                completed = id;
                                failures = 0;
                            }
                            Err(reason) => failures = self.declined(id, &reason, failures + 1),
                        }
                        next_trigger = (Instant::now() + min_pause).max(next_trigger);
                    }
                }
                Ok(CoordinatorMessage::Decline { id, task, reason }) => {
                    if pending.as_ref().is_some_and(|p| p.id == id) {
                        pending = None;
                        failures = self.declined(id, &format!("task {task}: {reason}"), failures + 1);
                        next_trigger = (Instant::now() + min_pause).max(next_trigger);
                    }
                }
                Ok(CoordinatorMessage::Finished { task }) => {
                    // As in Flink before FLIP-147: once a task has finished, no further
                    // checkpoint can complete, so none is started.
                    if !finished {
                        tracing::debug!(%task, "a task finished; no further checkpoints");
                    }
                    finished = true;
                    pending = None;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if let Some(p) = &pending {
                if p.started.elapsed() > timeout {
                    let id = p.id;
                    pending = None;
                    failures = self.declined(id, &format!("not complete after {timeout:?}"), failures + 1);
                }
            }
            if pending.is_none() && !finished && Instant::now() >= next_trigger {
                let id = next_id;
                next_id += 1;
                tracing::debug!(checkpoint = id, "triggering");
                pending = Some(Pending { id, started: Instant::now(), acks: BTreeMap::new() });
                for source in &self.sources {
                    let _ = source.send(Command::Trigger(id));
                }
                next_trigger = Instant::now() + interval;
            }
        }
        completed
    }

    fn complete(&self, pending: Pending) -> Result<u64, String> {
        let metadata = CheckpointMetadata {
            format: 1,
            job: self.job.clone(),
            id: pending.id,
            created_ms: crate::clock::now_ms(),
            tasks: pending.acks,
        };
        self.storage
            .write_metadata(&metadata)
            .map_err(|e| format!("writing metadata under {}: {e}", self.storage.root().display()))?;
        for sink in &self.sinks {
            let _ = sink.send(Command::Commit(pending.id));
        }
        self.storage.retain(self.settings.retained);
        tracing::info!(
            checkpoint = pending.id,
            duration_ms = pending.started.elapsed().as_millis() as u64,
            "checkpoint complete"
        );
        Ok(pending.id)
    }

    /// Counts a declined checkpoint; fails the job past the tolerable number.
    fn declined(&self, id: u64, reason: &str, failures: u32) -> u32 {
        tracing::warn!(checkpoint = id, failures, %reason, "checkpoint declined");
        if failures > self.settings.tolerable_failures {
            self.control.fail(TaskError::Checkpoint(format!(
                "{failures} checkpoints in a row failed (tolerable_failures = {}); last: checkpoint {id}: {reason}",
                self.settings.tolerable_failures
            )));
        }
        failures
    }
}
