//! Lazy state migration. When an operator's component declares a newer state version
//! than the state it takes over (after a live upgrade, or restored from an older
//! savepoint), every key's state must go through the component's `migrate` before the
//! component sees it. Doing all keys at once pauses the job for as long as that takes
//! (seconds at a million keys through the Wasm boundary); instead, keys migrate on first
//! access — before an element or timer of the key reaches the operator — and, between
//! calls, a few at a time in the background, until none is left.
//!
//! The keys still to migrate are part of every checkpoint (`migration.ent`), so a
//! restored job goes on where it stopped; a savepoint, which must restore into any
//! component and parallelism, completes the migration first.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::operator::{OperatorFailure, OperatorLogic};

/// Keys migrated in the background at a time, at most every [`SLICE_INTERVAL`], before
/// a call into the operator: at most 32 000 keys a second, a quarter or so of the
/// task's time at the Wasm boundary's cost per key, and nothing while the job is idle.
pub const KEYS_PER_SLICE: usize = 32;
pub const SLICE_INTERVAL: Duration = Duration::from_millis(1);

/// A migration in progress: the keys whose state is still at version `from`.
#[derive(Debug, Clone)]
pub struct Migration {
    pub from: u32,
    pending: HashSet<Vec<u8>>,
    /// When the last background slice ran.
    sliced: Instant,
}

/// What migrating a key failed on.
#[derive(Debug)]
pub struct MigrationFailure {
    pub key: Vec<u8>,
    pub failure: OperatorFailure,
}

impl Migration {
    /// The migration `logic`'s state needs from version `from`: every key, unless the
    /// component's state version is not newer.
    pub fn start(logic: &mut dyn OperatorLogic, from: u32) -> Result<Option<Migration>, OperatorFailure> {
        let to = logic.state_version()?;
        if to <= from {
            return Ok(None);
        }
        let listing = Instant::now();
        let pending = logic.context().state.distinct_keys().map_err(OperatorFailure::State)?;
        let listed_ms = listing.elapsed().as_millis() as u64;
        tracing::info!(operator = %logic.context().info.label(), from, to, keys = pending.len(), listed_ms, "migrating state, key by key");
        Ok((!pending.is_empty()).then_some(Migration { from, pending, sliced: Instant::now() }))
    }

    /// A migration restored from a checkpoint.
    pub fn restored(from: u32, keys: impl IntoIterator<Item = Vec<u8>>) -> Option<Migration> {
        let pending: HashSet<Vec<u8>> = keys.into_iter().collect();
        (!pending.is_empty()).then_some(Migration { from, pending, sliced: Instant::now() })
    }

    /// How many keys are left.
    pub fn remaining(&self) -> usize {
        self.pending.len()
    }

    /// The keys left, for a checkpoint.
    pub fn keys(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.pending.iter()
    }

    /// Migrates `key` if it has not been yet. The current key is left unset.
    pub fn key(&mut self, logic: &mut dyn OperatorLogic, key: &[u8]) -> Result<(), MigrationFailure> {
        if !self.pending.remove(key) {
            return Ok(());
        }
        migrate_one(logic, key, self.from).map_err(|failure| MigrationFailure { key: key.to_vec(), failure })
    }

    /// A background slice, if one is due; whether any keys are left.
    pub fn background(&mut self, logic: &mut dyn OperatorLogic) -> Result<bool, MigrationFailure> {
        if self.sliced.elapsed() < SLICE_INTERVAL {
            return Ok(true);
        }
        self.sliced = Instant::now();
        self.some(logic, KEYS_PER_SLICE)
    }

    /// Migrates up to `count` keys; whether any are left.
    pub fn some(&mut self, logic: &mut dyn OperatorLogic, count: usize) -> Result<bool, MigrationFailure> {
        let keys: Vec<Vec<u8>> = self.pending.iter().take(count).cloned().collect();
        for key in keys {
            self.key(logic, &key)?;
        }
        Ok(!self.pending.is_empty())
    }

    /// Migrates keys for at most `budget`; whether any are left.
    pub fn for_at_most(&mut self, logic: &mut dyn OperatorLogic, budget: Duration) -> Result<bool, MigrationFailure> {
        let started = Instant::now();
        while self.some(logic, 64)? {
            if started.elapsed() >= budget {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Migrates every key left.
    pub fn all(&mut self, logic: &mut dyn OperatorLogic) -> Result<(), MigrationFailure> {
        while self.some(logic, 1024)? {}
        Ok(())
    }
}

fn migrate_one(logic: &mut dyn OperatorLogic, key: &[u8], from: u32) -> Result<(), OperatorFailure> {
    logic.context().set_current_key(Some(key));
    let result = logic.migrate(from);
    let ctx = logic.context();
    ctx.set_current_key(None);
    // What a migration emits goes nowhere.
    let mut discarded = Vec::new();
    ctx.swap_emitted(&mut discarded);
    result
}
