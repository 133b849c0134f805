// weir's JavaScript SDK: operators as classes, in the shape of Flink's
// KeyedProcessFunction. `build.mjs` bundles this file with the app (whose
// `import ... from '@weir/guest'` names what it uses) and builds the component with
// componentize-js against wit/operator.wit.
import { emit as __weirEmit, emitTo as __weirEmitTo } from 'weir:operator/collector@0.2.0';
import { beginElement as __weirBegin } from 'weir:operator/batch@0.2.0';
import { ValueState as __WeirValue, ListState as __WeirList, MapState as __WeirMap } from 'weir:operator/state@0.2.0';
import * as __weirTimers from 'weir:operator/timers@0.2.0';
import * as __weirContext from 'weir:operator/context@0.2.0';
import { ListState as __WeirOpList, BroadcastState as __WeirBroadcast, isRestored as __weirIsRestored } from 'weir:operator/operator-state@0.2.0';

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

/** Value state of the current key; values are JSON. */
export class ValueState {
  constructor(name, options) { this.handle = new __WeirValue(name, __weirTtl(options)); }
  value() { return __weirParse(this.handle.get()); }
  update(value) { if (value === undefined || value === null) this.handle.clear(); else this.handle.set(__weirJson(value)); }
  clear() { this.handle.clear(); }
}

/** List state of the current key; items are JSON. */
export class ListState {
  constructor(name, options) { this.handle = new __WeirList(name, __weirTtl(options)); }
  get() { return this.handle.get().map(__weirParse); }
  add(value) { this.handle.append(__weirJson(value)); }
  addAll(values) { for (const v of values) this.add(v); }
  update(values) { this.handle.clear(); this.addAll(values); }
  clear() { this.handle.clear(); }
}

/** Map state of the current key; keys and values are JSON, entries in key order. */
export class MapState {
  constructor(name, options) { this.handle = new __WeirMap(name, __weirTtl(options)); }
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
  currentKey() { const k = __weirContext.currentKey(); return k === undefined ? undefined : __weirDec.decode(k); }
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
  registerEventTimeTimer(t) { __weirTimers.register('event-time', BigInt(t)); },
  registerProcessingTimeTimer(t) { __weirTimers.register('processing-time', BigInt(t)); },
  deleteEventTimeTimer(t) { __weirTimers.delete('event-time', BigInt(t)); },
  deleteProcessingTimeTimer(t) { __weirTimers.delete('processing-time', BigInt(t)); },
  currentWatermark() { return Number(__weirTimers.currentWatermark()); },
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
  if (output === undefined) __weirEmit(event); else __weirEmitTo(output, event);
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
    open(config) { guard(() => { fn = new FunctionClass(); __weirOperator.fn = fn; fn.open(new RuntimeContext()); }); },
    processBatch(events) {
      for (let i = 0; i < events.length; i++) {
        if (!__weirBegin(i)) return i;
        const event = events[i];
        try {
          ctx.inputTimestamp = event.timestamp;
          ctx.domain = undefined;
          fn.processElement(__weirValue(event.value), ctx);
        } catch (error) {
          throw { index: i, message: __weirMessage(error) };
        }
      }
      return events.length;
    },
    onTimer(timestamp, domain) {
      guard(() => { ctx.inputTimestamp = timestamp; ctx.domain = domain; fn.onTimer(Number(timestamp), ctx); });
    },
    close() { guard(() => { ctx.inputTimestamp = undefined; fn.close(ctx); }); },
    stateVersion() { return FunctionClass.stateVersion || 0; },
    migrate(fromVersion) { guard(() => fn.migrate && fn.migrate(fromVersion)); },
  };
}
