"""The per-language keyed-count benchmark behind scripts/bench-languages."""
import os
import re
import subprocess
import sys
import tempfile

from benchlib import run_job, steady

target, out = sys.argv[1], sys.argv[2]
weir = os.path.join(target, "release", "weir")
components = {
    "rust": os.path.join(target, "wasm32-wasip2", "release", "keyed_count.wasm"),
    "python": os.path.join(out, "keyed_count_py.wasm"),
    "js": os.path.join(out, "keyed_count_js.wasm"),
    "c": os.path.join(out, "keyed_count_c.wasm"),
}
# Optional: only the languages named after the directories (Rust always, as the base);
# `pyflink` also runs PyFlink 2.3's keyed count (thread and process mode) beside Python.
args = set(sys.argv[3:])
with_pyflink = "pyflink" in args
only = args - {"pyflink"}
if only:
    components = {k: v for k, v in components.items() if k == "rust" or k in only}
work = tempfile.mkdtemp(prefix="weir-bench-languages-")

JOB = """
name = "bench-languages"
[[source]]
type = "generator"
uid = "events"
count = {count}
keys = 10000
seed = 1
[[operator]]
uid = "count"
component = "{component}"
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


def run(component, count, cache):
    """Seconds of one `weir run` and its peak RSS in MiB."""
    env = dict(os.environ, WEIR_COMPILE_CACHE=cache)
    text = JOB.format(count=count, component=component)
    elapsed, stderr = run_job(weir, work, text, prefix=("/usr/bin/time", "-f", "maxrss %M"), env=env)
    return elapsed, int(re.search(r"maxrss (\d+)", stderr).group(1)) / 1024


print("keyed count, 10 000 keys, generator -> operator -> discard, release host, contract 0.3")
print(f"{'language':<9} {'size MB':>8} {'events/s':>10} {'vs rust':>8} {'start cold':>11} {'start cached':>13} {'peak RSS MiB':>13}")
rates = {}
for language, component in components.items():
    cache = tempfile.mkdtemp(prefix="weir-cache-")
    cold, _ = run(component, 1, cache)
    cached, rss_small = run(component, 1, cache)
    n1, n2 = (1_000_000, 5_000_000) if language in ("rust", "c") else (100_000, 500_000)
    peaks = []

    def timed(n):
        elapsed, rss = run(component, n, cache)
        peaks.append(rss)
        return elapsed

    best = steady(timed, n1, n2)
    rss = max(peaks)
    rates[language] = best
    size = os.path.getsize(component) / 1e6
    print(f"{language:<9} {size:>8.1f} {best:>10,.0f} {best / rates['rust']:>7.2f}x {cold:>10.2f}s {cached:>12.2f}s {rss:>13.0f}")

if with_pyflink and "python" in rates:
    # The same keyed count as a PyFlink KeyedProcessFunction with ValueState, steady state
    # of two run lengths (../shared/bench/pyflink/run.sh, which installs PyFlink once).
    peer = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "bench", "pyflink", "run.sh")
    print("python beside PyFlink 2.3 (same job, steady state)")
    for mode in ("thread", "process"):
        result = subprocess.run(["bash", peer, "keyed", mode], capture_output=True, text=True)
        found = re.search(r"= ([\d,]+) events/s", result.stdout)
        if not found:
            print(f"pyflink {mode}: no result ({result.stderr.strip().splitlines()[-1:]})")
            continue
        pyflink = float(found.group(1).replace(",", ""))
        print(f"pyflink {mode:<8} {pyflink:>10,.0f} events/s; weir python {rates['python']:,.0f}: {rates['python'] / pyflink:.1f}x")
