"""The tc command lines built for kernel shaping (pure: nothing is run)."""

from __future__ import annotations

import pytest

from topologies import LinkKind, LinkSpec
from topologies.backends.tc import (
    clear_argv,
    fmt_loss,
    fmt_ms,
    fmt_rate,
    htb_argv,
    link_argv,
    netem_argv,
    netem_limit,
    shaping_plan,
)


def _link(bw: float = 10.0, delay: float = 0.0, jitter: float = 0.0, loss: float = 0.0) -> LinkSpec:
    return LinkSpec("mec-0", "dev-0", LinkKind.CELLULAR, bw, delay, jitter, loss)


HTB_10 = [
    ["tc", "qdisc", "add", "dev", "eth0", "root", "handle", "5:", "htb", "default", "1"],
    [
        "tc", "class", "add", "dev", "eth0", "parent", "5:", "classid", "5:1", "htb",
        "rate", "10.000000Mbit", "ceil", "10.000000Mbit", "burst", "15k", "cburst", "15k",
    ],
]  # fmt: skip


def test_formats_follow_mininet() -> None:
    assert fmt_rate(10) == "10.000000Mbit"
    assert fmt_rate(0.5) == "0.500000Mbit"
    assert fmt_rate(12.3456789) == "12.345679Mbit"
    assert fmt_ms(10) == "10.000ms"
    assert fmt_ms(0.25) == "0.250ms"
    assert fmt_loss(1) == "1.00000%"
    assert fmt_loss(0.001) == "0.00100%"


def test_htb_argv_root_and_class() -> None:
    assert htb_argv("eth0", 10) == HTB_10


@pytest.mark.parametrize("rate", [0, -1.0, float("nan")])
def test_htb_argv_rejects_bad_rate(rate: float) -> None:
    with pytest.raises(ValueError, match="rate_mbit"):
        htb_argv("eth0", rate)


def test_netem_argv_delay_only() -> None:
    assert netem_argv("eth0", "5:1", 10, 0, 0) == [
        "tc", "qdisc", "add", "dev", "eth0", "parent", "5:1", "handle", "10:", "netem",
        "limit", "1000", "delay", "10.000ms",
    ]  # fmt: skip


def test_netem_argv_jitter_adds_normal_distribution() -> None:
    argv = netem_argv("eth0", "5:1", 20, 4.5, 0, limit=2000)
    assert argv[-7:] == [
        "limit", "2000", "delay", "20.000ms", "4.500ms", "distribution", "normal",
    ]  # fmt: skip


def test_netem_argv_jitter_without_delay_still_gives_delay() -> None:
    argv = netem_argv("eth0", "5:1", 0, 3, 0)
    assert argv[-5:] == ["delay", "0.000ms", "3.000ms", "distribution", "normal"]


def test_netem_argv_loss_only() -> None:
    argv = netem_argv("eth0", "5:1", 0, 0, 2.5)
    assert argv[-4:] == ["limit", "1000", "loss", "2.50000%"]
    assert "delay" not in argv


def test_netem_argv_all_three() -> None:
    argv = netem_argv("veth1", "5:1", 5, 1, 0.1)
    assert argv[10:] == [
        "limit", "1000", "delay", "5.000ms", "1.000ms", "distribution", "normal",
        "loss", "0.10000%",
    ]  # fmt: skip


@pytest.mark.parametrize(("delay", "jitter", "loss", "limit"), [(-1, 0, 0, 1000), (0, 0, 0, 0)])
def test_netem_argv_rejects_bad_values(
    delay: float, jitter: float, loss: float, limit: int
) -> None:
    with pytest.raises(ValueError):
        netem_argv("eth0", "5:1", delay, jitter, loss, limit=limit)


def test_link_argv_zero_delay_means_no_netem() -> None:
    assert link_argv("eth0", _link(bw=10), delay_in_kernel=True) == HTB_10


def test_link_argv_userspace_delay_means_no_netem() -> None:
    link = _link(bw=10, delay=30, jitter=5, loss=1)
    assert link_argv("eth0", link, delay_in_kernel=False) == HTB_10


def test_link_argv_kernel_delay_adds_netem_under_htb_class() -> None:
    link = _link(bw=10, delay=30, jitter=5, loss=1)
    argvs = link_argv("eth0", link, delay_in_kernel=True)
    assert argvs[:2] == HTB_10
    assert argvs[2] == [
        "tc", "qdisc", "add", "dev", "eth0", "parent", "5:1", "handle", "10:", "netem",
        "limit", "1000", "delay", "30.000ms", "5.000ms", "distribution", "normal",
        "loss", "1.00000%",
    ]  # fmt: skip


def test_link_argv_loss_alone_adds_netem() -> None:
    argvs = link_argv("eth0", _link(loss=0.5), delay_in_kernel=True)
    assert len(argvs) == 3
    assert argvs[2][-2:] == ["loss", "0.50000%"]


def test_netem_limit_grows_with_bandwidth_delay_product() -> None:
    assert netem_limit(_link(bw=10, delay=10)) == 1000
    # 1000 Mbit/s x (100 + 4*10) ms = 17.5 MB = 11558.7 frames of 1514 B; doubled.
    assert netem_limit(_link(bw=1000, delay=100, jitter=10)) == 2 * 11559
    argvs = link_argv("eth0", _link(bw=1000, delay=100, jitter=10), delay_in_kernel=True)
    assert argvs[2][10:12] == ["limit", "23118"]


def test_clear_argv() -> None:
    assert clear_argv("eth0") == [["tc", "qdisc", "del", "dev", "eth0", "root"]]


def test_shaping_plan_with_netem() -> None:
    assert shaping_plan(_link(delay=10, jitter=0, loss=1), netem=True) == {
        "bandwidth": "kernel(htb)",
        "delay": "kernel(netem)",
        "jitter": "none",
        "loss": "kernel(netem)",
    }


def test_shaping_plan_without_netem() -> None:
    assert shaping_plan(_link(delay=10, jitter=2, loss=0), netem=False) == {
        "bandwidth": "kernel(htb)",
        "delay": "userspace",
        "jitter": "userspace",
        "loss": "none",
    }


def test_shaping_plan_agrees_with_link_argv() -> None:
    for link in (_link(), _link(delay=1), _link(jitter=1), _link(loss=1)):
        for netem in (True, False):
            plan = shaping_plan(link, netem)
            has_netem = len(link_argv("eth0", link, delay_in_kernel=netem)) == 3
            assert has_netem == any(v == "kernel(netem)" for v in plan.values())
