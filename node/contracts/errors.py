"""Exceptions of the contract runtime."""

from __future__ import annotations


class ContractError(Exception):
    """The call is refused; the tx is reverted (no state change), its nonce is still used."""


class TxRejected(Exception):
    """The tx must not be in a block at all; `reason` says why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
