"""The comparison tables: per-method summaries and the paper's grouped question, on real runs."""

import statistics

import pytest

import esacl
from esacl import load_run
from esacl.rundir import find_runs
from esacl.compare import PAPER_LEARNERS, Versus, paper_configs, paper_methods, paper_rows, paper_text, versus
from workbench.cli import main

FAST = {"n_tasks": "2", "epochs": "1", "slice_steps": "3", "hessian_iters": "2", "hutchinson_samples": "2"}


@pytest.fixture(scope="module")
def paper_runs(tmp_path_factory):
    """`esacl paper` for ER over two seeds, as a user runs it: the runs and what it printed."""
    out = tmp_path_factory.mktemp("paper") / "runs"
    argv = paper_argv(out)  # one run per usable core at once
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        assert main(argv) == 0
    records = [load_run(p) for p in find_runs([out])]  # the job folder also holds grid.json, sweep.json, logs/
    return records, stdout.getvalue(), stderr.getvalue()


def paper_argv(out) -> list[str]:
    """The paper_runs fixture's command line, into `out`."""
    argv = ["paper", "--learners", "er", "--seeds", "0,1", "--out", str(out)]
    for key, value in FAST.items():
        argv += ["-p", key, value]
    return argv


def without_times(text: str) -> list[str]:
    """The printed table and verdicts less what wall-clock decides: the train-s column and time ratios."""
    import re

    lines = [line for line in text.splitlines() if not line.startswith(("group ", "---", "results in"))]
    return [re.sub(r" and [\d.]+x its train time|\s+[\d.]+ \+- [\d.]+$", "", line) for line in lines]


def test_the_paper_grid_is_the_bounds_then_each_learner_dense_sparcl_esacl():
    assert paper_methods(("er",)) == ["sgd", "joint", "er", "sparcl-er", "esacl-er"]
    configs = paper_configs("split_digits", [3, 4], PAPER_LEARNERS, 0.9, "runs")
    assert len(configs) == 2 * 14
    assert [c.method for c in configs[::2]] == paper_methods()
    assert {(c.method, c.sparsity) for c in configs if c.method.startswith(("sparcl", "esacl"))} == {
        (m, 0.9) for m in paper_methods() if m.startswith(("sparcl", "esacl"))
    }
    assert all(c.sparsity is None for c in configs if c.method in ("sgd", "joint", "er", "derpp", "ewc", "co2l"))
    # sharpness is measured only where a report shows dashboards: EsaCL-X at the first seed
    assert {(c.method, c.seed) for c in configs if c.landscape} == {(f"esacl-{x}", 3) for x in PAPER_LEARNERS}
    # the default: the paired sparse presets over 10 seeds, the bounds and dense learners over 3
    from esacl.compare import DENSE_SEEDS, PAPER_SEEDS

    default = paper_configs("split_digits", PAPER_SEEDS, dense_seeds=DENSE_SEEDS)
    seeds = {m: sorted(c.seed for c in default if c.method == m) for m in paper_methods()}
    assert len(default) == 8 * 10 + 6 * 3
    assert all(seeds[m] == list(range(10 if m.startswith(("sparcl", "esacl")) else 3)) for m in seeds)


def test_paper_prints_the_groups_the_marks_and_one_verdict_per_learner(paper_runs):
    records, out, err = paper_runs
    assert sorted((r.config["method"], r.config["seed"]) for r in records) == sorted(
        (m, s) for m in paper_methods(("er",)) for s in (0, 1)
    )
    assert all(r.complete for r in records) and "[10/10] split_digits-" in err
    assert "] split_digits-esacl-er-sp0.9-s1: class-IL" in err
    groups = paper_rows(records, ("er",))
    assert [g for g, _ in groups] == ["bounds", "er"]
    assert [r["method"] for r in groups[1][1]] == ["er", "sparcl-er", "esacl-er"]
    by = {(r.config["method"], r.config["seed"]): r for r in records}
    diffs = [
        by["esacl-er", s].summary["class_il"]["average"] - by["sparcl-er", s].summary["class_il"]["average"]
        for s in (0, 1)
    ]
    v = versus(records, "er")
    assert v.seeds == [0, 1]
    assert (v.cells["class_il"].mean, v.cells["class_il"].sd) == pytest.approx(
        (statistics.mean(diffs), statistics.stdev(diffs))
    )
    flops = lambda m: sum(by[m, s].efficiency["flops"] for s in (0, 1))
    assert v.flops_ratio == pytest.approx(flops("esacl-er") / flops("sparcl-er"))
    verdict = [line for line in out.splitlines() if line.startswith("er: EsaCL vs SparCL class-IL")]
    assert verdict == [v.line()] and f"at {v.flops_ratio:.2f}x its FLOPs" in verdict[0]
    marked = [line for line in out.splitlines() if line.split()[:1] in (["sparcl-er"], ["esacl-er"])]
    word = v.words["class_il"].word
    assert f"class-IL {v.words['class_il'].text()}; task-IL" in verdict[0]
    if word in ("better", "worse"):
        winner = "esacl-er" if word == "better" else "sparcl-er"
        assert [line.split()[0] for line in marked if " *" in line.split("+-")[1]] == [winner]
    else:
        mark = {"equivalent": " =", "undecided": " ?", "n/a": ""}[word]
        assert all(line.split("+-")[1].startswith(f" {line.split('+-')[1].split()[0]}{mark}") for line in marked)
    assert out.rstrip().endswith(f"results in {records[0].path.parent.resolve()}")


def test_a_table_judges_all_its_pairs_together_with_holm_over_their_cells():
    from esacl.compare import judge
    from esacl.stats import Paired, holm

    def pair(learner, class_diffs, task_diffs):
        cells = {"class_il": Paired(50, 50, class_diffs, 1.0), "task_il": Paired(90, 90, task_diffs, 1.0)}
        return Versus(learner, [0, 1, 2], cells, {"class_il": 20.0, "task_il": 60.0}, 3.0, 2.0)

    strong, weak = (3.0, 3.2, 2.8), (0.5, -1.5, 2.0)
    alone = judge([pair("er", strong, weak)])[0]
    table = judge([pair("er", strong, weak), pair("derpp", weak, weak), pair("ewc", weak, weak)])
    p = [c.p for v in table for c in v.cells.values()]
    assert [w.p_adjusted for v in table for w in v.words.values()] == pytest.approx(holm(p))
    assert alone.words["class_il"].p_adjusted == pytest.approx(min(1, 2 * alone.cells["class_il"].p))
    assert alone.words["class_il"].word == "better" and table[0].words["class_il"].word == "better"
    assert table[1].words["task_il"].word == "undecided" and "seeds for 80% power" in table[1].line()
    at_floor = judge(
        [
            Versus(
                "ewc",
                [0, 1, 2],
                {"class_il": Paired(19.5, 19.8, weak, 1.0), "task_il": Paired(90, 90, strong, 1.0)},
                {"class_il": 20.0, "task_il": 60.0},
                3.0,
                2.0,
            )
        ]
    )[0]
    assert at_floor.words["class_il"].word == "n/a" and at_floor.words["task_il"].word == "better"


def test_a_killed_paper_job_run_again_beside_a_busy_process_prints_the_same_table(paper_runs, tmp_path, capsys):
    """Killed (SIGKILL, workers included) after some runs, then the same command again, one run at a
    time and with a core kept busy: complete runs are kept, interrupted ones resumed, missing ones run, and
    every accuracy matrix and the table equal those of the uninterrupted job made with two workers."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    records, printed, _ = paper_runs
    out = tmp_path / "job"
    job = subprocess.Popen([sys.executable, "-m", "workbench", *paper_argv(out)], stderr=subprocess.PIPE, text=True)
    complete = lambda: [p for p in out.glob("*/accuracy.json") if json.loads(p.read_text()).get("complete")]
    deadline = time.monotonic() + 300
    while len(complete()) < 4 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = psutil.Process(job.pid).children()
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    job.stderr.close()
    psutil.wait_procs(workers, timeout=30)  # they die with it (a signal on their parent's death), within ms
    kept = {p.parent.name: p.stat().st_mtime_ns for p in complete()}
    assert 4 <= len(kept) < len(records)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert main(paper_argv(out) + ["--workers", "1"]) == 0
    finally:
        spinner.kill()
        spinner.wait()
    again, err = capsys.readouterr()
    assert f"{len(kept)} of {len(records)} points already complete or diverged: skipped" in err
    assert "(continuing)" in err
    assert {n: (out / n / "accuracy.json").stat().st_mtime_ns for n in kept} == kept  # untouched
    for r in records:
        assert (out / r.path.name / "accuracy.json").read_bytes() == (r.path / "accuracy.json").read_bytes()
    assert without_times(again) == without_times(printed)


def test_a_job_folder_takes_only_its_own_grid(paper_runs, capsys):
    records, _, _ = paper_runs
    out = records[0].path.parent
    assert main(paper_argv(out) + ["-p", "epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds another grid (epochs: 1 there, 2 now)" in err
    assert main(paper_argv(out) + ["--seeds", "0"]) == 2
    assert "holds another grid" in capsys.readouterr().err


def test_a_verdict_needs_both_sparcl_and_esacl(paper_runs):
    records, _, _ = paper_runs
    only_sparcl = [r for r in records if r.config["method"] != "esacl-er"]
    assert versus(only_sparcl, "er") is None
    assert "EsaCL vs SparCL" not in paper_text(only_sparcl, ("er",))


def test_paper_mistakes_are_one_line(capsys, tmp_path):
    for argv, expected in [
        (["paper", "--learners", "err"], "no base learner 'err' (did you mean 'er'?)"),
        (["paper", "-p", "method", "sgd"], "'-p method' is set by esacl paper itself"),
        (["paper", "-p", "epoch", "1"], "unknown config key 'epoch' (did you mean 'epochs'?)"),
        (["paper", "--seeds", "0,x"], "--seeds takes comma-separated integers"),
        (["paper", "--dense-seeds", "y"], "--dense-seeds takes comma-separated integers"),
    ]:
        assert main(argv + ["--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, (argv, err)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a").write_text("")
    assert main(["paper", "--out", str(tmp_path / "full")]) == 2
    assert "already holds files" in capsys.readouterr().err


def test_runs_of_another_thread_count_are_their_own_rows_and_never_paired_with_canonical_ones(paper_runs, tmp_path):
    import json
    import shutil

    from esacl.compare import paper_text, summary_rows, switch_lines, thread_notes

    records, _, _ = paper_runs
    assert {r.config["threads"] for r in records} == {1} and {r.env["threads"] for r in records} == {1}
    assert thread_notes(summary_rows(records)) == []
    assert switch_lines(records) == [
        "speed switches: device auto, threads 1, channels_last on, amp off, compile off (10 runs)"
    ]
    copies = []  # the sparse ER runs again, as if made with --threads 2
    for r in records:
        if r.config["method"] in ("esacl-er", "sparcl-er"):
            copy = tmp_path / r.path.name
            shutil.copytree(r.path, copy)
            saved = json.loads((copy / "config.json").read_text())
            saved["config"]["threads"] = 2
            (copy / "config.json").write_text(json.dumps(saved))
            copies.append(load_run(copy))
    both = records + copies
    rows = [r for r in summary_rows(both) if r["method"] in ("esacl-er", "sparcl-er")]
    assert sorted((r["method"], r["threads"], r["settings"], r["seeds"]) for r in rows) == [
        ("esacl-er", 1, "threads=1", 2),
        ("esacl-er", 2, "threads=2", 2),
        ("sparcl-er", 1, "threads=1", 2),
        ("sparcl-er", 2, "threads=2", 2),
    ]
    text = paper_text(both, ("er",))
    verdicts = [line for line in text.splitlines() if "EsaCL vs SparCL" in line]
    assert [line.split(":")[0] for line in verdicts] == ["er", "er (threads=2)"]
    assert versus(both, "er").line() == versus(records, "er").line()  # the canonical pair, untouched
    assert "other than the canonical 1" in text and "esacl-er (threads=2)" in text


def test_diverged_runs_are_named_below_the_table_and_never_averaged_in(paper_runs, tmp_path):
    from esacl.compare import left_out, summary_rows, summary_text
    from esacl.train import Diverged
    from workbench.cli import comparison

    records, _, _ = paper_runs
    with pytest.raises(Diverged) as stopped:  # task 0 finishes, task 1's loss is NaN
        esacl.run(
            dict(method="ewc", ewc_cap=False, ewc_lambda=1e6, n_tasks=2, epochs=1, progress=False, out=str(tmp_path))
        )
    diverged = load_run(stopped.value.path)
    assert diverged.diverged is not None and len(diverged.class_il) == 1
    rows = {(r["method"], r["seeds"]) for r in summary_rows(records + [diverged])}
    assert rows == {(r["method"], r["seeds"]) for r in summary_rows(records)}
    assert comparison(records + [diverged]) == summary_text(summary_rows(records)) + "\n\n" + left_out([diverged])[0]
    assert left_out(records + [diverged]) == [f"left out (diverged: non-finite training loss): {diverged.path.name}"]
    text = paper_text(records + [diverged], ("er",))
    assert text.endswith(left_out([diverged])[0]) and text.startswith(paper_text(records, ("er",)).split("\n\n")[0])


def test_a_run_whose_accuracy_json_is_unreadable_is_named_below_the_table_and_the_others_print(tmp_path, capsys):
    import json
    import shutil

    from esacl.compare import summary_rows, summary_text

    small = dict(method="sgd", n_tasks=2, epochs=1, progress=False, out=str(tmp_path))
    good = [esacl.run(dict(small, seed=s)) for s in (0, 1)]
    accuracy = json.loads((good[0].path / "accuracy.json").read_text())
    for name, text in (
        ("bad-json", '{"class_il": [['),
        ("bad-list", "[1, 2]"),
        ("bad-shape", json.dumps(dict(accuracy, class_il="x"))),
    ):
        shutil.copytree(good[0].path, tmp_path / name)
        (tmp_path / name / "accuracy.json").write_text(text)
    assert main(["compare", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert out.startswith(summary_text(summary_rows(good)) + "\n\n")
    assert out.strip().splitlines()[-3:] == [
        "left out (unreadable accuracy.json: not valid JSON): bad-json",
        "left out (unreadable accuracy.json: not a JSON object but list): bad-list",
        "left out (unreadable accuracy.json: 'class_il' is not a matrix of accuracies (rows of numbers, null after "
        "the diagonal)): bad-shape",
    ]
    assert "incomplete" not in out  # unreadable, not counted as incomplete too


def test_runs_that_differ_in_a_setting_are_separate_rows_and_a_seed_counts_once(tmp_path, capsys):
    from esacl.compare import left_out, summary_rows, summary_text

    small = dict(method="sgd", n_tasks=2, progress=False, out=str(tmp_path))
    one = [esacl.run(dict(small, seed=s, epochs=1)) for s in (0, 1)]
    two = esacl.run(dict(small, seed=0, epochs=2))
    again = esacl.run(dict(small, seed=0, epochs=1, name="again"))  # the same experiment once more
    records = one + [two, again]
    rows = {(r["settings"], r["seeds"]): r for r in summary_rows(records)}
    assert set(rows) == {("epochs=1", 2), ("epochs=2", 1)}
    values = [r.summary["class_il"]["average"] for r in one]
    assert rows[("epochs=1", 2)]["class_il_mean"] == pytest.approx(statistics.mean(values))
    assert rows[("epochs=1", 2)]["class_il_std"] == pytest.approx(statistics.stdev(values))
    text = summary_text(summary_rows(records))
    assert text.splitlines()[0].split()[:3] == ["benchmark", "method", "settings"]
    single = next(line for line in text.splitlines() if "epochs=2" in line)
    assert f"{two.summary['class_il']['average']:.2f}" in single and "+-" not in single  # one seed: its value alone
    kept = min((one[0], again), key=lambda r: str(r.path))
    repeat = again if kept is one[0] else one[0]
    assert left_out(records) == [
        f"left out (a seed counted already, same settings): {repeat.path.name} (as {kept.path.name})"
    ]
    assert main(["compare", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == summary_text(summary_rows(records)) + "\n\n" + left_out(records)[0]
    assert summary_text(summary_rows(one))  # one setting: no settings column
    assert "settings" not in summary_text(summary_rows(one)).splitlines()[0]


def test_no_verdict_where_esacl_or_sparcl_ran_with_several_settings(paper_runs, tmp_path):
    from esacl.compare import verdicts

    records, _, _ = paper_runs
    other = esacl.run(dict(method="esacl-er", seed=0, n_tasks=2, epochs=1, rho=0.1, progress=False, out=str(tmp_path)))
    lines = verdicts(records + [other], ("er",))
    tuned = next(r.config["rho"] for r in records if r.config["method"] == "esacl-er")  # the benchmark's
    assert tuned != 0.1
    assert lines == [
        f"er: no verdict: esacl-er ran with 2 settings (rho={tuned} / rho=0.1); compare runs made with one setting each"
    ]
    assert versus(records + [other], "er") is None
    table = paper_text(records + [other], ("er",)).split("\n\n")[0]
    assert "settings" in table.splitlines()[0] and not any(m in table for m in (" *", " =", " ?"))  # no marks


def test_a_run_written_before_a_knob_existed_is_a_seed_of_the_same_experiment(tmp_path):
    """An older run directory lacks the keys added since (LwF's, for instance): it counts them at their
    defaults, so it shares a row with today's runs of the same settings instead of a row of its own."""
    import json

    from esacl.compare import settings, summary_rows

    small = dict(method="sgd", n_tasks=2, epochs=1, progress=False, out=str(tmp_path))
    runs = [esacl.run(dict(small, seed=s)) for s in (0, 1)]
    saved = json.loads((runs[1].path / "config.json").read_text())
    del saved["config"]["lwf_alpha"], saved["config"]["lwf_temperature"], saved["config"]["lwf_warmup_epochs"]
    (runs[1].path / "config.json").write_text(json.dumps(saved))
    old = load_run(runs[1].path)
    assert "lwf_alpha" not in old.config and settings(old) == settings(runs[0])
    assert [(r["settings"], r["seeds"]) for r in summary_rows([runs[0], old])] == [("", 2)]
    changed = load_run(runs[0].path)
    changed.config["lwf_alpha"] = 0.5  # a value other than the default is a setting of its own
    assert settings(changed) != settings(old)
