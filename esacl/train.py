"""The run, in data-flow order: RunConfig -> Benchmark -> model + method -> Trainer -> run directory.

    record = esacl.run(RunConfig(benchmark="split_digits", method="er", seed=0))
"""
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import RunConfig, UserError, resolve
from .data import BENCHMARKS, load_benchmark
from .methods import PRESETS, Batch, build_learner
from .models import build_model
from .record import Record, RunDir, environment, load_run
from .steps import build_step


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"config key 'device' is {name!r} but no CUDA device is available; use 'cpu' or 'auto'")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)          # also seeds every CUDA device


def rng_state() -> dict:
    """Every global RNG, in types a weights-only checkpoint load accepts."""
    _, key, pos, has_gauss, cached = np.random.get_state()
    return dict(python=random.getstate(), numpy=[key.tolist(), pos, has_gauss, cached],
                torch=torch.get_rng_state(),
                cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", np.array(key, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"]:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


@torch.no_grad()
def evaluate(model, bench, upto: int) -> tuple[list, list]:
    """Class-IL and task-IL accuracy (percent) on every task <= `upto`; None for later tasks.

    Class-IL takes the argmax over every class; task-IL over the task's own classes only.
    One host sync for the whole evaluation.
    """
    was_training = model.training
    model.eval()
    class_hits, task_hits = [], []
    for task in bench.tasks[:upto + 1]:
        logits = torch.cat([model(x) for x in task.x_test.split(512)])           # [M, n_classes]
        own = torch.zeros(bench.n_classes, dtype=torch.bool, device=logits.device)
        own[task.classes] = True
        task_logits = logits.masked_fill(~own, float("-inf"))
        class_hits.append((logits.argmax(1) == task.y_test).float().mean() * 100)
        task_hits.append((task_logits.argmax(1) == task.y_test).float().mean() * 100)
    model.train(was_training)
    class_il, task_il = torch.stack(class_hits).tolist(), torch.stack(task_hits).tolist()  # host sync
    pad = [None] * (bench.n_tasks - upto - 1)
    return class_il + pad, task_il + pad


class Trainer:
    """For each task: begin_task -> epochs of steps -> end_task -> evaluate every seen task.

    Emits one event per epoch and per task to the run directory and to `callbacks`
    (each called as `callback(event: dict)`), and checkpoints after every epoch.
    """

    def __init__(self, cfg, bench, model, learner, step, rundir: RunDir, callbacks=()):
        self.cfg, self.bench, self.model = cfg, bench, model
        self.learner, self.step, self.rundir = learner, step, rundir
        self.callbacks = list(callbacks)
        self.class_il: list[list] = []
        self.task_il: list[list] = []
        self.n_events = 0
        self.next = (0, 0)                       # (task, epoch) the run continues from

    def emit(self, event: dict) -> None:
        self.rundir.append_event(event)
        self.n_events += 1
        for callback in self.callbacks:
            callback(event)

    def task_data(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The training set of task t: its own data, or the union so far for cumulative learners."""
        tasks = self.bench.tasks[:t + 1] if self.learner.cumulative else [self.bench.tasks[t]]
        return torch.cat([k.x_train for k in tasks]), torch.cat([k.y_train for k in tasks])

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, bar) -> torch.Tensor:
        """One pass over (x, y) in shuffled minibatches; returns the mean loss, still on the device."""
        order = torch.randperm(len(y), device=y.device)
        loss_sum = torch.zeros((), device=y.device)
        n_steps = 0
        for start in range(0, len(y), self.cfg.batch_size):
            idx = order[start:start + self.cfg.batch_size]                        # [B]
            x_raw = x[idx]
            augmented = self.bench.augment(x_raw) if self.bench.augment else x_raw
            batch = self.learner.prepare(Batch(augmented, y[idx], idx, x_raw))
            loss = self.step(self.model, self.learner, batch)
            self.learner.observe(batch, loss)
            loss_sum += loss.total.detach()       # stays on the device: no sync in the step loop
            n_steps += 1
            bar.update(1)
        return loss_sum / n_steps

    def fit(self) -> None:
        cfg, bench = self.cfg, self.bench
        start_task, start_epoch = self.next
        for t in range(start_task, bench.n_tasks):
            task = bench.tasks[t]
            if start_epoch == 0:
                self.learner.begin_task(task, self.model)
            x, y = self.task_data(t)
            steps_per_epoch = -(-len(y) // cfg.batch_size)
            with tqdm(total=cfg.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch,
                      desc=f"task {t + 1}/{bench.n_tasks}", disable=not cfg.progress, leave=False) as bar:
                for epoch in range(start_epoch, cfg.epochs):
                    tic = time.perf_counter()
                    mean_loss = self.train_epoch(x, y, bar).item()                 # host sync: once per epoch
                    seconds = time.perf_counter() - tic
                    bar.set_postfix(loss=f"{mean_loss:.3f}")
                    self.emit(dict(event="epoch", task=t, epoch=epoch, loss=mean_loss, seconds=seconds,
                                   samples=len(y), samples_per_s=len(y) / seconds))
                    if epoch + 1 < cfg.epochs:           # the last epoch is followed by the task checkpoint
                        self.next = (t, epoch + 1)
                        self.checkpoint()
            self.learner.end_task(task, self.model)
            class_il, task_il = evaluate(self.model, bench, t)
            self.class_il.append(class_il)
            self.task_il.append(task_il)
            self.emit(dict(event="task", task=t, classes=task.classes, class_il=class_il, task_il=task_il,
                           buffer_bytes=self.learner.memory_bytes()))
            self.next = (t + 1, 0)
            self.write_accuracy(complete=t + 1 == bench.n_tasks)
            self.checkpoint()
            start_epoch = 0

    def write_accuracy(self, complete: bool) -> None:
        record = Record(self.rundir.path, {}, [], self.class_il, self.task_il, complete)
        self.rundir.write_json("accuracy.json", dict(class_il=self.class_il, task_il=self.task_il,
                                                     summary=record.summary, complete=complete,
                                                     tasks_done=len(self.class_il), n_tasks=self.bench.n_tasks))

    def checkpoint(self) -> None:
        self.rundir.save_checkpoint(dict(
            next=list(self.next), n_events=self.n_events, class_il=self.class_il, task_il=self.task_il,
            model=self.model.state_dict(), step=self.step.state_dict(), learner=self.learner.state_dict(),
            rng=rng_state()))

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.step.load_state_dict(state["step"])
        self.learner.load_state_dict(state["learner"])
        set_rng_state(state["rng"])
        self.class_il, self.task_il = state["class_il"], state["task_il"]
        self.next, self.n_events = tuple(state["next"]), state["n_events"]
        self.rundir.truncate_events(self.n_events)


def default_name(cfg: RunConfig) -> str:
    sparsity = f"-sp{cfg.sparsity:g}" if cfg.sparsity else ""
    return f"{cfg.benchmark}-{cfg.method}{sparsity}-s{cfg.seed}"


def _build(cfg: RunConfig, rundir_factory, callbacks) -> Trainer:
    """Config -> benchmark -> model + method -> trainer (RNGs seeded first, so builds repeat)."""
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    bench = load_benchmark(cfg, device)
    model = build_model(bench.backbone, bench.input_shape, bench.n_classes, cfg.width).to(device)
    learner = build_learner(cfg, bench.n_classes, bench.augment)
    step = build_step(cfg, PRESETS[cfg.method], model)
    return Trainer(cfg, bench, model, learner, step, rundir_factory(device), callbacks)


def run(cfg: RunConfig | dict, callbacks=()) -> Record:
    """Train and evaluate one run end to end; returns its record (also written to its run directory)."""
    cfg = RunConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg
    cfg, defaults = resolve(cfg, BENCHMARKS[cfg.benchmark].protocol)

    def new_rundir(device):
        rundir = RunDir.create(cfg.out, cfg.name, default_name(cfg))
        rundir.write_json("config.json", dict(config=cfg.to_dict(), defaults=defaults))
        rundir.write_json("env.json", environment(device))
        return rundir

    trainer = _build(cfg, new_rundir, callbacks)
    trainer.fit()
    return load_run(trainer.rundir.path)


def resume(run_dir, callbacks=(), progress: bool | None = None) -> Record:
    """Continue an interrupted run from its last checkpoint (its own config; nothing else changes)."""
    rundir = RunDir.open(run_dir)
    record = load_run(run_dir)
    if record.complete:
        raise UserError(f"{run_dir} is complete: nothing to resume")
    cfg = RunConfig.from_dict(record.config)
    if progress is not None:
        cfg = cfg.replace(progress=progress)
    trainer = _build(cfg, lambda device: rundir, callbacks)
    if (rundir.path / "checkpoint.pt").exists():
        trainer.restore(rundir.load_checkpoint(pick_device(cfg.device)))
    else:                                        # stopped before its first checkpoint: start over, same seed
        rundir.truncate_events(0)
    trainer.fit()
    return load_run(Path(run_dir))
