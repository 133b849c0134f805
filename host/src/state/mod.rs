//! # Keyed state
//!
//! Operators keep state per key, declared by name as value, list or map state. The
//! [`KeyedState`] facade turns a (state, key group, key) access into a byte key laid
//! out by [`key`] and hands it to a [`StateBackend`]. This issue ships the
//! [`MemoryBackend`]; durable backends implement the same trait over the same layout.
//!
//! ```
//! use weir::state::{KeyedState, MemoryBackend, StateKind};
//! let mut state = KeyedState::new("counter", Box::new(MemoryBackend::new()));
//! let count = state.declare(StateKind::Value, "count").unwrap();
//! state.value_set(count, 3, b"alice", b"41").unwrap();
//! assert_eq!(state.value_get(count, 3, b"alice").unwrap().as_deref(), Some(&b"41"[..]));
//! ```

pub mod key;
mod memory;
mod rocks;

use std::collections::HashMap;
use std::path::PathBuf;

pub use key::{StateKind, StateNamespace};
pub use memory::MemoryBackend;
pub use rocks::RocksBackend;

/// A failure of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The backend failed to read or write.
    #[error("state backend: {0}")]
    Backend(String),
    /// Stored bytes could not be decoded (a corrupt store).
    #[error("corrupt state entry for {what}")]
    Corrupt { what: String },
    /// A state name is unusable.
    #[error("state name {name:?}: {reason}")]
    BadName { name: String, reason: &'static str },
}

/// Byte-level storage for the keyed state of one operator subtask.
///
/// Keys follow the layout of [`key`]; list values use [`key::append_list_item`]'s
/// encoding so that backends can append without reading the whole list.
pub trait StateBackend: Send {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError>;
    fn delete(&mut self, key: &[u8]) -> Result<(), StateError>;
    /// Appends one item to the list value stored under `key`.
    fn append(&mut self, key: &[u8], item: &[u8]) -> Result<(), StateError>;
    /// Visits every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(
        &self,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StateError>;
    /// Deletes every entry whose key starts with `prefix`.
    fn delete_prefix(&mut self, prefix: &[u8]) -> Result<(), StateError>;
    /// How many entries are stored.
    fn len(&self) -> usize;
    /// `memory` or `rocksdb`, as recorded in checkpoints.
    fn name(&self) -> &'static str;
    /// Captures the state as it is now. The returned writer does the slow part (writing
    /// files) and may run on another thread while processing goes on.
    fn snapshot(&mut self, target: &SnapshotTarget) -> Result<Box<dyn SnapshotWriter>, StateError>;
}

/// Where a task writes its part of a checkpoint.
#[derive(Debug, Clone)]
pub struct SnapshotTarget {
    /// The checkpoint root directory.
    pub root: PathBuf,
    /// The task's directory for this checkpoint, relative to `root`.
    pub task_dir: String,
    /// The task's directory for files shared between checkpoints, relative to `root`.
    pub shared_dir: String,
}

/// The deferred part of a snapshot: writes files and returns them.
pub trait SnapshotWriter: Send {
    fn write(self: Box<Self>) -> Result<Vec<crate::checkpoint::FileEntry>, String>;
}

/// Identifies a declared state of one operator subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateId(u32);

/// The longest accepted state name, in bytes.
pub const MAX_STATE_NAME: usize = 256;

/// The declared states of one operator subtask over its backend.
pub struct KeyedState {
    uid: String,
    backend: Box<dyn StateBackend>,
    namespaces: Vec<StateNamespace>,
    by_name: HashMap<(StateKind, String), StateId>,
    scratch: Vec<u8>,
}

impl KeyedState {
    pub fn new(uid: &str, backend: Box<dyn StateBackend>) -> Self {
        KeyedState {
            uid: uid.to_string(),
            backend,
            namespaces: Vec::new(),
            by_name: HashMap::new(),
            scratch: Vec::with_capacity(128),
        }
    }

    /// Declares a state (or returns the id of the same declaration made earlier).
    pub fn declare(&mut self, kind: StateKind, name: &str) -> Result<StateId, StateError> {
        if name.is_empty() || name.len() > MAX_STATE_NAME {
            return Err(StateError::BadName {
                name: name.chars().take(64).collect(),
                reason: "must be 1 to 256 bytes long",
            });
        }
        if let Some(id) = self.by_name.get(&(kind, name.to_string())) {
            return Ok(*id);
        }
        let id = StateId(self.namespaces.len() as u32);
        self.namespaces.push(StateNamespace::new(&self.uid, kind, name));
        self.by_name.insert((kind, name.to_string()), id);
        Ok(id)
    }

    /// The namespace of a declared state.
    pub fn namespace(&self, id: StateId) -> &StateNamespace {
        &self.namespaces[id.0 as usize]
    }

    /// The backend, for snapshots and inspection.
    pub fn backend(&self) -> &dyn StateBackend {
        self.backend.as_ref()
    }

    pub fn backend_mut(&mut self) -> &mut dyn StateBackend {
        self.backend.as_mut()
    }

    fn key(&mut self, id: StateId, key_group: u16, key: &[u8]) -> &[u8] {
        self.namespaces[id.0 as usize].encode_into(&mut self.scratch, key_group, key);
        &self.scratch
    }

    fn map_key(&mut self, id: StateId, key_group: u16, key: &[u8], user_key: &[u8]) -> &[u8] {
        self.namespaces[id.0 as usize].encode_into(&mut self.scratch, key_group, key);
        self.scratch.extend_from_slice(user_key);
        &self.scratch
    }

    pub fn value_get(
        &mut self,
        id: StateId,
        kg: u16,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StateError> {
        self.key(id, kg, key);
        self.backend.get(&self.scratch)
    }

    pub fn value_set(
        &mut self,
        id: StateId,
        kg: u16,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StateError> {
        self.key(id, kg, key);
        self.backend.put(&self.scratch, value)
    }

    /// Clears a value or list state for one key.
    pub fn clear(&mut self, id: StateId, kg: u16, key: &[u8]) -> Result<(), StateError> {
        self.key(id, kg, key);
        if self.namespaces[id.0 as usize].kind == StateKind::Map {
            self.backend.delete_prefix(&self.scratch)
        } else {
            self.backend.delete(&self.scratch)
        }
    }

    pub fn list_append(
        &mut self,
        id: StateId,
        kg: u16,
        key: &[u8],
        item: &[u8],
    ) -> Result<(), StateError> {
        self.key(id, kg, key);
        self.backend.append(&self.scratch, item)
    }

    pub fn list_get(
        &mut self,
        id: StateId,
        kg: u16,
        key: &[u8],
    ) -> Result<Vec<Vec<u8>>, StateError> {
        self.key(id, kg, key);
        match self.backend.get(&self.scratch)? {
            None => Ok(Vec::new()),
            Some(raw) => key::list_items(&raw).ok_or_else(|| StateError::Corrupt {
                what: format!("list state `{}`", self.namespaces[id.0 as usize].name),
            }),
        }
    }

    pub fn map_get(
        &mut self,
        id: StateId,
        kg: u16,
        key: &[u8],
        user_key: &[u8],
    ) -> Result<Option<Vec<u8>>, StateError> {
        self.map_key(id, kg, key, user_key);
        self.backend.get(&self.scratch)
    }

    pub fn map_put(
        &mut self,
        id: StateId,
        kg: u16,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<(), StateError> {
        self.map_key(id, kg, key, user_key);
        self.backend.put(&self.scratch, value)
    }

    pub fn map_remove(
        &mut self,
        id: StateId,
        kg: u16,
        key: &[u8],
        user_key: &[u8],
    ) -> Result<(), StateError> {
        self.map_key(id, kg, key, user_key);
        self.backend.delete(&self.scratch)
    }

    /// Visits the (user key, value) entries of one key's map in user-key order.
    pub fn map_scan(
        &mut self,
        id: StateId,
        kg: u16,
        key: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StateError> {
        self.key(id, kg, key);
        let prefix_len = self.scratch.len();
        self.backend.scan_prefix(&self.scratch, &mut |k, v| visit(&k[prefix_len..], v))
    }
}

#[cfg(test)]
pub(crate) mod conformance {
    //! Behaviour every backend must share; each backend's tests call [`run_all`].
    use super::*;

    pub fn run_all(make: &dyn Fn() -> Box<dyn StateBackend>) {
        value_state(make());
        list_state(make());
        map_state(make());
        keys_and_operators_are_isolated(make());
    }

    fn value_state(backend: Box<dyn StateBackend>) {
        let mut s = KeyedState::new("op", backend);
        let v = s.declare(StateKind::Value, "v").unwrap();
        assert_eq!(s.value_get(v, 1, b"k").unwrap(), None);
        s.value_set(v, 1, b"k", b"one").unwrap();
        s.value_set(v, 1, b"k", b"two").unwrap();
        assert_eq!(s.value_get(v, 1, b"k").unwrap(), Some(b"two".to_vec()));
        s.clear(v, 1, b"k").unwrap();
        assert_eq!(s.value_get(v, 1, b"k").unwrap(), None);
        assert_eq!(s.backend().len(), 0);
    }

    fn list_state(backend: Box<dyn StateBackend>) {
        let mut s = KeyedState::new("op", backend);
        let l = s.declare(StateKind::List, "l").unwrap();
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
        let m = s.declare(StateKind::Map, "m").unwrap();
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
    }

    fn keys_and_operators_are_isolated(backend: Box<dyn StateBackend>) {
        let mut s = KeyedState::new("op", backend);
        let v = s.declare(StateKind::Value, "x").unwrap();
        let l = s.declare(StateKind::List, "x").unwrap();
        assert_ne!(v, l, "kinds have separate namespaces");
        assert_eq!(s.declare(StateKind::Value, "x").unwrap(), v, "re-declaring is idempotent");
        s.value_set(v, 1, b"a", b"1").unwrap();
        assert_eq!(s.value_get(v, 1, b"ab").unwrap(), None, "keys are length-delimited");
        assert_eq!(s.value_get(v, 2, b"a").unwrap(), None);
        assert!(s.declare(StateKind::Value, "").is_err());
        assert!(s.declare(StateKind::Value, &"n".repeat(300)).is_err());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_backend_conforms() {
        super::conformance::run_all(&|| Box::new(super::MemoryBackend::new()));
    }
}
