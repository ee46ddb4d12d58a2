"""The Recorder: writes a run directory from the trainer's events, as they happen.

It is the trainer's first callback; the dashboards are the others. Per event:

    epoch, removal      appended to metrics.jsonl
    task                the task end's masks (bit-packed, with churn against the last task end),
                        selections, sharpness (config key 'landscape'), FLOPs and memory so far: files
                        under masks/, selections/, landscape/ and their summaries in the event, which
                        is then appended
    checkpoint          checkpoint.pt: the trainer's state, the recorder's, where a resume continues;
                        after a task end, accuracy.json first (so the two agree on the tasks done)
    diverged            appended; accuracy.json says so
"""

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from .flops import peak_memory_bytes, sparse_model_bytes
from .prune import mask_sparsity
from .rundir import Record, RunDir


class Recorder:
    """Writes `rundir` from the events of `trainer` (whose model, method and meter it reads at a task
    end). What it adds to a task's event (masks, selection, landscape, flops, memory) is there for
    the callbacks after it."""

    def __init__(self, rundir: RunDir, trainer):
        self.rundir, self.trainer = rundir, trainer
        self.n_events = 0
        self.class_il: list[list] = []
        self.task_il: list[list] = []
        self.previous_masks: dict = {}  # masks at the last task end (for churn)
        self.previous_weights: dict = {}  # weights at the last task end (landscape interpolation)

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "start":
            return
        if kind == "checkpoint":
            if event["epoch"] == 0:  # after a task end (its event reached every callback)
                self.write_accuracy(complete=len(self.class_il) == self.trainer.bench.n_tasks)
            self.checkpoint((event["task"], event["epoch"]))
            return
        if kind == "task":
            self.measure_task_end(event)
        self.rundir.append_event(event)
        self.n_events += 1
        if kind == "task":
            self.class_il.append(event["class_il"])
            self.task_il.append(event["task_il"])
        elif kind == "diverged":
            self.write_accuracy(complete=False, diverged=dict(task=event["task"], epoch=event["epoch"]))

    def measure_task_end(self, event: dict) -> None:
        """Masks, selections, sharpness, efficiency of the task end that `event` reports (added to it)."""
        t, method = event["task"], self.trainer.method
        if method.rule.sparse:
            event["masks"] = self.save_masks(t)
            event["sparsity"] = mask_sparsity(method.masks)["global"]
        selections = method.selector.task_record()
        if selections is not None:
            self.rundir.write_npz(f"selections/task_{t}.npz", {k: v.cpu().numpy() for k, v in selections.items()})
            event["selection"] = dict(kept=len(method.pool()), removed=len(selections["y"]) - len(method.pool()))
        if self.trainer.cfg.landscape:
            tic = time.perf_counter()
            event["landscape"] = self.measure_landscape(t)
            event["landscape_seconds"] = time.perf_counter() - tic
        event.update(self.efficiency(t))

    def save_masks(self, t: int) -> dict:
        """Bit-packed masks of this task end, and per layer: sparsity, churn against the previous task."""
        masks = {n: m.cpu().numpy() for n, m in self.trainer.method.masks.items()}
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
                row.update(
                    regrown=int((~prev & now).sum()),
                    pruned=int((prev & ~now).sum()),
                    churn=float((prev != now).mean()),
                    overlap=float((prev & now).sum() / max(1, (prev | now).sum())),
                )
            summary[n] = row
        self.previous_masks = {n: m.clone() for n, m in self.trainer.method.masks.items()}
        return summary

    def measure_landscape(self, t: int) -> dict:
        """Sharpness at this task end on a fixed batch of the task's training data (landscape/task_t.json)."""
        from .landscape import measure

        cfg, model, task = self.trainer.cfg, self.trainer.model, self.trainer.bench.tasks[t]
        g = torch.Generator().manual_seed(cfg.seed)
        pick = torch.randperm(len(task.y_train), generator=g)[: cfg.landscape_batch].to(task.y_train.device)
        with tqdm(
            desc=f"sharpness {t + 1}/{self.trainer.bench.n_tasks}", unit="pass", disable=not cfg.progress, leave=False
        ) as bar:
            result = measure(
                model,
                task.x_train[pick],
                task.y_train[pick],
                rho=cfg.rho,
                asam=cfg.asam,
                masks=self.trainer.method.masks or None,
                previous=self.previous_weights or None,
                hessian_iters=cfg.hessian_iters,
                hutchinson_samples=cfg.hutchinson_samples,
                slice_steps=cfg.slice_steps,
                seed=cfg.seed,
                progress=bar,
            )
        self.rundir.write_json(f"landscape/task_{t}.json", result)
        self.previous_weights = {n: p.detach().clone() for n, p in model.named_parameters()}
        return {k: result[k] for k in ("loss", "sam_gap", "top_eigenvalue", "hutchinson_trace")}

    def efficiency(self, t: int) -> dict:
        """Cumulative training FLOPs (by component and against dense SGD), memory, wall-clock."""
        cfg, bench, model, meter = self.trainer.cfg, self.trainer.bench, self.trainer.model, self.trainer.meter
        flops = meter.snapshot()
        examples = sum(len(k.y_train) for k in bench.tasks[: t + 1])
        dense_sgd = 3 * meter.dense_forward * cfg.epochs * examples
        memory = sparse_model_bytes(model, self.trainer.method.masks)
        memory.update(**self.trainer.method.state_bytes(), **peak_memory_bytes(next(model.parameters()).device))
        return dict(flops=flops, flops_dense_sgd=dense_sgd, flops_relative=flops["total"] / dense_sgd, memory=memory)

    def write_accuracy(self, complete: bool, diverged: dict | None = None) -> None:
        record = Record(self.rundir.path, {}, [], self.class_il, self.task_il, complete)
        extra = dict(diverged=diverged) if diverged else {}
        self.rundir.write_json(
            "accuracy.json",
            dict(
                class_il=self.class_il,
                task_il=self.task_il,
                summary=record.summary,
                complete=complete,
                tasks_done=len(self.class_il),
                n_tasks=self.trainer.bench.n_tasks,
                **extra,
            ),
        )

    def checkpoint(self, next: tuple[int, int]) -> None:
        """checkpoint.pt: a resume continues at (task, epoch) `next`."""
        self.rundir.save_checkpoint(
            dict(
                next=list(next),
                n_events=self.n_events,
                class_il=self.class_il,
                task_il=self.task_il,
                previous_masks=self.previous_masks,
                previous_weights=self.previous_weights,
                **self.trainer.state_dict(),
            )
        )

    def load_state_dict(self, state: dict) -> None:
        """The recorder's part of a checkpoint; events written after it are dropped."""
        self.class_il, self.task_il = state["class_il"], state["task_il"]
        self.previous_masks, self.previous_weights = dict(state["previous_masks"]), dict(state["previous_weights"])
        self.n_events = state["n_events"]
        self.rundir.truncate_events(self.n_events)
