import pytest

from esacl import RunConfig


@pytest.fixture
def tiny(tmp_path):
    """A fast split_digits config: two tasks, two epochs, quiet, writing under tmp_path."""
    def make(**changes):
        base = dict(benchmark="split_digits", n_tasks=2, epochs=2, progress=False, out=str(tmp_path / "runs"))
        return RunConfig.from_dict(dict(base, **changes))
    return make
