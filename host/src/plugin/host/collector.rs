//! The collector interface: events emitted one call at a time (contracts 0.1 and 0.2;
//! contract 0.3 returns them with the batch).

/// Implements `collector` for [`HostState`](crate::plugin::HostState) inside
/// [`operator_host!`](super::operator_host), whose imports it uses.
macro_rules! collector_host {
    () => {
        impl collector::Host for HostState {
            fn emit(&mut self, event: types::Event) -> wasmtime::Result<()> {
                Ok(self.ctx.emit(None, super::event(event))?)
            }

            fn emit_to(&mut self, output: String, event: types::Event) -> wasmtime::Result<()> {
                Ok(self.ctx.emit(Some(&output), super::event(event))?)
            }
        }
    };
}

pub(in crate::plugin) use collector_host;
