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

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

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

/// Pending timers per key (both domains, every namespace), for the per-key budget:
/// one entry per key with timers, on the heap whatever the store (at most
/// `limits.timers` entries), so that counting costs no store access.
#[derive(Default)]
struct PerKey(HashMap<Vec<u8>, u32>);

impl PerKey {
    fn get(&self, key: &[u8]) -> u32 {
        self.0.get(key).copied().unwrap_or(0)
    }

    /// Counts a new timer of `key` unless the key has `max` already.
    fn admit(&mut self, key: &[u8], max: u64) -> bool {
        match self.0.get_mut(key) {
            Some(n) if u64::from(*n) >= max => false,
            Some(n) => {
                *n += 1;
                true
            }
            None if max == 0 => false,
            None => {
                self.0.insert(key.to_vec(), 1);
                true
            }
        }
    }

    fn release(&mut self, key: &[u8]) {
        if let Some(n) = self.0.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(key);
            }
        }
    }
}

/// A run of timers: one key group's timers of one tag.
type Run = (u16, u8);

/// A run's first timer, ordered as timers fire (see [`Timer`]), whatever their key
/// groups.
type Head = (Timer, Run);

fn head(run: Run, entry: &[u8]) -> Head {
    let (_, _, timestamp, key, namespace) = decode(entry).expect("a stored timer");
    (Timer { timestamp, key: key.to_vec(), namespace: namespace.to_vec() }, run)
}

/// The timers of one operator subtask.
pub struct TimerService(Timers);

enum Timers {
    /// On the heap (memory state).
    Heap(HeapTimers),
    /// In a byte-keyed store (RocksDB state).
    Stored(StoredTimers),
}

/// Timers on the heap, as Flink's heap timer service keeps them: one ordered set per
/// domain. A snapshot shares the sets; the first change after it copies the set it
/// changes (copy-on-write, whole sets: a persistent tree made every timer lookup
/// slower, and windows look a timer up per element).
struct HeapTimers {
    max_parallelism: u32,
    queues: [Arc<BTreeSet<Timer>>; 2],
    per_key: PerKey,
}

/// Timers in a byte-keyed store, by key group first: only the head of each run is in
/// memory.
struct StoredTimers {
    store: Box<dyn StateBackend>,
    max_parallelism: u32,
    /// The first (earliest) stored timers of each non-empty run, in order, at most
    /// [`RUN_CACHE`]: every stored timer of the run up to the last one here is here, so
    /// that firing timers in order reads the store once per [`RUN_CACHE`] timers (as
    /// Flink's `RocksDBCachingPriorityQueueSet`).
    firsts: HashMap<Run, RunHead>,
    /// Per domain, the first timers of the non-empty runs.
    due: [BTreeSet<Head>; 2],
    /// Pending timers per domain.
    lens: [usize; 2],
    per_key: PerKey,
    /// Timers known to be stored, so that registering a pending timer again (a window
    /// operator does so per element) skips the store; at most [`KNOWN_TIMERS`].
    known: std::collections::HashSet<Vec<u8>>,
    scratch: Vec<u8>,
}

/// How many stored timers [`StoredTimers`] remembers as pending (about 5 MiB).
const KNOWN_TIMERS: usize = 65_536;

/// How many of a run's first timers [`StoredTimers`] holds in memory.
const RUN_CACHE: usize = 64;

/// The first timers of a run, in order.
struct RunHead {
    timers: std::collections::VecDeque<Vec<u8>>,
    /// Whether these are all the run's timers (so that a timer after the last one
    /// joins them, and the run ends with them).
    whole: bool,
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

fn tag(domain: TimeDomain, namespace: &[u8]) -> u8 {
    domain.index() as u8 + if namespace.is_empty() { 0 } else { 2 }
}

fn domain_of(tag: u8) -> TimeDomain {
    if tag.is_multiple_of(2) { TimeDomain::EventTime } else { TimeDomain::ProcessingTime }
}

fn encode_time(timestamp: i64) -> [u8; 8] {
    ((timestamp as u64) ^ (1 << 63)).to_be_bytes()
}

/// Writes a timer's entry key into `out` (cleared first).
fn encode(out: &mut Vec<u8>, key_group: u16, domain: TimeDomain, key: &[u8], namespace: &[u8], timestamp: i64) {
    out.clear();
    out.extend_from_slice(&key_group.to_be_bytes());
    out.push(tag(domain, namespace));
    out.extend_from_slice(&encode_time(timestamp));
    if namespace.is_empty() {
        out.extend_from_slice(key);
    } else {
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(namespace);
    }
}

/// A timer entry key taken apart: key group, tag, timestamp, key, namespace.
type Decoded<'a> = (u16, u8, i64, &'a [u8], &'a [u8]);

/// Takes a timer entry key apart.
fn decode(bytes: &[u8]) -> Option<Decoded<'_>> {
    let key_group = u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?);
    let tag = *bytes.get(2)?;
    if tag > 3 {
        return None;
    }
    let timestamp = (u64::from_be_bytes(bytes.get(3..11)?.try_into().ok()?) ^ (1 << 63)) as i64;
    let rest = &bytes[11..];
    if tag < 2 {
        return Some((key_group, tag, timestamp, rest, &[]));
    }
    let (len, rest) = rest.split_at_checked(4)?;
    let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
    let (key, namespace) = rest.split_at_checked(len)?;
    // An empty namespace is stored in the first layout only.
    (!namespace.is_empty()).then_some((key_group, tag, timestamp, key, namespace))
}

/// [`TimerService`]'s operations (documented there) over a store.
impl StoredTimers {
    fn new(max_parallelism: u32, store: Box<dyn StateBackend>) -> Result<Self, StateError> {
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

    fn total(&self) -> usize {
        self.lens[0] + self.lens[1]
    }

    fn len(&self, domain: TimeDomain) -> usize {
        self.lens[domain.index()]
    }

    fn register_within(
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
    fn lookup(&mut self, domain: TimeDomain, key: &[u8], namespace: &[u8], timestamp: i64) -> Result<(u16, bool), StateError> {
        let key_group = assign_key_group(key, self.max_parallelism);
        let mut entry = std::mem::take(&mut self.scratch);
        encode(&mut entry, key_group, domain, key, namespace, timestamp);
        let stored = self.stored(&entry);
        self.scratch = entry;
        Ok((key_group, stored?))
    }

    /// Whether the timer `entry` is stored.
    fn stored(&mut self, entry: &[u8]) -> Result<bool, StateError> {
        if self.known.contains(entry) {
            return Ok(true);
        }
        let stored = self.store.get(entry)?.is_some();
        if stored {
            self.remember(entry);
        }
        Ok(stored)
    }

    fn remember(&mut self, entry: &[u8]) {
        if self.known.len() >= KNOWN_TIMERS {
            self.known.clear();
        }
        self.known.insert(entry.to_vec());
    }

    /// Notes a stored timer: it may belong to its run's cached first timers.
    fn added(&mut self, run: Run, entry: Vec<u8>) {
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
    fn remove(&mut self, run: Run, entry: &[u8], key: &[u8]) -> Result<(), StateError> {
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

    fn contains_in(&mut self, domain: TimeDomain, key: &[u8], namespace: &[u8], timestamp: i64) -> Result<bool, StateError> {
        Ok(self.lookup(domain, key, namespace, timestamp)?.1)
    }

    fn delete_in(&mut self, domain: TimeDomain, key: &[u8], namespace: &[u8], timestamp: i64) -> Result<(), StateError> {
        let (key_group, pending) = self.lookup(domain, key, namespace, timestamp)?;
        if !pending {
            return Ok(());
        }
        let entry = std::mem::take(&mut self.scratch);
        let removed = self.remove((key_group, tag(domain, namespace)), &entry, key);
        self.scratch = entry;
        removed
    }

    fn pop_due(&mut self, domain: TimeDomain, time: i64) -> Result<Option<Timer>, StateError> {
        let Some((timer, run)) = self.due[domain.index()].first() else { return Ok(None) };
        if timer.timestamp > time {
            return Ok(None);
        }
        let (timer, run) = (timer.clone(), *run);
        let entry = self.firsts[&run].timers[0].clone();
        self.remove(run, &entry, &timer.key)?;
        Ok(Some(timer))
    }

    fn next_timestamp(&self, domain: TimeDomain) -> Option<i64> {
        self.due[domain.index()].first().map(|t| t.0.timestamp)
    }

    fn snapshot(&mut self, target: &SnapshotTarget) -> Result<Box<dyn SnapshotWriter>, StateError> {
        self.store.export(target, "timers.ent")
    }

    #[cfg(test)]
    fn encoded(&self) -> Result<Vec<Vec<u8>>, StateError> {
        let mut all = Vec::with_capacity(self.total());
        self.store.scan_keys(&[], &mut |k| {
            if decode(k).is_some() {
                all.push(k.to_vec());
            }
        })?;
        Ok(all)
    }

    fn clear(&mut self) -> Result<(), StateError> {
        self.store.delete_prefix(&[])?;
        self.firsts.clear();
        self.known.clear();
        self.per_key = PerKey::default();
        self.due = [BTreeSet::new(), BTreeSet::new()];
        self.lens = [0, 0];
        Ok(())
    }
}

impl HeapTimers {
    fn new(max_parallelism: u32) -> Self {
        HeapTimers { max_parallelism, queues: Default::default(), per_key: PerKey::default() }
    }

    fn total(&self) -> usize {
        self.queues[0].len() + self.queues[1].len()
    }

    fn register_within(
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

    fn delete(&mut self, domain: TimeDomain, timer: &Timer) {
        let queue = &mut self.queues[domain.index()];
        if queue.contains(timer) && Arc::make_mut(queue).remove(timer) {
            self.per_key.release(&timer.key);
        }
    }

    fn pop_due(&mut self, domain: TimeDomain, time: i64) -> Option<Timer> {
        let queue = &mut self.queues[domain.index()];
        if queue.first()?.timestamp > time {
            return None;
        }
        let timer = Arc::make_mut(queue).pop_first()?;
        self.per_key.release(&timer.key);
        Some(timer)
    }

    /// The timers as stored entries, in key order.
    fn entries(queues: &[Arc<BTreeSet<Timer>>; 2], max_parallelism: u32) -> Vec<Vec<u8>> {
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
struct HeapSnapshot {
    queues: [Arc<BTreeSet<Timer>>; 2],
    max_parallelism: u32,
    target: SnapshotTarget,
}

impl SnapshotWriter for HeapSnapshot {
    fn write(self: Box<Self>) -> Result<Vec<FileEntry>, String> {
        let entries = HeapTimers::entries(&self.queues, self.max_parallelism);
        let relative = format!("{}/timers.ent", self.target.task_dir);
        let pairs = entries.iter().map(|e| (e.as_slice(), &[][..]));
        Ok(vec![crate::state::snapshot::write_file(&self.target.root, &relative, pairs)?])
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
mod tests {
    use super::*;
    use TimeDomain::*;

    /// Runs `check` on timers in memory and in RocksDB.
    fn on_every_store(check: impl Fn(&mut dyn FnMut() -> TimerService)) {
        check(&mut || TimerService::in_memory(128));
        #[cfg(feature = "rocksdb")]
        {
            let dir = tempfile::tempdir().unwrap();
            let mut n = 0;
            check(&mut || {
                n += 1;
                let store = crate::state::RocksBackend::open(&dir.path().join(n.to_string())).unwrap();
                TimerService::new(128, Box::new(store)).unwrap()
            });
        }
    }

    fn pop(t: &mut TimerService, domain: TimeDomain, time: i64) -> Option<Timer> {
        t.pop_due(domain, time).unwrap()
    }

    fn timer(timestamp: i64, key: &[u8]) -> Timer {
        Timer { timestamp, key: key.to_vec(), namespace: vec![] }
    }

    #[test]
    fn timers_are_counted_per_key() {
        on_every_store(|new| {
            let mut timers = new();
            timers.register(EventTime, b"a", 5).unwrap();
            timers.register(EventTime, b"a", 5).unwrap(); // the same timer
            timers.register_in(ProcessingTime, b"a", b"w", 7).unwrap();
            timers.register(EventTime, b"b", 6).unwrap();
            assert_eq!((timers.count_for(b"a"), timers.count_for(b"b"), timers.total()), (2, 1, 3));
            timers.delete(EventTime, b"a", 5).unwrap();
            timers.delete(EventTime, b"a", 5).unwrap(); // already gone
            assert_eq!(timers.count_for(b"a"), 1);
            assert_eq!(pop(&mut timers, EventTime, 10).unwrap().key, b"b");
            assert_eq!((timers.count_for(b"b"), timers.total()), (0, 1));
        });
    }

    #[test]
    fn budgets_refuse_new_timers_only() {
        on_every_store(|new| {
            let mut t = new();
            assert_eq!(t.register_within(EventTime, b"a", b"", 1, 2, 1).unwrap(), Ok(()));
            assert_eq!(t.register_within(EventTime, b"a", b"", 1, 2, 1).unwrap(), Ok(()), "pending already");
            assert_eq!(t.register_within(EventTime, b"a", b"", 2, 2, 1).unwrap(), Err(OverBudget::PerKey));
            assert_eq!(t.register_within(EventTime, b"b", b"", 2, 2, 1).unwrap(), Ok(()));
            assert_eq!(t.register_within(EventTime, b"c", b"", 2, 2, 1).unwrap(), Err(OverBudget::Total));
            assert_eq!((t.total(), t.count_for(b"a"), t.count_for(b"c")), (2, 1, 0));
        });
    }

    #[test]
    fn timers_fire_in_order_and_only_when_due() {
        on_every_store(|new| {
            let mut t = new();
            t.register(EventTime, b"b", 20).unwrap();
            t.register(EventTime, b"a", 10).unwrap();
            t.register(EventTime, b"a", 30).unwrap();
            t.register_in(EventTime, b"c", b"w", 15).unwrap();
            assert_eq!(pop(&mut t, EventTime, 5), None);
            assert_eq!(pop(&mut t, EventTime, 25).unwrap(), timer(10, b"a"));
            let scoped = pop(&mut t, EventTime, 25).unwrap();
            assert_eq!((scoped.timestamp, scoped.namespace.as_slice()), (15, &b"w"[..]));
            assert_eq!(pop(&mut t, EventTime, 25).unwrap(), timer(20, b"b"));
            assert_eq!(pop(&mut t, EventTime, 25), None);
            assert_eq!(t.next_timestamp(EventTime), Some(30));
        });
    }

    #[test]
    fn many_timers_fire_in_time_order_across_key_groups() {
        on_every_store(|new| {
            let mut t = new();
            // Registered out of order, over many keys (and so key groups).
            for i in (0..2_000i64).rev() {
                t.register(EventTime, format!("k{}", i % 300).as_bytes(), (i * 7919) % 2_000 - 1_000).unwrap();
            }
            let mut fired = Vec::new();
            while let Some(timer) = pop(&mut t, EventTime, i64::MAX) {
                fired.push(timer.timestamp);
            }
            assert!(fired.windows(2).all(|w| w[0] <= w[1]), "in time order");
            let mut distinct = fired.clone();
            distinct.dedup();
            assert_eq!(distinct.len(), fired.len(), "(key, time) is unique here since i*7919 mod 2000 is a bijection");
            assert_eq!(fired.len(), 2_000);
            assert_eq!(t.total(), 0);
        });
    }

    #[test]
    fn stored_timers_keep_a_bounded_head_of_each_run_in_memory() {
        on_every_store(|new| {
            let mut t = new();
            for i in 0..20_000i64 {
                t.register(EventTime, format!("key-{}", i % 5_000).as_bytes(), 20_000 - i).unwrap();
            }
            assert_eq!(t.total(), 20_000);
            if let Timers::Stored(s) = &t.0 {
                let cached: usize = s.firsts.values().map(|c| c.timers.len()).sum();
                assert!(s.firsts.len() <= 128 && cached <= 128 * RUN_CACHE, "{cached} in {} runs", s.firsts.len());
                assert_eq!(s.due[0].len(), s.firsts.len());
            }
            let (mut fired, mut last) = (0, i64::MIN);
            while let Some(timer) = pop(&mut t, EventTime, i64::MAX) {
                assert!(timer.timestamp > last);
                (fired, last) = (fired + 1, timer.timestamp);
            }
            assert_eq!((fired, t.total(), t.count_for(b"key-7")), (20_000, 0, 0));
            if let Timers::Stored(s) = &t.0 {
                assert!(s.firsts.is_empty() && s.due[0].is_empty());
            }
        });
    }

    #[test]
    #[cfg(feature = "rocksdb")]
    fn stored_timers_behave_as_heap_timers_under_random_operations() {
        // Registers, deletes and fires in a pseudo-random mix (windows delete and
        // re-register timers around the cached heads of their runs).
        let dir = tempfile::tempdir().unwrap();
        // Two key groups: runs longer than the cached heads.
        let mut heap = TimerService::in_memory(2);
        let store = crate::state::RocksBackend::open(dir.path()).unwrap();
        let mut stored = TimerService::new(2, Box::new(store)).unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut now = 0;
        for step in 0..30_000 {
            let key = format!("k{}", next(200));
            let (domain, ns) = if next(4) == 0 { (ProcessingTime, &b"w"[..]) } else { (EventTime, &b""[..]) };
            let at = now + next(20_000) as i64;
            match next(10) {
                0..=5 => {
                    let a = heap.register_within(domain, key.as_bytes(), ns, at, 5_000, 40).unwrap();
                    let b = stored.register_within(domain, key.as_bytes(), ns, at, 5_000, 40).unwrap();
                    assert_eq!(a, b, "step {step}");
                }
                6 | 7 => {
                    heap.delete_in(domain, key.as_bytes(), ns, at).unwrap();
                    stored.delete_in(domain, key.as_bytes(), ns, at).unwrap();
                }
                _ => {
                    now += next(40) as i64;
                    for domain in [EventTime, ProcessingTime] {
                        loop {
                            let (a, b) = (heap.pop_due(domain, now).unwrap(), stored.pop_due(domain, now).unwrap());
                            assert_eq!(a, b, "step {step}");
                            if a.is_none() {
                                break;
                            }
                        }
                    }
                }
            }
            assert_eq!((heap.total(), heap.next_timestamp(EventTime)), (stored.total(), stored.next_timestamp(EventTime)));
        }
        assert_eq!(heap.encoded().unwrap(), stored.encoded().unwrap());
        assert!(heap.total() > 4 * RUN_CACHE, "the mix leaves timers pending: {}", heap.total());
    }

    #[test]
    fn timers_of_equal_time_fire_in_key_order() {
        on_every_store(|new| {
            let mut t = new();
            let keys: Vec<String> = (0..50).map(|i| format!("k{i:02}")).collect();
            for key in keys.iter().rev() {
                t.register(EventTime, key.as_bytes(), 7).unwrap();
            }
            let fired: Vec<String> =
                std::iter::from_fn(|| pop(&mut t, EventTime, 7)).map(|t| String::from_utf8(t.key).unwrap()).collect();
            assert_eq!(fired, keys);
        });
    }

    #[test]
    fn a_timer_registered_earlier_than_the_first_of_its_run_fires_first() {
        on_every_store(|new| {
            let mut t = new();
            t.register(EventTime, b"k", 50).unwrap();
            t.register(EventTime, b"k", 40).unwrap();
            assert_eq!(pop(&mut t, EventTime, 45).unwrap(), timer(40, b"k"));
            t.register(EventTime, b"k", 10).unwrap();
            t.delete(EventTime, b"k", 50).unwrap();
            assert_eq!(pop(&mut t, EventTime, 100).unwrap(), timer(10, b"k"));
            assert_eq!(pop(&mut t, EventTime, 100), None);
            assert_eq!(t.next_timestamp(EventTime), None);
        });
    }

    #[test]
    fn a_timer_is_unique_per_key_time_and_domain() {
        on_every_store(|new| {
            let mut t = new();
            t.register(EventTime, b"k", 10).unwrap();
            t.register(EventTime, b"k", 10).unwrap();
            t.register(ProcessingTime, b"k", 10).unwrap();
            t.register(EventTime, b"other", 10).unwrap();
            assert_eq!(t.len(EventTime), 2);
            assert_eq!(t.len(ProcessingTime), 1);
            assert!(t.contains_in(ProcessingTime, b"k", b"", 10).unwrap());
            assert!(!t.contains_in(ProcessingTime, b"k", b"w", 10).unwrap());
        });
    }

    #[test]
    fn timers_survive_encoding_and_reopening() {
        on_every_store(|new| {
            let mut t = new();
            t.register(EventTime, b"k", -5).unwrap();
            t.register(ProcessingTime, b"", 1_700_000_000_000).unwrap();
            t.register_in(EventTime, b"k", b"window", -5).unwrap();
            t.register_in(ProcessingTime, b"", b"w", 7).unwrap();
            assert_eq!(t.len(EventTime), 2, "namespaces keep timers apart");
            let mut restored = new();
            for bytes in t.encoded().unwrap() {
                assert!(restored.insert_encoded(&bytes).unwrap());
            }
            assert_eq!(restored.encoded().unwrap(), t.encoded().unwrap());
            assert!(!restored.insert_encoded(&[0, 1, 7, 0]).unwrap());
            // A service over a store that holds timers takes them up.
            let Timers::Stored(stored) = &mut t.0 else {
                t.clear().unwrap();
                assert_eq!((t.total(), t.encoded().unwrap().len(), t.next_timestamp(EventTime)), (0, 0, None));
                return;
            };
            let store = std::mem::replace(&mut stored.store, Box::new(crate::state::MemoryBackend::new()));
            let mut reopened = TimerService::new(128, store).unwrap();
            assert_eq!((reopened.len(EventTime), reopened.len(ProcessingTime)), (2, 2));
            assert_eq!(reopened.next_timestamp(ProcessingTime), Some(7));
            assert_eq!(pop(&mut reopened, EventTime, 0).unwrap().timestamp, -5);
            reopened.clear().unwrap();
            assert_eq!((reopened.total(), reopened.encoded().unwrap().len()), (0, 0));
        });
    }

    #[test]
    fn a_snapshot_holds_the_timers_of_its_moment() {
        on_every_store(|new| {
            let dir = tempfile::tempdir().unwrap();
            let mut t = new();
            for i in 0..1_000 {
                t.register_in(ProcessingTime, format!("k{i}").as_bytes(), if i % 2 == 0 { b"" } else { b"w" }, i).unwrap();
            }
            let before = t.encoded().unwrap();
            let target = SnapshotTarget { root: dir.path().to_path_buf(), task_dir: "op#0".into(), shared_dir: String::new() };
            let writer = t.snapshot(&target).unwrap();
            // Changes after the barrier are not in it.
            t.register(EventTime, b"later", 5).unwrap();
            while t.pop_due(ProcessingTime, 500).unwrap().is_some() {}
            let files = writer.write().unwrap();
            assert_eq!(files[0].path, "op#0/timers.ent");
            assert_eq!(std::fs::read_dir(dir.path().join("op#0")).unwrap().count(), 1, "no staging left behind");
            let mut restored = new();
            crate::state::snapshot::read_entries(&dir.path().join(&files[0].path), |k, _| {
                assert!(restored.insert_encoded(&k).unwrap());
            })
            .unwrap();
            assert_eq!(restored.encoded().unwrap(), before);
            assert_eq!((restored.total(), restored.count_for(b"k3")), (1_000, 1));
        });
    }

    #[test]
    fn deleted_timers_do_not_fire_and_can_be_registered_again() {
        on_every_store(|new| {
            let mut t = new();
            t.register(EventTime, b"k", 10).unwrap();
            t.delete(EventTime, b"k", 10).unwrap();
            t.delete(EventTime, b"missing", 99).unwrap();
            assert_eq!(pop(&mut t, EventTime, i64::MAX), None);
            t.register(EventTime, b"k", 10).unwrap();
            assert_eq!(pop(&mut t, EventTime, 10).map(|t| t.timestamp), Some(10));
            assert!(t.encoded().unwrap().is_empty());
        });
    }
}
