//! The byte layout of state keys, shared by every backend and by snapshots.
//!
//! ```text
//! key group (u16 BE) | uid len (u16 BE) | uid | kind (b'v' | b'l' | b'm')
//!   | name len (u16 BE) | name | key len (u32 BE) | key | user key (map state only)
//! ```
//!
//! Ordering the bytes orders entries by key group first, so each subtask's key groups
//! are one contiguous range, and a map's entries for one key are one contiguous run.

use std::fmt;

/// What kind of state a declared name holds. Kinds have separate namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKind {
    Value,
    List,
    Map,
}

impl StateKind {
    fn tag(self) -> u8 {
        match self {
            StateKind::Value => b'v',
            StateKind::List => b'l',
            StateKind::Map => b'm',
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            b'v' => Some(StateKind::Value),
            b'l' => Some(StateKind::List),
            b'm' => Some(StateKind::Map),
            _ => None,
        }
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StateKind::Value => "value",
            StateKind::List => "list",
            StateKind::Map => "map",
        })
    }
}

/// The part of a state key that is the same for every key: operator uid, kind, name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateNamespace {
    pub kind: StateKind,
    pub name: String,
    encoded: Vec<u8>,
}

impl StateNamespace {
    pub fn new(uid: &str, kind: StateKind, name: &str) -> Self {
        let mut encoded = Vec::with_capacity(uid.len() + name.len() + 5);
        encoded.extend_from_slice(&(uid.len() as u16).to_be_bytes());
        encoded.extend_from_slice(uid.as_bytes());
        encoded.push(kind.tag());
        encoded.extend_from_slice(&(name.len() as u16).to_be_bytes());
        encoded.extend_from_slice(name.as_bytes());
        StateNamespace { kind, name: name.to_string(), encoded }
    }

    /// Writes the full key into `buf` (cleared first): the prefix of every entry of
    /// `key` in this namespace, to which a map appends its user key.
    pub fn encode_into(&self, buf: &mut Vec<u8>, key_group: u16, key: &[u8]) {
        buf.clear();
        buf.extend_from_slice(&key_group.to_be_bytes());
        buf.extend_from_slice(&self.encoded);
        buf.extend_from_slice(&(key.len() as u32).to_be_bytes());
        buf.extend_from_slice(key);
    }
}

/// A state key taken apart, for snapshots, inspection and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedKey<'a> {
    pub key_group: u16,
    pub uid: &'a str,
    pub kind: StateKind,
    pub name: &'a str,
    pub key: &'a [u8],
    pub user_key: &'a [u8],
}

/// Parses a key written by [`StateNamespace::encode_into`]; `None` if it is malformed.
pub fn decode(bytes: &[u8]) -> Option<DecodedKey<'_>> {
    let mut rest = bytes;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        rest = tail;
        Some(head)
    };
    let key_group = u16::from_be_bytes(take(2)?.try_into().ok()?);
    let uid_len = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
    let uid = std::str::from_utf8(take(uid_len)?).ok()?;
    let kind = StateKind::from_tag(take(1)?[0])?;
    let name_len = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
    let name = std::str::from_utf8(take(name_len)?).ok()?;
    let key_len = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
    let key = take(key_len)?;
    Some(DecodedKey { key_group, uid, kind, name, key, user_key: rest })
}

/// Appends one item to an encoded list value (`u32 BE length | bytes`, repeated).
pub fn append_list_item(list: &mut Vec<u8>, item: &[u8]) {
    list.extend_from_slice(&(item.len() as u32).to_be_bytes());
    list.extend_from_slice(item);
}

/// The items of an encoded list value; `None` if it is malformed.
pub fn list_items(mut list: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut items = Vec::new();
    while !list.is_empty() {
        let (len, rest) = list.split_at_checked(4)?;
        let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
        let (item, rest) = rest.split_at_checked(len)?;
        items.push(item.to_vec());
        list = rest;
    }
    Some(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let ns = StateNamespace::new("detect", StateKind::Map, "attempts");
        let mut buf = Vec::new();
        ns.encode_into(&mut buf, 77, b"alice");
        buf.extend_from_slice(b"user-key");
        let d = decode(&buf).unwrap();
        assert_eq!(
            d,
            DecodedKey {
                key_group: 77,
                uid: "detect",
                kind: StateKind::Map,
                name: "attempts",
                key: b"alice",
                user_key: b"user-key",
            }
        );
        assert_eq!(decode(&buf[..5]), None);
    }

    #[test]
    fn key_groups_sort_first() {
        let ns = StateNamespace::new("op", StateKind::Value, "v");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        ns.encode_into(&mut a, 1, b"zzzz");
        ns.encode_into(&mut b, 2, b"a");
        assert!(a < b);
    }

    #[test]
    fn list_values_round_trip() {
        let mut list = Vec::new();
        append_list_item(&mut list, b"one");
        append_list_item(&mut list, b"");
        append_list_item(&mut list, b"three");
        assert_eq!(list_items(&list).unwrap(), vec![b"one".to_vec(), vec![], b"three".to_vec()]);
        assert_eq!(list_items(&list[..list.len() - 1]), None);
    }
}
