"""Per-modality encoders. Each maps ``[B, *input_shape]`` to features ``[B, feature_dim]``.

All take the same constructor arguments so config can pick any of them per modality:
``(input_shape, feature_dim, hidden_dim, depth, dropout)``; text encoders also take ``vocab_size`` and
``pad_id`` (the padding token's id). Hugging Face text models live in :mod:`mmbench.models.bert`.
Each declares the modality ``kinds`` it accepts. :func:`mmbench.models.multimodal.build_encoder`
adapts the stored data to them: uint8 pixels are scaled by the training mean/std, and an image
encoder given a ``video`` modality ``[T, C, H, W]`` runs on every frame and averages the features
(the multi-frame pooling of the OGM-GE line of work).
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from mmbench.registry import ENCODERS

DEFAULT_ENCODER = {"vector": "mlp", "image": "cnn", "sequence": "conv1d", "video": "cnn", "text": "embedding_bag"}


@ENCODERS.register("mlp")
class MLPEncoder(nn.Module):
    """Multi-layer perceptron for vector modalities (inputs are flattened)."""

    kinds = ("vector", "image", "sequence")

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
    """Small 2-D CNN for image-like modalities ``[C, H, W]`` (video: per frame, features averaged)."""

    kinds = ("image", "video")
    conv, norm, pool = nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d


@ENCODERS.register("conv1d")
class Conv1dEncoder(_ConvEncoder):
    """Small 1-D CNN for sequences ``[C, T]``."""

    kinds = ("sequence",)
    conv, norm, pool = nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d


# ---------------------------------------------------------------------------------------
# ResNet-18
# ---------------------------------------------------------------------------------------


class _BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


@ENCODERS.register("resnet18")
class ResNet18Encoder(nn.Module):
    """ResNet-18 for image-like modalities (1-channel spectrograms, RGB frames), trained from scratch.

    The standard architecture (He et al., 2016): 7x7/2 convolution, 3x3/2 max-pool, four stages
    of two basic blocks (64, 128, 256, 512 channels), global average pooling; the first
    convolution takes the input's channels, so audio spectrograms ``[1, F, T]`` get the
    1-channel stem the OGM-GE line of work uses. Kaiming-normal (fan-out) convolutions, unit
    BatchNorm. The 512-d pooled feature is the output when ``feature_dim`` is 512; otherwise a
    linear projection (+ ReLU) maps it to ``feature_dim``. ``hidden_dim`` and ``depth`` are not
    used (the widths and depth are ResNet-18's); ``dropout`` applies before the projection.
    """

    kinds = ("image", "video")
    widths = (64, 128, 256, 512)
    #: torchvision's ImageNet weights (model.pretrained=imagenet reads this file from torch's cache)
    imagenet_file = "resnet18-f37072fd.pth"
    imagenet_url = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    #: layout of the weights and activations. channels_last (NHWC): oneDNN's convolutions and
    #: PyTorch's batch norm run on it natively, without reordering between layers; training on CPU
    #: is about 1.1-1.25x faster than with NCHW (``benchmarks/train_throughput.py``). Same values,
    #: same parameters and state dict; only the floating-point summation order differs. Set the class
    #: attribute to ``torch.contiguous_format`` before building a model to get NCHW.
    memory_format = torch.channels_last

    def __init__(self, input_shape: tuple[int, ...], feature_dim: int, hidden_dim: int, depth: int, dropout: float):
        super().__init__()
        in_channels = input_shape[0]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages, channels = [], 64
        for i, width in enumerate(self.widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(_BasicBlock(channels, width, stride), _BasicBlock(width, width, 1)))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        head: list[nn.Module] = [nn.Flatten()]
        if dropout:
            head.append(nn.Dropout(dropout))
        if feature_dim != channels:
            head += [nn.Linear(channels, feature_dim), nn.ReLU()]
        self.head = nn.Sequential(*head)
        self.out_dim = feature_dim
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

        self.to(memory_format=self.memory_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=self.memory_format)
        return self.head(self.pool(self.stages(self.stem(x))))

    @staticmethod
    def from_provider_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A torchvision / timm ResNet-18 state dict under this encoder's names (its classifier ``fc`` dropped):
        ``conv1``/``bn1`` are the stem, ``layerK.J`` is ``stages.K-1.J`` (the blocks' own names are the same)."""
        renamed = {}
        for key, value in state.items():
            key = re.sub(r"^conv1\.", "stem.0.", key)
            key = re.sub(r"^bn1\.", "stem.1.", key)
            key = re.sub(r"^layer(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.", key)
            if not key.startswith("fc."):
                renamed[key] = value
        return renamed

    def blocks(self) -> list[nn.Module]:
        """Depth blocks whose composition is ``forward``: stem, stages 1-3, stage 4 with pooling and head."""
        return [self.stem, *self.stages[:3], nn.Sequential(self.stages[3], self.pool, self.head)]


# ---------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------


@ENCODERS.register("embedding_bag")
class EmbeddingBagEncoder(nn.Module):
    """Bag of words for token ids ``[L]``: mean of word embeddings (padding excluded), then a projection."""

    kinds = ("text",)

    def __init__(self, input_shape: tuple[int, ...], feature_dim: int, hidden_dim: int, depth: int, dropout: float,
                 vocab_size: int = 0, pad_id: int = 0):
        super().__init__()
        if vocab_size < 2:
            raise ValueError("embedding_bag needs the text modality's vocab_size")
        self.bag = nn.EmbeddingBag(vocab_size, hidden_dim, mode="mean", padding_idx=pad_id)
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        for _ in range(max(depth - 1, 0)):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout)]
        layers += [nn.Linear(hidden_dim, feature_dim), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.out_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.bag(x.long()))


@ENCODERS.register("transformer")
class TransformerEncoder(nn.Module):
    """Small Transformer encoder over text token ids [L], mean-pooled.

    Embeddings + learned positions, ``depth`` pre-norm layers (4 heads when ``hidden_dim`` allows, else 1), mean over the non-padding tokens, then a projection."""

    kinds = ("text",)

    def __init__(self, input_shape: tuple[int, ...], feature_dim: int, hidden_dim: int, depth: int, dropout: float,
                 vocab_size: int = 0, pad_id: int = 0):
        super().__init__()
        if vocab_size < 2:
            raise ValueError("transformer needs the text modality's vocab_size")
        self.embed = nn.Embedding(vocab_size, hidden_dim, padding_idx=pad_id)
        self.pad_id = pad_id
        self.position = nn.Parameter(torch.zeros(input_shape[0], hidden_dim))
        nn.init.normal_(self.position, std=0.02)
        heads = 4 if hidden_dim % 4 == 0 else 1
        layer = nn.TransformerEncoderLayer(hidden_dim, heads, 2 * hidden_dim, dropout, batch_first=True,
                                           norm_first=True)
        self.layers = nn.TransformerEncoder(layer, max(depth, 1), enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_dim)
        self.proj = nn.Sequential(nn.Linear(hidden_dim, feature_dim), nn.ReLU())
        self.out_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.long()
        pad = x == self.pad_id
        pad[:, 0] &= ~pad.all(1)  # a text with no tokens attends to its first (padding) position
        h = self.layers(self.embed(x) + self.position[: x.shape[1]], src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).to(h.dtype)
        pooled = (self.norm(h) * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        return self.proj(pooled)
