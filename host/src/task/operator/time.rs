//! Time: watermarks that fire event-time timers, the processing-time clock and its
//! timers, and the clock that state time-to-live reads.

use super::*;

impl OperatorTask {
    /// Waits no longer than the next processing-time timer, nor than the poll interval.
    pub(super) fn timeout(&mut self) -> Duration {
        let ctx = self.logic.context();
        if ctx.clock.follows_records() {
            // Processing time moves only as records arrive: nothing falls due by waiting.
            return POLL_INTERVAL;
        }
        match ctx.timers.next_timestamp(TimeDomain::ProcessingTime) {
            None => POLL_INTERVAL,
            Some(due) => {
                // A timer at T fires once the clock has passed T (see below).
                let wait = due.saturating_add(1).saturating_sub(ctx.clock.now()).max(0) as u64;
                Duration::from_millis(wait).min(POLL_INTERVAL)
            }
        }
    }

    /// Gives state its clock for TTL decisions, and now and then sweeps a slice of it
    /// for expired entries.
    pub(super) fn before_call(&mut self, elements: u64) -> Result<(), TaskError> {
        if let Some(mut migration) = self.migration.take() {
            match migration.background(self.logic.as_mut()) {
                Ok(true) => self.migration = Some(migration),
                Ok(false) => tracing::info!(operator = %self.uid, subtask = self.subtask, "state migration complete"),
                Err(e) => return Err(self.failure(Doing::MigratingKey(migration.from, &e.key), e.failure)),
            }
        }
        // Always: a state with a time to live may be declared during this very call
        // (guests declare on first use), and its first write is stamped with `now`.
        let ctx = self.logic.context();
        let now = ctx.clock.now();
        let state = &mut ctx.state;
        state.set_now(now);
        if !state.has_ttl() {
            return Ok(());
        }
        let before = self.calls;
        self.calls += elements;
        if self.calls / SWEEP_EVERY != before / SWEEP_EVERY {
            if let Err(e) = state.sweep(SWEEP_BUDGET) {
                return Err(self.failure(Doing::Sweeping, OperatorFailure::State(e)));
            }
        }
        Ok(())
    }

    pub(super) fn advance(&mut self, watermark: Watermark, timer_source: &Label) -> Result<(), TaskError> {
        if let Watermark::EventTime(time) = watermark {
            // As in Flink: the operator sees the new watermark while its timers fire,
            // and downstream sees the watermark only after the timers' output.
            self.logic.context().watermark = time;
            while let Some(timer) = self.due_timer(TimeDomain::EventTime, time)? {
                self.fire(TimeDomain::EventTime, timer, timer_source)?;
            }
        }
        self.router.watermark(watermark);
        Ok(())
    }

    /// Moves a records clock on to `timestamp`, firing the processing-time timers it
    /// passes (a wall clock ignores it).
    pub(super) fn advance_clock(&mut self, timestamp: i64, timer_source: &Label) -> Result<(), TaskError> {
        let clock = &mut self.logic.context().clock;
        if !clock.follows_records() || timestamp <= clock.now() {
            return Ok(());
        }
        clock.advance_to(timestamp);
        self.fire_processing_timers(timer_source)
    }

    pub(super) fn fire_processing_timers(&mut self, timer_source: &Label) -> Result<(), TaskError> {
        let ctx = self.logic.context();
        if ctx.timers.len(TimeDomain::ProcessingTime) == 0 {
            return Ok(());
        }
        // As Flink's processing-time service: a timer at T fires once the clock has
        // passed T (at T + 1), so an element processed at T still belongs to a window
        // whose last moment is T.
        let due = ctx.clock.now().saturating_sub(1);
        while let Some(timer) = self.due_timer(TimeDomain::ProcessingTime, due)? {
            self.fire(TimeDomain::ProcessingTime, timer, timer_source)?;
        }
        Ok(())
    }

    /// Takes the earliest timer of `domain` due at `time` out of the timer store.
    pub(super) fn due_timer(&mut self, domain: TimeDomain, time: i64) -> Result<Option<Timer>, TaskError> {
        self.logic
            .context()
            .timers
            .pop_due(domain, time)
            .map_err(|e| self.failure(Doing::DueTimers(domain), OperatorFailure::State(e)))
    }

    pub(super) fn fire(&mut self, domain: TimeDomain, timer: Timer, source: &Label) -> Result<(), TaskError> {
        self.before_call(1)?;
        self.migrate_key(&timer.key)?;
        self.logic.context().set_current_key(Some(&timer.key));
        let call = std::time::Instant::now();
        let fired = self.logic.on_timer(timer.timestamp, domain, &timer.namespace);
        self.metrics.add_call(call.elapsed());
        if let Err(failure) = fired {
            return Err(self.failure(Doing::Timer(domain, &timer), failure));
        }
        let position = Position { source: *source, unit: Label::at(), offset: timer.timestamp };
        self.route_emitted(&position, None)
    }
}
