"""The conformance suite's aggregate window function, in Python: the average of
field `v` and how many elements it covers (as tests/guests/window-average in Rust)."""

from weir import AggregateFunction, export_aggregate


class Average(AggregateFunction):
    def create_accumulator(self):
        return {"total": 0.0, "count": 0}

    def add(self, value, accumulator):
        if value.get("fail"):
            raise ValueError("asked to fail")
        accumulator["total"] += value["v"]
        accumulator["count"] += 1
        return accumulator

    def merge(self, a, b):
        return {"total": a["total"] + b["total"], "count": a["count"] + b["count"]}

    def get_result(self, accumulator):
        return {"avg": accumulator["total"] / accumulator["count"], "count": accumulator["count"]}


Aggregate = export_aggregate(Average)
