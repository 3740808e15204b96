"""PbftValidator's timer prefix: a node running two validators (the two-layer MEC: GMUC and
LMUC) gives each its own prefix, and each fires only its own timers."""

from __future__ import annotations

from pathlib import Path

from node.ledger.chain import ChainConfig
from node.ledger.replica import Replica
from node.roles.validator import TIMER_PREFIX, PbftValidator, Submit
from tests.unit.test_validator_pipeline import IDS, MECS, PUB, Ctx, Net, _submissions
from tests.unit.test_validator_pipeline import config as config

PREFIX = "lmuc:pbft:"


class TimerCtx(Ctx):
    """`Ctx` that keeps the timers set."""

    def __init__(self, node_id: str, net: Net) -> None:
        super().__init__(node_id, net)
        self.timers: dict[str, float] = {}

    def set_timer(self, name: str, delay_s: float) -> None:
        self.timers[name] = delay_s

    def cancel_timer(self, name: str) -> None:
        self.timers.pop(name, None)


def test_each_validator_sets_and_fires_only_its_own_timers(
    tmp_path: Path,
    config: ChainConfig,
) -> None:
    net = Net()
    backup = IDS[1]  # not the primary of view 0: a proposal starts its request timer
    ctx = TimerCtx(backup, net)
    group = [(nid, k.public_key) for nid, k in zip(IDS, MECS, strict=True)]
    lmuc_rep = Replica(tmp_path / "lmuc", config, MECS[1])
    gmuc_rep = Replica(tmp_path / "gmuc", config, MECS[1])
    try:
        lmuc = PbftValidator(ctx, lmuc_rep, group, PUB.public_key, [], timer_prefix=PREFIX)  # type: ignore[arg-type]
        gmuc = PbftValidator(ctx, gmuc_rep, group, PUB.public_key, [])  # type: ignore[arg-type]
        txs, ts = _submissions()[0]
        lmuc.on_submit(ctx, Submit(tuple(tx.to_bytes() for tx in txs), ts))  # type: ignore[arg-type]

        assert ctx.timers and all(name.startswith(PREFIX) for name in ctx.timers)
        (name,) = ctx.timers
        inner = name.removeprefix(PREFIX)
        assert not gmuc.on_timer(ctx, name)  # type: ignore[arg-type]
        assert not lmuc.on_timer(ctx, TIMER_PREFIX + inner)  # type: ignore[arg-type]
        sent = len(net.queue)
        assert lmuc.on_timer(ctx, name)  # type: ignore[arg-type]
        assert len(net.queue) > sent, "the request timeout started a view change"
    finally:
        lmuc_rep.close()
        gmuc_rep.close()
