//! The timer service on every store: order, budgets, snapshots, restores.

use super::stored::RUN_CACHE;
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
    let mut rng = crate::test_rng::Rng::new(0x2545_f491_4f6c_dd1du64);
    let mut next = move |n: u64| rng.below(n);
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
