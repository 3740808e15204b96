"""Pure parts of the mininet backend: tc batch scripts, the OVS bridge transaction, and the
error when Open vSwitch is missing (nothing here needs root or Mininet)."""

from __future__ import annotations

import pytest

from topologies.backends import ovs
from topologies.backends.addressing import plan
from topologies.backends.mininet import MininetBackend, short_names, tc_batches
from topologies.backends.tc import link_argv
from topologies.builders import HierarchyParams, build_hierarchy
from topologies.spec import NodeKind, TopologySpec


@pytest.fixture
def spec() -> TopologySpec:
    return build_hierarchy(HierarchyParams(bs_count=1, mecs_per_bs=2, devices_per_mec=3), 7)


@pytest.mark.parametrize("kernel_delay", [False, True])
def test_tc_batches_hold_every_tc_command_once_grouped_by_egress_owner(
    spec: TopologySpec, kernel_delay: bool
) -> None:
    p = plan(spec, short_names(spec, "b01"))

    batches = tc_batches(spec, p, kernel_delay)

    bs = {n.id for n in spec.of_kind(NodeKind.BS)}
    expected: dict[str, list[str]] = {}
    for link in spec.links:
        owner = "" if link.src in bs else link.src
        dev = p.iface[(link.src, link.dst)].name
        expected.setdefault(owner, []).extend(
            " ".join(argv[1:]) for argv in link_argv(dev, link, kernel_delay)
        )
    assert set(batches) == set(expected) == {""} | {n.id for n in spec.daemons()}
    for owner, lines in expected.items():
        assert batches[owner].splitlines() == lines
        assert all(not line.startswith("tc ") for line in lines)
        assert batches[owner].endswith("\n")


def test_bridge_transaction_makes_user_space_standalone_bridges_that_keep_our_qdiscs() -> None:
    args = ovs.bridge_args({"b01s0": ["b01s0-eth0", "b01s0-eth1"], "b01s9": []})

    text = " ".join(args)
    assert args[:5] == ["--", "--id=@noop", "create", "QoS", "type=linux-noop"]
    for bridge in ("b01s0", "b01s9"):
        assert f"-- add-br {bridge} -- set Bridge {bridge} datapath_type=netdev" in text
    assert text.count("fail_mode=standalone") == 2
    assert text.count("other-config:disable-in-band=true") == 2
    for port in ("b01s0-eth0", "b01s0-eth1"):
        assert f"-- add-port b01s0 {port} -- set Port {port} qos=@noop" in text
    assert "controller" not in text


def test_missing_open_vswitch_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ovs.shutil, "which", lambda name: None)

    with pytest.raises(ovs.OVSUnavailable) as err:
        ovs.check_installed()

    assert "apt-get install openvswitch-switch" in str(err.value)
    assert "ovs-vswitchd" in str(err.value)
    with pytest.raises(ovs.OVSUnavailable):
        MininetBackend("b01", "userspace", False, [], switch="ovs-user")


def test_unknown_switch_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="switch: 'ovs' is invalid; allowed: linux, ovs-user"):
        MininetBackend("b01", "userspace", False, [], switch="ovs")
