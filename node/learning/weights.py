"""Model weights as plain numpy dicts, with strict validation of weights received over the wire."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where weights are moved in or out of a model, so that
    import torch  # validating a scenario (aggregators, attacks) does not import it
    from torch import nn

logger = logging.getLogger(__name__)

Weights = dict[str, np.ndarray]


def _numpy_dtype(tensor: torch.Tensor) -> np.dtype:
    """The numpy dtype get_weights uses for a tensor: float32 for floats, else the native one."""
    import torch

    if tensor.is_floating_point():
        return np.dtype(np.float32)
    return np.dtype(torch.empty(0, dtype=tensor.dtype).numpy().dtype)


def get_weights(model: nn.Module) -> Weights:
    """Contiguous numpy copies of the model's state_dict (parameters and buffers), in order."""
    out: Weights = {}
    for key, tensor in model.state_dict().items():
        array = tensor.detach().cpu().numpy()
        out[key] = np.array(array, dtype=_numpy_dtype(tensor), order="C", copy=True)
    return out


def set_weights(model: nn.Module, weights: Mapping[str, np.ndarray]) -> None:
    """Load weights into the model after checking keys, shapes and dtypes match exactly.

    Checked first, then copied in place into the model's parameters and buffers (through
    numpy views of their storage: what ``load_state_dict`` does, without its per-module
    walk and tensor wrapping; read-only arrays, such as those decoded from a message, need
    no copy first)."""
    state = model.state_dict()
    missing = [k for k in state if k not in weights]
    if missing:
        raise ValueError(f"weights missing key {missing[0]!r} ({len(missing)} missing)")
    unexpected = [k for k in weights if k not in state]
    if unexpected:
        raise ValueError(f"weights have unexpected key {unexpected[0]!r}")
    targets: list[tuple[np.ndarray, np.ndarray]] = []
    for key, tensor in state.items():
        array = weights[key]
        if not isinstance(array, np.ndarray):
            raise ValueError(f"weights[{key!r}] is {type(array).__name__}, not a numpy array")
        if array.shape != tuple(tensor.shape):
            raise ValueError(
                f"weights[{key!r}] has shape {array.shape}, expected {tuple(tensor.shape)}"
            )
        expected = _numpy_dtype(tensor)
        if array.dtype != expected:
            raise ValueError(f"weights[{key!r}] has dtype {array.dtype}, expected {expected}")
        if tensor.device.type != "cpu":
            raise ValueError(f"weights[{key!r}]: the model is not on the CPU")
        targets.append((tensor.numpy(), array))  # a view of the parameter's storage
    for target, array in targets:  # all checked: nothing is half loaded
        np.copyto(target, array)


def weights_nbytes(weights: Mapping[str, np.ndarray]) -> int:
    """Total size of the arrays in bytes."""
    return sum(int(a.nbytes) for a in weights.values())


def weights_to_bytes(weights: Mapping[str, np.ndarray]) -> bytes:
    """Deterministic bytes of a weights dict (sorted names; raw arrays with dtype and shape).

    This is what the blob store keeps and what a transaction's blob hash commits to.
    """
    from node.codec import encode_body

    return encode_body({name: weights[name] for name in sorted(weights)})


def weights_from_bytes(data: bytes, max_bytes: int = 1 << 30) -> Weights:
    """Inverse of `weights_to_bytes`; ValueError if `data` is not a map of arrays."""
    from node.codec import decode_body

    decoded = decode_body(data, max_bytes)
    if not all(isinstance(v, np.ndarray) for v in decoded.values()):
        raise ValueError("blob is not a map of arrays")
    return dict(decoded)
