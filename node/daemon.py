"""The node daemon's event loop: receive, verify, dispatch to the role, fire timers.

How it works
------------
One thread runs the loop. It waits on the transport for at most the time to the next timer,
decodes and verifies each frame with the codec (a bad frame is counted under its reason,
logged, and dropped; the loop goes on), hands ``chain.*``/``blob.*`` messages to the node's
chains (`ChainSet`: routed by the message's chain id to that chain's sync; an id the node
does not keep is counted as ``unknown_chain``) and every other verified message to the role
(a type registered in `node.messages` as its instance, checked once here: a malformed one
is counted as ``bad_payload`` and dropped), ticks every chain's sync, and fires due timers.
Ledger messages wait in a backlog until no frame is waiting (or the oldest has waited
LEDGER_MAX_DEFER_S), so that validating and appending a block never delays a node's part in
the round (a device's training, a MEC's forwarding); their order among themselves is kept,
and each keeps the wall-clock time it arrived, which the chains record as the time its
blocks were received (`node.ledger.storage_time`).
The role sends message instances through this object (the `NodeContext`, which encodes them
with `to_payload`), so roles never touch sockets, clocks or keys. The loop ends when the
role calls `stop()` or on SIGTERM/SIGINT; pending shaped sends and blob fsyncs are then
flushed and the counters are written.

A role runs a long CPU job (a device's local training) with `run_background(fn, on_done)`:
`fn` runs on the node's one worker thread (a daemon thread, started at the first job; jobs
run one at a time, in the order given) while the loop goes on receiving, storing blocks and
relaying; its result (or the exception it raised) comes back to `on_done` on the loop's own
thread, in the same order. `fn` must not touch the role's state that callbacks may change
meanwhile. While a job is out, the loop waits at most BACKGROUND_POLL_S for a frame, so a
result waits at most that long. A node that stops with a job out does not wait for it:
its `on_done` is never called.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from node.codec import Codec, DecodeError, Message
from node.config import NodeConfig
from node.ledger.chains import ChainSet, UnknownChain
from node.ledger.replica import Replica
from node.ledger.sync import Outgoing
from node.messages import MessageError, from_payload, message_type, registered, to_payload
from node.metrics import MetricsWriter
from node.msglog import MessageLog, open_message_log
from node.roles.base import Role
from node.transport.base import Transport
from topologies import NodeSpec, TopologySpec

log = logging.getLogger(__name__)

MAX_WAIT_S = 0.5
SYNC_TICK_S = 1.0
LEDGER_PREFIXES = ("chain.", "blob.")
LOG_FIRST_DROPS = 20
LEDGER_MAX_DEFER_S = 0.5
BLOB_FLUSH_S = 10.0
PROFILE_ENV = "BCFL_PROFILE_DIR"
BACKGROUND_POLL_S = 0.01


class StartTimeout(RuntimeError):
    """No ``Start`` from the orchestrator within the config's startup_timeout_s."""


T = TypeVar("T")
# a background job and where its outcome goes: on_done(result, None) or on_done(None, error)
_Job = tuple[Callable[[], Any], Callable[[Any, BaseException | None], None]]


class Daemon:
    """Runs one role over one transport; implements `NodeContext` for the role."""

    def __init__(
        self,
        config: NodeConfig,
        topology: TopologySpec,
        transport: Transport,
        codec: Codec,
        role: Role,
        metrics: MetricsWriter,
        clock: Callable[[], float] = time.monotonic,
        replica: Replica | None = None,
        chains: ChainSet | None = None,
    ) -> None:
        """`chains`: the chains the node keeps (`open_chains`); `replica`: instead, the
        node's only chain (kept as chain ``main``)."""
        if replica is not None and chains is not None:
            raise ValueError("give the node's chains or its one replica, not both")
        self.node_id = config.node_id
        self.config = config
        self.topology = topology
        self.metrics = metrics
        self.drops: Counter[str] = Counter()
        self._transport = transport
        self._codec = codec
        self._role = role
        self._clock = clock
        if chains is None:
            chains = ChainSet.single(replica) if replica is not None else ChainSet.empty()
        self.chains = chains
        self._stop_chain: str | None = None
        self._timers: dict[str, float] = {}
        self._stopping = False
        self._stop_at_height: int | None = None
        self._stop_deadline = 0.0
        self._stop_report_to: tuple[str, ...] = ()
        self._next_sync_tick = 0.0
        # a row per message sent and received (node.msglog), when the config says; else None
        self.msglog: MessageLog | None = open_message_log(config)
        # ledger messages waiting: (arrival on the loop's clock, arrival in wall-clock ms, msg)
        self._ledger_backlog: deque[tuple[float, float, Message]] = deque()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._finished: queue.SimpleQueue[tuple[_Job, Any, BaseException | None]] = (
            queue.SimpleQueue()
        )
        self._jobs_out = 0
        self._worker: threading.Thread | None = None
        self.control: Any = None  # node.control.server.ControlPlane, once started in run()

    # -- NodeContext -------------------------------------------------------------------
    @property
    def replica(self) -> Replica | None:
        """The node's only chain's replica (None: no chains); raises RuntimeError if the
        node keeps several (then use `chains`)."""
        return self.chains.only().replica if self.chains else None

    @property
    def me(self) -> NodeSpec:
        """This node's spec."""
        return self.topology.node(self.node_id)

    def now(self) -> float:
        """Monotonic seconds."""
        return self._clock()

    def send(self, dst: str, msg: object, payload: Mapping[str, Any] | None = None) -> None:
        """Sign and send one message (see `multicast`)."""
        self.multicast((dst,), msg, payload)

    def multicast(
        self, dsts: Iterable[str], msg: object, payload: Mapping[str, Any] | None = None
    ) -> None:
        """Encode once, send to each destination. `msg`: a registered message instance
        (`node.messages`; TypeError for anything else), or a ledger sync message's type tag
        with its `payload` map (those stay maps)."""
        if payload is None:
            msg_type, payload = message_type(msg), to_payload(msg)
        elif isinstance(msg, str):
            msg_type = msg
        else:
            raise TypeError(f"{type(msg).__qualname__} is sent without a payload")
        try:
            frame = self._codec.encode(msg_type, payload)
        except ValueError as exc:
            self.drop("unsendable", str(exc))
            return
        msglog = self.msglog
        for dst in dsts:
            if msglog is not None:
                msglog.sent(dst, msg_type, frame)
            self._transport.send(dst, frame)

    def emit(self, outgoing: Iterable[Outgoing]) -> None:
        """Send messages produced by a sans-IO component (ledger sync)."""
        for out in outgoing:
            self.send(out.dst, out.type, out.payload)

    def wall_ms(self) -> int:
        """Wall-clock milliseconds (block timestamps only; never for protocol timing)."""
        return int(time.time() * 1000)

    def stop_when_synced(
        self,
        height: int,
        timeout_s: float,
        report_to: Sequence[str] = (),
        chain_id: str | None = None,
    ) -> None:
        """Stop once chain `chain_id` (None: the only one) reaches `height` and has the
        answers to the blob requests it sent (or after `timeout_s`); then send that chain's
        ``chain.status`` to each of `report_to`. The
        ledger messages waiting in the backlog are handled first (the node is stopping:
        there is no round left to defer them for), so that a block already received is
        not asked for again."""
        while self._ledger_backlog:
            self._ledger_message(*self._ledger_backlog.popleft()[1:])
        self._stop_chain = chain_id
        self._stop_at_height = height
        self._stop_deadline = self._clock() + timeout_s
        self._stop_report_to = tuple(report_to)
        self._check_synced_stop()

    def _check_synced_stop(self) -> None:
        if self._stop_at_height is None:
            return
        replica = self._stop_replica()
        height = replica.height if replica is not None else self._stop_at_height
        if height < self._stop_at_height:
            if self._clock() <= self._stop_deadline:
                return
            log.warning(
                "stopping at ledger height %d, below the final %d", height, self._stop_at_height
            )
        elif (
            replica is not None
            and replica.sync.awaiting_blobs(self._clock())
            and self._clock() <= self._stop_deadline
        ):
            return  # a blob asked for is on its way: take it rather than leave its sender a
            # reply to a node that is gone (its socket then lingers on it at exit)
        self._stop_at_height = None
        self._stopping = True
        if replica is not None:
            self.emit(replica.sync.announce(list(self._stop_report_to)))

    def _stop_replica(self) -> Replica | None:
        if self._stop_chain is not None:
            return self.chains[self._stop_chain].replica
        return self.replica

    def set_timer(self, name: str, delay_s: float) -> None:
        """Fire `name` after `delay_s`."""
        self._timers[name] = self._clock() + delay_s

    def cancel_timer(self, name: str) -> None:
        """Forget timer `name`."""
        self._timers.pop(name, None)

    def run_background(
        self,
        fn: Callable[[], T],
        on_done: Callable[[T | None, BaseException | None], None],
    ) -> None:
        """Run `fn()` on this node's worker thread; then, on the loop's thread, call
        `on_done(result, None)`, or `on_done(None, error)` if `fn` raised. Jobs run one at a
        time and their `on_done`s are called in the order the jobs were given."""
        if self._worker is None:
            self._worker = threading.Thread(
                target=self._work, name=f"{self.node_id}-worker", daemon=True
            )
            self._worker.start()
        self._jobs_out += 1
        self._jobs.put((fn, on_done))

    def _work(self) -> None:
        """The worker thread: run jobs until told to end (None)."""
        while (job := self._jobs.get()) is not None:
            try:
                result = job[0]()
            except Exception as exc:  # delivered to the job's on_done on the loop's thread
                self._finished.put((job, None, exc))
            else:
                self._finished.put((job, result, None))

    def _deliver_finished(self) -> None:
        """Hand the finished jobs' outcomes to their `on_done`s (on the loop's thread)."""
        while self._jobs_out and not self._stopping:
            try:
                job, result, error = self._finished.get_nowait()
            except queue.Empty:
                return
            self._jobs_out -= 1
            job[1](result, error)

    def stop(self) -> None:
        """End the loop after the current callback."""
        self._stopping = True

    def drop(self, reason: str, detail: str = "") -> None:
        """Count (and log, at first) a message dropped for `reason`."""
        self.drops[reason] += 1
        n = self.drops[reason]
        if n <= LOG_FIRST_DROPS or n % 100 == 0:
            log.warning("dropped message #%d for %s%s", n, reason, f": {detail}" if detail else "")

    # -- loop ------------------------------------------------------------------------
    def close(self) -> None:
        """Close the transport and the metrics file; finish the blob writes."""
        if self.control is not None:
            self.control.close()  # the socket file goes first
        self._transport.close()
        self.metrics.close()
        if not self.chains.flush_blobs(BLOB_FLUSH_S):
            log.warning("some blobs were not fsynced within %.0f s", BLOB_FLUSH_S)
        self.chains.close()
        if self.msglog is not None:
            self.msglog.close()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        self._stopping = True

    def _fire_due_timers(self) -> None:
        now = self._clock()
        for name, due in sorted(self._timers.items(), key=lambda kv: kv[1]):
            if due <= now and self._timers.get(name) == due:
                del self._timers[name]
                self._role.on_timer(self, name)

    def _wait_s(self) -> float:
        longest = BACKGROUND_POLL_S if self._jobs_out else MAX_WAIT_S
        if not self._timers:
            return longest
        return max(0.0, min(longest, min(self._timers.values()) - self._clock()))

    def _ledger_message(self, received_ms: float, msg: Message) -> None:
        if not self.chains:
            self.drop("no_ledger", msg.type)
            return
        try:
            out = self.chains.handle(msg.sender, msg.type, msg.payload, self._clock(), received_ms)
        except UnknownChain as exc:
            self.drop("unknown_chain", str(exc))
            return
        self.emit(out)

    def _tick_ledger(self) -> None:
        now = self._clock()
        if self.chains and now >= self._next_sync_tick:
            self._next_sync_tick = now + SYNC_TICK_S
            self.emit(self.chains.tick(now))

    def handle_frame(self, frame: bytes) -> None:
        """Verify one frame and dispatch it (or count why it was dropped)."""
        msglog = self.msglog
        taken_ms = time.time_ns() / 1e6 if msglog is not None else 0.0
        try:
            msg = self._codec.decode(frame)
        except DecodeError as exc:
            self.drop(exc.reason, exc.detail)
            return
        if msglog is not None:  # a verified message's row (taken from the transport then)
            msglog.received(taken_ms, msg.type, msg.sender, msg.seq, msg.size)
        if msg.type.startswith(LEDGER_PREFIXES):
            self._ledger_backlog.append((self._clock(), time.time_ns() / 1e6, msg))
            return
        if registered(msg.type) is not None:  # a typed message: checked once, here
            try:
                typed = from_payload(msg.type, msg.payload)
            except MessageError as exc:
                self.drop(exc.reason, f"{msg.type} from {msg.sender}: {exc.detail}")
                return
            msg = Message(msg.type, msg.sender, msg.seq, typed, msg.size)
        self._role.on_message(self, msg)

    def _next_frame(self) -> bytes | None:
        """The next frame; with ledger messages waiting, one of them is handled instead when
        no frame is waiting or the oldest has waited LEDGER_MAX_DEFER_S (then None); with
        none of those, deferred ledger writes are done when no frame is waiting."""
        backlog = self._ledger_backlog
        if backlog and self._clock() - backlog[0][0] >= LEDGER_MAX_DEFER_S:
            self._ledger_message(*backlog.popleft()[1:])
            return None
        unwritten = self.chains.pending_writes()
        frame = self._transport.recv(0.0 if backlog or unwritten else self._wait_s())
        if frame is None and backlog:
            self._ledger_message(*backlog.popleft()[1:])
        elif frame is None and unwritten:
            self.chains.write_pending()  # deferred ledger writes, when nothing else is waiting
        return frame

    def run(self, install_signal_handlers: bool = True) -> None:
        """Run until the role stops the node or a signal arrives. With the environment
        variable PROFILE_ENV set to a directory, the run is profiled with cProfile into
        ``DIR/<node id>.prof`` (for finding where a round's time goes), timing this thread's
        CPU time: a wall-clock profile of 13 processes sharing two cores charges each function
        with the time its process waited for a core. The worker thread's jobs
        (`run_background`: a device's training) are not in it."""
        directory = os.environ.get(PROFILE_ENV)
        if not directory:
            self._run(install_signal_handlers)
            return
        import cProfile

        profiler = cProfile.Profile(time.thread_time)
        try:
            profiler.runcall(self._run, install_signal_handlers)
        finally:
            Path(directory).mkdir(parents=True, exist_ok=True)
            profiler.dump_stats(str(Path(directory) / f"{self.node_id}.prof"))

    def _await_start(self) -> bool:
        """With ``await_start``: run the control plane's commands (``SetBehaviour`` entries
        land in the schedule) until ``Start`` (True) or a stop (False), waiting on its command
        queue; StartTimeout (the node exits non-zero) after startup_timeout_s without one."""
        control = self.control
        limit = self.config.startup_timeout_s
        if control is None:
            log.error("await_start without a control plane: no Start can come")
            raise StartTimeout("await_start without a control plane (no control_token)")
        deadline = time.monotonic() + limit
        log.info("waiting for the orchestrator's schedule and Start (control plane)")
        while not self._stopping and not control.started.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("no Start from the orchestrator within %g s", limit)
                raise StartTimeout(f"no Start from the orchestrator within {limit:g} s")
            control.wait_command(min(left, MAX_WAIT_S))
            control.tick()
        return control.started.is_set() and not self._stopping

    def _run(self, install_signal_handlers: bool) -> None:
        if install_signal_handlers:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        from node.control.server import start_control  # (a fork server imports grpc only)

        self.control = start_control(self)  # None: no control_token in the config
        if getattr(self.config, "await_start", False) and not self._await_start():
            self._write_counters()  # stopped (SIGTERM, Stop) while waiting for Start
            return
        self._role.start(self)
        self.metrics.write("ready")  # the orchestrator's start-up progress counts these
        while not self._stopping:
            frame = self._next_frame()
            if frame is not None:
                self.handle_frame(frame)
            self._deliver_finished()
            self._fire_due_timers()
            self._tick_ledger()
            self._check_synced_stop()
            if self.control is not None:
                self.control.tick()  # its commands, refusals and status snapshot
        if self._worker is not None:
            self._jobs.put(None)  # the worker ends after its job (not waited for: a daemon thread)
        self._role.finish(self)
        flush = getattr(self._transport, "flush", None)
        if flush is not None and not flush(10.0):
            log.warning("some shaped frames were still pending at exit")
        self._write_counters()

    def _write_counters(self) -> None:
        """The ``counters`` record: messages, bytes, drops by reason (the control plane's
        refusals up to now included), ledger heights and refusals."""
        if self.control is not None:
            self.control.tick()  # refusals up to now into the counters
        stats = self._transport.stats
        dropped = dict(self.drops + stats.dropped)
        self.metrics.write(
            "counters",
            sent_msgs=stats.sent_msgs,
            sent_bytes=stats.sent_bytes,
            recv_msgs=stats.recv_msgs,
            recv_bytes=stats.recv_bytes,
            dropped=dropped,
            ledger_height=self.chains.only().height if len(self.chains) == 1 else None,
            ledger_refused=self.chains.failures(),
            chains={
                cid: {"height": r.height, "refused": dict(r.sync.failures)}
                for cid, r in self.chains.replicas()
            },
        )
        log.info(
            "stopped; sent %d msgs, received %d, dropped %s",
            stats.sent_msgs,
            stats.recv_msgs,
            dropped or "none",
        )
