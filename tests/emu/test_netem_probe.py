"""Kernel shaping on this machine: the netem probe and real HTB rates between namespaces.

Needs root and the ``ip``/``tc`` binaries. Every namespace is created here under a
unique name and deleted by that exact name; traffic only flows between them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from topologies import LinkKind, LinkSpec
from topologies.backends.netem import PROBE_PREFIX, apply_argv, probe_netem
from topologies.backends.tc import clear_argv, link_argv

_MISSING = [b for b in ("ip", "tc") if shutil.which(b) is None]
pytestmark = [
    pytest.mark.emu,
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, tc)"),
    pytest.mark.skipif(bool(_MISSING), reason=f"needs the binaries: {', '.join(_MISSING)}"),
]

# TCP goodput under HTB: HTB counts each frame's layer-2 length (MTU 1500 + 14 B Ethernet
# header = 1514 B on a veth), of which TCP delivers 1500 - 20 (IP) - 20 (TCP) - 12
# (timestamp option) = 1448 B of payload. ACKs go the other way, on the unshaped veth.
# Measured on the 2-core development machine, quiet: 95.5-95.7% of 10 and 50 Mbit/s. With
# the host overloaded (load average 8-13 on 2 cores) 94.3-96.6%: softirqs run late and the
# link idles. So the test checks rate x 1448/1514 within 3%, not "within 5% of the rate":
# that is only 0.6% away from the header overhead and failed under load. The sender asks for
# a 1 MB send buffer so that a starved sender process does not leave the HTB queue empty
# (with autotuning alone, 94.2% at 10 Mbit/s with both cores busy).
GOODPUT_PER_RATE = 1448 / 1514  # 0.9564
MODEL_TOLERANCE = 0.03
SEND_S = 3.0
WARMUP_S = 0.5
PORT = 5201

# The receiver times data by the kernel's arrival stamps (SO_TIMESTAMPNS, 35 on Linux), not
# by when it gets to read it: a receiver starved of CPU near the end would otherwise
# stretch the interval and under-measure.
_RECEIVER = """
import json, socket, struct, sys, time
SO_TIMESTAMPNS = 35
warmup = float(sys.argv[2])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[3])))
srv.listen(1)
print("ready", flush=True)
conn, _ = srv.accept()
conn.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
buf = bytearray(1 << 16)
total = base = stamped = 0
first = t0 = last = None
while True:
    n, anc, _, _ = conn.recvmsg_into([buf], 64)
    if n == 0:
        break
    now = time.time()
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", data[:16])
            now = sec + nsec / 1e9
            stamped += 1
    total += n
    if first is None:
        first = now
    if t0 is None and now - first >= warmup:
        t0, base = now, total
    last = now
out = {"bytes": total - base, "seconds": last - t0, "total": total, "stamped": stamped}
print(json.dumps(out), flush=True)
"""

_SENDER = """
import socket, sys, time
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
sock.connect((sys.argv[1], int(sys.argv[3])))
chunk = b"x" * (1 << 16)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    sock.sendall(chunk)
sock.shutdown(socket.SHUT_WR)
sock.close()
"""


@dataclass(frozen=True)
class VethPair:
    """Two namespaces joined by a veth pair: tx_if in tx_ns, rx_if (with rx_ip) in rx_ns."""

    tx_ns: str
    rx_ns: str
    tx_if: str
    rx_if: str
    rx_ip: str


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=10).stdout


@pytest.fixture
def veth_pair() -> Iterator[VethPair]:
    tag = f"bcfl-emu-{os.getpid()}-{secrets.token_hex(3)}"
    pair = VethPair(f"{tag}-tx", f"{tag}-rx", "vtx", "vrx", "10.213.0.2")
    created: list[str] = []
    try:
        for ns in (pair.tx_ns, pair.rx_ns):
            apply_argv([["ip", "netns", "add", ns]])
            created.append(ns)
        tx, rx = pair.tx_ns, pair.rx_ns
        apply_argv(
            [
                ["ip", "-n", tx, "link", "add", pair.tx_if, "type", "veth",
                 "peer", "name", pair.rx_if, "netns", rx],
                ["ip", "-n", tx, "addr", "add", "10.213.0.1/30", "dev", pair.tx_if],
                ["ip", "-n", rx, "addr", "add", f"{pair.rx_ip}/30", "dev", pair.rx_if],
                ["ip", "-n", tx, "link", "set", "lo", "up"],
                ["ip", "-n", rx, "link", "set", "lo", "up"],
                ["ip", "-n", tx, "link", "set", pair.tx_if, "up"],
                ["ip", "-n", rx, "link", "set", pair.rx_if, "up"],
            ]
        )  # fmt: skip
        yield pair
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def _link(bw: float, delay: float = 0.0) -> LinkSpec:
    return LinkSpec("mec-0", "dev-0", LinkKind.BACKHAUL, bw, delay)


def _goodput_mbit(pair: VethPair) -> float:
    """Send over TCP tx_ns -> rx_ns for SEND_S seconds; return the receiver's goodput."""
    args = [pair.rx_ip, str(WARMUP_S), str(PORT)]
    ns_py = ["ip", "netns", "exec"]
    receiver = subprocess.Popen(
        [*ns_py, pair.rx_ns, sys.executable, "-c", _RECEIVER, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == "ready", receiver.stderr
        args[1] = str(SEND_S)
        subprocess.run(
            [*ns_py, pair.tx_ns, sys.executable, "-c", _SENDER, *args],
            check=True,
            capture_output=True,
            timeout=60,
        )
        out, err = receiver.communicate(timeout=60)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    assert receiver.returncode == 0, err
    result = json.loads(out)
    assert result["stamped"] > 0, "the kernel gave no receive timestamps"
    return float(result["bytes"]) * 8 / float(result["seconds"]) / 1e6


def test_probe_answers_and_leaves_no_namespace() -> None:
    probe_netem.cache_clear()
    probe = probe_netem()
    mine = f"{PROBE_PREFIX}{os.getpid()}-"
    assert mine not in _run(["ip", "netns", "list"])
    assert probe is probe_netem()  # cached per process
    if not probe.available:
        assert "netem" in probe.reason or "qdisc" in probe.reason, probe.reason


def test_kernel_netem_matches_the_probe(veth_pair: VethPair) -> None:
    argvs = link_argv(veth_pair.tx_if, _link(bw=100, delay=10), delay_in_kernel=True)
    if probe_netem().available:
        apply_argv(argvs, netns=veth_pair.tx_ns)
        shown = _run(["tc", "-n", veth_pair.tx_ns, "qdisc", "show", "dev", veth_pair.tx_if])
        assert "netem 10:" in shown and "delay 10ms" in shown, shown
    else:
        apply_argv(argvs[:2], netns=veth_pair.tx_ns)  # HTB alone works on any kernel
        with pytest.raises(RuntimeError, match="netem") as info:
            apply_argv(argvs[2:], netns=veth_pair.tx_ns)
        print(f"netem unavailable, as probed: {info.value}")


def test_htb_limits_tcp_goodput(veth_pair: VethPair) -> None:
    dev, ns = veth_pair.tx_if, veth_pair.tx_ns
    measured: dict[float, float] = {}
    for rate in (10.0, 50.0):
        if measured:
            apply_argv(clear_argv(dev), netns=ns)
        apply_argv(link_argv(dev, _link(bw=rate, delay=20), delay_in_kernel=False), netns=ns)
        measured[rate] = _goodput_mbit(veth_pair)
    print(f"goodput under HTB (Mbit/s, configured -> measured): {measured}")
    for rate, got in measured.items():  # HTB never lets more through
        model = rate * GOODPUT_PER_RATE
        assert got - model <= MODEL_TOLERANCE * model, (rate, got, model)
    short = {r: g for r, g in measured.items() if g < (1 - MODEL_TOLERANCE) * r * GOODPUT_PER_RATE}
    if short:  # too little: HTB, or a machine that cannot push that much at all?
        apply_argv(clear_argv(dev), netns=ns)
        capacity = _goodput_mbit(veth_pair)
        if all(capacity < 2 * rate for rate in short):
            pytest.skip(
                f"this machine carries only {capacity:.1f} Mbit/s over an unshaped veth now "
                f"(e.g. QEMU TCG on a busy host): too slow to check HTB at {sorted(short)} Mbit/s"
            )
        raise AssertionError(f"goodput below HTB's rate: {short}; unshaped {capacity:.1f}")
