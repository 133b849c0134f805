//! Native operators built into the host. They run on the same runtime, state and
//! timers as Wasm operators and exist as baselines: `keyed-count` is the logic of the
//! `examples/keyed-count` guest written in Rust inside the host, so a benchmark can show
//! what the Wasm boundary costs.

use serde::Serialize;

use super::{OperatorContext, OperatorFailure, OperatorLogic};
use crate::state::{StateError, StateId, StateKind};
use crate::stream::Event;
use crate::timers::TimeDomain;

/// The names `native = "..."` accepts in a job file.
pub const NAMES: &[&str] = &["keyed-count"];

/// Creates the native operator called `name`.
pub fn create(name: &str, ctx: OperatorContext) -> Option<Box<dyn OperatorLogic>> {
    match name {
        "keyed-count" => Some(Box::new(KeyedCount { ctx, count: None })),
        _ => None,
    }
}

/// Counts elements per key in value state `count` and emits `{"key", "count"}` for each.
struct KeyedCount {
    ctx: OperatorContext,
    count: Option<StateId>,
}

#[derive(Serialize)]
struct Count<'a> {
    key: &'a str,
    count: u64,
}

impl OperatorLogic for KeyedCount {
    fn context(&mut self) -> &mut OperatorContext {
        &mut self.ctx
    }

    fn open(&mut self) -> Result<(), OperatorFailure> {
        self.count = Some(self.ctx.state.declare(StateKind::Value, "count", None)?);
        Ok(())
    }

    fn process_element(&mut self, event: Event) -> Result<(), OperatorFailure> {
        let id = self.count.expect("opened");
        let (state, kg, key) = self.ctx.keyed("value state").map_err(trap)?;
        let previous: u64 = match state.value_get(id, kg, key)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|_| StateError::Corrupt { what: "count".into() })?,
            None => 0,
        };
        let count = previous + 1;
        state.value_set(id, kg, key, count.to_string().as_bytes())?;
        let text = String::from_utf8_lossy(key);
        // The output is written into the input's buffers (same key and timestamp).
        let mut out = event;
        out.value.clear();
        out.headers.clear();
        serde_json::to_writer(&mut out.value, &Count { key: &text, count })
            .map_err(|e| OperatorFailure::Returned(e.to_string()))?;
        self.ctx.emit(None, out).map_err(trap)
    }

    fn on_timer(&mut self, _: i64, _: TimeDomain, _: &[u8]) -> Result<(), OperatorFailure> {
        Ok(())
    }

    fn close(&mut self) -> Result<(), OperatorFailure> {
        Ok(())
    }
}

fn trap(e: super::ContractError) -> OperatorFailure {
    OperatorFailure::Contract(e.to_string())
}
