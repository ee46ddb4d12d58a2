"""The committed notebooks: thin, clean, and parameterised by RunConfig keys only."""
import ast
import json

import nbformat
import papermill
import pytest

from esacl import RunConfig
from esacl.config import KEYS
from esacl.report import NOTEBOOKS, benchmark_notebooks

ALL = sorted(NOTEBOOKS.glob("*.ipynb"))


def test_every_benchmark_has_a_notebook():
    from esacl.data import BENCHMARKS
    assert benchmark_notebooks() == sorted(BENCHMARKS)


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_notebooks_are_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, path.name
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1


@pytest.mark.parametrize("name", benchmark_notebooks())
def test_benchmark_notebook_parameters_are_runconfig_keys_each_passed_to_runconfig(name):
    params = papermill.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb"))
    assert set(params) <= set(KEYS)
    # Each declared parameter reaches the run: the notebook builds its RunConfig with every one of them.
    source = "".join("".join(c["source"]) for c in nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4).cells
                     if c["cell_type"] == "code" and "RunConfig(" in "".join(c["source"]))
    call = source[source.index("RunConfig("):]
    assert {k for k in params if f"{k}={k}" in call} == set(params), name
    assert params["benchmark"]["default"].strip('"') == name
    defaults = {k: ast.literal_eval(v["default"]) for k, v in params.items()}
    RunConfig.from_dict(defaults)                                  # the defaults themselves are valid
    for key, spec in params.items():
        assert spec["help"], f"{name}: parameter {key} has no comment"


@pytest.mark.parametrize("name", benchmark_notebooks())
def test_benchmark_notebooks_are_thin(name):
    """Parameters, one call into esacl, the dashboard, a summary: no training logic."""
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert code.count("esacl.run(") == 1
    for forbidden in ("backward(", "optimizer", "for epoch", "torch."):
        assert forbidden not in code


def strip_outputs(text: str) -> str:
    """The git clean filter that workbench.sh set-up configures for notebooks/*.ipynb."""
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "nbstripout", "--keep-id"], input=text, capture_output=True,
                          text=True, check=True).stdout


def test_git_strips_notebook_outputs_and_leaves_the_committed_notebooks_as_they_are():
    import shutil
    import subprocess
    root = NOTEBOOKS.parent
    assert "notebooks/*.ipynb filter=nbstripout" in (root / ".gitattributes").read_text()
    if shutil.which("git") and (root / ".git").exists():          # git reads the attribute as written
        said = subprocess.run(["git", "check-attr", "filter", "notebooks/split_digits.ipynb"], cwd=root,
                              capture_output=True, text=True).stdout
        assert said.strip().endswith("filter: nbstripout")
    for path in ALL:
        assert strip_outputs(path.read_text()) == path.read_text(), path.name
    clean = json.loads((NOTEBOOKS / "split_digits.ipynb").read_text())
    used = json.loads(json.dumps(clean))                           # as JupyterLab saves it after a run
    for i, cell in enumerate(c for c in used["cells"] if c["cell_type"] == "code"):
        cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["a figure's worth of output\n"]}]
        cell["execution_count"] = i + 1
    assert json.loads(strip_outputs(json.dumps(used, indent=1))) == clean
