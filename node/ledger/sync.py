"""Chain sync and blob fetching between replicas (sans-IO: returns messages to send).

How it works
------------
Nodes exchange ``chain.status {height, head}``. A node that hears of a higher chain asks
that peer for the next blocks with ``chain.get {from, to}`` (one request outstanding at a
time); a node that hears of a lower chain answers with its own status, so a restarted node
learns who is ahead. A request that times out makes the node forget that peer's height (it
is presumed gone until it speaks again) and ask the next peer known to be ahead.

`seek(target, candidates)` is the catch-up to a height the node was told of (the final
height in ``stop``) when it may not know who holds the blocks (its MEC died, say): while
below `target` and no peer is known to be ahead, it asks the candidates in turn with
``chain.get``, moving to the next one when a request times out or the answer falls short
(a peer answers with the blocks it has and its height, possibly none). ``chain.blocks``
replies carry raw block bytes (at most MAX_BLOCKS per reply and MAX_REPLY_BYTES); each is
verified completely by `Chain.append` (hash chain, Merkle root, signatures, certificate,
state root by re-execution) before it is stored (on a light replica by `LightChain.append`:
hash chain, certificate, Merkle root), and the first bad block ends that reply
with a counted reason. A live ``chain.block`` for the next height is appended the same
way; one further ahead starts a sync from its sender. Each block is stored with the time
its message reached the node (``received_ms``, wall-clock ms, given by the caller: the
daemon notes it when the frame arrives, before the ledger backlog), so that a block's
timing row (`node.ledger.storage_time`) says when it arrived, not when it was handled.

Blobs (model weights) are never in blocks: after appending, a node asks the block's
sender for every replicated blob (the global models, see `node.ledger.blobrefs`) a
transaction references that it lacks (``blob.get {hash}``); the answer
``blob.data {hash, data}`` is stored only if SHA-256(data) equals the hash.

`fetch_blob(key, peers, now, on_done=...)` is the public "fetch this blob" call, for blobs
no block of this chain names (the two-layer MECs fetch the device updates a relayed LMUC
block names): it asks the named peers one at a time, in order, with ``blob.get``, and moves
to the next when the one asked answers without the blob, with bytes that are too large
(over `max_bytes`) or do not hash to the key (counted ``bad_blob``), or stays silent for
`timeout_s` (counted ``blob_timeout``, at a `tick`). Bytes that hash to the key are
stored (`BlobStore.put_behind`: fsynced off the caller's path) and handed to
`on_done(key, data)`; when every peer has been asked in vain, `on_done(key, None)`
(counted ``blob_unavailable``). A ``blob.data`` for a blob nobody asked for, or from a
peer not being asked for it, is counted ``unsolicited_blob`` and dropped.

`serve_filter` (None: every ``blob.get`` answered) is the hook of a node that withholds
blobs (the MEC fault ``withhold_blobs``, `node.roles.threats`): called with (asker, key)
before a ``blob.get`` is answered, it returns None to answer or a reason; a refused
``blob.get`` gets no answer at all (the asker times out, as on a silent peer) and is
counted under that reason.

A node may keep several chains (`node.ledger.chains`): each has its own `ChainSync`, whose
``chain.*`` messages then carry the chain id in a ``chain`` field (``CHAIN_FIELD``) by which
the receiving node routes them; ``blob.*`` messages carry none (a node's chains share its
blob store).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from node.contracts.task import REPLICATED_BLOB_TYPES
from node.core.block import Block, BlockError
from node.core.encoding import sha256
from node.core.tx import Transaction
from node.ledger.blobrefs import tx_blobs
from node.ledger.blobs import BlobError, BlobStore
from node.ledger.chain import Chain, LedgerError

log = logging.getLogger(__name__)

MAX_BLOCKS = 64
MAX_REPLY_BYTES = 16 * 1024 * 1024
REQUEST_TIMEOUT_S = 5.0
HASH_BYTES = 32
CHAIN_FIELD = "chain"


BlobCallback = Callable[[bytes, bytes | None], None]
ServeFilter = Callable[[str, bytes], str | None]  # (asker, key) -> None or the refusal reason


@dataclass
class BlobFetch:
    """One `ChainSync.fetch_blob` in progress: the peers to ask in turn and who is asked."""

    peers: list[str]
    max_bytes: int
    timeout_s: float
    callbacks: list[BlobCallback] = field(default_factory=list)
    next: int = 0  # index in `peers` of the next one to ask
    asked: str | None = None  # the peer asked now
    asked_at: float = 0.0


@dataclass(frozen=True)
class Outgoing:
    """A message the caller must send."""

    dst: str
    type: str
    payload: dict[str, Any]


DEFAULT_BLOB_TYPES = REPLICATED_BLOB_TYPES


def referenced_blobs(tx: Transaction, types: tuple[str, ...] = DEFAULT_BLOB_TYPES) -> list[bytes]:
    """Blob hashes a transaction of one of `types` refers to."""
    return tx_blobs(tx, types)


class ChainSync:
    """Keeps one replica up to date with its peers."""

    def __init__(
        self,
        chain: Chain,
        blobs: BlobStore,
        blob_types: tuple[str, ...] = DEFAULT_BLOB_TYPES,
        chain_id: str | None = None,
    ) -> None:
        """`blob_types`: the transaction types whose blobs every replica fetches (by default
        the global models; a device's update stays with the device and its MEC).
        `chain_id`: put in every ``chain.*`` message sent (None: no ``chain`` field, for a
        node with one chain talking to nodes that route by it or not)."""
        self.chain = chain
        self.chain_id = chain_id
        self.blobs = blobs
        self.blob_types = blob_types
        self.failures: Counter[str] = Counter()
        self.peer_heights: dict[str, int] = {}
        self._pending: tuple[str, float] | None = None
        self._wanted_blobs: set[bytes] = set()
        self._asked: dict[bytes, set[str]] = {}
        self._awaiting: dict[tuple[bytes, str], float] = {}  # (blob, peer asked): when
        self._fetches: dict[bytes, BlobFetch] = {}  # fetch_blob's, by blob key
        self._seek_target = -1
        self._seek_peers: list[str] = []
        self._seek_next = 0
        self._seek_pass_height = -1
        self._seek_resume = 0.0
        self._received_ms: float | None = None  # the arrival of the message being handled
        self.serve_filter: ServeFilter | None = None  # see the module docstring

    def status(self) -> dict[str, Any]:
        """The payload of this node's ``chain.status``."""
        return {"height": self.chain.height, "head": self.chain.head.hash}

    def announce(self, peers: list[str]) -> list[Outgoing]:
        """Status to each peer (at start-up, after a restart)."""
        return self._tagged([Outgoing(p, "chain.status", self.status()) for p in peers])

    def _tagged(self, out: list[Outgoing]) -> list[Outgoing]:
        """`out` with this chain's id in each ``chain.*`` message (where it has one)."""
        if self.chain_id is None:
            return out
        return [
            Outgoing(o.dst, o.type, {**o.payload, CHAIN_FIELD: self.chain_id})
            if o.type.startswith("chain.")
            else o
            for o in out
        ]

    def handle(
        self,
        sender: str,
        msg_type: str,
        payload: dict[str, Any],
        now: float,
        received_ms: float | None = None,
    ) -> list[Outgoing]:
        """Dispatch one ``chain.*`` or ``blob.*`` message (its ``chain`` field, if any, was
        the router's business). `received_ms`: when the message reached this node (wall-clock
        ms; None: when its blocks are appended), recorded with each block it brings."""
        self._received_ms = received_ms
        handler = {
            "chain.status": self._on_status,
            "chain.get": self._on_get,
            "chain.blocks": self._on_blocks,
            "chain.block": self._on_block,
            "blob.get": self._on_blob_get,
            "blob.data": self._on_blob_data,
        }.get(msg_type)
        if handler is None:
            self.failures["unknown_type"] += 1
            return []
        try:
            return self._tagged(handler(sender, payload, now))
        finally:
            self._received_ms = None

    def seek(self, target: int, candidates: list[str], now: float) -> list[Outgoing]:
        """Reach `target`, asking `candidates` in turn (in this order) while no peer is
        known to be ahead; a request that times out or falls short moves to the next."""
        self._seek_target = target
        self._seek_peers = list(dict.fromkeys(candidates))
        self._seek_next = 0
        self._seek_pass_height = self.chain.height
        self._seek_resume = 0.0
        return self._tagged(self._request_next(now))

    def _next_candidate(self, now: float) -> str | None:
        """The next seek candidate to ask, or None: target reached, no candidates, or a
        pause. A pass over every candidate that brought no block is followed by a pause of
        REQUEST_TIMEOUT_S (peers that are alive but behind answer at once, and would
        otherwise be asked again and again)."""
        if self.chain.height >= self._seek_target or not self._seek_peers:
            return None
        if self._seek_next >= len(self._seek_peers):
            if now < self._seek_resume:
                return None
            if self.chain.height == self._seek_pass_height:
                self._seek_resume = now + REQUEST_TIMEOUT_S
                self._seek_pass_height = -1  # the first call after the pause starts a pass
                return None
            self._seek_next = 0
            self._seek_pass_height = self.chain.height
        peer = self._seek_peers[self._seek_next]
        self._seek_next += 1
        return peer

    def tick(self, now: float) -> list[Outgoing]:
        """Re-request blocks if the outstanding request timed out; ask other peers for blobs."""
        out: list[Outgoing] = []
        if self._pending is not None and now - self._pending[1] > REQUEST_TIMEOUT_S:
            silent = self._pending[0]
            self._pending = None
            self.failures["timeout"] += 1
            self.peer_heights.pop(silent, None)  # presumed gone until it speaks again
            log.info("no blocks from %s in %.0f s; asking another peer", silent, REQUEST_TIMEOUT_S)
        out += self._request_next(now)
        for peer in sorted(self.peer_heights):
            out += self._fetch_blobs(peer, now)
        for key, fetch in list(self._fetches.items()):
            if fetch.asked is not None and now - fetch.asked_at > fetch.timeout_s:
                self.failures["blob_timeout"] += 1
                log.info("no blob %s from %s; asking the next peer", key.hex()[:16], fetch.asked)
                out += self._ask_next(key, fetch, now)
        return self._tagged(out)

    # -- fetch_blob: one blob from named peers ---------------------------------------------
    def fetch_blob(
        self,
        key: bytes,
        peers: Sequence[str],
        now: float,
        *,
        on_done: BlobCallback | None = None,
        max_bytes: int = MAX_REPLY_BYTES,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> list[Outgoing]:
        """Ask `peers` in turn (in this order) for blob `key` (see the module docstring);
        `on_done(key, data)` once it is stored, `on_done(key, None)` once every peer was
        asked in vain. A blob already in the store is handed to `on_done` at once; a fetch
        of a blob already being fetched adds `on_done` and the peers not yet listed."""
        if not (isinstance(key, bytes) and len(key) == HASH_BYTES):
            raise ValueError(f"a blob key is {HASH_BYTES} bytes, not {key!r:.40}")
        if not peers:
            raise ValueError("fetch_blob needs at least one peer")
        held = self.blobs.get(key)
        if held is not None:
            if on_done is not None:
                on_done(key, held)
            return []
        fetch = self._fetches.get(key)
        if fetch is None:
            fetch = self._fetches[key] = BlobFetch([], max_bytes, timeout_s)
        fetch.peers += [p for p in dict.fromkeys(peers) if p not in fetch.peers]
        if on_done is not None:
            fetch.callbacks.append(on_done)
        if fetch.asked is not None:
            return []
        return self._ask_next(key, fetch, now)

    def cancel_fetch(self, key: bytes) -> None:
        """Stop fetching blob `key` (no callback; a late reply counts as unsolicited)."""
        fetch = self._fetches.pop(key, None)
        if fetch is not None and fetch.asked is not None:
            self._awaiting.pop((key, fetch.asked), None)

    @property
    def fetching(self) -> set[bytes]:
        """The blobs `fetch_blob` is still fetching."""
        return set(self._fetches)

    def _ask_next(self, key: bytes, fetch: BlobFetch, now: float) -> list[Outgoing]:
        """Ask the fetch's next peer, or end it in vain if none is left."""
        if fetch.asked is not None:
            self._awaiting.pop((key, fetch.asked), None)
        if fetch.next >= len(fetch.peers):
            del self._fetches[key]
            self.failures["blob_unavailable"] += 1
            log.warning("blob %s: no peer of %s had it", key.hex()[:16], fetch.peers)
            for callback in fetch.callbacks:
                callback(key, None)
            return []
        fetch.asked, fetch.asked_at = fetch.peers[fetch.next], now
        fetch.next += 1
        self._awaiting[(key, fetch.asked)] = now
        return [Outgoing(fetch.asked, "blob.get", {"hash": key})]

    def _on_fetched(
        self, key: bytes, fetch: BlobFetch, sender: str, data: object, now: float
    ) -> list[Outgoing]:
        """The answer of the peer asked for `key`: stored and handed over, or the next peer."""
        if not isinstance(data, bytes):
            return self._ask_next(key, fetch, now)  # it does not have it
        if len(data) > fetch.max_bytes:
            self.failures["bad_blob"] += 1
            log.warning(
                "blob %s from %s: %d bytes > %d", key.hex()[:16], sender, len(data), fetch.max_bytes
            )
            return self._ask_next(key, fetch, now)
        if sha256(data) != key:
            self.failures["bad_blob"] += 1
            log.warning("blob %s from %s does not match its hash", key.hex()[:16], sender)
            return self._ask_next(key, fetch, now)
        self.blobs.put_behind(key, data)  # hashed just now; fsynced off the round's path
        self.blob_arrived(key, data)
        return []

    @property
    def syncing(self) -> bool:
        """True while a block request is outstanding."""
        return self._pending is not None

    def _request_next(self, now: float) -> list[Outgoing]:
        if self._pending is not None:
            return []
        ahead = [(h, p) for p, h in self.peer_heights.items() if h > self.chain.height]
        if ahead:
            height, peer = max(ahead)
        elif (candidate := self._next_candidate(now)) is not None:
            height, peer = self._seek_target, candidate
        else:
            return []
        start = self.chain.height + 1
        self._pending = (peer, now)
        end = min(height, start + MAX_BLOCKS - 1)
        return [Outgoing(peer, "chain.get", {"from": start, "to": end})]

    def _on_status(self, sender: str, p: dict[str, Any], now: float) -> list[Outgoing]:
        height = p.get("height")
        if not isinstance(height, int) or height < 0:
            self.failures["bad_status"] += 1
            return []
        self.peer_heights[sender] = height
        if height < self.chain.height:
            return [Outgoing(sender, "chain.status", self.status())]
        return self._request_next(now)

    def _on_get(self, sender: str, p: dict[str, Any], now: float) -> list[Outgoing]:
        start, end = p.get("from"), p.get("to")
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end):
            self.failures["bad_request"] += 1
            return []
        end = min(end, start + MAX_BLOCKS - 1, self.chain.height)
        blocks: list[bytes] = []
        size = 0
        for height in range(start, end + 1):
            raw = self.chain.store.block_bytes(height)
            if raw is None or (blocks and size + len(raw) > MAX_REPLY_BYTES):
                break
            blocks.append(raw)
            size += len(raw)
        return [Outgoing(sender, "chain.blocks", {"blocks": blocks, "height": self.chain.height})]

    def _append(self, sender: str, raw: object) -> bool:
        """Verify and append one block; True if it is now on our chain."""
        if not isinstance(raw, bytes):
            self.failures["malformed"] += 1
            return False
        try:
            block = Block.from_bytes(raw)
            if block.height <= self.chain.height:  # already held (overlapping replies)
                return block.hash == self._hash_at(block.height)
            self.chain.append(block, self._received_ms)
        except BlockError as exc:
            self.failures["malformed"] += 1
            log.warning("refused a block from %s: %s", sender, exc)
            return False
        except LedgerError as exc:
            self.failures[exc.reason] += 1
            log.warning("refused a block from %s: %s", sender, exc)
            return False
        for tx in block.txs:
            for blob in referenced_blobs(tx, self.blob_types):
                if not self.blobs.has(blob):
                    self._wanted_blobs.add(blob)
        return True

    def _hash_at(self, height: int) -> bytes | None:
        raw = self.chain.store.block_bytes(height)
        return None if raw is None else Block.from_bytes(raw).hash

    def _fetch_blobs(self, sender: str, now: float) -> list[Outgoing]:
        """Ask `sender` once for each wanted blob it has not been asked for."""
        out = []
        for key in sorted(self._wanted_blobs):
            asked = self._asked.setdefault(key, set())
            if sender not in asked:
                asked.add(sender)
                self._awaiting[(key, sender)] = now
                out.append(Outgoing(sender, "blob.get", {"hash": key}))
        return out

    def awaiting_blobs(self, now: float) -> bool:
        """True while a ``blob.get`` this replica sent less than REQUEST_TIMEOUT_S ago is
        unanswered: a node about to stop waits for it, so that the reply does not go to a
        node that has left (its sender's socket would then linger on it at exit)."""
        return any(now - asked < REQUEST_TIMEOUT_S for asked in self._awaiting.values())

    def _on_blocks(self, sender: str, p: dict[str, Any], now: float) -> list[Outgoing]:
        if self._pending is None or self._pending[0] != sender:
            self.failures["unsolicited"] += 1
            return []
        self._pending = None
        blocks = p.get("blocks")
        if not isinstance(blocks, list):
            self.failures["malformed"] += 1
            return []
        refused = False
        for raw in blocks:
            if not self._append(sender, raw):
                self.peer_heights.pop(sender, None)
                refused = True
                break
        height = p.get("height")
        if isinstance(height, int) and height >= 0 and not refused:
            self.peer_heights[sender] = height
        return self._fetch_blobs(sender, now) + self._request_next(now)

    def _on_block(self, sender: str, p: dict[str, Any], now: float) -> list[Outgoing]:
        raw = p.get("block")
        height = p.get("height")
        if not isinstance(raw, bytes) or not isinstance(height, int):
            self.failures["malformed"] += 1
            return []
        if height <= self.chain.height:
            return []
        if height > self.chain.height + 1:
            self.peer_heights[sender] = height
            return self._request_next(now)
        if not self._append(sender, raw):
            return []
        return self._fetch_blobs(sender, now)

    def _on_blob_get(self, sender: str, p: dict[str, Any], now: float) -> list[Outgoing]:
        key = p.get("hash")
        if not (isinstance(key, bytes) and len(key) == HASH_BYTES):
            self.failures["bad_request"] += 1
            return []
        refusal = None if self.serve_filter is None else self.serve_filter(sender, key)
        if refusal is not None:
            self.failures[refusal] += 1
            log.info("blob.get %s from %s not answered: %s", key.hex()[:16], sender, refusal)
            return []
        data = self.blobs.get(key)
        if data is None:
            return [Outgoing(sender, "blob.data", {"hash": key, "missing": True})]
        return [Outgoing(sender, "blob.data", {"hash": key, "data": data})]

    def _on_blob_data(self, sender: str, p: dict[str, Any], now: float) -> list[Outgoing]:
        key, data = p.get("hash"), p.get("data")
        fetch = self._fetches.get(key) if isinstance(key, bytes) else None
        if fetch is not None and isinstance(key, bytes) and sender == fetch.asked:
            return self._on_fetched(key, fetch, sender, data, now)
        if isinstance(key, bytes):
            self._awaiting.pop((key, sender), None)  # answered (with the blob or without)
        if not isinstance(key, bytes) or key not in self._wanted_blobs:
            self.failures["unsolicited_blob"] += 1
            return []
        if not isinstance(data, bytes):
            self.failures["blob_missing"] += 1
            return []  # another peer is asked at the next tick
        if self.blobs.has(key):  # another chain of this node (sharing the store) fetched it
            self.blob_arrived(key)
            return []
        try:
            self.blobs.put_verified(key, data)
        except BlobError:
            self.failures["bad_blob"] += 1
            log.warning("blob %s from %s does not match its hash", key.hex()[:16], sender)
            return []
        self.blob_arrived(key)
        return []

    def wants_blob(self, key: bytes) -> bool:
        """True if this replica asked for blob `key` and still lacks it."""
        return key in self._wanted_blobs or key in self._fetches

    def blob_arrived(self, key: bytes, data: bytes | None = None) -> None:
        """Blob `key` (`data`, if the caller has the bytes) is now in the store: stop asking
        for it (a `fetch_blob` of it ends, handing the bytes to its callbacks)."""
        self._wanted_blobs.discard(key)
        for peer in self._asked.pop(key, ()):
            self._awaiting.pop((key, peer), None)
        fetch = self._fetches.pop(key, None)
        if fetch is None:
            return
        if fetch.asked is not None:
            self._awaiting.pop((key, fetch.asked), None)
        if data is None:
            data = self.blobs.get(key)
        for callback in fetch.callbacks:
            callback(key, data)

    @property
    def missing_blobs(self) -> set[bytes]:
        """Blobs referenced on chain that this node still lacks."""
        return set(self._wanted_blobs)
