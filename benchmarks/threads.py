"""How much one busy process beside a run slows it, by OpenMP wait policy and thread count.

    .venv/bin/python benchmarks/threads.py [--method esacl] [--n-tasks 5] [--epochs 1] [--repeats 3]

Each measurement is a fresh Python process that trains one split_digits run and reports its training
seconds (the run's own `train_seconds`: no start-up, no evaluation). It runs once on the idle machine
and once beside a competing process that keeps one core busy (a Python busy loop), for:
- `threads = cores`: OpenMP's own wait policy, the `threads` key at the usable cores (the default
  before runs looked at the machine);
- `default`: no `threads` key: the cores less one per core other processes keep busy at the start;
- `passive, threads = cores`: `OMP_WAIT_POLICY=PASSIVE` (what sweep workers get), threads at the cores;
- `threads 1`: the `threads` key at 1.
Prints the idle and busy seconds (median of `--repeats`) and the slowdown busy / idle side by side,
with the machine's cores and load. The machine should be otherwise idle: the point is one competitor.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = """
import json, sys
threads, method, n_tasks, epochs = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
import tempfile
import esacl
with tempfile.TemporaryDirectory() as out:
    record = esacl.run(dict(method=method, n_tasks=n_tasks, epochs=epochs, progress=False, out=out,
                            threads=threads or None))
    threads = json.loads((record.path / "env.json").read_text())["threads"]     # the count the run used
    print(json.dumps(dict(seconds=record.efficiency["train_seconds"], threads=threads)))
"""

BUSY = "while True:\n    pass\n"

CORES = len(os.sched_getaffinity(0))
SETTINGS = [
    ("threads = cores", "default", CORES),
    ("default", "default", 0),
    ("passive, threads = cores", "passive", CORES),
    ("threads 1", "default", 1),
]


def measure(policy: str, threads: int, args, busy: bool) -> tuple[float, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    competitor = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    try:
        if competitor:
            time.sleep(0.5)
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(threads), args.method, str(args.n_tasks), str(args.epochs)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        if competitor:
            competitor.kill()
            competitor.wait()
    said = json.loads(done.stdout.strip().splitlines()[-1])
    return said["seconds"], said["threads"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="esacl")
    parser.add_argument("--n-tasks", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = []
    for label, policy, threads in SETTINGS:
        times, used = {}, {}
        for busy in (False, True):
            runs = [measure(policy, threads, args, busy) for _ in range(args.repeats)]
            times[busy] = statistics.median(s for s, _ in runs)
            used[busy] = "/".join(sorted({str(n) for _, n in runs}))
            print(
                f"  {label:26s} {'busy' if busy else 'idle'}: {[round(s, 2) for s, _ in runs]} s "
                f"({used[busy]} threads)",
                file=sys.stderr,
                flush=True,
            )
        rows.append((label, f"{used[False]}/{used[True]}", times[False], times[True]))
    print(
        f"split_digits {args.method}, {args.n_tasks} tasks x {args.epochs} epoch(s): training seconds, median of "
        f"{args.repeats}; busy = beside one process spinning on one core"
    )
    print(f"{'setting':26s}{'threads idle/busy':>18s}{'idle s':>9s}{'busy s':>9s}{'slowdown':>10s}")
    for label, used, idle, busy in rows:
        print(f"{label:26s}{used:>18s}{idle:9.2f}{busy:9.2f}{busy / idle:9.1f}x")
    print(f"{CORES} usable cores; load average before the measurements {load:.2f}")


if __name__ == "__main__":
    main()
