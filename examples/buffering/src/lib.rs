//! Flink's `BufferingSink` (the `CheckpointedFunction` example of Flink's docs on working
//! with state) as a weir operator: elements are buffered in the operator's memory and
//! flushed downstream `threshold` at a time (config `threshold`, default 10). On every
//! checkpoint the buffer goes into operator list state (`snapshot_state`); after a
//! restart it comes back in `open`, so nothing buffered is lost or repeated, and at
//! another parallelism the buffers of the old subtasks are split evenly among the new
//! ones, as Flink does.
//!
//! It also keeps a union list of how many elements each subtask has flushed: every
//! subtask gets the whole list back on restore. After a restore, each subtask emits what
//! it got to the side output `restored`:
//! `{"subtask":1,"parallelism":3,"buffered":4,"flushed":["0:120","1:110"]}`.

use weir_guest::{Context, Event, Operator, OperatorListState, Result, export, is_restored};

struct Buffering {
    threshold: usize,
    buffer: Vec<String>,
    flushed: u64,
    /// The buffer, as of the last checkpoint.
    checkpointed: OperatorListState<String>,
    /// `"<subtask>:<flushed>"` of every subtask, as of the last checkpoint.
    progress: OperatorListState<String>,
}

impl Default for Buffering {
    fn default() -> Self {
        Buffering {
            threshold: 10,
            buffer: Vec::new(),
            flushed: 0,
            checkpointed: OperatorListState::new("buffered-elements"),
            progress: OperatorListState::union("flushed-per-subtask"),
        }
    }
}

impl Buffering {
    fn flush(&mut self, ctx: &mut Context) -> Result<()> {
        for value in self.buffer.drain(..) {
            ctx.emit(Event::new(value))?;
        }
        Ok(())
    }
}

impl Operator for Buffering {
    fn open(&mut self, ctx: &mut Context) -> Result<()> {
        self.threshold = ctx.config_or("threshold", 10)?;
        if is_restored() {
            // Flink's initializeState: take the buffer back.
            self.buffer = self.checkpointed.get()?;
            let flushed = self.progress.get()?;
            let me = format!("{}:", ctx.subtask_index());
            self.flushed = flushed.iter().filter_map(|p| p.strip_prefix(&me)?.parse::<u64>().ok()).sum();
            let report = serde_json::json!({
                "subtask": ctx.subtask_index(),
                "parallelism": ctx.parallelism(),
                "buffered": self.buffer.len(),
                "flushed": flushed,
            });
            ctx.emit_to("restored", Event::new(report.to_string()))?;
        }
        Ok(())
    }

    fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
        self.buffer.push(String::from_utf8_lossy(&event.value).into_owned());
        if self.buffer.len() >= self.threshold {
            self.flushed += self.buffer.len() as u64;
            self.flush(ctx)?;
        }
        Ok(())
    }

    fn snapshot_state(&mut self, _checkpoint_id: u64, ctx: &mut Context) -> Result<()> {
        self.checkpointed.update(&self.buffer)?;
        self.progress.update(&[format!("{}:{}", ctx.subtask_index(), self.flushed)])?;
        Ok(())
    }

    fn close(&mut self, ctx: &mut Context) -> Result<()> {
        self.flush(ctx)
    }
}

export!(Buffering);
