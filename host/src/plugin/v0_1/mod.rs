//! Contract `weir:operator@0.1.0` (`wit/v0.1/operator.wit`): one guest call per
//! element. Components built for it keep running unchanged; the host feeds them a
//! batch one element at a time.

pub mod bindings;
mod host;

crate::plugin::host::conversions!();
