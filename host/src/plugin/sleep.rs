//! Sleeping guests keep to their deadline. A guest blocked in a WASI call is outside
//! Wasm, where epoch interruption cannot reach it: `thread::sleep(30 s)` under a 1 s
//! call deadline once ran 30 s, and a one-hour sleep outlived `weir stop`. The only
//! blocking WASI calls a guest has are waits on `wasi:clocks/monotonic-clock` pollables
//! (it has no files, sockets or stdin), so this module shadows the clock's two
//! `subscribe` functions: the pollable they return wakes at the requested time, at the
//! end of the call's deadline, or when the job stops, whichever comes first. The guest
//! then runs again and the epoch check stops it with the deadline (or stop) it reached.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::clocks::WasiClocksView as _;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};

use super::{EPOCH_TICK, HostState};

/// The version of `wasi:clocks` whose functions are shadowed; the linker serves every
/// compatible 0.2 import with it.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// How often a sleeping guest checks for a stop.
const STOP_CHECK: Duration = Duration::from_millis(20);

/// A sleep that ends early when the job stops.
struct GuestSleep {
    until: tokio::time::Instant,
    interrupt: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl Pollable for GuestSleep {
    async fn ready(&mut self) {
        loop {
            let now = tokio::time::Instant::now();
            if now >= self.until || self.interrupt.load(Ordering::Relaxed) {
                return;
            }
            tokio::time::sleep((self.until - now).min(STOP_CHECK)).await;
        }
    }
}

/// A pollable for a sleep of `requested`, cut to what is left of the call's deadline;
/// a cut sleep marks the deadline passed, so the guest is stopped as soon as it runs
/// again (its next epoch check: see `cut_short`).
fn sleep(state: &mut HostState, requested: Duration) -> wasmtime::Result<Resource<DynPollable>> {
    let elapsed_ticks = state.ticks.load(Ordering::Relaxed).saturating_sub(state.started);
    let left = state.deadline.saturating_sub(EPOCH_TICK * elapsed_ticks as u32) + EPOCH_TICK;
    if requested > left {
        state.slept_past_deadline = true;
    }
    let now = tokio::time::Instant::now();
    let until = now.checked_add(requested.min(left)).unwrap_or(now + left);
    let sleep = GuestSleep { until, interrupt: state.ctx.interrupt.clone() };
    let resource = state.table.push(sleep)?;
    subscribe(&mut state.table, resource)
}

/// After a sleep cut at the deadline, the guest's next epoch check runs the deadline
/// callback, which stops it.
fn cut_short(store: &mut wasmtime::StoreContextMut<'_, HostState>) {
    if store.data().slept_past_deadline {
        store.set_epoch_deadline(0);
    }
}

/// Replaces the linked `subscribe-duration` and `subscribe-instant` with [`sleep`].
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap("subscribe-duration", |mut store, (nanos,): (u64,)| {
        let pollable = sleep(store.data_mut(), Duration::from_nanos(nanos))?;
        cut_short(&mut store);
        Ok((pollable,))
    })?;
    clock.func_wrap("subscribe-instant", |mut store, (when,): (u64,)| {
        let state: &mut HostState = store.data_mut();
        let now = monotonic_clock::Host::now(&mut state.clocks())?;
        let pollable = sleep(state, Duration::from_nanos(when.saturating_sub(now)))?;
        cut_short(&mut store);
        Ok((pollable,))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}
