"""Unit tests for node.keys: Ed25519 node keys and the run's roster."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from node.keys import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, NodeKey, Roster


def _key(i: int) -> NodeKey:
    """A deterministic key from a fixed seed."""
    return NodeKey.from_seed(bytes([i]) * 32)


def test_generate_save_load_round_trip_with_owner_only_mode(tmp_path: Path) -> None:
    key = NodeKey.generate()
    path = tmp_path / "node.key"

    key.save(path)
    loaded = NodeKey.load(path)

    assert loaded.public_key == key.public_key
    assert len(key.public_key) == PUBLIC_KEY_BYTES
    assert loaded.sign(b"hello") == key.sign(b"hello")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_save_overwrites_an_existing_key_file(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    _key(1).save(path)

    _key(2).save(path)

    assert NodeKey.load(path).public_key == _key(2).public_key


def test_from_seed_is_deterministic_and_keys_differ() -> None:
    assert _key(1).public_key == _key(1).public_key
    assert _key(1).public_key != _key(2).public_key


def test_roster_verifies_a_members_signature() -> None:
    alice = _key(1)
    roster = Roster({"alice": alice.public_key})

    sig = alice.sign(b"message")

    assert len(sig) == SIGNATURE_BYTES
    assert roster.verify("alice", b"message", sig) is True


@pytest.mark.parametrize(
    ("node_id", "message", "tweak"),
    [
        pytest.param("alice", b"other message", lambda s: s, id="wrong-message"),
        pytest.param("bob", b"message", lambda s: s, id="signed-by-someone-else"),
        pytest.param("carol", b"message", lambda s: s, id="unknown-node"),
        pytest.param("alice", b"message", lambda s: bytes([s[0] ^ 1]) + s[1:], id="flipped-bit"),
        pytest.param("alice", b"message", lambda s: s[:-1], id="short-signature"),
        pytest.param("alice", b"message", lambda s: b"", id="empty-signature"),
    ],
)
def test_roster_rejects_bad_signatures(
    node_id: str, message: bytes, tweak: Callable[[bytes], bytes]
) -> None:
    alice, bob = _key(1), _key(2)
    roster = Roster({"alice": alice.public_key, "bob": bob.public_key})
    sig = tweak(alice.sign(b"message"))

    assert roster.verify(node_id, message, sig) is False


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_roster_rejects_a_public_key_of_the_wrong_length(size: int) -> None:
    with pytest.raises(ValueError, match=r"roster\['short'\].*32 bytes"):
        Roster({"short": b"\x01" * size})


def test_roster_hex_round_trip_keeps_ids_order_and_keys() -> None:
    keys = {"mec0": _key(1), "dev0-0": _key(2), "pub": _key(3)}
    roster = Roster({nid: k.public_key for nid, k in keys.items()})

    as_hex = roster.to_hex()
    again = Roster.from_hex(as_hex)

    assert as_hex == {nid: k.public_key.hex() for nid, k in keys.items()}
    assert again.to_hex() == as_hex
    assert again.ids() == ["mec0", "dev0-0", "pub"]
    assert len(again) == 3
    assert "pub" in again
    assert "nobody" not in again
    assert again.verify("dev0-0", b"x", keys["dev0-0"].sign(b"x"))
