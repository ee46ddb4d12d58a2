"""Sweeps: a grid of benchmark-notebook executions, on this machine or a Ray cluster.

    grid = load_grid("benchmarks/grids/split_digits.toml")       # or a dict: notebook, fixed, axes
    result = run_sweep(grid, "sweeps/digits")                     # engine="ray", address="auto" for Ray
    print(result.table)                                           # also sweeps/digits/summary.{csv,html}

Each point is one papermill execution of the notebook into its own run directory, named from the
point's parameters (`split_digits-esacl-sp0.9-s1`). Every name and value is checked before anything
runs. A point is complete when its `accuracy.json` says so; a re-run skips complete points, resumes
partial ones from their checkpoint, and retries failed ones. A failing or crashing point is recorded
(`failures/<point>.txt`, `sweep.json`) and the others go on. One sweep at a time writes a folder
(`.lock`).

Folder layout: `<point>/` run directories, `sweep.json` (points, status, error, seconds),
`failures/<point>.txt` (error and traceback), `logs/<point>.log` (a point's output on a local worker;
`logs/workers.log`: the workers' own),
`summary.csv` and `summary.html` (the paper-style table), `.lock`.
"""

import contextlib
import datetime
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from esacl.config import RunConfig, UserError, cross, did_you_mean, usable_cores
from esacl.knobs import renamed
from esacl.compare import summary_csv, summary_html, summary_rows, summary_text, table_notes
from esacl.rundir import exclusive_lock, find_runs, load_run, lock_holder, write_atomic

GRID_KEYS = ("notebook", "fixed", "axes")
SET_BY_SWEEP = ("out", "name", "progress")  # notebook parameters the sweep itself decides
POLL_SECONDS = 0.5  # how often the driver looks at its workers (points take minutes)


# ---------------------------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class Point:
    """One grid point: its run directory's name, the notebook to execute (None: a plain `esacl.run`, as
    `esacl paper` and `esacl run` grids make) and its typed parameters."""

    name: str
    notebook: str | None
    params: dict


@dataclass
class Grid:
    """A validated grid: where it came from, what it says, and its points in order."""

    source: str
    notebook: str | None
    fixed: dict
    axes: dict
    points: list[Point] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(notebook=self.notebook, fixed=self.fixed, axes=self.axes)


def load_grid(source) -> Grid:
    """A grid from a TOML file (path) or a dict with `notebook`, `fixed` and `axes`.

    Every key is checked against the notebook's parameters and every value against RunConfig before
    anything runs; a mistake is one `UserError` line naming the key. Sparsities are skipped for dense
    methods (one point per remaining combination). Without `notebook`, each point executes the
    notebook named after its `benchmark` (fixed or an axis)."""
    if isinstance(source, dict):
        label, spec = "grid", dict(source)
    else:
        label = str(source)
        try:
            spec = tomllib.loads(Path(source).read_text())
        except FileNotFoundError:
            raise UserError(f"grid file {source} does not exist") from None
        except tomllib.TOMLDecodeError as err:
            raise UserError(f"grid file {source} is not valid TOML: {err}") from None
    for key in spec:
        if key not in GRID_KEYS:
            raise UserError(
                f"{label}: unknown key '{key}'{did_you_mean(key, GRID_KEYS)}; a grid has {', '.join(GRID_KEYS)}"
            )
    notebook, fixed, axes = spec.get("notebook"), dict(spec.get("fixed", {})), dict(spec.get("axes", {}))
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{label}: axis '{key}' must be a non-empty list, got {values!r}")
        if key in fixed:
            raise UserError(f"{label}: '{key}' is both fixed and an axis; keep one")
    for key in SET_BY_SWEEP:
        if key in fixed or key in axes:
            raise UserError(f"{label}: '{key}' is set by the sweep itself (run directories go under --out); drop it")
    if notebook is None and "benchmark" not in fixed and "benchmark" not in axes:
        raise UserError(
            f'{label} names no notebook: add notebook = "split_digits" (or a benchmark to [fixed] or [axes])'
        )
    grid = Grid(label, notebook, fixed, axes)
    grid.points = _expand(grid)
    return grid


def config_grid(source: str, configs: list[RunConfig]) -> Grid:
    """A grid of plain runs, one point per config (`esacl paper`, `esacl run` grids): named by the config's
    `name`, its parameters the keys it sets away from their defaults (the sweep sets out and progress)."""
    from esacl.config import KNOB_DEFAULTS

    points = []
    for cfg in configs:
        params = {k: v for k, v in cfg.to_dict().items() if k not in SET_BY_SWEEP and v != KNOB_DEFAULTS[k]}
        points.append(Point(cfg.name, None, params))
    if len({p.name for p in points}) < len(points):
        raise UserError(f"{source}: two runs share a run directory name")
    return Grid(source, None, {}, {}, points)


def _expand(grid: Grid) -> list[Point]:
    from esacl.method import PRESETS
    from .execute import check_declared, notebook_parameters, notebook_path, parameter_value

    declared: dict[str, dict] = {}  # notebook -> its parameters and their defaults (one inspection each)
    points, names = [], {}
    for params in cross(grid.fixed, grid.axes):
        notebook = grid.notebook or params["benchmark"]
        if notebook not in declared:
            declared[notebook] = {
                k: parameter_value(v) for k, v in notebook_parameters(notebook_path(notebook)).items()
            }
        defaults = declared[notebook]
        try:
            check_declared(notebook, params, defaults)
            typed = RunConfig.from_dict(params).to_dict()
        except UserError as err:
            raise UserError(f"{grid.source}: {err}") from None
        params = {k: typed[k] for k in params}
        method = params.get("method", defaults.get("method"))
        if "sparsity" in params and method in PRESETS and not PRESETS[method].sparse:
            del params["sparsity"]  # a dense method has one point per other combination
        point = Point(point_name(notebook, params, defaults, list(grid.axes)), notebook, params)
        try:
            check_point(notebook, params, defaults)
        except UserError as err:
            raise UserError(f"{grid.source}: point {point.name}: {err}") from None
        if point.name in names:
            if names[point.name] != point.params:
                raise UserError(f"{grid.source}: two points share the run directory name {point.name}")
            continue
        names[point.name] = point.params
        points.append(point)
    return points


def check_point(notebook: str, params: dict, defaults: dict) -> None:
    """The point's full config, as its notebook builds it (the notebook's defaults, then the point's
    parameters), resolved and checked against its benchmark's limits (`esacl.data.check_limits`, the
    check a run makes when it loads the benchmark; no data loaded): a one-line UserError."""
    from esacl.config import KEYS, resolve
    from esacl.data import check_limits

    values = {k: v for k, v in {"benchmark": notebook, **defaults, **params}.items() if k in KEYS}
    cfg = RunConfig.from_dict(values)
    check_limits(resolve(cfg)[0])


def point_name(notebook: str, params: dict, defaults: dict, axes: list[str]) -> str:
    """Deterministic run-directory name: the one `esacl run` gives the same config
    (benchmark-method[-spS]-sSEED, sparsity as resolved), with a -KEYvalue part for each other axis
    before the seed."""
    from esacl.config import KEYS, RunConfig
    from esacl.train import default_name

    def show(value) -> str:
        if isinstance(value, bool):
            return "on" if value else "off"
        return f"{value:g}" if isinstance(value, float) else str(value)

    values = {k: v for k, v in {**defaults, "benchmark": notebook, **params}.items() if k in KEYS}
    head, seed = default_name(RunConfig.from_dict(values)).rsplit("-s", 1)
    extra = [
        f"{k}{show(params[k])}" for k in axes if k in params and k not in ("benchmark", "method", "sparsity", "seed")
    ]
    return re.sub(r"[^A-Za-z0-9._=-]", "_", "-".join([head] + extra + [f"s{seed}"]))


# ------------------------------------------------------------------------------------------- status

FINAL = ("complete", "diverged")  # a point in either state is never run again


def point_status(run_dir: Path, failure: Path | None = None, notebook: bool = True) -> tuple[str, str]:
    """(status, detail) of one point from disk: 'complete', 'diverged', 'failed', 'incomplete' or
    'not started'.

    A complete `accuracy.json` decides 'complete', a diverged one 'diverged' (final: a re-run would
    repeat the same steps); a failure file without either, 'failed'. `notebook`: the point executes one
    (a complete point without its executed notebook says so)."""
    acc = _read_json(run_dir / "accuracy.json")
    if acc.get("complete"):
        if not notebook or (run_dir / "notebook.ipynb").is_file():
            return "complete", ""
        return "complete", "no executed notebook (resumed from its checkpoint, or its kernel stopped answering)"
    if acc.get("diverged"):
        where = acc["diverged"]
        return "diverged", f"non-finite training loss in task {where.get('task')}, epoch {where.get('epoch')}"
    checkpoint = (run_dir / "checkpoint.pt").is_file()
    progress = f"{acc.get('tasks_done', 0)}/{acc['n_tasks']} tasks" if "n_tasks" in acc else "no task finished"
    if failure is not None and failure.is_file():
        first = failure.read_text().splitlines()[:1]
        return "failed", (first[0] if first else "") + ("; resumes from its checkpoint" if checkpoint else "")
    if run_dir.is_dir():
        return "incomplete", progress + ("; resumes from its checkpoint" if checkpoint else "; restarts")
    return "not started", ""


def _read_json(path: Path) -> dict:
    """A JSON object from `path`; {} where it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def sweep_status(grid: Grid, out) -> dict[str, tuple[str, str]]:
    """Every point's (status, detail), from disk only: nothing runs."""
    out = Path(out)
    return {
        p.name: point_status(out / p.name, out / "failures" / f"{p.name}.txt", p.notebook is not None)
        for p in grid.points
    }


def status_text(grid: Grid, out) -> str:
    """`esacl sweep --status`: one line per point, counts, and whether a sweep holds the folder."""
    states = sweep_status(grid, out)
    width = max([len(n) for n in states] + [5])
    lines = [f"{name:{width}s}  {status:12s}{detail}" for name, (status, detail) in states.items()]
    counts: dict[str, int] = {}
    for status, _ in states.values():
        counts[status] = counts.get(status, 0) + 1
    order = ("complete", "diverged", "incomplete", "failed", "not started")
    lines += ["", f"{len(states)} points: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in order)]
    holder = SweepLock(out).holder()
    if holder:
        lines.append(f"a sweep is running in {out} (pid {holder})")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- lock


class SweepLock:
    """An exclusive lock on a sweep folder: `.lock`, flock'ed, holding the driver's pid.

    The kernel drops an flock when its last holder dies, so a killed driver leaves no stale lock.
    Local workers inherit the descriptor: a folder stays locked until the last worker of a killed
    driver has stopped (they notice within a second), so two sweeps never write the same run."""

    def __init__(self, out):
        self.path = Path(out) / ".lock"
        self.fd: int | None = None

    def acquire(self, wait_dead: float = 30.0) -> "SweepLock":
        """Take the lock or raise a one-line `UserError`; waits up to `wait_dead` seconds for the
        workers of a driver that is already dead."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            deadline = time.monotonic() + wait_dead
            while (fd := exclusive_lock(self.path)) is None:
                pid = self._pid()
                if pid is None or _alive(pid) or time.monotonic() > deadline:
                    who = (
                        f"another sweep (pid {pid})"
                        if pid and _alive(pid)
                        else f"the workers of a stopped sweep (pid {pid})"
                    )
                    raise UserError(
                        f"{self.path.parent} is locked by {who}; wait for it to finish or stop it, then run again"
                    )
                time.sleep(POLL_SECONDS)
        except OSError as err:
            raise UserError(f"cannot write the sweep folder {self.path.parent}: {err.strerror or err}") from None
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def holder(self) -> int | None:
        """The pid of the sweep holding the folder, or None (probes with a shared lock, at once released)."""
        if not self.path.is_file():
            return None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        except BlockingIOError:
            return self._pid() or -1
        finally:
            os.close(fd)

    def _pid(self) -> int | None:
        return lock_holder(self.path)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------------------------ one point


def run_point(point: Point, out, kernel=None) -> Path:
    """Bring one point to completion and return its run directory: nothing if complete, a resume
    from the checkpoint if partial, else a fresh run (a folder with neither a checkpoint nor a complete
    record holds nothing worth keeping and is removed first): its notebook executed on `kernel` (a
    reusable `execute.Kernel`; default: a fresh kernel), or, for a point without one, `esacl.run`. The
    one place a grid resumes: sweeps, `esacl notebook` grids, `esacl paper` and `esacl run` grids."""
    out = Path(out).resolve()
    run_dir = out / point.name
    acc = _read_json(run_dir / "accuracy.json")
    if acc.get("complete") or acc.get("diverged"):
        return run_dir
    if (run_dir / "checkpoint.pt").is_file() and (run_dir / "config.json").is_file():
        from esacl.train import resume

        resume(run_dir, progress=False)  # the run completes; its executed notebook is not re-made
        return run_dir
    if run_dir.exists():
        shutil.rmtree(run_dir)
    if point.notebook is None:
        from esacl.train import Diverged, run

        try:
            run(RunConfig.from_dict(dict(point.params, name=point.name, out=str(out), progress=False)))
        except Diverged:  # finished: its accuracy.json says where (`point_status`)
            pass
        return run_dir
    from .execute import execute_notebook

    return execute_notebook(
        point.notebook, dict(point.params, name=point.name), out=str(out), progress=False, kernel=kernel
    )


def attempt(point: Point, out, cwd: str | None = None, kernel=None) -> dict:
    """`run_point`, never raising: {'ok', 'error' (one line), 'traceback', 'seconds', 'note'}. The Ray
    task, and what a local worker does per point (with its reused `kernel`).

    A kernel that sits idle while its notebook waits for it is stopped after `STALL_SECONDS` (see
    `_guard_kernel`). If this attempt's own notebook execution stalled, its run directory is removed
    and the notebook executed once more, so the point still gets its executed notebook; a second
    stall fails the point (or, if its run completed, leaves it complete without a notebook)."""
    if cwd and Path(cwd).is_dir():
        os.chdir(cwd)  # relative paths in parameters mean what they meant to the driver
    run_dir = Path(out).resolve() / point.name
    executes = not (run_dir / "checkpoint.pt").is_file()  # run_point will execute the notebook afresh
    tic = time.perf_counter()
    for last in (not executes, True):
        done, stalled = threading.Event(), threading.Event()
        threading.Thread(target=_guard_kernel, args=(done, stalled), daemon=True).start()
        try:
            run_point(point, out, kernel)
            return dict(ok=True, error="", traceback="", note="", seconds=time.perf_counter() - tic)
        except Exception as err:
            if not stalled.is_set():
                return dict(
                    ok=False,
                    error=_one_line(err),
                    traceback=_traceback(err),
                    note="",
                    seconds=time.perf_counter() - tic,
                )
            if not last:  # a run this attempt made and never reported: make it again, cleanly
                shutil.rmtree(run_dir, ignore_errors=True)
                continue
            if _read_json(run_dir / "accuracy.json").get("complete"):
                return dict(
                    ok=True,
                    error="",
                    traceback="",
                    seconds=time.perf_counter() - tic,
                    note=f"the run completed, then its kernel sat idle {STALL_SECONDS} s without "
                    f"answering; stopped it, so the point has no executed notebook",
                )
            return dict(
                ok=False,
                error=f"the notebook's kernel sat idle {STALL_SECONDS} s without answering; "
                f"stopped it (the next sweep resumes the point)",
                traceback=_traceback(err),
                note="",
                seconds=time.perf_counter() - tic,
            )
        finally:
            done.set()


# An idle kernel while papermill waits for its reply is a hang (seen now and then with kernels over
# loopback TCP, at the end of the training cell; execute.py now talks to kernels over IPC). A safety net:
# without it a sweep would wait forever. The cost: a stall is noticed this late, and a cell that
# legitimately idles this long (the benchmark notebooks have none) is stopped.
STALL_SECONDS = 60


def _guard_kernel(done: threading.Event, stalled: threading.Event) -> None:
    """Kill this process's children (the notebook's kernel) once they have used no CPU for
    `STALL_SECONDS`; papermill then reports a dead kernel instead of waiting forever."""
    import psutil  # comes with ipykernel

    every = min(5.0, STALL_SECONDS / 4)  # a look at the children's CPU time costs ~0.1 ms
    me, last, idle_since = psutil.Process(), -1.0, time.monotonic()
    while not done.wait(every):
        children, cpu = me.children(recursive=True), 0.0
        for child in children:
            try:
                times = child.cpu_times()
                cpu += times.user + times.system
            except psutil.Error:
                pass
        if not children or cpu - last > 0.1 * every / 5:  # busy (or no kernel yet): not a stall
            last, idle_since = cpu, time.monotonic()
        elif time.monotonic() - idle_since > STALL_SECONDS:
            stalled.set()
            for child in children:
                try:
                    child.kill()
                except psutil.Error:
                    pass
            return


def _one_line(err: BaseException) -> str:
    text = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
    return " ".join(text.split())[:500]


def _traceback(err: BaseException) -> str:
    return "".join(traceback.format_exception(err))


def _write_failure(out: Path, name: str, error: str, text: str) -> None:
    """failures/<name>.txt: the one-line error, the traceback, and where the executed notebook is (a
    notebook that failed after its run directory was made keeps it there, with the kernel's traceback)."""
    notebook = out / name / "notebook.ipynb"
    where = f"\nthe executed notebook, with the kernel's traceback: {notebook}\n" if notebook.is_file() else ""
    (out / "failures").mkdir(exist_ok=True)
    write_atomic(out / "failures" / f"{name}.txt", f"{error}\n\n{text}\n{where}".encode())


# ------------------------------------------------------------------------------------------- driver


@dataclass
class SweepResult:
    """What `run_sweep` did: every point's status, error, seconds; the summary table and its files."""

    out: Path
    points: dict[str, dict]
    table: str = ""

    @property
    def failed(self) -> list[str]:
        return [n for n, p in self.points.items() if p["status"] == "failed"]


def expected_cost(method: str, landscape: bool = False) -> float:
    """A run's rough wall-clock in units of a dense SGD run of the same protocol, for ordering a grid
    (longest first, so that no long run starts last): EsaCL's two passes per step, each replay learner's
    extra batch, joint's growing data, CO2L's contrastive views and the sharpness measurements (measured
    on the split_digits main job)."""
    from esacl.method import PRESETS

    preset = PRESETS.get(method)
    if preset is None:
        return 1.0
    learner = {"co2l": 4.0, "joint": 3.0, "derpp": 2.5, "er": 1.8, "lwf": 1.5, "agem": 1.8}.get(preset.learner, 1.0)
    step = 2.0 if method.startswith("esacl") else 1.0
    return learner * step + (10.0 if landscape else 0.0)


def default_workers(n_points: int) -> int:
    """Local engine: one point per usable core (each kernel trains with the canonical single thread), at
    most the number of points; one point at a time on a GPU machine (points would share one device)."""
    try:
        import torch

        if torch.cuda.is_available():
            return 1
    except ImportError:
        pass
    return max(1, min(usable_cores(), n_points))


def run_sweep(
    grid,
    out,
    engine: str = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
    job: bool = True,
) -> SweepResult:
    """Run every point of `grid` (a `Grid`, a TOML path or a dict) not yet complete under `out`: the one
    grid runner (sweeps, `esacl notebook` grids, `esacl paper`, `esacl run` grids).

    engine 'local': each point in its own worker process, `workers` at a time (`default_workers`).
    engine 'ray': each point a Ray task on the cluster at `address` (None: a local Ray instance;
    'auto': the running local cluster), one GPU per point when it trains on CUDA, else one CPU.
    A line per finished point: its accuracies, the time so far and an estimate of the time left.
    `job`: `out` is the grid's own folder: locked, `sweep.json` written as points start and end, each
    point's output in `logs/`, failures in `failures/`, then `summary.csv` / `summary.html`. Without
    (an `esacl run` grid into a shared folder) only the run directories are written; the points'
    output goes to this process's."""
    if engine not in ("local", "ray"):
        raise UserError(f"engine must be 'local' or 'ray', got {engine!r}")
    if workers is not None and (engine != "local" or workers < 1):
        raise UserError(
            "--workers is for the local engine (Ray schedules by each point's resources)"
            if engine != "local"
            else f"--workers must be at least 1, got {workers}"
        )
    if address is not None and engine != "ray":
        raise UserError("--address is for --engine ray")
    grid = grid if isinstance(grid, Grid) else load_grid(grid)
    out = Path(out).resolve()
    if not job:
        out.mkdir(parents=True, exist_ok=True)
        return _drive(grid, out, engine, workers, address, progress, None)
    lock = SweepLock(out).acquire()
    try:
        return _drive(grid, out, engine, workers, address, progress, lock)
    finally:
        lock.release()


def _drive(grid: Grid, out: Path, engine, workers, address, progress, lock: SweepLock | None) -> SweepResult:
    from tqdm.auto import tqdm

    job = lock is not None
    previous = _read_json(out / "sweep.json").get("points", {}) if job else {}
    state = {}
    for p in grid.points:
        _check_same_point(p, out / p.name)
        status, detail = point_status(out / p.name, notebook=p.notebook is not None)
        old = previous.get(p.name, {})
        state[p.name] = dict(
            notebook=p.notebook,
            params=p.params,
            status=status,
            error=detail if status == "diverged" else "",
            seconds=old.get("seconds") if status in FINAL else None,
            attempts=old.get("attempts", 0),
        )
        if status in FINAL:
            (out / "failures" / f"{p.name}.txt").unlink(missing_ok=True)
    meta = dict(
        grid=grid.to_dict(), source=grid.source, engine=engine, driver_pid=os.getpid(), started=_now(), points=state
    )

    def save() -> None:
        if job:
            write_atomic(out / "sweep.json", (json.dumps(dict(meta, updated=_now()), indent=1) + "\n").encode())

    save()
    print(f"{len(grid.points)} points into {out} ({engine} engine)", file=sys.stderr, flush=True)
    pending = [p for p in grid.points if state[p.name]["status"] not in FINAL]
    skipped = len(grid.points) - len(pending)
    bar = tqdm(
        total=len(pending),
        desc=f"sweep {out.name}",
        unit="point",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    counts = dict(running=0, failed=0, skipped=skipped)
    lanes = (workers or default_workers(len(pending))) if engine == "local" else 1
    tally = _Tally(len(pending), lanes)

    def started(point: Point) -> None:
        state[point.name].update(status="running", attempts=state[point.name]["attempts"] + 1)
        counts["running"] += 1
        bar.set_postfix(counts, refresh=True)
        save()

    def finished(point: Point, result: dict) -> None:
        entry = state[point.name]
        counts["running"] -= 1
        status, detail = point_status(out / point.name, notebook=point.notebook is not None)
        if status == "diverged":  # a finished point, left out of the table
            entry.update(status="diverged", error=detail, seconds=round(result["seconds"], 2))
            (out / "failures" / f"{point.name}.txt").unlink(missing_ok=True)
        elif result["ok"]:
            entry.update(status="complete", error="", seconds=round(result["seconds"], 2))
            if detail:  # e.g. complete without an executed notebook
                entry["note"] = detail
            (out / "failures" / f"{point.name}.txt").unlink(missing_ok=True)
        else:
            counts["failed"] += 1
            entry.update(status="failed", error=result["error"], seconds=round(result["seconds"], 2))
            if job and result.get("traceback") is not None:  # a local worker wrote its own failure file
                _write_failure(out, point.name, result["error"], result["traceback"])
        save()
        bar.update(1)
        bar.set_postfix(counts, refresh=True)
        rest = [p for p in pending if state[p.name]["status"] in ("running", "not started", "incomplete")]
        bar.write(tally.line(point, entry, out / point.name, rest), file=sys.stderr)

    if skipped:
        bar.write(f"{skipped} of {len(grid.points)} points already complete or diverged: skipped", file=sys.stderr)
    try:
        if engine == "local":
            _local(pending, out, workers or default_workers(len(pending)), lock, started, finished)
        else:
            _ray(pending, out, address, started, finished)
    finally:
        bar.close()
        for entry in state.values():
            if entry["status"] == "running":  # interrupted: the next call resumes it
                entry["status"] = "incomplete"
        save()
    table = write_summary(out)[0] if job else ""
    return SweepResult(out, state, table)


class _Tally:
    """Each finished point's progress line: [k/n], its accuracies (as `esacl show` gives them) or its
    state, its seconds, the time so far and an estimate of the time left: the unfinished points at their
    method's mean so far (a method not seen yet: the mean of all), over the points run at once."""

    def __init__(self, n: int, lanes: int):
        self.n, self.lanes, self.done = n, lanes, 0
        self.tic, self.seconds = time.perf_counter(), {}  # method -> wall-clock of its finished points

    def line(self, point: Point, entry: dict, run_dir: Path, rest: list[Point]) -> str:
        self.done += 1
        self.seconds.setdefault(point.params.get("method"), []).append(entry["seconds"])
        what = entry["status"]
        if what == "complete":
            summary = load_run(run_dir).summary
            what = f"class-IL {summary['class_il']['average']:.2f}, task-IL {summary['task_il']['average']:.2f}"
        left = ""
        if rest:
            every = [x for runs in self.seconds.values() for x in runs]
            guess, mean = {m: sum(v) / len(v) for m, v in self.seconds.items()}, sum(every) / len(every)
            left = f", about {sum(guess.get(p.params.get('method'), mean) for p in rest) / self.lanes:.0f} s left"
        line = (
            f"[{self.done}/{self.n}] {point.name}: {what} in {entry['seconds']:.1f} s "
            f"({time.perf_counter() - self.tic:.0f} s so far{left})"
        )
        return line + (f" ({entry['error']})" if entry["error"] else "")


def _check_same_point(point: Point, run_dir: Path) -> None:
    """An existing run directory must have been made with this point's parameters (a grid edited
    between two calls into the same folder would otherwise skip points it never ran)."""
    saved = renamed(_read_json(run_dir / "config.json").get("config") or {})  # read with today's key names
    if not saved:
        return
    for key, value in point.params.items():
        if saved.get(key) != value:
            raise UserError(
                f"{run_dir} was run with {key}={saved.get(key)!r} but the grid now says {value!r}; "
                f"sweep into another --out folder"
            )


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


# Local engine: `workers` worker processes, each running points one at a time on one reused kernel
# (torch, esacl and the dashboards imported once per worker, not per point). Processes rather than a
# pool: a worker that dies (out of memory, a segfault) is one failed point and a fresh worker takes the
# next, while a dead pool worker breaks every pending future. A point that kills its kernel fails alone:
# the worker's next point starts a fresh kernel.
WORKER = [sys.executable, "-m", "workbench.sweep"]


class _Worker:
    """One local worker process: points go in as JSON lines on its stdin, each answered by a JSON
    line on its result pipe. Its own output goes to `logs/workers.log`, a point's to `logs/<point>.log`."""

    def __init__(self, out: Path, env: dict, lock_fd: int | None):
        read, write = os.pipe()
        logs = lock_fd is not None  # a job folder's worker logs there; another writes to our stderr
        with open(out / "logs" / "workers.log", "ab") if logs else contextlib.nullcontext(2) as log:
            self.proc = subprocess.Popen(
                WORKER + [str(write)],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=(lock_fd, write) if logs else (write,),
            )
        os.close(write)
        self.results = os.fdopen(read, "r")
        self.point: Point | None = None  # the point it is running
        self.since = 0.0

    def give(self, point: Point, out: Path, logs: bool) -> None:
        self.point, self.since = point, time.perf_counter()
        try:
            spec = dict(point=point.__dict__, out=str(out), logs=logs)
            self.proc.stdin.write((json.dumps(spec) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:  # it died already: its result pipe says so
            pass

    def retire(self) -> None:
        """No more points: the worker closes its kernel and exits."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass


def _local(
    points: list[Point], out: Path, workers: int, lock: SweepLock | None, started, finished, reuse: bool = True
) -> None:
    """Run `points` over `workers` worker processes (`reuse` False: a fresh worker and kernel per point,
    the engine's former cost, kept for `benchmarks/startup.py`). `lock` None: not a job folder (no logs)."""
    import selectors

    env = dict(os.environ)
    # Each point's run sets its own thread count (the canonical single thread on a CPU); the kernel's other
    # libraries (numpy's BLAS) take one thread too, so parallel points never oversubscribe the cores.
    env.setdefault("OMP_NUM_THREADS", "1")
    if lock is not None:
        (out / "logs").mkdir(exist_ok=True)
    longest_first = sorted(points, key=lambda p: -expected_cost(p.params.get("method", ""), p.params.get("landscape")))
    queue, pool, retired, selector = longest_first, [], [], selectors.DefaultSelector()

    def start(worker: _Worker) -> None:
        point = queue.pop(0)
        worker.give(point, out, logs=lock is not None)
        started(point)

    def drop(worker: _Worker) -> None:
        selector.unregister(worker.results)
        pool.remove(worker)
        worker.retire()
        retired.append(worker)  # waited for at the end (it closes its kernel meanwhile)

    try:
        while queue or pool:
            for worker in [w for w in pool if w.point is None]:
                if queue:
                    start(worker)
                else:  # nothing left for it: free its memory now
                    drop(worker)
            while queue and len(pool) < workers:
                pool.append(_Worker(out, env, lock.fd if lock is not None else None))
                selector.register(pool[-1].results, selectors.EVENT_READ, pool[-1])
                start(pool[-1])
            for key, _ in selector.select(timeout=POLL_SECONDS):
                worker, line = key.data, key.data.results.readline()
                point, seconds = worker.point, time.perf_counter() - worker.since
                worker.point = None
                if line:  # it wrote any failure file itself
                    finished(point, dict(json.loads(line), seconds=seconds, traceback=None))
                    if not reuse:
                        drop(worker)
                else:  # end of its pipe: the worker died
                    drop(worker)
                    finished(point, _worker_result(worker.proc.wait(), point, out, seconds))
    except BaseException:
        for worker in pool + retired:  # interrupted: stop the workers (they stop their kernels)
            if worker.proc.poll() is None:
                worker.proc.terminate()
        raise
    finally:
        for worker in pool:
            worker.retire()
        for worker in pool + retired:
            try:
                worker.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
            worker.results.close()
        selector.close()


def _worker_result(code: int, point: Point, out: Path, seconds: float) -> dict:
    """The failure of a point whose worker died while running it."""
    how = (
        f"signal {signal.Signals(-code).name}"
        if code < 0 and -code in signal.Signals._value2member_map_
        else f"exit code {code}"
    )
    hint = " (out of memory?)" if code == -signal.SIGKILL else ""
    log = out / "logs" / f"{point.name}.log"
    log = log if log.is_file() else out / "logs" / "workers.log"
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.is_file() else ""
    return dict(
        ok=False,
        error=f"worker died: {how}{hint}",
        seconds=seconds,
        traceback=f"the worker process ended with {how}; last lines of {log}:\n{tail}",
    )


def _worker_main(argv: list[str]) -> int:
    """A local worker: points from stdin (a JSON line each), one at a time on one reused kernel, each
    answered on the result pipe (file descriptor argv[0]) with {'ok', 'error', 'note'}; exits at the
    end of stdin. A failed point's failure file is written here."""
    results = os.fdopen(int(argv[0]), "w")
    driver = os.getppid()

    def watch() -> None:  # a killed driver must not leave a run being written
        while os.getppid() == driver:
            time.sleep(POLL_SECONDS)
        _stop(1)

    threading.Thread(target=watch, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: _stop(143))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle: it stops us with SIGTERM
    from .execute import Kernel

    with Kernel(reusable=True) as kernel:
        for line in sys.stdin:
            spec = json.loads(line)
            point, out, logs = Point(**spec["point"]), Path(spec["out"]), spec["logs"]
            with _output_to(out / "logs" / f"{point.name}.log") if logs else contextlib.nullcontext():
                result = attempt(point, out, kernel=kernel)
                if result["note"]:
                    print(result["note"], flush=True)
            if logs and not result["ok"]:
                _write_failure(out, point.name, result["error"], result["traceback"])
            results.write(json.dumps(dict(ok=result["ok"], error=result["error"], note=result["note"])) + "\n")
            results.flush()
    return 0


@contextlib.contextmanager
def _output_to(path: Path):
    """This process's stdout and stderr (file descriptors 1 and 2) appended to `path` for a while. A
    kernel started meanwhile keeps writing its own (rare) output there, as its first point's."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, old in zip((1, 2), saved):
            os.dup2(old, fd)
            os.close(old)


def _stop(code: int) -> None:
    """Kill this worker's descendants (the notebook's kernel), then exit at once."""
    try:
        import psutil  # comes with ipykernel

        for child in psutil.Process().children(recursive=True):
            try:
                child.kill()
            except psutil.Error:
                pass
    finally:
        os._exit(code)


def _ray(points: list[Point], out: Path, address: str | None, started, finished) -> None:
    try:
        import ray
    except ImportError:
        raise UserError("the ray engine needs Ray: pip install the ray version pinned in requirements.txt") from None
    ours = not ray.is_initialized()
    if ours:
        # A fresh local instance gets no dashboard (its extra processes cost a few seconds and memory).
        extra = {} if address or os.environ.get("RAY_ADDRESS") else dict(include_dashboard=False)
        try:
            ray.init(address=address, log_to_driver=False, **extra)
        except Exception as err:  # Ray raises several types for an unreachable cluster
            raise UserError(
                f"cannot reach a Ray cluster at {address or 'a new local instance'}: {_one_line(err)}"
            ) from None
    try:
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        # No automatic retries: a point that crashed its worker is a failed point; the next sweep resumes it.
        task = ray.remote(max_retries=0)(attempt)
        refs = {}
        for point in points:
            device = str(point.params.get("device", "auto"))
            wants_gpu = device.startswith("cuda") or (device == "auto" and gpus)
            resources = dict(num_gpus=1, num_cpus=0) if wants_gpu else dict(num_cpus=1)
            refs[task.options(**resources).remote(point, str(out), os.getcwd())] = (point, time.perf_counter())
            started(point)
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_SECONDS * 2)
            for ref in done:
                point, tic = refs.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as err:  # the task's worker died, or Ray failed it
                    result = dict(
                        ok=False, error=f"ray: {_one_line(err)}", traceback=str(err), seconds=time.perf_counter() - tic
                    )
                finished(point, result)
    finally:
        if ours:
            ray.shutdown()


def write_summary(folder) -> tuple[str, Path, Path]:
    """Aggregate every run directory under `folder` into `summary.csv` and `summary.html`; returns
    (text table, csv path, html path). Incomplete runs are left out of the table and named below it."""
    folder = Path(folder)
    try:
        records = [load_run(p) for p in find_runs([folder])]
    except UserError:  # no run yet: every point failed before its first file
        records = []
    rows = summary_rows(records)
    text = summary_text(rows)
    notes = table_notes(records, rows)
    if notes:
        text += "\n\n" + "\n".join(notes)
    write_atomic(folder / "summary.csv", summary_csv(rows).encode())
    write_atomic(folder / "summary.html", summary_html(rows, f"Sweep {folder.name}").encode())
    return text, folder / "summary.csv", folder / "summary.html"


def is_sweep(folder) -> bool:
    """Whether `folder` is a sweep's output folder (it has a sweep.json)."""
    return (Path(folder) / "sweep.json").is_file()


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
