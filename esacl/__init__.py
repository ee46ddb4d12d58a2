"""EsaCL workbench: efficient continual learning of sparse models.

    import esacl
    record = esacl.run(esacl.RunConfig(benchmark="split_digits", method="er", seed=0))
    print(record.text())
"""
import os

# OpenMP threads that spin while they wait for work take the cores other processes need on a shared
# machine (benchmarks/threads.py measures it); passive waiting makes them sleep. The OpenMP runtime
# reads this when torch loads it, so it is set before esacl's first torch import, unless already set.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .config import RunConfig, UserError  # noqa: E402
from .record import Record, load_masks, load_run, load_selections  # noqa: E402
from .train import resume, run  # noqa: E402

__all__ = ["RunConfig", "Record", "UserError", "load_masks", "load_run", "load_selections", "resume", "run"]
__version__ = "0.1.0"
