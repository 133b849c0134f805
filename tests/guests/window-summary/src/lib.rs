//! A process window function: one summary per window firing, with the key, the
//! window, how many elements it got and their values in order (for a window with an
//! aggregate, the one value is the aggregate's result).

use serde::Serialize;
use weir_guest::window::{ProcessWindowFunction, Window};
use weir_guest::{Event, Result};

struct Summary;

#[derive(Serialize)]
struct Out<'a> {
    key: &'a str,
    start: i64,
    end: i64,
    count: usize,
    values: Vec<serde_json::Value>,
}

impl ProcessWindowFunction for Summary {
    fn process(key: &[u8], window: Window, elements: Vec<Event>) -> Result<Vec<Event>> {
        let mut values = Vec::with_capacity(elements.len());
        for e in &elements {
            values.push(e.value_json()?);
        }
        let key = String::from_utf8_lossy(key);
        let out = Out { key: &key, start: window.start, end: window.end, count: elements.len(), values };
        Ok(vec![Event::json(&out)?])
    }
}

weir_guest::export_process_window!(Summary);
