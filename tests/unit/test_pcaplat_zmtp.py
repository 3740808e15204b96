"""orchestrator.pcaplat.zmtp and .capture: ZMTP messages from reassembled streams, and the
bcfl headers in them, on pcaps built with real codec frames."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from orchestrator.pcaplat.capture import scan
from orchestrator.pcaplat.streams import Chunk, FlowKey
from orchestrator.pcaplat.zmtp import ZmtpMessage, ZmtpParser
from tests.unit.test_pcaplat_helpers import (
    IPS,
    T0,
    Seg,
    bcfl_frame,
    frame,
    greeting,
    ready,
    segments,
    tcp_packets,
    write_pcap,
    zmtp_stream,
)

KEY = FlowKey("10.0.0.1", 1, "10.0.0.2", 2)
MODEL = {"round": 1, "weights": np.arange(12000, dtype=np.float32)}  # a 48 kB update


def parse(stream: bytes, cuts: list[int], head: int = 128) -> tuple[ZmtpParser, list[ZmtpMessage]]:
    """Feed `stream` cut at `cuts`, chunk i captured at i ms."""
    out: list[ZmtpMessage] = []
    parser = ZmtpParser(KEY, out.append, head)
    bounds = [0, *cuts, len(stream)]
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        parser.feed(Chunk(a, b - a, float(i), stream[a:b]))
    parser.close()
    return parser, out


def test_greeting_and_commands_are_skipped_and_messages_reported() -> None:
    stream = zmtp_stream(b"hello", b"x" * 300)
    parser, msgs = parse(stream, [])
    assert parser.greeted and parser.commands == 1 and not parser.incomplete
    assert [m.size for m in msgs] == [5, 300]
    assert msgs[0].head == b"hello" and msgs[1].head == b"x" * 128
    start = len(greeting()) + len(ready())
    assert msgs[0].first_offset == start and msgs[0].last_offset == start + 2 + 5 - 1
    assert msgs[1].first_offset == start + 7 and msgs[1].last_offset == len(stream) - 1


def test_a_message_split_across_many_chunks_has_the_first_and_last_chunks_times() -> None:
    stream = zmtp_stream(b"y" * 5000)
    cuts = list(range(100, len(stream), 100))
    _, msgs = parse(stream, cuts)
    (msg,) = msgs
    start = len(greeting()) + len(ready())
    assert msg.first_ms == float(start // 100) and msg.last_ms == float(len(cuts))
    assert msg.size == 5000 and msg.head == b"y" * 128


def test_a_header_split_between_chunks_is_read() -> None:
    stream = zmtp_stream(b"z" * 1000)
    start = len(greeting()) + len(ready())
    _, msgs = parse(stream, [10, start + 1, start + 4])  # inside the 8-byte LONG size
    assert [m.size for m in msgs] == [1000]
    assert msgs[0].first_ms == 1.0


def test_a_multi_part_message_is_one_message() -> None:
    stream = greeting() + ready() + frame(b"part1", more=True) + frame(b"part2")
    _, msgs = parse(stream, [])
    (msg,) = msgs
    assert msg.parts == 2 and msg.size == 10 and msg.head == b"part1part2"


def test_a_stream_that_is_not_zmtp_is_marked_and_yields_nothing() -> None:
    parser, msgs = parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 5, [])
    assert parser.not_zmtp and not parser.greeted and msgs == []


def test_a_frame_header_the_capture_lacks_loses_the_rest_without_raising() -> None:
    stream = zmtp_stream(b"a" * 100, b"b" * 100)
    out: list[ZmtpMessage] = []
    parser = ZmtpParser(KEY, out.append)
    cut = len(greeting()) + len(ready()) + 102  # the second frame's header
    parser.feed(Chunk(0, cut, 0.0, stream[:cut]))
    parser.feed(Chunk(cut, len(stream) - cut, 1.0, b""))  # not captured
    assert [m.size for m in out] == [100]
    assert parser.lost and parser.lost_bytes == len(stream) - cut


def test_a_payload_the_capture_lacks_gives_a_short_head_and_keeps_the_framing() -> None:
    stream = zmtp_stream(b"c" * 500, b"d" * 10)
    start = len(greeting()) + len(ready())
    out: list[ZmtpMessage] = []
    parser = ZmtpParser(KEY, out.append)
    parser.feed(Chunk(0, start + 9 + 20, 0.0, stream[: start + 9 + 20]))
    rest = len(stream) - (start + 29)
    tail = stream[start + 29 :]
    parser.feed(Chunk(start + 29, rest, 1.0, b""))  # the body's rest: not captured
    parser.close()
    assert [m.head for m in out] == [b"c" * 20]
    assert out[0].size == 500 and parser.lost  # the next header was in the uncaptured part
    assert tail.endswith(b"d" * 10)


def _pcap_of(tmp_path: Path, stream: bytes, segs: list[Seg]) -> Path:
    packets = tcp_packets(IPS["dev0-0"], IPS["mec0"], stream, segs)
    return write_pcap(tmp_path / "dev0-0.pcap", packets)


def test_scan_identifies_a_real_update_split_across_many_segments(tmp_path: Path) -> None:
    update = bcfl_frame("dev0-0", "update", MODEL, seq=41)
    stream = zmtp_stream(update)
    scanned = scan(_pcap_of(tmp_path, stream, segments(stream, 1448, t0=1.0)))
    (obs,) = scanned.observations
    assert (obs.header.type, obs.header.sender, obs.header.seq) == ("update", "dev0-0", 41)
    assert obs.msg.size == len(update) and len(update) > 20 * 1448
    assert obs.msg.first_ms == pytest.approx((T0 + 1.0) * 1000)
    n = len(segments(stream, 1448))
    assert obs.msg.last_ms == pytest.approx((T0 + 1.0 + (n - 1) * 0.001) * 1000)
    assert scanned.warnings() == [] and scanned.zmtp_streams == 1


def test_scan_finds_two_messages_in_one_segment(tmp_path: Path) -> None:
    a = bcfl_frame("dev0-0", "hello", {}, seq=1)
    b = bcfl_frame("dev0-0", "chain.status", {"height": 3}, seq=2)
    stream = zmtp_stream(a, b)
    segs = [Seg(0, 64, 0.5), Seg(64, len(stream) - 64, 0.6)]  # greeting, then all the rest
    scanned = scan(_pcap_of(tmp_path, stream, segs))
    assert [(o.header.type, o.header.seq) for o in scanned.observations] == [
        ("hello", 1),
        ("chain.status", 2),
    ]
    first, second = (o.msg for o in scanned.observations)
    assert first.first_ms == second.last_ms == pytest.approx((T0 + 0.6) * 1000)


def test_scan_with_retransmissions_and_reordering_sees_each_message_once(tmp_path: Path) -> None:
    frames = [bcfl_frame("dev0-0", "update", MODEL, seq=s) for s in (7, 8)]
    stream = zmtp_stream(*frames)
    segs = segments(stream, 1448, t0=1.0)
    segs.insert(5, Seg(segs[2].offset, segs[2].length, 1.5))  # a retransmission
    segs[8].t, segs[9].t = segs[9].t, segs[8].t  # two segments captured out of order
    scanned = scan(_pcap_of(tmp_path, stream, segs))
    assert [o.header.seq for o in scanned.observations] == [7, 8]
    assert all(o.msg.size == len(frames[0]) for o in scanned.observations)
    assert scanned.duplicates == 1 and scanned.out_of_order >= 1


def test_scan_of_a_truncated_capture_counts_unidentified_messages_never_raises(
    tmp_path: Path,
) -> None:
    frames = [bcfl_frame("dev0-0", "update", MODEL, seq=s) for s in (1, 2, 3)]
    stream = zmtp_stream(*frames)
    hello = len(greeting()) + len(ready())
    # as ZeroMQ sends them: the greeting's first 10 bytes, its rest, READY; then the messages
    # in full-size segments of which a 200-byte snaplen kept the first 200 payload bytes
    segs = [Seg(0, 10, 0.0), Seg(10, 54, 0.001), Seg(64, hello - 64, 0.002)]
    segs += [
        Seg(hello + s.offset, s.length, 0.01 + s.t, caplen=200)
        for s in segments(stream[hello:], 1448)
    ]
    scanned = scan(_pcap_of(tmp_path, stream, segs))
    # the first message's header is in its segment's first bytes: identified; the second
    # frame's header lies in bytes the capture lacks: the rest of the stream is unparsed
    assert [o.header.seq for o in scanned.observations] == [1]
    assert scanned.lost_bytes > 0
    (warning,) = scanned.warnings()
    assert "dev0-0.pcap" in warning and "snaplen" in warning


def test_scan_of_a_zmtp_stream_without_bcfl_frames_counts_them_unidentified(
    tmp_path: Path,
) -> None:
    stream = zmtp_stream(b"\x93\x01\x02\x03", b"plain text")
    scanned = scan(_pcap_of(tmp_path, stream, segments(stream, 1448)))
    assert scanned.observations == [] and scanned.unidentified == 2
    (warning,) = scanned.warnings()
    assert "dev0-0.pcap" in warning and "no bcfl messages" in warning
