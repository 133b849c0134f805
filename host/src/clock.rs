//! Processing time: the host's wall clock in milliseconds since the Unix epoch, or, for
//! tests, a clock that follows the records (`processing_clock = "records"`).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The wall clock now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Which clock an operator subtask's processing time reads (the job file's
/// `processing_clock`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClockKind {
    /// The host's wall clock: what production jobs use.
    #[default]
    Wall,
    /// For tests (as Flink's `ManualProcessingTimeService` or Kafka Streams'
    /// `TopologyTestDriver` wall-clock time): a subtask's processing time is the
    /// greatest timestamp of the records it has received, starting at 0. It moves on
    /// before each record is processed, firing the processing-time timers it passes,
    /// so processing-time windows, timers and state TTL give the same output on every
    /// run, however fast the machine.
    Records,
}

/// One subtask's processing-time clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    kind: ClockKind,
    /// The records clock's time.
    now: i64,
}

impl Clock {
    pub fn new(kind: ClockKind) -> Self {
        Clock { kind, now: 0 }
    }

    /// The subtask's processing time now.
    pub fn now(&self) -> i64 {
        match self.kind {
            ClockKind::Wall => now_ms(),
            ClockKind::Records => self.now,
        }
    }

    /// Whether the time moves only with the records (never with the wall clock).
    pub fn follows_records(&self) -> bool {
        self.kind == ClockKind::Records
    }

    /// Moves a records clock on to `timestamp` (never back); a wall clock ignores it.
    pub fn advance_to(&mut self, timestamp: i64) {
        if self.kind == ClockKind::Records {
            self.now = self.now.max(timestamp);
        }
    }
}

/// A time in ms since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_records_clock_moves_only_forward_and_only_with_records() {
        let mut clock = Clock::new(ClockKind::Records);
        assert_eq!(clock.now(), 0);
        clock.advance_to(500);
        clock.advance_to(300);
        assert_eq!(clock.now(), 500);
        let mut wall = Clock::new(ClockKind::Wall);
        wall.advance_to(5);
        assert!(wall.now() > 1_700_000_000_000);
    }

    #[test]
    fn times_format_as_utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_796_667_328_479), "2026-12-07 18:15:28 UTC");
    }
}
