"""The Recorder: what it writes agrees with the events it appends, and the callbacks after it get
those same events."""

import json

import numpy as np
import pytest

import esacl


def test_the_run_directory_agrees_with_the_events_the_callbacks_after_the_recorder_get(tiny):
    seen = []
    record = esacl.run(
        tiny(
            method="esacl",
            sparsity=0.75,
            landscape=True,
            landscape_batch=32,
            hessian_iters=2,
            hutchinson_samples=2,
            slice_steps=3,
        ),
        callbacks=[seen.append],
    )
    recorded = [e for e in seen if e["event"] not in ("start", "checkpoint")]
    assert recorded == record.events  # the same events, with what the recorder added
    assert [e["event"] for e in seen if e["event"] == "checkpoint"] == ["checkpoint"] * 4  # 2 tasks x 2 epochs
    tasks = record.task_events
    accuracy = json.loads((record.path / "accuracy.json").read_text())
    assert accuracy["class_il"] == [e["class_il"] for e in tasks] and accuracy["complete"]
    masks = [esacl.load_masks(record.path, t) for t in range(2)]
    for name, now in masks[1].items():
        row, before = tasks[1]["masks"][name], masks[0][name]
        assert row["sparsity"] == pytest.approx(1 - now.mean())
        assert row["churn"] == pytest.approx((before != now).mean())
        assert row["regrown"] == int((~before & now).sum()) and row["pruned"] == int((before & ~now).sum())
    assert "churn" not in tasks[0]["masks"]["stage1.0.0.weight"]  # no earlier task end
    for t, event in enumerate(tasks):
        selections = esacl.load_selections(record.path, t)
        assert event["selection"]["kept"] + event["selection"]["removed"] == len(selections["y"])
        sharpness = json.loads((record.path / "landscape" / f"task_{t}.json").read_text())
        assert event["landscape"] == {
            k: sharpness[k] for k in ("loss", "sam_gap", "top_eigenvalue", "hutchinson_trace")
        }
        assert event["flops_relative"] == pytest.approx(event["flops"]["total"] / event["flops_dense_sgd"])
    assert np.isfinite(tasks[1]["memory"]["optimizer_state"])
