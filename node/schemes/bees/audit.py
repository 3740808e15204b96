"""What an edge server checks of a round's transactions, and the round's global model.

How it works
------------
Every ES holds an `Auditor`: it evaluates an update's weights on the same test samples (the
first `VALIDATION_SAMPLES` of the test set, as every scheme's validator does) and caches the
figure by blob hash. `check_update(tx, blob)` compares the accuracy a ``bees.update``
transaction claims with its own figure: more than `tolerance` apart (our choice: the paper
says only that the main node "verifies all unconfirmed transactions"; the figure is
deterministic on one machine, the tolerance absorbs float differences across machines)
means the ES that posted it lied about its UE (or sent other weights), and the update is
left out by a proposer (`select`) and makes a block carrying it unverifiable
(`verify_round`). `global_model` is eq. 3 over the contract's top-M (node.contracts.bees
`top_m`: accuracy desc, ties by UE id) with `node.learning.aggregate.fedavg` in the order
of the selection, so every ES computes the same bytes and compares the block's hash.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from node.contracts import bees as contract
from node.core.block import Block
from node.core.encoding import sha256
from node.core.tx import Transaction
from node.learning.aggregate import fedavg
from node.learning.weights import Weights, weights_from_bytes, weights_to_bytes
from node.roles.learner import check_update as check_weights

Evaluate = Callable[[Weights], float]


@dataclass(frozen=True)
class Audited:
    """A ``bees.update`` transaction checked against the verifier's evaluation."""

    tx: Transaction
    blob: bytes
    accuracy: float  # the verifier's own figure
    problem: str | None  # None: the claim holds

    @property
    def update(self) -> contract.Update:
        """The update as the contract records it (its claimed accuracy)."""
        p = self.tx.payload
        return contract.Update(
            str(p["ue"]), "", bytes(p["blob"]), float(p["accuracy"]), int(p["samples"])
        )


class Auditor:
    """Evaluates updates (cached by blob hash) and checks transactions' claims."""

    def __init__(self, reference: Weights, evaluate: Evaluate, tolerance: float) -> None:
        """`reference`: the model's weights (names, shapes, dtypes every update must have);
        `evaluate`: the accuracy of weights on the validation samples."""
        self.reference = reference
        self.evaluate = evaluate
        self.tolerance = tolerance
        self._acc: dict[bytes, float] = {}

    def accuracy(self, blob: bytes) -> float:
        """The accuracy of the weights `blob` encodes; ValueError if they are not the
        model's."""
        key = sha256(blob)
        if key not in self._acc:
            self._acc[key] = float(self.evaluate(self.weights(blob)))
        return self._acc[key]

    def weights(self, blob: bytes) -> Weights:
        """`blob` decoded and checked against the model's shapes (ValueError)."""
        return check_weights(self.reference, weights_from_bytes(blob))

    def check_update(self, tx: Transaction, blob: bytes) -> Audited:
        """`tx` (a ``bees.update``) against `blob` and this verifier's evaluation."""
        p = tx.payload
        if p.get("blob") != sha256(blob):
            return Audited(tx, blob, -1.0, "blob does not match the transaction's hash")
        try:
            mine = self.accuracy(blob)
        except ValueError as exc:
            return Audited(tx, blob, -1.0, f"weights: {exc}")
        claimed = p.get("accuracy")
        if not isinstance(claimed, float | int) or abs(float(claimed) - mine) > self.tolerance:
            return Audited(
                tx, blob, mine, f"accuracy of {p.get('ue')!r}: claimed {claimed!r}, {mine:.4f}"
            )
        return Audited(tx, blob, mine, None)


def global_model(audited: Sequence[Audited], m: int) -> tuple[tuple[str, ...], bytes]:
    """(the top-M UE ids, the global model's bytes): eq. 3 over `audited` (all of whose
    claims hold). ValueError if there is none."""
    if not audited:
        raise ValueError("no update to aggregate")
    selected = contract.top_m([a.update for a in audited], m)
    by_ue = {a.update.ue: a for a in audited}
    updates = [
        (weights_from_bytes(by_ue[ue].blob), float(by_ue[ue].update.samples)) for ue in selected
    ]
    return selected, weights_to_bytes(fedavg(updates))


def select(
    auditor: Auditor, updates: Sequence[tuple[Transaction, bytes]]
) -> tuple[list[Audited], list[Audited]]:
    """The proposer's check of its pending updates: (kept, left out)."""
    checked = [auditor.check_update(tx, blob) for tx, blob in updates]
    return [a for a in checked if a.problem is None], [a for a in checked if a.problem]


def verify_round(
    block: Block,
    auditor: Auditor,
    blobs: Mapping[bytes, bytes],
    m: int,
    configure_m: int | None,
) -> tuple[str | None, bytes | None]:
    """Re-verify a proposed block's BEES transactions: (None, the recomputed global model or
    None without an aggregate) when all is good, else (why not, None). Checked: every
    ``bees.update``'s claimed accuracy against this ES's own evaluation of its weights
    (`blobs`: by hash, every update's), the ``bees.aggregate``'s selection and global-model
    hash recomputed (eq. 3), and, in round 1 (`configure_m` given), a ``bees.configure``
    setting M to it. The contract's own checks (election, top-M) run when the block is
    validated by the ledger."""
    updates: list[Audited] = []
    aggregate: Transaction | None = None
    configured: int | None = None
    for tx in block.txs:
        if tx.type == "bees.update":
            blob = blobs.get(tx.payload.get("blob", b""))
            if blob is None:
                return f"no weights for the update of {tx.payload.get('ue')!r}", None
            audited = auditor.check_update(tx, blob)
            if audited.problem is not None:
                return audited.problem, None
            updates.append(audited)
        elif tx.type == "bees.aggregate":
            aggregate = tx
        elif tx.type == "bees.configure":
            configured = tx.payload.get("m")
    if configure_m is not None and configured != configure_m:
        return f"round 1 without bees.configure m={configure_m} (got {configured!r})", None
    if aggregate is None:
        return ("no bees.aggregate" if updates else None), None
    selected, model = global_model(updates, m)
    p = aggregate.payload
    if list(selected) != list(p.get("selected", ())):
        return f"selection {p.get('selected')!r} is not the top-M {list(selected)}", None
    if p.get("global_blob") != sha256(model) or p.get("size") != len(model):
        return "the global model's hash is not the average of the selected updates", None
    return None, model
