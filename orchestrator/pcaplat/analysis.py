"""`bcfl pcap latency RUN_DIR`: every capture of a run -> latency.csv, latency_blocks.csv,
the per-link-class table and two figures.

How it works
------------
`analyse` checks the run directory (one `PcapLatencyError` line naming the file or folder
for what makes the analysis impossible: no such directory, an empty one, no ``pcap/``, no
capture in it, no ``topology.json``), scans each ``pcap/*.pcap`` / ``*.pcapng``
(`capture.scan`; a file that is no capture, is truncated or holds no bcfl traffic gives a
warning naming it, and the others are still used), then joins the observations into hop rows
(`latency.hop_rows`) and block rows (`blocks.block_rows`), and writes the outputs to `out`
(default: the run directory).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import astuple, dataclass, field
from pathlib import Path

from orchestrator.pcaplat import blocks, latency, summary
from orchestrator.pcaplat.capture import Observation, Scan, scan
from orchestrator.pcaplat.runinfo import RunDirError, RunInfo, load_run
from orchestrator.pcaplat.streams import PcapError

CAPTURE_GLOBS = ("*.pcap", "*.pcapng")


class PcapLatencyError(Exception):
    """The analysis cannot run; a one-line message naming the file or folder."""


@dataclass
class Analysis:
    """What `analyse` produced."""

    rows: list[latency.HopRow]
    blocks: list[blocks.BlockRow]
    delays: list[summary.ClassDelay]
    scans: list[Scan]
    warnings: list[str] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)


def capture_files(run_dir: Path) -> list[Path]:
    """The run's capture files; raises PcapLatencyError if there are none."""
    if not run_dir.is_dir():
        raise PcapLatencyError(f"{run_dir}: no such run directory")
    if not any(run_dir.iterdir()):
        raise PcapLatencyError(f"{run_dir}: empty directory (not a run directory)")
    pcap_dir = run_dir / "pcap"
    if not pcap_dir.is_dir():
        raise PcapLatencyError(
            f"{pcap_dir}: missing; the run captured nothing (set `capture:` in the scenario, "
            "mininet or containernet backend)"
        )
    files = sorted({p for g in CAPTURE_GLOBS for p in pcap_dir.glob(g) if p.is_file()})
    if not files:
        raise PcapLatencyError(f"{pcap_dir}: no .pcap files in it")
    return files


def analyse(run_dir: Path, out: Path | None = None) -> Analysis:
    """Analyse every capture of `run_dir`; write the CSVs and figures to `out` (default:
    the run directory). Raises PcapLatencyError (one line) when nothing can be analysed."""
    files = capture_files(run_dir)
    try:
        info = load_run(run_dir)
    except RunDirError as exc:
        raise PcapLatencyError(str(exc)) from None
    logging.getLogger("scapy").setLevel(logging.ERROR)  # its per-packet warnings: ours name files
    warnings: list[str] = []
    scans: list[Scan] = []
    for path in files:
        try:
            result = scan(path)
        except PcapError as exc:
            warnings.append(str(exc))
            continue
        scans.append(result)
        warnings.extend(result.warnings())
        if result.observations and info.capture_point(path.stem) is None:
            warnings.append(
                f"{path}: its name is neither a node id nor NODE_PEER; its messages are not "
                "placed on a route"
            )
    observed = [(info.capture_point(s.path.stem), o) for s in scans for o in s.observations]
    if not observed:
        raise PcapLatencyError(
            f"{run_dir / 'pcap'}: no bcfl messages in {len(files)} capture file(s)"
            + (f" ({warnings[0]})" if len(warnings) == 1 else "")
        )
    rows = latency.hop_rows(info, observed)
    block_rows = blocks.block_rows(run_dir, _arrivals(info, observed))
    delays = summary.class_delays(rows)
    target = run_dir if out is None else out
    target.mkdir(parents=True, exist_ok=True)
    outputs = [
        _write_csv(target / latency.LATENCY_CSV, latency.COLUMNS, [astuple(r) for r in rows]),
        _write_csv(
            target / blocks.LATENCY_BLOCKS_CSV, blocks.COLUMNS, [astuple(r) for r in block_rows]
        ),
        summary.plot_cdf(rows, delays, target),
        summary.plot_blocks(block_rows, target),
    ]
    return Analysis(rows, block_rows, delays, scans, warnings, outputs)


def _arrivals(
    info: RunInfo, observed: list[tuple[str | None, Observation]]
) -> list[tuple[str, Observation]]:
    """The messages each node's own capture saw addressed to it."""
    out = []
    for point, obs in observed:
        if point is not None and info.node_of_ip.get(obs.msg.key.dst) == point:
            out.append((point, obs))
    return out


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[tuple[object, ...]]) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(v) for v in row])
    tmp.replace(path)
    return path


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return value
