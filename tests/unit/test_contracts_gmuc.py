"""Unit tests for the GMUC vote contract (two-layer): a majority of the task's MECs decides a
round's aggregate, dissenters are recorded as outvoted whenever they vote."""

from __future__ import annotations

from typing import Any

from node.contracts import gmuc
from node.core.encoding import sha256

from .test_contracts import DEV1, MEC, PUB, Chain
from .test_contracts_flchain import GENESIS_MECS, MEC2, MEC3


def vote(
    round_: int, tag: str, contributors: list[str] | None = None, **over: Any
) -> dict[str, Any]:
    """A gmuc.vote payload."""
    return {
        "task_id": "t1",
        "round": round_,
        "aggregate": sha256(tag.encode()),
        "contributors": contributors if contributors is not None else ["dev1", "dev2"],
        **over,
    }


def test_majority_decides_and_an_early_dissenter_is_outvoted() -> None:
    chain = Chain(GENESIS_MECS)  # three MECs: quorum 2
    assert gmuc.mec_count(chain.state) == 3 and gmuc.vote_quorum(3) == 2

    bad = chain.ok(MEC3, "gmuc.vote", vote(1, "bad", ["dev1"]))
    assert [e.name for e in bad.events] == ["vote"]
    chain.ok(MEC, "gmuc.vote", vote(1, "good"))
    decided = chain.ok(MEC2, "gmuc.vote", vote(1, "good"))

    names = [e.name for e in decided.events]
    assert names == ["vote", "decided", "outvoted"]
    assert decided.events[2].data["mec"] == "mec3"
    tally = gmuc.get_round(chain.state, "t1", 1)
    assert tally == {
        "aggregate": sha256(b"good").hex(),
        "contributors": ["dev1", "dev2"],
        "outvoted": ["mec3"],
    }


def test_a_late_dissenter_is_outvoted_and_the_decision_stays() -> None:
    chain = Chain(GENESIS_MECS)
    chain.ok(MEC, "gmuc.vote", vote(2, "good"))
    chain.ok(MEC2, "gmuc.vote", vote(2, "good"))
    late = chain.ok(MEC3, "gmuc.vote", vote(2, "bad"))

    assert [e.name for e in late.events] == ["vote", "outvoted"]
    tally = gmuc.get_round(chain.state, "t1", 2)
    assert tally is not None
    assert tally["aggregate"] == sha256(b"good").hex() and tally["outvoted"] == ["mec3"]
    assert gmuc.get_round(chain.state, "t1", 1) is None


def test_no_majority_decides_nothing() -> None:
    chain = Chain(GENESIS_MECS)
    for key, tag in ((MEC, "a"), (MEC2, "b"), (MEC3, "c")):
        chain.ok(key, "gmuc.vote", vote(1, tag))
    assert gmuc.get_round(chain.state, "t1", 1) == {
        "aggregate": "",
        "contributors": [],
        "outvoted": [],
    }


def test_votes_are_once_per_mec_and_round_and_only_by_mecs() -> None:
    chain = Chain(GENESIS_MECS)
    chain.ok(MEC, "gmuc.vote", vote(1, "a"))
    chain.refused(MEC, "gmuc.vote", vote(1, "b"), "already voted")
    chain.refused(PUB, "gmuc.vote", vote(1, "a"), "may not call this")
    chain.refused(DEV1, "gmuc.vote", vote(1, "a"), "may not call this")
    chain.refused(MEC2, "gmuc.vote", vote(1, "a", extra=1), "extra")
    chain.refused(MEC2, "gmuc.vote", vote(1, "a", ["dev1", "dev1"]), "duplicate")
    chain.refused(MEC2, "gmuc.vote", vote(0, "a"), "round")
    chain.refused(MEC2, "gmuc.vote", {**vote(1, "a"), "aggregate": b"short"}, "aggregate")
