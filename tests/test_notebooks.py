"""The committed notebooks: thin, clean, and parameterised by RunConfig keys only."""

import ast
import json

import nbformat
import papermill
import pytest

from esacl import RunConfig
from esacl.config import KEYS
from workbench.execute import NOTEBOOKS, benchmark_notebooks

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


def template():
    """notebooks/template.py, the one source of the benchmark notebooks, as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("template", NOTEBOOKS / "template.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", benchmark_notebooks())
def test_each_benchmark_notebook_is_what_the_template_makes(name):
    assert (NOTEBOOKS / f"{name}.ipynb").read_text() == template().render(name), (
        f"notebooks/{name}.ipynb differs from notebooks/template.py: run python notebooks/template.py"
    )


def test_the_flatness_notebook_is_what_the_template_makes_and_declares_the_experiments_settings():
    assert (NOTEBOOKS / "flatness.ipynb").read_text() == template().render_flatness(), (
        "notebooks/flatness.ipynb differs from notebooks/template.py: run python notebooks/template.py"
    )
    params = papermill.inspect_notebook(str(NOTEBOOKS / "flatness.ipynb"))
    assert list(params) == ["benchmark", "seeds", "sdp_seeds", "parts", "stop_loss", "epochs", "workers", "out"]
    assert all(spec["help"] for spec in params.values())


@pytest.mark.parametrize("name", benchmark_notebooks())
def test_benchmark_notebook_parameters_are_exactly_the_runconfig_keys_and_all_reach_the_run(name):
    params = papermill.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb"))
    assert list(params) == list(KEYS)
    assert all(spec["help"] for spec in params.values()), name
    defaults = {k: ast.literal_eval(v["default"]) for k, v in params.items()}
    assert defaults["benchmark"] == name
    # The code cells, run as far as the RunConfig (without the dashboard and the run), with papermill's
    # injected values: every parameter reaches the config.
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    given = dict(seed=3, lr=0.5, buffer_size=7, derpp_alpha=0.25, lwf_temperature=3.0, threshold="grda", threads=1)
    namespace = dict(given)
    exec(code[0] + "\n" + "\n".join(f"{k} = {v!r}" for k, v in given.items()), namespace)
    exec(
        "\n".join(
            line
            for line in code[1].splitlines()
            if "widgets" not in line and "display" not in line and "esacl.run(" not in line and "dashboard" not in line
        ),
        namespace,
    )
    assert namespace["config"] == RunConfig.from_dict(dict(defaults, **given))


@pytest.mark.parametrize("name", benchmark_notebooks())
def test_benchmark_notebooks_are_thin(name):
    """Parameters, one call into esacl, the dashboard, a summary: no training logic."""
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    code = "\n".join(without_comments("".join(c["source"])) for c in nb["cells"] if c["cell_type"] == "code")
    assert code.count("esacl.run(") == 1
    for forbidden in ("backward(", "optimizer", "for epoch", "torch."):
        assert forbidden not in code


def without_comments(source: str) -> str:
    """Python source with its comments dropped (the parameters' help text names torch.compile)."""
    import io
    import tokenize

    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row, col = token.start
            lines[row - 1] = lines[row - 1][:col]
    return "\n".join(lines)


def strip_outputs(text: str) -> str:
    """The git clean filter that workbench.sh set-up configures for notebooks/*.ipynb, with its options."""
    import re
    import subprocess
    import sys

    options = re.search(r'local keep="([^"]*)"', (NOTEBOOKS.parent / "workbench.sh").read_text()).group(1).split()
    return subprocess.run(
        [sys.executable, "-m", "nbstripout", *options], input=text, capture_output=True, text=True, check=True
    ).stdout


def test_git_strips_notebook_outputs_and_leaves_the_committed_notebooks_as_they_are():
    import shutil
    import subprocess
    import sys

    root = NOTEBOOKS.parent
    assert "notebooks/*.ipynb filter=nbstripout" in (root / ".gitattributes").read_text()
    if shutil.which("git") and (root / ".git").exists():  # git reads the attribute as written
        said = subprocess.run(
            ["git", "check-attr", "filter", "notebooks/split_digits.ipynb"], cwd=root, capture_output=True, text=True
        ).stdout
        assert said.strip().endswith("filter: nbstripout")
    for path in ALL:
        assert strip_outputs(path.read_text()) == path.read_text(), path.name
    clean = json.loads((NOTEBOOKS / "split_digits.ipynb").read_text())
    used = json.loads(json.dumps(clean))  # as JupyterLab saves it after a run
    for i, cell in enumerate(c for c in used["cells"] if c["cell_type"] == "code"):
        cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["a figure's worth of output\n"]}]
        cell["execution_count"] = i + 1
    used["metadata"]["language_info"] = {"name": "python", "version": "3.11.2", "pygments_lexer": "ipython3"}
    assert json.loads(strip_outputs(json.dumps(used, indent=1))) == clean
    # the kernelspec JupyterLab saves with this .venv's kernel is the committed one
    spec = json.loads(
        subprocess.run(
            [sys.executable, "-m", "jupyter", "kernelspec", "list", "--json"], capture_output=True, text=True
        ).stdout
    )["kernelspecs"]["python3"]["spec"]
    assert clean["metadata"]["kernelspec"]["display_name"] == spec["display_name"]
