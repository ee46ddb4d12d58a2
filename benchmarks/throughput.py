"""Training throughput of one method step: this package's data path against the reference pipeline.

    .venv/bin/python benchmarks/throughput.py [--methods sgd,sam,esacl] [--workers N] [--rounds R] [--out benchmarks/out]

(a) esacl: the task's uint8 images on the device, batched crop/flip on the device, the package's
    `Trainer.train_epoch` (the method: learner, step, selector) over steps x 32 examples; one host sync per
    segment, as per epoch in a run.
(b) reference, as Mammoth and SparCL build it: a `torch.utils.data.Dataset` over the same uint8
    images returning PIL images through torchvision v1 transforms RandomCrop(32, padding=4),
    RandomHorizontalFlip, ToTensor, Normalize, in a DataLoader(batch_size=32, shuffle=True,
    num_workers=N); each batch copied to the device and trained by the same Step. The model is the
    same architecture with the same initial weights, minus the InputNorm (Normalize does its work).

Same batch size, same number of steps, one process; segments interleaved round by round (every
method, both pipelines), the rate is the median over rounds. The loader's iterator lives across
segments, so its workers prefetch while other segments run (this favours the reference), and
neither loop syncs per step (Mammoth's loop adds a `loss.item()` per step; not counted here).
Data: CIFAR-shaped random uint8 images (no dataset needed). On CPU: ResNet-18 at width 16 for
~40 steps and at width 64 for a few; on CUDA: ResNet-18 (width 64), batch 32.
"""

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from esacl.config import RunConfig, resolve
from esacl.data import Benchmark, Task, channel_stats, crop_flip
from esacl.learners import Batch
from esacl.train import Trainer, build
from esacl.vision import import_torchvision


class _NoBar:
    def update(self, n):
        pass


class UInt8Images(torch.utils.data.Dataset):
    """The reference dataset: [N, 32, 32, 3] uint8 on the host -> (transform(PIL image), label, index)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i]), i


def config(method: str, width: int, device: torch.device, **settings) -> RunConfig:
    """split_cifar10's protocol for `method`; `settings`: speed keys (compile, channels_last, amp)."""
    cfg = RunConfig(
        benchmark="split_cifar10", method=method, width=width, device=str(device), progress=False, **settings
    )
    return resolve(cfg)[0]


def synthetic(x: torch.Tensor, y: torch.Tensor, norm, augment) -> Benchmark:
    """One task over the given images: what `build` needs instead of a dataset on disk."""
    task = Task(0, list(range(10)), x, y, x[:0], y[:0])
    return Benchmark("synthetic", [task], 10, (3, 32, 32), "resnet18", list(range(10)), augment=augment, norm=norm)


def prepared(method, width, device, bench, settings=None):
    """The package's parts for one method, at the first task's start (sparse methods at their target)."""
    cfg = config(method, width, device, **(settings or {}))
    bench, model, method, meter = build(cfg, device, bench)
    task = bench.tasks[0]
    method.selector.begin_task(0, task.y_train)
    method.rule.begin_task(0, 1)  # a ramp of one step: the target sparsity from the start
    method.begin_epoch(0)
    return cfg, bench, model, method, meter


def package_segment(trainer: Trainer, x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds for one pass of train_epoch over (x, y): shuffle, index, augment, step."""
    tic = time.perf_counter()
    mean_loss, _ = trainer.train_epoch(x, y, _NoBar())
    mean_loss.item()  # host sync: the run's once-per-epoch sync
    return time.perf_counter() - tic


def reference_segment(model, method, batches, steps: int, device, cfg=None) -> float:
    """Seconds for `steps` batches from the live DataLoader iterator through the same Step (in the
    memory format and autocast `cfg` asks for, as the package's own loop)."""
    from esacl.train import autocast

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    tic = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    for _ in range(steps):
        x, y, idx = next(batches)  # [B, 3, 32, 32] float
        x = x.to(device, non_blocking=True)
        if cfg is not None and cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y, idx = y.to(device, non_blocking=True), idx.to(device, non_blocking=True)
        batch = method.prepare(Batch(x, y, idx, x))
        with autocast(device, cfg is not None and cfg.amp):
            loss = method.train_step(model, batch)
        loss_sum += loss.total.detach()
    loss_sum.item()  # host sync, once
    return time.perf_counter() - tic


def measure(
    width: int,
    steps: int,
    rounds: int,
    methods: list[str],
    workers: int,
    device: torch.device,
    settings: dict | None = None,
) -> list[dict]:
    """Samples per second of each method, both pipelines, interleaved; median over rounds. `settings`:
    speed keys of RunConfig (compile, channels_last, amp) for both pipelines' model and step."""
    import_torchvision()
    from torchvision import transforms

    n = steps * 32
    g = torch.Generator().manual_seed(0)
    x_host = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)  # [N, 3, 32, 32]
    y_host = torch.randint(0, 10, (n,), generator=g)
    x, y = x_host.to(device), y_host.to(device)
    mean, std = channel_stats(x)
    transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    dataset = UInt8Images(x_host.permute(0, 2, 3, 1).numpy(), y_host.numpy(), transform)
    total = (rounds + 1) * steps * 32 * len(methods)
    # Shuffled without replacement, permutation after permutation, through one iterator for the
    # whole benchmark: no worker restarts between segments.
    sampler = torch.utils.data.RandomSampler(dataset, replacement=False, num_samples=total)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=32,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    batches = iter(loader)

    runners = {}
    for method in methods:
        cfg, bench, model, ours, meter = prepared(
            method, width, device, synthetic(x, y, (mean, std), crop_flip), settings
        )
        trainer = Trainer(cfg, bench, model, ours, meter, rundir=None)
        _, _, ref_model, ref_method, _ = prepared(method, width, device, synthetic(x, y, None, None), settings)
        runners[method] = (
            lambda t=trainer: package_segment(t, x, y),
            lambda m=ref_model, r=ref_method, c=cfg: reference_segment(m, r, batches, steps, device, c),
        )
    seconds = {m: {"esacl": [], "reference": []} for m in methods}
    for r in range(rounds + 1):  # round 0: warm-up, not timed
        for method, (ours, reference) in runners.items():
            for name, segment in (("esacl", ours), ("reference", reference)):
                elapsed = segment()
                if r:
                    seconds[method][name].append(elapsed)
    rows = []
    for method in methods:
        rate = {k: n / statistics.median(v) for k, v in seconds[method].items()}
        rows.append(
            dict(
                backbone=f"resnet18 w{width}",
                method=method,
                settings=settings_label(settings),
                steps=steps,
                rounds=rounds,
                esacl=rate["esacl"],
                reference=rate["reference"],
                ratio=rate["esacl"] / rate["reference"],
                seconds=seconds[method],
            )
        )
    return rows


def settings_label(settings: dict | None) -> str:
    on = [key for key, value in (settings or {}).items() if value]
    return "+".join(on) if on else "eager"


def table(rows: list[dict]) -> str:
    head = (
        f"{'backbone':15s}{'method':8s}{'settings':>20s}{'steps':>6s}{'esacl (samples/s)':>19s}"
        f"{'reference (samples/s)':>23s}{'ratio':>7s}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['backbone']:15s}{r['method']:8s}{r.get('settings', 'eager'):>20s}{r['steps']:6d}"
            f"{r['esacl']:19.1f}{r['reference']:23.1f}{r['ratio']:7.2f}"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="sgd,sam,esacl")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="the reference DataLoader's num_workers (default: min(4, CPU cores))",
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (after one warm-up round)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="benchmarks/out")
    args = parser.parse_args()
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    methods = args.methods.split(",")
    # (width, steps, rounds): a CPU takes ~1.2 s per batch-32 step of the full-width ResNet-18.
    plan = (
        [(64, 200, args.rounds)] if device.type == "cuda" else [(16, 40, args.rounds), (64, 4, max(1, args.rounds - 1))]
    )
    tic = time.perf_counter()
    rows = []
    for width, steps, rounds in plan:
        rows += measure(width, steps, rounds, methods, args.workers, device)
        print(table(rows[-len(methods) :]), flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    text = table(rows)
    print(
        f"\n{text}\n\n{device.type} ({name}), {torch.get_num_threads()} torch threads, {os.cpu_count()} cores, "
        f"DataLoader num_workers={args.workers}; {time.perf_counter() - tic:.0f} s"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "throughput.json").write_text(
        json.dumps(
            dict(
                device=str(device),
                device_name=name,
                torch=torch.__version__,
                threads=torch.get_num_threads(),
                cores=os.cpu_count(),
                workers=args.workers,
                rows=rows,
            ),
            indent=1,
        )
    )
    print(f"rows written to {out / 'throughput.json'}")


if __name__ == "__main__":
    main()
