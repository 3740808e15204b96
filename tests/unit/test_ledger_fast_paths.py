"""The ledger's fast paths (issue 12 item 3) change no byte, hash or refusal.

`decode_canonical`'s in-place check against the plain re-encode, transaction and block
bytes kept on the object against a fresh encoding, and: nothing kept from an earlier check
lets a modified or badly signed transaction pass.
"""

from __future__ import annotations

import dataclasses
import math
import random
import threading
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node import sigcache
from node.core.block import Block, BlockError, BlockHeader, CommitSignature
from node.core.encoding import (
    MAX_DEPTH,
    EncodingError,
    array_header,
    canonical,
    decode_canonical,
    decode_known,
    is_normal,
    packb_normal,
)
from node.core.merkle import merkle_root
from node.core.tx import TX_DOMAIN, Transaction, TxError
from node.keys import NodeKey


def plain_decode(data: bytes) -> Any:
    """decode_canonical as it was: decode, re-encode the plain way, compare."""
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, max_ext_len=0)
    except Exception as exc:
        raise EncodingError(f"not msgpack: {type(exc).__name__}") from None
    if canonical(obj) != data:
        raise EncodingError("not in canonical form")
    return obj


def outcome(fn: Any, data: bytes) -> tuple[str, Any]:
    try:
        return "ok", fn(data)
    except EncodingError as exc:
        return "error", str(exc)


def raw_pack(obj: Any) -> bytes:
    return bytes(msgpack.packb(obj, use_bin_type=True, use_single_float=False))


def _nest(levels: int, leaf: Any) -> Any:
    for _ in range(levels):
        leaf = [leaf]
    return leaf


NOT_CANONICAL = [
    raw_pack({"b": 1, "a": 2}),  # keys out of order
    raw_pack({b"k": 1}),  # bytes key
    raw_pack({"a": math.nan}),
    raw_pack([math.inf]),
    raw_pack(1.5)[:0] + b"\xca\x3f\xc0\x00\x00",  # float32
    b"\xd0\x05",  # int8 for a fixint
    b"\xd9\x01a",  # str8 for a fixstr
    b"\xdc\x00\x01\x01",  # array16 for a fixarray
    b"\x82\xa1a\x01\xa1a\x02",  # duplicate key
    raw_pack({"a": {"c": 1, "b": 2}}),
    raw_pack(_nest(MAX_DEPTH + 1, 1)),
    raw_pack(_nest(MAX_DEPTH + 2, [])),
    raw_pack([{"z": 1, "a": [math.nan]}]),
    b"\xc1",  # never used
    b"\x92\x01",  # truncated
]
CANONICAL = [
    canonical(v)
    for v in (
        None,
        [1, "a", b"b", None, True, 2.5, -(2**63), 2**64 - 1],
        {"a": 1, "b": [{"c": 0.0}]},
        _nest(MAX_DEPTH - 1, 1),
        _nest(MAX_DEPTH, 1),
        _nest(MAX_DEPTH, []),
        {},
        [],
    )
]


@pytest.mark.parametrize("data", NOT_CANONICAL + CANONICAL)
def test_decode_matches_the_plain_way(data: bytes) -> None:
    assert outcome(decode_canonical, data) == outcome(plain_decode, data)


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=4)
    | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=2), inner),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(values)
def test_decode_of_any_packing_matches_the_plain_way(obj: Any) -> None:
    """Whatever msgpack packed (key order as inserted, NaN, ...), both ways agree."""
    data = raw_pack(obj)
    assert outcome(decode_canonical, data) == outcome(plain_decode, data)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(values)
def test_a_decoded_value_is_normal_and_packs_to_its_bytes(obj: Any) -> None:
    try:
        data = canonical(obj)
    except EncodingError:
        return
    decoded = decode_canonical(data)
    assert packb_normal(decoded) == data
    assert canonical(decoded) == data


def test_is_normal_is_false_for_what_normalising_changes() -> None:
    assert is_normal({"a": 1, "b": [1.0, {"c": b""}]})
    assert is_normal((1, "a"))
    assert not is_normal({"b": 1, "a": 2})
    assert not is_normal({b"a": 1})
    assert not is_normal([math.nan])
    assert not is_normal([True, object()])
    assert not is_normal(_nest(MAX_DEPTH, 1))


def test_array_header_is_a_lists_prefix() -> None:
    for n in (0, 1, 15, 16, 65535, 65536):
        assert canonical([None] * n).startswith(array_header(n))
        assert len(canonical([None] * n)) == len(array_header(n)) + n


def test_packer_recovers_after_an_overflow() -> None:
    with pytest.raises(EncodingError):
        canonical([1, 2**64])
    assert canonical([1, 2]) == b"\x92\x01\x02"


KEY = NodeKey.from_seed(bytes(range(32)))
OTHER = NodeKey.from_seed(bytes(range(1, 33)))


def _update(nonce: int = 1, **extra: Any) -> Transaction:
    payload: dict[str, Any] = {
        "task_id": "t",
        "round": 1,
        "blob": bytes(32),
        "size": 10,
        "samples": 3,
        "contributors": ["dev-0", "dev-1"],
    }
    payload.update(extra)
    return Transaction.create(KEY, "task.record_update", nonce, payload)


def _fresh(tx: Transaction) -> Transaction:
    """The same fields in a new object (nothing kept)."""
    return Transaction(tx.type, tx.sender, tx.nonce, dict(tx.payload), tx.signature)


def test_kept_transaction_bytes_equal_a_fresh_encoding() -> None:
    tx = _update()
    parsed = Transaction.from_bytes(tx.to_bytes())
    for t in (tx, parsed, Transaction.from_obj(decode_canonical(tx.to_bytes()))):
        assert t.to_bytes() == canonical(_fresh(t).to_obj()) == tx.to_bytes()
        assert t.hash == _fresh(t).hash
    signed = Transaction.signing_bytes_for(tx.type, tx.sender, tx.nonce, tx.payload)
    assert signed == TX_DOMAIN + canonical([tx.type, tx.sender, tx.nonce, tx.payload])
    assert sigcache.verify(tx.sender, signed, tx.signature)


@pytest.mark.parametrize("cache", [True, False])
def test_a_modified_transaction_never_passes(cache: bool) -> None:
    sigcache.CACHE.clear()
    sigcache.CACHE.enabled = cache
    try:
        tx = Transaction.from_bytes(_update().to_bytes())
        tx.verify()  # kept bytes, hash and a cached signature check now exist
        tx.verify()
        changed = [
            dataclasses.replace(tx, nonce=tx.nonce + 1),
            dataclasses.replace(tx, payload={**tx.payload, "size": 11}),
            dataclasses.replace(tx, payload={**tx.payload, "contributors": ["dev-0"]}),
            dataclasses.replace(tx, type="task.record_global"),
            dataclasses.replace(tx, sender=OTHER.public_key),
            dataclasses.replace(tx, signature=bytes(64)),
            dataclasses.replace(tx, signature=tx.signature[:-1] + bytes([tx.signature[-1] ^ 1])),
        ]
        for bad in changed:
            with pytest.raises(TxError) as info:
                bad.verify()
            assert info.value.reason == "bad_signature"
        # the same modifications made in the bytes
        raw = tx.to_bytes()
        for i in range(len(raw)):
            flipped = raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1 :]
            try:
                other = Transaction.from_bytes(flipped)
            except TxError:
                continue
            with pytest.raises(TxError):
                other.verify()
    finally:
        sigcache.CACHE.enabled = True


def test_verify_checks_the_payload_as_it_is_now() -> None:
    """An in-place change of a verified transaction's payload is caught by the next verify:
    the signed message is encoded from the fields on every call, never kept."""
    tx = Transaction.from_bytes(_update().to_bytes())
    tx.verify()
    tx.payload["size"] = 12
    with pytest.raises(TxError, match="bad_signature"):
        tx.verify()
    tx.payload["size"] = math.nan
    with pytest.raises(TxError, match="malformed: payload: floats must be finite"):
        tx.verify()


def test_from_decoded_refuses_what_from_obj_refuses() -> None:
    good = decode_canonical(_update().to_bytes())
    bad_shapes: list[Any] = [
        good[:4],
        {"a": 1},
        ["Bad.type", *good[1:]],
        [good[0], b"short", *good[2:]],
        [*good[:2], True, *good[3:]],
        [*good[:2], -1, *good[3:]],
        [*good[:3], [1], good[4]],
        [*good[:4], "not bytes"],
        [*good[:3], {"x": "y" * 70_000}, good[4]],
    ]
    for obj in bad_shapes:
        with pytest.raises(TxError) as a:
            Transaction.from_obj(obj)
        with pytest.raises(TxError) as b:
            Transaction.from_decoded(obj)
        assert (a.value.reason, a.value.detail) == (b.value.reason, b.value.detail)


def _block(n_txs: int, certified: bool = True) -> Block:
    txs = tuple(_update(nonce=i + 1) for i in range(n_txs))
    header = BlockHeader(
        3, bytes(32), 7, KEY.public_key, merkle_root([t.hash for t in txs]), bytes(32)
    )
    block = Block(header, txs, ())
    if certified:
        block = block.with_certificate((CommitSignature.create(KEY, block.hash),))
    return block


@pytest.mark.parametrize("n_txs", [0, 1, 15, 16, 40])
def test_block_bytes_equal_the_plain_encoding(n_txs: int) -> None:
    block = _block(n_txs)
    plain = canonical(block.to_obj())
    assert block.to_bytes() == plain
    parsed = Block.from_bytes(plain)
    assert parsed.to_bytes() == plain
    assert parsed == block and parsed.hash == block.hash
    assert [t.to_bytes() for t in parsed.txs] == [t.to_bytes() for t in block.txs]
    again = parsed.with_certificate(())  # a changed block is encoded afresh
    assert again.to_bytes() == canonical(again.to_obj()) != plain


def test_block_from_bytes_refuses_what_it_refused() -> None:
    plain = canonical(_block(2).to_obj())
    rng = random.Random(3)
    for _ in range(300):
        i = rng.randrange(len(plain))
        data = plain[:i] + bytes([rng.randrange(256)]) + plain[i + 1 :]
        try:
            Block.from_bytes(data)
        except BlockError:
            pass
        else:  # accepted: then it is canonical and the block's bytes are exactly these
            assert canonical(decode_canonical(data)) == data
            assert Block.from_bytes(data).to_bytes() == data
    obj = decode_canonical(plain)
    obj[1][0][3] = {"size": 1, "round": 2}  # a transaction payload out of key order
    with pytest.raises(BlockError, match="not in canonical form"):
        Block.from_bytes(raw_pack(obj))


def test_decode_known_returns_what_decode_canonical_returns() -> None:
    for data in CANONICAL:
        assert decode_known(data) == decode_canonical(data)


def test_each_thread_packs_with_its_own_packer() -> None:
    values = [{"i": i, "s": "x" * i, "l": list(range(i % 7))} for i in range(200)]
    want = [raw_pack(dict(sorted(v.items()))) for v in values]
    results: dict[int, list[bytes]] = {}

    def work(n: int) -> None:
        results[n] = [canonical(v) for v in values for _ in range(20)][::20]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[n] == want for n in range(4))
