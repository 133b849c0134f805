"""The `co-operator` world of `wit/v0.3/operator.wit` (an operator, its second input and its
checkpoint hook), run for a PyFlink-style function. A batch crosses the boundary once, as
flat buffers (contract 0.3); what it emits goes back in the call's result, and the value
states made in ``open`` travel with the batch (``batch.load``), so reading and updating
them costs no host call.

componentize-py makes a new ``Handler`` object for every call, so the function instance
and its state handles live at module level: attributes set in ``open`` stay, as a Python
user expects. Every exception becomes a clean operator error (not a trap) naming the
exception, with the element's position added by the host.
"""


from componentize_py_types import Err
from wit_world import exports
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
    """PyFlink's ``ValueState``: ``value()``, ``update(v)``, ``clear()``. Made in ``open``,
    it travels with each batch."""

    def __init__(self, descriptor):
        self._handle = state.ValueState(descriptor.name, _ttl(descriptor))
        self._type = descriptor.type_info
        self._slot = None
        if _batch.opening:
            _batch.created.append(self)

    def _copy(self):
        """The batch's copy of this state for the current element's key, if any."""
        b = _batch
        if not b.active or self._slot is None:
            return None
        k = b.key_slots[b.index]
        return None if k == _NO_KEY else (b.slots[self._slot], k)

    def value(self):
        copy = self._copy()
        if copy is None:
            _focus()
            return _load(self._handle.get(), self._type)
        slots, k = copy
        held = slots.held[k]
        if held == _LOADED:
            slots.read[k] = 1
            return slots.loaded(k, self._type)
        return self._type.load(slots.data[k]) if held == _SET else None

    def update(self, value):
        if value is None:
            self.clear()
            return
        copy = self._copy()
        if copy is None:
            _focus()
            self._handle.set(encode_state(value))
            return
        slots, k = copy
        slots.held[k] = _SET
        slots.data[k] = encode_state(value)

    def clear(self):
        copy = self._copy()
        if copy is None:
            _focus()
            self._handle.clear()
            return
        slots, k = copy
        slots.held[k] = _CLEARED


class ListState:
    """PyFlink's ``ListState``: ``get()``, ``add(v)``, ``add_all(vs)``, ``update(vs)``, ``clear()``."""

    def __init__(self, descriptor):
        self._raw = state.ListState(descriptor.name, _ttl(descriptor))
        self._type = descriptor.type_info

    def _h(self):
        _focus()
        return self._raw

    def get(self):
        return [_load(item, self._type) for item in self._h().get()]

    def add(self, value):
        self._h().append(encode_state(value))

    def add_all(self, values):
        for value in values:
            self.add(value)

    def update(self, values):
        self._h().clear()
        self.add_all(values)

    def clear(self):
        self._h().clear()

    def __iter__(self):
        return iter(self.get())


class MapState:
    """PyFlink's ``MapState``: ``get``, ``put``, ``put_all``, ``remove``, ``contains``,
    ``keys``, ``values``, ``items``, ``is_empty``, ``clear``."""

    def __init__(self, descriptor):
        self._raw = state.MapState(descriptor.name, _ttl(descriptor))
        self._key_type = descriptor.key_type_info
        self._type = descriptor.type_info

    def _h(self):
        _focus()
        return self._raw

    def get(self, key):
        return _load(self._h().get(encode_state(key)), self._type)

    def put(self, key, value):
        self._h().put(encode_state(key), encode_state(value))

    def put_all(self, entries):
        for key, value in dict(entries).items():
            self.put(key, value)

    def remove(self, key):
        self._h().remove(encode_state(key))

    def contains(self, key):
        return self._h().contains(encode_state(key))

    def items(self):
        return [(_load(k, self._key_type), _load(v, self._type)) for k, v in self._h().entries()]

    def keys(self):
        return [_load(k, self._key_type) for k in self._h().keys()]

    def values(self):
        return [v for _, v in self.items()]

    def is_empty(self):
        return self._h().is_empty()

    def clear(self):
        self._h().clear()


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
        b = _batch
        if b.active:
            e = b.events
            if not e.flags[b.index] & 1:
                return None
            return e.keys[(e.key_ends[b.index - 1] if b.index else 0):e.key_ends[b.index]]
        return context.current_key()

    def current_processing_time(self):
        return timers.current_processing_time()

    def current_watermark(self):
        _focus()
        return timers.current_watermark()

    def register_timer(self, domain, timestamp):
        _focus()
        timers.register(_domain(domain), timestamp)
        if _batch.active and domain == TimeDomain.EVENT_TIME:
            _batch.timer_registered = True

    def delete_timer(self, domain, timestamp):
        _focus()
        timers.delete(_domain(domain), timestamp)

    def emit(self, output, value):
        if isinstance(value, Event):
            key = value.key.encode() if isinstance(value.key, str) else value.key
            headers = [types.Header(name=n, value=encode(v)) for n, v in value.headers]
            event = types.Event(key=key, value=encode(value.value), timestamp=value.timestamp, headers=headers)
        else:
            event = types.Event(key=None, value=encode(value), timestamp=self.input_timestamp, headers=[])
        if _batch.active:
            _batch.gather(output, event)
        elif output is None:
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


_NO_KEY = 0xFFFFFFFF
_LOADED, _SET, _CLEARED = 0, 1, 2
# The most one element may emit (the contract's limit).
_MAX_EMITS = 100_000
_MAX_EMIT_BYTES = 64 << 20


class _Slots:
    """One loaded state's copy for a batch: per distinct key, what the batch did."""

    def __init__(self, loaded):
        keys = len(loaded.present)
        self.present = loaded.present
        self.values = loaded.values
        self.ends = loaded.ends
        self.held = [_LOADED] * keys
        self.read = [0] * keys
        self.data = [None] * keys

    def loaded(self, k, type_info):
        if not self.present[k]:
            return None
        return type_info.load(self.values[(self.ends[k - 1] if k else 0):self.ends[k]])

    def updates(self):
        ops, values, ends = [], bytearray(), []
        for k, held in enumerate(self.held):
            if held == _SET:
                values += self.data[k]
                ops.append(types.UpdateOp.SET)
            elif held == _CLEARED:
                ops.append(types.UpdateOp.CLEAR)
            else:
                ops.append(types.UpdateOp.READ if self.read[k] else types.UpdateOp.UNTOUCHED)
            ends.append(len(values))
        return types.StateUpdates(ops=ops, values=bytes(values), ends=ends)


class _Batch:
    """The batch being processed (contract 0.3) and what it emitted."""

    def __init__(self):
        self.active = False
        self.opening = False
        self.created = []
        self.events = None
        self.key_slots = None
        self.index = 0
        self.focused = -1
        self.timer_registered = False
        self.slots = []
        self._new_out()

    def _new_out(self):
        self.flags = bytearray()
        self.keys = bytearray()
        self.key_ends = []
        self.values = bytearray()
        self.value_ends = []
        self.timestamps = []
        self.headers = []
        self.elements = []
        self.ports = []
        self.outputs = []
        self.element_emits = 0
        self.element_bytes = 0

    def load_created(self):
        for value_state in self.created:
            value_state._slot = batch.load(value_state._handle)
        self.created = []

    def gather(self, output, event):
        port = 0
        if output is not None:
            if output not in self.outputs:
                self.outputs.append(output)
            port = self.outputs.index(output) + 1
        self.element_emits += 1
        self.element_bytes += len(event.value) + (len(event.key) if event.key is not None else 0)
        if self.element_emits > _MAX_EMITS or self.element_bytes > _MAX_EMIT_BYTES:
            raise RuntimeError(f"one element emitted more than {_MAX_EMITS} events or {_MAX_EMIT_BYTES} bytes, "
                               "the contract's limit (a runaway loop?)")
        flags = 0
        if event.key is not None:
            flags |= 1
            self.keys += event.key
        self.key_ends.append(len(self.keys))
        self.values += event.value
        self.value_ends.append(len(self.values))
        if event.timestamp is not None:
            flags |= 2
        self.timestamps.append(event.timestamp if event.timestamp is not None else 0)
        for header in event.headers:
            self.headers.append(types.ElementHeader(element=len(self.flags), header=header))
        self.flags.append(flags)
        self.elements.append(self.index)
        self.ports.append(port)

    def run(self, input_batch, process):
        events = input_batch.events
        self.events = events
        self.key_slots = input_batch.key_slots
        self.slots = [_Slots(loaded) for loaded in input_batch.loaded]
        self.focused = -1
        self.timer_registered = False
        self._new_out()
        count = len(events.flags)
        processed, error = count, None
        value_ends, values, flags, timestamps = events.value_ends, events.values, events.flags, events.timestamps
        self.active = True
        try:
            start = 0
            for index in range(count):
                self.index = index
                self.element_emits = 0
                self.element_bytes = 0
                if self.timer_registered:
                    self.focused = index
                    if not batch.focus(index):
                        processed = index
                        break
                end = value_ends[index]
                timestamp = timestamps[index] if flags[index] & 2 else None
                try:
                    process(values[start:end], timestamp)
                except Exception as e:
                    processed, error = index, types.ElementError(index=index, message=error_message(e))
                    break
                start = end
        finally:
            self.active = False
        emitted = types.EmittedEvents(
            events=types.FlatEvents(
                flags=bytes(self.flags), keys=bytes(self.keys), key_ends=self.key_ends, values=bytes(self.values),
                value_ends=self.value_ends, timestamps=self.timestamps, headers=self.headers),
            elements=self.elements, ports=self.ports, outputs=self.outputs)
        result = types.BatchResult(processed=processed, error=error, emitted=emitted,
                                   updates=[slots.updates() for slots in self.slots])
        self._new_out()
        self.slots = []
        return result


_batch = _Batch()


def _focus():
    """Makes the current element current on the host's side, before a keyed host call."""
    b = _batch
    if b.active and b.focused != b.index:
        batch.focus(b.index)
        b.focused = b.index


_runtime = _Runtime()
_function = None
_ctx = None
_timer_ctx = None



def handler_for(function_class):
    class Handler(exports.Handler):
        def open(self, config):
            global _function, _ctx, _timer_ctx
            try:
                _batch.opening = True
                try:
                    _function = function_class()
                    _ctx = Context(_runtime)
                    _timer_ctx = OnTimerContext(_runtime)
                    _function.open(RuntimeContext(_runtime))
                finally:
                    _batch.opening = False
                _batch.load_created()
            except Exception as error:
                raise Err(error_message(error))

        def process_batch(self, input_batch):
            process = _function.process_element
            drain = _runtime.drain
            ctx = _ctx

            def element(value, timestamp):
                _runtime.input_timestamp = timestamp
                ctx._timestamp = timestamp
                drain(process(decode_value(value), ctx))

            return _batch.run(input_batch, element)

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
