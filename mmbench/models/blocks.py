"""Encoders as sequences of depth blocks: what methods that act between an encoder's layers use
(AIM's depth-wise modulation, Greedy's MMTM fusion between blocks)."""

from __future__ import annotations

import torch
from torch import nn

from mmbench.errors import MMBenchError
from mmbench.models.multimodal import FramePool, Standardize

ACTIVATIONS = (nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.LeakyReLU)


def depth_blocks(encoder: nn.Module) -> list[nn.Module]:
    """The encoder as a list of blocks, each ending with an activation (for uint8 pixels, the first
    block standardises them first; for video, the blocks of the frame encoder, see :func:`mmbench.methods.aim.depth_features`)."""
    if isinstance(encoder, Standardize):
        first, *rest = depth_blocks(encoder.encoder)
        return [nn.Sequential(encoder.standardize, first), *rest]
    if isinstance(encoder, FramePool):
        return depth_blocks(encoder.encoder)
    if hasattr(encoder, "blocks"):
        return list(encoder.blocks())
    net = getattr(encoder, "net", None)
    if not isinstance(net, nn.Sequential):
        raise MMBenchError(f"this method needs encoders made of depth blocks; {type(encoder).__name__} has neither "
                           "a sequential `net` nor `blocks()`")
    blocks, current = [], []
    for layer in net:
        current.append(layer)
        if isinstance(layer, ACTIVATIONS):
            blocks.append(nn.Sequential(*current))
            current = []
    if current:
        blocks.append(nn.Sequential(*current))
    return blocks


def pooled(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).mean(2) if x.dim() > 2 else x
