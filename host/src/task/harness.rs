//! # Driving one operator without a job
//!
//! [`OperatorHarness`] runs a single operator subtask through the same task runner a
//! job uses (batches, watermarks, timers, late elements, routing), fed by the test
//! instead of a source, as Flink's `KeyedOneInputStreamOperatorTestHarness`. Elements
//! and watermarks are queued in order, then [`OperatorHarness::finish`] ends the input
//! and runs the operator to completion on the calling thread.
//!
//! ```no_run
//! use weir::stream::Event;
//! use weir::task::harness::{OperatorHarness, Output};
//!
//! let mut harness = OperatorHarness::native("keyed-count").unwrap();
//! harness.element(Event { key: Some(b"a".to_vec()), value: b"{}".to_vec(), timestamp: Some(1), headers: vec![] });
//! harness.watermark(10);
//! let output = harness.finish().unwrap();
//! assert!(matches!(output.main[0], Output::Record(_)));
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::channel::{ChannelReceiver, ChannelSender, channel};
use super::inputs::Inputs;
use super::operator::{OperatorTask, OperatorTaskSetup};
use super::output::{Batching, EdgeOutput, Router};
use super::TaskError;
use crate::metrics::TaskMetrics;
use crate::error::ErrorPolicy;
use crate::stream::Partitioning;
use crate::keygroup::{DEFAULT_MAX_PARALLELISM, assign_key_group};
use crate::operator::{OperatorContext, OperatorInfo, OperatorLogic, native};
use crate::plugin::{Limits, Runtime};
use crate::state::{KeyedState, MemoryBackend};
use crate::stream::{Batch, Element, Event, Label, Message, Position, Record};
use crate::watermark::Watermark;

/// What the operator sent downstream, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Record(Event),
    Watermark(i64),
}

/// Everything the operator emitted.
#[derive(Debug, Default)]
pub struct HarnessOutput {
    /// The main output: records and the watermarks between them.
    pub main: Vec<Output>,
    /// Late elements routed to the `late` side output.
    pub late: Vec<Event>,
    /// The task's counts (records in and out, late elements).
    pub metrics: Arc<TaskMetrics>,
}

impl HarnessOutput {
    /// The records of the main output, without the watermarks.
    pub fn records(&self) -> Vec<&Event> {
        self.main.iter().filter_map(|o| if let Output::Record(e) = o { Some(e) } else { None }).collect()
    }
}

/// One keyed operator subtask, fed by the test.
pub struct OperatorHarness {
    task: OperatorTask,
    input: ChannelSender,
    main: ChannelReceiver,
    late: ChannelReceiver,
    batch: Batch,
    offset: i64,
    /// The runtime of a Wasm operator, kept alive while the operator runs.
    _runtime: Option<Runtime>,
}

const UID: &str = "harness";

fn context(config: Vec<(String, String)>) -> OperatorContext {
    let info = OperatorInfo {
        uid: UID.into(),
        subtask: 0,
        parallelism: 1,
        max_parallelism: DEFAULT_MAX_PARALLELISM,
        config,
    };
    let side_outputs = Arc::new(HashMap::from([("late".to_string(), 1)]));
    OperatorContext::new(info, KeyedState::new(UID, Box::new(MemoryBackend::new())), side_outputs)
}

impl OperatorHarness {
    /// A harness around the native operator `name`.
    pub fn native(name: &str) -> anyhow::Result<Self> {
        let logic = native::create(name, context(Vec::new()))
            .ok_or_else(|| anyhow::anyhow!("no native operator `{name}`"))?;
        Ok(Self::new(logic, None))
    }

    /// A harness around the component at `path`, opened with `config`.
    pub fn wasm(path: &Path, config: &[(&str, &str)]) -> anyhow::Result<Self> {
        let runtime = Runtime::new()?;
        let plugin = runtime.load(path)?;
        let config = config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let logic = plugin.instantiate(context(config), Limits::default())?;
        Ok(Self::new(Box::new(logic), Some(runtime)))
    }

    /// A harness around a window operator (the `window` table of a job file, in TOML;
    /// components by path).
    pub fn window(spec: &str) -> anyhow::Result<Self> {
        let spec: crate::window::WindowSpec = toml::from_str(spec)?;
        let ctx = context(Vec::new());
        let (guests, runtime) = match spec.components() {
            components if components.is_empty() => (Default::default(), None),
            components => {
                let runtime = Runtime::new()?;
                let mut plugins = Vec::new();
                for (path, kind) in components {
                    plugins.push(runtime.load_function(Path::new(path), kind)?);
                }
                (crate::window::Guests::instantiate(&spec, &plugins, &ctx, Limits::default())?, Some(runtime))
            }
        };
        let logic = crate::window::WindowOperator::new(ctx, &spec, guests).map_err(anyhow::Error::msg)?;
        Ok(Self::new(Box::new(logic), runtime))
    }

    /// Takes elements at or behind the watermark out before the operator sees them
    /// (job file `late = "drop"`), routing them to the `late` output.
    pub fn drop_late(mut self) -> Self {
        self.task.drop_late = true;
        self
    }

    fn new(logic: Box<dyn OperatorLogic>, runtime: Option<Runtime>) -> Self {
        // Everything is queued before the operator runs on this thread: room for it all
        // (a message is a whole batch; channels allocate their slots up front).
        const MESSAGES: usize = 4096;
        let (input, input_rx) = channel(MESSAGES, usize::MAX);
        let (main_tx, main) = channel(MESSAGES, usize::MAX);
        let (late_tx, late) = channel(MESSAGES, usize::MAX);
        let edge = |to: &str, sender| EdgeOutput::new(to.into(), Partitioning::Forward, vec![sender], DEFAULT_MAX_PARALLELISM, 0);
        let router = Router::new(vec![vec![edge("main", main_tx)], vec![edge("late", late_tx)]], Batching::default());
        let setup = OperatorTaskSetup::new(UID.into(), 0, true, Some(1), ErrorPolicy::Fail);
        let task = OperatorTask::new(setup, logic, Inputs::new(vec![input_rx]), router);
        OperatorHarness { task, input, main, late, batch: Batch::default(), offset: 0, _runtime: runtime }
    }

    /// Queues an element (keyed by its key).
    pub fn element(&mut self, event: Event) -> &mut Self {
        self.offset += 1;
        let key_group = event.key.as_deref().map_or(0, |k| assign_key_group(k, DEFAULT_MAX_PARALLELISM));
        let position = Position { source: Label::intern("harness input"), unit: Label::intern("element"), offset: self.offset };
        self.batch.push_record(Record { event, position, key_group, ingested: None });
        self
    }

    /// Queues a watermark after the elements queued so far.
    pub fn watermark(&mut self, time: i64) -> &mut Self {
        self.batch.push_watermark(Watermark::EventTime(time));
        self
    }

    /// Sends what is queued as one batch (the next elements form another).
    pub fn end_batch(&mut self) -> &mut Self {
        let batch = std::mem::take(&mut self.batch);
        if !batch.is_empty() {
            let _ = self.input.send(Message::Batch(batch));
        }
        self
    }

    /// Ends the input and runs the operator to completion: every event-time timer
    /// fires, then `close`.
    pub fn finish(mut self) -> Result<HarnessOutput, TaskError> {
        self.end_batch();
        let _ = self.input.send(Message::EndOfData);
        let metrics = self.task.metrics.clone();
        self.task.run()?;
        let mut output = HarnessOutput { metrics, ..Default::default() };
        while let Ok(message) = self.main.try_recv() {
            let Message::Batch(batch) = message else { continue };
            for element in batch.elements {
                output.main.push(match element {
                    Element::Record(record) => Output::Record(record.event),
                    Element::Watermark(Watermark::EventTime(time)) => Output::Watermark(time),
                    Element::Watermark(Watermark::Idle) => continue,
                });
            }
        }
        while let Ok(message) = self.late.try_recv() {
            let Message::Batch(batch) = message else { continue };
            output.late.extend(batch.elements.into_iter().filter_map(|e| match e {
                Element::Record(record) => Some(record.event),
                Element::Watermark(_) => None,
            }));
        }
        Ok(output)
    }
}
