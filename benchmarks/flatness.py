"""Does a flat minimum make retraining after pruning unnecessary? The paper's hypothesis, as a test that can fail.

    .venv/bin/python benchmarks/flatness.py [--benchmark split_digits] [--seeds 0,1,...,9] [--stop-loss 0.05]
                                            [--epochs 20] [--workers N] [--out benchmarks/out]

Dense SGD, dense SAM (the benchmark's tuned rho) and dense ASAM (rho 0.5, Kwon et al.'s CIFAR-10
value, not tuned here) train the same task stream, each task until an epoch's mean training loss is
at most `--stop-loss` (`--epochs` at most): matched quality, not matched epochs. At every task end the
flatness probe (esacl/flatness.py) prunes the weights one-shot to 0.5-0.95 (layer and global),
recalibrates batch norm, and measures the current task's class-IL accuracy, then fine-tunes 10 and
100 steps with the mask fixed. Per run, each effect is the mean over its task ends:
- drop: accuracy of the dense weights minus the pruned ones' (points);
- recovery: accuracy the 100 fine-tuning steps win back (points).
The claim predicts that the flat training (SAM, ASAM) drops less and recovers less than SGD. Each
cell pairs the runs by seed, SGD's effect minus the flat training's (positive: as the claim
predicts), with a 95% interval, Holm over the table's 16 cells (`esacl.stats`); "equivalent" is
within +-1 point. Also printed: the epochs each mode trained per task and its last training loss
(the quality match), and the loss rise at pruning. Runs go to benchmarks/out/flatness-BENCHMARK/
(the same call again finishes an interrupted grid); the table to benchmarks/out/flatness-BENCHMARK.json.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from esacl.config import RunConfig, usable_cores
from esacl.flatness import SCOPES, SPARSITIES, compare, run_effects
from workbench.cli import run_grid

MODES = {"sgd": dict(method="sgd"), "sam": dict(method="sam"), "asam": dict(method="sam", asam=True, rho=0.5)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="split_digits")
    parser.add_argument("--seeds", default=",".join(map(str, range(10))))
    parser.add_argument("--stop-loss", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=usable_cores())
    parser.add_argument("--out", default="benchmarks/out")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = Path(args.out) / f"flatness-{args.benchmark}"
    plan = [
        (
            mode,
            seed,
            RunConfig(
                benchmark=args.benchmark,
                seed=seed,
                epochs=args.epochs,
                stop_loss=args.stop_loss,
                flatness_probe=True,
                out=str(runs),
                name=f"{mode}-s{seed}",
                progress=False,
                **values,
            ),
        )
        for mode, values in MODES.items()
        for seed in seeds
    ]
    tic = time.perf_counter()
    records = run_grid([cfg for *_, cfg in plan], workers=args.workers, resumable=True)
    by_mode = {}
    for (mode, seed, _), record in zip(plan, records):
        by_mode.setdefault(mode, {})[seed] = record
    print(
        f"\n{args.benchmark}, seeds {args.seeds}, stop at training loss {args.stop_loss} ({args.epochs} epochs at most), "
        f"{len(records)} runs in {time.perf_counter() - tic:.0f} s"
    )
    print("quality match: epochs per task, and the last epoch's training loss, mean over seeds and tasks")
    quality = {}
    for mode, recs in by_mode.items():
        epochs, losses = [], []
        for r in recs.values():
            by_task = {}  # task -> its epoch events, in order
            for e in r.events:
                if e["event"] == "epoch":
                    by_task.setdefault(e["task"], []).append(e)
            epochs += [len(rows) for rows in by_task.values()]
            losses += [rows[-1]["loss"] for rows in by_task.values()]
        quality[mode] = dict(epochs=statistics.fmean(epochs), loss=statistics.fmean(losses))
        print(f"  {mode:5s} {quality[mode]['epochs']:5.2f} epochs, loss {quality[mode]['loss']:.4f}")
    out = dict(args=vars(args), quality=quality, tables={})
    for flat in ("sam", "asam"):
        rows = compare(by_mode["sgd"], by_mode[flat])
        effects = {m: [run_effects(r) for r in by_mode[m].values()] for m in ("sgd", flat)}
        print(
            f"\nSGD minus {flat.upper()}, paired over {len(seeds)} seeds (class-IL of the current task, points;"
            " positive: as the claim predicts)"
        )
        print(f"{'scope':7s}{'sparsity':>9s}  {'measure':9s}{'SGD':>8s}{flat.upper():>8s}  difference")
        table = []
        for scope, sparsity, measure, verdict in rows:
            means = [statistics.fmean(e[scope, sparsity, measure] for e in effects[m]) for m in ("sgd", flat)]
            print(f"{scope:7s}{sparsity:9g}  {measure:9s}{means[0]:8.2f}{means[1]:8.2f}  {verdict.text()}")
            table.append(
                dict(
                    scope=scope,
                    sparsity=sparsity,
                    measure=measure,
                    sgd=means[0],
                    flat=means[1],
                    word=verdict.word,
                    text=verdict.text(),
                )
            )
        rise = {
            m: {(s, p): statistics.fmean(e[s, p, "loss_rise"] for e in effects[m]) for s in SCOPES for p in SPARSITIES}
            for m in ("sgd", flat)
        }
        print(
            "loss rise at pruning (nats), SGD / "
            + flat.upper()
            + ": "
            + ", ".join(f"{s} {p:g} {rise['sgd'][s, p]:.3f}/{rise[flat][s, p]:.3f}" for s in SCOPES for p in SPARSITIES)
        )
        out["tables"][flat] = table
    path = Path(args.out) / f"flatness-{args.benchmark}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
