//! Version 1 of the upgrade test's counter: per key, the number of events and the sum
//! of their `value` fields, kept in two value states (layout 0); emits the count.

use serde::Deserialize;
use weir_guest::{Context, Event, Operator, Result, ValueState, export};

#[derive(Deserialize)]
struct Input {
    value: u64,
}

struct CounterV1 {
    count: ValueState<u64>,
    sum: ValueState<u64>,
}

impl Default for CounterV1 {
    fn default() -> Self {
        CounterV1 { count: ValueState::new("count"), sum: ValueState::new("sum") }
    }
}

impl Operator for CounterV1 {
    fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
        let input: Input = event.value_json()?;
        let count = self.count.get()?.unwrap_or(0) + 1;
        let sum = self.sum.get()?.unwrap_or(0) + input.value;
        self.count.set(&count)?;
        self.sum.set(&sum)?;
        let key = event.key_str().unwrap_or_default().to_string();
        ctx.emit(Event::json(&serde_json::json!({ "v": 1, "key": key, "count": count }))?.with_key(event.key))
    }
}

export!(CounterV1);
