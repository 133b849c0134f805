//! # Operators
//!
//! An operator subtask is an [`OperatorLogic`] (a Wasm component instance, or a native
//! operator built into the host) plus its [`OperatorContext`]: the keyed state, timers,
//! watermark and emitted events that the runtime and the logic share. The runtime sets
//! the current key, calls the logic, then routes what the logic emitted.

pub mod native;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::keygroup::assign_key_group;
use crate::state::{KeyedState, StateError};
use crate::stream::Event;
use crate::timers::{TimeDomain, TimerService};
use crate::watermark::MIN_WATERMARK;

/// The largest value a guest may store in one state entry; protects host memory.
pub const MAX_VALUE_BYTES: usize = 16 << 20;
/// The most events one element (or one call outside of a batch) may emit; protects
/// host memory from runaway guests. A batch stops early rather than grow past it.
pub const MAX_EMITS_PER_CALL: usize = 100_000;
/// The most bytes one element (or call) may emit, counting keys, values and headers.
pub const MAX_EMIT_BYTES_PER_CALL: usize = 64 << 20;

/// How many timers one operator subtask may have pending (the job file's `limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerBudget {
    pub timers: u64,
    pub per_key: u64,
}

impl TimerBudget {
    pub const UNLIMITED: TimerBudget = TimerBudget { timers: u64::MAX, per_key: u64::MAX };
}

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
        "one element or call emitted more than {MAX_EMITS_PER_CALL} events or {MAX_EMIT_BYTES_PER_CALL} \
         bytes"
    )]
    EmitLimit,
    #[error(
        "registering another timer would exceed limits.{setting} ({limit} pending timers {scope}); \
         delete timers that are no longer needed, or raise the limit"
    )]
    TimerBudget { setting: &'static str, limit: u64, scope: &'static str },
    #[error("batch element {index} begun out of order (expected {expected})")]
    BatchOrder { index: u32, expected: u32 },
    #[error("an emitted event names batch element {index}, but only {processed} were processed")]
    BatchElement { index: u32, processed: u32 },
    #[error("batch element {index} focused out of order (after element {after})")]
    FocusOrder { index: u32, after: u32 },
    #[error(
        "a value state was loaded with batches (batch.load) during a batch; load value states in \
         `open`"
    )]
    LoadInBatch,
    #[error(
        "a value state loaded with batches (batch.load) was used through value-state during a batch; \
         read and write the batch's copy instead"
    )]
    LoadedInBatch,
    #[error("collector used during a batch of contract 0.3: a batch's emits go in its result")]
    EmitInBatch,
    #[error("process-batch returned a malformed result: {reason}")]
    BatchResult { reason: String },
    #[error(transparent)]
    State(#[from] StateError),
}

/// The elements of the run being processed in one call: each element's key, key group
/// and the watermark in effect before it, so that the host can make each element
/// current in turn ([`OperatorContext::begin_element`]) while the guest runs.
#[derive(Debug, Default)]
pub struct Run {
    keys: Vec<u8>,
    elements: Vec<RunElement>,
    /// The next element to begin.
    next: u32,
    /// The first element the guest must not begin: an event-time timer registered
    /// during the call falls due at the watermark before it.
    stop_at: u32,
    active: bool,
}

#[derive(Debug, Clone, Copy)]
struct RunElement {
    key: Option<(u32, u32)>,
    key_group: u16,
    watermark: i64,
}

impl Run {
    /// Adds an element: its key (on keyed inputs) and the watermark in effect before it.
    pub fn push(&mut self, key: Option<(&[u8], u16)>, watermark: i64) {
        let (key, key_group) = match key {
            Some((bytes, key_group)) => {
                let start = self.keys.len() as u32;
                self.keys.extend_from_slice(bytes);
                (Some((start, bytes.len() as u32)), key_group)
            }
            None => (None, 0),
        };
        self.elements.push(RunElement { key, key_group, watermark });
    }

    /// The key group of element `index` (0 for an element without a key).
    pub fn key_group(&self, index: usize) -> u16 {
        self.elements.get(index).map_or(0, |e| e.key_group)
    }

    /// Whether element `index` arrived on a keyed edge (keyed state is scoped to it).
    pub fn is_keyed(&self, index: usize) -> bool {
        self.elements.get(index).is_some_and(|e| e.key.is_some())
    }

    /// How many elements the run has.
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    /// Whether the run has no elements.
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// The first element the guest must not process, as known before a call: a timer
    /// pending from before the run falls due at its watermark.
    pub fn stop_at(&self) -> u32 {
        self.stop_at
    }

    /// Forgets every element.
    pub fn clear(&mut self) {
        self.keys.clear();
        self.elements.clear();
        self.next = 0;
        self.stop_at = u32::MAX;
        self.active = false;
    }

    /// Drops the first `processed` elements (the rest is sent again).
    pub fn consume(&mut self, processed: u32) {
        self.elements.drain(..processed as usize);
        self.next = 0;
        self.stop_at = u32::MAX;
    }

    /// An event-time timer at `timestamp` was registered while element `current` was
    /// being processed: stop before the first later element whose watermark advanced
    /// past both that element's watermark and the timer.
    fn timer_registered(&mut self, current: u32, timestamp: i64) {
        let Some(at) = self.elements.get(current as usize) else { return };
        let threshold = timestamp.max(at.watermark.saturating_add(1));
        let later = &self.elements[current as usize + 1..];
        let offset = later.partition_point(|e| e.watermark < threshold);
        if offset < later.len() {
            self.stop_at = self.stop_at.min(current + 1 + offset as u32);
        }
    }
}

/// What the runtime and an operator's logic share while the logic runs.
pub struct OperatorContext {
    pub info: OperatorInfo,
    pub state: KeyedState,
    pub timers: TimerService,
    /// The subtask's current event-time watermark.
    pub watermark: i64,
    /// The subtask's processing time.
    pub clock: crate::clock::Clock,
    key: Vec<u8>,
    key_group: u16,
    has_key: bool,
    emitted: Vec<(Port, Event)>,
    /// The run element each emitted event came from (0 outside of runs).
    emitted_at: Vec<u32>,
    /// Bytes emitted by the current element (or call, outside of runs).
    emitted_bytes: usize,
    /// Bytes emitted since the emitted events were last taken.
    run_emitted_bytes: usize,
    /// Where the current element's emitted events start.
    element_emits_from: usize,
    /// The run being processed; inactive between runs.
    pub run: Run,
    /// The run element being processed.
    element: u32,
    side_outputs: Arc<HashMap<String, usize>>,
    /// Events emitted to side outputs that the job routes nowhere.
    pub unrouted: u64,
    /// Late elements the logic sent to the `late` side output, and dropped.
    pub late_routed: u64,
    pub late_dropped: u64,
    /// Set when the job stops or the attempt is torn down: a guest call in progress
    /// (running, or blocked in a WASI sleep) is interrupted rather than waited for.
    pub interrupt: Arc<AtomicBool>,
    /// How many timers the subtask may have pending.
    pub timer_budget: TimerBudget,
    /// The subtask's operator (non-keyed) lists.
    pub operator_state: crate::state::operator::OperatorState,
    /// Value states that travel with each batch (contract 0.3's `batch.load`), in
    /// load order.
    pub loaded: Vec<crate::state::StateId>,
    /// A batch of contract 0.3 is running: its emits come back in its result, and
    /// loaded states are the guest's until it returns.
    pub in_flat_batch: bool,
    /// Events handed back from downstream, for emitted events to be filled into
    /// (topped up by the task before each run).
    pub spares: crate::stream::Spares,
}

impl OperatorContext {
    /// `side_outputs` maps the names of the side outputs the job routes to their port.
    pub fn new(
        info: OperatorInfo,
        state: KeyedState,
        side_outputs: Arc<HashMap<String, usize>>,
    ) -> Self {
        let timers = TimerService::in_memory(info.max_parallelism);
        OperatorContext {
            info,
            state,
            timers,
            watermark: MIN_WATERMARK,
            clock: crate::clock::Clock::default(),
            key: Vec::new(),
            key_group: 0,
            has_key: false,
            emitted: Vec::new(),
            emitted_at: Vec::new(),
            emitted_bytes: 0,
            run_emitted_bytes: 0,
            element_emits_from: 0,
            run: Run::default(),
            element: 0,
            side_outputs,
            unrouted: 0,
            late_routed: 0,
            late_dropped: 0,
            interrupt: Arc::default(),
            timer_budget: TimerBudget::UNLIMITED,
            operator_state: Default::default(),
            loaded: Vec::new(),
            in_flat_batch: false,
            spares: crate::stream::Spares::default(),
        }
    }

    /// A context with the same identity and empty in-memory state: what a new
    /// instance starts with before it takes over a live context in an upgrade.
    pub fn placeholder(&self) -> OperatorContext {
        let state = KeyedState::new(&self.info.uid, Box::new(crate::state::MemoryBackend::new()));
        let mut placeholder = OperatorContext::new(self.info.clone(), state, self.side_outputs.clone());
        placeholder.interrupt = self.interrupt.clone();
        placeholder.timer_budget = self.timer_budget;
        placeholder.clock = self.clock;
        placeholder
    }

    /// Hands the live context (state, timers, watermark, ...) from one instance's
    /// logic to another's, in an upgrade or its rollback. What an instance declared
    /// about itself (its loaded states) stays with it.
    pub fn hand_over(from: &mut OperatorContext, to: &mut OperatorContext) {
        std::mem::swap(from, to);
        std::mem::swap(&mut from.loaded, &mut to.loaded);
    }

    /// Sets (or clears) the key that state and timers are scoped to.
    pub fn set_current_key(&mut self, key: Option<&[u8]>) {
        match key {
            Some(key) => self.set_key(key, assign_key_group(key, self.info.max_parallelism)),
            None => self.has_key = false,
        }
    }

    fn set_key(&mut self, key: &[u8], key_group: u16) {
        self.key.clear();
        self.key.extend_from_slice(key);
        self.key_group = key_group;
        self.has_key = true;
    }

    /// How many elements of the run have begun.
    pub fn run_next(&self) -> u32 {
        self.run.next
    }

    /// The run element being processed (where a trap in a batch happened).
    pub fn run_position(&self) -> u32 {
        self.element
    }

    /// The current key, if any.
    pub fn current_key(&self) -> Option<&[u8]> {
        self.has_key.then_some(self.key.as_slice())
    }

    /// The key group of the current key (meaningful only while there is one).
    pub fn current_key_group(&self) -> u16 {
        self.key_group
    }

    /// Hands over an element the logic found late: to the `late` side output when the
    /// job routes one, otherwise dropped; counted either way.
    pub fn late(&mut self, event: Event) -> Result<(), ContractError> {
        if self.side_outputs.contains_key("late") {
            self.late_routed += 1;
            self.emit(Some("late"), event)
        } else {
            self.late_dropped += 1;
            Ok(())
        }
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
        self.register_timer_in(domain, &[], timestamp)
    }

    /// Registers a timer for the current key in `namespace` (a window). During a run,
    /// an event-time timer that falls due before a later element stops the run there.
    pub fn register_timer_in(&mut self, domain: TimeDomain, namespace: &[u8], timestamp: i64) -> Result<(), ContractError> {
        if !self.has_key {
            return Err(ContractError::NoCurrentKey { what: "a timer" });
        }
        let budget = self.timer_budget;
        self.timers
            .register_within(domain, &self.key, namespace, timestamp, budget.timers, budget.per_key)?
            .map_err(|over| match over {
                crate::timers::OverBudget::Total => {
                    ContractError::TimerBudget { setting: "timers", limit: budget.timers, scope: "per subtask" }
                }
                crate::timers::OverBudget::PerKey => {
                    ContractError::TimerBudget { setting: "timers_per_key", limit: budget.per_key, scope: "for one key" }
                }
            })?;
        if self.run.active && domain == TimeDomain::EventTime {
            self.run.timer_registered(self.element, timestamp);
        }
        Ok(())
    }

    /// Starts processing the elements of [`OperatorContext::run`]. A pending
    /// event-time timer (registered while timers fired between two calls of one run)
    /// stops the run before the first element whose watermark it is due at.
    pub fn start_run(&mut self) {
        self.run.next = 0;
        self.run.stop_at = u32::MAX;
        self.run.active = true;
        if let Some(due) = self.timers.next_timestamp(TimeDomain::EventTime) {
            let at = self.run.elements.partition_point(|e| e.watermark < due);
            if at < self.run.elements.len() {
                // Due timers fired before the run started, so `at` is past the first
                // element; never stop before it, so that a run always makes progress.
                self.run.stop_at = at.max(1) as u32;
            }
        }
    }

    /// Ends the run started by [`OperatorContext::start_run`].
    pub fn end_run(&mut self) {
        self.run.active = false;
        self.element = 0;
    }

    /// Makes run element `index` current (its key, its watermark). Returns `false`
    /// when the run must stop before it: a timer registered earlier in the run falls
    /// due first.
    pub fn begin_element(&mut self, index: u32) -> Result<bool, ContractError> {
        if !self.run.active || index != self.run.next || index as usize >= self.run.elements.len() {
            return Err(ContractError::BatchOrder { index, expected: self.run.next });
        }
        // Stop before a timer that fell due, and before the events the run emitted so
        // far grow past one call's limit (the rest goes in another call).
        if index >= self.run.stop_at
            || (index > 0
                && (self.emitted.len() >= MAX_EMITS_PER_CALL || self.run_emitted_bytes >= MAX_EMIT_BYTES_PER_CALL))
        {
            return Ok(false);
        }
        self.element_emits_from = self.emitted.len();
        self.emitted_bytes = 0;
        let element = self.run.elements[index as usize];
        match element.key {
            Some((start, len)) => {
                self.key.clear();
                self.key.extend_from_slice(&self.run.keys[start as usize..(start + len) as usize]);
                self.key_group = element.key_group;
                self.has_key = true;
            }
            None => self.has_key = false,
        }
        self.watermark = element.watermark;
        self.element = index;
        self.run.next = index + 1;
        Ok(true)
    }

    /// Makes run element `index` current for the calls that need a current key or
    /// watermark (contract 0.3's `batch.focus`, which a guest calls only when it needs
    /// one). Returns `false` when the run must stop before it: a timer registered
    /// earlier in the run falls due first.
    pub fn focus(&mut self, index: u32) -> Result<bool, ContractError> {
        if !self.run.active || index as usize >= self.run.elements.len() || index + 1 < self.run.next {
            return Err(ContractError::FocusOrder { index, after: self.run.next.saturating_sub(1) });
        }
        if index >= self.run.stop_at {
            return Ok(false);
        }
        let element = self.run.elements[index as usize];
        match element.key {
            Some((start, len)) => {
                self.key.clear();
                self.key.extend_from_slice(&self.run.keys[start as usize..(start + len) as usize]);
                self.key_group = element.key_group;
                self.has_key = true;
            }
            None => self.has_key = false,
        }
        self.watermark = element.watermark;
        self.element = index;
        self.run.next = index + 1;
        Ok(true)
    }

    /// Loads value state `id` with every batch from the next one on (contract 0.3's
    /// `batch.load`); returns its index among the loaded states.
    pub fn load_state(&mut self, id: crate::state::StateId) -> Result<u32, ContractError> {
        if self.in_flat_batch {
            return Err(ContractError::LoadInBatch);
        }
        let index = match self.loaded.iter().position(|&loaded| loaded == id) {
            Some(index) => index,
            None => {
                self.loaded.push(id);
                self.loaded.len() - 1
            }
        };
        Ok(index as u32)
    }

    /// Refuses per-call access to a loaded state while a batch has its copy.
    pub fn check_not_loaded(&self, id: crate::state::StateId) -> Result<(), ContractError> {
        // Without a current key the access fails for that reason instead.
        if self.in_flat_batch && self.has_key && self.loaded.contains(&id) {
            return Err(ContractError::LoadedInBatch);
        }
        Ok(())
    }

    /// Buffers an event that run element `element` emitted (returned in a contract
    /// 0.3 batch's result, whose limits the caller checked).
    pub fn emit_from_batch(&mut self, element: u32, output: Option<&str>, event: Event) {
        let port = match output {
            None => Port::Main,
            Some(name) => match self.side_outputs.get(name) {
                Some(&index) => Port::Side(index),
                None => {
                    self.unrouted += 1;
                    return;
                }
            },
        };
        self.emitted.push((port, event));
        self.emitted_at.push(element);
    }

    /// Makes the current key and watermark a run of one element (a single element
    /// handed to logic that only takes runs).
    pub fn run_of_current_element(&mut self) {
        self.run.clear();
        let key = self.has_key.then(|| (self.key.clone(), self.key_group));
        self.run.push(key.as_ref().map(|(k, kg)| (k.as_slice(), *kg)), self.watermark);
        self.start_run();
    }

    /// Deletes a timer of the current key.
    pub fn delete_timer(&mut self, domain: TimeDomain, timestamp: i64) -> Result<(), ContractError> {
        if !self.has_key {
            return Err(ContractError::NoCurrentKey { what: "a timer" });
        }
        self.timers.delete(domain, &self.key, timestamp)?;
        Ok(())
    }

    /// Buffers an event for `output` (`None` for the main output) until the call ends.
    pub fn emit(&mut self, output: Option<&str>, event: Event) -> Result<(), ContractError> {
        if self.in_flat_batch {
            return Err(ContractError::EmitInBatch);
        }
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
        let bytes = event.value.len()
            + event.key.as_ref().map_or(0, Vec::len)
            + event.headers.iter().map(|h| h.name.len() + h.value.len()).sum::<usize>();
        self.emitted_bytes += bytes;
        self.run_emitted_bytes += bytes;
        if self.emitted.len() - self.element_emits_from >= MAX_EMITS_PER_CALL
            || self.emitted_bytes > MAX_EMIT_BYTES_PER_CALL
        {
            return Err(ContractError::EmitLimit);
        }
        self.emitted.push((port, event));
        self.emitted_at.push(self.element);
        Ok(())
    }

    /// Swaps what the last call emitted into `buffer`, which must be empty (its
    /// capacity is reused for the next call).
    pub fn swap_emitted(&mut self, buffer: &mut Vec<(Port, Event)>) {
        debug_assert!(buffer.is_empty());
        self.emitted_bytes = 0;
        self.run_emitted_bytes = 0;
        self.element_emits_from = 0;
        self.emitted_at.clear();
        std::mem::swap(&mut self.emitted, buffer);
    }

    /// Like [`OperatorContext::swap_emitted`], with the run element each event came
    /// from. Elements begin in order, so the events are in element order.
    pub fn swap_emitted_with_elements(&mut self, buffer: &mut Vec<(Port, Event)>, elements: &mut Vec<u32>) {
        debug_assert!(buffer.is_empty() && elements.is_empty());
        self.emitted_bytes = 0;
        self.run_emitted_bytes = 0;
        self.element_emits_from = 0;
        std::mem::swap(&mut self.emitted, buffer);
        std::mem::swap(&mut self.emitted_at, elements);
        debug_assert!(elements.is_sorted());
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
    #[error("the operator returned an error: {}", crate::error::printable(.0))]
    Returned(String),
    /// The guest trapped (a panic, an out-of-bounds access).
    #[error("the guest trapped: {}", crate::error::printable(.0))]
    Trapped(String),
    /// The operator broke a rule of the contract (state without a current key, an
    /// oversized value, an emit flood, a batch begun out of order).
    #[error("the operator broke the contract: {}", crate::error::printable(.0))]
    Contract(String),
    /// The call ran past its deadline (an infinite loop?).
    #[error("the call ran longer than its deadline of {deadline_ms} ms (an endless loop?)")]
    Deadline { deadline_ms: u64 },
    /// The call was interrupted because the job is stopping (not a failure).
    #[error("the call was interrupted: the job is stopping")]
    Interrupted,
    /// The guest tried to grow its memory past the limit.
    #[error("the guest exceeded its memory limit of {limit_mib} MiB")]
    OutOfMemory { limit_mib: u64 },
    /// The state backend failed.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Processes a run one element at a time through [`OperatorLogic::process_element`].
pub fn process_each<L: OperatorLogic + ?Sized>(
    logic: &mut L,
    events: Vec<Event>,
) -> Result<RunOutcome, RunFailure> {
    let count = events.len() as u32;
    let mut events = events.into_iter();
    for index in 0..count {
        let go = logic
            .context()
            .begin_element(index)
            .map_err(|e| RunFailure::at(index, OperatorFailure::Contract(e.to_string())))?;
        if !go {
            return Ok(RunOutcome { processed: index, rest: events.collect(), spent: Vec::new() });
        }
        let event = events.next().expect("one event per element");
        if let Err(failure) = logic.process_element(event) {
            // The elements after it, for an operator that skips failed elements.
            return Err(RunFailure { rest: events.collect(), ..RunFailure::at(index, failure) });
        }
    }
    Ok(RunOutcome { processed: count, rest: Vec::new(), spent: Vec::new() })
}

/// Where in a run a call failed.
#[derive(Debug)]
pub struct RunFailure {
    /// The element that failed, or the first of those it may have been.
    pub index: u32,
    /// How many elements from `index` on the failure may have happened in: 1 when it
    /// is known exactly. A trap in a contract 0.3 batch that the guest did not report
    /// first (`batch.abandon`) names only the elements of the batch.
    pub among: u32,
    pub failure: OperatorFailure,
    /// After an error the operator returned for one element: that element's event,
    /// where the logic still has it (for a dead letter).
    pub event: Option<Event>,
    /// After an error the operator returned for one element: the events of the
    /// elements after it, which an operator with `on_error = "skip"` goes on with.
    pub rest: Vec<Event>,
}

impl RunFailure {
    /// A failure at element `index`.
    pub fn at(index: u32, failure: OperatorFailure) -> Self {
        RunFailure { index, among: 1, failure, event: None, rest: Vec::new() }
    }

    /// Whether the failure is an error the operator returned for exactly one element,
    /// after which it can go on with the rest (a trap or a broken contract leaves the
    /// instance in no state to go on).
    pub fn is_skippable(&self) -> bool {
        matches!(self.failure, OperatorFailure::Returned(_)) && self.among == 1
    }
}

/// What [`OperatorLogic::process_run`] got through.
#[derive(Debug, Default)]
pub struct RunOutcome {
    /// How many elements were processed, from the first.
    pub processed: u32,
    /// The events of the elements that were not.
    pub rest: Vec<Event>,
    /// Events of processed elements the logic is done with (logic that only copies
    /// its input hands them back, for their producer to fill again).
    pub spent: Vec<Event>,
}

/// The user logic of an operator subtask.
pub trait OperatorLogic: Send {
    /// The context shared with the runtime.
    fn context(&mut self) -> &mut OperatorContext;
    /// Called once before any element.
    fn open(&mut self) -> Result<(), OperatorFailure>;
    /// Processes one element; the runtime has set the current key.
    fn process_element(&mut self, event: Event) -> Result<(), OperatorFailure>;
    /// Processes the elements of the context's run in order, each after
    /// [`OperatorContext::begin_element`] allowed it, and returns how many it processed
    /// with the events it did not get to. Wasm components of contract 0.2 take the
    /// whole run in one call; the default feeds [`OperatorLogic::process_element`].
    fn process_run(&mut self, events: Vec<Event>) -> Result<RunOutcome, RunFailure> {
        process_each(self, events)
    }
    /// A timer fired; the runtime has set the current key to the timer's. `namespace`
    /// is the one the timer was registered in (empty for guest timers).
    fn on_timer(&mut self, timestamp: i64, domain: TimeDomain, namespace: &[u8]) -> Result<(), OperatorFailure>;
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
    /// Processes one element of the second input (Flink's `processElement2`, or
    /// `processBroadcastElement` on a broadcast input); the runtime has set the current
    /// key (none on a broadcast input).
    fn process_element_2(&mut self, event: Event) -> Result<(), OperatorFailure> {
        let _ = event;
        Err(OperatorFailure::Contract("this operator takes one input, but an element arrived on input 2".into()))
    }
    /// A checkpoint or savepoint barrier `checkpoint_id` arrived: the logic writes
    /// what it keeps in its own memory into its state (Flink's `snapshotState`).
    fn snapshot_state(&mut self, checkpoint_id: u64) -> Result<(), OperatorFailure> {
        let _ = checkpoint_id;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryBackend;
    use crate::stream::Header;

    fn context() -> OperatorContext {
        let info = OperatorInfo { uid: "op".into(), subtask: 0, parallelism: 1, max_parallelism: 128, config: vec![] };
        OperatorContext::new(info, KeyedState::new("op", Box::new(MemoryBackend::new())), Arc::default())
    }

    #[test]
    fn headers_count_against_the_emit_limit() {
        // Events whose bytes are nearly all headers: 40 MB each, so the second one of
        // one call passes the 64 MiB limit.
        let mut ctx = context();
        let heavy = || Event {
            key: None,
            value: b"{}".to_vec(),
            timestamp: None,
            headers: vec![Header { name: "blob".into(), value: vec![0; 40 << 20] }],
        };
        ctx.emit(None, heavy()).unwrap();
        assert!(matches!(ctx.emit(None, heavy()), Err(ContractError::EmitLimit)));
    }

    #[test]
    fn timers_are_budgeted_per_key_and_per_subtask() {
        let mut ctx = context();
        ctx.timer_budget = TimerBudget { timers: 3, per_key: 2 };
        ctx.set_current_key(Some(b"a"));
        ctx.register_timer(TimeDomain::EventTime, 1).unwrap();
        ctx.register_timer(TimeDomain::EventTime, 2).unwrap();
        // Registering a pending timer again is not a new one.
        ctx.register_timer(TimeDomain::EventTime, 2).unwrap();
        let error = ctx.register_timer(TimeDomain::EventTime, 3).unwrap_err().to_string();
        assert!(error.contains("limits.timers_per_key (2 pending timers for one key)"), "{error}");
        ctx.set_current_key(Some(b"b"));
        ctx.register_timer(TimeDomain::ProcessingTime, 1).unwrap();
        let error = ctx.register_timer(TimeDomain::EventTime, 4).unwrap_err().to_string();
        assert!(error.contains("limits.timers (3 pending timers per subtask)"), "{error}");
        // Firing a timer makes room again.
        ctx.timers.pop_due(TimeDomain::EventTime, 1).unwrap();
        ctx.register_timer(TimeDomain::EventTime, 4).unwrap();
    }

    #[test]
    fn a_run_stops_before_the_element_that_would_begin_past_the_emit_cap() {
        let mut ctx = context();
        ctx.run.clear();
        for _ in 0..4 {
            ctx.run.push(None, MIN_WATERMARK);
        }
        ctx.start_run();
        let small = || Event { key: None, value: b"x".to_vec(), timestamp: None, headers: vec![] };
        // The first element may emit up to the cap; the next one then waits for the
        // next call, with everything emitted so far attributed to the first.
        assert!(ctx.begin_element(0).unwrap());
        for _ in 0..MAX_EMITS_PER_CALL {
            ctx.emit(None, small()).unwrap();
        }
        assert!(!ctx.begin_element(1).unwrap(), "the run goes on past the emit cap");
        ctx.end_run();
        let (mut emitted, mut at) = (Vec::new(), Vec::new());
        ctx.swap_emitted_with_elements(&mut emitted, &mut at);
        assert_eq!(emitted.len(), MAX_EMITS_PER_CALL);
        assert!(at.iter().all(|&element| element == 0));
        // The rest of the run starts a new call with a fresh budget.
        ctx.run.consume(1);
        ctx.start_run();
        assert!(ctx.begin_element(0).unwrap());
        ctx.emit(None, small()).unwrap();
        assert!(ctx.begin_element(1).unwrap());
    }
}
