//! # Watermarks
//!
//! Event time follows Apache Flink: a `Watermark::EventTime(t)` declares that no more
//! elements with a timestamp `<= t` should arrive. Sources generate watermarks with a
//! [`BoundedOutOfOrderness`] strategy (`max_seen - bound - 1`, as Flink's
//! `forBoundedOutOfOrderness`), and every task combines its inputs' watermarks as the
//! minimum over the inputs that are active ([`InputWatermarks`]). An input can declare
//! itself idle so that a silent partition does not hold event time back.

use serde::Deserialize;

/// A watermark, as carried between tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watermark {
    /// Event time has reached this many milliseconds since the Unix epoch.
    EventTime(i64),
    /// The input has no data for now and must not hold back the combined watermark.
    Idle,
}

/// The watermark before any was received.
pub const MIN_WATERMARK: i64 = i64::MIN;
/// The watermark sent at the end of a bounded input: every event-time timer fires.
pub const MAX_WATERMARK: i64 = i64::MAX;

/// A source's watermark strategy, from the job file's `watermark` table.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WatermarkStrategy {
    /// How far behind the largest timestamp seen elements may still arrive, in ms.
    #[serde(default)]
    pub max_out_of_orderness_ms: i64,
    /// After this long without input the source declares itself idle (ms; 0 = never).
    #[serde(default)]
    pub idle_timeout_ms: u64,
}

impl Default for WatermarkStrategy {
    fn default() -> Self {
        WatermarkStrategy { max_out_of_orderness_ms: 0, idle_timeout_ms: 0 }
    }
}

/// Flink's bounded-out-of-orderness generator: the watermark trails the largest
/// timestamp seen by the bound (plus one millisecond, as a watermark `t` promises
/// nothing more at or before `t`).
#[derive(Debug, Clone)]
pub struct BoundedOutOfOrderness {
    bound: i64,
    max_timestamp: Option<i64>,
    emitted: i64,
}

impl BoundedOutOfOrderness {
    pub fn new(bound_ms: i64) -> Self {
        BoundedOutOfOrderness { bound: bound_ms, max_timestamp: None, emitted: MIN_WATERMARK }
    }

    /// Observes an element's timestamp and returns a new watermark if it advanced.
    pub fn on_event(&mut self, timestamp: i64) -> Option<i64> {
        if self.max_timestamp.is_some_and(|max| max >= timestamp) {
            return None;
        }
        self.max_timestamp = Some(timestamp);
        let candidate = timestamp.saturating_sub(self.bound).saturating_sub(1);
        (candidate > self.emitted).then(|| {
            self.emitted = candidate;
            candidate
        })
    }

    /// The last watermark this generator produced.
    pub fn current(&self) -> i64 {
        self.emitted
    }

    /// The largest timestamp seen, for checkpoints.
    pub fn max_timestamp(&self) -> Option<i64> {
        self.max_timestamp
    }

    /// Continues from a checkpointed largest timestamp.
    pub fn restore(&mut self, max_timestamp: Option<i64>) {
        self.max_timestamp = max_timestamp;
        self.emitted = max_timestamp
            .map_or(MIN_WATERMARK, |t| t.saturating_sub(self.bound).saturating_sub(1));
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum InputStatus {
    Active(i64),
    Idle(i64),
    Finished,
}

/// Combines the watermarks of a task's input channels: the minimum over active inputs,
/// ignoring idle and finished ones, and never going backwards.
#[derive(Debug, Clone)]
pub struct InputWatermarks {
    inputs: Vec<InputStatus>,
    combined: i64,
    idle: bool,
}

impl InputWatermarks {
    pub fn new(inputs: usize) -> Self {
        Self::starting_at(inputs, MIN_WATERMARK)
    }

    /// Inputs whose watermark is already `watermark` (after a restore).
    pub fn starting_at(inputs: usize, watermark: i64) -> Self {
        InputWatermarks {
            inputs: vec![InputStatus::Active(watermark); inputs],
            combined: watermark,
            idle: false,
        }
    }

    /// The combined watermark so far.
    pub fn current(&self) -> i64 {
        self.combined
    }

    /// Whether every unfinished input is idle.
    pub fn is_idle(&self) -> bool {
        self.idle
    }

    /// Records `watermark` from `input` and returns the change in the combined output,
    /// if any: a higher event time, or the whole task turning idle.
    pub fn update(&mut self, input: usize, watermark: Watermark) -> Option<Watermark> {
        let status = &mut self.inputs[input];
        *status = match (*status, watermark) {
            (InputStatus::Finished, _) => InputStatus::Finished,
            (InputStatus::Active(t) | InputStatus::Idle(t), Watermark::EventTime(new)) => {
                InputStatus::Active(t.max(new))
            }
            (InputStatus::Active(t) | InputStatus::Idle(t), Watermark::Idle) => {
                InputStatus::Idle(t)
            }
        };
        self.recompute()
    }

    /// Marks `input` as ended; it no longer holds back the combined watermark.
    pub fn finish(&mut self, input: usize) -> Option<Watermark> {
        self.inputs[input] = InputStatus::Finished;
        self.recompute()
    }

    fn recompute(&mut self) -> Option<Watermark> {
        let mut min_active = None::<i64>;
        let mut any_idle = false;
        for status in &self.inputs {
            match *status {
                InputStatus::Active(t) => min_active = Some(min_active.map_or(t, |m| m.min(t))),
                InputStatus::Idle(_) => any_idle = true,
                InputStatus::Finished => {}
            }
        }
        match min_active {
            Some(t) => {
                self.idle = false;
                (t > self.combined).then(|| {
                    self.combined = t;
                    Watermark::EventTime(t)
                })
            }
            None if any_idle => {
                let became_idle = !self.idle;
                self.idle = true;
                became_idle.then_some(Watermark::Idle)
            }
            None => {
                self.idle = false;
                (self.combined < MAX_WATERMARK).then(|| {
                    self.combined = MAX_WATERMARK;
                    Watermark::EventTime(MAX_WATERMARK)
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_out_of_orderness_trails_max_timestamp() {
        let mut g = BoundedOutOfOrderness::new(10);
        assert_eq!(g.on_event(100), Some(89));
        assert_eq!(g.on_event(95), None, "an older element never moves the watermark");
        assert_eq!(g.on_event(100), None);
        assert_eq!(g.on_event(120), Some(109));
        assert_eq!(g.current(), 109);
    }

    #[test]
    fn combined_watermark_is_the_minimum_of_active_inputs() {
        let mut w = InputWatermarks::new(2);
        assert_eq!(w.update(0, Watermark::EventTime(10)), None, "input 1 still at MIN");
        assert_eq!(w.update(1, Watermark::EventTime(5)), Some(Watermark::EventTime(5)));
        assert_eq!(w.update(1, Watermark::EventTime(20)), Some(Watermark::EventTime(10)));
        assert_eq!(w.update(0, Watermark::EventTime(8)), None, "never goes backwards");
        assert_eq!(w.current(), 10);
    }

    #[test]
    fn idle_inputs_do_not_hold_back_event_time() {
        let mut w = InputWatermarks::new(2);
        w.update(0, Watermark::EventTime(50));
        assert_eq!(w.update(1, Watermark::Idle), Some(Watermark::EventTime(50)));
        assert_eq!(w.update(0, Watermark::Idle), Some(Watermark::Idle));
        assert!(w.is_idle());
        // Input 1 wakes up behind the combined watermark: it becomes active, and the
        // combined watermark does not go backwards.
        assert_eq!(w.update(1, Watermark::EventTime(40)), None);
        assert!(!w.is_idle());
        assert_eq!(w.update(1, Watermark::EventTime(60)), Some(Watermark::EventTime(60)));
    }

    #[test]
    fn finished_inputs_release_the_watermark_and_all_finished_is_max() {
        let mut w = InputWatermarks::new(2);
        w.update(0, Watermark::EventTime(7));
        assert_eq!(w.finish(1), Some(Watermark::EventTime(7)));
        assert_eq!(w.finish(0), Some(Watermark::EventTime(MAX_WATERMARK)));
        assert_eq!(w.update(0, Watermark::EventTime(9)), None);
    }
}
