"""Unit tests for the contract runtime, the identity registry and the token ledger."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.contracts import identity, token
from node.contracts.base import BlockContext, Calls, Event
from node.contracts.runtime import (
    CONTRACTS,
    NS_NONCE,
    ContractError,
    Genesis,
    Receipt,
    Registry,
    TxRejected,
    default_registry,
    genesis_state,
    last_nonce,
)
from node.contracts.state import State
from node.contracts.token import TokenApi
from node.core.encoding import canonical, sha256
from node.core.tx import Transaction
from node.keys import NodeKey

PUB = NodeKey.from_seed(b"\x10" * 32)
DEV1 = NodeKey.from_seed(b"\x11" * 32)
DEV2 = NodeKey.from_seed(b"\x12" * 32)
DEV3 = NodeKey.from_seed(b"\x13" * 32)
MEC = NodeKey.from_seed(b"\x14" * 32)
OUTSIDER = NodeKey.from_seed(b"\x15" * 32)
NEWBIE = NodeKey.from_seed(b"\x16" * 32)

GENESIS = Genesis(
    members={
        "pub": (PUB.public_key, "publisher"),
        "dev1": (DEV1.public_key, "device"),
        "dev2": (DEV2.public_key, "device"),
        "dev3": (DEV3.public_key, "device"),
        "mec": (MEC.public_key, "mec"),
    },
    balances={"pub": 1000, "dev1": 100, "dev2": 50, "mec": 10},
    chain_id="test-chain",
)
CTX = BlockContext(height=1, timestamp_ms=1_700_000_000_000, proposer=MEC.public_key)


class Chain:
    """A genesis state plus the default registry, with per-key nonce bookkeeping."""

    def __init__(self, genesis: Genesis = GENESIS) -> None:
        self.state = genesis_state(genesis)
        self.registry = default_registry()
        self.nonces: dict[bytes, int] = {}

    def tx(self, key: NodeKey, type_: str, payload: dict[str, Any]) -> Transaction:
        """A signed tx with the key's next nonce."""
        nonce = self.nonces.get(key.public_key, -1) + 1
        self.nonces[key.public_key] = nonce
        return Transaction.create(key, type_, nonce, payload)

    def call(self, key: NodeKey, type_: str, payload: dict[str, Any]) -> Receipt:
        """Execute one tx."""
        return self.registry.execute(self.state, CTX, self.tx(key, type_, payload))

    def ok(self, key: NodeKey, type_: str, payload: dict[str, Any]) -> Receipt:
        """Execute one tx that must succeed."""
        receipt = self.call(key, type_, payload)
        assert receipt.ok, receipt.error
        return receipt

    def refused(self, key: NodeKey, type_: str, payload: dict[str, Any], match: str) -> str:
        """Execute one tx that must be reverted; only the sender's nonce may change."""
        before = self.state.copy()
        receipt = self.call(key, type_, payload)
        assert not receipt.ok
        assert receipt.events == ()
        assert match in receipt.error, receipt.error
        nonce = self.nonces[key.public_key]
        assert self.state.diff(before) == {(NS_NONCE, key.public_key.hex()): canonical(nonce)}
        return receipt.error

    def balance(self, node_id: str) -> int:
        """A token balance."""
        return token.balance_of(self.state, node_id)


# ---------------------------------------------------------------------------- State


def test_state_get_set_delete_items() -> None:
    s = State()
    assert s.get("a", "x") is None
    assert s.get("a", "x", 7) == 7
    s.set("a", "y", {"k": [1, 2]})
    s.set("a", "x", 1)
    s.set("b", "x", "other")
    assert s.items("a") == [("x", 1), ("y", {"k": [1, 2]})]
    s.get("a", "y")["k"].append(3)  # a copy: the state is not changed
    assert s.get("a", "y") == {"k": [1, 2]}
    s.delete("a", "x")
    s.delete("a", "missing")
    assert s.items("a") == [("y", {"k": [1, 2]})]
    assert len(s) == 2


@pytest.mark.parametrize("value", [object(), float("nan"), {1: "int key"}, {1, 2}])
def test_state_rejects_non_canonical_values(value: object) -> None:
    s = State()
    with pytest.raises(ContractError):
        s.set("a", "k", value)
    assert len(s) == 0


def test_state_rejects_bad_names() -> None:
    with pytest.raises(ContractError):
        State().set("", "k", 1)
    with pytest.raises(ContractError):
        State().set("a", 3, 1)  # type: ignore[arg-type]


def test_state_root_is_fixed_for_empty_and_tracks_contents() -> None:
    empty = State().root()
    assert empty == sha256(b"")  # no rows: the hash of nothing
    s = State()
    s.set("a", "k", 1)
    r1 = s.root()
    assert r1 != empty
    s.set("a", "k", 1)  # same value: same root
    assert s.root() == r1
    s.set("a", "k", 2)
    assert s.root() != r1
    s.set("a", "k", 1)
    assert s.root() == r1
    s.set("a", "k", 1.0)  # a float is a different value than an int
    assert s.root() != r1
    s.delete("a", "k")
    assert s.root() == empty


def test_state_root_ignores_insertion_order() -> None:
    a, b = State(), State()
    for ns, key in [("x", "1"), ("x", "2"), ("y", "1")]:
        a.set(ns, key, key)
    for ns, key in [("y", "1"), ("x", "2"), ("x", "1")]:
        b.set(ns, key, key)
    assert a.root() == b.root()
    assert a == b


def test_state_journal_rollback_commit_and_nesting() -> None:
    s = State()
    s.set("a", "k", 1)
    root = s.root()
    s.begin()
    s.set("a", "k", 2)
    s.set("a", "new", 3)
    s.delete("a", "k")
    s.rollback()
    assert s.root() == root and s.items("a") == [("k", 1)]
    s.begin()
    s.set("a", "k", 2)
    s.begin()
    s.set("a", "k", 3)
    s.set("a", "inner", 1)
    s.rollback()
    assert s.items("a") == [("k", 2)]
    s.begin()
    s.set("a", "k", 4)
    s.commit()
    s.rollback()  # the outer level undoes the committed inner one too
    assert s.root() == root
    assert not s.in_transaction
    with pytest.raises(RuntimeError):
        s.commit()
    with pytest.raises(RuntimeError):
        s.rollback()


def test_state_diff_and_apply() -> None:
    base = State()
    base.set("a", "same", 1)
    base.set("a", "changed", 1)
    base.set("a", "gone", 1)
    new = base.copy()
    new.set("a", "changed", 2)
    new.delete("a", "gone")
    new.set("b", "added", "x")
    new.set("a", "same", 1)
    assert new.diff(base) == {
        ("a", "changed"): canonical(2),
        ("a", "gone"): None,
        ("b", "added"): canonical("x"),
    }
    assert base.diff(base.copy()) == {}
    again = base.copy()
    again.apply_diff(new.diff(base))
    assert again.root() == new.root()
    assert base.get("a", "changed") == 1  # copy() is independent


def test_state_rows_round_trip() -> None:
    s = Chain().state
    rows = s.to_rows()
    assert rows == sorted(rows)
    back = State.from_rows(rows)
    assert back.root() == s.root() and back == s
    assert State.from_rows([]).root() == State().root()


def test_state_from_rows_refuses_bad_rows() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        State.from_rows([("a", "k", canonical(1)), ("a", "k", canonical(2))])
    with pytest.raises(ValueError):
        State.from_rows([("a", "k", b"\xc1")])  # not msgpack
    with pytest.raises(ValueError):
        State.from_rows([("a", "k", b"\xcd\x00\x01")])  # 1 as uint16: not canonical


# -------------------------------------------------------------------------- Runtime


def test_genesis_state_contents() -> None:
    s = genesis_state(GENESIS)
    assert identity.is_registered(s, PUB.public_key)
    assert not identity.is_registered(s, OUTSIDER.public_key)
    assert identity.node_id_of(s, DEV1.public_key) == "dev1"
    assert identity.role_of(s, DEV1.public_key) == "device"
    assert identity.role_of(s, OUTSIDER.public_key) is None
    assert identity.node_id_of(s, OUTSIDER.public_key) is None
    assert identity.key_of(s, "mec") == MEC.public_key
    assert s.get("chain", "id") == "test-chain"
    assert token.total_supply(s) == 1160
    assert token.balance_of(s, "dev3") == 0
    assert genesis_state(GENESIS).root() == s.root()


def test_genesis_dict_round_trip_is_json() -> None:
    data = json.loads(json.dumps(GENESIS.to_dict()))
    back = Genesis.from_dict(data)
    assert back == GENESIS
    assert back.hash() == GENESIS.hash()
    with pytest.raises(ValueError):
        Genesis.from_dict({"members": {}})


@pytest.mark.parametrize(
    ("members", "balances"),
    [
        ({"a": (PUB.public_key, "publisher"), "b": (PUB.public_key, "device")}, {}),
        ({"a": (PUB.public_key, "publisher")}, {"zz": 5}),
        ({"a": (PUB.public_key, "publisher")}, {"a": -1}),
        ({"a": (PUB.public_key, "king")}, {}),
        ({"A!": (PUB.public_key, "device")}, {}),
    ],
)
def test_genesis_state_refuses_bad_genesis(
    members: dict[str, tuple[bytes, str]], balances: dict[str, int]
) -> None:
    with pytest.raises(ValueError, match="genesis"):
        genesis_state(Genesis(members, balances, "c"))


def test_unknown_sender_is_rejected() -> None:
    chain = Chain()
    before = chain.state.copy()
    tx = Transaction.create(OUTSIDER, "token.transfer", 0, {"to": "dev1", "amount": 1})
    with pytest.raises(TxRejected) as info:
        chain.registry.execute(chain.state, CTX, tx)
    assert info.value.reason == "unknown_sender"
    assert chain.state == before


def test_replayed_and_old_nonces_are_rejected() -> None:
    chain = Chain()
    payload = {"to": "dev2", "amount": 1}
    first = Transaction.create(DEV1, "token.transfer", 5, payload)
    chain.registry.execute(chain.state, CTX, first)
    assert last_nonce(chain.state, DEV1.public_key) == 5
    before = chain.state.copy()
    for nonce in (5, 4, 0):
        tx = Transaction.create(DEV1, "token.transfer", nonce, payload)
        with pytest.raises(TxRejected) as info:
            chain.registry.execute(chain.state, CTX, tx)
        assert info.value.reason == "bad_nonce"
    assert chain.state == before


def test_nonce_gaps_are_allowed() -> None:
    chain = Chain()
    assert last_nonce(chain.state, DEV1.public_key) == -1
    for nonce in (0, 3, 100):
        tx = Transaction.create(DEV1, "token.transfer", nonce, {"to": "dev2", "amount": 1})
        assert chain.registry.execute(chain.state, CTX, tx).ok
    assert last_nonce(chain.state, DEV1.public_key) == 100
    assert chain.balance("dev2") == 53


@pytest.mark.parametrize("type_", ["token.mint", "nosuch.transfer", "identity.add_member"])
def test_unknown_contract_or_method_is_rejected(type_: str) -> None:
    chain = Chain()
    before = chain.state.copy()
    with pytest.raises(TxRejected) as info:
        chain.call(DEV1, type_, {})
    assert info.value.reason == "unknown_contract"
    assert chain.state == before  # not even the nonce is used


def test_reverted_tx_only_uses_the_nonce() -> None:
    chain = Chain()
    root = chain.state.root()
    receipt = chain.call(DEV2, "token.transfer", {"to": "dev1", "amount": 51})
    assert not receipt.ok and "insufficient" in receipt.error
    assert chain.state.root() != root
    chain.state.delete(NS_NONCE, DEV2.public_key.hex())
    assert chain.state.root() == root


def test_receipt_fields() -> None:
    chain = Chain()
    tx = chain.tx(DEV1, "token.transfer", {"to": "dev2", "amount": 7})
    receipt = chain.registry.execute(chain.state, CTX, tx)
    assert receipt == Receipt(
        tx.hash, True, (Event("token", "transfer", {"from": "dev1", "to": "dev2", "amount": 7}),)
    )
    canonical(receipt.to_obj())  # receipts are canonical-encodable


def _block(chain: Chain) -> list[Transaction]:
    return [
        chain.tx(DEV1, "token.transfer", {"to": "dev2", "amount": 30}),
        chain.tx(DEV2, "token.transfer", {"to": "dev3", "amount": 500}),  # reverts
        chain.tx(
            PUB,
            "task.publish",
            {"task_id": "t1", "reward_pool": 100, "rounds": 2, "model": "cnn", "dataset": "mnist"},
        ),
        chain.tx(
            PUB,
            "identity.register",
            {"id": "newbie", "key": NEWBIE.public_key.hex(), "role": "device"},
        ),
        chain.tx(
            DEV3,
            "task.record_update",
            {"task_id": "t1", "round": 1, "blob": sha256(b"u"), "size": 10, "samples": 5},
        ),
    ]


def test_same_block_gives_same_root_on_every_replica() -> None:
    a, b = Chain(), Chain()
    txs = _block(a)
    receipts_a = a.registry.execute_block(a.state, CTX, txs)
    receipts_b = b.registry.execute_block(b.state, CTX, txs)
    assert receipts_a == receipts_b
    assert [r.ok for r in receipts_a] == [True, False, True, True, True]
    assert a.state.root() == b.state.root()
    assert a.state.to_rows() == b.state.to_rows()
    assert a.state.root() != Chain().state.root()


def test_rejected_tx_invalidates_the_whole_block() -> None:
    chain = Chain()
    before = chain.state.copy()
    txs = [
        *_block(chain),
        Transaction.create(OUTSIDER, "token.transfer", 0, {"to": "dev1", "amount": 1}),
    ]
    with pytest.raises(TxRejected):
        chain.registry.execute_block(chain.state, CTX, txs)
    assert chain.state == before and not chain.state.in_transaction


def test_contract_bug_propagates_and_leaves_no_trace() -> None:
    def broken(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
        state.set("x", "y", 1)
        raise KeyError("bug")

    registry = default_registry()
    registry.register("broken", {"call": broken})
    state = genesis_state(GENESIS)
    before = state.copy()
    with pytest.raises(KeyError):
        registry.execute(state, CTX, Transaction.create(DEV1, "broken.call", 0, {}))
    assert state.get("x", "y") is None
    assert state.diff(before) == {(NS_NONCE, DEV1.public_key.hex()): canonical(0)}


def test_a_new_contract_is_one_registration_and_can_use_internal_apis() -> None:
    def tip(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
        """Pay the block proposer 1 token."""
        sender = identity.require_member(state, tx)
        proposer = identity.node_id_of(state, ctx.proposer)
        assert proposer is not None
        tokens = calls.api("token", TokenApi)
        tokens.debit(state, sender, 1)
        tokens.credit(state, proposer, 1)
        return [Event("tip", "tipped", {"to": proposer})]

    registry = default_registry()
    registry.register("tip", {"proposer": tip})
    assert registry.names() == sorted([*(m.NAME for m in CONTRACTS), "tip"])
    assert registry.methods("tip") == ["proposer"]
    state = genesis_state(GENESIS)
    receipt = registry.execute(state, CTX, Transaction.create(DEV1, "tip.proposer", 0, {}))
    assert receipt.ok and receipt.events[0].data == {"to": "mec"}
    assert token.balance_of(state, "mec") == 11
    receipt = registry.execute(state, CTX, Transaction.create(DEV3, "tip.proposer", 0, {}))
    assert not receipt.ok and "insufficient" in receipt.error


def test_registry_refuses_duplicates_and_bad_names() -> None:
    registry = default_registry()
    with pytest.raises(ValueError):
        registry.register("token", {})
    with pytest.raises(ValueError):
        registry.register("Bad", {})
    with pytest.raises(ValueError):
        registry.register("ok", {"Bad-Method": token.transfer})


def test_calls_api_checks_name_and_kind() -> None:
    calls = Calls({"token": TokenApi()})
    assert isinstance(calls.api("token", TokenApi), TokenApi)
    with pytest.raises(ContractError):
        calls.api("nosuch", TokenApi)
    with pytest.raises(TypeError):
        calls.api("token", identity.IdentityApi)


def test_registry_with_custom_membership() -> None:
    registry = Registry(is_member=lambda state, key: True)
    registry.register(token.NAME, token.METHODS, token.API)
    state = genesis_state(GENESIS)
    tx = Transaction.create(OUTSIDER, "token.transfer", 0, {"to": "dev1", "amount": 1})
    receipt = registry.execute(state, CTX, tx)  # admitted, but the contract refuses it
    assert not receipt.ok and "not a registered member" in receipt.error


FORBIDDEN = {"time", "random", "os", "socket", "zmq", "numpy", "torch", "datetime", "secrets"}


def test_contracts_import_nothing_nondeterministic() -> None:
    folder = Path(__file__).resolve().parents[2] / "node" / "contracts"
    files = sorted(folder.glob("*.py"))
    assert len(files) >= 8
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


# ------------------------------------------------------------------------- Identity


def test_identity_register_and_use() -> None:
    chain = Chain()
    receipt = chain.ok(
        PUB, "identity.register", {"id": "newbie", "key": NEWBIE.public_key.hex(), "role": "device"}
    )
    assert receipt.events == (
        Event("identity", "registered", {"id": "newbie", "role": "device", "by": "pub"}),
    )
    assert identity.node_id_of(chain.state, NEWBIE.public_key) == "newbie"
    assert chain.state.get("identity.by_id", "newbie") == NEWBIE.public_key.hex()
    chain.ok(DEV1, "token.transfer", {"to": "newbie", "amount": 5})
    chain.ok(NEWBIE, "token.transfer", {"to": "dev1", "amount": 5})


@pytest.mark.parametrize(
    ("key", "payload", "match"),
    [
        (DEV1, {"id": "newbie", "key": NEWBIE.public_key.hex(), "role": "device"}, "sender"),
        (MEC, {"id": "newbie", "key": NEWBIE.public_key.hex(), "role": "device"}, "sender"),
        (PUB, {"id": "dev1", "key": NEWBIE.public_key.hex(), "role": "device"}, "id:"),
        (PUB, {"id": "newbie", "key": DEV1.public_key.hex(), "role": "device"}, "key:"),
        (PUB, {"id": "newbie", "key": NEWBIE.public_key.hex(), "role": "king"}, "role:"),
        (PUB, {"id": "newbie", "key": "zz" * 32, "role": "device"}, "key: not hex"),
        (PUB, {"id": "newbie", "key": "ab" * 31, "role": "device"}, "key:"),
        (PUB, {"id": "New Bie", "key": NEWBIE.public_key.hex(), "role": "device"}, "id:"),
        (PUB, {"id": 7, "key": NEWBIE.public_key.hex(), "role": "device"}, "id:"),
        (PUB, {"key": NEWBIE.public_key.hex(), "role": "device"}, "id: missing"),
        (PUB, {"id": "newbie", "key": NEWBIE.public_key.hex()}, "role: missing"),
        (
            PUB,
            {"id": "newbie", "key": NEWBIE.public_key.hex(), "role": "device", "x": 1},
            "x: unknown field",
        ),
    ],
)
def test_identity_register_refusals(key: NodeKey, payload: dict[str, Any], match: str) -> None:
    Chain().refused(key, "identity.register", payload, match)


def test_identity_revoke() -> None:
    chain = Chain()
    old = chain.tx(DEV2, "token.transfer", {"to": "dev1", "amount": 1})
    assert chain.registry.execute(chain.state, CTX, old).ok
    receipt = chain.ok(PUB, "identity.revoke", {"id": "dev2"})
    assert receipt.events[0].name == "revoked"
    assert not identity.is_registered(chain.state, DEV2.public_key)
    assert identity.key_of(chain.state, "dev2") is None
    with pytest.raises(TxRejected) as info:
        chain.call(DEV2, "token.transfer", {"to": "dev1", "amount": 1})
    assert info.value.reason == "unknown_sender"
    chain.refused(DEV1, "token.transfer", {"to": "dev2", "amount": 1}, "to:")
    # the id and key may be registered again; the old nonce still guards against replays
    chain.ok(
        PUB, "identity.register", {"id": "dev2", "key": DEV2.public_key.hex(), "role": "device"}
    )
    assert last_nonce(chain.state, DEV2.public_key) == 0
    with pytest.raises(TxRejected) as info:
        chain.registry.execute(chain.state, CTX, old)
    assert info.value.reason == "bad_nonce"


@pytest.mark.parametrize(
    ("key", "payload", "match"),
    [
        (DEV1, {"id": "dev2"}, "sender"),
        (PUB, {"id": "ghost"}, "not registered"),
        (PUB, {"id": "pub"}, "itself"),
        (PUB, {}, "id: missing"),
        (PUB, {"id": ["dev2"]}, "id:"),
    ],
)
def test_identity_revoke_refusals(key: NodeKey, payload: dict[str, Any], match: str) -> None:
    Chain().refused(key, "identity.revoke", payload, match)


# ---------------------------------------------------------------------------- Token


def test_token_transfer() -> None:
    chain = Chain()
    receipt = chain.ok(DEV1, "token.transfer", {"to": "dev3", "amount": 100})
    assert receipt.events == (
        Event("token", "transfer", {"from": "dev1", "to": "dev3", "amount": 100}),
    )
    assert chain.balance("dev1") == 0 and chain.balance("dev3") == 100
    assert chain.state.get(token.NS_BALANCE, "dev1") is None  # zero balances are dropped
    assert token.total_supply(chain.state) == 1160


@pytest.mark.parametrize(
    ("key", "payload", "match"),
    [
        (DEV2, {"to": "dev1", "amount": 51}, "insufficient"),
        (DEV3, {"to": "dev1", "amount": 1}, "insufficient"),
        (DEV1, {"to": "ghost", "amount": 1}, "to: 'ghost' is not registered"),
        (DEV1, {"to": "dev1", "amount": 1}, "to: cannot transfer to yourself"),
        (DEV1, {"to": "dev2", "amount": 0}, "amount:"),
        (DEV1, {"to": "dev2", "amount": -5}, "amount:"),
        (DEV1, {"to": "dev2", "amount": True}, "amount:"),
        (DEV1, {"to": "dev2", "amount": 1.0}, "amount:"),
        (DEV1, {"to": "dev2", "amount": "1"}, "amount:"),
        (DEV1, {"amount": 1}, "to: missing"),
        (DEV1, {"to": "dev2"}, "amount: missing"),
        (DEV1, {"to": 5, "amount": 1}, "to:"),
    ],
)
def test_token_transfer_refusals(key: NodeKey, payload: dict[str, Any], match: str) -> None:
    Chain().refused(key, "token.transfer", payload, match)


def test_token_credit_and_debit() -> None:
    state = genesis_state(GENESIS)
    token.credit(state, "dev3", 9)
    token.debit(state, "dev3", 4)
    assert token.balance_of(state, "dev3") == 5
    with pytest.raises(ContractError, match="insufficient"):
        token.debit(state, "dev3", 6)
    with pytest.raises(ContractError, match="amount"):
        token.credit(state, "dev3", 0)
    with pytest.raises(ContractError, match="overflow"):
        token.credit(state, "dev3", token.MAX_AMOUNT)
    assert token.balance_of(state, "dev3") == 5


MEMBERS = [("pub", PUB), ("dev1", DEV1), ("dev2", DEV2), ("dev3", DEV3), ("mec", MEC)]


@settings(derandomize=True, database=None, deadline=None, max_examples=60)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(-5, 400)), max_size=25))
def test_transfers_conserve_supply(moves: list[tuple[int, int, int]]) -> None:
    chain = Chain()
    supply = token.total_supply(chain.state)
    expected = {nid: token.balance_of(chain.state, nid) for nid, _ in MEMBERS}
    for src, dst, amount in moves:
        (src_id, key), (dst_id, _) = MEMBERS[src], MEMBERS[dst]
        receipt = chain.call(key, "token.transfer", {"to": dst_id, "amount": amount})
        should_pass = src != dst and 0 < amount <= expected[src_id]
        assert receipt.ok == should_pass, receipt.error
        if should_pass:
            expected[src_id] -= amount
            expected[dst_id] += amount
        assert token.total_supply(chain.state) == supply
        assert all(v >= 0 for _, v in chain.state.items(token.NS_BALANCE))
    assert {nid: token.balance_of(chain.state, nid) for nid, _ in MEMBERS} == expected
