"""Small builders shared by the tests."""
import torch

from esacl import RunConfig
from esacl.config import resolve
from esacl.data import BENCHMARKS
from esacl.methods import Batch


def config(**changes):
    """A resolved split_digits config with `changes`."""
    return resolve(RunConfig(**changes), BENCHMARKS["split_digits"].protocol)[0]


def toy_batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return Batch(x, y, torch.arange(n), x)
