// Types of weir's JavaScript SDK (`@weir/guest`).

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export interface StateOptions {
  /** Time to live in ms (Flink's StateTtlConfig); expired values are never returned. */
  ttlMs?: number;
  /** Reads extend the time to live too (OnReadAndWrite). */
  refreshOnRead?: boolean;
}

export class ValueState<T = Json> {
  constructor(name: string, options?: StateOptions);
  value(): T | undefined;
  update(value: T | undefined | null): void;
  clear(): void;
}

export class ListState<T = Json> {
  constructor(name: string, options?: StateOptions);
  get(): T[];
  add(value: T): void;
  addAll(values: Iterable<T>): void;
  update(values: Iterable<T>): void;
  clear(): void;
}

export class MapState<K = Json, V = Json> {
  constructor(name: string, options?: StateOptions);
  get(key: K): V | undefined;
  put(key: K, value: V): void;
  remove(key: K): void;
  contains(key: K): boolean;
  /** Entries in key order. */
  entries(): [K, V][];
  keys(): K[];
  values(): V[];
  isEmpty(): boolean;
  clear(): void;
}

/** An output with its key, timestamp (ms) or headers set. */
export class Event {
  constructor(value: unknown, options?: { key?: string | Uint8Array; timestamp?: number; headers?: [string, unknown][] });
}

/** A named side output: an edge with `output = "<id>"`. */
export class OutputTag {
  constructor(id: string);
  readonly id: string;
}

export const TimeDomain: { readonly EVENT_TIME: 'event-time'; readonly PROCESSING_TIME: 'processing-time' };

export interface TimerService {
  registerEventTimeTimer(timestamp: number): void;
  registerProcessingTimeTimer(timestamp: number): void;
  deleteEventTimeTimer(timestamp: number): void;
  deleteProcessingTimeTimer(timestamp: number): void;
  currentWatermark(): number;
  currentProcessingTime(): number;
}

export interface Context {
  /** The element's (or the timer's) time in ms. */
  timestamp(): number | undefined;
  /** The current key as text. */
  currentKey(): string | undefined;
  /** In onTimer: the domain of the timer that fired. */
  timeDomain(): 'event-time' | 'processing-time' | undefined;
  timerService(): TimerService;
  /** Emits to the main output: strings as text, Uint8Arrays as bytes, the rest as JSON. */
  collect(value: unknown): void;
  /** Emits to a side output. */
  output(tag: OutputTag, value: unknown): void;
  /** Broadcast state `name`: writable in processBroadcastElement only. */
  getBroadcastState<K = Json, V = Json>(name: string): BroadcastState<K, V>;
}

/** Operator list state: this subtask's, split on rescale (or whole to every subtask: union). */
export class OperatorListState<T = Json> {
  get(): T[];
  add(value: T): void;
  addAll(values: T[]): void;
  update(values: T[]): void;
  clear(): void;
}

/** Broadcast state: the same map on every subtask; writes only from the broadcast input. */
export class BroadcastState<K = Json, V = Json> {
  get(key: K): V | undefined;
  contains(key: K): boolean;
  entries(): [K, V][];
  put(key: K, value: V): void;
  remove(key: K): void;
  clear(): void;
}

export interface RuntimeContext {
  getState<T = Json>(name: string, options?: StateOptions): ValueState<T>;
  getListState<T = Json>(name: string, options?: StateOptions): ListState<T>;
  getMapState<K = Json, V = Json>(name: string, options?: StateOptions): MapState<K, V>;
  subtaskIndex(): number;
  parallelism(): number;
  operatorUid(): string;
  /** The operator's `config` entry, or `fallback`. */
  config(key: string, fallback?: string): string | undefined;
  getOperatorListState<T = Json>(name: string): OperatorListState<T>;
  getUnionListState<T = Json>(name: string): OperatorListState<T>;
  /** Whether the operator state came from a checkpoint or savepoint. */
  isRestored(): boolean;
}

/** Flink's KeyedProcessFunction. Throwing (an Error or anything else) is a clean operator error. */
export class KeyedProcessFunction {
  /** The version of the state layout; a restore from an older one calls `migrate`. */
  static stateVersion?: number;
  open(runtimeContext: RuntimeContext): void;
  /** `value` is the element's JSON, or its text when it is not JSON. */
  processElement(value: any, ctx: Context): void;
  onTimer(timestamp: number, ctx: Context): void;
  /** At every checkpoint: write what the function keeps in memory into operator state. */
  snapshotState(checkpointId: number): void;
  /** After the input ended; may still emit through `ctx`. */
  close(ctx: Context): void;
  migrate?(fromVersion: number): void;
}

export class ProcessFunction extends KeyedProcessFunction {}

/** Flink's CoProcessFunction: two inputs (`input = 2` edges). */
export class CoProcessFunction extends KeyedProcessFunction {
  processElement1(value: any, ctx: Context): void;
  processElement2(value: any, ctx: Context): void;
}
export class KeyedCoProcessFunction extends CoProcessFunction {}

/** Flink's KeyedBroadcastProcessFunction: the main input and a broadcast one. */
export class KeyedBroadcastProcessFunction extends KeyedProcessFunction {
  processBroadcastElement(value: any, ctx: Context): void;
}
export class BroadcastProcessFunction extends KeyedBroadcastProcessFunction {}

/** The `handler` export of an operator component: `export const handler = operator(MyFunction);` */
export function operator(functionClass: new () => KeyedProcessFunction): unknown;
