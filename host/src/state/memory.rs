//! The in-memory state backend: an ordered map per subtask. Fast, and lost with the
//! process.
//!
//! The map is persistent (`imbl::OrdMap`, a B-tree whose nodes are shared between
//! copies), so a snapshot takes a copy in constant time and the task goes on writing
//! while another thread writes the copy to disk: the first write to a node after a
//! snapshot copies that node only (copy-on-write), as Flink's heap backend does with its
//! copy-on-write state table.

use std::ops::Bound;

use imbl::OrdMap;

use super::{SnapshotTarget, SnapshotWriter, StateBackend, StateError, key};
use super::snapshot::{FileEntry, read_entries, write_file};

/// Keyed state held in an ordered map, keys laid out by [`key`].
#[derive(Debug, Default)]
pub struct MemoryBackend {
    entries: OrdMap<Vec<u8>, Vec<u8>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend holding `entries` (a savepoint restore).
    pub fn from_entries(entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Self {
        MemoryBackend { entries: entries.into_iter().collect() }
    }

    /// Rebuilds the state from the entry files of a snapshot under `root`.
    pub fn restore(root: &std::path::Path, files: &[FileEntry]) -> Result<Self, String> {
        let mut entries = OrdMap::new();
        for file in files {
            read_entries(&root.join(&file.path), |k, v| {
                entries.insert(k, v);
            })?;
        }
        Ok(MemoryBackend { entries })
    }

    fn prefix_range<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)> + 'a {
        self.entries
            .range::<_, [u8]>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
    }
}

impl StateBackend for MemoryBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.entries.get(key).cloned())
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        match self.entries.get_mut(key) {
            Some(existing) => {
                existing.clear();
                existing.extend_from_slice(value);
            }
            None => {
                self.entries.insert(key.to_vec(), value.to_vec());
            }
        }
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StateError> {
        self.entries.remove(key);
        Ok(())
    }

    fn append(&mut self, key: &[u8], item: &[u8]) -> Result<(), StateError> {
        match self.entries.get_mut(key) {
            Some(list) => key::append_list_item(list, item),
            None => {
                let mut list = Vec::with_capacity(item.len() + 4);
                key::append_list_item(&mut list, item);
                self.entries.insert(key.to_vec(), list);
            }
        }
        Ok(())
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
        for (k, v) in self.entries.range::<_, [u8]>((Bound::Included(start), Bound::Unbounded)) {
            if !visit(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn delete_prefix(&mut self, prefix: &[u8]) -> Result<(), StateError> {
        let doomed: Vec<Vec<u8>> = self.prefix_range(prefix).map(|(k, _)| k.clone()).collect();
        for k in doomed {
            self.entries.remove(&k);
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn name(&self) -> &'static str {
        "memory"
    }

    /// A copy of the map in constant time (its nodes are shared until written); the
    /// file is written by the returned writer.
    fn snapshot(&mut self, target: &SnapshotTarget) -> Result<Box<dyn SnapshotWriter>, StateError> {
        Ok(Box::new(MemorySnapshot { entries: self.entries.clone(), target: target.clone() }))
    }

    /// Memory snapshots are already portable entry files.
    fn export(&mut self, target: &SnapshotTarget) -> Result<Box<dyn SnapshotWriter>, StateError> {
        self.snapshot(target)
    }
}

struct MemorySnapshot {
    entries: OrdMap<Vec<u8>, Vec<u8>>,
    target: SnapshotTarget,
}

impl SnapshotWriter for MemorySnapshot {
    fn write(self: Box<Self>) -> Result<Vec<FileEntry>, String> {
        let relative = format!("{}/state.ent", self.target.task_dir);
        let entries = self.entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
        Ok(vec![write_file(&self.target.root, &relative, entries)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::snapshot::read_entries;

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
