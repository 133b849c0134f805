//! # Timers
//!
//! Each operator subtask keeps two timer queues, one per time domain. A timer is unique
//! per (key, namespace, timestamp, domain), as in Flink: registering it twice fires it
//! once. The namespace scopes a timer within a key the way it scopes state: window
//! operators use the window, guest timers the empty namespace.
//! Event-time timers fire in timestamp order when the watermark reaches them;
//! processing-time timers fire when the wall clock does.

use std::collections::{BTreeSet, HashMap};

use crate::keygroup::assign_key_group;

/// The clock a timer is registered against (the WIT `time-domain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeDomain {
    /// Fires once the operator's watermark reaches the timer's timestamp.
    EventTime,
    /// Fires once the host's wall clock reaches the timer's timestamp.
    ProcessingTime,
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

/// The timer queues of one operator subtask.
#[derive(Debug, Default, Clone)]
pub struct TimerService {
    event_time: BTreeSet<Timer>,
    processing_time: BTreeSet<Timer>,
    /// Pending timers per key (both domains, every namespace), for the per-key budget.
    per_key: HashMap<Vec<u8>, u32>,
}

impl TimerService {
    /// Counts a timer of `key` in or out; the key's count after.
    fn counted(&mut self, key: &[u8], added: bool) -> u32 {
        if added {
            // The key is allocated only for its first pending timer.
            return match self.per_key.get_mut(key) {
                Some(n) => {
                    *n += 1;
                    *n
                }
                None => {
                    self.per_key.insert(key.to_vec(), 1);
                    1
                }
            };
        }
        let Some(n) = self.per_key.get_mut(key) else { return 0 };
        *n -= 1;
        let left = *n;
        if left == 0 {
            self.per_key.remove(key);
        }
        left
    }

    /// How many timers `key` has pending, in both domains and every namespace.
    pub fn count_for(&self, key: &[u8]) -> u32 {
        self.per_key.get(key).copied().unwrap_or(0)
    }

    /// How many timers are pending, in both domains.
    pub fn total(&self) -> usize {
        self.event_time.len() + self.processing_time.len()
    }

    fn queue(&mut self, domain: TimeDomain) -> &mut BTreeSet<Timer> {
        match domain {
            TimeDomain::EventTime => &mut self.event_time,
            TimeDomain::ProcessingTime => &mut self.processing_time,
        }
    }

    /// Registers a timer in the empty namespace; a no-op when the same (key,
    /// timestamp, domain) is pending.
    pub fn register(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64) {
        self.register_in(domain, key, &[], timestamp);
    }

    /// Registers a timer of `namespace`; a no-op when the same timer is pending.
    pub fn register_in(&mut self, domain: TimeDomain, key: &[u8], namespace: &[u8], timestamp: i64) {
        let _ = self.register_within(domain, key, namespace, timestamp, u64::MAX, u64::MAX);
    }

    /// Registers a timer unless it is new and would make more than `max_total` pending
    /// timers, or more than `max_per_key` for its key; then it is not registered and the
    /// answer says which limit. Registering a pending timer again costs no count.
    pub fn register_within(
        &mut self,
        domain: TimeDomain,
        key: &[u8],
        namespace: &[u8],
        timestamp: i64,
        max_total: u64,
        max_per_key: u64,
    ) -> Result<(), OverBudget> {
        // A set: inserting a pending timer again leaves it as it is.
        let timer = Timer { timestamp, key: key.to_vec(), namespace: namespace.to_vec() };
        if !self.queue(domain).insert(timer) {
            return Ok(());
        }
        let over = if self.total() as u64 > max_total {
            Some(OverBudget::Total)
        } else {
            (u64::from(self.counted(key, true)) > max_per_key).then_some(OverBudget::PerKey)
        };
        if let Some(over) = over {
            // Undo: the timer was not admitted.
            self.queue(domain).remove(&Timer { timestamp, key: key.to_vec(), namespace: namespace.to_vec() });
            if over == OverBudget::PerKey {
                self.counted(key, false);
            }
            return Err(over);
        }
        Ok(())
    }

    /// Whether the timer is pending.
    pub fn contains_in(&self, domain: TimeDomain, key: &[u8], namespace: &[u8], timestamp: i64) -> bool {
        let timer = Timer { timestamp, key: key.to_vec(), namespace: namespace.to_vec() };
        match domain {
            TimeDomain::EventTime => self.event_time.contains(&timer),
            TimeDomain::ProcessingTime => self.processing_time.contains(&timer),
        }
    }

    /// Deletes a pending timer of the empty namespace; a no-op when there is none.
    pub fn delete(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64) {
        self.delete_in(domain, key, &[], timestamp);
    }

    /// Deletes a pending timer of `namespace`; a no-op when there is none.
    pub fn delete_in(&mut self, domain: TimeDomain, key: &[u8], namespace: &[u8], timestamp: i64) {
        if self.queue(domain).remove(&Timer { timestamp, key: key.to_vec(), namespace: namespace.to_vec() }) {
            self.counted(key, false);
        }
    }

    /// Removes and returns the earliest timer of `domain` at or before `time`.
    /// Timers registered while firing are seen by the next call, so a timer that
    /// registers another due timer is followed by it in order.
    pub fn pop_due(&mut self, domain: TimeDomain, time: i64) -> Option<Timer> {
        let queue = self.queue(domain);
        let timer = if queue.first()?.timestamp <= time { queue.pop_first() } else { None }?;
        self.counted(&timer.key, false);
        Some(timer)
    }

    /// The earliest pending timestamp of `domain`.
    pub fn next_timestamp(&self, domain: TimeDomain) -> Option<i64> {
        match domain {
            TimeDomain::EventTime => self.event_time.first(),
            TimeDomain::ProcessingTime => self.processing_time.first(),
        }
        .map(|t| t.timestamp)
    }

    /// How many timers of `domain` are pending.
    pub fn len(&self, domain: TimeDomain) -> usize {
        match domain {
            TimeDomain::EventTime => self.event_time.len(),
            TimeDomain::ProcessingTime => self.processing_time.len(),
        }
    }

    /// Encodes every timer as a byte key for snapshots, sorted so that each key
    /// group's timers are contiguous, like keyed state; [`TimerService::insert_encoded`]
    /// reverses it.
    ///
    /// ```text
    /// key group (u16 BE) | domain (0 event, 1 processing) | timestamp | key
    /// key group (u16 BE) | domain (2 event, 3 processing) | timestamp | key len (u32 BE) | key | namespace
    /// ```
    ///
    /// Timers of the empty namespace keep the first layout, which checkpoints written
    /// before namespaces existed use.
    pub fn encoded(&self, max_parallelism: u32) -> Vec<Vec<u8>> {
        let mut all: Vec<Vec<u8>> = self
            .iter()
            .map(|(domain, timer)| {
                let mut bytes = Vec::with_capacity(15 + timer.key.len() + timer.namespace.len());
                bytes.extend_from_slice(&assign_key_group(&timer.key, max_parallelism).to_be_bytes());
                let scoped = !timer.namespace.is_empty();
                bytes.push(match domain {
                    TimeDomain::EventTime => 0,
                    TimeDomain::ProcessingTime => 1,
                } + if scoped { 2 } else { 0 });
                // Flipping the sign bit makes the big-endian bytes sort like the i64s.
                bytes.extend_from_slice(&((timer.timestamp as u64) ^ (1 << 63)).to_be_bytes());
                if scoped {
                    bytes.extend_from_slice(&(timer.key.len() as u32).to_be_bytes());
                    bytes.extend_from_slice(&timer.key);
                    bytes.extend_from_slice(&timer.namespace);
                } else {
                    bytes.extend_from_slice(&timer.key);
                }
                bytes
            })
            .collect();
        all.sort_unstable();
        all
    }

    /// Adds a timer encoded by [`TimerService::encoded`]; `false` if it is malformed.
    pub fn insert_encoded(&mut self, bytes: &[u8]) -> bool {
        let Some(bytes) = bytes.get(2..) else { return false };
        let (Some(&tag), Some(ts)) = (bytes.first(), bytes.get(1..9)) else { return false };
        let domain = match tag {
            0 | 2 => TimeDomain::EventTime,
            1 | 3 => TimeDomain::ProcessingTime,
            _ => return false,
        };
        let timestamp = (u64::from_be_bytes(ts.try_into().expect("8 bytes")) ^ (1 << 63)) as i64;
        let rest = &bytes[9..];
        if tag < 2 {
            self.register(domain, rest, timestamp);
            return true;
        }
        let Some((len, rest)) = rest.split_at_checked(4) else { return false };
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        let Some((key, namespace)) = rest.split_at_checked(len) else { return false };
        self.register_in(domain, key, namespace, timestamp);
        true
    }

    /// Every pending timer, for snapshots.
    pub fn iter(&self) -> impl Iterator<Item = (TimeDomain, &Timer)> {
        self.event_time
            .iter()
            .map(|t| (TimeDomain::EventTime, t))
            .chain(self.processing_time.iter().map(|t| (TimeDomain::ProcessingTime, t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TimeDomain::*;

    #[test]
    fn timers_are_counted_per_key() {
        let mut timers = TimerService::default();
        timers.register(TimeDomain::EventTime, b"a", 5);
        timers.register(TimeDomain::EventTime, b"a", 5); // the same timer
        timers.register_in(TimeDomain::ProcessingTime, b"a", b"w", 7);
        timers.register(TimeDomain::EventTime, b"b", 6);
        assert_eq!((timers.count_for(b"a"), timers.count_for(b"b"), timers.total()), (2, 1, 3));
        timers.delete(TimeDomain::EventTime, b"a", 5);
        timers.delete(TimeDomain::EventTime, b"a", 5); // already gone
        assert_eq!(timers.count_for(b"a"), 1);
        assert_eq!(timers.pop_due(TimeDomain::EventTime, 10).unwrap().key, b"b");
        assert_eq!((timers.count_for(b"b"), timers.total()), (0, 1));
    }

    #[test]
    fn timers_fire_in_order_and_only_when_due() {
        let mut t = TimerService::default();
        t.register(EventTime, b"b", 20);
        t.register(EventTime, b"a", 10);
        t.register(EventTime, b"a", 30);
        assert_eq!(t.pop_due(EventTime, 5), None);
        assert_eq!(t.pop_due(EventTime, 25).unwrap(), Timer { timestamp: 10, key: b"a".to_vec(), namespace: vec![] });
        assert_eq!(t.pop_due(EventTime, 25).unwrap(), Timer { timestamp: 20, key: b"b".to_vec(), namespace: vec![] });
        assert_eq!(t.pop_due(EventTime, 25), None);
        assert_eq!(t.next_timestamp(EventTime), Some(30));
    }

    #[test]
    fn a_timer_is_unique_per_key_time_and_domain() {
        let mut t = TimerService::default();
        t.register(EventTime, b"k", 10);
        t.register(EventTime, b"k", 10);
        t.register(ProcessingTime, b"k", 10);
        t.register(EventTime, b"other", 10);
        assert_eq!(t.len(EventTime), 2);
        assert_eq!(t.len(ProcessingTime), 1);
    }

    #[test]
    fn timers_survive_encoding() {
        let mut t = TimerService::default();
        t.register(EventTime, b"k", -5);
        t.register(ProcessingTime, b"", 1_700_000_000_000);
        t.register_in(EventTime, b"k", b"window", -5);
        t.register_in(ProcessingTime, b"", b"w", 7);
        assert_eq!(t.len(EventTime), 2, "namespaces keep timers apart");
        let mut restored = TimerService::default();
        for bytes in t.encoded(128) {
            assert!(restored.insert_encoded(&bytes));
        }
        assert_eq!(restored.encoded(128), t.encoded(128));
        assert!(!restored.insert_encoded(&[0, 1, 7, 0]));
    }

    #[test]
    fn deleted_timers_do_not_fire_and_can_be_registered_again() {
        let mut t = TimerService::default();
        t.register(EventTime, b"k", 10);
        t.delete(EventTime, b"k", 10);
        t.delete(EventTime, b"missing", 99);
        assert_eq!(t.pop_due(EventTime, i64::MAX), None);
        t.register(EventTime, b"k", 10);
        assert_eq!(t.pop_due(EventTime, 10).map(|t| t.timestamp), Some(10));
        assert_eq!(t.iter().count(), 0);
    }
}
