//! The sink task: writes every record it receives, flushes at the end or on stop.

use std::sync::Arc;

use hdrhistogram::Histogram;

use super::inputs::{Inputs, Next};
use super::{POLL_INTERVAL, TaskError};
use crate::job::metrics::TaskMetrics;
use crate::sink::Sink;
use crate::stream::Message;

pub struct SinkTask {
    pub uid: Arc<str>,
    pub sink: Box<dyn Sink>,
    pub inputs: Inputs,
    pub metrics: Arc<TaskMetrics>,
}

impl SinkTask {
    pub fn run(mut self) -> Result<(), TaskError> {
        // End-to-end latency (source read to sink write), in microseconds.
        let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
        let result = self.run_loop(&mut latency);
        // Whatever was accepted is written out, even when the job is failing.
        let flushed = self.sink.flush();
        self.metrics.set_latency(latency);
        result?;
        flushed?;
        Ok(())
    }

    fn run_loop(&mut self, latency: &mut Histogram<u64>) -> Result<(), TaskError> {
        // No cancel check here: when the job stops, upstream tasks end and drop their
        // channels, and the sink first writes everything they had already sent.
        loop {
            match self.inputs.next(POLL_INTERVAL) {
                Next::Message(_, Message::Record(record)) => {
                    self.sink.write(&record.event)?;
                    self.metrics.add_in(1);
                    latency.saturating_record(record.ingested.elapsed().as_micros() as u64);
                }
                Next::Message(_, Message::Watermark(_)) | Next::Timeout => {}
                Next::Message(input, Message::EndOfData) => self.inputs.close(input),
                Next::Ended | Next::Disconnected => return Ok(()),
            }
        }
    }
}
