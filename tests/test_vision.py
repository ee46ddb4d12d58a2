import os
import subprocess
import sys
import textwrap

import numpy as np
import torch

from esacl.data import SOURCES
from esacl.vision import import_torchvision


def run_python(code: str, path: str | None = None) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter (the shim's effects are per process), `path` first on sys.path."""
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = path + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=120
    )


def test_torchvision_imports_and_its_python_side_works():
    tv = import_torchvision()
    assert tv.__version__.startswith("0.28.0") and import_torchvision() is tv
    from PIL import Image
    from torchvision import transforms

    pipeline = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize((0.5,) * 3, (0.25,) * 3),
        ]
    )
    out = pipeline(Image.fromarray(np.full((32, 32, 3), 128, dtype=np.uint8)))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert torch.allclose(out[:, 4:28, 4:28], torch.full((3, 24, 24), (128 / 255 - 0.5) / 0.25), atol=1e-6)


def test_the_official_md5_sums_are_torchvisions():
    import_torchvision()
    from torchvision.datasets import CIFAR10, CIFAR100

    for name, cls in (("split_cifar10", CIFAR10), ("split_cifar100", CIFAR100)):
        src = SOURCES[name]
        assert dict(cls.train_list + cls.test_list) == src.md5
        assert (cls.url, cls.tgz_md5, cls.base_folder) == (src.url, src.archive_md5, src.folder)


def test_a_fresh_process_imports_through_the_shim():
    done = run_python("""
        from esacl.vision import import_torchvision, shimmed
        import_torchvision()
        import torchvision.transforms.v2, torchvision.datasets, torchvision.models
        print("ok", shimmed())
    """)
    assert done.returncode == 0, done.stderr
    # The CPU torch lacks what torchvision's extension links against, so the schemas are defined
    # here; next to a CUDA build of torch the extension loads and the shim does nothing.
    assert done.stdout.split() == ["ok", str(torch.version.cuda is None)]


def test_the_shim_is_a_no_op_where_torchvision_imports_normally(tmp_path):
    (tmp_path / "torchvision").mkdir()
    (tmp_path / "torchvision" / "__init__.py").write_text("__version__ = 'fine'\n")
    done = run_python(
        """
        from esacl.vision import import_torchvision, shimmed
        print(import_torchvision().__version__, shimmed())
    """,
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["fine", "False"]


def test_any_other_import_error_propagates(tmp_path):
    (tmp_path / "torchvision").mkdir()
    (tmp_path / "torchvision" / "__init__.py").write_text(
        "raise RuntimeError('operator torchvision::roi_align is broken')\n"
    )
    done = run_python(
        """
        from esacl.vision import import_torchvision, shimmed
        try:
            import_torchvision()
        except RuntimeError as err:
            print("raised", shimmed(), err)
    """,
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("raised False operator torchvision::roi_align is broken")


def test_the_fashion_mnist_download_uses_torchvisions_file_list():
    from esacl.data import FMNIST_FILES

    import_torchvision()
    from torchvision.datasets import FashionMNIST

    assert [f for f, _ in FashionMNIST.resources] == [f"{name}.gz" for name in FMNIST_FILES]
    assert SOURCES["split_fmnist"].url in FashionMNIST.mirrors
