//! One guest instance: the [`OperatorLogic`] of a Wasm operator subtask.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap};
use wasmtime_wasi::WasiCtx;

use super::stdio::GuestOutput;
use super::{EPOCH_TICK, HostState, Limits, Plugin, PluginError, Pre, v0_1, v0_2, v0_3};
use crate::operator::{OperatorContext, OperatorFailure, OperatorLogic, RunFailure, RunOutcome};
use crate::stream::Event;
use crate::timers::TimeDomain;

/// A Wasm component instance running one operator subtask.
pub struct WasmOperator {
    store: Store<HostState>,
    guest: Guest,
    limits: Limits,
    stderr: GuestOutput,
    /// Reused buffer for the events of a batch (contract 0.2).
    batch: Vec<v0_2::bindings::weir::operator::types::Event>,
    /// Reused buffers of a flat batch (contract 0.3).
    flat: v0_3::flat::FlatBatch,
    /// `checkpointed.snapshot-state`, when the component exports it (the
    /// `checkpointed-operator` world of contract 0.2 on).
    snapshot_state: Option<wasmtime::component::TypedFunc<(u64,), (Result<(), String>,)>>,
    /// `co-handler.process-element-2`, when the component exports it (`co-operator`).
    process_element_2: Option<ProcessElement2>,
}

type ProcessElement2 =
    wasmtime::component::TypedFunc<(v0_2::bindings::weir::operator::types::Event,), (Result<(), String>,)>;

/// The export of the `co-operator` world, by contract version.
const CO_HANDLER: [&str; 2] = ["weir:operator/co-handler@0.2.0", "weir:operator/co-handler@0.3.0"];

/// The export of the `checkpointed-operator` world, by contract version.
const CHECKPOINTED: [&str; 2] = ["weir:operator/checkpointed@0.2.0", "weir:operator/checkpointed@0.3.0"];

/// The guest's exports, by contract version.
enum Guest {
    V0_1(v0_1::bindings::Operator),
    V0_2(v0_2::bindings::Operator),
    V0_3(v0_3::bindings::Operator),
}

impl WasmOperator {
    pub(super) fn new(
        plugin: &Plugin,
        ctx: OperatorContext,
        limits: Limits,
    ) -> Result<Self, PluginError> {
        let uid = ctx.info.uid.to_string();
        let engine = match &plugin.pre {
            Pre::V0_1(pre) => pre.engine(),
            Pre::V0_2(pre) => pre.engine(),
            Pre::V0_3(pre) => pre.engine(),
        };
        let (mut store, stderr) = guest_store(engine, &plugin.ticks, ctx, limits);
        let mut snapshot_state = None;
        let mut process_element_2 = None;
        let instantiated = match &plugin.pre {
            Pre::V0_1(pre) => pre.instantiate(&mut store).map(Guest::V0_1),
            Pre::V0_2(pre) => pre.instance_pre().instantiate(&mut store).and_then(|instance| {
                snapshot_state = optional_export(&instance, &mut store, CHECKPOINTED[0], "snapshot-state")?;
                process_element_2 = optional_export(&instance, &mut store, CO_HANDLER[0], "process-element-2")?;
                v0_2::bindings::Operator::new(&mut store, &instance).map(Guest::V0_2)
            }),
            Pre::V0_3(pre) => pre.instance_pre().instantiate(&mut store).and_then(|instance| {
                snapshot_state = optional_export(&instance, &mut store, CHECKPOINTED[1], "snapshot-state")?;
                process_element_2 = optional_export(&instance, &mut store, CO_HANDLER[1], "process-element-2")?;
                v0_3::bindings::Operator::new(&mut store, &instance).map(Guest::V0_3)
            }),
        };
        let guest = instantiated.map_err(|e| PluginError::Instantiate {
            uid,
            path: plugin.path().into(),
            reason: format!("{e:#}"),
        })?;
        Ok(WasmOperator {
            store,
            guest,
            limits,
            stderr,
            batch: Vec::new(),
            flat: Default::default(),
            snapshot_state,
            process_element_2,
        })
    }

    /// Turns the outcome of a call into the runtime's terms: a trap is classified and
    /// annotated with the tail of the guest's stderr (where a panic message lands).
    fn outcome(
        &mut self,
        result: wasmtime::Result<Result<(), String>>,
    ) -> Result<(), OperatorFailure> {
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(OperatorFailure::Returned(message)),
            Err(error) => Err(self.classify(error)),
        }
    }

    fn classify(&self, error: wasmtime::Error) -> OperatorFailure {
        let ctx = &self.store.data().ctx;
        let interrupted = ctx.interrupt.load(std::sync::atomic::Ordering::Relaxed);
        match classify(error, self.limits, &self.stderr, interrupted) {
            // A broken rule is about the key being processed (a state or timer budget).
            OperatorFailure::Contract(message) => match ctx.current_key() {
                Some(key) => OperatorFailure::Contract(format!("{message} (key {})", crate::error::printable_key(key))),
                None => OperatorFailure::Contract(message),
            },
            failure => failure,
        }
    }

    fn arm_deadline(&mut self) {
        arm_deadline(&mut self.store, self.limits);
    }

    /// A run through contract 0.3: one call for the elements the guest may process
    /// (up to a timer pending from before the run), their events and loaded states
    /// laid out flat; the result's state updates are written back and its events
    /// handed to the context before anything else happens.
    fn process_flat(&mut self, mut events: Vec<Event>) -> Result<RunOutcome, RunFailure> {
        let ctx = &mut self.store.data_mut().ctx;
        let limit = events.len().min(ctx.run.stop_at() as usize).max(1);
        self.flat.fill(&events[..limit], ctx).map_err(|e| RunFailure::at(0, OperatorFailure::State(e)))?;
        ctx.in_flat_batch = true;
        self.store.data_mut().abandoned = None;
        self.arm_deadline();
        let Guest::V0_3(guest) = &self.guest else { unreachable!("called for contract 0.3 only") };
        let result = guest.weir_operator_handler().call_process_batch(&mut self.store, self.flat.input());
        self.store.data_mut().ctx.in_flat_batch = false;
        let (result, trap) = match result {
            Ok(result) => (result, None),
            Err(trap) => {
                let failure = self.classify(trap);
                let state = self.store.data_mut();
                match state.abandoned.take() {
                    // The guest said how far it got before it trapped.
                    Some(partial) => (*partial, Some(failure)),
                    None => {
                        // A host call that trapped names its element (the guest
                        // focused it); otherwise the trap is somewhere in the batch.
                        let ctx = &state.ctx;
                        let focused = ctx.run_next() > 0;
                        let index = if focused { ctx.run_position() } else { 0 };
                        let among = if focused { 1 } else { limit as u32 };
                        return Err(RunFailure { index, among, ..RunFailure::at(0, failure) });
                    }
                }
            }
        };
        let ctx = &mut self.store.data_mut().ctx;
        let processed = result.processed;
        let failed = result.error.is_some() || trap.is_some();
        // The guest may stop early (a timer falls due, or an error), but never process
        // past what it was sent, or past a timer registered during the batch.
        let most = (limit as u32).min(ctx.run.stop_at());
        let misreported = result.error.as_ref().is_some_and(|e| e.index != processed);
        if processed > most || (processed == 0 && !failed) || misreported || (trap.is_some() && processed >= limit as u32) {
            let reason = if processed > most && most < limit as u32 {
                format!("processed {processed} of {limit} elements, past a timer due before element {most}")
            } else {
                format!("reported {processed} of {limit} elements processed{}", if misreported { ", and an error at another" } else { "" })
            };
            let failure = OperatorFailure::Contract(crate::operator::ContractError::BatchResult { reason }.to_string());
            return Err(RunFailure::at(processed.min(most), failure));
        }
        // A write that fails is one key's final value: some element of the batch set
        // it, and the batch fails as a whole.
        self.flat
            .write_back(&result.updates, ctx)
            .map_err(|failure| RunFailure { among: processed.max(1), ..RunFailure::at(0, failure) })?;
        v0_3::flat::deliver(result.emitted, processed, ctx)
            .map_err(|e| RunFailure::at(processed, OperatorFailure::Contract(e.to_string())))?;
        if let Some(failure) = trap {
            return Err(RunFailure::at(processed, failure));
        }
        if let Some(error) = result.error {
            // The elements after the one that failed, and its event.
            let rest = events.split_off(processed as usize + 1);
            let event = events.pop();
            return Err(RunFailure { event, rest, ..RunFailure::at(error.index, OperatorFailure::Returned(error.message)) });
        }
        let rest = events.split_off(processed as usize);
        // The batch copied the processed elements: their events go back to be refilled.
        Ok(RunOutcome { processed, rest, spent: events })
    }
}

/// Function `func` of the exported interface `interface`, typed, when the component
/// exports that interface (the optional exports of contract 0.2's larger worlds).
fn optional_export<P, R>(
    instance: &wasmtime::component::Instance,
    store: &mut Store<HostState>,
    interface: &str,
    func: &str,
) -> wasmtime::Result<Option<wasmtime::component::TypedFunc<P, R>>>
where
    P: wasmtime::component::ComponentNamedList + wasmtime::component::Lower + Send + Sync,
    R: wasmtime::component::ComponentNamedList + wasmtime::component::Lift + Send + Sync,
{
    let Some(exported) = instance.get_export_index(&mut *store, None, interface) else { return Ok(None) };
    let index = instance
        .get_export_index(&mut *store, Some(&exported), func)
        .ok_or_else(|| wasmtime::Error::msg(format!("{interface} lacks {func}")))?;
    instance.get_typed_func(&mut *store, index).map(Some)
}

/// A store for one guest instance with its memory limit, call deadline and captured
/// stdout/stderr (returned, for error messages).
pub(super) fn guest_store(
    engine: &wasmtime::Engine,
    ticks: &Arc<std::sync::atomic::AtomicU64>,
    ctx: OperatorContext,
    limits: Limits,
) -> (Store<HostState>, GuestOutput) {
    let label: Arc<str> = ctx.info.label().into();
    let stderr = GuestOutput::new(label.clone(), "stderr");
    let wasi = WasiCtx::builder().stdout(GuestOutput::new(label, "stdout")).stderr(stderr.clone()).build();
    let store_limits = super::limiter::GuestLimiter::new((limits.memory_mib as usize) << 20);
    let mut store = Store::new(
        engine,
        HostState {
            ctx,
            started: ticks.load(std::sync::atomic::Ordering::Relaxed),
            slept_past_deadline: false,
            ticks: ticks.clone(),
            deadline: std::time::Duration::from_millis(limits.call_timeout_ms),
            wasi,
            table: ResourceTable::new(),
            limits: store_limits,
            abandoned: None,
        },
    );
    store.limiter(|state| &mut state.limits);
    // The deadline holds per call, and per element within a batch: when the epoch
    // deadline passes, a call whose current element began less than the limit ago
    // goes on for the rest of its time.
    // The callback also runs every INTERRUPT_CHECK_TICKS, so that a job that stops
    // interrupts a long call within ~100 ms rather than waiting out its deadline.
    let limit = deadline_ticks(limits);
    store.epoch_deadline_callback(move |store| {
        let state = store.data();
        let elapsed = state.ticks.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(state.started);
        if elapsed >= limit || state.slept_past_deadline || state.ctx.interrupt.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Trap::Interrupt.into());
        }
        Ok(wasmtime::UpdateDeadline::Continue((limit - elapsed).min(INTERRUPT_CHECK_TICKS)))
    });
    store.set_epoch_deadline(limit.min(INTERRUPT_CHECK_TICKS));
    (store, stderr)
}

/// Restarts the call deadline (before a call, or an element of a batch).
pub(super) fn arm_deadline(store: &mut Store<HostState>, limits: Limits) {
    let state = store.data_mut();
    state.started = state.ticks.load(std::sync::atomic::Ordering::Relaxed);
    state.slept_past_deadline = false;
    store.set_epoch_deadline(deadline_ticks(limits).min(INTERRUPT_CHECK_TICKS));
}

/// Turns a failed call into the runtime's terms: a trap is classified and annotated
/// with the tail of the guest's stderr (where a panic message lands).
pub(super) fn classify(
    error: wasmtime::Error,
    limits: Limits,
    stderr: &GuestOutput,
    interrupted: bool,
) -> OperatorFailure {
    {
        if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            if interrupted {
                return OperatorFailure::Interrupted;
            }
            return OperatorFailure::Deadline { deadline_ms: limits.call_timeout_ms };
        }
        if let Some(broken) = error.downcast_ref::<crate::operator::ContractError>() {
            return OperatorFailure::Contract(broken.to_string());
        }
        if let Some(over @ crate::state::StateError::Budget(_)) = error.downcast_ref::<crate::state::StateError>() {
            return OperatorFailure::Contract(over.to_string());
        }
        if error.downcast_ref::<super::limiter::MemoryExhausted>().is_some() {
            return OperatorFailure::OutOfMemory { limit_mib: limits.memory_mib };
        }
        let stderr = stderr.tail();
        let mut message = match error.downcast_ref::<Trap>() {
            Some(Trap::StackOverflow) => "stack overflow: the call nested deeper than the Wasm stack allows (endless recursion?)".to_string(),
            Some(trap) => match stack_overflow(&error) {
                Some(function) => format!(
                    "stack overflow (most likely): {trap} with the innermost frames all in `{function}`; the \
                     guest's stack in linear memory ran out (endless recursion?)"
                ),
                None => trap.to_string(),
            },
            None => root_cause(&error),
        };
        if !stderr.is_empty() {
            message.push_str("; guest stderr: ");
            message.push_str(&stderr);
        }
        OperatorFailure::Trapped(message)
    }
}

/// Languages that keep their stack in linear memory (Rust, C) overflow it into an
/// out-of-bounds access rather than a stack overflow trap. Told apart by the captured
/// backtrace (wasmtime keeps its innermost frames): when they are all one function,
/// the access is almost surely the stack running out in a recursion. Returns the
/// function's name.
fn stack_overflow(error: &wasmtime::Error) -> Option<String> {
    if error.downcast_ref::<Trap>() != Some(&Trap::MemoryOutOfBounds) {
        return None;
    }
    let frames = error.downcast_ref::<wasmtime::WasmBacktrace>()?.frames();
    let first = frames.first()?;
    let same = frames.iter().all(|f| f.func_index() == first.func_index() && f.module().name() == first.module().name());
    (frames.len() >= 16 && same).then(|| first.func_name().unwrap_or("?").to_string())
}

fn root_cause(error: &wasmtime::Error) -> String {
    error.chain().last().map(|e| e.to_string()).unwrap_or_default()
}

/// How often a running call checks whether the job is stopping: every 10 ticks (100 ms).
const INTERRUPT_CHECK_TICKS: u64 = 10;

fn deadline_ticks(limits: Limits) -> u64 {
    (limits.call_timeout_ms / EPOCH_TICK.as_millis() as u64).max(1)
}

/// Calls the same export of whichever contract version the guest implements.
macro_rules! call {
    ($self:ident, $method:ident $(, $arg:expr)*) => {
        match &$self.guest {
            Guest::V0_1(guest) => guest.weir_operator_handler().$method(&mut $self.store $(, $arg)*),
            Guest::V0_2(guest) => guest.weir_operator_handler().$method(&mut $self.store $(, $arg)*),
            Guest::V0_3(guest) => guest.weir_operator_handler().$method(&mut $self.store $(, $arg)*),
        }
    };
}

impl OperatorLogic for WasmOperator {
    fn context(&mut self) -> &mut OperatorContext {
        &mut self.store.data_mut().ctx
    }

    fn open(&mut self) -> Result<(), OperatorFailure> {
        self.arm_deadline();
        let config = self.store.data().ctx.info.config.clone();
        let result = call!(self, call_open, &config);
        self.outcome(result)
    }

    fn process_element(&mut self, event: Event) -> Result<(), OperatorFailure> {
        self.arm_deadline();
        let result = match &self.guest {
            Guest::V0_1(guest) => {
                guest.weir_operator_handler().call_process_element(&mut self.store, &v0_1::guest_event(event))
            }
            Guest::V0_2(_) | Guest::V0_3(_) => {
                // A batch of one, outside of any run the task started.
                self.store.data_mut().ctx.run_of_current_element();
                let outcome = self.process_run(vec![event]);
                self.store.data_mut().ctx.end_run();
                return outcome.map(|_| ()).map_err(|failed| failed.failure);
            }
        };
        self.outcome(result)
    }

    fn process_run(&mut self, events: Vec<Event>) -> Result<RunOutcome, RunFailure> {
        match self.guest {
            // Contract 0.1: one call per element.
            Guest::V0_1(_) => return crate::operator::process_each(self, events),
            Guest::V0_3(_) => return self.process_flat(events),
            Guest::V0_2(_) => {}
        }
        self.arm_deadline();
        let Guest::V0_2(guest) = &self.guest else { unreachable!("checked above") };
        let mut batch = std::mem::take(&mut self.batch);
        batch.extend(events.into_iter().map(v0_2::guest_event));
        let result = guest.weir_operator_handler().call_process_batch(&mut self.store, &batch);
        // The guest must have begun exactly the elements it reports processed, and at
        // least the first (which the host never refuses): otherwise the rest would be
        // sent again and elements processed twice, or never.
        let begun = self.store.data().ctx.run_next();
        let outcome = match result {
            Ok(Ok(processed)) if processed == begun && processed > 0 => Ok(processed),
            Ok(Ok(processed)) => Err(RunFailure::at(
                begun.min(batch.len() as u32),
                OperatorFailure::Contract(format!(
                    "process-batch reported {processed} of {} elements processed, but began {begun}",
                    batch.len()
                )),
            )),
            Ok(Err(error)) => Err(RunFailure::at(error.index, OperatorFailure::Returned(error.message))),
            Err(trap) => {
                let index = self.store.data().ctx.run_position();
                Err(RunFailure::at(index, self.classify(trap)))
            }
        };
        let outcome = match outcome {
            Ok(processed) => {
                let rest = batch.drain(processed as usize..).map(v0_2::event).collect();
                Ok(RunOutcome { processed, rest, spent: Vec::new() })
            }
            // An error the guest returned for one element: its event and the rest.
            Err(mut failed) if failed.is_skippable() && (failed.index as usize) < batch.len() => {
                let mut after = batch.drain(failed.index as usize..).map(v0_2::event);
                failed.event = after.next();
                failed.rest = after.collect();
                Err(failed)
            }
            Err(failed) => Err(failed),
        };
        batch.clear();
        self.batch = batch;
        outcome
    }

    fn on_timer(&mut self, timestamp: i64, domain: TimeDomain, _namespace: &[u8]) -> Result<(), OperatorFailure> {
        self.arm_deadline();
        let result = match &self.guest {
            Guest::V0_1(guest) => guest.weir_operator_handler().call_on_timer(
                &mut self.store,
                timestamp,
                v0_1::guest_time_domain(domain),
            ),
            Guest::V0_2(guest) => guest.weir_operator_handler().call_on_timer(
                &mut self.store,
                timestamp,
                v0_2::guest_time_domain(domain),
            ),
            Guest::V0_3(guest) => guest.weir_operator_handler().call_on_timer(
                &mut self.store,
                timestamp,
                v0_3::guest_time_domain(domain),
            ),
        };
        self.outcome(result)
    }

    fn close(&mut self) -> Result<(), OperatorFailure> {
        self.arm_deadline();
        let result = call!(self, call_close);
        self.outcome(result)
    }

    fn state_version(&mut self) -> Result<u32, OperatorFailure> {
        self.arm_deadline();
        let result = call!(self, call_state_version);
        result.map_err(|e| self.classify(e))
    }

    fn migrate(&mut self, from_version: u32) -> Result<(), OperatorFailure> {
        self.arm_deadline();
        let result = call!(self, call_migrate, from_version);
        self.outcome(result)
    }

    fn process_element_2(&mut self, event: Event) -> Result<(), OperatorFailure> {
        let Some(func) = self.process_element_2 else {
            return Err(OperatorFailure::Contract(
                "an element arrived on input 2, but the component is not a two-input operator \
                 (it does not export weir:operator/co-handler: build it for the co-operator world)"
                    .into(),
            ));
        };
        self.arm_deadline();
        let result = func.call(&mut self.store, (v0_2::guest_event(event),)).map(|(result,)| result);
        self.outcome(result)
    }

    fn snapshot_state(&mut self, checkpoint_id: u64) -> Result<(), OperatorFailure> {
        let Some(func) = self.snapshot_state else { return Ok(()) };
        self.arm_deadline();
        let result = func.call(&mut self.store, (checkpoint_id,)).map(|(result,)| result);
        self.outcome(result)
    }
}
