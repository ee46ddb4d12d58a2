"""EsaCL workbench: efficient continual learning of sparse models.

One run, end to end:

    import esacl
    record = esacl.run(esacl.RunConfig(benchmark="split_digits", method="er", seed=0))
    print(record.text())
"""

from .config import RunConfig, UserError
from .rundir import Record, load_masks, load_run, load_selections
from .train import resume, run

__all__ = ["RunConfig", "Record", "UserError", "load_masks", "load_run", "load_selections", "resume", "run"]
__version__ = "0.1.0"
