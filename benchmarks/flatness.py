"""Does a flat minimum make retraining after pruning unnecessary? The paper's hypothesis, as a test that can fail.

    .venv/bin/python benchmarks/flatness.py [--benchmark split_digits] [--seeds 0,1,...,9] [--parts pruned,sdp]
                                            [--stop-loss 0.05] [--epochs 20] [--workers N] [--out benchmarks/out]

The experiment is `esacl.flatness.plan` (docs/method.md, "Flatness"); each run probes its task ends
(esacl/flatness.py): one-shot pruning, batch norm recalibrated, the current task's class-IL accuracy,
then 10 and 100 fine-tuning steps with the mask fixed.

- pruned: dense SGD, SAM (the benchmark's rho) and ASAM (rho 0.5) trained to the same training loss
  (`--stop-loss`, `--epochs` at most), pruned to 0.5-0.95 (layer and global). The claim predicts that the
  flat training drops less (drop) and that fine-tuning wins back less (recovery): SGD's effect minus
  the flat training's, paired by seed, positive as the claim predicts; Holm over each table's 24 cells.
- sdp: SDP with its ascent and without (rho 0) at matched steps, sparsity 0.9; the task-end projection
  keeps the trained nonzeros (target), prunes 0.2 more than training held (gap), or cuts what gRDA's
  threshold left (grda). Without minus with (positive: the ascent helps as claimed), and each one's
  retraining gain (100 steps with its mask fixed) against 0: the claim holds if it is about 0 with the
  ascent and clearly positive without.

"equivalent" is within +-1 point of accuracy, +-0.01 nats of training loss. Runs go to benchmarks/out/flatness-BENCHMARK/ (the same call again
finishes an interrupted grid); the tables to benchmarks/out/flatness-BENCHMARK.json.
"""

import argparse
import json
import time
from pathlib import Path

from esacl.config import usable_cores
from esacl.flatness import plan, results
from workbench.cli import run_grid


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="split_digits")
    parser.add_argument("--seeds", default=",".join(map(str, range(10))))
    parser.add_argument("--parts", default="pruned,sdp")
    parser.add_argument("--stop-loss", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=usable_cores())
    parser.add_argument("--out", default="benchmarks/out")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = plan(
        args.benchmark,
        seeds,
        str(Path(args.out) / f"flatness-{args.benchmark}"),
        args.stop_loss,
        args.epochs,
        args.parts.split(","),
    )
    tic = time.perf_counter()
    records = run_grid([cfg for *_, cfg in rows], workers=args.workers, resumable=True)
    found = results(rows, records)
    print(f"\n{args.benchmark}, seeds {args.seeds}: {len(records)} runs in {time.perf_counter() - tic:.0f} s")
    if "pruned" in found:
        pruned = found["pruned"]
        print(f"\npruned: dense training to loss {args.stop_loss} ({args.epochs} epochs at most)")
        print("quality match (mean over seeds and tasks) and the top Hessian eigenvalue at the task ends")
        for mode, q in pruned["quality"].items():
            print(
                f"  {mode:5s} {q['epochs']:5.2f} epochs, last epoch's loss {q['loss']:.4f}, "
                f"top eigenvalue {pruned['sharpness'][mode]:8.2f}"
            )
        for flat in ("sam", "asam"):
            if flat not in pruned:
                continue
            print(f"\nSGD minus {flat.upper()}, paired by seed (class-IL of the current task, points; loss, nats)")
            print(f"{'scope':7s}{'sparsity':>9s}  {'measure':9s}{'SGD':>8s}{flat.upper():>8s}  difference")
            for c in pruned[flat]:
                print(f"{c['scope']:7s}{c['sparsity']:9g}  {c['measure']:9s}{c['a']:8.2f}{c['b']:8.2f}  {c['text']}")
    if "sdp" in found:
        sdp = found["sdp"]
        print(
            "\nsdp: without the ascent minus with it, paired by seed (class-IL of the current task, points; loss, nats)"
        )
        for c in sdp["differences"]:
            print(f"  {c['variant']:7s}{c['measure']:9s}{c['a']:8.2f}{c['b']:8.2f}  {c['text']}")
        print("retraining gain (100 steps, mask fixed) against 0")
        for c in sdp["gains"]:
            print(f"  {c['variant']:7s}{c['mode']:10s}{c['text']}")
        print("per run, mean over seeds: top eigenvalue, loss rise at the projection, sparsity before it, accuracy")
        for variant, modes in sdp["runs"].items():
            for mode, r in modes.items():
                print(
                    f"  {variant:7s}{mode:10s} eigenvalue {r['sharpness']:8.2f}  loss rise {r['loss_rise']:+.4f}  "
                    f"trained sparsity {r['trained_sparsity']:.3f}  class-IL {r['class_il']:.2f}  task-IL {r['task_il']:.2f}"
                )
    path = Path(args.out) / f"flatness-{args.benchmark}.json"
    path.write_text(json.dumps(dict(args=vars(args), **found), indent=1))
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
