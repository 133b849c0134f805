//! A model operator for the test that batch-loaded value states behave exactly as
//! per-call ones. With config `loaded = true` its value states are made in
//! `Default::default`, so they travel with each batch (contract 0.3's `batch.load`);
//! with `loaded = false` they are made on the first element, after `open`, so every
//! access is a host call. Everything else is the same, and so must the output be.
//!
//! Each input `{"op": ..., "n": ...}` does one thing to the current key's state and
//! emits what every state holds afterwards:
//! - `add`: `count += n`; `note` gets `+n` appended (a growing string)
//! - `pad`: sets `note` to `n` bytes
//! - `clear`: clears `count` and `note`
//! - `read`: reads everything (refreshes `fresh`, whose time to live refreshes on read)
//! - `put`: sets `fresh` and `stale` (time to live `ttl_ms`, `stale`'s only on write)
//! - `timer`: registers an event-time timer at the element's time + `n`, whose firing
//!   emits the state it sees (written back from the batch before it fires)
//! - `list`: appends `n` to a list state (never loaded), which the output shows too

use std::time::Duration;

use serde::Deserialize;
use weir_guest::{Context, Event, ListState, Operator, Result, StateTtl, ValueState, export};

#[derive(Deserialize)]
struct Input {
    op: String,
    #[serde(default)]
    n: i64,
}

struct States {
    count: ValueState<i64>,
    note: ValueState<String>,
    fresh: ValueState<i64>,
    stale: ValueState<i64>,
    list: ListState<i64>,
}

impl States {
    fn new(ttl_ms: u64) -> Self {
        let ttl = Duration::from_millis(ttl_ms);
        States {
            count: ValueState::new("count"),
            note: ValueState::new("note"),
            fresh: ValueState::with_ttl("fresh", StateTtl::new(ttl).refresh_on_read()),
            stale: ValueState::with_ttl("stale", StateTtl::new(ttl)),
            list: ListState::new("list"),
        }
    }

    fn show(&self, key: &str, at: &str) -> Result<Event> {
        Event::json(&serde_json::json!({
            "key": key,
            "at": at,
            "count": self.count.get()?,
            "note": self.note.get()?,
            "stale": self.stale.get()?,
            "list": self.list.get()?.len(),
        }))
    }
}

#[derive(Default)]
struct Model {
    ttl_ms: u64,
    states: Option<States>,
}

impl Operator for Model {
    fn open(&mut self, ctx: &mut Context) -> Result<()> {
        self.ttl_ms = ctx.config_or("ttl_ms", 3_600_000)?;
        if ctx.config_or("loaded", true)? {
            self.states = Some(States::new(self.ttl_ms));
        }
        Ok(())
    }

    fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
        let ttl_ms = self.ttl_ms;
        let s = self.states.get_or_insert_with(|| States::new(ttl_ms));
        let input: Input = event.value_json()?;
        let key = event.key_str().unwrap_or_default().to_string();
        match input.op.as_str() {
            "add" => {
                s.count.set(&(s.count.get()?.unwrap_or(0) + input.n))?;
                let note = s.note.get()?.unwrap_or_default();
                s.note.set(&format!("{note}+{}", input.n))?;
            }
            "pad" => s.note.set(&"x".repeat(input.n as usize))?,
            "clear" => {
                s.count.clear();
                s.note.clear();
            }
            "read" => {
                s.fresh.get()?;
            }
            "put" => {
                s.fresh.set(&input.n)?;
                s.stale.set(&input.n)?;
            }
            "timer" => ctx.register_event_timer(event.timestamp.unwrap_or(0) + input.n),
            "list" => s.list.add(&input.n)?,
            other => return Err(format!("unknown op {other:?}").into()),
        }
        let mut out = s.show(&key, &input.op)?;
        // `fresh` is shown without reading it (a read would refresh it): only `read`
        // reads it, and shows what it read.
        if input.op == "read" {
            out = Event::json(&serde_json::json!({ "key": key, "at": "read", "fresh": s.fresh.get()? }))?;
        }
        ctx.emit(out.with_key(event.key))
    }

    fn on_timer(&mut self, timestamp: i64, _domain: weir_guest::TimeDomain, ctx: &mut Context) -> Result<()> {
        let Some(s) = &self.states else { return Ok(()) };
        let key = String::from_utf8(ctx.current_key().unwrap_or_default()).unwrap_or_default();
        let out = s.show(&key, &format!("timer {timestamp}"))?;
        ctx.emit(out.with_key(Some(key.into_bytes())))
    }
}

export!(Model);
