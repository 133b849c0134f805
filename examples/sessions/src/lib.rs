//! Session summaries: a user's session closes after 30 minutes without activity in
//! event time. Each new click moves the session's closing timer (delete, register).

use serde::{Deserialize, Serialize};
use weir_guest::{Context, Event, Operator, Result, TimeDomain, ValueState, export};

#[derive(Serialize, Deserialize, Clone)]
struct Session {
    start: i64,
    last: i64,
    clicks: u64,
}

#[derive(Serialize)]
struct Summary<'a> {
    user: &'a str,
    start: i64,
    end: i64,
    clicks: u64,
    duration_ms: i64,
}

struct Sessions {
    session: ValueState<Session>,
    gap_ms: i64,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions { session: ValueState::new("session"), gap_ms: 30 * 60 * 1000 }
    }
}

impl Sessions {
    fn emit(&self, session: &Session, ctx: &mut Context) -> Result<()> {
        let key = ctx.current_key().unwrap_or_default();
        let user = String::from_utf8_lossy(&key);
        let summary = Summary {
            user: &user,
            start: session.start,
            end: session.last,
            clicks: session.clicks,
            duration_ms: session.last - session.start,
        };
        ctx.emit(Event::json(&summary)?.with_key(Some(key.clone())).with_timestamp(Some(session.last)))
    }
}

impl Operator for Sessions {
    fn open(&mut self, ctx: &mut Context) -> Result<()> {
        self.gap_ms = ctx.config_or("gap_ms", self.gap_ms)?;
        Ok(())
    }

    fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
        let ts = event.timestamp.ok_or("click without a timestamp")?;
        let session = match self.session.get()? {
            // A click after the gap: the old session is over even if its timer has not
            // fired yet (the watermark lags behind the clicks).
            Some(old) if ts > old.last + self.gap_ms => {
                ctx.delete_event_timer(old.last + self.gap_ms);
                self.emit(&old, ctx)?;
                Session { start: ts, last: ts, clicks: 1 }
            }
            Some(old) => {
                ctx.delete_event_timer(old.last + self.gap_ms);
                Session { start: old.start.min(ts), last: old.last.max(ts), clicks: old.clicks + 1 }
            }
            None => Session { start: ts, last: ts, clicks: 1 },
        };
        ctx.register_event_timer(session.last + self.gap_ms);
        self.session.set(&session)
    }

    fn on_timer(&mut self, _: i64, _: TimeDomain, ctx: &mut Context) -> Result<()> {
        if let Some(session) = self.session.get()? {
            self.emit(&session, ctx)?;
            self.session.clear();
        }
        Ok(())
    }
}

export!(Sessions);
