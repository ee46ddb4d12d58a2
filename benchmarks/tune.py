"""Choose every method family's tuned knobs on a validation split, on seeds never reported, alike for all.

    .venv/bin/python benchmarks/tune.py --benchmark split_digits [--families esacl,sparcl,ewc,derpp,co2l] \
        [--candidates 8] [--seeds 1000,1001,1002] [--validation 0.2] [--workers N] [--markdown]

The rule, the same for every family (fixed before any run):
- Each family has a search grid over the knobs its defaults depend on (`SPACES`) and is tuned on one
  preset (`PRESET`: EsaCL's and SparCL's knobs on ER, which has none of its own; each base learner's
  on its dense preset, the value every variant of it then takes).
- Its `--candidates` are the benchmark's current defaults and `--candidates - 1` other grid points
  drawn without replacement (random.Random(0)): the same number of evaluations for every family.
- Every run holds out `--validation` of each class's training examples and is evaluated on them
  (config key `validation`), on `--seeds`, which must be disjoint from the seeds the main job reports.
- A candidate's score is the mean over seeds of (class-IL + task-IL average accuracy) / 2: class-IL
  alone sits at its floor for some learners (EWC), task-IL alone ignores the tables' first column. A
  candidate with a diverged seed is out. The highest score wins.

Prints, per family, every candidate's validation accuracies (mean +- std over seeds) with the current
default and the winner marked; `--markdown` prints the table docs/method.md keeps. The chosen values
go into the benchmark's `tuned` table (`esacl/data.py`) by hand. Runs are kept in
benchmarks/out/tune-BENCHMARK/ (the same call again finishes an interrupted search); the results in
benchmarks/out/tune-BENCHMARK.json.
"""

import argparse
import json
import random
import sys
import time
from pathlib import Path

from esacl.compare import DENSE_SEEDS, PAPER_SEEDS
from esacl.config import RunConfig, cross, resolve, usable_cores
from esacl.metrics import mean_std
from workbench.cli import run_grid

# family -> the preset it is tuned on.
PRESET = {"esacl": "esacl-er", "sparcl": "sparcl-er", "ewc": "ewc", "derpp": "derpp", "co2l": "co2l"}
# family -> {knob: values}: its search grid (every combination).
SPACES = {
    "esacl": dict(
        rho=[0.02, 0.05, 0.1, 0.2],
        support_fraction=[0.25, 0.5, 0.75],
        support_balance=["class", "none"],
        support_bn=["subset", "batch"],
        dense_grad_every=[1, 10],
    ),
    # DGM keeps its share of all of a layer's gradient entries, the pruned ones included: at sparsity 0.9 a
    # share of 0.1 or more keeps every live one (docs/method.md), so the grid looks below it.
    "sparcl": dict(removal_fraction=[0.1, 0.2, 0.3, 0.5], dgm_keep=[0.03, 0.05, 0.1, 0.2]),
    "ewc": dict(ewc_lambda=[1.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0]),
    "derpp": dict(derpp_alpha=[0.1, 0.2, 0.5, 1.0], derpp_beta=[0.5, 1.0]),
    "co2l": dict(co2l_temperature=[0.1, 0.2, 0.5, 1.0], co2l_distill=[0.5, 1.0, 2.0]),
}


def candidates(benchmark: str, family: str, n: int) -> list[dict]:
    """The family's current defaults on `benchmark`, then n - 1 other grid points drawn without replacement."""
    current = resolve(RunConfig(benchmark=benchmark, method=PRESET[family]))[0]
    default = {k: getattr(current, k) for k in SPACES[family]}
    others = [c for c in cross({}, SPACES[family]) if c != default]
    if len(others) < n - 1:
        raise SystemExit(f"tune.py: the {family} grid has {len(others) + 1} points, fewer than --candidates {n}")
    return [default] + random.Random(0).sample(others, n - 1)


def score(record) -> float:
    """(class-IL + task-IL average accuracy) / 2 on the validation split: the choice's one number."""
    return (record.summary["class_il"]["average"] + record.summary["task_il"]["average"]) / 2


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="split_digits")
    parser.add_argument("--families", default=",".join(SPACES))
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--seeds", default="1000,1001,1002")
    parser.add_argument("--validation", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=usable_cores())
    parser.add_argument("--markdown", action="store_true", help="also print the docs/method.md table")
    parser.add_argument("--out", default="benchmarks/out")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if set(seeds) & (set(PAPER_SEEDS) | set(DENSE_SEEDS)):
        raise SystemExit(f"tune.py: --seeds must be disjoint from the reported seeds {PAPER_SEEDS}")
    families = args.families.split(",")
    runs = Path(args.out) / f"tune-{args.benchmark}"
    plan = []  # (family, candidate index, values, seed, config)
    for family in families:
        for i, values in enumerate(candidates(args.benchmark, family, args.candidates)):
            for seed in seeds:
                cfg = RunConfig(
                    benchmark=args.benchmark,
                    method=PRESET[family],
                    seed=seed,
                    validation=args.validation,
                    out=str(runs),
                    name="-".join([family, *map(str, values.values()), f"s{seed}"]),  # a kept run is this one
                    progress=False,
                    **values,
                )
                plan.append((family, i, values, seed, cfg))
    tic = time.perf_counter()
    records = run_grid([p[-1] for p in plan], workers=args.workers, resumable=True)
    results = {}
    for (family, i, values, _, _), record in zip(plan, records):
        row = results.setdefault(family, {}).setdefault(i, dict(values=values, records=[]))
        row["records"].append(record)
    table = {}
    for family, rows in results.items():
        table[family] = []
        for i, row in sorted(rows.items()):
            done = [r for r in row["records"] if not r.diverged]
            table[family].append(
                dict(
                    values=row["values"],
                    default=i == 0,
                    diverged=len(row["records"]) - len(done),
                    class_il=mean_std([r.summary["class_il"]["average"] for r in done]),
                    task_il=mean_std([r.summary["task_il"]["average"] for r in done]),
                    score=mean_std([score(r) for r in done]),
                )
            )
        ok = [r for r in table[family] if not r["diverged"]]
        chosen = max(ok, key=lambda r: r["score"][0]) if ok else None
        for r in table[family]:
            r["chosen"] = r is chosen
    minutes = (time.perf_counter() - tic) / 60
    print(
        f"{args.benchmark}: {args.candidates} candidates per family on a {args.validation:g} validation split, "
        f"seeds {args.seeds}; {len(plan)} runs in {minutes:.1f} min over {args.workers} worker(s), 1 thread each"
    )
    for family, rows in table.items():
        print(f"\n{family} (on {PRESET[family]}); score = (class-IL + task-IL) / 2, mean +- std over seeds")
        for r in rows:
            mark = ("  <- chosen" if r["chosen"] else "") + ("  (current default)" if r["default"] else "")
            knobs = ", ".join(f"{k}={v}" for k, v in r["values"].items())
            cells = "  ".join(f"{name} {r[key][0]:6.2f} +- {r[key][1]:5.2f}" for key, name in CELLS)
            print(f"  {knobs:78s} {cells}{'  diverged ' + str(r['diverged']) if r['diverged'] else ''}{mark}")
    if args.markdown:
        print("\n" + markdown(args.benchmark, table))
    path = Path(args.out) / f"tune-{args.benchmark}.json"
    path.write_text(json.dumps(dict(vars(args), spaces=SPACES, preset=PRESET, table=table), indent=1))
    print(f"\nwritten: {path}", file=sys.stderr)


CELLS = (("class_il", "class-IL"), ("task_il", "task-IL"), ("score", "score"))


def markdown(benchmark: str, table: dict) -> str:
    """docs/method.md's table: per family, what was searched, the default, the winner and their scores."""
    lines = [
        f"| {benchmark}: family (tuned on) | searched | default (score) | chosen (score) |",
        "|---|---|---|---|",
    ]
    for family, rows in table.items():
        default = next(r for r in rows if r["default"])
        chosen = next((r for r in rows if r["chosen"]), None)
        searched = "; ".join(f"{k} {', '.join(map(str, v))}" for k, v in SPACES[family].items())
        show = lambda r: ", ".join(f"{k}={v}" for k, v in r["values"].items()) + f" ({r['score'][0]:.2f})"
        same = " (unchanged)" if chosen is default else ""
        lines.append(
            f"| {family} ({PRESET[family]}) | {searched} | {show(default)} | "
            f"{show(chosen) + same if chosen else 'none finished'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
