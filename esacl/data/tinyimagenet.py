"""Split Tiny-ImageNet: the tiny-imagenet-200 folder (JPEGs, wnids.txt, the validation set as the test
set), decoded once into a checksummed cache beside the data, its loader and its check."""

import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .core import Benchmark, BenchmarkSpec, _image_benchmark
from .sources import dataset_folder, file_digest, how_to_get


TINY_CLASSES, TINY_TRAIN_PER_CLASS, TINY_TEST_PER_CLASS = 200, 500, 50
TINY_CACHE, TINY_CACHE_META = "esacl-cache.npz", "esacl-cache.json"
TINY_CACHE_FORMAT = "esacl-tiny-imagenet-cache-1"


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
