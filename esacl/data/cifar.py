"""Split CIFAR-10 and CIFAR-100: the official python batch files, read by an unpickler that builds
nothing but containers and numpy arrays, their loader and their check against the official md5 sums."""

import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .core import Benchmark, BenchmarkSpec, _image_benchmark
from .sources import SOURCES, dataset_folder, file_digest, how_to_get, resolve_root


CIFAR_LABEL_KEYS = {"split_cifar10": b"labels", "split_cifar100": b"fine_labels"}


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array {list(value.shape)}"
    return "nothing" if value is None else type(value).__name__


class UnpicklingError(Exception):
    """A pickle asked for something a CIFAR batch does not contain."""


class CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only what the official CIFAR batches hold: dicts, lists, bytes, str,
    int and numpy arrays. Any other global (a class, a function such as os.system) is refused
    before anything runs, so a crafted file cannot execute code."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise UnpicklingError(f"{module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: Path, label_key: bytes, n_classes: int, how: str = "") -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch file: images [N, 3, 32, 32] uint8 (channels first, as stored) and labels
    [N] int64. The file is a pickle, the format's official form, read by `CifarUnpickler`, which
    builds nothing but containers and numpy arrays. A missing, unreadable, hostile or misshapen file is
    a one-line UserError naming it."""
    suffix = f"; {how}" if how else ""
    try:
        with open(path, "rb") as f:
            batch = CifarUnpickler(f, encoding="bytes").load()
    except UnpicklingError as err:
        raise UserError(
            f"{path} is not a CIFAR batch: it asks to load {err} (only numpy arrays are allowed){suffix}"
        ) from None
    except FileNotFoundError:
        raise UserError(f"{path} is missing{suffix}") from None
    except Exception as err:  # a truncated or foreign file raises any of several types
        raise UserError(f"{path} is corrupt: it does not unpickle ({type(err).__name__}){suffix}") from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(label_key) if isinstance(batch, dict) else None
    if not (
        isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3 * 32 * 32
    ):
        raise UserError(
            f"{path} is not a CIFAR batch: expected b'data' as uint8 [N, 3072], got {_describe(data)}{suffix}"
        )
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        y = None
    if y is None or y.shape != (len(data),):
        raise UserError(
            f"{path} is not a CIFAR batch: expected {label_key!r} with {len(data)} labels, "
            f"got {_describe(labels if y is None else y)}{suffix}"
        )
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise UserError(f"{path} has labels outside 0..{n_classes - 1}{suffix}")
    return data.reshape(-1, 3, 32, 32), y


def _load_cifar(spec: BenchmarkSpec, cfg, device: torch.device) -> Benchmark:
    name = cfg.benchmark
    src = SOURCES[name]
    folder = dataset_folder(name, cfg.data_root)
    how = how_to_get(name, resolve_root(cfg.data_root), again=True)
    n_classes = spec.n_tasks * spec.classes_per_task
    arrays = {}
    for split, files in (("train", src.train), ("test", src.test)):
        parts = [read_cifar_batch(folder / f, CIFAR_LABEL_KEYS[name], n_classes, how) for f in files]
        arrays[f"x_{split}"] = np.concatenate([x for x, _ in parts])  # [N, 3, 32, 32] uint8
        arrays[f"y_{split}"] = np.concatenate([y for _, y in parts])
    return _image_benchmark(name, spec, cfg, device, arrays)


def _check_cifar(name: str, folder: Path) -> tuple[list[str], int]:
    src = SOURCES[name]
    lines, bad = [], 0
    for f in src.train + src.test:
        path = folder / f
        if not path.is_file():
            lines.append(f"  MISSING  {f}")
            bad += 1
            continue
        got = file_digest(path, "md5")
        if got == src.md5[f]:
            lines.append(f"  ok       {f}  md5 {got}")
        else:
            lines.append(f"  CORRUPT  {f}  md5 {got}, official {src.md5[f]}")
            bad += 1
    return lines, bad
