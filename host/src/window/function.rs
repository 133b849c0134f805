//! What a window computes: built-in aggregates of a JSON field, evaluated by the host
//! (count, sum, min, max, average), with Flink's `AggregateFunction` shape:
//! create an accumulator, add an element, merge two accumulators, get the result.

use serde::{Deserialize, Serialize};

use crate::stream::Event;

/// A built-in aggregate (job file `aggregate = { builtin = "sum", field = "amount" }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Builtin {
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

impl Builtin {
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Count => "count",
            Builtin::Sum => "sum",
            Builtin::Min => "min",
            Builtin::Max => "max",
            Builtin::Avg => "avg",
        }
    }
}

/// A window's aggregate: incremental, so that a window keeps one accumulator per pane
/// instead of its elements.
pub trait Aggregate: Send {
    /// Adds `event` to `acc` (a new accumulator when `None`).
    fn add(&mut self, acc: Option<&[u8]>, event: &Event) -> Result<Vec<u8>, String>;
    /// Adds `event` to `acc` in place (`fresh`: `acc` is empty, a new accumulator).
    fn add_in_place(&mut self, acc: &mut Vec<u8>, fresh: bool, event: &Event) -> Result<(), String> {
        let next = self.add((!fresh).then_some(acc.as_slice()), event)?;
        *acc = next;
        Ok(())
    }
    /// Merges two accumulators (panes of one window, or sessions that merge).
    fn merge(&mut self, a: &[u8], b: &[u8]) -> Result<Vec<u8>, String>;
    /// The result of an accumulator, as a JSON value.
    fn result(&mut self, acc: &[u8]) -> Result<Vec<u8>, String>;
    /// The name of the result in built-in outputs (`count`, `sum`, ...).
    fn result_name(&self) -> &str;
    /// Whether the host formats the output (`{"key", "window_start", "window_end",
    /// "<name>": result}`); a guest's result is the emitted value itself, as in Flink.
    fn builtin(&self) -> bool {
        true
    }
}

/// Flink's `ProcessWindowFunction`: the events a firing window emits, from the key,
/// the window and its elements (or the one result of its aggregate).
pub trait ProcessWindow: Send {
    fn process(
        &mut self,
        key: &[u8],
        window: super::assigner::Window,
        elements: Vec<Event>,
    ) -> Result<Vec<Event>, String>;
}

/// A built-in aggregate over one field of JSON values.
pub struct BuiltinAggregate {
    pub builtin: Builtin,
    /// The field's path, split at dots (`order.amount`); empty for `count`.
    pub path: Vec<String>,
}

/// The accumulator of every built-in: element count, sum, min and max, and whether
/// every value was an integer (sums of integers print as integers, as in Flink).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Acc {
    n: u64,
    sum: f64,
    min: f64,
    max: f64,
    ints: bool,
}

impl Acc {
    const EMPTY: Acc = Acc { n: 0, sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY, ints: true };

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(33);
        self.write(&mut out);
        out
    }

    /// Writes the accumulator over `out`'s contents.
    fn write(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.n.to_be_bytes());
        for x in [self.sum, self.min, self.max] {
            out.extend_from_slice(&x.to_be_bytes());
        }
        out.push(self.ints as u8);
    }

    fn decode(bytes: &[u8]) -> Result<Acc, String> {
        if bytes.len() != 33 {
            return Err(format!("a built-in accumulator of {} bytes (expected 33): corrupt state", bytes.len()));
        }
        let word = |i: usize| <[u8; 8]>::try_from(&bytes[i * 8..i * 8 + 8]).expect("8 bytes");
        Ok(Acc {
            n: u64::from_be_bytes(word(0)),
            sum: f64::from_be_bytes(word(1)),
            min: f64::from_be_bytes(word(2)),
            max: f64::from_be_bytes(word(3)),
            ints: bytes[32] != 0,
        })
    }
}

/// Prints a number as JSON: integral values within f64's exact range as integers.
fn number(x: f64, integral: bool) -> Vec<u8> {
    if integral && x.fract() == 0.0 && x.abs() < 9.0e15 {
        format!("{}", x as i64).into_bytes()
    } else if x.is_finite() {
        serde_json::to_vec(&x).expect("finite floats serialize")
    } else {
        b"null".to_vec()
    }
}

impl BuiltinAggregate {
    pub fn new(builtin: Builtin, field: Option<&str>) -> Self {
        let path = field.map(|f| f.split('.').map(str::to_string).collect()).unwrap_or_default();
        BuiltinAggregate { builtin, path }
    }

    fn value_of(&self, event: &Event) -> Result<(f64, bool), String> {
        let json: serde_json::Value = serde_json::from_slice(&event.value)
            .map_err(|e| format!("the element is not JSON ({e}): {}", preview(&event.value)))?;
        let mut at = &json;
        for part in &self.path {
            at = at.get(part).ok_or_else(|| {
                format!("field `{}` is missing in {}", self.path.join("."), preview(&event.value))
            })?;
        }
        match at {
            serde_json::Value::Number(n) => Ok((n.as_f64().unwrap_or(f64::NAN), n.is_i64() || n.is_u64())),
            _ => Err(format!("field `{}` is not a number in {}", self.path.join("."), preview(&event.value))),
        }
    }
}

/// The start of a value, for error messages.
pub fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]);
    if bytes.len() > 120 { format!("{text}…") } else { text.into_owned() }
}

impl BuiltinAggregate {
    fn fold(&self, acc: Option<&[u8]>, event: &Event) -> Result<Acc, String> {
        let mut acc = match acc {
            Some(bytes) => Acc::decode(bytes)?,
            None => Acc::EMPTY,
        };
        acc.n += 1;
        if self.builtin != Builtin::Count {
            let (x, int) = self.value_of(event)?;
            acc.sum += x;
            acc.min = acc.min.min(x);
            acc.max = acc.max.max(x);
            acc.ints &= int;
        }
        Ok(acc)
    }
}

impl Aggregate for BuiltinAggregate {
    fn add(&mut self, acc: Option<&[u8]>, event: &Event) -> Result<Vec<u8>, String> {
        Ok(self.fold(acc, event)?.encode())
    }

    fn add_in_place(&mut self, acc: &mut Vec<u8>, fresh: bool, event: &Event) -> Result<(), String> {
        let next = self.fold((!fresh).then_some(acc.as_slice()), event)?;
        next.write(acc);
        Ok(())
    }

    fn merge(&mut self, a: &[u8], b: &[u8]) -> Result<Vec<u8>, String> {
        let (a, b) = (Acc::decode(a)?, Acc::decode(b)?);
        Ok(Acc { n: a.n + b.n, sum: a.sum + b.sum, min: a.min.min(b.min), max: a.max.max(b.max), ints: a.ints && b.ints }
            .encode())
    }

    fn result(&mut self, acc: &[u8]) -> Result<Vec<u8>, String> {
        let acc = Acc::decode(acc)?;
        Ok(match self.builtin {
            Builtin::Count => acc.n.to_string().into_bytes(),
            Builtin::Sum => number(acc.sum, acc.ints),
            Builtin::Min => number(acc.min, acc.ints),
            Builtin::Max => number(acc.max, acc.ints),
            Builtin::Avg if acc.n == 0 => b"null".to_vec(),
            Builtin::Avg => number(acc.sum / acc.n as f64, false),
        })
    }

    fn result_name(&self) -> &str {
        self.builtin.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> Event {
        Event { value: json.as_bytes().to_vec(), ..Default::default() }
    }

    fn fold(agg: &mut BuiltinAggregate, values: &[&str]) -> Vec<u8> {
        let mut acc: Option<Vec<u8>> = None;
        for v in values {
            acc = Some(agg.add(acc.as_deref(), &event(v)).unwrap());
        }
        acc.unwrap()
    }

    #[test]
    fn builtins_compute_what_they_say() {
        let values = [r#"{"o":{"a":3}}"#, r#"{"o":{"a":-1}}"#, r#"{"o":{"a":10}}"#];
        let cases = [
            (Builtin::Count, "3"),
            (Builtin::Sum, "12"),
            (Builtin::Min, "-1"),
            (Builtin::Max, "10"),
            (Builtin::Avg, "4.0"),
        ];
        for (builtin, expected) in cases {
            let mut agg = BuiltinAggregate::new(builtin, Some("o.a"));
            let acc = fold(&mut agg, &values);
            assert_eq!(String::from_utf8(agg.result(&acc).unwrap()).unwrap(), expected, "{builtin:?}");
        }
    }

    #[test]
    fn merging_accumulators_equals_adding_everything() {
        let mut agg = BuiltinAggregate::new(Builtin::Sum, Some("x"));
        let a = fold(&mut agg, &[r#"{"x":1.5}"#, r#"{"x":2}"#]);
        let b = fold(&mut agg, &[r#"{"x":4}"#]);
        let merged = agg.merge(&a, &b).unwrap();
        assert_eq!(agg.result(&merged).unwrap(), b"7.5");
        let all = fold(&mut agg, &[r#"{"x":1.5}"#, r#"{"x":2}"#, r#"{"x":4}"#]);
        assert_eq!(merged, all);
    }

    #[test]
    fn bad_elements_say_what_is_wrong() {
        let mut agg = BuiltinAggregate::new(Builtin::Sum, Some("amount"));
        let missing = agg.add(None, &event(r#"{"amt":1}"#)).unwrap_err();
        assert!(missing.contains("field `amount` is missing"), "{missing}");
        let text = agg.add(None, &event(r#"{"amount":"12"}"#)).unwrap_err();
        assert!(text.contains("not a number"), "{text}");
        let garbage = agg.add(None, &event("not json")).unwrap_err();
        assert!(garbage.contains("not JSON"), "{garbage}");
        assert!(agg.result(b"short").is_err());
    }
}

/// Which window function a component provides (its world).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionKind {
    Aggregate,
    Reduce,
    Process,
}

impl FunctionKind {
    pub fn world(self) -> &'static str {
        match self {
            FunctionKind::Aggregate => "aggregate-function",
            FunctionKind::Reduce => "reduce-function",
            FunctionKind::Process => "process-window-function",
        }
    }
}
