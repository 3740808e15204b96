"""Joins and summaries of a run's tables (`orchestrator.tables`): the global model's rounds,
the fault events by round, per-chain block delays, drops by reason, per-link-class and
per-route latency, and one run's line of a comparison. The report, the HTML report and
`bcfl compare` draw from them.

How it works: every function takes the typed frames `orchestrator.tables.load_run` gives
(columns present and typed, empty frames where a file is missing) and returns a new frame
or a plain dict; nothing here reads files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.tables import RunTables


def global_rounds(metrics: pd.DataFrame) -> pd.DataFrame:
    """The publisher's rows with an accuracy (the global model's), by round then task."""
    pub = metrics[(metrics["role"] == "publisher") & metrics["accuracy"].notna()]
    return pub.sort_values(["round", "task_chain"], kind="stable").reset_index(drop=True)


def by_task(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """`rows` split by their ``task_chain`` ("" for a run of one task), by task name."""
    return {str(task): group for task, group in rows.groupby("task_chain", sort=True)}


def device_mean_accuracy(metrics: pd.DataFrame) -> pd.Series:
    """The devices' mean (local training) accuracy per round, by round."""
    dev = metrics[(metrics["role"] == "device") & metrics["accuracy"].notna()]
    return dev.groupby("round")["accuracy"].mean().sort_index()


def _event_label(ev: Mapping[str, Any]) -> str:
    target = str(ev.get("link") or ev.get("nodes") or "")
    if len(target) > 24:
        target = target[:21] + "..."
    parts = (str(ev["action"]), target, str(ev.get("behaviour") or ""))
    return " ".join(p for p in parts if p)


def _labels_by_round(events: pd.DataFrame) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for ev in events.to_dict("records"):
        labels = out.setdefault(int(ev["round"]), [])
        label = _event_label(ev)
        if label not in labels:
            labels.append(label)
    return dict(sorted(out.items()))


def event_marks(events: pd.DataFrame) -> list[tuple[float, str]]:
    """(x, label) per round with fault events: the line sits at round - 0.5, between the
    round that ended and the round the event lands in; the label names action and target
    ('crash dev0-2', 'link_down dev1-1-bs0', 'malicious dev0-0 sign_flip'), one line each."""
    return [(r - 0.5, "\n".join(labels)) for r, labels in _labels_by_round(events).items()]


def rounds_with_events(metrics: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """The global rounds (`global_rounds`) joined with the fault events that landed in each
    round (column ``events``: their labels, "; "-separated, "" for none)."""
    labels = pd.DataFrame(
        [(r, "; ".join(ls)) for r, ls in _labels_by_round(events).items()],
        columns=["round", "events"],
    ).astype({"round": "Int64"})
    out = global_rounds(metrics).merge(labels, on="round", how="left")
    out["events"] = out["events"].fillna("").astype(str)
    return out


def _p95(values: pd.Series) -> float:
    return float(values.quantile(0.95)) if len(values) else math.nan


def chain_summary(blocks: pd.DataFrame) -> pd.DataFrame:
    """Per chain, from blocks.csv: its blocks, the highest height, the nodes that stored a
    block (the most for any block), the storage time t (ms, the largest recorded) and each
    block's delay from its proposal to its storage at the last node keeping it (the paper's
    unified delay), in ms: mean, median, p95, max. One row per chain, by chain."""
    columns = ["chain", "blocks", "height", "nodes", "t_ms"]
    columns += ["delay_mean_ms", "delay_median_ms", "delay_p95_ms", "delay_max_ms"]
    if blocks.empty:
        return pd.DataFrame(columns=columns)
    per_block = blocks.groupby(["chain", "height"]).agg(
        proposed=("proposed_ms", "min"),
        stored=("stored_ms", "max"),
        t=("t_ms", "max"),
        nodes=("node", "size"),
    )
    per_block["delay"] = per_block["stored"] - per_block["proposed"]
    rows = []
    for chain, b in per_block.groupby(level="chain"):
        heights = b.index.get_level_values("height")
        rows.append(
            {
                "chain": str(chain),
                "blocks": len(b),
                "height": int(heights.max()),
                "nodes": int(b["nodes"].max()),
                "t_ms": float(b["t"].max()),
                "delay_mean_ms": float(b["delay"].mean()),
                "delay_median_ms": float(b["delay"].median()),
                "delay_p95_ms": _p95(b["delay"]),
                "delay_max_ms": float(b["delay"].max()),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _reasons(cell: str) -> dict[str, int]:
    """``reason=n;reason=n`` (collect's cell of a map) as a dict; a bare number: 'dropped'."""
    out: dict[str, int] = {}
    for part in str(cell).split(";"):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not key:
            continue
        if not sep:
            key, value = "dropped", key
        try:
            out[key] = out.get(key, 0) + int(float(value))
        except ValueError:
            continue
    return out


def drops_by_reason(counters: pd.DataFrame) -> pd.DataFrame:
    """One row per (node, role, reason) with the messages the node dropped for it (from
    counters.csv's ``dropped``; several rows of one node are summed), by node then reason."""
    rows = [
        (str(r["node"]), str(r["role"]), reason, n)
        for r in counters.to_dict("records")
        for reason, n in _reasons(r.get("dropped", "")).items()
    ]
    df = pd.DataFrame(rows, columns=["node", "role", "reason", "count"])
    if df.empty:
        return df.astype({"count": "int64"})
    out = df.groupby(["node", "role", "reason"], as_index=False)["count"].sum()
    return out.sort_values(["node", "reason"]).reset_index(drop=True)


def counters_summary(counters: pd.DataFrame) -> pd.DataFrame:
    """Per node (rows of one node summed): role, messages and bytes sent and received, and
    the messages it dropped (all reasons), by node."""
    columns = ["node", "role", "sent_msgs", "sent_bytes", "recv_msgs", "recv_bytes", "dropped"]
    if counters.empty:
        return pd.DataFrame(columns=columns)
    df = counters[["node", "role", "sent_msgs", "sent_bytes", "recv_msgs", "recv_bytes"]].copy()
    df["dropped"] = [sum(_reasons(c).values()) for c in counters["dropped"]]
    out = df.groupby(["node", "role"], as_index=False).sum(min_count=1)
    return out[columns].sort_values("node").reset_index(drop=True)


HOP_MEASURES = ("propagation_ms", "wire_ms", "total_ms")


def latency_by_class(latency: pd.DataFrame) -> pd.DataFrame:
    """Per link class of a hop (``link_class``; "all" where the file has no such column):
    the hops, their configured delay (median), and the median and p95 of each hop measure
    the file has (propagation between the two capture points, wire transfer, total)."""
    if latency.empty:
        return pd.DataFrame(columns=["link_class", "messages"])
    df = latency.copy()
    if (df["link_class"] == "").all():
        df["link_class"] = "all"
    rows = []
    for cls, g in df.groupby("link_class", sort=True):
        row: dict[str, Any] = {"link_class": str(cls), "messages": len(g)}
        row["configured_delay_ms"] = _median(g["configured_delay_ms"])
        for measure in HOP_MEASURES:
            values = g[measure] if measure in g else pd.Series(dtype=float)
            row[f"{measure[:-3]}_median_ms"] = _median(values)
            row[f"{measure[:-3]}_p95_ms"] = _p95(values.dropna())
        rows.append(row)
    return pd.DataFrame(rows)


def one_way_by_route(latency: pd.DataFrame) -> pd.DataFrame:
    """Per route class (``route_class``): the messages measured end to end (``one_way_ms``:
    the sender's send record -> the first byte at the receiver), the route's configured
    delay (median of ``route_delay_ms``), the one-way median and p95, and ``error_ms``
    (median minus configured): `bcfl pcap latency`'s table. Empty for a latency.csv without
    those columns (an older bcfl's)."""
    columns = ["route_class", "messages", "configured_delay_ms", "one_way_median_ms"]
    if latency.empty or not {"route_class", "route_delay_ms", "one_way_ms"} <= set(latency):
        return pd.DataFrame(columns=columns)
    df = latency[latency["one_way_ms"].notna() & latency["route_delay_ms"].notna()]
    rows = []
    for cls, g in df.groupby("route_class", sort=True):
        row: dict[str, Any] = {"route_class": str(cls), "messages": len(g)}
        row["configured_delay_ms"] = _median(g["route_delay_ms"])
        row["one_way_median_ms"] = _median(g["one_way_ms"])
        row["one_way_p95_ms"] = _p95(g["one_way_ms"])
        row["error_ms"] = row["one_way_median_ms"] - row["configured_delay_ms"]
        rows.append(row)
    return pd.DataFrame(rows, columns=[*columns, "one_way_p95_ms", "error_ms"])


def _median(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.median()) if len(values) else math.nan


def latency_blocks_summary(latency_blocks: pd.DataFrame) -> pd.DataFrame:
    """Per chain, from latency_blocks.csv: blocks, nodes, and the median and p95 from the
    proposal to the block's arrival, commit and storage at a node (ms; NaN where the file
    lacks the column)."""
    if latency_blocks.empty:
        return pd.DataFrame(columns=["chain", "blocks", "nodes"])
    rows = []
    for chain, g in latency_blocks.groupby("chain", sort=True):
        row: dict[str, Any] = {
            "chain": str(chain),
            "blocks": int(g["height"].nunique()),
            "nodes": int(g["node"].nunique()),
        }
        for stage in ("arrived", "committed", "stored"):
            delay = (g[f"{stage}_ms"] - g["proposed_ms"]).dropna()
            row[f"{stage}_median_ms"] = float(delay.median()) if len(delay) else math.nan
            row[f"{stage}_p95_ms"] = _p95(delay)
        rows.append(row)
    return pd.DataFrame(rows)


def run_summary(tables: RunTables, label: str) -> dict[str, Any]:
    """One run's line of a comparison: scheme, backend, seed (meta.json; the scheme from
    metrics.csv where meta.json lacks it), rounds, the final accuracy (the last round's
    global accuracy; where the run has several tasks, the mean of their last rounds': our
    choice), the mean round time, the blocks of every chain, and the messages dropped."""
    meta = tables.meta
    seed = meta.get("seed")
    pub = global_rounds(tables.metrics)
    scheme = meta.get("scheme") or (str(tables.metrics["scheme"].iloc[0]) if len(pub) else "")
    finals = [float(g["accuracy"].iloc[-1]) for g in by_task(pub).values()]
    times = pub["round_time_s"].dropna()
    blocks = tables.blocks[["chain", "height"]].drop_duplicates()
    return {
        "label": label,
        "run_dir": str(tables.run_dir),
        "scheme": str(scheme),
        "backend": str(meta.get("backend", "")),
        "seed": seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        "tasks": max(len(finals), 1) if len(pub) else 0,
        "rounds": int(pub["round"].max()) if len(pub) else 0,
        "final_accuracy": float(np.mean(finals)) if finals else math.nan,
        "mean_round_time_s": float(times.mean()) if len(times) else math.nan,
        "blocks": len(blocks),
        "drops": int(drops_by_reason(tables.counters)["count"].sum()),
    }
