"""The conformance suite's process window function, in Python: one summary per
firing (as tests/guests/window-summary in Rust)."""

from weir import ProcessWindowFunction, export_process_window


class Summary(ProcessWindowFunction):
    def process(self, key, context, elements):
        window = context.window()
        values = list(elements)
        yield {"key": key, "start": window.start, "end": window.end, "count": len(values), "values": values}


ProcessWindow = export_process_window(Summary)
