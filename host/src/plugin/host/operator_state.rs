//! The operator-state interface (contract 0.2 on): list and broadcast state of the
//! whole subtask, not of a key.

/// Implements `operator-state` (contract 0.2 on) over `super::bindings`, as
/// [`operator_host!`](super::operator_host) does for the interfaces every version shares.
macro_rules! operator_state_host {
    () => {
        use super::bindings::weir::operator::operator_state;
        use $crate::plugin::host::{BroadcastHandle, OperatorListHandle};
        use $crate::state::operator::Redistribution;

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

        impl operator_state::HostBroadcastState for HostState {
            fn new(&mut self, name: String) -> wasmtime::Result<Resource<BroadcastHandle>> {
                let id = self.ctx.operator_state.declare_broadcast(&name)?;
                Ok(self.table.push(BroadcastHandle(id))?)
            }

            fn get(&mut self, map: Resource<BroadcastHandle>, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
                let id = self.table.get(&map)?.0;
                Ok(self.ctx.operator_state.broadcast(id).and_then(|m| m.entries.get(&key).cloned()))
            }

            fn contains(&mut self, map: Resource<BroadcastHandle>, key: Vec<u8>) -> wasmtime::Result<bool> {
                let id = self.table.get(&map)?.0;
                Ok(self.ctx.operator_state.broadcast(id).is_some_and(|m| m.entries.contains_key(&key)))
            }

            fn entries(&mut self, map: Resource<BroadcastHandle>) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
                let id = self.table.get(&map)?.0;
                let map = self.ctx.operator_state.broadcast(id);
                Ok(map.map(|m| m.entries.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default())
            }

            fn put(&mut self, map: Resource<BroadcastHandle>, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
                check_value_size(&value)?;
                let id = self.table.get(&map)?.0;
                Ok(self.ctx.operator_state.broadcast_put(id, key, value)?)
            }

            fn remove(&mut self, map: Resource<BroadcastHandle>, key: Vec<u8>) -> wasmtime::Result<()> {
                let id = self.table.get(&map)?.0;
                Ok(self.ctx.operator_state.broadcast_remove(id, &key)?)
            }

            fn clear(&mut self, map: Resource<BroadcastHandle>) -> wasmtime::Result<()> {
                let id = self.table.get(&map)?.0;
                Ok(self.ctx.operator_state.broadcast_clear(id)?)
            }

            fn drop(&mut self, map: Resource<BroadcastHandle>) -> wasmtime::Result<()> {
                self.table.delete(map)?;
                Ok(())
            }
        }
    };
}

pub(in crate::plugin) use operator_state_host;
