"""The genesis description and the contract state it produces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from node.contracts import identity, token
from node.contracts.errors import ContractError
from node.contracts.state import State
from node.core.encoding import canonical, sha256

NS_CHAIN = "chain"


@dataclass(frozen=True)
class Genesis:
    """Members (node id -> (public key, role)), initial balances and the chain id."""

    members: dict[str, tuple[bytes, str]]
    balances: dict[str, int]
    chain_id: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (keys as hex)."""
        return {
            "chain_id": self.chain_id,
            "members": {
                nid: {"key": key.hex(), "role": role}
                for nid, (key, role) in sorted(self.members.items())
            },
            "balances": dict(sorted(self.balances.items())),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Genesis:
        """Parse `to_dict` output; raises ValueError on a bad shape."""
        try:
            members = {
                str(nid): (bytes.fromhex(m["key"]), str(m["role"]))
                for nid, m in data["members"].items()
            }
            balances = {str(nid): v for nid, v in data.get("balances", {}).items()}
            chain_id = data["chain_id"]
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"genesis: bad shape ({exc!r})") from None
        if not isinstance(chain_id, str) or not chain_id:
            raise ValueError("genesis: chain_id must be a non-empty string")
        for nid, v in balances.items():
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"genesis: balances[{nid!r}] must be an integer")
        return cls(members, balances, chain_id)

    def hash(self) -> bytes:
        """SHA-256 of the canonical dict form."""
        return sha256(canonical(self.to_dict()))


def genesis_state(genesis: Genesis) -> State:
    """The identity registry with every member, the balances and the chain id."""
    state = State()
    try:
        for node_id, (key, role) in sorted(genesis.members.items()):
            identity.add_member(state, node_id, key, role)
        for node_id, amount in sorted(genesis.balances.items()):
            if node_id not in genesis.members:
                raise ContractError(f"balances: {node_id!r} is not a member")
            if amount < 0:
                raise ContractError(f"balances: {node_id!r} has a negative balance")
            if amount > 0:
                token.credit(state, node_id, amount)
    except ContractError as exc:
        raise ValueError(f"genesis: {exc}") from None
    state.set(NS_CHAIN, "id", genesis.chain_id)
    return state
