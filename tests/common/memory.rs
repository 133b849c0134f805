//! The peak resident memory of a `weir` process.
//!
//! Not from `wait4`/`getrusage`: their peak includes the address space of the process a
//! child was forked from (the test, which may hold hundreds of MiB of input), which
//! Linux carries over `exec`. `weir run` prints its own peak (`VmHWM`) in its summary,
//! and a running process's peak is read from `/proc/<pid>/status`. A peak that cannot
//! be read fails the test rather than reading as zero.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// The peak `weir run` reported at its end (`peak resident memory: N MiB`).
pub fn reported_peak_mib(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("peak resident memory: ")?.strip_suffix(" MiB")?.parse().ok())
        .unwrap_or_else(|| panic!("weir reported no peak resident memory:\n{stderr}"))
}

/// The peak resident memory so far of the running process `pid` (its `VmHWM`).
pub fn current_peak_mib(pid: u32) -> u64 {
    weir::metrics::peak_resident_mib(Some(pid))
        .unwrap_or_else(|| panic!("cannot read the peak memory of process {pid} (has it exited?)"))
}

/// Waits for `child` to exit, killing it and failing the test after `timeout`.
pub fn wait_for(child: &mut Child, timeout: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            panic!("process {} did not finish in {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
