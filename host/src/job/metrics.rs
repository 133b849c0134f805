//! Counters per task, and the summary printed when a job ends.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::spec::NodeKind;

pub use crate::metrics::TaskMetrics;


/// Totals of one node (source, operator or sink) over its subtasks.
#[derive(Debug, Clone, PartialEq)]
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
    /// Records sent to the node's `dlq` output.
    pub dead_lettered: u64,
    /// Operators: the lowest watermark of its subtasks, its state's size in bytes and its
    /// pending timers, as last published (about every half second).
    pub watermark: Option<i64>,
    pub state_bytes: u64,
    pub timers: u64,
    /// Operators: calls into their logic (runs of elements, timers) and the time in them.
    pub calls: u64,
    pub call_time: Duration,
    /// Time its subtasks waited for room downstream, and the highest share of the last
    /// second any subtask waited (Flink's back-pressure ratio, 0 to 1).
    pub backpressured: Duration,
    pub backpressure_ratio: f64,
    /// Sources: records there are to read that it has not read (Kafka: consumer lag).
    pub pending: Option<u64>,
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
                let sum = |f: &dyn Fn(&TaskMetrics) -> u64| tasks.iter().map(|t| f(t)).sum();
                for task in tasks {
                    if let Some(h) = task.latency().as_ref() {
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
                    records_in: sum(&|t| t.records_in()),
                    records_out: sum(&|t| t.records_out()),
                    late_dropped: sum(&|t| t.late_dropped()),
                    late_routed: sum(&|t| t.late_routed()),
                    skipped: sum(&|t| t.skipped()),
                    unrouted: sum(&|t| t.unrouted()),
                    dead_lettered: sum(&|t| t.dead_lettered()),
                    watermark: (*kind == NodeKind::Operator).then(|| tasks.iter().map(|t| t.watermark()).min()).flatten(),
                    state_bytes: sum(&|t| t.state_bytes()),
                    timers: sum(&|t| t.timers()),
                    calls: sum(&|t| t.calls()),
                    call_time: Duration::from_nanos(sum(&|t| t.call_ns())),
                    backpressured: tasks.iter().map(|t| t.backpressured()).sum(),
                    backpressure_ratio: tasks.iter().map(|t| t.backpressure_ratio()).fold(0.0, f64::max),
                    pending: tasks.iter().filter_map(|t| t.pending()).reduce(|a, b| a + b),
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
            "  {:<20} {:<9} {:>4} {:>12} {:>12} {:>10} {:>10} {:>8} {:>9} {:>12}",
            "uid", "kind", "par", "records in", "records out", "late drop", "late out", "skipped", "unrouted", "dead letters"
        )?;
        for n in &self.nodes {
            let kind = match n.kind {
                NodeKind::Source => "source",
                NodeKind::Operator => "operator",
                NodeKind::Sink => "sink",
            };
            writeln!(
                f,
                "  {:<20} {:<9} {:>4} {:>12} {:>12} {:>10} {:>10} {:>8} {:>9} {:>12}",
                n.uid, kind, n.parallelism, n.records_in, n.records_out, n.late_dropped,
                n.late_routed, n.skipped, n.unrouted, n.dead_lettered
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
