"""The mininet/containernet bridges' FORWARD rules as argv data (no root needed)."""

from __future__ import annotations

import logging
import subprocess

import pytest

from topologies.backends import bridgefw


class FakeIptables:
    """Records argv; keeps a FORWARD listing per tool as `-S` prints it."""

    def __init__(self, fail_on: str = "") -> None:
        self.calls: list[list[str]] = []
        self.rules: dict[str, list[str]] = {"iptables": [], "ip6tables": []}
        self.fail_on = fail_on

    def __call__(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        tool, op = argv[0], argv[2]
        if tool == self.fail_on:
            return subprocess.CompletedProcess(argv, 1, "", "iptables: No chain/target/match")
        spec = " ".join(argv[3:])
        if op == "-I":
            self.rules[tool].insert(0, "-A " + spec)
        elif op == "-D":
            if "-A " + spec not in self.rules[tool]:
                return subprocess.CompletedProcess(argv, 1, "", "Bad rule")
            self.rules[tool].remove("-A " + spec)
        elif op == "-S":
            out = "-P FORWARD DROP\n" + "\n".join(self.rules[tool]) + "\n"
            return subprocess.CompletedProcess(argv, 0, out, "")
        return subprocess.CompletedProcess(argv, 0, "", "")


def all_tools(_: str) -> str:
    return "/usr/sbin/x"


def test_the_rule_accepts_only_the_runs_bridges_and_is_tagged() -> None:
    argv = bridgefw.insert_argv("iptables", "ab1s", "ab1")
    assert argv == [
        "iptables", "-w", "-I", "FORWARD", "-i", "ab1s+", "-o", "ab1s+",
        "-m", "comment", "--comment", "bcfl-run-ab1", "-j", "ACCEPT",
    ]  # fmt: skip
    assert bridgefw.delete_argv("iptables", "ab1s", "ab1")[2:] == ["-D", *argv[3:]]


@pytest.mark.parametrize(
    ("sysctls", "tools", "expected"),
    [
        ({"bridge-nf-call-iptables": "1", "bridge-nf-call-ip6tables": "1"}, None,
         ["iptables", "ip6tables"]),
        ({"bridge-nf-call-iptables": "1", "bridge-nf-call-ip6tables": "0"}, None, ["iptables"]),
        ({}, None, []),  # no br_netfilter: bridged frames never meet iptables
        ({"bridge-nf-call-iptables": "1"}, {"ip6tables"}, []),  # no iptables binary
    ],
)  # fmt: skip
def test_rules_only_where_br_netfilter_sends_bridged_frames(
    sysctls: dict[str, str], tools: set[str] | None, expected: list[str]
) -> None:
    def which(tool: str) -> str | None:
        return tool if tools is None or tool in tools else None

    assert bridgefw.families_needed(sysctls.get, which) == expected


def test_start_then_stop_restores_exactly_and_clean_finds_a_crashed_runs_rules() -> None:
    fake = FakeIptables()
    fake.rules["iptables"] = ["-A FORWARD -j DOCKER-USER"]
    on = {"bridge-nf-call-iptables": "1", "bridge-nf-call-ip6tables": "1"}
    fw = bridgefw.BridgeForwarding("ab1", "ab1s", runner=fake, sysctl=on.get, which=all_tools)
    fw.start()
    assert fake.rules["iptables"][0].endswith("--comment bcfl-run-ab1 -j ACCEPT")
    assert len(fake.rules["ip6tables"]) == 1
    fw.stop()
    assert fake.rules == {"iptables": ["-A FORWARD -j DOCKER-USER"], "ip6tables": []}

    crashed = bridgefw.BridgeForwarding("ab1", "ab1s", runner=fake, sysctl=on.get, which=all_tools)
    other = bridgefw.BridgeForwarding("zz9", "zz9s", runner=fake, sysctl=on.get, which=all_tools)
    crashed.start()
    other.start()
    removed = bridgefw.clean("ab1", runner=fake, which=all_tools)
    assert removed == ["iptables rule bcfl-run-ab1", "ip6tables rule bcfl-run-ab1"]
    assert all("bcfl-run-ab1" not in r for rules in fake.rules.values() for r in rules)
    assert sum("bcfl-run-zz9" in r for rules in fake.rules.values() for r in rules) == 2


def test_a_failed_insert_removes_what_was_inserted_and_says_why() -> None:
    fake = FakeIptables(fail_on="ip6tables")
    on = {"bridge-nf-call-iptables": "1", "bridge-nf-call-ip6tables": "1"}
    fw = bridgefw.BridgeForwarding("ab1", "ab1s", runner=fake, sysctl=on.get, which=all_tools)
    with pytest.raises(RuntimeError, match="ip6tables -w -I FORWARD"):
        fw.start()
    assert fake.rules["iptables"] == [] and fw.added == []


def test_tagged_rules_parses_quoted_comments() -> None:
    listing = (
        "-P FORWARD DROP\n"
        '-A FORWARD -i ab1s+ -o ab1s+ -m comment --comment "bcfl-run-ab1" -j ACCEPT\n'
        "-A FORWARD -i ab1s+ -m comment --comment bcfl-run-ab10 -j ACCEPT\n"
    )
    assert bridgefw.tagged_rules(listing, "ab1") == [
        ["-w", "-D", "FORWARD", "-i", "ab1s+", "-o", "ab1s+", "-m", "comment",
         "--comment", "bcfl-run-ab1", "-j", "ACCEPT"],
    ]  # fmt: skip


def test_mininets_warning_is_dropped_only_for_the_families_the_rules_cover() -> None:
    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("mininet", logging.WARNING, "", 0, msg, None, None)

    f = bridgefw.HandledWarning(["iptables"])
    warn = "Warning: Linux bridge may not work with net.bridge.bridge-nf-call-{} = 1"
    assert not f.filter(record(warn.format("iptables")))
    assert f.filter(record(warn.format("ip6tables")))
    assert f.filter(record(warn.format("arptables")))
    assert f.filter(record("*** Error: something else"))
