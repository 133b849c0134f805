//! # weir guest SDK
//!
//! Write weir stream operators in Rust. An operator is a type implementing [`Operator`],
//! exported with [`export!`] from a `cdylib` crate built with
//! `cargo build --target wasm32-wasip2`. The host hands it elements in batches, one
//! boundary crossing per batch (contract `weir:operator@0.3.0`); the SDK calls
//! [`Operator::process_element`] once per element, so an operator is written one element
//! at a time. The host runs its timers and stores its keyed state. [`ValueState`]s
//! created in `Default::default` travel with each batch: the host loads them for the
//! batch's keys and writes back what the batch changed, so an operator that uses only
//! those makes no host call per element.
//!
//! ```no_run
//! use weir_guest::{export, Context, Event, Operator, Result, ValueState};
//!
//! /// Counts elements per key and emits the running count.
//! struct Count {
//!     seen: ValueState<u64>,
//! }
//!
//! impl Default for Count {
//!     fn default() -> Self {
//!         Count { seen: ValueState::new("seen") }
//!     }
//! }
//!
//! impl Operator for Count {
//!     fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
//!         let seen = self.seen.get()?.unwrap_or(0) + 1;
//!         self.seen.set(&seen)?;
//!         ctx.emit(Event::new(seen.to_string()).with_key(event.key))
//!     }
//! }
//!
//! export!(Count);
//! ```
//!
//! State values are encoded as JSON (through serde), so that guests written in other
//! languages can read the same state after an upgrade.

// The generated bindings name this crate by its public path so that the `export!`
// expansion in a user's crate resolves; this makes that path valid here too.
extern crate self as weir_guest;

mod alloc;
mod batch;
mod context;
mod error;
mod event;
mod state;
pub mod window;

pub use alloc::SmallAlloc;
pub use context::{Context, LogLevel};
pub use error::{Error, Result};
pub use event::{Event, Header, TimeDomain};
pub use state::{BroadcastState, ListState, MapState, OperatorListState, StateTtl, ValueState, is_restored};

/// Small blocks come from free lists (see [`SmallAlloc`]); single-threaded Wasm only, and
/// only with the `small-alloc` feature (on by default).
#[cfg(all(feature = "small-alloc", target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: SmallAlloc = SmallAlloc::new();

/// The raw bindings generated from `wit/v0.3/operator.wit` (`weir:operator@0.3.0`). Most operators never need them;
/// they are public for the [`export!`] macro and for advanced uses.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/v0.3",
        world: "co-operator",
        pub_export_macro: true,
        export_macro_name: "__export_operator_world",
        default_bindings_module: "weir_guest::bindings",
        runtime_path: "weir_guest::__private::wit_bindgen::rt",
    });
}

/// A stream operator.
///
/// Only [`process_element`](Operator::process_element) is required. The host creates the
/// operator with [`Default::default`] once per subtask, then calls `open`, then
/// `process_element` and `on_timer` in input order, then `close`. Returning an error
/// from any of them stops the job with that message, the operator's uid and the
/// element's source position.
pub trait Operator: Default + 'static {
    /// The version of this operator's state layout. Bump it when the layout changes
    /// and implement [`Operator::migrate`]; savepoints remember it.
    const STATE_VERSION: u32 = 0;

    /// Called once before the first element. `ctx.config()` has the operator's
    /// `config` table from the job file.
    fn open(&mut self, ctx: &mut Context) -> Result<()> {
        let _ = ctx;
        Ok(())
    }

    /// Processes one element. Keyed state and timers are scoped to `event.key`.
    fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()>;

    /// A timer of the current key fired at `timestamp` (the timer's own time).
    fn on_timer(&mut self, timestamp: i64, domain: TimeDomain, ctx: &mut Context) -> Result<()> {
        let _ = (timestamp, domain, ctx);
        Ok(())
    }

    /// Called once after the input ended and every event-time timer fired.
    fn close(&mut self, ctx: &mut Context) -> Result<()> {
        let _ = ctx;
        Ok(())
    }

    /// Rewrites the current key's state, written by an operator whose
    /// [`Operator::STATE_VERSION`] was `from_version`, into this version's layout.
    /// Called after `open`, once per restored key, before any element, and only when
    /// `STATE_VERSION` is newer than the saved state's. An operator that raises its
    /// `STATE_VERSION` implements it (returning `Ok(())` if the layout did not change):
    /// left out, the upgrade or restore is refused.
    fn migrate(&mut self, from_version: u32, ctx: &mut Context) -> Result<()> {
        let _ = ctx;
        Err(format!(
            "the operator's STATE_VERSION is {} but it does not implement migrate for state at version {from_version}",
            Self::STATE_VERSION
        )
        .into())
    }

    /// Processes one element of the second input of a two-input operator (edges with
    /// `input = 2`): Flink's `processElement2`, or `processBroadcastElement` when the
    /// input is broadcast (then there is no current key, and [`BroadcastState`] is
    /// writable). Keyed state and timers are scoped to the element's key on a keyed
    /// second input. The default refuses: an operator has one input unless it says
    /// otherwise.
    fn process_element_2(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
        let _ = (event, ctx);
        Err("this operator takes one input (implement Operator::process_element_2 for two)".into())
    }

    /// Called at every checkpoint and savepoint barrier (Flink's
    /// `CheckpointedFunction.snapshotState`): write what the operator keeps in its own
    /// memory into [`OperatorListState`] (or keyed state) now. An error fails that
    /// checkpoint.
    fn snapshot_state(&mut self, checkpoint_id: u64, ctx: &mut Context) -> Result<()> {
        let _ = (checkpoint_id, ctx);
        Ok(())
    }
}

/// Exports an [`Operator`] type as the component's `weir:operator/operator` world.
///
/// Use it once per crate, at the top level: `weir_guest::export!(MyOperator);`.
#[macro_export]
macro_rules! export {
    ($operator:ty) => {
        const _: () = {
            ::std::thread_local! {
                static INSTANCE: ::std::cell::RefCell<::std::option::Option<$operator>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }

            struct Exported;

            impl $crate::bindings::exports::weir::operator::handler::Guest for Exported {
                fn open(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::open(&INSTANCE, config)
                }

                fn process_batch(
                    batch: $crate::bindings::weir::operator::types::InputBatch,
                ) -> $crate::bindings::weir::operator::types::BatchResult {
                    $crate::__private::process_batch(&INSTANCE, batch)
                }

                fn on_timer(
                    timestamp: i64,
                    domain: $crate::TimeDomain,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::with(&INSTANCE, |op, ctx| {
                        $crate::Operator::on_timer(op, timestamp, domain, ctx)
                    })
                }

                fn close() -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::with(&INSTANCE, |op, ctx| $crate::Operator::close(op, ctx))
                }

                fn state_version() -> u32 {
                    <$operator as $crate::Operator>::STATE_VERSION
                }

                fn migrate(from_version: u32) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::with(&INSTANCE, |op, ctx| {
                        $crate::Operator::migrate(op, from_version, ctx)
                    })
                }
            }

            impl $crate::bindings::exports::weir::operator::checkpointed::Guest for Exported {
                fn snapshot_state(checkpoint_id: u64) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::with(&INSTANCE, |op, ctx| {
                        $crate::Operator::snapshot_state(op, checkpoint_id, ctx)
                    })
                }
            }

            impl $crate::bindings::exports::weir::operator::co_handler::Guest for Exported {
                fn process_element_2(event: $crate::Event) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::with(&INSTANCE, |op, ctx| {
                        $crate::Operator::process_element_2(op, event, ctx)
                    })
                }
            }

            $crate::bindings::__export_operator_world!(Exported);
        };
    };
}

/// Support for [`export!`]; not a public API.
#[doc(hidden)]
pub mod __private {
    use std::cell::RefCell;
    use std::thread::LocalKey;

    pub use wit_bindgen;

    use crate::bindings::weir::operator::types::{BatchResult, ElementError, EmittedEvents, FlatEvents, InputBatch};
    use crate::{Context, Operator};

    type Slot<O> = LocalKey<RefCell<Option<O>>>;

    pub fn open<O: Operator>(
        slot: &'static Slot<O>,
        config: Vec<(String, String)>,
    ) -> Result<(), String> {
        let mut ctx = Context::with_config(config);
        crate::state::begin_open();
        let mut operator = O::default();
        operator.open(&mut ctx).map_err(|e| e.to_string())?;
        // The value states the operator holds now travel with every batch.
        crate::state::load_declared();
        slot.with(|cell| *cell.borrow_mut() = Some(operator));
        Ok(())
    }

    /// Runs `process_element` over a batch, each element current in turn.
    pub fn process_batch<O: Operator>(slot: &'static Slot<O>, batch: InputBatch) -> BatchResult {
        slot.with(|cell| {
            let mut guard = cell.borrow_mut();
            let Some(operator) = guard.as_mut() else {
                return BatchResult {
                    processed: 0,
                    error: Some(ElementError { index: 0, message: "operator called before `open`".into() }),
                    emitted: EmittedEvents {
                        events: FlatEvents {
                            flags: Vec::new(),
                            keys: Vec::new(),
                            key_ends: Vec::new(),
                            values: Vec::new(),
                            value_ends: Vec::new(),
                            timestamps: Vec::new(),
                            headers: Vec::new(),
                        },
                        elements: Vec::new(),
                        ports: Vec::new(),
                        outputs: Vec::new(),
                    },
                    updates: Vec::new(),
                };
            };
            let mut ctx = Context::new();
            crate::batch::run(batch, |event| operator.process_element(event, &mut ctx).map_err(|e| e.to_string()))
        })
    }

    pub fn with<O: Operator>(
        slot: &'static Slot<O>,
        f: impl FnOnce(&mut O, &mut Context) -> crate::Result<()>,
    ) -> Result<(), String> {
        slot.with(|cell| {
            let mut guard = cell.borrow_mut();
            let operator = guard
                .as_mut()
                .ok_or_else(|| "operator called before `open`".to_string())?;
            f(operator, &mut Context::new()).map_err(|e| e.to_string())
        })
    }
}
