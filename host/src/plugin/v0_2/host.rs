//! The interfaces of contract 0.2: those shared with 0.1, and `batch`.

crate::plugin::host::operator_host!();

impl super::bindings::weir::operator::batch::Host for HostState {
    fn begin_element(&mut self, index: u32) -> wasmtime::Result<bool> {
        // Each element of a batch gets the whole call deadline.
        self.started = self.ticks.load(std::sync::atomic::Ordering::Relaxed);
        self.slept_past_deadline = false;
        Ok(self.ctx.begin_element(index)?)
    }
}

crate::plugin::host::operator_state_host!();
