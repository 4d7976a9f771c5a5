"""Attacks on token sequences (``text`` modalities: token ids ``[N, L]``, int64).

Padding positions (the pad id, see :func:`mmbench.attacks.base.token_id`) are never touched,
so blanking or swapping never turns padding into words.
"""

from __future__ import annotations

import torch

from mmbench.attacks.base import probability_level, register_attack, token_id, uniform
from mmbench.attacks.noise import adjacent_swap
from mmbench.data.types import ModalitySpec


@register_attack("token_blank", kinds=("text",))
def token_blank(x: torch.Tensor, level: float, generator: torch.Generator, spec: ModalitySpec, *,
                token: int | str = "blank") -> torch.Tensor:
    """Replace each (non-padding) token by the blank token with probability ``level`` (QMF's text noise).

    QMF replaces each whitespace word by ``_`` with p = 0.1 eps in half of the test samples; the
    protocol sets p and the half. ``token``: ``blank`` (the modality's blank id, else its unknown
    id, else 1), ``unk``, ``pad`` or an integer id.
    """
    p = probability_level(level, "token_blank")
    if p == 0.0:
        return x
    blank_id = token_id(spec, "blank", token)
    pad_id = token_id(spec, "pad")
    hit = (uniform(tuple(x.shape), generator).to(x.device) < p) & (x != pad_id)
    return torch.where(hit, torch.full((), blank_id, dtype=x.dtype, device=x.device), x)


@register_attack("token_swap", kinds=("text",))
def token_swap(x: torch.Tensor, level: float, generator: torch.Generator, spec: ModalitySpec) -> torch.Tensor:
    """Swap neighbouring (non-padding) tokens with probability ``level`` per pair.

    The token-level counterpart of MultiBench's letter swaps (which need raw strings); no token
    takes part in two swaps.
    """
    p = probability_level(level, "token_swap")
    if p == 0.0:
        return x
    valid = x != token_id(spec, "pad")
    return adjacent_swap(x, p, generator, valid.reshape(x.shape[0], -1) if x.dim() == 2 else None)
