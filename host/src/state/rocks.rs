//! The RocksDB state backend: keyed state on local disk, one database per operator
//! subtask. Writes skip RocksDB's write-ahead log because checkpoints, not the WAL,
//! make state durable; lists append through a merge operator, so an append never reads
//! the list.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{DB, Direction, IteratorMode, MergeOperands, Options, ReadOptions, WriteBatch, WriteOptions};

use super::{SnapshotTarget, SnapshotWriter, StateBackend, StateBudget, StateError, key};
use super::snapshot::{FileEntry, file_crc};

/// Keyed state in a RocksDB database.
pub struct RocksBackend {
    db: DB,
    path: PathBuf,
    write: WriteOptions,
    /// SST files already in the shared checkpoint directory, by file name: immutable,
    /// so later checkpoints refer to them instead of copying them again.
    shared: Arc<Mutex<HashMap<String, FileEntry>>>,
    snapshots: u64,
    budget: StateBudget,
    writes_since_check: u32,
    bytes_since_check: u64,
}

fn list_append(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    // Operands are already encoded list items (length-prefixed), so appending is
    // concatenation.
    let extra: usize = operands.iter().map(<[u8]>::len).sum();
    let mut list = Vec::with_capacity(existing.map_or(0, <[u8]>::len) + extra);
    list.extend_from_slice(existing.unwrap_or_default());
    for operand in operands.iter() {
        list.extend_from_slice(operand);
    }
    Some(list)
}

/// How many writes pass between two checks of the database's size against the budget
/// (or fewer, once they wrote a sixteenth of it).
pub const BUDGET_CHECK_WRITES: u32 = 4096;

fn error(what: &str, e: rocksdb::Error) -> StateError {
    StateError::Backend(format!("RocksDB {what}: {e}"))
}

impl RocksBackend {
    /// The state directory as weir owns it: one database per task (`uid#subtask`) and
    /// their checkpoint staging directories.
    pub const OWNED: crate::ownership::Owned =
        crate::ownership::Owned { what: "state directory", is_ours: |name| name.contains('#') };

    /// The options every weir database is opened with.
    pub fn options() -> Options {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_merge_operator_associative("weir-list-append", list_append);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        options
    }

    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(path)
            .map_err(|e| StateError::Backend(format!("creating {}: {e}", path.display())))?;
        let db = DB::open(&Self::options(), path).map_err(|e| error(&format!("open {}", path.display()), e))?;
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        Ok(RocksBackend {
            db,
            path: path.to_path_buf(),
            write,
            shared: Arc::default(),
            snapshots: 0,
            budget: StateBudget::UNLIMITED,
            writes_since_check: 0,
            bytes_since_check: 0,
        })
    }

    /// Creates a fresh database at `path` holding `entries` (a savepoint restore).
    pub fn from_entries(
        path: &Path,
        entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> Result<Self, StateError> {
        if path.exists() {
            std::fs::remove_dir_all(path)
                .map_err(|e| StateError::Backend(format!("clearing {}: {e}", path.display())))?;
        }
        let mut backend = Self::open(path)?;
        let mut batch = WriteBatch::default();
        for (k, v) in entries {
            batch.put(k, v);
            if batch.len() >= 10_000 {
                backend.db.write_opt(std::mem::take(&mut batch), &backend.write).map_err(|e| error("write", e))?;
            }
        }
        backend.db.write_opt(batch, &backend.write).map_err(|e| error("write", e))?;
        let _ = &mut backend;
        Ok(backend)
    }

    /// Recreates the database at `path` from a snapshot's files under `root` (hard
    /// links when the file system allows, copies otherwise) and opens it.
    pub fn restore(
        path: &Path,
        root: &Path,
        files: &[FileEntry],
    ) -> Result<Self, String> {
        let io = |what: &Path, e: std::io::Error| format!("restoring {}: {e}", what.display());
        if path.exists() {
            std::fs::remove_dir_all(path).map_err(|e| io(path, e))?;
        }
        std::fs::create_dir_all(path).map_err(|e| io(path, e))?;
        let mut shared = HashMap::new();
        for file in files {
            let source = root.join(&file.path);
            let name = source.file_name().ok_or_else(|| format!("bad file entry {}", file.path))?;
            let dest = path.join(name);
            if std::fs::hard_link(&source, &dest).is_err() {
                std::fs::copy(&source, &dest).map_err(|e| io(&source, e))?;
            }
            if file.path.ends_with(".sst") {
                shared.insert(name.to_string_lossy().into_owned(), file.clone());
            }
        }
        let mut backend = Self::open(path).map_err(|e| e.to_string())?;
        backend.shared = Arc::new(Mutex::new(shared));
        Ok(backend)
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database, for checkpoints.
    pub fn db(&self) -> &DB {
        &self.db
    }

    fn prefix_iter(&self, prefix: &[u8]) -> impl Iterator<Item = Entry> + '_ {
        self.prefix_iter_from(prefix, prefix)
    }

    /// The entries whose key starts with `prefix`, from `start` on; bounded, so that
    /// RocksDB does not walk deleted entries outside the prefix.
    fn prefix_iter_from(
        &self,
        prefix: &[u8],
        start: &[u8],
    ) -> impl Iterator<Item = Entry> + '_ {
        let mut read = ReadOptions::default();
        read.set_iterate_lower_bound(prefix.to_vec());
        if let Some(upper) = prefix_upper_bound(prefix) {
            read.set_iterate_upper_bound(upper);
        }
        self.db.iterator_opt(IteratorMode::From(start.max(prefix), Direction::Forward), read)
    }
}

/// An entry read by an iterator.
type Entry = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>;

/// The smallest key greater than every key starting with `prefix`.
fn prefix_upper_bound(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < u8::MAX {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}

impl RocksBackend {
    /// Every [`BUDGET_CHECK_WRITES`] writes (or a sixteenth of the budget written),
    /// the database's size (SST files and memtables) against the budget: on disk the
    /// budget is a quota, checked in steps.
    fn check_size(&mut self, len: usize) -> Result<(), StateError> {
        if self.budget.bytes == u64::MAX {
            return Ok(());
        }
        self.writes_since_check += 1;
        self.bytes_since_check += len as u64;
        if self.writes_since_check < BUDGET_CHECK_WRITES && self.bytes_since_check < self.budget.bytes / 16 {
            return Ok(());
        }
        self.writes_since_check = 0;
        self.bytes_since_check = 0;
        self.budget.check_total(self.size_bytes())
    }
}

impl StateBackend for RocksBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.db.get(key).map_err(|e| error("get", e))
    }

    fn get_into(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StateError> {
        // Pinned: the value is copied once, from RocksDB's block into `out`.
        let value = self.db.get_pinned(key).map_err(|e| error("get", e))?;
        if let Some(value) = &value {
            out.extend_from_slice(value);
        }
        Ok(value.is_some())
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        self.budget.check_entry(value.len())?;
        self.check_size(key.len() + value.len())?;
        self.db.put_opt(key, value, &self.write).map_err(|e| error("put", e))
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StateError> {
        self.db.delete_opt(key, &self.write).map_err(|e| error("delete", e))
    }

    fn append(&mut self, key: &[u8], item: &[u8]) -> Result<(), StateError> {
        self.check_size(key.len() + item.len())?;
        let mut encoded = Vec::with_capacity(item.len() + 4);
        key::append_list_item(&mut encoded, item);
        self.db.merge_opt(key, encoded, &self.write).map_err(|e| error("merge", e))
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StateError> {
        for entry in self.prefix_iter(prefix) {
            let (k, v) = entry.map_err(|e| error("scan", e))?;
            visit(&k, &v);
        }
        Ok(())
    }

    fn scan_from(
        &self,
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StateError> {
        for entry in self.db.iterator(IteratorMode::From(start, Direction::Forward)) {
            let (k, v) = entry.map_err(|e| error("scan", e))?;
            if !visit(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn scan_prefix_from(
        &self,
        prefix: &[u8],
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StateError> {
        for entry in self.prefix_iter_from(prefix, start) {
            let (k, v) = entry.map_err(|e| error("scan", e))?;
            if !visit(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn delete_prefix(&mut self, prefix: &[u8]) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        for entry in self.prefix_iter(prefix) {
            let (k, _) = entry.map_err(|e| error("scan", e))?;
            batch.delete(k);
        }
        self.db.write_opt(batch, &self.write).map_err(|e| error("write", e))
    }

    fn len(&self) -> usize {
        self.db.iterator(IteratorMode::Start).count()
    }

    fn set_budget(&mut self, budget: StateBudget) {
        self.budget = budget;
    }

    /// What the guest wrote, uncompressed: the raw key and value bytes of the SST files
    /// (RocksDB's aggregated table properties; versions not yet compacted away count
    /// until they are) and the memtables. The files' size on disk would let well
    /// compressible data pass a budget many times over.
    fn size_bytes(&self) -> u64 {
        let property = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        let tables = self.db.property_value("rocksdb.aggregated-table-properties").ok().flatten();
        let raw = tables.as_deref().and_then(raw_table_bytes);
        raw.unwrap_or_else(|| property("rocksdb.total-sst-files-size")) + property("rocksdb.cur-size-all-mem-tables")
    }

    fn name(&self) -> &'static str {
        "rocksdb"
    }

    /// A RocksDB checkpoint (memtable flush plus hard links, taken synchronously and
    /// quickly); the writer then moves new SST files into the shared directory and
    /// reuses the ones earlier checkpoints already hold: incremental checkpoints.
    fn snapshot(&mut self, target: &SnapshotTarget) -> Result<Box<dyn SnapshotWriter>, StateError> {
        self.snapshots += 1;
        let staging = self.path.with_extension(format!("checkpoint-{}", self.snapshots));
        if staging.exists() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        Checkpoint::new(&self.db)
            .and_then(|c| c.create_checkpoint(&staging))
            .map_err(|e| error("checkpoint", e))?;
        Ok(Box::new(RocksSnapshot { staging, target: target.clone(), shared: self.shared.clone() }))
    }

    /// Flushes the memtable without waiting: RocksDB writes it out on its own threads
    /// while writes go on into a new one.
    fn prepare_snapshot(&mut self) {
        let mut flush = rocksdb::FlushOptions::default();
        flush.set_wait(false);
        if let Err(e) = self.db.flush_opt(&flush) {
            tracing::debug!(path = %self.path.display(), error = %e, "flushing ahead of a snapshot");
        }
    }

    /// A RocksDB checkpoint taken now (fast), read back on the writer's thread into a
    /// portable entry file.
    fn export(&mut self, target: &SnapshotTarget, file: &str) -> Result<Box<dyn SnapshotWriter>, StateError> {
        self.snapshots += 1;
        let staging = self.path.with_extension(format!("export-{}", self.snapshots));
        if staging.exists() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        Checkpoint::new(&self.db)
            .and_then(|c| c.create_checkpoint(&staging))
            .map_err(|e| error("checkpoint", e))?;
        Ok(Box::new(RocksExport { staging, target: target.clone(), file: file.to_string() }))
    }
}

struct RocksExport {
    staging: PathBuf,
    target: SnapshotTarget,
    file: String,
}

impl SnapshotWriter for RocksExport {
    fn write(self: Box<Self>) -> Result<Vec<FileEntry>, String> {
        let result = (|| {
            let db = DB::open_for_read_only(&RocksBackend::options(), &self.staging, false)
                .map_err(|e| format!("reading {}: {e}", self.staging.display()))?;
            // Streamed from the database to the file: an export of any size takes no heap.
            let relative = format!("{}/{}", self.target.task_dir, self.file);
            let file = crate::state::snapshot::write_file_with(&self.target.root, &relative, |put| {
                for entry in db.iterator(IteratorMode::Start) {
                    let (k, v) = entry.map_err(|e| format!("reading {}: {e}", self.staging.display()))?;
                    put(&k, &v)?;
                }
                Ok(())
            })?;
            Ok(vec![file])
        })();
        let _ = std::fs::remove_dir_all(&self.staging);
        result
    }
}

struct RocksSnapshot {
    staging: PathBuf,
    target: SnapshotTarget,
    shared: Arc<Mutex<HashMap<String, FileEntry>>>,
}

impl SnapshotWriter for RocksSnapshot {
    fn write(self: Box<Self>) -> Result<Vec<FileEntry>, String> {
        let result = self.move_files();
        let _ = std::fs::remove_dir_all(&self.staging);
        result
    }
}

impl RocksSnapshot {
    fn move_files(&self) -> Result<Vec<FileEntry>, String> {
        let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
        let root = &self.target.root;
        for dir in [&self.target.task_dir, &self.target.shared_dir] {
            std::fs::create_dir_all(root.join(dir)).map_err(|e| io(&root.join(dir), e))?;
        }
        let mut files = Vec::new();
        let entries = std::fs::read_dir(&self.staging).map_err(|e| io(&self.staging, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io(&self.staging, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let staged = entry.path();
            if name.ends_with(".sst") {
                let known = self.shared.lock().unwrap_or_else(|e| e.into_inner()).get(&name).cloned();
                if let Some(known) = known.filter(|k| root.join(&k.path).is_file()) {
                    files.push(known);
                    continue;
                }
                let relative = format!("{}/{name}", self.target.shared_dir);
                let file = move_into(&staged, root, &relative)?;
                self.shared.lock().unwrap_or_else(|e| e.into_inner()).insert(name, file.clone());
                files.push(file);
            } else {
                let relative = format!("{}/rocks/{name}", self.target.task_dir);
                std::fs::create_dir_all(root.join(&self.target.task_dir).join("rocks"))
                    .map_err(|e| io(root, e))?;
                files.push(move_into(&staged, root, &relative)?);
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }
}

/// Moves a staged file to `root/relative` (renaming through a temporary name, so a
/// half-copied file is never seen under its final name) and describes it.
fn move_into(staged: &Path, root: &Path, relative: &str) -> Result<FileEntry, String> {
    let dest = root.join(relative);
    let tmp = dest.with_extension("tmp");
    let io = |e: std::io::Error| format!("{}: {e}", dest.display());
    if std::fs::rename(staged, &tmp).is_err() {
        std::fs::copy(staged, &tmp).map_err(io)?;
    }
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, &dest).map_err(io)?;
    let size = std::fs::metadata(&dest).map_err(io)?.len();
    let crc32 = file_crc(&dest).map_err(io)?;
    Ok(FileEntry { path: relative.to_string(), size, crc32 })
}

/// The raw (uncompressed) key and value bytes in RocksDB's table properties text
/// (`...; raw key size=N; ...; raw value size=M; ...`).
fn raw_table_bytes(properties: &str) -> Option<u64> {
    let field = |name: &str| {
        properties.split(';').find_map(|part| part.trim().strip_prefix(name)?.strip_prefix('=')?.trim().parse::<u64>().ok())
    };
    Some(field("raw key size")? + field("raw value size")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocksdb_backend_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let counter = std::sync::atomic::AtomicUsize::new(0);
        super::super::conformance::run_all(&|| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Box::new(RocksBackend::open(&dir.path().join(n.to_string())).unwrap())
        });
    }

    #[test]
    fn the_size_counts_what_was_written_not_what_it_compresses_to() {
        let dir = tempfile::tempdir().unwrap();
        let mut backend = RocksBackend::open(dir.path()).unwrap();
        let value = vec![b'x'; 1 << 20];
        for i in 0u32..64 {
            backend.put(&i.to_be_bytes(), &value).unwrap();
        }
        backend.db.flush().unwrap();
        let on_disk = backend.db.property_int_value("rocksdb.total-sst-files-size").unwrap().unwrap();
        assert!(on_disk < 8 << 20, "lz4 compresses 64 MiB of one byte to {on_disk} bytes");
        assert!(backend.size_bytes() >= 64 << 20, "{} bytes counted for 64 MiB written", backend.size_bytes());
        assert_eq!(raw_table_bytes("# entries=2; raw key size=10; raw average key size=5; raw value size=32; "), Some(42));
        assert_eq!(raw_table_bytes("garbage"), None);
    }

    #[test]
    fn prefix_bounds() {
        assert_eq!(prefix_upper_bound(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_upper_bound(&[1, 255]), Some(vec![2]));
        assert_eq!(prefix_upper_bound(&[255, 255]), None);
    }
}
