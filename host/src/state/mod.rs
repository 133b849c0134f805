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
//! let count = state.declare(StateKind::Value, "count", None).unwrap();
//! state.value_set(count, 3, b"alice", b"41").unwrap();
//! assert_eq!(state.value_get(count, 3, b"alice").unwrap().as_deref(), Some(&b"41"[..]));
//! ```

pub mod key;
mod memory;
pub mod operator;
#[cfg(feature = "rocksdb")]
mod rocks;
#[cfg(not(feature = "rocksdb"))]
#[path = "rocks_absent.rs"]
mod rocks;
pub mod snapshot;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;

pub use key::{StateKind, StateNamespace};
pub use memory::MemoryBackend;
pub use rocks::BUDGET_CHECK_WRITES;
pub use rocks::RocksBackend;
#[cfg(not(feature = "rocksdb"))]
pub use rocks::ABSENT as ROCKSDB_ABSENT;

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
    /// A write would take the state past its budget ([`StateBudget`]).
    #[error("state budget exceeded: {0}")]
    Budget(String),
    /// A write to state that is read-only where it was made (broadcast state off the
    /// broadcast input).
    #[error("{0}")]
    ReadOnly(String),
}

/// How much keyed state one operator subtask may hold: the job file's `limits`
/// (`state_mib`, `key_state_mib`). Backends enforce it on every write (RocksDB, whose
/// limit is disk, checks its size every [`BUDGET_CHECK_WRITES`] writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateBudget {
    /// Keys and values of the subtask, in bytes.
    pub bytes: u64,
    /// One entry: a value, one key's whole list, or one map entry, in bytes.
    pub entry_bytes: u64,
}

impl StateBudget {
    /// No limit (tests and tools).
    pub const UNLIMITED: StateBudget = StateBudget { bytes: u64::MAX, entry_bytes: u64::MAX };

    pub(crate) fn check_entry(&self, len: usize) -> Result<(), StateError> {
        if len as u64 > self.entry_bytes {
            return Err(StateError::Budget(format!(
                "one state entry (a value, a key's list or a map entry) would hold {len} bytes, more than \
                 limits.key_state_mib allows ({} bytes)",
                self.entry_bytes
            )));
        }
        Ok(())
    }

    pub(crate) fn check_total(&self, bytes: u64) -> Result<(), StateError> {
        if bytes > self.bytes {
            return Err(StateError::Budget(format!(
                "the subtask's state would hold {bytes} bytes, more than limits.state_mib allows ({} bytes)",
                self.bytes
            )));
        }
        Ok(())
    }
}

impl Default for StateBudget {
    fn default() -> Self {
        StateBudget::UNLIMITED
    }
}

/// Byte-level storage for the keyed state of one operator subtask.
///
/// Keys follow the layout of [`key`]; list values use [`key::append_list_item`]'s
/// encoding so that backends can append without reading the whole list.
pub trait StateBackend: Send {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// Appends the value under `key` to `out`; `false` when there is none. Backends that
    /// can, copy it straight from where it lives (no allocation per read).
    fn get_into(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StateError> {
        let value = self.get(key)?;
        if let Some(value) = &value {
            out.extend_from_slice(value);
        }
        Ok(value.is_some())
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError>;
    fn delete(&mut self, key: &[u8]) -> Result<(), StateError>;
    /// Appends one item to the list value stored under `key`.
    fn append(&mut self, key: &[u8], item: &[u8]) -> Result<(), StateError>;
    /// Rewrites the value under `key` in one step: `modify` gets the value (empty and
    /// `false` when there is none) and changes it in place. Backends that can, do it
    /// with one lookup and no copy.
    fn modify(
        &mut self,
        key: &[u8],
        modify: &mut dyn FnMut(&mut Vec<u8>, bool) -> Result<(), String>,
    ) -> Result<Result<(), String>, StateError> {
        let (mut value, existed) = match self.get(key)? {
            Some(value) => (value, true),
            None => (Vec::new(), false),
        };
        if let Err(e) = modify(&mut value, existed) {
            return Ok(Err(e));
        }
        self.put(key, &value)?;
        Ok(Ok(()))
    }
    /// Visits every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(
        &self,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StateError>;
    /// Visits the key of every entry whose key starts with `prefix`, in key order
    /// (backends that keep keys apart from values skip reading the values).
    fn scan_keys(&self, prefix: &[u8], visit: &mut dyn FnMut(&[u8])) -> Result<(), StateError> {
        self.scan_prefix(prefix, &mut |k, _| visit(k))
    }
    /// Visits entries in key order from `start` on, while `visit` returns `true`.
    fn scan_from(
        &self,
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StateError>;
    /// Visits the entries whose key starts with `prefix`, in key order from `start` on,
    /// while `visit` returns `true`. Backends that can, bound the scan to the prefix (so
    /// that RocksDB does not skip deleted entries past it).
    fn scan_prefix_from(
        &self,
        prefix: &[u8],
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StateError> {
        self.scan_from(start, &mut |k, v| k.starts_with(prefix) && visit(k, v))
    }
    /// Deletes every entry whose key starts with `prefix`.
    fn delete_prefix(&mut self, prefix: &[u8]) -> Result<(), StateError>;
    /// How many entries are stored.
    fn len(&self) -> usize;

    /// Limits what later writes may hold (unlimited until set).
    fn set_budget(&mut self, budget: StateBudget);
    /// About how many bytes the state takes (memory: keys and values; RocksDB: its
    /// files and memtables), for metrics.
    fn size_bytes(&self) -> u64;
    /// `memory` or `rocksdb`, as recorded in checkpoints.
    fn name(&self) -> &'static str;
    /// Captures the state as it is now. The returned writer does the slow part (writing
    /// files) and may run on another thread while processing goes on.
    fn snapshot(&mut self, target: &SnapshotTarget) -> Result<Box<dyn SnapshotWriter>, StateError>;
    /// Like [`StateBackend::snapshot`], but in the portable entry-file format that
    /// savepoints use, whatever the backend: one file, `<task dir>/<file>`.
    fn export(&mut self, target: &SnapshotTarget, file: &str) -> Result<Box<dyn SnapshotWriter>, StateError>;
    /// A snapshot or export is coming soon: backends that can, start the slow part of
    /// it now, in the background (RocksDB flushes its memtable, so that the checkpoint
    /// taken at the barrier has little left to flush).
    fn prepare_snapshot(&mut self) {}
    /// Replaces every entry with `entries` (rolling back a failed upgrade).
    fn replace_all(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), StateError> {
        let mut keys = Vec::new();
        self.scan_prefix(&[], &mut |k, _| keys.push(k.to_vec()))?;
        for k in keys {
            self.delete(&k)?;
        }
        for (k, v) in entries {
            self.put(&k, &v)?;
        }
        Ok(())
    }
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
    fn write(self: Box<Self>) -> Result<Vec<snapshot::FileEntry>, String>;
}

/// Time to live of a declared state (the WIT `ttl` record), as Flink's
/// `StateTtlConfig` with `NeverReturnExpired`: `OnCreateAndWrite`, or `OnReadAndWrite`
/// when `refresh_on_read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl {
    pub ttl_ms: u64,
    pub refresh_on_read: bool,
}

/// Prefixes a value with its expiry time (ms since the epoch, u64 BE).
fn stamp(expiry: i64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&(expiry as u64).to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Splits a stamped value into its expiry and the value.
fn unstamp(bytes: &[u8]) -> Option<(i64, &[u8])> {
    let (expiry, value) = bytes.split_at_checked(8)?;
    Some((u64::from_be_bytes(expiry.try_into().ok()?) as i64, value))
}

/// A state an operator declared, as savepoints record it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct DeclaredState {
    pub kind: String,
    pub name: String,
    /// Time to live in ms, when the state has one (its values carry an 8-byte expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// Identifies a declared state of one operator subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateId(u32);

/// The longest accepted state name, in bytes.
pub const MAX_STATE_NAME: usize = 256;

/// A state's name (keyed, operator or broadcast): 1 to [`MAX_STATE_NAME`] bytes. The
/// error quotes at most 64 characters of it.
pub fn check_state_name(name: &str) -> Result<(), StateError> {
    if name.is_empty() || name.len() > MAX_STATE_NAME {
        return Err(StateError::BadName { name: name.chars().take(64).collect(), reason: "must be 1 to 256 bytes long" });
    }
    Ok(())
}

/// The declared states of one operator subtask over its backend.
pub struct KeyedState {
    uid: String,
    backend: Box<dyn StateBackend>,
    namespaces: Vec<StateNamespace>,
    ttls: Vec<Option<Ttl>>,
    by_name: HashMap<(StateKind, String), StateId>,
    scratch: Vec<u8>,
    /// Processing time for TTL decisions, set before each call into the operator.
    now: i64,
    /// Where the background sweep of expired entries continues.
    sweep_cursor: Vec<u8>,
    /// Whether any declared state has a time to live (checked on every call).
    any_ttl: bool,
}

impl KeyedState {
    pub fn new(uid: &str, backend: Box<dyn StateBackend>) -> Self {
        KeyedState {
            uid: uid.to_string(),
            backend,
            namespaces: Vec::new(),
            ttls: Vec::new(),
            by_name: HashMap::new(),
            scratch: Vec::with_capacity(128),
            now: 0,
            sweep_cursor: Vec::new(),
            any_ttl: false,
        }
    }

    /// Declares a state (or returns the id of the same declaration made earlier).
    pub fn declare(&mut self, kind: StateKind, name: &str, ttl: Option<Ttl>) -> Result<StateId, StateError> {
        check_state_name(name)?;
        if let Some(id) = self.by_name.get(&(kind, name.to_string())) {
            if self.ttls[id.0 as usize] != ttl {
                return Err(StateError::BadName {
                    name: name.into(),
                    reason: "was declared before with a different time to live",
                });
            }
            return Ok(*id);
        }
        let id = StateId(self.namespaces.len() as u32);
        self.namespaces.push(StateNamespace::new(&self.uid, kind, name));
        self.ttls.push(ttl);
        self.any_ttl |= ttl.is_some();
        self.by_name.insert((kind, name.to_string()), id);
        Ok(id)
    }

    /// The operator whose state this is.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// Every declared state.
    pub fn declared(&self) -> Vec<DeclaredState> {
        self.namespaces
            .iter()
            .zip(&self.ttls)
            .map(|(ns, ttl)| DeclaredState {
                kind: ns.kind.to_string(),
                name: ns.name.clone(),
                ttl_ms: ttl.map(|t| t.ttl_ms),
            })
            .collect()
    }

    /// Whether any declared state has a time to live.
    pub fn has_ttl(&self) -> bool {
        self.any_ttl
    }

    /// Sets the processing time (ms) that TTL decisions use.
    pub fn set_now(&mut self, now: i64) {
        self.now = now;
    }

    fn ttl(&self, id: StateId) -> Option<Ttl> {
        self.ttls[id.0 as usize]
    }

    fn expiry(&self, ttl: Ttl) -> i64 {
        self.now.saturating_add(ttl.ttl_ms as i64)
    }

    /// What is stored for `value` of state `id`: stamped with its expiry under a TTL.
    fn stored<'a>(&self, id: StateId, value: &'a [u8]) -> Cow<'a, [u8]> {
        match self.ttl(id) {
            None => Cow::Borrowed(value),
            Some(ttl) => Cow::Owned(stamp(self.expiry(ttl), value)),
        }
    }

    /// Reads the stamped entry under the scratch key: `None` when absent or expired
    /// (an expired entry is deleted); refreshed when the TTL says so.
    fn read_stamped(&mut self, ttl: Ttl, what: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.read_stamped_refreshing(ttl, ttl.refresh_on_read, what)
    }

    fn read_stamped_refreshing(&mut self, ttl: Ttl, refresh: bool, what: &str) -> Result<Option<Vec<u8>>, StateError> {
        let Some(raw) = self.backend.get(&self.scratch)? else { return Ok(None) };
        let (expiry, value) = unstamp(&raw).ok_or_else(|| StateError::Corrupt { what: what.into() })?;
        if expiry <= self.now {
            self.backend.delete(&self.scratch)?;
            return Ok(None);
        }
        if refresh {
            let refreshed = stamp(self.expiry(ttl), value);
            self.backend.put(&self.scratch, &refreshed)?;
        }
        Ok(Some(value.to_vec()))
    }

    /// Deletes up to `budget` expired entries, continuing where the last sweep stopped
    /// (the background cleanup; reads also drop expired entries). Returns how many
    /// entries it looked at.
    pub fn sweep(&mut self, budget: usize) -> Result<usize, StateError> {
        if !self.has_ttl() || budget == 0 {
            return Ok(0);
        }
        let ttl_of: HashMap<(StateKind, &str), Ttl> = self
            .namespaces
            .iter()
            .zip(&self.ttls)
            .filter_map(|(ns, ttl)| Some(((ns.kind, ns.name.as_str()), (*ttl)?)))
            .collect();
        let (now, uid) = (self.now, self.uid.as_str());
        let mut deletes = Vec::new();
        let mut rewrites = Vec::new();
        let mut seen = 0;
        let mut last = None;
        self.backend.scan_from(&self.sweep_cursor, &mut |k, v| {
            seen += 1;
            last = Some(k.to_vec());
            let Some(d) = key::decode(k).filter(|d| d.uid == uid) else { return seen < budget };
            if !ttl_of.contains_key(&(d.kind, d.name)) {
                return seen < budget;
            }
            if d.kind == StateKind::List {
                let items = key::list_items(v).unwrap_or_default();
                let kept: Vec<&Vec<u8>> = items.iter().filter(|i| unstamp(i).is_some_and(|(e, _)| e > now)).collect();
                if kept.is_empty() {
                    deletes.push(k.to_vec());
                } else if kept.len() != items.len() {
                    let mut list = Vec::new();
                    kept.iter().for_each(|i| key::append_list_item(&mut list, i));
                    rewrites.push((k.to_vec(), list));
                }
            } else if unstamp(v).is_none_or(|(e, _)| e <= now) {
                deletes.push(k.to_vec());
            }
            seen < budget
        })?;
        for k in deletes {
            self.backend.delete(&k)?;
        }
        for (k, v) in rewrites {
            self.backend.put(&k, &v)?;
        }
        self.sweep_cursor = match last.filter(|_| seen >= budget) {
            Some(mut k) => {
                k.push(0);
                k
            }
            None => Vec::new(),
        };
        Ok(seen)
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
        match self.ttl(id) {
            None => self.backend.get(&self.scratch),
            Some(ttl) => self.read_stamped(ttl, "value state"),
        }
    }

    /// Reads a value for a batch that carries it to the guest (contract 0.3's loaded
    /// states), appending it to `out` (`false` when there is none: the batch's loaded
    /// values are one buffer). As [`KeyedState::value_get`], except that the read does
    /// not refresh a time to live; whether the guest read it comes back later
    /// ([`KeyedState::value_touch`]).
    pub fn value_load_into(&mut self, id: StateId, kg: u16, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StateError> {
        self.key(id, kg, key);
        let Some(ttl) = self.ttl(id) else { return self.backend.get_into(&self.scratch, out) };
        let value = self.read_stamped_refreshing(ttl, false, "value state")?;
        if let Some(value) = &value {
            out.extend_from_slice(value);
        }
        Ok(value.is_some())
    }

    /// The guest read a loaded value: refreshes its time to live when the state's
    /// says reads do, as a [`KeyedState::value_get`] would have.
    pub fn value_touch(&mut self, id: StateId, kg: u16, key: &[u8]) -> Result<(), StateError> {
        if self.ttl(id).is_some_and(|ttl| ttl.refresh_on_read) {
            self.value_get(id, kg, key)?;
        }
        Ok(())
    }

    pub fn value_set(
        &mut self,
        id: StateId,
        kg: u16,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StateError> {
        let value = self.stored(id, value);
        self.key(id, kg, key);
        self.backend.put(&self.scratch, &value)
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
        let item = self.stored(id, item);
        self.key(id, kg, key);
        self.backend.append(&self.scratch, &item)
    }

    pub fn list_get(
        &mut self,
        id: StateId,
        kg: u16,
        key: &[u8],
    ) -> Result<Vec<Vec<u8>>, StateError> {
        self.key(id, kg, key);
        let corrupt = || StateError::Corrupt { what: format!("list state `{}`", self.namespaces[id.0 as usize].name) };
        let Some(raw) = self.backend.get(&self.scratch)? else { return Ok(Vec::new()) };
        let items = key::list_items(&raw).ok_or_else(corrupt)?;
        let Some(ttl) = self.ttl(id) else { return Ok(items) };
        let mut live = Vec::with_capacity(items.len());
        for item in &items {
            let (expiry, value) = unstamp(item).ok_or_else(corrupt)?;
            if expiry > self.now {
                live.push(value.to_vec());
            }
        }
        if live.len() != items.len() || ttl.refresh_on_read {
            if live.is_empty() {
                self.backend.delete(&self.scratch)?;
            } else {
                let expiry = self.expiry(ttl);
                let mut list = Vec::new();
                for value in &live {
                    key::append_list_item(&mut list, &stamp(expiry, value));
                }
                self.backend.put(&self.scratch, &list)?;
            }
        }
        Ok(live)
    }

    pub fn map_get(
        &mut self,
        id: StateId,
        kg: u16,
        key: &[u8],
        user_key: &[u8],
    ) -> Result<Option<Vec<u8>>, StateError> {
        self.map_key(id, kg, key, user_key);
        match self.ttl(id) {
            None => self.backend.get(&self.scratch),
            Some(ttl) => self.read_stamped(ttl, "map state"),
        }
    }

    pub fn map_put(
        &mut self,
        id: StateId,
        kg: u16,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<(), StateError> {
        let value = self.stored(id, value);
        self.map_key(id, kg, key, user_key);
        self.backend.put(&self.scratch, &value)
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

    /// Appends one item to the list kept under `user_key` of one key's map: a list per
    /// namespace, as window contents use (map states used this way have no TTL).
    pub fn map_append(
        &mut self,
        id: StateId,
        kg: u16,
        key: &[u8],
        user_key: &[u8],
        item: &[u8],
    ) -> Result<(), StateError> {
        debug_assert!(self.ttl(id).is_none(), "namespaced lists have no TTL");
        self.map_key(id, kg, key, user_key);
        self.backend.append(&self.scratch, item)
    }

    /// Rewrites the entry under `user_key` of one key's map in place (see
    /// [`StateBackend::modify`]); `modify`'s error is passed through. Map states used
    /// this way have no TTL.
    pub fn map_modify(
        &mut self,
        id: StateId,
        kg: u16,
        key: &[u8],
        user_key: &[u8],
        modify: &mut dyn FnMut(&mut Vec<u8>, bool) -> Result<(), String>,
    ) -> Result<Result<(), String>, StateError> {
        debug_assert!(self.ttl(id).is_none(), "in-place updates have no TTL");
        self.map_key(id, kg, key, user_key);
        self.backend.modify(&self.scratch, modify)
    }

    /// The items appended by [`KeyedState::map_append`] under `user_key`.
    pub fn map_list(
        &mut self,
        id: StateId,
        kg: u16,
        key: &[u8],
        user_key: &[u8],
    ) -> Result<Vec<Vec<u8>>, StateError> {
        self.map_key(id, kg, key, user_key);
        let Some(raw) = self.backend.get(&self.scratch)? else { return Ok(Vec::new()) };
        key::list_items(&raw)
            .ok_or_else(|| StateError::Corrupt { what: format!("list in map state `{}`", self.namespaces[id.0 as usize].name) })
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
        let Some(ttl) = self.ttl(id) else {
            return self.backend.scan_prefix(&self.scratch, &mut |k, v| visit(&k[prefix_len..], v));
        };
        let mut entries = Vec::new();
        self.backend.scan_prefix(&self.scratch, &mut |k, v| entries.push((k.to_vec(), v.to_vec())))?;
        for (k, v) in entries {
            let (expiry, value) = unstamp(&v).ok_or_else(|| StateError::Corrupt { what: "map state".into() })?;
            if expiry <= self.now {
                self.backend.delete(&k)?;
                continue;
            }
            if ttl.refresh_on_read {
                self.backend.put(&k, &stamp(self.expiry(ttl), value))?;
            }
            visit(&k[prefix_len..], value);
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod conformance;

#[cfg(test)]
mod tests {
    #[test]
    fn memory_backend_conforms() {
        super::conformance::run_all(&|| Box::new(super::MemoryBackend::new()));
    }
}
