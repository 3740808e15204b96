"""FLchain's own messages (the others are vanilla's: `node.schemes.vanilla.messages`)."""

from __future__ import annotations

from dataclasses import dataclass

from node.messages import NonNegativeInt, message


@message("flchain.share")
@dataclass(frozen=True)
class ChannelShare:
    """A MEC's share of `round` for every other MEC of its channel: its signed
    ``flchain.record_updates`` transaction (`record`, naming each stored update's device,
    blob hash and samples), its devices' own signed ``task.record_update`` transactions
    (`txs`) and the devices that sent nothing (`missing`). The updates follow, one
    `SharedUpdate` each (so no message holds more than one model)."""

    round: NonNegativeInt
    record: bytes
    txs: tuple[bytes, ...]
    missing: tuple[str, ...]


@message("flchain.update")
@dataclass(frozen=True)
class SharedUpdate:
    """One device's local update as its MEC stores and shares it (`blob`: the weights'
    `weights_to_bytes`, whose hash the MEC's record names)."""

    round: NonNegativeInt
    node: str
    blob: bytes


@message("flchain.model")
@dataclass(frozen=True)
class ChannelModel:
    """A MEC's result of `round` for the publisher, sent once it holds the channel's global
    model: the model (`model`, `weights_to_bytes`; None when no update was usable), its
    sample total and contributing devices, the channel's missing devices, the MECs whose
    shares it used (`shares_from`), and the transactions to record: the channel's devices'
    ``task.record_update``s (`txs`) and the MECs' ``flchain.record_updates`` and this MEC's
    ``flchain.record_global`` (`records`, in nonce order per MEC); the devices its
    aggregator rejected, with the reason (`rejected`)."""

    round: NonNegativeInt
    channel: NonNegativeInt
    samples: NonNegativeInt
    contributors: tuple[str, ...]
    missing: tuple[str, ...]
    shares_from: tuple[str, ...]
    txs: tuple[bytes, ...]
    records: tuple[bytes, ...]
    rejected: dict[str, str]
    model: bytes | None = None


MESSAGES = (ChannelShare, SharedUpdate, ChannelModel)
