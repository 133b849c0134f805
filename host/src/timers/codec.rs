//! The stored layout of timers (see the module's documentation): entry keys by key
//! group, tag and time, and the runs they form.

use super::{TimeDomain, Timer};

/// A run of timers: one key group's timers of one tag.
pub(super) type Run = (u16, u8);

/// A run's first timer, ordered as timers fire (see [`Timer`]), whatever their key
/// groups.
pub(super) type Head = (Timer, Run);

pub(super) fn head(run: Run, entry: &[u8]) -> Head {
    let (_, _, timestamp, key, namespace) = decode(entry).expect("a stored timer");
    (Timer { timestamp, key: key.to_vec(), namespace: namespace.to_vec() }, run)
}

pub(super) fn tag(domain: TimeDomain, namespace: &[u8]) -> u8 {
    domain.index() as u8 + if namespace.is_empty() { 0 } else { 2 }
}

pub(super) fn domain_of(tag: u8) -> TimeDomain {
    if tag.is_multiple_of(2) { TimeDomain::EventTime } else { TimeDomain::ProcessingTime }
}

pub(super) fn encode_time(timestamp: i64) -> [u8; 8] {
    ((timestamp as u64) ^ (1 << 63)).to_be_bytes()
}

/// Writes a timer's entry key into `out` (cleared first).
pub(super) fn encode(out: &mut Vec<u8>, key_group: u16, domain: TimeDomain, key: &[u8], namespace: &[u8], timestamp: i64) {
    out.clear();
    out.extend_from_slice(&key_group.to_be_bytes());
    out.push(tag(domain, namespace));
    out.extend_from_slice(&encode_time(timestamp));
    if namespace.is_empty() {
        out.extend_from_slice(key);
    } else {
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(namespace);
    }
}

/// A timer entry key taken apart: key group, tag, timestamp, key, namespace.
pub(super) type Decoded<'a> = (u16, u8, i64, &'a [u8], &'a [u8]);

/// Takes a timer entry key apart.
pub(super) fn decode(bytes: &[u8]) -> Option<Decoded<'_>> {
    let key_group = u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?);
    let tag = *bytes.get(2)?;
    if tag > 3 {
        return None;
    }
    let timestamp = (u64::from_be_bytes(bytes.get(3..11)?.try_into().ok()?) ^ (1 << 63)) as i64;
    let rest = &bytes[11..];
    if tag < 2 {
        return Some((key_group, tag, timestamp, rest, &[]));
    }
    let (len, rest) = rest.split_at_checked(4)?;
    let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
    let (key, namespace) = rest.split_at_checked(len)?;
    // An empty namespace is stored in the first layout only.
    (!namespace.is_empty()).then_some((key_group, tag, timestamp, key, namespace))
}
