// weir's JavaScript window functions: Flink's AggregateFunction, ReduceFunction and
// ProcessWindowFunction for host-native windows (wit/window.wit). `build.mjs` bundles
// this file instead of index.js when the app exports `aggregate`, `reduce` or
// `processWindow`. Accumulators are stored by the host as JSON.
const __weirEnc = new TextEncoder();
const __weirDec = new TextDecoder();
const __weirJson = (value) => __weirEnc.encode(JSON.stringify(value));
const __weirParse = (bytes) => JSON.parse(__weirDec.decode(bytes));
function __weirValue(bytes) {
  const text = __weirDec.decode(bytes);
  try { return JSON.parse(text); } catch { return text; }
}
function __weirBytes(value) {
  if (value instanceof Uint8Array) return value;
  if (typeof value === 'string') return __weirEnc.encode(value);
  return __weirJson(value);
}
function __weirMessage(error) {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
function __weirGuard(body) {
  try { return body(); } catch (error) { throw __weirMessage(error); }
}

/** Flink's AggregateFunction. */
export class AggregateFunction {
  createAccumulator() { throw new Error('createAccumulator is not implemented'); }
  add(value, accumulator) { throw new Error('add is not implemented'); }
  getResult(accumulator) { throw new Error('getResult is not implemented'); }
  merge(a, b) { throw new Error('merge is not implemented'); }
}

/** Flink's ReduceFunction. */
export class ReduceFunction {
  reduce(a, b) { throw new Error('reduce is not implemented'); }
}

/** Flink's ProcessWindowFunction: `process(key, window, elements)` returns outputs. */
export class ProcessWindowFunction {
  process(key, window, elements) { throw new Error('process is not implemented'); }
}

/** An output with its key set. */
export class Event {
  constructor(value, { key } = {}) { this.value = value; this.key = key; }
}

/** The `aggregate` export: `export const aggregate = aggregateFunction(MyAggregate);` */
export function aggregateFunction(FunctionClass) {
  const fn = new FunctionClass();
  return {
    createAccumulator: () => __weirGuard(() => __weirJson(fn.createAccumulator())),
    add: (acc, element) => __weirGuard(() => __weirJson(fn.add(__weirValue(element.value), __weirParse(acc)))),
    merge: (a, b) => __weirGuard(() => __weirJson(fn.merge(__weirParse(a), __weirParse(b)))),
    getResult: (acc) => __weirGuard(() => __weirBytes(fn.getResult(__weirParse(acc)))),
  };
}

/** The `reduce` export: `export const reduce = reduceFunction(MyReduce);` */
export function reduceFunction(FunctionClass) {
  const fn = new FunctionClass();
  return { reduce: (a, b) => __weirGuard(() => __weirBytes(fn.reduce(__weirValue(a), __weirValue(b)))) };
}

/** The `processWindow` export: `export const processWindow = processWindowFunction(MyFunction);` */
export function processWindowFunction(FunctionClass) {
  const fn = new FunctionClass();
  return {
    process: (key, window, elements) => __weirGuard(() => {
      const w = { start: Number(window.start), end: Number(window.end) };
      const out = fn.process(__weirDec.decode(key), w, elements.map((e) => __weirValue(e.value))) || [];
      return out.map((item) => item instanceof Event
        ? { key: item.key === undefined ? undefined : __weirBytes(item.key), value: __weirBytes(item.value), timestamp: undefined, headers: [] }
        : { key: undefined, value: __weirBytes(item), timestamp: undefined, headers: [] });
    }),
  };
}
