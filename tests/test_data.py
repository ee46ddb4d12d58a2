import hashlib
import json
import math
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import esacl
from esacl import RunConfig, UserError
from esacl.data import sources as sources_module
from esacl.data import (
    FMNIST_DEBIAN,
    FMNIST_FILES,
    SOURCES,
    TINY_CACHE,
    TINY_CACHE_META,
    crop_flip,
    fmnist_arrays,
    idx_bytes,
    load_benchmark,
    parse_idx,
    tiny_imagenet_arrays,
)
from esacl.method import PRESETS
from workbench.cli import main
from helpers import write_cifar, write_idx, write_tiny_imagenet


def digits(**changes):
    return load_benchmark(RunConfig(**changes), torch.device("cpu"))


def test_split_digits_is_five_disjoint_two_class_tasks():
    bench = digits()
    assert bench.n_tasks == 5 and bench.input_shape == (1, 8, 8) and bench.n_classes == 10
    seen = set()
    for task in bench.tasks:
        assert len(task.classes) == 2 and not seen & set(task.classes)
        seen |= set(task.classes)
        assert set(task.y_train.tolist()) == set(task.classes) == set(task.y_test.tolist())
        assert task.x_train.shape[1:] == (1, 8, 8) and task.x_train.dtype == torch.float32
    assert seen == set(range(10))
    assert sum(len(t.y_train) for t in bench.tasks) + sum(len(t.y_test) for t in bench.tasks) == 1797


def test_the_split_is_stratified_fixed_and_normalised():
    bench = digits()
    x_train = torch.cat([t.x_train for t in bench.tasks])
    assert abs(x_train.mean().item()) < 1e-4 and abs(x_train.std().item() - 1) < 1e-3
    y_train = torch.cat([t.y_train for t in bench.tasks])
    y_test = torch.cat([t.y_test for t in bench.tasks])
    share = torch.bincount(y_test, minlength=10) / (
        torch.bincount(y_train, minlength=10) + torch.bincount(y_test, minlength=10)
    )
    assert ((share - 0.25).abs() < 0.01).all()

    def test_images_by_class(bench):  # class -> its test images, sorted: the split, whatever the task order
        x = torch.cat([t.x_test for t in bench.tasks]).flatten(1)
        y = torch.cat([t.y_test for t in bench.tasks])
        return {c: sorted(map(tuple, x[y == c].tolist())) for c in range(10)}

    fixed = test_images_by_class(bench)
    other = digits(seed=1)
    assert other.class_order != bench.class_order  # another task order ...
    assert test_images_by_class(other) == fixed  # ... over the same test examples


def test_class_order_is_fixed_per_seed():
    assert digits(seed=7).class_order == digits(seed=7).class_order
    assert digits(seed=7).class_order != digits(seed=8).class_order
    assert digits(seed=7, class_order="natural").class_order == list(range(10))
    assert digits(class_order="natural").tasks[1].classes == [2, 3]


def test_n_tasks_cuts_the_stream_and_is_bounded():
    assert digits(n_tasks=2).n_tasks == 2
    with pytest.raises(UserError, match="'n_tasks' must be at most 5 for split_digits"):
        digits(n_tasks=6)


# ------------------------------------------------------------------------------------------------
# Image benchmarks: small files in the real on-disk formats, loaded through the user's code path


def image_bench(name, root, **changes):
    return load_benchmark(
        RunConfig(benchmark=name, data_root=str(root), progress=False, **changes), torch.device("cpu")
    )


def test_cifar10_loads_uint8_channels_first_in_natural_order(tmp_path):
    folder = write_cifar(tmp_path, per_class=2, test_per_class=1)
    bench = image_bench("split_cifar10", tmp_path)
    assert bench.n_tasks == 5 and bench.n_classes == 10 and bench.input_shape == (3, 32, 32)
    assert bench.backbone == "resnet18" and bench.augment is crop_flip
    assert bench.class_order == list(range(10)) and bench.tasks[1].classes == [2, 3]
    with open(folder / "data_batch_2", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    first = raw[b"data"][0].reshape(3, 32, 32)  # the format: 1024 R, then G, then B, row-major
    label = raw[b"labels"][0]
    task = bench.tasks[label // 2]
    assert task.x_train.dtype == torch.uint8 and task.x_train.shape[1:] == (3, 32, 32)
    hits = (task.x_train == torch.from_numpy(first)).flatten(1).all(1)
    assert hits.sum() == 1 and task.y_train[hits].item() == label
    assert sum(len(t.y_train) for t in bench.tasks) == 10 * 2 * 5 and sum(len(t.y_test) for t in bench.tasks) == 10
    x = torch.cat([t.x_train for t in bench.tasks]).double() / 255  # the model's normalisation: train stats
    mean, std = bench.norm
    assert np.allclose(mean, x.mean(dim=(0, 2, 3)).tolist(), atol=1e-6)
    assert np.allclose(std, x.std(dim=(0, 2, 3), unbiased=False).tolist(), atol=1e-6)


def test_cifar100_reads_fine_labels_into_ten_tasks(tmp_path):
    write_cifar(tmp_path, name="cifar-100-python", per_class=2, test_per_class=1)
    bench = image_bench("split_cifar100", tmp_path, n_tasks=3)
    assert bench.n_tasks == 3 and bench.n_classes == 100
    assert [t.classes for t in bench.tasks] == [list(range(10 * k, 10 * k + 10)) for k in range(3)]
    assert all(len(t.y_train) == 20 and len(t.y_test) == 10 for t in bench.tasks)


def test_image_benchmarks_take_their_protocol_defaults():
    for name, epochs in (("split_cifar10", 50), ("split_cifar100", 50), ("split_tinyimagenet", 100)):
        cfg, filled = esacl.config.resolve(RunConfig(benchmark=name))
        assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.buffer_size, cfg.minibatch_size, cfg.width) == (
            epochs,
            32,
            0.03,
            500,
            32,
            64,
        )
        assert (cfg.removal_every, cfg.removal_until, cfg.tdm_every, cfg.class_order) == (5, 20, 5, "natural")
        assert "class_order" in filled
    cfg, _ = esacl.config.resolve(RunConfig())
    assert cfg.class_order == "seeded"


def test_data_root_falls_back_to_the_environment(tmp_path, monkeypatch):
    write_cifar(tmp_path / "data")
    monkeypatch.setenv("ESACL_DATA", str(tmp_path / "data"))
    bench = load_benchmark(RunConfig(benchmark="split_cifar10", n_tasks=1), torch.device("cpu"))
    assert bench.tasks[0].classes == [0, 1]


def one_line_error(fn) -> str:
    with pytest.raises(UserError) as err:
        fn()
    message = str(err.value)
    assert "\n" not in message
    return message


def test_missing_data_is_one_line_naming_the_folder_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("ESACL_DATA", raising=False)
    for name, folder in (
        ("split_cifar10", "cifar-10-batches-py"),
        ("split_cifar100", "cifar-100-python"),
        ("split_tinyimagenet", "tiny-imagenet-200"),
    ):
        message = one_line_error(lambda name=name: load_benchmark(RunConfig(benchmark=name), torch.device("cpu")))
        assert folder in message and "ESACL_DATA" in message and f"esacl data download {name}" in message
        assert SOURCES[name].url in message
        message = one_line_error(lambda name=name: image_bench(name, tmp_path))
        assert str(tmp_path / folder) in message and f"--data-root {tmp_path}" in message


def test_a_corrupt_or_misshapen_batch_is_one_line_naming_the_file(tmp_path):
    folder = write_cifar(tmp_path)
    whole = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(whole[: len(whole) // 2])  # truncated download
    message = one_line_error(lambda: image_bench("split_cifar10", tmp_path))
    assert str(folder / "data_batch_3") in message and "corrupt" in message
    (folder / "data_batch_3").write_bytes(whole)
    with open(folder / "test_batch", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    batch[b"data"] = batch[b"data"][:, :1000]
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch, f)
    message = one_line_error(lambda: image_bench("split_cifar10", tmp_path))
    assert str(folder / "test_batch") in message and "[N, 3072]" in message
    (folder / "data_batch_1").unlink()
    message = one_line_error(lambda: image_bench("split_cifar10", tmp_path))
    assert str(folder / "data_batch_1") in message and "missing" in message


def test_tiny_imagenet_decodes_once_into_a_checksummed_cache(tmp_path, capsys):
    folder = write_tiny_imagenet(tmp_path, per_class=2, val_per_class=1)
    arrays = tiny_imagenet_arrays(folder, progress=False)
    assert arrays["x_train"].shape == (400, 64, 64, 3) and arrays["x_test"].shape == (200, 64, 64, 3)
    wnids = sorted((folder / "wnids.txt").read_text().split())
    probe = folder / "train" / wnids[7] / "images" / f"{wnids[7]}_1.JPEG"
    expected = np.asarray(Image.open(probe).convert("RGB"))
    assert np.array_equal(arrays["x_train"][15], expected) and arrays["y_train"][15] == 7
    gray = next(k for k, w in enumerate(wnids) if w == (folder / "wnids.txt").read_text().split()[0])
    assert arrays["x_train"][2 * gray].std(axis=2).max() == 0  # a grayscale JPEG became 3 equal channels
    val = (folder / "val" / "val_annotations.txt").read_text().splitlines()[5].split("\t")
    assert arrays["y_test"][5] == wnids.index(val[1])
    cache, meta = folder / TINY_CACHE, folder / TINY_CACHE_META
    assert json.loads(meta.read_text())["sha256"] == hashlib.sha256(cache.read_bytes()).hexdigest()
    built = cache.stat().st_mtime_ns

    original = probe.read_bytes()
    probe.write_bytes(b"not a jpeg")  # a second load that decoded anything would fail here
    again = tiny_imagenet_arrays(folder, progress=False)
    assert cache.stat().st_mtime_ns == built
    assert all(np.array_equal(arrays[k], again[k]) for k in arrays)
    probe.write_bytes(original)

    data = bytearray(cache.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit's worth of rot
    cache.write_bytes(bytes(data))
    capsys.readouterr()
    rebuilt = tiny_imagenet_arrays(folder, progress=False)
    assert "fails its checksum" in capsys.readouterr().err
    assert all(np.array_equal(arrays[k], rebuilt[k]) for k in arrays)
    assert json.loads(meta.read_text())["sha256"] == hashlib.sha256(cache.read_bytes()).hexdigest()

    probe.write_bytes(b"not a jpeg")
    cache.unlink()
    message = one_line_error(lambda: tiny_imagenet_arrays(folder, progress=False))
    assert str(probe) in message


def test_split_tinyimagenet_is_ten_tasks_of_twenty_classes_at_64x64(tmp_path):
    write_tiny_imagenet(tmp_path, per_class=2, val_per_class=1)
    bench = image_bench("split_tinyimagenet", tmp_path)
    assert bench.n_tasks == 10 and bench.n_classes == 200 and bench.input_shape == (3, 64, 64)
    task = bench.tasks[3]
    assert (
        task.classes == list(range(60, 80))
        and task.x_train.shape == (40, 3, 64, 64)
        and task.x_train.dtype == torch.uint8
    )
    assert task.x_train.is_contiguous() and len(task.y_test) == 20
    arrays = tiny_imagenet_arrays(tmp_path / "tiny-imagenet-200", progress=False)
    first = int(np.flatnonzero(arrays["y_train"] == 60)[0])
    assert torch.equal(task.x_train[0], torch.from_numpy(arrays["x_train"][first]).permute(2, 0, 1))


def test_tiny_imagenet_needs_its_200_classes(tmp_path):
    folder = write_tiny_imagenet(tmp_path, per_class=1, val_per_class=1)
    (folder / "wnids.txt").write_text("\n".join((folder / "wnids.txt").read_text().split()[:4]) + "\n")
    message = one_line_error(lambda: image_bench("split_tinyimagenet", tmp_path))
    assert str(folder / "wnids.txt") in message and "expected 200" in message


# ------------------------------------------------------------------------------------------------
# Augmentation


def windows(x, pad=4):
    """Every crop of the zero-padded images: [N, 2p + 1, 2p + 1, C, H, W]."""
    h, w = x.shape[2:]
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    return padded.unfold(2, h, 1).unfold(3, w, 1).permute(0, 2, 3, 1, 4, 5)


def test_crop_flip_is_a_shifted_window_of_the_padded_image_flipped_for_about_half():
    torch.manual_seed(0)
    x = torch.randint(1, 256, (600, 3, 8, 8), dtype=torch.uint8)  # no zeros: padding is recognisable
    out = crop_flip(x)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    cand = windows(x)  # [N, 9, 9, 3, 8, 8]
    plain = (cand == out[:, None, None]).flatten(3).all(3)  # [N, 9, 9]
    flipped = (cand.flip(-1) == out[:, None, None]).flatten(3).all(3)
    assert (plain | flipped).flatten(1).any(1).all()  # every output is some window, maybe flipped
    is_flipped = flipped.flatten(1).any(1) & ~plain.flatten(1).any(1)
    assert 0.4 < is_flipped.float().mean() < 0.6
    dy, dx = torch.nonzero(plain | flipped, as_tuple=True)[1:]
    assert set(dy.tolist()) == set(dx.tolist()) == set(range(9))  # every offset occurs
    torch.manual_seed(1)
    again = crop_flip(x)
    torch.manual_seed(1)
    assert torch.equal(crop_flip(x), again) and not torch.equal(again, out)  # torch's global RNG


def test_crop_flip_has_no_host_sync():
    # Meta tensors have no data: any .item(), .tolist(), boolean-mask indexing or copy to the host
    # raises, so a result here means the augmentation is pure device work.
    out = crop_flip(torch.empty(32, 3, 32, 32, dtype=torch.uint8, device="meta"))
    assert out.device.type == "meta" and out.shape == (32, 3, 32, 32) and out.dtype == torch.uint8


# ------------------------------------------------------------------------------------------------
# End to end, and the data command


def test_one_epoch_of_er_on_a_tiny_cifar10_runs_end_to_end(tmp_path):
    write_cifar(tmp_path / "data", per_class=2, test_per_class=2)
    record = esacl.run(
        RunConfig(
            benchmark="split_cifar10",
            data_root=str(tmp_path / "data"),
            method="er",
            n_tasks=2,
            epochs=1,
            width=8,
            device="cpu",
            progress=False,
            out=str(tmp_path / "runs"),
        )
    )
    assert record.complete and len(record.class_il) == 2
    assert all(math.isfinite(a) for row in record.class_il + record.task_il for a in row if a is not None)
    assert record.config["class_order"] == "natural" and record.config["batch_size"] == 32
    assert record.task_events[-1]["flops"]["total"] > 0


@pytest.mark.parametrize("method", sorted(set(PRESETS) - {"er"}))
def test_every_method_trains_on_uint8_cifar_images(tmp_path, method):
    # The image path end to end for each learner x sparsifier x selector: uint8 stream and buffer,
    # crop/flip, InputNorm, and each method's own consumers of x (views, Fisher, SAM, DDR, probes).
    # Two images a class learn nothing to test: what each preset learns is test_train's floors.
    write_cifar(tmp_path / "data", per_class=2, test_per_class=1)
    record = esacl.run(
        RunConfig(
            benchmark="split_cifar10",
            data_root=str(tmp_path / "data"),
            method=method,
            n_tasks=2,
            epochs=1,
            width=4,
            batch_size=8,
            minibatch_size=4,
            device="cpu",
            co2l_probe_epochs=1,
            progress=False,
            out=str(tmp_path / "runs"),
        )
    )
    assert record.complete and len(record.class_il) == 2
    assert all(math.isfinite(a) for row in record.class_il + record.task_il for a in row if a is not None)


@pytest.mark.parametrize("name, writer", [("split_cifar100", "cifar100"), ("split_tinyimagenet", "tiny")])
def test_cifar100_and_tiny_imagenet_run_end_to_end(tmp_path, name, writer):
    if writer == "tiny":
        write_tiny_imagenet(tmp_path / "data", per_class=1, val_per_class=1)
    else:
        write_cifar(tmp_path / "data", name="cifar-100-python", per_class=1, test_per_class=1)
    record = esacl.run(
        RunConfig(
            benchmark=name,
            data_root=str(tmp_path / "data"),
            method="esacl-derpp",
            n_tasks=2,
            epochs=1,
            width=4,
            device="cpu",
            progress=False,
            out=str(tmp_path / "runs"),
        )
    )
    assert record.complete and len(record.class_il) == 2
    assert record.task_events[-1]["flops"]["total"] > 0


def test_data_check_reports_missing_and_corrupt_files_and_exits_1(tmp_path, capsys):
    write_cifar(tmp_path)  # real format, but not the official bytes
    write_tiny_imagenet(tmp_path, per_class=1, val_per_class=1)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(SystemExit) as exit:
        main(["data", "check", "--data-root", str(tmp_path)])
    assert exit.value.code == 1
    out = capsys.readouterr().out
    assert (
        "MISSING  data_batch_4" in out
        and "CORRUPT  data_batch_1" in out
        and "official c99cafc152244af753f735de768cd75f" in out
    )
    assert f"split_cifar100: MISSING {tmp_path / 'cifar-100-python'}" in out
    assert "MISSING  train: 200 images, expected 100000" in out and "not built yet" in out
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in out


def test_data_check_without_a_root_says_what_to_set(monkeypatch, capsys):
    monkeypatch.delenv("ESACL_DATA", raising=False)
    with pytest.raises(SystemExit):
        main(["data", "check", "split_cifar10"])
    assert "set ESACL_DATA" in capsys.readouterr().out


def test_download_without_network_is_one_line_naming_the_url(tmp_path, monkeypatch, capsys):
    from dataclasses import replace

    url = "http://127.0.0.1:9/cifar-10-python.tar.gz"  # the discard port: refused, no network needed
    monkeypatch.setitem(SOURCES, "split_cifar10", replace(SOURCES["split_cifar10"], url=url))
    assert main(["data", "download", "cifar10", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("esacl: error: cannot download " + url)


# ------------------------------------------------------------------------------------------------
# Split Fashion-MNIST: the idx reader on small files, the look-up order, the real files where installed


DEBIAN_FMNIST = all((FMNIST_DEBIAN / f"{name}.gz").is_file() for name in FMNIST_FILES)


def read_idx(path):
    return parse_idx(idx_bytes(path), path)


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_the_idx_reader_reads_images_and_labels(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    got = read_idx(write_idx(tmp_path / "images", images, gz))
    assert got.dtype == np.uint8 and got.shape == (7, 28, 28) and np.array_equal(got, images)
    assert got.flags.writeable  # torch.from_numpy takes it without a warning
    assert np.array_equal(read_idx(write_idx(tmp_path / "labels", labels, gz)), labels)
    # the header is big-endian: a shape whose bytes differ when read little-endian
    wide = rng.integers(0, 256, (1, 3, 260), dtype=np.uint8)
    assert read_idx(write_idx(tmp_path / "wide", wide, gz)).shape == (1, 3, 260)


def test_a_damaged_idx_file_is_one_line_naming_it(tmp_path):
    good = write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28), dtype=np.uint8))
    whole = good.read_bytes()
    cases = {
        "truncated.gz": (whole[: len(whole) // 2], "does not decompress"),
        "short": (
            bytes([0, 0, 8, 3]) + (4).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(100),
            "its header declares [4, 28, 28] = 3136 values, it holds 100",
        ),
        "magic": (bytes([0, 0, 0x0D, 3]) + bytes(20), "not an idx file of unsigned bytes (magic number 00000d03"),
        "empty": (b"", "magic number absent"),
        "header": (bytes([0, 0, 8, 3, 0, 0]), "its header ends after 6 bytes"),
    }
    for name, (content, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        message = one_line_error(lambda path=path: read_idx(path))
        assert str(path) in message and expected in message, (name, message)
    message = one_line_error(lambda: read_idx(tmp_path / "absent.gz"))
    assert str(tmp_path / "absent.gz") in message and "missing" in message


def test_fashion_mnist_missing_everywhere_names_both_places_the_package_and_the_files(tmp_path, monkeypatch):
    monkeypatch.setattr(sources_module, "FMNIST_DEBIAN", tmp_path / "debian")  # read by sources.fmnist_places
    message = one_line_error(lambda: image_bench("split_fmnist", tmp_path / "root"))
    assert str(tmp_path / "root" / "fashion-mnist") in message and str(tmp_path / "debian") in message
    assert "dataset-fashion-mnist" in message
    assert all(f"{name}.gz" in message for name in FMNIST_FILES)
    monkeypatch.delenv("ESACL_DATA", raising=False)
    message = one_line_error(lambda: load_benchmark(RunConfig(benchmark="split_fmnist"), torch.device("cpu")))
    assert "no data root" in message and str(tmp_path / "debian") in message


def test_the_data_root_comes_before_debian_and_its_files_are_checked(tmp_path):
    # Real-format files of the wrong size in the data root: the loader reads them (not Debian's) and says
    # what is wrong with them; an absent one is named too.
    folder = tmp_path / "fashion-mnist"
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((20, 28, 28), dtype=np.uint8))
    message = one_line_error(lambda: image_bench("split_fmnist", tmp_path))
    assert (
        str(folder / "train-images-idx3-ubyte.gz") in message
        and "shape [20, 28, 28], expected [60000, 28, 28]" in message
    )
    write_idx(folder / "train-images-idx3-ubyte", np.zeros((60000, 28, 28), dtype=np.uint8), gz=False)
    (folder / "train-images-idx3-ubyte.gz").unlink()
    message = one_line_error(lambda: image_bench("split_fmnist", tmp_path))
    assert str(folder / "train-images-idx3-ubyte") in message and "is not the official file: md5" in message
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((60000, 28, 28), dtype=np.uint8))
    (folder / "train-images-idx3-ubyte").unlink()
    message = one_line_error(lambda: fmnist_arrays(folder))
    assert "md5 of its decompressed data" in message


@pytest.mark.skipif(not DEBIAN_FMNIST, reason=f"Debian's dataset-fashion-mnist is not installed ({FMNIST_DEBIAN})")
def test_the_real_fashion_mnist_files_have_their_shapes_classes_and_checksums():
    import gzip

    for name, (shape, md5) in FMNIST_FILES.items():
        data = gzip.decompress((FMNIST_DEBIAN / f"{name}.gz").read_bytes())
        assert hashlib.md5(data).hexdigest() == md5 and len(data) == 4 + 4 * len(shape) + math.prod(shape)
    arrays = fmnist_arrays(FMNIST_DEBIAN)
    assert arrays["x_train"].shape == (60000, 1, 28, 28) and arrays["x_test"].shape == (10000, 1, 28, 28)
    assert (np.bincount(arrays["y_train"]) == 6000).all() and (np.bincount(arrays["y_test"]) == 1000).all()
    assert arrays["x_train"].dtype == np.uint8 and arrays["x_train"].max() == 255


@pytest.mark.skipif(not DEBIAN_FMNIST, reason=f"Debian's dataset-fashion-mnist is not installed ({FMNIST_DEBIAN})")
def test_split_fmnist_is_five_two_class_tasks_of_uint8_images(tmp_path):
    bench = load_benchmark(RunConfig(benchmark="split_fmnist", data_root=str(tmp_path)), torch.device("cpu"))
    assert bench.n_tasks == 5 and bench.n_classes == 10 and bench.input_shape == (1, 28, 28)
    assert bench.backbone == "convnet28" and bench.augment is None
    assert bench.class_order == digits(seed=0).class_order  # the seeded order, as split_digits
    for task in bench.tasks:
        assert len(task.y_train) == 12000 and len(task.y_test) == 2000 and task.x_train.dtype == torch.uint8
        assert set(task.y_train.tolist()) == set(task.classes)
    assert 0.2 < bench.norm[0][0] < 0.4 and 0.3 < bench.norm[1][0] < 0.4  # Fashion-MNIST's mean 0.286, std 0.353
    natural = load_benchmark(RunConfig(benchmark="split_fmnist", class_order="natural", n_tasks=2), torch.device("cpu"))
    assert [t.classes for t in natural.tasks] == [[0, 1], [2, 3]]


@pytest.mark.skipif(not DEBIAN_FMNIST, reason=f"Debian's dataset-fashion-mnist is not installed ({FMNIST_DEBIAN})")
def test_data_check_reads_fashion_mnist_from_debian(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["data", "check", "--data-root", str(tmp_path)])  # an empty root: the CIFARs are missing
    assert exit.value.code == 1
    out = capsys.readouterr().out
    assert f"split_fmnist: {FMNIST_DEBIAN}" in out and out.count("  ok       t") == 4
    assert main(["data", "check", "split_fmnist", "split_digits"]) == 0
    out = capsys.readouterr().out
    assert "split_digits: embedded" in out and "md5 of the data f4a8712d7a061bf5bd6d2ca38dc4d50a" in out


# ------------------------------------------------------------------------------------------------
# Validation split


def test_a_validation_split_holds_out_each_class_and_never_the_test_set():
    full, held = digits(), digits(validation=0.2)
    for a, b in zip(full.tasks, held.tasks):
        assert len(b.y_train) + len(b.y_test) == len(a.y_train)
        for c in a.classes:
            n = int((a.y_train == c).sum())
            assert int((b.y_test == c).sum()) == round(0.2 * n)
        both = torch.cat([b.x_train, b.x_test]).flatten(1)
        assert torch.allclose(both.sum(0), a.x_train.flatten(1).sum(0), atol=1e-3)  # the same examples, split
        assert not (b.x_test.flatten(1)[:, None] == a.x_test.flatten(1)[None]).all(-1).any()  # no test image
    again = digits(validation=0.2, seed=5, class_order="natural").tasks[0]
    fixed = digits(validation=0.2, seed=0, class_order="natural").tasks[0]
    assert torch.equal(again.x_test, fixed.x_test)  # the held-out set does not move with the seed


# ------------------------------------------------------------------------------------------------
# Hostile and half-written files


class Hostile:
    """Unpickling this runs a shell command: what a crafted data_batch_1 would do to pickle.load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_cifar_batch_cannot_run_code(tmp_path):
    folder = write_cifar(tmp_path)
    marker = tmp_path / "executed"
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Hostile(marker), b"labels": [0]}, f, protocol=2)
    message = one_line_error(lambda: image_bench("split_cifar10", tmp_path))
    assert str(folder / "data_batch_1") in message and "posix.system" in message and "only numpy arrays" in message
    assert not marker.exists()
    pickle.loads(pickle.dumps(Hostile(marker)))  # the same bytes through pickle itself: it runs
    assert marker.exists()


def test_a_truncated_tiny_imagenet_cache_with_a_matching_sidecar_is_rebuilt(tmp_path, capsys):
    folder = write_tiny_imagenet(tmp_path, per_class=1, val_per_class=1)
    arrays = tiny_imagenet_arrays(folder, progress=False)
    cache, meta = folder / TINY_CACHE, folder / TINY_CACHE_META
    cut = cache.read_bytes()[: cache.stat().st_size // 3]
    cache.write_bytes(cut)
    sidecar = json.loads(meta.read_text())
    meta.write_text(json.dumps(dict(sidecar, sha256=hashlib.sha256(cut).hexdigest())))  # the checksum agrees
    capsys.readouterr()
    rebuilt = tiny_imagenet_arrays(folder, progress=False)
    assert "does not load" in capsys.readouterr().err
    assert all(np.array_equal(arrays[k], rebuilt[k]) for k in arrays)
