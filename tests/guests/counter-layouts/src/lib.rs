//! Counter v1's state layout (version 0: value states `count` and `sum`), changed as
//! config `layout` says, for the compatibility check's tests: `added` declares a map
//! state `seen` too, `removed` drops `sum`, `kind-changed` keeps `count` as a list.
//! Counts like v1 where it can.

use weir_guest::{Context, Event, ListState, MapState, Operator, Result, ValueState, export};

#[derive(Default)]
struct CounterLayouts {
    count: Option<ValueState<u64>>,
    sum: Option<ValueState<u64>>,
    seen: Option<MapState<String, bool>>,
    counts: Option<ListState<u64>>,
}

impl Operator for CounterLayouts {
    fn open(&mut self, ctx: &mut Context) -> Result<()> {
        match ctx.config("layout").unwrap_or("added") {
            "added" => {
                self.count = Some(ValueState::new("count"));
                self.sum = Some(ValueState::new("sum"));
                self.seen = Some(MapState::new("seen"));
            }
            "removed" => self.count = Some(ValueState::new("count")),
            "kind-changed" => {
                self.counts = Some(ListState::new("count"));
                self.sum = Some(ValueState::new("sum"));
            }
            other => return Err(format!("unknown layout `{other}`").into()),
        }
        Ok(())
    }

    fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
        if let Some(count) = &self.count {
            count.set(&(count.get()?.unwrap_or(0) + 1))?;
        }
        if let Some(counts) = &self.counts {
            counts.add(&1)?;
        }
        ctx.emit(event)
    }
}

export!(CounterLayouts);
