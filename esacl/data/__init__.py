"""Benchmarks: a stream of tasks whose tensors live on the device.

A `Benchmark` holds every task's train and test tensors already on the device, so the training
loop indexes them directly (no DataLoader, no per-sample transforms, no host round trips).

Image benchmarks (Split Fashion-MNIST / CIFAR-10 / CIFAR-100 / Tiny-ImageNet) keep their pixels as
uint8 `[N, C, H, W]` on the device: a quarter of float32's memory, and the model normalises them
itself (`models.InputNorm`). Their augmentation (`crop_flip`) is batched tensor ops on the device. The
files come from a data root (config key `data_root`, else `$ESACL_DATA`) in the datasets' own on-disk
formats (Fashion-MNIST also from Debian's package); nothing is downloaded at run time (`esacl data
download NAME` does it on request).

Where each part lives (every public name is re-exported here):

- `core`: `Task`, `Benchmark`, `BenchmarkSpec`, the class order and the cut into tasks, the on-device
  augmentation, the normalisation statistics, the image benchmarks' shared upload, the validation split;
- `sources`: the data root, each dataset's folder, official archive and checksums (`SOURCES`,
  `FMNIST_FILES`, Debian's Fashion-MNIST folder `FMNIST_DEBIAN`), how to get a dataset, `download`;
- one module per dataset family, each with its reader, loader and check: `digits` (Split-Digits,
  from scikit-learn), `fmnist` (Fashion-MNIST's idx files), `cifar` (CIFAR-10/100's batch files),
  `tinyimagenet` (Tiny-ImageNet's JPEGs and their cache);
- `benchmarks`: the `BENCHMARKS` table, `check_limits`, `load_benchmark` and `check_data`.

The names here are the modules' own objects, bound at import: to replace a module global in a test
(Debian's folder, say), patch it where it is read (`esacl.data.sources.FMNIST_DEBIAN`), not here.
"""

from .benchmarks import BENCHMARKS, check_data, check_limits, load_benchmark
from .cifar import CIFAR_LABEL_KEYS, CifarUnpickler, UnpicklingError, read_cifar_batch
from .core import (
    Benchmark,
    BenchmarkSpec,
    Task,
    channel_stats,
    class_order,
    crop_flip,
    random_window,
    split_into_tasks,
    validation_split,
)
from .fmnist import fmnist_arrays, fmnist_folder, idx_bytes, parse_idx, read_fmnist_file
from .sources import (
    FMNIST_DEBIAN,
    FMNIST_FILES,
    SOURCES,
    Source,
    dataset_folder,
    download,
    file_digest,
    fmnist_places,
    how_to_get,
    resolve_root,
    source_name,
)
from .tinyimagenet import (
    TINY_CACHE,
    TINY_CACHE_FORMAT,
    TINY_CACHE_META,
    TINY_CLASSES,
    TINY_TEST_PER_CLASS,
    TINY_TRAIN_PER_CLASS,
    decode_images,
    tiny_files,
    tiny_imagenet_arrays,
    tiny_val,
    tiny_wnids,
)

__all__ = [
    # core
    "Benchmark",
    "BenchmarkSpec",
    "Task",
    "channel_stats",
    "class_order",
    "crop_flip",
    "random_window",
    "split_into_tasks",
    "validation_split",
    # sources
    "FMNIST_DEBIAN",
    "FMNIST_FILES",
    "SOURCES",
    "Source",
    "dataset_folder",
    "download",
    "file_digest",
    "fmnist_places",
    "how_to_get",
    "resolve_root",
    "source_name",
    # fmnist
    "fmnist_arrays",
    "fmnist_folder",
    "idx_bytes",
    "parse_idx",
    "read_fmnist_file",
    # cifar
    "CIFAR_LABEL_KEYS",
    "CifarUnpickler",
    "UnpicklingError",
    "read_cifar_batch",
    # tinyimagenet
    "TINY_CACHE",
    "TINY_CACHE_FORMAT",
    "TINY_CACHE_META",
    "TINY_CLASSES",
    "TINY_TEST_PER_CLASS",
    "TINY_TRAIN_PER_CLASS",
    "decode_images",
    "tiny_files",
    "tiny_imagenet_arrays",
    "tiny_val",
    "tiny_wnids",
    # benchmarks
    "BENCHMARKS",
    "check_data",
    "check_limits",
    "load_benchmark",
]
