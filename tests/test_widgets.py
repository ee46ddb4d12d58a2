"""Dashboards and figures on small real runs: data matches the record, controls change what is
shown, live updates end where the saved run starts, dense runs get their notices."""

import json
import re
import warnings

import numpy as np
import pytest
import torch

import esacl
import widgets
from esacl import metrics
from esacl.rundir import load_masks, load_selections
from widgets import figures as F
from widgets import thumbnails


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A sparse esacl run (landscape on, watched live by a dashboard) and a dense sgd run."""
    out = str(tmp_path_factory.mktemp("runs"))
    live = widgets.RunDashboard(min_interval=0.0)
    # A model this small trains several times faster on one thread, and far faster on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # the callback warns on a dashboard error
            sparse = esacl.run(
                esacl.RunConfig(
                    method="esacl",
                    n_tasks=2,
                    epochs=2,
                    landscape=True,
                    slice_steps=5,
                    hessian_iters=3,
                    hutchinson_samples=2,
                    progress=False,
                    out=out,
                ),
                callbacks=[live.callback],
            )
        dense = esacl.run(esacl.RunConfig(method="sgd", n_tasks=2, epochs=2, progress=False, out=out))
    finally:
        torch.set_num_threads(threads)
    return dict(sparse=sparse, dense=dense, live=live, out=out)


@pytest.fixture(scope="module")
def dash(runs):
    return widgets.RunDashboard.from_run(runs["sparse"].path)


def plain(z):
    """A figure's matrix as nested lists (plotly stores tuples or arrays)."""
    return [list(row) for row in z]


def kept_count(html: str, label: str) -> int:
    return int(re.search(rf"{label}: (\d+) examples", html).group(1))


# ----------------------------------------------------------------------------- building blocks


def test_png_encoder_round_trips_through_a_decoder():
    Image = pytest.importorskip("PIL.Image")
    import io

    grey = np.arange(6 * 5, dtype=np.uint8).reshape(6, 5) * 8
    rgb = np.random.default_rng(0).integers(0, 256, (4, 7, 3), dtype=np.uint8)
    for pixels in (grey, rgb):
        decoded = np.asarray(Image.open(io.BytesIO(thumbnails.png_bytes(pixels))))
        assert np.array_equal(decoded, pixels)


def test_to_pixels_stretches_floats_and_upscales_small_images():
    digit = np.linspace(-1, 2, 64, dtype=np.float32).reshape(1, 8, 8)
    pixels = thumbnails.to_pixels(digit)
    assert pixels.shape == (48, 48) and pixels.dtype == np.uint8
    assert pixels.min() == 0 and pixels.max() == 255
    assert np.array_equal(pixels[::6, ::6], thumbnails.to_pixels(digit, min_side=1))
    colour = np.zeros((3, 64, 64), np.uint8)
    assert thumbnails.to_pixels(colour).shape == (64, 64, 3)


# ----------------------------------------------------------------------------- one run


def test_run_dashboard_is_a_tab_of_five_dashboards_with_figures(dash, runs):
    import ipywidgets

    assert isinstance(dash, ipywidgets.Tab)
    assert list(dash.titles) == ["Accuracy", "Sharpness", "Masks", "Selections", "Efficiency"]
    figs = dash.figures()
    assert list(figs) == list(dash.titles)
    for title, items in figs.items():
        assert items, title
        for fig in items:
            assert fig.data, (title, fig.layout.title.text)
            json.loads(fig.to_json())  # serialisable: reports need no kernel
    assert all(d.notice.value == "" for d in dash.dashboards.values())


def test_accuracy_heatmap_follows_the_toggle(dash, runs):
    record = runs["sparse"]
    acc = dash.accuracy
    assert acc.setting.value == "class_il"
    assert plain(acc.current["matrix"].data[0].z) == record.class_il
    acc.setting.value = "task_il"
    assert plain(acc.current["matrix"].data[0].z) == record.task_il
    curves = acc.current["curves"]
    assert list(curves.data[0].y) == [row[0] for row in record.task_il]
    acc.setting.value = "class_il"
    assert plain(acc.current["matrix"].data[0].z) == record.class_il
    static = acc.figures()
    assert plain(static[0].data[0].z) == record.class_il and plain(static[1].data[0].z) == record.task_il
    forgetting = acc.current["forgetting"].data[0]
    assert np.mean(forgetting.y) == pytest.approx(record.summary["class_il"]["forgetting"])
    epochs = [e for e in record.events if e["event"] == "epoch"]
    losses = [y for trace in acc.current["loss"].data if trace.mode == "lines+markers" for y in trace.y]
    assert losses == [e["loss"] for e in epochs]


def test_sharpness_shows_the_landscape_files_and_the_slider_picks_the_slice(dash, runs):
    record = runs["sparse"]
    sharp = dash.sharpness
    files = {t: json.loads((record.path / "landscape" / f"task_{t}.json").read_text()) for t in (0, 1)}
    gaps = sharp.current["sharpness"].data[0].y
    assert list(gaps) == [files[t]["sam_gap"] for t in (0, 1)]
    assert list(sharp.current["sharpness"].data[1].y) == [files[t]["top_eigenvalue"] for t in (0, 1)]
    assert sharp.task.value == 1
    assert plain(sharp.current["slice"].data[0].z) == files[1]["slice"]["loss"]
    sharp.task.value = 0
    assert plain(sharp.current["slice"].data[0].z) == files[0]["slice"]["loss"]
    assert "task 0" in sharp.current["slice"].layout.title.text
    interpolation = sharp.current["interpolation"].data
    assert len(interpolation) == 1 and list(interpolation[0].y) == files[1]["interpolation"]["loss"]
    jump = {trace.name: list(trace.y) for trace in sharp.current["jump"].data}
    events = record.task_events
    assert jump["recalibrated"] == [e["jump"]["class_il_before"] for e in events]
    assert jump["projected (recorded)"] == [e["jump"]["class_il_after"] for e in events]
    assert jump["as trained"] == [e["jump"]["as_trained"]["class_il_before"] for e in events]
    static_slice = sharp.figures()[2]  # every task's slice, plotly slider
    assert len(static_slice.layout.sliders[0].steps) == 2
    assert [t.visible for t in static_slice.data if t.type == "contour"] == [False, True]


def test_masks_overlap_sparsity_and_the_task_slider(dash, runs):
    record = runs["sparse"]
    masks = dash.masks
    overlap = np.array(plain(masks.current["overlap"].data[0].z))
    assert np.allclose(np.diag(overlap), 1.0) and np.allclose(overlap, overlap.T)
    a, b = (F.mask_vector(load_masks(record.path, t)) for t in (0, 1))
    assert overlap[0, 1] == pytest.approx(np.sum(a & b) / np.sum(a | b))
    last = record.task_events[-1]["masks"]
    changes = masks.current["changes"]
    assert masks.task.value == 1
    assert list(changes.data[0].y) == [m["regrown"] for m in last.values()]
    assert list(changes.data[1].y) == [m["pruned"] for m in last.values()]
    assert masks.task.min == 1  # task 0 has nothing to compare with: the slider starts at task 1
    assert "no previous task" in F.mask_changes(record, 0).layout.annotations[0].text
    # churn: the share of the live weights that changed (1 - Jaccard), not of all weights
    churn = {t.name: list(t.y) for t in masks.current["churn"].data}
    assert churn == {n: [pytest.approx(100 * (1 - m["overlap"]))] for n, m in last.items()}
    assert all(100 * (1 - m["overlap"]) > 100 * m["churn"] for m in last.values())
    assert masks.layer.label == "all prunable layers"  # a visible selection, offline too
    layer = list(last)[0]
    masks.layer.value = layer
    one = np.array(plain(masks.current["overlap"].data[0].z))
    assert layer in masks.current["overlap"].layout.title.subtitle.text
    assert one[0, 1] == pytest.approx(last[layer]["overlap"])  # consecutive tasks: the recorded overlap
    ends = {trace.name: list(trace.y) for trace in masks.current["ends"].data}
    assert ends["global"] == [e["sparsity"] for e in record.task_events]
    steps = masks.current["steps"]
    assert [trace.name for trace in steps.data] == list(last)


def test_selections_thumbnails_follow_task_and_epoch(runs):
    record = runs["sparse"]
    sel_dash = widgets.SelectionDashboard.from_run(record.path, max_thumbnails=10_000)
    sel = load_selections(record.path, 0)
    removed_at = sel["removed_epoch"]
    sel_dash.task.value = 0
    sel_dash.epoch.value = 0
    first = sel_dash.thumbnails.value
    kept0 = int(np.sum((removed_at < 0) | (removed_at > 0)))
    assert kept_count(first, "kept in the task") == kept0
    assert kept_count(first, "eliminated") == int(np.sum(removed_at == 0))
    assert first.count("<img") == len(removed_at)  # every example once, kept or removed
    sel_dash.epoch.value = 1
    second = sel_dash.thumbnails.value
    assert second != first
    assert kept_count(second, "kept in the task") == int(np.sum(removed_at < 0))
    hist = sel_dash.current["histogram"]
    assert "epoch 1" in hist.layout.title.subtitle.text
    assert hist.data[0].xbins == hist.data[1].xbins and hist.data[0].xbins.size  # kept and removed: one set of bins
    assert hist.layout.legend.orientation == "h"
    balance = sel_dash.current["balance"]
    assert sum(balance.data[0].y) == int(np.sum(removed_at < 0))
    assert sum(balance.data[1].y) == int(np.sum(removed_at == 1))
    sel_dash.level.value = "batch"
    active = (removed_at < 0) | (removed_at >= 1)
    assert kept_count(sel_dash.thumbnails.value, "in the support set") == int(np.sum(active & sel["epoch_kept"][1]))


def test_selections_shows_few_thumbnails_by_default(dash):
    sel = dash.selections
    html = sel.thumbnails.value
    assert html.count("<img") <= 2 * sel.max_thumbnails
    assert "shown" in html  # says that only some are shown


def test_efficiency_bars_add_up_to_the_recorded_flops(dash, runs):
    record = runs["sparse"]
    eff = dash.efficiency
    bars = [trace for trace in eff.current["flops"].data if trace.type == "bar"]
    assert sum(trace.y[-1] for trace in bars) == pytest.approx(record.efficiency["flops"])
    assert {trace.name for trace in bars} == set(record.efficiency["flops_by_component"])
    memory = record.efficiency["memory"]
    assert list(eff.current["memory"].data[0].y) == pytest.approx(
        [memory[k] / 1e6 for k in ("model_dense", "model_sparse", "optimizer_state", "learner_state")]
    )
    clock = {trace.name: list(trace.y) for trace in eff.current["wall_clock"].data}
    assert sum(clock["training"]) == pytest.approx(record.efficiency["train_seconds"])
    # beside training: the task ends' work and the sharpness measurements (this run measures it)
    assert clock["sharpness"] == [e["landscape_seconds"] for e in record.task_events]
    assert clock["task end"] == [e["task_end_seconds"] for e in record.task_events]
    assert all(s > 0 for s in clock["sharpness"])


# ----------------------------------------------------------------------------- live


def test_live_run_ends_showing_what_from_run_shows(runs, dash):
    live = runs["live"]
    assert plain(live.accuracy.current["matrix"].data[0].z) == plain(dash.accuracy.current["matrix"].data[0].z)
    assert live.record.complete
    expected = dash.figures()
    for title, figs in live.figures().items():
        assert [f.to_dict() for f in figs] == [f.to_dict() for f in expected[title]], title


def test_replayed_events_end_where_the_saved_run_is(runs, dash):
    record = runs["sparse"]
    replay = widgets.RunDashboard(min_interval=0.0)
    assert all(figs == [] for figs in replay.figures().values())
    assert "waiting" in replay.accuracy.notice.value
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        replay.callback(dict(event="start", run_dir=str(record.path), config=record.config, task=0, epoch=0))
        for event in record.events:
            replay.callback(event)
    assert plain(replay.accuracy.current["matrix"].data[0].z) == record.class_il
    assert replay.sharpness.task.value == 1
    expected = dash.figures()
    for title, figs in replay.figures().items():
        assert [f.to_dict() for f in figs] == [f.to_dict() for f in expected[title]], title


def test_epoch_events_are_throttled_and_task_events_always_redraw(runs):
    record = runs["sparse"]
    live = widgets.RunDashboard(min_interval=60.0)
    live.callback(dict(event="start", run_dir=str(record.path), config=record.config, task=0, epoch=0))
    assert live.redraws == 1
    epoch = next(e for e in record.events if e["event"] == "epoch")
    for _ in range(200):
        live.callback(dict(epoch))
    assert live.redraws == 1
    last = [e for e in record.events if e["event"] == "epoch" and e["task"] == 0][-1]
    assert last["epoch"] == record.config["epochs"] - 1 > epoch["epoch"]
    live.callback(dict(last))  # the task's last epoch draws however soon: the task end's work follows
    assert live.redraws == 2
    assert live.accuracy.current["loss"].data[0].y[-1] == pytest.approx(last["loss"])
    live.callback(record.task_events[0])
    assert live.redraws == 3
    assert plain(live.accuracy.current["matrix"].data[0].z) == [record.class_il[0]]
    # Only what the events announced: task 1's files are on disk already but not shown.
    assert plain(live.masks.current["overlap"].data[0].z) == [[1.0]]
    assert live.sharpness.task.max == 0 and live.selections.task.max == 0


def test_in_a_kernel_a_live_view_draws_the_tab_on_screen_and_the_others_when_selected(runs, dash, monkeypatch):
    from widgets import dashboards

    record = runs["sparse"]
    drawn = []
    monkeypatch.setattr(dashboards, "_in_kernel", lambda: True)
    monkeypatch.setattr(dashboards, "_draw", lambda output, fig: drawn.append(fig))
    live = widgets.RunDashboard(min_interval=0.0)
    live.callback(dict(event="start", run_dir=str(record.path), config=record.config, task=0, epoch=0))
    for event in record.events:
        live.callback(event)
    assert live.accuracy.current and not live.sharpness.current and not live.masks.current
    assert live._stale == {"Sharpness", "Masks", "Selections", "Efficiency"}
    before = len(drawn)
    live.selected_index = 1  # the Sharpness tab: drawn now, at the record's last state
    assert len(drawn) > before and live._stale == {"Masks", "Selections", "Efficiency"}
    assert live.sharpness.task.value == len(record.task_events) - 1
    # A report's figures are every tab's, brought up to date.
    expected = dash.figures()
    for title, figs in live.figures().items():
        assert [f.to_dict() for f in figs] == [f.to_dict() for f in expected[title]], title


def test_a_headless_dashboard_draws_once_at_the_end_and_matches_the_saved_run(runs, dash, monkeypatch):
    record = runs["sparse"]
    monkeypatch.setenv("ESACL_HEADLESS", "1")  # as workbench.execute sets it for its kernels
    headless = widgets.RunDashboard(min_interval=0.0)
    assert not headless.live and widgets.RunDashboard(min_interval=0.0, live=True).live
    headless.callback(dict(event="start", run_dir=str(record.path), config=record.config, task=0, epoch=0))
    for event in record.events:
        headless.callback(event)
    assert headless.redraws == 1
    expected = dash.figures()
    for title, figs in headless.figures().items():
        assert [f.to_dict() for f in figs] == [f.to_dict() for f in expected[title]], title


def test_papermill_kernels_run_headless(tmp_path):
    from workbench import execute
    from helpers import probe_notebook, stream_text

    probe = probe_notebook(tmp_path / "probe.ipynb", "import widgets\nprint(widgets.RunDashboard().live)")
    assert execute.papermill_run(probe, tmp_path / "out.ipynb", {}, progress=False) is None
    assert stream_text(tmp_path / "out.ipynb") == ["False"]


# ----------------------------------------------------------------------------- dense run


def test_dense_run_gets_one_line_notices(runs):
    dense = widgets.RunDashboard.from_run(runs["dense"].path)
    assert "dense" in dense.masks.notice.value and dense.masks.current == {}
    assert "selects no examples" in dense.selections.notice.value and dense.selections.current == {}
    assert "no landscape" in dense.sharpness.notice.value and dense.sharpness.current == {}
    figs = dense.figures()
    assert figs["Masks"] == [] and figs["Selections"] == [] and figs["Sharpness"] == []
    assert plain(dense.accuracy.current["matrix"].data[0].z) == runs["dense"].class_il
    assert figs["Efficiency"] and figs["Accuracy"]


# ----------------------------------------------------------------------------- several runs


def test_comparison_view_groups_runs_and_matches_mean_std(runs):
    import ipywidgets

    records = [runs["sparse"], runs["dense"]]
    view = widgets.ComparisonView([r.path for r in records])
    assert isinstance(view, ipywidgets.Widget)
    assert [row["method"] for row in view.rows] == ["sgd", "esacl"]  # preset order, as esacl compare
    for row in view.rows:
        mine = [r for r in records if r.config["method"] == row["method"]]
        assert row["class_il"] == metrics.mean_std([r.summary["class_il"]["average"] for r in mine])
        assert row["task_il"] == metrics.mean_std([r.summary["task_il"]["average"] for r in mine])
        assert row["flops"] == metrics.mean_std([r.efficiency["flops_relative"] for r in mine])
    table = view.table_html()
    assert "esacl" in table and "sgd" in table
    assert f">{view.rows[1]['class_il'][0]:.2f}</td>" in table  # one seed: the value alone
    assert "+-" not in table and "model MB" in table  # esacl compare's columns
    # SDP's projection at the default settings moves no weight: its jump is 0, and dense runs have none
    assert "jump (pts)</th>" not in table and "jump (pts) is 0.00 where measured" in table
    figs = view.figures()
    accuracy = figs[0].data[0]
    assert list(accuracy.y) == [row["class_il"][0] for row in view.rows]
    assert widgets.ComparisonView(runs["out"]).rows == view.rows  # a folder of runs works too


def test_accuracy_against_flops_pairs_sparcl_and_esacl_of_one_learner_and_shows_published_results():
    from widgets.comparison import accuracy_against

    def row(method, sparsity, class_il, flops, published=None):
        nan = (float("nan"), float("nan"))
        return dict(
            benchmark="split_cifar10",
            method=method,
            sparsity=sparsity,
            settings="",
            seeds=3,
            class_il=class_il,
            task_il=nan,
            flops=flops,
            forgetting=nan,
            jump=nan,
            published=published,
        )

    rows = [
        row("er", 0.0, (60.0, 1.0), (2.0, 0.0)),
        row("sparcl-er", 0.75, (45.0, 2.0), (0.4, 0.01), published=dict(source="sparcl2022", class_il=[43.74, 2.91])),
        row("esacl-er", 0.75, (50.0, 1.5), (1.1, 0.02)),
        row("esacl-er", 0.9, (48.0, 1.0), (0.9, 0.02)),  # no SparCL at 0.9: no pair line
        row("sgd", 0.0, (19.6, 0.1), (1.0, 0.0)),
    ]
    fig = accuracy_against(rows, "class_il", "flops")
    points = [t for t in fig.data if t.mode == "markers" and not t.name.endswith("published")]
    assert [t.name for t in points] == ["er", "sgd"]  # one colour per base learner
    er = points[0]
    assert list(er.x) == [2.0, 0.4, 1.1, 0.9] and list(er.y) == [60.0, 45.0, 50.0, 48.0]
    assert list(er.error_y.array) == [1.0, 2.0, 1.5, 1.0] and list(er.error_x.array) == [0.0, 0.01, 0.02, 0.02]
    assert list(er.marker.symbol) == ["circle", "square", "diamond", "diamond"]
    lines = [t for t in fig.data if t.mode == "lines"]
    assert len(lines) == 1 and list(lines[0].x) == [0.4, 1.1] and list(lines[0].y) == [45.0, 50.0]
    published = [t for t in fig.data if t.name == "er, published"]
    assert len(published) == 1 and list(published[0].x) == [0.4] and list(published[0].y) == [43.74]
    assert fig.layout.xaxis.type == "log"
    by_sparsity = accuracy_against(rows, "class_il", "sparsity")
    assert list(by_sparsity.data[0].x) == [0.0, 0.75, 0.75, 0.9]
    assert "no run has this metric" in accuracy_against(rows, "task_il").layout.annotations[0].text


def test_overlaid_curves_draw_one_line_per_run_and_one_legend_entry_per_method(runs):
    from widgets.comparison import overlay

    sparse, dense = runs["sparse"], runs["dense"]
    accuracy = overlay([sparse, dense, dense], "accuracy")
    assert [t.name for t in accuracy.data] == ["esacl", "sgd", "sgd"]
    assert [t.showlegend for t in accuracy.data] == [True, True, False]  # a method's seeds toggle together
    row1 = dense.class_il[1]
    assert list(accuracy.data[1].y) == [dense.class_il[0][0], (row1[0] + row1[1]) / 2]
    sharp = overlay([sparse, dense], "sharpness")
    assert [t.name for t in sharp.data] == ["esacl"]
    assert list(sharp.data[0].y) == [e["landscape"]["top_eigenvalue"] for e in sparse.task_events]
    sparsity = overlay([sparse, dense], "sparsity")
    epochs = [e for e in sparse.events if e["event"] == "epoch"]
    assert [t.name for t in sparsity.data] == ["esacl"] and list(sparsity.data[0].y) == [e["sparsity"] for e in epochs]
    assert "no sparse run" in overlay([dense], "sparsity").layout.annotations[0].text
    view = widgets.ComparisonView([sparse.path, dense.path])
    titles = [f.layout.title.text for f in view.figures()]
    assert (
        titles[0].startswith("class-IL accuracy (%) against training FLOPs")
        and "top Hessian eigenvalue at each task end" in titles
    )


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """SparCL-ER and EsaCL-ER over two seeds: one pair for the verdicts."""
    out = str(tmp_path_factory.mktemp("pairs"))
    return [
        esacl.run(esacl.RunConfig(method=m, seed=s, n_tasks=2, epochs=1, progress=False, out=out))
        for m in ("sparcl-er", "esacl-er")
        for s in (0, 1)
    ]


def test_the_verdict_forest_draws_each_cell_at_its_paired_mean_and_interval_with_the_margin_shaded(pairs):
    from esacl.compare import table_versus

    fig = widgets.verdict_forest(pairs)
    (versus,) = table_versus(pairs).values()
    drawn = {
        label: (x, plus, minus)
        for t in fig.data
        for label, x, plus, minus in zip(t.y, t.x, t.error_x.array, t.error_x.arrayminus)
    }
    assert set(drawn) == {"er class-IL (2 seeds)", "er task-IL (2 seeds)"}
    for il in ("class_il", "task_il"):
        cell = versus.cells[il]
        low, high = cell.interval()
        x, plus, minus = drawn[f"er {il.replace('_il', '-IL')} (2 seeds)"]
        assert x == pytest.approx(cell.mean) and (x - minus, x + plus) == pytest.approx((low, high))
    assert {t.name for t in fig.data} <= set(widgets.comparison.VERDICT_COLOURS)
    (band,) = [s for s in fig.layout.shapes if s.type == "rect"]
    assert (band.x0, band.x1) == (-1.0, 1.0)  # the default equivalence margin
    one_seed = widgets.verdict_forest([r for r in pairs if r.config["seed"] == 0])
    assert not one_seed.data and "two or more common seeds" in one_seed.layout.annotations[0].text


def test_a_column_the_same_in_every_row_is_left_out_of_the_table_and_named_under_it(pairs):
    from widgets.comparison import comparison_html, comparison_rows

    rows = comparison_rows(pairs)
    assert "jump (pts)" in comparison_html([dict(r, jump_mean=float(i)) for i, r in enumerate(rows)])
    same = [dict(r, jump_mean=0.0, jump_std=0.0) for r in rows]
    html = comparison_html(same)
    assert "jump (pts)</th>" not in html and "jump (pts) is 0.00" in html.split("Left out, the same in every row:")[1]
    assert "class-IL" in html  # the columns that differ stay


def test_the_frontier_figure_draws_each_methods_points_and_frontier_with_the_verdict_at_sparcls_cost():
    from types import SimpleNamespace

    def run(method, seed, flops, class_il, sparsity=0.9):
        config = dict(
            benchmark="split_digits", method=method, seed=seed, sparsity=sparsity, dense_grad_every=1, sam_every=1
        )
        summary = dict(class_il=dict(average=class_il), task_il=dict(average=99.0))
        return SimpleNamespace(
            complete=True, config=config, efficiency=dict(flops_relative=flops), summary=summary, class_il=[[0]] * 5
        )

    records = []
    for s in range(6):
        records += [
            run("esacl-er", s, 0.1, 80 + s, 0.95),  # EsaCL's cheap point, its dear one, and a dominated one
            run("esacl-er", s, 0.4, 90 + s),
            run("esacl-er", s, 0.3, 70 + s, 0.8),
            run("sparcl-er", s, 0.2, 82 + s / 2),
        ]
    fig = widgets.frontier_figure(records, "class_il")
    assert fig.layout.annotations[0].text == "er: better"  # the panel says the verdict at matched cost
    lines = {t.name: t for t in fig.data if t.mode == "lines"}
    assert list(lines["esacl frontier"].x) == pytest.approx([0.1, 0.4])
    assert list(lines["sparcl frontier"].x) == pytest.approx([0.2])
    esacl = next(t for t in fig.data if t.mode == "markers" and t.name == "esacl")
    assert list(esacl.marker.symbol) == ["diamond", "diamond-open", "diamond"]  # hollow: off the frontier
    assert esacl.error_y.array[0] == pytest.approx(2.5706 * np.std(range(6), ddof=1) / 6**0.5, rel=1e-4)  # 95% t
    assert fig.layout.shapes[0].x0 == pytest.approx(0.2)  # SparCL's default cost, dotted
    assert "no base learner" in widgets.frontier_figure(records[:1]).layout.annotations[0].text
