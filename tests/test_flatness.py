import pytest
import torch

import esacl
from esacl.flatness import PATH_POINTS, SCOPES, SPARSITIES, STEPS, finetune, probe, run_effects
from esacl.prune import topk_masks


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """Two-task split_digits runs with the probe, one epoch per task: {method: {seed: Record}}."""
    out = tmp_path_factory.mktemp("runs")
    return {
        m: {
            s: esacl.run(
                esacl.RunConfig(
                    method=m, seed=s, n_tasks=2, epochs=1, flatness_probe=True, progress=False, out=str(out)
                )
            )
            for s in (0, 1)
        }
        for m in ("sgd", "sam")
    }


def test_the_probe_measures_drop_and_recovery_and_leaves_the_run_as_it_was(tiny, probed):
    probed = probed["sgd"][0]
    plain = esacl.run(tiny(method="sgd", epochs=1, name="plain"))
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
        assert set(found) == {"as_trained", "dense", "top_eigenvalue", "path", "own", "own_sparsity"}
        assert found["own_sparsity"] == 0.9 and set(found["own"]) == {"0.9"}
        path, rows = found["path"]["own"]["0.9"], found["own"]["0.9"]
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
    cell = rows[-1][3].cell  # global, 0.95, recovery: SGD's minus SAM's, seed by seed
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
