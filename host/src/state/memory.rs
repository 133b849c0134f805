//! The in-memory state backend: an ordered map per subtask. Fast, and lost with the
//! process; snapshots of it are full copies.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::{StateBackend, StateError, key};

/// Keyed state held in an ordered map, keys laid out by [`key`].
#[derive(Debug, Default)]
pub struct MemoryBackend {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
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
}
