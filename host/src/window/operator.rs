//! The window operator: elements into windows, triggers, firing, cleanup.

use crate::operator::{OperatorContext, OperatorFailure, OperatorLogic};
use crate::state::{StateId, StateKind};
use crate::stream::Event;
use crate::timers::TimeDomain;
use super::assigner::{Sessions, Sliding, Window};
use super::function::{Aggregate, BuiltinAggregate, ProcessWindow};
use crate::plugin::window::FunctionPlugin;
use crate::plugin::{Limits, PluginError};
use super::codec::{decode_event, encode_event};
use super::function::FunctionKind;
use super::spec::*;

/// What a firing window holds.
enum Contents {
    Accumulator(Option<Vec<u8>>),
    Elements(Vec<Event>),
}

/// Instances of a window's function components, made per subtask by the job.
#[derive(Default)]
pub struct Guests {
    pub aggregate: Option<Box<dyn Aggregate>>,
    pub process: Option<Box<dyn ProcessWindow>>,
}

impl Guests {
    /// Instantiates the components a window names (loaded in the order of
    /// [`WindowSpec::components`]) for one subtask.
    pub fn instantiate(
        spec: &WindowSpec,
        plugins: &[FunctionPlugin],
        ctx: &OperatorContext,
        limits: Limits,
    ) -> Result<Guests, PluginError> {
        let mut guests = Guests::default();
        for ((_, kind), plugin) in spec.components().into_iter().zip(plugins) {
            let instance = Box::new(plugin.instantiate(ctx.placeholder(), limits)?);
            match kind {
                FunctionKind::Aggregate | FunctionKind::Reduce => guests.aggregate = Some(instance),
                FunctionKind::Process => guests.process = Some(instance),
            }
        }
        Ok(guests)
    }
}

/// What a trigger says (Flink's `TriggerResult`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fire {
    No,
    Yes,
}

/// A window operator subtask.
pub struct WindowOperator {
    ctx: OperatorContext,
    spec: Compiled,
    aggregate: Option<Box<dyn Aggregate>>,
    process: Option<Box<dyn ProcessWindow>>,
    states: Option<States>,
    key: Vec<u8>,
    key_group: u16,
    /// Processing time never goes back for this operator: after a processing-time
    /// timer at `t` fired, elements count as processed after `t` even within the same
    /// millisecond, so they cannot reopen a window that already fired.
    processing_floor: i64,
}

#[derive(Debug, Clone, Copy)]
struct States {
    contents: StateId,
    trigger: StateId,
    sessions: StateId,
}

/// The trigger state names, as user keys after the window.
const COUNT: &[u8] = b"c";
const FIRE_AT: &[u8] = b"f";

impl WindowOperator {
    /// A window operator subtask. `guests` holds instances of the spec's components:
    /// the aggregate or reduce function, and the process window function.
    pub fn new(ctx: OperatorContext, spec: &WindowSpec, guests: Guests) -> Result<Self, String> {
        let compiled = spec.compile()?;
        let builtin = spec.aggregate.as_ref().and_then(|a| Some((a.builtin?, a.field.as_deref())));
        let aggregate: Option<Box<dyn Aggregate>> = match builtin {
            Some((builtin, field)) => Some(Box::new(BuiltinAggregate::new(builtin, field))),
            None if compiled.incremental => {
                Some(guests.aggregate.ok_or("the window's aggregate or reduce component is not loaded")?)
            }
            None => None,
        };
        let process = match &spec.process {
            Some(_) => Some(guests.process.ok_or("the window's process component is not loaded")?),
            None => None,
        };
        Ok(WindowOperator {
            ctx,
            spec: compiled,
            aggregate,
            process,
            states: None,
            key: Vec::new(),
            key_group: 0,
            processing_floor: i64::MIN,
        })
    }

    fn states(&self) -> States {
        self.states.expect("opened")
    }

    /// Takes the current key (set by the runtime) for this call.
    fn take_key(&mut self) -> Result<(), OperatorFailure> {
        let key = self.ctx.current_key().ok_or_else(|| {
            OperatorFailure::Contract("window operators need a keyed edge into them (partition = \"keyed\")".into())
        })?;
        self.key.clear();
        self.key.extend_from_slice(key);
        self.key_group = self.ctx.current_key_group();
        Ok(())
    }

    fn fail(&self, window: Option<&Window>, message: impl std::fmt::Display) -> OperatorFailure {
        let key = String::from_utf8_lossy(&self.key);
        match window {
            Some(w) => OperatorFailure::Returned(format!("key `{key}`, window {w}: {message}")),
            None => OperatorFailure::Returned(format!("key `{key}`: {message}")),
        }
    }

    fn now(&self) -> i64 {
        self.ctx.clock.now()
    }

    // --- window contents ---

    fn pane_get(&mut self, pane: &Window) -> Result<Option<Vec<u8>>, OperatorFailure> {
        let id = self.states().contents;
        Ok(self.ctx.state.map_get(id, self.key_group, &self.key, &pane.encode())?)
    }

    /// Adds `event` to `pane`; `true` if the pane was empty before.
    fn pane_add(&mut self, pane: &Window, event: &Event) -> Result<bool, OperatorFailure> {
        let id = self.states().contents;
        let ns = pane.encode();
        if self.spec.collects() {
            let fresh = self.ctx.state.map_get(id, self.key_group, &self.key, &ns)?.is_none();
            self.ctx.state.map_append(id, self.key_group, &self.key, &ns, &encode_event(event))?;
            return Ok(fresh);
        }
        let mut fresh = false;
        let aggregate = self.aggregate.as_deref_mut().expect("windows that keep accumulators have an aggregate");
        let added = self.ctx.state.map_modify(id, self.key_group, &self.key, &ns, &mut |acc, existed| {
            fresh = !existed;
            aggregate.add_in_place(acc, !existed, event)
        })?;
        added.map_err(|e| self.fail(Some(pane), e))?;
        Ok(fresh)
    }

    fn pane_clear(&mut self, pane: &Window) -> Result<(), OperatorFailure> {
        let id = self.states().contents;
        Ok(self.ctx.state.map_remove(id, self.key_group, &self.key, &pane.encode())?)
    }

    /// The panes a window reads.
    fn panes(&self, window: Window) -> Vec<Window> {
        match self.spec.assigner {
            Assigner::Sliding(s) if self.spec.sliced => s.panes_of(window).collect(),
            _ => vec![window],
        }
    }

    /// The aggregate of an incremental window.
    fn agg(&mut self) -> &mut dyn Aggregate {
        self.aggregate.as_deref_mut().expect("windows that keep accumulators have an aggregate")
    }

    /// What a firing window holds: its accumulator, assembled from its panes, or its
    /// elements (folded into an accumulator when the window also has an aggregate).
    /// Also says whether a pane after the window's first slide has contents.
    fn contents(&mut self, window: Window) -> Result<(Contents, bool), OperatorFailure> {
        if self.spec.collects() {
            let id = self.states().contents;
            let ns = window.encode();
            let mut items = self.ctx.state.map_list(id, self.key_group, &self.key, &ns)?;
            if let Some(keep) = self.spec.keep_last.filter(|keep| items.len() > *keep) {
                // Flink's CountEvictor: only the last `keep` elements stay.
                items.drain(..items.len() - keep);
                self.ctx.state.map_remove(id, self.key_group, &self.key, &ns)?;
                for item in &items {
                    self.ctx.state.map_append(id, self.key_group, &self.key, &ns, item)?;
                }
            }
            let mut elements = Vec::with_capacity(items.len());
            for item in items {
                let mut event = decode_event(&item).ok_or_else(|| self.fail(Some(&window), "corrupt window contents"))?;
                event.key = Some(self.key.clone());
                elements.push(event);
            }
            if self.aggregate.is_none() {
                return Ok((Contents::Elements(elements), false));
            }
            let mut acc: Option<Vec<u8>> = None;
            for event in &elements {
                acc = Some(self.agg().add(acc.as_deref(), event).map_err(|e| self.fail(Some(&window), e))?);
            }
            return Ok((Contents::Accumulator(acc), false));
        }
        let mut acc: Option<Vec<u8>> = None;
        let mut continues = false;
        let first_slide_ends = match self.spec.assigner {
            Assigner::Sliding(s) => window.start.saturating_add(s.slide),
            _ => i64::MAX,
        };
        for pane in self.panes(window) {
            let Some(part) = self.pane_get(&pane)? else { continue };
            continues |= pane.start >= first_slide_ends;
            acc = Some(match acc {
                None => part,
                Some(a) => self.agg().merge(&a, &part).map_err(|e| self.fail(Some(&window), e))?,
            });
        }
        Ok((Contents::Accumulator(acc), continues))
    }

    // --- trigger state ---

    fn trigger_key(window: &Window, what: &[u8]) -> Vec<u8> {
        let mut k = window.encode().to_vec();
        k.extend_from_slice(what);
        k
    }

    fn trigger_get(&mut self, window: &Window, what: &[u8]) -> Result<Option<i64>, OperatorFailure> {
        let id = self.states().trigger;
        let raw = self.ctx.state.map_get(id, self.key_group, &self.key, &Self::trigger_key(window, what))?;
        match raw {
            None => Ok(None),
            Some(b) => Ok(Some(i64::from_be_bytes(b.try_into().map_err(|_| self.fail(Some(window), "corrupt trigger state"))?))),
        }
    }

    fn trigger_set(&mut self, window: &Window, what: &[u8], value: Option<i64>) -> Result<(), OperatorFailure> {
        let id = self.states().trigger;
        let k = Self::trigger_key(window, what);
        match value {
            Some(v) => self.ctx.state.map_put(id, self.key_group, &self.key, &k, &v.to_be_bytes())?,
            None => self.ctx.state.map_remove(id, self.key_group, &self.key, &k)?,
        }
        Ok(())
    }

    // --- timers ---

    fn register(&mut self, domain: TimeDomain, window: &Window, time: i64) -> Result<(), OperatorFailure> {
        let ns = window.encode();
        let per_window = if self.spec.lateness > 0 { 2 } else { 1 };
        if self.ctx.timers.len(domain) as u64 >= self.spec.max_open_windows * per_window
            && !self.ctx.timers.contains_in(domain, &self.key, &ns, time)?
        {
            return Err(self.fail(
                Some(window),
                format!(
                    "more than {} open windows in this subtask (raise `window.max_open_windows`, or shorten windows or allowed lateness)",
                    self.spec.max_open_windows
                ),
            ));
        }
        self.ctx.register_timer_in(domain, &ns, time).map_err(|e| OperatorFailure::Contract(e.to_string()))
    }

    fn register_cleanup(&mut self, window: &Window) -> Result<(), OperatorFailure> {
        if let Some(at) = self.spec.cleanup_time(window) {
            self.register(self.spec.time, window, at)?;
        }
        Ok(())
    }

    fn delete_timers(&mut self, window: &Window) -> Result<(), OperatorFailure> {
        let ns = window.encode();
        if let Some(at) = self.spec.cleanup_time(window) {
            self.ctx.timers.delete_in(self.spec.time, &self.key, &ns, at)?;
        }
        self.ctx.timers.delete_in(TimeDomain::EventTime, &self.key, &ns, window.max_timestamp())?;
        self.ctx.timers.delete_in(TimeDomain::ProcessingTime, &self.key, &ns, window.max_timestamp())?;
        if let Some(at) = self.trigger_get(window, FIRE_AT)? {
            let domain = match self.spec.trigger {
                Trigger::ContinuousProcessingTime(_) => TimeDomain::ProcessingTime,
                _ => TimeDomain::EventTime,
            };
            self.ctx.timers.delete_in(domain, &self.key, &ns, at)?;
        }
        Ok(())
    }

    // --- the trigger (Flink's Trigger.onElement / onEventTime / onProcessingTime) ---

    fn on_element(&mut self, window: Window, timestamp: i64, first_in_pane: bool) -> Result<Fire, OperatorFailure> {
        let watermark = self.ctx.watermark;
        match self.spec.trigger {
            Trigger::EventTime => {
                if window.max_timestamp() <= watermark {
                    return Ok(Fire::Yes);
                }
                if first_in_pane {
                    self.register(TimeDomain::EventTime, &window, window.max_timestamp())?;
                }
                Ok(Fire::No)
            }
            Trigger::ProcessingTime => {
                if first_in_pane {
                    self.register(TimeDomain::ProcessingTime, &window, window.max_timestamp())?;
                }
                Ok(Fire::No)
            }
            Trigger::Count(n) => {
                let count = self.trigger_get(&window, COUNT)?.unwrap_or(0) + 1;
                if count >= n {
                    self.trigger_set(&window, COUNT, None)?;
                    Ok(Fire::Yes)
                } else {
                    self.trigger_set(&window, COUNT, Some(count))?;
                    Ok(Fire::No)
                }
            }
            Trigger::ContinuousEventTime(interval) => {
                if window.max_timestamp() <= watermark {
                    return Ok(Fire::Yes);
                }
                self.register(TimeDomain::EventTime, &window, window.max_timestamp())?;
                if self.trigger_get(&window, FIRE_AT)?.is_none() {
                    let next = timestamp - timestamp.rem_euclid(interval) + interval;
                    self.trigger_set(&window, FIRE_AT, Some(next))?;
                    self.register(TimeDomain::EventTime, &window, next)?;
                }
                Ok(Fire::No)
            }
            Trigger::ContinuousProcessingTime(interval) => {
                if self.trigger_get(&window, FIRE_AT)?.is_none() {
                    let now = self.now();
                    let next = (now - now.rem_euclid(interval) + interval).min(window.max_timestamp());
                    self.trigger_set(&window, FIRE_AT, Some(next))?;
                    self.register(TimeDomain::ProcessingTime, &window, next)?;
                }
                Ok(Fire::No)
            }
            Trigger::Never => Ok(Fire::No),
        }
    }

    fn on_time(&mut self, window: Window, domain: TimeDomain, time: i64) -> Result<Fire, OperatorFailure> {
        Ok(match (self.spec.trigger, domain) {
            (Trigger::EventTime, TimeDomain::EventTime) | (Trigger::ProcessingTime, TimeDomain::ProcessingTime) => {
                if time == window.max_timestamp() { Fire::Yes } else { Fire::No }
            }
            (Trigger::ContinuousEventTime(interval), TimeDomain::EventTime)
            | (Trigger::ContinuousProcessingTime(interval), TimeDomain::ProcessingTime) => {
                if domain == TimeDomain::EventTime && time == window.max_timestamp() {
                    Fire::Yes
                } else if self.trigger_get(&window, FIRE_AT)? == Some(time) {
                    let next = time.saturating_add(interval);
                    if next <= window.max_timestamp() || domain == TimeDomain::EventTime {
                        self.trigger_set(&window, FIRE_AT, Some(next))?;
                        self.register(domain, &window, next)?;
                    } else {
                        self.trigger_set(&window, FIRE_AT, None)?;
                    }
                    Fire::Yes
                } else {
                    Fire::No
                }
            }
            _ => Fire::No,
        })
    }

    /// Emits the window's result (when it has contents), then purges it if the trigger
    /// says so. A process function gets the elements, or the aggregate's result as its
    /// one element; what it returns gets the window's key (when it has none) and max
    /// timestamp, as Flink's window operator stamps its output.
    /// Returns whether a pane after the window's first slide has contents (so the
    /// next sliding window has some).
    fn fire(&mut self, window: Window) -> Result<bool, OperatorFailure> {
        let timestamp = (window != Window::GLOBAL).then(|| window.max_timestamp());
        let (contents, continues) = self.contents(window)?;
        let emitted = match contents {
            Contents::Accumulator(None) => Vec::new(),
            Contents::Elements(elements) if elements.is_empty() => Vec::new(),
            Contents::Accumulator(Some(acc)) => {
                let result = self.agg().result(&acc).map_err(|e| self.fail(Some(&window), e))?;
                let value = match self.aggregate.as_deref() {
                    Some(agg) if agg.builtin() && self.process.is_none() => self.output(&window, &result),
                    _ => result,
                };
                let event = Event { key: Some(self.key.clone()), value, timestamp, headers: Vec::new() };
                match self.process.is_some() {
                    true => self.process(window, vec![event])?,
                    false => vec![event],
                }
            }
            Contents::Elements(elements) => self.process(window, elements)?,
        };
        for mut event in emitted {
            event.key.get_or_insert_with(|| self.key.clone());
            event.timestamp = timestamp;
            self.ctx.emit(None, event).map_err(|e| OperatorFailure::Contract(e.to_string()))?;
        }
        if self.spec.purging {
            for pane in self.panes(window) {
                self.pane_clear(&pane)?;
            }
        }
        Ok(continues)
    }

    fn process(&mut self, window: Window, elements: Vec<Event>) -> Result<Vec<Event>, OperatorFailure> {
        let process = self.process.as_deref_mut().expect("windows without an aggregate have a process function");
        process.process(&self.key, window, elements).map_err(|e| self.fail(Some(&window), e))
    }

    /// `{"key": .., "window_start": .., "window_end": .., "<aggregate>": ..}`.
    fn output(&self, window: &Window, result: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.key.len() + result.len());
        out.extend_from_slice(b"{\"key\":");
        out.extend_from_slice(&serde_json::to_vec(&String::from_utf8_lossy(&self.key)).expect("strings serialize"));
        if *window != Window::GLOBAL {
            out.extend_from_slice(format!(",\"window_start\":{},\"window_end\":{}", window.start, window.end).as_bytes());
        }
        let name = self.aggregate.as_deref().map_or("result", |a| a.result_name());
        out.extend_from_slice(format!(",\"{name}\":").as_bytes());
        out.extend_from_slice(result);
        out.push(b'}');
        out
    }

    /// Removes everything the window keeps (Flink's `clearAllState`).
    fn clean_up(&mut self, window: Window) -> Result<(), OperatorFailure> {
        let retired: Vec<Window> = match self.spec.assigner {
            Assigner::Sliding(s) if self.spec.sliced => s.panes_retired_by(window).collect(),
            _ => vec![window],
        };
        for pane in retired {
            self.pane_clear(&pane)?;
        }
        // The window's own timers have fired; only count and continuous triggers keep
        // state, and a continuous trigger may have a firing pending.
        match self.spec.trigger {
            Trigger::Count(_) => self.trigger_set(&window, COUNT, None)?,
            Trigger::ContinuousEventTime(_) | Trigger::ContinuousProcessingTime(_) => {
                self.delete_timers(&window)?;
                self.trigger_set(&window, FIRE_AT, None)?;
            }
            // A trigger of the other time domain may not have fired yet.
            Trigger::EventTime if self.spec.time == TimeDomain::ProcessingTime => self.delete_timers(&window)?,
            Trigger::ProcessingTime if self.spec.time == TimeDomain::EventTime => self.delete_timers(&window)?,
            _ => {}
        }
        if let Assigner::Session { .. } = self.spec.assigner {
            let mut sessions = self.sessions()?;
            sessions.remove(window);
            self.save_sessions(&sessions)?;
        }
        Ok(())
    }

    // --- sessions ---

    fn sessions(&mut self) -> Result<Sessions, OperatorFailure> {
        let id = self.states().sessions;
        match self.ctx.state.value_get(id, self.key_group, &self.key)? {
            None => Ok(Sessions::default()),
            Some(bytes) => Sessions::decode(&bytes).ok_or_else(|| self.fail(None, "corrupt session state")),
        }
    }

    fn save_sessions(&mut self, sessions: &Sessions) -> Result<(), OperatorFailure> {
        let id = self.states().sessions;
        if sessions.windows.is_empty() {
            self.ctx.state.clear(id, self.key_group, &self.key)?;
        } else {
            self.ctx.state.value_set(id, self.key_group, &self.key, &sessions.encode())?;
        }
        Ok(())
    }

    /// Moves the contents and trigger state of `from` into `into` (sessions merging).
    fn absorb(&mut self, from: Window, into: Window) -> Result<(), OperatorFailure> {
        let id = self.states().contents;
        let (from_ns, into_ns) = (from.encode(), into.encode());
        if let Some(part) = self.ctx.state.map_get(id, self.key_group, &self.key, &from_ns)? {
            if self.spec.collects() {
                let items = self.ctx.state.map_list(id, self.key_group, &self.key, &from_ns)?;
                for item in items {
                    self.ctx.state.map_append(id, self.key_group, &self.key, &into_ns, &item)?;
                }
            } else {
                let merged = match self.ctx.state.map_get(id, self.key_group, &self.key, &into_ns)? {
                    None => part,
                    Some(acc) => self.agg().merge(&acc, &part).map_err(|e| self.fail(Some(&into), e))?,
                };
                self.ctx.state.map_put(id, self.key_group, &self.key, &into_ns, &merged)?;
            }
            self.ctx.state.map_remove(id, self.key_group, &self.key, &from_ns)?;
        }
        // Count triggers add up their counts, as Flink's CountTrigger.onMerge does.
        if let Some(count) = self.trigger_get(&from, COUNT)? {
            let total = self.trigger_get(&into, COUNT)?.unwrap_or(0) + count;
            self.trigger_set(&into, COUNT, Some(total))?;
        }
        self.delete_timers(&from)?;
        self.trigger_set(&from, COUNT, None)?;
        self.trigger_set(&from, FIRE_AT, None)?;
        Ok(())
    }

    /// The element is late for every window it falls in: to the `late` side output
    /// (Flink's `sideOutputLateData`) when the job routes one, else dropped and counted.
    fn late(&mut self, event: Event) -> Result<(), OperatorFailure> {
        self.ctx.late(event).map_err(|e| OperatorFailure::Contract(e.to_string()))
    }

    fn add_to_sliding(&mut self, s: Sliding, event: Event, timestamp: i64) -> Result<(), OperatorFailure> {
        let watermark = self.ctx.watermark;
        let last = s.last_window(timestamp);
        if self.spec.is_late(&last, watermark) {
            return self.late(event);
        }
        if !self.spec.sliced {
            let spec = self.spec;
            for window in s.windows_of(timestamp).filter(|w| !spec.is_late(w, watermark)) {
                let fresh = self.pane_add(&window, &event)?;
                if fresh {
                    self.register_cleanup(&window)?;
                }
                if self.on_element(window, timestamp, fresh)? == Fire::Yes {
                    self.fire(window)?;
                }
            }
            return Ok(());
        }
        // One pane per element. Timers cascade instead of one per window: a new pane
        // registers the first window it fires and the cleanup of the last window that
        // needs it; each window, when it fires, registers the next one if that has
        // contents (see `on_timer`). Windows that already fired fire again now (late
        // firings, within allowed lateness).
        let fresh = self.pane_add(&s.pane_of(timestamp), &event)?;
        let due = |w: &Window| w.max_timestamp() <= watermark;
        if fresh {
            if let Some(first) = s.windows_of(timestamp).find(|w| !due(w)) {
                self.register_window(&first)?;
            }
            self.register_cleanup(&last)?;
        }
        if self.spec.trigger == Trigger::EventTime {
            let spec = self.spec;
            for window in s.windows_of(timestamp).filter(|w| due(w) && !spec.is_late(w, watermark)) {
                self.fire(window)?;
            }
        }
        Ok(())
    }

    /// Registers the timer that fires `window` under the default trigger of its domain.
    fn register_window(&mut self, window: &Window) -> Result<(), OperatorFailure> {
        self.register(self.spec.time, window, window.max_timestamp())
    }

    fn add_to_session(&mut self, gap: i64, event: Event, timestamp: i64) -> Result<(), OperatorFailure> {
        let mut sessions = self.sessions()?;
        let merge = sessions.merge_of(Window::new(timestamp, timestamp.saturating_add(gap)));
        let window = merge.window;
        if self.spec.is_late(&window, self.ctx.watermark) {
            return self.late(event);
        }
        let existed = merge.absorbed.contains(&window);
        for &absorbed in merge.absorbed.iter().filter(|w| **w != window) {
            self.absorb(absorbed, window)?;
        }
        let grew = !existed;
        sessions.apply(&merge);
        self.save_sessions(&sessions)?;
        self.pane_add(&window, &event)?;
        if grew {
            self.register_cleanup(&window)?;
        }
        if self.on_element(window, timestamp, grew)? == Fire::Yes {
            self.fire(window)?;
        }
        Ok(())
    }
}

impl OperatorLogic for WindowOperator {
    fn context(&mut self) -> &mut OperatorContext {
        &mut self.ctx
    }

    fn open(&mut self) -> Result<(), OperatorFailure> {
        let state = &mut self.ctx.state;
        self.states = Some(States {
            contents: state.declare(StateKind::Map, "window-contents", None)?,
            trigger: state.declare(StateKind::Map, "window-trigger", None)?,
            sessions: state.declare(StateKind::Value, "window-sessions", None)?,
        });
        Ok(())
    }

    fn process_element(&mut self, event: Event) -> Result<(), OperatorFailure> {
        self.take_key()?;
        let timestamp = match self.spec.time {
            TimeDomain::ProcessingTime => self.now().max(self.processing_floor),
            TimeDomain::EventTime => match event.timestamp {
                Some(ts) => ts,
                None => {
                    return Err(self.fail(
                        None,
                        "an event-time window got an element without a timestamp (set `timestamp_field` on the source, or use `time = \"processing\"`)",
                    ));
                }
            },
        };
        match self.spec.assigner {
            Assigner::Sliding(s) => self.add_to_sliding(s, event, timestamp),
            Assigner::Session { gap } => self.add_to_session(gap, event, timestamp),
            Assigner::Global => {
                let fresh = self.pane_add(&Window::GLOBAL, &event)?;
                if self.on_element(Window::GLOBAL, timestamp, fresh)? == Fire::Yes {
                    self.fire(Window::GLOBAL)?;
                }
                Ok(())
            }
        }
    }

    fn on_timer(&mut self, timestamp: i64, domain: TimeDomain, namespace: &[u8]) -> Result<(), OperatorFailure> {
        self.take_key()?;
        let window = Window::decode(namespace)
            .ok_or_else(|| self.fail(None, format!("a timer at {timestamp} has a corrupt window namespace")))?;
        if domain == TimeDomain::ProcessingTime {
            self.processing_floor = self.processing_floor.max(timestamp.saturating_add(1));
        }
        if let Assigner::Session { .. } = self.spec.assigner {
            // A session that merged into another has no timers left; this is defensive.
            if !self.sessions()?.windows.contains(&window) {
                return Ok(());
            }
        }
        if self.on_time(window, domain, timestamp)? == Fire::Yes {
            let continues = self.fire(window)?;
            if let (Assigner::Sliding(s), true, true) = (self.spec.assigner, self.spec.sliced, continues) {
                // The next window shares this one's later panes: it fires in turn.
                self.register_window(&Window::new(window.start + s.slide, window.end + s.slide))?;
            }
        }
        if domain == self.spec.time && self.spec.cleanup_time(&window) == Some(timestamp) {
            self.clean_up(window)?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), OperatorFailure> {
        Ok(())
    }
}
