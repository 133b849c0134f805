//! Emits every event unchanged: key, value, timestamp and headers. The Kafka benchmark
//! runs it so that what it measures is the engine and the Wasm boundary, not logic.
//! With config `sleep_ms`, it sleeps that long per element: a slow operator, for
//! back-pressure tests.

use std::time::Duration;

use weir_guest::{Context, Event, Operator, Result, export};

#[derive(Default)]
struct Passthrough {
    sleep: Option<Duration>,
}

impl Operator for Passthrough {
    fn open(&mut self, ctx: &mut Context) -> Result<()> {
        let sleep_ms: u64 = ctx.config_or("sleep_ms", 0)?;
        self.sleep = (sleep_ms > 0).then(|| Duration::from_millis(sleep_ms));
        Ok(())
    }

    fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
        if let Some(sleep) = self.sleep {
            std::thread::sleep(sleep);
        }
        ctx.emit(event)
    }
}

export!(Passthrough);
