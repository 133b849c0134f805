# Flink's broadcast state pattern in PyFlink's words: orders keyed by customer, enriched
# with customer tiers from a broadcast stream (the same job as examples/enrichment, whose
# data it reads). Config `misbehave = "true"` writes broadcast state from the keyed side,
# which weir refuses as Flink does.
from weir import KeyedBroadcastProcessFunction, MapStateDescriptor, Types, export

TIERS = MapStateDescriptor("tiers", Types.STRING(), Types.STRING())


class Enrichment(KeyedBroadcastProcessFunction):
    def open(self, runtime_context):
        self.misbehave = runtime_context.get_job_parameter("misbehave", "false") == "true"

    def process_element(self, order, ctx):
        tiers = ctx.get_broadcast_state(TIERS)
        if self.misbehave:
            tiers.put(order.customer, "written from the keyed side")
        tier = tiers.get(order.customer) or "unknown"
        yield {"order": order.order, "customer": order.customer, "amount": order.amount, "tier": tier}

    def process_broadcast_element(self, update, ctx):
        ctx.get_broadcast_state(TIERS).put(update.customer, update.tier)


Handler = export(Enrichment)
