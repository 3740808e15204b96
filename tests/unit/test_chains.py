"""Several chains per node: the on-disk layout, message routing by chain id, one blob store
shared by a node's chains, handles (submit/append/subscribe), and two daemons each writing
one chain and following the other's over an in-memory network."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from node.codec import Codec, Message
from node.config import NodeConfig
from node.contracts.runtime import Genesis
from node.core.block import Block
from node.core.encoding import sha256
from node.core.finality import SingleWriter
from node.daemon import Daemon
from node.keys import NodeKey, Roster
from node.ledger.chain import ChainConfig, LedgerError
from node.ledger.chains import UnknownChain, chain_dir, open_chains
from node.ledger.replica import Replica
from node.ledger.store import DB_NAME
from node.ledger.sync import CHAIN_FIELD
from node.metrics import MetricsWriter
from node.roles.base import NodeContext, Role
from node.roles.committers import Committer, SingleWriterCommitter
from node.transport import InMemoryNetwork
from topologies import TopologySpec

KEYS = {"x": NodeKey.from_seed(b"\x01" * 32), "y": NodeKey.from_seed(b"\x02" * 32)}
MEMBERS = {n: (k.public_key, "device") for n, k in KEYS.items()}


def _config(chain_id: str, writer: str) -> ChainConfig:
    return ChainConfig(Genesis(MEMBERS, {}, chain_id), SingleWriter(KEYS[writer].public_key))


CONFIGS = {"a": _config("a", "x"), "b": _config("b", "y")}


def test_layout_one_store_per_chain_one_blob_store(tmp_path: Path) -> None:
    chains = open_chains(tmp_path / "x", CONFIGS, KEYS["x"])
    assert sorted(chains) == ["a", "b"]
    for cid in ("a", "b"):
        assert (tmp_path / "x" / "chains" / cid / DB_NAME).is_file()
        assert chains[cid].replica.blobs is chains.blobs
    assert chains.blobs is not None and chains.blobs.root == tmp_path / "x" / "blobs"
    key = chains["a"].replica.blobs.put(b"weights")
    assert chains["b"].replica.blobs.has(key)
    chains.close()
    again = open_chains(tmp_path / "x", CONFIGS, KEYS["x"])  # reopens the same chains
    assert again["a"].height == 0 and again["a"].config == CONFIGS["a"]
    again.close()


def test_chain_ids_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"chain id 'Main' must match"):
        open_chains(tmp_path / "x", {"Main": CONFIGS["a"]}, KEYS["x"])
    with pytest.raises(ValueError, match="must match"):
        chain_dir(tmp_path, "../escape")


def test_only_chain_and_unknown_ids(tmp_path: Path) -> None:
    chains = open_chains(tmp_path / "x", CONFIGS, KEYS["x"])
    with pytest.raises(RuntimeError, match=r"keeps 2 chains \(a, b\), not one"):
        chains.only()
    with pytest.raises(KeyError, match="'c' is not kept by this node; kept: a, b"):
        chains["c"]
    status = {"height": 0, "head": b""}
    with pytest.raises(UnknownChain, match="for chain 'c', not kept here"):
        chains.handle("y", "chain.status", {**status, CHAIN_FIELD: "c"}, 0.0)
    with pytest.raises(UnknownChain, match="without a chain id"):
        chains.handle("y", "chain.status", status, 0.0)
    out = chains.handle("y", "chain.status", {"height": 0, "head": b"", CHAIN_FIELD: "b"}, 0.0)
    assert out == []  # same height: nothing to ask
    assert chains["b"].replica.sync.peer_heights == {"y": 0}
    assert "y" not in chains["a"].replica.sync.peer_heights
    chains.close()


def test_sync_messages_carry_the_chain_id(tmp_path: Path) -> None:
    chains = open_chains(tmp_path / "x", CONFIGS, KEYS["x"])
    out = chains["b"].replica.sync.announce(["y"])
    assert [o.payload[CHAIN_FIELD] for o in out] == ["b"]
    ask = chains.handle("y", "chain.status", {"height": 3, "head": b"", CHAIN_FIELD: "a"}, 0.0)
    assert [(o.type, o.payload[CHAIN_FIELD]) for o in ask] == [("chain.get", "a")]
    chains.close()


def test_a_blob_wanted_by_two_chains_is_stored_once_and_satisfies_both(tmp_path: Path) -> None:
    chains = open_chains(tmp_path / "x", CONFIGS, KEYS["x"])
    data = b"global model"
    key = sha256(data)
    for cid in ("a", "b"):  # as if each chain's block referenced the blob
        chains[cid].replica.sync._wanted_blobs.add(key)
    assert chains.handle("y", "blob.data", {"hash": key, "data": data}, 0.0) == []
    assert chains.blobs is not None and chains.blobs.get(key) == data
    for cid in ("a", "b"):
        assert not chains[cid].replica.sync.missing_blobs
        assert not chains[cid].replica.sync.failures
    chains.handle("y", "blob.data", {"hash": sha256(b"other"), "data": b"other"}, 0.0)
    assert chains.failures() == {"unsolicited_blob": 1}
    answer = chains.handle("y", "blob.get", {"hash": key}, 0.0)
    assert [(o.type, o.payload["data"]) for o in answer] == [("blob.data", data)]
    chains.close()


def test_handle_submit_append_subscribe(tmp_path: Path) -> None:
    writer = open_chains(tmp_path / "x", {"a": CONFIGS["a"]}, KEYS["x"])
    reader = open_chains(tmp_path / "y", {"a": CONFIGS["a"]}, KEYS["y"])
    handle = writer["a"]
    with pytest.raises(RuntimeError, match="no committer installed"):
        handle.submit([])
    sent: list[tuple[list[str], str, dict[str, object]]] = []
    ctx = SimpleNamespace(
        wall_ms=lambda: 5_000,
        multicast=lambda dsts, t, p: sent.append((list(dsts), t, dict(p))),
        metrics=SimpleNamespace(write=lambda *a, **k: None),
    )
    committer: Committer = SingleWriterCommitter(cast(NodeContext, ctx), handle, ["y"])
    handle.install(committer)
    seen: list[int] = []
    reader["a"].subscribe(lambda block: seen.append(block.height))
    handle.submit([handle.transaction("task.close", {"task_id": "none"})])
    handle.submit([])
    assert handle.height == 2
    assert [(d, t, p[CHAIN_FIELD], p["height"]) for d, t, p in sent] == [
        (["y"], "chain.block", "a", 1),
        (["y"], "chain.block", "a", 2),
    ]
    for _, _, payload in sent:  # what the reader's daemon would do with them
        reader.handle("x", "chain.block", payload, 0.0)
    assert seen == [1, 2] and reader["a"].head == handle.head
    stale = Block.from_bytes(cast(bytes, sent[0][2]["block"]))
    with pytest.raises(LedgerError, match="bad_height"):
        reader["a"].append(stale.to_bytes())
    writer.close()
    reader.close()


class ChainWriter(Role):
    """Writes `blocks` empty blocks to its own chain, follows the other; stops when both
    chains reach `blocks` (a timer polls)."""

    def __init__(self, own: str, other: str, peer: str, blocks: int) -> None:
        self.own, self.other, self.peer, self.blocks = own, other, peer, blocks
        self.seen: dict[str, list[int]] = {own: [], other: []}
        self.replica_error = ""

    def start(self, ctx: NodeContext) -> None:
        for cid in (self.own, self.other):
            ctx.chains[cid].subscribe(self._recorder(cid))
        ctx.chains[self.own].install(SingleWriterCommitter(ctx, ctx.chains[self.own], [self.peer]))
        try:
            _ = ctx.replica
        except RuntimeError as exc:
            self.replica_error = str(exc)
        ctx.set_timer("write", 0.0)

    def _recorder(self, chain_id: str) -> Callable[[Block], None]:
        return lambda block: self.seen[chain_id].append(block.height)

    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        pass

    def on_timer(self, ctx: NodeContext, name: str) -> None:
        own = ctx.chains[self.own]
        if own.height < self.blocks:
            own.submit([])
        if own.height >= self.blocks and ctx.chains[self.other].height >= self.blocks:
            ctx.stop()
        else:
            ctx.set_timer("write", 0.01)


def test_two_daemons_each_write_one_chain_and_follow_the_other(tmp_path: Path) -> None:
    roster = Roster({n: k.public_key for n, k in KEYS.items()})
    network = InMemoryNetwork()
    roles = {"x": ChainWriter("a", "b", "y", 5), "y": ChainWriter("b", "a", "x", 5)}
    daemons = {}
    for node, key in KEYS.items():
        daemons[node] = Daemon(
            cast(NodeConfig, SimpleNamespace(node_id=node)),
            cast(TopologySpec, SimpleNamespace()),
            network.attach(node),
            Codec(node, key, roster, first_seq=1_000),
            roles[node],
            MetricsWriter(tmp_path / f"{node}.jsonl", {"node": node}),
            chains=open_chains(tmp_path / node, CONFIGS, key),
        )
    # a frame for a chain y does not keep is counted, not fatal (sequence numbers below the
    # daemon's: no replay)
    stray = Codec("x", KEYS["x"], roster).encode(
        "chain.status", {"height": 9, "head": b"", CHAIN_FIELD: "zz"}
    )
    network.deliver("y", stray)
    threads = [
        threading.Thread(target=d.run, kwargs={"install_signal_handlers": False})
        for d in daemons.values()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    for node, d in daemons.items():
        assert {cid: d.chains[cid].height for cid in d.chains} == {"a": 5, "b": 5}
        assert roles[node].seen == {"a": [1, 2, 3, 4, 5], "b": [1, 2, 3, 4, 5]}
        assert "keeps 2 chains" in roles[node].replica_error
    assert daemons["x"].chains["a"].head == daemons["y"].chains["a"].head
    assert daemons["x"].chains["b"].head == daemons["y"].chains["b"].head
    assert daemons["y"].drops["unknown_chain"] == 1
    for d in daemons.values():
        d.close()


def test_a_daemon_given_one_replica_keeps_it_as_its_only_chain(tmp_path: Path) -> None:
    replica = Replica(tmp_path / "x", CONFIGS["a"], KEYS["x"])  # the layout before chains/
    daemon = Daemon(
        cast(NodeConfig, SimpleNamespace(node_id="x")),
        cast(TopologySpec, SimpleNamespace()),
        InMemoryNetwork().attach("x"),
        Codec("x", KEYS["x"], Roster({n: k.public_key for n, k in KEYS.items()})),
        ChainWriter("a", "b", "y", 0),
        MetricsWriter(tmp_path / "x.jsonl", {"node": "x"}),
        replica=replica,
    )
    assert list(daemon.chains) == ["main"] and daemon.replica is replica
    assert daemon.chains["main"].replica is replica
    # a message without a chain id is for the only chain; the replica's sync adds none
    out = daemon.chains.handle("y", "chain.status", {"height": 2, "head": b""}, 0.0)
    assert [(o.type, CHAIN_FIELD in o.payload) for o in out] == [("chain.get", False)]
    daemon.close()
