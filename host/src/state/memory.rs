//! The in-memory state backend: an ordered map per subtask. Fast, and lost with the
//! process.
//!
//! Its structures are persistent (`imbl`'s hash trie and B-tree, whose nodes are shared
//! between copies), so a snapshot takes a copy in constant time and the task goes on
//! writing while another thread writes the copy to disk: the first write to a node
//! after a snapshot copies that node only (copy-on-write), as Flink's heap backend does
//! with its copy-on-write state table.

use std::ops::Bound;

use imbl::OrdSet;
use imbl::shared_ptr::DefaultSharedPtr;

use super::snapshot::{FileEntry, read_entries, write_file};
use super::{SnapshotTarget, SnapshotWriter, StateBackend, StateBudget, StateError, key};

/// Values by key: a persistent hash trie, so point reads and writes cost one hash and a
/// few pointer hops rather than a dozen byte-string comparisons. Keys up to
/// [`INLINE_KEY`] bytes (most: the state's namespace and a short key) are stored inside
/// the trie's nodes, so that comparing the key found with the one looked up does not
/// chase a pointer to another allocation (a cache miss per access, measured at a tenth
/// of a keyed count's time).
type Values = imbl::GenericHashMap<StoredKey, Vec<u8>, foldhash::fast::RandomState, DefaultSharedPtr>;

/// Longest key stored inline in [`Values`].
const INLINE_KEY: usize = 48;

/// A key of [`Values`]: inline up to [`INLINE_KEY`] bytes. Hashes and compares as the
/// byte slice it holds, so lookups take `&[u8]`.
type StoredKey = smallvec::SmallVec<[u8; INLINE_KEY]>;

/// Keyed state held in memory, keys laid out by [`key`]: values in a hash trie for
/// point access, and every key in an ordered set for prefix scans and snapshots in key
/// order. Writes to existing keys touch the hash trie only.
#[derive(Debug, Default, Clone)]
pub struct MemoryBackend {
    values: Values,
    order: OrdSet<Vec<u8>>,
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
            backend.insert(k, v);
        }
        backend
    }

    /// Rebuilds the state from the entry files of a snapshot under `root`.
    pub fn restore(root: &std::path::Path, files: &[FileEntry]) -> Result<Self, String> {
        let mut backend = MemoryBackend::new();
        for file in files {
            read_entries(&root.join(&file.path), |k, v| backend.insert(k, v))?;
        }
        Ok(backend)
    }

    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.bytes += (key.len() + value.len()) as u64;
        if let Some(old) = self.values.insert(StoredKey::from_slice(&key), value) {
            self.bytes -= (key.len() + old.len()) as u64;
        } else {
            self.order.insert(key);
        }
    }

    /// The keys from `start` on, in order.
    fn keys_from<'a>(&'a self, start: &'a [u8]) -> impl Iterator<Item = &'a Vec<u8>> + 'a {
        self.order.range::<_, [u8]>((Bound::Included(start), Bound::Unbounded))
    }

    fn prefix_range<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)> + 'a {
        self.keys_from(prefix)
            .take_while(move |k| k.starts_with(prefix))
            .filter_map(|k| self.values.get(k.as_slice()).map(|v| (k, v)))
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
        Ok(self.values.get(key).cloned())
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        // One lookup: the budget is checked with the entry in hand (this is the hot path
        // of every value-state write).
        if let Some(existing) = self.values.get_mut(key) {
            let grows = (value.len() as u64).saturating_sub(existing.len() as u64);
            check(&self.budget, self.bytes, value.len(), grows)?;
            self.bytes = self.bytes + value.len() as u64 - existing.len() as u64;
            existing.clear();
            existing.extend_from_slice(value);
            return Ok(());
        }
        check(&self.budget, self.bytes, value.len(), (key.len() + value.len()) as u64)?;
        self.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StateError> {
        if let Some(old) = self.values.remove(key) {
            self.bytes -= (key.len() + old.len()) as u64;
            self.order.remove(key);
        }
        Ok(())
    }

    fn append(&mut self, key: &[u8], item: &[u8]) -> Result<(), StateError> {
        let added = item.len() + 4;
        if let Some(list) = self.values.get_mut(key) {
            check(&self.budget, self.bytes, list.len() + added, added as u64)?;
            key::append_list_item(list, item);
            self.bytes += added as u64;
            return Ok(());
        }
        check(&self.budget, self.bytes, added, (key.len() + added) as u64)?;
        let mut list = Vec::with_capacity(added);
        key::append_list_item(&mut list, item);
        self.insert(key.to_vec(), list);
        Ok(())
    }

    fn modify(
        &mut self,
        key: &[u8],
        modify: &mut dyn FnMut(&mut Vec<u8>, bool) -> Result<(), String>,
    ) -> Result<Result<(), String>, StateError> {
        if let Some(value) = self.values.get_mut(key) {
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
        self.insert(key.to_vec(), value);
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

    fn scan_keys(&self, prefix: &[u8], visit: &mut dyn FnMut(&[u8])) -> Result<(), StateError> {
        for k in self.keys_from(prefix).take_while(|k| k.starts_with(prefix)) {
            visit(k);
        }
        Ok(())
    }

    fn scan_from(
        &self,
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StateError> {
        for k in self.keys_from(start) {
            if let Some(v) = self.values.get(k.as_slice()) {
                if !visit(k, v) {
                    break;
                }
            }
        }
        Ok(())
    }

    fn delete_prefix(&mut self, prefix: &[u8]) -> Result<(), StateError> {
        let doomed: Vec<Vec<u8>> = self.keys_from(prefix).take_while(|k| k.starts_with(prefix)).cloned().collect();
        for k in doomed {
            if let Some(old) = self.values.remove(k.as_slice()) {
                self.bytes -= (k.len() + old.len()) as u64;
            }
            self.order.remove(&k);
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.values.len()
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

    /// A copy of the state in constant time (the trie's and the set's nodes are shared
    /// until written); the file is written by the returned writer.
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
        let entries = self.state.prefix_range(&[]).map(|(k, v)| (k.as_slice(), v.as_slice()));
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
}
