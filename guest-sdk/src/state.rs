//! Typed keyed state over the host's byte-oriented state interface. Values are JSON.

use std::cell::{Cell, OnceCell, RefCell};
use std::marker::PhantomData;
use std::rc::{Rc, Weak};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Result;
use crate::bindings::weir::operator::state as raw;

/// Time to live of state entries, as Flink's `StateTtlConfig`: an entry expires this
/// long (in processing time) after it was written, or also after it was read with
/// [`StateTtl::refresh_on_read`]. Expired entries are never returned. For lists and
/// maps it applies to each element or entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateTtl {
    ttl: Duration,
    refresh_on_read: bool,
}

impl StateTtl {
    /// Entries expire `ttl` after they were created or last written.
    pub fn new(ttl: Duration) -> Self {
        StateTtl { ttl, refresh_on_read: false }
    }

    /// Reads also restart the time to live.
    pub fn refresh_on_read(mut self) -> Self {
        self.refresh_on_read = true;
        self
    }

    fn raw(self) -> raw::Ttl {
        raw::Ttl { ttl_ms: self.ttl.as_millis() as u64, refresh_on_read: self.refresh_on_read }
    }
}

/// Declares a state handle on first use, so that handles can be built in
/// `Default::default` before the host is ready to take declarations.
struct Lazy<H> {
    name: String,
    ttl: Option<StateTtl>,
    handle: OnceCell<H>,
}

impl<H> Lazy<H> {
    fn new(name: impl Into<String>, ttl: Option<StateTtl>) -> Self {
        Lazy { name: name.into(), ttl, handle: OnceCell::new() }
    }

    fn get(&self, declare: impl FnOnce(&str, Option<raw::Ttl>) -> H) -> &H {
        self.handle.get_or_init(|| declare(&self.name, self.ttl.map(StateTtl::raw)))
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Ok(serde_json::from_slice(bytes)?)
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(value)?)
}

/// One value of type `T` per key.
///
/// A value state created while the operator is created (in `Default::default` or
/// `open`) travels with each batch: the host loads its values for the batch's keys
/// before the batch and writes back what changed after it, so reads and writes during
/// `process_element` cost no host call. Anywhere else (`on_timer`, `migrate`, a value
/// state created later) each access is a host call. Either way it behaves the same.
pub struct ValueState<T> {
    shared: Rc<SharedValue>,
    _type: PhantomData<fn() -> T>,
}

/// What a [`ValueState`] handle and the registry of loaded states share.
struct SharedValue {
    inner: Lazy<raw::ValueState>,
    /// The state's index among the loaded ones (`batch.load`), once loaded.
    loaded: Cell<Option<u32>>,
}

thread_local! {
    /// Value states created while the operator is made and opened: loaded with batches
    /// at the end of `open`.
    static CREATED: RefCell<Vec<Weak<SharedValue>>> = const { RefCell::new(Vec::new()) };
    /// Whether the operator is being made and opened (states created later, in a call,
    /// are declared on first use and not registered).
    static OPENING: Cell<bool> = const { Cell::new(false) };
}

/// The operator is about to be made and opened.
pub(crate) fn begin_open() {
    OPENING.set(true);
}

/// A list or map state handle that can be declared to the host.
trait Declare {
    fn declare(&self);
}

impl Declare for Lazy<raw::ListState> {
    fn declare(&self) {
        self.get(|name, ttl| raw::ListState::new(name, ttl));
    }
}

impl Declare for Lazy<raw::MapState> {
    fn declare(&self) {
        self.get(|name, ttl| raw::MapState::new(name, ttl));
    }
}

thread_local! {
    /// List and map states created since the last `open`: declared at its end.
    static CREATED_OTHER: RefCell<Vec<Weak<dyn Declare>>> = const { RefCell::new(Vec::new()) };
}

fn created<H: 'static>(lazy: Lazy<H>) -> Rc<Lazy<H>>
where
    Lazy<H>: Declare,
{
    let shared = Rc::new(lazy);
    if OPENING.get() {
        let weak: Weak<dyn Declare> = Rc::downgrade(&shared) as Weak<dyn Declare>;
        CREATED_OTHER.with_borrow_mut(|created| created.push(weak));
    }
    shared
}

/// Loads every value state created while the operator was made and opened, and still
/// held by it, with the batches to come (`batch.load`); declares the list and map
/// states created meanwhile, so that the host knows the operator's whole state layout
/// once it has opened (`weir check --upgrade-from` compares it with a savepoint's).
pub(crate) fn load_declared() {
    OPENING.set(false);
    for shared in CREATED.take().iter().filter_map(Weak::upgrade) {
        let handle = shared.inner.get(|name, ttl| raw::ValueState::new(name, ttl));
        shared.loaded.set(Some(crate::bindings::weir::operator::batch::load(handle)));
    }
    for other in CREATED_OTHER.take().iter().filter_map(Weak::upgrade) {
        other.declare();
    }
}

impl<T: Serialize + DeserializeOwned> ValueState<T> {
    /// A handle on the value state called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self::with(Lazy::new(name, None))
    }

    /// A handle on the value state called `name`, whose values expire.
    pub fn with_ttl(name: impl Into<String>, ttl: StateTtl) -> Self {
        Self::with(Lazy::new(name, Some(ttl)))
    }

    fn with(inner: Lazy<raw::ValueState>) -> Self {
        let shared = Rc::new(SharedValue { inner, loaded: Cell::new(None) });
        if OPENING.get() {
            CREATED.with_borrow_mut(|created| created.push(Rc::downgrade(&shared)));
        }
        ValueState { shared, _type: PhantomData }
    }

    fn raw(&self) -> &raw::ValueState {
        crate::batch::focus();
        self.shared.inner.get(|name, ttl| raw::ValueState::new(name, ttl))
    }

    /// The current key's value.
    pub fn get(&self) -> Result<Option<T>> {
        if let Some(slot) = self.shared.loaded.get() {
            if let Some(value) = crate::batch::with_loaded(slot, |bytes| bytes.map(decode).transpose()) {
                return value;
            }
        }
        self.raw().get().map(|bytes| decode(&bytes)).transpose()
    }

    /// Replaces the current key's value.
    pub fn set(&self, value: &T) -> Result<()> {
        if let Some(slot) = self.shared.loaded.get() {
            let fill = |buffer: &mut Vec<u8>| serde_json::to_writer(buffer, value);
            if let Some(written) = crate::batch::write_loaded(slot, Some(fill)) {
                return Ok(written?);
            }
        }
        self.raw().set(&encode(value)?);
        Ok(())
    }

    /// Removes the current key's value.
    pub fn clear(&self) {
        if let Some(slot) = self.shared.loaded.get() {
            let none: Option<fn(&mut Vec<u8>) -> std::result::Result<(), ()>> = None;
            if crate::batch::write_loaded(slot, none).is_some() {
                return;
            }
        }
        self.raw().clear();
    }
}

/// A list of `T` per key.
pub struct ListState<T> {
    inner: Rc<Lazy<raw::ListState>>,
    _type: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> ListState<T> {
    /// A handle on the list state called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        ListState { inner: created(Lazy::new(name, None)), _type: PhantomData }
    }

    /// A handle on the list state called `name`, whose elements expire.
    pub fn with_ttl(name: impl Into<String>, ttl: StateTtl) -> Self {
        ListState { inner: created(Lazy::new(name, Some(ttl))), _type: PhantomData }
    }

    fn raw(&self) -> &raw::ListState {
        crate::batch::focus();
        self.inner.get(|name, ttl| raw::ListState::new(name, ttl))
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
    inner: Rc<Lazy<raw::MapState>>,
    _type: PhantomData<fn() -> (K, V)>,
}

impl<K, V> MapState<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// A handle on the map state called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        MapState { inner: created(Lazy::new(name, None)), _type: PhantomData }
    }

    /// A handle on the map state called `name`, whose entries expire.
    pub fn with_ttl(name: impl Into<String>, ttl: StateTtl) -> Self {
        MapState { inner: created(Lazy::new(name, Some(ttl))), _type: PhantomData }
    }

    fn raw(&self) -> &raw::MapState {
        crate::batch::focus();
        self.inner.get(|name, ttl| raw::MapState::new(name, ttl))
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

/// A list of `T` per operator subtask, not per key: Flink's operator `ListState`
/// (`getListState`, even-split redistribution when the parallelism changes) or, with
/// [`OperatorListState::union`], its union list state (every subtask gets every item).
/// Usable in every call, `open` included; checkpointed by the host. An operator that
/// keeps items in its own memory writes them here in [`crate::Operator::snapshot_state`].
pub struct OperatorListState<T> {
    name: String,
    redistribution: raw_operator::Redistribution,
    handle: OnceCell<raw_operator::ListState>,
    _type: PhantomData<fn() -> T>,
}

use crate::bindings::weir::operator::operator_state as raw_operator;

impl<T: Serialize + DeserializeOwned> OperatorListState<T> {
    /// The operator list called `name`; on restore at another parallelism the items of
    /// every subtask are split evenly among the new subtasks.
    pub fn new(name: impl Into<String>) -> Self {
        Self::with(name.into(), raw_operator::Redistribution::Split)
    }

    /// The operator union list called `name`: on restore every subtask gets the items
    /// of every subtask.
    pub fn union(name: impl Into<String>) -> Self {
        Self::with(name.into(), raw_operator::Redistribution::Union)
    }

    fn with(name: String, redistribution: raw_operator::Redistribution) -> Self {
        OperatorListState { name, redistribution, handle: OnceCell::new(), _type: PhantomData }
    }

    fn raw(&self) -> &raw_operator::ListState {
        self.handle.get_or_init(|| raw_operator::ListState::new(&self.name, self.redistribution))
    }

    /// Every item, in order.
    pub fn get(&self) -> Result<Vec<T>> {
        self.raw().get().iter().map(|bytes| decode(bytes)).collect()
    }

    /// Appends one item.
    pub fn add(&self, item: &T) -> Result<()> {
        self.raw().add(&encode(item)?);
        Ok(())
    }

    /// Replaces every item.
    pub fn update(&self, items: &[T]) -> Result<()> {
        let encoded = items.iter().map(encode).collect::<Result<Vec<_>>>()?;
        self.raw().update(&encoded);
        Ok(())
    }

    /// Removes every item.
    pub fn clear(&self) {
        self.raw().clear();
    }
}

/// Whether this subtask's operator state came from a checkpoint or savepoint (Flink's
/// `isRestored`).
pub fn is_restored() -> bool {
    raw_operator::is_restored()
}

/// Broadcast state (Flink's broadcast `MapState`): a map from `K` to `V` that every
/// subtask of the operator holds in full. Only the broadcast input may change it (in
/// [`crate::Operator::process_element_2`] on an edge with `partition = "broadcast"`);
/// anywhere else it is read-only and a write traps, as Flink enforces. Checkpointed
/// and restored to every subtask at any parallelism.
pub struct BroadcastState<K, V> {
    name: String,
    handle: OnceCell<raw_operator::BroadcastState>,
    _type: PhantomData<fn() -> (K, V)>,
}

impl<K, V> BroadcastState<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// The broadcast state called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        BroadcastState { name: name.into(), handle: OnceCell::new(), _type: PhantomData }
    }

    fn raw(&self) -> &raw_operator::BroadcastState {
        self.handle.get_or_init(|| raw_operator::BroadcastState::new(&self.name))
    }

    pub fn get(&self, key: &K) -> Result<Option<V>> {
        self.raw().get(&encode(key)?).map(|bytes| decode(&bytes)).transpose()
    }

    pub fn contains(&self, key: &K) -> Result<bool> {
        Ok(self.raw().contains(&encode(key)?))
    }

    /// Every entry, ordered by the JSON encoding of `K`.
    pub fn entries(&self) -> Result<Vec<(K, V)>> {
        self.raw().entries().iter().map(|(k, v)| Ok((decode(k)?, decode(v)?))).collect()
    }

    /// Stores `value` under `key` (broadcast input only).
    pub fn put(&self, key: &K, value: &V) -> Result<()> {
        self.raw().put(&encode(key)?, &encode(value)?);
        Ok(())
    }

    /// Removes `key` (broadcast input only).
    pub fn remove(&self, key: &K) -> Result<()> {
        self.raw().remove(&encode(key)?);
        Ok(())
    }

    /// Removes every entry (broadcast input only).
    pub fn clear(&self) {
        self.raw().clear();
    }
}
