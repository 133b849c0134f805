//! Contract `weir:operator@0.3.0` (`wit/v0.3/operator.wit`): one boundary crossing per
//! batch. Elements go in as flat buffers, with the values of the loaded value states
//! for the batch's keys; what the batch emitted and the states' new values come back
//! as the call's result ([`flat`]).

pub mod bindings;
pub(super) mod flat;
mod host;

crate::plugin::host::conversions!();
