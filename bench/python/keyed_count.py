"""Keyed count in Python: the peer of examples/keyed-count (Rust) for the per-language
benchmark (scripts/bench-languages)."""

from weir import Event, KeyedProcessFunction, Types, ValueStateDescriptor, export


class KeyedCount(KeyedProcessFunction):
    def open(self, runtime_context):
        self.count = runtime_context.get_state(ValueStateDescriptor("count", Types.LONG()))

    def process_element(self, value, ctx):
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        key = ctx.get_current_key()
        yield Event({"key": key, "count": n}, key=key, timestamp=ctx.timestamp())


Handler = export(KeyedCount)
