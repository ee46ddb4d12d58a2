"""The one source of the benchmark notebooks: `python notebooks/template.py` writes notebooks/<benchmark>.ipynb
for every benchmark, and notebooks/flatness.ipynb (the flatness experiment); tests/test_notebooks.py checks
that each committed notebook is what `render` (`render_flatness`) makes.

Every notebook is the same four parts: what the benchmark is, a `parameters` cell declaring every
RunConfig key (so papermill, `esacl notebook -p` and sweep axes can set any of them), one call into
esacl with the live dashboard, and the run's summary.
"""

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if (HERE.parent / "pyproject.toml").is_file():
    sys.path.insert(0, str(HERE.parent))  # esacl, from this checkout (an installed copy imports it as is)

from esacl.config import RunConfig  # noqa: E402

TITLES = {
    "split_digits": (
        "Split-Digits",
        "scikit-learn's digits (ships offline) as 5 tasks of 2 classes, 8x8 gray, a small "
        "ConvNet; seconds on a laptop CPU.",
    ),
    "split_fmnist": (
        "Split Fashion-MNIST",
        "Fashion-MNIST as 5 tasks of 2 classes, 28x28 gray, a CPU-sized ConvNet, one "
        "epoch per task; data from `data_root/fashion-mnist` or Debian's package "
        "`dataset-fashion-mnist`; about a minute per run on a laptop CPU.",
    ),
    "split_cifar10": (
        "Split CIFAR-10",
        "CIFAR-10 as 5 tasks of 2 classes, ResNet-18 (64 filters, 3x3 stem), 50 epochs "
        "per task: a GPU benchmark; data from `data_root` (`cifar-10-batches-py`).",
    ),
    "split_cifar100": (
        "Split CIFAR-100",
        "CIFAR-100 as 10 tasks of 10 classes, ResNet-18, 50 epochs per task: a GPU "
        "benchmark; data from `data_root` (`cifar-100-python`).",
    ),
    "split_tinyimagenet": (
        "Split Tiny-ImageNet",
        "Tiny-ImageNet as 10 tasks of 20 classes, 64x64, ResNet-18, 100 "
        "epochs per task: a GPU benchmark; data from `data_root` (`tiny-imagenet-200`).",
    ),
}
# What a notebook opened in JupyterLab runs unless told otherwise, where it differs from RunConfig's default:
# EsaCL itself, runs into the repository's runs/, and on the CPU-sized benchmarks sharpness measured with
# lighter settings than RunConfig's (`EXPLORE`).
OVERRIDES = dict(method="esacl", out="../runs")
SHARPNESS = ("split_digits", "split_fmnist")
# Split-Digits' first run as committed, on a 2-core CPU at 1 thread (benchmarks/startup.py --first-run-only):
# 22 s with RunConfig's settings, 11 of them measuring sharpness; these cut the measurement to about 3 s.
# Ten power iterations found the same top eigenvalues as twenty there; the trace from 4 samples is noisier.
EXPLORE = dict(landscape=True, landscape_batch=128, hessian_iters=10, hutchinson_samples=4, slice_steps=7)

ABOUT = """One run of one method: after each task the model is evaluated on every task seen so far (class-IL and
task-IL from the same run). The dashboards below update while it trains: accuracy, loss-landscape
sharpness, how the sparse masks evolve, which examples the data selection kept or removed, and the
training cost (FLOPs in RigL's convention, memory, wall-clock). Everything is also written to the run
directory (`out/name`), which `esacl show`, `esacl report` and these dashboards read later.

Batch use: `esacl notebook {name} -p method esacl -p sparsity 0.9 --out runs/` (papermill); any
parameter below can be set with `-p KEY VALUE` or be an axis of `esacl sweep`.

Reading the dashboards:
- As committed, a first run takes about 15 s on a laptop CPU, a few of them measuring sharpness at
  each task end (with lighter settings than `esacl run`'s, said in the parameters cell). Quicker still:
  `n_tasks = 3`, `epochs = 2`, `landscape = False`.
- `esacl` trains on the stream alone, with no replay: class-IL accuracy on earlier tasks falls to
  about 0 (the newest task's classes win every prediction), while task-IL, within each task's own
  classes, stays high. `esacl-er`, `esacl-derpp`, `esacl-co2l` add a replay buffer.
- Pruning jump: "as trained" scores the weights at the task end with the batch-norm running
  statistics as training left them; "recalibrated" after those statistics are recomputed over the
  task's batches at the final weights (docs/method.md).
- Selections: the support set is chosen per batch and per class, so a left-out example can score
  higher than a kept one of another batch or class."""

RUN = """import esacl
import widgets
from esacl.config import KEYS
from IPython.display import display

config = esacl.RunConfig(**{key: globals()[key] for key in KEYS})     # every parameter above
dashboard = widgets.RunDashboard()
display(dashboard)
record = esacl.run(config, callbacks=[dashboard.callback])"""


def parameters(name: str) -> str:
    """The parameters cell: every RunConfig key in its order, its value and its help."""
    values = dict(OVERRIDES, benchmark=name, **(EXPLORE if name in SHARPNESS else {}))
    lines = ["# Parameters: every esacl.RunConfig key (`esacl run --help` explains each); papermill sets any of them."]
    if name in SHARPNESS:
        full = ", ".join(f"{k} {RunConfig.__dataclass_fields__[k].default}" for k in EXPLORE if k != "landscape")
        lines.append(
            "# The sharpness settings are lighter than `esacl run`'s, for a first run of seconds; its full ones:"
        )
        lines.append(f"# {full}.")
    for f in dataclasses.fields(RunConfig):
        value = values.get(f.name, f.default)
        literal = json.dumps(value) if isinstance(value, str) else repr(value)
        lines.append(f"{f.name + ' = ' + literal:34s}# {f.metadata['help']}")
    return "\n".join(lines)


def render(name: str) -> str:
    """notebooks/<name>.ipynb as committed: nbformat 4.5, no outputs, cell ids derived from the name."""
    title, summary = TITLES[name]
    return notebook(
        name,
        [
            ("markdown", f"# {title}: EsaCL and its baselines\n\n{summary}\n\n{ABOUT.format(name=name)}", {}),
            ("code", parameters(name), {"tags": ["parameters"]}),
            ("markdown", "## Training, with live dashboards", {}),
            ("code", RUN, {}),
            ("markdown", "## Summary: accuracy matrices, forgetting, FLOPs, sparsity, memory, pruning jump", {}),
            ("code", "print(record.text())", {}),
        ],
    )


FLATNESS_ABOUT = """# Does a flat minimum make retraining after pruning unnecessary?

The paper argues that training towards flat minima (SAM) lets SDP prune without hurting accuracy and
without retraining. This notebook runs the test that can fail (`esacl.flatness`, docs/method.md,
"Flatness") and shows its answer with intervals over paired seeds:

- **pruned**: dense SGD, SAM and ASAM trained on the same task stream to the same training loss; at
  every task end, one-shot magnitude pruning to 0.5-0.95 (per layer and global), batch norm
  recalibrated, the current task's accuracy and training loss, then 10 and 100 fine-tuning steps with
  the mask fixed. The claim predicts that the flat training loses less (drop, loss rise) and that
  fine-tuning wins back less (recovery).
- **sdp**: SDP with its ascent and without it (rho 0) at matched steps, sparsity 0.9, where the
  task-end projection keeps the trained nonzeros (`target`, the main job's: no jump by construction),
  prunes 0.2 more than training held (`gap`), or cuts what gRDA's threshold left (`grda`); and what
  retraining with the run's mask would win. The claim holds if that gain is about 0 with the ascent
  and clearly positive without.

Runs go to `out/flatness-BENCHMARK/`; runs there already (from an earlier execution or from
`benchmarks/flatness.py`, which takes the same settings and runs the grid over several processes) are
kept, so opening this notebook after the script only reads. Batch use:
`papermill notebooks/flatness.ipynb out.ipynb -p benchmark split_fmnist -p stop_loss 0.1 -p epochs 30`;
`benchmarks/flatness.py --report` also writes the executed notebook as an offline HTML page.

Reading the dashboard: the controls pick the measure, the scope and the sparsity. Bands and bars are
95% t-intervals over seeds; the SDP panel colours each cell by its verdict (Holm over its cells;
"equivalent" within 1 accuracy point or 0.01 nats)."""

FLATNESS_PARAMETERS = """# Parameters (papermill; benchmarks/flatness.py sets them with its own).
benchmark = "split_digits"         # split_digits (minutes) or split_fmnist (about an hour on 2 cores)
seeds = list(range(10))            # paired seeds: every mode trains on each
sdp_seeds = None                   # part sdp's seeds (None: the same)
parts = ["pruned", "sdp"]          # which parts of the experiment (see above)
stop_loss = 0.05                   # part pruned: a task ends once an epoch's mean training loss is at most this
epochs = 20                        # part pruned: at most this many epochs per task
workers = 2                        # runs at once, each on one thread
out = "../benchmarks/out"          # runs go to OUT/flatness-BENCHMARK/"""

FLATNESS_RUN = """from pathlib import Path

import esacl.flatness
import widgets
from workbench.cli import run_grid

folder = str(Path(out) / f"flatness-{benchmark}")
rows = esacl.flatness.plan(benchmark, seeds, folder, stop_loss, epochs, parts, sdp_seeds)
records = run_grid([cfg for *_, cfg in rows], workers=workers, resumable=True)  # runs made already: kept
dashboard = widgets.FlatnessDashboard(rows, records)
dashboard.display()  # controls in JupyterLab; every figure, static, in an exported page"""


def render_flatness() -> str:
    """notebooks/flatness.ipynb as committed: the flatness experiment."""
    return notebook(
        "flatness",
        [
            ("markdown", FLATNESS_ABOUT, {}),
            ("code", FLATNESS_PARAMETERS, {"tags": ["parameters"]}),
            ("markdown", "## The runs, and the dashboard", {}),
            ("code", FLATNESS_RUN, {}),
            ("markdown", "## The answer, with intervals", {}),
            ("code", "print(esacl.flatness.text(dashboard.found))", {}),
        ],
    )


def notebook(name: str, cells: list[tuple[str, str, dict]]) -> str:
    """(kind, source, metadata) cells as a notebook's JSON: nbformat 4.5, no outputs, cell ids derived
    from `name`."""
    out = []
    for i, (kind, source, metadata) in enumerate(cells):
        cell = dict(
            cell_type=kind,
            id=hashlib.sha256(f"{name}/{i}".encode()).hexdigest()[:8],
            metadata=metadata,
            source=source.splitlines(keepends=True),
        )
        if kind == "code":
            cell = dict(cell, execution_count=None, outputs=[])
        out.append(dict(sorted(cell.items())))
    nb = dict(
        cells=out,
        # As JupyterLab saves it with this .venv's kernel (ipykernel's name), so a run leaves it unchanged;
        # the language_info a run adds is stripped by the git filter (workbench.sh).
        metadata=dict(kernelspec=dict(display_name="Python 3 (ipykernel)", language="python", name="python3")),
        nbformat=4,
        nbformat_minor=5,
    )
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def main() -> None:
    for name in TITLES:
        (HERE / f"{name}.ipynb").write_text(render(name))
        print(f"wrote notebooks/{name}.ipynb")
    (HERE / "flatness.ipynb").write_text(render_flatness())
    print("wrote notebooks/flatness.ipynb")


if __name__ == "__main__":
    main()
