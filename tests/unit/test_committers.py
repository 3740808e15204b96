"""committer_for: a role's committer follows its chain's finality rule, not a consensus name."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from node.contracts.runtime import Genesis
from node.core.finality import Committee, SingleWriter
from node.keys import NodeKey
from node.ledger.chain import ChainConfig
from node.ledger.chains import open_chains
from node.roles.base import NodeContext
from node.roles.committers import CommitteeSubmitter, SingleWriterCommitter, committer_for
from node.roles.validator import Submit

KEYS = {
    nid: NodeKey.from_seed(nid.encode().ljust(32, b"\0")) for nid in ("pub", "m0", "m1", "m2", "m3")
}
GENESIS = Genesis({nid: (k.public_key, "mec") for nid, k in KEYS.items()}, {}, "c")


class Recorder:
    """The parts of a NodeContext a committer uses, recording what it sends."""

    def __init__(self) -> None:
        self.config = SimpleNamespace(roster={nid: k.public_key.hex() for nid, k in KEYS.items()})
        self.sent: list[tuple[list[str], Any]] = []
        self.metrics = SimpleNamespace(write=lambda *a, **k: None)

    def multicast(self, dsts: Any, *message: Any) -> None:
        self.sent.append((list(dsts), message))

    def wall_ms(self) -> int:
        return 1000


def _chain(tmp_path: Path, finality: Any, node: str = "pub") -> Any:
    return open_chains(tmp_path / node, {"main": ChainConfig(GENESIS, finality)}, KEYS[node])[
        "main"
    ]


def test_the_single_writer_builds_appends_and_sends_blocks(tmp_path: Path) -> None:
    ctx = Recorder()
    chain = _chain(tmp_path, SingleWriter(KEYS["pub"].public_key))

    committer = committer_for(cast(NodeContext, ctx), chain, ["m0", "m1"])
    committer.submit([])

    assert isinstance(committer, SingleWriterCommitter)
    assert chain.height == 1 and ctx.sent[0][0] == ["m0", "m1"]
    assert ctx.sent[0][1][0] == "chain.block"


def test_a_committee_chain_gets_submissions_sent_to_its_members(tmp_path: Path) -> None:
    ctx = Recorder()
    members = tuple(KEYS[m].public_key for m in ("m0", "m1", "m2", "m3"))
    chain = _chain(tmp_path, Committee.bft(members))

    committer = committer_for(cast(NodeContext, ctx), chain, [])
    committer.submit([])

    assert isinstance(committer, CommitteeSubmitter)
    assert chain.height == 0  # the committee commits it, later
    assert ctx.sent == [(["m0", "m1", "m2", "m3"], (Submit((), 1000),))]


def test_another_nodes_single_writer_chain_cannot_be_written(tmp_path: Path) -> None:
    chain = _chain(tmp_path, SingleWriter(KEYS["m0"].public_key))

    with pytest.raises(ValueError, match="another single writer"):
        committer_for(cast(NodeContext, Recorder()), chain, [])
