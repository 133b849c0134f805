use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Result;

/// One element of a stream (see `wit/operator.wit`, `types.event`).
pub use crate::bindings::weir::operator::types::Event;
/// A named header of an [`Event`].
pub use crate::bindings::weir::operator::types::Header;
/// The clock a timer belongs to.
pub use crate::bindings::weir::operator::types::TimeDomain;

impl Event {
    /// An event with this value, no key, no timestamp and no headers.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Event { key: None, value: value.into(), timestamp: None, headers: Vec::new() }
    }

    /// An event whose value is `value` encoded as JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        Ok(Event::new(serde_json::to_vec(value)?))
    }

    /// Sets the key (`None` for an unkeyed event).
    pub fn with_key<K: Into<Vec<u8>>>(mut self, key: Option<K>) -> Self {
        self.key = key.map(Into::into);
        self
    }

    /// Sets the event time in milliseconds since the Unix epoch.
    pub fn with_timestamp(mut self, timestamp: Option<i64>) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header { name: name.into(), value: value.into() });
        self
    }

    /// The value decoded from JSON.
    pub fn value_json<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.value)?)
    }

    /// The key as UTF-8 text, if there is a key and it is valid UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key.as_deref().and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|h| h.name == name).map(|h| h.value.as_slice())
    }
}
