//! The interfaces of contract 0.3: those shared with 0.2, and its own `batch`
//! (`load`, `focus`).

crate::plugin::host::operator_host!();

impl super::bindings::weir::operator::batch::Host for HostState {
    fn load(&mut self, state: Resource<StateHandle>) -> wasmtime::Result<u32> {
        let id = self.table.get(&state)?.0;
        Ok(self.ctx.load_state(id)?)
    }

    fn focus(&mut self, index: u32) -> wasmtime::Result<bool> {
        // A focused element gets the whole call deadline, as a begun one does in 0.2.
        self.started = self.ticks.load(std::sync::atomic::Ordering::Relaxed);
        self.slept_past_deadline = false;
        Ok(self.ctx.focus(index)?)
    }

    fn abandon(&mut self, partial: super::bindings::weir::operator::types::BatchResult) -> wasmtime::Result<()> {
        self.abandoned = Some(Box::new(partial));
        Ok(())
    }
}

crate::plugin::host::operator_state_host!();
