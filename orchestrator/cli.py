"""The `bcfl` command line."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from topologies.backends.names import BACKENDS, SWITCHES

if TYPE_CHECKING:
    from orchestrator.scenario import Scenario

EXIT_USAGE = 2


def _version() -> str:
    try:
        return metadata.version("bcfl-testbed")
    except metadata.PackageNotFoundError:
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bcfl",
        description="An emulated network testbed for blockchain-based federated learning.",
    )
    p.add_argument("--version", action="version", version=f"bcfl {_version()}")
    p.add_argument("-v", "--verbose", action="store_true", help="log the orchestrator's details")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a scenario and write a run directory")
    run.add_argument("scenario", type=Path, help="scenario YAML file")
    run.add_argument("--backend", choices=BACKENDS, help="override the scenario's backend")
    run.add_argument(
        "--out", type=Path, help="run directory (default runs/NAME-TIME); must be new or empty"
    )
    run.add_argument("--seed", type=int, help="override the scenario's seed (0 ≤ N < 2**32)")
    run.add_argument(
        "--delay-mode",
        choices=("kernel", "userspace"),
        help="mininet: shape delay/jitter/loss with netem (kernel) or in the nodes (userspace)",
    )
    run.add_argument(
        "--switch",
        choices=SWITCHES,
        help="mininet/containernet base stations: Linux bridges or Open vSwitch user space",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    check = sub.add_parser(
        "validate", help="check scenario files, and that this machine can run them, without running"
    )
    check.add_argument("scenario", type=Path, nargs="+", help="scenario YAML file(s)")

    chain = sub.add_parser("chain", help="verify or show the ledgers of a run")
    chain_sub = chain.add_subparsers(dest="chain_command", required=True, metavar="ACTION")
    verify = chain_sub.add_parser(
        "verify", help="re-verify every block of every chain of every node (exit 0 ok, 1 failure)"
    )
    verify.add_argument("dir", type=Path, help="a run directory or one node's directory")
    show = chain_sub.add_parser("show", help="print the blocks of one node's ledger")
    show.add_argument("dir", type=Path, help="a node directory (or a run: its first node)")
    show.add_argument("--height", type=int, help="only this block")
    show.add_argument("--chain", help="the chain to show (default: the node's only chain)")

    sub.add_parser(
        "schemes", help="list the registered schemes and their parameters (scheme: {name: ...})"
    )

    clean = sub.add_parser(
        "clean", help="remove what a crashed mininet run left (only names with its token)"
    )
    clean.add_argument("target", help="a run directory (its meta.json names the token) or a token")

    report = sub.add_parser(
        "report", help="re-make figures, report.html and the per-round table of a run"
    )
    report.add_argument("run_dir", type=Path)
    report.add_argument(
        "--parquet", action="store_true", help="also write the tables as RUN_DIR/*.parquet"
    )

    comp = sub.add_parser("compare", help="several runs side by side: compare.html, figures, CSV")
    comp.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    comp.add_argument("--out", type=Path, help="output directory (default: ./compare)")
    comp.add_argument(
        "--label", action="append", help="a run's name in the figures (once per RUN_DIR, in order)"
    )
    comp.add_argument("--parquet", action="store_true", help="also write the tables as .parquet")

    image = sub.add_parser("image", help="the node image of the containernet backend")
    image_sub = image.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    build = image_sub.add_parser(
        "build", help="build the node image in the Docker engine that DOCKER_HOST names"
    )
    build.add_argument(
        "--offline",
        action="store_true",
        help="no image registry: debootstrap a Debian base and install from local wheels (root)",
    )
    build.add_argument("--tag", help="image tag (default: bcfl-node:VERSION-SOURCEDIGEST)")
    build.add_argument(
        "--mirror", default="", help="--offline: Debian mirror (default: from /etc/apt's sources)"
    )
    image_sub.add_parser(
        "show", help="print the tag the containernet backend uses, and whether it exists"
    )
    _add_control_parsers(sub)
    _add_pcap_parsers(sub)
    _add_cluster_parsers(sub)
    return p


def _add_control_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`bcfl top` and `bcfl control` (the nodes' control plane, issue #17)."""
    top = sub.add_parser("top", help="a live table of a running experiment's nodes")
    top.add_argument("run_dir", type=Path)
    top.add_argument("--once", action="store_true", help="print one table and exit")
    control = sub.add_parser("control", help="ask a node of a running experiment, or steer it")
    control.add_argument("run_dir", type=Path)
    control.add_argument("node", help="node id")
    actions = control.add_subparsers(dest="control_command", required=True, metavar="ACTION")
    actions.add_parser("status", help="print the node's status as JSON")
    actions.add_parser("stop", help="stop the node cleanly (as SIGTERM does)")
    bad = actions.add_parser("malicious", help="make the node malicious from a round")
    bad.add_argument("behaviour", help="an attack (devices) or an edge fault (MECs)")
    bad.add_argument("--param", action="append", default=[], metavar="K=V")
    bad.add_argument("--from-round", type=int, default=1, metavar="R")
    good = actions.add_parser("recover", help="make the node honest again from a round")
    good.add_argument("--from-round", type=int, default=1, metavar="R")


def cmd_top(args: argparse.Namespace) -> int:
    """`bcfl top`."""
    from orchestrator.top import run_top

    return run_top(args.run_dir, args.once)


def cmd_control(args: argparse.Namespace) -> int:
    """`bcfl control`."""
    from orchestrator.control import cmd_control as control

    return control(args)


def _fail(msg: str) -> int:
    print(f"bcfl: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def _load(path: Path, backend: str | None, seed: int | None) -> Scenario:
    from orchestrator.scenario import ScenarioError, load_scenario

    scenario = load_scenario(path)
    updates: dict[str, object] = {}
    if backend is not None:
        updates["backend"] = backend
    if seed is not None:
        if not 0 <= seed < 2**32:
            raise ScenarioError(f"--seed: {seed} is invalid; allowed: 0 ≤ N < 2**32")
        updates["seed"] = seed
    return scenario.model_copy(update=updates) if updates else scenario


def cmd_run(args: argparse.Namespace) -> int:
    """`bcfl run`."""
    from node.forkserver import ForkServerError
    from orchestrator.runner import Run
    from orchestrator.scenario import ScenarioError
    from topologies import TopologyError

    try:
        scenario = _load(args.scenario, args.backend, args.seed)
        if args.delay_mode is not None:
            scenario = scenario.model_copy(update={"delay_mode": args.delay_mode})
        if args.switch is not None:
            scenario = scenario.model_copy(update={"switch": args.switch})
        out = args.out or Path("runs") / f"{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            return _fail(
                f"--out: {str(out)!r} exists and is not an empty directory; choose a new one"
            )
        run = Run(scenario, out, progress=not args.quiet)
    except (ScenarioError, TopologyError, RuntimeError) as exc:  # incl. MininetUnavailable
        return _fail(str(exc))
    n = len(run.topology.daemons())
    if scenario.backend == "local":
        shaping = f"shaping: {scenario.shaping}"
    else:
        where = "netem" if scenario.delay_mode == "kernel" else "the nodes"
        shaping = f"bandwidth by tc, delay by {where}, switch {scenario.switch}"
    print(
        f"bcfl: running {scenario.name!r}: scheme {scenario.scheme.name}, "
        f"backend {scenario.backend} ({shaping}), {n} node processes, "
        f"{scenario.training.rounds} rounds -> {out}",
        file=sys.stderr,
    )
    try:
        result = run.execute()
    except ForkServerError as exc:  # nothing started; execute() has stopped what it began
        print(f"bcfl: error: {exc}", file=sys.stderr)
        return 1
    for failure in result.failures:
        print(failure.line(), file=sys.stderr)
    if result.problem is not None:
        print(f"bcfl: error: {result.problem}", file=sys.stderr)
    acc = "n/a" if result.final_accuracy is None else f"{result.final_accuracy:.4f}"
    if result.problem is not None:
        acc = "n/a (no device contributed)"
    print(
        f"bcfl: {result.rounds_completed}/{scenario.training.rounds} rounds in "
        f"{result.elapsed_s:.1f}s, final test accuracy {acc}; results in {out}",
        file=sys.stderr,
    )
    _write_run_report(out)
    if result.interrupted:
        return 130
    complete = result.rounds_completed == scenario.training.rounds
    return 0 if complete and not result.failures and result.problem is None else 1


def _write_run_report(out: Path) -> None:
    """The run's report.html, at the end of `bcfl run` (~1 s); a failure is a warning: the
    run's results are already written, and `bcfl report` can make it again."""
    from orchestrator.html_report import write_report
    from orchestrator.tables import TableError

    try:
        print(f"bcfl: report: {write_report(out)}", file=sys.stderr)
    except (TableError, OSError, ValueError) as exc:
        print(f"bcfl: warning: no report.html ({exc}); try bcfl report {out}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    """`bcfl validate FILE...`: `FILE: ok (...)` per good file, one error line per bad one;
    exit 2 if any failed. Imports neither torch nor scikit-learn."""
    from orchestrator.preflight import check as preflight
    from orchestrator.scenario import ScenarioError, escape, load_scenario
    from topologies import TopologyError
    from topologies.builders import build_hierarchy

    failed = 0
    for path in args.scenario:
        try:
            scenario = load_scenario(path)
            spec = build_hierarchy(scenario.topology.to_params(), scenario.seed)
            found = preflight(scenario, spec)
        except (ScenarioError, TopologyError) as exc:
            msg = escape(str(exc))
            if not msg.startswith(f"{path}:"):
                msg = f"{path}: {msg}"
            _fail(msg if len(msg) <= 400 else msg[:397] + "...")
            failed += 1
            continue
        print(f"{path}: ok ({found.summary()})")
    return EXIT_USAGE if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    """`bcfl report`."""
    from orchestrator.collect import collect
    from orchestrator.html_report import write_report
    from orchestrator.report import plot_accuracy, summary_table
    from orchestrator.tables import TableError, load_run, require_pyarrow, write_parquet

    run_dir: Path = args.run_dir
    if not (run_dir / "nodes").is_dir():
        return _fail(f"run_dir: {str(run_dir)!r} is not a run directory (no nodes/ inside)")
    try:
        if args.parquet:
            require_pyarrow()
        collect(run_dir)
        tables = load_run(run_dir)
        print(summary_table(run_dir, tables))
        print(f"figure: {plot_accuracy(run_dir, tables)}")
        print(f"report: {write_report(run_dir, tables)}")
        if args.parquet:
            for path in write_parquet(tables.frames(), run_dir):
                print(f"table: {path}")
    except TableError as exc:
        return _fail(str(exc))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """`bcfl compare RUN_DIR...`."""
    from orchestrator.compare import DEFAULT_OUT, compare
    from orchestrator.tables import TableError

    try:
        result = compare(args.run_dirs, args.out or DEFAULT_OUT, args.label, args.parquet)
    except TableError as exc:
        return _fail(str(exc))
    print(result.summary.drop(columns="run_dir").to_string(index=False))
    print("\n".join(str(p) for p in result.paths))
    return 0


def cmd_chain(args: argparse.Namespace) -> int:
    """`bcfl chain verify|show`."""
    from orchestrator.chain_cli import ChainCliError, show, verify

    try:
        if args.chain_command == "verify":
            ok, lines = verify(args.dir)
            print("\n".join(lines))
            return 0 if ok else 1
        print("\n".join(show(args.dir, args.height, args.chain)))
    except ChainCliError as exc:
        return _fail(str(exc))
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    """`bcfl clean`."""
    import json

    from topologies.backends.docker_engine import remove_run_containers
    from topologies.backends.mininet import clean

    token = args.target
    meta = Path(args.target) / "meta.json"
    servers: list[dict[str, object]] = []
    if meta.is_file():
        data = json.loads(meta.read_text())
        token = data.get("run_token", "")
        servers = data.get("cluster", {}).get("servers", [])
    try:
        removed = clean(token) + remove_run_containers(token)
    except ValueError as exc:
        return _fail(f"target: {exc}")
    if servers:  # a mininet-cluster run: the other servers too
        from topologies.backends.cluster.cleanup import clean_servers

        removed += clean_servers(token, servers)
    print("\n".join(removed) if removed else f"nothing left by run token {token!r}")
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    """`bcfl image build|show`."""
    from topologies.backends import image
    from topologies.backends.docker_engine import DockerUnavailable, client

    try:
        if args.image_command == "build":
            print(image.build(args.offline, args.tag, args.mirror))
            return 0
        tag = image.default_tag()
        present = bool(client().images.list(name=tag))
        print(f"{tag} {'present' if present else 'missing (bcfl image build [--offline])'}")
        return 0 if present else 1
    except (image.ImageError, DockerUnavailable) as exc:
        print(f"bcfl: error: {exc}", file=sys.stderr)
        return 1


def cmd_schemes(args: argparse.Namespace) -> int:
    """`bcfl schemes`: every registered scheme, what it does, and its parameters."""
    from node.schemes import SCHEMES

    for name, cls in SCHEMES.items():
        print(f"{name}\n  {cls.summary}")
        params = cls.describe_params()
        if not params:
            print("  parameters: none (scheme: NAME)")
        for field, kind, default, description in params:
            print(f"  {field}: {kind} = {default}" + (f"  # {description}" if description else ""))
    return 0


def _add_cluster_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from orchestrator.cluster_cli import add_parsers

    add_parsers(sub)


def _add_pcap_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`bcfl pcap latency` (issue #17 part 1)."""
    from orchestrator.pcaplat.command import add_parsers

    add_parsers(sub)


def cmd_cluster(args: argparse.Namespace) -> int:
    """`bcfl cluster check`."""
    from orchestrator.cluster_cli import cmd_cluster as run

    return run(args)


def cmd_pcap(args: argparse.Namespace) -> int:
    """`bcfl pcap latency RUN_DIR`."""
    from orchestrator.pcaplat.command import run

    return run(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `bcfl` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handlers = {
        "run": cmd_run,
        "validate": cmd_validate,
        "report": cmd_report,
        "compare": cmd_compare,
        "chain": cmd_chain,
        "clean": cmd_clean,
        "image": cmd_image,
        "schemes": cmd_schemes,
        "pcap": cmd_pcap,
        "top": cmd_top,
        "control": cmd_control,
        "cluster": cmd_cluster,
    }
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
