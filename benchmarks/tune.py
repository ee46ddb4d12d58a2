"""Choose every method family's tuned knobs on a validation split, on seeds never reported, alike for all.

    .venv/bin/python benchmarks/tune.py --benchmark split_digits [--families esacl,sparcl,ewc,derpp,co2l] \
        [--candidates 8] [--seeds 1000,1001,1002] [--validation 0.2] [--workers N] [--markdown]

The rule, the same for every family (fixed before any run):
- Each family has a search grid over the knobs its defaults depend on (`SPACES`) and is tuned on its
  presets (`PRESETS`): each base learner's on its dense preset, the value every variant of it then
  takes; EsaCL's and SparCL's on their variant of every base learner of the main job, each at its
  learner's tuned values, as the main job compares them on all four.
- Its `--candidates` are the untuned defaults (the knobs' declared values, so a second search after the
  winners went into the tables draws the same candidates) and `--candidates - 1` other grid points
  drawn without replacement (random.Random(0)): the same number of candidates for every family.
- Every run holds out `--validation` of each class's training examples and is evaluated on them
  (config key `validation`), on `--seeds`, which must be disjoint from the seeds the main job reports.
- A candidate's score is the mean over seeds of (class-IL + task-IL average accuracy) / 2, averaged
  over the family's presets: class-IL alone sits at its floor for some learners (EWC), task-IL alone
  ignores the tables' first column. A candidate with a diverged run is out. The highest score wins.
  Tune the base learners first: the sparsifiers' runs take the learners' values from the tables.

Prints, per family, every candidate's validation accuracies (mean +- std over seeds, and the score
on each preset where a family has several) with the untuned default and the winner marked;
`--markdown` prints the table docs/method.md keeps. The chosen values go into the benchmark's `tuned`
table (`esacl/data/benchmarks.py`) by hand. Runs are kept in
benchmarks/out/tune-BENCHMARK/ (the same call again finishes an interrupted search); the results in
benchmarks/out/tune-BENCHMARK.json.
"""

import argparse
import json
import random
import sys
import time
from pathlib import Path

from esacl.compare import DENSE_SEEDS, PAPER_LEARNERS, PAPER_SEEDS
from esacl.config import UNTUNED, RunConfig, cross, usable_cores
from esacl.metrics import mean_std
from workbench.cli import grid_failed, run_grid

# family -> the presets it is tuned on.
PRESETS = {
    "esacl": tuple(f"esacl-{learner}" for learner in PAPER_LEARNERS),
    "sparcl": tuple(f"sparcl-{learner}" for learner in PAPER_LEARNERS),
    "ewc": ("ewc",),
    "derpp": ("derpp",),
    "co2l": ("co2l",),
    "lwf": ("lwf",),
}
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
    "lwf": dict(lwf_alpha=[0.5, 1.0, 2.0, 4.0], lwf_warmup_epochs=[0, 1]),
}


def untuned(family: str) -> dict:
    """The family's knobs at their untuned defaults (`knob(..., tuned=)`), the same on every benchmark."""
    return {k: UNTUNED[k] for k in SPACES[family]}


def candidates(family: str, n: int) -> list[dict]:
    """The family's untuned defaults, then n - 1 other grid points drawn without replacement."""
    default = untuned(family)
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
    plan = []  # (family, candidate index, values, preset, seed, config)
    for family in families:
        for i, values in enumerate(candidates(family, args.candidates)):
            for preset in PRESETS[family]:
                for seed in seeds:
                    cfg = RunConfig(
                        benchmark=args.benchmark,
                        method=preset,
                        seed=seed,
                        validation=args.validation,
                        out=str(runs),
                        name="-".join([preset, *map(str, values.values()), f"s{seed}"]),  # a kept run is this one
                        progress=False,
                        **values,
                    )
                    plan.append((family, i, values, preset, seed, cfg))
    tic = time.perf_counter()
    records, failed = run_grid([p[-1] for p in plan], workers=args.workers, resumable=True)
    grid_failed(failed, "the same call again retries them")
    results = {}  # family -> candidate index -> {values, runs: {(preset, seed): record}}
    for (family, i, values, preset, seed, _), record in zip(plan, records):
        row = results.setdefault(family, {}).setdefault(i, dict(values=values, runs={}))
        row["runs"][preset, seed] = record
    table = {
        family: [candidate_row(family, i == 0, row, seeds) for i, row in sorted(rows.items())]
        for family, rows in results.items()
    }
    for rows in table.values():
        ok = [r for r in rows if not r["diverged"]]
        chosen = max(ok, key=lambda r: r["score"][0]) if ok else None
        for r in rows:
            r["chosen"] = r is chosen
    minutes = (time.perf_counter() - tic) / 60
    print(
        f"{args.benchmark}: {args.candidates} candidates per family on a {args.validation:g} validation split, "
        f"seeds {args.seeds}; {len(plan)} runs in {minutes:.1f} min over {args.workers} worker(s), 1 thread each"
    )
    for family, rows in table.items():
        print(
            f"\n{family} (on {', '.join(PRESETS[family])}); score = (class-IL + task-IL) / 2, mean +- std over "
            "seeds" + (" of its mean over the presets" if len(PRESETS[family]) > 1 else "")
        )
        for r in rows:
            mark = ("  <- chosen" if r["chosen"] else "") + ("  (untuned default)" if r["default"] else "")
            knobs = ", ".join(f"{k}={v}" for k, v in r["values"].items())
            cells = "  ".join(f"{name} {r[key][0]:6.2f} +- {r[key][1]:5.2f}" for key, name in CELLS)
            each = (
                "  " + " ".join(f"{p} {v:.2f}" for p, v in r["per_preset"].items()) if len(r["per_preset"]) > 1 else ""
            )
            print(f"  {knobs:78s} {cells}{each}{'  diverged ' + str(r['diverged']) if r['diverged'] else ''}{mark}")
    if args.markdown:
        print("\n" + markdown(args.benchmark, table))
    path = Path(args.out) / f"tune-{args.benchmark}.json"
    path.write_text(json.dumps(dict(vars(args), spaces=SPACES, presets=PRESETS, table=table), indent=1))
    print(f"\nwritten: {path}", file=sys.stderr)


CELLS = (("class_il", "class-IL"), ("task_il", "task-IL"), ("score", "score"))


def candidate_row(family: str, default: bool, row: dict, seeds: list[int]) -> dict:
    """One candidate's line: per seed, each accuracy averaged over the family's presets, then mean +- std over
    seeds (the presets share a seed's data and class order); its score on each preset; runs that diverged."""
    runs, presets = row["runs"], PRESETS[family]
    diverged = sum(bool(r.diverged) for r in runs.values())
    out = dict(values=row["values"], default=default, diverged=diverged)
    cells = dict(
        class_il=lambda r: r.summary["class_il"]["average"],
        task_il=lambda r: r.summary["task_il"]["average"],
        score=score,
    )
    for key, value in cells.items():
        per_seed = [sum(value(runs[p, s]) for p in presets) / len(presets) for s in seeds] if not diverged else []
        out[key] = mean_std(per_seed)
    out["per_preset"] = {p: sum(score(runs[p, s]) for s in seeds) / len(seeds) for p in presets} if not diverged else {}
    return out


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
            f"| {family} ({', '.join(PRESETS[family])}) | {searched} | {show(default)} | "
            f"{show(chosen) + same if chosen else 'none finished'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
