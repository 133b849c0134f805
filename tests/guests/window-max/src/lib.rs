//! A reduce window function: keeps the element whose field `v` is largest (the
//! earlier one on ties).

use weir_guest::Result;
use weir_guest::window::ReduceFunction;

struct Largest;

impl ReduceFunction for Largest {
    type Value = serde_json::Value;

    fn reduce(a: serde_json::Value, b: serde_json::Value) -> Result<serde_json::Value> {
        let v = |x: &serde_json::Value| x["v"].as_f64().unwrap_or(f64::NEG_INFINITY);
        Ok(if v(&b) > v(&a) { b } else { a })
    }
}

weir_guest::export_reduce!(Largest);
