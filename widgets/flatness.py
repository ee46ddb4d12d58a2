"""The flatness experiment (esacl.flatness) as figures and a dashboard: does a flatter minimum lose less
to pruning, and does SDP's ascent make retraining unnecessary?

    rows = esacl.flatness.plan(...); records = [...]            # the experiment's runs, in plan order
    dash = widgets.FlatnessDashboard(rows, records)            # controls: measure, scope, sparsity
    dash.figures()                                             # static figures for an exported page

Every figure is a pure function of `esacl.flatness.groups(rows, records)` ({(part, variant, mode):
{seed: Record}}) and shows means over seeds with 95% t-intervals (`esacl.stats`).
"""

import html
import os
import statistics

import ipywidgets as W
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy import stats as sstats

from esacl.flatness import (
    MEASURES,
    PRUNED_MODES,
    SCOPES,
    SDP_MODES,
    SDP_VARIANTS,
    SPARSITIES,
    probes_of,
    groups,
    results,
    run_effects,
    run_sharpness,
)
from esacl.stats import paired

from .comparison import VERDICT_COLOURS
from .dashboards import HEADLESS, _draw, _grid
from .figures import TEMPLATE, figure, legend_on_top, message, subplots

COLOURS = {"sgd": "#e76f51", "sam": "#2a9d8f", "asam": "#264653", "sdp": "#2a9d8f", "no ascent": "#e76f51"}
VERDICT = {**VERDICT_COLOURS, "none": VERDICT_COLOURS["n/a"]}  # 'none': nothing to test
LABELS = {
    "drop": ("accuracy drop", "points lost by pruning (current task, class-IL)"),
    "recovery": ("recovery", "points 100 fine-tuning steps win back"),
    "loss_rise": ("loss rise", "training loss gained by pruning (nats)"),
}


def _mean_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval over seeds (the interval of a one-sample cell: values against 0)."""
    cell = paired(dict(enumerate(values)), dict.fromkeys(range(len(values)), 0.0))
    return (cell.mean, *cell.interval())


def _band(fig, x, mean, low, high, name, colour, **where) -> None:
    """A line with its interval as a shaded band (one legend entry)."""
    fig.add_trace(
        go.Scatter(
            x=list(x) + list(x)[::-1],
            y=list(high) + list(low)[::-1],
            fill="toself",
            mode="lines",
            fillcolor=colour,
            opacity=0.15,
            line=dict(width=0),
            hoverinfo="skip",
            showlegend=False,
            legendgroup=name,
        ),
        **where,
    )
    fig.add_trace(
        go.Scatter(x=list(x), y=list(mean), mode="lines+markers", name=name, legendgroup=name, line=dict(color=colour)),
        **where,
    )


def effect_against_sparsity(runs: dict, measure: str = "drop") -> go.Figure:
    """Dense SGD, SAM and ASAM pruned one-shot: `measure` against sparsity per scope (panels), the
    mean over seeds of each run's mean over its task ends, with a 95% interval."""
    title, axis = LABELS[measure]
    fig = subplots(f"{title} against sparsity", list(SCOPES), note=f"{axis}; mean and 95% interval over seeds")
    found = [m for m in PRUNED_MODES if ("pruned", "-", m) in runs]
    if not found:
        return message(fig, "no dense runs with the flatness probe (part 'pruned')")
    for col, scope in enumerate(SCOPES, start=1):
        for mode in found:
            effects = [run_effects(r) for r in runs["pruned", "-", mode].values()]
            rows = [_mean_interval([e[scope, s, measure] for e in effects]) for s in SPARSITIES]
            _band(fig, SPARSITIES, *zip(*rows), mode, COLOURS[mode], row=1, col=col)
        fig.update_xaxes(title_text="sparsity", row=1, col=col)
    for trace in fig.data[2 * len(found) :]:
        trace.showlegend = False  # one legend entry per mode
    fig.update_yaxes(title_text=title, row=1, col=1)
    return fig  # the legend beside: above, it would run into the panels' titles


def _path(record, scope: str, sparsity: str | None) -> list[float] | None:
    """A run's loss along the pruning direction, the mean over its task ends (sparsity None: the one
    its probes cut to, a sparse run's own); None where its probes did not record it."""
    paths = [p["path"][scope] for p in probes_of(record) if scope in p.get("path", {})]
    if not paths:
        return None
    key = sparsity or next(iter(paths[0]))
    return [statistics.fmean(column) for column in zip(*(p[key] for p in paths))]


def pruning_path(runs: dict, scope: str = "layer", sparsity: float = 0.9, part: str = "pruned", variant: str = "-"):
    """The training loss along the pruning direction, from the weights (0) to their pruned projection
    (1): per mode, the mean over seeds of each run's mean path over its task ends, with a 95% interval.
    A sparse run's path goes to its own projection (`part` 'sdp', scope 'own')."""
    modes = PRUNED_MODES if part == "pruned" else SDP_MODES
    where = f"{scope} {sparsity:g}" if part == "pruned" else f"variant {variant}"
    fig = figure(
        f"loss along the pruning direction, {where}",
        "alpha: 0 the weights, 1 pruned",
        "training loss (nats)",
        note="batch statistics at each point; mean and 95% interval over seeds",
    )
    drawn = False
    for mode in modes:
        recs = runs.get((part, variant, mode), {})
        cut = (scope, str(sparsity)) if part == "pruned" else ("own", None)
        paths = [p for r in recs.values() if (p := _path(r, *cut))]
        if not paths:
            continue
        alphas = [i / (len(paths[0]) - 1) for i in range(len(paths[0]))]
        rows = [_mean_interval(list(column)) for column in zip(*paths)]
        _band(fig, alphas, *zip(*rows), mode, COLOURS[mode])
        drawn = True
    if not drawn:
        return message(fig, "no probe recorded the loss along the pruning direction")
    return legend_on_top(fig)


def sharpness_against_effect(runs: dict, scope: str = "layer", sparsity: float = 0.9, measure: str = "drop"):
    """Does flatter mean a smaller drop? Each dense run as a point: its mean top Hessian eigenvalue at
    the task ends (before pruning) against its `measure`; Spearman's rank correlation over all runs."""
    title, _ = LABELS[measure]
    fig = figure(f"sharpness against {title}, {scope} {sparsity:g}", "top Hessian eigenvalue", title)
    xs, ys = [], []
    for mode in PRUNED_MODES:
        recs = runs.get(("pruned", "-", mode), {})
        points = [(run_sharpness(r), run_effects(r)[scope, sparsity, measure], seed) for seed, r in recs.items()]
        points = [p for p in points if p[0] is not None]
        if not points:
            continue
        x, y, seeds = zip(*points)
        xs += x
        ys += y
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="markers",
                name=mode,
                marker=dict(color=COLOURS[mode], size=9),
                text=[f"seed {s}" for s in seeds],
                hovertemplate="%{text}: eigenvalue %{x:.1f}, %{y:.2f}<extra>" + mode + "</extra>",
            )
        )
    if len(xs) < 3:
        return message(fig, "too few dense runs with the flatness probe to relate sharpness and the drop")
    rho, p = sstats.spearmanr(xs, ys)
    fig.update_xaxes(type="log")
    fig.update_layout(title_subtitle_text=f"one point per run; Spearman rho {rho:+.2f} (p={p:.3f}, {len(xs)} runs)")
    return legend_on_top(fig)


def sdp_verdicts(found: dict) -> go.Figure:
    """SDP with and without its ascent (`esacl.flatness.results(...)['sdp']`): without minus with per
    variant, in accuracy (drop, recovery) and in training loss, and each one's retraining gain against 0,
    one panel above the other; mean and 95% interval, coloured by the verdict (Holm over the differences,
    and over the gains)."""
    panels_titles = ["jump and recovery (points)", "loss rise at the projection (nats)", "retraining gain (points)"]
    fig = make_subplots(rows=3, cols=1, subplot_titles=panels_titles, vertical_spacing=0.12)  # one above the other
    fig.update_layout(template=TEMPLATE, margin=dict(t=120, l=140))
    fig.update_layout(
        title=dict(
            text="SDP without its ascent minus with it",
            subtitle_text="> 0 in the first two: the ascent lost less, as the claim predicts; last: 100 steps",
        )
    )
    sdp = found.get("sdp")
    if not sdp:
        return message(fig, "no SDP runs with the flatness probe (part 'sdp')")
    panels = (
        [(f"{c['variant']} {c['measure']}", c) for c in sdp["differences"] if c["measure"] != "loss_rise"],
        [(c["variant"], c) for c in sdp["differences"] if c["measure"] == "loss_rise"],
        [(f"{c['variant']} {c['mode']}", c) for c in sdp["gains"]],
    )
    seen = set()
    for row, cells in enumerate(panels, start=1):
        for label, c in cells:
            word = c["word"]
            fig.add_trace(
                go.Scatter(
                    x=[c["mean"]],
                    y=[label],
                    mode="markers",
                    name=word,
                    legendgroup=word,
                    showlegend=word not in seen,
                    marker=dict(size=10, color=VERDICT.get(word, "#999"), symbol="diamond"),
                    error_x=dict(
                        type="data",
                        symmetric=False,
                        array=[c.get("high", c["mean"]) - c["mean"]],
                        arrayminus=[c["mean"] - c.get("low", c["mean"])],
                    ),
                    text=[html.escape(c["text"])],
                    hovertemplate="%{y}: %{text}<extra></extra>",
                ),
                row=row,
                col=1,
            )
            seen.add(word)
        fig.add_vline(x=0, line=dict(color="#444", width=1), row=row, col=1)
        fig.update_yaxes(autorange="reversed", row=row, col=1)
    fig.update_layout(height=220 + 30 * sum(len(p) for p in panels), legend_title_text="verdict")
    return fig


class FlatnessDashboard(W.VBox):
    """The flatness experiment: an effect against sparsity per training mode (with intervals), the loss
    along the pruning direction, the top Hessian eigenvalue against the drop, and SDP with and without
    its ascent. Controls pick the measure, the scope and the sparsity. `rows`, `records`: `plan`'s rows
    and their records, in the same order (a missing run: None)."""

    def __init__(self, rows: list[tuple], records: list):
        self.runs = groups(rows, records)
        self.found = results(rows, records)
        narrow = dict(button_width="110px")
        self.measure = W.ToggleButtons(options=[(LABELS[m][0], m) for m in MEASURES], value="drop", style=narrow)
        self.scope = W.ToggleButtons(options=list(SCOPES), value="layer", description="scope", style=narrow)
        self.sparsity = W.Dropdown(options=list(SPARSITIES), value=0.9, description="sparsity")
        self.outputs = {name: W.Output() for name in ("effect", "path", "sharpness", "sdp", "sdp_path")}
        self.current: dict[str, go.Figure] = {}
        controls = W.HBox([self.measure, self.scope, self.sparsity])
        # Full rows for the figures of several panels: in a grid cell their panels would be too narrow.
        wide = [self.outputs["effect"], self.outputs["sdp"]]
        rest = [self.outputs[n] for n in ("path", "sharpness", "sdp_path")]
        super().__init__([controls, *wide, _grid(rest)])
        for control in (self.measure, self.scope, self.sparsity):
            control.observe(lambda _: self.redraw(), "value")
        self.redraw()
        self.show("sdp", sdp_verdicts(self.found))
        self.show("sdp_path", pruning_path(self.runs, part="sdp", variant="gap"))

    def show(self, name: str, fig: go.Figure) -> None:
        self.current[name] = fig
        _draw(self.outputs[name], fig)

    def redraw(self) -> None:
        """The figures the controls drive."""
        scope, sparsity, measure = self.scope.value, self.sparsity.value, self.measure.value
        self.show("effect", effect_against_sparsity(self.runs, measure))
        self.show("path", pruning_path(self.runs, scope, sparsity))
        self.show("sharpness", sharpness_against_effect(self.runs, scope, sparsity, measure))

    def display(self) -> None:
        """Where a person watches the kernel, the dashboard with its controls; in a headless execution
        ($ESACL_HEADLESS: one made for an exported page, where controls would change nothing) every figure
        of `figures()`, static."""
        from IPython.display import display

        if os.environ.get(HEADLESS):
            for fig in self.figures():
                fig.show()
        else:
            display(self)

    def figures(self) -> list[go.Figure]:
        """Static figures for an exported page: every measure against sparsity, the paths and the
        sharpness at 0.9 and 0.95 (layer), SDP's verdicts and its paths per variant."""
        figs = [effect_against_sparsity(self.runs, m) for m in MEASURES]
        figs += [pruning_path(self.runs, "layer", s) for s in (0.9, 0.95)]
        figs += [sharpness_against_effect(self.runs, "layer", s) for s in (0.9, 0.95)]
        figs += [sdp_verdicts(self.found)]
        figs += [pruning_path(self.runs, part="sdp", variant=v) for v in SDP_VARIANTS]
        return figs
