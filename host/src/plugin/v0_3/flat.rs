//! Flat batches of contract 0.3: weir's events into an `input-batch` (with the loaded
//! value states' values for the batch's distinct keys), and a `batch-result` back into
//! emitted events and state writes.

use std::collections::HashMap;

use foldhash::fast::RandomState;

use super::bindings::weir::operator::types::{
    ElementHeader, EmittedEvents, FlatEvents, Header, InputBatch, LoadedValues, StateUpdates, UpdateOp,
};
use crate::operator::{
    ContractError, MAX_EMIT_BYTES_PER_CALL, MAX_EMITS_PER_CALL, OperatorContext, OperatorFailure, check_value_size,
};
use crate::state::StateError;
use crate::stream::Event;

/// The buffers of one call into the guest, kept between calls for their capacity.
pub struct FlatBatch {
    input: InputBatch,
    /// Each distinct key of the batch (when some state is loaded): the range of its
    /// bytes in `input.events.keys`, and its key group.
    distinct: Vec<(u32, u32, u16)>,
}

impl Default for FlatBatch {
    fn default() -> Self {
        FlatBatch {
            input: InputBatch { events: empty_events(), key_slots: Vec::new(), loaded: Vec::new() },
            distinct: Vec::new(),
        }
    }
}

fn empty_events() -> FlatEvents {
    FlatEvents {
        flags: Vec::new(),
        keys: Vec::new(),
        key_ends: Vec::new(),
        values: Vec::new(),
        value_ends: Vec::new(),
        timestamps: Vec::new(),
        headers: Vec::new(),
    }
}

/// `flat-events.flags`: the element has a key.
const HAS_KEY: u8 = 1;
/// `flat-events.flags`: the element has an event time.
const HAS_TIMESTAMP: u8 = 2;

/// A key slot of an element without a key (the guest's loaded state has no value for it).
const NO_KEY: u32 = u32::MAX;

impl FlatBatch {
    /// The batch to hand to the guest.
    pub fn input(&self) -> &InputBatch {
        &self.input
    }

    /// Lays `events` (the first elements of the context's run) out flat and loads the
    /// context's loaded states for their distinct keys.
    pub fn fill(&mut self, events: &[Event], ctx: &mut OperatorContext) -> Result<(), StateError> {
        let flat = &mut self.input.events;
        clear_events(flat);
        for (index, event) in events.iter().enumerate() {
            let mut flags = 0u8;
            if let Some(key) = &event.key {
                flags |= HAS_KEY;
                flat.keys.extend_from_slice(key);
            }
            flat.key_ends.push(flat.keys.len() as u32);
            flat.values.extend_from_slice(&event.value);
            flat.value_ends.push(flat.values.len() as u32);
            match event.timestamp {
                Some(ts) => {
                    flags |= HAS_TIMESTAMP;
                    flat.timestamps.push(ts);
                }
                None => flat.timestamps.push(0),
            }
            flat.flags.push(flags);
            for header in &event.headers {
                flat.headers.push(ElementHeader {
                    element: index as u32,
                    header: Header { name: header.name.clone(), value: header.value.clone() },
                });
            }
        }
        self.input.key_slots.clear();
        self.distinct.clear();
        self.input.loaded.truncate(ctx.loaded.len());
        if ctx.loaded.is_empty() {
            return Ok(());
        }
        // The distinct keys, in order of first appearance.
        let keys = &self.input.events.keys;
        let mut slots: HashMap<&[u8], u32, RandomState> = HashMap::with_capacity_and_hasher(events.len(), RandomState::default());
        let mut start = 0u32;
        for (index, &end) in self.input.events.key_ends.iter().enumerate() {
            // Keyed state follows the edge (a keyed edge), not whether the event has a key.
            let slot = if ctx.run.is_keyed(index) {
                let key = &keys[start as usize..end as usize];
                *slots.entry(key).or_insert_with(|| {
                    self.distinct.push((start, end, ctx.run.key_group(index)));
                    (self.distinct.len() - 1) as u32
                })
            } else {
                NO_KEY
            };
            self.input.key_slots.push(slot);
            start = end;
        }
        while self.input.loaded.len() < ctx.loaded.len() {
            self.input.loaded.push(LoadedValues { present: Vec::new(), values: Vec::new(), ends: Vec::new() });
        }
        for (loaded, &id) in self.input.loaded.iter_mut().zip(&ctx.loaded) {
            loaded.present.clear();
            loaded.values.clear();
            loaded.ends.clear();
            for &(start, end, key_group) in &self.distinct {
                let key = &keys[start as usize..end as usize];
                let present = ctx.state.value_load_into(id, key_group, key, &mut loaded.values)?;
                loaded.present.push(present as u8);
                loaded.ends.push(loaded.values.len() as u32);
            }
        }
        Ok(())
    }

    /// Writes what the batch did to the loaded states, in one pass.
    pub fn write_back(&self, updates: &[StateUpdates], ctx: &mut OperatorContext) -> Result<(), OperatorFailure> {
        if updates.len() != ctx.loaded.len() {
            return Err(bad_result(format!(
                "{} state updates for {} loaded states",
                updates.len(),
                ctx.loaded.len()
            )));
        }
        let keys = &self.input.events.keys;
        for (update, &id) in updates.iter().zip(&ctx.loaded) {
            if update.ops.len() != self.distinct.len() || update.ends.len() != self.distinct.len() {
                return Err(bad_result(format!(
                    "state updates for {} and {} keys, but the batch has {} distinct keys",
                    update.ops.len(),
                    update.ends.len(),
                    self.distinct.len()
                )));
            }
            let mut from = 0usize;
            for ((op, &end), &(start, key_end, key_group)) in update.ops.iter().zip(&update.ends).zip(&self.distinct) {
                let end = end as usize;
                let value = update.values.get(from..end).ok_or_else(|| bad_result("state update ends out of order".into()))?;
                from = end;
                let key = &keys[start as usize..key_end as usize];
                let written = match op {
                    UpdateOp::Untouched => Ok(()),
                    UpdateOp::Read => ctx.state.value_touch(id, key_group, key),
                    UpdateOp::Set => {
                        check_value_size(value).map_err(|e| keyed(e, key))?;
                        ctx.state.value_set(id, key_group, key, value)
                    }
                    UpdateOp::Clear => ctx.state.clear(id, key_group, key),
                };
                written.map_err(|e| match e {
                    over @ StateError::Budget(_) => keyed(ContractError::State(over), key),
                    other => OperatorFailure::State(other),
                })?;
            }
        }
        Ok(())
    }
}

fn clear_events(flat: &mut FlatEvents) {
    flat.flags.clear();
    flat.keys.clear();
    flat.key_ends.clear();
    flat.values.clear();
    flat.value_ends.clear();
    flat.timestamps.clear();
    flat.headers.clear();
}

fn bad_result(reason: String) -> OperatorFailure {
    OperatorFailure::Contract(ContractError::BatchResult { reason }.to_string())
}

fn keyed(error: ContractError, key: &[u8]) -> OperatorFailure {
    OperatorFailure::Contract(format!("{error} (key {})", crate::error::printable_key(key)))
}

/// Hands the events a batch emitted to the context, each attributed to its element.
/// Events of elements at or after `processed` are dropped (the element that failed
/// delivers nothing, as in 0.2). A malformed result, or an element that emitted past
/// the per-element limits, breaks the contract.
pub fn deliver(emitted: EmittedEvents, processed: u32, ctx: &mut OperatorContext) -> Result<(), ContractError> {
    let EmittedEvents { events, elements, ports, outputs } = emitted;
    let count = events.flags.len();
    let bad = |reason: &str| ContractError::BatchResult { reason: reason.into() };
    if [events.key_ends.len(), events.value_ends.len(), events.timestamps.len(), elements.len(), ports.len()]
        .iter()
        .any(|&n| n != count)
    {
        return Err(bad("the emitted events' buffers have different lengths"));
    }
    if !elements.is_sorted() {
        return Err(bad("emitted events are not in element order"));
    }
    let mut headers = events.headers.into_iter().peekable();
    let (mut key_from, mut value_from) = (0usize, 0usize);
    let (mut element, mut element_events, mut element_bytes) = (u32::MAX, 0usize, 0usize);
    for index in 0..count {
        let (key_end, value_end) = (events.key_ends[index] as usize, events.value_ends[index] as usize);
        let key = events.keys.get(key_from..key_end).ok_or_else(|| bad("emitted key ends out of order"))?;
        let value = events.values.get(value_from..value_end).ok_or_else(|| bad("emitted value ends out of order"))?;
        (key_from, value_from) = (key_end, value_end);
        let mut event_headers = Vec::new();
        while let Some(h) = headers.next_if(|h| h.element as usize == index) {
            event_headers.push(crate::stream::Header { name: h.header.name, value: h.header.value });
        }
        let at = elements[index];
        if at >= processed {
            continue;
        }
        if at != element {
            (element, element_events, element_bytes) = (at, 0, 0);
        }
        element_events += 1;
        element_bytes += key.len() + value.len() + event_headers.iter().map(|h| h.name.len() + h.value.len()).sum::<usize>();
        if element_events > MAX_EMITS_PER_CALL || element_bytes > MAX_EMIT_BYTES_PER_CALL {
            return Err(ContractError::EmitLimit);
        }
        let flags = events.flags[index];
        let output = match ports[index] {
            0 => None,
            port => Some(outputs.get(port as usize - 1).ok_or_else(|| bad("an emitted event names an output not in `outputs`"))?.as_str()),
        };
        let mut event = ctx.spares.take();
        let timestamp = (flags & HAS_TIMESTAMP != 0).then_some(events.timestamps[index]);
        event.refill((flags & HAS_KEY != 0).then_some(key), value, timestamp);
        event.headers = event_headers;
        ctx.emit_from_batch(at, output, event);
    }
    if headers.next().is_some() {
        return Err(bad("an emitted header names no emitted event, or headers are out of order"));
    }
    Ok(())
}
