//! The in-memory state backend: an ordered map per subtask. Fast, and lost with the
//! process; snapshots of it are full copies.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::{SnapshotTarget, SnapshotWriter, StateBackend, StateError, key};
use super::snapshot::{FileEntry, read_entries, write_file};

/// Keyed state held in an ordered map, keys laid out by [`key`].
#[derive(Debug, Default)]
pub struct MemoryBackend {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
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
        let mut entries = BTreeMap::new();
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
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
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
        for (k, v) in self.entries.range::<[u8], _>((Bound::Included(start), Bound::Unbounded)) {
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

    /// A full copy of the map, taken synchronously (a memory copy); the file is written
    /// by the returned writer.
    fn snapshot(&mut self, target: &SnapshotTarget) -> Result<Box<dyn SnapshotWriter>, StateError> {
        Ok(Box::new(MemorySnapshot { entries: self.entries.clone(), target: target.clone() }))
    }

    /// Memory snapshots are already portable entry files.
    fn export(&mut self, target: &SnapshotTarget) -> Result<Box<dyn SnapshotWriter>, StateError> {
        self.snapshot(target)
    }
}

struct MemorySnapshot {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
    target: SnapshotTarget,
}

impl SnapshotWriter for MemorySnapshot {
    fn write(self: Box<Self>) -> Result<Vec<FileEntry>, String> {
        let relative = format!("{}/state.ent", self.target.task_dir);
        let entries = self.entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
        Ok(vec![write_file(&self.target.root, &relative, entries)?])
    }
}
