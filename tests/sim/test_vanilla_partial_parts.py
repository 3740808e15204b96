"""Updates forwarded one by one that do not fit one message go to the publisher in parts
(`split_partial`): with ``max_message_bytes`` of 64 KiB a MEC's three 20 KB updates take
three messages, and the run learns exactly what the same run with one message per MEC
learns. A MEC sending parts that make up no partial (more parts than it has devices, a part
twice) has them refused and counted; its honest parts still make the round.

Real daemons, roles, Ed25519 and torch in threads; only the transport is in memory. Every
device answers before the (long) deadline, so nothing below depends on timing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from node.daemon import Daemon
from node.learning.train import configure_torch_threads
from node.roles.base import NodeContext, Role
from node.schemes.vanilla.common import PUBLISHER
from node.schemes.vanilla.mec import MecRole
from node.schemes.vanilla.messages import Partial, split_partial
from orchestrator.collect import read_records
from tests.sim.two_layer_net import digits_learning
from tests.sim.vanilla_net import VanillaNet
from topologies import NodeSpec

ROUNDS = 2
SMALL = 64 * 1024


class GarblingMec(MecRole):
    """Before its honest parts: part 0 claiming 50 parts (it has 3 devices), and part 0
    again after the honest one."""

    def send_partial(self, ctx: NodeContext, partial: Partial) -> int:
        parts = split_partial(partial, ctx.config.max_message_bytes // 2)
        ctx.send(PUBLISHER, replace(parts[0], parts=50))
        ctx.send(PUBLISHER, parts[0])
        ctx.send(PUBLISHER, parts[0])
        for part in parts[1:]:
            ctx.send(PUBLISHER, part)
        return len(parts)


def run(tmp_path: Path, max_message_bytes: int, garbler: str | None = None) -> dict[str, Daemon]:
    configure_torch_threads(1)
    tmp_path.mkdir(exist_ok=True)
    net = VanillaNet.build(mecs=2, devices_per_mec=3, seed=4, fixed_keys=True)
    learning = digits_learning(ROUNDS, round_deadline_s=300)
    config: dict[str, Any] = {
        "startup_timeout_s": 120,
        "aggregator": {"name": "accuracy_threshold", "params": {"threshold": 0.0}},
    }

    def role(spec: NodeSpec) -> Role | None:
        return GarblingMec() if spec.id == garbler else None

    return net.run(
        tmp_path,
        learning,
        seed=4,
        reward_pool=0,
        config=config,
        role=role,
        max_message_bytes=max_message_bytes,
    )


def rounds(tmp_path: Path, node: str) -> list[dict[str, Any]]:
    return [r for r in read_records(tmp_path / node) if r["event"] == "round"]


def test_parts_make_the_same_rounds_as_one_message(tmp_path: Path) -> None:
    run(tmp_path / "whole", 8 * 1024 * 1024)
    nodes = run(tmp_path / "parts", SMALL)
    for mec in ("mec0", "mec1"):
        assert [r.get("parts") for r in rounds(tmp_path / "parts", mec)] == [3] * ROUNDS
        assert all("parts" not in r for r in rounds(tmp_path / "whole", mec))
    whole, parts = rounds(tmp_path / "whole", "pub"), rounds(tmp_path / "parts", "pub")
    assert [(r["round"], r["contributors"], r["accuracy"]) for r in parts] == [
        (r["round"], r["contributors"], r["accuracy"]) for r in whole
    ]
    assert [r["contributors"] for r in parts] == [6] * ROUNDS
    assert {nid: dict(d.drops) for nid, d in nodes.items() if d.drops} == {}


def test_parts_that_make_up_no_partial_are_refused(tmp_path: Path) -> None:
    nodes = run(tmp_path, SMALL, garbler="mec1")
    assert [r["contributors"] for r in rounds(tmp_path, "pub")] == [6] * ROUNDS
    assert dict(nodes["pub"].drops) == {"bad_partial": 2 * ROUNDS}
