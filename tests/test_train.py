import json

import pytest
import torch

import esacl
from esacl.train import evaluate


def test_two_task_run_writes_every_run_directory_file(tiny):
    record = esacl.run(tiny(method="er"))
    names = {p.name for p in record.path.iterdir()}
    assert {"config.json", "env.json", "metrics.jsonl", "accuracy.json", "checkpoint.pt"} <= names
    assert not [n for n in names if ".tmp" in n]
    saved = json.loads((record.path / "config.json").read_text())
    assert saved["config"]["method"] == "er" and "lr" in saved["defaults"] and "epochs" not in saved["defaults"]
    assert json.loads((record.path / "env.json").read_text())["torch"] == torch.__version__
    events = [json.loads(line) for line in (record.path / "metrics.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["epoch", "epoch", "task", "epoch", "epoch", "task"]
    assert record.complete and len(record.class_il) == 2 and record.class_il[0][1] is None
    assert 0 <= record.summary["class_il"]["average"] <= 100


def test_same_seed_gives_identical_results(tiny):
    a = esacl.run(tiny(method="derpp", seed=3))
    b = esacl.run(tiny(method="derpp", seed=3))
    c = esacl.run(tiny(method="derpp", seed=4))
    assert a.path != b.path
    assert a.class_il == b.class_il and a.task_il == b.task_il
    assert [e["loss"] for e in a.events if e["event"] == "epoch"] == [e["loss"] for e in b.events if e["event"] == "epoch"]
    assert [e["loss"] for e in a.events if e["event"] == "epoch"] != [e["loss"] for e in c.events if e["event"] == "epoch"]


class Stop(Exception):
    pass


@pytest.mark.parametrize("method, stop_at", [("derpp", 3), ("ewc", 2), ("er", 1)])
def test_resume_equals_an_uninterrupted_run(tiny, method, stop_at):
    cfg = tiny(method=method, n_tasks=3, epochs=2)
    whole = esacl.run(cfg.replace(name="whole"))

    seen = []
    def stop_after(event):
        seen.append(event)
        if len(seen) == stop_at + 1:     # dies while emitting an event: after a checkpoint, before the next
            raise Stop
    with pytest.raises(Stop):
        esacl.run(cfg.replace(name="cut"), callbacks=[stop_after])
    cut = esacl.load_run(whole.path.parent / "cut")
    assert not cut.complete
    resumed = esacl.resume(cut.path)
    assert resumed.complete
    assert resumed.class_il == whole.class_il and resumed.task_il == whole.task_il
    strip = lambda events: [{k: v for k, v in e.items() if "second" not in k and k != "samples_per_s"} for e in events]
    assert strip(resumed.events) == strip(whole.events)


def test_sgd_forgets_old_classes_while_er_keeps_them(tiny):
    sgd = esacl.run(tiny(method="sgd", n_tasks=3, epochs=3))
    er = esacl.run(tiny(method="er", n_tasks=3, epochs=3))
    old_sgd, old_er = sgd.class_il[-1][:2], er.class_il[-1][:2]
    assert max(old_sgd) < 5                      # catastrophic forgetting in class-IL
    assert min(old_er) > 50
    assert min(sgd.task_il[-1]) > 80             # task-IL hides it: the features survive


def test_joint_trains_on_everything_seen(tiny):
    from esacl.train import _build
    from esacl.config import resolve
    from esacl.data import BENCHMARKS
    cfg, _ = resolve(tiny(method="joint"), BENCHMARKS["split_digits"].protocol)
    trainer = _build(cfg, lambda device: None, ())
    x, y = trainer.task_data(1)
    assert set(y.tolist()) == set(trainer.bench.tasks[0].classes + trainer.bench.tasks[1].classes)


def test_task_il_masks_the_logits_of_other_tasks(tiny):
    """A model that always votes for class order[0] is right on task 0 only in class-IL,
    but task-IL never picks a foreign class."""
    from esacl.data import load_benchmark
    bench = load_benchmark(tiny(), torch.device("cpu"))
    favourite = bench.class_order[0]

    class Biased(torch.nn.Module):
        def forward(self, x):
            logits = torch.zeros(len(x), 10)
            logits[:, favourite] = 5.0
            logits[:, bench.tasks[1].classes[1]] = 1.0
            return logits

    class_il, task_il = evaluate(Biased(), bench, upto=1)
    share = lambda t, c: (bench.tasks[t].y_test == c).float().mean().item() * 100
    assert class_il[0] == pytest.approx(share(0, favourite), abs=1e-4) and class_il[1] == 0.0
    assert task_il[1] == pytest.approx(share(1, bench.tasks[1].classes[1]), abs=1e-4)
