//! Misbehaves on the element whose value contains `"boom"`, in the way config `mode`
//! says: `panic`, `error`, `loop`, `oom`, `unkeyed-state`, `flood`. Other elements
//! pass through unchanged.

use weir_guest::{Context, Event, Operator, Result, ValueState, export};

struct Faulty {
    mode: String,
    state: ValueState<u64>,
}

impl Default for Faulty {
    fn default() -> Self {
        Faulty { mode: String::new(), state: ValueState::new("state") }
    }
}

impl Operator for Faulty {
    fn open(&mut self, ctx: &mut Context) -> Result<()> {
        self.mode = ctx.config("mode").unwrap_or("panic").to_string();
        if self.mode == "fail-open" {
            return Err("refusing to open: mode = fail-open".into());
        }
        Ok(())
    }

    fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
        let boom = event.value.windows(4).any(|w| w == b"boom");
        if boom {
            match self.mode.as_str() {
                "panic" => panic!("boom element reached the faulty operator"),
                "error" => return Err("cannot handle a boom element".into()),
                "loop" => {
                    let mut x: u64 = 0;
                    loop {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                "oom" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                "unkeyed-state" => {
                    self.state.set(&1)?;
                }
                "flood" => loop {
                    ctx.emit(Event::new("x"))?;
                },
                _ => {}
            }
        }
        ctx.emit(event)
    }
}

export!(Faulty);
