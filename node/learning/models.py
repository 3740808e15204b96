"""Model zoo: a small MLP, McMahan et al.'s 2017 CNN, a lightweight CNN and an AlexNet-style
CNN scaled to small images."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
from torch import nn

from node.learning.names import MODELS
from node.learning.seeding import seeded_global_rng

logger = logging.getLogger(__name__)


def _flat_size(features: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Number of features a conv stack outputs for one input, found with a dummy forward."""
    with torch.no_grad():
        out = features(torch.zeros(1, *input_shape))
    return int(out.numel())


def _check_image_shape(name: str, input_shape: tuple[int, ...]) -> None:
    """Conv models need (channels, height, width) inputs."""
    if len(input_shape) != 3:
        raise ValueError(f"model {name!r} needs input_shape (C, H, W), got {input_shape}")


def _mlp(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Flatten -> 64 hidden ReLU units -> class logits."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


def _conv_net(
    features: nn.Sequential, hidden: int, input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    """Conv feature stack followed by a one-hidden-layer classifier."""
    flat = _flat_size(features, input_shape)
    return nn.Sequential(
        *features,
        nn.Flatten(),
        nn.Linear(flat, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def _cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """McMahan et al. (2017) CNN: 2x (5x5 conv + ReLU + 2x2 max-pool), fc 512, fc classes."""
    _check_image_shape("cnn", input_shape)
    features = nn.Sequential(
        nn.Conv2d(input_shape[0], 32, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    return _conv_net(features, 512, input_shape, num_classes)


def _small_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Lightweight CNN: 2x (3x3 conv + ReLU + 2x2 max-pool) with 16/32 channels, fc 64."""
    _check_image_shape("small-cnn", input_shape)
    features = nn.Sequential(
        nn.Conv2d(input_shape[0], 16, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    return _conv_net(features, 64, input_shape, num_classes)


def _alexnet(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """AlexNet-style CNN (Krizhevsky et al. 2012, the model of the SFL paper) scaled to small
    images (28x28x1, 32x32x3; works down to 8x8): five 3x3 conv layers (padding 1) with ReLU,
    channels 32-64-96-96-64, 2x2 max-pools after the 1st, 2nd and 5th; then three fully
    connected layers 256-256-classes with ReLU, dropout 0.5 before the first two (as in
    AlexNet). Channel and unit counts, 3x3 kernels and no local response normalisation are
    our choice (AlexNet's 11x11/5x5 kernels and 4096-unit layers are for 224x224 ImageNet).
    428,682 parameters on 28x28x1 with 10 classes."""
    _check_image_shape("alexnet", input_shape)
    channels = (32, 64, 96, 96, 64)
    pooled_after = (0, 1, 4)
    layers: list[nn.Module] = []
    previous = input_shape[0]
    for i, out in enumerate(channels):
        layers += [nn.Conv2d(previous, out, kernel_size=3, padding=1), nn.ReLU()]
        if i in pooled_after:
            layers.append(nn.MaxPool2d(2))
        previous = out
    features = nn.Sequential(*layers)
    flat = _flat_size(features, input_shape)
    return nn.Sequential(
        *features,
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(flat, 256),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, num_classes),
    )


_BUILDERS: dict[str, Callable[[tuple[int, ...], int], nn.Module]] = {
    "mlp": _mlp,
    "cnn": _cnn,
    "small-cnn": _small_cnn,
    "alexnet": _alexnet,
}


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, seed: int) -> nn.Module:
    """Build a named model with deterministic (seeded) initial weights."""
    builder = _BUILDERS.get(name)
    if builder is None:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    shape = tuple(int(d) for d in input_shape)
    with seeded_global_rng(seed):
        model = builder(shape, num_classes)
    logger.debug("built model %s for input %s: %d parameters", name, shape, count_parameters(model))
    return model


def count_parameters(model: nn.Module) -> int:
    """Total number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
