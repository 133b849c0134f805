//! # Windows
//!
//! Host-native window operators with Flink's semantics (`docs/windows.md` maps every
//! Flink API call to its job-file form): an assigner puts each element into windows,
//! a trigger decides when a window fires, allowed lateness keeps a window's state after
//! it fired so that late elements fire it again, and an aggregate computes what a
//! window emits.
//!
//! A window operator is an [`OperatorLogic`] on the same runtime as every operator.
//! Its state lives in the keyed state backend with the window as namespace (the user
//! key of map states `window-contents` and `window-trigger`; sessions of a key in
//! value state `window-sessions`), and its timers in the timer service with the
//! window as timer namespace, so windows are checkpointed, restored and rescaled
//! through savepoints like all keyed state.

pub mod assigner;
mod codec;
pub mod function;
mod operator;
mod spec;
#[cfg(test)]
mod tests;

pub use operator::{Guests, WindowOperator};
pub use spec::*;
