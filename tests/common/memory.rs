//! The peak resident memory of a child process, as the kernel accounted it.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Waits for `child` to exit (killing it and failing the test after `timeout`) and
/// returns its peak resident set in MiB with its exit status. The peak is the kernel's
/// `ru_maxrss` from `wait4`, taken as the child is reaped: it covers the whole life of
/// the process, so no spike between polls is missed, and a peak that could not be
/// measured fails the test instead of reading as zero.
pub fn wait_with_peak_rss_mib(child: &mut Child, timeout: Duration) -> (u64, ExitStatus) {
    let pid = child.id() as libc::pid_t;
    let started = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid out-parameter; `pid` is our own child.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(reaped >= 0, "wait4 on process {pid} failed: {}", std::io::Error::last_os_error());
        if reaped == pid {
            let kib = usage.ru_maxrss;
            assert!(kib > 0, "the kernel reported no peak resident memory for process {pid}");
            return (kib as u64 / 1024, ExitStatus::from_raw(status));
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            panic!("process {pid} did not finish in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
