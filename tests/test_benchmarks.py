"""The benchmark scripts that the tests can afford: the prepared GPU check in its tiny CPU setting, the tuning rule."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEBIAN = Path("/usr/share/datasets")


@pytest.mark.skipif(
    not (DEBIAN / "fashion-mnist").is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)",
)
def test_the_gpu_check_runs_end_to_end_in_its_tiny_setting(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/gpu_check.py",
            "--tiny",
            "--no-compile",
            "--data-root",
            str(DEBIAN),
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["tiny"] and result["device"] == "cpu"
    rows = result["throughput"]
    assert {(r["method"], r["settings"]) for r in rows} == {
        (m, s) for m in ("sgd", "sam", "esacl") for s in ("eager", "channels_last+amp")
    }
    for r in rows:
        assert r["esacl"] > 0 and r["reference"] > 0
        assert r["projected_cifar10_s"] == pytest.approx(result["cifar10_steps"] * 32 / r["esacl"])
    landscape = result["landscape"]
    assert landscape["serial_s"] > 0 and landscape["stacked_s"] > 0 and landscape["max_slice_difference"] < 1e-4
    runs = result["split_fmnist_resnet18"]
    assert [r["method"] for r in runs] == ["er", "sparcl-er", "esacl-er"]
    assert all(r["wall_s"] >= r["train_s"] > 0 and 0 <= r["class_il"] <= 100 for r in runs)
    # Eight steps a task at width 8 still learn something: task-IL above the 50% of guessing within a task
    assert all(r["task_il"] > 50 for r in runs), [(r["method"], r["task_il"]) for r in runs]
    assert runs[2]["flops"] > runs[1]["flops"]  # EsaCL's two passes cost more than SparCL's
    assert "projected Split CIFAR-10" in done.stdout and "Split Fashion-MNIST, ResNet-18" in done.stdout
    assert "sharpness measurements, ResNet-18" in done.stdout


def test_tuning_gives_every_family_as_many_candidates_drawn_alike_the_untuned_defaults_first(monkeypatch):
    import importlib.util

    from esacl.compare import PAPER_LEARNERS
    from esacl.config import RunConfig, cross, resolve

    spec = importlib.util.spec_from_file_location("tune", ROOT / "benchmarks" / "tune.py")
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    assert set(tune.SPACES) == set(tune.PRESETS) == {"esacl", "sparcl", "ewc", "derpp", "co2l", "lwf"}
    # the sparsifiers are tuned on every base learner the main job compares them on
    assert tune.PRESETS["esacl"] == tuple(f"esacl-{x}" for x in PAPER_LEARNERS)
    assert tune.PRESETS["sparcl"] == tuple(f"sparcl-{x}" for x in PAPER_LEARNERS)
    for family, space in tune.SPACES.items():
        drawn = tune.candidates(family, 8)
        # the knobs' declared untuned values, whatever a benchmark's table holds now: a search is repeatable
        untuned = resolve(RunConfig(method=tune.PRESETS[family][0], benchmark="split_cifar100"))[0]
        if family != "ewc":  # the image benchmarks keep a tuned EWC lambda
            assert drawn[0] == {k: getattr(untuned, k) for k in space}, family
        assert len(drawn) == 8 and all(d in cross({}, space) for d in drawn) and len(set(map(str, drawn))) == 8
        assert drawn == tune.candidates(family, 8)  # a fixed draw
    assert tune.candidates("ewc", 8)[0] == {"ewc_lambda": 100.0}
    monkeypatch.setattr(sys, "argv", ["tune.py", "--seeds", "0,1000"])
    with pytest.raises(SystemExit, match="disjoint from the reported seeds"):
        tune.main()
