"""kill -9 a real process while its light replica appends blocks; the reopened light store
must verify (header links, certificates, Merkle roots) and keep every block reported
appended, and the replica goes on from there."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from node.contracts.runtime import Genesis
from node.core.encoding import sha256
from node.core.finality import SingleWriter
from node.core.tx import Transaction
from node.keys import NodeKey
from node.ledger.chain import Chain, ChainConfig
from node.ledger.light import LightChain, verify_light_store
from node.ledger.store import open_store

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BLOCKS = 80
KILLS = 12
PUB = NodeKey.from_seed(b"p" * 32)
DEVICES = {f"dev0-{i}": NodeKey.from_seed(bytes([i + 1]) * 32) for i in range(20)}


def _config() -> ChainConfig:
    members = {"pub": (PUB.public_key, "publisher")}
    members.update({nid: (k.public_key, "device") for nid, k in DEVICES.items()})
    genesis = Genesis(members=members, balances={"pub": 10**6}, chain_id="light-crash")
    return ChainConfig(genesis, SingleWriter(PUB.public_key))


FOLLOWER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    sys.path.insert(0, sys.argv[3])
    from test_light_crash import DEVICES, _config
    from node.ledger.light import LightChain
    from node.ledger.store import open_store

    blocks = Path(sys.argv[2]).read_bytes().split(b"\\n--\\n")
    chain = LightChain(open_store(Path(sys.argv[1])), _config(), DEVICES["dev0-0"].public_key)
    print(chain.height, flush=True)
    for raw in blocks[chain.height:]:
        chain.append_bytes(raw)
        print(chain.height, flush=True)
    """
)


def _blocks(tmp: Path) -> list[bytes]:
    writer = Chain(open_store(tmp / "writer"), _config())
    publish = {"task_id": "t", "reward_pool": 1000, "rounds": 10_000, "model": "m", "dataset": "d"}
    out = [writer.build([Transaction.create(PUB, "task.publish", 0, publish)], PUB, 1)]
    writer.append(out[0])
    for r in range(1, BLOCKS):
        txs = [
            Transaction.create(
                key,
                "task.record_update",
                r,
                {
                    "task_id": "t",
                    "round": r,
                    "blob": sha256(f"{n}/{r}".encode()),
                    "size": 1,
                    "samples": 1,
                },
            )
            for n, key in DEVICES.items()
        ]
        block = writer.build(txs, PUB, r + 1)
        writer.append(block)
        out.append(block)
    writer.store.close()
    return [b.to_bytes() for b in out]


def test_kill_9_during_light_appends_always_leaves_a_verifiable_store(tmp_path: Path) -> None:
    raws = _blocks(tmp_path)
    assert not any(b"\n--\n" in raw for raw in raws)
    data = tmp_path / "blocks.bin"
    data.write_bytes(b"\n--\n".join(raws))
    script = tmp_path / "follower.py"
    script.write_text(FOLLOWER)
    ledger = tmp_path / "light"
    ledger.mkdir()
    rng = random.Random(20261130)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    committed = 0
    for kill in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, str(script), str(ledger), str(data), str(Path(__file__).parent)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert child.stdout is not None
        for _ in range(rng.randint(1, 5)):  # heights seen appended before killing
            line = child.stdout.readline()
            if not line:
                break  # the follower reached the last block and exited
            assert int(line) >= committed, "the stored height went back"
            committed = int(line)
        for _ in range(rng.randint(0, 20_000)):  # a random point inside the next append
            pass
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        if child.stderr is not None:
            child.stderr.close()

        store = open_store(ledger)
        try:
            report = verify_light_store(store)
            assert report.ok, f"kill {kill}: {report.failures}"
            assert report.height >= committed, f"kill {kill}: lost appended block {committed}"
            assert report.tx_count == (0 if report.height == 0 else 1 + 20 * (report.height - 1))
            reopened = LightChain(store, _config(), DEVICES["dev0-0"].public_key)
            # dev0-0's update at height h >= 2 (round h - 1) has nonce h - 1
            assert reopened.last_nonce() == (reopened.height - 1 if reopened.height >= 2 else -1)
        finally:
            store.close()
    assert committed >= KILLS
