"""The run, in data-flow order: RunConfig -> Benchmark -> model + method -> Trainer -> run directory.

For instance:

    record = esacl.run(RunConfig(benchmark="split_digits", method="esacl", seed=0))
"""

import contextlib
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .config import RunConfig, UserError, resolve, resolve_speed
from .data import load_benchmark
from . import flatness
from .seeding import rng_state, seed_everything, set_rng_state
from .flops import FlopMeter
from .learners import Batch
from .models import InputNorm, build_model
from .method import build_method
from .prune import mask_sparsity
from .rundir import Record, RunDir, environment, load_run
from .recorder import Recorder
from .steps import batch_norms


class Diverged(UserError):
    """The mean training loss of an epoch was not finite: the run stopped and is recorded as diverged."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"config key 'device' is {name!r} but no CUDA device is available; use 'cpu' or 'auto'")
    return torch.device(name)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on `device` where `enabled` (config key 'amp'); a no-op context otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def evaluate(model, bench, upto: int, amp: bool = False) -> dict:
    """Class-IL and task-IL accuracy (percent) on every task <= `upto` (None for later tasks), and
    the mean class-IL cross-entropy over those test sets. One host sync for the whole evaluation.

    Class-IL takes the argmax over every class; task-IL over the task's own classes only. `amp`:
    the forwards run under bf16 autocast; the logits are compared in float32.
    """
    was_training = model.training
    model.eval()
    class_hits, task_hits, losses, counts = [], [], [], []
    for task in bench.tasks[: upto + 1]:
        with autocast(task.x_test.device, amp):
            logits = torch.cat([model(x) for x in task.x_test.split(512)]).float()  # [M, n_classes]
        own = torch.zeros(bench.n_classes, dtype=torch.bool, device=logits.device)
        own[task.classes] = True
        task_logits = logits.masked_fill(~own, float("-inf"))
        class_hits.append((logits.argmax(1) == task.y_test).float().mean() * 100)
        task_hits.append((task_logits.argmax(1) == task.y_test).float().mean() * 100)
        losses.append(F.cross_entropy(logits, task.y_test, reduction="sum"))
        counts.append(len(task.y_test))
    model.train(was_training)
    class_il, task_il = torch.stack(class_hits).tolist(), torch.stack(task_hits).tolist()  # host sync
    pad = [None] * (bench.n_tasks - upto - 1)
    return dict(class_il=class_il + pad, task_il=task_il + pad, loss=torch.stack(losses).sum().item() / sum(counts))


def batch_bounds(n: int, batch_size: int, drop_last: bool = False) -> list[tuple[int, int]]:
    """`(start, end)` of each batch of an epoch over `n` examples. A last partial batch under half a
    batch joins the batch before it (one step of up to 1.5 batches), so every step sees at least half
    a batch: a step on a few examples, normalised by their own batch-norm statistics, can undo a task
    (measured on Split-Digits: a last batch of 3 examples of one class took the newest task from 99.6%
    to 50.2% training accuracy in one SAM step). `drop_last` drops a last partial batch instead."""
    full, rest = divmod(n, batch_size)
    ends = [batch_size * (i + 1) for i in range(full)]
    if rest and not drop_last:
        if 2 * rest < batch_size and ends:
            ends[-1] = n
        else:
            ends.append(n)
    return list(zip([0] + ends[:-1], ends))


class Trainer:
    """For each task: begin_task -> epochs of steps -> end_task -> evaluate every seen task.

    The trainer only loops and says what happened: one event per epoch, per removal and per task,
    and a `checkpoint` event wherever a resume may continue. Every event goes to `callbacks` in
    order (each called as `callback(event: dict)`; they also get a first `{"event": "start",
    "run_dir": ..., "config": ...}`). With a `rundir`, a `recorder.Recorder` is the first of them: it
    writes the run directory, and what it measures at a task end is in the event the others get.
    """

    def __init__(self, cfg, bench, model, method, meter, rundir: RunDir | None = None, callbacks=()):
        self.cfg, self.bench, self.model, self.method, self.meter = cfg, bench, model, method, meter
        self.recorder = Recorder(rundir, self) if rundir is not None else None
        self.callbacks = ([self.recorder] if self.recorder else []) + list(callbacks)
        self.next = (0, 0)  # (task, epoch) the run continues from
        self.train_seconds = 0.0

    def emit(self, event: dict) -> None:
        for callback in self.callbacks:
            callback(event)

    def task_data(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The training set of task t: its own data, or the union so far for cumulative learners."""
        tasks = self.bench.tasks[: t + 1] if self.method.cumulative else [self.bench.tasks[t]]
        return torch.cat([k.x_train for k in tasks]), torch.cat([k.y_train for k in tasks])

    def batches(self, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, drop_last: bool):
        """The step's batches over task positions `order`, cut by `batch_bounds`: indexed, augmented on
        the device and prepared by the method (replay drawn), as training and batch-norm recalibration
        see them."""
        for start, end in batch_bounds(len(order), self.cfg.batch_size, drop_last):
            idx = order[start:end]  # [B] task positions (up to 1.5 B in the last batch)
            x_raw = x[idx]
            augmented = self.bench.augment(x_raw) if self.bench.augment else x_raw
            yield self.method.prepare(Batch(augmented, y[idx], idx, x_raw))

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, bar) -> tuple[torch.Tensor, list]:
        """One pass over the method's pool of (x, y) in shuffled minibatches. Returns the mean loss
        and the sparsity samples (both still on the device)."""
        pool = self.method.pool()
        order = pool[torch.randperm(len(pool), device=pool.device)]
        loss_sum = torch.zeros((), device=y.device)
        samples, batches, rule = [], 0, self.method.rule
        for batch in self.batches(x, y, order, self.cfg.drop_last):
            with autocast(y.device, self.cfg.amp):
                loss = self.method.train_step(self.model, batch)
            loss_sum += loss.total.detach()  # stays on the device: no sync in the step loop
            if rule.sparse and rule.n_steps % self.sample_every(rule) == 0:
                samples.append((rule.n_steps, torch.stack([m.sum() for m in rule.masks.values()])))
            batches += 1
            bar.update(1)
        return loss_sum / max(batches, 1), samples

    def sample_every(self, rule) -> int:
        """Steps between two sparsity samples (one small device tensor each, no sync): `log_every`, and
        while a sparsity schedule still ramps, often enough for about 20 samples of the ramp (a short
        run's ramp ends within its first `log_every` steps)."""
        ramp = getattr(rule, "ramp_steps", 0)
        if ramp and rule.n_steps <= ramp:
            return max(1, min(self.cfg.log_every, ramp // 20))
        return self.cfg.log_every

    def steps(self, n: int) -> int:
        """Steps of one epoch over `n` examples."""
        return len(batch_bounds(n, self.cfg.batch_size, self.cfg.drop_last))

    def fit(self) -> None:
        cfg, bench, method = self.cfg, self.bench, self.method
        start_task, start_epoch = self.next
        self.emit(
            dict(
                event="start",
                run_dir=str(self.recorder.rundir.path) if self.recorder else None,
                config=cfg.to_dict(),
                task=start_task,
                epoch=start_epoch,
            )
        )
        for t in range(start_task, bench.n_tasks):
            task = bench.tasks[t]
            x, y = self.task_data(t)
            steps_per_epoch = self.steps(len(y))
            if start_epoch == 0:
                method.begin_task(t, task, y, self.model, cfg.epochs * steps_per_epoch)
            with tqdm(
                total=cfg.epochs * steps_per_epoch,
                initial=start_epoch * steps_per_epoch,
                desc=f"task {t + 1}/{bench.n_tasks}",
                disable=not cfg.progress,
                leave=False,
            ) as bar:
                for epoch in range(start_epoch, cfg.epochs):
                    method.begin_epoch(epoch)
                    tic = time.perf_counter()
                    mean_loss, samples = self.train_epoch(x, y, bar)
                    mean_loss = mean_loss.item()  # host sync: once per epoch
                    if not math.isfinite(mean_loss):
                        self.diverge(t, epoch, mean_loss)
                    seconds = time.perf_counter() - tic
                    self.train_seconds += seconds
                    bar.set_postfix(loss=f"{mean_loss:.3f}")
                    self.emit(self.epoch_event(t, epoch, mean_loss, seconds, samples))
                    removal = method.end_epoch()
                    if removal:
                        self.emit(dict(removal, task=t))
                    if cfg.stop_loss is not None and mean_loss <= cfg.stop_loss:
                        break  # trained to the matched quality: the task ends here
                    # The pool may have shrunk (elimination): the epochs left are shorter than planned.
                    bar.total = bar.n + (cfg.epochs - epoch - 1) * self.steps(len(method.pool()))
                    bar.refresh()
                    if epoch + 1 < cfg.epochs:  # the last epoch is followed by the task's checkpoint
                        self.checkpoint(t, epoch + 1)
            self.end_task(t, task, x, y)
            self.checkpoint(t + 1, 0)
            start_epoch = 0

    def epoch_event(self, t: int, epoch: int, loss: float, seconds: float, samples: list) -> dict:
        """What an epoch did: its loss, time, examples and, for sparse methods, the sparsity samples."""
        n_trained = len(self.method.pool())
        event = dict(
            event="epoch",
            task=t,
            epoch=epoch,
            loss=loss,
            seconds=seconds,
            samples=n_trained,
            samples_per_s=n_trained / seconds,
        )
        rule = self.method.rule
        if rule.sparse:
            sizes = torch.tensor([m.numel() for m in rule.masks.values()])
            steps = [s for s, _ in samples]
            nnz = torch.stack([k for _, k in samples]).cpu() if samples else torch.zeros(0, len(sizes))
            event.update(
                sparsity=mask_sparsity(rule.masks)["global"],
                schedule=rule.sparsity(),
                sparsity_steps=dict(step=steps, layers=(1 - nnz / sizes).tolist(), names=list(rule.masks)),
            )
        return event

    def checkpoint(self, t: int, epoch: int) -> None:
        """A resume may continue at task `t`, epoch `epoch`: the recorder saves the state here."""
        self.next = (t, epoch)
        self.emit(dict(event="checkpoint", task=t, epoch=epoch))

    def diverge(self, t: int, epoch: int, loss: float) -> None:
        """Stop a run whose epoch loss is not finite (checked once per epoch, at the host sync that
        is there anyway): a 'diverged' event (the recorder's `accuracy.json` says so), and the
        checkpoint stays the last finite epoch's. Raises `Diverged`."""
        self.emit(dict(event="diverged", task=t, epoch=epoch, loss=loss))
        path = self.recorder.rundir.path if self.recorder else None
        raise Diverged(
            f"{path} diverged: the mean training loss of task {t}, epoch {epoch} is {loss}; "
            f"recorded as diverged, its checkpoint from the last finite epoch (a smaller lr or loss "
            f"weight may help)",
            path,
        )

    def end_task(self, t: int, task, x, y) -> None:
        """The method's end of task (the update rule's projection and jump, then the learner's), then
        the evaluation of every task seen: the task's event."""

        def evaluate_seen():
            with self.meter.phase("measure.evaluation"):  # reported, not training FLOPs
                return evaluate(self.model, self.bench, t, self.cfg.amp)

        probed = {}
        if self.cfg.flatness_probe:  # the weights as trained, before the projection and the learner's task end
            tic = time.perf_counter()
            own = (self.cfg.sparsity, self.cfg.sparsity_scope) if self.method.rule.sparse else None
            with self.meter.phase("measure.flatness"):  # measured, not training FLOPs
                probed["flatness"] = flatness.probe(
                    self.model,
                    task,
                    self.cfg.lr,
                    self.cfg.batch_size,
                    self.cfg.seed * 1000 + t,
                    self.bench.augment,
                    own,
                )
            probed["flatness_seconds"] = time.perf_counter() - tic
        tic = time.perf_counter()
        fields, final = self.method.end_task(task, self.model, evaluate_seen, lambda: self.recalibrate_bn(x, y))
        if final is None:
            final = evaluate_seen()  # its host sync ends the task end's device work: the time below is whole
        fields["task_end_seconds"] = time.perf_counter() - tic  # projection, recalibration, the learner's, evaluation
        fields.update(probed)
        self.emit(
            dict(
                event="task",
                task=t,
                classes=task.classes,
                class_il=final["class_il"],
                task_il=final["task_il"],
                loss=final["loss"],
                train_seconds=self.train_seconds,
                **fields,
            )
        )

    @torch.no_grad()
    def recalibrate_bn(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Batch-norm running statistics recomputed at the final weights: a cumulative average over
        one pass of the task's training batches, built as in training (replay included).

        Soft-thresholded weights sit just above the threshold, so each step moves them by a large
        fraction of their size and the running averages trail behind; train-mode (batch) statistics
        do not. No weight changes; the forward passes are counted as 'bn_recalibration' FLOPs."""
        norms = batch_norms(self.model)
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        pool = self.method.pool()
        with self.meter.phase("bn_recalibration"), autocast(y.device, self.cfg.amp):
            for batch in self.batches(x, y, pool, drop_last=False):
                self.method.learner.per_sample_loss(self.model, batch)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum

    def state_dict(self) -> dict:
        """The training state a resume needs (the recorder adds its own and the position). The method's
        parts sit at the top level (`step`, `learner`, `selector`), where checkpoints have always had them."""
        return dict(
            train_seconds=self.train_seconds,
            model=self.model.state_dict(),
            meter=self.meter.state_dict(),
            rng=rng_state(),
            **self.method.state_dict(),
        )

    def restore(self, state: dict) -> None:
        """Continue from a checkpoint: the training state, the recorder's, and where to go on."""
        self.model.load_state_dict(state["model"])
        self.method.load_state_dict(state)
        self.meter.load_state_dict(state["meter"])
        set_rng_state(state["rng"])
        self.next, self.train_seconds = tuple(state["next"]), state["train_seconds"]
        if self.recorder:
            self.recorder.load_state_dict(state)


def default_name(cfg: RunConfig) -> str:
    """benchmark-method[-spS]-sSEED, the sparsity as the run resolves it: the one name `esacl run`,
    `esacl notebook`, sweeps and `esacl paper` give the same config."""
    cfg, _ = resolve(cfg)
    sparsity = f"-sp{cfg.sparsity:g}" if cfg.sparsity else ""
    return f"{cfg.benchmark}-{cfg.method}{sparsity}-s{cfg.seed}"


def to_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """The model's weights in channels_last memory format, and its InputNorm's output too (convolutions
    then take no format conversion per call)."""
    model = model.to(memory_format=torch.channels_last)
    for module in model.modules():
        if isinstance(module, InputNorm):
            module.channels_last = True
    return model


def build(cfg: RunConfig, device: torch.device, bench=None):
    """Config -> benchmark, model, method, FLOP meter (RNGs seeded first, so builds repeat exactly).

    `bench`: an already built `data.Benchmark` to use instead of loading `cfg.benchmark` (benchmarks
    on synthetic data). The speed knobs act here: `channels_last` converts the model (and its
    InputNorm's output), `compile` compiles the model in place after the FLOPs are counted."""
    seed_everything(cfg.seed)
    bench = bench if bench is not None else load_benchmark(cfg, device)
    model = build_model(bench.backbone, bench.input_shape, bench.n_classes, cfg.width, bench.norm).to(device)
    if cfg.channels_last:
        model = to_channels_last(model)
    if not cfg.bn_bias:  # batch-norm biases held at zero, as the official SparCL code
        for m in batch_norms(model):
            if m.bias is not None:
                m.bias.data.zero_()
                m.bias.requires_grad_(False)
    meter = FlopMeter(model, bench.input_shape, device)  # counts the forward of the model as built
    meter.track(model.prunable())
    method = build_method(cfg, model, bench.n_classes, bench.augment, device, meter)
    if cfg.compile:
        # In place: parameter names, prunable() and checkpoints stay as they are. A step compiles one graph
        # per train/eval x grad x BN-statistics variant, each static and then dynamic in the batch size
        # (last batch of an epoch, IDS support sets): more than dynamo's default limit of 8 per frame,
        # past which it would silently fall back to eager.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        model.compile()
        meter.under_compile()
    return bench, model, method, meter


@contextlib.contextmanager
def threads_of(cfg: RunConfig):
    """torch's CPU thread count set to the run's `threads` for the block (None: the process's, as on a
    GPU), and restored after."""
    before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(cfg: RunConfig | dict, callbacks=(), bench=None) -> Record:
    """Train and evaluate one run end to end; returns its record (also written to its run directory).
    `bench`: an already built `data.Benchmark` instead of loading `cfg.benchmark` (see `build`)."""
    cfg = RunConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg
    cfg, defaults = resolve(cfg)
    device = pick_device(cfg.device)
    cfg, speed = resolve_speed(cfg, device.type)
    with threads_of(cfg):
        parts = build(cfg, device, bench)
        rundir = RunDir.create(cfg.out, cfg.name, default_name(cfg)).lock()
        try:
            rundir.write_json("config.json", dict(config=cfg.to_dict(), defaults=defaults + speed))
            rundir.write_json("env.json", environment(device, cfg))
            Trainer(cfg, *parts, rundir, callbacks).fit()
        finally:
            rundir.unlock()
    return load_run(rundir.path)


def resume(run_dir, callbacks=(), progress: bool | None = None) -> Record:
    """Continue an interrupted run from its last checkpoint (its own config; nothing else changes)."""
    rundir = RunDir.open(run_dir).lock()
    try:
        record = load_run(run_dir)
        if record.complete:
            raise UserError(f"{run_dir} is complete: nothing to resume")
        if record.diverged:
            raise UserError(
                f"{run_dir} {record.status}: resuming would repeat the same steps; "
                f"start a new run (for instance with a smaller lr)"
            )
        cfg = RunConfig.from_dict(record.config)
        if progress is not None:
            cfg = cfg.replace(progress=progress)
        device = pick_device(cfg.device)
        if cfg.threads is None and device.type == "cpu":  # written before runs recorded it: the count it used
            cfg = cfg.replace(threads=rundir.read_json("env.json").get("threads"))
        rundir.remove_temporaries()  # half-written files of the interrupted process
        with threads_of(cfg):
            trainer = Trainer(cfg, *build(cfg, device), rundir, callbacks)
            if (rundir.path / "checkpoint.pt").exists():
                trainer.restore(rundir.load_checkpoint(device))
            else:  # stopped before its first checkpoint: start over, same seed
                rundir.truncate_events(0)
            trainer.fit()
    finally:
        rundir.unlock()
    return load_run(Path(run_dir))


def load_model(run_dir) -> tuple[torch.nn.Module, object]:
    """The model of a run directory's last checkpoint, and its benchmark (for dashboards and probes)."""
    rundir = RunDir.open(run_dir)
    cfg = RunConfig.from_dict(load_run(run_dir).config)
    device = pick_device(cfg.device)
    bench, model, *_ = build(cfg, device)
    model.load_state_dict(rundir.load_checkpoint(device)["model"])
    return model, bench
