use std::str::FromStr;

use crate::bindings::weir::operator::{collector, context, logging, timers};
use crate::{Error, Event, Result, TimeDomain};

/// Severity of a [`Context::log`] line.
pub use crate::bindings::weir::operator::logging::Level as LogLevel;

/// What an operator can do while it is being called: emit events, manage timers, read
/// clocks and its configuration, and log. Keyed calls are scoped to the current key.
pub struct Context {
    config: Option<Vec<(String, String)>>,
}

impl Context {
    pub(crate) fn new() -> Self {
        Context { config: None }
    }

    pub(crate) fn with_config(config: Vec<(String, String)>) -> Self {
        Context { config: Some(config) }
    }

    /// Emits an event to the main output.
    pub fn emit(&mut self, event: Event) -> Result<()> {
        if !crate::batch::emit(None, &event) {
            collector::emit(&event);
        }
        Ok(())
    }

    /// Emits an event to the side output called `output`.
    pub fn emit_to(&mut self, output: &str, event: Event) -> Result<()> {
        if !crate::batch::emit(Some(output), &event) {
            collector::emit_to(output, &event);
        }
        Ok(())
    }

    /// Registers an event-time timer for the current key at `timestamp` (ms).
    pub fn register_event_timer(&mut self, timestamp: i64) {
        crate::batch::focus();
        timers::register(TimeDomain::EventTime, timestamp);
        crate::batch::event_timer_registered();
    }

    /// Registers a processing-time timer for the current key at `timestamp` (ms).
    pub fn register_processing_timer(&mut self, timestamp: i64) {
        crate::batch::focus();
        timers::register(TimeDomain::ProcessingTime, timestamp);
    }

    /// Deletes the current key's event-time timer at `timestamp`, if any.
    pub fn delete_event_timer(&mut self, timestamp: i64) {
        crate::batch::focus();
        timers::delete(TimeDomain::EventTime, timestamp);
    }

    /// Deletes the current key's processing-time timer at `timestamp`, if any.
    pub fn delete_processing_timer(&mut self, timestamp: i64) {
        crate::batch::focus();
        timers::delete(TimeDomain::ProcessingTime, timestamp);
    }

    /// The subtask's current watermark (ms); `i64::MIN` before the first one.
    pub fn watermark(&self) -> i64 {
        crate::batch::focus();
        timers::current_watermark()
    }

    /// The host's wall clock (ms since the Unix epoch).
    pub fn processing_time(&self) -> i64 {
        timers::current_processing_time()
    }

    /// The key of the element or timer being processed.
    pub fn current_key(&self) -> Option<Vec<u8>> {
        crate::batch::current_key().unwrap_or_else(context::current_key)
    }

    /// The operator's uid from the job file.
    pub fn operator_uid(&self) -> String {
        context::operator_uid()
    }

    /// This subtask's index, from 0.
    pub fn subtask_index(&self) -> u32 {
        context::subtask_index()
    }

    /// How many subtasks run this operator.
    pub fn parallelism(&self) -> u32 {
        context::parallelism()
    }

    /// The raw config value for `key`, if the job file sets it.
    pub fn config(&mut self, key: &str) -> Option<&str> {
        self.config
            .get_or_insert_with(context::config)
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The config value for `key` parsed as `T`, or `default` when it is not set.
    /// An unparsable value is an error naming the key.
    pub fn config_or<T: FromStr>(&mut self, key: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.config(key) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|e| Error::msg(format_args!("config `{key}` = {raw:?}: {e}"))),
        }
    }

    /// Logs into the host's log, tagged with this operator's uid and subtask.
    pub fn log(&self, level: LogLevel, message: &str) {
        logging::log(level, message);
    }
}
