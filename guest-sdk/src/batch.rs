//! The guest side of contract 0.3's flat batches: the batch being processed, the
//! loaded value states' copies for its keys, and the events it emits, gathered here and
//! returned to the host in one result.
//!
//! Everything lives in one thread-local, borrowed briefly by each access (never across
//! a call into the user's operator), so state handles and the context reach it from
//! anywhere during `process_element`.

use std::cell::RefCell;

use crate::bindings::weir::operator::batch as raw;
use crate::bindings::weir::operator::types::{
    BatchResult, ElementError, ElementHeader, EmittedEvents, FlatEvents, InputBatch, LoadedValues,
    StateUpdates, UpdateOp,
};
use crate::{Event, Header};

/// `flat-events.flags`: the element has a key.
const HAS_KEY: u8 = 1;
/// `flat-events.flags`: the element has an event time.
const HAS_TIMESTAMP: u8 = 2;

/// The most events one element may emit (the contract's limit, which the host checks
/// too): an element past it panics, naming the limit.
const MAX_EMITS: usize = 100_000;
/// The most bytes one element may emit, counting keys, values and headers.
const MAX_EMIT_BYTES: usize = 64 << 20;

/// A key slot of an element without a key.
const NO_KEY: u32 = u32::MAX;

/// What the guest holds of one loaded state for one distinct key of the batch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Held {
    /// As loaded; `read` once the operator read it.
    Loaded { read: bool },
    /// Written: the value is `set[slot]`.
    Set,
    Cleared,
}

/// One loaded state's copy for the batch.
struct LoadedCopy {
    values: LoadedValues,
    held: Vec<Held>,
    set: Vec<Vec<u8>>,
}

/// The batch being processed.
struct Current {
    active: bool,
    input: InputBatch,
    /// The element being processed.
    index: u32,
    /// The last element made current on the host's side (`batch.focus`).
    focused: Option<u32>,
    /// An event-time timer was registered during the batch: each later element asks
    /// the host whether the timer falls due before it.
    timer_registered: bool,
    loaded: Vec<LoadedCopy>,
    out: EmittedEvents,
    /// What the current element emitted so far: events and bytes.
    element_emits: usize,
    element_bytes: usize,
}

thread_local! {
    static CURRENT: RefCell<Current> = RefCell::new(Current {
        active: false,
        input: InputBatch { events: empty_events(), key_slots: Vec::new(), loaded: Vec::new() },
        index: 0,
        focused: None,
        timer_registered: false,
        loaded: Vec::new(),
        out: empty_emitted(),
        element_emits: 0,
        element_bytes: 0,
    });
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

fn empty_emitted() -> EmittedEvents {
    EmittedEvents { events: empty_events(), elements: Vec::new(), ports: Vec::new(), outputs: Vec::new() }
}

fn range(ends: &[u32], index: usize) -> std::ops::Range<usize> {
    let start = if index == 0 { 0 } else { ends[index - 1] as usize };
    start..ends[index] as usize
}

/// Makes the current element current on the host's side too, before a call that needs
/// a current key or watermark; a no-op outside of batches and when it already is.
pub(crate) fn focus() {
    CURRENT.with_borrow_mut(|c| {
        if c.active && c.focused != Some(c.index) {
            // `false` cannot happen here: a stop is asked for at the element's start.
            raw::focus(c.index);
            c.focused = Some(c.index);
        }
    });
}

/// An event-time timer was registered: later elements of the batch check for a stop.
pub(crate) fn event_timer_registered() {
    CURRENT.with_borrow_mut(|c| c.timer_registered |= c.active);
}

/// The current element's key, during a batch (`None` outside of one).
pub(crate) fn current_key() -> Option<Option<Vec<u8>>> {
    CURRENT.with_borrow(|c| {
        if !c.active {
            return None;
        }
        let index = c.index as usize;
        let events = &c.input.events;
        Some((events.flags[index] & HAS_KEY != 0).then(|| events.keys[range(&events.key_ends, index)].to_vec()))
    })
}

/// Emits `event` from the current element into the batch's result; `false` outside
/// of a batch (the caller uses the host's collector).
pub(crate) fn emit(output: Option<&str>, event: &Event) -> bool {
    let (in_batch, over) = CURRENT.with_borrow_mut(|c| {
        if !c.active {
            return (false, false);
        }
        c.element_emits += 1;
        c.element_bytes += event.key.as_ref().map_or(0, Vec::len)
            + event.value.len()
            + event.headers.iter().map(|h| h.name.len() + h.value.len()).sum::<usize>();
        if c.element_emits > MAX_EMITS || c.element_bytes > MAX_EMIT_BYTES {
            return (true, true);
        }
        let index = c.index;
        let out = &mut c.out;
        let port = match output {
            None => 0,
            Some(name) => match out.outputs.iter().position(|o| o == name) {
                Some(at) => at as u32 + 1,
                None => {
                    out.outputs.push(name.to_string());
                    out.outputs.len() as u32
                }
            },
        };
        let flat = &mut out.events;
        let mut flags = 0u8;
        if let Some(key) = &event.key {
            flags |= HAS_KEY;
            flat.keys.extend_from_slice(key);
        }
        flat.key_ends.push(flat.keys.len() as u32);
        flat.values.extend_from_slice(&event.value);
        flat.value_ends.push(flat.values.len() as u32);
        if event.timestamp.is_some() {
            flags |= HAS_TIMESTAMP;
        }
        flat.timestamps.push(event.timestamp.unwrap_or(0));
        let emitted = flat.flags.len() as u32;
        flat.flags.push(flags);
        for header in &event.headers {
            flat.headers.push(ElementHeader { element: emitted, header: header.clone() });
        }
        out.elements.push(index);
        out.ports.push(port);
        (true, false)
    });
    if over {
        panic!(
            "one element emitted more than {MAX_EMITS} events or {MAX_EMIT_BYTES} bytes, the contract's limit \
             (a runaway loop?)"
        );
    }
    in_batch
}

/// Reads loaded state `slot` for the current element's key through `read`; `None`
/// when there is no batch or the element has no key (the caller uses the host).
pub(crate) fn with_loaded<R>(slot: u32, read: impl FnOnce(Option<&[u8]>) -> R) -> Option<R> {
    CURRENT.with_borrow_mut(|c| {
        if !c.active {
            return None;
        }
        let key = c.input.key_slots[c.index as usize];
        if key == NO_KEY {
            return None;
        }
        let copy = &mut c.loaded[slot as usize];
        let key = key as usize;
        let value = match &mut copy.held[key] {
            Held::Loaded { read } => {
                *read = true;
                (copy.values.present[key] == 1).then(|| &copy.values.values[range(&copy.values.ends, key)])
            }
            Held::Set => Some(copy.set[key].as_slice()),
            Held::Cleared => None,
        };
        Some(read(value))
    })
}

/// Writes loaded state `slot` for the current element's key with the bytes `fill`
/// writes (`None`: clears it); `None` when there is no batch or the element has no key
/// (the caller uses the host).
pub(crate) fn write_loaded<E>(
    slot: u32,
    fill: Option<impl FnOnce(&mut Vec<u8>) -> Result<(), E>>,
) -> Option<Result<(), E>> {
    CURRENT.with_borrow_mut(|c| {
        if !c.active {
            return None;
        }
        let key = c.input.key_slots[c.index as usize];
        if key == NO_KEY {
            return None;
        }
        let copy = &mut c.loaded[slot as usize];
        let key = key as usize;
        Some(match fill {
            Some(fill) => {
                let value = &mut copy.set[key];
                value.clear();
                let written = fill(value);
                if written.is_ok() {
                    copy.held[key] = Held::Set;
                }
                written
            }
            None => {
                copy.held[key] = Held::Cleared;
                Ok(())
            }
        })
    })
}

/// Runs `process` over each element of `batch` in order, and gathers the result.
pub(crate) fn run(
    batch: InputBatch,
    mut process: impl FnMut(Event) -> Result<(), String>,
) -> BatchResult {
    install_panic_hook();
    let count = batch.events.flags.len() as u32;
    CURRENT.with_borrow_mut(|c| {
        let keys = batch.loaded.first().map_or(0, |l| l.present.len());
        c.loaded = std::mem::take(&mut c.loaded)
            .into_iter()
            .chain(std::iter::repeat_with(|| LoadedCopy {
                values: LoadedValues { present: Vec::new(), values: Vec::new(), ends: Vec::new() },
                held: Vec::new(),
                set: Vec::new(),
            }))
            .take(batch.loaded.len())
            .collect();
        c.input = batch;
        for (copy, values) in c.loaded.iter_mut().zip(std::mem::take(&mut c.input.loaded)) {
            copy.values = values;
            copy.held.clear();
            copy.held.resize(keys, Held::Loaded { read: false });
            copy.set.resize_with(keys, Vec::new);
        }
        c.active = true;
        c.index = 0;
        c.focused = None;
        c.timer_registered = false;
    });
    let mut processed = count;
    let mut error = None;
    for index in 0..count {
        let stop = CURRENT.with_borrow_mut(|c| {
            c.index = index;
            c.element_emits = 0;
            c.element_bytes = 0;
            if c.timer_registered {
                c.focused = Some(index);
                !raw::focus(index)
            } else {
                false
            }
        });
        if stop {
            processed = index;
            break;
        }
        let event = CURRENT.with_borrow(|c| element(&c.input, index as usize));
        if let Err(message) = process(event) {
            processed = index;
            error = Some(ElementError { index, message });
            break;
        }
    }
    CURRENT.with_borrow_mut(|c| finish(c, processed, error))
}

/// Ends the batch: what it emitted and did to the loaded states.
fn finish(c: &mut Current, processed: u32, error: Option<ElementError>) -> BatchResult {
    c.active = false;
    let updates = c.loaded.iter_mut().map(updates).collect();
    let emitted = std::mem::replace(&mut c.out, empty_emitted());
    BatchResult { processed, error, emitted, updates }
}

/// Makes a panic during a batch hand the host what the batch did before the
/// panicking element (`batch.abandon`), so that the trap that follows loses nothing
/// and names its element. The previous hook still runs first (it writes the message
/// to stderr, which the host quotes).
fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            let partial = CURRENT.try_with(|cell| {
                // A panic inside the SDK's own borrow is left to the trap alone.
                let mut c = cell.try_borrow_mut().ok()?;
                if !c.active {
                    return None;
                }
                let index = c.index;
                let message = "the element panicked".to_string();
                Some(finish(&mut c, index, Some(ElementError { index, message })))
            });
            if let Ok(Some(partial)) = partial {
                raw::abandon(&partial);
            }
        }));
    });
}

/// Element `index` of `input` as an [`Event`].
fn element(input: &InputBatch, index: usize) -> Event {
    let events = &input.events;
    let flags = events.flags[index];
    Event {
        key: (flags & HAS_KEY != 0).then(|| events.keys[range(&events.key_ends, index)].to_vec()),
        value: events.values[range(&events.value_ends, index)].to_vec(),
        timestamp: (flags & HAS_TIMESTAMP != 0).then_some(events.timestamps[index]),
        headers: {
            // Headers come in element order.
            let from = events.headers.partition_point(|h| (h.element as usize) < index);
            events.headers[from..]
                .iter()
                .take_while(|h| h.element as usize == index)
                .map(|h| Header { name: h.header.name.clone(), value: h.header.value.clone() })
                .collect()
        },
    }
}

/// What the batch did to one loaded state, per distinct key.
fn updates(copy: &mut LoadedCopy) -> StateUpdates {
    let mut result = StateUpdates { ops: Vec::with_capacity(copy.held.len()), values: Vec::new(), ends: Vec::new() };
    for (held, set) in copy.held.iter().zip(&mut copy.set) {
        let op = match held {
            Held::Loaded { read: false } => UpdateOp::Untouched,
            Held::Loaded { read: true } => UpdateOp::Read,
            Held::Set => {
                result.values.extend_from_slice(set);
                set.clear();
                UpdateOp::Set
            }
            Held::Cleared => UpdateOp::Clear,
        };
        result.ops.push(op);
        result.ends.push(result.values.len() as u32);
    }
    result
}
