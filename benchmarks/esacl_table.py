"""EsaCL against its baselines on split_digits: accuracy, forgetting, pruning jump, FLOPs, step time.

    .venv/bin/python benchmarks/esacl_table.py [--seeds 0,1,2] [--sparsities 0.75,0.9,0.95] [--out benchmarks/out]

One table, mean +- std over seeds:
- class-IL / task-IL average accuracy and class-IL forgetting after the last task;
- pruning jump: class-IL accuracy points lost by the task-end projection (sparse methods), and, for
  the dense methods, by a one-shot magnitude pruning of the final model to each sparsity
  (the counterfactual SDP's "no retraining" claim is measured against);
- training FLOPs relative to dense SGD (RigL convention, esacl/flops.py);
- step time relative to an SGD step, measured in this process: every method's step on the same
  fixed batches, interleaved round by round, median over rounds.
Writes the rows as JSON beside the printed table.
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import esacl
from esacl.config import resolve
from esacl.data import BENCHMARKS
from esacl.metrics import mean_std
from esacl.train import build, load_model, one_shot_prune_jump

DENSE = ["sgd", "derpp"]
SPARSE = ["esacl", "esacl-derpp", "sam-gmp"]
TIMED = ["sgd", "sam", "sam-gmp", "esacl-noids", "esacl", "derpp", "esacl-derpp"]


def run_grid(seeds, sparsities, out):
    """Every (method, sparsity, seed) run; dense runs once per seed."""
    runs = []
    for method in DENSE + SPARSE:
        for sparsity in ([None] if method in DENSE else sparsities):
            for seed in seeds:
                cfg = esacl.RunConfig(method=method, seed=seed, sparsity=sparsity, out=str(out), progress=False)
                record = esacl.run(cfg)
                row = dict(method=method, sparsity=sparsity or 0.0, seed=seed,
                           class_il=record.summary["class_il"]["average"],
                           task_il=record.summary["task_il"]["average"],
                           forgetting=record.summary["class_il"]["forgetting"],
                           flops_relative=record.efficiency["flops_relative"],
                           jump=record.efficiency["jump_last"], path=str(record.path))
                if method in DENSE:        # counterfactual: one-shot magnitude pruning of the final dense model
                    model, bench = load_model(record.path)
                    row["one_shot_jump"] = {s: one_shot_prune_jump(model, bench, bench.n_tasks - 1, s)["accuracy_drop"]
                                            for s in sparsities}
                runs.append(row)
                print(f"  {method:12s} sparsity {row['sparsity']:.2f} seed {seed}: class-IL {row['class_il']:.2f}",
                      file=sys.stderr, flush=True)
    return runs


def step_times(methods, rounds=15, steps_per_round=8, sparsity=0.9):
    """Median seconds per step of each method on the same fixed batches, interleaved."""
    torch.set_num_threads(torch.get_num_threads())
    built = {}
    for method in methods:
        cfg = resolve(esacl.RunConfig(method=method, sparsity=sparsity if method not in ("sgd", "sam", "derpp") else None,
                                      progress=False), BENCHMARKS["split_digits"].protocol)[0]
        bench, model, learner, step, _ = build(cfg, torch.device("cpu"))
        task = bench.tasks[0]
        step.selector.begin_task(0, task.y_train)
        step.pruner.begin_task(0, 1)              # a ramp of one step: the target sparsity from the start
        batches = [esacl.methods.Batch(task.x_train[i:i + 32], task.y_train[i:i + 32], torch.arange(i, i + 32),
                                       task.x_train[i:i + 32]) for i in range(0, 32 * steps_per_round, 32)]
        for b in batches[:3]:                     # warm-up, and fills replay buffers
            learner.observe(b, step(model, learner, learner.prepare(b)))
        built[method] = (model, learner, step, batches)
    times = {m: [] for m in methods}
    for _ in range(rounds):
        for method, (model, learner, step, batches) in built.items():
            tic = time.perf_counter()
            for b in batches:
                learner.observe(b, step(model, learner, learner.prepare(b)))
            times[method].append((time.perf_counter() - tic) / len(batches))
    return {m: statistics.median(t) for m, t in times.items()}


def table(runs, sparsities, times):
    head = (f"{'method':12s}{'sparsity':>9s}{'class-IL':>16s}{'task-IL':>16s}{'forgetting':>16s}"
            f"{'jump (pts)':>16s}{'FLOPs x SGD':>13s}{'step x SGD':>12s}")
    lines = [head, "-" * len(head)]
    fmt = lambda vals: "{:9.2f} +- {:4.2f}".format(*mean_std(vals))
    base = times["sgd"]
    for method in DENSE + SPARSE:
        for sparsity in ([0.0] if method in DENSE else sparsities):
            rows = [r for r in runs if r["method"] == method and r["sparsity"] == sparsity]
            jump = fmt([r["jump"] for r in rows]) if method in SPARSE else f"{'(dense)':>16s}"
            step = f"{times[method] / base:12.2f}" if method in times else f"{'':>12s}"
            lines.append(f"{method:12s}{sparsity:9.2f}{fmt([r['class_il'] for r in rows]):>16s}"
                         f"{fmt([r['task_il'] for r in rows]):>16s}{fmt([r['forgetting'] for r in rows]):>16s}"
                         f"{jump:>16s}{statistics.fmean(r['flops_relative'] for r in rows):13.2f}{step}")
    lines += ["", "one-shot magnitude pruning of the final dense model (class-IL points lost, no retraining):"]
    for method in DENSE:
        rows = [r for r in runs if r["method"] == method]
        cells = "  ".join(f"{s:.2f}: {fmt([r['one_shot_jump'][s] for r in rows]).strip()}" for s in sparsities)
        lines.append(f"  {method:10s} {cells}")
    lines += ["", "step time per method (ms, median of interleaved rounds, this machine): "
              + ", ".join(f"{m} {t * 1e3:.2f}" for m, t in times.items())]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sparsities", default="0.75,0.9,0.95")
    parser.add_argument("--out", default="benchmarks/out")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    sparsities = [float(s) for s in args.sparsities.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    with tempfile.TemporaryDirectory() as runs_dir:
        runs = run_grid(seeds, sparsities, runs_dir)
    times = step_times(TIMED)
    text = table(runs, sparsities, times)
    print(text)
    print(f"\n{len(runs)} runs + timing in {time.perf_counter() - tic:.0f} s on {torch.get_num_threads()} CPU threads")
    (out / "esacl_table.json").write_text(json.dumps(dict(runs=runs, step_seconds=times), indent=1))
    print(f"rows written to {out / 'esacl_table.json'}")


if __name__ == "__main__":
    main()
