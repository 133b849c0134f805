//! Session summaries for the log-metrics example: when a user's session window fires
//! (30 minutes without activity), one event with the session's span, how many actions
//! it had, how many purchases and failed logins, and its slowest request. Flink's
//!
//! ```python
//! logs.key_by(lambda e: e.user_id) \
//!     .window(EventTimeSessionWindows.with_gap(Time.minutes(30))) \
//!     .process(SessionSummary())
//! ```

use serde::{Deserialize, Serialize};
use weir_guest::window::{ProcessWindowFunction, Window};
use weir_guest::{Event, Result};

struct SessionSummary;

#[derive(Deserialize)]
struct LogEvent {
    action: String,
    ts: i64,
    latency_ms: u64,
}

#[derive(Serialize)]
struct Summary<'a> {
    user_id: &'a str,
    session_start: i64,
    session_end: i64,
    first_action: i64,
    last_action: i64,
    actions: usize,
    purchases: usize,
    failed_logins: usize,
    slowest_ms: u64,
}

impl ProcessWindowFunction for SessionSummary {
    fn process(key: &[u8], window: Window, elements: Vec<Event>) -> Result<Vec<Event>> {
        let mut logs = Vec::with_capacity(elements.len());
        for e in &elements {
            logs.push(e.value_json::<LogEvent>()?);
        }
        let count = |action: &str| logs.iter().filter(|l| l.action == action).count();
        let summary = Summary {
            user_id: std::str::from_utf8(key).map_err(|_| "user ids are text")?,
            session_start: window.start,
            session_end: window.end,
            first_action: logs.iter().map(|l| l.ts).min().unwrap_or(window.start),
            last_action: logs.iter().map(|l| l.ts).max().unwrap_or(window.start),
            actions: logs.len(),
            purchases: count("purchase"),
            failed_logins: count("login_failed"),
            slowest_ms: logs.iter().map(|l| l.latency_ms).max().unwrap_or(0),
        };
        Ok(vec![Event::json(&summary)?])
    }
}

weir_guest::export_process_window!(SessionSummary);
