//! Timers on the heap (memory state).

use std::collections::BTreeSet;
use std::sync::Arc;

use super::budget::PerKey;
use super::codec::encode;
use super::*;

/// Timers on the heap, as Flink's heap timer service keeps them: one ordered set per
/// domain. A snapshot shares the sets; the first change after it copies the set it
/// changes (copy-on-write, whole sets: a persistent tree made every timer lookup
/// slower, and windows look a timer up per element).
pub(super) struct HeapTimers {
    pub(super) max_parallelism: u32,
    pub(super) queues: [Arc<BTreeSet<Timer>>; 2],
    pub(super) per_key: PerKey,
}

impl HeapTimers {
    pub(super) fn new(max_parallelism: u32) -> Self {
        HeapTimers { max_parallelism, queues: Default::default(), per_key: PerKey::default() }
    }

    pub(super) fn total(&self) -> usize {
        self.queues[0].len() + self.queues[1].len()
    }

    pub(super) fn register_within(
        &mut self,
        domain: TimeDomain,
        timer: Timer,
        max_total: u64,
        max_per_key: u64,
    ) -> Result<(), OverBudget> {
        if self.queues[domain.index()].contains(&timer) {
            return Ok(());
        }
        if self.total() as u64 >= max_total {
            return Err(OverBudget::Total);
        }
        if !self.per_key.admit(&timer.key, max_per_key) {
            return Err(OverBudget::PerKey);
        }
        Arc::make_mut(&mut self.queues[domain.index()]).insert(timer);
        Ok(())
    }

    pub(super) fn delete(&mut self, domain: TimeDomain, timer: &Timer) {
        let queue = &mut self.queues[domain.index()];
        if queue.contains(timer) && Arc::make_mut(queue).remove(timer) {
            self.per_key.release(&timer.key);
        }
    }

    pub(super) fn pop_due(&mut self, domain: TimeDomain, time: i64) -> Option<Timer> {
        let queue = &mut self.queues[domain.index()];
        if queue.first()?.timestamp > time {
            return None;
        }
        let timer = Arc::make_mut(queue).pop_first()?;
        self.per_key.release(&timer.key);
        Some(timer)
    }

    /// The timers as stored entries, in key order.
    pub(super) fn entries(queues: &[Arc<BTreeSet<Timer>>; 2], max_parallelism: u32) -> Vec<Vec<u8>> {
        let mut all = Vec::with_capacity(queues[0].len() + queues[1].len());
        for (domain, queue) in [TimeDomain::EventTime, TimeDomain::ProcessingTime].into_iter().zip(queues) {
            for t in queue.iter() {
                let mut entry = Vec::with_capacity(15 + t.key.len() + t.namespace.len());
                let key_group = assign_key_group(&t.key, max_parallelism);
                encode(&mut entry, key_group, domain, &t.key, &t.namespace, t.timestamp);
                all.push(entry);
            }
        }
        all.sort_unstable();
        all
    }
}

/// A copy-on-write copy of heap timers, written as `timers.ent`.
pub(super) struct HeapSnapshot {
    pub(super) queues: [Arc<BTreeSet<Timer>>; 2],
    pub(super) max_parallelism: u32,
    pub(super) target: SnapshotTarget,
}

impl SnapshotWriter for HeapSnapshot {
    fn write(self: Box<Self>) -> Result<Vec<FileEntry>, String> {
        let entries = HeapTimers::entries(&self.queues, self.max_parallelism);
        let relative = format!("{}/timers.ent", self.target.task_dir);
        let pairs = entries.iter().map(|e| (e.as_slice(), &[][..]));
        Ok(vec![crate::state::snapshot::write_file(&self.target.root, &relative, pairs)?])
    }
}
