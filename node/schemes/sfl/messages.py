"""The sfl scheme's own messages (the round's traffic is vanilla's: ``global``, ``update``,
``partial``, ``stop``, ``hello``, and PBFT's ``submit``/``pbft``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from node.messages import Bounds, NonNegativeInt, message

Round = Annotated[int, Bounds(ge=1)]
PHASES = ("local", "model")


@message("sfl.evaluate")
@dataclass(frozen=True)
class EvaluateRequest:
    """The publisher asks the evaluators (PBFT MECs) for round `round`'s evaluation once the
    block it waited for is on chain (an evaluator waits until its own chain reaches
    `height`): `phase` "local" (every update: ``sfl.evaluate_local_model``) or "model" (the
    aggregate: ``sfl.evaluate_model``)."""

    round: Round
    phase: str
    height: NonNegativeInt

    def validate(self) -> None:
        """ValueError unless `phase` is one of PHASES."""
        if self.phase not in PHASES:
            raise ValueError(f"phase: {self.phase!r} is not one of {', '.join(PHASES)}")


@message("sfl.vote")
@dataclass(frozen=True)
class EvaluatorVote:
    """An evaluator's signed ``sfl.evaluate_local_model`` or ``sfl.evaluate_model``
    transaction, for the publisher to submit."""

    tx: bytes


@message("sfl.done")
@dataclass(frozen=True)
class TaskDone:
    """The task is over (its last round is evaluated on chain): a device may now call
    ``finalize_contract()`` (`Finalize`)."""

    rounds: Round


@message("sfl.finalize")
@dataclass(frozen=True)
class Finalize:
    """A device's signed ``sfl.finalize_contract`` transaction, for the publisher to submit."""

    tx: bytes


MESSAGES = (EvaluateRequest, EvaluatorVote, TaskDone, Finalize)

__all__ = ["MESSAGES", "EvaluateRequest", "EvaluatorVote", "Finalize", "TaskDone"]
