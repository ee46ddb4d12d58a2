"""Across runs: figures of `esacl.compare.summary_rows` (mean +- std over seeds per benchmark, method,
sparsity and settings), and its table in HTML, with runs still training counted by the tasks they finished."""

import html
import math
import statistics
from pathlib import Path

import plotly.colors
import plotly.graph_objects as go

from esacl.compare import COLUMNS, VERDICT_METRICS, Versus, cell, html_table, summary_rows, table_cells, table_versus
from esacl.method import PRESETS
from esacl.rundir import Record, find_runs, load_run

from .figures import figure, message, subplots

# The table's columns: esacl compare's, and the pruning jump at the last task.
TABLE = COLUMNS + [("jump", "jump (pts)", lambda r: r.efficiency.get("jump_last"), ".2f")]

# (key of a row's (mean, std) pair, its column in TABLE, axis title) of the metrics the figures show.
METRICS = [
    ("class_il", "class_il", "class-IL accuracy (%)"),
    ("task_il", "task_il", "task-IL accuracy (%)"),
    ("forgetting", "forgetting", "class-IL forgetting (points)"),
    ("flops", "flops_x_sgd", "training FLOPs relative to dense SGD"),
    ("jump", "jump", "pruning jump at the last task (points)"),
]


def comparison_rows(records: list[Record]) -> list[dict]:
    """`esacl.compare.summary_rows` over every run with at least one finished task (runs still training
    count by the tasks they finished; diverged runs left out), with TABLE's columns, and for the
    figures: per metric key a (mean, std) pair and 'published' ({'source', 'class_il', 'task_il'} or None)."""
    rows = summary_rows(records, include=lambda r: bool(r.class_il) and not r.diverged, columns=TABLE)
    for row in rows:
        for key, column, _ in METRICS:
            row[key] = (row[f"{column}_mean"], row[f"{column}_std"])
        row["published"] = (
            None
            if row["published_source"] is None
            else dict(
                source=row["published_source"],
                **{il: [row[f"published_{il}_mean"], row[f"published_{il}_std"]] for il in ("class_il", "task_il")},
            )
        )
    return rows


PALETTE = plotly.colors.qualitative.D3  # one colour per base learner

# Marker per kind of preset: dense, SparCL, EsaCL (SDP, with or without IDS), another sparsifier.
SYMBOLS = {"dense": "circle", "sparcl": "square", "esacl": "diamond", "sparse": "triangle-up"}


def kind_and_learner(method: str) -> tuple[str, str]:
    """(kind, base learner) of a preset: ('sparcl', 'er') for sparcl-er, ('esacl', 'er') for esacl-er,
    ('esacl', 'sgd') for esacl, ('sparse', 'sgd') for grda, ('dense', 'sgd') for sam or sgd."""
    preset = PRESETS.get(method)
    if preset is None:
        return "dense", method
    learner = "sgd" if preset.learner == "finetune" else preset.learner
    kind = {"sparcl": "sparcl", "sdp": "esacl"}.get(preset.sparsifier, "sparse" if preset.sparse else "dense")
    return kind, learner


def accuracy_against(rows: list[dict], key: str = "class_il", x: str = "flops") -> go.Figure:
    """Accuracy against training FLOPs (x='flops', × dense SGD, log axis) or target sparsity
    (x='sparsity'): one point per method, sparsity and settings, error bars = std over seeds. Colour:
    the base learner; marker: ○ dense, □ SparCL, ◇ EsaCL, △ another sparsifier; a dotted line joins
    SparCL-X to EsaCL-X at the same sparsity (with IDS: esacl-X, not an ablation); a hollow marker at a
    point's place is its published result (esacl/anchors.json)."""
    axis = next(m[2] for m in METRICS if m[0] == key)
    x_title = "training FLOPs (× dense SGD, log scale)" if x == "flops" else "target sparsity"
    fig = figure(
        f"{axis} against {'training FLOPs' if x == 'flops' else 'sparsity'} "
        "(○ dense, □ SparCL, ◇ EsaCL, △ other sparse; mean ± std over seeds)",
        x_title,
        axis,
    )
    where = (lambda r: r["flops"]) if x == "flops" else (lambda r: (r["sparsity"], 0.0))
    shown = [r for r in rows if not math.isnan(r[key][0]) and not math.isnan(where(r)[0])]
    if not shown:
        return message(fig, "no run has this metric")
    if x == "flops":
        fig.update_xaxes(type="log")
    label = lambda r: (
        f"{r['method']} ({r['sparsity']:g}{', ' + r['settings'] if r['settings'] else ''}"
        f"{', ' + r['benchmark'] if len({s['benchmark'] for s in shown}) > 1 else ''})"
    )
    symbol = lambda r: SYMBOLS[kind_and_learner(r["method"])[0]]
    learners = list(dict.fromkeys(kind_and_learner(r["method"])[1] for r in shown))
    colours = dict(zip(learners, PALETTE * (len(learners) // len(PALETTE) + 1)))
    for learner in learners:
        part = [r for r in shown if kind_and_learner(r["method"])[1] == learner]
        fig.add_trace(
            go.Scatter(
                x=[where(r)[0] for r in part],
                y=[r[key][0] for r in part],
                mode="markers",
                name=learner,
                error_x=dict(type="data", array=[where(r)[1] for r in part], thickness=1),
                error_y=dict(type="data", array=[r[key][1] for r in part], thickness=1),
                marker=dict(size=11, color=colours[learner], symbol=[symbol(r) for r in part]),
                text=[label(r) for r in part],
                customdata=[[r[key][1], r["seeds"]] for r in part],
                hovertemplate="%{text}: %{y:.2f} ± %{customdata[0]:.2f} at %{x:.3g} (%{customdata[1]} seeds)"
                "<extra></extra>",
            )
        )
        for esacl in (
            r
            for r in part
            if PRESETS.get(r["method"])
            and PRESETS[r["method"]].selector == "ids"
            and kind_and_learner(r["method"])[0] == "esacl"
        ):
            sparcl = [
                r
                for r in part
                if kind_and_learner(r["method"])[0] == "sparcl"
                and (r["benchmark"], r["sparsity"]) == (esacl["benchmark"], esacl["sparsity"])
            ]
            for other in sparcl:  # SparCL-X -> EsaCL-X: the paper's comparison
                fig.add_trace(
                    go.Scatter(
                        x=[where(other)[0], where(esacl)[0]],
                        y=[other[key][0], esacl[key][0]],
                        mode="lines",
                        line=dict(color=colours[learner], dash="dot", width=1.5),
                        showlegend=False,
                        hoverinfo="skip",
                    )
                )
        published = [r for r in part if r.get("published") and r["published"].get(key)]
        if published:
            fig.add_trace(
                go.Scatter(
                    x=[where(r)[0] for r in published],
                    y=[r["published"][key][0] for r in published],
                    mode="markers",
                    name=f"{learner}, published",
                    error_y=dict(type="data", array=[r["published"][key][1] for r in published], thickness=1),
                    marker=dict(
                        size=11,
                        color="white",
                        line=dict(color=colours[learner], width=2),
                        symbol=[symbol(r) for r in published],
                    ),
                    text=[f"{label(r)}, published by {r['published']['source']}" for r in published],
                    hovertemplate="%{text}: %{y:.2f}<extra></extra>",
                )
            )
    return fig


def constant_columns(rows: list[dict], columns=TABLE) -> list[str]:
    """The names of `columns` whose value is the same in every row that has one (or in none): nothing
    to compare. The pruning jump is 0 in every sparse row where no run's projection moved a weight (the
    main job's settings, by construction: docs/method.md) and missing in dense rows: left out."""
    value = lambda r, n: tuple(None if math.isnan(v) else round(v, 9) for v in (r[f"{n}_mean"], r[f"{n}_std"]))
    missing = (None, None)
    return [n for n, *_ in columns if len(rows) > 1 and len({value(r, n) for r in rows} - {missing}) <= 1]


def comparison_html(rows: list[dict]) -> str:
    """The rows as `esacl compare`'s table (mean +- std over seeds), with the jump column, in HTML; a
    column that is the same in every row is left out, and a line under the table says so."""
    same = constant_columns(rows)
    table = html_table(*table_cells(rows, [c for c in TABLE if c[0] not in same]))
    if not same:
        return table

    def first(n):  # the value of the first row that has one
        return next((r[f"{n}_mean"] for r in rows if not math.isnan(r[f"{n}_mean"])), math.nan)

    said = ", ".join(
        f"{head} is {cell(first(n), None, f)}"
        + ("" if all(not math.isnan(r[f"{n}_mean"]) for r in rows) else " where measured")
        for n, head, _, f in TABLE
        if n in same
    )
    return table + f"<p>Left out, the same in every row: {html.escape(said)}.</p>"


# Marker colour per verdict word (esacl.stats.verdicts).
VERDICT_COLOURS = {
    "better": "#2ca02c",
    "worse": "#d62728",
    "equivalent": "#1f77b4",
    "undecided": "#7f7f7f",
    "n/a": "#c7c7c7",
}


def verdict_forest(records: list[Record]) -> go.Figure:
    """The paper's question as a picture: per base learner (and benchmark) and metric, EsaCL-X minus
    SparCL-X paired over seeds, its mean and 95% interval, coloured by the verdict (Holm over the table's
    cells, `esacl.compare.table_versus`); the equivalence margin shaded around 0."""
    pairs = [(key, v) for key, v in table_versus(records).items() if isinstance(v, Versus) and v.words]
    fig = figure(
        "EsaCL-X minus SparCL-X, paired over seeds: mean and 95% interval (shaded: the equivalence margin)",
        "accuracy difference (points; > 0: EsaCL ahead)",
    )
    if not pairs:
        return message(fig, "no base learner has EsaCL-X and SparCL-X on two or more common seeds")
    several = len({bench for (bench, _, _), _ in pairs}) > 1
    rows = []  # (label, verdict)
    for (bench, learner, _), v in pairs:
        for il in VERDICT_METRICS:
            where = f"{bench} " if several else ""
            rows.append((f"{where}{learner}{v.at} {il.replace('_il', '-IL')} ({len(v.seeds)} seeds)", v.words[il]))
    margin = rows[0][1].cell.margin
    fig.add_vrect(x0=-margin, x1=margin, fillcolor="#1f77b4", opacity=0.12, line_width=0, layer="below")
    fig.add_vline(x=0, line=dict(color="#444", width=1))
    for word, colour in VERDICT_COLOURS.items():
        part = [(label, v) for label, v in rows if v.word == word]
        if not part:
            continue
        means = [v.cell.mean for _, v in part]
        intervals = [v.cell.interval() for _, v in part]
        fig.add_trace(
            go.Scatter(
                x=means,
                y=[label for label, _ in part],
                mode="markers",
                name=word,
                marker=dict(size=11, color=colour, symbol="diamond"),
                error_x=dict(
                    type="data",
                    symmetric=False,
                    array=[high - m for m, (_, high) in zip(means, intervals)],
                    arrayminus=[m - low for m, (low, _) in zip(means, intervals)],
                    thickness=2,
                ),
                text=[html.escape(v.text()) for _, v in part],
                hovertemplate="%{y}: %{text}<extra></extra>",
            )
        )
    order = [label for label, _ in rows]
    fig.update_yaxes(categoryorder="array", categoryarray=order[::-1], title_text="")
    fig.update_layout(height=160 + 34 * len(rows), legend_title_text="verdict")
    return fig


def frontier_figure(records: list[Record], metric: str = "class_il") -> go.Figure:
    """The paper's question at matched cost, per base learner: accuracy against training FLOPs of every
    cost point of EsaCL-X (◇) and SparCL-X (□), mean and 95% interval over seeds, each method's frontier
    joined by a line (hollow: off the frontier), the matched cost dotted (SparCL-X's default cost, or
    the nearest both reach); the panel's title gives the verdict there (`esacl.frontier.matched`)."""
    from scipy import stats

    from esacl.frontier import frontier, matched, points

    name = metric.replace("_il", "-IL")
    judged = {(v.benchmark, v.learner): v for v in matched(records)}
    if not judged:
        return message(figure(f"{name} against training FLOPs"), "no base learner has both EsaCL-X and SparCL-X points")
    keys = list(judged)
    titles = []
    for bench, learner in keys:
        v = judged[bench, learner]
        word = v.words[metric].word if metric in v.words else "no verdict" if v.cells[metric] is None else "n=1"
        titles.append(f"{learner}{' (' + bench + ')' if len({b for b, _ in keys}) > 1 else ''}: {word}")
    fig = subplots(f"{name} against training FLOPs: EsaCL-X ◇ and SparCL-X □ (mean and 95% interval)", titles)
    for col, (bench, learner) in enumerate(keys, start=1):
        for family, colour, symbol in (("sparcl", "#ff7f0e", "square"), ("esacl", "#1f77b4", "diamond")):
            pts = points(records, f"{family}-{learner}", bench)
            front = frontier(pts, metric)
            means = [p.mean(metric) for p in pts]
            half = []  # the 95% t-interval's half-width of each point's mean
            for p in pts:
                values = list(p.accuracy[metric].values())
                n = len(values)
                half.append(stats.t.ppf(0.975, n - 1) * statistics.stdev(values) / n**0.5 if n > 1 else 0.0)
            fig.add_trace(
                go.Scatter(
                    x=[p.flops for p in front],
                    y=[p.mean(metric) for p in front],
                    mode="lines",
                    line=dict(color=colour, width=2),
                    name=f"{family} frontier",
                    legendgroup=family,
                    showlegend=col == 1,
                    hoverinfo="skip",
                ),
                row=1,
                col=col,
            )
            fig.add_trace(
                go.Scatter(
                    x=[p.flops for p in pts],
                    y=means,
                    mode="markers",
                    name=family,
                    legendgroup=family,
                    showlegend=False,
                    error_y=dict(type="data", array=half, thickness=1),
                    marker=dict(
                        size=10,
                        color=colour,
                        symbol=[symbol if p in front else f"{symbol}-open" for p in pts],
                    ),
                    text=[f"{p.method}: {p.label()} ({len(p.accuracy[metric])} seeds)" for p in pts],
                    hovertemplate="%{text}<br>%{y:.2f} at %{x:.3f}x SGD<extra></extra>",
                ),
                row=1,
                col=col,
            )
        v = judged[bench, learner]
        at = v.cost if v.cost is not None else v.default  # where the two are compared (SparCL's default cost)
        fig.add_vline(x=at, line=dict(color="#444", dash="dot", width=1), row=1, col=col)
        fig.update_xaxes(type="log", title_text="FLOPs × dense SGD", row=1, col=col)
    fig.update_yaxes(title_text=f"{name} (%)", row=1, col=1)
    return fig


def comparison_bars(rows: list[dict], key: str) -> go.Figure:
    """Bars of one metric per method and sparsity (one colour per benchmark), error bars = std over seeds."""
    axis = next(m[2] for m in METRICS if m[0] == key)
    fig = figure(f"{axis}: mean ± std over seeds", "method (target sparsity)", axis, barmode="group")
    shown = [r for r in rows if not math.isnan(r[key][0])]
    if not shown:
        return message(fig, "no run has this metric")
    for bench in dict.fromkeys(r["benchmark"] for r in shown):
        part = [r for r in shown if r["benchmark"] == bench]
        labels = [f"{r['method']} ({r['sparsity']:g}{', ' + r['settings'] if r['settings'] else ''})" for r in part]
        fig.add_trace(
            go.Bar(
                x=labels,
                y=[r[key][0] for r in part],
                error_y=dict(type="data", array=[r[key][1] for r in part]),
                name=bench,
                customdata=[[r[key][1], r["seeds"]] for r in part],
                hovertemplate="%{x}: %{y:.3f} ± %{customdata[0]:.3f} (%{customdata[1]} seeds)<extra></extra>",
            )
        )
    return fig


def overlay(records: list[Record], what: str) -> go.Figure:
    """Curves of several runs in one plot, one line per run (a legend entry per method: clicking it
    shows or hides all its seeds, also in an exported report). what: 'accuracy' (average class-IL
    over the tasks seen, after each task), 'sharpness' (top Hessian eigenvalue at each task end, runs
    that measured it) or 'sparsity' (global sparsity at each epoch end, sparse runs)."""
    titles = dict(
        accuracy=("average class-IL accuracy over the tasks seen", "after task", "class-IL (%)"),
        sharpness=("top Hessian eigenvalue at each task end", "task", "top eigenvalue"),
        sparsity=("global sparsity of the prunable layers at each epoch end", "epoch (all tasks)", "sparsity"),
    )
    fig = figure(*titles[what])
    seen = set()
    for r in records:
        if what == "accuracy":
            x = list(range(len(r.class_il)))
            y = [sum(row[: t + 1]) / (t + 1) for t, row in enumerate(r.class_il)]
        elif what == "sharpness":
            points = [(e["task"], e["landscape"]["top_eigenvalue"]) for e in r.task_events if "landscape" in e]
            x, y = [t for t, _ in points], [v for _, v in points]
        else:
            epochs = [e for e in r.events if e.get("event") == "epoch" and "sparsity" in e]
            x, y = list(range(len(epochs))), [e["sparsity"] for e in epochs]
        if not y:
            continue
        method = r.config["method"]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines+markers",
                name=method,
                legendgroup=method,
                showlegend=method not in seen,
                text=[Path(r.path).name] * len(x),
                hovertemplate="%{text}: %{y:.3g} at %{x}<extra></extra>",
            )
        )
        seen.add(method)
    if not seen:
        return message(
            fig,
            {"accuracy": "no finished task yet", "sharpness": "no run measured sharpness", "sparsity": "no sparse run"}[
                what
            ],
        )
    return fig


def load_records(runs) -> list[Record]:
    """Records from run directories, folders of them, or Records (kept as they are)."""
    if isinstance(runs, (str, Path, Record)):
        runs = [runs]
    records = [r for r in runs if isinstance(r, Record)]
    paths = [r for r in runs if not isinstance(r, Record)]
    return records + [load_run(p) for p in find_runs(paths)]
