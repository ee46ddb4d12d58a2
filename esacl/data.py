"""Benchmarks: a stream of tasks whose tensors live on the device.

A `Benchmark` holds every task's train and test tensors already on the device, so the training
loop indexes them directly (no DataLoader, no per-sample transforms, no host round trips).
"""
from dataclasses import dataclass, field

import numpy as np
import torch

from .config import UserError


@dataclass
class Task:
    """One task of the stream: its classes and its data, resident on the device."""
    index: int
    classes: list[int]           # global class ids of this task, in stream order
    x_train: torch.Tensor        # [N, C, H, W]
    y_train: torch.Tensor        # [N] int64, global class ids
    x_test: torch.Tensor         # [M, C, H, W]
    y_test: torch.Tensor         # [M] int64


@dataclass
class Benchmark:
    """A class-incremental stream: `n_tasks` tasks of `classes_per_task` classes each."""
    name: str
    tasks: list[Task]
    n_classes: int
    input_shape: tuple[int, int, int]         # (C, H, W)
    backbone: str                              # models.build name
    class_order: list[int]                     # class ids in stream order
    augment: object = None                     # batched on-device augmentation, or None

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)


@dataclass(frozen=True)
class BenchmarkSpec:
    """What `esacl benchmarks` lists and what `RunConfig` falls back to."""
    summary: str
    n_tasks: int
    classes_per_task: int
    protocol: dict = field(default_factory=dict)   # defaults for config.PROTOCOL_KEYS
    loader: object = None                           # (spec, cfg, device) -> Benchmark


def class_order(n_classes: int, seed: int, mode: str) -> list[int]:
    """The stream's class order: natural, or a permutation fixed by the seed."""
    if mode == "natural":
        return list(range(n_classes))
    return np.random.default_rng(seed).permutation(n_classes).tolist()


def split_into_tasks(x_train, y_train, x_test, y_test, order, classes_per_task, n_tasks):
    """Cut whole-dataset tensors into tasks following `order` (tensors keep their device)."""
    tasks = []
    for t in range(n_tasks):
        classes = order[t * classes_per_task:(t + 1) * classes_per_task]
        keep_train = torch.isin(y_train, torch.tensor(classes, device=y_train.device))
        keep_test = torch.isin(y_test, torch.tensor(classes, device=y_test.device))
        tasks.append(Task(t, classes, x_train[keep_train], y_train[keep_train],
                          x_test[keep_test], y_test[keep_test]))
    return tasks


def _load_split_digits(spec: BenchmarkSpec, cfg, device: torch.device) -> Benchmark:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()  # ships inside scikit-learn: 1797 images, 8x8, values 0..16
    x = digits.images.astype(np.float32)[:, None] / 16.0         # [1797, 1, 8, 8]
    y = digits.target.astype(np.int64)
    # The split is fixed (not seeded), like CIFAR's fixed test set; stratified by class.
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    mean, std = x_tr.mean(), x_tr.std()
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    order = class_order(10, cfg.seed, cfg.class_order)
    as_dev = lambda a: torch.from_numpy(a).to(device)
    tasks = split_into_tasks(as_dev(x_tr), as_dev(y_tr), as_dev(x_te), as_dev(y_te),
                             order, spec.classes_per_task, cfg.n_tasks or spec.n_tasks)
    return Benchmark("split_digits", tasks, 10, (1, 8, 8), "convnet", order)


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "split_digits": BenchmarkSpec(
        "scikit-learn digits, 5 tasks x 2 classes, 8x8 gray; offline, seconds on a CPU",
        n_tasks=5, classes_per_task=2,
        protocol=dict(epochs=5, batch_size=32, lr=0.03, buffer_size=200, minibatch_size=32, width=32,
                      removal_every=1, removal_until=3, tdm_every=1),
        loader=_load_split_digits),
}


def load_benchmark(cfg, device: torch.device) -> Benchmark:
    """Build the benchmark named by `cfg.benchmark`, its tensors on `device`."""
    spec = BENCHMARKS[cfg.benchmark]
    if cfg.n_tasks is not None and cfg.n_tasks > spec.n_tasks:
        raise UserError(f"config key 'n_tasks' must be at most {spec.n_tasks} for {cfg.benchmark}, "
                        f"got {cfg.n_tasks}")
    return spec.loader(spec, cfg, device)
