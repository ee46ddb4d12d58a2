"""Start-up costs a researcher waits through, and the dashboards nobody watches.

    .venv/bin/python benchmarks/startup.py [--repeats 7] [--threads 1] [--notebooks 3] [--first-run-only]

1. `import esacl` against `import torch`: each timed in a fresh interpreter (wall-clock of
   `python -c "import X"`, interpreter start included), the two alternating so that a change in the
   machine's load hits both; the median of `--repeats`, the ratio, and the slowest modules
   `import esacl` loads beyond torch's.
2. One split_digits `esacl` notebook (landscape off) executed as `esacl notebook` executes it, with
   its dashboards headless (what `esacl notebook`, sweeps and reports do: one draw at the end) and
   live (a draw per task end and per epoch, as in JupyterLab), alternating, median of `--notebooks`;
   and the execution's time outside the run itself (kernel start, imports, papermill, writing the
   notebook: the start-up a grid point pays), from the run directory's first and last file.
3. A 3-point `esacl notebook` grid (seeds 0, 1, 2) with a fresh kernel per point (as before) and with
   one reused kernel (as `esacl notebook` grids run now): each point's time outside its run.
4. The same 3 points as a local sweep on one worker: a fresh worker process and kernel per point (the
   engine's former shape) against one worker that reuses its kernel (now): each point's seconds in
   `sweep.json` less its run.
5. The split_digits notebook's first run as a person makes it: its own parameters unchanged, dashboards
   live, a fresh kernel (as Run All in JupyterLab, less the browser's drawing); where the time goes:
   training, the task ends' work, sharpness measurement (the run's own timings) and the rest (kernel
   start, imports, dashboards, saving). `--first-run-only` runs this part alone.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def wall(code: str, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return time.perf_counter() - start


def slowest_extra_imports(env: dict, n: int = 5) -> list[tuple[str, float]]:
    """The modules of `import esacl` with the largest cumulative import time, outside torch."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import esacl"], env=env, capture_output=True, text=True, check=True
    )
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].strip()
            if name.split(".")[0] not in ("torch", "esacl") and parts[2].startswith(" "):
                rows.append((name, int(parts[1]) / 1e6))
    top = [r for r in rows if not r[0].startswith("_")]
    return sorted(top, key=lambda r: -r[1])[:n]


def notebook_seconds(headless: bool, seed: int = 0, kernel=None) -> tuple[float, float]:
    """(execution wall-clock, the part outside the run) of one split_digits esacl notebook."""
    from workbench import execute

    # Live: the kernel is not told it is headless (the variable it reads is set under another name).
    execute.HEADLESS = "ESACL_HEADLESS" if headless else "ESACL_HEADLESS_NOT_READ"
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run_dir = execute.execute_notebook(
            "split_digits", dict(method="esacl", landscape=False, seed=seed), out=out, kernel=kernel
        )
        wall = time.perf_counter() - start
        first = (Path(run_dir) / "config.json").stat().st_mtime
        last = (Path(run_dir) / "accuracy.json").stat().st_mtime
    return wall, wall - (last - first)


def first_run() -> dict:
    """Seconds of the split_digits notebook executed with its own parameters, dashboards live, and
    the run's parts of them."""
    import json

    from workbench import execute

    execute.HEADLESS = "ESACL_HEADLESS_NOT_READ"  # live, as in JupyterLab
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run_dir = execute.execute_notebook("split_digits", {}, out=out)
        total = time.perf_counter() - start
        tasks = [e for e in map(json.loads, (Path(run_dir) / "metrics.jsonl").open()) if e.get("event") == "task"]
    parts = dict(
        training=tasks[-1]["train_seconds"],
        task_ends=sum(e.get("task_end_seconds", 0.0) for e in tasks),
        sharpness=sum(e.get("landscape_seconds", 0.0) for e in tasks),
    )
    return dict(total=total, **parts, rest=total - sum(parts.values()))


def grid_startup(reuse: bool) -> list[float]:
    """Each point's seconds outside its run in a 3-point grid (seeds 0, 1, 2)."""
    from workbench.execute import Kernel

    with Kernel(reusable=reuse) as kernel:
        return [notebook_seconds(True, seed, kernel if reuse else None)[1] for seed in (0, 1, 2)]


def sweep_startup(reuse: bool) -> list[float]:
    """Each point's seconds outside its run in a 3-point local sweep (seeds 0, 1, 2) on one worker."""
    from workbench import sweep

    local = sweep._local
    sweep._local = lambda *args, **kwargs: local(*args, **kwargs, reuse=reuse)
    grid = dict(notebook="split_digits", fixed=dict(method="esacl", landscape=False), axes=dict(seed=[0, 1, 2]))
    try:
        with tempfile.TemporaryDirectory() as out:
            result = sweep.run_sweep(grid, out, workers=1, progress=False)
            outside = []
            for name, point in result.points.items():
                run = (Path(out) / name / "accuracy.json").stat().st_mtime - (
                    Path(out) / name / "config.json"
                ).stat().st_mtime
                outside.append(point["seconds"] - run)
    finally:
        sweep._local = local
    return outside


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the children")
    parser.add_argument("--notebooks", type=int, default=3, help="notebook executions per setting (0: skip)")
    parser.add_argument("--first-run-only", action="store_true", help="only part 5, the notebook's first run")
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    load = os.getloadavg()[0]
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the kernels inherit it
    if args.first_run_only:
        return print_first_run(load)
    wall("import torch", env)  # warm the file cache for both
    torch_s, esacl_s = [], []
    for _ in range(args.repeats):
        torch_s.append(wall("import torch", env))
        esacl_s.append(wall("import esacl", env))
    t, e = statistics.median(torch_s), statistics.median(esacl_s)
    print(f"fresh interpreter, median of {args.repeats}, OMP_NUM_THREADS={args.threads}")
    print(f"{'import torch':16s}{t:7.2f} s")
    print(f"{'import esacl':16s}{e:7.2f} s   {e / t:.2f}x torch")
    print("slowest imports besides torch's: " + ", ".join(f"{m} {s:.2f} s" for m, s in slowest_extra_imports(env)))
    if args.notebooks:
        runs = {True: [], False: []}
        for _ in range(args.notebooks):
            for headless in (False, True):
                runs[headless].append(notebook_seconds(headless))
        print(f"split_digits esacl notebook (landscape off), median of {args.notebooks}:")
        for headless in (False, True):
            total = statistics.median(w for w, _ in runs[headless])
            outside = statistics.median(o for _, o in runs[headless])
            print(
                f"  dashboards {'headless' if headless else 'live':9s}{total:7.2f} s, of which {outside:.2f} s "
                f"outside the run (start-up and saving)"
            )
        print("a 3-point grid (seeds 0, 1, 2), each point's seconds outside its run:")
        for reuse in (False, True):
            points = grid_startup(reuse)
            print(
                f"  {'one kernel for the grid' if reuse else 'a fresh kernel per point':26s}"
                + "  ".join(f"{p:5.2f}" for p in points)
            )
        print("a 3-point local sweep on one worker, each point's seconds outside its run:")
        for reuse in (False, True):
            points = sweep_startup(reuse)
            print(
                f"  {'one worker and kernel' if reuse else 'a fresh worker per point':26s}"
                + "  ".join(f"{p:5.2f}" for p in points)
            )
    print_first_run(load)


def print_first_run(load: float) -> None:
    t = first_run()
    print(
        f"split_digits notebook, its own parameters, dashboards live: {t['total']:.1f} s = training "
        f"{t['training']:.1f} + task ends {t['task_ends']:.1f} + sharpness {t['sharpness']:.1f} + kernel start, "
        f"imports, dashboards and saving {t['rest']:.1f}"
    )
    print(f"{len(os.sched_getaffinity(0))} usable cores; load average before {load:.2f}")


if __name__ == "__main__":
    main()
