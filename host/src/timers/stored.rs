//! Timers in a byte-keyed store (RocksDB state): only the head of each run in memory.

use std::collections::{BTreeSet, HashMap};

use super::budget::PerKey;
use super::codec::*;
use super::*;

/// Timers in a byte-keyed store, by key group first: only the head of each run is in
/// memory.
pub(super) struct StoredTimers {
    pub(super) store: Box<dyn StateBackend>,
    pub(super) max_parallelism: u32,
    /// The first (earliest) stored timers of each non-empty run, in order, at most
    /// [`RUN_CACHE`]: every stored timer of the run up to the last one here is here, so
    /// that firing timers in order reads the store once per [`RUN_CACHE`] timers (as
    /// Flink's `RocksDBCachingPriorityQueueSet`).
    pub(super) firsts: HashMap<Run, RunHead>,
    /// Per domain, the first timers of the non-empty runs.
    pub(super) due: [BTreeSet<Head>; 2],
    /// Pending timers per domain.
    pub(super) lens: [usize; 2],
    pub(super) per_key: PerKey,
    /// Timers known to be stored, so that registering a pending timer again (a window
    /// operator does so per element) skips the store; at most [`KNOWN_TIMERS`].
    pub(super) known: std::collections::HashSet<Vec<u8>>,
    pub(super) scratch: Vec<u8>,
}

/// How many stored timers [`StoredTimers`] remembers as pending (about 5 MiB).
pub(super) const KNOWN_TIMERS: usize = 65_536;

/// How many of a run's first timers [`StoredTimers`] holds in memory.
pub(super) const RUN_CACHE: usize = 64;

/// The first timers of a run, in order.
pub(super) struct RunHead {
    pub(super) timers: std::collections::VecDeque<Vec<u8>>,
    /// Whether these are all the run's timers (so that a timer after the last one
    /// joins them, and the run ends with them).
    pub(super) whole: bool,
}

/// [`TimerService`]'s operations (documented there) over a store.
impl StoredTimers {
    pub(super) fn new(max_parallelism: u32, store: Box<dyn StateBackend>) -> Result<Self, StateError> {
        let mut service = StoredTimers {
            store,
            max_parallelism,
            firsts: HashMap::new(),
            due: [BTreeSet::new(), BTreeSet::new()],
            lens: [0, 0],
            per_key: PerKey::default(),
            known: Default::default(),
            scratch: Vec::new(),
        };
        // Runs are contiguous in key order: the first entry seen of a run is its first.
        let (mut firsts, mut lens, mut per_key) = (Vec::<(Run, Vec<u8>)>::new(), [0, 0], PerKey::default());
        service.store.scan_keys(&[], &mut |k| {
            if let Some((key_group, tag, _, key, _)) = decode(k) {
                lens[domain_of(tag).index()] += 1;
                per_key.admit(key, u64::MAX);
                if firsts.last().is_none_or(|(run, _)| *run != (key_group, tag)) {
                    firsts.push(((key_group, tag), k.to_vec()));
                }
            }
        })?;
        (service.lens, service.per_key) = (lens, per_key);
        for (run, entry) in firsts {
            service.due[domain_of(run.1).index()].insert(head(run, &entry));
            service.firsts.insert(run, RunHead { timers: [entry].into(), whole: false });
        }
        Ok(service)
    }

    pub(super) fn total(&self) -> usize {
        self.lens[0] + self.lens[1]
    }

    pub(super) fn len(&self, domain: TimeDomain) -> usize {
        self.lens[domain.index()]
    }

    pub(super) fn register_within(
        &mut self,
        domain: TimeDomain,
        key: &[u8],
        namespace: &[u8],
        timestamp: i64,
        max_total: u64,
        max_per_key: u64,
    ) -> Result<Result<(), OverBudget>, StateError> {
        let (key_group, pending) = self.lookup(domain, key, namespace, timestamp)?;
        if pending {
            return Ok(Ok(()));
        }
        let entry = self.scratch.clone();
        if self.total() as u64 >= max_total {
            return Ok(Err(OverBudget::Total));
        }
        if !self.per_key.admit(key, max_per_key) {
            return Ok(Err(OverBudget::PerKey));
        }
        if let Err(e) = self.store.put(&entry, &[]) {
            self.per_key.release(key);
            return Err(e);
        }
        self.lens[domain.index()] += 1;
        self.remember(&entry);
        self.added((key_group, tag(domain, namespace)), entry);
        Ok(Ok(()))
    }

    /// Encodes the timer into `scratch`: its key group, and whether it is stored.
    pub(super) fn lookup(&mut self, domain: TimeDomain, key: &[u8], namespace: &[u8], timestamp: i64) -> Result<(u16, bool), StateError> {
        let key_group = assign_key_group(key, self.max_parallelism);
        let mut entry = std::mem::take(&mut self.scratch);
        encode(&mut entry, key_group, domain, key, namespace, timestamp);
        let stored = self.stored(&entry);
        self.scratch = entry;
        Ok((key_group, stored?))
    }

    /// Whether the timer `entry` is stored.
    pub(super) fn stored(&mut self, entry: &[u8]) -> Result<bool, StateError> {
        if self.known.contains(entry) {
            return Ok(true);
        }
        let stored = self.store.get(entry)?.is_some();
        if stored {
            self.remember(entry);
        }
        Ok(stored)
    }

    pub(super) fn remember(&mut self, entry: &[u8]) {
        if self.known.len() >= KNOWN_TIMERS {
            self.known.clear();
        }
        self.known.insert(entry.to_vec());
    }

    /// Notes a stored timer: it may belong to its run's cached first timers.
    pub(super) fn added(&mut self, run: Run, entry: Vec<u8>) {
        let due = &mut self.due[domain_of(run.1).index()];
        let Some(cached) = self.firsts.get_mut(&run) else {
            // The run was empty: this is all of it.
            due.insert(head(run, &entry));
            self.firsts.insert(run, RunHead { timers: [entry].into(), whole: true });
            return;
        };
        if cached.timers.back().is_some_and(|last| entry > *last) {
            if cached.whole && cached.timers.len() < RUN_CACHE {
                cached.timers.push_back(entry);
            } else {
                // Past the cached timers: read from the store when they are used up.
                cached.whole = false;
            }
            return;
        }
        let at = cached.timers.partition_point(|e| *e < entry);
        if at == 0 {
            due.remove(&head(run, &cached.timers[0]));
            due.insert(head(run, &entry));
        }
        cached.timers.insert(at, entry);
        if cached.timers.len() > RUN_CACHE {
            cached.timers.pop_back();
            cached.whole = false;
        }
    }

    /// Removes a stored timer; if that uses up its run's cached first timers, reads
    /// the next ones.
    pub(super) fn remove(&mut self, run: Run, entry: &[u8], key: &[u8]) -> Result<(), StateError> {
        self.known.remove(entry);
        self.store.delete(entry)?;
        self.per_key.release(key);
        self.lens[domain_of(run.1).index()] -= 1;
        let Some(cached) = self.firsts.get_mut(&run) else { return Ok(()) };
        let Ok(at) = cached.timers.binary_search_by(|e| e.as_slice().cmp(entry)) else { return Ok(()) };
        let due = &mut self.due[domain_of(run.1).index()];
        if at == 0 {
            due.remove(&head(run, entry));
        }
        cached.timers.remove(at);
        if let Some(first) = cached.timers.front() {
            if at == 0 {
                due.insert(head(run, first));
            }
            return Ok(());
        }
        let whole = cached.whole;
        self.firsts.remove(&run);
        if whole {
            return Ok(());
        }
        // No stored timer of the run is before this one: read the next ones from here
        // (seeking from here, not from the run's start, skips its deleted timers).
        let prefix = [run.0.to_be_bytes()[0], run.0.to_be_bytes()[1], run.1];
        let mut next = std::collections::VecDeque::new();
        let mut ended = true;
        self.store.scan_prefix_from(&prefix, entry, &mut |k, _| {
            if k != entry {
                next.push_back(k.to_vec());
            }
            ended = next.len() < RUN_CACHE;
            ended
        })?;
        if let Some(first) = next.front() {
            decode(first).ok_or_else(|| StateError::Corrupt { what: "a timer".into() })?;
            due.insert(head(run, first));
            self.firsts.insert(run, RunHead { timers: next, whole: ended });
        }
        Ok(())
    }

    pub(super) fn contains_in(&mut self, domain: TimeDomain, key: &[u8], namespace: &[u8], timestamp: i64) -> Result<bool, StateError> {
        Ok(self.lookup(domain, key, namespace, timestamp)?.1)
    }

    pub(super) fn delete_in(&mut self, domain: TimeDomain, key: &[u8], namespace: &[u8], timestamp: i64) -> Result<(), StateError> {
        let (key_group, pending) = self.lookup(domain, key, namespace, timestamp)?;
        if !pending {
            return Ok(());
        }
        let entry = std::mem::take(&mut self.scratch);
        let removed = self.remove((key_group, tag(domain, namespace)), &entry, key);
        self.scratch = entry;
        removed
    }

    pub(super) fn pop_due(&mut self, domain: TimeDomain, time: i64) -> Result<Option<Timer>, StateError> {
        let Some((timer, run)) = self.due[domain.index()].first() else { return Ok(None) };
        if timer.timestamp > time {
            return Ok(None);
        }
        let (timer, run) = (timer.clone(), *run);
        let entry = self.firsts[&run].timers[0].clone();
        self.remove(run, &entry, &timer.key)?;
        Ok(Some(timer))
    }

    pub(super) fn next_timestamp(&self, domain: TimeDomain) -> Option<i64> {
        self.due[domain.index()].first().map(|t| t.0.timestamp)
    }

    pub(super) fn snapshot(&mut self, target: &SnapshotTarget) -> Result<Box<dyn SnapshotWriter>, StateError> {
        self.store.export(target, "timers.ent")
    }

    #[cfg(test)]
    pub(super) fn encoded(&self) -> Result<Vec<Vec<u8>>, StateError> {
        let mut all = Vec::with_capacity(self.total());
        self.store.scan_keys(&[], &mut |k| {
            if decode(k).is_some() {
                all.push(k.to_vec());
            }
        })?;
        Ok(all)
    }

    pub(super) fn clear(&mut self) -> Result<(), StateError> {
        self.store.delete_prefix(&[])?;
        self.firsts.clear();
        self.known.clear();
        self.per_key = PerKey::default();
        self.due = [BTreeSet::new(), BTreeSet::new()];
        self.lens = [0, 0];
        Ok(())
    }
}
