"""BEES over the in-memory network: real daemons and roles (Ed25519, the PoL core, torch on
digits), each in its own thread. 3 edge servers x 2 UEs; one ES posts a false accuracy for
one of its UEs. Another winner leaves that update out; a lying winner's block is refused by
the others and the next-ranked ES's block (without the lie) is the chain's."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import pytest

from node.contracts import bees as contract
from node.daemon import Daemon
from node.learning.train import configure_torch_threads
from node.ledger.chain import Chain, verify_store
from node.ledger.chains import MAIN_CHAIN, chain_dir
from node.ledger.store import open_store
from node.roles.base import NodeContext, Role
from node.schemes.bees.es import EsRole
from node.schemes.bees.messages import EsShare
from orchestrator.collect import read_records
from tests.sim.vanilla_net import VanillaNet
from tests.unit.node_configs import learning_config
from topologies import NodeSpec

ES = ("mec0", "mec1", "mec2")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> None:
    configure_torch_threads(1)


class LyingEs(EsRole):
    """Posts accuracy 1.0 (0.0 if the truth is near 1) for `target`'s update, and as a
    proposer checks nothing (its block carries the lie)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def start(self, ctx: NodeContext) -> None:
        super().start(ctx)
        self.auditor.tolerance = 1.0  # its own audit lets everything through

    def claimed_accuracy(self, ue: str, blob: bytes) -> float:
        mine = super().claimed_accuracy(ue, blob)
        if ue != self.target:
            return mine
        return 1.0 if mine < 0.99 else 0.0


class SilentEs(EsRole):
    """Shares its UEs' updates and accepts blocks, but never proposes one."""

    def start(self, ctx: NodeContext) -> None:
        super().start(ctx)
        self.election._propose = lambda act: None  # type: ignore[method-assign]


class _NoShareTo:
    """A node context whose ``bees.share`` multicasts leave out `target`."""

    def __init__(self, ctx: NodeContext, target: str) -> None:
        self._ctx, self._target = ctx, target

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def multicast(self, dsts: Iterable[str], msg: object, payload: Any = None) -> None:
        if isinstance(msg, EsShare):
            dsts = [d for d in dsts if d != self._target]
        self._ctx.multicast(dsts, msg, payload)


class WithholdingEs(EsRole):
    """Shares its round with every ES but `target`."""

    def __init__(self, target: str) -> None:
        self.target = target

    def _collect(self, ctx: NodeContext, why: str) -> None:
        super()._collect(cast(NodeContext, _NoShareTo(ctx, self.target)), why)


def _run(
    tmp_path: Path,
    liar: str,
    target: str,
    rounds: int,
    silent: str | None = None,
    withholder: str | None = None,
    deadline_s: float = 60,
    mecs: int = 3,
) -> dict[str, Daemon]:
    net = VanillaNet.build(mecs=mecs, devices_per_mec=2, seed=4)

    def role(spec: NodeSpec) -> Role | None:
        if spec.id == silent:
            return SilentEs()
        if spec.id == withholder:
            return WithholdingEs(target)
        return LyingEs(target) if spec.id == liar else None

    learning = learning_config(
        dataset="digits",
        model="mlp",
        partition="iid",
        rounds=rounds,
        local_epochs=1,
        batch_size=16,
        learning_rate=0.1,
        round_deadline_s=deadline_s,
    )
    params: dict[str, Any] = {"pol_timeout_s": 1.0, "accuracy_tolerance": 0.01}
    return net.run(
        tmp_path,
        learning,
        seed=4,
        reward_pool=0,
        role=role,
        scheme="bees",
        params=params,
        config={"startup_timeout_s": 120},
    )


def _chain(tmp_path: Path, node: str) -> tuple[bytes, Any, list[Any]]:
    """(head hash, final state, blocks above genesis) of `node`'s verified chain."""
    store = open_store(chain_dir(tmp_path / node, MAIN_CHAIN))
    try:
        report = verify_store(store)
        assert report.ok, (node, report.failures)
        return report.head_hash, Chain.open(store).state, list(store.blocks(1))
    finally:
        store.close()


def _records(tmp_path: Path, node: str, event: str) -> list[dict[str, Any]]:
    return [r for r in read_records(tmp_path / node) if r.get("event") == event]


def test_a_winner_leaves_out_an_update_whose_accuracy_another_es_lied_about(
    tmp_path: Path,
) -> None:
    _run(tmp_path, liar="mec1", target="dev1-0", rounds=2)

    head, state, blocks = _chain(tmp_path, "pub")
    assert len(blocks) == 2
    for node in ES:
        assert _chain(tmp_path, node)[0] == head, f"{node} holds another chain"
    for r in (1, 2):
        recorded = {u.ue for u in contract.round_updates(state, r)}
        assert "dev1-0" not in recorded, "the false accuracy is not on chain"
        assert {"dev0-0", "dev0-1", "dev1-1", "dev2-0", "dev2-1"} <= recorded
        election = contract.election(state, r)
        assert election is not None and election["es"] != "mec1"
    proposals = [p for n in ES for p in _records(tmp_path, n, "pol_propose")]
    assert proposals and all(p["left_out"] == ["dev1-0"] for p in proposals)


def test_a_lying_winners_block_is_refused_and_the_next_ranked_es_proposes(
    tmp_path: Path,
) -> None:
    # round 1's ranking (no reports yet) is by ES id: mec0 is the winner, mec1 next
    _run(tmp_path, liar="mec0", target="dev0-0", rounds=1)

    head, state, blocks = _chain(tmp_path, "pub")
    assert len(blocks) == 1
    election = contract.election(state, 1)
    assert election is not None and (election["es"], election["rank"]) == ("mec1", 1)
    recorded = {u.ue for u in contract.round_updates(state, 1)}
    assert "dev0-0" not in recorded and "dev0-1" in recorded
    for honest in ("mec1", "mec2"):
        assert _chain(tmp_path, honest)[0] == head
        rejects = _records(tmp_path, honest, "pol_reject")
        assert any(r["reason"].startswith("unverifiable:accuracy of 'dev0-0'") for r in rejects)
    # the liar appended its own block: it is alone on it
    assert _chain(tmp_path, "mec0")[0] != head


def test_a_silent_winner_is_replaced_by_the_next_ranked_es_after_its_turn(
    tmp_path: Path,
) -> None:
    # round 1: mec0 (the winner) stays silent, mec1 proposes at its turn; mec2 lies about
    # dev2-0, which mec1 leaves out
    _run(tmp_path, liar="mec2", target="dev2-0", rounds=2, silent="mec0")

    head, state, blocks = _chain(tmp_path, "pub")
    assert len(blocks) == 2
    for node in ES:
        assert _chain(tmp_path, node)[0] == head, f"{node} holds another chain"
    for r in (1, 2):
        election = contract.election(state, r)
        assert election is not None and election["es"] != "mec0" and election["rank"] >= 1
        assert "dev2-0" not in {u.ue for u in contract.round_updates(state, r)}
    assert contract.election(state, 1)["es"] == "mec1"  # type: ignore[index]


def test_an_es_without_a_share_fetches_the_weights_a_block_needs_and_accepts_it(
    tmp_path: Path,
) -> None:
    # 2 ES (both must accept: the publisher follows a majority): mec0, the winner, never
    # shares with mec1. mec0's block reaches mec1 before mec1's round starts (at its share
    # deadline); mec1 fetches mec0's updates' weights from mec0 (blob.get), then judges the
    # kept block and accepts it
    _run(tmp_path, liar="", target="mec1", rounds=2, withholder="mec0", deadline_s=8, mecs=2)

    head, state, blocks = _chain(tmp_path, "pub")
    assert len(blocks) == 2
    for node in ("mec0", "mec1"):
        assert _chain(tmp_path, node)[0] == head, f"{node} holds another chain"
    for r in (1, 2):
        assert {"dev0-0", "dev0-1"} <= {u.ue for u in contract.round_updates(state, r)}
        assert contract.election(state, r)["es"] == "mec0"  # type: ignore[index]
    accepted = _records(tmp_path, "mec1", "pol_accept")
    assert [(a["height"], a["proposer"]) for a in accepted] == [(1, "mec0"), (2, "mec0")]
    assert not _records(tmp_path, "mec1", "pol_reject")
