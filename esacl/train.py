"""The run, in data-flow order: RunConfig -> Benchmark -> model + method -> Trainer -> run directory.

    record = esacl.run(RunConfig(benchmark="split_digits", method="esacl", seed=0))
"""
import contextlib
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .config import RunConfig, UserError, resolve, usable_cores
from .data import BENCHMARKS, load_benchmark
from .flops import FlopMeter, peak_memory_bytes, sparse_model_bytes
from .methods import Batch
from .presets import PRESETS, build_learner
from .models import InputNorm, build_model
from .prune import topk_masks
from .record import Record, RunDir, environment, load_run
from .selection import build_selector
from .steps import build_step


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
    for task in bench.tasks[:upto + 1]:
        with autocast(task.x_test.device, amp):
            logits = torch.cat([model(x) for x in task.x_test.split(512)]).float()   # [M, n_classes]
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


def one_shot_prune_jump(model, bench, upto: int, sparsity: float, scope: str = "layer", amp: bool = False) -> dict:
    """Accuracy and loss before and after one-shot magnitude pruning of `model`'s prunable weights
    to `sparsity`, no retraining, batch-norm statistics as they are (the model is left as it was):
    the flatness test, and SDP's task-end projection measured on the weights as trained."""
    return jump_summary(*one_shot_pruned(model, bench, upto, sparsity, scope, amp), upto)


def one_shot_pruned(model, bench, upto: int, sparsity: float, scope: str, amp: bool) -> tuple[dict, dict]:
    """`evaluate` of the model as it is and with its prunable weights one-shot pruned to `sparsity`
    (top-k of |w|); the weights are restored afterwards. Weights at that sparsity already (SDP's at a
    task end) are not evaluated twice: one host sync to find out."""
    named = dict(model.named_parameters())
    prunable = {n: named[n] for n in model.prunable()}
    saved = {n: p.detach().clone() for n, p in prunable.items()}
    before = evaluate(model, bench, upto, amp)
    with torch.no_grad():
        for n, mask in topk_masks(prunable, sparsity, scope).items():
            prunable[n].mul_(mask)
    unchanged = all(torch.equal(prunable[n], saved[n]) for n in prunable)
    after = before if unchanged else evaluate(model, bench, upto, amp)
    with torch.no_grad():
        for n, p in prunable.items():
            p.copy_(saved[n])
    return before, after


def _mean_row(result: dict, upto: int) -> float:
    return sum(result["class_il"][:upto + 1]) / (upto + 1)


def jump_summary(before: dict, after: dict, upto: int) -> dict:
    return dict(class_il_before=_mean_row(before, upto), class_il_after=_mean_row(after, upto),
                loss_before=before["loss"], loss_after=after["loss"],
                accuracy_drop=_mean_row(before, upto) - _mean_row(after, upto))


class Trainer:
    """For each task: begin_task -> epochs of steps -> end_task -> evaluate every seen task.

    Emits one event per epoch and per task to the run directory and to `callbacks`
    (each called as `callback(event: dict)`; callbacks also get a first, unrecorded
    `{"event": "start", "run_dir": ..., "config": ...}`), and checkpoints after every epoch.
    """

    def __init__(self, cfg, bench, model, learner, step, meter, rundir: RunDir, callbacks=()):
        self.cfg, self.bench, self.model = cfg, bench, model
        self.learner, self.step, self.meter, self.rundir = learner, step, meter, rundir
        self.pruner, self.selector = step.pruner, step.selector
        self.callbacks = list(callbacks)
        self.class_il: list[list] = []
        self.task_il: list[list] = []
        self.n_events = 0
        self.next = (0, 0)                       # (task, epoch) the run continues from
        self.previous_masks: dict = {}           # masks at the last task end (for churn)
        self.previous_weights: dict = {}         # weights at the last task end (landscape interpolation)
        self.train_seconds = 0.0

    def emit(self, event: dict) -> None:
        self.rundir.append_event(event)
        self.n_events += 1
        for callback in self.callbacks:
            callback(event)

    def task_data(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The training set of task t: its own data, or the union so far for cumulative learners."""
        tasks = self.bench.tasks[:t + 1] if self.learner.cumulative else [self.bench.tasks[t]]
        return torch.cat([k.x_train for k in tasks]), torch.cat([k.y_train for k in tasks])

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, bar) -> tuple[torch.Tensor, list]:
        """One pass over the selector's pool of (x, y) in shuffled minibatches. Returns the mean loss
        and the sparsity samples (both still on the device)."""
        pool = self.selector.pool()
        order = pool[torch.randperm(len(pool), device=pool.device)]
        loss_sum = torch.zeros((), device=y.device)
        samples, n_steps = [], 0
        stop = len(order) - len(order) % self.cfg.batch_size if self.cfg.drop_last else len(order)
        for start in range(0, stop, self.cfg.batch_size):
            idx = order[start:start + self.cfg.batch_size]                        # [B] task positions
            x_raw = x[idx]
            augmented = self.bench.augment(x_raw) if self.bench.augment else x_raw
            batch = self.learner.prepare(Batch(augmented, y[idx], idx, x_raw))
            with autocast(y.device, self.cfg.amp):
                loss = self.step(self.model, self.learner, batch)
            self.learner.observe(batch, loss)
            loss_sum += loss.total.detach()       # stays on the device: no sync in the step loop
            if self.pruner.sparse and self.pruner.n_steps % self.cfg.log_every == 0:
                samples.append((self.pruner.n_steps, torch.stack([m.sum() for m in self.pruner.masks.values()])))
            n_steps += 1
            bar.update(1)
        return loss_sum / max(n_steps, 1), samples

    def steps(self, n: int) -> int:
        """Steps of one epoch over `n` examples."""
        return n // self.cfg.batch_size if self.cfg.drop_last else -(-n // self.cfg.batch_size)

    def sparsity(self) -> dict:
        """Per-layer and global sparsity of the current masks (host sync)."""
        masks = self.pruner.masks
        if not masks:
            return {"global": 0.0, "layers": {}}
        nnz = torch.stack([m.sum() for m in masks.values()]).tolist()
        sizes = [m.numel() for m in masks.values()]
        return {"global": 1 - sum(nnz) / sum(sizes), "layers": {n: 1 - k / s for n, k, s in zip(masks, nnz, sizes)}}

    def fit(self) -> None:
        cfg, bench = self.cfg, self.bench
        start_task, start_epoch = self.next
        for callback in self.callbacks:          # not a recorded event: tells live views where the run is
            callback(dict(event="start", run_dir=str(self.rundir.path), config=cfg.to_dict(),
                          task=start_task, epoch=start_epoch))
        for t in range(start_task, bench.n_tasks):
            task = bench.tasks[t]
            x, y = self.task_data(t)
            steps_per_epoch = self.steps(len(y))
            if start_epoch == 0:
                self.learner.begin_task(task, self.model)
                self.selector.begin_task(t, y)
                self.pruner.begin_task(t, cfg.epochs * steps_per_epoch)
            with tqdm(total=cfg.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch,
                      desc=f"task {t + 1}/{bench.n_tasks}", disable=not cfg.progress, leave=False) as bar:
                for epoch in range(start_epoch, cfg.epochs):
                    self.selector.begin_epoch(epoch)
                    self.pruner.begin_epoch(epoch)
                    tic = time.perf_counter()
                    mean_loss, samples = self.train_epoch(x, y, bar)
                    mean_loss = mean_loss.item()                                   # host sync: once per epoch
                    if not math.isfinite(mean_loss):
                        self.diverge(t, epoch, mean_loss)
                    seconds = time.perf_counter() - tic
                    self.train_seconds += seconds
                    n_trained = len(self.selector.pool())
                    bar.set_postfix(loss=f"{mean_loss:.3f}")
                    event = dict(event="epoch", task=t, epoch=epoch, loss=mean_loss, seconds=seconds,
                                 samples=n_trained, samples_per_s=n_trained / seconds)
                    if self.pruner.sparse:
                        sizes = torch.tensor([m.numel() for m in self.pruner.masks.values()])
                        steps = [s for s, _ in samples]
                        nnz = torch.stack([k for _, k in samples]).cpu() if samples else torch.zeros(0, len(sizes))
                        event.update(sparsity=self.sparsity()["global"], schedule=self.pruner.sparsity(),
                                     sparsity_steps=dict(step=steps, layers=(1 - nnz / sizes).tolist(),
                                                         names=list(self.pruner.masks)))
                    self.emit(event)
                    removal = self.selector.end_epoch()
                    if removal:
                        self.emit(dict(removal, task=t))
                    # The pool may have shrunk (elimination): the epochs left are shorter than planned.
                    bar.total = bar.n + (cfg.epochs - epoch - 1) * self.steps(len(self.selector.pool()))
                    bar.refresh()
                    if epoch + 1 < cfg.epochs:           # the last epoch is followed by the task checkpoint
                        self.next = (t, epoch + 1)
                        self.checkpoint()
            self.end_task(t, task, x, y)
            start_epoch = 0

    def diverge(self, t: int, epoch: int, loss: float) -> None:
        """Stop a run whose epoch loss is not finite (checked once per epoch, at the host sync that
        is there anyway): a 'diverged' event, `accuracy.json` says so, and the checkpoint stays the
        last finite epoch's. Raises `Diverged`."""
        self.emit(dict(event="diverged", task=t, epoch=epoch, loss=loss))
        self.write_accuracy(complete=False, diverged=dict(task=t, epoch=epoch))
        raise Diverged(f"{self.rundir.path} diverged: the mean training loss of task {t}, epoch {epoch} is {loss}; "
                       f"recorded as diverged, its checkpoint from the last finite epoch (a smaller lr or loss "
                       f"weight may help)", self.rundir.path)

    def end_task(self, t: int, task, x, y) -> None:
        """The final projection (with its jump), the learner's end_task, evaluation, the task's records."""
        jump = one_shot = final = None
        if self.pruner.sparse:                   # the pruning jump: no retraining follows the projection
            # As trained: one-shot projection of the weights with the running statistics training left.
            # Then the recorded projection: after batch-norm recalibration (if on), which it keeps.
            stale, pruned = one_shot_pruned(self.model, self.bench, t, self.cfg.sparsity, self.cfg.sparsity_scope,
                                            self.cfg.amp)
            before = stale
            if self.cfg.bn_recalibrate:
                self.recalibrate_bn(x, y)
                before = evaluate(self.model, self.bench, t, self.cfg.amp)
            trained = {n: p.detach().clone() for n, p in self.pruner.prunable.items()}   # transient copy
            self.pruner.project()
            unchanged = all(torch.equal(p, trained[n]) for n, p in self.pruner.prunable.items())
            final = before if unchanged else evaluate(self.model, self.bench, t, self.cfg.amp)
            jump = jump_summary(before, final, t)
            jump["as_trained"] = jump_summary(stale, pruned, t)
        elif self.cfg.one_shot_sparsity > 0:     # the flatness test: how much one-shot pruning costs this dense model
            one_shot = dict(one_shot_prune_jump(self.model, self.bench, t, self.cfg.one_shot_sparsity,
                                                self.cfg.sparsity_scope, self.cfg.amp),
                            sparsity=self.cfg.one_shot_sparsity)
        self.learner.end_task(task, self.model)  # after the projection: EWC anchors the final weights
        if final is None or self.learner.trains_at_task_end:
            final = evaluate(self.model, self.bench, t, self.cfg.amp)
        result = final
        self.class_il.append(result["class_il"])
        self.task_il.append(result["task_il"])
        event = dict(event="task", task=t, classes=task.classes, class_il=result["class_il"],
                     task_il=result["task_il"], loss=result["loss"], train_seconds=self.train_seconds)
        if jump:
            event["jump"] = jump
        if one_shot:
            event["one_shot"] = one_shot
        if self.pruner.sparse:
            event["masks"] = self.save_masks(t)
            event["sparsity"] = self.sparsity()["global"]
        selections = self.selector.task_record()
        if selections is not None:
            self.rundir.write_npz(f"selections/task_{t}.npz", {k: v.cpu().numpy() for k, v in selections.items()})
            event["selection"] = dict(kept=len(self.selector.pool()), removed=len(selections["y"]) - len(self.selector.pool()))
        if self.cfg.landscape:
            event["landscape"] = self.measure_landscape(t, task)
        event.update(self.efficiency(t))
        self.emit(event)
        self.next = (t + 1, 0)
        self.write_accuracy(complete=t + 1 == self.bench.n_tasks)
        self.checkpoint()

    @torch.no_grad()
    def recalibrate_bn(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Batch-norm running statistics recomputed at the final weights: a cumulative average over
        one pass of the task's training batches, built as in training (replay included).

        Soft-thresholded weights sit just above the threshold, so each step moves them by a large
        fraction of their size and the running averages trail behind; train-mode (batch) statistics
        do not. No weight changes; the forward passes are counted as 'bn_recalibration' FLOPs."""
        norms = [m for m in self.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None                                    # cumulative average
        pool = self.selector.pool()
        with self.meter.phase("bn_recalibration"), autocast(y.device, self.cfg.amp):
            for start in range(0, len(pool), self.cfg.batch_size):
                idx = pool[start:start + self.cfg.batch_size]
                x_raw = x[idx]
                augmented = self.bench.augment(x_raw) if self.bench.augment else x_raw
                self.learner.loss(self.model, self.learner.prepare(Batch(augmented, y[idx], idx, x_raw)))
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum

    def save_masks(self, t: int) -> dict:
        """Bit-packed masks of this task end, and per layer: sparsity, churn against the previous task."""
        masks = {n: m.cpu().numpy() for n, m in self.pruner.masks.items()}
        arrays = {}
        for n, m in masks.items():
            arrays[n + ".bits"] = np.packbits(m.ravel())
            arrays[n + ".shape"] = np.array(m.shape)
        self.rundir.write_npz(f"masks/task_{t}.npz", arrays)
        summary = {}
        for n, now in masks.items():
            row = dict(sparsity=float(1 - now.mean()))
            prev = self.previous_masks.get(n)
            if prev is not None:
                prev = prev.cpu().numpy()
                row.update(regrown=int((~prev & now).sum()), pruned=int((prev & ~now).sum()),
                           churn=float((prev != now).mean()),
                           overlap=float((prev & now).sum() / max(1, (prev | now).sum())))
            summary[n] = row
        self.previous_masks = {n: m.clone() for n, m in self.pruner.masks.items()}
        return summary

    def measure_landscape(self, t: int, task) -> dict:
        """Sharpness at this task end on a fixed batch of the task's training data (landscape/task_t.json)."""
        from .landscape import measure
        g = torch.Generator().manual_seed(self.cfg.seed)
        pick = torch.randperm(len(task.y_train), generator=g)[:self.cfg.landscape_batch].to(task.y_train.device)
        with tqdm(desc=f"sharpness {t + 1}/{self.bench.n_tasks}", unit="pass", disable=not self.cfg.progress,
                  leave=False) as bar:
            result = measure(self.model, task.x_train[pick], task.y_train[pick], rho=self.cfg.rho, asam=self.cfg.asam,
                             masks=self.pruner.masks or None, previous=self.previous_weights or None,
                             hessian_iters=self.cfg.hessian_iters, hutchinson_samples=self.cfg.hutchinson_samples,
                             slice_steps=self.cfg.slice_steps, seed=self.cfg.seed, progress=bar)
        self.rundir.write_json(f"landscape/task_{t}.json", result)
        self.previous_weights = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        return {k: result[k] for k in ("loss", "sam_gap", "top_eigenvalue", "hutchinson_trace")}

    def efficiency(self, t: int) -> dict:
        """Cumulative training FLOPs (by component and against dense SGD), memory, wall-clock."""
        flops = self.meter.snapshot()
        examples = sum(len(k.y_train) for k in self.bench.tasks[:t + 1])
        dense_sgd = 3 * self.meter.dense_forward * self.cfg.epochs * examples
        memory = sparse_model_bytes(self.model, self.pruner.masks)
        memory.update(optimizer_state=self.pruner.state_bytes(), learner_state=self.learner.memory_bytes(),
                      **peak_memory_bytes(next(self.model.parameters()).device))
        return dict(flops=flops, flops_dense_sgd=dense_sgd, flops_relative=flops["total"] / dense_sgd, memory=memory)

    def write_accuracy(self, complete: bool, diverged: dict | None = None) -> None:
        record = Record(self.rundir.path, {}, [], self.class_il, self.task_il, complete)
        extra = dict(diverged=diverged) if diverged else {}
        self.rundir.write_json("accuracy.json", dict(class_il=self.class_il, task_il=self.task_il,
                                                     summary=record.summary, complete=complete,
                                                     tasks_done=len(self.class_il), n_tasks=self.bench.n_tasks,
                                                     **extra))

    def checkpoint(self) -> None:
        self.rundir.save_checkpoint(dict(
            next=list(self.next), n_events=self.n_events, class_il=self.class_il, task_il=self.task_il,
            train_seconds=self.train_seconds, model=self.model.state_dict(), step=self.step.state_dict(),
            learner=self.learner.state_dict(), selector=self.selector.state_dict(), meter=self.meter.state_dict(),
            previous_masks=self.previous_masks, previous_weights=self.previous_weights, rng=rng_state()))

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.step.load_state_dict(state["step"])
        self.learner.load_state_dict(state["learner"])
        self.selector.load_state_dict(state["selector"])
        self.meter.load_state_dict(state["meter"])
        set_rng_state(state["rng"])
        self.class_il, self.task_il = state["class_il"], state["task_il"]
        self.previous_masks, self.previous_weights = dict(state["previous_masks"]), dict(state["previous_weights"])
        self.next, self.n_events, self.train_seconds = tuple(state["next"]), state["n_events"], state["train_seconds"]
        self.rundir.truncate_events(self.n_events)


def default_name(cfg: RunConfig) -> str:
    """benchmark-method[-spS]-sSEED, the sparsity as the run resolves it: the one name `esacl run`,
    `esacl notebook`, sweeps and `esacl paper` give the same config."""
    cfg, _ = resolve(cfg, BENCHMARKS[cfg.benchmark].protocol)
    sparsity = f"-sp{cfg.sparsity:g}" if cfg.sparsity else ""
    return f"{cfg.benchmark}-{cfg.method}{sparsity}-s{cfg.seed}"


def build(cfg: RunConfig, device: torch.device, bench=None):
    """Config -> benchmark, model, learner, step (RNGs seeded first, so builds repeat exactly).

    `bench`: an already built `data.Benchmark` to use instead of loading `cfg.benchmark` (benchmarks
    on synthetic data). The speed knobs act here: `channels_last` converts the model (and its
    InputNorm's output), `compile` compiles the model in place after the FLOPs are counted."""
    seed_everything(cfg.seed)
    bench = bench if bench is not None else load_benchmark(cfg, device)
    model = build_model(bench.backbone, bench.input_shape, bench.n_classes, cfg.width, bench.norm).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
        for module in model.modules():
            if isinstance(module, InputNorm):
                module.channels_last = True
    if not cfg.bn_bias:                          # batch-norm biases held at zero, as the official SparCL code
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.bias is not None:
                m.bias.data.zero_()
                m.bias.requires_grad_(False)
    preset = PRESETS[cfg.method]
    learner = build_learner(cfg, bench.n_classes, bench.augment)
    learner.attach(model)
    meter = FlopMeter(model, bench.input_shape, device)
    meter.track(model.prunable())
    learner.meter = meter
    step = build_step(cfg, preset, model, build_selector(preset, cfg, device), meter)
    if cfg.compile:
        # In place: parameter names, prunable() and checkpoints stay as they are. A step compiles one graph
        # per train/eval x grad x BN-statistics variant, each static and then dynamic in the batch size
        # (last batch of an epoch, IDS support sets): more than dynamo's default limit of 8 per frame,
        # past which it would silently fall back to eager.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        model.compile()
        meter.under_compile()
    return bench, model, learner, step, meter


def busy_cores_elsewhere(seconds: float = 0.1) -> float:
    """How many of the cores this process may use other processes kept busy over `seconds`: the busy
    ticks of those cores in /proc/stat less this process's own CPU time. 0.0 where there is no /proc."""
    cpus = {f"cpu{i}" for i in os.sched_getaffinity(0)}

    def sample() -> tuple[int, int]:
        busy = 0
        with open("/proc/stat") as f:
            for line in f:
                name, *ticks = line.split()
                if name in cpus:                    # user nice system idle iowait irq softirq steal
                    busy += sum(int(t) for t in ticks[:8]) - int(ticks[3]) - int(ticks[4])
        with open("/proc/self/stat") as f:          # fields 14 and 15 (utime, stime), after "(comm)"
            own = sum(int(t) for t in f.read().rsplit(")", 1)[1].split()[11:13])
        return busy, own

    try:
        (busy0, own0), start = sample(), time.monotonic()
        time.sleep(seconds)
        (busy1, own1), elapsed = sample(), time.monotonic() - start
    except (OSError, AttributeError):               # no /proc (macOS, Windows), no affinity
        return 0.0
    return max(0.0, (busy1 - busy0 - (own1 - own0)) / (os.sysconf("SC_CLK_TCK") * elapsed))


def run_threads(cfg: RunConfig, device: torch.device) -> tuple[int | None, float | None]:
    """The CPU thread count a run sets (None: leave the process's) and the busy cores it saw.

    `cfg.threads` when given; else, on a CPU with no $OMP_NUM_THREADS, one thread fewer per core
    that other processes keep busy at the start (0.1 s sample): OpenMP threads spinning against
    another process on the same core made a run 4.5-5.7x slower (benchmarks/threads.py)."""
    if cfg.threads:
        return cfg.threads, None
    if device.type != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return None, None
    others = busy_cores_elsewhere()
    if others < 0.5:
        return None, others
    return max(1, min(torch.get_num_threads(), usable_cores() - round(others))), others


@contextlib.contextmanager
def threads_of(cfg: RunConfig, device: torch.device):
    """torch's CPU thread count set for the block (`run_threads`), and restored after; yields the
    busy cores elsewhere that chose it (None: not measured)."""
    before = torch.get_num_threads()
    threads, others = run_threads(cfg, device)
    if threads:
        torch.set_num_threads(threads)
    if others is not None and threads and cfg.progress:
        print(f"other processes keep {others:.1f} of {usable_cores()} cores busy: training with {threads} "
              f"thread(s) (--threads N to choose)", file=sys.stderr)
    try:
        yield others
    finally:
        torch.set_num_threads(before)


def run(cfg: RunConfig | dict, callbacks=(), bench=None) -> Record:
    """Train and evaluate one run end to end; returns its record (also written to its run directory).
    `bench`: an already built `data.Benchmark` instead of loading `cfg.benchmark` (see `build`)."""
    cfg = RunConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg
    cfg, defaults = resolve(cfg, BENCHMARKS[cfg.benchmark].protocol)
    device = pick_device(cfg.device)
    with threads_of(cfg, device) as others:
        parts = build(cfg, device, bench)
        rundir = RunDir.create(cfg.out, cfg.name, default_name(cfg)).lock()
        try:
            rundir.write_json("config.json", dict(config=cfg.to_dict(), defaults=defaults))
            # the thread count in use, and the busy cores elsewhere that chose it
            rundir.write_json("env.json", dict(environment(device), busy_cores_elsewhere=others))
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
            raise UserError(f"{run_dir} {record.status}: resuming would repeat the same steps; "
                            f"start a new run (for instance with a smaller lr)")
        cfg = RunConfig.from_dict(record.config)
        if progress is not None:
            cfg = cfg.replace(progress=progress)
        device = pick_device(cfg.device)
        rundir.remove_temporaries()                # half-written files of the interrupted process
        with threads_of(cfg, device):
            trainer = Trainer(cfg, *build(cfg, device), rundir, callbacks)
            if (rundir.path / "checkpoint.pt").exists():
                trainer.restore(rundir.load_checkpoint(device))
            else:                                  # stopped before its first checkpoint: start over, same seed
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
