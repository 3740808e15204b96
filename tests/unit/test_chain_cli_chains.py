"""`bcfl chain verify|show` on nodes keeping several chains (nodes/<id>/chains/<cid>/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.contracts.runtime import Genesis
from node.core.finality import SingleWriter
from node.keys import NodeKey
from node.ledger.chain import ChainConfig
from node.ledger.chains import open_chains
from orchestrator.chain_cli import ChainCliError, show, verify

KEYS = {"x": NodeKey.from_seed(b"\x05" * 32), "y": NodeKey.from_seed(b"\x06" * 32)}
MEMBERS = {n: (k.public_key, "mec") for n, k in KEYS.items()}
CONFIGS = {
    cid: ChainConfig(Genesis(MEMBERS, {}, cid), SingleWriter(KEYS[w].public_key))
    for cid, w in (("a", "x"), ("b", "y"))
}


def _run(tmp_path: Path, fork_b: bool = False) -> Path:
    """Nodes x and y keep chains a (written by x) and b (written by y), 3 blocks each; with
    `fork_b`, y's own replica of b takes a different (valid) block 3 than x's."""
    run = tmp_path / "run"
    nodes = {n: open_chains(run / "nodes" / n, CONFIGS, k) for n, k in KEYS.items()}
    for cid, writer in (("a", "x"), ("b", "y")):
        own = nodes[writer][cid]
        for i in range(3):
            block = own.replica.chain.build([], KEYS[writer], 1_000 * (i + 1))
            for node in nodes.values():
                if fork_b and cid == "b" and i == 2 and node is nodes["y"]:
                    other = own.replica.chain.build([], KEYS[writer], 3_500)
                    node[cid].append_block(other)
                else:
                    node[cid].append_block(block)
    for chains in nodes.values():
        chains.close()
    return run


def test_every_chain_of_every_node_verifies_with_heads_per_chain(tmp_path: Path) -> None:
    ok, lines = verify(_run(tmp_path))
    assert ok, lines
    assert lines[0] == "chain a:" and "chain b:" in lines
    assert sum(": ok  height 3" in line for line in lines) == 4
    assert "chain a: 2 ledgers, 2 verified; heads agree at equal heights" in lines
    assert "chain b: 2 ledgers, 2 verified; heads agree at equal heights" in lines


def test_a_forked_chain_is_reported_by_its_id(tmp_path: Path) -> None:
    ok, lines = verify(_run(tmp_path, fork_b=True))
    assert not ok
    assert "chain a: 2 ledgers, 2 verified; heads agree at equal heights" in lines
    assert "chain b: 2 ledgers, 2 verified; heads DISAGREE at equal heights" in lines


def test_one_node_directory_verifies_its_chains(tmp_path: Path) -> None:
    ok, lines = verify(_run(tmp_path) / "nodes" / "y")
    assert ok, lines
    assert len(lines) == 4 and lines[0] == "chain a:" and lines[2] == "chain b:"
    assert lines[1].strip().startswith("y: ok  height 3")
    assert lines[3].strip().startswith("y: ok  height 3")


def test_show_needs_the_chain_where_a_node_keeps_several(tmp_path: Path) -> None:
    run = _run(tmp_path)
    with pytest.raises(ChainCliError, match="--chain: x keeps 2 chains; give one of: a, b"):
        show(run)
    with pytest.raises(ChainCliError, match="--chain: 'zz' is not a chain of x; allowed: a, b"):
        show(run, chain="zz")
    lines = show(run / "nodes" / "y", chain="b", height=2)
    assert lines[0].startswith("chain b of y (") and lines[0].endswith("height 3")
    assert lines[1].startswith("block 2 ") and "proposer y" in lines[1]
    assert "certificate: y" in lines[2]
