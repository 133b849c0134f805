//! One guest instance: the [`OperatorLogic`] of a Wasm operator subtask.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimitsBuilder, Trap};
use wasmtime_wasi::WasiCtx;

use super::stdio::GuestOutput;
use super::{EPOCH_TICK, HostState, Limits, Plugin, PluginError, bindings};
use crate::operator::{OperatorContext, OperatorFailure, OperatorLogic};
use crate::stream::Event;
use crate::timers::TimeDomain;

/// A Wasm component instance running one operator subtask.
pub struct WasmOperator {
    store: Store<HostState>,
    bindings: bindings::Operator,
    limits: Limits,
    stderr: GuestOutput,
}

impl WasmOperator {
    pub(super) fn new(
        plugin: &Plugin,
        ctx: OperatorContext,
        limits: Limits,
    ) -> Result<Self, PluginError> {
        let label: Arc<str> = ctx.info.label().into();
        let stderr = GuestOutput::new(label.clone(), "stderr");
        let wasi = WasiCtx::builder()
            .stdout(GuestOutput::new(label, "stdout"))
            .stderr(stderr.clone())
            .build();
        let store_limits = StoreLimitsBuilder::new()
            .memory_size((limits.memory_mib as usize) << 20)
            .trap_on_grow_failure(true)
            .build();
        let uid = ctx.info.uid.to_string();
        let mut store = Store::new(
            plugin.pre.engine(),
            HostState { ctx, wasi, table: ResourceTable::new(), limits: store_limits },
        );
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(deadline_ticks(limits));
        let bindings = plugin.pre.instantiate(&mut store).map_err(|e| PluginError::Instantiate {
            uid,
            path: plugin.path().into(),
            reason: format!("{e:#}"),
        })?;
        Ok(WasmOperator { store, bindings, limits, stderr })
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
        if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return OperatorFailure::Deadline { deadline_ms: self.limits.call_timeout_ms };
        }
        let text = format!("{error:#}");
        if text.contains("forcing trap when growing memory") {
            return OperatorFailure::OutOfMemory { limit_mib: self.limits.memory_mib };
        }
        let stderr = self.stderr.tail();
        let mut message = error
            .downcast_ref::<Trap>()
            .map(|trap| trap.to_string())
            .unwrap_or_else(|| root_cause(&error));
        if !stderr.is_empty() {
            message.push_str("; guest stderr: ");
            message.push_str(&stderr);
        }
        OperatorFailure::Trapped(message)
    }

    fn arm_deadline(&mut self) {
        self.store.set_epoch_deadline(deadline_ticks(self.limits));
    }
}

fn root_cause(error: &wasmtime::Error) -> String {
    error.chain().last().map(|e| e.to_string()).unwrap_or_default()
}

fn deadline_ticks(limits: Limits) -> u64 {
    (limits.call_timeout_ms / EPOCH_TICK.as_millis() as u64).max(1)
}

impl OperatorLogic for WasmOperator {
    fn context(&mut self) -> &mut OperatorContext {
        &mut self.store.data_mut().ctx
    }

    fn open(&mut self) -> Result<(), OperatorFailure> {
        self.arm_deadline();
        let config = self.store.data().ctx.info.config.clone();
        let result = self.bindings.weir_operator_handler().call_open(&mut self.store, &config);
        self.outcome(result)
    }

    fn process_element(&mut self, event: &Event) -> Result<(), OperatorFailure> {
        self.arm_deadline();
        let result = self.bindings.weir_operator_handler().call_process_element(&mut self.store, event);
        self.outcome(result)
    }

    fn on_timer(&mut self, timestamp: i64, domain: TimeDomain) -> Result<(), OperatorFailure> {
        self.arm_deadline();
        let result = self.bindings.weir_operator_handler().call_on_timer(&mut self.store, timestamp, domain);
        self.outcome(result)
    }

    fn close(&mut self) -> Result<(), OperatorFailure> {
        self.arm_deadline();
        let result = self.bindings.weir_operator_handler().call_close(&mut self.store);
        self.outcome(result)
    }

    fn state_version(&mut self) -> Result<u32, OperatorFailure> {
        self.arm_deadline();
        let result = self.bindings.weir_operator_handler().call_state_version(&mut self.store);
        result.map_err(|e| self.classify(e))
    }

    fn migrate(&mut self, from_version: u32) -> Result<(), OperatorFailure> {
        self.arm_deadline();
        let result = self.bindings.weir_operator_handler().call_migrate(&mut self.store, from_version);
        self.outcome(result)
    }
}
