"""Acceptance against published numbers: needs a GPU and the real CIFAR-10 (`$ESACL_DATA`)."""

import os
from pathlib import Path

import pytest
import torch

import esacl
from esacl.data import check_data
from esacl.rundir import anchor


@pytest.mark.gpu
@pytest.mark.slow
def test_derpp_on_split_cifar10_matches_the_published_anchor(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (5 tasks x 50 epochs of ResNet-18)")
    root = os.environ.get("ESACL_DATA")
    if not root or not (Path(root) / "cifar-10-batches-py").is_dir():
        pytest.skip("needs $ESACL_DATA/cifar-10-batches-py (esacl data download split_cifar10 --data-root DIR)")
    lines, ok = check_data(root, ["split_cifar10"])
    assert ok, "\n".join(lines)  # the official files, not a partial copy
    published = anchor("split_cifar10", "derpp", 500, source="der2020")
    record = esacl.run(
        esacl.RunConfig(
            benchmark="split_cifar10",
            method="derpp",
            buffer_size=500,
            seed=0,
            class_order="natural",
            device="cuda",
            progress=False,
            out=str(tmp_path),
        )
    )
    assert record.complete
    for key in ("class_il", "task_il"):
        mean, std = published[key]
        got = record.summary[key]["average"]
        assert abs(got - mean) <= 3 * std, f"{key} {got:.2f} vs published {mean:.2f} +- {std:.2f} (3 std allowed)"
