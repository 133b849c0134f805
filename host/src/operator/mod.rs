//! # Operators
//!
//! An operator subtask is an [`OperatorLogic`] (a Wasm component instance, or a native
//! operator built into the host) plus its [`OperatorContext`]: the keyed state, timers,
//! watermark and emitted events that the runtime and the logic share. The runtime sets
//! the current key, calls the logic, then routes what the logic emitted.

pub mod native;

use std::collections::HashMap;
use std::sync::Arc;

use crate::keygroup::assign_key_group;
use crate::state::{KeyedState, StateError};
use crate::stream::Event;
use crate::timers::{TimeDomain, TimerService};
use crate::watermark::MIN_WATERMARK;

/// The largest value a guest may store in one state entry; protects host memory.
pub const MAX_VALUE_BYTES: usize = 16 << 20;
/// The most events one call may emit; protects host memory from runaway guests.
pub const MAX_EMITS_PER_CALL: usize = 100_000;
/// The most bytes one call may emit.
pub const MAX_EMIT_BYTES_PER_CALL: usize = 64 << 20;

/// Which output of an operator an event goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Main,
    /// A named side output, by index into the job's side output names.
    Side(usize),
}

/// Who an operator subtask is.
#[derive(Debug, Clone)]
pub struct OperatorInfo {
    pub uid: Arc<str>,
    pub subtask: u32,
    pub parallelism: u32,
    pub max_parallelism: u32,
    pub config: Vec<(String, String)>,
}

impl OperatorInfo {
    /// `uid#subtask`, for logs and errors.
    pub fn label(&self) -> String {
        format!("{}#{}", self.uid, self.subtask)
    }
}

/// A broken rule of the operator contract (`wit/operator.wit`). Guests that break one
/// are trapped; the message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error(
        "{what} used without a current key: keyed state and timers need a keyed edge into \
         the operator and can only be used while processing an element or a timer"
    )]
    NoCurrentKey { what: &'static str },
    #[error("a state value of {len} bytes exceeds the limit of {MAX_VALUE_BYTES} bytes")]
    ValueTooLarge { len: usize },
    #[error(
        "one call emitted more than {MAX_EMITS_PER_CALL} events or {MAX_EMIT_BYTES_PER_CALL} \
         bytes"
    )]
    EmitLimit,
    #[error(transparent)]
    State(#[from] StateError),
}

/// What the runtime and an operator's logic share while the logic runs.
pub struct OperatorContext {
    pub info: OperatorInfo,
    pub state: KeyedState,
    pub timers: TimerService,
    /// The subtask's current event-time watermark.
    pub watermark: i64,
    key: Vec<u8>,
    key_group: u16,
    has_key: bool,
    emitted: Vec<(Port, Event)>,
    emitted_bytes: usize,
    side_outputs: Arc<HashMap<String, usize>>,
    /// Events emitted to side outputs that the job routes nowhere.
    pub unrouted: u64,
}

impl OperatorContext {
    /// `side_outputs` maps the names of the side outputs the job routes to their port.
    pub fn new(
        info: OperatorInfo,
        state: KeyedState,
        side_outputs: Arc<HashMap<String, usize>>,
    ) -> Self {
        OperatorContext {
            info,
            state,
            timers: TimerService::default(),
            watermark: MIN_WATERMARK,
            key: Vec::new(),
            key_group: 0,
            has_key: false,
            emitted: Vec::new(),
            emitted_bytes: 0,
            side_outputs,
            unrouted: 0,
        }
    }

    /// A context with the same identity and empty in-memory state: what a new
    /// instance starts with before it takes over a live context in an upgrade.
    pub fn placeholder(&self) -> OperatorContext {
        let state = KeyedState::new(&self.info.uid, Box::new(crate::state::MemoryBackend::new()));
        OperatorContext::new(self.info.clone(), state, self.side_outputs.clone())
    }

    /// Sets (or clears) the key that state and timers are scoped to.
    pub fn set_current_key(&mut self, key: Option<&[u8]>) {
        match key {
            Some(key) => {
                self.key.clear();
                self.key.extend_from_slice(key);
                self.key_group = assign_key_group(key, self.info.max_parallelism);
                self.has_key = true;
            }
            None => self.has_key = false,
        }
    }

    /// The current key, if any.
    pub fn current_key(&self) -> Option<&[u8]> {
        self.has_key.then_some(self.key.as_slice())
    }

    /// The state store, key group and key of the current key, for a keyed access.
    pub fn keyed(
        &mut self,
        what: &'static str,
    ) -> Result<(&mut KeyedState, u16, &[u8]), ContractError> {
        if !self.has_key {
            return Err(ContractError::NoCurrentKey { what });
        }
        Ok((&mut self.state, self.key_group, &self.key))
    }

    /// Registers a timer for the current key.
    pub fn register_timer(&mut self, domain: TimeDomain, timestamp: i64) -> Result<(), ContractError> {
        if !self.has_key {
            return Err(ContractError::NoCurrentKey { what: "a timer" });
        }
        self.timers.register(domain, &self.key, timestamp);
        Ok(())
    }

    /// Deletes a timer of the current key.
    pub fn delete_timer(&mut self, domain: TimeDomain, timestamp: i64) -> Result<(), ContractError> {
        if !self.has_key {
            return Err(ContractError::NoCurrentKey { what: "a timer" });
        }
        self.timers.delete(domain, &self.key, timestamp);
        Ok(())
    }

    /// Buffers an event for `output` (`None` for the main output) until the call ends.
    pub fn emit(&mut self, output: Option<&str>, event: Event) -> Result<(), ContractError> {
        let port = match output {
            None => Port::Main,
            Some(name) => match self.side_outputs.get(name) {
                Some(&index) => Port::Side(index),
                None => {
                    self.unrouted += 1;
                    return Ok(());
                }
            },
        };
        self.emitted_bytes += event.value.len() + event.key.as_ref().map_or(0, Vec::len);
        if self.emitted.len() >= MAX_EMITS_PER_CALL || self.emitted_bytes > MAX_EMIT_BYTES_PER_CALL {
            return Err(ContractError::EmitLimit);
        }
        self.emitted.push((port, event));
        Ok(())
    }

    /// Swaps what the last call emitted into `buffer`, which must be empty (its
    /// capacity is reused for the next call).
    pub fn swap_emitted(&mut self, buffer: &mut Vec<(Port, Event)>) {
        debug_assert!(buffer.is_empty());
        self.emitted_bytes = 0;
        std::mem::swap(&mut self.emitted, buffer);
    }
}

/// Checks a value against [`MAX_VALUE_BYTES`].
pub fn check_value_size(value: &[u8]) -> Result<(), ContractError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(ContractError::ValueTooLarge { len: value.len() });
    }
    Ok(())
}

/// Why a call into an operator failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorFailure {
    /// The operator returned an error of its own.
    #[error("the operator returned an error: {0}")]
    Returned(String),
    /// The guest trapped (a panic, a contract violation, an out-of-bounds access).
    #[error("the guest trapped: {0}")]
    Trapped(String),
    /// The call ran past its deadline (an infinite loop?).
    #[error("the call ran longer than its deadline of {deadline_ms} ms (an endless loop?)")]
    Deadline { deadline_ms: u64 },
    /// The guest tried to grow its memory past the limit.
    #[error("the guest exceeded its memory limit of {limit_mib} MiB")]
    OutOfMemory { limit_mib: u64 },
    /// The state backend failed.
    #[error(transparent)]
    State(#[from] StateError),
}

/// The user logic of an operator subtask.
pub trait OperatorLogic: Send {
    /// The context shared with the runtime.
    fn context(&mut self) -> &mut OperatorContext;
    /// Called once before any element.
    fn open(&mut self) -> Result<(), OperatorFailure>;
    /// Processes one element; the runtime has set the current key.
    fn process_element(&mut self, event: &Event) -> Result<(), OperatorFailure>;
    /// A timer fired; the runtime has set the current key to the timer's.
    fn on_timer(&mut self, timestamp: i64, domain: TimeDomain) -> Result<(), OperatorFailure>;
    /// Called once after the input ended and all event-time timers fired.
    fn close(&mut self) -> Result<(), OperatorFailure>;
    /// The version of the operator's state layout.
    fn state_version(&mut self) -> Result<u32, OperatorFailure> {
        Ok(0)
    }
    /// Migrates the current key's state from layout `from_version`.
    fn migrate(&mut self, from_version: u32) -> Result<(), OperatorFailure> {
        let _ = from_version;
        Ok(())
    }
}
