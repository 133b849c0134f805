//! An aggregate window function: the average of field `v` and how many elements it
//! covers. `{"fail": true}` makes `add` return an error (for error tests).

use serde::{Deserialize, Serialize};
use weir_guest::window::AggregateFunction;
use weir_guest::{Event, Result};

struct Average;

#[derive(Default, Serialize, Deserialize)]
struct Sum {
    total: f64,
    count: u64,
}

#[derive(Serialize)]
struct Output {
    avg: f64,
    count: u64,
}

impl AggregateFunction for Average {
    type Accumulator = Sum;
    type Output = Output;

    fn add(acc: &mut Sum, element: Event) -> Result<()> {
        let value: serde_json::Value = element.value_json()?;
        if value["fail"] == true {
            return Err("asked to fail".into());
        }
        acc.total += value["v"].as_f64().ok_or("`v` is not a number")?;
        acc.count += 1;
        Ok(())
    }

    fn merge(a: Sum, b: Sum) -> Result<Sum> {
        Ok(Sum { total: a.total + b.total, count: a.count + b.count })
    }

    fn get_result(acc: Sum) -> Result<Output> {
        Ok(Output { avg: acc.total / acc.count as f64, count: acc.count })
    }
}

weir_guest::export_aggregate!(Average);
