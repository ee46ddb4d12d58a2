"""The benchmarks: the `BENCHMARKS` table (each one's size, protocol, loader and tuned knobs),
`load_benchmark`, the limits a config must keep, and `esacl data check`."""

import torch

from ..errors import UserError
from . import sources
from .cifar import _check_cifar, _load_cifar
from .core import Benchmark, BenchmarkSpec, validation_split
from .digits import _load_split_digits
from .fmnist import _check_fmnist, _load_fmnist
from .sources import SOURCES, how_to_get, resolve_root, source_name
from .tinyimagenet import _check_tiny, _load_tinyimagenet


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
        lines.append(f"no data root: Fashion-MNIST is looked for in {sources.FMNIST_DEBIAN} only")
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
