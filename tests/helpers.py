"""Small builders shared by the tests."""

import torch

from esacl import RunConfig
from esacl.config import resolve
from esacl.learners import Batch


def config(**changes):
    """A resolved split_digits config with `changes`."""
    return resolve(RunConfig(**changes))[0]


def probe_notebook(path, source: str):
    """Write a papermill-ready notebook to `path`: a tagged parameters cell, then `source`; returns `path`."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(
        cells=[new_code_cell("parameters = 1", metadata={"tags": ["parameters"]}), new_code_cell(source)],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    nbformat.write(nb, path)
    return path


def stream_text(notebook) -> list[str]:
    """What the last cell of an executed notebook printed, one entry per stream output."""
    import nbformat

    return [
        o["text"].strip()
        for o in nbformat.read(notebook, as_version=4).cells[-1].outputs
        if o["output_type"] == "stream"
    ]


def toy_batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return Batch(x, y, torch.arange(n), x)


def write_cifar(root, name="cifar-10-batches-py", per_class=2, test_per_class=1, seed=0):
    """A small CIFAR folder in the real on-disk format: python pickles of dicts with bytes keys
    (b'batch_label', b'labels' or b'fine_labels' + b'coarse_labels', b'data' uint8 [N, 3072],
    b'filenames'), every class present in every file. Returns the folder."""
    import pickle
    from pathlib import Path

    import numpy as np

    ten = name == "cifar-10-batches-py"
    n_classes = 10 if ten else 100
    files = ([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]) if ten else ["train", "test"]
    rng = np.random.default_rng(seed)
    folder = Path(root) / name
    folder.mkdir(parents=True)
    for f in files:
        count = test_per_class if f.startswith("test") else per_class
        labels = [c for c in range(n_classes) for _ in range(count)]
        data = rng.integers(0, 256, (len(labels), 3 * 32 * 32), dtype=np.uint8)
        batch = {
            b"batch_label": f"fake {f}".encode(),
            b"data": data,
            b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
        }
        if ten:
            batch[b"labels"] = labels
        else:
            batch[b"fine_labels"] = labels
            batch[b"coarse_labels"] = [c // 5 for c in labels]
        with open(folder / f, "wb") as out:
            pickle.dump(batch, out, protocol=2)
    return folder


def write_tiny_imagenet(root, per_class=2, val_per_class=1, seed=0):
    """A small tiny-imagenet-200 folder in the real layout: wnids.txt (200 ids, unsorted),
    train/<wnid>/images/<wnid>_<i>.JPEG + <wnid>_boxes.txt, val/images/val_<i>.JPEG +
    val/val_annotations.txt (image, wnid, box; tab-separated); 64x64 JPEGs written by PIL, every
    tenth class grayscale (the real set has some). Returns the folder."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = Path(root) / "tiny-imagenet-200"
    wnids = [f"n{rng.integers(10**7, 10**8)}{i:03d}" for i in range(200)]
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")

    def image(k):
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        return Image.fromarray(pixels).convert("L") if k % 10 == 0 else Image.fromarray(pixels)

    annotations, v = [], 0
    for k, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        boxes = []
        for i in range(per_class):
            image(k).save(images / f"{wnid}_{i}.JPEG", quality=90)
            boxes.append(f"{wnid}_{i}.JPEG\t0\t0\t63\t63")
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("\n".join(boxes) + "\n")
        for _ in range(val_per_class):
            image(k).save(folder / "val" / "images" / f"val_{v}.JPEG", quality=90)
            annotations.append(f"val_{v}.JPEG\t{wnid}\t1\t2\t60\t61")
            v += 1
    (folder / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    return folder


def write_idx(path, array, gz=True):
    """`array` (uint8, 1 to 3 dimensions) as an idx file in LeCun's MNIST format: two zero bytes,
    type 0x08 (unsigned byte), the number of dimensions, each dimension as a big-endian uint32,
    then the values; gzip-compressed where `gz`. Returns the path."""
    import gzip
    import struct
    from pathlib import Path

    import numpy as np

    array = np.asarray(array, dtype=np.uint8)
    data = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path
