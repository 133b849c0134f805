"""What the benchmarks behind scripts/bench* share: one `weir run` of a job, timed, and
the steady-state rate from pairs of runs of two lengths."""
import os
import subprocess
import sys
import time


def run_job(weir, work, text, prefix=(), env=None):
    """Writes `text` to `work/job.toml`, clears `work/state`, runs `weir run --fresh`
    (after `prefix`, such as `/usr/bin/time`), and returns (seconds, stderr)."""
    path = os.path.join(work, "job.toml")
    with open(path, "w") as f:
        f.write(text)
    subprocess.run(["rm", "-rf", os.path.join(work, "state")], check=True)
    started = time.perf_counter()
    done = subprocess.run([*prefix, weir, "run", path, "--fresh"], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"weir run failed:\n{done.stderr[-2000:]}")
    return elapsed, done.stderr


def steady(run, n1, n2, runs=3):
    """The best steady-state rate, (n2 - n1) / (t2 - t1), over `runs` pairs of
    `run(n1)` and `run(n2)` (seconds): start-up is not counted."""
    best = 0.0
    for _ in range(runs):
        t1, t2 = run(n1), run(n2)
        if t2 > t1:
            best = max(best, (n2 - n1) / (t2 - t1))
    return best
