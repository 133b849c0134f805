// weir's JavaScript SDK: operators as classes, in the shape of Flink's
// KeyedProcessFunction. `build.mjs` bundles this file with the app (whose
// `import ... from '@weir/guest'` names what it uses) and builds the component with
// componentize-js against wit/v0.3/operator.wit (contract 0.3: a batch crosses the
// boundary once, as flat buffers; what it emits comes back in the call's result; value
// states made in `open` travel with the batch).
import { emit as __weirEmit, emitTo as __weirEmitTo } from 'weir:operator/collector@0.3.0';
import { load as __weirLoad, focus as __weirFocusAt } from 'weir:operator/batch@0.3.0';
import { ValueState as __WeirValue, ListState as __WeirList, MapState as __WeirMap } from 'weir:operator/state@0.3.0';
import * as __weirTimers from 'weir:operator/timers@0.3.0';
import * as __weirContext from 'weir:operator/context@0.3.0';
import { ListState as __WeirOpList, BroadcastState as __WeirBroadcast, isRestored as __weirIsRestored } from 'weir:operator/operator-state@0.3.0';

const __weirEnc = new TextEncoder();
const __weirDec = new TextDecoder();

function __weirJson(value) {
  return __weirEnc.encode(JSON.stringify(value));
}

function __weirParse(bytes) {
  return bytes === undefined ? undefined : JSON.parse(__weirDec.decode(bytes));
}

/** An element's value: parsed JSON, or its text when it is not JSON. */
function __weirValue(bytes) {
  const text = __weirDec.decode(bytes);
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** What an emitted value becomes: bytes as is, strings as UTF-8, the rest as JSON. */
function __weirBytes(value) {
  if (value instanceof Uint8Array) return value;
  if (typeof value === 'string') return __weirEnc.encode(value);
  return __weirJson(value);
}

function __weirTtl(options) {
  if (!options || !options.ttlMs) return undefined;
  return { ttlMs: BigInt(options.ttlMs), refreshOnRead: !!options.refreshOnRead };
}

/** Value state of the current key; values are JSON. Made in `open`, it travels with each batch. */
export class ValueState {
  constructor(name, options) {
    this.handle = new __WeirValue(name, __weirTtl(options));
    this.slot = undefined;
    if (__weirBatch.opening) __weirBatch.created.push(this);
  }
  value() {
    const copy = this.__copy();
    if (copy === undefined) { __weirFocus(); return __weirParse(this.handle.get()); }
    const [slots, k] = copy;
    const held = slots.held[k];
    if (held === 0) { slots.read[k] = 1; return __weirLoadedValue(slots, k); }
    return held === 1 ? JSON.parse(slots.json[k]) : undefined;
  }
  update(value) {
    if (value === undefined || value === null) { this.clear(); return; }
    const copy = this.__copy();
    if (copy === undefined) { __weirFocus(); this.handle.set(__weirJson(value)); return; }
    const [slots, k] = copy;
    slots.held[k] = 1;
    slots.json[k] = JSON.stringify(value);
  }
  clear() {
    const copy = this.__copy();
    if (copy === undefined) { __weirFocus(); this.handle.clear(); return; }
    const [slots, k] = copy;
    slots.held[k] = 2;
  }
  /** The batch's copy of this state for the current element's key, when there is one. */
  __copy() {
    const b = __weirBatch;
    if (!b.active || this.slot === undefined) return undefined;
    const k = b.keySlots[b.index];
    return k === 0xffffffff ? undefined : [b.slots[this.slot], k];
  }
}

/** List state of the current key; items are JSON. */
export class ListState {
  constructor(name, options) { this.handle = new __WeirList(name, __weirTtl(options)); }
  get() { __weirFocus(); return this.handle.get().map(__weirParse); }
  add(value) { __weirFocus(); this.handle.append(__weirJson(value)); }
  addAll(values) { for (const v of values) this.add(v); }
  update(values) { __weirFocus(); this.handle.clear(); this.addAll(values); }
  clear() { __weirFocus(); this.handle.clear(); }
}

/** Map state of the current key; keys and values are JSON, entries in key order. */
export class MapState {
  constructor(name, options) { this.handle = new __WeirMap(name, __weirTtl(options)); }
  get handle() { __weirFocus(); return this._handle; }
  set handle(h) { this._handle = h; }
  get(key) { return __weirParse(this.handle.get(__weirJson(key))); }
  put(key, value) { this.handle.put(__weirJson(key), __weirJson(value)); }
  remove(key) { this.handle.remove(__weirJson(key)); }
  contains(key) { return this.handle.contains(__weirJson(key)); }
  entries() { return this.handle.entries().map(([k, v]) => [__weirParse(k), __weirParse(v)]); }
  keys() { return this.handle.keys().map(__weirParse); }
  values() { return this.entries().map(([, v]) => v); }
  isEmpty() { return this.handle.isEmpty(); }
  clear() { this.handle.clear(); }
}

/**
 * Operator list state: this subtask's, not a key's (Flink's CheckpointedFunction); items
 * are JSON. Split among the subtasks on rescale, or whole to every one with `union`.
 */
export class OperatorListState {
  constructor(name, { union } = {}) { this.handle = new __WeirOpList(name, union ? 'union' : 'split'); }
  get() { return this.handle.get().map(__weirParse); }
  add(value) { this.handle.add(__weirJson(value)); }
  addAll(values) { for (const v of values) this.add(v); }
  update(values) { this.handle.update(values.map(__weirJson)); }
  clear() { this.handle.clear(); }
}

/**
 * Broadcast state (Flink's): the same map on every subtask; keys and values are JSON.
 * Writable in processBroadcastElement only; elsewhere the host refuses writes.
 */
export class BroadcastState {
  constructor(name) { this.handle = new __WeirBroadcast(name); }
  get(key) { return __weirParse(this.handle.get(__weirJson(key))); }
  contains(key) { return this.handle.contains(__weirJson(key)); }
  entries() { return this.handle.entries().map(([k, v]) => [__weirParse(k), __weirParse(v)]); }
  put(key, value) { this.handle.put(__weirJson(key), __weirJson(value)); }
  remove(key) { this.handle.remove(__weirJson(key)); }
  clear() { this.handle.clear(); }
}

const __weirBroadcastStates = new Map();

/** An output with its key, timestamp or headers set (a plain value has none of them). */
export class Event {
  constructor(value, { key, timestamp, headers } = {}) {
    this.value = value;
    this.key = key;
    this.timestamp = timestamp;
    this.headers = headers || [];
  }
}

/** A named side output (an edge with `output = "<id>"`), as Flink's OutputTag. */
export class OutputTag {
  constructor(id) { this.id = id; }
}

export const TimeDomain = Object.freeze({ EVENT_TIME: 'event-time', PROCESSING_TIME: 'processing-time' });

/** The context of processElement and onTimer. */
class Context {
  constructor() { this.inputTimestamp = undefined; this.domain = undefined; }
  /** The element's (or timer's) time in ms. */
  timestamp() { return this.inputTimestamp === undefined ? undefined : Number(this.inputTimestamp); }
  /** The current key as text. */
  currentKey() {
    const b = __weirBatch;
    if (b.active) {
      const e = b.events;
      if (!(e.flags[b.index] & 1)) return undefined;
      return __weirDec.decode(e.keys.subarray(b.index === 0 ? 0 : e.keyEnds[b.index - 1], e.keyEnds[b.index]));
    }
    const k = __weirContext.currentKey();
    return k === undefined ? undefined : __weirDec.decode(k);
  }
  timeDomain() { return this.domain; }
  timerService() { return __weirTimerService; }
  /** Broadcast state `name` (read-only but in processBroadcastElement). */
  getBroadcastState(name) {
    if (!__weirBroadcastStates.has(name)) __weirBroadcastStates.set(name, new BroadcastState(name));
    return __weirBroadcastStates.get(name);
  }
  collect(value) { __weirSend(undefined, value, this.inputTimestamp); }
  output(tag, value) { __weirSend(tag.id, value, this.inputTimestamp); }
}

const __weirTimerService = {
  registerEventTimeTimer(t) {
    __weirFocus();
    __weirTimers.register('event-time', BigInt(t));
    if (__weirBatch.active) __weirBatch.timerRegistered = true;
  },
  registerProcessingTimeTimer(t) { __weirFocus(); __weirTimers.register('processing-time', BigInt(t)); },
  deleteEventTimeTimer(t) { __weirFocus(); __weirTimers.delete('event-time', BigInt(t)); },
  deleteProcessingTimeTimer(t) { __weirFocus(); __weirTimers.delete('processing-time', BigInt(t)); },
  currentWatermark() { __weirFocus(); return Number(__weirTimers.currentWatermark()); },
  currentProcessingTime() { return Number(__weirTimers.currentProcessingTime()); },
};

function __weirSend(output, value, inputTimestamp) {
  let event;
  if (value instanceof Event) {
    const key = value.key === undefined ? undefined : __weirBytes(value.key);
    const headers = value.headers.map(([name, v]) => ({ name, value: __weirBytes(v) }));
    const timestamp = value.timestamp === undefined ? undefined : BigInt(value.timestamp);
    event = { key, value: __weirBytes(value.value), timestamp, headers };
  } else {
    event = { key: undefined, value: __weirBytes(value), timestamp: inputTimestamp, headers: [] };
  }
  if (__weirBatch.active) __weirGather(output, event); else if (output === undefined) __weirEmit(event); else __weirEmitTo(output, event);
}

// ---- Contract 0.3's flat batches ----

/** The batch being processed, the loaded states' copies, and what it emitted. */
const __weirBatch = {
  active: false, opening: false, created: [], loaded: [],
  events: undefined, keySlots: undefined, index: 0, focused: -1, timerRegistered: false,
  slots: [], out: undefined, elementEmits: 0, elementBytes: 0,
};

/** The most one element may emit (the contract's limit). */
const __WEIR_MAX_EMITS = 100000;
const __WEIR_MAX_EMIT_BYTES = 64 << 20;

/** Makes the current element current on the host's side, before a keyed host call. */
function __weirFocus() {
  const b = __weirBatch;
  if (b.active && b.focused !== b.index) { __weirFocusAt(b.index); b.focused = b.index; }
}

/** A loaded value as JSON, from the batch's buffers. */
function __weirLoadedValue(slots, k) {
  const l = slots.values;
  if (!l.present[k]) return undefined;
  return JSON.parse(__weirDec.decode(l.values.subarray(k === 0 ? 0 : l.ends[k - 1], l.ends[k])));
}

/** A growable byte buffer. */
class __WeirBytes {
  constructor() { this.buf = new Uint8Array(4096); this.len = 0; }
  push(bytes) {
    if (this.len + bytes.length > this.buf.length) {
      let size = this.buf.length * 2;
      while (size < this.len + bytes.length) size *= 2;
      const grown = new Uint8Array(size);
      grown.set(this.buf.subarray(0, this.len));
      this.buf = grown;
    }
    this.buf.set(bytes, this.len);
    this.len += bytes.length;
  }
  take() { return this.buf.slice(0, this.len); }
}

function __weirNewOut() {
  return { flags: [], keys: new __WeirBytes(), keyEnds: [], values: new __WeirBytes(), valueEnds: [], timestamps: [], headers: [], elements: [], ports: [], outputs: [] };
}

/** Gathers an emitted event into the batch's result. */
function __weirGather(output, event) {
  const b = __weirBatch;
  const o = b.out;
  let port = 0;
  if (output !== undefined) {
    let at = o.outputs.indexOf(output);
    if (at < 0) { o.outputs.push(output); at = o.outputs.length - 1; }
    port = at + 1;
  }
  b.elementEmits += 1;
  b.elementBytes += (event.key ? event.key.length : 0) + event.value.length;
  if (b.elementEmits > __WEIR_MAX_EMITS || b.elementBytes > __WEIR_MAX_EMIT_BYTES) {
    throw new Error(`one element emitted more than ${__WEIR_MAX_EMITS} events or ${__WEIR_MAX_EMIT_BYTES} bytes, the contract's limit (a runaway loop?)`);
  }
  let flags = 0;
  if (event.key !== undefined) { flags |= 1; o.keys.push(event.key); }
  o.keyEnds.push(o.keys.len);
  o.values.push(event.value);
  o.valueEnds.push(o.values.len);
  if (event.timestamp !== undefined) flags |= 2;
  o.timestamps.push(event.timestamp === undefined ? 0n : event.timestamp);
  for (const header of event.headers) o.headers.push({ element: o.flags.length, header });
  o.flags.push(flags);
  o.elements.push(b.index);
  o.ports.push(port);
}

/** The value states made while the operator opened travel with every batch. */
function __weirLoadCreated() {
  const b = __weirBatch;
  for (const state of b.created) { state.slot = __weirLoad(state.handle); b.loaded.push(state); }
  b.created = [];
}

/** The updates of one loaded state, per distinct key. */
function __weirUpdates(slots) {
  const keys = slots.held.length;
  const ops = new Array(keys);
  const bytes = new __WeirBytes();
  const ends = new Uint32Array(keys);
  for (let k = 0; k < keys; k++) {
    const held = slots.held[k];
    if (held === 1) { bytes.push(__weirEnc.encode(slots.json[k])); ops[k] = 'set'; }
    else if (held === 2) ops[k] = 'clear';
    else ops[k] = slots.read[k] ? 'read' : 'untouched';
    ends[k] = bytes.len;
  }
  return { ops, values: bytes.take(), ends };
}

/** Runs `process(value, index)` over the batch's elements and gathers the result. */
function __weirRunBatch(batch, ctx, process) {
  const b = __weirBatch;
  const events = batch.events;
  const count = events.flags.length;
  const keys = batch.loaded.length ? batch.loaded[0].present.length : 0;
  b.events = events;
  b.keySlots = batch.keySlots;
  b.slots = batch.loaded.map((values) => ({ values, held: new Uint8Array(keys), read: new Uint8Array(keys), json: new Array(keys) }));
  b.out = __weirNewOut();
  b.focused = -1;
  b.timerRegistered = false;
  b.active = true;
  let processed = count;
  let error;
  try {
    for (let i = 0; i < count; i++) {
      b.index = i;
      b.elementEmits = 0;
      b.elementBytes = 0;
      if (b.timerRegistered) {
        b.focused = i;
        if (!__weirFocusAt(i)) { processed = i; break; }
      }
      const value = events.values.subarray(i === 0 ? 0 : events.valueEnds[i - 1], events.valueEnds[i]);
      ctx.inputTimestamp = (events.flags[i] & 2) ? events.timestamps[i] : undefined;
      ctx.domain = undefined;
      try {
        process(value, i);
      } catch (e) {
        processed = i;
        error = { index: i, message: __weirMessage(e) };
        break;
      }
    }
  } finally {
    b.active = false;
  }
  const o = b.out;
  b.out = undefined;
  return {
    processed,
    error,
    emitted: {
      events: {
        flags: Uint8Array.from(o.flags),
        keys: o.keys.take(),
        keyEnds: Uint32Array.from(o.keyEnds),
        values: o.values.take(),
        valueEnds: Uint32Array.from(o.valueEnds),
        timestamps: BigInt64Array.from(o.timestamps),
        headers: o.headers,
      },
      elements: Uint32Array.from(o.elements),
      ports: Uint32Array.from(o.ports),
      outputs: o.outputs,
    },
    updates: b.slots.map(__weirUpdates),
  };
}

/** The runtime context given to `open`: state handles, the subtask, the config. */
class RuntimeContext {
  getState(name, options) { return new ValueState(name, options); }
  getListState(name, options) { return new ListState(name, options); }
  getMapState(name, options) { return new MapState(name, options); }
  /** Operator list state (split on rescale), and union list state (whole to every subtask). */
  getOperatorListState(name) { return new OperatorListState(name); }
  getUnionListState(name) { return new OperatorListState(name, { union: true }); }
  /** Whether the operator state came from a checkpoint or savepoint. */
  isRestored() { return __weirIsRestored(); }
  subtaskIndex() { return __weirContext.subtaskIndex(); }
  parallelism() { return __weirContext.parallelism(); }
  operatorUid() { return __weirContext.operatorUid(); }
  /** The operator's `config` entry (a string), or `fallback`. */
  config(key, fallback) { const found = __weirContext.config().find(([k]) => k === key); return found ? found[1] : fallback; }
}

/**
 * Flink's KeyedProcessFunction: override processElement (and onTimer). Also
 * `snapshotState(checkpointId)`, called at every checkpoint to write what the function
 * keeps in memory into operator state, and `close(ctx)`, which may still emit.
 */
export class KeyedProcessFunction {
  open(runtimeContext) {}
  processElement(value, ctx) { throw new Error('processElement is not implemented'); }
  onTimer(timestamp, ctx) {}
  snapshotState(checkpointId) {}
  close(ctx) {}
}

/** Flink's ProcessFunction (no keyed state or timers). */
export class ProcessFunction extends KeyedProcessFunction {}

/** Flink's (Keyed)CoProcessFunction: processElement1 and processElement2, for `input = 2` edges. */
export class CoProcessFunction extends KeyedProcessFunction {
  processElement(value, ctx) { return this.processElement1(value, ctx); }
  processElement1(value, ctx) { throw new Error('processElement1 is not implemented'); }
  processElement2(value, ctx) { throw new Error('processElement2 is not implemented'); }
}
export class KeyedCoProcessFunction extends CoProcessFunction {}

/** Flink's (Keyed)BroadcastProcessFunction: processElement and processBroadcastElement. */
export class KeyedBroadcastProcessFunction extends KeyedProcessFunction {
  processBroadcastElement(value, ctx) { throw new Error('processBroadcastElement is not implemented'); }
}
export class BroadcastProcessFunction extends KeyedBroadcastProcessFunction {}

/** A thrown value as an operator error message (an Error's name, message and place). */
function __weirMessage(error) {
  if (error instanceof Error) {
    const where = (error.stack || '').split('\n').find((l) => l.includes('at ')) || '';
    return `${error.name}: ${error.message}${where ? ` (${where.trim()})` : ''}`;
  }
  return String(error);
}

/** The operator the component exports: its function object, context and error guard. */
const __weirOperator = { fn: undefined, ctx: new Context(), name: '' };

function __weirGuard(body) {
  try {
    return body();
  } catch (error) {
    throw __weirMessage(error);
  }
}

/** The second input (the `co-handler` export of the `co-operator` world). */
export const coHandler = {
  processElement2(event) {
    const { fn, ctx } = __weirOperator;
    const second = fn.processBroadcastElement || fn.processElement2;
    if (typeof second !== 'function') {
      throw `${__weirOperator.name} takes one input, but an element arrived on input 2 (extend CoProcessFunction or KeyedBroadcastProcessFunction)`;
    }
    __weirGuard(() => { ctx.inputTimestamp = event.timestamp; ctx.domain = undefined; second.call(fn, __weirValue(event.value), ctx); });
  },
};

/** The checkpoint hook (the `checkpointed` export). */
export const checkpointed = {
  snapshotState(checkpointId) { __weirGuard(() => __weirOperator.fn.snapshotState && __weirOperator.fn.snapshotState(Number(checkpointId))); },
};

/** The `handler` export for an operator class: `export const handler = operator(MyFunction);` */
export function operator(FunctionClass) {
  let fn;
  const ctx = __weirOperator.ctx;
  __weirOperator.name = FunctionClass.name;
  const guard = __weirGuard;
  return {
    open(config) {
      guard(() => {
        __weirBatch.opening = true;
        try {
          fn = new FunctionClass();
          __weirOperator.fn = fn;
          fn.open(new RuntimeContext());
        } finally {
          __weirBatch.opening = false;
        }
        __weirLoadCreated();
      });
    },
    processBatch(batch) {
      return __weirRunBatch(batch, ctx, (value) => fn.processElement(__weirValue(value), ctx));
    },
    onTimer(timestamp, domain) {
      guard(() => { ctx.inputTimestamp = timestamp; ctx.domain = domain; fn.onTimer(Number(timestamp), ctx); });
    },
    close() { guard(() => { ctx.inputTimestamp = undefined; fn.close(ctx); }); },
    stateVersion() { return FunctionClass.stateVersion || 0; },
    migrate(fromVersion) {
      guard(() => {
        // Called only when stateVersion is newer than the saved state's: a class that
        // raises its stateVersion implements migrate (empty if the layout did not change).
        if (!fn.migrate) {
          throw new Error(`stateVersion is ${FunctionClass.stateVersion || 0} but migrate is not implemented for state at version ${fromVersion}`);
        }
        fn.migrate(fromVersion);
      });
    },
  };
}
