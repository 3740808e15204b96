"""Two-layer cross-chain with blobs on demand: a MEC that relays its certified LMUC block but
never answers the ``blob.get`` for one update blob it names (the scheduled MEC behaviour
``withhold_blobs``) does not get its block's updates used by the other MECs; they give the
block up once every MEC was asked in vain (no wait for the round's deadline), record it, vote
without it, and outvote the withholder's aggregate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node.contracts import gmuc
from node.core.block import Block
from node.daemon import Daemon
from node.learning.attacks.withhold import REFUSAL
from node.schemes.two_layer.scheme import lmuc_id
from orchestrator.collect import read_records
from tests.sim.two_layer_net import digits_learning, run_two_layer
from tests.sim.vanilla_net import TASK_ID, VanillaNet

ROUNDS = 2
WITHHOLDER = "mec1"
TARGET = "dev1-0"  # a device of the withholder: its update's blob is withheld
HONEST = ("mec0", "mec2")
PARAMS = {"full_devices": 3, "fanout": 2, "heartbeat_s": 0.1, "want_timeout_s": 0.5}
WITHHOLD = {"name": "withhold_blobs", "params": {"devices": [TARGET]}, "from_round": 1}


def behaviours(node_id: str) -> list[dict[str, Any]]:
    """The fault schedule: the withholder withholds TARGET's update blobs from round 1 on."""
    return [WITHHOLD] if node_id == WITHHOLDER else []


def target_blobs(node: Daemon, target_key: bytes) -> dict[int, bytes]:
    """Round -> the blob key of `target_key`'s update on `node`'s own LMUC (what it relayed)."""
    chain = node.chains[lmuc_id(node.config.node_id)].replica.chain
    out: dict[int, bytes] = {}
    for height in range(1, chain.height + 1):
        raw = chain.store.block_bytes(height)
        assert raw is not None
        for tx in Block.from_bytes(raw).txs:
            if tx.type == "task.record_update" and tx.sender == target_key:
                out[tx.payload["round"]] = tx.payload["blob"]
    return out


def test_a_withheld_blob_keeps_the_relaying_mecs_updates_out(tmp_path: Path) -> None:
    net = VanillaNet.build(mecs=3, devices_per_mec=4, seed=7)
    # a silent withholder costs half the time left to the vote
    learning = digits_learning(ROUNDS, round_deadline_s=40)
    nodes = run_two_layer(
        net,
        tmp_path,
        learning,
        params=PARAMS,
        seed=7,
        reward_pool=1200,
        config={"startup_timeout_s": 120, "behaviours": behaviours},
    )

    withheld = target_blobs(nodes[WITHHOLDER], net.keys[TARGET].public_key)
    assert sorted(withheld) == list(range(1, ROUNDS + 1))
    # each honest MEC asked the withholder once per round and got no answer
    assert nodes[WITHHOLDER].chains.failures().get(REFUSAL, 0) == len(HONEST) * ROUNDS
    for mec in HONEST:
        rounds = [r for r in read_records(tmp_path / mec) if r["event"] == "round"]
        assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
        for rec in rounds:
            assert rec["withheld"] == {WITHHOLDER: [withheld[rec["round"]].hex()[:16]]}, rec
            assert rec["voted_on"] == "all_relayed", "given up, not waited for to the deadline"
            assert rec["contributors"] == 8  # the 4 devices of each honest MEC
            assert rec["unfetched"] == {}
        failures = nodes[mec].chains.failures()
        assert failures.get("blob_timeout", 0) >= ROUNDS  # the withholder stayed silent
        assert failures.get("blob_unavailable", 0) == ROUNDS  # the other honest MEC lacked it
        assert nodes[mec].drops["lmuc_blob_missing"] == ROUNDS
    state = nodes["pub"].chains["gmuc-t0"].replica.chain.state
    for r in range(1, ROUNDS + 1):
        tally = gmuc.get_round(state, TASK_ID, r)
        assert tally is not None
        assert tally["outvoted"] == [WITHHOLDER], (r, tally)  # its aggregate used its updates
        assert sorted(tally["contributors"]) == sorted(
            f"dev{m}-{i}" for m in (0, 2) for i in range(4)
        )
