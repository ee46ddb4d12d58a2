import pytest
import torch

import esacl
from esacl.flatness import (
    MEASURES,
    PATH_POINTS,
    SCOPES,
    SDP_MODES,
    SDP_VARIANTS,
    SPARSITIES,
    STEPS,
    finetune,
    groups,
    plan,
    probe,
    results,
    run_effects,
    text,
)
from esacl.prune import topk_masks


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """The flatness experiment on two-task split_digits, seeds 0 and 1, one epoch per task: (plan's
    rows, their records)."""
    out = str(tmp_path_factory.mktemp("runs"))
    # One epoch and half-size batches in both parts: the probe's fine-tuning steps are most of the cost.
    rows = plan("split_digits", (0, 1), out, stop_loss=10.0, max_epochs=1, n_tasks=2, epochs=1, batch_size=16)
    return rows, [esacl.run(cfg) for *_, cfg in rows]


@pytest.fixture(scope="module")
def probed(experiment):
    """The dense runs: {mode: {seed: Record}} for sgd and sam."""
    runs = groups(*experiment)
    return {m: runs["pruned", "-", m] for m in ("sgd", "sam")}


def test_the_probe_measures_drop_and_recovery_and_leaves_the_run_as_it_was(tiny, probed):
    probed = probed["sgd"][0]
    plain = esacl.run(tiny(method="sgd", epochs=1, batch_size=16, name="plain"))  # as the fixture
    assert probed.class_il == plain.class_il and probed.task_il == plain.task_il
    for a, b in zip(probed.task_events, plain.task_events):
        assert a["loss"] == b["loss"] and a["flops"]["total"] == b["flops"]["total"]  # measured, not trained
        assert a["flops"]["measure.flatness.forward"] > 0 and "flatness" not in b
    found = probed.task_events[-1]["flatness"]
    assert set(found) == {"as_trained", "dense", "top_eigenvalue", "path", *SCOPES}
    for scope in SCOPES:
        assert set(found[scope]) == set(found["path"][scope]) == {str(s) for s in SPARSITIES}
        for rows in found[scope].values():
            assert set(rows) == {str(k) for k in STEPS}
    # Pruning to 0.95 costs training loss, and fine-tuning with the mask fixed wins it back.
    rows = found["layer"]["0.95"]
    assert rows["0"]["loss"] > found["dense"]["loss"] and rows["100"]["loss"] < rows["0"]["loss"]
    # The loss along the pruning direction rises from the weights to their projection, more the more is cut.
    paths = found["path"]["layer"]
    assert all(len(p) == PATH_POINTS for p in paths.values())
    assert paths["0.95"][-1] > paths["0.5"][-1] and paths["0.95"][-1] > paths["0.95"][0]
    assert found["top_eigenvalue"] > 0  # a trained classifier's loss curves upward somewhere


@pytest.mark.parametrize("gap", [0.0, 0.3])
def test_a_sparse_run_probes_its_own_projection_and_what_retraining_would_win(tiny, gap):
    """SDP's projection moves no weight at gap 0 (its drop and path are exactly flat); at a gap it
    prunes weights the run trained, and the path shows it."""
    record = esacl.run(tiny(method="grda", project_gap=gap, flatness_probe=True))
    for event in record.task_events:
        found = event["flatness"]
        assert set(found) == {
            "as_trained",
            "dense",
            "top_eigenvalue",
            "path",
            "own",
            "own_sparsity",
            "trained_sparsity",
        }
        assert found["own_sparsity"] == 0.9 and set(found["own"]) == {"0.9"}
        path, rows = found["path"]["own"]["0.9"], found["own"]["0.9"]
        assert found["trained_sparsity"] == pytest.approx(0.9 - gap, abs=1e-3)
        if gap == 0:
            assert len(set(path)) == 1 and rows["0"] == found["dense"]
        else:
            assert path[-1] != path[0] and rows["0"]["loss"] != found["dense"]["loss"]
    assert set(run_effects(record)) == {("own", 0.9, m) for m in ("drop", "recovery", "loss_rise")}


def test_fine_tuning_holds_the_pruned_weights_at_zero_and_moves_the_rest(tiny):
    from esacl.data import load_benchmark
    from esacl.train import build

    cfg = tiny(method="sgd")
    bench = load_benchmark(cfg, torch.device("cpu"))
    model = build(esacl.config.resolve(cfg)[0], torch.device("cpu"), bench)[1]
    prunable = {n: p for n, p in model.named_parameters() if n in model.prunable()}
    masks = topk_masks({n: p.detach() for n, p in prunable.items()}, 0.9, "layer")
    with torch.no_grad():
        for n, mask in masks.items():
            prunable[n].mul_(mask)
    before = {n: p.detach().clone() for n, p in prunable.items()}
    finetune(model, bench.tasks[0], masks, 5, 0.03, 32, torch.Generator().manual_seed(0))
    for n, p in prunable.items():
        assert (p[~masks[n]] == 0).all() and not torch.equal(p[masks[n]], before[n][masks[n]]), n


def test_probe_restores_the_model_and_the_random_generators(tiny):
    from esacl.data import load_benchmark
    from esacl.train import build

    cfg = tiny(method="sgd")
    bench = load_benchmark(cfg, torch.device("cpu"))
    model = build(esacl.config.resolve(cfg)[0], torch.device("cpu"), bench)[1]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(7)
    probe(model, bench.tasks[0], 0.03, 32, seed=0)
    after = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(after, torch.rand(3))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("stop_loss, epochs_per_task", [(10.0, 1), (1e-9, 2)])
def test_stop_loss_ends_a_task_after_the_first_epoch_that_reaches_it(tiny, stop_loss, epochs_per_task):
    record = esacl.run(tiny(method="sam", stop_loss=stop_loss))
    epochs = [e for e in record.events if e["event"] == "epoch"]
    assert [e["task"] for e in epochs] == [t for t in range(2) for _ in range(epochs_per_task)]
    assert record.complete


def test_the_experiment_pairs_sgd_and_sam_by_seed_over_every_scope_sparsity_and_measure(tiny, probed):
    from esacl.flatness import MEASURES, compare, run_effects

    effects = run_effects(probed["sgd"][0])
    probes = [e["flatness"] for e in probed["sgd"][0].task_events]
    drop = sum(p["dense"]["class_il"] - p["layer"]["0.95"]["0"]["class_il"] for p in probes) / len(probes)
    assert effects["layer", 0.95, "drop"] == pytest.approx(drop)
    rows = compare(probed["sgd"], probed["sam"])
    assert [(scope, s, m) for scope, s, m, _ in rows] == [
        (scope, s, m) for scope in SCOPES for s in SPARSITIES for m in MEASURES
    ]
    cell = {(scope, s, m): v for scope, s, m, v in rows}["global", 0.95, "recovery"].cell  # SGD's minus SAM's
    recovery = {m: [run_effects(probed[m][s])["global", 0.95, "recovery"] for s in (0, 1)] for m in probed}
    assert cell.diffs == tuple(a - b for a, b in zip(recovery["sgd"], recovery["sam"]))
    with pytest.raises(ValueError, match="no flatness probe"):
        run_effects(esacl.run(tiny(method="sgd", epochs=1, name="unprobed")))


def test_the_sharpness_dashboard_draws_the_probe_of_the_last_task_end(probed):
    import widgets

    record = probed["sam"][0]
    dash = widgets.RunDashboard(record)
    fig = dash.sharpness.current["probe"]
    probe = record.task_events[-1]["flatness"]
    assert fig.layout.title.text == f"flatness probe after task {len(record.task_events) - 1}"
    traces = {t.name: list(t.y) for t in fig.data}
    assert traces["global, 100 steps"] == [probe["global"][str(s)]["100"]["class_il"] for s in SPARSITIES]
    assert len(traces) == len(SCOPES) * len(STEPS)


def test_the_plan_pairs_every_mode_on_the_same_seeds_and_names_each_run_for_what_it_is(experiment):
    rows, _ = experiment
    names = [cfg.name for *_, cfg in rows]
    assert len(set(names)) == len(names) == (3 + len(SDP_VARIANTS) * len(SDP_MODES)) * 2
    for part, variant, mode, seed, cfg in rows:
        cfg = esacl.config.resolve(cfg)[0]
        assert cfg.epochs == 1  # `changes` reach every run
        assert cfg.seed == seed and cfg.flatness_probe and cfg.n_tasks == 2
        if part == "pruned":
            assert cfg.stop_loss == 10.0 and cfg.sparsity == 0 and cfg.asam == (mode == "asam")
        else:
            assert cfg.sparsity == 0.9 and cfg.method == SDP_MODES[mode]["method"]
            assert (cfg.project_gap, cfg.threshold) == {
                "target": (0.0, "target"),
                "gap": (0.2, "target"),
                "grda": (0.0, "grda"),
            }[variant]
    with pytest.raises(ValueError, match="unknown part"):
        plan("split_digits", (0,), "x", 0.1, 1, parts=("sparse",))


def test_the_results_pair_the_modes_by_seed_and_test_only_what_a_projection_moved(experiment):
    found = results(*experiment)
    pruned, sdp = found["pruned"], found["sdp"]
    assert set(pruned) == {"quality", "sharpness", "sam", "asam"}
    assert pruned["quality"]["sgd"]["epochs"] == 1  # stop_loss 10: every task ends after its first epoch
    assert [(c["scope"], c["sparsity"], c["measure"]) for c in pruned["sam"]] == [
        (scope, s, m) for scope in SCOPES for s in SPARSITIES for m in MEASURES
    ]
    assert all(c["n"] == 2 for c in pruned["sam"])
    cells = {(c["variant"], c["measure"]): c for c in sdp["differences"]}
    assert len(cells) == len(SDP_VARIANTS) * len(MEASURES)
    # 'target': the projection keeps exactly the trained nonzeros, so there is no drop to test
    assert cells["target", "drop"]["word"] == cells["target", "loss_rise"]["word"] == "none"
    # 'grda': the projection cuts what gRDA's threshold left (it trains far less sparse than 0.9)
    assert cells["grda", "loss_rise"]["word"] != "none"
    assert all(sdp["runs"]["grda"][m]["trained_sparsity"] < 0.9 for m in SDP_MODES)
    assert all(sdp["runs"]["target"][m]["trained_sparsity"] == pytest.approx(0.9, abs=1e-3) for m in SDP_MODES)
    assert [(c["variant"], c["mode"]) for c in sdp["gains"]] == [(v, m) for v in SDP_VARIANTS for m in SDP_MODES]
    lines = text(found)
    assert "SGD minus SAM" in lines and "retraining gain" in lines


def test_the_flatness_dashboard_draws_the_effects_with_intervals_and_follows_its_controls(experiment):
    import widgets

    rows, records = experiment
    dash = widgets.FlatnessDashboard(rows, records)
    assert set(dash.current) == {"effect", "path", "sharpness", "sdp", "sdp_path"}
    # The effect against sparsity: per mode, the mean over seeds of each run's effect.
    runs = groups(rows, records)
    means = [
        sum(run_effects(r)["layer", s, "drop"] for r in runs["pruned", "-", "sgd"].values()) / 2 for s in SPARSITIES
    ]
    sgd = [t for t in dash.current["effect"].data if t.name == "sgd" and t.mode == "lines+markers"][0]
    assert list(sgd.y) == pytest.approx(means)
    dash.sparsity.value = 0.95
    assert dash.current["path"].layout.title.text.endswith("layer 0.95")
    dash.measure.value = "loss_rise"
    assert dash.current["effect"].layout.title.text == "loss rise against sparsity"
    assert len(dash.figures()) == len(MEASURES) + 2 + 2 + 1 + len(SDP_VARIANTS)
