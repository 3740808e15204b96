"""The interface between the daemon (I/O, timers, codec) and the roles (protocol logic)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from node.codec import Message
from node.config import NodeConfig
from node.ledger.chains import ChainHandle
from node.ledger.replica import Replica
from node.ledger.sync import Outgoing
from node.metrics import MetricsWriter
from topologies import NodeSpec, TopologySpec

T = TypeVar("T")


class NodeContext(Protocol):
    """What a role may use: identity, topology, clock, sending, timers, metrics, chains."""

    node_id: str
    config: NodeConfig
    topology: TopologySpec
    metrics: MetricsWriter

    @property
    def chains(self) -> Mapping[str, ChainHandle]:
        """The chains this node keeps, by chain id (submit, append, subscribe, head)."""
        ...

    @property
    def replica(self) -> Replica | None:
        """The node's only chain's replica (None: the node keeps no chain); raises
        RuntimeError if it keeps several (then use `chains`)."""
        ...

    @property
    def me(self) -> NodeSpec:
        """This node's spec."""
        ...

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def send(self, dst: str, msg: object, payload: Mapping[str, Any] | None = None) -> None:
        """Sign and send one message (over the shaped links): a registered message instance
        (`node.messages`), or a ledger sync message's type tag and its `payload` map."""
        ...

    def multicast(
        self, dsts: Iterable[str], msg: object, payload: Mapping[str, Any] | None = None
    ) -> None:
        """Send the same message (as for `send`) to each of `dsts`, encoding it once."""
        ...

    def emit(self, outgoing: Iterable[Outgoing]) -> None:
        """Send messages produced by a sans-IO component (ledger sync)."""
        ...

    def wall_ms(self) -> int:
        """Wall-clock milliseconds (for block timestamps)."""
        ...

    def stop_when_synced(
        self,
        height: int,
        timeout_s: float,
        report_to: Sequence[str] = (),
        chain_id: str | None = None,
    ) -> None:
        """Stop once chain `chain_id` (None: the only one) reaches `height`, or after
        `timeout_s`; then send that chain's ``chain.status`` to each of `report_to`."""
        ...

    def set_timer(self, name: str, delay_s: float) -> None:
        """Call `Role.on_timer(name)` after `delay_s` (replaces a timer of that name)."""
        ...

    def cancel_timer(self, name: str) -> None:
        """Forget a pending timer."""
        ...

    def run_background(
        self,
        fn: Callable[[], T],
        on_done: Callable[[T | None, BaseException | None], None],
    ) -> None:
        """Run a long CPU job `fn()` off the loop (on the node's one worker thread; jobs
        one at a time, in order) while the node goes on receiving and relaying; then call
        `on_done(result, None)`, or `on_done(None, error)` if it raised, on the loop's thread
        like every callback. `fn` must not touch state that callbacks may change meanwhile.
        A node that stops first never calls `on_done`."""
        ...

    def stop(self) -> None:
        """End the daemon's loop after this callback (pending sends are flushed)."""
        ...

    def drop(self, reason: str, detail: str = "") -> None:
        """Count (and log) a verified message the role refuses, under `reason`."""
        ...


class Role(ABC):
    """Protocol logic for one kind of node; every callback runs on the daemon's thread."""

    kind: str = "node"

    @abstractmethod
    def start(self, ctx: NodeContext) -> None:
        """Called once the transport is up."""

    @abstractmethod
    def on_message(self, ctx: NodeContext, msg: Message) -> None:
        """Called for every verified message; `msg.payload` is the message's instance for a
        type registered in `node.messages` (a malformed one never gets here: the daemon
        drops it as ``bad_payload``), else the decoded map."""

    def on_timer(self, ctx: NodeContext, name: str) -> None:  # noqa: B027 - optional hook
        """Called when a timer set with `ctx.set_timer` fires."""

    def finish(self, ctx: NodeContext) -> None:  # noqa: B027 - optional hook
        """Called once when the daemon stops."""
