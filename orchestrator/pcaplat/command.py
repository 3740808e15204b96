"""`bcfl pcap latency RUN_DIR [--out DIR]`: the sub-command's parser and handler.

How it works: `add_parsers` adds ``pcap`` (with the ``latency`` action) to bcfl's
sub-parsers; `run` calls `analysis.analyse`, prints one ``bcfl: warning:`` line per problem
file, the per-link-class table and the written files. What makes the analysis impossible is
one ``bcfl: error:`` line (exit 2), never a traceback. Imports nothing heavy until run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_USAGE = 2


def add_parsers(sub: Any) -> None:
    """Add ``bcfl pcap latency`` to bcfl's sub-parsers."""
    pcap = sub.add_parser("pcap", help="analyse a run's packet captures (capture: in a scenario)")
    actions = pcap.add_subparsers(dest="pcap_command", required=True, metavar="ACTION")
    lat = actions.add_parser(
        "latency",
        help="per message and hop: send, wire, one-way delay from the pcaps; latency.csv, "
        "latency_blocks.csv, a per-link-class table, CDFs",
    )
    lat.add_argument("run_dir", type=Path, help="a run directory with pcap/*.pcap")
    lat.add_argument("--out", type=Path, help="where to write the files (default: RUN_DIR)")


def run(args: argparse.Namespace) -> int:
    """Handle ``bcfl pcap ...``."""
    from orchestrator.pcaplat.analysis import PcapLatencyError, analyse
    from orchestrator.pcaplat.summary import table

    try:
        result = analyse(args.run_dir, args.out)
    except PcapLatencyError as exc:
        print(f"bcfl: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # e.g. --out not writable
        print(f"bcfl: error: {exc.filename or args.run_dir}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    for line in result.warnings:
        print(f"bcfl: warning: {line}", file=sys.stderr)
    messages = sum(len(s.observations) for s in result.scans)
    print(
        f"{messages} bcfl messages in {len(result.scans)} capture(s): {len(result.rows)} hop "
        f"rows, {len(result.blocks)} block rows"
    )
    if result.delays:
        print(table(result.delays))
        shaped = {d.delay_shaped_by for d in result.delays}
        if "userspace" in shaped:
            print(
                "note: delay shaped in user space: the sender holds each frame for its whole "
                "route's delay before its socket, so the wire between capture points shows "
                "none of it (propagation_ms); send_to_wire_ms does"
            )
    else:
        print(
            "no message measured end to end (capture its receiver, and let the nodes log "
            "their sends: metrics.message_log, on when capture: is set)"
        )
    for path in result.outputs:
        print(f"wrote {path}")
    return 0
