"""Real multi-process runs on the local backend: every node its own OS process over ZeroMQ."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from node.core.encoding import decode_canonical
from node.ledger.chain import CONFIG_META_KEY, ChainConfig
from node.ledger.chains import MAIN_CHAIN, chain_dir
from node.ledger.light import verify_replica_store
from node.ledger.store import DB_NAME, ChainStore, open_store
from orchestrator.cli import main as cli_main
from orchestrator.runner import Run
from orchestrator.scenario import Scenario, parse_scenario

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def small_scenario(**overrides: Any) -> Scenario:
    """1 BS, 1 MEC, 4 devices on digits with the MLP."""
    data: dict[str, Any] = {
        "name": "itest",
        "seed": 3,
        "dataset": {"name": "digits"},
        "model": "mlp",
        "training": {
            "rounds": 8,
            "local_epochs": 2,
            "batch_size": 16,
            "learning_rate": 0.1,
            "round_deadline_s": 20,
        },
        "topology": {"base_stations": 1, "mecs_per_bs": 1, "devices_per_mec": 4, "t_ms": 5},
    }
    data.update(overrides)
    return parse_scenario(data)


def _member_key(store: ChainStore, node: str) -> bytes:
    raw = store.meta_get(CONFIG_META_KEY)
    assert raw is not None
    key: bytes = ChainConfig.from_dict(decode_canonical(raw)).genesis.members[node][0]
    return key


def paced_scenario(rounds: int) -> Scenario:
    """Rounds paced by the network, not by training: 300 ms each way on the devices' radio
    links make a round last about a second whatever the machine's load (so a fault injected
    after round 2 lands with rounds to go), while training is light (2 local epochs) and the
    deadline generous: a device has the MEC's 12 s (80% of 15 s) for about 0.6 s of links
    and well under 2 s of training at a load average of 15 on 2 cores, and the MEC's
    partial 3 s to reach the publisher (the publisher's LAN link stays at 0.1 ms). A dead
    device still costs each round the MEC's whole deadline."""
    return small_scenario(
        training={
            "rounds": rounds,
            "local_epochs": 2,
            "batch_size": 16,
            "learning_rate": 0.1,
            "round_deadline_s": 15,
        },
        topology={
            "base_stations": 1,
            "mecs_per_bs": 1,
            "devices_per_mec": 4,
            "t_ms": 5,
            "cellular": {"delay_ms": 300},
        },
    )


def rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def _check_round_timing(table: list[dict[str, str]]) -> None:
    """Every device row (issue 17): the global model came before the update left, which
    left before the next round's global model came and before the block recording it was
    proposed; the round's block was stored on the device (latency >= 0)."""
    devices = [r for r in table if r["role"] == "device"]
    by_round = {(r["node"], int(r["round"])): r for r in devices}
    assert devices
    for row in devices:
        got, sent = float(row["global_received_ms"]), float(row["update_sent_ms"])
        assert got <= sent <= float(row["block_proposed_ms"]), row
        following = by_round.get((row["node"], int(row["round"]) + 1))
        if following is not None:
            assert sent <= float(following["global_received_ms"]), (row, following)
        assert row["block_chain"] == MAIN_CHAIN and int(row["block_height"]) >= 2, row
        assert float(row["block_latency_ms"]) >= 0, row
        assert float(row["block_proposed_ms"]) <= float(row["block_certified_ms"]), row


def _check_message_records(run_dir: Path, nodes: set[str]) -> None:
    """Every node's messages.csv (metrics.message_log: true): each message received was
    recorded as sent to that node, with its type and size; every device update sent was
    received."""
    sent: dict[tuple[str, str, str], dict[str, str]] = {}
    received: dict[tuple[str, str, str], dict[str, str]] = {}
    for node in nodes:
        with (run_dir / "nodes" / node / "messages.csv").open(newline="") as f:
            for r in csv.DictReader(f):
                if r["dir"] == "sent":
                    assert r["sender"] == node, r
                    sent[(r["sender"], r["seq"], r["peer"])] = r
                else:
                    assert r["dir"] == "recv" and r["peer"] == "", r
                    received[(r["sender"], r["seq"], node)] = r
    assert received and set(received) <= set(sent)
    for k, r in received.items():
        assert (r["type"], r["bytes"]) == (sent[k]["type"], sent[k]["bytes"]), (r, sent[k])
    updates = [k for k, r in sent.items() if r["type"] == "update"]
    assert len(updates) == 4 * 8  # 4 devices, 8 rounds
    assert all(k in received for k in updates)


def test_multi_process_run_reaches_real_accuracy(tmp_path: Path) -> None:
    scenario = small_scenario(metrics={"message_log": True})

    result = Run(scenario, tmp_path / "run", progress=False).execute()

    assert result.rounds_completed == 8
    assert result.final_accuracy is not None and result.final_accuracy >= 0.9
    assert all(code == 0 for code in result.exit_codes.values()), result.exit_codes
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["shaping"] == "userspace" and meta["backend"] == "local"
    pids = meta["pids"]
    assert set(pids) == {"pub", "mec0", "dev0-0", "dev0-1", "dev0-2", "dev0-3"}
    assert len(set(pids.values())) == len(pids), "every node is its own process"
    table = rows(tmp_path / "run")
    for r in range(1, 9):
        nodes = {row["node"] for row in table if row["round"] == str(r)}
        assert nodes == set(pids), f"round {r}: a row per node"
    assert (tmp_path / "run" / "accuracy.png").stat().st_size > 0
    counters = list(csv.DictReader((tmp_path / "run" / "counters.csv").open()))
    assert {c["node"] for c in counters} == set(pids)
    assert all(c["dropped"] == "" for c in counters), "no message was dropped"
    _check_round_timing(table)
    _check_message_records(tmp_path / "run", set(pids))


def test_every_ledger_verifies_and_a_changed_byte_is_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    Run(small_scenario(training={"rounds": 4}), run_dir, progress=False).execute()

    assert cli_main(["chain", "verify", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok  height 6") == 6, out  # publish + 4 rounds + rewards, on 6 nodes
    assert "heads agree" in out

    db = chain_dir(run_dir / "nodes" / "dev0-1", MAIN_CHAIN) / DB_NAME
    with sqlite3.connect(db) as conn:
        (data,) = conn.execute("SELECT data FROM blocks WHERE height = 3").fetchone()
        changed = bytearray(data)
        changed[len(changed) // 2] ^= 0x01
        conn.execute("UPDATE blocks SET data = ? WHERE height = 3", (bytes(changed),))

    assert cli_main(["chain", "verify", str(run_dir / "nodes" / "dev0-1")]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "at height 3" in out, out

    # A flipped byte in a blob the chain references (dev0-2's own round-2 update).
    store = open_store(chain_dir(run_dir / "nodes" / "dev0-2", MAIN_CHAIN))
    try:
        block = store.block(3)  # publish at 1, round 2 at 3
        assert block is not None
        key = next(
            tx.payload["blob"]
            for tx in block.txs
            if tx.type == "task.record_update" and tx.sender == _member_key(store, "dev0-2")
        )
    finally:
        store.close()
    blob = run_dir / "nodes" / "dev0-2" / "blobs" / key.hex()[:2] / key.hex()
    data = bytearray(blob.read_bytes())
    data[len(data) // 3] ^= 0x10
    blob.write_bytes(bytes(data))

    assert cli_main(["chain", "verify", str(run_dir)]) == 1
    out = capsys.readouterr().out
    assert f"at height 3: corrupt blob {key.hex()[:16]}" in out, out


def test_run_completes_when_a_device_process_is_killed(tmp_path: Path) -> None:
    scenario = paced_scenario(rounds=5)
    victim = "dev0-2"
    killed_after: list[int] = []

    def kill_after_round_2(run: Run, record: dict[str, Any]) -> None:
        if record["round"] == 2:
            os.kill(run.backend.pids()[victim], signal.SIGKILL)
            killed_after.append(run.publisher_rounds()[-1]["round"])

    result = Run(scenario, tmp_path / "run", progress=False, on_round=kill_after_round_2).execute()

    assert len(killed_after) == 1
    last_before_kill = killed_after[0]
    assert last_before_kill <= 3, "rounds were too fast for the test to mean anything"
    assert result.rounds_completed == 5
    assert result.exit_codes[victim] == -signal.SIGKILL
    assert all(code == 0 for nid, code in result.exit_codes.items() if nid != victim)
    table = rows(tmp_path / "run")
    victim_rounds = {int(r["round"]) for r in table if r["node"] == victim}
    assert max(victim_rounds) <= last_before_kill + 1  # at most the round in flight
    pub = {int(r["round"]): r for r in table if r["node"] == "pub"}
    for r in range(1, 6):  # the live devices are in every round
        alive = {"dev0-0", "dev0-1", "dev0-3"}
        assert alive.isdisjoint(pub[r]["missing"].split()), (r, pub[r])
    for r in range(last_before_kill + 2, 6):
        assert pub[r]["contributors"] == "3", (r, pub[r])
        assert pub[r]["missing"].split() == [victim]
    assert float(pub[5]["accuracy"]) > 0.8
    assert "left out" in (tmp_path / "run" / "nodes" / "mec0" / "node.log").read_text()


def test_restarted_device_with_an_empty_ledger_catches_up(tmp_path: Path) -> None:
    scenario = paced_scenario(rounds=8)
    victim = "dev0-1"
    restarted_after: list[int] = []

    def crash_wipe_restart(run: Run, record: dict[str, Any]) -> None:
        if record["round"] == 2:
            run.backend.kill(victim, signal.SIGKILL)
            node_dir = run.node_dir(victim)
            shutil.rmtree(chain_dir(node_dir, MAIN_CHAIN))
            shutil.rmtree(node_dir / "blobs")
            run.restart(victim)
            restarted_after.append(run.publisher_rounds()[-1]["round"])

    run_dir = tmp_path / "run"
    result = Run(scenario, run_dir, progress=False, on_round=crash_wipe_restart).execute()

    assert result.rounds_completed == 8 and len(restarted_after) == 1
    assert restarted_after[0] <= 5, "rounds were too fast for the test to mean anything"
    reports = {}
    for node in ("pub", victim):
        store = open_store(chain_dir(run_dir / "nodes" / node, MAIN_CHAIN))
        reports[node] = verify_replica_store(store)
        store.close()
    assert reports[victim].ok, reports[victim].failures
    assert reports[victim].height == reports["pub"].height == 10  # publish, 8 rounds, rewards
    assert reports[victim].head_hash == reports["pub"].head_hash
    pub = {int(r["round"]): r for r in rows(run_dir) if r["node"] == "pub"}
    assert pub[8]["contributors"] == "4", "the restarted device takes part again"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_every_node_process_and_keeps_results(
    tmp_path: Path, stop: signal.Signals
) -> None:
    # SIGTERM (a scheduler's or `timeout`'s stop) ends the run the way Ctrl-C does: it used
    # to kill the orchestrator alone and leave every node process running
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        "name: ctrlc\nseed: 1\ntraining: {rounds: 500, round_deadline_s: 10}\n"
        "topology: {mecs_per_bs: 1, devices_per_mec: 3}\n"
    )
    out = tmp_path / "run"
    bcfl = Path(sys.executable).parent / "bcfl"
    proc = subprocess.Popen(
        [str(bcfl), "run", str(scenario), "--out", str(out), "--quiet"],
        cwd=REPO,
        stderr=subprocess.PIPE,
    )
    metrics = out / "nodes" / "pub" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and '"round"' in metrics.read_text()):
        assert proc.poll() is None, "the run ended early"
        assert time.monotonic() < deadline, "no round completed in time"
        time.sleep(0.2)  # polling a file for a condition, not sleeping for synchronisation
    pids = json.loads((out / "pids.json").read_text())

    proc.send_signal(stop)
    code = proc.wait(timeout=60)

    assert code == 130
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert (out / "metrics.csv").exists() and (out / "meta.json").exists()
    assert json.loads((out / "meta.json").read_text())["interrupted"] is True
