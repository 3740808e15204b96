"""`bcfl pcap latency RUN_DIR`: the table and files on a good run, and one line naming the
file (never a traceback) on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from orchestrator.cli import main
from tests.unit.test_pcaplat_helpers import (
    IPS,
    T0,
    make_run_dir,
    segments,
    tcp_packets,
    write_pcap,
    zmtp_stream,
)
from tests.unit.test_pcaplat_latency import build


def bcfl(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bcfl: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_a_captured_run_prints_the_table_and_writes_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(tmp_path / "run")
    argv = ["pcap", "latency", str(tmp_path / "run"), "--out", str(tmp_path / "o")]
    code, out, err = bcfl(argv, capsys)
    assert code == 0, err
    assert "cellular+fronthaul" in out and "configured" in out and "p95" in out
    assert "wrote" in out and (tmp_path / "o" / "latency.csv").is_file()
    assert err == ""


def test_a_directory_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = bcfl(["pcap", "latency", str(tmp_path / "nope")], capsys)
    assert code == 2 and "nope: no such run directory" in one_error_line(err)


def test_an_empty_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = bcfl(["pcap", "latency", str(tmp_path)], capsys)
    assert code == 2 and f"{tmp_path}: empty directory" in one_error_line(err)


def test_a_run_without_pcap_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run_dir(tmp_path)
    code, _, err = bcfl(["pcap", "latency", str(tmp_path)], capsys)
    line = one_error_line(err)
    assert code == 2 and f"{tmp_path / 'pcap'}: missing" in line and "capture:" in line


def test_a_run_with_no_pcaps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run_dir(tmp_path)
    (tmp_path / "pcap").mkdir()
    (tmp_path / "pcap" / "README").write_text("nothing")
    code, _, err = bcfl(["pcap", "latency", str(tmp_path)], capsys)
    assert code == 2 and "no .pcap files" in one_error_line(err)


def test_a_pcap_without_a_topology(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build(tmp_path / "run")
    (tmp_path / "run" / "topology.json").unlink()
    code, _, err = bcfl(["pcap", "latency", str(tmp_path / "run")], capsys)
    assert code == 2 and "topology.json: missing" in one_error_line(err)


def test_a_pcap_from_another_program_warns_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(tmp_path / "run")
    udp = Ether() / IP(src="10.1.1.1", dst="10.1.1.2") / UDP(sport=53, dport=53) / Raw(b"q" * 40)
    udp.time = T0
    http = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"
    web = tcp_packets("10.1.1.1", "10.1.1.2", http, segments(http, 1448), dport=80)
    write_pcap(tmp_path / "run" / "pcap" / "wireshark.pcap", [udp, *web])
    code, out, err = bcfl(["pcap", "latency", str(tmp_path / "run")], capsys)
    assert code == 0 and "cellular+fronthaul" in out
    (warning,) = [line for line in err.splitlines() if "wireshark.pcap" in line]
    assert warning.startswith("bcfl: warning: ") and "no ZMTP streams" in warning


def test_only_pcaps_from_another_program_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_run_dir(tmp_path)
    http = b"HTTP/1.1 200 OK\r\n\r\n" * 10
    write_pcap(
        tmp_path / "pcap" / "other.pcap",
        tcp_packets("10.1.1.1", "10.1.1.2", http, segments(http, 100), dport=80),
    )
    code, _, err = bcfl(["pcap", "latency", str(tmp_path)], capsys)
    line = one_error_line(err)
    assert code == 2 and "no bcfl messages in 1 capture file" in line and "other.pcap" in line


def test_a_file_that_is_no_capture_warns_and_the_rest_is_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(tmp_path / "run")
    (tmp_path / "run" / "pcap" / "broken.pcap").write_bytes(b"\x00garbage" * 10)
    code, _, err = bcfl(["pcap", "latency", str(tmp_path / "run")], capsys)
    assert code == 0
    (warning,) = [line for line in err.splitlines() if "broken.pcap" in line]
    assert "not a readable pcap" in warning and "Traceback" not in err


def test_a_truncated_pcap_warns_and_uses_what_was_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(tmp_path / "run")
    pcap = tmp_path / "run" / "pcap" / "mec0.pcap"
    pcap.write_bytes(pcap.read_bytes()[:-700])  # the last packet cut short
    code, out, err = bcfl(["pcap", "latency", str(tmp_path / "run")], capsys)
    assert code == 0 and "cellular+fronthaul" in out
    (warning,) = [line for line in err.splitlines() if "mec0.pcap" in line]
    assert "truncated" in warning and "using what was read" in warning


def test_a_pcap_cut_inside_its_file_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_run_dir(tmp_path)
    stream = zmtp_stream(b"x")
    whole = write_pcap(
        tmp_path / "pcap" / "dev0-0.pcap",
        tcp_packets(IPS["dev0-0"], IPS["mec0"], stream, segments(stream, 1448)),
    )
    whole.write_bytes(whole.read_bytes()[:10])
    code, _, err = bcfl(["pcap", "latency", str(tmp_path)], capsys)
    assert code == 2 and "dev0-0.pcap" in one_error_line(err)
