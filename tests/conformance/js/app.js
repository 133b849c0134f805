// The operator conformance suite (tests/conformance/README.md), in JavaScript.
import { Event, KeyedProcessFunction, OutputTag, operator } from '@weir/guest';

const ODD = new OutputTag('odd');

class Conformance extends KeyedProcessFunction {
  open(runtimeContext) {
    this.sum = runtimeContext.getState('sum');
    this.seen = runtimeContext.getListState('seen');
    this.counts = runtimeContext.getMapState('counts');
    // With a time to live of an hour, which the suite never reaches.
    this.recent = runtimeContext.getState('recent', { ttlMs: 3600000 });
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
        ctx.collect({ k, recent: this.recent.value() });
        break;
      case 'ptimer': {
        const at = ctx.timerService().currentProcessingTime() + 3600000;
        ctx.timerService().registerProcessingTimeTimer(at);
        ctx.timerService().deleteProcessingTimeTimer(at);
        ctx.collect({ k, ptimer: 'deleted' });
        break;
      }
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
    ctx.collect({ k: ctx.currentKey(), fired: timestamp, sum: this.sum.value() ?? 0 });
  }
}

export const handler = operator(Conformance);
