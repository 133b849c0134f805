//! Window functions for weir's host-native window operators (`wit/window.wit`), as
//! Flink's `AggregateFunction`, `ReduceFunction` and `ProcessWindowFunction`. The host
//! assigns elements to windows, keeps window state and fires windows; these compute
//! what a window emits. A component exports exactly one of them.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use weir_guest::{Event, Result};
//! use weir_guest::window::AggregateFunction;
//!
//! /// The average of a JSON field `latency_ms`, with how many elements it covers.
//! struct AverageLatency;
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Sum { total: f64, count: u64 }
//!
//! #[derive(Serialize)]
//! struct Average { avg: f64, count: u64 }
//!
//! impl AggregateFunction for AverageLatency {
//!     type Accumulator = Sum;
//!     type Output = Average;
//!     fn add(acc: &mut Sum, element: Event) -> Result<()> {
//!         let v: serde_json::Value = element.value_json()?;
//!         acc.total += v["latency_ms"].as_f64().ok_or("latency_ms is not a number")?;
//!         acc.count += 1;
//!         Ok(())
//!     }
//!     fn merge(a: Sum, b: Sum) -> Result<Sum> {
//!         Ok(Sum { total: a.total + b.total, count: a.count + b.count })
//!     }
//!     fn get_result(acc: Sum) -> Result<Average> {
//!         Ok(Average { avg: acc.total / acc.count as f64, count: acc.count })
//!     }
//! }
//!
//! weir_guest::export_aggregate!(AverageLatency);
//! ```
//!
//! Accumulators and reduced values are stored by the host as JSON (serde), so they
//! survive checkpoints, restores and upgrades of the component.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Event, Result};

/// A window: `[start, end)` in ms since the Unix epoch. Global and count windows are
/// `[i64::MIN, i64::MAX)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

impl Window {
    /// The largest timestamp in the window (`end - 1`), the timestamp of its output.
    pub fn max_timestamp(&self) -> i64 {
        if self.end == i64::MAX { i64::MAX } else { self.end - 1 }
    }
}

/// Flink's `AggregateFunction`: adds elements to an accumulator one at a time; the
/// host merges accumulators (panes of sliding windows, merging sessions) and asks for
/// the result when the window fires. The result is the value of the emitted event.
pub trait AggregateFunction: 'static {
    /// What a window keeps; `Default` is the empty accumulator.
    type Accumulator: Serialize + DeserializeOwned + Default;
    /// What a window emits, encoded as JSON.
    type Output: Serialize;

    fn add(acc: &mut Self::Accumulator, element: Event) -> Result<()>;
    fn merge(a: Self::Accumulator, b: Self::Accumulator) -> Result<Self::Accumulator>;
    fn get_result(acc: Self::Accumulator) -> Result<Self::Output>;
}

/// Flink's `ReduceFunction`: combines two element values into one of the same type;
/// the window emits the last combined value.
pub trait ReduceFunction: 'static {
    /// The elements' values, decoded from JSON.
    type Value: Serialize + DeserializeOwned;

    fn reduce(a: Self::Value, b: Self::Value) -> Result<Self::Value>;
}

/// Flink's `ProcessWindowFunction`: called when a window fires, with the window's key,
/// the window and its elements (or the one result of the window's aggregate or reduce
/// function). Events it returns get the window's key when they have none, and the
/// window's max timestamp.
pub trait ProcessWindowFunction: 'static {
    fn process(key: &[u8], window: Window, elements: Vec<Event>) -> Result<Vec<Event>>;
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> std::result::Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("cannot decode the {what} ({e})"))
}

fn encode<T: Serialize>(value: &T, what: &str) -> std::result::Result<Vec<u8>, String> {
    serde_json::to_vec(value).map_err(|e| format!("cannot encode the {what} ({e})"))
}

/// Support for the export macros; not a public API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    pub fn create<A: AggregateFunction>() -> std::result::Result<Vec<u8>, String> {
        encode(&A::Accumulator::default(), "accumulator")
    }

    pub fn add<A: AggregateFunction>(acc: Vec<u8>, element: Event) -> std::result::Result<Vec<u8>, String> {
        let mut acc: A::Accumulator = decode(&acc, "accumulator")?;
        A::add(&mut acc, element).map_err(|e| e.to_string())?;
        encode(&acc, "accumulator")
    }

    pub fn merge<A: AggregateFunction>(a: Vec<u8>, b: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
        let merged = A::merge(decode(&a, "accumulator")?, decode(&b, "accumulator")?).map_err(|e| e.to_string())?;
        encode(&merged, "accumulator")
    }

    pub fn get_result<A: AggregateFunction>(acc: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
        let result = A::get_result(decode(&acc, "accumulator")?).map_err(|e| e.to_string())?;
        encode(&result, "result")
    }

    pub fn reduce<R: ReduceFunction>(a: Vec<u8>, b: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
        let reduced = R::reduce(decode(&a, "value")?, decode(&b, "value")?).map_err(|e| e.to_string())?;
        encode(&reduced, "value")
    }

    pub fn process<P: ProcessWindowFunction>(
        key: Vec<u8>,
        start: i64,
        end: i64,
        elements: Vec<Event>,
    ) -> std::result::Result<Vec<Event>, String> {
        P::process(&key, Window { start, end }, elements).map_err(|e| e.to_string())
    }
}

/// The raw bindings of the window function worlds; public for the export macros.
#[doc(hidden)]
pub mod bindings {
    /// The event types of the window worlds (`weir:operator/types@0.2.0`): the SDK's own
    /// (contract 0.3's), which have the same shape.
    pub mod event_types {
        pub use crate::bindings::weir::operator::types::{Event, Header, TimeDomain};
    }
    pub mod aggregate {
        wit_bindgen::generate!({
            path: "../wit",
            world: "aggregate-function",
            pub_export_macro: true,
            export_macro_name: "__export_aggregate_world",
            default_bindings_module: "weir_guest::window::bindings::aggregate",
            runtime_path: "weir_guest::__private::wit_bindgen::rt",
            with: { "weir:operator/types@0.2.0": crate::window::bindings::event_types },
        });
    }
    pub mod reduce {
        wit_bindgen::generate!({
            path: "../wit",
            world: "reduce-function",
            pub_export_macro: true,
            export_macro_name: "__export_reduce_world",
            default_bindings_module: "weir_guest::window::bindings::reduce",
            runtime_path: "weir_guest::__private::wit_bindgen::rt",
        });
    }
    pub mod process {
        wit_bindgen::generate!({
            path: "../wit",
            world: "process-window-function",
            pub_export_macro: true,
            export_macro_name: "__export_process_world",
            default_bindings_module: "weir_guest::window::bindings::process",
            runtime_path: "weir_guest::__private::wit_bindgen::rt",
            with: { "weir:operator/types@0.2.0": crate::window::bindings::event_types },
        });
    }
}

/// Exports an [`AggregateFunction`] as the component's `aggregate-function` world.
#[macro_export]
macro_rules! export_aggregate {
    ($function:ty) => {
        const _: () = {
            struct Exported;
            impl $crate::window::bindings::aggregate::exports::weir::operator::aggregate::Guest for Exported {
                fn create_accumulator() -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    $crate::window::__private::create::<$function>()
                }
                fn add(
                    accumulator: ::std::vec::Vec<u8>,
                    element: $crate::Event,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    $crate::window::__private::add::<$function>(accumulator, element)
                }
                fn merge(
                    a: ::std::vec::Vec<u8>,
                    b: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    $crate::window::__private::merge::<$function>(a, b)
                }
                fn get_result(
                    accumulator: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    $crate::window::__private::get_result::<$function>(accumulator)
                }
            }
            $crate::window::bindings::aggregate::__export_aggregate_world!(Exported);
        };
    };
}

/// Exports a [`ReduceFunction`] as the component's `reduce-function` world.
#[macro_export]
macro_rules! export_reduce {
    ($function:ty) => {
        const _: () = {
            struct Exported;
            impl $crate::window::bindings::reduce::exports::weir::operator::reduce::Guest for Exported {
                fn reduce(
                    a: ::std::vec::Vec<u8>,
                    b: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    $crate::window::__private::reduce::<$function>(a, b)
                }
            }
            $crate::window::bindings::reduce::__export_reduce_world!(Exported);
        };
    };
}

/// Exports a [`ProcessWindowFunction`] as the component's `process-window-function` world.
#[macro_export]
macro_rules! export_process_window {
    ($function:ty) => {
        const _: () = {
            struct Exported;
            impl $crate::window::bindings::process::exports::weir::operator::process_window::Guest for Exported {
                fn process(
                    key: ::std::vec::Vec<u8>,
                    window: $crate::window::bindings::process::weir::operator::window_types::Window,
                    elements: ::std::vec::Vec<$crate::Event>,
                ) -> ::std::result::Result<::std::vec::Vec<$crate::Event>, ::std::string::String> {
                    $crate::window::__private::process::<$function>(key, window.start, window.end, elements)
                }
            }
            $crate::window::bindings::process::__export_process_world!(Exported);
        };
    };
}
