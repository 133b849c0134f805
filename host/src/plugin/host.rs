//! The host side of the operator contract: one `impl` per imported WIT interface, each
//! delegating to the subtask's [`OperatorContext`](crate::operator::OperatorContext).

use wasmtime::component::Resource;

use super::HostState;
use super::bindings::weir::operator::{collector, context, logging, state, timers, types};
use crate::operator::check_value_size;
use crate::state::{StateId, StateKind, Ttl};

/// The host object behind a guest's `value-state`, `list-state` or `map-state` handle.
pub struct StateHandle(StateId);

type Result<T> = wasmtime::Result<T>;

impl HostState {
    fn declare(&mut self, kind: StateKind, name: &str, ttl: Option<state::Ttl>) -> Result<Resource<StateHandle>> {
        let ttl = ttl.map(|t| Ttl { ttl_ms: t.ttl_ms, refresh_on_read: t.refresh_on_read });
        let id = self.ctx.state.declare(kind, name, ttl)?;
        Ok(self.table.push(StateHandle(id))?)
    }

    fn state_id(&self, handle: &Resource<StateHandle>) -> Result<StateId> {
        Ok(self.table.get(handle)?.0)
    }

    fn drop_handle(&mut self, handle: Resource<StateHandle>) -> Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl types::Host for HostState {}
impl state::Host for HostState {}

impl state::HostValueState for HostState {
    fn new(&mut self, name: String, ttl: Option<state::Ttl>) -> Result<Resource<StateHandle>> {
        self.declare(StateKind::Value, &name, ttl)
    }

    fn get(&mut self, h: Resource<StateHandle>) -> Result<Option<Vec<u8>>> {
        let id = self.state_id(&h)?;
        let (state, kg, key) = self.ctx.keyed("value state")?;
        Ok(state.value_get(id, kg, key)?)
    }

    fn set(&mut self, h: Resource<StateHandle>, value: Vec<u8>) -> Result<()> {
        let id = self.state_id(&h)?;
        check_value_size(&value)?;
        let (state, kg, key) = self.ctx.keyed("value state")?;
        Ok(state.value_set(id, kg, key, &value)?)
    }

    fn clear(&mut self, h: Resource<StateHandle>) -> Result<()> {
        let id = self.state_id(&h)?;
        let (state, kg, key) = self.ctx.keyed("value state")?;
        Ok(state.clear(id, kg, key)?)
    }

    fn drop(&mut self, h: Resource<StateHandle>) -> Result<()> {
        self.drop_handle(h)
    }
}

impl state::HostListState for HostState {
    fn new(&mut self, name: String, ttl: Option<state::Ttl>) -> Result<Resource<StateHandle>> {
        self.declare(StateKind::List, &name, ttl)
    }

    fn append(&mut self, h: Resource<StateHandle>, item: Vec<u8>) -> Result<()> {
        let id = self.state_id(&h)?;
        check_value_size(&item)?;
        let (state, kg, key) = self.ctx.keyed("list state")?;
        Ok(state.list_append(id, kg, key, &item)?)
    }

    fn get(&mut self, h: Resource<StateHandle>) -> Result<Vec<Vec<u8>>> {
        let id = self.state_id(&h)?;
        let (state, kg, key) = self.ctx.keyed("list state")?;
        Ok(state.list_get(id, kg, key)?)
    }

    fn clear(&mut self, h: Resource<StateHandle>) -> Result<()> {
        let id = self.state_id(&h)?;
        let (state, kg, key) = self.ctx.keyed("list state")?;
        Ok(state.clear(id, kg, key)?)
    }

    fn drop(&mut self, h: Resource<StateHandle>) -> Result<()> {
        self.drop_handle(h)
    }
}

impl state::HostMapState for HostState {
    fn new(&mut self, name: String, ttl: Option<state::Ttl>) -> Result<Resource<StateHandle>> {
        self.declare(StateKind::Map, &name, ttl)
    }

    fn get(&mut self, h: Resource<StateHandle>, user_key: Vec<u8>) -> Result<Option<Vec<u8>>> {
        let id = self.state_id(&h)?;
        let (state, kg, key) = self.ctx.keyed("map state")?;
        Ok(state.map_get(id, kg, key, &user_key)?)
    }

    fn put(&mut self, h: Resource<StateHandle>, user_key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        let id = self.state_id(&h)?;
        check_value_size(&user_key)?;
        check_value_size(&value)?;
        let (state, kg, key) = self.ctx.keyed("map state")?;
        Ok(state.map_put(id, kg, key, &user_key, &value)?)
    }

    fn remove(&mut self, h: Resource<StateHandle>, user_key: Vec<u8>) -> Result<()> {
        let id = self.state_id(&h)?;
        let (state, kg, key) = self.ctx.keyed("map state")?;
        Ok(state.map_remove(id, kg, key, &user_key)?)
    }

    fn contains(&mut self, h: Resource<StateHandle>, user_key: Vec<u8>) -> Result<bool> {
        let id = self.state_id(&h)?;
        let (state, kg, key) = self.ctx.keyed("map state")?;
        Ok(state.map_get(id, kg, key, &user_key)?.is_some())
    }

    fn entries(&mut self, h: Resource<StateHandle>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let id = self.state_id(&h)?;
        let (state, kg, key) = self.ctx.keyed("map state")?;
        let mut entries = Vec::new();
        state.map_scan(id, kg, key, &mut |k, v| entries.push((k.to_vec(), v.to_vec())))?;
        Ok(entries)
    }

    fn keys(&mut self, h: Resource<StateHandle>) -> Result<Vec<Vec<u8>>> {
        let id = self.state_id(&h)?;
        let (state, kg, key) = self.ctx.keyed("map state")?;
        let mut keys = Vec::new();
        state.map_scan(id, kg, key, &mut |k, _| keys.push(k.to_vec()))?;
        Ok(keys)
    }

    fn is_empty(&mut self, h: Resource<StateHandle>) -> Result<bool> {
        let id = self.state_id(&h)?;
        let (state, kg, key) = self.ctx.keyed("map state")?;
        let mut empty = true;
        state.map_scan(id, kg, key, &mut |_, _| empty = false)?;
        Ok(empty)
    }

    fn clear(&mut self, h: Resource<StateHandle>) -> Result<()> {
        let id = self.state_id(&h)?;
        let (state, kg, key) = self.ctx.keyed("map state")?;
        Ok(state.clear(id, kg, key)?)
    }

    fn drop(&mut self, h: Resource<StateHandle>) -> Result<()> {
        self.drop_handle(h)
    }
}

impl timers::Host for HostState {
    fn register(&mut self, domain: types::TimeDomain, timestamp: i64) -> Result<()> {
        Ok(self.ctx.register_timer(domain, timestamp)?)
    }

    fn delete(&mut self, domain: types::TimeDomain, timestamp: i64) -> Result<()> {
        Ok(self.ctx.delete_timer(domain, timestamp)?)
    }

    fn current_watermark(&mut self) -> Result<i64> {
        Ok(self.ctx.watermark)
    }

    fn current_processing_time(&mut self) -> Result<i64> {
        Ok(crate::clock::now_ms())
    }
}

impl collector::Host for HostState {
    fn emit(&mut self, event: types::Event) -> Result<()> {
        Ok(self.ctx.emit(None, event)?)
    }

    fn emit_to(&mut self, output: String, event: types::Event) -> Result<()> {
        Ok(self.ctx.emit(Some(&output), event)?)
    }
}

impl context::Host for HostState {
    fn operator_uid(&mut self) -> Result<String> {
        Ok(self.ctx.info.uid.to_string())
    }

    fn subtask_index(&mut self) -> Result<u32> {
        Ok(self.ctx.info.subtask)
    }

    fn parallelism(&mut self) -> Result<u32> {
        Ok(self.ctx.info.parallelism)
    }

    fn config(&mut self) -> Result<Vec<(String, String)>> {
        Ok(self.ctx.info.config.clone())
    }

    fn current_key(&mut self) -> Result<Option<Vec<u8>>> {
        Ok(self.ctx.current_key().map(<[u8]>::to_vec))
    }
}

/// Longest guest log message kept; longer ones are cut.
const MAX_LOG_MESSAGE: usize = 64 * 1024;

impl logging::Host for HostState {
    fn log(&mut self, level: logging::Level, mut message: String) -> Result<()> {
        if message.len() > MAX_LOG_MESSAGE {
            let mut cut = MAX_LOG_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let operator = &*self.ctx.info.uid;
        let subtask = self.ctx.info.subtask;
        match level {
            logging::Level::Trace => tracing::trace!(operator, subtask, "{message}"),
            logging::Level::Debug => tracing::debug!(operator, subtask, "{message}"),
            logging::Level::Info => tracing::info!(operator, subtask, "{message}"),
            logging::Level::Warn => tracing::warn!(operator, subtask, "{message}"),
            logging::Level::Error => tracing::error!(operator, subtask, "{message}"),
        }
        Ok(())
    }
}
