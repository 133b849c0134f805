//! Contract `weir:operator@0.2.0` (`wit/operator.wit`): elements cross the boundary in
//! batches (`handler.process-batch`), each made current by `batch.begin-element`, and
//! what a batch emitted comes back in one go.

pub mod bindings;
mod host;

crate::plugin::host::conversions!();
