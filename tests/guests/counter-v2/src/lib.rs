//! Version 2 of the upgrade test's counter: keeps count and sum in one struct state
//! (layout 1), migrates version 1's two value states, and emits both. With config
//! `trap_at = N` it traps on the element that brings a key's count to N (a new version
//! with a bug that shows after a while, for the rollback tests).

use serde::{Deserialize, Serialize};
use weir_guest::{Context, Event, Operator, Result, ValueState, export};

#[derive(Deserialize)]
struct Input {
    value: u64,
}

#[derive(Serialize, Deserialize, Default)]
struct Stats {
    count: u64,
    sum: u64,
}

struct CounterV2 {
    stats: ValueState<Stats>,
    trap_at: Option<u64>,
}

impl Default for CounterV2 {
    fn default() -> Self {
        CounterV2 { stats: ValueState::new("stats"), trap_at: None }
    }
}

impl Operator for CounterV2 {
    const STATE_VERSION: u32 = 1;

    fn open(&mut self, ctx: &mut Context) -> Result<()> {
        self.trap_at = ctx.config("trap_at").and_then(|n| n.parse().ok());
        Ok(())
    }

    fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
        let input: Input = event.value_json()?;
        let mut stats = self.stats.get()?.unwrap_or_default();
        stats.count += 1;
        stats.sum += input.value;
        if self.trap_at == Some(stats.count) {
            panic!("counter v2 has a bug that shows at count {}", stats.count);
        }
        self.stats.set(&stats)?;
        let key = event.key_str().unwrap_or_default().to_string();
        let out = serde_json::json!({ "v": 2, "key": key, "count": stats.count, "sum": stats.sum });
        ctx.emit(Event::json(&out)?.with_key(event.key))
    }

    fn migrate(&mut self, from_version: u32, _: &mut Context) -> Result<()> {
        if from_version != 0 {
            return Err(format!("cannot migrate from state version {from_version}").into());
        }
        let count = ValueState::<u64>::new("count");
        let sum = ValueState::<u64>::new("sum");
        let stats = Stats { count: count.get()?.unwrap_or(0), sum: sum.get()?.unwrap_or(0) };
        self.stats.set(&stats)?;
        count.clear();
        sum.clear();
        Ok(())
    }
}

export!(CounterV2);
