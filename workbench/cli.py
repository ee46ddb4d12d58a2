"""Command line: `esacl run | paper | show | compare | notebook | sweep | report | methods | benchmarks | data`.

User mistakes print one line (`esacl: error: ...`) and exit 2; nothing is half-written.
"""

import argparse
import sys
from pathlib import Path

from esacl.config import KEYS, RunConfig, UserError, cross, did_you_mean, help_lines

# Keys that take a comma-separated list in `esacl run`: the run becomes a grid over them.
GRID_KEYS = ("method", "seed", "sparsity")
WORKERS_HELP = (
    "runs at once, each in its own process (default: one per usable core on a CPU, each run with the "
    "canonical single thread; 1 on a GPU)"
)


class Interrupted(Exception):
    """Ctrl-C during a job: the message says how to continue it."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage + exit; we want one line
        raise UserError(message)


def engine_options(parser, what: str) -> None:
    """--engine and --address: where a grid's points run (`workbench.sweep.run_sweep`)."""
    parser.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help=f"local worker processes (default), or one Ray task per {what}",
    )
    parser.add_argument(
        "--address", help="ray engine: the cluster ('auto': the running local one; default: start a local Ray instance)"
    )


def parameter_option(parser, help: str) -> None:
    """`-p/--parameter KEY VALUE`, repeatable: `args.parameter` is the [KEY, VALUE] pairs given."""
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"), help=help)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="esacl",
        description="Efficient continual learning of sparse models: run, inspect and compare EsaCL and its baselines.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    for add in (_run_command, _paper_command, _notebook_commands, _run_dir_commands):
        add(sub)
    return parser


def _run_command(sub) -> None:
    """`esacl run`: every RunConfig key a flag."""
    run = sub.add_parser(
        "run", help="train and evaluate one run (or a grid: comma lists for " + ", ".join(GRID_KEYS) + ")"
    )
    for key, type_name, text in help_lines():
        flags = [f"--{key}"] + ([f"--{key.replace('_', '-')}"] if "_" in key else [])
        run.add_argument(*flags, dest=key, metavar=type_name.split()[0].upper(), help=text)
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    run.add_argument("--workers", type=int, help=WORKERS_HELP)
    engine_options(run, "run of a grid")
    run.add_argument("--quiet", action="store_true", help="no progress bars (also off when stderr is not a terminal)")


def _paper_command(sub) -> None:
    """`esacl paper`: the main job, and its --frontier variant."""
    paper = sub.add_parser(
        "paper",
        help="the paper's question: the bounds (sgd, joint) and, for each base learner X, "
        "X dense, SparCL-X and EsaCL-X over seeds; a table grouped by base learner with one verdict "
        "line each (EsaCL vs SparCL), then optionally an HTML report",
    )
    paper.add_argument("--benchmark", default="split_digits", help="benchmark (default split_digits)")
    paper.add_argument(
        "--seeds",
        help="comma-separated seeds of SparCL-X and EsaCL-X, whose paired differences the verdicts judge "
        "(default 0-9), and of the bounds and dense learners unless --dense-seeds is given",
    )
    paper.add_argument(
        "--dense-seeds",
        help="comma-separated seeds of the bounds and dense learners, only shown beside the pairs "
        "(default: 0-2 with the default --seeds, else the --seeds list)",
    )
    paper.add_argument("--learners", default="ewc,co2l,er,derpp", help="base learners (default ewc,co2l,er,derpp)")
    paper.add_argument("--sparsity", type=float, default=0.9, help="target sparsity of SparCL and EsaCL (default 0.9)")
    parameter_option(paper, "a RunConfig key for every run (e.g. -p epochs 1)")
    paper.add_argument(
        "--out",
        help="folder of the run directories (default runs/paper-BENCHMARK-DATE-TIME); the same command "
        "again with the same --out finishes an interrupted job (complete runs kept, interrupted ones resumed)",
    )
    paper.add_argument(
        "--report",
        action="store_true",
        help="then write one HTML report: the grouped table and every dashboard of EsaCL-X at the first seed",
    )
    paper.add_argument("--title", help="the report's title")
    paper.add_argument("--workers", type=int, help=WORKERS_HELP)
    engine_options(paper, "run")
    paper.add_argument(
        "--frontier",
        action="store_true",
        help="instead: EsaCL-X and SparCL-X at several cost points each (esacl.frontier.LADDER), their "
        "accuracy-against-FLOPs frontiers, and the verdicts at SparCL-X's default cost "
        "(default folder runs/frontier-BENCHMARK-DATE-TIME)",
    )


def _notebook_commands(sub) -> None:
    """`esacl notebook` and `esacl sweep`."""
    notebook = sub.add_parser(
        "notebook",
        help="execute a benchmark notebook with papermill into a run directory "
        "(comma lists for " + ", ".join(GRID_KEYS) + " run a grid: a sweep of the notebook)",
    )
    notebook.add_argument("notebook", metavar="NOTEBOOK", help="split_digits, split_cifar10, ...")
    parameter_option(notebook, "a notebook parameter (a RunConfig key)")
    notebook.add_argument(
        "--out",
        help="parent folder of the run directory (default runs); for a grid, the sweep's folder (default "
        "runs/notebook-NAME-DATE-TIME; the same call again finishes an interrupted grid)",
    )
    notebook.add_argument("--workers", type=int, help="grid points at once (default: one per usable core; 1 on a GPU)")
    notebook.add_argument("--report", action="store_true", help="also write one HTML report over the runs")

    sweep = sub.add_parser(
        "sweep",
        help="execute a benchmark notebook over a grid (methods x sparsities x seeds ...), "
        "one run directory per point; resumes, isolates failures, aggregates",
    )
    sweep.add_argument("grid", metavar="GRID", help="a TOML grid file: notebook, [fixed], [axes] (see README)")
    sweep.add_argument("--out", help="the sweep's folder (default: sweeps/<GRID's name>)")
    engine_options(sweep, "point")
    sweep.add_argument(
        "--workers", type=int, help="local engine: points at a time (default: one per usable core, 1 with a GPU)"
    )
    sweep.add_argument(
        "--status",
        action="store_true",
        help="which points are complete, incomplete, failed, not started (from disk; runs nothing)",
    )
    sweep.add_argument("--quiet", action="store_true", help="no progress bar (also off when stderr is not a terminal)")


def _run_dir_commands(sub) -> None:
    """What reads run directories and lists the registries: show, compare, report, data, methods, benchmarks."""
    show = sub.add_parser("show", help="print a run's accuracy matrices and summary from disk")
    show.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")

    compare = sub.add_parser(
        "compare",
        help="mean +- std over seeds of every run found under the folders (a sweep "
        "folder: the paper-style table, also written there as summary.csv and summary.html)",
    )
    compare.add_argument("folders", nargs="+", metavar="FOLDER")

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


def _unknown_flag(extra: list[str]) -> UserError:
    flag = extra[0]
    options = [f"--{k}" for k in KEYS] + ["--resume", "--quiet", "--workers", "--engine", "--address"]
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
    runs grouped by settings (mean +- std over seeds), then the notes below a table (`table_notes`)."""
    from esacl.compare import summary_rows, summary_text, table_notes

    rows = summary_rows(records)
    notes = table_notes(records, rows)
    return summary_text(rows) + ("\n\n" + "\n".join(notes) if notes else "")


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
    workers = grid_workers(args.workers, configs) if args.engine == "local" else args.workers
    records, failed = run_grid(configs, workers, engine=args.engine, address=args.address)
    if len(configs) == 1:
        if records[0] is not None:
            print(records[0].text())
            print(f"\nresults in {records[0].path}")
    else:
        print("\n" + comparison([r for r in records if r is not None]))
        print(f"\nresults in {Path(configs[0].out).resolve()}")
    grid_failed(failed)


def run_grid(
    configs: list[RunConfig],
    workers: int | None = 1,
    resumable: bool = False,
    engine: str = "local",
    address: str | None = None,
) -> tuple[list, list[str]]:
    """One config in this process; a grid through the sweep engine (`workbench.sweep.run_sweep`: local
    worker processes, `workers` at a time, or Ray), each run with its own config's thread count (the
    canonical single thread on a CPU), so a result never depends on the worker count. Returns the
    records in the order of `configs` (a point that failed: None) and the failed points' errors.

    `resumable`: every config names its run directory, and each `out` is a job folder of its grid's (a
    sweep's: `sweep.json`, `logs/`, ...): the same call again keeps complete runs and resumes
    interrupted ones. Without, the runs go into their `out` as new run directories."""
    from esacl.data import check_limits
    from esacl.rundir import load_run, unique_name
    from esacl.train import default_name, run

    from .sweep import config_grid, run_sweep

    for cfg in configs:  # what only the benchmark refuses, before anything runs
        check_limits(cfg)
    if len(configs) == 1 and not resumable and engine == "local":
        return [run(configs[0])], []
    if not resumable:  # fresh names, as `esacl run` would give each (a grid never writes into an existing run)
        names: list[str] = []
        for cfg in configs:
            names.append(unique_name(Path(cfg.out), cfg.name or default_name(cfg), taken=names))
        configs = [cfg.replace(name=name) for cfg, name in zip(configs, names)]
    progress = sys.stderr.isatty() and all(c.progress for c in configs)
    failed = []
    for out in dict.fromkeys(Path(c.out) for c in configs):  # each folder's runs as one sweep
        grid = config_grid(f"runs into {out}", [c for c in configs if Path(c.out) == out])
        result = run_sweep(grid, out, engine, workers, address, progress, resumable)
        failed += [f"{name}: {p['error']}" for name, p in result.points.items() if p["status"] == "failed"]
    records = [
        load_run(Path(c.out) / c.name) if (Path(c.out) / c.name / "config.json").is_file() else None for c in configs
    ]
    return records, failed


def cmd_paper(args) -> None:
    import datetime

    from esacl.compare import paper_configs, paper_text
    from esacl.data import check_limits
    from esacl.train import default_name

    job = "frontier" if args.frontier else "paper"
    out = Path(args.out or Path("runs") / f"{job}-{args.benchmark}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    from esacl.compare import DENSE_SEEDS, PAPER_SEEDS

    seeds, dense_seeds = (_int_list("--seeds", args.seeds), None) if args.seeds else (PAPER_SEEDS, DENSE_SEEDS)
    if args.dense_seeds:
        dense_seeds = _int_list("--dense-seeds", args.dense_seeds)
    learners = [x for x in args.learners.split(",") if x]
    if args.frontier:
        from esacl.frontier import frontier_configs

        configs = frontier_configs(args.benchmark, seeds, learners, str(out), dict(args.parameter))
    else:
        configs = paper_configs(
            args.benchmark,
            seeds,
            learners,
            args.sparsity,
            str(out),
            dict(args.parameter),
            progress=False,
            dense_seeds=dense_seeds,
        )
        configs = [c.replace(name=default_name(c)) for c in configs]  # fixed names: a second call finds them
    for cfg in configs:  # before the folder is claimed
        check_limits(cfg)
    workers = grid_workers(args.workers, configs) if args.engine == "local" else args.workers
    again = claim_grid(out, configs)
    what = (
        f"SparCL-X and EsaCL-X at their cost points for X in {', '.join(learners)}, seeds {_seed_text(seeds)}"
        if args.frontier
        else f"{', '.join(learners)} dense / SparCL / EsaCL at sparsity {args.sparsity:g} and the bounds, seeds "
        f"{_seed_text(seeds)}" + (f" (bounds and dense: {_seed_text(dense_seeds)})" if dense_seeds else "")
    )
    print(
        f"{len(configs)} runs: {args.benchmark}, {what}"
        + f"; into {out}"
        + (" (continuing)" if again else "")
        + (f"; {workers} at once" if args.engine == "local" else "; on Ray"),
        file=sys.stderr,
        flush=True,
    )
    try:
        records, failed = run_grid(configs, workers, resumable=True, engine=args.engine, address=args.address)
    except KeyboardInterrupt:
        raise Interrupted(
            f"run the same command again with --out {out} to finish the job (complete runs are kept, "
            "interrupted ones resume from their checkpoints)"
        ) from None
    done = [r for r in records if r is not None]  # a failed run has no record
    if args.frontier:
        from esacl.frontier import frontier_text

        print(frontier_text(done, learners))
    else:
        print(paper_text(done, learners))
    print(f"\nresults in {out.resolve()}")
    if args.report:  # over the runs that finished, failures or not
        from .execute import write_report

        detail = [str(r.path) for r in done if r.config["landscape"]]
        title = args.title or f"{args.benchmark}: EsaCL against SparCL on each base learner"
        print("writing the report ...", file=sys.stderr, flush=True)
        print(f"report: {write_report([r.path for r in done], detail=detail, title=title)}")
    grid_failed(failed, f"the same command again runs them again (logs: {out / 'logs'})")


GRID_FILE = "grid.json"  # a job folder's list of runs: the same command again continues it, another is refused


def grid_failed(failed: list[str], then: str = "") -> None:
    """The grid's failed runs, one line each, and exit status 1 (after its table: the rest is kept)."""
    if failed:
        print(f"{len(failed)} run(s) failed" + (f"; {then}" if then else "") + ":", file=sys.stderr)
        for line in failed:
            print(f"  {line}", file=sys.stderr)
        raise SystemExit(1)


def claim_grid(out: Path, configs: list[RunConfig]) -> bool:
    """Make `out` the folder of this grid (its configs in `grid.json`, written atomically); True where it
    holds this same grid already (the job continues). A folder holding other files or another grid is a
    `UserError`: runs are never overwritten."""
    import json

    from esacl.rundir import write_atomic

    # `out` is this folder however it was spelled (runs/x, ./runs/x); `progress` changes nothing computed
    wanted = [{k: v for k, v in c.to_dict().items() if k not in ("out", "progress")} for c in configs]
    saved = out / GRID_FILE
    if saved.is_file():
        try:
            held = json.loads(saved.read_text())["runs"]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{saved} is not a grid file; choose another --out") from None
        if held != wanted:
            differ = next(
                (
                    f"{k}: {h.get(k)!r} there, {w.get(k)!r} now"
                    for h, w in zip(held, wanted)
                    for k in w
                    if h.get(k) != w.get(k)
                ),
                f"{len(held)} runs there, {len(wanted)} now",
            )
            raise UserError(f"{out} holds another grid ({differ}); choose another --out or the same settings")
        return True
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} already holds files; choose another --out (runs are never overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(saved, json.dumps(dict(runs=wanted), indent=1).encode())
    return False


def grid_workers(given: int | None, configs: list[RunConfig]) -> int:
    """Runs of a grid at once: as given, else one per usable core on a CPU (each run with the canonical
    single thread: two at once on 2 cores), one on a GPU (runs would share the device); never more than
    the runs."""
    from esacl.config import usable_cores
    from esacl.train import pick_device

    if given is not None:
        if given < 1:
            raise UserError(f"--workers must be at least 1, got {given}")
        return given
    cpu = pick_device(configs[0].device).type == "cpu"
    return max(1, min(len(configs), usable_cores() if cpu else 1))


def _seed_text(seeds) -> str:
    """'0-9' for a consecutive run of seeds, else '0, 3, 7'."""
    seeds = list(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _int_list(flag: str, text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"{flag} takes comma-separated integers, got {text!r}") from None
    return values


def cmd_notebook(args) -> None:
    from .execute import check_parameters, execute_notebook, notebook_path, write_report

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
    if len(checked) > 1:
        return notebook_grid(args, checked, list(axes))
    print(f"{args.notebook} " + " ".join(f"{k}={v}" for k, v in checked[0].items()), file=sys.stderr, flush=True)
    run_dir = execute_notebook(args.notebook, checked[0], out=args.out or "runs")
    print(f"  executed notebook: {run_dir / 'notebook.ipynb'}", file=sys.stderr)
    from esacl.rundir import load_run

    print(load_run(run_dir).text())
    if args.report:
        print(f"\nreport: {write_report([run_dir])}")
    print(f"\nresults in {run_dir}")


def notebook_grid(args, points: list[dict], axes: list[str]) -> None:
    """An `esacl notebook` grid is a sweep of that notebook (workbench.sweep: one worker and kernel per
    usable core, or --workers; the same call again finishes an interrupted grid) into its own folder."""
    import datetime

    from .execute import write_report
    from .sweep import run_sweep

    out = Path(args.out or Path("runs") / f"notebook-{args.notebook}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    fixed = {k: v for k, v in points[0].items() if k not in axes}
    values = {k: list(dict.fromkeys(p[k] for p in points)) for k in axes}
    grid = dict(notebook=args.notebook, fixed=fixed, axes=values)
    result = run_sweep(grid, out, workers=args.workers, progress=sys.stderr.isatty())
    print(f"{result.table}\n\nwritten: {out / 'summary.csv'}, {out / 'summary.html'}")
    if args.report:
        print(f"\nreport: {write_report([out / name for name in result.points if (out / name).is_dir()])}")
    print(f"\nresults in {out.resolve()}")
    if result.failed:
        print(f"{len(result.failed)} of {len(result.points)} points failed: see {out / 'failures'}", file=sys.stderr)
        raise SystemExit(1)


def cmd_report(args) -> None:
    from esacl.rundir import find_runs
    from .execute import write_report

    runs = [str(p) for p in find_runs(args.paths)]
    Path(args.out).mkdir(parents=True, exist_ok=True)  # an unwritable --out fails here, before any progress line
    print(f"writing a report over {len(runs)} run(s) ...", file=sys.stderr, flush=True)
    print(write_report(runs, detail=args.detail, out=args.out, title=args.title))


def cmd_show(args) -> None:
    from esacl.rundir import load_run

    for i, path in enumerate(args.run_dirs):
        print(("\n" if i else "") + load_run(path).text())


def cmd_compare(args) -> None:
    from esacl.rundir import find_runs, load_run
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
    from esacl.method import PRESETS

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
        for family, values in spec.tuned.items():
            print(f"{'':20s} tuned for {family}: {', '.join(f'{k}={v}' for k, v in values.items())}")


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
    except Interrupted as err:
        print(f"esacl: interrupted; {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("esacl: interrupted; an unfinished run continues with 'esacl run --resume RUN_DIR'", file=sys.stderr)
        return 130
    return 0
