"""node.runfiles: a run's shared file is parsed once per process, again only when it changes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from node import runfiles
from topologies.builders import HierarchyParams, build_hierarchy


def write_shared(path: Path, seed: int) -> dict[str, Any]:
    topo = build_hierarchy(HierarchyParams(bs_count=1, mecs_per_bs=2, devices_per_mec=3), seed)
    data = {"topology": topo.to_dict(), "endpoints": {"pub": "tcp://127.0.0.1:1"}}
    path.write_text(json.dumps(data))
    return data


def test_the_shared_file_is_parsed_once_and_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "shared.json"
    data = write_shared(path, seed=1)

    first = runfiles.load(path)
    assert runfiles.load(str(path)) is first
    assert first.data["endpoints"] == data["endpoints"] and first.data["topology"] is first.topology
    assert first.topology.to_dict() == data["topology"]

    write_shared(path, seed=2)
    os.utime(path, ns=(1, 1))  # a different modification time, whatever the clock's grain
    second = runfiles.load(path)
    assert second is not first
    assert second.topology.to_dict() == json.loads(path.read_text())["topology"]


def test_a_file_without_a_topology_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "shared.json"
    path.write_text("[]")
    with pytest.raises(ValueError, match="shared file"):
        runfiles.load(path)


def test_a_config_names_its_shared_file(tmp_path: Path) -> None:
    with_shared, plain = tmp_path / "a.json", tmp_path / "b.json"
    with_shared.write_text(json.dumps({"node_id": "dev0-0", "shared": "/run/shared.json"}))
    plain.write_text(json.dumps({"node_id": "dev0-1"}))

    assert runfiles.shared_path_of(with_shared) == "/run/shared.json"
    assert runfiles.shared_path_of(plain) is None
    assert runfiles.shared_path_of(tmp_path / "missing.json") is None


def test_a_run_writes_its_common_fields_once_and_every_node_reads_them_back(
    tmp_path: Path,
) -> None:
    from node.config import SHARED_FIELDS, NodeConfig
    from orchestrator.runner import Run
    from orchestrator.scenario import load_scenario

    run = Run(load_scenario(Path("scenarios/quickstart.yaml")), out_dir=tmp_path / "run")
    launches = run.prepare()

    shared = json.loads((tmp_path / "run" / "shared.json").read_text())
    assert set(shared) == set(SHARED_FIELDS)
    for launch in launches:
        path = Path(launch.argv[-1])
        on_disk = json.loads(path.read_text())
        assert not set(SHARED_FIELDS) & set(on_disk)  # a node's config stays small
        config = NodeConfig.load(path)
        assert config.node_id == launch.node_id
        assert config.topology.to_dict() == shared["topology"] and config.roster == shared["roster"]
        assert {cid: c.to_dict() for cid, c in config.chains.items()} == shared["chains"]
        assert config.endpoints[config.node_id] == config.bind
