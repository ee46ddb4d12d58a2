"""Split Fashion-MNIST: the original idx files (gzip or not) from the data root or from Debian's
package, their reader, checks and loader. Where they are looked for (`fmnist_places`, Debian's folder
`FMNIST_DEBIAN`) and their shapes and checksums (`FMNIST_FILES`) live in `sources`."""

import gzip
import hashlib
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .core import Benchmark, BenchmarkSpec, _image_benchmark
from .sources import FMNIST_FILES, fmnist_places, how_to_get, resolve_root


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
