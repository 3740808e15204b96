"""Local SGD training and evaluation on in-memory tensors (no DataLoader).

The SGD step is written out (`_sgd_step`): the same tensor operations, in the same order,
as ``torch.optim.SGD``'s single-tensor path on CPU (no weight decay, dampening 0, no
Nesterov), so the weights are bit-identical (`tests/unit/test_train_sgd.py` compares
them), without ``torch.optim``'s per-step wrappers and without the ~1 s, ~80 MB import of
``torch._dynamo`` (and sympy) that its first step triggers in every process (here: in the
fork server's warm-up, on the run's start-up path).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from node.learning.seeding import draws_from_global_rng, seeded_global_rng

logger = logging.getLogger(__name__)

_interop_configured = False


@dataclass(frozen=True)
class TrainResult:
    """Outcome of a local training run; loss and accuracy are over the final epoch's batches."""

    samples: int
    loss: float
    seconds: float
    steps: int
    accuracy: float = 0.0


@dataclass(frozen=True)
class EvalResult:
    """Accuracy and mean cross-entropy loss over an evaluation set."""

    accuracy: float
    loss: float
    samples: int


def _tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-copy (where possible) float32 inputs and int64 labels."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    if len(x) == 0:
        raise ValueError("no samples")
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    return xt, yt


def train_local(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    momentum: float = 0.0,
) -> TrainResult:
    """Train with minibatch SGD and cross-entropy, shuffling each epoch with a seeded generator.

    Reproducible: the shuffle has its own generator seeded with `seed`, and a model with
    dropout (which draws from torch's global CPU generator) trains inside
    `seeded_global_rng(seed)`, so two calls with the same seed, model and data give
    bit-identical weights, whatever other threads of the process do; the global generator's
    state afterwards is the state before (nothing leaks to the caller)."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if not momentum >= 0:
        raise ValueError(f"momentum must be >= 0, got {momentum}")
    xt, yt = _tensors(x, y)
    n = len(yt)
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    buffers: list[torch.Tensor | None] = [None] * len(params)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    start = time.perf_counter()
    steps = 0
    epoch_loss = 0.0
    epoch_correct = 0
    # Dropout draws from the global generator: seed it with the training seed (the same seed
    # as the shuffle's own generator: our choice), one thread at a time; a model without
    # dropout draws nothing from it and trains without the lock.
    rng = seeded_global_rng(seed) if draws_from_global_rng(model) else contextlib.nullcontext()
    with rng:
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            epoch_loss = 0.0
            epoch_correct = 0
            for begin in range(0, n, batch_size):
                idx = order[begin : begin + batch_size]
                for p in params:  # zero_grad(set_to_none=True)
                    p.grad = None
                logits = model(xt[idx])
                loss = loss_fn(logits, yt[idx])
                loss.backward()
                _sgd_step(params, buffers, lr, momentum)
                epoch_loss += float(loss.detach()) * len(idx)
                epoch_correct += int((logits.detach().argmax(dim=1) == yt[idx]).sum())
                steps += 1
    seconds = time.perf_counter() - start
    result = TrainResult(
        samples=n, loss=epoch_loss / n, seconds=seconds, steps=steps, accuracy=epoch_correct / n
    )
    logger.debug("train_local: %s", result)
    return result


def _sgd_step(
    params: Sequence[torch.Tensor], buffers: list[torch.Tensor | None], lr: float, momentum: float
) -> None:
    """One ``torch.optim.SGD(params, lr, momentum).step()`` (CPU single-tensor path):
    ``buf = grad`` (first step) or ``buf = momentum * buf + grad``; ``param -= lr * buf``
    (``buf`` is ``grad`` itself without momentum). Parameters without a gradient are left."""
    with torch.no_grad():
        for i, param in enumerate(params):
            grad = param.grad
            if grad is None:
                continue
            if momentum != 0:
                buf = buffers[i]
                if buf is None:
                    buf = torch.clone(grad).detach()
                    buffers[i] = buf
                else:
                    buf.mul_(momentum).add_(grad, alpha=1)
                grad = buf
            param.add_(grad, alpha=-lr)


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> EvalResult:
    """Accuracy and mean cross-entropy loss of the model in eval mode."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    xt, yt = _tensors(x, y)
    model.eval()
    total_loss = 0.0
    correct = 0
    with torch.no_grad():
        for begin in range(0, len(yt), batch_size):
            logits = model(xt[begin : begin + batch_size])
            target = yt[begin : begin + batch_size]
            total_loss += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(dim=1) == target).sum())
    n = len(yt)
    return EvalResult(accuracy=correct / n, loss=total_loss / n, samples=n)


def configure_torch_threads(n: int = 1) -> None:
    """Limit torch's intra-op threads (and, once per process, inter-op threads) to n."""
    global _interop_configured
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    torch.set_num_threads(n)
    if not _interop_configured:
        _interop_configured = True
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError as exc:  # already set, or parallel work has started
            logger.debug("could not set inter-op threads: %s", exc)
