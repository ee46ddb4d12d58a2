"""The run directory: the contract between trainer, CLI, dashboards, reports and sweeps.

    RUN_DIR/config.json     the resolved RunConfig and which keys took protocol defaults
    RUN_DIR/env.json        package versions, git commit, device
    RUN_DIR/metrics.jsonl   one event per epoch and per task
    RUN_DIR/accuracy.json   accuracy matrices (class-IL, task-IL), summary, completeness
    RUN_DIR/checkpoint.pt   everything needed to resume: model, step, learner, RNGs, position

Every file is written to a temporary name and renamed into place; a run directory is created
exclusively and never reused.
"""

import fcntl
import functools
import io
import json
import math
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import metrics
from .errors import UserError
from .flops import training_components
from .knobs import renamed

CHECKPOINT_FORMAT = "esacl-checkpoint-1"


def _os_error(path, err: OSError) -> UserError:
    return UserError(f"cannot write {path}: {err.strerror or err}")


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file and a rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _os_error(path, err) from None


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=1, allow_nan=True) + "\n").encode()


def unique_name(parent: Path, base: str, suffix: str = "", taken=()) -> str:
    """`base`, else `base-1`, `base-2`, ...: the first name not taken under `parent` (with `suffix`) nor
    in `taken` (names given out already, not made yet)."""
    parent = Path(parent)
    for candidate in [base] + [f"{base}-{i}" for i in range(1, 10000)]:
        if candidate not in taken and not (parent / (candidate + suffix)).exists():
            return candidate
    raise UserError(f"no free name for {base} under {parent}")


def exclusive_lock(path: Path) -> int | None:
    """flock `path` (created if absent) for this process and write its pid there; the descriptor, or
    None when another process holds it. The kernel drops the lock with its last holder, so a killed
    writer leaves no stale lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def lock_holder(path: Path) -> int | None:
    """The pid written in a lock file, if any."""
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class RunDir:
    """One run's folder on disk. `lock()` marks it as being written: a second writer (a concurrent
    `--resume`) is refused."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock_fd: int | None = None

    def lock(self) -> "RunDir":
        """Hold `.lock` while this process writes the run, or a one-line UserError if another does."""
        try:
            fd = exclusive_lock(self.path / ".lock")
        except OSError as err:
            raise _os_error(self.path / ".lock", err) from None
        if fd is None:
            raise UserError(
                f"{self.path} is being written by another process (pid {lock_holder(self.path / '.lock')}); "
                f"wait for it to finish or stop it, then resume"
            )
        self.lock_fd = fd
        return self

    def unlock(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # closing the descriptor releases the flock
            self.lock_fd = None

    def remove_temporaries(self) -> list[Path]:
        """Delete the temporary files of writes a kill interrupted (`.NAME.tmp-PID`); returns them."""
        stale = [p for p in self.path.rglob(".*.tmp-*") if p.is_file()]
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    @classmethod
    def create(cls, out: str, name: str | None, default_name: str) -> "RunDir":
        """Create a fresh run directory under `out`. An explicit `name` that exists is an error;
        the default name gets a numeric suffix until it is unique."""
        parent = Path(out)
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _os_error(parent, err) from None
        candidates = [name] if name else [default_name] + [f"{default_name}-{i}" for i in range(1, 10000)]
        for candidate in candidates:
            path = parent / candidate
            try:
                path.mkdir()
                return cls(path)
            except FileExistsError:
                continue
            except OSError as err:
                raise _os_error(path, err) from None
        raise UserError(
            f"run directory {parent / name} already exists; choose another name (runs are never overwritten)"
        )

    @classmethod
    def open(cls, path) -> "RunDir":
        """An existing run directory (one with a config.json), or a one-line error."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise UserError(f"{path} is not a run directory (no config.json)")
        return cls(path)

    def write_json(self, name: str, obj) -> None:
        (self.path / name).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path / name, _json_bytes(obj))

    def write_npz(self, name: str, arrays: dict) -> None:
        """Compressed numpy arrays at `name` (sub-folders created), written atomically."""
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        try:
            (self.path / name).parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _os_error(self.path / name, err) from None
        write_atomic(self.path / name, buf.getvalue())

    def read_json(self, name: str):
        try:
            return json.loads((self.path / name).read_text())
        except FileNotFoundError:
            raise UserError(f"{self.path / name} is missing") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{self.path / name} is corrupt (not valid JSON)") from None

    # metrics.jsonl: append-only; a resume truncates it to the events its checkpoint had seen.
    def append_event(self, event: dict) -> None:
        try:
            with open(self.path / "metrics.jsonl", "a") as f:
                f.write(json.dumps(event) + "\n")
        except OSError as err:
            raise _os_error(self.path / "metrics.jsonl", err) from None

    def events(self, warn: bool = True) -> list[dict]:
        """The events of metrics.jsonl. An append cut short (a full disk, a kill) leaves a last line
        without its newline: that torn event is dropped, with one warning on stderr (a resume then
        truncates the file back to its checkpoint's events). A bad line elsewhere is a one-line error."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        *lines, tail = path.read_bytes().split(b"\n")  # tail: b"" when the file ends with a newline
        events = []
        for number, line in enumerate(lines, 1):
            try:
                events.append(json.loads(line))
            except ValueError:
                raise UserError(f"{path}:{number} is corrupt (not a JSON event)") from None
        if tail.strip() and warn:
            print(
                f"esacl: warning: {path} ends with a partial event (a write was interrupted); ignoring it",
                file=sys.stderr,
            )
        return events

    def truncate_events(self, count: int) -> None:
        kept = self.events(warn=False)[:count]  # a torn last line goes too (its reader warned already)
        write_atomic(self.path / "metrics.jsonl", "".join(json.dumps(e) + "\n" for e in kept).encode())

    def save_checkpoint(self, state: dict) -> None:
        buf = io.BytesIO()
        torch.save(dict(state, format=CHECKPOINT_FORMAT), buf)
        write_atomic(self.path / "checkpoint.pt", buf.getvalue())

    def load_checkpoint(self, device) -> dict:
        path = self.path / "checkpoint.pt"
        if not path.is_file():
            raise UserError(f"{path} is missing: nothing to resume from")
        try:
            state = torch.load(path, map_location=device, weights_only=True)
        except Exception as err:  # torch raises many types for a truncated or foreign file
            raise UserError(f"{path} is truncated or not an esacl checkpoint ({type(err).__name__})") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise UserError(f"{path} is not an esacl checkpoint (expected format {CHECKPOINT_FORMAT})")
        return state


def git_commit() -> str | None:
    """HEAD of the checkout esacl is imported from (None outside a git checkout)."""
    root = Path(__file__).resolve().parent.parent
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


# Looked up once, when esacl is imported (6-7 ms): a process runs the code it imported while the
# checkout may move on (a long job, a reused sweep kernel), so each run records that code's commit.
CODE_COMMIT = git_commit()


# The knobs that choose how a run computes, not what: recorded in env.json as the run's speed switches.
SPEED_KEYS = ("device", "threads", "channels_last", "amp", "compile")


def environment(device: torch.device, cfg=None) -> dict:
    """What produced a run: versions, git commit, device, the speed switches of `cfg` (a resolved
    RunConfig), and the machine's load when it started (1-minute load average: explains wall-clock,
    never changes a result)."""
    import numpy
    import sklearn

    return dict(
        python=sys.version.split()[0],
        platform=platform.platform(),
        torch=torch.__version__,
        numpy=numpy.__version__,
        sklearn=sklearn.__version__,
        git_commit=CODE_COMMIT,
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        threads=torch.get_num_threads(),
        switches={k: getattr(cfg, k) for k in SPEED_KEYS} if cfg is not None else {},
        load_average=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        argv=sys.argv,
    )


@dataclass
class Record:
    """A run as it stands on disk: what `esacl.run` returns and `esacl show` prints."""

    path: Path
    config: dict
    defaults: list[str]
    class_il: list[list]  # R[t][k], percent; None where k > t
    task_il: list[list]
    complete: bool
    events: list[dict] = field(default_factory=list)
    diverged: dict | None = None  # {'task', 'epoch'} where the training loss stopped being finite
    unreadable: str | None = None  # why accuracy.json is unreadable (then no accuracies): tables leave it out

    @functools.cached_property
    def env(self) -> dict:
        """env.json: what produced the run (versions, device, thread count, speed switches); {} if absent."""
        path = self.path / "env.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def status(self) -> str:
        """'complete', 'diverged (...)', 'unreadable accuracy.json: ...' or 'incomplete (...)', as `show`,
        `compare` and sweeps say it."""
        if self.unreadable:
            return f"unreadable accuracy.json: {self.unreadable}"
        if self.complete:
            return "complete"
        if self.diverged:
            return (
                f"diverged: non-finite loss in task {self.diverged['task']}, epoch {self.diverged['epoch']}, "
                f"after {len(self.class_il)} tasks"
            )
        return f"incomplete ({len(self.class_il)} tasks done)"

    @property
    def summary(self) -> dict:
        """{'class_il': {...}, 'task_il': {...}} of metrics.summary; empty before the first task ends."""
        if not self.class_il:
            return {}
        return {"class_il": metrics.summary(self.class_il), "task_il": metrics.summary(self.task_il)}

    @property
    def task_events(self) -> list[dict]:
        return [e for e in self.events if e.get("event") == "task"]

    @property
    def efficiency(self) -> dict:
        """Training FLOPs (absolute, relative to dense SGD), final sparsity, memory, wall-clock,
        and the pruning jump (accuracy points lost by the final projection: last task, mean)."""
        tasks = self.task_events
        if not tasks:
            return {}
        last = tasks[-1]
        jumps = [e["jump"]["accuracy_drop"] for e in tasks if "jump" in e]
        as_trained = [e["jump"]["as_trained"]["accuracy_drop"] for e in tasks if "as_trained" in e.get("jump", {})]
        one_shot = [e["one_shot"]["accuracy_drop"] for e in tasks if "one_shot" in e]
        return dict(
            flops=last["flops"]["total"],
            flops_relative=last["flops_relative"],
            flops_by_component=training_components(last["flops"]),
            flops_measure=last["flops"].get("measure", 0.0),  # evaluation: not training
            sparsity=last.get("sparsity", 0.0),
            memory=last["memory"],
            train_seconds=last["train_seconds"],
            jump_last=jumps[-1] if jumps else None,
            jump_mean=sum(jumps) / len(jumps) if jumps else None,
            jump_as_trained_last=as_trained[-1] if as_trained else None,
            one_shot_last=one_shot[-1] if one_shot else None,
        )

    def text(self) -> str:
        """Accuracy matrices and summary, as `esacl run` and `esacl show` print them; a one-line UserError
        where accuracy.json is unreadable."""
        if self.unreadable:
            raise UserError(f"{self.path / 'accuracy.json'} is corrupt ({self.unreadable})")
        c = self.config
        lines = [f"run {self.path}  [{c['benchmark']} / {c['method']} / seed {c['seed']}; {self.status}]"]
        for label, R in (("class-IL", self.class_il), ("task-IL", self.task_il)):
            lines += ["", f"{label} accuracy R[t][k] (%), row = after training task t:"]
            lines += [format_matrix(R)]
        if self.class_il:
            lines += ["", f"{'':10s}{'average':>9s}{'forgetting':>12s}{'bwt':>8s}{'learning':>10s}"]
            for label, s in (("class-IL", self.summary["class_il"]), ("task-IL", self.summary["task_il"])):
                lines.append(
                    f"{label:10s}{s['average']:9.2f}{_fmt(s['forgetting'], 12)}"
                    f"{_fmt(s['backward_transfer'], 8)}{s['learning']:10.2f}"
                )
        eff = self.efficiency
        if eff:
            mem = eff["memory"]
            lines += [
                "",
                f"training FLOPs {eff['flops']:.3e} ({eff['flops_relative']:.2f} x dense SGD);  "
                f"train time {eff['train_seconds']:.1f} s",
                f"sparsity {eff['sparsity']:.3f} ({c.get('sparsity_scope', 'layer')} target "
                f"{c.get('sparsity', 0.0):g} on the prunable layers);  model {mem['model_sparse'] / 1e6:.3f} MB "
                f"sparse / {mem['model_dense'] / 1e6:.3f} MB dense;  optimizer state {mem['optimizer_state'] / 1e6:.3f} MB; "
                f"learner state {mem['learner_state'] / 1e6:.3f} MB",
            ]
            if eff["jump_last"] is not None:
                lines.append(
                    f"pruning jump at the final projection: {eff['jump_last']:+.2f} accuracy points lost "
                    f"(mean over tasks {eff['jump_mean']:+.2f})"
                )
            if eff["jump_as_trained_last"] is not None:
                lines.append(
                    f"  the same projection with the batch-norm statistics as trained: "
                    f"{eff['jump_as_trained_last']:+.2f} points"
                )
            if eff["one_shot_last"] is not None:
                lines.append(
                    f"one-shot magnitude pruning to {c.get('one_shot_sparsity', 0):g} at the last task end, no "
                    f"retraining: {eff['one_shot_last']:+.2f} accuracy points lost"
                )
        return "\n".join(lines)


def _fmt(value: float, width: int) -> str:
    return f"{'-':>{width}s}" if value is None or math.isnan(value) else f"{value:{width}.2f}"


def format_matrix(R) -> str:
    if not R:
        return "  (no task finished yet)"
    n = len(R[0])
    head = "      " + "".join(f"{f'k={k}':>8s}" for k in range(n))
    rows = [f"  t={t:<2d}" + "".join(f"{'':>8s}" if a is None else f"{a:8.2f}" for a in row) for t, row in enumerate(R)]
    return "\n".join([head] + rows)


def find_runs(paths) -> list[Path]:
    """The run directories among `paths`, in order: each path is a run directory (it holds a
    config.json) or a folder searched at any depth (a sweep's, a main job's, `runs/`). The one place
    runs are found: the CLI, the report and the dashboards all call it. A path that is neither, or
    paths that hold no run, are a one-line UserError."""
    found = []
    for path in map(Path, paths):
        if (path / "config.json").is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(p.parent for p in path.rglob("config.json"))
        else:
            raise UserError(f"{path} is not a run directory or a folder")
    if paths and not found:
        raise UserError(f"no run directories under {', '.join(map(str, paths))}")
    return found


def load_run(path) -> Record:
    """Read a run directory back (complete or not). An accuracy.json that is not valid JSON or not what
    the recorder writes (`accuracy_problem`) does not raise: the record says why in `unreadable`, with no
    accuracies and not complete, so tables leave the run out and name it (`compare.left_out`); its
    `text()` (`esacl show`) is a one-line error."""
    rundir = RunDir.open(path)
    saved = rundir.read_json("config.json")
    acc, unreadable = {}, None
    if (rundir.path / "accuracy.json").exists():
        try:
            acc = json.loads((rundir.path / "accuracy.json").read_bytes())
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            acc, unreadable = {}, "not valid JSON"
        else:
            unreadable = accuracy_problem(acc)
            acc = {} if unreadable else acc
    return Record(
        rundir.path,
        renamed(saved["config"]),
        saved.get("defaults", []),
        acc.get("class_il", []),
        acc.get("task_il", []),
        bool(acc.get("complete")),
        rundir.events(),
        acc.get("diverged"),
        unreadable,
    )


def accuracy_problem(acc) -> str | None:
    """Why the content of an accuracy.json is not what the recorder writes, or None: an object whose
    `class_il` and `task_il` are matrices of one shape (rows of equal length, at most as many rows as
    columns; numbers up to the diagonal, numbers or null after it), `complete` true or false (true only
    with every row), `diverged` null or an object with `task` and `epoch`. Absent keys read as empty."""
    if not isinstance(acc, dict):
        return f"not a JSON object but {type(acc).__name__}"
    matrices = {key: acc.get(key, []) for key in ("class_il", "task_il")}
    for key, R in matrices.items():
        if not _is_matrix(R):
            return f"'{key}' is not a matrix of accuracies (rows of numbers, null after the diagonal)"
    shapes = {(len(R), len(R[0]) if R else 0) for R in matrices.values()}
    if len(shapes) > 1:
        return "'class_il' and 'task_il' differ in shape"
    complete = acc.get("complete", False)
    if not isinstance(complete, bool):
        return f"'complete' is {complete!r}, not true or false"
    rows, columns = shapes.pop()
    if complete and (rows == 0 or rows != columns):
        return f"'complete' is true with {rows} of {columns} tasks' rows"
    diverged = acc.get("diverged")
    if diverged is not None and not (isinstance(diverged, dict) and {"task", "epoch"} <= set(diverged)):
        return "'diverged' is not an object with 'task' and 'epoch'"
    return None


def _is_matrix(R) -> bool:
    def number(a) -> bool:
        return isinstance(a, (int, float)) and not isinstance(a, bool)

    if not isinstance(R, list) or not all(isinstance(row, list) for row in R):
        return False
    if R and (len({len(row) for row in R}) > 1 or len(R[0]) < len(R)):
        return False
    return all(
        all(number(a) for a in row[: t + 1]) and all(a is None or number(a) for a in row[t + 1 :])
        for t, row in enumerate(R)
    )


def anchors() -> dict:
    """The published reference results shipped with the package (esacl/anchors.json): `sources`,
    `results` (rows with benchmark, method, buffer, class_il / task_il as [mean, std] in percent)
    and `claims`."""
    return json.loads((Path(__file__).parent / "anchors.json").read_text())


def anchor(
    benchmark: str, method: str, buffer: int, source: str | None = None, sparsity: float | None = None
) -> dict | None:
    """The published row for (benchmark, method, buffer size), from `source` and at `sparsity` (rows
    without one are dense) if given; None if absent."""
    for row in anchors()["results"]:
        if (
            (row["benchmark"], row["method"], row["buffer"]) == (benchmark, method, buffer)
            and source in (None, row["source"])
            and (sparsity is None or math.isclose(row.get("sparsity", 0.0), sparsity))
        ):
            return row
    return None


def load_masks(run_dir, task: int) -> dict[str, np.ndarray]:
    """The bit-packed masks saved at the end of `task`, unpacked: name -> bool array."""
    arrays = np.load(Path(run_dir) / "masks" / f"task_{task}.npz")
    names = [k[: -len(".bits")] for k in arrays.files if k.endswith(".bits")]
    return {
        n: np.unpackbits(arrays[n + ".bits"], count=int(np.prod(arrays[n + ".shape"])))
        .astype(bool)
        .reshape(arrays[n + ".shape"])
        for n in names
    }


def load_selections(run_dir, task: int) -> dict[str, np.ndarray]:
    """What IDS recorded for `task`: per example y, running_score, forget_count, learned,
    removed_epoch (-1: kept), and per epoch epoch_score / epoch_kept ([epochs, N])."""
    return dict(np.load(Path(run_dir) / "selections" / f"task_{task}.npz"))
