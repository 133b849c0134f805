"""The keyed-count benchmark behind scripts/bench: weir through its CLI, and the Flink peer."""
import os
import re
import subprocess
import sys
import tempfile

from benchlib import run_job, steady

target = sys.argv[1]
quick = "quick" in sys.argv[2:]
weir = os.path.join(target, "release", "weir")
component = os.path.join(target, "wasm32-wasip2", "release", "keyed_count.wasm")
flink = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "bench", "flink", "run.sh")
work = tempfile.mkdtemp(prefix="weir-bench-")

JOB = """
name = "bench-keyed-count"
state = {{ backend = "{backend}", dir = "{work}/state" }}
[[source]]
type = "generator"
uid = "events"
count = {count}
keys = 10000
seed = 1
{rate}
[[operator]]
uid = "count"
{operator}
parallelism = {parallelism}
[[sink]]
type = "discard"
uid = "sink"
[[edge]]
from = "events"
to = "count"
partition = "keyed"
[[edge]]
from = "count"
to = "sink"
"""


def weir_run(operator, backend, parallelism, count, rate=None):
    """Wall-clock seconds of `weir run` and its latency line."""
    text = JOB.format(backend=backend, work=work, count=count, parallelism=parallelism,
                      operator=operator, rate=f"rate = {rate}" if rate else "")
    elapsed, stderr = run_job(weir, work, text)
    latency = re.search(r"latency source→sink: p50 (\d+) µs, p99 (\d+) µs", stderr)
    return elapsed, latency.groups() if latency else ("-", "-")


def flink_rate(backend):
    if not os.path.exists(flink) or subprocess.run(["which", "java"], capture_output=True).returncode:
        return None
    done = subprocess.run(["bash", flink, "json", "1", backend], capture_output=True, text=True)
    found = re.search(r"steady state: ([\d,]+) events/s", done.stdout)
    if not found:
        print(f"(the Flink peer failed: {done.stderr[-500:]})")
        return None
    return float(found.group(1).replace(",", ""))


configs = [("memory", 1)] if quick else [("memory", 1), ("memory", 2), ("rocksdb", 1)]
print("keyed count, 10 000 keys, JSON in and out, discarding sink; steady state through `weir run`")
peers = {}
for backend in sorted({b for b, _ in configs}):
    peers[backend] = flink_rate("hashmap" if backend == "memory" else "rocksdb")
    shown = f"{peers[backend]:,.0f} events/s" if peers[backend] else "not run (needs Java 17)"
    print(f"flink 2.3, {'heap' if backend == 'memory' else 'RocksDB'} state, p=1: {shown}")
print(f"{'operator':<8} {'state':<8} {'par':>3} {'events/s':>12} {'ns/event':>9} {'vs flink':>9} {'wasm/native':>12}")
for backend, parallelism in configs:
    n1, n2 = (2_000_000, 12_000_000) if backend == "memory" else (1_000_000, 4_000_000)
    rates = {}
    for label, operator in [("native", 'native = "keyed-count"'), ("wasm", f'component = "{component}"')]:
        rates[label] = steady(lambda n: weir_run(operator, backend, parallelism, n)[0], n1, n2)
        peer = peers.get(backend)
        ratio = f"{rates[label] / peer:.2f}x" if peer else "-"
        wn = f"{rates['wasm'] / rates['native']:.2f}" if label == "wasm" else ""
        print(f"{label:<8} {backend:<8} {parallelism:>3} {rates[label]:>12,.0f} {1e9 / rates[label]:>9.0f} {ratio:>9} {wn:>12}")
for label, operator in [("native", 'native = "keyed-count"'), ("wasm", f'component = "{component}"')]:
    _, (p50, p99) = weir_run(operator, "memory", 1, 1_000_000, rate=100_000)
    print(f"latency at 100 000 events/s paced, {label}: p50 {p50} µs, p99 {p99} µs")
