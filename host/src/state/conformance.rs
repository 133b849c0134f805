//! Behaviour every backend must share; each backend's tests call [`run_all`].

use super::*;

pub fn run_all(make: &dyn Fn() -> Box<dyn StateBackend>) {
    value_state(make());
    list_state(make());
    map_state(make());
    keys_and_operators_are_isolated(make());
    time_to_live(make());
}

fn value_state(backend: Box<dyn StateBackend>) {
    let mut s = KeyedState::new("op", backend);
    let v = s.declare(StateKind::Value, "v", None).unwrap();
    assert_eq!(s.value_get(v, 1, b"k").unwrap(), None);
    s.value_set(v, 1, b"k", b"one").unwrap();
    s.value_set(v, 1, b"k", b"two").unwrap();
    assert_eq!(s.value_get(v, 1, b"k").unwrap(), Some(b"two".to_vec()));
    // Loading appends to what the buffer holds (the batch's loaded values are one buffer).
    let mut loaded = b"one".to_vec();
    assert!(s.value_load_into(v, 1, b"k", &mut loaded).unwrap());
    assert!(!s.value_load_into(v, 1, b"other", &mut loaded).unwrap());
    assert_eq!(loaded, b"onetwo");
    s.clear(v, 1, b"k").unwrap();
    assert_eq!(s.value_get(v, 1, b"k").unwrap(), None);
    assert_eq!(s.backend().len(), 0);
}

fn list_state(backend: Box<dyn StateBackend>) {
    let mut s = KeyedState::new("op", backend);
    let l = s.declare(StateKind::List, "l", None).unwrap();
    assert!(s.list_get(l, 0, b"k").unwrap().is_empty());
    for item in [&b"a"[..], b"", b"ccc"] {
        s.list_append(l, 0, b"k", item).unwrap();
    }
    assert_eq!(s.list_get(l, 0, b"k").unwrap(), vec![b"a".to_vec(), vec![], b"ccc".to_vec()]);
    s.clear(l, 0, b"k").unwrap();
    assert!(s.list_get(l, 0, b"k").unwrap().is_empty());
}

fn map_state(backend: Box<dyn StateBackend>) {
    let mut s = KeyedState::new("op", backend);
    let m = s.declare(StateKind::Map, "m", None).unwrap();
    s.map_put(m, 5, b"k", b"b", b"2").unwrap();
    s.map_put(m, 5, b"k", b"a", b"1").unwrap();
    s.map_put(m, 5, b"k2", b"a", b"other key").unwrap();
    assert_eq!(s.map_get(m, 5, b"k", b"a").unwrap(), Some(b"1".to_vec()));
    let mut seen = Vec::new();
    s.map_scan(m, 5, b"k", &mut |k, v| seen.push((k.to_vec(), v.to_vec()))).unwrap();
    assert_eq!(seen, vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"2".to_vec())]);
    s.map_remove(m, 5, b"k", b"a").unwrap();
    assert_eq!(s.map_get(m, 5, b"k", b"a").unwrap(), None);
    s.clear(m, 5, b"k").unwrap();
    let mut left = 0;
    s.map_scan(m, 5, b"k", &mut |_, _| left += 1).unwrap();
    assert_eq!(left, 0);
    assert_eq!(s.map_get(m, 5, b"k2", b"a").unwrap(), Some(b"other key".to_vec()));
    // A list per namespace (window contents).
    s.map_append(m, 5, b"k", b"w1", b"x").unwrap();
    s.map_append(m, 5, b"k", b"w1", b"y").unwrap();
    s.map_append(m, 5, b"k", b"w2", b"z").unwrap();
    assert_eq!(s.map_list(m, 5, b"k", b"w1").unwrap(), vec![b"x".to_vec(), b"y".to_vec()]);
    assert_eq!(s.map_list(m, 5, b"k", b"w3").unwrap(), Vec::<Vec<u8>>::new());
    // In-place updates see whether the entry existed, and keep what they wrote.
    for expected_existed in [false, true] {
        let result = s
            .map_modify(m, 5, b"k", b"acc", &mut |value, existed| {
                assert_eq!(existed, expected_existed);
                value.push(b'+');
                Ok(())
            })
            .unwrap();
        assert!(result.is_ok());
    }
    assert_eq!(s.map_get(m, 5, b"k", b"acc").unwrap(), Some(b"++".to_vec()));
    let refused = s.map_modify(m, 5, b"k", b"acc", &mut |_, _| Err("no".into())).unwrap();
    assert_eq!(refused, Err("no".to_string()));
}

fn keys_and_operators_are_isolated(backend: Box<dyn StateBackend>) {
    let mut s = KeyedState::new("op", backend);
    let v = s.declare(StateKind::Value, "x", None).unwrap();
    let l = s.declare(StateKind::List, "x", None).unwrap();
    assert_ne!(v, l, "kinds have separate namespaces");
    assert_eq!(s.declare(StateKind::Value, "x", None).unwrap(), v, "re-declaring is idempotent");
    s.value_set(v, 1, b"a", b"1").unwrap();
    assert_eq!(s.value_get(v, 1, b"ab").unwrap(), None, "keys are length-delimited");
    assert_eq!(s.value_get(v, 2, b"a").unwrap(), None);
    assert!(s.declare(StateKind::Value, "", None).is_err());
    assert!(s.declare(StateKind::Value, &"n".repeat(300), None).is_err());
    let ttl = Some(Ttl { ttl_ms: 5, refresh_on_read: false });
    assert!(s.declare(StateKind::Value, "x", ttl).is_err(), "a different TTL is refused");
}

/// Flink's TTL semantics: expired entries are never returned, writes (and reads
/// with refresh-on-read) extend the time to live, and the sweep deletes expired
/// entries nobody reads.
fn time_to_live(backend: Box<dyn StateBackend>) {
    let mut s = KeyedState::new("op", backend);
    let write_ttl = Some(Ttl { ttl_ms: 100, refresh_on_read: false });
    let read_ttl = Some(Ttl { ttl_ms: 100, refresh_on_read: true });
    let v = s.declare(StateKind::Value, "v", write_ttl).unwrap();
    let r = s.declare(StateKind::Value, "r", read_ttl).unwrap();
    let l = s.declare(StateKind::List, "l", write_ttl).unwrap();
    let m = s.declare(StateKind::Map, "m", write_ttl).unwrap();
    let plain = s.declare(StateKind::Value, "plain", None).unwrap();
    s.set_now(1_000);
    s.value_set(v, 1, b"k", b"a").unwrap();
    s.value_set(r, 1, b"k", b"a").unwrap();
    s.list_append(l, 1, b"k", b"early").unwrap();
    s.map_put(m, 1, b"k", b"u", b"1").unwrap();
    s.value_set(plain, 1, b"k", b"stays").unwrap();
    s.set_now(1_060);
    s.list_append(l, 1, b"k", b"late").unwrap();
    assert_eq!(s.value_get(r, 1, b"k").unwrap(), Some(b"a".to_vec()), "read refreshes r to 1160");
    s.set_now(1_100);
    assert_eq!(s.value_get(v, 1, b"k").unwrap(), None, "expired at 1100");
    assert_eq!(s.value_get(r, 1, b"k").unwrap(), Some(b"a".to_vec()));
    assert_eq!(s.list_get(l, 1, b"k").unwrap(), vec![b"late".to_vec()], "per-element TTL");
    assert_eq!(s.map_get(m, 1, b"k", b"u").unwrap(), None);
    assert_eq!(s.value_get(plain, 1, b"k").unwrap(), Some(b"stays".to_vec()));
    // The sweep removes what nobody reads any more.
    s.set_now(10_000);
    s.sweep(1000).unwrap();
    assert_eq!(s.backend().len(), 1, "only the state without TTL is left");
}
