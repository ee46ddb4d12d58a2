"""Sweeps: grids, local and Ray engines, resume, failure isolation, a killed driver, the lock, the table.

Each point is a real papermill execution of notebooks/split_digits.ipynb with one epoch per task and
no landscape (10-30 s on 2 cores, kernel start-up included); the module runs in a few minutes.
"""

import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from esacl import UserError, load_run
from esacl.compare import summary_rows
from workbench import sweep
from workbench.cli import main
from workbench.sweep import SweepLock, load_grid, run_sweep

ROOT = Path(__file__).resolve().parent.parent
GRID = dict(
    notebook="split_digits", fixed=dict(epochs=1, landscape=False), axes=dict(method=["sgd", "esacl"], seed=[0, 1])
)
NAMES = ["split_digits-sgd-s0", "split_digits-sgd-s1", "split_digits-esacl-sp0.9-s0", "split_digits-esacl-sp0.9-s1"]


def write_grid(path: Path, axes: dict, fixed: dict | None = None) -> Path:
    """A TOML grid file (the format users write)."""
    value = json.dumps  # JSON's numbers, strings, booleans and lists are TOML too
    lines = ['notebook = "split_digits"', "[fixed]"]
    lines += [f"{k} = {value(v)}" for k, v in dict(epochs=1, landscape=False, **(fixed or {})).items()]
    lines += ["[axes]"] + [f"{k} = {value(v)}" for k, v in axes.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def class_il_means(folder: Path) -> dict:
    rows = summary_rows([load_run(p.parent) for p in folder.rglob("config.json")])
    return {(r["method"], r["sparsity"]): (r["seeds"], r["class_il_mean"]) for r in rows}


@pytest.fixture(scope="module", autouse=True)
def one_thread_per_point():
    """Each point's kernel trains on one thread, as under Ray (num_cpus=1): on a CPU the thread count
    changes the sparse methods' last digits, and the tests compare engines and resumed sweeps exactly."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        yield


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The tiny grid (2 methods x 2 seeds) on the local engine, two workers."""
    out = tmp_path_factory.mktemp("local") / "digits"
    return out, run_sweep(GRID, out, workers=2, progress=False)


def test_grid_keys_and_values_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(UserError, match="no parameter 'metod' \\(did you mean 'method'\\?\\)"):
        load_grid(dict(notebook="split_digits", axes=dict(metod=["sgd"])))
    with pytest.raises(UserError, match="'sparsity' must be in \\[0, 1\\)"):
        load_grid(dict(notebook="split_digits", axes=dict(sparsity=[0.9, 1.5])))
    with pytest.raises(UserError, match="unknown key 'axis' \\(did you mean 'axes'\\?\\)"):
        load_grid(dict(notebook="split_digits", axis=dict(seed=[0])))
    with pytest.raises(UserError, match="'out' is set by the sweep"):
        load_grid(dict(notebook="split_digits", fixed=dict(out="elsewhere")))
    (tmp_path / "bad.toml").write_text("[axes\n")
    with pytest.raises(UserError, match="is not valid TOML"):
        load_grid(tmp_path / "bad.toml")
    code = main(["sweep", str(write_grid(tmp_path / "g.toml", dict(seeds=[0]))), "--out", str(tmp_path / "s")])
    assert code == 2 and not (tmp_path / "s").exists()  # nothing ran, nothing was written


def test_a_value_only_the_benchmark_refuses_is_a_grid_error_before_anything_runs(tmp_path, capsys):
    """Each point's full config is resolved and checked against its own benchmark (from its spec: no
    data loaded), with the check a run makes when it loads the benchmark."""
    with pytest.raises(
        UserError,
        match=r"^grid: point split_digits-esacl-sp0\.9-n_tasks9-s0: config key 'n_tasks' must be at most 5 "
        r"for split_digits, got 9$",
    ):
        load_grid(dict(notebook="split_digits", axes=dict(n_tasks=[2, 9])))
    fixed = dict(n_tasks=9, method="sgd")  # split_cifar100 has 10 tasks: fine there, not on split_digits
    grid = load_grid(dict(notebook="split_digits", fixed=fixed, axes=dict(benchmark=["split_cifar100"])))
    assert [p.name for p in grid.points] == ["split_cifar100-sgd-s0"]
    with pytest.raises(UserError, match=r"point split_digits-sgd-s0: config key 'n_tasks' must be at most 5"):
        load_grid(dict(notebook="split_digits", fixed=fixed, axes=dict(benchmark=["split_cifar100", "split_digits"])))
    out = tmp_path / "s"
    assert main(["sweep", str(write_grid(tmp_path / "g.toml", dict(n_tasks=[2, 9]))), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("esacl: error: ") and "Traceback" not in err, err
    assert "point split_digits-esacl-sp0.9-n_tasks9-s0: config key 'n_tasks' must be at most 5" in err
    assert not out.exists()  # nothing ran, nothing was written


def test_dense_methods_skip_sparsities_and_names_follow_the_parameters(tmp_path):
    grid = load_grid(write_grid(tmp_path / "g.toml", dict(method=["sgd", "esacl"], sparsity=[0.75, 0.9], seed=[0, 1])))
    assert [p.name for p in grid.points] == [
        "split_digits-sgd-s0",
        "split_digits-sgd-s1",
        "split_digits-esacl-sp0.75-s0",
        "split_digits-esacl-sp0.75-s1",
        "split_digits-esacl-sp0.9-s0",
        "split_digits-esacl-sp0.9-s1",
    ]
    assert grid.points[0].params == dict(epochs=1, landscape=False, method="sgd", seed=0)
    assert grid.points[-1].params["sparsity"] == 0.9
    # The name `esacl run` gives the same config: the sparsity as resolved, other axes before the seed.
    grid = load_grid(write_grid(tmp_path / "h.toml", dict(method=["esacl", "derpp"], rho=[0.1])))
    assert [p.name for p in grid.points] == ["split_digits-esacl-sp0.9-rho0.1-s0", "split_digits-derpp-rho0.1-s0"]
    from esacl import RunConfig
    from esacl.train import default_name

    assert default_name(RunConfig(method="esacl")) == "split_digits-esacl-sp0.9-s0"  # sparsity unset: resolved


def test_a_local_sweep_executes_the_notebook_once_per_point(local_sweep):
    out, result = local_sweep
    assert result.failed == [] and list(result.points) == NAMES
    for name in NAMES:
        run_dir = out / name
        assert json.loads((run_dir / "accuracy.json").read_text())["complete"]
        assert (run_dir / "notebook.ipynb").is_file() and not (run_dir / "notebook.html").exists()
        assert (run_dir / "notebook.ipynb").stat().st_size < 1_000_000
    saved = json.loads((out / "sweep.json").read_text())
    assert {n: p["status"] for n, p in saved["points"].items()} == dict.fromkeys(NAMES, "complete")
    assert all(p["seconds"] > 0 and p["attempts"] == 1 for p in saved["points"].values())
    html = (out / "summary.html").read_text()
    assert "<table>" in html and "<script" not in html


def test_the_table_is_mean_and_std_over_seeds_of_the_records(local_sweep, capsys):
    out, _ = local_sweep
    assert main(["compare", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = {r["method"]: r for r in csv.DictReader((out / "summary.csv").open())}
    assert set(rows) == {"sgd", "esacl"}
    for method in ("sgd", "esacl"):
        records = [load_run(out / name) for name in NAMES if f"-{method}-" in name]
        row = rows[method]
        assert int(row["seeds"]) == 2 and float(row["sparsity"]) == (0.9 if method == "esacl" else 0.0)
        for column, value in (
            ("class_il", lambda r: r.summary["class_il"]["average"]),
            ("task_il", lambda r: r.summary["task_il"]["average"]),
            ("forgetting", lambda r: r.summary["class_il"]["forgetting"]),
            ("flops_x_sgd", lambda r: r.efficiency["flops_relative"]),
            ("train_s", lambda r: r.efficiency["train_seconds"]),
        ):
            values = [value(r) for r in records]
            assert float(row[f"{column}_mean"]) == pytest.approx(statistics.mean(values), rel=1e-12)
            assert float(row[f"{column}_std"]) == pytest.approx(statistics.stdev(values), rel=1e-12, abs=1e-12)
        assert f"{statistics.mean(r.summary['class_il']['average'] for r in records):.2f} +- " in printed
    assert float(rows["sgd"]["flops_x_sgd_mean"]) == pytest.approx(1.0)
    assert float(rows["esacl"]["flops_x_sgd_mean"]) < 1.0


def test_table_cells_show_summation_noise_as_zero_spread_but_keep_real_spread():
    from esacl.compare import cell as _cell

    assert _cell(4.11e10, 8.81e-6, ".3g") == "4.11e+10 +- 0"  # equal FLOPs up to float summation order
    assert _cell(1.5e11, 1.7e7, ".3g") == "1.5e+11 +- 1.7e+07"
    assert _cell(97.04, 0.70, ".2f") == "97.04 +- 0.70" and _cell(1.0, float("nan"), ".2f") == "1.00"


def test_rerunning_skips_complete_points(local_sweep, monkeypatch):
    out, _ = local_sweep
    stamps = {n: (out / n / "notebook.ipynb").stat().st_mtime_ns for n in NAMES}
    # Any worker started now would fail: a re-run must start none.
    monkeypatch.setattr(sweep, "WORKER", [sys.executable, "-c", "raise SystemExit(3)"])
    result = run_sweep(GRID, out, workers=2, progress=False)
    assert result.failed == [] and all(p["status"] == "complete" for p in result.points.values())
    assert {n: (out / n / "notebook.ipynb").stat().st_mtime_ns for n in NAMES} == stamps
    assert all(p["attempts"] == 1 for p in json.loads((out / "sweep.json").read_text())["points"].values())


def test_a_partial_point_resumes_from_its_checkpoint(local_sweep, tmp_path):
    import torch
    import esacl

    out = tmp_path / "s"

    def stop(event):  # the run is cut after task 0's checkpoint
        if event.get("event") == "task" and event["task"] == 1:
            raise KeyboardInterrupt

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as every point of this module trains
    try:
        with pytest.raises(KeyboardInterrupt):
            esacl.run(
                dict(
                    method="sgd",
                    seed=0,
                    epochs=1,
                    landscape=False,
                    progress=False,
                    out=str(out),
                    name="split_digits-sgd-s0",
                ),
                callbacks=[stop],
            )
    finally:
        torch.set_num_threads(threads)
    grid = dict(GRID, axes=dict(method=["sgd"], seed=[0]))
    assert sweep.sweep_status(load_grid(grid), out)["split_digits-sgd-s0"] == (
        "incomplete",
        "1/5 tasks; resumes from its checkpoint",
    )
    assert run_sweep(grid, out, progress=False).failed == []
    resumed, uninterrupted = load_run(out / "split_digits-sgd-s0"), load_run(local_sweep[0] / "split_digits-sgd-s0")
    assert resumed.complete and resumed.class_il == uninterrupted.class_il
    assert not (out / "split_digits-sgd-s0" / "notebook.ipynb").exists()  # the notebook is not re-made


def test_the_ray_engine_runs_the_same_grid(local_sweep, tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (requirements.txt pins it)")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as err:  # no shared memory, no ports, ...
        pytest.skip(f"a local Ray instance cannot start here: {err}")
    try:
        result = run_sweep(GRID, tmp_path / "ray", engine="ray", progress=False)
    finally:
        ray.shutdown()
    assert result.failed == []
    for name in NAMES:
        assert (tmp_path / "ray" / name / "notebook.ipynb").is_file()
    # One thread per point on both engines: the same numbers.
    assert class_il_means(tmp_path / "ray") == class_il_means(local_sweep[0])


def test_a_failing_point_is_recorded_and_the_others_go_on(tmp_path, capsys):
    # split_cifar10 passes every static check but finds no dataset when it runs.
    grid = write_grid(
        tmp_path / "g.toml",
        dict(benchmark=["split_digits", "split_cifar10"]),
        fixed=dict(method="sgd", data_root=str(tmp_path / "no-data")),
    )
    out = tmp_path / "s"
    with pytest.raises(SystemExit) as stopped:  # esacl sweep exits 1 when a point failed
        main(["sweep", str(grid), "--out", str(out), "--workers", "2", "--quiet"])
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert "1 of 2 points failed" in err
    failure = (out / "failures" / "split_cifar10-sgd-s0.txt").read_text()
    assert (
        failure.startswith("notebook split_digits failed in cell") and "cifar-10-batches-py" in failure.splitlines()[0]
    )
    assert "Traceback" in failure and "UserError" in failure.split("Traceback")[1]
    points = json.loads((out / "sweep.json").read_text())["points"]
    assert (
        points["split_cifar10-sgd-s0"]["status"] == "failed"
        and "cifar-10-batches-py" in points["split_cifar10-sgd-s0"]["error"]
    )
    assert points["split_digits-sgd-s0"]["status"] == "complete"
    assert main(["sweep", str(grid), "--out", str(out), "--status"]) == 0
    printed = capsys.readouterr().out
    assert {line.split()[0]: line.split()[1] for line in printed.splitlines()[:2]} == {
        "split_digits-sgd-s0": "complete",
        "split_cifar10-sgd-s0": "failed",
    }
    assert "2 points: 1 complete, 0 diverged, 0 incomplete, 1 failed, 0 not started" in printed


def test_a_worker_that_dies_is_a_failed_point(tmp_path, monkeypatch):
    monkeypatch.setattr(
        sweep, "WORKER", [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    )
    result = run_sweep(dict(GRID, axes=dict(method=["sgd"], seed=[0, 1])), tmp_path / "s", workers=2, progress=False)
    assert result.failed == ["split_digits-sgd-s0", "split_digits-sgd-s1"]
    assert result.points["split_digits-sgd-s0"]["error"] == "worker died: signal SIGKILL (out of memory?)"
    assert (tmp_path / "s" / "failures" / "split_digits-sgd-s1.txt").read_text().startswith("worker died")


COUNTING_WORKER = """
import os, signal, sys
from workbench import execute, sweep
start = execute.Kernel.ready

def ready(self):                        # one line in the log per kernel started
    fresh = self.km is None or not self.km.is_alive()
    km = start(self)
    if fresh:
        with open(os.environ["KERNEL_LOG"], "a") as log:
            log.write(f"{km.provisioner.pid}\\n")
    return km

def attempt(point, out, cwd=None, kernel=None):
    if point.name.endswith("-s1"):      # this point kills its worker
        os.kill(os.getpid(), signal.SIGKILL)
    return run(point, out, cwd, kernel)

execute.Kernel.ready, run, sweep.attempt = ready, sweep.attempt, attempt
sys.exit(sweep._worker_main(sys.argv[1:]))
"""


def test_a_worker_runs_its_points_on_one_kernel_and_a_dead_worker_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "WORKER", [sys.executable, "-c", COUNTING_WORKER])
    monkeypatch.setenv("KERNEL_LOG", str(tmp_path / "kernels.log"))
    result = run_sweep(
        dict(GRID, axes=dict(method=["sgd"], seed=[0, 1, 2, 3])), tmp_path / "s", workers=1, progress=False
    )
    assert result.failed == ["split_digits-sgd-s1"]
    assert result.points["split_digits-sgd-s1"]["error"] == "worker died: signal SIGKILL (out of memory?)"
    assert [result.points[f"split_digits-sgd-s{i}"]["status"] for i in (0, 2, 3)] == ["complete"] * 3
    # The first worker's kernel ran s0; the worker that replaced it ran s2 and s3 on one kernel.
    assert len((tmp_path / "kernels.log").read_text().split()) == 2


STALLING_POINT = """
import json, subprocess, sys
from pathlib import Path
from workbench import sweep
sweep.STALL_SECONDS = 1
calls = []

def run_point(point, out, kernel=None):  # the first execution waits on a kernel that never answers
    run_dir = Path(out) / point.name
    run_dir.mkdir()
    calls.append(point.name)            # mkdir above fails unless the stalled run directory was removed
    if len(calls) == 1:
        subprocess.Popen(["sleep", "60"]).wait()
        raise RuntimeError("kernel died")
    (run_dir / "notebook.ipynb").write_text("{}")

sweep.run_point = run_point
result = sweep.attempt(sweep.Point("p", "split_digits", {}), sys.argv[1])
print(json.dumps(dict(result, calls=len(calls))))
"""


def test_a_kernel_that_sits_idle_is_stopped_and_the_notebook_executed_again(tmp_path):
    # In a subprocess: the guard kills the children of the process it runs in.
    done = subprocess.run(
        [sys.executable, "-c", STALLING_POINT, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    result = json.loads(done.stdout)
    assert result["ok"] and result["calls"] == 2 and (tmp_path / "p" / "notebook.ipynb").is_file()


def test_a_killed_driver_loses_nothing_and_the_next_call_finishes(local_sweep, tmp_path):
    grid = write_grid(tmp_path / "g.toml", dict(method=["sgd", "esacl"], seed=[0]))
    out = tmp_path / "s"
    driver = subprocess.Popen(
        [sys.executable, "-m", "workbench", "sweep", str(grid), "--out", str(out), "--workers", "2", "--quiet"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    complete = lambda: [p.parent.name for p in out.glob("*/accuracy.json") if json.loads(p.read_text())["complete"]]
    deadline = time.monotonic() + 240
    while not complete() and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert driver.poll() is None, "the sweep ended before it could be killed"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    first = complete()
    stamps = {n: (out / n / "accuracy.json").stat().st_mtime_ns for n in first}
    result = run_sweep(load_grid(grid), out, workers=2, progress=False)  # waits for the dying workers' lock
    assert result.failed == [] and all(p["status"] == "complete" for p in result.points.values())
    assert {n: (out / n / "accuracy.json").stat().st_mtime_ns for n in first} == stamps  # not run again
    # The same table as the uninterrupted sweep's seed-0 runs.
    expected = summary_rows([load_run(local_sweep[0] / name) for name in NAMES[::2]])
    assert class_il_means(out) == {(r["method"], r["sparsity"]): (1, r["class_il_mean"]) for r in expected}


def test_the_lock_refuses_a_second_sweep_and_a_dead_holder_is_taken_over(tmp_path, capsys):
    out = tmp_path / "s"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from workbench.sweep import SweepLock; "
            "SweepLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        grid = write_grid(tmp_path / "g.toml", dict(seed=[0]))
        assert main(["sweep", str(grid), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"is locked by another sweep (pid {holder.pid})" in err  # the only line
        assert SweepLock(out).holder() == holder.pid
    finally:
        holder.kill()
        holder.wait()
    (out / ".lock").write_text(f"{holder.pid}\n")  # the dead holder's pid is still in the file
    with SweepLock(out) as lock:
        assert (out / ".lock").read_text().split() == [str(os.getpid())] and lock.fd is not None
    assert SweepLock(out).holder() is None


def test_the_table_puts_the_published_row_beside_matching_benchmark_method_buffer_and_sparsity():
    from types import SimpleNamespace

    def record(method, sparsity, seed, buffer=500):
        return SimpleNamespace(
            path=Path(f"{method}-sp{sparsity}-s{seed}"),
            complete=True,
            env={},
            config=dict(benchmark="split_cifar10", method=method, seed=seed, sparsity=sparsity, buffer_size=buffer),
            summary=dict(class_il=dict(average=70.0 + seed, forgetting=10.0), task_il=dict(average=90.0)),
            efficiency=dict(
                flops=1e15, flops_relative=1.0, train_seconds=1.0, memory=dict(model_sparse=1e6, optimizer_state=0.0)
            ),
        )

    rows = {
        (r["method"], r["sparsity"]): r
        for r in summary_rows(
            [
                record("derpp", 0.0, 0),
                record("derpp", 0.0, 1),
                record("sparcl-er", 0.75, 0, buffer=50),
                record("sparcl-er", 0.9, 0, buffer=50),
                record("ewc", 0.0, 0),
            ]
        )
    }
    assert (
        rows["derpp", 0.0]["published_class_il_mean"] == 72.70 and rows["derpp", 0.0]["published_source"] == "der2020"
    )
    assert rows["sparcl-er", 0.75]["published_class_il_mean"] == 43.74  # buffer 50, sparsity 0.75: clfd2024
    assert rows["sparcl-er", 0.9]["published_source"] is None  # no published row at 0.9
    assert rows["ewc", 0.0]["published_task_il_mean"] == 68.29  # not a replay learner: buffer 0


def test_a_diverged_point_is_final_and_named_below_the_table(tmp_path, capsys):
    import esacl
    from esacl.train import Diverged

    grid = write_grid(tmp_path / "g.toml", dict(method=["sgd", "ewc"]))
    out = tmp_path / "s"
    with pytest.raises(Diverged):  # the ewc point, run earlier with a penalty too stiff for its lr
        esacl.run(
            dict(
                method="ewc",
                ewc_cap=False,
                ewc_lambda=1e6,
                epochs=1,
                landscape=False,
                n_tasks=2,
                progress=False,
                out=str(out),
                name="split_digits-ewc-s0",
            )
        )
    result = run_sweep(load_grid(grid), out, workers=1, progress=False)
    assert result.points["split_digits-ewc-s0"]["status"] == "diverged" and result.failed == []
    assert result.points["split_digits-ewc-s0"]["error"] == "non-finite training loss in task 1, epoch 0"
    assert result.points["split_digits-sgd-s0"]["status"] == "complete"
    assert [line.split()[1] for line in result.table.splitlines()[2:] if line.startswith("split_digits")] == ["sgd"]
    assert "left out (diverged: non-finite training loss): split_digits-ewc-s0" in result.table
    assert main(["sweep", str(grid), "--out", str(out), "--status"]) == 0
    printed = capsys.readouterr().out
    assert "split_digits-ewc-s0  diverged" in printed and "2 points: 1 complete, 1 diverged, 0 incomplete" in printed
    again = run_sweep(load_grid(grid), out, workers=1, progress=False)  # a re-run changes nothing
    assert again.points["split_digits-ewc-s0"]["status"] == "diverged"
