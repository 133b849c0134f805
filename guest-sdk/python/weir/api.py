"""PyFlink's DataStream API shapes, over weir's host interfaces (see operator.py).

Nothing here imports the component bindings, so the module imports anywhere; the
host calls arrive through the runtime object that ``operator.py`` installs.
"""

import dataclasses
import json
import traceback
from enum import Enum


class TimeDomain(Enum):
    """PyFlink's ``TimeDomain``."""

    EVENT_TIME = 0
    PROCESSING_TIME = 1


class Time:
    """PyFlink's ``Time``: a duration, kept in milliseconds."""

    def __init__(self, ms):
        self.ms = int(ms)

    def to_milliseconds(self):
        return self.ms

    @staticmethod
    def milliseconds(n):
        return Time(n)

    @staticmethod
    def seconds(n):
        return Time(n * 1000)

    @staticmethod
    def minutes(n):
        return Time(n * 60_000)

    @staticmethod
    def hours(n):
        return Time(n * 3_600_000)

    @staticmethod
    def days(n):
        return Time(n * 86_400_000)


class TypeInformation:
    """A value type of a state descriptor: how a decoded JSON value is converted."""

    def __init__(self, name, convert=None):
        self.name = name
        self._convert = convert

    def convert(self, value):
        if value is None or self._convert is None:
            return value
        return self._convert(value)

    def load(self, raw):
        """A stored JSON value, read as this type (integers without the JSON parser)."""
        if self._convert is int:
            try:
                return int(raw)
            except ValueError:
                pass
        return self.convert(json.loads(raw))

    def __repr__(self):
        return f"Types.{self.name}()"


class Types:
    """PyFlink's ``Types``. Values are stored as JSON whatever the type; the type
    converts what is read back (``Types.INT()`` gives ``int``)."""

    @staticmethod
    def INT():
        return TypeInformation("INT", int)

    @staticmethod
    def LONG():
        return TypeInformation("LONG", int)

    @staticmethod
    def SHORT():
        return TypeInformation("SHORT", int)

    @staticmethod
    def FLOAT():
        return TypeInformation("FLOAT", float)

    @staticmethod
    def DOUBLE():
        return TypeInformation("DOUBLE", float)

    @staticmethod
    def BOOLEAN():
        return TypeInformation("BOOLEAN", bool)

    @staticmethod
    def STRING():
        return TypeInformation("STRING", str)

    @staticmethod
    def PICKLED_BYTE_ARRAY():
        return TypeInformation("PICKLED_BYTE_ARRAY")

    @staticmethod
    def LIST(element_type=None):
        return TypeInformation("LIST", list)

    @staticmethod
    def MAP(key_type=None, value_type=None):
        return TypeInformation("MAP", dict)

    @staticmethod
    def ROW(field_types=None):
        return TypeInformation("ROW")

    @staticmethod
    def TUPLE(field_types=None):
        return TypeInformation("TUPLE", tuple)


class StateTtlConfig:
    """PyFlink's ``StateTtlConfig`` (``NeverReturnExpired`` visibility, as Flink's default)."""

    class UpdateType(Enum):
        Disabled = 0
        OnCreateAndWrite = 1
        OnReadAndWrite = 2

    class StateVisibility(Enum):
        ReturnExpiredIfNotCleanedUp = 0
        NeverReturnExpired = 1

    def __init__(self, ttl_ms, update_type):
        self.ttl_ms = ttl_ms
        self.update_type = update_type

    @staticmethod
    def new_builder(ttl):
        return StateTtlConfig.Builder(ttl)

    class Builder:
        def __init__(self, ttl):
            self._ttl = ttl.to_milliseconds() if isinstance(ttl, Time) else int(ttl)
            self._update = StateTtlConfig.UpdateType.OnCreateAndWrite

        def set_update_type(self, update_type):
            self._update = update_type
            return self

        def update_ttl_on_create_and_write(self):
            return self.set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)

        def update_ttl_on_read_and_write(self):
            return self.set_update_type(StateTtlConfig.UpdateType.OnReadAndWrite)

        def set_state_visibility(self, visibility):
            if visibility != StateTtlConfig.StateVisibility.NeverReturnExpired:
                raise ValueError("weir never returns expired state (NeverReturnExpired)")
            return self

        def never_return_expired(self):
            return self

        def cleanup_full_snapshot(self):
            return self

        def cleanup_incrementally(self, *args):
            return self

        def cleanup_in_rocksdb_compact_filter(self, *args):
            return self

        def build(self):
            return StateTtlConfig(self._ttl, self._update)


class StateDescriptor:
    def __init__(self, name, type_info=None):
        if not isinstance(name, str) or not name:
            raise ValueError("a state needs a non-empty name")
        self.name = name
        self.type_info = type_info or TypeInformation("ANY")
        self.ttl_config = None

    def enable_time_to_live(self, ttl_config):
        self.ttl_config = ttl_config

    def get_name(self):
        return self.name


class ValueStateDescriptor(StateDescriptor):
    pass


class ListStateDescriptor(StateDescriptor):
    pass


class MapStateDescriptor(StateDescriptor):
    def __init__(self, name, key_type_info=None, value_type_info=None):
        super().__init__(name, value_type_info)
        self.key_type_info = key_type_info or TypeInformation("ANY")


class OutputTag:
    """PyFlink's ``OutputTag``: a named side output (an edge with ``output = "<tag_id>"``)."""

    def __init__(self, tag_id, type_info=None):
        self.tag_id = tag_id
        self.type_info = type_info


class Event:
    """An element to emit with its key, timestamp or headers set; a plain value yielded
    by a function becomes an event without a key, with the input's timestamp."""

    def __init__(self, value, key=None, timestamp=None, headers=None):
        self.value = value
        self.key = key
        self.timestamp = timestamp
        self.headers = headers or []


# One compact encoder: `json.dumps(..., separators=...)` would build a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def encode(value):
    """A yielded or stored value as bytes: bytes as is, text as UTF-8, a dataclass as the
    JSON object of its fields, the rest as JSON."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return _ENCODER.encode(value).encode()


def encode_state(value):
    """A state value as JSON (as the Rust SDK stores it)."""
    if type(value) is int:
        return str(value).encode()
    return _ENCODER.encode(value).encode()


class Record(dict):
    """A JSON object whose fields also read as attributes (``event.user_id``), as a
    PyFlink ``Row`` or a tutorial's dataclass does; still a ``dict``."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"the element has no field `{name}`") from None


def decode_value(raw):
    """An element's value: parsed JSON (a top-level object as a :class:`Record`), or the
    text when it is not JSON."""
    try:
        value = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")
    return Record(value) if type(value) is dict else value


def decode_key(raw):
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return bytes(raw)


def error_message(error):
    """An exception as an operator error: its type, message and where it was raised
    (componentize-py mounts each source directory as /0, /1, ...: the file name is kept)."""
    text = f"{type(error).__name__}: {error}"
    frames = traceback.extract_tb(error.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name})"
    return text


class RuntimeContext:
    """PyFlink's ``RuntimeContext``: state handles, the subtask, the job's config."""

    def __init__(self, runtime):
        self._runtime = runtime

    def get_state(self, descriptor):
        return self._runtime.value_state(descriptor)

    def get_list_state(self, descriptor):
        return self._runtime.list_state(descriptor)

    def get_map_state(self, descriptor):
        return self._runtime.map_state(descriptor)

    # Operator state (weir's, as Flink's CheckpointedFunction in Java): lists of this
    # subtask, not of a key, checkpointed by the host. Split lists are divided evenly
    # among the subtasks on rescale; union lists go whole to every subtask.
    def get_operator_list_state(self, descriptor):
        return self._runtime.operator_list_state(descriptor, union=False)

    def get_union_list_state(self, descriptor):
        return self._runtime.operator_list_state(descriptor, union=True)

    def is_restored(self):
        """Whether the operator state came from a checkpoint or savepoint."""
        return self._runtime.is_restored()

    def get_index_of_this_subtask(self):
        return self._runtime.subtask_index()

    def get_number_of_parallel_subtasks(self):
        return self._runtime.parallelism()

    def get_task_name(self):
        return self._runtime.operator_uid()

    def get_job_parameter(self, key, default_value=None):
        """The operator's ``config`` entry ``key`` (a string), or ``default_value``."""
        return self._runtime.config().get(key, default_value)


class TimerService:
    """PyFlink's ``TimerService``, scoped to the current key."""

    def __init__(self, runtime):
        self._runtime = runtime

    def current_processing_time(self):
        return self._runtime.current_processing_time()

    def current_watermark(self):
        return self._runtime.current_watermark()

    def register_event_time_timer(self, timestamp):
        self._runtime.register_timer(TimeDomain.EVENT_TIME, int(timestamp))

    def register_processing_time_timer(self, timestamp):
        self._runtime.register_timer(TimeDomain.PROCESSING_TIME, int(timestamp))

    def delete_event_time_timer(self, timestamp):
        self._runtime.delete_timer(TimeDomain.EVENT_TIME, int(timestamp))

    def delete_processing_time_timer(self, timestamp):
        self._runtime.delete_timer(TimeDomain.PROCESSING_TIME, int(timestamp))


class Collector:
    """Where ``ctx.collect`` and ``ctx.output`` send events."""

    def __init__(self, runtime):
        self._runtime = runtime

    def collect(self, value):
        self._runtime.emit(None, value)


class Context(Collector):
    """The context of ``process_element``: the element's timestamp, the current key,
    timers, and outputs (``ctx.collect(value)``, ``ctx.output(tag, value)``)."""

    def __init__(self, runtime):
        super().__init__(runtime)
        self._timers = TimerService(runtime)
        self._timestamp = None

    def timestamp(self):
        return self._timestamp

    def timer_service(self):
        return self._timers

    def get_current_key(self):
        return decode_key(self._runtime.current_key())

    def current_key(self):
        return self.get_current_key()

    def output(self, output_tag, value):
        self._runtime.emit(output_tag.tag_id, value)

    def get_broadcast_state(self, descriptor):
        """PyFlink's broadcast state (a ``MapStateDescriptor``): read-only here, writable
        in ``process_broadcast_element``."""
        return self._runtime.broadcast_state(descriptor)


class OnTimerContext(Context):
    """The context of ``on_timer``: also the time domain of the timer that fired."""

    def __init__(self, runtime):
        super().__init__(runtime)
        self._domain = TimeDomain.EVENT_TIME

    def time_domain(self):
        return self._domain


class ProcessFunction:
    """PyFlink's ``ProcessFunction``: ``process_element(value, ctx)`` yields outputs."""

    def open(self, runtime_context):
        pass

    def process_element(self, value, ctx):
        raise NotImplementedError("process_element")

    def on_timer(self, timestamp, ctx):
        pass

    def close(self):
        pass

    # weir's state migration (an upgrade changed the state layout): the version of
    # this function's layout, and how to rewrite the current key's state from an older one.
    state_version = 0

    # Called only when state_version is newer than the saved state's: a function that
    # raises its state_version implements it (doing nothing if the layout did not
    # change); left out, the upgrade or restore is refused.
    def migrate(self, from_version):
        raise NotImplementedError(
            f"state_version is {self.state_version} but migrate is not implemented for state at version {from_version}"
        )

    # Called at every checkpoint and savepoint (Flink's CheckpointedFunction
    # snapshotState): write what the function keeps in memory into operator state.
    def snapshot_state(self, checkpoint_id):
        pass


class KeyedProcessFunction(ProcessFunction):
    """PyFlink's ``KeyedProcessFunction``: keyed state and timers per key."""


class CoProcessFunction(ProcessFunction):
    """PyFlink's ``CoProcessFunction``: two inputs (``input = 2`` edges in the job file),
    ``process_element1(value, ctx)`` and ``process_element2(value, ctx)``."""

    def process_element(self, value, ctx):
        return self.process_element1(value, ctx)

    def process_element1(self, value, ctx):
        raise NotImplementedError("process_element1")

    def process_element2(self, value, ctx):
        raise NotImplementedError("process_element2")


class KeyedCoProcessFunction(CoProcessFunction):
    """PyFlink's ``KeyedCoProcessFunction``: both inputs keyed, state and timers per key."""


class BroadcastProcessFunction(ProcessFunction):
    """PyFlink's ``BroadcastProcessFunction``: ``process_element(value, ctx)`` for the
    main input (broadcast state read-only through ``ctx.get_broadcast_state``) and
    ``process_broadcast_element(value, ctx)`` for the broadcast one (writable)."""

    def process_broadcast_element(self, value, ctx):
        raise NotImplementedError("process_broadcast_element")


class KeyedBroadcastProcessFunction(BroadcastProcessFunction):
    """PyFlink's ``KeyedBroadcastProcessFunction``: the main input keyed."""
