"""ipywidgets dashboards of one run, live (through `esacl.run`'s callbacks) or from its run
directory, and a comparison across runs.

Every dashboard is an ipywidgets container: a one-line notice, its controls, and one `Output`
per figure. The figures come from `widgets.figures` and the last ones shown are kept in
`current` (slot name -> plotly Figure); `figures()` gives the static figures for reports, with
plotly's own sliders where a control would pick one task, so they need no kernel.
"""

import html
import math
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
import torch
from IPython import get_ipython
from IPython.display import clear_output, display

from esacl.config import RunConfig, UserError
from esacl.data import BENCHMARKS, load_benchmark
from esacl.method import PRESETS
from esacl.rundir import Record, load_masks, load_run, load_selections

from . import figures as F
from . import thumbnails
from .comparison import (
    METRICS,
    accuracy_against,
    comparison_bars,
    comparison_html,
    comparison_rows,
    constant_columns,
    load_records,
    overlay,
)

HEADLESS = "ESACL_HEADLESS"  # set for kernels no frontend watches (workbench.execute's executions)
WAITING = "waiting for a run: pass this dashboard's callback to esacl.run, or use from_run(run_dir)"


def _in_kernel() -> bool:
    return getattr(get_ipython(), "kernel", None) is not None


def _draw(output: W.Output, fig: go.Figure) -> None:
    # Outside a kernel (tests, scripts) there is no frontend to draw in: `current` holds the figure.
    if _in_kernel():
        with output:
            clear_output(wait=True)
            display(fig)


def _grid(children) -> W.GridBox:
    # Two columns where each gets at least 440 px (a 1400-px JupyterLab window with its file browser
    # open), one below that: a figure narrower than that cuts its titles and squeezes its plot.
    return W.GridBox(
        list(children),
        layout=W.Layout(grid_template_columns="repeat(auto-fill, minmax(440px, 1fr))", grid_gap="8px", width="100%"),
    )


def _follow(slider: W.IntSlider, options: list[int]) -> None:
    """Set a task slider's range to `options`; one that sat at its end moves to the new end, so a
    live view follows the latest task."""
    at_end = slider.value == slider.max
    top, bottom = max(options, default=0), min(options, default=0)
    slider.min = 0  # below any bound: the next two assignments are always valid
    slider.max = top
    slider.min = bottom
    if at_end or slider.value not in options:
        slider.value = top
    slider.disabled = len(options) < 2


class Dashboard(W.VBox):
    """A notice line, controls, optional extra widgets, and one Output per name in `slots`.

    `update(record)` redraws everything; a control redraws only the slots it drives."""

    slots: tuple[str, ...] = ()
    wide: tuple[str, ...] = ()  # leading slots that take a whole row each (several panels side by side)

    def __init__(self, record: Record | None = None, controls=(), extra=()):
        self.record: Record | None = None
        self.current: dict[str, go.Figure] = {}
        self.notice = W.HTML()
        self.controls = W.HBox(list(controls))
        self.outputs = {name: W.Output() for name in self.slots}
        self._syncing = False
        # Above the grid, not spanning its columns: JupyterLab's output widgets do not apply a grid-column.
        wide = [self.outputs[name] for name in self.wide]
        rest = [output for name, output in self.outputs.items() if name not in self.wide]
        super().__init__([self.notice, self.controls, *extra, *wide, _grid(rest)])
        self.only_notice(WAITING)
        if record is not None:
            self.update(record)

    @classmethod
    def from_run(cls, run_dir, **kwargs) -> "Dashboard":
        """The dashboard of a saved run directory."""
        return cls(load_run(run_dir), **kwargs)

    def update(self, record: Record) -> None:
        """Show `record` (a saved run, or a live run's state so far)."""
        self.record = record
        with self.syncing():
            self.refresh()

    def update_epoch(self, record: Record) -> None:
        """Between task ends: redraw only what epoch events change (all, unless overridden)."""
        self.update(record)

    def refresh(self) -> None:
        raise NotImplementedError

    def figures(self) -> list[go.Figure]:
        """Static figures of the whole record (every task at once), for reports: plotly's own
        sliders stand in for the controls, so they need no kernel. Empty before a record arrives."""
        return self.static_figures() if self.record is not None else []

    def static_figures(self) -> list[go.Figure]:
        raise NotImplementedError

    @contextmanager
    def syncing(self):
        # Control ranges change during a refresh; their observers must not redraw half-updated state.
        self._syncing, before = True, self._syncing
        try:
            yield
        finally:
            self._syncing = before

    def on_change(self, widget, redraw) -> None:
        """Call `redraw()` when `widget`'s value changes (not during a refresh)."""
        widget.observe(lambda _: None if self._syncing or self.record is None else redraw(), "value")

    def say(self, text: str | None) -> None:
        """One line above the figures (None: nothing)."""
        self.notice.value = f"<i>{html.escape(text)}</i>" if text else ""

    def show(self, name: str, fig: go.Figure) -> None:
        self.current[name] = fig
        self.outputs[name].layout.display = None
        _draw(self.outputs[name], fig)

    def hide(self, *names: str) -> None:
        for name in names or self.slots:
            self.current.pop(name, None)
            self.outputs[name].layout.display = "none"
            if _in_kernel():
                self.outputs[name].clear_output()

    def only_notice(self, text: str) -> None:
        """Show `text` and nothing else (a run this dashboard has nothing for)."""
        self.say(text)
        self.hide()
        self.controls.layout.display = "none"


# ----------------------------------------------------------------------------- one run


class AccuracyDashboard(Dashboard):
    """The task x task accuracy matrix (class-IL / task-IL toggle), forgetting per task, the
    training loss per epoch and the accuracy on each task after every later task."""

    slots = ("matrix", "curves", "forgetting", "loss")

    def __init__(self, record: Record | None = None):
        self.setting = W.ToggleButtons(
            options=[(label, key) for key, label in F.SETTINGS.items()], value="class_il", description="accuracy"
        )
        super().__init__(record, [self.setting])
        self.on_change(self.setting, self.show_setting)

    def refresh(self) -> None:
        r = self.record
        if not r.events:
            return self.only_notice("the run has started: waiting for its first epoch")
        self.say(None)
        self.controls.layout.display = None
        self.show_setting()
        self.show("forgetting", F.forgetting_bars(r))
        self.show("loss", F.loss_curve(r))

    def update_epoch(self, record: Record) -> None:
        self.record = record
        self.say(None)
        self.show("loss", F.loss_curve(record))

    def show_setting(self) -> None:
        self.show("matrix", F.accuracy_matrix(self.record, self.setting.value))
        self.show("curves", F.accuracy_curves(self.record, self.setting.value))

    def static_figures(self) -> list[go.Figure]:
        r = self.record
        return [
            F.accuracy_matrix(r, "class_il"),
            F.accuracy_matrix(r, "task_il"),
            F.accuracy_curves(r, "class_il"),
            F.accuracy_curves(r, "task_il"),
            F.forgetting_bars(r),
            F.loss_curve(r),
        ]


class SharpnessDashboard(Dashboard):
    """Per task: SAM gap, top Hessian eigenvalue, Hutchinson trace; the 1-D interpolation curves;
    the 2-D loss slice of the task on the slider; the pruning jump of sparse runs; the flatness probe
    of the last task end where the run has one."""

    slots = ("sharpness", "interpolation", "slice", "jump", "probe")
    wide = ("sharpness",)

    def __init__(self, record: Record | None = None):
        self.task = W.IntSlider(description="slice of task", min=0, max=0, value=0, continuous_update=False)
        super().__init__(record, [self.task])
        self.on_change(self.task, lambda: self.show("slice", F.loss_slice(self.record, self.task.value)))

    def _slice_tasks(self) -> list[int]:
        return [t for t, res in F.landscape_results(self.record).items() if res.get("slice")]

    def refresh(self) -> None:
        r = self.record
        measured = any("landscape" in e for e in r.task_events)
        jumps = any("jump" in e or "one_shot" in e for e in r.task_events)
        probed = any("flatness" in e for e in r.task_events)
        if not measured:
            line = "no landscape measurements in this run (run with landscape=True to measure sharpness)"
            if not jumps and not probed:
                return self.only_notice(line)
            self.say(line)
            self.hide("sharpness", "interpolation", "slice")
            self.controls.layout.display = "none"
        else:
            self.say(None)
            slices = self._slice_tasks()
            self.controls.layout.display = None if slices else "none"
            _follow(self.task, slices)
            self.show("sharpness", F.sharpness_over_tasks(r))
            self.show("interpolation", F.interpolation_curves(r))
            if slices:
                self.show("slice", F.loss_slice(r, self.task.value))
            else:
                self.hide("slice")
        if jumps:
            self.show("jump", F.pruning_jump(r))
        else:
            self.hide("jump")
        if probed:
            self.show("probe", F.flatness_probe(r))
        else:
            self.hide("probe")

    def static_figures(self) -> list[go.Figure]:
        r = self.record
        figs = []
        if any("landscape" in e for e in r.task_events):
            figs += [F.sharpness_over_tasks(r), F.interpolation_curves(r)]
            figs += [F.loss_slice(r)] if self._slice_tasks() else []
        if any("jump" in e or "one_shot" in e for e in r.task_events):
            figs.append(F.pruning_jump(r))
        if any("flatness" in e for e in r.task_events):
            figs.append(F.flatness_probe(r))
        return figs


def _is_dense(record: Record) -> bool:
    preset = PRESETS.get(record.config.get("method"))
    return not record.config.get("sparsity") or (preset is not None and not preset.sparse)


class MaskDashboard(Dashboard):
    """Regrown vs pruned weights per layer at the task on the slider and the task x task Jaccard
    overlap of the masks (all layers or one, on the dropdown): the two the controls drive, first, next
    to them; then mask churn between tasks and per-layer sparsity over training steps and at task ends."""

    slots = ("changes", "overlap", "churn", "steps", "ends")

    def __init__(self, record: Record | None = None):
        self.task = W.IntSlider(description="task", min=0, max=0, value=0, continuous_update=False)
        # "" stands for all layers: a Dropdown whose value is None shows no selection at all
        self.layer = W.Dropdown(description="overlap of", options=[("all prunable layers", "")], value="")
        self._masks: dict[int, dict] = {}
        self._masks_of = None
        super().__init__(record, [self.task, self.layer])
        self.on_change(self.task, lambda: self.show("changes", F.mask_changes(self.record, self.task.value)))
        self.on_change(self.layer, self.show_overlap)

    def masks(self) -> dict[int, dict]:
        """{task: masks} of the record's run directory, each file read once."""
        if self._masks_of != self.record.path:
            self._masks, self._masks_of = {}, self.record.path
        for t in F.task_files(self.record, "masks", ".npz"):
            if t not in self._masks:
                self._masks[t] = load_masks(self.record.path, t)
        return self._masks

    def update_epoch(self, record: Record) -> None:
        self.record = record
        if not _is_dense(record):
            self.show("steps", F.sparsity_over_steps(record))

    def show_overlap(self) -> None:
        self.show("overlap", F.mask_overlap(self.record, self.layer.value or None, self.masks()))

    def refresh(self) -> None:
        r = self.record
        if _is_dense(r):
            return self.only_notice(f"this run is dense (method {r.config.get('method')}): it has no masks")
        self.say(None if r.task_events else "masks are saved at each task end; sparsity below is sampled live")
        self.controls.layout.display = None
        masks = self.masks()
        names = list(next(iter(masks.values()))) if masks else []
        self.layer.options = [("all prunable layers", "")] + [(n, n) for n in names]
        # the slider drives the regrown / pruned plot: tasks with a previous task end to compare with
        _follow(self.task, [e["task"] for e in r.task_events if "masks" in e and e["task"] > 0])
        self.show("steps", F.sparsity_over_steps(r))
        self.show("ends", F.sparsity_at_task_ends(r))
        self.show("churn", F.mask_churn(r))
        self.show_overlap()
        self.show("changes", F.mask_changes(r, self.task.value))

    def static_figures(self) -> list[go.Figure]:
        r = self.record
        if _is_dense(r):
            return []
        return [
            F.sparsity_over_steps(r),
            F.sparsity_at_task_ends(r),
            F.mask_churn(r),
            F.mask_overlap(r, None, self.masks()),
            F.mask_changes(r),
        ]


class SelectionDashboard(Dashboard):
    """For the task and epoch on the sliders: the kept and removed examples as thumbnails with
    their scores (task-level elimination, or the batch-level support set), the score histogram and
    the class balance of kept vs removed; and the examples trained per epoch."""

    slots = ("histogram", "balance", "pool")

    def __init__(self, record: Record | None = None, max_thumbnails: int = 48):
        self.max_thumbnails = max_thumbnails
        self.task = W.IntSlider(description="task", min=0, max=0, value=0, continuous_update=False)
        self.epoch = W.IntSlider(description="epoch", min=0, max=0, value=0, continuous_update=False)
        self.level = W.ToggleButtons(
            options=[("elimination (task)", "task"), ("support set (batch)", "batch")],
            value="task",
            description="selection",
        )
        self.thumbnails = W.HTML()
        self._selections: dict[int, dict] = {}
        self._selections_of = None
        self._bench, self._bench_of, self._bench_error = None, None, None
        super().__init__(record, [self.task, self.epoch, self.level], [self.thumbnails])
        for control in (self.task, self.epoch, self.level):
            self.on_change(control, self.show_selection)

    def selections(self) -> dict[int, dict]:
        """{task: load_selections(...)} of the record's run directory, each file read once."""
        if self._selections_of != self.record.path:
            self._selections, self._selections_of = {}, self.record.path
        for t in F.task_files(self.record, "selections", ".npz"):
            if t not in self._selections:
                self._selections[t] = load_selections(self.record.path, t)
        return self._selections

    def images(self, task: int, y: np.ndarray):
        """The task's training images as numpy ([N, C, H, W]), or None (with the reason kept in
        `_bench_error`) where the benchmark cannot be loaded or does not line up with the record."""
        key = (
            self.record.config.get("benchmark"),
            self.record.config.get("seed"),
            self.record.config.get("class_order"),
            self.record.config.get("n_tasks"),
        )
        if key != self._bench_of:
            self._bench, self._bench_of, self._bench_error = None, key, None
            try:
                cfg = RunConfig.from_dict(self.record.config)
                self._bench = load_benchmark(cfg, torch.device("cpu"))
            except UserError as err:
                self._bench_error = f"images unavailable: {err}"
        if self._bench is None:
            return None
        tasks = self._bench.tasks
        if task >= len(tasks) or not np.array_equal(tasks[task].y_train.numpy(), y):
            self._bench_error = "images unavailable: the benchmark's examples do not line up with the record"
            return None
        return tasks[task].x_train.numpy()

    def thumbnails_html(self, task: int, epoch: int | None, level: str) -> str:
        """Kept and removed examples of `task` at `epoch` as captioned image grids (highest scores first)."""
        sel = self.selections()[task]
        kind = F.score_kind(self.record)
        split = F.selection_split(sel, epoch, level, kind)
        images = self.images(task, sel["y"])
        score_name = "sharpness" if level == "batch" or kind == "sharpness" else "forgetting events"
        parts = [] if images is not None else [f"<i>{html.escape(self._bench_error or '')}</i>"]
        for key, label in zip(("kept", "removed"), F.LEVEL_LABELS[level]):
            idx = split[key]
            shown = idx[: self.max_thumbnails]
            title = f"{label}: {len(idx)} examples"
            if len(shown) < len(idx):
                title += f" (the {len(shown)} with the highest {score_name} shown)"
            captions = [
                f"{'–' if math.isnan(split['score'][i]) else format(split['score'][i], '.3g')}<br>class {sel['y'][i]}"
                for i in shown
            ]
            pictures = [images[i] for i in shown] if images is not None else [None] * len(shown)
            parts.append(thumbnails.grid_html(title, pictures, captions))
        return "".join(parts)

    def static_thumbnails(self) -> str:
        """The kept and removed examples of every task after its last epoch (task-level selection),
        as HTML: what the task slider shows live, all at once for a report."""
        parts = []
        for t, sel in self.selections().items():
            last = sel["epoch_score"].shape[0] - 1
            parts.append(f"<h4>task {t}, after epoch {last}</h4>" + self.thumbnails_html(t, last, "task"))
        return "".join(parts)

    def show_selection(self) -> None:
        t, e, level = self.task.value, self.epoch.value, self.level.value
        self.thumbnails.value = self.thumbnails_html(t, e, level)
        self.show("histogram", F.score_histogram(self.record, t, e, level, self.selections()))
        self.show("balance", F.class_balance(self.record, t, e, level, self.selections()))

    def refresh(self) -> None:
        r = self.record
        preset = PRESETS.get(r.config.get("method"))
        if preset is not None and preset.selector == "none":
            return self.only_notice(
                f"this run selects no examples (method {r.config.get('method')}): "
                f"every example of a task is trained in every epoch"
            )
        selections = self.selections()
        if not selections:
            self.thumbnails.value = ""
            return self.only_notice("no selection record yet (one is written at each task end)")
        self.say(None)
        self.controls.layout.display = None
        _follow(self.task, list(selections))
        sel = selections[self.task.value]
        _follow(self.epoch, list(range(sel["epoch_score"].shape[0])))
        self.level.layout.display = None if sel["epoch_kept"].any() else "none"
        if not sel["epoch_kept"].any():
            self.level.value = "task"
        self.show_selection()
        self.show("pool", F.examples_per_epoch(r))

    def static_figures(self) -> list[go.Figure]:
        r = self.record
        preset = PRESETS.get(r.config.get("method"))
        selections = self.selections()
        if (preset is not None and preset.selector == "none") or not selections:
            return []
        return [
            F.score_histogram(r, selections=selections),
            F.class_balance(r, selections=selections),
            F.examples_per_epoch(r),
        ]


class EfficiencyDashboard(Dashboard):
    """Cumulative training FLOPs by component (against dense SGD), the memory breakdown and the
    training wall-clock per task."""

    slots = ("flops", "memory", "wall_clock")
    wide = ("flops", "memory")

    def refresh(self) -> None:
        r = self.record
        if not r.task_events:
            return self.only_notice("cost is recorded at each task end: waiting for the first")
        self.say(None)
        for name, fig in zip(self.slots, self.static_figures()):
            self.show(name, fig)

    def static_figures(self) -> list[go.Figure]:
        r = self.record
        return [F.flops_by_component(r), F.memory_breakdown(r), F.wall_clock(r)]


class RunDashboard(W.Tab):
    """One run's dashboards as tabs: Accuracy, Sharpness, Masks, Selections, Efficiency.

        dash = RunDashboard()                                # empty; fills live
        record = esacl.run(cfg, callbacks=[dash.callback])
        dash = RunDashboard.from_run(run_dir)                # the same from a saved run

    Live, the view redraws at most every `min_interval` seconds on epoch events, always on a task's
    last epoch (the task end's measurements follow, with no event for seconds) and at a task end:
    after a burst the latest state is drawn. `redraws` counts the redraws. Headless (`live=False`; by default when $ESACL_HEADLESS
    is set, as `esacl notebook`, sweeps and reports set it for their kernels, which no frontend
    watches), it draws once, at the last task end (or when the run diverges)."""

    def __init__(
        self,
        record: Record | None = None,
        min_interval: float = 1.0,
        max_thumbnails: int = 48,
        live: bool | None = None,
    ):
        self.accuracy = AccuracyDashboard()
        self.sharpness = SharpnessDashboard()
        self.masks = MaskDashboard()
        self.selections = SelectionDashboard(max_thumbnails=max_thumbnails)
        self.efficiency = EfficiencyDashboard()
        self.dashboards = {
            "Accuracy": self.accuracy,
            "Sharpness": self.sharpness,
            "Masks": self.masks,
            "Selections": self.selections,
            "Efficiency": self.efficiency,
        }
        super().__init__(children=list(self.dashboards.values()), titles=list(self.dashboards))
        self.min_interval = min_interval
        self.live = not os.environ.get(HEADLESS) if live is None else live
        self.record: Record | None = None
        self.run_dir: Path | None = None
        self.config: dict = {}
        self.events: list[dict] = []
        self.redraws = 0
        self._last_draw = -math.inf
        self._stale: set[str] = set()  # tabs to redraw when selected
        self.observe(lambda _: self._draw_stale(), "selected_index")
        if record is not None:
            self.update(record)

    @classmethod
    def from_run(cls, run_dir, **kwargs) -> "RunDashboard":
        """The dashboards of a saved run directory."""
        return cls(load_run(run_dir), **kwargs)

    def update(self, record: Record) -> None:
        """Show `record` on every dashboard. In a kernel, a live view draws the tab on screen and the
        others when they are selected: a frontend shows one tab, and drawing all five at every task end
        took seconds of a short run."""
        self.record = record
        self._redraw_tabs(list(self.dashboards), lambda dash: dash.update(record))

    def _redraw_tabs(self, titles: list[str], draw) -> None:
        lazy = self.live and _in_kernel()
        shown = list(self.dashboards)[self.selected_index or 0]
        for title in titles:
            if lazy and title != shown:
                self._stale.add(title)
            else:
                draw(self.dashboards[title])
                self._stale.discard(title)
        self._drawn()

    def _draw_stale(self) -> None:
        """Bring the tabs not drawn since the record moved on up to date (each draws the whole record)."""
        shown = list(self.dashboards)[self.selected_index or 0]
        if self.record is not None and shown in self._stale:
            self.dashboards[shown].update(self.record)
            self._stale.discard(shown)

    def _drawn(self) -> None:
        self.redraws += 1
        self._last_draw = time.monotonic()

    def callback(self, event: dict) -> None:
        """Pass to `esacl.run(..., callbacks=[...])`: collects the run's events and redraws (epoch
        events throttled, task ends always). A dashboard error is warned about, never raised into
        the training loop."""
        kind = event.get("event")
        if kind == "checkpoint":  # not a recorded event: nothing to show
            return
        if kind == "start":
            self.run_dir, self.config = Path(event["run_dir"]), dict(event["config"])
            # A resumed run has events already: those its checkpoint had seen.
            resumed = (event.get("task", 0), event.get("epoch", 0)) != (0, 0)
            self.events = load_run(self.run_dir).events if resumed else []
        else:
            self.events.append(event)
        if not self.live:
            last = kind == "task" and event.get("task") == (self._n_tasks() or 0) - 1
            if last or kind == "diverged":
                self._redraw(whole=True)
            return
        due = time.monotonic() - self._last_draw >= self.min_interval
        # A task's last epoch always draws: the task end's work (sharpness, recalibration) follows, during
        # which no event comes, so a skipped last epoch would stay undrawn for seconds.
        last_epoch = kind == "epoch" and event.get("epoch") == self.config.get("epochs", 0) - 1
        if kind not in ("start", "task") and not due and not last_epoch:
            return
        self._redraw(whole=kind in ("start", "task"))

    def update_epoch(self) -> None:
        """Between task ends only the loss and the sparsity move: redraw those."""
        self.record = record = self.live_record()
        self._redraw_tabs(["Accuracy", "Masks"], lambda dash: dash.update_epoch(record))

    def _redraw(self, whole: bool) -> None:
        try:
            if whole:
                self.update(self.live_record())
            else:
                self.update_epoch()
        except Exception as err:  # a plotting bug must not stop a training run
            warnings.warn(f"dashboard update failed: {type(err).__name__}: {err}", RuntimeWarning, stacklevel=2)

    def _n_tasks(self) -> int | None:
        spec = BENCHMARKS.get(self.config.get("benchmark"))
        return self.config.get("n_tasks") or (spec.n_tasks if spec else None)

    def live_record(self) -> Record:
        """The run so far, from the events the callback has seen (files are read from `run_dir`)."""
        tasks = [e for e in self.events if e.get("event") == "task"]
        return Record(
            self.run_dir,
            self.config,
            [],
            [e["class_il"] for e in tasks],
            [e["task_il"] for e in tasks],
            len(tasks) == self._n_tasks(),
            list(self.events),
        )

    def figures(self) -> dict[str, list[go.Figure]]:
        """Static figures per dashboard (tab title -> figures), for reports; no kernel needed."""
        for title in list(self._stale):
            self.dashboards[title].update(self.record)
        self._stale.clear()
        return {title: dash.figures() for title, dash in self.dashboards.items()}

    def static(self) -> dict[str, list]:
        """What a report shows of this run, per dashboard: its static figures (plotly's own sliders and
        legends stand in for the controls: they work without a kernel) and, for selections, the kept
        and removed examples of every task as HTML thumbnails. Each figure once; sections with
        nothing to show are left out."""
        parts = self.figures()
        if self.record is not None and parts.get("Selections"):
            parts["Selections"] = parts["Selections"] + [self.selections.static_thumbnails()]
        return {title: items for title, items in parts.items() if items}


# ----------------------------------------------------------------------------- several runs


class ComparisonView(W.VBox):
    """Runs compared: mean ± std over seeds per benchmark, method and sparsity, as `esacl compare`'s
    table (with the pruning jump beside) and figures with error bars (accuracy against FLOPs and
    sparsity, curves overlaid, a bar chart per metric). `runs`: run directories, folders of them, or Records."""

    def __init__(self, runs):
        self.records = load_records(runs)
        self.rows = comparison_rows(self.records)
        self.table = W.HTML(self.table_html())
        self.current = self.figures()
        outputs = [W.Output() for _ in self.current]
        super().__init__([self.table, _grid(outputs)])
        for output, fig in zip(outputs, self.current):
            _draw(output, fig)

    def table_html(self) -> str:
        """The comparison table as HTML."""
        return comparison_html(self.rows)

    def figures(self) -> list[go.Figure]:
        """Class-IL and task-IL against training FLOPs and against sparsity (SparCL-X and EsaCL-X
        paired), the runs' accuracy, sharpness and sparsity curves overlaid, then one bar chart per
        metric that some run has (error bars: std over seeds)."""
        cost = [accuracy_against(self.rows, key, x) for x in ("flops", "sparsity") for key in ("class_il", "task_il")]
        curves = [overlay(self.records, what) for what in ("accuracy", "sharpness", "sparsity")]
        same = constant_columns(self.rows)
        return (
            cost
            + curves
            + [
                comparison_bars(self.rows, key)
                for key, column, _ in METRICS
                if any(not math.isnan(row[key][0]) for row in self.rows) and column not in same
            ]
        )
