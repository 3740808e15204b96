"""Edge-server (MEC) fault `withhold_blobs`: keep some of its devices' update blobs to itself.

A MEC that relays its certified LMUC block (which names its devices' update blobs by hash)
but does not answer the other MECs' ``blob.get`` for some of them. Which devices: the listed
`devices`, or a seeded `fraction` of the MEC's devices (at least one), or, with neither, all
of them. `withheld_devices` makes the choice; the node applies it (`node.roles.threats`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from node.learning.attacks._common import number, round_half_up
from node.learning.attacks.spec import AttackSpec

REFUSAL = "blob_withheld"  # the reason a withheld ``blob.get`` is counted under


@dataclass(frozen=True)
class WithholdBlobsParams:
    """Whose update blobs are withheld: `devices` (ids) or a `fraction` (0, 1] of the MEC's
    devices, seeded; neither: all."""

    devices: tuple[str, ...] | None = None
    fraction: float | None = None

    def __post_init__(self) -> None:
        """Validate devices (a non-empty list of ids) and fraction ((0, 1]); not both."""
        if self.devices is not None:
            ids = self.devices
            if isinstance(ids, str) or not isinstance(ids, Sequence) or not ids:
                raise ValueError(f"devices must be a non-empty list of device ids, got {ids!r}")
            for device in ids:
                if not isinstance(device, str) or not device:
                    raise ValueError(f"devices must hold device ids (strings), got {device!r}")
            object.__setattr__(self, "devices", tuple(ids))
        if self.fraction is not None:
            fraction = number("fraction", self.fraction)
            if not 0 < fraction <= 1:
                raise ValueError(f"fraction must be in (0, 1], got {self.fraction!r}")
        if self.devices is not None and self.fraction is not None:
            raise ValueError("give devices or fraction, not both")


def withheld_devices(
    devices: Sequence[str], params: WithholdBlobsParams, rng: np.random.Generator
) -> frozenset[str]:
    """The devices of `devices` (the MEC's) whose update blobs the MEC withholds; ValueError
    naming a listed device that is not one of them."""
    pool = sorted(devices)
    if params.devices is not None:
        for device in params.devices:
            if device not in pool:
                raise ValueError(
                    f"devices: {device!r} is not a device of this MEC; allowed: {', '.join(pool)}"
                )
        return frozenset(params.devices)
    if params.fraction is None or not pool:
        return frozenset(pool)
    k = min(len(pool), max(1, round_half_up(params.fraction * len(pool))))
    return frozenset(rng.choice(pool, size=k, replace=False).tolist())


WITHHOLD_BLOBS = AttackSpec("withhold_blobs", "blobs", WithholdBlobsParams, withheld_devices)
