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

/// The watermarks of a source's splits (Kafka partitions; one split for files and
/// generators): each split has its own bounded-out-of-orderness generator, the source's
/// watermark is the minimum over the splits that are not idle, and a split without
/// records for the idle timeout stops holding it back (Flink's per-partition watermarks
/// with idleness).
#[derive(Debug)]
pub struct SplitWatermarks {
    bound: i64,
    idle_timeout: Option<std::time::Duration>,
    splits: std::collections::BTreeMap<u32, SplitState>,
    emitted: i64,
    idle: bool,
    /// When idleness was last checked while records kept coming.
    last_check: std::time::Instant,
}

#[derive(Debug)]
struct SplitState {
    generator: BoundedOutOfOrderness,
    last_record: std::time::Instant,
    idle: bool,
}

impl SplitWatermarks {
    pub fn new(strategy: &WatermarkStrategy) -> Self {
        SplitWatermarks {
            bound: strategy.max_out_of_orderness_ms,
            idle_timeout: (strategy.idle_timeout_ms > 0)
                .then(|| std::time::Duration::from_millis(strategy.idle_timeout_ms)),
            splits: Default::default(),
            emitted: MIN_WATERMARK,
            idle: false,
            last_check: std::time::Instant::now(),
        }
    }

    /// Starts tracking `split` (a newly assigned partition) if it is new.
    pub fn add_split(&mut self, split: u32) {
        self.split_mut(split);
    }

    fn split_mut(&mut self, split: u32) -> &mut SplitState {
        let bound = self.bound;
        self.splits.entry(split).or_insert_with(|| SplitState {
            generator: BoundedOutOfOrderness::new(bound),
            last_record: std::time::Instant::now(),
            idle: false,
        })
    }

    /// Restores the largest timestamps per split from a checkpoint.
    pub fn restore(&mut self, max_timestamps: &std::collections::BTreeMap<u32, i64>) {
        for (split, max) in max_timestamps {
            self.split_mut(*split).generator.restore(Some(*max));
        }
        self.emitted = self.combined().unwrap_or(MIN_WATERMARK);
    }

    /// The largest timestamp per split, for checkpoints.
    pub fn max_timestamps(&self) -> std::collections::BTreeMap<u32, i64> {
        self.splits.iter().filter_map(|(s, st)| Some((*s, st.generator.max_timestamp()?))).collect()
    }

    /// The current watermark.
    pub fn current(&self) -> i64 {
        self.emitted
    }

    fn combined(&self) -> Option<i64> {
        self.splits.values().filter(|s| !s.idle).map(|s| s.generator.current()).min()
    }

    /// A record with `timestamp` from `split`; returns the watermark to emit, if any.
    /// Per record this is one map lookup; the minimum over the splits is only taken
    /// again when this split's own watermark moved or its idleness ended.
    pub fn on_record(&mut self, split: u32, timestamp: Option<i64>) -> Option<Watermark> {
        let idle_timeout = self.idle_timeout;
        let state = self.split_mut(split);
        let was_idle = std::mem::replace(&mut state.idle, false);
        let advanced = timestamp.and_then(|ts| state.generator.on_event(ts)).is_some();
        if let Some(timeout) = idle_timeout {
            // A busy split must not keep a silent one from being found idle: check
            // the others a few times per timeout while records flow.
            let now = std::time::Instant::now();
            state.last_record = now;
            if now.duration_since(self.last_check) >= timeout / 4 {
                if let Some(watermark) = self.on_tick() {
                    return Some(watermark);
                }
            }
        }
        if !advanced && !was_idle && !self.idle {
            return None;
        }
        self.advance(true)
    }

    /// Marks splits idle that had no record for the idle timeout; returns the change.
    pub fn on_tick(&mut self) -> Option<Watermark> {
        let timeout = self.idle_timeout?;
        self.last_check = std::time::Instant::now();
        let mut changed = false;
        for state in self.splits.values_mut() {
            if !state.idle && state.last_record.elapsed() >= timeout {
                state.idle = true;
                changed = true;
            }
        }
        if changed { self.advance(false) } else { None }
    }

    fn advance(&mut self, active: bool) -> Option<Watermark> {
        match self.combined() {
            Some(t) if t > self.emitted => {
                self.emitted = t;
                self.idle = false;
                Some(Watermark::EventTime(t))
            }
            Some(_) if self.idle && active => {
                // Back from idleness: tell downstream where this input stands.
                self.idle = false;
                Some(Watermark::EventTime(self.emitted))
            }
            None if !self.idle && !self.splits.is_empty() => {
                self.idle = true;
                Some(Watermark::Idle)
            }
            _ => None,
        }
    }
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
    fn split_watermarks_take_the_minimum_and_skip_idle_splits() {
        let strategy = WatermarkStrategy { max_out_of_orderness_ms: 0, idle_timeout_ms: 30 };
        let mut w = SplitWatermarks::new(&strategy);
        w.add_split(0);
        w.add_split(1);
        assert_eq!(w.on_record(0, Some(100)), None, "split 1 has not spoken yet");
        assert_eq!(w.on_record(1, Some(50)), Some(Watermark::EventTime(49)));
        assert_eq!(w.on_record(1, Some(200)), Some(Watermark::EventTime(99)));
        std::thread::sleep(std::time::Duration::from_millis(40));
        // Split 0 went idle; the busy split 1 notices without waiting for a tick.
        assert_eq!(w.on_record(1, Some(300)), Some(Watermark::EventTime(299)));
        assert_eq!(w.on_tick(), None);
        assert_eq!(w.on_record(0, Some(120)), None, "back from idleness, and never backwards");
        let saved = w.max_timestamps();
        let mut restored = SplitWatermarks::new(&strategy);
        restored.restore(&saved);
        assert_eq!(restored.current(), 119, "the minimum over the saved splits");
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
