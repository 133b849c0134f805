//! The timer interface: timers of the current key, and the clocks.

/// Implements `timers` for [`HostState`](crate::plugin::HostState) inside
/// [`operator_host!`](super::operator_host), whose imports it uses.
macro_rules! timers_host {
    () => {
        impl timers::Host for HostState {
            fn register(&mut self, domain: types::TimeDomain, timestamp: i64) -> wasmtime::Result<()> {
                Ok(self.ctx.register_timer(super::time_domain(domain), timestamp)?)
            }

            fn delete(&mut self, domain: types::TimeDomain, timestamp: i64) -> wasmtime::Result<()> {
                Ok(self.ctx.delete_timer(super::time_domain(domain), timestamp)?)
            }

            fn current_watermark(&mut self) -> wasmtime::Result<i64> {
                Ok(self.ctx.watermark)
            }

            fn current_processing_time(&mut self) -> wasmtime::Result<i64> {
                Ok(self.ctx.clock.now())
            }
        }
    };
}

pub(in crate::plugin) use timers_host;
