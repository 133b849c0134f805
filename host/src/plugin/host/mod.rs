//! The host side of the operator contract that every contract version shares: one
//! file per imported WIT interface (as wasmtime's `p2/host/<interface>.rs`), each an
//! `impl` delegating to the subtask's [`OperatorContext`](crate::operator::OperatorContext). Each version folder
//! (`v0_1`, `v0_2`, `v0_3`) expands [`operator_host!`] over its own generated bindings, so a
//! version that keeps an interface unchanged keeps its behaviour too.

/// The host object behind a guest's `value-state`, `list-state` or `map-state` handle.
pub struct StateHandle(pub(super) crate::state::StateId);

/// The host object behind a guest's operator `list-state` handle (contract 0.2).
pub struct OperatorListHandle(pub(super) crate::state::operator::ListId);

/// The host object behind a guest's `broadcast-state` handle (contract 0.2).
pub struct BroadcastHandle(pub(super) crate::state::operator::MapId);

pub(super) mod collector;
pub(super) mod context;
pub(super) mod conversions;
pub(super) mod logging;
pub(super) mod operator_state;
pub(super) mod state;
pub(super) mod timers;

pub(super) use conversions::conversions;
pub(super) use operator_state::operator_state_host;

/// Implements the shared interfaces (`types`, `state`, `timers`, `collector`,
/// `context`, `logging`) for [`HostState`](super::HostState) over the bindings module
/// `super::bindings` of the version folder it is expanded in, which must also provide
/// `fn event(types::Event) -> crate::stream::Event` and
/// `fn time_domain(types::TimeDomain) -> crate::timers::TimeDomain`.
macro_rules! operator_host {
    () => {
        use wasmtime::component::Resource;

        use super::bindings::weir::operator::{collector, context, logging, state, timers, types};
        use $crate::operator::check_value_size;
        use $crate::plugin::HostState;
        use $crate::plugin::host::StateHandle;
        use $crate::state::{StateKind, Ttl};

        impl types::Host for HostState {}

        $crate::plugin::host::state::state_host!();
        $crate::plugin::host::timers::timers_host!();
        $crate::plugin::host::collector::collector_host!();
        $crate::plugin::host::context::context_host!();
        $crate::plugin::host::logging::logging_host!();
    };
}

pub(super) use operator_host;
