"""torch's global CPU generator, seeded for one block of code, one thread at a time.

Model initialisation and dropout draw from torch's process-wide generator. A node seeds it
(`torch.manual_seed`) around what must be reproducible and restores it afterwards
(`torch.random.fork_rng`). Where several nodes share one process (the in-memory network of
`tests/sim`, a role's worker thread) two such blocks could interleave: one thread's seed
would reset the generator under the other's draws and both results would depend on the
scheduling. `seeded_global_rng` holds a process-wide lock for the block, so every seeded
block draws exactly the stream its seed gives, whatever runs beside it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

_GLOBAL_RNG_LOCK = threading.RLock()


@contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Run the block with torch's global CPU generator seeded with `seed`, holding the
    process-wide lock; the generator's state afterwards is the state before."""
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def draws_from_global_rng(model: nn.Module) -> bool:
    """Whether training `model` draws from torch's global generator (its dropout layers)."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())
