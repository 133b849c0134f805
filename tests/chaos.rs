//! Chaos, not just kills: a windowed job on RocksDB at parallelism 3 runs while a driver
//! SIGKILLs it at random moments, fills its checkpoint disk, makes that disk read-only
//! for a while and slows the stage in front of its sink. At the end its committed output
//! equals an uninterrupted run's, every restart succeeded the first time, and no run's
//! peak memory passed the bound (docs/checkpoints.md, "Chaos").
//!
//! The short form runs in CI (about a minute of faults); `WEIR_CHAOS_SECONDS=600 cargo
//! test --test chaos -- --nocapture` runs the long form. The checkpoint disk is a small
//! tmpfs the test mounts, so the test runs as root (as CI does).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The bound on every run's peak resident memory (MiB): channels hold 4 MiB each, the
/// guests' memory is limited, RocksDB's memtables are small at this state size.
const PEAK_MIB: u64 = 600;

/// A tmpfs mounted for the test's checkpoints; unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "the chaos test mounts a tmpfs as its checkpoint disk (to fill it): run it as root, as CI does"
        );
        // Private, so that mounts can be moved within it (see `read_only`).
        let status = Command::new("mount").arg("--make-private").arg(dir).status().unwrap();
        assert!(status.success(), "mount --make-private");
        Tmpfs { dir: dir.to_path_buf() }
    }

    /// Makes `dir` (inside the tmpfs) read-only until [`Tmpfs::writable`]: a bind mount of
    /// it is made read-only where nobody writes (remounting a mount that has writers is
    /// refused) and then moved over it.
    fn read_only(&self, dir: &Path) {
        let stage = self.dir.join("stage");
        std::fs::create_dir_all(&stage).unwrap();
        let mount = |args: &[&std::ffi::OsStr]| {
            let status = Command::new("mount").args(args).status().unwrap();
            assert!(status.success(), "mount {args:?}");
        };
        mount(&["--bind".as_ref(), dir.as_os_str(), stage.as_os_str()]);
        mount(&["-o".as_ref(), "remount,bind,ro".as_ref(), stage.as_os_str()]);
        mount(&["--move".as_ref(), stage.as_os_str(), dir.as_os_str()]);
    }

    fn writable(&self, dir: &Path) {
        let status = Command::new("umount").arg("-l").arg(dir).status().unwrap();
        assert!(status.success(), "umount the read-only bind mount");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A small deterministic random number generator (splitmix64).
struct Random(u64);

impl Random {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % below
    }
}

/// The job: generated events into one-second tumbling counts (RocksDB, parallelism
/// 3), through a stage that sleeps `sink_delay_ms` per record, into a file.
fn write_job(dir: &Path, checkpoints: &Path, events: u64, rate: u64, sink_delay_ms: u64) -> PathBuf {
    let job = dir.join("job.toml");
    std::fs::write(
        &job,
        format!(
            r#"
            name = "chaos"
            checkpoint = {{ interval_ms = 100, dir = {checkpoints:?}, tolerable_failures = 1000000, timeout_ms = 5000 }}
            state = {{ backend = "rocksdb" }}
            channel_mib = 4
            [[source]]
            type = "generator"
            uid = "events"
            count = {events}
            rate = {rate}
            keys = 40
            seed = 7
            step_ms = 10
            [[operator]]
            uid = "count"
            parallelism = 3
            window = {{ type = "tumbling", size_ms = 1000, aggregate = {{ builtin = "count" }} }}
            [[operator]]
            uid = "slow"
            component = {:?}
            config = {{ sleep_ms = {sink_delay_ms} }}
            [[sink]]
            type = "file"
            uid = "out"
            path = "out.jsonl"
            [[edge]]
            from = "events"
            to = "count"
            partition = "keyed"
            [[edge]]
            from = "count"
            to = "slow"
            [[edge]]
            from = "slow"
            to = "out"
            "#,
            guests::PASSTHROUGH
        ),
    )
    .unwrap();
    job
}

/// Starts `weir run` on `job`, its log into `log`.
fn start(job: &Path, log: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("run")
        .arg(job)
        .args(["--plugin-dir", guests::GUEST_DIR, "--log=weir=info"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Fills the file system of `dir` with `dir/filler` until it is full.
fn fill(dir: &Path) {
    use std::io::Write as _;
    let mut filler = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0u8; 64 << 10];
    while filler.write_all(&block).is_ok() {}
}

#[test]
fn a_windowed_job_keeps_exactly_once_through_kills_full_and_read_only_disks_and_a_slow_sink() {
    let seconds: u64 = std::env::var("WEIR_CHAOS_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(45);
    let (events, rate) = (20_000 * seconds.div_ceil(45), 1_000);

    // The reference: the same job, uninterrupted, on an ordinary disk.
    let straight = tempfile::tempdir().unwrap();
    let job = write_job(straight.path(), &straight.path().join("checkpoints"), events, rate * 10, 0);
    let mut child = start(&job, &straight.path().join("log"));
    let status = memory::wait_for(&mut child, Duration::from_secs(600));
    assert!(status.success(), "{}", std::fs::read_to_string(straight.path().join("log")).unwrap());
    let expected = per_key_sequences(&straight.path().join("out.jsonl"));
    assert!(expected.len() == 40, "every key has windows: {}", expected.len());

    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"), "24m");
    let checkpoints = disk.dir.join("checkpoints");
    std::fs::create_dir_all(&checkpoints).unwrap();
    let mut random = Random(seconds);
    let started = Instant::now();
    let (mut runs, mut kills, mut fills, mut read_only, mut restores, mut declined) = (0, 0, 0, 0, 0, 0);
    let mut peak = 0;
    loop {
        runs += 1;
        let chaos = started.elapsed() < Duration::from_secs(seconds);
        let job = write_job(dir.path(), &checkpoints, events, rate, if chaos { random.next(4) } else { 0 });
        let log = dir.path().join(format!("run-{runs}.log"));
        let mut child = start(&job, &log);
        if chaos {
            // One fault per run, at a random moment; a kill ends the run.
            std::thread::sleep(Duration::from_millis(300 + random.next(1500)));
            match random.next(3) {
                0 => {
                    fills += 1;
                    fill(&disk.dir);
                    std::thread::sleep(Duration::from_millis(300 + random.next(1500)));
                    std::fs::remove_file(disk.dir.join("filler")).unwrap();
                }
                1 => {
                    read_only += 1;
                    disk.read_only(&checkpoints);
                    std::thread::sleep(Duration::from_millis(300 + random.next(1500)));
                    disk.writable(&checkpoints);
                }
                _ => {}
            }
            if child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(random.next(500)));
                // The peak so far, read just before the kill (it only grows).
                if child.try_wait().unwrap().is_none() {
                    peak = peak.max(memory::current_peak_mib(child.id()));
                    kills += 1;
                    child.kill().unwrap();
                }
            }
        }
        let status = memory::wait_for(&mut child, Duration::from_secs(600));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains("panicked"), "run {runs}: {text}");
        restores += text.contains("restoring from checkpoint") as usize;
        declined += text.matches("checkpoint declined").count();
        if status.success() {
            assert!(text.contains("job `chaos` finished"), "{text}");
            peak = peak.max(memory::reported_peak_mib(&text));
            break;
        }
        // Only a kill ends a run without success: a restart after anything else that
        // failed, or a restore that failed, is a failure of the test.
        assert!(chaos && status.code().is_none(), "run {runs} failed ({status}): {text}");
    }
    eprintln!(
        "chaos: {runs} runs ({restores} restored from a checkpoint), {kills} kills, {fills} full disks, {read_only} read-only periods \
         ({declined} checkpoints declined), peak {peak} MiB, {:?}",
        started.elapsed()
    );
    assert!(kills > 0 && fills > 0 && read_only > 0, "every fault happened at least once");
    assert!(restores > 0, "no run resumed from a checkpoint");
    assert!(declined > 0, "no checkpoint met a full or read-only disk");
    assert_same_per_key(&per_key_sequences(&dir.path().join("out.jsonl")), &expected, "the committed output after the chaos");
    assert!(peak < PEAK_MIB, "peak resident memory {peak} MiB (bound {PEAK_MIB} MiB)");
}
