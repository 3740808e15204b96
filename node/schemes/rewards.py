"""Reward rules: pure functions from what the chain recorded to integer payouts.

How it works
- `contributions(state, task_id)` reads the task contract's state (`node.contracts.task`):
  for every recorded global round, one `Contribution` per contributor — the round, the node
  and the sample count of its recorded update (and its accuracy where the record holds one).
- A rule maps `(pool, contributions)` to `Payout`s: sorted by node, every amount a positive
  int, their sum at most `pool`. Shares are exact fractions (a float counts as the decimal
  it prints as) and each amount is rounded down,
  so the rules are deterministic on every node and never overdraw the escrow; what is left
  stays in escrow and `task.close` refunds it to the publisher.
- Rules: `by_samples` (vanilla and BlockFL: proportional to data size), `above_threshold`
  (SFL: only updates whose accuracy reached the threshold are paid, by samples),
  `by_quality` (the two-layer paper's FL reward factors data size × data quality, quality
  being the update's accuracy), and the general `weighted` / `proportional` they are built
  on: a scheme adds its own factors (e.g. a reputation per node, or a mining share per
  block producer) as a weight function or a share map.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from node.contracts.state import State
from node.contracts.task import NS_GLOBAL, NS_UPDATE, update_key

Share = int | float | Fraction


@dataclass(frozen=True)
class Contribution:
    """A device's update that a recorded global round used."""

    round: int
    node: str
    samples: int
    accuracy: float | None = None  # the update's own accuracy, where a scheme measured one

    def __post_init__(self) -> None:
        """Validate the round, the node and the sample count."""
        if isinstance(self.samples, bool) or not isinstance(self.samples, int):
            raise ValueError(f"samples of {self.node!r} must be an int, got {self.samples!r}")
        if self.samples <= 0:
            raise ValueError(f"samples of {self.node!r} must be > 0, got {self.samples}")
        if not self.node:
            raise ValueError("a contribution needs a node id")


@dataclass(frozen=True)
class Payout:
    """Tokens paid from the task's escrow to one node (a `task.reward` transaction)."""

    to: str
    amount: int


def contributions(state: State, task_id: str) -> list[Contribution]:
    """Every contribution to task `task_id` the chain recorded, by round then node."""
    prefix = f"{task_id}/"
    out = []
    for key, record in state.items(NS_GLOBAL):
        if not key.startswith(prefix):
            continue
        round_ = int(key[len(prefix) :])
        for node in record["contributors"]:
            update = state.get(NS_UPDATE, update_key(task_id, round_, node))
            if update is None:  # the contract refuses such a record; a state that has one is bad
                raise ValueError(f"round {round_} names {node!r}, which has no update recorded")
            accuracy = update.get("accuracy")
            out.append(
                Contribution(
                    round_,
                    str(node),
                    int(update["samples"]),
                    None if accuracy is None else float(accuracy),
                )
            )
    return sorted(out, key=lambda c: (c.round, c.node))


def _pool(pool: int) -> int:
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 0:
        raise ValueError(f"pool must be an int >= 0, got {pool!r}")
    return pool


def _share(node: str, value: Share) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float | Fraction):
        raise ValueError(f"share of {node!r} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"share of {node!r} must be finite, got {value!r}")
    if value < 0:
        raise ValueError(f"share of {node!r} must be >= 0, got {value!r}")
    # a float counts as the decimal it prints as (0.3 is 3/10, not the binary 0.2999...)
    return Fraction(repr(value)) if isinstance(value, float) else Fraction(value)


def proportional(pool: int, shares: Mapping[str, Share]) -> list[Payout]:
    """Split `pool` in proportion to `shares` (node -> a number >= 0), rounding down; nodes
    whose amount rounds to 0 get no payout."""
    total_pool = _pool(pool)
    exact = {node: _share(node, value) for node, value in shares.items()}
    total = sum(exact.values(), Fraction(0))
    if total == 0:
        return []
    payouts = [Payout(node, math.floor(total_pool * exact[node] / total)) for node in sorted(exact)]
    return [p for p in payouts if p.amount > 0]


def weighted(
    pool: int,
    contributions: Iterable[Contribution],
    weight: Callable[[Contribution], Share],
) -> list[Payout]:
    """Split `pool` in proportion to each node's summed `weight` over its contributions."""
    shares: dict[str, Fraction] = {}
    for c in contributions:
        shares[c.node] = shares.get(c.node, Fraction(0)) + _share(c.node, weight(c))
    return proportional(pool, shares)


def by_samples(pool: int, contributions: Iterable[Contribution]) -> list[Payout]:
    """The vanilla (and BlockFL) rule: in proportion to the samples each node contributed."""
    return weighted(pool, contributions, lambda c: c.samples)


def _accuracy(c: Contribution) -> float:
    if c.accuracy is None:
        raise ValueError(f"the update of {c.node!r} in round {c.round} has no accuracy")
    return c.accuracy


def above_threshold(
    pool: int, contributions: Iterable[Contribution], threshold: float
) -> list[Payout]:
    """SFL: by samples, counting only updates whose accuracy is at least `threshold`."""
    if isinstance(threshold, bool) or not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    return weighted(pool, contributions, lambda c: c.samples if _accuracy(c) >= threshold else 0)


def by_quality(pool: int, contributions: Iterable[Contribution]) -> list[Payout]:
    """The two-layer paper's FL reward: data size × data quality (samples × accuracy)."""
    return weighted(pool, contributions, lambda c: c.samples * _share(c.node, _accuracy(c)))
