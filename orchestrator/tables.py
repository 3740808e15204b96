"""A run directory's tables as typed pandas DataFrames, and the joins and summaries the
report, the HTML report and `bcfl compare` draw from (the joins and summaries of them are
`orchestrator.summaries`).

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
``meta.json`` and ``topology.json``.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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
    "load_run",
    "read_table",
    "require_pyarrow",
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
