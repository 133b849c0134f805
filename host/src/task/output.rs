//! Routing a task's output to the subtasks downstream.

use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::job::spec::Partitioning;
use crate::keygroup::{assign_key_group, subtask_for_key_group};
use crate::stream::{Message, Record};

/// Why a record could not be routed.
#[derive(Debug)]
pub enum RouteError {
    /// A downstream task is gone: the job is stopping.
    Disconnected,
    /// A keyed edge received an event without a key.
    MissingKey { to: Arc<str> },
}

/// One edge leaving one upstream subtask.
pub struct EdgeOutput {
    pub to: Arc<str>,
    pub partitioning: Partitioning,
    /// One sender per downstream subtask (just the one for a forward edge).
    pub senders: Vec<Sender<Message>>,
    pub max_parallelism: u32,
    next: usize,
}

impl EdgeOutput {
    pub fn new(
        to: Arc<str>,
        partitioning: Partitioning,
        senders: Vec<Sender<Message>>,
        max_parallelism: u32,
        first: usize,
    ) -> Self {
        EdgeOutput { to, partitioning, senders, max_parallelism, next: first }
    }

    fn target(&mut self, record: &Record) -> Result<usize, RouteError> {
        Ok(match self.partitioning {
            Partitioning::Forward => 0,
            Partitioning::Keyed => {
                let key = record
                    .event
                    .key
                    .as_deref()
                    .ok_or_else(|| RouteError::MissingKey { to: self.to.clone() })?;
                let kg = assign_key_group(key, self.max_parallelism);
                subtask_for_key_group(kg, self.max_parallelism, self.senders.len() as u32) as usize
            }
            Partitioning::Rebalance => {
                self.next = (self.next + 1) % self.senders.len();
                self.next
            }
        })
    }
}

/// The outputs of a task: port 0 is the main output, ports 1.. the side outputs.
pub struct Router {
    ports: Vec<Vec<EdgeOutput>>,
}

impl Router {
    pub fn new(ports: Vec<Vec<EdgeOutput>>) -> Self {
        Router { ports }
    }

    /// Whether anything consumes `port`.
    pub fn is_routed(&self, port: usize) -> bool {
        self.ports.get(port).is_some_and(|edges| !edges.is_empty())
    }

    /// Sends `record` along every edge of `port`. Returns `false` when nothing
    /// consumes the port (the record is dropped).
    pub fn send(&mut self, port: usize, record: Record) -> Result<bool, RouteError> {
        let Some(edges) = self.ports.get_mut(port).filter(|e| !e.is_empty()) else {
            return Ok(false);
        };
        let last = edges.len() - 1;
        let mut record = Some(record);
        for (i, edge) in edges.iter_mut().enumerate() {
            let target = edge.target(record.as_ref().expect("present"))?;
            let message = if i == last {
                Message::Record(record.take().expect("present"))
            } else {
                Message::Record(record.clone().expect("present"))
            };
            edge.senders[target].send(message).map_err(|_| RouteError::Disconnected)?;
        }
        Ok(true)
    }

    /// Sends a watermark or end-of-data marker to every downstream subtask.
    pub fn broadcast(&self, message: &Message) -> Result<(), RouteError> {
        for sender in self.ports.iter().flatten().flat_map(|e| e.senders.iter()) {
            sender.send(message.clone()).map_err(|_| RouteError::Disconnected)?;
        }
        Ok(())
    }
}
