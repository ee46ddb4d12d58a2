"""The paper's comparison on split_digits: each base learner dense, with SparCL, and with EsaCL.

    .venv/bin/python benchmarks/paper_table.py [--learners er,derpp,ewc,co2l] [--sparsity 0.9]
                                               [--seeds 0,1,2] [--out benchmarks/out]

For every base learner X: `X` (dense), `sparcl-X` and `esacl-X` at the given sparsity, over the
seeds, in one process; prints the comparison table (class-IL, task-IL, class-IL forgetting,
training FLOPs relative to dense SGD, pruning jump; mean +- std over seeds) and the wall-clock
of each method's training, and writes the table as JSON.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import esacl
from esacl.metrics import mean_std
from esacl.record import comparison_table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learners", default="er,derpp,ewc,co2l")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="benchmarks/out")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m for x in args.learners.split(",") for m in (x, f"sparcl-{x}", f"esacl-{x}")]
    unknown = [m for m in methods if m not in esacl.methods.PRESETS]
    if unknown:
        sys.exit(f"paper_table: no preset named {', '.join(unknown)}; see 'esacl methods'")
    tic = time.perf_counter()
    records, rows = [], []
    with tempfile.TemporaryDirectory() as runs:
        for method in methods:
            sparse = esacl.methods.PRESETS[method].sparse
            for seed in seeds:
                record = esacl.run(esacl.RunConfig(method=method, seed=seed, out=runs, progress=False,
                                                   sparsity=args.sparsity if sparse else None))
                records.append(record)
                rows.append(dict(method=method, seed=seed, sparsity=record.config["sparsity"],
                                 class_il=record.summary["class_il"]["average"],
                                 task_il=record.summary["task_il"]["average"],
                                 forgetting=record.summary["class_il"]["forgetting"],
                                 flops_relative=record.efficiency["flops_relative"],
                                 jump=record.efficiency["jump_last"],
                                 train_seconds=record.efficiency["train_seconds"]))
                print(f"  {method:14s} seed {seed}: class-IL {rows[-1]['class_il']:.2f}", file=sys.stderr, flush=True)
    print(comparison_table(records))
    print("\ntraining wall-clock per run (s, mean +- std over seeds, this machine):")
    for method in methods:
        m, s = mean_std([r["train_seconds"] for r in rows if r["method"] == method])
        print(f"  {method:14s} {m:6.2f} +- {s:4.2f}")
    print(f"\n{len(rows)} runs in {time.perf_counter() - tic:.0f} s on {torch.get_num_threads()} CPU threads")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "paper_table.json").write_text(json.dumps(rows, indent=1))
    print(f"rows written to {out / 'paper_table.json'}")


if __name__ == "__main__":
    main()
