//! Lazy state migration. When an operator's component declares a newer state version
//! than the state it takes over (after a live upgrade, or restored from an older
//! savepoint), every key's state must go through the component's `migrate` before the
//! component sees it. Doing all keys at once pauses the job for as long as that takes
//! (seconds at a million keys through the Wasm boundary), and so would listing them:
//! instead nothing is listed up front. Keys migrate on first access (before an element
//! or timer of the key reaches the operator) and, between calls, a walk goes through
//! the state in key order a few keys at a time, as the TTL sweep does, until it reaches
//! the end.
//!
//! What is migrated is known from two things: the walk's cursor (state keys are laid
//! out key group first, so every key of a key group below the cursor's has been walked)
//! and the keys seen ahead of it — migrated on access, or first written by the new
//! version — in the cursor's key group or later ones. A key group's set is dropped once
//! the walk has passed it, so the set holds at most the keys touched ahead of the walk.
//!
//! Both are part of every checkpoint (`migration.ent` holds the keys seen, the metadata
//! the cursor), so a restored job goes on where it stopped. Checkpoints written before
//! the cursor existed list the keys still to migrate instead; they restore too. A
//! savepoint, which must restore into any component and parallelism, completes the
//! migration first.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use crate::keygroup::assign_key_group;
use crate::operator::{OperatorContext, OperatorFailure, OperatorLogic};
use crate::state::{StateBackend, StateError, key};

/// Keys migrated in the background at a time, at most every [`SLICE_INTERVAL`], before
/// a call into the operator: at most 32 000 keys a second, a quarter or so of the
/// task's time at the Wasm boundary's cost per key, and nothing while the job is idle.
pub const KEYS_PER_SLICE: usize = 32;
pub const SLICE_INTERVAL: Duration = Duration::from_millis(1);
/// State entries a slice looks at, at most, per key it may migrate (entries of other
/// states of the same key, and of keys already seen, are skipped).
const ENTRIES_PER_KEY: usize = 16;

/// A migration in progress from state version `from`.
#[derive(Debug, Clone)]
pub struct Migration {
    pub from: u32,
    /// Where the walk goes on: every state entry before it has been walked.
    cursor: Vec<u8>,
    /// Keys migrated or written by the new version ahead of the walk, per key group
    /// (the cursor's and later ones).
    seen: BTreeMap<u16, HashSet<Vec<u8>>>,
    /// The operator's state namespaces (uid, kind and name, as laid out in state keys)
    /// that hold entries: where a key's state can be.
    namespaces: Vec<Vec<u8>>,
    uid: String,
    max_parallelism: u32,
    /// Keys migrated so far (by this process), for logs.
    migrated: u64,
    /// When the last background slice ran.
    sliced: Instant,
    scratch: Vec<u8>,
}

/// What migrating a key failed on.
#[derive(Debug)]
pub struct MigrationFailure {
    pub key: Vec<u8>,
    pub failure: OperatorFailure,
}

/// Where a migration stands, for a checkpoint: the walk's cursor and the keys seen
/// ahead of it (key group, big-endian, then the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationProgress {
    pub from: u32,
    pub cursor: Vec<u8>,
    pub seen: Vec<Vec<u8>>,
}

impl Migration {
    /// The migration `logic`'s state needs from version `from`, unless the component's
    /// state version is not newer or there is no state. Costs a seek per state and key
    /// group, whatever the number of keys.
    pub fn start(logic: &mut dyn OperatorLogic, from: u32) -> Result<Option<Migration>, OperatorFailure> {
        let to = logic.state_version()?;
        if to <= from {
            return Ok(None);
        }
        let started = Instant::now();
        let migration = Migration::at(logic.context(), from, Vec::new(), BTreeMap::new()).map_err(OperatorFailure::State)?;
        let found_ms = started.elapsed().as_millis() as u64;
        let states = migration.as_ref().map_or(0, |m| m.namespaces.len());
        tracing::info!(operator = %logic.context().info.label(), from, to, states, found_ms, "migrating state, key by key");
        Ok(migration)
    }

    /// The migration a checkpoint left in progress: its keys file (`keys`) read back, as
    /// its cursor says (or, from checkpoints written before there was one, the keys
    /// still to migrate).
    pub fn from_checkpoint(
        ctx: &OperatorContext,
        keys: &std::path::Path,
        pending: &crate::checkpoint::PendingMigration,
    ) -> Result<Option<Migration>, String> {
        let mut entries = Vec::new();
        crate::state::snapshot::read_entries(keys, |key, _| entries.push(key))?;
        let resumed = match &pending.cursor {
            Some(cursor) => Migration::resumed(ctx, MigrationProgress { from: pending.from, cursor: cursor.clone(), seen: entries }),
            None => Migration::resumed_from_list(ctx, pending.from, entries),
        };
        resumed.map_err(|e| format!("resuming a state migration: {e}"))
    }

    /// A migration restored from a checkpoint that recorded its progress.
    fn resumed(ctx: &OperatorContext, progress: MigrationProgress) -> Result<Option<Migration>, StateError> {
        let mut seen: BTreeMap<u16, HashSet<Vec<u8>>> = BTreeMap::new();
        for entry in progress.seen {
            if let [a, b, key @ ..] = entry.as_slice() {
                seen.entry(u16::from_be_bytes([*a, *b])).or_default().insert(key.to_vec());
            }
        }
        Migration::at(ctx, progress.from, progress.cursor, seen)
    }

    /// A migration restored from a checkpoint written before migrations kept a cursor:
    /// it lists the keys still at version `from`. Every other key with state counts as
    /// seen, and the walk starts over (a full scan, once, at restore).
    fn resumed_from_list(
        ctx: &OperatorContext,
        from: u32,
        pending: impl IntoIterator<Item = Vec<u8>>,
    ) -> Result<Option<Migration>, StateError> {
        let pending: HashSet<Vec<u8>> = pending.into_iter().collect();
        if pending.is_empty() {
            return Ok(None);
        }
        let state = &ctx.state;
        let uid = state.uid();
        let mut seen: BTreeMap<u16, HashSet<Vec<u8>>> = BTreeMap::new();
        state.backend().scan_keys(&[], &mut |k| {
            if let Some(d) = key::decode(k).filter(|d| d.uid == uid && !pending.contains(d.key)) {
                let keys = seen.entry(d.key_group).or_default();
                if !keys.contains(d.key) {
                    keys.insert(d.key.to_vec());
                }
            }
        })?;
        Migration::at(ctx, from, Vec::new(), seen)
    }

    fn at(
        ctx: &OperatorContext,
        from: u32,
        cursor: Vec<u8>,
        seen: BTreeMap<u16, HashSet<Vec<u8>>>,
    ) -> Result<Option<Migration>, StateError> {
        let uid = ctx.state.uid().to_string();
        let namespaces = stored_namespaces(ctx.state.backend(), &uid)?;
        if namespaces.is_empty() {
            return Ok(None);
        }
        Ok(Some(Migration {
            from,
            cursor,
            seen,
            namespaces,
            uid,
            max_parallelism: ctx.info.max_parallelism,
            migrated: 0,
            sliced: Instant::now(),
            scratch: Vec::new(),
        }))
    }

    /// Where the migration stands, for a checkpoint.
    pub fn progress(&self) -> MigrationProgress {
        let mut seen = Vec::new();
        for (group, keys) in &self.seen {
            for k in keys {
                let mut entry = Vec::with_capacity(2 + k.len());
                entry.extend_from_slice(&group.to_be_bytes());
                entry.extend_from_slice(k);
                seen.push(entry);
            }
        }
        seen.sort();
        MigrationProgress { from: self.from, cursor: self.cursor.clone(), seen }
    }

    /// Keys migrated by this process so far.
    pub fn migrated(&self) -> u64 {
        self.migrated
    }

    /// The key group the walk is in.
    fn walked_to(&self) -> u16 {
        match self.cursor.as_slice() {
            [] => 0,
            [a] => u16::from_be_bytes([*a, 0]),
            [a, b, ..] => u16::from_be_bytes([*a, *b]),
        }
    }

    /// Migrates `key` if it has not been yet. The current key is left unset.
    pub fn key(&mut self, logic: &mut dyn OperatorLogic, key: &[u8]) -> Result<(), MigrationFailure> {
        let group = assign_key_group(key, self.max_parallelism);
        if group < self.walked_to() {
            return Ok(());
        }
        let seen = self.seen.entry(group).or_default();
        if seen.contains(key) {
            return Ok(());
        }
        seen.insert(key.to_vec());
        let backend = logic.context().state.backend();
        let stored = has_state(backend, &self.namespaces, group, key, &mut self.scratch)
            .map_err(|e| MigrationFailure { key: key.to_vec(), failure: OperatorFailure::State(e) })?;
        if !stored {
            return Ok(());
        }
        self.migrated += 1;
        migrate_one(logic, key, self.from).map_err(|failure| MigrationFailure { key: key.to_vec(), failure })
    }

    /// A background slice, if one is due; whether the walk has more to do.
    pub fn background(&mut self, logic: &mut dyn OperatorLogic) -> Result<bool, MigrationFailure> {
        if self.sliced.elapsed() < SLICE_INTERVAL {
            return Ok(true);
        }
        self.sliced = Instant::now();
        self.some(logic, KEYS_PER_SLICE)
    }

    /// Walks on until up to `count` keys were migrated; whether the walk has more to do.
    pub fn some(&mut self, logic: &mut dyn OperatorLogic, count: usize) -> Result<bool, MigrationFailure> {
        let state_failure = |e: StateError| MigrationFailure { key: Vec::new(), failure: OperatorFailure::State(e) };
        let mut found: Vec<(u16, Vec<u8>)> = Vec::new();
        let (mut visited, mut stopped_at) = (0usize, None);
        let limit = count * ENTRIES_PER_KEY;
        let (uid, seen) = (self.uid.as_str(), &self.seen);
        logic
            .context()
            .state
            .backend()
            .scan_from(&self.cursor, &mut |k, _| {
                visited += 1;
                if let Some(d) = key::decode(k).filter(|d| d.uid == uid) {
                    let fresh = seen.get(&d.key_group).is_none_or(|keys| !keys.contains(d.key));
                    if fresh && !found.iter().any(|(g, f)| *g == d.key_group && f == d.key) {
                        found.push((d.key_group, d.key.to_vec()));
                    }
                }
                if found.len() >= count || visited >= limit {
                    stopped_at = Some(k.to_vec());
                    return false;
                }
                true
            })
            .map_err(state_failure)?;
        // Every key found is seen before any migrates: what a migration writes for a key
        // lies at or after the cursor, and must not be walked as old state.
        for (group, key) in &found {
            self.seen.entry(*group).or_default().insert(key.clone());
        }
        let more = match stopped_at {
            Some(mut last) => {
                last.push(0);
                self.cursor = last;
                true
            }
            None => false,
        };
        let walked = self.walked_to();
        self.seen = self.seen.split_off(&walked);
        for (_, key) in found {
            self.migrated += 1;
            migrate_one(logic, &key, self.from).map_err(|failure| MigrationFailure { key, failure })?;
        }
        if !more {
            tracing::info!(operator = %self.uid, from = self.from, keys = self.migrated, "state migration complete");
        }
        Ok(more)
    }

    /// Migrates keys for at most `budget`; whether the walk has more to do.
    pub fn for_at_most(&mut self, logic: &mut dyn OperatorLogic, budget: Duration) -> Result<bool, MigrationFailure> {
        let started = Instant::now();
        while self.some(logic, 64)? {
            if started.elapsed() >= budget {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Migrates every key left.
    pub fn all(&mut self, logic: &mut dyn OperatorLogic) -> Result<(), MigrationFailure> {
        while self.some(logic, 1024)? {}
        Ok(())
    }
}

/// The namespaces of `uid`'s state that hold entries, found by seeking from one
/// namespace to the next (a seek per namespace and key group, not per entry).
fn stored_namespaces(backend: &dyn StateBackend, uid: &str) -> Result<Vec<Vec<u8>>, StateError> {
    let mut found = std::collections::BTreeSet::new();
    let mut start = Vec::new();
    loop {
        let mut next = None;
        backend.scan_from(&start, &mut |k, _| {
            next = Some(k.to_vec());
            false
        })?;
        let Some(k) = next else { break };
        let skip_to = match key::decode(&k) {
            Some(d) if d.uid == uid => {
                let namespace = 2 + 2 + d.uid.len() + 1 + 2 + d.name.len();
                found.insert(k[2..namespace].to_vec());
                successor(&k[..namespace])
            }
            Some(d) => successor(&k[..4 + d.uid.len()]),
            None => Some([k.as_slice(), &[0]].concat()),
        };
        match skip_to {
            Some(s) => start = s,
            None => break,
        }
    }
    Ok(found.into_iter().collect())
}

/// The first byte string after every string that starts with `prefix`.
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut s = prefix.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xFF {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

/// Whether `key` (in `group`) has an entry in any of `namespaces`: a seek per namespace.
fn has_state(
    backend: &dyn StateBackend,
    namespaces: &[Vec<u8>],
    group: u16,
    key: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<bool, StateError> {
    for namespace in namespaces {
        scratch.clear();
        scratch.extend_from_slice(&group.to_be_bytes());
        scratch.extend_from_slice(namespace);
        scratch.extend_from_slice(&(key.len() as u32).to_be_bytes());
        scratch.extend_from_slice(key);
        let mut found = false;
        backend.scan_prefix_from(scratch, scratch, &mut |_, _| {
            found = true;
            false
        })?;
        if found {
            return Ok(true);
        }
    }
    Ok(false)
}

fn migrate_one(logic: &mut dyn OperatorLogic, key: &[u8], from: u32) -> Result<(), OperatorFailure> {
    logic.context().set_current_key(Some(key));
    let result = logic.migrate(from);
    let ctx = logic.context();
    ctx.set_current_key(None);
    // What a migration emits goes nowhere.
    let mut discarded = Vec::new();
    ctx.swap_emitted(&mut discarded);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MemoryBackend, StateKind, StateNamespace};

    fn entry(uid: &str, kind: StateKind, name: &str, group: u16, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::new();
        StateNamespace::new(uid, kind, name).encode_into(&mut k, group, key);
        k
    }

    #[test]
    fn namespaces_are_found_by_seeking_and_keys_by_prefix() {
        let mut backend = MemoryBackend::new();
        for group in [0u16, 5, 300] {
            for key in [b"a".as_slice(), b"b", b"zz"] {
                backend.put(&entry("count", StateKind::Value, "n", group, key), b"1").unwrap();
                backend.put(&entry("other", StateKind::Value, "n", group, key), b"1").unwrap();
            }
            let mut map = entry("count", StateKind::Map, "seen", group, b"a");
            map.extend_from_slice(b"user");
            backend.put(&map, b"1").unwrap();
        }
        let namespaces = stored_namespaces(&backend, "count").unwrap();
        assert_eq!(namespaces.len(), 2, "the value and the map state of `count`, not `other`'s");
        let mut scratch = Vec::new();
        assert!(has_state(&backend, &namespaces, 5, b"a", &mut scratch).unwrap());
        assert!(has_state(&backend, &namespaces, 300, b"zz", &mut scratch).unwrap());
        assert!(!has_state(&backend, &namespaces, 5, b"c", &mut scratch).unwrap());
        assert!(!has_state(&backend, &namespaces, 6, b"a", &mut scratch).unwrap());
        // A key that is a prefix of another is not mistaken for it.
        assert!(!has_state(&backend, &namespaces, 300, b"z", &mut scratch).unwrap());
        assert!(stored_namespaces(&backend, "absent").unwrap().is_empty());
    }

    #[test]
    fn successors_bound_prefixes() {
        assert_eq!(successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(successor(&[0xFF, 0xFF]), None);
    }
}
