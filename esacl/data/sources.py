"""Where each benchmark's dataset lives and where it comes from: the data root, the official archives
and their checksums (`SOURCES`), Fashion-MNIST's files and Debian's folder of them, the one-line
instructions for getting a dataset, and `esacl data download`."""

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError


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


FMNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist installs them here
# Each file's shape and the md5 of its decompressed bytes. Debian recompressed the files, so their .gz
# bytes differ from Zalando's release while the data is the same: the check is on the decompressed bytes.
FMNIST_FILES = {
    "train-images-idx3-ubyte": ((60000, 28, 28), "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte": ((60000,), "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte": ((10000, 28, 28), "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte": ((10000,), "15d484375f8d13e6eb1aabb0c3f46965"),
}


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


def fmnist_places(data_root: str | None) -> list[Path]:
    """Where Fashion-MNIST is looked for, in order: DATA_ROOT/fashion-mnist, then Debian's folder."""
    root = resolve_root(data_root)
    return ([root / SOURCES["split_fmnist"].folder] if root else []) + [FMNIST_DEBIAN]


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file's bytes ('sha256', 'md5'), read in chunks by hashlib."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def download(name: str, data_root: str | None = None) -> Path:
    """Fetch a benchmark's official archive with torchvision's downloader (md5-checked) and unpack it
    under the data root; returns the dataset folder. Where there is no network this is a one-line
    UserError naming the URL."""
    from ..vision import import_torchvision

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
