"""What a run's forked daemons share instead of each building it: the genesis state (frozen),
the chain config's encoding, the roster, the validated shared fields (node.runfiles)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from node import runfiles
from node.config import SHARED_FIELDS, NodeConfig
from node.contracts.runtime import Genesis
from node.contracts.state import State
from node.core.encoding import canonical
from node.core.finality import SingleWriter
from node.keys import NodeKey
from node.ledger.chain import Chain, ChainConfig, verify_store, write_genesis_template
from node.ledger.store import open_store
from node.transport.zmq import ZmqTransport
from topologies.backends.local import free_port
from topologies.routing import RouteIndex


def config_of(n: int = 5) -> tuple[ChainConfig, list[NodeKey]]:
    keys = [NodeKey.from_seed(bytes([i + 1]) * 32) for i in range(n)]
    members = {f"n{i}": (k.public_key, "device") for i, k in enumerate(keys)}
    genesis = Genesis(members=members, balances={"n0": 100}, chain_id="c")
    return ChainConfig(genesis, SingleWriter(keys[0].public_key)), keys


def test_a_frozen_state_refuses_writes_and_its_copy_takes_them() -> None:
    state = State()
    state.set("a", "k", 1)
    root = state.root()
    state.freeze()
    for write in (
        lambda: state.set("a", "k", 2),
        lambda: state.delete("a", "k"),
        state.begin,
        lambda: state.apply_diff({("a", "x"): canonical(3)}),
    ):
        with pytest.raises(RuntimeError, match="frozen"):
            write()
    assert state.get("a", "k") == 1 and state.root() == root and state.frozen
    other = state.copy()
    other.set("a", "k", 2)
    assert not other.frozen and other.get("a", "k") == 2 and state.get("a", "k") == 1


def test_fresh_chains_of_one_config_share_its_genesis_state(tmp_path: Path) -> None:
    config, keys = config_of()
    first = Chain(open_store(tmp_path / "a"), config)
    second = Chain(open_store(tmp_path / "b"), config)
    _, genesis_state, _ = config.genesis_block
    assert first.state is genesis_state and second.state is genesis_state
    assert genesis_state.frozen
    # the same as what each store holds, and as a store reopened reads back
    for chain in (first, second):
        assert State.from_rows(chain.store.state_rows()) == chain.state
    first.store.close()
    reopened = Chain(open_store(tmp_path / "a"), ChainConfig.from_dict(config.to_dict()))
    assert reopened.state == genesis_state and reopened.state is not genesis_state
    # a block replaces the chain's state with a new one; the shared one is unchanged
    second.append(second.build((), keys[0], timestamp_ms=1))
    assert second.state is not genesis_state and second.height == 1
    assert config.genesis_block[1] is genesis_state and genesis_state.root() == first.state.root()
    assert config.encoded == canonical(config.to_dict())


def test_a_store_copied_from_the_genesis_template_equals_one_written_itself(
    tmp_path: Path,
) -> None:
    config, keys = config_of()
    template = tmp_path / "genesis.sqlite"
    write_genesis_template(template, config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["genesis.sqlite"]  # no leftovers

    own = Chain(open_store(tmp_path / "own"), config)
    copied_store = open_store(tmp_path / "copy", template=template)
    assert copied_store.from_template and not own.store.from_template
    copied = Chain(copied_store, config)
    assert copied.state is config.genesis_block[1]  # shared, not read back
    assert copied.store.state_rows() == own.store.state_rows()
    assert copied.store.block_bytes(0) == own.store.block_bytes(0)
    assert copied.head == own.head and verify_store(copied.store).ok

    copied.append(copied.build((), keys[0], timestamp_ms=5))
    copied.store.close()
    again = open_store(tmp_path / "copy", template=template)  # exists: not copied over
    assert not again.from_template and again.height() == 1
    reopened = Chain(again, config)
    assert reopened.height == 1 and reopened.state is not config.genesis_block[1]
    assert verify_store(reopened.store).ok


def test_a_template_of_another_chain_is_refused(tmp_path: Path) -> None:
    config, _ = config_of()
    other = dataclasses.replace(config, finality=SingleWriter(bytes(32)))
    write_genesis_template(tmp_path / "other.sqlite", other)
    with pytest.raises(ValueError, match="different chain"):
        Chain(open_store(tmp_path / "n", template=tmp_path / "other.sqlite"), config)


def write_run(tmp_path: Path) -> tuple[Path, list[Path]]:
    from orchestrator.runner import Run
    from orchestrator.scenario import load_scenario

    run = Run(load_scenario(Path("scenarios/quickstart.yaml")), out_dir=tmp_path / "run")
    return tmp_path / "run" / "shared.json", [Path(launch.argv[-1]) for launch in run.prepare()]


def test_configs_take_the_parsed_shared_fields_without_copying_them(tmp_path: Path) -> None:
    shared_path, configs = write_run(tmp_path)
    shared = runfiles.load(shared_path)
    chain = shared.chains["main"]
    assert shared.roster is not None and list(shared.chains) == ["main"]
    assert "genesis_block" in vars(chain) and "encoded" in vars(chain)
    assert shared.data["chains"]["main"] is chain  # parsed once, in place
    assert sorted(shared.roster.ids()) == sorted(shared.data["roster"])
    assert isinstance(getattr(shared.topology, "_route_index", None), RouteIndex)
    assert shared.genesis_dbs["main"].parent == shared_path.parent
    assert runfiles.load(shared_path).genesis_dbs == shared.genesis_dbs
    for path in configs:
        config = NodeConfig.load(path)
        for name in SHARED_FIELDS:
            assert getattr(config, name) is shared.data[name], name
        assert config.endpoints[config.node_id] == config.bind


def test_a_config_keeps_its_own_value_of_a_shared_field(tmp_path: Path) -> None:
    _, configs = write_run(tmp_path)
    data = json.loads(configs[0].read_text())
    data["endpoints"] = {"pub": "tcp://127.0.0.1:9"}
    configs[0].write_text(json.dumps(data))
    assert NodeConfig.load(configs[0]).endpoints == {"pub": "tcp://127.0.0.1:9"}


def test_a_shared_field_of_the_wrong_type_is_refused_naming_it(tmp_path: Path) -> None:
    shared_path, _ = write_run(tmp_path)
    data = json.loads(shared_path.read_text())
    data["endpoints"] = {"pub": 5}
    shared_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="endpoints"):
        runfiles.load(shared_path)


def test_the_zmq_transport_ignores_its_own_endpoint_among_its_peers() -> None:
    ends = {nid: f"tcp://127.0.0.1:{free_port('127.0.0.1')}" for nid in ("a", "b")}
    transport = ZmqTransport("a", ends["a"], ends, max_frame_bytes=1024)
    try:
        transport.send("a", b"to myself")
        assert transport.stats.dropped["unknown_peer"] == 1 and transport.stats.sent_msgs == 0
    finally:
        transport.close()
