//! Typed keyed state over the host's byte-oriented state interface. Values are JSON.

use std::cell::OnceCell;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Result;
use crate::bindings::weir::operator::state as raw;

/// Declares a state handle on first use, so that handles can be built in
/// `Default::default` before the host is ready to take declarations.
struct Lazy<H> {
    name: String,
    handle: OnceCell<H>,
}

impl<H> Lazy<H> {
    fn new(name: impl Into<String>) -> Self {
        Lazy { name: name.into(), handle: OnceCell::new() }
    }

    fn get(&self, declare: impl FnOnce(&str) -> H) -> &H {
        self.handle.get_or_init(|| declare(&self.name))
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Ok(serde_json::from_slice(bytes)?)
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(value)?)
}

/// One value of type `T` per key.
pub struct ValueState<T> {
    inner: Lazy<raw::ValueState>,
    _type: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> ValueState<T> {
    /// A handle on the value state called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        ValueState { inner: Lazy::new(name), _type: PhantomData }
    }

    fn raw(&self) -> &raw::ValueState {
        self.inner.get(raw::ValueState::new)
    }

    /// The current key's value.
    pub fn get(&self) -> Result<Option<T>> {
        self.raw().get().map(|bytes| decode(&bytes)).transpose()
    }

    /// Replaces the current key's value.
    pub fn set(&self, value: &T) -> Result<()> {
        self.raw().set(&encode(value)?);
        Ok(())
    }

    /// Removes the current key's value.
    pub fn clear(&self) {
        self.raw().clear();
    }
}

/// A list of `T` per key.
pub struct ListState<T> {
    inner: Lazy<raw::ListState>,
    _type: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> ListState<T> {
    /// A handle on the list state called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        ListState { inner: Lazy::new(name), _type: PhantomData }
    }

    fn raw(&self) -> &raw::ListState {
        self.inner.get(raw::ListState::new)
    }

    /// Appends to the current key's list.
    pub fn add(&self, item: &T) -> Result<()> {
        self.raw().append(&encode(item)?);
        Ok(())
    }

    /// The current key's list in append order.
    pub fn get(&self) -> Result<Vec<T>> {
        self.raw().get().iter().map(|bytes| decode(bytes)).collect()
    }

    /// Removes the current key's list.
    pub fn clear(&self) {
        self.raw().clear();
    }
}

/// A map from `K` to `V` per key. Entries are ordered by the JSON encoding of `K`.
pub struct MapState<K, V> {
    inner: Lazy<raw::MapState>,
    _type: PhantomData<fn() -> (K, V)>,
}

impl<K, V> MapState<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// A handle on the map state called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        MapState { inner: Lazy::new(name), _type: PhantomData }
    }

    fn raw(&self) -> &raw::MapState {
        self.inner.get(raw::MapState::new)
    }

    /// The value under `key` in the current key's map.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        self.raw().get(&encode(key)?).map(|bytes| decode(&bytes)).transpose()
    }

    /// Stores `value` under `key`.
    pub fn put(&self, key: &K, value: &V) -> Result<()> {
        self.raw().put(&encode(key)?, &encode(value)?);
        Ok(())
    }

    /// Removes `key`.
    pub fn remove(&self, key: &K) -> Result<()> {
        self.raw().remove(&encode(key)?);
        Ok(())
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &K) -> Result<bool> {
        Ok(self.raw().contains(&encode(key)?))
    }

    /// Every entry of the current key's map.
    pub fn entries(&self) -> Result<Vec<(K, V)>> {
        self.raw()
            .entries()
            .iter()
            .map(|(k, v)| Ok((decode(k)?, decode(v)?)))
            .collect()
    }

    /// Every key of the current key's map.
    pub fn keys(&self) -> Result<Vec<K>> {
        self.raw().keys().iter().map(|k| decode(k)).collect()
    }

    /// Whether the current key's map is empty.
    pub fn is_empty(&self) -> bool {
        self.raw().is_empty()
    }

    /// Removes every entry of the current key's map.
    pub fn clear(&self) {
        self.raw().clear();
    }
}
