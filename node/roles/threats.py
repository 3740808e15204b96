"""A node's scheduled behaviour (attacks, faults) and local differential privacy.

The orchestrator resolves the scenario's fault schedule and writes each node's intervals
into its config (``behaviours``: from_round, until_round, name, params); the node applies
them itself at the exact rounds. Attacks come from `node.learning.attacks`; privacy from
`node.learning.privacy`. Randomness is seeded per node (and per round where it should
change each round), so runs are reproducible.

A MEC's ``withhold_blobs`` (`node.learning.attacks.withhold`) alters no weights: the MEC
notes each device update blob it takes in (`BlobWithholding.note`), and one of a withheld
device, taken in a round the behaviour covers, is never served: `BlobWithholding.refusal`
is the `ChainSync.serve_filter` of the MEC's chains, so the other MECs' ``blob.get`` for it
goes unanswered (counted ``blob_withheld`` by the MEC).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from node.config import Behaviour, NodeConfig
from node.learning.aggregators import Update
from node.learning.attacks import (
    DEVICE_ATTACKS,
    EDGE_FAULTS,
    apply_data_attack,
    apply_partition_attack,
    apply_update_attack,
    make_params,
)
from node.learning.attacks.withhold import REFUSAL, WITHHOLD_BLOBS, withheld_devices
from node.learning.emd import emd, label_distribution
from node.learning.privacy import privatize
from node.learning.weights import Weights
from node.roles.learner import Learner
from topologies import NodeKind

log = logging.getLogger(__name__)


def active_behaviour(config: NodeConfig, round_no: int) -> Behaviour | None:
    """The behaviour interval covering `round_no`, if any."""
    for b in config.behaviours:
        if b.from_round <= round_no and (b.until_round is None or round_no < b.until_round):
            return b
    return None


def _rng(config: NodeConfig, *parts: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, *config.node_id.encode(), *parts])


@dataclass
class DeviceThreats:
    """What a device does to its data and update in a round, honest or not."""

    config: NodeConfig
    learner: Learner
    previous_update: Weights | None = None
    privacy_record: dict[str, Any] = field(default_factory=dict)

    def training_data(self, round_no: int) -> tuple[np.ndarray, np.ndarray, str]:
        """(x, y, behaviour name) this device trains on in `round_no`."""
        b = active_behaviour(self.config, round_no)
        x, y = self.learner.train_x, self.learner.train_y
        if b is None:
            return x, y, ""
        kind = DEVICE_ATTACKS[b.name].kind
        classes = self.learner.num_classes
        rng = _rng(self.config, 1)  # the same choice every round: a device's data is fixed
        if kind == "data":
            x, y = apply_data_attack(b.name, b.params, x, y, rng, classes)
        elif kind == "partition":
            labels = self.learner.population_labels
            idx = apply_partition_attack(
                b.name, b.params, labels, self.learner.indices, rng, classes
            )
            x, y = self.learner.samples(idx)
        return x, y, b.name

    def label_emd(self, y: np.ndarray) -> float:
        """EMD (L1, as in the SFL paper) between these labels and the whole training set's."""
        classes = self.learner.num_classes
        population = label_distribution(self.learner.population_labels, classes)
        return emd(label_distribution(y, classes), population)

    def _noise_divisor(self) -> float:
        """D, the run's devices, where ``privacy.divide_by_devices`` says (else 1)."""
        privacy = self.config.privacy
        if privacy is None or not privacy.divide_by_devices:
            return 1.0
        devices = self.config.topology.of_kind(NodeKind.DEVICE)
        return float(max(1, len(devices)))

    def outgoing(self, round_no: int, trained: Weights, global_weights: Weights) -> Weights:
        """The weights this device sends: privatized if configured, then attacked if malicious."""
        out = trained
        privacy = self.config.privacy
        if privacy is not None:
            out, record = privatize(
                out,
                global_weights,
                clip_norm=privacy.clip_norm,
                epsilon=privacy.epsilon,
                delta=privacy.delta,
                mechanism=privacy.mechanism,
                rng=_rng(self.config, 2, round_no),
                noise_divisor=self._noise_divisor(),
            )
            self.privacy_record = dict(record)
        b = active_behaviour(self.config, round_no)
        if b is not None and DEVICE_ATTACKS[b.name].kind == "update":
            out = apply_update_attack(
                b.name,
                b.params,
                out,
                global_weights,
                _rng(self.config, 3, round_no),
                self.previous_update,
            )
        self.previous_update = {k: out[k] - global_weights[k] for k in out}
        return out


def edge_fault(
    config: NodeConfig,
    round_no: int,
    updates: list[Update],
    global_weights: Mapping[str, np.ndarray],
) -> tuple[list[Update], str]:
    """A MEC's forwarded updates after a scheduled ``tamper`` (and the behaviour's name)."""
    b = active_behaviour(config, round_no)
    spec = None if b is None else EDGE_FAULTS.get(b.name)
    if b is None or spec is None or spec.kind != "updates":
        return updates, "" if b is None else b.name
    params = make_params(EDGE_FAULTS, b.name, b.params)
    return spec.fn(updates, global_weights, params, _rng(config, 4, round_no)), b.name


def edge_output(config: NodeConfig, round_no: int, weights: Weights) -> Weights:
    """A MEC's aggregate (or forwarded update) after a scheduled ``malfunction``."""
    b = active_behaviour(config, round_no)
    spec = None if b is None else EDGE_FAULTS.get(b.name)
    if b is None or spec is None or spec.kind != "aggregate":
        return weights
    params = make_params(EDGE_FAULTS, b.name, b.params)
    out: Weights = spec.fn(weights, params, _rng(config, 5, round_no))
    return out


@dataclass
class BlobWithholding:
    """A MEC's scheduled ``withhold_blobs``: the update blobs of its devices it keeps to itself.

    `devices`: the MEC's devices. A blob noted in a round the behaviour covers, of a device it
    names, stays withheld when asked later (after a ``recover`` too)."""

    config: NodeConfig
    devices: Sequence[str]
    withheld: dict[bytes, tuple[str, int]] = field(default_factory=dict)  # key: (device, round)

    @classmethod
    def of(cls, config: NodeConfig, devices: Sequence[str]) -> BlobWithholding | None:
        """The node's withholding, or None if its schedule has no ``withhold_blobs``; every
        interval's params are checked here (ValueError naming the field and allowed values)."""
        scheduled = [b for b in config.behaviours if b.name == WITHHOLD_BLOBS.name]
        if not scheduled:
            return None
        withholding = cls(config, list(devices))
        for b in scheduled:
            withholding._targets(b)
        return withholding

    def _targets(self, b: Behaviour) -> frozenset[str]:
        params = make_params({WITHHOLD_BLOBS.name: WITHHOLD_BLOBS}, b.name, b.params)
        return withheld_devices(self.devices, params, _rng(self.config, 6))

    def note(self, key: bytes, device: str, round_no: int) -> bool:
        """`device`'s update blob `key` of `round_no` taken in; True if it is withheld."""
        b = active_behaviour(self.config, round_no)
        if b is None or b.name != WITHHOLD_BLOBS.name or device not in self._targets(b):
            return False
        self.withheld[key] = (device, round_no)
        log.info("round %d: withholding %s's update blob %s", round_no, device, key.hex()[:16])
        return True

    def refusal(self, asker: str, key: bytes) -> str | None:
        """The `ChainSync.serve_filter`: ``blob_withheld`` for a withheld blob, else None."""
        del asker
        return REFUSAL if key in self.withheld else None
