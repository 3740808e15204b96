"""Unit tests for node.transport.shaping: LinkShaper plans and the ShapedTransport thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from node.transport import InMemoryNetwork, InMemoryTransport, LinkShaper, ShapedTransport
from node.transport.base import TransportStats
from topologies import (
    HierarchyParams,
    LinkKind,
    LinkSpec,
    NodeKind,
    NodeSpec,
    TopologySpec,
    build_hierarchy,
)

RECV_TIMEOUT_S = 2.0


def _pair(
    a: str, b: str, bw: float, delay: float, jitter: float = 0.0, loss: float = 0.0
) -> tuple[LinkSpec, LinkSpec]:
    return (
        LinkSpec(a, b, LinkKind.BACKHAUL, bw, delay, jitter, loss),
        LinkSpec(b, a, LinkKind.BACKHAUL, bw, delay, jitter, loss),
    )


def _mecs(*ids: str) -> list[NodeSpec]:
    return [NodeSpec("bs0", NodeKind.BS), *(NodeSpec(i, NodeKind.MEC, parent="bs0") for i in ids)]


def _line(jitter: float = 0.0, loss: float = 0.0) -> TopologySpec:
    """mec0 -(8 Mbit/s, 10 ms)- mec1 -(2 Mbit/s, 5 ms)- mec2, plus mec0 -(1000, 1 ms)- mec3."""
    links = [
        *_pair("mec0", "mec1", 8.0, 10.0, jitter, loss),
        *_pair("mec1", "mec2", 2.0, 5.0),
        *_pair("mec0", "mec3", 1000.0, 1.0),
    ]
    return TopologySpec(nodes=tuple(_mecs("mec0", "mec1", "mec2", "mec3")), links=tuple(links))


def _one_link(delay: float, jitter: float = 0.0, loss: float = 0.0) -> TopologySpec:
    links = _pair("mec0", "mec1", 1000.0, delay, jitter, loss)
    return TopologySpec(nodes=tuple(_mecs("mec0", "mec1")), links=links)


def _shaper(spec: TopologySpec, seed: int = 0, node: str = "mec0") -> LinkShaper:
    return LinkShaper(spec, node, np.random.default_rng(seed))


# --- LinkShaper.plan -----------------------------------------------------------------------


def test_one_hop_is_serialization_plus_delay() -> None:
    shaper = _shaper(_line())

    due = shaper.plan("mec1", 1000, now=0.0)

    assert due == pytest.approx(0.001 + 0.010)  # 8000 bit at 8 Mbit/s, then 10 ms


def test_plan_is_relative_to_now() -> None:
    shaper = _shaper(_line())

    due = shaper.plan("mec1", 1000, now=123.0)

    assert due == pytest.approx(123.011)


def test_back_to_back_frames_queue_on_the_first_hop() -> None:
    shaper = _shaper(_line())

    first = shaper.plan("mec1", 1000, now=0.0)
    second = shaper.plan("mec1", 1000, now=0.0)
    via_same_link = shaper.plan("mec2", 1000, now=0.0)  # also leaves over mec0->mec1

    assert first == pytest.approx(0.011)
    assert second == pytest.approx(0.001 + 0.001 + 0.010)
    assert via_same_link == pytest.approx(0.003 + 0.010 + 0.004 + 0.005)


def test_other_first_hops_and_a_free_link_do_not_queue() -> None:
    shaper = _shaper(_line())
    shaper.plan("mec1", 1_000_000, now=0.0)  # busy for 1 s

    other_link = shaper.plan("mec3", 1000, now=0.0)
    later = shaper.plan("mec1", 1000, now=5.0)

    assert other_link == pytest.approx(8000 / 1e9 + 0.001)
    assert later == pytest.approx(5.011)


def test_multi_hop_adds_every_hops_serialization_and_delay() -> None:
    shaper = _shaper(_line())

    due = shaper.plan("mec2", 1000, now=0.0)

    assert [(lk.src, lk.dst) for lk in shaper.route("mec2")] == [
        ("mec0", "mec1"),
        ("mec1", "mec2"),
    ]
    assert due == pytest.approx((0.001 + 0.010) + (0.004 + 0.005))


def test_multi_hop_on_a_built_hierarchy() -> None:
    params = HierarchyParams(bs_count=1, mecs_per_bs=2, devices_per_mec=2)
    spec = build_hierarchy(params, seed=3)
    shaper = _shaper(spec, node="dev0-0")
    route = shaper.route("dev1-1")
    nbytes = 50_000

    due = shaper.plan("dev1-1", nbytes, now=0.0)

    assert [lk.src for lk in route] == ["dev0-0", "bs0"]
    assert [lk.dst for lk in route] == ["bs0", "dev1-1"]
    expected = sum(nbytes * 8 / (lk.bandwidth_mbit * 1e6) + lk.delay_ms / 1000 for lk in route)
    assert due == pytest.approx(expected)


def test_plan_to_self_is_immediate() -> None:
    assert _shaper(_line()).plan("mec0", 1000, now=2.0) == 2.0


def test_jitter_has_the_configured_mean_and_sd_and_is_never_negative() -> None:
    delay_ms, jitter_ms = 50.0, 5.0
    shaper = _shaper(_one_link(delay_ms, jitter=jitter_ms), seed=11)

    plans = [shaper.plan("mec1", 0, now=0.0) for _ in range(5000)]

    delays = np.array(plans, dtype=float) * 1000.0
    assert delays.mean() == pytest.approx(delay_ms, rel=0.05)
    assert delays.std() == pytest.approx(jitter_ms, rel=0.05)
    assert delays.min() >= 0.0


def test_jitter_larger_than_delay_is_truncated_at_zero() -> None:
    shaper = _shaper(_one_link(1.0, jitter=5.0), seed=12)

    plans = np.array([shaper.plan("mec1", 0, now=10.0) for _ in range(2000)], dtype=float)

    assert plans.min() == 10.0  # some samples hit the truncation, none go back in time
    assert (plans == 10.0).mean() > 0.3


def test_loss_rate_matches_loss_pct() -> None:
    shaper = _shaper(_one_link(1.0, loss=20.0), seed=5)

    plans = [shaper.plan("mec1", 100, now=0.0) for _ in range(10_000)]

    lost = sum(p is None for p in plans) / len(plans)
    assert lost == pytest.approx(0.2, abs=0.02)


def test_loss_compounds_over_hops() -> None:
    links = [
        *_pair("mec0", "mec1", 1000.0, 1.0, loss=20.0),
        *_pair("mec1", "mec2", 1000.0, 1.0, loss=20.0),
    ]
    spec = TopologySpec(nodes=tuple(_mecs("mec0", "mec1", "mec2")), links=tuple(links))
    shaper = _shaper(spec, seed=6)

    plans = [shaper.plan("mec2", 100, now=0.0) for _ in range(10_000)]

    lost = sum(p is None for p in plans) / len(plans)
    assert lost == pytest.approx(1 - 0.8**2, abs=0.02)


def test_seeded_shapers_plan_identically() -> None:
    spec = _one_link(20.0, jitter=3.0, loss=10.0)
    a, b, c = _shaper(spec, seed=42), _shaper(spec, seed=42), _shaper(spec, seed=43)

    plans_a = [a.plan("mec1", 500, now=i * 0.1) for i in range(500)]
    plans_b = [b.plan("mec1", 500, now=i * 0.1) for i in range(500)]
    plans_c = [c.plan("mec1", 500, now=i * 0.1) for i in range(500)]

    assert plans_a == plans_b
    assert plans_a != plans_c


def test_zero_loss_never_drops() -> None:
    shaper = _shaper(_line(jitter=2.0), seed=1)

    assert all(shaper.plan("mec2", 10, now=0.0) is not None for _ in range(2000))


# --- ShapedTransport -----------------------------------------------------------------------


class _RecordingTransport:
    """Wraps an InMemoryTransport and records (dst, time) of every frame handed to it."""

    def __init__(self, inner: InMemoryTransport) -> None:
        self.node_id = inner.node_id
        self.stats: TransportStats = inner.stats
        self._inner = inner
        self.sent: list[tuple[str, bytes, float]] = []

    def send(self, dst: str, frame: bytes) -> None:
        self.sent.append((dst, frame, time.monotonic()))
        self._inner.send(dst, frame)

    def recv(self, timeout_s: float | None) -> bytes | None:
        return self._inner.recv(timeout_s)

    def close(self) -> None:
        self._inner.close()


def _star() -> TopologySpec:
    """mec0 with a near peer (1 ms) and a far peer (40 ms)."""
    links = [
        *_pair("mec0", "near", 1000.0, 1.0),
        *_pair("mec0", "far", 1000.0, 40.0),
        *_pair("near", "far", 1000.0, 1.0),
    ]
    nodes = (
        NodeSpec("bs0", NodeKind.BS),
        NodeSpec("mec0", NodeKind.MEC, parent="bs0"),
        NodeSpec("near", NodeKind.MEC, parent="bs0"),
        NodeSpec("far", NodeKind.MEC, parent="bs0"),
    )
    return TopologySpec(nodes=nodes, links=tuple(links))


def test_shaped_transport_delivers_by_due_time_not_send_order() -> None:
    net = InMemoryNetwork()
    recording = _RecordingTransport(net.attach("mec0"))
    near, far = net.attach("near"), net.attach("far")
    shaped = ShapedTransport(recording, _shaper(_star()))
    try:
        start = time.monotonic()
        shaped.send("far", b"A")
        shaped.send("near", b"B")

        got_near = near.recv(RECV_TIMEOUT_S)
        got_far = far.recv(RECV_TIMEOUT_S)
        far_elapsed = time.monotonic() - start

        assert got_near == b"B"
        assert got_far == b"A"
        assert far_elapsed >= 0.040
        assert [dst for dst, _, _ in recording.sent] == ["near", "far"]
        assert recording.sent[1][2] - start >= 0.040
    finally:
        shaped.close()


def test_shaped_transport_counts_link_loss_and_flush_waits_for_delivery() -> None:
    net = InMemoryNetwork()
    receiver = net.attach("mec1")
    shaped = ShapedTransport(net.attach("mec0"), _shaper(_one_link(2.0, loss=30.0), seed=9))
    try:
        for i in range(200):
            shaped.send("mec1", i.to_bytes(2, "big"))
        lost = shaped.stats.dropped["link_loss"]

        flushed = shaped.flush(RECV_TIMEOUT_S)
        frames = [receiver.recv(RECV_TIMEOUT_S) for _ in range(200 - lost)]
        extra = receiver.recv(0.05)
        shaped.close()  # joins the sender thread, so the stats are final

        assert flushed is True
        assert shaped.pending() == 0
        assert 30 < lost < 90
        assert None not in frames
        assert extra is None
        received = [int.from_bytes(f, "big") for f in frames if f is not None]
        assert received == sorted(received)  # no jitter: FIFO on the one link
        assert shaped.stats.sent_msgs == 200 - lost
        assert shaped.stats.dropped["link_loss"] == lost
    finally:
        shaped.close()


def test_flush_times_out_while_frames_are_pending() -> None:
    net = InMemoryNetwork()
    net.attach("mec1")
    shaped = ShapedTransport(net.attach("mec0"), _shaper(_one_link(10_000.0)))
    try:
        shaped.send("mec1", b"slow")

        assert shaped.flush(0.05) is False
        assert shaped.pending() == 1
    finally:
        shaped.close()


def test_close_drops_pending_frames_and_detaches() -> None:
    net = InMemoryNetwork()
    receiver = net.attach("mec1")
    shaped = ShapedTransport(net.attach("mec0"), _shaper(_one_link(10_000.0)))
    shaped.send("mec1", b"never")

    shaped.close()

    assert receiver.recv(0.05) is None
    assert net.deliver("mec0", b"x") is False  # the inner transport was closed


class _BlockingTransport:
    """An inner transport whose send blocks until released."""

    def __init__(self) -> None:
        self.node_id = "mec0"
        self.stats = TransportStats()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.sent: list[bytes] = []

    def send(self, dst: str, frame: bytes) -> None:
        self.entered.set()
        self.release.wait(RECV_TIMEOUT_S)
        self.sent.append(frame)

    def recv(self, timeout_s: float | None) -> bytes | None:
        return None

    def close(self) -> None:
        pass


def test_flush_returns_true_only_after_the_last_frame_was_sent() -> None:
    inner = _BlockingTransport()
    shaped = ShapedTransport(inner, _shaper(_one_link(0.0)))
    try:
        shaped.send("mec1", b"frame")
        assert inner.entered.wait(RECV_TIMEOUT_S)

        flushed = shaped.flush(0.2)

        assert not flushed or inner.sent == [b"frame"]
    finally:
        inner.release.set()
        shaped.close()


def test_delay_only_mode_leaves_bandwidth_to_the_kernel() -> None:
    spec = build_hierarchy(HierarchyParams(bs_count=1, mecs_per_bs=1, devices_per_mec=2), 1)
    link = spec.link("dev0-0", "dev0-1")
    shaper = LinkShaper(spec, "dev0-0", np.random.default_rng(0), bandwidth=False)

    first = shaper.plan("dev0-1", 10_000_000, now=0.0)
    second = shaper.plan("dev0-1", 10_000_000, now=0.0)

    assert first == second == pytest.approx(link.delay_ms / 1000)
