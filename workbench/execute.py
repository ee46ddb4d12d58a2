"""Notebooks in batch (papermill) and self-contained HTML reports (nbconvert).

    run_dir = execute_notebook("split_digits", {"method": "esacl", "sparsity": 0.9}, out="runs")
    html = write_report([run_dir, ...])            # reports/<name>.html, opens offline

A benchmark notebook's parameters are RunConfig keys; they are validated before a kernel starts, so
a typo is an error, not a silently ignored parameter. The executed notebook lands in the run
directory (without the 4.8 MB of plotly.js its import cell carries). Reports embed
plotly.js once, the cartesian partial bundle (1.5 MB, npm `plotly.js-cartesian-dist-min`, fetched
at set-up) where every figure is cartesian, and keep no reference to any CDN. This module imports
papermill and nbconvert only when called.
"""

import base64
import datetime
import os
import re
import tempfile
from pathlib import Path

from esacl.config import RunConfig, UserError, did_you_mean
from esacl.rundir import RunDir, unique_name, write_atomic

ROOT = Path(__file__).resolve().parent.parent


def _notebooks() -> Path:
    """The notebooks folder: a plain (not editable) install's copy inside the package (`workbench/notebooks`,
    see pyproject.toml), else the checkout's `notebooks/`."""
    installed = Path(__file__).resolve().parent / "notebooks"
    return installed if installed.is_dir() else ROOT / "notebooks"


NOTEBOOKS = _notebooks()
REPORT_NOTEBOOK = "report"
FLATNESS_NOTEBOOK = "flatness"  # the flatness experiment (benchmarks/flatness.py --report executes it)
PLOTLY_JS_VERSION = "4.1.1"  # the plotly.js release plotly==7.1.0 embeds; its partial bundle must be the same
PLOTLY_CARTESIAN = ROOT / ".cache" / "plotly" / f"plotly-cartesian-{PLOTLY_JS_VERSION}.min.js"
PLOTLY_CARTESIAN_TARBALL = (
    f"https://registry.npmjs.org/plotly.js-cartesian-dist-min/-/plotly.js-cartesian-dist-min-{PLOTLY_JS_VERSION}.tgz",
    "sha512-o8GrFeusncwBIxbBynRJpY4pkgVB6caM+JLpwrLYbbsO7dZ8FJ+SVN2Fr+L7kiG/Z6w4P5O0Jus/Qr5EefHVeg==",
)
# The trace types the cartesian bundle draws (its package README); every figure here is one of
# scatter, bar, heatmap, contour and histogram.
CARTESIAN_TRACES = frozenset(
    {
        "bar",
        "box",
        "contour",
        "heatmap",
        "histogram",
        "histogram2d",
        "histogram2dcontour",
        "image",
        "pie",
        "scatter",
        "scatterternary",
        "violin",
    }
)
PLOTLY_MIME = "application/vnd.plotly.v1+json"
HEADLESS = "ESACL_HEADLESS"  # read by widgets.RunDashboard in the kernels executed here


def benchmark_notebooks() -> list[str]:
    return sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb") if p.stem not in (REPORT_NOTEBOOK, FLATNESS_NOTEBOOK))


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
            raise UserError(
                f"notebook {notebook} has no parameter '{key}'{did_you_mean(key, declared)}; "
                f"parameters: {', '.join(declared)}"
            )


def check_parameters(path: Path, given: dict[str, str]) -> dict:
    """CLI strings -> typed parameters, checked against the notebook and RunConfig (one-line errors)."""
    check_declared(path.stem, given, notebook_parameters(path))
    typed = RunConfig.from_strings(given).to_dict()
    return {key: typed[key] for key in given}


class Kernel:
    """A python3 kernel for papermill: headless (dashboards draw once), over unix sockets (IPC), not
    loopback TCP (on these machines a loopback connect sometimes loses its first SYN, and kernels over
    TCP stalled for minutes at random).

    `reusable`: one kernel serves a sequence of benchmark-notebook executions (an `esacl notebook`
    grid, a sweep worker's points), so torch, esacl and the dashboards are imported once, when it
    starts, rather than per point; before each later point its namespace is reset (`%reset -f`) and
    its widgets closed, and a point that fails takes the kernel with it (the next starts a fresh one).
    Not for reports: plotly.js is emitted only by a kernel's first `import widgets` (here the silent
    preload, whose output no notebook keeps), and an exported page needs it."""

    def __init__(self, reusable: bool = False):
        self.reusable = reusable
        self.km = None
        self._sockets = None
        self.used = 0

    def ready(self):
        """The kernel manager for the next execution: started if need be, else reset."""
        from jupyter_client.manager import KernelManager

        if self.km is not None and self.km.is_alive():
            self._reset()
        else:
            self.close()
            self._sockets = tempfile.TemporaryDirectory()
            self.km = KernelManager(kernel_name="python3", transport="ipc", ip=f"{self._sockets.name}/kernel")
            self.km.client_factory = _ready_client()
            # The kernel inherits this: no frontend watches it, so dashboards draw once, not per event.
            self.km.start_kernel(env=dict(os.environ, **{HEADLESS: "1"}))
            if self.reusable:
                self._preload()
        self.used += 1
        return self.km

    def _reset(self) -> None:
        # `%reset -f` collects garbage twice, each 0.3 s over the heap of torch, esacl and the dashboards
        # unless that heap is frozen (`_preload`): then it scans only what the last point left. What
        # survives the reset (modules the point imported: 1,700 on split_digits, caches) is frozen too.
        self._silently(
            "import sys\n"
            "if 'ipywidgets' in sys.modules: sys.modules['ipywidgets'].Widget.close_all()\n"
            "get_ipython().run_line_magic('reset', '-f')\n"
            "import gc\n"
            "gc.freeze()"
        )

    def _preload(self) -> None:
        # A grid's kernel imports what every point imports, then freezes that heap out of garbage collection.
        self._silently("import gc, esacl, widgets\ngc.collect(); gc.freeze()")

    def _silently(self, code: str) -> None:
        """Run `code` in the kernel over the shell channel alone, waiting for the reply: no IOPub
        subscription to wait for (0.2 s)."""
        client = self.km.client()
        client.start_channels(iopub=False, stdin=False, hb=False, control=False)
        try:
            msg_id = client.execute(code, silent=True, store_history=False)
            while client.get_shell_msg(timeout=120)["parent_header"].get("msg_id") != msg_id:
                pass
        finally:
            client.stop_channels()

    def done(self, failed: bool) -> None:
        """After an execution: kept for the next one if reusable and it went well, else killed (0.1 s,
        not 0.8 s: every output has arrived). nbclient shuts down only kernels it started itself."""
        if failed or not self.reusable:
            self.close()

    def close(self) -> None:
        if self.km is not None and self.km.has_kernel:
            self.km.shutdown_kernel(now=True)
        self.km = None
        if self._sockets is not None:
            self._sockets.cleanup()
            self._sockets = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _ready_client():
    """jupyter_client's blocking client, but ready as soon as the kernel has answered `kernel_info` on the
    shell channel and its IOPub 'idle' for that request has arrived (proof that IOPub is connected).
    The stock client then drains IOPub until 0.2 s pass in silence: 0.2 s of every grid point, for a
    kernel whose messages from earlier points this fresh client is not subscribed to anyway."""
    from queue import Empty

    from jupyter_client.blocking.client import BlockingKernelClient

    class ReadyClient(BlockingKernelClient):
        def wait_for_ready(self, timeout=None):
            import time

            timeout = 60 if timeout is None else timeout
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not self.is_alive():
                    raise RuntimeError("Kernel died before replying to kernel_info")
                request = self.kernel_info()
                try:
                    reply = self.get_shell_msg(timeout=1)
                    while reply["parent_header"].get("msg_id") != request:
                        reply = self.get_shell_msg(timeout=1)
                    while True:  # Empty after 0.2 s: IOPub not connected yet, ask again
                        msg = self.get_iopub_msg(timeout=0.2)
                        if (
                            msg["parent_header"].get("msg_id") == request
                            and msg["msg_type"] == "status"
                            and msg["content"]["execution_state"] == "idle"
                        ):
                            self._handle_kernel_info_reply(reply)
                            return
                except Empty:
                    continue
            raise RuntimeError(f"Kernel didn't respond in {timeout} seconds")

    return ReadyClient


def papermill_run(
    notebook: Path, output: Path, parameters: dict, progress: bool, kernel: Kernel | None = None
) -> str | None:
    """Execute `notebook` into `output` with papermill, in this process, on `kernel` (default: a
    fresh one, shut down after); None, or where and why it failed."""
    import papermill

    kernel = kernel or Kernel()
    failed = True
    try:
        # No save after every cell (17 notebook writes per point): the executed notebook is written once at
        # the end, also when a cell fails, and only then is it moved into the run directory.
        papermill.execute_notebook(
            str(notebook),
            str(output),
            parameters=parameters,
            kernel_name="python3",
            progress_bar=progress,
            cwd=str(Path.cwd()),
            km=kernel.ready(),
            request_save_on_cell_execute=False,
        )
        failed = False
    except papermill.PapermillExecutionError as err:
        return f"in cell {err.exec_count}: {err.ename}: {err.evalue}"
    finally:
        kernel.done(failed)
    return None


def execute_notebook(
    name: str, params: dict, out: str = "runs", progress: bool = False, kernel: Kernel | None = None
) -> Path:
    """Execute a benchmark notebook with papermill into a fresh run directory; returns the run directory.
    `kernel`: a reusable `Kernel` shared by a grid's points (default: a fresh kernel).

    `params` are typed RunConfig values (see `check_parameters`). The run directory's name is fixed
    before the kernel starts, so the executed notebook can be moved into it. It is kept without
    plotly.js (JupyterLab draws each figure from its JSON); `write_report([run_dir])` makes its page."""
    path = notebook_path(name)
    defaults = {k: v for k, v in notebook_parameters(path).items()}
    literal = {k: parameter_value(v) for k, v in defaults.items()}
    cfg = RunConfig.from_dict({**literal, **params, "out": str(Path(out).resolve()), "progress": progress})
    from esacl.train import default_name

    out_dir = Path(cfg.out)
    name_ = cfg.name or unique_name(out_dir, default_name(cfg))
    run_dir = out_dir / name_
    if run_dir.exists():
        raise UserError(f"run directory {run_dir} already exists; choose another name (runs are never overwritten)")
    parameters = dict(params, out=str(out_dir), name=name_, progress=progress)
    with tempfile.TemporaryDirectory() as tmp:
        executed = Path(tmp) / "notebook.ipynb"
        failure = papermill_run(path, executed, parameters, progress, kernel)
        if failure:
            if run_dir.is_dir() and executed.exists():
                keep_notebook(executed, run_dir / "notebook.ipynb")  # the evidence stays with the run
            raise UserError(f"notebook {name} failed {failure}")
        if not run_dir.is_dir():
            raise UserError(f"notebook {name} ran but wrote no run directory at {run_dir}")
        keep_notebook(executed, run_dir / "notebook.ipynb")
    return run_dir


def keep_notebook(executed: Path, target: Path) -> None:
    """Write an executed notebook into its run directory, slimmed: no plotly.js, no HTML twin of a
    figure (a split_digits run's: 0.35 MB, against 5.8 MB as executed)."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    slim(nb)
    write_atomic(target, nbformat.writes(nb).encode())


def parameter_value(value: str):
    """papermill's inspected defaults are source text; RunConfig wants values."""
    import ast

    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def write_report(
    run_dirs: list, detail: list | None = None, out: str = "reports", title: str | None = None, progress: bool = False
) -> Path:
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
        failure = papermill_run(
            notebook_path(REPORT_NOTEBOOK),
            executed,
            dict(run_dirs=runs, detail=[str(Path(d).resolve()) for d in detail], title=title or default_title(runs)),
            progress,
        )
        if failure:
            raise UserError(f"report failed {failure}")
        write_atomic(target, export_html(executed).encode())
    return target


def default_title(runs) -> str:
    """What the runs are, as a report's heading: benchmarks, methods (the first six), run count, seeds."""
    from esacl.rundir import load_run

    records = [r if hasattr(r, "config") else load_run(r) for r in runs]
    benchmarks = ", ".join(dict.fromkeys(r.config["benchmark"] for r in records))
    methods = list(dict.fromkeys(r.config["method"] for r in records))
    named = ", ".join(methods[:6]) + (f" and {len(methods) - 6} more" if len(methods) > 6 else "")
    seeds = sorted({r.config["seed"] for r in records})
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"
    return f"{benchmarks}: {named} ({len(records)} run{'s' if len(records) > 1 else ''}, {seed_text})"


def default_detail(runs: list[str]) -> list[str]:
    """One run per method (its lowest seed): the sparse methods' if there are any, at most four."""
    from esacl.method import PRESETS
    from esacl.rundir import load_run

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


def fetch_plotly_cartesian() -> Path:
    """Set-up step (never called by a report): download the pinned `plotly.js-cartesian-dist-min`
    tarball from the npm registry, check its published sha512 integrity, and keep its bundle under
    .cache/. Without it reports embed the full plotly.js (4.8 MB instead of 1.5 MB) and still work."""
    import hashlib
    import io
    import tarfile
    import urllib.request

    if PLOTLY_CARTESIAN.is_file():
        return PLOTLY_CARTESIAN
    url, integrity = PLOTLY_CARTESIAN_TARBALL
    with urllib.request.urlopen(url, timeout=60) as response:
        data = response.read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != integrity:
        raise UserError(f"{url} does not match its published integrity {integrity}")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        bundle = tar.extractfile("package/plotly-cartesian.min.js").read()
    PLOTLY_CARTESIAN.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(PLOTLY_CARTESIAN, bundle)
    return PLOTLY_CARTESIAN


# Script tags that would reach the network from an exported notebook: require.js and MathJax (the
# lab template's and plotly's). The reports use neither.
_REMOTE_SCRIPT = re.compile(r'<script[^>]*?\bsrc=\\?"https?:(?:[^"\\]|\\/)*\\?"[^>]*>\s*<\\?/script>')


def output_bundles(nb):
    """Every output that carries a mime bundle (`data`): the cells' and, in stored widget state, the Output
    widgets' (where the dashboards draw)."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if "data" in output:
                yield output
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    for model in state.values():
        yield from (o for o in model.get("state", {}).get("outputs", []) if "data" in o)


# plotly.js as plotly's notebook renderer embeds it: a <script> whose body is the bundle (which holds
# no "</script"), opening with its licence header and version.
_PLOTLYJS = re.compile(r"(<script[^>]*>)/\*\*\n\* plotly\.js v(\S+)\n.*?(</script>)", re.S)


def carries_plotlyjs(bundle: dict) -> bool:
    """Whether an output is plotly's notebook set-up: the whole plotly.js in a <script>."""
    return _PLOTLYJS.search(bundle["data"].get("text/html", "")) is not None


def slim(nb) -> None:
    """Drop what only an HTML export needs: plotly.js (the import cell's 4.8 MB) and each figure's
    HTML twin (JupyterLab draws the figure from its JSON). In place."""
    for cell in nb.cells:
        cell["outputs"] = [o for o in cell.get("outputs", []) if "data" not in o or not carries_plotlyjs(o)]
    for output in output_bundles(nb):
        if PLOTLY_MIME in output["data"]:
            output["data"].pop("text/html", None)


def trace_types(nb) -> set[str]:
    return {
        trace.get("type", "scatter")
        for output in output_bundles(nb)
        for trace in output["data"].get(PLOTLY_MIME, {}).get("data", [])
    }


def export_html(notebook: Path) -> str:
    """An executed notebook as one HTML file that renders offline, inputs hidden.

    Its plotly figures keep every control (plotly's sliders, legends, zoom, hover: no kernel needed).
    ipywidgets are left out: without a kernel their controls would move and change nothing. plotly.js
    is swapped for its cartesian bundle when every figure is cartesian and set-up fetched it."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        template_name="lab", exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True
    )
    nb = nbformat.read(notebook, as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell["outputs"] = [
            o for o in cell.get("outputs", []) if "application/vnd.jupyter.widget-view+json" not in o.get("data", {})
        ]
    if trace_types(nb) <= CARTESIAN_TRACES and PLOTLY_CARTESIAN.is_file():
        cartesian = PLOTLY_CARTESIAN.read_text()
        swap = lambda m: m[1] + cartesian + m[3] if m[2] == PLOTLY_JS_VERSION else m[0]  # noqa: E731
        for output in output_bundles(nb):
            if carries_plotlyjs(output):
                output["data"]["text/html"] = _PLOTLYJS.sub(swap, output["data"]["text/html"])
    body, _ = exporter.from_notebook_node(nb)
    return _REMOTE_SCRIPT.sub("", body)
