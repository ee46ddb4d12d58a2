"""Command line: `esacl run | paper | show | compare | notebook | sweep | report | methods | benchmarks | data`.

User mistakes print one line (`esacl: error: ...`) and exit 2; nothing is half-written.
"""

import argparse
import sys
from pathlib import Path

from esacl.config import KEYS, RunConfig, UserError, cross, did_you_mean, help_lines

# Keys that take a comma-separated list in `esacl run`: the run becomes a grid over them.
GRID_KEYS = ("method", "seed", "sparsity")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage + exit; we want one line
        raise UserError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="esacl",
        description="Efficient continual learning of sparse models: run, inspect and compare EsaCL and its baselines.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser(
        "run", help="train and evaluate one run (or a grid: comma lists for " + ", ".join(GRID_KEYS) + ")"
    )
    for key, type_name, text in help_lines():
        flags = [f"--{key}"] + ([f"--{key.replace('_', '-')}"] if "_" in key else [])
        run.add_argument(*flags, dest=key, metavar=type_name.split()[0].upper(), help=text)
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    run.add_argument("--quiet", action="store_true", help="no progress bars (also off when stderr is not a terminal)")

    paper = sub.add_parser(
        "paper",
        help="the paper's question: the bounds (sgd, joint) and, for each base learner X, "
        "X dense, SparCL-X and EsaCL-X over seeds; a table grouped by base learner with one verdict "
        "line each (EsaCL vs SparCL), then optionally an HTML report",
    )
    paper.add_argument("--benchmark", default="split_digits", help="benchmark (default split_digits)")
    paper.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    paper.add_argument("--learners", default="ewc,co2l,er,derpp", help="base learners (default ewc,co2l,er,derpp)")
    paper.add_argument("--sparsity", type=float, default=0.9, help="target sparsity of SparCL and EsaCL (default 0.9)")
    paper.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "VALUE"),
        help="a RunConfig key for every run (e.g. -p epochs 1)",
    )
    paper.add_argument("--out", help="folder of the run directories (default runs/paper-BENCHMARK-DATE-TIME)")
    paper.add_argument(
        "--report",
        action="store_true",
        help="then write one HTML report: the grouped table and every dashboard of EsaCL-X at the first seed",
    )
    paper.add_argument("--title", help="the report's title")
    paper.add_argument(
        "--workers",
        type=int,
        help="runs at once, each in its own process with its share of the "
        "cores (default: half the usable cores on a CPU, 1 on a GPU)",
    )

    show = sub.add_parser("show", help="print a run's accuracy matrices and summary from disk")
    show.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")

    compare = sub.add_parser(
        "compare",
        help="mean +- std over seeds of every run found under the folders (a sweep "
        "folder: the paper-style table, also written there as summary.csv and summary.html)",
    )
    compare.add_argument("folders", nargs="+", metavar="FOLDER")

    notebook = sub.add_parser(
        "notebook",
        help="execute a benchmark notebook with papermill into a run directory "
        "(comma lists for " + ", ".join(GRID_KEYS) + " run a grid in this process)",
    )
    notebook.add_argument("notebook", metavar="NOTEBOOK", help="split_digits, split_cifar10, ...")
    notebook.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "VALUE"),
        help="a notebook parameter (a RunConfig key)",
    )
    notebook.add_argument("--out", default="runs", help="parent folder of the run directories")
    notebook.add_argument("--report", action="store_true", help="also write one HTML report over the runs")

    sweep = sub.add_parser(
        "sweep",
        help="execute a benchmark notebook over a grid (methods x sparsities x seeds ...), "
        "one run directory per point; resumes, isolates failures, aggregates",
    )
    sweep.add_argument("grid", metavar="GRID", help="a TOML grid file: notebook, [fixed], [axes] (see README)")
    sweep.add_argument("--out", help="the sweep's folder (default: sweeps/<GRID's name>)")
    sweep.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local worker processes (default), or one Ray task per point",
    )
    sweep.add_argument(
        "--workers", type=int, help="local engine: points at a time (default: half the cores, 1 with a GPU)"
    )
    sweep.add_argument(
        "--address", help="ray engine: the cluster ('auto': the running local one; default: start a local Ray instance)"
    )
    sweep.add_argument(
        "--status",
        action="store_true",
        help="which points are complete, incomplete, failed, not started (from disk; runs nothing)",
    )
    sweep.add_argument("--quiet", action="store_true", help="no progress bar (also off when stderr is not a terminal)")

    report = sub.add_parser("report", help="write a self-contained HTML report of runs (one, or a comparison)")
    report.add_argument("paths", nargs="+", metavar="RUN_DIR_OR_FOLDER")
    report.add_argument(
        "--detail",
        nargs="+",
        metavar="RUN_DIR",
        help="runs shown with every dashboard "
        "(default: the only run, else the lowest seed of each sparse method, else of each method; at most 4)",
    )
    report.add_argument("--out", default="reports", help="folder of the HTML report")
    report.add_argument("--title", help="the report's title")

    data = sub.add_parser("data", help="check the image datasets under the data root, or download one")
    actions = data.add_subparsers(dest="action", required=True, parser_class=_Parser)
    check = actions.add_parser(
        "check",
        help="what is present and what is missing or corrupt (CIFAR md5 sums, the "
        "Tiny-ImageNet layout and cache); exit 1 if anything is",
    )
    check.add_argument(
        "names", nargs="*", metavar="NAME", help="split_cifar10, split_cifar100, split_tinyimagenet (default: all)"
    )
    check.add_argument("--data-root", help="folder holding the datasets (default: $ESACL_DATA)")
    fetch = actions.add_parser(
        "download",
        help="fetch a dataset's official archive (torchvision's downloader, "
        "md5-checked) and unpack it under the data root",
    )
    fetch.add_argument("name", metavar="NAME", help="split_cifar10, split_cifar100 or split_tinyimagenet")
    fetch.add_argument("--data-root", help="folder holding the datasets (default: $ESACL_DATA)")

    sub.add_parser("methods", help="list the method presets and their composition")
    sub.add_parser("benchmarks", help="list the benchmarks and their protocol defaults")
    return parser


def _unknown_flag(extra: list[str]) -> UserError:
    flag = extra[0]
    options = [f"--{k}" for k in KEYS] + ["--resume", "--quiet"]
    hint = did_you_mean(flag.replace("-", "_").replace("__", "--"), options)
    return UserError(f"unknown option '{flag}'{hint}; see 'esacl run --help'")


def _grid(strings: dict[str, str]) -> list[RunConfig]:
    """Every config of the cross product of comma lists, all validated before anything runs."""
    axes = {k: strings[k].split(",") for k in GRID_KEYS if k in strings}
    fixed = {k: v for k, v in strings.items() if k not in axes}
    configs = [RunConfig.from_strings(point) for point in cross(fixed, axes)]
    if len(configs) > 1 and "name" in strings:
        raise UserError("config key 'name' names one run; drop it when running a grid")
    return configs


def comparison(records) -> str:
    """The comparison table of `esacl run` grids, `esacl notebook` grids and `esacl compare`: complete
    runs grouped by settings (mean +- std over seeds), then thread-count warnings and the runs left out."""
    from esacl.compare import left_out, summary_rows, summary_text, thread_warnings

    notes = thread_warnings(records) + left_out(records)
    return summary_text(summary_rows(records)) + ("\n\n" + "\n".join(notes) if notes else "")


def cmd_run(args) -> None:
    from esacl.train import resume

    if args.resume:
        given = [k for k in KEYS if getattr(args, k) is not None]
        if given:
            raise UserError(f"--resume continues a run with its own config; drop --{given[0]}")
        record = resume(args.resume, progress=False if args.quiet or not sys.stderr.isatty() else None)
        print(record.text())
        print(f"\nresults in {record.path}")
        return
    strings = {k: getattr(args, k) for k in KEYS if getattr(args, k) is not None}
    if args.quiet:
        strings["progress"] = "false"
    elif not sys.stderr.isatty():  # bars redrawn into a log file are noise
        strings.setdefault("progress", "false")
    configs = _grid(strings)
    records = run_grid(configs)
    if len(configs) == 1:
        print(records[0].text())
    else:
        print("\n" + comparison(records))
    print(f"\nresults in {Path(configs[0].out).resolve()}" if len(configs) > 1 else f"\nresults in {records[0].path}")


def run_grid(configs: list[RunConfig], workers: int = 1) -> list:
    """Every config, in this process (`workers` 1) or over `workers` processes, each run with its share
    of the cores (a config's own `threads` wins); records in the order of `configs`. With more than one
    config, a line per run on stderr ([i/n], runs done, an estimate of the time left) and its class-IL.
    A diverged run is reported and kept (tables leave it out); the others go on."""
    import time

    from esacl.record import load_run
    from esacl.train import Diverged, run

    tic, n = time.perf_counter(), len(configs)
    seconds: dict[str, list[float]] = {}  # method -> wall-clock of its finished runs

    def time_left(finished: set[int], lanes: int) -> float:
        """The unfinished runs at their method's mean so far (the mean of all runs for a method not seen yet)."""
        every = [s for runs in seconds.values() for s in runs]
        guess = {m: sum(v) / len(v) for m, v in seconds.items()}
        mean = sum(every) / len(every)
        return sum(guess.get(configs[j].method, mean) for j in range(n) if j not in finished) / lanes

    finished: set[int] = set()

    def said(i: int, done: int, record, wall: float, lanes: int = 1) -> None:
        seconds.setdefault(configs[i].method, []).append(wall)
        finished.add(i)
        if n == 1:
            return
        cfg, elapsed = configs[i], time.perf_counter() - tic
        left = f", about {time_left(finished, lanes):.0f} s left" if done < n else ""
        sparsity = f" sparsity {cfg.sparsity:g}" if cfg.sparsity else ""
        result = (
            record.status
            if record.diverged
            else f"class-IL {record.summary['class_il']['average']:.2f}, "
            f"task-IL {record.summary['task_il']['average']:.2f}"
        )
        print(
            f"[{done}/{n}] {cfg.benchmark} {cfg.method}{sparsity} seed {cfg.seed}: {result} "
            f"({elapsed:.0f} s so far{left})",
            file=sys.stderr,
            flush=True,
        )

    if workers <= 1 or n == 1:
        records = []
        for i, cfg in enumerate(configs):
            start = time.perf_counter()
            try:
                records.append(run(cfg))
            except Diverged as err:  # one run's divergence: the others still run; tables leave it out
                if n == 1:
                    raise
                records.append(load_run(err.path))
            said(i, i + 1, records[-1], time.perf_counter() - start)
        return records

    import concurrent.futures
    import multiprocessing

    from esacl.config import usable_cores

    share = max(1, usable_cores() // workers)
    shared = [cfg if cfg.threads else cfg.replace(threads=share) for cfg in configs]
    # Longest first, so that no long run starts last: sharpness measurements, then EsaCL's two passes.
    order = sorted(range(n), key=lambda i: (not configs[i].landscape, not configs[i].method.startswith("esacl")))
    records: list = [None] * n
    # spawn, not fork: a forked child would inherit this process's OpenMP state (not fork-safe).
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {pool.submit(_run_in_worker, shared[i]): i for i in order}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            i = futures[future]
            path, wall = future.result()
            records[i] = load_run(path)
            said(i, done, records[i], wall, lanes=workers)
    return records


def _run_in_worker(cfg: RunConfig) -> tuple[str, float]:
    """One run in a worker process of `run_grid`: its run directory (diverged runs included) and seconds."""
    import time

    from esacl.train import Diverged, run

    start = time.perf_counter()
    try:
        path = run(cfg).path
    except Diverged as err:
        path = err.path
    return str(path), time.perf_counter() - start


def cmd_paper(args) -> None:
    import datetime

    from esacl.compare import paper_configs, paper_text

    out = Path(args.out or Path("runs") / f"paper-{args.benchmark}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} already holds files; choose another --out (runs are never overwritten)")
    seeds = _int_list("--seeds", args.seeds)
    learners = [x for x in args.learners.split(",") if x]
    configs = paper_configs(
        args.benchmark, seeds, learners, args.sparsity, str(out), dict(args.parameter), progress=False
    )
    print(
        f"{len(configs)} runs: {args.benchmark}, {', '.join(learners)} dense / SparCL / EsaCL at sparsity "
        f"{args.sparsity:g} and the bounds, seeds {', '.join(map(str, seeds))}; into {out}",
        file=sys.stderr,
        flush=True,
    )
    records = run_grid(configs, paper_workers(args.workers, configs[0]))
    print(paper_text(records, learners))
    print(f"\nresults in {out.resolve()}")
    if args.report:
        from .report import write_report

        detail = [str(r.path) for r in records if r.config["landscape"]]
        title = args.title or f"{args.benchmark}: EsaCL against SparCL on each base learner"
        print("writing the report ...", file=sys.stderr, flush=True)
        print(f"report: {write_report([r.path for r in records], detail=detail, title=title)}")


def paper_workers(given: int | None, cfg: RunConfig) -> int:
    """`esacl paper`'s runs at once: as given, else half the usable cores on a CPU (each run then has
    two threads, as the sweep engine's points), one on a GPU. On 2 cores that is one run at a time:
    two single-thread runs at once finished the split_digits main job only 1.27x sooner (310 s against
    245 s), and a run's last digits follow its thread count."""
    from esacl.config import usable_cores
    from esacl.train import pick_device

    if given is not None:
        if given < 1:
            raise UserError(f"--workers must be at least 1, got {given}")
        return given
    return max(1, usable_cores() // 2) if pick_device(cfg.device).type == "cpu" else 1


def _int_list(flag: str, text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"{flag} takes comma-separated integers, got {text!r}") from None
    return values


def cmd_notebook(args) -> None:
    from .report import Kernel, check_parameters, execute_notebook, notebook_path, write_report

    path = notebook_path(args.notebook)
    given = dict(args.parameter)
    for key in ("out", "progress"):
        if key in given:
            raise UserError(f"'-p {key}' is set by esacl notebook itself; use --out")
    axes = {k: given.pop(k).split(",") for k in GRID_KEYS if k in given and "," in given[k]}
    grid = cross(given, axes)
    if len(grid) > 1 and "name" in given:
        raise UserError("parameter 'name' names one run; drop it when running a grid")
    checked = [check_parameters(path, params) for params in grid]  # every point, before any kernel starts
    run_dirs = []
    with Kernel(reusable=True) as kernel:  # imports paid once for the whole grid
        for i, params in enumerate(checked):
            print(
                f"[{i + 1}/{len(checked)}] {args.notebook} " + " ".join(f"{k}={v}" for k, v in params.items()),
                file=sys.stderr,
                flush=True,
            )
            run_dirs.append(execute_notebook(args.notebook, params, out=args.out, kernel=kernel))
            print(f"  executed notebook: {run_dirs[-1] / 'notebook.ipynb'}", file=sys.stderr)
    from esacl.record import load_run

    if len(run_dirs) > 1:
        print(comparison([load_run(d) for d in run_dirs]))
    else:
        print(load_run(run_dirs[0]).text())
    if args.report:
        print(f"\nreport: {write_report(run_dirs)}")
    print(f"\nresults in {Path(args.out).resolve() if len(run_dirs) > 1 else run_dirs[0]}")


def cmd_report(args) -> None:
    from esacl.record import find_runs
    from .report import write_report

    runs = [str(p) for p in find_runs(args.paths)]
    Path(args.out).mkdir(parents=True, exist_ok=True)  # an unwritable --out fails here, before any progress line
    print(f"writing a report over {len(runs)} run(s) ...", file=sys.stderr, flush=True)
    print(write_report(runs, detail=args.detail, out=args.out, title=args.title))


def cmd_show(args) -> None:
    from esacl.record import load_run

    for i, path in enumerate(args.run_dirs):
        print(("\n" if i else "") + load_run(path).text())


def cmd_compare(args) -> None:
    from esacl.record import find_runs, load_run
    from .sweep import is_sweep, write_summary

    for folder in [f for f in args.folders if is_sweep(f)]:
        table, csv_path, html_path = write_summary(folder)
        print(f"{table}\n\nwritten: {csv_path}, {html_path}")
    folders = [f for f in args.folders if not is_sweep(f)]
    if not folders:
        return
    print(comparison([load_run(p) for p in find_runs(folders)]))


def cmd_sweep(args) -> None:
    from .sweep import load_grid, run_sweep, status_text

    grid = load_grid(args.grid)
    out = Path(args.out or Path("sweeps") / Path(args.grid).stem)
    if args.status:
        print(status_text(grid, out))
        return
    result = run_sweep(
        grid,
        out,
        engine=args.engine,
        workers=args.workers,
        address=args.address,
        progress=sys.stderr.isatty() and not args.quiet,
    )
    print(f"{result.table}\n\nwritten: {out / 'summary.csv'}, {out / 'summary.html'}")
    if result.failed:
        print(f"{len(result.failed)} of {len(result.points)} points failed: see {out / 'failures'}", file=sys.stderr)
        raise SystemExit(1)


def cmd_methods(args) -> None:
    from esacl.presets import PRESETS

    rows = [("method", "learner", "sparsifier", "selector", "source")]
    rows += [(name, p.learner, p.sparsifier, p.selector, p.source) for name, p in PRESETS.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(f"{cell:{w}s}" for cell, w in zip(row, widths)) + "  " + row[4])


def cmd_benchmarks(args) -> None:
    from esacl.data import BENCHMARKS

    for name, spec in BENCHMARKS.items():
        proto = ", ".join(f"{k}={v}" for k, v in spec.protocol.items())
        print(f"{name:20s} {spec.summary}\n{'':20s} defaults: {proto}")


def cmd_data(args) -> None:
    from esacl.data import check_data, download

    names = args.names if args.action == "check" else [args.name]
    if args.action == "download":
        print(f"unpacked into {download(args.name, args.data_root)}")
    lines, ok = check_data(args.data_root, names)
    print("\n".join(lines))
    if not ok:
        raise SystemExit(1)


COMMANDS = dict(
    run=cmd_run,
    paper=cmd_paper,
    show=cmd_show,
    compare=cmd_compare,
    notebook=cmd_notebook,
    report=cmd_report,
    methods=cmd_methods,
    benchmarks=cmd_benchmarks,
    data=cmd_data,
    sweep=cmd_sweep,
)


def main(argv=None) -> int:
    try:
        args, extra = _parser().parse_known_args(argv)
        if extra:
            raise _unknown_flag(extra)
        COMMANDS[args.command](args)
    except UserError as err:
        print(f"esacl: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a read-only or full output folder, a vanished file: the system said no
        where = f"{err.filename}: " if err.filename else ""
        print(f"esacl: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("esacl: interrupted; an unfinished run continues with 'esacl run --resume RUN_DIR'", file=sys.stderr)
        return 130
    return 0
