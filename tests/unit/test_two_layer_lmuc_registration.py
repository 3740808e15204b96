"""The two-layer LMUC as planned (genesis: the MEC only) refuses an unregistered device's
update: a block built by the MEC leaves it out; once the device's own registration is
enrolled (identity.enroll), its update goes in."""

from __future__ import annotations

from pathlib import Path

from node.contracts import identity
from node.core.block import CommitSignature
from node.core.encoding import sha256
from node.core.tx import Transaction
from node.ledger.chain import Chain
from node.ledger.store import open_store
from tests.sim.two_layer_net import plan_of
from tests.sim.vanilla_net import VanillaNet

TS = 1_700_000_000_000


def test_an_unregistered_device_update_is_left_out_until_it_is_enrolled(tmp_path: Path) -> None:
    net = VanillaNet.build(mecs=3, devices_per_mec=4, seed=1)
    config = plan_of(net, {"full_devices": 3}, 1, 0).chains["lmuc-mec0"].config
    assert list(config.genesis.members) == ["mec0"]  # devices register, they are not listed
    mec, dev = net.keys["mec0"], net.keys["dev0-3"]
    committee = [net.keys[n] for n in ("mec0", "dev0-0", "dev0-1", "dev0-2")]
    chain = Chain(open_store(tmp_path / "lmuc"), config)
    task = {"task_id": "t", "reward_pool": 0, "rounds": 2, "model": "mlp", "dataset": "digits"}
    update = Transaction.create(
        dev,
        "task.record_update",
        0,
        {"task_id": "t", "round": 1, "blob": sha256(b"u"), "size": 1, "samples": 1},
    )
    try:
        publish = Transaction.create(mec, "task.publish", 0, task)
        block = chain.candidate([publish, update], mec.public_key, TS)
        assert [tx.type for tx in block.txs] == ["task.publish"]  # the update left out

        registration = identity.registration_message(
            config.genesis.chain_id, "dev0-3", identity.DEVICE
        )
        enroll = Transaction.create(
            mec,
            "identity.enroll",
            1,
            {
                "id": "dev0-3",
                "key": dev.public_key,
                "role": identity.DEVICE,
                "signature": dev.sign(registration),
            },
        )
        block = chain.candidate([publish, enroll], mec.public_key, TS)
        chain.append(
            block.with_certificate(CommitSignature.create(k, block.hash) for k in committee)
        )
        assert identity.node_id_of(chain.state, dev.public_key) == "dev0-3"
        block = chain.candidate([update], mec.public_key, TS + 1)
        assert [tx.type for tx in block.txs] == ["task.record_update"]
    finally:
        chain.store.close()
