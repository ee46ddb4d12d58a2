"""Comparisons across runs: the summary table (per benchmark, method, sparsity and settings) and the
paper's question, asked per base learner: does EsaCL-X beat SparCL-X, and at what cost?

    rows = summary_rows(records)                  # mean / std over seeds of every column
    print(summary_text(rows))                     # also summary_html, summary_csv (sweeps write both)
    print(paper_text(records))                    # grouped by base learner, with one verdict line each

Only complete runs are counted, each seed once per row; runs that differ in any setting but the seed
(`settings`) are separate rows, labelled by the keys that differ. Accuracy and forgetting in percent
(forgetting on class-IL).
"""

import csv
import html
import io
import math
from dataclasses import dataclass, field

from . import metrics
from .rundir import anchor

# (column, header, record -> value, format) of the paper-style table, each shown as mean +- std over seeds.
COLUMNS = [
    ("class_il", "class-IL", lambda r: r.summary["class_il"]["average"], ".2f"),
    ("task_il", "task-IL", lambda r: r.summary["task_il"]["average"], ".2f"),
    ("forgetting", "forgetting", lambda r: r.summary["class_il"]["forgetting"], ".2f"),
    ("flops", "train FLOPs", lambda r: r.efficiency["flops"], ".3g"),
    ("flops_x_sgd", "FLOPs x SGD", lambda r: r.efficiency["flops_relative"], ".2f"),
    ("model_mb", "model MB", lambda r: r.efficiency["memory"]["model_sparse"] / 1e6, ".3f"),
    ("optimizer_mb", "optim MB", lambda r: r.efficiency["memory"]["optimizer_state"] / 1e6, ".3f"),
    ("train_s", "train s", lambda r: r.efficiency["train_seconds"], ".1f"),
]


# Config keys that do not change what a run trains: where it writes and what it shows, and the
# sharpness measurements (their own random generator, no effect on training). The CPU thread count is a
# setting (it changes the last digits): runs of different counts are separate rows, never paired.
NOT_SETTINGS = (
    "seed",
    "name",
    "out",
    "progress",
    "data_root",
    "log_every",
    "landscape",
    "landscape_batch",
    "hessian_iters",
    "hutchinson_samples",
    "slice_steps",
)


def settings(record) -> tuple:
    """The run's resolved config without its seed and the keys that do not change training, as sorted
    (key, value) pairs: runs with equal settings are seeds of one experiment. A key the run's config
    lacks (a knob added after the run was written) counts at its default, a tuned knob at its untuned
    value: what the run did before."""
    from .config import KNOB_DEFAULTS, UNTUNED

    config = KNOB_DEFAULTS | UNTUNED | record.config | dict(threads=cpu_threads(record))
    return tuple(sorted((k, v) for k, v in config.items() if k not in NOT_SETTINGS))


def cpu_threads(record) -> int | None:
    """The CPU thread count a run trained with (None for a GPU run, where it changes nothing): its
    config's, or for a run written before configs recorded it, the count its env.json names."""
    env = record.env
    if not env.get("device", "cpu").startswith("cpu"):
        return None
    return record.config.get("threads") or env.get("threads")


def _rank(key: tuple) -> tuple:
    from .method import PRESETS

    order = list(PRESETS)
    return key[0], order.index(key[1]) if key[1] in order else len(order), key[1], key[2], str(key[3])


def _by_settings(records, include) -> tuple[dict[tuple, list], list[tuple]]:
    """Included runs by (benchmark, method, sparsity, settings), in benchmark, preset, sparsity
    order, each group's runs by seed with each seed once; and the (run, kept run) pairs left out as
    repeats of a seed (the first path of a seed is kept)."""
    groups: dict[tuple, dict] = {}
    repeats = []
    for r in sorted((r for r in records if include(r)), key=lambda r: str(r.path)):
        key = (r.config["benchmark"], r.config["method"], float(r.config.get("sparsity") or 0.0), settings(r))
        seeds = groups.setdefault(key, {})
        if r.config["seed"] in seeds:
            repeats.append((r, seeds[r.config["seed"]]))
        else:
            seeds[r.config["seed"]] = r
    return {key: [groups[key][s] for s in sorted(groups[key])] for key in sorted(groups, key=_rank)}, repeats


def group_runs(records, include=lambda r: r.complete) -> dict[tuple, list]:
    """Complete runs (or those `include` accepts) by (benchmark, method, sparsity, settings): runs that
    differ in any setting but the seed are separate groups. In benchmark, preset, sparsity order;
    each group's runs by seed, each seed once."""
    return _by_settings(records, include)[0]


def differing(groups) -> dict[tuple, str]:
    """Per group key: 'k=v, ...' for the settings in which it differs from the other groups of its
    benchmark, method and sparsity ('' where it is the only one)."""
    from .config import CANONICAL_THREADS

    families: dict[tuple, list] = {}
    for key in groups:
        families.setdefault(key[:3], []).append(dict(key[3]))
    labels = {}
    for key in groups:
        family, own = families[key[:3]], dict(key[3])
        keys = {k for d in family for k in d if len({repr(e.get(k, "-")) for e in family}) > 1}
        if own.get("threads") not in (None, CANONICAL_THREADS):
            keys.add("threads")  # always named: such a row is not the canonical experiment
        labels[key] = ", ".join(f"{k}={own.get(k, '-')}" for k in sorted(keys))
    return labels


def summary_rows(records, include=lambda r: r.complete, columns=COLUMNS) -> list[dict]:
    """Per benchmark, method, sparsity and settings, over complete runs (or those `include` accepts):
    seeds and mean / std of every column of `columns`, the settings that set the row apart ('' if
    none), and the published class-IL / task-IL beside (None where there is none)."""
    rows = []
    groups = group_runs(records, include)
    labels = differing(groups)
    for key, runs in groups.items():
        row = dict(
            benchmark=key[0],
            method=key[1],
            sparsity=key[2],
            settings=labels[key],
            seeds=len(runs),
            threads=dict(key[3]).get("threads"),
        )
        for name, _, value, _ in columns:
            row[f"{name}_mean"], row[f"{name}_std"] = metrics.mean_std([value(r) for r in runs])
        published = published_row(key, runs)
        for il in ("class_il", "task_il"):
            mean, std = (published.get(il) or [None, None]) if published else (None, None)
            row[f"published_{il}_mean"], row[f"published_{il}_std"] = mean, std
        row["published_source"] = published["source"] if published else None
        rows.append(row)
    return rows


def published_row(key: tuple, runs) -> dict | None:
    """The published row (esacl/anchors.json) for a group key (benchmark, method, sparsity, ...):
    same benchmark, method, sparsity and buffer size (0 for learners without a buffer); None if absent."""
    from .learners import Replay
    from .method import LEARNERS, PRESETS

    method = PRESETS.get(key[1])
    replay = method is not None and issubclass(LEARNERS[method.learner].cls, Replay)
    return anchor(key[0], key[1], runs[0].config.get("buffer_size") if replay else 0, sparsity=key[2])


def thread_notes(rows: list[dict]) -> list[str]:
    """A line if some rows come from CPU runs with a thread count other than the canonical one."""
    from .config import CANONICAL_THREADS

    odd = [f"{r['method']} ({r['settings']})" for r in rows if r["threads"] not in (None, CANONICAL_THREADS)]
    if not odd:
        return []
    return [
        f"note: {', '.join(odd)}: CPU runs with a thread count other than the canonical {CANONICAL_THREADS}; "
        "their last digits differ from canonical runs', and verdicts pair only runs of one thread count"
    ]


def cell(mean, std, fmt: str) -> str:
    """'mean +- std' in `fmt`; '-' for a missing mean, the mean alone for a missing std."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if std is None or math.isnan(std):
        return f"{mean:{fmt}}"
    if fmt.endswith("g") and std <= 1e-9 * abs(mean):
        std = 0.0  # float summation noise (FLOPs of equal runs), not a spread worth "8.8e-06"
    return f"{mean:{fmt}} +- {std:{fmt}}"


def _published_cell(row: dict) -> str:
    if row["published_source"] is None:
        return "-"
    return (
        f"{cell(row['published_class_il_mean'], row['published_class_il_std'], '.2f')} / "
        f"{cell(row['published_task_il_mean'], row['published_task_il_std'], '.2f')} [{row['published_source']}]"
    )


def _settings_column(rows: list[dict]) -> bool:
    """Whether a table needs the 'settings' column: some rows differ only in a setting."""
    return any(r["settings"] for r in rows)


def table_cells(rows: list[dict], columns=COLUMNS) -> tuple[list[str], list[list[str]]]:
    """The header and the cells of the summary table of `rows` (made with the same `columns`)."""
    extra = _settings_column(rows)
    head = (
        ["benchmark", "method"]
        + (["settings"] if extra else [])
        + ["sparsity", "seeds"]
        + [h for _, h, _, _ in columns]
        + ["published class-IL / task-IL"]
    )
    body = [
        [r["benchmark"], r["method"]]
        + ([r["settings"] or "-"] if extra else [])
        + [f"{r['sparsity']:.2f}", str(r["seeds"])]
        + [cell(r[f"{n}_mean"], r[f"{n}_std"] if r["seeds"] > 1 else None, f) for n, _, _, f in columns]
        + [_published_cell(r)]
        for r in rows
    ]
    return head, body


def aligned(head: list[str], body: list[list[str]], left: int = 2) -> str:
    """Rows of cells as aligned text: the first `left` columns to the left, the others to the right."""
    widths = [max(len(c) for c in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(
        c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    ).rstrip()
    return "\n".join([line(head), "-" * len(line(head))] + [line(b) for b in body])


def summary_text(rows: list[dict]) -> str:
    """The table as aligned text (mean +- std over seeds; a single seed's value alone)."""
    return aligned(*table_cells(rows), left=3 if _settings_column(rows) else 2)


_STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
    "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}"
    "th:nth-child(-n+2),td:nth-child(-n+2){text-align:left}th{background:#f3f3f3}"
)


def html_table(head: list[str], body: list[list[str]]) -> str:
    """Cells as one plain HTML table (no script, no style of its own)."""
    cells = lambda tag, row: "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in row)
    return (
        f"<table><thead><tr>{cells('th', head)}</tr></thead><tbody>\n"
        + "\n".join(f"<tr>{cells('td', b)}</tr>" for b in body)
        + "\n</tbody></table>"
    )


def summary_html(rows: list[dict], title: str) -> str:
    """The table as one self-contained HTML page (inline style, no script)."""
    esc = html.escape
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>'
        + esc(title)
        + "</title>\n<style>"
        + _STYLE
        + "</style></head>\n<body>"
        f"<h1>{esc(title)}</h1>\n<p>Mean +- std over seeds of complete runs. Accuracy and forgetting in percent "
        "(forgetting on class-IL); training FLOPs in RigL's convention, absolute and relative to dense SGD on the "
        "same data; model MB: the sparse model (nonzeros + index); optim MB: update-rule state; train s: training "
        "wall-clock. Published numbers come from the source named, under its own protocol.</p>\n"
        + html_table(*table_cells(rows))
        + "</body></html>\n"
    )


def summary_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    names = list(rows[0]) if rows else ["benchmark", "method", "sparsity", "seeds"]
    writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


# ---------------------------------------------------------------------------------- the paper's question

# The base learners the paper compares EsaCL and SparCL on, in the table's order.
PAPER_LEARNERS = ("ewc", "co2l", "er", "derpp")
BOUNDS = ("sgd", "joint")
PAPER_COLUMNS = ["class_il", "task_il", "forgetting", "flops_x_sgd", "model_mb", "optimizer_mb", "train_s"]


def paper_methods(learners=PAPER_LEARNERS) -> list[str]:
    """The bounds, then for each base learner X: X (dense), sparcl-X, esacl-X."""
    return list(BOUNDS) + [m for x in learners for m in (x, f"sparcl-{x}", f"esacl-{x}")]


# The main job's seeds: the paired sparse presets (SparCL-X, EsaCL-X), whose differences the verdicts
# judge, over 10 (80% power at the effects seen on split_digits: esacl.stats.Paired.seeds_for_power); the
# bounds and dense learners, only shown beside them, over 3.
PAPER_SEEDS = tuple(range(10))
DENSE_SEEDS = tuple(range(3))


def check_learners(learners) -> None:
    """A one-line error naming the first of `learners` that has no SparCL-X and EsaCL-X presets."""
    from .config import UserError, did_you_mean
    from .method import PRESETS

    for learner in learners:
        if not {f"sparcl-{learner}", f"esacl-{learner}", learner} <= set(PRESETS):
            raise UserError(
                f"no base learner '{learner}'{did_you_mean(learner, PAPER_LEARNERS)}; "
                f"one of: {', '.join(PAPER_LEARNERS)}"
            )


def paper_configs(
    benchmark: str,
    seeds,
    learners=PAPER_LEARNERS,
    sparsity: float = 0.9,
    out: str = "runs",
    overrides: dict[str, str] | None = None,
    progress: bool = False,
    dense_seeds=None,
) -> list:
    """Every run of the paper's comparison, validated before any runs: `paper_methods(learners)`, the
    sparse ones (SparCL and EsaCL at `sparsity`) over `seeds`, the bounds and dense learners over
    `dense_seeds` (default: `seeds`); sharpness measured (`landscape`) for EsaCL-X at the first seed
    only, the runs whose dashboards a report shows. `overrides`: RunConfig keys as CLI strings."""
    from .config import RunConfig, UserError
    from .method import PRESETS

    check_learners(learners)
    fixed = dict(overrides or {})
    for key in ("benchmark", "method", "seed", "sparsity", "out", "landscape"):
        if key in fixed:
            raise UserError(f"'-p {key}' is set by esacl paper itself; see 'esacl paper --help'")
    configs = []
    for method in paper_methods(learners):
        sparse = PRESETS[method].sparse
        for seed in seeds if sparse or dense_seeds is None else dense_seeds:
            typed = dict(
                benchmark=benchmark,
                method=method,
                seed=seed,
                out=out,
                progress=progress,
                sparsity=sparsity if sparse else None,
                landscape=method.startswith("esacl-") and seed == seeds[0],
            )
            configs.append(RunConfig.from_strings(fixed, base=typed))
    return configs


@dataclass
class Versus:
    """EsaCL-X against SparCL-X on the seeds both completed: the paired cells (EsaCL minus SparCL, per
    metric: `esacl.stats.Paired`), their verdicts, and cost ratios (EsaCL over SparCL, of the means).
    The verdicts are Holm-corrected over every cell of the table the pair is judged in (`judge`)."""

    learner: str
    seeds: list[int]
    cells: dict  # 'class_il' / 'task_il' -> stats.Paired
    floors: dict  # 'class_il' / 'task_il' -> the benchmark's floor (stats.floor)
    flops_ratio: float
    seconds_ratio: float
    sparsity: float = 0.0
    at: str = ""  # ' at sparsity S' where a folder holds several sparsities, ' (threads=N)'
    words: dict = field(default_factory=dict)  # 'class_il' / 'task_il' -> stats.Verdict, set by `judge`

    def line(self) -> str:
        n = len(self.seeds)

        def part(il: str) -> str:
            if n < 2:
                return f"{self.cells[il].mean:+.2f} (n=1)"
            return self.words[il].text()

        return (
            f"{self.learner}{self.at}: EsaCL vs SparCL class-IL {part('class_il')}; task-IL {part('task_il')}; "
            f"at {self.flops_ratio:.2f}x its FLOPs and {self.seconds_ratio:.2f}x its train time "
            f"({n} seed{'s' if n > 1 else ''})"
        )


VERDICT_METRICS = ("class_il", "task_il")


def judge(pairs: list[Versus]) -> list[Versus]:
    """Set every pair's verdicts, Holm-corrected over all their cells together (one table's family)."""
    from . import stats

    cells = [(v, il) for v in pairs if len(v.seeds) > 1 for il in VERDICT_METRICS]
    words = stats.verdicts([v.cells[il] for v, il in cells], [v.floors[il] for v, il in cells])
    for (v, il), word in zip(cells, words):
        v.words[il] = word
    return pairs


def _pairs(records, learner: str, benchmark: str) -> list[tuple[tuple, object]]:
    """Per (sparsity, CPU threads) where both ran on `benchmark`: ((sparsity, threads), (esacl runs,
    sparcl runs)), or ((sparsity, threads), reason) where one of them ran with several settings (no single
    pair to compare). Runs of different thread counts are never paired; the canonical count comes first."""
    from .config import CANONICAL_THREADS

    groups = group_runs(records)
    labels = differing(groups)
    found: dict[tuple, dict[str, list]] = {}
    for key, runs in groups.items():
        if key[0] == benchmark and key[1] in (f"esacl-{learner}", f"sparcl-{learner}"):
            where = (key[2], dict(key[3]).get("threads"))
            found.setdefault(where, {}).setdefault(key[1], []).append((key, runs))
    pairs = []
    for where, by_method in sorted(found.items(), key=lambda f: (f[0][0], f[0][1] != CANONICAL_THREADS, f[0][1] or 0)):
        if len(by_method) < 2:
            continue
        several = {m: sorted(labels[k] for k, _ in g) for m, g in by_method.items() if len(g) > 1}
        if several:
            pairs.append(
                (
                    where,
                    "; ".join(f"{m} ran with {len(v)} settings ({' / '.join(v)})" for m, v in sorted(several.items())),
                )
            )
        else:
            pairs.append((where, (by_method[f"esacl-{learner}"][0][1], by_method[f"sparcl-{learner}"][0][1])))
    return pairs


def _where(found: list, where: tuple) -> str:
    """' at sparsity S' where `found` spans several sparsities, ' (threads=N)' for a non-canonical count."""
    from .config import CANONICAL_THREADS

    sparsity, threads = where
    at = f" at sparsity {sparsity:g}" if len({w[0] for w, _ in found}) > 1 else ""
    return at + (f" (threads={threads})" if threads not in (None, CANONICAL_THREADS) else "")


def versus(
    records, learner: str, benchmark: str | None = None, sparsity: float | None = None, threads=...
) -> Versus | None:
    """EsaCL-`learner` against SparCL-`learner` on one benchmark, sparsity and CPU thread count (default:
    the first present, the canonical count first), paired by seed and judged alone (Holm over its two
    cells; a table judges all its pairs together: `table_versus`); None without both, or where either ran
    with several settings."""
    benchmark = benchmark or next((r.config["benchmark"] for r in records if r.complete), None)
    found = _pairs(records, learner, benchmark)
    pairs = [(w, p) for w, p in found if sparsity in (None, w[0]) and threads in (..., w[1])]
    if not pairs or isinstance(pairs[0][1], str):
        return None
    v = _versus(learner, found, *pairs[0])
    return judge([v])[0] if v else None


def _versus(learner: str, found: list, where: tuple, runs: tuple) -> Versus | None:
    """The pair (esacl runs, sparcl runs) on the seeds both completed, not yet judged; None without one."""
    from .data import BENCHMARKS
    from .stats import floor, paired

    esacl = {r.config["seed"]: r for r in runs[0]}
    sparcl = {r.config["seed"]: r for r in runs[1]}
    seeds = sorted(set(esacl) & set(sparcl))
    if not seeds:
        return None
    cells = {
        il: paired(
            {s: esacl[s].summary[il]["average"] for s in seeds}, {s: sparcl[s].summary[il]["average"] for s in seeds}
        )
        for il in VERDICT_METRICS
    }
    first = esacl[seeds[0]]
    tasks, spec = len(first.class_il), BENCHMARKS.get(first.config["benchmark"])
    floors = {il: floor(il, tasks, spec.classes_per_task) if spec else None for il in VERDICT_METRICS}
    ratio = lambda key: sum(esacl[s].efficiency[key] for s in seeds) / sum(sparcl[s].efficiency[key] for s in seeds)
    return Versus(
        learner,
        seeds,
        cells,
        floors,
        ratio("flops"),
        ratio("train_seconds"),
        sparsity=where[0],
        at=_where(found, where),
    )


def paper_rows(records, learners=PAPER_LEARNERS) -> list[tuple[str, list[dict]]]:
    """(group, summary rows) for the bounds and each base learner present, in the paper's order."""
    rows = summary_rows(records)
    groups = []
    for group, methods in [("bounds", BOUNDS)] + [(x, (x, f"sparcl-{x}", f"esacl-{x}")) for x in learners]:
        part = sorted(
            (r for r in rows if r["method"] in methods), key=lambda r: (r["benchmark"], methods.index(r["method"]))
        )
        if part:
            groups.append((group, part))
    return groups


MARKS = {"better": " *", "worse": " *", "equivalent": " =", "undecided": " ?"}


def _marks(table: dict, learner: str, benchmark: str, sparsity: float, threads) -> dict[tuple[str, str], str]:
    """(method, column) -> ' *' on the better of SparCL-X and EsaCL-X, ' =' on both where equivalent,
    ' ?' on both where undecided; nothing where n/a (both at the floor) or unpaired."""
    v = next((v for (b, x, w), v in table.items() if (b, x) == (benchmark, learner) and w == (sparsity, threads)), None)
    if not isinstance(v, Versus) or not v.words:
        return {}
    marks = {}
    for column, verdict in v.words.items():
        if verdict.word in ("better", "worse"):
            marks[(f"esacl-{learner}" if verdict.word == "better" else f"sparcl-{learner}", column)] = " *"
        elif verdict.word in MARKS:
            marks[(f"esacl-{learner}", column)] = marks[(f"sparcl-{learner}", column)] = MARKS[verdict.word]
    return marks


def table_versus(records, learners=PAPER_LEARNERS) -> dict[tuple, object]:
    """Every EsaCL-X against SparCL-X pair of one table, (benchmark, learner, (sparsity, threads)) -> a
    `Versus` judged with all the others (Holm over the table's cells), or the reason there is none."""
    benchmarks = dict.fromkeys(r.config["benchmark"] for r in records if r.complete)
    table, pairs = {}, []
    for bench in benchmarks:
        for learner in learners:
            found = _pairs(records, learner, bench)
            for where, pair in found:
                if isinstance(pair, str):
                    table[(bench, learner, where)] = (
                        f"{_where(found, where)}: no verdict: {pair}; compare runs made with one setting each"
                    )
                    continue
                v = _versus(learner, found, where, pair)
                if v:
                    table[(bench, learner, where)] = v
                    pairs.append(v)
    judge(pairs)
    return table


def _paper_cells(records, learners) -> tuple[list[str], list[list[str]]]:
    fmts = {name: fmt for name, _, _, fmt in COLUMNS}
    heads = {name: head for name, head, _, _ in COLUMNS}
    grouped = paper_rows(records, learners)
    table = table_versus(records, learners)
    extra = _settings_column([r for _, rows in grouped for r in rows])
    head = (
        ["group", "method", "benchmark"]
        + (["settings"] if extra else [])
        + ["sparsity", "seeds"]
        + [heads[c] for c in PAPER_COLUMNS]
    )
    body = []
    for group, rows in grouped:
        for i, r in enumerate(rows):
            marks = _marks(table, group, r["benchmark"], r["sparsity"], r["threads"]) if group != "bounds" else {}
            label = [r["settings"] or "-"] if extra else []
            body.append(
                [group if i == 0 else "", r["method"], r["benchmark"]]
                + label
                + [f"{r['sparsity']:.2f}", str(r["seeds"])]
                + [
                    cell(r[f"{c}_mean"], r[f"{c}_std"] if r["seeds"] > 1 else None, fmts[c])
                    + marks.get((r["method"], c), "  " if c in ("class_il", "task_il") else "")
                    for c in PAPER_COLUMNS
                ]
            )
    return head, body


LEGEND = (
    "mean +- std over seeds; forgetting: class-IL; FLOPs x SGD: training FLOPs (every pass a method trains with, "
    "at its steps and task ends: EWC's Fisher, CO2L's probe, batch-norm recalibration; not evaluation or "
    "sharpness measurements) against dense SGD on the same data; "
    "model MB: the sparse model; optim MB: update-rule state.\n"
    "Verdicts on the seed-paired differences (EsaCL minus SparCL), Holm-corrected over the table's verdict cells: "
    "* the better of SparCL-X and EsaCL-X (paired t-test, p < 0.05 after Holm); = equivalent within +-1 point (TOST); "
    "? undecided; no mark: both at the floor of a model that knows only the last task (n/a)."
)


def verdicts(records, learners=PAPER_LEARNERS) -> list[str]:
    """One line per base learner with both SparCL-X and EsaCL-X runs, per benchmark present: the paired
    difference per metric with its 95% interval, p-value and verdict (Holm over the table's cells)."""
    table = table_versus(records, learners)
    several = len({bench for bench, _, _ in table}) > 1
    lines = []
    for (bench, learner, _), v in table.items():
        prefix = f"[{bench}] " if several else ""
        lines.append(prefix + (f"{learner}{v}" if isinstance(v, str) else v.line()))
    return lines


def left_out(records) -> list[str]:
    """A line per kind of run the tables leave out, if any: diverged, incomplete, unreadable (a line per
    reason its accuracy.json gave), and repeats of a seed already counted (same settings and seed; the
    first path is kept)."""
    diverged = [r.path.name for r in records if r.diverged]
    incomplete = [r.path.name for r in records if not r.complete and not r.diverged and not r.unreadable]
    unreadable: dict[str, list[str]] = {}
    for r in records:
        if r.unreadable:
            unreadable.setdefault(r.unreadable, []).append(r.path.name)
    repeats = [f"{r.path.name} (as {kept.path.name})" for r, kept in _by_settings(records, lambda r: r.complete)[1]]
    return (
        ([f"left out (diverged: non-finite training loss): {', '.join(diverged)}"] if diverged else [])
        + ([f"left out (incomplete): {', '.join(incomplete)}"] if incomplete else [])
        + [f"left out (unreadable accuracy.json: {why}): {', '.join(names)}" for why, names in unreadable.items()]
        + ([f"left out (a seed counted already, same settings): {', '.join(repeats)}"] if repeats else [])
    )


def switch_lines(records) -> list[str]:
    """A line per set of speed switches the runs used (env.json: device, CPU threads, channels_last, amp,
    compile), with how many runs used it: what a reader needs to reproduce the digits."""
    counts: dict[str, int] = {}
    for r in records:
        switches = r.env.get("switches")
        if switches:
            text = ", ".join(f"{k} {'on' if v is True else 'off' if v is False else v}" for k, v in switches.items())
            counts[text] = counts.get(text, 0) + 1
    return [f"speed switches: {text} ({n} run{'s' if n > 1 else ''})" for text, n in counts.items()]


def table_notes(records, rows: list[dict]) -> list[str]:
    """The lines below every comparison table: rows of a non-canonical thread count, runs left out."""
    return thread_notes(rows) + left_out(records)


def paper_text(records, learners=PAPER_LEARNERS) -> str:
    """The grouped table (bounds, then X / SparCL-X / EsaCL-X per base learner), its legend, the
    verdict lines, and the runs left out."""
    notes = table_notes(records, summary_rows(records))
    return "\n".join(
        [aligned(*_paper_cells(records, learners)), "", LEGEND, ""]
        + verdicts(records, learners)
        + ([""] + notes if notes else [])
    )


def paper_html(records, learners=PAPER_LEARNERS) -> str:
    """The verdict lines, then the grouped table, as an HTML fragment (inline style, no script)."""
    esc = html.escape
    items = "".join(f"<li>{esc(line)}</li>" for line in verdicts(records, learners))
    return (
        f"<style>.esacl-paper td,.esacl-paper th{{border:1px solid #ccc;padding:3px 8px;text-align:right;"
        f"white-space:nowrap}}.esacl-paper table{{border-collapse:collapse}}"
        f".esacl-paper td:nth-child(-n+3),.esacl-paper th:nth-child(-n+3){{text-align:left}}</style>"
        f'<div class="esacl-paper"><ul>{items}</ul>{html_table(*_paper_cells(records, learners))}'
        f"<p>{esc(LEGEND)}</p></div>"
    )
