"""identity.enroll: a node's own signed registration, submitted by the chain's publisher (a
two-layer MEC on its LMUC); the runtime refuses an unregistered key's transactions."""

from __future__ import annotations

import pytest

from node.contracts import identity
from node.contracts.runtime import Genesis, TxRejected
from node.core.encoding import sha256
from node.keys import NodeKey
from tests.unit.test_contracts import Chain

MEC = NodeKey.from_seed(b"\x31" * 32)
DEV = NodeKey.from_seed(b"\x32" * 32)
OTHER = NodeKey.from_seed(b"\x33" * 32)
LMUC = Genesis(members={"mec0": (MEC.public_key, "publisher")}, balances={}, chain_id="r/lmuc")


def enrollment(
    key: NodeKey, node_id: str, role: str = "device", chain: str = "r/lmuc"
) -> dict[str, object]:
    sig = key.sign(identity.registration_message(chain, node_id, role))
    return {"id": node_id, "key": key.public_key, "role": role, "signature": sig}


UPDATE = {"task_id": "t", "round": 1, "blob": sha256(b"u"), "size": 1, "samples": 1}
TASK = {"task_id": "t", "reward_pool": 0, "rounds": 2, "model": "mlp", "dataset": "digits"}


def test_an_unregistered_device_is_refused_until_enrolled() -> None:
    chain = Chain(LMUC)
    chain.ok(MEC, "task.publish", TASK)
    with pytest.raises(TxRejected, match="not registered"):
        chain.call(DEV, "task.record_update", UPDATE)
    chain.nonces.pop(DEV.public_key)  # the refused tx left no nonce behind

    events = chain.ok(MEC, "identity.enroll", enrollment(DEV, "dev0-0")).events

    assert events[0].data == {"id": "dev0-0", "role": "device", "by": "mec0"}
    assert identity.node_id_of(chain.state, DEV.public_key) == "dev0-0"
    chain.ok(DEV, "task.record_update", UPDATE)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({**enrollment(OTHER, "dev0-0"), "key": DEV.public_key}, "signature"),  # by another
        ({**enrollment(DEV, "dev0-0"), "id": "dev0-1"}, "signature"),  # for another id
        (enrollment(DEV, "dev0-0", chain="r/other"), "signature"),  # for another chain
        (enrollment(DEV, "dev0-0", role="publisher"), "role"),
        ({**enrollment(DEV, "dev0-0"), "signature": b"x"}, "signature: must be 64 bytes"),
    ],
)
def test_a_bad_enrollment_is_refused(payload: dict[str, object], match: str) -> None:
    chain = Chain(LMUC)
    chain.refused(MEC, "identity.enroll", payload, match)
    assert not identity.is_registered(chain.state, DEV.public_key)


def test_only_the_publisher_enrolls_and_each_key_once() -> None:
    chain = Chain(LMUC)
    chain.ok(MEC, "identity.enroll", enrollment(DEV, "dev0-0"))
    chain.refused(DEV, "identity.enroll", enrollment(OTHER, "dev0-1"), "needs 'publisher'")
    chain.refused(MEC, "identity.enroll", enrollment(DEV, "dev0-0"), "already registered")
