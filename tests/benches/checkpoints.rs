//! Checkpoint and recovery cost per state backend: value state for 10k, 100k and 1M
//! keys is snapshotted (a first, full checkpoint; then, after 1% of the keys changed, a
//! second one: incremental on RocksDB, full again in memory) and restored.
//!
//! `cargo bench -p weir-host --bench checkpoints`; `WEIR_BENCH_KEYS` (comma-separated)
//! overrides the key counts.

use std::path::Path;
use std::time::{Duration, Instant};

use weir::checkpoint::{CheckpointMetadata, CompletedCheckpoint, FileEntry, TaskState};
use weir::keygroup::assign_key_group;
use weir::state::{KeyedState, MemoryBackend, RocksBackend, SnapshotTarget, StateBackend, StateKind};

struct Measured {
    sync: Duration,
    total: Duration,
    files: Vec<FileEntry>,
    new_bytes: u64,
}

fn snapshot(state: &mut KeyedState, root: &Path, id: u64, known: &[FileEntry]) -> Measured {
    let target = SnapshotTarget {
        root: root.to_path_buf(),
        task_dir: format!("chk-{id:08}/count#0"),
        shared_dir: "shared/count#0".into(),
    };
    let started = Instant::now();
    let writer = state.backend_mut().snapshot(&target).expect("snapshot");
    let sync = started.elapsed();
    let files = writer.write().expect("write");
    let total = started.elapsed();
    let new_bytes = files.iter().filter(|f| !known.contains(f)).map(|f| f.size).sum();
    Measured { sync, total, files, new_bytes }
}

fn checkpoint(root: &Path, files: &[FileEntry]) -> CompletedCheckpoint {
    let mut metadata = CheckpointMetadata {
        format: 1,
        job: "bench".into(),
        id: 1,
        created_ms: 0,
        tasks: Default::default(),
    };
    let timers = FileEntry { path: String::new(), size: 0, crc32: 0 };
    metadata.tasks.insert(
        "count#0".into(),
        TaskState::Operator { watermark: 0, state_version: 0, states: vec![], backend: String::new(), state: files.to_vec(), timers, operator_state: None, channel_state: None, migration: None },
    );
    CompletedCheckpoint { root: root.to_path_buf(), metadata }
}

fn fill(state: &mut KeyedState, keys: u64, round: u64, every: u64) {
    let id = state.declare(StateKind::Value, "count", None).unwrap();
    for k in (0..keys).filter(|k| k % every == 0) {
        let key = format!("key-{k}");
        let kg = assign_key_group(key.as_bytes(), 128);
        state.value_set(id, kg, key.as_bytes(), (round * 1000 + k % 1000).to_string().as_bytes()).unwrap();
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn main() {
    let sizes: Vec<u64> = std::env::var("WEIR_BENCH_KEYS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000, 1_000_000]);
    println!("checkpoints of one value state (key-N → small JSON number), one subtask");
    println!(
        "{:<8} {:>9} {:>12} {:>10} {:>10} {:>12} {:>10} {:>10} {:>12}",
        "backend", "keys", "1st sync ms", "1st ms", "1st MB", "2nd (1%) ms", "2nd new MB", "restore ms", "restore MB/s"
    );
    for &keys in &sizes {
        for backend in ["memory", "rocksdb"] {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("checkpoints");
            let make = || -> Box<dyn StateBackend> {
                match backend {
                    "memory" => Box::new(MemoryBackend::new()),
                    _ => Box::new(RocksBackend::open(&dir.path().join("db")).unwrap()),
                }
            };
            let mut state = KeyedState::new("count", make());
            fill(&mut state, keys, 1, 1);
            let first = snapshot(&mut state, &root, 1, &[]);
            fill(&mut state, keys, 2, 100);
            let second = snapshot(&mut state, &root, 2, &first.files);
            let size: u64 = second.files.iter().map(|f| f.size).sum();
            let completed = checkpoint(&root, &second.files);
            let started = Instant::now();
            let restored: Box<dyn StateBackend> = match backend {
                "memory" => Box::new(MemoryBackend::restore(&completed.root, &second.files).unwrap()),
                _ => Box::new(RocksBackend::restore(&dir.path().join("restored"), &completed.root, &second.files).unwrap()),
            };
            let restore = started.elapsed();
            assert_eq!(restored.len() as u64, keys, "every key restored");
            println!(
                "{backend:<8} {keys:>9} {:>12.1} {:>10.1} {:>10.2} {:>12.1} {:>10.2} {:>10.1} {:>12.1}",
                first.sync.as_secs_f64() * 1e3,
                first.total.as_secs_f64() * 1e3,
                mb(first.files.iter().map(|f| f.size).sum()),
                second.total.as_secs_f64() * 1e3,
                mb(second.new_bytes),
                restore.as_secs_f64() * 1e3,
                mb(size) / restore.as_secs_f64(),
            );
        }
    }
}
