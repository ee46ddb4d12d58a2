import json
import math

import pytest
import torch

import esacl
from esacl.method import LEARNERS, PRESETS
from esacl.train import batch_bounds, evaluate


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
    # ER's buffer keeps task 0: above the 50% class-IL of a model that knows only the last task
    assert record.summary["class_il"]["average"] > 75


def test_same_seed_gives_identical_results(tiny):
    a = esacl.run(tiny(method="derpp", seed=3))
    b = esacl.run(tiny(method="derpp", seed=3))
    c = esacl.run(tiny(method="derpp", seed=4))
    assert a.path != b.path
    assert a.class_il == b.class_il and a.task_il == b.task_il
    assert [e["loss"] for e in a.events if e["event"] == "epoch"] == [
        e["loss"] for e in b.events if e["event"] == "epoch"
    ]
    assert [e["loss"] for e in a.events if e["event"] == "epoch"] != [
        e["loss"] for e in c.events if e["event"] == "epoch"
    ]


class Stop(Exception):
    pass


@pytest.mark.parametrize("method, stop_at", [("derpp", 3), ("ewc", 2), ("er", 1), ("esacl-derpp", 4), ("esacl", 2)])
def test_resume_equals_an_uninterrupted_run(tiny, method, stop_at):
    cfg = tiny(method=method, n_tasks=3, epochs=2)
    whole = esacl.run(cfg.replace(name="whole"))

    seen = []

    def stop_after(event):
        if event["event"] == "start":
            assert event["run_dir"].endswith("cut") and event["config"]["method"] == method
            return
        seen.append(event)
        if len(seen) == stop_at + 1:  # dies while emitting an event: after a checkpoint, before the next
            raise Stop

    with pytest.raises(Stop):
        esacl.run(cfg.replace(name="cut"), callbacks=[stop_after])
    cut = esacl.load_run(whole.path.parent / "cut")
    assert not cut.complete
    resumed = esacl.resume(cut.path)
    assert resumed.complete
    assert resumed.class_il == whole.class_il and resumed.task_il == whole.task_il
    assert strip(resumed.events) == strip(whole.events)


def strip(events):
    """Events without what differs between any two processes: timings and the peak memory."""
    out = []
    for e in events:
        e = {k: v for k, v in e.items() if "second" not in k and k != "samples_per_s"}
        if "memory" in e:
            e["memory"] = {k: v for k, v in e["memory"].items() if not k.startswith("peak")}
        out.append(e)
    return out


def test_sgd_forgets_old_classes_while_er_keeps_them(tiny):
    sgd = esacl.run(tiny(method="sgd", n_tasks=3, epochs=3))
    er = esacl.run(tiny(method="er", n_tasks=3, epochs=3))
    old_sgd, old_er = sgd.class_il[-1][:2], er.class_il[-1][:2]
    assert max(old_sgd) < 5  # catastrophic forgetting in class-IL
    assert min(old_er) > 50
    assert min(sgd.task_il[-1]) > 80  # task-IL hides it: the features survive


def test_joint_trains_on_everything_seen(tiny):
    from esacl.config import resolve
    from esacl.train import Trainer, build

    cfg, _ = resolve(tiny(method="joint"))
    trainer = Trainer(cfg, *build(cfg, torch.device("cpu")), rundir=None)
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

    result = evaluate(Biased(), bench, upto=1)
    class_il, task_il = result["class_il"], result["task_il"]
    share = lambda t, c: (bench.tasks[t].y_test == c).float().mean().item() * 100
    assert class_il[0] == pytest.approx(share(0, favourite), abs=1e-4) and class_il[1] == 0.0
    assert task_il[1] == pytest.approx(share(1, bench.tasks[1].classes[1]), abs=1e-4)


def test_a_last_partial_batch_under_half_a_batch_joins_the_one_before():
    assert batch_bounds(227, 32) == [(i * 32, i * 32 + 32) for i in range(6)] + [(192, 227)]  # 3 left: joined
    assert batch_bounds(208, 32)[-1] == (192, 208)  # 16 left: a batch of its own
    assert batch_bounds(256, 32)[-1] == (224, 256) and len(batch_bounds(256, 32)) == 8
    assert batch_bounds(5, 32) == [(0, 5)]  # fewer than half a batch in all: still one step
    assert batch_bounds(227, 32, drop_last=True)[-1] == (192, 224) and batch_bounds(5, 32, drop_last=True) == []


def test_a_short_runs_sparsity_ramp_is_sampled_step_by_step(tiny):
    record = esacl.run(tiny(method="esacl", sparsity=0.9))
    samples = [
        (s, layers)
        for e in record.events
        if e["event"] == "epoch"
        for s, layers in zip(e["sparsity_steps"]["step"], e["sparsity_steps"]["layers"])
    ]
    steps = [s for s, _ in samples]
    ramp = [max(layers) for s, layers in samples if s <= 9]
    assert steps[:3] == [1, 2, 3] and steps[-1] % 10 == 0  # every step on the ramp, then every log_every
    assert ramp[0] < 0.5 and ramp == sorted(ramp) and ramp[-1] == pytest.approx(0.9, abs=1e-3)


SPARSE = [name for name, preset in PRESETS.items() if preset.sparse]
REPLAYS_LABELS = [name for name, preset in PRESETS.items() if LEARNERS[preset.learner].replays_labels]


@pytest.mark.parametrize("method", sorted(PRESETS))
def test_every_preset_learns_two_tasks_at_the_sparsity_it_promises(tiny, method):
    record = esacl.run(tiny(method=method, sparsity=0.75 if method in SPARSE else None))
    assert record.complete and all(0 <= a <= 100 for row in record.class_il for a in row if a is not None)
    # Guessing within a two-class task gives 50% task-IL: every learner learns each task it trains on.
    assert all(record.task_il[t][t] > 75 for t in range(2)), record.task_il
    # A model that knows only the last task scores 50% class-IL over two tasks: a learner whose loss
    # replays old classes' labels (or sees all the data) keeps task 0 well above it.
    if method in REPLAYS_LABELS:
        assert record.summary["class_il"]["average"] > 75, record.class_il
    eff = record.efficiency
    assert eff["flops"] > 0 and eff["flops_relative"] > 0
    state = torch.load(record.path / "checkpoint.pt", weights_only=True)["model"]
    if method not in SPARSE:
        assert eff["sparsity"] == 0.0 and not (record.path / "masks").exists()
        return
    assert eff["sparsity"] == pytest.approx(0.75, abs=1e-3)
    for t in range(2):
        for mask in esacl.load_masks(record.path, t).values():
            # the projection keeps the top 25% of |w| per layer; a weight there that is exactly zero counts as pruned
            assert (~mask).sum() >= round(0.75 * mask.size) and (~mask).sum() - round(
                0.75 * mask.size
            ) < 0.001 * mask.size
    for name, mask in esacl.load_masks(record.path, 1).items():
        assert torch.equal(state[name] != 0, torch.from_numpy(mask))  # zero exactly where pruned
    assert eff["memory"]["model_sparse"] < eff["memory"]["model_dense"]
    jump = record.task_events[-1]["jump"]
    fields = {"class_il_before", "class_il_after", "loss_before", "loss_after", "accuracy_drop"}
    assert set(jump) == fields | {"as_trained"} and set(jump["as_trained"]) == fields
    assert "churn" in record.task_events[-1]["masks"]["stage1.0.0.weight"]


def test_ids_records_its_selections_per_task(tiny):
    record = esacl.run(
        tiny(method="esacl", epochs=3, removal_every=1, removal_until=2, removal_fraction=0.2, support_fraction=0.5)
    )
    for t in range(2):
        sel = esacl.load_selections(record.path, t)
        n = len(sel["y"])
        removed = sel["removed_epoch"]
        assert (removed >= 0).sum() == int(0.2 * n) and set(removed[removed >= 0].tolist()) <= {0, 1}
        assert sel["epoch_score"].shape == sel["epoch_kept"].shape == (3, n)
        assert not sel["epoch_kept"][2][removed >= 0].any()  # removed examples are not trained on
        assert (sel["epoch_kept"][0].sum()) == sum(-(-b // 2) for b in _batches(n, 32))
    removals = [e for e in record.events if e["event"] == "eliminate"]
    assert [e["epoch"] for e in removals] == [0, 1, 0, 1]


def _batches(n, b):
    return [min(b, n - s) for s in range(0, n, b)]


def test_a_projection_that_changes_weights_has_a_measured_jump(tiny):
    """gRDA's own threshold does not meet the target by itself: the task-end projection does,
    and the jump it causes is recorded."""
    record = esacl.run(tiny(method="grda", threshold="grda", grda_c=0.0001, sparsity=0.9))
    jump = record.task_events[0]["jump"]
    assert record.efficiency["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert jump["loss_after"] != jump["loss_before"]
    assert jump["as_trained"]["loss_after"] != jump["as_trained"]["loss_before"]  # with the statistics as trained


def test_dense_runs_record_the_flatness_test_one_shot_pruning_without_retraining(tiny):
    from esacl.prune import jump_summary, one_shot_pruned
    from esacl.train import evaluate, load_model

    record = esacl.run(tiny(method="sgd", one_shot_sparsity=0.9))
    last = record.task_events[-1]["one_shot"]
    assert last["sparsity"] == 0.9 and last["class_il_before"] == pytest.approx(sum(record.class_il[-1]) / 2)
    model, bench = load_model(record.path)
    prunable = {n: p for n, p in model.named_parameters() if n in model.prunable()}
    jump = jump_summary(*one_shot_pruned(prunable, lambda: evaluate(model, bench, 1), 0.9, "layer"))
    assert last == pytest.approx(dict(jump, sparsity=0.9))
    assert record.efficiency["one_shot_last"] == last["accuracy_drop"]
    assert "one_shot" not in esacl.run(tiny(method="sgd")).task_events[-1]


def test_bn_recalibration_recomputes_running_stats_from_the_final_weights(tiny):
    """After recalibration the running mean of the first batch-norm is the average of the batch means
    over the task's training batches at the final weights; the weights themselves do not move."""
    from esacl.config import resolve
    from esacl.train import Trainer, build

    cfg, _ = resolve(tiny(method="esacl-noids"))
    trainer = Trainer(cfg, *build(cfg, torch.device("cpu")), rundir=None)
    x, y = trainer.task_data(0)
    trainer.method.selector.begin_task(0, y)
    weights = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.model.stem[1].running_mean.fill_(5.0)
    trainer.recalibrate_bn(x, y)
    assert all(torch.equal(a, b) for a, b in zip(weights, trainer.model.parameters()))
    with torch.no_grad():
        pre_bn = trainer.model.stem[0](x)  # the stem conv's output, [N, C, 8, 8]
    means = torch.stack([b.mean(dim=(0, 2, 3)) for b in pre_bn.split(cfg.batch_size)])
    expected = means.mean(0)  # cumulative average: one value per batch
    assert torch.allclose(trainer.model.stem[1].running_mean, expected, atol=1e-5)
    assert trainer.model.stem[1].momentum == 0.1  # momentum restored
    assert trainer.meter.snapshot()["bn_recalibration.forward"] == len(y) * trainer.meter.dense_forward


def test_amp_and_channels_last_runs_train_and_evaluate(tiny):
    from esacl.config import resolve
    from esacl.train import build

    cfg = tiny(method="esacl", amp=True, channels_last=True)
    _, model, *_ = build(resolve(cfg)[0], torch.device("cpu"))
    assert model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    record = esacl.run(cfg)  # bf16 autocast on the CPU: allowed, mostly for checking
    rows = [a for row in record.class_il + record.task_il for a in row if a is not None]
    assert record.complete and all(math.isfinite(a) for a in rows)
    assert record.task_il[0][0] > 90 and record.task_il[1][1] > 90  # each task learned under bf16
    assert record.config["amp"] and record.config["channels_last"]


@pytest.mark.slow
def test_compile_gives_a_working_run_with_the_same_flops(tiny):
    eager = esacl.run(tiny(method="esacl", name="eager"))
    compiled = esacl.run(tiny(method="esacl", compile=True, name="compiled"))
    assert compiled.complete and min(compiled.task_il[-1]) > 70
    assert compiled.efficiency["flops"] == eager.efficiency["flops"]  # the meter's hook runs outside the graph


def test_the_official_sparcl_protocol_details_are_switches(tiny):
    # No replay in the first task: task 0 forwards only the stream, as many examples as sgd does.
    record = esacl.run(tiny(method="er", replay_first_task=False, n_tasks=1, name="noreplay"))
    plain = esacl.run(tiny(method="sgd", n_tasks=1, name="sgd"))
    assert record.task_events[0]["flops"]["total"] == pytest.approx(plain.task_events[0]["flops"]["total"])
    assert (
        esacl.run(tiny(method="er", n_tasks=1, name="replay")).task_events[0]["flops"]["total"]
        > 1.5 * plain.task_events[0]["flops"]["total"]
    )
    # Batch-norm biases held at zero.
    record = esacl.run(tiny(method="sparcl-er", bn_bias=False, name="nobias"))
    state = torch.load(record.path / "checkpoint.pt", weights_only=True)["model"]
    biases = [k for k in state if k.endswith(".bias") and k.replace(".bias", ".running_mean") in state]
    assert biases and all((state[k] == 0).all() for k in biases)
    # The last partial batch dropped: floor(n / 32) full batches per epoch.
    whole = esacl.run(tiny(method="sgd", n_tasks=1, epochs=1, name="all"))
    dropped = esacl.run(tiny(method="sgd", n_tasks=1, epochs=1, drop_last=True, name="dropped"))
    n = whole.events[0]["samples"]
    per_example = whole.task_events[0]["flops"]["total"] / n
    assert dropped.task_events[0]["flops"]["total"] == pytest.approx(per_example * (n // 32) * 32)


def test_a_non_finite_loss_stops_the_run_as_diverged_and_keeps_the_last_finite_checkpoint(tiny):
    from esacl import UserError
    from esacl.rundir import RunDir
    from esacl.train import Diverged

    # Uncapped EWC this stiff overshoots its anchor: the loss is NaN within the second task's first epoch.
    cfg = tiny(method="ewc", ewc_cap=False, ewc_lambda=1e6)
    with pytest.raises(Diverged, match="task 1, epoch 0 is (nan|inf);") as stopped:
        esacl.run(cfg)
    record = esacl.load_run(stopped.value.path)
    assert not record.complete and record.diverged == {"task": 1, "epoch": 0}
    assert record.status.startswith("diverged: non-finite loss in task 1, epoch 0")
    assert len(record.class_il) == 1 and record.events[-1]["event"] == "diverged"
    state = RunDir.open(record.path).load_checkpoint(torch.device("cpu"))
    assert state["next"] == [1, 0]  # the end of task 0: the last finite epoch
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    with pytest.raises(
        UserError,
        match="diverged: non-finite loss in task 1, epoch 0, after 1 tasks: resuming would repeat the same steps",
    ):
        esacl.resume(record.path)
    assert esacl.run(cfg.replace(ewc_cap=True)).complete  # the capped penalty trains through


def test_the_task_bar_ends_full_when_elimination_shrinks_the_pool(tiny, monkeypatch):
    import esacl.train as train

    ends = []

    class Bar(train.tqdm):
        def close(self):
            if not self.disable:
                ends.append((self.n, self.total))
            super().close()

    monkeypatch.setattr(train, "tqdm", Bar)
    record = esacl.run(tiny(method="esacl", epochs=3, removal_every=1, removal_until=2, progress=True))
    removed = [e for e in record.events if e["event"] == "eliminate"]
    assert removed and len(ends) >= 2 and all(n == total for n, total in ends)


def test_the_threads_key_sets_the_thread_count_for_the_run_only_and_env_json_records_it(tiny):
    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1
    seen = []
    record = esacl.run(tiny(threads=wanted), callbacks=[lambda e: seen.append(torch.get_num_threads())])
    assert set(seen) == {wanted} and torch.get_num_threads() == before
    assert json.loads((record.path / "env.json").read_text())["threads"] == wanted


def test_a_cpu_run_takes_the_canonical_thread_count_and_records_its_speed_switches(tiny):
    before = torch.get_num_threads()
    seen = []
    record = esacl.run(tiny(method="er"), callbacks=[lambda e: seen.append(torch.get_num_threads())])
    assert set(seen) == {1} and torch.get_num_threads() == before
    saved = json.loads((record.path / "config.json").read_text())
    assert saved["config"]["threads"] == 1 and saved["config"]["channels_last"] is True
    assert {"threads", "channels_last"} <= set(saved["defaults"])
    env = record.env
    assert env["threads"] == 1 and isinstance(env["load_average"], float)
    assert env["switches"] == dict(device="auto", threads=1, channels_last=True, amp=False, compile=False)
    given = json.loads((esacl.run(tiny(method="er", channels_last=False)).path / "config.json").read_text())
    assert given["config"]["channels_last"] is False and "channels_last" not in given["defaults"]


SPIN = "while True: pass"

STOP_AT_CHECKPOINT = """
import os, signal, sys
from esacl.rundir import RunDir
import workbench.cli
calls, real = [], RunDir.save_checkpoint
def save(self, state):
    real(self, state)
    calls.append(1)
    if len(calls) == int(sys.argv[1]):
        os.kill(os.getpid(), getattr(signal, sys.argv[2]))
RunDir.save_checkpoint = save
sys.exit(workbench.cli.main(sys.argv[3:]))
"""


@pytest.mark.parametrize("sig, at", [("SIGKILL", 2), ("SIGTERM", 3)])
def test_a_run_killed_then_resumed_beside_a_busy_process_equals_an_idle_uninterrupted_one(tiny, tmp_path, sig, at):
    """Results are a function of config and seed: not of the load when a run starts or resumes."""
    import signal
    import subprocess
    import sys

    from workbench.cli import main

    whole = esacl.run(tiny(method="esacl-er", n_tasks=3, name="whole"))
    argv = ["run", "--method", "esacl-er", "--n-tasks", "3", "--epochs", "2", "--out", str(tmp_path / "runs")]
    argv += ["--name", "killed", "--quiet"]
    done = subprocess.run([sys.executable, "-c", STOP_AT_CHECKPOINT, str(at), sig, *argv], capture_output=True)
    assert done.returncode == -getattr(signal, sig), done.stderr
    killed = tmp_path / "runs" / "killed"
    assert not esacl.load_run(killed).complete
    spinner = subprocess.Popen([sys.executable, "-c", SPIN])  # a core busy while it resumes
    try:
        assert main(["run", "--resume", str(killed), "--quiet"]) == 0
    finally:
        spinner.kill()
        spinner.wait()
    assert (killed / "accuracy.json").read_bytes() == (whole.path / "accuracy.json").read_bytes()
    assert esacl.load_run(killed).env["threads"] == 1


def test_sparcl_without_tdm_keeps_the_weights_dense_and_prices_only_dgm(tiny):
    dgm_only = esacl.run(tiny(method="sparcl-er", tdm=False))
    er = esacl.run(tiny(method="er"))
    masks = esacl.load_masks(dgm_only.path, 1)
    assert all(m.all() for m in masks.values()) and dgm_only.efficiency["sparsity"] == 0.0
    # Dense forwards and activation gradients, a fifth of the prunable layers' weight gradients.
    assert (
        0.5 * er.efficiency["flops_relative"] < dgm_only.efficiency["flops_relative"] < er.efficiency["flops_relative"]
    )


def test_a_run_written_before_threads_were_recorded_resumes_with_the_count_its_env_json_names(tiny):
    def stop_after_first_epoch(event):
        if event["event"] == "epoch":
            raise Stop

    with pytest.raises(Stop):
        esacl.run(tiny(method="er", name="old"), callbacks=[stop_after_first_epoch])
    path = tiny().out + "/old"
    saved = json.loads(open(path + "/config.json").read())
    saved["config"]["threads"] = None  # as such runs recorded it; their env.json held the count used
    open(path + "/config.json", "w").write(json.dumps(saved))
    env = json.loads(open(path + "/env.json").read())
    open(path + "/env.json", "w").write(json.dumps(dict(env, threads=2)))
    seen = []
    esacl.resume(path, callbacks=[lambda e: seen.append(torch.get_num_threads())])
    assert set(seen) == {2}
