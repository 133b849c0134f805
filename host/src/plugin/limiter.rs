//! The guest's memory limit as a wasmtime resource limiter whose refusal is a typed
//! error, so that a guest that exhausts its memory is told apart from other traps by type
//! rather than by the text of wasmtime's message.

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// A guest tried to grow its linear memory past its limit (the call traps).
#[derive(Debug, thiserror::Error)]
#[error("the guest tried to grow its memory to {desired} bytes, past its limit of {limit} bytes")]
pub struct MemoryExhausted {
    pub desired: usize,
    pub limit: usize,
}

/// wasmtime's store limits, with a memory limit that traps with [`MemoryExhausted`].
pub struct GuestLimiter {
    memory_bytes: usize,
    /// Tables, instances and memories: wasmtime's own limits (growth past them traps).
    rest: StoreLimits,
}

impl GuestLimiter {
    pub fn new(memory_bytes: usize) -> Self {
        GuestLimiter { memory_bytes, rest: StoreLimitsBuilder::new().trap_on_grow_failure(true).build() }
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            return Err(MemoryExhausted { desired, limit: self.memory_bytes }.into());
        }
        self.rest.memory_growing(current, desired, maximum)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.rest.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.rest.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.rest.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.rest.instances()
    }

    fn tables(&self) -> usize {
        self.rest.tables()
    }

    fn memories(&self) -> usize {
        self.rest.memories()
    }
}
