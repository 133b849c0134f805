"""The window benchmark behind scripts/bench-windows: weir through its CLI, and Flink."""
import os
import re
import subprocess
import sys
import tempfile

from benchlib import run_job, steady

target, cache = sys.argv[1], sys.argv[2]
quick = "quick" in sys.argv[3:]
weir = os.path.join(target, "release", "weir")
component = os.path.join(target, "wasm32-wasip2", "release", "window_count.wasm")
lib = os.path.join(cache, "pyflink", "lib")
classes = os.path.join(cache, "window-classes")
work = tempfile.mkdtemp(prefix="weir-bench-windows-")

WINDOWS = {
    "tumbling": 'type = "tumbling", size_ms = 60000',
    "sliding": 'type = "sliding", size_ms = 600000, slide_ms = 60000',
}

JOB = """
name = "bench-windows"
state = {{ backend = "{backend}", dir = "{work}/state" }}
[[source]]
type = "generator"
uid = "events"
count = {count}
keys = 10000
seed = 1
[[operator]]
uid = "window"
window = {{ {window}, aggregate = {aggregate} }}
[[sink]]
type = "discard"
uid = "sink"
[[edge]]
from = "events"
to = "window"
partition = "keyed"
[[edge]]
from = "window"
to = "sink"
"""


def weir_seconds(kind, aggregate, backend, count):
    text = JOB.format(backend=backend, work=work, count=count, window=WINDOWS[kind], aggregate=aggregate)
    return run_job(weir, work, text)[0]


def flink_seconds(kind, backend, count):
    done = subprocess.run(
        ["java", "--add-opens", "java.base/java.util=ALL-UNNAMED", "--add-opens", "java.base/java.lang=ALL-UNNAMED",
         "-cp", f"{classes}:{lib}/*", "WindowBench", str(count), kind, backend],
        capture_output=True, text=True)
    found = re.search(r": ([\d.]+) s,", done.stdout)
    if not found:
        sys.exit(f"Flink failed:\n{done.stderr[-800:]}")
    return float(found.group(1))


have_flink = os.path.isdir(classes) and subprocess.run(["which", "java"], capture_output=True).returncode == 0
backends = ["memory"] if quick else ["memory", "rocksdb"]
print("window counts per key, 10 000 keys, event time = sequence (ms); steady state through `weir run`")
print(f"{'window':<9} {'state':<8} {'function':<9} {'events/s':>12} {'ns/event':>9} {'vs flink':>9}")
for backend in backends:
    n1, n2 = (2_000_000, 12_000_000) if backend == "memory" else (1_000_000, 4_000_000)
    for kind in ["tumbling", "sliding"]:
        flink = None
        if have_flink:
            flink = steady(lambda n: flink_seconds(kind, "hashmap" if backend == "memory" else "rocksdb", n), n1, n2, runs=2)
            print(f"{kind:<9} {backend:<8} {'flink':<9} {flink:>12,.0f} {1e9 / flink:>9.0f} {'1.00x':>9}")
        for label, aggregate in [("builtin", '{ builtin = "count" }'), ("wasm", f'{{ component = "{component}" }}')]:
            rate = steady(lambda n: weir_seconds(kind, aggregate, backend, n), n1, n2)
            ratio = f"{rate / flink:.2f}x" if flink else "-"
            print(f"{kind:<9} {backend:<8} {label:<9} {rate:>12,.0f} {1e9 / rate:>9.0f} {ratio:>9}")
