"""The window function worlds of `wit/window.wit`, run for PyFlink-style classes.

Each export is a function of its arguments; the class instance is made once, at
module level (componentize-py makes a new export object per call).
"""

import json

from componentize_py_types import Err

from .api import Event, decode_key, decode_value, encode, encode_state, error_message
from .window_api import ProcessWindowFunction, TimeWindow



def aggregate_for(function_class):
    from wit_world import exports

    function = function_class()

    class Aggregate(exports.Aggregate):
        def create_accumulator(self):
            try:
                return encode_state(function.create_accumulator())
            except Exception as error:
                raise Err(error_message(error))

        def add(self, accumulator, element):
            try:
                return encode_state(function.add(decode_value(element.value), json.loads(accumulator)))
            except Exception as error:
                raise Err(error_message(error))

        def merge(self, a, b):
            try:
                return encode_state(function.merge(json.loads(a), json.loads(b)))
            except Exception as error:
                raise Err(error_message(error))

        def get_result(self, accumulator):
            try:
                return encode(function.get_result(json.loads(accumulator)))
            except Exception as error:
                raise Err(error_message(error))

    return Aggregate


def reduce_for(function_class):
    from wit_world import exports

    function = function_class()

    class Reduce(exports.Reduce):
        def reduce(self, a, b):
            try:
                return encode(function.reduce(decode_value(a), decode_value(b)))
            except Exception as error:
                raise Err(error_message(error))

    return Reduce


def process_window_for(function_class):
    from wit_world import exports
    from wit_world.imports import types

    function = function_class()

    def to_event(item):
        if isinstance(item, Event):
            key = item.key.encode() if isinstance(item.key, str) else item.key
            return types.Event(key=key, value=encode(item.value), timestamp=None, headers=[])
        return types.Event(key=None, value=encode(item), timestamp=None, headers=[])

    class ProcessWindow(exports.ProcessWindow):
        def process(self, key, window, elements):
            try:
                context = ProcessWindowFunction.Context(TimeWindow(window.start, window.end))
                values = [decode_value(e.value) for e in elements]
                out = function.process(decode_key(key), context, values)
                return [to_event(item) for item in (out or [])]
            except Exception as error:
                raise Err(error_message(error))

    return ProcessWindow
