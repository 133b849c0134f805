//! # Timers
//!
//! Each operator subtask keeps its timers where its keyed state lives: on the heap for
//! memory state (one ordered set per domain, as Flink's heap timer service; a
//! snapshot shares them until the next change copies them), in a RocksDB database beside the
//! state's for RocksDB state, so that RocksDB holds millions of timers without heap (as
//! Flink's RocksDB backend does with `state.backend.rocksdb.timer-service.factory:
//! ROCKSDB`). A timer is unique per (key, namespace, timestamp, domain), as in Flink:
//! registering it twice fires it once. The namespace scopes a timer within a key the
//! way it scopes state: window operators use the window, guest timers the empty
//! namespace. Event-time timers fire in timestamp order when the watermark reaches
//! them (equal times in a fixed order, see [`Timer`]); processing-time timers fire
//! when the wall clock does.
//!
//! In a store, timers are kept by key group first, then by time, as Flink's key-group
//! partitioned priority queue keeps them: each key group's timers of one domain (and
//! layout) are one run in time order. The service keeps only the head of each run in
//! memory (its first [`RUN_CACHE`] timers; four runs per key group at most), with the
//! runs ordered by their first timer, so that the next due timer is one lookup away,
//! and a snapshot or a restore by key-group range reads the runs as they are.
//!
//! ```text
//! timer:         key group (u16 BE) | tag (0 event, 1 processing) | timestamp | key
//!                key group (u16 BE) | tag (2 event, 3 processing) | timestamp | key len (u32 BE) | key | namespace
//! ```
//!
//! Timers of the empty namespace use the first layout, which checkpoints written before
//! namespaces existed use; the timestamp's sign bit is flipped so that the big-endian
//! bytes sort like the `i64`s. A snapshot's `timers.ent` holds the timers in this
//! order, whatever the store.

mod budget;
mod codec;
mod heap;
mod stored;

use codec::{decode, domain_of};
use heap::{HeapSnapshot, HeapTimers};
use stored::StoredTimers;

use crate::keygroup::assign_key_group;
use crate::state::snapshot::FileEntry;
use crate::state::{SnapshotTarget, SnapshotWriter, StateBackend, StateError};

/// The clock a timer is registered against (the WIT `time-domain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeDomain {
    /// Fires once the operator's watermark reaches the timer's timestamp.
    EventTime,
    /// Fires once the host's wall clock reaches the timer's timestamp.
    ProcessingTime,
}

impl std::fmt::Display for TimeDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeDomain::EventTime => "event-time",
            TimeDomain::ProcessingTime => "processing-time",
        })
    }
}

impl TimeDomain {
    fn index(self) -> usize {
        match self {
            TimeDomain::EventTime => 0,
            TimeDomain::ProcessingTime => 1,
        }
    }
}

/// A timer that is due: its time, the key it is scoped to and its namespace.
///
/// Timers are ordered as they fire: by time; of equal times, timers without a
/// namespace first, in key order, then the others by key length, key and namespace
/// (the order of the stored layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    pub timestamp: i64,
    pub key: Vec<u8>,
    pub namespace: Vec<u8>,
}

impl Timer {
    /// The fields that order timers of equal time after the time.
    fn rank(&self) -> (bool, usize) {
        let scoped = !self.namespace.is_empty();
        (scoped, if scoped { self.key.len() } else { 0 })
    }
}

impl Ord for Timer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.timestamp, self.rank(), &self.key, &self.namespace).cmp(&(
            other.timestamp,
            other.rank(),
            &other.key,
            &other.namespace,
        ))
    }
}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Which timer budget a registration would have broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverBudget {
    Total,
    PerKey,
}

/// The timers of one operator subtask.
pub struct TimerService(Timers);

enum Timers {
    /// On the heap (memory state).
    Heap(HeapTimers),
    /// In a byte-keyed store (RocksDB state).
    Stored(StoredTimers),
}

impl std::fmt::Debug for TimerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerService")
            .field("store", &self.store_name())
            .field("event_time", &self.len(TimeDomain::EventTime))
            .field("processing_time", &self.len(TimeDomain::ProcessingTime))
            .finish()
    }
}

impl TimerService {
    /// Timers on the heap (the memory state backend).
    pub fn in_memory(max_parallelism: u32) -> Self {
        TimerService(Timers::Heap(HeapTimers::new(max_parallelism)))
    }

    /// Timers kept in `store` (a RocksDB database, for the RocksDB state backend),
    /// which may hold timers already (a reopened store).
    pub fn new(max_parallelism: u32, store: Box<dyn StateBackend>) -> Result<Self, StateError> {
        Ok(TimerService(Timers::Stored(StoredTimers::new(max_parallelism, store)?)))
    }

    /// `memory` or `rocksdb`: where the timers live.
    pub fn store_name(&self) -> &'static str {
        match &self.0 {
            Timers::Heap(_) => "memory",
            Timers::Stored(s) => s.store.name(),
        }
    }

    /// How many timers `key` has pending, in both domains and every namespace.
    pub fn count_for(&self, key: &[u8]) -> u32 {
        match &self.0 {
            Timers::Heap(h) => h.per_key.get(key),
            Timers::Stored(s) => s.per_key.get(key),
        }
    }

    /// How many timers are pending, in both domains.
    pub fn total(&self) -> usize {
        match &self.0 {
            Timers::Heap(h) => h.total(),
            Timers::Stored(s) => s.total(),
        }
    }

    /// How many timers of `domain` are pending.
    pub fn len(&self, domain: TimeDomain) -> usize {
        match &self.0 {
            Timers::Heap(h) => h.queues[domain.index()].len(),
            Timers::Stored(s) => s.len(domain),
        }
    }

    /// Registers a timer in the empty namespace; a no-op when the same (key,
    /// timestamp, domain) is pending.
    pub fn register(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64) -> Result<(), StateError> {
        self.register_in(domain, key, &[], timestamp)
    }

    /// Registers a timer of `namespace`; a no-op when the same timer is pending.
    pub fn register_in(&mut self, domain: TimeDomain, key: &[u8], namespace: &[u8], timestamp: i64) -> Result<(), StateError> {
        self.register_within(domain, key, namespace, timestamp, u64::MAX, u64::MAX).map(|_| ())
    }

    /// Registers a timer unless it is new and would make more than `max_total` pending
    /// timers, or more than `max_per_key` for its key; then it is not registered and the
    /// inner answer says which limit. Registering a pending timer again costs no count.
    pub fn register_within(
        &mut self,
        domain: TimeDomain,
        key: &[u8],
        namespace: &[u8],
        timestamp: i64,
        max_total: u64,
        max_per_key: u64,
    ) -> Result<Result<(), OverBudget>, StateError> {
        match &mut self.0 {
            Timers::Heap(h) => {
                let timer = Timer { timestamp, key: key.to_vec(), namespace: namespace.to_vec() };
                Ok(h.register_within(domain, timer, max_total, max_per_key))
            }
            Timers::Stored(s) => s.register_within(domain, key, namespace, timestamp, max_total, max_per_key),
        }
    }

    /// Whether the timer is pending.
    pub fn contains_in(&mut self, domain: TimeDomain, key: &[u8], namespace: &[u8], timestamp: i64) -> Result<bool, StateError> {
        match &mut self.0 {
            Timers::Heap(h) => {
                let timer = Timer { timestamp, key: key.to_vec(), namespace: namespace.to_vec() };
                Ok(h.queues[domain.index()].contains(&timer))
            }
            Timers::Stored(s) => s.contains_in(domain, key, namespace, timestamp),
        }
    }

    /// Deletes a pending timer of the empty namespace; a no-op when there is none.
    pub fn delete(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64) -> Result<(), StateError> {
        self.delete_in(domain, key, &[], timestamp)
    }

    /// Deletes a pending timer of `namespace`; a no-op when there is none.
    pub fn delete_in(&mut self, domain: TimeDomain, key: &[u8], namespace: &[u8], timestamp: i64) -> Result<(), StateError> {
        match &mut self.0 {
            Timers::Heap(h) => {
                h.delete(domain, &Timer { timestamp, key: key.to_vec(), namespace: namespace.to_vec() });
                Ok(())
            }
            Timers::Stored(s) => s.delete_in(domain, key, namespace, timestamp),
        }
    }

    /// Removes and returns the earliest timer of `domain` at or before `time` (of equal
    /// times, in [`Timer`]'s order). Timers registered while firing are seen by the next
    /// call, so a timer that registers another due timer is followed by it in order.
    pub fn pop_due(&mut self, domain: TimeDomain, time: i64) -> Result<Option<Timer>, StateError> {
        match &mut self.0 {
            Timers::Heap(h) => Ok(h.pop_due(domain, time)),
            Timers::Stored(s) => s.pop_due(domain, time),
        }
    }

    /// The earliest pending timestamp of `domain`.
    pub fn next_timestamp(&self, domain: TimeDomain) -> Option<i64> {
        match &self.0 {
            Timers::Heap(h) => h.queues[domain.index()].first().map(|t| t.timestamp),
            Timers::Stored(s) => s.next_timestamp(domain),
        }
    }

    /// Captures the timers as they are now, to be written to `<task dir>/timers.ent` by
    /// the returned writer, on another thread: the heap's sets (shared until the next
    /// change copies them), or the store's export (a RocksDB checkpoint of hard links),
    /// is all the barrier waits for. The file holds the timers' entries in key order;
    /// [`TimerService::insert_encoded`] reads it back.
    pub fn snapshot(&mut self, target: &SnapshotTarget) -> Result<Box<dyn SnapshotWriter>, StateError> {
        match &mut self.0 {
            Timers::Heap(h) => Ok(Box::new(HeapSnapshot {
                queues: h.queues.clone(),
                max_parallelism: h.max_parallelism,
                target: target.clone(),
            })),
            Timers::Stored(s) => s.snapshot(target),
        }
    }

    /// Every timer's entry, in key-group order; [`TimerService::insert_encoded`]
    /// reverses it.
    #[cfg(test)]
    pub fn encoded(&self) -> Result<Vec<Vec<u8>>, StateError> {
        match &self.0 {
            Timers::Heap(h) => Ok(HeapTimers::entries(&h.queues, h.max_parallelism)),
            Timers::Stored(s) => s.encoded(),
        }
    }

    /// Adds a timer read from a snapshot (taking its key group from its key); `false`
    /// if it is malformed.
    pub fn insert_encoded(&mut self, bytes: &[u8]) -> Result<bool, StateError> {
        let Some((_, tag, timestamp, key, namespace)) = decode(bytes) else { return Ok(false) };
        let (key, namespace) = (key.to_vec(), namespace.to_vec());
        self.register_in(domain_of(tag), &key, &namespace, timestamp)?;
        Ok(true)
    }

    /// Deletes every timer (rolling back an upgrade).
    pub fn clear(&mut self) -> Result<(), StateError> {
        match &mut self.0 {
            Timers::Heap(h) => {
                *h = HeapTimers::new(h.max_parallelism);
                Ok(())
            }
            Timers::Stored(s) => s.clear(),
        }
    }
}

#[cfg(test)]
mod tests;
