"""Pure parser for the IDX file format used by (Fashion-)MNIST; never unpickles anything."""

from __future__ import annotations

import gzip
import logging
import os
import struct
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# IDX type code -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/).
IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_MAX_DIMS = 8


class DatasetError(ValueError):
    """A dataset is unknown, missing or malformed; the message says how to fix it."""


def _read_bytes(path: Path) -> bytes:
    """Read a file, transparently decompressing it when its name ends in .gz."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise DatasetError(f"IDX file not found: {path}") from exc
    except (OSError, EOFError) as exc:
        raise DatasetError(f"cannot read IDX file {path}: {exc}") from exc


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into a native-endian array, validating the magic number and sizes."""
    if len(data) < 4:
        raise DatasetError(f"{source}: truncated IDX header ({len(data)} bytes)")
    zero0, zero1, type_code, ndims = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or type_code not in IDX_DTYPES or not 1 <= ndims <= _MAX_DIMS:
        raise DatasetError(f"{source}: bad IDX magic number {data[:4].hex()}")
    header_len = 4 + 4 * ndims
    if len(data) < header_len:
        raise DatasetError(f"{source}: truncated IDX header (need {header_len} bytes)")
    dims = struct.unpack(f">{ndims}I", data[4:header_len])
    dtype = np.dtype(IDX_DTYPES[type_code])
    expected = header_len + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DatasetError(
            f"{source}: IDX size mismatch: dims {dims} need {expected} bytes, file has {len(data)}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzipped when the name ends in .gz) into a numpy array."""
    p = Path(path)
    array = parse_idx(_read_bytes(p), source=str(p))
    logger.debug("read IDX %s: shape=%s dtype=%s", p, array.shape, array.dtype)
    return array
