"""The stream every benchmark builds: `Task`, `Benchmark`, `BenchmarkSpec`, the class order and the cut
into tasks, the on-device augmentation (`crop_flip`, `random_window`), the normalisation statistics,
the image benchmarks' shared upload (`_image_benchmark`) and the validation split."""

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from .sources import how_to_get, resolve_root


@dataclass
class Task:
    """One task of the stream: its classes and its data, resident on the device."""

    index: int
    classes: list[int]  # global class ids of this task, in stream order
    x_train: torch.Tensor  # [N, C, H, W]
    y_train: torch.Tensor  # [N] int64, global class ids
    x_test: torch.Tensor  # [M, C, H, W]
    y_test: torch.Tensor  # [M] int64


@dataclass
class Benchmark:
    """A class-incremental stream: `n_tasks` tasks of `classes_per_task` classes each."""

    name: str
    tasks: list[Task]
    n_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W)
    backbone: str  # models.build name
    class_order: list[int]  # class ids in stream order
    augment: object = None  # batched on-device augmentation, or None
    norm: tuple | None = None  # (mean, std) per channel in 0..1 units: the model's InputNorm

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)


@dataclass(frozen=True)
class BenchmarkSpec:
    """What `esacl benchmarks` lists and what `RunConfig` falls back to."""

    summary: str
    n_tasks: int
    classes_per_task: int
    protocol: dict = field(default_factory=dict)  # defaults for config.PROTOCOL_KEYS
    loader: object = None  # (spec, cfg, device) -> Benchmark
    # family (presets.families) -> {knob: value}: the tuned knobs' values chosen for this benchmark on its
    # validation split (benchmarks/tune.py, docs/method.md "Tuning"); a knob not named keeps its untuned default.
    tuned: dict = field(default_factory=dict)
    # channels_last by default on a CPU: where benchmarks/cpu_switches.py measured it faster for the
    # backbone (the ConvNets: 0.64-0.74x the NCHW step). Not the ResNet-18: 0.93x, and torch 2.13's CPU
    # backward of its 8-channel 1x1 stride-2 shortcut at 64x64 (Tiny-ImageNet, width 8) crashes in it.
    cpu_channels_last: bool = False


def class_order(n_classes: int, seed: int, mode: str) -> list[int]:
    """The stream's class order: natural ('natural'), or a permutation fixed by the seed ('seeded')."""
    if mode == "natural":
        return list(range(n_classes))
    return np.random.default_rng(seed).permutation(n_classes).tolist()


def split_into_tasks(x_train, y_train, x_test, y_test, order, classes_per_task, n_tasks):
    """Cut whole-dataset tensors into tasks following `order` (tensors keep their device)."""
    tasks = []
    for t in range(n_tasks):
        classes = order[t * classes_per_task : (t + 1) * classes_per_task]
        keep_train = torch.isin(y_train, torch.tensor(classes, device=y_train.device))
        keep_test = torch.isin(y_test, torch.tensor(classes, device=y_test.device))
        tasks.append(Task(t, classes, x_train[keep_train], y_train[keep_train], x_test[keep_test], y_test[keep_test]))
    return tasks


def crop_flip(x: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding `pad`, then a random horizontal flip, per example.

    x: [B, C, H, W] of any dtype (uint8 for the image benchmarks); returns the same shape and dtype.
    Each example draws its own offsets (0..2 pad in each direction) and its own coin for the flip
    from torch's global RNG on x's device (checkpoints save it). One pad and one gather, batched on
    the device: no per-example Python, no host sync.
    """
    return random_window(F.pad(x, (pad, pad, pad, pad)), pad, flip=True)  # zero padding


def random_window(padded: torch.Tensor, pad: int, flip: bool) -> torch.Tensor:
    """Per example, the H x W window of `padded` ([B, C, H + 2 pad, W + 2 pad]) at a random offset
    (0..2 pad each way) and, with `flip`, read backwards with probability 1/2: one gather, no host
    sync. Draws, in this order, the rows' offsets, the columns' and the flips from torch's global
    RNG on the tensor's device. Shared by `crop_flip` and CO2L's views."""
    b, c = padded.shape[:2]
    h, w = padded.shape[2] - 2 * pad, padded.shape[3] - 2 * pad
    dev = padded.device
    top = torch.randint(0, 2 * pad + 1, (b, 1), device=dev)  # [B, 1]
    left = torch.randint(0, 2 * pad + 1, (b, 1), device=dev)  # [B, 1]
    rows = top + torch.arange(h, device=dev)  # [B, H]
    cols = left + torch.arange(w, device=dev)  # [B, W]
    if flip:
        flipped = torch.rand(b, 1, device=dev) < 0.5  # [B, 1]
        cols = torch.where(flipped, cols.flip(1), cols)  # a flip reads the window backwards
    example = torch.arange(b, device=dev)[:, None, None, None]  # [B, 1, 1, 1]
    channel = torch.arange(c, device=dev)[None, :, None, None]  # [1, C, 1, 1]
    return padded[example, channel, rows[:, None, :, None], cols[:, None, None, :]]  # [B, C, H, W]


def channel_stats(x: torch.Tensor, chunk: int = 2048) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (0..1 units) of uint8 images `x` [N, C, H, W], computed on x's device
    in float32 chunks with float64 sums (a whole float copy of Tiny-ImageNet would be 4.9 GB).
    One host sync."""
    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64, device=x.device)
    squares = torch.zeros(c, dtype=torch.float64, device=x.device)
    for part in x.split(chunk):
        v = part.float()  # [n, C, H, W], exact for 0..255
        total += v.sum(dim=(0, 2, 3), dtype=torch.float64)
        squares += (v * v).sum(dim=(0, 2, 3), dtype=torch.float64)
    count = x.numel() // c
    mean = total / count / 255
    std = (squares / count / 255**2 - mean**2).clamp(min=0).sqrt()
    return mean.tolist(), std.tolist()  # host sync


def _image_benchmark(name, spec, cfg, device, arrays, backbone: str = "resnet18", augment=crop_flip) -> Benchmark:
    """uint8 images ([N, C, H, W] numpy, or [N, H, W, C] where `arrays["hwc"]`) -> a stream on
    the device with its normalisation statistics and (by default) crop/flip augmentation."""
    n_classes = spec.n_tasks * spec.classes_per_task
    for split in ("train", "test"):
        counts = np.bincount(arrays[f"y_{split}"], minlength=n_classes)
        if (counts == 0).any():
            raise UserError(
                f"{name}: the {split} set has no images of class {int(np.argmin(counts))}; "
                f"{how_to_get(name, resolve_root(cfg.data_root))}"
            )

    def upload(x):
        x = torch.from_numpy(x).to(device)
        if arrays.get("hwc"):  # [N, H, W, C] -> [N, C, H, W], the copy on the device
            x = x.permute(0, 3, 1, 2).contiguous()
        return x

    x_train, x_test = upload(arrays["x_train"]), upload(arrays["x_test"])  # [N, C, H, W] uint8
    y_train = torch.from_numpy(arrays["y_train"]).to(device)
    y_test = torch.from_numpy(arrays["y_test"]).to(device)
    order = class_order(n_classes, cfg.seed, cfg.class_order or spec.protocol["class_order"])
    tasks = split_into_tasks(
        x_train, y_train, x_test, y_test, order, spec.classes_per_task, cfg.n_tasks or spec.n_tasks
    )
    return Benchmark(
        name, tasks, n_classes, tuple(x_train.shape[1:]), backbone, order, augment=augment, norm=channel_stats(x_train)
    )


def validation_split(task: Task, share: float) -> Task:
    """The task with `share` of each class's training examples held out as its test set (the real test
    set is dropped): for choosing hyper-parameters without looking at the accuracy a run reports.
    The held-out examples are fixed (a permutation seeded with 0, like a fixed test set), not
    drawn from the run's seed."""
    g = torch.Generator().manual_seed(0)
    held, kept = [], []
    for c in task.classes:
        idx = (task.y_train == c).nonzero().flatten().cpu()  # host sync: once per task
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_held = round(share * len(idx))
        held.append(idx[:n_held])
        kept.append(idx[n_held:])
    held, kept = (torch.cat(parts).sort().values.to(task.y_train.device) for parts in (held, kept))
    return Task(
        task.index, task.classes, task.x_train[kept], task.y_train[kept], task.x_train[held], task.y_train[held]
    )
