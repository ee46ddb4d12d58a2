"""The committed notebooks: thin, clean, and parameterised by RunConfig keys only."""
import ast
import json

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
def test_benchmark_notebook_parameters_are_exactly_runconfig_keys(name):
    params = papermill.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb"))
    assert set(params) <= set(KEYS)
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
