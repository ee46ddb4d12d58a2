"""Across runs: mean +- std over seeds per (benchmark, method, sparsity, settings), as rows, an HTML
table and bar charts with error bars. Grouped and ordered by `esacl.compare.group_runs`, with runs
still training counted by the tasks they finished."""
import html
import math
from pathlib import Path

import plotly.graph_objects as go

from esacl import metrics
from esacl.compare import differing, group_runs
from esacl.record import Record, load_run

from .figures import figure, message

# (key, column title, axis title, value of one record)
METRICS = [
    ("class_il", "class-IL (%)", "class-IL accuracy (%)", lambda r: r.summary["class_il"]["average"]),
    ("task_il", "task-IL (%)", "task-IL accuracy (%)", lambda r: r.summary["task_il"]["average"]),
    ("forgetting", "forgetting (pts)", "class-IL forgetting (points)", lambda r: r.summary["class_il"]["forgetting"]),
    ("flops", "FLOPs × SGD", "training FLOPs relative to dense SGD", lambda r: r.efficiency.get("flops_relative")),
    ("jump", "jump (pts)", "pruning jump at the last task (points)", lambda r: r.efficiency.get("jump_last")),
]


def find_runs(paths) -> list[Path]:
    """Run directories among `paths`: each path is a run directory (it has a config.json) or a
    folder whose sub-folders are (a sweep's output)."""
    runs = []
    for path in map(Path, paths):
        if (path / "config.json").is_file():
            runs.append(path)
        else:
            runs += sorted(p for p in path.iterdir() if (p / "config.json").is_file()) if path.is_dir() else []
    return runs


def comparison_rows(records: list[Record]) -> list[dict]:
    """One row per (benchmark, method, sparsity, settings) with at least one finished task (diverged
    runs left out): 'benchmark', 'method', 'sparsity', 'settings' (how it differs from its
    namesakes), 'seeds', 'runs' and, per metric key, a (mean, std) pair."""
    groups = group_runs(records, include=lambda r: bool(r.class_il) and not r.diverged)
    labels = differing(groups)
    rows = []
    for key, runs in groups.items():
        row = dict(benchmark=key[0], method=key[1], sparsity=key[2], settings=labels[key], seeds=len(runs),
                   runs=[str(r.path) for r in runs])
        for metric, _, _, value in METRICS:
            row[metric] = metrics.mean_std([value(r) for r in runs])
        rows.append(row)
    return rows


def _cell(pair, seeds: int) -> str:
    mean, std = pair
    return "–" if math.isnan(mean) else f"{mean:.2f}" if seeds == 1 else f"{mean:.2f} ± {std:.2f}"


def comparison_html(rows: list[dict]) -> str:
    """The rows as an HTML table (mean ± std over seeds)."""
    head = ["benchmark", "method", "sparsity", "seeds"] + [title for _, title, _, _ in METRICS]
    style = 'style="padding:2px 8px;text-align:right;border-bottom:1px solid #ddd"'
    lines = ["<table style=\"border-collapse:collapse;font-size:12px\">",
             "<tr>" + "".join(f"<th {style}>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        method = row["method"] + (f" ({row['settings']})" if row["settings"] else "")
        cells = [row["benchmark"], method, f"{row['sparsity']:.2f}", str(row["seeds"])]
        cells += [_cell(row[key], row["seeds"]) for key, _, _, _ in METRICS]
        lines.append("<tr>" + "".join(f"<td {style}>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return "\n".join(lines + ["</table>"])


def comparison_bars(rows: list[dict], key: str) -> go.Figure:
    """Bars of one metric per method and sparsity (one colour per benchmark), error bars = std over seeds."""
    _, _, axis, _ = next(m for m in METRICS if m[0] == key)
    fig = figure(f"{axis}: mean ± std over seeds", "method (target sparsity)", axis, barmode="group")
    shown = [r for r in rows if not math.isnan(r[key][0])]
    if not shown:
        return message(fig, "no run has this metric")
    for bench in dict.fromkeys(r["benchmark"] for r in shown):
        part = [r for r in shown if r["benchmark"] == bench]
        labels = [f"{r['method']} ({r['sparsity']:g}{', ' + r['settings'] if r['settings'] else ''})" for r in part]
        fig.add_trace(go.Bar(x=labels, y=[r[key][0] for r in part],
                             error_y=dict(type="data", array=[r[key][1] for r in part]), name=bench,
                             customdata=[[r[key][1], r["seeds"]] for r in part],
                             hovertemplate="%{x}: %{y:.3f} ± %{customdata[0]:.3f} "
                                           "(%{customdata[1]} seeds)<extra></extra>"))
    return fig


def load_records(runs) -> list[Record]:
    """Records from run directories, folders of them, or Records (kept as they are)."""
    if isinstance(runs, (str, Path, Record)):
        runs = [runs]
    records = [r for r in runs if isinstance(r, Record)]
    paths = [r for r in runs if not isinstance(r, Record)]
    return records + [load_run(p) for p in find_runs(paths)]
