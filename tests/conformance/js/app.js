// The operator conformance suite (tests/conformance/README.md), in JavaScript.
import { Event, KeyedProcessFunction, OutputTag, TimeDomain, operator } from '@weir/guest';

const ODD = new OutputTag('odd');

class Conformance extends KeyedProcessFunction {
  open(runtimeContext) {
    this.sum = runtimeContext.getState('sum');
    this.seen = runtimeContext.getListState('seen');
    this.counts = runtimeContext.getMapState('counts');
    // With a time to live of 100 ms of processing time.
    this.recent = runtimeContext.getState('recent', { ttlMs: 100 });
  }

  processElement({ op, k, v, ts }, ctx) {
    switch (op) {
      case 'add': {
        const sum = (this.sum.value() ?? 0) + v;
        this.sum.update(sum);
        this.seen.add(v);
        const bucket = String(v % 3);
        this.counts.put(bucket, (this.counts.get(bucket) ?? 0) + 1);
        const counts = Object.fromEntries(this.counts.entries());
        ctx.collect({ k, sum, seen: this.seen.get(), counts });
        break;
      }
      case 'timer':
        ctx.timerService().registerEventTimeTimer(ts + v);
        break;
      case 'cancel':
        ctx.timerService().deleteEventTimeTimer(ts + v);
        break;
      case 'ttl':
        this.recent.update(v);
        break;
      case 'recall':
        ctx.collect({ k, recent: this.recent.value() ?? null });
        break;
      case 'ptimer':
        ctx.timerService().registerProcessingTimeTimer(ctx.timerService().currentProcessingTime() + v);
        break;
      case 'pcancel':
        ctx.timerService().deleteProcessingTimeTimer(ctx.timerService().currentProcessingTime() + v);
        break;
      case 'side':
        if (v % 2 !== 0) ctx.output(ODD, { k, v }); else ctx.collect({ k, v });
        break;
      case 'rekey':
        ctx.collect(new Event({ from: k, v }, { key: `re-${k}` }));
        break;
      case 'clear':
        this.sum.clear();
        this.seen.clear();
        this.counts.clear();
        ctx.collect({ k, cleared: true });
        break;
      case 'fail':
        throw new Error(`asked to fail: ${v}`);
      default:
        throw new Error(`unknown op \`${op}\``);
    }
  }

  onTimer(timestamp, ctx) {
    const sum = this.sum.value() ?? 0;
    if (ctx.timeDomain() === TimeDomain.PROCESSING_TIME) ctx.collect({ k: ctx.currentKey(), pfired: timestamp, sum });
    else ctx.collect({ k: ctx.currentKey(), fired: timestamp, sum });
  }
}

export const handler = operator(Conformance);
