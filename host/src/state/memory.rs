//! The in-memory state backend: a table per key group. Fast, and lost with the process.
//!
//! As Flink's heap backend (`CopyOnWriteStateMap`, one per state and key group), state
//! lives in one table per key group: a hash table for point reads and writes (one hash
//! and one probe, no trie to walk) and an ordered set of the table's keys for prefix
//! scans and snapshots in key order. Tables are shared behind `Arc`s, so a snapshot
//! copies the list of tables (constant per key group, not per entry) and the task goes
//! on writing while another thread writes the copy to disk: the first write to a table
//! after a snapshot copies that table only (copy-on-write at key-group granularity, where
//! Flink copies entry by entry). Writes to existing keys touch the hash table only.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use super::snapshot::{FileEntry, read_entries, write_file};
use super::{SnapshotTarget, SnapshotWriter, StateBackend, StateBudget, StateError, key};

/// Longest key stored inline in a table (without a pointer to another allocation to
/// chase when comparing the key found with the one looked up: a cache miss per access,
/// measured at a tenth of a keyed count's time). Most keys are the state's namespace and
/// a short key.
const INLINE_KEY: usize = 48;

/// A key of a [`Table`]: the whole state key (its first two bytes are the key group),
/// inline up to [`INLINE_KEY`] bytes. Hashes and compares as the byte slice it holds,
/// so lookups take `&[u8]`.
type StoredKey = smallvec::SmallVec<[u8; INLINE_KEY]>;

/// The entries of one key group.
#[derive(Debug, Default, Clone)]
struct Table {
    values: HashMap<StoredKey, Vec<u8>, foldhash::fast::RandomState>,
    /// The keys of `values`, in order (for scans and snapshots).
    order: BTreeSet<StoredKey>,
}

/// The table a key belongs to: its key group, the first two bytes of every key laid out
/// by [`key`]. Shorter keys (tests, other layouts) are padded with zeros, which keeps the
/// tables in key order: a key sorts before every longer key it begins.
fn table_of(key: &[u8]) -> usize {
    match key {
        [] => 0,
        [a] => (*a as usize) << 8,
        [a, b, ..] => ((*a as usize) << 8) | *b as usize,
    }
}

/// The table of `key` for writing: made if missing, copied first if a snapshot still
/// shares it. A free function, so that the backend's other fields stay usable while the
/// table is borrowed.
fn table_mut<'a>(tables: &'a mut Vec<Option<Arc<Table>>>, key: &[u8]) -> &'a mut Table {
    let index = table_of(key);
    if tables.len() <= index {
        tables.resize(index + 1, None);
    }
    Arc::make_mut(tables[index].get_or_insert_with(Arc::default))
}

/// Keyed state held in memory, keys laid out by [`key`]: one [`Table`] per key group,
/// indexed by key group.
#[derive(Debug, Default, Clone)]
pub struct MemoryBackend {
    tables: Vec<Option<Arc<Table>>>,
    /// Entries in all tables.
    entries: usize,
    /// Bytes of every key and value, for the budget.
    bytes: u64,
    budget: StateBudget,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend holding `entries` (a savepoint restore).
    pub fn from_entries(entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Self {
        let mut backend = MemoryBackend::new();
        for (k, v) in entries {
            backend.insert(&k, v);
        }
        backend
    }

    /// Rebuilds the state from the entry files of a snapshot under `root`.
    pub fn restore(root: &std::path::Path, files: &[FileEntry]) -> Result<Self, String> {
        let mut backend = MemoryBackend::new();
        for file in files {
            read_entries(&root.join(&file.path), |k, v| backend.insert(&k, v))?;
        }
        Ok(backend)
    }

    fn table(&self, key: &[u8]) -> Option<&Table> {
        self.tables.get(table_of(key))?.as_deref()
    }

    fn insert(&mut self, key: &[u8], value: Vec<u8>) {
        let added = (key.len() + value.len()) as u64;
        let table = table_mut(&mut self.tables, key);
        match table.values.insert(StoredKey::from_slice(key), value) {
            Some(old) => self.bytes = self.bytes + added - (key.len() + old.len()) as u64,
            None => {
                table.order.insert(StoredKey::from_slice(key));
                self.entries += 1;
                self.bytes += added;
            }
        }
    }

    /// Removes `key`; its entry's size in bytes if it was there.
    fn remove(&mut self, key: &[u8]) -> Option<u64> {
        let index = table_of(key);
        let shared = self.tables.get_mut(index)?.as_mut()?;
        // Look before copying a table a snapshot shares: deleting what is absent is common
        // (clearing state that was never set).
        if !shared.values.contains_key(key) {
            return None;
        }
        let table = Arc::make_mut(shared);
        let old = table.values.remove(key)?;
        table.order.remove(key);
        self.entries -= 1;
        let size = (key.len() + old.len()) as u64;
        self.bytes -= size;
        Some(size)
    }

    /// The entries from `start` on, in key order, across tables.
    fn entries_from<'a>(&'a self, start: &'a [u8]) -> impl Iterator<Item = (&'a [u8], &'a Vec<u8>)> + 'a {
        let first = table_of(start);
        self.tables
            .iter()
            .enumerate()
            .skip(first)
            .filter_map(|(index, table)| Some((index, table.as_deref()?)))
            .flat_map(move |(index, table)| {
                let from = if index == first { Bound::Included(start) } else { Bound::Unbounded };
                table
                    .order
                    .range::<[u8], _>((from, Bound::Unbounded))
                    .filter_map(move |k| table.values.get(k.as_slice()).map(|v| (k.as_slice(), v)))
            })
    }

    fn prefix_range<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = (&'a [u8], &'a Vec<u8>)> + 'a {
        self.entries_from(prefix).take_while(move |(k, _)| k.starts_with(prefix))
    }
}

/// Checks a write that makes an entry `new_len` bytes long and the whole state (now
/// `bytes`) `grows` bytes larger against `budget` (shrinking is always allowed). A free
/// function, so that it can run while an entry of the map is borrowed.
fn check(budget: &StateBudget, bytes: u64, new_len: usize, grows: u64) -> Result<(), StateError> {
    budget.check_entry(new_len)?;
    if grows > 0 {
        budget.check_total(bytes + grows)?;
    }
    Ok(())
}

impl StateBackend for MemoryBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.table(key).and_then(|t| t.values.get(key)).cloned())
    }

    fn get_into(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StateError> {
        let value = self.table(key).and_then(|t| t.values.get(key));
        if let Some(value) = value {
            out.extend_from_slice(value);
        }
        Ok(value.is_some())
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        // One lookup: the budget is checked with the entry in hand (this is the hot path
        // of every value-state write).
        if let Some(existing) = table_mut(&mut self.tables, key).values.get_mut(key) {
            let grows = (value.len() as u64).saturating_sub(existing.len() as u64);
            check(&self.budget, self.bytes, value.len(), grows)?;
            self.bytes = self.bytes + value.len() as u64 - existing.len() as u64;
            existing.clear();
            existing.extend_from_slice(value);
            return Ok(());
        }
        check(&self.budget, self.bytes, value.len(), (key.len() + value.len()) as u64)?;
        self.insert(key, value.to_vec());
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StateError> {
        self.remove(key);
        Ok(())
    }

    fn append(&mut self, key: &[u8], item: &[u8]) -> Result<(), StateError> {
        let added = item.len() + 4;
        if let Some(list) = table_mut(&mut self.tables, key).values.get_mut(key) {
            check(&self.budget, self.bytes, list.len() + added, added as u64)?;
            key::append_list_item(list, item);
            self.bytes += added as u64;
            return Ok(());
        }
        check(&self.budget, self.bytes, added, (key.len() + added) as u64)?;
        let mut list = Vec::with_capacity(added);
        key::append_list_item(&mut list, item);
        self.insert(key, list);
        Ok(())
    }

    fn modify(
        &mut self,
        key: &[u8],
        modify: &mut dyn FnMut(&mut Vec<u8>, bool) -> Result<(), String>,
    ) -> Result<Result<(), String>, StateError> {
        if let Some(value) = table_mut(&mut self.tables, key).values.get_mut(key) {
            let before = value.len();
            let result = modify(value, true);
            let after = value.len();
            self.bytes = self.bytes + after as u64 - before as u64;
            if after > before {
                check(&self.budget, self.bytes, after, 0)?;
            }
            return Ok(result);
        }
        let mut value = Vec::new();
        if let Err(e) = modify(&mut value, false) {
            return Ok(Err(e));
        }
        check(&self.budget, self.bytes, value.len(), (key.len() + value.len()) as u64)?;
        self.insert(key, value);
        Ok(Ok(()))
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StateError> {
        for (k, v) in self.prefix_range(prefix) {
            visit(k, v);
        }
        Ok(())
    }

    fn scan_from(
        &self,
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StateError> {
        for (k, v) in self.entries_from(start) {
            if !visit(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn delete_prefix(&mut self, prefix: &[u8]) -> Result<(), StateError> {
        let doomed: Vec<StoredKey> = self.prefix_range(prefix).map(|(k, _)| StoredKey::from_slice(k)).collect();
        for k in doomed {
            self.remove(&k);
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.entries
    }

    fn set_budget(&mut self, budget: StateBudget) {
        self.budget = budget;
    }

    fn size_bytes(&self) -> u64 {
        self.bytes
    }

    fn name(&self) -> &'static str {
        "memory"
    }

    /// A copy of the state in time proportional to the key groups, not the entries (the
    /// tables are shared until written); the file is written by the returned writer.
    fn snapshot(&mut self, target: &SnapshotTarget) -> Result<Box<dyn SnapshotWriter>, StateError> {
        self.export(target, "state.ent")
    }

    /// Memory snapshots are already portable entry files.
    fn export(&mut self, target: &SnapshotTarget, file: &str) -> Result<Box<dyn SnapshotWriter>, StateError> {
        Ok(Box::new(MemorySnapshot { state: self.clone(), target: target.clone(), file: file.to_string() }))
    }
}

struct MemorySnapshot {
    state: MemoryBackend,
    target: SnapshotTarget,
    file: String,
}

impl SnapshotWriter for MemorySnapshot {
    fn write(self: Box<Self>) -> Result<Vec<FileEntry>, String> {
        let relative = format!("{}/{}", self.target.task_dir, self.file);
        let entries = self.state.prefix_range(&[]).map(|(k, v)| (k, v.as_slice()));
        Ok(vec![write_file(&self.target.root, &relative, entries)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::snapshot::read_entries;

    #[test]
    fn the_budget_counts_every_write_and_lets_state_shrink() {
        let mut backend = MemoryBackend::new();
        backend.set_budget(StateBudget { bytes: 100, entry_bytes: 40 });
        backend.put(b"k1", &[0; 30]).unwrap(); // 32 bytes
        backend.append(b"l", &[0; 20]).unwrap(); // 1 + 24
        let error = backend.append(b"l", &[0; 20]).unwrap_err().to_string();
        assert!(error.contains("limits.key_state_mib"), "{error}"); // the list would hold 48
        backend.put(b"k2", &[0; 38]).unwrap(); // 97 in all
        let error = backend.put(b"k3", &[0; 2]).unwrap_err().to_string(); // 101
        assert!(error.contains("limits.state_mib"), "{error}");
        // Overwriting with less, deleting, and deleting by prefix give bytes back.
        backend.put(b"k2", &[0; 8]).unwrap();
        backend.put(b"k3", &[0; 20]).unwrap();
        backend.delete(b"k3").unwrap();
        backend.delete_prefix(b"k").unwrap();
        assert_eq!(backend.bytes, 25);
        backend.delete(b"l").unwrap();
        assert_eq!(backend.bytes, 0);
    }

    #[test]
    fn a_snapshot_holds_the_state_of_its_moment_while_writes_go_on() {
        let mut backend = MemoryBackend::new();
        for i in 0..50_000u32 {
            backend.put(&i.to_be_bytes(), b"before").unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let target = SnapshotTarget { root: dir.path().into(), task_dir: "t".into(), shared_dir: String::new() };
        let writer = backend.snapshot(&target).unwrap();
        // Writes after the snapshot, while its file is being written on another thread.
        let writing = std::thread::spawn(move || writer.write());
        for i in 0..50_000u32 {
            if i % 2 == 0 {
                backend.put(&i.to_be_bytes(), b"after").unwrap();
            } else {
                backend.delete(&i.to_be_bytes()).unwrap();
            }
        }
        backend.put(b"new", b"after").unwrap();
        let files = writing.join().unwrap().unwrap();
        let mut saved = Vec::new();
        read_entries(&dir.path().join(&files[0].path), |k, v| saved.push((k, v))).unwrap();
        assert_eq!(saved.len(), 50_000);
        assert!(saved.iter().all(|(_, v)| v == b"before"));
        assert_eq!(backend.get(&2u32.to_be_bytes()).unwrap().as_deref(), Some(&b"after"[..]));
        assert_eq!(backend.get(&3u32.to_be_bytes()).unwrap(), None);
        assert_eq!(backend.len(), 25_001);
    }

    /// The tables split keys by their first two bytes; across tables, scans must still
    /// see one store in key order. Random operations on short random keys (many tables,
    /// keys shorter than a key group, prefixes that span tables) beside an ordered map,
    /// with snapshots taken in between that must keep what they saw.
    #[test]
    fn tables_per_key_group_behave_as_one_ordered_store() {
        use std::collections::BTreeMap;
        let mut rng = crate::test_rng::Rng::new(0x9e37_79b9_7f4a_7c15u64);
        let mut next = move |n: u64| rng.below(n);
        let mut backend = MemoryBackend::new();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut snapshots: Vec<(MemoryBackend, BTreeMap<Vec<u8>, Vec<u8>>)> = Vec::new();
        let all = |b: &MemoryBackend, prefix: &[u8]| {
            let mut seen = Vec::new();
            b.scan_prefix(prefix, &mut |k, v| seen.push((k.to_vec(), v.to_vec()))).unwrap();
            seen
        };
        for step in 0..20_000 {
            let len = next(5) as usize;
            let key: Vec<u8> = (0..len).map(|_| [0u8, 1, 2, 255][next(4) as usize]).collect();
            match next(10) {
                0..=4 => {
                    let value = vec![next(256) as u8; next(3) as usize];
                    backend.put(&key, &value).unwrap();
                    model.insert(key.clone(), value);
                }
                5 => {
                    backend.append(&key, b"x").unwrap();
                    key::append_list_item(model.entry(key.clone()).or_default(), b"x");
                }
                6..=7 => {
                    backend.delete(&key).unwrap();
                    model.remove(&key);
                }
                8 => {
                    let prefix = &key[..key.len().min(next(3) as usize + 1)];
                    backend.delete_prefix(prefix).unwrap();
                    model.retain(|k, _| !k.starts_with(prefix));
                }
                _ => {
                    let prefix = &key[..next(key.len() as u64 + 1) as usize];
                    let expected: Vec<_> =
                        model.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.clone(), v.clone())).collect();
                    assert_eq!(all(&backend, prefix), expected, "prefix {prefix:?} at step {step}");
                    let mut from = Vec::new();
                    backend.scan_from(&key, &mut |k, _| { from.push(k.to_vec()); from.len() < 5 }).unwrap();
                    let expected: Vec<_> = model.range(key.clone()..).take(5).map(|(k, _)| k.clone()).collect();
                    assert_eq!(from, expected, "from {key:?} at step {step}");
                }
            }
            assert_eq!(backend.get(&key).unwrap(), model.get(&key).cloned());
            if step % 2_000 == 0 {
                snapshots.push((backend.clone(), model.clone()));
            }
        }
        assert_eq!(backend.len(), model.len());
        let bytes: usize = model.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert_eq!(backend.size_bytes(), bytes as u64);
        for (snapshot, then) in &snapshots {
            let expected: Vec<_> = then.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            assert_eq!(all(snapshot, &[]), expected);
        }
    }
}
