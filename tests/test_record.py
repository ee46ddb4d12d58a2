import errno
import os

import pytest

import esacl
from esacl import UserError
from esacl.record import RunDir, comparison_table, write_atomic


def test_write_atomic_leaves_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "accuracy.json"
    write_atomic(target, b"old")

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(UserError, match="No space left on device"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["accuracy.json"]       # temp file cleaned up


def test_run_directories_are_never_reused(tmp_path):
    first = RunDir.create(str(tmp_path), None, "split_digits-sgd-s0")
    second = RunDir.create(str(tmp_path), None, "split_digits-sgd-s0")
    assert first.path.name == "split_digits-sgd-s0" and second.path.name == "split_digits-sgd-s0-1"
    with pytest.raises(UserError, match="already exists"):
        RunDir.create(str(tmp_path), "split_digits-sgd-s0", "ignored")


def test_an_unwritable_out_folder_is_one_clear_error(tiny, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match=f"cannot write {blocker}"):
        esacl.run(tiny(out=str(blocker / "runs")))


def test_running_out_of_space_mid_run_keeps_earlier_runs_intact(tiny, monkeypatch):
    earlier = esacl.run(tiny(method="sgd"))
    before = {p.name: p.read_bytes() for p in earlier.path.iterdir()}
    real_replace = os.replace

    def fail_checkpoints(src, dst):
        if str(dst).endswith("checkpoint.pt"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", fail_checkpoints)
    with pytest.raises(UserError, match="No space left on device"):
        esacl.run(tiny(method="sgd"))
    assert {p.name: p.read_bytes() for p in earlier.path.iterdir()} == before


@pytest.mark.parametrize("damage", ["truncate", "foreign", "garbage"])
def test_a_damaged_checkpoint_is_refused_with_one_line(tiny, damage):
    import torch
    record = esacl.run(tiny(n_tasks=2))
    ckpt = record.path / "checkpoint.pt"
    (record.path / "accuracy.json").write_text('{"class_il": [], "task_il": [], "complete": false}')
    if damage == "truncate":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    elif damage == "foreign":
        torch.save({"state_dict": {}}, ckpt)
    else:
        ckpt.write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="checkpoint") as info:
        esacl.resume(record.path)
    assert "\n" not in str(info.value)


def test_resuming_a_complete_run_is_refused(tiny):
    record = esacl.run(tiny())
    with pytest.raises(UserError, match="is complete"):
        esacl.resume(record.path)


def test_comparison_table_averages_over_seeds(tiny):
    runs = [esacl.run(tiny(seed=s, n_tasks=2, epochs=1)) for s in (0, 1)]
    row = next(line for line in comparison_table(runs).splitlines() if line.startswith("split_digits"))
    values = [r.summary["class_il"]["average"] for r in runs]
    mean = sum(values) / 2
    std = abs(values[0] - values[1]) / 2 ** 0.5
    assert f"{mean:9.2f} +- {std:4.2f}" in row and " 2 " in row


def test_published_anchors_ship_with_the_package():
    from esacl.record import anchor, anchors
    table = anchors()
    assert {"sources", "results", "claims"} <= set(table)
    derpp = anchor("split_cifar10", "derpp", 500)
    assert derpp["class_il"] == [72.70, 1.36] and derpp["task_il"] == [93.88, 0.50] and derpp["source"] == "der2020"
    assert anchor("split_cifar10", "derpp", 500, source="xder2022") is None
    assert anchor("split_cifar100", "derpp", 500)["class_il"][0] == 38.25


def test_anchor_lookup_by_sparsity_treats_rows_without_one_as_dense():
    from esacl.record import anchor
    assert anchor("split_cifar10", "sparcl-er", 50, sparsity=0.75)["class_il"] == [43.74, 2.91]
    assert anchor("split_cifar10", "sparcl-er", 50, sparsity=0.9) is None
    assert anchor("split_cifar10", "derpp", 500, sparsity=0.0)["source"] == "der2020"
    assert anchor("split_cifar10", "derpp", 500, sparsity=0.75) is None
