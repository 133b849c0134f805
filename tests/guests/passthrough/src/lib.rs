//! Emits every event unchanged: key, value, timestamp and headers. The Kafka benchmark
//! runs it so that what it measures is the engine and the Wasm boundary, not logic.

use weir_guest::{Context, Event, Operator, Result, export};

#[derive(Default)]
struct Passthrough;

impl Operator for Passthrough {
    fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
        ctx.emit(event)
    }
}

export!(Passthrough);
