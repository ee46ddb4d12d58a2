import io
import re

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from esacl import UserError
from workbench import execute
from helpers import probe_notebook, stream_text


def test_parameters_are_checked_against_the_notebook_and_runconfig():
    path = execute.notebook_path("split_digits")
    assert execute.check_parameters(path, {"method": "esacl", "sparsity": "0.75", "landscape": "false"}) == {
        "method": "esacl",
        "sparsity": 0.75,
        "landscape": False,
    }
    with pytest.raises(UserError, match="no parameter 'metod' \\(did you mean 'method'\\?\\)"):
        execute.check_parameters(path, {"metod": "esacl"})
    with pytest.raises(UserError, match="'sparsity' must be in \\[0, 1\\)"):
        execute.check_parameters(path, {"sparsity": "1.5"})
    with pytest.raises(UserError, match="did you mean 'split_digits'"):
        execute.notebook_path("split_digit")


def run_cell(source: str):
    """A one-cell notebook of `source` after a plotly set-up, executed as reports are (widget state stored)."""
    nb = new_notebook(
        cells=[
            new_code_cell(
                "import plotly.io as pio, plotly.graph_objects as go, ipywidgets as w\n"
                "pio.renderers.default = 'plotly_mimetype+notebook'\n" + source
            )
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    NotebookClient(nb, store_widget_state=True).execute()
    return nb


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """A tiny executed notebook as a run's: a plotly figure, and a widget whose Output draws another."""
    nb = run_cell(
        "go.Figure(go.Bar(x=[1, 2], y=[3, 4])).show()\n"
        "out = w.Output()\n"
        "display(w.Tab([w.VBox([w.HTML('<b>hello</b>'), out])], titles=['a']))\n"
        "with out:\n"
        "    go.Figure(go.Heatmap(z=[[1, 2], [3, 4]])).show()"
    )
    path = tmp_path_factory.mktemp("nb") / "probe.ipynb"
    nbformat.write(nb, path)
    return path


def test_a_kept_run_notebook_has_no_plotlyjs_and_each_figure_once(executed, tmp_path):
    nb = nbformat.read(executed, as_version=4)
    figures = [o["data"][execute.PLOTLY_MIME] for o in execute.output_bundles(nb) if execute.PLOTLY_MIME in o["data"]]
    assert len(figures) == 2 and any(execute.carries_plotlyjs(o) for o in execute.output_bundles(nb))
    execute.keep_notebook(executed, tmp_path / "notebook.ipynb")
    kept = nbformat.read(tmp_path / "notebook.ipynb", as_version=4)
    assert not any(execute.carries_plotlyjs(o) for o in execute.output_bundles(kept))
    bundles = [o["data"] for o in execute.output_bundles(kept) if execute.PLOTLY_MIME in o["data"]]
    assert [b[execute.PLOTLY_MIME] for b in bundles] == figures  # in a cell and in the widget's Output
    assert not any("text/html" in b for b in bundles)
    assert kept.metadata["widgets"] and any(
        "application/vnd.jupyter.widget-view+json" in o["data"] for o in execute.output_bundles(kept)
    )  # the dashboard stays
    assert (tmp_path / "notebook.ipynb").stat().st_size < executed.stat().st_size / 10


def test_export_leaves_out_widgets_embeds_the_cartesian_bundle_and_references_no_remote_script(executed):
    assert execute.PLOTLY_CARTESIAN.is_file(), "set-up fetches it: ./workbench.sh test"
    html = execute.export_html(executed)
    assert not re.findall(r'<script[^>]*\bsrc="https?://', html)
    assert "application/vnd.jupyter.widget-state+json" not in html and "hello" not in html
    assert "Plotly.newPlot" in html
    assert f"plotly.js (cartesian - minified) v{execute.PLOTLY_JS_VERSION}" in html
    assert f"* plotly.js v{execute.PLOTLY_JS_VERSION}" not in html


def test_the_pinned_bundle_is_the_release_plotly_embeds():
    from plotly.offline import get_plotlyjs_version

    assert get_plotlyjs_version() == execute.PLOTLY_JS_VERSION


def test_a_figure_outside_the_cartesian_bundle_or_no_bundle_keeps_the_full_plotlyjs(monkeypatch, tmp_path, executed):
    nb = run_cell("go.Figure(go.Scatter3d(x=[1], y=[2], z=[3])).show()")
    nbformat.write(nb, tmp_path / "3d.ipynb")
    assert execute.trace_types(nb) == {"scatter3d"}
    assert f"* plotly.js v{execute.PLOTLY_JS_VERSION}" in execute.export_html(tmp_path / "3d.ipynb")
    monkeypatch.setattr(execute, "PLOTLY_CARTESIAN", tmp_path / "nowhere.js")
    html = execute.export_html(executed)
    assert f"* plotly.js v{execute.PLOTLY_JS_VERSION}" in html and "Plotly.newPlot" in html


def test_the_fetched_bundle_must_match_its_published_integrity(monkeypatch, tmp_path):
    monkeypatch.setattr(execute, "PLOTLY_CARTESIAN", tmp_path / "plotly.js")
    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout: io.BytesIO(b"not the tarball"))
    with pytest.raises(UserError, match="does not match its published integrity"):
        execute.fetch_plotly_cartesian()
    assert not (tmp_path / "plotly.js").exists()


def test_papermill_run_leaves_no_kernel_behind(tmp_path):
    import psutil

    probe = probe_notebook(tmp_path / "probe.ipynb", "import os\nprint(os.getpid())")
    assert execute.papermill_run(probe, tmp_path / "out.ipynb", {}, progress=False) is None
    kernel_pid = int(stream_text(tmp_path / "out.ipynb")[0])
    assert not psutil.pid_exists(kernel_pid) or psutil.Process(kernel_pid).status() == psutil.STATUS_ZOMBIE


def test_a_report_is_titled_by_what_its_runs_are():
    from pathlib import Path

    from esacl.rundir import Record

    runs = [
        Record(Path(f"r{i}"), dict(benchmark="split_digits", method=m, seed=s), [], [], [], True)
        for i, (m, s) in enumerate([("sgd", 0), ("esacl", 0), ("sgd", 1)])
    ]
    assert execute.default_title(runs) == "split_digits: sgd, esacl (3 runs, seeds 0, 1)"
    assert execute.default_title(runs[:1]) == "split_digits: sgd (1 run, seed 0)"
    many = [
        Record(Path(m), dict(benchmark="split_fmnist", method=m, seed=0), [], [], [], True)
        for m in ("a", "b", "c", "d", "e", "f", "g", "h")
    ]
    assert execute.default_title(many) == "split_fmnist: a, b, c, d, e, f and 2 more (8 runs, seed 0)"


def test_widgets_made_but_never_shown_leave_no_state_and_no_widget_manager_in_the_page(tmp_path):
    nb = run_cell("hidden = w.Tab([w.HTML('<b>never shown</b>')])\ngo.Figure(go.Bar(x=[1, 2], y=[3, 4])).show()")
    assert nb.metadata.get("widgets")  # state was stored
    path = tmp_path / "hidden.ipynb"
    nbformat.write(nb, path)
    html = execute.export_html(path)
    assert "application/vnd.jupyter.widget-state+json" not in html and "never shown" not in html
    assert "html-manager" not in html and "Plotly.newPlot" in html


def test_a_reusable_kernel_runs_a_grid_with_fresh_state_and_the_results_of_fresh_kernels(tmp_path):
    from esacl.rundir import load_run

    point = dict(method="sgd", epochs=1, landscape=False)
    with execute.Kernel(reusable=True) as kernel:
        first = execute.execute_notebook(
            "split_digits", dict(point, seed=0), out=str(tmp_path / "reused"), kernel=kernel
        )
        pid = kernel.km.provisioner.pid
        second = execute.execute_notebook(
            "split_digits", dict(point, seed=1), out=str(tmp_path / "reused"), kernel=kernel
        )
        assert kernel.km.provisioner.pid == pid and kernel.used == 2  # one kernel for both points
        with pytest.raises(UserError, match="notebook split_digits failed"):  # a failing point ...
            execute.execute_notebook(
                "split_digits",
                dict(point, method="esacl", seed=2, device="cuda:7"),
                out=str(tmp_path / "reused"),
                kernel=kernel,
            )
        assert kernel.km is None  # ... takes its kernel along
        third = execute.execute_notebook(
            "split_digits", dict(point, seed=2), out=str(tmp_path / "reused"), kernel=kernel
        )
    alone = execute.execute_notebook("split_digits", dict(point, seed=1), out=str(tmp_path / "fresh"))
    assert load_run(second).class_il == load_run(alone).class_il
    assert load_run(first).class_il != load_run(second).class_il and load_run(third).complete


def test_a_reused_kernel_starts_each_notebook_with_an_empty_namespace(tmp_path):
    first = probe_notebook(tmp_path / "first.ipynb", "import torch\nleftover = 1\ntorch.set_num_threads(1)")
    second = probe_notebook(tmp_path / "second.ipynb", "print('leftover' in globals(), 'torch' in globals())")
    with execute.Kernel(reusable=True) as kernel:
        assert execute.papermill_run(first, tmp_path / "out1.ipynb", {}, False, kernel) is None
        assert execute.papermill_run(second, tmp_path / "out2.ipynb", {}, False, kernel) is None
        assert kernel.used == 2
    assert stream_text(tmp_path / "out2.ipynb") == ["False False"]
