"""The prepared GPU check: one command, at most 8 minutes on a GPU machine with no network.

    python3 benchmarks/gpu_check.py --data-root DIR [--out DIR] [--tiny]

DIR holds `fashion-mnist/` (the four idx files, 30 MB: `cp -r /usr/share/datasets/fashion-mnist DIR/`).
The machine needs python with torch, torchvision, numpy, scikit-learn and tqdm, and this repository;
nothing is installed or fetched. It measures, on the first CUDA device (else the CPU):

1. throughput: training samples per second of one step of `sgd`, `sam` and `esacl`, this package's
   data path against the DataLoader + PIL reference (`benchmarks/throughput.py`), ResNet-18 at batch
   32 on CIFAR-shaped data, eager, with `compile`, and with `channels_last` + `amp`;
2. wall-clock of one full Split Fashion-MNIST protocol (5 tasks, 1 epoch each) with ResNet-18 (width
   64, Mammoth's) instead of the CPU ConvNet, for `er`, `sparcl-er` and `esacl-er`: training and
   evaluation, checkpoints and run files included;
3. sharpness measurements (`landscape.measure`: SAM gap, Hessian, an 11 x 11 slice) of ResNet-18 on
   256 CIFAR-shaped examples, the slice one grid point per forward against a row of the grid per
   forward (`slice_2d_stacked`, the default on CUDA): seconds of each and the largest difference;
4. the projected wall-clock of the full Split CIFAR-10 protocol (5 tasks x 10,000 examples x 50
   epochs at batch 32) per method and setting, from the measured samples per second (training steps
   only: evaluation, removals and the replay draw's extra forward are not in the projection).

Writes `gpu_check.json` (every figure, the device, versions) and prints a short table. `--tiny`:
a CPU-sized setting (ResNet-18 width 8, a few steps, 2 tasks of 256 examples) that checks the
script end to end in under a minute; its figures mean nothing.
"""

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # esacl, without installing it
sys.path.insert(0, str(Path(__file__).resolve().parent))  # throughput.py beside this file

import throughput  # noqa: E402

from esacl.config import RunConfig, resolve  # noqa: E402
from esacl.data import load_benchmark  # noqa: E402
from esacl.rundir import environment  # noqa: E402
from esacl.train import pick_device, run  # noqa: E402

FMNIST_METHODS = ("er", "sparcl-er", "esacl-er")
CIFAR10_STEPS = 5 * 10_000 * 50 / 32  # tasks x training examples per task x epochs / batch


def throughput_rows(device, tiny: bool, compile_: bool) -> list[dict]:
    settings = [{}, {"channels_last": True, "amp": True}] + ([{"compile": True}] if compile_ else [])
    width, steps, rounds = (8, 4, 1) if tiny else (64, 100, 2)
    workers = 0 if tiny else min(8, os.cpu_count() or 1)
    rows = []
    for setting in settings:
        rows += throughput.measure(width, steps, rounds, ["sgd", "sam", "esacl"], workers, device, setting)
        print(throughput.table(rows[-3:]), flush=True)
    for row in rows:
        row["projected_cifar10_s"] = CIFAR10_STEPS * 32 / row["esacl"]
    return rows


def landscape_row(device, tiny: bool) -> dict:
    """`landscape.measure` of ResNet-18 on 256 CIFAR-shaped examples, the slice serial and stacked."""
    from esacl.landscape import measure
    from esacl.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", (3, 32, 32), 10, 8 if tiny else 64, norm=([0.5] * 3, [0.25] * 3)).to(device)
    x = torch.randint(0, 256, (32 if tiny else 256, 3, 32, 32), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (len(x),), device=device)
    kw = dict(hessian_iters=2 if tiny else 20, hutchinson_samples=1 if tiny else 10, slice_steps=3 if tiny else 11)
    row = {}
    for name, points in (("serial", 1), ("stacked", kw["slice_steps"])):
        measure(model, x[:8], y[:8], **dict(kw, slice_steps=2), slice_points=points)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        tic = time.perf_counter()
        row[name] = measure(model, x, y, **kw, slice_points=points)
        row[f"{name}_s"] = time.perf_counter() - tic
    diff = max(
        abs(a - b)
        for ra, rb in zip(row["serial"]["slice"]["loss"], row["stacked"]["slice"]["loss"])
        for a, b in zip(ra, rb)
    )
    return dict(
        serial_s=row["serial_s"],
        stacked_s=row["stacked_s"],
        ratio=row["serial_s"] / row["stacked_s"],
        max_slice_difference=diff,
        examples=len(x),
        **kw,
    )


def fmnist_protocol(method: str, data_root: str, device, tiny: bool, out: str) -> dict:
    """One Split Fashion-MNIST run with ResNet-18: its wall-clock, train seconds and accuracy."""
    given = RunConfig(
        benchmark="split_fmnist",
        method=method,
        width=8 if tiny else 64,
        device=str(device),
        data_root=data_root,
        progress=False,
        out=out,
        n_tasks=2 if tiny else None,
        name=f"fmnist-resnet18-{method}",
    )
    bench = load_benchmark(resolve(given)[0], device)
    if tiny:
        bench = dataclasses.replace(
            bench,
            tasks=[
                dataclasses.replace(
                    t, x_train=t.x_train[:256], y_train=t.y_train[:256], x_test=t.x_test[:256], y_test=t.y_test[:256]
                )
                for t in bench.tasks
            ],
        )
    bench = dataclasses.replace(bench, backbone="resnet18")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    tic = time.perf_counter()
    record = run(given, bench=bench)  # the protocol's data, ResNet-18 instead of the CPU ConvNet
    wall = time.perf_counter() - tic
    return dict(
        method=method,
        wall_s=wall,
        train_s=record.efficiency["train_seconds"],
        class_il=record.summary["class_il"]["average"],
        task_il=record.summary["task_il"]["average"],
        flops=record.efficiency["flops"],
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="folder holding fashion-mnist/")
    parser.add_argument("--out", default="benchmarks/out", help="where gpu_check.json goes")
    parser.add_argument("--tiny", action="store_true", help="a CPU-sized check of the script itself")
    parser.add_argument("--no-compile", action="store_true", help="skip the compile setting (it needs a C compiler)")
    args = parser.parse_args()
    device = pick_device("auto")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"gpu_check on {device} ({name}), torch {torch.__version__}{' (tiny)' if args.tiny else ''}", flush=True)
    tic = time.perf_counter()
    rows = throughput_rows(device, args.tiny, not args.no_compile)
    landscape = landscape_row(device, args.tiny)
    print(
        f"landscape resnet18: serial slice {landscape['serial_s']:.1f} s, stacked {landscape['stacked_s']:.1f} s "
        f"({landscape['ratio']:.2f}x), largest slice difference {landscape['max_slice_difference']:.2g}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as runs:
        fmnist = []
        for method in FMNIST_METHODS:
            fmnist.append(fmnist_protocol(method, args.data_root, device, args.tiny, runs))
            print(
                f"split_fmnist resnet18 {method}: {fmnist[-1]['wall_s']:.1f} s wall, "
                f"{fmnist[-1]['train_s']:.1f} s training, class-IL {fmnist[-1]['class_il']:.2f}",
                flush=True,
            )
    result = dict(
        device=str(device),
        device_name=name,
        tiny=args.tiny,
        env=environment(device),
        seconds=time.perf_counter() - tic,
        throughput=rows,
        landscape=landscape,
        split_fmnist_resnet18=fmnist,
        cifar10_steps=CIFAR10_STEPS,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1))
    print("\n" + throughput.table(rows))
    print(f"\n{'method':10s}{'settings':>22s}{'projected Split CIFAR-10 (h)':>30s}")
    for row in rows:
        print(f"{row['method']:10s}{row['settings']:>22s}{row['projected_cifar10_s'] / 3600:30.2f}")
    print(
        f"\nsharpness measurements, ResNet-18, {landscape['examples']} examples, "
        f"{landscape['slice_steps']}x{landscape['slice_steps']} slice: one point per forward "
        f"{landscape['serial_s']:.1f} s, a row per forward {landscape['stacked_s']:.1f} s, {landscape['ratio']:.2f}x"
    )
    print(f"\n{'Split Fashion-MNIST, ResNet-18':32s}{'wall s':>8s}{'train s':>9s}{'class-IL':>10s}{'task-IL':>9s}")
    for r in fmnist:
        print(f"{r['method']:32s}{r['wall_s']:8.1f}{r['train_s']:9.1f}{r['class_il']:10.2f}{r['task_il']:9.2f}")
    print(f"\n{time.perf_counter() - tic:.0f} s in all; {out / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
