//! # Timers
//!
//! Each operator subtask keeps its timers in a timer store of the same kind as its
//! keyed state: a [`MemoryBackend`] for memory state, a RocksDB database beside the
//! state's for RocksDB state, so that RocksDB holds millions of timers without heap (as
//! Flink's RocksDB backend does with `state.backend.rocksdb.timer-service.factory:
//! ROCKSDB`). A timer is unique per (key, namespace, timestamp, domain), as in Flink:
//! registering it twice fires it once. The namespace scopes a timer within a key the
//! way it scopes state: window operators use the window, guest timers the empty
//! namespace. Event-time timers fire in timestamp order when the watermark reaches
//! them; processing-time timers fire when the wall clock does.
//!
//! Timers are stored by key group first, then by time, as Flink's key-group partitioned
//! priority queue keeps them: each key group's timers of one domain are one run in time
//! order, and the service keeps only the first timer of each run in memory (at most
//! four per key group), ordered by time (timers of equal time fire in key order), so
//! that the next due timer is one lookup away
//! and a snapshot or a restore by key-group range reads the runs as they are.
//!
//! ```text
//! timer:         key group (u16 BE) | tag (0 event, 1 processing) | timestamp | key
//!                key group (u16 BE) | tag (2 event, 3 processing) | timestamp | key len (u32 BE) | key | namespace
//! per-key count: key group (u16 BE) | 0x10 | key                  -> u32 BE
//! ```
//!
//! Timers of the empty namespace use the first layout, which checkpoints written before
//! namespaces existed use; the timestamp's sign bit is flipped so that the big-endian
//! bytes sort like the `i64`s. A snapshot's `timers.ent` holds the store's entries in
//! this order.

use std::collections::{BTreeSet, HashMap};

use crate::keygroup::assign_key_group;
use crate::state::snapshot::FileEntry;
use crate::state::{MemoryBackend, SnapshotTarget, SnapshotWriter, StateBackend, StateError};

/// The clock a timer is registered against (the WIT `time-domain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeDomain {
    /// Fires once the operator's watermark reaches the timer's timestamp.
    EventTime,
    /// Fires once the host's wall clock reaches the timer's timestamp.
    ProcessingTime,
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
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    pub timestamp: i64,
    pub key: Vec<u8>,
    pub namespace: Vec<u8>,
}

/// Which timer budget a registration would have broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverBudget {
    Total,
    PerKey,
}

/// The tag of per-key count entries; timer tags are 0 to 3.
const COUNT_TAG: u8 = 0x10;

/// A run of timers: one key group's timers of one tag.
type Run = (u16, u8);

/// A run's first timer, ordered as timers fire: by time, then key and namespace (so
/// that timers of equal time fire in key order, whatever their key groups).
type Head = (i64, Vec<u8>, Vec<u8>, Run);

fn head(run: Run, entry: &[u8]) -> Head {
    let (_, _, timestamp, key, namespace) = decode(entry).expect("a stored timer");
    (timestamp, key.to_vec(), namespace.to_vec(), run)
}

/// The timers of one operator subtask.
pub struct TimerService {
    store: Box<dyn StateBackend>,
    max_parallelism: u32,
    /// The first (earliest) stored timer of each non-empty run.
    firsts: HashMap<Run, Vec<u8>>,
    /// Per domain, the first timers of the non-empty runs.
    due: [BTreeSet<Head>; 2],
    /// Pending timers per domain.
    lens: [usize; 2],
    scratch: Vec<u8>,
}

impl std::fmt::Debug for TimerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerService")
            .field("store", &self.store.name())
            .field("event_time", &self.lens[0])
            .field("processing_time", &self.lens[1])
            .finish()
    }
}

fn tag(domain: TimeDomain, namespace: &[u8]) -> u8 {
    domain.index() as u8 + if namespace.is_empty() { 0 } else { 2 }
}

fn domain_of(tag: u8) -> TimeDomain {
    if tag % 2 == 0 { TimeDomain::EventTime } else { TimeDomain::ProcessingTime }
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
fn decode(bytes: &[u8]) -> Option<(u16, u8, i64, &[u8], &[u8])> {
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

/// Whether an entry of a timer store or `timers.ent` is a timer (not a per-key count).
pub fn is_timer_entry(bytes: &[u8]) -> bool {
    decode(bytes).is_some()
}

fn count_key(out: &mut Vec<u8>, key_group: u16, key: &[u8]) {
    out.clear();
    out.extend_from_slice(&key_group.to_be_bytes());
    out.push(COUNT_TAG);
    out.extend_from_slice(key);
}

impl TimerService {
    /// Timers kept in `store`, which may hold timers already (a reopened store).
    pub fn new(max_parallelism: u32, store: Box<dyn StateBackend>) -> Result<Self, StateError> {
        let mut service = TimerService {
            store,
            max_parallelism,
            firsts: HashMap::new(),
            due: [BTreeSet::new(), BTreeSet::new()],
            lens: [0, 0],
            scratch: Vec::new(),
        };
        // Runs are contiguous in key order: the first entry seen of a run is its first.
        let (mut firsts, mut lens) = (Vec::<(Run, Vec<u8>)>::new(), [0, 0]);
        service.store.scan_keys(&[], &mut |k| {
            if let Some((key_group, tag, _, _, _)) = decode(k) {
                lens[domain_of(tag).index()] += 1;
                if firsts.last().is_none_or(|(run, _)| *run != (key_group, tag)) {
                    firsts.push(((key_group, tag), k.to_vec()));
                }
            }
        })?;
        service.lens = lens;
        for (run, entry) in firsts {
            service.added(run, entry);
        }
        Ok(service)
    }

    /// Timers in memory.
    pub fn in_memory(max_parallelism: u32) -> Self {
        Self::new(max_parallelism, Box::new(MemoryBackend::new())).expect("an empty memory store")
    }

    /// `memory` or `rocksdb`: where the timers live.
    pub fn store_name(&self) -> &'static str {
        self.store.name()
    }

    /// How many timers `key` has pending, in both domains and every namespace.
    pub fn count_for(&mut self, key: &[u8]) -> Result<u32, StateError> {
        let key_group = assign_key_group(key, self.max_parallelism);
        count_key(&mut self.scratch, key_group, key);
        self.read_count()
    }

    fn read_count(&self) -> Result<u32, StateError> {
        Ok(match self.store.get(&self.scratch)? {
            Some(v) => u32::from_be_bytes(
                v.as_slice().try_into().map_err(|_| StateError::Corrupt { what: "a timer count".into() })?,
            ),
            None => 0,
        })
    }

    /// Counts a timer of `key` in (`+1`) or out (`-1`).
    fn count(&mut self, key_group: u16, key: &[u8], delta: i32) -> Result<u32, StateError> {
        count_key(&mut self.scratch, key_group, key);
        let n = self.read_count()?.saturating_add_signed(delta);
        match n {
            0 => self.store.delete(&self.scratch)?,
            n => self.store.put(&self.scratch, &n.to_be_bytes())?,
        }
        Ok(n)
    }

    /// How many timers are pending, in both domains.
    pub fn total(&self) -> usize {
        self.lens[0] + self.lens[1]
    }

    /// How many timers of `domain` are pending.
    pub fn len(&self, domain: TimeDomain) -> usize {
        self.lens[domain.index()]
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
        let key_group = assign_key_group(key, self.max_parallelism);
        let mut entry = Vec::with_capacity(15 + key.len() + namespace.len());
        encode(&mut entry, key_group, domain, key, namespace, timestamp);
        if self.store.get(&entry)?.is_some() {
            return Ok(Ok(()));
        }
        if self.total() as u64 >= max_total {
            return Ok(Err(OverBudget::Total));
        }
        count_key(&mut self.scratch, key_group, key);
        if u64::from(self.read_count()?) >= max_per_key {
            return Ok(Err(OverBudget::PerKey));
        }
        self.store.put(&entry, &[])?;
        self.count(key_group, key, 1)?;
        self.lens[domain.index()] += 1;
        self.added((key_group, tag(domain, namespace)), entry);
        Ok(Ok(()))
    }

    /// Notes a stored timer: it may be its run's new first one.
    fn added(&mut self, run: Run, entry: Vec<u8>) {
        let due = &mut self.due[domain_of(run.1).index()];
        match self.firsts.get_mut(&run) {
            Some(first) if entry < *first => {
                due.remove(&head(run, first));
                due.insert(head(run, &entry));
                *first = entry;
            }
            Some(_) => {}
            None => {
                due.insert(head(run, &entry));
                self.firsts.insert(run, entry);
            }
        }
    }

    /// Removes a stored timer; if it was its run's first, finds the next one.
    fn remove(&mut self, run: Run, entry: &[u8], key: &[u8]) -> Result<(), StateError> {
        self.store.delete(entry)?;
        self.count(run.0, key, -1)?;
        self.lens[domain_of(run.1).index()] -= 1;
        if self.firsts.get(&run).is_none_or(|first| first != entry) {
            return Ok(());
        }
        self.due[domain_of(run.1).index()].remove(&head(run, entry));
        self.firsts.remove(&run);
        // The next timer of the run is the first stored key after this one (seeking
        // from it, not from the run's start, skips the run's deleted timers).
        let prefix = [run.0.to_be_bytes()[0], run.0.to_be_bytes()[1], run.1];
        let mut next = None;
        self.store.scan_from(entry, &mut |k, _| {
            if k.starts_with(&prefix) && k != entry {
                next = Some(k.to_vec());
            }
            false
        })?;
        if let Some(next) = next {
            decode(&next).ok_or_else(|| StateError::Corrupt { what: "a timer".into() })?;
            self.added(run, next);
        }
        Ok(())
    }

    /// Whether the timer is pending.
    pub fn contains_in(&mut self, domain: TimeDomain, key: &[u8], namespace: &[u8], timestamp: i64) -> Result<bool, StateError> {
        let key_group = assign_key_group(key, self.max_parallelism);
        encode(&mut self.scratch, key_group, domain, key, namespace, timestamp);
        Ok(self.store.get(&self.scratch)?.is_some())
    }

    /// Deletes a pending timer of the empty namespace; a no-op when there is none.
    pub fn delete(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64) -> Result<(), StateError> {
        self.delete_in(domain, key, &[], timestamp)
    }

    /// Deletes a pending timer of `namespace`; a no-op when there is none.
    pub fn delete_in(&mut self, domain: TimeDomain, key: &[u8], namespace: &[u8], timestamp: i64) -> Result<(), StateError> {
        let key_group = assign_key_group(key, self.max_parallelism);
        let mut entry = Vec::with_capacity(15 + key.len() + namespace.len());
        encode(&mut entry, key_group, domain, key, namespace, timestamp);
        if self.store.get(&entry)?.is_none() {
            return Ok(());
        }
        self.remove((key_group, tag(domain, namespace)), &entry, key)
    }

    /// Removes and returns the earliest timer of `domain` at or before `time`. Timers registered while firing are
    /// seen by the next call, so a timer that registers another due timer is followed
    /// by it in order.
    pub fn pop_due(&mut self, domain: TimeDomain, time: i64) -> Result<Option<Timer>, StateError> {
        let Some((timestamp, key, namespace, run)) = self.due[domain.index()].first() else { return Ok(None) };
        if *timestamp > time {
            return Ok(None);
        }
        let (timer, run) = (Timer { timestamp: *timestamp, key: key.clone(), namespace: namespace.clone() }, *run);
        let entry = self.firsts[&run].clone();
        self.remove(run, &entry, &timer.key)?;
        Ok(Some(timer))
    }

    /// The earliest pending timestamp of `domain`.
    pub fn next_timestamp(&self, domain: TimeDomain) -> Option<i64> {
        self.due[domain.index()].first().map(|t| t.0)
    }

    /// Captures the timers as they are now, to be written to `<task dir>/timers.ent` by
    /// the returned writer, on another thread: the store's own snapshot (a
    /// copy-on-write copy in memory, a RocksDB checkpoint of hard links) is all the
    /// barrier waits for. The file holds the store's entries (timers and per-key
    /// counts) in key order; [`TimerService::insert_encoded`] reads it back.
    pub fn snapshot(&mut self, target: &SnapshotTarget) -> Result<Box<dyn SnapshotWriter>, StateError> {
        let staging = SnapshotTarget { task_dir: format!("{}/timers.staging", target.task_dir), ..target.clone() };
        let inner = self.store.export(&staging)?;
        Ok(Box::new(TimerSnapshot { inner, staging, target: target.clone() }))
    }

    /// Every timer's entry key, in key-group order, for snapshots;
    /// [`TimerService::insert_encoded`] reverses it.
    pub fn encoded(&self) -> Result<Vec<Vec<u8>>, StateError> {
        let mut all = Vec::with_capacity(self.total());
        self.store.scan_keys(&[], &mut |k| {
            if decode(k).is_some() {
                all.push(k.to_vec());
            }
        })?;
        Ok(all)
    }

    /// Adds a timer read from a snapshot (taking its key group from its key; per-key
    /// counts are skipped, registering counts anew); `false` if it is malformed.
    pub fn insert_encoded(&mut self, bytes: &[u8]) -> Result<bool, StateError> {
        if bytes.get(2) == Some(&COUNT_TAG) {
            return Ok(true);
        }
        let Some((_, tag, timestamp, key, namespace)) = decode(bytes) else { return Ok(false) };
        let (key, namespace) = (key.to_vec(), namespace.to_vec());
        self.register_in(domain_of(tag), &key, &namespace, timestamp)?;
        Ok(true)
    }

    /// Deletes every timer (rolling back an upgrade).
    pub fn clear(&mut self) -> Result<(), StateError> {
        self.store.delete_prefix(&[])?;
        self.firsts.clear();
        self.due = [BTreeSet::new(), BTreeSet::new()];
        self.lens = [0, 0];
        Ok(())
    }
}

/// A timer store's export, moved to `timers.ent` once written.
struct TimerSnapshot {
    inner: Box<dyn SnapshotWriter>,
    staging: SnapshotTarget,
    target: SnapshotTarget,
}

impl SnapshotWriter for TimerSnapshot {
    fn write(self: Box<Self>) -> Result<Vec<FileEntry>, String> {
        let files = self.inner.write()?;
        let [file] = files.as_slice() else {
            return Err(format!("the timer store wrote {} files, not one", files.len()));
        };
        let relative = format!("{}/timers.ent", self.target.task_dir);
        let (from, to) = (self.target.root.join(&file.path), self.target.root.join(&relative));
        std::fs::rename(&from, &to).map_err(|e| format!("moving {} to {}: {e}", from.display(), to.display()))?;
        // The staging directory held only the file just moved.
        let _ = std::fs::remove_dir(self.target.root.join(&self.staging.task_dir));
        Ok(vec![FileEntry { path: relative, ..file.clone() }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TimeDomain::*;

    /// Runs `check` on timers in memory and in RocksDB.
    fn on_every_store(check: impl Fn(&mut dyn FnMut() -> TimerService)) {
        check(&mut || TimerService::in_memory(128));
        let dir = tempfile::tempdir().unwrap();
        let mut n = 0;
        check(&mut || {
            n += 1;
            let store = crate::state::RocksBackend::open(&dir.path().join(n.to_string())).unwrap();
            TimerService::new(128, Box::new(store)).unwrap()
        });
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
            assert_eq!((timers.count_for(b"a").unwrap(), timers.count_for(b"b").unwrap(), timers.total()), (2, 1, 3));
            timers.delete(EventTime, b"a", 5).unwrap();
            timers.delete(EventTime, b"a", 5).unwrap(); // already gone
            assert_eq!(timers.count_for(b"a").unwrap(), 1);
            assert_eq!(pop(&mut timers, EventTime, 10).unwrap().key, b"b");
            assert_eq!((timers.count_for(b"b").unwrap(), timers.total()), (0, 1));
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
            assert_eq!((t.total(), t.count_for(b"a").unwrap(), t.count_for(b"c").unwrap()), (2, 1, 0));
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
    fn only_the_first_timer_of_each_run_is_kept_in_memory() {
        on_every_store(|new| {
            let mut t = new();
            for i in 0..20_000i64 {
                t.register(EventTime, format!("key-{}", i % 5_000).as_bytes(), 20_000 - i).unwrap();
            }
            assert_eq!(t.total(), 20_000);
            assert!(t.firsts.len() <= 128 && t.due[0].len() == t.firsts.len(), "{}", t.firsts.len());
            let (mut fired, mut last) = (0, i64::MIN);
            while let Some(timer) = pop(&mut t, EventTime, i64::MAX) {
                assert!(timer.timestamp > last);
                (fired, last) = (fired + 1, timer.timestamp);
            }
            assert_eq!((fired, t.firsts.len(), t.count_for(b"key-7").unwrap()), (20_000, 0, 0));
        });
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
            let store = std::mem::replace(&mut t.store, Box::new(MemoryBackend::new()));
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
            assert_eq!((restored.total(), restored.count_for(b"k3").unwrap()), (1_000, 1));
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
