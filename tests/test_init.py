import subprocess
import sys
from pathlib import Path

import esacl

FORBIDDEN = ("ipywidgets", "plotly", "matplotlib", "widgets")


def test_the_library_never_imports_the_dashboard_stack():
    code = "import sys, esacl, esacl.train, workbench.cli; print(sorted(m for m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for name in FORBIDDEN:
        assert f"'{name}'" not in loaded and f"'{name}." not in loaded
    for source in Path(esacl.__file__).parent.rglob("*.py"):
        for line in source.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]) and len(words) > 1:
                assert words[1].split(".")[0] not in FORBIDDEN, f"{source.name}: {line}"


def test_the_library_imports_no_compiler_until_a_run_asks_for_it():
    # torch._dynamo is 1.6 s of import: only `compile` needs it (benchmarks/startup.py).
    code = (
        "import sys, esacl, esacl.train, esacl.landscape, esacl.co2l, workbench.cli\n"
        "print('torch._dynamo' in sys.modules)"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_public_api():
    assert set(esacl.__all__) == {
        "RunConfig",
        "Record",
        "UserError",
        "load_masks",
        "load_run",
        "load_selections",
        "resume",
        "run",
    }
    assert all(hasattr(esacl, name) for name in esacl.__all__)
