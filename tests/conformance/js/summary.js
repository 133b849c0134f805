// The conformance suite's process window function, in JavaScript (as
// tests/guests/window-summary in Rust).
import { ProcessWindowFunction, processWindowFunction } from '@weir/guest';

class Summary extends ProcessWindowFunction {
  process(key, window, elements) {
    return [{ key, start: window.start, end: window.end, count: elements.length, values: elements }];
  }
}

export const processWindow = processWindowFunction(Summary);
