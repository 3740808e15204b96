"""`bcfl chain verify` on a run whose devices keep the chain as light replicas."""

from __future__ import annotations

from pathlib import Path

from node.contracts.runtime import Genesis
from node.core.finality import SingleWriter
from node.keys import NodeKey
from node.ledger.chain import ChainConfig
from node.ledger.chains import open_chains
from orchestrator.chain_cli import verify

KEYS = {n: NodeKey.from_seed(bytes([i + 7]) * 32) for i, n in enumerate(("pub", "d1", "d2"))}
CONFIG = ChainConfig(
    Genesis({n: (k.public_key, "device") for n, k in KEYS.items()}, {}, "lc"),
    SingleWriter(KEYS["pub"].public_key),
)


def _run(tmp_path: Path, fork: bool = False) -> Path:
    """pub writes 3 blocks (full replica); d1 and d2 keep them light, d2 only the first 2
    (or, with `fork`, a different valid block 2)."""
    run = tmp_path / "run"
    nodes = {
        n: open_chains(
            run / "nodes" / n, {"main": CONFIG}, k, light=() if n == "pub" else ("main",)
        )
        for n, k in KEYS.items()
    }
    writer = nodes["pub"]["main"]
    for i in range(3):
        block = writer.replica.chain.build([], KEYS["pub"], 1_000 * (i + 1))
        if fork and i == 1:
            nodes["d2"]["main"].append_block(writer.replica.chain.build([], KEYS["pub"], 2_500))
        for n in ("pub", "d1", "d2"):
            if n != "d2" or i < 1 or (i == 1 and not fork):
                nodes[n]["main"].append_block(block)
    for chains in nodes.values():
        chains.close()
    return run


def test_light_replicas_are_named_and_agree_with_the_full_one(tmp_path: Path) -> None:
    ok, lines = verify(_run(tmp_path))
    assert ok, lines
    light = "light replica (headers, certificates, Merkle roots)"
    by_node = {line.split(":")[0].strip(): line for line in lines if ": ok" in line}
    assert by_node["d1"].strip().startswith("d1: ok  height 3") and by_node["d1"].endswith(light)
    assert by_node["d2"].strip().startswith("d2: ok  height 2") and by_node["d2"].endswith(light)
    assert by_node["pub"].strip().startswith("pub: ok  height 3")
    assert "light" not in by_node["pub"]
    assert (
        "chain main: light replicas: d1, d2; their header chains agree with the full replicas'"
        in lines
    )


def test_a_light_replica_on_another_branch_is_reported(tmp_path: Path) -> None:
    ok, lines = verify(_run(tmp_path, fork=True))
    assert not ok
    assert (
        "chain main: light replicas: d1, d2; their header chains DIFFER from the full replicas': d2"
        in lines
    )
