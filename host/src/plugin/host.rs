//! The host side of the operator contract that every contract version shares: one
//! `impl` per imported WIT interface, each delegating to the subtask's
//! [`OperatorContext`](crate::operator::OperatorContext). Each version folder
//! (`v0_1`, `v0_2`, `v0_3`) expands [`operator_host!`] over its own generated bindings, so a
//! version that keeps an interface unchanged keeps its behaviour too.

/// The host object behind a guest's `value-state`, `list-state` or `map-state` handle.
pub struct StateHandle(pub(super) crate::state::StateId);

/// The host object behind a guest's operator `list-state` handle (contract 0.2).
pub struct OperatorListHandle(pub(super) crate::state::operator::ListId);

/// The host object behind a guest's `broadcast-state` handle (contract 0.2).
pub struct BroadcastHandle(pub(super) crate::state::operator::MapId);

/// Longest guest log message kept; longer ones are cut.
pub const MAX_LOG_MESSAGE: usize = 64 * 1024;

pub use crate::error::printable;

/// Implements the shared interfaces (`types`, `state`, `timers`, `collector`,
/// `context`, `logging`) for [`HostState`](super::HostState) over the bindings module
/// `super::bindings` of the version folder it is expanded in, which must also provide
/// `fn event(types::Event) -> crate::stream::Event` and
/// `fn time_domain(types::TimeDomain) -> crate::timers::TimeDomain`.
macro_rules! operator_host {
    () => {
        use wasmtime::component::Resource;

        use super::bindings::weir::operator::{collector, context, logging, state, timers, types};
        use $crate::operator::check_value_size;
        use $crate::plugin::HostState;
        use $crate::plugin::host::StateHandle;
        use $crate::state::{StateKind, Ttl};



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

        impl types::Host for HostState {}
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

impl collector::Host for HostState {
    fn emit(&mut self, event: types::Event) -> wasmtime::Result<()> {
        Ok(self.ctx.emit(None, super::event(event))?)
    }

    fn emit_to(&mut self, output: String, event: types::Event) -> wasmtime::Result<()> {
        Ok(self.ctx.emit(Some(&output), super::event(event))?)
    }
}

impl context::Host for HostState {
    fn operator_uid(&mut self) -> wasmtime::Result<String> {
        Ok(self.ctx.info.uid.to_string())
    }

    fn subtask_index(&mut self) -> wasmtime::Result<u32> {
        Ok(self.ctx.info.subtask)
    }

    fn parallelism(&mut self) -> wasmtime::Result<u32> {
        Ok(self.ctx.info.parallelism)
    }

    fn config(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.ctx.info.config.clone())
    }

    fn current_key(&mut self) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.ctx.current_key().map(<[u8]>::to_vec))
    }
}

impl logging::Host for HostState {
    fn log(&mut self, level: logging::Level, mut message: String) -> wasmtime::Result<()> {
        if message.len() > $crate::plugin::host::MAX_LOG_MESSAGE {
            let mut cut = $crate::plugin::host::MAX_LOG_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let operator = &*self.ctx.info.uid;
        let subtask = self.ctx.info.subtask;
        let message = $crate::plugin::host::printable(&message);
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
    };
}

pub(super) use operator_host;

/// Implements `operator-state` (contract 0.2 on) over `super::bindings`, as
/// [`operator_host!`] does for the interfaces every version shares.
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

pub(super) use operator_state_host;

/// Defines, in a version folder, the conversions between weir's own `Event` and
/// `TimeDomain` and the generated types of `super::bindings` (moving buffers, never
/// copying them): `event`, `guest_event`, `time_domain` and `guest_time_domain`.
macro_rules! conversions {
    () => {
        use $crate::stream::{Event, Header};
        use $crate::timers::TimeDomain;
        use bindings::weir::operator::types;

        /// Converts an event emitted by the guest into weir's own.
        pub(super) fn event(event: types::Event) -> Event {
            Event {
                key: event.key,
                value: event.value,
                timestamp: event.timestamp,
                headers: event.headers.into_iter().map(|h| Header { name: h.name, value: h.value }).collect(),
            }
        }

        /// Converts weir's event for the guest.
        #[allow(dead_code, reason = "contract 0.3 sends events only in flat batches; its co-handler takes the same-shaped event of 0.2")]
        pub(super) fn guest_event(event: Event) -> types::Event {
            types::Event {
                key: event.key,
                value: event.value,
                timestamp: event.timestamp,
                headers: event.headers.into_iter().map(|h| types::Header { name: h.name, value: h.value }).collect(),
            }
        }

        pub(super) fn time_domain(domain: types::TimeDomain) -> TimeDomain {
            match domain {
                types::TimeDomain::EventTime => TimeDomain::EventTime,
                types::TimeDomain::ProcessingTime => TimeDomain::ProcessingTime,
            }
        }

        pub(super) fn guest_time_domain(domain: TimeDomain) -> types::TimeDomain {
            match domain {
                TimeDomain::EventTime => types::TimeDomain::EventTime,
                TimeDomain::ProcessingTime => types::TimeDomain::ProcessingTime,
            }
        }
    };
}

pub(super) use conversions;
