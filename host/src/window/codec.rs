//! How the elements of evicting windows are stored in state.

use crate::stream::Event;

/// Window contents of evicting windows: `timestamp flag | timestamp | value`.
pub(super) fn encode_event(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + event.value.len());
    match event.timestamp {
        Some(ts) => {
            out.push(1);
            out.extend_from_slice(&ts.to_be_bytes());
        }
        None => out.extend_from_slice(&[0; 9]),
    }
    out.extend_from_slice(&event.value);
    out
}

pub(super) fn decode_event(bytes: &[u8]) -> Option<Event> {
    let (head, value) = bytes.split_at_checked(9)?;
    let timestamp = (head[0] == 1).then(|| i64::from_be_bytes(head[1..9].try_into().expect("8 bytes")));
    Some(Event { key: None, value: value.to_vec(), timestamp, headers: Vec::new() })
}
