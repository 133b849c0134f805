//! What stands in for the RocksDB backend in a weir built without the `rocksdb` feature
//! (the quick start's build: RocksDB's C++ is most of a cold build). Jobs that ask for
//! RocksDB state are refused when they are created ([`crate::job::Job::new`]); these
//! constructors say the same if reached.

use std::path::Path;

use super::{MemoryBackend, StateError};
use crate::state::snapshot::FileEntry;

/// Why a RocksDB backend cannot be opened.
pub const ABSENT: &str = "this weir was built without RocksDB (the `rocksdb` feature, on by default): \
     build it with `cargo build -p weir-host`, or use `state.backend = \"memory\"`";

/// How many writes pass between two checks of a RocksDB database's size.
pub const BUDGET_CHECK_WRITES: u32 = 4096;

/// The RocksDB backend's place, without RocksDB.
pub struct RocksBackend;

impl RocksBackend {
    /// The state directory as weir owns it (as with RocksDB).
    pub const OWNED: crate::ownership::Owned =
        crate::ownership::Owned { what: "state directory", is_ours: |name| name.contains('#') };

    pub fn open(_path: &Path) -> Result<MemoryBackend, StateError> {
        Err(StateError::Backend(ABSENT.into()))
    }

    pub fn restore(_path: &Path, _root: &Path, _files: &[FileEntry]) -> Result<MemoryBackend, String> {
        Err(ABSENT.into())
    }

    pub fn from_entries(
        _path: &Path,
        _entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> Result<MemoryBackend, StateError> {
        Err(StateError::Backend(ABSENT.into()))
    }
}
