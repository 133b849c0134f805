"""Write weir operators in Python, the way PyFlink's DataStream API reads.

An operator is a ``KeyedProcessFunction`` (or ``ProcessFunction``) subclass, exported
with ``Handler = export(MyFunction)``; window functions are ``AggregateFunction``,
``ReduceFunction`` or ``ProcessWindowFunction`` subclasses, exported with
``Aggregate = export_aggregate(...)``, ``Reduce = export_reduce(...)`` or
``ProcessWindow = export_process_window(...)``. ``python -m weir.build app.py -o app.wasm``
(or ``weir-build-python``) builds the component with componentize-py.

Values are JSON: an element's value is decoded before ``process_element`` sees it, and
what the function yields is encoded. State values are JSON too, so state written by a
Python operator reads the same from a Rust one.
"""

from .api import (
    BroadcastProcessFunction,
    Collector,
    CoProcessFunction,
    KeyedBroadcastProcessFunction,
    KeyedCoProcessFunction,
    Context,
    Event,
    KeyedProcessFunction,
    ListStateDescriptor,
    MapStateDescriptor,
    OnTimerContext,
    OutputTag,
    ProcessFunction,
    RuntimeContext,
    StateTtlConfig,
    Time,
    TimeDomain,
    Types,
    ValueStateDescriptor,
)
from .window_api import AggregateFunction, ProcessWindowFunction, ReduceFunction, TimeWindow


def export(function_class):
    """The ``Handler`` class componentize-py exports for an operator:
    ``Handler = export(MyFunction)`` at the top level of the app module. The app module
    also gets the ``CoHandler`` (second input) and ``Checkpointed`` (snapshot) exports of
    the `co-operator` world."""
    import sys

    from .operator import handler_for

    handler, co_handler, checkpointed = handler_for(function_class)
    module = sys._getframe(1).f_globals
    module.setdefault("CoHandler", co_handler)
    module.setdefault("Checkpointed", checkpointed)
    return handler


def export_aggregate(function_class):
    """``Aggregate = export_aggregate(MyAggregate)``: the `aggregate-function` world."""
    from .window import aggregate_for

    return aggregate_for(function_class)


def export_reduce(function_class):
    """``Reduce = export_reduce(MyReduce)``: the `reduce-function` world."""
    from .window import reduce_for

    return reduce_for(function_class)


def export_process_window(function_class):
    """``ProcessWindow = export_process_window(MyFunction)``: the `process-window-function` world."""
    from .window import process_window_for

    return process_window_for(function_class)


__all__ = [
    "AggregateFunction",
    "Collector",
    "Context",
    "Event",
    "KeyedProcessFunction",
    "ListStateDescriptor",
    "MapStateDescriptor",
    "OnTimerContext",
    "OutputTag",
    "ProcessFunction",
    "ProcessWindowFunction",
    "ReduceFunction",
    "RuntimeContext",
    "StateTtlConfig",
    "Time",
    "TimeDomain",
    "TimeWindow",
    "Types",
    "ValueStateDescriptor",
    "export",
    "export_aggregate",
    "export_process_window",
    "export_reduce",
]
