"""Choose one hyper-parameter of one method on a validation split, never on the test set.

    .venv/bin/python benchmarks/tune.py --benchmark split_digits --method ewc --key ewc_lambda \
        --values 10,100,1000,10000 [--seeds 0,1,2] [--validation 0.2] [--metric task_il] [--threads 2]

Every run holds out `--validation` of each class's training examples (config key `validation`) and
is evaluated on them instead of the test set. For each value: mean +- std over seeds of the
validation class-IL and task-IL average accuracy and forgetting; a run whose loss became non-finite
counts as diverged and is left out of the choice. The chosen value maximises the mean of `--metric`
(class_il or task_il). Also runs `sgd` on the same split, so the table shows whether the method
moves anything at all. Writes benchmarks/out/tune-<benchmark>-<method>-<key>.json.
"""

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

import esacl
from esacl.config import _field
from esacl.knobs import parse_string
from esacl.metrics import mean_std
from esacl.train import Diverged


def validation_scores(cfg: dict) -> dict:
    try:
        record = esacl.run(cfg)
    except Diverged:  # a non-finite training loss stops the run
        return dict(finite=False)
    rows = record.class_il + record.task_il
    finite = all(math.isfinite(a) for row in rows for a in row if a is not None)
    s = record.summary
    return dict(
        class_il=s["class_il"]["average"],
        task_il=s["task_il"]["average"],
        forgetting=s["class_il"]["forgetting"],
        task_forgetting=s["task_il"]["forgetting"],
        finite=finite,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="split_digits")
    parser.add_argument("--method", default="ewc")
    parser.add_argument("--key", default="ewc_lambda")
    parser.add_argument("--values", default="10,100,1000,10000")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--validation", type=float, default=0.2)
    parser.add_argument("--metric", choices=["class_il", "task_il"], default="task_il")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    values = [parse_string(_field(args.key), v) for v in args.values.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    tic = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as runs:
        base = dict(benchmark=args.benchmark, validation=args.validation, progress=False, out=runs)
        for method, value in [("sgd", None)] + [(args.method, v) for v in values]:
            scores = []
            for seed in seeds:
                cfg = dict(base, method=method, seed=seed, **({args.key: value} if value is not None else {}))
                scores.append(validation_scores(cfg))
                print(f"  {method} {args.key}={value} seed {seed}: {scores[-1]}", file=sys.stderr, flush=True)
            row = dict(method=method, value=value, diverged=sum(not s["finite"] for s in scores))
            for metric in ("class_il", "task_il", "forgetting", "task_forgetting"):
                row[metric] = mean_std([s[metric] for s in scores if s["finite"]])
            results.append(row)
    candidates = [r for r in results[1:] if not r["diverged"]]
    chosen = max(candidates, key=lambda r: r[args.metric][0]) if candidates else None
    print(
        f"{args.benchmark}: {args.method} over {args.key} on a {args.validation:g} validation split, "
        f"seeds {args.seeds} (mean +- std; forgetting in points)"
    )
    print(
        f"{'method':8s}{args.key:>14s}{'class-IL':>16s}{'task-IL':>16s}{'forgetting':>16s}"
        f"{'task-IL forg.':>16s}{'diverged':>10s}"
    )
    for r in results:
        cells = "".join(
            f"{r[m][0]:9.2f} +- {r[m][1]:4.2f}" if not math.isnan(r[m][0]) else f"{'-':>16s}"
            for m in ("class_il", "task_il", "forgetting", "task_forgetting")
        )
        mark = "  <- chosen" if r is chosen else ""
        print(
            f"{r['method']:8s}{str(r['value'] if r['value'] is not None else '-'):>14s}{cells}{r['diverged']:>10d}{mark}"
        )
    print(f"chosen by the highest mean validation {args.metric}: {args.key} = {chosen['value'] if chosen else None}")
    print(f"{len(results) * len(seeds)} runs in {time.perf_counter() - tic:.0f} s on {args.threads} CPU threads")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"tune-{args.benchmark}-{args.method}-{args.key}.json"
    path.write_text(json.dumps(dict(vars(args), results=results, chosen=chosen and chosen["value"]), indent=1))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
