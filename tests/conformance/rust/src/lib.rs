//! The operator conformance suite (tests/conformance/README.md), in Rust.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_guest::{Context, Event, ListState, MapState, Operator, Result, StateTtl, TimeDomain, ValueState, export};

#[derive(Deserialize)]
struct Input {
    op: String,
    k: String,
    v: i64,
    ts: i64,
}

#[derive(Serialize)]
struct Added<'a> {
    k: &'a str,
    sum: i64,
    seen: Vec<i64>,
    counts: BTreeMap<String, i64>,
}

#[derive(Serialize)]
struct Fired<'a> {
    k: &'a str,
    fired: i64,
    sum: i64,
}

#[derive(Serialize)]
struct Side<'a> {
    k: &'a str,
    v: i64,
}

#[derive(Serialize)]
struct Rekeyed<'a> {
    from: &'a str,
    v: i64,
}

#[derive(Serialize)]
struct Recent<'a> {
    k: &'a str,
    recent: Option<i64>,
}

#[derive(Serialize)]
struct ProcessingFired<'a> {
    k: &'a str,
    pfired: i64,
    sum: i64,
}

#[derive(Serialize)]
struct Cleared<'a> {
    k: &'a str,
    cleared: bool,
}

struct Conformance {
    sum: ValueState<i64>,
    seen: ListState<i64>,
    counts: MapState<String, i64>,
    /// With a time to live of 100 ms of processing time.
    recent: ValueState<i64>,
}

impl Default for Conformance {
    fn default() -> Self {
        Conformance {
            sum: ValueState::new("sum"),
            seen: ListState::new("seen"),
            counts: MapState::new("counts"),
            recent: ValueState::with_ttl("recent", StateTtl::new(Duration::from_millis(100))),
        }
    }
}

impl Operator for Conformance {
    fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
        let input: Input = event.value_json()?;
        let k = input.k.as_str();
        match input.op.as_str() {
            "add" => {
                let sum = self.sum.get()?.unwrap_or(0) + input.v;
                self.sum.set(&sum)?;
                self.seen.add(&input.v)?;
                let bucket = (input.v % 3).to_string();
                let count = self.counts.get(&bucket)?.unwrap_or(0) + 1;
                self.counts.put(&bucket, &count)?;
                let counts = self.counts.entries()?.into_iter().collect();
                ctx.emit(Event::json(&Added { k, sum, seen: self.seen.get()?, counts })?)
            }
            "timer" => {
                ctx.register_event_timer(input.ts + input.v);
                Ok(())
            }
            "cancel" => {
                ctx.delete_event_timer(input.ts + input.v);
                Ok(())
            }
            "ttl" => self.recent.set(&input.v),
            "recall" => {
                let recent = self.recent.get()?;
                ctx.emit(Event::json(&Recent { k, recent })?)
            }
            "ptimer" => {
                ctx.register_processing_timer(ctx.processing_time() + input.v);
                Ok(())
            }
            "pcancel" => {
                ctx.delete_processing_timer(ctx.processing_time() + input.v);
                Ok(())
            }
            "side" if input.v % 2 != 0 => ctx.emit_to("odd", Event::json(&Side { k, v: input.v })?),
            "side" => ctx.emit(Event::json(&Side { k, v: input.v })?),
            "rekey" => ctx.emit(Event::json(&Rekeyed { from: k, v: input.v })?.with_key(Some(format!("re-{k}")))),
            "clear" => {
                self.sum.clear();
                self.seen.clear();
                self.counts.clear();
                ctx.emit(Event::json(&Cleared { k, cleared: true })?)
            }
            "fail" => Err(format!("asked to fail: {}", input.v).into()),
            other => Err(format!("unknown op `{other}`").into()),
        }
    }

    fn on_timer(&mut self, timestamp: i64, domain: TimeDomain, ctx: &mut Context) -> Result<()> {
        let key = ctx.current_key().unwrap_or_default();
        let k = String::from_utf8_lossy(&key);
        let sum = self.sum.get()?.unwrap_or(0);
        match domain {
            TimeDomain::EventTime => ctx.emit(Event::json(&Fired { k: &k, fired: timestamp, sum })?),
            TimeDomain::ProcessingTime => ctx.emit(Event::json(&ProcessingFired { k: &k, pfired: timestamp, sum })?),
        }
    }
}

export!(Conformance);
