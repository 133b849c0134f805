//! # Operator state
//!
//! State of an operator subtask rather than of a key: Flink's operator `ListState`
//! (`CheckpointedFunction`). Each list is named and says how it is shared out when the
//! job is restored ([`Redistribution`]). Operator state is small by design and lives
//! on the heap, bounded in bytes; snapshots write it as an entry file beside the keyed
//! state, and a restore redistributes the lists of every old subtask among the new ones
//! exactly as Flink's `RoundRobinOperatorStateRepartitioner` does.

use super::StateError;

/// How a list is shared out among the subtasks when the job is restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redistribution {
    /// Joined in old-subtask order and cut into even consecutive runs, one per new
    /// subtask (the first `total % parallelism` get one more); kept as is when the
    /// parallelism did not change.
    Split,
    /// Every new subtask gets every item of every old subtask, in subtask order.
    Union,
}

impl Redistribution {
    fn tag(self) -> u8 {
        match self {
            Redistribution::Split => 0,
            Redistribution::Union => 1,
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            0 => Some(Redistribution::Split),
            1 => Some(Redistribution::Union),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Redistribution::Split => "split",
            Redistribution::Union => "union",
        }
    }
}

/// One named list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorList {
    pub name: String,
    pub redistribution: Redistribution,
    pub items: Vec<Vec<u8>>,
}

/// One named broadcast map (Flink's broadcast state): the same on every subtask.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BroadcastMap {
    pub name: String,
    pub entries: std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
}

/// What one old subtask saved: its lists and its broadcast maps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Saved {
    pub lists: Vec<OperatorList>,
    pub maps: Vec<BroadcastMap>,
}

/// The operator lists and broadcast maps of one subtask.
#[derive(Debug, Default, Clone)]
pub struct OperatorState {
    lists: Vec<OperatorList>,
    maps: Vec<BroadcastMap>,
    /// Whether broadcast maps may be written now: only while the task processes an
    /// element of its broadcast input.
    pub broadcast_writable: bool,
    bytes: u64,
    /// Most bytes the lists may hold together (0: no limit).
    limit: u64,
    restored: bool,
}

/// A list's index in its [`OperatorState`], as handed to guests.
pub type ListId = usize;
/// A broadcast map's index in its [`OperatorState`], as handed to guests.
pub type MapId = usize;

/// The snapshot tag of broadcast maps (lists use their redistribution's).
const BROADCAST_TAG: u8 = 2;

impl OperatorState {
    /// Bounds the bytes of every item of every list together.
    pub fn set_limit(&mut self, bytes: u64) {
        self.limit = bytes;
    }

    /// Whether this state came from a checkpoint or savepoint.
    pub fn is_restored(&self) -> bool {
        self.restored
    }

    /// Marks the state as restored (a live upgrade hands it to a new instance).
    pub fn mark_restored(&mut self) {
        self.restored = true;
    }

    /// Declares (or re-attaches to) the list called `name`.
    pub fn declare(&mut self, name: &str, redistribution: Redistribution) -> Result<ListId, StateError> {
        let bad = |reason| StateError::BadName { name: name.into(), reason };
        super::check_state_name(name)?;
        if let Some(id) = self.lists.iter().position(|l| l.name == name) {
            if self.lists[id].redistribution != redistribution {
                return Err(bad(match redistribution {
                    Redistribution::Split => "declared as a split list, but it is a union list",
                    Redistribution::Union => "declared as a union list, but it is a split list",
                }));
            }
            return Ok(id);
        }
        self.lists.push(OperatorList { name: name.into(), redistribution, items: Vec::new() });
        Ok(self.lists.len() - 1)
    }

    pub fn get(&self, id: ListId) -> &[Vec<u8>] {
        self.lists.get(id).map_or(&[], |l| &l.items)
    }

    /// Appends `item` to list `id`.
    pub fn add(&mut self, id: ListId, item: Vec<u8>) -> Result<(), StateError> {
        self.reserve(item.len() as u64)?;
        if let Some(list) = self.lists.get_mut(id) {
            list.items.push(item);
        }
        Ok(())
    }

    /// Replaces every item of list `id`.
    pub fn update(&mut self, id: ListId, items: Vec<Vec<u8>>) -> Result<(), StateError> {
        let old = self.lists.get(id).map_or(0, |l| l.items.iter().map(|i| i.len() as u64).sum());
        let new: u64 = items.iter().map(|i| i.len() as u64).sum();
        self.bytes -= old;
        if let Err(e) = self.reserve(new) {
            self.bytes += old;
            return Err(e);
        }
        if let Some(list) = self.lists.get_mut(id) {
            list.items = items;
        }
        Ok(())
    }

    pub fn clear(&mut self, id: ListId) {
        if let Some(list) = self.lists.get_mut(id) {
            self.bytes -= list.items.iter().map(|i| i.len() as u64).sum::<u64>();
            list.items.clear();
        }
    }

    /// Declares (or re-attaches to) the broadcast map called `name`.
    pub fn declare_broadcast(&mut self, name: &str) -> Result<MapId, StateError> {
        super::check_state_name(name)?;
        if let Some(id) = self.maps.iter().position(|m| m.name == name) {
            return Ok(id);
        }
        self.maps.push(BroadcastMap { name: name.into(), entries: Default::default() });
        Ok(self.maps.len() - 1)
    }

    pub fn broadcast(&self, id: MapId) -> Option<&BroadcastMap> {
        self.maps.get(id)
    }

    fn writable(&self, id: MapId) -> Result<&str, StateError> {
        let name = self.maps.get(id).map_or("", |m| m.name.as_str());
        if !self.broadcast_writable {
            return Err(StateError::ReadOnly(format!(
                "broadcast state `{name}` is read-only here: only the broadcast input (process-element-2 \
                 on a broadcast edge) may change it, so that every subtask holds the same state (as in Flink)"
            )));
        }
        Ok(name)
    }

    /// Stores `value` under `key` in broadcast map `id` (broadcast input only).
    pub fn broadcast_put(&mut self, id: MapId, key: Vec<u8>, value: Vec<u8>) -> Result<(), StateError> {
        self.writable(id)?;
        let old = self.maps.get(id).and_then(|m| m.entries.get(&key)).map_or(0, |v| (key.len() + v.len()) as u64);
        self.bytes -= old;
        if let Err(e) = self.reserve((key.len() + value.len()) as u64) {
            self.bytes += old;
            return Err(e);
        }
        if let Some(map) = self.maps.get_mut(id) {
            map.entries.insert(key, value);
        }
        Ok(())
    }

    /// Removes `key` from broadcast map `id` (broadcast input only).
    pub fn broadcast_remove(&mut self, id: MapId, key: &[u8]) -> Result<(), StateError> {
        self.writable(id)?;
        if let Some(value) = self.maps.get_mut(id).and_then(|m| m.entries.remove(key)) {
            self.bytes -= (key.len() + value.len()) as u64;
        }
        Ok(())
    }

    /// Removes every entry of broadcast map `id` (broadcast input only).
    pub fn broadcast_clear(&mut self, id: MapId) -> Result<(), StateError> {
        self.writable(id)?;
        if let Some(map) = self.maps.get_mut(id) {
            self.bytes -= map.entries.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum::<u64>();
            map.entries.clear();
        }
        Ok(())
    }

    fn reserve(&mut self, bytes: u64) -> Result<(), StateError> {
        if self.limit > 0 && self.bytes + bytes > self.limit {
            return Err(StateError::Budget(format!(
                "operator state would hold {} bytes, more than limits.key_state_mib ({} bytes)",
                self.bytes + bytes,
                self.limit
            )));
        }
        self.bytes += bytes;
        Ok(())
    }

    /// Whether no list or broadcast map was declared.
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty() && self.maps.is_empty()
    }

    /// The entries of a snapshot: per list, a declaration (name length, name,
    /// redistribution) with an empty value, then per item the same key with its index
    /// and the item as value. Lists keep their order; empty lists are kept too.
    pub fn entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut entries = Vec::new();
        for list in &self.lists {
            let mut declaration = Vec::with_capacity(list.name.len() + 7);
            declaration.extend_from_slice(&(list.name.len() as u16).to_be_bytes());
            declaration.extend_from_slice(list.name.as_bytes());
            declaration.push(list.redistribution.tag());
            for (index, item) in list.items.iter().enumerate() {
                let mut key = declaration.clone();
                key.extend_from_slice(&(index as u32).to_be_bytes());
                entries.push((key, item.clone()));
            }
            entries.insert(entries.len() - list.items.len(), (declaration, Vec::new()));
        }
        for map in &self.maps {
            let mut declaration = Vec::with_capacity(map.name.len() + 3);
            declaration.extend_from_slice(&(map.name.len() as u16).to_be_bytes());
            declaration.extend_from_slice(map.name.as_bytes());
            declaration.push(BROADCAST_TAG);
            entries.push((declaration.clone(), Vec::new()));
            for (key, value) in &map.entries {
                let mut entry = declaration.clone();
                entry.push(1);
                entry.extend_from_slice(key);
                entries.push((entry, value.clone()));
            }
        }
        entries
    }

    /// What one old subtask saved, from the entries of its snapshot.
    pub fn decode(entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Saved, StateError> {
        let corrupt = || StateError::Corrupt { what: "operator state".into() };
        let mut saved = Saved::default();
        for (key, item) in entries {
            let len = u16::from_be_bytes(key.get(..2).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?) as usize;
            let name = std::str::from_utf8(key.get(2..2 + len).ok_or_else(corrupt)?).map_err(|_| corrupt())?;
            let tag = *key.get(2 + len).ok_or_else(corrupt)?;
            let declaration = key.len() == 2 + len + 1;
            if tag == BROADCAST_TAG {
                match saved.maps.iter_mut().find(|m| m.name == name) {
                    None if declaration => saved.maps.push(BroadcastMap { name: name.into(), entries: Default::default() }),
                    Some(map) if !declaration && key[2 + len + 1] == 1 => {
                        map.entries.insert(key[2 + len + 2..].to_vec(), item);
                    }
                    _ => return Err(corrupt()),
                }
                continue;
            }
            let redistribution = Redistribution::from_tag(tag).ok_or_else(corrupt)?;
            if !declaration && key.len() != 2 + len + 1 + 4 {
                return Err(corrupt());
            }
            match saved.lists.iter_mut().find(|l| l.name == name) {
                Some(list) if list.redistribution == redistribution && !declaration => list.items.push(item),
                Some(_) => return Err(corrupt()),
                None if declaration => saved.lists.push(OperatorList { name: name.into(), redistribution, items: Vec::new() }),
                None => return Err(corrupt()),
            }
        }
        Ok(saved)
    }

    /// The state of new subtask `subtask` of `parallelism`, from the lists of every old
    /// subtask (in old-subtask order), redistributed as Flink does.
    /// Broadcast maps, the same on every old subtask, come from old subtask
    /// `subtask % old parallelism` (as Flink's broadcast state does).
    pub fn restore(old: &[Saved], subtask: u32, parallelism: u32) -> Result<OperatorState, StateError> {
        let mut state = OperatorState { restored: true, ..Default::default() };
        // Each map from old subtask `subtask % old parallelism`, or, should that one
        // never have declared it (the SDKs declare on first use), from the first that did.
        let preferred = old.get(subtask as usize % old.len().max(1));
        for map in old.iter().flat_map(|s| &s.maps) {
            if state.maps.iter().any(|m| m.name == map.name) {
                continue;
            }
            let chosen = preferred.and_then(|p| p.maps.iter().find(|m| m.name == map.name)).unwrap_or(map);
            state.bytes += chosen.entries.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum::<u64>();
            state.maps.push(chosen.clone());
        }
        // Every name, in the order the old subtasks first have it.
        let mut names: Vec<(String, Redistribution)> = Vec::new();
        for list in old.iter().flat_map(|s| &s.lists) {
            match names.iter().find(|(n, _)| *n == list.name) {
                Some((_, r)) if *r != list.redistribution => {
                    return Err(StateError::Corrupt {
                        what: format!("operator list `{}` (saved both as {} and {})", list.name, r.name(), list.redistribution.name()),
                    });
                }
                Some(_) => {}
                None => names.push((list.name.clone(), list.redistribution)),
            }
        }
        let unchanged = old.len() == parallelism as usize;
        for (name, redistribution) in names {
            let of = |s: &Saved| s.lists.iter().find(|l| l.name == name).map(|l| l.items.clone()).unwrap_or_default();
            let items = match redistribution {
                Redistribution::Union => old.iter().flat_map(of).collect(),
                Redistribution::Split if unchanged => old.get(subtask as usize).map(of).unwrap_or_default(),
                Redistribution::Split => {
                    let all: Vec<Vec<u8>> = old.iter().flat_map(of).collect();
                    let (base, extra) = (all.len() / parallelism as usize, all.len() % parallelism as usize);
                    let i = subtask as usize;
                    let start = i * base + i.min(extra);
                    let count = base + usize::from(i < extra);
                    all[start..start + count].to_vec()
                }
            };
            state.bytes += items.iter().map(|i| i.len() as u64).sum::<u64>();
            state.lists.push(OperatorList { name, redistribution, items });
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subtask(lists: &[(&str, Redistribution, &[&str])]) -> Saved {
        let mut state = OperatorState::default();
        for (name, r, items) in lists {
            let id = state.declare(name, *r).unwrap();
            for item in *items {
                state.add(id, item.as_bytes().to_vec()).unwrap();
            }
        }
        OperatorState::decode(state.entries()).unwrap()
    }

    fn items(state: &OperatorState, name: &str) -> Vec<String> {
        let list = state.lists.iter().find(|l| l.name == name).unwrap();
        list.items.iter().map(|i| String::from_utf8(i.clone()).unwrap()).collect()
    }

    #[test]
    fn split_lists_are_cut_into_even_consecutive_runs_as_flink_does() {
        use Redistribution::Split;
        // 2 subtasks with 3 and 4 items, restored at 3: 7 = 3 + 2 + 2.
        let old = vec![subtask(&[("buf", Split, &["a", "b", "c"])]), subtask(&[("buf", Split, &["d", "e", "f", "g"])])];
        let at = |i, p| items(&OperatorState::restore(&old, i, p).unwrap(), "buf");
        assert_eq!(at(0, 3), ["a", "b", "c"]);
        assert_eq!(at(1, 3), ["d", "e"]);
        assert_eq!(at(2, 3), ["f", "g"]);
        // At 1, everything; at an unchanged parallelism, each its own.
        assert_eq!(at(0, 1), ["a", "b", "c", "d", "e", "f", "g"]);
        assert_eq!(at(0, 2), ["a", "b", "c"]);
        assert_eq!(at(1, 2), ["d", "e", "f", "g"]);
        // More subtasks than items: the last get nothing.
        assert_eq!(at(6, 8), ["g"]);
        assert!(at(7, 8).is_empty());
    }

    #[test]
    fn union_lists_go_whole_to_every_subtask() {
        use Redistribution::{Split, Union};
        let old = vec![
            subtask(&[("seen", Union, &["0:5"]), ("buf", Split, &["x"])]),
            subtask(&[("seen", Union, &["1:7"])]),
        ];
        for (i, p) in [(0, 3), (1, 3), (2, 3), (0, 2), (0, 1)] {
            assert_eq!(items(&OperatorState::restore(&old, i, p).unwrap(), "seen"), ["0:5", "1:7"]);
        }
        assert!(OperatorState::restore(&old, 0, 3).unwrap().is_restored());
    }

    #[test]
    fn names_modes_and_budgets_are_checked() {
        let mut state = OperatorState::default();
        let id = state.declare("buf", Redistribution::Split).unwrap();
        assert_eq!(state.declare("buf", Redistribution::Split).unwrap(), id);
        assert!(state.declare("buf", Redistribution::Union).unwrap_err().to_string().contains("split list"));
        assert!(state.declare("", Redistribution::Split).is_err());
        state.set_limit(10);
        state.add(id, vec![0; 6]).unwrap();
        assert!(matches!(state.add(id, vec![0; 6]), Err(StateError::Budget(_))));
        state.update(id, vec![vec![0; 10]]).unwrap();
        state.clear(id);
        state.add(id, vec![0; 10]).unwrap();
        assert!(OperatorState::decode(vec![(vec![0, 9, b'x'], vec![])]).is_err(), "a truncated key is corrupt");
    }

    #[test]
    fn broadcast_maps_are_written_only_from_the_broadcast_input_and_restored_everywhere() {
        let mut state = OperatorState::default();
        let id = state.declare_broadcast("tiers").unwrap();
        let refused = state.broadcast_put(id, b"c1".to_vec(), b"gold".to_vec()).unwrap_err();
        assert!(refused.to_string().contains("broadcast state `tiers` is read-only here"), "{refused}");
        state.broadcast_writable = true;
        state.broadcast_put(id, b"c1".to_vec(), b"gold".to_vec()).unwrap();
        state.broadcast_put(id, vec![], b"empty key".to_vec()).unwrap();
        state.broadcast_remove(id, b"nope").unwrap();
        let saved = OperatorState::decode(state.entries()).unwrap();
        assert_eq!(saved.maps[0].entries.len(), 2);
        for (subtask, parallelism) in [(0, 1), (2, 3), (4, 5)] {
            let restored = OperatorState::restore(&[saved.clone(), saved.clone()], subtask, parallelism).unwrap();
            assert_eq!(restored.broadcast(0).unwrap().entries.get(&b"c1"[..]).unwrap(), b"gold");
        }
        // An old subtask that never declared the map: the others' copy is restored.
        let restored = OperatorState::restore(&[Saved::default(), saved.clone()], 2, 3).unwrap();
        assert_eq!(restored.broadcast(0).unwrap().entries.len(), 2);
    }
}
