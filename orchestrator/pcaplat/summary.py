"""The per-link-class table and the two figures of `bcfl pcap latency`.

How it works
------------
The measured one-way delay is each message's ``one_way_ms`` (the sender's send record ->
the first byte at the receiver; see `latency` for why not the wire between two capture
points), against its route's configured delay (``route_delay_ms``), grouped by the route's
link classes (``route_class``): only messages whose receiver was captured and whose sender
logged the send (messages.csv) count.
Per link class (``latency.HopRow.link_class``): the configured delay (the median over the
class's rows: random links such as D2D and backhaul differ), the measured median and 95th
percentile, and the error (measured median - configured median). `latency_cdf.png` draws a
CDF of the measured delay per class with its configured delay dashed; `block_propagation.png`
draws, per node, each block's arrival on the wire, commit and store after its proposal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.pcaplat.blocks import BlockRow
from orchestrator.pcaplat.latency import HopRow

CDF_PNG = "latency_cdf.png"
BLOCKS_PNG = "block_propagation.png"


@dataclass(frozen=True)
class ClassDelay:
    """Configured vs measured one-way delay of one link class."""

    link_class: str
    delay_shaped_by: str
    hops: int
    configured_ms: float
    median_ms: float
    p95_ms: float

    @property
    def error_ms(self) -> float:
        """Measured median minus configured."""
        return self.median_ms - self.configured_ms


def class_delays(rows: list[HopRow]) -> list[ClassDelay]:
    """One `ClassDelay` per route class with at least one message measured end to end."""
    groups: dict[str, list[HopRow]] = {}
    for row in rows:
        if row.one_way_ms is not None and row.route_delay_ms is not None:
            groups.setdefault(row.route_class, []).append(row)
    out = []
    for cls, group in sorted(groups.items()):
        measured = np.array([r.one_way_ms for r in group], dtype=float)
        configured = np.array([r.route_delay_ms for r in group], dtype=float)
        out.append(
            ClassDelay(
                cls,
                group[0].delay_shaped_by,
                len(group),
                float(np.median(configured)),
                float(np.median(measured)),
                float(np.percentile(measured, 95)),
            )
        )
    return out


def table(delays: list[ClassDelay]) -> str:
    """The per-link-class table as text."""
    head = ("route class", "delay by", "messages", "configured", "median", "p95", "error")
    lines = [head]
    for d in delays:
        lines.append(
            (
                d.link_class,
                d.delay_shaped_by,
                str(d.hops),
                f"{d.configured_ms:.3f}",
                f"{d.median_ms:.3f}",
                f"{d.p95_ms:.3f}",
                f"{d.error_ms:+.3f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = [
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    text.insert(1, "  ".join("-" * w for w in widths))
    return (
        "one-way delay per route class (ms; measured: the sender's send record -> the first "
        "byte at the receiver; configured: the route's summed delay)\n" + "\n".join(text)
    )


def plot_cdf(rows: list[HopRow], delays: list[ClassDelay], out: Path) -> Path:
    """latency_cdf.png: CDF of the measured one-way delay per link class."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, d in enumerate(delays):
        values = np.sort(
            [
                r.one_way_ms
                for r in rows
                if r.route_class == d.link_class and r.one_way_ms is not None
            ]
        )
        color = f"C{i % 10}"
        y = np.arange(1, len(values) + 1) / len(values)
        ax.step(values, y, where="post", color=color, label=f"{d.link_class} (n={d.hops})")
        ax.axvline(d.configured_ms, color=color, linestyle="--", linewidth=0.8)
    ax.set_xlabel("one-way delay on the wire (ms); dashed: configured")
    ax.set_ylabel("CDF")
    ax.set_title("measured one-way delay per link class")
    if delays:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no hop captured at both ends", ha="center", transform=ax.transAxes)
    path = out / CDF_PNG
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_blocks(rows: list[BlockRow], out: Path) -> Path:
    """block_propagation.png: per node, arrival, commit and store of each block after its
    proposal (ms)."""
    plt = _pyplot()
    nodes = sorted({r.node for r in rows})
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.35 * len(nodes) + 1.5)))
    marks = [
        ("arrived_ms", "arrived on the wire", "o"),
        ("committed_ms", "committed", "s"),
        ("stored_ms", "stored", "^"),
    ]
    for field, label, marker in marks:
        xs, ys = [], []
        for r in rows:
            value = getattr(r, field)
            if value is not None and r.proposed_ms is not None:
                xs.append(value - r.proposed_ms)
                ys.append(nodes.index(r.node))
        ax.scatter(xs, ys, marker=marker, s=14, alpha=0.7, label=label)
    ax.set_yticks(range(len(nodes)), nodes)
    ax.set_xlabel("ms after the block's proposal")
    ax.set_title("block propagation per node")
    if rows:
        ax.legend(fontsize="small")
    path = out / BLOCKS_PNG
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
