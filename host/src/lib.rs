//! # weir
//!
//! A stream processor whose user logic runs as WebAssembly components. A job file
//! wires sources, Wasm (or native) operators and sinks; the host runs every subtask on
//! its own thread with keyed state, timers and event-time watermarks that follow Apache
//! Flink's semantics.
//!
//! The pieces, by domain:
//! - [`job`]: job files, wiring and running; [`task`]: the tasks a job runs;
//! - [`plugin`]: loading and sandboxing operator components; [`operator`]: the
//!   contract between the runtime and an operator's logic;
//! - [`state`], [`timers`], [`watermark`], [`keygroup`]: the streaming semantics;
//! - [`source`], [`sink`]: connectors, with [`kafka`] for what the Kafka ones share; [`stream`]: what flows between tasks.

pub mod api;
pub mod bundle;
pub mod checkpoint;
pub mod cluster;
pub mod clock;
pub mod error;
pub mod job;
pub mod kafka;
pub mod keygroup;
pub mod metrics;
pub mod operator;
pub mod ownership;
pub mod plugin;
pub mod savepoint;
pub mod server;
pub mod sink;
pub mod source;
pub mod state;
pub mod store;
pub mod stream;
pub mod task;
#[cfg(test)]
mod test_rng;
pub mod timers;
pub use weir_toolchain as toolchain;
pub mod watermark;
pub mod window;

pub use job::{Job, JobError, JobOptions, JobSpec, JobSummary};
pub use stream::{Event, Header};
