"""Does a flat minimum make retraining after pruning unnecessary? The paper's hypothesis, as a test that can fail.

    .venv/bin/python benchmarks/flatness.py [--benchmark split_digits] [--seeds 0,1,...,9] [--sdp-seeds SEEDS]
                                            [--parts pruned,sdp]
                                            [--stop-loss 0.05] [--epochs 20] [--workers N] [--out benchmarks/out]
                                            [--report]

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

"equivalent" is within +-1 point of accuracy, +-0.01 nats of training loss. Runs go to
benchmarks/out/flatness-BENCHMARK/ (the same call again finishes an interrupted grid); the tables to
benchmarks/out/flatness-BENCHMARK.json.
"""

import argparse
import json
import time
from pathlib import Path

from esacl.config import usable_cores
from esacl.flatness import plan, results, text
from workbench.cli import grid_failed, run_grid


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="split_digits")
    parser.add_argument("--seeds", default=",".join(map(str, range(10))))
    parser.add_argument("--sdp-seeds", help="part sdp's seeds (default: --seeds)")
    parser.add_argument("--parts", default="pruned,sdp")
    parser.add_argument("--stop-loss", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=usable_cores())
    parser.add_argument("--out", default="benchmarks/out")
    parser.add_argument(
        "--report",
        action="store_true",
        help="then execute notebooks/flatness.ipynb over the runs and write it as reports/flatness-BENCHMARK.html",
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    sdp_seeds = [int(s) for s in args.sdp_seeds.split(",")] if args.sdp_seeds else seeds
    folder = str(Path(args.out) / f"flatness-{args.benchmark}")
    rows = plan(args.benchmark, seeds, folder, args.stop_loss, args.epochs, args.parts.split(","), sdp_seeds)
    tic = time.perf_counter()
    records, failed = run_grid([cfg for *_, cfg in rows], workers=args.workers, resumable=True)
    grid_failed(failed, "the same call again retries them")
    found = results(rows, records)
    print(f"\n{args.benchmark}: {len(records)} runs in {time.perf_counter() - tic:.0f} s")
    print(text(found))
    path = Path(args.out) / f"flatness-{args.benchmark}.json"
    path.write_text(json.dumps(dict(args=vars(args), **found), indent=1))
    print(f"\nwritten: {path}")
    if args.report:
        print(f"report: {report(args, seeds, sdp_seeds)}")


def report(args, seeds: list[int], sdp_seeds: list[int]) -> Path:
    """notebooks/flatness.ipynb executed over the runs (made already: it only reads them), as one offline
    HTML page under reports/ (never overwriting one)."""
    import tempfile

    from esacl.rundir import unique_name, write_atomic
    from workbench.execute import FLATNESS_NOTEBOOK, NOTEBOOKS, export_html, papermill_run

    params = dict(
        benchmark=args.benchmark,
        seeds=seeds,
        sdp_seeds=sdp_seeds,
        parts=args.parts.split(","),
        stop_loss=args.stop_loss,
        epochs=args.epochs,
        workers=args.workers,
        out=str(Path(args.out).resolve()),
    )
    folder = Path("reports")
    folder.mkdir(exist_ok=True)
    target = folder / (unique_name(folder, f"flatness-{args.benchmark}", suffix=".html") + ".html")
    with tempfile.TemporaryDirectory() as tmp:
        executed = Path(tmp) / "flatness.ipynb"
        failure = papermill_run(NOTEBOOKS / f"{FLATNESS_NOTEBOOK}.ipynb", executed, params, progress=False)
        if failure:
            raise SystemExit(f"the flatness notebook failed {failure}")
        write_atomic(target, export_html(executed).encode())
    return target


if __name__ == "__main__":
    main()
