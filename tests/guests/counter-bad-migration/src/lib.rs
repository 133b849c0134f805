//! An upgrade whose migration fails: weir must refuse it and keep version 1 running.

use weir_guest::{Context, Event, Operator, Result, export};

#[derive(Default)]
struct Bad;

impl Operator for Bad {
    const STATE_VERSION: u32 = 7;

    fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
        ctx.emit(event)
    }

    fn migrate(&mut self, from_version: u32, _: &mut Context) -> Result<()> {
        Err(format!("this version cannot read state version {from_version}").into())
    }
}

export!(Bad);
