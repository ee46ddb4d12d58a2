"""The package layers: esacl, then widgets, then workbench; no import cycle inside esacl and no import
of a layer above, imports inside functions included."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "esacl"
# The layers, lowest first: each package imports only those before it. workbench executes the notebooks,
# which import widgets; so esacl must not reach widgets or workbench, nor widgets workbench.
LAYERS = ("esacl", "widgets", "workbench")


def import_graph() -> dict[str, set[str]]:
    """module -> the esacl modules it imports anywhere in its source (top level or inside functions), named
    relative to the package (`config`, `data.core`; a package by its folder: `data`)."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"
        package = parts[:-1]  # where a relative import starts
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - node.level + 1]
                if node.module:
                    names.add(".".join((*base, node.module)))
                else:
                    names |= {".".join((*base, a.name)) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("esacl."):
                names.add(node.module.removeprefix("esacl."))
        graph[name] = names - {name, ""}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of `graph` (the modules in order, the first repeated at the end), or []."""
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == "open":
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[module] = "done"
        return []

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return []


def test_the_package_imports_without_cycles():
    graph = import_graph()
    assert {"method", "learners", "co2l", "config", "errors", "data", "data.core"} <= set(graph)
    assert cycle(graph) == []
    found = cycle(dict(graph, errors={"config"}))  # the check can fail
    assert found[0] == found[-1] and {"config", "errors"} <= set(found)
    # The layers below config name errors, not config: config reads the registries, never the reverse.
    below = ("errors", "learners", "co2l", "method", "prune", "selection", "steps", "landscape")
    for low in below + tuple(m for m in graph if m.split(".")[0] == "data"):
        assert "config" not in graph[low], low


def named_modules(tree: ast.AST):
    """Every module `tree` imports absolutely (`import x.y`, `from x.y import z`, at any depth), imports by
    name (`importlib.import_module("x")`, `__import__("x")`), runs (`[sys.executable, "-m", "x.y"]`) or
    imports in code it holds as a string (a kernel's `"import x"`)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "import " in node.value:
            try:
                yield from named_modules(ast.parse(node.value))
            except SyntaxError:  # prose, not code
                pass
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
        ):
            yield node.args[0].value
        elif isinstance(node, (ast.List, ast.Tuple)):
            for flag, name in zip(node.elts, node.elts[1:]):
                if isinstance(flag, ast.Constant) and flag.value == "-m" and isinstance(name, ast.Constant):
                    yield name.value


def upward_imports(package: Path, above) -> list[str]:
    """'file: module' for every module of a package in `above` that a file of `package` names (see
    `named_modules`)."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for name in named_modules(ast.parse(path.read_text())):
            if isinstance(name, str) and name.split(".")[0] in above:
                found.append(f"{path.relative_to(package.parent)}: {name}")
    return found


def test_no_package_imports_a_layer_above_it():
    for i, layer in enumerate(LAYERS):
        assert (ROOT / layer / "__init__.py").is_file(), layer
        assert upward_imports(ROOT / layer, LAYERS[i + 1 :]) == [], f"{layer} reaches up"
    assert "esacl.config" in {
        n
        for path in (ROOT / "widgets").glob("*.py")  # a layer may import below
        for n in named_modules(ast.parse(path.read_text()))
    }


def test_the_layer_check_can_fail(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "lazy.py").write_text("import esacl.config\n\n\ndef f():\n    import widgets.figures\n")
    (lib / "names.py").write_text("from workbench.execute import Kernel\nfrom . import lazy\n")
    (lib / "runs.py").write_text(
        "import importlib, sys\nWORKER = [sys.executable, '-m', 'workbench.sweep']\n"
        "importlib.import_module('widgets')\nPRELOAD = 'import gc, widgets.dashboards'\n"
    )
    assert sorted(upward_imports(lib, ("widgets", "workbench"))) == [
        "lib/lazy.py: widgets.figures",
        "lib/names.py: workbench.execute",
        "lib/runs.py: widgets",
        "lib/runs.py: widgets.dashboards",
        "lib/runs.py: workbench.sweep",
    ]
    assert upward_imports(lib, ("workbench",)) == ["lib/names.py: workbench.execute", "lib/runs.py: workbench.sweep"]
