import os
import re
import subprocess
import sys

import pytest

from workbench.cli import main


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_methods_and_benchmarks_list_one_line_each(capsys):
    code, out, _ = cli(capsys, "methods")
    assert code == 0
    for name in ("sgd", "joint", "er", "derpp", "ewc"):
        assert any(line.startswith(name + " ") for line in out.splitlines())
    code, out, _ = cli(capsys, "benchmarks")
    assert code == 0 and out.startswith("split_digits")


def test_run_prints_the_matrix_and_show_prints_it_again(capsys, tmp_path):
    code, out, _ = cli(
        capsys,
        "run",
        "--benchmark",
        "split_digits",
        "--method",
        "sgd",
        "--seed",
        "0",
        "--n-tasks",
        "2",
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
        "--quiet",
    )
    assert code == 0 and "class-IL accuracy R[t][k]" in out and "forgetting" in out
    run_dir = out.strip().splitlines()[-1].removeprefix("results in ")
    code, shown, _ = cli(capsys, "show", run_dir)
    assert code == 0 and shown.strip() == out.strip().rsplit("\n\nresults in", 1)[0].strip()


def test_a_grid_prints_the_comparison_table(capsys, tmp_path):
    code, out, err = cli(
        capsys,
        "run",
        "--method",
        "sgd,er",
        "--seed",
        "0,1",
        "--n-tasks",
        "2",
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
        "--quiet",
    )
    assert code == 0 and "[4/4] split_digits-" in err and "] split_digits-er-s1: class-IL" in err
    assert sum(line.startswith("split_digits") for line in out.splitlines()) == 2
    code, again, _ = cli(capsys, "compare", str(tmp_path))
    assert code == 0 and again.strip() in out


def test_user_errors_are_one_line_without_traceback(capsys, tmp_path):
    for argv, expected in [
        (["run", "--lr", "-1"], "'lr' must be in (0, inf)"),
        (["run", "--method", "sgdd"], "did you mean 'sgd'"),
        (["run", "--learning-rat", "0.1"], "unknown option '--learning-rat'"),
        (["run", "--epochs"], "expected one argument"),
        (["show", str(tmp_path)], "is not a run directory"),
        (["run", "--resume", str(tmp_path / "nowhere")], "is not a run directory"),
        (["run", "--resume", str(tmp_path), "--lr", "0.1"], "drop --lr"),
        (["run", "--method", "er", "--sparsity", "0.9"], "method 'er' is dense"),
    ]:
        code, out, err = cli(capsys, *argv)
        assert code == 2, argv
        assert err.count("\n") == 1 and err.startswith("esacl: error:") and expected in err, (argv, err)


def test_python_dash_m_runs_the_same_cli():
    done = subprocess.run([sys.executable, "-m", "workbench", "run", "--sparsity", "2"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "esacl: error: config key 'sparsity' must be in [0, 1), got 2.0"


def test_read_only_outputs_are_one_line_and_change_no_earlier_run(capsys, tmp_path, tmpfs):
    import pathlib

    read_only = tmpfs("1m", read_only=True)
    code, out, _ = cli(capsys, "run", "--n-tasks", "1", "--epochs", "1", "--out", str(tmp_path / "runs"), "--quiet")
    run_dir = pathlib.Path(out.strip().splitlines()[-1].removeprefix("results in "))
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    grid = tmp_path / "grid.toml"
    grid.write_text('notebook = "split_digits"\n[fixed]\nepochs = 1\n[axes]\nmethod = ["sgd"]\nseed = [0]\n')
    for argv, expected in [
        (["run", "--out", str(read_only / "runs"), "--n-tasks", "1"], f"cannot write {read_only / 'runs'}"),
        (
            ["sweep", str(grid), "--out", str(read_only / "sweep")],
            f"cannot write the sweep folder {read_only / 'sweep'}",
        ),
        (["report", str(run_dir), "--out", str(read_only / "reports")], "Read-only file system"),
    ]:
        code, out, err = cli(capsys, *argv)
        assert code == 2 and err.count("\n") == 1 and err.startswith("esacl: error:") and expected in err, (argv, err)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["run", "--seed", "4294967296"], "'seed' must be in [0, 4294967295]"),
        (["data", "download", "split_cifar10"], "no data root"),
    ],
)
def test_a_seed_beyond_the_generators_and_a_missing_data_root_are_one_line(capsys, monkeypatch, argv, expected):
    monkeypatch.delenv("ESACL_DATA", raising=False)
    code, out, err = cli(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and err.startswith("esacl: error:") and expected in err, err


def test_a_diverged_run_is_one_line_and_a_grid_goes_on_without_it(capsys, tmp_path):
    stiff = [
        "--ewc_cap",
        "false",
        "--ewc_lambda",
        "1e6",
        "--n-tasks",
        "2",
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
        "--quiet",
    ]
    code, out, err = cli(capsys, "run", "--method", "ewc", *stiff)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert re.match(r"esacl: error: .* diverged: the mean training loss of task 1, epoch 0 is (nan|inf);", err)
    code, out, err = cli(capsys, "run", "--method", "ewc,sgd", "--seed", "1", *stiff)
    assert code == 0 and "] split_digits-ewc-s1: diverged in " in err
    assert "(non-finite training loss in task 1, epoch 0)" in err
    rows = [line.split()[1] for line in out.splitlines() if line.startswith("split_digits")]
    assert rows == ["sgd"]  # the diverged ewc run is not averaged in
    code, out, _ = cli(capsys, "compare", str(tmp_path))
    assert [line.split()[1] for line in out.splitlines() if line.startswith("split_digits")] == ["sgd"]
    assert "left out (diverged: non-finite training loss): split_digits-ewc-s" in out
    assert out.count("split_digits-ewc-s") == 2
    code, out, _ = cli(capsys, "show", str(tmp_path / "split_digits-ewc-s0"))
    assert code == 0 and "diverged: non-finite loss in task 1, epoch 0, after 1 tasks" in out


def test_a_grid_over_worker_processes_gives_the_runs_of_one_process_in_the_same_order(tmp_path, capsys):
    import esacl
    from esacl import RunConfig
    from esacl.config import UserError
    from workbench.cli import grid_workers, run_grid

    def grid(out):
        base = dict(n_tasks=2, epochs=1, progress=False, out=str(out))  # the canonical thread count
        return [
            RunConfig(method="esacl", **base),
            RunConfig(method="sgd", **base),
            RunConfig(method="ewc", ewc_cap=False, ewc_lambda=1e6, **base),
        ]  # diverges: kept, reported

    here = esacl.run(grid(tmp_path / "here")[0])  # in this process
    serial, failed = run_grid(grid(tmp_path / "serial"))  # the sweep engine, one worker
    parallel, failed_too = run_grid(grid(tmp_path / "parallel"), workers=2)
    assert failed == failed_too == []
    assert [r.config["method"] for r in parallel] == ["esacl", "sgd", "ewc"]
    assert [r.class_il for r in parallel] == [r.class_il for r in serial] and serial[0].class_il == here.class_il
    assert [r.status for r in parallel] == [r.status for r in serial] and parallel[2].diverged
    assert not (tmp_path / "parallel" / "sweep.json").exists()  # new runs in a shared folder: no job files
    err = capsys.readouterr().err
    assert err.count("[3/3]") == 2 and "split_digits-ewc-s0: diverged" in err and "s left)" in err
    assert grid_workers(3, grid(tmp_path)) == 3 and grid_workers(None, grid(tmp_path)[:1]) == 1
    assert grid_workers(None, grid(tmp_path)) == min(3, len(os.sched_getaffinity(0)))  # one per usable core
    with pytest.raises(UserError, match="--workers must be at least 1"):
        grid_workers(0, grid(tmp_path))


def test_a_plain_install_executes_the_notebooks_from_anywhere(tmp_path):
    """`pip install .` (not editable) into a fresh venv: `esacl sweep` (the console script) and `esacl report`
    (as `python -m workbench`), run outside the checkout, find the notebooks inside the installed workbench
    package. The venv reaches this environment's dependencies through a path file and their data files
    (nbconvert's templates, kernel specs) through JUPYTER_PATH, so nothing is downloaded; esacl, widgets and
    workbench themselves are the installed copies (PYTHONPATH is cleared, so no checkout comes first)."""
    import shutil
    import sysconfig
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    source = tmp_path / "source"  # a copy: building writes build/ and egg-info beside the sources
    for part in ("esacl", "widgets", "workbench", "notebooks"):
        shutil.copytree(root / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(root / part, source / part)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(source)],
        check=True,
        capture_output=True,
        env=env,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run(
        [
            python,
            "-c",
            "import esacl, widgets, workbench, workbench.notebooks as n; "
            "print(esacl.__file__, widgets.__file__, workbench.__file__, n.__path__[0])",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.split()
    assert len(where) == 4 and all(path.startswith(site) for path in where)
    (work / "grid.toml").write_text(
        'notebook = "split_digits"\n[fixed]\nepochs = 1\nn_tasks = 2\nlandscape = false\n[axes]\nmethod = ["sgd"]\n'
    )
    env["JUPYTER_PATH"] = str(Path(sys.prefix) / "share" / "jupyter")
    done = subprocess.run(
        [venv / "bin" / "esacl", "sweep", "grid.toml", "--out", "s", "--workers", "1", "--quiet"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (work / "s" / "split_digits-sgd-s0" / "notebook.ipynb").is_file()
    done = subprocess.run(
        [python, "-m", "workbench", "report", "s/split_digits-sgd-s0", "--out", "r"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list((work / "r").glob("*.html"))) == 1


def test_a_notebook_grid_is_a_sweep_of_the_notebook_over_one_worker_per_core(tmp_path, capsys):
    import json

    from esacl import load_run

    argv = ["notebook", "split_digits", "-p", "method", "sgd,er", "-p", "epochs", "1", "-p", "n_tasks", "2"]
    argv += ["-p", "landscape", "false", "--out", str(tmp_path / "grid")]
    code, out, _ = cli(capsys, *argv)
    assert code == 0, out
    points = json.loads((tmp_path / "grid" / "sweep.json").read_text())["points"]
    assert sorted(points) == ["split_digits-er-s0", "split_digits-sgd-s0"]
    for name in points:
        assert load_run(tmp_path / "grid" / name).complete and (tmp_path / "grid" / name / "notebook.ipynb").is_file()
        assert load_run(tmp_path / "grid" / name).env["threads"] == 1
    assert sum(line.startswith("split_digits") for line in out.splitlines()) == 2 and "summary.csv" in out
    code, again, _ = cli(capsys, *argv)  # the same call again: nothing left to run, the same table
    assert code == 0 and again.split("written:")[0] == out.split("written:")[0]


def test_workbench_main_reads_its_options_in_either_order_and_refuses_an_unknown_one_in_one_line():
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "workbench.sh"
    for argv in (["main", "--frob"], ["main", "split_digits", "--frob"], ["main", "--out"]):
        done = subprocess.run(["bash", str(script), *argv], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, (argv, done.stderr)
        assert "workbench.sh:" in done.stderr
