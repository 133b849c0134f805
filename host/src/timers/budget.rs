//! Counting pending timers per key, for the per-key timer budget.

use std::collections::HashMap;

/// Pending timers per key (both domains, every namespace), for the per-key budget:
/// one entry per key with timers, on the heap whatever the store (at most
/// `limits.timers` entries), so that counting costs no store access.
#[derive(Default)]
pub(super) struct PerKey(HashMap<Vec<u8>, u32>);

impl PerKey {
    pub(super) fn get(&self, key: &[u8]) -> u32 {
        self.0.get(key).copied().unwrap_or(0)
    }

    /// Counts a new timer of `key` unless the key has `max` already.
    pub(super) fn admit(&mut self, key: &[u8], max: u64) -> bool {
        match self.0.get_mut(key) {
            Some(n) if u64::from(*n) >= max => false,
            Some(n) => {
                *n += 1;
                true
            }
            None if max == 0 => false,
            None => {
                self.0.insert(key.to_vec(), 1);
                true
            }
        }
    }

    pub(super) fn release(&mut self, key: &[u8]) {
        if let Some(n) = self.0.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(key);
            }
        }
    }
}
