"""The per-language keyed-count benchmark behind scripts/bench-languages."""
import os
import re
import subprocess
import sys
import tempfile
import time

target, out = sys.argv[1], sys.argv[2]
weir = os.path.join(target, "release", "weir")
components = {
    "rust": os.path.join(target, "wasm32-wasip2", "release", "keyed_count.wasm"),
    "python": os.path.join(out, "keyed_count_py.wasm"),
    "js": os.path.join(out, "keyed_count_js.wasm"),
}
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
    path = os.path.join(work, "job.toml")
    with open(path, "w") as f:
        f.write(JOB.format(count=count, component=component))
    env = dict(os.environ, WEIR_COMPILE_CACHE=cache)
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "maxrss %M", weir, "run", path, "--fresh"],
                          capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"weir run failed:\n{done.stderr[-2000:]}")
    rss = int(re.search(r"maxrss (\d+)", done.stderr).group(1)) / 1024
    return elapsed, rss


print("keyed count, 10 000 keys, generator -> operator -> discard, release host, contract 0.2")
print(f"{'language':<9} {'size MB':>8} {'events/s':>10} {'vs rust':>8} {'start cold':>11} {'start cached':>13} {'peak RSS MiB':>13}")
rates = {}
for language, component in components.items():
    cache = tempfile.mkdtemp(prefix="weir-cache-")
    cold, _ = run(component, 1, cache)
    cached, rss_small = run(component, 1, cache)
    n1, n2 = (1_000_000, 5_000_000) if language == "rust" else (100_000, 500_000)
    best = 0.0
    for _ in range(3):
        t1, _ = run(component, n1, cache)
        t2, rss = run(component, n2, cache)
        if t2 > t1:
            best = max(best, (n2 - n1) / (t2 - t1))
    rates[language] = best
    size = os.path.getsize(component) / 1e6
    print(f"{language:<9} {size:>8.1f} {best:>10,.0f} {best / rates['rust']:>7.2f}x {cold:>10.2f}s {cached:>12.2f}s {rss:>13.0f}")
