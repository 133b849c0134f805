// Flink's broadcast state pattern in JavaScript: orders keyed by customer, enriched with
// customer tiers from a broadcast stream (the job of examples/enrichment, whose data it
// reads). Config `misbehave = "true"` writes broadcast state from the keyed side, which
// weir refuses as Flink does.
import { KeyedBroadcastProcessFunction, operator } from '@weir/guest';

class Enrichment extends KeyedBroadcastProcessFunction {
  open(runtimeContext) {
    this.misbehave = runtimeContext.config('misbehave', 'false') === 'true';
  }

  processElement(order, ctx) {
    const tiers = ctx.getBroadcastState('tiers');
    if (this.misbehave) tiers.put(order.customer, 'written from the keyed side');
    const tier = tiers.get(order.customer) ?? 'unknown';
    ctx.collect({ order: order.order, customer: order.customer, amount: order.amount, tier });
  }

  processBroadcastElement(update, ctx) {
    ctx.getBroadcastState('tiers').put(update.customer, update.tier);
  }
}

export const handler = operator(Enrichment);
