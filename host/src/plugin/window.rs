//! Window functions as Wasm components (`wit/window.wit`): aggregate, reduce and
//! process window functions that a host-native window operator calls. Each instance
//! has its own store, memory limit and call deadline, as operator instances do.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use wasmtime::Store;
use wasmtime::component::Component;

use super::instance::{arm_deadline, classify, guest_store};
use super::stdio::GuestOutput;
use super::{HostState, Limits, PluginError, Runtime, v0_2};
use crate::operator::{OperatorContext, OperatorFailure};
use crate::stream::Event;
use crate::window::assigner::Window;
use crate::window::function::{Aggregate, ProcessWindow};

/// Bindings generated from `wit/window.wit`, sharing the event type of the operator world.
pub mod bindings {
    pub mod aggregate {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "weir:operator/aggregate-function@0.2.0",
            with: { "weir:operator/types": crate::plugin::v0_2::bindings::weir::operator::types },
        });
    }
    pub mod reduce {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "weir:operator/reduce-function@0.2.0",
        });
    }
    pub mod process {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "weir:operator/process-window-function@0.2.0",
            with: { "weir:operator/types": crate::plugin::v0_2::bindings::weir::operator::types },
        });
    }
}

pub use crate::window::function::FunctionKind;

enum FunctionPre {
    Aggregate(bindings::aggregate::AggregateFunctionPre<HostState>),
    Reduce(bindings::reduce::ReduceFunctionPre<HostState>),
    Process(bindings::process::ProcessWindowFunctionPre<HostState>),
}

/// A compiled window function component, ready to instantiate once per subtask.
pub struct FunctionPlugin {
    path: PathBuf,
    pre: FunctionPre,
    digest: String,
    ticks: Arc<AtomicU64>,
}

impl std::fmt::Debug for FunctionPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionPlugin").field("path", &self.path).field("digest", &self.digest).finish()
    }
}

impl Runtime {
    /// Compiles the component at `path` and checks that it implements the world of `kind`.
    pub fn load_function(&self, path: &Path, kind: FunctionKind) -> Result<FunctionPlugin, PluginError> {
        let bytes = super::read_component(path).map_err(|reason| PluginError::Load { path: path.into(), reason })?;
        let component = match &self.cache {
            Some(cache) => cache.load(&self.engine, &bytes).map(|(c, _)| c),
            None => Component::new(&self.engine, &bytes),
        }
        .map_err(|e| PluginError::Load { path: path.into(), reason: format!("{e:#}") })?;
        let wrong = |e: wasmtime::Error| PluginError::NotAFunction {
            path: path.into(),
            world: kind.world(),
            reason: format!("{e:#}"),
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| super::missing_import(path, &e).unwrap_or_else(|| wrong(e)))?;
        let pre = match kind {
            FunctionKind::Aggregate => FunctionPre::Aggregate(bindings::aggregate::AggregateFunctionPre::new(pre).map_err(wrong)?),
            FunctionKind::Reduce => FunctionPre::Reduce(bindings::reduce::ReduceFunctionPre::new(pre).map_err(wrong)?),
            FunctionKind::Process => {
                FunctionPre::Process(bindings::process::ProcessWindowFunctionPre::new(pre).map_err(wrong)?)
            }
        };
        Ok(FunctionPlugin { path: path.into(), pre, digest: super::digest(&bytes), ticks: self.ticks.clone() })
    }
}

/// One instance of a window function component.
pub struct WasmFunction {
    store: Store<HostState>,
    guest: FunctionGuest,
    limits: Limits,
    stderr: GuestOutput,
    /// The aggregate's empty accumulator, created once.
    empty: Option<Vec<u8>>,
}

enum FunctionGuest {
    Aggregate(bindings::aggregate::AggregateFunction),
    Reduce(bindings::reduce::ReduceFunction),
    Process(bindings::process::ProcessWindowFunction),
}

impl FunctionPlugin {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Instantiates the component for one subtask; `ctx` names it in logs and errors
    /// (window functions have no keyed state of their own).
    pub fn instantiate(&self, ctx: OperatorContext, limits: Limits) -> Result<WasmFunction, PluginError> {
        let uid = ctx.info.uid.to_string();
        let engine = match &self.pre {
            FunctionPre::Aggregate(pre) => pre.engine(),
            FunctionPre::Reduce(pre) => pre.engine(),
            FunctionPre::Process(pre) => pre.engine(),
        };
        let (mut store, stderr) = guest_store(engine, &self.ticks, ctx, limits);
        let guest = match &self.pre {
            FunctionPre::Aggregate(pre) => pre.instantiate(&mut store).map(FunctionGuest::Aggregate),
            FunctionPre::Reduce(pre) => pre.instantiate(&mut store).map(FunctionGuest::Reduce),
            FunctionPre::Process(pre) => pre.instantiate(&mut store).map(FunctionGuest::Process),
        }
        .map_err(|e| PluginError::Instantiate { uid, path: self.path.clone(), reason: format!("{e:#}") })?;
        Ok(WasmFunction { store, guest, limits, stderr, empty: None })
    }
}

impl WasmFunction {
    /// Runs one call with a fresh deadline and turns its failure into a message.
    fn call<T>(
        &mut self,
        call: impl FnOnce(&FunctionGuest, &mut Store<HostState>) -> wasmtime::Result<Result<T, String>>,
    ) -> Result<T, String> {
        arm_deadline(&mut self.store, self.limits);
        match call(&self.guest, &mut self.store) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(OperatorFailure::Returned(message).to_string()),
            Err(error) => {
                let interrupted = self.store.data().ctx.interrupt.load(std::sync::atomic::Ordering::Relaxed);
                Err(classify(error, self.limits, &self.stderr, interrupted).to_string())
            }
        }
    }

    fn empty(&mut self) -> Result<Vec<u8>, String> {
        if let Some(empty) = &self.empty {
            return Ok(empty.clone());
        }
        let empty = self.call(|guest, store| match guest {
            FunctionGuest::Aggregate(g) => g.weir_operator_aggregate().call_create_accumulator(store),
            _ => unreachable!("only aggregates have accumulators"),
        })?;
        self.empty = Some(empty.clone());
        Ok(empty)
    }
}

impl Aggregate for WasmFunction {
    fn add(&mut self, acc: Option<&[u8]>, event: &Event) -> Result<Vec<u8>, String> {
        if let FunctionGuest::Reduce(_) = self.guest {
            let Some(acc) = acc else { return Ok(event.value.clone()) };
            let (a, b) = (acc.to_vec(), event.value.clone());
            return self.call(|guest, store| match guest {
                FunctionGuest::Reduce(g) => g.weir_operator_reduce().call_reduce(store, &a, &b),
                _ => unreachable!(),
            });
        }
        let acc = match acc {
            Some(acc) => acc.to_vec(),
            None => self.empty()?,
        };
        let element = v0_2::guest_event(event.clone());
        self.call(|guest, store| match guest {
            FunctionGuest::Aggregate(g) => g.weir_operator_aggregate().call_add(store, &acc, &element),
            _ => unreachable!("a process window function is not an aggregate"),
        })
    }

    fn merge(&mut self, a: &[u8], b: &[u8]) -> Result<Vec<u8>, String> {
        self.call(|guest, store| match guest {
            FunctionGuest::Aggregate(g) => g.weir_operator_aggregate().call_merge(store, a, b),
            FunctionGuest::Reduce(g) => g.weir_operator_reduce().call_reduce(store, a, b),
            FunctionGuest::Process(_) => unreachable!("a process window function is not an aggregate"),
        })
    }

    fn result(&mut self, acc: &[u8]) -> Result<Vec<u8>, String> {
        match self.guest {
            FunctionGuest::Reduce(_) => Ok(acc.to_vec()),
            _ => self.call(|guest, store| match guest {
                FunctionGuest::Aggregate(g) => g.weir_operator_aggregate().call_get_result(store, acc),
                _ => unreachable!(),
            }),
        }
    }

    fn result_name(&self) -> &str {
        "result"
    }

    fn builtin(&self) -> bool {
        false
    }
}

impl ProcessWindow for WasmFunction {
    fn process(&mut self, key: &[u8], window: Window, elements: Vec<Event>) -> Result<Vec<Event>, String> {
        let elements: Vec<_> = elements.into_iter().map(v0_2::guest_event).collect();
        let window = bindings::process::weir::operator::window_types::Window { start: window.start, end: window.end };
        let out = self.call(|guest, store| match guest {
            FunctionGuest::Process(g) => g.weir_operator_process_window().call_process(store, key, window, &elements),
            _ => unreachable!("only process window functions process windows"),
        })?;
        Ok(out.into_iter().map(v0_2::event).collect())
    }
}
