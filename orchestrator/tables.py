"""A run directory's tables as typed pandas DataFrames, and the joins and summaries the
report, the HTML report and `bcfl compare` draw from.

How it works: each CSV a run writes (``metrics.csv`` and ``counters.csv`` by
`orchestrator.collect`, ``events.csv`` by the runner, ``blocks.csv`` by
`node.ledger.timing`, and, where ``bcfl pcap latency`` ran, ``latency.csv`` and
``latency_blocks.csv``) is read whole as text, checked (UTF-8, not cut off mid-row, no row
longer than the header, the columns this module needs present) and parsed by pandas with
every cell a string; then each column this module knows gets its type: nullable integers
(``Int64``), floats (NaN where empty) or strings (``""`` where empty). A column it does not
know becomes numeric where every non-empty cell is a number, a string otherwise (our
choice: a newer writer's extra column is kept, never refused), and a known column a file
lacks is added empty (an older run's file still loads). Anything wrong is a `TableError`,
one line naming the file. `load_run` loads them all (the optional ones as empty frames), with
``meta.json`` and ``topology.json``; the functions below it join and summarise.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from node.ledger.timing import BLOCKS_CSV
from orchestrator.collect import GOSSIP_COLUMNS

__all__ = [
    "BLOCKS_CSV",
    "COUNTERS_CSV",
    "EVENTS_CSV",
    "LATENCY_BLOCKS_CSV",
    "LATENCY_CSV",
    "METRICS_CSV",
    "PARQUET_EXTRA",
    "RunTables",
    "TableError",
    "by_task",
    "chain_summary",
    "counters_summary",
    "device_mean_accuracy",
    "drops_by_reason",
    "event_marks",
    "global_rounds",
    "latency_blocks_summary",
    "latency_by_class",
    "load_run",
    "one_way_by_route",
    "read_table",
    "require_pyarrow",
    "rounds_with_events",
    "run_summary",
    "write_parquet",
]

METRICS_CSV = "metrics.csv"
COUNTERS_CSV = "counters.csv"
EVENTS_CSV = "events.csv"
LATENCY_CSV = "latency.csv"
LATENCY_BLOCKS_CSV = "latency_blocks.csv"
PARQUET_EXTRA = "parquet"

Kind = Literal["str", "int", "float"]


class TableError(ValueError):
    """A run's table is missing, cut off or malformed: one line naming the file."""


def _kinds(strs: set[str], ints: set[str], floats: set[str]) -> dict[str, Kind]:
    out: dict[str, Kind] = dict.fromkeys(strs, "str")
    out |= dict.fromkeys(ints, "int")
    return out | dict.fromkeys(floats, "float")


_GOSSIP_MAPS = {"gossip_invalid", "gossip_dropped", "gossip_invalid_from", "gossip_relayed_from"}

# metrics.csv: a column of METRIC_COLUMNS named in none of these sets takes `_auto`'s type
METRIC_TYPES = _kinds(
    {"run", "scheme", "node", "role", "task_chain", "eval_set", "missing", "rejected"}
    | {"rejected_reasons", "behaviour", "decision", "proposer", "withheld", "eval_data"}
    | {"accepted", "block_chain"},
    {"round", "samples", "contributors", "qualified", "transfer_bytes", "offloaded"}
    | {"offload_bytes", "block_height"},
    {"accuracy", "loss", "round_time_s", "train_time_s", "emd", "elapsed_s", "wall_time"}
    | {"predicted_transfer_s", "transfer_s", "energy_compute_j", "energy_transfer_j"}
    | {"energy_total_j", "battery_j", "contract_accuracy", "update_sent_ms"}
    | {"global_received_ms", "block_proposed_ms", "block_certified_ms", "block_stored_ms"}
    | {"block_latency_ms"},
)
COUNTER_TYPES = _kinds(
    {"node", "role", "dropped"} | _GOSSIP_MAPS,
    {"sent_msgs", "sent_bytes", "recv_msgs", "recv_bytes"} | set(GOSSIP_COLUMNS) - _GOSSIP_MAPS,
    set(),
)
EVENT_TYPES: dict[str, Kind] = {
    "round": "int",
    "action": "str",
    "nodes": "str",
    "behaviour": "str",
    "params": "str",
    "link": "str",
    "applied_by": "str",
    "detail": "str",
    "elapsed_s": "float",
}
BLOCK_TYPES: dict[str, Kind] = {
    "chain": "str",
    "height": "int",
    "hash": "str",
    "node": "str",
    **dict.fromkeys(
        ("proposed_ms", "certified_ms", "received_ms", "validated_ms", "stored_ms"), "float"
    ),
    **dict.fromkeys(("storage_ms", "t_ms", "delay_ms", "delay_t"), "float"),
    "proposed_from": "str",
    "round": "int",  # the FL round of the block (a later column; empty where unknown)
}
# latency.csv and latency_blocks.csv (`bcfl pcap latency`): the columns read here; other
# ones known to be text are typed so, the rest take `_auto`'s type.
LATENCY_TYPES: dict[str, Kind] = {
    **dict.fromkeys(("msg_type", "sender", "receiver", "src_node", "dst_node"), "str"),
    **dict.fromkeys(("path", "link_class", "route_class", "delay_shaped_by"), "str"),
    "src_capture": "str",
    "dst_capture": "str",
    "seq": "int",
    "bytes": "int",
    **dict.fromkeys(
        ("configured_delay_ms", "route_delay_ms", "propagation_ms", "one_way_ms"), "float"
    ),
    **dict.fromkeys(("wire_ms", "total_ms"), "float"),
}
LATENCY_BLOCK_TYPES: dict[str, Kind] = {
    **dict.fromkeys(("chain", "hash", "node", "arrived_from", "arrived_type"), "str"),
    "height": "int",
    **dict.fromkeys(("proposed_ms", "arrived_ms", "committed_ms", "stored_ms"), "float"),
}


def _truncated(text: str) -> bool:
    """Whether the text's last line was cut off: no line break after it, and fewer fields
    than the header (every writer of these files ends each row with a line break)."""
    if not text or text.endswith(("\n", "\r")):
        return False
    lines = text.splitlines()
    if len(lines) < 2:
        return True  # a header without its line break
    header = next(csv.reader([lines[0]]))
    try:
        last = next(csv.reader([lines[-1]]))
    except csv.Error:
        return True
    return len(last) < len(header)


def _numeric(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values.where(values != "", None), errors="coerce")


def _typed(values: pd.Series, kind: Kind) -> pd.Series:
    if kind == "str":
        return values.fillna("").astype(str)
    numbers = _numeric(values)
    if kind == "float":
        return numbers.astype("float64")
    whole = numbers.dropna()
    if (whole % 1 == 0).all():
        return numbers.astype("Int64")
    return numbers.astype("float64")  # our choice: a fraction in an int column is kept


def _auto(values: pd.Series) -> pd.Series:
    """An unknown column: numeric where every non-empty cell is a number, else strings."""
    filled = values.fillna("").astype(str)
    numbers = _numeric(filled)
    if numbers.notna().sum() == (filled != "").sum():
        return numbers.astype("float64")
    return filled


def read_table(
    path: Path,
    types: Mapping[str, Kind],
    required: Iterable[str] = (),
    nonnull: Iterable[str] = (),
) -> pd.DataFrame:
    """The CSV at `path` as a DataFrame with `types` applied (see the module docstring);
    `required`: columns it must have, `nonnull`: columns every row must fill with a value of
    its type. A missing, unreadable, cut-off or malformed file: `TableError`."""
    name = str(path)
    if not path.is_file():
        raise TableError(f"{name}: missing")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise TableError(f"{name}: unreadable ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise TableError(f"{name}: not a UTF-8 text file") from None
    if not text.strip():
        raise TableError(f"{name}: empty (no header row)")
    if _truncated(text):
        raise TableError(f"{name}: truncated (its last row is cut off)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            raw = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, index_col=False)
    except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError) as exc:
        detail = " ".join(str(exc).split())
        raise TableError(f"{name}: malformed CSV ({detail[:160]})") from None
    for column in required:
        if column not in raw.columns:
            raise TableError(f"{name}: no {column!r} column")
    df = pd.DataFrame(index=raw.index)
    for column in raw.columns:
        kind = types.get(column)
        df[column] = _auto(raw[column]) if kind is None else _typed(raw[column], kind)
    for column, kind in types.items():
        if column not in df.columns:
            df[column] = _typed(pd.Series([""] * len(df), index=df.index, dtype=str), kind)
    for column in nonnull:
        bad = df.index[df[column].isna() | (df[column].astype(str) == "")]
        if len(bad):
            line = int(bad[0]) + 2
            raise TableError(
                f"{name}: line {line}: {column} is {raw[column].iloc[bad[0]]!r}; "
                f"allowed: a {types.get(column, 'str')} value"
            )
    return df.reset_index(drop=True)


def _optional(
    path: Path,
    types: Mapping[str, Kind],
    required: Iterable[str] = (),
    nonnull: Iterable[str] = (),
) -> pd.DataFrame:
    """`read_table`, or an empty frame of `types` where the file does not exist."""
    if not path.exists():
        return pd.DataFrame({c: _typed(pd.Series([], dtype=str), k) for c, k in types.items()})
    return read_table(path, types, required, nonnull)


def _json(path: Path) -> dict[str, Any]:
    """A JSON object file ({} where it does not exist)."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TableError(f"{path}: not a readable JSON file ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise TableError(f"{path}: not a JSON object")
    return data


@dataclass
class RunTables:
    """Everything `load_run` read from one run directory (optional tables: empty frames)."""

    run_dir: Path
    metrics: pd.DataFrame
    counters: pd.DataFrame
    events: pd.DataFrame
    blocks: pd.DataFrame
    latency: pd.DataFrame
    latency_blocks: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    topology: dict[str, Any] = field(default_factory=dict)

    def frames(self) -> dict[str, pd.DataFrame]:
        """The tables by name (the CSV's stem), the empty ones left out."""
        named = {
            "metrics": self.metrics,
            "counters": self.counters,
            "events": self.events,
            "blocks": self.blocks,
            "latency": self.latency,
            "latency_blocks": self.latency_blocks,
        }
        return {k: v for k, v in named.items() if len(v)}


def load_metrics(run_dir: Path) -> pd.DataFrame:
    """metrics.csv (required: a run without it is no run)."""
    return read_table(
        Path(run_dir) / METRICS_CSV, METRIC_TYPES, ("round", "role", "accuracy"), ("round",)
    )


def load_events(run_dir: Path) -> pd.DataFrame:
    """events.csv (empty where the run has none)."""
    return _optional(Path(run_dir) / EVENTS_CSV, EVENT_TYPES, ("round", "action"), ("round",))


def load_blocks(run_dir: Path) -> pd.DataFrame:
    """blocks.csv (empty where the run has none)."""
    return _optional(Path(run_dir) / BLOCKS_CSV, BLOCK_TYPES, ("chain", "height"), ("height",))


def load_run(run_dir: Path) -> RunTables:
    """Every table of `run_dir`; a directory without metrics.csv is not a run (`TableError`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TableError(f"{run_dir}: not a directory")
    if not (run_dir / METRICS_CSV).exists():
        raise TableError(f"{run_dir / METRICS_CSV}: missing; {run_dir} is not a run directory")
    return RunTables(
        run_dir=run_dir,
        metrics=load_metrics(run_dir),
        counters=_optional(run_dir / COUNTERS_CSV, COUNTER_TYPES, ("node",)),
        events=load_events(run_dir),
        blocks=load_blocks(run_dir),
        latency=_optional(run_dir / LATENCY_CSV, LATENCY_TYPES),
        latency_blocks=_optional(
            run_dir / LATENCY_BLOCKS_CSV, LATENCY_BLOCK_TYPES, ("chain", "height")
        ),
        meta=_json(run_dir / "meta.json"),
        topology=_json(run_dir / "topology.json"),
    )


# ---- joins and summaries ----------------------------------------------------------------


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


# ---- parquet ----------------------------------------------------------------------------


def require_pyarrow() -> None:
    """Raise `TableError` (one line naming the extra to install) where pyarrow is missing."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise TableError(
            f"--parquet needs pyarrow: pip install 'bcfl-testbed[{PARQUET_EXTRA}]'"
        ) from None


def write_parquet(
    frames: Mapping[str, pd.DataFrame], out_dir: Path, prefix: str = ""
) -> list[Path]:
    """Write each frame as ``out_dir/<prefix><name>.parquet``; returns the paths."""
    require_pyarrow()
    paths = []
    for name, frame in frames.items():
        path = Path(out_dir) / f"{prefix}{name}.parquet"
        frame.to_parquet(path, index=False)
        paths.append(path)
    return paths
