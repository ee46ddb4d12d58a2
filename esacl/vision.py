"""torchvision, importable next to a CPU build of torch.

torchvision 0.28.0's compiled extension needs CUDA torch libraries; with the CPU torch it does not
load, and `import torchvision` then fails while registering fake kernels for two ops the missing
extension would have defined: `RuntimeError: operator torchvision::nms does not exist`.
`import_torchvision()` defines those two op schemas (no kernels) and imports again. Datasets,
transforms and models then work; the C++ ops (nms, roi_align, ...) and `torchvision.io`'s decoders
do not (images are decoded with PIL).

Where torchvision imports normally (a CUDA machine), nothing is defined: a second definition of
the schemas next to the real extension aborts the process.
"""

import sys

import torch

_MISSING_OP = "operator torchvision::nms does not exist"

# The schemas torchvision's extension registers for the ops its Python side registers fake
# kernels for at import. Kept alive for the whole process: a Library deregisters its definitions
# when it is garbage collected.
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library: torch.library.Library | None = None


def import_torchvision():
    """`import torchvision`, defining its two missing op schemas first where (and only where) the
    import fails with exactly the missing-extension error; returns the module."""
    global _library
    try:
        import torchvision

        return torchvision
    except RuntimeError as err:
        if _MISSING_OP not in str(err) or _library is not None:
            raise
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        _library.define(schema)
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # half-imported: the second import starts clean
    import torchvision

    return torchvision


def shimmed() -> bool:
    """Whether this process runs torchvision without its compiled extension (schemas defined here)."""
    return _library is not None
