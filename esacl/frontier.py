"""Accuracy against training FLOPs: EsaCL-X's and SparCL-X's frontiers per base learner, and the paper's
question at matched cost.

    configs = frontier_configs("split_digits", seeds)   # LADDER's cost points x base learners x seeds
    records = [run(c) for c in configs]                  # (esacl paper --frontier runs them as a grid)
    print(frontier_text(records))                        # points, frontiers, verdicts at matched cost

A cost point is a sparsifier's tuned defaults with the knobs that set its cost changed (`LADDER`). The
ladders were fixed from FLOPs alone (split_digits, `esacl-er` and `sparcl-er`, seed 0), to span a common
range: EsaCL from its default (0.84x dense SGD) down through `dense_grad_every` 10 (0.51x), `sam_every`
4 (0.34x) and sparsity 0.95 (0.23x) to `sam_every` 8 at 0.95; SparCL from sparsity 0.7 (0.47x) to its
default 0.9 (0.21x) and 0.95 (0.12x).

A frontier holds a method's non-dominated points for one metric: sorted by mean FLOPs, each point's mean
accuracy above every cheaper point's. A method's accuracy at a cost is read off its frontier per seed,
linearly in log FLOPs between the two frontier points around it; past its last frontier point, up to its
dearest point, it is that point's (the best the method reaches within the budget); outside its points'
range it is undefined: nothing is extrapolated. At matched cost: both methods at SparCL-X's default cost,
or where EsaCL-X's points do not reach it, at the nearest cost both methods' points span, paired by seed
and judged with `esacl.stats` (Holm over the table's cells); where the two ranges do not meet, no
verdict. The reverse: the FLOPs at which EsaCL-X's frontier's mean accuracy reaches SparCL-X's default's,
as a multiple of SparCL-X's default's FLOPs, or that it never does within its points.
"""

import math
from dataclasses import dataclass, field

# The knobs a cost point sets, and each sparsifier's points (its tuned defaults elsewhere).
COST_KEYS = ("sparsity", "dense_grad_every", "sam_every")
LADDER = {
    "esacl": (
        {},
        dict(dense_grad_every=10),
        dict(dense_grad_every=10, sam_every=4),
        dict(dense_grad_every=10, sam_every=4, sparsity=0.95),
        dict(dense_grad_every=10, sam_every=8, sparsity=0.95),
    ),
    "sparcl": (dict(sparsity=0.7), dict(sparsity=0.8), {}, dict(sparsity=0.95)),
}
DEFAULT_SPARSITY = 0.9
METRICS = ("class_il", "task_il")


def frontier_configs(benchmark: str, seeds, learners=None, out: str = "runs", overrides=None, progress=False) -> list:
    """Every run of the frontier job: each `LADDER` point of EsaCL-X and SparCL-X for every base learner,
    over `seeds`, named by their cost knobs (the same call again finds them). `overrides`: RunConfig keys
    as CLI strings, for every run."""
    from .compare import PAPER_LEARNERS, check_learners
    from .config import RunConfig, UserError

    check_learners(learners or PAPER_LEARNERS)
    fixed = dict(overrides or {})
    for key in ("benchmark", "method", "seed", "out", "name", *COST_KEYS):
        if key in fixed:
            raise UserError(f"'-p {key}' is set by esacl paper --frontier itself; see 'esacl paper --help'")
    configs = []
    for learner in learners or PAPER_LEARNERS:
        for family, points in LADDER.items():
            for knobs in points:
                knobs = dict(sparsity=DEFAULT_SPARSITY) | knobs
                label = "-".join(f"{_SHORT[k]}{v:g}" for k, v in knobs.items())
                for seed in seeds:
                    typed = dict(
                        benchmark=benchmark,
                        method=f"{family}-{learner}",
                        seed=seed,
                        out=out,
                        name=f"{benchmark}-{family}-{learner}-{label}-s{seed}",
                        progress=progress,
                        **knobs,
                    )
                    configs.append(RunConfig.from_strings(fixed, base=typed))
    return configs


_SHORT = dict(sparsity="sp", dense_grad_every="dge", sam_every="se")


@dataclass(frozen=True)
class Point:
    """One cost point of one method: its cost knobs, mean training FLOPs (x dense SGD) and per-seed accuracy."""

    method: str
    knobs: tuple  # ((key, value), ...) over COST_KEYS
    flops: float
    accuracy: dict  # metric -> {seed: value}

    def mean(self, metric: str) -> float:
        values = self.accuracy[metric].values()
        return sum(values) / len(values)

    def label(self) -> str:
        """Its sparsity, and the other cost knobs where they are not 1 (their untuned value: every step)."""
        return ", ".join(f"{k} {v:g}" for k, v in self.knobs if k == "sparsity" or v != 1)


def points(records, method: str, benchmark: str) -> list[Point]:
    """`method`'s cost points on `benchmark` among the complete runs of `records` (a seed counted once per
    point), sorted by FLOPs."""
    runs: dict[tuple, dict[int, object]] = {}
    for r in records:
        if r.complete and r.config["method"] == method and r.config["benchmark"] == benchmark:
            knobs = tuple((k, r.config[k]) for k in COST_KEYS)
            runs.setdefault(knobs, {}).setdefault(r.config["seed"], r)
    out = []
    for knobs, by_seed in runs.items():
        flops = sum(r.efficiency["flops_relative"] for r in by_seed.values()) / len(by_seed)
        accuracy = {m: {s: r.summary[m]["average"] for s, r in by_seed.items()} for m in METRICS}
        out.append(Point(method, knobs, flops, accuracy))
    return sorted(out, key=lambda p: p.flops)


def frontier(pts: list[Point], metric: str) -> list[Point]:
    """The non-dominated points for `metric`, by FLOPs: each more accurate (mean) than every cheaper one."""
    front, best = [], -math.inf
    for p in sorted(pts, key=lambda p: p.flops):
        if p.mean(metric) > best:
            front.append(p)
            best = p.mean(metric)
    return front


def at_cost(front: list[Point], flops: float, metric: str, dearest: float) -> dict[int, float] | None:
    """Per seed (those the points used have), the method's accuracy at `flops` along its frontier: linear
    in log FLOPs between the two frontier points around it, and past the last frontier point, up to the
    method's `dearest` point, that point's (the best the method reaches within the budget); None outside
    (never extrapolated)."""
    if not front or not front[0].flops <= flops <= max(dearest, front[-1].flops):
        return None
    if flops >= front[-1].flops:
        return dict(sorted(front[-1].accuracy[metric].items()))
    hi = next(i for i, p in enumerate(front) if p.flops >= flops)
    lo = max(0, hi - 1) if front[hi].flops > flops else hi
    a, b = front[lo], front[hi]
    t = 0.0 if a is b else (math.log(flops) - math.log(a.flops)) / (math.log(b.flops) - math.log(a.flops))
    seeds = set(a.accuracy[metric]) & set(b.accuracy[metric])
    return {s: (1 - t) * a.accuracy[metric][s] + t * b.accuracy[metric][s] for s in sorted(seeds)}


def flops_for(front: list[Point], accuracy: float, metric: str) -> float | None:
    """The FLOPs at which the frontier's mean accuracy first reaches `accuracy` (log-linear between its
    points); None where it never does."""
    for a, b in zip([None] + front[:-1], front):
        if b.mean(metric) >= accuracy:
            if a is None:
                return b.flops
            t = (accuracy - a.mean(metric)) / (b.mean(metric) - a.mean(metric))
            return math.exp(math.log(a.flops) + t * (math.log(b.flops) - math.log(a.flops)))
    return None


@dataclass
class Matched:
    """EsaCL-X against SparCL-X at one cost, per metric: SparCL-X's default cost, or where EsaCL-X's points
    do not reach it, the nearest cost both methods' points span. The paired cell (None where the two
    ranges do not meet), its verdict, and the FLOPs EsaCL-X needs for SparCL-X's default accuracy (a
    multiple of SparCL-X's FLOPs; None: not within its points)."""

    learner: str
    benchmark: str
    default: float  # SparCL-X's default FLOPs x dense SGD
    cost: float | None  # where the two are compared (None: their ranges do not meet)
    reach: tuple  # EsaCL-X's points' FLOPs range (cheapest, dearest)
    cells: dict  # metric -> stats.Paired | None
    needs: dict  # metric -> EsaCL-X's FLOPs / SparCL-X's default's for the same accuracy, or None
    floors: dict  # metric -> the benchmark's floor
    words: dict = field(default_factory=dict)  # metric -> stats.Verdict, set by `matched`

    def where(self) -> str:
        if self.cost is None:
            return (
                f"no common cost: EsaCL's points span {self.reach[0]:.3f}-{self.reach[1]:.3f}x SGD, "
                f"SparCL's default costs {self.default:.3f}x"
            )
        if math.isclose(self.cost, self.default):
            return f"at SparCL's default cost ({self.default:.3f}x SGD)"
        return (
            f"at {self.cost:.3f}x SGD, the nearest cost both reach (SparCL's default costs {self.default:.3f}x, "
            f"EsaCL's points span {self.reach[0]:.3f}-{self.reach[1]:.3f}x)"
        )

    def line(self) -> str:
        parts = []
        for m, name in zip(METRICS, ("class-IL", "task-IL")):
            if self.cells[m] is None:
                said = "no verdict"
            else:
                said = self.words[m].text() if m in self.words else f"{self.cells[m].mean:+.2f} (n=1)"
            need = self.needs[m]
            if need is None:
                need = "; EsaCL does not reach SparCL's default accuracy within its points"
            elif need * self.default <= self.reach[0]:
                need = f"; EsaCL's cheapest point ({need:.2f}x SparCL's FLOPs) is as accurate already"
            else:
                need = f"; EsaCL reaches SparCL's default accuracy at {need:.2f}x its FLOPs"
            parts.append(f"{name} {said}{need}")
        return f"{self.learner}: EsaCL vs SparCL {self.where()}: " + "; ".join(parts)


def matched(records, learners=None) -> list[Matched]:
    """Every base learner with both ladders on each benchmark present, judged together (Holm over the
    table's cells that have a verdict)."""
    from .compare import PAPER_LEARNERS
    from .data import BENCHMARKS
    from .stats import floor, paired, verdicts

    out = []
    for bench in dict.fromkeys(r.config["benchmark"] for r in records if r.complete):
        spec = BENCHMARKS.get(bench)
        for learner in learners or PAPER_LEARNERS:
            esacl, sparcl = points(records, f"esacl-{learner}", bench), points(records, f"sparcl-{learner}", bench)
            default = next((p for p in sparcl if dict(p.knobs)["sparsity"] == DEFAULT_SPARSITY), None)
            if not esacl or default is None:
                continue
            low, high = max(esacl[0].flops, sparcl[0].flops), min(esacl[-1].flops, sparcl[-1].flops)
            cost = min(max(default.flops, low), high) if low <= high else None
            tasks = len(next(r for r in records if r.complete and r.config["benchmark"] == bench).class_il)
            cells, needs, floors = {}, {}, {}
            for m in METRICS:
                front = frontier(esacl, m)
                cells[m] = None
                if cost is not None:
                    ours = at_cost(front, cost, m, esacl[-1].flops)
                    theirs = at_cost(frontier(sparcl, m), cost, m, sparcl[-1].flops)
                    cells[m] = paired(ours, theirs) if ours and theirs else None
                need = flops_for(front, default.mean(m), m)
                needs[m] = need / default.flops if need is not None else None
                floors[m] = floor(m, tasks, spec.classes_per_task) if spec else None
            reach = (esacl[0].flops, esacl[-1].flops)
            out.append(Matched(learner, bench, default.flops, cost, reach, cells, needs, floors))
    judged = [(v, m) for v in out for m in METRICS if v.cells[m] is not None and v.cells[m].n > 1]
    for (v, m), word in zip(judged, verdicts([v.cells[m] for v, m in judged], [v.floors[m] for v, m in judged])):
        v.words[m] = word
    return out


def frontier_rows(records, learners=None) -> list[dict]:
    """One row per cost point present: learner, method, its knobs, seeds, FLOPs x SGD, mean +- std of each
    metric, and whether it is on its method's frontier for each metric."""
    from .compare import PAPER_LEARNERS
    from .metrics import mean_std

    rows = []
    for bench in dict.fromkeys(r.config["benchmark"] for r in records if r.complete):
        for learner in learners or PAPER_LEARNERS:
            for family in LADDER:
                pts = points(records, f"{family}-{learner}", bench)
                fronts = {m: frontier(pts, m) for m in METRICS}
                for p in pts:
                    row = dict(benchmark=bench, learner=learner, method=p.method, knobs=p.label(), flops=p.flops)
                    row["seeds"] = len(p.accuracy["class_il"])
                    for m in METRICS:
                        row[m] = mean_std(list(p.accuracy[m].values()))
                        row[f"{m}_front"] = p in fronts[m]
                    rows.append(row)
    return rows


def frontier_text(records, learners=None) -> str:
    """The points table (a frontier point marked ^ per metric), its legend, and a matched-cost line per learner."""
    from .compare import aligned, cell

    head = ["learner", "method", "cost knobs", "seeds", "FLOPs x SGD", "class-IL", "task-IL"]
    body = []
    last = None
    for r in frontier_rows(records, learners):
        body.append(
            [
                r["learner"] if r["learner"] != last else "",
                r["method"],
                r["knobs"],
                str(r["seeds"]),
                f"{r['flops']:.3f}",
            ]
            + [cell(*r[m], ".2f") + (" ^" if r[f"{m}_front"] else "  ") for m in METRICS]
        )
        last = r["learner"]
    legend = (
        "mean +- std over seeds; ^ on the method's frontier for that metric (no cheaper point of the method is "
        "as accurate).\nAt matched cost: EsaCL-X's frontier interpolated per seed at SparCL-X's default cost "
        "(linear in log FLOPs, never extrapolated) minus SparCL-X's default, paired by seed, Holm over the "
        "table's cells."
    )
    return "\n".join([aligned(head, body, left=3), "", legend, ""] + [v.line() for v in matched(records, learners)])
