"""Build (never run) the `tc` command lines that shape one directed link in the kernel.

How it works
------------
A directed link ``src -> dst`` is shaped on the egress interface of ``src``. The layout
is Mininet's ``TCIntf`` with ``bw`` set and HTB (its default):

    root  handle 5:   htb default 1          every packet falls into class 5:1
    class 5:1         htb rate R ceil R      the bandwidth limit, burst and cburst 15k
    qdisc 10:         netem (child of 5:1)   delay [jitter distribution normal] loss

The netem child is emitted only when the caller shapes delay in the kernel
(``delay_in_kernel``) and the link has a non-zero delay, jitter or loss. On kernels without
``sch_netem`` (see ``topologies.backends.netem.probe_netem``) delay, jitter and loss are
shaped in user space (``node.transport.shaping``) and only HTB runs in the kernel;
`shaping_plan` records which way each parameter went, for the run's meta.json.

Formats (fixed here, tested in tests/unit/test_tc.py): rates as Mininet writes them,
``'%fMbit'`` (``10.000000Mbit``, megabits of 10^6 bits); times as ``'%.3fms'``; loss as
``'%.5f%%'`` (Mininet's five decimals, with an explicit percent sign). HTB counts each
packet's length at layer 2 (Ethernet header included, no preamble or FCS).

One change from Mininet: ``cburst 15k``. Mininet leaves cburst to tc, which picks about one
MTU (1600 b); then a late dequeue wake-up cannot be made up, and TCP got 94.0% of a
10 Mbit/s link on a veth instead of the 95.6% that headers allow (1448 of every 1514 B);
with cburst 15k it gets 95.5-95.8% (tests/emu/test_netem_probe.py).

Every argv starts with ``tc`` and uses ``add``: it is meant for an interface that has no
qdisc of ours yet. To reshape an interface, run `clear_argv` first (``tc qdisc replace``
cannot change an existing HTB root in place on Linux).
"""

from __future__ import annotations

from topologies.spec import LinkSpec

ROOT_HANDLE = "5:"
HTB_CLASS = "5:1"
NETEM_HANDLE = "10:"
HTB_BURST = "15k"
NETEM_MIN_LIMIT = 1000
_FULL_FRAME_BYTES = 1514  # MTU 1500 + Ethernet header: what HTB/netem count per packet


def fmt_rate(rate_mbit: float) -> str:
    """Format a rate the way Mininet does (``'%fMbit'``)."""
    return f"{rate_mbit:f}Mbit"


def fmt_ms(value_ms: float) -> str:
    """Format a time in milliseconds for tc (microsecond resolution)."""
    return f"{value_ms:.3f}ms"


def fmt_loss(loss_pct: float) -> str:
    """Format a loss percentage for netem (Mininet's five decimals, plus ``%``)."""
    return f"{loss_pct:.5f}%"


def htb_argv(dev: str, rate_mbit: float) -> list[list[str]]:
    """Return the root HTB qdisc and its single class limiting `dev` to `rate_mbit`."""
    if not rate_mbit > 0:
        raise ValueError(f"rate_mbit: {rate_mbit!r} is invalid; allowed: a number > 0")
    rate = fmt_rate(rate_mbit)
    return [
        ["tc", "qdisc", "add", "dev", dev, "root", "handle", ROOT_HANDLE, "htb", "default", "1"],
        [
            "tc", "class", "add", "dev", dev, "parent", ROOT_HANDLE, "classid", HTB_CLASS,
            "htb", "rate", rate, "ceil", rate, "burst", HTB_BURST, "cburst", HTB_BURST,
        ],
    ]  # fmt: skip


def netem_argv(
    dev: str,
    parent: str,
    delay_ms: float,
    jitter_ms: float,
    loss_pct: float,
    limit: int = NETEM_MIN_LIMIT,
) -> list[str]:
    """Return the netem qdisc (handle 10:) under `parent` with delay, jitter and loss.

    ``delay`` is given when delay or jitter is non-zero; jitter adds
    ``distribution normal``; ``loss`` only when loss_pct > 0. `limit` is netem's queue
    length in packets: it must hold everything in flight during the delay.
    """
    for name, value in (("delay_ms", delay_ms), ("jitter_ms", jitter_ms), ("loss_pct", loss_pct)):
        if not value >= 0:
            raise ValueError(f"{name}: {value!r} is invalid; allowed: a number >= 0")
    if limit < 1:
        raise ValueError(f"limit: {limit!r} is invalid; allowed: an int >= 1")
    argv = ["tc", "qdisc", "add", "dev", dev, "parent", parent, "handle", NETEM_HANDLE, "netem"]
    argv += ["limit", str(limit)]
    if delay_ms > 0 or jitter_ms > 0:
        argv += ["delay", fmt_ms(delay_ms)]
        if jitter_ms > 0:
            argv += [fmt_ms(jitter_ms), "distribution", "normal"]
    if loss_pct > 0:
        argv += ["loss", fmt_loss(loss_pct)]
    return argv


def netem_limit(link: LinkSpec) -> int:
    """Return a netem queue length holding `link`'s bandwidth × (delay + 4·jitter) of frames.

    Full-size frames, doubled for headroom, never below netem's default of 1000 packets.
    """
    hold_s = (link.delay_ms + 4 * link.jitter_ms) / 1000
    frames = link.bandwidth_mbit * 1e6 * hold_s / (8 * _FULL_FRAME_BYTES)
    return max(NETEM_MIN_LIMIT, 2 * int(frames + 1))


def needs_netem(link: LinkSpec) -> bool:
    """Whether `link` has any delay, jitter or loss for netem to shape."""
    return link.delay_ms > 0 or link.jitter_ms > 0 or link.loss_pct > 0


def link_argv(dev: str, link: LinkSpec, delay_in_kernel: bool) -> list[list[str]]:
    """Return every tc command shaping `dev`, the egress interface of directed `link`.

    HTB always limits the bandwidth; a netem child adds delay, jitter and loss only when
    `delay_in_kernel` is set and the link has any of them.
    """
    argvs = htb_argv(dev, link.bandwidth_mbit)
    if delay_in_kernel and needs_netem(link):
        argvs.append(
            netem_argv(
                dev,
                HTB_CLASS,
                link.delay_ms,
                link.jitter_ms,
                link.loss_pct,
                limit=netem_limit(link),
            )
        )
    return argvs


def clear_argv(dev: str) -> list[list[str]]:
    """Return the command removing our shaping from `dev` (fails if it has none)."""
    return [["tc", "qdisc", "del", "dev", dev, "root"]]


def shaping_plan(link: LinkSpec, netem: bool) -> dict[str, str]:
    """Say where each parameter of `link` is shaped, for the run's meta.json.

    Values: ``kernel(htb)`` for bandwidth; for delay, jitter and loss ``kernel(netem)``
    when `netem` is used, ``userspace`` when not, and ``none`` when the value is zero.
    """
    where = "kernel(netem)" if netem else "userspace"
    return {
        "bandwidth": "kernel(htb)",
        "delay": where if link.delay_ms > 0 else "none",
        "jitter": where if link.jitter_ms > 0 else "none",
        "loss": where if link.loss_pct > 0 else "none",
    }
