//! The keyed-state interface (`value-state`, `list-state`, `map-state`): each call names
//! its state by handle and acts on the current key.

/// Implements `state` for [`HostState`](crate::plugin::HostState) inside
/// [`operator_host!`](super::operator_host), whose imports it uses.
macro_rules! state_host {
    () => {
        fn declare(host: &mut HostState, kind: StateKind, name: &str, ttl: Option<state::Ttl>) -> wasmtime::Result<Resource<StateHandle>> {
            let ttl = ttl.map(|t| Ttl { ttl_ms: t.ttl_ms, refresh_on_read: t.refresh_on_read });
            let id = host.ctx.state.declare(kind, name, ttl)?;
            Ok(host.table.push(StateHandle(id))?)
        }

        fn state_id(host: &HostState, handle: &Resource<StateHandle>) -> wasmtime::Result<$crate::state::StateId> {
            Ok(host.table.get(handle)?.0)
        }

        fn drop_handle(host: &mut HostState, handle: Resource<StateHandle>) -> wasmtime::Result<()> {
            host.table.delete(handle)?;
            Ok(())
        }

        impl state::Host for HostState {}

        impl state::HostValueState for HostState {
            fn new(&mut self, name: String, ttl: Option<state::Ttl>) -> wasmtime::Result<Resource<StateHandle>> {
                declare(self, StateKind::Value, &name, ttl)
            }

            fn get(&mut self, h: Resource<StateHandle>) -> wasmtime::Result<Option<Vec<u8>>> {
                let id = state_id(self, &h)?;
                self.ctx.check_not_loaded(id)?;
                let (state, kg, key) = self.ctx.keyed("value state")?;
                Ok(state.value_get(id, kg, key)?)
            }

            fn set(&mut self, h: Resource<StateHandle>, value: Vec<u8>) -> wasmtime::Result<()> {
                let id = state_id(self, &h)?;
                self.ctx.check_not_loaded(id)?;
                check_value_size(&value)?;
                let (state, kg, key) = self.ctx.keyed("value state")?;
                Ok(state.value_set(id, kg, key, &value)?)
            }

            fn clear(&mut self, h: Resource<StateHandle>) -> wasmtime::Result<()> {
                let id = state_id(self, &h)?;
                self.ctx.check_not_loaded(id)?;
                let (state, kg, key) = self.ctx.keyed("value state")?;
                Ok(state.clear(id, kg, key)?)
            }

            fn drop(&mut self, h: Resource<StateHandle>) -> wasmtime::Result<()> {
                drop_handle(self, h)
            }
        }

        impl state::HostListState for HostState {
            fn new(&mut self, name: String, ttl: Option<state::Ttl>) -> wasmtime::Result<Resource<StateHandle>> {
                declare(self, StateKind::List, &name, ttl)
            }

            fn append(&mut self, h: Resource<StateHandle>, item: Vec<u8>) -> wasmtime::Result<()> {
                let id = state_id(self, &h)?;
                check_value_size(&item)?;
                let (state, kg, key) = self.ctx.keyed("list state")?;
                Ok(state.list_append(id, kg, key, &item)?)
            }

            fn get(&mut self, h: Resource<StateHandle>) -> wasmtime::Result<Vec<Vec<u8>>> {
                let id = state_id(self, &h)?;
                let (state, kg, key) = self.ctx.keyed("list state")?;
                Ok(state.list_get(id, kg, key)?)
            }

            fn clear(&mut self, h: Resource<StateHandle>) -> wasmtime::Result<()> {
                let id = state_id(self, &h)?;
                let (state, kg, key) = self.ctx.keyed("list state")?;
                Ok(state.clear(id, kg, key)?)
            }

            fn drop(&mut self, h: Resource<StateHandle>) -> wasmtime::Result<()> {
                drop_handle(self, h)
            }
        }

        impl state::HostMapState for HostState {
            fn new(&mut self, name: String, ttl: Option<state::Ttl>) -> wasmtime::Result<Resource<StateHandle>> {
                declare(self, StateKind::Map, &name, ttl)
            }

            fn get(&mut self, h: Resource<StateHandle>, user_key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
                let id = state_id(self, &h)?;
                let (state, kg, key) = self.ctx.keyed("map state")?;
                Ok(state.map_get(id, kg, key, &user_key)?)
            }

            fn put(&mut self, h: Resource<StateHandle>, user_key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
                let id = state_id(self, &h)?;
                check_value_size(&user_key)?;
                check_value_size(&value)?;
                let (state, kg, key) = self.ctx.keyed("map state")?;
                Ok(state.map_put(id, kg, key, &user_key, &value)?)
            }

            fn remove(&mut self, h: Resource<StateHandle>, user_key: Vec<u8>) -> wasmtime::Result<()> {
                let id = state_id(self, &h)?;
                let (state, kg, key) = self.ctx.keyed("map state")?;
                Ok(state.map_remove(id, kg, key, &user_key)?)
            }

            fn contains(&mut self, h: Resource<StateHandle>, user_key: Vec<u8>) -> wasmtime::Result<bool> {
                let id = state_id(self, &h)?;
                let (state, kg, key) = self.ctx.keyed("map state")?;
                Ok(state.map_get(id, kg, key, &user_key)?.is_some())
            }

            fn entries(&mut self, h: Resource<StateHandle>) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
                let id = state_id(self, &h)?;
                let (state, kg, key) = self.ctx.keyed("map state")?;
                let mut entries = Vec::new();
                state.map_scan(id, kg, key, &mut |k, v| entries.push((k.to_vec(), v.to_vec())))?;
                Ok(entries)
            }

            fn keys(&mut self, h: Resource<StateHandle>) -> wasmtime::Result<Vec<Vec<u8>>> {
                let id = state_id(self, &h)?;
                let (state, kg, key) = self.ctx.keyed("map state")?;
                let mut keys = Vec::new();
                state.map_scan(id, kg, key, &mut |k, _| keys.push(k.to_vec()))?;
                Ok(keys)
            }

            fn is_empty(&mut self, h: Resource<StateHandle>) -> wasmtime::Result<bool> {
                let id = state_id(self, &h)?;
                let (state, kg, key) = self.ctx.keyed("map state")?;
                let mut empty = true;
                state.map_scan(id, kg, key, &mut |_, _| empty = false)?;
                Ok(empty)
            }

            fn clear(&mut self, h: Resource<StateHandle>) -> wasmtime::Result<()> {
                let id = state_id(self, &h)?;
                let (state, kg, key) = self.ctx.keyed("map state")?;
                Ok(state.clear(id, kg, key)?)
            }

            fn drop(&mut self, h: Resource<StateHandle>) -> wasmtime::Result<()> {
                drop_handle(self, h)
            }
        }
    };
}

pub(in crate::plugin) use state_host;
