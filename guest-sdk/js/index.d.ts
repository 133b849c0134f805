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
}

/** Flink's KeyedProcessFunction. Throwing (an Error or anything else) is a clean operator error. */
export class KeyedProcessFunction {
  /** The version of the state layout; a restore from an older one calls `migrate`. */
  static stateVersion?: number;
  open(runtimeContext: RuntimeContext): void;
  /** `value` is the element's JSON, or its text when it is not JSON. */
  processElement(value: any, ctx: Context): void;
  onTimer(timestamp: number, ctx: Context): void;
  close(): void;
  migrate?(fromVersion: number): void;
}

/** The `handler` export of an operator component: `export const handler = operator(MyFunction);` */
export function operator(functionClass: new () => KeyedProcessFunction): unknown;
