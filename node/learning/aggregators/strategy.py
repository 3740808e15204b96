"""Aggregation strategies as objects: what a rule needs from the roles, then select + aggregate.

How it works
- A `Strategy` is a frozen object holding its validated parameters (a frozen dataclass,
  `params_cls`). Its class says what it needs (`Needs`): `individual` — the MEC forwards its
  devices' updates one by one instead of pre-averaging them into one partial (robust and
  selective rules must see every update); `accuracy` — every update must carry its accuracy
  on a validation set before `select` (the aggregating node measures it).
- `select(updates)` splits the updates into the kept ones (in the order the rule ranks them,
  input order where it does not rank) and the rejected ones, each with a short reason code
  (for metrics) and a human detail (for logs). `aggregate(kept)` combines the kept updates;
  it raises `NoAcceptedUpdatesError` where none was kept. `combine(updates)` does both and
  returns `Combined` with `weights=None` where nothing was kept (the caller leaves its global
  model unchanged), so a role needs no try/except for the normal "nothing passed" case.
- A strategy whose `needs.individual` is false also defines `partial(updates)`: what an
  intermediate node (a MEC) sends up instead of the updates, itself an `Update` that
  `aggregate` accepts (FedAvg: the sample-weighted average with the summed sample count).
- The roles never branch on a strategy's name; they read `needs` and call these methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from node.learning.aggregators.update import Update, as_updates
from node.learning.weights import Weights

P = TypeVar("P")

UpdateLike = Update | tuple[Mapping[str, np.ndarray], float]


class NoAcceptedUpdatesError(ValueError):
    """The strategy kept no update (e.g. none reached the accuracy threshold)."""


@dataclass(frozen=True)
class Needs:
    """What a strategy needs from the roles that feed it."""

    individual: bool = False  # every device's update on its own, not a MEC's partial
    accuracy: bool = False  # each update's accuracy on a validation set, before select


@dataclass(frozen=True)
class Rejection:
    """An update the strategy did not use: `reason` a short snake_case code, `detail` prose."""

    update: Update
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Selection:
    """The updates a strategy keeps (in the order it aggregates them) and those it rejects."""

    kept: tuple[Update, ...]
    rejected: tuple[Rejection, ...] = ()

    @property
    def kept_senders(self) -> list[str]:
        """The senders of the kept updates, sorted."""
        return sorted(u.sender for u in self.kept)

    @property
    def reasons(self) -> dict[str, str]:
        """Rejected sender -> reason code, sorted by sender."""
        return {r.update.sender: r.reason for r in sorted(self.rejected, key=_sender)}


def _sender(rejection: Rejection) -> str:
    return rejection.update.sender


@dataclass(frozen=True)
class Combined:
    """The result of `Strategy.combine`: the selection and the new weights (None: none kept)."""

    selection: Selection
    weights: Weights | None


def keep_and_reject(
    ups: Sequence[Update], kept: Sequence[Update], reason: str, detail: Callable[[Update], str]
) -> Selection:
    """`kept` (in its order) and every other update of `ups` rejected under `reason` (in
    input order), each with `detail(update)`."""
    chosen = {id(u) for u in kept}
    rejected = tuple(Rejection(u, reason, detail(u)) for u in ups if id(u) not in chosen)
    return Selection(tuple(kept), rejected)


@dataclass(frozen=True)
class Strategy(ABC, Generic[P]):
    """An aggregation rule with validated parameters; subclasses set the class variables."""

    params: P
    name: ClassVar[str]
    needs: ClassVar[Needs] = Needs(individual=True)
    params_cls: ClassVar[type[Any]]

    def __post_init__(self) -> None:
        """TypeError unless `params` is this strategy's parameter class."""
        if not isinstance(self.params, self.params_cls):
            raise TypeError(
                f"aggregator {self.name!r} takes {self.params_cls.__name__}, "
                f"not {type(self.params).__name__}"
            )

    def min_updates(self) -> int:
        """The fewest updates this rule accepts (`select` raises ValueError below it)."""
        return 1

    def select(self, updates: Sequence[UpdateLike]) -> Selection:
        """Keep every update (the default for rules that use them all); ValueError if none."""
        return Selection(tuple(as_updates(updates)))

    def aggregate(self, kept: Sequence[UpdateLike]) -> Weights:
        """Combine the kept updates; NoAcceptedUpdatesError where there are none."""
        if not kept:
            raise NoAcceptedUpdatesError(f"aggregator {self.name!r} kept no update")
        return self._aggregate(as_updates(kept))

    @abstractmethod
    def _aggregate(self, kept: list[Update]) -> Weights:
        """Combine a non-empty list of selected updates."""

    def combine(self, updates: Sequence[UpdateLike]) -> Combined:
        """`select`, then `aggregate` what was kept (weights None where nothing was)."""
        selection = self.select(updates)
        weights = self.aggregate(selection.kept) if selection.kept else None
        return Combined(selection, weights)

    def partial(self, updates: Sequence[UpdateLike], sender: str = "") -> Update:
        """What a MEC forwards instead of its devices' updates (only where not
        `needs.individual`); here a ValueError: this rule needs every update."""
        raise ValueError(f"aggregator {self.name!r} needs every update, not a partial")
