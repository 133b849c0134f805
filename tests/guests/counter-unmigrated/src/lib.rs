//! A counter that raises its state version without implementing `migrate`: weir must
//! refuse to give it older state.

use weir_guest::{Context, Event, Operator, Result, ValueState, export};

struct Unmigrated {
    count: ValueState<u64>,
}

impl Default for Unmigrated {
    fn default() -> Self {
        Unmigrated { count: ValueState::new("count") }
    }
}

impl Operator for Unmigrated {
    const STATE_VERSION: u32 = 2;

    fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
        self.count.set(&(self.count.get()?.unwrap_or(0) + 1))?;
        ctx.emit(event)
    }
}

export!(Unmigrated);
