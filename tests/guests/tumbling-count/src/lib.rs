//! A one-minute tumbling count per key built on map state and event-time timers, as
//! Flink's window operator does it: each window's count fires when the watermark
//! passes the window's last millisecond. Jobs run it with `late = "drop"`, so late
//! events never reach it: the host routes them to the `late` side output. (The
//! `tumbling-count` example uses the host's window operator instead.)

use serde::Serialize;
use weir_guest::{Context, Event, MapState, Operator, Result, TimeDomain, export};

#[derive(Serialize)]
struct WindowCount<'a> {
    key: &'a str,
    window_start: i64,
    window_end: i64,
    count: u64,
}

struct TumblingCount {
    /// Window end → count.
    counts: MapState<i64, u64>,
    size_ms: i64,
}

impl Default for TumblingCount {
    fn default() -> Self {
        TumblingCount { counts: MapState::new("counts"), size_ms: 60_000 }
    }
}

impl Operator for TumblingCount {
    fn open(&mut self, ctx: &mut Context) -> Result<()> {
        self.size_ms = ctx.config_or("size_ms", self.size_ms)?;
        Ok(())
    }

    fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
        let ts = event.timestamp.ok_or("event without a timestamp")?;
        let end = ts - ts.rem_euclid(self.size_ms) + self.size_ms;
        let count = self.counts.get(&end)?.unwrap_or(0) + 1;
        self.counts.put(&end, &count)?;
        ctx.register_event_timer(end - 1);
        Ok(())
    }

    fn on_timer(&mut self, timestamp: i64, _: TimeDomain, ctx: &mut Context) -> Result<()> {
        let end = timestamp + 1;
        let Some(count) = self.counts.get(&end)? else { return Ok(()) };
        self.counts.remove(&end)?;
        let key = ctx.current_key().unwrap_or_default();
        let out = WindowCount {
            key: &String::from_utf8_lossy(&key),
            window_start: end - self.size_ms,
            window_end: end,
            count,
        };
        ctx.emit(Event::json(&out)?.with_key(Some(key)).with_timestamp(Some(timestamp)))
    }
}

export!(TumblingCount);
