//! # Key groups
//!
//! Keyed state is partitioned the way Apache Flink partitions it: a key is hashed into
//! one of `max_parallelism` *key groups*, and each subtask of an operator owns a
//! contiguous range of key groups. Key groups are the unit that state snapshots are
//! split by, so a job can later be rescaled up to `max_parallelism` subtasks by moving
//! whole key groups.
//!
//! ```
//! use weir::keygroup::{assign_key_group, subtask_for_key_group, KeyGroupRange};
//! let kg = assign_key_group(b"alice", 128);
//! let subtask = subtask_for_key_group(kg, 128, 4);
//! assert!(KeyGroupRange::for_subtask(subtask, 128, 4).contains(kg));
//! ```

/// The default number of key groups, as in Flink for small jobs.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// The largest supported number of key groups (key groups are stored as `u16`).
pub const MAX_MAX_PARALLELISM: u32 = 32768;

/// The key group of `key`: `murmur3_32(key) % max_parallelism`.
///
/// The hash is part of the on-disk format of snapshots: changing it would move keys
/// between key groups and orphan their state.
pub fn assign_key_group(key: &[u8], max_parallelism: u32) -> u16 {
    (murmur3_32(key, 0) % max_parallelism) as u16
}

/// The subtask that owns `key_group` (Flink's `computeOperatorIndexForKeyGroup`).
pub fn subtask_for_key_group(key_group: u16, max_parallelism: u32, parallelism: u32) -> u32 {
    (key_group as u32 * parallelism) / max_parallelism
}

/// A contiguous, inclusive range of key groups owned by one subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyGroupRange {
    pub start: u16,
    pub end: u16,
}

impl KeyGroupRange {
    /// The key groups of `subtask` (Flink's `computeKeyGroupRangeForOperatorIndex`).
    pub fn for_subtask(subtask: u32, max_parallelism: u32, parallelism: u32) -> Self {
        let start = (subtask * max_parallelism).div_ceil(parallelism);
        let end = ((subtask + 1) * max_parallelism).div_ceil(parallelism) - 1;
        KeyGroupRange { start: start as u16, end: end as u16 }
    }

    pub fn contains(&self, key_group: u16) -> bool {
        (self.start..=self.end).contains(&key_group)
    }
}

/// MurmurHash3, x86 32-bit variant.
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (i, byte) in tail.iter().enumerate() {
            k |= (*byte as u32) << (8 * i);
        }
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_matches_reference_vectors() {
        // Vectors from the reference implementation (SMHasher).
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"test", 0), 0xba6b_d213);
        assert_eq!(murmur3_32(b"Hello, world!", 0), 0xc036_3e43);
        assert_eq!(murmur3_32(b"The quick brown fox jumps over the lazy dog", 0), 0x2e4f_f723);
    }

    #[test]
    fn ranges_cover_every_key_group_exactly_once() {
        for parallelism in [1, 2, 3, 4, 7, 128] {
            let mut owner = vec![None; 128];
            for subtask in 0..parallelism {
                let range = KeyGroupRange::for_subtask(subtask, 128, parallelism);
                for kg in range.start..=range.end {
                    assert_eq!(owner[kg as usize], None, "key group {kg} owned twice");
                    owner[kg as usize] = Some(subtask);
                    assert_eq!(subtask_for_key_group(kg, 128, parallelism), subtask);
                }
            }
            assert!(owner.iter().all(Option::is_some), "p={parallelism} leaves a gap");
        }
    }

    #[test]
    fn assignment_is_stable_and_in_range() {
        let kg = assign_key_group(b"alice", 128);
        assert_eq!(kg, assign_key_group(b"alice", 128));
        assert!(kg < 128);
        let spread: std::collections::HashSet<_> =
            (0..1000).map(|i| assign_key_group(format!("k{i}").as_bytes(), 128)).collect();
        assert!(spread.len() > 100, "keys should spread over most key groups");
    }
}
