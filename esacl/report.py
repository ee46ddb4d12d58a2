"""Notebooks in batch (papermill) and self-contained HTML reports (nbconvert).

    run_dir = execute_notebook("split_digits", {"method": "esacl", "sparsity": 0.9}, out="runs")
    html = write_report([run_dir, ...])            # reports/<name>.html, opens offline

A benchmark notebook's parameters are RunConfig keys; they are validated before a kernel starts, so
a typo is an error, not a silently ignored parameter. The executed notebook and its HTML land in
the run directory. Reports embed plotly.js (the notebooks' renderer) and a local copy of the widget
manager's `embed.js` (npm `@jupyter-widgets/html-manager`, fetched at set-up), and keep no
reference to any CDN. This module imports papermill and nbconvert only when called.
"""
import base64
import datetime
import os
import re
import shutil
import tempfile
from pathlib import Path

from .config import RunConfig, UserError, did_you_mean
from .record import RunDir, unique_name, write_atomic

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
REPORT_NOTEBOOK = "report"
EMBED_JS_VERSION = "1.0.15"      # @jupyter-widgets/html-manager, pairs with ipywidgets 8
EMBED_JS = ROOT / ".cache" / "html-manager" / "embed.js"


def benchmark_notebooks() -> list[str]:
    return sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb") if p.stem != REPORT_NOTEBOOK)


def notebook_path(name: str) -> Path:
    path = NOTEBOOKS / f"{name}.ipynb"
    if not path.is_file():
        names = benchmark_notebooks()
        raise UserError(f"no notebook '{name}'{did_you_mean(name, names)}; notebooks: {', '.join(names)}")
    return path


def notebook_parameters(path: Path) -> dict:
    """The names and defaults a notebook's `parameters` cell declares."""
    import papermill
    return {name: spec["default"] for name, spec in papermill.inspect_notebook(str(path)).items()}


def check_declared(notebook: str, keys, declared) -> None:
    """A one-line UserError for the first of `keys` that the notebook's parameters cell does not declare."""
    for key in keys:
        if key not in declared:
            raise UserError(f"notebook {notebook} has no parameter '{key}'{did_you_mean(key, declared)}; "
                            f"parameters: {', '.join(declared)}")


def check_parameters(path: Path, given: dict[str, str]) -> dict:
    """CLI strings -> typed parameters, checked against the notebook and RunConfig (one-line errors)."""
    check_declared(path.stem, given, notebook_parameters(path))
    typed = RunConfig.from_strings(given).to_dict()
    return {key: typed[key] for key in given}


def papermill_run(notebook: Path, output: Path, parameters: dict, progress: bool) -> str | None:
    """Execute `notebook` into `output` with papermill, in this process; None, or where and why it failed.

    The kernel talks to us over unix sockets (IPC), not loopback TCP: on these machines a loopback
    connect sometimes loses its first SYN, and kernels over TCP stalled for minutes at random."""
    import papermill
    from jupyter_client.manager import KernelManager
    with tempfile.TemporaryDirectory() as sockets:
        km = KernelManager(kernel_name="python3", transport="ipc", ip=f"{sockets}/kernel")
        try:
            papermill.execute_notebook(str(notebook), str(output), parameters=parameters, kernel_name="python3",
                                       progress_bar=progress, cwd=str(Path.cwd()), km=km)
        except papermill.PapermillExecutionError as err:
            return f"in cell {err.exec_count}: {err.ename}: {err.evalue}"
        finally:
            # nbclient shuts down only kernels it started itself; ours would live (holding its memory)
            # until this process exits. Every output has arrived by now: kill it (0.1 s, not 0.8 s).
            if km.has_kernel:
                km.shutdown_kernel(now=True)
    return None


def execute_notebook(name: str, params: dict, out: str = "runs", progress: bool = False) -> Path:
    """Execute a benchmark notebook with papermill into a fresh run directory; returns the run directory.

    `params` are typed RunConfig values (see `check_parameters`). The run directory's name is fixed
    before the kernel starts, so the executed notebook and its HTML can be moved into it."""
    path = notebook_path(name)
    defaults = {k: v for k, v in notebook_parameters(path).items()}
    literal = {k: parameter_value(v) for k, v in defaults.items()}
    cfg = RunConfig.from_dict({**literal, **params, "out": str(Path(out).resolve()), "progress": progress})
    from .train import default_name
    out_dir = Path(cfg.out)
    name_ = cfg.name or unique_name(out_dir, default_name(cfg))
    run_dir = out_dir / name_
    if run_dir.exists():
        raise UserError(f"run directory {run_dir} already exists; choose another name (runs are never overwritten)")
    parameters = dict(params, out=str(out_dir), name=name_, progress=progress)
    with tempfile.TemporaryDirectory() as tmp:
        executed = Path(tmp) / "notebook.ipynb"
        failure = papermill_run(path, executed, parameters, progress)
        if failure:
            if run_dir.is_dir() and executed.exists():
                shutil.copy(executed, run_dir / "notebook.ipynb")       # keep the evidence with the run
            raise UserError(f"notebook {name} failed {failure}")
        if not run_dir.is_dir():
            raise UserError(f"notebook {name} ran but wrote no run directory at {run_dir}")
        write_atomic(run_dir / "notebook.ipynb", executed.read_bytes())
    write_atomic(run_dir / "notebook.html", export_html(run_dir / "notebook.ipynb").encode())
    return run_dir


def parameter_value(value: str):
    """papermill's inspected defaults are source text; RunConfig wants values."""
    import ast
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def write_report(run_dirs: list, detail: list | None = None, out: str = "reports", title: str | None = None,
                 progress: bool = False) -> Path:
    """Execute the report notebook over `run_dirs` and export it as one self-contained HTML file.

    detail: the runs shown with every dashboard (default: `default_detail`). Returns the HTML's path
    (never overwrites an existing report)."""
    runs = [str(RunDir.open(d).path.resolve()) for d in run_dirs]
    if detail is None:
        detail = default_detail(runs)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(runs[0]).name if len(runs) == 1 else f"comparison-{stamp}"
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / (unique_name(out_dir, base, suffix=".html") + ".html")
    with tempfile.TemporaryDirectory() as tmp:
        executed = Path(tmp) / "report.ipynb"
        failure = papermill_run(notebook_path(REPORT_NOTEBOOK), executed,
                                dict(run_dirs=runs, detail=[str(Path(d).resolve()) for d in detail],
                                     title=title or default_title(runs)), progress)
        if failure:
            raise UserError(f"report failed {failure}")
        write_atomic(target, export_html(executed).encode())
    return target


def default_title(runs) -> str:
    """What the runs are, as a report's heading: benchmarks, methods (the first six), run count, seeds."""
    from .record import load_run
    records = [r if hasattr(r, "config") else load_run(r) for r in runs]
    benchmarks = ", ".join(dict.fromkeys(r.config["benchmark"] for r in records))
    methods = list(dict.fromkeys(r.config["method"] for r in records))
    named = ", ".join(methods[:6]) + (f" and {len(methods) - 6} more" if len(methods) > 6 else "")
    seeds = sorted({r.config["seed"] for r in records})
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"
    return f"{benchmarks}: {named} ({len(records)} run{'s' if len(records) > 1 else ''}, {seed_text})"


def default_detail(runs: list[str]) -> list[str]:
    """One run per method (its lowest seed): the sparse methods' if there are any, at most four."""
    from .methods import PRESETS
    from .record import load_run
    records = [load_run(r) for r in runs]
    if len(records) == 1:
        return runs
    best: dict[str, tuple] = {}
    for r in records:
        method = r.config["method"]
        if method not in best or r.config["seed"] < best[method][0]:
            best[method] = (r.config["seed"], str(r.path))
    sparse = [m for m in best if m in PRESETS and PRESETS[m].sparse]
    return [best[m][1] for m in sorted(sparse or best)[:4]]


EMBED_JS_TARBALL = (f"https://registry.npmjs.org/@jupyter-widgets/html-manager/-/html-manager-{EMBED_JS_VERSION}.tgz",
                    "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==")


def fetch_embed_js() -> Path:
    """Set-up step (never called by a report): download the pinned html-manager tarball from the npm
    registry, check its published sha512 integrity, and keep its dist/embed.js under .cache/."""
    import hashlib
    import io
    import tarfile
    import urllib.request
    if EMBED_JS.is_file():
        return EMBED_JS
    url, integrity = EMBED_JS_TARBALL
    with urllib.request.urlopen(url, timeout=60) as response:
        data = response.read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != integrity:
        raise UserError(f"{url} does not match its published integrity {integrity}")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        embed = tar.extractfile("package/dist/embed.js").read()
    EMBED_JS.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(EMBED_JS, embed)
    return EMBED_JS


def embed_js() -> Path:
    """The local widget manager bundle ($ESACL_EMBED_JS, or what set-up fetched)."""
    path = Path(os.environ.get("ESACL_EMBED_JS", EMBED_JS))
    if not path.is_file():
        raise UserError(f"{path} is missing: run ./workbench.sh main (set-up fetches it), or "
                        f"'npm pack @jupyter-widgets/html-manager@{EMBED_JS_VERSION}' and copy package/dist/embed.js there")
    return path


# Script tags that would reach the network from an exported notebook: require.js and MathJax (the
# lab template's and plotly's). The reports use neither.
# Also inside widget state, where quotes and slashes come escaped (`src=\"...\"`, `<\/script>`).
_REMOTE_SCRIPT = re.compile(r'<script[^>]*?\bsrc=\\?"https?:(?:[^"\\]|\\/)*\\?"[^>]*>\s*<\\?/script>')


# Plotly figures inside widget layouts (a GridBox cell, a hidden Tab page) are drawn before the layout
# settles, at the page's width, and then clipped by their cell. This redraws each figure at its
# container's size when the two differ (on first draw, on a tab switch, on a window resize).
_FIT_PLOTS = """<script>
(function () {
  if (!window.ResizeObserver) return;
  const watched = new WeakSet();
  const fit = entries => entries.forEach(e => {
    const gd = e.target, layout = gd._fullLayout;
    if (window.Plotly && layout && e.contentRect.width > 0 && Math.abs(layout.width - e.contentRect.width) > 1)
      window.Plotly.Plots.resize(gd);
  });
  const observer = new ResizeObserver(fit);
  const watch = () => document.querySelectorAll('.js-plotly-plot').forEach(gd => {
    if (gd._fullLayout && !watched.has(gd)) { watched.add(gd); observer.observe(gd); }
  });
  new MutationObserver(watch).observe(document.body, {childList: true, subtree: true});
  watch();
})();
</script>
"""


def shows_widgets(nb) -> bool:
    """Whether any output of the notebook displays a widget (a view the exported page must render)."""
    return any("application/vnd.jupyter.widget-view+json" in output.get("data", {})
               for cell in nb.cells if cell.cell_type == "code" for output in cell.get("outputs", []))


def export_html(notebook: Path) -> str:
    """An executed notebook as one HTML file that renders offline, inputs hidden."""
    import nbformat
    from nbconvert import HTMLExporter
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    nb = nbformat.read(notebook, as_version=4)
    if shows_widgets(nb):
        # The template loads the widget manager by creating a <script> with this src: a data URL keeps
        # the report one self-contained file (about 2.5 MB of base64).
        exporter.widget_renderer_url = "data:text/javascript;base64," + base64.b64encode(embed_js().read_bytes()).decode()
    else:       # widgets made but never shown (a report's): their state would only weigh the page down
        nb.metadata.pop("widgets", None)
    body, _ = exporter.from_notebook_node(nb)
    body = _REMOTE_SCRIPT.sub("", body)
    return body.replace("</body>", _FIT_PLOTS + "</body>", 1) if "</body>" in body else body + _FIT_PLOTS
