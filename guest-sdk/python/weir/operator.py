"""The `co-operator` world of `wit/operator.wit` (an operator, its second input and its
checkpoint hook), run for a PyFlink-style function.

componentize-py makes a new ``Handler`` object for every call, so the function instance
and its state handles live at module level: attributes set in ``open`` stay, as a Python
user expects. Every exception becomes a clean operator error (not a trap) naming the
exception, with the element's position added by the host.
"""


from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.handler import ElementError
from wit_world.imports import batch, collector, context, operator_state, state, timers, types

from .api import (
    error_message,
    Context,
    Event,
    OnTimerContext,
    RuntimeContext,
    StateTtlConfig,
    TimeDomain,
    decode_value,
    encode,
    encode_state,
)


def _domain(domain):
    return types.TimeDomain.EVENT_TIME if domain == TimeDomain.EVENT_TIME else types.TimeDomain.PROCESSING_TIME


def _ttl(descriptor):
    config = descriptor.ttl_config
    if config is None:
        return None
    refresh = config.update_type == StateTtlConfig.UpdateType.OnReadAndWrite
    return state.Ttl(ttl_ms=config.ttl_ms, refresh_on_read=refresh)


def _load(raw, type_info):
    return None if raw is None else type_info.load(raw)


class ValueState:
    """PyFlink's ``ValueState``: ``value()``, ``update(v)``, ``clear()``."""

    def __init__(self, descriptor):
        self._handle = state.ValueState(descriptor.name, _ttl(descriptor))
        self._type = descriptor.type_info

    def value(self):
        return _load(self._handle.get(), self._type)

    def update(self, value):
        if value is None:
            self._handle.clear()
        else:
            self._handle.set(encode_state(value))

    def clear(self):
        self._handle.clear()


class ListState:
    """PyFlink's ``ListState``: ``get()``, ``add(v)``, ``add_all(vs)``, ``update(vs)``, ``clear()``."""

    def __init__(self, descriptor):
        self._handle = state.ListState(descriptor.name, _ttl(descriptor))
        self._type = descriptor.type_info

    def get(self):
        return [_load(item, self._type) for item in self._handle.get()]

    def add(self, value):
        self._handle.append(encode_state(value))

    def add_all(self, values):
        for value in values:
            self.add(value)

    def update(self, values):
        self._handle.clear()
        self.add_all(values)

    def clear(self):
        self._handle.clear()

    def __iter__(self):
        return iter(self.get())


class MapState:
    """PyFlink's ``MapState``: ``get``, ``put``, ``put_all``, ``remove``, ``contains``,
    ``keys``, ``values``, ``items``, ``is_empty``, ``clear``."""

    def __init__(self, descriptor):
        self._handle = state.MapState(descriptor.name, _ttl(descriptor))
        self._key_type = descriptor.key_type_info
        self._type = descriptor.type_info

    def get(self, key):
        return _load(self._handle.get(encode_state(key)), self._type)

    def put(self, key, value):
        self._handle.put(encode_state(key), encode_state(value))

    def put_all(self, entries):
        for key, value in dict(entries).items():
            self.put(key, value)

    def remove(self, key):
        self._handle.remove(encode_state(key))

    def contains(self, key):
        return self._handle.contains(encode_state(key))

    def items(self):
        return [(_load(k, self._key_type), _load(v, self._type)) for k, v in self._handle.entries()]

    def keys(self):
        return [_load(k, self._key_type) for k in self._handle.keys()]

    def values(self):
        return [v for _, v in self.items()]

    def is_empty(self):
        return self._handle.is_empty()

    def clear(self):
        self._handle.clear()


class OperatorListState:
    """Operator list state (this subtask's, not a key's): ``get()``, ``add(v)``,
    ``add_all(vs)``, ``update(vs)``, ``clear()``."""

    def __init__(self, descriptor, union):
        mode = operator_state.Redistribution.UNION if union else operator_state.Redistribution.SPLIT
        self._handle = operator_state.ListState(descriptor.name, mode)
        self._type = descriptor.type_info

    def get(self):
        return [_load(item, self._type) for item in self._handle.get()]

    def add(self, value):
        self._handle.add(encode_state(value))

    def add_all(self, values):
        for value in values:
            self.add(value)

    def update(self, values):
        self._handle.update([encode_state(v) for v in values])

    def clear(self):
        self._handle.clear()

    def __iter__(self):
        return iter(self.get())


class BroadcastState:
    """PyFlink's broadcast state: ``get``, ``contains``, ``items``, ``keys``, ``values``,
    ``is_empty``; ``put``, ``put_all``, ``remove``, ``clear`` in
    ``process_broadcast_element`` only (elsewhere the host refuses them)."""

    def __init__(self, descriptor):
        self._handle = operator_state.BroadcastState(descriptor.name)
        self._key_type = descriptor.key_type_info
        self._type = descriptor.type_info

    def get(self, key):
        return _load(self._handle.get(encode_state(key)), self._type)

    def contains(self, key):
        return self._handle.contains(encode_state(key))

    def items(self):
        return [(_load(k, self._key_type), _load(v, self._type)) for k, v in self._handle.entries()]

    def keys(self):
        return [k for k, _ in self.items()]

    def values(self):
        return [v for _, v in self.items()]

    def is_empty(self):
        return not self._handle.entries()

    def put(self, key, value):
        self._handle.put(encode_state(key), encode_state(value))

    def put_all(self, entries):
        for key, value in dict(entries).items():
            self.put(key, value)

    def remove(self, key):
        self._handle.remove(encode_state(key))

    def clear(self):
        self._handle.clear()


class _Runtime:
    """What the API objects call: weir's host interfaces."""

    def __init__(self):
        self.input_timestamp = None
        self._config = None
        self._broadcast = {}

    def value_state(self, descriptor):
        return ValueState(descriptor)

    def list_state(self, descriptor):
        return ListState(descriptor)

    def map_state(self, descriptor):
        return MapState(descriptor)

    def operator_list_state(self, descriptor, union):
        return OperatorListState(descriptor, union)

    def broadcast_state(self, descriptor):
        if descriptor.name not in self._broadcast:
            self._broadcast[descriptor.name] = BroadcastState(descriptor)
        return self._broadcast[descriptor.name]

    def is_restored(self):
        return operator_state.is_restored()

    def subtask_index(self):
        return context.subtask_index()

    def parallelism(self):
        return context.parallelism()

    def operator_uid(self):
        return context.operator_uid()

    def config(self):
        if self._config is None:
            self._config = dict(context.config())
        return self._config

    def current_key(self):
        return context.current_key()

    def current_processing_time(self):
        return timers.current_processing_time()

    def current_watermark(self):
        return timers.current_watermark()

    def register_timer(self, domain, timestamp):
        timers.register(_domain(domain), timestamp)

    def delete_timer(self, domain, timestamp):
        timers.delete(_domain(domain), timestamp)

    def emit(self, output, value):
        if isinstance(value, Event):
            key = value.key.encode() if isinstance(value.key, str) else value.key
            headers = [types.Header(name=n, value=encode(v)) for n, v in value.headers]
            event = types.Event(key=key, value=encode(value.value), timestamp=value.timestamp, headers=headers)
        else:
            event = types.Event(key=None, value=encode(value), timestamp=self.input_timestamp, headers=[])
        if output is None:
            collector.emit(event)
        else:
            collector.emit_to(output, event)

    def drain(self, outputs):
        """Emits what a function returned or yielded: values, or (OutputTag, value)."""
        if outputs is None:
            return
        for item in outputs:
            if isinstance(item, tuple) and len(item) == 2 and hasattr(item[0], "tag_id"):
                self.emit(item[0].tag_id, item[1])
            else:
                self.emit(None, item)


_runtime = _Runtime()
_function = None
_ctx = None
_timer_ctx = None



def handler_for(function_class):
    class Handler(exports.Handler):
        def open(self, config):
            global _function, _ctx, _timer_ctx
            try:
                _function = function_class()
                _ctx = Context(_runtime)
                _timer_ctx = OnTimerContext(_runtime)
                _function.open(RuntimeContext(_runtime))
            except Exception as error:
                raise Err(error_message(error))

        def process_batch(self, events):
            process = _function.process_element
            for index, event in enumerate(events):
                if not batch.begin_element(index):
                    return index
                try:
                    _runtime.input_timestamp = event.timestamp
                    _ctx._timestamp = event.timestamp
                    _runtime.drain(process(decode_value(event.value), _ctx))
                except Exception as error:
                    raise Err(ElementError(index=index, message=error_message(error)))
            return len(events)

        def on_timer(self, timestamp, domain):
            try:
                _runtime.input_timestamp = timestamp
                _timer_ctx._timestamp = timestamp
                _timer_ctx._domain = TimeDomain.EVENT_TIME if domain == types.TimeDomain.EVENT_TIME else TimeDomain.PROCESSING_TIME
                _runtime.drain(_function.on_timer(timestamp, _timer_ctx))
            except Exception as error:
                raise Err(error_message(error))

        def close(self):
            try:
                # What close yields is emitted (a weir extension: PyFlink's close emits nothing).
                _runtime.drain(_function.close())
            except Exception as error:
                raise Err(error_message(error))

        def state_version(self):
            return int(getattr(function_class, "state_version", 0))

        def migrate(self, from_version):
            try:
                _function.migrate(from_version)
            except Exception as error:
                raise Err(error_message(error))

    class CoHandler(exports.CoHandler):
        def process_element_2(self, event):
            second = getattr(_function, "process_broadcast_element", None) or getattr(_function, "process_element2", None)
            if second is None:
                raise Err(f"{function_class.__name__} takes one input, but an element arrived on input 2 "
                          "(subclass CoProcessFunction or KeyedBroadcastProcessFunction)")
            try:
                _runtime.input_timestamp = event.timestamp
                _ctx._timestamp = event.timestamp
                _runtime.drain(second(decode_value(event.value), _ctx))
            except Exception as error:
                raise Err(error_message(error))

    class Checkpointed(exports.Checkpointed):
        def snapshot_state(self, checkpoint_id):
            try:
                _function.snapshot_state(checkpoint_id)
            except Exception as error:
                raise Err(error_message(error))

    Handler.__name__ = "Handler"
    return Handler, CoHandler, Checkpointed
