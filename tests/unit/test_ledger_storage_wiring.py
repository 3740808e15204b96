"""The block storage time t from a scenario to every node's stores: the ``ledger.storage_time``
setting, the node config, `open_chains` (full and light replicas), and the arrival time
sync records with each block it appends."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import NodeConfig
from node.keys import NodeKey
from node.ledger.chains import open_chains
from node.ledger.settings import LedgerSettings
from node.ledger.sync import ChainSync
from orchestrator.scenario import ScenarioError, parse_scenario
from tests.unit.test_ledger_chain import PUB, Writer, _config
from tests.unit.test_ledger_timing import EPOCH_MS

T_MS = 15.0


def test_storage_time_is_off_by_default_and_t_is_the_topology_unit() -> None:
    default = parse_scenario({})
    emulated = parse_scenario({"ledger": {"storage_time": "t"}, "topology": {"t_ms": T_MS}})

    assert default.ledger.storage_time == "none"
    assert default.ledger.storage_time_ms(default.topology.t_ms) == 0.0
    assert emulated.ledger.storage_time_ms(emulated.topology.t_ms) == T_MS
    assert LedgerSettings(storage_time="t").storage_time_ms(2.5) == 2.5


def test_a_bad_storage_time_names_the_field() -> None:
    with pytest.raises(ScenarioError, match=r"ledger\.storage_time: 'always' is invalid"):
        parse_scenario({"ledger": {"storage_time": "always"}})


def test_the_node_config_bounds_the_storage_time() -> None:
    field = NodeConfig.model_fields["ledger_storage_time_ms"]
    assert field.default == 0.0
    with pytest.raises(ValueError, match="ledger_storage_time_ms"):
        NodeConfig.model_validate({"ledger_storage_time_ms": -1.0})


@pytest.mark.parametrize("light", [False, True])
def test_open_chains_gives_every_replica_the_storage_time(tmp_path: Path, light: bool) -> None:
    """A full replica (the writer's chain) and a light one (a device's) both take at least t
    per block above genesis, and record it."""
    config = _config()
    own = open_chains(tmp_path / "pub", {"task": config}, PUB)
    other = open_chains(
        tmp_path / "dev0",
        {"task": config},
        NodeKey.generate(),
        light=("task",) if light else (),
        storage_time_ms=T_MS,
    )
    try:
        writer = Writer(own["task"].replica.chain)
        for _ in range(2):
            block = writer.next_block()
            own["task"].append_block(block)
            other["task"].append(block.to_bytes(), received_ms=EPOCH_MS)
        store = other["task"].replica.chain.store
        assert store.storage_time_ms == T_MS
        assert own["task"].replica.chain.store.storage_time_ms == 0.0
        times = store.block_times()
    finally:
        own.close()
        other.close()
    assert [t.height for t in times] == [1, 2]
    assert all(t.storage_ms >= T_MS and t.t_ms == T_MS for t in times)
    assert all(t.received_ms == EPOCH_MS for t in times)


def test_sync_records_when_the_blocks_message_arrived(tmp_path: Path) -> None:
    """``chain.block`` and ``chain.blocks``: each block is stored with the caller's arrival
    time of its message, not the time it was appended."""
    config = _config()
    source = open_chains(tmp_path / "pub", {"task": config}, PUB)
    target = open_chains(tmp_path / "dev0", {"task": config}, NodeKey.generate())
    try:
        writer = Writer(source["task"].replica.chain)
        blocks = []
        for _ in range(3):
            blocks.append(writer.next_block())
            source["task"].append_block(blocks[-1])
        sync: ChainSync = target["task"].replica.sync
        live = {"block": blocks[0].to_bytes(), "height": 1, "chain": "task"}
        target.handle("pub", "chain.block", live, now=1.0, received_ms=EPOCH_MS + 1)
        target.handle("pub", "chain.status", {"height": 3, "head": blocks[2].hash}, now=2.0)
        assert sync.syncing  # it asked for blocks 2..3
        reply = {"blocks": [b.to_bytes() for b in blocks[1:]], "height": 3, "chain": "task"}
        target.handle("pub", "chain.blocks", reply, now=3.0, received_ms=EPOCH_MS + 3)
        times = target["task"].replica.chain.store.block_times()
    finally:
        source.close()
        target.close()
    assert [(t.height, t.received_ms) for t in times] == [
        (1, EPOCH_MS + 1),
        (2, EPOCH_MS + 3),
        (3, EPOCH_MS + 3),
    ]
    assert all(t.validated_ms > EPOCH_MS + 3 for t in times)  # appended later than "arrived"
