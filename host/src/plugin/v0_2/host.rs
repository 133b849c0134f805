//! The interfaces of contract 0.2: those shared with 0.1, and `batch`.

crate::plugin::host::operator_host!();

impl super::bindings::weir::operator::batch::Host for HostState {
    fn begin_element(&mut self, index: u32) -> wasmtime::Result<bool> {
        // Each element of a batch gets the whole call deadline.
        self.started = self.ticks.load(std::sync::atomic::Ordering::Relaxed);
        Ok(self.ctx.begin_element(index)?)
    }
}

use super::bindings::weir::operator::operator_state;
use crate::plugin::host::OperatorListHandle;
use crate::state::operator::Redistribution;

impl operator_state::Host for HostState {
    fn is_restored(&mut self) -> wasmtime::Result<bool> {
        Ok(self.ctx.operator_state.is_restored())
    }
}

impl operator_state::HostListState for HostState {
    fn new(
        &mut self,
        name: String,
        redistribution: operator_state::Redistribution,
    ) -> wasmtime::Result<Resource<OperatorListHandle>> {
        let redistribution = match redistribution {
            operator_state::Redistribution::Split => Redistribution::Split,
            operator_state::Redistribution::Union => Redistribution::Union,
        };
        let id = self.ctx.operator_state.declare(&name, redistribution)?;
        Ok(self.table.push(OperatorListHandle(id))?)
    }

    fn get(&mut self, list: Resource<OperatorListHandle>) -> wasmtime::Result<Vec<Vec<u8>>> {
        let id = self.table.get(&list)?.0;
        Ok(self.ctx.operator_state.get(id).to_vec())
    }

    fn add(&mut self, list: Resource<OperatorListHandle>, item: Vec<u8>) -> wasmtime::Result<()> {
        check_value_size(&item)?;
        let id = self.table.get(&list)?.0;
        Ok(self.ctx.operator_state.add(id, item)?)
    }

    fn update(&mut self, list: Resource<OperatorListHandle>, items: Vec<Vec<u8>>) -> wasmtime::Result<()> {
        for item in &items {
            check_value_size(item)?;
        }
        let id = self.table.get(&list)?.0;
        Ok(self.ctx.operator_state.update(id, items)?)
    }

    fn clear(&mut self, list: Resource<OperatorListHandle>) -> wasmtime::Result<()> {
        let id = self.table.get(&list)?.0;
        self.ctx.operator_state.clear(id);
        Ok(())
    }

    fn drop(&mut self, list: Resource<OperatorListHandle>) -> wasmtime::Result<()> {
        self.table.delete(list)?;
        Ok(())
    }
}
