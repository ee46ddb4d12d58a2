import errno
import os

import pytest

import esacl
from esacl import UserError
from esacl.rundir import RunDir, write_atomic


def test_write_atomic_leaves_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "accuracy.json"
    write_atomic(target, b"old")

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(UserError, match="No space left on device"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["accuracy.json"]  # temp file cleaned up


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


def test_published_anchors_ship_with_the_package():
    from esacl.rundir import anchor, anchors

    table = anchors()
    assert {"sources", "results", "claims"} <= set(table)
    derpp = anchor("split_cifar10", "derpp", 500)
    assert derpp["class_il"] == [72.70, 1.36] and derpp["task_il"] == [93.88, 0.50] and derpp["source"] == "der2020"
    assert anchor("split_cifar10", "derpp", 500, source="xder2022") is None
    assert anchor("split_cifar100", "derpp", 500)["class_il"][0] == 38.25


def test_anchor_lookup_by_sparsity_treats_rows_without_one_as_dense():
    from esacl.rundir import anchor

    assert anchor("split_cifar10", "sparcl-er", 50, sparsity=0.75)["class_il"] == [43.74, 2.91]
    assert anchor("split_cifar10", "sparcl-er", 50, sparsity=0.9) is None
    assert anchor("split_cifar10", "derpp", 500, sparsity=0.0)["source"] == "der2020"
    assert anchor("split_cifar10", "derpp", 500, sparsity=0.75) is None


# ------------------------------------------------------------------------------------------------
# Faults: a full disk, a torn log line, a second writer, a kill in the middle of a write

import json  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from workbench.cli import main  # noqa: E402


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("esacl: error: ") and "Traceback" not in err, err
    return code, err


def test_an_accuracy_json_of_the_wrong_shape_marks_the_record_unreadable_and_show_is_one_line(tiny, capsys):
    record = esacl.run(tiny(method="sgd", epochs=1))
    assert record.complete and record.unreadable is None
    good = json.loads((record.path / "accuracy.json").read_text())
    matrix = "a matrix of accuracies (rows of numbers, null after the diagonal)"
    cases = {
        "not valid JSON": '{"class_il": [[',
        "not a JSON object but list": "[1, 2]",
        f"'class_il' is not {matrix}": json.dumps(dict(good, class_il="x")),
        f"'task_il' is not {matrix}": json.dumps(dict(good, task_il=[[50.0, None], [None, 40.0]])),
        "'class_il' and 'task_il' differ in shape": json.dumps(dict(good, task_il=good["task_il"][:1])),
        "'complete' is 'yes', not true or false": json.dumps(dict(good, complete="yes")),
        "'complete' is true with 1 of 2 tasks' rows": json.dumps(
            dict(good, class_il=good["class_il"][:1], task_il=good["task_il"][:1])
        ),
        "'diverged' is not an object with 'task' and 'epoch'": json.dumps(dict(good, complete=False, diverged=3)),
    }
    for why, text in cases.items():
        (record.path / "accuracy.json").write_text(text)
        bad = esacl.load_run(record.path)
        assert (bad.unreadable, bad.complete, bad.class_il, bad.task_il, bad.diverged) == (why, False, [], [], None)
        assert bad.status == f"unreadable accuracy.json: {why}" and bad.summary == {}
        code, err = one_line(capsys, ["show", str(record.path)])
        assert code == 2 and err == f"esacl: error: {record.path / 'accuracy.json'} is corrupt ({why})\n"
    (record.path / "accuracy.json").write_text(json.dumps(dict(good, complete=False)))  # readable again
    assert esacl.load_run(record.path).unreadable is None


def test_a_torn_last_log_line_is_dropped_with_one_warning(tiny, capsys):
    record = esacl.run(tiny(method="er"))
    n = len(record.events)
    with open(record.path / "metrics.jsonl", "a") as f:  # an append cut short: no newline, half an event
        f.write('{"event": "epoch", "task": 1, "lo')
    capsys.readouterr()
    assert len(esacl.load_run(record.path).events) == n
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ends with a partial event" in err
    assert main(["show", str(record.path)]) == 0 and main(["compare", str(record.path.parent)]) == 0
    (record.path / "metrics.jsonl").write_text('{"event": "epoch"}\n{"ev\n{"event": "task"}\n')
    with pytest.raises(UserError, match="metrics.jsonl:2 is corrupt"):  # not at the end: corruption
        esacl.load_run(record.path)


def test_a_full_disk_stops_the_run_in_one_line_and_a_resume_after_freeing_space_equals_an_uninterrupted_run(
    tiny, tmpfs, capsys
):
    disk = tmpfs("20m")
    whole = esacl.run(tiny(method="er", name="whole"))
    earlier = esacl.run(tiny(method="sgd", out=str(disk / "runs"), name="earlier"))
    before = snapshot(earlier.path)
    filler = disk / "filler"

    def fill(event):
        if event.get("event") == "epoch" and event["task"] == 1:
            free = shutil.disk_usage(disk).free
            subprocess.run(["fallocate", "-l", str(free), str(filler)], check=True)

    with pytest.raises(UserError, match="No space left on device") as err:
        esacl.run(tiny(method="er", out=str(disk / "runs"), name="cut"), callbacks=[fill])
    assert "\n" not in str(err.value)
    filler.unlink()
    cut = disk / "runs" / "cut"
    with open(cut / "metrics.jsonl", "a") as f:  # what an append cut short by ENOSPC leaves
        f.write('{"event": "epoch", "task": 1, "ep')
    capsys.readouterr()
    assert main(["show", str(cut)]) == 0 and main(["compare", str(disk / "runs")]) == 0
    assert main(["run", "--resume", str(cut), "--quiet"]) == 0
    resumed = esacl.load_run(cut)
    assert resumed.complete and resumed.class_il == whole.class_il and resumed.task_il == whole.task_il
    assert [e["event"] for e in resumed.events] == [e["event"] for e in whole.events]
    assert not list(cut.rglob(".*.tmp-*")) and snapshot(earlier.path) == before


def test_a_second_writer_is_refused_in_one_line(tiny, capsys):
    record = esacl.run(tiny(method="sgd"))
    (record.path / "accuracy.json").write_text(json.dumps(dict(class_il=[], task_il=[], complete=False)))
    before = snapshot(record.path)
    holder = RunDir(record.path).lock()  # another process writing it, as far as flock goes
    try:
        code, err = one_line(capsys, ["run", "--resume", str(record.path)])
        assert code == 2 and "is being written by another process" in err and f"pid {os.getpid()}" in err
    finally:
        holder.unlock()
    assert snapshot(record.path) == before


def test_a_run_name_cannot_leave_its_out_folder(tmp_path, capsys):
    for name in ("../../x", "a/b", "..", "."):
        code, err = one_line(capsys, ["run", "--name", name, "--out", str(tmp_path / "runs"), "--n-tasks", "1"])
        assert code == 2 and "one folder name inside 'out'" in err
    assert not (tmp_path.parent / "x").exists() and not (tmp_path / "runs").exists()


KILL_AT_CHECKPOINT = """
import os, signal, sys
from esacl.rundir import RunDir
import workbench.cli
calls = []
real = RunDir.save_checkpoint
def save(self, state):
    calls.append(1)
    if len(calls) == 3:                  # the third checkpoint: half its temporary file, then SIGKILL
        import io, torch
        buf = io.BytesIO()
        torch.save(state, buf)
        tmp = self.path / f".checkpoint.pt.tmp-{os.getpid()}"
        tmp.write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    real(self, state)
RunDir.save_checkpoint = save
sys.exit(workbench.cli.main(sys.argv[1:]))
"""


def test_kill_9_in_a_checkpoint_write_then_resume_equals_an_uninterrupted_run(tiny, tmp_path, capsys):
    whole = esacl.run(tiny(method="esacl-er", name="whole"))
    argv = [
        "run",
        "--method",
        "esacl-er",
        "--n-tasks",
        "2",
        "--epochs",
        "2",
        "--out",
        str(tmp_path / "runs"),
        "--name",
        "killed",
        "--quiet",
    ]
    done = subprocess.run([sys.executable, "-c", KILL_AT_CHECKPOINT, *argv], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    killed = tmp_path / "runs" / "killed"
    assert list(killed.glob(".checkpoint.pt.tmp-*"))  # the interrupted write's leftover
    assert main(["run", "--resume", str(killed), "--quiet"]) == 0
    capsys.readouterr()
    resumed = esacl.load_run(killed)
    assert resumed.class_il == whole.class_il and resumed.task_il == whole.task_il
    assert not list(killed.rglob(".*.tmp-*"))


def test_find_runs_takes_run_directories_and_folders_at_any_depth_and_names_a_bad_path(tmp_path):
    from esacl.rundir import find_runs

    for run in ("a/r1", "a/deep/r2", "b/r3"):
        (tmp_path / run).mkdir(parents=True)
        (tmp_path / run / "config.json").write_text("{}")
    (tmp_path / "a" / "notes").mkdir()
    assert find_runs([tmp_path / "a"]) == [tmp_path / "a/deep/r2", tmp_path / "a/r1"]
    assert find_runs([tmp_path / "b/r3", tmp_path / "a/r1"]) == [tmp_path / "b/r3", tmp_path / "a/r1"]
    with pytest.raises(UserError, match="is not a run directory or a folder"):
        find_runs([tmp_path / "absent"])
    with pytest.raises(UserError, match="no run directories under"):
        find_runs([tmp_path / "a" / "notes"])
    assert find_runs([]) == []


def test_a_run_directory_written_with_the_old_key_names_loads_with_the_new(tiny):
    """DER++'s knobs were `alpha` and `beta`: such a config.json reads as derpp_alpha and derpp_beta,
    so show, compare and the dashboards see one key, and a resume builds the same config."""
    import json

    from esacl import RunConfig

    record = esacl.run(tiny(method="derpp", n_tasks=1, epochs=1, derpp_alpha=0.3))
    saved = json.loads((record.path / "config.json").read_text())
    saved["config"] = {
        ("alpha" if k == "derpp_alpha" else "beta" if k == "derpp_beta" else k): v for k, v in saved["config"].items()
    }
    (record.path / "config.json").write_text(json.dumps(saved))
    old = esacl.load_run(record.path)
    assert old.config == record.config and old.config["derpp_alpha"] == 0.3
    assert RunConfig.from_dict(old.config).derpp_alpha == 0.3


def test_a_run_records_the_commit_of_the_code_it_imported_not_the_checkouts_head_at_its_start(monkeypatch):
    """HEAD is read once, at import: a later run of the same process (a long job, a reused sweep
    kernel) records the code it runs even when the checkout has moved on since."""
    import subprocess

    import torch

    from esacl import rundir

    assert rundir.CODE_COMMIT == rundir.git_commit()  # this checkout has not moved during the tests

    run = subprocess.run

    def no_git(command, *args, **kwargs):
        assert command[0] != "git", "git asked at run time"
        return run(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", no_git)
    assert rundir.environment(torch.device("cpu"))["git_commit"] == rundir.CODE_COMMIT
