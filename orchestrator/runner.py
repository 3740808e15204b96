"""One run: build the topology, write node configs and keys, start the daemons, follow
progress, stop everything it started, and collect metrics, meta.json and figures.

With the control plane on (`Run.control_plane`), every node starts with ``await_start`` and
no behaviours in its config: once the backend has started the processes, `_deliver` waits
for each node's socket (DELIVER_WORKERS at a time, up to startup_timeout_s), sends its
``malicious``/``recover`` entries in round order with ``SetBehaviour``, then ``Start``
(`orchestrator.control.deliver_schedule`); a restarted process gets the same. A node that
exits meanwhile is left to the exit watch; one that stays unreachable is named, killed, and
counted as a node failure (never a hang).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import secrets
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from node.config import Behaviour, LearningConfig, NodeConfig
from node.keys import NodeKey, Roster
from node.learning.privacy import gaussian_sigma
from node.schemes import PlanInputs, make_scheme
from orchestrator.collect import collect, read_records, rounds_completed
from orchestrator.dataprep import prepare_run_data
from orchestrator.faults import FaultEvent, behaviour_schedules, resolve_faults
from orchestrator.health import ExitWatch, NodeFailure, device_problem, last_log
from orchestrator.preflight import check as preflight
from orchestrator.progress import RunProgress
from orchestrator.scenario import CONTROL_PLANE_AUTO_MAX, Scenario, ScenarioError
from topologies import NodeKind, TopologyError, TopologySpec
from topologies.backends.base import Launch, child_seed
from topologies.backends.local import LocalBackend
from topologies.builders import PUBLISHER_ID, build_hierarchy

log = logging.getLogger(__name__)

POLL_S = 0.2
# Every daemon's environment: one thread for torch's pools (forked children deadlock in
# libgomp otherwise, and N daemons share the cores), a fixed hash seed for repeatable runs.
NODE_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
EVENT_COLUMNS = (
    "round",
    "action",
    "nodes",
    "behaviour",
    "params",
    "link",
    "applied_by",
    "detail",
    "elapsed_s",
)
STOP_GRACE_S = 15.0
DELIVER_WORKERS = 16
BEHAVIOUR_ACTIONS = ("malicious", "recover")
CONTROL_PLANE_BY = "orchestrator (control plane)"


@dataclass
class RunResult:
    """What a run produced."""

    out_dir: Path
    rounds_completed: int  # rounds every task completed (`collect.rounds_completed`)
    final_accuracy: float | None
    elapsed_s: float
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    interrupted: bool = False
    failures: list[NodeFailure] = field(default_factory=list)
    problem: str | None = None


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("bcfl-testbed", "torch", "numpy", "pyzmq", "msgpack", "pynacl", "pydantic"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _learning(s: Scenario) -> LearningConfig:
    return LearningConfig(
        dataset=s.dataset, model=s.model, partition=s.partition, training=s.training
    )


def _shaping_meta(shaping: str) -> dict[str, Any]:
    if shaping == "none":
        return {
            "shaping": "none",
            "delay": "none",
            "jitter": "none",
            "bandwidth": "none",
            "loss": "none",
        }
    return {
        "shaping": "userspace",
        "delay": "userspace",
        "jitter": "userspace",
        "bandwidth": "userspace",
        "loss": "userspace",
        "note": "applied per directed link at the sender; queueing behind other nodes' "
        "traffic at shared hops is not modelled",
    }


class Run:
    """Prepares and executes one scenario on a backend, writing into `out_dir`."""

    def __init__(
        self,
        scenario: Scenario,
        out_dir: Path,
        progress: bool = True,
        on_round: Callable[[Run, dict[str, Any]], None] | None = None,
    ) -> None:
        """`on_round(run, record)` is called for each round the publisher completes."""
        self.scenario = scenario
        self.on_round = on_round
        self.out_dir = out_dir
        self.progress = progress
        self.run_id = f"{scenario.name}-{uuid.uuid4().hex[:8]}"
        self.topology: TopologySpec = build_hierarchy(scenario.topology.to_params(), scenario.seed)
        preflight(scenario, self.topology)  # data, partition, privacy, memory: before anything
        self.faults = resolve_faults(scenario, self.topology)
        self.scheme = make_scheme(scenario.scheme.name, scenario.scheme.params)
        self.backend: Any = self._make_backend(scenario)
        self.meta: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self._links_down: set[tuple[str, str]] = set()
        self.watch = ExitWatch(out_dir)
        # the run's control-plane token: the orchestrator's key for the nodes' mutating calls
        self.control_token = secrets.token_hex(16)
        self.control_plane = True  # decided in prepare(): metrics.control_plane
        self._undelivered: set[str] = set()  # nodes their schedule could not be delivered to

    def _make_backend(self, scenario: Scenario) -> Any:
        if scenario.backend == "local":
            return LocalBackend(shaping=scenario.shaping, log_dir=self.out_dir)
        from topologies.backends.mininet import MininetBackend, import_mininet
        from topologies.backends.netem import probe_netem
        from topologies.backends.ovs import OVSBusy, OVSUnavailable, busy_reason, check_installed

        if os.geteuid() != 0:
            raise ScenarioError(
                f"backend: the {scenario.backend} backend needs root (run bcfl as root, "
                "or use --backend local)"
            )
        import_mininet()
        if scenario.switch == "ovs-user":
            try:
                check_installed()
            except OVSUnavailable as exc:
                raise ScenarioError(
                    f"switch: 'ovs-user' needs Open vSwitch: {exc}; or use switch: linux"
                ) from None
            busy = busy_reason()
            if busy is not None:
                raise OVSBusy(f"switch: 'ovs-user': {busy}")
        probe = probe_netem()
        self.netem = probe
        if scenario.delay_mode == "kernel" and not probe.available:
            raise ScenarioError(
                f"backend {scenario.backend}: netem is not available on this kernel "
                f"({probe.reason}); "
                "Mininet would silently drop the links' delays. Rerun with --delay-mode "
                "userspace (delay, jitter and loss in the node transport, bandwidth in the kernel)"
            )
        token = "b" + self.run_id[-2:]
        for i, entry in enumerate(scenario.capture):
            nodes = [entry] if isinstance(entry, str) else entry
            for nid in nodes:
                if nid not in {n.id for n in self.topology.nodes}:
                    raise ScenarioError(f"capture[{i}]: {nid!r} is invalid; allowed: node ids")
            if not isinstance(entry, str):
                try:
                    self.topology.link(entry[0], entry[1])
                except TopologyError:
                    raise ScenarioError(
                        f"capture[{i}]: {entry!r} is invalid; allowed: two directly linked nodes"
                    ) from None
        options: dict[str, Any] = {"switch": scenario.switch, "log_dir": self.out_dir / "ovs"}
        if scenario.backend == "mininet-cluster":
            return self._cluster_backend(scenario, token, probe.available)
        if scenario.backend == "containernet":
            from topologies.backends.containernet import ContainernetBackend

            return ContainernetBackend(
                token,
                scenario.delay_mode,
                probe.available,
                scenario.capture,
                scenario.containers,
                self.out_dir,
                **options,
            )
        return MininetBackend(
            token, scenario.delay_mode, probe.available, scenario.capture, **options
        )

    def _cluster_backend(self, scenario: Scenario, token: str, netem: bool) -> Any:
        """The mininet-cluster backend, once every server passed the preflight."""
        from topologies.backends.cluster import preflight
        from topologies.backends.cluster.backend import ClusterBackend
        from topologies.backends.cluster.placement import PlacementError, place

        if not scenario.cluster.servers:  # --backend mininet-cluster on a scenario without them
            raise ScenarioError(
                "backend: mininet-cluster needs cluster.servers (this machine and the others)"
            )
        try:
            place(self.topology, scenario.cluster)
        except PlacementError as exc:
            raise ScenarioError(str(exc)) from None
        if scenario.switch != "linux":
            raise ScenarioError(
                f"switch: {scenario.switch!r} is invalid with backend mininet-cluster; "
                "allowed: linux"
            )
        image = preflight.node_image(scenario.cluster, scenario.containers)
        reports = preflight.check(scenario.cluster, str(self.out_dir.resolve()), image)
        found = preflight.problems(reports) + preflight.same_machine(reports, scenario.cluster)
        if scenario.delay_mode == "kernel":
            found += [
                f"server {r.name}: netem is not available (delay_mode: kernel needs it on every "
                "server; or --delay-mode userspace)"
                for r in reports
                if r.ok and not r.facts.get("netem")
            ]
        if found:
            raise ScenarioError("cluster: the preflight failed: " + "; ".join(found))
        for report in reports:
            log.info("cluster server %s", report.line())
        backend: ClusterBackend
        if image is not None:  # cluster.containers
            from topologies.backends.cluster.containers import ClusterContainerBackend

            backend = ClusterContainerBackend(
                token,
                scenario.delay_mode,
                netem,
                scenario.capture,
                scenario.cluster,
                self.out_dir,
                scenario.containers,
                image,
            )
        else:
            backend = ClusterBackend(
                token, scenario.delay_mode, netem, scenario.capture, scenario.cluster, self.out_dir
            )
        backend.preflight_lines = [report.line() for report in reports]
        return backend

    def restart(self, node_id: str) -> int:
        """Start a dead node's process again (same config, key and directory); its new PID."""
        pid = self.backend.restart(node_id)
        self.watch.restarted(node_id)
        self.meta.setdefault("pids", {})[node_id] = pid
        self.meta.setdefault("restarts", []).append({"node": node_id, "pid": pid})
        (self.out_dir / "pids.json").write_text(json.dumps(self.meta["pids"]))
        if self.control_plane:
            # the new process waits for Start too: its whole schedule again (our choice),
            # its own round counter decides which entries still take effect
            self._deliver([node_id], after_round=len(self.publisher_rounds()))
        return pid

    def _entries(self, node_id: str) -> list[tuple[str, dict[str, Any], int]]:
        """The node's behaviour entries in round order: (behaviour or recover, params, round)."""
        out = []
        for ev in self.faults:  # sorted by (round, index)
            if ev.action in BEHAVIOUR_ACTIONS and node_id in ev.nodes:
                name = (ev.behaviour or "") if ev.action == "malicious" else "recover"
                out.append((name, dict(ev.params), ev.round))
        return out

    def _deliver(self, node_ids: list[str], after_round: int = 0) -> None:
        """Deliver each node's schedule and Start (`orchestrator.control.deliver_schedule`),
        DELIVER_WORKERS at a time, each within startup_timeout_s. A node whose process exits
        meanwhile is left to the exit watch; one that does not answer is killed and recorded
        as a node failure (`after_round`: the rounds done, for its report)."""
        from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

        from orchestrator.control import ControlError, deliver_schedule

        timeout = self.scenario.startup_timeout_s
        aborts = {nid: threading.Event() for nid in node_ids}
        pool = ThreadPoolExecutor(max_workers=min(DELIVER_WORKERS, max(1, len(node_ids))))
        try:
            pending: dict[Future[list[int]], str] = {
                pool.submit(
                    deliver_schedule, self.out_dir, nid, self._entries(nid), timeout, aborts[nid]
                ): nid
                for nid in node_ids
            }
            while pending:
                done, _ = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
                codes = self.backend.poll()
                for future in done:
                    nid = pending.pop(future)
                    try:
                        future.result()
                        self._undelivered.discard(nid)
                    except ControlError as exc:
                        self._undelivered.add(nid)
                        self._unreachable(nid, codes.get(nid), str(exc), after_round)
                for nid in pending.values():
                    if codes.get(nid) is not None:
                        aborts[nid].set()  # exited: the exit watch names it
        except BaseException:
            for event in aborts.values():
                event.set()
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _unreachable(self, node_id: str, code: int | None, why: str, after_round: int) -> None:
        """A node its schedule could not be delivered to: a running one is killed and
        recorded as a node failure; an exited one is the exit watch's."""
        if code is not None:
            log.error("%s exited before its fault schedule was delivered (%s)", node_id, why)
            return
        log.error("node %s: the fault schedule could not be delivered: %s", node_id, why)
        self.watch.expect_exit(node_id)  # its failure is recorded here, not by the watch
        try:
            self.backend.kill(node_id)
        except (OSError, RuntimeError, TimeoutError, KeyError) as exc:
            log.warning("could not kill %s: %s", node_id, exc)
        path, _ = last_log(self.node_dir(node_id))
        shown = str(path) if path is not None else f"{self.node_dir(node_id)} (no log written)"
        self.watch.failures.append(
            NodeFailure(node_id, -signal.SIGKILL, shown, f"no Start delivered: {why}", after_round)
        )

    def node_dir(self, node_id: str) -> Path:
        """Where a node keeps its config, key, log and metrics."""
        return self.out_dir / "nodes" / node_id

    def prepare(self) -> list[Launch]:
        """Write keys, the roster, the topology and each node's config."""
        s = self.scenario
        self.out_dir.mkdir(parents=True, exist_ok=True)
        daemons = self.topology.daemons()
        keys = {n.id: NodeKey.generate() for n in daemons}
        roster = Roster({nid: k.public_key for nid, k in keys.items()})
        endpoints = self.backend.endpoints(self.topology)
        topo = self.topology.to_dict()
        (self.out_dir / "topology.json").write_text(json.dumps(topo, indent=1))
        (self.out_dir / "roster.json").write_text(json.dumps(roster.to_hex(), indent=1))
        learning = _learning(s)
        data = prepare_run_data(learning, s.seed, self.out_dir, self.topology)
        schedules = behaviour_schedules(self.faults)
        plan = self.scheme.plan(
            self.topology,
            {nid: k.public_key for nid, k in keys.items()},
            PlanInputs(
                run_id=self.run_id,
                task_id=s.name,
                seed=s.seed,
                reward_pool=s.ledger.reward_pool,
                consensus=s.ledger.consensus,
                device_replica=s.ledger.device_replica,
            ),
        )
        chains = {cid: chain.config for cid, chain in plan.chains.items()}
        chains_json = {cid: chain.to_dict() for cid, chain in chains.items()}
        (self.out_dir / "chains.json").write_text(json.dumps(chains_json, indent=1))
        self.control_plane = s.metrics.control_plane_on(len(daemons))
        if self.control_plane:
            from orchestrator.control import write_token

            write_token(self.out_dir, self.control_token)  # RUN_DIR/control.token, mode 0600
        elif s.metrics.control_plane == "auto":
            log.warning(
                "%d node processes: the nodes serve no control plane (metrics.control_plane: "
                "auto turns it off above %d; true turns it on)",
                len(daemons),
                CONTROL_PLANE_AUTO_MAX,
            )
        launches = []
        shared = self.out_dir / "shared.json"
        for node in daemons:
            ndir = self.node_dir(node.id)
            ndir.mkdir(parents=True, exist_ok=True)
            keys[node.id].save(ndir / "node.key")
            config = NodeConfig(
                run_id=self.run_id,
                node_id=node.id,
                scheme=s.scheme.name,
                scheme_params=s.scheme.params,
                plan=plan.nodes[node.id],
                seed=s.seed,
                node_dir=str(ndir),
                key_path=str(ndir / "node.key"),
                bind=endpoints[node.id],
                endpoints=endpoints,
                roster=roster.to_hex(),
                topology=self.topology,
                shaping=s.shaping if s.backend == "local" else self.backend.shaping,
                learning=learning.model_copy(update={"data_dir": str(data.dirs[node.id])})
                if node.id in data.dirs
                else learning,
                max_message_bytes=int(s.max_message_mb * 1024 * 1024),
                startup_timeout_s=s.startup_timeout_s,
                chains=chains,
                task_id=s.name,
                ledger_synchronous=s.ledger.synchronous,
                ledger_storage_time_ms=s.ledger.storage_time_ms(s.topology.t_ms),
                aggregator=s.aggregator,
                privacy=s.privacy,
                message_log=s.metrics.message_log_on(s.capture),
                # control plane on: the schedule comes through SetBehaviour before Start
                behaviours=[]
                if self.control_plane
                else [Behaviour(**b) for b in schedules.get(node.id, [])],
                await_start=self.control_plane,
                links_down_path=str(self.out_dir / "links_down.json"),
                shared=str(shared),
                control_token=self.control_token if self.control_plane else None,
            )
            if not shared.exists():
                shared.write_text(json.dumps(config.shared_fields()))
            config.save(ndir / "config.json")
            launches.append(
                Launch(
                    node_id=node.id,
                    argv=(sys.executable, "-m", "node", str(ndir / "config.json")),
                    env=NODE_ENV,
                    log_path=ndir / "stdout.log",
                    seed=child_seed(s.seed, node.id),
                )
            )
        self.meta = {
            "run_id": self.run_id,
            "scenario": s.model_dump(mode="json"),
            "seed": s.seed,
            "scheme": s.scheme.name,
            "backend": self.backend.name,
            **(_shaping_meta(s.shaping) if s.backend == "local" else self._mininet_meta()),
            "nodes": {n.id: str(n.kind) for n in daemons},
            "control_plane": self.control_plane,
            "endpoints": endpoints,
            "versions": _versions(),
            "data_prep": data.summary(),
            "aggregator": s.aggregator.model_dump(),
            # the block storage time every node's ledger emulated (ms; 0: none)
            "storage_time_ms": s.ledger.storage_time_ms(s.topology.t_ms),
            "privacy": _privacy_meta(s, self.topology),
            "faults": [vars(ev) | {"link": ev.link} for ev in self.faults],
            "host": {"platform": platform.platform(), "cpus": _cpu_count()},
        }
        self._write_meta()
        return launches

    def _mininet_meta(self) -> dict[str, Any]:
        b = self.backend
        kernel_delay = b.shaping == "none"
        return {
            "shaping": "kernel" if kernel_delay else "kernel+userspace",
            "bandwidth": "kernel(htb)",
            "delay": "kernel(netem)" if kernel_delay else "userspace",
            "jitter": "kernel(netem)" if kernel_delay else "userspace",
            "loss": "kernel(netem)" if kernel_delay else "userspace",
            "by_link_class": b.shaping_meta(),
            "netem_probe": {"available": self.netem.available, "reason": self.netem.reason},
            "run_token": b.token,
            "switch": b.switch,
            **({"containers": b.container_meta()} if hasattr(b, "container_meta") else {}),
            **({"cluster": b.cluster_meta()} if hasattr(b, "cluster_meta") else {}),
        }

    def _write_meta(self) -> None:
        (self.out_dir / "meta.json").write_text(json.dumps(self.meta, indent=1))

    def _timeout_s(self) -> float:
        t = self.scenario.training
        return self.scenario.startup_timeout_s + t.rounds * (t.round_deadline_s + 30.0) + 60.0

    def execute(self) -> RunResult:
        """Start the daemons, follow the publisher's rounds, stop, collect."""
        if isinstance(self.backend, LocalBackend):
            self.out_dir.mkdir(parents=True, exist_ok=True)  # the server's log goes there
            self.backend.prestart(NODE_ENV)  # its imports overlap with writing the run's files
        launches = self.prepare()
        started = time.monotonic()
        self.meta["started_at"] = time.time()
        interrupted = False
        reported = 0  # rounds every task completed (`rounds_completed`)
        bar = RunProgress(
            self.scenario.training.rounds,
            {launch.node_id: self.node_dir(launch.node_id) for launch in launches},
            self.progress,
            sys.stderr,
        )
        restore = _terminate_as_interrupt()
        try:
            if hasattr(self.backend, "start_network"):
                self.backend.start_network()
                self.backend.start_capture_into(self.out_dir / "pcap")
                if hasattr(self.backend, "cluster_meta"):  # now with what the tunnels add
                    self.meta["cluster"] = self.backend.cluster_meta()
                if hasattr(self.backend, "container_meta"):  # and the engines that answered
                    self.meta["containers"] = self.backend.container_meta()
            bar.startup(False)  # 0/N while the backend starts (the local fork server's imports)
            self.backend.start(launches)
            self.meta["pids"] = self.backend.pids()
            (self.out_dir / "pids.json").write_text(json.dumps(self.meta["pids"]))
            self._write_meta()
            if self.control_plane:
                self._deliver([launch.node_id for launch in launches])
            deadline = started + self._timeout_s()
            while True:
                records = read_records(self.node_dir(PUBLISHER_ID))
                rounds_seen = [r for r in records if r.get("event") == "round"]
                bar.startup(any(r.get("event") == "started" for r in records))
                done = rounds_completed(records)
                if done > reported:
                    for round_no in range(reported + 1, done + 1):
                        record = [r for r in rounds_seen if int(r["round"]) == round_no][-1]
                        self._apply_faults(round_no + 1, started)
                        if self.on_round is not None:
                            self.on_round(self, record)
                    bar.rounds_done(done - reported, rounds_seen[-1], time.monotonic() - started)
                    reported = done
                codes = self.backend.poll()
                self.watch.observe(codes, reported)
                if codes.get(PUBLISHER_ID) is not None:
                    break
                if time.monotonic() > deadline:
                    log.error("run timed out after %.0f s", self._timeout_s())
                    break
                time.sleep(POLL_S)
            if codes.get(PUBLISHER_ID) == 0:
                self._await_exit(STOP_GRACE_S)
            self.watch.observe(self.backend.poll(), reported)
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted: stopping every node process")
        finally:
            restore()
            bar.close()
            try:
                self._stop_through_control()
            finally:  # a second Ctrl-C meanwhile: still every process stopped
                self.backend.stop(grace_s=5.0)
        return self._finish(started, interrupted)

    def _stop_through_control(self) -> None:
        """Ask every node still running to stop through its control plane (``Stop``: a clean
        stop, its counters written); the backend's stop then signals those that did not take
        it (SIGTERM, then SIGKILL after its grace)."""
        try:
            running = sorted(nid for nid, code in self.backend.poll().items() if code is None)
        except Exception as exc:  # nothing started, or a backend mid-failure: signals do it
            log.info("no control stop: %s", exc)
            return
        if not running or not self.control_plane:
            return
        from orchestrator.control import stop_nodes

        missed = stop_nodes(self.out_dir, running)
        if missed:
            log.info("%d node(s) did not take Stop (signalled instead): %s", len(missed), missed)

    def _apply_faults(self, round_no: int, started: float) -> None:
        """Apply the process and link events of `round_no` (its previous round just ended)."""
        for ev in self.faults:
            if ev.round != round_no or ev.action in ("malicious", "recover"):
                continue
            detail = ""
            if ev.action == "crash":
                for nid in ev.nodes:
                    self.watch.expect_exit(nid)
                    self.backend.kill(nid)
                detail = "SIGKILL"
            elif ev.action == "restart":
                pids = [
                    self.restart(nid) for nid in ev.nodes if self.backend.poll()[nid] is not None
                ]
                detail = f"new PIDs {pids}"
            elif ev.link is not None:
                a, b = ev.link
                if hasattr(self.backend, "set_link"):
                    self.backend.set_link(a, b, up=ev.action == "link_up")
                    self._record_event(
                        ev, "orchestrator", "ip link set", time.monotonic() - started
                    )
                    continue
                change = {(a, b), (b, a)}
                if ev.action == "link_down":
                    self._links_down |= change
                else:
                    self._links_down -= change
                path = self.out_dir / "links_down.json"
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(sorted(self._links_down)))
                tmp.replace(path)
                detail = "user-space shaping drops frames on it"
            log.info("applied %s", ev.describe())
            self._record_event(ev, "orchestrator", detail, time.monotonic() - started)

    def _record_event(self, ev: FaultEvent, by: str, detail: str, elapsed: float | None) -> None:
        self.events.append(
            {
                "round": ev.round,
                "action": ev.action,
                "nodes": " ".join(ev.nodes),
                "behaviour": ev.behaviour or "",
                "params": json.dumps(ev.params) if ev.params else "",
                "link": "-".join(ev.link) if ev.link else "",
                "applied_by": by,
                "detail": detail,
                "elapsed_s": "" if elapsed is None else round(elapsed, 3),
            }
        )

    def _write_events(self) -> None:
        for ev in self.faults:
            if ev.action not in BEHAVIOUR_ACTIONS:
                continue
            if not self.control_plane:
                detail = "from its config, at the start of the round"
                self._record_event(ev, "node (config)", detail, None)
                continue
            detail = f"SetBehaviour before start, from round {ev.round}"
            missed = [nid for nid in ev.nodes if nid in self._undelivered]
            if missed:
                detail += f"; not delivered to {' '.join(missed)}"
            self._record_event(ev, CONTROL_PLANE_BY, detail, None)
        self.events.sort(key=lambda e: (e["round"], e["action"]))
        with (self.out_dir / "events.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=EVENT_COLUMNS)
            writer.writeheader()
            writer.writerows(self.events)

    def _await_exit(self, grace_s: float) -> None:
        end = time.monotonic() + grace_s
        while time.monotonic() < end and any(c is None for c in self.backend.poll().values()):
            time.sleep(POLL_S)

    def publisher_rounds(self) -> list[dict[str, Any]]:
        """The publisher's round records written so far."""
        return [r for r in read_records(self.node_dir("pub")) if r.get("event") == "round"]

    def _finish(self, started: float, interrupted: bool) -> RunResult:
        rounds = self.publisher_rounds()
        completed = rounds_completed(read_records(self.node_dir(PUBLISHER_ID)))
        codes = self.backend.poll()
        collect(self.out_dir)
        self._write_events()
        if rounds:
            # matplotlib (0.3 s of imports) only here: not before the fork server starts
            from orchestrator.report import plot_accuracy

            plot_accuracy(self.out_dir)
        final = rounds[-1]["accuracy"] if rounds else None
        elapsed = time.monotonic() - started
        failures = list(self.watch.failures)
        devices = sorted(n.id for n in self.topology.of_kind(NodeKind.DEVICE))
        problem = (
            None if interrupted else device_problem(rounds, devices, self.node_dir(PUBLISHER_ID))
        )
        self.meta.update(
            finished_at=time.time(),
            elapsed_s=elapsed,
            rounds_completed=completed,
            final_accuracy=final,
            exit_codes=codes,
            interrupted=interrupted,
            node_failures=[f.to_dict() for f in failures],
            problem=problem,
        )
        self._write_meta()
        return RunResult(
            self.out_dir, completed, final, elapsed, codes, interrupted, failures, problem
        )


def _terminate_as_interrupt() -> Callable[[], None]:
    """Make SIGTERM and SIGHUP (a scheduler's or `timeout`'s stop, a closed terminal) end a
    run the way Ctrl-C does: every node process stopped, the results collected. Returns the
    function that puts the previous handlers back (a no-op off the main thread, where
    handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum: int, _frame: object) -> None:
        log.warning("%s received", signal.Signals(signum).name)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def _privacy_meta(s: Scenario, topology: TopologySpec) -> dict[str, Any] | None:
    if s.privacy is None:
        return None
    p = s.privacy
    sigma = gaussian_sigma(p.epsilon, p.delta, p.clip_norm, p.mechanism)
    return {
        **p.model_dump(),
        "sensitivity": p.clip_norm,
        "sigma": sigma,
        # with divide_by_devices each device's noise std is sigma / D (D: the devices)
        "noise_divisor": len(topology.of_kind(NodeKind.DEVICE)) if p.divide_by_devices else 1,
        "formula": "classic: sigma = S*sqrt(2 ln(1.25/delta))/epsilon (Dwork & Roth 2014); "
        "analytic: Balle & Wang 2018",
    }


def _cpu_count() -> int:
    return os.cpu_count() or 1
