"""The two-layer scheme's incentives (the paper's Table 1), paid on the GMUC every round.

How it works
------------
Contract items (Step "incentive strategy"): the publisher offers them on the GMUC
(``incentive.offer``, our choice of publisher rather than MECs: the task and its pool are
the publisher's). The first offer goes in the task's first GMUC block (every device has the
prior reputation: one type); each round's GMUC block ends with a new offer computed from the
reputation records the publisher's replica holds (`offer_payload`: `device_types`, seeded
KMeans over [reputation, belief, disbelief, uncertainty, positive, negative events],
`N_TYPES` types, one item per type whose floor is the type's lowest reputation and whose
multiplier grows with the type). ``ref_ms`` (task satisfaction's reference) is the round
deadline.

Each round the MEC sends each of its devices the offer it holds on its GMUC replica and the
device's reputation there (``tl.items``); the device picks the item of highest multiplier
whose floor it reaches (`choose_item`) and, when that differs from the item it signed last,
signs ``incentive.sign`` (a GMUC transaction with its own key; nonce: its wall-clock ms, so
later signatures always have a higher one). It answers ``tl.terms`` with that transaction
(or none) and the bytes it forwarded over D2D since its last answer. The MEC forwards the
signatures; the contract refuses (a reverted transaction with the reason) an item whose
floor is above the device's reputation.

Each round, when it votes, the MEC signs ``incentive.pay`` for its devices (the devices that
trained this round and those that co-signed one of its LMUC blocks since its last report)
and sends it with the signatures (``tl.pay``) to the publisher just before its vote; the
publisher puts them in the round's GMUC block after the votes and reputation records, so the
contract knows who misbehaved and whether this MEC was outvoted. The figures (our choices;
the paper names the factors only):

- data quality: the MEC's update-quality check (`TwoLayerMecRole._judge`): the update's
  accuracy on the validation samples over the round's median, capped at 1 (0 without an
  update);
- data size: the samples in the device's signed update transaction (on the LMUC);
- computation: the CPU frequency (MHz) the device declared in its task response (recorded on
  the GMUC by ``gmuc.respond``), when it trained this round;
- energy: derived, not measured: the usual CMOS model E = KAPPA * CYCLES_PER_SAMPLE *
  samples * epochs * f^2 (f in Hz), in mJ;
- task satisfaction: the contract's min(1, ref_ms / duration_ms) with duration_ms the time
  from the round's start at the MEC to its vote;
- mining: LMUC blocks whose certificate the device signed (the MEC sees every certificate);
- D2D relay: the payload bytes the device's gossip service forwarded to its neighbours —
  copies of others' items it pushed on and those it sent in answer to an IWANT pull, its
  own update excepted (`GossipStats.forwarded_bytes`, read by `RelayMeter`); what it
  received is not counted (about the same for every device of a group). It is
  self-reported in the device's signed ``tl.terms`` frame. The MEC checks the part it can
  see: its own gossip counts the bytes of relayed copies each device sent *it*
  (`GossipStats.relayed_from`, once per item; `MecIncentives.witness`, which the MEC role
  points at its gossip's counters — None: the claims alone), and a device is
  credited with the larger of its claims' total and that count (running totals, less what
  was already reported, so a byte is paid once). The figure is capped at `fanout` times the
  bytes of the gossip items its group carried since the last report (the updates and LMUC
  blocks the MEC saw): a lying device gains at most that much per round; what is over the
  cap, and what a device relayed while unselected, is dropped, not carried over. A device
  that only relayed (no update, no co-signed block) is reported too.

The contract pays each MEC's devices from the MEC's share of the round's budget (the paper:
"the local devices directly receive the reward from their associated MEC") through the
task escrow and the token ledger (``incentive`` ``paid`` events; ``incentive.paid`` state);
a negative reputation event this round, a device left out of the decided aggregate, or an
outvoted MEC's report means no pay. At the end the publisher closes the task: what was not
paid goes back to it (vanilla's end-of-task sample-proportional payout is not used here).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from node.contracts import gmuc_request, incentive, reputation
from node.contracts.state import State
from node.core.block import Block
from node.core.tx import Transaction, TxError
from node.messages import NonNegativeInt, message
from node.schemes.device_types import device_types, features, items_for

log = logging.getLogger(__name__)

N_TYPES = 3  # device types the publisher clusters into (our choice)
KAPPA = 1e-28  # effective switched capacitance of the CMOS energy model (our choice)
CYCLES_PER_SAMPLE = 1e6  # CPU cycles to train on one sample once (our choice)


@message("tl.items")
@dataclass(frozen=True)
class ItemOffer:
    """The contract items the MEC's GMUC replica holds for the task (names, floors and
    multipliers in millionths) and the device's reputation there (millionths)."""

    round: NonNegativeInt
    names: tuple[str, ...]
    floors: tuple[int, ...]
    multipliers: tuple[int, ...]
    reputation: NonNegativeInt


@message("tl.terms")
@dataclass(frozen=True)
class DeviceTerms:
    """A device's answer to `ItemOffer`: its signed ``incentive.sign`` (empty: it keeps its
    item) and the bytes it relayed over D2D since its last answer."""

    round: NonNegativeInt
    sign: bytes
    relay_bytes: NonNegativeInt


@message("tl.pay")
@dataclass(frozen=True)
class PayReport:
    """A MEC's devices' ``incentive.sign`` transactions and its signed ``incentive.pay`` for
    `round` (the last one), for the publisher's GMUC block."""

    round: NonNegativeInt
    txs: tuple[bytes, ...]


def choose_item(offer: ItemOffer) -> str | None:
    """The item of highest multiplier whose floor `offer.reputation` reaches (ties: the
    lower name); None if none."""
    fits = [
        (m, n)
        for n, f, m in zip(offer.names, offer.floors, offer.multipliers, strict=True)
        if f <= offer.reputation
    ]
    return min(fits, key=lambda mn: (-mn[0], mn[1]))[1] if fits else None


def offer_payload(
    state: State, task_id: str, devices: Sequence[str], seed: int, ref_ms: int
) -> dict[str, Any]:
    """``incentive.offer``'s payload: one item per device type of `devices` (KMeans over the
    reputation records of `state`)."""
    types = device_types(features(state, devices), N_TYPES, seed)
    reps = reputation.reputations(state, devices)
    items = items_for(types, reps)
    return {"task_id": task_id, "items": items, "ref_ms": max(1, ref_ms)}


def energy_mj(samples: int, epochs: int, cpu_mhz: int) -> int:
    """Training energy (mJ) by the CMOS model KAPPA * cycles * f^2."""
    cycles = CYCLES_PER_SAMPLE * samples * epochs
    return math.floor(KAPPA * cycles * (cpu_mhz * 1e6) ** 2 * 1000)


def quality_scores(accuracy: Mapping[str, float]) -> dict[str, float]:
    """Each update's accuracy over the round's median, capped at 1 (a zero median: 1)."""
    if not accuracy:
        return {}
    median = float(np.median(list(accuracy.values())))
    return {d: 1.0 if median <= 0 else max(0.0, min(1.0, a / median)) for d, a in accuracy.items()}


class RelayMeter:
    """Reads a running total of forwarded bytes (the device's gossip counters:
    `GossipStats.forwarded_bytes`) and hands out what was added since the last reading."""

    def __init__(self, source: Callable[[], int] | None = None) -> None:
        self.source = source or (lambda: 0)
        self.reported = 0

    def take(self) -> int:
        """Bytes forwarded since the last call."""
        total = self.source()
        out, self.reported = max(0, total - self.reported), total
        return out


class DeviceIncentives:
    """The device's side: pick and sign an item, report its relayed bytes."""

    def __init__(self, key: Any, task_id: str, forwarded: Callable[[], int] | None = None):
        """`forwarded`: the running total of the gossip payload bytes the device forwarded
        to its neighbours (pushes and pull answers of others' items)."""
        self.key = key
        self.task_id = task_id
        self.meter = RelayMeter(forwarded)
        self.signed: str | None = None

    def on_offer(self, offer: ItemOffer, wall_ms: int) -> DeviceTerms:
        """The answer to the MEC's offer."""
        item = choose_item(offer)
        sign = b""
        if item is not None and item != self.signed:
            payload = {"task_id": self.task_id, "item": item}
            sign = Transaction.create(self.key, "incentive.sign", wall_ms, payload).to_bytes()
            self.signed = item
        return DeviceTerms(offer.round, sign, self.meter.take())


class MecIncentives:
    """The MEC's side: offers to its devices, their answers, the round's pay report."""

    def __init__(self, task_id: str, devices: Iterable[str], device_keys: Mapping[bytes, str]):
        self.task_id = task_id
        self.devices = set(devices)
        self.device_of = dict(device_keys)  # LMUC key -> device id
        self.claimed: Counter[str] = Counter()
        """Device -> relay bytes it claimed in all its answers (a running total)."""
        self.relay_paid: Counter[str] = Counter()
        """Device -> relay bytes reported for it so far."""
        self.signs: list[bytes] = []
        self.cosigned: Counter[str] = Counter()
        self.group_bytes = 0
        self.witness: Mapping[str, int] | None = None
        """Peer -> bytes of the relayed gossip copies it sent this MEC, a running total (the
        MEC's `GossipStats.relayed_from`); None: the MEC takes the devices' word alone."""

    def relay_due(self) -> dict[str, int]:
        """Device -> relay bytes not reported yet: the larger of its claims' total and what
        the MEC itself received relayed from it, less what was reported (running totals, so
        a byte counted by both is paid once)."""
        seen = self.witness or {}
        due = {d: max(self.claimed[d], seen.get(d, 0)) - self.relay_paid[d] for d in self.devices}
        return {d: n for d, n in due.items() if n > 0}

    def offers(self, state: State, round_: int) -> dict[str, ItemOffer]:
        """Device -> the offer it gets this round (none before the GMUC holds an offer)."""
        current = incentive.offer_of(state, self.task_id)
        if current is None:
            return {}
        items = sorted(current["items"].items())
        names = tuple(n for n, _ in items)
        floors = tuple(int(i["floor"]) for _, i in items)
        mults = tuple(int(i["multiplier"]) for _, i in items)
        return {
            d: ItemOffer(round_, names, floors, mults, reputation.reputation_ppm(state, d))
            for d in sorted(self.devices)
        }

    def on_terms(self, device: str, terms: DeviceTerms) -> str | None:
        """Keep a device's answer; a reason to drop it, or None."""
        if terms.sign:
            try:
                tx = Transaction.from_bytes(terms.sign)
                tx.verify()
            except TxError as exc:
                return f"terms from {device}: {exc}"
            if self.device_of.get(tx.sender) != device or tx.type != "incentive.sign":
                return f"terms from {device}: not its incentive.sign"
            self.signs.append(terms.sign)
        self.claimed[device] += terms.relay_bytes
        return None

    def on_gossip(self, size: int) -> None:
        """An item of `size` bytes went through the group's gossip."""
        self.group_bytes += size

    def on_block(self, block: Block, size: int) -> None:
        """An LMUC block: its co-signing devices mined it."""
        self.group_bytes += size
        for sig in block.certificate:
            device = self.device_of.get(sig.signer)
            if device is not None:
                self.cosigned[device] += 1

    def reports(
        self,
        state: State,
        updates: Mapping[str, int],
        accuracy: Mapping[str, float],
        epochs: int,
        fanout: int,
        selected: Iterable[str],
    ) -> list[list[Any]]:
        """``incentive.pay``'s reports of the `selected` devices (a device below the task's
        reputation threshold is out of the task: neither its training nor its mining is
        paid): `updates` (device -> samples of its update this round), `accuracy` (the
        MEC's validation accuracies); then forgets what it reported (relay bytes: those of an
        unselected device and those over the cap too)."""
        quality = quality_scores({d: a for d, a in accuracy.items() if d in updates})
        due = self.relay_due()
        cap = fanout * self.group_bytes
        out: list[list[Any]] = []
        eligible = self.devices & set(selected)
        for d in sorted(set(updates) | set(self.cosigned) | set(due)):
            self.relay_paid[d] += due.get(d, 0)  # settled: what is over the cap is not paid
            if d not in eligible:
                continue
            samples = int(updates.get(d, 0))
            response = gmuc_request.get_response(state, self.task_id, d)
            resources = response or {}
            cpu = int(resources.get("cpu_mhz", 0)) if samples else 0
            relay = min(cap, due.get(d, 0))
            out.append(
                [
                    d,
                    {
                        "quality": float(quality.get(d, 0.0)),
                        "samples": samples,
                        "cpu_mhz": cpu,
                        "energy_mj": energy_mj(samples, epochs, cpu),
                        "blocks": self.cosigned.get(d, 0),
                        "relay_bytes": relay,
                    },
                ]
            )
        self.cosigned = Counter()
        self.group_bytes = 0
        return out

    def pay_report(
        self,
        gmuc: Any,
        round_: int,
        duration_ms: int,
        updates: Mapping[str, int],
        accuracy: Mapping[str, float],
        epochs: int,
        fanout: int,
        selected: Iterable[str],
    ) -> PayReport | None:
        """The round's ``tl.pay`` (the devices' new signatures, then the MEC's signed
        ``incentive.pay`` on `gmuc`, a chain handle); None when there is nobody to report."""
        state = gmuc.replica.chain.state
        reports = self.reports(state, updates, accuracy, epochs, fanout, selected)
        if not reports:
            return None
        payload = {
            "task_id": self.task_id,
            "round": round_,
            "duration_ms": max(1, duration_ms),
            "reports": reports,
        }
        tx = gmuc.transaction("incentive.pay", payload)
        signs, self.signs = self.signs, []
        return PayReport(round_, (*signs, tx.to_bytes()))


class PublisherIncentives:
    """The publisher's side: checks the MECs' pay reports, orders them into GMUC blocks."""

    def __init__(self, roster: Mapping[str, str], mecs: Iterable[str], devices: Iterable[str]):
        self.key_of = {n: bytes.fromhex(k) for n, k in roster.items()}
        self.mecs = set(mecs)
        self.devices = {self.key_of[d]: d for d in devices if d in self.key_of}
        self.pending: dict[tuple[int, str], PayReport] = {}

    def offer(self, chain: Any, task_id: str, seed: int, ref_ms: int) -> Transaction:
        """The publisher's ``incentive.offer`` on `chain` (a GMUC handle) from the reputation
        records its replica holds."""
        state = chain.replica.chain.state
        devices = sorted(self.devices.values())
        return cast(
            Transaction,
            chain.transaction(
                "incentive.offer", offer_payload(state, task_id, devices, seed, ref_ms)
            ),
        )

    def on_pay(self, sender: str, report: PayReport) -> str | None:
        """Keep a MEC's report; a reason to drop it, or None."""
        try:
            txs = [Transaction.from_bytes(t) for t in report.txs]
            for tx in txs:
                tx.verify()
        except TxError as exc:
            return f"pay report from {sender}: {exc}"
        if not txs or txs[-1].type != "incentive.pay" or txs[-1].sender != self.key_of[sender]:
            return f"pay report from {sender}: the last transaction is not its incentive.pay"
        if any(tx.type != "incentive.sign" or tx.sender not in self.devices for tx in txs[:-1]):
            return f"pay report from {sender}: not its devices' incentive.sign"
        self.pending[(report.round, sender)] = report
        return None

    def take(self, up_to: int | None = None) -> list[Transaction]:
        """The pending reports of rounds <= `up_to` (None: all): every signature, then every
        payment, in (round, MEC) order."""
        keys = sorted(k for k in self.pending if up_to is None or k[0] <= up_to)
        reports = [self.pending.pop(k) for k in keys]
        txs = [[Transaction.from_bytes(t) for t in r.txs] for r in reports]
        return [tx for t in txs for tx in t[:-1]] + [t[-1] for t in txs]
