"""EsaCL's parts, its ablations and its efficiency knobs against SparCL and the dense baselines.

    .venv/bin/python benchmarks/esacl_table.py [--benchmark split_digits] [--seeds 0,1,2] [--sparsity 0.9]
                                               [--threads 2] [--only LABEL,...] [--out benchmarks/out]

One table, mean +- std over seeds, one row per variant (a preset and the config keys it changes):
- class-IL / task-IL average accuracy and class-IL forgetting after the last task;
- training FLOPs relative to dense SGD (RigL's convention as computed: esacl/flops.py);
- the pruning jump at the last task end: class-IL points lost by the task-end projection as recorded
  (after batch-norm recalibration) and with the statistics as trained; for the dense `sgd` and `sam`,
  the flatness test: points lost by one-shot magnitude pruning of the model to the same sparsity;
- step time relative to an SGD step, measured in this process on the same fixed batches, interleaved
  round by round, median over rounds (`--step-times`).
Writes the rows as JSON (benchmarks/out/esacl_table-<benchmark>.json) beside the printed table.
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
from esacl.metrics import mean_std
from esacl.train import build

OLD_SELECTION = dict(support_balance="none", support_bn="subset")  # the first reconstruction
# (label, preset, config keys it sets)
VARIANTS = [
    ("sgd", "sgd", dict(one_shot_sparsity="target")),
    ("sam", "sam", dict(one_shot_sparsity="target")),
    ("ids-only", "ids-only", {}),
    ("esacl-noids", "esacl-noids", {}),
    ("esacl (old selection)", "esacl", OLD_SELECTION),
    ("esacl (class-balanced)", "esacl", dict(support_balance="class", support_bn="subset")),
    ("esacl (batch BN)", "esacl", dict(support_balance="none", support_bn="batch")),
    ("esacl (both)", "esacl", dict(support_balance="class", support_bn="batch")),
    ("esacl dense_grad_every 10", "esacl", dict(dense_grad_every=10)),
    ("esacl sam_every 2", "esacl", dict(sam_every=2)),
    ("esacl ramp_fraction 0", "esacl", dict(ramp_fraction=0.0)),
    ("esacl-er", "esacl-er", {}),
    ("esacl-er (old selection)", "esacl-er", OLD_SELECTION),
    ("sparcl-er", "sparcl-er", {}),
    ("esacl-ewc", "esacl-ewc", {}),
    ("esacl-ewc (old selection)", "esacl-ewc", OLD_SELECTION),
    ("sparcl-ewc", "sparcl-ewc", {}),
    # where the official SparCL code differs from this harness (docs/method.md)
    ("sparcl-er no replay in task 0", "sparcl-er", dict(replay_first_task=False)),
    ("sparcl-er BN biases at zero", "sparcl-er", dict(bn_bias=False)),
    ("sparcl-er drop last batch", "sparcl-er", dict(drop_last=True)),
    ("sparcl-er no BN recalibration", "sparcl-er", dict(bn_recalibrate=False)),
]
TIMED = ["sgd", "sam", "esacl-noids", "esacl", "esacl-er", "sparcl-er"]  # presets at their defaults


def variant_config(preset: str, keys: dict, benchmark: str, seed: int, sparsity: float, out: str) -> dict:
    sparse = esacl.method.PRESETS[preset].sparse
    keys = {k: (sparsity if v == "target" else v) for k, v in keys.items()}
    return dict(
        benchmark=benchmark,
        method=preset,
        seed=seed,
        sparsity=sparsity if sparse else None,
        out=out,
        progress=False,
        **keys,
    )


def run_variants(variants, benchmark, seeds, sparsity, out) -> list[dict]:
    rows = []
    for label, preset, keys in variants:
        for seed in seeds:
            record = esacl.run(variant_config(preset, keys, benchmark, seed, sparsity, out))
            eff = record.efficiency
            rows.append(
                dict(
                    label=label,
                    method=preset,
                    keys=keys,
                    seed=seed,
                    class_il=record.summary["class_il"]["average"],
                    task_il=record.summary["task_il"]["average"],
                    forgetting=record.summary["class_il"]["forgetting"],
                    flops_relative=eff["flops_relative"],
                    jump=eff["jump_last"],
                    jump_as_trained=eff["jump_as_trained_last"],
                    one_shot=eff["one_shot_last"],
                    train_seconds=eff["train_seconds"],
                )
            )
            print(
                f"  {label:28s} seed {seed}: class-IL {rows[-1]['class_il']:.2f}, task-IL {rows[-1]['task_il']:.2f}",
                file=sys.stderr,
                flush=True,
            )
    return rows


def step_times(benchmark, methods, sparsity, rounds=15, steps_per_round=8):
    """Median seconds per step of each method on the same fixed batches of the first task, interleaved."""
    built = {}
    for name in methods:
        sparse = esacl.method.PRESETS[name].sparse
        cfg = resolve(
            esacl.RunConfig(benchmark=benchmark, method=name, sparsity=sparsity if sparse else None, progress=False)
        )[0]
        bench, model, method, _ = build(cfg, torch.device("cpu"))
        task = bench.tasks[0]
        method.selector.begin_task(0, task.y_train)
        method.rule.begin_task(0, 1)  # a ramp of one step: the target sparsity from the start
        batches = [
            esacl.learners.Batch(
                task.x_train[i : i + 32], task.y_train[i : i + 32], torch.arange(i, i + 32), task.x_train[i : i + 32]
            )
            for i in range(0, 32 * steps_per_round, 32)
        ]
        for b in batches[:3]:  # warm-up, and fills replay buffers
            method.train_step(model, method.prepare(b))
        built[name] = (model, method, batches)
    times = {m: [] for m in methods}
    for _ in range(rounds):
        for name, (model, method, batches) in built.items():
            tic = time.perf_counter()
            for b in batches:
                method.train_step(model, method.prepare(b))
            times[name].append((time.perf_counter() - tic) / len(batches))
    return {m: statistics.median(t) for m, t in times.items()}


def table(rows, times) -> str:
    fmt = lambda vals: "-" if not vals else ("{:.2f} +- {:.2f}".format(*mean_std(vals)))
    head = [
        "variant",
        "class-IL",
        "task-IL",
        "forgetting",
        "FLOPs x SGD",
        "jump",
        "jump as trained",
        "one-shot (dense)",
        "step x SGD",
    ]
    body = []
    for label in dict.fromkeys(r["label"] for r in rows):
        part = [r for r in rows if r["label"] == label]
        pick = lambda key, part=part: [r[key] for r in part if r[key] is not None]
        step = times.get(label)
        body.append(
            [
                label,
                fmt(pick("class_il")),
                fmt(pick("task_il")),
                fmt(pick("forgetting")),
                f"{statistics.fmean(pick('flops_relative')):.2f}",
                fmt(pick("jump")),
                fmt(pick("jump_as_trained")),
                fmt(pick("one_shot")),
                f"{step / times['sgd']:.2f}" if step and "sgd" in times else "",
            ]
        )
    from esacl.compare import aligned

    return aligned(head, body, left=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="split_digits")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", help="comma-separated variant labels (default: all)")
    parser.add_argument("--step-times", action="store_true", help="also time one step of " + ", ".join(TIMED))
    parser.add_argument("--out", default="benchmarks/out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = VARIANTS
    if args.only:
        wanted = args.only.split(",")
        variants = [v for v in VARIANTS if v[0] in wanted]
        if len(variants) != len(wanted):
            sys.exit(f"esacl_table: unknown variant among {wanted}; variants: {', '.join(v[0] for v in VARIANTS)}")
    tic = time.perf_counter()
    with tempfile.TemporaryDirectory() as runs_dir:
        rows = run_variants(variants, args.benchmark, seeds, args.sparsity, runs_dir)
    times = step_times(args.benchmark, TIMED, args.sparsity) if args.step_times else {}
    print(
        f"{args.benchmark}, sparsity {args.sparsity:g}, seeds {args.seeds}, {args.threads} CPU threads "
        f"(mean +- std over seeds; accuracy and jumps in points)"
    )
    print(table(rows, times))
    if times:
        print(
            "step time per method (ms, median of interleaved rounds): "
            + ", ".join(f"{m} {t * 1e3:.2f}" for m, t in times.items())
        )
    print(f"{len(rows)} runs in {time.perf_counter() - tic:.0f} s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"esacl_table-{args.benchmark}.json"
    path.write_text(json.dumps(dict(vars(args), rows=rows, step_seconds=times), indent=1))
    print(f"rows written to {path}")


if __name__ == "__main__":
    main()
