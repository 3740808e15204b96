"""Unit tests for the FLchain contract: the MECs' update records and the per-channel
global-model state trie."""

from __future__ import annotations

from typing import Any

from node.contracts import flchain
from node.contracts.genesis import Genesis
from node.contracts.runtime import CONTRACTS, default_registry
from node.core.encoding import sha256
from node.keys import NodeKey

from .test_contracts import DEV1, GENESIS, MEC, PUB, Chain

MEC2 = NodeKey.from_seed(b"\x21" * 32)
MEC3 = NodeKey.from_seed(b"\x22" * 32)
GENESIS_MECS = Genesis(
    members={**GENESIS.members, "mec2": (MEC2.public_key, "mec"), "mec3": (MEC3.public_key, "mec")},
    balances=GENESIS.balances,
    chain_id=GENESIS.chain_id,
)


def held(round_: int, tag: str = "g", channel: int = 0, **over: Any) -> dict[str, Any]:
    """A record_global payload."""
    return {
        "task_id": "t1",
        "channel": channel,
        "round": round_,
        "blob": sha256(tag.encode()),
        "size": 99,
        **over,
    }


def updates(round_: int, entries: list[list[Any]], channel: int = 0) -> dict[str, Any]:
    """A record_updates payload."""
    return {"task_id": "t1", "channel": channel, "round": round_, "updates": entries}


def test_the_first_model_fixes_the_entry_and_a_different_one_is_reverted() -> None:
    chain = Chain(GENESIS_MECS)

    chain.ok(MEC, "flchain.record_global", held(1))
    chain.ok(MEC3, "flchain.record_global", held(1))
    chain.refused(MEC2, "flchain.record_global", held(1, "other"), "differs from channel 0")
    chain.refused(MEC, "flchain.record_global", held(1), "already holds")
    chain.ok(MEC2, "flchain.record_global", held(1, "other", channel=1))

    entry = flchain.channel_global(chain.state, "t1", 0, 1)
    assert entry == {"blob": sha256(b"g").hex(), "size": 99, "holders": ["mec", "mec3"]}
    assert flchain.channel_global(chain.state, "t1", 1, 1)["holders"] == ["mec2"]  # type: ignore[index]
    assert flchain.channel_global(chain.state, "t1", 0, 2) is None


def test_update_records_are_once_per_mec_and_round_and_only_by_mecs() -> None:
    chain = Chain(GENESIS_MECS)
    entries = [["dev2", sha256(b"b"), 5], ["dev1", sha256(b"a"), 7]]

    chain.ok(MEC, "flchain.record_updates", updates(1, entries))
    chain.refused(MEC, "flchain.record_updates", updates(1, entries), "already recorded")
    chain.refused(DEV1, "flchain.record_updates", updates(2, entries), "mec")
    chain.refused(PUB, "flchain.record_global", held(2), "mec")
    chain.refused(MEC2, "flchain.record_updates", updates(1, [["dev1", b"short", 7]]), "32 bytes")
    chain.refused(
        MEC2, "flchain.record_updates", updates(1, [["dev1", sha256(b"a"), 0]]), "positive"
    )
    chain.refused(MEC2, "flchain.record_updates", updates(1, entries * 2), "duplicate")
    chain.refused(MEC2, "flchain.record_global", held(1, extra=1), "unknown field")

    stored = chain.state.get(flchain.NS_UPDATES, flchain.updates_key("t1", 0, 1, "mec"))
    assert stored == {"updates": [["dev1", sha256(b"a").hex(), 7], ["dev2", sha256(b"b").hex(), 5]]}


def test_registered_in_the_default_registry() -> None:
    assert flchain in CONTRACTS
    assert default_registry().methods("flchain") == ["record_global", "record_updates"]
