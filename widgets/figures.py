"""Plotly figures of one run: pure functions of an `esacl.Record` (its `path` locates the files).

Dashboards, reports and tests share these builders. Each returns a `plotly.graph_objects.Figure`
and never raises for missing data: a figure with nothing to show yet says so in its middle. Where
a dashboard picks one task with a slider, `task=None` gives every task in one figure with plotly's
own slider, which works in a static HTML report without a kernel.
"""

import json
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from esacl.flops import training_components
from esacl.metrics import forgetting_per_task
from esacl.rundir import Record, load_masks, load_selections

SETTINGS = {"class_il": "class-IL", "task_il": "task-IL"}
DASHES = ("solid", "dash", "dot", "dashdot")
KEPT, REMOVED = "#2a9d8f", "#e76f51"

# plotly_white's layout only: its per-trace defaults (4.3 KB of JSON) would be written into every
# figure of a notebook or report, and the traces here set what they need themselves.
TEMPLATE = go.layout.Template(layout=pio.templates["plotly_white"].layout)
TEMPLATE.layout.update(
    font=dict(size=12),
    # The title row sits below the toolbar's (plotly draws its modebar over the top 30 px of a figure);
    # a subtitle under it says what the axes do not. Titles stay short: a figure may be 440 px wide.
    title=dict(
        font=dict(size=14),
        x=0.02,
        xanchor="left",
        yref="container",
        y=1.0,
        yanchor="top",
        pad=dict(t=32),
        subtitle=dict(font=dict(size=11, color="#666")),
    ),
    margin=dict(l=60, r=20, t=96, b=50),
    height=420,
    hovermode="closest",
)


# ----------------------------------------------------------------------------- shared pieces


def figure(title: str, x: str = "", y: str = "", note: str = "", **layout) -> go.Figure:
    """An empty figure in the workbench's look: its title (at most about 45 characters), a `note`
    under it (about 70), and its axis labels."""
    fig = go.Figure()
    fig.update_layout(template=TEMPLATE, xaxis_title=x, yaxis_title=y, **layout)
    fig.update_layout(title=dict(text=title, subtitle_text=note))
    return fig


def subplots(title: str, titles: list[str], note: str = "", **kwargs) -> go.Figure:
    """One row of panels under one title. Keep panel titles short: they share the figure's width, and
    the figure gets a taller top margin so its title and the panels' never overlap."""
    kwargs.setdefault("horizontal_spacing", 0.12)
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, **kwargs)
    fig.update_layout(template=TEMPLATE, margin=dict(t=120))
    fig.update_layout(title=dict(text=title, subtitle_text=note))
    return fig


def legend_on_top(fig: go.Figure) -> go.Figure:
    """A one-row legend between the subtitle and the plot, for two or three short entries: beside the
    plot a legend takes a third of a narrow figure's width."""
    return fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0.0))


def task_heatmap(fig, z, x, y, zmax: float, colorscale: str, text: str, unit: str, hover: str) -> go.Figure:
    """`z` (rows `y`, columns `x`: tasks) as a heatmap from 0 to `zmax` on `fig`, each cell written
    with `text` (a plotly texttemplate), the first row on top, one tick per task."""
    fig.add_trace(
        go.Heatmap(
            z=z,
            x=x,
            y=y,
            zmin=0,
            zmax=zmax,
            colorscale=colorscale,
            texttemplate=text,
            colorbar=dict(title=unit),
            hovertemplate=hover + "<extra></extra>",
        )
    )
    fig.update_xaxes(dtick=1)
    fig.update_yaxes(dtick=1, autorange="reversed")
    return fig


def message(fig: go.Figure, text: str) -> go.Figure:
    """Write `text` in the middle of an empty figure (and hide its empty axes)."""
    fig.add_annotation(
        text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=13, color="#666")
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def with_task_slider(per_task: dict[int, go.Figure]) -> go.Figure:
    """One figure holding every task's traces, a slider under it showing one task at a time
    (the last task first). Takes the layout of the last task's figure; titles follow the slider."""
    tasks = sorted(per_task)
    fig = go.Figure(layout=per_task[tasks[-1]].layout)
    spans, steps = [], []
    for t in tasks:
        start = len(fig.data)
        fig.add_traces(list(per_task[t].data))
        spans.append((start, len(fig.data)))
    for t, (start, stop) in zip(tasks, spans):
        visible = [start <= i < stop for i in range(len(fig.data))]
        steps.append(
            dict(
                method="update",
                label=str(t),
                args=[{"visible": visible}, {"title.text": per_task[t].layout.title.text}],
            )
        )
    for i, trace in enumerate(fig.data):
        trace.visible = steps[-1]["args"][0]["visible"][i]
    fig.update_layout(
        sliders=[dict(active=len(steps) - 1, steps=steps, currentvalue=dict(prefix="task "), pad=dict(t=50))],
        height=(fig.layout.height or TEMPLATE.layout.height) + 100,
    )
    return fig


def task_files(record: Record, folder: str, suffix: str) -> dict[int, Path]:
    """{task: path} of RUN_DIR/folder/task_<t><suffix> for the tasks the record has finished.

    Files are written just before their task's event, so a live view (or a replay of a saved
    run's events) sees exactly the tasks its events have announced."""
    if record.path is None:
        return {}
    finished = {e["task"] for e in record.task_events}
    found = {}
    for path in (Path(record.path) / folder).glob(f"task_*{suffix}"):
        index = path.name[len("task_") : -len(suffix)]
        if index.isdigit() and int(index) in finished:
            found[int(index)] = path
    return dict(sorted(found.items()))


def _events(record: Record, kind: str) -> list[dict]:
    return [e for e in record.events if e.get("event") == kind]


# ----------------------------------------------------------------------------- accuracy


def accuracy_matrix(record: Record, setting: str = "class_il") -> go.Figure:
    """Heatmap of R[t][k] (%): rows = after training task t, columns = evaluated task k."""
    R = getattr(record, setting)
    fig = figure(
        f"{SETTINGS[setting]} accuracy (%)",
        "evaluated task k",
        "after training task t",
        note="R[t][k]: on task k after training task t",
    )
    if not R:
        return message(fig, "no task has finished yet")
    return task_heatmap(
        fig,
        R,
        list(range(len(R[0]))),
        list(range(len(R))),
        100,
        "Viridis",
        "%{z:.1f}",
        "%",
        "after task %{y}, on task %{x}: %{z:.2f}%",
    )


def forgetting_bars(record: Record) -> go.Figure:
    """Forgetting per old task (best past accuracy minus final accuracy), class-IL and task-IL."""
    fig = figure(
        "forgetting per task (points)",
        "task",
        "forgetting (points)",
        note="best past accuracy minus final accuracy",
        barmode="group",
    )
    if len(record.class_il) < 2:
        return message(fig, "forgetting needs at least two finished tasks")
    for setting, label in SETTINGS.items():
        drops = forgetting_per_task(getattr(record, setting))
        fig.add_trace(go.Bar(x=list(range(len(drops))), y=drops, name=f"{label} (mean {np.mean(drops):.2f})"))
    fig.update_xaxes(dtick=1)
    return fig


def loss_curve(record: Record) -> go.Figure:
    """Mean training loss per epoch (all tasks in order, one colour per task), and the test loss
    on all seen tasks at each task end."""
    fig = figure(
        "training loss per epoch",
        "epoch (all tasks in order)",
        "cross-entropy (nats)",
        note="×: test loss on the seen tasks at each task end",
    )
    epochs = _events(record, "epoch")
    if not epochs:
        return message(fig, "no epoch has finished yet")
    ends = {}
    for t in sorted({e["task"] for e in epochs}):
        rows = [(i, e) for i, e in enumerate(epochs) if e["task"] == t]
        ends[t] = rows[-1][0]
        fig.add_trace(
            go.Scatter(
                x=[i for i, _ in rows],
                y=[e["loss"] for _, e in rows],
                mode="lines+markers",
                name=f"task {t}",
                customdata=[[e["epoch"], e["samples_per_s"]] for _, e in rows],
                hovertemplate="epoch %{customdata[0]}: loss %{y:.4f}, %{customdata[1]:.0f} samples/s<extra></extra>",
            )
        )
    tasks = [e for e in record.task_events if e["task"] in ends]
    if tasks:
        fig.add_trace(
            go.Scatter(
                x=[ends[e["task"]] for e in tasks],
                y=[e["loss"] for e in tasks],
                mode="markers",
                marker=dict(symbol="x", size=10, color="black"),
                name="test loss, seen tasks",
            )
        )
    return fig


def accuracy_curves(record: Record, setting: str = "class_il") -> go.Figure:
    """Accuracy on each task after every later task (one line per task) and their average."""
    R = getattr(record, setting)
    fig = figure(
        f"{SETTINGS[setting]} accuracy (%) on each task",
        "after training task t",
        "accuracy (%)",
        note="as training moves on; dashed: the mean over the seen tasks",
        yaxis_range=[0, 102],
    )
    if not R:
        return message(fig, "no task has finished yet")
    for k in range(len(R)):
        fig.add_trace(
            go.Scatter(
                x=list(range(k, len(R))), y=[R[t][k] for t in range(k, len(R))], mode="lines+markers", name=f"task {k}"
            )
        )
    average = [float(np.mean(row[: t + 1])) for t, row in enumerate(R)]
    fig.add_trace(
        go.Scatter(
            x=list(range(len(R))),
            y=average,
            mode="lines",
            name="average of seen tasks",
            line=dict(color="black", dash="dash"),
        )
    )
    fig.update_xaxes(dtick=1)
    return fig


# ----------------------------------------------------------------------------- sharpness


def landscape_results(record: Record) -> dict[int, dict]:
    """{task: the landscape/task_<t>.json measurements} for the tasks that have one."""
    return {t: json.loads(p.read_text()) for t, p in task_files(record, "landscape", ".json").items()}


def sharpness_over_tasks(record: Record) -> go.Figure:
    """SAM gap, top Hessian eigenvalue and Hutchinson trace at each task end."""
    # The panel titles name the quantities (no y-axis titles): three panels share a figure 440 px wide.
    fig = subplots(
        "sharpness at each task end",
        ["SAM gap (nats)", "top Hessian eigenvalue", "Hessian trace"],
        note="on a fixed batch of the task's training data; the trace is Hutchinson's estimate",
        horizontal_spacing=0.08,
    )
    rows = [(e["task"], e["landscape"]) for e in record.task_events if "landscape" in e]
    if not rows:
        return message(fig, "no landscape measurement yet")
    tasks = [t for t, _ in rows]
    for col, key in enumerate(("sam_gap", "top_eigenvalue", "hutchinson_trace"), start=1):
        fig.add_trace(
            go.Scatter(
                x=tasks,
                y=[m[key] for _, m in rows],
                mode="lines+markers",
                showlegend=False,
                hovertemplate="task %{x}: %{y:.4g}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="task", dtick=1, row=1, col=col)
    fig.update_layout(margin=dict(l=50))
    return fig


def interpolation_curves(record: Record) -> go.Figure:
    """Loss along the straight line from the weights after task t-1 to those after task t."""
    fig = figure(
        "loss between consecutive task endpoints",
        "α (0: after task t−1, 1: after task t)",
        "loss on task t's batch (nats)",
        note="on the straight line between the two sets of weights",
    )
    curves = {t: r["interpolation"] for t, r in landscape_results(record).items() if r.get("interpolation")}
    if not curves:
        return message(fig, "no interpolation yet (needs two finished tasks with landscape measurements)")
    for t, c in curves.items():
        fig.add_trace(go.Scatter(x=c["alphas"], y=c["loss"], mode="lines+markers", name=f"task {t - 1} → {t}"))
    return fig


def loss_slice(record: Record, task: int | None = None) -> go.Figure:
    """Contour of the loss on a 2-D filter-normalised slice around the weights after `task`
    (None: every task, picked by the figure's slider)."""
    slices = {t: r["slice"] for t, r in landscape_results(record).items() if r.get("slice")}
    if task is None and len(slices) > 1:
        return with_task_slider({t: loss_slice(record, t) for t in slices})
    if task is None and not slices:
        return message(
            figure("loss around the weights", note="a 2-D filter-normalised slice"),
            "no loss slice in this run (slice_steps=0, or no landscape measurement yet)",
        )
    task = next(iter(slices)) if task is None else task
    fig = figure(
        f"loss around the weights after task {task}",
        "β (direction 2)",
        "α (direction 1)",
        note="a 2-D filter-normalised slice; ×: the weights",
    )
    s = slices.get(task)
    if s is None:
        return message(fig, f"no loss slice for task {task}")
    fig.add_trace(
        go.Contour(
            z=s["loss"],
            x=s["betas"],
            y=s["alphas"],
            colorscale="Viridis",
            colorbar=dict(title="loss (nats)"),
            contours=dict(showlabels=True),
            hovertemplate="α %{y:.2f}, β %{x:.2f}: loss %{z:.4f}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[0],
            y=[0],
            mode="markers",
            marker=dict(symbol="x", color="white", size=10),
            name="weights",
            showlegend=False,
            hoverinfo="skip",
        )
    )
    return fig


def pruning_jump(record: Record) -> go.Figure:
    """Class-IL accuracy (mean over seen tasks) before and after each task end's projection to the
    target sparsity: with the batch-norm statistics as trained, and as recorded (after batch-norm
    recalibration where that ran). For a dense run with the flatness test: before and after one-shot
    magnitude pruning, no retraining."""
    rows = [(e["task"], e["jump"]) for e in record.task_events if "jump" in e]
    dense = [(e["task"], e["one_shot"]) for e in record.task_events if "one_shot" in e]
    if dense and not rows:
        fig = figure(
            f"one-shot pruning to {dense[0][1]['sparsity']:g}: class-IL (%)",
            "task",
            "accuracy, mean over seen tasks (%)",
            note="the dense weights pruned by magnitude, no retraining",
            barmode="group",
        )
        series = [
            (lambda j: j, "class_il_before", "dense", "#457b9d"),
            (lambda j: j, "class_il_after", "one-shot pruned", "#1d3557"),
        ]
        rows = dense
    else:
        fig = figure(
            "pruning jump: class-IL (%)",
            "task",
            "accuracy, mean over seen tasks (%)",
            note="around the task-end projection to the target sparsity",
            barmode="group",
        )
        if not rows:
            return message(fig, "no pruning jump recorded (dense run, or no task finished yet)")
        as_trained = lambda j: j.get("as_trained") or {}
        series = [
            (as_trained, "class_il_before", "as trained", "#a8dadc"),
            (as_trained, "class_il_after", "as trained, projected", "#e9c46a"),
            (
                lambda j: j,
                "class_il_before",
                "recalibrated" if record.config.get("bn_recalibrate", True) else "before projection",
                "#457b9d",
            ),
            (lambda j: j, "class_il_after", "projected (recorded)", "#1d3557"),
        ]
    tasks = [t for t, _ in rows]
    for part, key, label, colour in series:
        values = [part(j).get(key) for _, j in rows]
        if any(v is not None for v in values):
            drops = [part(j).get("accuracy_drop") for _, j in rows]
            fig.add_trace(
                go.Bar(
                    x=tasks,
                    y=values,
                    name=label,
                    marker_color=colour,
                    customdata=drops,
                    hovertemplate="task %{x}: %{y:.2f}% (jump %{customdata:+.2f} points)<extra></extra>",
                )
            )
    fig.update_xaxes(dtick=1)
    return fig


def flatness_probe(record: Record, task: int | None = None) -> go.Figure:
    """The flatness probe at the end of `task` (None: the last probed): the current task's class-IL
    accuracy after one-shot pruning to each sparsity (layer and global scope), before fine-tuning and
    after each count of fine-tuning steps, against the dense weights'."""
    probes = {e["task"]: e["flatness"] for e in record.task_events if "flatness" in e}
    fig = figure(
        "flatness probe: pruned and fine-tuned",
        "sparsity",
        "current task's class-IL (%)",
        note="one-shot pruning, batch norm recalibrated; lines: fine-tuning steps",
    )
    if not probes:
        return message(fig, "no flatness probe in this run (flatness_probe=true)")
    task = max(probes) if task is None else task
    probe = probes[task]
    fig.update_layout(title_text=f"flatness probe after task {task}")
    fig.add_hline(y=probe["dense"]["class_il"], line_dash="dot", annotation_text="dense")
    for scope, dash in (("layer", "solid"), ("global", "dash"), ("own", "solid")):
        if scope not in probe:  # a sparse run probes its own projection alone
            continue
        sparsities = sorted(probe[scope], key=float)
        for steps in probe[scope][sparsities[0]]:
            fig.add_trace(
                go.Scatter(
                    x=[float(s) for s in sparsities],
                    y=[probe[scope][s][steps]["class_il"] for s in sparsities],
                    mode="lines+markers",
                    name=f"{scope}, {steps} steps",
                    line=dict(dash=dash),
                    customdata=[probe[scope][s][steps]["loss"] for s in sparsities],
                    hovertemplate="sparsity %{x}: %{y:.1f}%, training loss %{customdata:.3f}<extra></extra>",
                )
            )
    return fig


# ----------------------------------------------------------------------------- masks


def sparsity_over_steps(record: Record) -> go.Figure:
    """Per-layer sparsity of the masks, sampled every `log_every` training steps."""
    layer_scope = record.config.get("sparsity_scope") == "layer"
    fig = figure(
        "per-layer sparsity during training",
        "training step (all tasks)",
        "sparsity (fraction pruned)",
        note="every layer follows the same schedule (sparsity_scope=layer)" if layer_scope else "",
        yaxis_range=[0, 1.02],
    )
    steps, layers, names, tasks = [], [], [], []
    for e in _events(record, "epoch"):
        s = e.get("sparsity_steps")
        if s:
            steps += s["step"]
            layers += s["layers"]
            tasks += [e["task"]] * len(s["step"])
            names = s["names"]
    if not steps:
        return message(fig, "no sparsity sample yet")
    values = np.array(layers)  # [samples, layers]
    for i, name in enumerate(names):
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=values[:, i],
                mode="lines",
                name=name,
                # dashed over solid: under sparsity_scope=layer the lines coincide, and one would hide the rest
                line=dict(dash=DASHES[i % len(DASHES)], width=4 if i == 0 else 2),
                customdata=tasks,
                hovertemplate="step %{x} (task %{customdata}): %{y:.4f}<extra></extra>",
            )
        )
    return fig


def sparsity_at_task_ends(record: Record) -> go.Figure:
    """Per-layer and global sparsity of the masks saved at each task end, against the target."""
    fig = figure("sparsity at each task end", "task", "sparsity (fraction pruned)", yaxis_range=[0, 1.02])
    rows = [e for e in record.task_events if "masks" in e]
    if not rows:
        return message(fig, "no task has finished yet")
    tasks = [e["task"] for e in rows]
    for name in rows[-1]["masks"]:
        fig.add_trace(
            go.Scatter(
                x=tasks, y=[e["masks"].get(name, {}).get("sparsity") for e in rows], mode="lines+markers", name=name
            )
        )
    fig.add_trace(
        go.Scatter(
            x=tasks, y=[e["sparsity"] for e in rows], mode="lines+markers", name="global", line=dict(color="black")
        )
    )
    target = record.config.get("sparsity")
    if target:
        fig.add_hline(y=target, line_dash="dot", annotation_text=f"target {target:g}")
    fig.update_xaxes(dtick=1)
    return fig


def mask_churn(record: Record) -> go.Figure:
    """Per layer, the share of its live weights that changed since the previous task end: 1 - the
    Jaccard overlap of the two live sets. (A share of all weights would read as stable masks at 0.9
    sparsity, where at most 10% of the weights are live.)"""
    fig = figure(
        "mask churn",
        "task",
        "live weights changed (%)",
        note="live weights that changed since the previous task: 1 − Jaccard",
    )
    rows = [e for e in record.task_events if any("overlap" in m for m in e.get("masks", {}).values())]
    if not rows:
        return message(fig, "mask churn needs two finished tasks")
    tasks = [e["task"] for e in rows]
    for name in rows[-1]["masks"]:
        fig.add_trace(
            go.Scatter(
                x=tasks,
                y=[100 * (1 - e["masks"][name]["overlap"]) for e in rows],
                mode="lines+markers",
                name=name,
                customdata=[100 * e["masks"][name]["churn"] for e in rows],
                hovertemplate="task %{x}: %{y:.1f}% of the live weights, %{customdata:.1f}% of all<extra>"
                + name
                + "</extra>",
            )
        )
    fig.update_xaxes(dtick=1)
    fig.update_yaxes(range=[0, 100])
    return fig


def mask_vector(masks: dict[str, np.ndarray], layer: str | None = None) -> np.ndarray:
    """One layer's mask, or every layer's, flattened into one bool vector."""
    if layer is not None:
        return masks[layer].ravel()
    return np.concatenate([m.ravel() for m in masks.values()])


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|a ∩ b| / |a ∪ b| of two bool vectors (1 for two empty masks)."""
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def mask_overlap(record: Record, layer: str | None = None, masks: dict[int, dict] | None = None) -> go.Figure:
    """Task x task Jaccard overlap of the live weights saved at each task end (`layer`: one layer,
    None: all prunable layers). `masks` ({task: load_masks(...)}) saves re-reading the files."""
    if masks is None:
        masks = {t: load_masks(record.path, t) for t in task_files(record, "masks", ".npz")}
    where = layer or "all prunable layers"
    fig = figure("mask overlap across tasks", "task", "task", note=f"Jaccard of the live weights, {where}")
    if not masks:
        return message(fig, "no masks saved yet")
    tasks = list(masks)
    vectors = [mask_vector(masks[t], layer) for t in tasks]
    z = np.ones((len(tasks), len(tasks)))
    for i in range(len(tasks)):  # symmetric: each pair once (the masks can be large)
        for j in range(i + 1, len(tasks)):
            z[i, j] = z[j, i] = jaccard(vectors[i], vectors[j])
    return task_heatmap(
        fig, z.tolist(), tasks, tasks, 1, "Blues", "%{z:.2f}", "Jaccard", "tasks %{y} and %{x}: %{z:.3f}"
    )


def mask_changes(record: Record, task: int | None = None) -> go.Figure:
    """Weights regrown and pruned per layer between the end of task t-1 and the end of `task`
    (None: every task, picked by the figure's slider)."""
    rows = {e["task"]: e["masks"] for e in record.task_events if "masks" in e}
    if task is None:
        changed = [t for t, m in rows.items() if any("regrown" in v for v in m.values())]
        if len(changed) > 1:
            return with_task_slider({t: mask_changes(record, t) for t in changed})
        task = changed[0] if changed else max(rows, default=0)
    fig = figure(
        f"weights regrown and pruned, task {task - 1} → {task}",
        "layer",
        "weights (count)",
        note="per layer, between the two task ends' masks",
        barmode="group",
    )
    layers = rows.get(task, {})
    if not any("regrown" in v for v in layers.values()):
        return message(fig, f"task {task} has no previous task end to compare with")
    names = list(layers)
    fig.add_trace(go.Bar(x=names, y=[layers[n]["regrown"] for n in names], name="regrown", marker_color=KEPT))
    fig.add_trace(go.Bar(x=names, y=[layers[n]["pruned"] for n in names], name="pruned", marker_color=REMOVED))
    return fig


# ----------------------------------------------------------------------------- selections


def score_kind(record: Record) -> str:
    """'sharpness' when the selector ranks by the SAM loss increase, else 'forgetting' (events)."""
    from esacl.method import PRESETS

    preset = PRESETS.get(record.config.get("method"))
    if (preset is not None and preset.selector == "ddr") or record.config.get("ere_score") == "forgetting":
        return "forgetting"
    return "sharpness"


SCORE_LABEL = {
    "sharpness": "sharpness score (loss increase at w+ε, nats)",
    "forgetting": "forgetting events (at task end)",
}


def selection_split(sel: dict, epoch: int | None = None, level: str = "task", kind: str = "sharpness") -> dict:
    """Which examples of a task's selection record were kept and which removed, with their scores.

    level 'task' (redundant example elimination): at `epoch`, kept = still in the pool after it,
    removed = eliminated at its end; the score is the running mean sharpness up to that epoch (the
    elimination criterion), or the forgetting events. epoch None: the task's final pool.
    level 'batch' (support example selection): kept = in its batch's support set during `epoch`,
    removed = trained in that epoch but left out; the score is that epoch's sharpness.
    Returns {'kept', 'removed'} (index arrays, highest score first) and 'score' ([N] floats)."""
    removed_at = sel["removed_epoch"]
    epoch_score = sel["epoch_score"].astype(np.float64)  # [E, N], NaN where not scored
    if level == "batch":
        score = epoch_score[epoch]
        active = (removed_at < 0) | (removed_at >= epoch)
        kept, removed = active & sel["epoch_kept"][epoch], active & ~sel["epoch_kept"][epoch]
    else:
        if kind == "forgetting":
            score = sel["forget_count"].astype(np.float64)
        elif epoch is None:
            score = sel["running_score"].astype(np.float64)
        else:  # one score per example per epoch: the running mean
            seen = epoch_score[: epoch + 1]
            counts = np.isfinite(seen).sum(0)
            score = np.where(counts > 0, np.nansum(seen, 0) / np.maximum(counts, 1), np.nan)
        if epoch is None:
            kept, removed = removed_at < 0, removed_at >= 0
        else:
            kept, removed = (removed_at < 0) | (removed_at > epoch), removed_at == epoch
    order = lambda m: np.flatnonzero(m)[np.argsort(-np.nan_to_num(score[m], nan=-np.inf), kind="stable")]
    return dict(kept=order(kept), removed=order(removed), score=score)


LEVEL_LABELS = {"task": ("kept in the task", "eliminated"), "batch": ("in the support set", "left out of it")}


def selections_by_task(record: Record) -> dict[int, dict]:
    """{task: load_selections(...)} for the tasks that have a selection record."""
    return {t: load_selections(record.path, t) for t in task_files(record, "selections", ".npz")}


def _split_title(what: str, task: int, epoch: int | None, level: str) -> tuple[str, str]:
    """The title and the note of a kept-versus-removed figure."""
    when = "at the task end" if epoch is None else f"at epoch {epoch}"
    how = "support sets of the batches" if level == "batch" else "redundant example elimination"
    return f"{what}, task {task}", f"kept and removed {when}: {how}"


def score_histogram(
    record: Record,
    task: int | None = None,
    epoch: int | None = None,
    level: str = "task",
    selections: dict | None = None,
) -> go.Figure:
    """Histogram of the selection scores of kept vs removed examples (task None: every task's
    final pool, picked by the figure's slider)."""
    selections = selections if selections is not None else selections_by_task(record)
    if task is None and len(selections) > 1:
        return with_task_slider({t: score_histogram(record, t, None, level, selections) for t in selections})
    task = next(iter(selections), 0) if task is None else task
    kind = score_kind(record)
    title, note = _split_title("selection scores", task, epoch, level)
    fig = figure(
        title, SCORE_LABEL["sharpness" if level == "batch" else kind], "examples", note=note, barmode="overlay"
    )
    if task not in selections:
        return message(fig, f"no selection record for task {task}")
    split = selection_split(selections[task], epoch, level, kind)
    finite = split["score"][np.isfinite(split["score"])]
    # One set of 30 bins for both groups: binned apart, a small group's bars come out hair-thin.
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    bins = dict(start=low, end=high + 1e-12 * max(1.0, abs(high)), size=max(high - low, 1e-12) / 30)
    for key, label, colour in (("kept", LEVEL_LABELS[level][0], KEPT), ("removed", LEVEL_LABELS[level][1], REMOVED)):
        values = split["score"][split[key]]
        fig.add_trace(
            go.Histogram(
                x=values[np.isfinite(values)],
                name=f"{label} ({len(split[key])})",
                marker_color=colour,
                opacity=0.65,
                xbins=bins,
            )
        )
    return legend_on_top(fig)


def class_balance(
    record: Record,
    task: int | None = None,
    epoch: int | None = None,
    level: str = "task",
    selections: dict | None = None,
) -> go.Figure:
    """Examples per class, kept vs removed (task None: every task's final pool, with a slider)."""
    selections = selections if selections is not None else selections_by_task(record)
    if task is None and len(selections) > 1:
        return with_task_slider({t: class_balance(record, t, None, level, selections) for t in selections})
    task = next(iter(selections), 0) if task is None else task
    title, note = _split_title("class balance", task, epoch, level)
    fig = figure(title, "class", "examples", note=note, barmode="group")
    if task not in selections:
        return message(fig, f"no selection record for task {task}")
    sel = selections[task]
    split = selection_split(sel, epoch, level, score_kind(record))
    classes = np.unique(sel["y"])
    for key, label, colour in (("kept", LEVEL_LABELS[level][0], KEPT), ("removed", LEVEL_LABELS[level][1], REMOVED)):
        counts = [int(np.count_nonzero(sel["y"][split[key]] == c)) for c in classes]
        fig.add_trace(go.Bar(x=[str(c) for c in classes], y=counts, name=label, marker_color=colour))
    fig.update_xaxes(type="category")
    return legend_on_top(fig)


def examples_per_epoch(record: Record) -> go.Figure:
    """Examples trained in each epoch of each task: the pool shrinking under elimination."""
    fig = figure("examples trained per epoch", "epoch", "examples", note="the task's pool after elimination")
    epochs = _events(record, "epoch")
    if not epochs:
        return message(fig, "no epoch has finished yet")
    for t in sorted({e["task"] for e in epochs}):
        rows = [e for e in epochs if e["task"] == t]
        fig.add_trace(
            go.Scatter(
                x=[e["epoch"] for e in rows], y=[e["samples"] for e in rows], mode="lines+markers", name=f"task {t}"
            )
        )
    fig.update_xaxes(dtick=1)
    return fig


# ----------------------------------------------------------------------------- efficiency


def flops_by_component(record: Record) -> go.Figure:
    """Cumulative training FLOPs by component after each task (stacked), with dense SGD on the
    same examples and epochs for reference and the ratio written over each bar."""
    fig = figure(
        "cumulative training FLOPs",
        "after task",
        "FLOPs",
        note="by component; RigL's convention: 2 × MACs, backward = 2 × forward",
        barmode="stack",
    )
    rows = [e for e in record.task_events if "flops" in e]
    if not rows:
        return message(fig, "no task has finished yet")
    tasks = [e["task"] for e in rows]
    components = sorted({k for e in rows for k in training_components(e["flops"])})
    for name in components:
        fig.add_trace(
            go.Bar(
                x=tasks,
                y=[e["flops"].get(name, 0.0) for e in rows],
                name=name,
                hovertemplate="task %{x}: %{y:.3e} FLOPs<extra>" + name + "</extra>",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=tasks,
            y=[e["flops_dense_sgd"] for e in rows],
            mode="lines+markers",
            name="dense SGD (same examples, epochs)",
            line=dict(color="black", dash="dash"),
        )
    )
    fig.add_trace(
        go.Scatter(
            x=tasks,
            y=[e["flops"]["total"] for e in rows],
            mode="text",
            showlegend=False,
            text=[f"{e['flops_relative']:.2f}× SGD" for e in rows],
            textposition="top center",
            hoverinfo="skip",
        )
    )
    fig.update_xaxes(dtick=1)
    return fig


MEMORY_PARTS = [
    ("model_dense", "model, dense"),
    ("model_sparse", "model, sparse"),
    ("optimizer_state", "optimizer state"),
    ("learner_state", "learner state"),
]


def memory_breakdown(record: Record) -> go.Figure:
    """Memory after the last task: model (dense and sparse storage), optimizer and learner state,
    and the peak (process or device), in MB."""
    rows = [e for e in record.task_events if "memory" in e]
    if not rows:
        return message(figure("memory (MB)"), "no task has finished yet")
    last = rows[-1]
    memory = last["memory"]
    fig = subplots(
        f"memory after task {last['task']} (MB)", ["model and training state", "peak"], column_widths=[0.65, 0.35]
    )
    fig.add_trace(
        go.Bar(
            x=[label for _, label in MEMORY_PARTS],
            y=[memory.get(k, 0) / 1e6 for k, _ in MEMORY_PARTS],
            text=[f"{memory.get(k, 0) / 1e6:.3f}" for k, _ in MEMORY_PARTS],
            textposition="outside",
            marker_color="#457b9d",
            showlegend=False,
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(
            x=[memory.get("peak_kind", "peak")],
            y=[memory.get("peak", 0) / 1e6],
            text=[f"{memory.get('peak', 0) / 1e6:.1f}"],
            textposition="outside",
            marker_color="#1d3557",
            showlegend=False,
        ),
        row=1,
        col=2,
    )
    fig.update_yaxes(title_text="MB", row=1, col=1)
    return fig


def wall_clock(record: Record) -> go.Figure:
    """Seconds per task, stacked: training (with its throughput), the task end's work (projection,
    batch-norm recalibration, the learner's own such as EWC's Fisher or CO2L's probe, evaluation) and
    sharpness measurement (`landscape`). Runs recorded before the last two were timed show training only."""
    fig = figure(
        "wall-clock per task (s)",
        "task",
        "seconds",
        note="task end: recalibration, the learner's own work, evaluation",
    )
    rows = record.task_events
    if not rows:
        return message(fig, "no task has finished yet")
    cumulative = [e["train_seconds"] for e in rows]
    seconds = np.diff([0.0] + cumulative)
    rate = {}
    for e in _events(record, "epoch"):
        rate.setdefault(e["task"], []).append(e["samples_per_s"])
    tasks = [e["task"] for e in rows]
    fig.add_trace(
        go.Bar(
            x=tasks,
            y=seconds,
            name="training",
            marker_color="#457b9d",
            customdata=[np.mean(rate.get(e["task"], [np.nan])) for e in rows],
            hovertemplate="task %{x}: %{y:.2f} s training, %{customdata:.0f} samples/s<extra></extra>",
        )
    )
    for key, name, colour in (
        ("task_end_seconds", "task end", "#a8dadc"),  # recalibration, the learner's, evaluation
        ("landscape_seconds", "sharpness", "#e76f51"),
    ):
        if any(key in e for e in rows):
            fig.add_trace(
                go.Bar(
                    x=tasks,
                    y=[e.get(key, 0.0) for e in rows],
                    name=name,
                    marker_color=colour,
                    hovertemplate="task %{x}: %{y:.2f} s " + name + "<extra></extra>",
                )
            )
    fig.update_layout(barmode="stack")
    fig.update_xaxes(dtick=1)
    return legend_on_top(fig)
