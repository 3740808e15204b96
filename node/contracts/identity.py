"""The identity registry: which public keys are members of the chain, and in what role.

How it works
- State: ns "identity": public key hex -> {"id": node id, "role": role};
  ns "identity.by_id": node id -> public key hex. The genesis block fills both.
- Methods: `identity.register` {id, key (hex), role} adds a member; `identity.revoke` {id}
  removes one. Only a member whose role is "publisher" may call either; a publisher may
  not revoke itself.
- `identity.enroll` {id, key, role, signature}: a "publisher" member (on a two-layer LMUC:
  its MEC) submits a node's own registration: `signature` is the enrolled key's Ed25519
  signature of `registration_message(chain id, id, role)`, so the key's holder asked to
  join this chain under this id and role (it cannot be replayed on another chain); role
  "device" or "mec". The runtime refuses any transaction from a key not registered, so a
  node takes part only once enrolled (or listed in genesis).
- Invariants: the two namespaces are exact inverses (one key per id, one id per key);
  ids match NODE_ID_RE; roles are in ROLES. A revoked key's nonce entry stays, so its old
  transactions can never be replayed if it is registered again.
- Other code reads it through `is_registered`, `node_id_of`, `role_of`, `key_of`
  (or the IdentityApi object that `Calls.api("identity", IdentityApi)` returns).
"""

from __future__ import annotations

import re
from typing import Any

from node import sigcache
from node.contracts.base import (
    BlockContext,
    Calls,
    Event,
    Method,
    bytes_field,
    no_extra_fields,
    str_field,
)
from node.contracts.errors import ContractError
from node.contracts.state import State
from node.core.encoding import canonical
from node.core.tx import Transaction

NAME = "identity"
NS = "identity"
NS_BY_ID = "identity.by_id"
ROLES = ("bs", "device", "mec", "publisher")
PUBLISHER = "publisher"
DEVICE = "device"
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
ENROLL_ROLES = ("device", "mec")
NS_CHAIN = "chain"  # genesis.NS_CHAIN: "id" -> the chain id
NODE_ID_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")


def is_registered(state: State, pubkey: bytes) -> bool:
    """Whether `pubkey` belongs to a current member."""
    return state.get_bytes(NS, pubkey.hex()) is not None


def node_id_of(state: State, pubkey: bytes) -> str | None:
    """The node id registered for `pubkey`, or None."""
    entry = state.get(NS, pubkey.hex())
    return None if entry is None else str(entry["id"])


def role_of(state: State, pubkey: bytes) -> str | None:
    """The role registered for `pubkey`, or None."""
    entry = state.get(NS, pubkey.hex())
    return None if entry is None else str(entry["role"])


def key_of(state: State, node_id: str) -> bytes | None:
    """The public key registered for `node_id`, or None."""
    hex_key = state.get(NS_BY_ID, node_id)
    return None if hex_key is None else bytes.fromhex(hex_key)


def id_registered(state: State, node_id: str) -> bool:
    """Whether `node_id` is a current member."""
    return state.get_bytes(NS_BY_ID, node_id) is not None


def check_node_id(node_id: object, field: str = "id") -> str:
    """A valid node id, or ContractError naming `field`."""
    if not isinstance(node_id, str) or not NODE_ID_RE.fullmatch(node_id):
        raise ContractError(f"{field}: {node_id!r} is not a valid node id")
    return node_id


def add_member(state: State, node_id: str, pubkey: bytes, role: str) -> None:
    """Write a member (genesis and `register`); ContractError on a bad or duplicate entry."""
    check_node_id(node_id)
    if role not in ROLES:
        raise ContractError(f"role: {role!r} is not one of {', '.join(ROLES)}")
    if len(pubkey) != PUBLIC_KEY_BYTES:
        raise ContractError(f"key: must be {PUBLIC_KEY_BYTES} bytes")
    if id_registered(state, node_id):
        raise ContractError(f"id: {node_id!r} is already registered")
    if is_registered(state, pubkey):
        raise ContractError(f"key: {pubkey.hex()[:16]}... is already registered")
    state.set(NS, pubkey.hex(), {"id": node_id, "role": role})
    state.set(NS_BY_ID, node_id, pubkey.hex())


def require_member(state: State, tx: Transaction, role: str | None = None) -> str:
    """The sender's node id; ContractError if unregistered or (given `role`) in another role."""
    entry = state.get(NS, tx.sender.hex())
    if entry is None:
        raise ContractError("sender: not a registered member")
    if role is not None and entry["role"] != role:
        raise ContractError(f"sender: role {entry['role']!r} may not call this (needs {role!r})")
    return str(entry["id"])


def register(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """identity.register {id, key, role}: a publisher adds a member."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("id", "key", "role"))
    by = require_member(state, tx, PUBLISHER)
    node_id = check_node_id(str_field(payload, "id", 32))
    key_hex = str_field(payload, "key", 2 * PUBLIC_KEY_BYTES)
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        raise ContractError("key: not hex") from None
    role = str_field(payload, "role", 32)
    add_member(state, node_id, key, role)
    return [Event(NAME, "registered", {"id": node_id, "role": role, "by": by})]


def registration_message(chain_id: str, node_id: str, role: str) -> bytes:
    """What a node signs to ask to be registered on chain `chain_id` as `node_id` in `role`."""
    return canonical(["bcfl-register", chain_id, node_id, role])


def enroll(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """identity.enroll {id, key, role, signature}: a publisher submits a node's signed
    registration of its own key."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("id", "key", "role", "signature"))
    by = require_member(state, tx, PUBLISHER)
    node_id = check_node_id(str_field(payload, "id", 32))
    key = bytes_field(payload, "key", PUBLIC_KEY_BYTES)
    role = str_field(payload, "role", 32)
    if role not in ENROLL_ROLES:
        raise ContractError(f"role: {role!r} is not one of {', '.join(ENROLL_ROLES)}")
    signature = bytes_field(payload, "signature", SIGNATURE_BYTES)
    chain_id = str(state.get(NS_CHAIN, "id") or "")
    if not sigcache.verify(key, registration_message(chain_id, node_id, role), signature):
        raise ContractError("signature: not the key's signature of its registration")
    add_member(state, node_id, key, role)
    return [Event(NAME, "registered", {"id": node_id, "role": role, "by": by})]


def revoke(state: State, tx: Transaction, ctx: BlockContext, calls: Calls) -> list[Event]:
    """identity.revoke {id}: a publisher removes a member (not itself)."""
    payload: dict[str, Any] = tx.payload
    no_extra_fields(payload, ("id",))
    by = require_member(state, tx, PUBLISHER)
    node_id = check_node_id(str_field(payload, "id", 32))
    key = key_of(state, node_id)
    if key is None:
        raise ContractError(f"id: {node_id!r} is not registered")
    if node_id == by:
        raise ContractError("id: a publisher may not revoke itself")
    state.delete(NS, key.hex())
    state.delete(NS_BY_ID, node_id)
    return [Event(NAME, "revoked", {"id": node_id, "by": by})]


class IdentityApi:
    """The identity contract's internal API for other contracts."""

    is_registered = staticmethod(is_registered)
    node_id_of = staticmethod(node_id_of)
    role_of = staticmethod(role_of)
    key_of = staticmethod(key_of)
    id_registered = staticmethod(id_registered)
    require_member = staticmethod(require_member)


METHODS: dict[str, Method] = {"register": register, "enroll": enroll, "revoke": revoke}
API = IdentityApi()
