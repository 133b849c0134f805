"""PyFlink's window function classes (weir runs the windows; these compute results)."""


class TimeWindow:
    """PyFlink's ``TimeWindow``: ``[start, end)`` in ms."""

    def __init__(self, start, end):
        self.start = start
        self.end = end

    def max_timestamp(self):
        return self.end - 1

    def __repr__(self):
        return f"TimeWindow(start={self.start}, end={self.end})"


class AggregateFunction:
    """PyFlink's ``AggregateFunction``. Accumulators are stored as JSON by the host
    (tuples come back as lists)."""

    def create_accumulator(self):
        raise NotImplementedError("create_accumulator")

    def add(self, value, accumulator):
        raise NotImplementedError("add")

    def get_result(self, accumulator):
        raise NotImplementedError("get_result")

    def merge(self, acc_a, acc_b):
        raise NotImplementedError("merge (weir merges the panes of sliding windows and merging sessions)")


class ReduceFunction:
    """PyFlink's ``ReduceFunction``: ``reduce(value1, value2)``."""

    def reduce(self, value1, value2):
        raise NotImplementedError("reduce")


class ProcessWindowFunction:
    """PyFlink's ``ProcessWindowFunction``: ``process(key, context, elements)`` yields
    outputs; ``context.window()`` is the window."""

    class Context:
        def __init__(self, window):
            self._window = window

        def window(self):
            return self._window

    def process(self, key, context, elements):
        raise NotImplementedError("process")
