//! Processing time: the host's wall clock in milliseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// The wall clock now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
