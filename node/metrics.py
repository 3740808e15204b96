"""Per-node metrics as JSON lines in `nodes/<id>/metrics.jsonl`, flushed per record."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, TextIO


class MetricsWriter:
    """Appends one JSON object per line; every record gets the node id and a wall-clock stamp."""

    def __init__(self, path: Path, common: dict[str, Any]) -> None:
        self._file: TextIO = path.open("a", buffering=1)
        self._common = common

    def write(self, event: str, **fields: Any) -> None:
        """Append a record of kind `event`."""
        record = {"event": event, **self._common, "wall_time": time.time(), **fields}
        self._file.write(json.dumps(record, default=_jsonable) + "\n")

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def _jsonable(obj: object) -> object:
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
