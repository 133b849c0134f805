// Keyed count in JavaScript: the peer of examples/keyed-count (Rust) for the
// per-language benchmark (scripts/bench-languages).
import { Event, KeyedProcessFunction, operator } from '@weir/guest';

class KeyedCount extends KeyedProcessFunction {
  open(runtimeContext) {
    this.count = runtimeContext.getState('count');
  }

  processElement(value, ctx) {
    const n = (this.count.value() ?? 0) + 1;
    this.count.update(n);
    const key = ctx.currentKey();
    ctx.collect(new Event({ key, count: n }, { key, timestamp: ctx.timestamp() }));
  }
}

export const handler = operator(KeyedCount);
