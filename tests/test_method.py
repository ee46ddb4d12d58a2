"""The registries: every method is a composition of a base learner, a sparsifier and a data selector
(the package's layers: tests/test_layers.py)."""

import io

import pytest

from esacl import UserError
from esacl.method import LEARNERS, PRESETS, SPARSIFIERS, build_learner
from esacl.selection import SELECTORS
from esacl.learners import Batch
from helpers import config


def test_every_preset_is_one_choice_on_each_axis():
    for name, preset in PRESETS.items():
        assert preset.learner in LEARNERS and preset.sparsifier in SPARSIFIERS and preset.selector in SELECTORS, name
    for learner in ("er", "derpp", "ewc", "co2l", "lwf", "agem"):  # each base learner, with each sparse method
        assert (
            PRESETS[learner].learner,
            PRESETS[f"sparcl-{learner}"].learner,
            PRESETS[f"esacl-{learner}"].learner,
        ) == (learner, learner, learner)
        assert PRESETS[f"sparcl-{learner}"].sparse and PRESETS[f"esacl-{learner}"].sparsifier == "sdp"


def test_a_dense_preset_refuses_a_sparsity_when_its_config_is_resolved():
    assert type(build_learner(config(method="agem"), 10)) is LEARNERS["agem"].cls
    assert config(method="lwf", sparsity=0.0).sparsity == 0.0
    with pytest.raises(UserError, match="method 'lwf' is dense: config key 'sparsity' must be 0"):
        config(method="lwf", sparsity=0.5)


@pytest.mark.parametrize("name", ["esacl-derpp", "sparcl-er", "lwf"])
def test_a_methods_one_state_dict_carries_learner_rule_and_selector(name):
    """A method restored from another's state_dict takes the same next step: buffer, masks and
    accumulator, selector scores, step count all travel in the one dict."""
    import torch
    from esacl.train import build

    cfg = config(method=name, sparsity=0.5 if PRESETS[name].sparse else None)
    bench, model, method, _ = build(cfg, torch.device("cpu"))
    task = bench.tasks[0]
    method.begin_task(0, task, task.y_train, model, 20)
    method.begin_epoch(0)
    batches = [
        Batch(task.x_train[i : i + 16], task.y_train[i : i + 16], torch.arange(i, i + 16), task.x_train[i : i + 16])
        for i in range(0, 96, 16)
    ]
    for b in batches[:5]:
        method.train_step(model, method.prepare(b))
    _, twin_model, twin, _ = build(cfg, torch.device("cpu"))
    twin.begin_task(0, task, task.y_train, twin_model, 20)
    saved = io.BytesIO()  # as a checkpoint holds it: copies, weights only
    torch.save(dict(model=model.state_dict(), method=method.state_dict()), saved)
    state = torch.load(io.BytesIO(saved.getvalue()), weights_only=True)
    twin_model.load_state_dict(state["model"])
    twin.load_state_dict(state["method"])
    for m, mod in ((method, model), (twin, twin_model)):
        torch.manual_seed(1)  # the replay draw uses the global generator
        m.train_step(mod, m.prepare(batches[5]))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin_model.parameters()))
    assert all(torch.equal(method.masks[n], twin.masks[n]) for n in method.masks)
    assert twin.rule.n_steps == method.rule.n_steps == 6
