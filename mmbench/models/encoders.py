"""Per-modality encoders. Each maps ``[B, *input_shape]`` to features ``[B, feature_dim]``.

All take the same constructor arguments so config can pick any of them per modality:
``(input_shape, feature_dim, hidden_dim, depth, dropout)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mmbench.registry import ENCODERS

DEFAULT_ENCODER = {"vector": "mlp", "image": "cnn", "sequence": "conv1d"}


@ENCODERS.register("mlp")
class MLPEncoder(nn.Module):
    """Multi-layer perceptron for vector modalities (inputs are flattened)."""

    def __init__(self, input_shape: tuple[int, ...], feature_dim: int, hidden_dim: int, depth: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for _ in range(depth):
            layers += [nn.Linear(width, hidden_dim), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden_dim
        layers += [nn.Linear(width, feature_dim), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.out_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _ConvEncoder(nn.Module):
    """Stages of (conv 3, BN, ReLU) with stride 2, global average pooling, linear projection."""

    conv: type[nn.Module]
    norm: type[nn.Module]
    pool: type[nn.Module]

    def __init__(self, input_shape: tuple[int, ...], feature_dim: int, hidden_dim: int, depth: int, dropout: float):
        super().__init__()
        channels = input_shape[0]
        layers: list[nn.Module] = []
        for i in range(max(depth, 1)):
            width = max(hidden_dim // 2 ** (max(depth, 1) - 1 - i), 8)
            layers += [self.conv(channels, width, 3, stride=2 if i else 1, padding=1, bias=False),
                       self.norm(width), nn.ReLU()]
            channels = width
        layers += [self.pool(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, feature_dim), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.out_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@ENCODERS.register("cnn")
class CNNEncoder(_ConvEncoder):
    """Small 2-D CNN for image-like modalities ``[C, H, W]``."""

    conv, norm, pool = nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d


@ENCODERS.register("conv1d")
class Conv1dEncoder(_ConvEncoder):
    """Small 1-D CNN for sequences ``[C, T]``."""

    conv, norm, pool = nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d
