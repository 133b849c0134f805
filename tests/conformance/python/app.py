"""The operator conformance suite (tests/conformance/README.md), in Python."""

from weir import (
    Event,
    KeyedProcessFunction,
    ListStateDescriptor,
    MapStateDescriptor,
    OutputTag,
    StateTtlConfig,
    Time,
    TimeDomain,
    Types,
    ValueStateDescriptor,
    export,
)

ODD = OutputTag("odd")


class Conformance(KeyedProcessFunction):
    def open(self, runtime_context):
        self.sum = runtime_context.get_state(ValueStateDescriptor("sum", Types.LONG()))
        self.seen = runtime_context.get_list_state(ListStateDescriptor("seen", Types.LONG()))
        self.counts = runtime_context.get_map_state(MapStateDescriptor("counts", Types.STRING(), Types.LONG()))
        # With a time to live of 100 ms of processing time.
        recent = ValueStateDescriptor("recent", Types.LONG())
        recent.enable_time_to_live(StateTtlConfig.new_builder(Time.milliseconds(100)).build())
        self.recent = runtime_context.get_state(recent)

    def process_element(self, value, ctx):
        op, k, v, ts = value["op"], value["k"], value["v"], value["ts"]
        if op == "add":
            total = (self.sum.value() or 0) + v
            self.sum.update(total)
            self.seen.add(v)
            bucket = str(v % 3)
            self.counts.put(bucket, (self.counts.get(bucket) or 0) + 1)
            counts = dict(sorted(self.counts.items()))
            yield {"k": k, "sum": total, "seen": self.seen.get(), "counts": counts}
        elif op == "timer":
            ctx.timer_service().register_event_time_timer(ts + v)
        elif op == "cancel":
            ctx.timer_service().delete_event_time_timer(ts + v)
        elif op == "ttl":
            self.recent.update(v)
        elif op == "recall":
            yield {"k": k, "recent": self.recent.value()}
        elif op == "ptimer":
            now = ctx.timer_service().current_processing_time()
            ctx.timer_service().register_processing_time_timer(now + v)
        elif op == "pcancel":
            now = ctx.timer_service().current_processing_time()
            ctx.timer_service().delete_processing_time_timer(now + v)
        elif op == "side":
            if v % 2:
                yield ODD, {"k": k, "v": v}
            else:
                yield {"k": k, "v": v}
        elif op == "rekey":
            yield Event({"from": k, "v": v}, key=f"re-{k}")
        elif op == "clear":
            self.sum.clear()
            self.seen.clear()
            self.counts.clear()
            yield {"k": k, "cleared": True}
        elif op == "fail":
            raise ValueError(f"asked to fail: {v}")
        else:
            raise ValueError(f"unknown op `{op}`")

    def on_timer(self, timestamp, ctx):
        fired = "pfired" if ctx.time_domain() == TimeDomain.PROCESSING_TIME else "fired"
        yield {"k": ctx.get_current_key(), fired: timestamp, "sum": self.sum.value() or 0}


Handler = export(Conformance)
