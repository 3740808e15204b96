"""What an SFL evaluator computes, and how it gets the blobs for it.

How it works
------------
An evaluator is a validator of the task chain (the publisher as the single writer, or each
MEC of the PBFT committee). For round r it reads everything from its replica's contract
state (`node.contracts.sfl`): the updates submitted (blob hashes, samples), the disclosed
test group (or, without a disclosure, the fallback: a seeded sample of the training set),
the qualified devices and the current global model. It fetches the blobs it lacks from its
peers (`Blobs`), then, off the loop, computes

- ``local``: every submitted update's count of correct predictions on the round's data, in
  device-id order (`testdata.count_correct`: one torch thread, eval mode, fixed batches), so
  that every honest evaluator signs the same ``sfl.evaluate_local_model`` results;
- ``model``: the FedAvg of the qualified updates (float64 sums in device-id order, cast back:
  `aggregate_blob`; none qualified: the current global model) and its correct count, for
  ``sfl.evaluate_model``.

An update blob that does not decode to the model's exact names, shapes and dtypes counts 0
correct on every evaluator (our choice: deterministic, and such a device is not paid).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from node.contracts import sfl as contract
from node.core.encoding import sha256
from node.core.tx import Transaction
from node.learning.aggregate import fedavg
from node.learning.weights import Weights, weights_from_bytes, weights_to_bytes
from node.ledger.replica import Replica
from node.roles.base import NodeContext
from node.roles.learner import Learner, check_update
from node.schemes.sfl.scheme import SflParams
from node.schemes.sfl.testdata import count_correct, fallback_data, group_from_bytes

log = logging.getLogger(__name__)

LOCAL, MODEL = "local", "model"


@dataclass(frozen=True)
class RoundInputs:
    """What one evaluation of round `round` needs, read from the chain's state."""

    round: int
    data: str  # "test" (the disclosed group) or "train" (the fallback)
    group_blob: bytes | None
    updates: tuple[tuple[str, bytes, int], ...]  # (device, blob hash, samples), by device
    qualified: tuple[str, ...]
    global_blob: bytes  # the current global model's blob hash

    def blobs(self, phase: str) -> list[bytes]:
        """The blob hashes `phase` reads."""
        keys = [] if self.group_blob is None else [self.group_blob]
        if phase == LOCAL:
            keys += [b for _, b, _ in self.updates]
        else:
            chosen = set(self.qualified)
            keys += [b for d, b, _ in self.updates if d in chosen] + [self.global_blob]
        return list(dict.fromkeys(keys))


def round_inputs(state: Any, round_no: int) -> RoundInputs:
    """Round `round_no`'s inputs from the contract state; ValueError if there is no task."""
    task = contract.get_FL_task(state)
    current = contract.get_global_model(state)
    if task is None or current is None:
        raise ValueError("no SFL task on this chain")
    disclosed = state.get(contract.NS_DISCLOSED, str(round_no))
    record = contract.round_record(state, round_no) or {}
    updates = tuple(
        (device, entry["blob"], int(entry["samples"]))
        for device, entry in contract.round_updates(state, round_no)
    )
    data = str(record.get("data") or ("test" if disclosed is not None else "train"))
    return RoundInputs(
        round=round_no,
        data=data,
        group_blob=None if disclosed is None else bytes.fromhex(disclosed["blob"]),
        updates=updates,
        qualified=tuple(record.get("qualified") or ()),
        global_blob=current["blob"],
    )


def decode(reference: Weights, blob: bytes | None) -> Weights | None:
    """`blob` as weights of the model's exact layout, or None."""
    if blob is None:
        return None
    try:
        return check_update(reference, weights_from_bytes(blob))
    except ValueError:
        return None


def aggregate_blob(
    reference: Weights, chosen: Sequence[tuple[str, bytes | None, int]], current: bytes
) -> bytes:
    """The encoded FedAvg of the `chosen` (device, blob, samples) updates in device-id order
    (those that do not decode are left out); `current` (the global model's bytes) if none."""
    updates = []
    for _device, blob, samples in sorted(chosen, key=lambda item: item[0]):
        weights = decode(reference, blob)
        if weights is not None:
            updates.append((weights, float(samples)))
    if not updates:
        return current
    return weights_to_bytes(fedavg(updates))


class EvalData:
    """The evaluation data: disclosed groups (decoded once) and the fallback sample."""

    def __init__(self, learner: Learner, group_size: int, seed: int) -> None:
        self.learner, self.group_size, self.seed = learner, group_size, seed
        self._groups: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
        self._fallback: tuple[np.ndarray, np.ndarray] | None = None

    def of(
        self, inputs: RoundInputs, blobs: Mapping[bytes, bytes]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of the round's data; ValueError if a disclosed group does not decode."""
        if inputs.group_blob is not None and inputs.data == "test":
            key = inputs.group_blob
            if key not in self._groups:
                self._groups[key] = group_from_bytes(blobs[key])
            return self._groups[key]
        if self._fallback is None:
            self._fallback = self._training_sample()
        return self._fallback

    def _training_sample(self) -> tuple[np.ndarray, np.ndarray]:
        """The fallback: a seeded sample of the training set (loaded here where this node
        holds only the test set, as a publisher from prepared data does)."""
        x, y = self.learner.train_x, self.learner.train_y
        if len(y) == 0:
            from node.learning.datasets import load_dataset

            ds = self.learner.cfg.dataset
            full = load_dataset(ds.name, ds.root, seed=self.seed)
            x, y = full.train_x, full.train_y
        return fallback_data(x, y, self.group_size, self.seed)


def compute(
    phase: str,
    inputs: RoundInputs,
    blobs: Mapping[bytes, bytes],
    data: EvalData,
    model: Any,
    reference: Weights,
) -> dict[str, Any]:
    """The payload of the evaluator's transaction for `phase` (run off the loop: `model` is
    the evaluator's own torch module, which nothing else touches)."""
    from node.learning.weights import set_weights

    x, y = data.of(inputs, blobs)
    total = len(y)
    if phase == LOCAL:
        results = []
        for device, blob, _ in inputs.updates:
            weights = decode(reference, blobs.get(blob))
            correct = 0
            if weights is not None:
                set_weights(model, weights)
                correct = count_correct(model, x, y)
            results.append([device, correct])
        return {"round": inputs.round, "data": inputs.data, "total": total, "results": results}
    chosen = set(inputs.qualified)
    selected = [(d, blobs.get(b), n) for d, b, n in inputs.updates if d in chosen]
    current = blobs.get(inputs.global_blob)
    if current is None:
        raise ValueError("the current global model's blob is unavailable")
    encoded = aggregate_blob(reference, selected, current)
    set_weights(model, weights_from_bytes(encoded))
    return {
        "round": inputs.round,
        "global_blob": sha256(encoded),
        "correct": count_correct(model, x, y),
        "total": total,
        "_encoded": encoded,  # kept by the caller as a blob; not part of the payload
    }


class Blobs:
    """Gathers the blobs an evaluation needs: from the store, else fetched from `peers`."""

    def __init__(self, ctx: NodeContext, replica: Replica, peers: Sequence[str]) -> None:
        self.ctx, self.replica, self.peers = ctx, replica, list(peers)

    def gather(
        self, keys: Sequence[bytes], done: Callable[[dict[bytes, bytes], list[bytes]], None]
    ) -> None:
        """Call `done(found, missing)` once every key is held or was asked for in vain."""
        found: dict[bytes, bytes] = {}
        missing: list[bytes] = []
        pending = set(keys)
        if not pending:
            done(found, missing)
            return

        def one(key: bytes, data: bytes | None) -> None:
            if key not in pending:
                return
            pending.discard(key)
            if data is None:
                missing.append(key)
            else:
                found[key] = data
            if not pending:
                done(found, missing)

        for key in list(keys):
            held = self.replica.blobs.get(key)
            if held is not None:
                one(key, held)
            else:
                self.ctx.emit(
                    self.replica.sync.fetch_blob(key, self.peers, self.ctx.now(), on_done=one)
                )


class Evaluator:
    """One node's evaluations of the task's rounds: reads the state, gathers the blobs,
    computes off the loop, signs the transaction and hands it to `on_tx`."""

    def __init__(
        self,
        ctx: NodeContext,
        replica: Replica,
        learner: Learner,
        params: SflParams,
        peers: Sequence[str],
    ) -> None:
        from node.learning.models import build_model

        cfg = learner.cfg
        self.replica = replica
        self.model = build_model(
            cfg.model, learner.input_shape, learner.num_classes, seed=ctx.config.seed
        )
        self.reference = learner.weights()
        self.data = EvalData(learner, params.group_size, ctx.config.seed)
        self.blobs = Blobs(ctx, replica, peers)
        self.started: set[tuple[int, str]] = set()

    def evaluate(
        self, ctx: NodeContext, round_no: int, phase: str, on_tx: Callable[[Transaction], None]
    ) -> None:
        """Evaluate `phase` of round `round_no` once (a repeated request is ignored)."""
        if (round_no, phase) in self.started:
            return
        self.started.add((round_no, phase))
        try:
            inputs = round_inputs(self.replica.chain.state, round_no)
        except ValueError as exc:
            ctx.drop("evaluation_failed", f"round {round_no}: {exc}")
            return

        def finished(payload: dict[str, Any] | None, error: BaseException | None) -> None:
            if error is not None or payload is None:
                log.error("round %d: %s evaluation failed: %s", round_no, phase, error)
                ctx.drop("evaluation_failed", f"round {round_no} {phase}: {error}")
                return
            encoded = payload.pop("_encoded", None)
            if encoded is not None:
                self.replica.blobs.put_behind(payload["global_blob"], encoded)
            kind = "sfl.evaluate_local_model" if phase == LOCAL else "sfl.evaluate_model"
            on_tx(self.replica.transaction(kind, payload))

        def have(found: dict[bytes, bytes], missing: list[bytes]) -> None:
            if missing:
                log.warning(
                    "round %d: %d blobs unavailable: %s",
                    round_no,
                    len(missing),
                    [k.hex()[:12] for k in missing],
                )
            if inputs.group_blob is not None and inputs.group_blob not in found:
                ctx.drop("evaluation_failed", f"round {round_no}: the disclosed group is missing")
                return
            ctx.run_background(
                lambda: compute(phase, inputs, found, self.data, self.model, self.reference),
                finished,
            )

        self.blobs.gather(inputs.blobs(phase), have)
