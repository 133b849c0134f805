//! # Task metrics
//!
//! The counters every task keeps (records in and out, late, skipped and unrouted
//! records, end-to-end latency at sinks). Tasks update them; the job's summary and the
//! control API read them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hdrhistogram::Histogram;

/// The counters of one task. Updated by the task, read by anyone.
#[derive(Default)]
pub struct TaskMetrics {
    records_in: AtomicU64,
    records_out: AtomicU64,
    late_dropped: AtomicU64,
    late_routed: AtomicU64,
    skipped: AtomicU64,
    unrouted: AtomicU64,
    /// Records rejected (malformed input, a row the sink's target refused) and sent to
    /// the node's `dlq` output.
    dead_lettered: AtomicU64,
    latency: Mutex<Option<Histogram<u64>>>,
    /// An operator subtask's event-time watermark, state size and pending timers, as
    /// last published (every half second while it runs).
    watermark: std::sync::atomic::AtomicI64,
    state_bytes: AtomicU64,
    timers: AtomicU64,
    /// Calls into an operator's logic (a run of elements, or a timer) and their time.
    calls: AtomicU64,
    call_ns: AtomicU64,
    /// Time spent waiting for room in a full downstream channel (back-pressure).
    backpressured_ns: AtomicU64,
    /// A source's records not read yet (Kafka: the consumer lag) plus one; zero when it
    /// does not know.
    pending: AtomicU64,
    /// The back-pressured share of the last full second, and where that second began.
    backpressure: Mutex<BackpressureWindow>,
}

/// The sample the back-pressure ratio is computed over (as Flink's
/// `backPressuredTimeMsPerSecond`, refreshed about every second).
#[derive(Debug)]
struct BackpressureWindow {
    start: std::time::Instant,
    start_ns: u64,
    ratio: f64,
}

impl Default for BackpressureWindow {
    fn default() -> Self {
        BackpressureWindow { start: std::time::Instant::now(), start_ns: 0, ratio: 0.0 }
    }
}

impl std::fmt::Debug for TaskMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskMetrics")
            .field("records_in", &self.records_in())
            .field("records_out", &self.records_out())
            .field("late_dropped", &self.late_dropped())
            .field("late_routed", &self.late_routed())
            .finish_non_exhaustive()
    }
}

impl TaskMetrics {
    pub fn records_in(&self) -> u64 {
        self.records_in.load(Relaxed)
    }
    pub fn records_out(&self) -> u64 {
        self.records_out.load(Relaxed)
    }
    pub fn late_dropped(&self) -> u64 {
        self.late_dropped.load(Relaxed)
    }
    pub fn late_routed(&self) -> u64 {
        self.late_routed.load(Relaxed)
    }
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Relaxed)
    }
    pub fn unrouted(&self) -> u64 {
        self.unrouted.load(Relaxed)
    }
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Relaxed)
    }
    /// The end-to-end latency histogram a sink recorded, if any.
    pub fn latency(&self) -> std::sync::MutexGuard<'_, Option<Histogram<u64>>> {
        self.latency.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn add_in(&self, n: u64) {
        self.records_in.fetch_add(n, Relaxed);
    }
    pub fn add_out(&self, n: u64) {
        self.records_out.fetch_add(n, Relaxed);
    }
    pub fn add_late_dropped(&self, n: u64) {
        self.late_dropped.fetch_add(n, Relaxed);
    }
    pub fn add_late_routed(&self, n: u64) {
        self.late_routed.fetch_add(n, Relaxed);
    }
    pub fn add_skipped(&self, n: u64) {
        self.skipped.fetch_add(n, Relaxed);
    }
    pub fn add_unrouted(&self, n: u64) {
        self.unrouted.fetch_add(n, Relaxed);
    }
    pub fn add_dead_lettered(&self, n: u64) {
        self.dead_lettered.fetch_add(n, Relaxed);
    }
    pub fn watermark(&self) -> i64 {
        self.watermark.load(Relaxed)
    }
    pub fn state_bytes(&self) -> u64 {
        self.state_bytes.load(Relaxed)
    }
    pub fn timers(&self) -> u64 {
        self.timers.load(Relaxed)
    }
    pub fn calls(&self) -> u64 {
        self.calls.load(Relaxed)
    }
    pub fn call_ns(&self) -> u64 {
        self.call_ns.load(Relaxed)
    }
    /// Counts one call into an operator's logic that took `took`.
    pub fn add_call(&self, took: std::time::Duration) {
        self.calls.fetch_add(1, Relaxed);
        self.call_ns.fetch_add(took.as_nanos() as u64, Relaxed);
    }
    /// Publishes an operator subtask's watermark, state size in bytes and pending timers.
    pub fn set_operator_gauges(&self, watermark: i64, state_bytes: u64, timers: u64) {
        self.watermark.store(watermark, Relaxed);
        self.state_bytes.store(state_bytes, Relaxed);
        self.timers.store(timers, Relaxed);
    }
    /// Counts time spent waiting for room downstream.
    pub fn add_backpressured(&self, waited: std::time::Duration) {
        self.backpressured_ns.fetch_add(waited.as_nanos() as u64, Relaxed);
    }
    /// The total time spent waiting for room downstream.
    pub fn backpressured(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.backpressured_ns.load(Relaxed))
    }
    /// The share of time (0 to 1) the task waited for room downstream, over the last
    /// second or so: as Flink's back-pressure ratio (`backPressuredTimeMsPerSecond` / 1000).
    pub fn backpressure_ratio(&self) -> f64 {
        let mut window = self.backpressure.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = window.start.elapsed();
        if elapsed >= std::time::Duration::from_secs(1) {
            let now_ns = self.backpressured_ns.load(Relaxed);
            window.ratio = ((now_ns - window.start_ns) as f64 / elapsed.as_nanos() as f64).clamp(0.0, 1.0);
            window.start = std::time::Instant::now();
            window.start_ns = now_ns;
        }
        window.ratio
    }
    /// Publishes how many records a source has yet to read (`None`: it does not know).
    pub fn set_pending(&self, pending: Option<u64>) {
        self.pending.store(pending.map_or(0, |p| p.saturating_add(1)), Relaxed);
    }
    /// A source's records not read yet, as last published.
    pub fn pending(&self) -> Option<u64> {
        self.pending.load(Relaxed).checked_sub(1)
    }
    pub fn set_latency(&self, histogram: Histogram<u64>) {
        *self.latency.lock().unwrap_or_else(|e| e.into_inner()) = Some(histogram);
    }
}

/// The peak resident memory in MiB of this process (`pid` `None`) or of process `pid`:
/// Linux's `VmHWM`, of the program's own address space, unlike `getrusage`, whose peak
/// includes the memory of the process it was forked from. `None` where the system does
/// not say (or the process has exited).
pub fn peak_resident_mib(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        None => "/proc/self/status".to_string(),
        Some(pid) => format!("/proc/{pid}/status"),
    };
    let status = std::fs::read_to_string(path).ok()?;
    let kib: u64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib / 1024)
}
