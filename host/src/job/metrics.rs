//! Counters per task, and the summary printed when a job ends.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::spec::NodeKind;

/// The counters of one task. Updated by the task, read by anyone.
#[derive(Default)]
pub struct TaskMetrics {
    records_in: AtomicU64,
    records_out: AtomicU64,
    late_dropped: AtomicU64,
    late_routed: AtomicU64,
    skipped: AtomicU64,
    unrouted: AtomicU64,
    latency: Mutex<Option<Histogram<u64>>>,
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
    pub fn set_latency(&self, histogram: Histogram<u64>) {
        *self.latency.lock().unwrap_or_else(|e| e.into_inner()) = Some(histogram);
    }
}

/// Totals of one node (source, operator or sink) over its subtasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSummary {
    pub uid: String,
    pub kind: NodeKind,
    pub parallelism: u32,
    pub records_in: u64,
    pub records_out: u64,
    pub late_dropped: u64,
    pub late_routed: u64,
    pub skipped: u64,
    pub unrouted: u64,
}

/// End-to-end latency percentiles over every sink, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// What a job did.
#[derive(Debug, Clone)]
pub struct JobSummary {
    pub name: String,
    pub duration: Duration,
    pub nodes: Vec<NodeSummary>,
    pub latency: Option<LatencySummary>,
    /// The job was stopped (Ctrl-C or a failure) before its inputs ended.
    pub cancelled: bool,
    /// How often the job restarted from a checkpoint after a failure.
    pub restarts: u32,
}

impl JobSummary {
    pub(crate) fn collect(
        name: &str,
        duration: Duration,
        nodes: &[(String, NodeKind, Vec<std::sync::Arc<TaskMetrics>>)],
        cancelled: bool,
    ) -> Self {
        let mut merged: Option<Histogram<u64>> = None;
        let nodes = nodes
            .iter()
            .map(|(uid, kind, tasks)| {
                let sum = |f: &dyn Fn(&TaskMetrics) -> &AtomicU64| {
                    tasks.iter().map(|t| f(t).load(Relaxed)).sum()
                };
                for task in tasks {
                    if let Some(h) = task.latency.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                        match merged.as_mut() {
                            Some(m) => {
                                let _ = m.add(h);
                            }
                            None => merged = Some(h.clone()),
                        }
                    }
                }
                NodeSummary {
                    uid: uid.clone(),
                    kind: *kind,
                    parallelism: tasks.len() as u32,
                    records_in: sum(&|t| &t.records_in),
                    records_out: sum(&|t| &t.records_out),
                    late_dropped: sum(&|t| &t.late_dropped),
                    late_routed: sum(&|t| &t.late_routed),
                    skipped: sum(&|t| &t.skipped),
                    unrouted: sum(&|t| &t.unrouted),
                }
            })
            .collect();
        let latency = merged.filter(|h| !h.is_empty()).map(|h| LatencySummary {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        });
        JobSummary { name: name.into(), duration, nodes, latency, cancelled, restarts: 0 }
    }

    /// The summary of the node called `uid`.
    pub fn node(&self, uid: &str) -> Option<&NodeSummary> {
        self.nodes.iter().find(|n| n.uid == uid)
    }
}

impl fmt::Display for JobSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.cancelled { "stopped" } else { "finished" };
        writeln!(f, "job `{}` {state} in {:.3} s", self.name, self.duration.as_secs_f64())?;
        if self.restarts > 0 {
            writeln!(f, "  restarted {} time(s) from checkpoints", self.restarts)?;
        }
        writeln!(
            f,
            "  {:<20} {:<9} {:>4} {:>12} {:>12} {:>10} {:>10} {:>8} {:>9}",
            "uid", "kind", "par", "records in", "records out", "late drop", "late out", "skipped", "unrouted"
        )?;
        for n in &self.nodes {
            let kind = match n.kind {
                NodeKind::Source => "source",
                NodeKind::Operator => "operator",
                NodeKind::Sink => "sink",
            };
            writeln!(
                f,
                "  {:<20} {:<9} {:>4} {:>12} {:>12} {:>10} {:>10} {:>8} {:>9}",
                n.uid, kind, n.parallelism, n.records_in, n.records_out, n.late_dropped,
                n.late_routed, n.skipped, n.unrouted
            )?;
        }
        if let Some(l) = &self.latency {
            writeln!(
                f,
                "  latency source→sink: p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
                l.p50_us, l.p99_us, l.p999_us, l.max_us
            )?;
        }
        Ok(())
    }
}
