"""`train_local`'s written-out SGD step gives the weights of ``torch.optim.SGD`` bit for bit,
and training no longer imports ``torch._dynamo`` (a second of every fork server's start)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from node.learning.models import build_model
from node.learning.train import train_local


def _reference(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    momentum: float,
) -> None:
    """The loop as it was, with torch.optim.SGD."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(yt), generator=generator)
        for begin in range(0, len(yt), batch_size):
            idx = order[begin : begin + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()


@pytest.mark.parametrize("name", ["mlp", "small-cnn"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_weights_equal_torch_optim_sgd(name: str, momentum: float) -> None:
    rng = np.random.default_rng(3)
    x = rng.random((75, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 10, 75)
    ours = build_model(name, (1, 8, 8), 10, seed=4)
    ref = build_model(name, (1, 8, 8), 10, seed=4)
    for rnd in range(3):  # state carried over rounds, as on a device
        train_local(ours, x, y, 2, 16, 0.05, seed=rnd, momentum=momentum)
        _reference(ref, x, y, 2, 16, 0.05, rnd, momentum)
    for (k, a), (_, b) in zip(ours.state_dict().items(), ref.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_a_negative_momentum_is_refused() -> None:
    model = build_model("mlp", (1, 8, 8), 10, seed=0)
    x = np.zeros((4, 1, 8, 8), np.float32)
    with pytest.raises(ValueError, match="momentum"):
        train_local(model, x, np.zeros(4, np.int64), 1, 2, 0.1, seed=0, momentum=-0.5)


def test_training_does_not_import_torch_dynamo() -> None:
    code = (
        "import sys, numpy as np\n"
        "from node.learning.models import build_model\n"
        "from node.learning.train import train_local\n"
        "m = build_model('mlp', (1, 8, 8), 10, seed=0)\n"
        "train_local(m, np.zeros((4, 1, 8, 8), np.float32), np.zeros(4, np.int64), 1, 2, 0.1, 0)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
