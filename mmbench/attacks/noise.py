"""Noise families."""

from __future__ import annotations

import torch

from mmbench.attacks.base import register_attack
from mmbench.data.types import ModalitySpec


@register_attack("gaussian", kinds=("vector", "image", "sequence"))
def gaussian(x: torch.Tensor, level: float, generator: torch.Generator, spec: ModalitySpec) -> torch.Tensor:
    """Additive Gaussian noise, sigma = level x the modality's training std."""
    noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device, x.dtype)
    return x + (level * spec.std) * noise
