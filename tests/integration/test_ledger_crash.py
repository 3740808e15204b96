"""kill -9 a real process while it appends validated blocks; the reopened chain must verify."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from node.ledger.chain import verify_store
from node.ledger.store import open_store

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from node.contracts.runtime import Genesis, last_nonce
    from node.keys import NodeKey
    from node.ledger.chain import Chain, ChainConfig
    from node.core.encoding import sha256
    from node.core.finality import SingleWriter
    from node.ledger.store import open_store
    from node.core.tx import Transaction

    pub = NodeKey.from_seed(b"p" * 32)
    devices = {f"dev0-{i}": NodeKey.from_seed(bytes([i + 1]) * 32) for i in range(20)}
    members = {"pub": (pub.public_key, "publisher")}
    members.update({nid: (k.public_key, "device") for nid, k in devices.items()})
    genesis = Genesis(members=members, balances={"pub": 10**6}, chain_id="crash")
    chain = Chain(open_store(Path(sys.argv[1])), ChainConfig(genesis, SingleWriter(pub.public_key)))
    deferred = sys.argv[2] == "deferred"
    chain.store.set_deferred(deferred)
    if chain.height == 0:
        publish = {"task_id": "t", "reward_pool": 1000, "rounds": 100_000, "model": "m",
                   "dataset": "d"}
        chain.append(chain.build([Transaction.create(pub, "task.publish", 0, publish)], pub, 1))
    print(chain.store.durable_height() if deferred else chain.height, flush=True)
    while True:
        r = chain.state.get("task", "t")["round"] + 1
        txs = []
        for nid, key in devices.items():
            blob = sha256(f"{nid}/{r}".encode())
            payload = {"task_id": "t", "round": r, "blob": blob, "size": 100, "samples": 10}
            txs.append(Transaction.create(key, "task.record_update", r, payload))
        record = {"task_id": "t", "round": r, "blob": sha256(str(r).encode()), "size": 100,
                  "accuracy": 0.5, "contributors": sorted(devices)}
        nonce = last_nonce(chain.state, pub.public_key) + 1
        txs.append(Transaction.create(pub, "task.record_global", nonce, record))
        chain.append(chain.build(txs, pub, r + 1))
        print(chain.store.durable_height() if deferred else chain.height, flush=True)
    """
)


@pytest.mark.parametrize("mode", ["sync", "deferred"])
def test_kill_9_during_appends_always_leaves_a_verifiable_chain(tmp_path: Path, mode: str) -> None:
    """Sync: every block reported appended survives. Deferred (PBFT validators): every block
    reported durable survives, and the restarted writer goes on from the durable height."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    ledger = tmp_path / "node"
    ledger.mkdir()
    rng = random.Random(20261127)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    committed = 0
    for kill in range(24):
        child = subprocess.Popen(
            [sys.executable, str(script), str(ledger), mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert child.stdout is not None
        wanted = rng.randint(1, 4)  # blocks to see committed before killing (mid-append next)
        for _ in range(wanted):
            line = child.stdout.readline()
            assert line, child.stderr.read() if child.stderr else "writer died"
            assert int(line) >= committed, "the durable height went back"
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
            report = verify_store(store)
        finally:
            store.close()
        assert report.ok, f"kill {kill}: {report.failures}"
        assert report.height >= committed, f"kill {kill}: lost committed block {committed}"
        # the publish block (1 transaction), then 21 per round (a kill may precede both)
        assert report.tx_count == (0 if report.height == 0 else 1 + 21 * (report.height - 1))
    assert committed >= (24 if mode == "sync" else 1)
