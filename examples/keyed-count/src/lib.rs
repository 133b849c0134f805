//! Counts elements per key and emits `{"key": .., "count": n}` for each one.
//! The same logic runs natively in the host as `native = "keyed-count"`.
//! With config `ttl_ms`, a key's count expires that long after its last update.

use std::time::Duration;

use serde::Serialize;
use weir_guest::{Context, Event, Operator, Result, StateTtl, ValueState, export};

struct KeyedCount {
    count: ValueState<u64>,
}

impl Default for KeyedCount {
    fn default() -> Self {
        KeyedCount { count: ValueState::new("count") }
    }
}

#[derive(Serialize)]
struct Count<'a> {
    key: &'a str,
    count: u64,
}

impl Operator for KeyedCount {
    fn open(&mut self, ctx: &mut Context) -> Result<()> {
        let ttl_ms: u64 = ctx.config_or("ttl_ms", 0)?;
        if ttl_ms > 0 {
            self.count = ValueState::with_ttl("count", StateTtl::new(Duration::from_millis(ttl_ms)));
        }
        Ok(())
    }

    fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
        let count = self.count.get()?.unwrap_or(0) + 1;
        self.count.set(&count)?;
        let key = event.key_str().unwrap_or_default();
        let out = Event::json(&Count { key, count })?
            .with_key(event.key.clone())
            .with_timestamp(event.timestamp);
        ctx.emit(out)
    }
}

export!(KeyedCount);
