"""Split-Digits: scikit-learn's 8x8 digits (they ship with scikit-learn), 5 tasks x 2 classes."""

import numpy as np
import torch

from .core import Benchmark, BenchmarkSpec, class_order, split_into_tasks


def _load_split_digits(spec: BenchmarkSpec, cfg, device: torch.device) -> Benchmark:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()  # ships inside scikit-learn: 1797 images, 8x8, values 0..16
    x = digits.images.astype(np.float32)[:, None] / 16.0  # [1797, 1, 8, 8]
    y = digits.target.astype(np.int64)
    # The split is fixed (not seeded), like CIFAR's fixed test set; stratified by class.
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    mean, std = x_tr.mean(), x_tr.std()
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    order = class_order(10, cfg.seed, cfg.class_order or spec.protocol["class_order"])
    as_dev = lambda a: torch.from_numpy(a).to(device)
    tasks = split_into_tasks(
        as_dev(x_tr),
        as_dev(y_tr),
        as_dev(x_te),
        as_dev(y_te),
        order,
        spec.classes_per_task,
        cfg.n_tasks or spec.n_tasks,
    )
    return Benchmark("split_digits", tasks, 10, (1, 8, 8), "convnet", order)
