import pytest

from esacl import RunConfig


@pytest.fixture
def tiny(tmp_path):
    """A fast split_digits config: two tasks, two epochs, quiet, writing under tmp_path."""

    def make(**changes):
        base = dict(benchmark="split_digits", n_tasks=2, epochs=2, progress=False, out=str(tmp_path / "runs"))
        return RunConfig.from_dict(dict(base, **changes))

    return make


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs under tmp_path: `tmpfs(size="20m", read_only=False)` returns its folder.
    A full disk and a read-only folder are real only on a real filesystem (root ignores file modes),
    so these tests need root and a working `mount`; elsewhere they skip, saying why."""
    import subprocess

    mounted = []

    def make(size="20m", read_only=False):
        where = tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True
        )
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here (needs root and mount): {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
