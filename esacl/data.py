"""Benchmarks: a stream of tasks whose tensors live on the device.

A `Benchmark` holds every task's train and test tensors already on the device, so the training
loop indexes them directly (no DataLoader, no per-sample transforms, no host round trips).

Image benchmarks (Split Fashion-MNIST / CIFAR-10 / CIFAR-100 / Tiny-ImageNet) keep their pixels as
uint8 `[N, C, H, W]` on the device: a quarter of float32's memory, and the model normalises them
itself (`models.InputNorm`). Their augmentation (`crop_flip`) is batched tensor ops on the device. The
files come from a data root (config key `data_root`, else `$ESACL_DATA`) in the datasets' own on-disk
formats (Fashion-MNIST also from Debian's package); nothing is downloaded at run time (`esacl data
download NAME` does it on request).
"""

import gzip
import hashlib
import json
import math
import os
import pickle
import struct
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError


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


# ------------------------------------------------------------------------------------------------
# Datasets on disk


@dataclass(frozen=True)
class Source:
    """Where a benchmark's dataset lives under the data root and where it comes from."""

    folder: str  # under the data root
    url: str  # the official archive (Fashion-MNIST: the folder of its files)
    archive_md5: str
    train: tuple[str, ...] = ()  # CIFAR batch files (the official md5 of each in `md5`)
    test: tuple[str, ...] = ()
    md5: dict = field(default_factory=dict)


# The official per-file md5 sums (the ones torchvision's CIFAR classes verify).
SOURCES: dict[str, Source] = {
    "split_fmnist": Source("fashion-mnist", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", ""),
    "split_cifar10": Source(
        "cifar-10-batches-py",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test=("test_batch",),
        md5={
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
        },
    ),
    "split_cifar100": Source(
        "cifar-100-python",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        train=("train",),
        test=("test",),
        md5={"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"},
    ),
    "split_tinyimagenet": Source(
        "tiny-imagenet-200", "http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de"
    ),
}
CIFAR_LABEL_KEYS = {"split_cifar10": b"labels", "split_cifar100": b"fine_labels"}
TINY_CLASSES, TINY_TRAIN_PER_CLASS, TINY_TEST_PER_CLASS = 200, 500, 50
TINY_CACHE, TINY_CACHE_META = "esacl-cache.npz", "esacl-cache.json"
TINY_CACHE_FORMAT = "esacl-tiny-imagenet-cache-1"


def resolve_root(data_root: str | None = None) -> Path | None:
    """The data root: `data_root` if given, else $ESACL_DATA, else None."""
    root = data_root or os.environ.get("ESACL_DATA")
    return Path(root).expanduser() if root else None


def source_name(name: str) -> str:
    """A benchmark name with a dataset on disk; 'cifar10' etc. are accepted for 'split_cifar10'."""
    for candidate in (name, f"split_{name}"):
        if candidate in SOURCES:
            return candidate
    if name in ("split_digits", "digits"):
        raise UserError(
            "split_digits is embedded (scikit-learn's digits ship with scikit-learn): nothing to check or download"
        )
    raise UserError(f"unknown dataset {name!r}; one of: {', '.join(SOURCES)}")


def how_to_get(name: str, root: Path | None, again: bool = False) -> str:
    """The one-line instruction for fetching a benchmark's dataset into `root`."""
    where = str(root) if root else "DIR"
    if name == "split_fmnist":
        return (
            f"install Debian's package dataset-fashion-mnist ({FMNIST_DEBIAN}), or put the four files "
            f"{', '.join(f + '.gz' for f in FMNIST_FILES)} from {SOURCES[name].url} into {where}/fashion-mnist "
            f"('esacl data download {name} --data-root {where}' where a network exists)"
        )
    return (
        f"get it{' again' if again else ''} with 'esacl data download {name} --data-root {where}' where a network exists, "
        f"or download {SOURCES[name].url} and unpack it into {where}"
    )


def dataset_folder(name: str, data_root: str | None) -> Path:
    """The benchmark's dataset folder under the data root, or a one-line UserError naming what was
    expected where, and how to get it."""
    src = SOURCES[name]
    root = resolve_root(data_root)
    if root is None:
        raise UserError(
            f"{name} reads the folder '{src.folder}' from a data root, but neither config key "
            f"'data_root' nor $ESACL_DATA is set; {how_to_get(name, None)}"
        )
    folder = root / src.folder
    if not folder.is_dir():
        raise UserError(
            f"{name} expects the folder '{src.folder}' under the data root {root}, and {folder} "
            f"does not exist; {how_to_get(name, root)}"
        )
    return folder


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


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file's bytes ('sha256', 'md5'), read in chunks by hashlib."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def tiny_wnids(folder: Path) -> list[str]:
    """The Tiny-ImageNet class ids (wnids.txt), sorted: a class's label is its position here."""
    path = folder / "wnids.txt"
    how = how_to_get("split_tinyimagenet", folder.parent, again=True)
    try:
        wnids = sorted(line.strip() for line in path.read_text().splitlines() if line.strip())
    except FileNotFoundError:
        raise UserError(f"{path} is missing; {how}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is unreadable ({type(err).__name__}); {how}") from None
    if len(wnids) != TINY_CLASSES or len(set(wnids)) != TINY_CLASSES:
        raise UserError(f"{path} lists {len(set(wnids))} distinct classes, expected {TINY_CLASSES}; {how}")
    return wnids


def tiny_files(folder: Path, wnids: list[str]) -> tuple[list[Path], list[int], list[Path], list[int]]:
    """Train images (train/<wnid>/images/*.JPEG) and test images (val/images, labelled by
    val/val_annotations.txt) with their labels; file names sorted, classes in `wnids` order."""
    how = how_to_get("split_tinyimagenet", folder.parent, again=True)
    train, y_train = [], []
    for label, wnid in enumerate(wnids):
        images = sorted((folder / "train" / wnid / "images").glob("*.JPEG"))
        if not images:
            raise UserError(f"{folder / 'train' / wnid / 'images'} has no .JPEG images; {how}")
        train += images
        y_train += [label] * len(images)
    test, y_test = tiny_val(folder, wnids, how)
    return train, y_train, test, y_test


def tiny_val(folder: Path, wnids: list[str], how: str = "") -> tuple[list[Path], list[int]]:
    """The test set: val/images/* with labels from val/val_annotations.txt (image<TAB>wnid<TAB>box)."""
    suffix = f"; {how}" if how else ""
    annotations = folder / "val" / "val_annotations.txt"
    label_of = {w: i for i, w in enumerate(wnids)}
    try:
        rows = [line.split("\t") for line in annotations.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        raise UserError(f"{annotations} is missing{suffix}") from None
    for number, fields in enumerate(rows, 1):
        if len(fields) < 2 or fields[1] not in label_of:
            raise UserError(f"{annotations}:{number} does not name an image and a class of wnids.txt{suffix}")
    if not rows:
        raise UserError(f"{annotations} lists no images{suffix}")
    return [folder / "val" / "images" / f[0] for f in rows], [label_of[f[1]] for f in rows]


def decode_images(paths: list[Path], size: int, progress: bool = True, how: str = "") -> np.ndarray:
    """Decode image files with PIL into [N, size, size, 3] uint8 (grayscale files become RGB)."""
    from PIL import Image

    suffix = f"; {how}" if how else ""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    from tqdm.auto import tqdm

    for i, path in enumerate(
        tqdm(paths, desc="decoding JPEGs (once; cached)", unit="img", disable=not progress, leave=False)
    ):
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
        except FileNotFoundError:
            raise UserError(f"{path} is missing{suffix}") from None
        except (OSError, SyntaxError, ValueError) as err:  # PIL's errors for unreadable or truncated files
            raise UserError(f"{path} is not a readable image ({type(err).__name__}){suffix}") from None
        if pixels.shape != (size, size, 3):
            raise UserError(f"{path} is {pixels.shape[1]}x{pixels.shape[0]}, expected {size}x{size}{suffix}")
        out[i] = pixels
    return out


def _read_tiny_cache(folder: Path, wnids: list[str]) -> dict | None:
    """The cached arrays, or None (with a message) where the cache is absent, stale or fails its checksum."""
    cache, meta_path = folder / TINY_CACHE, folder / TINY_CACHE_META
    if not cache.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        print(f"esacl: {meta_path} is missing or unreadable; rebuilding {cache}", file=sys.stderr)
        return None
    if meta.get("format") != TINY_CACHE_FORMAT or meta.get("wnids") != wnids:
        print(f"esacl: {cache} was built by another version or for another class list; rebuilding it", file=sys.stderr)
        return None
    digest = file_digest(cache, "sha256")  # ~1 s per GB: cheap next to decoding 110,000 JPEGs again
    if digest != meta.get("sha256"):
        print(
            f"esacl: {cache} fails its checksum (sha256 {digest[:12]}..., recorded {str(meta.get('sha256'))[:12]}...); "
            f"rebuilding it from the JPEGs",
            file=sys.stderr,
        )
        return None
    try:
        with np.load(cache) as stored:
            return {k: stored[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:  # a cache cut short before its sidecar
        print(f"esacl: {cache} does not load ({type(err).__name__}); rebuilding it from the JPEGs", file=sys.stderr)
        return None


def _write_tiny_cache(folder: Path, wnids: list[str], arrays: dict) -> None:
    """Write the cache and its sidecar (sha256 of the cache file) via temporary names; a data root that
    cannot be written only costs the next run another decode."""
    cache, meta_path = folder / TINY_CACHE, folder / TINY_CACHE_META
    tmp_cache = cache.with_name(f".{cache.name}.tmp-{os.getpid()}")
    tmp_meta = meta_path.with_name(f".{meta_path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp_cache, "wb") as f:
            np.savez(f, **arrays)  # uncompressed: loading must take seconds, not a minute
        meta = dict(
            format=TINY_CACHE_FORMAT,
            sha256=file_digest(tmp_cache, "sha256"),
            wnids=wnids,
            shapes={k: list(v.shape) for k, v in arrays.items()},
        )
        tmp_meta.write_text(json.dumps(meta) + "\n")
        os.replace(tmp_cache, cache)
        os.replace(tmp_meta, meta_path)
    except OSError as err:
        tmp_cache.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)
        print(
            f"esacl: cannot write the decoded cache {cache} ({err.strerror or err}); the next run decodes the "
            f"JPEGs again",
            file=sys.stderr,
        )


def tiny_imagenet_arrays(folder: Path, progress: bool = True) -> dict[str, np.ndarray]:
    """x_train [N, 64, 64, 3] uint8, y_train [N] int64, x_test, y_test of a tiny-imagenet-200 folder
    (the test set is the official validation set). Decoded with PIL once into `esacl-cache.npz`
    beside the data, its sha256 in `esacl-cache.json`; later calls load the cache, and a cache that
    fails its checksum is rebuilt (with a message)."""
    wnids = tiny_wnids(folder)
    cached = _read_tiny_cache(folder, wnids)
    if cached is not None:
        return cached
    train, y_train, test, y_test = tiny_files(folder, wnids)
    how = how_to_get("split_tinyimagenet", folder.parent, again=True)
    x = decode_images(train + test, 64, progress, how)  # [N + M, 64, 64, 3]
    arrays = dict(
        x_train=x[: len(train)],
        y_train=np.array(y_train, dtype=np.int64),
        x_test=x[len(train) :],
        y_test=np.array(y_test, dtype=np.int64),
    )
    _write_tiny_cache(folder, wnids, arrays)
    return arrays


def _load_tinyimagenet(spec: BenchmarkSpec, cfg, device: torch.device) -> Benchmark:
    folder = dataset_folder(cfg.benchmark, cfg.data_root)
    arrays = dict(tiny_imagenet_arrays(folder, cfg.progress), hwc=True)
    return _image_benchmark(cfg.benchmark, spec, cfg, device, arrays)


# ------------------------------------------------------------------------------------------------
# Fashion-MNIST: the original idx files, from the data root or from Debian's package

FMNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist installs them here
# Each file's shape and the md5 of its decompressed bytes. Debian recompressed the files, so their .gz
# bytes differ from Zalando's release while the data is the same: the check is on the decompressed bytes.
FMNIST_FILES = {
    "train-images-idx3-ubyte": ((60000, 28, 28), "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte": ((60000,), "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte": ((10000, 28, 28), "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte": ((10000,), "15d484375f8d13e6eb1aabb0c3f46965"),
}


def idx_bytes(path: Path) -> bytes:
    """The bytes of an idx file, decompressed where it is gzip (by its magic bytes, not its name); a
    missing, unreadable, truncated or corrupt file is a one-line UserError naming it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path} is missing") from None
    except OSError as err:
        raise UserError(f"{path} is unreadable ({err.strerror or err})") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:  # a truncated or damaged download
        raise UserError(f"{path} is corrupt: it does not decompress ({type(err).__name__})") from None


def parse_idx(data: bytes, path: Path) -> np.ndarray:
    """An idx array of unsigned bytes (LeCun's MNIST format: two zero bytes, type 0x08, the number of
    dimensions, each dimension as a big-endian uint32, then the values) as a numpy array of its
    declared shape. torchvision's reader takes uncompressed files only and checks with asserts,
    so the format (a dozen lines) is read here, each defect a one-line UserError naming the file."""
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08 or not 1 <= data[3] <= 3:
        raise UserError(
            f"{path} is not an idx file of unsigned bytes (magic number {data[:4].hex() or 'absent'}, "
            f"expected 0000080N with N = 1..3)"
        )
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise UserError(f"{path} is truncated: its header ends after {len(data)} bytes")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = memoryview(data)[4 + 4 * ndim :]
    if len(body) != math.prod(shape):
        raise UserError(
            f"{path} is truncated or padded: its header declares {list(shape)} = {math.prod(shape)} "
            f"values, it holds {len(body)}"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(shape).copy()  # writable: torch takes it


def fmnist_folder(data_root: str | None) -> Path:
    """The first of DATA_ROOT/fashion-mnist and Debian's folder that holds any of the four files (each
    as .gz or uncompressed; a file missing there is then named by the read), or a one-line UserError
    naming both places and how to get the files."""
    places = fmnist_places(data_root)
    for folder in places:
        if any(_idx_path(folder, f) is not None for f in FMNIST_FILES):
            return folder
    unset = "" if resolve_root(data_root) else " (no data root: config key 'data_root' and $ESACL_DATA are unset)"
    raise UserError(
        f"split_fmnist found its files neither in {' nor in '.join(map(str, places))}{unset}; "
        f"{how_to_get('split_fmnist', resolve_root(data_root))}"
    )


def fmnist_places(data_root: str | None) -> list[Path]:
    """Where Fashion-MNIST is looked for, in order: DATA_ROOT/fashion-mnist, then Debian's folder."""
    root = resolve_root(data_root)
    return ([root / SOURCES["split_fmnist"].folder] if root else []) + [FMNIST_DEBIAN]


def _idx_path(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def read_fmnist_file(folder: Path, name: str) -> np.ndarray:
    """One of the four files, checked against its shape and the md5 of its decompressed bytes."""
    path = _idx_path(folder, name) or folder / f"{name}.gz"
    data = idx_bytes(path)
    array = parse_idx(data, path)
    shape, md5 = FMNIST_FILES[name]
    if array.shape != shape:
        raise UserError(f"{path} holds an array of shape {list(array.shape)}, expected {list(shape)}")
    got = hashlib.md5(data).hexdigest()
    if got != md5:
        raise UserError(f"{path} is not the official file: md5 of its decompressed data {got}, expected {md5}")
    return array


def fmnist_arrays(folder: Path) -> dict[str, np.ndarray]:
    """x_train [60000, 1, 28, 28] uint8, y_train [60000] int64, x_test [10000, 1, 28, 28], y_test."""
    read = lambda name: read_fmnist_file(folder, name)
    return dict(
        x_train=read("train-images-idx3-ubyte")[:, None],
        y_train=read("train-labels-idx1-ubyte").astype(np.int64),
        x_test=read("t10k-images-idx3-ubyte")[:, None],
        y_test=read("t10k-labels-idx1-ubyte").astype(np.int64),
    )


def _load_fmnist(spec: BenchmarkSpec, cfg, device: torch.device) -> Benchmark:
    arrays = fmnist_arrays(fmnist_folder(cfg.data_root))
    return _image_benchmark(cfg.benchmark, spec, cfg, device, arrays, backbone="convnet28", augment=None)


# The protocol of Mammoth / DER and SparCL (ResNet-18, batch 32, SGD lr 0.03, buffer 500) and SparCL's
# removal / mask schedules; the natural class order is the one the published anchors use.
_IMAGE_PROTOCOL = dict(
    epochs=50,
    batch_size=32,
    lr=0.03,
    buffer_size=500,
    minibatch_size=32,
    width=64,
    removal_every=5,
    removal_until=20,
    tdm_every=5,
    class_order="natural",
)
# Not tuned here (a GPU benchmark): EWC's lambda as Mammoth's ewc_on sets it for these benchmarks.
_IMAGE_TUNED = dict(ewc=dict(ewc_lambda=10.0))

BENCHMARKS: dict[str, BenchmarkSpec] = {
    "split_digits": BenchmarkSpec(
        "scikit-learn digits, 5 tasks x 2 classes, 8x8 gray; offline, seconds on a CPU",
        cpu_channels_last=True,
        n_tasks=5,
        classes_per_task=2,
        protocol=dict(
            epochs=5,
            batch_size=32,
            lr=0.03,
            buffer_size=200,
            minibatch_size=32,
            width=32,
            removal_every=1,
            removal_until=3,
            tdm_every=1,
            class_order="seeded",
        ),
        loader=_load_split_digits,
        # benchmarks/tune.py --benchmark split_digits (seeds 1000-1002): EsaCL's and SparCL's untuned values won
        # (no entry)
        tuned=dict(
            ewc=dict(ewc_lambda=1000.0),
            derpp=dict(derpp_alpha=0.5, derpp_beta=1.0),
            co2l=dict(co2l_temperature=0.2, co2l_distill=0.5),
            lwf=dict(lwf_alpha=1.0, lwf_warmup_epochs=1),
        ),
    ),
    "split_fmnist": BenchmarkSpec(
        "Fashion-MNIST, 5 tasks x 2 classes, 28x28 gray, a CPU-sized ConvNet; data_root/fashion-mnist or Debian's "
        "dataset-fashion-mnist; minutes on a CPU",
        cpu_channels_last=True,
        n_tasks=5,
        classes_per_task=2,
        protocol=dict(
            epochs=1,
            batch_size=32,
            lr=0.03,
            buffer_size=500,
            minibatch_size=32,
            width=16,
            removal_every=1,
            removal_until=1,
            tdm_every=1,
            class_order="seeded",
        ),
        loader=_load_fmnist,
        # benchmarks/tune.py --benchmark split_fmnist --seeds 1000,1001: EsaCL's untuned values won (no entry)
        tuned=dict(
            sparcl=dict(removal_fraction=0.2, dgm_keep=0.1),
            ewc=dict(ewc_lambda=30.0),
            derpp=dict(derpp_alpha=0.1, derpp_beta=1.0),
            co2l=dict(co2l_temperature=0.2, co2l_distill=0.5),
            lwf=dict(lwf_alpha=4.0, lwf_warmup_epochs=0),
        ),
    ),
    "split_cifar10": BenchmarkSpec(
        "CIFAR-10, 5 tasks x 2 classes, 32x32 RGB, ResNet-18; data_root/cifar-10-batches-py; a GPU benchmark",
        n_tasks=5,
        classes_per_task=2,
        protocol=dict(_IMAGE_PROTOCOL),
        loader=_load_cifar,
        tuned=_IMAGE_TUNED,
    ),
    "split_cifar100": BenchmarkSpec(
        "CIFAR-100, 10 tasks x 10 classes, 32x32 RGB, ResNet-18; data_root/cifar-100-python; a GPU benchmark",
        n_tasks=10,
        classes_per_task=10,
        protocol=dict(_IMAGE_PROTOCOL),
        loader=_load_cifar,
        tuned=_IMAGE_TUNED,
    ),
    "split_tinyimagenet": BenchmarkSpec(
        "Tiny-ImageNet, 10 tasks x 20 classes, 64x64 RGB, ResNet-18; data_root/tiny-imagenet-200; a GPU benchmark",
        n_tasks=10,
        classes_per_task=20,
        protocol=dict(_IMAGE_PROTOCOL, epochs=100),
        loader=_load_tinyimagenet,
        tuned=_IMAGE_TUNED,
    ),
}


def check_limits(cfg) -> None:
    """A one-line UserError for a config value its benchmark refuses (`n_tasks` beyond the benchmark's
    tasks), from the benchmark's spec alone (no data loaded): `load_benchmark` calls it, and sweeps
    before any point runs."""
    spec = BENCHMARKS[cfg.benchmark]
    if cfg.n_tasks is not None and cfg.n_tasks > spec.n_tasks:
        raise UserError(f"config key 'n_tasks' must be at most {spec.n_tasks} for {cfg.benchmark}, got {cfg.n_tasks}")


def load_benchmark(cfg, device: torch.device) -> Benchmark:
    """Build the benchmark named by `cfg.benchmark`, its tensors on `device`."""
    check_limits(cfg)
    spec = BENCHMARKS[cfg.benchmark]
    bench = spec.loader(spec, cfg, device)
    if cfg.validation:
        bench.tasks = [validation_split(task, cfg.validation) for task in bench.tasks]
    return bench


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


# ------------------------------------------------------------------------------------------------
# esacl data check | download


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


def _check_tiny(folder: Path) -> tuple[list[str], int]:
    lines, bad = [], 0
    try:
        wnids = tiny_wnids(folder)
    except UserError as err:
        return [f"  BAD      wnids.txt: {str(err).split('; ')[0]}"], 1
    lines.append(f"  ok       wnids.txt  {len(wnids)} classes")
    counts = {w: len(list((folder / "train" / w / "images").glob("*.JPEG"))) for w in wnids}
    short = [w for w, n in counts.items() if n < TINY_TRAIN_PER_CLASS]
    total = sum(counts.values())
    if short:
        bad += 1
        lines.append(
            f"  MISSING  train: {total} images, expected {TINY_CLASSES * TINY_TRAIN_PER_CLASS} "
            f"({len(short)} classes with fewer than {TINY_TRAIN_PER_CLASS}, e.g. train/{short[0]}/images: "
            f"{counts[short[0]]})"
        )
    else:
        lines.append(f"  ok       train  {total} images in {len(wnids)} class folders")
    try:
        test, y_test = tiny_val(folder, wnids)
    except UserError as err:
        return lines + [f"  BAD      val: {err}"], bad + 1
    absent = [p for p in test if not p.is_file()]
    per_class = np.bincount(np.array(y_test, dtype=np.int64), minlength=TINY_CLASSES)
    if absent or (per_class < TINY_TEST_PER_CLASS).any():
        bad += 1
        state = f"{len(absent)} of them absent, e.g. {absent[0].relative_to(folder)}" if absent else "all present"
        lines.append(
            f"  MISSING  val: {len(test)} images listed ({state}), expected "
            f"{TINY_CLASSES * TINY_TEST_PER_CLASS} ({TINY_TEST_PER_CLASS} per class)"
        )
    else:
        lines.append(f"  ok       val  {len(test)} images listed in val/val_annotations.txt, all present")
    cache, meta_path = folder / TINY_CACHE, folder / TINY_CACHE_META
    if not cache.exists():
        lines.append(f"  note     {TINY_CACHE}: not built yet (the first load decodes the JPEGs once, about 1.2 GB)")
    else:
        try:
            recorded = json.loads(meta_path.read_text()).get("sha256")
        except (OSError, ValueError):
            recorded = None
        state = (
            "checksum ok"
            if recorded == file_digest(cache, "sha256")
            else "fails its checksum: rebuilt on the next load"
        )
        lines.append(f"  note     {TINY_CACHE}: {cache.stat().st_size / 1e9:.2f} GB, {state}")
    return lines, bad


def _check_fmnist(root: Path | None) -> tuple[list[str], bool]:
    try:
        folder = fmnist_folder(str(root) if root else None)
    except UserError:
        places = " and ".join(map(str, fmnist_places(str(root) if root else None)))
        return [f"split_fmnist: MISSING in {places}", f"  -> {how_to_get('split_fmnist', root)}"], False
    lines, bad = [f"split_fmnist: {folder}"], 0
    for name, (shape, md5) in FMNIST_FILES.items():
        try:
            read_fmnist_file(folder, name)
            lines.append(
                f"  ok       {_idx_path(folder, name).name}  {'x'.join(map(str, shape))}, md5 of the data {md5}"
            )
        except UserError as err:
            bad += 1
            lines.append(f"  BAD      {err}")
    if bad:
        lines.append(f"  -> {bad} missing or corrupt; {how_to_get('split_fmnist', root)}")
    return lines, not bad


def check_data(data_root: str | None = None, names: list[str] | None = None) -> tuple[list[str], bool]:
    """What `esacl data check` prints, and whether every named dataset (default: all) is complete:
    Fashion-MNIST's files (data root, then Debian's package) against their shapes and checksums, the
    CIFAR files against their official md5 sums, the Tiny-ImageNet layout and its cache."""
    if names and "split_digits" in names:
        names = [n for n in names if n != "split_digits"]
        lines = ["split_digits: embedded (scikit-learn's digits ship with scikit-learn): nothing to check"]
        if not names:
            return lines, True
    else:
        lines = []
    names = [source_name(n) for n in names] if names else list(SOURCES)
    root = resolve_root(data_root)
    need_root = [SOURCES[n].folder for n in names if n != "split_fmnist"]
    if root:
        lines.append(f"data root {root}")
    elif need_root:
        lines.append(
            f"no data root: pass --data-root DIR or set ESACL_DATA (the folder that holds {', '.join(need_root)})"
        )
    else:
        lines.append(f"no data root: Fashion-MNIST is looked for in {FMNIST_DEBIAN} only")
    ok = True
    for name in names:
        if name == "split_fmnist":
            rows, fine = _check_fmnist(root)
            lines += rows
            ok = ok and fine
            continue
        if root is None:
            lines.append(f"{name}: needs a data root holding {SOURCES[name].folder}")
            ok = False
            continue
        folder = root / SOURCES[name].folder
        if not folder.is_dir():
            lines += [f"{name}: MISSING {folder}", f"  -> {how_to_get(name, root)}"]
            ok = False
            continue
        rows, bad = _check_cifar(name, folder) if SOURCES[name].md5 else _check_tiny(folder)
        lines += [f"{name}: {folder}"] + rows
        if bad:
            ok = False
            lines.append(f"  -> {bad} missing or corrupt; {how_to_get(name, root, again=True)}")
    return lines, ok


def download(name: str, data_root: str | None = None) -> Path:
    """Fetch a benchmark's official archive with torchvision's downloader (md5-checked) and unpack it
    under the data root; returns the dataset folder. Where there is no network this is a one-line
    UserError naming the URL."""
    from .vision import import_torchvision

    name = source_name(name)
    src = SOURCES[name]
    root = resolve_root(data_root)
    if root is None:
        raise UserError("no data root: pass --data-root DIR or set ESACL_DATA")
    import_torchvision()
    from torchvision.datasets import FashionMNIST
    from torchvision.datasets.utils import download_and_extract_archive, download_url

    url = src.url
    try:
        if name == "split_fmnist":  # four gzip files, each with the md5 torchvision lists for it
            for file, md5 in FashionMNIST.resources:
                url = src.url + file
                download_url(url, str(root / src.folder), md5=md5)
        else:
            download_and_extract_archive(url, str(root), md5=src.archive_md5, remove_finished=True)
    except Exception as err:  # urllib, socket, md5 and archive errors: all mean "not fetched"
        reason = " ".join(str(err).split()) or type(err).__name__
        raise UserError(f"cannot download {url}: {reason}") from None
    return root / src.folder
