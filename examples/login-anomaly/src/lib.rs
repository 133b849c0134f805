//! Login anomaly alert: five failed logins of one user within five minutes of event
//! time raise one alert; a successful login resets the count. The failures are kept in list state; an event-time timer
//! five minutes after each failure drops the ones that can no longer count, and clears
//! the state of users who stopped failing.

use serde::{Deserialize, Serialize};
use weir_guest::{Context, Event, ListState, Operator, Result, TimeDomain, export};

/// A login attempt, as read from the input file.
#[derive(Deserialize)]
struct Login {
    user: String,
    success: bool,
}

#[derive(Serialize)]
struct Alert<'a> {
    alert: &'static str,
    user: &'a str,
    failures: usize,
    first_ts: i64,
    last_ts: i64,
}

struct LoginAnomaly {
    failures: ListState<i64>,
    threshold: usize,
    window_ms: i64,
}

impl Default for LoginAnomaly {
    fn default() -> Self {
        LoginAnomaly { failures: ListState::new("failures"), threshold: 5, window_ms: 300_000 }
    }
}

impl Operator for LoginAnomaly {
    fn open(&mut self, ctx: &mut Context) -> Result<()> {
        self.threshold = ctx.config_or("threshold", 5)?;
        self.window_ms = ctx.config_or("window_ms", 300_000)?;
        Ok(())
    }

    fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
        let login: Login = event.value_json()?;
        let ts = event.timestamp.ok_or("login without a timestamp")?;
        if login.success {
            // A successful login ends the run of failures.
            self.failures.clear();
            return Ok(());
        }
        let mut failures = self.failures.get()?;
        failures.push(ts);
        failures.sort_unstable();
        // Any `threshold` consecutive failures that fit in the window raise the alert.
        let burst = failures
            .windows(self.threshold)
            .find(|w| w[self.threshold - 1] - w[0] <= self.window_ms);
        if let Some(burst) = burst {
            let alert = Alert {
                alert: "failed-login-burst",
                user: &login.user,
                failures: self.threshold,
                first_ts: burst[0],
                last_ts: burst[self.threshold - 1],
            };
            ctx.emit(Event::json(&alert)?.with_key(event.key).with_timestamp(Some(ts)))?;
            self.failures.clear();
            return Ok(());
        }
        self.failures.add(&ts)?;
        ctx.register_event_timer(ts + self.window_ms);
        Ok(())
    }

    fn on_timer(&mut self, timestamp: i64, _: TimeDomain, _: &mut Context) -> Result<()> {
        // Failures at or before `timestamp - window` can no longer be part of a burst.
        let keep: Vec<i64> =
            self.failures.get()?.into_iter().filter(|ts| *ts > timestamp - self.window_ms).collect();
        self.failures.clear();
        for ts in &keep {
            self.failures.add(ts)?;
        }
        Ok(())
    }
}

export!(LoginAnomaly);
