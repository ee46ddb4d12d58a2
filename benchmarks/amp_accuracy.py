"""Does bf16 autocast on a CPU change the main job's numbers? The main job over many seeds, float32 and bf16.

    .venv/bin/python benchmarks/amp_accuracy.py [--benchmark split_digits] [--seeds 0-9] [--out benchmarks/out/amp]

Runs `esacl paper` (every preset of the main job) over the seeds twice, float32 (the defaults) and with
`-p amp true`, into OUT/fp32 and OUT/amp (a folder already holding that job is continued, not redone), then
prints per method the float32 mean class-IL and task-IL with their 95% t-interval over seeds, the bf16 mean,
and whether it lies inside; then each base learner's verdicts (EsaCL-X against SparCL-X, `esacl.stats`,
Holm over each table's cells) under both. bf16
would become a default only if every mean and every verdict stayed the same.
"""

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from scipy import stats

from esacl import load_run
from esacl.compare import group_runs, table_versus


def seeds_of(text: str) -> str:
    """'0-9' -> '0,1,...,9'; a comma list as it is."""
    if "-" in text:
        lo, hi = map(int, text.split("-"))
        return ",".join(str(s) for s in range(lo, hi + 1))
    return text


def interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and its two-sided 95% t-interval over seeds."""
    mean = statistics.mean(values)
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return mean, mean - half, mean + half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--benchmark", default="split_digits")
    parser.add_argument("--seeds", default="0-9")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/amp"))
    args = parser.parse_args()
    records = {}
    for label, extra in (("fp32", []), ("amp", ["-p", "amp", "true"])):
        folder = args.out / f"{args.benchmark}-{label}"
        argv = [sys.executable, "-m", "workbench", "paper", "--benchmark", args.benchmark, "--seeds"]
        subprocess.run(
            argv + [seeds_of(args.seeds), "--out", str(folder), *extra], check=True, stdout=subprocess.DEVNULL
        )
        records[label] = [load_run(p) for p in sorted(folder.iterdir()) if p.is_dir()]
    groups = {label: {key[1]: runs for key, runs in group_runs(rs).items()} for label, rs in records.items()}
    print(f"{args.benchmark}, seeds {args.seeds}: float32 mean [95% interval] against the bf16 mean")
    moved = 0
    for method, runs in groups["fp32"].items():
        cells = []
        for il in ("class_il", "task_il"):
            mean, lo, hi = interval([r.summary[il]["average"] for r in runs])
            amp = statistics.mean(r.summary[il]["average"] for r in groups["amp"][method])
            inside = lo <= amp <= hi
            moved += not inside
            cells.append(f"{il} {mean:6.2f} [{lo:6.2f}, {hi:6.2f}] bf16 {amp:6.2f} {'in ' if inside else 'OUT'}")
        print(f"  {method:13s} " + "   ".join(cells))
    changed = 0
    tables = {label: table_versus(rs) for label, rs in records.items()}  # Holm over each table's cells
    for key in tables["fp32"]:
        pair = {label: table[key] for label, table in tables.items()}
        words = {label: tuple(w.word for w in v.words.values()) for label, v in pair.items()}
        changed += sum(a != b for a, b in zip(words["fp32"], words["amp"]))
        print(f"  float32 {pair['fp32'].line()}\n  bf16    {pair['amp'].line()}")
    print(f"means outside the float32 interval: {moved}; verdict cells that changed: {changed}")


if __name__ == "__main__":
    main()
