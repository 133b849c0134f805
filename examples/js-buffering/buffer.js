// Flink's BufferingSink (CheckpointedFunction) in JavaScript: elements buffered in
// memory, flushed `threshold` at a time, kept in operator list state at every checkpoint
// (snapshotState), so a crash loses and repeats nothing (the job of examples/buffering).
import { ProcessFunction, operator } from '@weir/guest';

class Buffering extends ProcessFunction {
  open(runtimeContext) {
    this.threshold = Number(runtimeContext.config('threshold', '10'));
    this.checkpointed = runtimeContext.getOperatorListState('buffered-elements');
    this.buffer = runtimeContext.isRestored() ? this.checkpointed.get() : [];
  }

  processElement(value, ctx) {
    this.buffer.push(value);
    if (this.buffer.length >= this.threshold) this.flush(ctx);
  }

  snapshotState(checkpointId) {
    this.checkpointed.update(this.buffer);
  }

  close(ctx) {
    this.flush(ctx);
  }

  flush(ctx) {
    for (const value of this.buffer) ctx.collect(value);
    this.buffer = [];
  }
}

export const handler = operator(Buffering);
