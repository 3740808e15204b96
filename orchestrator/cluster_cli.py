"""``bcfl cluster check SCENARIO``: where a multi-server run would place its nodes, and
whether its servers are ready.

Prints the placement of the scenario's `cluster:` section (daemons per server and kind, the
base-station bridges each server holds, the links that cross servers) and, unless
``--placement-only``, the preflight of every server (`topologies.backends.cluster.preflight`:
ssh, the project's code and version, Mininet's tools, tunnels, the clock). Exit 0 when every
server is ready, 1 when one is not (each problem on its own line), 2 for a bad scenario.
Imports neither torch nor scikit-learn.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_NOT_READY = 1
EXIT_USAGE = 2


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``cluster`` command and its ``check`` action."""
    cluster = sub.add_parser("cluster", help="the servers of a multi-server run")
    actions = cluster.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check", help="print a scenario's placement on its servers and check the servers"
    )
    check.add_argument("scenario", type=Path, help="scenario YAML file with a cluster: section")
    check.add_argument(
        "--out", type=Path, help="also check that every server can make this run directory"
    )
    check.add_argument(
        "--placement-only", action="store_true", help="print the placement; contact no server"
    )


def cmd_cluster(args: argparse.Namespace) -> int:
    """`bcfl cluster check`."""
    from orchestrator.scenario import ScenarioError, escape, load_scenario
    from topologies import TopologyError
    from topologies.backends.cluster import preflight
    from topologies.backends.cluster.placement import PlacementError, place
    from topologies.builders import build_hierarchy

    try:
        scenario = load_scenario(args.scenario)
        spec = build_hierarchy(scenario.topology.to_params(), scenario.seed)
        placement = place(spec, scenario.cluster)
    except (ScenarioError, TopologyError, PlacementError) as exc:
        msg = escape(str(exc))
        if not msg.startswith(f"{args.scenario}:"):
            msg = f"{args.scenario}: {msg}"
        print(f"bcfl: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    section = scenario.cluster
    print(f"placement ({section.placement}, tunnels: {section.tunnel}):")
    for line in placement.summary(spec, [s.name for s in section.servers]):
        print(f"  {line}")
    if args.placement_only:
        return 0
    print("servers:")
    try:
        run_dir = str(args.out.resolve()) if args.out is not None else None
        reports = preflight.check(
            section, run_dir, preflight.node_image(section, scenario.containers)
        )
    except RuntimeError as exc:
        print(f"bcfl: error: {exc}", file=sys.stderr)
        return EXIT_NOT_READY
    for report in reports:
        print(f"  {report.line()}")
    found = preflight.problems(reports) + preflight.same_machine(reports, section)
    if found:
        print(f"{len(found)} problem{'s' * (len(found) != 1)}:", file=sys.stderr)
        for problem in found:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_NOT_READY
    print(f"all {len(reports)} servers ready")
    return 0
