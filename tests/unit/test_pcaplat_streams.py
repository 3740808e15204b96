"""orchestrator.pcaplat.streams: TCP reassembly from pcaps the tests write with scapy."""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from orchestrator.pcaplat.streams import (
    Chunk,
    FlowKey,
    PcapError,
    ReadResult,
    Reassembler,
    cut_short,
    tcp_segments,
)
from tests.unit.test_pcaplat_helpers import T0, Seg, segments, tcp_packets, write_pcap

STREAM = bytes(range(256)) * 20  # 5,120 bytes


class Collect:
    """A sink that keeps every chunk."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []
        self.closed = False

    def feed(self, chunk: Chunk) -> None:
        self.chunks.append(chunk)

    def close(self) -> None:
        self.closed = True

    def data(self) -> bytes:
        return b"".join(c.data for c in self.chunks)


def reassemble(path: Path) -> tuple[dict[FlowKey, Collect], Reassembler, ReadResult]:
    sinks: dict[FlowKey, Collect] = {}

    def new_sink(key: FlowKey) -> Collect:
        sinks[key] = Collect()
        return sinks[key]

    r = Reassembler(new_sink)
    result = ReadResult()
    for seg in tcp_segments(path, result):
        r.add(seg)
    r.finish()
    return sinks, r, result


def only(sinks: dict[FlowKey, Collect]) -> Collect:
    assert len(sinks) == 1
    return next(iter(sinks.values()))


def test_in_order_segments_give_the_stream_with_each_segments_time(tmp_path: Path) -> None:
    segs = segments(STREAM, 1000, t0=1.0, step=0.002)
    pcap = write_pcap(tmp_path / "a.pcap", tcp_packets("10.0.0.1", "10.0.0.2", STREAM, segs))
    sinks, r, result = reassemble(pcap)
    sink = only(sinks)
    assert sink.data() == STREAM and sink.closed
    assert [c.offset for c in sink.chunks] == [0, 1000, 2000, 3000, 4000, 5000]
    assert sink.chunks[-1].ts_ms == pytest.approx((T0 + 1.010) * 1000)
    assert (r.duplicates, r.out_of_order, r.gaps) == (0, 0, 0)
    assert result.warning is None and result.segments == 7  # the SYN and six segments
    assert next(iter(sinks)) == FlowKey("10.0.0.1", 40000, "10.0.0.2", 5555)


def test_a_retransmission_is_ignored_and_the_first_copys_time_kept(tmp_path: Path) -> None:
    segs = segments(STREAM, 1000, t0=1.0, step=0.002)
    segs.insert(3, Seg(1000, 1000, 1.5))  # the second segment again, 0.5 s later
    segs.append(Seg(500, 1000, 2.0))  # a retransmission straddling two segments
    pcap = write_pcap(tmp_path / "a.pcap", tcp_packets("10.0.0.1", "10.0.0.2", STREAM, segs))
    sinks, r, _ = reassemble(pcap)
    sink = only(sinks)
    assert sink.data() == STREAM
    assert sink.chunks[1].ts_ms == pytest.approx((T0 + 1.002) * 1000)
    assert r.duplicates == 2


def test_out_of_order_segments_are_buffered_until_the_gap_fills(tmp_path: Path) -> None:
    segs = segments(STREAM, 1000, t0=1.0, step=0.002)
    segs[1], segs[3] = segs[3], segs[1]  # 3000.. before 1000..
    segs[1].t, segs[3].t = segs[3].t, segs[1].t
    pcap = write_pcap(tmp_path / "a.pcap", tcp_packets("10.0.0.1", "10.0.0.2", STREAM, segs))
    sinks, r, _ = reassemble(pcap)
    sink = only(sinks)
    assert sink.data() == STREAM
    assert [c.offset for c in sink.chunks] == [0, 1000, 2000, 3000, 4000, 5000]
    by_offset = {c.offset: c.ts_ms for c in sink.chunks}
    assert by_offset[3000] == pytest.approx((T0 + 1.002) * 1000)  # when it was captured
    assert r.out_of_order >= 1


def test_sequence_numbers_wrap_around(tmp_path: Path) -> None:
    segs = segments(STREAM, 1000)
    packets = tcp_packets("10.0.0.1", "10.0.0.2", STREAM, segs, isn=(1 << 32) - 2500)
    sinks, _, _ = reassemble(write_pcap(tmp_path / "a.pcap", packets))
    assert only(sinks).data() == STREAM


def test_a_truncated_capture_keeps_the_offsets_from_the_headers(tmp_path: Path) -> None:
    segs = [Seg(s.offset, s.length, s.t, caplen=100) for s in segments(STREAM, 1000)]
    pcap = write_pcap(tmp_path / "a.pcap", tcp_packets("10.0.0.1", "10.0.0.2", STREAM, segs))
    sink = only(reassemble(pcap)[0])
    assert [c.offset for c in sink.chunks] == [0, 1000, 2000, 3000, 4000, 5000]
    assert [len(c.data) for c in sink.chunks] == [100] * 5 + [100]
    assert sink.chunks[2].data == STREAM[2000:2100]
    assert sum(c.length for c in sink.chunks) == len(STREAM)


def test_a_segment_the_capture_missed_becomes_unknown_bytes(tmp_path: Path) -> None:
    segs = segments(STREAM, 1000)
    del segs[2]
    pcap = write_pcap(tmp_path / "a.pcap", tcp_packets("10.0.0.1", "10.0.0.2", STREAM, segs))
    sinks, r, _ = reassemble(pcap)
    sink = only(sinks)
    gap = [c for c in sink.chunks if c.offset == 2000]
    assert gap and gap[0].length == 1000 and gap[0].data == b""
    assert sink.chunks[-1].data == STREAM[5000:] and r.gaps == 1


def test_a_stream_without_a_captured_syn_starts_at_its_first_segment(tmp_path: Path) -> None:
    segs = segments(STREAM, 1000)
    packets = tcp_packets("10.0.0.1", "10.0.0.2", STREAM, segs, syn_t=None)
    assert only(reassemble(write_pcap(tmp_path / "a.pcap", packets))[0]).data() == STREAM


def test_each_direction_is_its_own_stream(tmp_path: Path) -> None:
    back = b"pong" * 10
    packets = tcp_packets("10.0.0.1", "10.0.0.2", STREAM, segments(STREAM, 1460))
    packets += tcp_packets(
        "10.0.0.2", "10.0.0.1", back, segments(back, 1460), sport=5555, dport=40000
    )
    sinks, _, _ = reassemble(write_pcap(tmp_path / "a.pcap", packets))
    assert sinks[FlowKey("10.0.0.1", 40000, "10.0.0.2", 5555)].data() == STREAM
    assert sinks[FlowKey("10.0.0.2", 5555, "10.0.0.1", 40000)].data() == back


def test_non_tcp_packets_are_skipped(tmp_path: Path) -> None:
    udp = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=53, dport=53) / Raw(b"x" * 50)
    udp.time = T0
    sinks, _, result = reassemble(write_pcap(tmp_path / "a.pcap", [udp]))
    assert sinks == {} and result.packets == 1 and result.segments == 0


def test_a_file_cut_mid_packet_warns_and_keeps_what_was_read(tmp_path: Path) -> None:
    segs = segments(STREAM, 1000)
    pcap = write_pcap(tmp_path / "a.pcap", tcp_packets("10.0.0.1", "10.0.0.2", STREAM, segs))
    assert not cut_short(pcap)
    data = pcap.read_bytes()
    pcap.write_bytes(data[:-300])
    assert cut_short(pcap)
    sinks, _, result = reassemble(pcap)
    assert result.warning is not None and str(pcap) in result.warning
    assert only(sinks).data()[:4000] == STREAM[:4000]


def test_a_file_that_is_no_capture_raises_pcap_error_naming_it(tmp_path: Path) -> None:
    junk = tmp_path / "notes.pcap"
    junk.write_bytes(b"this is a text file, not a capture\n" * 4)
    with pytest.raises(PcapError, match=r"notes\.pcap"):
        list(tcp_segments(junk, ReadResult()))
