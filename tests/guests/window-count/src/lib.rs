//! An aggregate window function that counts elements: the Wasm side of the window
//! benchmark, the peer of Flink's count `AggregateFunction` in bench/flink/WindowBench.java.

use weir_guest::window::AggregateFunction;
use weir_guest::{Event, Result};

struct Count;

impl AggregateFunction for Count {
    type Accumulator = u64;
    type Output = u64;

    fn add(acc: &mut u64, _: Event) -> Result<()> {
        *acc += 1;
        Ok(())
    }

    fn merge(a: u64, b: u64) -> Result<u64> {
        Ok(a + b)
    }

    fn get_result(acc: u64) -> Result<u64> {
        Ok(acc)
    }
}

weir_guest::export_aggregate!(Count);
