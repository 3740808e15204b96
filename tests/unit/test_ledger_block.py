"""Unit tests for node.core.{encoding,merkle,block}: canonical bytes, Merkle roots, blocks."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.core.block import (
    BLOCK_DOMAIN,
    COMMIT_DOMAIN,
    MAX_BLOCK_BYTES,
    MAX_BLOCK_TXS,
    ZERO_HASH,
    Block,
    BlockError,
    BlockHeader,
    CommitSignature,
    genesis_header,
)
from node.core.encoding import EncodingError, canonical, decode_canonical
from node.core.merkle import merkle_root
from node.core.tx import Transaction, TxError
from node.keys import NodeKey

SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def key(i: int) -> NodeKey:
    """A deterministic key from a fixed seed."""
    return NodeKey.from_seed(bytes([i % 256]) * 32)


def make_block(
    height: int,
    prev_hash: bytes,
    txs: tuple[Transaction, ...] = (),
    signers: tuple[NodeKey, ...] = (),
    timestamp_ms: int = 1_700_000_000_000,
    state_root: bytes = b"\x07" * 32,
    proposer: NodeKey | None = None,
) -> Block:
    """A well-formed block over `txs`, certified by `signers`."""
    header = BlockHeader(
        height=height,
        prev_hash=prev_hash,
        timestamp_ms=timestamp_ms,
        proposer=(proposer or key(0)).public_key,
        merkle_root=merkle_root([tx.hash for tx in txs]),
        state_root=state_root,
    )
    block = Block(header, txs)
    return block.with_certificate(CommitSignature.create(k, block.hash) for k in signers)


def detectable(original: Block, mutated_bytes: bytes) -> bool:
    """True if `mutated_bytes` cannot pass for `original`: refused, re-hashed, or unverifiable."""
    try:
        mutated = Block.from_bytes(mutated_bytes)
    except BlockError:
        return True
    if mutated.hash != original.hash:
        return True
    if mutated.computed_merkle_root() != mutated.header.merkle_root:
        return True
    if not all(sig.verify(mutated.hash) for sig in mutated.certificate):
        return True
    try:
        for tx in mutated.txs:
            tx.verify()
    except TxError:
        return True
    return False


# -- strategies ------------------------------------------------------------------------------

ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
floats = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | ints | floats | st.text(max_size=20) | st.binary(max_size=40)
json_like = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
payloads = st.dictionaries(
    st.text(max_size=8),
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=16)
    | st.binary(max_size=32),
    max_size=4,
)
tx_types = st.sampled_from(["task.record_update", "task.open", "rep.vote", "a.b"])


@st.composite
def transactions(draw: st.DrawFn) -> Transaction:
    """A validly signed random transaction."""
    sender = key(draw(st.integers(0, 255)))
    nonce = draw(st.integers(0, 2**63 - 1))
    return Transaction.create(sender, draw(tx_types), nonce, draw(payloads))


@st.composite
def blocks(draw: st.DrawFn) -> Block:
    """A well-formed random block with a valid certificate."""
    txs = tuple(draw(st.lists(transactions(), max_size=4)))
    signers = tuple(key(i) for i in draw(st.lists(st.integers(0, 255), max_size=3)))
    return make_block(
        height=draw(st.integers(0, 2**63 - 1)),
        prev_hash=draw(st.binary(min_size=32, max_size=32)),
        txs=txs,
        signers=signers,
        timestamp_ms=draw(st.integers(0, 2**63 - 1)),
        state_root=draw(st.binary(min_size=32, max_size=32)),
        proposer=key(draw(st.integers(0, 255))),
    )


def as_lists(value: Any) -> Any:
    """`value` with tuples turned into lists (what decoding returns)."""
    if isinstance(value, list | tuple):
        return [as_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: as_lists(v) for k, v in value.items()}
    return value


def same(a: Any, b: Any) -> bool:
    """Structural equality that also tells bool from int, int from float, -0.0 from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return bool(a == b)


# -- canonical encoding ----------------------------------------------------------------------


@SETTINGS
@given(json_like)
def test_canonical_round_trips_json_like_values(value: Any) -> None:
    data = canonical(value)

    assert same(decode_canonical(data), as_lists(value))
    assert canonical(decode_canonical(data)) == data


def test_canonical_sorts_map_keys_and_refuses_unsorted_input() -> None:
    assert canonical({"b": 1, "a": 2}) == canonical({"a": 2, "b": 1})
    unsorted = msgpack.packb({"b": 1, "a": 2}, use_bin_type=True)

    with pytest.raises(EncodingError):
        decode_canonical(unsorted)


# -- merkle ----------------------------------------------------------------------------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_merkle_root_of_nothing_is_sha256_of_empty() -> None:
    assert merkle_root([]).hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_merkle_root_small_cases_by_hand() -> None:
    a, b, c = b"\xaa" * 32, b"\xbb" * 32, b"\xcc" * 32
    la, lb, lc = _h(b"\x00" + a), _h(b"\x00" + b), _h(b"\x00" + c)

    assert merkle_root([a]) == la
    assert merkle_root([a, b]) == _h(b"\x01" + la + lb)
    # The odd third leaf is promoted unchanged to the next level.
    assert merkle_root([a, b, c]) == _h(b"\x01" + _h(b"\x01" + la + lb) + lc)
    lab, lcd = _h(b"\x01" + la + lb), _h(b"\x01" + lc + la)
    assert merkle_root([a, b, c, a]) == _h(b"\x01" + lab + lcd)


def test_merkle_root_is_order_sensitive_and_domain_separated() -> None:
    a, b = b"\x01" * 32, b"\x02" * 32

    assert merkle_root([a, b]) != merkle_root([b, a])
    assert merkle_root([a]) != a
    # An inner node cannot be passed off as a leaf.
    inner = _h(b"\x01" + _h(b"\x00" + a) + _h(b"\x00" + b))
    assert merkle_root([inner]) != merkle_root([a, b])


@SETTINGS
@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=9, unique=True))
def test_merkle_root_changes_when_any_leaf_changes(leaves: list[bytes]) -> None:
    root = merkle_root(leaves)
    for i in range(len(leaves)):
        changed = [*leaves]
        changed[i] = bytes([changed[i][0] ^ 1]) + changed[i][1:]
        assert merkle_root(changed) != root
    assert merkle_root([*leaves, leaves[-1]]) != root


# -- blocks ----------------------------------------------------------------------------------


@SETTINGS
@given(blocks())
def test_block_round_trips_and_hash_is_stable(block: Block) -> None:
    data = block.to_bytes()
    parsed = Block.from_bytes(data)

    assert parsed == block
    assert parsed.to_bytes() == data
    assert parsed.hash == block.hash == BlockHeader.from_obj(block.header.to_obj()).hash
    assert parsed.hash == _h(BLOCK_DOMAIN + canonical(block.header.to_obj()))
    assert parsed.height == block.header.height
    assert parsed.computed_merkle_root() == parsed.header.merkle_root
    assert all(sig.verify(parsed.hash) for sig in parsed.certificate)
    assert not detectable(block, data)


@SETTINGS
@given(blocks(), st.data())
def test_any_single_bit_flip_is_detectable(block: Block, data: st.DataObject) -> None:
    raw = block.to_bytes()
    bit = data.draw(st.integers(0, 8 * len(raw) - 1))
    mutated = bytearray(raw)
    mutated[bit // 8] ^= 1 << (bit % 8)

    assert detectable(block, bytes(mutated))


def test_every_single_bit_flip_of_a_small_block_is_detectable() -> None:
    txs = (
        Transaction.create(key(1), "task.record_update", 3, {"blob": b"\x01" * 32, "n": 7}),
        Transaction.create(key(2), "rep.vote", 0, {"ok": True, "score": 0.5}),
    )
    block = make_block(5, b"\x09" * 32, txs, signers=(key(3), key(4)))
    raw = block.to_bytes()

    for bit in range(8 * len(raw)):
        mutated = bytearray(raw)
        mutated[bit // 8] ^= 1 << (bit % 8)
        assert detectable(block, bytes(mutated)), f"bit {bit} flip went unnoticed"


def test_certificate_is_not_part_of_the_hash() -> None:
    block = make_block(1, b"\x01" * 32)
    signed = block.with_certificate([CommitSignature.create(key(5), block.hash)])

    assert signed.hash == block.hash
    assert signed.to_bytes() != block.to_bytes()
    assert signed.certificate[0].verify(block.hash)


def test_commit_signature_verifies_only_its_hash_and_domain() -> None:
    block_hash = b"\x11" * 32
    sig = CommitSignature.create(key(1), block_hash)

    assert sig.verify(block_hash)
    assert not sig.verify(b"\x12" * 32)
    assert not CommitSignature(key(2).public_key, sig.signature).verify(block_hash)
    assert key(1).sign(COMMIT_DOMAIN + block_hash) == sig.signature
    raw = CommitSignature(key(1).public_key, key(1).sign(block_hash))
    assert not raw.verify(block_hash)


def test_genesis_header() -> None:
    header = genesis_header(b"\x05" * 32, timestamp_ms=42)

    assert header.height == 0
    assert header.prev_hash == ZERO_HASH == bytes(32)
    assert header.proposer == bytes(32)
    assert header.merkle_root == merkle_root([])
    assert header.state_root == b"\x05" * 32
    assert header.timestamp_ms == 42
    assert Block(header, ()).computed_merkle_root() == header.merkle_root


@pytest.mark.parametrize(
    "obj",
    [
        [],
        [0, ZERO_HASH, 0, ZERO_HASH, ZERO_HASH],
        [-1, ZERO_HASH, 0, ZERO_HASH, ZERO_HASH, ZERO_HASH],
        [2**63, ZERO_HASH, 0, ZERO_HASH, ZERO_HASH, ZERO_HASH],
        [True, ZERO_HASH, 0, ZERO_HASH, ZERO_HASH, ZERO_HASH],
        [0, ZERO_HASH[:31], 0, ZERO_HASH, ZERO_HASH, ZERO_HASH],
        [0, ZERO_HASH, 1.5, ZERO_HASH, ZERO_HASH, ZERO_HASH],
        [0, ZERO_HASH, 0, "x" * 32, ZERO_HASH, ZERO_HASH],
        [0, ZERO_HASH, 0, ZERO_HASH, None, ZERO_HASH],
        [0, ZERO_HASH, 0, ZERO_HASH, ZERO_HASH, ZERO_HASH + b"\x00"],
        {"height": 0},
    ],
)
def test_header_from_obj_refuses_bad_fields(obj: Any) -> None:
    with pytest.raises(BlockError) as info:
        BlockHeader.from_obj(obj)
    assert info.value.reason == "malformed"


def _encoded(header: Any, txs: Any, cert: Any) -> bytes:
    return canonical([header, txs, cert])


def test_from_bytes_refuses_bad_shapes_and_non_canonical_bytes() -> None:
    block = make_block(2, b"\x02" * 32, (Transaction.create(key(1), "a.b", 1, {}),), (key(1),))
    header, txs, cert = block.to_obj()
    bad = [
        b"",
        b"\xc1",
        canonical([header, txs]),
        _encoded(header, "txs", cert),
        _encoded(header, [["a.b"]], cert),
        _encoded(header, [[*txs[0][:4], "sig"]], cert),
        _encoded(header, txs, [[key(1).public_key]]),
        _encoded(header, txs, [[key(1).public_key, b"\x00" * 63]]),
        _encoded(header, txs, {}),
        block.to_bytes() + b"\x00",
    ]
    for data in bad:
        with pytest.raises(BlockError) as info:
            Block.from_bytes(data)
        assert info.value.reason == "malformed", data[:40]


def test_from_bytes_refuses_non_minimal_integer_encoding() -> None:
    block = make_block(2, b"\x02" * 32)
    raw = block.to_bytes()
    # The height 2 is a positive fixint (0x02) right after the header's array marker.
    assert raw[:3] == b"\x93\x96\x02"
    widened = raw[:2] + b"\xcc\x02" + raw[3:]

    assert msgpack.unpackb(widened) == msgpack.unpackb(raw)
    with pytest.raises(BlockError, match="canonical"):
        Block.from_bytes(widened)


def test_from_bytes_refuses_oversize_input_before_decoding() -> None:
    with pytest.raises(BlockError) as info:
        Block.from_bytes(b"\x00" * (MAX_BLOCK_BYTES + 1))
    assert info.value.reason == "oversize"


def test_too_many_transactions_are_oversize() -> None:
    tx = Transaction.create(key(1), "a.b", 1, {})
    header = make_block(1, ZERO_HASH).header
    with pytest.raises(BlockError) as info:
        Block(header, (tx,) * (MAX_BLOCK_TXS + 1))
    assert info.value.reason == "oversize"

    too_many = canonical([header.to_obj(), [tx.to_obj()] * (MAX_BLOCK_TXS + 1), []])
    with pytest.raises(BlockError) as info:
        Block.from_bytes(too_many)
    assert info.value.reason == "oversize"


def test_block_refuses_wrong_field_types() -> None:
    header = make_block(1, ZERO_HASH).header
    with pytest.raises(BlockError):
        Block(header, [])  # type: ignore[arg-type]
    with pytest.raises(BlockError):
        Block(header, (), ("sig",))  # type: ignore[arg-type]
    with pytest.raises(BlockError):
        CommitSignature(b"\x00" * 32, b"\x00" * 32)


@SETTINGS
@given(st.binary(max_size=300))
def test_from_bytes_on_garbage_raises_only_block_error(data: bytes) -> None:
    try:
        Block.from_bytes(data)
    except BlockError as exc:
        assert exc.reason in ("malformed", "oversize")
