//! Misbehaves on the element whose value contains `"boom"`, in the way config `mode`
//! says: `panic`, `error`, `loop`, `oom`, `unkeyed-state`, `flood`, `sleep` (an hour,
//! in a blocking WASI call), `recurse` (without end), `timers` (a million per element),
//! `state-bomb` (15 MB list items without end), `map-bomb` (1 MB map entries without
//! end); `forge` returns an error whose text holds a newline and a forged log line;
//! `slow` sleeps `delay_ms` (20) on every element. `snapshot-panic` and
//! `snapshot-loop` misbehave in `snapshot-state` instead, once the boom element has been
//! seen. Other elements pass through unchanged.

use weir_guest::{Context, Event, ListState, MapState, Operator, Result, ValueState, export};

struct Faulty {
    mode: String,
    /// The boom element has been seen (the snapshot modes misbehave from then on).
    armed: bool,
    delay_ms: u64,
    state: ValueState<u64>,
    list: ListState<String>,
    map: MapState<u64, String>,
}

impl Default for Faulty {
    fn default() -> Self {
        Faulty { mode: String::new(), armed: false, delay_ms: 20, state: ValueState::new("state"), list: ListState::new("list"), map: MapState::new("map") }
    }
}

/// Recursion the optimiser cannot turn into a loop.
#[inline(never)]
fn recurse(depth: u64, pad: &mut [u64; 16]) -> u64 {
    let mut local = *pad;
    local[(depth % 16) as usize] = depth;
    std::hint::black_box(&mut local);
    recurse(depth + 1, &mut local) + local[0]
}

impl Operator for Faulty {
    fn open(&mut self, ctx: &mut Context) -> Result<()> {
        self.mode = ctx.config("mode").unwrap_or("panic").to_string();
        self.delay_ms = ctx.config("delay_ms").and_then(|d| d.parse().ok()).unwrap_or(20);
        if self.mode == "fail-open" {
            return Err("refusing to open: mode = fail-open".into());
        }
        Ok(())
    }

    fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
        if self.mode == "slow" {
            // Every element, not only `boom`: a slow operator for back-pressure tests.
            std::thread::sleep(std::time::Duration::from_millis(self.delay_ms));
        }
        let boom = event.value.windows(4).any(|w| w == b"boom");
        if boom {
            match self.mode.as_str() {
                "panic" => panic!("boom element reached the faulty operator"),
                "error" => return Err("cannot handle a boom element".into()),
                "forge" => return Err("x\nerror: FORGED by the guest".into()),
                "snapshot-panic" | "snapshot-loop" => self.armed = true,
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
                "sleep" => std::thread::sleep(std::time::Duration::from_secs(3600)),
                "recurse" => {
                    std::hint::black_box(recurse(0, &mut [0; 16]));
                }
                "timers" => {
                    for t in 0..1_000_000 {
                        ctx.register_event_timer(1_000_000 + t);
                    }
                }
                "state-bomb" => {
                    let item = "x".repeat(15 << 20);
                    loop {
                        self.list.add(&item)?;
                    }
                }
                "map-bomb" => {
                    let item = "x".repeat(1 << 20);
                    for i in 0.. {
                        self.map.put(&i, &item)?;
                    }
                }
                _ => {}
            }
        }
        ctx.emit(event)
    }

    fn snapshot_state(&mut self, checkpoint_id: u64, _ctx: &mut Context) -> Result<()> {
        match self.mode.as_str() {
            "snapshot-panic" if self.armed => panic!("snapshot of checkpoint {checkpoint_id} went wrong"),
            "snapshot-loop" if self.armed => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            _ => Ok(()),
        }
    }
}

export!(Faulty);
