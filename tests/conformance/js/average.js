// The conformance suite's aggregate window function, in JavaScript (as
// tests/guests/window-average in Rust).
import { AggregateFunction, aggregateFunction } from '@weir/guest';

class Average extends AggregateFunction {
  createAccumulator() { return { total: 0, count: 0 }; }
  add(value, acc) {
    if (value.fail) throw new Error('asked to fail');
    return { total: acc.total + value.v, count: acc.count + 1 };
  }
  merge(a, b) { return { total: a.total + b.total, count: a.count + b.count }; }
  getResult(acc) { return { avg: acc.total / acc.count, count: acc.count }; }
}

export const aggregate = aggregateFunction(Average);
