//! The job file's `window` table, checked and compiled into what the operator runs.

use serde::{Deserialize, Serialize};

use crate::timers::TimeDomain;
use super::assigner::{Sliding, Window};
use super::function::Builtin;

/// The `window` table of an operator in the job file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// `tumbling`, `sliding`, `session`, `global` or `count`.
    #[serde(rename = "type")]
    pub kind: WindowKind,
    /// Event time (the default) or processing time.
    #[serde(default)]
    pub time: TimeKind,
    pub size_ms: Option<u64>,
    pub slide_ms: Option<u64>,
    pub gap_ms: Option<u64>,
    #[serde(default)]
    pub offset_ms: i64,
    /// Count windows: elements per window, and (sliding) how many between firings.
    pub size: Option<u64>,
    pub slide: Option<u64>,
    #[serde(default)]
    pub allowed_lateness_ms: u64,
    /// Replaces the assigner's default trigger.
    pub trigger: Option<TriggerSpec>,
    /// What each window computes incrementally: a built-in or a component
    /// (Flink's `aggregate`).
    pub aggregate: Option<AggregateSpec>,
    /// A component combining elements pairwise (Flink's `reduce`).
    pub reduce: Option<FunctionRef>,
    /// A component called when a window fires with its key, the window and its
    /// elements, or the result of `aggregate`/`reduce` (Flink's `process`, and
    /// `aggregate(aggregateFunction, windowFunction)`).
    pub process: Option<FunctionRef>,
    /// The most windows (each holds a timer, two with allowed lateness) one subtask
    /// keeps open; more is an error that names the key.
    #[serde(default = "default_max_open_windows")]
    pub max_open_windows: u64,
}

fn default_max_open_windows() -> u64 {
    1_000_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowKind {
    Tumbling,
    Sliding,
    Session,
    Global,
    Count,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeKind {
    #[default]
    Event,
    Processing,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    /// `event-time`, `processing-time`, `count`, `continuous-event-time`,
    /// `continuous-processing-time`.
    #[serde(rename = "type")]
    pub kind: TriggerKind,
    pub count: Option<u64>,
    pub interval_ms: Option<u64>,
    /// Clear the window's contents after each firing (Flink's `PurgingTrigger`).
    #[serde(default)]
    pub purging: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TriggerKind {
    EventTime,
    ProcessingTime,
    Count,
    ContinuousEventTime,
    ContinuousProcessingTime,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateSpec {
    pub builtin: Option<Builtin>,
    /// The JSON field (dots for nested fields) that sum, min, max and avg read.
    pub field: Option<String>,
    /// A component implementing the `aggregate-function` world (`wit/window.wit`).
    pub component: Option<String>,
}

/// A window function component (path, or a file name looked up like operators').
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionRef {
    pub component: String,
}

fn positive(value: Option<u64>, what: &str, kind: &str) -> Result<i64, String> {
    match value {
        None => Err(format!("{kind} windows need `{what}`")),
        Some(0) => Err(format!("`{what}` must be positive")),
        Some(v) if v > i64::MAX as u64 / 4 => Err(format!("`{what}` is too large")),
        Some(v) => Ok(v as i64),
    }
}

impl WindowSpec {
    /// The components the window names, with the world each must implement.
    pub fn components(&self) -> Vec<(&str, super::function::FunctionKind)> {
        use super::function::FunctionKind;
        let aggregate = self.aggregate.as_ref().and_then(|a| a.component.as_deref()).map(|c| (c, FunctionKind::Aggregate));
        let reduce = self.reduce.as_ref().map(|r| (r.component.as_str(), FunctionKind::Reduce));
        let process = self.process.as_ref().map(|p| (p.component.as_str(), FunctionKind::Process));
        aggregate.into_iter().chain(reduce).chain(process).collect()
    }

    /// Checks the window and compiles it; the error says what to fix.
    pub fn compile(&self) -> Result<Compiled, String> {
        let set = |name: &str, present: bool| if present { Err(format!("`{name}` does not apply to {} windows", self.kind_name())) } else { Ok(()) };
        let (assigner, default_trigger) = match self.kind {
            WindowKind::Tumbling | WindowKind::Sliding => {
                let size = positive(self.size_ms, "size_ms", self.kind_name())?;
                let slide = match self.kind {
                    WindowKind::Tumbling => {
                        set("slide_ms", self.slide_ms.is_some())?;
                        size
                    }
                    _ => positive(self.slide_ms, "slide_ms", "sliding")?,
                };
                if slide > size {
                    return Err(format!("`slide_ms` ({slide}) must not be larger than `size_ms` ({size})"));
                }
                if self.offset_ms.unsigned_abs() >= slide as u64 {
                    return Err(format!("`offset_ms` must be smaller than the slide ({slide} ms)"));
                }
                set("gap_ms", self.gap_ms.is_some())?;
                (Assigner::Sliding(Sliding::new(size, slide, self.offset_ms)), Trigger::time(self.time))
            }
            WindowKind::Session => {
                let gap = positive(self.gap_ms, "gap_ms", "session")?;
                set("size_ms", self.size_ms.is_some())?;
                set("slide_ms", self.slide_ms.is_some())?;
                (Assigner::Session { gap }, Trigger::time(self.time))
            }
            WindowKind::Global => (Assigner::Global, Trigger::Never),
            WindowKind::Count => {
                let size = positive(self.size, "size", "count")?;
                let slide = match self.slide {
                    None => size,
                    Some(_) => positive(self.slide, "slide", "count")?,
                };
                if slide > size {
                    return Err(format!("`slide` ({slide}) must not be larger than `size` ({size})"));
                }
                if self.trigger.is_some() {
                    return Err("count windows bring their own trigger; use a global window to set one".into());
                }
                let trigger = Trigger::Count(slide);
                // As Flink's countWindow: tumbling purges; sliding keeps the last `size`.
                return self.finish(Assigner::Global, trigger, slide == size, (slide != size).then_some(size as usize));
            }
        };
        if matches!(self.kind, WindowKind::Global) {
            set("size_ms", self.size_ms.is_some())?;
            set("gap_ms", self.gap_ms.is_some())?;
        }
        if self.kind != WindowKind::Count && (self.size.is_some() || self.slide.is_some()) {
            return Err("`size` and `slide` are for count windows; time windows take `size_ms` and `slide_ms`".into());
        }
        let (trigger, purging) = match &self.trigger {
            None => (default_trigger, false),
            Some(t) => {
                let trigger = match t.kind {
                    TriggerKind::EventTime => Trigger::EventTime,
                    TriggerKind::ProcessingTime => Trigger::ProcessingTime,
                    TriggerKind::Count => Trigger::Count(positive(t.count, "count", "a count trigger")?),
                    TriggerKind::ContinuousEventTime => {
                        Trigger::ContinuousEventTime(positive(t.interval_ms, "interval_ms", "a continuous trigger")?)
                    }
                    TriggerKind::ContinuousProcessingTime => Trigger::ContinuousProcessingTime(positive(
                        t.interval_ms,
                        "interval_ms",
                        "a continuous trigger",
                    )?),
                };
                if t.count.is_some() && t.kind != TriggerKind::Count {
                    return Err("`count` is for count triggers".into());
                }
                (trigger, t.purging)
            }
        };
        self.finish(assigner, trigger, purging, None)
    }

    fn finish(&self, assigner: Assigner, trigger: Trigger, purging: bool, keep_last: Option<usize>) -> Result<Compiled, String> {
        if self.max_open_windows == 0 {
            return Err("`max_open_windows` must be positive".into());
        }
        match (&self.aggregate, &self.reduce, &self.process) {
            (None, None, None) => {
                return Err("say what the window computes: `aggregate`, `reduce` or `process`".into());
            }
            (Some(_), Some(_), _) => return Err("set `aggregate` or `reduce`, not both".into()),
            _ => {}
        }
        if let Some(aggregate) = &self.aggregate {
            match (aggregate.builtin, &aggregate.component) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err("`aggregate` takes either `builtin` or `component`".into());
                }
                (None, Some(_)) if aggregate.field.is_some() => {
                    return Err("`field` is for built-in aggregates".into());
                }
                (Some(builtin), None) if builtin != Builtin::Count && aggregate.field.as_deref().is_none_or(str::is_empty) => {
                    return Err(format!("the `{}` aggregate needs a `field`", builtin.name()));
                }
                _ => {}
            }
        }
        let time = match self.time {
            TimeKind::Event => TimeDomain::EventTime,
            TimeKind::Processing => TimeDomain::ProcessingTime,
        };
        if time == TimeDomain::ProcessingTime && self.allowed_lateness_ms > 0 {
            return Err("allowed lateness applies to event-time windows only".into());
        }
        let incremental = self.aggregate.is_some() || self.reduce.is_some();
        // Panes are shared between windows only while nothing clears a single window,
        // and only accumulators can be merged from panes.
        let sliced = matches!(assigner, Assigner::Sliding(_))
            && incremental
            && !purging
            && matches!(trigger, Trigger::EventTime | Trigger::ProcessingTime);
        Ok(Compiled {
            assigner,
            trigger,
            purging,
            keep_last,
            time,
            lateness: self.allowed_lateness_ms as i64,
            sliced,
            incremental,
            max_open_windows: self.max_open_windows,
        })
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            WindowKind::Tumbling => "tumbling",
            WindowKind::Sliding => "sliding",
            WindowKind::Session => "session",
            WindowKind::Global => "global",
            WindowKind::Count => "count",
        }
    }
}

/// How elements are put into windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assigner {
    Sliding(Sliding),
    Session { gap: i64 },
    Global,
}

/// When a window fires (Flink's built-in triggers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    EventTime,
    ProcessingTime,
    Count(i64),
    ContinuousEventTime(i64),
    ContinuousProcessingTime(i64),
    /// Global windows' default: never fires.
    Never,
}

impl Trigger {
    fn time(time: TimeKind) -> Trigger {
        match time {
            TimeKind::Event => Trigger::EventTime,
            TimeKind::Processing => Trigger::ProcessingTime,
        }
    }
}

/// A checked window specification.
#[derive(Debug, Clone, Copy)]
pub struct Compiled {
    pub assigner: Assigner,
    pub trigger: Trigger,
    pub purging: bool,
    /// Sliding count windows keep only the last this many elements (Flink's `CountEvictor`).
    pub keep_last: Option<usize>,
    pub time: TimeDomain,
    pub lateness: i64,
    /// Whether elements go to one pane shared by the windows that contain it.
    pub sliced: bool,
    /// Whether windows keep an accumulator (an aggregate or reduce function) rather
    /// than their elements.
    pub incremental: bool,
    pub max_open_windows: u64,
}

impl Compiled {
    /// Flink's `isWindowLate`: an event-time window whose cleanup time has passed.
    pub(super) fn is_late(&self, window: &Window, watermark: i64) -> bool {
        self.time == TimeDomain::EventTime && self.cleanup_time(window).is_some_and(|t| t <= watermark)
    }

    /// When a window's state is removed (`None`: never, for the global window).
    pub(super) fn cleanup_time(&self, window: &Window) -> Option<i64> {
        if *window == Window::GLOBAL {
            return None;
        }
        let lateness = if self.time == TimeDomain::EventTime { self.lateness } else { 0 };
        Some(window.max_timestamp().saturating_add(lateness))
    }

    /// Whether window contents are element lists (an evictor, or a process function
    /// without an aggregate) rather than accumulators.
    pub(super) fn collects(&self) -> bool {
        self.keep_last.is_some() || !self.incremental
    }
}
