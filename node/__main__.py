"""`python -m node CONFIG.json`: run one node daemon as configured by the orchestrator."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from node import runfiles
from node.codec import Codec
from node.config import NodeConfig
from node.daemon import Daemon
from node.keys import NodeKey, Roster
from node.ledger.chains import open_chains
from node.metrics import MetricsWriter
from node.schemes import make_scheme
from node.transport.base import Transport
from node.transport.shaping import LinkShaper, LinkState, ShapedTransport
from node.transport.zmq import ZmqTransport
from topologies.routing import attach as attach_routes

log = logging.getLogger("node")


def build_daemon(config: NodeConfig) -> Daemon:
    """Wire transport, codec, role and metrics for one node."""
    node_dir = Path(config.node_dir)
    # Parsed once per process (by the fork server, before forking: shared copy-on-write).
    shared = runfiles.load(config.shared) if config.shared is not None else None
    topology = config.topology
    me = topology.node(config.node_id)
    transport: Transport = ZmqTransport(  # the endpoints as they are: it skips its own
        config.node_id, config.bind, config.endpoints, config.max_message_bytes
    )
    if config.shaping in ("userspace", "userspace-delay"):
        attach_routes(topology, config.node_id)  # no BFS over the shared links (8 MB at 1,000)
        seed = np.random.SeedSequence([config.seed, *config.node_id.encode()])
        link_state = LinkState(Path(config.links_down_path)) if config.links_down_path else None
        shaper = LinkShaper(
            topology,
            config.node_id,
            np.random.default_rng(seed),
            link_state,
            bandwidth=config.shaping == "userspace",
        )
        transport = ShapedTransport(transport, shaper)
    key = NodeKey.load(Path(config.key_path))
    codec = Codec(
        config.node_id,
        key,
        shared.roster if shared and shared.roster else Roster.from_hex(config.roster),
        config.max_message_bytes,
        first_seq=time.time_ns() // 1000,  # above any sequence number of an earlier start
    )
    metrics = MetricsWriter(
        node_dir / "metrics.jsonl",
        {
            "run": config.run_id,
            "scheme": config.scheme,
            "node": config.node_id,
            "role": str(me.kind),
        },
    )
    chains = open_chains(
        node_dir,
        {cid: config.chains[cid] for cid in config.plan.chains},
        key,
        config.ledger_synchronous,
        shared.genesis_dbs if shared else None,
        light=config.plan.light_chains,
        storage_time_ms=config.ledger_storage_time_ms,
    )
    role = make_scheme(config.scheme, config.scheme_params).role(config.plan)
    return Daemon(config, topology, transport, codec, role, metrics, chains=chains)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m node CONFIG.json", file=sys.stderr)
        return 2
    config = NodeConfig.load(Path(args[0]))
    logging.basicConfig(
        filename=str(Path(config.node_dir) / "node.log"),
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if "torch" in sys.modules:  # forked with torch loaded (a Learner sets it where it imports it)
        from node.learning.train import configure_torch_threads

        configure_torch_threads(1)
    daemon = build_daemon(config)
    code = 0
    try:
        daemon.run()
    except Exception:
        log.exception("node %s failed", config.node_id)
        code = 1
    finally:
        daemon.close()
    return code


if __name__ == "__main__":
    exit_code = main()
    # Skip the interpreter's teardown: with torch loaded it burns seconds of CPU per process
    # (measured: ~3 s each with 13 nodes on 2 cores) while everything is already written.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
