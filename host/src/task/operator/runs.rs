//! Batches into runs: records handed to the operator in calls of about
//! [`RUN_TARGET`], timers and watermarks between them in input order, late records, and
//! the second input.

use super::*;

impl OperatorTask {
    /// Processes a batch from input `input`: its records in runs, each handed to the
    /// operator in one call, and its watermarks in order between them. A run ends
    /// before a watermark that fires a pending timer, so timers fire exactly where they
    /// would if every element came alone; a timer registered during a run that falls
    /// due within it stops the run there ([`OperatorContext::begin_element`]).
    pub(super) fn on_batch(
        &mut self,
        input: usize,
        batch: Batch,
        watermarks: &mut InputWatermarks,
        timer_source: &Label,
    ) -> Result<(), TaskError> {
        // A slow operator takes a long batch in parts, so that a call takes about
        // RUN_TARGET and barriers are served in between (the rest is handed back).
        let mut batch = batch;
        if batch.records > self.run_limit {
            if let Some(rest) = batch.split_after_records(self.run_limit) {
                self.inputs.unread(input, rest);
            }
        }
        self.metrics.add_in(batch.records as u64);
        let (keyed, drop_late) = (self.keyed, self.drop_late);
        // A clock that follows the records moves before each record: every record is a
        // run of its own, after the processing-time timers its timestamp passes.
        let records_clock = self.logic.context().clock.follows_records();
        let mut elements = batch.elements.into_iter().peekable();
        while elements.peek().is_some() {
            let mut items = std::mem::take(&mut self.run_items);
            let mut events = Vec::with_capacity(batch.records);
            let ctx = self.logic.context();
            ctx.run.clear();
            let mut watermark = ctx.watermark;
            let mut firing = None;
            for element in elements.by_ref() {
                match element {
                    Element::Record(mut record) => {
                        if drop_late && record.event.timestamp.is_some_and(|ts| ts <= watermark) {
                            items.push_back(RunItem::Late(record));
                            continue;
                        }
                        // Routers refuse keyless events on keyed edges, so the key is present.
                        let key = keyed.then(|| (record.event.key.as_deref().unwrap_or_default(), record.key_group));
                        ctx.run.push(key, watermark);
                        items.push_back(RunItem::Record { position: record.position, ingested: record.ingested });
                        events.push(std::mem::take(&mut record.event));
                        if records_clock {
                            break;
                        }
                    }
                    Element::Watermark(incoming) => {
                        let Some(advanced) = watermarks.update(input, incoming) else { continue };
                        if let Watermark::EventTime(time) = advanced {
                            if ctx.timers.next_timestamp(TimeDomain::EventTime).is_some_and(|due| due <= time) {
                                firing = Some(advanced);
                                break;
                            }
                            watermark = time;
                        }
                        items.push_back(RunItem::Watermark(advanced));
                    }
                }
            }
            if let Some(timestamp) = events.first().and_then(|e| e.timestamp).filter(|_| records_clock) {
                self.advance_clock(timestamp, timer_source)?;
            }
            self.process_run(input, &mut items, events, timer_source)?;
            self.run_items = items;
            if let Some(advanced) = firing {
                self.advance(advanced, timer_source)?;
            }
        }
        Ok(())
    }

    /// Sizes the runs of later batches so that one call takes about [`RUN_TARGET`],
    /// from a running average of the cost per element.
    pub(super) fn tune_runs(&mut self, took: Duration, elements: usize) {
        if elements == 0 {
            return;
        }
        let cost = (took.as_nanos() as u64 / elements as u64).max(1);
        // The first measurement stands alone (an average with the initial 0 would take
        // eight calls to stop underestimating the cost, and so to make calls too long).
        self.element_ns = match self.element_ns {
            0 => cost,
            average => (average * 7 + cost) / 8,
        };
        self.run_limit = match RUN_TARGET.as_nanos() as u64 / self.element_ns.max(1) {
            0 => 1,
            limit => usize::try_from(limit).unwrap_or(usize::MAX),
        };
    }

    /// Processes a batch from a channel of the second input: each record in its own
    /// call (`process-element-2`), with its key current on a keyed input and broadcast
    /// state writable on a broadcast one; watermarks count towards the operator's as
    /// any input's do (the least over both inputs, idle ones aside).
    pub(super) fn on_second_input(
        &mut self,
        input: usize,
        batch: Batch,
        watermarks: &mut InputWatermarks,
        timer_source: &Label,
    ) -> Result<(), TaskError> {
        self.metrics.add_in(batch.records as u64);
        let keyed = self.second_input == Some(crate::stream::Partitioning::Keyed);
        let broadcast = self.second_input == Some(crate::stream::Partitioning::Broadcast);
        for element in batch.elements {
            match element {
                Element::Record(record) => {
                    if let Some(timestamp) = record.event.timestamp {
                        self.advance_clock(timestamp, timer_source)?;
                    }
                    self.before_call(1)?;
                    if self.paused_since.is_some() {
                        self.resumed_after_upgrade();
                    }
                    if keyed && self.migration.is_some() {
                        self.migrate_key(record.event.key.as_deref().unwrap_or_default())?;
                    }
                    let Record { event, position, ingested, .. } = record;
                    let ctx = self.logic.context();
                    ctx.set_current_key(if keyed { event.key.as_deref() } else { None });
                    ctx.operator_state.broadcast_writable = broadcast;
                    let call = std::time::Instant::now();
                    let result = self.logic.process_element_2(event);
                    self.metrics.add_call(call.elapsed());
                    let ctx = self.logic.context();
                    ctx.operator_state.broadcast_writable = false;
                    ctx.set_current_key(None);
                    self.route_emitted(&position, ingested)?;
                    result.map_err(|failure| self.failure(Doing::Element(&position), failure))?;
                }
                Element::Watermark(incoming) => {
                    if let Some(advanced) = watermarks.update(input, incoming) {
                        self.advance(advanced, timer_source)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Hands `events` (the records among `items`) to the operator, as many calls as
    /// timers falling due require, and routes what they emitted interleaved with the
    /// late records and watermarks of `items`, in input order.
    /// Hands `events` (from input `input`) to the logic in as many calls as it takes.
    pub(super) fn process_run(
        &mut self,
        input: usize,
        items: &mut VecDeque<RunItem>,
        mut events: Vec<Event>,
        timer_source: &Label,
    ) -> Result<(), TaskError> {
        if self.paused_since.is_some() {
            self.resumed_after_upgrade();
        }
        while !events.is_empty() {
            self.before_call(events.len() as u64)?;
            // Buffers handed back from downstream, for what the run emits.
            let spares = &mut self.logic.context().spares;
            if spares.len() < events.len() {
                self.router.collect_spares(spares, events.len());
            }
            let spares_before = spares.len();
            if self.keyed && self.migration.is_some() {
                for event in &events {
                    self.migrate_key(event.key.as_deref().unwrap_or_default())?;
                }
            }
            let ctx = self.logic.context();
            let watermark = ctx.watermark;
            ctx.start_run();
            let call = std::time::Instant::now();
            let elements = events.len();
            let result = self.logic.process_run(events);
            let took = call.elapsed();
            self.metrics.add_call(took);
            self.tune_runs(took, elements);
            let ctx = self.logic.context();
            ctx.end_run();
            // The watermark moves on as the run's watermarks are routed.
            ctx.watermark = watermark;
            let mut emitted = std::mem::take(&mut self.emitted);
            let mut at = std::mem::take(&mut self.emitted_at);
            ctx.swap_emitted_with_elements(&mut emitted, &mut at);
            let (processed, rest, mut failure) = match result {
                Ok(outcome) => {
                    // The input's events go back to their producer. Logic that took no
                    // spares (it writes its output into its input's events) passes
                    // them on upstream too, so that buffers circulate.
                    let spares = &mut self.logic.context().spares;
                    let mut spent = outcome.spent;
                    if spares.len() == spares_before {
                        spent.extend(spares.surplus(0));
                    }
                    self.inputs.recycle(input, spent);
                    (outcome.processed, outcome.rest, None)
                }
                Err(failed) => (failed.index, Vec::new(), Some(failed)),
            };
            self.route_items(items, processed, emitted.drain(..).zip(at.drain(..)), timer_source)?;
            self.emitted = emitted;
            self.emitted_at = at;
            if let Some(failed) = failure.take_if(|f| f.is_skippable() && self.skip_failed.is_some()) {
                self.skip_failed_element(items, failed.index, failed.event, &failed.failure);
                self.logic.context().run.consume(processed + 1);
                events = failed.rest;
                continue;
            }
            if let Some(failed) = failure {
                let mut records = items.iter().filter_map(|item| match item {
                    RunItem::Record { position, .. } => Some(*position),
                    _ => None,
                });
                let position = records.next().unwrap_or(Position { source: *timer_source, unit: Label::at(), offset: 0 });
                let last = records.nth(failed.among.saturating_sub(2) as usize).filter(|_| failed.among > 1);
                items.clear();
                let doing = match &last {
                    Some(last) => Doing::Elements { first: &position, last, count: failed.among },
                    None => Doing::Element(&position),
                };
                return Err(self.failure(doing, failed.failure));
            }
            self.logic.context().run.consume(processed);
            events = rest;
        }
        self.route_items(items, u32::MAX, std::iter::empty(), timer_source)
    }

    /// An element the operator returned an error for, under `on_error = "skip"`: taken
    /// out of the run, and sent to the `dlq` output as a dead letter (when the job
    /// routes one and the logic handed its event back) or counted as skipped.
    fn skip_failed_element(&mut self, items: &mut VecDeque<RunItem>, index: u32, event: Option<Event>, failure: &OperatorFailure) {
        let Some(RunItem::Record { position, .. }) = items.pop_front() else {
            unreachable!("the items were routed up to the failed element's record")
        };
        let reason = failure.to_string();
        tracing::warn!(operator = %self.uid, subtask = self.subtask, %position, %reason, element = index, "skipping the element");
        match (self.skip_failed.flatten(), event) {
            (Some(port), Some(event)) => {
                let letter = event.into_dead_letter(&self.uid, &position.to_string(), &reason);
                if self.router.send(port, Record { event: letter, position, key_group: 0, ingested: None }).is_err() {
                    self.control.cancel();
                }
                self.metrics.add_dead_lettered(1);
            }
            _ => self.metrics.add_skipped(1),
        }
    }

    /// Routes `items` in order up to the run record `processed` (exclusive), each
    /// record followed by what it emitted; watermarks advance (firing timers that fell
    /// due) and late records go to the `late` output on the way.
    pub(super) fn route_items(
        &mut self,
        items: &mut VecDeque<RunItem>,
        processed: u32,
        emitted: impl Iterator<Item = ((Port, Event), u32)>,
        timer_source: &Label,
    ) -> Result<(), TaskError> {
        let mut emitted = emitted.peekable();
        let mut index = 0u32;
        while let Some(item) = items.front() {
            if matches!(item, RunItem::Record { .. }) && index >= processed {
                break;
            }
            match items.pop_front().expect("peeked") {
                RunItem::Record { position, ingested } => {
                    while let Some(((port, event), _)) = emitted.next_if(|(_, at)| *at == index) {
                        let port = match port {
                            Port::Main => 0,
                            Port::Side(index) => index,
                        };
                        self.send(port, Record { event, position, key_group: 0, ingested }, &position)?;
                    }
                    index += 1;
                }
                RunItem::Late(record) => self.on_late(record)?,
                RunItem::Watermark(watermark) => self.advance(watermark, timer_source)?,
            }
        }
        Ok(())
    }

    /// An element at or behind the watermark: Flink's definition of late. It goes to
    /// the `late` side output when the job routes one, and is counted either way.
    pub(super) fn on_late(&mut self, record: Record) -> Result<(), TaskError> {
        match self.late_port {
            Some(port) => {
                self.metrics.add_late_routed(1);
                let position = record.position;
                self.send(port, record, &position)
            }
            None => {
                self.metrics.add_late_dropped(1);
                Ok(())
            }
        }
    }
}
